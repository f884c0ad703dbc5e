"""Helpers for the inference tests: the service as a real process, metrics, registrations."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from healthrisk.processes import Child, ProcessGroup, free_port, venv_bin, wait_for_http
from healthrisk.schema import EXAMPLE_RECORD

# Fast polling so that swaps and registry outages show within a second or two.
POLL_INTERVAL = "0.5"


@dataclass
class Service:
    url: str
    metrics_url: str
    child: Child

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def log(self) -> str:
        return self.child.log_path.read_text(errors="replace")

    def model(self, **headers: str) -> dict[str, Any]:
        with self.client(**headers) as client:
            return dict(client.get("/model").json())


def start_service(group: ProcessGroup, env: Mapping[str, str]) -> Service:
    port, metrics_port = free_port(), free_port()
    child = group.start(
        "inference",
        [venv_bin("healthrisk"), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", str(metrics_port), "--access-log"],
        env={"MODEL_POLL_INTERVAL_SECONDS": POLL_INTERVAL, "REGISTRY_TIMEOUT_SECONDS": "1", **env},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", timeout=60, child=child)
    return Service(url, f"http://127.0.0.1:{metrics_port}/metrics", child)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_ready(service: Service, *, timeout: float = 60) -> None:
    def ready() -> bool:
        with service.client() as client:
            return client.get("/ready").status_code == 200

    wait_until(ready, timeout=timeout, what=f"{service.url}/ready; log:\n{service.child.log_tail(30)}")


def metric_samples(service: Service) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics (on the metrics port), parsed by prometheus_client: (name, labels) → value."""
    text = httpx.get(service.metrics_url, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str
) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def fresh_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def record(**overrides: Any) -> dict[str, Any]:
    return {**EXAMPLE_RECORD, **overrides}


def post_raw(client: httpx.Client, path: str, body: str) -> httpx.Response:
    """POST `body` as-is: JSON text that a serializer would not write (e.g. NaN literals)."""
    return client.post(path, content=body, headers={"content-type": "application/json"})


@dataclass
class BasicDeployment:
    name: str
    version: str
    service: Service


def promote_through_gate(tracking_uri: str, name: str, version: str) -> None:
    """What the operator and `healthrisk promote` do: decide, sign, move the alias."""
    from mlflow import MlflowClient

    from healthrisk.provenance import ensure_signing_key, signing_key_file
    from healthrisk.registry import promote

    key = ensure_signing_key(signing_key_file())
    decision = promote(MlflowClient(tracking_uri), name, version, signing_key=key)
    assert decision.promoted, decision.reason


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    """What anyone with write access to the registered model can do: move the alias by hand."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).set_registered_model_alias(name, alias, version)


class RawRequest:
    """A POST with a chunked body sent piece by piece over a plain socket.

    httpx sends a whole body before it reads an answer; these tests need the answer a
    server gives while the body is still arriving, or has not arrived at all.
    """

    def __init__(self, service: Service, path: str, headers: Mapping[str, str] | None = None) -> None:
        host, port = service.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def chunk(self, data: bytes) -> None:
        self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end(self) -> None:
        self.sock.sendall(b"0\r\n\r\n")

    def status(self, timeout: float = 10) -> int | None:
        """The answer's status code, or None if none came within `timeout` (the server still reads)."""
        self.sock.settimeout(timeout)
        try:
            head = self.sock.recv(65536)
        except TimeoutError:
            return None
        return int(head.split(b" ", 2)[1]) if head else None

    def close(self) -> None:
        self.sock.close()
