#!/usr/bin/env bash
# Docker Compose v2 for testing compose.yaml on Debian bookworm, whose docker-compose is
# the old v1. Takes Debian sid's docker-compose (v2, one static binary) with a separate
# apt state, so the system stays on bookworm; prints the binary's path.
#   images/fetch-compose.sh    -> /var/cache/health-risk/tools/compose/docker-compose
set -euo pipefail
cache="${HEALTHRISK_CACHE:-/var/cache/health-risk}"
out="$cache/tools/compose"
if [[ -x $out/docker-compose ]]; then echo "$out/docker-compose"; exit 0; fi
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
  # a Compose v2 plugin is already there; use it through a tiny wrapper
  mkdir -p "$out"; printf '#!/bin/sh\nexec docker compose "$@"\n' > "$out/docker-compose"
  chmod +x "$out/docker-compose"; echo "$out/docker-compose"; exit 0
fi
sid="$cache/apt-sid"; mkdir -p "$sid/lists/partial" "$sid/archives/partial" "$sid/debs" "$out"
uri="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
uri="${uri:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}"
[[ -n $uri ]] || { echo "no Debian mirror in the apt sources" >&2; exit 1; }
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri sid main" > "$sid/sources.list"
apt=(apt-get -o Dir::Etc::SourceList="$sid/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$sid/lists" -o Dir::Cache::Archives="$sid/archives"
     -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
[[ -n $(ls "$sid/lists" 2>/dev/null | grep -v partial) ]] || "${apt[@]}" -qq update
(cd "$sid/debs" && rm -f docker-compose_*.deb && "${apt[@]}" -qq download docker-compose)
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$sid"/debs/docker-compose_*.deb "$tmp"
install -m 0755 "$tmp/usr/libexec/docker/cli-plugins/docker-compose" "$out/docker-compose"
echo "$out/docker-compose"
