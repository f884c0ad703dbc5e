"""Running a command the way every suite wants it: output captured, failure explained."""

from __future__ import annotations

import ctypes
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Looked up here, not in the forked child: the child then runs no import and no dlopen,
# whose locks another thread of the test run might hold at fork.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


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


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGKILL when the test run that started
    it dies, however it dies (a killed run skips every fixture's teardown)."""
    if _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def spawn(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start a long-lived helper (port-forward, operator) that never outlives the test run."""
    return subprocess.Popen(list(cmd), preexec_fn=_die_with_parent, **popen)
