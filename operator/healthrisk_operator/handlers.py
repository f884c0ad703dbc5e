"""kopf wiring. Handlers only orchestrate: one reconcile loop per FederatedTraining runs
the reconciler; watch events of the object, its pods and the inference Deployment only
start that loop or wake it early. Nothing here sleeps, polls or talks to MLflow itself.
The handlers are async so they touch the loops on the event loop's own thread.

The loop is the level-triggered loop of a Kubernetes controller: it reconciles at least
every `reconcile_interval_s` (deadlines, schedules and MLflow progress have no watch
events) and at once when something it owns changes.

Why not kopf's `@kopf.daemon`: kopf puts a finalizer on every object a daemon serves, so
that the daemon is stopped before the object goes (kopf's maintainer declined daemons
without one, nolar/kopf#896). Nothing of ours needs that: the run's pods and Services
carry owner references and go with the object, and a loop cannot outlive its object,
because each pass reads the object first and the loop ends when it is gone. A finalizer
only made deleting a training wait for a running operator — `helm uninstall` or deleting
the namespace then hung forever once the operator itself was gone. Objects that still
carry the finalizer of an older operator lose it on the first event this one sees
(`apply_settings`).
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
from healthrisk_operator import admission
from healthrisk_operator.config import OperatorConfig, get_config
from healthrisk_operator.constants import GROUP, PLURAL, VERSION
from healthrisk_operator.metrics import OperatorMetrics
from healthrisk_operator.reconcile import Reconciler

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
REPORT_AFTER_FAILURES = 3
STOP_TIMEOUT_S = 30.0
WAKE_HANDLERS = ("training_changed", "pod_changed", "deployment_changed")


class QuietWakeups(logging.Filter):
    """Drop kopf's 'Handler ... succeeded' line for the wake handlers: they fire on every
    pod event and would drown the log; their failures still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("succeeded.") and any(f"'{h}'" in message for h in WAKE_HANDLERS))


@dataclass
class Loop:
    """The reconcile loop of one incarnation (uid) of a training."""

    uid: str
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # What of the training last woke the loop: its own status writes must not wake it
    # again (that would reconcile in a loop), a user's edit must.
    seen: Hashable = None

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass
class Loops:
    """The live loops, keyed by (namespace, name)."""

    running: dict[tuple[str, str], Loop] = field(default_factory=dict)

    def ensure(self, namespace: str, name: str, uid: str, memo: Any) -> None:
        """A loop for this incarnation: started if none runs (the operator started, or the
        object is new), replaced if the one running serves an object deleted since."""
        key = (namespace, name)
        current = self.running.get(key)
        if current is not None and current.uid == uid and current.alive:
            return
        if current is not None and current.task is not None:
            current.task.cancel()
        loop = self.running[key] = Loop(uid)
        loop.task = asyncio.create_task(reconcile_loop(key, loop, memo), name=f"reconcile {namespace}/{name}")
        # A callback, not a `finally` in the loop: a task cancelled before it ever ran
        # never enters its body.
        loop.task.add_done_callback(lambda _: self.forget(key, loop))

    def stop(self, namespace: str, name: str, uid: str) -> None:
        loop = self.running.get((namespace, name))
        if loop is not None and loop.uid == uid and loop.task is not None:
            loop.task.cancel()

    def forget(self, key: tuple[str, str], loop: Loop) -> None:
        if self.running.get(key) is loop:
            del self.running[key]

    async def stop_all(self) -> None:
        tasks = [loop.task for loop in self.running.values() if loop.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)

    def wake(self, namespace: str | None, name: str | None) -> None:
        loop = self.running.get((namespace or "", name or ""))
        if loop is not None:
            loop.wakeup.set()

    def wake_on_change(self, namespace: str | None, name: str | None, state: Hashable) -> None:
        loop = self.running.get((namespace or "", name or ""))
        if loop is not None and loop.seen != state:
            loop.seen = state
            loop.wakeup.set()

    def wake_namespace(self, namespace: str | None) -> None:
        for (ns, _), loop in self.running.items():
            if ns == namespace:
                loop.wakeup.set()


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
    # No handler of ours needs a finalizer, so kopf removes this one — the one operators
    # before 0.2 put on every object — wherever it sees it: upgraded objects are released.
    settings.persistence.finalizer = FINALIZER


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    config: OperatorConfig = get_config()
    admission.warn_if_unrestricted(config)
    apply_settings(settings, config)
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.max_parallel_reconciles, thread_name_prefix="reconcile")
    )
    memo.config = config
    metrics = OperatorMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    memo.reconciler = Reconciler(_api_client(), config, metrics)
    memo.loops = Loops()


@kopf.on.cleanup()
async def stop_loops(memo: Any, **_: Any) -> None:
    await memo.loops.stop_all()


async def reconcile_loop(key: tuple[str, str], loop: Loop, memo: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    interval: float = memo.config.reconcile_interval_s
    failures = 0
    reported = False
    while True:
        loop.wakeup.clear()
        try:
            if await asyncio.to_thread(reconciler.reconcile, *key) is None:
                log.info("%s/%s is gone or being deleted: its reconcile loop ends", *key)
                return
            failures, reported = 0, False
        except Exception as exc:  # API server or registry trouble: retried, with backoff
            failures += 1
            log.exception("reconcile of %s/%s failed (%d in a row)", *key, failures)
            if failures >= REPORT_AFTER_FAILURES and not reported:
                # Lasting, not a blip: tell the object's owner, not only the operator log.
                reported = await asyncio.to_thread(reconciler.report_failure, *key, exc)
        # Errors back off exponentially (to MAX_BACKOFF_S) so a lasting one is not hammered.
        timeout = min(interval * 2**failures, MAX_BACKOFF_S) if failures else interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.wakeup.wait(), timeout=timeout)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def training_changed(
    event: kopf.RawEvent, namespace: str | None, name: str | None, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    namespace, name, uid = namespace or "", name or "", str(meta.get("uid"))
    if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        memo.loops.stop(namespace, name, uid)
        return
    memo.loops.ensure(namespace, name, uid, memo)
    # generation moves with spec edits; annotations carry the retrain request.
    state = (meta.get("generation"), tuple(sorted((meta.get("annotations") or {}).items())))
    memo.loops.wake_on_change(namespace, name, state)


@kopf.on.event("pods", labels={LABEL_TRAINING: kopf.PRESENT, LABEL_MANAGED_BY: MANAGER})
async def pod_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    memo.loops.wake(namespace, labels.get(LABEL_TRAINING))


@kopf.on.event("apps", "v1", "deployments", annotations={ANNOTATION_PREVIOUS_MODEL_VERSION: kopf.PRESENT})
async def deployment_changed(namespace: str | None, memo: Any, **_: Any) -> None:
    # Only Deployments we are rolling carry this annotation: wake their trainings.
    memo.loops.wake_namespace(namespace)
