"""The error format of every response: `{"error": {"code", "message", "details"}, "request_id"}`.

A lost database (down, restarting, unreachable, its pool exhausted) is a 503 `SERVICE_UNAVAILABLE`
wherever it surfaces, and no body ever carries a driver message or a stack trace (`unhandled_response`)."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from weft.db import database_unavailable
from weft.errors import (
    Conflict,
    Forbidden,
    Invalid,
    InvalidInput,
    NotFound,
    Refused,
    Unavailable,
    UpstreamError,
    WeftError,
)

log = logging.getLogger("weft.api")

CODES = {400: "INVALID_INPUT", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
         409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR",
         429: "RATE_LIMITED", 500: "SERVICE_ERROR", 502: "UPSTREAM_ERROR", 503: "SERVICE_UNAVAILABLE"}
# the HTTP status of each error weft's services raise (their code, message and details pass unchanged)
DOMAIN_STATUS: dict[type[WeftError], int] = {NotFound: 404, Invalid: 422, InvalidInput: 400, Refused: 409, Conflict: 409,
                                             Forbidden: 403, Unavailable: 503, UpstreamError: 502}
REQUEST_ID_HEADER = "X-Request-ID"
DATABASE_RETRY_AFTER = "1"  # seconds: a restarting PostgreSQL is usually back within a few
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class ApiError(Exception):
    """An error the client should see, with its HTTP status and machine-readable code."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details or {}, headers


def status_of(exc: WeftError) -> int:
    """The HTTP status of a service error (500 for one without a mapping)."""
    return next((status for kind, status in DOMAIN_STATUS.items() if isinstance(exc, kind)), 500)


def too_large(cap: int) -> ApiError:
    """An upload past WEFT_MAX_UPLOAD_MB."""
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"the file is larger than WEFT_MAX_UPLOAD_MB ({cap // 2**20} MB)",
                    {"max_bytes": cap})


def not_found(kind: str, id: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{kind} {id} not found", {"resource": kind, "id": id})


def request_id_of(scope: Scope) -> str:
    """The request's id: set once by `RequestContext`, else a fresh one."""
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        state["request_id"] = f"req-{uuid.uuid4().hex[:12]}"
    return state["request_id"]


def error_response(request: Request, status: int, code: str, message: str, details: dict | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = request_id_of(request.scope)
    body = {"error": {"code": code, "message": message, "details": details or {}}, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers={**(headers or {}), REQUEST_ID_HEADER: request_id})


def unhandled_response(request: Request, exc: Exception) -> JSONResponse:
    """The answer to an exception nothing else handled: a 503 when the database is unavailable (one log
    line: an outage is not a bug), else a 500 with the stack trace in the log only."""
    where = f"{request.method} {request.url.path} (request {request_id_of(request.scope)})"
    if database_unavailable(exc):
        log.warning("database unavailable on %s: %s: %s", where, type(exc).__name__,
                    (str(exc).splitlines() or [""])[0][:300])
        return error_response(request, 503, "SERVICE_UNAVAILABLE", "the database is unavailable; try again shortly",
                              headers={"Retry-After": DATABASE_RETRY_AFTER})
    log.error("unhandled error on %s", where, exc_info=exc)
    return error_response(request, 500, "SERVICE_ERROR", "internal error; see the server log")


class RequestContext:
    """Give each request an id (echoed as `X-Request-ID`) and turn an unhandled exception into a 500
    `SERVICE_ERROR` (503 for a lost database) here, inside the other middleware, so that response gets
    their headers too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = Request(scope).headers.get(REQUEST_ID_HEADER, "")
        scope.setdefault("state", {})["request_id"] = (incoming if _CLIENT_REQUEST_ID.match(incoming)
                                                       else f"req-{uuid.uuid4().hex[:12]}")
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = scope["state"]["request_id"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # the body is already on its way: nothing more to tell the client
                log.exception("error after the response started on %s (request %s)", scope.get("path"),
                              request_id_of(scope))
                raise
            await unhandled_response(Request(scope), exc)(scope, receive, send)


def _field(loc: tuple | list) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the error format; adds the `RequestContext` middleware."""
    app.add_middleware(RequestContext)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(WeftError)
    async def _domain_error(request: Request, exc: WeftError):
        status = status_of(exc)
        if status >= 500:
            log.warning("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.message)
        return error_response(request, status, exc.code, exc.message, exc.details)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        code = CODES.get(exc.status_code, "SERVICE_ERROR" if exc.status_code >= 500 else "INVALID_INPUT")
        message = exc.detail if isinstance(exc.detail, str) else code.lower().replace("_", " ")
        details = exc.detail if isinstance(exc.detail, dict) else {}
        return error_response(request, exc.status_code, code, message, details, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return error_response(request, 422, "VALIDATION_ERROR",
                              f"Invalid parameter: {first['field']}: {first['message']}", {"errors": errors})

    # database errors from the routes and their dependencies: a 503 for an outage, else a 500
    for kind in database_errors():
        app.add_exception_handler(kind, _unhandled)
    app.add_exception_handler(Exception, _unhandled)  # backstop for failures outside RequestContext


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    return unhandled_response(request, exc)


def database_errors() -> tuple[type[Exception], ...]:
    """SQLAlchemy's errors and the PostgreSQL driver's own (raised unwrapped by direct driver use)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        import psycopg
    except ImportError:
        return (SQLAlchemyError,)
    return SQLAlchemyError, psycopg.Error
