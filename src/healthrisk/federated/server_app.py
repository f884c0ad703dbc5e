"""The Flower ServerApp: federated standardisation, FedAvg/FedProx rounds, MLflow.

Flow of one run:
1. wait for `min-sites` SuperNodes, ask each for Σx, Σx², n of its training split and
   pool them into the standardisation (no rows cross the network);
2. `num-server-rounds` rounds of FedAvg (or FedProx); each round is ONE message exchange:
   the train reply also carries the site's validation metrics of the incoming global
   model, and only the last round adds an evaluate exchange for the final model;
3. per-round weighted metrics and per-site metrics go to MLflow with step=round;
4. the final sklearn pipeline is logged and registered with the run's provenance tags.

Everything the server receives is recorded structurally (array shapes, metric names) in
`federation_audit.json`, so a hospital can check that only parameters and aggregates
left its site.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx

from healthrisk import __version__
from healthrisk.contracts import (
    METRIC_ROUND,
    METRIC_TRAIN_LOSS,
    METRIC_TRAIN_ROWS,
    METRIC_VAL_AUC,
    RECORD_COUNT,
    RECORD_NUM_EXAMPLES,
    RECORD_VAL_EXAMPLES,
    TAG_CODE_VERSION,
    TAG_DATA_WINDOWS,
    TAG_LOCAL_RUN,
    TAG_MODEL_VERSION,
    TAG_ROUNDS,
    TAG_RUN_NUMBER,
    TAG_SITES,
    TAG_STRATEGY,
    TAG_TRAINING,
    TAG_TRIGGER,
    TAG_VAL_AUC,
    TRAINING_EXPERIMENT,
    VAL_METRICS,
    site_metric,
)
from healthrisk.federated.model import Params
from healthrisk.federated.run_config import RunConfig
from healthrisk.federated.stats import FeatureStats
from healthrisk.schema import N_FEATURES

logger = logging.getLogger("healthrisk.federated")

POLL_INTERVAL_SECONDS = 0.05

app = ServerApp()


class FederationError(RuntimeError):
    pass


class QuickPollGrid:
    """A Grid whose send_and_receive polls every 50 ms instead of Flower's fixed 3 s.

    Everything else is delegated to the Grid Flower handed us.
    """

    def __init__(self, grid: Grid, audit: list[dict[str, Any]]) -> None:
        self._grid = grid
        self._audit = audit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        pending = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            received = list(self._grid.pull_messages(pending))
            replies.extend(received)
            pending -= {m.metadata.reply_to_message_id for m in received}
            if pending:
                time.sleep(POLL_INTERVAL_SECONDS)
        for reply in replies:
            self._audit.append(describe(reply))
        return replies


def describe(message: Message) -> dict[str, Any]:
    """The structure of a reply — record names, array shapes, metric names — not values."""
    if message.has_error():
        return {"type": message.metadata.message_type, "error": message.error.reason}
    entry: dict[str, Any] = {"type": message.metadata.message_type, "records": {}}
    for key, record in message.content.items():
        if isinstance(record, ArrayRecord):
            entry["records"][key] = {
                "kind": "arrays",
                "shapes": [list(a.shape) for a in record.to_numpy_ndarrays()],
            }
        elif isinstance(record, MetricRecord):
            entry["records"][key] = {"kind": "metrics", "names": sorted(record.keys())}
        else:
            entry["records"][key] = {"kind": "config", "names": sorted(record.keys())}
    return entry


def site_of(message: Message) -> str:
    return str(message.content.config_records["site"]["site"])


def valid(replies: Iterable[Message]) -> list[Message]:
    ok = []
    for reply in replies:
        if reply.has_error():
            logger.warning("a site replied with an error: %s", reply.error.reason)
        else:
            ok.append(reply)
    return ok


def site_errors(replies: Iterable[Message]) -> str:
    reasons = [str(r.error.reason) for r in replies if r.has_error()]
    return f"; site errors: {' | '.join(reasons)}" if reasons else ""


def weighted(metrics: list[Mapping[str, Any]], names: Iterable[str], weight_key: str) -> dict[str, float]:
    """Example-weighted means of per-site metrics (sites without a defined value skipped)."""
    weights = np.array([float(m[weight_key]) for m in metrics])
    out = {}
    for name in names:
        values = np.array([float(m[name]) for m in metrics])
        usable = np.isfinite(values)  # a site with one class has no AUC
        out[name] = (
            float(np.average(values[usable], weights=weights[usable])) if usable.any() else float("nan")
        )
    return out


def wait_for_sites(grid: Grid, settings: RunConfig) -> list[int]:
    deadline = time.monotonic() + settings.wait_for_sites_seconds
    while len(nodes := list(grid.get_node_ids())) < settings.min_sites:
        if time.monotonic() > deadline:
            raise FederationError(
                f"only {len(nodes)} of the {settings.min_sites} required sites connected "
                f"within {settings.wait_for_sites_seconds:.0f} s"
            )
        time.sleep(0.2)
    return nodes


def federated_standardisation(
    grid: QuickPollGrid, nodes: list[int], settings: RunConfig
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    messages = [
        Message(
            content=RecordDict({"config": ConfigRecord({})}), dst_node_id=node, message_type="query.stats"
        )
        for node in nodes
    ]
    received = list(grid.send_and_receive(messages, timeout=settings.round_timeout_seconds))
    replies = valid(received)
    if len(replies) < settings.min_sites:
        raise FederationError(
            f"only {len(replies)} sites sent statistics; {settings.min_sites} required{site_errors(received)}"
        )
    parts, counts = [], {}
    for reply in replies:
        total, total_sq = reply.content.array_records["stats"].to_numpy_ndarrays()
        count = int(cast(int, reply.content.metric_records["metrics"][RECORD_COUNT]))
        parts.append(FeatureStats(count, total, total_sq))
        counts[site_of(reply)] = count
    mean, scale = FeatureStats.merge(parts).mean_and_scale()
    return mean, scale, counts


class RoundTracker:
    """Logs weighted and per-site metrics to MLflow as rounds complete."""

    def __init__(self, settings: RunConfig) -> None:
        self.settings = settings
        self.sites: set[str] = set()
        self.final: dict[str, float] = {}

    def log(
        self, step: int, replies: list[Message], names: Iterable[str], weight_key: str
    ) -> dict[str, float]:
        import mlflow

        names = list(names)
        metrics = weighted([r.content.metric_records["metrics"] for r in replies], names, weight_key)
        batch = {k: v for k, v in metrics.items() if np.isfinite(v)}
        for reply in replies:
            site = site_of(reply)
            self.sites.add(site)
            for name in names:
                value = float(cast(float, reply.content.metric_records["metrics"][name]))
                if np.isfinite(value):
                    batch[site_metric(site, name)] = value
        batch[METRIC_ROUND] = float(step)
        mlflow.log_metrics(batch, step=step)
        return metrics


def make_strategy(settings: RunConfig, tracker: RoundTracker) -> FedAvg:
    base: type[FedAvg] = FedProx if settings.strategy == "FedProx" else FedAvg

    class OneExchangeStrategy(base):  # type: ignore[valid-type,misc]
        """Train replies carry the validation metrics of the incoming model; the
        evaluate exchange happens once, after the last round."""

        def configure_evaluate(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            if server_round < settings.num_server_rounds:
                return []
            return super().configure_evaluate(server_round, arrays, config, grid)

        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            received = list(replies)
            ok = valid(received)
            if len(ok) < settings.min_sites:
                raise FederationError(
                    f"round {server_round}: only {len(ok)} sites replied; {settings.min_sites} required"
                    f"{site_errors(received)}"
                )
            # The replies evaluated the global model of the previous round.
            tracker.log(server_round - 1, ok, VAL_METRICS, RECORD_VAL_EXAMPLES)
            tracker.log(server_round, ok, (METRIC_TRAIN_LOSS,), RECORD_NUM_EXAMPLES)
            return super().aggregate_train(server_round, ok)

        def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
            if server_round < settings.num_server_rounds:
                return None  # nothing was sent this round
            received = list(replies)
            ok = valid(received)
            if len(ok) < settings.min_sites:
                raise FederationError(
                    f"final evaluation: only {len(ok)} sites replied{site_errors(received)}"
                )
            tracker.final = tracker.log(server_round, ok, VAL_METRICS, RECORD_VAL_EXAMPLES)
            return super().aggregate_evaluate(server_round, ok)

    kwargs: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": settings.min_sites,
        "min_evaluate_nodes": settings.min_sites,
        "min_available_nodes": settings.min_sites,
    }
    if base is FedProx:
        kwargs["proximal_mu"] = settings.proximal_mu
    return OneExchangeStrategy(**kwargs)


def provenance_tags(settings: RunConfig, sites: Iterable[str]) -> dict[str, str]:
    sites = sorted(sites)
    window = f"{settings.data_from}..{settings.data_to}"
    tags = {
        TAG_RUN_NUMBER: str(settings.run_number),
        TAG_SITES: ",".join(sites),
        TAG_DATA_WINDOWS: json.dumps({s: window for s in sites}, sort_keys=True),
        TAG_ROUNDS: str(settings.num_server_rounds),
        TAG_STRATEGY: settings.strategy,
        TAG_TRIGGER: settings.trigger,
        TAG_CODE_VERSION: settings.code_version or __version__,
    }
    if settings.training_ref:
        tags[TAG_TRAINING] = settings.training_ref
    if settings.local_run_id:
        tags[TAG_LOCAL_RUN] = settings.local_run_id
    return tags


@app.main()
def main(grid: Grid, context: Context) -> None:
    import mlflow

    from healthrisk.registry import build_pipeline, log_and_register

    settings = RunConfig.from_flower(context.run_config)
    if settings.tracking_uri:
        mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(TRAINING_EXPERIMENT)
    audit: list[dict[str, Any]] = []
    quick_grid = QuickPollGrid(grid, audit)
    tracker = RoundTracker(settings)
    early_tags = provenance_tags(settings, [])
    with mlflow.start_run(run_name=f"run-{settings.run_number}", tags=early_tags):
        mlflow.log_params({k: v for k, v in settings.to_flower().items() if k != "tracking-uri"})
        nodes = wait_for_sites(grid, settings)
        mean, scale, counts = federated_standardisation(quick_grid, nodes, settings)
        mlflow.log_metrics({site_metric(site, METRIC_TRAIN_ROWS): n for site, n in counts.items()})
        standardisation = ConfigRecord({"mean": mean.tolist(), "scale": scale.tolist()})
        strategy = make_strategy(settings, tracker)
        result = strategy.start(
            grid=quick_grid,  # type: ignore[arg-type]
            initial_arrays=ArrayRecord(Params.zeros(N_FEATURES).to_arrays()),
            num_rounds=settings.num_server_rounds,
            timeout=settings.round_timeout_seconds,
            train_config=standardisation,
            evaluate_config=ConfigRecord({"mean": mean.tolist(), "scale": scale.tolist()}),
        )
        final = Params.from_arrays(result.arrays.to_numpy_ndarrays())
        mlflow.log_dict({"replies": audit}, "federation_audit.json")
        tags = provenance_tags(settings, tracker.sites or counts)
        mlflow.set_tags(tags)
        tags[TAG_VAL_AUC] = f"{tracker.final[METRIC_VAL_AUC]:.6f}"
        version = log_and_register(
            build_pipeline(mean, scale, final.coef, final.intercept),
            registered_name=settings.registered_model,
            tags=tags,
        )
        mlflow.set_tag(TAG_MODEL_VERSION, str(version.version))
        logger.info("registered %s version %s", settings.registered_model, version.version)
