"""The errors weft's services raise. Each says what went wrong in domain terms (a code, a message, and
details a client can act on); the API maps them to HTTP statuses in one place (`api.errors`).

- `NotFound`: the record does not exist, or belongs to someone else (404).
- `Invalid`: the input is wrong; `details["errors"]` names each field and why (422).
- `Refused`: valid, but may not happen now, with its own code, e.g. `SCAN_NOT_SAFE` (409).
- `Forbidden`: a link or credential that does not grant this: tampered, expired, someone else's (403).
- `Conflict`: the record's state does not allow it, e.g. a finished workflow's steps (409).
- `Unavailable`: a dependency is busy or unreachable: the database, the Prefect server (503).
- `UpstreamError`: an external service (a GPU cloud's API, RelayCore) refused or did not answer (502).
- `Unauthorized`, `RateLimited`, `Failed`: raised by the Python client (`weft.client`) for a 401, a 429
  it could not wait out, and a deployment it waited for that failed; every error the client raises
  also carries the response's `status` and `request_id`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError


class WeftError(Exception):
    """A failure a caller should see: a machine-readable `code`, a `message` and `details`."""

    code: ClassVar[str] = "SERVICE_ERROR"
    status: int | None = None  # set by the client: the HTTP status of the response it came from
    request_id: str | None = None  # set by the client: the response's X-Request-ID

    def __init__(self, message: str, details: dict[str, Any] | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.details = message, details or {}
        if code is not None:
            self.code = code  # type: ignore[misc]  (an instance's own code shadows the class default)


class NotFound(WeftError):
    code = "NOT_FOUND"

    @classmethod
    def of(cls, kind: str, id: str) -> NotFound:
        """`{kind} {id} not found`, with the resource and its id in the details."""
        return cls(f"{kind} {id} not found", {"resource": kind, "id": id})


class Invalid(WeftError):
    """Bad input. `errors` (a list of `{"field", "message"}`) becomes `details["errors"]`."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None,
                 details: dict[str, Any] | None = None, *, code: str | None = None) -> None:
        super().__init__(message, {"errors": errors, **(details or {})} if errors is not None else details, code=code)

    @classmethod
    def of(cls, exc: ValidationError, message: str) -> Invalid:
        """A pydantic validation error, one entry per failing field (`a.b.0` paths)."""
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
        return cls(message, errors)


class InvalidInput(WeftError):
    """Request data the service cannot use (document 001's INVALID_INPUT, HTTP 400): a file of the wrong
    kind, a refused requirement, an input of the wrong shape."""

    code = "INVALID_INPUT"


class Refused(WeftError):
    """A valid request that may not happen now, with its own code: e.g. deploying a model whose scan
    is not SAFE (`SCAN_NOT_SAFE`)."""

    code = "REFUSED"

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details, code=code)


class Conflict(WeftError):
    code = "CONFLICT"


class Forbidden(WeftError):
    code = "FORBIDDEN"


class Unavailable(WeftError):
    """The database is busy or a service weft depends on (the Prefect server) is unreachable: try again."""

    code = "SERVICE_UNAVAILABLE"


class UpstreamError(WeftError):
    """An external service weft calls for the user (a GPU cloud's API, RelayCore) refused the request
    or could not be reached; `details` carries its URL and, where it answered, its status and message."""

    code = "UPSTREAM_ERROR"


class Unauthorized(WeftError):
    """Missing, wrong, revoked or expired credentials (401)."""

    code = "UNAUTHORIZED"


class RateLimited(WeftError):
    """Too many requests (429) after the client's retries."""

    code = "RATE_LIMITED"


class Failed(WeftError):
    """What the client waited for (a deployment going live) ended failed or cancelled; `details` says which."""

    code = "FAILED"
