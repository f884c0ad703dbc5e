"""The monitor loop's timing and its don't-retrain-twice rule.

Checking and retraining are stand-ins here (the real ones are exercised in
test_drift_retrain.py, which runs `healthrisk monitor` with Flower and MLflow); so is
the clock, so that a week of 6-hour intervals takes no time.
"""

from __future__ import annotations

import datetime as dt

import pytest

from healthrisk.data.window import DateWindow
from healthrisk.drift.check import ColumnDrift, SiteDrift
from healthrisk.drift.monitor import DriftRound, Monitor
from healthrisk.drift.policy import RetrainPolicy, decide
from healthrisk.drift.retrain import RetrainOutcome, Trigger
from healthrisk.drift.sites import PublishedDrift
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


def _round(drifted: bool, newest: str) -> DriftRound:
    column = ColumnDrift("pm25", "psi", 3.0 if drifted else 0.1, 1.0, drifted)
    summary = SiteDrift(
        "hospital_01",
        "2024-01-01..2024-01-10",
        f"{newest}..{newest}",
        100,
        10,
        0.05,
        float(drifted),
        (column,),
    )
    results = [PublishedDrift(summary, "run")]
    return DriftRound(results, decide([summary], RetrainPolicy.ANY))


class Recorder:
    """Stand-in check and retrain: replays scripted drift rounds, records retrains."""

    def __init__(self, clock: Clock, rounds: list[DriftRound]) -> None:
        self.clock = clock
        self.rounds = rounds
        self.retrains: list[tuple[Trigger, dt.datetime]] = []

    def check(self) -> DriftRound:
        return self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]

    def retrain(self, trigger: Trigger, drift: DriftRound | None) -> RetrainOutcome:
        self.retrains.append((trigger, self.clock.now))
        decision = PromotionDecision("2", False, "val AUC below champion", 0.8, "1", 0.9)
        window = drift.results[0].summary.current if drift else "2024-01-01..2024-01-02"
        return RetrainOutcome(
            trigger, "2", DateWindow.parse(window), ("hospital_01",), {}, decision, "record"
        )


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
    recorder = Recorder(clock, [_round(False, "2024-01-12")])
    events = _monitor(clock, recorder).run(max_iterations=4)
    assert [e.kind for e in events] == ["check"] * 4
    assert clock.slept == [6 * 3600.0] * 3
    assert recorder.retrains == []


def test_drift_retrains_once_per_new_data_even_if_not_promoted() -> None:
    clock = Clock()
    rounds = [_round(True, "2024-01-15"), _round(True, "2024-01-15"), _round(True, "2024-01-16")]
    recorder = Recorder(clock, rounds)
    events = _monitor(clock, recorder).run(max_iterations=3)
    assert [e.kind for e in events] == ["check", "retrain", "check", "skip", "check", "retrain"]
    assert [t for t, _ in recorder.retrains] == [Trigger.DRIFT, Trigger.DRIFT]


def test_schedule_retrains_on_the_cron_time() -> None:
    clock = Clock()
    recorder = Recorder(clock, [_round(False, "2024-01-12")])
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
        return _round(False, "2024-01-16")

    monitor = Monitor(
        interval=dt.timedelta(hours=1),
        check=check,
        retrain=Recorder(clock, [_round(False, "x")]).retrain,
        now=lambda: clock.now,
        sleep=clock.sleep,
    )
    events = monitor.run(max_iterations=2)
    assert [e.kind for e in events] == ["error", "check"]
    assert "2024-01-16.csv" in events[0].detail


def test_invalid_schedule_is_refused() -> None:
    clock = Clock()
    recorder = Recorder(clock, [_round(False, "2024-01-12")])
    with pytest.raises(ValueError, match="not a valid cron expression"):
        _monitor(clock, recorder, schedule="every sunday")
