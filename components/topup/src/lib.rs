//! The frontend billing API (DESIGN section 6, component `topup`): every route takes a user's
//! HS256 token; `{ws}` must be the token's workspace, and only owners and admins manage billing
//! or see amounts (R19).
//!
//! Routes whose ledger operation does not exist yet answer 501 `not_implemented` after
//! authentication, so the contract's 401/403/404/405 already hold.

use http::Method;
use http::request::Parts;
use spin_adapter::{
    ApiError, Claims, IdempotencyScope, Reply, authenticate_user, idempotent, method_not_allowed,
    not_found, parse_json, path_segments, read_body, require_billing_manager, require_workspace,
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
    CancelPendingChange { ws: &'a str },
    SetupPaymentMethod { ws: &'a str },
    RefreshPaymentMethod { ws: &'a str },
    CreateTopup { ws: &'a str },
    GetTopup { ws: &'a str, id: &'a str },
    SetAutoRecharge { ws: &'a str },
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
            | Self::CancelPendingChange { ws }
            | Self::SetupPaymentMethod { ws }
            | Self::RefreshPaymentMethod { ws }
            | Self::CreateTopup { ws }
            | Self::GetTopup { ws, .. }
            | Self::SetAutoRecharge { ws }
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
            Self::CancelPendingChange { .. } => {
                "DELETE /v1/workspaces/{ws}/subscription/pending-change"
            }
            Self::SetupPaymentMethod { .. } => "POST /v1/workspaces/{ws}/payment-method/setup",
            Self::RefreshPaymentMethod { .. } => "POST /v1/workspaces/{ws}/payment-method/refresh",
            Self::CreateTopup { .. } => "POST /v1/workspaces/{ws}/topups",
            Self::GetTopup { .. } => "GET /v1/workspaces/{ws}/topups/{id}",
            Self::SetAutoRecharge { .. } => "PUT /v1/workspaces/{ws}/auto-recharge",
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
        ["v1", "workspaces", ws, "auto-recharge"] => {
            only(Method::PUT, Route::SetAutoRecharge { ws })
        }
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
        return read_route(route, &claims, parts).await;
    }
    let body = read_body(body).await?;
    let scope = IdempotencyScope {
        route: route.pattern(),
        principal: route.workspace().unwrap_or(&claims.workspace_id),
    };
    Ok(idempotent(&parts.headers, scope, path, &body, async || {
        write_route(route, &claims, &body)
            .await
            .unwrap_or_else(ApiError::into_reply)
    })
    .await)
}

/// The GET routes.
async fn read_route(route: Route<'_>, _claims: &Claims, _parts: &Parts) -> Result<Reply, ApiError> {
    match route {
        // TODO(ledger): R17 summary; a member (claims.role) gets {"status", "message"} only.
        Route::Billing { .. } => Err(ApiError::not_implemented()),
        // TODO(ledger): plans, rates, top-up, agent limits, transactions (query: limit, cursor,
        // type, agent, format=csv), usage summary (query: month), invoices (Stripe).
        _ => Err(ApiError::not_implemented()),
    }
}

/// `POST /v1/workspaces/{ws}/subscription`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct SubscribeRequest {
    plan_id: String,
}

/// `POST /v1/workspaces/{ws}/topups`: `amount` in the workspace currency, a decimal string.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct TopupRequest {
    amount: String,
}

/// `PUT /v1/workspaces/{ws}/auto-recharge`: `threshold` and `amount` in the workspace currency.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct AutoRechargeRequest {
    enabled: bool,
    threshold: String,
    amount: String,
}

/// `PUT /v1/workspaces/{ws}/agents/{agent}/limits`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "fields are read once the ledger operation is wired"
)]
struct AgentLimitsRequest {
    overage_policy: String,
    #[serde(default)]
    monthly_spend_limit: Option<String>,
    #[serde(default)]
    daily_call_limit: Option<u32>,
    #[serde(default)]
    max_concurrent_calls: Option<u32>,
}

/// The write routes: the body is parsed (400 on a malformed one) before the operation runs.
async fn write_route(route: Route<'_>, _claims: &Claims, body: &[u8]) -> Result<Reply, ApiError> {
    match route {
        Route::Subscribe { .. } => {
            let SubscribeRequest { plan_id: _ } = parse_json(body)?;
            Err(ApiError::not_implemented())
        }
        Route::CreateTopup { .. } => {
            let TopupRequest { amount: _ } = parse_json(body)?;
            Err(ApiError::not_implemented())
        }
        Route::SetAutoRecharge { .. } => {
            let AutoRechargeRequest {
                enabled: _,
                threshold: _,
                amount: _,
            } = parse_json(body)?;
            Err(ApiError::not_implemented())
        }
        Route::SetAgentLimits { .. } => {
            let AgentLimitsRequest {
                overage_policy: _,
                monthly_spend_limit: _,
                daily_call_limit: _,
                max_concurrent_calls: _,
            } = parse_json(body)?;
            Err(ApiError::not_implemented())
        }
        // TODO(ledger): cancel pending change, payment-method setup/refresh, billing portal.
        _ => Err(ApiError::not_implemented()),
    }
}
