//! The frontend billing API (component `user-api`; docs/billing-rules.md, "The HTTP contract"):
//! every route takes a user's HS256 token; `{ws}` must be the token's workspace, and only owners
//! and admins manage billing or see amounts (R19).
//!
//! Each route authenticates, checks the workspace and role, then runs ONE ledger operation in
//! `run_ledger` (the catalog is read in the same closure, through a per-instance cache keyed by
//! the stored catalog version) and maps its result. The Stripe routes (saving a card, top-ups:
//! [`payments`]) run ledger operation -> Stripe call outside the ledger lock -> ledger
//! operation; with no `stripe_secret_key` they answer 503 `payment_processing_error`
//! ("Payments are not configured yet."), except a free plan's subscription, which needs no
//! Stripe. Plans, invoices and the billing portal: [`subscription`].
//!
//! Response shapes this component decides (the contract leaves them open):
//! - `GET /v1/plans`: `{"currency", "credit_price", "data": [{"id", "name", "price",
//!   "monthly_credits", "rollover_max_credits"?}]}` (`price` in currency, credits in credits);
//! - `GET /v1/rates`: `{"currency", "credit_price", "data": [<catalog rate>...]}`;
//! - `POST .../subscription`: the ledger's `PlanChange`;
//! - `GET .../subscription/preview?plan_id=`: the ledger's `PlanChangePreview` (what that POST
//!   would do, from the same plan and decision, written nowhere; the POST's refusals too);
//! - `GET .../agents?limit=&cursor=`: the ledger's `AgentPage` (`{"agents", "next_cursor"}`, by
//!   agent id, `limit` 1-500, default 100);
//! - `GET .../grants`: `{"data": [<the ledger's OwnerGrant>...]}`, the credit grants with
//!   something left, active or scheduled, in the order they are spent (at most 100);
//! - `GET .../invoices`: `{"data": [{"id", "number", "status", "amount_paid" (currency),
//!   "currency", "created", "hosted_invoice_url", "invoice_pdf"}]}`, newest first, `limit` 1-100
//!   (default 24);
//! - `POST .../billing-portal` `{"return_url"?}` (or no body): `{"url"}`;
//! - `DELETE .../subscription/pending-change`: 204, or 404 when nothing is pending;
//! - `GET .../transactions`: `{"data", "next_cursor"}`, or CSV with `format=csv`; empty query
//!   values mean "not set", unknown query parameters are a 400.

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]

mod payments;
mod subscription;

use http::Method;
use http::request::Parts;
use ledger::agents::{AgentLimits, OveragePolicy};
use ledger::payments::AutoRechargeSettings;
use ledger::views::TransactionFilter;
use payments::payments_unavailable;
use serde_json::{Value, json};
use spin_adapter::{
    ApiError, Claims, IdempotencyScope, Reply, authenticate_user, idempotent, method_not_allowed,
    not_found, now_secs, parse_json, parse_query, path_segments, read_body,
    require_billing_manager, require_workspace, run_ledger,
};
use spin_sdk::http::Request;
use spin_sdk::wasip3::http_compat::IncomingRequestBody;

/// One recognised route, with its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Plans,
    Rates,
    Billing { ws: &'a str },
    Subscribe { ws: &'a str },
    PreviewSubscription { ws: &'a str },
    CancelPendingChange { ws: &'a str },
    SetupPaymentMethod { ws: &'a str },
    RefreshPaymentMethod { ws: &'a str },
    CreateTopup { ws: &'a str },
    GetTopup { ws: &'a str, id: &'a str },
    Receipts { ws: &'a str },
    GetReceipt { ws: &'a str, id: &'a str },
    SetAutoRecharge { ws: &'a str },
    Agents { ws: &'a str },
    Grants { ws: &'a str },
    GetAgentLimits { ws: &'a str, agent: &'a str },
    SetAgentLimits { ws: &'a str, agent: &'a str },
    Transactions { ws: &'a str },
    UsageSummary { ws: &'a str },
    Invoices { ws: &'a str },
    BillingPortal { ws: &'a str },
}

impl<'a> Route<'a> {
    /// The workspace in the path, if any.
    fn workspace(self) -> Option<&'a str> {
        match self {
            Self::Plans | Self::Rates => None,
            Self::Billing { ws }
            | Self::Subscribe { ws }
            | Self::PreviewSubscription { ws }
            | Self::CancelPendingChange { ws }
            | Self::SetupPaymentMethod { ws }
            | Self::RefreshPaymentMethod { ws }
            | Self::CreateTopup { ws }
            | Self::GetTopup { ws, .. }
            | Self::Receipts { ws }
            | Self::GetReceipt { ws, .. }
            | Self::SetAutoRecharge { ws }
            | Self::Agents { ws }
            | Self::Grants { ws }
            | Self::GetAgentLimits { ws, .. }
            | Self::SetAgentLimits { ws, .. }
            | Self::Transactions { ws }
            | Self::UsageSummary { ws }
            | Self::Invoices { ws }
            | Self::BillingPortal { ws } => Some(ws),
        }
    }

    /// The route pattern, used to scope idempotency keys.
    fn pattern(self) -> &'static str {
        match self {
            Self::Plans => "GET /v1/plans",
            Self::Rates => "GET /v1/rates",
            Self::Billing { .. } => "GET /v1/workspaces/{ws}/billing",
            Self::Subscribe { .. } => "POST /v1/workspaces/{ws}/subscription",
            Self::PreviewSubscription { .. } => "GET /v1/workspaces/{ws}/subscription/preview",
            Self::CancelPendingChange { .. } => {
                "DELETE /v1/workspaces/{ws}/subscription/pending-change"
            }
            Self::SetupPaymentMethod { .. } => "POST /v1/workspaces/{ws}/payment-method/setup",
            Self::RefreshPaymentMethod { .. } => "POST /v1/workspaces/{ws}/payment-method/refresh",
            Self::CreateTopup { .. } => "POST /v1/workspaces/{ws}/topups",
            Self::GetTopup { .. } => "GET /v1/workspaces/{ws}/topups/{id}",
            Self::Receipts { .. } => "GET /v1/workspaces/{ws}/receipts",
            Self::GetReceipt { .. } => "GET /v1/workspaces/{ws}/receipts/{id}",
            Self::SetAutoRecharge { .. } => "PUT /v1/workspaces/{ws}/auto-recharge",
            Self::Agents { .. } => "GET /v1/workspaces/{ws}/agents",
            Self::Grants { .. } => "GET /v1/workspaces/{ws}/grants",
            Self::GetAgentLimits { .. } => "GET /v1/workspaces/{ws}/agents/{agent}/limits",
            Self::SetAgentLimits { .. } => "PUT /v1/workspaces/{ws}/agents/{agent}/limits",
            Self::Transactions { .. } => "GET /v1/workspaces/{ws}/transactions",
            Self::UsageSummary { .. } => "GET /v1/workspaces/{ws}/usage/summary",
            Self::Invoices { .. } => "GET /v1/workspaces/{ws}/invoices",
            Self::BillingPortal { .. } => "POST /v1/workspaces/{ws}/billing-portal",
        }
    }

    /// Whether a member (not only owners and admins) may call it: the summary, which then
    /// shows the status banner only.
    fn open_to_members(self) -> bool {
        matches!(self, Self::Billing { .. })
    }

    /// Whether the route writes (and so reads a body and honours `Idempotency-Key`).
    fn is_write(self) -> bool {
        matches!(
            self,
            Self::Subscribe { .. }
                | Self::CancelPendingChange { .. }
                | Self::SetupPaymentMethod { .. }
                | Self::RefreshPaymentMethod { .. }
                | Self::CreateTopup { .. }
                | Self::SetAutoRecharge { .. }
                | Self::SetAgentLimits { .. }
                | Self::BillingPortal { .. }
        )
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
        ["v1", "plans"] => only(Method::GET, Route::Plans),
        ["v1", "rates"] => only(Method::GET, Route::Rates),
        ["v1", "workspaces", ws, "billing"] => only(Method::GET, Route::Billing { ws }),
        ["v1", "workspaces", ws, "subscription"] => only(Method::POST, Route::Subscribe { ws }),
        ["v1", "workspaces", ws, "subscription", "preview"] => {
            only(Method::GET, Route::PreviewSubscription { ws })
        }
        ["v1", "workspaces", ws, "subscription", "pending-change"] => {
            only(Method::DELETE, Route::CancelPendingChange { ws })
        }
        ["v1", "workspaces", ws, "payment-method", "setup"] => {
            only(Method::POST, Route::SetupPaymentMethod { ws })
        }
        ["v1", "workspaces", ws, "payment-method", "refresh"] => {
            only(Method::POST, Route::RefreshPaymentMethod { ws })
        }
        ["v1", "workspaces", ws, "topups"] => only(Method::POST, Route::CreateTopup { ws }),
        ["v1", "workspaces", ws, "topups", id] => only(Method::GET, Route::GetTopup { ws, id }),
        ["v1", "workspaces", ws, "receipts"] => only(Method::GET, Route::Receipts { ws }),
        ["v1", "workspaces", ws, "receipts", id] => only(Method::GET, Route::GetReceipt { ws, id }),
        ["v1", "workspaces", ws, "auto-recharge"] => {
            only(Method::PUT, Route::SetAutoRecharge { ws })
        }
        ["v1", "workspaces", ws, "agents"] => only(Method::GET, Route::Agents { ws }),
        ["v1", "workspaces", ws, "grants"] => only(Method::GET, Route::Grants { ws }),
        ["v1", "workspaces", ws, "agents", agent, "limits"] => match *method {
            Method::GET => Ok(Route::GetAgentLimits { ws, agent }),
            Method::PUT => Ok(Route::SetAgentLimits { ws, agent }),
            _ => Err(method_not_allowed(method, &["GET", "PUT"])),
        },
        ["v1", "workspaces", ws, "transactions"] => only(Method::GET, Route::Transactions { ws }),
        ["v1", "workspaces", ws, "usage", "summary"] => {
            only(Method::GET, Route::UsageSummary { ws })
        }
        ["v1", "workspaces", ws, "invoices"] => only(Method::GET, Route::Invoices { ws }),
        ["v1", "workspaces", ws, "billing-portal"] => {
            only(Method::POST, Route::BillingPortal { ws })
        }
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
    let claims = authenticate_user(&parts.headers).await?;
    if let Some(ws) = route.workspace() {
        require_workspace(&claims, ws)?;
    }
    if !route.open_to_members() {
        require_billing_manager(&claims)?;
    }
    if !route.is_write() {
        return dispatch(route, &claims, parts, &[]).await;
    }
    let body = read_body(body).await?;
    let scope = IdempotencyScope {
        route: route.pattern(),
        principal: route.workspace().unwrap_or(&claims.workspace_id),
    };
    Ok(idempotent(&parts.headers, scope, path, &body, async || {
        dispatch(route, &claims, parts, &body)
            .await
            .unwrap_or_else(ApiError::into_reply)
    })
    .await)
}

/// Runs one authorised route: `body` is the request body of writes (empty for reads).
async fn dispatch(
    route: Route<'_>,
    claims: &Claims,
    parts: &Parts,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let now = now_secs();
    match route {
        Route::Plans => plans().await,
        Route::Rates => rates().await,
        Route::Billing { ws } => billing(ws, claims, now).await,
        Route::Subscribe { ws } => {
            let SubscribeRequest { plan_id } = parse_object(body)?;
            let client = spin_adapter::stripe_client().await?;
            subscription::subscribe(client.as_ref(), ws, &plan_id, &parts.headers, now).await
        }
        Route::PreviewSubscription { ws } => {
            let query: subscription::PreviewQuery = parse_query(&parts.uri)?;
            let client = spin_adapter::stripe_client().await?;
            subscription::preview(client.is_some(), ws, query, now).await
        }
        Route::CancelPendingChange { ws } => {
            let client = spin_adapter::stripe_client().await?;
            subscription::cancel_pending_change(client.as_ref(), ws, &parts.headers).await
        }
        Route::GetTopup { ws, id } => {
            let payment = run_ledger(async |db| ledger::payments::get(db, ws, id).await).await?;
            Ok(Reply::json(200, &payment))
        }
        Route::Receipts { ws } => {
            let query: ReceiptsQuery = parse_query(&parts.uri)?;
            let limit = page_limit(query.limit, ledger::receipts::LIST_LIMIT_MAX)?;
            let data = run_ledger(async |db| ledger::receipts::list(db, ws, limit).await).await?;
            Ok(Reply::json(200, &serde_json::json!({ "data": data })))
        }
        Route::GetReceipt { ws, id } => {
            let receipt = run_ledger(async |db| ledger::receipts::get(db, ws, id).await).await?;
            Ok(Reply::json(200, &receipt))
        }
        Route::SetAutoRecharge { ws } => {
            let settings: AutoRechargeSettings = parse_object(body)?;
            let saved = run_ledger(async |db| {
                let catalog = spin_adapter::catalog(db).await?;
                ledger::payments::set_auto_recharge(db, &catalog, ws, &settings).await
            })
            .await?;
            Ok(Reply::json(200, &saved))
        }
        Route::Agents { ws } => agents(ws, &parts.uri, now).await,
        Route::Grants { ws } => {
            let data =
                run_ledger(async |db| ledger::grants::list_for_owner(db, ws, now).await).await?;
            Ok(Reply::json(200, &serde_json::json!({ "data": data })))
        }
        Route::GetAgentLimits { ws, agent } => {
            let limits =
                run_ledger(async |db| ledger::agents::get_limits(db, ws, agent, now).await).await?;
            Ok(Reply::json(200, &limits))
        }
        Route::SetAgentLimits { ws, agent } => {
            let limits = parse_limits(body)?;
            let saved = run_ledger(async |db| {
                ledger::agents::put_limits(db, ws, agent, &limits, now).await
            })
            .await?;
            Ok(Reply::json(200, &saved))
        }
        Route::Transactions { ws } => transactions(ws, &parts.uri).await,
        Route::UsageSummary { ws } => usage_summary(ws, &parts.uri, now).await,
        Route::SetupPaymentMethod { ws } => match spin_adapter::stripe_client().await? {
            Some(client) => payments::setup(&client, ws, &parts.headers).await,
            None => payments_not_configured(ws).await,
        },
        Route::RefreshPaymentMethod { ws } => match spin_adapter::stripe_client().await? {
            Some(client) => payments::refresh(&client, ws).await,
            None => payments_not_configured(ws).await,
        },
        Route::CreateTopup { ws } => {
            let TopupRequest { amount, card } = parse_object(body)?;
            match spin_adapter::stripe_client().await? {
                Some(client) => {
                    payments::create_topup(&client, ws, &amount, card, &parts.headers, now).await
                }
                None => payments_not_configured(ws).await,
            }
        }
        Route::Invoices { ws } => {
            let query: subscription::InvoicesQuery = parse_query(&parts.uri)?;
            match spin_adapter::stripe_client().await? {
                Some(client) => subscription::invoices(&client, ws, query).await,
                None => payments_not_configured(ws).await,
            }
        }
        Route::BillingPortal { ws } => {
            let request: subscription::PortalRequest = if body.is_empty() {
                subscription::PortalRequest::default()
            } else {
                parse_object(body)?
            };
            match spin_adapter::stripe_client().await? {
                Some(client) => {
                    subscription::billing_portal(&client, ws, request, &parts.headers).await
                }
                None => payments_not_configured(ws).await,
            }
        }
    }
}

/// A Stripe route without Stripe configured: an unknown workspace is still a 404, then 503.
async fn payments_not_configured(ws: &str) -> Result<Reply, ApiError> {
    run_ledger(async |db| ledger::workspace::get(db, ws).await).await?;
    Err(payments_unavailable())
}

/// `GET /v1/plans`: the catalog's plans, without their Stripe ids.
async fn plans() -> Result<Reply, ApiError> {
    let catalog = run_ledger(async |db| spin_adapter::catalog(db).await).await?;
    let settings = catalog.settings();
    let data: Vec<Value> = catalog
        .doc
        .plans
        .iter()
        .map(|plan| {
            let mut view = json!({
                "id": plan.id,
                "name": plan.name,
                "price": plan.price,
                "monthly_credits": plan.monthly_credits,
            });
            if let (Some(rollover), Value::Object(fields)) = (plan.rollover_max_credits, &mut view)
            {
                fields.insert("rollover_max_credits".into(), json!(rollover));
            }
            view
        })
        .collect();
    Ok(Reply::json(
        200,
        &json!({"currency": settings.currency, "credit_price": settings.credit_price, "data": data}),
    ))
}

/// `GET /v1/rates`: the catalog's rate card (prices in credits per unit).
async fn rates() -> Result<Reply, ApiError> {
    let catalog = run_ledger(async |db| spin_adapter::catalog(db).await).await?;
    let settings = catalog.settings();
    Ok(Reply::json(
        200,
        &json!({"currency": settings.currency, "credit_price": settings.credit_price, "data": catalog.doc.rates}),
    ))
}

/// `GET /v1/workspaces/{ws}/billing`: the R17 summary; a member sees the banner only (R19).
async fn billing(ws: &str, claims: &Claims, now: i64) -> Result<Reply, ApiError> {
    let summary = run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        ledger::views::summary(db, &catalog, ws, now).await
    })
    .await?;
    if claims.role.manages_billing() {
        Ok(Reply::json(200, &summary))
    } else {
        Ok(Reply::json(
            200,
            &json!({"status": summary.status, "message": summary.status.member_message()}),
        ))
    }
}

/// Parses a JSON object body into `T` (400 otherwise): serde would also accept an array of the
/// fields in order, which no client means to send.
fn parse_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = parse_json(body)?;
    from_object(value)
}

/// Converts a parsed JSON object into `T`; anything else is a 400 `malformed_request`.
fn from_object<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::malformed(
            "The request body must be a JSON object.",
        ));
    }
    serde_json::from_value(value).map_err(|error| {
        ApiError::malformed(format!(
            "The request body does not match the expected shape: {error}."
        ))
    })
}

/// Parses a `PUT .../agents/{agent}/limits` body: an unknown `overage_policy` is a 422
/// `validation_error`; any other shape problem a 400.
fn parse_limits(body: &[u8]) -> Result<AgentLimits, ApiError> {
    let value: Value = parse_json(body)?;
    if value.is_object()
        && let Some(policy) = value.get("overage_policy")
        && serde_json::from_value::<OveragePolicy>(policy.clone()).is_err()
    {
        return Err(ApiError::from(ledger::LedgerError::invalid(
            "validation_error",
            "overage_policy",
            "overage_policy must be \"stop\" or \"use_balance\".",
        )));
    }
    from_object(value)
}

/// The query of `GET .../transactions`; empty values count as absent.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactionsQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

/// `Some` non-empty value, else `None`.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// `GET /v1/workspaces/{ws}/transactions`: a page of history, or the CSV export.
async fn transactions(ws: &str, uri: &http::Uri) -> Result<Reply, ApiError> {
    let query: TransactionsQuery = parse_query(uri)?;
    let limit = page_limit(query.limit, ledger::views::PAGE_LIMIT_MAX)?;
    let csv = match present(query.format).as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::malformed("format must be \"csv\" or \"json\".")
                .with_detail("field", "format".into()));
        }
    };
    let agent_id = present(query.agent);
    if let Some(agent) = &agent_id {
        // A query value, not a body field: malformed (400) rather than invalid (422).
        ledger::workspace::validate_id("agent", agent).map_err(|error| {
            ApiError::malformed(error.to_string()).with_detail("field", "agent".into())
        })?;
    }
    let filter = TransactionFilter {
        limit,
        cursor: present(query.cursor),
        kind: present(query.kind),
        agent_id,
    };
    if csv {
        let text =
            run_ledger(async |db| ledger::views::transactions_csv(db, ws, &filter).await).await?;
        return Ok(
            Reply::bytes(200, "text/csv; charset=utf-8", text.into_bytes()).with_header(
                "content-disposition",
                "attachment; filename=\"transactions.csv\"".to_owned(),
            ),
        );
    }
    let page = run_ledger(async |db| ledger::views::transactions(db, ws, &filter).await).await?;
    Ok(Reply::json(200, &page))
}

/// A `limit` query value: absent when empty, else a whole number (400 otherwise; the ledger
/// checks the range, 1 to `max`).
fn page_limit(value: Option<String>, max: i64) -> Result<Option<i64>, ApiError> {
    present(value)
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::malformed(format!("limit must be a whole number from 1 to {max}."))
                    .with_detail("field", "limit".into())
            })
        })
        .transpose()
}

/// The query of `GET .../receipts`; an empty `limit` counts as absent.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptsQuery {
    #[serde(default)]
    limit: Option<String>,
}

/// The query of `GET .../agents`; empty values count as absent.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /v1/workspaces/{ws}/agents`: a page of the workspace's agents with their limits and
/// counters, by agent id.
async fn agents(ws: &str, uri: &http::Uri, now: i64) -> Result<Reply, ApiError> {
    let query: AgentsQuery = parse_query(uri)?;
    let limit = page_limit(query.limit, ledger::agents::AGENT_PAGE_LIMIT_MAX)?;
    let cursor = present(query.cursor);
    let page =
        run_ledger(async |db| ledger::agents::list(db, ws, limit, cursor.as_deref(), now).await)
            .await?;
    Ok(Reply::json(200, &page))
}

/// The query of `GET .../usage/summary`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageSummaryQuery {
    #[serde(default)]
    month: Option<String>,
}

/// `GET /v1/workspaces/{ws}/usage/summary?month=YYYY-MM`; the default month is the current UTC
/// month on the workspace's clock (its test clock, when one is set).
async fn usage_summary(ws: &str, uri: &http::Uri, now: i64) -> Result<Reply, ApiError> {
    let query: UsageSummaryQuery = parse_query(uri)?;
    let month = present(query.month);
    let summary = run_ledger(async |db| {
        let month = match &month {
            Some(month) => month.clone(),
            None => {
                let state = ledger::workspace::get(db, ws).await?;
                let today = ledger::calendar::rfc3339(state.now(now));
                today.get(..7).unwrap_or_default().to_owned()
            }
        };
        ledger::views::usage_summary(db, ws, &month).await
    })
    .await?;
    Ok(Reply::json(200, &summary))
}

/// `POST /v1/workspaces/{ws}/subscription`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    plan_id: String,
}

/// `POST /v1/workspaces/{ws}/topups`: `amount` in the workspace currency, a decimal string.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopupRequest {
    amount: String,
    /// `saved` or `new`; by default the saved card when there is one, else a new card.
    #[serde(default)]
    card: Option<payments::CardChoice>,
}
