"""A retrain: resolve the training window, skip data already trained on, else a new
federated run → a new registered version → the promotion decision, recorded.

The record is a run in the drift experiment that ties the trigger (and, for drift, the
per-site drift runs that caused it) to the version it produced and the promotion
decision, so "why is v7 serving?" has one answer in MLflow. The decision itself is also
on the version's tags (`healthrisk.registry.promote`). What each version trained on is
its `healthrisk.data_fingerprint` tag: a trigger whose data has a version already is
skipped (`RetrainSkipped`) until a new day arrives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    TAG_DATA_FINGERPRINT,
    TAG_DRIFT_RUNS,
    TAG_PROMOTION,
    TAG_RETRAIN_MODEL,
    TAG_RETRAIN_VERSION,
    TAG_TRAINING_WINDOW,
    TAG_TRIGGER,
    TRIGGER_DRIFT,
    TRIGGER_MANUAL,
    TRIGGER_PERFORMANCE,
    TRIGGER_SCHEDULE,
)
from healthrisk.data.loader import site_days
from healthrisk.data.window import DateWindow, WindowRule, training_fingerprint
from healthrisk.drift.publish import experiment_id
from healthrisk.federated.run_config import RunConfig
from healthrisk.registry import PromotionDecision

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from rich.console import Console

RETRAIN_ARTIFACT = "retrain.json"


class Trigger(StrEnum):
    DRIFT = TRIGGER_DRIFT
    PERFORMANCE = TRIGGER_PERFORMANCE
    SCHEDULE = TRIGGER_SCHEDULE
    MANUAL = TRIGGER_MANUAL


@dataclass(frozen=True)
class RetrainOutcome:
    trigger: Trigger
    version: str
    window: DateWindow
    sites: tuple[str, ...]
    metrics: dict[str, float]
    decision: PromotionDecision
    record_run_id: str

    def as_dict(self) -> dict[str, object]:
        return {
            "trigger": self.trigger.value,
            "version": self.version,
            "window": str(self.window),
            "sites": list(self.sites),
            "metrics": self.metrics,
            "decision": self.decision.as_dict(),
        }


@dataclass(frozen=True)
class RetrainSkipped:
    """A trigger whose data a version was already trained on: nothing new to learn from."""

    trigger: Trigger
    window: DateWindow
    sites: tuple[str, ...]
    version: str  # the version that trained on exactly this data

    @property
    def reason(self) -> str:
        return f"RetrainSkipped: no new data since version {self.version} (trained on {self.window})"


@dataclass(frozen=True)
class Training:
    """What a retrain would train on: the sites, the resolved window and what shapes the model."""

    sites: tuple[str, ...]
    window: DateWindow
    rounds: int
    registered_name: str

    @classmethod
    def resolve(
        cls, data_root: Path, sites: Sequence[str], rule: WindowRule, *, rounds: int, registered_name: str
    ) -> Training:
        """The window under `rule` from the days each site has (file names only)."""
        windows = rule.resolve({site: site_days(data_root, site) for site in sites})
        (window,) = set(windows.values())  # one rule, one window for every site
        return cls(tuple(sites), window, rounds, registered_name)

    @property
    def windows(self) -> dict[str, DateWindow]:
        return dict.fromkeys(self.sites, self.window)

    @property
    def fingerprint(self) -> str:
        defaults = RunConfig(local_run_id="-")
        shaping = {
            "rounds": self.rounds,
            "registered_name": self.registered_name,
            "local_epochs": defaults.local_epochs,
            "learning_rate": defaults.learning_rate,
            "strategy": defaults.strategy,
            "proximal_mu": defaults.proximal_mu,
        }
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
        return training_fingerprint(self.windows, digest)


def trained_version(client: MlflowClient, name: str, fingerprint: str) -> str | None:
    """The newest version of `name` trained on exactly this data, if any."""
    versions = client.search_model_versions(
        f"name = '{name}' and tags.`{TAG_DATA_FINGERPRINT}` = '{fingerprint}'"
    )
    return max((str(v.version) for v in versions), key=int, default=None)


def retrain(
    client: MlflowClient,
    *,
    tracking_uri: str,
    data_root: Path,
    training: Training,
    trigger: Trigger,
    work_dir: Path,
    alias: str = CHAMPION_ALIAS,
    max_auc_drop: float = 0.0,
    drift_run_ids: Sequence[str] = (),
    console: Console | None = None,
) -> RetrainOutcome | RetrainSkipped:
    """Train `training` unless a version already did, decide promotion, and record both in
    the drift experiment."""
    from healthrisk.workflows import run_training

    already = trained_version(client, training.registered_name, training.fingerprint)
    if already is not None:
        return RetrainSkipped(trigger, training.window, training.sites, already)
    # A free SuperLink port: a monitor runs unattended beside whatever else uses 8000.
    trained = run_training(
        data_root=data_root,
        sites=list(training.sites),
        window=training.window,
        tracking_uri=tracking_uri,
        rounds=training.rounds,
        model_name=training.registered_name,
        superlink_port=0,
        work_dir=work_dir,
        promote_alias=alias,
        max_auc_drop=max_auc_drop,
        trigger=trigger.value,
        data_fingerprint=training.fingerprint,
        console=console,
    )
    decision = trained.promotion
    if decision is None:
        raise ValueError(f"a retrain promotes to a serving alias; got alias {alias!r}")
    version = trained.result.version
    metrics = dict(trained.result.metrics)
    record = client.create_run(
        experiment_id(client),
        run_name=f"retrain-{trigger.value}-v{version}",
        tags={
            TAG_TRIGGER: trigger.value,
            TAG_RETRAIN_MODEL: training.registered_name,
            TAG_RETRAIN_VERSION: version,
            TAG_TRAINING_WINDOW: str(training.window),
            TAG_PROMOTION: PROMOTION_PROMOTED if decision.promoted else PROMOTION_REJECTED,
            TAG_DRIFT_RUNS: ",".join(drift_run_ids),
        },
    )
    outcome = RetrainOutcome(
        trigger, version, training.window, training.sites, metrics, decision, record.info.run_id
    )
    client.log_dict(outcome.record_run_id, outcome.as_dict(), RETRAIN_ARTIFACT)
    client.set_terminated(outcome.record_run_id, "FINISHED")
    return outcome
