"""How often the promotion gate promotes a retrain, per scenario (issue 15 points 3 and 7).

The gate (SPEC §4) compares the new version with the serving champion on the same
federated validation rows of the new run: each site evaluates both, the AUCs are weighted
by validation rows, and the new version is promoted if its AUC ≥ the champion's −
maxAucDrop (default 0). Per seed: a champion trained on 14 days at 3 sites; a new day
(`--new-days`) arrives at every site with the scenario at one site; the retrain trains on
all 15 (healthrisk.federated.inprocess: the same numbers as a real run). `fedprox-mu10`
retrains the same 14 days with FedProx at the CRD's largest proximalMu (10): each local
step is pulled back to the global model, so the model it registers is under-trained.

Which scenarios the tests may rely on: those whose rate is 1.00 or 0.00 here. A retrain
that cannot learn anything new (quiet days, a shift the risk law follows) promotes about
half the time: the two models differ by noise.

    .venv/bin/python benchmarks/promotion_gate.py [--seeds 20] [--rounds 3,5] [--first-seed 0]

(`--first-seed 42 --seeds 1 --rounds 3`: the data and rounds of the end-to-end tests.)

Last line: `promotion_gate: smoke_promoted=<rate> fedprox_rejected=<rate> seeds=<n> rounds=<r>`
(for the first of --rounds).
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Mapping

import numpy as np
from drift_detection import REFERENCE_DAYS, rows

from healthrisk.data.generator import site_name
from healthrisk.data.loader import SiteData
from healthrisk.data.window import DateWindow
from healthrisk.federated.inprocess import federated_evaluation, train_in_process, validation
from healthrisk.federated.model import ServedModel
from healthrisk.federated.server_app import weighted

N_SITES = 3
# scenario -> (kind, site index) of the new days; None: no drift anywhere
SCENARIOS: dict[str, tuple[str, int] | None] = {
    "quiet": None,
    "smoke@hospital_01": ("smoke", 0),
    "smoke@hospital_02": ("smoke", 1),
    "firmware@hospital_01": ("firmware", 0),
    "heatwave@hospital_03": ("heatwave", 2),
    "label-noise@hospital_02": ("label-noise", 1),
    "concept@hospital_02": ("concept", 1),
    "sensor@hospital_01": ("sensor", 0),
}
FEDPROX = "fedprox-mu10 (spec change)"


def auc_on(model: ServedModel, sites: Mapping[str, SiteData]) -> float:
    """The weighted federated validation AUC of `model` on these sites' validation rows."""
    results = federated_evaluation(model, validation(sites))
    return weighted([{"auc": r.auc, "n": r.n} for r in results.values()], ["auc"], "n")["auc"]


def margins(seeds: range, rounds: int, new_days: int) -> dict[str, list[float]]:
    """challenger AUC − champion AUC on the new run's validation rows, per scenario and seed."""
    out: dict[str, list[float]] = {name: [] for name in [*SCENARIOS, FEDPROX]}
    for seed in seeds:
        old = {site_name(s): rows(seed, s, range(REFERENCE_DAYS), None) for s in range(N_SITES)}
        champion = train_in_process(old, rounds=rounds)
        for name, drift in SCENARIOS.items():
            window = range(REFERENCE_DAYS + new_days)
            new = {
                site_name(s): rows(seed, s, window, None)
                if drift is None or drift[1] != s
                else _with_new_days(seed, s, new_days, drift[0])
                for s in range(N_SITES)
            }
            challenger = train_in_process(new, rounds=rounds)
            out[name].append(auc_on(challenger, new) - auc_on(champion, new))
        underfit = train_in_process(old, rounds=rounds, proximal_mu=10.0)
        out[FEDPROX].append(auc_on(underfit, old) - auc_on(champion, old))
    return out


def _with_new_days(seed: int, site: int, new_days: int, kind: str) -> SiteData:
    before = rows(seed, site, range(REFERENCE_DAYS), None)
    after = rows(seed, site, range(REFERENCE_DAYS, REFERENCE_DAYS + new_days), kind)
    assert before.labels is not None and after.labels is not None
    return SiteData(
        site=before.site,
        window=DateWindow(before.window.start, after.window.end),
        files=(),
        features=np.vstack([before.features, after.features]),
        labels=np.concatenate([before.labels, after.labels]),
        days=np.concatenate([before.days, after.days]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--rounds", default="3,5", help="federated rounds (the e2e uses 3, the CRD default 5)"
    )
    parser.add_argument("--new-days", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    summary: dict[int, dict[str, list[float]]] = {}
    for rounds in (int(r) for r in args.rounds.split(",")):
        summary[rounds] = results = margins(seeds, rounds, args.new_days)
        print(f"\n{rounds} rounds, {args.new_days} new day(s), {args.seeds} seeds: promoted if margin >= 0")
        print(f"{'scenario':<28}{'promoted':>9}{'mean margin':>13}{'min':>9}{'max':>9}")
        for name, values in results.items():
            array = np.asarray(values)
            print(
                f"{name:<28}{np.mean(array >= 0):>9.2f}{array.mean():>+13.4f}"
                f"{array.min():>+9.4f}{array.max():>+9.4f}"
            )
    first = next(iter(summary))
    smoke = np.mean(np.asarray(summary[first]["smoke@hospital_01"]) >= 0)
    fedprox = np.mean(np.asarray(summary[first][FEDPROX]) < 0)
    print(f"uptime: load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        f"promotion_gate: smoke_promoted={smoke:.2f} fedprox_rejected={fedprox:.2f} "
        f"seeds={args.seeds} rounds={first}"
    )


if __name__ == "__main__":
    main()
