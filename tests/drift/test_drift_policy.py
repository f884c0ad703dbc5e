"""Policy, threshold and duration parsing: pure functions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD, ENV_DRIFT_THRESHOLD
from healthrisk.drift.check import ColumnDrift, SiteDrift
from healthrisk.drift.policy import (
    DURATION_PATTERN,
    PrintedVerdict,
    RetrainPolicy,
    decide,
    parse_duration,
    resolve_threshold,
)

CRD = Path(__file__).resolve().parents[2] / "charts/health-risk/files/federatedtrainings.healthrisk.io.yaml"


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
    [("45s", 45), ("30m", 1800), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), ("1d12h", 129600)],
)
def test_parse_duration(text: str, expected: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "6x", "-1h", "h", "90", "1.5h", "6 h", "6H", "1h 30m"])
def test_parse_duration_refuses_what_the_crd_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not like 30m, 6h or 1h30m"):
        parse_duration(text)


def test_parse_duration_refuses_zero() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        parse_duration("0s0m")


def test_duration_grammar_is_the_crds() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    drift = schema["properties"]["spec"]["properties"]["retraining"]["properties"]["drift"]
    assert drift["properties"]["interval"]["pattern"] == DURATION_PATTERN


def test_a_printed_summary_gives_the_sites_verdict() -> None:
    drifting, quiet = _summary("a", 3), _summary("b", 0)
    printed = [PrintedVerdict.from_summary(json.loads(json.dumps(s.as_dict()))) for s in (drifting, quiet)]
    assert printed == [PrintedVerdict("a", 0.75, True), PrintedVerdict("b", 0.0, False)]
    assert decide(printed, RetrainPolicy.ANY) == decide([drifting, quiet], RetrainPolicy.ANY)
    assert not decide(printed, RetrainPolicy.MAJORITY).retrain


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        ({"drift_share": 0.2, "detected": False}, "no 'site'"),
        ({"site": "a", "drift_share": "lots", "detected": True}, "not a number"),
    ],
)
def test_a_summary_that_is_not_one_is_refused(summary: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PrintedVerdict.from_summary(summary)
