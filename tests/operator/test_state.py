"""The reconcile state machine, one scenario per rule, on an in-memory world (no cluster)."""

from __future__ import annotations

import json
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
    METRIC_CHAMPION_VAL_AUC,
    REGISTERED_MODEL,
    TRIGGER_SPEC_CHANGE,
)
from healthrisk_operator.decision.plan import RunSecretRequest, SiteKeyRequest
from healthrisk_operator.views import DeploymentView, PodView, RunProgress, VersionView

from .helpers import MINIMAL_SPEC, load_crd, schema_paths, value_paths, version_schema
from .world import CONFIG, World

SUPERLINK = "ft-r1-superlink"
NODES = ("ft-r1-supernode-hospital-01", "ft-r1-supernode-hospital-02")


def start_training(world: World) -> None:
    """create → SuperLink ready → keys registered → SuperNodes ready → submit running."""
    world.bring_up()
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


def test_create_starts_run_one_with_its_superlink_and_key_material() -> None:
    world = World()
    plan = world.step()
    created = sorted((m["kind"], m["metadata"]["name"]) for m in plan.create)
    assert created == [("Pod", SUPERLINK), ("Service", SUPERLINK)]
    sites = [s for s in plan.generate if isinstance(s, SiteKeyRequest)]
    assert [s.site.name for s in sites] == ["hospital_01", "hospital_02"]  # they brought no keys
    (material,) = [r for r in plan.generate if isinstance(r, RunSecretRequest)]
    assert material.run == 1 and material.server_names == (
        "ft-r1-superlink.ns.svc",
        "ft-r1-superlink.ns.svc.cluster.local",
    )
    assert world.status["run"] == 1 and world.status["active"] is True
    assert world.status["trigger"] == "create"
    assert world.status["phase"] == "Pending"
    assert world.status["sitesReady"] == "0/2"
    assert world.status["observedGeneration"] == 1
    assert "RunStarted" in world.reasons()
    assert world.condition("Training")["status"] == "True"
    assert world.condition("Ready")["status"] == "False"
    assert world.condition("Insecure")["status"] == "False"


def test_the_insecure_opt_out_makes_no_key_material_and_says_so_in_status() -> None:
    world = World(with_spec(security={"insecure": True}))
    plan = world.step()
    assert plan.generate == [], "no certificates, no site keys"
    # No registration to wait for: the SuperNodes start beside the SuperLink.
    assert sorted(m["metadata"]["name"] for m in plan.create if m["kind"] == "Pod") == sorted(
        (SUPERLINK, *NODES)
    )
    insecure = world.condition("Insecure")
    assert (insecure["status"], insecure["reason"]) == ("True", "InsecureByRequest")
    assert "in clear" in insecure["message"]


def test_supernodes_start_once_the_registrar_has_registered_their_keys() -> None:
    world = World()
    world.step()
    world.set_pod(SUPERLINK, phase="Running")  # its registrar at work: not ready yet
    world.refuse_registration.update({"hospital_01", "hospital_02"})
    world.step()
    assert not world.run_pods("supernode")
    assert world.status["sites"]["hospital_01"] == {"keyRegistered": False, "authenticated": False}
    world.refuse_registration.clear()
    world.make_ready(SUPERLINK)
    plan = world.step()
    assert sorted(m["metadata"]["name"] for m in plan.create) == sorted(NODES)
    assert world.status["sites"] == {
        "hospital_01": {"keyRegistered": True, "authenticated": False, "node": "registered"},
        "hospital_02": {"keyRegistered": True, "authenticated": False, "node": "registered"},
    }
    world.make_ready(*NODES)
    world.step()
    assert world.status["sites"]["hospital_01"] == {
        "keyRegistered": True,
        "authenticated": True,
        "node": "online",
    }
    # The key material was made once, with the SuperLink's pod; never read back.
    assert world.secrets == {"ft-r1-flower", "ft-hospital-01-supernode-key", "ft-hospital-02-supernode-key"}
    assert all(not p.generate for p in world.plans[1:])


def test_a_site_whose_key_cannot_be_read_gets_no_supernode() -> None:
    world = World(with_spec(minSites=1, runPolicy={"startDeadlineSeconds": 60}))
    world.key_errors["hospital_02"] = "no public key mounted"
    world.bring_up()
    assert sorted(p.name for p in world.run_pods("supernode")) == [NODES[0]]
    assert world.status["sites"]["hospital_02"] == {
        "keyRegistered": False,
        "authenticated": False,
        "keyError": "no public key mounted",
    }
    world.step()
    assert world.status["phase"] == "Training"  # minSites 1: the run goes on without it


def test_a_ready_supernode_that_is_not_authenticated_does_not_count() -> None:
    """Pod readiness is not authentication: a site counts once the SuperLink holds its
    key and reports its node online."""
    world = World()
    world.bring_up()
    world.refuse_registration.add("hospital_02")  # e.g. its SuperLink restarted and lost it
    plan = world.step()
    assert world.pod(NODES[1]).ready
    assert world.status["sitesReady"] == "1/2"
    assert world.status["sites"]["hospital_02"] == {"keyRegistered": False, "authenticated": False}
    assert not [m for m in plan.create if m["metadata"]["name"].startswith("ft-r1-submit")]
    world.refuse_registration.clear()  # the registrar registered it again
    world.step()
    assert world.status["sitesReady"] == "2/2" and world.pod("ft-r1-submit-0")


def test_pods_created_before_a_lost_status_write_are_kept() -> None:
    world = World()
    world.step()
    world.status = {}  # the operator died before writing status: the pods exist, status does not
    plan = world.step()
    assert plan.delete == [] and plan.create == [] and plan.generate == []
    assert world.status["run"] == 1 and sorted(world.pods) == [SUPERLINK]


def test_same_observation_twice_creates_nothing_new() -> None:
    world = World()
    world.step()
    again = world.step()
    assert again.create == [] and again.delete == []
    assert "RunStarted" not in world.reasons(again)


def test_submit_waits_for_superlink_and_min_sites_then_training() -> None:
    world = World(with_spec(minSites=1))
    world.step()
    world.make_ready(SUPERLINK)
    world.step()
    world.set_pod(SUPERLINK, ready=False)  # e.g. its container restarting
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
        "windows": {"hospital_01": "2024-01-01..2024-01-14", "hospital_02": "2024-01-01..2024-01-14"},
        "fingerprint": world.status["dataFingerprint"],
    }
    assert {"Promoted", "RunSucceeded"} <= set(world.reasons(plan))
    assert world.condition("Ready")["status"] == "True"
    assert world.condition("Promoted")["status"] == "True"
    assert world.condition("Training")["status"] == "False"
    # cleanPodPolicy Running: the servers go at once, the finished submit pod stays for its logs.
    assert sorted(world.pods) == ["ft-r1-submit-0"] and world.services == {}


def test_a_fixed_window_run_goes_on_where_an_older_crd_pruned_its_resolved_window() -> None:
    """The 0.1 chart's CRD has no status.dataWindows/dataFingerprint: the API server drops
    them, and a fixed window is resolved again instead (it is the same at any time)."""
    world = World()
    world.step()
    resolved = world.status["dataWindows"], world.status["dataFingerprint"]
    del world.status["dataWindows"], world.status["dataFingerprint"]
    world.start_pods()
    world.set_pod("ft-r1-submit-0", phase="Running", ready=True)
    world.step()
    assert world.status["phase"] == "Training", world.status.get("message")
    assert "ft-r1-submit-0" in world.pods and all(resolved)


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
    world.make_ready(SUPERLINK)
    world.step()
    world.make_ready(NODES[0])
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
    # the run's key material went with it; the sites' keys stay for the next run
    assert world.secrets == {"ft-hospital-01-supernode-key", "ft-hospital-02-supernode-key"}


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
    assert sorted(m["kind"] for m in plan.create) == ["Pod", "Service"]  # the SuperLink first, again
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


def test_retrain_request_during_a_run_waits_once_and_same_data_is_skipped() -> None:
    world = World()
    start_training(world)
    world.annotations[ANNOTATION_RETRAIN] = "now"
    plan = world.step()  # a run is active: the request is remembered, the annotation answered
    assert world.status["run"] == 1 and plan.remove_annotations == [ANNOTATION_RETRAIN]
    assert world.status["pending"]["trigger"] == "manual" and "RunQueued" in world.reasons(plan)
    world.annotations[ANNOTATION_RETRAIN] = "again"
    world.step()
    finish_training(world, promotion="promoted")
    world.step()
    assert world.status["active"] is False and world.status["pending"]["trigger"] == "manual"
    # the next reconcile takes the request: the fixed window has not moved, so run 1
    # trained on exactly this data
    plan = world.step()
    assert world.status["run"] == 1 and world.status["active"] is False and "pending" not in world.status
    assert world.reasons(plan).count("RetrainSkipped") == 1
    assert world.status["message"] == "RetrainSkipped: no new data since run 1"
    assert world.status["skipped"]["trigger"] == "manual"
    assert world.step().events == []  # remembered once: nothing more to skip


def test_cron_schedule_queues_while_active_and_skips_what_it_has_trained_on() -> None:
    world = World(with_spec(retraining={"schedule": "0 * * * *"}))  # hourly
    start_training(world)
    assert world.status["nextScheduleTime"] == "2026-03-01T13:00:00Z"
    world.advance(3600)
    world.step()
    assert world.status["pending"]["trigger"] == "schedule" and world.status["run"] == 1
    finish_training(world, promotion="promoted")
    world.step()
    world.step()
    assert world.status["phase"] == "Monitoring" and "RetrainSkipped" in world.all_reasons()
    world.advance(3600)
    world.step()
    assert world.status["run"] == 1 and world.status["skipped"]["trigger"] == "schedule"
    assert world.status["lastScheduleTime"] == "2026-03-01T14:00:00Z"
    world.edit_spec(dataWindow={"from": "2024-01-01", "to": "2024-01-21"})  # the user moves the window
    world.step()
    assert world.status["run"] == 2 and world.status["trigger"] == TRIGGER_SPEC_CHANGE


# ---- rolling windows -------------------------------------------------------------

ROLLING = {"last": "28d"}


def finish_inventory(world: World, days: dict[str, list[str]]) -> None:
    """The days-listing pods print what `healthrisk data days` prints."""
    for pod in world.run_pods("inventory"):
        world.set_pod(pod.name, phase="Succeeded", summary={"site": pod.site, "days": days[str(pod.site)]})


def both(days: str) -> dict[str, list[str]]:
    return {"hospital_01": [days], "hospital_02": [days]}


def complete_run(world: World, run: int, version: str, promotion: str = "promoted") -> None:
    """A started run's pods become ready, the submit pod succeeds, the version is decided."""
    world.start_pods()
    world.version = None  # the registry has no version of this run yet
    world.set_pod(f"ft-r{run}-submit-0", phase="Succeeded")
    world.step()
    world.version = VersionView(version, 0.85, champion_auc=0.84, promotion=promotion, promotion_reason="r")
    world.step()
    assert world.status["active"] is False and world.status["history"][0]["number"] == run


def rolling_world(**changes: Any) -> World:
    """Run 1 trained on a rolling window that ended on 2024-01-14, promoted."""
    world = World(with_spec(dataWindow=ROLLING, **changes))
    world.step()
    finish_inventory(world, both("2024-01-01..2024-01-14"))
    world.step()
    complete_run(world, 1, "7")
    return world


def test_rolling_window_ends_on_the_newest_day_every_site_has() -> None:
    world = World(with_spec(dataWindow=ROLLING))
    plan = world.step()
    assert sorted(m["metadata"]["name"] for m in plan.create) == [
        "ft-days1-hospital-01",
        "ft-days1-hospital-02",
    ]
    assert world.status["phase"] == "Pending" and "run" not in world.status
    world.step()  # listing: nothing new
    finish_inventory(
        world, {"hospital_01": ["2024-01-01..2024-01-20"], "hospital_02": ["2024-01-01..2024-01-18"]}
    )
    plan = world.step()
    expected = "2023-12-22..2024-01-18"
    assert world.status["run"] == 1 and world.status["dataWindows"] == dict.fromkeys(
        ("hospital_01", "hospital_02"), expected
    )
    assert expected in next(e.message for e in plan.events if e.reason == "RunStarted")
    assert world.run_pods("inventory") == []
    world.start_pods()
    submit = next(m for p in world.plans for m in p.create if m["metadata"]["name"] == "ft-r1-submit-0")
    run_config = json.loads(submit["spec"]["containers"][0]["args"][-1])
    assert (run_config["data-from"], run_config["data-to"]) == ("2023-12-22", "2024-01-18")
    assert run_config["data-fingerprint"] == world.status["dataFingerprint"]


def test_sites_without_a_common_day_drop_the_request_with_a_warning() -> None:
    world = World(with_spec(dataWindow=ROLLING))
    world.step()
    finish_inventory(world, {"hospital_01": ["2024-01-01..2024-01-10"], "hospital_02": []})
    world.step()
    assert "run" not in world.status and "pending" not in world.status
    assert "NoTrainingData" in world.reasons() and "no day of data in common" in world.status["message"]


def test_a_new_day_rearms_a_skipped_trigger() -> None:
    world = rolling_world()
    world.annotations[ANNOTATION_RETRAIN] = "now"
    world.step()
    finish_inventory(world, both("2024-01-01..2024-01-14"))
    world.step()
    assert world.status["run"] == 1 and world.status["skipped"]["message"] == (
        "RetrainSkipped: no new data since run 1"
    )
    world.advance(60)
    world.annotations[ANNOTATION_RETRAIN] = "now"
    world.step()
    finish_inventory(world, both("2024-01-01..2024-01-15"))
    world.step()
    assert world.status["run"] == 2 and world.status["trigger"] == "manual"
    assert world.status["dataWindows"]["hospital_01"] == "2023-12-19..2024-01-15"


def test_an_inventory_taken_before_the_trigger_is_not_used() -> None:
    world = rolling_world(retraining={"drift": {"interval": "1h"}})
    world.advance(3601)
    world.step()  # drift check 1 lists the days
    assert [p.inventory_round for p in world.run_pods("inventory")] == [2, 2]
    world.advance(5)
    world.annotations[ANNOTATION_RETRAIN] = "now"
    world.step()  # the request abandons the check and lists the days again, after it
    assert sorted({p.inventory_round for p in world.run_pods("inventory")}) == [3]
    assert world.status["drift"]["running"] is False


# ---- drift -----------------------------------------------------------------------


def drift_world(policy: str = "any", **retraining: Any) -> World:
    world = rolling_world(
        retraining={"drift": {"interval": "1h", "threshold": 0.5, "policy": policy}, **retraining}
    )
    assert world.status["phase"] == "Monitoring"
    return world


def summary(
    site: str, score: float, *, auc: float | None = 0.84, current: str | None = "2024-01-15..2024-01-15"
):
    return {
        "site": site,
        "score": score,
        "detected": score >= 0.5,
        "current": current,
        "performance": None if auc is None else {"auc": auc, "loss": 0.41, "rows": 200},
        "champion_version": "7",
        METRIC_CHAMPION_VAL_AUC: 0.85,
    }


def run_check(
    world: World, scores: dict[str, float | None], newest: str = "2024-01-15", **fields: Any
) -> None:
    """One drift check after the interval: days listed, then each site's drift pod ends."""
    world.advance(3601)
    world.step()
    finish_inventory(world, both(f"2024-01-01..{newest}"))
    world.step()
    for pod in world.run_pods("drift"):
        score = scores[str(pod.site)]
        if score is None:
            world.set_pod(pod.name, phase="Failed", exit_code=2, termination_message="schema refused")
        else:
            world.set_pod(pod.name, phase="Succeeded", summary=summary(str(pod.site), score, **fields))


def test_drift_checks_the_new_days_and_a_drift_run_trains_on_them() -> None:
    world = drift_world()
    world.advance(1800)
    assert world.step().create == []
    world.advance(1801)
    plan = world.step()
    assert sorted(m["metadata"]["name"] for m in plan.create) == [
        "ft-days2-hospital-01",
        "ft-days2-hospital-02",
    ]
    assert "DriftCheckStarted" in world.reasons(plan)
    finish_inventory(world, both("2024-01-01..2024-01-15"))
    plan = world.step()
    drift_pods = sorted(m["metadata"]["name"] for m in plan.create)
    assert drift_pods == ["ft-drift1-hospital-01", "ft-drift1-hospital-02"]
    args = plan.create[0]["spec"]["containers"][0]["args"]
    assert args[args.index("--until") + 1] == "2024-01-15"
    assert world.status["phase"] == "Monitoring" and "drift check 1 running" in world.status["message"]
    for pod in world.run_pods("drift"):
        world.set_pod(
            pod.name,
            phase="Succeeded",
            summary=summary(
                str(pod.site),
                {"hospital_01": 0.91}.get(str(pod.site), 0.09),
                auc=0.8 if pod.site == "hospital_01" else 0.86,
            ),
        )
    plan = world.step()
    drift = world.status["drift"]
    assert drift["detected"] is True and drift["score"] == 0.91 and drift["until"] == "2024-01-15"
    assert drift["sites"]["hospital_01"] == {
        "score": 0.91, "detected": True, "current": "2024-01-15..2024-01-15",
        "auc": 0.8, "loss": 0.41, "rows": 200,
    }  # fmt: skip
    assert drift["auc"] == 0.83 and drift["siteAucs"] == "hospital_01=0.800 hospital_02=0.860"
    assert world.condition("DriftDetected")["status"] == "True"
    # the run trains through the day the check looked at: the drifted days are in its window
    assert world.status["run"] == 2 and world.status["trigger"] == "drift"
    assert world.status["dataWindows"]["hospital_01"] == "2023-12-19..2024-01-15"
    assert not world.run_pods("drift")
    assert {"DriftDetected", "RunStarted"} <= set(world.reasons(plan))


def test_after_a_drift_run_the_same_data_starts_no_run_whatever_the_checks_say() -> None:
    world = drift_world()
    run_check(world, {"hospital_01": 0.91, "hospital_02": 0.1})
    world.step()
    complete_run(world, 2, "8", promotion="rejected")
    for _ in range(3):  # the rejected run leaves the old champion: the check still fires
        run_check(world, {"hospital_01": 0.91, "hospital_02": 0.1})
        world.step()
        assert world.status["run"] == 2 and world.status["skipped"]["trigger"] == "drift"
    assert world.all_reasons().count("RetrainSkipped") == 3
    run_check(world, {"hospital_01": 0.91, "hospital_02": 0.1}, newest="2024-01-16")
    world.step()
    assert world.status["run"] == 3  # a new day re-arms it


def test_majority_policy_needs_most_sites() -> None:
    world = drift_world("majority")
    run_check(world, {"hospital_01": 0.91, "hospital_02": 0.09})
    world.step()
    assert world.status["drift"]["detected"] is False and world.status["run"] == 1
    assert world.status["drift"]["nextCheckAt"] == "2026-03-01T14:00:01Z"


def test_a_failed_drift_pod_is_reported_not_fatal() -> None:
    world = drift_world()
    run_check(world, {"hospital_01": 0.1, "hospital_02": None})
    world.step()
    sites = world.status["drift"]["sites"]
    assert "schema refused" in sites["hospital_02"]["error"]
    assert world.status["drift"]["detected"] is False
    assert "DriftCheckIncomplete" in world.reasons()


def test_a_failed_inventory_ends_the_check_incomplete() -> None:
    world = drift_world()
    world.advance(3601)
    world.step()
    for pod in world.run_pods("inventory"):
        world.set_pod(pod.name, phase="Failed", exit_code=1, termination_message="no data directory")
    world.step()
    assert "DriftCheckIncomplete" in world.reasons() and world.status["drift"]["running"] is False
    assert world.run_pods("drift") == [] and world.run_pods("inventory") == []


def test_each_site_is_judged_by_its_own_drift_pod() -> None:
    """The pod's verdict (taken at the threshold it was given) counts, not a recomputation;
    a summary that is not one is reported, not guessed at."""
    world = drift_world()
    world.advance(3601)
    world.step()
    finish_inventory(world, both("2024-01-01..2024-01-15"))
    world.step()
    first, second = world.run_pods("drift")
    world.set_pod(
        first.name, phase="Succeeded", summary={"site": first.site, "score": 0.64, "detected": False}
    )
    world.set_pod(second.name, phase="Succeeded", summary={"site": second.site, "score": 0.2})
    world.step()
    sites = world.status["drift"]["sites"]
    assert sites[str(first.site)] == {"score": 0.64, "detected": False}
    assert "drift summary has no 'detected'" in sites[str(second.site)]["error"]
    assert world.status["drift"]["detected"] is False and world.status["run"] == 1


def test_a_decayed_champion_retrains_with_trigger_performance() -> None:
    world = drift_world(performance={"maxAucDrop": 0.02})
    run_check(world, {"hospital_01": 0.1, "hospital_02": 0.1}, auc=0.84)
    world.step()
    assert world.status["drift"]["performanceDecayed"] is False and world.status["run"] == 1
    run_check(world, {"hospital_01": 0.1, "hospital_02": 0.1}, auc=0.6, newest="2024-01-16")
    plan = world.step()
    assert world.status["drift"]["performanceDecayed"] is True and "PerformanceDecayed" in world.reasons(plan)
    assert world.status["run"] == 2 and world.status["trigger"] == "performance"


def test_default_interval_checks_every_six_hours() -> None:
    """The shortest interval the CRD allows is what the cluster tests use; this is the default."""
    world = rolling_world(retraining={"drift": {}})
    completion = world.status["completionTime"]
    world.step()
    assert world.status["drift"]["nextCheckAt"] == completion.replace("T12:00:00Z", "T18:00:00Z")
    world.advance(6 * 3600 - 1)
    assert world.step().create == []
    world.advance(1)
    assert world.run_pods("inventory") == [] and world.step().create
    assert len(world.run_pods("inventory")) == 2


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


POLICY = CONFIG.model_copy(
    update={
        "allowed_tracking_uris": ["https://mlflow.example.org/"],
        "mountable_secrets": ["flower-tls", "site-1-key"],
        "inference_deployments": ["health-risk-inference"],
        "registered_models": [REGISTERED_MODEL],
    }
)
SITE_KEYS = [
    {**site, "authSecretName": f"site-{i}-key"} for i, site in enumerate(MINIMAL_SPEC["sites"], start=1)
]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (with_spec(model={"trackingUri": "http://169.254.169.254/"}), "spec.model.trackingUri"),
        (with_spec(security={"tlsSecretName": "api-key"}), "spec.security.tlsSecretName"),
        (
            with_spec(sites=SITE_KEYS, security={"tlsSecretName": "flower-tls"}),
            "spec.sites[hospital_02].authSecretName",
        ),
        (with_spec(promotion={"inferenceDeployment": "payroll"}), "spec.promotion.inferenceDeployment"),
        (with_spec(model={"registeredName": "not-granted"}), "spec.model.registeredName"),
    ],
)
def test_a_spec_outside_the_operators_policy_is_refused_before_anything_is_made(
    spec: dict[str, Any], field: str
) -> None:
    world = World(spec, config=POLICY)
    plan = world.step()
    assert plan.create == [] and plan.promote is None and world.status["phase"] == "Failed"
    failed = world.condition("Failed")
    assert failed["reason"] == "InvalidSpec" and failed["message"].startswith(field), failed
    # The operator run by hand (no policy) takes the same spec.
    assert World(spec).step().create


def test_what_the_policy_names_and_the_operators_own_tracking_server_are_accepted() -> None:
    spec = with_spec(
        sites=[*SITE_KEYS[:1], {**SITE_KEYS[1], "authSecretName": "flower-tls"}],
        model={"trackingUri": "https://mlflow.example.org"},  # the trailing slash does not matter
        security={"tlsSecretName": "flower-tls"},
        promotion={"inferenceDeployment": "health-risk-inference"},
    )
    assert World(spec, config=POLICY).step().create
    own = with_spec(model={"trackingUri": CONFIG.tracking_uri})
    assert World(own, config=POLICY).step().create


def test_refused_creates_fail_the_run() -> None:
    world = World()
    world.step()
    world.action_errors = ("Pod ft-r1-superlink refused: exceeded quota",)
    world.step()
    assert world.condition("Failed")["reason"] == "Refused"
    assert "exceeded quota" in world.condition("Failed")["message"]


# ---- drift -----------------------------------------------------------------------


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
    performance = drift_world(performance={"maxAucDrop": 0.02})
    run_check(performance, {"hospital_01": 0.91, "hospital_02": 0.1})
    performance.step()
    written |= value_paths(
        performance.status, free_maps=frozenset({"drift.sites", "dataWindows", "history[].windows"})
    )
    for world in (drift_world(), rollout_world()):
        world.advance(3601)
        world.step()
        world.step()
        written |= value_paths(
            world.status, free_maps=frozenset({"drift.sites", "dataWindows", "history[].windows", "sites"})
        )
    world = World(with_spec(retraining={"schedule": "0 * * * *"}))
    start_training(world)
    written |= value_paths(world.status, free_maps=frozenset({"dataWindows", "sites"}))
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
