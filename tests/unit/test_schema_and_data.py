"""Schema, loader refusals, generator determinism and drift injection."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from healthrisk.data.generator import DriftSpec, generate, generate_day
from healthrisk.data.loader import DataError, SchemaError, load_site
from healthrisk.data.window import DateWindow
from healthrisk.schema import (
    EXAMPLE_RECORD,
    FEATURE_NAMES,
    FEATURES,
    FEATURES_BY_NAME,
    LABEL,
    FeatureGroup,
    as_json_schema,
)

WINDOW = DateWindow.parse("2024-01-01..2024-01-03")


def test_schema_matches_the_spec_limits() -> None:
    assert FEATURE_NAMES == (
        "heart_rate", "steps", "sleep_hours", "respiratory_rate", "body_temp",
        "pm25", "pm10", "o3", "no2", "temperature", "humidity",
    )  # fmt: skip
    limits = {n: (f.minimum, f.maximum) for n, f in FEATURES_BY_NAME.items()}
    assert limits["heart_rate"] == (20, 250)
    assert limits["temperature"] == (-60, 140)
    assert limits["o3"] == (0, 1)
    schema = as_json_schema()
    assert schema["required"] == list(FEATURE_NAMES)
    assert schema["additionalProperties"] is False
    assert set(EXAMPLE_RECORD) == set(FEATURE_NAMES)


def test_wearable_features_are_personal_and_weather_is_environment() -> None:
    groups = {group: [f.name for f in FEATURES if f.group is group] for group in FeatureGroup}
    assert groups[FeatureGroup.PERSONAL] == [
        "heart_rate",
        "steps",
        "sleep_hours",
        "respiratory_rate",
        "body_temp",
    ]
    assert groups[FeatureGroup.ENVIRONMENT] == ["pm25", "pm10", "o3", "no2", "temperature", "humidity"]


def test_window_parsing_and_errors() -> None:
    assert [d.day for d in WINDOW.days()] == [1, 2, 3]
    assert str(DateWindow.parse("2024-02-05")) == "2024-02-05..2024-02-05"
    with pytest.raises(ValueError, match="ends before it starts"):
        DateWindow.parse("2024-01-05..2024-01-01")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        DateWindow.parse("yesterday")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    generate(tmp_path, n_sites=2, window=WINDOW, seed=7)
    return tmp_path


def _rewrite(path: Path, change: dict[str, pa.Array]) -> None:
    table = pq.read_table(path)
    for name, values in change.items():
        table = table.set_column(table.column_names.index(name), name, values)
    pq.write_table(table, path)


def test_loader_reads_a_window(root: Path) -> None:
    data = load_site(root, "hospital_01", WINDOW)
    assert data.features.shape[1] == len(FEATURE_NAMES)
    assert data.labels is not None and data.labels.shape == (data.n_rows,)
    assert len(data.files) == 3


@pytest.mark.parametrize(
    ("column", "values", "rule"),
    [
        ("heart_rate", lambda n: pa.array([300.0] * n), r"heart_rate must be within \[20, 250\] beats/min"),
        ("pm25", lambda n: pa.array([float("nan")] * n), "finite number"),
        ("steps", lambda n: pa.array(["many"] * n), "must be numeric"),
        (LABEL, lambda n: pa.array([2] * n, type=pa.int8()), "must be 0 or 1"),
    ],
)
def test_loader_refuses_schema_breaking_files_naming_file_column_rule(
    root: Path, column: str, values: object, rule: str
) -> None:
    bad = root / "hospital_01" / "2024-01-02.parquet"
    n = pq.read_table(bad).num_rows
    _rewrite(bad, {column: values(n)})  # type: ignore[operator]
    with pytest.raises(SchemaError, match=rule) as info:
        load_site(root, "hospital_01", WINDOW)
    assert str(bad) in str(info.value)
    assert info.value.column == column


def test_loader_refuses_a_missing_column_and_unreadable_file(root: Path) -> None:
    path = root / "hospital_02" / "2024-01-01.parquet"
    pq.write_table(pq.read_table(path).drop(["humidity"]), path)
    with pytest.raises(SchemaError, match="'humidity': required column is missing"):
        load_site(root, "hospital_02", WINDOW)
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot be read"):
        load_site(root, "hospital_02", WINDOW)


def test_loader_accepts_csv_and_names_missing_sites(root: Path) -> None:
    parquet = root / "hospital_01" / "2024-01-01.parquet"
    pacsv.write_csv(pq.read_table(parquet), parquet.with_suffix(".csv"))
    parquet.unlink()
    assert load_site(root, "hospital_01", WINDOW).n_rows > 0
    with pytest.raises(DataError, match="no data directory"):
        load_site(root, "hospital_09", WINDOW)
    with pytest.raises(DataError, match="no data files"):
        load_site(root, "hospital_01", DateWindow.parse("2030-01-01..2030-01-02"))


def test_generator_is_deterministic_per_site_and_day(tmp_path: Path) -> None:
    a = generate_day(42, 0, dt.date(2024, 1, 2))
    b = generate_day(42, 0, dt.date(2024, 1, 2))
    c = generate_day(43, 0, dt.date(2024, 1, 2))
    assert a.equals(b)
    assert not a.equals(c)
    # a day is the same whatever range it is generated in
    generate(tmp_path / "long", n_sites=1, window=DateWindow.parse("2024-01-01..2024-01-05"), seed=42)
    generate(tmp_path / "short", n_sites=1, window=DateWindow.parse("2024-01-03..2024-01-03"), seed=42)
    long_day = pq.read_table(tmp_path / "long/hospital_01/2024-01-03.parquet")
    short_day = pq.read_table(tmp_path / "short/hospital_01/2024-01-03.parquet")
    assert long_day.equals(short_day)


def test_generator_sites_are_non_iid(root: Path) -> None:
    one = load_site(root, "hospital_01", WINDOW)
    two = load_site(root, "hospital_02", WINDOW)
    assert one.labels is not None and two.labels is not None
    assert abs(one.labels.mean() - two.labels.mean()) > 0.1
    pm25 = FEATURE_NAMES.index("pm25")
    assert one.features[:, pm25].mean() > 1.3 * two.features[:, pm25].mean()


def test_drift_injection_hits_only_its_site_and_dates(tmp_path: Path) -> None:
    window = DateWindow.parse("2024-01-01..2024-01-04")
    generate(tmp_path / "clean", n_sites=2, window=window, seed=1)
    smoke = DriftSpec.parse("smoke:hospital_01:2024-01-03..2024-01-04")
    generate(tmp_path / "smoke", n_sites=2, window=window, seed=1, drifts=[smoke])
    pm25 = FEATURE_NAMES.index("pm25")
    for site, day, changed in [
        ("hospital_01", "2024-01-02", False),
        ("hospital_01", "2024-01-03", True),
        ("hospital_02", "2024-01-03", False),
    ]:
        w = DateWindow.parse(day)
        clean = load_site(tmp_path / "clean", site, w).features[:, pm25]
        drifted = load_site(tmp_path / "smoke", site, w).features[:, pm25]
        assert bool(drifted.mean() > clean.mean() * 2) == changed
    with pytest.raises(ValueError, match="not one of"):
        DriftSpec.parse("volcano:hospital_01:2024-01-01")
    with pytest.raises(ValueError, match="drift site"):
        generate(
            tmp_path / "x", n_sites=1, window=window, drifts=[DriftSpec.parse("smoke:hospital_05:2024-01-01")]
        )


def test_generated_values_respect_the_hard_limits(root: Path) -> None:
    data = load_site(root, "hospital_01", WINDOW)  # the loader would refuse otherwise
    assert np.isfinite(data.features).all()


def test_loader_reads_only_the_window_and_the_schema_columns(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = root / "hospital_01" / "2024-01-09.parquet"
    outside.write_bytes(b"not parquet: outside the window, never opened")
    day = root / "hospital_01" / "2024-01-01.parquet"
    table = pq.read_table(day)
    pq.write_table(table.append_column("clinician_notes", pa.array(["free text"] * table.num_rows)), day)
    requested: list[list[str] | None] = []
    read_table = pq.read_table

    def recording(path: Path, columns: list[str] | None = None, **kwargs: object) -> pa.Table:
        requested.append(columns)
        return read_table(path, columns=columns, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pq, "read_table", recording)  # a spy: the real reader still reads
    data = load_site(root, "hospital_01", WINDOW)
    assert data.files == tuple(root / "hospital_01" / f"2024-01-0{d}.parquet" for d in (1, 2, 3))
    assert data.features.shape == (data.n_rows, len(FEATURE_NAMES))
    assert requested == [[*FEATURE_NAMES, LABEL]] * 3


def test_hold_out_puts_the_held_out_rows_last_as_views_of_one_array(root: Path) -> None:
    plain = load_site(root, "hospital_01", WINDOW)
    mask = np.random.default_rng(0).random(plain.n_rows) < 0.25
    split = load_site(root, "hospital_01", WINDOW, hold_out=lambda days: mask)
    (x_train, y_train), (x_val, y_val) = split.training_part(), split.held_out_part()
    assert split.n_held_out == int(mask.sum())
    np.testing.assert_array_equal(x_train, plain.features[~mask])  # file order kept in each part
    np.testing.assert_array_equal(x_val, plain.features[mask])
    assert plain.labels is not None and y_train is not None and y_val is not None
    np.testing.assert_array_equal(y_train, plain.labels[~mask])
    np.testing.assert_array_equal(y_val, plain.labels[mask])
    assert np.shares_memory(x_train, split.features) and np.shares_memory(x_val, split.features)
    with pytest.raises(ValueError, match="mask of shape"):
        load_site(root, "hospital_01", WINDOW, hold_out=lambda days: np.zeros(days.size + 1, dtype=bool))


def test_loading_allocates_about_the_data_once(tmp_path: Path) -> None:
    """numpy's allocations (traced) while loading 100k rows: the array, plus one day's columns."""
    import tracemalloc

    window = DateWindow.parse("2024-01-01..2024-01-05")
    generate(tmp_path, n_sites=1, window=window, rows_per_day=20_000)
    load_site(tmp_path, "hospital_01", DateWindow.parse("2024-01-01"))  # imports, caches
    tracemalloc.start()
    try:
        data = load_site(tmp_path, "hospital_01", window, hold_out=lambda days: np.arange(days.size) % 5 == 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.labels is not None
    data_bytes = data.features.nbytes + data.labels.nbytes
    assert data.n_rows > 90_000
    assert peak < 1.5 * data_bytes, f"peak {peak / 2**20:.1f} MiB for {data_bytes / 2**20:.1f} MiB of data"


def test_generator_volume_can_be_set_per_day(tmp_path: Path) -> None:
    table = generate_day(42, 0, dt.date(2024, 1, 2), rows_per_day=10_000)
    assert 9_000 < table.num_rows < 11_000
    assert table.column("site").unique().to_pylist() == ["hospital_01"]
    assert table.column("date").unique().to_pylist() == [dt.date(2024, 1, 2)]
