# One image with NovaCron's binaries (novacron-operator, novacron-scheduler,
# novacron-node); the Deployments and the DaemonSet in manifests/ pick theirs
# with `command`.
#
#   make docker-build IMG=registry.example.com/novacron/operator:v0.1.0
#
# The base images are build arguments. Their defaults are the public images,
# pinned by digest so a rebuild gets the bytes that were reviewed (Dependabot
# or Renovate keep the pins fresh). Where no registry is reachable,
# hack/base-images.sh makes stand-ins from Debian's archive and `make
# docker-build` passes them here (LOCAL_BASES=1, the default).
ARG BUILD_IMAGE=docker.io/library/golang:1.26-bookworm@sha256:b305420a68d0f229d91eb3b3ed9e519fcf2cf5461da4bef997bf927e8c0bfd2b
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim@sha256:4b50eb66f977b4062683ff434ef18ac191da862dbe966961bc11990cf5791a8d

# The libvirt bindings use cgo, so the build stage needs libvirt's headers.
FROM ${BUILD_IMAGE} AS build
RUN if ! pkg-config --exists libvirt 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends libvirt-dev pkg-config \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# -trimpath keeps build-machine paths out of the binaries. A local build that
# shares the host's Go build cache (podman build --volume) passes it empty so
# the dependencies' cache entries (same module cache path) match the host's
# own builds; only NovaCron's packages, built here under /src, compile again.
ARG GO_TRIMPATH=-trimpath
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build ${GO_TRIMPATH} -ldflags="-s -w" -o /out/ ./cmd/novacron-operator ./cmd/novacron-scheduler ./cmd/novacron-node

# The runtime needs only libvirt's client library, the CA roots and the PCI ID
# table (novacron-node names GPUs by it where NVML does not run): no daemon,
# no QEMU (those run on the hypervisor nodes), no shell tools beyond the base.
# Time zones come from the binaries (time/tzdata), not from the image.
FROM ${RUNTIME_IMAGE}
RUN if ! ldconfig -p | grep -q 'libvirt\.so\.0 ' || [ ! -e /etc/ssl/certs/ca-certificates.crt ] || [ ! -e /usr/share/misc/pci.ids ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends libvirt0 ca-certificates pci.ids \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && mkdir -p /home/nonroot && chown 65532:65532 /home/nonroot
COPY --from=build /out/ /
ENV HOME=/home/nonroot
USER 65532:65532
ENTRYPOINT ["/novacron-operator"]
