"""Provenance of a served version: the promotion gate signs it, the inference service verifies it.

Anyone allowed to register a version can also move the serving alias (MLflow's permissions
cannot tell the two apart), and the training identity can overwrite a version's files. So
the gate (healthrisk.registry.promote, run by the operator or the embedded CLI) writes an
HMAC over a statement naming the registered model, the version and the sha256 of the
version's parameters document — the only file serving reads — and moves the alias only
after the tags are written. The service recomputes the digest of the bytes it fetched and
refuses a version without a valid signature: an alias moved by hand, tags copied from
another version, or a file changed after promotion.

The key is shared by the signer and the verifier only: in the cluster a Secret the chart
generates and keeps, mounted as a file into the operator and the inference pods (never the
training pods, which could otherwise sign their own alias moves); on one machine a 0600
file under .state/, created by whichever command needs it first.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Literal

from healthrisk.contracts import (
    ENV_MODEL_PROVENANCE,
    ENV_MODEL_SIGNING_KEY_FILE,
    TAG_PARAMETERS_SHA256,
    TAG_PROMOTION_HMAC,
    TAG_PROMOTION_KEY_ID,
)
from healthrisk.model_parameters import PARAMETERS_FILE, ModelIntegrityError, parse_parameters

# Embedded mode: relative to the working directory, like the rest of .state/.
DEFAULT_SIGNING_KEY_FILE = Path(".state/model-signing.key")
MIN_KEY_BYTES = 32
_STATEMENT_PREFIX = "healthrisk-promotion/1"

RefusalReason = Literal["unsigned", "bad_signature"]


class ProvenanceError(ModelIntegrityError):
    """The version did not come through the promotion gate, or its file changed since."""

    def __init__(self, message: str, reason: RefusalReason) -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason


class SigningKeyUnavailable(RuntimeError):
    """No usable key: a configuration problem of this process, not a fault of any version."""


def signing_key_file() -> Path:
    """Where this process finds the key: $MODEL_SIGNING_KEY_FILE, else .state/model-signing.key."""
    return Path(os.environ.get(ENV_MODEL_SIGNING_KEY_FILE) or DEFAULT_SIGNING_KEY_FILE)


def read_signing_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        raise SigningKeyUnavailable(
            f"no model-signing key at {path} ({ENV_MODEL_SIGNING_KEY_FILE}): promote a version first "
            f"(healthrisk train --promote / healthrisk promote), or set {ENV_MODEL_PROVENANCE}=off "
            "to serve versions the platform's gate did not sign"
        ) from None
    except OSError as exc:
        raise SigningKeyUnavailable(f"cannot read the model-signing key at {path}: {exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyUnavailable(
            f"the model-signing key at {path} has {len(key)} bytes; at least {MIN_KEY_BYTES} are required"
        )
    return key


def ensure_signing_key(path: Path) -> bytes:
    """The signer's key: created once (0600, O_EXCL, so two processes never write two keys)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race: read its key
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(MIN_KEY_BYTES).hex().encode())
    return read_signing_key(path)


def key_id(key: bytes) -> str:
    """A short, non-secret name of a key, to tell a rotated key from a forged signature."""
    return hashlib.sha256(b"healthrisk-key-id\n" + key).hexdigest()[:12]


def _signature(key: bytes, name: str, version: str, digest: str) -> str:
    statement = "\n".join((_STATEMENT_PREFIX, name, version, digest)).encode()
    return hmac.new(key, statement, hashlib.sha256).hexdigest()


def sign_promotion(key: bytes, name: str, version: str, raw_parameters: bytes) -> dict[str, str]:
    """The tags the gate writes on a version before it moves the alias there.

    The document is parsed first: the gate never signs what serving would refuse.
    """
    parse_parameters(raw_parameters)
    digest = hashlib.sha256(raw_parameters).hexdigest()
    return {
        TAG_PARAMETERS_SHA256: digest,
        TAG_PROMOTION_HMAC: _signature(key, name, version, digest),
        TAG_PROMOTION_KEY_ID: key_id(key),
    }


def verify_promotion(key: bytes, name: str, version: str, raw_parameters: bytes, tags: dict[str, str]) -> str:
    """The digest of a version the gate signed; ProvenanceError saying what is wrong otherwise."""
    signature = tags.get(TAG_PROMOTION_HMAC)
    if not signature:
        raise ProvenanceError(
            f"version {version} carries no {TAG_PROMOTION_HMAC} tag: the platform's promotion gate did "
            "not promote it (an alias moved by hand?)",
            "unsigned",
        )
    signed_with = tags.get(TAG_PROMOTION_KEY_ID)
    if signed_with is not None and signed_with != key_id(key):
        raise ProvenanceError(
            f"version {version} was signed with key {signed_with}, this service holds key {key_id(key)}",
            "bad_signature",
        )
    digest = hashlib.sha256(raw_parameters).hexdigest()
    if not hmac.compare_digest(_signature(key, name, version, digest), signature):
        raise ProvenanceError(
            f"version {version}: the promotion signature does not match its {PARAMETERS_FILE} "
            f"(sha256 {digest[:12]}…): the file or the tags changed after promotion, or were forged",
            "bad_signature",
        )
    return digest
