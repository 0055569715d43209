# Sourced by the scripts: where builds go, and the toolchain pieces a fresh machine lacks.
# Native builds go to a cache outside the clone (reused between runs); Wasm builds always go to
# ./target, where spin.toml's `source` paths point.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voice-billing/target}"
export LOCAL_HOST_BIN="$CARGO_TARGET_DIR/release/local-host"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
python3 -c 'import localstripe' 2>/dev/null || python3 -m pip install --quiet localstripe==1.15.10
