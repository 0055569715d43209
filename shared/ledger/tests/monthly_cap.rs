//! The auto-recharge monthly cap (docs/billing-rules.md, R11's monthly cap; docs/grants.md,
//! G10): money per calendar month of the workspace's time zone, on its clock (a test clock
//! here), with the refusal and the 80/90/100% alerts told once each, on a real SQLite file.

mod common;

use common::{DAY, Fixture, NOV_1, dec, micros};
use futures::executor::block_on;
use ledger::catalog::UsageKind;
use ledger::notifications::{self, NotificationFilter};
use ledger::payments::{self, AutoRechargeSettings, Payment};
use ledger::usage::UsageEvent;
use ledger::workspace::{self, WorkspaceInput};
use ledger::{LedgerError, SqlValue, Storage, usage, views};
use serde_json::{Value, json};

/// 2026-11-10T12:00:00Z.
const NOV_10_NOON: i64 = NOV_1 + 9 * DAY + 12 * 3600;
/// 2026-12-01T05:00:00Z: midnight in New York (UTC-5 in December), where its December begins.
const DEC_1_NEW_YORK: i64 = NOV_1 + 30 * DAY + 5 * 3600;

/// A workspace in New York on the free plan (10 plan credits) with a saved card, its clock
/// frozen at `at`.
fn new_york(fx: &Fixture, ws: &str, at: i64) {
    let input = WorkspaceInput {
        name: "New York".into(),
        email: "ny@example.com".into(),
        currency: None,
        timezone: Some("America/New_York".into()),
    };
    block_on(workspace::upsert(&fx.db, &fx.catalog, ws, &input, NOV_1)).expect("workspace");
    block_on(ledger::plans::change_plan(
        &fx.db,
        &fx.catalog,
        ws,
        "free",
        true,
        NOV_1,
    ))
    .expect("free plan");
    fx.save_card(ws);
    clock(fx, ws, at);
}

fn clock(fx: &Fixture, ws: &str, at: i64) {
    block_on(workspace::set_test_clock(&fx.db, ws, at, NOV_1)).expect("test clock");
}

fn settings(threshold: &str, amount: &str, max_per_month: Option<&str>) -> AutoRechargeSettings {
    AutoRechargeSettings {
        enabled: true,
        threshold: dec(threshold),
        amount: dec(amount),
        max_per_month: max_per_month.map(dec),
    }
}

fn set(fx: &Fixture, ws: &str, wanted: &AutoRechargeSettings) -> Result<(), LedgerError> {
    block_on(payments::set_auto_recharge(&fx.db, &fx.catalog, ws, wanted)).map(|_| ())
}

/// One sweep's decision for `ws` (the real time is irrelevant: the test clock rules).
fn claim(fx: &Fixture, ws: &str) -> Option<Payment> {
    block_on(payments::claim_auto_recharge(
        &fx.db,
        &fx.catalog,
        ws,
        NOV_1,
    ))
    .expect("claim")
}

/// Claims a recharge and reports its success.
fn recharge(fx: &Fixture, ws: &str) -> Payment {
    let payment = claim(fx, ws).expect("a recharge");
    block_on(common::report_success(
        &fx.db,
        &payment.id,
        &payments::PaidWith::default(),
        NOV_1,
    ))
    .expect("credited")
}

/// Spends `credits` in messages (0.01 each) at the workspace's time.
fn spend(fx: &Fixture, ws: &str, id: &str, credits: &str) {
    let messages = dec(credits) * dec("100");
    let event = UsageEvent {
        occurred_at: None,
        ..common::event(ws, "agent", id, UsageKind::Message, &messages.to_string())
    };
    block_on(usage::record(&fx.db, &fx.catalog, &event, NOV_1)).expect("debit");
}

/// The workspace's events of the auto-recharge family, oldest first, as (type, data).
fn recharge_events(fx: &Fixture, ws: &str) -> Vec<(String, Value)> {
    let filter = NotificationFilter {
        workspace_id: Some(ws.into()),
        limit: Some(100),
        ..NotificationFilter::default()
    };
    let page = block_on(notifications::list(&fx.db, &fx.catalog, &filter)).expect("list");
    let mut events: Vec<_> = page
        .data
        .into_iter()
        .filter(|n| n.kind.starts_with("auto_recharge."))
        .map(|n| (n.kind, n.event.data))
        .collect();
    events.reverse();
    events
}

/// The workspace's automatic charges: (id, status, money in micro-units, created at).
fn charges(fx: &Fixture, ws: &str) -> Vec<(String, String, i64, i64)> {
    let rows = block_on(fx.db.query(
        "SELECT id, status, amount_micros, created_at FROM payments
         WHERE workspace_id = ?1 AND kind = 'auto_recharge' ORDER BY created_at, id",
        &[SqlValue::Text(ws.into())],
    ))
    .expect("payments");
    rows.iter()
        .map(|row| match row.as_slice() {
            [
                SqlValue::Text(id),
                SqlValue::Text(status),
                SqlValue::Integer(amount),
                SqlValue::Integer(at),
            ] => (id.clone(), status.clone(), *amount, *at),
            other => panic!("unexpected payment row {other:?}"),
        })
        .collect()
}

fn cap_warning(percent: i64, spent: &str, month: &str) -> (String, Value) {
    (
        "auto_recharge.cap_warning".into(),
        json!({
            "percent": percent, "spent_this_month": spent, "max_per_month": "100",
            "currency": "USD", "month": month,
            "message": format!("Automatic recharges this month reached {spent} USD, {percent}% of the monthly cap of 100 USD."),
        }),
    )
}

const REFUSAL: &str = "Auto-recharge paused until next month: another charge of 30 USD would pass \
                       the monthly cap of 100 USD (monthly_cap_reached).";

#[test]
fn r11_a_cap_of_100_lets_three_recharges_of_30_through_and_refuses_the_fourth_until_december() {
    let fx = Fixture::new();
    new_york(&fx, "w", NOV_10_NOON);
    set(&fx, "w", &settings("5", "30", Some("100"))).expect("cap 100, amount 30");
    let summary = block_on(views::summary(&fx.db, &fx.catalog, "w", NOV_1)).expect("summary");
    assert_eq!(summary.auto_recharge.max_per_month, Some(dec("100")));

    // The wallet is empty: 30 (30% of the cap, no alert).
    recharge(&fx, "w");
    assert_eq!(fx.balances("w"), (micros("10"), micros("30")));
    // The plan's 10 and 26 of the wallet: 4 < 5, a second 30 (60%).
    spend(&fx, "w", "m1", "36");
    recharge(&fx, "w");
    assert_eq!(fx.balances("w"), (0, micros("34")));
    assert!(
        recharge_events(&fx, "w")
            .iter()
            .all(|(kind, _)| kind == "auto_recharge.succeeded")
    );
    // A third: 90 of 100, past 80% and 90% at once: one alert, of the higher level.
    spend(&fx, "w", "m2", "30");
    recharge(&fx, "w");
    assert_eq!(fx.balances("w"), (0, micros("34")));
    let told = recharge_events(&fx, "w");
    assert_eq!(told.len(), 4, "{told:#?}");
    assert_eq!(told[2], cap_warning(90, "90", "2026-11"));
    assert_eq!(told[3].0, "auto_recharge.succeeded");

    // The fourth would make 120 > 100: nothing is charged, the page says why, the platform hears
    // it once.
    spend(&fx, "w", "m3", "30");
    assert_eq!(claim(&fx, "w"), None);
    assert_eq!(fx.balances("w"), (0, micros("4")));
    assert_eq!(charges(&fx, "w").len(), 3);
    assert_eq!(
        fx.state("w").auto_recharge_warning.as_deref(),
        Some(REFUSAL)
    );
    let told = recharge_events(&fx, "w");
    assert_eq!(told.len(), 5, "{told:#?}");
    assert_eq!(
        told[4],
        (
            "auto_recharge.failed".into(),
            json!({
                "payment_id": null, "amount": "30", "currency": "USD", "credits": "30",
                "reason": "monthly_cap_reached", "message": REFUSAL,
                "max_per_month": "100", "spent_this_month": "90",
            })
        )
    );
    // Later sweeps this month stay silent; at 03:00 UTC on December 1 it is still November 30
    // in New York.
    assert_eq!(claim(&fx, "w"), None);
    clock(&fx, "w", DEC_1_NEW_YORK - 2 * 3600);
    assert_eq!(claim(&fx, "w"), None);
    assert_eq!(recharge_events(&fx, "w").len(), 5);
    assert_eq!(charges(&fx, "w").len(), 3);

    // December in New York: it charges again, and its success clears the warning.
    clock(&fx, "w", DEC_1_NEW_YORK);
    let december = recharge(&fx, "w");
    assert_eq!(december.created_at_secs, DEC_1_NEW_YORK);
    assert_eq!(fx.balances("w"), (0, micros("34")));
    assert_eq!(fx.state("w").auto_recharge_warning, None);
    // December's levels are December's: 90 of 100 is told again.
    spend(&fx, "w", "m4", "30");
    recharge(&fx, "w");
    spend(&fx, "w", "m5", "30");
    recharge(&fx, "w");
    let told = recharge_events(&fx, "w");
    assert_eq!(told.len(), 9, "{told:#?}");
    assert_eq!(told[7], cap_warning(90, "90", "2026-12"));
    assert_eq!(
        charges(&fx, "w")
            .iter()
            .map(|(_, status, amount, _)| (status.as_str(), *amount))
            .collect::<Vec<_>>(),
        [("succeeded", micros("30")); 6]
    );
    fx.assert_invariants();
}

#[test]
fn r11_each_level_is_told_once_a_month_and_a_failed_charge_does_not_count() {
    let mut fx = Fixture::new();
    fx.catalog.doc.settings.auto_recharge_max_per_day = 50;
    fx.catalog = ledger::catalog::Catalog::validate(0, fx.catalog.doc.clone()).expect("catalog");
    new_york(&fx, "w", NOV_10_NOON);
    set(&fx, "w", &settings("5", "10", Some("100"))).expect("cap 100, amount 10");
    // A declined charge (soft: retried at the next crossing) charged nothing: it does not count.
    let declined = claim(&fx, "w").expect("a recharge");
    block_on(common::report_failure(
        &fx.db,
        &declined.id,
        "card_declined",
        "declined",
        false,
        NOV_1,
    ))
    .expect("failed");
    // Ten recharges of 10 (the first crossing again, then nine more): 80, 90 and 100 are each
    // told when reached, once.
    for n in 1..=10 {
        recharge(&fx, "w");
        spend(&fx, "w", &format!("m{n}"), if n == 1 { "16" } else { "10" });
    }
    let levels: Vec<_> = recharge_events(&fx, "w")
        .into_iter()
        .filter(|(kind, _)| kind == "auto_recharge.cap_warning")
        .map(|(_, data)| (data["percent"].clone(), data["spent_this_month"].clone()))
        .collect();
    assert_eq!(
        levels,
        [
            (json!(80), json!("80")),
            (json!(90), json!("90")),
            (json!(100), json!("100")),
        ]
    );
    assert_eq!(fx.balances("w"), (0, micros("4")));
    // The eleventh is refused; 100 reached exactly is no refusal of its own.
    assert_eq!(claim(&fx, "w"), None);
    let refusals: Vec<_> = recharge_events(&fx, "w")
        .into_iter()
        .filter(|(kind, data)| kind == "auto_recharge.failed" && data["reason"] != "card_declined")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert_eq!(refusals[0].1["spent_this_month"], "100");

    // A higher cap lets it charge again (the saved settings clear the warning) and re-arms the
    // alerts: 110 of 200 is no level; 160 is 80% of the new cap.
    set(&fx, "w", &settings("5", "10", Some("200"))).expect("cap 200");
    recharge(&fx, "w");
    let before = recharge_events(&fx, "w").len();
    for n in 11..=15 {
        spend(&fx, "w", &format!("m{n}"), "10");
        recharge(&fx, "w");
    }
    let told: Vec<_> = recharge_events(&fx, "w")
        .into_iter()
        .skip(before)
        .filter(|(kind, _)| kind == "auto_recharge.cap_warning")
        .map(|(_, data)| (data["percent"].clone(), data["max_per_month"].clone()))
        .collect();
    assert_eq!(told, [(json!(80), json!("200"))]);
    // Without a cap nothing is counted or told.
    set(&fx, "w", &settings("5", "10", None)).expect("no cap");
    let before = recharge_events(&fx, "w").len();
    for n in 16..=18 {
        spend(&fx, "w", &format!("m{n}"), "10");
        recharge(&fx, "w");
    }
    let after: Vec<_> = recharge_events(&fx, "w").into_iter().skip(before).collect();
    assert!(
        after
            .iter()
            .all(|(kind, _)| kind == "auto_recharge.succeeded"),
        "{after:#?}"
    );
    assert_eq!(after.len(), 3);
    fx.assert_invariants();
}

#[test]
fn r11_a_cap_below_one_recharge_or_not_above_zero_is_refused_and_changes_nothing() {
    let fx = Fixture::new();
    new_york(&fx, "w", NOV_10_NOON);
    set(&fx, "w", &settings("5", "30", Some("100"))).expect("cap 100");
    let before = fx.state("w");
    let outbox = recharge_events(&fx, "w");
    for (cap, code) in [
        ("0", "validation_error"),
        ("-100", "validation_error"),
        ("29.99", "validation_error"),
        ("100.0000001", "invalid_amount"),
    ] {
        match set(&fx, "w", &settings("10", "30", Some(cap))) {
            Err(LedgerError::Invalid {
                code: got, field, ..
            }) => {
                assert_eq!((got, field), (code, Some("max_per_month")), "{cap}");
            }
            other => panic!("{cap}: {other:?}"),
        }
        assert_eq!(fx.state("w"), before, "{cap}");
    }
    // The amount is checked first, as before.
    match set(&fx, "w", &settings("5", "5000.01", Some("6000"))) {
        Err(LedgerError::AmountAboveMaximum { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.state("w"), before);
    assert_eq!(recharge_events(&fx, "w"), outbox);
    // A cap of exactly one recharge is allowed; null takes it away.
    set(&fx, "w", &settings("5", "30", Some("30"))).expect("cap = amount");
    assert_eq!(
        fx.state("w").auto_recharge_max_per_month_money_micros,
        Some(micros("30"))
    );
    set(&fx, "w", &settings("5", "30", None)).expect("no cap");
    assert_eq!(fx.state("w").auto_recharge_max_per_month_money_micros, None);
    // Settings read from JSON: the cap may be absent or null.
    for body in [
        json!({"enabled": true, "threshold": "5", "amount": "30"}),
        json!({"enabled": true, "threshold": "5", "amount": "30", "max_per_month": null}),
    ] {
        let read: AutoRechargeSettings = serde_json::from_value(body).expect("settings");
        assert_eq!(read.max_per_month, None);
    }
    fx.assert_invariants();
}
