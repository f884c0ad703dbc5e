"""What a finished run leaves behind: runPolicy.cleanPodPolicy at once, the rest after
ttlSecondsAfterFinished; and drift and inventory pods nothing is waiting for.

Cleanup is level-triggered too: every decision looks at every run that still has pods or
Services, so a cleanup missed while the operator was down happens on its next pass.
"""

from __future__ import annotations

from healthrisk.contracts import ROLE_DRIFT, ROLE_INVENTORY, ROLE_SUBMIT, ROLE_SUPERLINK, ROLE_SUPERNODE
from healthrisk_operator import builders
from healthrisk_operator.constants import RESULT_SUPERSEDED
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.status import HistoryEntry

RUN_ROLES = (ROLE_SUPERLINK, ROLE_SUPERNODE, ROLE_SUBMIT)


def _history_entry(d: Decision, run: int) -> HistoryEntry | None:
    return next((h for h in d.status.history or [] if h.number == run), None)


def clean_run(d: Decision, run: int, result: str) -> None:
    policy = d.spec.run_policy
    entry = _history_entry(d, run)
    expired = (
        entry is None
        or result == RESULT_SUPERSEDED
        or d.seconds_since(entry.completion_time) >= policy.ttl_seconds_after_finished
    )
    for pod in d.observed.pods:
        if pod.role not in RUN_ROLES or pod.run != run:
            continue
        if (
            expired
            or policy.clean_pod_policy == "All"
            or (policy.clean_pod_policy == "Running" and not pod.finished)
        ):
            d.delete_pod(pod)
    for service in d.observed.services:
        if service.run == run and (expired or policy.clean_pod_policy != "None") and not service.deleting:
            d.delete_service(service)
            # The run's key material goes with its Service (its pods keep what they mounted).
            if not d.spec.security.insecure:
                d.delete_secret(builders.run_secret_name(d.training.name, run))


def clean_finished_runs(d: Decision) -> None:
    status = d.status
    active_run = d.run if status.active else None
    runs = {p.run for p in d.observed.pods if p.role in RUN_ROLES} | {s.run for s in d.observed.services}
    # Runs after the last one in status were created by a reconcile whose status write
    # was lost (operator restart): they belong to the run about to start, not to the past.
    for run in sorted(r for r in runs if r is not None and r != active_run and r <= d.run):
        entry = _history_entry(d, run)
        clean_run(d, run, entry.result if entry else RESULT_SUPERSEDED)
    drift = status.drift
    check = drift.check if drift else None
    running = drift.running if drift else None
    for pod in d.pods(ROLE_DRIFT):
        if not running or pod.drift_check != check:
            d.delete_pod(pod)
    inventory = status.inventory
    for pod in d.pods(ROLE_INVENTORY):
        if inventory is None or not inventory.running or pod.inventory_round != inventory.round:
            d.delete_pod(pod)
