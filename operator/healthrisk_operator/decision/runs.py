"""A run's lifecycle in the status: start, finish (history, Events, cleanup), suspend and
resume. Whether a run starts is decided elsewhere (triggers, drift, starting); this is
what starting, ending or pausing one means."""

from __future__ import annotations

from healthrisk.contracts import ROLE_DRIFT, ROLE_INVENTORY
from healthrisk_operator.builders import RunData
from healthrisk_operator.constants import (
    HISTORY_LIMIT,
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    RESULT_SUPERSEDED,
    Phase,
)
from healthrisk_operator.decision import cleanup
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.status import HistoryEntry, Metrics, PrivacyStatus


def start(d: Decision, trigger: str, data: RunData) -> None:
    status = d.status
    run = d.run + 1
    status.completion_time = None
    status.training_finished_at = None
    status.rollout = None
    status.model_version = None
    status.promoted = None
    status.promotion_reason = None
    status.run = run
    status.active = True
    status.trigger = trigger
    status.attempt = 0
    status.failures = 0
    status.round = 0
    status.rounds = d.spec.rounds
    status.progress = f"0/{d.spec.rounds}"
    status.metrics = Metrics()
    status.sites = None
    dp = d.spec.privacy.differential_privacy
    status.privacy = PrivacyStatus(
        delta=dp.delta if dp is not None else None, secure_aggregation=d.spec.privacy.secure_aggregation
    )
    status.start_time = status.attempt_start_time = d.now
    status.spec_hash = d.spec.training_hash()
    status.data_windows = {site.name: str(data.window) for site in d.spec.sites}
    status.data_fingerprint = data.fingerprint
    if status.drift is not None:
        # A check in flight is abandoned (its pods are cleaned up): the run retrains anyway.
        status.drift.next_check_at = None
        status.drift.running = False
    d.event(
        "Normal",
        "RunStarted",
        f"run {run} started (trigger: {trigger}); trains on {data.window} at "
        f"{', '.join(site.name for site in d.spec.sites)}",
    )


def fail(d: Decision, reason: str, message: str) -> None:
    d.event("Warning", reason, message)
    finish(d, RESULT_FAILED, f"{reason}: {message}")


def finish(d: Decision, result: str, message: str) -> None:
    status = d.status
    run = d.run
    entry = HistoryEntry(
        number=run,
        trigger=status.trigger,
        result=result,
        reason=message[:500],
        attempts=(status.attempt or 0) + 1,
        start_time=status.start_time,
        completion_time=d.now,
        version=status.model_version,
        promoted=status.promoted,
        auc=status.metrics.auc if status.metrics else None,
        champion_auc=status.metrics.champion_auc if status.metrics else None,
        windows=status.data_windows,
        fingerprint=status.data_fingerprint,
        epsilon=status.privacy.epsilon if status.privacy else None,
    )
    earlier = [h for h in status.history or [] if h.number != run]
    status.history = [entry, *earlier][:HISTORY_LIMIT]
    status.active = False
    status.completion_time = entry.completion_time
    status.training_finished_at = None
    if result == RESULT_SUCCEEDED:
        d.event("Normal", "RunSucceeded", f"run {run}: {message}")
    elif result != RESULT_FAILED:
        d.event(
            "Normal" if result == RESULT_SUPERSEDED else "Warning", f"Run{result}", f"run {run}: {message}"
        )
    status.message = f"run {run} {result.lower()}: {message}"
    cleanup.clean_run(d, run, result)


def suspend(d: Decision) -> None:
    status = d.status
    if status.phase != Phase.SUSPENDED:
        d.event("Normal", "Suspended", "spec.suspend is true: run pods deleted, nothing starts")
    run = status.run
    if status.active:
        for pod in d.observed.pods:
            if pod.role in cleanup.RUN_ROLES and pod.run == run:
                d.delete_pod(pod)
    for pod in [*d.pods(ROLE_DRIFT), *d.pods(ROLE_INVENTORY)]:
        d.delete_pod(pod)
    for service in d.observed.services:
        if service.run == run:
            d.delete_service(service)
    if status.drift is not None and status.drift.running:
        status.drift.running = False
    if status.inventory is not None and status.inventory.running:
        status.inventory.running = False
    status.phase = Phase.SUSPENDED
    status.message = "suspended" + (f" (run {run} resumes when unsuspended)" if status.active else "")


def resume(d: Decision) -> None:
    d.event("Normal", "Resumed", "spec.suspend cleared")
    if d.status.active:
        # Deadlines count from the resume: the suspended time was nobody's fault.
        d.status.start_time = d.status.attempt_start_time = d.now
