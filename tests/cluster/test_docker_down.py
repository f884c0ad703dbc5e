"""`make cluster-down` stops the dockerd that `docker-up.sh` started only when no other
cluster uses it: the engine is shared by every checkout's cluster on the machine (image
builds and loads), so while another, live cluster is registered it stays up.

No cluster and no root needed: a stand-in process named dockerd, a registry and a pid file
under tmp_path (HEALTHRISK_CACHE, HEALTHRISK_DOCKER_PIDFILE), and the real docker-down.sh.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.commands import run
from tests.kit.tools import REPO


def start_time(pid: int) -> str:
    """The process's start time as cluster/lib.sh's proc_start reads it (pid reuse)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[int]:
    """A process whose command line names dockerd, as docker-down.sh checks before it stops one.
    Not our child (like the real one): stopped, it is gone, not a zombie waiting for us."""
    started = run(["bash", "-c", "(exec -a dockerd sleep 600) >/dev/null 2>&1 & echo $!"])
    pid = int(started.stdout)
    (tmp_path / "dockerd.pid").write_text(f"{pid}\n")
    yield pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def docker_down(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        HEALTHRISK_CACHE=str(tmp_path / "cache"),
        HEALTHRISK_DOCKER_PIDFILE=str(tmp_path / "dockerd.pid"),
        CLUSTER_STATE=str(tmp_path / "this-checkout"),
    )
    return run(["bash", str(REPO / "cluster" / "docker-down.sh")], env=env, timeout=60)


def register(tmp_path: Path, cluster_id: str, owner: str) -> None:
    registry = tmp_path / "cache" / "clusters"
    registry.mkdir(parents=True, exist_ok=True)
    (registry / cluster_id).write_text(f"state={tmp_path / cluster_id}\nowner={owner}\nholder=\n")


def test_the_shared_dockerd_stays_up_while_another_cluster_is_registered(
    tmp_path: Path, dockerd: int
) -> None:
    # another checkout's cluster, its owner (this test run) alive
    register(tmp_path, "hr0a0a0a", f"{os.getpid()}:{start_time(os.getpid())}")
    # and an orphan (owner gone): it needs no engine, and does not keep one up
    gone = subprocess.Popen(["true"])
    gone.wait()
    register(tmp_path, "hr0b0b0b", f"{gone.pid}:0")

    kept = docker_down(tmp_path)
    assert running(dockerd), "dockerd was stopped while another cluster is registered"
    assert "hr0a0a0a" in kept.stderr and "hr0b0b0b" not in kept.stderr, kept.stderr
    assert (tmp_path / "dockerd.pid").exists()

    (tmp_path / "cache" / "clusters" / "hr0a0a0a").unlink()
    docker_down(tmp_path)
    assert not running(dockerd), "with no other cluster, cluster-down stops its dockerd"
    assert not (tmp_path / "dockerd.pid").exists()
