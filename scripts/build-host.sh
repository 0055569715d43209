#!/usr/bin/env bash
# Builds the local host (release, honouring CARGO_TARGET_DIR). The Wasm components, the host's
# test components (tests/components/*) among them, are scripts/build-components.sh's.
set -euo pipefail

cd "$(dirname "$0")/.."

# Features resolved over the workspace's default members (no `-p`), as `cargo test` resolves
# them: with `-p local-host` alone, wasmtime and the crates under it got other feature sets, so a
# test run compiled them a second time.
cargo build --release --bin local-host

echo "host: ${CARGO_TARGET_DIR:-$PWD/target}/release/local-host"
