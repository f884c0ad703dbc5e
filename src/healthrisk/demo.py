"""`healthrisk demo`: the whole loop on one machine, with the wall time of each stage."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    DEFAULT_DRIFT_THRESHOLD,
    ENV_MODEL_NAME,
    ENV_MODEL_VERSION,
    ENV_TRACKING_URI,
    INFERENCE_METRICS_PORT,
    INFERENCE_PORT,
    MLFLOW_PORT,
    REGISTERED_MODEL,
    TAG_VAL_AUC,
    TRAINING_EXPERIMENT,
)
from healthrisk.data.generator import generate, site_name
from healthrisk.data.window import DateWindow, WindowRule
from healthrisk.processes import (
    MLFLOW_SERVER_ENV,
    ProcessGroup,
    free_port,
    mlflow_server_argv,
    venv_bin,
    wait_for_http,
)
from healthrisk.schema import EXAMPLE_RECORD

TRAIN_WINDOW = DateWindow.parse("2024-01-01..2024-01-14")
NEW_DAYS = DateWindow.parse("2024-01-15..2024-01-21")
SMOKE_SITE = "hospital_01"
N_SITES = 3
# How the demo's retrain picks its window: the last 28 days up to the newest day every site
# has (the operator's example uses the same rule).
RETRAIN_WINDOW = WindowRule.parse("28d")

# A few people to score: the example record, a sedentary smoker-lung in smoke, a fever.
SAMPLE_RECORDS = {
    "typical adult": EXAMPLE_RECORD,
    "sedentary, heavy smoke": {**EXAMPLE_RECORD, "steps": 1500, "sleep_hours": 5, "pm25": 180, "pm10": 260},
    "fever, fast breathing": {
        **EXAMPLE_RECORD,
        "heart_rate": 112,
        "respiratory_rate": 26,
        "body_temp": 102.4,
    },
}


class Stages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.console.rule(f"[bold]{name}")
        started = time.monotonic()
        yield
        elapsed = time.monotonic() - started
        self.timings.append((name, elapsed))
        self.console.print(f"[dim]{name}: {elapsed:.1f} s[/]")

    def table(self) -> Table:
        table = Table(title="wall time by stage")
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for name, seconds in self.timings:
            table.add_row(name, f"{seconds:.1f}")
        table.add_row("[bold]total", f"[bold]{sum(s for _, s in self.timings):.1f}")
        return table


def _port(preferred: int) -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def _served_version(api_url: str) -> str:
    return str(_get(f"{api_url}/model")["version"])


def _wait_for_version(api_url: str, version: str, timeout: float) -> float:
    started = time.monotonic()
    while _served_version(api_url) != version:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the API still serves v{_served_version(api_url)} after {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def run_demo(state_dir: Path, *, rounds: int, wait: bool, console: Console) -> None:
    from healthrisk.workflows import run_training

    stages = Stages(console)
    data_root = state_dir / "data"
    with ProcessGroup(state_dir / "logs") as group:
        with stages.stage("1. generate data"):
            shutil.rmtree(data_root, ignore_errors=True)
            files = generate(data_root, n_sites=N_SITES, window=TRAIN_WINDOW, seed=42)
            console.print(f"{len(files)} daily files for {N_SITES} non-IID sites in {data_root}")

        with stages.stage("2. start MLflow"):
            mlflow_port = _port(MLFLOW_PORT)
            shutil.rmtree(state_dir / "mlflow", ignore_errors=True)
            (state_dir / "mlflow").mkdir(parents=True)
            mlflow_child = group.start(
                "mlflow",
                mlflow_server_argv(state_dir / "mlflow", "127.0.0.1", mlflow_port),
                env=MLFLOW_SERVER_ENV,
            )
            tracking_uri = f"http://127.0.0.1:{mlflow_port}"
            wait_for_http(f"{tracking_uri}/health", timeout=120, child=mlflow_child)
            console.print(f"MLflow at {tracking_uri}")

        with stages.stage(f"3. federated training ({rounds} rounds) and promotion"):
            run_training(
                data_root=data_root,
                sites=[site_name(i) for i in range(N_SITES)],
                window=TRAIN_WINDOW,
                tracking_uri=tracking_uri,
                rounds=rounds,
                model_name=REGISTERED_MODEL,
                work_dir=state_dir / "flower",
                promote_alias=CHAMPION_ALIAS,
                console=console,
            )

        with stages.stage("4. start the inference service"):
            api_port = _port(INFERENCE_PORT)
            metrics_port = _port(INFERENCE_METRICS_PORT)
            api = group.start(
                "inference",
                [
                    venv_bin("healthrisk"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(api_port),
                    "--metrics-port",
                    str(metrics_port),
                ],
                env={
                    ENV_TRACKING_URI: tracking_uri,
                    ENV_MODEL_NAME: REGISTERED_MODEL,
                    ENV_MODEL_VERSION: CHAMPION_ALIAS,
                },
            )
            api_url = f"http://127.0.0.1:{api_port}"
            wait_for_http(f"{api_url}/ready", timeout=120, child=api)
            console.print(
                f"inference API at {api_url}, its metrics at http://127.0.0.1:{metrics_port}/metrics"
            )

        with stages.stage("5. predictions"):
            table = Table(title=f"POST {api_url}/predict")
            for column in ("person", "risk_score", "risk_level", "model_version"):
                table.add_column(column)
            for person, record in SAMPLE_RECORDS.items():
                reply = _post(f"{api_url}/predict", dict(record))
                table.add_row(
                    person,
                    f"{reply['risk_score']:.3f}",
                    str(reply["risk_level"]),
                    str(reply["model_version"]),
                )
            console.print(table)

        with stages.stage(f"6. new data: wildfire smoke at {SMOKE_SITE}, drift check, retrain"):
            from mlflow import MlflowClient

            from healthrisk.data.generator import DriftSpec
            from healthrisk.data.loader import list_sites
            from healthrisk.drift import render
            from healthrisk.drift.policy import RetrainPolicy
            from healthrisk.drift.reference import serving_champion
            from healthrisk.drift.retrain import RetrainSkipped, Trigger
            from healthrisk.drift.workflows import (
                DEFAULT_CURRENT_DAYS,
                check_round,
                new_days_of,
                retrain_all_sites,
            )

            generate(
                data_root,
                n_sites=N_SITES,
                window=NEW_DAYS,
                seed=42,
                drifts=[DriftSpec("smoke", SMOKE_SITE, NEW_DAYS)],
            )
            console.print(
                f"wrote {NEW_DAYS} for every site; smoke injected at {SMOKE_SITE} only; each site's "
                f"new days are scored for the serving champion at the default threshold "
                f"{DEFAULT_DRIFT_THRESHOLD}"
            )
            before = _served_version(api_url)
            client = MlflowClient(tracking_uri)
            champion = serving_champion(client, REGISTERED_MODEL, CHAMPION_ALIAS)
            sites = list_sites(data_root)
            with render.checking(console) as on_site:
                drift = check_round(
                    data_root,
                    sites,
                    current=new_days_of(data_root, sites, champion, until=None, most=DEFAULT_CURRENT_DAYS),
                    champion=champion,
                    threshold=DEFAULT_DRIFT_THRESHOLD,
                    policy=RetrainPolicy.ANY,
                    report_dir=state_dir / "drift-reports",
                    client=client,
                    on_site=on_site,
                )
            for result in drift.results:
                render.print_summary(console, result)
            console.print(drift.reason, highlight=False, soft_wrap=True)
            if drift.trigger is not None:
                outcome = retrain_all_sites(
                    client,
                    tracking_uri=tracking_uri,
                    data_root=data_root,
                    trigger=Trigger.DRIFT,
                    rule=RETRAIN_WINDOW,
                    work_dir=state_dir / "flower",
                    drift_run_ids=drift.run_ids,
                    rounds=rounds,
                    registered_name=REGISTERED_MODEL,
                    alias=CHAMPION_ALIAS,
                    max_auc_drop=0.0,
                    console=console,
                )
                if isinstance(outcome, RetrainSkipped):
                    console.print(outcome.reason, highlight=False)
                else:
                    render.print_outcome(console, outcome)
            served = client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS)
            if served.version != before:
                waited = _wait_for_version(api_url, served.version, timeout=120)
                console.print(
                    f"the running API switched from v{before} to v{served.version} "
                    f"{waited:.1f} s after promotion, without a restart"
                )
            else:
                console.print(f"the API keeps serving v{before}: the champion did not change")
            reply = _post(f"{api_url}/predict", dict(SAMPLE_RECORDS["sedentary, heavy smoke"]))
            console.print(
                f"sedentary, heavy smoke → risk {reply['risk_score']:.3f} from v{reply['model_version']}"
            )

        console.print(stages.table())
        console.print(
            f"model [bold]{REGISTERED_MODEL}[/] v{served.version} is {CHAMPION_ALIAS} "
            f"(federated AUC {float(served.tags[TAG_VAL_AUC]):.4f}), served at {api_url}\n"
            f"MLflow UI: [bold]{tracking_uri}[/]  "
            f"(experiment {TRAINING_EXPERIMENT}, model {REGISTERED_MODEL})\n"
            f"API:       [bold]{api_url}/docs[/]  ·  curl -X POST {api_url}/predict "
            f"-H 'Content-Type: application/json' -d '{json.dumps(EXAMPLE_RECORD)}'"
        )
        if wait:
            console.print("[dim]MLflow and the API stay up; press Ctrl-C to stop them.[/]")
            try:
                while True:
                    group.check_alive()
                    time.sleep(1)
            except KeyboardInterrupt:
                console.print("stopping")
