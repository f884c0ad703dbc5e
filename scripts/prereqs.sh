#!/usr/bin/env bash
# What `make` needs before it starts, checked first, each with how to get it.
#   scripts/prereqs.sh local     Python 3.11-3.13 with venv, Go (actionlint, lint)
#   scripts/prereqs.sh cluster   the above, plus root and Debian's apt (the local Kubernetes)
# Everything else (pip packages, Debian packages, Kubernetes, images) the Makefile and
# cluster/ scripts install themselves.
set -uo pipefail
what="${1:-local}"
PYTHON="${PYTHON:-python3}"
DISK_MIN_GB="${DISK_MIN_GB:-16}"
GO_MIN="1.24"   # Kubernetes v1.34's go.mod; also builds actionlint and the cluster add-ons
missing=()

py_version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
case "$py_version" in
  3.11 | 3.12 | 3.13)
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
      missing+=("Python's venv module for $PYTHON: apt-get install python3-venv (Debian/Ubuntu)") ;;
  "") missing+=("Python 3.11, 3.12 or 3.13 (no '$PYTHON' on PATH): apt-get install python3 python3-venv, or set PYTHON=/path/to/python3.1x") ;;
  *) missing+=("Python 3.11-3.13 ('$PYTHON' is $py_version): install one and run make PYTHON=python3.1x") ;;
esac

go_version="$(go env GOVERSION 2>/dev/null)"; go_version="${go_version#go}"
if [[ -z $go_version ]]; then
  missing+=("Go >= $GO_MIN (no 'go' on PATH): the Go project's release archive or a distribution package of Go $GO_MIN+, with its bin/ on PATH")
elif [[ "$(printf '%s\n%s\n' "$GO_MIN" "$go_version" | sort -V | head -1)" != "$GO_MIN" ]]; then
  missing+=("Go >= $GO_MIN ('go' is $go_version)")
fi

if [[ $what == cluster ]]; then
  [[ $EUID -eq 0 ]] || missing+=("root: the local Kubernetes runs containerd, kubelet and network namespaces (run as root, e.g. sudo -E make ...)")
  command -v apt-get >/dev/null && [[ -f /etc/debian_version ]] ||
    missing+=("Debian (bookworm) or a derivative with apt: the cluster's packages come from Debian (cluster/install-deps.sh); elsewhere point KUBECONFIG at another cluster and run make cluster-test-only")
  # df sampled every 5 s: a cold `.ci/run` peaked at ~19 GB before the Go builds dropped
  # their caches and CI dropped the images' build cache; after, a warm one peaks at 9.9 GB
  # (venv and wheelhouse ~2, docker's images ~10 while building and ~3 after, the node's
  # copy ~5) and a cold one adds the Kubernetes build (~10 GB, given back before the images
  # are built): 11.5 GiB measured cold on 2026-11-30. Short of it, builds die mid-way with ENOSPC.
  while read -r mount free_kb; do
    free_gb=$((free_kb / 1024 / 1024))
    ((free_gb >= DISK_MIN_GB)) ||
      missing+=("$DISK_MIN_GB GB free disk on $mount (has $free_gb GB): docker's images and the cluster live there; 'docker image prune' and removing old health-risk/* tags free space")
  done < <(df -Pk /var/lib "$PWD" | awk 'NR>1{print $6, $4}' | sort -u)
fi

if ((${#missing[@]})); then
  echo "Missing prerequisites ($what):" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
