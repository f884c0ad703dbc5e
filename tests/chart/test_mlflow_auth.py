"""The chart's MLflow authentication, run for real on 127.0.0.1: the server with the ini the
chart renders, the chart's bootstrap script with the chart's grants, then every component's
user doing what its component does and refused what it must not, and anonymous callers
refused on every route the server has.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    DRIFT_EXPERIMENT,
    ENV_TRACKING_PASSWORD,
    ENV_TRACKING_URI,
    ENV_TRACKING_USERNAME,
    METRIC_VAL_AUC,
    PROMOTION_PROMOTED,
    REGISTERED_MODEL,
    TAG_PROMOTION,
    TAG_VAL_AUC,
    TRAINING_EXPERIMENT,
)
from healthrisk.model_parameters import PARAMETERS_ARTIFACT as PARAMETERS
from healthrisk.processes import MLFLOW_SERVER_ENV, ProcessGroup, free_port, mlflow_server_argv, wait_for_http
from healthrisk.promotion_lock import lock_name
from healthrisk.registry import build_pipeline, log_and_register, promote
from tests.chart.values import render
from tests.kit.tools import find_tool

pytestmark = pytest.mark.integration

USERS = ("trainer", "operator", "inference", "drift")
# What answers without a credential: liveness, the server's feature flags, the UI's files.
PUBLIC = re.compile(r"^/(health|static-files/.*|(ajax-)?api/3\.0/mlflow/server-info)$")


@dataclass
class Registry:
    uri: str
    admin: tuple[str, str]
    passwords: dict[str, str]
    state: Path
    server_env: dict[str, str]
    bootstrap: list[str]

    def as_user(self, user: str) -> httpx.Client:
        auth = self.admin if user == "admin" else (user, self.passwords[user])
        return httpx.Client(base_url=self.uri, auth=auth, timeout=30)

    def run_bootstrap(self) -> subprocess.CompletedProcess[str]:
        env = {ENV_TRACKING_URI: self.uri, "PATH": "/usr/bin:/bin"}
        env[ENV_TRACKING_USERNAME], env[ENV_TRACKING_PASSWORD] = self.admin
        return subprocess.run(self.bootstrap, env=env, capture_output=True, text=True, timeout=300)


def chart_auth_files(tmp_path: Path) -> dict[str, str]:
    """The ConfigMap the chart mounts into the MLflow pod, with default values."""
    docs = render(find_tool("helm"), {}, tmp_path)
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-mlflow-auth")
    ]
    return dict(config["data"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    state = tmp_path_factory.mktemp("mlflow-auth")
    files = chart_auth_files(state)
    ini = files["basic_auth.ini"]
    assert "sqlite:////mlflow/basic_auth.db" in ini  # the users live on the MLflow volume
    (state / "basic_auth.ini").write_text(ini.replace("sqlite:////mlflow/", f"sqlite:///{state}/"))
    (state / "grants.json").write_text(files["grants.json"])
    (state / "bootstrap.py").write_text(files["mlflow_auth_bootstrap.py"])
    passwords = {user: secrets.token_urlsafe(24) for user in USERS}
    for user, password in passwords.items():
        (state / "users" / user).mkdir(parents=True)
        (state / "users" / user / "username").write_text(user)
        (state / "users" / user / "password").write_text(password)
    admin = ("admin", secrets.token_urlsafe(24))
    server_env = {
        **MLFLOW_SERVER_ENV,
        "MLFLOW_AUTH_CONFIG_PATH": str(state / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
    }
    port = free_port()
    argv = [*mlflow_server_argv(state, "127.0.0.1", port), "--serve-artifacts", "--app-name", "basic-auth"]
    bootstrap = [sys.executable, str(state / "bootstrap.py"), "--grants", str(state / "grants.json")]
    bootstrap += ["--credentials", str(state / "users"), "--ready-file", str(state / "ready")]
    with ProcessGroup(state / "logs") as group:
        child = group.start("mlflow", argv, env=server_env)
        uri = f"http://127.0.0.1:{port}"
        wait_for_http(f"{uri}/health", timeout=120, child=child)
        yield Registry(uri, admin, passwords, state, server_env, bootstrap)


@pytest.fixture(scope="module")
def bootstrapped(registry: Registry) -> Registry:
    first = registry.run_bootstrap()
    assert first.returncode == 0, first.stderr
    assert (registry.state / "ready").exists()
    again = registry.run_bootstrap()  # a pod restart, an upgrade: nothing changes, nothing fails
    assert again.returncode == 0, again.stderr
    for output in (first, again):
        assert not any(p in output.stdout + output.stderr for p in registry.passwords.values())
    return registry


def grants_of(registry: Registry, user: str) -> set[tuple[str, str, str]]:
    with registry.as_user("admin") as admin:
        answer = admin.get("/api/3.0/mlflow/users/permissions/list", params={"username": user})
    answer.raise_for_status()
    return {
        (p["resource_type"], p["resource_pattern"], p["permission"]) for p in answer.json()["permissions"]
    }


def experiment_id(client: httpx.Client, name: str) -> str:
    answer = client.get("/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
    answer.raise_for_status()
    return str(answer.json()["experiment"]["experiment_id"])


def status(answer: httpx.Response) -> int:
    return answer.status_code


def test_the_bootstrap_grants_each_component_exactly_the_charts_table(bootstrapped: Registry) -> None:
    with bootstrapped.as_user("admin") as admin:
        training, drift = experiment_id(admin, TRAINING_EXPERIMENT), experiment_id(admin, DRIFT_EXPERIMENT)
    model = ("registered_model", REGISTERED_MODEL)
    assert grants_of(bootstrapped, "trainer") == {("experiment", training, "EDIT"), (*model, "EDIT")}
    assert grants_of(bootstrapped, "operator") == {("experiment", training, "READ"), (*model, "MANAGE")}
    assert grants_of(bootstrapped, "inference") == {(*model, "READ")}
    assert grants_of(bootstrapped, "drift") == {("experiment", drift, "EDIT"), (*model, "READ")}


def test_the_bootstrap_converges_changed_grants_and_passwords(bootstrapped: Registry) -> None:
    """What an upgrade brings (a narrower table, a rotated Secret) replaces what was there."""
    grants = json.loads((bootstrapped.state / "grants.json").read_text())
    original = json.dumps(grants)
    grants["users"]["operator"] = [
        g for g in grants["users"]["operator"] if g["resource_type"] != "experiment"
    ]
    (bootstrapped.state / "grants.json").write_text(json.dumps(grants))
    old_password = bootstrapped.passwords["inference"]
    bootstrapped.passwords["inference"] = secrets.token_urlsafe(24)
    (bootstrapped.state / "users" / "inference" / "password").write_text(bootstrapped.passwords["inference"])
    try:
        assert bootstrapped.run_bootstrap().returncode == 0
        assert grants_of(bootstrapped, "operator") == {("registered_model", REGISTERED_MODEL, "MANAGE")}
        with httpx.Client(base_url=bootstrapped.uri, auth=("inference", old_password)) as stale:
            assert (
                status(stale.get("/api/2.0/mlflow/registered-models/get", params={"name": REGISTERED_MODEL}))
                == 401
            )
        with bootstrapped.as_user("inference") as inference:
            assert (
                status(
                    inference.get("/api/2.0/mlflow/registered-models/get", params={"name": REGISTERED_MODEL})
                )
                == 200
            )
    finally:
        (bootstrapped.state / "grants.json").write_text(original)
        assert bootstrapped.run_bootstrap().returncode == 0


def test_each_component_can_do_its_job_and_nothing_more(bootstrapped: Registry) -> None:
    model = {"name": REGISTERED_MODEL}
    with bootstrapped.as_user("admin") as admin:
        training, drift = experiment_id(admin, TRAINING_EXPERIMENT), experiment_id(admin, DRIFT_EXPERIMENT)
    with bootstrapped.as_user("trainer") as trainer:  # the ServerApp in a SuperLink pod
        run = trainer.post("/api/2.0/mlflow/runs/create", json={"experiment_id": training})
        assert status(run) == 200
        run_id = run.json()["run"]["info"]["run_id"]
        source = run.json()["run"]["info"]["artifact_uri"] + "/model"
        logged = {"run_id": run_id, "key": METRIC_VAL_AUC, "value": 0.8, "timestamp": 0, "step": 1}
        artifact = f"/api/2.0/mlflow-artifacts/artifacts/{training}/{run_id}/artifacts/model/{PARAMETERS}"
        assert status(trainer.put(artifact, content=b'{"parameters": 1}')) == 200
        assert status(trainer.post("/api/2.0/mlflow/runs/log-metric", json=logged)) == 200
        created = trainer.post(
            "/api/2.0/mlflow/model-versions/create", json={**model, "source": source, "run_id": run_id}
        )
        assert status(created) == 200
        version = created.json()["model_version"]["version"]
        # EDIT on the model also moves an alias: MLflow cannot split the two (issue 16 point 3
        # closes it by signing promotions); deleting one needs MANAGE, which it lacks.
        champion = {**model, "alias": "champion", "version": version}
        assert status(trainer.post("/api/2.0/mlflow/registered-models/alias", json=champion)) == 200
        assert (
            status(
                trainer.request(
                    "DELETE", "/api/2.0/mlflow/registered-models/alias", json={**model, "alias": "champion"}
                )
            )
            == 403
        )
        assert status(trainer.post("/api/2.0/mlflow/runs/create", json={"experiment_id": drift})) == 403
    with bootstrapped.as_user("operator") as operator:  # progress, promotion, rollback
        found = operator.post("/api/2.0/mlflow/runs/search", json={"experiment_ids": [training]})
        assert status(found) == 200 and found.json()["runs"]
        tag = {**model, "version": version, "key": TAG_PROMOTION, "value": PROMOTION_PROMOTED}
        assert status(operator.post("/api/2.0/mlflow/model-versions/set-tag", json=tag)) == 200
        assert status(operator.post("/api/2.0/mlflow/registered-models/alias", json=champion)) == 200
        assert (
            status(
                operator.request(
                    "DELETE", "/api/2.0/mlflow/registered-models/alias", json={**model, "alias": "champion"}
                )
            )
            == 200
        )
        assert status(operator.post("/api/2.0/mlflow/registered-models/alias", json=champion)) == 200
        assert status(operator.post("/api/2.0/mlflow/runs/create", json={"experiment_id": training})) == 403
    with bootstrapped.as_user("inference") as inference:  # reads the served version, nothing of its run
        alias = inference.get(
            "/api/2.0/mlflow/registered-models/alias", params={**model, "alias": "champion"}
        )
        assert status(alias) == 200 and alias.json()["model_version"]["version"] == version
        # The parameters document through the route the registered model authorises; the
        # same file through the experiment's artifact proxy, and the run, are not its.
        document = inference.get(
            "/model-versions/get-artifact", params={**model, "version": version, "path": PARAMETERS}
        )
        assert status(document) == 200 and document.content == b'{"parameters": 1}'
        assert status(inference.get(artifact)) == 403
        assert status(inference.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id})) == 403
        assert status(inference.post("/api/2.0/mlflow/registered-models/alias", json=champion)) == 403
        assert status(inference.post("/api/2.0/mlflow/model-versions/set-tag", json=tag)) == 403
        assert status(inference.post("/api/2.0/mlflow/runs/create", json={"experiment_id": training})) == 403
    with bootstrapped.as_user("drift") as checker:  # publishes a site's summary, reads the champion
        assert status(checker.post("/api/2.0/mlflow/runs/create", json={"experiment_id": drift})) == 200
        assert (
            status(
                checker.get("/api/2.0/mlflow/registered-models/alias", params={**model, "alias": "champion"})
            )
            == 200
        )
        assert status(checker.post("/api/2.0/mlflow/runs/create", json={"experiment_id": training})) == 403
        assert status(checker.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id})) == 403
        assert status(checker.post("/api/2.0/mlflow/registered-models/alias", json=champion)) == 403
        new_version = {**model, "source": source, "run_id": run_id}
        assert status(checker.post("/api/2.0/mlflow/model-versions/create", json=new_version)) == 403


def server_routes(registry: Registry) -> list[tuple[str, str]]:
    """Every (path, method) of the app the server runs: FastAPI's own routes and Flask's rules."""
    ini = registry.state / "routes.ini"  # a throwaway user database: listing builds the app
    ini.write_text((registry.state / "basic_auth.ini").read_text().replace("basic_auth.db", "routes.db"))
    script = """
import json, os
os.environ["_MLFLOW_SGI_NAME"] = "uvicorn"
import mlflow.server.auth as auth
from mlflow.server import app as flask_app
routes = [[p, m.upper()] for p, ops in auth.create_app(flask_app).openapi()["paths"].items() for m in ops]
routes += [[r.rule, m] for r in flask_app.url_map.iter_rules() for m in r.methods - {"HEAD", "OPTIONS"}]
print(json.dumps(routes))
"""
    env = {**registry.server_env, "MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    listed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    routes = json.loads(listed.stdout.strip().splitlines()[-1])
    return sorted({(re.sub(r"<(?:[^:>]+:)?[^>]+>|\{[^}]+\}", "1", path), method) for path, method in routes})


def test_anonymous_and_wrong_password_requests_are_refused_on_every_route(bootstrapped: Registry) -> None:
    routes = server_routes(bootstrapped)
    assert len(routes) > 400  # the whole REST, ajax, GraphQL, OTLP and gateway surface
    answered: dict[tuple[str, str], int] = {}
    with httpx.Client(base_url=bootstrapped.uri, timeout=30) as anonymous:
        for path, method in routes:
            body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH", "DELETE") else None
            answered[(path, method)] = anonymous.request(method, path, json=body).status_code
    not_refused = {
        route: code for route, code in answered.items() if code != 401 and not PUBLIC.match(route[0])
    }
    assert not not_refused, not_refused
    assert answered[("/health", "GET")] == 200
    wrong = httpx.Client(base_url=bootstrapped.uri, auth=("trainer", "not-the-password"), timeout=30)
    with wrong:
        assert (
            status(wrong.get("/api/2.0/mlflow/registered-models/get", params={"name": REGISTERED_MODEL}))
            == 401
        )


def test_the_operator_promotes_through_the_promotion_lock(
    bootstrapped: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """promote() serialises on a registered model of its own (healthrisk.promotion_lock): the
    operator's user may create and delete that lock beside the model it promotes, under the
    chart's grants. The version is the trainer's, registered as a training run does."""
    monkeypatch.setenv(ENV_TRACKING_URI, bootstrapped.uri)
    monkeypatch.setenv(ENV_TRACKING_USERNAME, "trainer")
    monkeypatch.setenv(ENV_TRACKING_PASSWORD, bootstrapped.passwords["trainer"])
    mlflow.set_experiment(TRAINING_EXPERIMENT)
    n = 11
    pipeline = build_pipeline(np.zeros(n), np.ones(n), np.linspace(-0.5, 0.5, n) / 100, -1.0)
    with mlflow.start_run():
        version = log_and_register(pipeline, registered_name=REGISTERED_MODEL, tags={TAG_VAL_AUC: "0.99"})
    champion = {"name": REGISTERED_MODEL, "alias": CHAMPION_ALIAS}
    with bootstrapped.as_user("operator") as operator:  # the earlier tests' champion has no AUC
        operator.request(
            "DELETE", "/api/2.0/mlflow/registered-models/alias", json=champion
        ).raise_for_status()
    monkeypatch.setenv(ENV_TRACKING_USERNAME, "operator")
    monkeypatch.setenv(ENV_TRACKING_PASSWORD, bootstrapped.passwords["operator"])
    decision = promote(
        MlflowClient(bootstrapped.uri), REGISTERED_MODEL, version.version, signing_key=secrets.token_bytes(32)
    )
    assert decision.promoted, decision.reason
    with bootstrapped.as_user("operator") as operator:
        alias = operator.get("/api/2.0/mlflow/registered-models/alias", params=champion)
        assert alias.json()["model_version"]["version"] == version.version
    with bootstrapped.as_user("admin") as admin:  # who sees every model
        lock = {"name": lock_name(REGISTERED_MODEL)}
        assert status(admin.get("/api/2.0/mlflow/registered-models/get", params=lock)) == 404, "released"
