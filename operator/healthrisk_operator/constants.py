"""Names the operator owns: the API group, label and annotation keys, roles, phases.

Platform-wide names (ports, MLflow experiment and tag names) live in
`healthrisk.constants` and are imported from there, never repeated here.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "healthrisk.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "FederatedTraining"
PLURAL: Final = "federatedtrainings"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

MANAGER: Final = "healthrisk-operator"  # Event source and app.kubernetes.io/managed-by

# Labels on every object the operator creates. The training label selects children;
# owner references (not labels) decide who owns them.
LABEL_TRAINING: Final = f"{GROUP}/training"
LABEL_RUN: Final = f"{GROUP}/run"
LABEL_ROLE: Final = f"{GROUP}/role"
LABEL_SITE: Final = f"{GROUP}/site"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
LABEL_DRIFT_CHECK: Final = f"{GROUP}/drift-check"

ROLE_SUPERLINK: Final = "superlink"
ROLE_SUPERNODE: Final = "supernode"
ROLE_SUBMIT: Final = "submit"
ROLE_DRIFT: Final = "drift"

# `kubectl annotate ft NAME healthrisk.io/retrain=now` asks for a run; the operator
# removes the annotation when it starts that run, so the same value can be set again.
ANNOTATION_RETRAIN: Final = f"{GROUP}/retrain"
# On the inference Deployment's pod template: the exact model version it serves.
ANNOTATION_MODEL_VERSION: Final = f"{GROUP}/model-version"
# On the inference Deployment's own metadata: the version it served before our rollout,
# so a rollback after an operator restart still knows where to go back to.
ANNOTATION_PREVIOUS_MODEL_VERSION: Final = f"{GROUP}/previous-model-version"

# On a registered model version: the champion it was compared against, written before
# the alias moves, so a rollback after an operator restart still knows the old champion.
TAG_PREVIOUS_CHAMPION: Final = "healthrisk.previous_champion"
PROMOTION_PROMOTED: Final = "promoted"
PROMOTION_REJECTED: Final = "rejected"
PROMOTION_ROLLED_BACK: Final = "rolled-back"

# Ports inside run pods that are not part of the platform contract.
HEALTH_PORT: Final = 8081  # Flower's gRPC health service, probed by the kubelet

# status.phase values (SPEC §7).
PHASE_PENDING: Final = "Pending"
PHASE_TRAINING: Final = "Training"
PHASE_PROMOTING: Final = "Promoting"
PHASE_MONITORING: Final = "Monitoring"
PHASE_SUCCEEDED: Final = "Succeeded"
PHASE_FAILED: Final = "Failed"
PHASE_SUSPENDED: Final = "Suspended"

# metav1.Condition types.
COND_READY: Final = "Ready"
COND_TRAINING: Final = "Training"
COND_PROMOTED: Final = "Promoted"
COND_DRIFT: Final = "DriftDetected"
COND_FAILED: Final = "Failed"
COND_SUSPENDED: Final = "Suspended"

# Why a run started (history[].trigger, run config `trigger`).
TRIGGER_CREATE: Final = "create"
TRIGGER_SPEC_CHANGE: Final = "spec-change"
TRIGGER_SCHEDULE: Final = "schedule"
TRIGGER_DRIFT: Final = "drift"
TRIGGER_MANUAL: Final = "manual"

# How a run ended (history[].result).
RESULT_SUCCEEDED: Final = "Succeeded"
RESULT_FAILED: Final = "Failed"
RESULT_SUPERSEDED: Final = "Superseded"
RESULT_ROLLED_BACK: Final = "RolledBack"

HISTORY_LIMIT: Final = 10

# Container waiting reasons that mean a pod will not start without someone's help; the
# run fails with them at startDeadlineSeconds instead of sitting Pending forever.
STUCK_WAITING_REASONS: Final = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)
