"""Shared test material: the chart's CRD file, example specs, schema walking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from healthrisk.contracts import APP_NAME, MLFLOW_PORT
from healthrisk_operator.constants import CRD_NAME

REPO = Path(__file__).resolve().parents[2]
# The one source: the chart's template renders it, the operator packages it.
CRD_PATH = REPO / "charts" / APP_NAME / "files" / f"{CRD_NAME}.yaml"

MINIMAL_SPEC: dict[str, Any] = {
    "sites": [
        {"name": "hospital_01", "data": {"persistentVolumeClaim": "hospital-01-data"}},
        {"name": "hospital_02", "data": {"persistentVolumeClaim": "hospital-02-data"}},
    ],
    "dataWindow": {"from": "2024-01-01", "to": "2024-01-14"},
}

# Every field of the CRD spec set to a non-default value (test_crd checks both facts).
FULL_SPEC: dict[str, Any] = {
    "rounds": 7,
    "minSites": 1,
    "sites": [
        {
            "name": "hospital_01",
            "data": {"persistentVolumeClaim": "h1-data", "path": "/srv/data", "subPath": "h1"},
            "nodeSelector": {"site": "h1"},
            "authSecretName": "h1-auth",
        },
        {"name": "hospital-02", "data": {"persistentVolumeClaim": "h2-data"}, "authSecretName": "h2-auth"},
    ],
    "dataWindow": {"from": "2024-02-01", "to": "2024-02-10"},
    "strategy": {"name": "FedProx", "localEpochs": 3, "proximalMu": 0.1},
    "model": {"registeredName": "risk-v2", "trackingUri": f"http://mlflow.example:{MLFLOW_PORT}"},
    "promotion": {
        "alias": "prod",
        "maxAucDrop": 0.01,
        "inferenceDeployment": "inference",
        "inferenceContainer": "server",
        "rolloutTimeoutSeconds": 120,
    },
    "retraining": {
        "schedule": "0 3 * * 0",
        "drift": {
            "interval": "1h30m",
            "threshold": 0.3,
            "policy": "majority",
            "windowDays": 3,
        },
        "performance": {"maxAucDrop": 0.05},
    },
    "runPolicy": {
        "backoffLimit": 4,
        "activeDeadlineSeconds": 1800,
        "startDeadlineSeconds": 120,
        "ttlSecondsAfterFinished": 60,
        "cleanPodPolicy": "All",
    },
    "security": {"tlsSecretName": "flower-tls", "insecure": False},
    "privacy": {
        "minRows": 50,
        "perSiteMetrics": True,
        "secureAggregation": False,
        "differentialPrivacy": {
            "noiseMultiplier": 1.5,
            "clippingNorm": 0.5,
            "delta": 1e-6,
            "clipping": "client",
        },
    },
    "suspend": True,
}


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def version_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Leaf paths of a schema; array items add '[]', free-form maps are leaves."""
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        paths: set[str] = set()
        for key, prop in schema["properties"].items():
            paths |= schema_paths(prop, f"{prefix}.{key}" if prefix else key)
        return paths
    if kind == "array" and schema.get("items", {}).get("type") == "object":
        return schema_paths(schema["items"], prefix + "[]")
    return {prefix}


def value_paths(value: Any, prefix: str = "", free_maps: frozenset[str] = frozenset()) -> set[str]:
    if isinstance(value, dict) and prefix not in free_maps:
        paths: set[str] = set()
        for key, item in value.items():
            paths |= value_paths(item, f"{prefix}.{key}" if prefix else key, free_maps)
        return paths
    if isinstance(value, list) and value and isinstance(value[0], dict):
        paths = set()
        for item in value:
            paths |= value_paths(item, prefix + "[]", free_maps)
        return paths
    return {prefix}
