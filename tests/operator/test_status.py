"""The typed status and the CRD's status schema agree, and the one conversion to and from
the API server's dict loses nothing (also for objects an older operator wrote)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from healthrisk_operator.status import TrainingStatus

from .helpers import load_crd, version_schema
from .world import World

Shape = dict[str, tuple[str, str | None, tuple[str, ...]]]


def shape(schema: dict[str, Any], defs: dict[str, Any], path: str = "") -> Shape:
    """path → (type, date-time format, enum) of every field; '[]' marks array items,
    '*' the values of a free-form map."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:  # pydantic's Optional: X | None
        (schema,) = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return shape(schema, defs, path)
    kind = schema.get("type", "string" if "enum" in schema else None)
    if kind == "object" and "properties" in schema:
        fields: Shape = {}
        for key, prop in schema["properties"].items():
            fields |= shape(prop, defs, f"{path}.{key}" if path else key)
        return fields
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return shape(schema["additionalProperties"], defs, f"{path}.*")
    if kind == "array":
        return shape(schema["items"], defs, f"{path}[]")
    date_time = "date-time" if schema.get("format") == "date-time" else None
    return {path: (str(kind), date_time, tuple(sorted(schema.get("enum", ()))))}


def test_typed_status_mirrors_the_crd_status_schema() -> None:
    crd_status = version_schema(load_crd())["properties"]["status"]
    typed = TrainingStatus.model_json_schema(by_alias=True)
    crd_shape, typed_shape = shape(crd_status, {}), shape(typed, typed["$defs"])
    assert set(typed_shape) == set(crd_shape)
    assert typed_shape == crd_shape
    assert typed_shape["phase"][2] == (
        "Failed",
        "Monitoring",
        "Pending",
        "Promoting",
        "Succeeded",
        "Suspended",
        "Training",
    )


FULL_STATUS: dict[str, Any] = {
    "phase": "Promoting",
    "message": "run 3: rolling Deployment inference to version 7",
    "run": 3,
    "active": True,
    "attempt": 1,
    "failures": 1,
    "trainingFinishedAt": "2026-03-01T12:10:00Z",
    "attemptStartTime": "2026-03-01T12:01:00Z",
    "trigger": "drift",
    "round": 5,
    "rounds": 5,
    "progress": "5/5",
    "sitesReady": "2/2",
    "metrics": {"auc": 0.8567, "loss": 0.41, "accuracy": 0.8},
    "modelVersion": "7",
    "promoted": True,
    "promotionReason": "val AUC 0.8567 >= champion 0.8500 - 0.0",
    "startTime": "2026-03-01T12:00:00Z",
    "completionTime": "2026-02-22T03:20:00Z",
    "lastScheduleTime": "2026-02-22T03:00:00Z",
    "nextScheduleTime": "2026-03-08T03:00:00Z",
    "specHash": "0123456789abcdef",
    "observedGeneration": 4,
    "rollout": {"deployment": "inference", "version": "7", "startedAt": "2026-03-01T12:11:00Z"},
    "drift": {
        "check": 4,
        "running": False,
        "checkStartedAt": "2026-03-01T11:00:00Z",
        "checkedAt": "2026-03-01T11:05:00Z",
        "nextCheckAt": "2026-03-01T17:05:00Z",
        "share": 0.64,
        "detected": True,
        "sites": {
            "hospital_01": {"share": 0.64, "detected": True},
            "hospital_02": {"error": "pod ft-drift4-hospital-02 failed (exit code 2)"},
        },
    },
    "history": [
        {
            "number": 2,
            "trigger": "schedule",
            "result": "Succeeded",
            "reason": "version 6 promoted to champion",
            "version": "6",
            "auc": 0.85,
            "promoted": True,
            "attempts": 1,
            "startTime": "2026-02-22T03:00:00Z",
            "completionTime": "2026-02-22T03:20:00Z",
        }
    ],
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "observedGeneration": 4,
            "lastTransitionTime": "2026-02-22T03:20:00Z",
            "reason": "ModelServing",
            "message": "champion comes from this training",
        }
    ],
}


def test_every_status_field_survives_the_round_trip() -> None:
    assert TrainingStatus.from_api(FULL_STATUS).to_api() == FULL_STATUS
    assert TrainingStatus.from_api({}).to_api() == {}
    assert TrainingStatus.from_api(None).to_api() == {}


def test_unknown_keys_are_kept_and_legacy_history_entries_are_read() -> None:
    written_by_another_version = {
        "run": 2,
        "someFutureField": {"x": 1},
        "drift": {"check": 1, "futureVerdict": "maybe"},
        "history": [{"run": 2, "result": "Failed"}, {"number": 1, "result": "Succeeded"}],
    }
    status = TrainingStatus.from_api(written_by_another_version)
    assert status.history is not None and [h.number for h in status.history] == [2, 1]
    assert status.to_api() == {
        "run": 2,
        "someFutureField": {"x": 1},
        "drift": {"check": 1, "futureVerdict": "maybe"},
        "history": [{"number": 2, "result": "Failed"}, {"number": 1, "result": "Succeeded"}],
    }


def test_timestamps_are_written_in_whole_seconds_utc() -> None:
    status = TrainingStatus()
    status.start_time = dt.datetime(2026, 3, 1, 13, 0, 5, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert status.start_time == dt.datetime(2026, 3, 1, 12, 0, 5, tzinfo=dt.UTC)
    assert status.to_api() == {"startTime": "2026-03-01T12:00:05Z"}


def test_a_run_the_old_operator_wrote_keeps_reconciling() -> None:
    """A mid-run status as the dict-based operator left it: the run goes on, not restarts."""
    world = World()
    world.bring_up()
    world.step()
    old_operator_status = dict(world.status)
    old_operator_status["history"] = [{"run": 0, "result": "Superseded", "reason": "before the rename"}]
    world.status = old_operator_status
    world.set_pod("ft-r1-submit-0", phase="Running", ready=True)
    plan = world.step()
    assert plan.create == [] and "RunStarted" not in world.reasons(plan)
    assert world.status["run"] == 1 and world.status["phase"] == "Training"
    assert world.status["history"] == [{"number": 0, "result": "Superseded", "reason": "before the rename"}]
