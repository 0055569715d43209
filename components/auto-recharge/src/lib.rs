//! The HTTP twin of the auto-recharge sweep (R11, R21): wallets under their threshold get one off-session charge.
//!
//! `POST /internal/jobs/auto-recharge` with the service key runs one bounded pass; the same pass runs
//! from the cron trigger.
// TODO(cron): export `handle-cron-event` through `shared/spin-cron` and run the same pass there.

use http::Method;
use spin_adapter::{
    ApiError, Reply, authenticate_service, method_not_allowed, not_found, path_segments,
};
use spin_sdk::http::Request;

/// The component's HTTP entry point.
#[spin_sdk::http_service]
async fn handle(request: Request) -> Reply {
    let (parts, _body) = request.into_parts();
    let path = parts.uri.path();
    let outcome = match path_segments(path).as_slice() {
        ["internal", "jobs", "auto-recharge"] if parts.method == Method::POST => {
            match authenticate_service(&parts.headers).await {
                Ok(()) => run_job().await,
                Err(error) => Err(error),
            }
        }
        ["internal", "jobs", "auto-recharge"] => Err(method_not_allowed(&parts.method, &["POST"])),
        _ => Err(not_found(path)),
    };
    outcome.unwrap_or_else(ApiError::into_reply)
}

/// Runs one pass of the job and reports what it did.
async fn run_job() -> Result<Reply, ApiError> {
    Err(ApiError::not_implemented())
}
