# syntax=docker/dockerfile:1
#
# The proxy agent's image, for the DaemonSets in deploy/base:
#   docker build -t registry.example.net/samp-proxy-agent:0.1.0 .
#
# Two stages. The builder has the Rust toolchain: it builds bpf-linker against
# that toolchain's own LLVM (as scripts/setup.sh does), the XDP object (the
# kernel crate proxy-ebpf, for bpfel-unknown-none), then the agent, which
# embeds the object at build time (proxy-agent/build.rs). The final image
# holds the agent binary alone: no compiler, no cargo, no shell.
#
# The image runs as root: the pods drop every capability but CAP_BPF,
# CAP_PERFMON and CAP_NET_ADMIN (deploy/base/daemonset-*.yaml), and
# Kubernetes gives added capabilities to uid 0 only. The same binary is the
# CLI: kubectl -n samp-proxy exec ds/samp-proxy-ingress -- proxy-agent status

# The toolchain is pinned: bpf-linker must link the very libLLVM of the rustc
# that calls it (LLVM 22 for Rust 1.95).
ARG RUST_VERSION=1.95.0
ARG BPF_LINKER_VERSION=0.13.0

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG BPF_LINKER_VERSION
# The kernel crate builds `core` from source (build-std), which takes rust-src
# and, on a stable toolchain, RUSTC_BOOTSTRAP=1: the path scripts/setup.sh
# takes where no nightly is installed.
RUN rustup component add rust-src
RUN set -eux; \
    llvm="$(ls "$(rustc --print sysroot)"/lib/libLLVM.so.22.1-* | head -n1)"; \
    mkdir -p /opt/llvm-prefix/lib; \
    ln -s "$llvm" /opt/llvm-prefix/lib/libLLVM.so; \
    LLVM_PREFIX=/opt/llvm-prefix cargo install bpf-linker --version "$BPF_LINKER_VERSION" --locked \
        --no-default-features --features llvm-22 --root /opt/bpf-linker
ENV PATH=/opt/bpf-linker/bin:$PATH

WORKDIR /src
COPY . .
# The XDP object: the build `cargo xtask build-ebpf` runs, without the
# test-only rebuilt variant. (xtask asks scripts/setup.sh for a toolchain
# named stable or nightly; this image's pinned one is named 1.95.0.)
RUN cd proxy-ebpf \
    && RUSTC_BOOTSTRAP=1 cargo build --release \
    && test -s target/bpfel-unknown-none/release/proxy-ebpf
# The agent, with that object embedded.
RUN PROXY_EBPF_OBJECT=/src/proxy-ebpf/target/bpfel-unknown-none/release/proxy-ebpf \
    cargo build --release --locked -p proxy-agent

# glibc and libgcc_s of Debian 12, as the builder's: what the binary links.
FROM gcr.io/distroless/cc-debian12 AS runtime
COPY --from=builder /src/target/release/proxy-agent /usr/local/bin/proxy-agent
USER 0:0
ENTRYPOINT ["/usr/local/bin/proxy-agent"]
CMD ["run", "--config", "/etc/samp-proxy/ingress.yaml"]
