"""Date windows written `FROM..TO`, inclusive at both ends, and the rule that picks a training's window."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DateWindow:
    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"date window {self} ends before it starts")

    @classmethod
    def parse(cls, text: str) -> DateWindow:
        """Parse `YYYY-MM-DD..YYYY-MM-DD` (a single date means a one-day window)."""
        first, sep, last = text.partition("..")
        try:
            start = dt.date.fromisoformat(first.strip())
            end = dt.date.fromisoformat(last.strip()) if sep else start
        except ValueError as exc:
            raise ValueError(f"date window {text!r} is not of the form YYYY-MM-DD..YYYY-MM-DD") from exc
        return cls(start, end)

    def days(self) -> Iterator[dt.date]:
        for offset in range((self.end - self.start).days + 1):
            yield self.start + dt.timedelta(days=offset)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.start <= day <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


class NoCommonDay(ValueError):
    """The sites share no day of data, so no window can end on one; the message lists each site's newest."""


ROLLING_PATTERN = r"^[1-9][0-9]*d$"  # the CRD's grammar for dataWindow.last, e.g. 28d


def newest_common_day(site_days: Mapping[str, Iterable[dt.date]]) -> dt.date:
    """The newest day every site has a file for (files are written whole, so a file is a complete day)."""
    days = {site: set(found) for site, found in site_days.items()}
    if not days:
        raise NoCommonDay("no sites to take a window from")
    common = set.intersection(*days.values())
    if not common:
        newest = ", ".join(
            f"{site}: {max(found).isoformat() if found else 'no data'}"
            for site, found in sorted(days.items())
        )
        raise NoCommonDay(f"the sites have no day of data in common (newest day per site: {newest})")
    return max(common)


@dataclass(frozen=True)
class WindowRule:
    """What a training reads (spec.dataWindow, `--window`): a fixed window, or the last
    `last_days` days up to the newest day every participating site has, resolved anew at
    every trigger so each retrain sees the days that arrived since the one before."""

    fixed: DateWindow | None = None
    last_days: int | None = None

    def __post_init__(self) -> None:
        if (self.fixed is None) == (self.last_days is None):
            raise ValueError("a data window is either fixed (from..to) or rolling (last N days), not both")
        if self.last_days is not None and self.last_days < 1:
            raise ValueError(f"a rolling window needs at least 1 day, got {self.last_days}")

    @classmethod
    def parse(cls, text: str) -> WindowRule:
        """`FROM..TO` (fixed) or `28d` (the last 28 days)."""
        text = text.strip()
        if re.fullmatch(ROLLING_PATTERN, text):
            return cls(last_days=int(text[:-1]))
        try:
            return cls(fixed=DateWindow.parse(text))
        except ValueError as exc:
            raise ValueError(
                f"data window {text!r} is neither FROM..TO nor a number of days such as 28d"
            ) from exc

    @property
    def rolling(self) -> bool:
        return self.last_days is not None

    def resolve(self, site_days: Mapping[str, Iterable[dt.date]]) -> dict[str, DateWindow]:
        """Each participating site's window (the keys of `site_days`): the one rule the
        operator and the embedded retrain and monitor resolve windows with. A fixed window
        ignores the days; a rolling one ends on the newest day every site has."""
        if self.fixed is not None:
            return dict.fromkeys(site_days, self.fixed)
        return dict.fromkeys(site_days, self.ending(newest_common_day(site_days)))

    def ending(self, newest_common: dt.date) -> DateWindow:
        """The window when the newest day every site has is `newest_common` (what `resolve`
        finds; the operator learns it from pods that list each site's days)."""
        if self.fixed is not None:
            return self.fixed
        assert self.last_days is not None
        return DateWindow(newest_common - dt.timedelta(days=self.last_days - 1), newest_common)

    def __str__(self) -> str:
        return str(self.fixed) if self.fixed is not None else f"{self.last_days}d"


def day_runs(days: Iterable[dt.date]) -> list[DateWindow]:
    """Consecutive days as windows: a site's inventory in a few strings, however many days."""
    runs: list[DateWindow] = []
    for day in sorted(set(days)):
        if runs and day == runs[-1].end + dt.timedelta(days=1):
            runs[-1] = DateWindow(runs[-1].start, day)
        else:
            runs.append(DateWindow(day, day))
    return runs


def training_fingerprint(windows: Mapping[str, DateWindow], shaping: str) -> str:
    """What a training read, in one string: the sites, each one's window, and `shaping` (a
    hash of everything else that shapes the model). Equal fingerprints, equal trainings:
    a trigger whose fingerprint equals the last attempt's is skipped (RetrainSkipped)."""
    document = {
        "windows": {site: str(window) for site, window in sorted(windows.items())},
        "shaping": shaping,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
