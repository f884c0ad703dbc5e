"""The service's own REST routes (SPEC §5): predictions, health, readiness, model.

The Open Inference Protocol routes live in `v2`; `app.create_app` mounts both. The
metrics are served on a port of their own (`cli`), out of the API's reach.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from healthrisk.contracts import ENV_INFERENCE_API_KEY
from healthrisk.schema import as_json_schema
from healthrisk_inference.accounting import CLIENT_CLOSED_REQUEST
from healthrisk_inference.manager import ModelManager
from healthrisk_inference.model import HIGH_FROM, MODERATE_FROM, LoadedModel, risk_levels
from healthrisk_inference.responses import FORBIDDEN, PREDICTION_ERRORS, FastJSONResponse
from healthrisk_inference.schemas import (
    EXAMPLE_JSON,
    BatchResponse,
    Liveness,
    ModelDescription,
    PatientRecord,
    PredictResponse,
    ProvenanceDescription,
    Readiness,
    RegistryHealth,
    TrafficReadiness,
)
from healthrisk_inference.settings import Settings

Body = TypeVar("Body", bound=BaseModel)
ExplainQuery = Annotated[
    bool,
    Query(
        description="Add per-feature contributions (coefficient × standardized value). They reveal "
        f"the model's coefficients, so only authenticated callers get them ({ENV_INFERENCE_API_KEY} set; "
        "403 otherwise)."
    ),
]


def serving_model(request: Request) -> LoadedModel:
    """The model for this request, read once so that a concurrent swap cannot mix versions."""
    manager: ModelManager = request.app.state.manager
    model = manager.current
    if model is None:
        raise HTTPException(503, manager.no_model_message())
    # Read back by PredictionAccounting for the predictions_total label.
    request.state.model_version = model.version
    return model


def predictions(
    model: LoadedModel, rows: list[list[float]], explain: bool
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    x = np.array(rows, dtype=np.float64)
    scores = model.scores(x)
    items: list[dict[str, Any]] = [
        {"risk_score": score, "risk_level": level}
        for score, level in zip(scores.tolist(), risk_levels(scores), strict=True)
    ]
    if explain:
        for item, contributions in zip(items, model.contributions(x), strict=True):
            item["explanation"] = model.explanation(contributions)
    return scores, items


async def read_body(request: Request, model: type[Body]) -> Body:
    """Parse and validate the JSON body in one pass with pydantic's own JSON parser.

    About three times faster than FastAPI's json.loads-then-validate, and it still names
    each bad field, NaN and Infinity literals included.
    """
    try:
        return model.model_validate_json(await request.body())
    except ClientDisconnect:
        # Nobody reads this answer; nginx's 499 makes the outcome "disconnected" in the metrics.
        raise HTTPException(CLIENT_CLOSED_REQUEST, "the client left before sending its whole body") from None
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of a route that reads its body with `read_body`."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def router(
    settings: Settings,
    manager: ModelManager,
    protected: list[Any],
    auth_errors: dict[int | str, dict[str, Any]],
) -> tuple[APIRouter, list[type[BaseModel]]]:
    """The routes, and the body models they read themselves (for the OpenAPI components)."""
    routes = APIRouter()
    metrics = manager.metrics
    # Without an API key nobody is authenticated, and explanations give the coefficients away.
    explains = settings.inference_api_key is not None
    prediction_errors = PREDICTION_ERRORS if explains else {**PREDICTION_ERRORS, **FORBIDDEN}

    def refuse_explanation_unless_authenticated(explain: bool) -> None:
        if explain and not explains:
            raise HTTPException(
                403,
                f"explanations reveal the model's coefficients: they need an API key "
                f"({ENV_INFERENCE_API_KEY})",
            )

    class BatchRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"records": [EXAMPLE_JSON, EXAMPLE_JSON]}]}
        )
        # No maxItems: a longer batch is well formed but more than this service takes (413).
        records: list[PatientRecord] = Field(
            min_length=1, description=f"At most {settings.max_batch} records (MAX_BATCH; more: 413)."
        )

    @routes.post(
        "/predict",
        response_model=PredictResponse,
        responses={**prediction_errors, **auth_errors},
        dependencies=protected,
        tags=["predictions"],
        openapi_extra=json_request_body(PatientRecord),
    )
    async def predict(request: Request, explain: ExplainQuery = False) -> Response:
        refuse_explanation_unless_authenticated(explain)
        record = await read_body(request, PatientRecord)
        model = serving_model(request)
        scores, items = predictions(model, [record.row()], explain)
        metrics.risk_score.observe(model.version, scores)
        return FastJSONResponse({**items[0], "model_version": model.version})

    @routes.post(
        "/predict/batch",
        response_model=BatchResponse,
        responses={**prediction_errors, **auth_errors},
        dependencies=protected,
        tags=["predictions"],
        openapi_extra=json_request_body(BatchRequest),
    )
    async def predict_batch(request: Request, explain: ExplainQuery = False) -> Response:
        refuse_explanation_unless_authenticated(explain)
        batch = await read_body(request, BatchRequest)
        if len(batch.records) > settings.max_batch:
            raise HTTPException(413, f"a batch holds at most {settings.max_batch} records")
        model = serving_model(request)
        scores, items = predictions(model, [r.row() for r in batch.records], explain)
        metrics.risk_score.observe(model.version, scores)
        return FastJSONResponse({"model_version": model.version, "predictions": items})

    @routes.get("/health", response_model=Liveness, tags=["operations"])
    async def health() -> Liveness:
        return Liveness()

    @routes.get(
        "/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "No model loaded yet."}},
        tags=["operations"],
    )
    async def ready() -> Response:
        model = manager.current
        body = Readiness(ready=model is not None, model_version=model.version if model else None)
        return FastJSONResponse(body.model_dump(), status_code=200 if model else 503)

    @routes.get(
        "/readyz",
        response_model=TrafficReadiness,
        responses={503: {"model": TrafficReadiness, "description": "Broken: no model, none coming."}},
        tags=["operations"],
    )
    async def ready_for_traffic() -> Response:
        """Kubernetes readiness: 200 while serving, and also before the first promotion when
        the registry confirmed there is nothing to serve yet (predictions then answer 503
        saying so); 503 when broken (registry unreachable with nothing loaded, a version
        that does not load). `GET /ready` still means "a model is loaded"."""
        state = manager.state()
        body = TrafficReadiness(
            ready=state.availability.takes_traffic,
            state=state.availability,
            detail=state.detail,
            model_version=manager.current.version if manager.current else None,
        )
        return FastJSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)

    @routes.get(
        "/model",
        response_model=ModelDescription,
        responses=auth_errors,
        dependencies=protected,
        tags=["model"],
    )
    async def describe_model() -> ModelDescription:
        model = manager.current
        return ModelDescription(
            ready=model is not None,
            name=model.name if model else settings.model_name,
            version=model.version if model else None,
            alias=model.alias if model else None,
            reference=manager.reference,
            source=model.source if model else None,
            run_id=model.run_id if model else None,
            loaded_at=model.loaded_at if model else None,
            training_metrics=model.metrics if model else {},
            tags=model.tags if model else {},
            risk_levels={"low": 0.0, "moderate": MODERATE_FROM, "high": HIGH_FROM},
            feature_schema=as_json_schema(),
            registry=RegistryHealth(**manager.registry.as_json()),
            provenance=ProvenanceDescription(**dataclasses.asdict(model.provenance)) if model else None,
            refused=dict(manager.refused),
            last_load_error=manager.last_load_error,
        )

    return routes, [PatientRecord, BatchRequest]
