"""`healthrisk monitor`: check drift every interval, retrain on drift or on a cron schedule.

The loop owns only timing and the don't-retrain-twice rule; checking and retraining are
passed in, and so are the clock and the sleep, so that tests run it for a bounded number
of wake-ups without waiting hours.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from healthrisk.drift.policy import RetrainDecision, RetrainPolicy, decide
from healthrisk.drift.retrain import RetrainOutcome, Trigger
from healthrisk.drift.sites import PublishedDrift

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftRound:
    """One check of all sites and what the policy made of it."""

    results: list[PublishedDrift]
    decision: RetrainDecision

    @classmethod
    def of(cls, results: list[PublishedDrift], policy: RetrainPolicy) -> DriftRound:
        return cls(results, decide([r.summary for r in results], policy))

    @property
    def newest_day(self) -> dt.date:
        return max(dt.date.fromisoformat(r.summary.current.split("..")[1]) for r in self.results)

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
    retrain: Callable[[Trigger, DriftRound | None], RetrainOutcome]
    schedule: str | None = None
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    sleep: Callable[[float], None] = time.sleep
    on_event: Callable[[MonitorEvent], None] | None = None
    # The newest day of data a drift retrain has already trained on: the same drifted
    # days do not trigger again while a rejected candidate leaves the old champion (and
    # so the old reference) in place.
    retrained_through: dt.date | None = None
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
            retrained = False
            if next_cron is not None and now >= next_cron:
                retrained = self._guarded(partial(self._retrain, Trigger.SCHEDULE, None))
                next_cron = self._next_cron(now)
            if now >= next_check:
                self._guarded(partial(self._check, skip_retrain=retrained))
                next_check = now + self.interval
            iterations += 1
        return self.events

    def _guarded(self, action: Callable[[], object]) -> bool:
        # A long-running monitor outlives one bad file or one MLflow hiccup: report the
        # error as an event and try again at the next wake-up.
        try:
            action()
        except Exception as exc:
            log.exception("monitor action failed")
            self._emit("error", f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _retrain(self, trigger: Trigger, drift: DriftRound | None) -> None:
        outcome = self.retrain(trigger, drift)
        verdict = "promoted" if outcome.decision.promoted else "not promoted"
        detail = f"{trigger.value}: v{outcome.version} {verdict} ({outcome.decision.reason})"
        self._emit("retrain", detail, outcome)

    def _check(self, *, skip_retrain: bool) -> None:
        drift = self.check()
        self._emit("check", drift.decision.reason)
        if not drift.decision.retrain:
            return
        if skip_retrain:
            self._emit("skip", "drift retrain skipped: a scheduled retrain just ran")
        elif self.retrained_through is not None and drift.newest_day <= self.retrained_through:
            self._emit("skip", f"drift retrain skipped: data through {self.retrained_through} already used")
        else:
            self._retrain(Trigger.DRIFT, drift)
            self.retrained_through = drift.newest_day
