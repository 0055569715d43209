//! A batch's debits in rounds (`usage::record_batch`, ledger `usage/rounds.rs`): each round reads
//! and writes the next event of every workspace in one statement each. Every answer and every row
//! must be what one-by-one debits give. (Racing batches: `race.rs`.)

mod common;

use common::{Fixture, NOV_1, Watched, dec, dump, micros};
use futures::executor::block_on;
use ledger::agents::OveragePolicy;
use ledger::catalog::UsageKind;
use ledger::usage::{self, DebitResult, UsageEvent};
use ledger::{LedgerError, Storage};

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
fn a_batch_is_one_read_and_one_write_per_round() {
    let fx = funded(8);
    let before = fx.journal_rows();
    // Two messages per workspace, interleaved: two rounds of eight.
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
        ["BEGIN", "SELECT", "INSERT", "SELECT", "INSERT", "COMMIT"]
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
    // writes nothing (two rounds of reads).
    assert_eq!(
        fx.debit("w3", "a", "m3", UsageKind::Message, "2", NOV_1),
        Ok(debited[3].clone())
    );
    let watched = Watched::new(&fx.db, vec![], || {});
    let replayed = batch(&watched, &fx, &events);
    assert_eq!(
        watched.statements(),
        ["BEGIN", "SELECT", "SELECT", "COMMIT"]
    );
    assert_eq!(replayed, debited.into_iter().map(Ok).collect::<Vec<_>>());
    assert_eq!(fx.journal_rows(), before + 16);
    fx.assert_invariants();
}

/// Workspaces in every state a debit can meet, and batches of events over them: debits from plan
/// and wallet, a second event of a workspace (the next round), the same event twice in a batch,
/// replays and a 409, a spend limit and a stop policy, an unknown and an unconfigured workspace,
/// an invalid event, and running dry. Each batch goes through `record_batch` or, one event at a
/// time, through `record`. (The batches list a workspace's second event after the first event of
/// every other workspace, so rounds post the history rows in the same order as one by one.)
fn scenario(batched: bool) -> (Vec<Result<DebitResult, LedgerError>>, Fixture) {
    let fx = funded(3);
    fx.workspace("unconfigured");
    fx.spend_limits("w1", "capped", OveragePolicy::UseBalance, Some("5"));
    fx.spend_limits("w2", "stopper", OveragePolicy::Stop, None);
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
