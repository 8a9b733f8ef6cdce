"""Spec of the relaycore_recommendations workflow: RelayCore's vehicles → document 000's prompt each →
one of the owner's deployed endpoints → recommendations parsed from its answers → sent to RelayCore."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from weft.specs.base import Stage, StepDef, StepModel, WorkflowType, register, step_context
from weft.specs.names import WorkflowName
from weft.statuses import SERVING, EndpointKind


class RelayCoreRecommendationsSpec(StepModel):
    endpoint_id: str = Field(description="one of your active LLM endpoints (the deployment id) that answers the "
                                         "prompts")
    limit: int = Field(default=20, ge=1, le=500, description="how many of RelayCore's vehicles to recommend for")
    offset: int = Field(default=0, ge=0, description="vehicles of RelayCore's list to skip first")
    customer_concern: str | None = Field(default=None, max_length=1000,
                                         description="the prompt's `Customer Concern` for every vehicle (unset: "
                                                     "`None reported`)")
    max_tokens: int = Field(default=300, ge=1, le=4096, description="longest answer per vehicle, in tokens")
    temperature: float = Field(default=0.2, ge=0, le=2)
    service_interval_miles: int = Field(default=5000, ge=500, le=100_000,
                                        description="miles between services: with the mileage since the last "
                                                    "service it sets the recommendations' due dates")

    @field_validator("endpoint_id")
    @classmethod
    def _serving_llm(cls, value: str, info: ValidationInfo) -> str:
        ctx = step_context(info)
        if ctx.session is not None:
            from weft.tables import Endpoint

            if why := not_an_active_llm(ctx.owned(Endpoint, value, "endpoint")):
                raise ValueError(f"{why}: choose an active LLM endpoint")
        return value


def not_an_active_llm(endpoint: Any) -> str | None:
    """Why `endpoint` (an Endpoint row) cannot answer the prompts now, or None."""
    if endpoint.kind == EndpointKind.CLASSIC or endpoint.status not in SERVING:
        return f"endpoint {endpoint.name} is {endpoint.status} ({endpoint.kind})"
    return None


def admit_relaycore(session: Any, spec: dict[str, Any]) -> None:
    """The endpoint's owner must have configured RelayCore (`Refused`, INTEGRATION_NOT_CONFIGURED, else)."""
    from weft.integrations import connector
    from weft.tables import Endpoint

    endpoint = session.get(Endpoint, spec["endpoint_id"])
    connector.require(endpoint.user_id)


RELAYCORE_RECOMMENDATIONS = register(
    WorkflowType(
        name=WorkflowName.RELAYCORE_RECOMMENDATIONS,
        title="RelayCore service recommendations",
        steps=(StepDef(1, "Endpoint and vehicles", RelayCoreRecommendationsSpec),),
        spec=RelayCoreRecommendationsSpec,
        flow_name=WorkflowName.RELAYCORE_RECOMMENDATIONS,
        admit=admit_relaycore,
        stages=(
            Stage("fetch_vehicles", "Read the vehicles from RelayCore"),
            Stage("build_prompts", "Write each vehicle's service prompt"),
            Stage("predict_answers", "Answer every prompt with the endpoint"),
            Stage("parse_recommendations", "Turn each answer into prioritised, dated recommendations"),
            Stage("send_recommendations", "Send each vehicle's recommendations to RelayCore"),
        ),
    )
)
