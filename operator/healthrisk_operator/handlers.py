"""kopf wiring. Handlers only orchestrate: one daemon per FederatedTraining runs the
reconcile loop; watch events of the object, its pods and the inference Deployment only
wake that daemon early. Nothing here sleeps, polls or talks to MLflow itself. The wake
handlers are async so they set the daemon's asyncio.Event on the loop's own thread.

The daemon is the level-triggered loop of a Kubernetes controller: it reconciles at
least every `reconcile_interval_s` (deadlines, schedules and MLflow progress have no
watch events) and at once when something it owns changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf

from healthrisk.contracts import (
    ANNOTATION_PREVIOUS_MODEL_VERSION,
    FINALIZER,
    LABEL_MANAGED_BY,
    LABEL_TRAINING,
    MANAGER,
)
from healthrisk_operator.config import OperatorConfig, get_config
from healthrisk_operator.constants import GROUP, PLURAL, VERSION
from healthrisk_operator.reconcile import Reconciler

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
REPORT_AFTER_FAILURES = 3
WAKE_HANDLERS = ("training_changed", "pod_changed", "deployment_changed")


class QuietWakeups(logging.Filter):
    """Drop kopf's 'Handler ... succeeded' line for the wake handlers: they fire on every
    pod event and would drown the log; their failures still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("succeeded.") and any(f"'{h}'" in message for h in WAKE_HANDLERS))


@dataclass
class Wakers:
    """One asyncio.Event per live daemon, keyed by (namespace, name)."""

    events: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    # What of each training last woke its daemon: its own status writes must not wake it
    # again (that would reconcile in a loop), a user's edit must.
    seen: dict[tuple[str, str], Hashable] = field(default_factory=dict)

    def wake(self, namespace: str | None, name: str | None) -> None:
        event = self.events.get((namespace or "", name or ""))
        if event is not None:
            event.set()

    def wake_on_change(self, namespace: str | None, name: str | None, state: Hashable) -> None:
        key = (namespace or "", name or "")
        if self.seen.get(key) != state:
            self.seen[key] = state
            self.wake(namespace, name)

    def wake_namespace(self, namespace: str | None) -> None:
        for (ns, _), event in self.events.items():
            if ns == namespace:
                event.set()


def _api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def apply_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    # kopf's silent-watch problem: without these a watch the server or a proxy drops
    # without closing never delivers another event and the operator goes quiet.
    settings.watching.server_timeout = config.watch_server_timeout_s
    settings.watching.client_timeout = config.watch_client_timeout_s
    settings.watching.connect_timeout = config.watch_connect_timeout_s
    # Our own Events are written by the reconciler; kopf's are for handler crashes only.
    settings.posting.level = logging.WARNING
    # Strict mode: serve the namespaces given and the resources discovered at startup.
    # Dynamic scanning would need cluster-wide list/watch of namespaces and CRDs (more
    # than least privilege) and, without them, retries for a minute before serving; a
    # CRD upgrade is picked up when the operator restarts (the chart upgrade rolls it).
    settings.scanning.disabled = True
    # The daemon's finalizer lets kopf stop it cleanly when a training is deleted.
    settings.persistence.finalizer = FINALIZER


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    config: OperatorConfig = get_config()
    apply_settings(settings, config)
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.max_parallel_reconciles, thread_name_prefix="reconcile")
    )
    memo.config = config
    memo.reconciler = Reconciler(_api_client(), config)
    memo.wakers = Wakers()


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=30.0)
async def reconcile_loop(
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str | None,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    key = (namespace or "", name or "")
    wakeup = memo.wakers.events.setdefault(key, asyncio.Event())
    reconciler: Reconciler = memo.reconciler
    interval: float = memo.config.reconcile_interval_s
    failures = 0
    reported = False
    try:
        while not stopped:
            wakeup.clear()
            try:
                await asyncio.to_thread(reconciler.reconcile, *key)
                failures, reported = 0, False
            except Exception as exc:  # API server or registry trouble: retried, with backoff
                failures += 1
                logger.exception("reconcile of %s/%s failed (%d in a row)", namespace, name, failures)
                if failures >= REPORT_AFTER_FAILURES and not reported:
                    # Lasting, not a blip: tell the object's owner, not only the operator log.
                    reported = await asyncio.to_thread(reconciler.report_failure, *key, exc)
            # Errors back off exponentially (to MAX_BACKOFF_S) so a lasting one is not hammered.
            timeout = min(interval * 2**failures, MAX_BACKOFF_S) if failures else interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=timeout)
    finally:
        memo.wakers.events.pop(key, None)
        memo.wakers.seen.pop(key, None)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def training_changed(
    namespace: str | None, name: str | None, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    # generation moves with spec edits; annotations carry the retrain request.
    state = (meta.get("generation"), tuple(sorted((meta.get("annotations") or {}).items())))
    memo.wakers.wake_on_change(namespace, name, state)


@kopf.on.event("pods", labels={LABEL_TRAINING: kopf.PRESENT, LABEL_MANAGED_BY: MANAGER})
async def pod_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    memo.wakers.wake(namespace, labels.get(LABEL_TRAINING))


@kopf.on.event("apps", "v1", "deployments", annotations={ANNOTATION_PREVIOUS_MODEL_VERSION: kopf.PRESENT})
async def deployment_changed(namespace: str | None, memo: Any, **_: Any) -> None:
    # Only Deployments we are rolling carry this annotation: wake their trainings.
    memo.wakers.wake_namespace(namespace)
