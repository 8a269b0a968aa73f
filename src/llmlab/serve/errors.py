"""OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}` with the HTTP status."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class APIError(Exception):
    """An error a client can act on; `param` names the request field at fault (None when none is)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        return JSONResponse(envelope(self.message, self.type, self.param, self.code), status_code=self.status)


def envelope(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_field(param: str, message: str) -> APIError:
    """A 400 for one field: the message starts with the field's name."""
    return APIError(400, f"{param}: {message}", param=param)


def validation_error(errors: list[dict]) -> APIError:
    """FastAPI/pydantic's first validation error as a 400 naming the field: the message
    gives its path (`messages.0.role: ...`), `param` its top-level name."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request body"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON ({first.get('msg')})", param=None)
    where = ".".join(loc) or "body"
    return APIError(400, f"{where}: {first.get('msg', 'invalid value')}", param=loc[0] if loc else None)
