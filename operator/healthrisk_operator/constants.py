"""Names only the operator uses: the custom resource, phases, conditions, run results.

Names other parts share with it (label and annotation keys, roles, MLflow tags, promotion
and trigger values, ports) live in `healthrisk.contracts`, never repeated here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from healthrisk.contracts import GROUP

VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "FederatedTraining"
PLURAL: Final = "federatedtrainings"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# Ports inside run pods that are not part of the platform contract.
HEALTH_PORT: Final = 8081  # Flower's gRPC health service, probed by the kubelet
PROXY_CONTAINER: Final = "proxy"  # the SuperLink pod's door (healthrisk.federated.proxy)
REGISTRAR_CONTAINER: Final = "registrar"  # registers the sites' keys (healthrisk.federated.registrar)

# A run's Secret (builders.run_secret): besides the SuperLink's ca.crt, tls.crt and
# tls.key, the Control API's client CA (for the proxy) and the client certificate of the
# pod that submits the run. The operator makes it and never reads it back.
CONTROL_CA_FILE: Final = "control-ca.crt"
CONTROL_CERT_FILE: Final = "control.crt"
CONTROL_KEY_FILE: Final = "control.key"
# Flower's status of a SuperNode that is connected and authenticated with its key.
NODE_ONLINE: Final = "online"


class Phase(StrEnum):
    """status.phase (SPEC §7)."""

    PENDING = "Pending"  # a run waits for its pods or sites
    TRAINING = "Training"  # the Flower run is submitted
    PROMOTING = "Promoting"  # its version is registered: promotion, rollout
    MONITORING = "Monitoring"  # between runs, with a schedule or drift checks to come
    SUCCEEDED = "Succeeded"  # between runs, nothing left to do
    FAILED = "Failed"  # the last run failed, or the spec cannot be acted on
    SUSPENDED = "Suspended"


# metav1.Condition types.
COND_READY: Final = "Ready"
COND_TRAINING: Final = "Training"
COND_PROMOTED: Final = "Promoted"
COND_DRIFT: Final = "DriftDetected"
COND_FAILED: Final = "Failed"
COND_SUSPENDED: Final = "Suspended"
COND_INSECURE: Final = "Insecure"  # spec.security.insecure: no TLS, no SuperNode authentication

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
