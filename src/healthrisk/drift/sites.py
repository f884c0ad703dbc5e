"""Check several sites and publish what each may share.

On one machine every site's data sits under one root, but each check still reads only
its own site's directory and hands back only its `SiteDrift` summary: the same shape as
a per-site drift pod in the cluster, where nothing else could leave the site.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from healthrisk.data.loader import SUFFIXES, DataError
from healthrisk.data.window import DateWindow
from healthrisk.drift.check import DriftOptions, SiteDrift, check_site
from healthrisk.drift.publish import publish_summary
from healthrisk.drift.reference import ChampionWindows

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class PublishedDrift:
    summary: SiteDrift
    run_id: str | None  # None when not published


def data_days(root: Path, site: str) -> list[dt.date]:
    """The dates that have a data file at `site`, ascending."""
    site_dir = root / site
    if not site_dir.is_dir():
        raise DataError(f"site {site!r} has no data directory {site_dir}")
    days = set()
    for path in site_dir.iterdir():
        if path.suffix in SUFFIXES:
            try:
                days.add(dt.date.fromisoformat(path.stem))
            except ValueError:
                continue  # not a daily file (README, notes); the loader ignores it too
    return sorted(days)


def latest_window(root: Path, site: str, days: int) -> DateWindow:
    """The last `days` calendar days up to the newest file at `site`."""
    available = data_days(root, site)
    if not available:
        raise DataError(f"site {site!r} has no daily data files in {root / site}")
    end = available[-1]
    return DateWindow(end - dt.timedelta(days=days - 1), end)


def check_sites(
    data_root: Path,
    sites: Sequence[str],
    *,
    current: Callable[[str], DateWindow],
    reference: DateWindow | ChampionWindows,
    threshold: float,
    options: DriftOptions | None = None,
    report_dir: Path | None = None,
    client: MlflowClient | None = None,
    on_site: Callable[[str], None] | None = None,
) -> list[PublishedDrift]:
    """Check each site in turn; publish each summary when `client` is given.

    `current` maps a site to its current window (sites receive data on their own clock);
    `reference` is one window for all or the champion's per-site training windows.
    """
    results = []
    for site in sites:
        if on_site is not None:
            on_site(site)
        if isinstance(reference, ChampionWindows):
            site_reference, source = reference.for_site(site), reference.source
        else:
            site_reference, source = reference, "explicit"
        summary = check_site(
            data_root,
            site,
            reference=site_reference,
            current=current(site),
            threshold=threshold,
            options=options,
            report_dir=report_dir,
            reference_source=source,
        )
        run_id = publish_summary(client, summary) if client is not None else None
        results.append(PublishedDrift(summary, run_id))
    return results
