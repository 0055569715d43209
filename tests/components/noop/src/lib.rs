//! A no-op HTTP component: the benchmark's baseline.

use spin_sdk::http::{IntoResponse, Request};

/// Answers every request with 200 "ok".
#[spin_sdk::http_service]
async fn handle(_req: Request) -> impl IntoResponse {
    "ok"
}
