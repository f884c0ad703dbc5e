"""The FastAPI app (SPEC §5), built by `create_app(settings)`: the service's routes (`routes`)
and the Open Inference Protocol (`v2`) behind one API key, one set of metrics, one model."""

# No `from __future__ import annotations` here: FastAPI evaluates the annotations of the
# API-key dependency, which refer to objects local to `api_key_dependency`.
import gc
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from healthrisk.contracts import ENV_INFERENCE_API_KEY
from healthrisk_inference import routes, v2
from healthrisk_inference.accounting import PredictionAccounting
from healthrisk_inference.manager import ModelManager
from healthrisk_inference.metrics import ServiceMetrics
from healthrisk_inference.model import HIGH_FROM, MODERATE_FROM
from healthrisk_inference.responses import (
    AUTH_ERRORS,
    install_error_handlers,
)
from healthrisk_inference.settings import Settings

# A record is ~250 bytes of JSON; allow generous formatting before refusing unread.
_BODY_BYTES_PER_RECORD = 2048
_BODY_BYTES_OVERHEAD = 64 * 1024


def document_request_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Put the models behind `json_request_body` into the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        _, definitions = models_json_schema(
            [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def api_key_dependency(expected: str) -> Callable[..., Awaitable[None]]:
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description=ENV_INFERENCE_API_KEY)
    bearer = HTTPBearer(auto_error=False, description=f"{ENV_INFERENCE_API_KEY} as a bearer token")
    expected_bytes = expected.encode()

    # async: a plain def dependency would run in the thread pool, a costly hop per request.
    async def require_api_key(
        key: Annotated[str | None, Security(key_header)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        supplied = key if key is not None else (credentials.credentials if credentials else None)
        if supplied is None or not secrets.compare_digest(supplied.encode(), expected_bytes):
            raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    return require_api_key


def create_app(settings: Settings) -> FastAPI:
    metrics = ServiceMetrics()
    manager = ModelManager(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.openapi()
        # The ~70k objects alive after startup never die; a full collection scanning them
        # takes tens of ms, a latency spike for whichever request it lands on. Frozen,
        # the collector skips them.
        gc.collect()
        gc.freeze()
        manager.start()
        yield
        manager.stop()

    app = FastAPI(
        title="health-risk inference",
        version="1",
        description=(
            "Health-risk predictions from the model in the MLflow registry (SPEC §5). "
            f"Risk levels: low < {MODERATE_FROM} ≤ moderate < {HIGH_FROM} ≤ high."
        ),
        lifespan=lifespan,
    )
    app.state.manager = manager
    # Served on a port of their own by `healthrisk serve`, not by a route of this app.
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(
        PredictionAccounting,
        metrics=metrics,
        max_body_bytes=settings.max_batch * _BODY_BYTES_PER_RECORD + _BODY_BYTES_OVERHEAD,
        max_in_flight=settings.max_concurrent_requests,
    )

    protected: list[Any] = []
    auth_errors: dict[int | str, dict[str, Any]] = {}
    if settings.inference_api_key is not None:
        protected = [Depends(api_key_dependency(settings.inference_api_key.get_secret_value()))]
        auth_errors = AUTH_ERRORS

    service_routes, service_bodies = routes.router(settings, manager, protected, auth_errors)
    v2_routes, v2_bodies = v2.router(settings, manager, protected, auth_errors)
    app.include_router(service_routes)
    app.include_router(v2_routes)
    document_request_bodies(app, [*service_bodies, *v2_bodies])
    return app
