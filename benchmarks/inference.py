"""Inference throughput and latency: this service against `mlflow models serve`, same model.

What runs (all on 127.0.0.1, everything stopped at the end):
  1. a throwaway `mlflow server` and one registered version fitted on generated data;
  2. `mlflow models serve --env-manager local` (its default: one uvicorn worker) and
     `healthrisk serve` (one process) on that exact version;
  3. one load generator (asyncio over raw keep-alive HTTP/1.1 sockets, so that the client
     costs far less than either server) drives each server in turn with the same
     payloads and concurrency:
       - throughput, closed loop: CONCURRENCY connections, one record and batches of 100;
       - latency at moderate load, open loop: MODERATE_RPS requests/s of one record,
         each latency measured from its scheduled send time (no coordinated omission).
  4. resident memory of each server's process tree after the load.

The last line is machine-readable:
  inference: throughput_ratio_vs_mlflow=<x> p50_ms=<a> p99_ms=<b> rss_mb=<m>
where the ratio is for one record at CONCURRENCY, and p50/p99/rss are this service's.

Run: .venv/bin/python benchmarks/inference.py   (~2 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from healthrisk.data.window import DateWindow
from healthrisk.processes import (
    MLFLOW_SERVER_ENV,
    ProcessGroup,
    free_port,
    mlflow_server_argv,
    venv_bin,
    wait_for_http,
)
from healthrisk.schema import EXAMPLE_RECORD, FEATURE_NAMES

HOST = "127.0.0.1"
MODEL_NAME = "health-risk-benchmark"
CONCURRENCY = 8
BATCH = 100
MODERATE_RPS = 500
SITES = ("hospital_01", "hospital_02", "hospital_03")
WINDOW = DateWindow.parse("2024-01-01..2024-01-05")


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    single: tuple[str, bytes]  # (path, body) for one record
    batch: tuple[str, bytes]  # (path, body) for BATCH records


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")


def records(n: int) -> list[dict[str, float]]:
    """Varied, valid records around the example (so no server can cache one answer)."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        jitter = rng.uniform(0.9, 1.1, len(FEATURE_NAMES))
        out.append(
            {name: round(EXAMPLE_RECORD[name] * j, 4) for name, j in zip(FEATURE_NAMES, jitter, strict=True)}
        )
    return out


def http_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """A keep-alive HTTP/1.1 connection that sends a prepared request and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection(HOST, port))

    async def send(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked responses are not expected from either server")
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def closed_loop(port: int, raw: bytes, seconds: float) -> Result:
    """CONCURRENCY connections, each sending its next request as soon as the last returns."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        connection = await Connection.open(port)
        try:
            while (started := time.perf_counter()) < deadline:
                if await connection.send(raw) != 200:
                    errors += 1
                latencies.append(time.perf_counter() - started)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    return Result(len(latencies), errors, elapsed, np.array(latencies) * 1000)


async def open_loop(port: int, raw: bytes, rps: float, seconds: float) -> Result:
    """Requests scheduled at a fixed rate; latency counts from the scheduled time."""
    pool = max(CONCURRENCY, int(rps * 0.02))  # enough connections for 20 ms of backlog
    total = int(rps * seconds)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.05

    async def worker(offset: int) -> None:
        nonlocal errors
        connection = await Connection.open(port)
        try:
            for slot in range(offset, total, pool):
                scheduled = start + slot / rps
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if await connection.send(raw) != 200:
                    errors += 1
                latencies.append(time.perf_counter() - scheduled)
        finally:
            connection.close()

    await asyncio.gather(*(worker(i) for i in range(pool)))
    return Result(len(latencies), errors, time.perf_counter() - start, np.array(latencies) * 1000)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
        todo.extend(children.get(current, []))
    return total_kb / 1024


def register_model(tracking_uri: str, data_root: Path) -> str:
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from healthrisk.data.generator import generate
    from healthrisk.data.loader import load_site
    from healthrisk.registry import build_pipeline, log_and_register

    generate(data_root, n_sites=len(SITES), window=WINDOW, seed=42)
    parts = [load_site(data_root, site, WINDOW) for site in SITES]
    x = np.vstack([p.features for p in parts])
    y = np.concatenate([p.labels for p in parts if p.labels is not None])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    fitted = LogisticRegression(max_iter=500).fit((x - mean) / scale, y)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("benchmark")
    with mlflow.start_run():
        version = log_and_register(
            build_pipeline(mean, scale, fitted.coef_[0], float(fitted.intercept_[0])),
            registered_name=MODEL_NAME,
            tags={},
        )
    return str(version.version)


def measure(
    target: Target, pid: int, seconds: float, log: Callable[[str], None]
) -> dict[str, Result | float]:
    single, batch = http_request(*target.single), http_request(*target.batch)
    asyncio.run(closed_loop(target.port, single, 1.0))  # warm-up: imports, JIT-free caches, sockets
    results: dict[str, Result | float] = {}
    for label, coroutine in (
        ("single", closed_loop(target.port, single, seconds)),
        ("batch", closed_loop(target.port, batch, seconds)),
        ("moderate", open_loop(target.port, single, MODERATE_RPS, seconds)),
    ):
        log(f"  {target.name}: {label} ...")
        results[label] = asyncio.run(coroutine)
    results["rss_mb"] = tree_rss_mb(pid)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each load phase")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import uvloop

    uvloop.install()
    rows = records(BATCH)
    with (
        tempfile.TemporaryDirectory(prefix="healthrisk-bench-") as tmp,
        ProcessGroup(Path(tmp) / "logs") as group,
    ):
        state = Path(tmp)
        mlflow_port, mlflow_serve_port, service_port = free_port(), free_port(), free_port()
        tracking_uri = f"http://{HOST}:{mlflow_port}"
        log("starting mlflow server and registering a model version ...")
        server = group.start(
            "mlflow-server", mlflow_server_argv(state / "mlflow", HOST, mlflow_port), env=MLFLOW_SERVER_ENV
        )
        wait_for_http(f"{tracking_uri}/health", timeout=90, child=server)
        version = register_model(tracking_uri, state / "data")
        env = {"MLFLOW_TRACKING_URI": tracking_uri}

        log(f"starting mlflow models serve and healthrisk serve on {MODEL_NAME} v{version} ...")
        mlflow_serve = group.start(
            "mlflow-models-serve",
            [venv_bin("mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}/{version}",
             "--env-manager", "local", "--host", HOST, "--port", str(mlflow_serve_port)],
            # It execs `uvicorn` through the shell, so the venv's scripts must be on PATH.
            env={**env, "PATH": f"{Path(venv_bin('uvicorn')).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        )  # fmt: skip
        service = group.start(
            "healthrisk-serve",
            [venv_bin("healthrisk"), "serve", "--host", HOST, "--port", str(service_port)],
            env={**env, "MODEL_NAME": MODEL_NAME, "MODEL_VERSION": version},
        )
        wait_for_http(f"http://{HOST}:{mlflow_serve_port}/ping", timeout=120, child=mlflow_serve)
        wait_for_http(f"http://{HOST}:{service_port}/ready", timeout=120, child=service)

        targets = [
            (
                Target(
                    "mlflow models serve",
                    mlflow_serve_port,
                    ("/invocations", json.dumps({"dataframe_records": rows[:1]}).encode()),
                    ("/invocations", json.dumps({"dataframe_records": rows}).encode()),
                ),
                mlflow_serve.pid,
            ),
            (
                Target(
                    "healthrisk serve",
                    service_port,
                    ("/predict", json.dumps(rows[0]).encode()),
                    ("/predict/batch", json.dumps({"records": rows}).encode()),
                ),
                service.pid,
            ),
        ]
        results = {target.name: measure(target, pid, args.seconds, log) for target, pid in targets}

    anchor, ours = results["mlflow models serve"], results["healthrisk serve"]
    print(
        f"model {MODEL_NAME} v{version}; concurrency {CONCURRENCY}; {args.seconds:g} s a phase; one worker each"
    )
    print(f"{'':34}{'mlflow models serve':>22}{'healthrisk serve':>20}{'ratio':>8}")
    for label, title in (("single", "1 record"), ("batch", f"batch of {BATCH}")):
        a, b = anchor[label], ours[label]
        assert isinstance(a, Result) and isinstance(b, Result)
        print(f"{title + ' requests/s':34}{a.rps:>22.0f}{b.rps:>20.0f}{b.rps / a.rps:>8.1f}")
        print(f"{title + ' records/s':34}{a.rps * (BATCH if label == 'batch' else 1):>22.0f}"
              f"{b.rps * (BATCH if label == 'batch' else 1):>20.0f}")  # fmt: skip
        for q in (50, 99):
            print(f"{title + f' p{q} ms':34}{a.percentile(q):>22.2f}{b.percentile(q):>20.2f}")
        print(f"{title + ' errors':34}{a.errors:>22}{b.errors:>20}")
    a_mod, b_mod = anchor["moderate"], ours["moderate"]
    assert isinstance(a_mod, Result) and isinstance(b_mod, Result)
    title = f"1 record at {MODERATE_RPS}/s"
    print(f"{title + ' achieved/s':34}{a_mod.rps:>22.0f}{b_mod.rps:>20.0f}")
    for q in (50, 99):
        print(f"{title + f' p{q} ms':34}{a_mod.percentile(q):>22.2f}{b_mod.percentile(q):>20.2f}")
    print(f"{title + ' errors':34}{a_mod.errors:>22}{b_mod.errors:>20}")
    print(f"{'resident memory MB (process tree)':34}{anchor['rss_mb']:>22.0f}{ours['rss_mb']:>20.0f}")

    a_single, b_single = anchor["single"], ours["single"]
    assert isinstance(a_single, Result) and isinstance(b_single, Result)
    print(
        f"inference: throughput_ratio_vs_mlflow={b_single.rps / a_single.rps:.1f} "
        f"p50_ms={b_mod.percentile(50):.2f} p99_ms={b_mod.percentile(99):.2f} rss_mb={ours['rss_mb']:.0f}"
    )


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    main()
