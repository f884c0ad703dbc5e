"""compose.yaml for real: the local stack from the same images as the chart trains a model
across two SuperNodes, serves it and shows its metrics in Prometheus.

Needs the docker engine (`cluster/docker-up.sh`) and the images (the kit's
`platform_images` and `prometheus_image`, which also load them into the cluster), hence
marked `cluster` and run by `make chart-test`. Compose v2 comes from Debian sid
(images/fetch-compose.sh) when the engine has no compose plugin. Every published port is
on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from healthrisk.schema import EXAMPLE_RECORD
from tests.kit.commands import run
from tests.kit.http import answers, free_port, http_json
from tests.kit.images import TAG
from tests.kit.tools import REPO
from tests.kit.wait import wait_for

pytestmark = pytest.mark.cluster


class Compose:
    def __init__(self, binary: str, project: str, env: dict[str, str]) -> None:
        self.cmd = [binary, "-f", str(REPO / "compose.yaml"), "-p", project]
        self.env = env

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([*self.cmd, *args], env=self.env, timeout=timeout, check=check)


@pytest.fixture
def stack(platform_images: dict[str, str], prometheus_image: str) -> Iterator[tuple[Compose, dict[str, int]]]:
    binary = (
        run(["bash", str(REPO / "images" / "fetch-compose.sh")], timeout=600).stdout.strip().splitlines()[-1]
    )
    ports = {name: free_port() for name in ("MLFLOW", "INFERENCE", "PROMETHEUS", "SUPERLINK")}
    env = {**os.environ, "IMAGE_TAG": TAG, **{f"{k}_HOST_PORT": str(v) for k, v in ports.items()}}
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
        answer = http_json(f"{api}/predict", dict(EXAMPLE_RECORD))
        assert answer["model_version"] == "1"
        assert 0.0 <= answer["risk_score"] <= 1.0

    query = 'sum(predictions_total{job="inference",endpoint="predict"})'

    def scraped() -> float:
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        result = http_json(url)["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) >= 3 and float(result[0]["value"][1])

    wait_for("Prometheus to scrape the predictions", scraped, timeout=90, interval=2)
