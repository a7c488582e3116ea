#!/usr/bin/env bash
# Fetches Debian's own kernel packages for the VM test matrix (cargo xtask
# test --kernel VERSION) and installs what booting them under virtme-ng needs:
# qemu-system-x86 and kmod from Debian, virtme-ng from PyPI in a venv, each
# kernel's vmlinuz under the cache and its modules in /lib/modules/RELEASE
# (virtme-ng boots this machine's root file system, where the guest looks for
# its virtio and 9p modules). Skips whatever is present. Prints the path it took.
#
#   scripts/kernels.sh            # every kernel of the matrix
#   scripts/kernels.sh 6.1 5.10   # only these
#   scripts/kernels.sh --list     # print "short package" for each matrix kernel
#
# The packages come through a private apt sources file and state folder
# (-o Dir::Etc::sourcelist=...), never the machine's own sources.
set -euo pipefail
log() { printf '[kernels] %s\n' "$*" >&2; }

tools="${SAMP_PROXY_TOOLS:-$HOME/.cache/samp-cluster-proxy}"
cache="$tools/kernels"
# short name -> suite that ships it (the package name is resolved from the
# suite's index: the newest linux-image-X.Y.*-amd64 it has, unsigned build).
matrix="5.10:bullseye 6.1:bookworm 6.12:bookworm-backports"

if [ "${1:-}" = "--list" ]; then
    for m in $matrix; do echo "${m%%:*} ${m#*:}"; done
    exit 0
fi
want=("$@")
[ ${#want[@]} -gt 0 ] || for m in $matrix; do want+=("${m%%:*}"); done

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v depmod >/dev/null 2>&1 || need+=(kmod)
# virtme-ng builds its initramfs around busybox.
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    log "qemu-system-x86 and kmod present"
fi

venv="$tools/virtme-ng"
if [ -x "$venv/bin/vng" ]; then
    log "virtme-ng present: $venv/bin/vng"
else
    log "installing virtme-ng (PyPI) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check virtme-ng
fi

apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$cache/debs"
sources="$apt_dir/sources.list"
cat > "$sources.new" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
SRC
mv "$sources.new" "$sources"
apt_opts=(-o "Dir::Etc::sourcelist=$sources" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir" -o "Dir::Cache::archives=$apt_dir/archives" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
updated=0
index() {
    if [ $updated = 0 ] && { [ -z "$(ls "$apt_dir/lists" 2>/dev/null | grep Packages)" ] || [ -n "${SAMP_KERNELS_REFRESH:-}" ]; }; then
        log "reading the Debian suites' package indexes (private sources file $sources)"
        apt-get "${apt_opts[@]}" update -qq
    fi
    updated=1
}

suite_of() { for m in $matrix; do if [ "${m%%:*}" = "$1" ]; then echo "${m#*:}"; fi; done; }

for short in "${want[@]}"; do
    suite=$(suite_of "$short")
    [ -n "$suite" ] || { log "no kernel $short in the matrix ($matrix)"; exit 1; }
    dir="$cache/$short"
    if [ -f "$dir/vmlinuz" ] && [ -f "$dir/release" ] && [ -d "/lib/modules/$(cat "$dir/release")/kernel" ]; then
        log "kernel $short present: $(cat "$dir/release")"
        continue
    fi
    index
    # The newest unsigned amd64 image the suite ships for that series.
    pkg=$(apt-cache "${apt_opts[@]}" search --names-only "^linux-image-${short//./\\.}\.[0-9][.0-9+~a-z-]*-amd64-unsigned$" 2>/dev/null \
        | awk '{print $1}' | grep -v -- '-rt-\|-cloud-' | sort -V | tail -n1 || true)
    if [ "$suite" = bookworm-backports ]; then
        pkg=$(apt-cache "${apt_opts[@]}" madison $(apt-cache "${apt_opts[@]}" search --names-only "^linux-image-${short//./\\.}\.[0-9].*deb12-amd64-unsigned$" | awk '{print $1}') 2>/dev/null \
            | awk '{print $1}' | sort -V | tail -n1 || true)
    fi
    [ -n "$pkg" ] || { log "no linux-image-$short.*-amd64-unsigned in $suite"; exit 1; }
    log "kernel $short: downloading $pkg"
    (cd "$cache/debs" && ls "$pkg"_*.deb >/dev/null 2>&1 || apt-get "${apt_opts[@]}" download -qq "$pkg")
    deb=$(ls "$cache/debs/$pkg"_*.deb | head -n1)
    rm -rf "$dir.x" && mkdir -p "$dir.x"
    dpkg-deb -x "$deb" "$dir.x"
    release=$(ls "$dir.x/lib/modules" | head -n1)
    # Modules go where the guest (booting this root) looks for them; the
    # compressed ones (.ko.xz) are unpacked, the initramfs loads plain .ko.
    rm -rf "/lib/modules/$release"
    mkdir -p /lib/modules
    cp -a "$dir.x/lib/modules/$release" "/lib/modules/$release"
    find "/lib/modules/$release" -name '*.ko.xz' -exec xz -d {} + 2>/dev/null || true
    depmod "$release"
    mkdir -p "$dir"
    cp "$dir.x/boot/vmlinuz-$release" "$dir/vmlinuz"
    cp "$dir.x/boot/config-$release" "$dir/config" 2>/dev/null || true
    echo "$release" > "$dir/release"
    rm -rf "$dir.x"
    log "kernel $short installed: $release ($dir/vmlinuz, /lib/modules/$release)"
done
