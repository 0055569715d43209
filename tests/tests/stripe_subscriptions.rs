//! End-to-end journeys of paid plans through Stripe subscriptions (R13-R15, R20), on the real
//! `spin.toml` in the local host with the default catalog (Basic: 29 USD for 1,000 credits,
//! Stripe plan `plan_basic`; Professional: 99 USD for 5,000, `plan_professional`):
//! - against localstripe: subscribing charges the saved card and grants the cycle's credits once
//!   (the synchronous answer and `invoice.payment_succeeded` both report it), an upgrade moves
//!   the Stripe item and grants R14's prorated credits, a downgrade to the free plan ends the
//!   subscription with the period and can be cancelled, a declined card starts nothing, and
//!   invoices are listed from Stripe;
//! - against [`StripeStub`] (Stripe's example objects) for what localstripe lacks: a paid
//!   downgrade without proration and the billing-portal session.
//!
//! Every journey ends with the ledger's invariants.

use anyhow::{Context as _, Result, ensure};
use e2e::api::{App, expect, expect_error, now_secs};
use e2e::stripe::{
    CARD_DECLINED_ON_CHARGE, CARD_OK, Localstripe, SECRET_KEY, StripeStub, WebhookReceiver,
    save_card_through_app,
};
use e2e::{HostOptions, Reply};
use serde_json::{Value, json};
use std::time::Duration;

const WEBHOOK_SECRET: &str = "whsec_e2e_subscriptions";

fn start(stripe_base: &str, ws: &str) -> Result<App> {
    let options = HostOptions::default()
        .env("SPIN_VARIABLE_STRIPE_API_BASE", stripe_base)
        .env("SPIN_VARIABLE_STRIPE_SECRET_KEY", SECRET_KEY)
        .env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET);
    let app = App::start_with(options)?;
    app.provision(ws)?;
    Ok(app)
}

/// localstripe with the default catalog's two Stripe plans.
fn localstripe() -> Result<Localstripe> {
    let ls = Localstripe::start()?;
    ls.create_plan("plan_basic", 2900, "usd")?;
    ls.create_plan("plan_professional", 9900, "usd")?;
    Ok(ls)
}

fn subscribe(app: &App, ws: &str, plan: &str) -> Result<Reply> {
    app.owner(ws, "POST", "/subscription", Some(&json!({"plan_id": plan})))
}

/// `GET .../subscription/preview?plan_id={plan}`.
fn preview(app: &App, ws: &str, plan: &str) -> Result<Reply> {
    app.owner(
        ws,
        "GET",
        &format!("/subscription/preview?plan_id={plan}"),
        None,
    )
}

fn summary(app: &App, ws: &str) -> Result<Value> {
    expect(&app.owner(ws, "GET", "/billing", None)?, 200, "billing")
}

/// The workspace's `plan_grant` transactions.
fn grants(app: &App, ws: &str) -> Result<Vec<Value>> {
    let page = expect(
        &app.owner(ws, "GET", "/transactions?limit=100&type=plan_grant", None)?,
        200,
        "transactions",
    )?;
    Ok(page["data"].as_array().cloned().unwrap_or_default())
}

/// The Stripe subscription `id` as localstripe has it.
fn stripe_subscription(ls: &Localstripe, id: &str) -> Result<Value> {
    ls.get(&format!("/v1/subscriptions/{id}"))?.ok()
}

/// Delivers `delivery` (signed by localstripe) to the app again and returns its outcome: the
/// event is then applied, whether localstripe's own delivery to the app came first or not.
fn redeliver(app: &App, delivery: &e2e::stripe::Delivery) -> Result<String> {
    let signature = delivery
        .header("stripe-signature")
        .context("unsigned delivery")?;
    let reply = e2e::post_json(
        &app.host.url("/webhooks/stripe"),
        &delivery.body,
        &[("stripe-signature", signature)],
    )?;
    let body = expect(&reply, 200, "webhook")?;
    Ok(body["outcome"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn a_paid_plan_is_charged_granted_once_upgraded_and_ended_with_the_period() -> Result<()> {
    let mut ls = localstripe()?;
    let ws = "ws-sub";
    let app = start(&ls.base_url(), ws)?;
    let mut receiver = WebhookReceiver::start()?;
    ls.register_webhook(
        &format!("{}/webhooks/stripe", app.host.base_url()),
        WEBHOOK_SECRET,
    )?;
    ls.register_webhook(receiver.url(), WEBHOOK_SECRET)?;

    // No card yet: refused, nothing at Stripe; the preview refuses it the same way.
    expect_error(
        &subscribe(&app, ws, "basic")?,
        422,
        "payment_method_required",
        "subscribe without a card",
    )?;
    expect_error(
        &preview(&app, ws, "basic")?,
        422,
        "payment_method_required",
        "preview without a card",
    )?;
    let (_, customer) = save_card_through_app(&app, &ls, ws, CARD_OK)?;

    // The preview: the plan's 1,000 credits, which come with the paid first invoice.
    let shown = expect(&preview(&app, ws, "basic")?, 200, "preview basic")?;
    assert_eq!(shown["change"], "subscribe", "{shown}");
    assert_eq!(shown["credits_granted"], "1000", "{shown}");
    assert_eq!(shown["price"], "29", "{shown}");
    assert_eq!(shown["awaiting_payment"], true, "{shown}");
    let change = expect(&subscribe(&app, ws, "basic")?, 200, "subscribe")?;
    assert_eq!(change["action"], "subscribed", "{change}");
    assert_eq!(
        change["credits_granted"], shown["credits_granted"],
        "{change}"
    );
    let shown = summary(&app, ws)?;
    assert_eq!(shown["plan"]["id"], "basic", "{shown}");
    assert_eq!(shown["plan_credits_remaining"], "1000", "{shown}");
    assert_eq!(shown["status"], "ok", "{shown}");
    let subs = ls
        .get(&format!("/v1/subscriptions?customer={customer}"))?
        .ok()?;
    let subs = subs["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(subs.len(), 1, "{subs:?}");
    let sub_id = subs[0]["id"].as_str().context("no id")?.to_owned();
    assert_eq!(subs[0]["status"], "active");
    assert_eq!(subs[0]["items"]["data"][0]["plan"]["id"], "plan_basic");

    // The first invoice's webhook reports the same payment: nothing more is granted.
    let paid = receiver
        .wait_for_event("invoice.payment_succeeded", Duration::from_secs(20))
        .context("localstripe sent no invoice.payment_succeeded")?;
    let outcome = redeliver(&app, &paid)?;
    ensure!(
        outcome == "applied" || outcome == "duplicate",
        "outcome {outcome}"
    );
    assert_eq!(grants(&app, ws)?.len(), 1);
    assert_eq!(summary(&app, ws)?["plan_credits_remaining"], "1000");

    // A second subscribe to a paid plan is a plan change, never a second subscription.
    let invoices = expect(&app.owner(ws, "GET", "/invoices", None)?, 200, "invoices")?;
    let listed = invoices["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{invoices}");
    assert_eq!(listed[0]["status"], "paid");
    assert_eq!(listed[0]["amount_paid"], "29");
    assert_eq!(listed[0]["currency"], "USD");

    // While the last invoice is unpaid, no upgrade (new credits for nothing); paid, it goes on.
    let before = summary(&app, ws)?;
    let invoice_event = |event_id: &str, kind: &str, invoice_id: &str| {
        json!({"id": event_id, "object": "event", "type": kind, "created": now_secs(),
               "data": {"object": {"id": invoice_id, "object": "invoice", "customer": customer,
                                   "subscription": sub_id, "billing_reason": "subscription_cycle",
                                   "period_start": e2e::api::parse_time(&before["cycle_start"])
                                       .unwrap_or_default()}}})
        .to_string()
    };
    let failed = invoice_event("evt_sub_failed", "invoice.payment_failed", "in_e2e_1");
    expect(
        &e2e::api::deliver_signed(&app, &failed, WEBHOOK_SECRET)?,
        200,
        "invoice.payment_failed",
    )?;
    assert_eq!(summary(&app, ws)?["status"], "past_due");
    expect_error(
        &subscribe(&app, ws, "professional")?,
        409,
        "subscription_past_due",
        "upgrade while past due",
    )?;
    expect_error(
        &preview(&app, ws, "professional")?,
        409,
        "subscription_past_due",
        "upgrade preview while past due",
    )?;
    let paid = invoice_event("evt_sub_paid", "invoice.paid", "in_e2e_1");
    let body = expect(
        &e2e::api::deliver_signed(&app, &paid, WEBHOOK_SECRET)?,
        200,
        "invoice.paid",
    )?;
    assert_eq!(body["outcome"], "applied", "{body}");
    assert_eq!(summary(&app, ws)?["status"], "ok");
    assert_eq!(grants(&app, ws)?.len(), 1, "the cycle was granted already");

    // Upgrade: the Stripe item moves (Stripe prorates the fee), R14 prorates the credits, as
    // the preview said, with no invoice to wait for.
    let shown = expect(
        &preview(&app, ws, "professional")?,
        200,
        "preview professional",
    )?;
    assert_eq!(shown["change"], "upgrade", "{shown}");
    assert_eq!(shown["awaiting_payment"], false, "{shown}");
    let upgrade = expect(&subscribe(&app, ws, "professional")?, 200, "upgrade")?;
    assert_eq!(upgrade["action"], "upgraded", "{upgrade}");
    assert_eq!(
        e2e::api::micros_of(&upgrade["credits_granted"])?,
        e2e::api::micros_of(&shown["credits_granted"])?,
        "{shown} then {upgrade}"
    );
    let start = e2e::api::parse_time(&before["cycle_start"])?;
    let end = e2e::api::parse_time(&before["next_renewal_at"])?;
    let today = now_secs() - now_secs().rem_euclid(86_400);
    let days_left = (end - today) / 86_400;
    let days = (end - start) / 86_400;
    let expected = 5_000_000_000_i64 * days_left / days;
    assert_eq!(
        e2e::api::micros_of(&upgrade["credits_granted"])?,
        expected,
        "{upgrade}"
    );
    let sub = stripe_subscription(&ls, &sub_id)?;
    assert_eq!(sub["items"]["data"][0]["plan"]["id"], "plan_professional");
    let shown = summary(&app, ws)?;
    assert_eq!(shown["plan"]["id"], "professional");
    assert_eq!(
        e2e::api::micros_of(&shown["plan_credits_remaining"])?,
        1_000_000_000 + expected
    );

    // Down to the free plan: Stripe ends the subscription with the paid period; cancellable.
    let shown = expect(&preview(&app, ws, "free")?, 200, "preview free")?;
    let down = expect(&subscribe(&app, ws, "free")?, 200, "downgrade")?;
    assert_eq!(down["action"], "downgrade_scheduled", "{down}");
    assert_eq!(shown["change"], "downgrade", "{shown}");
    assert_eq!(shown["effective_at"], down["effective_at"], "{shown}");
    assert_eq!(shown["credits_granted"], "0", "{shown}");
    assert_eq!(down["pending_plan_id"], "free");
    assert_eq!(
        stripe_subscription(&ls, &sub_id)?["cancel_at_period_end"],
        true
    );
    let cancelled = app.owner(ws, "DELETE", "/subscription/pending-change", None)?;
    assert_eq!(cancelled.status, 204, "{}", cancelled.body);
    assert_eq!(
        stripe_subscription(&ls, &sub_id)?["cancel_at_period_end"],
        false
    );
    assert_eq!(summary(&app, ws)?["pending_plan_change"], Value::Null);

    // One subscription, one grant per change, and the wallet untouched.
    let all = ls
        .get(&format!("/v1/subscriptions?customer={customer}"))?
        .ok()?;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(grants(&app, ws)?.len(), 2);
    assert_eq!(summary(&app, ws)?["wallet_balance"], "0");
    app.check_invariants()
}

#[test]
fn a_declined_card_starts_no_subscription() -> Result<()> {
    let ls = localstripe()?;
    let ws = "ws-sub-declined";
    let app = start(&ls.base_url(), ws)?;
    let (_, customer) = save_card_through_app(&app, &ls, ws, CARD_DECLINED_ON_CHARGE)?;
    let error = expect_error(
        &subscribe(&app, ws, "basic")?,
        402,
        "card_declined",
        "subscribe with a declined card",
    )?;
    ensure!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("declined")),
        "{error}"
    );
    let shown = summary(&app, ws)?;
    assert_eq!(shown["plan"], Value::Null, "{shown}");
    assert_eq!(shown["plan_credits_remaining"], "0");
    assert!(grants(&app, ws)?.is_empty());
    let subs = ls
        .get(&format!("/v1/subscriptions?customer={customer}"))?
        .ok()?;
    assert_eq!(subs["data"], json!([]), "{subs}");
    // The claim was released: with the declined card replaced, the next attempt subscribes.
    let cards = ls
        .get(&format!(
            "/v1/payment_methods?customer={customer}&type=card"
        ))?
        .ok()?;
    for card in cards["data"].as_array().cloned().unwrap_or_default() {
        let id = card["id"].as_str().context("card without id")?;
        ls.post_form(&format!("/v1/payment_methods/{id}/detach"), &[])?
            .ok()?;
    }
    save_card_through_app(&app, &ls, ws, CARD_OK)?;
    let change = expect(&subscribe(&app, ws, "basic")?, 200, "subscribe")?;
    assert_eq!(change["credits_granted"], "1000", "{change}");
    app.check_invariants()
}

#[test]
fn a_card_saved_through_setup_intent_succeeded_is_read_from_stripe() -> Result<()> {
    let ls = localstripe()?;
    let ws = "ws-sub-seti";
    let app = start(&ls.base_url(), ws)?;
    // The app's customer, and a card saved for it at Stripe (as Stripe.js would).
    let setup = expect(
        &app.owner(ws, "POST", "/payment-method/setup", Some(&json!({})))?,
        200,
        "setup",
    )?;
    let seti = setup["setup_intent_id"].as_str().context("no seti")?;
    let confirmed = ls.confirm_setup_intent(seti, CARD_OK)?.ok()?;
    let customer = confirmed["customer"].as_str().context("no customer")?;
    let pm = confirmed["payment_method"].as_str().context("no pm")?;
    ls.attach(pm, customer)?.ok()?;
    assert_eq!(summary(&app, ws)?["payment_method"], Value::Null);
    // localstripe never sends setup_intent.succeeded: the test signs it as Stripe does.
    let payload = json!({
        "id": "evt_seti_1", "object": "event", "type": "setup_intent.succeeded",
        "created": now_secs(),
        "data": {"object": {"id": seti, "object": "setup_intent", "status": "succeeded",
                            "customer": customer, "payment_method": pm}}
    })
    .to_string();
    let reply = e2e::api::deliver_signed(&app, &payload, WEBHOOK_SECRET)?;
    let body = expect(&reply, 200, "webhook")?;
    assert_eq!(body["outcome"], "applied", "{body}");
    let shown = summary(&app, ws)?["payment_method"].clone();
    assert_eq!(shown["last4"], "4242", "{shown}");
    assert_eq!(shown["brand"], "visa", "{shown}");
    app.check_invariants()
}

#[test]
fn downgrades_skip_proration_and_the_portal_session_is_returned() -> Result<()> {
    let mut stub = StripeStub::start()?;
    let ws = "ws-sub-stub";
    let app = start(stub.base_url(), ws)?;
    // Card and subscription from Stripe's example objects (visa 4242, subscription active).
    expect(
        &app.owner(ws, "POST", "/payment-method/setup", Some(&json!({})))?,
        200,
        "setup",
    )?;
    expect(
        &app.owner(ws, "POST", "/payment-method/refresh", None)?,
        200,
        "refresh",
    )?;
    let change = expect(&subscribe(&app, ws, "professional")?, 200, "subscribe")?;
    assert_eq!(change["credits_granted"], "5000", "{change}");
    let created = stub.forms("POST", "/v1/subscriptions");
    assert_eq!(created.len(), 1);
    let pairs = &created[0];
    for expected in [
        ("items[0][plan]", "plan_professional"),
        ("payment_behavior", "error_if_incomplete"),
        ("metadata[workspace_id]", ws),
    ] {
        ensure!(
            pairs.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not in {pairs:?}"
        );
    }

    // Down to Basic: the item moves to plan_basic without proration; credits stay until renewal.
    let sub_path = "/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw";
    let down = expect(&subscribe(&app, ws, "basic")?, 200, "downgrade")?;
    assert_eq!(down["action"], "downgrade_scheduled", "{down}");
    let updates = stub.forms("POST", sub_path);
    assert_eq!(updates.len(), 1, "{updates:?}");
    ensure!(
        updates[0].contains(&("proration_behavior".into(), "none".into()))
            && updates[0].contains(&("items[0][plan]".into(), "plan_basic".into())),
        "{updates:?}"
    );
    assert_eq!(summary(&app, ws)?["plan_credits_remaining"], "5000");
    // Cancelling it puts the item back on plan_professional, again without proration.
    let cancelled = app.owner(ws, "DELETE", "/subscription/pending-change", None)?;
    assert_eq!(cancelled.status, 204, "{}", cancelled.body);
    let updates = stub.forms("POST", sub_path);
    assert_eq!(updates.len(), 2, "{updates:?}");
    ensure!(
        updates[1].contains(&("proration_behavior".into(), "none".into()))
            && updates[1].contains(&("items[0][plan]".into(), "plan_professional".into())),
        "{updates:?}"
    );

    // The billing portal: the customer and the return URL, Stripe's URL back.
    let portal = expect(
        &app.owner(
            ws,
            "POST",
            "/billing-portal",
            Some(&json!({"return_url": "https://app.example.com/billing"})),
        )?,
        200,
        "portal",
    )?;
    ensure!(
        portal["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{portal}"
    );
    let sessions = stub.forms("POST", "/v1/billing_portal/sessions");
    assert_eq!(sessions.len(), 1);
    ensure!(
        sessions[0].contains(&("customer".into(), "cus_QXg1o8vcGmoR32".into()))
            && sessions[0].contains(&(
                "return_url".into(),
                "https://app.example.com/billing".into()
            )),
        "{sessions:?}"
    );
    expect_error(
        &app.owner(
            ws,
            "POST",
            "/billing-portal",
            Some(&json!({"return_url": "javascript:alert(1)"})),
        )?,
        422,
        "validation_error",
        "portal with a bad return_url",
    )?;
    assert_eq!(stub.forms("POST", "/v1/billing_portal/sessions").len(), 1);
    app.check_invariants()
}
