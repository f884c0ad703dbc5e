"""What asks for a run (SPEC §7): creation, a spec change, `healthrisk.io/retrain`, the
cron schedule. Detected drift and decayed performance ask too (decision/drift.py). A
request waits in status.pending until the run can start (decision/starting.py)."""

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
from healthrisk_operator.decision import runs, starting
from healthrisk_operator.decision.context import Decision


def apply(d: Decision) -> None:
    """Ask for a run when one is due; a spec change supersedes the active run."""
    status = d.status
    hash_now = d.spec.training_hash()
    if not status.run and status.pending is None and status.spec_hash is None:
        status.spec_hash = hash_now
        starting.request(d, TRIGGER_CREATE)
    elif status.spec_hash not in (None, hash_now):
        status.spec_hash = hash_now
        if status.active:
            runs.finish(d, RESULT_SUPERSEDED, "the spec changed; a new run replaces it")
        starting.request(d, TRIGGER_SPEC_CHANGE)
    if ANNOTATION_RETRAIN in d.observed.annotations:
        # Answered by being remembered: the same value can be set again for the next one.
        d.plan.remove_annotations.append(ANNOTATION_RETRAIN)
        starting.request(d, TRIGGER_MANUAL)
    if _schedule_due(d):
        starting.request(d, TRIGGER_SCHEDULE)


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
