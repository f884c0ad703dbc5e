"""Running a command the way every suite wants it: output captured, failure explained."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence


class CommandFailed(AssertionError):
    """A command exited non-zero; the message carries its output."""


def run(
    cmd: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 300,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` to completion, output captured; `check` raises CommandFailed with it.

    `env` is the whole environment of the command (default: ours).
    """
    proc = subprocess.run(
        list(cmd),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and proc.returncode != 0:
        command = shlex.join(cmd)
        command = command if len(command) < 300 else command[:300] + " ..."
        raise CommandFailed(
            f"{command} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc
