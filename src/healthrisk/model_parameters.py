"""The served model as data: four arrays in one strict JSON document, and the formula over them.

Every registered version carries `extra_files/healthrisk_parameters.json` beside its sklearn
model. Serving reads only that document, with the standard library: no pickle, skops,
sklearn or mlflow loader ever runs in the serving process, so a version cannot execute code
there. Registration writes the document from the pipeline and refuses to log a version
whose document disagrees with the pipeline's own `predict_proba` (healthrisk.registry).

A `StandardScaler → LogisticRegression` pipeline is `sigmoid(((x - mean) / scale) · coef + b)`.
Folding the scaler into the weights once leaves one dot product per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from healthrisk.schema import FEATURE_NAMES, N_FEATURES

PARAMETERS_FILE = "healthrisk_parameters.json"
# Where `mlflow.sklearn.log_model(extra_files=[...])` puts it, inside the version's model directory.
PARAMETERS_ARTIFACT = f"extra_files/{PARAMETERS_FILE}"
PARAMETERS_FORMAT = "healthrisk.standardized-logistic/1"
# The document is ~1 kB; anything much larger is not ours.
MAX_PARAMETERS_BYTES = 64 * 1024
_KEYS = frozenset({"format", "features", "mean", "scale", "coef", "intercept"})

# exp() overflows float64 past ~709; a logit beyond ±500 is a certainty either way.
_LOGIT_CLIP = 500.0


class ModelIntegrityError(ValueError):
    """The artifact is not a model this platform can serve correctly; never retried."""


@dataclass(frozen=True)
class ModelParameters:
    """The pipeline's arrays, checked for shape and finiteness, with the folded weights."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    # Derived once: logit = x @ weights + bias.
    weights: np.ndarray = field(init=False, repr=False)
    bias: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("mean", "scale", "coef"):
            array = getattr(self, name)
            if array.shape != (N_FEATURES,):
                raise ModelIntegrityError(f"{name} has shape {array.shape}, expected ({N_FEATURES},)")
            if not np.all(np.isfinite(array)):
                raise ModelIntegrityError(f"{name} has non-finite values")
        if not np.all(self.scale > 0):
            raise ModelIntegrityError("scale has non-positive values")
        if not np.isfinite(self.intercept):
            raise ModelIntegrityError("intercept is not finite")
        weights = self.coef / self.scale
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", float(self.intercept - np.dot(weights, self.mean)))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x is (n, N_FEATURES) in FEATURE_NAMES order."""
        return np.asarray(x @ self.weights + self.bias)

    def scores(self, x: np.ndarray) -> np.ndarray:
        logits = np.clip(self.logits(x), -_LOGIT_CLIP, _LOGIT_CLIP)
        return np.asarray(1.0 / (1.0 + np.exp(-logits)))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-feature terms coef_i * standardized x_i; with the intercept they sum to the logit."""
        return np.asarray((x - self.mean) / self.scale * self.coef)

    def document(self) -> bytes:
        """The canonical JSON bytes (sorted keys; json writes floats as repr(), exact for float64)."""
        doc = {
            "format": PARAMETERS_FORMAT,
            "features": list(FEATURE_NAMES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _refuse_constant(name: str) -> NoReturn:
    raise ModelIntegrityError(f"{PARAMETERS_FILE} contains {name}; parameters must be finite numbers")


def _number(value: object, what: str) -> float:
    # bool is an int to Python, not a number in the document; a huge int overflows float.
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            pass
    raise ModelIntegrityError(f"{PARAMETERS_FILE}: {what} must be a finite number")


def _numbers(doc: dict[str, Any], key: str) -> np.ndarray:
    values = doc[key]
    if not isinstance(values, list):
        raise ModelIntegrityError(f"{PARAMETERS_FILE}: {key} must be a list of numbers")
    return np.array([_number(v, f"every element of {key}") for v in values], dtype=np.float64)


def parse_parameters(raw: bytes) -> ModelParameters:
    """Data only: json.loads, exactly our keys, the schema's feature order, finite float64 arrays."""
    if len(raw) > MAX_PARAMETERS_BYTES:
        raise ModelIntegrityError(f"{PARAMETERS_FILE} is {len(raw)} bytes, more than {MAX_PARAMETERS_BYTES}")
    try:
        doc = json.loads(raw, parse_constant=_refuse_constant)
    # UnicodeDecodeError is a ValueError; a deeply nested document raises RecursionError.
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ModelIntegrityError):
            raise
        raise ModelIntegrityError(f"{PARAMETERS_FILE} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != _KEYS:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ModelIntegrityError(
            f"{PARAMETERS_FILE} must have exactly the keys {sorted(_KEYS)}, got {found}"
        )
    if doc["format"] != PARAMETERS_FORMAT:
        raise ModelIntegrityError(f"{PARAMETERS_FILE}: format {doc['format']!r} is not {PARAMETERS_FORMAT!r}")
    if doc["features"] != list(FEATURE_NAMES):
        raise ModelIntegrityError(
            f"{PARAMETERS_FILE}: features {doc['features']} are not the feature schema {list(FEATURE_NAMES)}"
        )
    return ModelParameters(
        mean=_numbers(doc, "mean"),
        scale=_numbers(doc, "scale"),
        coef=_numbers(doc, "coef"),
        intercept=_number(doc["intercept"], "intercept"),
    )
