"""The run configuration of the Flower App: one typed view of `context.run_config`.

The defaults here and in `app/pyproject.toml` must agree (a unit test checks it); the
local runner and the operator build overrides from this class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from healthrisk.contracts import CHAMPION_ALIAS, REGISTERED_MODEL, TRIGGER_MANUAL

STRATEGIES = ("FedAvg", "FedProx")
DP_CLIPPING = ("server", "client")


@dataclass(frozen=True)
class RunConfig:
    num_server_rounds: int = 5
    local_epochs: int = 2  # 1 ends further from centralised AUC (benchmarks/federated.py)
    learning_rate: float = 0.1
    proximal_mu: float = 0.0
    strategy: str = "FedAvg"
    min_sites: int = 2
    wait_for_sites_seconds: float = 600.0
    round_timeout_seconds: float = 300.0
    data_from: str = "2024-01-01"
    data_to: str = "2024-01-14"
    tracking_uri: str = ""
    registered_model: str = REGISTERED_MODEL
    # The serving alias: its version is evaluated beside the new model on the same
    # validation rows, so the promotion gate compares like with like (SPEC §4).
    champion_alias: str = CHAMPION_ALIAS
    training_ref: str = ""  # namespace/name/uid of a FederatedTraining
    local_run_id: str = ""  # id of an embedded `healthrisk train`
    run_number: int = 1
    trigger: str = TRIGGER_MANUAL
    code_version: str = ""
    # Privacy guard rails (SPEC §3). A site answers no message computed from fewer rows
    # than this (its training or its validation split), and says so.
    min_rows: int = 100
    per_site_metrics: bool = False  # each site's metrics in MLflow, not only the federation's
    # Differential privacy of the model updates: Gaussian noise of this multiplier on the
    # uniform average of updates clipped to `dp-clipping-norm` (0 = off), accounted at
    # `dp-delta`; clipped by the server or by each site.
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0
    dp_delta: float = 1e-5
    dp_clipping: str = "server"
    # SecAgg+: the server learns only sums of the sites' statistics, updates and metrics.
    secure_aggregation: bool = False
    # What the run trains on (healthrisk.data.window.training_fingerprint), tagged on the version.
    data_fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.num_server_rounds < 1:
            raise ValueError(f"num-server-rounds must be >= 1, got {self.num_server_rounds}")
        if self.local_epochs < 1:
            raise ValueError(f"local-epochs must be >= 1, got {self.local_epochs}")
        if self.min_sites < 1:
            raise ValueError(f"min-sites must be >= 1, got {self.min_sites}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.proximal_mu < 0:
            raise ValueError(f"proximal-mu must be >= 0, got {self.proximal_mu}")
        if self.min_rows < 1:
            raise ValueError(f"min-rows must be >= 1, got {self.min_rows}")
        if self.dp_noise_multiplier < 0:
            raise ValueError(f"dp-noise-multiplier must be >= 0, got {self.dp_noise_multiplier}")
        if self.dp_clipping_norm <= 0:
            raise ValueError(f"dp-clipping-norm must be > 0, got {self.dp_clipping_norm}")
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"dp-delta must be in (0, 1), got {self.dp_delta}")
        if self.dp_clipping not in DP_CLIPPING:
            raise ValueError(f"dp-clipping must be one of {', '.join(DP_CLIPPING)}, got {self.dp_clipping!r}")
        if self.differential_privacy and self.secure_aggregation:
            # Flower 1.42's DP strategies are Message-API strategies; SecAgg+ runs the
            # legacy workflow API: they do not compose.
            raise ValueError("differential privacy and secure aggregation cannot be combined (Flower 1.42)")
        if self.secure_aggregation and self.per_site_metrics:
            raise ValueError("per-site metrics need the per-site values secure aggregation hides")
        if not (self.training_ref or self.local_run_id):
            raise ValueError("a run needs a training-ref or a local-run-id to be traceable")

    @property
    def differential_privacy(self) -> bool:
        return self.dp_noise_multiplier > 0

    @classmethod
    def from_flower(cls, run_config: Any) -> RunConfig:
        """From `context.run_config` (keys with dashes; unknown keys refused)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in dict(run_config).items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown run config key {key!r}")
            values[name] = value
        return cls(**values)

    def to_flower(self) -> dict[str, Any]:
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}
