"""Drift check time for 100k rows × 11 features per site, Evidently's defaults vs tuned options.

Each site gets a 100k-row reference and a 100k-row current set from the generator (a
smoke episode over all current days of the first site). Every option set runs the same
Evidently Report + DataDriftPreset a site runs, including writing its HTML, and must still
find drift at the smoke site and only there. The last line is the product's default
(`DriftOptions.calibrated()`): `drift: seconds_100k_rows=<mean s per site> sites=<n>`.

    .venv/bin/python benchmarks/drift.py [--rows 100000] [--sites 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from healthrisk.data.generator import generate_day, site_name
from healthrisk.drift.check import CALIBRATED_MAX_ROWS, DriftOptions, frame, run_report
from healthrisk.schema import FEATURE_NAMES

START = dt.date(2020, 1, 1)
# Smoke moves 2 of 11 features; see tests/drift for why the share threshold is not 0.5.
SHARE_THRESHOLD = 0.15


def site_rows(site_index: int, rows: int, first_day: dt.date, smoke: bool) -> tuple[np.ndarray, dt.date]:
    """`rows` rows of consecutive days from `first_day`; returns them and the next day."""
    blocks, total, day = [], 0, first_day
    while total < rows:
        table = generate_day(42, site_index, day, ["smoke"] if smoke else [])
        blocks.append(np.column_stack([table.column(n).to_numpy() for n in FEATURE_NAMES]))
        total += table.num_rows
        day += dt.timedelta(days=1)
    return np.vstack(blocks)[:rows], day


@dataclass(frozen=True)
class Outcome:
    name: str
    seconds: list[float]
    cpu_seconds: list[float]
    detected: list[bool]

    @property
    def mean(self) -> float:
        return sum(self.seconds) / len(self.seconds)

    @property
    def cpu_mean(self) -> float:
        return sum(self.cpu_seconds) / len(self.cpu_seconds)

    @property
    def correct(self) -> bool:
        return self.detected[0] and not any(self.detected[1:])


def measure(
    name: str, options: DriftOptions, data: list[tuple[np.ndarray, np.ndarray]], out: Path
) -> Outcome:
    seconds, cpu_seconds, detected = [], [], []
    for index, (reference, current) in enumerate(data):
        started, cpu_started = time.perf_counter(), time.process_time()
        share, _, snapshot = run_report(
            frame(reference), frame(current), threshold=SHARE_THRESHOLD, options=options
        )
        snapshot.save_html(str(out / f"{name.replace(' ', '_')}_{index}.html"))
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
        detected.append(share >= SHARE_THRESHOLD)
    return Outcome(name, seconds, cpu_seconds, detected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per site in reference and in current")
    parser.add_argument("--sites", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Evidently's pandas/plotly deprecation chatter

    data = []
    for index in range(args.sites):
        reference, next_day = site_rows(index, args.rows, START, smoke=False)
        current, _ = site_rows(index, args.rows, next_day, smoke=index == 0)
        data.append((reference, current))
    print(f"{args.sites} sites × {args.rows} rows × {len(FEATURE_NAMES)} features (reference and current)")
    print(f"smoke at {site_name(0)}; drift = share of drifted columns ≥ {SHARE_THRESHOLD}")

    calibrated = DriftOptions.calibrated()
    option_sets = {
        "evidently default": DriftOptions.evidently_defaults(),
        "ks, all rows": DriftOptions(per_column_method=dict.fromkeys(FEATURE_NAMES, "ks")),
        "psi calibrated, all rows": replace(calibrated, max_rows=None),
        "psi calibrated, 5k sample": replace(calibrated, max_rows=5_000),
        f"psi calibrated, {CALIBRATED_MAX_ROWS // 1000}k sample (product)": calibrated,
    }
    with tempfile.TemporaryDirectory() as tmp:
        # Imports and plotly templates load once, outside the timing.
        small = [(data[0][0][:2000], data[0][1][:2000])]
        measure("warm-up", calibrated, small, Path(tmp))
        outcomes = [measure(name, options, data, Path(tmp)) for name, options in option_sets.items()]

    width = max(len(o.name) for o in outcomes)
    # CPU seconds beside wall seconds: on a shared 2-core machine the wall clock also
    # counts other processes' turns, the CPU time only this check's work.
    print(f"{'options':<{width}}  {'s/site':>7}  {'cpu s/site':>10}  {'cpu speed-up':>12}  drift found at")
    baseline = outcomes[0].cpu_mean
    for outcome in outcomes:
        found = ", ".join(site_name(i) for i, d in enumerate(outcome.detected) if d) or "none"
        verdict = "ok" if outcome.correct else "WRONG"
        speed_up = f"{baseline / outcome.cpu_mean:.1f}×"
        print(
            f"{outcome.name:<{width}}  {outcome.mean:7.2f}  {outcome.cpu_mean:10.2f}  {speed_up:>12}  "
            f"{found} ({verdict})"
        )
    product = outcomes[-1]
    print(f"drift: seconds_100k_rows={product.mean:.2f} sites={args.sites}")


if __name__ == "__main__":
    main()
