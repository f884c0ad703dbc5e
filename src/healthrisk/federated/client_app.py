"""The Flower ClientApp: what runs at a hospital.

It answers three messages, and each reply carries only model parameters and aggregate
numbers — never rows:
* `query.stats` — row count, Σx and Σx² of the training split (federated standardisation);
* `train` — evaluates the incoming global model on the validation split, then trains
  locally and returns the new parameters (one exchange per round instead of two);
* `evaluate` — evaluates the final global model on the validation split.

Imports stay lean (numpy + pyarrow): a stock SuperNode starts a fresh process for every
message. `healthrisk supernode` keeps one process for the site's messages instead, so the
site's rows are loaded once per window and kept (`load_split`).
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
from flwr.clientapp import ClientApp

from healthrisk.contracts import (
    METRIC_TRAIN_LOSS,
    METRIC_VAL_ACCURACY,
    METRIC_VAL_AUC,
    METRIC_VAL_LOSS,
    RECORD_COUNT,
    RECORD_NUM_EXAMPLES,
    RECORD_VAL_EXAMPLES,
)
from healthrisk.data.loader import load_site, window_files
from healthrisk.data.window import DateWindow
from healthrisk.federated.model import Params, Standardisation, evaluate, log_loss, predict_proba, train_sgd
from healthrisk.federated.stats import FeatureStats

VALIDATION_FRACTION = 0.2

app = ClientApp()


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def held_out(site: str) -> Callable[[int], np.ndarray]:
    """A stable per-site split: the same rows are held out in every round and every run."""

    def mask(n_rows: int) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(site.encode())).random(n_rows) < VALIDATION_FRACTION

    return mask


def _load_split(root: Path, site: str, window: DateWindow) -> Split:
    data = load_site(root, site, window, hold_out=held_out(site))
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


def standardisation(config: ConfigRecord) -> Standardisation:
    return Standardisation(
        np.asarray(config["mean"], dtype=np.float64), np.asarray(config["scale"], dtype=np.float64)
    )


def site_record(site: str) -> ConfigRecord:
    return ConfigRecord({"site": site})


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    site, split = site_split(context)
    stats = FeatureStats.of(split.x_train)
    content = RecordDict(
        {
            "stats": ArrayRecord([stats.total, stats.total_sq]),
            "metrics": MetricRecord({RECORD_COUNT: stats.count}),
            "site": site_record(site),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    site, split = site_split(context)
    config = msg.content.config_records["config"]
    incoming = Params.from_arrays(msg.content.array_records["arrays"].to_numpy_ndarrays())
    scaling = standardisation(config)
    before = evaluate(incoming, split.x_val, split.y_val, scaling)
    server_round = int(cast(int, config["server-round"]))
    updated = train_sgd(
        incoming,
        split.x_train,
        split.y_train,
        epochs=int(context.run_config["local-epochs"]),
        learning_rate=float(context.run_config["learning-rate"]),
        standardisation=scaling,
        proximal_mu=float(cast(float, config.get("proximal-mu", 0.0))),
        seed=server_round * 7919 + zlib.crc32(site.encode()),
    )
    # the training loss only: an AUC over the training rows would sort them all (memory, CPU)
    train_loss = log_loss(split.y_train, predict_proba(updated, split.x_train, scaling))
    content = RecordDict(
        {
            "arrays": ArrayRecord(updated.to_arrays()),
            "metrics": MetricRecord(
                {
                    RECORD_NUM_EXAMPLES: int(split.y_train.size),
                    METRIC_TRAIN_LOSS: train_loss,
                    RECORD_VAL_EXAMPLES: before.n,
                    METRIC_VAL_LOSS: before.loss,
                    METRIC_VAL_AUC: before.auc,
                    METRIC_VAL_ACCURACY: before.accuracy,
                }
            ),
            "site": site_record(site),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    site, split = site_split(context)
    params = Params.from_arrays(msg.content.array_records["arrays"].to_numpy_ndarrays())
    result = evaluate(params, split.x_val, split.y_val, standardisation(msg.content.config_records["config"]))
    content = RecordDict(
        {
            "metrics": MetricRecord(
                {
                    RECORD_NUM_EXAMPLES: result.n,
                    RECORD_VAL_EXAMPLES: result.n,
                    METRIC_VAL_LOSS: result.loss,
                    METRIC_VAL_AUC: result.auc,
                    METRIC_VAL_ACCURACY: result.accuracy,
                }
            ),
            "site": site_record(site),
        }
    )
    return Message(content=content, reply_to=msg)
