"""The embedded federation's security and privacy, with a real SuperLink, real SuperNodes
and a real `mlflow server` (issue 13). Every claim is checked against what actually
passed through the SuperLink (the capture of its database, tests/privacy_check.py), not
against what the ServerApp says about itself.

Three runs, each shared by the tests below it:
* `guarded` — plain aggregation over TLS with SuperNode authentication; a site with too
  little data declines; two impostor SuperNodes try to join; per-site metrics on request.
  It is also the negative control of the capture check: in clear, the sites' numbers show.
* `private` — differential privacy: the (ε, δ) the run reports.
* `secured` — secure aggregation: nothing of any single site reaches the SuperLink.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest

from healthrisk.contracts import (
    METRIC_DP_EPSILON,
    METRIC_VAL_AUC,
    TAG_DECLINED_SITES,
    TAG_DP_DELTA,
    TAG_DP_EPSILON,
    TAG_DP_MECHANISM,
    TAG_SECURE_AGGREGATION,
    TAG_SITES,
    site_metric,
)
from healthrisk.federated import capture, registrar
from healthrisk.federated.client_app import Split, load_split
from healthrisk.federated.control import ControlClient
from healthrisk.federated.pki import site_key_pair
from healthrisk.federated.runner import (
    FLOWER_ENV,
    TrainingRequest,
    TrainingResult,
    local_federation,
    next_run_number,
    supernode_argv,
    train_federated,
)
from healthrisk.federated.stats import FeatureStats
from healthrisk.processes import Child, ProcessGroup, free_port
from tests.conftest import TRAIN_WINDOW
from tests.privacy_check import Findings, check

pytestmark = pytest.mark.integration
SITES = ["hospital_01", "hospital_02", "hospital_03"]
SMALL_SITE = "hospital_03"  # keeps one day of data: fewer validation rows than minRows


@dataclass
class Run:
    request: TrainingRequest
    result: TrainingResult
    findings: Findings
    splits: dict[str, Split]

    @property
    def tags(self) -> dict[str, str]:
        return dict(mlflow.MlflowClient().get_run(self.result.mlflow_run_id).data.tags)

    def metric_history(self, name: str) -> list[tuple[int, float]]:
        history = mlflow.MlflowClient().get_metric_history(self.result.mlflow_run_id, name)
        return sorted((m.step, m.value) for m in history)


def _request(root: Path, work: Path, uri: str, name: str, **options: object) -> TrainingRequest:
    return TrainingRequest(
        data_root=root,
        sites=SITES,
        window=TRAIN_WINDOW,
        tracking_uri=uri,
        rounds=2,
        registered_name=name,
        work_dir=work,
        superlink_port=0,
        capture_messages=True,
        **options,  # type: ignore[arg-type]
    )


def _splits(root: Path) -> dict[str, Split]:
    return {site: load_split(root, site, TRAIN_WINDOW) for site in SITES}


def _findings(request: TrainingRequest, splits: dict[str, Split]) -> Findings:
    database = request.work_dir.resolve() / request.local_run_id / "superlink.db"
    messages = capture.messages(capture.read_database(database))
    return check(messages, splits, request.run_config(1))


# ---- guarded: TLS, SuperNode authentication, minRows, per-site metrics -----------------


@dataclass
class Impostor:
    child: Child
    log: str


@pytest.fixture(scope="module")
def guarded(
    data_root: Path, tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str
) -> Iterator[tuple[Run, dict[str, Impostor], list[str]]]:
    tmp = tmp_path_factory.mktemp("guarded")
    root = tmp / "data"
    shutil.copytree(data_root, root)
    for day in sorted((root / SMALL_SITE).iterdir())[1:]:
        day.unlink()
    request = _request(root, tmp / "flower", mlflow_uri, "guarded", min_sites=2, per_site_metrics=True)
    impostors: dict[str, Impostor] = {}
    with local_federation(request) as federation, ProcessGroup(tmp / "impostors") as group:
        key = tmp / "impostor.key"
        key.write_bytes(site_key_pair().private_openssh)
        key.chmod(0o600)
        # Both claim a real site's name; one brings a key nobody registered, one none.
        for name, private_key in (("unregistered-key", key), ("no-key", None)):
            argv = supernode_argv(
                federation.address.address,
                free_port(),
                "hospital_01",
                root,
                root_certificates=federation.address.root_certificates,
                private_key=private_key,
            )
            env = FLOWER_ENV | {"FLWR_HOME": str(tmp / name)}
            impostors[name] = Impostor(group.start(name, argv, env=env), "")
        deadline = time.monotonic() + 120
        while any(i.child.alive() for i in impostors.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for impostor in impostors.values():
            impostor.log = impostor.child.log_path.read_text(errors="replace")
        with ControlClient(federation.address) as control:
            nodes = [f"{n.name}:{n.status}" for n in control.nodes()]
        config = request.run_config(next_run_number(mlflow_uri, request.registered_name))
        result = federation.train(config)
    splits = _splits(root)
    yield Run(request, result, _findings(request, splits), splits), impostors, nodes


def test_the_federation_runs_over_tls(guarded: tuple[Run, dict[str, Impostor], list[str]]) -> None:
    run, _, _ = guarded
    log = (run.request.work_dir.resolve() / run.request.local_run_id / "logs" / "superlink.log").read_text()
    assert "Uvicorn running on https://127.0.0.1:" in log
    assert "--insecure" not in log


def test_only_registered_supernodes_join(guarded: tuple[Run, dict[str, Impostor], list[str]]) -> None:
    run, impostors, nodes = guarded
    # Each site's key was registered under its name before its SuperNode started.
    assert sorted(nodes) == [f"{site}:online" for site in SITES]
    for name, impostor in impostors.items():
        assert impostor.child.popen.returncode not in (None, 0), f"{name} was not refused"
    assert "Failed to activate SuperNode" in impostors["unregistered-key"].log
    assert "All SuperNodes must be registered" in impostors["no-key"].log
    # ... and the run trained without them.
    assert run.result.version


def test_a_site_with_too_few_rows_declines_with_the_reason(
    guarded: tuple[Run, dict[str, Impostor], list[str]],
) -> None:
    run, _, _ = guarded
    tags = run.tags
    declined = json.loads(tags[TAG_DECLINED_SITES])
    assert declined == {SMALL_SITE: "declines query.stats: fewer than minRows=100 rows in its window"}
    assert tags[TAG_SITES] == "hospital_01,hospital_02"


def test_per_site_metrics_only_of_sites_that_answered(
    guarded: tuple[Run, dict[str, Impostor], list[str]],
) -> None:
    run, _, _ = guarded
    metrics = mlflow.MlflowClient().get_run(run.result.mlflow_run_id).data.metrics
    per_site = {name.split(".")[1] for name in metrics if name.startswith("site.")}
    assert per_site == {"hospital_01", "hospital_02"}
    assert run.metric_history(site_metric("hospital_01", METRIC_VAL_AUC))[-1][0] == 2


def test_in_clear_the_sites_numbers_reach_the_superlink(
    guarded: tuple[Run, dict[str, Impostor], list[str]],
) -> None:
    """The negative control of the capture check: without secure aggregation it finds
    each answering site's statistics and local models, so its silence elsewhere counts."""
    findings = guarded[0].findings
    leaked = {leak.split(":")[0] for leak in findings.leaks}
    assert leaked == {"hospital_01", "hospital_02"}
    assert any("locally trained model of round 2" in leak for leak in findings.leaks)
    assert findings.recomputed_updates == 2 * 2  # two sites, two rounds
    assert findings.arrays_in_clear > 0


# ---- private: differential privacy ---------------------------------------------------


@pytest.fixture(scope="module")
def private(data_root: Path, tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> Run:
    request = _request(
        data_root,
        tmp_path_factory.mktemp("private") / "flower",
        mlflow_uri,
        "private",
        dp_noise_multiplier=1.0,
    )
    result = train_federated(request)
    return Run(request, result, Findings(), {})


def _expected_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Google's dp_accounting directly: every site's update released each round, no sampling."""
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


def test_differential_privacy_reports_the_budget_it_spent(private: Run) -> None:
    tags = private.tags
    expected = _expected_epsilon(1.0, 2, 1e-5)
    assert float(tags[TAG_DP_EPSILON]) == pytest.approx(expected, rel=1e-4)
    assert float(tags[TAG_DP_DELTA]) == 1e-5
    assert "server-side clipping to norm 1.0" in tags[TAG_DP_MECHANISM]
    version = mlflow.MlflowClient().get_model_version("private", private.result.version)
    assert version.tags[TAG_DP_EPSILON] == tags[TAG_DP_EPSILON]
    epsilons = private.metric_history(METRIC_DP_EPSILON)
    assert [step for step, _ in epsilons] == [1, 2]
    assert epsilons[0][1] < epsilons[1][1] == pytest.approx(expected, rel=1e-4)


# ---- secured: secure aggregation -----------------------------------------------------


@pytest.fixture(scope="module")
def secured(data_root: Path, tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> Run:
    request = _request(
        data_root,
        tmp_path_factory.mktemp("secured") / "flower",
        mlflow_uri,
        "secured",
        secure_aggregation=True,
    )
    result = train_federated(request)
    splits = _splits(data_root)
    return Run(request, result, _findings(request, splits), splits)


def test_secure_aggregation_lets_no_site_vector_reach_the_superlink(secured: Run) -> None:
    findings = secured.findings
    assert findings.replies == 3 * 4 * 4  # 4 secure sums (stats, 2 rounds, evaluation) x 4 stages
    assert findings.recomputed_updates == 3 * 2  # the check knew each site's local models
    assert findings.leaks == []
    assert findings.arrays_in_clear == 0


def test_secure_aggregation_still_computes_the_pooled_model(secured: Run) -> None:
    tags = secured.tags
    assert tags[TAG_SECURE_AGGREGATION] == "true"
    assert tags[TAG_SITES] == ",".join(SITES)
    model = mlflow.sklearn.load_model(f"models:/secured/{secured.result.version}")
    exact = FeatureStats.merge(FeatureStats.of(s.x_train) for s in secured.splits.values())
    mean, scale = exact.mean_and_scale()
    # Exact but for SecAgg+'s quantisation (2**30 levels over sums scaled by secure.MAX_ROWS).
    np.testing.assert_allclose(model.named_steps["scaler"].mean_, mean, rtol=1e-4)
    np.testing.assert_allclose(model.named_steps["scaler"].scale_, scale, rtol=1e-3)
    assert secured.result.metrics["auc"] > 0.75


# ---- the registrar of a SuperLink pod (what the operator runs beside each SuperLink) ----


def test_the_registrar_registers_keys_and_reports_each_sites_standing(
    data_root: Path, tmp_path: Path, mlflow_uri: str
) -> None:
    request = TrainingRequest(
        data_root=data_root,
        sites=["hospital_01"],
        window=TRAIN_WINDOW,
        tracking_uri=mlflow_uri,
        work_dir=tmp_path / "flower",
        superlink_port=0,
    )
    keys = tmp_path / "keys"
    keys.mkdir()
    with local_federation(request) as federation:
        assert federation.pki is not None
        with ControlClient(federation.address) as control:
            deadline = time.monotonic() + 120
            while [n.status for n in control.nodes()] != ["online"] and time.monotonic() < deadline:
                time.sleep(0.5)
        # hospital_01 is registered and connected already; hospital_02's key is new here.
        shutil.copy(federation.pki / "hospital_01.key.pub", keys / "hospital_01")
        (keys / "hospital_02").write_bytes(site_key_pair().public_openssh)
        (keys / "hospital_03").write_text("not a key")
        out = io.StringIO()
        passes = iter(range(3))
        with contextlib.redirect_stdout(out):
            registrar.run(
                federation.address,
                keys,
                tmp_path / "registrar",
                ["hospital_01", "hospital_02", "hospital_03", "hospital_04"],
                interval=0.5,
                keep_going=lambda: next(passes, None) is not None,
            )
        with ControlClient(federation.address) as control:
            names = sorted(n.name for n in control.nodes())
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    assert report["sites"]["hospital_01"] == {"keyRegistered": True, "node": "online"}
    assert report["sites"]["hospital_02"] == {"keyRegistered": True, "node": "registered"}
    assert report["sites"]["hospital_03"]["keyRegistered"] is False
    assert "not an OpenSSH public key" in report["sites"]["hospital_03"]["keyError"]
    assert report["sites"]["hospital_04"] == {"keyRegistered": False, "keyError": "no public key mounted"}
    assert names == ["hospital_01", "hospital_02"]
    # every key it could read is registered: the pod is ready
    assert (tmp_path / "registrar" / registrar.READY_FILE).exists()
