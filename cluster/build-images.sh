#!/usr/bin/env bash
# Build every image the cluster needs, locally, with no registry:
#   local/debian:bookworm        debootstrap --variant=minbase bookworm -> docker import
#   local/python:3.11-slim       Debian's python3 on top of it (BASE_IMAGE for the project)
#   local/pause:3.10             the pod sandbox image (our own tiny pause binary)
#   local/coredns:<v>            CoreDNS built from the Go module proxy
#   local/local-path-provisioner:<v>
# Images live in the docker engine (its data root persists on this machine).
# Usage: build-images.sh [all|base|python|pause|addons]   (default: all)
source "$(dirname "$0")/lib.sh"
"$CLUSTER_DIR/docker-up.sh"

BASE_IMAGE_DEBIAN="$DEBIAN_IMAGE"
dbuild() { # docker build, quiet unless it fails
  local log="$CACHE/logs/docker-build.log"; mkdir -p "$CACHE/logs"
  docker build --network host "$@" >"$log" 2>&1 || { tail -30 "$log" >&2; die "docker build $* failed"; }
}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
what="${1:-all}"

build_base() {
  if have_image "$BASE_IMAGE_DEBIAN"; then info "$BASE_IMAGE_DEBIAN present"; return; fi
  local tarball="$CACHE/images/debian-bookworm-minbase.tar"
  if [[ ! -s $tarball ]]; then
    step "debootstrap --variant=minbase bookworm"
    command -v debootstrap >/dev/null || "$CLUSTER_DIR/install-deps.sh"
    local uri rootfs
    uri="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    uri="${uri:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}"
    mkdir -p "$CACHE/images" "$CACHE/logs"
    rootfs="$(mktemp -d "$CACHE/images/rootfs.XXXX")"
    lowprio debootstrap --variant=minbase bookworm "$rootfs" "$uri" >"$CACHE/logs/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/logs/debootstrap.log" >&2; rm -rf "$rootfs"; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  step "docker import $BASE_IMAGE_DEBIAN"
  docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tarball" "$BASE_IMAGE_DEBIAN" >/dev/null
}

build_python() {
  if have_image "$PYTHON_IMAGE"; then info "$PYTHON_IMAGE present"; return; fi
  build_base
  step "docker build $PYTHON_IMAGE (Debian python3 3.11)"
  dbuild --build-arg BASE="$BASE_IMAGE_DEBIAN" -t "$PYTHON_IMAGE" \
    -f "$CLUSTER_DIR/images/python.Dockerfile" "$CLUSTER_DIR/images"
}

scratch_image() { # image binary [entrypoint args...]
  local image=$1 bin=$2; shift 2
  if have_image "$image"; then info "$image present"; return; fi
  step "docker build $image (FROM scratch)"
  local ctx; ctx="$(mktemp -d)"
  cp "$bin" "$ctx/$(basename "$bin")"
  local ep; ep="$(printf '"%s",' "/$(basename "$bin")" "$@")"; ep="[${ep%,}]"
  printf 'FROM scratch\nCOPY %s /%s\nENTRYPOINT %s\n' "$(basename "$bin")" "$(basename "$bin")" "$ep" > "$ctx/Dockerfile"
  dbuild -t "$image" "$ctx"
  rm -rf "$ctx"
}

build_pause() {
  if have_image "$PAUSE_IMAGE"; then info "$PAUSE_IMAGE present"; return; fi
  local out="$CACHE/images/pause"; mkdir -p "$out"
  (cd "$CLUSTER_DIR/images/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/pause" .)
  scratch_image "$PAUSE_IMAGE" "$out/pause"
}

build_addons() {
  "$CLUSTER_DIR/build-addons.sh"
  scratch_image "$COREDNS_IMAGE" "$CACHE/addons/coredns/$COREDNS_VERSION/coredns"
  scratch_image "$LOCALPATH_IMAGE" \
    "$CACHE/addons/local-path-provisioner/$LOCALPATH_VERSION/local-path-provisioner"
}

case "$what" in
  base) build_base ;;
  python) build_python ;;
  pause) build_pause ;;
  addons) build_addons ;;
  all) build_base; build_python; build_pause; build_addons ;;
  *) die "unknown target $what" ;;
esac
