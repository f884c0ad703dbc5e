"""cluster-down leaves nothing behind: no process, mount, network namespace, iptables rule.

This checks the local harness itself, on a second, throw-away cluster (own state dir,
own API port, own namespaces and cgroups), so a cluster that other tests use stays up.
It is deselected when KUBECONFIG points at some other cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest
from clusterkit import REPO, Kube, find_tool

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_cluster_down_leaves_no_process_mount_netns_or_iptables_rule(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the harness needs root (containerd, kubelet, namespaces)")
    state = tmp_path / "cluster"
    env = dict(os.environ, CLUSTER_STATE=str(state), CLUSTER_API_PORT=str(free_port()))
    env.pop("KUBECONFIG", None)
    before_rules = iptables_rules()
    before_mounts = mounts()
    before_netns_files = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()

    up = run(["bash", str(REPO / "cluster" / "up.sh")], env, timeout=900)
    kubeconfig = up.stdout.strip().splitlines()[-1]
    assert kubeconfig == str(state / "kubeconfig"), up.stdout
    kube = Kube(kubeconfig, find_tool("kubectl"))
    # put some of everything on the node: pod sandboxes (netns), overlay + volume mounts,
    # service rules in kube-proxy's iptables, a local-path PV
    kube.apply(
        textwrap.dedent(
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
        ),
        "default",
    )
    kube.run("rollout", "status", "deploy/sleeper", "--timeout=180s", timeout=200)

    cluster_id = "hr" + hashlib.sha1(str(state).encode()).hexdigest()[:6]
    pids = {
        int(p)
        for cg in (f"/sys/fs/cgroup/pids/{cluster_id}-daemons", f"/sys/fs/cgroup/pids/{cluster_id}")
        for dirpath, _dirs, files in os.walk(cg)
        if "cgroup.procs" in files
        for p in Path(dirpath, "cgroup.procs").read_text().split()
    }
    holder = int((state / "run" / "holder.pid").read_text())
    node_netns = os.stat(f"/proc/{holder}/ns/net").st_ino
    pod_netns = {os.stat(f"/proc/{p}/ns/net").st_ino for p in pids if os.path.exists(f"/proc/{p}/ns/net")} - {
        node_netns,
        os.stat("/proc/self/ns/net").st_ino,  # the host-side API forwarder
    }
    assert len(pids) > 10, f"expected the daemons, shims and pods in the cgroups, found {pids}"
    assert pod_netns, "expected pod network namespaces"
    during_mounts = mounts()
    assert during_mounts == before_mounts, (
        "the node's mounts should stay inside its own mount namespace; on the host appeared: "
        f"{sorted(during_mounts - before_mounts)}"
    )

    run(["bash", str(REPO / "cluster" / "down.sh"), "--keep-docker"], env, timeout=300)

    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    # a pid may have been reused by an unrelated process meanwhile: check what it is
    ours = [p for p in alive if str(state) in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    assert not ours, f"processes of the cluster still running: {ours}"
    for h in ("pids", "memory", "cpu"):
        for cg in (f"{cluster_id}-daemons", cluster_id):
            assert not os.path.exists(f"/sys/fs/cgroup/{h}/{cg}"), f"cgroup {h}:/{cg} left behind"
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
