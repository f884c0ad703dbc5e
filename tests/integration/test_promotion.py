"""Promotion is serialised per registered model (SPEC §4), on a real MLflow server.

Two runs finishing together, both compared with the same champion: without serialisation
both read that champion, both pass the gate against it, and whichever moves the alias last
wins — possibly the worse. The test forces exactly that interleaving: both promotions meet
at a barrier right after reading the champion, and the worse one moves the alias only after
the better one did. Serialised, the second promotion cannot read the champion before the
first has moved the alias, so the barrier times out and the second finds the first serving:
a version its run never compared with, which it cannot pass.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from healthrisk import registry
from healthrisk.contracts import (
    CHAMPION_ALIAS,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    TAG_CHAMPION_VAL_AUC,
    TAG_CHAMPION_VERSION,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTION,
    TAG_VAL_AUC,
)
from healthrisk.model_parameters import PARAMETERS_ARTIFACT
from healthrisk.promotion_lock import (
    TAG_HOLDER,
    TAG_LEASE_ENDS,
    PromotionBusy,
    lock_name,
    promotion_lock,
)
from healthrisk.provenance import ensure_signing_key, signing_key_file

pytestmark = pytest.mark.integration

# How long each side waits for the other at a meeting point. Serialised, the other side
# never arrives (it waits for the lock) and this is what the first promotion loses.
MEET_TIMEOUT_S = 3.0


@pytest.fixture
def model(register_version: Callable[..., str], data_root: Path) -> Callable[[str, list[float]], list[str]]:
    """`model(name, aucs)`: one version per AUC, registered as a training does (with the
    parameters document the gate signs)."""
    return lambda name, aucs: [register_version(name, data_root=data_root, val_auc=auc) for auc in aucs]


@pytest.fixture
def challengers(
    register_version: Callable[..., str], data_root: Path
) -> Callable[[str, str, float, list[float]], list[str]]:
    """`challengers(name, champion, champion_auc, aucs)`: versions whose runs all evaluated
    `champion` beside them on the same rows (as runs finishing together do)."""
    return lambda name, champion, champion_auc, aucs: [
        register_version(name, data_root=data_root, val_auc=auc, compared_with=(champion, champion_auc))
        for auc in aucs
    ]


@pytest.fixture(scope="module")
def key() -> bytes:
    return ensure_signing_key(signing_key_file())


class RacingClient:
    """The real client, with meeting points where an unserialised promotion is exposed."""

    def __init__(self, client: MlflowClient, read_champion: threading.Barrier, better_moved: threading.Event,
                 better: str) -> None:  # fmt: skip
        self._client = client
        self._read_champion = read_champion
        self._better_moved = better_moved
        self._better = better

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._client, attribute)

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        champion = self._client.get_model_version_by_alias(name, alias)
        # Broken: the other promotion is not reading at the same time (serialised).
        with contextlib.suppress(threading.BrokenBarrierError):
            self._read_champion.wait(timeout=MEET_TIMEOUT_S)
        return champion

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        if version != self._better:
            self._better_moved.wait(timeout=MEET_TIMEOUT_S)
        self._client.set_registered_model_alias(name, alias, version)
        if version == self._better:
            self._better_moved.set()


def test_two_promotions_racing_never_both_pass_against_the_same_champion(
    mlflow_uri: str,
    model: Callable[[str, list[float]], list[str]],
    challengers: Callable[[str, str, float, list[float]], list[str]],
    key: bytes,
) -> None:
    client = MlflowClient(mlflow_uri)
    name = "promotion-race"
    (champion,) = model(name, [0.70])
    client.set_registered_model_alias(name, CHAMPION_ALIAS, champion)
    worse, better = challengers(name, champion, 0.70, [0.80, 0.85])

    read_champion = threading.Barrier(2)
    better_moved = threading.Event()
    racing = RacingClient(client, read_champion, better_moved, better)
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(lambda v: registry.promote(racing, name, v, signing_key=key), [worse, better])
        )  # type: ignore[arg-type]

    promoted = [o.version for o in outcomes if o.promoted]
    assert len(promoted) == 1, f"both passed against v{champion}: not serialised ({outcomes})"
    (first,) = promoted
    (second,) = [o for o in outcomes if not o.promoted]
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == first
    first_tags = client.get_model_version(name, first).tags
    assert first_tags[TAG_PROMOTION] == PROMOTION_PROMOTED and first_tags[TAG_PREVIOUS_CHAMPION] == champion
    # The second read the first as champion: its run compared v1, not the first, so there is
    # no like-with-like comparison for it to pass (SPEC §4); a new run compares them.
    assert client.get_model_version(name, second.version).tags[TAG_PROMOTION] == PROMOTION_REJECTED
    assert second.champion_version == first and "not compared" in second.reason, second
    assert not _lock_exists(client, name), "the lock is released"


def _lock_exists(client: MlflowClient, name: str) -> bool:
    return bool(client.search_registered_models(f"name = '{lock_name(name)}'"))


def test_a_held_lock_makes_the_other_promotion_wait_then_give_up(
    mlflow_uri: str, model: Callable[[str, list[float]], list[str]], key: bytes
) -> None:
    client = MlflowClient(mlflow_uri)
    name = "promotion-busy"
    (version,) = model(name, [0.8])
    with promotion_lock(client, name):
        started = time.monotonic()
        with pytest.raises(PromotionBusy, match=lock_name(name)), promotion_lock(client, name, wait_s=1.0):
            pass
        assert time.monotonic() - started >= 1.0
    assert registry.promote(client, name, version, signing_key=key).promoted


def test_a_lock_left_by_a_dead_holder_is_broken_once_its_lease_ended(
    mlflow_uri: str, model: Callable[[str, list[float]], list[str]], key: bytes
) -> None:
    client = MlflowClient(mlflow_uri)
    name = "promotion-dead-holder"
    (version,) = model(name, [0.8])
    dead = "crashed-host-0123"
    client.create_registered_model(
        lock_name(name), tags={TAG_HOLDER: dead, TAG_LEASE_ENDS: f"{time.time() - 1:.3f}"}
    )

    decision = registry.promote(client, name, version, signing_key=key)

    assert decision.promoted
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == version
    assert not _lock_exists(client, name)
    broken = client.search_registered_models(f"name = '{lock_name(name)}.expired-{dead}'")
    assert len(broken) == 1, "kept under its holder's name, so no lock can be renamed onto it"


def test_a_version_registered_outside_training_is_refused_by_name_not_retried_as_an_outage(
    mlflow_uri: str, model: Callable[[str, list[float]], list[str]], key: bytes, tmp_path: Path
) -> None:
    """A version whose source MLflow cannot serve artifacts from (`runs:/...`, registered by
    hand, with no parameters document): MLflow answers the artifact route with a 500, which
    must not read as "registry down" (the operator would wait for it forever)."""
    import mlflow

    client = MlflowClient(mlflow_uri)
    name = "promotion-foreign"
    (champion,) = model(name, [0.70])
    client.set_registered_model_alias(name, CHAMPION_ALIAS, champion)
    (tmp_path / "model.txt").write_text("not a platform model")
    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "model.txt"), "model")
    # Better than the champion on the same rows: only its source can stop it.
    foreign = client.create_model_version(
        name,
        f"runs:/{run.info.run_id}/model",
        run_id=run.info.run_id,
        tags={TAG_VAL_AUC: "0.99", TAG_CHAMPION_VERSION: champion, TAG_CHAMPION_VAL_AUC: "0.70"},
    ).version

    decision = registry.promote(client, name, foreign, signing_key=key)

    assert not decision.promoted
    assert "cannot be served" in decision.reason and PARAMETERS_ARTIFACT in decision.reason, decision
    assert client.get_model_version(name, foreign).tags[TAG_PROMOTION] == PROMOTION_REJECTED
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == champion
