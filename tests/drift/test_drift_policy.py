"""Policy, threshold and duration parsing: pure functions."""

from __future__ import annotations

import datetime as dt

import pytest

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD, ENV_DRIFT_THRESHOLD
from healthrisk.drift.check import ColumnDrift, SiteDrift
from healthrisk.drift.policy import RetrainPolicy, decide, parse_duration, resolve_threshold


def _summary(site: str, n_drifted: int, threshold: float = 0.5) -> SiteDrift:
    columns = tuple(
        ColumnDrift(f"c{i}", "psi", 1.0 if i < n_drifted else 0.0, 0.5, i < n_drifted) for i in range(4)
    )
    return SiteDrift(site, "a..b", "c..d", 100, 10, threshold, n_drifted / 4, columns)


def test_share_at_the_threshold_is_drift() -> None:
    assert _summary("s", 2).detected  # 2/4 = 0.5 ≥ 0.5
    assert not _summary("s", 1).detected


@pytest.mark.parametrize(
    ("drifting", "policy", "retrain"),
    [
        (1, RetrainPolicy.ANY, True),
        (0, RetrainPolicy.ANY, False),
        (1, RetrainPolicy.MAJORITY, False),
        (2, RetrainPolicy.MAJORITY, True),
    ],
)
def test_policy(drifting: int, policy: RetrainPolicy, retrain: bool) -> None:
    summaries = [_summary(f"site{i}", 4 if i < drifting else 0) for i in range(3)]
    decision = decide(summaries, policy)
    assert decision.retrain is retrain
    assert len(decision.drifted_sites) == drifting and len(decision.checked_sites) == 3


def test_majority_of_an_even_number_needs_more_than_half() -> None:
    summaries = [_summary("a", 4), _summary("b", 4), _summary("c", 0), _summary("d", 0)]
    assert not decide(summaries, RetrainPolicy.MAJORITY).retrain


def test_threshold_from_argument_environment_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DRIFT_THRESHOLD, raising=False)
    assert resolve_threshold() == DEFAULT_DRIFT_THRESHOLD
    monkeypatch.setenv(ENV_DRIFT_THRESHOLD, "0.2")
    assert resolve_threshold() == 0.2
    assert resolve_threshold(0.3) == 0.3
    monkeypatch.setenv(ENV_DRIFT_THRESHOLD, "lots")
    with pytest.raises(ValueError, match=f"{ENV_DRIFT_THRESHOLD}='lots' is not a number"):
        resolve_threshold()
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        resolve_threshold(1.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), ("45s", 45), ("30m", 1800), ("6h", 21600), ("1d", 86400), ("1.5h", 5400)],
)
def test_parse_duration(text: str, expected: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "6x", "-1h", "0", "h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a positive number"):
        parse_duration(text)
