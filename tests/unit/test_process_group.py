"""ProcessGroup adopts orphans only while it runs: afterwards the process is what it was, so
an orphan of something it runs later (another test's stand-in process) goes to the next
subreaper up, not to it, to stay a zombie (tests/cluster/test_docker_down.py failed that way
once a ProcessGroup had run earlier in the same pytest process). Checked in a fresh
interpreter: this pytest process may hold a group open for a session-scoped fixture (which is
also why whether the orphan is reaped afterwards depends on who runs the suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHECK = """
import ctypes, json, sys
from pathlib import Path
from healthrisk.processes import ProcessGroup

def is_subreaper():
    was = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(37, ctypes.byref(was), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    return bool(was.value)

seen = {"before": is_subreaper()}
with ProcessGroup(Path(sys.argv[1])) as group:
    group.start("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"])
    seen["during"] = is_subreaper()
seen["after"] = is_subreaper()
print(json.dumps(seen))
"""


def test_a_process_group_leaves_the_process_as_it_found_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path)], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"before": False, "during": True, "after": False}, seen
