#!/usr/bin/env bash
# Makes sure podman can build and run containers here: installs podman, runc
# and debootstrap from Debian's archive when missing (root with apt-get).
# hack/containers.conf holds the settings this machine kind needs; scripts
# that use podman export CONTAINERS_CONF themselves; to use podman by hand:
#   export CONTAINERS_CONF=$PWD/hack/containers.conf
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "podman: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends podman runc debootstrap uidmap netavark aardvark-dns iptables >&2
  else
    echo "podman: missing ${missing[*]}; on Debian: sudo apt-get install podman runc debootstrap" >&2
    exit 1
  fi
fi
