"""What `kubectl get ft` and `kubectl describe ft` show: the phase, the message and the
metav1.Condition-style conditions (Ready, Training, Promoted, DriftDetected, Failed,
Suspended), derived from the rest of the status at the end of every decision."""

from __future__ import annotations

import datetime as dt

from healthrisk_operator.constants import (
    COND_DRIFT,
    COND_FAILED,
    COND_INSECURE,
    COND_PROMOTED,
    COND_READY,
    COND_SUSPENDED,
    COND_TRAINING,
    RESULT_FAILED,
    RESULT_ROLLED_BACK,
    Phase,
)
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.status import Condition, ConditionStatus, TrainingStatus, format_time

_TRAINING_REASONS = {
    Phase.PENDING: "WaitingForPods",
    Phase.TRAINING: "Training",
    Phase.PROMOTING: "Promoting",
}
_BETWEEN_RUNS = (Phase.MONITORING, Phase.SUCCEEDED, Phase.FAILED, Phase.SUSPENDED)


def set_condition(
    status: TrainingStatus,
    kind: str,
    value: bool,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int,
) -> None:
    """metav1.Condition semantics: lastTransitionTime moves only when status flips."""
    if status.conditions is None:
        status.conditions = []
    flag: ConditionStatus = "True" if value else "False"
    current = next((c for c in status.conditions if c.type == kind), None)
    if current is None:
        status.conditions.append(
            Condition(
                type=kind,
                status=flag,
                last_transition_time=now,
                reason=reason or kind,
                message=message[:1000],
                observed_generation=generation,
            )
        )
        return
    if current.status != flag:
        current.last_transition_time = now
    current.status = flag
    current.reason = reason or kind
    current.message = message[:1000]
    current.observed_generation = generation


def invalid_spec(status: TrainingStatus, message: str, now: dt.datetime, generation: int) -> bool:
    """Failed until the spec changes: no retries. True when this is news (worth an Event)."""
    news = status.message != message
    status.phase = Phase.FAILED
    status.message = message
    set_condition(status, COND_FAILED, True, "InvalidSpec", message, now, generation)
    set_condition(status, COND_READY, False, "InvalidSpec", message, now, generation)
    return news


def write(d: Decision) -> None:
    _phase(d)
    _conditions(d)


def _phase(d: Decision) -> None:
    status = d.status
    last = status.history[0] if status.history else None
    if d.spec.suspend:
        return
    if status.active:
        if status.phase is None or status.phase in _BETWEEN_RUNS:
            status.phase = Phase.PENDING
    elif status.pending is not None:
        status.phase = Phase.PENDING  # resolving what the requested run would train on
    elif last is not None:
        if last.result == RESULT_FAILED:
            status.phase = Phase.FAILED
        else:
            status.phase = Phase.MONITORING if d.spec.retrains else Phase.SUCCEEDED
        if d.spec.retraining.drift and status.drift is not None and status.drift.running:
            status.message = f"drift check {status.drift.check} running"


def _conditions(d: Decision) -> None:
    status, spec = d.status, d.spec

    def condition(kind: str, value: bool, reason: str, message: str) -> None:
        set_condition(status, kind, value, reason, message, d.now, d.observed.generation)

    history = status.history or []
    last = history[0] if history else None
    condition(
        COND_TRAINING,
        bool(status.active) and not spec.suspend,
        _TRAINING_REASONS.get(status.phase, "NoActiveRun") if status.phase else "NoActiveRun",
        status.message or "",
    )
    condition(
        COND_SUSPENDED,
        spec.suspend,
        "Suspended" if spec.suspend else "NotSuspended",
        "spec.suspend is true" if spec.suspend else "",
    )
    if last is not None:
        failed = last.result == RESULT_FAILED
        reason_text = last.reason or ""
        condition(
            COND_FAILED,
            failed,
            reason_text.split(":", 1)[0] if failed else "LastRunSucceeded",
            reason_text if failed else f"run {last.number} {last.result.lower()}",
        )
        promoted = bool(last.promoted)
        condition(
            COND_PROMOTED,
            promoted,
            "Promoted" if promoted else "RolledBack" if last.result == RESULT_ROLLED_BACK else "NotPromoted",
            f"run {last.number}: " + (status.promotion_reason or last.reason or ""),
        )
        any_served = any(h.promoted for h in history)
        condition(
            COND_READY,
            any_served,
            "ModelServing" if any_served else "NoPromotedModel",
            f"{spec.promotion.alias} comes from this training"
            if any_served
            else "no run of this training has promoted a model yet",
        )
    else:
        condition(COND_FAILED, False, "NoRunYet", "")
        condition(COND_READY, False, "NoRunYet", "the first run has not finished")
    if spec.security.insecure:
        condition(
            COND_INSECURE,
            True,
            "InsecureByRequest",
            "spec.security.insecure: no TLS and no SuperNode authentication; updates and statistics "
            "travel in clear and any pod that reaches the SuperLink can join",
        )
    else:
        condition(
            COND_INSECURE, False, "TLSAndSuperNodeAuthentication", "every run is TLS, sites authenticated"
        )
    drift = status.drift
    if drift is not None and drift.detected is not None:
        condition(
            COND_DRIFT,
            drift.detected,
            "DriftDetected" if drift.detected else "NoDrift",
            f"highest drift score {drift.score or 0:.2f} at "
            f"{format_time(drift.checked_at) if drift.checked_at else None}",
        )
