"""Third-party integrations: the RelayCore connector, its vehicles and the recommendations sent to it
(document 000's shapes; the models themselves are weft's RelayCore client's)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field

from weft.integrations.relaycore import Receipt, RecommendationBatch, VehiclePage

__all__ = ["ConnectorIn", "ConnectorStatus", "Receipt", "RecommendationBatch", "VehiclePage"]


class ConnectorStatus(BaseModel):
    configured: bool
    base_url: str | None = None


class ConnectorIn(BaseModel):
    base_url: AnyHttpUrl | None = Field(default=None, description="RelayCore's API base URL (its /vehicles and "
                                                                  "/recommendations are under it); unset: "
                                                                  "WEFT_RELAYCORE_URL")
    api_key: str = Field(min_length=1, max_length=10_000, description="sent to RelayCore as a Bearer token; kept in "
                                                                      "a Prefect Secret block, never echoed")
