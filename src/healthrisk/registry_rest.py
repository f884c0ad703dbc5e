"""The few MLflow REST calls the inference service and the promotion gate share, standard library only.

The serving process never imports the mlflow client (~100 MB resident). The gate reads a
version's parameters document through the same route as the service, so it signs exactly
the bytes the service will verify. That route, `/model-versions/get-artifact`, is
authorised by the registered model alone: the service needs read access to the model and
nothing else. Credentials are the MLflow client's variables (MLFLOW_TRACKING_TOKEN, or
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from healthrisk.contracts import ENV_TRACKING_PASSWORD, ENV_TRACKING_USERNAME
from healthrisk.model_parameters import MAX_PARAMETERS_BYTES, PARAMETERS_ARTIFACT, ModelIntegrityError

API = "/api/2.0/mlflow"
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class RegistryUnreachable(RuntimeError):
    """The registry did not answer (network, timeout, 5xx, credentials refused)."""

    def __init__(self, message: str, *, mlflow_error_code: str | None = None) -> None:
        super().__init__(message)
        # Set when MLflow itself answered with its JSON error (not a proxy or the network).
        self.mlflow_error_code = mlflow_error_code


class VersionNotFound(RuntimeError):
    """The registry answered: there is no such model, version or alias (yet)."""


def auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get(ENV_TRACKING_USERNAME), os.environ.get(ENV_TRACKING_PASSWORD)
    if user and password:
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {encoded}"}
    return {}


def get(url: str, *, timeout: float, max_bytes: int | None = None) -> bytes:
    """GET with the registry's credentials; VersionNotFound when the registry says so."""
    request = urllib.request.Request(url, headers=auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read() if max_bytes is None else response.read(max_bytes))
    except urllib.error.HTTPError as exc:
        body = _error_body(exc)
        if exc.code in (400, 404) and body.get("error_code") in _NOT_FOUND_CODES:
            raise VersionNotFound(body.get("message", str(exc))) from exc
        raise RegistryUnreachable(
            f"HTTP {exc.code} from {urllib.parse.urlparse(url).path}: {body.get('message', exc.reason)}",
            mlflow_error_code=body.get("error_code"),
        ) from exc
    except OSError as exc:
        raise RegistryUnreachable(f"{type(exc).__name__}: {exc}") from exc


def get_json(url: str, *, timeout: float) -> dict[str, Any]:
    try:
        return dict(json.loads(get(url, timeout=timeout)))
    except ValueError as exc:
        raise RegistryUnreachable(f"not JSON from {urllib.parse.urlparse(url).path}: {exc}") from exc


def parameters_document(tracking_uri: str, name: str, version: str, *, timeout: float) -> bytes:
    """A version's parameters document; ModelIntegrityError if the version has none."""
    query = urllib.parse.urlencode({"name": name, "version": version, "path": PARAMETERS_ARTIFACT})
    url = f"{tracking_uri.rstrip('/')}/model-versions/get-artifact?{query}"
    not_ours = (
        "it was not registered by the platform's training, and serving reads nothing else "
        "(it never unpickles a model)"
    )
    try:
        # One byte more than allowed, so that the parser can say the file is too large.
        return get(url, timeout=timeout, max_bytes=MAX_PARAMETERS_BYTES + 1)
    except VersionNotFound:
        raise ModelIntegrityError(f"version {version} has no {PARAMETERS_ARTIFACT}: {not_ours}") from None
    except RegistryUnreachable as exc:
        # MLflow answers this route with its own INTERNAL_ERROR for a version whose source
        # it cannot serve artifacts from (e.g. a `runs:/` source with proxied artifacts).
        # If the version itself reads fine, the registry is up and the version is unusable:
        # refuse it rather than wait for an outage that is not one.
        if exc.mlflow_error_code != "INTERNAL_ERROR":
            raise
        version_url = f"{tracking_uri.rstrip('/')}{API}/model-versions/get?" + urllib.parse.urlencode(
            {"name": name, "version": version}
        )
        get_json(version_url, timeout=timeout)
        raise ModelIntegrityError(
            f"the registry cannot serve {PARAMETERS_ARTIFACT} of version {version} ({exc}): {not_ours}"
        ) from None


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        return dict(json.loads(exc.read()))
    except (OSError, ValueError, TypeError):
        return {}
