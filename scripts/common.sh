# Shared by scripts/demo, scripts/test, scripts/bench. Source it; do not run it.
# shellcheck shell=bash

NFK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Re-run the calling script as root (the lab needs network namespaces and nftables).
nfk_elevate() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CI "$0" "$@"
        fi
        echo "$(basename "$0"): needs root (network namespaces, nftables) and sudo is not installed; run it as root" >&2
        exit 1
    fi
}

# Debian packages the build and the lab need.
NFK_PACKAGES=(nftables iproute2 tcpdump iptables fwknop-client procps strace systemd)
# The fleet relay: etcd-client's build script runs protoc (with the well-known .proto files of
# libprotobuf-dev); the fleet e2e tests run a real etcd with TLS certificates made by openssl.
NFK_PACKAGES+=(protobuf-compiler libprotobuf-dev etcd-server etcd-client openssl)

nfk_install_deps() {
    local missing=()
    for p in "${NFK_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "==> installing cargo from Debian"
            apt-get install -y -qq cargo rustc >/dev/null
        fi
    fi
}
