//! The service API (DESIGN section 6, component `usage`): the voice platform's backend,
//! authenticated by the service key (`Authorization: Bearer <usage_api_key>`).
//!
//! Serves call authorization/heartbeat/end, usage debits (single and batch), the catalog,
//! workspace provisioning (`PUT /v1/workspaces/{ws}`, routed here by spin.toml's single-segment
//! route) and test clocks. Routes whose ledger operation does not exist yet answer 501.

use http::Method;
use http::request::Parts;
use spin_adapter::{
    ApiError, IdempotencyScope, Reply, authenticate_service, flag, idempotent, method_not_allowed,
    not_found, parse_json, path_segments, read_body, run_ledger,
};
use spin_sdk::http::Request;
use spin_sdk::wasip3::http_compat::IncomingRequestBody;

/// The principal of every service call, for idempotency scoping.
const SERVICE_PRINCIPAL: &str = "service";

/// One recognised route, with its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    ProvisionWorkspace { ws: &'a str },
    GetCatalog,
    PutCatalog,
    AuthorizeCall,
    CallHeartbeat { call_id: &'a str },
    EndCall { call_id: &'a str },
    Usage,
    UsageBatch,
    SetTestClock { ws: &'a str },
}

impl Route<'_> {
    /// The route pattern, used to scope idempotency keys.
    fn pattern(self) -> &'static str {
        match self {
            Self::ProvisionWorkspace { .. } => "PUT /v1/workspaces/{ws}",
            Self::GetCatalog => "GET /v1/catalog",
            Self::PutCatalog => "PUT /v1/catalog",
            Self::AuthorizeCall => "POST /v1/calls",
            Self::CallHeartbeat { .. } => "POST /v1/calls/{call_id}/heartbeat",
            Self::EndCall { .. } => "POST /v1/calls/{call_id}/end",
            Self::Usage => "POST /v1/usage",
            Self::UsageBatch => "POST /v1/usage/batch",
            Self::SetTestClock { .. } => "POST /v1/test-clocks/{ws}",
        }
    }
}

/// Matches method and path against the contract, or answers 404/405.
fn resolve<'a>(method: &Method, segments: &[&'a str], path: &str) -> Result<Route<'a>, ApiError> {
    let only = |allowed: Method, route: Route<'a>| {
        if *method == allowed {
            Ok(route)
        } else {
            Err(method_not_allowed(method, &[allowed.as_str()]))
        }
    };
    match *segments {
        ["v1", "workspaces", ws] => only(Method::PUT, Route::ProvisionWorkspace { ws }),
        ["v1", "catalog"] => match *method {
            Method::GET => Ok(Route::GetCatalog),
            Method::PUT => Ok(Route::PutCatalog),
            _ => Err(method_not_allowed(method, &["GET", "PUT"])),
        },
        ["v1", "calls"] => only(Method::POST, Route::AuthorizeCall),
        ["v1", "calls", call_id, "heartbeat"] => {
            only(Method::POST, Route::CallHeartbeat { call_id })
        }
        ["v1", "calls", call_id, "end"] => only(Method::POST, Route::EndCall { call_id }),
        ["v1", "usage"] => only(Method::POST, Route::Usage),
        ["v1", "usage", "batch"] => only(Method::POST, Route::UsageBatch),
        ["v1", "test-clocks", ws] => only(Method::POST, Route::SetTestClock { ws }),
        _ => Err(not_found(path)),
    }
}

/// The component's HTTP entry point.
#[spin_sdk::http_service]
async fn handle(request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    serve(&parts, body)
        .await
        .unwrap_or_else(ApiError::into_reply)
}

async fn serve(parts: &Parts, body: IncomingRequestBody) -> Result<Reply, ApiError> {
    let path = parts.uri.path();
    let segments = path_segments(path);
    let route = resolve(&parts.method, &segments, path)?;
    authenticate_service(&parts.headers).await?;
    if route == Route::GetCatalog {
        return current_catalog().await;
    }
    if let Route::SetTestClock { .. } = route
        && !flag("test_clocks_enabled").await
    {
        // Disabled (the default, and always in production): the route does not exist.
        return Err(not_found(path));
    }
    let body = read_body(body).await?;
    let scope = IdempotencyScope {
        route: route.pattern(),
        principal: SERVICE_PRINCIPAL,
    };
    Ok(idempotent(&parts.headers, scope, path, &body, async || {
        write_route(route, &body)
            .await
            .unwrap_or_else(ApiError::into_reply)
    })
    .await)
}

/// `GET /v1/catalog`: the current catalog version (the shipped default when none is stored).
async fn current_catalog() -> Result<Reply, ApiError> {
    let catalog = run_ledger(async |db| ledger::catalog::current(db).await).await?;
    Ok(Reply::json(200, &catalog))
}

/// `PUT /v1/workspaces/{ws}`: create or update a workspace.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct ProvisionRequest {
    name: String,
    email: String,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
}

/// `POST /v1/calls`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct AuthorizeCallRequest {
    workspace_id: String,
    agent_id: String,
    call_id: String,
    direction: Direction,
    to: String,
    from: String,
}

/// A call's direction.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Direction {
    Inbound,
    Outbound,
}

/// `POST /v1/calls/{call_id}/heartbeat`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct HeartbeatRequest {
    elapsed_seconds: u64,
}

/// `POST /v1/calls/{call_id}/end`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct EndCallRequest {
    duration_seconds: u64,
}

/// `POST /v1/test-clocks/{ws}`: RFC 3339 or epoch seconds, as the ledger decides.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct TestClockRequest {
    frozen_time: serde_json::Value,
}

/// The write routes: the body is parsed (400 on a malformed one) before the operation runs.
async fn write_route(route: Route<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    match route {
        Route::ProvisionWorkspace { .. } => {
            let ProvisionRequest {
                name: _,
                email: _,
                currency: _,
                timezone: _,
            } = parse_json(body)?;
        }
        Route::AuthorizeCall => {
            let AuthorizeCallRequest {
                workspace_id: _,
                agent_id: _,
                call_id: _,
                direction: _,
                to: _,
                from: _,
            } = parse_json(body)?;
        }
        Route::CallHeartbeat { .. } => {
            let HeartbeatRequest { elapsed_seconds: _ } = parse_json(body)?;
        }
        Route::EndCall { .. } => {
            let EndCallRequest {
                duration_seconds: _,
            } = parse_json(body)?;
        }
        Route::SetTestClock { .. } => {
            let TestClockRequest { frozen_time: _ } = parse_json(body)?;
        }
        // TODO(ledger): the catalog and usage events are validated by the ledger as a whole;
        // until then only check the body is JSON.
        Route::PutCatalog | Route::Usage | Route::UsageBatch | Route::GetCatalog => {
            let _: serde_json::Value = parse_json(body)?;
        }
    }
    Err(ApiError::not_implemented())
}
