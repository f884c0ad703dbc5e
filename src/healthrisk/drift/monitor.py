"""`healthrisk monitor`: check drift and the champion's performance every interval, retrain
on drift, on decay or on a cron schedule.

The loop owns only timing; checking and retraining are passed in (the retrain itself
skips data it has trained on: `RetrainSkipped`), and so are the clock and the sleep, so
that tests run it for a bounded number of wake-ups without waiting hours.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from healthrisk.drift.policy import (
    PerformanceDecision,
    PrintedVerdict,
    RetrainDecision,
    RetrainPolicy,
    decide,
    performance_decay,
)
from healthrisk.drift.retrain import RetrainOutcome, RetrainSkipped, Trigger
from healthrisk.drift.sites import PublishedDrift

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftRound:
    """One check of all sites and what the rulebook made of it."""

    results: list[PublishedDrift]
    decision: RetrainDecision
    performance: PerformanceDecision | None = None  # None unless a performance trigger is set

    @classmethod
    def of(
        cls,
        results: list[PublishedDrift],
        policy: RetrainPolicy,
        *,
        champion_auc: float | None = None,
        max_auc_drop: float | None = None,
    ) -> DriftRound:
        """The verdicts as the operator reads them from drift pods: one rulebook for both."""
        verdicts = [PrintedVerdict.from_summary(r.summary.as_dict()) for r in results]
        performance = (
            None if max_auc_drop is None else performance_decay(verdicts, champion_auc, max_auc_drop)
        )
        return cls(results, decide(verdicts, policy), performance)

    @property
    def trigger(self) -> Trigger | None:
        """Why this round asks for a retrain, if it does: drift first, then decay."""
        if self.decision.retrain:
            return Trigger.DRIFT
        if self.performance is not None and self.performance.decayed:
            return Trigger.PERFORMANCE
        return None

    @property
    def reason(self) -> str:
        performance = f"; {self.performance.reason}" if self.performance is not None else ""
        return self.decision.reason + performance

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.results if r.run_id is not None]


@dataclass(frozen=True)
class MonitorEvent:
    at: dt.datetime
    kind: str  # "check", "retrain", "skip", "error"
    detail: str
    outcome: RetrainOutcome | None = None


@dataclass
class Monitor:
    interval: dt.timedelta
    check: Callable[[], DriftRound]
    retrain: Callable[[Trigger, DriftRound | None], RetrainOutcome | RetrainSkipped]
    schedule: str | None = None
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    sleep: Callable[[float], None] = time.sleep
    on_event: Callable[[MonitorEvent], None] | None = None
    events: list[MonitorEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.interval <= dt.timedelta(0):
            raise ValueError("monitor interval must be positive")
        if self.schedule is not None:
            from croniter import croniter

            if not croniter.is_valid(self.schedule):
                raise ValueError(f"schedule {self.schedule!r} is not a valid cron expression")

    def _next_cron(self, after: dt.datetime) -> dt.datetime | None:
        if self.schedule is None:
            return None
        from croniter import croniter

        return croniter(self.schedule, after).get_next(dt.datetime)

    def _emit(self, kind: str, detail: str, outcome: RetrainOutcome | None = None) -> None:
        event = MonitorEvent(self.now(), kind, detail, outcome)
        self.events.append(event)
        log.info("monitor %s: %s", kind, detail)
        if self.on_event is not None:
            self.on_event(event)

    def run(self, max_iterations: int | None = None) -> list[MonitorEvent]:
        """Wake up on the interval and on the schedule; stop after `max_iterations` wake-ups."""
        start = self.now()
        next_check = start  # check at once: a restarted monitor should not wait an interval
        next_cron = self._next_cron(start)
        iterations = 0
        while max_iterations is None or iterations < max_iterations:
            wake = next_check if next_cron is None else min(next_check, next_cron)
            delay = (wake - self.now()).total_seconds()
            if delay > 0:
                self.sleep(delay)
            now = self.now()
            if next_cron is not None and now >= next_cron:
                self._guarded(partial(self._retrain, Trigger.SCHEDULE, None))
                next_cron = self._next_cron(now)
            if now >= next_check:
                self._guarded(self._check)
                next_check = now + self.interval
            iterations += 1
        return self.events

    def _guarded(self, action: Callable[[], object]) -> None:
        # A long-running monitor outlives one bad file or one MLflow hiccup: report the
        # error as an event and try again at the next wake-up.
        try:
            action()
        except Exception as exc:
            log.exception("monitor action failed")
            self._emit("error", f"{type(exc).__name__}: {exc}")

    def _retrain(self, trigger: Trigger, drift: DriftRound | None) -> None:
        outcome = self.retrain(trigger, drift)
        if isinstance(outcome, RetrainSkipped):
            self._emit("skip", f"{trigger.value}: {outcome.reason}")
            return
        verdict = "promoted" if outcome.decision.promoted else "not promoted"
        detail = f"{trigger.value}: v{outcome.version} {verdict} ({outcome.decision.reason})"
        self._emit("retrain", detail, outcome)

    def _check(self) -> None:
        drift = self.check()
        self._emit("check", drift.reason)
        if drift.trigger is not None:
            self._retrain(drift.trigger, drift)
