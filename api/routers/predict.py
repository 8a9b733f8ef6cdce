"""Document 001's predictions: `POST /predict/{deployment_id}` (one example or a batch) and
`POST /test-model` (named features), through the gateway to the deployment's classic-model replicas.
Every request is recorded after its response is sent; a failed prediction is a `prediction.error` event."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import anyio
from fastapi import APIRouter, Request
from sqlmodel import Session

from api.deps import CurrentUserId, gateway, get_owned
from api.errors import ApiError
from weft.db import get_engine
from weft.schemas.classic import ClassicPredictRequest, PredictionResult, TestModelRequest
from weft.statuses import EndpointKind
from weft.tables import Endpoint, Model, Revision

router = APIRouter(tags=["predictions"])
ROUTE = "/api/v1/predict"


def classic_endpoint(user_id: str, deployment_id: str) -> tuple[Endpoint, list[str] | None]:
    """The caller's classic deployment (404 otherwise; 400 for an LLM's) and its current model's feature
    names (when it was fitted with them)."""
    with Session(get_engine()) as session:
        endpoint = get_owned(session, Endpoint, deployment_id, user_id, "deployment")
        model = session.get(Model, endpoint.model_id)
    if endpoint.kind != EndpointKind.CLASSIC:
        raise ApiError(400, "INVALID_INPUT", f"deployment {endpoint.name} serves an LLM: send it OpenAI requests "
                       f"at /v1/chat/completions with model {endpoint.slug!r}", {"field": "deployment_id"})
    detected = ((model.details or {}).get("detected") or {}) if model else {}
    return endpoint, detected.get("feature_names")


@lru_cache(maxsize=4096)
def version_of(revision_id: str | None) -> str | None:
    """A revision's version (`v2`); it never changes, so one read per revision."""
    with Session(get_engine()) as session:
        rev = session.get(Revision, revision_id) if revision_id else None
    return rev.version if rev else None


async def predicted(request: Request, endpoint: Endpoint, user_id: str, data: Any) -> dict[str, Any]:
    """One call to a replica: its answer with the version that served it, or its error in document 001's
    format (INVALID_INPUT 400, PREDICTION_ERROR 500)."""
    gw = gateway(request)
    try:
        result = await gw.call(endpoint, "/predict", {"data": data}, retry=False)
    except ApiError as exc:
        gw.record(endpoint.id, None, user_id, ROUTE, 0.0, exc.status, None, None, exc.message)
        raise
    error = result.body.get("error") if result.status_code >= 400 else None
    gw.record(endpoint.id, result.replica_id, user_id, ROUTE, result.latency_ms, result.status_code, None, None,
              (error or {}).get("message"))
    if error is not None:
        code = error.get("code") or ("INVALID_INPUT" if result.status_code < 500 else "PREDICTION_ERROR")
        raise ApiError(result.status_code, code, error.get("message") or "the prediction failed",
                       error.get("details") or {})
    revision_id = gw.revision_of.get((endpoint.id, result.replica_id or ""))
    version = await anyio.to_thread.run_sync(version_of, revision_id)
    return {**result.body, "model_version": version, "response_time_ms": round(result.latency_ms, 1)}


@router.post("/predict/{deployment_id}", response_model=PredictionResult, response_model_exclude_none=True)
async def predict(deployment_id: str, body: ClassicPredictRequest, request: Request, user_id: CurrentUserId) -> dict:
    """`{"data": [5.1, 3.5, 1.4, 0.2]}` → `prediction`; `{"data": [[...], [...]]}` → `predictions` and
    `batch_size`; `probabilities` where the model has them."""
    endpoint, _ = await anyio.to_thread.run_sync(classic_endpoint, user_id, deployment_id)
    return await predicted(request, endpoint, user_id, body.data)


@router.post("/test-model", response_model=PredictionResult, response_model_exclude_none=True)
async def test_model(body: TestModelRequest, request: Request, user_id: CurrentUserId) -> dict:
    """One example given as named features: ordered by the model's own feature names when it was fitted
    with them (each must be present), else in the order given."""
    endpoint, names = await anyio.to_thread.run_sync(classic_endpoint, user_id, body.deployment_id)
    if names:
        missing = [n for n in names if n not in body.data]
        extra = [n for n in body.data if n not in names]
        if missing or extra:
            raise ApiError(400, "INVALID_INPUT", f"the model's features are {names}",
                           {"field": "data", "reason": f"missing {missing}, unknown {extra}"})
        row = [body.data[n] for n in names]
    else:
        row = list(body.data.values())
    return await predicted(request, endpoint, user_id, row)
