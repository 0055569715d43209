//! Test component: drives the `stripe-client` crate from Wasm against localstripe.
//!
//! - `POST /customer` `{"email", "workspace_id", "secret_key"?, "timeout_ms"?}` -> the Customer
//! - `GET  /cards?customer=cus_..` -> the customer's cards
//! - `POST /charge` `{"customer", "payment_method", "amount", "currency", "payment_id"}` ->
//!   an off-session confirmed PaymentIntent
//! - `POST /setup-intent` `{"customer"}`, `POST /setup-intent/status` `{"id"}` -> a SetupIntent
//!   and, once confirmed, its card
//! - `POST /subscription` `{"customer", "plan", "new_plan"}` -> subscribe, change plan, list
//!   invoices, cancel, and a billing-portal session (which localstripe lacks)
//!
//! Answers 200 with `{"ok": true, ...}` or `{"ok": false, "error": {...}}` (the typed error),
//! 400 for malformed input.

use bytes::Bytes;
use serde_json::{Value, json};
use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::http::{FullBody, IntoResponse, Request};
use stripe_client::{Client, NewPaymentIntent, StripeError, money};

fn reply(status: u16, value: Value) -> http::Response<FullBody<Bytes>> {
    let mut response = http::Response::new(FullBody::new(Bytes::from(value.to_string())));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_json(e: &StripeError) -> Value {
    let kind = match e {
        StripeError::Card(_) => "card",
        StripeError::RateLimited { .. } => "rate_limited",
        StripeError::Authentication { .. } => "authentication",
        StripeError::InvalidRequest { .. } => "invalid_request",
        StripeError::Api { .. } => "api",
        StripeError::Network(_) => "network",
        StripeError::Timeout(_) => "timeout",
        StripeError::Decode(_) => "decode",
        StripeError::BadInput(_) => "bad_input",
    };
    let card = e.card();
    // The classification a payment would get: the ledger's (`ledger::settlement`).
    let stripe_code = card.map(|c| c.code.as_str());
    let hard_decline = card.is_some_and(|c| {
        ledger::settlement::is_hard_decline(stripe_code, c.decline_code.as_deref())
    });
    let product_code = ledger::settlement::FailureCode::of_stripe_code(stripe_code).as_str();
    json!({
        "kind": kind,
        "code": e.code(),
        "decline_code": card.and_then(|c| c.decline_code.clone()),
        "payment_intent": card.and_then(|c| c.payment_intent.clone()),
        "charge": card.and_then(|c| c.charge.clone()),
        "message": e.to_string(),
        "hard_decline": hard_decline,
        "retryable": e.is_retryable(),
        "product_code": product_code,
    })
}

fn failed(e: &StripeError) -> http::Response<FullBody<Bytes>> {
    reply(200, json!({"ok": false, "error": error_json(e)}))
}

fn field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

/// Parses a non-negative decimal string ("20.00") into micro-units.
fn parse_micros(text: &str) -> Option<i64> {
    let (units, frac) = text.split_once('.').unwrap_or((text, ""));
    if units.is_empty()
        || frac.len() > 6
        || !(units.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let units: i64 = units.parse().ok()?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    units.checked_mul(1_000_000)?.checked_add(frac)
}

async fn client(secret_override: Option<&str>, timeout_ms: Option<u64>) -> Result<Client, String> {
    let base = spin_sdk::variables::get("stripe_api_base")
        .await
        .map_err(|e| format!("stripe_api_base: {e}"))?;
    let key = match secret_override {
        Some(key) => key.to_owned(),
        None => spin_sdk::variables::get("stripe_secret_key")
            .await
            .map_err(|e| format!("stripe_secret_key: {e}"))?,
    };
    let client = Client::new(base, key);
    Ok(match timeout_ms {
        Some(ms) => client.with_timeout(std::time::Duration::from_millis(ms)),
        None => client,
    })
}

/// Routes the probe's three requests.
#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let body: Value = match req.into_body().bytes().await {
        Ok(bytes) if bytes.is_empty() => Value::Null,
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return reply(400, json!({"error": format!("bad JSON: {e}")})),
        },
        Err(e) => return reply(400, json!({"error": format!("body: {e}")})),
    };
    let client = match client(
        field(&body, "secret_key"),
        body.get("timeout_ms").and_then(Value::as_u64),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return reply(500, json!({"error": e})),
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "/customer") => {
            let Some(workspace_id) = field(&body, "workspace_id") else {
                return reply(400, json!({"error": "workspace_id"}));
            };
            let key = format!(
                "customer:{workspace_id}:{}",
                field(&body, "secret_key").unwrap_or("")
            );
            match client
                .create_customer(field(&body, "email"), None, workspace_id, &key)
                .await
            {
                Ok(c) => reply(
                    200,
                    json!({"ok": true, "id": c.id, "email": c.email, "metadata": c.metadata}),
                ),
                Err(e) => failed(&e),
            }
        }
        ("GET", "/cards") => {
            let customer = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("customer="))
                .unwrap_or("");
            match client.list_cards(customer).await {
                Ok(cards) => reply(
                    200,
                    cards
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "brand": c.brand, "last4": c.last4,
                                        "exp_month": c.exp_month, "exp_year": c.exp_year})
                        })
                        .collect(),
                ),
                Err(e) => failed(&e),
            }
        }
        ("POST", "/charge") => {
            let (Some(customer), Some(pm), Some(amount), Some(currency), Some(payment_id)) = (
                field(&body, "customer"),
                field(&body, "payment_method"),
                field(&body, "amount").and_then(parse_micros),
                field(&body, "currency"),
                field(&body, "payment_id"),
            ) else {
                return reply(
                    400,
                    json!({"error": "customer, payment_method, amount, currency, payment_id"}),
                );
            };
            let amount_minor = match money::to_minor(amount, currency) {
                Ok(minor) => minor,
                Err(e) => return failed(&e),
            };
            let workspace_id = client
                .get(&format!("/v1/customers/{customer}"), &Default::default())
                .await
                .ok()
                .and_then(|c| c["metadata"]["workspace_id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let new = NewPaymentIntent {
                amount_minor,
                currency: currency.to_owned(),
                customer: customer.to_owned(),
                payment_method: Some(pm.to_owned()),
                confirm: true,
                off_session: true,
                save_card: false,
                payment_id: payment_id.to_owned(),
                workspace_id,
            };
            match client
                .create_payment_intent(&new, &format!("payment:{payment_id}"))
                .await
            {
                Ok(pi) => reply(
                    200,
                    json!({"ok": true, "id": pi.id, "status": pi.status, "amount_minor": pi.amount,
                           "latest_charge": pi.latest_charge}),
                ),
                Err(StripeError::Card(mut card)) => {
                    // localstripe names only the charge: find the PaymentIntent through it.
                    if card.payment_intent.is_none()
                        && let Some(charge) = card.charge.as_deref()
                        && let Ok(charge) = client.retrieve_charge(charge).await
                    {
                        card.payment_intent = charge.payment_intent;
                    }
                    failed(&StripeError::Card(card))
                }
                Err(e) => failed(&e),
            }
        }
        ("POST", "/setup-intent") => {
            let Some(customer) = field(&body, "customer") else {
                return reply(400, json!({"error": "customer"}));
            };
            let created = match client
                .create_setup_intent(customer, &format!("setup:{customer}"))
                .await
            {
                Ok(s) => s,
                Err(e) => return failed(&e),
            };
            reply(
                200,
                json!({"ok": true, "id": created.id, "status": created.status,
                       "client_secret": created.client_secret}),
            )
        }
        ("POST", "/setup-intent/status") => {
            let Some(id) = field(&body, "id") else {
                return reply(400, json!({"error": "id"}));
            };
            let seti = match client.retrieve_setup_intent(id).await {
                Ok(s) => s,
                Err(e) => return failed(&e),
            };
            let card = match seti.payment_method.as_deref() {
                Some(pm) => match client.retrieve_card(pm).await {
                    Ok(c) => json!({"brand": c.brand, "last4": c.last4,
                                    "exp_month": c.exp_month, "exp_year": c.exp_year}),
                    Err(e) => return failed(&e),
                },
                None => Value::Null,
            };
            reply(
                200,
                json!({"ok": true, "status": seti.status, "card": card}),
            )
        }
        ("POST", "/subscription") => {
            // Subscribe to `plan`, move to `new_plan`, list invoices, cancel: each step's result.
            let (Some(customer), Some(plan), Some(new_plan)) = (
                field(&body, "customer"),
                field(&body, "plan"),
                field(&body, "new_plan"),
            ) else {
                return reply(400, json!({"error": "customer, plan, new_plan"}));
            };
            let sub = match client
                .create_subscription(customer, plan, "ws_1", &format!("sub:{customer}:{plan}"))
                .await
            {
                Ok(s) => s,
                Err(e) => return failed(&e),
            };
            let Some(item) = sub.item_id.clone() else {
                return reply(200, json!({"ok": false, "error": "no item"}));
            };
            let changed = match client
                .change_subscription_plan(
                    &sub.id,
                    &item,
                    new_plan,
                    stripe_client::Proration::Create,
                    &format!("chg:{}", sub.id),
                )
                .await
            {
                Ok(s) => s,
                Err(e) => return failed(&e),
            };
            let invoices = match client.list_invoices(customer, 10).await {
                Ok(list) => list,
                Err(e) => return failed(&e),
            };
            let canceled = match client.cancel_subscription(&sub.id).await {
                Ok(s) => s,
                Err(e) => return failed(&e),
            };
            let portal = client
                .create_billing_portal_session(
                    customer,
                    Some("https://app.example/billing"),
                    "portal:1",
                )
                .await
                .map_err(|e| error_json(&e));
            reply(
                200,
                json!({
                    "ok": true,
                    "created": {"id": sub.id, "status": sub.status, "plan": sub.plan_id,
                                "period_end": sub.current_period_end},
                    "changed": {"status": changed.status, "plan": changed.plan_id},
                    "invoices": invoices.iter().map(|i| json!({
                        "id": i.id, "status": i.status, "amount_paid": i.amount_paid,
                        "currency": i.currency, "number": i.number})).collect::<Vec<_>>(),
                    "canceled": {"status": canceled.status},
                    "portal": match portal { Ok(url) => json!({"url": url}), Err(e) => e },
                }),
            )
        }
        _ => reply(404, json!({"error": "not found"})),
    }
}
