"""Pure builders: values in, Kubernetes objects (plain dicts) out. No I/O here.

Every name is deterministic (object name, run number, role, site, attempt), so creating
an object twice — after a lost response or an operator restart — hits AlreadyExists and
changes nothing. Every object carries an owner reference to its FederatedTraining, so
deleting the training deletes its runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from healthrisk.contracts import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_PREVIOUS_MODEL_VERSION,
    APP_NAME,
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
    ROLE_DRIFT,
    ROLE_INVENTORY,
    ROLE_SUBMIT,
    ROLE_SUPERLINK,
    ROLE_SUPERNODE,
    SECRET_KEY_PASSWORD,
    SECRET_KEY_USERNAME,
    SUPERLINK_PORT,
    SUPERNODE_FIRST_PORT,
    TLS_CA_FILE,
)
from healthrisk.data.window import DateWindow
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.constants import API_VERSION, HEALTH_PORT, KIND
from healthrisk_operator.spec import Site, TrainingSpec

Manifest = dict[str, Any]

CERTS_DIR = "/certs"
AUTH_DIR = "/auth"
TMP_DIR = "/tmp"


@dataclass(frozen=True)
class Training:
    """Identity of one FederatedTraining object."""

    namespace: str
    name: str
    uid: str

    @property
    def ref(self) -> str:
        """What the MLflow tags `healthrisk.training` hold."""
        return f"{self.namespace}/{self.name}/{self.uid}"


# ---- names ---------------------------------------------------------------------


def run_prefix(training_name: str, run: int) -> str:
    return f"{training_name}-r{run}"


def superlink_name(training_name: str, run: int) -> str:
    """Name of the SuperLink pod and of its Service."""
    return f"{run_prefix(training_name, run)}-superlink"


def supernode_name(training_name: str, run: int, site: Site) -> str:
    return f"{run_prefix(training_name, run)}-supernode-{site.k8s_name}"


def submit_name(training_name: str, run: int, attempt: int) -> str:
    return f"{run_prefix(training_name, run)}-submit-{attempt}"


def drift_pod_name(training_name: str, check: int, site: Site) -> str:
    return f"{training_name}-drift{check}-{site.k8s_name}"


def inventory_pod_name(training_name: str, round_: int, site: Site) -> str:
    return f"{training_name}-days{round_}-{site.k8s_name}"


def superlink_address(training: Training, run: int) -> str:
    return f"{superlink_name(training.name, run)}.{training.namespace}.svc:{SUPERLINK_PORT}"


# ---- metadata ------------------------------------------------------------------


def owner_references(training: Training) -> list[Manifest]:
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": training.name,
            "uid": training.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def labels(
    training: Training,
    role: str,
    *,
    run: int | None = None,
    site: Site | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    result = {
        LABEL_APP_NAME: APP_NAME,
        LABEL_COMPONENT: role,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_TRAINING: training.name,
        LABEL_ROLE: role,
    }
    if run is not None:
        result[LABEL_RUN] = str(run)
    if site is not None:
        result[LABEL_SITE] = site.name
    result.update(extra or {})
    return result


def children_selector(training: Training) -> str:
    """Label selector of everything the operator created for this training."""
    return f"{LABEL_TRAINING}={training.name},{LABEL_MANAGED_BY}={MANAGER}"


def _metadata(training: Training, name: str, object_labels: dict[str, str]) -> Manifest:
    return {
        "name": name,
        "namespace": training.namespace,
        "labels": object_labels,
        "ownerReferences": owner_references(training),
    }


# ---- pods ----------------------------------------------------------------------


def _container_security() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _base_env() -> list[Manifest]:
    # The root filesystem is read-only: Flower and MLflow write their state under /tmp.
    return [
        {"name": "FLWR_TELEMETRY_ENABLED", "value": "0"},
        {"name": "HOME", "value": TMP_DIR},
        {"name": "FLWR_HOME", "value": f"{TMP_DIR}/.flwr"},
    ]


def _mlflow_env(spec: TrainingSpec, config: OperatorConfig, credentials_secret: str | None) -> list[Manifest]:
    """Where the registry is and who the pod is there: the credential stays in its Secret
    (a reference in the pod spec, never the value)."""
    env: list[Manifest] = [{"name": ENV_TRACKING_URI, "value": tracking_uri(spec, config)}]
    if credentials_secret is not None:
        env += [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": credentials_secret, "key": key}}}
            for name, key in (
                (ENV_TRACKING_USERNAME, SECRET_KEY_USERNAME),
                (ENV_TRACKING_PASSWORD, SECRET_KEY_PASSWORD),
            )
        ]
    return env


def _pod(
    metadata: Manifest,
    container: Manifest,
    *,
    config: OperatorConfig,
    restart_policy: str,
    volumes: list[Manifest],
    node_selector: Mapping[str, str],
    active_deadline_seconds: int | None,
) -> Manifest:
    container = {
        "imagePullPolicy": config.image_pull_policy,
        "securityContext": _container_security(),
        "resources": {
            "requests": {"cpu": config.pod_cpu_request, "memory": config.pod_memory_request},
            "limits": {"memory": config.pod_memory_limit},
        },
        **container,
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}, *container.get("volumeMounts", [])],
    }
    spec: Manifest = {
        "restartPolicy": restart_policy,
        # Run pods talk to Flower and MLflow only, never to the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.pod_run_as_user,
            "runAsGroup": config.pod_run_as_user,
            "fsGroup": config.pod_run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 10,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes],
    }
    if config.pod_scheduler_name:
        spec["schedulerName"] = config.pod_scheduler_name
    selector = {**config.pod_node_selector, **node_selector}
    if selector:
        spec["nodeSelector"] = selector
    if active_deadline_seconds is not None:
        # A backstop that holds even while the operator is down.
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _grpc_health_probe() -> Manifest:
    return {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 5, "failureThreshold": 3}


def _tls_volume(spec: TrainingSpec, *, ca_only: bool) -> list[Manifest]:
    if spec.security.tls_secret_name is None:
        return []
    secret: Manifest = {"secretName": spec.security.tls_secret_name}
    if ca_only:
        secret["items"] = [{"key": TLS_CA_FILE, "path": TLS_CA_FILE}]
    return [{"name": "tls", "secret": secret}]


def _tls_mount(spec: TrainingSpec) -> list[Manifest]:
    if spec.security.tls_secret_name is None:
        return []
    return [{"name": "tls", "mountPath": CERTS_DIR, "readOnly": True}]


def _client_tls_args(spec: TrainingSpec) -> list[str]:
    if spec.security.tls_secret_name is None:
        return ["--insecure"]
    return ["--root-certificates", f"{CERTS_DIR}/ca.crt"]


def superlink_pod(training: Training, spec: TrainingSpec, run: int, config: OperatorConfig) -> Manifest:
    args = [
        "--host",
        "0.0.0.0",
        "--port",
        str(SUPERLINK_PORT),
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
        "--health-server-address",
        f"0.0.0.0:{HEALTH_PORT}",
    ]
    if spec.security.tls_secret_name is None:
        args.append("--insecure")
    else:
        args += [
            "--ssl-certfile",
            f"{CERTS_DIR}/tls.crt",
            "--ssl-keyfile",
            f"{CERTS_DIR}/tls.key",
            "--ssl-ca-certfile",
            f"{CERTS_DIR}/ca.crt",
        ]
        if spec.security.supernode_auth:
            args.append("--enable-supernode-auth")
    name = superlink_name(training.name, run)
    container = {
        "name": ROLE_SUPERLINK,
        "image": config.flower_image,
        "command": ["flower-superlink"],
        "args": args,
        # The ServerApp, started by the SuperLink as a subprocess, inherits this environment:
        # it logs the rounds and registers the model with the training credential.
        "env": [*_base_env(), *_mlflow_env(spec, config, config.training_credentials_secret)],
        "ports": [{"name": "flower", "containerPort": SUPERLINK_PORT}],
        "readinessProbe": _grpc_health_probe(),
        "volumeMounts": _tls_mount(spec),
    }
    return _pod(
        _metadata(training, name, labels(training, ROLE_SUPERLINK, run=run)),
        container,
        config=config,
        restart_policy="Always",
        volumes=_tls_volume(spec, ca_only=False),
        node_selector={},
        active_deadline_seconds=spec.run_policy.active_deadline_seconds,
    )


def superlink_service(training: Training, run: int) -> Manifest:
    name = superlink_name(training.name, run)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(training, name, labels(training, ROLE_SUPERLINK, run=run)),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_TRAINING: training.name, LABEL_RUN: str(run), LABEL_ROLE: ROLE_SUPERLINK},
            "ports": [{"name": "flower", "port": SUPERLINK_PORT, "targetPort": "flower", "protocol": "TCP"}],
        },
    }


def _site_volume(site: Site) -> tuple[Manifest, Manifest]:
    volume = {
        "name": "data",
        "persistentVolumeClaim": {"claimName": site.data.persistent_volume_claim, "readOnly": True},
    }
    mount: Manifest = {"name": "data", "mountPath": site.data.path, "readOnly": True}
    if site.data.sub_path:
        mount["subPath"] = site.data.sub_path
    return volume, mount


def supernode_pod(
    training: Training, spec: TrainingSpec, run: int, site: Site, config: OperatorConfig
) -> Manifest:
    volume, mount = _site_volume(site)
    volumes = [volume, *_tls_volume(spec, ca_only=True)]
    mounts = [mount, *_tls_mount(spec)]
    args = [
        "--superlink",
        superlink_address(training, run),
        *_client_tls_args(spec),
        "--port",
        str(SUPERNODE_FIRST_PORT),
        "--node-config",
        f'site="{site.name}" data-root="{site.data.path}"',
        "--health-server-address",
        f"0.0.0.0:{HEALTH_PORT}",
    ]
    if spec.security.supernode_auth and site.auth_secret_name:
        volumes.append({"name": "auth", "secret": {"secretName": site.auth_secret_name}})
        mounts.append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
        args += ["--auth-supernode-private-key", f"{AUTH_DIR}/private-key"]
    container = {
        "name": ROLE_SUPERNODE,
        "image": config.flower_image,
        # Flower's SuperNode with the site's ClientApp resident in it (no process and no
        # 3 s idle wait per message; README, "How federated training works").
        "command": ["healthrisk-supernode"],
        "args": args,
        "env": _base_env(),
        "readinessProbe": _grpc_health_probe(),
        "volumeMounts": mounts,
    }
    return _pod(
        _metadata(
            training,
            supernode_name(training.name, run, site),
            labels(training, ROLE_SUPERNODE, run=run, site=site),
        ),
        container,
        config=config,
        restart_policy="Always",
        volumes=volumes,
        node_selector=site.node_selector,
        active_deadline_seconds=spec.run_policy.active_deadline_seconds,
    )


def tracking_uri(spec: TrainingSpec, config: OperatorConfig) -> str:
    return spec.model.tracking_uri or config.tracking_uri_for_pods


@dataclass(frozen=True)
class RunData:
    """What a run trains on, resolved when it was triggered: the window (the same at every
    site) and the fingerprint of sites, windows and spec that RetrainSkipped compares."""

    window: DateWindow
    fingerprint: str


def run_config(
    training: Training, spec: TrainingSpec, run: int, trigger: str, data: RunData, config: OperatorConfig
) -> Manifest:
    """The Flower run config (`healthrisk train submit --run-config-json`)."""
    return {
        "num-server-rounds": spec.rounds,
        "local-epochs": spec.strategy.local_epochs,
        "proximal-mu": spec.strategy.proximal_mu,
        "strategy": spec.strategy.name,
        "min-sites": spec.min_sites,
        "data-from": data.window.start.isoformat(),
        "data-to": data.window.end.isoformat(),
        "tracking-uri": tracking_uri(spec, config),
        "registered-model": spec.model.registered_name,
        "champion-alias": spec.promotion.alias,
        "training-ref": training.ref,
        "run-number": run,
        "trigger": trigger,
        "data-fingerprint": data.fingerprint,
    }


def submit_pod(
    training: Training,
    spec: TrainingSpec,
    run: int,
    attempt: int,
    trigger: str,
    data: RunData,
    config: OperatorConfig,
    *,
    active_deadline_seconds: int,
) -> Manifest:
    """The pod that submits the Flower run and exits with its outcome (0 = success)."""
    run_config_json = json.dumps(run_config(training, spec, run, trigger, data, config), sort_keys=True)
    container = {
        "name": ROLE_SUBMIT,
        "image": config.flower_image,
        "command": ["healthrisk"],
        "args": [
            "train",
            "submit",
            "--superlink",
            superlink_address(training, run),
            *_client_tls_args(spec),
            "--run-config-json",
            run_config_json,
        ],
        "env": [*_base_env(), {"name": ENV_TRACKING_URI, "value": tracking_uri(spec, config)}],
        "volumeMounts": _tls_mount(spec),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return _pod(
        _metadata(
            training,
            submit_name(training.name, run, attempt),
            labels(training, ROLE_SUBMIT, run=run, extra={LABEL_ATTEMPT: str(attempt)}),
        ),
        container,
        config=config,
        restart_policy="Never",
        volumes=_tls_volume(spec, ca_only=True),
        node_selector={},
        active_deadline_seconds=active_deadline_seconds,
    )


def _site_local_pod(
    training: Training,
    site: Site,
    config: OperatorConfig,
    *,
    name: str,
    role: str,
    round_label: tuple[str, str],
    args: list[str],
    env: list[Manifest],
    active_deadline_seconds: int,
) -> Manifest:
    """A one-off `healthrisk` pod in the drift image on the site's node with only the
    site's volume: what may leave it is what the command prints or publishes."""
    volume, mount = _site_volume(site)
    container = {
        "name": role,
        "image": config.drift_image,
        "command": ["healthrisk"],
        "args": args,
        "env": env,
        "volumeMounts": [mount],
        # A pod that fails leaves its error in the pod status, not only in a log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    label, value = round_label
    return _pod(
        _metadata(training, name, labels(training, role, site=site, extra={label: value})),
        container,
        config=config,
        restart_policy="Never",
        volumes=[volume],
        node_selector=site.node_selector,
        active_deadline_seconds=active_deadline_seconds,
    )


def inventory_pod(
    training: Training,
    round_: int,
    site: Site,
    config: OperatorConfig,
    *,
    active_deadline_seconds: int,
) -> Manifest:
    """Lists a site's days (file names, nothing read) as one JSON line: what a rolling
    window and a drift check's last day are resolved from. No network, no credentials."""
    return _site_local_pod(
        training,
        site,
        config,
        name=inventory_pod_name(training.name, round_, site),
        role=ROLE_INVENTORY,
        round_label=(LABEL_INVENTORY, str(round_)),
        args=["data", "days", "--site", site.name, "--data-root", site.data.path],
        env=_base_env(),
        active_deadline_seconds=active_deadline_seconds,
    )


def drift_pod(
    training: Training,
    spec: TrainingSpec,
    check: int,
    site: Site,
    until: dt.date,
    config: OperatorConfig,
    *,
    active_deadline_seconds: int,
) -> Manifest:
    """A site-local drift check of the site's new days through `until` (the newest day
    every site has): reads the site's volume, publishes only the summary."""
    if spec.retraining.drift is None:
        raise ValueError("drift pods need spec.retraining.drift")
    return _site_local_pod(
        training,
        site,
        config,
        name=drift_pod_name(training.name, check, site),
        role=ROLE_DRIFT,
        round_label=(LABEL_DRIFT_CHECK, str(check)),
        args=[
            "drift",
            "check",
            "--site",
            site.name,
            "--data-root",
            site.data.path,
            "--until",
            until.isoformat(),
            "--current-days",
            str(spec.retraining.drift.window_days),
            "--model-name",
            spec.model.registered_name,
            "--alias",
            spec.promotion.alias,
            # The root filesystem is read-only: the HTML report is written to the pod's
            # /tmp and published to MLflow from there (the default, .state/, is not writable).
            "--report-dir",
            f"{TMP_DIR}/drift-reports",
            "--publish",
            "--json",
        ],
        env=[
            *_base_env(),
            *_mlflow_env(spec, config, config.drift_credentials_secret),
            {"name": ENV_DRIFT_THRESHOLD, "value": repr(spec.retraining.drift.threshold)},
        ],
        active_deadline_seconds=active_deadline_seconds,
    )


# ---- inference rollout ---------------------------------------------------------


def deployment_version(deployment: Manifest) -> str | None:
    """The model version a Deployment's pod template pins (our annotation)."""
    template_meta = deployment.get("spec", {}).get("template", {}).get("metadata") or {}
    return (template_meta.get("annotations") or {}).get(ANNOTATION_MODEL_VERSION)


def inference_container_name(deployment: Manifest, wanted: str | None) -> str:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    names = [c.get("name") for c in containers]
    if wanted is not None:
        if wanted not in names:
            raise ValueError(f"container {wanted!r} not in Deployment (has {names})")
        return wanted
    if not names:
        raise ValueError("Deployment has no containers")
    return str(names[0])


def rollout_patch(container: str, version: str, previous: str | None) -> Manifest:
    """Strategic-merge patch pinning the Deployment to `version` (env merges by name).

    The previous version goes on the Deployment's own metadata (not the template, which
    would roll the pods again) so a rollback still finds it after an operator restart.
    """
    return {
        "metadata": {"annotations": {ANNOTATION_PREVIOUS_MODEL_VERSION: previous}},
        "spec": {
            "template": {
                "metadata": {"annotations": {ANNOTATION_MODEL_VERSION: version}},
                "spec": {
                    "containers": [
                        {"name": container, "env": [{"name": ENV_MODEL_VERSION, "value": version}]}
                    ]
                },
            }
        },
    }


def served_label_patch(version: str) -> Manifest:
    """Once the rollout completed: the Deployment answers with `version` (a label, so that
    `kubectl get deploy -L` shows it). The pod template is untouched: no new rollout."""
    return {"metadata": {"labels": {LABEL_SERVED_VERSION: version}}}


def rollback_patch(container: str, previous: str | None, alias: str) -> Manifest:
    """Back to the version served before; with none recorded, back to serving the alias."""
    target = previous or alias
    return {
        "metadata": {
            "annotations": {ANNOTATION_PREVIOUS_MODEL_VERSION: None},
            "labels": {LABEL_SERVED_VERSION: previous if previous and previous.isdigit() else None},
        },
        "spec": {
            "template": {
                "metadata": {"annotations": {ANNOTATION_MODEL_VERSION: target}},
                "spec": {
                    "containers": [{"name": container, "env": [{"name": ENV_MODEL_VERSION, "value": target}]}]
                },
            }
        },
    }


# ---- events --------------------------------------------------------------------


def event(
    training: Training, *, event_type: str, reason: str, message: str, now: dt.datetime, suffix: str
) -> Manifest:
    """A core/v1 Event about the training (`kubectl describe ft` shows these)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{training.name}.{suffix}", "namespace": training.namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": training.name,
            "namespace": training.namespace,
            "uid": training.uid,
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": MANAGER},
        "reportingComponent": MANAGER,
        "reportingInstance": MANAGER,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
