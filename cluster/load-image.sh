#!/usr/bin/env bash
# Load locally built docker images into the node's containerd (namespace k8s.io), so
# pods can use them with imagePullPolicy IfNotPresent/Never. Nothing is pulled.
#   cluster/load-image.sh IMAGE [IMAGE...]
# Skips an image whose id is already in the node.
source "$(dirname "$0")/lib.sh"
(($#)) || die "usage: $0 IMAGE [IMAGE...]"
[[ -S $CONTAINERD_SOCK ]] || die "the node's containerd is not running ($CONTAINERD_SOCK); run make cluster-up"
CTR=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
for img in "$@"; do
  # a bare name means :latest, as docker reads it
  [[ $img == *:* && ${img##*/} == *:* ]] || img="$img:latest"
  id="$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null)" || die "no local docker image $img (build it first)"
  # docker.io/ prefix is how containerd names a bare reference
  ref="$img"; [[ ${img%%/*} == *.* || ${img%%/*} == localhost* ]] || ref="docker.io/$img"
  have="$("${CTR[@]}" images ls "name==$ref" 2>/dev/null | awk 'NR>1{print $3}')"
  if [[ -n $have ]] && [[ -f $STATE/run/images/${ref//\//_} ]] && [[ "$(cat "$STATE/run/images/${ref//\//_}")" == "$id" ]]; then
    info "$img already in the node"; continue
  fi
  t0=$(date +%s)
  docker save "$img" | "${CTR[@]}" images import - >/dev/null
  mkdir -p "$STATE/run/images"; echo "$id" > "$STATE/run/images/${ref//\//_}"
  info "loaded $img into the node ($(( $(date +%s) - t0 ))s)"
done
