"""The Flower ClientApp: what runs at a hospital.

It answers three messages, and each reply carries only model parameters and aggregate
numbers — never rows:
* `query.stats` — row count, Σx and Σx² of the training split (federated standardisation);
* `train` — evaluates the incoming global model on the validation split, then trains
  locally and returns the new parameters (one exchange per round instead of two);
* `evaluate` — evaluates the final global model on the validation split.

Every message starts a fresh process, so imports stay lean (numpy + pyarrow).
The site's name and data root come from the SuperNode's `--node-config`; the window and
hyper-parameters from the run config.
"""

from __future__ import annotations

import zlib
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
from healthrisk.data.loader import SiteData, load_site
from healthrisk.data.window import DateWindow
from healthrisk.federated.model import Params, evaluate, train_sgd

VALIDATION_FRACTION = 0.2

app = ClientApp()


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def split(data: SiteData) -> Split:
    """A stable per-site split: the same rows are held out in every round and every run."""
    assert data.labels is not None
    rng = np.random.default_rng(zlib.crc32(data.site.encode()))
    held_out = rng.random(data.n_rows) < VALIDATION_FRACTION
    y = data.labels.astype(np.float64)
    return Split(data.features[~held_out], y[~held_out], data.features[held_out], y[held_out])


def site_split(context: Context) -> tuple[str, Split]:
    site = str(context.node_config["site"])
    root = Path(str(context.node_config.get("data-root", "/data")))
    window = DateWindow.parse(f"{context.run_config['data-from']}..{context.run_config['data-to']}")
    return site, split(load_site(root, site, window))


def standardise(x: np.ndarray, config: ConfigRecord) -> np.ndarray:
    mean = np.asarray(config["mean"], dtype=np.float64)
    scale = np.asarray(config["scale"], dtype=np.float64)
    return (x - mean) / scale


def site_record(site: str) -> ConfigRecord:
    return ConfigRecord({"site": site})


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    site, split = site_split(context)
    x = split.x_train
    content = RecordDict(
        {
            "stats": ArrayRecord([x.sum(axis=0), np.square(x).sum(axis=0)]),
            "metrics": MetricRecord({RECORD_COUNT: int(x.shape[0])}),
            "site": site_record(site),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    site, split = site_split(context)
    config = msg.content.config_records["config"]
    incoming = Params.from_arrays(msg.content.array_records["arrays"].to_numpy_ndarrays())
    x_train, x_val = standardise(split.x_train, config), standardise(split.x_val, config)
    before = evaluate(incoming, x_val, split.y_val)
    server_round = int(cast(int, config["server-round"]))
    updated = train_sgd(
        incoming,
        x_train,
        split.y_train,
        epochs=int(context.run_config["local-epochs"]),
        learning_rate=float(context.run_config["learning-rate"]),
        proximal_mu=float(cast(float, config.get("proximal-mu", 0.0))),
        seed=server_round * 7919 + zlib.crc32(site.encode()),
    )
    after = evaluate(updated, x_train, split.y_train)
    content = RecordDict(
        {
            "arrays": ArrayRecord(updated.to_arrays()),
            "metrics": MetricRecord(
                {
                    RECORD_NUM_EXAMPLES: after.n,
                    METRIC_TRAIN_LOSS: after.loss,
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
    result = evaluate(params, standardise(split.x_val, msg.content.config_records["config"]), split.y_val)
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
