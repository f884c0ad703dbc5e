"""After training: the registered version, the promotion gate (SPEC §4), the rollout of
the inference Deployment to that exact version, and the rollback of alias and Deployment
when the rollout does not become ready.

Promotion itself happens at the edge (tracking.promote, through the plan); its outcome
comes back as the version's promotion tag, which this module follows.
"""

from __future__ import annotations

from healthrisk.contracts import PROMOTION_PROMOTED, PROMOTION_REJECTED, PROMOTION_ROLLED_BACK
from healthrisk_operator import builders
from healthrisk_operator.constants import RESULT_ROLLED_BACK, RESULT_SUCCEEDED, Phase
from healthrisk_operator.decision import runs
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.decision.plan import PromoteRequest, RollbackRequest, RolloutRequest
from healthrisk_operator.status import Metrics, Rollout


def promote_and_roll(d: Decision) -> None:
    status, spec, run = d.status, d.spec, d.run
    if d.observed.registry_error:
        d.set_phase(Phase.PROMOTING, f"run {run}: model registry unreachable: {d.observed.registry_error}")
        return
    version = d.observed.version
    if version is None:
        if d.seconds_since(status.training_finished_at) > d.config.model_version_grace_s:
            runs.fail(
                d,
                "ModelVersionMissing",
                f"run {run} finished but registered no version of {spec.model.registered_name} "
                f"within {d.config.model_version_grace_s}s",
            )
        else:
            d.set_phase(Phase.PROMOTING, f"run {run}: waiting for the registered model version")
        return
    if status.model_version != version.version:
        auc = f" (val AUC {version.auc:.4f})" if version.auc is not None else ""
        d.event(
            "Normal",
            "ModelRegistered",
            f"run {run} registered {spec.model.registered_name} version {version.version}{auc}",
        )
    status.model_version = version.version
    if status.metrics is None:
        status.metrics = Metrics()
    if version.auc is not None:
        status.metrics.auc = round(version.auc, 4)
    if version.champion_auc is not None:
        status.metrics.champion_auc = round(version.champion_auc, 4)
    status.round = spec.rounds
    status.progress = f"{spec.rounds}/{spec.rounds}"
    promotion = spec.promotion
    if version.promotion is None:
        d.plan.promote = PromoteRequest(
            spec.model.registered_name, version.version, promotion.alias, promotion.max_auc_drop
        )
        d.set_phase(Phase.PROMOTING, f"run {run}: deciding promotion of version {version.version}")
        return
    reason = version.promotion_reason or version.promotion
    status.promotion_reason = reason
    if version.promotion == PROMOTION_REJECTED:
        status.promoted = False
        d.event("Normal", "NotPromoted", f"version {version.version} not promoted: {reason}")
        runs.finish(d, RESULT_SUCCEEDED, f"version {version.version} not promoted: {reason}")
        return
    if version.promotion == PROMOTION_ROLLED_BACK:
        status.promoted = False
        runs.finish(d, RESULT_ROLLED_BACK, f"version {version.version} rolled back: {reason}")
        return
    if version.promotion != PROMOTION_PROMOTED:
        runs.fail(
            d, "UnknownPromotionState", f"version {version.version} has promotion tag {version.promotion!r}"
        )
        return
    if status.promoted is not True:
        d.event("Normal", "Promoted", f"version {version.version} is now {promotion.alias}: {reason}")
    status.promoted = True
    if promotion.inference_deployment is None:
        runs.finish(d, RESULT_SUCCEEDED, f"version {version.version} promoted to {promotion.alias}")
        return
    _roll(d, version.version, version.previous_champion)


def _roll(d: Decision, version: str, previous_champion: str | None) -> None:
    status, run, promotion = d.status, d.run, d.spec.promotion
    deployment = d.observed.deployment
    name = str(promotion.inference_deployment)
    if deployment is None or not deployment.found or deployment.error or deployment.container is None:
        problem = (deployment.error if deployment is not None else None) or f"Deployment {name} not found"
        d.event("Warning", "RolloutSkipped", f"version {version} promoted but not rolled out: {problem}")
        runs.finish(d, RESULT_SUCCEEDED, f"version {version} promoted; rollout skipped: {problem}")
        return
    rollout = status.rollout or Rollout()
    if deployment.version != version:
        if rollout.version == version and deployment.previous is None:
            # Our patch is gone (someone re-applied the Deployment): roll back the alias.
            _rollback(
                d,
                version,
                previous_champion,
                deployment.container,
                None,
                f"Deployment {name} no longer pins version {version}",
            )
            return
        d.plan.rollout = RolloutRequest(
            name, builders.rollout_patch(deployment.container, version, deployment.served_version)
        )
        status.rollout = Rollout(deployment=name, version=version, started_at=d.now)
        d.event("Normal", "RolloutStarted", f"rolling Deployment {name} to version {version}")
        d.set_phase(Phase.PROMOTING, f"run {run}: rolling Deployment {name} to version {version}")
        return
    if rollout.version != version:
        rollout = status.rollout = Rollout(deployment=name, version=version, started_at=d.now)
    if deployment.ready:
        d.plan.rollout = RolloutRequest(name, builders.served_label_patch(version))
        d.event("Normal", "RolloutComplete", f"Deployment {name} serves version {version}")
        runs.finish(d, RESULT_SUCCEEDED, f"version {version} promoted and serving in {name}")
        return
    waited = d.seconds_since(rollout.started_at)
    if deployment.failure or waited > promotion.rollout_timeout_seconds:
        problem = deployment.failure or (
            f"Deployment {name} not ready after rolloutTimeoutSeconds={promotion.rollout_timeout_seconds}"
            f" ({deployment.replicas_summary})"
        )
        _rollback(d, version, previous_champion, deployment.container, deployment.previous, problem)
        return
    if deployment.desired == 0:
        d.set_phase(
            Phase.PROMOTING,
            f"run {run}: Deployment {name} has 0 replicas, so nothing serves version {version}: "
            f"scale it up (rolled back after rolloutTimeoutSeconds={promotion.rollout_timeout_seconds})",
        )
        return
    d.set_phase(Phase.PROMOTING, f"run {run}: waiting for Deployment {name} ({deployment.replicas_summary})")


def _rollback(
    d: Decision,
    version: str,
    previous_champion: str | None,
    container: str,
    previous_deployment_version: str | None,
    problem: str,
) -> None:
    promotion = d.spec.promotion
    d.plan.rollback = RollbackRequest(
        registered_name=d.spec.model.registered_name,
        alias=promotion.alias,
        version=version,
        to_version=previous_champion,
        reason=problem,
        deployment=str(promotion.inference_deployment),
        patch=builders.rollback_patch(container, previous_deployment_version, promotion.alias),
    )
    back_to = f"version {previous_champion}" if previous_champion else "no version (alias removed)"
    d.event("Warning", "RolledBack", f"{problem}; {promotion.alias} back to {back_to}")
    d.status.promoted = False
    d.status.promotion_reason = f"rolled back: {problem}"
    runs.finish(d, RESULT_ROLLED_BACK, f"version {version} rolled back: {problem}")
