"""Between runs: drift checks on retraining.drift.interval, one pod per site (each reads
only its own volume and prints only its summary), and the verdict over the sites.

The rules are healthrisk.drift.policy's, the same the embedded monitor uses: each pod
judges its own site (`detected`, at the spec's threshold it was given), and
`policy.decide` turns the sites' verdicts into a retrain by retraining.drift.policy."""

from __future__ import annotations

import dataclasses
import datetime as dt

from healthrisk.contracts import ROLE_DRIFT
from healthrisk.drift import policy as rulebook
from healthrisk.drift.policy import PrintedVerdict
from healthrisk_operator import builders
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.spec import DriftPolicy
from healthrisk_operator.status import DriftStatus, SiteDriftStatus
from healthrisk_operator.views import PodView


def monitor(d: Decision) -> bool:
    """Start, follow and evaluate drift checks; True when drift asks for a run."""
    policy = d.spec.retraining.drift
    if policy is None:
        return False
    if d.status.drift is None:
        d.status.drift = DriftStatus()
    drift = d.status.drift
    if not drift.running and not _start_check(d, drift, policy):
        return False
    check = drift.check or 0
    pods = {p.site: p for p in d.pods(ROLE_DRIFT) if p.drift_check == check}
    timed_out = d.seconds_since(drift.check_started_at) > d.config.drift_check_timeout_s
    if not timed_out:
        _create_missing_pods(d, check, policy, pods)
        if len(pods) < len(d.spec.sites) or not all(p.finished for p in pods.values()):
            return False
    return _evaluate(d, drift, policy, check, pods)


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
    d.event("Normal", "DriftCheckStarted", f"drift check {drift.check} on {len(d.spec.sites)} sites")
    return True


def _create_missing_pods(
    d: Decision, check: int, policy: DriftPolicy, pods: dict[str | None, PodView]
) -> None:
    window = policy.current_window(d.now.date())
    for site in d.spec.sites:
        if site.name not in pods:
            d.plan.create.append(
                builders.drift_pod(
                    d.training,
                    d.spec,
                    check,
                    site,
                    window,
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


def _evaluate(
    d: Decision, drift: DriftStatus, policy: DriftPolicy, check: int, pods: dict[str | None, PodView]
) -> bool:
    verdicts = {site.name: _verdict(site.name, pods.get(site.name)) for site in d.spec.sites}
    evaluated = [v for v in verdicts.values() if isinstance(v, PrintedVerdict)]
    decision = rulebook.decide(evaluated, policy.policy)
    sites = {
        name: SiteDriftStatus(share=round(v.drift_share, 4), detected=v.detected)
        if isinstance(v, PrintedVerdict)
        else SiteDriftStatus(error=v[:300])
        for name, v in verdicts.items()
    }
    drift.running = False
    drift.checked_at = d.now
    drift.next_check_at = d.now + dt.timedelta(seconds=policy.interval_seconds)
    drift.sites = sites
    drift.detected = decision.retrain
    if evaluated:
        drift.share = max(v.drift_share for v in evaluated)
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
        return False
    if drift.detected:
        d.event(
            "Warning",
            "DriftDetected",
            f"drift check {check}: drift at {', '.join(decision.drifted_sites)} (policy {policy.policy}, "
            f"threshold {policy.threshold:g}); starting a run",
        )
        return True
    d.event("Normal", "NoDrift", f"drift check {check}: highest share {drift.share:.2f}")
    return False
