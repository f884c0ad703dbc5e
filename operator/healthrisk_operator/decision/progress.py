"""An active run, from pods to a finished Flower run: the SuperLink, its Service and one
SuperNode per site; the submit pod once the SuperLink and minSites are ready; retries
within runPolicy.backoffLimit; start and active deadlines; rounds and metrics from MLflow.
Once training finished, promotion takes over (decision/promotion.py)."""

from __future__ import annotations

from collections.abc import Callable

from healthrisk.contracts import ANNOTATION_CAPTURE_MESSAGES, ROLE_SUBMIT, ROLE_SUPERLINK, ROLE_SUPERNODE
from healthrisk_operator import builders
from healthrisk_operator.builders import Manifest
from healthrisk_operator.constants import NODE_ONLINE, STUCK_WAITING_REASONS, Phase
from healthrisk_operator.decision import promotion, runs
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.decision.plan import RunSecretRequest, SiteKeyRequest
from healthrisk_operator.status import Metrics, SiteStatus
from healthrisk_operator.views import PodView


def advance(d: Decision) -> None:
    run, policy = d.run, d.spec.run_policy
    if d.observed.action_errors:
        runs.fail(d, "Refused", "; ".join(d.observed.action_errors))
        return
    elapsed = d.seconds_since(d.status.start_time)
    if d.status.training_finished_at is None and elapsed > policy.active_deadline_seconds:
        runs.fail(
            d,
            "DeadlineExceeded",
            f"run {run} did not finish within activeDeadlineSeconds={policy.active_deadline_seconds}",
        )
        return
    if d.status.training_finished_at is None:
        _ensure_infrastructure(d, run)
        _follow_training(d, run, elapsed)
    if d.status.active and d.status.training_finished_at is not None:
        promotion.promote_and_roll(d)


def _ensure_infrastructure(d: Decision, run: int) -> None:
    training, spec, config = d.training, d.spec, d.config
    secure = not spec.security.insecure
    existing = {p.name: p for p in d.observed.pods}
    service_name = builders.superlink_name(training.name, run)
    if secure and service_name not in existing:
        # The key material its pod mounts, made first (AlreadyExists if it is there).
        names = None if spec.security.tls_secret_name else tuple(builders.superlink_dns_names(training, run))
        d.plan.generate.append(RunSecretRequest(run, names))
        d.plan.generate += [SiteKeyRequest(site) for site in spec.sites if not site.auth_secret_name]
    if not any(s.name == service_name for s in d.observed.services):
        d.plan.create.append(builders.superlink_service(training, run))
    capture = d.observed.annotations.get(ANNOTATION_CAPTURE_MESSAGES) == "true"
    wanted: list[tuple[str, Callable[[], Manifest]]] = [
        (service_name, lambda: builders.superlink_pod(training, spec, run, config, capture=capture))
    ]
    sites = _sites(d)
    for site in spec.sites:
        if secure and not sites[site.name].key_registered:
            continue  # its key first: the SuperLink refuses any SuperNode it does not know
        wanted.append(
            (
                builders.supernode_name(training.name, run, site),
                lambda site=site: builders.supernode_pod(training, spec, run, site, config),  # type: ignore[misc]
            )
        )
    for name, build in wanted:
        pod = existing.get(name)
        if pod is None:
            d.plan.create.append(build())
        elif pod.phase == "Failed" and not pod.deleting:
            # Evicted or killed for good: replace it; the run goes on (Flower reconnects).
            d.event("Warning", "PodReplaced", pod.describe_problem())
            d.delete_pod(pod)


def _sites(d: Decision) -> dict[str, SiteStatus]:
    """Each site's standing: at the SuperLink (its registrar's report), and whether it
    declined (the ServerApp's MLflow tag)."""
    federation = d.observed.federation
    reported = federation.sites if federation is not None else None
    declined = d.observed.progress.declined if d.observed.progress else {}
    sites: dict[str, SiteStatus] = {}
    for site in d.spec.sites:
        status = SiteStatus.model_validate((reported or {}).get(site.name) or {})
        if reported is not None:
            status.key_registered = bool(status.key_registered)
            status.authenticated = status.node == NODE_ONLINE
        status.declined = declined.get(site.name)
        sites[site.name] = status
    d.status.sites = sites
    return sites


def _stuck_pods(d: Decision, pods: list[PodView]) -> list[PodView]:
    limit = d.spec.run_policy.start_deadline_seconds
    return [
        p
        for p in pods
        if not p.running
        and not p.finished
        and p.created_at is not None
        and (d.now - p.created_at).total_seconds() > limit
    ]


def _problems(pods: list[PodView]) -> list[str]:
    blocking = STUCK_WAITING_REASONS | {"Unschedulable"}
    return [p.describe_problem() for p in pods if p.waiting_reason in blocking]


def _follow_training(d: Decision, run: int, elapsed: float) -> None:
    status, spec, policy = d.status, d.spec, d.spec.run_policy
    superlink = next(iter(d.pods(ROLE_SUPERLINK, run)), None)
    # By the names we gave them: a pod that merely carries a site's labels is not that site.
    pods = {p.name: p for p in d.pods(ROLE_SUPERNODE, run)}
    supernodes = {
        s.name: pod for s in spec.sites if (pod := pods.get(builders.supernode_name(d.training.name, run, s)))
    }
    sites = status.sites or {}
    ready_sites = [
        s.name
        for s in spec.sites
        if (p := supernodes.get(s.name))
        and p.ready
        and not p.deleting
        # Authenticated: connected with its registered key, not merely a ready pod.
        and (spec.security.insecure or bool(sites[s.name].authenticated))
    ]
    status.sites_ready = f"{len(ready_sites)}/{len(spec.sites)}"
    superlink_ready = superlink is not None and superlink.ready and not superlink.deleting
    attempt = status.attempt or 0
    submit = next((p for p in d.pods(ROLE_SUBMIT, run) if p.attempt == attempt), None)

    if submit is not None and submit.phase == "Succeeded":
        status.training_finished_at = d.now
        d.event("Normal", "TrainingFinished", f"run {run}: the Flower run finished")
        _record_progress(d, run)
        return
    if submit is not None and submit.phase == "Failed":
        failures = (status.failures or 0) + 1
        status.failures = failures
        problem = submit.describe_problem()
        if failures > policy.backoff_limit:
            runs.fail(d, "BackoffLimitExceeded", f"run {run}: {failures} failed submissions; last: {problem}")
            return
        d.event(
            "Warning",
            "SubmitFailed",
            f"{problem}; retrying ({failures}/{policy.backoff_limit} retries used)",
        )
        attempt += 1
        status.attempt = attempt
        status.attempt_start_time = d.now
        submit = None

    infrastructure = [p for p in (superlink, *supernodes.values()) if p is not None]
    if submit is None:
        _submit_when_ready(d, run, attempt, elapsed, superlink_ready, ready_sites, infrastructure)
        return
    stuck = _stuck_pods(d, [*infrastructure, submit])
    if submit.phase == "Pending" and stuck:
        detail = "; ".join(p.describe_problem() for p in stuck)
        runs.fail(
            d,
            "StartDeadlineExceeded",
            f"run {run}: pods not running after "
            f"startDeadlineSeconds={policy.start_deadline_seconds}: {detail}",
        )
        return
    _record_progress(d, run)
    if submit.running:
        d.set_phase(Phase.TRAINING, f"run {run}: round {status.round or 0}/{spec.rounds}")
    else:
        problems = _problems([submit])
        d.set_phase(
            Phase.PENDING, f"run {run}: submit pod {submit.phase}" + "".join(f"; {p}" for p in problems)
        )


def _submit_when_ready(
    d: Decision,
    run: int,
    attempt: int,
    elapsed: float,
    superlink_ready: bool,
    ready_sites: list[str],
    infrastructure: list[PodView],
) -> None:
    status, spec, policy = d.status, d.spec, d.spec.run_policy
    if superlink_ready and len(ready_sites) >= spec.min_sites:
        remaining = max(1, policy.active_deadline_seconds - int(elapsed))
        d.plan.create.append(
            builders.submit_pod(
                d.training,
                spec,
                run,
                attempt,
                str(status.trigger),
                d.run_data,
                d.config,
                active_deadline_seconds=remaining,
            )
        )
        d.event(
            "Normal",
            "Submitted",
            f"run {run}: {len(ready_sites)}/{len(spec.sites)} sites ready, "
            f"submitting (attempt {attempt + 1})",
        )
        d.set_phase(Phase.TRAINING, f"run {run} submitted to the SuperLink")
        return
    waiting = [] if superlink_ready else ["SuperLink not ready"]
    if len(ready_sites) < spec.min_sites:
        waiting.append(f"{len(ready_sites)}/{len(spec.sites)} sites ready (minSites {spec.min_sites})")
    problems = _problems(infrastructure)
    message = f"run {run} waiting: " + "; ".join(waiting + problems)
    if d.seconds_since(status.attempt_start_time) > policy.start_deadline_seconds:
        reason = "MinSitesNotReady" if superlink_ready else "StartDeadlineExceeded"
        runs.fail(d, reason, f"{message} after startDeadlineSeconds={policy.start_deadline_seconds}")
        return
    if problems and status.message != message:
        d.event("Warning", "PodsNotStarting", message)
    d.set_phase(Phase.PENDING, message)


def _record_progress(d: Decision, run: int) -> None:
    """Rounds and validation metrics the ServerApp logged to MLflow (step = round)."""
    progress, status = d.observed.progress, d.status
    if progress is None:
        return
    if status.metrics is None:
        status.metrics = Metrics()
    metrics = status.metrics
    if progress.auc is not None:
        metrics.auc = round(progress.auc, 4)
    if progress.loss is not None:
        metrics.loss = round(progress.loss, 4)
    if progress.accuracy is not None:
        metrics.accuracy = round(progress.accuracy, 4)
    if progress.epsilon is not None and status.privacy is not None:
        status.privacy.epsilon = round(progress.epsilon, 4)
    if progress.round is not None and progress.round > (status.round or 0):
        status.round = progress.round
        status.progress = f"{progress.round}/{d.spec.rounds}"
        auc = f", val AUC {progress.auc:.4f}" if progress.auc is not None else ""
        d.event("Normal", "RoundCompleted", f"run {run}: round {progress.round}/{d.spec.rounds}{auc}")
