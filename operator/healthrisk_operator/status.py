"""The FederatedTraining status, typed: one model per object of the CRD's status schema.

The API server holds the status as a plain dict (camelCase keys, RFC 3339 stamps).
`TrainingStatus.from_api` and `TrainingStatus.to_api` are the only conversions between
the two; everything in between (the decision, the reconciler) reads and writes these
models. tests/operator/test_status.py checks that field names and types agree with the
status schema in charts/health-risk/files/.

Objects written by an older operator keep reconciling: keys these models do not know are
kept and written back as they were (an operator never deletes what it does not
understand), and history entries that still carry `run` instead of `number` (the name
before the CRD followed SPEC §7) are read as `number`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, model_validator
from pydantic.alias_generators import to_camel

from healthrisk_operator.constants import Phase


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _whole_seconds(value: dt.datetime) -> dt.datetime:
    # The status stores whole seconds: compute with what will be read back.
    return value.astimezone(dt.UTC).replace(microsecond=0)


Timestamp = Annotated[
    dt.datetime, AfterValidator(_whole_seconds), PlainSerializer(format_time, return_type=str)
]


class _StatusModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        validate_assignment=True,
        protected_namespaces=(),
    )


class Metrics(_StatusModel):
    auc: float | None = None
    loss: float | None = None
    accuracy: float | None = None
    champion_auc: float | None = None  # the serving champion on the same validation rows


class Pending(_StatusModel):
    """A trigger waiting to start a run (SPEC §7: one run at a time, a trigger remembered once)."""

    trigger: str
    since: Timestamp
    until: str | None = None  # the newest common day a drift check saw: no inventory needed


class Inventory(_StatusModel):
    """The sites' days, listed by one pod per site (file names only)."""

    round: int | None = None
    running: bool | None = None
    started_at: Timestamp | None = None
    taken_at: Timestamp | None = None
    newest_common_day: str | None = None
    error: str | None = None


class Skipped(_StatusModel):
    """The last trigger skipped because its data equals the last attempt's."""

    at: Timestamp
    trigger: str
    message: str


class Rollout(_StatusModel):
    deployment: str | None = None
    version: str | None = None
    started_at: Timestamp | None = None


class SiteDriftStatus(_StatusModel):
    score: float | None = None
    detected: bool | None = None
    current: str | None = None
    auc: float | None = None
    loss: float | None = None
    rows: int | None = None
    error: str | None = None


class DriftStatus(_StatusModel):
    check: int | None = None
    running: bool | None = None
    check_started_at: Timestamp | None = None
    checked_at: Timestamp | None = None
    next_check_at: Timestamp | None = None
    until: str | None = None
    score: float | None = None
    detected: bool | None = None
    auc: float | None = None
    site_aucs: str | None = None
    performance_decayed: bool | None = None
    sites: dict[str, SiteDriftStatus] | None = None


class SiteStatus(_StatusModel):
    """A site in the current or last run, from what the operator may see: its key at the
    SuperLink and why it declined — never its metrics (privacy.perSiteMetrics is MLflow's)."""

    key_registered: bool | None = None
    authenticated: bool | None = None
    node: str | None = None
    key_error: str | None = None
    declined: str | None = None


class PrivacyStatus(_StatusModel):
    epsilon: float | None = None
    delta: float | None = None
    secure_aggregation: bool | None = None


class HistoryEntry(_StatusModel):
    number: int
    result: str
    trigger: str | None = None
    reason: str | None = None
    version: str | None = None
    auc: float | None = None
    champion_auc: float | None = None
    promoted: bool | None = None
    windows: dict[str, str] | None = None
    fingerprint: str | None = None
    attempts: int | None = None
    epsilon: float | None = None
    start_time: Timestamp | None = None
    completion_time: Timestamp | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_run_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "number" not in data and "run" in data:
            data = {**data, "number": data["run"]}
            del data["run"]
        return data


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_StatusModel):
    """metav1.Condition."""

    type: str
    status: ConditionStatus
    last_transition_time: Timestamp
    reason: str
    message: str
    observed_generation: int | None = None


class TrainingStatus(_StatusModel):
    phase: Phase | None = None
    message: str | None = None
    run: int | None = None
    active: bool | None = None
    attempt: int | None = None
    failures: int | None = None
    training_finished_at: Timestamp | None = None
    attempt_start_time: Timestamp | None = None
    trigger: str | None = None
    round: int | None = None
    rounds: int | None = None
    progress: str | None = None
    sites_ready: str | None = None
    metrics: Metrics | None = None
    data_windows: dict[str, str] | None = None
    data_fingerprint: str | None = None
    pending: Pending | None = None
    inventory: Inventory | None = None
    skipped: Skipped | None = None
    model_version: str | None = None
    promoted: bool | None = None
    promotion_reason: str | None = None
    start_time: Timestamp | None = None
    completion_time: Timestamp | None = None
    last_schedule_time: Timestamp | None = None
    next_schedule_time: Timestamp | None = None
    spec_hash: str | None = None
    observed_generation: int | None = None
    sites: dict[str, SiteStatus] | None = None
    privacy: PrivacyStatus | None = None
    rollout: Rollout | None = None
    drift: DriftStatus | None = None
    history: list[HistoryEntry] | None = None
    conditions: list[Condition] | None = None

    @classmethod
    def from_api(cls, status: dict[str, Any] | None) -> TrainingStatus:
        return cls.model_validate(status or {})

    def to_api(self) -> dict[str, Any]:
        """The dict the API server holds: camelCase keys, absent rather than null."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
