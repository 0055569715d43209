#!/usr/bin/env bash
# Prints the reliability suite's summary table from the lines its scenarios appended
# (tests/src/reliability.rs, scripts/fuzz.sh): scenario, requests, faults injected, invariant
# checks, failures, seconds.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voice-billing/target}"
summary="${RELIABILITY_SUMMARY:-$CARGO_TARGET_DIR/reliability-summary.tsv}"
if [ ! -s "$summary" ]; then
    echo "reliability summary: no scenario ran ($summary is empty)"
    exit 0
fi
awk -F '\t' '
    BEGIN {
        printf "\n%-40s %10s %10s %11s %9s %8s\n", "scenario", "requests", "faults", "invariants", "failures", "seconds"
        printf "%-40s %10s %10s %11s %9s %8s\n", "--------", "--------", "------", "----------", "--------", "-------"
    }
    {
        printf "%-40s %10d %10d %11d %9d %8.1f\n", $1, $2, $3, $4, $5, $6
        requests += $2; faults += $3; checks += $4; failures += $5; seconds += $6; n += 1
    }
    END {
        printf "%-40s %10d %10d %11d %9d %8.1f\n", "total (" n " scenarios)", requests, faults, checks, failures, seconds
    }
' "$summary"
