#!/usr/bin/env bash
# Runs every test: installs prerequisites, checks formatting and lints, then the Rust
# workspace's unit and integration tests (real jails, real servers, as root). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# Root-only tests refuse to be skipped when CI is set.
export CI="${CI:-1}"
# A single build from scratch gains nothing from incremental data, which takes GBs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet
cargo test --workspace --quiet
