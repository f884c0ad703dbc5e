"""Open Inference Protocol (KServe V2) routes, so KServe/Triton-style clients work.

Inputs are accepted in the two shapes such clients send: one FP tensor of shape [N, 11]
with columns in schema order, or one [N] (or [N, 1]) tensor per feature, named by feature.
Outputs are `risk_score` (FP64) and `risk_level` (BYTES), each of shape [N].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from starlette.responses import Response

from healthrisk.schema import FEATURE_NAMES, FEATURES, N_FEATURES
from healthrisk_inference.manager import ModelManager
from healthrisk_inference.model import risk_levels
from healthrisk_inference.responses import PREDICTION_ERRORS, FastJSONResponse, validation_error_response
from healthrisk_inference.schemas import (
    ErrorResponse,
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


def _flat_numbers(data: list[Any], loc: Loc) -> list[float]:
    """Flatten row-major nested data; refuse anything but finite JSON numbers."""
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(item)
        else:
            flat.append(item)
    bad = [i for i, v in enumerate(flat) if type(v) not in (int, float) or not math.isfinite(v)]
    if bad:
        raise _Invalid(
            [
                _error(
                    (*loc, "data"), f"must hold finite numbers only; element {bad[0]} is not", "finite_number"
                )
            ]
        )
    return flat


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
        values = _flat_numbers(inputs[0].data, ("body", "inputs", 0))
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
        values = _flat_numbers(inputs[i].data, ("body", "inputs", i))
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
) -> APIRouter:
    v2 = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

    def served_name() -> str:
        model = manager.current
        return model.name if model else settings.model_name

    def require_name(model_name: str) -> None:
        if model_name != served_name():
            raise HTTPException(404, f"no model named {model_name!r}; this service serves {served_name()!r}")

    @v2.get("/health/live", response_model=V2Live)
    async def live() -> V2Live:
        return V2Live(live=True)

    @v2.get("/health/ready", response_model=V2Ready, responses=_NOT_READY)
    async def ready() -> Response:
        loaded = manager.current is not None
        return FastJSONResponse({"ready": loaded}, status_code=200 if loaded else 503)

    @v2.get("/models/{model_name}/ready", response_model=V2Ready, responses={**_NOT_FOUND, **_NOT_READY})
    async def model_ready(model_name: str) -> Response:
        require_name(model_name)
        loaded = manager.current is not None
        return FastJSONResponse({"ready": loaded}, status_code=200 if loaded else 503)

    @v2.get(
        "/models/{model_name}",
        response_model=V2ModelMetadata,
        responses={**_NOT_FOUND, **auth_errors},
        dependencies=protected,
    )
    async def metadata(model_name: str) -> V2ModelMetadata:
        require_name(model_name)
        model = manager.current
        return V2ModelMetadata(
            name=served_name(),
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
    )
    async def infer(model_name: str, body: V2InferRequest, request: Request) -> Response:
        require_name(model_name)
        model = manager.current
        if model is None:
            raise HTTPException(503, "no model loaded yet; see GET /model")
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

    return v2
