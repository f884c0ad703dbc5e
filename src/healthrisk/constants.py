"""Names shared across the platform: ports, MLflow names, tag keys, env vars."""

from __future__ import annotations

REGISTERED_MODEL = "health-risk"
CHAMPION_ALIAS = "champion"
TRAINING_EXPERIMENT = "health-risk-federated"
DRIFT_EXPERIMENT = "health-risk-drift"

SUPERLINK_PORT = 8000
SUPERNODE_FIRST_PORT = 9094
INFERENCE_PORT = 8080
MLFLOW_PORT = 5000

DEFAULT_DRIFT_THRESHOLD = 0.5

# Environment variables whose meaning is part of the contract.
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_SERVER_ADDRESS = "SERVER_ADDRESS"
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_DRIFT_THRESHOLD = "DRIFT_THRESHOLD"

# Tags on registered model versions (and on their training runs).
TAG_PREFIX = "healthrisk."
TAG_TRAINING = TAG_PREFIX + "training"  # namespace/name/uid of a FederatedTraining
TAG_LOCAL_RUN = TAG_PREFIX + "local_run_id"  # id of an embedded `healthrisk train`
TAG_RUN_NUMBER = TAG_PREFIX + "run_number"
TAG_SITES = TAG_PREFIX + "sites"
TAG_DATA_WINDOWS = TAG_PREFIX + "data_windows"  # JSON {site: "from..to"}
TAG_ROUNDS = TAG_PREFIX + "rounds"
TAG_STRATEGY = TAG_PREFIX + "strategy"
TAG_CODE_VERSION = TAG_PREFIX + "code_version"
TAG_VAL_AUC = TAG_PREFIX + "val_auc"
TAG_PROMOTION = TAG_PREFIX + "promotion"  # "promoted" or "rejected"
TAG_PROMOTION_REASON = TAG_PREFIX + "promotion_reason"
TAG_TRIGGER = TAG_PREFIX + "trigger"
