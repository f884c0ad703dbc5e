#!/usr/bin/env bash
# Stop the dockerd that docker-up.sh started (by its pid). Leaves an engine that
# somebody else started alone, and the shared one while another checkout's cluster is
# registered (not orphaned): its image loads and builds need it.
source "$(dirname "$0")/lib.sh"
[[ -f $DOCKER_PIDFILE ]] || { info "no dockerd started by docker-up.sh"; exit 0; }
users=()
for f in "$REGISTRY"/hr??????; do
  [[ -f $f ]] || continue
  id="$(basename "$f")"
  [[ $id != "$CLUSTER_ID" ]] && ! orphaned "$id" && users+=("$id ($(registry_get "$id" state))")
done
if ((${#users[@]})); then
  info "dockerd left running: cluster(s) ${users[*]} still use it"
  exit 0
fi
pid="$(cat "$DOCKER_PIDFILE")"
if kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
  step "stopping dockerd (pid $pid)"
  # its containerd is its child; dockerd stops it on SIGTERM
  kids="$(pgrep -P "$pid" || true)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  for k in $kids; do kill -0 "$k" 2>/dev/null && kill -TERM "$k" || true; done
fi
rm -f "$DOCKER_PIDFILE"
