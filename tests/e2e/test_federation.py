"""Issue 13 on a real Kubernetes: a hospital's security officer's questions, answered by
what the cluster did, not by what the platform says about itself.

One Helm release (`conftest.platform`), the operator and real Flower pods from the
project's images. Two trainings, each annotated so that its SuperLink keeps a copy of
every message it passes (healthrisk.federated.capture), read out of the pod afterwards:

1. `guarded`: the default security (TLS, keys registered before SuperNodes start, the
   SuperLink behind its proxy), differential privacy, and a minRows one site is below.
   While it runs, an impostor pod with a SuperNode's labels tries to register a key of its
   own through the SuperLink's Service, then to join with it.
2. `secured`: secure aggregation; nothing of a single site reaches the SuperLink.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from healthrisk.contracts import (
    ANNOTATION_CAPTURE_MESSAGES,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SITE,
    LABEL_TRAINING,
    MANAGER,
    MLFLOW_PORT,
    ROLE_SUBMIT,
    ROLE_SUPERNODE,
    SUPERLINK_CONTROL_PORT,
    SUPERLINK_FLEET_PORT,
    TAG_DP_EPSILON,
    TAG_SECURE_AGGREGATION,
    TLS_CA_FILE,
)
from healthrisk.data.generator import generate
from healthrisk.data.window import DateWindow
from healthrisk.federated import capture
from healthrisk.federated.client_app import Split, load_split
from healthrisk.federated.run_config import RunConfig
from tests.e2e.platform import SITES, TRAIN_WINDOW, Platform, follow_run, tags, training
from tests.kit.wait import wait_for
from tests.privacy_check import check

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

SMALL_SITE = "hospital_03"
# Between hospital_03's validation rows in TRAIN_WINDOW (404) and the others' (585, 673):
# hospital_03 declines, the run goes on with two sites.
MIN_ROWS = 500
CAPTURE_DB = "/var/lib/flower/superlink.db"
IMPOSTOR = "impostor"
SUBMIT_IMPOSTOR = "impostor-submitter"


def _training(platform: Platform, name: str, privacy: dict[str, Any], rounds: int) -> dict[str, Any]:
    # A model of its own (granted to MLflow's users in conftest), apart from the champion's.
    manifest = training(platform, name, rounds=rounds, min_sites=2, registered_name=f"health-risk-e2e-{name}")
    manifest["metadata"]["annotations"] = {ANNOTATION_CAPTURE_MESSAGES: "true"}
    manifest["spec"]["privacy"] = privacy
    # Keep the SuperLink pod after the run: its captured messages are read out of it.
    manifest["spec"]["runPolicy"]["cleanPodPolicy"] = "None"
    return manifest


def _captured(platform: Platform, name: str) -> list[Any]:
    out = platform.kube.kubectl(
        "exec", f"{name}-r1-superlink", "-c", "superlink", "--",
        "healthrisk", "federation", "capture-export", CAPTURE_DB, timeout=300,
    ).stdout  # fmt: skip
    return capture.messages(capture.read_export(out.splitlines()))


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Split]:
    """Each site's rows, made again by the same generator as the sites' volumes hold."""
    root = tmp_path_factory.mktemp("sites")
    window = DateWindow.parse(f"{TRAIN_WINDOW[0]}..{TRAIN_WINDOW[1]}")
    generate(root, n_sites=len(SITES), window=window, seed=42)
    return {site: load_split(root, site, window) for site in SITES}


def _settings(platform: Platform) -> RunConfig:
    """What the sites trained with (tests.e2e.platform.training: one local epoch)."""
    return RunConfig(local_epochs=1, local_run_id="e2e")


# ---- 1. guarded ------------------------------------------------------------------------


# A new pod's NetworkPolicy rules take the enforcer a few seconds to program (until then
# the namespace's default deny holds): a refused connection is tried again for 40 s.
PROBE = """
import httpx, os, ssl, time
from flwr.proto.control_pb2 import RegisterNodeRequest
from flwr.supercore.protobuf.constants import PROTOBUF_MEDIA_TYPE
from healthrisk.federated.pki import pem_public_key, site_key_pair

def probe(host, port, path, key):
    body = RegisterNodeRequest(public_key=pem_public_key(key), name="hospital_01").SerializeToString()
    tls = ssl.create_default_context(cafile="/ca/ca.crt")
    for attempt in range(8):
        try:
            reply = httpx.post(f"https://{host}:{port}{path}", content=body, verify=tls, timeout=5,
                               headers={"content-type": PROTOBUF_MEDIA_TYPE})
            print("PROBE", port, path, reply.status_code, flush=True)
            return
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            error = exc
            time.sleep(5)
        except httpx.HTTPError as exc:
            error = exc
            break
    print("DETAIL", port, path, repr(error)[:300], flush=True)
    print("PROBE", port, path, "failed", type(error).__name__, flush=True)
"""


def _probe_pod(pod: str, image: str, labels: dict[str, str], script: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c", PROBE + script],
                "env": [
                    {"name": "HOME", "value": "/tmp"}, {"name": "FLWR_HOME", "value": "/tmp/.flwr"},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                ],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "ca", "mountPath": "/ca"}],
            }],
            "volumes": [{"name": "ca", "configMap": {"name": IMPOSTOR}}],
        },
    }  # fmt: skip


def _impostor(name: str, image: str) -> dict[str, Any]:
    """A pod that carries the labels of hospital_01's SuperNode in run 1 (so the
    NetworkPolicies let it reach the SuperLink's Fleet port, as they let a real one) and
    knows the run's CA (public): it tries to register a key of its own through the
    Service, then to join with it."""
    # The Service's name as the run's certificate names it (<service>.<namespace>.svc).
    service = f"{name}-r1-superlink.{{os.environ['NS']}}.svc"
    script = f"""
import subprocess, sys
pair = site_key_pair()
fd = os.open("/tmp/key", os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, pair.private_openssh); os.close(fd)
probe(f"{service}", {SUPERLINK_FLEET_PORT}, "/v1/control/register-node", pair.public_openssh)
probe(f"{service}", {SUPERLINK_FLEET_PORT}, "/v1/runtime/pull-messages", pair.public_openssh)
probe(f"{service}", {SUPERLINK_CONTROL_PORT}, "/v1/control/register-node", pair.public_openssh)
sys.exit(subprocess.call(["flower-supernode", "--superlink", f"{service}:{SUPERLINK_FLEET_PORT}",
    "--root-certificates", "/ca/{TLS_CA_FILE}", "--auth-supernode-private-key", "/tmp/key",
    "--isolation", "subprocess", "--node-config", 'site="hospital_01" data-root="/data"']))
"""
    labels = {
        LABEL_TRAINING: name,
        LABEL_RUN: "1",
        LABEL_ROLE: ROLE_SUPERNODE,
        LABEL_SITE: "hospital_01",
        LABEL_MANAGED_BY: MANAGER,
    }
    return _probe_pod(IMPOSTOR, image, labels, script)


def _submitter_impostor(name: str, image: str) -> dict[str, Any]:
    """A pod labelled like the run's submitter (the NetworkPolicies let it reach the
    Control port) without the run's client certificate: the proxy turns it away."""
    script = (
        f"probe(f\"{name}-r1-superlink.{{os.environ['NS']}}.svc\", {SUPERLINK_CONTROL_PORT}, "
        '"/v1/control/register-node", '
        "site_key_pair().public_openssh)"
    )
    return _probe_pod(SUBMIT_IMPOSTOR, image, {LABEL_TRAINING: name, LABEL_ROLE: ROLE_SUBMIT}, script)


def _finished(kube: Any, pod: str) -> dict[str, Any]:
    return dict(
        wait_for(
            f"{pod} to finish",
            lambda: (p := kube.get("pod", pod))["status"].get("phase") in ("Succeeded", "Failed") and p,
            timeout=180,
        )
    )


@pytest.fixture(scope="module")
def guarded(platform: Platform) -> dict[str, Any]:
    kube = platform.kube
    name = "guarded"
    kube.apply(
        _training(platform, name, {"minRows": MIN_ROWS, "differentialPrivacy": {"noiseMultiplier": 1.0}}, 2)
    )
    # The impostor joins once the run's SuperLink is up; it knows the CA, as anyone could.
    wait_for(
        "the SuperLink of guarded run 1 to be ready",
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (kube.get_or_none("pod", f"{name}-r1-superlink") or {})
            .get("status", {})
            .get("conditions")
            or []
        ),
        timeout=300,
    )
    ca = kube.get("secret", f"{name}-r1-flower")["data"][TLS_CA_FILE]
    kube.apply({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": IMPOSTOR},
        "data": {TLS_CA_FILE: base64.b64decode(ca).decode()},
    })  # fmt: skip
    kube.apply(_impostor(name, platform.images["flower"]))
    kube.apply(_submitter_impostor(name, platform.images["flower"]))
    seen: list[dict[str, Any]] = []
    record = follow_run(kube, name, 1, act=lambda status: seen.append(json.loads(json.dumps(status))))
    return {
        "name": name,
        "record": record,
        "seen": seen,
        "impostor": _finished(kube, IMPOSTOR),
        "impostor_log": kube.kubectl("logs", IMPOSTOR).stdout,
        "submitter_log": (_finished(kube, SUBMIT_IMPOSTOR), kube.kubectl("logs", SUBMIT_IMPOSTOR).stdout)[1],
        "captured": _captured(platform, name),
    }


def test_the_run_trains_over_tls_with_only_registered_sites(guarded: dict[str, Any]) -> None:
    status = guarded["record"].status
    entry = guarded["record"].entry(1)
    assert entry["result"] == "Succeeded", entry
    # Status showed each answering site connected with its registered key.
    authenticated = {
        site
        for snapshot in guarded["seen"]
        for site, view in (snapshot.get("sites") or {}).items()
        if view.get("authenticated")
    }
    assert authenticated == set(SITES)
    assert (
        status["conditions"]
        and next(c for c in status["conditions"] if c["type"] == "Insecure")["status"] == "False"
    )


def test_an_impostor_with_a_sites_labels_can_neither_register_nor_join(guarded: dict[str, Any]) -> None:
    log = guarded["impostor_log"]
    # Through the Service: Fleet answers nothing but Fleet ...
    assert f"PROBE {SUPERLINK_FLEET_PORT} /v1/control/register-node 404" in log, log
    assert f"PROBE {SUPERLINK_FLEET_PORT} /v1/runtime/pull-messages 404" in log, log
    # ... and a SuperNode's labels do not reach Control (NetworkPolicy), or, where
    # policies are not enforced, Control wants the run's client certificate.
    control = next(line for line in log.splitlines() if line.startswith(f"PROBE {SUPERLINK_CONTROL_PORT}"))
    assert control.endswith((" 400", "ConnectTimeout", "ConnectError")), control
    # Its key was not registered: the SuperLink refuses it, and it is no site of the run.
    assert "Failed to activate SuperNode" in log, log
    assert guarded["impostor"]["status"]["phase"] == "Failed"
    replies = {m.metadata.src_node_id for m in guarded["captured"] if m.metadata.reply_to_message_id}
    assert len(replies) == len(SITES)  # the three registered SuperNodes, nobody else


def test_control_wants_the_runs_client_certificate(guarded: dict[str, Any]) -> None:
    log = guarded["submitter_log"]
    assert f"PROBE {SUPERLINK_CONTROL_PORT} /v1/control/register-node 400" in log, log


def test_a_site_below_min_rows_declines_and_status_says_why(guarded: dict[str, Any]) -> None:
    sites = guarded["record"].status["sites"]
    assert (
        sites[SMALL_SITE]["declined"]
        == f"declines query.stats: fewer than minRows={MIN_ROWS} rows in its window"
    )
    assert not any(view.get("declined") for site, view in sites.items() if site != SMALL_SITE)
    assert not any(
        "site." in key for key in json.dumps(guarded["record"].status)
    )  # no per-site metrics in status


def test_differential_privacy_budget_in_status_and_mlflow(
    guarded: dict[str, Any], platform: Platform
) -> None:
    status = guarded["record"].status
    epsilon = status["privacy"]["epsilon"]
    assert status["privacy"]["delta"] == pytest.approx(1e-5)
    assert guarded["record"].entry(1)["epsilon"] == epsilon
    with platform.kube.port_forward(f"svc/{platform.mlflow}", MLFLOW_PORT) as url:
        (version,) = platform.registry(url).versions("health-risk-e2e-guarded")
    assert float(tags(version)[TAG_DP_EPSILON]) == pytest.approx(epsilon, abs=1e-4)
    assert 5 < epsilon < 10  # two releases at noise multiplier 1.0 (7.08 at delta 1e-5)


def test_what_reached_the_superlink_in_clear(
    guarded: dict[str, Any], splits: dict[str, Split], platform: Platform
) -> None:
    """Without secure aggregation the answering sites' statistics and updates pass the
    SuperLink (the capture sees content), the declining site's numbers never do, and no
    row of any site does."""
    findings = check(guarded["captured"], splits, _settings(platform))
    assert {leak.split(":")[0] for leak in findings.leaks} == set(SITES) - {SMALL_SITE}
    assert findings.recomputed_updates == 2 * 2
    assert findings.rows_in_clear == 0


# ---- 2. secured ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(platform: Platform) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    name = "secured"
    platform.kube.apply(_training(platform, name, {"secureAggregation": True}, 1))
    record = follow_run(platform.kube, name, 1, timeout=900)
    return record.status, record.entry(1), _captured(platform, name)


def test_secure_aggregation_lets_no_site_vector_reach_the_superlink(
    secured: tuple[dict[str, Any], dict[str, Any], list[Any]], splits: dict[str, Split], platform: Platform
) -> None:
    status, entry, captured = secured
    assert entry["result"] == "Succeeded", entry
    assert status["privacy"]["secureAggregation"] is True
    findings = check(captured, splits, _settings(platform))
    assert findings.recomputed_updates == len(SITES)  # the check knew each site's local model
    assert findings.replies == len(SITES) * 4 * 3  # 3 secure sums (stats, 1 round, evaluation) x 4 stages
    assert findings.leaks == []
    assert findings.arrays_in_clear == 0
    with platform.kube.port_forward(f"svc/{platform.mlflow}", MLFLOW_PORT) as url:
        (version,) = platform.registry(url).versions("health-risk-e2e-secured")
    assert tags(version)[TAG_SECURE_AGGREGATION] == "true"
