//! The fast paths of a usage debit and a call authorization: one read and one guarded write, no
//! transaction (ledger `guarded.rs`). Each must write exactly what its locked path writes, and
//! write nothing when another connection changed what it read in between.

mod common;

use std::cell::RefCell;

use common::{DAY, Fixture, NOV_1, Watched, debit_elsewhere, dec, dump, micros};
use futures::executor::block_on;
use ledger::agents::{self, AgentLimits, OveragePolicy};
use ledger::calls::{self, CallAuthorized, CallRequest};
use ledger::catalog::{self, Direction, UsageKind};
use ledger::native::NativeDb;
use ledger::usage::{self, DebitResult, UsageEvent};
use ledger::{LedgerError, LimitKind, Storage};
use rust_decimal::Decimal;

/// One message on workspace "w", agent "a" (the fixture's event builder).
fn message(fx: &Fixture, id: &str) -> UsageEvent {
    fx.event("w", "a", id, UsageKind::Message, "1")
}

/// Debits message "m1" through `db` (a watched connection).
fn debit_m1(db: &Watched<'_>, fx: &Fixture) -> Result<DebitResult, LedgerError> {
    block_on(usage::record(db, &fx.catalog, &message(fx, "m1"), NOV_1))
}

/// A free-plan workspace (10 plan credits) with 10 credits in its wallet.
fn funded() -> Fixture {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp1", "10", NOV_1);
    fx
}

#[test]
fn an_uncontended_debit_is_one_read_and_one_write() {
    let fx = funded();
    let before = fx.journal_rows();
    let watched = Watched::new(&fx.db, vec![], || {});
    let debited = debit_m1(&watched, &fx).expect("debit");
    assert_eq!(watched.statements(), ["SELECT", "INSERT"]);
    // Free plan: 10 credits granted, so the message (0.01) comes from plan credits.
    assert_eq!(debited.charged, dec("0.01"));
    assert_eq!(fx.balances("w"), (micros("9.99"), micros("10")));
    assert_eq!(fx.journal_rows(), before + 1);
    // The replay record carries the posted transaction id: a replay answers the same.
    let replay = fx.debit("w", "a", "m1", UsageKind::Message, "1", NOV_1);
    assert_eq!(replay, Ok(debited));
    fx.assert_invariants();
}

#[test]
fn a_debit_whose_workspace_changed_after_its_read_writes_nothing_and_decides_again() {
    let fx = funded();
    // Just before the fast path's write, another connection debits the same workspace.
    let watched = Watched::new(&fx.db, vec![1], || {
        debit_elsewhere(&fx, message(&fx, "other"));
    });
    let debited = debit_m1(&watched, &fx).expect("debit");
    // The first write found the workspace changed and wrote nothing; the second went through.
    assert_eq!(
        watched.statements(),
        ["SELECT", "INSERT", "SELECT", "INSERT"]
    );
    assert_eq!(debited.plan_credits_remaining, dec("9.98"));
    assert_eq!(fx.balances("w"), (micros("9.98"), micros("10")));
    fx.assert_invariants();
}

#[test]
fn a_debit_that_keeps_losing_the_race_takes_the_write_lock() {
    let fx = funded();
    let n = RefCell::new(0);
    let watched = Watched::new(&fx.db, vec![1, 3], || {
        *n.borrow_mut() += 1;
        let id = format!("other-{}", n.borrow());
        debit_elsewhere(&fx, message(&fx, &id));
    });
    let debited = debit_m1(&watched, &fx).expect("debit");
    assert_eq!(
        watched.statements(),
        [
            "SELECT", "INSERT", "SELECT", "INSERT", "BEGIN", "SELECT", "INSERT", "COMMIT"
        ]
    );
    assert_eq!(debited.plan_credits_remaining, dec("9.97"));
    assert_eq!(fx.balances("w"), (micros("9.97"), micros("10")));
    fx.assert_invariants();
}

#[test]
fn a_concurrent_replay_of_the_same_event_is_answered_not_debited_twice() {
    let fx = funded();
    let first = RefCell::new(None);
    let watched = Watched::new(&fx.db, vec![1], || {
        *first.borrow_mut() = Some(debit_elsewhere(&fx, message(&fx, "m1")));
    });
    let replayed = debit_m1(&watched, &fx).expect("replay");
    drop(watched);
    assert_eq!(Some(replayed), first.into_inner());
    assert_eq!(fx.balances("w"), (micros("9.99"), micros("10")));
    fx.assert_invariants();
}

/// One scenario through `record` with `unlocked_attempts`: plan credits, then the wallet, an
/// agent's spend limit and stop policy, refusals, replays, a call's price, and running dry.
fn scenario(unlocked_attempts: u32) -> (Vec<Result<DebitResult, LedgerError>>, Fixture) {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp1", "10", NOV_1);
    fx.spend_limits("w", "capped", OveragePolicy::UseBalance, Some("5"));
    fx.spend_limits("w", "stopper", OveragePolicy::Stop, None);
    let call = fx.outbound_call("w", "a", "call-1", "61");
    let record = |event: &UsageEvent| {
        block_on(usage::record_with_attempts(
            &fx.db,
            &fx.catalog,
            event,
            NOV_1 + 3_600,
            unlocked_attempts,
        ))
    };
    let mut results: Vec<_> = [
        fx.event("w", "a", "e1", UsageKind::Message, "1"),
        fx.event("w", "capped", "e2", UsageKind::AiTask, "200"),
        fx.event("w", "capped", "e3", UsageKind::AiTask, "100"),
        fx.event("w", "a", "e1", UsageKind::Message, "1"),
        fx.event("w", "a", "e1", UsageKind::Message, "2"),
        call,
        fx.event("w", "a", "e4", UsageKind::Stt, "200"),
        fx.event("w", "a", "e5", UsageKind::Stt, "800"),
        fx.event("w", "stopper", "e6", UsageKind::Message, "1"),
        fx.event("w", "a", "e7", UsageKind::Stt, "100000"),
    ]
    .iter()
    .map(record)
    .collect();
    // Spend exactly what is left, which starts the grace period; then nothing is affordable.
    let left_micros = fx.state("w").wallet_micros;
    let message_rate_micros = fx
        .catalog
        .unit_rate_micros(UsageKind::Message, None)
        .expect("message rate");
    assert_eq!(left_micros % message_rate_micros, 0, "{left_micros}");
    let drain = UsageEvent {
        quantity: (left_micros / message_rate_micros).into(),
        ..fx.event("w", "a", "e8", UsageKind::Message, "1")
    };
    results.push(record(&drain));
    results.push(record(&fx.event("w", "a", "e9", UsageKind::Message, "1")));
    fx.assert_invariants();
    (results, fx)
}

#[test]
fn the_fast_path_writes_exactly_what_the_locked_path_writes() {
    let (fast, fast_fx) = scenario(2);
    let (locked, locked_fx) = scenario(0);
    assert_eq!(fast, locked);
    // The scenario reaches every branch: debits, a replay, a 409, the limit, the stop policy,
    // running out of funds.
    assert!(fast.iter().filter(|r| r.is_ok()).count() >= 5, "{fast:#?}");
    for expected in [
        LedgerError::IdempotencyConflict,
        LedgerError::PlanCreditsExhausted,
        LedgerError::InsufficientFunds,
    ] {
        assert!(
            fast.contains(&Err(expected.clone())),
            "{expected:?}: {fast:#?}"
        );
    }
    assert!(
        fast.iter()
            .any(|r| matches!(r, Err(LedgerError::LimitReached { .. }))),
        "{fast:#?}"
    );
    let ws = fast_fx.state("w");
    assert_eq!((ws.plan_credits_micros, ws.wallet_micros), (0, 0));
    assert_eq!(ws.exhausted_at, Some(NOV_1 + 3_600));
    assert_eq!(dump(&fast_fx.db), dump(&locked_fx.db));
}

fn call_request(ws: &str, agent: &str, call_id: &str, direction: Direction) -> CallRequest {
    CallRequest {
        workspace_id: ws.into(),
        agent_id: agent.into(),
        call_id: call_id.into(),
        direction,
        to: "+14155550123".into(),
        from: "+14155550100".into(),
    }
}

#[test]
fn an_uncontended_authorization_is_one_read_and_one_write() {
    let fx = funded();
    let watched = Watched::new(&fx.db, vec![], || {});
    let request = call_request("w", "a", "c1", Direction::Outbound);
    let authorized =
        block_on(calls::authorize(&watched, &fx.catalog, &request, NOV_1)).expect("authorized");
    assert_eq!(watched.statements(), ["SELECT", "INSERT"]);
    let ws = fx.state("w");
    assert!(authorized.held > Decimal::ZERO, "{authorized:?}");
    assert_eq!(
        ws.held_plan_micros + ws.held_wallet_micros,
        micros(&authorized.held.to_string())
    );
    // A replay goes the transactional way and answers the call as it is.
    let watched = Watched::new(&fx.db, vec![], || {});
    let replay = block_on(calls::authorize(&watched, &fx.catalog, &request, NOV_1));
    let active = CallAuthorized {
        status: "active".into(),
        ..authorized
    };
    assert_eq!(replay, Ok(active));
    assert_eq!(watched.statements()[..2], ["SELECT", "BEGIN"]);
    fx.assert_invariants();
}

/// One scenario of authorizations with `unlocked_attempts`: a call and its replay and conflict,
/// the daily and concurrency limits, the stop policy, a hold that uses up the balance, inbound
/// grace, refusals, and overdue holds posted before a new call.
fn call_scenario(unlocked_attempts: u32) -> (Vec<Result<CallAuthorized, LedgerError>>, Fixture) {
    let fx = funded();
    for (id, plan) in [("dry", "free"), ("edge", "free")] {
        fx.subscribed(id, plan, NOV_1);
    }
    let limits = |policy, daily, concurrent| AgentLimits {
        overage_policy: policy,
        monthly_spend_limit: None,
        daily_call_limit: daily,
        max_concurrent_calls: concurrent,
    };
    for (ws, agent, limits) in [
        (
            "w",
            "daily",
            limits(OveragePolicy::UseBalance, Some(2), None),
        ),
        (
            "w",
            "single",
            limits(OveragePolicy::UseBalance, None, Some(1)),
        ),
        ("dry", "stopper", limits(OveragePolicy::Stop, None, None)),
    ] {
        block_on(agents::put_limits(&fx.db, ws, agent, &limits, NOV_1)).expect("limits");
    }
    // "dry" spends its 10 plan credits; "edge" keeps exactly one outbound hold's worth.
    let message_rate_micros = fx
        .catalog
        .unit_rate_micros(UsageKind::Message, None)
        .expect("rate");
    let to = "+14155550123";
    let rate = fx
        .catalog
        .call_rate(Direction::Outbound, to, catalog::number_type_of(to))
        .expect("call rate");
    let hold_micros = rate.charge_for_secs(rate.billed_secs(rate.increment_secs));
    for (ws, keep_micros) in [("dry", 0), ("edge", hold_micros)] {
        let spend_micros = micros("10") - keep_micros;
        assert_eq!(spend_micros % message_rate_micros, 0);
        let event = UsageEvent {
            quantity: (spend_micros / message_rate_micros).into(),
            ..fx.event(ws, "a", "drain", UsageKind::Message, "1")
        };
        block_on(usage::record(&fx.db, &fx.catalog, &event, NOV_1)).expect("drain");
    }
    let authorize = |request: &CallRequest, now| {
        block_on(calls::authorize_with_attempts(
            &fx.db,
            &fx.catalog,
            request,
            now,
            unlocked_attempts,
        ))
    };
    let at = NOV_1 + 60;
    let mut conflicting = call_request("w", "a", "c1", Direction::Outbound);
    conflicting.from = "+14155550199".into();
    let mut results: Vec<_> = [
        call_request("w", "a", "c1", Direction::Outbound),
        call_request("w", "a", "c1", Direction::Outbound),
        conflicting,
        call_request("w", "daily", "d1", Direction::Outbound),
        call_request("w", "daily", "d2", Direction::Outbound),
        call_request("w", "daily", "d3", Direction::Outbound),
        call_request("w", "single", "s1", Direction::Outbound),
        call_request("w", "single", "s2", Direction::Outbound),
        call_request("dry", "stopper", "x1", Direction::Outbound),
        call_request("dry", "a", "x2", Direction::Outbound),
        call_request("dry", "a", "x3", Direction::Inbound),
        call_request("edge", "a", "e1", Direction::Outbound),
        call_request("edge", "a", "e2", Direction::Outbound),
        call_request("nowhere", "a", "n1", Direction::Outbound),
    ]
    .iter()
    .map(|request| authorize(request, at))
    .collect();
    // A day later every hold above is overdue: they are posted before the new call.
    results.push(authorize(
        &call_request("w", "a", "late", Direction::Outbound),
        at + DAY,
    ));
    fx.assert_invariants();
    (results, fx)
}

#[test]
fn the_fast_authorization_writes_exactly_what_the_locked_one_writes() {
    let (fast, fast_fx) = call_scenario(2);
    let (locked, locked_fx) = call_scenario(0);
    assert_eq!(fast, locked);
    let grace: Vec<bool> = fast.iter().flatten().map(|a| a.grace).collect();
    assert_eq!(grace.iter().filter(|g| **g).count(), 1, "{fast:#?}");
    for expected in [
        LedgerError::IdempotencyConflict,
        LedgerError::LimitReached {
            limit: LimitKind::DailyCallLimit,
        },
        LedgerError::LimitReached {
            limit: LimitKind::MaxConcurrentCalls,
        },
        LedgerError::PlanCreditsExhausted,
        LedgerError::InsufficientFunds,
        LedgerError::NotFound { what: "workspace" },
    ] {
        assert!(
            fast.contains(&Err(expected.clone())),
            "{expected:?}: {fast:#?}"
        );
    }
    // The hold that used "edge"'s last credits started its grace period.
    assert_eq!(fast_fx.state("edge").exhausted_at, Some(NOV_1 + 60));
    let calls_of = |db: &NativeDb| {
        block_on(db.query("SELECT * FROM calls ORDER BY call_id", &[])).expect("calls")
    };
    assert_eq!(calls_of(&fast_fx.db), calls_of(&locked_fx.db));
    assert_eq!(dump(&fast_fx.db), dump(&locked_fx.db));
}

#[test]
fn an_operation_priced_with_a_replaced_catalog_writes_nothing_and_says_so() {
    let fx = funded();
    let stale = fx.catalog.clone();
    // A new version (the same document): the cached one is now stale.
    block_on(catalog::put(&fx.db, stale.doc.clone(), NOV_1)).expect("put");
    let before = dump(&fx.db);
    let call = call_request("w", "a", "c1", Direction::Outbound);
    let m1 = message(&fx, "m1");
    let invalid = UsageEvent {
        quantity: dec("-1"),
        ..message(&fx, "bad")
    };
    // The fast paths (the version is read with the state) and the locked ones.
    for attempts in [2, 0] {
        let debit = usage::record_with_attempts(&fx.db, &stale, &m1, NOV_1, attempts);
        assert_eq!(block_on(debit), Err(LedgerError::CatalogChanged));
        let hold = calls::authorize_with_attempts(&fx.db, &stale, &call, NOV_1, attempts);
        assert_eq!(block_on(hold), Err(LedgerError::CatalogChanged));
    }
    let batch = usage::record_batch(&fx.db, &stale, std::slice::from_ref(&m1), NOV_1);
    assert_eq!(block_on(batch), Err(LedgerError::CatalogChanged));
    // A refusal made before any read only stands against the stored catalog.
    let refused = usage::record(&fx.db, &stale, &invalid, NOV_1);
    assert_eq!(block_on(refused), Err(LedgerError::CatalogChanged));
    let batch = usage::record_batch(&fx.db, &stale, std::slice::from_ref(&invalid), NOV_1);
    assert_eq!(block_on(batch), Err(LedgerError::CatalogChanged));
    assert_eq!(dump(&fx.db), before);

    // With the stored catalog the same requests go through, and a debit is still one read and
    // one write: no statement of its own for the version.
    let current = block_on(catalog::load(&fx.db)).expect("load");
    let watched = Watched::new(&fx.db, vec![], || {});
    block_on(usage::record(&watched, &current, &m1, NOV_1)).expect("debit");
    assert_eq!(watched.statements(), ["SELECT", "INSERT"]);
    block_on(calls::authorize(&fx.db, &current, &call, NOV_1)).expect("hold");
    assert!(matches!(
        block_on(usage::record(&fx.db, &current, &invalid, NOV_1)),
        Err(LedgerError::Invalid { .. })
    ));
    fx.assert_invariants();
}

/// Issue 25's hot-path rule: a debit that three grants are read for, and one pays, is still one
/// read and one guarded write; a grant spent elsewhere between them is a change the guard sees.
#[test]
fn a_debit_paid_by_a_grant_is_one_read_and_one_write_and_guarded_by_the_grants() {
    use ledger::grants::{self, GrantCategory, GrantInput};
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.debit("w", "a", "plan-out", UsageKind::Message, "1000", NOV_1)
        .expect("spend the plan");
    for key in ["g1", "g2", "g3"] {
        let input = GrantInput {
            workspace_id: "w".into(),
            amount: dec("1"),
            category: GrantCategory::Promotional,
            cost_basis: None,
            priority: None,
            effective_at: None,
            expires_at: None,
            scope: None,
            name: key.into(),
            metadata: Default::default(),
        };
        block_on(grants::create(&fx.db, key, &input, NOV_1)).expect("grant");
    }
    let watched = Watched::new(&fx.db, vec![], || {});
    let debited = debit_m1(&watched, &fx).expect("debit");
    assert_eq!(watched.statements(), ["SELECT", "INSERT"]);
    assert_eq!(debited.from_grants, dec("0.01"));

    // Another connection spends from the same grants between the read and the write.
    let watched = Watched::new(&fx.db, vec![1], || {
        debit_elsewhere(&fx, message(&fx, "other"));
    });
    let again = block_on(usage::record(
        &watched,
        &fx.catalog,
        &message(&fx, "m2"),
        NOV_1,
    ))
    .expect("debit");
    assert_eq!(
        watched.statements(),
        ["SELECT", "INSERT", "SELECT", "INSERT"]
    );
    assert_eq!(again.from_grants, dec("0.01"));
    fx.assert_invariants();
}
