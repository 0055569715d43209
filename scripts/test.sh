#!/usr/bin/env bash
# Runs every check and test: formatting, lints (native and Wasm), the ledger's native tests,
# and the end-to-end tests against the built .wasm components in the local host.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# A fresh clone over a warm cache compiles only what changed: files unchanged since the last run
# get back the modification time that run left them with (cargo rebuilds by file times), and
# this run's are recorded when it ends, failed or not (scripts/keep-mtimes.py says why it is safe).
source_mtimes="$CARGO_TARGET_DIR/source-mtimes.tsv"
python3 scripts/keep-mtimes.py restore "$source_mtimes"
reliability_summary=0
on_exit() {
    if [ "$reliability_summary" = 1 ]; then scripts/reliability-summary.sh || true; fi
    python3 scripts/keep-mtimes.py record "$source_mtimes" || true
}
trap on_exit EXIT
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step() { printf '\n=== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

# Clippy lints while the code is built, not in a build of its own: clippy-driver wraps rustc for
# the workspace's own crates (what `cargo clippy` does, over `cargo check`), so every crate is
# compiled once and linted in that compile, and dependencies (wasmtime among them) are compiled
# once instead of once more in check mode (issue 24: that was 3 of a cold run's minutes).
# `cargo test` below compiles the native crates' libraries, binaries and tests (clippy's
# `--all-targets`), the component builds the Wasm crates.
export RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" # cargo-clippy's encoding of `-D warnings`

step "build and lint: Wasm components and the local host"
scripts/build-components.sh >/dev/null
scripts/build-host.sh

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

step "build and lint: native crates; tests (the reliability suite, tests/tests/reliability_*.rs, among them)"
# Each reliability scenario appends a line to the summary printed at the end, even on failure.
export RELIABILITY_SUMMARY="$CARGO_TARGET_DIR/reliability-summary.tsv"
rm -f "$RELIABILITY_SUMMARY"
reliability_summary=1
cargo test --release

if [ "${RELIABILITY_SOAK:-0}" = 1 ]; then
    # The simulator's soak: seeds after seeds on every core for as long as it is given (an hour
    # by default); a seed that diverges is written to sim/found-seeds.txt, which the budget above
    # replays in every run (docs/reliability.md, "The simulator").
    step "simulator soak: ${RELIABILITY_SOAK_SIM_SECS:-3600} s"
    cargo run --release --quiet -p ledger-sim --bin simulate -- --soak "${RELIABILITY_SOAK_SIM_SECS:-3600}"
fi

step "fuzz: the parsers, coverage-guided (docs/reliability.md)"
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS # the fuzz crate is its own workspace, built as it is
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# RELIABILITY_SOAK=1 fuzzes 5 minutes per target instead of 15 s.
if [ "${RELIABILITY_SOAK:-0}" = 1 ]; then fuzz_secs=300; else fuzz_secs=15; fi
scripts/fuzz.sh "${RELIABILITY_FUZZ_SECS:-$fuzz_secs}"
