#!/usr/bin/env bash
# Builds the local host (release, honouring CARGO_TARGET_DIR) and the host's test components
# (wasm32-wasip2, always into ./target so tests/components/*.toml find them).
set -euo pipefail

cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

# With BUILD_HOST_FOR_TESTS=1 every default member is built, so dependencies get the features
# `cargo test` and the bench resolve: the test step then reuses this binary instead of compiling
# local-host a second time (about 3 minutes on a 2-core machine).
if [ "${BUILD_HOST_FOR_TESTS:-0}" = 1 ]; then
    cargo build --release
else
    cargo build --release -p local-host
fi

components=()
for dir in tests/components/*/; do
    [ -f "$dir/Cargo.toml" ] || continue
    components+=(-p "$(basename "$dir")")
done
if [ ${#components[@]} -gt 0 ]; then
    cargo build --release --target wasm32-wasip2 --target-dir "$PWD/target" "${components[@]}"
fi

echo "host: ${CARGO_TARGET_DIR:-$PWD/target}/release/local-host"
