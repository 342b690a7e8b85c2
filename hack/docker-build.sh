#!/usr/bin/env bash
# `make docker-build`: builds the image from the Dockerfile.
#   IMG            the tag to build (default novacron/operator:latest)
#   CONTAINER_TOOL docker or podman
#   LOCAL_BASES    1: build FROM the stand-ins hack/base-images.sh makes from
#                  Debian's archive (made when missing); 0: the pinned public
#                  images. Default: 1 with podman, 0 with docker.
# With podman the build shares this machine's Go module and build caches
# (--volume), so it compiles only what the host has not, and runs with the
# host's network and CA roots so apt and the module proxy (and any TLS proxy in
# front of it that this machine trusts) are reachable. Volumes are not layers:
# none of this ends up in the image.
set -euo pipefail
cd "$(dirname "$0")/.."
IMG=${IMG:-novacron/operator:latest}
TOOL=${CONTAINER_TOOL:-docker}
args=(build -t "$IMG")
if [[ $(basename "$TOOL") == podman ]]; then
  hack/podman.sh
  export CONTAINERS_CONF=$PWD/hack/containers.conf
  args+=(--network host
    --volume "$(go env GOMODCACHE):/root/go/pkg/mod"
    --volume "$(go env GOCACHE):/root/.cache/go-build"
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
    --build-arg GO_TRIMPATH=)
fi
local_bases=0
[[ $(basename "$TOOL") == podman ]] && local_bases=1
if [[ ${LOCAL_BASES:-$local_bases} == 1 ]]; then
  # hack/base-images.sh puts them in podman's store, which docker does not see.
  [[ $(basename "$TOOL") == podman ]] || { echo "docker-build: LOCAL_BASES=1 needs CONTAINER_TOOL=podman" >&2; exit 1; }
  hack/base-images.sh
  args+=(--build-arg BUILD_IMAGE=localhost/novacron/golang:1.26-bookworm
    --build-arg RUNTIME_IMAGE=localhost/novacron/debian:bookworm-slim)
fi
set -x
"$TOOL" "${args[@]}" .
