#!/usr/bin/env bash
# Builds every component and the local host, then serves spin.toml on http://127.0.0.1:3000
# with embedded SQLite and key-value stores under ./.spin-state. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

scripts/build-components.sh
scripts/build-host.sh

# Development secrets, unless you set your own (SPIN_VARIABLE_<NAME> overrides any variable).
export SPIN_VARIABLE_AUTH_JWT_SECRET="${SPIN_VARIABLE_AUTH_JWT_SECRET:-dev-jwt-secret-change-me}"
export SPIN_VARIABLE_SERVICE_API_KEY="${SPIN_VARIABLE_SERVICE_API_KEY:-dev-service-key-change-me}"
echo "service key: $SPIN_VARIABLE_SERVICE_API_KEY (set SPIN_VARIABLE_SERVICE_API_KEY to change)"

exec "$LOCAL_HOST_BIN" up --manifest spin.toml --state-dir .spin-state --listen "${LISTEN:-127.0.0.1:3000}" "$@"
