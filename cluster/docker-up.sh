#!/usr/bin/env bash
# Start the Docker engine (Debian's docker.io) if it is not answering yet. Idempotent;
# others may call it. No bridge and no iptables rules: build and run with --network host.
source "$(dirname "$0")/lib.sh"
DOCKER_LOG="$CACHE/logs/dockerd.log"

if docker info >/dev/null 2>&1; then info "docker engine is up"; exit 0; fi
command -v dockerd >/dev/null || "$CLUSTER_DIR/install-deps.sh"
step "starting dockerd (--bridge=none --iptables=false)"
mkdir -p "$(dirname "$DOCKER_LOG")"
# a dead pidfile from an earlier run would make dockerd refuse to start
if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid
fi
nohup setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --log-level=warn >>"$DOCKER_LOG" 2>&1 </dev/null &
echo $! > "$DOCKER_PIDFILE"
wait_for 60 docker info || { tail -20 "$DOCKER_LOG" >&2; die "dockerd did not come up (log: $DOCKER_LOG)"; }
info "dockerd pid $(cat "$DOCKER_PIDFILE") ($(docker version -f '{{.Server.Version}}'))"
