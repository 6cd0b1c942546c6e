#!/usr/bin/env bash
# Runs the Sky Island server with its embedded defaults (or `--config FILE`), after
# installing what it needs and building it. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --quiet
exec target/release/skyisland serve "$@"
