"""Check several sites and publish what each may share.

On one machine every site's data sits under one root, but each check still reads only
its own site's directory and hands back only its summary: the same shape as a per-site
drift pod in the cluster, where nothing else could leave the site.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from healthrisk.data.window import DateWindow
from healthrisk.drift.check import DriftOptions, NothingNew, SiteDrift, check_site
from healthrisk.drift.publish import publish_summary
from healthrisk.drift.reference import Champion

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class PublishedDrift:
    summary: SiteDrift | NothingNew
    run_id: str | None  # None when not published (or nothing was checked)


def check_sites(
    data_root: Path,
    sites: Sequence[str],
    *,
    current: Callable[[str], DateWindow | None],
    champion: Champion,
    threshold: float,
    reference: DateWindow | None = None,
    options: DriftOptions | None = None,
    report_dir: Path | None = None,
    client: MlflowClient | None = None,
    on_site: Callable[[str], None] | None = None,
) -> list[PublishedDrift]:
    """Check each site in turn; publish each summary when `client` is given.

    `current` maps a site to its current window (sites receive data on their own clock), or
    to None when it has no new days; `reference` overrides the champion's training window
    at each site (the default reference).
    """
    results = []
    for site in sites:
        if on_site is not None:
            on_site(site)
        site_reference = reference or champion.for_site(site)
        source = "explicit" if reference else champion.source
        window = current(site)
        if window is None:
            results.append(PublishedDrift(NothingNew(site, str(site_reference), threshold, source), None))
            continue
        summary = check_site(
            data_root,
            site,
            reference=site_reference,
            current=window,
            threshold=threshold,
            champion=champion.model,
            options=options,
            report_dir=report_dir,
            reference_source=source,
        )
        run_id = publish_summary(client, summary) if client is not None else None
        results.append(PublishedDrift(summary, run_id))
    return results
