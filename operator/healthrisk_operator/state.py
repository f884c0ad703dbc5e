"""The reconcile state machine: `decide(observed) -> Plan`, a pure function.

Level-triggered like Kubernetes' Job controller: every call looks at what exists (pods,
Services, the MLflow run and version, the inference Deployment) and at the status it
wrote last time, and returns what should change — objects to create or delete, the
promotion/rollout/rollback to perform, Events, and the complete new status. The caller
(reconcile.py) performs the plan and writes the status; calling it again with the same
observation plans nothing new, which is what makes operator restarts harmless.

A run moves Pending (pods starting, waiting for minSites) → Training (submit pod
running) → Promoting (version found; promotion, rollout) → finished; between runs the
object is Monitoring (drift checks, schedule), Succeeded (nothing left to do) or Failed.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from healthrisk.contracts import (
    ANNOTATION_RETRAIN,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    PROMOTION_ROLLED_BACK,
    ROLE_DRIFT,
    ROLE_SUBMIT,
    ROLE_SUPERLINK,
    ROLE_SUPERNODE,
    TRIGGER_CREATE,
    TRIGGER_DRIFT,
    TRIGGER_MANUAL,
    TRIGGER_SCHEDULE,
    TRIGGER_SPEC_CHANGE,
)
from healthrisk_operator import builders
from healthrisk_operator.builders import Manifest
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.constants import (
    COND_DRIFT,
    COND_FAILED,
    COND_PROMOTED,
    COND_READY,
    COND_SUSPENDED,
    COND_TRAINING,
    HISTORY_LIMIT,
    PHASE_FAILED,
    PHASE_MONITORING,
    PHASE_PENDING,
    PHASE_PROMOTING,
    PHASE_SUCCEEDED,
    PHASE_SUSPENDED,
    PHASE_TRAINING,
    RESULT_FAILED,
    RESULT_ROLLED_BACK,
    RESULT_SUCCEEDED,
    RESULT_SUPERSEDED,
    STUCK_WAITING_REASONS,
)
from healthrisk_operator.spec import SpecError, TrainingSpec, parse_spec
from healthrisk_operator.views import Observed, PodView, format_time, parse_time

RUN_ROLES = (ROLE_SUPERLINK, ROLE_SUPERNODE, ROLE_SUBMIT)


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class PromoteRequest:
    registered_name: str
    version: str
    alias: str
    max_auc_drop: float


@dataclass(frozen=True)
class RolloutRequest:
    deployment: str
    patch: Manifest


@dataclass(frozen=True)
class RollbackRequest:
    registered_name: str
    alias: str
    to_version: str | None
    reason: str
    deployment: str
    patch: Manifest


@dataclass
class Plan:
    status: dict[str, Any]
    create: list[Manifest] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    events: list[EventSpec] = field(default_factory=list)
    promote: PromoteRequest | None = None
    rollout: RolloutRequest | None = None
    rollback: RollbackRequest | None = None
    remove_annotations: list[str] = field(default_factory=list)

    @property
    def changes_registry_or_deployment(self) -> bool:
        """After these the world changed in ways the next observation must see at once."""
        return self.promote is not None or self.rollout is not None or self.rollback is not None


def decide(observed: Observed, config: OperatorConfig) -> Plan:
    return _Decider(observed, config).run()


class _Decider:
    def __init__(self, observed: Observed, config: OperatorConfig) -> None:
        self.obs = observed
        self.config = config
        self.now = observed.now
        self.plan = Plan(status=copy.deepcopy(dict(observed.status)))
        self.st = self.plan.status
        self.spec: TrainingSpec

    # ---- entry -----------------------------------------------------------------

    def run(self) -> Plan:
        self.st["observedGeneration"] = self.obs.generation
        try:
            self.spec = parse_spec(self.obs.spec)
        except SpecError as exc:
            self._invalid_spec(str(exc))
            return self.plan
        self._clean_finished_runs()
        if self.spec.suspend:
            self._suspend()
        else:
            if self.st.get("phase") == PHASE_SUSPENDED:
                self._resume()
            self._triggers()
            if self.st.get("active"):
                self._progress_run()
            else:
                self._monitor_drift()
        self._write_summary()
        return self.plan

    # ---- helpers ---------------------------------------------------------------

    def _event(self, event_type: str, reason: str, message: str) -> None:
        self.plan.events.append(EventSpec(event_type, reason, message))

    def _seconds_since(self, stamp: str | None) -> float:
        when = parse_time(stamp)
        return (self.now - when).total_seconds() if when else 0.0

    def _pods(self, role: str, run: int | None = None) -> list[PodView]:
        return [p for p in self.obs.pods if p.role == role and (run is None or p.run == run)]

    def _delete_pod(self, pod: PodView) -> None:
        if not pod.deleting and ("Pod", pod.name) not in self.plan.delete:
            self.plan.delete.append(("Pod", pod.name))

    def _training(self) -> builders.Training:
        return self.obs.training

    # ---- invalid spec ----------------------------------------------------------

    def _invalid_spec(self, message: str) -> None:
        # Permanent until the spec changes: no retries, one Event, a Failed condition.
        if self.st.get("message") != message:
            self._event("Warning", "InvalidSpec", message)
        self.st.update(phase=PHASE_FAILED, message=message)
        self._set_condition(COND_FAILED, True, "InvalidSpec", message)
        self._set_condition(COND_READY, False, "InvalidSpec", message)

    # ---- suspend ---------------------------------------------------------------

    def _suspend(self) -> None:
        if self.st.get("phase") != PHASE_SUSPENDED:
            self._event("Normal", "Suspended", "spec.suspend is true: run pods deleted, nothing starts")
        run = self.st.get("run")
        if self.st.get("active"):
            for pod in self.obs.pods:
                if pod.role in RUN_ROLES and pod.run == run:
                    self._delete_pod(pod)
        for pod in self._pods(ROLE_DRIFT):
            self._delete_pod(pod)
        for service in self.obs.services:
            if service.run == run and not service.deleting:
                self.plan.delete.append(("Service", service.name))
        drift = self.st.get("drift")
        if drift and drift.get("running"):
            drift["running"] = False
        self.st["phase"] = PHASE_SUSPENDED
        self.st["message"] = "suspended" + (
            f" (run {run} resumes when unsuspended)" if self.st.get("active") else ""
        )

    def _resume(self) -> None:
        self._event("Normal", "Resumed", "spec.suspend cleared")
        if self.st.get("active"):
            # Deadlines count from the resume: the suspended time was nobody's fault.
            self.st["startTime"] = self.st["attemptStartTime"] = format_time(self.now)

    # ---- triggers --------------------------------------------------------------

    def _triggers(self) -> None:
        spec_hash = self.spec.training_hash()
        trigger: str | None = None
        if not self.st.get("run"):
            trigger = TRIGGER_CREATE
        elif self.st.get("specHash") not in (None, spec_hash):
            trigger = TRIGGER_SPEC_CHANGE
            if self.st.get("active"):
                self._finish(RESULT_SUPERSEDED, "the spec changed; a new run replaces it")
        schedule_due = self._schedule_due()
        if not self.st.get("active") and trigger is None:
            if ANNOTATION_RETRAIN in self.obs.annotations:
                trigger = TRIGGER_MANUAL
            elif schedule_due:
                trigger = TRIGGER_SCHEDULE
        elif schedule_due and self.st.get("active"):
            self._event(
                "Normal", "ScheduleSkipped", f"schedule fired while run {self.st.get('run')} is active"
            )
        if trigger is not None:
            self._start_run(trigger)

    def _schedule_due(self) -> bool:
        schedule = self.spec.retraining.schedule
        if schedule is None:
            self.st.pop("nextScheduleTime", None)
            return False
        from croniter import croniter

        base = parse_time(self.st.get("lastScheduleTime")) or self.obs.created_at
        upcoming: dt.datetime = croniter(schedule, base).get_next(dt.datetime)
        due = upcoming <= self.now
        if due:
            # Missed firings (operator down for days) collapse into one run.
            # get_prev is strictly before its base: +1 s makes a firing at `now` count.
            latest: dt.datetime = croniter(schedule, self.now + dt.timedelta(seconds=1)).get_prev(dt.datetime)
            self.st["lastScheduleTime"] = format_time(latest)
            upcoming = croniter(schedule, latest).get_next(dt.datetime)
        self.st["nextScheduleTime"] = format_time(upcoming)
        return due

    def _start_run(self, trigger: str) -> None:
        run = int(self.st.get("run") or 0) + 1
        if ANNOTATION_RETRAIN in self.obs.annotations:
            # Whatever started this run also answers a pending retrain request.
            self.plan.remove_annotations.append(ANNOTATION_RETRAIN)
        for key in (
            "completionTime",
            "trainingFinishedAt",
            "rollout",
            "modelVersion",
            "promoted",
            "promotionReason",
        ):
            self.st.pop(key, None)
        self.st.update(
            run=run,
            active=True,
            trigger=trigger,
            attempt=0,
            failures=0,
            round=0,
            rounds=self.spec.rounds,
            progress=f"0/{self.spec.rounds}",
            metrics={},
            startTime=format_time(self.now),
            attemptStartTime=format_time(self.now),
            specHash=self.spec.training_hash(),
        )
        drift = self.st.get("drift")
        if drift:
            # A check in flight is abandoned (its pods are cleaned up): the run retrains anyway.
            drift.pop("nextCheckAt", None)
            drift["running"] = False
        self._event("Normal", "RunStarted", f"run {run} started (trigger: {trigger})")

    # ---- an active run ---------------------------------------------------------

    def _progress_run(self) -> None:
        run = int(self.st["run"])
        policy = self.spec.run_policy
        if self.obs.action_errors:
            self._fail("Refused", "; ".join(self.obs.action_errors))
            return
        elapsed = self._seconds_since(self.st.get("startTime"))
        if self.st.get("trainingFinishedAt") is None and elapsed > policy.active_deadline_seconds:
            self._fail(
                "DeadlineExceeded",
                f"run {run} did not finish within activeDeadlineSeconds={policy.active_deadline_seconds}",
            )
            return
        if self.st.get("trainingFinishedAt") is None:
            self._ensure_run_infrastructure(run)
            self._follow_training(run, elapsed)
        if self.st.get("active") and self.st.get("trainingFinishedAt") is not None:
            self._promote_and_roll()

    def _ensure_run_infrastructure(self, run: int) -> None:
        training, spec, config = self._training(), self.spec, self.config
        service_name = builders.superlink_name(training.name, run)
        if not any(s.name == service_name for s in self.obs.services):
            self.plan.create.append(builders.superlink_service(training, run))
        wanted = [(service_name, lambda: builders.superlink_pod(training, spec, run, config))]
        for site in spec.sites:
            wanted.append(
                (
                    builders.supernode_name(training.name, run, site),
                    lambda site=site: builders.supernode_pod(training, spec, run, site, config),  # type: ignore[misc]
                )
            )
        existing = {p.name: p for p in self.obs.pods}
        for name, build in wanted:
            pod = existing.get(name)
            if pod is None:
                self.plan.create.append(build())
            elif pod.phase == "Failed" and not pod.deleting:
                # Evicted or killed for good: replace it; the run goes on (Flower reconnects).
                self._event("Warning", "PodReplaced", pod.describe_problem())
                self._delete_pod(pod)

    def _stuck_pods(self, pods: list[PodView]) -> list[PodView]:
        limit = self.spec.run_policy.start_deadline_seconds
        return [
            p
            for p in pods
            if not p.running
            and not p.finished
            and p.created_at is not None
            and (self.now - p.created_at).total_seconds() > limit
        ]

    def _follow_training(self, run: int, elapsed: float) -> None:
        spec, policy = self.spec, self.spec.run_policy
        superlink = next(iter(self._pods(ROLE_SUPERLINK, run)), None)
        supernodes = {p.site: p for p in self._pods(ROLE_SUPERNODE, run)}
        ready_sites = [
            s.name for s in spec.sites if (p := supernodes.get(s.name)) and p.ready and not p.deleting
        ]
        self.st["sitesReady"] = f"{len(ready_sites)}/{len(spec.sites)}"
        superlink_ready = superlink is not None and superlink.ready and not superlink.deleting
        attempt = int(self.st.get("attempt") or 0)
        submit = next((p for p in self._pods(ROLE_SUBMIT, run) if p.attempt == attempt), None)

        if submit is not None and submit.phase == "Succeeded":
            self.st["trainingFinishedAt"] = format_time(self.now)
            self._event("Normal", "TrainingFinished", f"run {run}: the Flower run finished")
            self._record_progress(run)
            return
        if submit is not None and submit.phase == "Failed":
            failures = int(self.st.get("failures") or 0) + 1
            self.st["failures"] = failures
            problem = submit.describe_problem()
            if failures > policy.backoff_limit:
                self._fail(
                    "BackoffLimitExceeded", f"run {run}: {failures} failed submissions; last: {problem}"
                )
                return
            self._event(
                "Warning",
                "SubmitFailed",
                f"{problem}; retrying ({failures}/{policy.backoff_limit} retries used)",
            )
            attempt += 1
            self.st.update(attempt=attempt, attemptStartTime=format_time(self.now))
            submit = None

        infrastructure = [p for p in (superlink, *supernodes.values()) if p is not None]
        if submit is None:
            self._submit_when_ready(run, attempt, elapsed, superlink_ready, ready_sites, infrastructure)
            return
        stuck = self._stuck_pods([*infrastructure, submit])
        if submit.phase == "Pending" and stuck:
            detail = "; ".join(p.describe_problem() for p in stuck)
            self._fail(
                "StartDeadlineExceeded",
                f"run {run}: pods not running after "
                f"startDeadlineSeconds={policy.start_deadline_seconds}: {detail}",
            )
            return
        self._record_progress(run)
        if submit.running:
            self._set_phase(PHASE_TRAINING, f"run {run}: round {self.st.get('round', 0)}/{spec.rounds}")
        else:
            problems = self._problems([submit])
            self._set_phase(
                PHASE_PENDING, f"run {run}: submit pod {submit.phase}" + "".join(f"; {p}" for p in problems)
            )

    @staticmethod
    def _problems(pods: list[PodView]) -> list[str]:
        blocking = STUCK_WAITING_REASONS | {"Unschedulable"}
        return [p.describe_problem() for p in pods if p.waiting_reason in blocking]

    def _submit_when_ready(
        self,
        run: int,
        attempt: int,
        elapsed: float,
        superlink_ready: bool,
        ready_sites: list[str],
        infrastructure: list[PodView],
    ) -> None:
        spec, policy = self.spec, self.spec.run_policy
        if superlink_ready and len(ready_sites) >= spec.min_sites:
            remaining = max(1, policy.active_deadline_seconds - int(elapsed))
            self.plan.create.append(
                builders.submit_pod(
                    self._training(),
                    spec,
                    run,
                    attempt,
                    str(self.st.get("trigger")),
                    self.config,
                    active_deadline_seconds=remaining,
                )
            )
            self._event(
                "Normal",
                "Submitted",
                f"run {run}: {len(ready_sites)}/{len(spec.sites)} sites ready, "
                f"submitting (attempt {attempt + 1})",
            )
            self._set_phase(PHASE_TRAINING, f"run {run} submitted to the SuperLink")
            return
        waiting = [] if superlink_ready else ["SuperLink not ready"]
        if len(ready_sites) < spec.min_sites:
            waiting.append(f"{len(ready_sites)}/{len(spec.sites)} sites ready (minSites {spec.min_sites})")
        problems = self._problems(infrastructure)
        message = f"run {run} waiting: " + "; ".join(waiting + problems)
        if self._seconds_since(self.st.get("attemptStartTime")) > policy.start_deadline_seconds:
            reason = "MinSitesNotReady" if superlink_ready else "StartDeadlineExceeded"
            self._fail(reason, f"{message} after startDeadlineSeconds={policy.start_deadline_seconds}")
            return
        if problems and self.st.get("message") != message:
            self._event("Warning", "PodsNotStarting", message)
        self._set_phase(PHASE_PENDING, message)

    def _record_progress(self, run: int) -> None:
        progress = self.obs.progress
        if progress is None:
            return
        metrics = self.st.setdefault("metrics", {})
        for key in ("auc", "loss", "accuracy"):
            value = getattr(progress, key)
            if value is not None:
                metrics[key] = round(float(value), 4)
        if progress.round is not None and progress.round > int(self.st.get("round") or 0):
            self.st["round"] = progress.round
            self.st["progress"] = f"{progress.round}/{self.spec.rounds}"
            auc = f", val AUC {progress.auc:.4f}" if progress.auc is not None else ""
            self._event(
                "Normal", "RoundCompleted", f"run {run}: round {progress.round}/{self.spec.rounds}{auc}"
            )

    # ---- promotion and rollout -------------------------------------------------

    def _promote_and_roll(self) -> None:
        run = int(self.st["run"])
        if self.obs.registry_error:
            self._set_phase(
                PHASE_PROMOTING, f"run {run}: model registry unreachable: {self.obs.registry_error}"
            )
            return
        version = self.obs.version
        if version is None:
            waited = self._seconds_since(self.st.get("trainingFinishedAt"))
            if waited > self.config.model_version_grace_s:
                self._fail(
                    "ModelVersionMissing",
                    f"run {run} finished but registered no version of {self.spec.model.registered_name} "
                    f"within {self.config.model_version_grace_s}s",
                )
            else:
                self._set_phase(PHASE_PROMOTING, f"run {run}: waiting for the registered model version")
            return
        if self.st.get("modelVersion") != version.version:
            self._event(
                "Normal",
                "ModelRegistered",
                f"run {run} registered {self.spec.model.registered_name} "
                f"version {version.version}"
                + (f" (val AUC {version.auc:.4f})" if version.auc is not None else ""),
            )
        self.st["modelVersion"] = version.version
        if version.auc is not None:
            self.st.setdefault("metrics", {})["auc"] = round(version.auc, 4)
        self.st["round"] = self.spec.rounds
        self.st["progress"] = f"{self.spec.rounds}/{self.spec.rounds}"
        promotion = self.spec.promotion
        if version.promotion is None:
            self.plan.promote = PromoteRequest(
                self.spec.model.registered_name, version.version, promotion.alias, promotion.max_auc_drop
            )
            self._set_phase(PHASE_PROMOTING, f"run {run}: deciding promotion of version {version.version}")
            return
        reason = version.promotion_reason or version.promotion
        self.st["promotionReason"] = reason
        if version.promotion == PROMOTION_REJECTED:
            self.st["promoted"] = False
            self._event("Normal", "NotPromoted", f"version {version.version} not promoted: {reason}")
            self._finish(RESULT_SUCCEEDED, f"version {version.version} not promoted: {reason}")
            return
        if version.promotion == PROMOTION_ROLLED_BACK:
            self.st["promoted"] = False
            self._finish(RESULT_ROLLED_BACK, f"version {version.version} rolled back: {reason}")
            return
        if version.promotion != PROMOTION_PROMOTED:
            self._fail(
                "UnknownPromotionState", f"version {version.version} has promotion tag {version.promotion!r}"
            )
            return
        if self.st.get("promoted") is not True:
            self._event("Normal", "Promoted", f"version {version.version} is now {promotion.alias}: {reason}")
        self.st["promoted"] = True
        if promotion.inference_deployment is None:
            self._finish(RESULT_SUCCEEDED, f"version {version.version} promoted to {promotion.alias}")
            return
        self._roll(run, version.version, version.previous_champion)

    def _roll(self, run: int, version: str, previous_champion: str | None) -> None:
        promotion = self.spec.promotion
        deployment = self.obs.deployment
        name = str(promotion.inference_deployment)
        if deployment is None or not deployment.found or deployment.error or deployment.container is None:
            problem = (deployment.error if deployment is not None else None) or f"Deployment {name} not found"
            self._event(
                "Warning", "RolloutSkipped", f"version {version} promoted but not rolled out: {problem}"
            )
            self._finish(RESULT_SUCCEEDED, f"version {version} promoted; rollout skipped: {problem}")
            return
        rollout = self.st.get("rollout") or {}
        if deployment.version != version:
            if rollout.get("version") == version and deployment.previous is None:
                # Our patch is gone (someone re-applied the Deployment): roll back the alias.
                self._rollback(
                    run,
                    version,
                    previous_champion,
                    deployment.container,
                    None,
                    f"Deployment {name} no longer pins version {version}",
                )
                return
            self.plan.rollout = RolloutRequest(
                name, builders.rollout_patch(deployment.container, version, deployment.served_version)
            )
            self.st["rollout"] = {"deployment": name, "version": version, "startedAt": format_time(self.now)}
            self._event("Normal", "RolloutStarted", f"rolling Deployment {name} to version {version}")
            self._set_phase(PHASE_PROMOTING, f"run {run}: rolling Deployment {name} to version {version}")
            return
        if rollout.get("version") != version:
            self.st["rollout"] = rollout = {
                "deployment": name,
                "version": version,
                "startedAt": format_time(self.now),
            }
        if deployment.ready:
            self._event("Normal", "RolloutComplete", f"Deployment {name} serves version {version}")
            self._finish(RESULT_SUCCEEDED, f"version {version} promoted and serving in {name}")
            return
        waited = self._seconds_since(rollout.get("startedAt"))
        if deployment.failure or waited > promotion.rollout_timeout_seconds:
            problem = deployment.failure or (
                f"Deployment {name} not ready after rolloutTimeoutSeconds={promotion.rollout_timeout_seconds}"
                f" ({deployment.replicas_summary})"
            )
            self._rollback(
                run, version, previous_champion, deployment.container, deployment.previous, problem
            )
            return
        self._set_phase(
            PHASE_PROMOTING, f"run {run}: waiting for Deployment {name} ({deployment.replicas_summary})"
        )

    def _rollback(
        self,
        run: int,
        version: str,
        previous_champion: str | None,
        container: str,
        previous_deployment_version: str | None,
        problem: str,
    ) -> None:
        promotion = self.spec.promotion
        name = str(promotion.inference_deployment)
        self.plan.rollback = RollbackRequest(
            registered_name=self.spec.model.registered_name,
            alias=promotion.alias,
            to_version=previous_champion,
            reason=problem,
            deployment=name,
            patch=builders.rollback_patch(container, previous_deployment_version, promotion.alias),
        )
        back_to = f"version {previous_champion}" if previous_champion else "no version (alias removed)"
        self._event("Warning", "RolledBack", f"{problem}; {promotion.alias} back to {back_to}")
        self.st["promoted"] = False
        self.st["promotionReason"] = f"rolled back: {problem}"
        self._finish(RESULT_ROLLED_BACK, f"version {version} rolled back: {problem}")

    # ---- ending a run ----------------------------------------------------------

    def _fail(self, reason: str, message: str) -> None:
        self._event("Warning", reason, message)
        self._finish(RESULT_FAILED, f"{reason}: {message}")

    def _finish(self, result: str, message: str) -> None:
        run = int(self.st["run"])
        entry = {
            "number": run,
            "trigger": self.st.get("trigger"),
            "result": result,
            "reason": message[:500],
            "attempts": int(self.st.get("attempt") or 0) + 1,
            "startTime": self.st.get("startTime"),
            "completionTime": format_time(self.now),
        }
        for key, status_key in (("version", "modelVersion"), ("promoted", "promoted")):
            if self.st.get(status_key) is not None:
                entry[key] = self.st[status_key]
        if (self.st.get("metrics") or {}).get("auc") is not None:
            entry["auc"] = self.st["metrics"]["auc"]
        history = [h for h in self.st.get("history") or [] if h.get("number") != run]
        self.st["history"] = [entry, *history][:HISTORY_LIMIT]
        self.st["active"] = False
        self.st["completionTime"] = entry["completionTime"]
        self.st.pop("trainingFinishedAt", None)
        if result == RESULT_SUCCEEDED:
            self._event("Normal", "RunSucceeded", f"run {run}: {message}")
        elif result != RESULT_FAILED:
            self._event(
                "Normal" if result == RESULT_SUPERSEDED else "Warning",
                f"Run{result}",
                f"run {run}: {message}",
            )
        self.st["message"] = f"run {run} {result.lower()}: {message}"
        self._clean_run(run, result)

    # ---- cleanup (cleanPodPolicy, ttlSecondsAfterFinished) ---------------------

    def _clean_run(self, run: int, result: str) -> None:
        policy = self.spec.run_policy
        entry = next((h for h in self.st.get("history") or [] if h.get("number") == run), None)
        expired = (
            entry is None
            or result == RESULT_SUPERSEDED
            or self._seconds_since(entry.get("completionTime")) >= policy.ttl_seconds_after_finished
        )
        for pod in self.obs.pods:
            if pod.role not in RUN_ROLES or pod.run != run:
                continue
            if (
                expired
                or policy.clean_pod_policy == "All"
                or (policy.clean_pod_policy == "Running" and not pod.finished)
            ):
                self._delete_pod(pod)
        for service in self.obs.services:
            if (
                service.run == run
                and not service.deleting
                and (expired or policy.clean_pod_policy != "None")
                and ("Service", service.name) not in self.plan.delete
            ):
                self.plan.delete.append(("Service", service.name))

    def _clean_finished_runs(self) -> None:
        last_run = int(self.st.get("run") or 0)
        active_run = last_run if self.st.get("active") else None
        runs = {p.run for p in self.obs.pods if p.role in RUN_ROLES} | {s.run for s in self.obs.services}
        # Runs after the last one in status were created by a reconcile whose status write
        # was lost (operator restart): they belong to the run about to start, not to the past.
        for run in sorted(r for r in runs if r is not None and r != active_run and r <= last_run):
            entry = next((h for h in self.st.get("history") or [] if h.get("number") == run), None)
            self._clean_run(run, entry.get("result", "") if entry else RESULT_SUPERSEDED)
        check = (self.st.get("drift") or {}).get("check")
        running = (self.st.get("drift") or {}).get("running")
        for pod in self._pods(ROLE_DRIFT):
            if not running or pod.drift_check != check:
                self._delete_pod(pod)

    # ---- between runs: drift ---------------------------------------------------

    def _monitor_drift(self) -> None:
        drift_policy = self.spec.retraining.drift
        if drift_policy is None:
            return
        drift = self.st.setdefault("drift", {})
        interval = drift_policy.interval_seconds
        if not drift.get("running"):
            # The clock restarts after every check and every run: a fresh model needs no check.
            stamps = [parse_time(drift.get("checkedAt")), parse_time(self.st.get("completionTime"))]
            base = max((s for s in stamps if s is not None), default=self.now)
            next_at = parse_time(drift.get("nextCheckAt")) or base + dt.timedelta(seconds=interval)
            drift["nextCheckAt"] = format_time(next_at)
            if self.now < next_at:
                return
            drift.update(
                check=int(drift.get("check") or 0) + 1, running=True, checkStartedAt=format_time(self.now)
            )
            self._event(
                "Normal", "DriftCheckStarted", f"drift check {drift['check']} on {len(self.spec.sites)} sites"
            )
        check = int(drift["check"])
        window = drift_policy.current_window(self.now.date())
        pods = {p.site: p for p in self._pods(ROLE_DRIFT) if p.drift_check == check}
        timed_out = self._seconds_since(drift.get("checkStartedAt")) > self.config.drift_check_timeout_s
        for site in self.spec.sites:
            if site.name not in pods and not timed_out:
                self.plan.create.append(
                    builders.drift_pod(
                        self._training(),
                        self.spec,
                        check,
                        site,
                        window,
                        self.config,
                        active_deadline_seconds=self.config.drift_check_timeout_s,
                    )
                )
        if not timed_out and (len(pods) < len(self.spec.sites) or not all(p.finished for p in pods.values())):
            return
        sites: dict[str, dict[str, Any]] = {}
        for site in self.spec.sites:
            pod = pods.get(site.name)
            summary = pod.summary if pod is not None and pod.phase == "Succeeded" else None
            if summary is None or "drift_share" not in summary:
                problem = pod.describe_problem() if pod is not None else "no drift pod"
                if pod is not None and pod.phase == "Succeeded":
                    problem = f"pod {pod.name} printed no drift summary"
                sites[site.name] = {"error": problem[:300]}
                continue
            share = float(summary["drift_share"])
            sites[site.name] = {"share": round(share, 4), "detected": share >= drift_policy.threshold}
        evaluated = [s for s in sites.values() if "share" in s]
        drifted = [name for name, s in sites.items() if s.get("detected")]
        detected = len(drifted) * 2 > len(evaluated) if drift_policy.policy == "majority" else bool(drifted)
        drift.update(
            running=False,
            checkedAt=format_time(self.now),
            nextCheckAt=format_time(self.now + dt.timedelta(seconds=interval)),
            sites=sites,
            detected=detected and bool(evaluated),
        )
        if evaluated:
            drift["share"] = max(float(s["share"]) for s in evaluated)
        for pod in pods.values():
            self._delete_pod(pod)
        errors = {name: s["error"] for name, s in sites.items() if "error" in s}
        if errors:
            self._event(
                "Warning",
                "DriftCheckIncomplete",
                f"drift check {check}: " + "; ".join(f"{k}: {v}" for k, v in errors.items()),
            )
        if not evaluated:
            return
        if drift["detected"]:
            self._event(
                "Warning",
                "DriftDetected",
                f"drift check {check}: drift at {', '.join(drifted)} (policy {drift_policy.policy}, "
                f"threshold {drift_policy.threshold:g}); starting a run",
            )
            self._start_run(TRIGGER_DRIFT)
            self._progress_run()
        else:
            self._event("Normal", "NoDrift", f"drift check {check}: highest share {drift['share']:.2f}")

    # ---- phase, message, conditions --------------------------------------------

    def _set_phase(self, phase: str, message: str) -> None:
        self.st["phase"] = phase
        self.st["message"] = message

    def _write_summary(self) -> None:
        st = self.st
        history = st.get("history") or []
        last = history[0] if history else None
        if self.spec.suspend:
            pass
        elif st.get("active"):
            st.setdefault("phase", PHASE_PENDING)
            if st["phase"] in (PHASE_MONITORING, PHASE_SUCCEEDED, PHASE_FAILED, PHASE_SUSPENDED):
                st["phase"] = PHASE_PENDING
        elif last is not None:
            if last["result"] == RESULT_FAILED:
                st["phase"] = PHASE_FAILED
            else:
                st["phase"] = PHASE_MONITORING if self.spec.retrains else PHASE_SUCCEEDED
            if self.spec.retraining.drift and (st.get("drift") or {}).get("running"):
                st["message"] = f"drift check {st['drift']['check']} running"
        training_reason = {
            PHASE_PENDING: "WaitingForPods",
            PHASE_TRAINING: "Training",
            PHASE_PROMOTING: "Promoting",
        }.get(st.get("phase", ""), "NoActiveRun")
        self._set_condition(
            COND_TRAINING,
            bool(st.get("active")) and not self.spec.suspend,
            training_reason,
            st.get("message", ""),
        )
        self._set_condition(
            COND_SUSPENDED,
            self.spec.suspend,
            "Suspended" if self.spec.suspend else "NotSuspended",
            "spec.suspend is true" if self.spec.suspend else "",
        )
        if last is not None:
            failed = last["result"] == RESULT_FAILED
            reason_text = str(last.get("reason", ""))
            self._set_condition(
                COND_FAILED,
                failed,
                reason_text.split(":", 1)[0] if failed else "LastRunSucceeded",
                reason_text if failed else f"run {last['number']} {last['result'].lower()}",
            )
            promoted = bool(last.get("promoted"))
            promoted_reason = (
                "Promoted"
                if promoted
                else "RolledBack"
                if last["result"] == RESULT_ROLLED_BACK
                else "NotPromoted"
            )
            self._set_condition(
                COND_PROMOTED,
                promoted,
                promoted_reason,
                f"run {last['number']}: " + str(st.get("promotionReason") or last.get("reason", "")),
            )
            any_served = any(h.get("promoted") for h in history)
            self._set_condition(
                COND_READY,
                any_served,
                "ModelServing" if any_served else "NoPromotedModel",
                f"{self.spec.promotion.alias} comes from this training"
                if any_served
                else "no run of this training has promoted a model yet",
            )
        else:
            self._set_condition(COND_FAILED, False, "NoRunYet", "")
            self._set_condition(COND_READY, False, "NoRunYet", "the first run has not finished")
        drift = st.get("drift") or {}
        if "detected" in drift:
            self._set_condition(
                COND_DRIFT,
                bool(drift["detected"]),
                "DriftDetected" if drift["detected"] else "NoDrift",
                f"highest drift share {drift.get('share', 0):.2f} at {drift.get('checkedAt')}",
            )

    def _set_condition(self, kind: str, value: bool, reason: str, message: str) -> None:
        """metav1.Condition semantics: lastTransitionTime moves only when status flips."""
        conditions: list[dict[str, Any]] = self.st.setdefault("conditions", [])
        status = "True" if value else "False"
        current = next((c for c in conditions if c.get("type") == kind), None)
        if current is None:
            current = {"type": kind}
            conditions.append(current)
        if current.get("status") != status:
            current["lastTransitionTime"] = format_time(self.now)
        current.update(
            status=status,
            reason=reason or kind,
            message=message[:1000],
            observedGeneration=self.obs.generation,
        )
        current.setdefault("lastTransitionTime", format_time(self.now))
