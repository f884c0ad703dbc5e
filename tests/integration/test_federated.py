"""Real `mlflow server`, a real SuperLink and one real SuperNode process per site."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    METRIC_TRAIN_LOSS,
    METRIC_VAL_AUC,
    PROMOTION_REJECTED,
    RECORD_COUNT,
    RECORD_NUM_EXAMPLES,
    RECORD_VAL_EXAMPLES,
    TAG_CHAMPION_VAL_AUC,
    TAG_CHAMPION_VERSION,
    TAG_CODE_VERSION,
    TAG_DATA_WINDOWS,
    TAG_LOCAL_RUN,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_ROUNDS,
    TAG_RUN_NUMBER,
    TAG_SITES,
    TAG_STRATEGY,
    TAG_VAL_AUC,
    VAL_METRICS,
    site_metric,
)
from healthrisk.federated.control import ControlClient, SuperLinkAddress
from healthrisk.federated.run_config import RunConfig
from healthrisk.federated.runner import TrainingRequest, local_federation, next_run_number, train_federated
from healthrisk.processes import descendants, free_port
from healthrisk.registry import promote
from tests.conftest import TRAIN_WINDOW

pytestmark = pytest.mark.integration
SITES = ["hospital_01", "hospital_02", "hospital_03"]


def _request(data_root: Path, tmp_path: Path, mlflow_uri: str, name: str, rounds: int = 2) -> TrainingRequest:
    return TrainingRequest(
        data_root=data_root,
        sites=SITES,
        window=TRAIN_WINDOW,
        tracking_uri=mlflow_uri,
        rounds=rounds,
        registered_name=name,
        work_dir=tmp_path / "flower",
        superlink_port=0,
    )


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> dict[str, object]:
    """One real 2-round federated run, shared by the assertions below."""
    name = "fed-it"
    seen_rounds: list[int] = []
    before = descendants(os.getpid())  # the session's mlflow server
    result = train_federated(
        _request(data_root, tmp_path_factory.mktemp("fed"), mlflow_uri, name),
        progress=lambda p: seen_rounds.append(p.round),
    )
    flower = {pid for pid in descendants(os.getpid()) - before if _is_flower(pid)}
    return {"name": name, "result": result, "rounds": seen_rounds, "leftovers": flower}


def _is_flower(pid: int) -> bool:
    """A Flower process, alive or zombie (a zombie keeps its comm, not its cmdline).

    Only Flower's: the session's MLflow server may legitimately replace a worker meanwhile.
    """
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return comm.startswith(("flwr", "flower")) or "flwr" in cmdline or "flower" in cmdline


def test_run_registers_a_version_with_provenance_tags(trained: dict[str, object]) -> None:
    result = trained["result"]
    client = mlflow.MlflowClient()
    version = client.get_model_version(str(trained["name"]), result.version)  # type: ignore[attr-defined]
    tags = version.tags
    assert tags[TAG_LOCAL_RUN] == result.local_run_id  # type: ignore[attr-defined]
    assert tags[TAG_RUN_NUMBER] == "1"
    assert tags[TAG_SITES] == ",".join(SITES)
    assert json.loads(tags[TAG_DATA_WINDOWS]) == {s: str(TRAIN_WINDOW) for s in SITES}
    assert tags[TAG_ROUNDS] == "2"
    assert tags[TAG_STRATEGY] == "FedAvg"
    assert tags[TAG_CODE_VERSION]
    assert 0.75 < float(tags[TAG_VAL_AUC]) <= 1.0
    assert float(tags[TAG_VAL_AUC]) == pytest.approx(result.metrics["auc"], abs=1e-6)  # type: ignore[attr-defined]
    # the logged model loads and scores the schema's columns
    model = mlflow.sklearn.load_model(f"models:/{trained['name']}/{result.version}")  # type: ignore[attr-defined]
    assert list(model.feature_names_in_) == list(model.named_steps["scaler"].feature_names_in_)
    info = mlflow.models.get_model_info(f"models:/{trained['name']}/{result.version}")  # type: ignore[attr-defined]
    assert info.signature is not None and len(info.signature.inputs.inputs) == 11


def test_metrics_are_logged_per_round_and_not_per_site_by_default(trained: dict[str, object]) -> None:
    result = trained["result"]
    client = mlflow.MlflowClient()
    run_id = result.mlflow_run_id  # type: ignore[attr-defined]
    auc_steps = sorted(m.step for m in client.get_metric_history(run_id, METRIC_VAL_AUC))
    assert auc_steps == [0, 1, 2]  # step 0 evaluates the initial all-zero model
    assert client.get_metric_history(run_id, METRIC_VAL_AUC)[0].value == pytest.approx(0.5)
    assert sorted(m.step for m in client.get_metric_history(run_id, METRIC_TRAIN_LOSS)) == [1, 2]
    # Per-site metrics only on request (privacy.perSiteMetrics; tests/integration/test_federation_privacy.py)
    logged = client.get_run(run_id).data.metrics
    assert not [name for name in logged if any(name == site_metric(s, name.split(".")[-1]) for s in SITES)]
    assert trained["rounds"][-1] == 2  # progress was reported up to the last round


def test_only_parameters_and_aggregates_reach_the_server(trained: dict[str, object]) -> None:
    result = trained["result"]
    audit_path = mlflow.artifacts.download_artifacts(
        run_id=result.mlflow_run_id,  # type: ignore[attr-defined]
        artifact_path="federation_audit.json",
    )
    replies = json.loads(Path(audit_path).read_text())["replies"]
    assert len(replies) == 3 + 3 * 2 + 3  # stats, 2 train rounds, final evaluation
    allowed_metrics = {
        RECORD_COUNT,
        RECORD_NUM_EXAMPLES,
        RECORD_VAL_EXAMPLES,
        METRIC_TRAIN_LOSS,
        *VAL_METRICS,
    }
    expected_arrays = {"query.stats": [[11], [11]], "train": [[11], [1]]}
    for reply in replies:
        assert "error" not in reply
        for key, record in reply["records"].items():
            if record["kind"] == "arrays":
                assert record["shapes"] == expected_arrays[reply["type"]], reply
            elif record["kind"] == "metrics":
                assert set(record["names"]) <= allowed_metrics, reply
            else:
                assert (key, record["names"]) == ("site", ["site"]), reply


def test_no_process_outlives_the_run(trained: dict[str, object]) -> None:
    assert trained["leftovers"] == set()


def test_promotion_compares_like_with_like_and_refuses_a_worse_model(
    trained: dict[str, object], data_root: Path, tmp_path: Path, mlflow_uri: str, signing_key: bytes
) -> None:
    name = str(trained["name"])
    client = mlflow.MlflowClient()
    good = trained["result"].version  # type: ignore[attr-defined]
    first = promote(client, name, good, signing_key=signing_key)
    assert first.promoted and "no champion yet" in first.reason
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == good

    # The same data with FedProx at the CRD's largest proximalMu: every local step is pulled
    # back to the global model, so the model is under-trained (benchmarks/promotion_gate.py:
    # worse in every seed). Its final evaluate carries the champion: both on the same rows.
    request = replace(_request(data_root, tmp_path, mlflow_uri, name), strategy="FedProx", proximal_mu=10.0)
    worse = train_federated(request)
    tags = client.get_model_version(name, worse.version).tags
    assert tags[TAG_CHAMPION_VERSION] == good
    champion_auc = float(tags[TAG_CHAMPION_VAL_AUC])
    assert float(tags[TAG_VAL_AUC]) < champion_auc
    decision = promote(client, name, worse.version, signing_key=signing_key)
    assert not decision.promoted and decision.champion_auc == pytest.approx(champion_auc)
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == good
    tags = client.get_model_version(name, worse.version).tags
    assert tags[TAG_PROMOTION] == PROMOTION_REJECTED
    reason = tags[TAG_PROMOTION_REASON]
    assert "<" in reason and f"v{good}" in reason and "on the same validation rows" in reason
    # The champion's AUC is measured on the new run's rows: the first run's rows are the same
    # here (same window), and the champion scores on them what its own run measured.
    assert champion_auc == pytest.approx(
        float(client.get_model_version(name, good).tags[TAG_VAL_AUC]), abs=1e-6
    )
    # within the allowed drop, the same model is promoted
    assert promote(client, name, worse.version, signing_key=signing_key, max_auc_drop=1.0).promoted


def test_flowers_stock_supernode_trains_the_same_model(
    trained: dict[str, object], data_root: Path, tmp_path: Path, mlflow_uri: str
) -> None:
    """`healthrisk-supernode` (resident ClientApp) is a faster way to run the same ClientApp:
    Flower's own `flower-supernode`, a process per message, gives the same model."""
    request = replace(_request(data_root, tmp_path, mlflow_uri, "fed-it-stock"), stock_supernode=True)
    stock = train_federated(request)
    resident = trained["result"]
    assert stock.metrics == pytest.approx(resident.metrics, abs=1e-9)  # type: ignore[attr-defined]
    stock_model = mlflow.sklearn.load_model(f"models:/fed-it-stock/{stock.version}")
    resident_model = mlflow.sklearn.load_model(f"models:/{trained['name']}/{resident.version}")  # type: ignore[attr-defined]
    assert stock_model[-1].coef_ == pytest.approx(resident_model[-1].coef_, abs=1e-9)


def test_a_version_never_compared_with_the_serving_champion_is_not_promoted(
    trained: dict[str, object], data_root: Path, tmp_path: Path, mlflow_uri: str, signing_key: bytes
) -> None:
    name = f"{trained['name']}-uncompared"
    client = mlflow.MlflowClient()
    first = train_federated(_request(data_root, tmp_path / "a", mlflow_uri, name, rounds=1))
    second = train_federated(_request(data_root, tmp_path / "b", mlflow_uri, name, rounds=1))
    assert promote(client, name, first.version, signing_key=signing_key).promoted
    # `second` was trained while there was no champion: nothing to compare like with like
    decision = promote(client, name, second.version, signing_key=signing_key)
    assert not decision.promoted and "not compared with champion" in decision.reason


def test_the_in_process_replica_computes_what_a_real_run_registers(
    trained: dict[str, object], data_root: Path
) -> None:
    """benchmarks/ rely on healthrisk.federated.inprocess giving a real run's numbers."""
    from healthrisk.data.loader import load_site
    from healthrisk.federated.inprocess import train_in_process
    from healthrisk.federated.model import ServedModel

    pipeline = mlflow.sklearn.load_model(f"models:/{trained['name']}/{trained['result'].version}")  # type: ignore[attr-defined]
    registered = ServedModel.from_pipeline(pipeline)
    replica = train_in_process({s: load_site(data_root, s, TRAIN_WINDOW) for s in SITES}, rounds=2)
    for field in ("mean", "scale", "coef", "intercept"):
        assert getattr(replica, field) == pytest.approx(getattr(registered, field), rel=1e-9, abs=1e-12)


def test_cli_refuses_a_malformed_file_before_starting_anything(
    data_root: Path, tmp_path: Path, mlflow_uri: str
) -> None:
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    bad = root / "hospital_02" / "2024-01-04.parquet"
    pq.write_table(pq.read_table(bad).drop(["pm10"]), bad)
    completed = subprocess.run(
        [sys.executable, "-m", "healthrisk", "train", "--data-root", str(root),
         "--window", str(TRAIN_WINDOW), "--rounds", "1", "--tracking-uri", mlflow_uri,
         "--superlink-port", "0", "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 2
    assert str(bad) in completed.stderr.replace("\n", "") and "'pm10'" in completed.stderr


def test_ctrl_c_stops_every_process_the_cli_started(data_root: Path, tmp_path: Path, mlflow_uri: str) -> None:
    # More rounds than any machine finishes before the interrupt: resident SuperNodes take
    # well under a second a round, and 50 rounds once ended before it on a quiet machine.
    stderr = tmp_path / "cli.err"
    with stderr.open("w") as sink:
        cli = subprocess.Popen(
            [sys.executable, "-m", "healthrisk", "train", "--data-root", str(data_root),
             "--window", str(TRAIN_WINDOW), "--rounds", "1000", "--tracking-uri", mlflow_uri,
             "--superlink-port", "0", "--work-dir", str(tmp_path / "w"), "--model-name", "interrupted"],
            stdout=subprocess.DEVNULL, stderr=sink,
            # as from a terminal: a suite started in the background by a non-interactive
            # shell (CI may be) inherits SIGINT ignored, and Python then keeps ignoring it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
    tree: set[int] = set()
    deadline = time.monotonic() + 120
    # the SuperLink, its SuperExec, 3 SuperNodes and, once the run is sent, the ServerApp
    while time.monotonic() < deadline and len(tree) < 6:
        tree |= descendants(cli.pid)
        time.sleep(0.5)
    assert len(tree) >= 6, "the CLI did not start the SuperLink, SuperNodes and ServerApp"
    tree |= descendants(cli.pid)
    assert cli.poll() is None, "the run ended before the interrupt"
    cli.send_signal(signal.SIGINT)
    try:
        assert cli.wait(timeout=60) != 0
    except subprocess.TimeoutExpired:
        # a CLI that ignored the interrupt must not train on into the next tests
        for pid in {cli.pid} | descendants(cli.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the CLI still runs 60 s after SIGINT; its stderr ends:\n{stderr.read_text()[-3000:]}")
    time.sleep(0.5)
    survivors = {pid for pid in tree if Path(f"/proc/{pid}").exists()}
    assert survivors == set(), f"processes left behind: {survivors}"


@contextlib.contextmanager
def forwarding(port: int, target: str) -> Iterator[None]:
    """Listen on 127.0.0.1:`port` from now on and pass each connection to `target` (host:port)
    byte for byte: a SuperLink that starts answering on that port only now."""
    host, target_port = target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", port))

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection((host, int(target_port)))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield
    finally:
        listener.close()


def _submit_argv(address: SuperLinkAddress, superlink: str, config: RunConfig) -> list[str]:
    """`healthrisk train submit` as the operator's submit pod runs it."""
    tls = ["--root-certificates", str(address.root_certificates)]
    if address.client_certificate is not None:
        cert, key = address.client_certificate
        tls += ["--client-certificate", str(cert), "--client-key", str(key)]
    return [sys.executable, "-m", "healthrisk", "train", "submit", "--superlink", superlink, *tls,
            "--run-config-json", json.dumps(config.to_flower())]  # fmt: skip


def test_a_submit_started_before_the_superlink_answers_waits_for_it(
    data_root: Path, tmp_path: Path, mlflow_uri: str
) -> None:
    """The operator submits once the SuperLink pod is Ready, when its Control API, or the
    Service in front of it, may still refuse connections for a moment."""
    request = _request(data_root, tmp_path, mlflow_uri, "fed-it-late-superlink", rounds=1)
    with local_federation(request) as federation:
        config = request.run_config(next_run_number(mlflow_uri, request.registered_name))
        late = free_port()
        stderr = tmp_path / "submit.err"
        with stderr.open("w") as sink:
            submit = subprocess.Popen(
                _submit_argv(federation.address, f"127.0.0.1:{late}", config),
                stdout=subprocess.PIPE, stderr=sink, text=True,
            )  # fmt: skip
        refused = "the SuperLink did not answer (ConnectError); retrying"
        # nothing listens on `late` until the submit has been refused at least once
        deadline = time.monotonic() + 120
        while refused not in stderr.read_text() and submit.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        with forwarding(late, federation.address.address):
            out, _ = submit.communicate(timeout=300)
        with ControlClient(federation.address) as control:
            runs = control.runs()
    err = stderr.read_text()
    assert submit.returncode == 0, err
    assert refused in err
    assert len(runs) == 1 and json.loads(out.strip().splitlines()[-1])["succeeded"] is True, (runs, out)


def test_a_retried_submit_follows_the_run_already_sent_instead_of_training_twice(
    data_root: Path, tmp_path: Path, mlflow_uri: str
) -> None:
    """`healthrisk train submit` is the operator's submit pod. A retried pod (the first one
    failed after it had sent its run) finds that run on the run's SuperLink and follows it."""
    request = _request(data_root, tmp_path, mlflow_uri, "fed-it-resubmit", rounds=1)
    with local_federation(request) as federation:
        address = federation.address
        config = request.run_config(next_run_number(mlflow_uri, request.registered_name))
        with ControlClient(address) as control:
            first = control.submit(config)
        retried = subprocess.run(
            _submit_argv(address, address.address, config),
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        with ControlClient(address) as control:
            runs = control.runs()
    assert retried.returncode == 0, retried.stderr
    assert f"following Flower run {first}" in retried.stderr
    assert list(runs) == [first] and runs[first].succeeded, runs
    assert json.loads(retried.stdout.strip().splitlines()[-1])["succeeded"] is True
