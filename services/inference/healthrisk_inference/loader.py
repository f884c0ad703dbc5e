"""Load a version as data: its parameters document, checked for provenance, parsed strictly.

Nothing a version contains is executed: the service fetches one JSON document
(healthrisk.model_parameters) with the standard library and never calls a model loader
(no pickle, skops, sklearn or mlflow), so `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` costs
it nothing. With provenance required (the default) the document must carry the promotion
gate's signature (healthrisk.provenance) before it is even parsed.

Refusals (ModelIntegrityError, ProvenanceError) are final for that version; the manager
never retries them. RegistryUnreachable and SigningKeyUnavailable may go away.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path

from healthrisk.contracts import ENV_MODEL_PROVENANCE, TAG_METRICS
from healthrisk.model_parameters import PARAMETERS_ARTIFACT, ModelIntegrityError, parse_parameters
from healthrisk.provenance import key_id, verify_promotion
from healthrisk_inference.model import LoadedModel, Provenance
from healthrisk_inference.registry_client import RegistryClient, ResolvedVersion


def load_version(
    client: RegistryClient, resolved: ResolvedVersion, *, signing_key: bytes | None
) -> LoadedModel:
    """`signing_key` None: provenance is off, the document is served unsigned."""
    raw = client.parameters_document(resolved.name, resolved.version)
    if signing_key is None:
        provenance = Provenance(verified=False, parameters_sha256=hashlib.sha256(raw).hexdigest())
    else:
        digest = verify_promotion(signing_key, resolved.name, resolved.version, raw, resolved.tags)
        provenance = Provenance(verified=True, parameters_sha256=digest, key_id=key_id(signing_key))
    return LoadedModel(
        name=resolved.name,
        version=resolved.version,
        alias=resolved.alias,
        source=resolved.uri,
        parameters=parse_parameters(raw),
        provenance=provenance,
        run_id=resolved.run_id,
        metrics=_shown_metrics(resolved.tags.get(TAG_METRICS)),
        tags=resolved.tags,
    )


def load_directory(directory: Path, name: str, *, provenance_required: bool) -> LoadedModel:
    """A model directory as `mlflow models` downloads it; it has no tags, so nothing to verify."""
    if provenance_required:
        raise ModelIntegrityError(
            f"{directory} is a local directory: it carries no promotion signature to verify; serve a "
            f"registry version, or set {ENV_MODEL_PROVENANCE}=off to serve it unsigned"
        )
    try:
        raw = (directory / PARAMETERS_ARTIFACT).read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read {directory / PARAMETERS_ARTIFACT}: {exc.strerror}") from None
    return LoadedModel(
        name=name,
        version="local",
        source=str(directory),
        parameters=parse_parameters(raw),
        provenance=Provenance(verified=False, parameters_sha256=hashlib.sha256(raw).hexdigest()),
    )


def _shown_metrics(tag: str | None) -> dict[str, float]:
    """The metrics tag is for display; anything but finite numbers in it is left out."""
    try:
        found = json.loads(tag) if tag else {}
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    shown = {}
    for key, value in found.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            with contextlib.suppress(OverflowError):
                if math.isfinite(value):
                    shown[str(key)] = float(value)
    return shown
