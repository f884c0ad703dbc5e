"""A retrain: new federated run → new registered version → promotion decision, recorded.

The record is a run in the drift experiment that ties the trigger (and, for drift, the
per-site drift runs that caused it) to the version it produced and the promotion
decision, so "why is v7 serving?" has one answer in MLflow. The decision itself is also
on the version's tags (`healthrisk.registry.promote`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    REGISTERED_MODEL,
    TAG_DRIFT_RUNS,
    TAG_PROMOTION,
    TAG_RETRAIN_MODEL,
    TAG_RETRAIN_VERSION,
    TAG_TRAINING_WINDOW,
    TAG_TRIGGER,
    TRIGGER_DRIFT,
    TRIGGER_MANUAL,
    TRIGGER_SCHEDULE,
)
from healthrisk.data.window import DateWindow
from healthrisk.drift.publish import experiment_id
from healthrisk.drift.reference import ChampionWindows
from healthrisk.drift.sites import data_days
from healthrisk.registry import PromotionDecision

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from rich.console import Console

RETRAIN_ARTIFACT = "retrain.json"


class Trigger(StrEnum):
    DRIFT = TRIGGER_DRIFT
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


def training_window(
    data_root: Path, sites: Sequence[str], *, champion: ChampionWindows | None, until: dt.date | None
) -> DateWindow:
    """From where the champion's training began (or the oldest data) to `until` (or the newest).

    Keeping the champion's start means the new model still sees the population it was
    serving well, and adds the new days that drifted or arrived since.
    """
    days = [day for site in sites for day in data_days(data_root, site)]
    if not days:
        raise ValueError(f"no daily data files for {', '.join(sites)} under {data_root}")
    starts = [w.start for site, w in champion.windows.items() if site in sites] if champion else []
    return DateWindow(min(starts) if starts else min(days), until or max(days))


def retrain(
    client: MlflowClient,
    *,
    tracking_uri: str,
    data_root: Path,
    sites: Sequence[str],
    window: DateWindow,
    trigger: Trigger,
    work_dir: Path,
    rounds: int = 5,
    registered_name: str = REGISTERED_MODEL,
    alias: str = CHAMPION_ALIAS,
    max_auc_drop: float = 0.0,
    drift_run_ids: Sequence[str] = (),
    console: Console | None = None,
) -> RetrainOutcome:
    """Train on `sites` over `window`, decide promotion, and record both in the drift experiment."""
    from healthrisk.workflows import run_training

    # A free SuperLink port: a monitor runs unattended beside whatever else uses 8000.
    trained = run_training(
        data_root=data_root,
        sites=list(sites),
        window=window,
        tracking_uri=tracking_uri,
        rounds=rounds,
        model_name=registered_name,
        superlink_port=0,
        work_dir=work_dir,
        promote_alias=alias,
        max_auc_drop=max_auc_drop,
        trigger=trigger.value,
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
            TAG_RETRAIN_MODEL: registered_name,
            TAG_RETRAIN_VERSION: version,
            TAG_TRAINING_WINDOW: str(window),
            TAG_PROMOTION: PROMOTION_PROMOTED if decision.promoted else PROMOTION_REJECTED,
            TAG_DRIFT_RUNS: ",".join(drift_run_ids),
        },
    )
    outcome = RetrainOutcome(trigger, version, window, tuple(sites), metrics, decision, record.info.run_id)
    client.log_dict(outcome.record_run_id, outcome.as_dict(), RETRAIN_ARTIFACT)
    client.set_terminated(outcome.record_run_id, "FINISHED")
    return outcome
