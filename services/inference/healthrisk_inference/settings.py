"""Service configuration: one pydantic-settings class, read from the environment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    ENV_MODEL_PROVENANCE,
    ENV_MODEL_SIGNING_KEY_FILE,
    ENV_MODEL_VERSION,
    LATEST_VERSION,
    REGISTERED_MODEL,
)
from healthrisk.provenance import DEFAULT_SIGNING_KEY_FILE

_ALIAS_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class Settings(BaseSettings):
    """Every knob of the inference service; each field is read from the upper-case env var."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", protected_namespaces=(), populate_by_name=True
    )

    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow server (http/https) holding the model registry."
    )
    model_name: str = Field(default=REGISTERED_MODEL, min_length=1, description="Registered model name.")
    model_version: str = Field(
        default=CHAMPION_ALIAS,
        description="A version number, an alias (e.g. champion) or `latest`; aliases and latest are polled.",
    )
    model_uri: str | None = Field(
        default=None,
        description="Serve this version (models:/NAME/VERSION) or local model directory; never polled.",
    )
    model_provenance: Literal["required", "off"] = Field(
        default="required",
        validation_alias=ENV_MODEL_PROVENANCE,
        description="required: serve only versions the platform's promotion gate signed; off: any version "
        "with a valid parameters document (registries without the platform's gate).",
    )
    model_signing_key_file: Path = Field(
        default=DEFAULT_SIGNING_KEY_FILE,
        validation_alias=ENV_MODEL_SIGNING_KEY_FILE,
        description="The promotion-signing key (a file, re-read at each load so a rotated key applies).",
    )
    inference_api_key: SecretStr | None = Field(
        default=None, description="When set, prediction and model routes require it (X-API-Key or Bearer)."
    )
    max_batch: int = Field(default=10_000, ge=1, description="Most records accepted by /predict/batch.")
    max_concurrent_requests: int = Field(
        default=32,
        ge=1,
        description="Prediction requests in flight at once (bodies still arriving included); more are "
        "answered 503 with Retry-After before anything is read. Bounds memory: each may hold a body "
        "of up to ~2 kB per record of MAX_BATCH.",
    )
    # 2 s: a promoted version is served within about 5 s (poll, load, swap); a poll is one
    # alias lookup, cheap for the registry even with many replicas.
    model_poll_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often an alias or `latest` is re-resolved in the registry."
    )
    registry_timeout_seconds: float = Field(default=5.0, gt=0, description="Per registry call.")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @field_validator("model_version")
    @classmethod
    def _version_is_number_alias_or_latest(cls, value: str) -> str:
        value = value.strip()
        if not (value.isdigit() or _ALIAS_PATTERN.match(value)):
            raise ValueError(
                f"{ENV_MODEL_VERSION} must be a number, an alias or {LATEST_VERSION!r}, got {value!r}"
            )
        return value

    @property
    def provenance_required(self) -> bool:
        return self.model_provenance == "required"

    @property
    def polls_registry(self) -> bool:
        """A fixed version never changes; an alias or `latest` can move under us."""
        return self.model_uri is None and not self.model_version.isdigit()
