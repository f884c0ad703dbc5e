"""Read a site's daily files for a date window, refusing anything that breaks the schema.

Layout: `<root>/<site>/<YYYY-MM-DD>.parquet` (or `.csv`), one file a day. Built on
pyarrow alone (no pandas): a site at a million rows loads in about the memory its
float64 array takes, and a ClientApp process does not pay for importing pandas.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from healthrisk.data.window import DateWindow
from healthrisk.schema import FEATURE_NAMES, FEATURES, LABEL, N_FEATURES, Feature

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
    """Validated rows of one site as float arrays (X in schema order, y as 0/1), with the
    day of each row (its file's date, as a proleptic ordinal): rows of a day share its
    weather and air, so drift checks count days, and the validation split is kept per day.

    Loaded with a hold-out rule, the held-out rows are the last `n_held_out` rows:
    `training_part`/`held_out_part` are views of the one array, not copies.
    """

    site: str
    window: DateWindow
    files: tuple[Path, ...]
    features: np.ndarray
    labels: np.ndarray | None
    days: np.ndarray
    n_held_out: int = 0

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])

    def training_part(self) -> tuple[np.ndarray, np.ndarray | None]:
        n = self.n_rows - self.n_held_out
        return self.features[:n], None if self.labels is None else self.labels[:n]

    def held_out_part(self) -> tuple[np.ndarray, np.ndarray | None]:
        n = self.n_rows - self.n_held_out
        return self.features[n:], None if self.labels is None else self.labels[n:]


def day_file(root: Path, site: str, day: dt.date) -> Path | None:
    for suffix in SUFFIXES:
        path = root / site / f"{day.isoformat()}{suffix}"
        if path.exists():
            return path
    return None


def site_days(root: Path, site: str) -> list[dt.date]:
    """The dates that have a data file at `site`, ascending (file names only; nothing is read)."""
    site_dir = root / site
    if not site_dir.is_dir():
        raise DataError(f"site {site!r} has no data directory {site_dir}")
    return sorted({day for path in site_dir.iterdir() if (day := file_day(path)) is not None})


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


def _columns(require_label: bool) -> list[str]:
    return [*FEATURE_NAMES, LABEL] if require_label else list(FEATURE_NAMES)


def _refuse_missing(path: Path, names: Iterable[str], require_label: bool) -> None:
    present = set(names)
    for column in _columns(require_label):
        if column not in present:
            raise SchemaError(path, column, "required column is missing")


def _read_error(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path}: cannot be read as {path.suffix[1:]}: {exc}")


class _DayFile:
    """One daily file: its day (its name) and row count first (parquet: from the footer),
    then the schema's columns only. A CSV has no footer: it is read whole at once and kept
    until read()."""

    def __init__(self, path: Path, require_label: bool) -> None:
        day = file_day(path)
        if day is None:
            raise DataError(f"{path}: not a daily file (YYYY-MM-DD{'/'.join(SUFFIXES)})")
        self.path, self.day = path, day
        self._csv: pa.Table | None = None
        try:
            if path.suffix == ".csv":
                self._csv = pacsv.read_csv(path)
                self.names, self.num_rows = self._csv.column_names, self._csv.num_rows
            else:
                metadata = pq.read_metadata(path)
                self.names, self.num_rows = metadata.schema.to_arrow_schema().names, metadata.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise _read_error(path, exc) from exc
        _refuse_missing(path, self.names, require_label)

    def read(self, with_label: bool) -> pa.Table:
        columns = _columns(with_label)
        if self._csv is not None:
            table, self._csv = self._csv.select(columns), None
            return table
        try:
            return pq.read_table(self.path, columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _read_error(self.path, exc) from exc


def read_table(path: Path) -> pa.Table:
    try:
        if path.suffix == ".csv":
            return pacsv.read_csv(path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _read_error(path, exc) from exc


def _feature_values(path: Path, table: pa.Table, feature: Feature) -> np.ndarray:
    """The column as float64, refused unless numeric, finite and within its hard limits."""
    column = table.column(feature.name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise SchemaError(path, feature.name, f"must be numeric, found {column.type}")
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    if values.size and not np.isfinite(values).all():
        raise SchemaError(path, feature.name, "must be a finite number (no null, NaN, Infinity)")
    if values.size and (values.min() < feature.minimum or values.max() > feature.maximum):
        bad = int(((values < feature.minimum) | (values > feature.maximum)).sum())
        raise SchemaError(path, feature.name, f"{feature.rule()} ({bad} rows outside)")
    return values


def _label_values(path: Path, table: pa.Table) -> np.ndarray:
    label = table.column(LABEL)
    if label.null_count or not pc.all(pc.is_in(label, pa.array([0, 1]))).as_py():
        raise SchemaError(path, LABEL, "must be 0 or 1 in every row")
    return np.asarray(label.to_numpy(zero_copy_only=False), dtype=np.int8)


def validate_table(path: Path, table: pa.Table, *, require_label: bool) -> None:
    """Raise SchemaError naming the file, the column and the rule broken."""
    _refuse_missing(path, table.column_names, require_label)
    for feature in FEATURES:
        _feature_values(path, table, feature)
    if LABEL in table.column_names:
        _label_values(path, table)


def file_day(path: Path) -> dt.date | None:
    """The date a daily file holds (its name), or None for a file that is not a daily file."""
    if path.suffix not in SUFFIXES:
        return None
    try:
        return dt.date.fromisoformat(path.stem)
    except ValueError:
        return None


def load_site(
    root: Path | str,
    site: str,
    window: DateWindow,
    *,
    require_label: bool = True,
    hold_out: Callable[[np.ndarray], np.ndarray] | None = None,
) -> SiteData:
    """Load and validate every daily file of `site` in `window`.

    Reads the window's files and only the schema's columns, straight into one float64
    array allocated for the row count in the files' footers: the peak is that array plus
    one day's columns. `hold_out(days)` (a boolean mask over the rows in file order, given
    each row's day) puts the masked rows last, each part keeping the files' row order.
    Without `require_label` the labels are kept when every file has them (a drift check
    uses them when they are there), else `labels` is None.
    """
    root = Path(root)
    files = [_DayFile(path, require_label) for path in window_files(root, site, window)]
    labelled = all(LABEL in f.names for f in files)
    n = sum(f.num_rows for f in files)
    file_days = np.concatenate([np.full(f.num_rows, f.day.toordinal(), dtype=np.int32) for f in files])
    features = np.empty((n, N_FEATURES), dtype=np.float64)
    labels = np.empty(n, dtype=np.int8) if labelled else None
    days = np.empty(n, dtype=np.int32)
    held_out = np.zeros(n, dtype=bool) if hold_out is None else np.asarray(hold_out(file_days), dtype=bool)
    if held_out.shape != (n,):
        raise ValueError(f"hold_out gave a mask of shape {held_out.shape} for {n} rows")
    n_held_out = int(held_out.sum())
    offset, kept, out = 0, 0, n - n_held_out  # next row in the files, in each part
    for day in files:
        table = day.read(labelled)
        if table.num_rows != day.num_rows:
            raise DataError(f"{day.path}: has {table.num_rows} rows, its footer says {day.num_rows}")
        mask = held_out[offset : offset + day.num_rows]
        keep, n_out = ~mask, int(mask.sum())
        keep_rows, out_rows = slice(kept, kept + day.num_rows - n_out), slice(out, out + n_out)
        for j, feature in enumerate(FEATURES):
            values = _feature_values(day.path, table, feature)
            features[keep_rows, j] = values[keep]
            features[out_rows, j] = values[mask]
        if labels is not None:
            values = _label_values(day.path, table)
            labels[keep_rows], labels[out_rows] = values[keep], values[mask]
        values = file_days[offset : offset + day.num_rows]
        days[keep_rows], days[out_rows] = values[keep], values[mask]
        offset, kept, out = offset + day.num_rows, keep_rows.stop, out_rows.stop
    return SiteData(
        site=site,
        window=window,
        files=tuple(f.path for f in files),
        features=features,
        labels=labels,
        days=days,
        n_held_out=n_held_out,
    )


def check_site(root: Path | str, site: str, window: DateWindow, *, require_label: bool = True) -> int:
    """Validate `site`'s files in `window` one at a time, keeping nothing; the row count."""
    rows = 0
    for path in window_files(Path(root), site, window):
        day = _DayFile(path, require_label)
        validate_table(path, day.read(require_label), require_label=require_label)
        rows += day.num_rows
    return rows


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
