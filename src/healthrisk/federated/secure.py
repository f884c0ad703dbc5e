"""Secure aggregation (Flower's SecAgg+): the server learns sums over sites, never a
site's own numbers.

Every number a site sends under this option goes into one vector that SecAgg+ masks
(`secaggplus_mod` on the ClientApp, `SecAggPlusWorkflow` on the ServerApp): the
standardisation statistics, each round's model update with its training and validation
metrics, and the final evaluation. The server unmasks only their sum. In Flower 1.42
SecAgg+ lives on the legacy workflow API, driven here from the Message-API ServerApp
through a LegacyContext; every secure sum is four exchanges (keys, key shares, masked
vectors, unmasking) instead of one.

What crosses in clear: each site's name (to say which sites took part) and its weight,
fixed at 1, so the row counts stay inside the masked vector. With k sites a server that
colludes with k-1 of them learns the last one's vector: SecAgg+ assumes an honest-but-
curious server and at least two honest sites.

SecAgg+ clips every value to [-clipping range, clipping range] and quantises it before
masking, so the vectors are scaled to stay in range with room for precision: features
by their schema limits into [0, 1], counts and sums by the most rows a site may send
(`MAX_ROWS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

from healthrisk.contracts import (
    CHAMPION_VAL_METRICS,
    METRIC_VAL_ACCURACY,
    METRIC_VAL_AUC,
    METRIC_VAL_LOSS,
    VAL_METRICS,
)
from healthrisk.federated.model import Evaluation, Params
from healthrisk.federated.stats import FeatureStats
from healthrisk.schema import FEATURES, N_FEATURES

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from healthrisk.federated.run_config import RunConfig

LOW = np.array([f.minimum for f in FEATURES])
SPAN = np.array([f.maximum - f.minimum for f in FEATURES])
# The most rows a site may hold in a window under secure aggregation (a site with more
# declines): counts and sums are divided by it so that they fit SecAgg+'s clipping
# range. It sets the precision: a sum is exact to 2 * MAX_ROWS / 2**30, which keeps the
# pooled scale of a feature whose spread is 2 % of its range within about 0.05 %.
MAX_ROWS = 100_000
# Statistics and metrics lie in [0, 1] once scaled; n·coefficient / MAX_ROWS in [-8, 8]
# (Flower's default range). 2**30 quantisation levels (the most its int32 quantiser
# holds) and a 2**40 modulus, so that the masked sum of up to 1024 sites cannot wrap.
SCALED_RANGE = 1.0
PARAMS_RANGE = 8.0
QUANTIZATION_LEVELS = 2**30
MODULUS = 2**40

PHASE = "phase"  # fit-config key: what a site is asked to put in its vector
SERVER_ROUND = "server-round"  # fit-config key, as in the Message-API train config
SITE = "site"  # fit-metrics key: the site's name, in clear


class Phase(StrEnum):
    STATS = "stats"
    TRAIN = "train"
    EVALUATE = "evaluate"


# ---- the vectors a site sends (before masking) and what their sums mean ---------------


def stats_vector(x: np.ndarray) -> np.ndarray:
    """[n, Σx̃, Σx̃²] / MAX_ROWS, with x̃ the features scaled into [0, 1] by their limits."""
    scaled = (x - LOW) / SPAN
    return np.concatenate([[x.shape[0]], scaled.sum(axis=0), np.square(scaled).sum(axis=0)]) / MAX_ROWS


def stats_from_sum(total: np.ndarray) -> FeatureStats:
    """The pooled statistics in the features' own units, from the sum of stats vectors."""
    total = total * MAX_ROWS
    n = float(total[0])
    s1, s2 = total[1 : 1 + N_FEATURES], total[1 + N_FEATURES :]
    # x = LOW + SPAN·x̃: Σx = n·LOW + SPAN·Σx̃, Σx² = n·LOW² + 2·LOW·SPAN·Σx̃ + SPAN²·Σx̃²
    return FeatureStats(
        count=round(n),
        total=n * LOW + SPAN * s1,
        total_sq=n * LOW**2 + 2 * LOW * SPAN * s1 + SPAN**2 * s2,
    )


EVALUATION_SUMS = 5  # the length of evaluation_sums(): n, loss, accuracy, sites with an AUC, AUC


def evaluation_sums(result: Evaluation) -> list[float]:
    """What a site adds to the federation's validation metrics: example-weighted sums
    (AUC over the sites where it is defined: a site with one class has none)."""
    with_auc = result.n if np.isfinite(result.auc) else 0
    return [
        result.n,
        result.n * result.loss,
        result.n * result.accuracy,
        with_auc,
        with_auc * (result.auc if with_auc else 0.0),
    ]


def metrics_from_sums(sums: np.ndarray) -> dict[str, float]:
    n, loss, accuracy, with_auc, auc = sums
    return {
        METRIC_VAL_LOSS: float(loss / n),
        METRIC_VAL_AUC: float(auc / with_auc) if with_auc > 0 else float("nan"),
        METRIC_VAL_ACCURACY: float(accuracy / n),
    }


PARAMS_LENGTH = N_FEATURES + 1


def train_vector(updated: Params, n: int, train_loss: float, before: Evaluation) -> np.ndarray:
    """n·(the updated model), then [n, n·loss] on the training split, then the validation
    sums of the incoming model, all scaled: their sum is FedAvg's example-weighted average
    without any site's n in clear."""
    metrics = [n, n * train_loss, *evaluation_sums(before)]
    return np.concatenate([n * np.concatenate(updated.to_arrays()), metrics]) / MAX_ROWS


def evaluate_vector(result: Evaluation, champion: Evaluation | None = None) -> np.ndarray:
    """The final model's validation sums, then the serving champion's on the same rows when
    the server sent it (the promotion gate compares like with like, SPEC §4)."""
    sums = evaluation_sums(result) + (evaluation_sums(champion) if champion is not None else [])
    return np.array(sums) / MAX_ROWS


def final_metrics_from_sum(total: np.ndarray) -> dict[str, float]:
    """The federation's final validation metrics, and the champion's when it was evaluated."""
    sums = total * MAX_ROWS
    metrics = metrics_from_sums(sums[:EVALUATION_SUMS])
    if sums.size > EVALUATION_SUMS:
        champion = metrics_from_sums(sums[EVALUATION_SUMS:])
        metrics |= {name: champion[val] for val, name in zip(VAL_METRICS, CHAMPION_VAL_METRICS, strict=True)}
    return metrics


@dataclass(frozen=True)
class RoundSum:
    params: Params  # the example-weighted average of the sites' updated models
    train_loss: float
    validation: dict[str, float]  # of the model the round started from


def round_from_sum(total: np.ndarray) -> RoundSum:
    total = total * MAX_ROWS
    weighted_params, metrics = total[:PARAMS_LENGTH], total[PARAMS_LENGTH:]
    average = weighted_params / metrics[0]
    return RoundSum(
        params=Params(average[:N_FEATURES], float(average[N_FEATURES])),
        train_loss=float(metrics[1] / metrics[0]),
        validation=metrics_from_sums(metrics[2:]),
    )


# ---- the server side: one SecAgg+ protocol run per sum ------------------------------


class SecureAggregationError(RuntimeError):
    pass


@dataclass(frozen=True)
class SecureSum:
    total: np.ndarray
    sites: list[str]
    nodes: set[int]  # the nodes whose vectors are in the sum


class SecureAggregation:
    """Runs SecAgg+ over the sites the grid offers, one secure sum at a time."""

    def __init__(self, grid: Grid, context: Context, settings: RunConfig) -> None:
        self.grid = grid
        self.settings = settings
        self.strategy = _SumStrategy(settings.min_sites)
        self.proxies: dict[int, GridClientProxy] = {}
        self.context = LegacyContext(
            context,
            config=ServerConfig(num_rounds=settings.num_server_rounds),
            strategy=self.strategy,
            client_manager=SimpleClientManager(),
        )
        common: dict[str, Any] = {
            # Every site holds a share of every other's keys; any two thirds of them
            # (at least two sites) recover the masks of a site that drops out.
            "num_shares": 1.0,
            "reconstruction_threshold": 2 / 3,
            # Weight 1 for every site: the weight travels in clear (counts stay masked).
            "max_weight": 1.0,
            "quantization_range": QUANTIZATION_LEVELS,
            "modulus_range": MODULUS,
            "timeout": settings.round_timeout_seconds,
        }
        self._scaled = SecAggPlusWorkflow(clipping_range=SCALED_RANGE, **common)
        self._params = SecAggPlusWorkflow(clipping_range=PARAMS_RANGE, **common)

    def _sample_from(self, nodes: set[int]) -> None:
        """The client manager the workflow samples from holds exactly `nodes`."""
        manager = self.context.client_manager
        for node in set(self.proxies) - nodes:
            manager.unregister(self.proxies.pop(node))
        for node in nodes - set(self.proxies):
            self.proxies[node] = GridClientProxy(node_id=node, grid=self.grid, run_id=self.context.run_id)
            manager.register(self.proxies[node])
        self.strategy.min_fit_clients = self.strategy.min_available_clients = len(nodes)

    def sum(
        self, phase: Phase, server_round: int, arrays: list[np.ndarray], config: Mapping[str, Scalar]
    ) -> SecureSum:
        """The sum over sites of the vector `phase` asks for; `arrays` and `config` are
        what each site is sent (the global model, the standardisation)."""
        self._sample_from(set(self.grid.get_node_ids()))
        state = self.context.state
        state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
        state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters(arrays), keep_input=True
        )
        self.strategy.start(phase, server_round, config)
        workflow = self._params if phase is Phase.TRAIN else self._scaled
        workflow(self.grid, self.context)
        result = self.strategy.result
        if result is None:
            raise SecureAggregationError(
                f"secure aggregation of {phase} (round {server_round}) did not complete"
            )
        if len(result.sites) < self.settings.min_sites:
            raise SecureAggregationError(
                f"secure aggregation of {phase}: only {len(result.sites)} sites took part; "
                f"{self.settings.min_sites} required"
            )
        return result


class _SumStrategy(LegacyFedAvg):
    """The legacy strategy SecAggPlusWorkflow drives: hands each site its instruction and
    turns the unmasked average (weight 1 per site) back into the sum."""

    def __init__(self, sites: int) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=sites,
            min_available_clients=sites,
            on_fit_config_fn=self._fit_config,
        )
        self.instruction: dict[str, Scalar] = {}
        self.result: SecureSum | None = None

    def start(self, phase: Phase, server_round: int, config: Mapping[str, Scalar]) -> None:
        self.instruction = {**config, PHASE: str(phase), SERVER_ROUND: server_round}
        self.result = None

    def _fit_config(self, server_round: int) -> dict[str, Scalar]:
        return dict(self.instruction)

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:
            return None, {}
        # The workflow gives every result the same unmasked average (weights are all 1).
        average = parameters_to_ndarrays(results[0][1].parameters)[0]
        self.result = SecureSum(
            total=average * len(results),
            sites=sorted(str(fit.metrics.get(SITE, "")) for _, fit in results),
            nodes={int(proxy.node_id) for proxy, _ in results},
        )
        return ndarrays_to_parameters([self.result.total]), {}
