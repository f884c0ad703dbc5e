#!/usr/bin/env bash
# Take the local cluster down: stop every process it started, by pid, and leave no
# process, mount, network namespace or iptables rule behind.
# Then it stops every orphaned cluster on the machine too (one whose owning process,
# e.g. a killed test run, or whose namespace holder is gone), found by its cgroups and
# its state dir, so nothing the harness started outlives it.
#   down.sh [--keep-docker] [--purge] [--no-reap]
# --purge also deletes the PKI (a new CA next time). Images and binaries stay cached
# in $CACHE either way.
source "$(dirname "$0")/lib.sh"
KEEP_DOCKER=0; PURGE=0; REAP=1
for a in "$@"; do
  case $a in --keep-docker) KEEP_DOCKER=1 ;; --purge) PURGE=1 ;; --no-reap) REAP=0 ;; *) die "unknown option $a" ;; esac
done

stop_pids() { # TERM them all, wait up to $1 s, then KILL the rest
  local grace=$1; shift
  local live=() p
  for p in "$@"; do kill -0 "$p" 2>/dev/null && live+=("$p"); done
  ((${#live[@]})) || return 0
  kill -TERM "${live[@]}" 2>/dev/null || true
  local end=$(( $(date +%s%N) + grace * 1000000000 ))
  while (( $(date +%s%N) < end )); do
    local still=()
    for p in "${live[@]}"; do kill -0 "$p" 2>/dev/null && still+=("$p"); done
    ((${#still[@]})) || return 0
    sleep 0.2
  done
  for p in "${live[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      info "pid $p ($(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-60)) did not stop on TERM in ${grace}s: KILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
}
pids_of() { local n f out=(); for n in "$@"; do f="$RUN/$n.pid"; [[ -f $f ]] && out+=("$(cat "$f")"); done; echo "${out[@]}"; }

step "stopping cluster $CLUSTER_ID"
# 1. the daemons, each by its recorded pid: first the node agents and the control
#    plane (their state is thrown away, so a short grace is enough), then the runtime
# shellcheck disable=SC2046
stop_pids 5 $(pids_of api-forward-host kube-router kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver api-forward-node)
# shellcheck disable=SC2046
step "stopping containerd and etcd"
stop_pids 10 $(pids_of containerd etcd)
step "stopping what is left (shims, pods, holder)"
# 2. whatever else is left: container shims, pod processes, socat children, the
#    namespace holder; found by cgroup, and by state dir for any process outside them
#    (a shim names its containerd socket, under $STATE, on its command line). Each by
#    pid, until none is left.
ancestors() { local p=$$; while [[ $p -gt 1 ]]; do echo "$p"; p="$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 1)"; done; }
state_pids() { # processes naming the state dir, except this script and its callers
  grep -laF -f <(printf '%s\n' "$STATE/") /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 | grep -vxF -f <(ancestors) || true
}
left() { { cluster_pids; state_pids; } | sort -un; }
had_processes="$(left)"
for round in $(seq 1 40); do
  pids="$(left)"
  [[ -z $pids ]] && break
  sig=TERM; ((round > 4)) && sig=KILL
  # shellcheck disable=SC2086
  kill -$sig $pids 2>/dev/null || true
  sleep 0.25
done
[[ -z "$(left)" ]] || die "processes of cluster $CLUSTER_ID still running: $(left | tr '\n' ' ')"
rm -f "$RUN/holder.pid"
step "removing cgroups; checking mounts"
# 3. the cgroups themselves (deepest first)
cgroups_remove "$CLUSTER_ID"
# 4. with every process gone, the node's net + mount namespaces are gone with them
#    (pod netns's, iptables rules, tmpfs's, overlay and volume mounts). Check it.
if grep -q " $STATE/" /proc/self/mountinfo; then
  die "mounts under $STATE are still present: $(grep " $STATE/" /proc/self/mountinfo | awk '{print $5}' | tr '\n' ' ')"
fi
# 5. mount points we had to create on the host, kubelet's sysctls
if [[ -f $RUN/created-dirs ]]; then
  while read -r d; do [[ -n $d ]] && rmdir "$d" 2>/dev/null || true; done < "$RUN/created-dirs"
  rm -f "$RUN/created-dirs"
fi
# (the machine's own values, recorded by the first cluster-up; this cluster ran a kubelet
# if it has a record of them, or if it had processes: its pid files may be gone)
if [[ -f $RUN/sysctl.saved || -n $had_processes ]] && [[ -f $CACHE/sysctl.orig ]]; then
  while IFS= read -r kv; do sysctl -q -w "$kv" >/dev/null 2>&1 || true; done < "$CACHE/sysctl.orig"
  rm -f "$RUN/sysctl.saved"
fi
# 6. runtime state (fresh cluster next time); the PKI stays unless --purge
rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/containerd" "$STATE/node" "$STATE/storage" \
       "$RUN" "$STATE/kubeconfig"
((PURGE)) && rm -rf "$STATE"
rm -f "$REGISTRY/$CLUSTER_ID"
step "cluster $CLUSTER_ID is down"
((REAP)) && reap_orphans
((KEEP_DOCKER)) || "$CLUSTER_DIR/docker-down.sh"
