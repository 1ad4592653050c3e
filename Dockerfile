# syntax=docker/dockerfile:1
#
# The tether image: the node daemon (tether-forwarder, the entrypoint), the
# example group member (tether-echo-member) and the init step that prepares
# the node's socket directory (tether-socket-dir), as static binaries on a
# distroless base with no shell, running as a numeric non-root user.
#
#   docker build -t ghcr.io/tether-mesh/tether:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/tether-mesh/tether:v0.1.0 --push .
#
# The manifests in deployments/ run this image; the test in deployments/
# reads this file and fails when they disagree with it (image name, binaries,
# user). The image name follows the source label below: GitHub's registry
# links ghcr.io/tether-mesh/tether to the repository through it.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Modules first, in their own layer and cache, so a source change does not
# download them again.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=bind,source=go.mod,target=go.mod \
    --mount=type=bind,source=go.sum,target=go.sum \
    go mod download
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=bind,target=. \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/tether-forwarder ./cmd/forwarder && \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/tether-echo-member ./examples/echo-member && \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/tether-socket-dir ./cmd/tether-socket-dir

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tether" \
      org.opencontainers.image.description="tether node daemon (forwarder) and example group member" \
      org.opencontainers.image.source="https://github.com/tether-mesh/tether" \
      org.opencontainers.image.url="https://github.com/tether-mesh/tether" \
      org.opencontainers.image.documentation="https://github.com/tether-mesh/tether/tree/main/deployments" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="tether-mesh" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/tether-forwarder /out/tether-echo-member /out/tether-socket-dir /usr/local/bin/
# 65532 is distroless's "nonroot"; the deployments run the forwarder as this
# user and share its group with the members (see deployments/README.md).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tether-forwarder"]
