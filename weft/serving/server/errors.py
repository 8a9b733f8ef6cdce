"""The error the server answers in OpenAI's format."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class OpenAIError(Exception):
    """An error answered in OpenAI's format: {"error": {"message", "type", "code", "param"}}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        """This error as a JSON response with its HTTP status."""
        return JSONResponse(status_code=self.status, content={"error": {
            "message": self.message, "type": self.type, "code": self.code, "param": self.param}})
