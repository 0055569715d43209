//! The localstripe harness, localstripe's behaviour the product relies on (pinned), and the
//! `stripe-client` crate against localstripe from Wasm (the `stripe-probe` test component).
//!
//! Needs localstripe (`source scripts/env.sh`), and for the probe test the host and the test
//! components (`scripts/build-host.sh`, `scripts/build-components.sh`).

use anyhow::{Context as _, Result, ensure};
use e2e::stripe::{
    CARD_DECLINED_ON_ATTACH, CARD_DECLINED_ON_CHARGE, CARD_OK, CARD_REQUIRES_AUTH, Localstripe,
    WebhookReceiver, verify_signature,
};
use e2e::{HostOptions, TestHost, get, post_json, workspace_root};
use serde_json::{Value, json};
use std::time::Duration;

const WEBHOOK_SECRET: &str = "whsec_test_localstripe";
const EVENT_WAIT: Duration = Duration::from_secs(20);

fn off_session_charge(ls: &Localstripe, customer: &str, pm: &str, amount: &str) -> Result<Value> {
    let reply = ls.post_form(
        "/v1/payment_intents",
        &[
            ("amount", amount),
            ("currency", "usd"),
            ("customer", customer),
            ("payment_method", pm),
            ("confirm", "true"),
            ("off_session", "true"),
            ("metadata[payment_id]", "pay_1"),
        ],
    )?;
    Ok(json!({"status": reply.status, "body": reply.json}))
}

#[test]
fn saved_card_charged_off_session_succeeds_and_sends_a_signed_webhook() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let mut hooks = WebhookReceiver::start()?;
    ls.register_webhook(hooks.url(), WEBHOOK_SECRET)?;

    let customer = ls.create_customer("owner@example.com")?;
    let (seti, pm) = ls.save_card(&customer, CARD_OK)?;
    assert!(seti.starts_with("seti_") && pm.starts_with("pm_"));
    // The saved card is listed on the customer, as the payment-method refresh reads it.
    let cards = ls
        .get(&format!(
            "/v1/payment_methods?customer={customer}&type=card"
        ))?
        .ok()?;
    assert_eq!(cards["data"][0]["id"], pm.as_str());
    assert_eq!(cards["data"][0]["card"]["last4"], "4242");
    assert_eq!(cards["data"][0]["card"]["brand"], "visa");

    let charged = off_session_charge(&ls, &customer, &pm, "2000")?;
    assert_eq!(charged["status"], 200, "{charged}");
    let pi = &charged["body"];
    assert_eq!(pi["status"], "succeeded", "{pi}");
    assert_eq!(pi["metadata"]["payment_id"], "pay_1");
    let pi_id = pi["id"].as_str().context("pi id")?;

    let delivery = hooks
        .wait_for_event("payment_intent.succeeded", EVENT_WAIT)
        .with_context(|| format!("no payment_intent.succeeded; log:\n{}", ls.log()))?;
    let signature = delivery
        .header("stripe-signature")
        .context("no Stripe-Signature header")?;
    let t = verify_signature(signature, &delivery.body, WEBHOOK_SECRET)
        .with_context(|| format!("bad signature {signature}"))?;
    assert!(t > 1_700_000_000);
    assert!(verify_signature(signature, &delivery.body, "whsec_other").is_none());
    let event = delivery.json();
    assert!(
        event["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("evt_"))
    );
    assert_eq!(event["data"]["object"]["id"], pi_id);
    assert_eq!(event["data"]["object"]["metadata"]["payment_id"], "pay_1");
    Ok(())
}

#[test]
fn declines_and_authentication() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let mut hooks = WebhookReceiver::start()?;
    ls.register_webhook(hooks.url(), WEBHOOK_SECRET)?;
    let customer = ls.create_customer("owner@example.com")?;

    // 0341 saves fine but is declined when charged: 402 card_declined, typed as an
    // invalid_request_error, naming the charge but not the PaymentIntent, no decline_code.
    let (_, pm) = ls.save_card(&customer, CARD_DECLINED_ON_CHARGE)?;
    let declined = off_session_charge(&ls, &customer, &pm, "2000")?;
    assert_eq!(declined["status"], 402, "{declined}");
    let error = &declined["body"]["error"];
    assert_eq!(error["code"], "card_declined");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["message"], "Your card was declined.");
    assert!(error.get("decline_code").is_none());
    assert!(error.get("payment_intent").is_none());
    let charge_id = error["charge"].as_str().context("charge id")?;
    // The charge leads to the PaymentIntent, which is back to requires_payment_method.
    let charge = ls.get(&format!("/v1/charges/{charge_id}"))?.ok()?;
    assert_eq!(charge["status"], "failed");
    let pi_id = charge["payment_intent"].as_str().context("charge pi")?;
    let pi = ls.get(&format!("/v1/payment_intents/{pi_id}"))?.ok()?;
    assert_eq!(pi["status"], "requires_payment_method");
    assert_eq!(pi["last_payment_error"]["code"], "card_declined");
    let failed = hooks
        .wait_for_event("payment_intent.payment_failed", EVENT_WAIT)
        .context("no payment_intent.payment_failed")?;
    assert_eq!(failed.json()["data"]["object"]["id"], pi_id);

    // 0002 is refused when saved.
    let seti = ls
        .post_form("/v1/setup_intents", &[("customer", &customer)])?
        .ok()?;
    let seti_id = seti["id"].as_str().context("seti id")?;
    let refused = ls.confirm_setup_intent(seti_id, CARD_DECLINED_ON_ATTACH)?;
    assert_eq!(refused.status, 402);
    assert_eq!(refused.error_code(), Some("card_declined"));

    // 3155 needs authentication: its SetupIntent answers requires_action (so Stripe.js would
    // show 3-D Secure); attached anyway, an off-session PaymentIntent answers requires_action,
    // not an error.
    let seti = ls
        .post_form("/v1/setup_intents", &[("customer", &customer)])?
        .ok()?;
    let seti_id = seti["id"].as_str().context("seti id")?;
    let pending = ls.confirm_setup_intent(seti_id, CARD_REQUIRES_AUTH)?.ok()?;
    assert_eq!(pending["status"], "requires_action");
    let pm = ls.create_card(CARD_REQUIRES_AUTH)?;
    ls.attach(&pm, &customer)?.ok()?;
    let auth = off_session_charge(&ls, &customer, &pm, "2000")?;
    assert_eq!(auth["status"], 200, "{auth}");
    assert_eq!(auth["body"]["status"], "requires_action");
    Ok(())
}

#[test]
fn unknown_parameters_are_refused_and_state_survives_a_restart() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let refused = ls.post_form("/v1/customers", &[("description_x", "x")])?;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json["error"]["message"], "Unexpected description_x");
    let no_key = e2e::get(&format!("{}/v1/customers", ls.base_url()))?;
    assert_eq!(no_key.status, 401);

    let customer = ls.create_customer("a@example.com")?;
    ls.stop();
    assert!(!ls.is_running());
    assert!(
        ls.get("/v1/balance").is_err(),
        "stopped: connection refused"
    );
    ls.restart()?;
    let again = ls.get(&format!("/v1/customers/{customer}"))?.ok()?;
    assert_eq!(again["email"], "a@example.com");
    Ok(())
}

#[test]
fn subscriptions_take_plan_items() -> Result<()> {
    let ls = Localstripe::start()?;
    let customer = ls.create_customer("owner@example.com")?;
    ls.save_card(&customer, CARD_OK)?;
    let cards = ls
        .get(&format!(
            "/v1/payment_methods?customer={customer}&type=card"
        ))?
        .ok()?;
    let pm = cards["data"][0]["id"].as_str().context("pm")?.to_owned();
    ls.post_form(
        &format!("/v1/customers/{customer}"),
        &[("invoice_settings[default_payment_method]", &pm)],
    )?
    .ok()?;
    ls.create_plan("pro", 4900, "usd")?;
    let sub = ls
        .post_form(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][plan]", "pro")],
        )?
        .ok()?;
    assert_eq!(sub["status"], "active", "{sub}");
    let price = ls.post_form(
        "/v1/subscriptions",
        &[("customer", &customer), ("items[0][price]", "pro")],
    )?;
    assert_eq!(
        price.status, 400,
        "localstripe has no Prices: {}",
        price.json
    );
    let invoices = ls.get(&format!("/v1/invoices?customer={customer}"))?.ok()?;
    assert_eq!(invoices["data"][0]["status"], "paid");
    assert_eq!(invoices["data"][0]["amount_paid"], 4900);

    // Changing the plan: `items[0][id]` + `items[0][plan]`. An unknown parameter on update
    // (here `proration_behavior`, which Stripe accepts) makes localstripe fail with a bare 500
    // (a Python TypeError), not a 400: send only what it knows (Stripe's default proration,
    // create_prorations, is what we want anyway).
    ls.create_plan("max", 9900, "usd")?;
    let sub_id = sub["id"].as_str().context("sub id")?;
    let item = sub["items"]["data"][0]["id"].as_str().context("item")?;
    let path = format!("/v1/subscriptions/{sub_id}");
    let refused = ls.post_form(
        &path,
        &[
            ("items[0][id]", item),
            ("items[0][plan]", "max"),
            ("proration_behavior", "create_prorations"),
        ],
    )?;
    assert_eq!(refused.status, 500, "{}", refused.json);
    let changed = ls
        .post_form(&path, &[("items[0][id]", item), ("items[0][plan]", "max")])?
        .ok()?;
    assert_eq!(changed["items"]["data"][0]["plan"]["id"], "max");
    let canceled = ls.delete(&path)?.ok()?;
    assert_eq!(canceled["status"], "canceled");
    Ok(())
}

fn call(host: &TestHost, path: &str, body: Value) -> Result<Value> {
    let reply = post_json(&host.url(path), &body.to_string(), &[])?;
    ensure!(
        reply.status == 200,
        "{path}: {} {}",
        reply.status,
        reply.body
    );
    Ok(serde_json::from_str(&reply.body)?)
}

#[test]
fn stripe_client_setup_intents_and_subscriptions_from_wasm() -> Result<()> {
    let ls = Localstripe::start()?;
    let host = probe(&ls)?;
    let customer = ls.create_customer("owner@example.com")?;

    let seti = call(&host, "/setup-intent", json!({"customer": customer}))?;
    assert_eq!(seti["status"], "requires_payment_method", "{seti}");
    assert!(
        seti["client_secret"]
            .as_str()
            .is_some_and(|s| s.contains("_secret_"))
    );
    let seti_id = seti["id"].as_str().context("seti id")?;
    ls.confirm_setup_intent(seti_id, CARD_OK)?.ok()?;
    let done = call(&host, "/setup-intent/status", json!({"id": seti_id}))?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["card"]["last4"], "4242");
    assert_eq!(done["card"]["exp_month"], 12);

    // Subscriptions need a default payment method to pay their first invoice.
    let (_, pm) = ls.save_card(&customer, CARD_OK)?;
    ls.post_form(
        &format!("/v1/customers/{customer}"),
        &[("invoice_settings[default_payment_method]", &pm)],
    )?
    .ok()?;
    ls.create_plan("basic", 1900, "usd")?;
    ls.create_plan("pro", 4900, "usd")?;
    let flow = call(
        &host,
        "/subscription",
        json!({"customer": customer, "plan": "basic", "new_plan": "pro"}),
    )?;
    assert_eq!(flow["ok"], true, "{flow}");
    assert_eq!(flow["created"]["status"], "active");
    assert_eq!(flow["created"]["plan"], "basic");
    assert!(flow["created"]["period_end"].as_i64().is_some());
    assert_eq!(flow["changed"]["plan"], "pro");
    assert_eq!(flow["invoices"][0]["status"], "paid");
    assert_eq!(flow["invoices"][0]["amount_paid"], 1900);
    assert_eq!(flow["invoices"][0]["number"], Value::Null);
    assert_eq!(flow["canceled"]["status"], "canceled");
    // localstripe has no billing portal: 404, typed as a refused request.
    assert_eq!(flow["portal"]["kind"], "invalid_request", "{flow}");
    Ok(())
}

fn probe(ls: &Localstripe) -> Result<TestHost> {
    TestHost::start(
        workspace_root().join("tests/components/stripe-probe.toml"),
        HostOptions::default().env("SPIN_VARIABLE_STRIPE_API_BASE", ls.base_url()),
    )
}

#[test]
fn stripe_client_from_wasm_against_localstripe() -> Result<()> {
    let ls = Localstripe::start()?;
    let host = probe(&ls)?;

    // The crate creates the customer; the test saves cards as Stripe.js would.
    let created = post_json(
        &host.url("/customer"),
        r#"{"email": "owner@example.com", "workspace_id": "ws_1"}"#,
        &[],
    )?;
    ensure!(
        created.status == 200,
        "{}: {}",
        created.status,
        created.body
    );
    let customer: Value = serde_json::from_str(&created.body)?;
    let customer_id = customer["id"].as_str().context("customer id")?.to_owned();
    let stored = ls.get(&format!("/v1/customers/{customer_id}"))?.ok()?;
    assert_eq!(stored["metadata"]["workspace_id"], "ws_1");
    assert_eq!(stored["email"], "owner@example.com");

    let (_, ok_pm) = ls.save_card(&customer_id, CARD_OK)?;
    let cards = get(&host.url(&format!("/cards?customer={customer_id}")))?;
    ensure!(cards.status == 200, "{}: {}", cards.status, cards.body);
    let cards: Value = serde_json::from_str(&cards.body)?;
    assert_eq!(cards[0]["last4"], "4242", "{cards}");
    assert_eq!(cards[0]["exp_year"], 2034);

    let charge = |pm: &str, payment_id: &str| -> Result<Value> {
        let body = json!({"customer": customer_id, "payment_method": pm,
                          "amount": "20.00", "currency": "usd", "payment_id": payment_id});
        let reply = post_json(&host.url("/charge"), &body.to_string(), &[])?;
        ensure!(reply.status == 200, "{}: {}", reply.status, reply.body);
        Ok(serde_json::from_str(&reply.body)?)
    };
    let paid = charge(&ok_pm, "pay_ok")?;
    assert_eq!(paid["ok"], true, "{paid}");
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["amount_minor"], 2000);
    let pi_id = paid["id"].as_str().context("pi id")?;
    let pi = ls.get(&format!("/v1/payment_intents/{pi_id}"))?.ok()?;
    assert_eq!(pi["metadata"]["payment_id"], "pay_ok");
    assert_eq!(pi["metadata"]["workspace_id"], "ws_1");

    let (_, bad_pm) = ls.save_card(&customer_id, CARD_DECLINED_ON_CHARGE)?;
    let declined = charge(&bad_pm, "pay_declined")?;
    assert_eq!(declined["ok"], false, "{declined}");
    assert_eq!(declined["error"]["kind"], "card");
    assert_eq!(declined["error"]["code"], "card_declined");
    assert_eq!(declined["error"]["hard_decline"], true);
    assert_eq!(declined["error"]["product_code"], "card_declined");
    // localstripe names only the charge; the crate reads the PaymentIntent through it.
    assert!(
        declined["error"]["payment_intent"]
            .as_str()
            .is_some_and(|id| id.starts_with("pi_")),
        "{declined}"
    );
    Ok(())
}

#[test]
fn stripe_client_maps_outage_and_bad_key() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let host = probe(&ls)?;
    let body = r#"{"email": "a@example.com", "workspace_id": "ws_2", "secret_key": "nope"}"#;
    let reply = post_json(&host.url("/customer"), body, &[])?;
    let answer: Value = serde_json::from_str(&reply.body)?;
    assert_eq!(answer["error"]["kind"], "authentication", "{answer}");

    ls.stop();
    let reply = post_json(
        &host.url("/customer"),
        r#"{"email": "a@example.com", "workspace_id": "ws_2"}"#,
        &[],
    )?;
    let answer: Value = serde_json::from_str(&reply.body)?;
    assert_eq!(answer["error"]["kind"], "network", "{answer}");
    assert_eq!(answer["error"]["retryable"], true);
    Ok(())
}

#[test]
fn stripe_client_times_out_on_a_silent_server() -> Result<()> {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", silent.local_addr()?);
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let host = TestHost::start(
        workspace_root().join("tests/components/stripe-probe.toml"),
        HostOptions::default().env("SPIN_VARIABLE_STRIPE_API_BASE", base),
    )?;
    let started = std::time::Instant::now();
    let reply = post_json(
        &host.url("/customer"),
        r#"{"email": "a@example.com", "workspace_id": "ws_3", "timeout_ms": 500}"#,
        &[],
    )?;
    let answer: Value = serde_json::from_str(&reply.body)?;
    assert_eq!(answer["error"]["kind"], "timeout", "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}
