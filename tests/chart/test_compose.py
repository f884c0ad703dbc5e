"""compose.yaml for real: the local stack from the same images as the chart trains a model
across two SuperNodes, serves it and shows its metrics in Prometheus.

Needs the docker engine (`cluster/docker-up.sh`) and the images (`make images`, built by
the `images` fixture of the cluster tests), hence marked `cluster` and run by
`make chart-test`. Compose v2 comes from Debian sid (images/fetch-compose.sh) when the
engine has no compose plugin. Every published port is on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chartkit import REPO, run, wait_for

pytestmark = pytest.mark.cluster

RECORD = {
    "heart_rate": 75, "steps": 8000, "sleep_hours": 7.5, "respiratory_rate": 16, "body_temp": 98.6,
    "pm25": 15, "pm10": 25, "o3": 0.05, "no2": 0.02, "temperature": 72, "humidity": 50,
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


class Compose:
    def __init__(self, binary: str, project: str, env: dict[str, str]) -> None:
        self.cmd = [binary, "-f", str(REPO / "compose.yaml"), "-p", project]
        self.env = env

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([*self.cmd, *args], env=self.env, timeout=timeout, check=check)


@pytest.fixture
def stack(images: dict[str, str]) -> Iterator[tuple[Compose, dict[str, int]]]:
    binary = (
        run(["bash", str(REPO / "images" / "fetch-compose.sh")], timeout=600).stdout.strip().splitlines()[-1]
    )
    ports = {name: free_port() for name in ("MLFLOW", "INFERENCE", "PROMETHEUS", "SUPERLINK")}
    env = {**os.environ, "IMAGE_TAG": "dev", **{f"{k}_HOST_PORT": str(v) for k, v in ports.items()}}
    compose = Compose(binary, f"hr-compose-{uuid.uuid4().hex[:6]}", env)
    try:
        yield compose, ports
    finally:
        print(compose("logs", "--no-color", "--tail", "40", check=False).stdout[-8000:])
        compose("down", "--volumes", "--remove-orphans", check=False)


@pytest.mark.timeout(1800)
def test_compose_stack_trains_serves_and_scrapes(stack: tuple[Compose, dict[str, int]]) -> None:
    compose, ports = stack
    compose("up", "-d", "--no-build", "--wait", "--wait-timeout", "300",
            "mlflow", "inference", "prometheus", "superlink", "supernode-1", "supernode-2")  # fmt: skip
    mlflow = f"http://127.0.0.1:{ports['MLFLOW']}"
    api = f"http://127.0.0.1:{ports['INFERENCE']}"
    prometheus = f"http://127.0.0.1:{ports['PROMETHEUS']}"
    assert answers(f"{mlflow}/health")
    assert answers(f"{api}/health")
    assert not answers(f"{api}/ready"), "no model registered yet"

    trained = compose("run", "--rm", "--no-deps", "train", timeout=1200, check=False)
    assert trained.returncode == 0, trained.stdout[-4000:] + trained.stderr[-4000:]
    compose("run", "--rm", "--no-deps", "train", "healthrisk", "promote", "--version", "1")

    wait_for("the inference service to load the champion", lambda: answers(f"{api}/ready"), timeout=120)
    for _ in range(3):
        answer = get_json(f"{api}/predict", RECORD)
        assert answer["model_version"] == "1"
        assert 0.0 <= answer["risk_score"] <= 1.0

    query = 'sum(predictions_total{job="inference",endpoint="predict"})'

    def scraped() -> float:
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        result = get_json(url)["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) >= 3 and float(result[0]["value"][1])

    wait_for("Prometheus to scrape the predictions", scraped, timeout=90)
