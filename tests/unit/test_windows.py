"""The one window rule (fixed or rolling), what a site's days are, and the validation split
that stays put when windows move."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from healthrisk.data.generator import DriftSpec, generate, site_rows
from healthrisk.data.loader import load_site, site_days
from healthrisk.data.window import (
    DateWindow,
    NoCommonDay,
    WindowRule,
    day_runs,
    newest_common_day,
    training_fingerprint,
)
from healthrisk.drift.reference import new_days
from healthrisk.federated.client_app import held_out_rows

D = dt.date.fromisoformat


def days(text: str) -> list[dt.date]:
    return list(DateWindow.parse(text).days())


def test_a_rolling_window_ends_on_the_newest_day_every_site_has() -> None:
    rule = WindowRule.parse("28d")
    site_days_ = {"a": days("2024-01-01..2024-01-20"), "b": days("2024-01-01..2024-01-18")}
    assert rule.resolve(site_days_) == dict.fromkeys(("a", "b"), DateWindow.parse("2023-12-22..2024-01-18"))
    # a gap at one site: the newest day both have, not the smaller of the newest days
    gap = {"a": [*days("2024-01-01..2024-01-18"), D("2024-01-20")], "b": days("2024-01-01..2024-01-19")}
    assert newest_common_day(gap) == D("2024-01-18")
    assert rule.ending(D("2024-01-18")) == DateWindow.parse("2023-12-22..2024-01-18")
    assert str(rule) == "28d" and rule.rolling


def test_a_fixed_window_is_the_same_whatever_the_days() -> None:
    rule = WindowRule.parse("2024-01-01..2024-01-14")
    assert not rule.rolling and str(rule) == "2024-01-01..2024-01-14"
    assert rule.resolve({"a": [], "b": days("2024-03-01..2024-03-02")}) == dict.fromkeys(
        ("a", "b"), DateWindow.parse("2024-01-01..2024-01-14")
    )


@pytest.mark.parametrize("text", ["0d", "28", "4w", "2024-01-05..2024-01-01", "last 28d"])
def test_malformed_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        WindowRule.parse(text)


def test_sites_without_a_common_day_say_which_is_missing() -> None:
    with pytest.raises(NoCommonDay, match="hospital_02: no data"):
        newest_common_day({"hospital_01": days("2024-01-01..2024-01-02"), "hospital_02": []})


def test_new_days_are_those_after_the_champions_window_through_the_common_day() -> None:
    trained = DateWindow.parse("2024-01-01..2024-01-14")
    site = days("2024-01-01..2024-01-25")
    assert new_days(site, trained, until=D("2024-01-21"), most=7) == DateWindow.parse(
        "2024-01-15..2024-01-21"
    )
    assert new_days(site, trained, until=D("2024-01-25"), most=3) == DateWindow.parse(
        "2024-01-23..2024-01-25"
    )
    assert new_days(site, trained, until=D("2024-01-14"), most=7) is None  # nothing after its window


def test_the_fingerprint_changes_with_a_window_a_site_or_the_shaping() -> None:
    window = DateWindow.parse("2024-01-01..2024-01-14")
    base = training_fingerprint({"a": window, "b": window}, "spec1")
    assert base == training_fingerprint({"b": window, "a": window}, "spec1")
    assert base != training_fingerprint(
        {"a": window, "b": DateWindow.parse("2024-01-01..2024-01-15")}, "spec1"
    )
    assert base != training_fingerprint({"a": window}, "spec1")
    assert base != training_fingerprint({"a": window, "b": window}, "spec2")


def test_a_sites_days_are_its_file_names(tmp_path: Path) -> None:
    generate(tmp_path, n_sites=1, window=DateWindow.parse("2024-01-01..2024-01-03"), seed=1)
    generate(tmp_path, n_sites=1, window=DateWindow.parse("2024-01-06..2024-01-06"), seed=1)
    (tmp_path / "hospital_01" / "README.txt").write_text("not a day")
    found = site_days(tmp_path, "hospital_01")
    assert found == [D("2024-01-01"), D("2024-01-02"), D("2024-01-03"), D("2024-01-06")]
    assert [str(r) for r in day_runs(found)] == ["2024-01-01..2024-01-03", "2024-01-06..2024-01-06"]


def test_rows_know_their_day_and_keep_their_labels_when_present(tmp_path: Path) -> None:
    window = DateWindow.parse("2024-01-01..2024-01-03")
    generate(tmp_path, n_sites=1, window=window, seed=1)
    data = load_site(tmp_path, "hospital_01", window, require_label=False)
    assert data.labels is not None and data.labels.shape == (data.n_rows,)
    assert sorted(set(data.days.tolist())) == [d.toordinal() for d in window.days()]
    assert np.array_equal(data.features, site_rows(1, 0, window).features)


def test_a_validation_row_stays_one_when_the_window_moves() -> None:
    """The promotion gate compares on rows neither model trained on: a champion trained on
    an earlier window never saw the validation rows of the days it shares with the new one."""
    early = site_rows(3, 0, DateWindow.parse("2024-01-01..2024-01-14"))
    late = site_rows(3, 0, DateWindow.parse("2024-01-05..2024-01-21"))
    held_early = held_out_rows(early.site, early.days)
    held_late = held_out_rows(late.site, late.days)
    shared = DateWindow.parse("2024-01-05..2024-01-14")
    in_early = np.isin(early.days, [d.toordinal() for d in shared.days()])
    in_late = np.isin(late.days, [d.toordinal() for d in shared.days()])
    assert np.array_equal(held_early[in_early], held_late[in_late])
    assert 0.15 < held_late.mean() < 0.25


def test_new_scenarios_change_what_they_say() -> None:
    window = DateWindow.parse("2024-01-02..2024-01-04")
    quiet = site_rows(5, 1, window)
    concept = site_rows(5, 1, window, ["concept"])
    sensor = site_rows(5, 1, window, ["sensor"])
    smoke = site_rows(5, 1, window, ["smoke"])
    # concept: the same people, another risk law; sensor: the reading moved, not the person
    assert np.array_equal(concept.features, quiet.features) and not np.array_equal(
        concept.labels, quiet.labels
    )
    heart_rate = 0
    assert np.allclose(sensor.features[:, heart_rate] - quiet.features[:, heart_rate], 12)
    assert np.array_equal(sensor.labels, quiet.labels)
    # smoke: a surge of patients in smoky air
    assert smoke.n_rows == pytest.approx(3 * quiet.n_rows, rel=0.01)
    with pytest.raises(ValueError, match="not one of"):
        DriftSpec.parse("volcano:hospital_01:2024-01-01")
