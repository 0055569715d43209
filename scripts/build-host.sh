#!/usr/bin/env bash
# Builds the local host (release, honouring CARGO_TARGET_DIR) and the host's test components
# (wasm32-wasip2, copied into ./target so tests/components/*.toml find them: scripts/place-wasm.sh).
set -euo pipefail

cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

# Features resolved over the workspace's default members (no `-p`), as `cargo test` resolves
# them: with `-p local-host` alone, wasmtime and the crates under it got other feature sets, so a
# test run compiled them a second time.
cargo build --release --bin local-host

components=()
for dir in tests/components/*/; do
    [ -f "$dir/Cargo.toml" ] || continue
    components+=(-p "$(basename "$dir")")
done
if [ ${#components[@]} -gt 0 ]; then
    cargo build --release --target wasm32-wasip2 "${components[@]}"
    scripts/place-wasm.sh "${components[@]}"
fi

echo "host: ${CARGO_TARGET_DIR:-$PWD/target}/release/local-host"
