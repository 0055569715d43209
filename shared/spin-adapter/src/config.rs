//! Spin variables and the wall clock.

use crate::error::ApiError;

/// Reads the Spin variable `name` (declared in the component's `[component.NAME.variables]`).
///
/// A missing or unreadable variable is the operator's mistake, not the caller's: it maps to a
/// 500 whose message names the variable but never its value.
pub async fn variable(name: &str) -> Result<String, ApiError> {
    spin_sdk::variables::get(name).await.map_err(|error| {
        crate::log!("spin-adapter: variable {name} unavailable: {error:?}");
        ApiError::internal(format!(
            "The server is misconfigured: variable {name} is not available."
        ))
    })
}

/// Reads a boolean Spin variable: `"true"` (any case) is true; anything else, or an unreadable
/// variable, is false (flags default to off).
pub async fn flag(name: &str) -> bool {
    match spin_sdk::variables::get(name).await {
        Ok(value) => value.trim().eq_ignore_ascii_case("true"),
        Err(_) => false,
    }
}

/// The wall clock in whole seconds since the Unix epoch (`wasi:clocks` in Wasm).
pub fn now_secs() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
        // A clock before 1970 is broken; 0 makes every token look expired rather than valid.
        Err(_) => 0,
    }
}
