"""Per-request accounting for the prediction routes, as a pure ASGI middleware.

It sees every outcome, including the 401/413/422 answered before a route runs, and it
refuses an oversized body from its Content-Length before anything is read. (Starlette's
BaseHTTPMiddleware would cost tens of microseconds a request; this costs about two.)
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthrisk_inference.metrics import ServiceMetrics

ENDPOINTS = {
    "/predict": "predict",
    "/predict/batch": "predict_batch",
}
V2_INFER_SUFFIX = "/infer"
_OUTCOMES = {
    200: "success",
    400: "invalid",
    401: "unauthorized",
    404: "not_found",
    413: "too_large",
    422: "invalid",
    503: "unavailable",
}
# Set by the routes as request.state.model_version (scope["state"]), read back for the labels.
STATE_MODEL_VERSION = "model_version"


def endpoint_of(path: str) -> str | None:
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    if path.startswith("/v2/models/") and path.endswith(V2_INFER_SUFFIX):
        return "v2_infer"
    return None


class PredictionAccounting:
    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = endpoint_of(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        if self._declared_length(scope) > self.max_body_bytes:
            status = 413
            await _send_error(send, 413, f"request body larger than {self.max_body_bytes} bytes")
        else:

            async def send_and_watch(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            scope.setdefault("state", {})
            await self.app(scope, receive, send_and_watch)
        version = scope.get("state", {}).get(STATE_MODEL_VERSION, "none")
        self.metrics.predictions.labels(version, endpoint, _OUTCOMES.get(status, "error")).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0


async def _send_error(send: Send, status: int, message: str) -> None:
    body: dict[str, Any] = {"error": message, "detail": []}
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
