"""The kit's long-lived helpers (port-forward, the operator) die with the test run that
started them, even when it is killed mid-way and no fixture teardown runs."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.kit.tools import REPO
from tests.kit.wait import wait_for


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_spawned_helper_dies_when_the_test_run_is_killed() -> None:
    run = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from tests.kit.commands import spawn; "
         "print(spawn(['sleep', '600']).pid, flush=True); time.sleep(600)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert run.stdout is not None
    helper = int(run.stdout.readline())
    try:
        assert not gone(helper)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        wait_for("the helper to die with the killed run", lambda: gone(helper), timeout=10, interval=0.1)
    finally:
        if not gone(helper):
            subprocess.run(["kill", "-KILL", str(helper)], check=False)
