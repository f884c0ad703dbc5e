"""Synthetic multi-site health-risk data, with drift injection.

Generative model (documented here because tests and benchmarks rely on it):

* Each site has a population profile: an age/fitness mix (`fitness` ∈ [-1, 1] shifts
  heart rate down and steps up), a pollution exposure (multiplies the log-normal PM2.5,
  PM10 and NO2 levels), a climate (mean temperature and humidity), a baseline risk
  (intercept of the risk model, which sets label prevalence) and a daily volume.
  Sites therefore differ in feature distributions and in prevalence (non-IID).
* Per person-day the features are drawn from those profiles, clipped to the schema's
  hard limits. Everyone at a site shares that day's air (a daily pollution factor).
* Risk: `logit p = b_site + Σ_k term_k`, with `RISK_WEIGHTS` (centre c, scale s, weight w)
  per feature. Most terms are linear, `w (x - c) / s`. Particulate matter (PM2.5, PM10)
  enters log-linearly, `w (c / s) ln(x / c)`: the same slope as a linear term at the
  healthy centre, flattening at high exposure, the shape of the concentration–response
  functions epidemiology fits to particulate matter (e.g. the Global Burden of Disease's
  integrated exposure–response curves). On ordinary days a logistic regression linear in
  µg/m³ fits it well; extrapolated to a wildfire smoke day it over-predicts that day's
  risk and ranks its patients mostly by the smoke, so a retrain that saw smoke is better.
  `high_risk ~ Bernoulli(p)`. The same law holds at every site, so a pooled model is
  well-specified up to the site intercepts and the curvature of the PM terms.
* Every (seed, site, date) triple has its own random stream, so any date range of a site
  is generated identically whatever else is generated with it, and a drift kind other
  than smoke leaves every value it does not change equal to the quiet day's.

Drift injection (`DriftSpec`):
* `smoke`     — wildfire smoke: PM2.5 ×4 + 60, PM10 ×3 + 80 (µg/m³), and a surge of patients:
  the site records three times its usual rows that day (more than the 10–90 % rise in
  respiratory emergency visits reported for heavy smoke, so that one smoke day weighs
  enough for a retrain that saw it to rank patients measurably better than the champion:
  benchmarks/promotion_gate.py). Labels follow the air through the log-linear PM terms
* `firmware`  — wearable firmware change: heart_rate +12 beats/min, and the labels follow
  it (the population's heart rate really rose: the risk law still holds)
* `heatwave`  — temperature +25 °F, humidity −20 %: a shift the risk law barely weighs
* `label-noise` — 45 % of labels flipped (a corrupted site: labels no longer follow the features)
* `concept`   — the risk law changes, the features do not: body_temp's weight 0.8 → 0,
  steps' −0.6 → −1.8 (an illness whose risk tracks inactivity, not fever)
* `sensor`    — a heart-rate *reading* +12 beats/min with labels from the true rate (a
  firmware bug, where `firmware` is a real change of the population)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from healthrisk.data.loader import SiteData, write_day
from healthrisk.data.window import DateWindow
from healthrisk.schema import DATE_COLUMN, FEATURE_NAMES, FEATURES, LABEL, SITE_COLUMN


@dataclass(frozen=True)
class SiteProfile:
    fitness: float
    pollution: float
    climate_temp: float
    climate_humidity: float
    baseline_risk: float
    rows_per_day: int


# Three archetypes, cycled when more sites are asked for: an urban hospital with an
# older population, a suburban one, and a rural one with a younger, fitter population.
PROFILES: tuple[SiteProfile, ...] = (
    SiteProfile(
        fitness=-0.5,
        pollution=1.8,
        climate_temp=78,
        climate_humidity=65,
        baseline_risk=-1.9,
        rows_per_day=240,
    ),
    SiteProfile(
        fitness=0.0, pollution=1.0, climate_temp=64, climate_humidity=50, baseline_risk=-1.3, rows_per_day=200
    ),
    SiteProfile(
        fitness=0.6, pollution=0.5, climate_temp=55, climate_humidity=40, baseline_risk=-1.4, rows_per_day=160
    ),
)

# (centre, scale, weight) per feature: weight on the standardised deviation.
RISK_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "heart_rate": (70, 12, 0.9),
    "steps": (8000, 3500, -0.6),
    "sleep_hours": (7.5, 1.2, -0.5),
    "respiratory_rate": (16, 3, 0.7),
    "body_temp": (98.6, 0.9, 0.8),
    "pm25": (15, 20, 0.5),
    "pm10": (25, 30, 0.3),
    "o3": (0.04, 0.02, 0.25),
    "no2": (0.02, 0.015, 0.35),
    "temperature": (65, 18, 0.15),
    "humidity": (50, 20, 0.1),
}

# Particulate matter's terms are log-linear in concentration (module doc).
LOG_LINEAR = frozenset({"pm25", "pm10"})
# Concentrations below this (µg/m³) count as this in the log-linear terms: the log of 0 is not a risk.
MIN_CONCENTRATION = 1.0

# The `concept` world: the same features, a different law.
CONCEPT_WEIGHTS: dict[str, tuple[float, float, float]] = {
    **RISK_WEIGHTS,
    "body_temp": (98.6, 0.9, 0.0),
    "steps": (8000, 3500, -1.8),
}

FEATURE_KINDS = ("smoke", "firmware", "heatwave")  # shift features before the labels are drawn
SMOKE_SURGE = 3  # a smoke day's rows, in multiples of the site's usual day (module doc)
DRIFT_KINDS = (*FEATURE_KINDS, "label-noise", "concept", "sensor")


@dataclass(frozen=True)
class DriftSpec:
    kind: str
    site: str
    window: DateWindow

    @classmethod
    def parse(cls, text: str) -> DriftSpec:
        """Parse `KIND:SITE:FROM..TO`, e.g. `smoke:hospital_01:2024-01-15..2024-01-21`."""
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"drift {text!r} is not of the form KIND:SITE:FROM..TO")
        kind, site, window = parts
        if kind not in DRIFT_KINDS:
            raise ValueError(f"drift kind {kind!r} is not one of {', '.join(DRIFT_KINDS)}")
        return cls(kind, site, DateWindow.parse(window))


def site_name(index: int) -> str:
    return f"hospital_{index + 1:02d}"


def _features(rng: np.random.Generator, profile: SiteProfile, n: int) -> dict[str, np.ndarray]:
    fitness = np.clip(rng.normal(profile.fitness, 0.5, n), -1.5, 1.5)
    fever = rng.random(n) < 0.06
    pollution_day = rng.lognormal(0.0, 0.35)  # shared by everyone at the site that day
    return {
        "heart_rate": rng.normal(74 - 8 * fitness, 9, n) + 14 * fever,
        "steps": rng.normal(7500 + 3000 * fitness, 2500, n),
        "sleep_hours": rng.normal(7.1 + 0.3 * fitness, 1.1, n),
        "respiratory_rate": rng.normal(16 - fitness, 2.5, n) + 3 * fever,
        "body_temp": rng.normal(98.4, 0.5, n) + 2.2 * fever,
        "pm25": rng.lognormal(np.log(12 * profile.pollution * pollution_day), 0.4, n),
        "pm10": rng.lognormal(np.log(22 * profile.pollution * pollution_day), 0.4, n),
        "o3": rng.normal(0.04, 0.012, n),
        "no2": rng.lognormal(np.log(0.018 * profile.pollution), 0.35, n),
        "temperature": rng.normal(profile.climate_temp, 9, n),
        "humidity": rng.normal(profile.climate_humidity, 12, n),
    }


def _inject(kind: str, columns: dict[str, np.ndarray]) -> None:
    if kind == "smoke":
        columns["pm25"] = columns["pm25"] * 4 + 60
        columns["pm10"] = columns["pm10"] * 3 + 80
    elif kind == "firmware":
        columns["heart_rate"] = columns["heart_rate"] + 12
    elif kind == "heatwave":
        columns["temperature"] = columns["temperature"] + 25
        columns["humidity"] = columns["humidity"] - 20


def risk_logit(
    columns: dict[str, np.ndarray],
    baseline: float,
    weights: dict[str, tuple[float, float, float]] = RISK_WEIGHTS,
) -> np.ndarray:
    logit = np.full(len(columns["heart_rate"]), baseline)
    for name, (centre, scale, weight) in weights.items():
        if name in LOG_LINEAR:
            logit += weight * (centre / scale) * np.log(np.maximum(columns[name], MIN_CONCENTRATION) / centre)
        else:
            logit += weight * (columns[name] - centre) / scale
    return logit


def _clip(columns: dict[str, np.ndarray]) -> None:
    for feature in FEATURES:
        columns[feature.name] = np.clip(columns[feature.name], feature.minimum, feature.maximum)


def generate_day(
    seed: int,
    site_index: int,
    day: dt.date,
    drift_kinds: Sequence[str] = (),
    *,
    rows_per_day: int | None = None,
) -> pa.Table:
    """One site-day; `rows_per_day` replaces the profile's daily volume (benchmarks at scale)."""
    profile = PROFILES[site_index % len(PROFILES)]
    rng = np.random.default_rng(np.random.SeedSequence([seed, site_index, day.toordinal()]))
    volume = rows_per_day or profile.rows_per_day
    n = int(rng.normal(volume, volume * 0.05))
    if "smoke" in drift_kinds:
        n *= SMOKE_SURGE
    columns = _features(rng, profile, n)
    for kind in drift_kinds:
        if kind in FEATURE_KINDS:
            _inject(kind, columns)
    _clip(columns)
    columns["steps"] = np.round(columns["steps"])
    weights = CONCEPT_WEIGHTS if "concept" in drift_kinds else RISK_WEIGHTS
    labels = (rng.random(n) < 1 / (1 + np.exp(-risk_logit(columns, profile.baseline_risk, weights)))).astype(
        np.int8
    )
    if "label-noise" in drift_kinds:
        flip = rng.random(n) < 0.45
        labels = np.where(flip, 1 - labels, labels).astype(np.int8)
    if "sensor" in drift_kinds:
        columns["heart_rate"] = columns["heart_rate"] + 12  # the reading, after the true rate set the label
        _clip(columns)
    return pa.table(
        {
            SITE_COLUMN: pa.repeat(site_name(site_index), n),
            DATE_COLUMN: pa.repeat(pa.scalar(day, pa.date32()), n),
            **{name: pa.array(columns[name], type=pa.float64()) for name in FEATURE_NAMES},
            LABEL: pa.array(labels, type=pa.int8()),
        }
    )


def generate(
    root: Path,
    *,
    n_sites: int,
    window: DateWindow,
    seed: int = 42,
    drifts: Sequence[DriftSpec] = (),
    file_format: str = "parquet",
    rows_per_day: int | None = None,
) -> list[Path]:
    """Write one file per site per day under `root`; return the paths written."""
    sites = [site_name(i) for i in range(n_sites)]
    for drift in drifts:
        if drift.site not in sites:
            raise ValueError(f"drift site {drift.site!r} is not one of {', '.join(sites)}")
    written = []
    for index, site in enumerate(sites):
        for day in window.days():
            kinds = [d.kind for d in drifts if d.site == site and day in d.window]
            path = root / site / f"{day.isoformat()}.{file_format}"
            write_day(path, generate_day(seed, index, day, kinds, rows_per_day=rows_per_day))
            written.append(path)
    return written


def site_rows(seed: int, site_index: int, window: DateWindow, drift_kinds: Sequence[str] = ()) -> SiteData:
    """The rows `generate` would write for one site over `window`, as the loader reads
    them back, without files: for benchmarks and tests that need thousands of windows."""
    days = list(window.days())
    tables = [generate_day(seed, site_index, day, drift_kinds) for day in days]
    return SiteData(
        site=site_name(site_index),
        window=window,
        files=(),
        features=np.vstack(
            [np.column_stack([t.column(n).to_numpy() for n in FEATURE_NAMES]) for t in tables]
        ),
        labels=np.concatenate([t.column(LABEL).to_numpy() for t in tables]),
        days=np.concatenate(
            [
                np.full(t.num_rows, day.toordinal(), dtype=np.int32)
                for t, day in zip(tables, days, strict=True)
            ]
        ),
    )
