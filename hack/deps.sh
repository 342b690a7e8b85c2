#!/usr/bin/env bash
# Makes sure the build can run on this machine: Go, and the C library and
# pkg-config that the libvirt bindings (cgo) link against. Installs the Debian
# packages when it can (root with apt-get); otherwise says what is missing.
set -euo pipefail

missing=()
command -v go >/dev/null || { echo "deps: Go is not installed; NovaCron needs Go 1.26 (https://go.dev/doc/install)" >&2; exit 1; }
command -v pkg-config >/dev/null || missing+=(pkg-config)
if ! pkg-config --exists libvirt 2>/dev/null; then missing+=(libvirt-dev); fi
# The test driver (test:///default) lives in the client library; libvirt-dev pulls it in.

if ((${#missing[@]} == 0)); then exit 0; fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "deps: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  exit 0
fi

echo "deps: missing ${missing[*]}." >&2
echo "deps: on Debian or Ubuntu run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
echo "deps: on Fedora: sudo dnf install -y libvirt-devel pkgconf-pkg-config" >&2
exit 1
