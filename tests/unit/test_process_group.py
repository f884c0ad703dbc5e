"""ProcessGroup adopts orphans only while it runs: afterwards the process is what it was, so
an orphan of something it runs later (another test's stand-in process) is reaped by init, not
left a zombie under it (tests/cluster/test_docker_down.py failed that way once a ProcessGroup
had run earlier in the same pytest process). Checked in a fresh interpreter: this pytest
process may hold a group open for a session-scoped fixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHECK = """
import ctypes, json, subprocess, sys, time
from pathlib import Path
from healthrisk.processes import ProcessGroup

def is_subreaper():
    was = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(37, ctypes.byref(was), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    return bool(was.value)

def orphan_reaped():
    # a grandchild whose parent exits at once: gone from the process table once its adopter reaps it
    out = subprocess.run(["bash", "-c", "(exec sleep 0.2) >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout
    proc = Path(f"/proc/{int(out)}")
    deadline = time.monotonic() + 10
    while proc.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not proc.exists()

seen = {"before": is_subreaper()}
with ProcessGroup(Path(sys.argv[1])) as group:
    group.start("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"])
    seen["during"] = is_subreaper()
seen["after"] = is_subreaper()
seen["orphan_reaped_after"] = orphan_reaped()
print(json.dumps(seen))
"""


def test_a_process_group_leaves_the_process_as_it_found_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path)], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"before": False, "during": True, "after": False, "orphan_reaped_after": True}, seen
