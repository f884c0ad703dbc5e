#!/usr/bin/env bash
# Build the Kubernetes server binaries from the Go module proxy, cached by version
# under $CACHE/kubernetes/$K8S_VERSION/bin. k8s.io/kubernetes cannot be `go install`ed
# directly (its go.mod replaces ~30 staging modules with ./staging paths), so we
# make a tiny wrapper module that replaces each staging module with its published
# v0.N.x tag, then `go build` the commands with the version ldflags that
# hack/lib/version.sh would set.
source "$(dirname "$0")/lib.sh"

BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
have_all() { for b in "${BINS[@]}"; do [[ -x "$K8S_BIN/$b" ]] || return 1; done; }
if have_all; then info "kubernetes $K8S_VERSION binaries cached in $K8S_BIN"; exit 0; fi

command -v go >/dev/null || die "go toolchain not found (needed to build kubernetes $K8S_VERSION)"
step "building kubernetes $K8S_VERSION from the Go module proxy (tens of minutes on 2 cores)"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
MINOR="${K8S_VERSION#v1.}"; MINOR="${MINOR%%.*}"
WORK="$CACHE/kubernetes/$K8S_VERSION/build"
mkdir -p "$WORK" "$K8S_BIN"
cd "$WORK"
# modules of its own too (~3 GB that only this build reads), dropped with the build cache
export GOMODCACHE="$WORK/gomod"

# fetch the module to read its replace block
MODDIR="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[[ -f "$MODDIR/go.mod" ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
mapfile -t STAGING < <(sed -n '/^replace (/,/^)/p' "$MODDIR/go.mod" | awk '$2=="=>" && $3 ~ /^\.\/staging/ {print $1}')
info "${#STAGING[@]} staging modules in the replace block"

rm -f go.mod go.sum
{
  echo "module local/k8sbuild"
  echo
  echo "go $(awk '$1=="go"{print $2; exit}' "$MODDIR/go.mod")"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  for m in "${STAGING[@]}"; do
    # a few sample-* modules are not published for every tag; they are not needed
    if (cd / && go list -m -json "$m@$STAGING_VERSION" >/dev/null 2>&1); then
      echo "	$m => $m $STAGING_VERSION"
    else
      info "skip $m (no $STAGING_VERSION on the proxy)"
    fi
  done
  echo ")"
} > go.mod.new
mv go.mod.new go.mod
cat > main.go <<'GO'
package main

func main() {}
GO

# the proxy does not tell the git commit; the release time is in the .info file
COMMIT="0000000000000000000000000000000000000000"
BUILD_DATE="$( (cd / && go list -m -json "k8s.io/kubernetes@$K8S_VERSION" 2>/dev/null | sed -n 's/.*"Time": "\(.*\)".*/\1/p') || true)"
BUILD_DATE="${BUILD_DATE:-1970-01-01T00:00:00Z}"
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR"
  LDFLAGS+=" -X $pkg.gitCommit=$COMMIT -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE"
done

PKGS=(); for b in "${BINS[@]}"; do PKGS+=("k8s.io/kubernetes/cmd/$b"); done
export CGO_ENABLED=0
step "go mod: resolving dependencies"
GOFLAGS="-mod=mod -buildvcs=false" lowprio go list "${PKGS[@]}" >/dev/null
step "go build ${BINS[*]} (nice, -p ${GO_BUILD_P:-2})"
t0=$(date +%s)
# a build cache of its own, dropped with the objects once the binaries are installed: it
# grows to several GB that nothing reuses (the binaries themselves are the cache)
export GOCACHE="$WORK/gocache"
GOFLAGS="-mod=mod -buildvcs=false" lowprio go build -p "${GO_BUILD_P:-2}" -trimpath -ldflags "$LDFLAGS" -o "$WORK/out/" "${PKGS[@]}"
for b in "${BINS[@]}"; do install -m 0755 "$WORK/out/$b" "$K8S_BIN/$b"; done
go clean -modcache
rm -rf "$GOCACHE" "$WORK/out"
info "built in $(( $(date +%s) - t0 ))s: $("$K8S_BIN/kubelet" --version)"
