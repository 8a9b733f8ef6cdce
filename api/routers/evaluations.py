"""Evaluations (document 002) are evaluate_model workflows (evaluation id = workflow id); experiments
(document 003) compare finished jobs and evaluations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlmodel import Session, col, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Listing, arranged, listed
from weft import jobs, workflows
from weft.clock import utcnow
from weft.compute import placement
from weft.datasets.uploads import import_local_file
from weft.schemas.evaluations import (
    CompareOut,
    CompareRequest,
    EvaluateRequest,
    EvaluationCreated,
    EvaluationList,
    EvaluationOut,
    EvaluationSummary,
    EvaluationUpdate,
)
from weft.specs.evaluation import EvaluationSettings
from weft.specs.names import WorkflowName
from weft.statuses import RunStatus
from weft.tables import Adapter, Evaluation, Model, Workflow
from weft.workflows import merged_data, refresh_status, stored_steps

router = APIRouter(tags=["evaluations"])


def evaluation_view(session: Session, wf: Workflow, detail: bool = True) -> dict[str, Any]:
    """The stored evaluation, its status kept in step with the workflow's run."""
    row = session.get(Evaluation, wf.id)
    data = merged_data(stored_steps(session, wf.id))
    status = wf.status.lower()
    if row is not None and row.status == RunStatus.COMPLETED:
        status = RunStatus.COMPLETED
    view: dict[str, Any] = {
        "id": wf.id, "model_id": data.get("model_id"), "status": status,
        "test_set_path": data.get("test_set_path"), "dataset_id": data.get("dataset_id"),
        "base_model_name": row.base_model_name if row else None, "fine_tuned_name": row.fine_tuned_name if row else None,
        "promoted": row.promoted if row else False, "error": wf.reason,
        "started_at": row.started_at if row else None, "completed_at": row.completed_at if row else None,
        "flow_run_id": wf.flow_run_id, "created_at": wf.created_at,
    }
    if detail:
        view.update(results=row.results if row else {}, examples=row.examples if row else [],
                    benchmarks=row.benchmarks if row else [], gate=row.gate if row else {})
    return view


def owned_evaluation(session: Session, user_id: str, evaluation_id: str) -> Workflow:
    wf = get_owned(session, Workflow, evaluation_id, user_id, "evaluation")
    if wf.workflow_type != WorkflowName.EVALUATE_MODEL:
        raise ApiError(404, "NOT_FOUND", f"evaluation {evaluation_id} not found", {"evaluation_id": evaluation_id})
    return wf


@router.post("/models/{model_id}/evaluate", status_code=201, response_model=EvaluationCreated)
def evaluate_model(model_id: str, body: EvaluateRequest, user: CurrentUser, session: SessionDep) -> dict:
    """Start an evaluation of a fine-tuned model on `test_set_path` (a file in the disk roots) or `dataset_id`."""
    get_owned(session, Model, model_id, user.id, "model")
    if (body.test_set_path is None) == (body.dataset_id is None):
        raise ApiError(422, "VALIDATION_ERROR", "send exactly one of test_set_path and dataset_id",
                       {"errors": [{"field": "test_set_path", "message": "or dataset_id"}]})
    try:
        dataset_id = body.dataset_id or import_local_file(session, user.id, body.test_set_path).id
        base_id = jobs.resolve_base_model(session, user.id, body.base_model_name).id if body.base_model_name else None
    except (ValueError, jobs.InvalidConfig) as exc:
        raise ApiError(422, "VALIDATION_ERROR", str(exc), {"field": "test_set_path" if "base" not in str(exc)
                                                           else "base_model_name"}) from exc
    step1 = {"model_id": model_id, "dataset_id": dataset_id, "base_model_id": base_id,
             "test_set_path": body.test_set_path}
    step2 = body.model_dump(include=set(EvaluationSettings.model_fields))
    wf = workflows.create(session, user.id, WorkflowName.EVALUATE_MODEL, [step1, step2], trigger=True)
    return {"evaluation_id": wf.id, "status": wf.status.lower(), "message": "Evaluation job created",
            "flow_run_id": wf.flow_run_id}


@router.get("/evaluations/{evaluation_id}", response_model=EvaluationOut)
def get_evaluation(evaluation_id: str, user: CurrentUser, session: SessionDep) -> dict:
    wf = owned_evaluation(session, user.id, evaluation_id)
    refresh_status(session, [wf])
    return evaluation_view(session, wf)


@router.get("/evaluations", response_model=EvaluationList)
def list_evaluations(user: CurrentUser, session: SessionDep, listing: Listing, page: int = Query(1, ge=1),
                     limit: int = Query(10, ge=1, le=100), model_id: str | None = None,
                     status: str | None = None) -> dict:
    """Document 002's page/limit listing, filtered by model and status."""
    stmt = select(Workflow).where(Workflow.user_id == user.id, Workflow.workflow_type == WorkflowName.EVALUATE_MODEL)
    workflows = list(session.exec(stmt.order_by(col(Workflow.created_at).desc())))
    refresh_status(session, workflows)
    views = [evaluation_view(session, wf, detail=False) for wf in workflows]
    views = [v for v in views if (not model_id or v["model_id"] == model_id) and (not status or v["status"] == status.lower())]
    views = arranged(views, listing, EvaluationSummary)
    return listed({"data": views[(page - 1) * limit:page * limit], "total": len(views), "page": page, "limit": limit},
                  listing)


@router.put("/evaluations/{evaluation_id}", response_model=EvaluationOut)
def update_evaluation(evaluation_id: str, body: EvaluationUpdate, user: CurrentUser, session: SessionDep) -> dict:
    wf = owned_evaluation(session, user.id, evaluation_id)
    data = merged_data(stored_steps(session, wf.id))
    row = session.get(Evaluation, wf.id) or Evaluation(id=wf.id, user_id=user.id, model_id=data["model_id"])
    for field, value in body.model_dump(exclude_none=True).items():
        setattr(row, field, value)
    if body.status == RunStatus.COMPLETED:
        row.completed_at = row.completed_at or utcnow()
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    return evaluation_view(session, wf)


def experiment(session: Session, user_id: str, experiment_id: str) -> dict[str, Any]:
    """A finished job (training metrics) or evaluation (fine-tuned scores) as an experiment."""
    wf = get_owned(session, Workflow, experiment_id, user_id, "experiment")
    data = merged_data(stored_steps(session, wf.id))
    if wf.workflow_type == WorkflowName.FINE_TUNE:
        adapter = session.exec(select(Adapter).where(Adapter.workflow_id == wf.id)).first()
        metrics = dict(adapter.metrics) if adapter else {}
        if "train_loss" in metrics:
            metrics["loss"] = metrics["train_loss"]
        return {"id": wf.id, "kind": "job", "status": wf.status.lower(), "metrics": metrics,
                "config": data.get("config", {}), "runtime_seconds": metrics.get("train_runtime")}
    if wf.workflow_type == WorkflowName.EVALUATE_MODEL:
        row = session.get(Evaluation, wf.id)
        metrics = dict((row.results or {}).get("fine_tuned", {})) if row else {}
        return {"id": wf.id, "kind": "evaluation", "status": row.status if row else wf.status.lower(),
                "metrics": metrics, "config": {k: data.get(k) for k in ("model_id", "dataset_id", "benchmarks")},
                "runtime_seconds": (row.completed_at - row.started_at).total_seconds()
                if row and row.completed_at and row.started_at else None}
    raise ApiError(422, "VALIDATION_ERROR", f"{experiment_id} is a {wf.workflow_type} workflow, not a job or "
                   "an evaluation", {"experiment_id": experiment_id})


@router.post("/experiments/compare", response_model=CompareOut)
def compare_experiments(body: CompareRequest, user: CurrentUser, session: SessionDep) -> dict:
    """Metrics side by side (null where an experiment lacks one), configs, the best performer (highest
    accuracy, else lowest loss), the measured runtime of each and what each cost."""
    compared = [get_owned(session, Workflow, i, user.id, "experiment") for i in body.experiment_ids]
    refresh_status(session, compared)
    items = [experiment(session, user.id, i) for i in body.experiment_ids]
    costs = [placement.run_cost(session, wf)[1] for wf in compared]
    names = sorted({k for item in items for k, v in item["metrics"].items() if isinstance(v, (int, float))})
    metrics = {k: [item["metrics"].get(k) for item in items] for k in names}
    best = None
    for key, better in (("accuracy", max), ("eval_loss", min), ("loss", min)):
        scored = [(v, item["id"]) for v, item in zip(metrics.get(key, []), items) if v is not None]
        if scored:
            best = better(scored)[1]
            break
    return {"comparison": {"metrics": metrics, "configs": [item["config"] for item in items],
                           "statuses": [item["status"] for item in items], "best_performer": best,
                           "runtime_seconds": [item["runtime_seconds"] for item in items],
                           "cost_analysis": {"total_costs": costs, "cost_per_accuracy_point": [
                               round(cost / (accuracy * 100), 4) if cost is not None and accuracy else None
                               for cost, accuracy in zip(costs, metrics.get("accuracy") or [None] * len(items))]}}}
