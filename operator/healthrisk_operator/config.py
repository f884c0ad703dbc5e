"""Operator settings, read once from the environment (prefix HEALTHRISK_OPERATOR_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from healthrisk.contracts import (
    ENV_MODEL_SIGNING_KEY_FILE,
    ENV_OPERATOR_PREFIX,
    ENV_TRACKING_URI,
    MLFLOW_PORT,
    OPERATOR_METRICS_PORT,
)
from healthrisk.provenance import DEFAULT_SIGNING_KEY_FILE


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_OPERATOR_PREFIX, frozen=True, populate_by_name=True)

    # Images of the pods a run is made of. Local tags with IfNotPresent: clusters here
    # have no registry, images are imported into the node's runtime (CLUSTER.md).
    flower_image: str = "health-risk/flower:dev"
    drift_image: str = "health-risk/drift:dev"
    image_pull_policy: str = "IfNotPresent"

    # Where the operator itself reads progress and versions, and the URI the pods get
    # (they differ when the operator runs outside the cluster, e.g. in tests).
    tracking_uri: str = Field(
        default=f"http://health-risk-mlflow:{MLFLOW_PORT}",
        validation_alias=AliasChoices(f"{ENV_OPERATOR_PREFIX}TRACKING_URI", ENV_TRACKING_URI),
    )
    pod_tracking_uri: str | None = None
    # The key the promotion gate signs with (healthrisk.provenance): in the cluster the
    # chart's Secret, mounted as a file; re-read at each promotion, so a rotation applies.
    model_signing_key_file: Path = Field(
        default=DEFAULT_SIGNING_KEY_FILE,
        validation_alias=AliasChoices(
            f"{ENV_OPERATOR_PREFIX}{ENV_MODEL_SIGNING_KEY_FILE}", ENV_MODEL_SIGNING_KEY_FILE
        ),
    )

    # One reconcile per object at least this often; pod and object events wake it sooner.
    reconcile_interval_s: float = 10.0
    # Reconciles run in worker threads (kubernetes and MLflow clients are blocking); the
    # asyncio default of cpu+4 threads would queue a burst of new objects behind each other.
    max_parallel_reconciles: int = 16
    # Watches are re-opened at least this often: without a server timeout a watch that
    # the API server (or a proxy) silently drops never delivers another event.
    watch_server_timeout_s: int = 300
    watch_client_timeout_s: int = 330
    watch_connect_timeout_s: int = 30
    # MLflow calls from the operator: short and without the client's long retry chain,
    # so an unreachable registry delays one reconcile, not the whole object.
    registry_timeout_s: int = 10
    # After the submit pod succeeded, how long the registered version may take to appear.
    model_version_grace_s: int = 300
    # A drift check whose pods have not all finished by then is given up.
    drift_check_timeout_s: int = 1800
    # Prometheus metrics (healthrisk_operator.metrics) on this port; 0: not served.
    metrics_port: int = OPERATOR_METRICS_PORT

    # Scheduling and security of every pod the operator creates.
    pod_node_selector: dict[str, str] = Field(default_factory=dict)
    # A gang scheduler (Volcano, scheduler-plugins) keeps a run's pods all-or-nothing;
    # tests also use a name no scheduler serves, to play the kubelet themselves.
    pod_scheduler_name: str | None = None
    pod_run_as_user: int = 10001
    pod_cpu_request: str = "100m"
    pod_memory_request: str = "256Mi"
    pod_memory_limit: str = "2Gi"

    # MLflow credentials of the run pods: Secrets (keys username, password) in every
    # namespace the operator runs pods in, passed to the pods by reference only. None: the
    # registry needs no credentials (an MLflow without authentication).
    training_credentials_secret: str | None = None  # SuperLink pods: their ServerApp logs and registers
    drift_credentials_secret: str | None = None  # drift pods: publish summaries, read the champion

    # What a FederatedTraining may name (healthrisk_operator.admission); None: anything
    # (an operator run by hand). The chart always sets all three.
    allowed_tracking_uris: list[str] | None = None  # beyond tracking_uri and pod_tracking_uri
    mountable_secrets: list[str] | None = None
    inference_deployments: list[str] | None = None
    # With MLflow's authentication, the registered models its users are granted on; None:
    # any (a registry without authentication).
    registered_models: list[str] | None = None

    @property
    def tracking_uri_for_pods(self) -> str:
        return self.pod_tracking_uri or self.tracking_uri


@lru_cache(maxsize=1)
def get_config() -> OperatorConfig:
    return OperatorConfig()
