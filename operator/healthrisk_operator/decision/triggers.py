"""What starts a run (SPEC §7): creation, a spec change, `healthrisk.io/retrain`, the
cron schedule. Detected drift starts runs too; decision/drift.py decides that one."""

from __future__ import annotations

import datetime as dt

from croniter import croniter

from healthrisk.contracts import (
    ANNOTATION_RETRAIN,
    TRIGGER_CREATE,
    TRIGGER_MANUAL,
    TRIGGER_SCHEDULE,
    TRIGGER_SPEC_CHANGE,
)
from healthrisk_operator.constants import RESULT_SUPERSEDED
from healthrisk_operator.decision import runs
from healthrisk_operator.decision.context import Decision


def apply(d: Decision) -> None:
    """Start a run when one is due; a spec change supersedes the active run."""
    status = d.status
    trigger: str | None = None
    if not status.run:
        trigger = TRIGGER_CREATE
    elif status.spec_hash not in (None, d.spec.training_hash()):
        trigger = TRIGGER_SPEC_CHANGE
        if status.active:
            runs.finish(d, RESULT_SUPERSEDED, "the spec changed; a new run replaces it")
    schedule_due = _schedule_due(d)
    if not status.active and trigger is None:
        if ANNOTATION_RETRAIN in d.observed.annotations:
            trigger = TRIGGER_MANUAL
        elif schedule_due:
            trigger = TRIGGER_SCHEDULE
    elif schedule_due and status.active:
        d.event("Normal", "ScheduleSkipped", f"schedule fired while run {status.run} is active")
    if trigger is not None:
        runs.start(d, trigger)


def _schedule_due(d: Decision) -> bool:
    """Whether a cron firing passed since the last one; keeps nextScheduleTime current."""
    status = d.status
    schedule = d.spec.retraining.schedule
    if schedule is None:
        status.next_schedule_time = None
        return False
    base = status.last_schedule_time or d.observed.created_at
    upcoming: dt.datetime = croniter(schedule, base).get_next(dt.datetime)
    due = upcoming <= d.now
    if due:
        # Missed firings (operator down for days) collapse into one run.
        # get_prev is strictly before its base: +1 s makes a firing at `now` count.
        latest: dt.datetime = croniter(schedule, d.now + dt.timedelta(seconds=1)).get_prev(dt.datetime)
        status.last_schedule_time = latest
        upcoming = croniter(schedule, latest).get_next(dt.datetime)
    status.next_schedule_time = upcoming
    return due
