"""Pure builders: values in, Kubernetes objects (plain dicts) out. No I/O here.

Every name is deterministic (object name, run number, role, site, attempt), so creating
an object twice — after a lost response or an operator restart — hits AlreadyExists and
changes nothing. Every object carries an owner reference to its FederatedTraining, so
deleting the training deletes its runs.
"""

from __future__ import annotations

import base64
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
    PORT_NAME_CONTROL,
    PORT_NAME_FLEET,
    ROLE_DRIFT,
    ROLE_INVENTORY,
    ROLE_SUBMIT,
    ROLE_SUPERLINK,
    ROLE_SUPERNODE,
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
from healthrisk.federated.pki import CertifiedKey, SiteKeyPair
from healthrisk.federated.registrar import READY_FILE
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.constants import (
    API_VERSION,
    CONTROL_CA_FILE,
    CONTROL_CERT_FILE,
    CONTROL_KEY_FILE,
    HEALTH_PORT,
    KIND,
    PROXY_CONTAINER,
    REGISTRAR_CONTAINER,
)
from healthrisk_operator.spec import Site, TrainingSpec

Manifest = dict[str, Any]

# Mount points in run pods.
CERTS_DIR = "/certs"  # the SuperLink's CA (and, in its own pod, certificate and key)
CONTROL_DIR = "/control"  # the Control API's client CA (proxy) or client certificate
AUTH_DIR = "/auth"  # a site's SuperNode key
KEYS_DIR = "/site-keys"  # every site's public key, in the SuperLink pod's registrar
STATE_DIR = "/var/lib/flower"  # the SuperLink's database, when its messages are captured
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


def run_secret_name(training_name: str, run: int) -> str:
    """The run's key material: its Control CA and client certificate, and (unless the
    training brings its own) the SuperLink's CA, certificate and key."""
    return f"{run_prefix(training_name, run)}-flower"


def site_key_secret_name(training_name: str, site: Site) -> str:
    """The Secret holding a site's SuperNode key: the site's own, or one we generate."""
    return site.auth_secret_name or f"{training_name}-{site.k8s_name}-supernode-key"


def superlink_host(training: Training, run: int) -> str:
    return f"{superlink_name(training.name, run)}.{training.namespace}.svc"


def superlink_dns_names(training: Training, run: int) -> list[str]:
    """The names a run's SuperLink certificate must carry (the pki adds loopback)."""
    host = superlink_host(training, run)
    return [host, f"{host}.cluster.local"]


def fleet_address(training: Training, run: int) -> str:
    return f"{superlink_host(training, run)}:{SUPERLINK_FLEET_PORT}"


def control_address(training: Training, run: int) -> str:
    return f"{superlink_host(training, run)}:{SUPERLINK_CONTROL_PORT}"


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


def _container(config: OperatorConfig, container: Manifest) -> Manifest:
    return {
        "imagePullPolicy": config.image_pull_policy,
        "securityContext": _container_security(),
        "resources": {
            "requests": {"cpu": config.pod_cpu_request, "memory": config.pod_memory_request},
            "limits": {"memory": config.pod_memory_limit},
        },
        **container,
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}, *container.get("volumeMounts", [])],
    }


def _pod(
    metadata: Manifest,
    containers: list[Manifest],
    *,
    config: OperatorConfig,
    restart_policy: str,
    volumes: list[Manifest],
    node_selector: Mapping[str, str],
    active_deadline_seconds: int | None,
    init_containers: list[Manifest] | None = None,
) -> Manifest:
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
        "containers": [_container(config, c) for c in containers],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes],
    }
    if init_containers:
        spec["initContainers"] = [_container(config, c) for c in init_containers]
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


# ---- key material ---------------------------------------------------------------


def run_secret(training: Training, run: int, control: CertifiedKey, server: CertifiedKey | None) -> Manifest:
    """The run's Secret from freshly made material (the caller makes it: keys are not pure)."""
    data = {
        CONTROL_CA_FILE: control.ca_pem,
        CONTROL_CERT_FILE: control.cert_pem,
        CONTROL_KEY_FILE: control.key_pem,
    }
    if server is not None:
        data |= {TLS_CA_FILE: server.ca_pem, TLS_CERT_FILE: server.cert_pem, TLS_KEY_FILE: server.key_pem}
    name = run_secret_name(training.name, run)
    return _secret(_metadata(training, name, labels(training, ROLE_SUPERLINK, run=run)), data)


def site_key_secret(training: Training, site: Site, pair: SiteKeyPair) -> Manifest:
    """A generated SuperNode key of a site; it lives as long as the training."""
    name = site_key_secret_name(training.name, site)
    data = {SITE_PRIVATE_KEY_FILE: pair.private_openssh, SITE_PUBLIC_KEY_FILE: pair.public_openssh}
    return _secret(_metadata(training, name, labels(training, ROLE_SUPERNODE, site=site)), data)


def _secret(metadata: Manifest, data: Mapping[str, bytes]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {key: base64.b64encode(value).decode() for key, value in sorted(data.items())},
    }


def _server_tls_secret(training: Training, spec: TrainingSpec, run: int) -> str:
    return spec.security.tls_secret_name or run_secret_name(training.name, run)


def _secret_volume(name: str, secret: str, keys: list[str]) -> Manifest:
    return {"name": name, "secret": {"secretName": secret, "items": [{"key": k, "path": k} for k in keys]}}


def _mount(name: str, path: str) -> Manifest:
    return {"name": name, "mountPath": path, "readOnly": True}


def _ca_volume(training: Training, spec: TrainingSpec, run: int) -> list[Manifest]:
    if spec.security.insecure:
        return []
    return [_secret_volume("tls", _server_tls_secret(training, spec, run), [TLS_CA_FILE])]


def _ca_mount(spec: TrainingSpec) -> list[Manifest]:
    return [] if spec.security.insecure else [_mount("tls", CERTS_DIR)]


def _client_tls_args(spec: TrainingSpec) -> list[str]:
    if spec.security.insecure:
        return ["--insecure"]
    return ["--root-certificates", f"{CERTS_DIR}/{TLS_CA_FILE}"]


# ---- run pods -------------------------------------------------------------------


def superlink_pod(
    training: Training, spec: TrainingSpec, run: int, config: OperatorConfig, *, capture: bool = False
) -> Manifest:
    """The SuperLink on loopback, and the proxy that is its pod's only door (proxy.py).

    With `capture` (an audit asked for it) the SuperLink keeps its state in a database in
    the pod, prepared first with triggers that copy every message (capture.py).
    """
    secure = not spec.security.insecure
    args = [
        "--host",
        "127.0.0.1",
        "--port",
        str(SUPERLINK_PORT),
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
        "--health-server-address",
        f"0.0.0.0:{HEALTH_PORT}",
    ]
    if secure:
        # The CA goes to the SuperLink's own SuperExec, which dials 127.0.0.1 and verifies.
        args += [
            "--ssl-ca-certfile",
            f"{CERTS_DIR}/{TLS_CA_FILE}",
            "--ssl-certfile",
            f"{CERTS_DIR}/{TLS_CERT_FILE}",
            "--ssl-keyfile",
            f"{CERTS_DIR}/{TLS_KEY_FILE}",
            "--enable-supernode-auth",
        ]
    else:
        args.append("--insecure")
    database = f"{STATE_DIR}/superlink.db"
    if capture:
        args += ["--database", database]
    tls_mounts = [_mount("tls", CERTS_DIR)] if secure else []
    state_mounts = [{"name": "state", "mountPath": STATE_DIR}] if capture else []
    superlink = {
        "name": ROLE_SUPERLINK,
        "image": config.flower_image,
        "command": ["flower-superlink"],
        "args": args,
        # The ServerApp, started by the SuperLink as a subprocess, inherits this environment:
        # it logs the rounds and registers the model with the training credential.
        "env": [*_base_env(), *_mlflow_env(spec, config, config.training_credentials_secret)],
        "readinessProbe": _grpc_health_probe(),
        "volumeMounts": [*tls_mounts, *state_mounts],
    }
    proxy_args = ["federation", "proxy", "--work-dir", f"{TMP_DIR}/proxy"]
    proxy_args += (
        ["--tls-dir", CERTS_DIR, "--control-ca", f"{CONTROL_DIR}/{CONTROL_CA_FILE}"]
        if secure
        else ["--insecure"]
    )
    proxy = {
        "name": PROXY_CONTAINER,
        "image": config.flower_image,
        "command": ["healthrisk"],
        "args": proxy_args,
        "env": _base_env(),
        "ports": [
            {"name": PORT_NAME_FLEET, "containerPort": SUPERLINK_FLEET_PORT},
            {"name": PORT_NAME_CONTROL, "containerPort": SUPERLINK_CONTROL_PORT},
        ],
        "readinessProbe": {"tcpSocket": {"port": PORT_NAME_FLEET}, "periodSeconds": 5, "failureThreshold": 3},
        "volumeMounts": [*tls_mounts, *([_mount("control", CONTROL_DIR)] if secure else [])],
    }
    containers = [superlink, proxy]
    volumes: list[Manifest] = []
    if secure:
        volumes += [
            _secret_volume(
                "tls", _server_tls_secret(training, spec, run), [TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE]
            ),
            _secret_volume("control", run_secret_name(training.name, run), [CONTROL_CA_FILE]),
            _site_keys_volume(training, spec),
        ]
        containers.append(_registrar(spec, config))
    init_containers = []
    if capture:
        volumes.append({"name": "state", "emptyDir": {}})
        init_containers.append(
            {
                "name": "capture",
                "image": config.flower_image,
                "command": ["healthrisk"],
                "args": ["federation", "capture-init", database],
                "env": _base_env(),
                "volumeMounts": state_mounts,
            }
        )
    name = superlink_name(training.name, run)
    return _pod(
        _metadata(training, name, labels(training, ROLE_SUPERLINK, run=run)),
        containers,
        config=config,
        restart_policy="Always",
        volumes=volumes,
        node_selector={},
        active_deadline_seconds=spec.run_policy.active_deadline_seconds,
        init_containers=init_containers,
    )


def _site_keys_volume(training: Training, spec: TrainingSpec) -> Manifest:
    """Every site's public key, one file per site named after it, mounted by reference
    (the operator never reads a key Secret). Optional: a site whose Secret is missing is
    reported by the registrar instead of keeping the whole run from starting."""
    return {
        "name": "site-keys",
        "projected": {
            "sources": [
                {
                    "secret": {
                        "name": site_key_secret_name(training.name, site),
                        "items": [{"key": SITE_PUBLIC_KEY_FILE, "path": site.name}],
                        "optional": True,
                    }
                }
                for site in spec.sites
            ]
        },
    }


def _registrar(spec: TrainingSpec, config: OperatorConfig) -> Manifest:
    """Registers the sites' keys with the SuperLink on loopback (registrar.py); ready once
    they are all registered, which is when the operator starts the SuperNodes."""
    work = f"{TMP_DIR}/registrar"
    sites = [arg for site in spec.sites for arg in ("--site", site.name)]
    return {
        "name": REGISTRAR_CONTAINER,
        "image": config.flower_image,
        "command": ["healthrisk"],
        "args": [
            "federation",
            "registrar",
            "--keys-dir",
            KEYS_DIR,
            "--root-certificates",
            f"{CERTS_DIR}/{TLS_CA_FILE}",
            "--work-dir",
            work,
            *sites,
        ],
        "env": _base_env(),
        "readinessProbe": {
            "exec": {"command": ["test", "-f", f"{work}/{READY_FILE}"]},
            "periodSeconds": 2,
            "failureThreshold": 1,
        },
        "volumeMounts": [_mount("tls", CERTS_DIR), _mount("site-keys", KEYS_DIR)],
    }


def superlink_service(training: Training, run: int) -> Manifest:
    """The run's SuperLink as the proxy exposes it: Fleet and Control, nothing else."""
    name = superlink_name(training.name, run)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(training, name, labels(training, ROLE_SUPERLINK, run=run)),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_TRAINING: training.name, LABEL_RUN: str(run), LABEL_ROLE: ROLE_SUPERLINK},
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
    """A site's SuperNode: it reaches the run's Fleet listener only, trusts the run's CA,
    and signs every request with the site's key (the only key its SuperLink accepts)."""
    volume, mount = _site_volume(site)
    volumes = [volume, *_ca_volume(training, spec, run)]
    mounts = [mount, *_ca_mount(spec)]
    args = [
        "--superlink",
        fleet_address(training, run),
        *_client_tls_args(spec),
        "--port",
        str(SUPERNODE_FIRST_PORT),
        "--node-config",
        f'site="{site.name}" data-root="{site.data.path}"',
        "--health-server-address",
        f"0.0.0.0:{HEALTH_PORT}",
    ]
    if not spec.security.insecure:
        volumes.append(
            _secret_volume("auth", site_key_secret_name(training.name, site), [SITE_PRIVATE_KEY_FILE])
        )
        mounts.append(_mount("auth", AUTH_DIR))
        args += ["--auth-supernode-private-key", f"{AUTH_DIR}/{SITE_PRIVATE_KEY_FILE}"]
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
        [container],
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
        **spec.privacy.run_config(),
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
    volumes = _ca_volume(training, spec, run)
    mounts = _ca_mount(spec)
    args = ["train", "submit", "--superlink", control_address(training, run), *_client_tls_args(spec)]
    if not spec.security.insecure:
        # The proxy's Control listener admits only the run's client certificate.
        volumes.append(
            _secret_volume(
                "control", run_secret_name(training.name, run), [CONTROL_CERT_FILE, CONTROL_KEY_FILE]
            )
        )
        mounts.append(_mount("control", CONTROL_DIR))
        args += [
            "--client-certificate",
            f"{CONTROL_DIR}/{CONTROL_CERT_FILE}",
            "--client-key",
            f"{CONTROL_DIR}/{CONTROL_KEY_FILE}",
        ]
    container = {
        "name": ROLE_SUBMIT,
        "image": config.flower_image,
        "command": ["healthrisk"],
        "args": [*args, "--run-config-json", run_config_json],
        "env": [*_base_env(), {"name": ENV_TRACKING_URI, "value": tracking_uri(spec, config)}],
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return _pod(
        _metadata(
            training,
            submit_name(training.name, run, attempt),
            labels(training, ROLE_SUBMIT, run=run, extra={LABEL_ATTEMPT: str(attempt)}),
        ),
        [container],
        config=config,
        restart_policy="Never",
        volumes=volumes,
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
        [container],
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
