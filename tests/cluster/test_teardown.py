"""cluster-down leaves nothing behind: no process, mount, network namespace, iptables rule.

This checks the local harness itself, on a second, throw-away cluster (own state dir,
own API port, own namespaces and cgroups), so a cluster that other tests use stays up.
Twice: taken down by its own `down.sh`, and orphaned (the test run that owned it killed
mid-way, its pid files lost) then found and stopped by another checkout's `down.sh`.
It is deselected when KUBECONFIG points at some other cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kit.commands import run
from tests.kit.http import free_port
from tests.kit.kube import Kube
from tests.kit.tools import REPO, find_tool

pytestmark = [pytest.mark.cluster, pytest.mark.harness]


def iptables_rules() -> list[str]:
    """Host netns rules of every table, without counters or comments about time."""
    rules: list[str] = []
    for tool in ("iptables-save", "ip6tables-save"):
        proc = subprocess.run([tool], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("#"):
                continue
            rules.append(re.sub(r"\[\d+:\d+\]", "", line))
    return rules


def mounts() -> set[str]:
    """Host mounts as 'mountpoint fstype source'."""
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype, source = ([*post.split(), "", ""])[:2]
        out.add(f"{pre.split()[4]} {fstype} {source}")
    return out


def netns_inodes() -> set[int]:
    inodes = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return inodes


WORKLOAD = textwrap.dedent(
    """\
    apiVersion: v1
    kind: PersistentVolumeClaim
    metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: sleeper}
    spec:
      replicas: 2
      selector: {matchLabels: {app: sleeper}}
      template:
        metadata: {labels: {app: sleeper}}
        spec:
          containers:
          - name: main
            image: local/debian:bookworm
            imagePullPolicy: Never
            command: [sleep, infinity]
            volumeMounts:
            - {name: scratch, mountPath: /scratch}
            - {name: data, mountPath: /data}
          volumes:
          - {name: scratch, emptyDir: {medium: Memory}}
          - {name: data, persistentVolumeClaim: {claimName: data}}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: sleeper}
    spec:
      selector: {app: sleeper}
      ports: [{port: 80}]
    """
)


V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
PIDS_CGROUPS = "/sys/fs/cgroup" if V2 else "/sys/fs/cgroup/pids"


@dataclass
class Throwaway:
    state: Path
    env: dict[str, str]
    cluster_id: str

    def cgroup_pids(self) -> set[int]:
        return {
            int(p)
            for cg in (f"{PIDS_CGROUPS}/{self.cluster_id}-daemons", f"{PIDS_CGROUPS}/{self.cluster_id}")
            for dirpath, _dirs, files in os.walk(cg)
            if "cgroup.procs" in files
            for p in Path(dirpath, "cgroup.procs").read_text().split()
        }

    def shims(self) -> set[int]:
        """containerd-shim processes of this cluster, found by the socket they name."""
        pattern = f"containerd-shim.*{self.state}/"
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        return {int(p) for p in found.stdout.split()}


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Throwaway]:
    if os.geteuid() != 0:
        pytest.fail("the harness needs root (containerd, kubelet, namespaces)")
    state = tmp_path / "cluster"
    # owned by this test run: if it is killed, the next cluster-up/down anywhere stops it
    env = dict(
        os.environ,
        CLUSTER_STATE=str(state),
        CLUSTER_API_PORT=str(free_port()),
        CLUSTER_OWNER_PID=str(os.getpid()),
    )
    env.pop("KUBECONFIG", None)
    cluster = Throwaway(state, env, "hr" + hashlib.sha1(str(state).encode()).hexdigest()[:6])
    yield cluster
    # whatever happened in the test, the throw-away cluster does not outlive it
    subprocess.run(["bash", str(REPO / "cluster" / "down.sh"), "--keep-docker", "--no-reap"],
                   env=env, capture_output=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("how", ["own-down", "orphan-reaped"])
def test_cluster_down_leaves_no_process_mount_netns_or_iptables_rule(
    throwaway: Throwaway, tmp_path: Path, how: str
) -> None:
    state, env = throwaway.state, dict(throwaway.env)
    before_rules = iptables_rules()
    before_mounts = mounts()
    before_netns_files = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    owner = None
    if how == "orphan-reaped":
        # stands for the test run that started the cluster: killed mid-way below
        owner = subprocess.Popen(["sleep", "3600"])
        env["CLUSTER_OWNER_PID"] = str(owner.pid)

    up = run(["bash", str(REPO / "cluster" / "up.sh")], env=env, timeout=900)
    kubeconfig = up.stdout.strip().splitlines()[-1]
    assert kubeconfig == str(state / "kubeconfig"), up.stdout
    kube = Kube(kubeconfig, find_tool("kubectl"), find_tool("helm"), namespace="default")
    # put some of everything on the node: pod sandboxes (netns), overlay + volume mounts,
    # service rules in kube-proxy's iptables, a local-path PV
    kube.apply(WORKLOAD)
    kube.kubectl("rollout", "status", "deploy/sleeper", "--timeout=180s", timeout=200)

    pids = throwaway.cgroup_pids()
    shims = throwaway.shims()
    holder = int((state / "run" / "holder.pid").read_text())
    node_netns = os.stat(f"/proc/{holder}/ns/net").st_ino
    pod_netns = {os.stat(f"/proc/{p}/ns/net").st_ino for p in pids if os.path.exists(f"/proc/{p}/ns/net")} - {
        node_netns,
        os.stat("/proc/self/ns/net").st_ino,  # the host-side API forwarder
    }
    assert len(pids) > 10, f"expected the daemons, shims and pods in the cgroups, found {pids}"
    assert shims, "expected containerd-shim processes for the pods"
    assert pod_netns, "expected pod network namespaces"
    during_mounts = mounts()
    assert during_mounts == before_mounts, (
        "the node's mounts should stay inside its own mount namespace; on the host appeared: "
        f"{sorted(during_mounts - before_mounts)}"
    )

    if how == "own-down":
        run(["bash", str(REPO / "cluster" / "down.sh"), "--keep-docker"], env=env, timeout=300)
    else:
        assert owner is not None
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        # the run's pid files are gone too: the cluster is found by its cgroups and state dir
        subprocess.run(["rm", "-rf", str(state / "run")], check=True)
        other_checkout = dict(env, CLUSTER_STATE=str(tmp_path / "other-checkout"))
        del other_checkout["CLUSTER_OWNER_PID"]
        down = ["bash", str(REPO / "cluster" / "down.sh"), "--keep-docker"]
        reaped = run(down, env=other_checkout, timeout=300)
        assert f"cluster {throwaway.cluster_id} ({state}) is orphaned" in reaped.stderr, reaped.stderr

    alive = [p for p in pids | shims if os.path.exists(f"/proc/{p}")]
    # a pid may have been reused by an unrelated process meanwhile: check what it is
    ours = [p for p in alive if str(state) in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    assert not ours, f"processes of the cluster still running: {ours}"
    assert not throwaway.shims(), "containerd-shim processes of the cluster still running"
    for base in (
        ["/sys/fs/cgroup"] if V2 else ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu"]
    ):
        for cg in (f"{throwaway.cluster_id}-daemons", throwaway.cluster_id):
            assert not os.path.exists(f"{base}/{cg}"), f"cgroup {base}/{cg} left behind"
    left_netns = netns_inodes() & ({node_netns} | pod_netns)
    assert not left_netns, f"network namespaces still alive: {left_netns}"
    after_files = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert after_files <= before_netns_files, f"netns files left: {after_files - before_netns_files}"
    after_mounts = mounts()
    assert not [m for m in after_mounts - before_mounts if str(state) in m or "hr-node" in m], sorted(
        after_mounts - before_mounts
    )
    assert iptables_rules() == before_rules, "host iptables rules changed"
    assert not any(str(state) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
    leftovers = subprocess.run(["pgrep", "-af", str(state)], capture_output=True, text=True).stdout
    assert not leftovers.strip(), f"processes mentioning the state dir: {leftovers}"
    assert not (state / "run").exists() and not (state / "kubeconfig").exists()
    registry = Path(os.environ.get("HEALTHRISK_CACHE", "/var/cache/health-risk")) / "clusters"
    assert not (registry / throwaway.cluster_id).exists(), "the cluster's registry record is left"
