#!/usr/bin/env bash
# Builds the application's Wasm components (components/*) and the host's test components
# (tests/components/*, when present) for wasm32-wasip2, release.
#
# Built where CARGO_TARGET_DIR says (scripts/env.sh: a cache outside the clone, which a new clone
# then reuses instead of compiling the Wasm dependencies again), and copied to ./target, where
# spin.toml's `source` paths and the tests' manifests point (target/wasm32-wasip2/release/*.wasm).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

# The package name of every crate directly under the given folders.
packages=()
for dir in components/*/ tests/components/*/; do
    manifest="$dir/Cargo.toml"
    [ -f "$manifest" ] || continue
    name="$(sed -n 's/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)"
    if [ -z "$name" ]; then
        echo "build-components: no package name in $manifest" >&2
        exit 1
    fi
    packages+=(-p "$name")
done

if [ ${#packages[@]} -eq 0 ]; then
    echo "build-components: no component crates found" >&2
    exit 1
fi

cargo build --release --target wasm32-wasip2 "${packages[@]}"
scripts/place-wasm.sh "${packages[@]}"

ls -l "$REPO"/target/wasm32-wasip2/release/*.wasm
