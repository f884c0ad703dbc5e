"""HTTP as the tests speak it: JSON in and out, on loopback only."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


def http_call(
    url: str, body: Any = None, *, headers: Mapping[str, str] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    """(HTTP status, parsed JSON body, else the first 500 bytes) of one call, whatever the status."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text[:500]


def http_json(
    url: str, body: Any = None, *, headers: Mapping[str, str] | None = None, timeout: float = 10
) -> Any:
    """GET (or POST `body` as JSON) and parse the answer; a 4xx/5xx fails with its body."""
    status, answer = http_call(url, body, headers=headers, timeout=timeout)
    if status >= 400:
        raise AssertionError(f"{url}: HTTP {status}: {answer!r}")
    return answer


def answers(url: str, timeout: float = 5) -> bool:
    """Whether `url` answers 200 now (a refused or failing request is a no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
