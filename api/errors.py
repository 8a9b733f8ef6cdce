"""The error format of every response: `{"error": {"code", "message", "details"}, "request_id"}`."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("weft.api")

CODES = {400: "INVALID_INPUT", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
         409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR",
         429: "RATE_LIMITED", 500: "SERVICE_ERROR", 503: "SERVICE_UNAVAILABLE"}


class ApiError(Exception):
    """An error the client should see, with its HTTP status and machine-readable code."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details or {}, headers


def not_found(kind: str, id: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{kind} {id} not found", {"resource": kind, "id": id})


def error_response(request: Request, status: int, code: str, message: str, details: dict | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or f"req-{uuid.uuid4().hex[:12]}"
    body = {"error": {"code": code, "message": message, "details": details or {}}, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else CODES.get(exc.status_code, "error").lower()
        return error_response(request, exc.status_code, CODES.get(exc.status_code, "ERROR"), message,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"]}
                  for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return error_response(request, 422, "VALIDATION_ERROR", f"Invalid parameter: {first['field']}: "
                              f"{first['message']}", {"errors": errors})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "SERVICE_ERROR", "internal error; see the server log")
