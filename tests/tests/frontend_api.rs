//! End-to-end journeys of the frontend API (component `user-api`; docs/billing-rules.md, "The HTTP
//! contract") against the real `spin.toml` in the local host. Workspaces are funded by free plans that grant credits (a test
//! catalog), so no journey needs Stripe; debits go through the service route `POST /v1/usage`.
//! Every journey ends with the ledger's invariants checked on the host's database.

use anyhow::{Result, ensure};
use e2e::Reply;
use e2e::api::{App, JWT_SECRET, Role, expect, expect_error, json_of, now_secs, sign, token};
use serde_json::{Value, json};

/// The Status message of `billing_not_configured` (the seeds' "Billing not configured").
const NOT_CONFIGURED: &str =
    "Billing not configured: select a plan and set up your payment method to use your agents.";
/// The same for a member, who cannot act on it (R19): it says who can.
const NOT_CONFIGURED_MEMBER: &str = "Billing not configured: agents can be used once an owner or admin of this workspace selects a plan and sets up a payment method.";
/// The member's `low_balance` sentence.
const LOW_BALANCE_MEMBER: &str = "The balance is low. Ask an owner or admin of this workspace to top up or enable auto-recharge.";
/// R11's sentence, word for word from the seeds.
const PAYMENT_METHOD_REQUIRED: &str =
    "Payment method must be configured before enabling auto-recharge.";

/// A catalog whose plans are free (so upgrades and downgrades work without Stripe) plus one paid
/// plan, on the default rate card.
fn test_catalog() -> Value {
    e2e::api::test_catalog(
        json!([
            {"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"},
            {"id": "starter", "name": "Starter", "price": "0", "monthly_credits": "100"},
            {"id": "growth", "name": "Growth", "price": "0", "monthly_credits": "1000"},
            {"id": "pro", "name": "Pro", "price": "49", "monthly_credits": "5000",
             "rollover_max_credits": "1000", "stripe_price_id": "price_pro"}
        ]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.05", "increment_secs": 60},
            {"kind": "call", "direction": "inbound", "price": "0.01", "increment_secs": 60},
            {"kind": "message", "price": "0.01"},
            {"kind": "sms", "price": "0.0075"},
            {"kind": "stt", "price": "0.006"},
            {"kind": "ai_task", "price": "0.02"}
        ]),
    )
}

/// Starts the app with the test catalog stored.
fn start() -> Result<App> {
    let app = App::start()?;
    let reply = app.service("PUT", "/v1/catalog", Some(&test_catalog()))?;
    ensure!(
        reply.status == 200,
        "PUT /v1/catalog: {} {}",
        reply.status,
        reply.body
    );
    Ok(app)
}

/// An owner's request on `ws`.
fn owner(app: &App, ws: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Reply> {
    app.user(ws, Role::Owner, method, path, body)
}

/// Sets the workspace's test clock.
fn set_clock(app: &App, ws: &str, time: &str) -> Result<()> {
    let reply = app.service(
        "POST",
        &format!("/v1/test-clocks/{ws}"),
        Some(&json!({"frozen_time": time})),
    )?;
    expect(&reply, 200, "set test clock")?;
    Ok(())
}

/// Chooses a plan as the owner; returns the PlanChange.
fn choose_plan(app: &App, ws: &str, plan: &str) -> Result<Value> {
    let reply = owner(
        app,
        ws,
        "POST",
        &format!("/v1/workspaces/{ws}/subscription"),
        Some(&json!({"plan_id": plan})),
    )?;
    expect(&reply, 200, &format!("choose plan {plan}"))
}

/// The owner's billing summary.
fn summary(app: &App, ws: &str) -> Result<Value> {
    let reply = owner(
        app,
        ws,
        "GET",
        &format!("/v1/workspaces/{ws}/billing"),
        None,
    )?;
    expect(&reply, 200, "billing summary")
}

/// Debits one usage event through the service route; returns the debit.
fn debit(
    app: &App,
    ws: &str,
    id: &str,
    agent: &str,
    kind: &str,
    quantity: &str,
    at: &str,
) -> Result<Value> {
    let event = json!({
        "id": id, "workspace_id": ws, "agent_id": agent, "kind": kind,
        "quantity": quantity, "occurred_at": at
    });
    let reply = app.service("POST", "/v1/usage", Some(&event))?;
    expect(&reply, 200, &format!("usage {id}"))
}

#[test]
fn new_workspace_is_not_configured_and_lists_plans_and_rates() -> Result<()> {
    let app = start()?;
    app.provision("ws-new")?;

    let body = summary(&app, "ws-new")?;
    assert_eq!(body["status"], "billing_not_configured");
    assert_eq!(body["message"], NOT_CONFIGURED);
    assert_eq!(body["plan"], Value::Null);
    assert_eq!(body["currency"], "USD");
    // What a credit costs and the manual top-up bounds, in the currency.
    assert_eq!(body["credit_price"], "1");
    assert_eq!(body["topup_min"], "10");
    assert_eq!(body["topup_max"], "5000");
    assert_eq!(body["wallet_balance"], "0");
    assert_eq!(body["plan_credits_remaining"], "0");
    assert_eq!(body["cycle_start"], Value::Null);
    assert_eq!(body["next_renewal_at"], Value::Null);
    assert_eq!(body["pending_plan_change"], Value::Null);
    assert_eq!(body["payment_method"], Value::Null);
    assert_eq!(body["auto_recharge"]["enabled"], false);

    // A member sees the banner only.
    let reply = app.user(
        "ws-new",
        Role::Member,
        "GET",
        "/v1/workspaces/ws-new/billing",
        None,
    )?;
    let body = expect(&reply, 200, "member summary")?;
    assert_eq!(
        body,
        json!({"status": "billing_not_configured", "message": NOT_CONFIGURED_MEMBER})
    );
    // An admin sees everything.
    let reply = app.user(
        "ws-new",
        Role::Admin,
        "GET",
        "/v1/workspaces/ws-new/billing",
        None,
    )?;
    assert_eq!(expect(&reply, 200, "admin summary")?["wallet_balance"], "0");

    let plans = expect(
        &owner(&app, "ws-new", "GET", "/v1/plans", None)?,
        200,
        "plans",
    )?;
    assert_eq!(plans["currency"], "USD");
    assert_eq!(plans["credit_price"], "1");
    let data = plans["data"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = data.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["free", "starter", "growth", "pro"]);
    assert_eq!(
        data[3],
        json!({"id": "pro", "name": "Pro", "price": "49", "monthly_credits": "5000", "rollover_max_credits": "1000"})
    );
    assert_eq!(
        data[0],
        json!({"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"})
    );

    let rates = expect(
        &owner(&app, "ws-new", "GET", "/v1/rates", None)?,
        200,
        "rates",
    )?;
    assert_eq!(rates["currency"], "USD");
    assert_eq!(rates["credit_price"], "1");
    let data = rates["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), 6);
    assert_eq!(
        data[0],
        json!({"kind": "call", "direction": "outbound", "price": "0.05", "increment_secs": 60})
    );
    assert_eq!(data[5], json!({"kind": "ai_task", "price": "0.02"}));

    // Unknown plan: 404; a paid plan: 503 until Stripe is wired (issue 5); bad bodies: 400.
    let path = "/v1/workspaces/ws-new/subscription";
    let reply = owner(
        &app,
        "ws-new",
        "POST",
        path,
        Some(&json!({"plan_id": "nope"})),
    )?;
    expect_error(&reply, 404, "not_found", "unknown plan")?;
    let reply = owner(
        &app,
        "ws-new",
        "POST",
        path,
        Some(&json!({"plan_id": "pro"})),
    )?;
    let error = expect_error(&reply, 503, "payment_processing_error", "paid plan")?;
    assert_eq!(error["message"], "Payments are not configured yet.");
    let reply = owner(&app, "ws-new", "POST", path, Some(&json!({"plan": "free"})))?;
    expect_error(&reply, 400, "malformed_request", "unknown field")?;
    let reply = owner(&app, "ws-new", "POST", path, Some(&json!({"plan_id": 7})))?;
    expect_error(&reply, 400, "malformed_request", "wrong type")?;
    let reply = owner(&app, "ws-new", "POST", path, None)?;
    expect_error(&reply, 400, "malformed_request", "no body")?;
    let reply = owner(&app, "ws-new", "POST", path, Some(&json!(["free"])))?;
    expect_error(&reply, 400, "malformed_request", "array body")?;
    // Nothing of that changed the workspace.
    assert_eq!(summary(&app, "ws-new")?["status"], "billing_not_configured");

    // A workspace that does not exist: 404 on its routes, whatever the token says.
    let reply = owner(&app, "ghost", "GET", "/v1/workspaces/ghost/billing", None)?;
    expect_error(&reply, 404, "not_found", "unknown workspace summary")?;
    let reply = owner(
        &app,
        "ghost",
        "POST",
        "/v1/workspaces/ghost/subscription",
        Some(&json!({"plan_id": "free"})),
    )?;
    expect_error(&reply, 404, "not_found", "unknown workspace subscribe")?;
    let reply = owner(
        &app,
        "ghost",
        "GET",
        "/v1/workspaces/ghost/agents/a1/limits",
        None,
    )?;
    expect_error(&reply, 404, "not_found", "unknown workspace limits")?;
    let reply = owner(
        &app,
        "ghost",
        "GET",
        "/v1/workspaces/ghost/transactions",
        None,
    )?;
    expect_error(&reply, 404, "not_found", "unknown workspace transactions")?;
    let reply = owner(
        &app,
        "ghost",
        "POST",
        "/v1/workspaces/ghost/billing-portal",
        None,
    )?;
    expect_error(&reply, 404, "not_found", "unknown workspace portal")?;

    app.check_invariants()
}

#[test]
fn subscribing_to_a_free_plan_funds_the_workspace() -> Result<()> {
    let app = start()?;
    app.provision("ws-sub")?;
    set_clock(&app, "ws-sub", "2030-01-11T12:00:00Z")?;

    let change = choose_plan(&app, "ws-sub", "free")?;
    assert_eq!(change["action"], "subscribed");
    assert_eq!(change["plan_id"], "free");
    assert_eq!(change["credits_granted"], "10");
    assert_eq!(change["effective_at"], "2030-01-11T12:00:00Z");

    let body = summary(&app, "ws-sub")?;
    assert_eq!(body["plan"], json!({"id": "free", "name": "Free"}));
    assert_eq!(body["plan_credits_included"], "10");
    assert_eq!(body["plan_credits_remaining"], "10");
    assert_eq!(body["wallet_balance"], "0");
    assert_eq!(body["held"], "0");
    assert_eq!(body["cycle_start"], "2030-01-11T00:00:00Z");
    assert_eq!(body["next_renewal_at"], "2030-02-11T00:00:00Z");
    // Funded, but no card.
    assert_eq!(body["status"], "no_payment_method");

    // 300 AI tasks at 0.02 = 6 credits: 4 left, under the low-balance threshold of 5.
    let debited = debit(
        &app,
        "ws-sub",
        "ev-1",
        "agent-1",
        "ai_task",
        "300",
        "2030-01-11T12:00:00Z",
    )?;
    assert_eq!(debited["charged"], "6");
    assert_eq!(debited["from_plan"], "6");
    let body = summary(&app, "ws-sub")?;
    assert_eq!(body["plan_credits_remaining"], "4");
    assert_eq!(body["status"], "low_balance");
    let reply = app.user(
        "ws-sub",
        Role::Member,
        "GET",
        "/v1/workspaces/ws-sub/billing",
        None,
    )?;
    assert_eq!(
        expect(&reply, 200, "member summary")?,
        json!({"status": "low_balance", "message": LOW_BALANCE_MEMBER})
    );

    // An Idempotency-Key replays the first answer; the same key with another body is a 409.
    let token = token("ws-sub", Role::Owner, now_secs() + 3600);
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "k-1")];
    let path = "/v1/workspaces/ws-sub/subscription";
    let first = app.request("POST", path, Some(&json!({"plan_id": "starter"})), &headers)?;
    let first_body = expect(&first, 200, "keyed upgrade")?;
    assert_eq!(first_body["action"], "upgraded");
    let again = app.request("POST", path, Some(&json!({"plan_id": "starter"})), &headers)?;
    assert_eq!(expect(&again, 200, "replay")?, first_body);
    let other = app.request("POST", path, Some(&json!({"plan_id": "growth"})), &headers)?;
    expect_error(&other, 409, "idempotency_conflict", "same key, other body")?;
    let body = summary(&app, "ws-sub")?;
    assert_eq!(body["plan"]["id"], "starter");
    // 4 unused + 100 x 31 / 31 days left (subscribed today): 104, granted once.
    assert_eq!(body["plan_credits_remaining"], "104");

    // Choosing the current plan again changes nothing.
    let change = choose_plan(&app, "ws-sub", "starter")?;
    assert_eq!(change["action"], "unchanged");
    assert_eq!(change["credits_granted"], "0");
    assert_eq!(summary(&app, "ws-sub")?["plan_credits_remaining"], "104");

    app.check_invariants()
}

#[test]
fn upgrade_mid_cycle_prorates_the_new_plan() -> Result<()> {
    let app = start()?;
    app.provision("ws-up")?;
    // April has 30 days: a cycle anchored on the 1st is 30 days long.
    set_clock(&app, "ws-up", "2030-04-01T09:00:00Z")?;
    assert_eq!(
        choose_plan(&app, "ws-up", "starter")?["credits_granted"],
        "100"
    );
    // Use 40 of the 100 credits (2,000 AI tasks at 0.02).
    debit(
        &app,
        "ws-up",
        "ev-1",
        "agent-1",
        "ai_task",
        "2000",
        "2030-04-01T09:00:00Z",
    )?;
    assert_eq!(summary(&app, "ws-up")?["plan_credits_remaining"], "60");

    // Ten days in, twenty days left: R14 gives 60 unused + 1,000 x 20 / 30 = 666.666666.
    set_clock(&app, "ws-up", "2030-04-11T09:00:00Z")?;
    let change = choose_plan(&app, "ws-up", "growth")?;
    assert_eq!(change["action"], "upgraded");
    assert_eq!(change["plan_id"], "growth");
    assert_eq!(change["pending_plan_id"], Value::Null);
    assert_eq!(change["credits_granted"], "666.666666");
    assert_eq!(change["effective_at"], "2030-04-11T09:00:00Z");

    let body = summary(&app, "ws-up")?;
    assert_eq!(body["plan"], json!({"id": "growth", "name": "Growth"}));
    assert_eq!(body["plan_credits_included"], "1000");
    assert_eq!(body["plan_credits_remaining"], "726.666666");
    // The cycle does not move on an upgrade.
    assert_eq!(body["cycle_start"], "2030-04-01T00:00:00Z");
    assert_eq!(body["next_renewal_at"], "2030-05-01T00:00:00Z");
    assert_eq!(body["status"], "no_payment_method");

    // The history shows the prorated grant on top.
    let reply = owner(
        &app,
        "ws-up",
        "GET",
        "/v1/workspaces/ws-up/transactions?limit=1",
        None,
    )?;
    let page = expect(&reply, 200, "transactions")?;
    assert_eq!(page["data"][0]["type"], "plan_grant");
    assert_eq!(page["data"][0]["amount"], "666.666666");
    assert_eq!(page["data"][0]["plan_credits_after"], "726.666666");

    app.check_invariants()
}

#[test]
fn downgrade_is_pending_cancellable_and_applied_at_renewal() -> Result<()> {
    let app = start()?;
    app.provision("ws-down")?;
    set_clock(&app, "ws-down", "2030-04-01T09:00:00Z")?;
    choose_plan(&app, "ws-down", "growth")?;

    let change = choose_plan(&app, "ws-down", "starter")?;
    assert_eq!(change["action"], "downgrade_scheduled");
    assert_eq!(change["plan_id"], "growth");
    assert_eq!(change["pending_plan_id"], "starter");
    assert_eq!(change["effective_at"], "2030-05-01T00:00:00Z");
    assert_eq!(change["credits_granted"], "0");
    let body = summary(&app, "ws-down")?;
    assert_eq!(body["plan"]["id"], "growth");
    assert_eq!(body["plan_credits_remaining"], "1000");
    assert_eq!(
        body["pending_plan_change"],
        json!({"plan_id": "starter", "effective_at": "2030-05-01T00:00:00Z"})
    );

    // Cancel it: 204, then nothing pending (a second DELETE is a 404).
    let path = "/v1/workspaces/ws-down/subscription/pending-change";
    let reply = owner(&app, "ws-down", "DELETE", path, None)?;
    expect(&reply, 204, "cancel pending change")?;
    assert_eq!(reply.body, "");
    assert_eq!(
        summary(&app, "ws-down")?["pending_plan_change"],
        Value::Null
    );
    let reply = owner(&app, "ws-down", "DELETE", path, None)?;
    expect_error(&reply, 404, "not_found", "nothing pending")?;

    // Schedule it again; choosing the current plan cancels it too; schedule once more.
    choose_plan(&app, "ws-down", "starter")?;
    assert_eq!(
        choose_plan(&app, "ws-down", "growth")?["action"],
        "pending_change_cancelled"
    );
    assert_eq!(
        summary(&app, "ws-down")?["pending_plan_change"],
        Value::Null
    );
    choose_plan(&app, "ws-down", "free")?;
    assert_eq!(
        summary(&app, "ws-down")?["pending_plan_change"]["plan_id"],
        "free"
    );

    // Past the cycle end, the renewal job applies it.
    set_clock(&app, "ws-down", "2030-05-01T01:00:00Z")?;
    let reply = app.service("POST", "/internal/jobs/renew-cycles", None)?;
    if reply.status == 501 {
        eprintln!("renew-cycles is not wired yet: skipping the renewal step");
        return app.check_invariants();
    }
    expect(&reply, 200, "renew cycles")?;
    let body = summary(&app, "ws-down")?;
    assert_eq!(body["plan"], json!({"id": "free", "name": "Free"}));
    assert_eq!(body["plan_credits_included"], "10");
    // The growth plan's 1,000 unused credits expired; the free plan granted 10.
    assert_eq!(body["plan_credits_remaining"], "10");
    assert_eq!(body["pending_plan_change"], Value::Null);
    assert_eq!(body["cycle_start"], "2030-05-01T00:00:00Z");
    assert_eq!(body["next_renewal_at"], "2030-06-01T00:00:00Z");
    let reply = owner(
        &app,
        "ws-down",
        "GET",
        "/v1/workspaces/ws-down/transactions?limit=2",
        None,
    )?;
    let page = expect(&reply, 200, "transactions")?;
    assert_eq!(page["data"][0]["type"], "plan_grant");
    assert_eq!(page["data"][0]["amount"], "10");
    assert_eq!(page["data"][1]["type"], "plan_expiry");
    assert_eq!(page["data"][1]["amount"], "-1000");

    app.check_invariants()
}

#[test]
fn agent_limits_round_trip_and_validation() -> Result<()> {
    let app = start()?;
    app.provision("ws-lim")?;
    let path = "/v1/workspaces/ws-lim/agents/agent-7/limits";

    // Defaults before anything was set.
    let body = expect(
        &owner(&app, "ws-lim", "GET", path, None)?,
        200,
        "default limits",
    )?;
    assert_eq!(
        body,
        json!({"overage_policy": "use_balance", "monthly_spend_limit": null,
               "daily_call_limit": null, "max_concurrent_calls": null})
    );

    let limits = json!({"overage_policy": "stop", "monthly_spend_limit": "25.5",
                        "daily_call_limit": 100, "max_concurrent_calls": 3});
    let reply = owner(&app, "ws-lim", "PUT", path, Some(&limits))?;
    assert_eq!(expect(&reply, 200, "put limits")?, limits);
    assert_eq!(
        expect(
            &owner(&app, "ws-lim", "GET", path, None)?,
            200,
            "get limits"
        )?,
        limits
    );

    // Optional limits can be cleared; an admin may manage them too.
    let cleared = json!({"overage_policy": "use_balance"});
    let reply = app.user("ws-lim", Role::Admin, "PUT", path, Some(&cleared))?;
    let body = expect(&reply, 200, "clear limits")?;
    assert_eq!(body["overage_policy"], "use_balance");
    assert_eq!(body["monthly_spend_limit"], Value::Null);
    assert_eq!(body["daily_call_limit"], Value::Null);

    // Validation: 422 naming the field; shape errors: 400. Nothing changes.
    let cases = [
        (
            json!({"overage_policy": "sometimes"}),
            "validation_error",
            "overage_policy",
        ),
        (
            json!({"overage_policy": "stop", "monthly_spend_limit": "-1"}),
            "invalid_amount",
            "monthly_spend_limit",
        ),
        (
            json!({"overage_policy": "stop", "monthly_spend_limit": "0.0000001"}),
            "invalid_amount",
            "monthly_spend_limit",
        ),
        (
            json!({"overage_policy": "stop", "daily_call_limit": 2_000_000}),
            "validation_error",
            "daily_call_limit",
        ),
        (
            json!({"overage_policy": "stop", "max_concurrent_calls": 1_000_001}),
            "validation_error",
            "max_concurrent_calls",
        ),
    ];
    for (body, code, field) in &cases {
        let reply = owner(&app, "ws-lim", "PUT", path, Some(body))?;
        let error = expect_error(&reply, 422, code, &format!("invalid {body}"))?;
        assert_eq!(error["field"], *field, "{body}");
    }
    for body in [
        json!({"overage_policy": "stop", "colour": "red"}),
        json!({"daily_call_limit": 3}),
        json!({"overage_policy": "stop", "daily_call_limit": -1}),
        json!({"overage_policy": "stop", "monthly_spend_limit": "lots"}),
        json!(["stop"]),
    ] {
        let reply = owner(&app, "ws-lim", "PUT", path, Some(&body))?;
        expect_error(
            &reply,
            400,
            "malformed_request",
            &format!("malformed {body}"),
        )?;
    }
    let reply = owner(
        &app,
        "ws-lim",
        "PUT",
        "/v1/workspaces/ws-lim/agents/bad%20agent/limits",
        Some(&cleared),
    )?;
    expect_error(&reply, 422, "validation_error", "bad agent id")?;
    let reply = owner(&app, "ws-lim", "GET", path, None)?;
    assert_eq!(
        expect(&reply, 200, "unchanged")?["overage_policy"],
        "use_balance"
    );

    // Members may not read or change limits.
    let reply = app.user("ws-lim", Role::Member, "GET", path, None)?;
    expect_error(&reply, 403, "forbidden", "member get limits")?;
    let reply = app.user("ws-lim", Role::Member, "PUT", path, Some(&limits))?;
    expect_error(&reply, 403, "forbidden", "member put limits")?;

    app.check_invariants()
}

#[test]
fn auto_recharge_needs_a_payment_method() -> Result<()> {
    let app = start()?;
    app.provision("ws-ar")?;
    choose_plan(&app, "ws-ar", "free")?;
    let path = "/v1/workspaces/ws-ar/auto-recharge";

    let enable = json!({"enabled": true, "threshold": "5", "amount": "20"});
    let reply = owner(&app, "ws-ar", "PUT", path, Some(&enable))?;
    let error = expect_error(
        &reply,
        422,
        "payment_method_required",
        "enable without card",
    )?;
    assert_eq!(error["message"], PAYMENT_METHOD_REQUIRED);
    assert_eq!(summary(&app, "ws-ar")?["auto_recharge"]["enabled"], false);

    // Saving the settings switched off is fine without a card.
    // No monthly cap given is none, and the answer says so (null).
    let off = json!({"enabled": false, "threshold": "5", "amount": "20"});
    let saved = json!({"enabled": false, "threshold": "5", "amount": "20", "max_per_month": null});
    let reply = owner(&app, "ws-ar", "PUT", path, Some(&off))?;
    assert_eq!(expect(&reply, 200, "save disabled")?, saved);
    assert_eq!(summary(&app, "ws-ar")?["auto_recharge"], saved);

    // The amount obeys the top-up bounds; bad shapes are 400.
    let reply = owner(
        &app,
        "ws-ar",
        "PUT",
        path,
        Some(&json!({"enabled": false, "threshold": "5", "amount": "1"})),
    )?;
    expect_error(&reply, 422, "amount_below_minimum", "amount under minimum")?;
    let reply = owner(
        &app,
        "ws-ar",
        "PUT",
        path,
        Some(&json!({"enabled": false, "threshold": "5", "amount": "6000"})),
    )?;
    expect_error(&reply, 422, "amount_above_maximum", "amount over maximum")?;
    let reply = owner(
        &app,
        "ws-ar",
        "PUT",
        path,
        Some(&json!({"enabled": false, "threshold": "-5", "amount": "20"})),
    )?;
    expect_error(&reply, 422, "invalid_amount", "negative threshold")?;
    let reply = owner(&app, "ws-ar", "PUT", path, Some(&json!({"enabled": "yes"})))?;
    expect_error(&reply, 400, "malformed_request", "malformed settings")?;

    app.check_invariants()
}

/// The ids of a page's rows.
fn ids(page: &Value) -> Vec<i64> {
    page["data"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["id"].as_str().and_then(|id| id.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn transactions_page_filter_and_export() -> Result<()> {
    let app = start()?;
    app.provision("ws-tx")?;
    set_clock(&app, "ws-tx", "2030-03-10T08:00:00Z")?;
    choose_plan(&app, "ws-tx", "free")?;
    let at = "2030-03-10T08:00:00Z";
    debit(&app, "ws-tx", "e1", "agent-a", "message", "3", at)?;
    debit(&app, "ws-tx", "e2", "agent-b", "ai_task", "5", at)?;
    debit(&app, "ws-tx", "e3", "agent-b", "message", "1", at)?;
    debit(&app, "ws-tx", "e4", "agent-a", "ai_task", "2", at)?;
    let last = debit(&app, "ws-tx", "e5", "agent-a", "sms", "2", at)?;
    // 10 - (0.03 + 0.1 + 0.01 + 0.04 + 0.015)
    assert_eq!(last["plan_credits_remaining"], "9.805");

    let base = "/v1/workspaces/ws-tx/transactions";
    let all = expect(&owner(&app, "ws-tx", "GET", base, None)?, 200, "all")?;
    assert_eq!(all["next_cursor"], Value::Null);
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 6);
    assert!(
        all_ids.windows(2).all(|w| w[0] > w[1]),
        "newest first: {all_ids:?}"
    );
    let rows = all["data"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "sms",
            "ai_task",
            "message",
            "ai_task",
            "message",
            "plan_grant"
        ]
    );
    let sms = &rows[0];
    assert_eq!(sms["agent_id"], "agent-a");
    assert_eq!(sms["reference"], "e5");
    assert_eq!(sms["quantity"], "2");
    assert_eq!(sms["unit"], "segment");
    assert_eq!(sms["rate"], "0.0075");
    assert_eq!(sms["amount"], "-0.015");
    assert_eq!(sms["plan_amount"], "-0.015");
    assert_eq!(sms["wallet_amount"], "0");
    assert_eq!(sms["plan_credits_after"], "9.805");
    assert_eq!(sms["wallet_balance_after"], "0");
    assert_eq!(sms["occurred_at"], at);
    assert_eq!(rows[5]["amount"], "10");

    // Pages of 2, following the cursor.
    let mut seen = Vec::new();
    let mut path = format!("{base}?limit=2");
    let mut pages = 0;
    loop {
        let page = expect(&owner(&app, "ws-tx", "GET", &path, None)?, 200, "page")?;
        pages += 1;
        let page_ids = ids(&page);
        assert_eq!(page_ids.len(), 2);
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{base}?limit=2&cursor={cursor}"),
            None => break,
        }
        ensure!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all_ids);

    // Filters, alone and together; empty values mean "no filter".
    let page = expect(
        &owner(&app, "ws-tx", "GET", &format!("{base}?type=message"), None)?,
        200,
        "type",
    )?;
    let refs: Vec<&str> = page["data"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["reference"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(refs, ["e3", "e1"]);
    let page = expect(
        &owner(&app, "ws-tx", "GET", &format!("{base}?agent=agent-a"), None)?,
        200,
        "agent",
    )?;
    let refs: Vec<&str> = page["data"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["reference"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(refs, ["e5", "e4", "e1"]);
    let page = expect(
        &owner(
            &app,
            "ws-tx",
            "GET",
            &format!("{base}?type=ai_task&agent=agent-b&limit=1"),
            None,
        )?,
        200,
        "both",
    )?;
    assert_eq!(page["data"][0]["reference"], "e2");
    assert_eq!(page["data"][0]["amount"], "-0.1");
    assert_eq!(page["next_cursor"], Value::Null);
    let page = expect(
        &owner(
            &app,
            "ws-tx",
            "GET",
            &format!("{base}?type=&agent=&cursor=&limit="),
            None,
        )?,
        200,
        "empty",
    )?;
    assert_eq!(ids(&page), all_ids);

    // CSV: a header and one line per row, newest first, with the filters.
    let reply = owner(&app, "ws-tx", "GET", &format!("{base}?format=csv"), None)?;
    expect(&reply, 200, "csv")?;
    assert_eq!(
        reply.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"transactions.csv\"")
    );
    let lines: Vec<&str> = reply.body.lines().collect();
    assert_eq!(lines.len(), 7, "{}", reply.body);
    assert_eq!(
        lines[0],
        "id,type,agent_id,reference,quantity,unit,rate,amount,plan_amount,wallet_amount,plan_credits_after,wallet_balance_after,occurred_at,description,grant_amount,grants"
    );
    assert_eq!(
        lines[1],
        format!(
            "{},sms,agent-a,e5,2,segment,0.0075,-0.015,-0.015,0,9.805,0,{at},,0,",
            all_ids[0]
        )
    );
    let reply = owner(
        &app,
        "ws-tx",
        "GET",
        &format!("{base}?format=csv&agent=agent-b"),
        None,
    )?;
    assert_eq!(
        expect(&reply, 200, "csv filtered").map(|_| reply.body.lines().count())?,
        3
    );

    // Bad query values: 400.
    for query in [
        "cursor=abc",
        "cursor=-4",
        "limit=0",
        "limit=101",
        "limit=ten",
        "type=bogus",
        "agent=bad%20agent",
        "format=xml",
        "colour=red",
        "type=call&type=sms",
    ] {
        let reply = owner(&app, "ws-tx", "GET", &format!("{base}?{query}"), None)?;
        expect_error(&reply, 400, "malformed_request", query)?;
    }

    app.check_invariants()
}

#[test]
fn usage_summary_by_kind_agent_and_day() -> Result<()> {
    let app = start()?;
    app.provision("ws-use")?;
    set_clock(&app, "ws-use", "2030-06-10T12:00:00Z")?;
    choose_plan(&app, "ws-use", "growth")?;
    // Four ordinary days (1 credit each: 50 AI tasks) and a spike (10 credits), plus May usage.
    debit(
        &app,
        "ws-use",
        "u1",
        "agent-a",
        "ai_task",
        "50",
        "2030-06-01T10:00:00Z",
    )?;
    debit(
        &app,
        "ws-use",
        "u2",
        "agent-b",
        "ai_task",
        "50",
        "2030-06-02T10:00:00Z",
    )?;
    debit(
        &app,
        "ws-use",
        "u3",
        "agent-a",
        "message",
        "100",
        "2030-06-03T23:59:59Z",
    )?;
    debit(
        &app,
        "ws-use",
        "u4",
        "agent-a",
        "ai_task",
        "50",
        "2030-06-04T00:00:00Z",
    )?;
    debit(
        &app,
        "ws-use",
        "u5",
        "agent-b",
        "ai_task",
        "500",
        "2030-06-05T10:00:00Z",
    )?;
    debit(
        &app,
        "ws-use",
        "u6",
        "agent-b",
        "message",
        "7",
        "2030-05-31T23:59:59Z",
    )?;

    let expected = json!({
        "month": "2030-06",
        "total": "14",
        "by_kind": [
            {"key": "ai_task", "count": 4, "amount": "13"},
            {"key": "message", "count": 1, "amount": "1"}
        ],
        "by_agent": [
            {"key": "agent-a", "count": 3, "amount": "3"},
            {"key": "agent-b", "count": 2, "amount": "11"}
        ],
        "by_day": [
            {"date": "2030-06-01", "count": 1, "amount": "1", "spike": false},
            {"date": "2030-06-02", "count": 1, "amount": "1", "spike": false},
            {"date": "2030-06-03", "count": 1, "amount": "1", "spike": false},
            {"date": "2030-06-04", "count": 1, "amount": "1", "spike": false},
            {"date": "2030-06-05", "count": 1, "amount": "10", "spike": true}
        ]
    });
    let base = "/v1/workspaces/ws-use/usage/summary";
    let reply = owner(
        &app,
        "ws-use",
        "GET",
        &format!("{base}?month=2030-06"),
        None,
    )?;
    assert_eq!(expect(&reply, 200, "june")?, expected);
    // The default month is the workspace's current month (its test clock here).
    assert_eq!(
        expect(&owner(&app, "ws-use", "GET", base, None)?, 200, "default")?,
        expected
    );

    let may = expect(
        &owner(
            &app,
            "ws-use",
            "GET",
            &format!("{base}?month=2030-05"),
            None,
        )?,
        200,
        "may",
    )?;
    assert_eq!(may["total"], "0.07");
    assert_eq!(
        may["by_kind"],
        json!([{"key": "message", "count": 1, "amount": "0.07"}])
    );
    let july = expect(
        &owner(
            &app,
            "ws-use",
            "GET",
            &format!("{base}?month=2030-07"),
            None,
        )?,
        200,
        "july",
    )?;
    assert_eq!(july["total"], "0");
    assert_eq!(july["by_day"], json!([]));

    for query in [
        "month=2030-13",
        "month=June",
        "month=2030-6",
        "month=2030-06-01",
        "year=2030",
    ] {
        let reply = owner(&app, "ws-use", "GET", &format!("{base}?{query}"), None)?;
        expect_error(&reply, 400, "malformed_request", query)?;
    }

    app.check_invariants()
}

/// The summary's runway (docs/billing-rules.md, "Runway") after some usage under a test clock.
#[test]
fn the_runway_forecasts_from_the_last_7_and_30_days() -> Result<()> {
    let app = start()?;
    app.provision("ws-run")?;
    set_clock(&app, "ws-run", "2030-06-10T12:00:00Z")?;
    choose_plan(&app, "ws-run", "free")?;
    // Nothing spent yet (the workspace was created before the clock's 30 days): no usage.
    let body = summary(&app, "ws-run")?;
    assert_eq!(
        body["runway"],
        json!({
            "status": "no_usage",
            "history_days": "29.5",
            "average_daily_spend_7d": "0",
            "average_daily_spend_30d": "0",
            "days_left": null,
            "runs_out_at": null,
            "suggested_auto_recharge": null
        })
    );
    // 5.6 credits 20 days ago (the 30-day window only), 3.25 in the 7-day window (June 4 to
    // 10, 6.5 days at noon): 0.5 a day over 7 days, 8.85 / 29.5 = 0.3 over 30.
    for (id, quantity, at) in [
        ("rw-old", "560", "2030-05-21T12:00:00Z"),
        ("rw-1", "200", "2030-06-04T00:00:00Z"),
        ("rw-2", "125", "2030-06-10T11:00:00Z"),
    ] {
        debit(&app, "ws-run", id, "agent-1", "message", quantity, at)?;
    }
    let body = summary(&app, "ws-run")?;
    assert_eq!(body["plan_credits_remaining"], "1.15");
    // 1.15 credits at 0.5 a day: 2.3 days, before the cycle ends on July 10. The suggestion
    // takes the higher average: 0.5 x 14 = 7, and an amount of at least the top-up minimum.
    assert_eq!(
        body["runway"],
        json!({
            "status": "forecast",
            "history_days": "29.5",
            "average_daily_spend_7d": "0.5",
            "average_daily_spend_30d": "0.3",
            "days_left": "2.3",
            "runs_out_at": "2030-06-12T19:12:00Z",
            "suggested_auto_recharge": {"threshold": "7", "amount": "10"}
        })
    );
    // A member sees the banner only.
    let reply = app.user(
        "ws-run",
        Role::Member,
        "GET",
        "/v1/workspaces/ws-run/billing",
        None,
    )?;
    assert!(expect(&reply, 200, "member summary")?["runway"].is_null());

    app.check_invariants()
}

#[test]
fn access_is_isolated_authenticated_and_role_checked() -> Result<()> {
    let app = start()?;
    app.provision("ws-a")?;
    app.provision("ws-b")?;
    choose_plan(&app, "ws-b", "starter")?;

    // A token of workspace A on B's routes: 403, whatever the role.
    for (method, path, body) in e2e::api::frontend_routes("ws-b", "agent-1") {
        for role in [Role::Owner, Role::Admin, Role::Member] {
            let reply = app.user("ws-a", role, method, &path, body.as_ref())?;
            expect_error(
                &reply,
                403,
                "forbidden",
                &format!("{role:?} of A: {method} {path}"),
            )?;
        }
    }
    // B is untouched.
    let body = summary(&app, "ws-b")?;
    assert_eq!(body["plan"]["id"], "starter");
    assert_eq!(body["plan_credits_remaining"], "100");

    // Members: the banner only, 403 on everything else (plans and rates included).
    for (method, path, body) in e2e::api::frontend_routes("ws-a", "agent-1") {
        let reply = app.user("ws-a", Role::Member, method, &path, body.as_ref())?;
        if path.ends_with("/billing") {
            expect(&reply, 200, "member banner")?;
        } else {
            expect_error(
                &reply,
                403,
                "forbidden",
                &format!("member: {method} {path}"),
            )?;
        }
    }
    for path in ["/v1/plans", "/v1/rates"] {
        let reply = app.user("ws-a", Role::Member, "GET", path, None)?;
        expect_error(&reply, 403, "forbidden", path)?;
    }

    // Bad credentials: 401 everywhere, before anything else.
    let claims =
        |exp: i64| json!({"sub": "user-1", "workspace_id": "ws-b", "role": "owner", "exp": exp});
    let expired = token("ws-b", Role::Owner, now_secs() - 60);
    let wrong_key = sign(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(now_secs() + 3600),
        b"not-the-secret-of-this-app",
    );
    let alg_none = {
        let valid = sign(
            &json!({"alg": "none", "typ": "JWT"}),
            &claims(now_secs() + 3600),
            b"",
        );
        let mut parts: Vec<&str> = valid.split('.').collect();
        parts.truncate(2);
        format!("{}.", parts.join("."))
    };
    let hs256_as_none = sign(
        &json!({"alg": "none", "typ": "JWT"}),
        &claims(now_secs() + 3600),
        JWT_SECRET.as_bytes(),
    );
    let credentials = [
        format!("Bearer {expired}"),
        format!("Bearer {wrong_key}"),
        format!("Bearer {alg_none}"),
        format!("Bearer {hs256_as_none}"),
        "Bearer not-a-token".to_owned(),
        "Basic dXNlcjpwYXNz".to_owned(),
    ];
    let mut routes = e2e::api::frontend_routes("ws-b", "agent-1");
    routes.push(("GET", "/v1/plans".to_owned(), None));
    routes.push(("GET", "/v1/rates".to_owned(), None));
    for (method, path, body) in &routes {
        for credential in &credentials {
            let reply = app.request(
                method,
                path,
                body.as_ref(),
                &[("authorization", credential)],
            )?;
            expect_error(
                &reply,
                401,
                "unauthorized",
                &format!("{credential}: {method} {path}"),
            )?;
        }
        let reply = app.request(method, path, body.as_ref(), &[])?;
        expect_error(
            &reply,
            401,
            "unauthorized",
            &format!("no credentials: {method} {path}"),
        )?;
    }
    // The service key is not a user token.
    let reply = app.service("GET", "/v1/workspaces/ws-b/billing", None)?;
    expect_error(&reply, 401, "unauthorized", "service key on a user route")?;
    assert_eq!(summary(&app, "ws-b")?["plan_credits_remaining"], "100");

    app.check_invariants()
}

#[test]
fn stripe_routes_answer_503_without_a_stripe_key() -> Result<()> {
    let app = start()?;
    app.provision("ws-pay")?;
    choose_plan(&app, "ws-pay", "free")?;
    for (method, path, body) in [
        (
            "POST",
            "/v1/workspaces/ws-pay/payment-method/setup",
            Some(json!({})),
        ),
        ("POST", "/v1/workspaces/ws-pay/payment-method/refresh", None),
        (
            "POST",
            "/v1/workspaces/ws-pay/topups",
            Some(json!({"amount": "20"})),
        ),
        ("GET", "/v1/workspaces/ws-pay/invoices", None),
        ("POST", "/v1/workspaces/ws-pay/billing-portal", None),
    ] {
        let reply = owner(&app, "ws-pay", method, path, body.as_ref())?;
        let error = expect_error(&reply, 503, "payment_processing_error", path)?;
        assert_eq!(error["message"], "Payments are not configured yet.");
    }
    let reply = owner(
        &app,
        "ws-pay",
        "POST",
        "/v1/workspaces/ws-pay/topups",
        Some(&json!({"amount": 20})),
    )?;
    expect_error(&reply, 400, "malformed_request", "numeric amount")?;
    let reply = owner(
        &app,
        "ws-pay",
        "GET",
        "/v1/workspaces/ws-pay/topups/tp_missing",
        None,
    )?;
    expect_error(&reply, 404, "not_found", "unknown top-up")?;
    app.check_invariants()
}

/// Out-of-range amounts are a 422, never a 500. Ignored until the ledger's
/// `money::decimal_to_micros` uses `checked_mul` (today `value * 10^6` panics on overflow and
/// the component traps).
#[test]
fn huge_amounts_are_refused_not_crashed() -> Result<()> {
    let app = start()?;
    app.provision("ws-huge")?;
    let huge = "79228162514264337593543950335";
    let reply = owner(
        &app,
        "ws-huge",
        "PUT",
        "/v1/workspaces/ws-huge/agents/a/limits",
        Some(&json!({"overage_policy": "stop", "monthly_spend_limit": huge})),
    )?;
    expect_error(&reply, 422, "invalid_amount", "huge spend limit")?;
    let reply = owner(
        &app,
        "ws-huge",
        "PUT",
        "/v1/workspaces/ws-huge/auto-recharge",
        Some(&json!({"enabled": false, "threshold": huge, "amount": "20"})),
    )?;
    expect_error(&reply, 422, "invalid_amount", "huge threshold")?;
    app.check_invariants()
}

/// A route of the billing page refuses a member and a token of another workspace (403), and
/// answers its owner with `status`.
fn assert_owners_only(app: &App, ws: &str, other: &str, path: &str, status: u16) -> Result<()> {
    expect(
        &owner(app, ws, "GET", path, None)?,
        status,
        &format!("owner: {path}"),
    )?;
    expect(
        &app.user(ws, Role::Admin, "GET", path, None)?,
        status,
        &format!("admin: {path}"),
    )?;
    let reply = app.user(ws, Role::Member, "GET", path, None)?;
    expect_error(&reply, 403, "forbidden", &format!("member: {path}"))?;
    for role in [Role::Owner, Role::Admin, Role::Member] {
        let reply = app.user(other, role, "GET", path, None)?;
        expect_error(
            &reply,
            403,
            "forbidden",
            &format!("{role:?} of {other}: {path}"),
        )?;
    }
    Ok(())
}

#[test]
fn the_summary_shows_the_catalogs_credit_price_and_top_up_bounds() -> Result<()> {
    let app = start()?;
    app.provision("ws-price")?;
    let mut catalog = test_catalog();
    catalog["settings"]["credit_price"] = json!("2.50");
    catalog["settings"]["topup_min"] = json!("15");
    catalog["settings"]["topup_max"] = json!("750.5");
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog))?,
        200,
        "PUT /v1/catalog",
    )?;
    let body = summary(&app, "ws-price")?;
    assert_eq!(
        (
            &body["credit_price"],
            &body["topup_min"],
            &body["topup_max"]
        ),
        (&json!("2.5"), &json!("15"), &json!("750.5")),
        "{body}"
    );
    // The same credit price as the plans list; the bounds are the ones a top-up is held to.
    let plans = expect(
        &owner(&app, "ws-price", "GET", "/v1/plans", None)?,
        200,
        "plans",
    )?;
    assert_eq!(
        e2e::api::micros_of(&plans["credit_price"])?,
        e2e::api::micros_of(&body["credit_price"])?
    );
    // Members still see the banner only.
    let reply = app.user(
        "ws-price",
        Role::Member,
        "GET",
        "/v1/workspaces/ws-price/billing",
        None,
    )?;
    assert_eq!(
        expect(&reply, 200, "member summary")?,
        json!({"status": "billing_not_configured", "message": NOT_CONFIGURED_MEMBER})
    );
    app.provision("ws-other")?;
    let reply = app.user(
        "ws-other",
        Role::Owner,
        "GET",
        "/v1/workspaces/ws-price/billing",
        None,
    )?;
    expect_error(&reply, 403, "forbidden", "another workspace's summary")?;
    app.check_invariants()
}

/// `GET /v1/workspaces/{ws}/agents{query}` as the owner.
fn agents(app: &App, ws: &str, query: &str) -> Result<Value> {
    let reply = owner(
        app,
        ws,
        "GET",
        &format!("/v1/workspaces/{ws}/agents{query}"),
        None,
    )?;
    expect(&reply, 200, &format!("agents{query}"))
}

/// (agent, cycle_spend, calls_today, calls_in_progress) of each listed agent.
fn agent_counters(page: &Value) -> Vec<(String, String, i64, i64)> {
    page["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|agent| {
            (
                agent["agent_id"].as_str().unwrap_or_default().to_owned(),
                agent["cycle_spend"].as_str().unwrap_or_default().to_owned(),
                agent["calls_today"].as_i64().unwrap_or(-1),
                agent["calls_in_progress"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
fn agents_are_listed_with_their_limits_and_counters() -> Result<()> {
    let app = start()?;
    app.provision("ws-ag")?;
    app.provision("ws-else")?;
    // Nothing used, nothing set: no agents.
    assert_eq!(
        agents(&app, "ws-ag", "")?,
        json!({"agents": [], "next_cursor": null})
    );
    assert_owners_only(&app, "ws-ag", "ws-else", "/v1/workspaces/ws-ag/agents", 200)?;

    set_clock(&app, "ws-ag", "2030-04-01T09:00:00Z")?;
    choose_plan(&app, "ws-ag", "starter")?;
    // Limits set on agent-b, never used.
    let limits = json!({"overage_policy": "stop", "monthly_spend_limit": "5.5",
                        "daily_call_limit": 3, "max_concurrent_calls": 2});
    let reply = owner(
        &app,
        "ws-ag",
        "PUT",
        "/v1/workspaces/ws-ag/agents/agent-b/limits",
        Some(&limits),
    )?;
    expect(&reply, 200, "put limits")?;
    // agent-c sends 100 messages (1 credit).
    debit(
        &app,
        "ws-ag",
        "ev-1",
        "agent-c",
        "message",
        "100",
        "2030-04-01T09:00:00Z",
    )?;
    // agent-a: two outbound calls at 0.05 a minute; one ends after 30 s, one goes on.
    for call_id in ["call-1", "call-2"] {
        let request = json!({"workspace_id": "ws-ag", "agent_id": "agent-a", "call_id": call_id,
                             "direction": "outbound", "to": "+442071234567", "from": "+14155550999"});
        expect(
            &app.service("POST", "/v1/calls", Some(&request))?,
            201,
            call_id,
        )?;
    }
    let reply = app.service(
        "POST",
        "/v1/calls/call-2/end",
        Some(&json!({"duration_seconds": 30})),
    )?;
    expect(&reply, 200, "end call-2")?;

    let page = agents(&app, "ws-ag", "")?;
    assert_eq!(
        page,
        json!({"agents": [
            {"agent_id": "agent-a", "overage_policy": "use_balance", "monthly_spend_limit": null,
             "daily_call_limit": null, "max_concurrent_calls": null, "cycle_spend": "0.05",
             "calls_today": 2, "calls_in_progress": 1},
            {"agent_id": "agent-b", "overage_policy": "stop", "monthly_spend_limit": "5.5",
             "daily_call_limit": 3, "max_concurrent_calls": 2, "cycle_spend": "0",
             "calls_today": 0, "calls_in_progress": 0},
            {"agent_id": "agent-c", "overage_policy": "use_balance", "monthly_spend_limit": null,
             "daily_call_limit": null, "max_concurrent_calls": null, "cycle_spend": "1",
             "calls_today": 0, "calls_in_progress": 0}
        ], "next_cursor": null})
    );
    // The limits fields are exactly what GET .../agents/{agent}/limits answers.
    for agent in page["agents"].as_array().into_iter().flatten() {
        let id = agent["agent_id"].as_str().unwrap_or_default();
        let one = expect(
            &owner(
                &app,
                "ws-ag",
                "GET",
                &format!("/v1/workspaces/ws-ag/agents/{id}/limits"),
                None,
            )?,
            200,
            "limits",
        )?;
        for (field, value) in one.as_object().into_iter().flatten() {
            assert_eq!(&agent[field], value, "{id} {field}");
        }
    }

    // Pages by agent id; the cursor is the last agent of a page.
    let first = agents(&app, "ws-ag", "?limit=2")?;
    assert_eq!(
        agent_counters(&first)
            .iter()
            .map(|a| a.0.as_str())
            .collect::<Vec<_>>(),
        ["agent-a", "agent-b"]
    );
    assert_eq!(first["next_cursor"], "agent-b");
    let second = agents(&app, "ws-ag", "?limit=2&cursor=agent-b")?;
    assert_eq!(second["agents"], json!([page["agents"][2]]));
    assert_eq!(second["next_cursor"], Value::Null);
    // Empty values are absent; the largest page is 500.
    assert_eq!(agents(&app, "ws-ag", "?limit=&cursor=")?, page);
    assert_eq!(agents(&app, "ws-ag", "?limit=500")?, page);
    // A bad limit or cursor is a 400, as for the history.
    for query in [
        "?limit=0",
        "?limit=501",
        "?limit=-1",
        "?limit=ten",
        "?limit=1.5",
    ] {
        let reply = owner(
            &app,
            "ws-ag",
            "GET",
            &format!("/v1/workspaces/ws-ag/agents{query}"),
            None,
        )?;
        let error = expect_error(&reply, 400, "malformed_request", query)?;
        assert_eq!(error["field"], "limit", "{query}");
        let reply = owner(
            &app,
            "ws-ag",
            "GET",
            &format!("/v1/workspaces/ws-ag/transactions{query}"),
            None,
        )?;
        expect_error(&reply, 400, "malformed_request", query)?;
    }
    for query in ["?cursor=..%2Fx", "?colour=red"] {
        let reply = owner(
            &app,
            "ws-ag",
            "GET",
            &format!("/v1/workspaces/ws-ag/agents{query}"),
            None,
        )?;
        expect_error(&reply, 400, "malformed_request", query)?;
    }
    assert_owners_only(&app, "ws-ag", "ws-else", "/v1/workspaces/ws-ag/agents", 200)?;

    // The next day: no calls today, the cycle's spend stays.
    set_clock(&app, "ws-ag", "2030-04-02T00:00:00Z")?;
    assert_eq!(
        agent_counters(&agents(&app, "ws-ag", "")?),
        [
            ("agent-a".into(), "0.05".into(), 0, 1),
            ("agent-b".into(), "0".into(), 0, 0),
            ("agent-c".into(), "1".into(), 0, 0),
        ]
    );
    // The jobs post call-1 at its hold, overdue since April 1 (120 s): no call in progress.
    let renew = |app: &App| -> Result<Value> {
        expect(
            &app.service("POST", "/internal/jobs/renew-cycles", None)?,
            200,
            "renew cycles",
        )
    };
    renew(&app)?;
    assert_eq!(
        agent_counters(&agents(&app, "ws-ag", "")?)[0],
        ("agent-a".into(), "0.1".into(), 0, 0)
    );
    // A new cycle: last cycle's spend is not this cycle's.
    set_clock(&app, "ws-ag", "2030-05-01T09:00:00Z")?;
    renew(&app)?;
    assert_eq!(
        agent_counters(&agents(&app, "ws-ag", "")?),
        [
            ("agent-a".into(), "0".into(), 0, 0),
            ("agent-b".into(), "0".into(), 0, 0),
            ("agent-c".into(), "0".into(), 0, 0),
        ]
    );
    app.check_invariants()
}

/// `GET /v1/workspaces/{ws}/subscription/preview?plan_id={plan}` as the owner.
fn preview(app: &App, ws: &str, plan: &str) -> Result<Reply> {
    owner(
        app,
        ws,
        "GET",
        &format!("/v1/workspaces/{ws}/subscription/preview?plan_id={plan}"),
        None,
    )
}

/// The preview of `plan`, then the change itself: both 200, agreeing on the plan, when, and
/// (to the micro-credit) what is granted. Returns the preview.
fn preview_then_choose(app: &App, ws: &str, plan: &str) -> Result<Value> {
    let before = summary(app, ws)?;
    let shown = expect(&preview(app, ws, plan)?, 200, &format!("preview {plan}"))?;
    assert_eq!(
        summary(app, ws)?,
        before,
        "the preview of {plan} changed something"
    );
    let change = choose_plan(app, ws, plan)?;
    let expected_action = match shown["change"].as_str().unwrap_or_default() {
        "subscribe" => "subscribed",
        "upgrade" => "upgraded",
        "downgrade" => "downgrade_scheduled",
        _ if before["pending_plan_change"].is_null() => "unchanged",
        _ => "pending_change_cancelled",
    };
    assert_eq!(change["action"], expected_action, "{shown} then {change}");
    assert_eq!(shown["plan_id"], plan);
    assert_eq!(
        shown["effective_at"], change["effective_at"],
        "{shown} then {change}"
    );
    assert_eq!(
        e2e::api::micros_of(&shown["credits_granted"])?,
        e2e::api::micros_of(&change["credits_granted"])?,
        "{shown} then {change}"
    );
    assert_eq!(shown["awaiting_payment"], false);
    let after = summary(app, ws)?;
    assert_eq!(
        e2e::api::micros_of(&after["plan_credits_remaining"])?
            - e2e::api::micros_of(&before["plan_credits_remaining"])?,
        e2e::api::micros_of(&shown["credits_granted"])?,
        "{shown}: the plan credits moved by something else"
    );
    Ok(shown)
}

#[test]
fn the_subscription_preview_is_what_the_change_then_does() -> Result<()> {
    let app = start()?;
    app.provision("ws-pv")?;
    app.provision("ws-else")?;
    // April has 30 days: a cycle anchored on the 1st is 30 days long.
    set_clock(&app, "ws-pv", "2030-04-01T09:00:00Z")?;
    let path = "/v1/workspaces/ws-pv/subscription/preview?plan_id=starter";
    assert_owners_only(&app, "ws-pv", "ws-else", path, 200)?;

    // No plan: subscribing grants the plan's monthly credits now.
    let shown = preview_then_choose(&app, "ws-pv", "starter")?;
    assert_eq!(
        shown,
        json!({"plan_id": "starter", "change": "subscribe",
               "effective_at": "2030-04-01T09:00:00Z", "credits_granted": "100", "price": "0",
               "awaiting_payment": false})
    );
    // Use 40 of the 100 credits (2,000 AI tasks at 0.02).
    debit(
        &app,
        "ws-pv",
        "ev-1",
        "agent-1",
        "ai_task",
        "2000",
        "2030-04-01T09:00:00Z",
    )?;

    // April 11: a downgrade waits for May 1, grants nothing; it is then pending.
    set_clock(&app, "ws-pv", "2030-04-11T09:00:00Z")?;
    let shown = preview_then_choose(&app, "ws-pv", "free")?;
    assert_eq!(
        shown,
        json!({"plan_id": "free", "change": "downgrade",
               "effective_at": "2030-05-01T00:00:00Z", "credits_granted": "0", "price": "0",
               "awaiting_payment": false})
    );
    // The plan in force, with a downgrade pending: unchanged.
    let shown = expect(&preview(&app, "ws-pv", "starter")?, 200, "preview starter")?;
    assert_eq!(
        shown,
        json!({"plan_id": "starter", "change": "unchanged",
               "effective_at": "2030-04-11T09:00:00Z", "credits_granted": "0", "price": "0",
               "awaiting_payment": false})
    );

    // R14, with the downgrade pending: 20 whole days of the 30 left, 1,000 x 20 / 30 rounded
    // down to the micro-credit; the upgrade grants exactly that and drops the downgrade.
    let r14_micros = 1_000 * 1_000_000 * 20 / 30;
    let shown = preview_then_choose(&app, "ws-pv", "growth")?;
    assert_eq!(shown["change"], "upgrade");
    assert_eq!(shown["effective_at"], "2030-04-11T09:00:00Z");
    assert_eq!(e2e::api::micros_of(&shown["credits_granted"])?, r14_micros);
    assert_eq!(shown["credits_granted"], "666.666666");
    let body = summary(&app, "ws-pv")?;
    assert_eq!(body["pending_plan_change"], Value::Null);
    assert_eq!(
        e2e::api::micros_of(&body["plan_credits_remaining"])?,
        60_000_000 + r14_micros
    );

    // The plan in force again: unchanged, nothing granted.
    let shown = preview_then_choose(&app, "ws-pv", "growth")?;
    assert_eq!(shown["change"], "unchanged");

    // What the change refuses, the preview refuses the same way: a paid plan without Stripe
    // (503), an unknown plan (404).
    for plan in ["pro", "gold"] {
        let shown = preview(&app, "ws-pv", plan)?;
        let done = owner(
            &app,
            "ws-pv",
            "POST",
            "/v1/workspaces/ws-pv/subscription",
            Some(&json!({"plan_id": plan})),
        )?;
        assert_eq!(
            (shown.status, json_of(&shown)["error"].clone()),
            (done.status, json_of(&done)["error"].clone()),
            "{plan}"
        );
    }
    expect_error(&preview(&app, "ws-pv", "gold")?, 404, "not_found", "gold")?;
    expect_error(
        &preview(&app, "ws-pv", "pro")?,
        503,
        "payment_processing_error",
        "pro",
    )?;
    // No plan_id (or an empty one): 400 naming it; another parameter: 400.
    for query in ["", "?plan_id=", "?plan=free", "?plan_id=free&colour=red"] {
        let reply = owner(
            &app,
            "ws-pv",
            "GET",
            &format!("/v1/workspaces/ws-pv/subscription/preview{query}"),
            None,
        )?;
        let error = expect_error(&reply, 400, "malformed_request", query)?;
        if query.len() <= "?plan_id=".len() {
            assert_eq!(error["field"], "plan_id", "{query}");
        }
    }
    // Only GET.
    let reply = owner(
        &app,
        "ws-pv",
        "POST",
        "/v1/workspaces/ws-pv/subscription/preview?plan_id=free",
        Some(&json!({})),
    )?;
    expect_error(&reply, 405, "method_not_allowed", "POST preview")?;
    // An unknown workspace of the token: 404.
    let reply = app.user(
        "ws-nobody",
        Role::Owner,
        "GET",
        "/v1/workspaces/ws-nobody/subscription/preview?plan_id=free",
        None,
    )?;
    expect_error(&reply, 404, "not_found", "unknown workspace")?;
    assert_owners_only(&app, "ws-pv", "ws-else", path, 200)?;
    app.check_invariants()
}
