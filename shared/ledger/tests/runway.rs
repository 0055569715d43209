//! The runway of the billing summary (docs/billing-rules.md, "Runway") on real SQLite: exact
//! answers for each status, from usage debited through the ledger. (The daily rollup it reads:
//! `usage_daily.rs`.)
//!
//! Unless a test says otherwise, the workspaces were created on 2026-09-22 and subscribed on
//! November 1 (cycles end on the 1st), and the summary is read on 2026-11-16 at 12:00 UTC: the
//! 7-day window (November 10-16) covers 6.5 days, the 30-day one (October 18-November 16) 29.5.

mod common;

use common::{DAY, Fixture, NOV_1, days, dec, micros};
use futures::executor::block_on;
use ledger::catalog::{Catalog, Plan, UsageKind};
use ledger::runway::{Runway, RunwayStatus, SuggestedAutoRecharge};
use ledger::usage::{self, UsageEvent};
use ledger::workspace::{self, WorkspaceInput};
use ledger::{calendar, plans, views};
use serde_json::json;

/// When the workspaces of these tests were created (2026-09-22).
const CREATED: i64 = NOV_1 - 40 * DAY;
/// 2026-11-16T12:00:00Z: when the summaries are read and the usage is reported.
const NOW: i64 = NOV_1 + 15 * DAY + DAY / 2;

fn at(text: &str) -> i64 {
    calendar::parse_rfc3339("at", text).expect("RFC 3339 literal")
}

/// Creates `id` at `created` (not through [`Fixture::workspace`], which creates at NOV_1).
fn create(fx: &Fixture, id: &str, created: i64) {
    let input = WorkspaceInput {
        name: format!("Workspace {id}"),
        email: format!("{id}@example.com"),
        currency: None,
        timezone: None,
    };
    block_on(workspace::upsert(&fx.db, &fx.catalog, id, &input, created)).expect("workspace");
}

/// A workspace created on [`CREATED`], on `plan` (first period paid) since NOV_1.
fn subscribed(fx: &Fixture, id: &str, plan: &str) {
    create(fx, id, CREATED);
    block_on(plans::change_plan(
        &fx.db,
        &fx.catalog,
        id,
        plan,
        true,
        NOV_1,
    ))
    .expect("subscribe");
}

fn usage_event(ws: &str, id: &str, kind: UsageKind, quantity: &str, occurred: &str) -> UsageEvent {
    UsageEvent {
        occurred_at: Some(occurred.into()),
        ..common::event(ws, "a", id, kind, quantity)
    }
}

/// `messages` messages (0.01 credits each) that occurred at `occurred`, reported at `now`.
fn spend(fx: &Fixture, ws: &str, id: &str, messages: &str, occurred: &str, now: i64) {
    let event = usage_event(ws, id, UsageKind::Message, messages, occurred);
    block_on(usage::record(&fx.db, &fx.catalog, &event, now)).expect("debit");
}

fn runway(fx: &Fixture, ws: &str, now: i64) -> Runway {
    block_on(views::summary(&fx.db, &fx.catalog, ws, now))
        .expect("summary")
        .runway
}

fn suggestion(threshold: &str, amount: &str) -> Option<SuggestedAutoRecharge> {
    Some(SuggestedAutoRecharge {
        threshold: dec(threshold),
        amount: dec(amount),
    })
}

/// The default catalog and a paid plan of 30 credits a month that rolls 5 over.
fn with_team_plan(fx: &mut Fixture) {
    let mut doc = fx.catalog.doc.clone();
    doc.plans.push(Plan {
        id: "team".into(),
        name: "Team".into(),
        price: dec("20"),
        monthly_credits: dec("30"),
        rollover_max_credits: Some(dec("5")),
        stripe_price_id: Some("price_team".into()),
    });
    fx.catalog = Catalog::validate(0, doc).expect("catalog");
}

#[test]
fn a_free_plan_forecast_crosses_the_cycle_end_with_its_renewal() {
    let fx = Fixture::new();
    subscribed(&fx, "w", "free");
    fx.topup("w", "tp1", "20", NOV_1);
    // 5.3 credits 20 days ago (30-day window only), then 6.5 in the 7-day window: 1 a day over
    // 6.5 days, 11.8 over 29.5 = 0.4 a day. The plan's 10 go first: 0 left, 18.2 in the wallet.
    spend(&fx, "w", "old", "530", "2026-10-27T12:00:00Z", NOW);
    spend(&fx, "w", "first", "325", "2026-11-10T00:00:00Z", NOW);
    spend(&fx, "w", "last", "325", "2026-11-16T11:00:00Z", NOW);
    assert_eq!(fx.balances("w"), (0, micros("18.2")));
    // At 1 a day: 14.5 days to December 1 from the wallet (3.7 left), then December's 10 plan
    // credits and the 3.7: 13.7 more days, to December 14, 16:48.
    let summary = block_on(views::summary(&fx.db, &fx.catalog, "w", NOW)).expect("summary");
    assert_eq!(
        serde_json::to_value(&summary).expect("json")["runway"],
        json!({
            "status": "forecast",
            "history_days": "29.5",
            "average_daily_spend_7d": "1",
            "average_daily_spend_30d": "0.4",
            "days_left": "28.2",
            "runs_out_at": "2026-12-14T16:48:00Z",
            "suggested_auto_recharge": {"threshold": "14", "amount": "14"}
        })
    );
    fx.assert_invariants();
}

#[test]
fn a_paid_plan_renews_only_in_good_standing_and_keeps_its_rollover() {
    let mut fx = Fixture::new();
    with_team_plan(&mut fx);
    for ws in ["paid", "late", "down"] {
        subscribed(&fx, ws, "team");
        fx.topup(ws, &format!("tp-{ws}"), "20", NOV_1);
        // 2.65 20 days ago and 3.25 this week: 0.5 a day over 7 days, 0.2 over 30.
        spend(&fx, ws, "old", "265", "2026-10-27T12:00:00Z", NOW);
        spend(&fx, ws, "new", "325", "2026-11-12T12:00:00Z", NOW);
        assert_eq!(fx.balances(ws), (micros("24.1"), micros("20")));
    }
    block_on(plans::record_invoice_failed(&fx.db, "late")).expect("past due");
    block_on(plans::record_invoice_failed(&fx.db, "down")).expect("past due");
    let scheduled = block_on(plans::change_plan(
        &fx.db,
        &fx.catalog,
        "down",
        "free",
        true,
        NOW,
    ))
    .expect("downgrade");
    assert_eq!(scheduled.action, "downgrade_scheduled");

    // In good standing: 30 a month renewed against 15.5 spent, with 5 rolled over.
    let paid = runway(&fx, "paid", NOW);
    assert_eq!(
        paid,
        Runway {
            status: RunwayStatus::BeyondHorizon,
            history_days: dec("29.5"),
            average_daily_spend_7d: Some(dec("0.5")),
            average_daily_spend_30d: Some(dec("0.2")),
            days_left: None,
            runs_out_at: None,
            // 0.5 x 14 = 7; the amount at least the 10 a top-up needs.
            suggested_auto_recharge: suggestion("7", "10"),
        }
    );
    // Past due, no grant: of 24.1 - 7.25 = 16.85 plan credits at December 1, the 5 of the
    // rollover stay; with the wallet's 20, 25 credits last 50 days more.
    let late = runway(&fx, "late", NOW);
    assert_eq!(late.status, RunwayStatus::Forecast);
    assert_eq!(late.days_left, Some(dec("64.5")));
    assert_eq!(late.runs_out_at.as_deref(), Some("2027-01-20T00:00:00Z"));
    // Downgraded to free at December 1: Team's rollover of 5, then 10 a month that the free
    // plan grants whatever the standing, plan first then the wallet, to April 30.
    let down = runway(&fx, "down", NOW);
    assert_eq!(down.status, RunwayStatus::Forecast);
    assert_eq!(down.days_left, Some(dec("164.5")));
    assert_eq!(down.runs_out_at.as_deref(), Some("2027-04-30T00:00:00Z"));

    // The renewal does what the forecast assumed: spend the 7.25 of the next 14.5 days, renew.
    let dec_1 = at("2026-12-01T00:00:00Z");
    for ws in ["late", "down"] {
        spend(
            &fx,
            ws,
            "until-renewal",
            "725",
            "2026-11-30T12:00:00Z",
            dec_1 - 60,
        );
        block_on(plans::renew_workspace(&fx.db, &fx.catalog, ws, dec_1)).expect("renew");
    }
    assert_eq!(fx.balances("late"), (micros("5"), micros("20")));
    assert_eq!(fx.balances("down"), (micros("15"), micros("20")));
    assert_eq!(fx.state("down").plan_id.as_deref(), Some("free"));
    fx.assert_invariants();
}

#[test]
fn spend_counts_in_the_windows_of_its_utc_day() {
    let fx = Fixture::new();
    subscribed(&fx, "w", "free");
    // The last second before the 30-day window, its first second, the last second before the
    // 7-day window and its first second.
    spend(&fx, "w", "before", "100", "2026-10-17T23:59:59Z", NOW);
    spend(&fx, "w", "first-30", "225", "2026-10-18T00:00:00Z", NOW);
    spend(&fx, "w", "last-30", "300", "2026-11-09T23:59:59Z", NOW);
    spend(&fx, "w", "first-7", "65", "2026-11-10T00:00:00Z", NOW);
    assert_eq!(
        fx.usage_daily("w"),
        days(&[
            ("2026-10-17", "1"),
            ("2026-10-18", "2.25"),
            ("2026-11-09", "3"),
            ("2026-11-10", "0.65"),
        ])
    );
    // 0.65 over 6.5 days, 5.9 over 29.5. At 0.1 a day the 3.1 plan credits left, then 10 each
    // month, last beyond the year; the suggestion takes the higher rate: 0.2 x 14 = 2.8.
    assert_eq!(
        runway(&fx, "w", NOW),
        Runway {
            status: RunwayStatus::BeyondHorizon,
            history_days: dec("29.5"),
            average_daily_spend_7d: Some(dec("0.1")),
            average_daily_spend_30d: Some(dec("0.2")),
            days_left: None,
            runs_out_at: None,
            suggested_auto_recharge: suggestion("3", "10"),
        }
    );

    // Spend of 20 days ago only: in the 30-day average, not in the 7-day one.
    subscribed(&fx, "quiet", "free");
    spend(&fx, "quiet", "old", "590", "2026-10-27T12:00:00Z", NOW);
    let quiet = runway(&fx, "quiet", NOW);
    assert_eq!(
        (
            quiet.status,
            quiet.average_daily_spend_7d,
            quiet.average_daily_spend_30d,
            quiet.days_left,
            quiet.suggested_auto_recharge,
        ),
        (
            RunwayStatus::BeyondHorizon,
            Some(dec("0")),
            Some(dec("0.2")),
            None,
            suggestion("3", "10"),
        )
    );

    // Nothing in the window (the day before it does not count): no usage, no suggestion.
    subscribed(&fx, "idle", "free");
    spend(&fx, "idle", "before", "100", "2026-10-17T12:00:00Z", NOW);
    assert_eq!(
        runway(&fx, "idle", NOW),
        Runway {
            status: RunwayStatus::NoUsage,
            history_days: dec("29.5"),
            average_daily_spend_7d: Some(dec("0")),
            average_daily_spend_30d: Some(dec("0")),
            days_left: None,
            runs_out_at: None,
            suggested_auto_recharge: None,
        }
    );
    fx.assert_invariants();
}

#[test]
fn a_workspace_younger_than_a_day_gets_no_forecast() {
    let fx = Fixture::new();
    let created = at("2026-11-01T12:00:00Z");
    create(&fx, "w", created);
    block_on(plans::change_plan(
        &fx.db,
        &fx.catalog,
        "w",
        "free",
        true,
        created,
    ))
    .expect("subscribe");
    spend(
        &fx,
        "w",
        "e1",
        "100",
        "2026-11-01T13:00:00Z",
        created + 3_600,
    );
    let summary =
        block_on(views::summary(&fx.db, &fx.catalog, "w", created + DAY - 1)).expect("summary");
    assert_eq!(
        serde_json::to_value(&summary).expect("json")["runway"],
        json!({
            "status": "insufficient_history",
            "history_days": "0.9",
            "average_daily_spend_7d": null,
            "average_daily_spend_30d": null,
            "days_left": null,
            "runs_out_at": null,
            "suggested_auto_recharge": null
        })
    );
    // A day old: 1 credit in one day, in both windows; the 9 plan credits left last 9 days.
    assert_eq!(
        runway(&fx, "w", created + DAY),
        Runway {
            status: RunwayStatus::Forecast,
            history_days: dec("1.0"),
            average_daily_spend_7d: Some(dec("1")),
            average_daily_spend_30d: Some(dec("1")),
            days_left: Some(dec("9.0")),
            runs_out_at: Some("2026-11-11T12:00:00Z".into()),
            suggested_auto_recharge: suggestion("14", "14"),
        }
    );
    fx.assert_invariants();
}

#[test]
fn the_suggestion_is_money_rounded_up_and_its_amount_within_the_top_up_bounds() {
    let mut fx = Fixture::new();
    let mut doc = fx.catalog.doc.clone();
    doc.settings.credit_price = dec("1.5");
    doc.settings.topup_max = dec("25");
    fx.catalog = Catalog::validate(0, doc).expect("catalog");
    subscribed(&fx, "w", "free");
    // 8.45 credits this week: 1.3 a day (8.45 over 29.5 days: 0.286441, rounded up).
    spend(&fx, "w", "e1", "845", "2026-11-12T12:00:00Z", NOW);
    let runway = runway(&fx, "w", NOW);
    assert_eq!(runway.average_daily_spend_7d, Some(dec("1.3")));
    assert_eq!(runway.average_daily_spend_30d, Some(dec("0.286441")));
    // 1.55 plan credits left at 1.3 a day: 103,015.38 s, rounded down.
    assert_eq!(runway.runs_out_at.as_deref(), Some("2026-11-17T16:36:55Z"));
    assert_eq!(runway.days_left, Some(dec("1.1")));
    // 14 days x 1.3 = 18.2 credits, worth 27.3 at 1.5: threshold 28, amount the maximum 25.
    assert_eq!(runway.suggested_auto_recharge, suggestion("28", "25"));
    fx.assert_invariants();
}
