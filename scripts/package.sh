#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: target/debian/skyisland_<version>_<arch>.deb.
#
#   scripts/package.sh            # from a release build (what operators install)
#   scripts/package.sh --dev      # from the debug build the tests made (fast; the tests'
#                                 # own package, same contents)
#
# What goes in is declared in crates/skyisland/Cargo.toml ([package.metadata.deb]); this
# script makes the generated parts first, under target/package: the manual page and the
# shell completions (from the binary itself) and the packaged configuration (the example
# configuration, with its admin token left unset so that each install makes its own).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = --dev ]; then profile=dev; fi
command -v cargo-deb >/dev/null || { echo "package: cargo-deb is missing: scripts/setup.sh installs it" >&2; exit 1; }
cargo build --quiet --profile "$profile" -p skyisland
bin=target/$([ "$profile" = dev ] && echo debug || echo release)/skyisland
out=target/package
rm -rf "$out"
mkdir -p "$out/completions"
"$bin" man | gzip -9n > "$out/skyisland.1.gz"
"$bin" completions bash > "$out/completions/skyisland"
"$bin" completions zsh > "$out/completions/_skyisland"
"$bin" completions fish > "$out/completions/skyisland.fish"
# The example's token is a placeholder: a packaged server must not start with a known one.
sed 's/^token = "change-me".*/# token = "…"                       # unset: a random token is made and logged at start/' \
    skyisland.example.toml > "$out/skyisland.toml"
grep -q '^# token = ' "$out/skyisland.toml" || { echo "package: the example's admin token line changed" >&2; exit 1; }
cargo deb --quiet --no-build --profile "$profile" -p skyisland
