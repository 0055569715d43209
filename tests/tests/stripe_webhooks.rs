//! End-to-end journeys of `POST /webhooks/stripe` (component `stripe-webhook`;
//! docs/billing-rules.md, "Stripe") against the real `spin.toml` in the local host.
//!
//! Events are built from Stripe's own object examples (`shared/stripe/tests/fixtures`: an event is
//! `event.json` with `type` set and `data.object` replaced by the resource) and signed exactly as
//! Stripe signs them. Ledger state the webhooks act on (pending top-ups, a paid plan awaiting its
//! invoice, a saved card) is set up natively on the host's own database; results are read back
//! through the API, and every journey ends with the ledger's invariants.

use anyhow::{Context as _, Result, ensure};
use e2e::api::{App, Role, json_of, micros_of, now_secs, stripe_signature};
use e2e::stripe::fixture;
use e2e::{HostOptions, Reply};
use ledger::native::NativeDb;
use ledger::{payments, plans, workspace};
use serde_json::{Value, json};

/// The endpoint secret the tests configure.
const SECRET: &str = "whsec_e2e_stripe_webhook_secret";

fn start() -> Result<App> {
    App::start_with(HostOptions::default().env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", SECRET))
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    futures::executor::block_on(future)
}

/// The host's database, opened natively (the app has already created and migrated it).
fn ledger_db(app: &App) -> Result<NativeDb> {
    let path = app.host.state_dir().join("sqlite_db.db");
    let db = NativeDb::open(&path).with_context(|| format!("open {}", path.display()))?;
    block_on(ledger::schema::migrate(&db))?;
    Ok(db)
}

/// Sets each `(key, value)` of `changes` on the object (top-level keys).
fn with(mut object: Value, changes: &Value) -> Value {
    if let (Some(target), Some(changes)) = (object.as_object_mut(), changes.as_object()) {
        for (key, value) in changes {
            target.insert(key.clone(), value.clone());
        }
    }
    object
}

/// A Stripe event: `event.json` with id, type and `data.object` replaced.
fn event(id: &str, kind: &str, object: Value) -> Result<String> {
    let mut event = fixture("event")?;
    event["id"] = id.into();
    event["type"] = kind.into();
    event["created"] = now_secs().into();
    event["data"]["object"] = object;
    Ok(event.to_string())
}

/// Posts `payload` with the given `Stripe-Signature` header (or none).
fn post(app: &App, payload: &str, header: Option<&str>) -> Result<Reply> {
    let mut headers = Vec::new();
    if let Some(header) = header {
        headers.push(("stripe-signature", header));
    }
    e2e::post_json(&app.host.url("/webhooks/stripe"), payload, &headers)
}

/// Delivers `payload` signed now with the right secret; expects 200 and returns the body.
fn deliver(app: &App, payload: &str) -> Result<Value> {
    let t = now_secs();
    let header = format!("t={t},v1={}", stripe_signature(SECRET, t, payload));
    let reply = post(app, payload, Some(&header))?;
    ensure!(
        reply.status == 200,
        "webhook: expected 200, got {} {}",
        reply.status,
        reply.body
    );
    Ok(json_of(&reply))
}

fn expect_invalid_signature(reply: &Reply, what: &str) -> Result<()> {
    ensure!(
        reply.status == 400 && json_of(reply)["error"]["code"] == "invalid_signature",
        "{what}: expected 400 invalid_signature, got {} {}",
        reply.status,
        reply.body
    );
    Ok(())
}

/// `GET .../billing` as the owner.
fn billing(app: &App, ws: &str) -> Result<Value> {
    let reply = app.user(
        ws,
        Role::Owner,
        "GET",
        &format!("/v1/workspaces/{ws}/billing"),
        None,
    )?;
    ensure!(
        reply.status == 200,
        "billing: {} {}",
        reply.status,
        reply.body
    );
    Ok(json_of(&reply))
}

/// The workspace's transactions (newest first).
fn transactions(app: &App, ws: &str) -> Result<Vec<Value>> {
    let reply = app.user(
        ws,
        Role::Owner,
        "GET",
        &format!("/v1/workspaces/{ws}/transactions?limit=100"),
        None,
    )?;
    ensure!(
        reply.status == 200,
        "transactions: {} {}",
        reply.status,
        reply.body
    );
    Ok(json_of(&reply)["data"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn count_of(transactions: &[Value], kind: &str) -> usize {
    transactions.iter().filter(|t| t["type"] == kind).count()
}

/// A top-up as the API shows it.
fn topup(app: &App, ws: &str, id: &str) -> Result<Value> {
    let reply = app.user(
        ws,
        Role::Owner,
        "GET",
        &format!("/v1/workspaces/{ws}/topups/{id}"),
        None,
    )?;
    ensure!(
        reply.status == 200,
        "topup {id}: {} {}",
        reply.status,
        reply.body
    );
    Ok(json_of(&reply))
}

fn wallet(app: &App, ws: &str) -> Result<i64> {
    micros_of(&billing(app, ws)?["wallet_balance"])
}

/// A pending top-up of `amount_money_micros` (money, USD) created natively, optionally attached
/// to `intent`.
fn pending_topup(
    app: &App,
    ws: &str,
    id: &str,
    amount_money_micros: i64,
    intent: Option<&str>,
) -> Result<()> {
    let db = ledger_db(app)?;
    block_on(async {
        let catalog = ledger::catalog::load(&db).await?;
        payments::create_topup(
            &db,
            &catalog,
            ws,
            id,
            ledger::money::to_decimal(amount_money_micros),
            now_secs(),
        )
        .await?;
        if let Some(intent) = intent {
            payments::attach_intent(&db, id, intent, now_secs()).await?;
        }
        Ok::<_, ledger::LedgerError>(())
    })?;
    Ok(())
}

/// A `payment_intent.*` object for our payment `payment_id` (amount in cents).
fn intent(intent_id: &str, payment_id: &str, cents: i64, status: &str) -> Result<Value> {
    Ok(with(
        fixture("payment_intent")?,
        &json!({
            "id": intent_id, "amount": cents, "amount_received": cents, "currency": "usd",
            "status": status, "metadata": {"payment_id": payment_id},
            "last_payment_error": null
        }),
    ))
}

fn succeeded(event_id: &str, intent_id: &str, payment_id: &str, cents: i64) -> Result<String> {
    event(
        event_id,
        "payment_intent.succeeded",
        intent(intent_id, payment_id, cents, "succeeded")?,
    )
}

fn failed(event_id: &str, intent_id: &str, payment_id: &str, cents: i64) -> Result<String> {
    let object = with(
        intent(intent_id, payment_id, cents, "requires_payment_method")?,
        &json!({"last_payment_error": {
            "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
            "message": "Your card was declined."
        }}),
    );
    event(event_id, "payment_intent.payment_failed", object)
}

#[test]
fn payment_intent_succeeded_credits_the_topup_exactly_once() -> Result<()> {
    let app = start()?;
    app.provision("ws-pi")?;
    pending_topup(&app, "ws-pi", "tp-once", 50_000_000, Some("pi_once"))?;
    assert_eq!(topup(&app, "ws-pi", "tp-once")?["status"], "pending");

    let payload = succeeded("evt_once_1", "pi_once", "tp-once", 5000)?;
    let first = deliver(&app, &payload)?;
    assert_eq!(first["outcome"], "applied", "{first}");
    // The same delivery again: answered from the processed-event record.
    let again = deliver(&app, &payload)?;
    assert_eq!(again["outcome"], "duplicate", "{again}");
    // Another event about the same PaymentIntent: the ledger's own idempotency.
    let twin = deliver(&app, &succeeded("evt_once_2", "pi_once", "tp-once", 5000)?)?;
    assert_eq!(twin["outcome"], "applied", "{twin}");

    assert_eq!(wallet(&app, "ws-pi")?, 50_000_000);
    assert_eq!(count_of(&transactions(&app, "ws-pi")?, "topup"), 1);
    let shown = topup(&app, "ws-pi", "tp-once")?;
    assert_eq!(shown["status"], "succeeded");
    assert!(
        billing(&app, "ws-pi")?["pending_topups"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    app.check_invariants()
}

#[test]
fn success_and_failure_in_any_order_credit_once() -> Result<()> {
    let app = start()?;
    app.provision("ws-order")?;
    pending_topup(&app, "ws-order", "tp-a", 20_000_000, Some("pi_a"))?;
    pending_topup(&app, "ws-order", "tp-b", 30_000_000, Some("pi_b"))?;

    // Succeeded, then a late failure: still succeeded.
    deliver(&app, &succeeded("evt_a_ok", "pi_a", "tp-a", 2000)?)?;
    deliver(&app, &failed("evt_a_ko", "pi_a", "tp-a", 2000)?)?;
    assert_eq!(topup(&app, "ws-order", "tp-a")?["status"], "succeeded");

    // Failed, then the customer retries and it succeeds: credited once.
    deliver(&app, &failed("evt_b_ko", "pi_b", "tp-b", 3000)?)?;
    let shown = topup(&app, "ws-order", "tp-b")?;
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["failure_code"], "card_declined");
    deliver(&app, &succeeded("evt_b_ok", "pi_b", "tp-b", 3000)?)?;
    deliver(&app, &failed("evt_b_ko2", "pi_b", "tp-b", 3000)?)?;
    assert_eq!(topup(&app, "ws-order", "tp-b")?["status"], "succeeded");

    assert_eq!(wallet(&app, "ws-order")?, 50_000_000);
    assert_eq!(count_of(&transactions(&app, "ws-order")?, "topup"), 2);
    app.check_invariants()
}

#[test]
fn an_unattached_payment_intent_is_found_by_its_metadata() -> Result<()> {
    let app = start()?;
    app.provision("ws-meta")?;
    pending_topup(&app, "ws-meta", "tp-meta", 25_000_000, None)?;

    deliver(&app, &succeeded("evt_meta", "pi_meta", "tp-meta", 2500)?)?;
    let shown = topup(&app, "ws-meta", "tp-meta")?;
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["payment_intent_id"], "pi_meta");
    assert_eq!(wallet(&app, "ws-meta")?, 25_000_000);

    // A PaymentIntent that is not ours: 200, ignored.
    let stranger = deliver(&app, &succeeded("evt_stranger", "pi_x", "tp-unknown", 999)?)?;
    assert_eq!(stranger["outcome"], "ignored", "{stranger}");
    assert_eq!(wallet(&app, "ws-meta")?, 25_000_000);
    app.check_invariants()
}

#[test]
fn bad_signatures_are_refused_and_write_nothing() -> Result<()> {
    let app = start()?;
    app.provision("ws-sig")?;
    pending_topup(&app, "ws-sig", "tp-sig", 40_000_000, Some("pi_sig"))?;
    let before = (billing(&app, "ws-sig")?, transactions(&app, "ws-sig")?);

    let payload = succeeded("evt_sig", "pi_sig", "tp-sig", 4000)?;
    let t = now_secs();
    let good = stripe_signature(SECRET, t, &payload);

    let tampered = payload.replace("4000", "9000");
    ensure!(
        tampered != payload,
        "the payload has no amount to tamper with"
    );
    let reply = post(&app, &tampered, Some(&format!("t={t},v1={good}")))?;
    expect_invalid_signature(&reply, "tampered body")?;

    let wrong = stripe_signature("whsec_someone_else", t, &payload);
    let reply = post(&app, &payload, Some(&format!("t={t},v1={wrong}")))?;
    expect_invalid_signature(&reply, "wrong secret")?;

    let stale = t - 301;
    let reply = post(
        &app,
        &payload,
        Some(&format!(
            "t={stale},v1={}",
            stripe_signature(SECRET, stale, &payload)
        )),
    )?;
    expect_invalid_signature(&reply, "stale timestamp")?;

    let future = t + 600;
    let reply = post(
        &app,
        &payload,
        Some(&format!(
            "t={future},v1={}",
            stripe_signature(SECRET, future, &payload)
        )),
    )?;
    expect_invalid_signature(&reply, "future timestamp")?;

    let reply = post(&app, &payload, None)?;
    expect_invalid_signature(&reply, "missing header")?;
    ensure!(
        json_of(&reply)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing")),
        "missing header message: {}",
        reply.body
    );

    let reply = post(&app, &payload, Some("v1=abc,t=now"))?;
    expect_invalid_signature(&reply, "malformed header")?;

    // A valid signature over a body that is not an event.
    let garbage = "{\"not\": \"an event\"";
    let reply = post(
        &app,
        garbage,
        Some(&format!(
            "t={t},v1={}",
            stripe_signature(SECRET, t, garbage)
        )),
    )?;
    ensure!(
        reply.status == 400 && json_of(&reply)["error"]["code"] == "malformed_request",
        "bad JSON: {} {}",
        reply.status,
        reply.body
    );

    let after = (billing(&app, "ws-sig")?, transactions(&app, "ws-sig")?);
    assert_eq!(before, after, "a refused delivery changed the ledger");
    assert_eq!(topup(&app, "ws-sig", "tp-sig")?["status"], "pending");

    // Several v1 signatures (a secret being rolled), one valid: accepted, and the event was
    // never recorded as processed by the refused attempts.
    let header = format!("t={t},v1={wrong},v0={good},v1={good}");
    let reply = post(&app, &payload, Some(&header))?;
    ensure!(
        reply.status == 200,
        "rolled secret: {} {}",
        reply.status,
        reply.body
    );
    assert_eq!(json_of(&reply)["outcome"], "applied", "{}", reply.body);
    assert_eq!(wallet(&app, "ws-sig")?, 40_000_000);
    app.check_invariants()
}

/// A `charge.refunded` object for `intent` listing `refunds` as `(id, cents)`.
fn refunded_charge(intent: &str, paid: i64, refunds: &[(&str, i64)]) -> Result<Value> {
    let refund_example = fixture("refund")?;
    let data: Vec<Value> = refunds
        .iter()
        .map(|(id, cents)| {
            with(
                refund_example.clone(),
                &json!({"id": id, "amount": cents, "currency": "usd", "payment_intent": intent,
                        "charge": "ch_refunded", "status": "succeeded"}),
            )
        })
        .collect();
    let total: i64 = refunds.iter().map(|(_, cents)| cents).sum();
    let mut charge = with(
        fixture("charge")?,
        &json!({"id": "ch_refunded", "amount": paid, "amount_captured": paid,
                "amount_refunded": total, "refunded": total == paid, "currency": "usd",
                "payment_intent": intent, "captured": true}),
    );
    charge["refunds"]["data"] = Value::Array(data);
    charge["refunds"]["total_count"] = refunds.len().into();
    Ok(charge)
}

#[test]
fn refunds_and_disputes_reverse_the_credits() -> Result<()> {
    let app = start()?;
    app.provision("ws-refund")?;
    pending_topup(
        &app,
        "ws-refund",
        "tp-refund",
        100_000_000,
        Some("pi_refund"),
    )?;
    deliver(
        &app,
        &succeeded("evt_r_ok", "pi_refund", "tp-refund", 10_000)?,
    )?;
    assert_eq!(wallet(&app, "ws-refund")?, 100_000_000);

    // A partial refund, then the charge fully refunded (Stripe lists every refund so far).
    let partial = event(
        "evt_r_1",
        "charge.refunded",
        refunded_charge("pi_refund", 10_000, &[("re_1", 3_000)])?,
    )?;
    deliver(&app, &partial)?;
    assert_eq!(wallet(&app, "ws-refund")?, 70_000_000);
    let full = event(
        "evt_r_2",
        "charge.refunded",
        refunded_charge("pi_refund", 10_000, &[("re_1", 3_000), ("re_2", 7_000)])?,
    )?;
    deliver(&app, &full)?;
    assert_eq!(wallet(&app, "ws-refund")?, 0);
    // Replays (same event, or a new event id about the same refunds) change nothing.
    deliver(&app, &full)?;
    let replay = event(
        "evt_r_3",
        "charge.refunded",
        refunded_charge("pi_refund", 10_000, &[("re_1", 3_000), ("re_2", 7_000)])?,
    )?;
    deliver(&app, &replay)?;
    assert_eq!(wallet(&app, "ws-refund")?, 0);
    assert_eq!(count_of(&transactions(&app, "ws-refund")?, "refund"), 2);

    // A dispute after the credits were spent takes the wallet negative (R12).
    let db = ledger_db(&app)?;
    block_on(async {
        let catalog = ledger::catalog::load(&db).await?;
        plans::change_plan(&db, &catalog, "ws-refund", "free", true, now_secs()).await
    })?;
    pending_topup(
        &app,
        "ws-refund",
        "tp-dispute",
        20_000_000,
        Some("pi_dispute"),
    )?;
    deliver(
        &app,
        &succeeded("evt_d_ok", "pi_dispute", "tp-dispute", 2_000)?,
    )?;
    // 1,250 AI tasks at 0.02 = 25 credits: the free plan's 10, then 15 from the wallet.
    let usage = json!({
        "id": "usage-before-dispute", "workspace_id": "ws-refund", "agent_id": "agent-1",
        "kind": "ai_task", "quantity": "1250",
        "occurred_at": ledger::calendar::rfc3339(now_secs())
    });
    let reply = app.service("POST", "/v1/usage", Some(&usage))?;
    ensure!(
        reply.status == 200,
        "usage: {} {}",
        reply.status,
        reply.body
    );
    assert_eq!(wallet(&app, "ws-refund")?, 5_000_000);

    let dispute = with(
        fixture("dispute")?,
        &json!({"id": "dp_1", "amount": 2_000, "currency": "usd",
                "payment_intent": "pi_dispute", "charge": "ch_disputed"}),
    );
    deliver(
        &app,
        &event("evt_dp", "charge.dispute.created", dispute.clone())?,
    )?;
    assert_eq!(wallet(&app, "ws-refund")?, -15_000_000);
    deliver(
        &app,
        &event("evt_dp_again", "charge.dispute.created", dispute)?,
    )?;
    assert_eq!(wallet(&app, "ws-refund")?, -15_000_000);
    assert_eq!(count_of(&transactions(&app, "ws-refund")?, "dispute"), 1);

    // A dispute without a PaymentIntent, and a refund of a payment that never succeeded:
    // answered 200 (Stripe must not retry them forever), nothing moves.
    let orphan = with(
        fixture("dispute")?,
        &json!({"id": "dp_2", "amount": 500, "currency": "usd", "payment_intent": null}),
    );
    let body = deliver(
        &app,
        &event("evt_dp_orphan", "charge.dispute.created", orphan)?,
    )?;
    assert_eq!(body["outcome"], "ignored", "{body}");
    pending_topup(&app, "ws-refund", "tp-never", 10_000_000, Some("pi_never"))?;
    let refused = event(
        "evt_r_never",
        "charge.refunded",
        refunded_charge("pi_never", 1_000, &[("re_never", 1_000)])?,
    )?;
    let body = deliver(&app, &refused)?;
    assert_eq!(body["outcome"], "refused", "{body}");
    assert_eq!(wallet(&app, "ws-refund")?, -15_000_000);
    app.check_invariants()
}

/// An invoice of `customer` paying the period starting at `period_start`.
fn invoice(id: &str, customer: &str, period_start: i64) -> Result<Value> {
    let mut invoice = with(
        fixture("invoice")?,
        &json!({"id": id, "customer": customer, "subscription": "sub_e2e",
                "billing_reason": "subscription_cycle", "status": "paid",
                "amount_paid": 2900, "amount_due": 2900, "amount_remaining": 0,
                "period_start": period_start - 30 * 86_400, "period_end": period_start}),
    );
    invoice["lines"]["data"][0]["period"] =
        json!({"start": period_start, "end": period_start + 30 * 86_400});
    Ok(invoice)
}

#[test]
fn invoices_and_subscription_events_drive_the_plan() -> Result<()> {
    let app = start()?;
    app.provision("ws-inv")?;
    let db = ledger_db(&app)?;
    let cycle_start = block_on(async {
        let catalog = ledger::catalog::load(&db).await?;
        plans::change_plan(&db, &catalog, "ws-inv", "basic", false, now_secs()).await?;
        workspace::set_stripe_customer(&db, "ws-inv", "cus_e2e").await?;
        workspace::get(&db, "ws-inv").await
    })?
    .cycle_start_at
    .context("a subscribed workspace has a cycle")?;
    assert_eq!(
        micros_of(&billing(&app, "ws-inv")?["plan_credits_remaining"])?,
        0
    );

    let paid = deliver(
        &app,
        &event(
            "evt_in_paid",
            "invoice.paid",
            invoice("in_1", "cus_e2e", cycle_start)?,
        )?,
    )?;
    assert_eq!(paid["outcome"], "applied", "{paid}");
    assert_eq!(
        micros_of(&billing(&app, "ws-inv")?["plan_credits_remaining"])?,
        1_000_000_000
    );
    // The twin event about the same invoice grants nothing more.
    deliver(
        &app,
        &event(
            "evt_in_twin",
            "invoice.payment_succeeded",
            invoice("in_1", "cus_e2e", cycle_start)?,
        )?,
    )?;
    assert_eq!(
        micros_of(&billing(&app, "ws-inv")?["plan_credits_remaining"])?,
        1_000_000_000
    );
    assert_eq!(count_of(&transactions(&app, "ws-inv")?, "plan_grant"), 1);

    // The next invoice fails: past due.
    let next = cycle_start + 31 * 86_400;
    deliver(
        &app,
        &event(
            "evt_in_failed",
            "invoice.payment_failed",
            invoice("in_2", "cus_e2e", next)?,
        )?,
    )?;
    let summary = billing(&app, "ws-inv")?;
    assert_eq!(summary["status"], "past_due", "{summary}");

    // The subscription recovers, then ends.
    let subscription = with(
        fixture("subscription")?,
        &json!({"id": "sub_e2e", "customer": "cus_e2e", "status": "active"}),
    );
    deliver(
        &app,
        &event(
            "evt_sub_upd",
            "customer.subscription.updated",
            subscription.clone(),
        )?,
    )?;
    assert_ne!(billing(&app, "ws-inv")?["status"], "past_due");
    let ended = with(subscription, &json!({"status": "canceled"}));
    deliver(
        &app,
        &event("evt_sub_del", "customer.subscription.deleted", ended)?,
    )?;
    let summary = billing(&app, "ws-inv")?;
    assert_eq!(summary["status"], "billing_not_configured", "{summary}");
    assert_eq!(summary["plan"], Value::Null);

    // Invoices of a customer we do not know: 200, ignored.
    let body = deliver(
        &app,
        &event(
            "evt_in_other",
            "invoice.paid",
            invoice("in_9", "cus_other", cycle_start)?,
        )?,
    )?;
    assert_eq!(body["outcome"], "ignored", "{body}");
    app.check_invariants()
}

#[test]
fn a_detached_card_turns_auto_recharge_off() -> Result<()> {
    let app = start()?;
    app.provision("ws-pm")?;
    let db = ledger_db(&app)?;
    block_on(async {
        let catalog = ledger::catalog::load(&db).await?;
        let method = payments::PaymentMethod {
            id: "pm_e2e".into(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2034,
        };
        payments::set_payment_method(&db, "ws-pm", &method).await?;
        let settings: payments::AutoRechargeSettings =
            serde_json::from_value(json!({"enabled": true, "threshold": "10", "amount": "20"}))
                .map_err(|e| {
                    ledger::LedgerError::invalid("validation_error", "settings", e.to_string())
                })?;
        payments::set_auto_recharge(&db, &catalog, "ws-pm", &settings).await?;
        Ok::<_, ledger::LedgerError>(())
    })?;
    let summary = billing(&app, "ws-pm")?;
    assert_eq!(summary["auto_recharge"]["enabled"], true);
    assert_eq!(summary["payment_method"]["last4"], "4242");

    let detached = with(
        fixture("payment_method")?,
        &json!({"id": "pm_e2e", "customer": null}),
    );
    let body = deliver(&app, &event("evt_pm", "payment_method.detached", detached)?)?;
    assert_eq!(body["outcome"], "applied", "{body}");
    let summary = billing(&app, "ws-pm")?;
    assert_eq!(summary["auto_recharge"]["enabled"], false, "{summary}");
    ensure!(
        summary["auto_recharge"]["warning"]
            .as_str()
            .is_some_and(|w| !w.is_empty()),
        "no auto-recharge warning: {summary}"
    );
    assert_eq!(summary["payment_method"], Value::Null, "{summary}");
    app.check_invariants()
}

#[test]
fn unknown_and_informational_events_are_acknowledged() -> Result<()> {
    let app = start()?;
    app.provision("ws-unknown")?;
    let before = billing(&app, "ws-unknown")?;
    // Stripe's example event as it is (`plan.created`).
    let body = deliver(&app, &fixture("event")?.to_string())?;
    assert_eq!(body["outcome"], "ignored", "{body}");
    let setup = with(
        fixture("setup_intent")?,
        &json!({"id": "seti_e2e", "status": "succeeded", "payment_method": "pm_new"}),
    );
    let body = deliver(&app, &event("evt_seti", "setup_intent.succeeded", setup)?)?;
    assert_eq!(body["outcome"], "ignored", "{body}");
    assert_eq!(billing(&app, "ws-unknown")?, before);
    app.check_invariants()
}
