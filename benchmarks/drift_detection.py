"""Detection quality of the drift score at the default threshold (SPEC §10, issue 15 point 6).

Per seed: 3 sites of the generator, a champion trained as `healthrisk train` trains it
(healthrisk.federated.inprocess: FedAvg, run-config defaults) on a 14-day reference; then
for every scenario × site × current window of k ∈ {1, 3, 7} days right after the
reference, that site's drift score (healthrisk.drift.score), the scenario injected at the
checked site only. Whether a scenario should fire follows the rule of the score's design
(`SHOULD_FIRE`): a shift that moves the champion's predictions, or that a refit on the new
labelled days would re-weight, fires; one the model ignores does not; corrupted labels do
not (retraining cannot fix them: the champion's AUC and calibration slope on the new days
show them instead). Evidently's share rule (the old verdict) is shown beside it on the
first `--evidently-seeds` seeds.

    .venv/bin/python benchmarks/drift_detection.py [--seeds 20] [--evidently-seeds 3]

Last line: `drift_detection: tpr=<x> fpr=<y> seeds=<n> threshold=0.5` — tpr over the product's
should-fire scenarios (smoke, firmware), fpr over quiet windows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD
from healthrisk.data.generator import site_name, site_rows
from healthrisk.data.loader import SiteData
from healthrisk.data.window import DateWindow
from healthrisk.drift.check import DriftOptions, frame, run_report
from healthrisk.drift.score import Window, drift_score
from healthrisk.federated.inprocess import train_in_process

START = dt.date(2024, 1, 1)
REFERENCE_DAYS = 14
N_SITES = 3
CURRENT_DAYS = (1, 3, 7)
SHOULD_FIRE = {
    "quiet": False,
    "smoke": True,  # moves the champion's predictions (+2-4 log-odds), and it mispredicts them
    "firmware": True,  # moves the champion's predictions (+0.8-0.9 log-odds)
    "heatwave": False,  # a shift the model barely weighs (~0.1 log-odds)
    "label-noise": False,  # retraining cannot fix corrupted labels
    "concept": True,  # the risk law changed: a refit re-weights the features
    "sensor": True,  # moves the champion's predictions like firmware
}
PRODUCT_SCENARIOS = ("quiet", "smoke", "firmware", "heatwave", "label-noise")


def rows(seed: int, site: int, days: range, kind: str | None) -> SiteData:
    """The generator's rows of `days` (offsets from START) at one site, in memory."""
    window = DateWindow(START + dt.timedelta(days=days.start), START + dt.timedelta(days=days.stop - 1))
    return site_rows(seed, site, window, [kind] if kind else [])


def as_window(data: SiteData) -> Window:
    assert data.labels is not None
    return Window(data.features, data.days, data.labels.astype(np.float64))


@dataclass(frozen=True)
class Check:
    seed: int
    scenario: str
    site: int
    days: int
    score: float
    prediction: float
    refit: float | None
    cpu_seconds: float
    share: float | None  # Evidently's share of drifted columns (first seeds only)

    @property
    def should(self) -> bool:
        return SHOULD_FIRE[self.scenario]

    @property
    def fired(self) -> bool:
        return self.score >= DEFAULT_DRIFT_THRESHOLD


def run(seeds: range, evidently_seeds: int) -> list[Check]:
    options = DriftOptions.calibrated()
    checks = []
    for seed in seeds:
        reference = {s: rows(seed, s, range(REFERENCE_DAYS), None) for s in range(N_SITES)}
        champion = train_in_process({site_name(s): r for s, r in reference.items()})
        for scenario in SHOULD_FIRE:
            for site in range(N_SITES):
                for k in CURRENT_DAYS:
                    kind = None if scenario == "quiet" else scenario
                    current = rows(seed, site, range(REFERENCE_DAYS, REFERENCE_DAYS + k), kind)
                    started = time.process_time()
                    result = drift_score(champion, as_window(reference[site]), as_window(current))
                    cpu = time.process_time() - started
                    share = None
                    if seed < seeds.start + evidently_seeds and scenario in PRODUCT_SCENARIOS:
                        share, _, _ = run_report(
                            frame(reference[site].features), frame(current.features), options=options
                        )
                    checks.append(
                        Check(
                            seed,
                            scenario,
                            site,
                            k,
                            result.score,
                            result.prediction.score,
                            result.refit.score if result.refit else None,
                            cpu,
                            share,
                        )
                    )
        print(f"seed {seed}: {sum(c.seed == seed and c.fired for c in checks)} checks fired", flush=True)
    return checks


def rate(checks: list[Check]) -> float:
    return float(np.mean([c.fired for c in checks])) if checks else float("nan")


def report(checks: list[Check], n_seeds: int) -> None:
    by_scenario: dict[str, list[Check]] = defaultdict(list)
    for check in checks:
        by_scenario[check.scenario].append(check)
    print(
        f"\nthreshold {DEFAULT_DRIFT_THRESHOLD}; reference {REFERENCE_DAYS} days; "
        f"windows per scenario = {n_seeds} seeds × {N_SITES} sites × k in {CURRENT_DAYS} days"
    )
    header = (
        f"{'scenario':<12}{'should fire':>12}{'windows':>8}{'TP':>5}{'FN':>5}{'FP':>5}{'TN':>5}"
        f"  {'fired k=1 / 3 / 7':<20}{'median score':>12}{'share>=0.5 (old rule)':>23}"
    )
    print(header)
    for scenario, group in by_scenario.items():
        should = SHOULD_FIRE[scenario]
        fired = sum(c.fired for c in group)
        missed = len(group) - fired
        per_k = " / ".join(f"{rate([c for c in group if c.days == k]):.2f}" for k in CURRENT_DAYS)
        shares = [c.share for c in group if c.share is not None]
        old = f"{np.mean([s >= 0.5 for s in shares]):.2f}" if shares else "-"
        print(
            f"{scenario:<12}{'yes' if should else 'no':>12}{len(group):>8}"
            f"{fired if should else 0:>5}{missed if should else 0:>5}"
            f"{0 if should else fired:>5}{0 if should else missed:>5}"
            f"  {per_k:<20}{np.median([c.score for c in group]):>12.2f}{old:>23}"
        )
    positives = [c for c in checks if c.scenario in PRODUCT_SCENARIOS and c.should]
    quiet = by_scenario["quiet"]
    every_positive = [c for c in checks if c.should]
    cpu = [c.cpu_seconds for c in checks]
    print(
        f"with concept and sensor: tpr={rate(every_positive):.3f}; fired on heatwave "
        f"{rate(by_scenario['heatwave']):.3f}, on label-noise {rate(by_scenario['label-noise']):.3f}"
    )
    print(f"score CPU per check: median {np.median(cpu) * 1000:.1f} ms, max {max(cpu) * 1000:.1f} ms")
    print(f"uptime: load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        f"drift_detection: tpr={rate(positives):.3f} fpr={rate(quiet):.3f} seeds={n_seeds} "
        f"threshold={DEFAULT_DRIFT_THRESHOLD}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--evidently-seeds", type=int, default=3, help="seeds that also run Evidently")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Evidently's and scipy's, on tiny windows
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    report(run(seeds, args.evidently_seeds), args.seeds)


if __name__ == "__main__":
    main()
