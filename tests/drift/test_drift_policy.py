"""Policy, threshold and duration parsing: pure functions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD, ENV_DRIFT_THRESHOLD
from healthrisk.drift.policy import (
    DURATION_PATTERN,
    MIN_CHECK_INTERVAL,
    PrintedVerdict,
    RetrainPolicy,
    decide,
    parse_check_interval,
    parse_duration,
    performance_decay,
    resolve_threshold,
)

CRD = Path(__file__).resolve().parents[2] / "charts/health-risk/files/federatedtrainings.healthrisk.io.yaml"


def _summary(site: str, score: float, threshold: float = DEFAULT_DRIFT_THRESHOLD) -> PrintedVerdict:
    return PrintedVerdict(site, score, score >= threshold)


def test_score_at_the_threshold_is_drift() -> None:
    from healthrisk.drift.policy import site_drifts

    assert site_drifts(0.5, DEFAULT_DRIFT_THRESHOLD)
    assert not site_drifts(0.4999, DEFAULT_DRIFT_THRESHOLD)


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
    summaries = [_summary(f"site{i}", 0.9 if i < drifting else 0.0) for i in range(3)]
    decision = decide(summaries, policy)
    assert decision.retrain is retrain
    assert len(decision.drifted_sites) == drifting and len(decision.checked_sites) == 3


def test_majority_of_an_even_number_needs_more_than_half() -> None:
    summaries = [_summary("a", 0.9), _summary("b", 0.9), _summary("c", 0.0), _summary("d", 0.0)]
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


def _drift_schema() -> dict[str, object]:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    drift: dict[str, object] = schema["properties"]["spec"]["properties"]["retraining"]["properties"]["drift"]
    return drift


def test_duration_grammar_is_the_crds() -> None:
    interval = _drift_schema()["properties"]["interval"]  # type: ignore[index]
    assert interval["pattern"] == DURATION_PATTERN


def test_the_interval_floor_is_the_crds() -> None:
    """The CRD states the floor in its CEL rule's message; the rulebook enforces the same."""
    interval = _drift_schema()["properties"]["interval"]  # type: ignore[index]
    (rule,) = interval["x-kubernetes-validations"]
    assert f">= {int(MIN_CHECK_INTERVAL.total_seconds())}" in rule["rule"]
    assert parse_check_interval("1m") == MIN_CHECK_INTERVAL
    assert parse_check_interval("6h") == dt.timedelta(hours=6)
    with pytest.raises(ValueError, match="shorter than the floor of 60 s"):
        parse_check_interval("59s")


def test_a_printed_summary_gives_the_sites_verdict_and_performance() -> None:
    summary = {
        "site": "a",
        "score": 0.91,
        "detected": True,
        "performance": {"auc": 0.81, "loss": 0.44, "rows": 480},
        "columns": [],
    }
    printed = PrintedVerdict.from_summary(json.loads(json.dumps(summary)))
    assert printed == PrintedVerdict("a", 0.91, True, 0.81, 0.44, 480)
    nothing_new = PrintedVerdict.from_summary(
        {"site": "b", "score": 0.0, "detected": False, "performance": None}
    )
    assert nothing_new == PrintedVerdict("b", 0.0, False)
    assert decide([printed, nothing_new], RetrainPolicy.ANY).retrain
    assert not decide([printed, nothing_new], RetrainPolicy.MAJORITY).retrain


def test_performance_decay_is_the_row_weighted_auc_below_the_validation_auc() -> None:
    sites = [PrintedVerdict("a", 0.0, False, 0.84, 0.4, 300), PrintedVerdict("b", 0.0, False, 0.54, 0.7, 100)]
    decision = performance_decay(sites, baseline=0.84, max_auc_drop=0.02)
    assert decision.auc == pytest.approx((0.84 * 300 + 0.54 * 100) / 400)
    assert decision.decayed and decision.rows == 400 and "retrain" in decision.reason
    assert not performance_decay(sites, baseline=0.84, max_auc_drop=0.1).decayed
    # a site without an AUC (no labels, one class) does not count; no baseline, no decision
    assert not performance_decay([PrintedVerdict("c", 0.0, False)], baseline=0.84, max_auc_drop=0.0).decayed
    assert not performance_decay(sites, baseline=None, max_auc_drop=0.0).decayed


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        ({"score": 0.2, "detected": False}, "no 'site'"),
        ({"site": "a", "score": "lots", "detected": True}, "not a number"),
        ({"site": "a", "score": 0.1, "detected": False, "performance": {"auc": "x"}}, "not a number"),
    ],
)
def test_a_summary_that_is_not_one_is_refused(summary: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PrintedVerdict.from_summary(summary)
