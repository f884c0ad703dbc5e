#!/usr/bin/env bash
# Bring up a real single-node Kubernetes on this machine, with no registry:
#   etcd, kube-apiserver (RBAC + service accounts), kube-controller-manager,
#   kube-scheduler, containerd (CRI) + kubelet, kube-proxy (iptables), CNI bridge,
#   CoreDNS, local-path provisioner (default StorageClass).
#
# Isolation: the whole node runs inside a network namespace and a mount namespace of
# its own (held open by one "holder" process). Pods live in netns's under it. The
# node netns has no default route (no egress); the only way in from the host is
# 127.0.0.1:$API_PORT, forwarded to the API server over a unix socket. Every process
# is started into cgroups named after the cluster id, so cluster-down can find and
# stop each one by pid; when the last one exits, both namespaces (with every mount,
# iptables rule and pod netns in them) are gone.
#
# Idempotent: a running, healthy cluster is left alone. Prints the kubeconfig path.
source "$(dirname "$0")/lib.sh"

[[ $EUID -eq 0 ]] || die "cluster-up needs root (it runs containerd, kubelet, namespaces)"

# ---------------------------------------------------------------- fast path: already up
if holder_pid >/dev/null && [[ -f $RUN/up.done ]] && [[ -f $KUBECONFIG_HOST ]] && [[ -x $TOOLS_BIN/kubectl ]] &&
   kc get --raw /readyz >/dev/null 2>&1 && node_ready; then
  step "cluster $CLUSTER_ID already up"
  echo "$KUBECONFIG_HOST"
  exit 0
fi
if holder_pid >/dev/null || [[ -n "$(cluster_pids)" ]] || [[ -d $RUN ]]; then
  # a half-started cluster, or the remains of one whose processes were killed
  # without cluster-down (e.g. at the end of a session): clean up first
  step "leftovers of cluster $CLUSTER_ID found: cleaning them up first"
  "$CLUSTER_DIR/down.sh" --keep-docker
fi

# ---------------------------------------------------------------- build / fetch (cached)
step "dependencies (debian packages, binaries, images: built or fetched once, cached by version)"
"$CLUSTER_DIR/install-deps.sh"
"$CLUSTER_DIR/fetch-tools.sh"
"$CLUSTER_DIR/build-k8s.sh"
"$CLUSTER_DIR/build-images.sh" all

# ---------------------------------------------------------------- track every process
# clusters nothing can use any more (a killed test run's, one whose processes were
# killed without cluster-down): stopped, their empty cgroups removed
reap_orphans
mkdir -p "$STATE" "$PKI" "$RUN" "$LOGS"
register_cluster
step "cgroups $CGROUP_DAEMONS (daemons) and $CGROUP_PODS (kubelet cgroupRoot)"
cgroups_create
# from here on every child of this script is in the daemons cgroups
cgroups_join $$

# kubelet tunes a few global sysctls; remember the machine's own values (once per
# machine, so a cluster killed without cluster-down cannot make kubelet's values look
# like the originals) so that cluster-down can put them back
if [[ ! -s $CACHE/sysctl.orig ]]; then
  mkdir -p "$CACHE"
  for s in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
           kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    echo "$s=$(sysctl -n "$s")"
  done > "$CACHE/sysctl.orig"
fi
cp "$CACHE/sysctl.orig" "$RUN/sysctl.saved"

# ---------------------------------------------------------------- PKI
gen_pki() {
  cd "$PKI"
  [[ -f ca.key ]] || {
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -nodes -key ca.key -subj "/CN=health-risk-ca" -days 3650 -out ca.crt 2>/dev/null
  }
  [[ -f sa.key ]] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
  cert() { # name subject [sans]
    local name=$1 subj=$2 sans=${3:-}
    [[ -f $name.crt ]] && return
    openssl genrsa -out "$name.key" 2048 2>/dev/null
    openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
    {
      echo "basicConstraints=CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      if [[ -n $sans ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
      else echo "extendedKeyUsage=clientAuth"; fi
    } > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
  }
  cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,IP:$NODE_IP"
  cert admin "/O=system:masters/CN=kubernetes-admin"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  cert kube-proxy "/CN=system:kube-proxy"
  cert kube-router "/CN=system:kube-router"
  cert kubelet-serving "/CN=$NODE_NAME" "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
  # front proxy (aggregated APIs such as metrics-server): its own CA and client cert
  [[ -f front-proxy-ca.key ]] || {
    openssl genrsa -out front-proxy-ca.key 2048 2>/dev/null
    openssl req -x509 -new -nodes -key front-proxy-ca.key -subj "/CN=front-proxy-ca" -days 3650 \
      -out front-proxy-ca.crt 2>/dev/null
  }
  [[ -f front-proxy-client.crt ]] || {
    openssl genrsa -out front-proxy-client.key 2048 2>/dev/null
    openssl req -new -key front-proxy-client.key -subj "/CN=front-proxy-client" -out fpc.csr 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > fpc.ext
    openssl x509 -req -in fpc.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial \
      -days 3650 -extfile fpc.ext -out front-proxy-client.crt 2>/dev/null
    rm -f fpc.csr fpc.ext
  }
  chmod 600 ./*.key
  cd - >/dev/null
}
kubeconfig() { # file user server
  local CA_DATA CERT_DATA KEY_DATA KUBE_USER=$2 SERVER=$3
  CA_DATA="$(base64 -w0 < "$PKI/ca.crt")"
  CERT_DATA="$(base64 -w0 < "$PKI/$KUBE_USER.crt")"
  KEY_DATA="$(base64 -w0 < "$PKI/$KUBE_USER.key")"
  (umask 077 && render "$CLUSTER_DIR/templates/kubeconfig.yaml" > "$1")
}
step "PKI and kubeconfigs in $PKI"
gen_pki
for u in admin controller-manager scheduler kubelet kube-proxy kube-router; do
  kubeconfig "$RUN/$u.kubeconfig" "$u" "https://127.0.0.1:6443"
done
kubeconfig "$KUBECONFIG_HOST.tmp" admin "https://127.0.0.1:$API_PORT"

# ---------------------------------------------------------------- node namespaces
step "node namespaces (network + mount) for $CLUSTER_ID"
if ss -Hltn "sport = :$API_PORT" 2>/dev/null | grep -q .; then
  die "host port 127.0.0.1:$API_PORT is taken (set CLUSTER_API_PORT=... to use another)"
fi
# directories that get a private tmpfs inside the node mount ns; create the mount
# points on the host if missing (and remember to remove them again)
PRIVATE_DIRS=(/run/containerd /run/netns /var/lib/cni /var/log/containers /var/log/pods)
: > "$RUN/created-dirs"
for d in "${PRIVATE_DIRS[@]}"; do
  [[ -d $d ]] || { mkdir -p "$d"; echo "$d" >> "$RUN/created-dirs"; }
done
# the holder: new mount ns (slave: host mounts still come in, ours never leak out)
# and a new net ns; it mounts the private tmpfs's, then just sleeps.
unshare --mount --propagation slave --net -- bash -c '
  for d in "$@"; do mount -t tmpfs -o mode=0755,size=256m hr-node "$d"; done
  ip link set lo up
  exec -a hr-node-holder sleep infinity' hr-node-holder "${PRIVATE_DIRS[@]}" \
  >"$LOGS/holder.log" 2>&1 </dev/null &
echo $! > "$RUN/holder.pid"
wait_for 10 holder_pid || die "node namespace holder did not start"
register_cluster "$(holder_pid):$(proc_start "$(holder_pid)")"
# wait until the holder has exec'd into sleep (mounts done)
wait_for 10 bash -c "grep -q '^sleep' /proc/$(cat "$RUN/holder.pid")/comm"
# the node's own address: a veth pair with both ends inside the node netns (this
# kernel has no dummy driver); nothing connects it to the host
in_node ip link add hr0 type veth peer name hr0p
in_node ip addr add "$NODE_IP/24" dev hr0
in_node ip link set hr0p up
in_node ip link set hr0 up
in_node ip route add "$SERVICE_CIDR" dev hr0       # so ClusterIPs route before DNAT
info "holder pid $(holder_pid); node ip $NODE_IP; no default route (no egress)"

start() { # name cmd... : start a daemon inside the node namespaces, record its pid
  local name=$1; shift
  nsenter -t "$(holder_pid)" --net --mount -- "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$RUN/$name.pid"
}

# ---------------------------------------------------------------- etcd
step "etcd $("$TOOLS_BIN/etcd" --version | awk '/etcd Version/{print $3}')"
mkdir -p "$STATE/etcd"
start etcd "$TOOLS_BIN/etcd" --name hr --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster hr=http://127.0.0.1:2380 --unsafe-no-fsync --quota-backend-bytes 2147483648 \
  --snapshot-count 10000 --log-level warn
wait_for 30 in_node "$TOOLS_BIN/etcdctl" --endpoints http://127.0.0.1:2379 endpoint health \
  || { tail "$LOGS/etcd.log" >&2; die "etcd did not become healthy"; }

# ---------------------------------------------------------------- kube-apiserver
step "kube-apiserver $K8S_VERSION"
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers http://127.0.0.1:2379 \
  --bind-address 0.0.0.0 --secure-port 6443 --advertise-address "$NODE_IP" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --authorization-mode Node,RBAC \
  --client-ca-file "$PKI/ca.crt" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --enable-admission-plugins NodeRestriction \
  --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
  --allow-privileged=true --profiling=false \
  --cert-dir "$RUN/apiserver-certs" \
  --event-ttl 1h --v 1
# host side: 127.0.0.1:$API_PORT -> unix socket -> 127.0.0.1:6443 in the node netns
rm -f "$RUN/api.sock"
start api-forward-node socat "UNIX-LISTEN:$RUN/api.sock,fork,unlink-early" TCP:127.0.0.1:6443
socat "TCP-LISTEN:$API_PORT,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$RUN/api.sock" \
  >"$LOGS/api-forward-host.log" 2>&1 </dev/null &
echo $! > "$RUN/api-forward-host.pid"
mv "$KUBECONFIG_HOST.tmp" "$KUBECONFIG_HOST"
wait_for 90 kc get --raw /readyz || { tail -20 "$LOGS/kube-apiserver.log" >&2; die "kube-apiserver not ready"; }
info "API server ready at https://127.0.0.1:$API_PORT"

# ---------------------------------------------------------------- controllers
step "kube-controller-manager and kube-scheduler"
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$RUN/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --allocate-node-cidrs=false \
  --controllers '*,bootstrapsigner,tokencleaner' --v 1
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$RUN/scheduler.kubeconfig" \
  --authentication-kubeconfig "$RUN/scheduler.kubeconfig" \
  --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --v 1

# ---------------------------------------------------------------- containerd
step "containerd $(containerd --version | awk '{print $3}') (own root/state/socket, CRI, runc, cgroupfs)"
CD="$STATE/containerd"; CNI_CONF="$STATE/node/cni"; mkdir -p "$CD/root" "$CD/state" "$CNI_CONF" "$STATE/node/cni-ipam"
render "$CLUSTER_DIR/templates/containerd.toml" > "$CD/config.toml"
render "$CLUSTER_DIR/templates/cni-bridge.conflist" > "$CNI_CONF/10-hr-bridge.conflist"
start containerd containerd --config "$CD/config.toml"
wait_for 30 ctr --address "$CONTAINERD_SOCK" version || { tail "$LOGS/containerd.log" >&2; die "containerd did not start"; }

step "import local images into the node (pause, coredns, local-path, debian, python)"
"$CLUSTER_DIR/load-image.sh" "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$LOCALPATH_IMAGE" "$DEBIAN_IMAGE" "$PYTHON_IMAGE"

# ---------------------------------------------------------------- kubelet
step "kubelet (containerd CRI, cgroupfs, cgroupRoot $CGROUP_PODS)"
KL="$STATE/kubelet"; mkdir -p "$KL" "$STATE/node"
: > "$STATE/node/resolv.conf"     # pods with dnsPolicy Default get no upstream DNS: no egress
render "$CLUSTER_DIR/templates/kubelet.yaml" > "$STATE/node/kubelet.yaml"
start kubelet "$K8S_BIN/kubelet" --config "$STATE/node/kubelet.yaml" \
  --kubeconfig "$RUN/kubelet.kubeconfig" --root-dir "$KL" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1

# ---------------------------------------------------------------- kube-proxy
step "kube-proxy (iptables, inside the node netns)"
render "$CLUSTER_DIR/templates/kube-proxy.yaml" > "$STATE/node/kube-proxy.yaml"
start kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/node/kube-proxy.yaml" --v 1

info "waiting for node $NODE_NAME to be Ready"
wait_for 120 node_ready \
  || { tail -30 "$LOGS/kubelet.log" >&2; die "node did not become Ready (log: $LOGS/kubelet.log)"; }

# ---------------------------------------------------------------- add-ons
step "add-ons: CoreDNS, local-path provisioner + default StorageClass, kube-router's RBAC"
STORAGE_DIR="$STATE/storage"; mkdir -p "$STORAGE_DIR"
for f in "$CLUSTER_DIR"/manifests/*.yaml; do echo "---"; render "$f"; done | kc apply -f - >/dev/null
kc -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null \
  || { kc -n kube-system describe pods -l k8s-app=kube-dns | tail -30 >&2; die "CoreDNS not ready"; }
kc -n local-path-storage rollout status deploy/local-path-provisioner --timeout=120s >/dev/null \
  || die "local-path provisioner not ready"

step "NetworkPolicy enforcement: kube-router $KUBEROUTER_VERSION (firewall only, in the node netns)"
start kube-router "$CACHE/addons/kube-router/$KUBEROUTER_VERSION/kube-router" \
  --kubeconfig "$RUN/kube-router.kubeconfig" --hostname-override "$NODE_NAME" \
  --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
  --service-cluster-ip-range "$SERVICE_CIDR" --health-port 20244 --metrics-port 0 --v 1
# enforcing once it is healthy and every running pod has its firewall chain
pods_firewalled() {
  in_node curl -fsS --max-time 2 http://127.0.0.1:20244/healthz >/dev/null || return 1
  local chains running
  chains="$(in_node iptables-save -t filter | grep -c '^:KUBE-POD-FW-')"
  running="$(kc get pods -A --field-selector status.phase=Running -o name | wc -l)"
  ((running > 0 && chains >= running))
}
wait_for 120 pods_firewalled \
  || { tail -30 "$LOGS/kube-router.log" >&2; die "kube-router does not enforce NetworkPolicies (log: $LOGS/kube-router.log)"; }
info "kube-router: $(in_node iptables-save -t filter | grep -c '^:KUBE-POD-FW-') pod firewall chains"

# the default ServiceAccount must exist before anyone creates pods in default
wait_for 30 kc -n default get serviceaccount default

step "Services answer pods (DNS and the API server through kube-proxy)"
kc -n kube-system delete job service-probe --ignore-not-found >/dev/null
render "$CLUSTER_DIR/templates/service-probe.yaml" | kc apply -f - >/dev/null
probe_finished() { [[ -n "$(kc -n kube-system get job service-probe -o jsonpath='{.status.succeeded}{.status.failed}')" ]]; }
wait_for 180 probe_finished || true
if [[ "$(kc -n kube-system get job service-probe -o jsonpath='{.status.succeeded}')" != 1 ]]; then
  kc -n kube-system logs job/service-probe >&2 || true
  die "pods cannot reach Services (logs: $LOGS/kube-proxy.log, $LOGS/kubelet.log)"
fi
info "$(kc -n kube-system logs job/service-probe | tail -1)"

touch "$RUN/up.done"
mkdir -p "$STATE/bin"
for t in kubectl helm; do ln -sf "$TOOLS_BIN/$t" "$STATE/bin/$t"; done
step "cluster $CLUSTER_ID is up: $(kc version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v1[^"]*\)".*/\1/p' | tail -1), node $NODE_NAME Ready"
info "export KUBECONFIG=$KUBECONFIG_HOST PATH=$STATE/bin:\$PATH   (pinned kubectl + helm)"
echo "$KUBECONFIG_HOST"
