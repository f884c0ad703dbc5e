"""Per-request guards and accounting for the prediction routes, as a pure ASGI middleware.

Before a prediction route runs: a cap on requests in flight (more → 503 with Retry-After,
before anything is read), and a body size limit, from Content-Length when it is declared
and counted while the body streams in otherwise (chunked uploads → 413 just the same).
It sees every outcome, including the 401/413/422 answered before a route runs. (Starlette's
BaseHTTPMiddleware would cost tens of microseconds a request; this costs about two.)
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthrisk_inference.metrics import ServiceMetrics

ENDPOINTS = {
    "/predict": "predict",
    "/predict/batch": "predict_batch",
}
V2_INFER_SUFFIX = "/infer"
CLIENT_CLOSED_REQUEST = 499  # nginx's code for a client that left mid-request
_OUTCOMES = {
    200: "success",
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    422: "invalid",
    CLIENT_CLOSED_REQUEST: "disconnected",
    503: "unavailable",
}
OVERLOADED = "overloaded"
# Set by the routes as request.state.model_version (scope["state"]), read back for the labels.
STATE_MODEL_VERSION = "model_version"


def endpoint_of(path: str) -> str | None:
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    if path.startswith("/v2/models/") and path.endswith(V2_INFER_SUFFIX):
        return "v2_infer"
    return None


class PredictionAccounting:
    def __init__(
        self, app: ASGIApp, *, metrics: ServiceMetrics, max_body_bytes: int, max_in_flight: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        # One event loop per process: a plain counter is exact.
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = endpoint_of(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if self.in_flight >= self.max_in_flight:
            await _send_error(
                send, 503, f"more than {self.max_in_flight} requests in flight; retry", retry_after=1
            )
            self._account(scope, endpoint, OVERLOADED, started)
            return
        if self._declared_length(scope) > self.max_body_bytes:
            await _send_error(send, 413, self._too_large)
            self._account(scope, endpoint, _OUTCOMES[413], started)
            return
        status = 500
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside the route: answered by the app's HTTPException handler.
                    raise HTTPException(413, self._too_large)
            return message

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        scope.setdefault("state", {})
        self.in_flight += 1
        try:
            await self.app(scope, receive_within_limit, send_and_watch)
        finally:
            self.in_flight -= 1
            self._account(scope, endpoint, _OUTCOMES.get(status, "error"), started)

    @property
    def _too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes"

    def _account(self, scope: Scope, endpoint: str, outcome: str, started: float) -> None:
        version = scope.get("state", {}).get(STATE_MODEL_VERSION, "none")
        self.metrics.predictions.labels(version, endpoint, outcome).inc()
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


async def _send_error(send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    body: dict[str, Any] = {"error": message, "detail": []}
    payload = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
