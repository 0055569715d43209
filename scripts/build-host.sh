#!/usr/bin/env bash
# Builds the local host (release, honouring CARGO_TARGET_DIR) and the Wasm components, the host's
# test components among them (copied into ./target so tests/components/*.toml find them).
set -euo pipefail

cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

# Features resolved over the workspace's default members (no `-p`), as `cargo test` resolves
# them: with `-p local-host` alone, wasmtime and the crates under it got other feature sets, so a
# test run compiled them a second time.
cargo build --release --bin local-host

# The host's test components, built with the application's in one build (scripts/build-components.sh):
# built alone they got another feature set, and every run compiled them twice, once each way.
scripts/build-components.sh >/dev/null

echo "host: ${CARGO_TARGET_DIR:-$PWD/target}/release/local-host"
