//! Notifications end to end (component `notifier`, docs/notifications.md): the real `spin.toml`
//! in the local host sends signed webhooks to a real receiver that verifies each one with the
//! Standard Webhooks reference library (PyPI `standardwebhooks`), through a burn-down journey
//! and an endpoint that fails, times out and comes back. Every test ends with the ledger's
//! invariants. Build first: `scripts/build-components.sh`.

use anyhow::{Context as _, Result, ensure};
use e2e::HostOptions;
use e2e::api::{App, Role, expect};
use e2e::receiver::{Received, Receiver, SECRET};
use serde_json::{Value, json};

/// A fixed start for test clocks, ahead of the wall clock (clocks only move forward).
const T0: &str = "2030-01-10T10:00:00Z";

/// The app sending to `url`, allowed to reach `receiver`, with a short timeout so a slow endpoint
/// costs the test little; on `state_dir` when given (to restart on it).
fn start(receiver: &Receiver, url: &str, state_dir: Option<&std::path::Path>) -> Result<App> {
    start_for(&receiver.origin(), url, state_dir)
}

/// [`start`] allowed to reach `origin`, whether or not anything listens there.
fn start_for(origin: &str, url: &str, state_dir: Option<&std::path::Path>) -> Result<App> {
    App::start_with(
        HostOptions {
            state_dir: state_dir.map(std::path::Path::to_path_buf),
            ..HostOptions::default()
        }
        .env("SPIN_VARIABLE_NOTIFICATIONS_URL", url)
        .env("SPIN_VARIABLE_NOTIFICATIONS_ORIGIN", origin)
        .env("SPIN_VARIABLE_NOTIFICATIONS_SECRET", SECRET)
        .env("SPIN_VARIABLE_NOTIFICATIONS_TIMEOUT_MS", "1000"),
    )
}

/// [`start`] on a fresh state, with a catalog: a free plan of 10 credits, messages at 0.01, and
/// a low-balance threshold of 2.
fn app_for(receiver: &Receiver, url: &str) -> Result<App> {
    let app = start(receiver, url, None)?;
    put_catalog(&app)?;
    Ok(app)
}

fn put_catalog(app: &App) -> Result<()> {
    let mut catalog = e2e::api::test_catalog(
        json!([{"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}]),
        json!([{"kind": "message", "price": "0.01"}]),
    );
    catalog["settings"]["low_balance_threshold"] = "2".into();
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog))?,
        200,
        "catalog",
    )?;
    Ok(())
}

/// One pass of the delivery job; its report.
fn deliver(app: &App) -> Result<Value> {
    let reply = app.service("POST", "/internal/jobs/deliver-notifications", None)?;
    expect(&reply, 200, "deliver-notifications")
}

fn set_clock(app: &App, ws: &str, frozen_time: &str) -> Result<()> {
    let reply = app.service(
        "POST",
        &format!("/v1/test-clocks/{ws}"),
        Some(&json!({"frozen_time": frozen_time})),
    )?;
    expect(&reply, 200, "test clock")?;
    Ok(())
}

fn messages(app: &App, ws: &str, agent: &str, id: &str, count: &str) -> Result<()> {
    let event = json!({"id": id, "workspace_id": ws, "agent_id": agent, "kind": "message",
                       "quantity": count});
    expect(
        &app.service("POST", "/v1/usage", Some(&event))?,
        200,
        "usage",
    )?;
    Ok(())
}

/// A provisioned workspace on the free plan (10 credits) at [`T0`].
fn free_workspace(app: &App, ws: &str) -> Result<()> {
    app.provision(ws)?;
    set_clock(app, ws, T0)?;
    let reply = app.user(
        ws,
        Role::Owner,
        "POST",
        &format!("/v1/workspaces/{ws}/subscription"),
        Some(&json!({"plan_id": "free"})),
    )?;
    expect(&reply, 200, "subscribe")?;
    Ok(())
}

/// The events the receiver accepted with a 2xx, one per id, ordered by id (the order they
/// happened in). Delivery is at least once: an id may arrive more than once (a timeout after the
/// endpoint took it), but always with the same payload.
fn delivered(receiver: &Receiver) -> Result<Vec<Value>> {
    let (accepted, rejected) = receiver.received()?;
    ensure!(rejected == 0, "{rejected} webhooks failed verification");
    let mut by_id: std::collections::BTreeMap<u64, &Received> = std::collections::BTreeMap::new();
    for received in &accepted {
        ensure!(
            received.event["id"] == received.webhook_id.as_str(),
            "the payload's id is the webhook-id: {received:?}"
        );
        if let Some(earlier) = by_id.get(&id_number(&received.webhook_id)) {
            ensure!(
                earlier.event == received.event,
                "one id, two payloads: {earlier:?} {received:?}"
            );
        }
        if received.status < 300 {
            by_id.insert(id_number(&received.webhook_id), received);
        }
    }
    Ok(by_id.into_values().map(|r| r.event.clone()).collect())
}

fn id_number(id: &str) -> u64 {
    id.trim_start_matches("evt_").parse().unwrap_or(u64::MAX)
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn a_burn_down_journey_arrives_signed_in_order_once_each() -> Result<()> {
    let receiver = Receiver::start(SECRET)?;
    let app = app_for(&receiver, &receiver.url())?;
    let ws = "ws-notify";
    free_workspace(&app, ws)?;
    let limits = json!({"overage_policy": "use_balance", "monthly_spend_limit": "5"});
    let reply = app.user(
        ws,
        Role::Owner,
        "PUT",
        &format!("/v1/workspaces/{ws}/agents/agent-1/limits"),
        Some(&limits),
    )?;
    expect(&reply, 200, "limits")?;

    messages(&app, ws, "agent-1", "m1", "400")?; // 10 -> 6: 4 spent by agent-1 (80% of 5)
    messages(&app, ws, "agent-1", "m2", "100")?; // 6 -> 5: 100% of agent-1's limit
    messages(&app, ws, "agent-2", "m3", "300")?; // 5 -> 2: the threshold
    messages(&app, ws, "agent-2", "m4", "100")?; // 2 -> 1: still below, no new event
    messages(&app, ws, "agent-2", "m5", "100")?; // 1 -> 0: depleted, inbound grace starts (900 s)
    let report = deliver(&app)?;
    ensure!(
        report["sending"] == true && report["delivered"] == 6,
        "{report}"
    );
    let events = delivered(&receiver)?;
    assert_eq!(
        types(&events),
        [
            "plan.changed",
            "agent.spend_limit.warning",
            "agent.spend_limit.reached",
            "balance.low",
            "balance.depleted",
            "grace.started"
        ],
        "{events:#?}"
    );
    for event in &events {
        assert_eq!(event["workspace_id"], ws);
        assert_eq!(event["timestamp"], T0, "workspace time: {event}");
    }
    assert_eq!(
        events[0]["data"],
        json!({"from_plan_id": null, "to_plan_id": "free"})
    );
    assert_eq!(events[1]["data"]["spent"], "4");
    assert_eq!(events[1]["data"]["percent"], 80);
    assert_eq!(events[2]["data"]["spent"], "5");
    assert_eq!(events[2]["data"]["monthly_spend_limit"], "5");
    assert_eq!(events[3]["data"]["level"], "2");
    assert_eq!(events[3]["data"]["balance"], "2");
    assert_eq!(events[4]["data"]["balance"], "0");
    assert_eq!(events[5]["data"]["grace_ends_at"], "2030-01-10T10:15:00Z");

    // Nothing new: a second pass sends nothing.
    let report = deliver(&app)?;
    ensure!(
        report["delivered"] == 0 && report["retrying"] == 0,
        "{report}"
    );

    // Past the grace period, the job's sweep ends it.
    set_clock(&app, ws, "2030-01-10T10:20:00Z")?;
    let report = deliver(&app)?;
    ensure!(
        report["graces_ended"] == 1 && report["delivered"] == 1,
        "{report}"
    );

    // A month later the free plan renews: credits are back.
    set_clock(&app, ws, "2030-02-10T10:00:00Z")?;
    expect(
        &app.service("POST", "/internal/jobs/renew-cycles", None)?,
        200,
        "renew",
    )?;
    deliver(&app)?;
    let events = delivered(&receiver)?;
    assert_eq!(
        types(&events)[6..],
        ["grace.ended", "balance.restored", "plan.renewed"],
        "{events:#?}"
    );
    assert_eq!(events[6]["data"]["reason"], "expired");
    assert_eq!(events[6]["timestamp"], "2030-01-10T10:15:00Z");
    assert_eq!(events[7]["data"]["balance"], "10");
    assert_eq!(events[8]["data"]["credits_granted"], "10");
    assert_eq!(events[8]["data"]["credits_expired"], "0");
    assert_eq!(events[8]["data"]["plan_id"], "free");

    // The operator's list shows them all delivered, newest first.
    let reply = app.service(
        "GET",
        &format!("/v1/notifications?workspace_id={ws}&limit=100"),
        None,
    )?;
    let page = expect(&reply, 200, "list")?;
    let listed = page["data"].as_array().context("data")?;
    ensure!(listed.len() == 9, "{page}");
    ensure!(
        listed
            .iter()
            .all(|n| n["status"] == "delivered" && n["attempts"] == 1),
        "{page}"
    );
    ensure!(listed[0]["event"]["type"] == "plan.renewed", "{page}");
    app.check_invariants()
}

#[test]
fn an_endpoint_that_fails_times_out_and_comes_back_gets_every_event_with_one_id() -> Result<()> {
    let receiver = Receiver::start(SECRET)?;
    let app = app_for(&receiver, &receiver.url())?;
    let ws = "ws-faults";
    free_workspace(&app, ws)?;
    messages(&app, ws, "agent-1", "m1", "900")?; // 10 -> 1: balance.low; and the pass finds
    // the runway short (1 credit at the 30-day rate): runway.low

    let pending = |app: &App| -> Result<Vec<Value>> {
        let reply = app.service(
            "GET",
            &format!("/v1/notifications?workspace_id={ws}&status=pending"),
            None,
        )?;
        Ok(expect(&reply, 200, "list")?["data"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    };
    let redeliver_all = |app: &App| -> Result<()> {
        for notification in pending(app)? {
            let id = notification["id"].as_str().context("id")?;
            expect(
                &app.service("POST", &format!("/v1/notifications/{id}/redeliver"), None)?,
                200,
                "redeliver",
            )?;
        }
        Ok(())
    };

    // 500: the three events stay pending with the status recorded; the next try waits its delay.
    receiver.answer(500, 0)?;
    let report = deliver(&app)?;
    ensure!(
        report["retrying"] == 3 && report["delivered"] == 0 && report["runways_low"] == 1,
        "{report}"
    );
    let waiting = pending(&app)?;
    ensure!(waiting.len() == 3, "{waiting:?}");
    ensure!(
        waiting
            .iter()
            .all(|n| n["last_response_status"] == 500 && n["attempts"] == 1),
        "{waiting:?}"
    );
    let report = deliver(&app)?;
    ensure!(
        report["retrying"] == 0 && report["delivered"] == 0,
        "not due yet: {report}"
    );

    // 410 and a slow endpoint (2 s against a 1 s timeout) are failures too.
    receiver.answer(410, 0)?;
    redeliver_all(&app)?;
    let report = deliver(&app)?;
    ensure!(report["retrying"] == 3, "{report}");
    receiver.answer(200, 2_000)?;
    redeliver_all(&app)?;
    let report = deliver(&app)?;
    ensure!(report["retrying"] == 3, "{report}");
    let waiting = pending(&app)?;
    ensure!(
        waiting
            .iter()
            .all(|n| n["last_error"] == "no answer within 1000 ms" && n["attempts"] == 3),
        "{waiting:?}"
    );

    // Back: every event arrives, each under the one id it always had.
    receiver.answer(200, 0)?;
    redeliver_all(&app)?;
    let report = deliver(&app)?;
    ensure!(report["delivered"] == 3, "{report}");
    let events = delivered(&receiver)?;
    assert_eq!(
        types(&events),
        ["plan.changed", "balance.low", "runway.low"]
    );
    let runway = &events[2]["data"];
    let days_left: f64 = runway["days_left"].as_str().unwrap_or("99").parse()?;
    ensure!(days_left < 7.0 && runway["threshold_days"] == 7, "{runway}");
    ensure!(
        runway["suggested_auto_recharge"]["currency"] == "USD",
        "{runway}"
    );
    let (accepted, _) = receiver.received()?;
    let ids: std::collections::BTreeSet<&str> =
        accepted.iter().map(|r| r.webhook_id.as_str()).collect();
    ensure!(
        ids.len() == 3,
        "4 attempts of 3 events under 3 ids: {ids:?}"
    );
    ensure!(accepted.len() == 12, "{accepted:?}");
    ensure!(pending(&app)?.is_empty());
    app.check_invariants()
}

#[test]
fn nothing_is_sent_while_the_endpoint_is_unset_and_bad_requests_are_refused() -> Result<()> {
    let receiver = Receiver::start(SECRET)?;
    let app = app_for(&receiver, "")?;
    let ws = "ws-quiet";
    free_workspace(&app, ws)?;
    let report = deliver(&app)?;
    ensure!(
        report["sending"] == false && report["delivered"] == 0,
        "{report}"
    );
    let (accepted, _) = receiver.received()?;
    ensure!(accepted.is_empty(), "{accepted:?}");
    let reply = app.service("GET", "/v1/notifications?status=pending", None)?;
    let page = expect(&reply, 200, "list")?;
    ensure!(
        page["data"].as_array().map(Vec::len) == Some(1),
        "kept for later: {page}"
    );

    for (path, code) in [
        ("/v1/notifications?status=sent", "malformed_request"),
        ("/v1/notifications?type=balance.lo", "malformed_request"),
        ("/v1/notifications?limit=0", "malformed_request"),
        ("/v1/notifications?cursor=abc", "malformed_request"),
        ("/v1/notifications?colour=red", "malformed_request"),
    ] {
        let reply = app.service("GET", path, None)?;
        e2e::api::expect_error(&reply, 400, code, path)?;
    }
    let reply = app.service("POST", "/v1/notifications/evt_999/redeliver", None)?;
    e2e::api::expect_error(&reply, 404, "not_found", "unknown event")?;
    let reply = app.request("GET", "/v1/notifications", None, &[])?;
    e2e::api::expect_error(&reply, 401, "unauthorized", "no key")?;
    let reply = app.request("POST", "/internal/jobs/deliver-notifications", None, &[])?;
    e2e::api::expect_error(&reply, 401, "unauthorized", "no key")?;
    app.check_invariants()
}

#[test]
fn a_host_killed_while_a_webhook_is_out_loses_nothing() -> Result<()> {
    let receiver = Receiver::start(SECRET)?;
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    let mut app = start(&receiver, &receiver.url(), Some(&state_dir))?;
    put_catalog(&app)?;
    for n in 0..3 {
        let ws = format!("ws-kill-{n}");
        free_workspace(&app, &ws)?;
        messages(&app, &ws, "agent-1", "m1", "900")?; // plan.changed, balance.low, runway.low
    }
    // The endpoint takes 800 ms (under the 1 s timeout): kill the host while it holds a request.
    receiver.answer(200, 800)?;
    let url = app.host.url("/internal/jobs/deliver-notifications");
    let job = std::thread::spawn(move || {
        e2e::request(
            "POST",
            &url,
            None,
            &[(
                "authorization",
                &format!("Bearer {}", e2e::api::SERVICE_KEY),
            )],
        )
    });
    let holding = e2e::wait_for(std::time::Duration::from_secs(20), || {
        let (accepted, _) = receiver.received().ok()?;
        (!accepted.is_empty()).then_some(())
    });
    ensure!(holding.is_some(), "no webhook reached the receiver");
    app.host.kill();
    let _ = job.join();
    app.check_invariants()?;

    // Restarted on the same files: the events the dead pass had claimed come back when their lease
    // (the 1 s timeout + 5 s) ends; the next passes send everything.
    receiver.answer(200, 0)?;
    let app = start(&receiver, &receiver.url(), Some(&state_dir))?;
    let drained = e2e::wait_for(std::time::Duration::from_secs(60), || {
        deliver(&app).ok()?;
        let reply = app
            .service("GET", "/v1/notifications?status=pending", None)
            .ok()?;
        let page = expect(&reply, 200, "list").ok()?;
        page["data"].as_array()?.is_empty().then_some(())
    });
    ensure!(
        drained.is_some(),
        "events still pending a minute after the restart"
    );
    let events = delivered(&receiver)?;
    ensure!(
        events.len() == 9,
        "every event of the 3 workspaces, once each: {events:#?}"
    );
    let reply = app.service("GET", "/v1/notifications?status=delivered&limit=100", None)?;
    let page = expect(&reply, 200, "list")?;
    ensure!(page["data"].as_array().map(Vec::len) == Some(9), "{page}");
    app.check_invariants()
}

#[test]
fn an_endpoint_that_is_down_then_up_gets_its_events() -> Result<()> {
    // A port nothing listens on, yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let origin = format!("http://127.0.0.1:{port}");
    let app = start_for(&origin, &format!("{origin}/hooks"), None)?;
    put_catalog(&app)?;
    free_workspace(&app, "ws-down")?;
    let report = deliver(&app)?;
    ensure!(
        report["retrying"] == 1 && report["delivered"] == 0,
        "{report}"
    );
    let reply = app.service("GET", "/v1/notifications?status=pending", None)?;
    let page = expect(&reply, 200, "list")?;
    let waiting = &page["data"][0];
    ensure!(
        waiting["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("not delivered"))
            && waiting["last_response_status"].is_null(),
        "{page}"
    );
    // Up: the event arrives, under its id.
    let receiver = Receiver::start_on(SECRET, port)?;
    let id = waiting["id"].as_str().context("id")?;
    let reply = app.service("POST", &format!("/v1/notifications/{id}/redeliver"), None)?;
    expect(&reply, 200, "redeliver")?;
    let report = deliver(&app)?;
    ensure!(report["delivered"] == 1, "{report}");
    let events = delivered(&receiver)?;
    ensure!(events.len() == 1 && events[0]["id"] == id, "{events:#?}");
    app.check_invariants()
}

#[test]
fn recharges_that_succeed_and_fail_at_stripe_are_told() -> Result<()> {
    use e2e::stripe::{CARD_DECLINED_ON_CHARGE, CARD_OK, Localstripe, save_card_through_app};
    let ls = Localstripe::start()?;
    let receiver = Receiver::start(SECRET)?;
    let app = App::start_with(
        HostOptions::default()
            .env("SPIN_VARIABLE_STRIPE_API_BASE", ls.base_url())
            .env("SPIN_VARIABLE_STRIPE_SECRET_KEY", e2e::stripe::SECRET_KEY)
            .env("SPIN_VARIABLE_NOTIFICATIONS_URL", receiver.url())
            .env("SPIN_VARIABLE_NOTIFICATIONS_ORIGIN", receiver.origin())
            .env("SPIN_VARIABLE_NOTIFICATIONS_SECRET", SECRET),
    )?;
    let mut catalog = e2e::api::test_catalog(
        json!([{"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}]),
        json!([{"kind": "message", "price": "0.01"}]),
    );
    catalog["settings"]["low_balance_threshold"] = "2".into();
    catalog["settings"]["runway_low_days"] = 0.into();
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog))?,
        200,
        "catalog",
    )?;
    let subscribe = |ws: &str| -> Result<()> {
        app.provision(ws)?;
        let plan = json!({"plan_id": "free"});
        expect(
            &app.owner(ws, "POST", "/subscription", Some(&plan))?,
            200,
            "subscribe",
        )?;
        Ok(())
    };
    let enable = |ws: &str| -> Result<()> {
        let settings = json!({"enabled": true, "threshold": "5", "amount": "20"});
        expect(
            &app.owner(ws, "PUT", "/auto-recharge", Some(&settings))?,
            200,
            "enable",
        )?;
        Ok(())
    };
    // One workspace empty, with a good card: auto-recharge refills it.
    subscribe("ws-good")?;
    messages(&app, "ws-good", "agent-1", "m1", "1000")?; // 10 -> 0
    save_card_through_app(&app, &ls, "ws-good", CARD_OK)?;
    enable("ws-good")?;
    // Another with a card declined when charged (its wallet, 0, is under the threshold).
    subscribe("ws-bad")?;
    save_card_through_app(&app, &ls, "ws-bad", CARD_DECLINED_ON_CHARGE)?;
    enable("ws-bad")?;
    let report = expect(
        &app.service("POST", "/internal/jobs/auto-recharge", None)?,
        200,
        "auto-recharge job",
    )?;
    ensure!(
        report["recharges_succeeded"] == 1 && report["recharges_failed"] == 1,
        "{report}"
    );

    deliver(&app)?;
    let events = delivered(&receiver)?;
    let of = |ws: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["workspace_id"] == ws)
            .cloned()
            .collect()
    };
    let good = of("ws-good");
    assert_eq!(
        types(&good),
        [
            "plan.changed",
            "balance.low",
            "balance.depleted",
            "grace.started",
            "auto_recharge.succeeded",
            "grace.ended",
            "balance.restored"
        ],
        "{good:#?}"
    );
    assert_eq!(good[4]["data"]["amount"], "20");
    assert_eq!(good[4]["data"]["credits"], "20");
    assert_eq!(good[4]["data"]["currency"], "USD");
    assert_eq!(good[5]["data"]["reason"], "balance_restored");
    assert_eq!(good[6]["data"]["balance"], "20");
    let bad = of("ws-bad");
    assert_eq!(
        types(&bad),
        [
            "plan.changed",
            "auto_recharge.failed",
            "auto_recharge.disabled"
        ],
        "{bad:#?}"
    );
    assert_eq!(bad[1]["data"]["reason"], "card_declined");
    ensure!(
        bad[2]["data"]["warning"]
            .as_str()
            .is_some_and(|w| w.contains("turned off")),
        "{bad:#?}"
    );
    app.check_invariants()
}
