//! The guard of every hot-path write covers what its decision reads (ledger `guarded.rs`).
//!
//! For each operation and each column of the rows it reads (the workspace, the agent, the call),
//! another connection changes that column between the operation's read and its write. The outcome
//! (the answer, and every row of every table) must be the one of making the same change BEFORE the
//! operation: a decision made on the state before the change would commit stale, and differ. A
//! column left out of the guard (the "stamp") fails this test as soon as the decision depends on
//! it. Every column of the tables must be listed below, so a new column cannot go unchecked.

mod common;

use common::{DAY, Fixture, NOV_1, Watched, dump};
use futures::executor::block_on;
use ledger::agents::{self, AgentLimits, OveragePolicy};
use ledger::calls::{self, CallRequest};
use ledger::catalog::{Direction, UsageKind};
use ledger::native::NativeDb;
use ledger::usage::{self, UsageEvent};
use ledger::{SqlValue, Storage};

/// `(table, column, SQL value it becomes)`: a change that a decision reading the column would
/// notice. `None`: the column is not part of any decision (why, in the comment).
const CHANGES: &[(&str, &str, Option<&str>)] = &[
    // The key of every read: changing it is changing which row is read.
    ("workspaces", "id", None),
    ("workspaces", "name", Some("'renamed'")),
    ("workspaces", "email", Some("'x@example.com'")),
    ("workspaces", "currency", Some("'EUR'")),
    // Another local day: the agent's day counter no longer counts.
    ("workspaces", "timezone", Some("'Pacific/Kiritimati'")),
    ("workspaces", "created_at", Some("created_at - 1")),
    ("workspaces", "plan_id", Some("NULL")),
    ("workspaces", "plan_monthly_credits_micros", Some("1")),
    ("workspaces", "plan_rollover_max_micros", Some("1")),
    ("workspaces", "plan_price_micros", Some("1")),
    ("workspaces", "cycle_anchor_day", Some("15")),
    // A new cycle: the agent's spend counts from zero.
    (
        "workspaces",
        "cycle_start_at",
        Some("cycle_start_at + 3600"),
    ),
    ("workspaces", "cycle_end_at", Some("cycle_end_at + 3600")),
    ("workspaces", "cycle_credits_granted", Some("0")),
    ("workspaces", "pending_plan_id", Some("'starter'")),
    ("workspaces", "subscription_status", Some("'past_due'")),
    ("workspaces", "stripe_customer_id", Some("'cus_x'")),
    ("workspaces", "stripe_subscription_id", Some("'sub_x'")),
    (
        "workspaces",
        "plan_credits_micros",
        Some("held_plan_micros + 3000"),
    ),
    ("workspaces", "wallet_micros", Some("5000")),
    // The balance levels already sent: read by the notification trigger at write time, never by
    // a decision (the outcome must be the one of the change made before).
    ("workspaces", "low_notified_micros", Some("0")),
    (
        "workspaces",
        "last_journal_id",
        Some("last_journal_id + 1000"),
    ),
    (
        "workspaces",
        "held_plan_micros",
        Some("plan_credits_micros - 1000"),
    ),
    ("workspaces", "held_wallet_micros", Some("wallet_micros")),
    ("workspaces", "exhausted_at", Some("1")),
    ("workspaces", "payment_method_id", Some("'pm_2'")),
    ("workspaces", "card_brand", Some("'amex'")),
    ("workspaces", "card_last4", Some("'0005'")),
    ("workspaces", "card_exp_month", Some("1")),
    ("workspaces", "card_exp_year", Some("2031")),
    ("workspaces", "auto_recharge_enabled", Some("0")),
    ("workspaces", "auto_recharge_threshold_micros", Some("1")),
    (
        "workspaces",
        "auto_recharge_threshold_credits_micros",
        Some("20000000"),
    ),
    ("workspaces", "auto_recharge_amount_micros", Some("1")),
    ("workspaces", "auto_recharge_warning", Some("'warned'")),
    ("workspaces", "auto_recharge_armed", Some("0")),
    // The monthly cap and the last of its alerts told (V18): read by the recharge claim only.
    (
        "workspaces",
        "auto_recharge_max_per_month_micros",
        Some("1"),
    ),
    (
        "workspaces",
        "auto_recharge_cap_alerted",
        Some("'2000-01:080'"),
    ),
    // Another time: the day, the grace period and the holds' expiry move.
    (
        "workspaces",
        "test_clock_at",
        Some("86400 * 30 + 1793491200"),
    ),
    ("workspaces", "active_calls", Some("active_calls + 7")),
    // A subscription being created: the claim and its time (the schema's CHECK links them).
    ("workspaces", "subscription_claim", None),
    ("workspaces", "subscription_claimed_at", None),
    // How many grants have something left: a debit reads the grants only when it is not 0.
    ("workspaces", "live_grants", Some("live_grants + 1")),
    ("agents", "workspace_id", None),
    ("agents", "agent_id", None),
    ("agents", "overage_policy", Some("'stop'")),
    ("agents", "monthly_spend_limit_micros", Some("1")),
    ("agents", "daily_call_limit", Some("0")),
    ("agents", "max_concurrent_calls", Some("0")),
    ("agents", "spend_cycle_start_at", Some("0")),
    (
        "agents",
        "cycle_spend_micros",
        Some("cycle_spend_micros + 99000000"),
    ),
    ("agents", "call_day", Some("'2000-01-01'")),
    ("agents", "day_calls", Some("day_calls + 1000")),
    ("agents", "created_at", Some("created_at - 1")),
    ("agents", "active_calls", Some("active_calls + 1000")),
    (
        "agents",
        "active_held_micros",
        Some("active_held_micros + 99000000"),
    ),
    ("calls", "call_id", None),
    // A call never changes owner (a trigger refuses it).
    ("calls", "workspace_id", None),
    ("calls", "agent_id", None),
    ("calls", "direction", Some("'inbound'")),
    ("calls", "to_number", Some("'+442071234567'")),
    ("calls", "from_number", Some("'+1'")),
    ("calls", "number_type", Some("'toll_free'")),
    ("calls", "rate_micros", Some("rate_micros * 10")),
    ("calls", "increment_secs", Some("1")),
    ("calls", "minimum_secs", Some("600")),
    // Posting it: `status` with the columns a posting sets (the schema's CHECKs need them).
    ("calls", "status", None),
    ("calls", "grace", Some("1")),
    ("calls", "reserved_secs", Some("reserved_secs + 600")),
    ("calls", "held_plan_micros", Some("held_plan_micros + 1")),
    (
        "calls",
        "held_wallet_micros",
        Some("held_wallet_micros + 1"),
    ),
    ("calls", "request_hash", Some("'other'")),
    ("calls", "started_at", Some("started_at - 60")),
    // Overdue: a heartbeat posts it first.
    ("calls", "expires_at", Some("1")),
    ("calls", "ended_at", None),
    ("calls", "duration_secs", None),
    ("calls", "charged_micros", None),
    ("calls", "unbilled_micros", None),
    ("calls", "transaction_id", None),
    // What the call holds of grants: this fixture has no grant to hold (the schema refuses a
    // hold on none). The call's columns are all in its read's stamp; the races of
    // tests/grant_spending.rs hold the guard over grants.
    ("calls", "held_grant_micros", None),
    ("calls", "held_grants", None),
];

/// Changes that take several columns at once (the schema's CHECKs link them).
const COMPOSITE_CHANGES: &[(&str, &str)] = &[
    (
        "calls",
        "status = 'expired', held_plan_micros = 0, held_wallet_micros = 0, ended_at = 1,
     charged_micros = 0",
    ),
    (
        "workspaces",
        "subscription_claim = 'claim_1793491200_x', subscription_claimed_at = 1793491200",
    ),
];

/// A free-plan workspace (10 plan credits) with 10 credits in its wallet, a saved card and
/// auto-recharge, an agent with limits, and call "c0" in progress on it.
fn fixture() -> Fixture {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp1", "10", NOV_1);
    fx.save_card("w");
    fx.enable_auto_recharge("w", "5", "20");
    let limits = AgentLimits {
        overage_policy: OveragePolicy::UseBalance,
        monthly_spend_limit: Some("15".parse().expect("decimal")),
        daily_call_limit: Some(5),
        max_concurrent_calls: Some(5),
    };
    block_on(agents::put_limits(&fx.db, "w", "a", &limits, NOV_1)).expect("limits");
    fx.call("w", "a", "c0", Direction::Outbound, "+14155550123", NOV_1)
        .expect("c0");
    // The balance guard refuses direct changes to the balances: this test makes them.
    block_on(fx.db.execute("DROP TRIGGER workspaces_balance_guard", &[])).expect("drop");
    fx
}

/// The operations under test, each on the fixture at `NOV_1 + 60`.
#[derive(Debug, Clone, Copy)]
enum Op {
    Debit,
    Authorize,
    Heartbeat,
    End,
}

fn run<S: Storage>(op: Op, db: &S, fx: &Fixture) -> String {
    let now = NOV_1 + 60;
    let answer = match op {
        Op::Debit => {
            let event = UsageEvent {
                quantity: 900.into(),
                ..fx.event("w", "a", "m1", UsageKind::Message, "1")
            };
            format!(
                "{:?}",
                block_on(usage::record(db, &fx.catalog, &event, now))
            )
        }
        Op::Authorize => {
            let request = CallRequest {
                workspace_id: "w".into(),
                agent_id: "a".into(),
                call_id: "c1".into(),
                direction: Direction::Inbound,
                to: "+14155550123".into(),
                from: "+14155550100".into(),
            };
            format!(
                "{:?}",
                block_on(calls::authorize(db, &fx.catalog, &request, now))
            )
        }
        Op::Heartbeat => format!(
            "{:?}",
            block_on(calls::heartbeat(db, &fx.catalog, "c0", 170, now))
        ),
        Op::End => format!("{:?}", block_on(calls::end(db, "c0", 170, now))),
    };
    format!("{op:?}: {answer}")
}

/// Applies `set` to `table`'s rows of the fixture; false if the schema refuses it.
fn change(db: &NativeDb, table: &str, set: &str) -> bool {
    block_on(db.execute(&format!("UPDATE {table} SET {set}"), &[])).is_ok()
}

/// The outcome of `op` with `set` made before it, and with `set` made between its read and its
/// write.
type Outcome = (String, Vec<(&'static str, Vec<Vec<SqlValue>>)>);

fn outcomes(op: Op, table: &str, set: &str) -> Option<[Outcome; 2]> {
    let before = fixture();
    if !change(&before.db, table, set) {
        return None;
    }
    let answer_before = run(op, &before.db, &before);
    let raced = fixture();
    let made = std::cell::Cell::new(false);
    let path = raced.dir.path().join("ledger.db");
    // On another connection and thread, as another instance would.
    let elsewhere = || {
        let (path, table, set) = (path.clone(), table.to_owned(), set.to_owned());
        let changed = std::thread::spawn(move || {
            let other = NativeDb::open(path).expect("open");
            change(&other, &table, &set)
        });
        made.set(changed.join().expect("other thread"));
    };
    let watched = Watched::new(&raced.db, vec![1], elsewhere);
    let answer_raced = run(op, &watched, &raced);
    assert!(
        made.get(),
        "{op:?}: {table}.{set} could not be made during the operation"
    );
    Some([
        (answer_before, dump(&before.db)),
        (answer_raced, dump(&raced.db)),
    ])
}

#[test]
fn every_column_is_listed() {
    let fx = Fixture::new();
    for table in ["workspaces", "agents", "calls"] {
        let rows = block_on(fx.db.query(
            &format!("SELECT name FROM pragma_table_info('{table}')"),
            &[],
        ))
        .expect("columns");
        for row in rows {
            let Some(SqlValue::Text(column)) = row.first() else {
                panic!("a column without a name");
            };
            assert!(
                CHANGES.iter().any(|(t, c, _)| *t == table && c == column),
                "{table}.{column} is not listed in CHANGES"
            );
        }
    }
}

#[test]
fn a_change_to_anything_read_between_the_read_and_the_write_is_never_committed_stale() {
    let mut decided_differently = 0;
    for op in [Op::Debit, Op::Authorize, Op::Heartbeat, Op::End] {
        let plain = fixture();
        let unchanged = run(op, &plain.db, &plain);
        let changes = CHANGES
            .iter()
            .filter_map(|(table, column, value)| value.map(|v| (*table, format!("{column} = {v}"))))
            .chain(
                COMPOSITE_CHANGES
                    .iter()
                    .map(|(t, set)| (*t, (*set).to_owned())),
            );
        for (table, set) in changes {
            let Some([before, raced]) = outcomes(op, table, &set) else {
                continue;
            };
            assert_eq!(before.0, raced.0, "{op:?} with {table}.{set}");
            assert_eq!(before.1, raced.1, "{op:?} with {table}.{set}: rows differ");
            if before.0 != unchanged {
                decided_differently += 1;
            }
        }
    }
    // The changes matter: many of them change the decision, so the comparison has teeth.
    assert!(decided_differently >= 35, "{decided_differently}");
}

#[test]
fn fixture_state_is_as_described() {
    let fx = fixture();
    let ws = fx.state("w");
    assert!(ws.auto_recharge_enabled);
    assert!(ws.held_plan_micros > 0);
    assert_eq!(ws.cycle_start_at, Some(NOV_1));
    assert!(ws.cycle_end_at > Some(NOV_1 + DAY));
}
