"""Builders are pure: compare the dicts they return."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import pytest

from healthrisk.contracts import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_PREVIOUS_MODEL_VERSION,
    APP_NAME,
    CHAMPION_ALIAS,
    ENV_DRIFT_THRESHOLD,
    ENV_MODEL_VERSION,
    ENV_TRACKING_PASSWORD,
    ENV_TRACKING_URI,
    ENV_TRACKING_USERNAME,
    LABEL_APP_NAME,
    LABEL_ATTEMPT,
    LABEL_COMPONENT,
    LABEL_DRIFT_CHECK,
    LABEL_INVENTORY,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SERVED_VERSION,
    LABEL_SITE,
    LABEL_TRAINING,
    MANAGER,
    MLFLOW_PORT,
    PORT_NAME_CONTROL,
    PORT_NAME_FLEET,
    REGISTERED_MODEL,
    ROLE_INVENTORY,
    SECRET_KEY_PASSWORD,
    SECRET_KEY_USERNAME,
    SITE_PRIVATE_KEY_FILE,
    SITE_PUBLIC_KEY_FILE,
    SUPERLINK_CONTROL_PORT,
    SUPERLINK_FLEET_PORT,
    SUPERLINK_PORT,
    SUPERNODE_FIRST_PORT,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
)
from healthrisk.data.window import DateWindow
from healthrisk.federated.pki import control_client_certificate, server_certificate, site_key_pair
from healthrisk.federated.run_config import RunConfig
from healthrisk_operator import builders
from healthrisk_operator.builders import Training
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.spec import parse_spec

from .helpers import FULL_SPEC, MINIMAL_SPEC, load_crd, version_schema

TRAINING = Training("health-risk-mlops", "diabetes", "0b5c-uid")
CONFIG = OperatorConfig(tracking_uri=f"http://health-risk-mlflow:{MLFLOW_PORT}")
OWNER = [
    {
        "apiVersion": "healthrisk.io/v1alpha1",
        "kind": "FederatedTraining",
        "name": "diabetes",
        "uid": "0b5c-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
]
BASE_ENV = [
    {"name": "FLWR_TELEMETRY_ENABLED", "value": "0"},
    {"name": "HOME", "value": "/tmp"},
    {"name": "FLWR_HOME", "value": "/tmp/.flwr"},
]


SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}


def _secret_volume(name: str, secret: str, keys: list[str]) -> dict[str, object]:
    return {"name": name, "secret": {"secretName": secret, "items": [{"key": k, "path": k} for k in keys]}}


def test_superlink_pod_listens_on_loopback_behind_its_proxy() -> None:
    spec = parse_spec(MINIMAL_SPEC)
    assert builders.superlink_pod(TRAINING, spec, 3, CONFIG) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "diabetes-r3-superlink",
            "namespace": "health-risk-mlops",
            "labels": {
                LABEL_APP_NAME: APP_NAME,
                LABEL_COMPONENT: "superlink",
                LABEL_MANAGED_BY: MANAGER,
                LABEL_TRAINING: "diabetes",
                LABEL_ROLE: "superlink",
                LABEL_RUN: "3",
            },
            "ownerReferences": OWNER,
        },
        "spec": {
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationGracePeriodSeconds": 10,
            "activeDeadlineSeconds": 3600,
            "containers": [
                {
                    "name": "superlink",
                    "image": "health-risk/flower:dev",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["flower-superlink"],
                    "args": [
                        "--host", "127.0.0.1", "--port", str(SUPERLINK_PORT), "--isolation", "subprocess",
                        "--disable-runtime-dependency-installation",
                        "--health-server-address", "0.0.0.0:8081",
                        "--ssl-ca-certfile", "/certs/ca.crt", "--ssl-certfile", "/certs/tls.crt",
                        "--ssl-keyfile", "/certs/tls.key", "--enable-supernode-auth",
                    ],
                    "env": [*BASE_ENV, {"name": ENV_TRACKING_URI, "value": f"http://health-risk-mlflow:{MLFLOW_PORT}"}],
                    "readinessProbe": {"grpc": {"port": 8081}, "periodSeconds": 5, "failureThreshold": 3},
                    "securityContext": SECURITY,
                    "resources": RESOURCES,
                    "volumeMounts": [
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "tls", "mountPath": "/certs", "readOnly": True},
                    ],
                },
                {
                    "name": "proxy",
                    "image": "health-risk/flower:dev",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["healthrisk"],
                    "args": [
                        "federation", "proxy", "--work-dir", "/tmp/proxy",
                        "--tls-dir", "/certs", "--control-ca", "/control/control-ca.crt",
                    ],
                    "env": BASE_ENV,
                    "ports": [
                        {"name": PORT_NAME_FLEET, "containerPort": SUPERLINK_FLEET_PORT},
                        {"name": PORT_NAME_CONTROL, "containerPort": SUPERLINK_CONTROL_PORT},
                    ],
                    "readinessProbe": {
                        "tcpSocket": {"port": PORT_NAME_FLEET}, "periodSeconds": 5, "failureThreshold": 3
                    },
                    "securityContext": SECURITY,
                    "resources": RESOURCES,
                    "volumeMounts": [
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "tls", "mountPath": "/certs", "readOnly": True},
                        {"name": "control", "mountPath": "/control", "readOnly": True},
                    ],
                },
                {
                    "name": "registrar",
                    "image": "health-risk/flower:dev",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["healthrisk"],
                    "args": [
                        "federation", "registrar", "--keys-dir", "/site-keys",
                        "--root-certificates", "/certs/ca.crt", "--work-dir", "/tmp/registrar",
                        "--site", "hospital_01", "--site", "hospital_02",
                    ],
                    "env": BASE_ENV,
                    "readinessProbe": {
                        "exec": {"command": ["test", "-f", "/tmp/registrar/ready"]},
                        "periodSeconds": 2,
                        "failureThreshold": 1,
                    },
                    "securityContext": SECURITY,
                    "resources": RESOURCES,
                    "volumeMounts": [
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "tls", "mountPath": "/certs", "readOnly": True},
                        {"name": "site-keys", "mountPath": "/site-keys", "readOnly": True},
                    ],
                },
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                _secret_volume("tls", "diabetes-r3-flower", [TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE]),
                _secret_volume("control", "diabetes-r3-flower", ["control-ca.crt"]),
                # every site's public key by reference: the operator never reads a key Secret
                {
                    "name": "site-keys",
                    "projected": {
                        "sources": [
                            {
                                "secret": {
                                    "name": f"diabetes-hospital-0{i}-supernode-key",
                                    "items": [{"key": SITE_PUBLIC_KEY_FILE, "path": f"hospital_0{i}"}],
                                    "optional": True,
                                }
                            }
                            for i in (1, 2)
                        ]
                    },
                },
            ],
        },
    }  # fmt: skip


def test_superlink_pod_that_captures_its_messages_prepares_its_database_first() -> None:
    spec = parse_spec(MINIMAL_SPEC)
    pod = builders.superlink_pod(TRAINING, spec, 1, CONFIG, capture=True)
    superlink = pod["spec"]["containers"][0]
    assert superlink["args"][-2:] == ["--database", "/var/lib/flower/superlink.db"]
    (init,) = pod["spec"]["initContainers"]
    assert init["args"] == ["federation", "capture-init", "/var/lib/flower/superlink.db"]
    assert {"name": "state", "mountPath": "/var/lib/flower"} in init["volumeMounts"]
    assert {"name": "state", "emptyDir": {}} in pod["spec"]["volumes"]
    assert "initContainers" not in builders.superlink_pod(TRAINING, spec, 1, CONFIG)["spec"]


def test_insecure_only_when_asked_for_by_name() -> None:
    spec = parse_spec({**MINIMAL_SPEC, "security": {"insecure": True}})
    link = builders.superlink_pod(TRAINING, spec, 1, CONFIG)
    superlink, proxy = link["spec"]["containers"]
    assert superlink["args"][-1] == "--insecure" and "--enable-supernode-auth" not in superlink["args"]
    assert proxy["args"] == ["federation", "proxy", "--work-dir", "/tmp/proxy", "--insecure"]
    assert [v["name"] for v in link["spec"]["volumes"]] == ["tmp"]
    assert [c["name"] for c in link["spec"]["containers"]] == ["superlink", "proxy"]  # no registrar
    node = builders.supernode_pod(TRAINING, spec, 1, spec.sites[0], CONFIG)
    assert "--insecure" in node["spec"]["containers"][0]["args"]
    assert "--auth-supernode-private-key" not in node["spec"]["containers"][0]["args"]
    submit = builders.submit_pod(TRAINING, spec, 1, 0, "create", DATA, CONFIG, active_deadline_seconds=60)
    assert submit["spec"]["containers"][0]["args"][4] == "--insecure"


def test_superlink_service_exposes_fleet_and_control_only() -> None:
    service = builders.superlink_service(TRAINING, 3)
    assert service["metadata"]["name"] == "diabetes-r3-superlink"
    assert service["metadata"]["ownerReferences"] == OWNER
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {
            LABEL_TRAINING: "diabetes",
            LABEL_RUN: "3",
            LABEL_ROLE: "superlink",
        },
        "ports": [
            {
                "name": PORT_NAME_FLEET,
                "port": SUPERLINK_FLEET_PORT,
                "targetPort": PORT_NAME_FLEET,
                "protocol": "TCP",
            },
            {
                "name": PORT_NAME_CONTROL,
                "port": SUPERLINK_CONTROL_PORT,
                "targetPort": PORT_NAME_CONTROL,
                "protocol": "TCP",
            },
        ],
    }


def test_supernode_reaches_fleet_with_the_runs_ca_and_its_sites_key() -> None:
    spec = parse_spec(MINIMAL_SPEC)
    pod = builders.supernode_pod(TRAINING, spec, 1, spec.sites[0], CONFIG)
    assert pod["metadata"]["name"] == "diabetes-r1-supernode-hospital-01"
    assert pod["metadata"]["labels"][LABEL_SITE] == "hospital_01"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["healthrisk-supernode"]
    assert container["args"] == [
        "--superlink", f"diabetes-r1-superlink.health-risk-mlops.svc:{SUPERLINK_FLEET_PORT}",
        "--root-certificates", "/certs/ca.crt",
        "--port", str(SUPERNODE_FIRST_PORT),
        "--node-config", 'site="hospital_01" data-root="/data"',
        "--health-server-address", "0.0.0.0:8081",
        "--auth-supernode-private-key", "/auth/private-key",
    ]  # fmt: skip
    assert container["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "tls", "mountPath": "/certs", "readOnly": True},
        {"name": "auth", "mountPath": "/auth", "readOnly": True},
    ]
    assert pod["spec"]["volumes"][1:] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "hospital-01-data", "readOnly": True}},
        _secret_volume("tls", "diabetes-r1-flower", [TLS_CA_FILE]),  # the CA only
        _secret_volume("auth", "diabetes-hospital-01-supernode-key", [SITE_PRIVATE_KEY_FILE]),
    ]
    assert {"name": "FLWR_TELEMETRY_ENABLED", "value": "0"} in container["env"]
    assert "nodeSelector" not in pod["spec"]


def test_brought_tls_and_site_keys_subpath_and_node_selector_hooks() -> None:
    spec = parse_spec(FULL_SPEC)
    config = OperatorConfig(pod_node_selector={"pool": "fl"})
    link = builders.superlink_pod(TRAINING, spec, 1, config)
    assert (
        _secret_volume("tls", "flower-tls", [TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE])
        in link["spec"]["volumes"]
    )
    # the Control CA is the run's own, whoever brings the SuperLink's certificate
    assert _secret_volume("control", "diabetes-r1-flower", ["control-ca.crt"]) in link["spec"]["volumes"]
    node = builders.supernode_pod(TRAINING, spec, 1, spec.sites[0], config)
    assert _secret_volume("auth", "h1-auth", [SITE_PRIVATE_KEY_FILE]) in node["spec"]["volumes"]
    assert _secret_volume("tls", "flower-tls", [TLS_CA_FILE]) in node["spec"]["volumes"]
    assert {"name": "data", "mountPath": "/srv/data", "readOnly": True, "subPath": "h1"} in node["spec"][
        "containers"
    ][0]["volumeMounts"]
    assert node["spec"]["nodeSelector"] == {"pool": "fl", "site": "h1"}


DATA = builders.RunData(DateWindow.parse("2024-01-01..2024-01-14"), "f1ngerpr1nt")


def test_run_secret_holds_the_runs_material() -> None:
    server, control = (
        server_certificate(["diabetes-r2-superlink.health-risk-mlops.svc"]),
        control_client_certificate(),
    )
    secret = builders.run_secret(TRAINING, 2, control, server)
    assert secret["metadata"]["name"] == "diabetes-r2-flower"
    assert secret["metadata"]["labels"][LABEL_RUN] == "2"
    assert secret["metadata"]["ownerReferences"] == OWNER
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert data == {
        TLS_CA_FILE: server.ca_pem,
        TLS_CERT_FILE: server.cert_pem,
        TLS_KEY_FILE: server.key_pem,
        "control-ca.crt": control.ca_pem,
        "control.crt": control.cert_pem,
        "control.key": control.key_pem,
    }
    brought = builders.run_secret(TRAINING, 2, control, None)
    assert sorted(brought["data"]) == ["control-ca.crt", "control.crt", "control.key"]


def test_generated_site_key_secret() -> None:
    spec = parse_spec(MINIMAL_SPEC)
    pair = site_key_pair()
    secret = builders.site_key_secret(TRAINING, spec.sites[1], pair)
    assert secret["metadata"]["name"] == "diabetes-hospital-02-supernode-key"
    assert LABEL_RUN not in secret["metadata"]["labels"]  # it outlives runs
    assert secret["metadata"]["labels"][LABEL_SITE] == "hospital_02"
    assert base64.b64decode(secret["data"][SITE_PUBLIC_KEY_FILE]) == pair.public_openssh
    assert base64.b64decode(secret["data"][SITE_PRIVATE_KEY_FILE]) == pair.private_openssh


def test_submit_pod_carries_the_run_config_contract() -> None:
    spec = parse_spec(MINIMAL_SPEC)
    pod = builders.submit_pod(TRAINING, spec, 2, 1, "drift", DATA, CONFIG, active_deadline_seconds=900)
    assert pod["metadata"]["name"] == "diabetes-r2-submit-1"
    assert pod["metadata"]["labels"][LABEL_ATTEMPT] == "1"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["activeDeadlineSeconds"] == 900
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["healthrisk"]
    args = container["args"]
    assert args[:10] == [
        "train",
        "submit",
        "--superlink",
        f"diabetes-r2-superlink.health-risk-mlops.svc:{SUPERLINK_CONTROL_PORT}",
        "--root-certificates",
        "/certs/ca.crt",
        "--client-certificate",
        "/control/control.crt",
        "--client-key",
        "/control/control.key",
    ]
    assert pod["spec"]["volumes"][1:] == [
        _secret_volume("tls", "diabetes-r2-flower", [TLS_CA_FILE]),
        _secret_volume("control", "diabetes-r2-flower", ["control.crt", "control.key"]),
    ]
    assert args[10] == "--run-config-json"
    assert json.loads(args[11]) == {
        "num-server-rounds": 5,
        "local-epochs": 2,
        "proximal-mu": 0.0,
        "strategy": "FedAvg",
        "min-sites": 2,
        "data-from": "2024-01-01",
        "data-to": "2024-01-14",
        "tracking-uri": f"http://health-risk-mlflow:{MLFLOW_PORT}",
        "registered-model": REGISTERED_MODEL,
        "champion-alias": CHAMPION_ALIAS,
        "training-ref": "health-risk-mlops/diabetes/0b5c-uid",
        "run-number": 2,
        "trigger": "drift",
        "data-fingerprint": "f1ngerpr1nt",
        "min-rows": 100,
        "per-site-metrics": False,
        "secure-aggregation": False,
    }
    # the Flower App accepts every key the operator sends
    assert RunConfig.from_flower(json.loads(args[11])).data_fingerprint == "f1ngerpr1nt"
    assert {"name": ENV_TRACKING_URI, "value": f"http://health-risk-mlflow:{MLFLOW_PORT}"} in container["env"]
    full = builders.run_config(TRAINING, parse_spec(FULL_SPEC), 1, "create", DATA, CONFIG)
    assert {k: full[k] for k in full if k.startswith("dp-")} == {
        "dp-noise-multiplier": 1.5,
        "dp-clipping-norm": 0.5,
        "dp-delta": 1e-6,
        "dp-clipping": "client",
    }
    # what the operator sends, the Flower App accepts
    RunConfig.from_flower(full)


def test_pod_tracking_uri_and_spec_override() -> None:
    spec = parse_spec(MINIMAL_SPEC)
    config = OperatorConfig(
        tracking_uri=f"http://127.0.0.1:{MLFLOW_PORT}", pod_tracking_uri=f"http://mlflow:{MLFLOW_PORT}"
    )
    assert (
        builders.run_config(TRAINING, spec, 1, "create", DATA, config)["tracking-uri"]
        == f"http://mlflow:{MLFLOW_PORT}"
    )
    full = parse_spec(FULL_SPEC)
    assert (
        builders.run_config(TRAINING, full, 1, "create", DATA, config)["tracking-uri"]
        == f"http://mlflow.example:{MLFLOW_PORT}"
    )


def test_drift_pod() -> None:
    spec = parse_spec({**MINIMAL_SPEC, "retraining": {"drift": {"threshold": 0.4}}})
    until = dt.date(2024, 3, 7)
    pod = builders.drift_pod(TRAINING, spec, 4, spec.sites[1], until, CONFIG, active_deadline_seconds=600)
    assert pod["metadata"]["name"] == "diabetes-drift4-hospital-02"
    assert pod["metadata"]["labels"][LABEL_DRIFT_CHECK] == "4"
    container = pod["spec"]["containers"][0]
    assert container["args"] == [
        "drift", "check", "--site", "hospital_02", "--data-root", "/data",
        "--until", "2024-03-07", "--current-days", "7", "--model-name", REGISTERED_MODEL,
        "--alias", CHAMPION_ALIAS, "--report-dir", "/tmp/drift-reports", "--publish", "--json",
    ]  # fmt: skip
    assert {"name": ENV_DRIFT_THRESHOLD, "value": "0.4"} in container["env"]
    assert pod["spec"]["restartPolicy"] == "Never"
    with pytest.raises(ValueError, match=r"retraining\.drift"):
        builders.drift_pod(
            TRAINING, parse_spec(MINIMAL_SPEC), 1, spec.sites[0], until, CONFIG, active_deadline_seconds=1
        )


def test_inventory_pod_lists_a_sites_days_with_nothing_but_its_volume() -> None:
    spec = parse_spec(MINIMAL_SPEC)
    pod = builders.inventory_pod(TRAINING, 3, spec.sites[0], CONFIG, active_deadline_seconds=600)
    assert pod["metadata"]["name"] == "diabetes-days3-hospital-01"
    assert pod["metadata"]["labels"][LABEL_INVENTORY] == "3"
    assert pod["metadata"]["labels"][LABEL_ROLE] == ROLE_INVENTORY
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["data", "days", "--site", "hospital_01", "--data-root", "/data"]
    assert not any(e["name"] == ENV_TRACKING_URI for e in container["env"])  # no registry, no network
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_rollout_and_rollback_patches() -> None:
    assert builders.rollout_patch("server", "7", "5") == {
        "metadata": {"annotations": {ANNOTATION_PREVIOUS_MODEL_VERSION: "5"}},
        "spec": {
            "template": {
                "metadata": {"annotations": {ANNOTATION_MODEL_VERSION: "7"}},
                "spec": {
                    "containers": [{"name": "server", "env": [{"name": ENV_MODEL_VERSION, "value": "7"}]}]
                },
            }
        },
    }
    back = builders.rollback_patch("server", None, "champion")
    assert back["metadata"] == {
        "annotations": {ANNOTATION_PREVIOUS_MODEL_VERSION: None},
        "labels": {LABEL_SERVED_VERSION: None},  # serving the alias again: none pinned
    }
    assert back["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": ENV_MODEL_VERSION, "value": "champion"}
    ]


def test_inference_container_choice() -> None:
    deployment = {"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}}
    assert builders.inference_container_name(deployment, None) == "a"
    assert builders.inference_container_name(deployment, "b") == "b"
    with pytest.raises(ValueError, match="not in Deployment"):
        builders.inference_container_name(deployment, "c")


# What the API server accepts: a Service name is a DNS-1035 label (at most 63), a pod
# name a DNS-1123 subdomain (lowercase alphanumerics and '-', no '_').
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_1123_NAME = re.compile(r"[a-z0-9]([-.a-z0-9]*[a-z0-9])?")


def test_names_fit_kubernetes_limits() -> None:
    """With the longest training and site names the CRD admits, every child name is one
    the API server accepts; the CRD's name limit is what keeps the Service name in 63."""
    crd = load_crd()
    rule = version_schema(crd)["x-kubernetes-validations"][0]["rule"]
    limit = re.search(r"size\(self\.metadata\.name\) <= (\d+)", rule)
    assert limit, rule
    longest = int(limit.group(1))
    sites = version_schema(crd)["properties"]["spec"]["properties"]["sites"]
    # '_' is allowed in site names, not in pod names
    site = "h_" + "1" * (sites["items"]["properties"]["name"]["maxLength"] - 2)
    spec = parse_spec(MINIMAL_SPEC | {"sites": [{"name": site, "data": {"persistentVolumeClaim": "d"}}]})
    name, run = "a" * longest, 10**6  # a run an hour for a century
    assert DNS_1035_LABEL.fullmatch(builders.superlink_name(name, run))
    pods = [
        builders.superlink_name(name, run),
        builders.supernode_name(name, run, spec.sites[0]),
        builders.submit_name(name, run, 99),
        builders.drift_pod_name(name, run, spec.sites[0]),
    ]
    assert all(DNS_1123_NAME.fullmatch(pod) for pod in pods), pods


def test_event_is_about_the_training() -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    body = builders.event(
        TRAINING, event_type="Warning", reason="RolledBack", message="m", now=now, suffix="x1"
    )
    assert body["involvedObject"]["uid"] == "0b5c-uid"
    assert body["metadata"] == {"name": "diabetes.x1", "namespace": "health-risk-mlops"}
    assert (body["type"], body["reason"], body["lastTimestamp"]) == (
        "Warning",
        "RolledBack",
        "2026-01-02T03:04:05Z",
    )


def test_registry_credentials_reach_only_the_pods_that_call_mlflow_by_reference() -> None:
    spec = parse_spec({**FULL_SPEC, "retraining": {"drift": {}}})
    config = OperatorConfig(
        tracking_uri=CONFIG.tracking_uri,
        training_credentials_secret="mlflow-trainer",
        drift_credentials_secret="mlflow-drift",
    )
    site = spec.sites[0]
    pods = {
        "superlink": builders.superlink_pod(TRAINING, spec, 1, config),
        "drift": builders.drift_pod(
            TRAINING, spec, 1, site, dt.date(2024, 3, 7), config, active_deadline_seconds=60
        ),
        "supernode": builders.supernode_pod(TRAINING, spec, 1, site, config),
        "submit": builders.submit_pod(
            TRAINING, spec, 1, 0, "create", DATA, config, active_deadline_seconds=60
        ),
    }

    def env(role: str) -> dict[str, dict[str, object]]:
        return {e["name"]: e for e in pods[role]["spec"]["containers"][0]["env"]}

    for role, secret in (("superlink", "mlflow-trainer"), ("drift", "mlflow-drift")):
        for name, key in (
            (ENV_TRACKING_USERNAME, SECRET_KEY_USERNAME),
            (ENV_TRACKING_PASSWORD, SECRET_KEY_PASSWORD),
        ):
            assert env(role)[name] == {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
            }
    # SuperNodes hold a site's rows and the submitter talks to the SuperLink only.
    for role in ("supernode", "submit"):
        assert not {ENV_TRACKING_USERNAME, ENV_TRACKING_PASSWORD} & env(role).keys(), role
    # Without credentials configured (a registry without auth) the pods carry none.
    plain = builders.superlink_pod(TRAINING, spec, 1, CONFIG)
    assert ENV_TRACKING_PASSWORD not in {e["name"] for e in plain["spec"]["containers"][0]["env"]}
