"""Completions through weft's own inference gateway, for flows that predict with a deployed endpoint.

A flow runs in a worker process, not in the API, so it cannot call the gateway (`api.gateway`) as a
function; it sends its prompts to the API's `/endpoints/{slug}/v1/completions` like any client does. The
gateway then does what it does for every request: traffic split, least-loaded healthy replica, a cold-start
hold, retry on a dead replica, a cloud endpoint's provider and credential, and the request's record (so the
flow's predictions show in the endpoint's metrics and drift checks). The calls are authenticated as the
workflow's owner with a short-lived access token (`weft.tokens`), so the owner's endpoints, and only theirs, are reachable.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from pydantic import BaseModel

from weft.serving.urls import base_url
from weft.tables import Endpoint
from weft.tokens import create_access_token

TOKEN_SECONDS = 3600
REQUEST_TIMEOUT_SECONDS = 600.0  # a request may wait out a cold start, then generate on a CPU


class Completion(BaseModel):
    """One prompt's answer, or why there is none."""

    text: str | None = None
    finish_reason: str | None = None
    tokens_input: int = 0
    tokens_output: int = 0
    error: str | None = None


def _error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f"HTTP {response.status_code}: {message or str(body)[:300]}"


def complete_all(endpoint: Endpoint, user_id: str, prompts: list[str], *, max_tokens: int, temperature: float,
                 concurrency: int = 8, api_url: str | None = None) -> list[Completion]:
    """Each prompt's completion through the gateway, `concurrency` at a time, in the prompts' order; a
    failed request is that prompt's `error`, the others go on."""
    url = f"{api_url or base_url()}/endpoints/{endpoint.slug or endpoint.name}/v1/completions"
    headers = {"Authorization": f"Bearer {create_access_token(user_id, TOKEN_SECONDS)[0]}"}

    def one(client: httpx.Client, prompt: str) -> Completion:
        try:
            response = client.post(url, json={"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature})
        except httpx.HTTPError as exc:
            return Completion(error=f"the API at {url} did not answer: {type(exc).__name__}: {exc}"[:500])
        if response.status_code >= 400:
            return Completion(error=_error(response))
        body = response.json()
        choice, usage = body["choices"][0], body.get("usage") or {}
        return Completion(text=choice.get("text") or "", finish_reason=choice.get("finish_reason"),
                          tokens_input=usage.get("prompt_tokens", 0), tokens_output=usage.get("completion_tokens", 0))

    with httpx.Client(headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as client, \
            ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(prompts)))) as pool:
        return list(pool.map(lambda p: one(client, p), prompts))
