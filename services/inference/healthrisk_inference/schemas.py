"""Request and response bodies: the OpenAPI contract and the source of the 422 errors.

Field limits come from healthrisk.schema (SPEC §2); only the field names are spelled out
here, so that the models stay typed, and `_check_matches_schema` fails at import if the
two ever disagree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.config import JsonDict

from healthrisk.contracts import ENV_MODEL_PROVENANCE
from healthrisk.schema import EXAMPLE_RECORD, FEATURE_NAMES, FEATURES, FEATURES_BY_NAME, N_FEATURES
from healthrisk_inference.manager import Availability
from healthrisk_inference.model import HIGH_FROM, MODERATE_FROM, RiskLevel

# The schema's example record, typed as the JSON that OpenAPI examples are.
EXAMPLE_JSON: JsonDict = {**EXAMPLE_RECORD}


def _feature(name: str) -> Any:
    feature = FEATURES_BY_NAME[name]
    return Field(
        ge=feature.minimum,
        le=feature.maximum,
        description=f"{feature.description} ({feature.unit})",
        examples=[EXAMPLE_RECORD[name]],
    )


class PatientRecord(BaseModel):
    """One record: the 11 features, numbers within the hard limits, nothing else."""

    # strict: "75" or true is a wrong type, not a number; NaN/Infinity are refused.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [EXAMPLE_JSON]},
    )

    heart_rate: float = _feature("heart_rate")
    steps: float = _feature("steps")
    sleep_hours: float = _feature("sleep_hours")
    respiratory_rate: float = _feature("respiratory_rate")
    body_temp: float = _feature("body_temp")
    pm25: float = _feature("pm25")
    pm10: float = _feature("pm10")
    o3: float = _feature("o3")
    no2: float = _feature("no2")
    temperature: float = _feature("temperature")
    humidity: float = _feature("humidity")

    def row(self) -> list[float]:
        return [getattr(self, name) for name in FEATURE_NAMES]


def _check_matches_schema() -> None:
    if tuple(PatientRecord.model_fields) != FEATURE_NAMES:
        raise RuntimeError(
            f"PatientRecord fields {list(PatientRecord.model_fields)} "
            f"drifted from the feature schema {list(FEATURE_NAMES)}"
        )


_check_matches_schema()

RISK_LEVEL_DESCRIPTION = f"low below {MODERATE_FROM}, moderate below {HIGH_FROM}, high from {HIGH_FROM}"


class Explanation(BaseModel):
    intercept: float = Field(description="The model's intercept (logit of a record at the training mean).")
    logit: float = Field(description="intercept + sum(contributions) = log(risk_score / (1 - risk_score)).")
    contributions: dict[str, float] = Field(
        description="Per feature: coefficient × standardized value, in logit units."
    )


class Prediction(BaseModel):
    risk_score: float = Field(ge=0, le=1, description="Probability of high risk.")
    risk_level: RiskLevel = Field(description=RISK_LEVEL_DESCRIPTION)
    explanation: Explanation | None = Field(default=None, description="Only with ?explain=true.")


class PredictResponse(Prediction):
    model_version: str


class BatchResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. [body, records, 3, heart_rate].")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body; `error` is the one-line summary Open Inference Protocol clients show."""

    error: str
    detail: list[ErrorItem] = Field(default_factory=list)


class RegistryHealth(BaseModel):
    reachable: bool | None
    last_error: str | None
    last_success: float | None = Field(description="Unix time of the last answer from the registry.")
    last_check: float | None


class ProvenanceDescription(BaseModel):
    verified: bool = Field(
        description="The promotion gate's signature was checked "
        f"(false only when {ENV_MODEL_PROVENANCE}=off)."
    )
    parameters_sha256: str = Field(description="sha256 of the parameters document being served.")
    key_id: str | None = Field(description="Which signing key verified it.")


class ModelDescription(BaseModel):
    ready: bool
    name: str
    version: str | None
    alias: str | None
    reference: str = Field(description="What the service was asked to serve (URI, alias or number).")
    source: str | None
    run_id: str | None
    loaded_at: float | None
    training_metrics: dict[str, float]
    tags: dict[str, str]
    risk_levels: dict[str, float] = Field(description="Lower bound of each risk level.")
    feature_schema: dict[str, Any]
    registry: RegistryHealth
    provenance: ProvenanceDescription | None = Field(description="Of the version being served.")
    refused: dict[str, str] = Field(
        description="Versions refused since start (URI → why); the model being served kept serving."
    )
    last_load_error: str | None


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    model_version: str | None = None


class TrafficReadiness(BaseModel):
    ready: bool = Field(description="Whether the pod may receive traffic.")
    state: Availability
    detail: str
    model_version: str | None = None


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


V2NumericType = Literal[
    "FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"
]


class V2Tensor(BaseModel):
    """A KServe V2 tensor; `data` is flat (row-major) or nested to match `shape`."""

    # strict: [true, 11] or ["2", 11] is not a shape.
    model_config = ConfigDict(strict=True)

    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: V2NumericType
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """Either one tensor of shape [N, 11] (columns in schema order) or one [N] tensor per feature.

    What the route parses; `v2` then checks shapes, names and limits itself, naming the
    tensor and the feature in each error. The OpenAPI document shows `V2InferenceRequest`.
    """

    model_config = ConfigDict(strict=True)

    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=len(FEATURE_NAMES))
    parameters: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] | None = None


class V2OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2OutputTensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


# --- The V2 request as the OpenAPI document states it: every rule JSON Schema can express
# (names, datatypes, ranks, each feature's limits). Two it cannot: shape[0] is the number of
# rows in `data`, and all per-feature tensors have the same N. The service also takes the
# data of an [N, 11] tensor flat (row-major), as Triton clients send it. Built from the
# feature schema, hence with create_model: the field types are computed.


def _documented_v2_request() -> type[BaseModel]:
    count: Any = Annotated[int, Field(ge=1)]

    def value(name: str) -> Any:
        feature = FEATURES_BY_NAME[name]
        return Annotated[float, Field(ge=feature.minimum, le=feature.maximum)]

    def tuple_of(*items: Any) -> Any:
        return tuple.__class_getitem__(items)

    def list_of(item: Any) -> Any:
        return list.__class_getitem__(item)

    def literal(value: object) -> Any:
        return Literal.__getitem__(value)

    records = create_model(
        "V2RecordsTensor",
        __doc__="All features at once: shape [N, 11], one row per record, columns in schema order.",
        name=(str, ...),
        shape=(tuple_of(count, Literal[N_FEATURES]), ...),
        datatype=(V2NumericType, ...),
        data=(list_of(tuple_of(*(value(f.name) for f in FEATURES))), Field(min_length=1)),
        parameters=(dict[str, Any] | None, None),
    )
    per_feature = [
        create_model(
            f"V2Tensor_{name}",
            __doc__=f"The {name} of each record: shape [N] (or [N, 1]), flat data.",
            name=(literal(name), ...),
            shape=(tuple_of(count) | tuple_of(count, Literal[1]), ...),
            datatype=(V2NumericType, ...),
            data=(list_of(value(name)), Field(min_length=1)),
            parameters=(dict[str, Any] | None, None),
        )
        for name in FEATURE_NAMES
    ]
    return create_model(
        "V2InferenceRequest",
        __doc__="Open Inference Protocol request: one [N, 11] tensor, or the 11 per-feature tensors in "
        "schema order; N records either way.",
        id=(str | None, None),
        inputs=(tuple_of(records) | tuple_of(*per_feature), ...),
        parameters=(dict[str, Any] | None, None),
        outputs=(list[dict[str, Any]] | None, None),
    )


V2InferenceRequest = _documented_v2_request()
