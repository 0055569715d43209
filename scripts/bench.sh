#!/usr/bin/env bash
# Builds the components and the local host (release), then runs the benchmarks and prints one
# table of figures and ratios. Arguments go to the bench: `--quick` (about 1 s per measurement,
# small data sets) and any parts (default `all`): sizes fsync native native-http noop product
# batch scale renewal cold-start. Data sets are generated once into $BENCH_DATA_DIR
# (default ~/.cache/voice-billing/bench-data) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

scripts/build-components.sh >/dev/null
# Builds the host and the bench binary with one feature resolution (see build-host.sh).
BUILD_HOST_FOR_TESTS=1 scripts/build-host.sh >/dev/null

exec "$CARGO_TARGET_DIR/release/bench" "$@"
