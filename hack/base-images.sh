#!/usr/bin/env bash
# Makes the two base images the Dockerfile builds FROM, from Debian's archive,
# for machines that reach no container registry (this project's CI does not).
# They stand in for the public images the Dockerfile pins by digest:
#
#   localhost/novacron/debian:bookworm-slim   debootstrap minbase + libvirt0, CA roots, pci.ids
#   localhost/novacron/golang:1.26-bookworm   the same + gcc, libvirt-dev, pkg-config,
#                                             and this machine's Go toolchain
#
# Each is made only when missing (FORCE=1 remakes them). Needs root,
# debootstrap and podman (hack/podman.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${RUNTIME_BASE:-localhost/novacron/debian:bookworm-slim}
BUILD=${BUILD_BASE:-localhost/novacron/golang:1.26-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PODMAN=(podman)

have() { [[ -z ${FORCE:-} ]] && "${PODMAN[@]}" image exists "$1"; }
if have "$RUNTIME" && have "$BUILD"; then exit 0; fi

work=$(mktemp -d /var/tmp/novacron-bases.XXXXXX)
trap 'rm -rf "$work"' EXIT

# What slim images leave out: documentation, manuals, locales, apt's lists.
slim() {
  rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* \
    "$1"/usr/share/locale/* "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin \
    "$1"/var/cache/apt/archives/*.deb "$1"/var/log/*.log
}

echo "base-images: debootstrap bookworm (minbase + libvirt0, pci.ids) into $work/runtime" >&2
debootstrap --variant=minbase --include=libvirt0,ca-certificates,pci.ids bookworm "$work/runtime" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; exit 1; }
# Apt inside later builds reaches the same mirror.
echo "deb $MIRROR bookworm main" >"$work/runtime/etc/apt/sources.list"

echo "base-images: adding gcc, libvirt-dev, pkg-config and $(go env GOROOT) for the build image" >&2
cp -a "$work/runtime" "$work/build"
cp /etc/resolv.conf "$work/build/etc/resolv.conf"
chroot "$work/build" sh -ec 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev libvirt-dev pkg-config git >/dev/null'
mkdir -p "$work/build/usr/local"
cp -a "$(go env GOROOT)" "$work/build/usr/local/go"

slim "$work/runtime"
slim "$work/build"
rm -f "$work/runtime/etc/resolv.conf" "$work/build/etc/resolv.conf"

tar -C "$work/runtime" -c . | "${PODMAN[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$RUNTIME" >/dev/null
tar -C "$work/build" -c . | "${PODMAN[@]}" import \
  --change 'ENV PATH=/root/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV GOPATH=/root/go' \
  --change 'CMD ["/bin/bash"]' - "$BUILD" >/dev/null
echo "base-images: made $RUNTIME and $BUILD" >&2
