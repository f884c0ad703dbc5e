"""Between runs: checks on retraining.drift.interval. A check first lists every site's
days (decision/inventory.py) to find the newest day all sites have, then starts one drift
pod per site that scores the site's new days — those after the serving champion's
training window there, through that day — and reports the champion's AUC on them. Each
pod reads only its own volume and prints only its summary.

The rules are healthrisk.drift.policy's, the same the embedded monitor uses: each pod
judges its own site (`detected`, at the spec's threshold it was given), `policy.decide`
turns the sites' verdicts into a retrain by retraining.drift.policy, and
`policy.performance_decay` the sites' AUCs by retraining.performance.maxAucDrop. A retrain
is requested with the day the check looked up to, so its window contains what drifted."""

from __future__ import annotations

import dataclasses
import datetime as dt

from healthrisk.contracts import METRIC_CHAMPION_VAL_AUC, ROLE_DRIFT, TRIGGER_DRIFT, TRIGGER_PERFORMANCE
from healthrisk.drift import policy as rulebook
from healthrisk.drift.policy import PrintedVerdict
from healthrisk_operator import builders
from healthrisk_operator.decision import inventory, starting
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.spec import DriftPolicy
from healthrisk_operator.status import DriftStatus, SiteDriftStatus
from healthrisk_operator.views import PodView


def monitor(d: Decision) -> None:
    """Start, follow and evaluate drift checks; request a run when they call for one."""
    policy = d.spec.retraining.drift
    if policy is None or d.status.active:
        return
    if d.status.drift is None:
        d.status.drift = DriftStatus()
    drift = d.status.drift
    if d.status.pending is not None:
        # A run is about to start: it moves the reference, so a check now would be stale.
        drift.running = False
        return
    if not drift.running and not _start_check(d, drift, policy):
        return
    assert drift.check_started_at is not None
    if drift.until is None:
        newest = inventory.newest_common_day(d, drift.check_started_at)
        if newest is None:
            return
        if isinstance(newest, inventory.InventoryFailed):
            _incomplete(d, drift, policy, newest.message)
            return
        drift.until = newest.isoformat()
    check = drift.check or 0
    pods = {p.site: p for p in d.pods(ROLE_DRIFT) if p.drift_check == check}
    timed_out = d.seconds_since(drift.check_started_at) > d.config.drift_check_timeout_s
    if not timed_out:
        _create_missing_pods(d, check, policy, dt.date.fromisoformat(drift.until), pods)
        if len(pods) < len(d.spec.sites) or not all(p.finished for p in pods.values()):
            return
    _evaluate(d, drift, policy, check, pods)


def _start_check(d: Decision, drift: DriftStatus, policy: DriftPolicy) -> bool:
    """Whether the interval has passed: then a new check starts."""
    # The clock restarts after every check and every run: a fresh model needs no check.
    stamps = [drift.checked_at, d.status.completion_time]
    base = max((s for s in stamps if s is not None), default=d.now)
    next_at = drift.next_check_at or base + dt.timedelta(seconds=policy.interval_seconds)
    drift.next_check_at = next_at
    if d.now < next_at:
        return False
    drift.check = (drift.check or 0) + 1
    drift.running = True
    drift.check_started_at = d.now
    drift.until = None
    d.event("Normal", "DriftCheckStarted", f"drift check {drift.check} on {len(d.spec.sites)} sites")
    return True


def _create_missing_pods(
    d: Decision, check: int, policy: DriftPolicy, until: dt.date, pods: dict[str | None, PodView]
) -> None:
    for site in d.spec.sites:
        if site.name not in pods:
            d.plan.create.append(
                builders.drift_pod(
                    d.training,
                    d.spec,
                    check,
                    site,
                    until,
                    d.config,
                    active_deadline_seconds=d.config.drift_check_timeout_s,
                )
            )


def _verdict(site: str, pod: PodView | None) -> PrintedVerdict | str:
    """The site's verdict as its pod printed it, or why there is none."""
    if pod is None:
        return "no drift pod"
    if pod.phase != "Succeeded":
        return pod.describe_problem()
    if pod.summary is None:
        return f"pod {pod.name} printed no drift summary"
    try:
        verdict = PrintedVerdict.from_summary(pod.summary)
    except ValueError as exc:
        return f"pod {pod.name}: {exc}"
    # Keyed by the site the pod was made for (its label), whatever name it printed.
    return dataclasses.replace(verdict, site=site)


def _champion_auc(pods: dict[str | None, PodView]) -> float | None:
    """The champion's validation AUC, as the pods that scored it read it from the registry."""
    values = {
        auc for p in pods.values() if (auc := (p.summary or {}).get(METRIC_CHAMPION_VAL_AUC)) is not None
    }
    return float(values.pop()) if len(values) == 1 else None  # several: a promotion in between


def _finish(d: Decision, drift: DriftStatus, policy: DriftPolicy) -> None:
    drift.running = False
    drift.checked_at = d.now
    drift.next_check_at = d.now + dt.timedelta(seconds=policy.interval_seconds)


def _incomplete(d: Decision, drift: DriftStatus, policy: DriftPolicy, problem: str) -> None:
    _finish(d, drift, policy)
    d.event("Warning", "DriftCheckIncomplete", f"drift check {drift.check}: {problem}")


def _evaluate(
    d: Decision, drift: DriftStatus, policy: DriftPolicy, check: int, pods: dict[str | None, PodView]
) -> None:
    verdicts = {site.name: _verdict(site.name, pods.get(site.name)) for site in d.spec.sites}
    evaluated = [v for v in verdicts.values() if isinstance(v, PrintedVerdict)]
    decision = rulebook.decide(evaluated, policy.policy)
    performance_policy = d.spec.retraining.performance
    performance = rulebook.performance_decay(
        evaluated,
        _champion_auc(pods),
        performance_policy.max_auc_drop if performance_policy else 1.0,
    )
    sites = {}
    for name, verdict in verdicts.items():
        if isinstance(verdict, str):
            sites[name] = SiteDriftStatus(error=verdict[:300])
            continue
        pod = pods.get(name)
        current = (pod.summary or {}).get("current") if pod is not None else None
        sites[name] = SiteDriftStatus(
            score=round(verdict.score, 4),
            detected=verdict.detected,
            current=str(current) if current else None,
            auc=round(verdict.auc, 4) if verdict.auc is not None else None,
            loss=round(verdict.loss, 4) if verdict.loss is not None else None,
            rows=verdict.rows,
        )
    _finish(d, drift, policy)
    drift.sites = sites
    drift.detected = decision.retrain
    drift.score = max((v.score for v in evaluated), default=None)
    drift.auc = round(performance.auc, 4) if performance.auc is not None else None
    drift.site_aucs = " ".join(f"{n}={s.auc:.3f}" for n, s in sites.items() if s.auc is not None) or None
    drift.performance_decayed = performance.decayed if performance_policy else None
    for pod in pods.values():
        d.delete_pod(pod)
    errors = {name: s.error for name, s in sites.items() if s.error is not None}
    if errors:
        d.event(
            "Warning",
            "DriftCheckIncomplete",
            f"drift check {check}: " + "; ".join(f"{k}: {v}" for k, v in errors.items()),
        )
    if not evaluated:
        return
    until = dt.date.fromisoformat(drift.until) if drift.until else None
    if drift.detected:
        d.event(
            "Warning",
            "DriftDetected",
            f"drift check {check}: drift at {', '.join(decision.drifted_sites)} (policy {policy.policy}, "
            f"threshold {policy.threshold:g}, scores "
            + ", ".join(f"{v.site} {v.score:.2f}" for v in evaluated)
            + f"); a run through {drift.until} follows",
        )
        starting.request(d, TRIGGER_DRIFT, until=until)
        return
    if performance_policy is not None and performance.decayed:
        d.event("Warning", "PerformanceDecayed", f"drift check {check}: {performance.reason}")
        starting.request(d, TRIGGER_PERFORMANCE, until=until)
        return
    auc = f"; champion AUC on new days {performance.auc:.4f}" if performance.auc is not None else ""
    d.event("Normal", "NoDrift", f"drift check {check}: highest drift score {drift.score:.2f}{auc}")
