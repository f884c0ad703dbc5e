"""Drift check time for 100k rows × 11 features per site: the drift score that decides,
Evidently's per-column detail beside it, and Evidently's defaults as the anchor.

Each site gets a 100k-row reference and a 100k-row current set from the generator (a
smoke episode over all current days of the first site) and a champion trained on its
reference (healthrisk.federated.inprocess). The product's check is the score plus
Evidently's Report + DataDriftPreset with the calibrated options, including writing its
HTML; it must find drift at the smoke site and only there, at the default threshold.

    .venv/bin/python benchmarks/drift.py [--rows 100000] [--sites 3]

Last line: `drift: seconds_100k_rows=<mean wall s per site, score + Evidently> sites=<n>`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD
from healthrisk.data.generator import PROFILES, site_name, site_rows
from healthrisk.data.loader import SiteData
from healthrisk.data.window import DateWindow
from healthrisk.drift.check import DriftOptions, frame, run_report
from healthrisk.drift.score import Window, drift_score
from healthrisk.federated.inprocess import train_in_process
from healthrisk.schema import FEATURE_NAMES

START = dt.date(2020, 1, 1)


def rows(site: int, count: int, first_day: dt.date, smoke: bool) -> tuple[SiteData, dt.date]:
    """At least `count` rows of consecutive days from `first_day`; returns them and the next day."""
    days = int(count / (PROFILES[site % len(PROFILES)].rows_per_day * 0.9)) + 1
    last = first_day + dt.timedelta(days=days - 1)
    data = site_rows(42, site, DateWindow(first_day, last), ["smoke"] if smoke else [])
    assert data.n_rows >= count
    return data, last + dt.timedelta(days=1)


def window(data: SiteData, count: int) -> Window:
    assert data.labels is not None
    return Window(data.features[:count], data.days[:count], data.labels[:count].astype(np.float64))


@dataclass(frozen=True)
class Timing:
    wall: list[float]
    cpu: list[float]

    def add(self, started: float, cpu_started: float) -> None:
        self.wall.append(time.perf_counter() - started)
        self.cpu.append(time.process_time() - cpu_started)

    @property
    def mean(self) -> float:
        return float(np.mean(self.wall))

    @property
    def cpu_mean(self) -> float:
        return float(np.mean(self.cpu))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows per site in reference and in current")
    parser.add_argument("--sites", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Evidently's pandas/plotly deprecation chatter

    references, currents = [], []
    for index in range(args.sites):
        reference, next_day = rows(index, args.rows, START, smoke=False)
        current, _ = rows(index, args.rows, next_day, smoke=index == 0)
        references.append(reference)
        currents.append(current)
    champion = train_in_process({site_name(i): r for i, r in enumerate(references)})
    print(f"{args.sites} sites × {args.rows} rows × {len(FEATURE_NAMES)} features (reference and current)")
    print(f"smoke at {site_name(0)}; drift = drift score ≥ {DEFAULT_DRIFT_THRESHOLD}")

    score_time, detail_time, anchor_time = Timing([], []), Timing([], []), Timing([], [])
    detected = []
    with tempfile.TemporaryDirectory() as tmp:
        # Imports and plotly templates load once, outside the timing.
        run_report(
            frame(references[0].features[:2000]), frame(currents[0].features[:2000]), options=DriftOptions()
        )
        for index, (reference, current) in enumerate(zip(references, currents, strict=True)):
            started, cpu = time.perf_counter(), time.process_time()
            score = drift_score(champion, window(reference, args.rows), window(current, args.rows))
            score_time.add(started, cpu)
            detected.append(score.score >= DEFAULT_DRIFT_THRESHOLD)
            ref, cur = frame(reference.features[: args.rows]), frame(current.features[: args.rows])
            for options, timing, name in (
                (DriftOptions.calibrated(), detail_time, "calibrated"),
                (DriftOptions.evidently_defaults(), anchor_time, "defaults"),
            ):
                started, cpu = time.perf_counter(), time.process_time()
                _, _, snapshot = run_report(ref, cur, options=options)
                snapshot.save_html(str(Path(tmp) / f"{name}_{index}.html"))
                timing.add(started, cpu)

    check = [s + e for s, e in zip(score_time.wall, detail_time.wall, strict=True)]
    correct = detected[0] and not any(detected[1:])
    found = ", ".join(site_name(i) for i, d in enumerate(detected) if d) or "none"
    # CPU seconds beside wall seconds: on a shared 2-core machine the wall clock also
    # counts other processes' turns, the CPU time only this check's work.
    lines = [
        ("drift score (decides)", score_time.mean, score_time.cpu_mean),
        ("Evidently detail, calibrated PSI, 20k sample", detail_time.mean, detail_time.cpu_mean),
        ("product check = score + detail", float(np.mean(check)), score_time.cpu_mean + detail_time.cpu_mean),
        ("anchor: Evidently defaults, all rows", anchor_time.mean, anchor_time.cpu_mean),
    ]
    print(f"{'part of a check':<46}{'s/site':>8}{'cpu s/site':>12}")
    for name, wall, cpu_seconds in lines:
        print(f"{name:<46}{wall:>8.2f}{cpu_seconds:>12.2f}")
    print(f"drift found at: {found} ({'ok' if correct else 'WRONG'})")
    print(f"uptime: load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"drift: seconds_100k_rows={np.mean(check):.2f} sites={args.sites}")


if __name__ == "__main__":
    main()
