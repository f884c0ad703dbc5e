"""ProcessGroup adopts orphans only while it runs: afterwards this process is what it was, so
an orphan of something it runs later (another test's stand-in process) is reaped by init, not
left a zombie under us (tests/cluster/test_docker_down.py failed that way once a ProcessGroup
had run earlier in the same pytest process)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import time
from pathlib import Path

from healthrisk.processes import ProcessGroup


def is_subreaper() -> bool:
    was = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(37, ctypes.byref(was), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    return bool(was.value)


def orphan_is_reaped() -> bool:
    """Start a short-lived grandchild whose parent exits at once; True once it is gone from
    the process table (reaped by whoever adopted it)."""
    spawned = subprocess.run(
        ["bash", "-c", "(exec sleep 0.2) >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(spawned.stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    return False


def test_a_process_group_leaves_the_process_as_it_found_it(tmp_path: Path) -> None:
    assert not is_subreaper()
    with ProcessGroup(tmp_path) as group:
        assert is_subreaper(), "while it runs, it adopts its children's orphans"
        group.start("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"])
    assert not is_subreaper()
    assert orphan_is_reaped(), "an orphan started afterwards is reaped by init, not left a zombie"
