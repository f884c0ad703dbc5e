#!/usr/bin/env bash
# Take the local cluster down: stop every process it started, by pid, and leave no
# process, mount, network namespace or iptables rule behind.
#   down.sh [--keep-docker] [--purge]
# --purge also deletes the PKI (a new CA next time). Images and binaries stay cached
# in $CACHE either way.
source "$(dirname "$0")/lib.sh"
KEEP_DOCKER=0; PURGE=0
for a in "$@"; do case $a in --keep-docker) KEEP_DOCKER=1 ;; --purge) PURGE=1 ;; *) die "unknown option $a" ;; esac; done

stop_pid() { # name pid : TERM, wait, KILL
  local name=$1 pid=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  info "$name (pid $pid) did not stop on TERM: KILL"
  kill -KILL "$pid" 2>/dev/null || true
}

step "stopping cluster $CLUSTER_ID"
# 1. the daemons, newest first, each by its recorded pid
for name in api-forward-host kube-proxy kubelet kube-scheduler kube-controller-manager \
            kube-apiserver api-forward-node containerd etcd; do
  f="$RUN/$name.pid"; [[ -f $f ]] || continue
  stop_pid "$name" "$(cat "$f")"; rm -f "$f"
done
# 2. whatever else is left in our cgroups: container shims, pod processes, socat
#    children, the namespace holder. Each by pid, until the cgroups are empty.
for round in $(seq 1 40); do
  pids="$(cluster_pids)"
  [[ -z $pids ]] && break
  sig=TERM; ((round > 8)) && sig=KILL
  # shellcheck disable=SC2086
  kill -$sig $pids 2>/dev/null || true
  sleep 0.25
done
[[ -z "$(cluster_pids)" ]] || die "processes still running in $CGROUP_DAEMONS/$CGROUP_PODS: $(cluster_pids | tr '\n' ' ')"
rm -f "$RUN/holder.pid"
# 3. the cgroups themselves (deepest first)
for h in "${TRACK_HIERARCHIES[@]}"; do
  base="$(cg_path "$h" "")"; [[ -n $base ]] || continue
  for cg in "$CGROUP_PODS" "$CGROUP_DAEMONS"; do
    [[ -d $base$cg ]] && find "$base$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
done
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
if [[ -f $RUN/sysctl.saved ]]; then
  while IFS= read -r kv; do sysctl -q -w "$kv" >/dev/null 2>&1 || true; done < "$RUN/sysctl.saved"
  rm -f "$RUN/sysctl.saved"
fi
# 6. runtime state (fresh cluster next time); the PKI stays unless --purge
rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/containerd" "$STATE/node" "$STATE/storage" \
       "$RUN" "$STATE/kubeconfig"
((PURGE)) && rm -rf "$STATE"
((KEEP_DOCKER)) || "$CLUSTER_DIR/docker-down.sh"
step "cluster $CLUSTER_ID is down"
