//! The fast paths of a heartbeat and of a call's end: one read and one guarded write each, no
//! transaction (ledger `guarded.rs`), writing exactly what their locked paths write, and nothing
//! when another connection changed what they read in between.

mod common;

use common::{DAY, Fixture, NOV_1, Watched, debit_elsewhere, dec, dump, micros};
use futures::executor::block_on;
use ledger::LedgerError;
use ledger::agents::{self, AgentLimits, OveragePolicy};
use ledger::calls::{self, CallRequest};
use ledger::catalog::{Direction, UsageKind};
use ledger::usage::{self, UsageEvent};

/// A free-plan workspace (10 plan credits) with 10 credits in its wallet.
fn funded() -> Fixture {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp1", "10", NOV_1);
    fx
}

fn outbound(ws: &str, agent: &str, call_id: &str) -> CallRequest {
    CallRequest {
        workspace_id: ws.into(),
        agent_id: agent.into(),
        call_id: call_id.into(),
        direction: Direction::Outbound,
        to: "+14155550123".into(),
        from: "+14155550100".into(),
    }
}

/// Spends every plan credit of `ws` not held by a call (its wallet is empty).
fn drain(fx: &Fixture, ws: &str, id: &str, now: i64) {
    let state = fx.state(ws);
    let left = state.plan_credits_micros - state.held_plan_micros;
    if left == 0 {
        return;
    }
    let event = UsageEvent {
        quantity: (left / micros("0.01")).into(),
        ..fx.event(ws, "a", id, UsageKind::Message, "1")
    };
    block_on(usage::record(&fx.db, &fx.catalog, &event, now)).expect("drain");
}

fn authorize(fx: &Fixture, request: &CallRequest, now: i64) {
    block_on(calls::authorize(&fx.db, &fx.catalog, request, now)).expect("authorized");
}

#[test]
fn an_uncontended_heartbeat_and_end_are_one_read_and_one_write_each() {
    let fx = funded();
    authorize(&fx, &outbound("w", "a", "c1"), NOV_1);
    let watched = Watched::new(&fx.db, vec![], || {});
    let beat = block_on(calls::heartbeat(
        &watched,
        &fx.catalog,
        "c1",
        30,
        NOV_1 + 30,
    ));
    assert_eq!(watched.statements(), ["SELECT", "INSERT"]);
    let beat = beat.expect("heartbeat");
    assert!(beat.continue_call, "{beat:?}");
    // The first minute was held at authorization; the heartbeat holds the second as well.
    let ws = fx.state("w");
    assert_eq!(ws.held_plan_micros, micros(&beat.held.to_string()));

    let watched = Watched::new(&fx.db, vec![], || {});
    let posted = block_on(calls::end(&watched, "c1", 75, NOV_1 + 75)).expect("end");
    assert_eq!(watched.statements(), ["SELECT", "INSERT"]);
    assert_eq!(posted.billed_seconds, 120);
    let ws = fx.state("w");
    assert_eq!((ws.held_plan_micros, ws.held_wallet_micros), (0, 0));
    assert_eq!(
        ws.plan_credits_micros,
        micros("10") - micros(&posted.charged.to_string())
    );
    // Ending it again answers the posted charge without writing.
    let watched = Watched::new(&fx.db, vec![], || {});
    assert_eq!(
        block_on(calls::end(&watched, "c1", 75, NOV_1 + 80)),
        Ok(posted)
    );
    assert_eq!(watched.statements(), ["SELECT", "SELECT"]);
    fx.assert_invariants();
}

#[test]
fn a_heartbeat_or_end_whose_workspace_changed_after_its_read_writes_nothing_and_decides_again() {
    let fx = funded();
    authorize(&fx, &outbound("w", "a", "c1"), NOV_1);
    let n = std::cell::Cell::new(0);
    let elsewhere = || {
        n.set(n.get() + 1);
        let event = fx.event(
            "w",
            "a",
            &format!("other-{}", n.get()),
            UsageKind::Message,
            "1",
        );
        debit_elsewhere(&fx, event);
    };
    let watched = Watched::new(&fx.db, vec![1], elsewhere);
    let beat = block_on(calls::heartbeat(
        &watched,
        &fx.catalog,
        "c1",
        30,
        NOV_1 + 30,
    ));
    assert!(beat.expect("heartbeat").continue_call);
    assert_eq!(
        watched.statements(),
        ["SELECT", "INSERT", "SELECT", "INSERT"]
    );
    drop(watched);
    let watched = Watched::new(&fx.db, vec![1], elsewhere);
    let posted = block_on(calls::end(&watched, "c1", 60, NOV_1 + 60)).expect("end");
    assert_eq!(
        watched.statements(),
        ["SELECT", "INSERT", "SELECT", "INSERT"]
    );
    // The posting was decided again after the two other debits: its balance after counts them.
    let expected_plan = micros("10") - 2 * micros("0.01") - micros(&posted.charged.to_string());
    assert_eq!(
        posted.plan_credits_remaining,
        dec(&ledger::money::to_decimal(expected_plan).to_string())
    );
    assert_eq!(fx.state("w").plan_credits_micros, expected_plan);
    fx.assert_invariants();
}

/// Heartbeats and ends with `unlocked_attempts`, through every branch: extending a hold, a
/// replayed end and a conflicting one, a heartbeat on an ended call, an extension the agent's
/// spend limit refuses, a stop agent out of plan credits, an inbound grace call whose period
/// ends, overdue holds posted before a heartbeat (its own among them), and an unknown call.
fn scenario(unlocked_attempts: u32) -> (Vec<String>, Fixture) {
    let fx = funded();
    fx.subscribed("dry", "free", NOV_1);
    fx.spend_limits("w", "capped", OveragePolicy::UseBalance, Some("0.05"));
    let stop = AgentLimits {
        overage_policy: OveragePolicy::Stop,
        monthly_spend_limit: None,
        daily_call_limit: None,
        max_concurrent_calls: None,
    };
    block_on(agents::put_limits(&fx.db, "dry", "stopper", &stop, NOV_1)).expect("limits");
    let mut answers = Vec::new();
    let beat = |call: &str, elapsed: i64, now: i64| {
        let answer = block_on(calls::heartbeat_with_attempts(
            &fx.db,
            &fx.catalog,
            call,
            elapsed,
            now,
            unlocked_attempts,
        ));
        format!("heartbeat {call}: {answer:?}")
    };
    let end = |call: &str, duration: i64, now: i64| {
        let answer = block_on(calls::end_with_attempts(
            &fx.db,
            call,
            duration,
            now,
            unlocked_attempts,
        ));
        format!("end {call}: {answer:?}")
    };
    let t = NOV_1 + 60;
    authorize(&fx, &outbound("w", "a", "c1"), t);
    answers.push(beat("c1", 30, t + 30));
    answers.push(beat("c1", 90, t + 90));
    answers.push(end("c1", 100, t + 100));
    answers.push(end("c1", 100, t + 101));
    answers.push(end("c1", 50, t + 102));
    answers.push(beat("c1", 120, t + 120));
    // A limit of 0.05 credits: the first minutes fit, the next extension does not.
    authorize(&fx, &outbound("w", "capped", "k1"), t);
    for elapsed in [30, 90, 150] {
        answers.push(beat("k1", elapsed, t + elapsed));
    }
    answers.push(end("k1", 400, t + 400));
    // A stop agent whose workspace spends its plan credits while the call runs.
    authorize(&fx, &outbound("dry", "stopper", "s1"), t);
    drain(&fx, "dry", "drain-1", t);
    answers.push(beat("s1", 30, t + 30));
    answers.push(end("s1", 200, t + 200));
    // An inbound call on the drained workspace runs on grace until the period (900 s) is over.
    drain(&fx, "dry", "drain-2", t + 200);
    let inbound = CallRequest {
        direction: Direction::Inbound,
        ..outbound("dry", "a", "g1")
    };
    authorize(&fx, &inbound, t + 300);
    for elapsed in (100..=1_100).step_by(100) {
        answers.push(beat("g1", elapsed, t + 300 + elapsed));
    }
    answers.push(end("g1", 1_110, t + 1_410));
    // Two calls left without heartbeats: a day later the first is posted before the second's
    // heartbeat, which finds its own hold expired too.
    authorize(&fx, &outbound("w", "a", "o1"), t);
    authorize(&fx, &outbound("w", "a", "o2"), t + 10);
    answers.push(beat("o2", 30, t + DAY));
    answers.push(end("o1", 30, t + DAY + 1));
    answers.push(end("nope", 30, t));
    fx.assert_invariants();
    (answers, fx)
}

#[test]
fn the_fast_heartbeat_and_end_write_exactly_what_the_locked_ones_write() {
    let (fast, fast_fx) = scenario(2);
    let (locked, locked_fx) = scenario(0);
    assert_eq!(fast, locked);
    let text = fast.join("\n");
    for expected in [
        "continue_call: true",
        "wallet_balance: -",
        "call_not_active",
        "call_already_ended",
        "limit_reached",
        LedgerError::PlanCreditsExhausted.code(),
        LedgerError::InsufficientFunds.code(),
        "hold_expired",
        "status: \"expired\"",
        "NotFound { what: \"call\" }",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    assert_eq!(dump(&fast_fx.db), dump(&locked_fx.db));
}

/// On Spin a connection cannot set SQLite's query-planner stability flag, and its statement
/// cache clears a statement's bindings after each use. A statement whose plan depended on a bound
/// value was then prepared again (parsed, planned, its triggers coded) every time: 3.5-4x the CPU
/// of an authorization (docs/performance.md, round 8). Every statement of a call's life and of a
/// debit is prepared once per connection.
#[test]
fn on_a_spin_connection_no_statement_of_a_call_or_a_debit_is_prepared_twice() {
    let fx = funded();
    let db = fx.connect_as_spin();
    for (i, t) in [(0, NOV_1 + 100), (1, NOV_1 + 200), (2, NOV_1 + 300)] {
        let id = format!("spin-{i}");
        block_on(calls::authorize(
            &db,
            &fx.catalog,
            &outbound("w", "a", &id),
            t,
        ))
        .expect("authorize");
        block_on(calls::heartbeat(&db, &fx.catalog, &id, 30, t + 30)).expect("heartbeat");
        block_on(calls::end(&db, &id, 45, t + 45)).expect("end");
        let event = fx.event("w", "a", &format!("m-{i}"), UsageKind::Message, "1");
        block_on(usage::record(&db, &fx.catalog, &event, t + 50)).expect("debit");
    }
    assert_eq!(fx.state("w").held_plan_micros, 0);
    assert_eq!(db.reprepares(), 0);
}
