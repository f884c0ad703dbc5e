"""Open Inference Protocol (KServe V2) routes, so KServe/Triton-style clients work.

Inputs are accepted in the two shapes such clients send: one FP tensor of shape [N, 11]
with columns in schema order, or one [N] (or [N, 1]) tensor per feature, named by feature.
Outputs are `risk_score` (FP64) and `risk_level` (BYTES), each of shape [N].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel
from starlette.responses import Response

from healthrisk.schema import FEATURE_NAMES, FEATURES, N_FEATURES
from healthrisk_inference.manager import ModelManager
from healthrisk_inference.model import risk_levels
from healthrisk_inference.responses import PREDICTION_ERRORS, FastJSONResponse, validation_error_response
from healthrisk_inference.routes import json_request_body, read_body
from healthrisk_inference.schemas import (
    ErrorResponse,
    V2InferenceRequest,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2Ready,
    V2Tensor,
)
from healthrisk_inference.settings import Settings

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No such model."}}
_NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": V2Ready, "description": "No model loaded yet."}}
_LIMITS_LOW = np.array([f.minimum for f in FEATURES])
_LIMITS_HIGH = np.array([f.maximum for f in FEATURES])
# Row indices quoted in an out-of-range message; the rest are counted.
_ROWS_QUOTED = 5

Loc = tuple[str | int, ...]


class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def _error(loc: Loc, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a boolean, not an integer too large for float64)."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is int:
        try:
            float(value)
        except OverflowError:
            return False
        return True
    return False


def _numbers(values: list[Any], loc: Loc) -> list[float]:
    bad = next((i for i, v in enumerate(values) if not _is_number(v)), None)
    if bad is not None:
        raise _Invalid(
            [_error((*loc, "data"), f"must hold finite numbers only; element {bad} is not", "finite_number")]
        )
    return values


def _record_values(data: list[Any], loc: Loc) -> list[float]:
    """An [N, 11] tensor's data: rows of 11 numbers, or the same flat (row-major)."""
    if data and all(isinstance(row, list) for row in data):
        ragged = next((i for i, row in enumerate(data) if len(row) != N_FEATURES), None)
        if ragged is not None:
            raise _Invalid(
                [_error((*loc, "data", ragged), f"a row holds {N_FEATURES} numbers in schema order", "shape")]
            )
        return _numbers([v for row in data for v in row], loc)
    return _numbers(data, loc)


def _rows(tensor: V2Tensor, loc: Loc) -> int:
    shape = tensor.shape
    if shape[0] < 0 or (len(shape) == 2 and shape[1] != 1):
        raise _Invalid([_error((*loc, "shape"), "a per-feature tensor has shape [N] or [N, 1]", "shape")])
    return shape[0]


def _matrix(body: V2InferRequest, max_batch: int) -> np.ndarray:
    inputs = body.inputs
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] == N_FEATURES:
        n = inputs[0].shape[0]
        _check_batch(n, max_batch)
        values = _record_values(inputs[0].data, ("body", "inputs", 0))
        if len(values) != n * N_FEATURES:
            raise _Invalid(
                [
                    _error(
                        ("body", "inputs", 0, "data"),
                        f"holds {len(values)} numbers, shape says {n * N_FEATURES}",
                        "shape",
                    )
                ]
            )
        return _checked(np.array(values, dtype=np.float64).reshape(n, N_FEATURES), [0] * N_FEATURES)

    positions = {t.name: i for i, t in enumerate(inputs)}
    errors = [
        _error(("body", "inputs"), f"missing input tensor {name!r}", "missing")
        for name in FEATURE_NAMES
        if name not in positions
    ] + [
        _error(("body", "inputs", i, "name"), f"unexpected input tensor {t.name!r}", "extra_forbidden")
        for i, t in enumerate(inputs)
        if t.name not in FEATURE_NAMES
    ]
    if len(positions) != len(inputs):
        errors.append(_error(("body", "inputs"), "input tensor names must be unique", "duplicate"))
    if errors:
        raise _Invalid(errors)
    rows = {_rows(inputs[positions[name]], ("body", "inputs", positions[name])) for name in FEATURE_NAMES}
    if len(rows) != 1:
        raise _Invalid([_error(("body", "inputs"), f"tensors disagree on N: {sorted(rows)}", "shape")])
    n = rows.pop()
    _check_batch(n, max_batch)
    columns = []
    for name in FEATURE_NAMES:
        i = positions[name]
        values = _numbers(inputs[i].data, ("body", "inputs", i))
        if len(values) != n:
            raise _Invalid(
                [
                    _error(
                        ("body", "inputs", i, "data"), f"holds {len(values)} numbers, shape says {n}", "shape"
                    )
                ]
            )
        columns.append(values)
    return _checked(
        np.array(columns, dtype=np.float64).T.reshape(n, N_FEATURES),
        [positions[name] for name in FEATURE_NAMES],
    )


def _check_batch(n: int, max_batch: int) -> None:
    if n < 1:
        raise _Invalid([_error(("body", "inputs", 0, "shape"), "N must be at least 1", "shape")])
    if n > max_batch:
        raise HTTPException(413, f"a batch holds at most {max_batch} records")


def _checked(x: np.ndarray, input_index: list[int]) -> np.ndarray:
    outside = (x < _LIMITS_LOW) | (x > _LIMITS_HIGH)
    if not outside.any():
        return x
    errors = []
    for j in np.flatnonzero(outside.any(axis=0)).tolist():
        rows = np.flatnonzero(outside[:, j])
        quoted = ", ".join(str(r) for r in rows[:_ROWS_QUOTED].tolist())
        more = f" and {len(rows) - _ROWS_QUOTED} more" if len(rows) > _ROWS_QUOTED else ""
        errors.append(
            _error(
                ("body", "inputs", input_index[j], FEATURE_NAMES[j]),
                f"{FEATURES[j].rule()} (rows {quoted}{more})",
                "out_of_range",
            )
        )
    raise _Invalid(errors)


def router(
    settings: Settings,
    manager: ModelManager,
    protected: list[Any],
    auth_errors: dict[int | str, dict[str, Any]],
) -> tuple[APIRouter, list[type[BaseModel]]]:
    """The V2 routes, and the request model the OpenAPI document shows for /infer."""
    v2 = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
    served = manager.model_name
    # The one model this service serves; any other name is 404. (A default, not an Annotated
    # alias: this module's annotations are strings, resolved at module level.)
    model_name_path: Any = Path(description="The served model's name.", json_schema_extra={"enum": [served]})

    def require_name(model_name: str) -> None:
        if model_name != served:
            raise HTTPException(404, f"no model named {model_name!r}; this service serves {served!r}")

    @v2.get("/health/live", response_model=V2Live)
    async def live() -> V2Live:
        return V2Live(live=True)

    @v2.get("/health/ready", response_model=V2Ready, responses=_NOT_READY)
    async def ready() -> Response:
        loaded = manager.current is not None
        return FastJSONResponse({"ready": loaded}, status_code=200 if loaded else 503)

    @v2.get("/models/{model_name}/ready", response_model=V2Ready, responses={**_NOT_FOUND, **_NOT_READY})
    async def model_ready(model_name: str = model_name_path) -> Response:
        require_name(model_name)
        loaded = manager.current is not None
        return FastJSONResponse({"ready": loaded}, status_code=200 if loaded else 503)

    @v2.get(
        "/models/{model_name}",
        response_model=V2ModelMetadata,
        responses={**_NOT_FOUND, **auth_errors},
        dependencies=protected,
    )
    async def metadata(model_name: str = model_name_path) -> V2ModelMetadata:
        require_name(model_name)
        model = manager.current
        return V2ModelMetadata(
            name=served,
            versions=[model.version] if model else [],
            platform="sklearn",
            inputs=[{"name": name, "datatype": "FP64", "shape": [-1]} for name in FEATURE_NAMES],  # type: ignore[misc]
            outputs=[
                {"name": "risk_score", "datatype": "FP64", "shape": [-1]},  # type: ignore[list-item]
                {"name": "risk_level", "datatype": "BYTES", "shape": [-1]},  # type: ignore[list-item]
            ],
        )

    @v2.post(
        "/models/{model_name}/infer",
        response_model=V2InferResponse,
        responses={**PREDICTION_ERRORS, **_NOT_FOUND, **auth_errors},
        dependencies=protected,
        openapi_extra=json_request_body(V2InferenceRequest),
    )
    async def infer(request: Request, model_name: str = model_name_path) -> Response:
        # The body is read here, after the API key was checked: an unauthenticated caller
        # never gets a byte of it parsed.
        require_name(model_name)
        body = await read_body(request, V2InferRequest)
        model = manager.current
        if model is None:
            raise HTTPException(503, manager.no_model_message())
        request.state.model_version = model.version
        try:
            x = _matrix(body, settings.max_batch)
        except _Invalid as invalid:
            return validation_error_response(invalid.errors)
        scores = model.scores(x)
        manager.metrics.risk_score.observe(model.version, scores)
        n = len(scores)
        return FastJSONResponse(
            {
                "model_name": model.name,
                "model_version": model.version,
                "id": body.id,
                "outputs": [
                    {"name": "risk_score", "shape": [n], "datatype": "FP64", "data": scores.tolist()},
                    {"name": "risk_level", "shape": [n], "datatype": "BYTES", "data": risk_levels(scores)},
                ],
            }
        )

    return v2, [V2InferenceRequest]
