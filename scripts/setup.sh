#!/usr/bin/env bash
# Installs what Sky Island needs to build, run and test on Debian or Ubuntu. Idempotent:
# installs only missing packages. Run as root.
set -euo pipefail

packages=(
    golang-go git ca-certificates tzdata   # the build jail: Go toolchain, git; the base: certificates, zoneinfo
    btrfs-progs iproute2                   # the btrfs clone backend's tests; network namespaces
    redis-server                           # the shared request cache
    gcc make pkg-config libcurl4-openssl-dev valgrind   # the C client and its tests
    bubblewrap crun hyperfine wrk          # benchmarks against other sandboxes
    nftables                               # NAT for jail networks, when configured
)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "setup: installing the Rust toolchain with rustup"
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt >/dev/null
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
