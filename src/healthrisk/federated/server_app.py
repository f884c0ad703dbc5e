"""The Flower ServerApp: federated standardisation, FedAvg/FedProx rounds, MLflow.

Flow of one run:
1. wait for `min-sites` SuperNodes, ask each for Σx, Σx², n of its training split and
   pool them into the standardisation (no rows cross the network); a site with too few
   rows declines (privacy.py) and takes no further part;
2. `num-server-rounds` rounds of FedAvg (or FedProx); each round is ONE message exchange:
   the train reply also carries the site's validation metrics of the incoming global
   model, and only the last round adds an evaluate exchange for the final model — which
   also carries the serving champion, so every site reports both on the same validation
   rows and the promotion gate compares like with like (SPEC §4);
3. per-round federated metrics go to MLflow with step=round, per-site metrics only when
   the run asks for them (`per-site-metrics`);
4. the final sklearn pipeline is logged and registered with the run's provenance tags.

A site that misses an exchange (its SuperNode killed, an error, no reply within the
round timeout) is lost for the rest of the run, which goes on with the others while
`min-sites` remain; the run and the version say which site, where and how
(`healthrisk.lost_sites`).

Options: differential privacy wraps the strategy in Flower's fixed-clipping DP strategy
and reports the (ε, δ) spent; secure aggregation runs steps 1-2 and the final evaluation
as SecAgg+ sums (secure.py), so the server never holds one site's numbers.

Everything the server receives is recorded structurally (array shapes, metric names) in
`federation_audit.json`; what actually crossed the SuperLink can be captured there too
(capture.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx, Strategy

from healthrisk import __version__
from healthrisk.contracts import (
    CHAMPION_VAL_METRICS,
    METRIC_CHAMPION_VAL_AUC,
    METRIC_DP_EPSILON,
    METRIC_ROUND,
    METRIC_TRAIN_LOSS,
    METRIC_TRAIN_ROWS,
    METRIC_VAL_AUC,
    RECORD_COUNT,
    RECORD_NUM_EXAMPLES,
    RECORD_UNIFORM_WEIGHT,
    RECORD_VAL_EXAMPLES,
    TAG_CHAMPION_VAL_AUC,
    TAG_CHAMPION_VERSION,
    TAG_CODE_VERSION,
    TAG_DATA_FINGERPRINT,
    TAG_DATA_WINDOWS,
    TAG_DECLINED_SITES,
    TAG_DP_DELTA,
    TAG_DP_EPSILON,
    TAG_DP_MECHANISM,
    TAG_LOCAL_RUN,
    TAG_LOST_SITES,
    TAG_MODEL_VERSION,
    TAG_ROUNDS,
    TAG_RUN_NUMBER,
    TAG_SECURE_AGGREGATION,
    TAG_SITES,
    TAG_STRATEGY,
    TAG_TRAINING,
    TAG_TRIGGER,
    TAG_VAL_AUC,
    TRAINING_EXPERIMENT,
    VAL_METRICS,
    site_metric,
)
from healthrisk.federated import secure
from healthrisk.federated.client_app import CHAMPION_RECORD, SITE_RECORD
from healthrisk.federated.model import Params, ServedModel
from healthrisk.federated.privacy import Budget, declined_site, private_strategy
from healthrisk.federated.run_config import RunConfig
from healthrisk.federated.stats import FeatureStats
from healthrisk.schema import N_FEATURES

logger = logging.getLogger("healthrisk.federated")

POLL_INTERVAL_SECONDS = 0.05
# Flower's error codes by name ("node unavailable"): what a lost site's record says, rather
# than an error's free text, which a ClientApp writes.
ERROR_NAMES = {
    code: name.lower().replace("_", " ") for name, code in vars(ErrorCode).items() if name.isupper()
}

app = ServerApp()


class FederationError(RuntimeError):
    pass


class RoundTracker:
    """What the run reports to MLflow as it goes: federated metrics by round, per-site
    metrics when allowed, which sites declined and why, which were lost and where, the
    privacy spent."""

    def __init__(self, settings: RunConfig) -> None:
        self.settings = settings
        self.sites: set[str] = set()
        self.final: dict[str, float] = {}
        self.declined: dict[str, str] = {}
        self.lost: dict[str, str] = {}
        self.stage = "statistics"  # the exchange under way, as a lost site's record names it

    def lose(self, site: str, how: str) -> None:
        import mlflow

        self.lost[site] = f"{self.stage}: {how}"
        logger.warning("%s lost in %s (%s); it takes no further part in the run", site, self.stage, how)
        mlflow.set_tag(TAG_LOST_SITES, json.dumps(self.lost, sort_keys=True))

    def decline(self, site: str, reason: str) -> None:
        import mlflow

        if self.declined.get(site) != reason:
            self.declined[site] = reason
            logger.warning("%s %s", site, reason)
            mlflow.set_tag(TAG_DECLINED_SITES, json.dumps(self.declined, sort_keys=True))

    def log_replies(
        self, step: int, replies: list[Message], names: Iterable[str], weight_key: str
    ) -> dict[str, float]:
        """The example-weighted federated metrics of `replies`, and each site's own if allowed."""
        names = list(names)
        metrics = weighted([r.content.metric_records["metrics"] for r in replies], names, weight_key)
        per_site: dict[str, float] = {}
        for reply in replies:
            site = site_of(reply)
            self.sites.add(site)
            for name in names:
                value = float(cast(float, reply.content.metric_records["metrics"][name]))
                if np.isfinite(value):
                    per_site[site_metric(site, name)] = value
        self.log(step, metrics, per_site)
        return metrics

    def log(
        self, step: int, metrics: Mapping[str, float], per_site: Mapping[str, float] | None = None
    ) -> None:
        import mlflow

        batch = {k: v for k, v in metrics.items() if np.isfinite(v)}
        if self.settings.per_site_metrics and per_site:
            batch.update(per_site)
        batch[METRIC_ROUND] = float(step)
        mlflow.log_metrics(batch, step=step)


class QuickPollGrid:
    """The Grid a run's strategies talk through.

    It polls every 50 ms instead of Flower's fixed 3 s and records the structure of
    every reply (the audit). Once the statistics are in, it offers strategies only the
    sites that sent them (`participants`): a site that declined is not asked again, and
    one that connects late does not join a model it has no part in the standardisation
    of. A site that misses an exchange — an error reply, no reply in time, or gone when
    an exchange starts — is lost: it takes no further part, even if a replacement
    SuperNode comes back with its key (and so its node id), and the tracker records
    where. Everything else is delegated to the Grid Flower handed us.
    """

    def __init__(self, grid: Grid, audit: list[dict[str, Any]], tracker: RoundTracker) -> None:
        self._grid = grid
        self._audit = audit
        self._tracker = tracker
        self.declined_nodes: set[int] = set()
        self.lost_nodes: set[int] = set()
        self.site_names: dict[int, str] = {}
        self.participants: set[int] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> list[int]:
        excluded = self.declined_nodes | self.lost_nodes
        return [
            n
            for n in self._grid.get_node_ids()
            if n not in excluded and (self.participants is None or n in self.participants)
        ]

    def drop_disconnected(self) -> int:
        """Lose the participants that are not connected as an exchange starts (Flower's
        strategies would wait for them without end); the number of sites that remain."""
        online = set(self._grid.get_node_ids())
        for node in (self.participants or set()) - self.declined_nodes - self.lost_nodes - online:
            self._lose(node, "not connected")
        return len(self.get_node_ids())

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        ids = self._grid.push_messages(messages)
        pending = {id_: m.metadata.dst_node_id for id_, m in zip(ids, messages, strict=True)}
        destination = dict(pending)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        # A node that went away is answered for by Flower with a NODE_UNAVAILABLE error:
        # at once when it said goodbye, else once it has missed two heartbeats (60 s).
        while pending and (deadline is None or time.monotonic() < deadline):
            received = list(self._grid.pull_messages(set(pending)))
            replies.extend(received)
            for reply in received:
                pending.pop(reply.metadata.reply_to_message_id, None)
            if pending:
                time.sleep(POLL_INTERVAL_SECONDS)
        for reply in replies:
            self._audit.append(describe(reply))
            # An error Flower makes for a lost node comes from the SuperLink, not the node.
            node = destination[reply.metadata.reply_to_message_id]
            if not reply.has_error():
                if SITE_RECORD in reply.content.config_records:
                    self.site_names[node] = site_of(reply)
            elif (declined := declined_site(reply.error)) is not None:
                self.declined_nodes.add(node)
                self._tracker.decline(*declined)
            else:
                self._lose(node, ERROR_NAMES.get(reply.error.code, f"error {reply.error.code}"))
        for node in pending.values():
            self._lose(node, f"no reply within {timeout:.0f} s")
        return replies

    def _lose(self, node: int, how: str) -> None:
        self.lost_nodes.add(node)
        self._tracker.lose(self.site_names.get(node, f"node {node}"), how)


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
    return str(message.content.config_records[SITE_RECORD][SITE_RECORD])


def valid(replies: Iterable[Message]) -> list[Message]:
    ok = []
    for reply in replies:
        if reply.has_error():
            if declined_site(reply.error) is None:
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


def start_exchange(
    grid: QuickPollGrid, tracker: RoundTracker, settings: RunConfig, stage: str, required: int | None = None
) -> None:
    """Before an exchange: name it for the sites lost in it, lose the participants no longer
    connected, and stop the run if too few remain."""
    tracker.stage = stage
    enough_sites(settings, grid.drop_disconnected(), stage, required=required)


def enough_sites(
    settings: RunConfig,
    taking_part: int,
    what: str,
    received: Iterable[Message] = (),
    *,
    required: int | None = None,
) -> None:
    required = settings.min_sites if required is None else required
    if taking_part < required:
        raise FederationError(
            f"{what}: only {taking_part} sites took part; {required} required{site_errors(received)}"
        )


@dataclass(frozen=True)
class Trained:
    """What a run produced, whichever way it was aggregated."""

    stats: FeatureStats
    params: Params


# ---- plain aggregation (optionally differentially private) ----------------------------


def federated_standardisation(
    grid: QuickPollGrid, settings: RunConfig, tracker: RoundTracker
) -> FeatureStats:
    messages = [
        Message(
            content=RecordDict({"config": ConfigRecord({})}), dst_node_id=node, message_type="query.stats"
        )
        for node in grid.get_node_ids()
    ]
    received = list(grid.send_and_receive(messages, timeout=settings.round_timeout_seconds))
    replies = valid(received)
    enough_sites(settings, len(replies), "statistics", received)
    grid.participants = {r.metadata.src_node_id for r in replies}
    parts, per_site = [], {}
    for reply in replies:
        total, total_sq = reply.content.array_records["stats"].to_numpy_ndarrays()
        count = int(cast(int, reply.content.metric_records["metrics"][RECORD_COUNT]))
        parts.append(FeatureStats(count, total, total_sq))
        per_site[site_metric(site_of(reply), METRIC_TRAIN_ROWS)] = float(count)
    tracker.log(0, {}, per_site)
    return FeatureStats.merge(parts)


class OneExchange(Strategy):
    """The run's rounds around an unmodified FedAvg/FedProx (`inner`, possibly wrapped
    in a DP strategy, which refuses subclasses of FedAvg's aggregation): train replies
    carry the validation metrics of the incoming model, the evaluate exchange happens
    once, after the last round, with the serving champion beside the final model, and
    the metrics go to the tracker."""

    def __init__(
        self,
        inner: Strategy,
        settings: RunConfig,
        tracker: RoundTracker,
        grid: QuickPollGrid,
        sites: int,
        champion: ServedModel | None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.settings = settings
        self.tracker = tracker
        self.grid = grid
        # The DP accountant and noise are set for every site of the run: with one lost,
        # the (ε, δ) reported would no longer hold, so the run stops instead.
        self.required = sites if settings.differential_privacy else settings.min_sites
        self.champion = champion
        self.budget: Budget | None = None

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        start_exchange(self.grid, self.tracker, self.settings, f"round {server_round}", self.required)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        received = list(replies)
        ok = valid(received)
        enough_sites(self.settings, len(ok), f"round {server_round}", received, required=self.required)
        # The replies evaluated the global model of the previous round.
        self.tracker.log_replies(server_round - 1, ok, VAL_METRICS, RECORD_VAL_EXAMPLES)
        self.tracker.log_replies(server_round, ok, (METRIC_TRAIN_LOSS,), RECORD_NUM_EXAMPLES)
        aggregated = self.inner.aggregate_train(server_round, ok)
        self._account(server_round)
        return aggregated

    def _account(self, server_round: int) -> None:
        privacy_spent = getattr(self.inner, "privacy_spent", None)
        spent = privacy_spent() if privacy_spent is not None else None
        if spent is not None:
            self.budget = Budget.of(spent)
            self.tracker.log(server_round, {METRIC_DP_EPSILON: self.budget.epsilon})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if server_round < self.settings.num_server_rounds:
            return []
        start_exchange(self.grid, self.tracker, self.settings, "final evaluation", self.required)
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        if self.champion is not None:
            for message in messages:
                message.content[CHAMPION_RECORD] = ArrayRecord(self.champion.to_arrays())
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if server_round < self.settings.num_server_rounds:
            return None  # nothing was sent this round
        received = list(replies)
        ok = valid(received)
        enough_sites(self.settings, len(ok), "final evaluation", received, required=self.required)
        names = (*VAL_METRICS, *CHAMPION_VAL_METRICS) if self.champion is not None else VAL_METRICS
        self.tracker.final = self.tracker.log_replies(server_round, ok, names, RECORD_VAL_EXAMPLES)
        return MetricRecord({k: v for k, v in self.tracker.final.items() if np.isfinite(v)})


def make_strategy(
    settings: RunConfig, tracker: RoundTracker, grid: QuickPollGrid, champion: ServedModel | None
) -> OneExchange:
    sites = len(grid.get_node_ids())
    kwargs: dict[str, Any] = {
        # Every remaining site, every round. Flower's strategies wait without end for
        # their minimum of connected nodes: OneExchange checks it before they sample.
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": settings.min_sites,
        "min_evaluate_nodes": settings.min_sites,
        "min_available_nodes": settings.min_sites,
        # The DP accountant needs every site weighted the same.
        "weighted_by_key": RECORD_UNIFORM_WEIGHT if settings.differential_privacy else RECORD_NUM_EXAMPLES,
    }
    base: FedAvg = (
        FedProx(proximal_mu=settings.proximal_mu, **kwargs)
        if settings.strategy == "FedProx"
        else FedAvg(**kwargs)
    )
    inner = private_strategy(base, settings, sites) if settings.differential_privacy else base
    return OneExchange(inner, settings, tracker, grid, sites, champion)


def train_plain(
    grid: QuickPollGrid, settings: RunConfig, tracker: RoundTracker, champion: ServedModel | None
) -> tuple[Trained, Budget | None]:
    stats = federated_standardisation(grid, settings, tracker)
    mean, scale = stats.mean_and_scale()
    strategy = make_strategy(settings, tracker, grid, champion)
    standardisation = {"mean": mean.tolist(), "scale": scale.tolist()}
    result = strategy.start(
        grid=grid,  # type: ignore[arg-type]
        initial_arrays=ArrayRecord(Params.zeros(N_FEATURES).to_arrays()),
        num_rounds=settings.num_server_rounds,
        timeout=settings.round_timeout_seconds,
        train_config=ConfigRecord(standardisation),
        evaluate_config=ConfigRecord(standardisation),
    )
    if not result.arrays:
        raise FederationError("no round produced a model (every aggregation was skipped)")
    return Trained(stats, Params.from_arrays(result.arrays.to_numpy_ndarrays())), strategy.budget


# ---- secure aggregation ---------------------------------------------------------------


def train_secure(
    grid: QuickPollGrid,
    context: Context,
    settings: RunConfig,
    tracker: RoundTracker,
    champion: ServedModel | None,
) -> Trained:
    aggregation = secure.SecureAggregation(grid, context, settings)  # type: ignore[arg-type]
    summed_stats = aggregation.sum(secure.Phase.STATS, 0, [np.zeros(1)], {})
    grid.participants = summed_stats.nodes
    stats = secure.stats_from_sum(summed_stats.total)
    mean, scale = stats.mean_and_scale()
    instruction: dict[str, Any] = {"mean": mean.tobytes(), "scale": scale.tobytes()}
    if settings.strategy == "FedProx":
        instruction["proximal-mu"] = settings.proximal_mu
    params = Params.zeros(N_FEATURES)
    for server_round in range(1, settings.num_server_rounds + 1):
        start_exchange(grid, tracker, settings, f"round {server_round}")
        summed = aggregation.sum(secure.Phase.TRAIN, server_round, params.to_arrays(), instruction)
        round_sum = secure.round_from_sum(summed.total)
        tracker.sites.update(summed.sites)
        tracker.log(server_round - 1, round_sum.validation)
        tracker.log(server_round, {METRIC_TRAIN_LOSS: round_sum.train_loss})
        params = round_sum.params
    start_exchange(grid, tracker, settings, "final evaluation")
    served = champion.to_arrays() if champion is not None else []
    final = aggregation.sum(
        secure.Phase.EVALUATE, settings.num_server_rounds, [*params.to_arrays(), *served], instruction
    )
    tracker.final = secure.final_metrics_from_sum(final.total)
    tracker.log(settings.num_server_rounds, tracker.final)
    return Trained(stats, params)


# ---- the run --------------------------------------------------------------------------


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
    if settings.data_fingerprint:
        tags[TAG_DATA_FINGERPRINT] = settings.data_fingerprint
    return tags


def privacy_tags(settings: RunConfig, budget: Budget | None) -> dict[str, str]:
    tags = {}
    if settings.secure_aggregation:
        tags[TAG_SECURE_AGGREGATION] = "true"
    if budget is not None:
        tags[TAG_DP_EPSILON] = f"{budget.epsilon:.6g}"
        tags[TAG_DP_DELTA] = f"{budget.delta:g}"
        tags[TAG_DP_MECHANISM] = budget.mechanism(settings)
    return tags


def serving_champion(settings: RunConfig) -> tuple[str, ServedModel] | None:
    """The version under the champion alias and its model, to evaluate beside the new one."""
    import mlflow

    from healthrisk.registry import current_champion, served_model

    client = mlflow.MlflowClient()
    champion = current_champion(client, settings.registered_model, settings.champion_alias)
    if champion is None:
        return None
    version = str(champion.version)
    return version, served_model(client, settings.registered_model, version)


@app.main()
def main(grid: Grid, context: Context) -> None:
    import mlflow

    from healthrisk.registry import build_pipeline, log_and_register

    settings = RunConfig.from_flower(context.run_config)
    if settings.tracking_uri:
        mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(TRAINING_EXPERIMENT)
    champion = serving_champion(settings)
    served = champion[1] if champion is not None else None
    audit: list[dict[str, Any]] = []
    tracker = RoundTracker(settings)
    quick_grid = QuickPollGrid(grid, audit, tracker)
    with mlflow.start_run(run_name=f"run-{settings.run_number}", tags=provenance_tags(settings, [])):
        mlflow.log_params({k: v for k, v in settings.to_flower().items() if k != "tracking-uri"})
        wait_for_sites(grid, settings)
        budget = None
        if settings.secure_aggregation:
            trained = train_secure(quick_grid, context, settings, tracker, served)
        else:
            trained, budget = train_plain(quick_grid, settings, tracker, served)
        mlflow.log_dict({"replies": audit}, "federation_audit.json")
        tags = provenance_tags(settings, tracker.sites) | privacy_tags(settings, budget)
        if tracker.lost:  # the version says it too: its later rounds are without these sites
            tags[TAG_LOST_SITES] = json.dumps(tracker.lost, sort_keys=True)
        mlflow.set_tags(tags)
        tags[TAG_VAL_AUC] = f"{tracker.final[METRIC_VAL_AUC]:.6f}"
        mean, scale = trained.stats.mean_and_scale()
        if champion is not None:
            tags[TAG_CHAMPION_VERSION] = champion[0]
            tags[TAG_CHAMPION_VAL_AUC] = f"{tracker.final[METRIC_CHAMPION_VAL_AUC]:.6f}"
        version = log_and_register(
            build_pipeline(mean, scale, trained.params.coef, trained.params.intercept),
            registered_name=settings.registered_model,
            tags=tags,
        )
        mlflow.set_tag(TAG_MODEL_VERSION, str(version.version))
        logger.info("registered %s version %s", settings.registered_model, version.version)
