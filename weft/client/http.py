"""The client's HTTP layer: base URL and credentials, retries on 429/503, and turning error bodies into
`weft.errors` exceptions. One `Transport` (httpx.Client) and one `AsyncTransport` (httpx.AsyncClient)
share everything but the I/O."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from weft import errors

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
RETRY_STATUSES = frozenset({429, 503})
MAX_BACKOFF = 30.0
M = TypeVar("M")

# the exception class of each HTTP status (its `code` comes from the body when there is one)
ERROR_CLASSES: dict[int, type[errors.WeftError]] = {
    400: errors.InvalidInput, 401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound,
    409: errors.Conflict, 422: errors.Invalid, 429: errors.RateLimited, 502: errors.UpstreamError,
    503: errors.Unavailable,
}


def configured(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The base URL and key: the arguments, else WEFT_API_URL / WEFT_API_KEY, else the `weft login` file."""
    from weft.client.config import saved

    stored = saved()
    url = base_url or os.environ.get("WEFT_API_URL") or stored.get("api_url") or DEFAULT_URL
    key = api_key or os.environ.get("WEFT_API_KEY") or stored.get("api_key")
    return url.rstrip("/").removesuffix(API_PREFIX), key


def error_of(response: httpx.Response) -> errors.WeftError:
    """The `weft.errors` exception of an error response (`{"error": {code, message, details}}`, or
    FastAPI's `{"detail": ...}`, or any other body)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message, details = error.get("code"), error.get("message") or "", error.get("details") or {}
    else:
        detail = body.get("detail") if isinstance(body, dict) else None
        code, message, details = None, str(detail or response.text[:500] or response.reason_phrase), {}
    kind = ERROR_CLASSES.get(response.status_code, errors.WeftError)
    exc = kind.__new__(kind)  # the base initialiser: the subclasses' own ones build a message from other arguments
    errors.WeftError.__init__(exc, message, details if isinstance(details, dict) else {"details": details},
                              code=code or kind.code)
    exc.status = response.status_code
    exc.request_id = response.headers.get("x-request-id") or (body.get("request_id") if isinstance(body, dict)
                                                               else None)
    return exc


def retry_delay(response: httpx.Response | None, attempt: int) -> float:
    """Seconds to wait before retry `attempt` (0-based): the response's Retry-After (seconds or an HTTP
    date) when it has one, else exponential backoff with jitter."""
    header = response.headers.get("retry-after") if response is not None else None
    if header:
        if header.strip().isdigit():
            return min(float(header), MAX_BACKOFF * 4)
        try:
            return max(0.0, min(parsedate_to_datetime(header).timestamp() - time.time(), MAX_BACKOFF * 4))
        except (TypeError, ValueError):
            pass
    return min(MAX_BACKOFF, 0.5 * 2**attempt) * (0.5 + random.random() / 2)


def retryable(method: str, exc: httpx.TransportError) -> bool:
    """A GET whose connection broke after it was made; a refused connection (nothing listens there) is
    reported at once."""
    return method == "GET" and not isinstance(exc, httpx.ConnectError)


def parsed(response: httpx.Response, model: Any) -> Any:
    """The JSON body as `model` (a pydantic model or any type TypeAdapter takes), or None for no content."""
    if response.status_code == 204 or not response.content:
        return None
    data = response.json()
    if model is None:
        return data
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate(data)
    return TypeAdapter(model).validate_python(data)


class BaseTransport:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float, max_retries: int) -> None:
        self.base_url, self.api_key = configured(base_url, api_key)
        self.timeout, self.max_retries = timeout, max_retries

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        from weft import __version__

        headers = {"User-Agent": f"weft-python/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return {**headers, **(extra or {})}

    def url(self, path: str) -> str:
        """`/jobs` → `{base}/api/v1/jobs`; a path starting with `/v1/` or `/endpoints/` is used as is."""
        if path.startswith(("http://", "https://")):
            return path
        if path.startswith(("/v1/", "/endpoints/", API_PREFIX + "/")) or path == "/":
            return self.base_url + path
        return self.base_url + API_PREFIX + path

    def should_retry(self, response: httpx.Response, attempt: int) -> bool:
        return response.status_code in RETRY_STATUSES and attempt < self.max_retries


class Transport(BaseTransport):
    """Blocking requests over one pooled `httpx.Client` (or the one given, e.g. a FastAPI TestClient)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 3, http_client: httpx.Client | None = None) -> None:
        super().__init__(base_url, api_key, timeout, max_retries)
        self.http = http_client or httpx.Client(timeout=timeout)
        self.owns_http = http_client is None

    def send(self, method: str, path: str, *, stream: bool = False, headers: Mapping[str, str] | None = None,
             **kwargs: Any) -> httpx.Response:
        """The response to a request, after retries; raises the `weft.errors` exception of an error."""
        attempt = 0
        while True:
            request = self.http.build_request(method, self.url(path), headers=self.headers(headers), **kwargs)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not retryable(method, exc) or attempt >= self.max_retries:
                    raise
                time.sleep(retry_delay(None, attempt))
                attempt += 1
                continue
            if response.is_success:
                return response
            if stream:
                response.read()
            if not self.should_retry(response, attempt):
                raise error_of(response)
            time.sleep(retry_delay(response, attempt))
            attempt += 1

    def request(self, method: str, path: str, model: Any = None, **kwargs: Any) -> Any:
        return parsed(self.send(method, path, **kwargs), model)

    def close(self) -> None:
        if self.owns_http:
            self.http.close()


class AsyncTransport(BaseTransport):
    """The same over an `httpx.AsyncClient`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 3, http_client: httpx.AsyncClient | None = None) -> None:
        super().__init__(base_url, api_key, timeout, max_retries)
        self.http = http_client or httpx.AsyncClient(timeout=timeout)
        self.owns_http = http_client is None

    async def send(self, method: str, path: str, *, stream: bool = False,
                   headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            request = self.http.build_request(method, self.url(path), headers=self.headers(headers), **kwargs)
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not retryable(method, exc) or attempt >= self.max_retries:
                    raise
                await asyncio.sleep(retry_delay(None, attempt))
                attempt += 1
                continue
            if response.is_success:
                return response
            if stream:
                await response.aread()
            if not self.should_retry(response, attempt):
                raise error_of(response)
            await asyncio.sleep(retry_delay(response, attempt))
            attempt += 1

    async def request(self, method: str, path: str, model: Any = None, **kwargs: Any) -> Any:
        return parsed(await self.send(method, path, **kwargs), model)

    async def close(self) -> None:
        if self.owns_http:
            await self.http.aclose()
