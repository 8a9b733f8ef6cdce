"""The retrain policy of high data-drift alerts, and the retrain chain it starts.

On a high `data_drift` alert the policy decides whether to retrain now (cooldown, runs per week,
approval switch) and, if so, creates a fine_tune workflow through the workflow service
(`weft.workflows.create`: the step API's validation, admission check and start). The chain then
advances each time `advance` runs (every drift monitor run, or the API's approval): fine_tune
COMPLETED → evaluate_model on the new adapter's held-out split → deploy_model only when the
evaluation's promotion gate passed. Every decision, taken or skipped, is appended to
`alert.decisions` with its time and reason.

Settings (environment): WEFT_RETRAIN_COOLDOWN_HOURS (24), WEFT_RETRAIN_MAX_PER_WEEK (2),
WEFT_RETRAIN_REQUIRES_APPROVAL (false).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session, select

from weft.clock import as_utc, utcnow
from weft.settings import RetrainPolicy
from weft.specs.names import WorkflowName
from weft.statuses import TERMINAL, AlertStatus, WorkflowStatus
from weft.tables import Adapter, DriftAlert, Endpoint, Evaluation, Model, Workflow

log = logging.getLogger(__name__)

# the `step` of a decision, in chain order
RETRAIN, EVALUATE, DEPLOY = "retrain", "evaluate", "deploy"


def record(session: Session, alert: DriftAlert, step: str, decision: str, reason: str, **extra: Any) -> dict:
    """Append one decision to the alert (committed by the caller)."""
    entry = {"at": utcnow().isoformat(), "step": step, "decision": decision, "reason": reason, **extra}
    alert.decisions = [*(alert.decisions or []), entry]
    flag_modified(alert, "decisions")
    alert.updated_at = utcnow()
    session.add(alert)
    log.info("drift alert %s: %s %s (%s)", alert.id, step, decision, reason)
    return entry


def retrain_starts(session: Session, endpoint_id: str | None, model_id: str | None) -> list[datetime]:
    """When retrains of this endpoint (or model) started, from every alert's decisions."""
    stmt = select(DriftAlert)
    stmt = stmt.where(DriftAlert.endpoint_id == endpoint_id) if endpoint_id else stmt.where(DriftAlert.model_id == model_id)
    times = []
    for alert in session.exec(stmt):
        for d in alert.decisions or []:
            if d.get("step") == RETRAIN and d.get("decision") == "started":
                times.append(as_utc(datetime.fromisoformat(d["at"])))
    return sorted(times)


def _last(alert: DriftAlert, step: str, decision: str | None = None) -> dict | None:
    return next((d for d in reversed(alert.decisions or [])
                 if d.get("step") == step and (decision is None or d.get("decision") == decision)), None)


def decide(session: Session, alert: DriftAlert, policy: RetrainPolicy | None = None, *,
           approved: bool = False, now: datetime | None = None) -> tuple[str, str]:
    """("started" | "skipped: ...", reason) for this alert now; records nothing."""
    policy = policy or RetrainPolicy()
    now = now or utcnow()
    if alert.type != "data_drift" or alert.severity != "high":
        return "skipped: not a high data-drift alert", f"{alert.severity} {alert.type} alerts do not retrain"
    if _last(alert, RETRAIN, "started"):
        return "skipped: already started", "this alert has started its retrain already"
    if alert.status == AlertStatus.RESOLVED:
        return "skipped: resolved", "the alert is resolved"
    starts = retrain_starts(session, alert.endpoint_id, alert.model_id)
    if starts and now - starts[-1] < timedelta(hours=policy.cooldown_hours):
        return "skipped: cooldown", (f"the last retrain of this endpoint started at {starts[-1].isoformat()}, "
                                     f"within the {policy.cooldown_hours:g} h cooldown")
    recent = [t for t in starts if now - t < timedelta(days=7)]
    if len(recent) >= policy.max_per_week:
        return "skipped: limit", f"{len(recent)} retrains in the last 7 days (max {policy.max_per_week} per week)"
    if policy.requires_approval and not approved:
        return "skipped: awaiting approval", ("WEFT_RETRAIN_REQUIRES_APPROVAL is set: approve with PATCH "
                                              f"/api/v1/monitoring/drift-alerts/{alert.id} {{\"approve_retrain\": true}}")
    return "started", "high data drift" + (" (approved)" if approved else "")


def retrain_plan(session: Session, alert: DriftAlert) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Steps 1 and 2 of the fine_tune workflow that retrains the alert's model, and a note on the data.

    Recorded prompts carry no labels (the gateway stores the prompt, not a reviewed answer), so the
    retrain uses the model's own fine-tune data; a labelled recent-prompt dataset can be merged here
    once the gateway records one."""
    model = session.get(Model, alert.model_id) if alert.model_id else None
    adapter_id = (model.details or {}).get("adapter_id") if model else None
    adapter = session.get(Adapter, adapter_id) if adapter_id else None
    if model is None or model.provider_type != "adapter" or adapter is None or not adapter.dataset_id:
        raise ValueError(f"model {alert.model_id} is not a fine-tuned adapter with a training dataset: nothing to "
                         "retrain from")
    config = {k: v for k, v in (adapter.config or {}).items() if v is not None}
    stamp = utcnow().strftime("%Y%m%d-%H%M")
    base_name = model.name.split("-retrain-")[0]
    step1 = {"base_model": adapter.base_model_id, "dataset_id": adapter.dataset_id}
    step2 = {"name": f"{base_name}-retrain-{stamp}", "config": config}
    note = (f"base data: dataset {adapter.dataset_id} (the fine-tune data of {model.name}); recent prompts have no "
            "labels (the gateway records prompts only), so none were added")
    return step1, step2, note


def _cause(exc: Exception) -> str:
    """An exception as a decision's reason, with the fields a validation error names."""
    from weft.errors import WeftError

    if isinstance(exc, WeftError) and exc.details.get("errors"):
        return f"{exc}: " + "; ".join(f"{e['field']}: {e['message']}" for e in exc.details["errors"])
    return str(exc)


def start_fine_tune(session: Session, alert: DriftAlert) -> tuple[str, str]:
    """Create and trigger the retrain's fine_tune workflow; returns (workflow id, data note)."""
    from weft import workflows

    step1, step2, note = retrain_plan(session, alert)
    wf = workflows.create(session, alert.user_id, WorkflowName.FINE_TUNE, [step1, step2], trigger=True,
                          name=step2["name"])
    return wf.id, note


def apply_policy(session: Session, alert: DriftAlert, policy: RetrainPolicy | None = None, *,
                 approved: bool = False, approved_by: str | None = None) -> dict:
    """Decide for the alert, start the retrain when allowed, record the decision; commits."""
    if approved:
        record(session, alert, RETRAIN, "approved", f"retrain approved by user {approved_by}", user_id=approved_by)
    decision, reason = decide(session, alert, policy, approved=approved)
    if decision == "skipped: already started" or (decision.startswith("skipped: not") and not approved):
        session.commit()
        return {"step": RETRAIN, "decision": decision, "reason": reason}
    if decision != "started":
        last = _last(alert, RETRAIN)
        if last and last.get("decision") == decision and not approved:  # nothing new to say
            session.commit()
            return last
        entry = record(session, alert, RETRAIN, decision, reason)
        session.commit()
        return entry
    try:
        workflow_id, note = start_fine_tune(session, alert)
    except Exception as exc:  # invalid data, refused, or Prefect unreachable: say so on the alert
        session.rollback()
        entry = record(session, alert, RETRAIN, "failed", f"could not start the fine_tune workflow: {_cause(exc)}")
        session.commit()
        return entry
    entry = record(session, alert, RETRAIN, "started", f"{reason}; {note}", workflow_id=workflow_id)
    session.commit()
    return entry


def _workflow_status(session: Session, workflow_id: str) -> str:
    from weft.workflows import refresh_status

    wf = session.get(Workflow, workflow_id)
    if wf is None:
        return "MISSING"
    refresh_status(session, [wf])
    return wf.status


def start_step(session: Session, alert: DriftAlert, step: str, type_name: str, steps: list[dict[str, Any]],
               name: str, reason: str, **extra: Any) -> dict:
    """Start the chain's next workflow and record it on the alert ("failed" with the cause when it
    cannot start); commits."""
    from weft import workflows

    try:
        wf = workflows.create(session, alert.user_id, type_name, steps, trigger=True, name=name)
    except Exception as exc:
        session.rollback()
        entry = record(session, alert, step, "failed", f"could not start {type_name}: {_cause(exc)}", **extra)
    else:
        entry = record(session, alert, step, "started", reason, workflow_id=wf.id, **extra)
    session.commit()
    return entry


def advance(session: Session, alert: DriftAlert) -> dict | None:
    """Move the alert's retrain chain one step if its current workflow has finished; returns the decision
    recorded, or None when there was nothing to do (no chain, or its workflow is still running)."""
    started = _last(alert, RETRAIN, "started")
    if started is None or _last(alert, DEPLOY) is not None:
        return None
    evaluating = _last(alert, EVALUATE)
    if evaluating is None:
        status = _workflow_status(session, started["workflow_id"])
        if status not in TERMINAL:
            return None
        if status != WorkflowStatus.COMPLETED:
            entry = record(session, alert, EVALUATE, "skipped: fine-tune failed",
                           f"fine_tune workflow {started['workflow_id']} ended {status}")
            record(session, alert, DEPLOY, "skipped: no model", "the retrain produced no model")
            session.commit()
            return entry
        adapter = session.exec(select(Adapter).where(Adapter.workflow_id == started["workflow_id"])).first()
        if adapter is None or not adapter.model_id:
            entry = record(session, alert, EVALUATE, "skipped: no model",
                           f"fine_tune workflow {started['workflow_id']} registered no adapter model")
            session.commit()
            return entry
        return start_step(session, alert, EVALUATE, WorkflowName.EVALUATE_MODEL,
                          [{"model_id": adapter.model_id, "dataset_id": adapter.dataset_id}, {}],
                          f"evaluate {adapter.name}", "fine-tune completed: evaluating on its held-out split of "
                          f"dataset {adapter.dataset_id}", model_id=adapter.model_id)
    if evaluating.get("decision") != "started":
        return None
    status = _workflow_status(session, evaluating["workflow_id"])
    if status not in TERMINAL:
        return None
    evaluation = session.get(Evaluation, evaluating["workflow_id"])
    if status != WorkflowStatus.COMPLETED or evaluation is None:
        entry = record(session, alert, DEPLOY, "skipped: evaluation failed",
                       f"evaluate_model workflow {evaluating['workflow_id']} ended {status}")
        session.commit()
        return entry
    if not evaluation.promoted:
        entry = record(session, alert, DEPLOY, "skipped: not promoted",
                       f"the promotion gate did not pass: {(evaluation.gate or {}).get('reason', 'no reason given')}",
                       evaluation_id=evaluation.id)
        session.commit()
        return entry
    endpoint = session.get(Endpoint, alert.endpoint_id) if alert.endpoint_id else None
    name = f"{endpoint.name if endpoint else 'retrained'}-r{utcnow().strftime('%Y%m%d%H%M')}"
    deploy_config = (endpoint.config if endpoint else None) or {}
    return start_step(session, alert, DEPLOY, WorkflowName.DEPLOY_MODEL,
                      [{"model_id": evaluating["model_id"]}, {},  # steps 1-3 of a local deploy
                       {"endpoint_name": name, "deploy_config": deploy_config}],
                      f"redeploy {name}", f"promotion gate passed: deploying {name}", evaluation_id=evaluation.id,
                      endpoint_name=name)


def open_chains(session: Session) -> list[DriftAlert]:
    """Alerts whose retrain started and has not reached its deploy decision."""
    alerts = session.exec(select(DriftAlert).where(DriftAlert.type == "data_drift", DriftAlert.severity == "high"))
    return [a for a in alerts if _last(a, RETRAIN, "started") and _last(a, DEPLOY) is None]
