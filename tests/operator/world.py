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
from healthrisk_operator import builders
from healthrisk_operator.builders import Training
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.decision import Plan, decide
from healthrisk_operator.decision.plan import RunSecretRequest, SiteKeyRequest
from healthrisk_operator.spec import SpecError, parse_spec
from healthrisk_operator.status import TrainingStatus
from healthrisk_operator.views import (
    DeploymentView,
    FederationView,
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
    """Also plays the SuperLink pod's registrar (`federation`)."""

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
        self.secrets: set[str] = set()  # names: the operator makes them, never reads them
        self.key_errors: dict[str, str] = {}  # site → what the registrar says of its key
        self.refuse_registration: set[str] = set()  # sites the SuperLink does not hold
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

    def start_pods(self) -> None:
        """A started run's SuperLink ready (its registrar registered the keys), then the
        SuperNodes it lets start: the step after this submits."""
        self.make_ready()
        self.step()
        self.make_ready()
        self.step()

    def bring_up(self, run: int = 1) -> None:
        """A run's pods from nothing to ready: the SuperLink (its registrar registers the
        sites' keys), then the SuperNodes."""
        self.step()
        self.make_ready(builders.superlink_name(TRAINING.name, run))
        self.step()
        self.make_ready()

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
            federation=self.federation(),
            progress=self.progress,
            version=self.version,
            registry_error=self.registry_error,
            deployment=self.deployment,
            action_errors=self.action_errors,
        )

    def federation(self) -> FederationView | None:
        """What the SuperLink pod's registrar reports for an active, secure run: every
        site's key registered once the pod runs (but those it cannot read or register),
        a SuperNode `online` once its pod is ready (as Flower reports it once it activated)."""
        try:
            spec = parse_spec(self.spec)
        except SpecError:
            return None
        status = TrainingStatus.from_api(self.status)
        if spec.security.insecure or not status.active or status.run is None or status.training_finished_at:
            return None
        superlink = self.pods.get(builders.superlink_name(TRAINING.name, status.run))
        if superlink is None or superlink.phase != "Running":
            return FederationView()
        sites: dict[str, dict[str, Any]] = {}
        for site in spec.sites:
            if site.name in self.key_errors:
                sites[site.name] = {"keyRegistered": False, "keyError": self.key_errors[site.name]}
            elif site.name in self.refuse_registration:
                sites[site.name] = {"keyRegistered": False}
            else:
                pod = self.pods.get(builders.supernode_name(TRAINING.name, status.run, site))
                online = pod is not None and pod.ready and not pod.deleting
                sites[site.name] = {"keyRegistered": True, "node": "online" if online else "registered"}
        return FederationView(sites=sites)

    def step(self) -> Plan:
        return self._apply(decide(self.observed(), self.config))

    def _apply(self, plan: Plan) -> Plan:
        for request in plan.generate:
            if isinstance(request, RunSecretRequest):
                self.secrets.add(builders.run_secret_name(TRAINING.name, request.run))
            elif isinstance(request, SiteKeyRequest):
                self.secrets.add(builders.site_key_secret_name(TRAINING.name, request.site))
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
            if kind == "Secret":
                self.secrets.discard(name)
            else:
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
