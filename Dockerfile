# syntax=docker/dockerfile:1
#
# One image with both binaries, sessionguard-agent and sessionguard-controller:
# - they share almost all of their code and dependencies (kube, tokio, rustls), so one
#   cargo build compiles everything once;
# - one image, one tag, one digest to pin in the chart (image.repository/tag/digest);
#   every node pulls it once for the agent and reuses it if a controller lands there;
# - the extra binary gives a pod nothing: each runs under its own ServiceAccount,
#   non-root, without capabilities, on a read-only root filesystem.
# The kubectl-sessions plugin is a client tool (krew), not part of the image.
#
# Static binaries: the same `make static` that CI runs (Makefile target `static`,
# part of `make test`): glibc static-pie (`-C target-feature=+crt-static`), checked by
# .ci/check-static.sh to have no dynamic loader and no shared-library dependency. No
# musl target is needed, so the build works with the stock toolchain. The binaries
# do no name lookups through NSS (in-cluster config uses KUBERNETES_SERVICE_HOST, an
# IP), so static glibc's NSS caveat does not apply.
#
#   docker build -t sessionguard:dev .
#   kind load docker-image sessionguard:dev
#   helm install sessionguard charts/sessionguard -n sessionguard-system --create-namespace \
#     --set image.repository=sessionguard --set image.tag=dev --set image.pullPolicy=Never

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    make static STATIC_OUT=/out

# distroless/static: no shell, no package manager, no libc; /etc/passwd has the
# `nonroot` user (65532), CA certificates and tzdata are included.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sessionguard-agent /out/sessionguard-controller /usr/local/bin/
USER 65532:65532
# The chart sets the command per component; the default is the operator's debug tool.
ENTRYPOINT ["/usr/local/bin/sessionguard-agent"]
CMD ["scan", "--proc-root", "/proc"]
LABEL org.opencontainers.image.title="sessionguard" \
      org.opencontainers.image.description="sessionguard agent and controller (static binaries)" \
      org.opencontainers.image.licenses="Apache-2.0"
