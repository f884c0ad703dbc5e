"""The I/O edge of one reconcile: observe → `decision.decide` → act → write status.

Synchronous on purpose (kubernetes client, MLflow client): the kopf daemon runs it in a
worker thread, so a slow API server or registry delays this one object and never blocks
kopf's event loop or another object's reconcile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from healthrisk.contracts import LABEL_RUN, ROLE_DRIFT, ROLE_INVENTORY
from healthrisk.federated.pki import control_client_certificate, server_certificate, site_key_pair
from healthrisk_operator import admission, builders, tracking
from healthrisk_operator.builders import Manifest, Training
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.constants import GROUP, PLURAL, REGISTRAR_CONTAINER, VERSION
from healthrisk_operator.decision import Plan, decide
from healthrisk_operator.decision.plan import RunSecretRequest, SiteKeyRequest
from healthrisk_operator.metrics import OperatorMetrics
from healthrisk_operator.spec import SpecError, TrainingSpec, parse_spec
from healthrisk_operator.status import TrainingStatus
from healthrisk_operator.views import (
    DeploymentView,
    FederationView,
    Observed,
    PodView,
    RunProgress,
    ServiceView,
    VersionView,
    deployment_view,
    last_json_line,
    parse_time,
    pod_view,
)

log = logging.getLogger(__name__)

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
# Refusals that retrying cannot fix: the run fails with the API server's message.
PERMANENT_STATUSES = frozenset({400, 403, 422})
MAX_PASSES = 4  # promote → rollout → check: each pass sees what the previous one did


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 patch turning `old` into `new` (None deletes; lists are replaced whole)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before or key not in old:
            patch[key] = value
    return patch


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool | None:
    """True: ours; False: another owner's; None: no controller (ours to adopt)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return bool(ref.get("uid") == uid)
    return None


class Reconciler:
    def __init__(
        self, api_client: k8s.ApiClient, config: OperatorConfig, metrics: OperatorMetrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or OperatorMetrics()
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.to_dict: Callable[[Any], Any] = api_client.sanitize_for_serialization
        tracking.limit_client_retries(config.registry_timeout_s)

    # ---- one reconcile ------------------------------------------------------------

    def reconcile(self, namespace: str, name: str, now: dt.datetime | None = None) -> Plan | None:
        """One level-triggered pass. None: the object is gone or being deleted — for good,
        as a deletion is never undone — so there is nothing left to do for it."""
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return None  # owner references take the children with it
        written: dict[str, Any] = dict(body.get("status") or {})
        status = TrainingStatus.from_api(written)
        errors: tuple[str, ...] = ()
        plan: Plan | None = None
        for _ in range(MAX_PASSES):
            observed = self.observe(body, status, now or dt.datetime.now(dt.UTC), errors)
            plan = decide(observed, self.config)
            errors = self.execute(plan, observed)
            self.metrics.record(observed.training, status, plan)
            new = plan.status.to_api()
            self.write_status(namespace, name, written, new)
            written, status = new, plan.status
            if not (plan.changes_registry_or_deployment or errors):
                break
        return plan

    # ---- observe ------------------------------------------------------------------

    def observe(
        self,
        body: Mapping[str, Any],
        status: TrainingStatus,
        now: dt.datetime,
        errors: tuple[str, ...] = (),
    ) -> Observed:
        meta = body["metadata"]
        training = Training(meta["namespace"], meta["name"], meta["uid"])
        observed = Observed(
            training=training,
            generation=int(meta.get("generation") or 1),
            created_at=parse_time(meta.get("creationTimestamp")) or now,
            now=now,
            spec=body.get("spec") or {},
            status=status,
            annotations=dict(meta.get("annotations") or {}),
            pods=self._pods(training, status),
            services=self._services(training),
            action_errors=errors,
        )
        try:
            spec = parse_spec(observed.spec)
            admission.check(spec, self.config)  # nothing the policy refuses is contacted
        except SpecError:
            return observed
        if not status.active or status.run is None:
            return observed
        return self._observe_run(observed, spec, status.run)

    def _owned(self, training: Training, items: list[Any], kind: str) -> list[dict[str, Any]]:
        mine = []
        for item in items:
            obj = self.to_dict(item)
            owner = _owned_by(obj, training.uid)
            if owner is False:
                continue  # a namesake's leftovers, waiting for the garbage collector
            if owner is None:
                self._adopt(kind, obj["metadata"]["name"], training)
            mine.append(obj)
        return mine

    def _adopt(self, kind: str, name: str, training: Training) -> None:
        patch = {"metadata": {"ownerReferences": builders.owner_references(training)}}
        log.info("adopting %s %s/%s", kind, training.namespace, name)
        if kind == "Pod":
            self.core.patch_namespaced_pod(name, training.namespace, patch, _content_type=MERGE)
        else:
            self.core.patch_namespaced_service(name, training.namespace, patch, _content_type=MERGE)

    def _pods(self, training: Training, status: TrainingStatus) -> tuple[PodView, ...]:
        selector = builders.children_selector(training)
        items = self.core.list_namespaced_pod(training.namespace, label_selector=selector).items
        drift, inventory = status.drift, status.inventory
        views = []
        for pod in self._owned(training, items, "Pod"):
            view = pod_view(pod)
            awaited = (
                view.role == ROLE_DRIFT
                and drift is not None
                and drift.running
                and view.drift_check == drift.check
            ) or (
                view.role == ROLE_INVENTORY
                and inventory is not None
                and inventory.running
                and view.inventory_round == inventory.round
            )
            if awaited and view.phase == "Succeeded":
                summary = self._printed_summary(training, view.name) or last_json_line(
                    view.termination_message or ""
                )
                view = dataclasses.replace(view, summary=summary)
            views.append(view)
        return tuple(views)

    def _printed_summary(self, training: Training, pod: str) -> dict[str, Any] | None:
        # Pod logs rather than MLflow: the pod's own verdict (or list of days), readable even
        # when the registry is down, and gone with the pod once it has been evaluated. When
        # the log is gone (node rotated it) the caller falls back to the termination message.
        try:
            text = self.core.read_namespaced_pod_log(pod, training.namespace, tail_lines=50)
        except ApiException as exc:
            log.warning("cannot read the log of drift pod %s: %s", pod, exc.reason)
            return None
        return last_json_line(str(text))

    def _services(self, training: Training) -> tuple[ServiceView, ...]:
        selector = builders.children_selector(training)
        items = self.core.list_namespaced_service(training.namespace, label_selector=selector).items
        views = []
        for svc in self._owned(training, items, "Service"):
            meta = svc["metadata"]
            run = (meta.get("labels") or {}).get(LABEL_RUN)
            views.append(
                ServiceView(
                    meta["name"],
                    int(run) if run and run.isdigit() else None,
                    bool(meta.get("deletionTimestamp")),
                )
            )
        return tuple(views)

    def _federation(self, observed: Observed, run: int) -> FederationView:
        """The sites' standing, from the last report in the SuperLink pod's registrar log
        (the operator neither reads key Secrets nor talks to the SuperLink itself)."""
        name = builders.superlink_name(observed.training.name, run)
        if not any(p.name == name and p.phase == "Running" for p in observed.pods):
            return FederationView()
        try:
            text = self.core.read_namespaced_pod_log(
                name, observed.training.namespace, container=REGISTRAR_CONTAINER, tail_lines=20
            )
        except ApiException as exc:  # e.g. the container is starting: no report yet
            return FederationView(error=f"registrar log: {exc.reason}")
        return FederationView.from_report(last_json_line(str(text)))

    def _observe_run(self, observed: Observed, spec: TrainingSpec, run: int) -> Observed:
        if not spec.security.insecure and observed.status.training_finished_at is None:
            observed = dataclasses.replace(observed, federation=self._federation(observed, run))
        uri = spec.model.tracking_uri or self.config.tracking_uri
        ref = observed.training.ref
        progress: RunProgress | None = None
        version: VersionView | None = None
        try:
            if observed.status.training_finished_at is None:
                progress = tracking.run_progress(uri, ref, run)
            else:
                version = tracking.find_version(uri, spec.model.registered_name, ref, run)
        except Exception as exc:  # any MLflow/HTTP failure: the state machine waits, visibly
            return dataclasses.replace(observed, registry_error=_stable_message(exc))
        deployment: DeploymentView | None = None
        if version is not None and spec.promotion.inference_deployment:
            deployment = self._deployment(observed.training.namespace, spec)
        return dataclasses.replace(observed, progress=progress, version=version, deployment=deployment)

    def _deployment(self, namespace: str, spec: TrainingSpec) -> DeploymentView:
        name = str(spec.promotion.inference_deployment)
        try:
            deployment = self.to_dict(self.apps.read_namespaced_deployment(name, namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise
            deployment = None
        return deployment_view(name, deployment, spec.promotion.inference_container)

    # ---- act ----------------------------------------------------------------------

    def execute(self, plan: Plan, observed: Observed) -> tuple[str, ...]:
        """Perform the plan; return the refusals that retrying cannot fix."""
        namespace = observed.training.namespace
        permanent: list[str] = []
        for request in plan.generate:
            error = self._create(namespace, self._material(observed.training, request))
            if error:
                permanent.append(error)
        for manifest in plan.create:
            error = self._create(namespace, manifest)
            if error:
                permanent.append(error)
        for kind, name in plan.delete:
            self._delete(namespace, kind, name)
        uri = self._tracking_uri(observed)
        if plan.promote is not None:
            p = plan.promote
            try:
                decision = tracking.promote(
                    uri,
                    p.registered_name,
                    p.version,
                    p.alias,
                    p.max_auc_drop,
                    self.config.model_signing_key_file,
                )
                log.info("promotion of %s v%s: %s", p.registered_name, p.version, decision.reason)
            except ValueError as exc:  # e.g. no numeric val_auc tag: retrying will not add one
                permanent.append(f"promotion of {p.registered_name} version {p.version} refused: {exc}")
        if plan.rollout is not None:
            error = self._patch_deployment(namespace, plan.rollout.deployment, plan.rollout.patch)
            if error:
                permanent.append(error)
        if plan.rollback is not None:
            r = plan.rollback
            # Deployment first: if we crash in between, the next reconcile sees the patch
            # gone and repeats the whole rollback (both halves are idempotent).
            error = self._patch_deployment(namespace, r.deployment, r.patch)
            if error:
                log.error("rollback: %s", error)
            tracking.rollback(uri, r.registered_name, r.alias, r.version, r.to_version, r.reason)
        if plan.remove_annotations:
            patch = {"metadata": {"annotations": dict.fromkeys(plan.remove_annotations)}}
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, observed.training.name, patch
            )
        self._post_events(plan, observed)
        return tuple(permanent)

    @staticmethod
    def _material(training: Training, request: RunSecretRequest | SiteKeyRequest) -> Manifest:
        if isinstance(request, SiteKeyRequest):
            return builders.site_key_secret(training, request.site, site_key_pair())
        server = None if request.server_names is None else server_certificate(request.server_names)
        return builders.run_secret(training, request.run, control_client_certificate(), server)

    def _tracking_uri(self, observed: Observed) -> str:
        try:
            spec = parse_spec(observed.spec)
            admission.check(spec, self.config)
            return spec.model.tracking_uri or self.config.tracking_uri
        except SpecError:
            return self.config.tracking_uri

    def _patch_deployment(self, namespace: str, name: str, patch: Manifest) -> str | None:
        try:
            self.apps.patch_namespaced_deployment(name, namespace, patch, _content_type=STRATEGIC_MERGE)
        except ApiException as exc:
            if exc.status in PERMANENT_STATUSES:
                return f"Deployment {name} refused the patch: {_api_message(exc)}"
            raise
        return None

    def _create(self, namespace: str, manifest: Manifest) -> str | None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        try:
            if kind == "Pod":
                self.core.create_namespaced_pod(namespace, k8s.V1Pod.model_validate(manifest))
            elif kind == "Secret":
                self.core.create_namespaced_secret(namespace, k8s.V1Secret.model_validate(manifest))
            elif kind == "Service":
                self.core.create_namespaced_service(namespace, k8s.V1Service.model_validate(manifest))
            else:
                raise ValueError(f"no create for kind {kind}")
        except ApiException as exc:
            if exc.status == 409:
                return None  # deterministic name: it exists (or is still terminating)
            if exc.status in PERMANENT_STATUSES:
                return f"{kind} {name} refused: {_api_message(exc)}"
            raise
        log.info("created %s %s/%s", kind, namespace, name)
        return None

    def _delete(self, namespace: str, kind: str, name: str) -> None:
        try:
            if kind == "Pod":
                self.core.delete_namespaced_pod(name, namespace)
            elif kind == "Secret":
                self.core.delete_namespaced_secret(name, namespace)
            else:
                self.core.delete_namespaced_service(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        log.info("deleted %s %s/%s", kind, namespace, name)

    def _post_events(self, plan: Plan, observed: Observed) -> None:
        for index, spec in enumerate(plan.events):
            suffix = f"{uuid.uuid4().hex[:10]}{index}"
            body = builders.event(
                observed.training,
                event_type=spec.type,
                reason=spec.reason,
                message=spec.message,
                now=observed.now,
                suffix=suffix,
            )
            try:
                self.core.create_namespaced_event(
                    observed.training.namespace, k8s.CoreV1Event.model_validate(body)
                )
            except ApiException as exc:  # an Event is worth a log line, not a failed reconcile
                log.warning("could not post event %s: %s", spec.reason, exc.reason)
            log.info("%s %s: %s", spec.type, spec.reason, spec.message)

    def report_failure(self, namespace: str, name: str, error: Exception) -> bool:
        """A Warning Event and status.message on the object; best effort, as the cause
        (RBAC, API server) may forbid these too. True once the object carries it."""
        reason = (
            f"{error.status} {error.reason}: {_api_message(error)}"
            if isinstance(error, ApiException)
            else _stable_message(error)
        )
        message = f"the operator cannot reconcile this object: {reason}"[:1000]
        try:
            body = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            meta = body["metadata"]  # type: ignore[index]
            training = Training(namespace, name, meta["uid"])
            event = builders.event(
                training,
                event_type="Warning",
                reason="ReconcileFailing",
                message=message,
                now=dt.datetime.now(dt.UTC),
                suffix=uuid.uuid4().hex[:10],
            )
            self.core.create_namespaced_event(namespace, k8s.CoreV1Event.model_validate(event))
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": {"message": message}}
            )
        except Exception as exc:  # never let the report take the reconcile loop down
            log.warning("could not report the failure on %s/%s: %s", namespace, name, exc)
            return False
        return True

    def write_status(self, namespace: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        patch = merge_patch(old, new)
        if patch:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": patch}
            )


def _stable_message(exc: Exception) -> str:
    """The error without object addresses, so an unchanged outage writes no new status."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(exc).__name__}: {exc}")[:300]


def _api_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)
