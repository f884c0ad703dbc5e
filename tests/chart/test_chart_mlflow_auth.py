"""What the chart renders for MLflow's authentication (issue 16, point 1), without a cluster:
the basic-auth app, the bootstrap that creates the users, and where each component's
credential goes. tests/chart/test_mlflow_auth.py runs the same settings against a real
MLflow server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from healthrisk.contracts import (
    ENV_OPERATOR_PREFIX,
    ENV_TRACKING_PASSWORD,
    ENV_TRACKING_USERNAME,
    REGISTERED_MODEL,
    SECRET_KEY_PASSWORD,
    SECRET_KEY_USERNAME,
)
from tests.chart.values import pod_specs, render
from tests.kit.commands import run
from tests.kit.tools import CHART

NAMESPACE = "health-risk-mlops"
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN")


@pytest.fixture(scope="module")
def default(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, {}, tmp_path_factory.mktemp("default"))


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def containers(docs: list[dict[str, Any]], workload: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in dict(pod_specs(docs))[workload]["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_ref(entry: dict[str, Any]) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_secrets_reach_pods_by_reference_only(rendered: list[dict[str, Any]]) -> None:
    for workload, spec in pod_specs(rendered):
        for container in spec["containers"]:
            for name, entry in env_of(container).items():
                if SECRET_NAMES.search(name) and not name.startswith(ENV_OPERATOR_PREFIX):
                    assert "valueFrom" in entry, f"{workload}: {name} written into the spec"


def test_mlflow_runs_its_auth_app_and_a_bootstrap_that_gates_readiness(
    default: list[dict[str, Any]], helm: str, tmp_path: Path
) -> None:
    pod = containers(default, "Deployment/health-risk-mlflow")
    server, bootstrap = pod["mlflow"], pod["auth-bootstrap"]
    assert "--app-name=basic-auth" in server["args"]
    env = env_of(server)
    assert secret_ref(env["MLFLOW_AUTH_ADMIN_PASSWORD"]) == ("health-risk-mlflow-admin", "password")
    assert secret_ref(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == (
        "health-risk-mlflow-admin",
        "flask-secret-key",
    )
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    assert "--stay" in bootstrap["args"] and bootstrap["readinessProbe"]["exec"]
    assert secret_ref(env_of(bootstrap)[ENV_TRACKING_PASSWORD]) == ("health-risk-mlflow-admin", "password")
    config = find(default, "ConfigMap", "health-risk-mlflow-auth")["data"]
    assert "default_permission = NO_PERMISSIONS" in config["basic_auth.ini"]
    assert "auth_cache_ttl_seconds = 60" in config["basic_auth.ini"]
    assert config["mlflow_auth_bootstrap.py"] == (CHART / "files" / "mlflow_auth_bootstrap.py").read_text()
    grants = json.loads(config["grants.json"])
    assert set(grants["users"]) == {"trainer", "operator", "inference", "drift"}
    assert grants["registered_models"] == [REGISTERED_MODEL]
    off = render(helm, {"mlflow": {"auth": {"enabled": False}}}, tmp_path)
    assert "--app-name=basic-auth" not in containers(off, "Deployment/health-risk-mlflow")["mlflow"]["args"]


def test_each_component_calls_mlflow_as_its_own_user(rendered: list[dict[str, Any]]) -> None:
    specs = dict(pod_specs(rendered))
    if "Deployment/health-risk-mlflow" not in specs:
        return  # an external MLflow: no users of ours
    for workload, user in (
        ("Deployment/health-risk-operator", "operator"),
        ("Deployment/health-risk-inference", "inference"),
        ("Pod/health-risk-test-mlflow", "inference"),
    ):
        (container,) = specs[workload]["containers"]
        env = env_of(container)
        secret = f"health-risk-mlflow-{user}"
        assert secret_ref(env[ENV_TRACKING_USERNAME]) == (secret, SECRET_KEY_USERNAME), workload
        assert secret_ref(env[ENV_TRACKING_PASSWORD]) == (secret, SECRET_KEY_PASSWORD), workload
    (operator,) = specs["Deployment/health-risk-operator"]["containers"]
    settings = {name: str(e.get("value")) for name, e in env_of(operator).items()}
    assert settings[f"{ENV_OPERATOR_PREFIX}TRAINING_CREDENTIALS_SECRET"] == "health-risk-mlflow-trainer"
    assert settings[f"{ENV_OPERATOR_PREFIX}DRIFT_CREDENTIALS_SECRET"] == "health-risk-mlflow-drift"
    assert REGISTERED_MODEL in json.loads(settings[f"{ENV_OPERATOR_PREFIX}REGISTERED_MODELS"])
    # The run pods' Secrets exist wherever the operator creates run pods.
    run_namespaces = {a.split("=", 1)[1] for a in operator["args"] if a.startswith("--namespace=")}
    for user in ("trainer", "drift"):
        placed = {
            d["metadata"]["namespace"]
            for d in rendered
            if d["kind"] == "Secret" and d["metadata"]["name"] == f"health-risk-mlflow-{user}"
        }
        assert placed == run_namespaces | {NAMESPACE}, user


def test_registered_models_named_in_values_get_grants_and_pass_the_operators_check(
    helm: str, tmp_path: Path
) -> None:
    docs = render(helm, {"mlflow": {"auth": {"registeredModels": ["sepsis"]}}}, tmp_path)
    grants = json.loads(find(docs, "ConfigMap", "health-risk-mlflow-auth")["data"]["grants.json"])
    assert grants["registered_models"] == [REGISTERED_MODEL, "sepsis"]
    assert {"resource_type": "registered_model", "resource": "sepsis", "permission": "EDIT"} in grants[
        "users"
    ]["trainer"]
    (operator,) = containers(docs, "Deployment/health-risk-operator").values()
    allowed = env_of(operator)[f"{ENV_OPERATOR_PREFIX}REGISTERED_MODELS"]["value"]
    assert json.loads(allowed) == [REGISTERED_MODEL, "sepsis"]


def test_the_admin_secret_lives_as_long_as_the_user_database(helm: str, tmp_path: Path) -> None:
    def kept(values: dict[str, Any]) -> bool:
        admin = find(render(helm, values, tmp_path), "Secret", "health-risk-mlflow-admin")
        return (admin["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"

    assert kept({})  # the volume is kept by default, and the users with it
    assert not kept({"mlflow": {"persistence": {"keep": False}}})
    assert kept({"mlflow": {"persistence": {"keep": False}, "auth": {"existingConfigSecret": "ini"}}})


def test_without_a_volume_the_user_database_must_be_named(helm: str) -> None:
    external = [
        "--set", "mlflow.backendStore.existingSecret=db", "--set", "mlflow.artifacts.destination=s3://b/p",
    ]  # fmt: skip
    proc = run([helm, "template", "x", str(CHART), *external], check=False)
    assert proc.returncode != 0 and "mlflow.auth.existingConfigSecret" in proc.stderr, proc.stderr
