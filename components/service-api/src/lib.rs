//! The service API (component `service-api`; docs/billing-rules.md, "The HTTP contract"): the voice
//! platform's backend, authenticated by the service key (`Authorization: Bearer
//! <service_api_key>`).
//!
//! Serves call authorization/heartbeat/end, usage debits (single and batch), the catalog,
//! workspace provisioning (`PUT /v1/workspaces/{ws}`, routed here by spin.toml's single-segment
//! route), test clocks and credit grants (`POST /v1/grants`, `GET /v1/grants?workspace_id=`,
//! `POST /v1/grants/{id}/void`; docs/grants.md). Every route is thin: parse, authenticate, run ONE ledger operation
//! (with the current catalog, loaded in the same locked section), map the result.

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]

use http::Method;
use http::request::Parts;
use ledger::LedgerError;
use ledger::calls::CallRequest;
use ledger::catalog::CatalogDoc;
use ledger::grants::GrantInput;
use ledger::usage::{BATCH_EVENTS_MAX, DebitResult, UsageEvent};
use ledger::workspace::WorkspaceInput;
use spin_adapter::{
    ApiError, IdempotencyScope, Reply, flag, for_service, idempotent, method_not_allowed,
    not_found, now_secs, parse_json, parse_query, path_segments, read_body, run_ledger,
    with_catalog,
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
    CreateGrant,
    ListGrants,
    VoidGrant { id: &'a str },
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
            Self::CreateGrant => "POST /v1/grants",
            Self::ListGrants => "GET /v1/grants",
            Self::VoidGrant { .. } => "POST /v1/grants/{id}/void",
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
        ["v1", "grants"] => match *method {
            Method::GET => Ok(Route::ListGrants),
            Method::POST => Ok(Route::CreateGrant),
            _ => Err(method_not_allowed(method, &["GET", "POST"])),
        },
        ["v1", "grants", id, "void"] => only(Method::POST, Route::VoidGrant { id }),
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
    for_service(&parts.headers, async move || {
        serve_route(parts, route, body).await
    })
    .await
}

/// Serves an authenticated service call on its route.
async fn serve_route(
    parts: &Parts,
    route: Route<'_>,
    body: IncomingRequestBody,
) -> Result<Reply, ApiError> {
    let path = parts.uri.path();
    if route == Route::GetCatalog {
        return current_catalog().await;
    }
    if route == Route::ListGrants {
        return list_grants(&parts.uri).await;
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
    // Granting is idempotent in the ledger by its key (required): the grant's id derives from it.
    let grant_key = parts
        .headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Ok(idempotent(&parts.headers, scope, path, &body, async || {
        write_route(route, &body, grant_key.as_deref())
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

/// A workspace as `PUT /v1/workspaces/{ws}` answers it (no balances).
#[derive(Debug, serde::Serialize)]
struct WorkspaceView {
    id: String,
    name: String,
    email: String,
    currency: String,
    timezone: String,
}

/// `POST /v1/calls/{call_id}/heartbeat`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatRequest {
    /// Seconds since the call started (range-checked by the ledger: 422 when out of range).
    elapsed_seconds: i64,
}

/// `POST /v1/calls/{call_id}/end`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EndCallRequest {
    /// The call's duration (range-checked by the ledger: 422 when out of range).
    duration_seconds: i64,
}

/// `POST /v1/test-clocks/{ws}`: RFC 3339 text (or, as Stripe's API, epoch seconds).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TestClockRequest {
    frozen_time: FrozenTime,
}

/// A test clock's time as sent.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum FrozenTime {
    /// Seconds since the Unix epoch.
    Epoch(i64),
    /// RFC 3339.
    Text(String),
}

/// `POST /v1/usage/batch`: events are kept as raw JSON so that each one is parsed on its own.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    events: Vec<serde_json::Value>,
}

/// The query of `GET /v1/grants`; empty values count as absent.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsQuery {
    #[serde(default)]
    workspace_id: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /v1/grants?workspace_id=&limit=&cursor=`: a workspace's grants, oldest first.
async fn list_grants(uri: &http::Uri) -> Result<Reply, ApiError> {
    let query: GrantsQuery = parse_query(uri)?;
    let present = |value: Option<String>| value.filter(|text| !text.is_empty());
    let workspace_id = present(query.workspace_id).ok_or_else(|| {
        ApiError::malformed("workspace_id is required.").with_detail("field", "workspace_id".into())
    })?;
    let limit = present(query.limit)
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::malformed(format!(
                    "limit must be a whole number from 1 to {}.",
                    ledger::grants::PAGE_LIMIT_MAX
                ))
                .with_detail("field", "limit".into())
            })
        })
        .transpose()?;
    let cursor = present(query.cursor);
    let now = now_secs();
    let page = run_ledger(async |db| {
        ledger::grants::list(db, &workspace_id, limit, cursor.as_deref(), now).await
    })
    .await?;
    Ok(Reply::json(200, &page))
}

/// The write routes: the body is parsed (400 on a malformed one) before the operation runs.
async fn write_route(
    route: Route<'_>,
    body: &[u8],
    grant_key: Option<&str>,
) -> Result<Reply, ApiError> {
    let now = now_secs();
    match route {
        Route::ProvisionWorkspace { ws } => {
            let mut input: WorkspaceInput = parse_json(body)?;
            // Any case is taken ("usd", as Stripe writes it); stored and answered upper case.
            input.currency = input
                .currency
                .as_deref()
                .map(ledger::catalog::currency_code);
            let state = run_ledger(async |db| {
                let catalog = spin_adapter::catalog(db).await?;
                ledger::workspace::upsert(db, &catalog, ws, &input, now).await
            })
            .await?;
            Ok(Reply::json(
                200,
                &WorkspaceView {
                    id: state.id,
                    name: state.name,
                    email: state.email,
                    currency: state.currency,
                    timezone: state.timezone,
                },
            ))
        }
        Route::PutCatalog => {
            let doc: CatalogDoc = parse_json(body)?;
            let stored =
                run_ledger(async |db| ledger::catalog::put(db, doc.clone(), now).await).await?;
            Ok(Reply::json(200, &stored))
        }
        Route::AuthorizeCall => {
            let request: CallRequest = parse_json(body)?;
            let authorized = run_ledger(async |db| {
                with_catalog(db, async |catalog| {
                    ledger::calls::authorize(db, catalog, &request, now).await
                })
                .await
            })
            .await?;
            Ok(Reply::json(201, &authorized))
        }
        Route::CallHeartbeat { call_id } => {
            let HeartbeatRequest { elapsed_seconds } = parse_json(body)?;
            let heartbeat = run_ledger(async |db| {
                let catalog = spin_adapter::catalog(db).await?;
                ledger::calls::heartbeat(db, &catalog, call_id, elapsed_seconds, now).await
            })
            .await?;
            Ok(Reply::json(200, &heartbeat))
        }
        Route::EndCall { call_id } => {
            let EndCallRequest { duration_seconds } = parse_json(body)?;
            let posted =
                run_ledger(async |db| ledger::calls::end(db, call_id, duration_seconds, now).await)
                    .await?;
            Ok(Reply::json(200, &posted))
        }
        Route::CreateGrant => {
            let input: GrantInput = parse_json(body)?;
            let key = grant_key.ok_or_else(|| {
                ApiError::new(
                    422,
                    "validation_error",
                    "Idempotency-Key is required to grant credits.",
                )
                .with_detail("field", "Idempotency-Key".into())
            })?;
            let (grant, created) =
                run_ledger(async |db| ledger::grants::create(db, key, &input, now).await).await?;
            Ok(Reply::json(if created { 201 } else { 200 }, &grant))
        }
        Route::VoidGrant { id } => {
            let grant = run_ledger(async |db| ledger::grants::void(db, id, now).await).await?;
            Ok(Reply::json(200, &grant))
        }
        Route::Usage => {
            let event: UsageEvent = parse_json(body)?;
            let debited = run_ledger(async |db| {
                with_catalog(db, async |catalog| {
                    ledger::usage::record(db, catalog, &event, now).await
                })
                .await
            })
            .await?;
            Ok(Reply::json(200, &debited))
        }
        Route::UsageBatch => usage_batch(body, now).await,
        Route::SetTestClock { ws } => {
            let TestClockRequest { frozen_time } = parse_json(body)?;
            let frozen_secs = match frozen_time {
                FrozenTime::Epoch(secs) => secs,
                FrozenTime::Text(text) => ledger::calendar::parse_rfc3339("frozen_time", &text)?,
            };
            let state = run_ledger(async |db| {
                ledger::workspace::set_test_clock(db, ws, frozen_secs, now).await
            })
            .await?;
            let frozen = state.test_clock_at.unwrap_or(frozen_secs);
            Ok(Reply::json(
                200,
                &serde_json::json!({
                    "workspace_id": state.id,
                    "frozen_time": ledger::calendar::rfc3339(frozen),
                }),
            ))
        }
        Route::GetCatalog => current_catalog().await,
        Route::ListGrants => list_grants_unreachable(),
    }
}

/// `GET /v1/grants` is a read, served before the write routes.
fn list_grants_unreachable() -> Result<Reply, ApiError> {
    Err(ApiError::internal("A read was routed as a write."))
}

/// `POST /v1/usage/batch`: 1 to [`BATCH_EVENTS_MAX`] events, each parsed and debited on its own
/// (a malformed or refused event fails alone), all debits in one ledger transaction. Answers a
/// result per event, in order.
async fn usage_batch(body: &[u8], now: i64) -> Result<Reply, ApiError> {
    let BatchRequest { events } = parse_json(body)?;
    if events.is_empty() || events.len() > BATCH_EVENTS_MAX {
        return Err(ApiError::from(LedgerError::invalid(
            "validation_error",
            "events",
            format!("A batch has 1 to {BATCH_EVENTS_MAX} events."),
        )));
    }
    // Each slot: the event's id as sent (for the answer) and its parsed form or parse error.
    let parsed: Vec<(serde_json::Value, Result<UsageEvent, ApiError>)> = events
        .into_iter()
        .map(|raw| {
            let id = raw.get("id").cloned().unwrap_or(serde_json::Value::Null);
            let event = serde_json::from_value::<UsageEvent>(raw).map_err(|error| {
                ApiError::malformed(format!(
                    "The event does not match the expected shape: {error}."
                ))
            });
            (id, event)
        })
        .collect();
    let valid: Vec<UsageEvent> = parsed
        .iter()
        .filter_map(|(_, event)| event.as_ref().ok().cloned())
        .collect();
    let mut debited = if valid.is_empty() {
        Vec::new()
    } else {
        run_ledger(async |db| {
            with_catalog(db, async |catalog| {
                ledger::usage::record_batch(db, catalog, &valid, now).await
            })
            .await
        })
        .await?
    }
    .into_iter();
    let mut results = Vec::with_capacity(parsed.len());
    for (id, event) in parsed {
        let outcome = match event {
            Ok(_) => match debited.next() {
                Some(outcome) => outcome.map_err(ApiError::from),
                None => Err(ApiError::internal("A batch result is missing.")),
            },
            Err(error) => Err(error),
        };
        results.push(match outcome {
            Ok(result) => ok_result(&result),
            Err(error) => error_result(id, &error),
        });
    }
    Ok(Reply::json(200, &serde_json::json!({ "results": results })))
}

/// `{"id", "status": "ok", ...DebitResult}`.
fn ok_result(result: &DebitResult) -> serde_json::Value {
    let mut value = serde_json::to_value(result).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        object.insert("status".into(), "ok".into());
    }
    value
}

/// `{"id", "status": "error", "error": {"code", "message", ...details}}`.
fn error_result(id: serde_json::Value, error: &ApiError) -> serde_json::Value {
    let mut body = error.body();
    let detail = body
        .get_mut("error")
        .map(serde_json::Value::take)
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({ "id": id, "status": "error", "error": detail })
}
