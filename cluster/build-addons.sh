#!/usr/bin/env bash
# Build the cluster add-ons from the Go module proxy, cached by version:
#   CoreDNS (cluster DNS), rancher's local-path-provisioner (dynamic PVs) and
#   kube-router (its NetworkPolicy firewall only).
# All publish plain modules without replace directives, so `go install m@v` works.
source "$(dirname "$0")/lib.sh"

build() { # name module version
  local name=$1 mod=$2 ver=$3 out="$CACHE/addons/$1/$3"
  if [[ -x "$out/$name" ]]; then info "$name $ver cached"; return; fi
  command -v go >/dev/null || die "go toolchain not found (needed for $name)"
  step "building $name $ver from the Go module proxy"
  mkdir -p "$out"
  local t0; t0=$(date +%s)
  # modules and build cache of its own, dropped once the binary is installed: ~4 GB for the
  # three that nothing else reads (the binaries are the cache)
  local work="$CACHE/addons/.build"
  CGO_ENABLED=0 GOBIN="$out" GOMODCACHE="$work/gomod" GOCACHE="$work/gocache" \
    lowprio go install -trimpath -ldflags "-s -w" "$mod@$ver"
  GOMODCACHE="$work/gomod" go clean -modcache
  rm -rf "$work"
  info "$name built in $(( $(date +%s) - t0 ))s"
}
build coredns github.com/coredns/coredns "$COREDNS_VERSION"
build local-path-provisioner github.com/rancher/local-path-provisioner "$LOCALPATH_VERSION"
build kube-router github.com/cloudnativelabs/kube-router/v2/cmd/kube-router "$KUBEROUTER_VERSION"
