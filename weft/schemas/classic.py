"""Document 001's classic-model deploy and predictions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime


class ModelMetadata(BaseModel):
    """What the upload is: the suffix's framework at once, the rest once its sandboxed inspection ran."""

    framework: str | None = None
    model_type: str | None = None
    size_mb: float | None = None
    input_shape: list[int] | None = None
    output_shape: list[int] | None = None
    feature_names: list[str] | None = Field(default=None, description="names POST /test-model accepts, in order")
    probabilities: bool | None = Field(default=None, description="predictions come with class probabilities")
    library_version: str | None = None
    environment: str | None = Field(default=None, description="the uv environment (requirements hash) it runs in")


class ClassicDeployCreated(BaseModel):
    id: str
    name: str
    status: str = Field(description="building: the deploy_classic_model workflow runs")
    created_at: UtcDatetime
    model_metadata: ModelMetadata
    version: str
    workflow_id: str
    flow_run_id: str | None
    endpoint_url: str = Field(description="POST predictions here once the deployment is active")


class ClassicPredictRequest(BaseModel):
    data: Any = Field(description="one example (an array of input_shape) or a batch (an array of examples)")


class PredictionResult(BaseModel):
    """A single prediction (`prediction`) or a batch (`predictions`, `batch_size`)."""

    prediction: Any = None
    predictions: list[Any] | None = None
    probabilities: list[Any] | None = None
    batch_size: int | None = None
    model_version: str | None
    response_time_ms: float


class TestModelRequest(BaseModel):
    deployment_id: str
    data: dict[str, float] = Field(description="feature name → value (the model's feature_names when it has "
                                               "them, else in the order given)")
