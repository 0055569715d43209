#!/usr/bin/env bash
# Runs every check and test: formatting, lints (native and Wasm), the ledger's native tests,
# and the end-to-end tests against the built .wasm components in the local host.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step() { printf '\n=== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "build: Wasm components and the local host"
scripts/build-components.sh >/dev/null
scripts/build-host.sh

step "lint: native crates"
cargo clippy --release --all-targets -- -D warnings
step "lint: Wasm crates"
wasm_packages=()
for dir in components/*/ tests/components/*/ shared/spin-adapter/ shared/spin-cron/; do
    [ -f "$dir/Cargo.toml" ] || continue
    wasm_packages+=(-p "$(sed -n 's/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$dir/Cargo.toml" | head -n 1)")
done
cargo clippy --release --target wasm32-wasip2 --target-dir "$PWD/target" "${wasm_packages[@]}" -- -D warnings

step "browser test tools: Chromium and Playwright"
# The billing page's browser tests (tests/browser/): Debian's Chromium, driven by Playwright for
# Python (its own browser download is not used: the tests launch /usr/bin/chromium).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq chromium >/dev/null
fi
python3 -c "import importlib.metadata as m; assert m.version('playwright') == '1.65.3'" 2>/dev/null ||
    python3 -m pip install --quiet playwright==1.65.3

step "test stores: redis-server"
# The runtime-config tests (tests/tests/host_runtime_config.rs) run the app's key-value store on
# a real Redis: Debian's redis-server. (Their libSQL half runs only when SQLD_BIN names a sqld.)
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq redis-server >/dev/null
fi

step "tests (the reliability suite, tests/tests/reliability_*.rs, among them)"
# Each reliability scenario appends a line to the summary printed at the end, even on failure.
export RELIABILITY_SUMMARY="$CARGO_TARGET_DIR/reliability-summary.tsv"
rm -f "$RELIABILITY_SUMMARY"
trap 'scripts/reliability-summary.sh || true' EXIT
cargo test --release

step "fuzz: the parsers, coverage-guided (docs/reliability.md)"
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# RELIABILITY_SOAK=1 fuzzes 5 minutes per target instead of 15 s.
if [ "${RELIABILITY_SOAK:-0}" = 1 ]; then fuzz_secs=300; else fuzz_secs=15; fi
scripts/fuzz.sh "${RELIABILITY_FUZZ_SECS:-$fuzz_secs}"
