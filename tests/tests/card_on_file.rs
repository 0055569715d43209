//! The card on file (R10) and receipts (R20), end to end against localstripe: a card becomes the
//! workspace's only once it has paid ("pay and save", Stripe's `setup_future_usage`) or been set
//! up on its own, so a new card that is declined, whose 3-D Secure is abandoned halfway, or
//! that is refused, leaves the previous card, auto-recharge and its history as they were. Every
//! payment that succeeded has a receipt.
//!
//! Stripe.js is played by [`Localstripe::confirm_card_payment`] (the card typed into the page
//! confirms the PaymentIntent) and [`Localstripe::authenticate`] (the bank's challenge).
//!
//! Needs localstripe (`source scripts/env.sh`), the host and the components
//! (`scripts/build-components.sh`).

use anyhow::{Context as _, Result, ensure};
use e2e::HostOptions;
use e2e::api::{App, expect, expect_error};
use e2e::stripe::{
    CARD_DECLINED_ON_CHARGE, CARD_OK, CARD_REQUIRES_AUTH, Localstripe, SECRET_KEY, payment_intents,
    save_card_through_app,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The webhook endpoint secret of these journeys.
const WEBHOOK_SECRET: &str = "whsec_e2e_card_on_file";
/// A second working card (localstripe calls every card a Visa).
const OTHER_CARD_OK: &str = "5555555555554444";
/// How long a webhook may take (localstripe sends them about 1 s after the fact).
const WEBHOOK_WAIT: Duration = Duration::from_secs(20);

/// USD, 1 credit = 1 USD, top-ups from 10 to 5000, the free plan grants 10 credits.
fn test_catalog() -> Value {
    e2e::api::test_catalog(
        json!([
            {"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}
        ]),
        json!([{"kind": "message", "price": "0.01"}]),
    )
}

/// The app against `ls` (its webhooks registered when `webhooks`), workspace `ws` on the free
/// plan.
fn start(ls: &mut Localstripe, ws: &str, webhooks: bool) -> Result<App> {
    let options = HostOptions::default()
        .env("SPIN_VARIABLE_STRIPE_API_BASE", ls.base_url())
        .env("SPIN_VARIABLE_STRIPE_SECRET_KEY", SECRET_KEY)
        .env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET);
    let app = App::start_with(options)?;
    if webhooks {
        ls.register_webhook(&app.host.url("/webhooks/stripe"), WEBHOOK_SECRET)?;
    }
    expect(
        &app.service("PUT", "/v1/catalog", Some(&test_catalog()))?,
        200,
        "PUT /v1/catalog",
    )?;
    app.provision(ws)?;
    expect(
        &app.owner(
            ws,
            "POST",
            "/subscription",
            Some(&json!({"plan_id": "free"})),
        )?,
        200,
        "subscribe",
    )?;
    Ok(app)
}

fn summary(app: &App, ws: &str) -> Result<Value> {
    expect(&app.owner(ws, "GET", "/billing", None)?, 200, "billing")
}

/// A top-up of `amount` paid with `card` (`"saved"` or `"new"`).
fn top_up(app: &App, ws: &str, amount: &str, card: &str) -> Result<e2e::Reply> {
    let body = json!({"amount": amount, "card": card});
    app.owner(ws, "POST", "/topups", Some(&body))
}

/// Waits (bounded) until the top-up `id` is no longer pending; answers it.
fn settled_topup(app: &App, ws: &str, id: &str, ls: &Localstripe) -> Result<Value> {
    let deadline = Instant::now() + WEBHOOK_WAIT;
    loop {
        let shown = expect(
            &app.owner(ws, "GET", &format!("/topups/{id}"), None)?,
            200,
            "GET top-up",
        )?;
        if shown["status"] != "pending" {
            return Ok(shown);
        }
        ensure!(
            Instant::now() < deadline,
            "top-up {id} still pending; localstripe log:\n{}",
            ls.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn receipts(app: &App, ws: &str) -> Result<Vec<Value>> {
    let page = expect(&app.owner(ws, "GET", "/receipts", None)?, 200, "receipts")?;
    Ok(page["data"].as_array().cloned().unwrap_or_default())
}

/// The PaymentIntent of a new-card top-up: created to save its card, left for Stripe.js.
fn check_pay_and_save_intent(ls: &Localstripe, created: &Value) -> Result<String> {
    assert_eq!(created["status"], "pending", "{created}");
    let secret = created["client_secret"]
        .as_str()
        .context("no client_secret")?
        .to_owned();
    let intent = secret.split("_secret_").next().unwrap_or_default();
    let pi = ls.get(&format!("/v1/payment_intents/{intent}"))?.ok()?;
    assert_eq!(pi["setup_future_usage"], "off_session", "{pi}");
    assert_eq!(pi["payment_method"], Value::Null, "{pi}");
    assert_eq!(pi["status"], "requires_payment_method", "{pi}");
    Ok(secret)
}

#[test]
fn a_declined_new_card_leaves_the_card_on_file_and_auto_recharge_alone() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-keep-card";
    let app = start(&mut ls, ws, true)?;
    let (_, customer) = save_card_through_app(&app, &ls, ws, CARD_OK)?;
    let saved_pm = summary_pm_id(&ls, &customer)?;
    let first = expect(&top_up(&app, ws, "10", "saved")?, 201, "saved-card top-up")?;
    assert_eq!(first["status"], "succeeded", "{first}");
    let settings = json!({"enabled": true, "threshold": "5", "amount": "20"});
    expect(
        &app.owner(ws, "PUT", "/auto-recharge", Some(&settings))?,
        200,
        "enable auto-recharge",
    )?;

    // "A new card": 4000 0000 0000 0341 attaches, then every charge fails.
    let created = expect(&top_up(&app, ws, "10", "new")?, 201, "new-card top-up")?;
    let secret = check_pay_and_save_intent(&ls, &created)?;
    let (declined, declined_pm) = ls.confirm_card_payment(&secret, CARD_DECLINED_ON_CHARGE)?;
    assert_eq!(declined.status, 402, "{}", declined.json);
    assert_eq!(declined.error_code(), Some("card_declined"));
    let id = created["id"].as_str().context("no id")?;
    let failed = settled_topup(&app, ws, id, &ls)?;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_code"], "card_declined", "{failed}");

    // The card on file, auto-recharge and the balances are as they were.
    let shown = summary(&app, ws)?;
    assert_eq!(shown["payment_method"]["last4"], "4242", "{shown}");
    assert_eq!(shown["wallet_balance"], "10", "{shown}");
    assert_eq!(shown["auto_recharge"]["enabled"], true, "{shown}");
    assert!(shown["auto_recharge"].get("warning").is_none(), "{shown}");
    let declined_card = ls
        .get(&format!("/v1/payment_methods/{declined_pm}"))?
        .ok()?;
    assert_eq!(declined_card["customer"], Value::Null, "{declined_card}");
    // Stripe agrees: re-reading the customer's cards finds the same one.
    let refreshed = expect(
        &app.owner(ws, "POST", "/payment-method/refresh", None)?,
        200,
        "refresh",
    )?;
    assert_eq!(refreshed["payment_method"]["last4"], "4242", "{refreshed}");

    // The next automatic recharge charges the card that works.
    let burn = json!({"id": "m1", "workspace_id": ws, "agent_id": "agent-1", "kind": "message",
        "quantity": "1600"});
    let burned = expect(&app.service("POST", "/v1/usage", Some(&burn))?, 200, "burn")?;
    assert_eq!(burned["wallet_balance"], "4", "{burned}");
    let report = expect(
        &app.service("POST", "/internal/jobs/auto-recharge", None)?,
        200,
        "job",
    )?;
    assert_eq!(report["recharges_succeeded"], 1, "{report}");
    assert_eq!(summary(&app, ws)?["wallet_balance"], "24");
    let recharge = payment_intents(&ls, &customer)?
        .into_iter()
        .find(|pi| {
            pi["metadata"]["payment_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("ar_"))
        })
        .context("no recharge PaymentIntent")?;
    assert_eq!(recharge["payment_method"], saved_pm.as_str(), "{recharge}");
    assert_eq!(recharge["status"], "succeeded", "{recharge}");

    // A receipt for each payment made, none for the declined one.
    let listed = receipts(&app, ws)?;
    let numbers: Vec<&str> = listed.iter().filter_map(|r| r["number"].as_str()).collect();
    assert_eq!(numbers, ["R-0002", "R-0001"], "{listed:?}");
    let top_up_receipt = &listed[1];
    assert_eq!(top_up_receipt["id"], first["id"]);
    assert_eq!(top_up_receipt["kind"], "topup");
    assert_eq!(top_up_receipt["amount"], "10");
    assert_eq!(top_up_receipt["credits"], "10");
    assert_eq!(top_up_receipt["credit_price"], "1");
    assert_eq!(top_up_receipt["tax"], "0");
    assert_eq!(top_up_receipt["currency"], "USD");
    assert_eq!(
        top_up_receipt["card"],
        json!({"brand": "visa", "last4": "4242"})
    );
    assert_eq!(listed[0]["kind"], "auto_recharge");
    assert_eq!(listed[0]["amount"], "20");
    assert_eq!(listed[0]["card"], json!({"brand": "visa", "last4": "4242"}));
    let one = expect(
        &app.owner(
            ws,
            "GET",
            &format!("/receipts/{}", first["id"].as_str().unwrap_or_default()),
            None,
        )?,
        200,
        "one receipt",
    )?;
    assert_eq!(&one, top_up_receipt);
    expect_error(
        &app.owner(ws, "GET", &format!("/receipts/{id}"), None)?,
        404,
        "not_found",
        "the declined top-up has no receipt",
    )?;
    app.check_invariants()
}

/// The id of the customer's only card at Stripe.
fn summary_pm_id(ls: &Localstripe, customer: &str) -> Result<String> {
    let cards = ls
        .get(&format!(
            "/v1/payment_methods?customer={customer}&type=card"
        ))?
        .ok()?;
    let data = cards["data"].as_array().context("no data")?;
    ensure!(data.len() == 1, "cards: {cards}");
    Ok(data[0]["id"].as_str().context("no id")?.to_owned())
}

#[test]
fn a_new_card_that_pays_becomes_the_card_on_file() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-new-card";
    let app = start(&mut ls, ws, true)?;
    let (_, customer) = save_card_through_app(&app, &ls, ws, CARD_OK)?;
    let created = expect(&top_up(&app, ws, "15", "new")?, 201, "new-card top-up")?;
    let secret = check_pay_and_save_intent(&ls, &created)?;
    let (paid, new_pm) = ls.confirm_card_payment(&secret, OTHER_CARD_OK)?;
    assert_eq!(paid.status, 200, "{}", paid.json);
    let id = created["id"].as_str().context("no id")?;
    let settled = settled_topup(&app, ws, id, &ls)?;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    let shown = summary(&app, ws)?;
    assert_eq!(shown["wallet_balance"], "15", "{shown}");
    assert_eq!(shown["payment_method"]["last4"], "4444", "{shown}");
    // Stripe's default card follows, so re-reading it keeps the new one.
    let record = ls.get(&format!("/v1/customers/{customer}"))?.ok()?;
    assert_eq!(
        record["invoice_settings"]["default_payment_method"],
        new_pm.as_str(),
        "{record}"
    );
    let refreshed = expect(
        &app.owner(ws, "POST", "/payment-method/refresh", None)?,
        200,
        "refresh",
    )?;
    assert_eq!(refreshed["payment_method"]["last4"], "4444", "{refreshed}");
    let listed = receipts(&app, ws)?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["number"], "R-0001");
    assert_eq!(listed[0]["credits"], "15");
    assert_eq!(listed[0]["card"]["last4"], "4444");
    app.check_invariants()
}

#[test]
fn a_new_card_found_paid_by_the_reconciliation_is_saved_too() -> Result<()> {
    // No webhook: the payment is found by R21's reconciliation, which saves the card as the
    // webhook would have.
    let mut ls = Localstripe::start()?;
    let ws = "ws-new-card-r21";
    let app = start(&mut ls, ws, false)?;
    let created = expect(
        &app.owner(ws, "POST", "/topups", Some(&json!({"amount": "12"})))?,
        201,
        "top-up",
    )?;
    let secret = check_pay_and_save_intent(&ls, &created)?;
    let (paid, _) = ls.confirm_card_payment(&secret, OTHER_CARD_OK)?;
    assert_eq!(paid.status, 200, "{}", paid.json);
    assert_eq!(summary(&app, ws)?["payment_method"], Value::Null);
    app.age_pending_payments()?;
    let report = expect(
        &app.service("POST", "/internal/jobs/auto-recharge", None)?,
        200,
        "job",
    )?;
    assert_eq!(report["reconciled"], 1, "{report}");
    let shown = summary(&app, ws)?;
    assert_eq!(shown["wallet_balance"], "12", "{shown}");
    assert_eq!(shown["payment_method"]["last4"], "4444", "{shown}");
    assert_eq!(receipts(&app, ws)?[0]["card"]["last4"], "4444");
    app.check_invariants()
}

#[test]
fn an_abandoned_authentication_saves_nothing() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-3ds-abandoned";
    let app = start(&mut ls, ws, true)?;
    save_card_through_app(&app, &ls, ws, CARD_OK)?;
    let created = expect(&top_up(&app, ws, "20", "new")?, 201, "new-card top-up")?;
    let secret = check_pay_and_save_intent(&ls, &created)?;
    let (challenged, pm) = ls.confirm_card_payment(&secret, CARD_REQUIRES_AUTH)?;
    assert_eq!(challenged.status, 200, "{}", challenged.json);
    assert_eq!(challenged.ok()?["status"], "requires_action");
    // The customer closes the bank's window.
    let abandoned = ls.authenticate(&secret, false)?.ok()?;
    assert_eq!(
        abandoned["status"], "requires_payment_method",
        "{abandoned}"
    );
    // Stripe reports it (payment_intent.payment_failed): the top-up fails.
    let id = created["id"].as_str().context("no id")?;
    let failed = settled_topup(&app, ws, id, &ls)?;
    assert_eq!(failed["status"], "failed", "{failed}");
    let shown = summary(&app, ws)?;
    assert_eq!(shown["payment_method"]["last4"], "4242", "{shown}");
    assert_eq!(shown["wallet_balance"], "0", "{shown}");
    let card = ls.get(&format!("/v1/payment_methods/{pm}"))?.ok()?;
    assert_eq!(card["customer"], Value::Null, "{card}");
    assert!(receipts(&app, ws)?.is_empty());
    app.check_invariants()
}

#[test]
fn the_saved_card_is_required_when_asked_for() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-no-card";
    let app = start(&mut ls, ws, false)?;
    let reply = top_up(&app, ws, "10", "saved")?;
    expect_error(&reply, 422, "payment_method_required", "no card on file")?;
    let reply = top_up(&app, ws, "10", "paypal")?;
    expect_error(&reply, 400, "malformed_request", "unknown card choice")?;
    let shown = summary(&app, ws)?;
    assert_eq!(shown["pending_topups"], json!([]), "{shown}");
    let history = expect(
        &app.owner(ws, "GET", "/transactions?type=topup", None)?,
        200,
        "history",
    )?;
    assert_eq!(history["data"], json!([]), "{history}");
    expect_error(
        &app.owner(ws, "GET", "/receipts?limit=0", None)?,
        400,
        "malformed_request",
        "limit out of range",
    )?;
    app.check_invariants()
}
