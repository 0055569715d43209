//! Plans through Stripe subscriptions (R13-R15, R20): subscribing to a paid plan, upgrades,
//! downgrades and their cancellation, the invoice list and the billing portal.
//!
//! What to ask Stripe and what to write in the ledger, in which order, is planned by the ledger
//! (`ledger::plan_change`); this module carries the plan out. As for top-ups, every Stripe call
//! runs OUTSIDE the ledger lock, between ledger operations:
//! - subscribe (no paid subscription in force): a claim in the ledger (one subscription per
//!   workspace, however many requests race), the saved card as the customer's invoice default,
//!   then the subscription, charged at once (`payment_behavior=error_if_incomplete`). A
//!   subscription of the customer still running at Stripe (an earlier attempt whose answer was
//!   lost) is adopted instead of creating another. The cycle's credits come with the paid first
//!   invoice, here or through `invoice.paid`, once;
//! - upgrade: the subscription item moves to the new price, prorated by Stripe (money), and the
//!   ledger grants R14's prorated credits at once;
//! - downgrade: the item moves to the cheaper price without proration (the period in progress
//!   was paid at the old price and keeps the old plan: R15); to a free plan the subscription is
//!   set to end with the period instead. Cancelling the pending change undoes it at Stripe.

use http::HeaderMap;
use ledger::LedgerError;
use ledger::plan_change::{
    self, LiveSubscription, PlanChangePlan, StartPaid, StripeChange, StripeRequest,
};
use ledger::plans::{self, PlanChange, StartedSubscription};
use ledger::settlement::{FailureCode, UnpaidInvoice};
use ledger::statuses::SubscriptionStatus;
use serde_json::{Value, json};
use spin_adapter::{ApiError, Reply, payment_failed, run_ledger, stripe_failure};
use stripe_client::{Client, Proration, StripeError, Subscription};

use crate::payments::{derived_id, ensure_customer, payments_unavailable};

/// The client a Stripe step needs (the plan only asks for one when Stripe is configured).
fn configured(client: Option<&Client>) -> Result<&Client, ApiError> {
    client.ok_or_else(payments_unavailable)
}

/// `POST /v1/workspaces/{ws}/subscription` `{"plan_id"}`: the ledger plans the change
/// (`ledger::plan_change`), this carries it out.
pub async fn subscribe(
    client: Option<&Client>,
    ws: &str,
    plan_id: &str,
    headers: &HeaderMap,
    now: i64,
) -> Result<Reply, ApiError> {
    let plan = run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        let subscriber = plan_change::subscriber(db, ws).await?;
        let plan = plan_change::plan_change(&subscriber, &catalog, plan_id, client.is_some());
        if let Err(error @ LedgerError::PaymentsUnavailable { .. }) = &plan {
            spin_adapter::log!("topup: {ws} cannot change to plan {plan_id}: {error}");
        }
        plan
    })
    .await?;
    let change = match plan {
        PlanChangePlan::LedgerOnly => ledger_change(ws, plan_id, now).await?,
        PlanChangePlan::Start(start) => {
            start_paid(configured(client)?, ws, &start, headers, now).await?
        }
        PlanChangePlan::Change(change) => {
            change_paid(configured(client)?, ws, &change, headers).await?;
            ledger_change(ws, plan_id, now).await?
        }
    };
    Ok(Reply::json(200, &change))
}

/// The query of `GET .../subscription/preview`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    #[serde(default)]
    plan_id: Option<String>,
}

/// `GET /v1/workspaces/{ws}/subscription/preview?plan_id=`: what [`subscribe`] would do now,
/// planned and decided by the same ledger code, nothing written and nothing asked of Stripe
/// (`stripe_configured` only decides, as for the change, whether a paid plan can be bought).
pub async fn preview(
    stripe_configured: bool,
    ws: &str,
    query: PreviewQuery,
    now: i64,
) -> Result<Reply, ApiError> {
    let plan_id = query.plan_id.filter(|id| !id.is_empty()).ok_or_else(|| {
        ApiError::malformed("plan_id is required: the plan to preview a change to.")
            .with_detail("field", "plan_id".into())
    })?;
    let preview = run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        let subscriber = plan_change::subscriber(db, ws).await?;
        plan_change::preview(&subscriber, &catalog, &plan_id, stripe_configured, now)
    })
    .await?;
    Ok(Reply::json(200, &preview))
}

/// The ledger's side of a plan change whose Stripe side is done (or not needed).
async fn ledger_change(ws: &str, plan_id: &str, now: i64) -> Result<PlanChange, ApiError> {
    run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        plans::change_plan(db, &catalog, ws, plan_id, true, now).await
    })
    .await
}

/// A first paid subscription: ledger claim -> Stripe (adopt or create) -> ledger start, or
/// release of the claim if Stripe refused.
async fn start_paid(
    client: &Client,
    ws: &str,
    start: &StartPaid,
    headers: &HeaderMap,
    now: i64,
) -> Result<PlanChange, ApiError> {
    let customer = ensure_customer(client, ws).await?;
    let claim = plans::subscription_claim(now, &derived_id("", ws, headers));
    run_ledger(async |db| plans::claim_subscription(db, ws, &claim, now).await).await?;
    let subscription = match create_or_adopt(client, ws, &customer, start, &claim).await {
        Ok(subscription) => subscription,
        Err(error) => {
            run_ledger(async |db| plans::release_subscription_claim(db, ws, &claim).await).await?;
            return Err(error);
        }
    };
    let started = StartedSubscription {
        plan_id: &start.plan_id,
        claim: &claim,
        subscription_id: &subscription.id,
        first_period_paid: plan_change::first_period_paid(SubscriptionStatus::parse(
            &subscription.status,
        )),
    };
    run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        plans::start_subscription(db, &catalog, ws, started, now).await
    })
    .await
}

/// The customer's running subscription to the price if an earlier attempt created one, else a
/// new one charged to the saved card now. A declined card or an authentication the customer
/// must complete leaves no subscription behind (402).
async fn create_or_adopt(
    client: &Client,
    ws: &str,
    customer: &str,
    start: &StartPaid,
    claim: &str,
) -> Result<Subscription, ApiError> {
    let price = start.stripe_price.as_str();
    let running = client
        .list_subscriptions(customer)
        .await
        .map_err(|e| stripe_failure("subscription listing", &e))?;
    if let Some(found) = running.into_iter().find(|s| {
        plan_change::adopts(
            SubscriptionStatus::parse(&s.status),
            s.plan_id.as_deref(),
            price,
        )
    }) {
        spin_adapter::log!("topup: {ws} adopts its running subscription {}", found.id);
        return Ok(found);
    }
    client
        .set_default_payment_method(customer, &start.payment_method, &format!("{claim}_card"))
        .await
        .map_err(|e| stripe_failure("default payment method", &e))?;
    let subscription = client
        .create_subscription(customer, price, ws, claim)
        .await
        .map_err(|e| subscription_failure(&e))?;
    if plan_change::first_period_paid(SubscriptionStatus::parse(&subscription.status)) {
        return Ok(subscription);
    }
    // Not paid at once (Stripe answers a refusal with an error; localstripe declines the first
    // invoice's charge a moment later, and 3-D Secure waits for the customer): nothing is
    // started, the customer may try again.
    let failure = match subscription.latest_invoice.as_deref() {
        Some(invoice) => client
            .invoice_charge_failure(invoice)
            .await
            .unwrap_or_else(|error| {
                spin_adapter::log!("topup: invoice {invoice} unreadable: {error}");
                None
            }),
        None => None,
    };
    if let Err(error) = client.cancel_subscription(&subscription.id).await {
        spin_adapter::log!(
            "topup: incomplete subscription {} not canceled: {error}",
            subscription.id
        );
    }
    let unpaid = match &failure {
        Some(charge) => UnpaidInvoice::ChargeFailed(charge.failure_code.as_deref()),
        None => UnpaidInvoice::NoFailedCharge,
    };
    Err(payment_failed(FailureCode::of_unpaid_invoice(unpaid)))
}

/// A failed subscription creation: a card's refusal is a 402 with its advice; anything else as
/// for payments (502/503).
fn subscription_failure(error: &StripeError) -> ApiError {
    match error.card() {
        Some(card) => payment_failed(FailureCode::of_unpaid_invoice(UnpaidInvoice::CardError(
            &card.code,
        ))),
        None => stripe_failure("subscription", error),
    }
}

/// Carries out the Stripe side of a change of the paid subscription in force: reads it, then
/// sends the planned requests in order, each with its idempotency key.
async fn change_paid(
    client: &Client,
    ws: &str,
    change: &StripeChange,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let subscription = client
        .retrieve_subscription(&change.subscription_id)
        .await
        .map_err(|e| stripe_failure("subscription", &e))?;
    let live = LiveSubscription {
        cancel_at_period_end: subscription.cancel_at_period_end,
        price: subscription.plan_id.as_deref(),
    };
    for step in change.steps(&live) {
        let (prefix, suffix) = step.key.parts();
        let key = format!("{}{suffix}", derived_id(prefix, ws, headers));
        match step.request {
            StripeRequest::SetCancelAtPeriodEnd(cancel) => {
                client
                    .set_cancel_at_period_end(&subscription.id, cancel, &key)
                    .await
                    .map_err(|e| stripe_failure("subscription end", &e))?;
            }
            StripeRequest::MoveItem { price, prorate } => {
                let item = subscription
                    .item_id
                    .as_deref()
                    .ok_or_else(|| stripe_failure("subscription", &no_item(&subscription.id)))?;
                let proration = if prorate {
                    Proration::Create
                } else {
                    Proration::None
                };
                client
                    .change_subscription_plan(&subscription.id, item, &price, proration, &key)
                    .await
                    .map_err(|e| stripe_failure("subscription change", &e))?;
            }
        }
    }
    Ok(())
}

fn no_item(subscription_id: &str) -> StripeError {
    StripeError::Decode(format!("subscription {subscription_id} has no item"))
}

/// `DELETE /v1/workspaces/{ws}/subscription/pending-change`: 204, or 404 when nothing is pending.
/// A pending change of a paid subscription is undone at Stripe first.
pub async fn cancel_pending_change(
    client: Option<&Client>,
    ws: &str,
    headers: &HeaderMap,
) -> Result<Reply, ApiError> {
    let undo = run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        let subscriber = plan_change::subscriber(db, ws).await?;
        plan_change::plan_cancel_pending(&subscriber, &catalog, client.is_some())
    })
    .await?;
    if let Some(undo) = undo {
        change_paid(configured(client)?, ws, &undo, headers).await?;
    }
    run_ledger(async |db| plans::cancel_pending_change(db, ws).await).await?;
    Ok(Reply::empty(204))
}

/// The query of `GET .../invoices`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoicesQuery {
    #[serde(default)]
    limit: Option<String>,
}

/// `GET /v1/workspaces/{ws}/invoices?limit=`: the customer's Stripe invoices, newest first
/// (`{"data": [...]}`; none before the first payment).
pub async fn invoices(client: &Client, ws: &str, query: InvoicesQuery) -> Result<Reply, ApiError> {
    let limit = match query.limit.as_deref().filter(|l| !l.is_empty()) {
        None => 24,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::malformed("limit must be a whole number from 1 to 100.")
                    .with_detail("field", "limit".into())
            })?,
    };
    let state = run_ledger(async |db| ledger::workspace::get(db, ws).await).await?;
    let Some(customer) = state.stripe_customer_id else {
        return Ok(Reply::json(200, &json!({"data": []})));
    };
    let list = client
        .list_invoices(&customer, limit)
        .await
        .map_err(|e| stripe_failure("invoice listing", &e))?;
    let data: Vec<Value> = list
        .iter()
        .map(|invoice| {
            let amount_paid =
                stripe_client::money::from_minor(invoice.amount_paid, &invoice.currency)
                    .map(ledger::money::to_decimal)
                    .map(|d| d.to_string())
                    .unwrap_or_default();
            json!({
                "id": invoice.id,
                "number": invoice.number,
                "status": invoice.status,
                "amount_paid": amount_paid,
                "currency": invoice.currency.to_ascii_uppercase(),
                "created": ledger::calendar::rfc3339(invoice.created),
                "hosted_invoice_url": invoice.hosted_invoice_url,
                "invoice_pdf": invoice.invoice_pdf,
            })
        })
        .collect();
    Ok(Reply::json(200, &json!({"data": data})))
}

/// `POST /v1/workspaces/{ws}/billing-portal` `{"return_url"?}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalRequest {
    #[serde(default)]
    return_url: Option<String>,
}

/// `POST /v1/workspaces/{ws}/billing-portal`: a Stripe billing-portal session -> `{"url"}`.
/// `return_url` (where the portal's back link goes) must be an absolute http(s) URL.
pub async fn billing_portal(
    client: &Client,
    ws: &str,
    request: PortalRequest,
    headers: &HeaderMap,
) -> Result<Reply, ApiError> {
    let return_url = match request.return_url {
        Some(url) if valid_return_url(&url) => Some(url),
        Some(_) => {
            return Err(ApiError::from(LedgerError::invalid(
                "validation_error",
                "return_url",
                "return_url must be an absolute http or https URL of at most 2,048 characters.",
            )));
        }
        None => None,
    };
    let customer = ensure_customer(client, ws).await?;
    let url = client
        .create_billing_portal_session(
            &customer,
            return_url.as_deref(),
            &derived_id("portal_", ws, headers),
        )
        .await
        .map_err(|e| stripe_failure("billing portal session", &e))?;
    Ok(Reply::json(200, &json!({"url": url})))
}

fn valid_return_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    url.len() <= 2048
        && rest.is_some_and(|rest| {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls() {
        assert!(valid_return_url("https://app.example.com/billing"));
        assert!(valid_return_url("http://localhost:3000"));
        assert!(!valid_return_url("javascript:alert(1)"));
        assert!(!valid_return_url("https:///billing"));
        assert!(!valid_return_url("https://app.example.com/a b"));
        assert!(!valid_return_url(&format!(
            "https://a.example/{}",
            "x".repeat(2048)
        )));
    }
}
