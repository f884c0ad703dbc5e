"""Builders are pure: compare the dicts they return."""

from __future__ import annotations

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
    REGISTERED_MODEL,
    ROLE_INVENTORY,
    SECRET_KEY_PASSWORD,
    SECRET_KEY_USERNAME,
    SUPERLINK_PORT,
    SUPERNODE_FIRST_PORT,
    TLS_CA_FILE,
)
from healthrisk.data.window import DateWindow
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


def test_superlink_pod_insecure() -> None:
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
                        "--host", "0.0.0.0", "--port", str(SUPERLINK_PORT), "--isolation", "subprocess",
                        "--disable-runtime-dependency-installation",
                        "--health-server-address", "0.0.0.0:8081", "--insecure",
                    ],
                    "env": [*BASE_ENV, {"name": ENV_TRACKING_URI, "value": f"http://health-risk-mlflow:{MLFLOW_PORT}"}],
                    "ports": [{"name": "flower", "containerPort": SUPERLINK_PORT}],
                    "readinessProbe": {"grpc": {"port": 8081}, "periodSeconds": 5, "failureThreshold": 3},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "256Mi"},
                        "limits": {"memory": "2Gi"},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }  # fmt: skip


def test_superlink_service_selects_only_its_runs_superlink() -> None:
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
        "ports": [{"name": "flower", "port": SUPERLINK_PORT, "targetPort": "flower", "protocol": "TCP"}],
    }


def test_supernode_mounts_its_site_volume_read_only() -> None:
    spec = parse_spec(MINIMAL_SPEC)
    pod = builders.supernode_pod(TRAINING, spec, 1, spec.sites[0], CONFIG)
    assert pod["metadata"]["name"] == "diabetes-r1-supernode-hospital-01"
    assert pod["metadata"]["labels"][LABEL_SITE] == "hospital_01"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["healthrisk-supernode"]
    assert container["args"] == [
        "--superlink", f"diabetes-r1-superlink.health-risk-mlops.svc:{SUPERLINK_PORT}", "--insecure",
        "--port", str(SUPERNODE_FIRST_PORT),
        "--node-config", 'site="hospital_01" data-root="/data"',
        "--health-server-address", "0.0.0.0:8081",
    ]  # fmt: skip
    assert container["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "data", "mountPath": "/data", "readOnly": True},
    ]
    assert pod["spec"]["volumes"][1] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "hospital-01-data", "readOnly": True},
    }
    assert {"name": "FLWR_TELEMETRY_ENABLED", "value": "0"} in container["env"]
    assert "nodeSelector" not in pod["spec"]


def test_tls_auth_subpath_and_node_selector_hooks() -> None:
    spec = parse_spec(FULL_SPEC)
    config = OperatorConfig(pod_node_selector={"pool": "fl"})
    link = builders.superlink_pod(TRAINING, spec, 1, config)
    args = link["spec"]["containers"][0]["args"]
    assert "--insecure" not in args
    assert args[-7:] == [
        "--ssl-certfile", "/certs/tls.crt", "--ssl-keyfile", "/certs/tls.key",
        "--ssl-ca-certfile", "/certs/ca.crt", "--enable-supernode-auth",
    ]  # fmt: skip
    assert {"name": "tls", "secret": {"secretName": "flower-tls"}} in link["spec"]["volumes"]
    node = builders.supernode_pod(TRAINING, spec, 1, spec.sites[0], config)
    node_args = node["spec"]["containers"][0]["args"]
    assert node_args[2:4] == ["--root-certificates", "/certs/ca.crt"]
    assert node_args[-2:] == ["--auth-supernode-private-key", "/auth/private-key"]
    assert {"name": "data", "mountPath": "/srv/data", "readOnly": True, "subPath": "h1"} in node["spec"][
        "containers"
    ][0]["volumeMounts"]
    assert {
        "name": "tls",
        "secret": {"secretName": "flower-tls", "items": [{"key": TLS_CA_FILE, "path": TLS_CA_FILE}]},
    } in (node["spec"]["volumes"])
    assert node["spec"]["nodeSelector"] == {"pool": "fl", "site": "h1"}


DATA = builders.RunData(DateWindow.parse("2024-01-01..2024-01-14"), "f1ngerpr1nt")


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
    assert args[:5] == [
        "train",
        "submit",
        "--superlink",
        f"diabetes-r2-superlink.health-risk-mlops.svc:{SUPERLINK_PORT}",
        "--insecure",
    ]
    assert args[5] == "--run-config-json"
    assert json.loads(args[6]) == {
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
    }
    # the Flower App accepts every key the operator sends
    assert RunConfig.from_flower(json.loads(args[6])).data_fingerprint == "f1ngerpr1nt"
    assert {"name": ENV_TRACKING_URI, "value": f"http://health-risk-mlflow:{MLFLOW_PORT}"} in container["env"]


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
