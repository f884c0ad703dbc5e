"""The parameters document serving reads, and the promotion signature over it (no processes)."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from healthrisk.contracts import (
    REGISTERED_MODEL,
    TAG_PARAMETERS_SHA256,
    TAG_PROMOTION_HMAC,
    TAG_PROMOTION_KEY_ID,
)
from healthrisk.model_parameters import (
    MAX_PARAMETERS_BYTES,
    ModelIntegrityError,
    ModelParameters,
    parse_parameters,
)
from healthrisk.provenance import (
    ProvenanceError,
    SigningKeyUnavailable,
    ensure_signing_key,
    key_id,
    read_signing_key,
    sign_promotion,
    verify_promotion,
)
from healthrisk.registry import served_parameters
from healthrisk.schema import FEATURE_NAMES, N_FEATURES

KEY = b"k" * 64
OTHER_KEY = b"o" * 64


def parameters(seed: int = 0) -> ModelParameters:
    rng = np.random.default_rng(seed)
    return ModelParameters(
        mean=rng.normal(size=N_FEATURES),
        scale=rng.uniform(0.5, 2, N_FEATURES),
        coef=rng.normal(size=N_FEATURES),
        intercept=float(rng.normal()),
    )


def document(**changes: Any) -> bytes:
    doc = json.loads(parameters().document())
    doc.update(changes)
    return json.dumps(doc).encode()


def test_the_document_round_trips_every_float_exactly() -> None:
    original = parameters(3)
    parsed = parse_parameters(original.document())
    for name in ("mean", "scale", "coef"):
        assert getattr(parsed, name).tolist() == getattr(original, name).tolist()
    assert parsed.intercept == original.intercept
    assert original.document() == parsed.document()  # canonical: same arrays, same bytes


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(document().replace(b'"intercept":', b'"intercept":NaN,"x":'), "NaN", id="nan-literal"),
        pytest.param(document(intercept=None), "intercept must be a finite number", id="null"),
        pytest.param(document(coef=["1"] * N_FEATURES), "coef must be a finite number", id="strings"),
        pytest.param(document(coef=[True] * N_FEATURES), "coef must be a finite number", id="booleans"),
        pytest.param(document(coef=[10**400] * N_FEATURES), "coef must be a finite number", id="huge-int"),
        pytest.param(document(coef=[1.0] * (N_FEATURES - 1)), r"shape \(10,\)", id="short"),
        pytest.param(document(scale=[0.0] * N_FEATURES), "non-positive", id="zero-scale"),
        pytest.param(document(features=list(reversed(FEATURE_NAMES))), "feature schema", id="reordered"),
        pytest.param(document(format="sklearn/pickle"), "format", id="format"),
        pytest.param(document(code="__import__('os')"), "exactly the keys", id="extra-key"),
        pytest.param(b"[]", "exactly the keys", id="not-an-object"),
        pytest.param(pickle.dumps({"coef": [1.0]}), "not JSON", id="pickle-bytes"),
        pytest.param(b"[" * 60_000, "not JSON", id="deep-nesting"),
        pytest.param(b" " * (MAX_PARAMETERS_BYTES + 1), "more than", id="too-large"),
    ],
)
def test_hostile_documents_are_refused_naming_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(ModelIntegrityError, match=message):
        parse_parameters(raw)


def test_registration_refuses_a_pipeline_serving_cannot_reproduce() -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    with pytest.raises(ModelIntegrityError, match="StandardScaler"):
        served_parameters(
            Pipeline([("scaler", FunctionTransformer()), ("classifier", FunctionTransformer())])
        )


def test_a_signature_verifies_only_for_its_key_name_version_and_bytes() -> None:
    raw = parameters().document()
    tags = sign_promotion(KEY, REGISTERED_MODEL, "6", raw)
    assert set(tags) == {TAG_PARAMETERS_SHA256, TAG_PROMOTION_HMAC, TAG_PROMOTION_KEY_ID}
    assert verify_promotion(KEY, REGISTERED_MODEL, "6", raw, tags) == tags[TAG_PARAMETERS_SHA256]

    def reason(key: bytes, name: str, version: str, data: bytes, signed: dict[str, str]) -> str:
        with pytest.raises(ProvenanceError) as refused:
            verify_promotion(key, name, version, data, signed)
        return refused.value.reason

    assert reason(KEY, REGISTERED_MODEL, "6", raw, {}) == "unsigned"
    assert reason(KEY, REGISTERED_MODEL, "7", raw, tags) == "bad_signature"  # replayed onto another version
    assert reason(KEY, "other-model", "6", raw, tags) == "bad_signature"
    assert (
        reason(KEY, REGISTERED_MODEL, "6", parameters(1).document(), tags) == "bad_signature"
    )  # file changed
    assert reason(OTHER_KEY, REGISTERED_MODEL, "6", raw, tags) == "bad_signature"  # another key
    forged = {**tags, TAG_PROMOTION_KEY_ID: key_id(OTHER_KEY)}
    assert reason(OTHER_KEY, REGISTERED_MODEL, "6", raw, forged) == "bad_signature"  # id claimed, no key


def test_the_gate_never_signs_a_document_serving_would_refuse() -> None:
    with pytest.raises(ModelIntegrityError, match="feature schema"):
        sign_promotion(KEY, REGISTERED_MODEL, "6", document(features=["x"] * N_FEATURES))


def test_the_embedded_key_is_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / ".state" / "model-signing.key"
    with pytest.raises(SigningKeyUnavailable, match="promote a version first"):
        read_signing_key(path)
    key = ensure_signing_key(path)
    assert len(key) >= 32 and ensure_signing_key(path) == key == read_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_bytes(b"short\n")
    with pytest.raises(SigningKeyUnavailable, match="at least 32"):
        read_signing_key(path)
