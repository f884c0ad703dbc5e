#!/usr/bin/env bash
# Stop the dockerd that docker-up.sh started (by its pid). Leaves an engine that
# somebody else started alone.
source "$(dirname "$0")/lib.sh"
DOCKER_PIDFILE=/var/run/health-risk-dockerd.pid
[[ -f $DOCKER_PIDFILE ]] || { info "no dockerd started by docker-up.sh"; exit 0; }
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
