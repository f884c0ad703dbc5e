"""Read a site's daily files for a date window, refusing anything that breaks the schema.

Layout: `<root>/<site>/<YYYY-MM-DD>.parquet` (or `.csv`), one file a day. Built on
pyarrow alone so that the Flower ClientApp, which starts a fresh process for every
message, does not pay for importing pandas.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from healthrisk.data.window import DateWindow
from healthrisk.schema import FEATURE_NAMES, FEATURES, LABEL

SUFFIXES = (".parquet", ".csv")


class DataError(ValueError):
    """Site data that cannot be used; the message says which file and why."""


class SchemaError(DataError):
    def __init__(self, path: Path, column: str, rule: str) -> None:
        super().__init__(f"{path}: column {column!r}: {rule}")
        self.path = path
        self.column = column
        self.rule = rule


@dataclass(frozen=True)
class SiteData:
    """Validated rows of one site as float arrays (X in schema order, y as 0/1)."""

    site: str
    window: DateWindow
    files: tuple[Path, ...]
    features: np.ndarray
    labels: np.ndarray | None

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])


def day_file(root: Path, site: str, day: dt.date) -> Path | None:
    for suffix in SUFFIXES:
        path = root / site / f"{day.isoformat()}{suffix}"
        if path.exists():
            return path
    return None


def list_sites(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def window_files(root: Path, site: str, window: DateWindow) -> list[Path]:
    site_dir = root / site
    if not site_dir.is_dir():
        raise DataError(f"site {site!r} has no data directory {site_dir}")
    files = [f for day in window.days() if (f := day_file(root, site, day)) is not None]
    if not files:
        raise DataError(f"site {site!r} has no data files in {site_dir} for {window}")
    return files


def read_table(path: Path) -> pa.Table:
    try:
        if path.suffix == ".csv":
            return pacsv.read_csv(path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot be read as {path.suffix[1:]}: {exc}") from exc


def validate_table(path: Path, table: pa.Table, *, require_label: bool) -> None:
    """Raise SchemaError naming the file, the column and the rule broken."""
    names = set(table.column_names)
    required = list(FEATURE_NAMES) + ([LABEL] if require_label else [])
    for column in required:
        if column not in names:
            raise SchemaError(path, column, "required column is missing")
    for feature in FEATURES:
        column = table.column(feature.name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise SchemaError(path, feature.name, f"must be numeric, found {column.type}")
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        if values.size and not np.isfinite(values).all():
            raise SchemaError(path, feature.name, "must be a finite number (no null, NaN, Infinity)")
        if values.size and (values.min() < feature.minimum or values.max() > feature.maximum):
            bad = int(((values < feature.minimum) | (values > feature.maximum)).sum())
            raise SchemaError(path, feature.name, f"{feature.rule()} ({bad} rows outside)")
    if LABEL in names:
        label = table.column(LABEL)
        if label.null_count or not pc.all(pc.is_in(label, pa.array([0, 1]))).as_py():
            raise SchemaError(path, LABEL, "must be 0 or 1 in every row")


def load_site(root: Path | str, site: str, window: DateWindow, *, require_label: bool = True) -> SiteData:
    """Load and validate every daily file of `site` in `window`."""
    root = Path(root)
    files = window_files(root, site, window)
    blocks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for path in files:
        table = read_table(path)
        validate_table(path, table, require_label=require_label)
        blocks.append(
            np.column_stack(
                [table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in FEATURE_NAMES]
            )
        )
        if require_label:
            labels.append(table.column(LABEL).to_numpy(zero_copy_only=False).astype(np.int8))
    return SiteData(
        site=site,
        window=window,
        files=tuple(files),
        features=np.vstack(blocks),
        labels=np.concatenate(labels) if require_label else None,
    )


def write_day(path: Path, table: pa.Table) -> None:
    """Write one day atomically: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix == ".csv":
            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
