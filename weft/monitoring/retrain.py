"""The retrain policy of high data-drift alerts, and the retrain chain it starts.

On a high `data_drift` alert the policy decides whether to retrain now (cooldown, runs per week,
approval switch) and, if so, creates a fine_tune workflow through the workflow service
(`weft.workflows.create`: the step API's validation, admission check and start). The chain then
advances each time `advance` runs (every drift monitor run, or the API's approval): fine_tune
COMPLETED → evaluate_model on the new adapter's held-out split → deploy_model only when the
evaluation's promotion gate passed, as a new revision of the alert's endpoint with a canary share → the
canary watched against the revisions serving before it (weft/monitoring/canary.py), then promoted to all
the traffic or rolled back. Every decision, taken or skipped, is appended to `alert.decisions` with its
time, reason and numbers. Besides the drift monitor, the endpoint controller's pass advances open chains
(`sweep`) so that a canary window is watched between hourly monitor runs.

Settings (environment, `RetrainPolicy`): WEFT_RETRAIN_COOLDOWN_HOURS (24), WEFT_RETRAIN_MAX_PER_WEEK (2),
WEFT_RETRAIN_REQUIRES_APPROVAL (false), WEFT_RETRAIN_CANARY_PERCENT (10), WEFT_RETRAIN_CANARY_MINUTES (30),
WEFT_RETRAIN_CANARY_MIN_REQUESTS (30), WEFT_RETRAIN_CANARY_MAX_ERROR_INCREASE (0.02),
WEFT_RETRAIN_CANARY_MAX_LATENCY_RATIO (1.25), WEFT_RETRAIN_CHECK_SECONDS (30).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session, col, select

from weft.clock import as_utc, utcnow
from weft.monitoring import canary
from weft.serving import revisions
from weft.settings import RetrainPolicy
from weft.specs.names import WorkflowName
from weft.statuses import TERMINAL, AlertStatus, EndpointStatus, WorkflowStatus
from weft.tables import Adapter, DriftAlert, Endpoint, Evaluation, Model, Revision, Workflow
from weft.webhooks.outbox import emit

log = logging.getLogger(__name__)

# the `step` of a decision, in chain order
RETRAIN, EVALUATE, DEPLOY, CANARY = "retrain", "evaluate", "deploy", "canary"
WATCHING = ("watching", "extended")  # canary decisions that leave the chain open
GONE = (EndpointStatus.STOPPING, EndpointStatus.STOPPED)


def record(session: Session, alert: DriftAlert, step: str, decision: str, reason: str, **extra: Any) -> dict:
    """Append one decision to the alert (committed by the caller)."""
    entry = {"at": utcnow().isoformat(), "step": step, "decision": decision, "reason": reason, **extra}
    alert.decisions = [*(alert.decisions or []), entry]
    flag_modified(alert, "decisions")
    alert.updated_at = utcnow()
    session.add(alert)
    log.info("drift alert %s: %s %s (%s)", alert.id, step, decision, reason)
    return entry


def decided(session: Session, alert: DriftAlert, step: str, decision: str, reason: str, **extra: Any) -> dict:
    """Record one decision and commit; returns it."""
    entry = record(session, alert, step, decision, reason, **extra)
    session.commit()
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
        return decided(session, alert, RETRAIN, decision, reason)
    try:
        workflow_id, note = start_fine_tune(session, alert)
    except Exception as exc:  # invalid data, refused, or Prefect unreachable: say so on the alert
        session.rollback()
        return decided(session, alert, RETRAIN, "failed", f"could not start the fine_tune workflow: {_cause(exc)}")
    return decided(session, alert, RETRAIN, "started", f"{reason}; {note}", workflow_id=workflow_id)


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
        return decided(session, alert, step, "failed", f"could not start {type_name}: {_cause(exc)}", **extra)
    return decided(session, alert, step, "started", reason, workflow_id=wf.id, **extra)


def _claim(session: Session, alert: DriftAlert, seen: datetime) -> bool:
    """Take the alert before acting on it: False when another process (the drift monitor, the controller's
    sweep, the API) changed it since it was read at `seen`, so that no chain step runs twice."""
    taken = session.exec(update(DriftAlert).where(col(DriftAlert.id) == alert.id, col(DriftAlert.updated_at) == seen)
                         .values(updated_at=utcnow()))
    session.commit()
    if taken.rowcount != 1:
        log.info("drift alert %s changed while it was read: left to the process that changed it", alert.id)
    return taken.rowcount == 1


def advance(session: Session, alert: DriftAlert, policy: RetrainPolicy | None = None) -> dict | None:
    """Move the alert's retrain chain one step if its current workflow (or canary window) has finished;
    returns the decision recorded, or None when there was nothing to do (no chain, still running, or
    another process moved it first)."""
    policy = policy or RetrainPolicy()
    seen = alert.updated_at  # read before any commit below expires (and reloads) the alert
    started = _last(alert, RETRAIN, "started")
    if started is None:
        return None
    deploying = _last(alert, DEPLOY)
    if deploying is not None:
        return watch_canary(session, alert, deploying, seen, policy) if deploying["decision"] == "started" else None
    evaluating = _last(alert, EVALUATE)
    if evaluating is None:
        status = _workflow_status(session, started["workflow_id"])
        if status not in TERMINAL or not _claim(session, alert, seen):
            return None
        if status != WorkflowStatus.COMPLETED:
            return decided(session, alert, EVALUATE, "skipped: fine-tune failed",
                           f"fine_tune workflow {started['workflow_id']} ended {status}")
            record(session, alert, DEPLOY, "skipped: no model", "the retrain produced no model")
        adapter = session.exec(select(Adapter).where(Adapter.workflow_id == started["workflow_id"])).first()
        if adapter is None or not adapter.model_id:
            return decided(session, alert, EVALUATE, "skipped: no model",
                           f"fine_tune workflow {started['workflow_id']} registered no adapter model")
        return start_step(session, alert, EVALUATE, WorkflowName.EVALUATE_MODEL,
                          [{"model_id": adapter.model_id, "dataset_id": adapter.dataset_id}, {}],
                          f"evaluate {adapter.name}", "fine-tune completed: evaluating on its held-out split of "
                          f"dataset {adapter.dataset_id}", model_id=adapter.model_id)
    if evaluating.get("decision") != "started":
        return None
    status = _workflow_status(session, evaluating["workflow_id"])
    if status not in TERMINAL or not _claim(session, alert, seen):
        return None
    evaluation = session.get(Evaluation, evaluating["workflow_id"])
    if status != WorkflowStatus.COMPLETED or evaluation is None:
        return decided(session, alert, DEPLOY, "skipped: evaluation failed",
                       f"evaluate_model workflow {evaluating['workflow_id']} ended {status}")
    if not evaluation.promoted:
        return decided(session, alert, DEPLOY, "skipped: not promoted",
                       f"the promotion gate did not pass: {(evaluation.gate or {}).get('reason', 'no reason given')}",
                       evaluation_id=evaluation.id)
    endpoint = session.get(Endpoint, alert.endpoint_id) if alert.endpoint_id else None
    if endpoint is None or endpoint.kind != "replicas" or endpoint.status in GONE:
        return decided(session, alert, DEPLOY, "skipped: no endpoint",
                       f"endpoint {alert.endpoint_id} is " + ("gone" if endpoint is None else
                                                              "a cloud proxy" if endpoint.kind != "replicas"
                                                              else endpoint.status)
                       + ": the promoted model is not deployed", evaluation_id=evaluation.id)
    share = policy.canary_percent
    return start_step(session, alert, DEPLOY, WorkflowName.DEPLOY_MODEL,
                      [{"model_id": evaluating["model_id"]}, {},  # steps 1-3 of a local deploy
                       {"endpoint_name": endpoint.name, "deploy_config": endpoint.config or {},
                        "traffic_percent": share}],
                      f"redeploy {endpoint.name}",
                      f"promotion gate passed: a new revision of {endpoint.name} with a {share}% canary share",
                      evaluation_id=evaluation.id, endpoint_id=endpoint.id, endpoint_name=endpoint.name,
                      traffic_percent=share)


def watch_canary(session: Session, alert: DriftAlert, deploying: dict, seen: datetime,
                 policy: RetrainPolicy) -> dict | None:
    """The chain's last step: once the deploy workflow completed, watch its revision against the revisions
    that kept the rest of the traffic, then promote it or roll it back (weft/monitoring/canary.py)."""
    watching = _last(alert, CANARY)
    if watching is None:
        status = _workflow_status(session, deploying["workflow_id"])
        if status not in TERMINAL or not _claim(session, alert, seen):
            return None
        return begin_canary(session, alert, deploying, status, policy)
    if watching["decision"] not in WATCHING:
        return None
    rev = session.get(Revision, watching["revision_id"])
    endpoint = session.get(Endpoint, rev.endpoint_id) if rev else None
    now = utcnow()
    if endpoint is None or endpoint.status in GONE:
        if not _claim(session, alert, seen):
            return None
        return decided(session, alert, CANARY, "skipped: endpoint stopped",
                       f"endpoint {watching['endpoint_id']} was stopped or removed during the canary")
    split = {r.version: r.traffic for r in revisions.revisions(session, endpoint.id) if r.traffic}
    if split != {**watching["baseline"], rev.version: watching["share"]}:
        if not _claim(session, alert, seen):
            return None
        return decided(session, alert, CANARY, "skipped: traffic changed",
                       f"the traffic of {endpoint.name} was changed during the canary (now "
                       f"{_split_text(split)}): it is left as it is", traffic=split)
    since, until = as_utc(datetime.fromisoformat(watching["since"])), as_utc(datetime.fromisoformat(watching["until"]))
    stats = canary.measure(session, [rev.id], since, now)
    base = canary.measure(session, watching["baseline_ids"], since, now)
    limits = canary.Limits.of(policy)
    verdict = canary.judge(stats, base, limits, window_over=now >= until, extended=watching["decision"] == "extended")
    if verdict.action == canary.Action.WAIT or not _claim(session, alert, seen):
        return None
    numbers = {"canary_stats": stats.as_dict(), "baseline_stats": base.as_dict(), "limits": asdict(limits),
               "window": {"since": since.isoformat(), "until": now.isoformat()}}
    if verdict.action == canary.Action.EXTEND:
        return decided(session, alert, CANARY, "extended", verdict.reason,
                       **{**_watch_state(watching), "until": (until + timedelta(minutes=policy.canary_minutes))
                          .isoformat()}, **numbers)
    promote = verdict.action == canary.Action.PROMOTE
    target = {rev.version: 100} if promote else canary.rescaled(watching["baseline"])
    try:
        revisions.set_traffic(session, endpoint, target, f"retrain canary {rev.version}: {verdict.reason}")
    except Exception as exc:  # a baseline revision failed since, or the endpoint changed under us
        session.rollback()
        return decided(session, alert, CANARY, "failed", f"could not {verdict.action} {rev.version} "
                       f"({verdict.reason}): {_cause(exc)}", **numbers)
    action = f"canary {rev.version} promoted" if promote else f"canary {rev.version} rolled back"
    revisions.mark_updating(session, endpoint, f"retrain {action}")
    data = {"deployment_id": endpoint.id, "endpoint_name": endpoint.name, "alert_id": alert.id,
            "version": rev.version if promote else max(target, key=lambda v: target[v]), "traffic": target,
            "reason": verdict.reason}
    if promote:
        emit(session, "deployment.updated", {**data, "changes": "traffic"},
             key=f"deployment:{endpoint.id}:canary:{rev.id}:promoted", user_id=endpoint.user_id)
    else:
        emit(session, "deployment.rolled_back", {**data, "from_version": rev.version},
             key=f"deployment:{endpoint.id}:canary:{rev.id}:rolled_back", user_id=endpoint.user_id)
    return decided(session, alert, CANARY, "promoted" if promote else "rolled back", verdict.reason,
                   revision=rev.version, traffic=target, **numbers)


def begin_canary(session: Session, alert: DriftAlert, deploying: dict, status: str,
                 policy: RetrainPolicy) -> dict:
    """The deploy workflow ended: start watching its revision (from when it got its share), or say why not."""
    wf_id = deploying["workflow_id"]
    rev = session.exec(select(Revision).where(Revision.workflow_id == wf_id)).first()
    if status != WorkflowStatus.COMPLETED or rev is None:
        return decided(session, alert, CANARY, "skipped: deploy failed",
                       f"deploy_model workflow {wf_id} ended {status}"
                       + ("" if rev is None else f": {rev.version} never took traffic"))
    if not rev.traffic:
        return decided(session, alert, CANARY, "skipped: traffic changed",
                       f"{rev.version} has no traffic (the split was changed after its deploy): nothing to watch",
                       revision=rev.version)
    others = [r for r in revisions.revisions(session, rev.endpoint_id) if r.traffic and r.id != rev.id]
    baseline = {r.version: r.traffic for r in others}
    if not baseline:
        return decided(session, alert, CANARY, "skipped: no baseline",
                       f"{rev.version} took all the traffic: no revision served beside it to compare with",
                       revision=rev.version)
    since = as_utc(rev.traffic_changed_at)
    until = since + timedelta(minutes=policy.canary_minutes)
    return decided(session, alert, CANARY, "watching",
                   f"{rev.version} serves {rev.traffic}% beside {_split_text(baseline)}: its error rate and latency "
                   f"are compared until {until.isoformat(timespec='seconds')}",
                   revision=rev.version, revision_id=rev.id, endpoint_id=rev.endpoint_id, share=rev.traffic,
                   baseline=baseline, baseline_ids=[r.id for r in others], since=since.isoformat(), until=until.isoformat())


def _watch_state(entry: dict) -> dict:
    keys = ("revision", "revision_id", "endpoint_id", "share", "baseline", "baseline_ids", "since", "until")
    return {k: entry[k] for k in keys}


def _split_text(split: dict[str, int]) -> str:
    return ", ".join(f"{v} {p}%" for v, p in split.items()) or "no traffic"


def _is_open(alert: DriftAlert) -> bool:
    if _last(alert, RETRAIN, "started") is None:
        return False
    deploying = _last(alert, DEPLOY)
    if deploying is None:
        return True
    watching = _last(alert, CANARY)
    return deploying["decision"] == "started" and (watching is None or watching["decision"] in WATCHING)


def open_chains(session: Session) -> list[DriftAlert]:
    """Alerts whose retrain started and has not reached its final decision (deploy skipped, or the
    canary's promotion, rollback or skip)."""
    alerts = session.exec(select(DriftAlert).where(DriftAlert.type == "data_drift", DriftAlert.severity == "high"))
    return [a for a in alerts if _is_open(a)]


def advance_open_chains(session: Session, policy: RetrainPolicy | None = None) -> list[dict]:
    """`advance` every open chain; one chain's failure is logged and does not stop the others. Returns the
    decisions recorded, each with its alert's id."""
    policy = policy or RetrainPolicy()
    moved = []
    for alert in open_chains(session):
        alert_id = alert.id
        try:
            entry = advance(session, alert, policy)
        except Exception:
            session.rollback()
            log.exception("drift alert %s: could not advance its retrain chain", alert_id)
            continue
        if entry:
            moved.append({"alert_id": alert_id, **entry})
    return moved


_next_sweep = 0.0  # monotonic time of this process's next sweep


def sweep() -> list[str]:
    """`advance_open_chains` in a transaction of its own, at most every WEFT_RETRAIN_CHECK_SECONDS in this
    process: called by every endpoint controller pass. Never raises (the controller goes on); returns the
    decisions as log lines."""
    global _next_sweep
    from weft.db import session_scope

    if time.monotonic() < _next_sweep:
        return []
    try:
        policy = RetrainPolicy()
        _next_sweep = time.monotonic() + policy.check_seconds
        with session_scope() as s:
            moved = advance_open_chains(s, policy)
    except Exception as exc:  # the database or Prefect is away: the next sweep tries again
        log.warning("could not advance the retrain chains: %s", exc)
        return []
    return [f"drift alert {e['alert_id']}: {e['step']} {e['decision']} ({e['reason']})" for e in moved]
