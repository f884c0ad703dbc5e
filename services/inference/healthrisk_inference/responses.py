"""JSON responses serialized with orjson, and the error bodies every route shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from healthrisk_inference.schemas import ErrorResponse

# A body listing 100,000 bad fields helps no one; the count of the rest is given.
_MAX_ERROR_ITEMS = 100


class FastJSONResponse(Response):
    """orjson renders a 100-record response ~10x faster than the standard json module."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(
    status: int,
    error: str,
    detail: Sequence[dict[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    return FastJSONResponse({"error": error, "detail": list(detail)}, status_code=status, headers=headers)


def _location(loc: Sequence[str | int]) -> str:
    # ("body", "records", 3, "heart_rate") reads better as records[3].heart_rate
    parts = list(loc[1:]) if len(loc) > 1 and loc[0] == "body" else list(loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_error_response(errors: Sequence[Any]) -> Response:
    """422 naming each bad field, without echoing the values back (health data)."""
    items = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors[:_MAX_ERROR_ITEMS]]
    summary = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in items[:10])
    if len(errors) > 10:
        summary += f"; and {len(errors) - 10} more"
    return error_response(422, summary, items)


def install_error_handlers(app: Any) -> None:
    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_error_response(exc.errors())

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid input; each bad field is named in `detail`."},
}
PREDICTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    400: {"model": ErrorResponse, "description": "The body could not be read as JSON text."},
    413: {"model": ErrorResponse, "description": "Batch or body too large."},
    503: {"model": ErrorResponse, "description": "No model loaded yet, or too many requests in flight."},
}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "Explanations need an API key (none is configured)."},
}
