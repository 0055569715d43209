# Sourced by the scripts: where builds go, and the toolchain pieces a fresh machine lacks.
# Native builds go to a cache outside the clone (reused between runs); Wasm builds always go to
# ./target, where spin.toml's `source` paths point.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voice-billing/target}"
export LOCAL_HOST_BIN="$CARGO_TARGET_DIR/release/local-host"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
python3 -c 'import localstripe' 2>/dev/null || python3 -m pip install --quiet localstripe==1.15.10
# The reliability suite: schemathesis fuzzes the HTTP API from docs/openapi.json.
# Pinned with the hypothesis it was tested with (newer hypothesis broke older schemathesis).
python3 -c "import importlib.metadata as m; assert m.version('schemathesis') == '4.32.5'" 2>/dev/null ||
    python3 -m pip install --quiet schemathesis==4.32.5 hypothesis==6.170.15 hypothesis-jsonschema==0.23.1
# The notification tests verify every webhook with the Standard Webhooks reference library.
python3 -c "import importlib.metadata as m; assert m.version('standardwebhooks') == '1.3.0'" 2>/dev/null ||
    python3 -m pip install --quiet standardwebhooks==1.3.0
