"""The chart's value sets and its rendering (`helm template`), for the chart tests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from healthrisk.contracts import APP_NAME, MLFLOW_PORT
from tests.kit.commands import run
from tests.kit.tools import CHART


class _Loader(yaml.SafeLoader):
    """Reads numbers as Helm's (YAML 1.2) output means them: `1e-06`, which Helm's toYaml
    writes for 0.000001, is a float there and to the API server, a string to YAML 1.1."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)

# Value sets every check runs over: the defaults and the shapes a real install takes.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "production": {
        "operator": {"clusterWide": True, "runPods": {"nodeSelector": {"hospital-zone": "a"}}},
        "mlflow": {
            "backendStore": {"existingSecret": "mlflow-db"},
            "artifacts": {
                "destination": "s3://models/mlflow",
                "s3": {"endpointUrl": "https://minio.example.org", "existingSecret": "mlflow-s3"},
            },
            "extraAllowedHosts": ["mlflow.example.org"],
            # the users' database next to the registry's, on PostgreSQL
            "auth": {"existingConfigSecret": "mlflow-auth-ini"},
        },
        "inference": {
            "apiKey": {"enabled": True},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        },
        "metrics": {"prometheus": {"enabled": True}},
        "global": {"imageRegistry": "registry.hospital.example", "imagePullSecrets": [{"name": "regcred"}]},
        "modelSigning": {"existingSecret": "model-signing-key"},
    },
    "minimal": {
        "mlflow": {"enabled": False, "externalTrackingUri": f"http://mlflow.shared.svc:{MLFLOW_PORT}"},
        "networkPolicy": {"enabled": False},
        "metrics": {"grafanaDashboard": {"enabled": False}},
        "operator": {"serviceAccount": {"create": False, "name": "default"}},
        "modelSigning": {"required": False},
    },
    "multi-namespace": {
        "operator": {"watchNamespaces": ["{ns}-site-a", "{ns}-site-b"]},
        "mlflow": {"persistence": {"keep": False, "size": "1Gi"}},
        "metrics": {"prometheus": {"enabled": True, "discovery": "dns"}},
    },
}


def with_namespace(values: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """Value sets name extra namespaces relative to the test's own ({ns})."""
    return json.loads(json.dumps(values).replace("{ns}", namespace))


def render(
    helm: str,
    values: Mapping[str, Any],
    tmp_path: Path,
    *,
    namespace: str = "health-risk-mlops",
    release: str = APP_NAME,
) -> list[dict[str, Any]]:
    """`helm template` with these values, parsed (the CRD is one of the templates)."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    out = run(
        [helm, "template", release, str(CHART), "-n", namespace, "--include-crds", "-f", str(values_file)]
    )
    return [doc for doc in yaml.load_all(out.stdout, Loader=_Loader) if doc]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload in a rendering."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Pod":
            yield name, doc["spec"]
        elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield name, doc["spec"]["template"]["spec"]
