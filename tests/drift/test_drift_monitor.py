"""The monitor loop's timing and what it does with a round's verdict and a skipped retrain.

Checking and retraining are stand-ins here (the real ones are exercised in
test_drift_retrain.py, which runs `healthrisk monitor` with Flower and MLflow); so is
the clock, so that a week of 6-hour intervals takes no time.
"""

from __future__ import annotations

import datetime as dt

import pytest

from healthrisk.data.window import DateWindow
from healthrisk.drift.monitor import DriftRound, Monitor
from healthrisk.drift.policy import PrintedVerdict, RetrainPolicy, decide, performance_decay
from healthrisk.drift.retrain import RetrainOutcome, RetrainSkipped, Trigger
from healthrisk.registry import PromotionDecision

# A Saturday: the weekly "0 3 * * 0" falls 27 hours later.
START = dt.datetime(2024, 1, 13, 0, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += dt.timedelta(seconds=seconds)


def _round(drifted: bool = False, auc: float | None = None) -> DriftRound:
    verdict = PrintedVerdict("hospital_01", 0.9 if drifted else 0.1, drifted, auc, 0.5, 200)
    performance = performance_decay([verdict], 0.84, 0.02) if auc is not None else None
    return DriftRound([], decide([verdict], RetrainPolicy.ANY), performance)


class Recorder:
    """Stand-in check and retrain: replays scripted rounds; a retrain over data already
    trained on is skipped, as the real one does by the data's fingerprint."""

    def __init__(self, clock: Clock, rounds: list[DriftRound], newest: list[str] | None = None) -> None:
        self.clock = clock
        self.rounds = rounds
        self.newest = newest or ["2024-01-12"]  # the newest day at each check, in turn
        self.day = self.newest[0]
        self.trained: set[str] = set()
        self.retrains: list[tuple[Trigger, dt.datetime]] = []

    def check(self) -> DriftRound:
        self.day = self.newest.pop(0) if len(self.newest) > 1 else self.newest[0]
        return self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]

    def retrain(self, trigger: Trigger, drift: DriftRound | None) -> RetrainOutcome | RetrainSkipped:
        window = DateWindow.parse(f"2024-01-01..{self.day}")
        if self.day in self.trained:
            return RetrainSkipped(trigger, window, ("hospital_01",), "2")
        self.trained.add(self.day)
        self.retrains.append((trigger, self.clock.now))
        decision = PromotionDecision("2", False, "val AUC below champion", 0.8, "1", 0.9)
        return RetrainOutcome(trigger, "2", window, ("hospital_01",), {}, decision, "record")


def _monitor(clock: Clock, recorder: Recorder, schedule: str | None = None) -> Monitor:
    return Monitor(
        interval=dt.timedelta(hours=6),
        check=recorder.check,
        retrain=recorder.retrain,
        schedule=schedule,
        now=lambda: clock.now,
        sleep=clock.sleep,
    )


def test_checks_at_once_then_every_interval_without_drift() -> None:
    clock = Clock()
    recorder = Recorder(clock, [_round()])
    events = _monitor(clock, recorder).run(max_iterations=4)
    assert [e.kind for e in events] == ["check"] * 4
    assert clock.slept == [6 * 3600.0] * 3
    assert recorder.retrains == []


def test_drift_retrains_once_per_new_data_even_if_not_promoted() -> None:
    clock = Clock()
    recorder = Recorder(clock, [_round(True)], newest=["2024-01-15", "2024-01-15", "2024-01-16"])
    events = _monitor(clock, recorder).run(max_iterations=3)
    assert [e.kind for e in events] == ["check", "retrain", "check", "skip", "check", "retrain"]
    assert "RetrainSkipped: no new data since version 2" in events[3].detail
    assert [t for t, _ in recorder.retrains] == [Trigger.DRIFT, Trigger.DRIFT]


def test_a_decayed_champion_retrains_with_trigger_performance() -> None:
    clock = Clock()
    recorder = Recorder(clock, [_round(auc=0.80), _round(auc=0.83)], newest=["2024-01-15", "2024-01-16"])
    events = _monitor(clock, recorder).run(max_iterations=2)
    assert [e.kind for e in events] == ["check", "retrain", "check"]
    assert "drop 0.0400, allowed 0.02: retrain" in events[0].detail
    assert [t for t, _ in recorder.retrains] == [Trigger.PERFORMANCE]


def test_schedule_retrains_on_the_cron_time() -> None:
    clock = Clock()
    recorder = Recorder(clock, [_round()])
    events = _monitor(clock, recorder, schedule="0 3 * * 0").run(max_iterations=7)
    # Checks at 0h, 6h, 12h, 18h, 24h; the Sunday 03:00 retrain at 27h; a check at 30h.
    assert recorder.retrains == [(Trigger.SCHEDULE, dt.datetime(2024, 1, 14, 3, 0, tzinfo=dt.UTC))]
    assert [e.kind for e in events].count("check") == 6


def test_a_failing_check_is_reported_and_the_loop_goes_on() -> None:
    clock = Clock()
    calls = 0

    def check() -> DriftRound:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("hospital_02/2024-01-16.csv: column 'pm25': required column is missing")
        return _round()

    monitor = Monitor(
        interval=dt.timedelta(hours=1),
        check=check,
        retrain=Recorder(clock, [_round()]).retrain,
        now=lambda: clock.now,
        sleep=clock.sleep,
    )
    events = monitor.run(max_iterations=2)
    assert [e.kind for e in events] == ["error", "check"]
    assert "2024-01-16.csv" in events[0].detail


def test_invalid_schedule_is_refused() -> None:
    clock = Clock()
    recorder = Recorder(clock, [_round()])
    with pytest.raises(ValueError, match="not a valid cron expression"):
        _monitor(clock, recorder, schedule="every sunday")
