//! The daily usage rollup (`usage_daily`, schema V10) that the billing summary's runway reads:
//! every statement that posts usage (a debit, a batch, a call's end or expiry) adds its charge to
//! the day it occurred on, the audit checks every day against the history both ways (and fails
//! when a row is changed by hand), and migration 10 backfills it from the history.

mod common;

use common::{DAY, Fixture, NOV_1, days};
use futures::executor::block_on;
use ledger::audit::{self, Violation};
use ledger::calls::{self, CallRequest};
use ledger::catalog::{Direction, UsageKind};
use ledger::usage::{self, UsageEvent};
use ledger::{Row, Storage, calendar};

/// 2026-11-16T12:00:00Z: when the usage is reported.
const NOW: i64 = NOV_1 + 15 * DAY + DAY / 2;

const ROLLUP_INVARIANT: &str =
    "each workspace's daily usage rollup equals its usage history, day by day";

fn at(text: &str) -> i64 {
    calendar::parse_rfc3339("at", text).expect("RFC 3339 literal")
}

fn usage_event(ws: &str, id: &str, kind: UsageKind, quantity: &str, occurred: &str) -> UsageEvent {
    UsageEvent {
        occurred_at: Some(occurred.into()),
        ..common::event(ws, "a", id, kind, quantity)
    }
}

/// `messages` messages (0.01 credits each) that occurred at `occurred`, reported at [`NOW`].
fn spend(fx: &Fixture, ws: &str, id: &str, messages: &str, occurred: &str) {
    let event = usage_event(ws, id, UsageKind::Message, messages, occurred);
    block_on(usage::record(&fx.db, &fx.catalog, &event, NOW)).expect("debit");
}

fn sql(fx: &Fixture, statement: &str) {
    block_on(fx.db.execute(statement, &[])).expect(statement);
}

fn violations(fx: &Fixture) -> Vec<Violation> {
    block_on(audit::check(&fx.db)).expect("audit runs")
}

fn rollup_violation(ws: &str, detail: &str) -> Violation {
    Violation {
        invariant: ROLLUP_INVARIANT,
        workspace_id: ws.into(),
        detail: detail.into(),
    }
}

#[test]
fn every_usage_posting_lands_in_its_day_and_the_audit_checks_each_day() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp1", "10", NOV_1);
    let call = |call_id: &str, now: i64| {
        let request = CallRequest {
            workspace_id: "w".into(),
            agent_id: "a".into(),
            call_id: call_id.into(),
            direction: Direction::Outbound,
            to: "+14155550123".into(),
            from: "+14155550100".into(),
        };
        block_on(calls::authorize(&fx.db, &fx.catalog, &request, now)).expect("authorized");
    };
    let nov_14 = at("2026-11-14T10:00:00Z");
    // A call of 0 seconds is a usage row of 0 credits: its day has a row of 0.
    call("c0", nov_14);
    block_on(calls::end(&fx.db, "c0", 0, nov_14 + 30)).expect("end");
    // One debit, received without a time (it occurred when received).
    let event = UsageEvent {
        occurred_at: None,
        ..common::event("w", "a", "e1", UsageKind::Message, "3")
    };
    block_on(usage::record(&fx.db, &fx.catalog, &event, NOW - 7_200)).expect("debit");
    // A batch: 2 messages today, 4 SMS segments yesterday (0.03), an AI task today.
    let batch = [
        usage_event("w", "b1", UsageKind::Message, "2", "2026-11-16T10:05:00Z"),
        usage_event("w", "b2", UsageKind::Sms, "4", "2026-11-15T23:00:00Z"),
        usage_event("w", "b3", UsageKind::AiTask, "1", "2026-11-16T10:06:00Z"),
    ];
    for answer in block_on(usage::record_batch(
        &fx.db,
        &fx.catalog,
        &batch,
        NOW - 3_600,
    ))
    .expect("batch")
    {
        answer.expect("debited");
    }
    // A call of 61 s (two started minutes at 0.02), and one whose hold expires (0.02).
    call("c1", NOW - 3_600);
    block_on(calls::heartbeat(&fx.db, &fx.catalog, "c1", 30, NOW - 3_570)).expect("beat");
    block_on(calls::end(&fx.db, "c1", 61, NOW - 3_539)).expect("end");
    call("c2", NOW - 1_000);
    assert_eq!(
        block_on(calls::expire_holds(&fx.db, NOW - 880, 10)).expect("sweep"),
        1
    );
    // Top-ups and grants are not usage: no row for November 1.
    assert_eq!(
        fx.usage_daily("w"),
        days(&[
            ("2026-11-14", "0"),
            ("2026-11-15", "0.03"),
            // 0.03 + 0.02 + 0.02 + 0.04 + 0.02.
            ("2026-11-16", "0.13"),
        ])
    );
    fx.assert_invariants();

    // A rollup row off by one micro-credit, a missing one, and one without usage: each is
    // reported, and nothing else.
    let nov_16 = at("2026-11-16T00:00:00Z") / DAY;
    let nov_14_day = nov_14 / DAY;
    sql(
        &fx,
        &format!("UPDATE usage_daily SET spent_micros = spent_micros + 1 WHERE day = {nov_16}"),
    );
    assert_eq!(
        violations(&fx),
        [rollup_violation(
            "w",
            &format!("day {nov_16} (2026-11-16): rollup 130001 vs history 130000")
        )]
    );
    sql(
        &fx,
        &format!("UPDATE usage_daily SET spent_micros = spent_micros - 1 WHERE day = {nov_16}"),
    );
    sql(
        &fx,
        &format!("DELETE FROM usage_daily WHERE day = {nov_14_day}"),
    );
    assert_eq!(
        violations(&fx),
        [rollup_violation(
            "w",
            &format!("day {nov_14_day} (2026-11-14): rollup missing vs history 0")
        )]
    );
    sql(
        &fx,
        &format!(
            "INSERT INTO usage_daily (workspace_id, day, spent_micros) VALUES ('w', {nov_14_day}, 0)"
        ),
    );
    fx.assert_invariants();
    let nov_13_day = nov_14_day - 1;
    sql(
        &fx,
        &format!(
            "INSERT INTO usage_daily (workspace_id, day, spent_micros) VALUES ('w', {nov_13_day}, 0)"
        ),
    );
    assert_eq!(
        violations(&fx),
        [rollup_violation(
            "w",
            &format!("day {nov_13_day} (2026-11-13): rollup 0 vs history none")
        )]
    );
}

#[test]
fn migration_10_backfills_the_rollup_from_the_history() {
    let fx = Fixture::new();
    for ws in ["w1", "w2"] {
        fx.subscribed(ws, "free", NOV_1);
        spend(&fx, ws, "old", "530", "2026-10-27T12:00:00Z");
        spend(&fx, ws, "a", "100", "2026-11-16T01:00:00Z");
        spend(&fx, ws, "b", "7", "2026-11-16T11:00:00Z");
    }
    let all = |fx: &Fixture| -> Vec<Row> {
        block_on(fx.db.query("SELECT * FROM usage_daily ORDER BY 1, 2", &[])).expect("rows")
    };
    let kept = all(&fx);
    assert_eq!(kept.len(), 4);
    assert_eq!(
        fx.usage_daily("w2"),
        days(&[("2026-10-27", "5.3"), ("2026-11-16", "1.07")])
    );
    // A database with every migration but 10 (as one migrated by a build that had the
    // notifications, V11, and not yet this one): migrating applies 10 all the same and backfills
    // the rollup from the history written meanwhile.
    for statement in [
        "DROP TRIGGER transactions_usage_daily",
        "DROP TABLE usage_daily",
        "DELETE FROM schema_migrations WHERE version = 10",
    ] {
        sql(&fx, statement);
    }
    block_on(ledger::schema::migrate(&fx.db)).expect("migrate");
    assert_eq!(all(&fx), kept);
    let recorded = block_on(fx.db.query(
        "SELECT COUNT(*) FROM schema_migrations WHERE version = 10",
        &[],
    ))
    .expect("versions");
    assert_eq!(recorded, [[ledger::SqlValue::Integer(1)]]);
    // And the trigger is back.
    spend(&fx, "w1", "c", "1", "2026-11-16T11:30:00Z");
    assert_eq!(
        fx.usage_daily("w1"),
        days(&[("2026-10-27", "5.3"), ("2026-11-16", "1.08")])
    );
    fx.assert_invariants();
}
