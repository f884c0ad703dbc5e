"""The names and numbers the platform's parts use to talk to each other, defined once.

Training, the operator, the inference service, the chart and the tests meet on these
strings; a copy with a typo fails silently (a metric nobody reads, a label nothing
selects), so every part imports them from here. tests/unit/test_contracts.py fails on a
literal copy anywhere in code and checks that the chart's and images' copies agree.
"""

from __future__ import annotations

from typing import Final

# MLflow: where models and runs live; the operator, the service and the drift pods find them by name.
REGISTERED_MODEL: Final = "health-risk"
CHAMPION_ALIAS: Final = "champion"
LATEST_VERSION: Final = "latest"  # MODEL_VERSION value: the newest version the gate accepted
TRAINING_EXPERIMENT: Final = "health-risk-federated"
DRIFT_EXPERIMENT: Final = "health-risk-drift"

# MLflow metrics of a training run (step = round): the operator follows progress with them.
METRIC_ROUND: Final = "round"
METRIC_TRAIN_LOSS: Final = "train_loss"
METRIC_VAL_LOSS: Final = "val_loss"
METRIC_VAL_AUC: Final = "val_auc"
METRIC_VAL_ACCURACY: Final = "val_accuracy"
VAL_METRICS: Final = (METRIC_VAL_LOSS, METRIC_VAL_AUC, METRIC_VAL_ACCURACY)
# The serving champion on the same validation rows, from the final evaluate (SPEC §4: like with like).
METRIC_CHAMPION_VAL_LOSS: Final = "champion_val_loss"
METRIC_CHAMPION_VAL_AUC: Final = "champion_val_auc"
METRIC_CHAMPION_VAL_ACCURACY: Final = "champion_val_accuracy"
CHAMPION_VAL_METRICS: Final = (
    METRIC_CHAMPION_VAL_LOSS,
    METRIC_CHAMPION_VAL_AUC,
    METRIC_CHAMPION_VAL_ACCURACY,
)
METRIC_TRAIN_ROWS: Final = "train_rows"  # per site only, after the federated statistics
METRIC_DP_EPSILON: Final = "dp_epsilon"  # under differential privacy: ε spent so far (step = round)


def site_metric(site: str, metric: str) -> str:
    """The name of one site's value of a metric (logged on request, SPEC §3)."""
    return f"site.{site}.{metric}"


# Keys of the metric records a site sends: the server weights the sites by these counts
# (`num-examples` is also the key Flower's FedAvg weights by).
RECORD_COUNT: Final = "count"
RECORD_NUM_EXAMPLES: Final = "num-examples"
RECORD_VAL_EXAMPLES: Final = "val-examples"
# Under differential privacy the accountant needs every site weighted the same: each sends 1.
RECORD_UNIFORM_WEIGHT: Final = "uniform-weight"

# MLflow tags on registered versions, training runs and drift runs: provenance and decisions.
TAG_PREFIX: Final = "healthrisk."
TAG_TRAINING: Final = TAG_PREFIX + "training"  # namespace/name/uid of a FederatedTraining
TAG_LOCAL_RUN: Final = TAG_PREFIX + "local_run_id"  # id of an embedded `healthrisk train`
TAG_RUN_NUMBER: Final = TAG_PREFIX + "run_number"
TAG_SITES: Final = TAG_PREFIX + "sites"
TAG_DATA_WINDOWS: Final = TAG_PREFIX + "data_windows"  # JSON {site: "from..to"}
TAG_ROUNDS: Final = TAG_PREFIX + "rounds"
TAG_STRATEGY: Final = TAG_PREFIX + "strategy"
TAG_CODE_VERSION: Final = TAG_PREFIX + "code_version"
TAG_VAL_AUC: Final = TAG_PREFIX + "val_auc"
TAG_TRIGGER: Final = TAG_PREFIX + "trigger"  # one of the TRIGGER_* values
TAG_MODEL_VERSION: Final = TAG_PREFIX + "model_version"  # on a training run: the version it registered
TAG_PROMOTION: Final = TAG_PREFIX + "promotion"  # one of the PROMOTION_* values
TAG_PROMOTION_REASON: Final = TAG_PREFIX + "promotion_reason"
# The champion a version was compared against, written before the alias moves, so a
# rollback after an operator restart still knows the old champion.
TAG_PREVIOUS_CHAMPION: Final = TAG_PREFIX + "previous_champion"
TAG_SITE: Final = TAG_PREFIX + "site"  # drift run: the site it checked
TAG_REFERENCE_WINDOW: Final = TAG_PREFIX + "reference_window"
TAG_CURRENT_WINDOW: Final = TAG_PREFIX + "current_window"
TAG_REFERENCE_SOURCE: Final = TAG_PREFIX + "reference_source"
TAG_DRIFT_DETECTED: Final = TAG_PREFIX + "drift_detected"
TAG_DRIFTED_COLUMNS: Final = TAG_PREFIX + "drifted_columns"
TAG_RETRAIN_MODEL: Final = TAG_PREFIX + "retrain_model"  # retrain record: what it produced
TAG_RETRAIN_VERSION: Final = TAG_PREFIX + "retrain_version"
TAG_DRIFT_RUNS: Final = TAG_PREFIX + "drift_runs"  # retrain record: the drift runs that caused it
TAG_TRAINING_WINDOW: Final = TAG_PREFIX + "training_window"
# Written by the promotion gate before it moves the alias; the service verifies them
# (healthrisk.provenance).
TAG_PARAMETERS_SHA256: Final = TAG_PREFIX + "parameters_sha256"
TAG_PROMOTION_HMAC: Final = TAG_PREFIX + "promotion_hmac"
TAG_PROMOTION_KEY_ID: Final = TAG_PREFIX + "promotion_key_id"
# A registered version's final training metrics as JSON: the service shows them in /model
# with read access to the model alone (no access to the training experiment).
TAG_METRICS: Final = TAG_PREFIX + "metrics"
# Privacy of a training run and of the version it registered.
TAG_DP_EPSILON: Final = TAG_PREFIX + "dp_epsilon"  # (ε, δ) spent on the model updates
TAG_DP_DELTA: Final = TAG_PREFIX + "dp_delta"
TAG_DP_MECHANISM: Final = TAG_PREFIX + "dp_mechanism"  # what the (ε, δ) covers, in words
TAG_SECURE_AGGREGATION: Final = TAG_PREFIX + "secure_aggregation"  # "true": the server saw sums only
TAG_DECLINED_SITES: Final = TAG_PREFIX + "declined_sites"  # JSON {site: why it declined}
TAG_LOST_SITES: Final = TAG_PREFIX + "lost_sites"  # JSON {site: where the run lost it and how}
# What a run trained on (healthrisk.data.window.training_fingerprint): the same data is never retrained.
TAG_DATA_FINGERPRINT: Final = TAG_PREFIX + "data_fingerprint"
# Like with like (SPEC §4): the serving champion, evaluated on the new run's validation rows.
TAG_CHAMPION_VERSION: Final = TAG_PREFIX + "champion_version"
TAG_CHAMPION_VAL_AUC: Final = TAG_PREFIX + "champion_val_auc"
TAG_DRIFT_DRIVER: Final = TAG_PREFIX + "drift_driver"  # drift run: what moved it (a column, total, refit)

# Values of TAG_PROMOTION: the gate's verdict, and the operator's rollback.
PROMOTION_PROMOTED: Final = "promoted"
PROMOTION_REJECTED: Final = "rejected"
PROMOTION_ROLLED_BACK: Final = "rolled-back"

# Why a run started: TAG_TRIGGER, the run config's `trigger`, the operator's history.
TRIGGER_CREATE: Final = "create"
TRIGGER_SPEC_CHANGE: Final = "spec-change"
TRIGGER_SCHEDULE: Final = "schedule"
TRIGGER_DRIFT: Final = "drift"
TRIGGER_MANUAL: Final = "manual"
TRIGGER_PERFORMANCE: Final = "performance"  # the champion's AUC on new labelled days fell

# Kubernetes keys under the API group: the operator writes them, the chart's
# NetworkPolicies and the tests select on them.
GROUP: Final = "healthrisk.io"
LABEL_TRAINING: Final = f"{GROUP}/training"
LABEL_RUN: Final = f"{GROUP}/run"
LABEL_ROLE: Final = f"{GROUP}/role"
LABEL_SITE: Final = f"{GROUP}/site"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
LABEL_DRIFT_CHECK: Final = f"{GROUP}/drift-check"
LABEL_INVENTORY: Final = f"{GROUP}/inventory"  # the round of a days-listing pod
# `kubectl annotate ft NAME healthrisk.io/retrain=now` asks for a run; the operator
# removes the annotation when it starts that run, so the same value can be set again.
ANNOTATION_RETRAIN: Final = f"{GROUP}/retrain"
# On the inference Deployment's pod template: the exact model version it serves.
ANNOTATION_MODEL_VERSION: Final = f"{GROUP}/model-version"
# On the inference Deployment's own labels: the version it answers with once a rollout
# completed (`kubectl get deploy -L healthrisk.io/served-version`); absent: none yet.
LABEL_SERVED_VERSION: Final = f"{GROUP}/served-version"
# On the inference Deployment's own metadata: the version it served before our rollout,
# so a rollback after an operator restart still knows where to go back to.
ANNOTATION_PREVIOUS_MODEL_VERSION: Final = f"{GROUP}/previous-model-version"
# `healthrisk.io/capture-superlink-messages: "true"` on a FederatedTraining: for an audit,
# the SuperLink pods of its next runs keep a copy of every message that passes them
# (healthrisk.federated.capture), until the pod is deleted.
ANNOTATION_CAPTURE_MESSAGES: Final = f"{GROUP}/capture-superlink-messages"
# Put on every FederatedTraining by operators before 0.2; today's operator removes it.
FINALIZER: Final = f"{GROUP}/operator"
# On a pod of the release namespace, "true" lets it call the inference API (the chart's
# default networkPolicy.inferenceFrom).
LABEL_INFERENCE_CLIENT: Final = f"{GROUP}/inference-client"

# Values of LABEL_ROLE: which pod of a run this is (NetworkPolicies allow flows by role).
ROLE_SUPERLINK: Final = "superlink"
ROLE_SUPERNODE: Final = "supernode"
ROLE_SUBMIT: Final = "submit"
ROLE_DRIFT: Final = "drift"
ROLE_INVENTORY: Final = "inventory"  # lists a site's days (file names only); needs no network

# Kubernetes' recommended labels, as the chart's _helpers.tpl and the operator write them.
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
APP_NAME: Final = "health-risk"  # the product: Python distribution, chart, app.kubernetes.io/name
MANAGER: Final = "healthrisk-operator"  # Event source and LABEL_MANAGED_BY of what the operator creates

# Ports: the same numbers in code, chart, images and compose.
# Flower 1.42 serves Fleet, Control and Runtime on one port. In a run's SuperLink pod it
# listens on loopback only, behind a proxy that exposes Fleet alone to SuperNodes and
# Control alone, with client certificates, to the operator and its run submitter.
SUPERLINK_PORT: Final = 8000  # Flower's default in 1.42: the SuperLink itself
SUPERLINK_FLEET_PORT: Final = 9092  # the proxy's Fleet listener (SuperNodes)
SUPERLINK_CONTROL_PORT: Final = 9091  # the proxy's Control listener (mutual TLS)
# Names of those two ports on the SuperLink pod and Service (NetworkPolicies use them).
PORT_NAME_FLEET: Final = "fleet"
PORT_NAME_CONTROL: Final = "control"
SUPERNODE_FIRST_PORT: Final = 9094  # a SuperNode's ClientAppIO port (Flower's default)
INFERENCE_PORT: Final = 8080
# The inference service's Prometheus metrics, apart from the API: only Prometheus may reach it.
INFERENCE_METRICS_PORT: Final = 9180
MLFLOW_PORT: Final = 5000
OPERATOR_HEALTH_PORT: Final = 8090  # the operator's /healthz, probed by the kubelet
OPERATOR_METRICS_PORT: Final = 8091  # the operator's Prometheus metrics (OPERATOR_METRICS below)

# The operator's Prometheus metrics, labelled by namespace and training; the chart's
# training-and-drift dashboard (charts/health-risk/dashboards/training.json) reads them.
METRIC_RUNS: Final = "healthrisk_training_runs_total"  # + trigger, result: finished runs
METRIC_SKIPPED: Final = "healthrisk_training_skipped_total"  # + trigger: RetrainSkipped
METRIC_PROMOTIONS: Final = (
    "healthrisk_promotion_decisions_total"  # + decision: promoted, rejected, rolled-back
)
METRIC_CURRENT_RUN: Final = "healthrisk_training_run"  # the current or last run number
METRIC_CURRENT_ROUND: Final = "healthrisk_training_round"  # its round
METRIC_RUN_AUC: Final = "healthrisk_training_auc"  # + model: new, champion (same validation rows)
METRIC_DRIFT_SCORE: Final = "healthrisk_drift_score"  # + site: the last check's score
METRIC_LIVE_AUC: Final = "healthrisk_champion_live_auc"  # + site: the champion on new labelled days
OPERATOR_METRICS: Final = (
    METRIC_RUNS,
    METRIC_SKIPPED,
    METRIC_PROMOTIONS,
    METRIC_CURRENT_RUN,
    METRIC_CURRENT_ROUND,
    METRIC_RUN_AUC,
    METRIC_DRIFT_SCORE,
    METRIC_LIVE_AUC,
)

# Environment variables whose meaning is part of the contract (README, chart, pods).
ENV_TRACKING_URI: Final = "MLFLOW_TRACKING_URI"
# MLflow's own client variables for its basic auth: set from a component's credential Secret.
ENV_TRACKING_USERNAME: Final = "MLFLOW_TRACKING_USERNAME"
ENV_TRACKING_PASSWORD: Final = "MLFLOW_TRACKING_PASSWORD"
# Keys of an MLflow credential Secret (one per component; the chart generates them, the
# operator refers its run pods to them by name and never reads them).
SECRET_KEY_USERNAME: Final = "username"
SECRET_KEY_PASSWORD: Final = "password"
ENV_SERVER_ADDRESS: Final = "SERVER_ADDRESS"
ENV_MODEL_NAME: Final = "MODEL_NAME"
ENV_MODEL_VERSION: Final = "MODEL_VERSION"
ENV_MODEL_URI: Final = "MODEL_URI"
ENV_INFERENCE_API_KEY: Final = "INFERENCE_API_KEY"
# The promotion-signing key as a file: the gate signs with it, the service verifies with it.
ENV_MODEL_SIGNING_KEY_FILE: Final = "MODEL_SIGNING_KEY_FILE"
ENV_MODEL_PROVENANCE: Final = "MODEL_PROVENANCE"  # required (default) or off
ENV_DRIFT_THRESHOLD: Final = "DRIFT_THRESHOLD"
ENV_DATA_ROOT: Final = "HEALTHRISK_DATA_ROOT"
ENV_OPERATOR_PREFIX: Final = "HEALTHRISK_OPERATOR_"  # every operator setting, e.g. ..._TRACKING_URI

# Documented defaults that several parts must agree on.
DEFAULT_DRIFT_THRESHOLD: Final = 0.5

# Flower security material in Secrets: the layout of Kubernetes TLS Secrets (what
# cert-manager writes, and a user may bring), and of a site's SuperNode key Secret.
TLS_CA_FILE: Final = "ca.crt"
TLS_CERT_FILE: Final = "tls.crt"
TLS_KEY_FILE: Final = "tls.key"
SITE_PRIVATE_KEY_FILE: Final = "private-key"  # OpenSSH EC private key, mounted only at the site
SITE_PUBLIC_KEY_FILE: Final = "public-key"  # OpenSSH public key, registered with the SuperLink
