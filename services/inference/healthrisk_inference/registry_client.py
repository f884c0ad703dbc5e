"""Which version does the configured reference point at? A few MLflow REST calls.

The serving process resolves `MODEL_VERSION` (number, alias or `latest`) through MLflow's
public REST API with the standard library, so that polling never imports the mlflow
client (~100 MB resident, see loader.py). It honours the same credential variables as the
MLflow client (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME/PASSWORD).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from healthrisk.contracts import ENV_MODEL_URI, ENV_TRACKING_URI, LATEST_VERSION

_API = "/api/2.0/mlflow"
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class RegistryUnreachable(RuntimeError):
    """The registry did not answer (network, timeout, 5xx)."""


class VersionNotFound(RuntimeError):
    """The registry answered: there is no such model, version or alias (yet)."""


@dataclass(frozen=True)
class ResolvedVersion:
    name: str
    version: str
    alias: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class RegistryClient:
    def __init__(self, tracking_uri: str, *, timeout: float) -> None:
        scheme = urllib.parse.urlparse(tracking_uri).scheme
        if scheme not in ("http", "https"):
            raise ValueError(
                f"{ENV_TRACKING_URI} must be an MLflow server (http/https), got {tracking_uri!r}; "
                f"to serve a model without a server, set {ENV_MODEL_URI}"
            )
        self.base = tracking_uri.rstrip("/") + _API
        self.timeout = timeout

    def resolve(self, name: str, reference: str) -> ResolvedVersion:
        if reference.isdigit():
            found = self._get("/model-versions/get", {"name": name, "version": reference})["model_version"]
            return ResolvedVersion(name, str(found["version"]), None)
        if reference == LATEST_VERSION:
            return ResolvedVersion(name, self._latest_ready_version(name), None)
        found = self._get("/registered-models/alias", {"name": name, "alias": reference})["model_version"]
        return ResolvedVersion(name, str(found["version"]), reference)

    def _latest_ready_version(self, name: str) -> str:
        query = {
            "filter": f"name='{name}'",
            "order_by": "version_number DESC",
            "max_results": "20",
        }
        versions = self._get("/model-versions/search", query).get("model_versions", [])
        # A version still PENDING_REGISTRATION has no artifact yet; skip it until it is READY.
        ready = [v for v in versions if v.get("status", "READY") == "READY"]
        if not ready:
            raise VersionNotFound(f"registered model {name!r} has no READY version")
        return str(ready[0]["version"])

    def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.base}{path}?{urllib.parse.urlencode(query)}")
        for header, value in _auth_headers().items():
            request.add_header(header, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            body = _error_body(exc)
            if exc.code in (400, 404) and body.get("error_code") in _NOT_FOUND_CODES:
                raise VersionNotFound(body.get("message", str(exc))) from exc
            raise RegistryUnreachable(
                f"HTTP {exc.code} from {path}: {body.get('message', exc.reason)}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise RegistryUnreachable(f"{type(exc).__name__}: {exc}") from exc


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        return dict(json.loads(exc.read()))
    except (OSError, ValueError, TypeError):
        return {}


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {encoded}"}
    return {}
