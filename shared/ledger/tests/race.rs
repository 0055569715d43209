//! Many connections race on one workspace: exactly the affordable number of debits and holds
//! succeed, and the balances are exact.

mod common;

use std::sync::{Arc, Barrier};

use common::{Fixture, NOV_1, micros};
use futures::executor::block_on;
use ledger::catalog::{Direction, UsageKind};
use ledger::{LedgerError, calls, usage};

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
        let event = usage::UsageEvent {
            id: format!("t{thread}-{n}"),
            workspace_id: "w".into(),
            agent_id: format!("agent-{}", thread % 4),
            kind: UsageKind::Message,
            quantity: 1.into(),
            occurred_at: "2026-11-01T00:00:00Z".into(),
            direction: None,
            to: None,
            from: None,
        };
        block_on(usage::record(db, &catalog, &event, NOV_1))
    });
    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::InsufficientFunds)))
        .count();
    assert_eq!(
        (succeeded, refused),
        (2_000, 400),
        "other errors: {:?}",
        results
            .iter()
            .find(|r| matches!(r, Err(e) if *e != LedgerError::InsufficientFunds))
    );
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
