//! Plans through Stripe subscriptions (R13-R15, R20): subscribing to a paid plan, upgrades,
//! downgrades and their cancellation, the invoice list and the billing portal.
//!
//! As for top-ups, every Stripe call runs OUTSIDE the ledger lock, between ledger operations:
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
use ledger::catalog::Catalog;
use ledger::plans::{self, PlanChange, StartedSubscription};
use ledger::workspace::WorkspaceState;
use serde_json::{Value, json};
use spin_adapter::{ApiError, Reply, run_ledger};
use stripe_client::{
    ADVICE_AUTHENTICATION, Client, Proration, StripeError, Subscription, advice, product_code,
};

use crate::payments::{derived_id, ensure_customer, payments_unavailable, stripe_failure};

/// What the ledger says about the workspace and the plans involved, read in one section.
struct PlanContext {
    state: WorkspaceState,
    /// The requested plan's fee in currency micros.
    target_price_micros: i64,
    /// The requested plan's Stripe price, if the catalog names one.
    target_stripe_price: Option<String>,
    /// Whether the requested plan is an upgrade over the plan in force.
    upgrade: bool,
    /// The plan in force's Stripe price.
    current_stripe_price: Option<String>,
    /// Whether the pending plan (if any) is free.
    pending_is_free: bool,
    /// Whether a paid Stripe subscription is in force.
    paid_subscription: Option<String>,
}

fn stripe_price(catalog: &Catalog, plan_id: &str) -> Option<String> {
    catalog
        .doc
        .plans
        .iter()
        .find(|plan| plan.id == plan_id)
        .and_then(|plan| plan.stripe_price_id.clone())
}

fn price_micros(catalog: &Catalog, plan_id: &str) -> i64 {
    // A plan gone from the catalog counts as paid: only Stripe can tell.
    catalog.plan(plan_id).map_or(1, |plan| plan.price_micros)
}

async fn context(ws: &str, plan_id: Option<&str>) -> Result<PlanContext, ApiError> {
    run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        let state = ledger::workspace::get(db, ws).await?;
        let (target_price_micros, target_stripe_price, upgrade) = match plan_id {
            Some(id) => {
                let target = catalog.plan(id)?;
                let upgrade = match state.plan_id.as_deref().map(|c| catalog.plan(c)) {
                    Some(Ok(current)) => plans::is_upgrade(current, target),
                    _ => true,
                };
                (target.price_micros, stripe_price(&catalog, id), upgrade)
            }
            None => (0, None, false),
        };
        let current_price = state.plan_id.as_deref().map(|c| price_micros(&catalog, c));
        let paid_subscription = state
            .stripe_subscription_id
            .clone()
            .filter(|id| !id.starts_with("claim_"))
            .filter(|_| state.subscription_status != "canceled")
            .filter(|_| current_price.is_some_and(|price| price > 0));
        Ok(PlanContext {
            current_stripe_price: state
                .plan_id
                .as_deref()
                .and_then(|c| stripe_price(&catalog, c)),
            pending_is_free: state
                .pending_plan_id
                .as_deref()
                .is_some_and(|p| price_micros(&catalog, p) == 0),
            target_price_micros,
            target_stripe_price,
            upgrade,
            paid_subscription,
            state,
        })
    })
    .await
}

/// `POST /v1/workspaces/{ws}/subscription` `{"plan_id"}`.
pub async fn subscribe(
    client: Option<&Client>,
    ws: &str,
    plan_id: &str,
    headers: &HeaderMap,
    now: i64,
) -> Result<Reply, ApiError> {
    let context = context(ws, Some(plan_id)).await?;
    let change = match (&context.paid_subscription, context.target_price_micros) {
        // Free to free (or a first free plan): the ledger alone.
        (None, 0) => ledger_change(ws, plan_id, now).await?,
        (None, _) => {
            let client = client.ok_or_else(payments_unavailable)?;
            start_paid(client, ws, plan_id, &context, headers, now).await?
        }
        (Some(_), _) if context.upgrade && context.state.subscription_status == "past_due" => {
            // New credits for a plan whose last invoice is unpaid would be credit for nothing.
            return Err(ApiError::new(
                409,
                "subscription_past_due",
                "Your last invoice is unpaid. Update your payment method in the billing portal, then upgrade.",
            ));
        }
        (Some(subscription), _) => {
            let client = client.ok_or_else(payments_unavailable)?;
            change_paid(client, ws, plan_id, subscription, &context, headers).await?;
            ledger_change(ws, plan_id, now).await?
        }
    };
    Ok(Reply::json(200, &change))
}

/// The ledger's side of a plan change whose Stripe side is done (or not needed).
async fn ledger_change(ws: &str, plan_id: &str, now: i64) -> Result<PlanChange, ApiError> {
    run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        plans::change_plan(db, &catalog, ws, plan_id, true, now).await
    })
    .await
}

/// 503 for a paid plan the catalog gives no Stripe price.
fn no_stripe_price(plan_id: &str) -> ApiError {
    eprintln!("topup: plan {plan_id} has no stripe_price_id in the catalog");
    ApiError::new(
        503,
        "payment_processing_error",
        "This plan cannot be bought yet. Contact our support team.",
    )
}

/// A new paid subscription (no paid plan in force).
async fn start_paid(
    client: &Client,
    ws: &str,
    plan_id: &str,
    context: &PlanContext,
    headers: &HeaderMap,
    now: i64,
) -> Result<PlanChange, ApiError> {
    let price = context
        .target_stripe_price
        .clone()
        .ok_or_else(|| no_stripe_price(plan_id))?;
    let Some(card) = context.state.payment_method_id.clone() else {
        return Err(ApiError::new(
            422,
            "payment_method_required",
            "Add a payment method before subscribing to a paid plan.",
        ));
    };
    let customer = ensure_customer(client, ws).await?;
    let claim = plans::subscription_claim(now, &derived_id("", ws, headers));
    run_ledger(async |db| plans::claim_subscription(db, ws, &claim, now).await).await?;
    let created = create_or_adopt(client, ws, &customer, &card, &price, &claim).await;
    let subscription = match created {
        Ok(subscription) => subscription,
        Err(error) => {
            run_ledger(async |db| plans::release_subscription_claim(db, ws, &claim).await).await?;
            return Err(error);
        }
    };
    let started = StartedSubscription {
        plan_id,
        claim: &claim,
        subscription_id: &subscription.id,
        first_period_paid: subscription.status == "active",
    };
    run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        plans::start_subscription(db, &catalog, ws, started, now).await
    })
    .await
}

/// The customer's running subscription to `price` if an earlier attempt created one, else a new
/// one charged to `card` now. A declined card or an authentication the customer must complete
/// leaves no subscription behind (402).
async fn create_or_adopt(
    client: &Client,
    ws: &str,
    customer: &str,
    card: &str,
    price: &str,
    claim: &str,
) -> Result<Subscription, ApiError> {
    let running = client
        .list_subscriptions(customer)
        .await
        .map_err(|e| stripe_failure("subscription listing", &e))?;
    if let Some(found) = running
        .into_iter()
        .find(|s| s.status == "active" && s.plan_id.as_deref() == Some(price))
    {
        eprintln!("topup: {ws} adopts its running subscription {}", found.id);
        return Ok(found);
    }
    client
        .set_default_payment_method(customer, card, &format!("{claim}_card"))
        .await
        .map_err(|e| stripe_failure("default payment method", &e))?;
    let subscription = client
        .create_subscription(customer, price, ws, claim)
        .await
        .map_err(|e| subscription_failure(&e))?;
    if subscription.status == "active" {
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
                eprintln!("topup: invoice {invoice} unreadable: {error}");
                None
            }),
        None => None,
    };
    if let Err(error) = client.cancel_subscription(&subscription.id).await {
        eprintln!(
            "topup: incomplete subscription {} not canceled: {error}",
            subscription.id
        );
    }
    Err(match failure {
        Some(code) => declined(product_code(Some(&code))),
        None => ApiError::new(402, "authentication_required", ADVICE_AUTHENTICATION),
    })
}

/// 402 for a card that refused the first invoice, with the seeds' advice.
fn declined(product_code: &'static str) -> ApiError {
    let code = match product_code {
        "payment_processing_error" => "card_declined",
        code => code,
    };
    ApiError::new(402, code, advice(code))
}

/// A failed subscription creation: a card's refusal is a 402 with its advice; anything else as
/// for payments (502/503).
fn subscription_failure(error: &StripeError) -> ApiError {
    match error.card() {
        Some(_) => declined(error.product_code()),
        None => stripe_failure("subscription", error),
    }
}

/// Moves the paid subscription in force to `plan_id` at Stripe: prorated for an upgrade, at the
/// next period for a downgrade, ended with the period for a free plan; back to the plan in
/// force (undoing a pending change) when `plan_id` is it.
async fn change_paid(
    client: &Client,
    ws: &str,
    plan_id: &str,
    subscription_id: &str,
    context: &PlanContext,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let key = |step: &str| derived_id(&format!("{step}_"), ws, headers);
    let staying = context.state.plan_id.as_deref() == Some(plan_id);
    let pending = context.state.pending_plan_id.is_some();
    if staying && !pending {
        return Ok(());
    }
    let subscription = client
        .retrieve_subscription(subscription_id)
        .await
        .map_err(|e| stripe_failure("subscription", &e))?;
    // Undo a pending change first: an upgrade or another downgrade starts from the plan paid for.
    if pending {
        undo_pending(client, &subscription, context, &key("undo")).await?;
    }
    if staying {
        return Ok(());
    }
    if context.target_price_micros == 0 {
        client
            .set_cancel_at_period_end(subscription_id, true, &key("end"))
            .await
            .map_err(|e| stripe_failure("subscription end", &e))?;
        return Ok(());
    }
    let price = context
        .target_stripe_price
        .as_deref()
        .ok_or_else(|| no_stripe_price(plan_id))?;
    let item = subscription
        .item_id
        .as_deref()
        .ok_or_else(|| stripe_failure("subscription", &no_item(subscription_id)))?;
    let proration = if context.upgrade {
        Proration::Create
    } else {
        Proration::None
    };
    client
        .change_subscription_plan(subscription_id, item, price, proration, &key("plan"))
        .await
        .map_err(|e| stripe_failure("subscription change", &e))?;
    Ok(())
}

fn no_item(subscription_id: &str) -> StripeError {
    StripeError::Decode(format!("subscription {subscription_id} has no item"))
}

/// Puts the subscription back on the plan in force: no end at period end, and the item on the
/// plan in force's price (without proration: that period is paid).
async fn undo_pending(
    client: &Client,
    subscription: &Subscription,
    context: &PlanContext,
    key: &str,
) -> Result<(), ApiError> {
    if subscription.cancel_at_period_end || context.pending_is_free {
        client
            .set_cancel_at_period_end(&subscription.id, false, &format!("{key}_end"))
            .await
            .map_err(|e| stripe_failure("subscription", &e))?;
    }
    let Some(current) = context.current_stripe_price.as_deref() else {
        return Ok(());
    };
    if subscription.plan_id.as_deref() == Some(current) {
        return Ok(());
    }
    let item = subscription
        .item_id
        .as_deref()
        .ok_or_else(|| stripe_failure("subscription", &no_item(&subscription.id)))?;
    client
        .change_subscription_plan(
            &subscription.id,
            item,
            current,
            Proration::None,
            &format!("{key}_plan"),
        )
        .await
        .map_err(|e| stripe_failure("subscription", &e))?;
    Ok(())
}

/// `DELETE /v1/workspaces/{ws}/subscription/pending-change`: 204, or 404 when nothing is pending.
pub async fn cancel_pending_change(
    client: Option<&Client>,
    ws: &str,
    headers: &HeaderMap,
) -> Result<Reply, ApiError> {
    let context = context(ws, None).await?;
    if context.state.pending_plan_id.is_some()
        && let Some(subscription_id) = &context.paid_subscription
    {
        let client = client.ok_or_else(payments_unavailable)?;
        let subscription = client
            .retrieve_subscription(subscription_id)
            .await
            .map_err(|e| stripe_failure("subscription", &e))?;
        let key = derived_id("undo_", ws, headers);
        undo_pending(client, &subscription, &context, &key).await?;
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
