#!/usr/bin/env bash
# Builds the components and the local host (release), then runs the benchmarks and prints one
# table of figures and ratios. Arguments go to the bench: `--quick` (about 1 s per measurement,
# small data sets) and any parts (default `all`): sizes fsync native native-http noop product
# campaign tenants mixed open cluster batch notify scale renewal cold-start (`cluster` runs two
# replicas on libSQL + Redis, and sqld alone, when SQLD_BIN names a sqld). Data sets are generated once into $BENCH_DATA_DIR
# (default ~/.cache/voice-billing/bench-data) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

scripts/build-components.sh >/dev/null
scripts/build-host.sh >/dev/null
cargo build --release -p bench

exec "$CARGO_TARGET_DIR/release/bench" "$@"
