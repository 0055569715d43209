#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that read untrusted input (fuzz/): builds the targets
# with libFuzzer's coverage instrumentation on the stable toolchain (no cargo-fuzz, no nightly:
# the sancov pass and its options are stable `-C` flags) and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 20 s each, every target
#
# A crash, panic, overflow or failed assertion stops with the reproducer saved under
# $FUZZ_DIR/artifacts and exits non-zero. New corpus entries go to $FUZZ_DIR/corpus (outside
# the repository); fuzz/seeds holds the starting inputs. One summary line per target is
# appended to the reliability summary (tests/src/reliability.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voice-billing/target}"
seconds="${1:-20}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(stripe_signature stripe_event jwt decimal_amount e164_number catalog)
fi
FUZZ_DIR="${FUZZ_DIR:-$CARGO_TARGET_DIR/fuzz}"
summary="${RELIABILITY_SUMMARY:-$CARGO_TARGET_DIR/reliability-summary.tsv}"
host_triple="$(rustc -vV | sed -n 's/^host: //p')"
mkdir -p "$FUZZ_DIR/artifacts"

# What cargo-fuzz passes, minus the sanitizer: edge coverage with inline 8-bit counters,
# comparison tracing, and debug assertions plus overflow checks so arithmetic bugs crash.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
# --target keeps the flags off build scripts and proc macros.
cargo build --release --manifest-path fuzz/Cargo.toml --target "$host_triple" \
    --target-dir "$FUZZ_DIR/build" --bins
unset RUSTFLAGS

failed=0
for target in "${targets[@]}"; do
    corpus="$FUZZ_DIR/corpus/$target"
    mkdir -p "$corpus"
    log="$FUZZ_DIR/$target.log"
    started=$(date +%s)
    status=0
    "$FUZZ_DIR/build/$host_triple/release/$target" "$corpus" "fuzz/seeds/$target" \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$FUZZ_DIR/artifacts/$target-" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1 || true)
    coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | sed 's/cov: //' || true)
    printf 'fuzz %-17s %8s runs  coverage %5s edges  exit %s\n' "$target" "${runs:-?}" "${coverage:-?}" "$status"
    failures=0
    if [ "$status" -ne 0 ]; then
        failures=1
        failed=1
        tail -n 40 "$log"
    fi
    printf 'fuzz %s\t%s\t%s\t0\t%s\t%s\n' "$target" "${runs:-0}" "${runs:-0}" "$failures" \
        "$(($(date +%s) - started))" >>"$summary"
done
exit "$failed"
