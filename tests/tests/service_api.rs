//! End-to-end journeys of the service API (component `service-api`; docs/billing-rules.md, "The HTTP
//! contract") and the renewal job (component `cycle-renewal`), against the real `spin.toml` in
//! the local host.
//!
//! Every amount is checked to the micro-credit through the responses; every test ends with the
//! ledger's invariants on the host's database. Build first: `scripts/build-components.sh`.

use anyhow::{Context as _, Result, ensure};
use e2e::Reply;
use e2e::api::{App, Role, SERVICE_KEY, json_of};
use serde_json::{Value, json};

/// A standard US number (outbound rate 0.1/min, inbound 0.05/min in [`catalog`]).
const US_NUMBER: &str = "+14155550123";
/// A toll-free number (0.2/min, no inbound grace).
const TOLL_FREE: &str = "+18005550123";
/// A fixed start for test clocks, well ahead of the wall clock (clocks only move forward).
const T0: &str = "2030-01-10T10:00:00Z";
/// [`T0`] in seconds since the epoch.
const T0_SECS: i64 = 1_894_269_600;

/// A test catalog: the free plan grants `free_credits`; calls cost 0.1/min outbound and 0.05/min
/// inbound (per started minute), messages 0.01, AI tasks 0.25.
fn catalog(free_credits: &str) -> Value {
    let mut catalog = e2e::api::test_catalog(
        json!([
            {"id": "free", "name": "Free", "price": "0", "monthly_credits": free_credits},
            {"id": "basic", "name": "Basic", "price": "29", "monthly_credits": "1000",
             "stripe_price_id": "price_basic"}
        ]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.1"},
            {"kind": "call", "direction": "inbound", "price": "0.05"},
            {"kind": "call", "prefix": "+1800", "number_type": "toll_free", "price": "0.2"},
            {"kind": "message", "price": "0.01"},
            {"kind": "sms", "price": "0.0075"},
            {"kind": "stt", "price": "0.006"},
            {"kind": "ai_task", "price": "0.25"}
        ]),
    );
    catalog["settings"]["low_balance_threshold"] = "0.5".into();
    catalog
}

/// Asserts a status (and, for errors, the error code), showing the body when it differs.
fn expect(reply: &Reply, status: u16, code: Option<&str>) -> Result<Value> {
    let body = json_of(reply);
    ensure!(
        reply.status == status,
        "expected {status}, got {} {}",
        reply.status,
        reply.body
    );
    if let Some(code) = code {
        ensure!(
            body["error"]["code"] == code,
            "expected error code {code}, got {}",
            reply.body
        );
    }
    Ok(body)
}

/// Asserts a decimal-string field equals `expected` exactly.
fn amount(body: &Value, field: &str, expected: &str) -> Result<()> {
    ensure!(
        body[field] == expected,
        "{field}: expected {expected}, got {} in {body}",
        body[field]
    );
    Ok(())
}

/// Starts the app and stores the test catalog with `free_credits`.
fn app_with_catalog(free_credits: &str) -> Result<App> {
    let app = App::start()?;
    let reply = app.service("PUT", "/v1/catalog", Some(&catalog(free_credits)))?;
    let body = expect(&reply, 200, None)?;
    ensure!(
        body["version"] == 1,
        "first stored catalog is version 1: {body}"
    );
    Ok(app)
}

/// Subscribes `ws` to the free plan through the frontend route, as an owner.
fn subscribe_free(app: &App, ws: &str) -> Result<()> {
    let path = format!("/v1/workspaces/{ws}/subscription");
    let reply = app.user(
        ws,
        Role::Owner,
        "POST",
        &path,
        Some(&json!({"plan_id": "free"})),
    )?;
    let body = expect(&reply, 200, None).context("subscribe to the free plan")?;
    ensure!(body["plan_id"] == "free", "{body}");
    Ok(())
}

/// A provisioned workspace on the free plan.
fn subscribed(app: &App, ws: &str) -> Result<()> {
    app.provision(ws)?;
    subscribe_free(app, ws)
}

/// Sets an agent's limits through the frontend route, as an owner.
fn set_limits(app: &App, ws: &str, agent: &str, limits: &Value) -> Result<()> {
    let path = format!("/v1/workspaces/{ws}/agents/{agent}/limits");
    let reply = app.user(ws, Role::Owner, "PUT", &path, Some(limits))?;
    expect(&reply, 200, None).with_context(|| format!("set limits of {agent}"))?;
    Ok(())
}

/// Moves a workspace's test clock.
fn set_clock(app: &App, ws: &str, frozen_time: &str) -> Result<Value> {
    let reply = app.service(
        "POST",
        &format!("/v1/test-clocks/{ws}"),
        Some(&json!({"frozen_time": frozen_time})),
    )?;
    expect(&reply, 200, None).with_context(|| format!("set clock of {ws} to {frozen_time}"))
}

/// A usage event.
fn event(id: &str, ws: &str, agent: &str, kind: &str, quantity: &str) -> Value {
    json!({"id": id, "workspace_id": ws, "agent_id": agent, "kind": kind,
           "quantity": quantity})
}

/// `POST /v1/usage`.
fn usage(app: &App, event: &Value) -> Result<Reply> {
    app.service("POST", "/v1/usage", Some(event))
}

/// A call authorization request.
fn call(ws: &str, agent: &str, call_id: &str, direction: &str, to: &str) -> Value {
    json!({"workspace_id": ws, "agent_id": agent, "call_id": call_id,
           "direction": direction, "to": to, "from": "+14155550999"})
}

/// `POST /v1/calls`.
fn authorize(app: &App, request: &Value) -> Result<Reply> {
    app.service("POST", "/v1/calls", Some(request))
}

/// `POST /v1/calls/{id}/heartbeat`.
fn heartbeat(app: &App, call_id: &str, elapsed_seconds: i64) -> Result<Reply> {
    app.service(
        "POST",
        &format!("/v1/calls/{call_id}/heartbeat"),
        Some(&json!({"elapsed_seconds": elapsed_seconds})),
    )
}

/// `POST /v1/calls/{id}/end`.
fn end(app: &App, call_id: &str, duration_seconds: i64) -> Result<Reply> {
    app.service(
        "POST",
        &format!("/v1/calls/{call_id}/end"),
        Some(&json!({"duration_seconds": duration_seconds})),
    )
}

/// `POST /internal/jobs/renew-cycles`.
fn renew(app: &App) -> Result<Value> {
    let reply = app.service("POST", "/internal/jobs/renew-cycles", None)?;
    expect(&reply, 200, None)
}

/// Drains `credits` quarters of plan credit with AI tasks (0.25 each).
fn spend_ai_tasks(app: &App, ws: &str, agent: &str, prefix: &str, count: usize) -> Result<Value> {
    let mut last = Value::Null;
    for n in 0..count {
        let reply = usage(
            app,
            &event(&format!("{prefix}-{n}"), ws, agent, "ai_task", "1"),
        )?;
        last = expect(&reply, 200, None)?;
    }
    Ok(last)
}

#[test]
fn new_workspace_is_billing_not_configured() -> Result<()> {
    let app = App::start()?;
    let reply = app.service(
        "PUT",
        "/v1/workspaces/ws-new",
        Some(&json!({"name": "New", "email": "billing@new.example", "timezone": "Europe/Paris"})),
    )?;
    let body = expect(&reply, 200, None)?;
    ensure!(
        body == json!({"id": "ws-new", "name": "New", "email": "billing@new.example",
                        "currency": "USD", "timezone": "Europe/Paris"}),
        "provisioned workspace: {body}"
    );

    let reply = usage(&app, &event("e1", "ws-new", "agent-1", "message", "1"))?;
    expect(&reply, 409, Some("billing_not_configured"))?;
    let reply = authorize(
        &app,
        &call("ws-new", "agent-1", "c1", "outbound", US_NUMBER),
    )?;
    expect(&reply, 409, Some("billing_not_configured"))?;
    let reply = authorize(&app, &call("ws-new", "agent-1", "c2", "inbound", US_NUMBER))?;
    expect(&reply, 409, Some("billing_not_configured"))?;
    // An unknown workspace is a 404, not a 409.
    let reply = usage(&app, &event("e2", "ws-unknown", "agent-1", "message", "1"))?;
    expect(&reply, 404, Some("not_found"))?;
    app.check_invariants()
}

#[test]
fn subscribed_workspace_burns_plan_credits() -> Result<()> {
    let app = app_with_catalog("1")?;
    let reply = app.service("GET", "/v1/catalog", None)?;
    let body = expect(&reply, 200, None)?;
    ensure!(
        body["version"] == 1 && body["plans"][0]["monthly_credits"] == "1",
        "{body}"
    );
    subscribed(&app, "ws-a")?;

    let reply = usage(&app, &event("m1", "ws-a", "agent-1", "message", "3"))?;
    let body = expect(&reply, 200, None)?;
    amount(&body, "charged", "0.03")?;
    amount(&body, "from_plan", "0.03")?;
    amount(&body, "from_wallet", "0")?;
    amount(&body, "plan_credits_remaining", "0.97")?;
    amount(&body, "wallet_balance", "0")?;
    // R8: a replay returns the first result and moves nothing.
    let replay = usage(&app, &event("m1", "ws-a", "agent-1", "message", "3"))?;
    ensure!(
        expect(&replay, 200, None)? == body,
        "replay differs: {}",
        replay.body
    );
    // The same id with another body is a conflict.
    let reply = usage(&app, &event("m1", "ws-a", "agent-1", "message", "4"))?;
    expect(&reply, 409, Some("idempotency_conflict"))?;

    // A call: 0.1 held for the first minute, 61 s billed as two started minutes.
    let reply = authorize(
        &app,
        &call("ws-a", "agent-1", "call-1", "outbound", US_NUMBER),
    )?;
    let body = expect(&reply, 201, None)?;
    ensure!(
        body == json!({"call_id": "call-1", "status": "authorized", "held": "0.1", "grace": false}),
        "{body}"
    );
    let reply = end(&app, "call-1", 61)?;
    let body = expect(&reply, 200, None)?;
    ensure!(
        body["status"] == "ended" && body["billed_seconds"] == 120,
        "{body}"
    );
    amount(&body, "charged", "0.2")?;
    amount(&body, "from_plan", "0.2")?;
    amount(&body, "plan_credits_remaining", "0.77")?;

    // Speech-to-text bills fractional minutes; call usage reported after the fact bills seconds.
    let reply = usage(&app, &event("s1", "ws-a", "agent-1", "stt", "0.5"))?;
    amount(&expect(&reply, 200, None)?, "charged", "0.003")?;
    let mut call_event = event("u-call-1", "ws-a", "agent-1", "call", "30");
    call_event["direction"] = json!("outbound");
    call_event["to"] = json!(US_NUMBER);
    let reply = usage(&app, &call_event)?;
    let body = expect(&reply, 200, None)?;
    amount(&body, "charged", "0.1")?;
    amount(&body, "plan_credits_remaining", "0.667")?;
    app.check_invariants()
}

#[test]
fn stop_agent_halts_when_plan_credits_run_out() -> Result<()> {
    let app = app_with_catalog("1")?;
    subscribed(&app, "ws-s")?;
    set_limits(
        &app,
        "ws-s",
        "agent-stop",
        &json!({"overage_policy": "stop"}),
    )?;

    let body = spend_ai_tasks(&app, "ws-s", "agent-stop", "t", 4)?;
    amount(&body, "plan_credits_remaining", "0")?;
    let reply = usage(&app, &event("t-more", "ws-s", "agent-stop", "ai_task", "1"))?;
    expect(&reply, 402, Some("plan_credits_exhausted"))?;
    let reply = authorize(
        &app,
        &call("ws-s", "agent-stop", "c1", "outbound", US_NUMBER),
    )?;
    expect(&reply, 402, Some("plan_credits_exhausted"))?;
    // A `use_balance` agent falls through to an empty wallet instead.
    let reply = usage(
        &app,
        &event("t-other", "ws-s", "agent-other", "ai_task", "1"),
    )?;
    let body = expect(&reply, 402, Some("insufficient_funds"))?;
    ensure!(
        body["error"]["message"] == "Insufficient funds in your account",
        "{body}"
    );
    let reply = authorize(
        &app,
        &call("ws-s", "agent-other", "c2", "outbound", US_NUMBER),
    )?;
    expect(&reply, 402, Some("insufficient_funds"))?;
    app.check_invariants()
}

#[test]
fn agent_limits_daily_concurrent_and_monthly() -> Result<()> {
    let app = app_with_catalog("10")?;
    subscribed(&app, "ws-l")?;

    // Daily call limit: two calls, then 429.
    set_limits(
        &app,
        "ws-l",
        "daily",
        &json!({"overage_policy": "use_balance", "daily_call_limit": 2}),
    )?;
    for n in 0..2 {
        let id = format!("d{n}");
        expect(
            &authorize(&app, &call("ws-l", "daily", &id, "outbound", US_NUMBER))?,
            201,
            None,
        )?;
        expect(&end(&app, &id, 10)?, 200, None)?;
    }
    let reply = authorize(&app, &call("ws-l", "daily", "d2", "outbound", US_NUMBER))?;
    let body = expect(&reply, 429, Some("limit_reached"))?;
    ensure!(body["error"]["limit"] == "daily_call_limit", "{body}");

    // Simultaneous calls: one at a time.
    set_limits(
        &app,
        "ws-l",
        "single",
        &json!({"overage_policy": "use_balance", "max_concurrent_calls": 1}),
    )?;
    expect(
        &authorize(&app, &call("ws-l", "single", "s0", "outbound", US_NUMBER))?,
        201,
        None,
    )?;
    let reply = authorize(&app, &call("ws-l", "single", "s1", "outbound", US_NUMBER))?;
    let body = expect(&reply, 429, Some("limit_reached"))?;
    ensure!(body["error"]["limit"] == "max_concurrent_calls", "{body}");
    expect(&end(&app, "s0", 5)?, 200, None)?;
    expect(
        &authorize(&app, &call("ws-l", "single", "s1", "outbound", US_NUMBER))?,
        201,
        None,
    )?;
    expect(&end(&app, "s1", 5)?, 200, None)?;

    // Monthly spend: 0.15 allows one 0.1 hold, not two; posted charges count too.
    set_limits(
        &app,
        "ws-l",
        "capped",
        &json!({"overage_policy": "use_balance", "monthly_spend_limit": "0.15"}),
    )?;
    expect(
        &authorize(&app, &call("ws-l", "capped", "m0", "outbound", US_NUMBER))?,
        201,
        None,
    )?;
    let reply = authorize(&app, &call("ws-l", "capped", "m1", "outbound", US_NUMBER))?;
    let body = expect(&reply, 429, Some("limit_reached"))?;
    ensure!(body["error"]["limit"] == "monthly_spend_limit", "{body}");
    let body = expect(&end(&app, "m0", 60)?, 200, None)?;
    amount(&body, "charged", "0.1")?;
    // 0.1 spent: five messages (0.05) fit exactly, the sixth does not.
    for n in 0..5 {
        let reply = usage(
            &app,
            &event(&format!("cm{n}"), "ws-l", "capped", "message", "1"),
        )?;
        expect(&reply, 200, None)?;
    }
    let reply = usage(&app, &event("cm5", "ws-l", "capped", "message", "1"))?;
    let body = expect(&reply, 429, Some("limit_reached"))?;
    ensure!(body["error"]["limit"] == "monthly_spend_limit", "{body}");
    // Other agents are not affected: 10 - 0.2 (daily) - 0.2 (single) - 0.15 (capped) left.
    let reply = usage(&app, &event("free-agent", "ws-l", "other", "message", "1"))?;
    amount(
        &expect(&reply, 200, None)?,
        "plan_credits_remaining",
        "9.44",
    )?;
    app.check_invariants()
}

#[test]
fn call_holds_heartbeat_end_and_replay() -> Result<()> {
    let app = app_with_catalog("1")?;
    subscribed(&app, "ws-h")?;

    let reply = authorize(
        &app,
        &call("ws-h", "agent-1", "call-h", "outbound", US_NUMBER),
    )?;
    amount(&expect(&reply, 201, None)?, "held", "0.1")?;
    // Replaying the authorization returns the call as it is; another request with its id is a
    // conflict.
    let reply = authorize(
        &app,
        &call("ws-h", "agent-1", "call-h", "outbound", US_NUMBER),
    )?;
    amount(&expect(&reply, 201, None)?, "held", "0.1")?;
    let reply = authorize(
        &app,
        &call("ws-h", "agent-2", "call-h", "outbound", US_NUMBER),
    )?;
    expect(&reply, 409, Some("idempotency_conflict"))?;

    // Heartbeats extend the hold one increment ahead of the elapsed time.
    let body = expect(&heartbeat(&app, "call-h", 30)?, 200, None)?;
    ensure!(body == json!({"continue": true, "held": "0.2"}), "{body}");
    let body = expect(&heartbeat(&app, "call-h", 100)?, 200, None)?;
    ensure!(body == json!({"continue": true, "held": "0.3"}), "{body}");
    // Held credits are not available to others: 1 - 0.3 left means 0.7 of messages at most.
    let reply = usage(&app, &event("big", "ws-h", "agent-3", "message", "71"))?;
    expect(&reply, 402, Some("insufficient_funds"))?;

    // End posts per started minute and releases the rest of the hold.
    let reply = end(&app, "call-h", 75)?;
    let first = expect(&reply, 200, None)?;
    ensure!(
        first["call_id"] == "call-h"
            && first["status"] == "ended"
            && first["duration_seconds"] == 75
            && first["billed_seconds"] == 120,
        "{first}"
    );
    amount(&first, "charged", "0.2")?;
    amount(&first, "from_plan", "0.2")?;
    amount(&first, "unbilled", "0")?;
    amount(&first, "plan_credits_remaining", "0.8")?;
    let replay = expect(&end(&app, "call-h", 75)?, 200, None)?;
    ensure!(replay == first, "replayed end differs: {replay} vs {first}");
    expect(&end(&app, "call-h", 200)?, 409, Some("call_already_ended"))?;
    let body = expect(&heartbeat(&app, "call-h", 130)?, 200, None)?;
    ensure!(
        body["continue"] == false && body["reason"] == "call_not_active",
        "{body}"
    );

    // The released hold is available again: 0.8 of messages now fits.
    let reply = usage(&app, &event("big", "ws-h", "agent-3", "message", "80"))?;
    amount(&expect(&reply, 200, None)?, "plan_credits_remaining", "0")?;

    // Unknown calls.
    expect(
        &heartbeat(&app, "no-such-call", 10)?,
        404,
        Some("not_found"),
    )?;
    expect(&end(&app, "no-such-call", 10)?, 404, Some("not_found"))?;
    // Out-of-range durations are validation errors.
    expect(
        &heartbeat(&app, "call-h", -1)?,
        422,
        Some("validation_error"),
    )?;
    expect(&end(&app, "call-h", 86_401)?, 422, Some("validation_error"))?;
    app.check_invariants()
}

#[test]
fn outbound_stops_at_zero_while_inbound_runs_through_grace() -> Result<()> {
    let app = app_with_catalog("1")?;
    app.provision("ws-g")?;
    let body = set_clock(&app, "ws-g", T0)?;
    ensure!(
        body == json!({"workspace_id": "ws-g", "frozen_time": T0}),
        "{body}"
    );
    subscribe_free(&app, "ws-g")?;
    // The clock only moves forward.
    let reply = app.service(
        "POST",
        "/v1/test-clocks/ws-g",
        Some(&json!({"frozen_time": "2030-01-01T00:00:00Z"})),
    )?;
    expect(&reply, 422, Some("validation_error"))?;

    let body = spend_ai_tasks(&app, "ws-g", "agent-1", "t", 4)?;
    amount(&body, "plan_credits_remaining", "0")?;

    let reply = authorize(&app, &call("ws-g", "agent-1", "out", "outbound", US_NUMBER))?;
    expect(&reply, 402, Some("insufficient_funds"))?;
    // Toll-free inbound calls stop at once.
    let reply = authorize(&app, &call("ws-g", "agent-1", "tf", "inbound", TOLL_FREE))?;
    expect(&reply, 402, Some("insufficient_funds"))?;
    // Inbound calls to standard numbers run on grace, holding nothing.
    let reply = authorize(&app, &call("ws-g", "agent-1", "in", "inbound", US_NUMBER))?;
    let body = expect(&reply, 201, None)?;
    ensure!(
        body == json!({"call_id": "in", "status": "authorized", "held": "0", "grace": true}),
        "{body}"
    );

    // Heartbeats every 100 s keep the call alive until the 900 s grace period is over.
    let mut stopped_at = None;
    for step in 1..=10_i64 {
        let elapsed = step * 100;
        set_clock(&app, "ws-g", &rfc3339(T0_SECS + elapsed))?;
        let body = expect(&heartbeat(&app, "in", elapsed)?, 200, None)?;
        if body["continue"] == false {
            ensure!(body["reason"] == "insufficient_funds", "{body}");
            stopped_at = Some(elapsed);
            break;
        }
    }
    ensure!(stopped_at == Some(900), "grace ended at {stopped_at:?}");
    // After the grace period every call is refused.
    let reply = authorize(&app, &call("ws-g", "agent-1", "in-2", "inbound", US_NUMBER))?;
    expect(&reply, 402, Some("insufficient_funds"))?;

    // The grace call's posting takes the wallet negative: 15 minutes at 0.05.
    let body = expect(&end(&app, "in", 900)?, 200, None)?;
    amount(&body, "charged", "0.75")?;
    amount(&body, "from_wallet", "0.75")?;
    amount(&body, "wallet_balance", "-0.75")?;
    app.check_invariants()
}

/// RFC 3339 UTC text of Unix seconds (whole seconds only, as the API prints them).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[test]
fn renewal_across_month_ends_is_idempotent() -> Result<()> {
    let app = app_with_catalog("1")?;
    app.provision("ws-r")?;
    set_clock(&app, "ws-r", "2031-01-31T10:00:00Z")?;
    subscribe_free(&app, "ws-r")?;
    spend_ai_tasks(&app, "ws-r", "agent-1", "jan", 1)?;

    // Nothing is due yet.
    let report = renew(&app)?;
    ensure!(
        report
            == json!({"workspaces_renewed": 0, "cycles_advanced": 0, "workspaces_failed": 0, "holds_expired": 0, "grants_expired": 0, "grants_expiring_told": 0, "more": false}),
        "{report}"
    );

    // Anchor 31: the next cycle starts on Feb 28.
    set_clock(&app, "ws-r", "2031-02-28T00:00:00Z")?;
    let report = renew(&app)?;
    ensure!(
        report["workspaces_renewed"] == 1 && report["cycles_advanced"] == 1,
        "{report}"
    );
    let report = renew(&app)?;
    ensure!(
        report["workspaces_renewed"] == 0 && report["cycles_advanced"] == 0,
        "second run renews nothing: {report}"
    );
    // Unused credits expired (no rollover) and the new cycle's credit was granted once.
    let body = spend_ai_tasks(&app, "ws-r", "agent-1", "feb", 1)?;
    amount(&body, "plan_credits_remaining", "0.75")?;

    // Then Mar 31, clamped back to the anchor.
    set_clock(&app, "ws-r", "2031-03-30T23:59:59Z")?;
    ensure!(
        renew(&app)?["cycles_advanced"] == 0,
        "not due before Mar 31"
    );
    set_clock(&app, "ws-r", "2031-03-31T00:00:00Z")?;
    ensure!(renew(&app)?["cycles_advanced"] == 1, "due on Mar 31");

    // Missed runs catch up without granting credits for cycles that already ended.
    set_clock(&app, "ws-r", "2031-06-15T12:00:00Z")?;
    let report = renew(&app)?;
    ensure!(
        report["workspaces_renewed"] == 1 && report["cycles_advanced"] == 2,
        "Mar 31 -> Apr 30 -> May 31 (in force until Jun 30): {report}"
    );
    ensure!(renew(&app)?["cycles_advanced"] == 0, "idempotent");
    let body = spend_ai_tasks(&app, "ws-r", "agent-1", "jun", 1)?;
    amount(&body, "plan_credits_remaining", "0.75")?;

    // Two runs at once renew each cycle once.
    set_clock(&app, "ws-r", "2031-07-01T00:00:00Z")?;
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let url = app.host.url("/internal/jobs/renew-cycles");
            std::thread::spawn(move || {
                e2e::post_json(
                    &url,
                    "",
                    &[("authorization", &format!("Bearer {SERVICE_KEY}"))],
                )
            })
        })
        .collect();
    let mut advanced = 0;
    for handle in handles {
        let reply = handle
            .join()
            .map_err(|_| anyhow::anyhow!("thread panicked"))??;
        advanced += expect(&reply, 200, None)?["cycles_advanced"]
            .as_u64()
            .unwrap_or(99);
    }
    ensure!(advanced == 1, "concurrent runs advanced {advanced} cycles");
    let body = spend_ai_tasks(&app, "ws-r", "agent-1", "jul", 1)?;
    amount(&body, "plan_credits_remaining", "0.75")?;

    // The job needs the service key.
    let reply = app.request("POST", "/internal/jobs/renew-cycles", None, &[])?;
    expect(&reply, 401, Some("unauthorized"))?;
    app.check_invariants()
}

/// POSTs every body to `path` at the same time (a thread each) as the service: the replies, in
/// the bodies' order.
fn post_concurrently(app: &App, path: &str, bodies: Vec<Value>) -> Result<Vec<Reply>> {
    let url = app.host.url(path);
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let url = url.clone();
            std::thread::spawn(move || {
                e2e::post_json(
                    &url,
                    &body.to_string(),
                    &[("authorization", &format!("Bearer {SERVICE_KEY}"))],
                )
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|handle| {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("thread panicked"))?
        })
        .collect()
}

/// 16 simultaneous debits of one message on `ws`, each answered 200: their charges.
fn concurrent_message_charges(app: &App, ws: &str, prefix: &str) -> Result<Vec<String>> {
    let bodies = (0..16)
        .map(|n| event(&format!("{prefix}-{n}"), ws, "agent-1", "message", "1"))
        .collect();
    post_concurrently(app, "/v1/usage", bodies)?
        .iter()
        .map(|reply| {
            let body = expect(reply, 200, None)?;
            Ok(body["charged"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

#[test]
fn a_new_catalog_prices_the_next_debit_on_every_warm_instance() -> Result<()> {
    // Debits and authorizations use the instance's cached catalog and read the stored version
    // with their state: a change must still price the very next request, on every instance.
    let app = app_with_catalog("100")?;
    subscribed(&app, "ws-cat")?;
    // Warm several instances on version 1 (messages 0.01).
    let before = concurrent_message_charges(&app, "ws-cat", "v1")?;
    ensure!(before.iter().all(|c| c == "0.01"), "{before:?}");
    let mut dearer = catalog("100");
    for rate in dearer["rates"].as_array_mut().into_iter().flatten() {
        match (rate["kind"].as_str(), rate["direction"].as_str()) {
            (Some("message"), _) => rate["price"] = "0.02".into(),
            (Some("call"), Some("outbound")) => rate["price"] = "0.2".into(),
            _ => {}
        }
    }
    let body = expect(
        &app.service("PUT", "/v1/catalog", Some(&dearer))?,
        200,
        None,
    )?;
    ensure!(body["version"] == 2, "{body}");

    let after = concurrent_message_charges(&app, "ws-cat", "v2")?;
    ensure!(after.iter().all(|c| c == "0.02"), "{after:?}");
    let held = expect(
        &authorize(
            &app,
            &call("ws-cat", "agent-1", "c-v2", "outbound", US_NUMBER),
        )?,
        201,
        None,
    )?;
    amount(&held, "held", "0.2")?;
    let batch = json!({"events": [event("b-v2", "ws-cat", "agent-1", "message", "3")]});
    let body = expect(
        &app.service("POST", "/v1/usage/batch", Some(&batch))?,
        200,
        None,
    )?;
    amount(&body["results"][0], "charged", "0.06")?;
    // 100 plan credits - 16 x 0.01 - 16 x 0.02 - 0.06 - 0.02 (the hold is held, not spent).
    let debit = expect(
        &usage(&app, &event("last", "ws-cat", "agent-1", "message", "1"))?,
        200,
        None,
    )?;
    amount(&debit, "plan_credits_remaining", "99.44")?;
    app.check_invariants()
}

#[test]
fn concurrent_authorizations_never_overspend() -> Result<()> {
    concurrent_authorizations(App::start()?)
}

#[test]
fn concurrent_authorizations_on_fresh_instances_never_overspend() -> Result<()> {
    // One instance per request: 64 connections racing on the SQLite file, not one shared one.
    let options = e2e::HostOptions::default()
        .arg("--max-instance-reuse-count")
        .arg("1");
    concurrent_authorizations(App::start_with(options)?)
}

#[test]
fn concurrent_authorizations_on_spin_sqlite_never_overspend() -> Result<()> {
    // SQLite as Spin runs it: a connection per instance and no write turns, so the 64 writers
    // meet in SQLite's lock and wait in its busy handler, the path real Spin takes.
    let options = e2e::HostOptions::default()
        .arg("--sqlite-mode")
        .arg("spin")
        .arg("--max-instance-reuse-count")
        .arg("1");
    concurrent_authorizations(App::start_with(options)?)
}

/// 64 simultaneous authorizations of 0.1 against 1 plan credit: exactly 10 succeed.
fn concurrent_authorizations(app: App) -> Result<()> {
    let reply = app.service("PUT", "/v1/catalog", Some(&catalog("1")))?;
    expect(&reply, 200, None)?;
    subscribed(&app, "ws-c")?;
    let bodies = (0..64)
        .map(|n| {
            call(
                "ws-c",
                "agent-1",
                &format!("race-{n}"),
                "outbound",
                US_NUMBER,
            )
        })
        .collect();
    let mut authorized = Vec::new();
    for (n, reply) in post_concurrently(&app, "/v1/calls", bodies)?
        .iter()
        .enumerate()
    {
        match reply.status {
            201 => authorized.push(format!("race-{n}")),
            402 => {
                expect(reply, 402, Some("insufficient_funds"))?;
            }
            _ => anyhow::bail!("unexpected answer: {} {}", reply.status, reply.body),
        }
    }
    // 1 credit, 0.1 held per call.
    ensure!(
        authorized.len() == 10,
        "{} calls authorized",
        authorized.len()
    );
    let mut remaining = String::new();
    for call_id in &authorized {
        let body = expect(&end(&app, call_id, 60)?, 200, None)?;
        amount(&body, "charged", "0.1")?;
        remaining = body["plan_credits_remaining"]
            .as_str()
            .unwrap_or("")
            .to_owned();
    }
    ensure!(remaining == "0", "plan credits left: {remaining}");
    app.check_invariants()
}

#[test]
fn usage_batch_of_a_thousand_and_partial_failures() -> Result<()> {
    let app = app_with_catalog("100")?;
    subscribed(&app, "ws-b")?;

    let events: Vec<Value> = (0..1_000)
        .map(|n| event(&format!("b-{n}"), "ws-b", "agent-1", "message", "1"))
        .collect();
    let batch = json!({"events": events});
    let reply = app.service("POST", "/v1/usage/batch", Some(&batch))?;
    let body = expect(&reply, 200, None)?;
    let results = body["results"].as_array().context("results")?;
    ensure!(results.len() == 1_000, "{} results", results.len());
    ensure!(
        results
            .iter()
            .all(|r| r["status"] == "ok" && r["charged"] == "0.01"),
        "every event is debited"
    );
    ensure!(
        results[0]["id"] == "b-0" && results[999]["id"] == "b-999",
        "in order"
    );
    amount(&results[999], "plan_credits_remaining", "90")?;
    // Replaying the batch moves nothing.
    let replay = app.service("POST", "/v1/usage/batch", Some(&batch))?;
    ensure!(expect(&replay, 200, None)? == body, "batch replay differs");

    // One malformed, one invalid and one refused event fail alone.
    let mut bad_phone = event("p-1", "ws-b", "agent-1", "call", "30");
    bad_phone["direction"] = json!("outbound");
    bad_phone["to"] = json!("0044 20 7946");
    let mixed = json!({"events": [
        event("x-1", "ws-b", "agent-1", "message", "1"),
        {"id": "x-2", "workspace_id": "ws-b", "agent_id": "agent-1", "kind": "message",
         "quantity": "1", "colour": "red"},
        {"id": "x-3", "kind": 42},
        bad_phone,
        event("x-4", "ws-missing", "agent-1", "message", "1"),
        event("x-5", "ws-b", "agent-1", "message", "-1"),
        event("x-6", "ws-b", "agent-1", "message", "2"),
    ]});
    let reply = app.service("POST", "/v1/usage/batch", Some(&mixed))?;
    let body = expect(&reply, 200, None)?;
    let results = body["results"].as_array().context("results")?;
    let summary: Vec<(String, String, String)> = results
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("?").to_owned(),
                r["status"].as_str().unwrap_or("?").to_owned(),
                r["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("x-1", "ok", ""),
        ("x-2", "error", "malformed_request"),
        ("x-3", "error", "malformed_request"),
        ("p-1", "error", "invalid_phone_number"),
        ("x-4", "error", "not_found"),
        ("x-5", "error", "invalid_amount"),
        ("x-6", "ok", ""),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    ensure!(summary == expected, "{summary:?}");
    amount(&results[6], "plan_credits_remaining", "89.97")?;

    // Whole-request refusals.
    let too_many: Vec<Value> = (0..1_001)
        .map(|n| event(&format!("o-{n}"), "ws-b", "agent-1", "message", "1"))
        .collect();
    let reply = app.service(
        "POST",
        "/v1/usage/batch",
        Some(&json!({"events": too_many})),
    )?;
    expect(&reply, 422, Some("validation_error"))?;
    let reply = app.service("POST", "/v1/usage/batch", Some(&json!({"events": []})))?;
    expect(&reply, 422, Some("validation_error"))?;
    let reply = app.service(
        "POST",
        "/v1/usage/batch",
        Some(&json!({"events": {"id": "x"}})),
    )?;
    expect(&reply, 400, Some("malformed_request"))?;
    let reply = app.service("POST", "/v1/usage/batch", Some(&json!([])))?;
    expect(&reply, 400, Some("malformed_request"))?;
    // None of them moved anything.
    let reply = usage(&app, &event("last", "ws-b", "agent-1", "message", "1"))?;
    amount(
        &expect(&reply, 200, None)?,
        "plan_credits_remaining",
        "89.96",
    )?;
    app.check_invariants()
}

/// `occurred_at` may be left out (the time of receipt is taken); a report more than 35 days late
/// or more than 5 minutes early is refused with 422 and moves nothing, alone or in a batch.
#[test]
fn usage_time_defaults_to_receipt_and_stays_within_its_window() -> Result<()> {
    let app = app_with_catalog("1")?;
    subscribed(&app, "ws-t")?;
    let now = e2e::api::now_secs();
    let at = |offset: i64| json!(ledger::calendar::rfc3339(now + offset));
    let reply = usage(&app, &event("t1", "ws-t", "agent-1", "message", "1"))?;
    amount(
        &expect(&reply, 200, None)?,
        "plan_credits_remaining",
        "0.99",
    )?;
    for (id, offset) in [("late", -35 * 86_400 - 60), ("early", 600)] {
        let mut stale = event(id, "ws-t", "agent-1", "message", "1");
        stale["occurred_at"] = at(offset);
        let body = expect(&usage(&app, &stale)?, 422, Some("validation_error"))?;
        ensure!(body["error"]["field"] == "occurred_at", "{body}");
    }
    let mut on_time = event("t2", "ws-t", "agent-1", "message", "1");
    on_time["occurred_at"] = at(-34 * 86_400);
    let mut late = event("t3", "ws-t", "agent-1", "message", "1");
    late["occurred_at"] = at(-40 * 86_400);
    let reply = app.service(
        "POST",
        "/v1/usage/batch",
        Some(&json!({"events": [on_time, late]})),
    )?;
    let body = expect(&reply, 200, None)?;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    ensure!(
        results.len() == 2
            && results[0]["status"] == "ok"
            && results[0]["plan_credits_remaining"] == "0.98"
            && results[1]["status"] == "error"
            && results[1]["error"]["code"] == "validation_error",
        "{body}"
    );
    app.check_invariants()
}

#[test]
fn bad_input_is_refused_and_writes_nothing() -> Result<()> {
    let app = app_with_catalog("1")?;
    subscribed(&app, "ws-x")?;
    let auth = format!("Bearer {SERVICE_KEY}");
    let headers = [("authorization", auth.as_str())];

    // Malformed JSON.
    let reply = e2e::post_json(&app.host.url("/v1/usage"), "{\"id\": ", &headers)?;
    expect(&reply, 400, Some("malformed_request"))?;
    let reply = e2e::post_json(&app.host.url("/v1/calls"), "not json", &headers)?;
    expect(&reply, 400, Some("malformed_request"))?;
    let reply = e2e::post_json(&app.host.url("/v1/usage"), "", &headers)?;
    expect(&reply, 400, Some("malformed_request"))?;
    // Unknown fields and wrong types.
    let mut unknown = event("e1", "ws-x", "agent-1", "message", "1");
    unknown["price_override"] = json!("0");
    expect(&usage(&app, &unknown)?, 400, Some("malformed_request"))?;
    let mut call_unknown = call("ws-x", "agent-1", "c1", "outbound", US_NUMBER);
    call_unknown["free"] = json!(true);
    expect(
        &authorize(&app, &call_unknown)?,
        400,
        Some("malformed_request"),
    )?;
    let mut wrong_type = call("ws-x", "agent-1", "c1", "outbound", US_NUMBER);
    wrong_type["direction"] = json!("sideways");
    expect(
        &authorize(&app, &wrong_type)?,
        400,
        Some("malformed_request"),
    )?;
    let reply = app.service(
        "POST",
        "/v1/calls/c1/end",
        Some(&json!({"duration_seconds": "60"})),
    )?;
    expect(&reply, 400, Some("malformed_request"))?;
    // Credentials.
    let reply = app.request(
        "POST",
        "/v1/usage",
        Some(&event("e1", "ws-x", "agent-1", "message", "1")),
        &[("authorization", "Bearer wrong-key")],
    )?;
    expect(&reply, 401, Some("unauthorized"))?;
    let reply = app.request(
        "POST",
        "/v1/calls",
        Some(&call("ws-x", "a", "c1", "outbound", US_NUMBER)),
        &[],
    )?;
    expect(&reply, 401, Some("unauthorized"))?;
    let reply = app.request(
        "PUT",
        "/v1/catalog",
        Some(&catalog("1000")),
        &[("authorization", "Bearer nope")],
    )?;
    expect(&reply, 401, Some("unauthorized"))?;
    // Validation.
    for to in [
        "14155550123",
        "+0123456",
        "+1 415 555",
        "+1234567890123456",
        "+",
    ] {
        let reply = authorize(&app, &call("ws-x", "agent-1", "c1", "outbound", to))?;
        let body = expect(&reply, 422, Some("invalid_phone_number"))?;
        ensure!(body["error"]["field"] == "to", "{body}");
    }
    expect(
        &usage(&app, &event("e1", "ws-x", "agent-1", "message", "-1"))?,
        422,
        Some("invalid_amount"),
    )?;
    expect(
        &usage(&app, &event("e1", "ws-x", "agent-1", "message", "1.5"))?,
        422,
        Some("validation_error"),
    )?;
    expect(
        &usage(&app, &event("bad id", "ws-x", "agent-1", "message", "1"))?,
        422,
        Some("validation_error"),
    )?;
    let mut bad_time = event("e1", "ws-x", "agent-1", "message", "1");
    bad_time["occurred_at"] = json!("yesterday");
    expect(&usage(&app, &bad_time)?, 422, Some("validation_error"))?;
    let reply = app.service(
        "PUT",
        "/v1/workspaces/ws-x",
        Some(&json!({"name": "X", "email": "not-an-email"})),
    )?;
    expect(&reply, 422, Some("validation_error"))?;
    let reply = app.service(
        "PUT",
        "/v1/workspaces/ws-y",
        Some(&json!({"name": "Y", "email": "y@y.example", "currency": "EUR"})),
    )?;
    expect(&reply, 422, Some("unsupported_currency"))?;
    let reply = app.service(
        "PUT",
        "/v1/workspaces/ws-y",
        Some(&json!({"name": "Y", "email": "y@y.example", "timezone": "Mars/Olympus"})),
    )?;
    expect(&reply, 422, None)?;
    let mut bad_catalog = catalog("1000");
    // Not a currency code in any case ("usd" is one: see `currencies_are_taken_in_any_case`).
    bad_catalog["settings"]["currency"] = json!("US$");
    expect(
        &app.service("PUT", "/v1/catalog", Some(&bad_catalog))?,
        422,
        Some("validation_error"),
    )?;
    let mut extra_catalog = catalog("1000");
    extra_catalog["settings"]["colour"] = json!("red");
    expect(
        &app.service("PUT", "/v1/catalog", Some(&extra_catalog))?,
        400,
        Some("malformed_request"),
    )?;
    // Routes and methods.
    expect(&app.service("GET", "/v1/usage", None)?, 405, None)?;
    expect(
        &app.service("GET", "/v1/nothing-here", None)?,
        404,
        Some("not_found"),
    )?;

    // Nothing was written: the catalog is still version 1 and the plan credit is whole.
    let body = expect(&app.service("GET", "/v1/catalog", None)?, 200, None)?;
    ensure!(
        body["version"] == 1 && body["plans"][0]["monthly_credits"] == "1",
        "{body}"
    );
    let reply = app.service(
        "PUT",
        "/v1/workspaces/ws-y",
        Some(&json!({"name": "Y", "email": "y@y.example"})),
    )?;
    expect(&reply, 200, None)?;
    expect(
        &usage(&app, &event("e1", "ws-y", "agent-1", "message", "1"))?,
        409,
        Some("billing_not_configured"),
    )?;
    let body = expect(
        &usage(&app, &event("e1", "ws-x", "agent-1", "message", "1"))?,
        200,
        None,
    )?;
    amount(&body, "plan_credits_remaining", "0.99")?;
    amount(&body, "wallet_balance", "0")?;
    app.check_invariants()
}

#[test]
fn idempotency_key_replays_and_conflicts() -> Result<()> {
    let app = app_with_catalog("1")?;
    subscribed(&app, "ws-i")?;
    let auth = format!("Bearer {SERVICE_KEY}");
    let with_key = |key: &str, body: &Value| -> Result<Reply> {
        app.request(
            "POST",
            "/v1/usage",
            Some(body),
            &[("authorization", auth.as_str()), ("idempotency-key", key)],
        )
    };

    let first = with_key("key-1", &event("i1", "ws-i", "agent-1", "message", "2"))?;
    let first_body = expect(&first, 200, None)?;
    amount(&first_body, "plan_credits_remaining", "0.98")?;
    let replay = with_key("key-1", &event("i1", "ws-i", "agent-1", "message", "2"))?;
    ensure!(
        replay.status == 200 && replay.body == first.body,
        "replay: {} {}",
        replay.status,
        replay.body
    );
    ensure!(
        replay.header("idempotent-replayed") == Some("true"),
        "replay header"
    );
    let conflict = with_key("key-1", &event("i2", "ws-i", "agent-1", "message", "2"))?;
    expect(&conflict, 409, Some("idempotency_conflict"))?;

    // Calls too: the replayed authorization is the first answer, a 201.
    let call_headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "call-key"),
    ];
    let request = call("ws-i", "agent-1", "ci", "outbound", US_NUMBER);
    let first = app.request("POST", "/v1/calls", Some(&request), &call_headers)?;
    expect(&first, 201, None)?;
    let replay = app.request("POST", "/v1/calls", Some(&request), &call_headers)?;
    ensure!(
        replay.status == 201 && replay.body == first.body,
        "{}",
        replay.body
    );
    let other = call("ws-i", "agent-1", "ci-2", "outbound", US_NUMBER);
    let conflict = app.request("POST", "/v1/calls", Some(&other), &call_headers)?;
    expect(&conflict, 409, Some("idempotency_conflict"))?;
    // The key is scoped to its route: the same key on /v1/usage is a fresh request.
    let fresh = app.request(
        "POST",
        "/v1/calls/ci/end",
        Some(&json!({"duration_seconds": 10})),
        &call_headers,
    )?;
    amount(
        &expect(&fresh, 200, None)?,
        "plan_credits_remaining",
        "0.88",
    )?;
    app.check_invariants()
}

#[test]
fn holds_not_extended_in_time_are_posted_at_their_reservation() -> Result<()> {
    let app = app_with_catalog("1")?;
    app.provision("ws-e")?;
    set_clock(&app, "ws-e", T0)?;
    subscribe_free(&app, "ws-e")?;
    let reply = authorize(
        &app,
        &call("ws-e", "agent-1", "silent", "outbound", US_NUMBER),
    )?;
    amount(&expect(&reply, 201, None)?, "held", "0.1")?;
    expect(&heartbeat(&app, "silent", 30)?, 200, None)?;

    // No heartbeat for longer than the 120 s hold timeout: the hold is posted as reserved (two
    // minutes after the heartbeat) and the call is over.
    set_clock(&app, "ws-e", &rfc3339(T0_SECS + 400))?;
    let body = expect(&heartbeat(&app, "silent", 400)?, 200, None)?;
    ensure!(
        body["continue"] == false && body["reason"] == "hold_expired",
        "{body}"
    );
    let body = expect(&end(&app, "silent", 400)?, 200, None)?;
    ensure!(
        body["status"] == "expired" && body["billed_seconds"] == 120,
        "{body}"
    );
    amount(&body, "charged", "0.2")?;
    amount(&body, "plan_credits_remaining", "0.8")?;
    app.check_invariants()
}

#[test]
fn cron_export_runs_the_same_job() -> Result<()> {
    let app = app_with_catalog("1")?;
    app.provision("ws-cron")?;
    set_clock(&app, "ws-cron", "2031-01-15T10:00:00Z")?;
    subscribe_free(&app, "ws-cron")?;
    spend_ai_tasks(&app, "ws-cron", "agent-1", "jan", 2)?;
    set_clock(&app, "ws-cron", "2031-02-15T00:00:00Z")?;

    // The cron trigger's export, fired once on the app's state, as the scheduler would.
    app.fire_cron("cycle-renewal", &[])?;
    // The cycle advanced: the HTTP twin finds nothing left, and the new cycle's credit is whole.
    let report = renew(&app)?;
    ensure!(report["cycles_advanced"] == 0, "{report}");
    let body = spend_ai_tasks(&app, "ws-cron", "agent-1", "feb", 1)?;
    amount(&body, "plan_credits_remaining", "0.75")?;
    app.check_invariants()
}

#[test]
fn test_clocks_are_absent_unless_enabled() -> Result<()> {
    let host = e2e::TestHost::start(
        e2e::workspace_root().join("spin.toml"),
        e2e::HostOptions::default()
            .env("SPIN_VARIABLE_SERVICE_API_KEY", SERVICE_KEY)
            .env("SPIN_VARIABLE_AUTH_JWT_SECRET", e2e::api::JWT_SECRET)
            .arg("--no-cron"),
    )?;
    let auth = format!("Bearer {SERVICE_KEY}");
    let reply = e2e::request(
        "PUT",
        &host.url("/v1/workspaces/ws-1"),
        Some(&json!({"name": "One", "email": "billing@one.example"}).to_string()),
        &[("authorization", auth.as_str())],
    )?;
    expect(&reply, 200, None)?;
    let reply = e2e::post_json(
        &host.url("/v1/test-clocks/ws-1"),
        &json!({"frozen_time": T0}).to_string(),
        &[("authorization", auth.as_str())],
    )?;
    expect(&reply, 404, Some("not_found"))?;
    Ok(())
}

/// `PUT /v1/catalog` without the settings the rules give a default for, and the currency as
/// Stripe writes it.
fn catalog_with_defaults_omitted() -> Result<Value> {
    let mut minimal = catalog("10");
    let settings = minimal["settings"]
        .as_object_mut()
        .context("the test catalog has settings")?;
    for defaulted in [
        "credit_price",
        "inbound_grace_secs",
        "auto_recharge_max_per_day",
    ] {
        settings.remove(defaulted);
    }
    settings.insert("currency".into(), json!("usd"));
    Ok(minimal)
}

#[test]
fn omitted_settings_take_their_documented_defaults() -> Result<()> {
    let app = App::start()?;
    let minimal = catalog_with_defaults_omitted()?;
    let stored = expect(
        &app.service("PUT", "/v1/catalog", Some(&minimal))?,
        200,
        None,
    )?;
    // credit_price 1 (R1), inbound_grace_secs 900 (R7), auto_recharge_max_per_day 5 (R11),
    // runway_low_days 7 (docs/notifications.md), credits_expiring_days 7 (docs/grants.md, G9).
    let settings = json!({
        "currency": "USD", "credit_price": "1", "topup_min": "10", "topup_max": "5000",
        "inbound_grace_secs": 900, "hold_timeout_secs": 120, "low_balance_threshold": "0.5",
        "runway_low_days": 7, "auto_recharge_max_per_day": 5, "credits_expiring_days": 7
    });
    ensure!(
        stored["version"] == 1 && stored["settings"] == settings,
        "{stored}"
    );
    let answered = expect(&app.service("GET", "/v1/catalog", None)?, 200, None)?;
    ensure!(
        answered["version"] == 1 && answered["settings"] == settings,
        "{answered}"
    );
    // The settings without a documented default stay required: 400, and nothing stored.
    for required in [
        "currency",
        "topup_min",
        "topup_max",
        "hold_timeout_secs",
        "low_balance_threshold",
    ] {
        let mut incomplete = minimal.clone();
        incomplete["settings"]
            .as_object_mut()
            .context("settings")?
            .remove(required);
        let reply = app.service("PUT", "/v1/catalog", Some(&incomplete))?;
        let body = expect(&reply, 400, Some("malformed_request"))?;
        ensure!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(required)),
            "{required}: {body}"
        );
    }
    let answered = expect(&app.service("GET", "/v1/catalog", None)?, 200, None)?;
    ensure!(answered["version"] == 1, "{answered}");
    // The defaults are in force: 1 credit per dollar, so a message at 0.01 costs 0.01 credits.
    subscribed(&app, "ws-d")?;
    let body = expect(
        &usage(&app, &event("e1", "ws-d", "agent-1", "message", "1"))?,
        200,
        None,
    )?;
    amount(&body, "charged", "0.01")?;
    amount(&body, "plan_credits_remaining", "9.99")?;
    app.check_invariants()
}

#[test]
fn currencies_are_taken_in_any_case() -> Result<()> {
    let app = App::start()?;
    expect(
        &app.service(
            "PUT",
            "/v1/catalog",
            Some(&catalog_with_defaults_omitted()?),
        )?,
        200,
        None,
    )?;
    for (ws, currency) in [
        ("ws-lower", "usd"),
        ("ws-mixed", "uSd"),
        ("ws-upper", "USD"),
    ] {
        let reply = app.service(
            "PUT",
            &format!("/v1/workspaces/{ws}"),
            Some(&json!({"name": "N", "email": "n@n.example", "currency": currency})),
        )?;
        let body = expect(&reply, 200, None)?;
        ensure!(body["currency"] == "USD", "{currency}: {body}");
        subscribe_free(&app, ws)?;
        let reply = app.user(
            ws,
            Role::Owner,
            "GET",
            &format!("/v1/workspaces/{ws}/billing"),
            None,
        )?;
        let summary = expect(&reply, 200, None)?;
        ensure!(summary["currency"] == "USD", "{currency}: {summary}");
    }
    let plans = expect(
        &app.user("ws-lower", Role::Owner, "GET", "/v1/plans", None)?,
        200,
        None,
    )?;
    ensure!(plans["currency"] == "USD", "{plans}");
    // Another currency, in any case, is still not supported.
    for other in ["eur", "EUR"] {
        let reply = app.service(
            "PUT",
            "/v1/workspaces/ws-eur",
            Some(&json!({"name": "N", "email": "n@n.example", "currency": other})),
        )?;
        let body = expect(&reply, 422, Some("unsupported_currency"))?;
        ensure!(body["error"]["field"] == "currency", "{body}");
    }
    app.check_invariants()
}
