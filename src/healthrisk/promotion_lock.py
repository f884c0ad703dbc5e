"""One promotion at a time per registered model, with the lock held in MLflow itself.

Why in MLflow: promotions come from the operator (one thread per FederatedTraining, maybe
several operators) and from `healthrisk train --promote` / `healthrisk promote` on any
machine that reaches the registry. The registry is the one thing they all share, so one
mechanism serves the embedded and the cluster modes alike.

MLflow has no compare-and-set, but two of its writes are atomic: creating a registered
model and renaming one (the name is the primary key of its table, in sqlite and
PostgreSQL alike), so of two clients creating or renaming to the same name exactly one
succeeds. The lock for model NAME is the registered model `NAME.promotion-lock`: it exists
while one promotion of NAME is being decided (a few registry calls), tagged with its
holder and the time its lease ends.

A holder that died leaves its lock behind; once the lease has ended, a contender breaks
it by renaming it to `NAME.promotion-lock.expired-<holder>`. The holder id is unique per
acquisition, so that name belongs to this one dead lock: of two breakers only one rename
succeeds, and while the renamed lock exists (it is kept for `KEEP_BROKEN_S`) no lock taken
since can ever be renamed onto it by a breaker that looked too early.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from healthrisk.contracts import TAG_PREFIX

if TYPE_CHECKING:
    from mlflow import MlflowClient

LOCK_SUFFIX = ".promotion-lock"
TAG_HOLDER = TAG_PREFIX + "lock_holder"
TAG_LEASE_ENDS = TAG_PREFIX + "lock_lease_ends"
# A promotion is a handful of registry calls; a lease this long is only ever reached by a
# holder that died. Contenders compare it with their own clock, so it also absorbs skew.
LEASE_S = 120.0
KEEP_BROKEN_S = 24 * 3600.0
WAIT_S = 30.0
LOCK_DESCRIPTION = "exists while a promotion is decided (healthrisk.promotion_lock); never holds versions"


class PromotionBusy(RuntimeError):
    """Another promotion of the same model held the lock for longer than we waited."""


class LockLost(RuntimeError):
    """Our lease ended and another client broke the lock: we must not move the alias."""


def lock_name(name: str) -> str:
    return name + LOCK_SUFFIX


@dataclass(frozen=True)
class PromotionLock:
    client: MlflowClient
    name: str  # the lock's registered-model name
    holder: str

    def check(self) -> None:
        """Raise LockLost unless the lock is still ours; call it right before a write that
        must happen under the lock (the lease is long enough that the gap is harmless)."""
        if _holder(self.client, self.name) != self.holder:
            raise LockLost(f"lost the promotion lock {self.name} (lease of {LEASE_S:.0f}s ended)")


@contextlib.contextmanager
def promotion_lock(client: MlflowClient, model: str, *, wait_s: float = WAIT_S) -> Iterator[PromotionLock]:
    """Hold the promotion lock of registered model `model` for the duration of the block."""
    lock = _acquire(client, lock_name(model), wait_s)
    try:
        yield lock
    finally:
        _release(lock)


def _acquire(client: MlflowClient, name: str, wait_s: float) -> PromotionLock:
    from mlflow.exceptions import MlflowException

    holder = f"{socket.gethostname()}/{uuid.uuid4().hex}"
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        tags = {TAG_HOLDER: holder, TAG_LEASE_ENDS: f"{time.time() + LEASE_S:.3f}"}
        try:
            client.create_registered_model(name, tags=tags, description=LOCK_DESCRIPTION)
            return PromotionLock(client, name, holder)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        _break_if_expired(client, name)
        if time.monotonic() >= deadline:
            owner = _holder(client, name)
            raise PromotionBusy(f"{name} is held by {owner} for more than {wait_s:.0f}s; retry later")
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 1.0)


def _lock_tags(client: MlflowClient, name: str) -> dict[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).tags or {})
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _holder(client: MlflowClient, name: str) -> str | None:
    tags = _lock_tags(client, name)
    return tags.get(TAG_HOLDER) if tags is not None else None


def _break_if_expired(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    tags = _lock_tags(client, name)
    if tags is None:
        return
    try:
        lease_ends = float(tags.get(TAG_LEASE_ENDS, "0"))
    except ValueError:
        lease_ends = 0.0  # unreadable: treat like a dead holder's
    if time.time() < lease_ends:
        return
    holder = tags.get(TAG_HOLDER, "unknown").replace("/", "-")
    try:
        client.rename_registered_model(name, f"{name}.expired-{holder}")
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS"):
            raise
        return  # another contender broke it first
    _forget_old_broken_locks(client, name)


def _forget_old_broken_locks(client: MlflowClient, name: str) -> None:
    cutoff_ms = (time.time() - KEEP_BROKEN_S) * 1000
    prefix = f"{name}.expired-"
    for model in client.search_registered_models(f"name LIKE '{prefix}%'"):
        if model.name.startswith(prefix) and (model.last_updated_timestamp or 0) < cutoff_ms:
            client.delete_registered_model(model.name)


def _release(lock: PromotionLock) -> None:
    from mlflow.exceptions import MlflowException

    if _holder(lock.client, lock.name) != lock.holder:
        return  # broken after our lease ended: it is someone else's now, or gone
    try:
        lock.client.delete_registered_model(lock.name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
