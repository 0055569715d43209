#!/usr/bin/env bash
# Copies the release .wasm of the given packages (`-p NAME ...`, as cargo takes them) from where
# cargo built them (CARGO_TARGET_DIR, or ./target) to ./target/wasm32-wasip2/release, where
# spin.toml's `source` paths and the test manifests point. Nothing to do when they are the same.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
built="$(cd "${CARGO_TARGET_DIR:-$REPO/target}" 2>/dev/null && pwd)/wasm32-wasip2/release"
placed="$REPO/target/wasm32-wasip2/release"
[ "$built" = "$placed" ] && exit 0
mkdir -p "$placed"
for arg in "$@"; do
    [ "$arg" = -p ] && continue
    # cargo names a package's cdylib after the package, dashes as underscores.
    cp -p "$built/${arg//-/_}.wasm" "$placed/"
done
