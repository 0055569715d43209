//! Many connections race on one workspace (or a few, in batches): exactly the affordable number
//! of debits and holds succeed, and the balances are exact.

mod common;

use std::sync::{Arc, Barrier};

use common::{Fixture, NOV_1, event, micros};
use futures::executor::block_on;
use ledger::catalog::{Direction, UsageKind};
use ledger::{LedgerError, calls, plans, usage};

const THREADS: usize = 16;

/// Runs `attempts` per thread, each thread on its own connection, all starting together.
fn race<T: Send + 'static>(
    fx: &Fixture,
    attempts: usize,
    op: impl Fn(&ledger::native::NativeDb, usize, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(THREADS));
    let op = Arc::new(op);
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let db = fx.connect();
            let barrier = Arc::clone(&barrier);
            let op = Arc::clone(&op);
            std::thread::spawn(move || {
                barrier.wait();
                (0..attempts)
                    .map(|n| op(&db, thread, n))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect()
}

#[test]
fn sixteen_connections_debit_exactly_what_is_affordable() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp1", "10", NOV_1);
    // 20 credits at 0.01 per message: 2,000 affordable of 16 x 150 = 2,400 attempts.
    let catalog = fx.catalog.clone();
    let results = race(&fx, 150, move |db, thread, n| {
        let agent = format!("agent-{}", thread % 4);
        let event = event(
            "w",
            &agent,
            &format!("t{thread}-{n}"),
            UsageKind::Message,
            "1",
        );
        block_on(usage::record(db, &catalog, &event, NOV_1))
    });
    assert_only_affordable(&results, 2_000);
    assert_eq!(fx.balances("w"), (0, 0));
    let from_wallet: i64 = results
        .iter()
        .flatten()
        .map(|r| {
            (r.from_wallet * rust_decimal::Decimal::from(1_000_000))
                .try_into()
                .unwrap_or(0i64)
        })
        .sum();
    assert_eq!(from_wallet, micros("10"));
    fx.assert_invariants();
}

/// Exactly `succeeded` of `results` went through; every other one was refused for want of funds.
fn assert_only_affordable<T: std::fmt::Debug>(
    results: &[Result<T, LedgerError>],
    succeeded: usize,
) {
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::InsufficientFunds)))
        .count();
    assert_eq!(
        (results.iter().filter(|r| r.is_ok()).count(), refused),
        (succeeded, results.len() - succeeded),
        "other errors: {:?}",
        results
            .iter()
            .find(|r| matches!(r, Err(e) if *e != LedgerError::InsufficientFunds))
    );
}

#[test]
fn sixteen_connections_debit_exactly_what_is_affordable_in_batches() {
    let fx = Fixture::new();
    for w in 0..4 {
        fx.subscribed(&format!("w{w}"), "free", NOV_1);
        fx.topup(&format!("w{w}"), &format!("tp{w}"), "10", NOV_1);
    }
    // 20 credits per workspace: 500 events of 4 messages (0.04) each. 16 x 20 batches of 8
    // events, each workspace twice per batch (two rounds of four): 2,560 attempts, 2,000 go.
    let catalog = fx.catalog.clone();
    let results = race(&fx, 20, move |db, thread, n| {
        let events: Vec<_> = (0..8)
            .map(|k| {
                let ws = format!("w{}", (k + thread) % 4);
                let agent = format!("agent-{}", k % 3);
                event(
                    &ws,
                    &agent,
                    &format!("t{thread}-{n}-{k}"),
                    UsageKind::Message,
                    "4",
                )
            })
            .collect();
        block_on(usage::record_batch(db, &catalog, &events, NOV_1)).expect("batch")
    });
    let results: Vec<_> = results.into_iter().flatten().collect();
    assert_only_affordable(&results, 2_000);
    for w in 0..4 {
        assert_eq!(fx.balances(&format!("w{w}")), (0, 0), "w{w}");
    }
    fx.assert_invariants();
}

#[test]
fn concurrent_call_authorizations_never_overspend() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.debit("w", "a", "burn", UsageKind::Message, "900", NOV_1)
        .expect("leaves 1.00 = 50 holds of 0.02");
    let catalog = fx.catalog.clone();
    let results = race(&fx, 8, move |db, thread, n| {
        let request = calls::CallRequest {
            workspace_id: "w".into(),
            agent_id: format!("agent-{thread}"),
            call_id: format!("call-{thread}-{n}"),
            direction: Direction::Outbound,
            to: "+14155550123".into(),
            from: "+14155550100".into(),
        };
        block_on(calls::authorize(db, &catalog, &request, NOV_1))
    });
    let authorized = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(authorized, 50);
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(LedgerError::InsufficientFunds)))
    );
    let ws = fx.state("w");
    assert_eq!(
        (ws.plan_credits_micros, ws.held_plan_micros),
        (micros("1"), micros("1"))
    );
    fx.assert_invariants();
}

/// A campaign on one agent: 16 connections authorize, extend, end and debit at once. The agent's
/// counters of calls in progress (kept by triggers, read instead of counting) stay exact: the
/// simultaneous-call limit admits exactly its number of calls, and every counter returns to zero.
#[test]
fn one_agents_counters_stay_exact_under_racing_calls() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp1", "100", NOV_1);
    let limits = ledger::agents::AgentLimits {
        overage_policy: ledger::agents::OveragePolicy::UseBalance,
        monthly_spend_limit: None,
        daily_call_limit: None,
        max_concurrent_calls: Some(24),
    };
    block_on(ledger::agents::put_limits(&fx.db, "w", "a", &limits, NOV_1)).expect("limits");
    let catalog = fx.catalog.clone();
    let request = |call_id: String| calls::CallRequest {
        workspace_id: "w".into(),
        agent_id: "a".into(),
        call_id,
        direction: Direction::Outbound,
        to: "+14155550123".into(),
        from: "+14155550100".into(),
    };
    // 16 x 4 attempts for 24 places: exactly 24 calls are authorized.
    let held = race(&fx, 4, {
        let catalog = catalog.clone();
        move |db, thread, n| {
            let call = request(format!("c-{thread}-{n}"));
            block_on(calls::authorize(db, &catalog, &call, NOV_1)).map(|_| call.call_id)
        }
    });
    let authorized: Vec<String> = held.iter().flatten().cloned().collect();
    assert_eq!(authorized.len(), 24, "{held:?}");
    assert!(held.iter().all(|r| r.is_ok()
        || *r
            == Err(LedgerError::LimitReached {
                limit: ledger::LimitKind::MaxConcurrentCalls
            })));
    let agent = |fx: &Fixture| {
        block_on(ledger::Storage::query(
            &fx.db,
            "SELECT active_calls, active_held_micros FROM agents WHERE agent_id = 'a'",
            &[],
        ))
        .expect("agent")
    };
    assert_eq!(
        agent(&fx),
        vec![vec![
            ledger::SqlValue::Integer(24),
            ledger::SqlValue::Integer(24 * micros("0.02"))
        ]]
    );
    fx.assert_invariants();
    // Each thread heartbeats, then ends, its share of the calls while debiting the same agent.
    let calls_by_thread = Arc::new(authorized);
    let ended = race(&fx, 3, {
        let catalog = catalog.clone();
        move |db, thread, n| {
            let mut done = Vec::new();
            for call in calls_by_thread.iter().skip(thread).step_by(THREADS) {
                match n {
                    0 => done.push(
                        block_on(calls::heartbeat(db, &catalog, call, 30, NOV_1 + 30))
                            .map(|beat| beat.continue_call),
                    ),
                    1 => done.push(block_on(calls::end(db, call, 65, NOV_1 + 65)).map(|_| true)),
                    _ => {}
                }
            }
            let event = event(
                "w",
                "a",
                &format!("m-{thread}-{n}"),
                UsageKind::Message,
                "1",
            );
            done.push(block_on(usage::record(db, &catalog, &event, NOV_1 + 70)).map(|_| true));
            done
        }
    });
    assert!(ended.iter().flatten().all(|r| *r == Ok(true)), "{ended:?}");
    assert_eq!(
        agent(&fx),
        vec![vec![
            ledger::SqlValue::Integer(0),
            ledger::SqlValue::Integer(0)
        ]]
    );
    let ws = fx.state("w");
    assert_eq!((ws.held_plan_micros, ws.held_wallet_micros), (0, 0));
    // 24 calls of two started minutes at 0.02, and 48 messages at 0.01: 0.96 + 0.48.
    assert_eq!(
        ws.plan_credits_micros + ws.wallet_micros,
        micros("110") - micros("0.96") - micros("0.48")
    );
    fx.assert_invariants();
}

/// 16 connections claim the creation of one workspace's Stripe subscription at once, each with
/// its own claim: exactly one holds it, and only that one starts the subscription. A claim left
/// stale is taken over by exactly one of the next racers too.
#[test]
fn racing_subscription_claims_leave_exactly_one_holder() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    let claims_at = |now: i64| {
        race(&fx, 4, move |db, thread, n| {
            let claim = plans::subscription_claim(now, &format!("n{thread}-{n}"));
            block_on(plans::claim_subscription(db, "w", &claim, now)).map(|()| claim)
        })
    };
    let holder = |results: &[Result<String, LedgerError>]| {
        let held: Vec<&String> = results.iter().flatten().collect();
        assert_eq!(held.len(), 1, "{results:?}");
        assert!(
            results.iter().all(|r| r.is_ok()
                || matches!(
                    r,
                    Err(LedgerError::Conflict {
                        code: "subscription_in_progress",
                        ..
                    })
                )),
            "{results:?}"
        );
        held[0].clone()
    };
    let first = holder(&claims_at(NOV_1));
    // The holder died: once its claim is stale, one of the next racers takes it over.
    let late = NOV_1 + plans::SUBSCRIPTION_CLAIM_SECS + 1;
    let second = holder(&claims_at(late));
    let start = |claim: &str, subscription_id: &str| {
        block_on(plans::start_subscription(
            &fx.db,
            &fx.catalog,
            "w",
            plans::StartedSubscription {
                plan_id: "basic",
                claim,
                subscription_id,
                first_period_paid: true,
            },
            late,
        ))
    };
    assert!(
        matches!(
            start(&first, "sub_first"),
            Err(LedgerError::Conflict {
                code: "subscription_in_progress",
                ..
            })
        ),
        "the claim taken over starts nothing"
    );
    start(&second, "sub_second").expect("the holder starts it");
    assert_eq!(
        fx.state("w").stripe_subscription_id.as_deref(),
        Some("sub_second")
    );
    fx.assert_invariants();
}
