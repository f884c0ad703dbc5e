"""The Flower ClientApp: what runs at a hospital.

It answers three messages, and each reply carries only model parameters and aggregate
numbers — never rows:
* `query.stats` — row count, Σx and Σx² of the training split (federated standardisation);
* `train` — evaluates the incoming global model on the validation split, then trains
  locally and returns the new parameters (one exchange per round instead of two);
* `evaluate` — evaluates the final global model on the validation split, and beside it the
  serving champion the server sent (its own standardisation and weights), on the same rows:
  the promotion gate compares like with like (SPEC §4).

Guard rails (privacy.py): a site declines every message while its training or
validation split has fewer than `min-rows` rows. Under differential privacy with
client-side clipping, Flower's `fixedclipping_mod` clips the update before it leaves.
Under secure aggregation every message is a SecAgg+ `train` message (secure.py): Flower's
`secaggplus_mod` masks the vector the site computes for the phase it is asked for.

Imports stay lean (numpy + pyarrow + Flower): a stock SuperNode starts a fresh process
for every message. `healthrisk supernode` keeps one process for the site's messages
instead, so the site's rows are loaded once per window and kept (`load_split`).
The site's name and data root come from the SuperNode's `--node-config`; the window and
hyper-parameters from the run config.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from healthrisk.contracts import (
    METRIC_CHAMPION_VAL_ACCURACY,
    METRIC_CHAMPION_VAL_AUC,
    METRIC_CHAMPION_VAL_LOSS,
    METRIC_TRAIN_LOSS,
    METRIC_VAL_ACCURACY,
    METRIC_VAL_AUC,
    METRIC_VAL_LOSS,
    RECORD_COUNT,
    RECORD_NUM_EXAMPLES,
    RECORD_UNIFORM_WEIGHT,
    RECORD_VAL_EXAMPLES,
)
from healthrisk.data.loader import SiteData, load_site, window_files
from healthrisk.data.window import DateWindow
from healthrisk.federated import secure
from healthrisk.federated.model import (
    Evaluation,
    Params,
    ServedModel,
    Standardisation,
    evaluate,
    log_loss,
    predict_proba,
    train_sgd,
)
from healthrisk.federated.privacy import decline, too_few_rows
from healthrisk.federated.run_config import RunConfig
from healthrisk.federated.stats import FeatureStats

VALIDATION_FRACTION = 0.2
SITE_RECORD = "site"  # the ConfigRecord naming the site that replies
# The record of the final evaluate message that carries the serving champion, when there is one.
CHAMPION_RECORD = "champion"


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def held_out_rows(site: str, days: np.ndarray) -> np.ndarray:
    """Which rows are validation rows, given each row's day: drawn per day, seeded by site
    and day, so a row is held out in every round and every run whose window includes its
    day. A champion trained on an earlier window never trained on the validation rows of a
    later one, and the promotion gate compares both on rows neither has seen (SPEC §4)."""
    rows = np.empty(days.size, dtype=bool)
    values, starts, counts = np.unique(days, return_index=True, return_counts=True)
    for day, start, count in zip(values, starts, counts, strict=True):
        rng = np.random.default_rng([zlib.crc32(site.encode()), int(day)])
        rows[start : start + count] = rng.random(count) < VALIDATION_FRACTION
    return rows


def split(data: SiteData) -> Split:
    """The split of rows loaded without a hold-out (in-process replicas, benchmarks)."""
    assert data.labels is not None and data.n_held_out == 0
    out = held_out_rows(data.site, data.days)
    return Split(data.features[~out], data.labels[~out], data.features[out], data.labels[out])


def _load_split(root: Path, site: str, window: DateWindow) -> Split:
    data = load_site(root, site, window, hold_out=lambda days: held_out_rows(site, days))
    (x_train, y_train), (x_val, y_val) = data.training_part(), data.held_out_part()
    assert y_train is not None and y_val is not None
    return Split(x_train, y_train, x_val, y_val)


@dataclass
class _LoadedSplit:
    key: tuple[object, ...]
    split: Split


_loaded: list[_LoadedSplit] = []


def load_split(root: Path, site: str, window: DateWindow) -> Split:
    """The site's split for `window`, loaded once while its files stay the same.

    Kept for the next message of a resident ClientApp process (`healthrisk supernode`);
    one window at a time, and reloaded when a file of the window is added, replaced or
    removed (the key holds each file's path, size and modification time).
    """
    files = window_files(root, site, window)
    key = (root.resolve(), site, window, *((f, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if not _loaded or _loaded[0].key != key:
        _loaded.clear()  # the previous window's rows go before the next ones come
        _loaded.append(_LoadedSplit(key, _load_split(root, site, window)))
    return _loaded[0].split


def site_split(context: Context) -> tuple[str, Split]:
    site = str(context.node_config["site"])
    root = Path(str(context.node_config.get("data-root", "/data")))
    window = DateWindow.parse(f"{context.run_config['data-from']}..{context.run_config['data-to']}")
    return site, load_split(root, site, window)


@dataclass(frozen=True)
class Site:
    """This site's rows in the run's window, and the run's settings."""

    name: str
    split: Split
    settings: RunConfig

    @classmethod
    def load(cls, context: Context) -> Site:
        name, rows = site_split(context)
        return cls(name, rows, RunConfig.from_flower(context.run_config))

    def refusal(self, msg: Message) -> Message | None:
        """The reply by which this site declines `msg`, or None when it answers."""
        train, val = self.split.y_train.size, self.split.y_val.size
        why = None
        if min(train, val) < self.settings.min_rows:
            why = too_few_rows(self.settings.min_rows)
        elif self.settings.secure_aggregation and train + val > secure.MAX_ROWS:
            why = f"more than {secure.MAX_ROWS} rows, the most secure aggregation sums exactly"
        if why is None:
            return None
        return Message(decline(self.name, msg.metadata.message_type, why), reply_to=msg)

    def update(
        self, incoming: Params, scaling: Standardisation, server_round: int, proximal_mu: float
    ) -> tuple[Params, float, Evaluation]:
        """One local training step: the updated model, its loss on the training split, and
        the incoming model's validation (evaluated first: one exchange per round)."""
        split = self.split
        before = evaluate(incoming, split.x_val, split.y_val, scaling)
        updated = train_sgd(
            incoming,
            split.x_train,
            split.y_train,
            epochs=self.settings.local_epochs,
            learning_rate=self.settings.learning_rate,
            standardisation=scaling,
            proximal_mu=proximal_mu,
            seed=server_round * 7919 + zlib.crc32(self.name.encode()),
        )
        # the training loss only: an AUC over the training rows would sort them all (memory, CPU)
        train_loss = log_loss(split.y_train, predict_proba(updated, split.x_train, scaling))
        return updated, train_loss, before

    def validate(self, params: Params, scaling: Standardisation) -> Evaluation:
        return evaluate(params, self.split.x_val, self.split.y_val, scaling)


def standardisation(config: ConfigRecord) -> Standardisation:
    return Standardisation(
        np.asarray(config["mean"], dtype=np.float64), np.asarray(config["scale"], dtype=np.float64)
    )


def site_record(site: str) -> ConfigRecord:
    return ConfigRecord({SITE_RECORD: site})


# ---- mods: which Flower mod handles which message -------------------------------------


def only_when(applies: Callable[[Message], bool], mod: Mod) -> Mod:
    """Apply a Flower mod only to the messages it is meant for."""

    def wrapped(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        return mod(msg, context, call_next) if applies(msg) else call_next(msg, context)

    return wrapped


def _is_secure(msg: Message) -> bool:
    return RECORD_KEY_CONFIGS in msg.content.config_records


def _wants_clipping(msg: Message) -> bool:
    return any(KEY_CLIPPING_NORM in record for record in msg.content.config_records.values())


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's secaggplus_mod, after the guard rails: a site that declines says so at the
    protocol's first stage, so the others run it without waiting for its vector."""
    if msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE) == Stage.SETUP:
        refusal = Site.load(context).refusal(msg)
        if refusal is not None:
            return refusal
    return secaggplus_mod(msg, context, call_next)


app = ClientApp(
    mods=[only_when(_is_secure, secure_aggregation_mod), only_when(_wants_clipping, fixedclipping_mod)]
)


# ---- the messages ---------------------------------------------------------------------


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    site = Site.load(context)
    if (refusal := site.refusal(msg)) is not None:
        return refusal
    stats = FeatureStats.of(site.split.x_train)
    content = RecordDict(
        {
            "stats": ArrayRecord([stats.total, stats.total_sq]),
            "metrics": MetricRecord({RECORD_COUNT: stats.count}),
            SITE_RECORD: site_record(site.name),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    if "fitins.config" in msg.content.config_records:  # the inner step of secaggplus_mod
        return secure_answer(msg, Site.load(context))
    site = Site.load(context)
    if (refusal := site.refusal(msg)) is not None:
        return refusal
    config = msg.content.config_records["config"]
    incoming = Params.from_arrays(msg.content.array_records["arrays"].to_numpy_ndarrays())
    updated, train_loss, before = site.update(
        incoming,
        standardisation(config),
        server_round=int(cast(int, config["server-round"])),
        proximal_mu=float(cast(float, config.get("proximal-mu", 0.0))),
    )
    metrics: dict[str, int | float | list[int] | list[float]] = {
        RECORD_NUM_EXAMPLES: int(site.split.y_train.size),
        METRIC_TRAIN_LOSS: train_loss,
        RECORD_VAL_EXAMPLES: before.n,
        METRIC_VAL_LOSS: before.loss,
        METRIC_VAL_AUC: before.auc,
        METRIC_VAL_ACCURACY: before.accuracy,
    }
    if site.settings.differential_privacy:
        metrics[RECORD_UNIFORM_WEIGHT] = 1  # the accountant needs equal weights
    content = RecordDict(
        {
            "arrays": ArrayRecord(updated.to_arrays()),
            "metrics": MetricRecord(metrics),
            SITE_RECORD: site_record(site.name),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    site = Site.load(context)
    if (refusal := site.refusal(msg)) is not None:
        return refusal
    params = Params.from_arrays(msg.content.array_records["arrays"].to_numpy_ndarrays())
    result = site.validate(params, standardisation(msg.content.config_records["config"]))
    metrics: dict[str, int | float | list[int] | list[float]] = {
        RECORD_NUM_EXAMPLES: result.n,
        RECORD_VAL_EXAMPLES: result.n,
        METRIC_VAL_LOSS: result.loss,
        METRIC_VAL_AUC: result.auc,
        METRIC_VAL_ACCURACY: result.accuracy,
    }
    if CHAMPION_RECORD in msg.content.array_records:
        champion = ServedModel.from_arrays(msg.content.array_records[CHAMPION_RECORD].to_numpy_ndarrays())
        served = champion.evaluate(site.split.x_val, site.split.y_val)
        metrics |= {
            METRIC_CHAMPION_VAL_LOSS: served.loss,
            METRIC_CHAMPION_VAL_AUC: served.auc,
            METRIC_CHAMPION_VAL_ACCURACY: served.accuracy,
        }
    content = RecordDict({"metrics": MetricRecord(metrics), SITE_RECORD: site_record(site.name)})
    return Message(content=content, reply_to=msg)


def secure_answer(msg: Message, site: Site) -> Message:
    """The vector this site contributes to a secure sum, in the legacy FitRes layout that
    secaggplus_mod masks; weight 1, so that no count travels in clear."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    phase = secure.Phase(str(fitins.config[secure.PHASE]))
    if phase is secure.Phase.STATS:
        vector = secure.stats_vector(site.split.x_train)
    else:
        # The global model, then (final evaluation only) the serving champion's arrays.
        arrays = parameters_to_ndarrays(fitins.parameters)
        params = Params.from_arrays(arrays[:2])
        config = fitins.config
        scaling = Standardisation(
            np.frombuffer(cast(bytes, config["mean"])), np.frombuffer(cast(bytes, config["scale"]))
        )
        if phase is secure.Phase.TRAIN:
            updated, train_loss, before = site.update(
                params,
                scaling,
                server_round=int(cast(int, fitins.config[secure.SERVER_ROUND])),
                proximal_mu=float(cast(float, fitins.config.get("proximal-mu", 0.0))),
            )
            vector = secure.train_vector(updated, int(site.split.y_train.size), train_loss, before)
        else:
            champion = ServedModel.from_arrays(arrays[2:]) if len(arrays) > 2 else None
            vector = secure.evaluate_vector(
                site.validate(params, scaling),
                champion.evaluate(site.split.x_val, site.split.y_val) if champion is not None else None,
            )
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector]), 1, {secure.SITE: site.name})
    return Message(content=compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)
