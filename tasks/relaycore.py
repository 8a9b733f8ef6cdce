"""RelayCore recommendation tasks: fetch the vehicles, write their prompts, answer them with an endpoint,
parse the answers, send the recommendations. A vehicle that fails at any step (no answer, an empty one,
RelayCore refusing its recommendations) carries its error to the end and the others go on; the last step
fails the run only when every vehicle failed."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from tasks.common import step_options
from weft.clock import utcnow
from weft.db import session_scope
from weft.errors import UpstreamError
from weft.integrations import connector
from weft.integrations.recommendations import build_prompt, parse_answer
from weft.integrations.relaycore import Receipt, Recommendation, RecommendationBatch, Vehicle
from weft.serving.gateway_client import complete_all
from weft.specs.relaycore import RelayCoreRecommendationsSpec, not_an_active_llm
from weft.tables import Endpoint


class VehicleWork(BaseModel):
    """One vehicle on its way through the steps; `error` (with the step it failed in) stops it."""

    vehicle: Vehicle
    prompt: str = ""
    answer: str | None = None
    recommendations: list[Recommendation] = []
    receipt: Receipt | None = None
    failed_at: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Outcome(BaseModel):
    """The run's result: per vehicle, what was sent or why not."""

    vehicles: int
    sent: int
    failed: int
    results: list[dict[str, Any]]


def _fail(item: VehicleWork, step: str, error: str) -> VehicleWork:
    get_run_logger().warning("vehicle %s (%s): %s failed: %s", item.vehicle.id, item.vehicle.vin, step, error)
    return item.model_copy(update={"failed_at": step, "error": error})


@task(**step_options("fetch_vehicles"))
def fetch_vehicles(spec: RelayCoreRecommendationsSpec, owner_id: str) -> list[Vehicle]:
    """Up to `limit` vehicles from RelayCore with the owner's connector (none configured: the run fails)."""
    with connector.client(connector.require(owner_id)) as relaycore:
        vehicles = relaycore.all_vehicles(spec.limit, spec.offset)
    get_run_logger().info("RelayCore listed %d vehicles (limit %d, offset %d)", len(vehicles), spec.limit,
                          spec.offset)
    return vehicles


@task(**step_options("build_prompts"))
def build_prompts(vehicles: list[Vehicle], concern: str | None) -> list[VehicleWork]:
    """Document 000's prompt for each vehicle."""
    return [VehicleWork(vehicle=v, prompt=build_prompt(v, concern)) for v in vehicles]


def serving_endpoint(endpoint_id: str, owner_id: str) -> Endpoint:
    with session_scope() as s:
        endpoint = s.get(Endpoint, endpoint_id)
        if endpoint is None or endpoint.user_id != owner_id:
            raise ValueError(f"endpoint {endpoint_id} is not one of the workflow owner's endpoints")
        if why := not_an_active_llm(endpoint):
            raise ValueError(f"{why}: not an active LLM endpoint")
        s.expunge(endpoint)
        return endpoint


@task(**step_options("predict_answers"))
def predict_answers(spec: RelayCoreRecommendationsSpec, owner_id: str, items: list[VehicleWork]) -> list[VehicleWork]:
    """Every prompt through the endpoint (weft's gateway, concurrently); a failed or empty answer fails
    that vehicle only."""
    endpoint = serving_endpoint(spec.endpoint_id, owner_id)
    completions = complete_all(endpoint, owner_id, [i.prompt for i in items], max_tokens=spec.max_tokens,
                               temperature=spec.temperature)
    done = []
    for item, completion in zip(items, completions, strict=True):
        if completion.error is not None:
            done.append(_fail(item, "predict_answers", completion.error))
        elif not (completion.text or "").strip():
            done.append(_fail(item, "predict_answers", "the endpoint's answer was empty"))
        else:
            done.append(item.model_copy(update={"answer": completion.text}))
    get_run_logger().info("%s answered %d of %d prompts", endpoint.name, sum(i.ok for i in done), len(done))
    return done


@task(**step_options("parse_recommendations"))
def parse_recommendations(items: list[VehicleWork], service_interval: int) -> list[VehicleWork]:
    """Each answer's recommendations (see weft.integrations.recommendations); none found fails the vehicle."""
    now, done = utcnow(), []
    for item in items:
        if not item.ok:
            done.append(item)
            continue
        found = parse_answer(item.answer or "", item.vehicle, service_interval=service_interval, now=now)
        done.append(item.model_copy(update={"recommendations": found}) if found else
                    _fail(item, "parse_recommendations", "no recommendation in the endpoint's answer"))
    return done


def _row(item: VehicleWork) -> dict[str, Any]:
    return {"vehicle_id": item.vehicle.id, "vin": item.vehicle.vin,
            "status": "sent" if item.receipt else "failed",
            "recommendations_count": len(item.recommendations) if item.receipt else 0,
            "receipt_id": item.receipt.id if item.receipt else None,
            "failed_at": item.failed_at, "error": item.error}


def _report(outcome: Outcome) -> str:
    lines = [f"# RelayCore recommendations: {outcome.sent} of {outcome.vehicles} vehicles sent", "",
             "| VIN | status | recommendations | receipt | error |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['vin']} | {r['status']} | {r['recommendations_count']} | {r['receipt_id'] or ''} | "
              f"{(r['error'] or '').replace('|', '/')[:200]} |" for r in outcome.results]
    return "\n".join(lines)


@task(**step_options("send_recommendations"))
def send_recommendations(owner_id: str, items: list[VehicleWork]) -> Outcome:
    """Send each vehicle's recommendations to RelayCore (a refusal fails that vehicle); the run fails when
    no vehicle's recommendations were sent."""
    log = get_run_logger()
    done = []
    with connector.client(connector.require(owner_id)) as relaycore:
        for item in items:
            if not item.ok:
                done.append(item)
                continue
            try:
                receipt = relaycore.send_recommendations(
                    RecommendationBatch(vin=item.vehicle.vin, recommendations=item.recommendations))
            except UpstreamError as exc:
                done.append(_fail(item, "send_recommendations", exc.message))
                continue
            log.info("vehicle %s: %d recommendations sent (receipt %s)", item.vehicle.vin, len(item.recommendations),
                     receipt.id)
            done.append(item.model_copy(update={"receipt": receipt}))
    sent = sum(i.receipt is not None for i in done)
    outcome = Outcome(vehicles=len(done), sent=sent, failed=len(done) - sent, results=[_row(i) for i in done])
    create_markdown_artifact(_report(outcome), key="relaycore-recommendations",
                             description="what was sent to RelayCore, per vehicle")
    if done and not sent:
        raise RuntimeError(f"no vehicle's recommendations were sent ({len(done)} failed): "
                           + "; ".join(f"{i.vehicle.vin}: {i.failed_at}: {i.error}" for i in done)[:2000])
    return outcome
