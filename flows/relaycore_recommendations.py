"""Service recommendations for RelayCore's vehicles, written by one of the owner's deployed models."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.relaycore import build_prompts, fetch_vehicles, parse_recommendations, predict_answers, send_recommendations
from weft.specs.names import WorkflowName
from weft.specs.relaycore import RelayCoreRecommendationsSpec
from weft.tables import Endpoint


@flow(name=WorkflowName.RELAYCORE_RECOMMENDATIONS.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("endpoint_id", Endpoint), names.workflow()))
def relaycore_recommendations(spec: RelayCoreRecommendationsSpec, workflow_id: str | None = None,
                              cache_version: int = 0, owner_id: str | None = None) -> dict[str, Any]:
    """Vehicles → prompts → the endpoint's answers → recommendations → RelayCore (per-vehicle failures are
    recorded and the others go on; the run fails only when no vehicle's recommendations were sent)."""
    ref = workflow_ref(WorkflowName.RELAYCORE_RECOMMENDATIONS, spec, workflow_id, owner_id)
    vehicles = fetch_vehicles(spec, ref.owner_id)
    items = build_prompts(vehicles, spec.customer_concern)
    items = predict_answers(spec, ref.owner_id, items)
    items = parse_recommendations(items, spec.service_interval_miles)
    return send_recommendations(ref.owner_id, items).model_dump(mode="json")
