"""Which version does the configured reference point at? A few MLflow REST calls.

The serving process resolves `MODEL_VERSION` (number, alias or `latest`) through MLflow's
public REST API with the standard library (healthrisk.registry_rest), so that polling
never imports the mlflow client. Every answer carries the version's tags: the provenance
signature and the training metrics come with the resolution, no extra call.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from healthrisk.contracts import (
    ENV_MODEL_URI,
    ENV_TRACKING_URI,
    LATEST_VERSION,
    PROMOTION_PROMOTED,
    TAG_PROMOTION,
)
from healthrisk.registry_rest import API, VersionNotFound, get_json, parameters_document


@dataclass(frozen=True)
class ResolvedVersion:
    name: str
    version: str
    alias: str | None
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _resolved(name: str, found: dict[str, Any], alias: str | None) -> ResolvedVersion:
    tags = {t["key"]: t["value"] for t in found.get("tags", [])}
    return ResolvedVersion(name, str(found["version"]), alias, tags, found.get("run_id") or None)


class RegistryClient:
    def __init__(self, tracking_uri: str, *, timeout: float) -> None:
        scheme = urllib.parse.urlparse(tracking_uri).scheme
        if scheme not in ("http", "https"):
            raise ValueError(
                f"{ENV_TRACKING_URI} must be an MLflow server (http/https), got {tracking_uri!r}; "
                f"to serve a model without a server, set {ENV_MODEL_URI}"
            )
        self.tracking_uri = tracking_uri.rstrip("/")
        self.timeout = timeout

    def resolve(self, name: str, reference: str) -> ResolvedVersion:
        if reference.isdigit():
            found = self._get("/model-versions/get", {"name": name, "version": reference})["model_version"]
            return _resolved(name, found, None)
        if reference == LATEST_VERSION:
            return self._latest_promoted_version(name)
        found = self._get("/registered-models/alias", {"name": name, "alias": reference})["model_version"]
        return _resolved(name, found, reference)

    def parameters_document(self, name: str, version: str) -> bytes:
        return parameters_document(self.tracking_uri, name, version, timeout=self.timeout)

    def _latest_promoted_version(self, name: str) -> ResolvedVersion:
        """`latest` is the newest version the promotion gate accepted (SPEC §4): a version
        it rejected, or one rolled back after a failed rollout, is never served as latest."""
        query = {
            "filter": f"name='{name}' and tags.`{TAG_PROMOTION}` = '{PROMOTION_PROMOTED}'",
            "order_by": "version_number DESC",
            "max_results": "20",
        }
        versions = self._get("/model-versions/search", query).get("model_versions", [])
        # A version still PENDING_REGISTRATION has no artifact yet; skip it until it is READY.
        ready = [v for v in versions if v.get("status", "READY") == "READY"]
        if not ready:
            raise VersionNotFound(f"registered model {name!r} has no promoted version")
        return _resolved(name, ready[0], None)

    def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        url = f"{self.tracking_uri}{API}{path}?{urllib.parse.urlencode(query)}"
        return get_json(url, timeout=self.timeout)
