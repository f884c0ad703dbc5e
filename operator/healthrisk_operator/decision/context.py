"""One decision in the making: what was observed, the spec, and the plan being built.

Every concern module (triggers, runs, progress, promotion, drift, cleanup, summary) reads
and writes through this one object, so none of them needs to know who calls it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from healthrisk.data.window import DateWindow, training_fingerprint
from healthrisk_operator.builders import RunData, Training
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.constants import Phase
from healthrisk_operator.decision.plan import EventSpec, Plan
from healthrisk_operator.spec import TrainingSpec
from healthrisk_operator.status import TrainingStatus
from healthrisk_operator.views import Observed, PodView, ServiceView


@dataclass
class Decision:
    observed: Observed
    config: OperatorConfig
    spec: TrainingSpec
    plan: Plan

    @property
    def status(self) -> TrainingStatus:
        """The new status, written in place (the plan carries it)."""
        return self.plan.status

    @property
    def now(self) -> dt.datetime:
        return self.observed.now

    @property
    def training(self) -> Training:
        return self.observed.training

    @property
    def run(self) -> int:
        """The current (or last) run number; 0 before the first."""
        return self.status.run or 0

    @property
    def run_data(self) -> RunData:
        """What the current run trains on, as resolved when it started."""
        windows, fingerprint = self.status.data_windows, self.status.data_fingerprint
        rule = self.spec.data_window
        if (not windows or fingerprint is None) and not rule.rolling:
            # A fixed window resolves the same at any time. Its resolution is missing where
            # an older CRD's status schema pruned it (the 0.1 chart's, until the upgrade).
            fixed = rule.ending(self.now.date())
            sites = {site.name: fixed for site in self.spec.sites}
            return RunData(fixed, training_fingerprint(sites, self.spec.training_hash()))
        if not windows or fingerprint is None:
            raise ValueError(f"run {self.run} has no resolved data window in its status")
        (window,) = set(windows.values())  # one rule, one window for every site
        return RunData(DateWindow.parse(window), fingerprint)

    def event(self, event_type: str, reason: str, message: str) -> None:
        self.plan.events.append(EventSpec(event_type, reason, message))

    def seconds_since(self, when: dt.datetime | None) -> float:
        return (self.now - when).total_seconds() if when else 0.0

    def pods(self, role: str, run: int | None = None) -> list[PodView]:
        return [p for p in self.observed.pods if p.role == role and (run is None or p.run == run)]

    def delete_pod(self, pod: PodView) -> None:
        if not pod.deleting and ("Pod", pod.name) not in self.plan.delete:
            self.plan.delete.append(("Pod", pod.name))

    def delete_service(self, service: ServiceView) -> None:
        if not service.deleting and ("Service", service.name) not in self.plan.delete:
            self.plan.delete.append(("Service", service.name))

    def delete_secret(self, name: str) -> None:
        if ("Secret", name) not in self.plan.delete:
            self.plan.delete.append(("Secret", name))

    def set_phase(self, phase: Phase, message: str) -> None:
        self.status.phase = phase
        self.status.message = message
