"""The weft API: FastAPI over the database and the Prefect server (`uvicorn api.main:app`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from api.gateway import Gateway
from api.ratelimit import RateLimiter
from api.routers import (
    adapters,
    auth,
    clusters,
    credentials,
    datasets,
    deploy,
    deployments,
    drift,
    endpoints,
    evaluations,
    experiments,
    files,
    inference,
    integrations,
    jobs,
    models,
    monitoring,
    platforms,
    predict,
    providers,
    resources,
    status,
    webhooks,
    workflow_create,
    workflows,
    ws,
)
from weft import __version__
from weft.db import migrate
from weft.webhooks.service import WebhookService

API_PREFIX = "/api/v1"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await run_in_threadpool(migrate)  # Alembic to head and the provider catalog seeded
    app.state.gateway = Gateway()
    app.state.webhooks = WebhookService()  # workflow events from Prefect + signed deliveries
    await app.state.webhooks.start()
    try:
        yield
    finally:
        await app.state.webhooks.stop()
        await app.state.gateway.aclose()


def create_app() -> FastAPI:
    app = FastAPI(title="weft", version=__version__, lifespan=lifespan,
                  description="Model operations for LLMs on Prefect: step-numbered workflows, models, runs.")
    install_error_handlers(app)  # adds the request-id / 500 middleware first, so it sits inside the limiter
    app.add_middleware(RateLimiter)  # outermost: every response, 429 and 500 included, gets the headers
    app.include_router(status.root)
    app.include_router(ws.router)  # /ws/jobs/{id}, as document 003 places it
    app.include_router(inference.openai_router)  # /v1/completions, /v1/chat/completions, /v1/models
    for module in (auth, workflows, workflow_create, models, files, adapters, datasets, jobs, evaluations, experiments,
                   endpoints, deployments, deploy, predict, inference, clusters, platforms, resources, monitoring, drift,
                   webhooks, credentials, providers, integrations, status):
        app.include_router(module.router, prefix=API_PREFIX)
    return app


app = create_app()
