"""One polling loop for every suite, and the one parser of `kubectl get` tables."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from tests.kit.commands import CommandFailed

T = TypeVar("T")


def wait_for(
    what: str,
    probe: Callable[[], T | Literal[False] | None],
    timeout: float = 60.0,
    interval: float = 1.0,
) -> T:
    """Poll `probe` until it returns something truthy, and return that.

    A kubectl/helm call that fails (`CommandFailed`) counts as "not yet": an API server
    that blinks once is worth another look. Any other exception fails at once. On timeout
    the error names `what` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except CommandFailed as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def printed_table(text: str) -> list[dict[str, str]]:
    """`kubectl get` table output as rows keyed by column header.

    Cells are cut at the header's column offsets (kubectl aligns them), so an empty cell
    does not shift the ones after it.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    headers = lines[0].split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{h: line[a:b].strip() for h, (a, b) in zip(headers, bounds, strict=True)} for line in lines[1:]]
