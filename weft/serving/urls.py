"""The URLs an endpoint is reached at, built from the API's own address."""

from __future__ import annotations

from weft.settings import get_settings
from weft.statuses import EndpointKind
from weft.tables import Endpoint


def base_url() -> str:
    """The API's own address (the OpenAI-compatible base URL is `{base_url}/v1`)."""
    s = get_settings()
    return f"http://{s.api_host}:{s.api_port}"


def endpoint_url(endpoint: Endpoint, base: str | None = None) -> str:
    """Where requests go: document 001's prediction URL for a classic model, else the OpenAI base URL."""
    root = base_url() if base is None else base
    return f"{root}/api/v1/predict/{endpoint.id}" if endpoint.kind == EndpointKind.CLASSIC else f"{root}/v1"
