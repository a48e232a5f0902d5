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
NFK_PACKAGES=(nftables iproute2 tcpdump iptables ipset fwknop-client procps strace systemd)
# `knock --fwknop` is checked against the real fwknopd; `keygen --qr` is decoded with zbarimg.
NFK_PACKAGES+=(fwknop-server zbar-tools)
# apparmor: apparmor_parser checks the shipped profile; python3-prometheus-client: the
# Prometheus text parser the metrics test reads the daemon's metrics file with.
NFK_PACKAGES+=(apparmor python3 python3-prometheus-client)
# ... and the package tests (scripts/test-package, tests/e2e/docker.rs): a Debian 12 root booted
# under systemd-nspawn, the real Docker, the .deb's tools and lint.
NFK_PACKAGES+=(systemd-container debootstrap docker.io busybox-static lintian dpkg-dev)

# The fleet relay: etcd-client's build script runs protoc (with the well-known .proto files of
# libprotobuf-dev); the fleet e2e tests run a real etcd with TLS certificates made by openssl.
NFK_PACKAGES+=(protobuf-compiler libprotobuf-dev etcd-server etcd-client openssl)

# cargo-deb, pinned (scripts/package); installed only when a package is built.
NFK_CARGO_DEB_VERSION=3.8.0

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
        # docker.io is here for the tests, which run their own dockerd in a lab namespace:
        # a host dockerd it started would rewrite the host's firewall (FORWARD policy drop).
        if printf '%s\n' "${missing[@]}" | grep -qx docker.io && [ -d /run/systemd/system ]; then
            systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
        fi
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

# cargo-deb at NFK_CARGO_DEB_VERSION (a few minutes to build, once per machine).
nfk_install_cargo_deb() {
    if ! cargo deb --version 2>/dev/null | grep -q " $NFK_CARGO_DEB_VERSION\b"; then
        echo "==> installing cargo-deb $NFK_CARGO_DEB_VERSION" >&2
        cargo install --quiet --locked cargo-deb --version "$NFK_CARGO_DEB_VERSION" >&2
    fi
}
