# One image with both NovaCron binaries (novacron-operator, novacron-scheduler);
# the Deployments in manifests/ pick theirs with `command`.
# Build: make docker-build IMG=registry.example.com/novacron/operator:v0.1.0

# The libvirt bindings use cgo, so the build stage needs libvirt's headers.
FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/novacron-operator ./cmd/novacron-scheduler

# The runtime needs only libvirt's client library (no daemon, no QEMU: those
# run on the hypervisor nodes).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /home/nonroot && chown 65532:65532 /home/nonroot
COPY --from=build /out/ /
ENV HOME=/home/nonroot
USER 65532:65532
ENTRYPOINT ["/novacron-operator"]
