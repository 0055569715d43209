//! End-to-end journeys of card top-ups and saved payment methods (component `user-api`, R9, R10)
//! against localstripe: the real `spin.toml` in the local host with `stripe_api_base` pointing
//! at a fresh localstripe per test. Every journey ends with the ledger's invariants.
//!
//! Needs localstripe (`source scripts/env.sh`), the host and the components
//! (`scripts/build-components.sh`).

use anyhow::{Context as _, Result, ensure};
use e2e::api::{App, Role, expect, expect_error, now_secs, token};
use e2e::stripe::{
    CARD_DECLINED_ON_CHARGE, CARD_OK, CARD_REQUIRES_AUTH, Localstripe, SECRET_KEY, payment_intents,
    save_card_through_app,
};
use e2e::{HostOptions, Reply};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The webhook endpoint secret of the webhook journey.
const WEBHOOK_SECRET: &str = "whsec_e2e_stripe_topups";
/// The seeds' advice for a declined card.
const DECLINED_ADVICE: &str = "Your bank has declined the transaction. Check that the card has sufficient funds and isn't blocked for online purchases.";

/// USD, 1 credit = 1 USD, top-ups from 10 to 5000.
fn test_catalog() -> Value {
    e2e::api::test_catalog(
        json!([
            {"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}
        ]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.05", "increment_secs": 60},
            {"kind": "message", "price": "0.01"}
        ]),
    )
}

/// The app against `ls`, with the test catalog and workspace `ws` provisioned.
fn start(ls: &Localstripe, webhook_secret: Option<&str>, ws: &str) -> Result<App> {
    let mut options = HostOptions::default()
        .env("SPIN_VARIABLE_STRIPE_API_BASE", ls.base_url())
        .env("SPIN_VARIABLE_STRIPE_SECRET_KEY", SECRET_KEY);
    if let Some(secret) = webhook_secret {
        options = options.env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", secret);
    }
    let app = App::start_with(options)?;
    let reply = app.service("PUT", "/v1/catalog", Some(&test_catalog()))?;
    ensure!(
        reply.status == 200,
        "PUT /v1/catalog: {} {}",
        reply.status,
        reply.body
    );
    app.provision(ws)?;
    Ok(app)
}

/// A request as the workspace's owner, with extra headers.
fn owner(
    app: &App,
    ws: &str,
    method: &str,
    rest: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    let bearer = format!("Bearer {}", token(ws, Role::Owner, now_secs() + 3600));
    let mut all = vec![("authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    app.request(method, &format!("/v1/workspaces/{ws}{rest}"), body, &all)
}

fn top_up(app: &App, ws: &str, amount: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    owner(
        app,
        ws,
        "POST",
        "/topups",
        Some(&json!({"amount": amount})),
        headers,
    )
}

fn summary(app: &App, ws: &str) -> Result<Value> {
    expect(
        &owner(app, ws, "GET", "/billing", None, &[])?,
        200,
        "billing",
    )
}

fn wallet(app: &App, ws: &str) -> Result<String> {
    summary(app, ws)?["wallet_balance"]
        .as_str()
        .map(str::to_owned)
        .context("no wallet_balance")
}

/// The workspace's `topup` transactions.
fn topup_transactions(app: &App, ws: &str) -> Result<Vec<Value>> {
    let reply = owner(
        app,
        ws,
        "GET",
        "/transactions?limit=100&type=topup",
        None,
        &[],
    )?;
    let page = expect(&reply, 200, "transactions")?;
    Ok(page["data"].as_array().cloned().unwrap_or_default())
}

/// Saves `number` as the frontend does: setup (the app's SetupIntent), Stripe.js confirms it
/// with the card (and localstripe needs the attach Stripe does on confirm), then refresh.
/// Returns the refresh answer and the Stripe customer.
#[test]
fn saved_card_top_up_succeeds_and_credits_once() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-card";
    let app = start(&ls, None, ws)?;
    // Nothing saved yet: refresh finds no customer and no card.
    let empty = expect(
        &owner(&app, ws, "POST", "/payment-method/refresh", None, &[])?,
        200,
        "refresh before setup",
    )?;
    assert_eq!(empty, json!({"payment_method": null}));

    let (refreshed, customer) = save_card_through_app(&app, &ls, ws, CARD_OK)?;
    assert_eq!(refreshed["payment_method"]["brand"], "visa");
    assert_eq!(refreshed["payment_method"]["last4"], "4242");
    assert_eq!(refreshed["payment_method"]["exp_month"], 12);
    assert_eq!(refreshed["payment_method"]["exp_year"], 2034);
    let card = summary(&app, ws)?["payment_method"].clone();
    assert_eq!(card["brand"], "visa");
    assert_eq!(card["last4"], "4242");
    // A second setup reuses the workspace's customer.
    let again = expect(
        &owner(&app, ws, "POST", "/payment-method/setup", None, &[])?,
        200,
        "second setup",
    )?;
    let seti = ls
        .get(&format!(
            "/v1/setup_intents/{}",
            again["setup_intent_id"].as_str().unwrap_or_default()
        ))?
        .ok()?;
    assert_eq!(seti["customer"], customer.as_str());

    let before = wallet(&app, ws)?;
    assert_eq!(before, "0");
    let created = expect(&top_up(&app, ws, "25", &[])?, 201, "top-up")?;
    assert_eq!(created["status"], "succeeded", "{created}");
    assert_eq!(created["amount"], "25");
    assert_eq!(created["credits"], "25");
    assert!(created.get("client_secret").is_none(), "{created}");
    let id = created["id"].as_str().context("no id")?;
    assert_eq!(wallet(&app, ws)?, "25");
    assert_eq!(topup_transactions(&app, ws)?.len(), 1);
    let shown = expect(
        &owner(&app, ws, "GET", &format!("/topups/{id}"), None, &[])?,
        200,
        "GET top-up",
    )?;
    assert_eq!(shown["status"], "succeeded");
    let intents = payment_intents(&ls, &customer)?;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["amount"], 2500);
    assert_eq!(intents[0]["currency"], "usd");
    assert_eq!(intents[0]["metadata"]["payment_id"], id);
    assert_eq!(intents[0]["metadata"]["workspace_id"], ws);
    assert_eq!(shown["payment_intent_id"], intents[0]["id"]);
    app.check_invariants()
}

#[test]
fn card_declined_when_charged_fails_the_top_up() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-declined";
    let app = start(&ls, None, ws)?;
    let (refreshed, _customer) = save_card_through_app(&app, &ls, ws, CARD_DECLINED_ON_CHARGE)?;
    assert_eq!(refreshed["payment_method"]["last4"], "0341");

    let reply = top_up(&app, ws, "25", &[])?;
    let error = expect_error(&reply, 402, "card_declined", "declined top-up")?;
    let message = error["message"].as_str().unwrap_or_default();
    ensure!(message.contains(DECLINED_ADVICE), "message: {message}");
    let id = error["topup_id"].as_str().context("no topup_id")?;
    assert_eq!(wallet(&app, ws)?, "0");
    assert!(topup_transactions(&app, ws)?.is_empty());
    let shown = expect(
        &owner(&app, ws, "GET", &format!("/topups/{id}"), None, &[])?,
        200,
        "GET top-up",
    )?;
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(shown["failure_code"], "card_declined");
    ensure!(
        shown["payment_intent_id"]
            .as_str()
            .is_some_and(|pi| pi.starts_with("pi_")),
        "the decline's PaymentIntent is recorded: {shown}"
    );
    app.check_invariants()
}

#[test]
fn without_a_saved_card_the_top_up_waits_for_stripe_js() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-newcard";
    let app = start(&ls, None, ws)?;
    let created = expect(&top_up(&app, ws, "30", &[])?, 201, "top-up")?;
    assert_eq!(created["status"], "pending", "{created}");
    assert_eq!(created["amount"], "30");
    assert_eq!(created["credits"], "30");
    let secret = created["client_secret"]
        .as_str()
        .context("no client_secret")?;
    ensure!(secret.starts_with("pi_"), "client_secret: {secret}");
    assert_eq!(wallet(&app, ws)?, "0");
    assert!(topup_transactions(&app, ws)?.is_empty());
    let id = created["id"].as_str().context("no id")?;
    let shown = expect(
        &owner(&app, ws, "GET", &format!("/topups/{id}"), None, &[])?,
        200,
        "GET top-up",
    )?;
    assert_eq!(shown["status"], "pending");
    let pending = summary(&app, ws)?["pending_topups"].clone();
    ensure!(
        pending.as_array().is_some_and(|p| p.len() == 1),
        "pending_topups: {pending}"
    );
    app.check_invariants()
}

#[test]
fn idempotency_key_reuses_the_top_up_and_its_payment_intent() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-idem";
    let app = start(&ls, None, ws)?;
    let (_, customer) = save_card_through_app(&app, &ls, ws, CARD_OK)?;
    let key = [("idempotency-key", "topup-retry-1")];
    let first = expect(&top_up(&app, ws, "40", &key)?, 201, "first")?;
    let second = expect(&top_up(&app, ws, "40", &key)?, 201, "second")?;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["status"], "succeeded");
    assert_eq!(wallet(&app, ws)?, "40");
    assert_eq!(topup_transactions(&app, ws)?.len(), 1);
    assert_eq!(payment_intents(&ls, &customer)?.len(), 1);
    // The same key with another amount is a conflict, and charges nothing.
    let reply = top_up(&app, ws, "41", &key)?;
    expect_error(&reply, 409, "idempotency_conflict", "other amount")?;
    assert_eq!(payment_intents(&ls, &customer)?.len(), 1);
    // Another key is another top-up.
    let other = expect(
        &top_up(&app, ws, "40", &[("idempotency-key", "topup-retry-2")])?,
        201,
        "other key",
    )?;
    assert_ne!(other["id"], first["id"]);
    assert_eq!(wallet(&app, ws)?, "80");
    assert_eq!(payment_intents(&ls, &customer)?.len(), 2);
    app.check_invariants()
}

#[test]
fn amounts_out_of_bounds_create_no_payment_intent() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-bounds";
    let app = start(&ls, None, ws)?;
    let (_, customer) = save_card_through_app(&app, &ls, ws, CARD_OK)?;
    let reply = top_up(&app, ws, "5", &[])?;
    expect_error(&reply, 422, "amount_below_minimum", "below minimum")?;
    let reply = top_up(&app, ws, "5001", &[])?;
    expect_error(&reply, 422, "amount_above_maximum", "above maximum")?;
    let reply = top_up(&app, ws, "10.005", &[])?;
    expect_error(&reply, 422, "invalid_amount", "fraction of a cent")?;
    let reply = top_up(&app, ws, "ten", &[])?;
    expect_error(&reply, 422, "invalid_amount", "not a number")?;
    assert!(payment_intents(&ls, &customer)?.is_empty());
    assert_eq!(wallet(&app, ws)?, "0");
    app.check_invariants()
}

#[test]
fn the_webhook_after_a_synchronous_success_credits_nothing_more() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-webhook";
    let app = start(&ls, Some(WEBHOOK_SECRET), ws)?;
    ls.register_webhook(&app.host.url("/webhooks/stripe"), WEBHOOK_SECRET)?;
    save_card_through_app(&app, &ls, ws, CARD_OK)?;
    let created = expect(&top_up(&app, ws, "25", &[])?, 201, "top-up")?;
    assert_eq!(created["status"], "succeeded");
    assert_eq!(wallet(&app, ws)?, "25");
    // localstripe logs each delivery the app answered 2xx.
    let delivered = "webhook \"payment_intent.succeeded\" successfully delivered";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ls.log().contains(delivered) {
        ensure!(
            Instant::now() < deadline,
            "payment_intent.succeeded not delivered; log:\n{}",
            ls.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(wallet(&app, ws)?, "25");
    assert_eq!(topup_transactions(&app, ws)?.len(), 1);
    app.check_invariants()
}

#[test]
fn authentication_leaves_the_top_up_pending_until_the_customer_completes_it() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-3ds";
    let app = start(&ls, Some(WEBHOOK_SECRET), ws)?;
    ls.register_webhook(&app.host.url("/webhooks/stripe"), WEBHOOK_SECRET)?;
    // The setup creates the customer; the card is attached as Stripe.js would after 3-D Secure.
    let setup = expect(
        &owner(&app, ws, "POST", "/payment-method/setup", None, &[])?,
        200,
        "setup",
    )?;
    let seti = ls
        .get(&format!(
            "/v1/setup_intents/{}",
            setup["setup_intent_id"].as_str().unwrap_or_default()
        ))?
        .ok()?;
    let customer = seti["customer"].as_str().context("no customer")?;
    let pm = ls.create_card(CARD_REQUIRES_AUTH)?;
    ls.attach(&pm, customer)?.ok()?;
    let refreshed = expect(
        &owner(&app, ws, "POST", "/payment-method/refresh", None, &[])?,
        200,
        "refresh",
    )?;
    assert_eq!(refreshed["payment_method"]["last4"], "3155");

    let reply = top_up(&app, ws, "25", &[])?;
    let error = expect_error(&reply, 402, "authentication_required", "3-D Secure")?;
    let secret = error["client_secret"]
        .as_str()
        .context("no client_secret")?;
    let intent = error["payment_intent_id"]
        .as_str()
        .context("no payment_intent_id")?;
    let id = error["topup_id"].as_str().context("no topup_id")?;
    let shown = expect(
        &owner(&app, ws, "GET", &format!("/topups/{id}"), None, &[])?,
        200,
        "GET top-up",
    )?;
    assert_eq!(shown["status"], "pending");
    assert_eq!(wallet(&app, ws)?, "0");

    // The customer completes 3-D Secure; the webhook credits the top-up.
    ls.post_form(
        &format!("/v1/payment_intents/{intent}/_authenticate"),
        &[("client_secret", secret), ("success", "true")],
    )?
    .ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while wallet(&app, ws)? != "25" {
        ensure!(
            Instant::now() < deadline,
            "not credited after authentication; log:\n{}",
            ls.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = expect(
        &owner(&app, ws, "GET", &format!("/topups/{id}"), None, &[])?,
        200,
        "GET top-up",
    )?;
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(topup_transactions(&app, ws)?.len(), 1);
    app.check_invariants()
}

#[test]
fn stripe_down_leaves_the_top_up_pending_and_a_retry_completes_it() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-outage";
    let app = start(&ls, None, ws)?;
    let (_, customer) = save_card_through_app(&app, &ls, ws, CARD_OK)?;
    ls.stop();
    let key = [("idempotency-key", "outage-1")];
    let reply = top_up(&app, ws, "25", &key)?;
    let error = expect_error(&reply, 503, "payment_processing_error", "Stripe down")?;
    assert_eq!(
        error["message"],
        "Temporary error: Wait a few minutes and try again."
    );
    let id = error["topup_id"]
        .as_str()
        .context("no topup_id")?
        .to_owned();
    let shown = expect(
        &owner(&app, ws, "GET", &format!("/topups/{id}"), None, &[])?,
        200,
        "GET top-up",
    )?;
    assert_eq!(shown["status"], "pending");
    assert_eq!(wallet(&app, ws)?, "0");

    ls.restart()?;
    let retried = expect(&top_up(&app, ws, "25", &key)?, 201, "retry")?;
    assert_eq!(retried["id"], id.as_str());
    assert_eq!(retried["status"], "succeeded");
    assert_eq!(wallet(&app, ws)?, "25");
    assert_eq!(payment_intents(&ls, &customer)?.len(), 1);
    app.check_invariants()
}

/// A debit through the service API, answering its JSON.
fn debit(app: &App, ws: &str, id: &str, quantity: &str) -> Result<Value> {
    let event = json!({"id": id, "workspace_id": ws, "agent_id": "agent-1", "kind": "message",
        "quantity": quantity});
    expect(&app.service("POST", "/v1/usage", Some(&event))?, 200, id)
}

/// Issue 4's journey: calls and messages burn plan credits first, then the wallet a card topped up.
#[test]
fn plan_credits_burn_first_then_the_topped_up_wallet() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-burn";
    let app = start(&ls, None, ws)?;
    expect(
        &owner(
            &app,
            ws,
            "POST",
            "/subscription",
            Some(&json!({"plan_id": "free"})),
            &[],
        )?,
        200,
        "subscribe",
    )?;
    save_card_through_app(&app, &ls, ws, CARD_OK)?;
    expect(&top_up(&app, ws, "20", &[])?, 201, "top-up")?;

    // 500 messages at 0.01: 5 plan credits.
    let first = debit(&app, ws, "m1", "500")?;
    ensure!(
        (first["from_plan"].as_str(), first["from_wallet"].as_str()) == (Some("5"), Some("0")),
        "{first}"
    );
    // A 125 s outbound call at 0.05/min bills 3 started minutes: 0.15 plan credits.
    let call = json!({"workspace_id": ws, "agent_id": "agent-1", "call_id": "call-burn", "direction": "outbound",
        "to": "+14155550123", "from": "+14155550100"});
    expect(
        &app.service("POST", "/v1/calls", Some(&call))?,
        201,
        "authorize",
    )?;
    let ended = expect(
        &app.service(
            "POST",
            "/v1/calls/call-burn/end",
            Some(&json!({"duration_seconds": 125})),
        )?,
        200,
        "end",
    )?;
    ensure!(
        (ended["charged"].as_str(), ended["from_plan"].as_str()) == (Some("0.15"), Some("0.15")),
        "{ended}"
    );
    // 600 messages (6.00): the plan's last 4.85, then 1.15 from the wallet.
    let crossing = debit(&app, ws, "m2", "600")?;
    ensure!(
        (
            crossing["from_plan"].as_str(),
            crossing["from_wallet"].as_str(),
            crossing["wallet_balance"].as_str()
        ) == (Some("4.85"), Some("1.15"), Some("18.85")),
        "{crossing}"
    );
    let last = debit(&app, ws, "m3", "1")?;
    ensure!(
        (
            last["from_wallet"].as_str(),
            last["wallet_balance"].as_str(),
            last["plan_credits_remaining"].as_str()
        ) == (Some("0.01"), Some("18.84"), Some("0")),
        "{last}"
    );
    ensure!(wallet(&app, ws)? == "18.84", "summary wallet");
    app.check_invariants()
}
