"""What the state machine sees: small immutable views of pods, the Deployment and MLflow.

Made from API objects (plain dicts, as the API server returns them) by pure functions,
so the state machine is tested with hand-written pods and no cluster.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from healthrisk.contracts import (
    ANNOTATION_PREVIOUS_MODEL_VERSION,
    ENV_MODEL_VERSION,
    LABEL_ATTEMPT,
    LABEL_DRIFT_CHECK,
    LABEL_INVENTORY,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SITE,
)
from healthrisk_operator.builders import Training, deployment_version, inference_container_name
from healthrisk_operator.status import TrainingStatus


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class PodView:
    name: str
    role: str
    phase: str = "Pending"
    run: int | None = None
    site: str | None = None
    attempt: int | None = None
    drift_check: int | None = None
    inventory_round: int | None = None
    ready: bool = False
    deleting: bool = False
    created_at: dt.datetime | None = None
    # Why it is not running: a container waiting reason, or the scheduler's complaint.
    waiting_reason: str | None = None
    waiting_message: str | None = None
    exit_code: int | None = None
    terminated_reason: str | None = None
    termination_message: str | None = None
    # Drift and inventory pods: the JSON summary from the last line of the log (read at the edge).
    summary: Mapping[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def running(self) -> bool:
        return self.phase == "Running" and not self.deleting

    def describe_problem(self) -> str:
        """One readable line on why this pod is not (or no longer) doing its job."""
        if self.waiting_reason:
            detail = f": {self.waiting_message}" if self.waiting_message else ""
            return f"pod {self.name} {self.waiting_reason}{detail}"
        if self.phase == "Failed":
            message = (self.termination_message or "")[-300:]
            parts = [p for p in (self.terminated_reason, message) if p]
            code = f" (exit code {self.exit_code})" if self.exit_code is not None else ""
            return f"pod {self.name} failed{code}" + (": " + "; ".join(parts) if parts else "")
        return f"pod {self.name} {self.phase}" + (
            "" if self.ready or self.phase != "Running" else ", not ready"
        )


def pod_view(pod: Mapping[str, Any], summary: Mapping[str, Any] | None = None) -> PodView:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    waiting_reason = waiting_message = None
    exit_code = terminated_reason = termination_message = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason") not in (None, "ContainerCreating"):
            waiting_reason = state["waiting"].get("reason")
            waiting_message = state["waiting"].get("message")
        if "terminated" in state:
            exit_code = state["terminated"].get("exitCode")
            terminated_reason = state["terminated"].get("reason")
            termination_message = (state["terminated"].get("message") or "").strip() or None
    scheduled = conditions.get("PodScheduled")
    if waiting_reason is None and scheduled is not None and scheduled.get("status") == "False":
        waiting_reason = scheduled.get("reason") or "Unschedulable"
        waiting_message = scheduled.get("message")
    if status.get("phase") == "Failed" and terminated_reason is None:
        terminated_reason = status.get("reason")  # DeadlineExceeded, Evicted, ...
        termination_message = status.get("message")
    return PodView(
        name=meta.get("name", ""),
        role=labels.get(LABEL_ROLE, ""),
        phase=status.get("phase") or "Pending",
        run=_int(labels.get(LABEL_RUN)),
        site=labels.get(LABEL_SITE),
        attempt=_int(labels.get(LABEL_ATTEMPT)),
        drift_check=_int(labels.get(LABEL_DRIFT_CHECK)),
        inventory_round=_int(labels.get(LABEL_INVENTORY)),
        ready=(conditions.get("Ready") or {}).get("status") == "True",
        deleting=meta.get("deletionTimestamp") is not None,
        created_at=parse_time(meta.get("creationTimestamp")),
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        exit_code=exit_code,
        terminated_reason=terminated_reason,
        termination_message=termination_message,
        summary=summary,
    )


def last_json_line(log: str) -> dict[str, Any] | None:
    """The drift CLI prints its summaries as the last JSON line of stdout: a list with one
    entry per checked site, and a drift pod checks its own site only; `healthrisk data
    days` prints one object."""
    for line in reversed(log.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            return value if isinstance(value, dict) else None
    return None


@dataclass(frozen=True)
class ServiceView:
    name: str
    run: int | None
    deleting: bool = False


@dataclass(frozen=True)
class FederationView:
    """The sites' standing at the active run's SuperLink, as its registrar last reported
    it (healthrisk.federated.registrar): per site `keyRegistered`, `node` (Flower's node
    status) or `keyError`. `sites` is None until the registrar has reported."""

    sites: Mapping[str, Mapping[str, Any]] | None = None
    error: str | None = None

    @classmethod
    def from_report(cls, report: Mapping[str, Any] | None) -> FederationView:
        if report is None:
            return cls()
        sites = report.get("sites")
        return cls(sites=dict(sites) if isinstance(sites, dict) else None, error=report.get("error"))


@dataclass(frozen=True)
class DeploymentView:
    name: str
    found: bool = True
    version: str | None = None  # the template annotation: what it is rolled to
    served_version: str | None = None  # annotation, else MODEL_VERSION env: what to go back to
    previous: str | None = None  # recorded by our rollout patch
    container: str | None = None
    desired: int = 1  # spec.replicas
    ready: bool = False
    failure: str | None = None  # ProgressDeadlineExceeded and the like
    error: str | None = None  # we cannot roll it at all (e.g. the named container is missing)
    replicas_summary: str = ""


def deployment_view(name: str, deployment: Mapping[str, Any] | None, container: str | None) -> DeploymentView:
    if deployment is None:
        return DeploymentView(name=name, found=False)
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    try:
        container_name: str | None = inference_container_name(dict(deployment), container)
        error = None
    except ValueError as exc:
        container_name, error = None, f"Deployment {name}: {exc}"
    env_version = None
    for c in spec.get("template", {}).get("spec", {}).get("containers") or []:
        if c.get("name") == container_name:
            env_version = next(
                (e.get("value") for e in c.get("env") or [] if e.get("name") == ENV_MODEL_VERSION), None
            )
    version = deployment_version(dict(deployment))
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    # The test of `kubectl rollout status` (the controller saw this generation, every
    # replica runs the new template and is available, no old pods are left), except that
    # zero replicas is not a completed rollout: nothing answers with the new version. An
    # available pod pinned to a version has loaded it: the service is ready for traffic
    # with a fixed version only once that version is loaded (healthrisk_inference.manager).
    ready = (
        want >= 1
        and int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and updated >= want
        and available >= want
        and total <= updated
    )
    failure = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failure = f"Deployment {name}: {cond.get('message') or 'progress deadline exceeded'}"
    return DeploymentView(
        name=name,
        version=version,
        served_version=version or env_version,
        previous=(meta.get("annotations") or {}).get(ANNOTATION_PREVIOUS_MODEL_VERSION),
        container=container_name,
        desired=want,
        ready=ready,
        failure=failure,
        error=error,
        replicas_summary=f"{available}/{want} available, {updated} updated",
    )


@dataclass(frozen=True)
class RunProgress:
    """The training run's latest federated metrics in MLflow (step = round)."""

    round: int | None = None
    auc: float | None = None
    loss: float | None = None
    accuracy: float | None = None
    epsilon: float | None = None  # under differential privacy: spent so far
    declined: Mapping[str, str] = field(default_factory=dict)  # site → why it declined


@dataclass(frozen=True)
class VersionView:
    """The model version a run registered, found by its training/run-number tags."""

    version: str
    auc: float | None
    champion_auc: float | None = None  # the champion on the same validation rows
    promotion: str | None = None
    promotion_reason: str | None = None
    previous_champion: str | None = None


@dataclass(frozen=True)
class Observed:
    """Everything the state machine decides from, taken at one instant."""

    training: Training
    generation: int
    created_at: dt.datetime
    now: dt.datetime
    spec: Mapping[str, Any]
    status: TrainingStatus
    annotations: Mapping[str, str] = field(default_factory=dict)
    pods: tuple[PodView, ...] = ()
    services: tuple[ServiceView, ...] = ()
    federation: FederationView | None = None  # the active run's sites at its SuperLink, unless insecure
    progress: RunProgress | None = None
    version: VersionView | None = None
    registry_error: str | None = None
    deployment: DeploymentView | None = None
    # What the API server or the registry refused for good in this reconcile (a create
    # rejected with 400/403/422, a version that cannot be promoted): the run fails.
    action_errors: tuple[str, ...] = ()
