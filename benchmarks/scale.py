"""How the embedded platform scales: sites × rows per site on one machine.

For each cell of the grid (sites × rows per site, generated over 10 days) a real federated
run (SuperLink, one `healthrisk-supernode` per site, a real MLflow server) measures seconds
per round and the peak RSS (VmHWM) of each SuperNode, of the SuperLink and of the ServerApp;
per rows value, the drift check of one site (5 days against 5) and the registration of the
trained model are timed too. The 3-site cell with the fewest rows is also run with Flower's
stock `flower-supernode` (a ClientApp process per message), side by side.

A cell whose predicted wall time (a fit of the cells done: fixed + per site + per site·row) exceeds
`--max-cell-seconds`, or whose predicted memory exceeds what the machine has available, is
not started; the table says which and why. Fits of time and memory against sites and rows
are printed, and a plot written to benchmarks/results/scale.png.

    .venv/bin/python benchmarks/scale.py [--sites 3,6,12] [--rows 10000,100000,1000000]
        [--rounds 3] [--max-cell-seconds 300]

Last line: `scale: sites=<n> rows_per_site=<m> seconds_per_round=<s> peak_rss_mb=<r>` for the
largest cell reached (peak RSS: the largest SuperNode's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np

from healthrisk.data.generator import generate_day, site_name
from healthrisk.data.loader import write_day
from healthrisk.data.window import DateWindow
from healthrisk.drift.check import check_site
from healthrisk.federated.runner import TrainingRequest, train_federated
from healthrisk.processes import descendants, free_port, mlflow_server
from healthrisk.registry import log_and_register, served_model

DAYS = 10
WINDOW = DateWindow(dt.date(2024, 1, 1), dt.date(2024, 1, DAYS))
REFERENCE, CURRENT = DateWindow.parse("2024-01-01..2024-01-05"), DateWindow.parse("2024-01-06..2024-01-10")
RESULTS = Path(__file__).resolve().parent / "results"
# Which process a command line belongs to (the first match wins).
ROLES = (
    ("healthrisk-supernode", "supernode"),
    ("flower-supernode", "supernode"),
    ("flwr-clientapp", "clientapp"),
    ("flower-superlink", "superlink"),
    ("flwr-serverapp", "serverapp"),
)


@dataclass
class Cell:
    sites: int
    rows: int
    supernode: str = "healthrisk"
    seconds_per_round: float = float("nan")
    wall_seconds: float = float("nan")
    peak_mb: dict[str, float] = field(default_factory=dict)  # role → largest VmHWM
    skipped: str = ""

    @property
    def total_rows(self) -> int:
        return self.sites * self.rows


class PeakRss:
    """Samples VmHWM (a process's peak RSS) of our Flower descendants until stopped."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import os

        while not self._stop.is_set():
            for pid in descendants(os.getpid()):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                role = next((r for marker, r in ROLES if marker in cmdline), None)
                hwm = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
                if role is not None and hwm is not None:
                    mb = int(hwm.split()[1]) / 1024
                    self.peaks[pid] = (role, max(mb, self.peaks.get(pid, (role, 0.0))[1]))
            self._stop.wait(self.interval)

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for role, mb in self.peaks.values():
            out[role] = max(out.get(role, 0.0), mb)
        return out

    @contextmanager
    def sampling(self) -> Iterator[PeakRss]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def ensure_sites(root: Path, n_sites: int, rows: int) -> None:
    """Sites 1..n with `rows` rows each over WINDOW, generating only those not there yet."""
    for index in range(n_sites):
        site_dir = root / site_name(index)
        if site_dir.is_dir():
            continue
        for day in WINDOW.days():
            write_day(site_dir / f"{day}.parquet", generate_day(42, index, day, rows_per_day=rows // DAYS))


def run_cell(cell: Cell, root: Path, uri: str, work: Path, rounds: int, timeout: float) -> None:
    name = f"scale-{cell.sites}x{cell.rows}-{cell.supernode}"
    started = time.perf_counter()
    with PeakRss().sampling() as rss:
        result = train_federated(
            TrainingRequest(
                data_root=root,
                sites=[site_name(i) for i in range(cell.sites)],
                window=WINDOW,
                tracking_uri=uri,
                rounds=rounds,
                registered_name=name,
                work_dir=work,
                superlink_port=0,
                timeout_seconds=timeout,
                stock_supernode=cell.supernode == "stock",
            )
        )
    cell.wall_seconds = time.perf_counter() - started
    cell.seconds_per_round = result.seconds_per_round
    cell.peak_mb = rss.by_role()


def registration_seconds(uri: str, name: str) -> float:
    """Log and register an already trained pipeline again, as the ServerApp does at the end."""
    mlflow.set_tracking_uri(uri)
    pipeline = mlflow.sklearn.load_model(f"models:/{name}/1")
    with mlflow.start_run(run_name="registration-timing"):
        started = time.perf_counter()
        log_and_register(pipeline, registered_name=f"{name}-again", tags={})
        return time.perf_counter() - started


def drift_seconds(root: Path, uri: str, name: str) -> float:
    """One site's drift check (5 days against 5) for the cell's trained model as champion."""
    champion = served_model(mlflow.MlflowClient(uri), name, "1")
    started = time.perf_counter()
    check_site(root, site_name(0), reference=REFERENCE, current=CURRENT, threshold=0.5, champion=champion)
    return time.perf_counter() - started


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares y ≈ x @ coef (x with a column of ones for the intercept), and R²."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    total = float(((y - y.mean()) ** 2).sum())
    return coef, 1.0 - float((residual**2).sum()) / total if total else float("nan")


def time_terms(sites: int, rows: int) -> list[float]:
    """The model of a cell's time: fixed + per site + per row processed (sites · rows)."""
    return [1.0, float(sites), float(sites) * rows]


def skip_reason(cell: Cell, done: list[Cell], max_seconds: float) -> str:
    # Sites and rows fitted apart: a fit in total rows alone reads the cost of more sites as
    # the cost of more rows. Until the cells done vary in both, there is nothing to fit.
    if len({c.sites for c in done}) < 2 or len({c.rows for c in done}) < 2:
        return ""
    coef, _ = linear_fit(
        np.array([time_terms(c.sites, c.rows) for c in done]), np.array([c.wall_seconds for c in done])
    )
    predicted = float(np.array(time_terms(cell.sites, cell.rows)) @ coef)
    if predicted > max_seconds:
        return f"predicted {predicted:.0f} s > {max_seconds:.0f} s"
    (rss_base, rss_per_row), _ = linear_fit(
        np.array([[1.0, c.rows] for c in done]), np.array([c.peak_mb["supernode"] for c in done])
    )
    memory = cell.sites * (rss_base + rss_per_row * cell.rows)
    if memory > 0.8 * available_mb():
        return f"predicted {memory:.0f} MB of SuperNodes > 80% of {available_mb():.0f} MB available"
    return ""


def fits(cells: list[Cell]) -> list[str]:
    ok = [c for c in cells if not c.skipped and c.supernode == "healthrisk"]
    if len(ok) < 3:
        return ["too few cells for a fit"]
    sites = np.array([c.sites for c in ok], dtype=float)
    rows = np.array([c.rows for c in ok], dtype=float)
    ones = np.ones_like(sites)
    lines = []
    (a, b, c), r2 = linear_fit(
        np.array([time_terms(c.sites, c.rows) for c in ok]), np.array([c.seconds_per_round for c in ok])
    )
    lines.append(
        f"seconds_per_round ≈ {a:.2f} + {b:.3f}·sites + {c * 1e6:.3f}·(sites·rows / 1M)   R²={r2:.3f}"
    )
    (a, b), r2 = linear_fit(np.column_stack([ones, rows]), np.array([c.peak_mb["supernode"] for c in ok]))
    lines.append(f"supernode_peak_mb ≈ {a:.0f} + {b * 1e6:.1f}·(rows / 1M)   R²={r2:.3f}")
    (a, b), r2 = linear_fit(np.column_stack([ones, sites]), np.array([c.peak_mb["superlink"] for c in ok]))
    lines.append(f"superlink_peak_mb ≈ {a:.0f} + {b:.1f}·sites   R²={r2:.3f}")
    for n in sorted(set(sites.astype(int))):
        at = [c for c in ok if c.sites == n]
        if len(at) >= 2:
            slope = np.polyfit(np.log([c.rows for c in at]), np.log([c.seconds_per_round for c in at]), 1)[0]
            lines.append(f"sites={n}: seconds_per_round ∝ rows^{slope:.2f} (log-log slope; 1 = linear)")
    return lines


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n in sorted({c.sites for c in cells}):
        done = [c for c in cells if c.sites == n and not c.skipped and c.supernode == "healthrisk"]
        if not done:
            continue
        rows = [c.rows for c in done]
        time_ax.plot(rows, [c.seconds_per_round for c in done], "o-", label=f"{n} sites")
        rss_ax.plot(rows, [c.peak_mb["supernode"] for c in done], "o-", label=f"{n} sites: SuperNode")
        rss_ax.plot(rows, [c.peak_mb["superlink"] for c in done], "x--", label=f"{n} sites: SuperLink")
    for stock in (c for c in cells if c.supernode == "stock" and not c.skipped):
        time_ax.plot(
            [stock.rows], [stock.seconds_per_round], "k^", label=f"{stock.sites} sites, stock SuperNode"
        )
    for ax, label in ((time_ax, "seconds per round"), (rss_ax, "peak RSS per process (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("rows per site")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"health-risk embedded federation, 2 cores (load: {uptime()})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", default="3,6,12")
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-cell-seconds", type=float, default=300.0)
    parser.add_argument("--plot", type=Path, default=RESULTS / "scale.png")
    args = parser.parse_args()
    sites = sorted(int(s) for s in args.sites.split(","))
    rows = sorted(int(r) for r in args.rows.split(","))
    cells = [Cell(sites[0], rows[0], supernode="stock")] + [Cell(s, r) for r in rows for s in sites]
    done: list[Cell] = []
    drift: dict[int, float] = {}
    registration: dict[int, float] = {}
    print(uptime(), flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="hr-scale-") as tmp,
        mlflow_server(Path(tmp) / "mlflow", free_port()) as uri,
    ):
        for cell in cells:
            cell.skipped = skip_reason(cell, done, args.max_cell_seconds)
            if cell.skipped:
                print(f"skip sites={cell.sites} rows={cell.rows}: {cell.skipped}", flush=True)
                continue
            root = Path(tmp) / f"rows-{cell.rows}"
            ensure_sites(root, cell.sites, cell.rows)
            try:
                run_cell(
                    cell, root, uri, Path(tmp) / "flower", args.rounds, timeout=3 * args.max_cell_seconds
                )
            except Exception as exc:  # a cell that fails or times out ends the grid's growth, not the report
                cell.skipped = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                print(f"sites={cell.sites} rows={cell.rows}: {cell.skipped}", flush=True)
                continue
            if cell.supernode == "healthrisk":
                done.append(cell)
                if cell.rows not in drift:
                    name = f"scale-{cell.sites}x{cell.rows}-healthrisk"
                    drift[cell.rows] = drift_seconds(root, uri, name)
                    registration[cell.rows] = registration_seconds(uri, name)
            print(
                f"sites={cell.sites} rows={cell.rows} supernode={cell.supernode} "
                f"s/round={cell.seconds_per_round:.2f} wall={cell.wall_seconds:.0f}s "
                f"peak_mb={ {k: round(v) for k, v in cell.peak_mb.items()} }   [{uptime()}]",
                flush=True,
            )

    print()
    print(f"{'sites':>5} {'rows/site':>10} {'supernode':>10} {'s/round':>8} {'SuperNode MB':>13} "
          f"{'SuperLink MB':>13} {'ServerApp MB':>13} {'drift s/site':>13} {'register s':>11}")  # fmt: skip
    for c in cells:
        if c.skipped:
            print(f"{c.sites:>5} {c.rows:>10} {c.supernode:>10}   not run: {c.skipped}")
            continue
        drift_s = f"{drift[c.rows]:.2f}" if c.rows in drift else "-"
        register_s = f"{registration[c.rows]:.2f}" if c.rows in registration else "-"
        mb = [c.peak_mb.get(role, float("nan")) for role in ("supernode", "superlink", "serverapp")]
        print(
            f"{c.sites:>5} {c.rows:>10} {c.supernode:>10} {c.seconds_per_round:>8.2f} "
            f"{mb[0]:>13.0f} {mb[1]:>13.0f} {mb[2]:>13.0f} {drift_s:>13} {register_s:>11}"
        )
    print()
    for line in fits(cells):
        print(line)
    plot(cells, args.plot)
    print(f"plot: {args.plot}")
    print(uptime())
    if not done:
        raise SystemExit("scale: no cell completed")
    largest = max(done, key=lambda c: (c.total_rows, c.sites))
    print(
        f"scale: sites={largest.sites} rows_per_site={largest.rows} "
        f"seconds_per_round={largest.seconds_per_round:.2f} peak_rss_mb={largest.peak_mb['supernode']:.0f}"
    )


if __name__ == "__main__":
    main()
