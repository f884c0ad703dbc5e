"""The drift rulebook (SPEC §6): when a site drifts, when drifting sites call for a retrain,
and how often to look. The embedded monitor, the CLI and the operator all decide with it.
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
    """The drift-share threshold: explicit value, else $DRIFT_THRESHOLD, else the default."""
    if value is None:
        raw = os.environ.get(ENV_DRIFT_THRESHOLD)
        try:
            value = float(raw) if raw else DEFAULT_DRIFT_THRESHOLD
        except ValueError as exc:
            raise ValueError(f"{ENV_DRIFT_THRESHOLD}={raw!r} is not a number") from exc
    if not 0 < value <= 1:
        raise ValueError(f"drift threshold must be in (0, 1], got {value:g}")
    return value


def site_drifts(drift_share: float, threshold: float) -> bool:
    """A site drifts when its share of drifted columns reaches the threshold."""
    return drift_share >= threshold


class SiteVerdict(Protocol):
    """One site's verdict, as the rulebook needs it: `SiteDrift` (embedded) and
    `PrintedVerdict` (what a drift pod prints, read by the operator) both are one."""

    @property
    def site(self) -> str: ...

    @property
    def detected(self) -> bool: ...


@dataclass(frozen=True)
class PrintedVerdict:
    """A site's verdict read back from the summary `healthrisk drift check --json` prints."""

    site: str
    drift_share: float
    detected: bool

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> PrintedVerdict:
        """Raises ValueError naming what is missing from a summary that is not one."""
        try:
            return cls(str(summary["site"]), float(summary["drift_share"]), bool(summary["detected"]))
        except KeyError as exc:
            raise ValueError(f"drift summary has no {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"drift summary has a drift_share that is not a number: {exc}") from exc


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


# The CRD's grammar for retraining.drift.interval (charts/health-risk/files): one or more
# whole numbers with a unit, e.g. 45s, 30m, 6h, 1d, 1h30m.
DURATION_PATTERN = r"^([0-9]+(s|m|h|d))+$"
_DURATION_PART = re.compile(r"([0-9]+)(s|m|h|d)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
