"""The reconcile state machine, one scenario per rule, on an in-memory world (no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from healthrisk.contracts import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_PREVIOUS_MODEL_VERSION,
    ANNOTATION_RETRAIN,
    ENV_MODEL_VERSION,
    LABEL_ATTEMPT,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SERVED_VERSION,
    TRIGGER_SPEC_CHANGE,
)
from healthrisk_operator.views import DeploymentView, PodView, RunProgress, VersionView

from .helpers import MINIMAL_SPEC, load_crd, schema_paths, value_paths, version_schema
from .world import World

SUPERLINK = "ft-r1-superlink"
NODES = ("ft-r1-supernode-hospital-01", "ft-r1-supernode-hospital-02")


def start_training(world: World) -> None:
    """create → pods ready → submit running."""
    world.step()
    world.make_ready()
    world.step()
    world.set_pod("ft-r1-submit-0", phase="Running", ready=True)
    world.step()


def finish_training(
    world: World, version: str = "7", auc: float = 0.85, promotion: str | None = None
) -> None:
    world.set_pod("ft-r1-submit-0", phase="Succeeded", ready=False)
    world.step()
    world.version = VersionView(version, auc, promotion=promotion)


def with_spec(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL_SPEC, **changes}


# ---- creation and the happy path -------------------------------------------------


def test_create_starts_run_one_with_all_its_objects() -> None:
    world = World()
    plan = world.step()
    created = sorted((m["kind"], m["metadata"]["name"]) for m in plan.create)
    assert created == [("Pod", SUPERLINK), ("Pod", NODES[0]), ("Pod", NODES[1]), ("Service", SUPERLINK)]
    assert world.status["run"] == 1 and world.status["active"] is True
    assert world.status["trigger"] == "create"
    assert world.status["phase"] == "Pending"
    assert world.status["sitesReady"] == "0/2"
    assert world.status["observedGeneration"] == 1
    assert "RunStarted" in world.reasons()
    assert world.condition("Training")["status"] == "True"
    assert world.condition("Ready")["status"] == "False"


def test_pods_created_before_a_lost_status_write_are_kept() -> None:
    world = World()
    world.step()
    world.status = {}  # the operator died before writing status: the pods exist, status does not
    plan = world.step()
    assert plan.delete == [] and plan.create == []
    assert world.status["run"] == 1 and sorted(world.pods) == sorted([SUPERLINK, *NODES])


def test_same_observation_twice_creates_nothing_new() -> None:
    world = World()
    world.step()
    again = world.step()
    assert again.create == [] and again.delete == []
    assert "RunStarted" not in world.reasons(again)


def test_submit_waits_for_superlink_and_min_sites_then_training() -> None:
    world = World(with_spec(minSites=1))
    world.step()
    world.make_ready(NODES[0])
    assert not any(m["metadata"]["name"].startswith("ft-r1-submit") for m in world.step().create)
    assert "SuperLink not ready" in world.status["message"]
    world.make_ready(SUPERLINK)
    plan = world.step()
    assert [m["metadata"]["name"] for m in plan.create] == ["ft-r1-submit-0"]
    assert world.status["sitesReady"] == "1/2"
    assert world.status["phase"] == "Training"


def test_progress_rounds_and_metrics_follow_mlflow() -> None:
    world = World()
    start_training(world)
    world.progress = RunProgress(round=2, auc=0.81234, loss=0.45, accuracy=0.77)
    world.step()
    assert world.status["round"] == 2 and world.status["progress"] == "2/5"
    assert world.status["metrics"] == {"auc": 0.8123, "loss": 0.45, "accuracy": 0.77}
    assert "RoundCompleted" in world.reasons()
    world.step()
    assert "RoundCompleted" not in world.reasons()  # one Event per round, not per reconcile


def test_happy_path_promotes_and_finishes() -> None:
    world = World()
    start_training(world)
    finish_training(world)
    plan = world.step()
    assert plan.promote is not None and plan.promote.version == "7" and plan.promote.alias == "champion"
    assert world.status["phase"] == "Promoting"
    world.version = VersionView("7", 0.85, promotion="promoted", promotion_reason="no champion yet")
    plan = world.step()
    assert world.status["phase"] == "Succeeded"  # no schedule, no drift: nothing more to do
    assert world.status["active"] is False
    assert world.status["modelVersion"] == "7" and world.status["promoted"] is True
    assert world.status["history"][0] == {
        "number": 1,
        "trigger": "create",
        "result": "Succeeded",
        "reason": "version 7 promoted to champion",
        "attempts": 1,
        "startTime": "2026-03-01T12:00:00Z",
        "completionTime": "2026-03-01T12:00:00Z",
        "version": "7",
        "promoted": True,
        "auc": 0.85,
    }
    assert {"Promoted", "RunSucceeded"} <= set(world.reasons(plan))
    assert world.condition("Ready")["status"] == "True"
    assert world.condition("Promoted")["status"] == "True"
    assert world.condition("Training")["status"] == "False"
    # cleanPodPolicy Running: the servers go at once, the finished submit pod stays for its logs.
    assert sorted(world.pods) == ["ft-r1-submit-0"] and world.services == {}


def test_rejected_version_stays_registered_not_promoted() -> None:
    world = World()
    start_training(world)
    finish_training(world, promotion="rejected")
    world.version = VersionView("7", 0.7, promotion="rejected", promotion_reason="val AUC 0.7000 < champion")
    world.step()
    assert world.status["promoted"] is False
    assert world.status["history"][0]["result"] == "Succeeded"
    assert world.condition("Promoted")["reason"] == "NotPromoted"
    assert "NotPromoted" in world.reasons()


def test_version_missing_after_grace_fails() -> None:
    world = World()
    start_training(world)
    finish_training(world)
    world.version = None
    world.step()
    assert world.status["phase"] == "Promoting"
    world.advance(301)
    world.step()
    assert world.status["phase"] == "Failed"
    assert world.condition("Failed")["reason"] == "ModelVersionMissing"


def test_registry_down_waits_visibly() -> None:
    world = World()
    start_training(world)
    finish_training(world)
    world.registry_error = "ConnectionError: refused"
    world.advance(3600)
    world.step()
    assert world.status["phase"] == "Promoting" and "unreachable" in world.status["message"]


# ---- runPolicy -------------------------------------------------------------------


def test_failed_submissions_retry_up_to_backoff_limit() -> None:
    world = World(with_spec(runPolicy={"backoffLimit": 1}))
    start_training(world)
    world.set_pod("ft-r1-submit-0", phase="Failed", exit_code=1, terminated_reason="Error")
    plan = world.step()
    assert [m["metadata"]["name"] for m in plan.create] == ["ft-r1-submit-1"]
    assert world.status["attempt"] == 1 and world.status["failures"] == 1
    assert "SubmitFailed" in world.reasons()
    world.set_pod("ft-r1-submit-1", phase="Failed", exit_code=2, termination_message="flower run failed")
    world.step()
    assert world.status["phase"] == "Failed"
    failed = world.condition("Failed")
    assert failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
    assert "exit code 2" in failed["message"] and "flower run failed" in failed["message"]
    assert world.status["history"][0]["attempts"] == 2


def test_active_deadline_fails_and_cleans_up() -> None:
    world = World(with_spec(runPolicy={"activeDeadlineSeconds": 100}))
    start_training(world)
    world.advance(101)
    world.step()
    assert world.condition("Failed")["reason"] == "DeadlineExceeded"
    assert world.pods == {} and world.services == {}  # the running submit pod goes too


def test_image_pull_backoff_fails_at_start_deadline_with_the_reason() -> None:
    world = World(with_spec(runPolicy={"startDeadlineSeconds": 60}))
    world.step()
    world.set_pod(
        SUPERLINK, waiting_reason="ImagePullBackOff", waiting_message='Back-off pulling "flower:dev"'
    )
    world.step()
    assert "PodsNotStarting" in world.reasons()
    assert "ImagePullBackOff" in world.status["message"] and world.status["phase"] == "Pending"
    world.advance(61)
    world.step()
    failed = world.condition("Failed")
    assert failed["reason"] == "StartDeadlineExceeded"
    assert "ft-r1-superlink ImagePullBackOff" in failed["message"]


def test_fewer_than_min_sites_waits_then_fails() -> None:
    world = World(with_spec(runPolicy={"startDeadlineSeconds": 60}))
    world.step()
    world.make_ready(SUPERLINK, NODES[0])
    world.set_pod(NODES[1], waiting_reason="Unschedulable", waiting_message="0/1 nodes available")
    world.advance(30)
    world.step()
    assert world.status["phase"] == "Pending"
    assert "1/2 sites ready (minSites 2)" in world.status["message"]
    world.advance(31)
    world.step()
    assert world.condition("Failed")["reason"] == "MinSitesNotReady"
    assert "Unschedulable" in world.condition("Failed")["message"]


def test_evicted_site_pod_is_replaced() -> None:
    world = World()
    start_training(world)
    world.set_pod(NODES[0], phase="Failed", terminated_reason="Evicted")
    plan = world.step()
    assert ("Pod", NODES[0]) in plan.delete and "PodReplaced" in world.reasons()
    plan = world.step()
    assert [m["metadata"]["name"] for m in plan.create] == [NODES[0]]


@pytest.mark.parametrize(
    ("policy", "left_at_end"),
    [("Running", ["ft-r1-submit-0"]), ("All", []), ("None", ["ft-r1-submit-0", SUPERLINK, *NODES])],
)
def test_clean_pod_policy_and_ttl(policy: str, left_at_end: list[str]) -> None:
    world = World(with_spec(runPolicy={"cleanPodPolicy": policy, "ttlSecondsAfterFinished": 600}))
    start_training(world)
    finish_training(world, promotion="promoted")
    world.step()
    assert sorted(world.pods) == sorted(left_at_end)
    world.advance(601)
    world.step()
    assert world.pods == {} and world.services == {}


def test_history_keeps_the_last_ten_runs() -> None:
    world = World()
    for run in range(1, 13):
        world.annotations[ANNOTATION_RETRAIN] = "now"
        world.step() if run > 1 else None
        world.advance(10)
        world.step()
        assert world.status["run"] == run
        world.set_pod(f"ft-r{run}-superlink", waiting_reason="ErrImagePull")
        world.advance(601)
        world.step()
        assert world.status["active"] is False
    assert [h["number"] for h in world.status["history"]] == list(range(12, 2, -1))


# ---- suspend and triggers --------------------------------------------------------


def test_suspend_deletes_run_pods_and_resume_restarts_the_clock() -> None:
    world = World()
    start_training(world)
    world.edit_spec(suspend=True)
    world.step()
    assert world.status["phase"] == "Suspended" and world.pods == {} and world.services == {}
    assert world.condition("Suspended")["status"] == "True"
    assert world.status["run"] == 1 and world.status["active"] is True
    world.advance(7200)  # longer than activeDeadlineSeconds: suspended time does not count
    world.edit_spec(suspend=False)
    plan = world.step()
    assert "Resumed" in world.reasons(plan)
    assert world.status["run"] == 1 and world.status["phase"] == "Pending"
    assert len(plan.create) == 4
    assert world.status["startTime"] == world.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_created_suspended_starts_nothing() -> None:
    world = World(with_spec(suspend=True))
    assert world.step().create == []
    assert world.status["phase"] == "Suspended" and "run" not in world.status


def test_spec_change_supersedes_the_active_run() -> None:
    world = World()
    start_training(world)
    world.edit_spec(rounds=9)
    plan = world.step()
    assert world.status["run"] == 2 and world.status["trigger"] == TRIGGER_SPEC_CHANGE
    assert world.status["history"][0]["result"] == "Superseded"
    assert all(name.startswith("ft-r2-") for name in world.pods)
    assert "RunSuperseded" in world.reasons(plan)


def test_operator_only_fields_do_not_retrain() -> None:
    world = World()
    start_training(world)
    finish_training(world, promotion="promoted")
    world.step()
    world.edit_spec(runPolicy={"backoffLimit": 5}, promotion={"maxAucDrop": 0.02})
    world.step()
    assert world.status["run"] == 1 and world.status["observedGeneration"] == 2


def test_retrain_annotation_starts_a_manual_run_and_is_removed() -> None:
    world = World()
    start_training(world)
    world.annotations[ANNOTATION_RETRAIN] = "now"
    plan = world.step()  # a run is active: the request waits
    assert world.status["run"] == 1 and plan.remove_annotations == []
    finish_training(world, promotion="promoted")
    world.step()
    assert world.status["active"] is False
    plan = world.step()
    assert world.status["run"] == 2 and world.status["trigger"] == "manual"
    assert plan.remove_annotations == [ANNOTATION_RETRAIN]


def test_cron_schedule_starts_runs_and_skips_while_active() -> None:
    world = World(with_spec(retraining={"schedule": "0 * * * *"}))  # hourly
    start_training(world)
    assert world.status["nextScheduleTime"] == "2026-03-01T13:00:00Z"
    world.advance(3600)
    world.step()
    assert "ScheduleSkipped" in world.reasons() and world.status["run"] == 1
    finish_training(world, promotion="promoted")
    world.step()
    assert world.status["phase"] == "Monitoring"
    world.advance(3600)
    world.step()
    assert world.status["run"] == 2 and world.status["trigger"] == "schedule"
    assert world.status["lastScheduleTime"] == "2026-03-01T14:00:00Z"


def test_invalid_spec_is_a_permanent_failed_condition() -> None:
    world = World(with_spec(retraining={"schedule": "not a cron"}))
    plan = world.step()
    assert plan.create == [] and world.status["phase"] == "Failed"
    assert world.condition("Failed")["reason"] == "InvalidSpec"
    assert "not a valid cron" in world.condition("Failed")["message"]
    assert world.reasons(plan) == ["InvalidSpec"]
    assert world.step().events == []  # no retry storm, no repeated Event
    world.edit_spec(retraining={})
    world.step()
    assert world.status["run"] == 1


def test_refused_creates_fail_the_run() -> None:
    world = World()
    world.step()
    world.action_errors = ("Pod ft-r1-superlink refused: exceeded quota",)
    world.step()
    assert world.condition("Failed")["reason"] == "Refused"
    assert "exceeded quota" in world.condition("Failed")["message"]


# ---- drift -----------------------------------------------------------------------


def drift_world(policy: str = "any") -> World:
    world = World(with_spec(retraining={"drift": {"interval": "1h", "threshold": 0.5, "policy": policy}}))
    start_training(world)
    finish_training(world, promotion="promoted")
    world.step()
    assert world.status["phase"] == "Monitoring"
    return world


def finish_drift_pods(world: World, shares: dict[str, float | None]) -> None:
    for pod in world.run_pods("drift"):
        share = shares[str(pod.site)]
        if share is None:
            world.set_pod(pod.name, phase="Failed", exit_code=2, termination_message="schema refused")
        else:
            world.set_pod(
                pod.name,
                phase="Succeeded",
                summary={"site": pod.site, "drift_share": share, "detected": share >= 0.5},
            )


def test_drift_checks_run_on_the_interval_and_drift_retrains() -> None:
    world = drift_world()
    world.advance(1800)
    assert world.step().create == []
    world.advance(1801)
    plan = world.step()
    assert sorted(m["metadata"]["name"] for m in plan.create) == [
        "ft-drift1-hospital-01",
        "ft-drift1-hospital-02",
    ]
    assert "DriftCheckStarted" in world.reasons(plan)
    world.step()
    assert world.status["phase"] == "Monitoring" and "drift check 1 running" in world.status["message"]
    finish_drift_pods(world, {"hospital_01": 0.64, "hospital_02": 0.09})
    plan = world.step()
    drift = world.status["drift"]
    assert drift["detected"] is True and drift["share"] == 0.64
    assert drift["sites"] == {
        "hospital_01": {"share": 0.64, "detected": True},
        "hospital_02": {"share": 0.09, "detected": False},
    }
    assert world.condition("DriftDetected")["status"] == "True"
    assert world.status["run"] == 2 and world.status["trigger"] == "drift"
    assert not world.run_pods("drift")
    assert {"DriftDetected", "RunStarted"} <= set(world.reasons(plan))


def test_majority_policy_needs_most_sites() -> None:
    world = drift_world("majority")
    world.advance(3601)
    world.step()
    finish_drift_pods(world, {"hospital_01": 0.64, "hospital_02": 0.09})
    world.step()
    assert world.status["drift"]["detected"] is False and world.status["run"] == 1
    assert world.status["drift"]["nextCheckAt"] == "2026-03-01T14:00:01Z"


def test_a_failed_drift_pod_is_reported_not_fatal() -> None:
    world = drift_world()
    world.advance(3601)
    world.step()
    finish_drift_pods(world, {"hospital_01": 0.1, "hospital_02": None})
    world.step()
    sites = world.status["drift"]["sites"]
    assert "schema refused" in sites["hospital_02"]["error"]
    assert world.status["drift"]["detected"] is False
    assert "DriftCheckIncomplete" in world.reasons()


def test_each_site_is_judged_by_its_own_drift_pod() -> None:
    """The pod's verdict (taken at the threshold it was given) counts, not a recomputation;
    a summary that is not one is reported, not guessed at."""
    world = drift_world()
    world.advance(3601)
    world.step()
    first, second = world.run_pods("drift")
    world.set_pod(
        first.name, phase="Succeeded", summary={"site": first.site, "drift_share": 0.64, "detected": False}
    )
    world.set_pod(second.name, phase="Succeeded", summary={"site": second.site, "drift_share": 0.2})
    world.step()
    sites = world.status["drift"]["sites"]
    assert sites[str(first.site)] == {"share": 0.64, "detected": False}
    assert "drift summary has no 'detected'" in sites[str(second.site)]["error"]
    assert world.status["drift"]["detected"] is False and world.status["run"] == 1


# ---- rollout ---------------------------------------------------------------------


def rollout_world() -> World:
    world = World(with_spec(promotion={"inferenceDeployment": "inference", "rolloutTimeoutSeconds": 120}))
    start_training(world)
    finish_training(world)
    world.version = VersionView("7", 0.85, promotion="promoted", previous_champion="5")
    world.deployment = DeploymentView(
        "inference", version="5", served_version="5", container="server", ready=True
    )
    return world


def test_promoted_version_is_rolled_out_and_waited_for() -> None:
    world = rollout_world()
    plan = world.step()
    assert plan.rollout is not None and plan.rollout.deployment == "inference"
    assert plan.rollout.patch["spec"]["template"]["metadata"]["annotations"] == {
        ANNOTATION_MODEL_VERSION: "7"
    }
    assert plan.rollout.patch["metadata"]["annotations"] == {ANNOTATION_PREVIOUS_MODEL_VERSION: "5"}
    assert world.status["phase"] == "Promoting"
    world.deployment = DeploymentView("inference", version="7", previous="5", container="server", ready=False)
    assert world.step().rollout is None
    world.deployment = DeploymentView("inference", version="7", previous="5", container="server", ready=True)
    plan = world.step()
    assert "RolloutComplete" in world.reasons()
    assert world.status["history"][0]["result"] == "Succeeded" and world.status["promoted"] is True
    # What `kubectl get deploy -L healthrisk.io/served-version` shows from now on.
    assert plan.rollout is not None
    assert plan.rollout.patch == {"metadata": {"labels": {LABEL_SERVED_VERSION: "7"}}}


def test_a_deployment_at_zero_replicas_never_completes_a_rollout() -> None:
    world = rollout_world()
    world.step()
    world.deployment = DeploymentView(
        "inference", version="7", previous="5", container="server", desired=0, ready=False
    )
    world.step()
    assert world.status["phase"] == "Promoting" and world.status.get("history") is None
    assert "has 0 replicas, so nothing serves version 7" in world.status["message"]
    world.advance(121)
    assert world.step().rollback is not None
    assert world.status["history"][0]["result"] == "RolledBack"


def test_rollout_not_ready_in_time_rolls_back_alias_and_deployment() -> None:
    world = rollout_world()
    world.step()
    world.deployment = DeploymentView("inference", version="7", previous="5", container="server", ready=False)
    world.advance(121)
    plan = world.step()
    assert plan.rollback is not None
    assert (plan.rollback.alias, plan.rollback.to_version) == ("champion", "5")
    assert plan.rollback.version == "7"
    env = plan.rollback.patch["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": ENV_MODEL_VERSION, "value": "5"}]
    assert plan.rollback.patch["metadata"]["labels"] == {LABEL_SERVED_VERSION: "5"}
    assert world.status["history"][0]["result"] == "RolledBack"
    assert world.status["promoted"] is False
    assert world.condition("Promoted")["reason"] == "RolledBack"
    assert "RolledBack" in world.reasons(plan)


def test_missing_deployment_skips_rollout_with_a_warning() -> None:
    world = rollout_world()
    world.deployment = DeploymentView("inference", found=False)
    world.step()
    assert "RolloutSkipped" in world.reasons()
    assert world.status["history"][0]["result"] == "Succeeded"


# ---- status shape ----------------------------------------------------------------


def test_conditions_keep_transition_time_until_status_flips() -> None:
    world = World()
    world.step()
    first = dict(world.condition("Training"))
    world.advance(30)
    world.step()
    assert world.condition("Training")["lastTransitionTime"] == first["lastTransitionTime"]
    for condition in world.status["conditions"]:
        assert set(condition) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }


def test_every_status_field_written_is_in_the_crd_schema() -> None:
    """The API server prunes unknown status fields silently; catch that here."""
    allowed = schema_paths(version_schema(load_crd())["properties"]["status"])
    written: set[str] = set()
    for world in (drift_world(), rollout_world()):
        world.advance(3601)
        world.step()
        world.step()
        written |= value_paths(world.status, free_maps=frozenset({"drift.sites"}))
    world = World(with_spec(retraining={"schedule": "0 * * * *"}))
    start_training(world)
    written |= value_paths(world.status)
    assert written - allowed == set()


def test_pod_view_reads_waiting_reasons_and_scheduling() -> None:
    from healthrisk_operator.views import pod_view

    pending = pod_view(
        {
            "metadata": {
                "name": "p",
                "labels": {LABEL_ROLE: "supernode", LABEL_RUN: "2"},
            },
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}
                ],
            },
        }
    )
    assert (pending.run, pending.waiting_reason, pending.ready) == (2, "Unschedulable", False)
    failed = pod_view(
        {
            "metadata": {
                "name": "s",
                "labels": {LABEL_ROLE: "submit", LABEL_ATTEMPT: "0"},
            },
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": 3, "reason": "Error", "message": "boom"}}}
                ],
            },
        }
    )
    assert failed.describe_problem() == "pod s failed (exit code 3): Error; boom"
    assert PodView("x", "drift").finished is False
