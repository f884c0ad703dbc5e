"""An in-memory stand-in for the cluster and MLflow, for state-machine unit tests.

`World.step()` builds an `Observed` from what it holds, calls the pure `decide`, and
applies the plan the way the reconciler would (created pods appear Pending, deleted ones
vanish, the status is stored as the API server holds it: a dict). Tests then move pods along by hand.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from typing import Any

from healthrisk.contracts import (
    LABEL_RUN,
    MLFLOW_PORT,
)
from healthrisk_operator.builders import Training
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.decision import Plan, decide
from healthrisk_operator.status import TrainingStatus
from healthrisk_operator.views import (
    DeploymentView,
    Observed,
    PodView,
    RunProgress,
    ServiceView,
    VersionView,
    pod_view,
)

from .helpers import MINIMAL_SPEC

TRAINING = Training("ns", "ft", "uid-1")
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
CONFIG = OperatorConfig(
    tracking_uri=f"http://mlflow:{MLFLOW_PORT}", model_version_grace_s=300, drift_check_timeout_s=600
)


class World:
    def __init__(self, spec: dict[str, Any] | None = None, config: OperatorConfig = CONFIG) -> None:
        self.spec: dict[str, Any] = copy.deepcopy(spec if spec is not None else MINIMAL_SPEC)
        self.config = config
        self.generation = 1
        self.now = START
        self.status: dict[str, Any] = {}
        self.annotations: dict[str, str] = {}
        self.pods: dict[str, PodView] = {}
        self.services: dict[str, ServiceView] = {}
        self.progress: RunProgress | None = None
        self.version: VersionView | None = None
        self.registry_error: str | None = None
        self.deployment: DeploymentView | None = None
        self.action_errors: tuple[str, ...] = ()
        self.plans: list[Plan] = []

    # ---- time and edits -----------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def edit_spec(self, **changes: Any) -> None:
        self.spec.update(changes)
        self.generation += 1

    def pod(self, name: str) -> PodView:
        return self.pods[name]

    def set_pod(self, name: str, **fields: Any) -> None:
        self.pods[name] = dataclasses.replace(self.pods[name], **fields)

    def run_pods(self, role: str | None = None) -> list[PodView]:
        return [p for p in self.pods.values() if role is None or p.role == role]

    def make_ready(self, *names: str) -> None:
        for name in names or [p.name for p in self.run_pods() if p.role in ("superlink", "supernode")]:
            self.set_pod(name, phase="Running", ready=True)

    # ---- one reconcile ------------------------------------------------------------

    def observed(self) -> Observed:
        return Observed(
            training=TRAINING,
            generation=self.generation,
            created_at=START,
            now=self.now,
            spec=copy.deepcopy(self.spec),
            status=TrainingStatus.from_api(self.status),
            annotations=dict(self.annotations),
            pods=tuple(self.pods.values()),
            services=tuple(self.services.values()),
            progress=self.progress,
            version=self.version,
            registry_error=self.registry_error,
            deployment=self.deployment,
            action_errors=self.action_errors,
        )

    def step(self) -> Plan:
        plan = decide(self.observed(), self.config)
        for manifest in plan.create:
            name = manifest["metadata"]["name"]
            if manifest["kind"] == "Pod" and name not in self.pods:
                created = {
                    **manifest,
                    "metadata": {**manifest["metadata"], "creationTimestamp": self._stamp()},
                }
                self.pods[name] = pod_view(created)
            elif manifest["kind"] == "Service":
                run = manifest["metadata"]["labels"].get(LABEL_RUN)
                self.services[name] = ServiceView(name, int(run) if run else None)
        for kind, name in plan.delete:
            (self.pods if kind == "Pod" else self.services).pop(name, None)
        for key in plan.remove_annotations:
            self.annotations.pop(key, None)
        self.status = plan.status.to_api()
        self.plans.append(plan)
        return plan

    def _stamp(self) -> str:
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")

    # ---- reading the outcome ------------------------------------------------------

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == kind)

    def reasons(self, plan: Plan | None = None) -> list[str]:
        return [e.reason for e in (plan or self.plans[-1]).events]

    def all_reasons(self) -> list[str]:
        return [e.reason for p in self.plans for e in p.events]
