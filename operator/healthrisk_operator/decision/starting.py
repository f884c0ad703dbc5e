"""From a trigger to a run: resolve what the run would train on — the window under
spec.dataWindow, at the newest day every site has — and start it, unless that is exactly
what the last attempt trained on (sites, windows, the model-shaping spec): then the
trigger is skipped with `RetrainSkipped: no new data since run N` until a new day arrives.

One run at a time: a trigger during a run waits in status.pending (once, whatever else
fires meanwhile) and is resolved when the run has ended.
"""

from __future__ import annotations

import datetime as dt

from healthrisk.contracts import TRIGGER_CREATE, TRIGGER_SPEC_CHANGE
from healthrisk.data.window import DateWindow, training_fingerprint
from healthrisk_operator.builders import RunData
from healthrisk_operator.constants import RESULT_ROLLED_BACK, RESULT_SUCCEEDED
from healthrisk_operator.decision import inventory, runs
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.status import HistoryEntry, Pending, Skipped

# A spec change or a new object outranks a waiting trigger: its run uses the new spec.
_OUTRANKING = (TRIGGER_CREATE, TRIGGER_SPEC_CHANGE)


def request(d: Decision, trigger: str, *, until: dt.date | None = None) -> None:
    """Remember a trigger until a run can start; one is remembered, not one per firing."""
    pending = d.status.pending
    if pending is None or trigger in _OUTRANKING:
        d.status.pending = Pending(trigger=trigger, since=d.now, until=until.isoformat() if until else None)
    if d.status.active:
        d.event("Normal", "RunQueued", f"trigger {trigger} waits for run {d.run} to end")


def advance(d: Decision) -> None:
    """Start the pending trigger's run once its window is known, or skip it."""
    pending = d.status.pending
    if pending is None or d.status.active:
        return
    window = _window(d, pending)
    if window is None:
        return
    sites = [site.name for site in d.spec.sites]
    windows = dict.fromkeys(sites, window)
    fingerprint = training_fingerprint(windows, d.spec.training_hash())
    d.status.pending = None
    last = _last_attempt(d)
    if last is not None and last.fingerprint == fingerprint:
        message = f"RetrainSkipped: no new data since run {last.number}"
        d.event(
            "Normal",
            "RetrainSkipped",
            f"{message}: trigger {pending.trigger} would train on {window} at every site, as run "
            f"{last.number} did; a new day re-arms it",
        )
        d.status.skipped = Skipped(at=d.now, trigger=pending.trigger, message=message)
        d.status.message = message
        return
    runs.start(d, pending.trigger, RunData(window, fingerprint))


def _window(d: Decision, pending: Pending) -> DateWindow | None:
    rule = d.spec.data_window
    if not rule.rolling:
        return rule.ending(d.now.date())  # fixed: the days do not matter
    if pending.until is not None:
        # A drift check saw the sites' days a moment ago: its run ends where it looked.
        return rule.ending(dt.date.fromisoformat(pending.until))
    newest = inventory.newest_common_day(d, pending.since)
    if isinstance(newest, inventory.InventoryFailed):
        d.status.pending = None
        d.event("Warning", "NoTrainingData", f"trigger {pending.trigger} dropped: {newest.message}")
        d.status.message = f"trigger {pending.trigger} dropped: {newest.message}"
        return None
    if newest is None:
        d.status.message = f"trigger {pending.trigger}: listing the sites' days to resolve the window"
    return None if newest is None else rule.ending(newest)


def _last_attempt(d: Decision) -> HistoryEntry | None:
    """The newest run that trained to the end (promoted, rejected or rolled back)."""
    for entry in d.status.history or []:
        if entry.result in (RESULT_SUCCEEDED, RESULT_ROLLED_BACK) and entry.fingerprint is not None:
            return entry
    return None
