"""RelayCore's API: its vehicles (paged) and the service recommendations weft sends back for a VIN.

The shapes are document 000's (`GET .../vehicles` answers `{data, meta{total, limit, offset}}`, `POST
.../recommendations` answers a receipt); the paths are `{base_url}/vehicles` and `{base_url}/recommendations`
under the base URL a user configures. The API key travels as a Bearer token and is never logged. An
unreachable server or an error answer is `UpstreamError` (HTTP 502) with the URL and, where RelayCore
answered, its status and message.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from weft.errors import UpstreamError

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_SECONDS = 10.0
Priority = Literal["low", "medium", "high"]


class Vehicle(BaseModel):
    """One vehicle of RelayCore's (fields RelayCore adds beyond these are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    vin: str
    make: str
    model: str
    year: int
    trim: str | None = None
    mileage: int = Field(ge=0)
    last_service_date: date | None = None
    last_service_mileage: int | None = Field(default=None, ge=0)
    customer_id: str | None = None


class PageMeta(BaseModel):
    total: int
    limit: int
    offset: int


class VehiclePage(BaseModel):
    data: list[Vehicle]
    meta: PageMeta


class Recommendation(BaseModel):
    """One service recommendation for a vehicle."""

    description: str = Field(min_length=1, max_length=2000)
    priority: Priority = "medium"
    details: dict[str, Any] = Field(default_factory=dict)
    estimated_cost: float | None = Field(default=None, ge=0)
    due_date: datetime


class RecommendationBatch(BaseModel):
    """What `POST .../recommendations` takes: a VIN and its recommendations."""

    vin: str = Field(min_length=1, max_length=64)
    recommendations: list[Recommendation] = Field(min_length=1, max_length=100)


class Receipt(BaseModel):
    """RelayCore's answer to a batch of recommendations."""

    model_config = ConfigDict(extra="ignore")

    id: str
    vin: str
    recommendations_count: int
    status: str
    created_at: datetime


def provider_message(response: httpx.Response) -> str:
    """The error message of an error answer: `error.message`, `message` or `detail`, else its text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        for value in (error.get("message") if isinstance(error, dict) else error, body.get("message"),
                      body.get("detail")):
            if isinstance(value, str) and value:
                return value[:500]
    return str(body)[:500]


class RelayCoreClient:
    """A RelayCore API at `base_url`, authenticated with `api_key` (sync; callers off the event loop)."""

    def __init__(self, base_url: str, api_key: str, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                    headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"})

    def __enter__(self) -> RelayCoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("RelayCore %s %s did not answer: %s", method, url, type(exc).__name__)
            raise UpstreamError(f"RelayCore did not answer at {url}: {type(exc).__name__}",
                                {"provider": "relaycore", "url": url, "reason": str(exc)[:300]}) from exc
        if response.status_code >= 400:
            message = provider_message(response)
            raise UpstreamError(f"RelayCore answered {response.status_code}: {message}",
                                {"provider": "relaycore", "url": url, "status": response.status_code,
                                 "message": message})
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError("RelayCore answered with something other than JSON",
                                {"provider": "relaycore", "url": url, "status": response.status_code}) from exc

    def _parsed(self, model: type[BaseModel], body: Any, path: str) -> Any:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise UpstreamError(f"RelayCore's answer to {path} is not what its API describes",
                                {"provider": "relaycore", "url": f"{self.base_url}{path}",
                                 "errors": [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]]}
                                ) from exc

    def vehicles(self, limit: int = 20, offset: int = 0) -> VehiclePage:
        """One page of RelayCore's vehicles."""
        body = self._call("GET", "/vehicles", params={"limit": limit, "offset": offset})
        return self._parsed(VehiclePage, body, "/vehicles")

    def all_vehicles(self, limit: int, offset: int = 0, page_size: int = 100) -> list[Vehicle]:
        """Up to `limit` vehicles from `offset` on, page by page."""
        found: list[Vehicle] = []
        while len(found) < limit:
            page = self.vehicles(limit=min(page_size, limit - len(found)), offset=offset + len(found))
            found += page.data
            if not page.data or offset + len(found) >= page.meta.total:
                break
        return found[:limit]

    def send_recommendations(self, batch: RecommendationBatch) -> Receipt:
        """Send a VIN's recommendations; RelayCore's receipt."""
        body = self._call("POST", "/recommendations", json=batch.model_dump(mode="json"))
        return self._parsed(Receipt, body, "/recommendations")
