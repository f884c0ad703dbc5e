#!/usr/bin/env bash
# Show what the local cluster runs and how much memory it uses.
source "$(dirname "$0")/lib.sh"
if ! holder_pid >/dev/null; then echo "cluster $CLUSTER_ID: down"; exit 0; fi
echo "cluster $CLUSTER_ID: up (holder pid $(holder_pid)), kubeconfig $KUBECONFIG_HOST"
for f in "$RUN"/*.pid; do
  n="$(basename "$f" .pid)"; p="$(cat "$f")"
  if kill -0 "$p" 2>/dev/null; then
    printf '  %-26s pid %-8s rss %6s MiB\n' "$n" "$p" "$(( $(awk '/VmRSS/{print $2}' "/proc/$p/status") / 1024 ))"
  else printf '  %-26s pid %-8s DEAD\n' "$n" "$p"; fi
done
mem() { local f
  for f in "$MEMORY_BASE$1/memory.usage_in_bytes" "$MEMORY_BASE$1/memory.current"; do
    [[ -f $f ]] && { echo $(( $(cat "$f") / 1048576 )); return; }
  done; echo 0; }
rss_total=0; for p in $(cluster_pids); do r=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0); rss_total=$((rss_total + ${r:-0})); done
echo "  processes: $(cluster_pids | wc -l); RSS sum $((rss_total / 1024)) MiB;" \
     "cgroup memory (incl. page cache): daemons $(mem "$CGROUP_DAEMONS") MiB, pods $(mem "$CGROUP_PODS") MiB"
kc get nodes -o wide 2>/dev/null | sed 's/^/  /' || true
kc get pods -A 2>/dev/null | sed 's/^/  /' || true
