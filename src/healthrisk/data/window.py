"""Date windows written `FROM..TO`, inclusive at both ends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
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
