//! `POST /webhooks/stripe`: Stripe's signed events (DESIGN section 7).
//!
//! Not wired yet: the route is recognised and answers 501 until signature verification
//! (`Stripe-Signature`, variable `stripe_webhook_secret`) and the ledger's event handling land.

use http::Method;
use spin_adapter::{ApiError, Reply, method_not_allowed, not_found, path_segments};
use spin_sdk::http::Request;

/// The component's HTTP entry point.
#[spin_sdk::http_service]
async fn handle(request: Request) -> Reply {
    let (parts, _body) = request.into_parts();
    let path = parts.uri.path();
    let outcome = match path_segments(path).as_slice() {
        ["webhooks", "stripe"] if parts.method == Method::POST => receive_event().await,
        ["webhooks", "stripe"] => Err(method_not_allowed(&parts.method, &["POST"])),
        _ => Err(not_found(path)),
    };
    outcome.unwrap_or_else(ApiError::into_reply)
}

/// Verifies, deduplicates and applies one Stripe event.
async fn receive_event() -> Result<Reply, ApiError> {
    Err(ApiError::not_implemented())
}
