"""The drift rulebook (SPEC §6): when a site drifts, when drifting sites call for a retrain,
when the champion's performance has decayed enough to retrain, and how often to look. The
embedded monitor, the CLI and the operator all decide with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD, ENV_DRIFT_THRESHOLD


class RetrainPolicy(StrEnum):
    ANY = "any"  # one drifting site is enough: its patients are served by the shared model
    MAJORITY = "majority"  # more than half of the checked sites


def resolve_threshold(value: float | None = None) -> float:
    """The drift-score threshold: explicit value, else $DRIFT_THRESHOLD, else the default (0.5:
    retraining is worth it; healthrisk.drift.score)."""
    if value is None:
        raw = os.environ.get(ENV_DRIFT_THRESHOLD)
        try:
            value = float(raw) if raw else DEFAULT_DRIFT_THRESHOLD
        except ValueError as exc:
            raise ValueError(f"{ENV_DRIFT_THRESHOLD}={raw!r} is not a number") from exc
    if not 0 < value <= 1:
        raise ValueError(f"drift threshold must be in (0, 1], got {value:g}")
    return value


def site_drifts(score: float, threshold: float) -> bool:
    """A site drifts when its drift score reaches the threshold."""
    return score >= threshold


class SiteVerdict(Protocol):
    """One site's verdict, as the rulebook needs it: `SiteDrift` (embedded) and
    `PrintedVerdict` (what a drift pod prints, read by the operator) both are one."""

    @property
    def site(self) -> str: ...

    @property
    def detected(self) -> bool: ...


@dataclass(frozen=True)
class PrintedVerdict:
    """A site's verdict read back from the summary `healthrisk drift check --json` prints:
    its drift score and verdict, and the champion's performance on its new labelled days."""

    site: str
    score: float
    detected: bool
    auc: float | None = None
    loss: float | None = None
    rows: int | None = None

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> PrintedVerdict:
        """Raises ValueError naming what is missing from a summary that is not one."""
        try:
            performance = summary.get("performance") or {}
            auc, loss, rows = performance.get("auc"), performance.get("loss"), performance.get("rows")
            return cls(
                str(summary["site"]),
                float(summary["score"]),
                bool(summary["detected"]),
                None if auc is None else float(auc),
                None if loss is None else float(loss),
                None if rows is None else int(rows),
            )
        except KeyError as exc:
            raise ValueError(f"drift summary has no {exc.args[0]!r}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"drift summary has a score or performance that is not a number: {exc}") from exc


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    policy: RetrainPolicy
    drifted_sites: tuple[str, ...]
    checked_sites: tuple[str, ...]

    @property
    def reason(self) -> str:
        drifted, checked = len(self.drifted_sites), len(self.checked_sites)
        names = f" ({', '.join(self.drifted_sites)})" if self.drifted_sites else ""
        verdict = "retrain" if self.retrain else "no retrain"
        return f"drift at {drifted} of {checked} sites{names}; policy {self.policy.value}: {verdict}"


def decide(verdicts: Sequence[SiteVerdict], policy: RetrainPolicy = RetrainPolicy.ANY) -> RetrainDecision:
    """Whether the checked sites' verdicts call for a retrain; no verdicts never do."""
    checked = tuple(v.site for v in verdicts)
    drifted = tuple(v.site for v in verdicts if v.detected)
    retrain = bool(drifted) if policy is RetrainPolicy.ANY else len(drifted) * 2 > len(checked)
    return RetrainDecision(retrain, policy, drifted, checked)


class SitePerformance(Protocol):
    """One site's report of the serving champion on its newest labelled days."""

    @property
    def site(self) -> str: ...

    @property
    def auc(self) -> float | None: ...

    @property
    def rows(self) -> int | None: ...


@dataclass(frozen=True)
class PerformanceDecision:
    """Whether the champion's AUC on the sites' newest labelled days fell far enough below
    its validation AUC to retrain (retraining.performance.maxAucDrop)."""

    decayed: bool
    auc: float | None  # row-weighted over the sites that reported one
    baseline: float | None  # the champion's federated validation AUC
    max_auc_drop: float
    rows: int

    @property
    def reason(self) -> str:
        if self.auc is None or self.baseline is None:
            return "no champion AUC on new labelled days to compare"
        verdict = "retrain" if self.decayed else "no retrain"
        return (
            f"champion AUC {self.auc:.4f} on {self.rows} new labelled rows vs validation AUC "
            f"{self.baseline:.4f}: drop {self.baseline - self.auc:.4f}, "
            f"allowed {self.max_auc_drop:g}: {verdict}"
        )


def weighted_auc(reports: Sequence[SitePerformance]) -> tuple[float | None, int]:
    """The sites' AUCs weighted by their rows, as the federated validation AUC is weighted."""
    usable = [(r.auc, r.rows) for r in reports if r.auc is not None and r.rows]
    rows = sum(n for _, n in usable if n is not None)
    if not rows:
        return None, 0
    return sum(auc * n for auc, n in usable if auc is not None and n is not None) / rows, rows


def performance_decay(
    reports: Sequence[SitePerformance], baseline: float | None, max_auc_drop: float
) -> PerformanceDecision:
    """A retrain when the weighted AUC on the new days is below `baseline` by more than `max_auc_drop`."""
    auc, rows = weighted_auc(reports)
    decayed = auc is not None and baseline is not None and baseline - auc > max_auc_drop
    return PerformanceDecision(decayed, auc, baseline, max_auc_drop, rows)


# The CRD's grammar for retraining.drift.interval (charts/health-risk/files): one or more
# whole numbers with a unit, e.g. 45s, 30m, 6h, 1d, 1h30m.
DURATION_PATTERN = r"^([0-9]+(s|m|h|d))+$"
_DURATION_PART = re.compile(r"([0-9]+)(s|m|h|d)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The shortest drift interval: each check starts a pod per site (twice: the days, then the
# check) and reads the champion from MLflow; more often than this is a pod storm, not
# monitoring (the CRD refuses it with the same number: tests/drift/test_drift_policy.py).
MIN_CHECK_INTERVAL = timedelta(minutes=1)


def parse_duration(text: str) -> timedelta:
    """`45s`, `30m`, `6h`, `1d`, `1h30m` → timedelta; anything else is a ValueError."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"duration {text!r} is not like 30m, 6h or 1h30m: whole numbers each followed by s, m, h or d"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return timedelta(seconds=seconds)


def parse_check_interval(text: str) -> timedelta:
    """A drift interval: a duration of at least MIN_CHECK_INTERVAL."""
    interval = parse_duration(text)
    if interval < MIN_CHECK_INTERVAL:
        raise ValueError(
            f"drift interval {text!r} is shorter than the floor of "
            f"{int(MIN_CHECK_INTERVAL.total_seconds())} s (every check starts pods at every site)"
        )
    return interval
