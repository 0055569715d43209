//! A batch's debits as one set (`usage::record_batch`, ledger `usage/set.rs`): one read and one
//! write for the whole batch, whatever its size. Every answer and every row must be what
//! one-by-one debits give. (Racing batches: `race.rs`.)

mod common;

use common::{Fixture, NOV_1, Watched, dec, dump, micros};
use futures::executor::block_on;
use ledger::agents::OveragePolicy;
use ledger::catalog::UsageKind;
use ledger::usage::{self, DebitResult, UsageEvent};
use ledger::{LedgerError, LimitKind, Storage};

/// `n` free-plan workspaces `w0`.. (10 plan credits each) with 10 credits in each wallet.
fn funded(n: usize) -> Fixture {
    let fx = Fixture::new();
    for w in 0..n {
        fx.subscribed(&format!("w{w}"), "free", NOV_1);
        fx.topup(&format!("w{w}"), &format!("tp{w}"), "10", NOV_1);
    }
    fx
}

fn batch<S: Storage>(
    db: &S,
    fx: &Fixture,
    events: &[UsageEvent],
) -> Vec<Result<DebitResult, LedgerError>> {
    block_on(usage::record_batch(db, &fx.catalog, events, NOV_1 + 3_600)).expect("batch")
}

#[test]
fn a_batch_is_one_read_and_one_write() {
    let fx = funded(8);
    let before = fx.journal_rows();
    // Two messages per workspace, interleaved.
    let events: Vec<_> = (0..16)
        .map(|n| {
            let quantity = if n < 8 { "2" } else { "3" };
            fx.event(
                &format!("w{}", n % 8),
                "a",
                &format!("m{n}"),
                UsageKind::Message,
                quantity,
            )
        })
        .collect();
    let watched = Watched::new(&fx.db, vec![], || {});
    let debited = batch(&watched, &fx, &events);
    assert_eq!(
        watched.statements(),
        ["BEGIN", "SELECT", "INSERT", "COMMIT"]
    );
    let debited: Vec<_> = debited.into_iter().map(|r| r.expect("debit")).collect();
    for (n, result) in debited.iter().enumerate() {
        let (charged, remaining) = if n < 8 {
            ("0.02", "9.98")
        } else {
            ("0.03", "9.95")
        };
        assert_eq!(
            (result.charged, result.plan_credits_remaining),
            (dec(charged), dec(remaining)),
            "event {n}"
        );
    }
    for w in 0..8 {
        assert_eq!(
            fx.balances(&format!("w{w}")),
            (micros("9.95"), micros("10"))
        );
    }
    // One history row each, numbered in the order written.
    let first = debited[0].transaction_id;
    let ids: Vec<_> = debited.iter().map(|r| r.transaction_id).collect();
    assert_eq!(ids, (first..first + 16).collect::<Vec<_>>());
    assert_eq!(fx.journal_rows(), before + 16);
    // The replay records carry those ids: a replay, alone or in a batch, answers the same and
    // writes nothing (one read).
    assert_eq!(
        fx.debit("w3", "a", "m3", UsageKind::Message, "2", NOV_1),
        Ok(debited[3].clone())
    );
    let watched = Watched::new(&fx.db, vec![], || {});
    let replayed = batch(&watched, &fx, &events);
    assert_eq!(watched.statements(), ["BEGIN", "SELECT", "COMMIT"]);
    assert_eq!(replayed, debited.into_iter().map(Ok).collect::<Vec<_>>());
    assert_eq!(fx.journal_rows(), before + 16);
    fx.assert_invariants();
}

#[test]
fn a_full_batch_on_one_workspace_is_still_one_read_and_one_write() {
    let fx = funded(1);
    // 1,000 messages of 0.02: the first 500 spend the 10 plan credits, the next 500 the wallet.
    let events: Vec<_> = (0..1_000)
        .map(|n| fx.event("w0", "a", &format!("m{n}"), UsageKind::Message, "2"))
        .collect();
    let watched = Watched::new(&fx.db, vec![], || {});
    let debited: Vec<_> = batch(&watched, &fx, &events)
        .into_iter()
        .map(|r| r.expect("debit"))
        .collect();
    assert_eq!(
        watched.statements(),
        ["BEGIN", "SELECT", "INSERT", "COMMIT"]
    );
    let split = |n: usize| {
        let r = &debited[n];
        (
            r.from_plan,
            r.from_wallet,
            r.plan_credits_remaining,
            r.wallet_balance,
        )
    };
    assert_eq!(split(0), (dec("0.02"), dec("0"), dec("9.98"), dec("10")));
    assert_eq!(split(499), (dec("0.02"), dec("0"), dec("0"), dec("10")));
    assert_eq!(split(500), (dec("0"), dec("0.02"), dec("0"), dec("9.98")));
    assert_eq!(split(999), (dec("0"), dec("0.02"), dec("0"), dec("0")));
    assert_eq!(fx.balances("w0"), (0, 0));
    // Nothing left: the grace period starts at the last debit, as one by one.
    assert!(fx.state("w0").exhausted_at.is_some());
    // The next event is refused, and writes nothing.
    let refused = batch(
        &fx.db,
        &fx,
        &[fx.event("w0", "a", "m1000", UsageKind::Message, "1")],
    );
    assert_eq!(refused, vec![Err(LedgerError::InsufficientFunds)]);
    fx.assert_invariants();
}

/// Workspaces in every state a debit can meet, and batches of events over them: debits from plan
/// and wallet, a second event of a workspace (decided on the state the first left), the same
/// event twice in a batch,
/// replays and a 409, a spend limit and a stop policy, an unknown and an unconfigured workspace,
/// an invalid event, and running dry. Each batch goes through `record_batch` or, one event at a
/// time, through `record`.
fn scenario(batched: bool) -> (Vec<Result<DebitResult, LedgerError>>, Fixture) {
    let fx = funded(3);
    fx.workspace("unconfigured");
    fx.spend_limits("w1", "capped", OveragePolicy::UseBalance, Some("5"));
    fx.spend_limits("w2", "stopper", OveragePolicy::Stop, None);
    fx.spend_limits("w1", "tight", OveragePolicy::UseBalance, Some("1"));
    let call = fx.outbound_call("w0", "a", "call-1", "61");
    let invalid = UsageEvent {
        quantity: dec("-1"),
        ..fx.event("w3", "a", "bad", UsageKind::Message, "1")
    };
    let batches = [
        vec![
            fx.event("w0", "a", "e1", UsageKind::Message, "1"),
            fx.event("w1", "capped", "e1", UsageKind::AiTask, "200"),
            fx.event("w2", "stopper", "e1", UsageKind::Stt, "500"),
            fx.event("nope", "a", "e1", UsageKind::Message, "1"),
            fx.event("unconfigured", "a", "e1", UsageKind::Message, "1"),
            fx.event("w0", "a", "e2", UsageKind::Message, "3"),
            fx.event("w1", "capped", "e1", UsageKind::AiTask, "200"),
            invalid,
        ],
        vec![
            fx.event("w0", "a", "e1", UsageKind::Message, "1"),
            fx.event("w1", "capped", "e1", UsageKind::AiTask, "201"),
            fx.event("w2", "stopper", "e2", UsageKind::Stt, "1200"),
            call,
            fx.event("w1", "capped", "e2", UsageKind::AiTask, "100"),
        ],
        vec![
            fx.event("w2", "stopper", "e3", UsageKind::Message, "1"),
            fx.event("w1", "a", "e3", UsageKind::Stt, "100000"),
            fx.event("w0", "a", "e3", UsageKind::Message, "1992"),
            fx.event("w0", "a", "e4", UsageKind::Message, "1"),
            fx.event("w2", "stopper", "e4", UsageKind::Message, "1"),
        ],
        // An agent whose spend reaches its limit of 1 credit inside the batch (0.3 each): the
        // fourth is refused, the fifth (0.1) still fits.
        vec![
            fx.event("w1", "tight", "t1", UsageKind::AiTask, "15"),
            fx.event("w1", "tight", "t2", UsageKind::AiTask, "15"),
            fx.event("w1", "tight", "t3", UsageKind::AiTask, "15"),
            fx.event("w1", "tight", "t4", UsageKind::AiTask, "15"),
            fx.event("w1", "tight", "t5", UsageKind::AiTask, "5"),
        ],
    ];
    let mut results = Vec::new();
    for events in &batches {
        if batched {
            results.extend(batch(&fx.db, &fx, events));
        } else {
            for event in events {
                results.push(block_on(usage::record(
                    &fx.db,
                    &fx.catalog,
                    event,
                    NOV_1 + 3_600,
                )));
            }
        }
    }
    fx.assert_invariants();
    (results, fx)
}

#[test]
fn a_batch_answers_and_writes_exactly_what_one_by_one_debits_do() {
    let (batched, batched_fx) = scenario(true);
    let (alone, alone_fx) = scenario(false);
    assert_eq!(batched, alone);
    // The last batch: an agent's spend reaches its limit inside the batch.
    let tight: Vec<_> = batched[batched.len() - 5..]
        .iter()
        .map(|r| r.as_ref().map(|d| d.charged).map_err(Clone::clone))
        .collect();
    let limit = LedgerError::LimitReached {
        limit: LimitKind::MonthlySpendLimit,
    };
    assert_eq!(
        tight,
        [
            Ok(dec("0.3")),
            Ok(dec("0.3")),
            Ok(dec("0.3")),
            Err(limit),
            Ok(dec("0.1"))
        ]
    );
    // The scenario reaches every branch.
    assert!(
        batched.iter().filter(|r| r.is_ok()).count() >= 7,
        "{batched:#?}"
    );
    for expected in [
        LedgerError::IdempotencyConflict,
        LedgerError::PlanCreditsExhausted,
        LedgerError::InsufficientFunds,
        LedgerError::BillingNotConfigured,
        LedgerError::NotFound { what: "workspace" },
    ] {
        assert!(
            batched.contains(&Err(expected.clone())),
            "{expected:?}: {batched:#?}"
        );
    }
    assert!(
        batched
            .iter()
            .any(|r| matches!(r, Err(LedgerError::Invalid { .. }))),
        "{batched:#?}"
    );
    assert!(
        batched
            .iter()
            .any(|r| matches!(r, Err(LedgerError::LimitReached { .. }))),
        "{batched:#?}"
    );
    let dry = batched_fx.state("w0");
    assert_eq!((dry.plan_credits_micros, dry.wallet_micros), (0, 0));
    assert_eq!(dry.exhausted_at, Some(NOV_1 + 3_600), "w0 ran dry");
    assert_eq!(dump(&batched_fx.db), dump(&alone_fx.db));
}
