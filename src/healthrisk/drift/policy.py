"""When drift counts, and when drift at some sites is reason enough to retrain (SPEC §6)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD, ENV_DRIFT_THRESHOLD
from healthrisk.drift.check import SiteDrift


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


def decide(summaries: Sequence[SiteDrift], policy: RetrainPolicy = RetrainPolicy.ANY) -> RetrainDecision:
    checked = tuple(s.site for s in summaries)
    drifted = tuple(s.site for s in summaries if s.detected)
    retrain = bool(drifted) if policy is RetrainPolicy.ANY else len(drifted) * 2 > len(checked)
    return RetrainDecision(retrain, policy, drifted, checked)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90`, `45s`, `30m`, `6h`, `1d` → timedelta (the CRD's `interval` format)."""
    match = _DURATION.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"duration {text!r} is not a positive number with an optional unit s, m, h or d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
