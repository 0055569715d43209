//! End-to-end journeys of the auto-recharge job (component `auto-recharge`, R11, R21) against
//! localstripe: the real `spin.toml` in the local host with `stripe_api_base` pointing at a
//! fresh localstripe per test, the job run through its HTTP twin
//! `POST /internal/jobs/auto-recharge`. Every journey ends with the ledger's invariants.
//!
//! R21's reconciliation looks at payments pending for 5 minutes by the real clock: the tests
//! make a payment look that old by moving its `updated_at` back in the host's SQLite file
//! ([`App::age_pending_payments`]) instead of waiting.
//!
//! Needs localstripe (`source scripts/env.sh`), the host and the components
//! (`scripts/build-components.sh`).

use anyhow::{Context as _, Result, ensure};
use e2e::HostOptions;
use e2e::api::{App, expect, expect_error};
use e2e::faults::{Fault, StripeProxy};
use e2e::stripe::{
    CARD_DECLINED_ON_CHARGE, CARD_OK, Localstripe, SECRET_KEY, payment_intents,
    save_card_through_app,
};
use serde_json::{Value, json};

/// USD, 1 credit = 1 USD, top-ups from 10 to 5000, the free plan grants 10 credits.
fn test_catalog(max_per_day: u32) -> Value {
    let mut catalog = e2e::api::test_catalog(
        json!([
            {"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}
        ]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.05", "increment_secs": 60},
            {"kind": "message", "price": "0.01"}
        ]),
    );
    catalog["settings"]["auto_recharge_max_per_day"] = max_per_day.into();
    catalog
}

/// The app against `ls`, with the test catalog and workspace `ws` on the free plan.
fn start(ls: &Localstripe, ws: &str, max_per_day: u32) -> Result<App> {
    start_on(&ls.base_url(), ws, max_per_day)
}

/// The app against the Stripe at `stripe_base`, as [`start`].
fn start_on(stripe_base: &str, ws: &str, max_per_day: u32) -> Result<App> {
    let options = HostOptions::default()
        .env("SPIN_VARIABLE_STRIPE_API_BASE", stripe_base)
        .env("SPIN_VARIABLE_STRIPE_SECRET_KEY", SECRET_KEY);
    let app = App::start_with(options)?;
    let reply = app.service("PUT", "/v1/catalog", Some(&test_catalog(max_per_day)))?;
    expect(&reply, 200, "PUT /v1/catalog")?;
    app.provision(ws)?;
    let plan = json!({"plan_id": "free"});
    expect(
        &app.owner(ws, "POST", "/subscription", Some(&plan))?,
        200,
        "subscribe",
    )?;
    Ok(app)
}

/// A request as the workspace's owner.
fn summary(app: &App, ws: &str) -> Result<Value> {
    expect(&app.owner(ws, "GET", "/billing", None)?, 200, "billing")
}

fn wallet(app: &App, ws: &str) -> Result<String> {
    summary(app, ws)?["wallet_balance"]
        .as_str()
        .map(str::to_owned)
        .context("no wallet_balance")
}

/// The workspace's transactions of `kind`.
fn transactions(app: &App, ws: &str, kind: &str) -> Result<Vec<Value>> {
    let path = format!("/transactions?limit=100&type={kind}");
    let page = expect(&app.owner(ws, "GET", &path, None)?, 200, "transactions")?;
    Ok(page["data"].as_array().cloned().unwrap_or_default())
}

/// Saves `number` as the frontend does (the app's SetupIntent, confirmed as Stripe.js would,
/// attached as Stripe does on confirm, then refresh). Returns the Stripe customer.
fn save_card(app: &App, ls: &Localstripe, ws: &str, number: &str) -> Result<String> {
    Ok(save_card_through_app(app, ls, ws, number)?.1)
}

/// Enables auto-recharge: threshold 5, amount 20.
fn enable(app: &App, ws: &str) -> Result<()> {
    let settings = json!({"enabled": true, "threshold": "5", "amount": "20"});
    expect(
        &app.owner(ws, "PUT", "/auto-recharge", Some(&settings))?,
        200,
        "enable auto-recharge",
    )?;
    Ok(())
}

/// Burns `quantity` messages (0.01 each): plan credits first, then the wallet.
fn burn(app: &App, ws: &str, id: &str, quantity: &str) -> Result<Value> {
    let event = json!({"id": id, "workspace_id": ws, "agent_id": "agent-1", "kind": "message",
        "quantity": quantity});
    expect(&app.service("POST", "/v1/usage", Some(&event))?, 200, id)
}

/// Runs the job once; answers its report.
fn run_job(app: &App) -> Result<Value> {
    expect(
        &app.service("POST", "/internal/jobs/auto-recharge", None)?,
        200,
        "job",
    )
}

/// A top-up of the workspace as its owner sees it.
fn topup(app: &App, ws: &str, id: &str) -> Result<Value> {
    expect(
        &app.owner(ws, "GET", &format!("/topups/{id}"), None)?,
        200,
        "GET top-up",
    )
}

/// The report's counter `name`.
fn count(report: &Value, name: &str) -> i64 {
    report[name].as_i64().unwrap_or(-1)
}

#[test]
fn a_crossing_is_recharged_exactly_once() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-ar-ok";
    let app = start(&ls, ws, 5)?;
    let customer = save_card(&app, &ls, ws, CARD_OK)?;
    let topup = app.owner(ws, "POST", "/topups", Some(&json!({"amount": "10"})))?;
    expect(&topup, 201, "top-up")?;
    enable(&app, ws)?;
    // Above the threshold: nothing to do.
    let idle = run_job(&app)?;
    ensure!(count(&idle, "recharges_started") == 0, "{idle}");
    // 16 credits: the plan's 10, then 6 of the wallet's 10.
    let burned = burn(&app, ws, "m1", "1600")?;
    assert_eq!(burned["wallet_balance"], "4", "{burned}");
    let before = payment_intents(&ls, &customer)?.len();

    let report = run_job(&app)?;
    assert_eq!(report["payments_configured"], true, "{report}");
    assert_eq!(count(&report, "workspaces_checked"), 1, "{report}");
    assert_eq!(count(&report, "recharges_started"), 1, "{report}");
    assert_eq!(count(&report, "recharges_succeeded"), 1, "{report}");
    assert_eq!(count(&report, "recharges_failed"), 0, "{report}");
    assert_eq!(report["more"], false, "{report}");
    assert_eq!(wallet(&app, ws)?, "24");
    let recharges = transactions(&app, ws, "auto_recharge")?;
    assert_eq!(recharges.len(), 1, "{recharges:?}");

    // The same crossing is never charged twice.
    let again = run_job(&app)?;
    assert_eq!(count(&again, "recharges_started"), 0, "{again}");
    assert_eq!(wallet(&app, ws)?, "24");
    assert_eq!(transactions(&app, ws, "auto_recharge")?.len(), 1);
    let intents = payment_intents(&ls, &customer)?;
    assert_eq!(intents.len(), before + 1, "{intents:?}");
    let recharge = intents
        .iter()
        .find(|pi| {
            pi["metadata"]["payment_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("ar_"))
        })
        .context("no recharge PaymentIntent")?;
    assert_eq!(recharge["amount"], 2000);
    assert_eq!(recharge["currency"], "usd");
    assert_eq!(recharge["status"], "succeeded");
    assert_eq!(recharge["metadata"]["workspace_id"], ws);
    let shown = summary(&app, ws)?;
    assert!(shown["auto_recharge"].get("warning").is_none(), "{shown}");
    assert_eq!(shown["pending_topups"], json!([]), "{shown}");
    app.check_invariants()
}

#[test]
fn a_hard_decline_turns_auto_recharge_off() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-ar-declined";
    let app = start(&ls, ws, 5)?;
    let customer = save_card(&app, &ls, ws, CARD_DECLINED_ON_CHARGE)?;
    // The wallet is empty: under the threshold as soon as it is enabled.
    enable(&app, ws)?;
    let report = run_job(&app)?;
    assert_eq!(count(&report, "recharges_started"), 1, "{report}");
    assert_eq!(count(&report, "recharges_failed"), 1, "{report}");
    assert_eq!(count(&report, "recharges_succeeded"), 0, "{report}");
    let shown = summary(&app, ws)?;
    assert_eq!(shown["auto_recharge"]["enabled"], false, "{shown}");
    let warning = shown["auto_recharge"]["warning"]
        .as_str()
        .context("no warning")?;
    ensure!(
        warning.contains("turned off") && warning.contains("card_declined"),
        "warning: {warning}"
    );
    ensure!(shown["status"].is_string(), "{shown}");
    assert_eq!(shown["wallet_balance"], "0");
    assert_eq!(shown["pending_topups"], json!([]), "{shown}");
    assert!(transactions(&app, ws, "auto_recharge")?.is_empty());
    assert_eq!(payment_intents(&ls, &customer)?.len(), 1);

    // Nothing more is charged.
    let again = run_job(&app)?;
    assert_eq!(count(&again, "recharges_started"), 0, "{again}");
    assert_eq!(payment_intents(&ls, &customer)?.len(), 1);
    assert_eq!(wallet(&app, ws)?, "0");
    app.check_invariants()
}

#[test]
fn the_daily_cap_pauses_auto_recharge() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-ar-cap";
    let app = start(&ls, ws, 1)?;
    let customer = save_card(&app, &ls, ws, CARD_OK)?;
    enable(&app, ws)?;
    // First crossing (an empty wallet): one charge.
    let first = run_job(&app)?;
    assert_eq!(count(&first, "recharges_succeeded"), 1, "{first}");
    assert_eq!(wallet(&app, ws)?, "20");
    // Second crossing: the plan's 10 and 16 of the wallet's 20.
    let burned = burn(&app, ws, "m1", "2600")?;
    assert_eq!(burned["wallet_balance"], "4", "{burned}");
    let second = run_job(&app)?;
    assert_eq!(count(&second, "workspaces_checked"), 1, "{second}");
    assert_eq!(count(&second, "recharges_started"), 0, "{second}");
    let shown = summary(&app, ws)?;
    assert_eq!(shown["auto_recharge"]["enabled"], true, "{shown}");
    let warning = shown["auto_recharge"]["warning"]
        .as_str()
        .context("no warning")?;
    ensure!(warning.contains("paused"), "warning: {warning}");
    assert_eq!(shown["wallet_balance"], "4");
    assert_eq!(transactions(&app, ws, "auto_recharge")?.len(), 1);
    assert_eq!(payment_intents(&ls, &customer)?.len(), 1);
    app.check_invariants()
}

/// The workspace's events of `kind`, oldest first, as the operator lists them (their `data`).
fn events(app: &App, ws: &str, kind: &str) -> Result<Vec<Value>> {
    let path = format!("/v1/notifications?workspace_id={ws}&type={kind}&limit=100");
    let page = expect(&app.service("GET", &path, None)?, 200, "notifications")?;
    let mut data: Vec<Value> = page["data"]
        .as_array()
        .context("no data")?
        .iter()
        .map(|n| n["event"]["data"].clone())
        .collect();
    data.reverse();
    Ok(data)
}

#[test]
fn the_monthly_cap_refuses_the_recharge_that_would_pass_it() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-ar-month";
    let app = start(&ls, ws, 5)?;
    let customer = save_card(&app, &ls, ws, CARD_OK)?;
    // The workspace's clock on the 15th of next month (UTC, its time zone): the four crossings
    // fall in one month whenever the test runs.
    let month = ledger::calendar::local_month(e2e::api::now_secs(), "UTC")?;
    let mid_month = ledger::calendar::rfc3339(month.end_secs + 14 * 86_400);
    let clock = json!({"frozen_time": mid_month});
    let reply = app.service("POST", &format!("/v1/test-clocks/{ws}"), Some(&clock))?;
    expect(&reply, 200, "test clock")?;
    // A cap below one recharge could never let one through.
    let below = json!({"enabled": true, "threshold": "5", "amount": "30", "max_per_month": "20"});
    let reply = app.owner(ws, "PUT", "/auto-recharge", Some(&below))?;
    let error = expect_error(&reply, 422, "validation_error", "cap below the amount")?;
    assert_eq!(error["field"], "max_per_month", "{error}");
    assert_eq!(summary(&app, ws)?["auto_recharge"]["enabled"], false);
    let settings =
        json!({"enabled": true, "threshold": "5", "amount": "30", "max_per_month": "100"});
    let saved = expect(
        &app.owner(ws, "PUT", "/auto-recharge", Some(&settings))?,
        200,
        "cap 100, amount 30",
    )?;
    assert_eq!(saved, settings);
    assert_eq!(summary(&app, ws)?["auto_recharge"]["max_per_month"], "100");

    // Three crossings: 30, 60, 90 of 100 (the plan's 10 and 26 of the wallet, then 30 each).
    for (n, burned) in [(1, None), (2, Some("3600")), (3, Some("3000"))] {
        if let Some(quantity) = burned {
            let left = burn(&app, ws, &format!("m{n}"), quantity)?;
            assert_eq!(left["wallet_balance"], "4", "{left}");
        }
        let report = run_job(&app)?;
        assert_eq!(
            count(&report, "recharges_succeeded"),
            1,
            "crossing {n}: {report}"
        );
    }
    assert_eq!(wallet(&app, ws)?, "34");
    let alerts = events(&app, ws, "auto_recharge.cap_warning")?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (
            &alerts[0]["percent"],
            &alerts[0]["spent_this_month"],
            &alerts[0]["max_per_month"]
        ),
        (&json!(90), &json!("90"), &json!("100"))
    );

    // The fourth would make 120 > 100: refused, told once, nothing charged.
    let left = burn(&app, ws, "m4", "3000")?;
    assert_eq!(left["wallet_balance"], "4", "{left}");
    for sweep in 0..2 {
        let report = run_job(&app)?;
        assert_eq!(count(&report, "workspaces_checked"), 1, "{report}");
        assert_eq!(
            count(&report, "recharges_started"),
            0,
            "sweep {sweep}: {report}"
        );
    }
    let failed = events(&app, ws, "auto_recharge.failed")?;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["reason"], "monthly_cap_reached", "{}", failed[0]);
    assert_eq!(failed[0]["max_per_month"], "100");
    assert_eq!(failed[0]["spent_this_month"], "90");
    assert_eq!(failed[0]["amount"], "30");
    let shown = summary(&app, ws)?;
    assert_eq!(shown["auto_recharge"]["enabled"], true, "{shown}");
    let warning = shown["auto_recharge"]["warning"]
        .as_str()
        .context("no warning")?;
    ensure!(
        warning.contains("monthly_cap_reached"),
        "warning: {warning}"
    );
    assert_eq!(shown["wallet_balance"], "4");
    assert_eq!(transactions(&app, ws, "auto_recharge")?.len(), 3);
    assert_eq!(payment_intents(&ls, &customer)?.len(), 3);
    app.check_invariants()
}

#[test]
fn stripe_down_leaves_the_recharge_pending_until_reconciled() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-ar-outage";
    let app = start(&ls, ws, 5)?;
    let customer = save_card(&app, &ls, ws, CARD_OK)?;
    enable(&app, ws)?;
    ls.stop();
    let report = run_job(&app)?;
    assert_eq!(count(&report, "recharges_started"), 1, "{report}");
    assert_eq!(count(&report, "recharges_succeeded"), 0, "{report}");
    assert_eq!(count(&report, "recharges_failed"), 0, "{report}");
    assert_eq!(report["more"], true, "{report}");
    let shown = summary(&app, ws)?;
    assert_eq!(shown["wallet_balance"], "0");
    let pending = shown["pending_topups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pending.len(), 1, "{shown}");
    assert_eq!(pending[0]["kind"], "auto_recharge");
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(shown["auto_recharge"]["enabled"], true, "{shown}");

    // Stripe is back: the recharge in flight blocks another one (it is reconciled after 5
    // minutes, with the same idempotency key).
    ls.restart()?;
    let again = run_job(&app)?;
    assert_eq!(count(&again, "recharges_started"), 0, "{again}");
    assert_eq!(count(&again, "reconciled"), 0, "{again}");
    assert_eq!(wallet(&app, ws)?, "0");
    assert!(payment_intents(&ls, &customer)?.is_empty());
    assert!(transactions(&app, ws, "auto_recharge")?.is_empty());

    // Five minutes later the reconciliation charges it, with its own id as idempotency key.
    let id = pending[0]["id"].as_str().context("no id")?;
    app.age_pending_payments()?;
    let reconciled = run_job(&app)?;
    assert_eq!(count(&reconciled, "reconciled"), 1, "{reconciled}");
    assert_eq!(count(&reconciled, "recharges_started"), 0, "{reconciled}");
    assert_eq!(wallet(&app, ws)?, "20");
    assert_eq!(transactions(&app, ws, "auto_recharge")?.len(), 1);
    let intents = payment_intents(&ls, &customer)?;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["metadata"]["payment_id"], id);
    assert_eq!(summary(&app, ws)?["pending_topups"], json!([]));
    let idle = run_job(&app)?;
    assert_eq!(count(&idle, "recharges_started"), 0, "{idle}");
    assert_eq!(count(&idle, "reconciled"), 0, "{idle}");
    assert_eq!(wallet(&app, ws)?, "20");
    app.check_invariants()
}

#[test]
fn a_charge_whose_answer_is_lost_while_localstripe_restarts_is_credited_once() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let proxy = StripeProxy::start(&ls.base_url())?;
    proxy.ignore_idempotency_keys();
    let ws = "ws-ar-lost";
    let app = start_on(proxy.url(), ws, 5)?;
    let customer = save_card(&app, &ls, ws, CARD_OK)?;
    enable(&app, ws)?;
    // Stripe charges the card, then the answer never comes back; Stripe goes down and up again
    // (localstripe keeps no idempotency keys, so a blind retry would charge a second time).
    proxy.set(Fault::LoseResponse);
    let report = run_job(&app)?;
    proxy.set(Fault::None);
    assert_eq!(count(&report, "recharges_started"), 1, "{report}");
    assert_eq!(count(&report, "recharges_succeeded"), 0, "{report}");
    let charged = payment_intents(&ls, &customer)?;
    assert_eq!(charged.len(), 1, "{charged:?}");
    assert_eq!(charged[0]["status"], "succeeded");
    ls.stop();
    ls.restart()?;
    assert_eq!(wallet(&app, ws)?, "0");
    // In flight: no second charge for the same crossing.
    let again = run_job(&app)?;
    assert_eq!(count(&again, "recharges_started"), 0, "{again}");
    assert_eq!(count(&again, "reconciled"), 0, "{again}");
    // Reconciled: the PaymentIntent is found by its metadata and credited once.
    app.age_pending_payments()?;
    let reconciled = run_job(&app)?;
    assert_eq!(count(&reconciled, "reconciled"), 1, "{reconciled}");
    assert_eq!(wallet(&app, ws)?, "20");
    assert_eq!(transactions(&app, ws, "auto_recharge")?.len(), 1);
    let idle = run_job(&app)?;
    assert_eq!(count(&idle, "recharges_started"), 0, "{idle}");
    assert_eq!(wallet(&app, ws)?, "20");
    assert_eq!(payment_intents(&ls, &customer)?.len(), 1, "one card charge");
    app.check_invariants()
}

#[test]
fn reconciliation_settles_top_ups_whose_webhook_never_came() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let (carded, stripe_js) = ("ws-rc-card", "ws-rc-js");
    let app = start(&ls, carded, 5)?;
    app.provision(stripe_js)?;
    // A saved-card top-up while Stripe is down: 503, pending, never started at Stripe.
    save_card(&app, &ls, carded, CARD_OK)?;
    ls.stop();
    let reply = app.owner(carded, "POST", "/topups", Some(&json!({"amount": "25"})))?;
    let down = expect(&reply, 503, "top-up while Stripe is down")?;
    let not_started = down["error"]["topup_id"]
        .as_str()
        .context("no topup_id")?
        .to_owned();
    ls.restart()?;
    // Two Stripe.js top-ups: one the customer pays (no webhook is registered: it is lost),
    // one never paid.
    let paid = expect(
        &app.owner(stripe_js, "POST", "/topups", Some(&json!({"amount": "30"})))?,
        201,
        "top-up paid by Stripe.js",
    )?;
    let unpaid = expect(
        &app.owner(stripe_js, "POST", "/topups", Some(&json!({"amount": "40"})))?,
        201,
        "top-up never paid",
    )?;
    let secret = paid["client_secret"].as_str().context("no client_secret")?;
    let intent = secret.split("_secret").next().unwrap_or_default();
    // As Stripe.js: the card set on the PaymentIntent, then confirmed (localstripe takes no
    // payment_method on confirm).
    let card = ls.create_card(CARD_OK)?;
    let path = format!("/v1/payment_intents/{intent}");
    ls.post_form(&path, &[("payment_method", &card)])?.ok()?;
    let confirmed = ls.post_form(&format!("{path}/confirm"), &[])?.ok()?;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    assert_eq!(wallet(&app, stripe_js)?, "0");

    // Not yet 5 minutes: nothing is reconciled.
    let early = run_job(&app)?;
    assert_eq!(count(&early, "reconciled"), 0, "{early}");
    app.age_pending_payments()?;
    let report = run_job(&app)?;
    assert_eq!(count(&report, "reconciled"), 2, "{report}");
    let failed = topup(&app, carded, &not_started)?;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_code"], "payment_processing_error");
    assert_eq!(
        failed["failure_message"],
        "The payment was not started; please try again."
    );
    assert_eq!(wallet(&app, carded)?, "0");
    let paid_id = paid["id"].as_str().context("no id")?;
    assert_eq!(topup(&app, stripe_js, paid_id)?["status"], "succeeded");
    assert_eq!(wallet(&app, stripe_js)?, "30");
    let unpaid_id = unpaid["id"].as_str().context("no id")?;
    assert_eq!(topup(&app, stripe_js, unpaid_id)?["status"], "pending");

    // The unpaid one waits for its customer: looked at again, still pending.
    app.age_pending_payments()?;
    let again = run_job(&app)?;
    assert_eq!(count(&again, "reconciled"), 0, "{again}");
    assert_eq!(topup(&app, stripe_js, unpaid_id)?["status"], "pending");
    assert_eq!(wallet(&app, stripe_js)?, "30");
    app.check_invariants()
}

#[test]
fn the_cron_export_runs_the_same_pass() -> Result<()> {
    let ls = Localstripe::start()?;
    let ws = "ws-ar-cron";
    let app = start(&ls, ws, 5)?;
    let customer = save_card(&app, &ls, ws, CARD_OK)?;
    enable(&app, ws)?;
    // The cron trigger's export, fired once on the app's state, as the scheduler would.
    let stripe_base = ls.base_url();
    app.fire_cron(
        "auto-recharge",
        &[
            ("SPIN_VARIABLE_STRIPE_API_BASE", stripe_base.as_str()),
            ("SPIN_VARIABLE_STRIPE_SECRET_KEY", SECRET_KEY),
        ],
    )?;
    assert_eq!(wallet(&app, ws)?, "20");
    assert_eq!(transactions(&app, ws, "auto_recharge")?.len(), 1);
    assert_eq!(payment_intents(&ls, &customer)?.len(), 1);
    // The HTTP twin finds nothing left.
    let report = run_job(&app)?;
    assert_eq!(count(&report, "recharges_started"), 0, "{report}");
    app.check_invariants()
}

#[test]
fn without_stripe_the_job_does_nothing_and_says_so() -> Result<()> {
    let app = App::start()?;
    app.provision("ws-ar-nostripe")?;
    let reply = app.request("POST", "/internal/jobs/auto-recharge", None, &[])?;
    expect(&reply, 401, "no service key")?;
    let report = run_job(&app)?;
    assert_eq!(
        report,
        json!({"payments_configured": false, "workspaces_checked": 0, "recharges_started": 0,
            "recharges_succeeded": 0, "recharges_failed": 0, "reconciled": 0, "more": false})
    );
    let reply = app.service("GET", "/internal/jobs/auto-recharge", None)?;
    expect(&reply, 405, "GET")?;
    app.check_invariants()
}

#[test]
fn a_recharge_never_confirmed_for_a_day_is_failed_not_charged_again() -> Result<()> {
    let mut ls = Localstripe::start()?;
    let ws = "ws-ar-stale";
    let app = start(&ls, ws, 5)?;
    let customer = save_card(&app, &ls, ws, CARD_OK)?;
    enable(&app, ws)?;
    ls.stop();
    assert_eq!(count(&run_job(&app)?, "recharges_started"), 1);
    ls.restart()?;
    // A day later, beyond Stripe's idempotency window: a retry could charge twice, so the
    // recharge is settled failed (a late webhook could still credit it) and nothing is charged.
    let path = app.host.state_dir().join("sqlite_db.db");
    let db = ledger::native::NativeDb::open(&path)?;
    futures::executor::block_on(ledger::Storage::execute(
        &db,
        "UPDATE payments SET created_at = created_at - 86400, updated_at = updated_at - 86400 WHERE status = 'pending'",
        &[],
    ))?;
    drop(db);
    let report = run_job(&app)?;
    assert_eq!(count(&report, "reconciled"), 1, "{report}");
    assert!(payment_intents(&ls, &customer)?.is_empty(), "no charge");
    assert_eq!(wallet(&app, ws)?, "0");
    assert_eq!(summary(&app, ws)?["pending_topups"], json!([]));
    app.check_invariants()
}
