"""weft's Python client: `weft.Client` (blocking) and `weft.AsyncClient` over the REST API.

    import weft

    client = weft.Client(api_key="wft_...")            # or WEFT_API_URL / WEFT_API_KEY / `weft login`
    job = client.jobs.create({"base_model": "SmolLM2-135M-Instruct", "dataset_id": "...", "algorithm": "lora"})
    for event in client.jobs.logs(job.job_id, follow=True):
        print(event.text)

Return values are the API's own pydantic schemas (`weft.schemas`); errors are `weft.errors.WeftError`
subclasses with `code`, `message`, `details`, `status` and `request_id`. Importing it loads neither
torch nor Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weft.client import aio
from weft.client import resources as res
from weft.client.http import AsyncTransport, Transport
from weft.errors import (
    Conflict,
    Failed,
    Forbidden,
    Invalid,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    UpstreamError,
    WeftError,
)
from weft.schemas.auth import MeOut
from weft.schemas.classic import ClassicDeployCreated
from weft.schemas.jobs import JobOut

__all__ = ["AsyncClient", "Client", "Conflict", "Deployment", "Failed", "Forbidden", "Invalid", "InvalidInput", "NotFound",
           "RateLimited", "Unauthorized", "Unavailable", "UpstreamError", "WeftError"]

Deployment = res.Deployment


class Client:
    """The blocking client. `api_key` (default WEFT_API_KEY, else the key `weft login` saved; a JWT from
    /auth/login works too) and `base_url` (default WEFT_API_URL, else the saved URL, else
    http://127.0.0.1:8000); `http_client` replaces the httpx.Client (a FastAPI TestClient in tests)."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 3, http_client: Any = None) -> None:
        self._t = Transport(base_url, api_key, timeout=timeout, max_retries=max_retries, http_client=http_client)
        self.workflows = res.Workflows(self._t)
        self.models = res.Models(self._t)
        self.datasets = res.Datasets(self._t)
        self.jobs = res.Jobs(self._t)
        self.evaluations = res.Evaluations(self._t)
        self.endpoints = res.Endpoints(self._t)
        self.deployments = res.Deployments(self._t)
        self.inference = res.Inference(self._t)
        self.monitoring = res.Monitoring(self._t)
        self.webhooks = res.Webhooks(self._t)
        self.platforms = res.Platforms(self._t)

    @property
    def base_url(self) -> str:
        return self._t.base_url

    def deploy(self, model_path: str | Path, requirements_path: str | Path, name: str | None = None, *,
               memory: int | None = None, timeout: int | None = None, wait: bool = True,
               wait_timeout: float = 900) -> Deployment:
        """Deploy a classic model file (pickle, joblib, .pt, .h5/.keras) with its requirements (document
        001) and, unless `wait=False`, return once it serves predictions."""
        model_path, requirements_path = Path(model_path), Path(requirements_path)
        form = res.clean(name=name, memory=memory, timeout=timeout)
        with model_path.open("rb") as model, requirements_path.open("rb") as requirements:
            created = self._t.request("POST", "/deploy", ClassicDeployCreated, data={k: str(v) for k, v in form.items()},
                                      files={"model_file": (model_path.name, model),
                                             "requirements_file": (requirements_path.name, requirements)})
        deployment = res.Deployment(self.deployments, created)
        return deployment.wait(wait_timeout) if wait else deployment

    def me(self) -> MeOut:
        """The user the key belongs to."""
        return self._t.request("GET", "/auth/me", MeOut)

    # document 003's PEFT Studio client
    def create_job(self, config: dict[str, Any]) -> str:
        """Create a fine-tuning job; its id."""
        return self.jobs.create(config).job_id

    def get_job_status(self, job_id: str) -> JobOut:
        return self.jobs.get(job_id)

    def close(self) -> None:
        self._t.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The same resources with `await`; lists and `jobs.logs(follow=True)` are async iterators."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 3, http_client: Any = None) -> None:
        self._t = AsyncTransport(base_url, api_key, timeout=timeout, max_retries=max_retries, http_client=http_client)
        self.workflows = aio.Workflows(self._t)
        self.models = aio.Models(self._t)
        self.datasets = aio.Datasets(self._t)
        self.jobs = aio.Jobs(self._t)
        self.evaluations = aio.Evaluations(self._t)
        self.endpoints = res.Endpoints(self._t)
        self.deployments = aio.Deployments(self._t)
        self.inference = res.Inference(self._t)
        self.monitoring = res.Monitoring(self._t)
        self.webhooks = aio.Webhooks(self._t)
        self.platforms = res.Platforms(self._t)

    async def me(self) -> MeOut:
        return await self._t.request("GET", "/auth/me", MeOut)

    async def create_job(self, config: dict[str, Any]) -> str:
        return (await self.jobs.create(config)).job_id

    async def get_job_status(self, job_id: str) -> JobOut:
        return await self.jobs.get(job_id)

    async def aclose(self) -> None:
        await self._t.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
