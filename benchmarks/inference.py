"""Inference throughput and latency: this service against `mlflow models serve`, same model.

What runs (all on 127.0.0.1, everything stopped at the end):
  1. a throwaway `mlflow server` and one registered version fitted on generated data;
  2. `mlflow models serve --env-manager local` (its default: one uvicorn worker) and
     `healthrisk serve` (one process) on that exact version;
  3. one load generator (asyncio over raw keep-alive HTTP/1.1 sockets, so that the client
     costs far less than either server) drives both servers, phase by phase, with the
     same payloads and concurrency:
       - throughput, closed loop: CONCURRENCY connections, one record and batches of 100;
       - latency at moderate load, open loop: MODERATE_RATES requests/s of one record,
         each latency measured from its scheduled send time (no coordinated omission);
  4. server CPU time per request in each phase (from /proc: the figure that depends least
     on what else the machine runs), and resident memory of each server's process tree.
The ratio column is how many times better this service does (more requests/s, less CPU).

The last line is machine-readable:
  inference: throughput_ratio_vs_mlflow=<x> p50_ms=<a> p99_ms=<b> rss_mb=<m>
where the ratio is for one record at CONCURRENCY, p50/p99 are this service's at the
highest of MODERATE_RATES, and rss is this service's.

Run: .venv/bin/python benchmarks/inference.py   (~2 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from healthrisk.contracts import (
    ENV_MODEL_NAME,
    ENV_MODEL_SIGNING_KEY_FILE,
    ENV_MODEL_VERSION,
    ENV_TRACKING_URI,
    TAG_VAL_AUC,
)
from healthrisk.data.window import DateWindow
from healthrisk.processes import (
    MLFLOW_SERVER_ENV,
    ProcessGroup,
    free_port,
    mlflow_server_argv,
    venv_bin,
    wait_for_http,
)
from healthrisk.provenance import ensure_signing_key
from healthrisk.schema import EXAMPLE_RECORD, FEATURE_NAMES

HOST = "127.0.0.1"
MODEL_NAME = "health-risk-benchmark"
CONCURRENCY = 8
BATCH = 100
# Open-loop rates for latency at moderate load: one that both servers sustain, and the
# one the last line reports (a third of what one healthrisk process sustains here).
MODERATE_RATES = (100, 500)
SITES = ("hospital_01", "hospital_02", "hospital_03")
WINDOW = DateWindow.parse("2024-01-01..2024-01-05")


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    pid: int
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
    """Requests scheduled at a fixed rate for `seconds`; latency counts from the scheduled time.

    A server that cannot keep up falls behind schedule (its latencies grow) and gets fewer
    requests in the window than were scheduled; the achieved rate is reported.
    """
    pool = max(CONCURRENCY, int(rps * 0.02))  # enough connections for 20 ms of backlog
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.05
    deadline = start + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        connection = await Connection.open(port)
        try:
            for slot in range(offset, int(rps * seconds), pool):
                scheduled = start + slot / rps
                now = time.perf_counter()
                if now > deadline:
                    break
                if scheduled > now:
                    await asyncio.sleep(scheduled - now)
                if await connection.send(raw) != 200:
                    errors += 1
                latencies.append(time.perf_counter() - scheduled)
        finally:
            connection.close()

    await asyncio.gather(*(worker(i) for i in range(pool)))
    return Result(
        len(latencies), errors, max(time.perf_counter() - start, seconds), np.array(latencies) * 1000
    )


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_rss_mb(pid: int) -> float:
    total_kb = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process tree.

    Unlike throughput and latency, CPU per request hardly depends on what else the machine
    is running, so it is the fairest efficiency figure on a shared machine.
    """
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def register_model(tracking_uri: str, data_root: Path, signing_key: bytes) -> str:
    """One version, promoted (and so signed) by the platform's gate, as the service requires."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from healthrisk.data.generator import generate
    from healthrisk.data.loader import load_site
    from healthrisk.registry import build_pipeline, log_and_register, promote

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
            tags={TAG_VAL_AUC: "0.8"},
        )
    promote(mlflow.MlflowClient(tracking_uri), MODEL_NAME, str(version.version), signing_key=signing_key)
    return str(version.version)


def phases(seconds: float) -> list[tuple[str, str, Callable[[Target], Coroutine[Any, Any, Result]]]]:
    """(key, title, run) for each load phase, in the order they run."""
    return [
        ("single", "1 record, closed loop", lambda t: closed_loop(t.port, http_request(*t.single), seconds)),
        (
            "batch",
            f"batch of {BATCH}, closed loop",
            lambda t: closed_loop(t.port, http_request(*t.batch), seconds),
        ),
        *[
            (
                f"rate{rps}",
                f"1 record at {rps}/s",
                lambda t, rps=rps: open_loop(t.port, http_request(*t.single), rps, seconds),
            )
            for rps in MODERATE_RATES
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each load phase")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import uvloop

    uvloop.install()
    rows = records(BATCH)
    load_before = os.getloadavg()[0]
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
        key_file = state / "model-signing.key"
        version = register_model(tracking_uri, state / "data", ensure_signing_key(key_file))
        env = {ENV_TRACKING_URI: tracking_uri}
        # `mlflow models serve` execs `uvicorn` through the shell: the venv's scripts must be on PATH.
        path = f"{Path(venv_bin('uvicorn')).parent}{os.pathsep}{os.environ.get('PATH', '')}"

        log(f"starting mlflow models serve and healthrisk serve on {MODEL_NAME} v{version} ...")
        mlflow_serve = group.start(
            "mlflow-models-serve",
            [venv_bin("mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}/{version}",
             "--env-manager", "local", "--host", HOST, "--port", str(mlflow_serve_port)],
            env={**env, "PATH": path},
        )  # fmt: skip
        service = group.start(
            "healthrisk-serve",
            [venv_bin("healthrisk"), "serve", "--host", HOST, "--port", str(service_port)],
            env={
                **env,
                ENV_MODEL_NAME: MODEL_NAME,
                ENV_MODEL_VERSION: version,
                ENV_MODEL_SIGNING_KEY_FILE: str(key_file),
            },
        )
        wait_for_http(f"http://{HOST}:{mlflow_serve_port}/ping", timeout=120, child=mlflow_serve)
        wait_for_http(f"http://{HOST}:{service_port}/ready", timeout=120, child=service)

        anchor = Target(
            "mlflow models serve",
            mlflow_serve_port,
            mlflow_serve.pid,
            ("/invocations", json.dumps({"dataframe_records": rows[:1]}).encode()),
            ("/invocations", json.dumps({"dataframe_records": rows}).encode()),
        )
        ours = Target(
            "healthrisk serve",
            service_port,
            service.pid,
            ("/predict", json.dumps(rows[0]).encode()),
            ("/predict/batch", json.dumps({"records": rows}).encode()),
        )
        for target in (anchor, ours):
            asyncio.run(closed_loop(target.port, http_request(*target.single), 1.0))  # warm-up
        # Each phase runs on both servers back to back, so that a change in what else the
        # machine is doing affects both sides of a comparison alike.
        results: dict[tuple[str, str], Result] = {}
        cpu_ms: dict[tuple[str, str], float] = {}
        for key, title, run in phases(args.seconds):
            for target in (anchor, ours):
                log(f"  {title}: {target.name} ...")
                cpu_before = tree_cpu_seconds(target.pid)
                result = results[key, target.name] = asyncio.run(run(target))
                cpu_ms[key, target.name] = (
                    (tree_cpu_seconds(target.pid) - cpu_before) * 1000 / result.requests
                )
        rss = {target.name: tree_rss_mb(target.pid) for target in (anchor, ours)}

    print(
        f"model {MODEL_NAME} v{version}; {args.seconds:g} s a phase; closed loops: {CONCURRENCY} connections"
    )
    print("one uvicorn worker each; latencies in ms as seen by the client")
    # Other work on the machine skews every figure; say how busy it was.
    load_after = os.getloadavg()[0]
    cores = os.cpu_count()
    print(f"machine load average (1 min): {load_before:.1f} before, {load_after:.1f} after; {cores} cores")
    print(f"{'':34}{anchor.name:>22}{ours.name:>20}{'ratio':>8}")
    for key, title, _ in phases(args.seconds):
        a, b = results[key, anchor.name], results[key, ours.name]
        print(f"{title}")
        print(f"{'  requests/s':34}{a.rps:>22.0f}{b.rps:>20.0f}{b.rps / a.rps:>8.1f}")
        if key == "batch":
            print(f"{'  records/s':34}{a.rps * BATCH:>22.0f}{b.rps * BATCH:>20.0f}")
        a_cpu, b_cpu = cpu_ms[key, anchor.name], cpu_ms[key, ours.name]
        print(f"{'  server CPU ms per request':34}{a_cpu:>22.3f}{b_cpu:>20.3f}{a_cpu / b_cpu:>8.1f}")
        for q in (50, 99):
            print(f"{f'  p{q} ms':34}{a.percentile(q):>22.2f}{b.percentile(q):>20.2f}")
        if a.errors or b.errors:
            print(f"{'  errors':34}{a.errors:>22}{b.errors:>20}")
    print(f"{'resident memory MB (process tree)':34}{rss[anchor.name]:>22.0f}{rss[ours.name]:>20.0f}")

    single = results["single", ours.name].rps / results["single", anchor.name].rps
    moderate = results[f"rate{MODERATE_RATES[-1]}", ours.name]
    print(
        f"inference: throughput_ratio_vs_mlflow={single:.1f} p50_ms={moderate.percentile(50):.2f} "
        f"p99_ms={moderate.percentile(99):.2f} rss_mb={rss[ours.name]:.0f}"
    )


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    main()
