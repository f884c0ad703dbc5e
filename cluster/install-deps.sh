#!/usr/bin/env bash
# Debian packages the local cluster needs (idempotent; apt is only called when
# something is missing).
source "$(dirname "$0")/lib.sh"

PKGS=(docker.io containerd runc containernetworking-plugins iptables ipset conntrack socat
      debootstrap ethtool ebtables iproute2 procps util-linux kmod ca-certificates curl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # no init system here: keep package scripts from trying to start services
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  stamp=/var/lib/apt/periodic/health-risk-update-stamp
  if [[ ! -e $stamp ]] || (( $(date +%s) - $(stat -c %Y "$stamp") > 86400 )); then
    apt-get update -qq; mkdir -p "$(dirname "$stamp")"; touch "$stamp"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  info "debian packages present"
fi
