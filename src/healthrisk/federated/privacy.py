"""Privacy guard rails of a run: the minimum row count a site answers from, and
differential privacy of the model updates.

* A site declines every message whose answer it would compute from fewer than
  `min-rows` rows (its training or its validation split): a one-row window would
  otherwise hand its row to the server as Σx. It declines with an error reply that names
  it and the rule — never the exact count — and the run goes on without it if enough
  sites remain.
* Differential privacy wraps FedAvg/FedProx in Flower's fixed-clipping DP strategies with
  an RDP accountant: site-level (ε, δ) of the released model updates, with the server
  trusted. Not covered by it: the standardisation statistics and the metrics (Flower's
  accountant leaves them out) — the row minimum and secure aggregation guard those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flwr.app import Error

from healthrisk.federated.run_config import RunConfig

if TYPE_CHECKING:
    from flwr.serverapp.strategy import FedAvg, Strategy
    from flwr.supercore.privacy_accounting import PrivacySpent

# The Error code of a reply by which a site declines to answer (Flower's own codes are < 100).
DECLINED = 451


def decline(site: str, message_type: str, why: str) -> Error:
    """The error a site replies with when it declines; `why` names a rule, never a value."""
    return Error(code=DECLINED, reason=f"{site}: declines {message_type}: {why}")


def too_few_rows(min_rows: int) -> str:
    return f"fewer than minRows={min_rows} rows in its window"


def declined_site(error: Error) -> tuple[str, str] | None:
    """(site, reason) of a decline; None for any other error."""
    if error.code != DECLINED:
        return None
    site, _, reason = (error.reason or "").partition(": ")
    return site, reason


@dataclass(frozen=True)
class Budget:
    """The privacy a run spent on its model updates: (ε, δ) after `releases` rounds."""

    epsilon: float
    delta: float
    releases: int

    @classmethod
    def of(cls, spent: PrivacySpent) -> Budget:
        return cls(float(spent.epsilon), float(spent.delta), int(spent.num_releases))

    def mechanism(self, settings: RunConfig) -> str:
        return (
            f"site-level DP of the model updates: Gaussian noise multiplier {settings.dp_noise_multiplier}, "
            f"{settings.dp_clipping}-side clipping to norm {settings.dp_clipping_norm}, RDP accountant, "
            f"{self.releases} releases"
        )


def private_strategy(base: FedAvg, settings: RunConfig, sites: int) -> Strategy:
    """`base` wrapped in Flower's fixed-clipping DP strategy with an RDP accountant.

    Every site takes part in every round (no sampling to amplify privacy), and the
    accountant needs the update of each weighted the same: `base` must average uniformly.
    """
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
    )
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=settings.dp_delta,
            population_size=sites,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    wrapper = (
        DifferentialPrivacyClientSideFixedClipping
        if settings.dp_clipping == "client"
        else DifferentialPrivacyServerSideFixedClipping
    )
    return wrapper(
        base,
        noise_multiplier=settings.dp_noise_multiplier,
        clipping_norm=settings.dp_clipping_norm,
        num_sampled_clients=sites,
        accountant=accountant,
    )
