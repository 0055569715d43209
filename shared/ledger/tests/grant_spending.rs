//! Debits spend credit grants (docs/billing-rules.md R24, R25; docs/grants.md "The spending
//! order", G1): plan credits, then the grants that apply in one order, then the wallet; `stop`
//! agents spend promotional grants only; racing connections give what some serial order gives.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use common::{DAY, Fixture, NOV_1, dec, dump, event, micros};
use futures::executor::block_on;
use ledger::agents::OveragePolicy;
use ledger::catalog::UsageKind;
use ledger::grants::{self, GrantCategory, GrantInput, GrantScope};
use ledger::usage::{self, DebitResult, UsageEvent};
use ledger::{LedgerError, SqlValue, Storage};

struct Terms<'a> {
    amount: &'a str,
    priority: i64,
    expires_in_days: Option<i64>,
    kinds: Option<Vec<UsageKind>>,
    agent: Option<&'a str>,
    paid: bool,
}

const PLAIN: Terms<'static> = Terms {
    amount: "1",
    priority: 50,
    expires_in_days: None,
    kinds: None,
    agent: None,
    paid: false,
};

fn grant(fx: &Fixture, ws: &str, key: &str, terms: Terms<'_>) -> String {
    let scope = (terms.kinds.is_some() || terms.agent.is_some()).then(|| GrantScope {
        kinds: terms.kinds,
        agent_id: terms.agent.map(str::to_owned),
    });
    let input = GrantInput {
        workspace_id: ws.to_owned(),
        amount: dec(terms.amount),
        category: if terms.paid {
            GrantCategory::Paid
        } else {
            GrantCategory::Promotional
        },
        cost_basis: terms.paid.then(|| dec("1")),
        priority: Some(terms.priority),
        effective_at: None,
        expires_at: terms
            .expires_in_days
            .map(|days| ledger::calendar::rfc3339(NOV_1 + days * DAY)),
        scope,
        name: key.to_owned(),
        metadata: BTreeMap::new(),
    };
    block_on(grants::create(&fx.db, key, &input, NOV_1))
        .expect("grant")
        .0
        .id
}

/// Column `column` (an integer) of each grant, by id.
fn grant_column(fx: &Fixture, column: &str, ids: &[&str]) -> Vec<i64> {
    ids.iter()
        .map(|id| {
            let rows = block_on(fx.db.query(
                &format!("SELECT {column} FROM grants WHERE id = ?1"),
                &[SqlValue::Text((*id).to_owned())],
            ))
            .expect("grant");
            match rows.first().and_then(|row| row.first()) {
                Some(SqlValue::Integer(n)) => *n,
                other => panic!("no grant {id}: {other:?}"),
            }
        })
        .collect()
}

/// What each grant has left, by id.
fn remaining(fx: &Fixture, ids: &[&str]) -> Vec<i64> {
    grant_column(fx, "remaining_micros", ids)
}

/// The `spent` entries of the history row `transaction_id`: (grant id, credits).
fn spent_by(fx: &Fixture, transaction_id: i64) -> Vec<(String, i64)> {
    let rows = block_on(fx.db.query(
        "SELECT grant_id, amount_micros FROM grant_entries
         WHERE transaction_id = ?1 AND kind = 'spent' ORDER BY id",
        &[SqlValue::Integer(transaction_id)],
    ))
    .expect("entries");
    rows.iter()
        .map(|row| match row.as_slice() {
            [SqlValue::Text(id), SqlValue::Integer(amount)] => (id.clone(), *amount),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// The docs/grants.md figures: plan 2; A priority 10, 5, calls only; B priority 50, 3, expires in
/// 2 days; C priority 50, 3, expires in 9 days; wallet 20. Returns the grants' ids.
fn figures(fx: &Fixture) -> [String; 3] {
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp", "20", NOV_1);
    // 8 of the plan's 10 credits: 800 messages at 0.01.
    fx.debit("w", "setup", "spend-8", UsageKind::Message, "800", NOV_1)
        .expect("setup");
    let a = grant(
        fx,
        "w",
        "A",
        Terms {
            amount: "5",
            priority: 10,
            kinds: Some(vec![UsageKind::Call]),
            ..PLAIN
        },
    );
    let b = grant(
        fx,
        "w",
        "B",
        Terms {
            amount: "3",
            expires_in_days: Some(2),
            ..PLAIN
        },
    );
    let c = grant(
        fx,
        "w",
        "C",
        Terms {
            amount: "3",
            expires_in_days: Some(9),
            ..PLAIN
        },
    );
    assert_eq!(fx.balances("w"), (micros("2"), micros("20")));
    [a, b, c]
}

#[test]
fn a_call_takes_plan_then_its_grants_in_order() {
    let fx = Fixture::new();
    let [a, b, c] = figures(&fx);
    // 450 minutes at 0.02: 9 credits.
    let call = fx.outbound_call("w", "agent", "call-9", "27000");
    let debited = block_on(usage::record(&fx.db, &fx.catalog, &call, NOV_1 + 60)).expect("call");
    assert_eq!(
        (
            debited.charged,
            debited.from_plan,
            debited.from_grants,
            debited.from_wallet
        ),
        (dec("9"), dec("2"), dec("7"), dec("0"))
    );
    assert_eq!(
        spent_by(&fx, debited.transaction_id),
        [(a.clone(), -micros("5")), (b.clone(), -micros("2"))]
    );
    assert_eq!(remaining(&fx, &[&a, &b, &c]), [0, micros("1"), micros("3")]);
    assert_eq!(fx.balances("w"), (0, micros("20")));
    fx.assert_invariants();
}

#[test]
fn a_message_skips_a_grant_for_calls_and_ends_on_the_wallet() {
    let fx = Fixture::new();
    let [a, b, c] = figures(&fx);
    let debited = fx
        .debit("w", "agent", "msg-9", UsageKind::Message, "900", NOV_1 + 60)
        .expect("message");
    assert_eq!(
        (debited.from_plan, debited.from_grants, debited.from_wallet),
        (dec("2"), dec("6"), dec("1"))
    );
    assert_eq!(
        spent_by(&fx, debited.transaction_id),
        [(b.clone(), -micros("3")), (c.clone(), -micros("3"))]
    );
    assert_eq!(remaining(&fx, &[&a, &b, &c]), [micros("5"), 0, 0]);
    assert_eq!(fx.balances("w"), (0, micros("19")));
    // The history row's amount is all three parts; its grant part is named.
    let history = block_on(ledger::views::transactions(
        &fx.db,
        "w",
        &ledger::views::TransactionFilter::default(),
    ))
    .expect("history");
    let row = history.data.first().expect("the message's row");
    assert_eq!(
        (
            row.amount,
            row.plan_amount,
            row.grant_amount,
            row.wallet_amount
        ),
        (dec("-9"), dec("-2"), dec("-6"), dec("-1"))
    );
    assert_eq!(
        row.grants
            .iter()
            .map(|part| (part.grant_id.as_str(), part.amount))
            .collect::<Vec<_>>(),
        [(b.as_str(), dec("-3")), (c.as_str(), dec("-3"))]
    );
    // The CSV names them too, in its last two columns.
    let csv = block_on(ledger::views::transactions_csv(
        &fx.db,
        "w",
        &ledger::views::TransactionFilter::default(),
    ))
    .expect("csv");
    let first_row = csv.lines().nth(1).expect("a row");
    assert!(
        first_row.ends_with(&format!(",-6,{b}:-3;{c}:-3")),
        "{first_row}"
    );
    fx.assert_invariants();
}

/// G1: a `stop` agent with plan 0, a promotional grant of 5, a paid grant of 5, a wallet of 100:
/// a debit of 4 takes 4 from the promotional grant; one of 8 is refused and posts nothing.
#[test]
fn a_stop_agent_spends_promotional_grants_never_paid_ones() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp", "100", NOV_1);
    fx.debit("w", "setup", "plan-out", UsageKind::Message, "1000", NOV_1)
        .expect("empty the plan");
    let promo = grant(
        &fx,
        "w",
        "promo",
        Terms {
            amount: "5",
            ..PLAIN
        },
    );
    let paid = grant(
        &fx,
        "w",
        "paid",
        Terms {
            amount: "5",
            priority: 0,
            paid: true,
            ..PLAIN
        },
    );
    fx.spend_limits("w", "stopper", OveragePolicy::Stop, None);
    let four = fx
        .debit("w", "stopper", "four", UsageKind::Message, "400", NOV_1)
        .expect("4 from the promotional grant");
    assert_eq!(
        (four.from_plan, four.from_grants, four.from_wallet),
        (dec("0"), dec("4"), dec("0"))
    );
    assert_eq!(
        spent_by(&fx, four.transaction_id),
        [(promo.clone(), -micros("4"))]
    );
    let rows_before = dump(&fx.db);
    assert_eq!(
        fx.debit("w", "stopper", "eight", UsageKind::Message, "800", NOV_1),
        Err(LedgerError::PlanCreditsExhausted)
    );
    assert_eq!(dump(&fx.db), rows_before, "a refusal writes nothing");
    // A `use_balance` agent spends the paid grant first (priority 0), then the promotional one.
    let other = fx
        .debit("w", "spender", "six", UsageKind::Message, "600", NOV_1)
        .expect("six");
    assert_eq!(
        spent_by(&fx, other.transaction_id),
        [(paid.clone(), -micros("5")), (promo.clone(), -micros("1"))]
    );
    assert_eq!(remaining(&fx, &[&promo, &paid]), [0, 0]);
    fx.assert_invariants();
}

#[test]
fn grants_not_in_force_or_for_another_agent_pay_nothing() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp", "10", NOV_1);
    fx.debit("w", "setup", "plan-out", UsageKind::Message, "1000", NOV_1)
        .expect("empty the plan");
    let expiring = grant(
        &fx,
        "w",
        "expiring",
        Terms {
            amount: "2",
            expires_in_days: Some(1),
            ..PLAIN
        },
    );
    let voided = grant(
        &fx,
        "w",
        "voided",
        Terms {
            amount: "2",
            ..PLAIN
        },
    );
    block_on(grants::void(&fx.db, &voided, NOV_1)).expect("void");
    let for_bob = grant(
        &fx,
        "w",
        "bob",
        Terms {
            amount: "2",
            agent: Some("bob"),
            ..PLAIN
        },
    );
    let later = block_on(grants::create(
        &fx.db,
        "later",
        &GrantInput {
            workspace_id: "w".into(),
            amount: dec("2"),
            category: GrantCategory::Promotional,
            cost_basis: None,
            priority: None,
            effective_at: Some(ledger::calendar::rfc3339(NOV_1 + 3 * DAY)),
            expires_at: None,
            scope: None,
            name: "later".into(),
            metadata: BTreeMap::new(),
        },
        NOV_1,
    ))
    .expect("later")
    .0
    .id;
    // A day later, before any sweep: the expiring grant is past its expiry and pays nothing, the
    // voided one pays nothing, Bob's pays only Bob, the scheduled one has not started.
    let day_later = NOV_1 + DAY;
    let alice = fx
        .debit("w", "alice", "a1", UsageKind::Message, "100", day_later)
        .expect("alice");
    assert_eq!((alice.from_grants, alice.from_wallet), (dec("0"), dec("1")));
    let bob = fx
        .debit("w", "bob", "b1", UsageKind::Message, "100", day_later)
        .expect("bob");
    assert_eq!((bob.from_grants, bob.from_wallet), (dec("1"), dec("0")));
    assert_eq!(
        remaining(&fx, &[&expiring, &voided, &for_bob, &later]),
        [micros("2"), 0, micros("1"), micros("2")]
    );
    // Three days in, the scheduled grant pays.
    let started = fx
        .debit(
            "w",
            "alice",
            "a2",
            UsageKind::Message,
            "100",
            NOV_1 + 3 * DAY,
        )
        .expect("started");
    assert_eq!(
        spent_by(&fx, started.transaction_id),
        [(later, -micros("1"))]
    );
    block_on(grants::expire_due(&fx.db, NOV_1 + 3 * DAY)).expect("sweep");
    fx.assert_invariants();
}

/// Grace (R7) waits while a grant still pays for calls: spending the plan and the wallet to zero
/// with a grant left does not mark the workspace as run out; spending the grant then does.
#[test]
fn the_workspace_has_not_run_out_while_a_grant_pays_for_calls() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    let only_sms = grant(
        &fx,
        "w",
        "sms",
        Terms {
            amount: "1",
            kinds: Some(vec![UsageKind::Sms]),
            ..PLAIN
        },
    );
    let any = grant(
        &fx,
        "w",
        "any",
        Terms {
            amount: "1",
            ..PLAIN
        },
    );
    fx.debit("w", "a", "plan-out", UsageKind::Message, "1000", NOV_1)
        .expect("plan");
    assert_eq!(fx.state("w").exhausted_at, None);
    fx.debit("w", "a", "grant-out", UsageKind::Message, "100", NOV_1 + 5)
        .expect("grant");
    assert_eq!(remaining(&fx, &[&any, &only_sms]), [0, micros("1")]);
    assert_eq!(
        fx.state("w").exhausted_at,
        Some(NOV_1 + 5),
        "an SMS-only grant does not keep calls going"
    );
    fx.assert_invariants();
}

/// A batch draws on grants as the same debits one by one do: the same answers and rows.
#[test]
fn a_batch_spends_grants_as_one_by_one_debits_do() {
    let events: Vec<UsageEvent> = (0..12_usize)
        .map(|n| {
            let kind = if n.is_multiple_of(3) {
                UsageKind::Sms
            } else {
                UsageKind::Message
            };
            event(
                "w",
                &format!("agent-{}", n % 2),
                &format!("e{n}"),
                kind,
                "150",
            )
        })
        .collect();
    let setup = || {
        let fx = Fixture::new();
        fx.subscribed("w", "free", NOV_1);
        fx.topup("w", "tp", "10", NOV_1);
        grant(
            &fx,
            "w",
            "g1",
            Terms {
                amount: "4",
                priority: 1,
                kinds: Some(vec![UsageKind::Sms]),
                ..PLAIN
            },
        );
        grant(
            &fx,
            "w",
            "g2",
            Terms {
                amount: "3.5",
                agent: Some("agent-1"),
                ..PLAIN
            },
        );
        grant(
            &fx,
            "w",
            "g3",
            Terms {
                amount: "2",
                expires_in_days: Some(5),
                ..PLAIN
            },
        );
        fx
    };
    let single = setup();
    let one_by_one: Vec<Result<DebitResult, LedgerError>> = events
        .iter()
        .map(|e| block_on(usage::record(&single.db, &single.catalog, e, NOV_1 + 10)))
        .collect();
    let batched = setup();
    let together = block_on(usage::record_batch(
        &batched.db,
        &batched.catalog,
        &events,
        NOV_1 + 10,
    ))
    .expect("batch");
    assert_eq!(together, one_by_one);
    assert!(
        one_by_one
            .iter()
            .any(|r| r.as_ref().is_ok_and(|d| d.from_grants > dec("0")))
    );
    assert_eq!(dump(&batched.db), dump(&single.db));
    single.assert_invariants();
}

/// Sixteen connections race debits of different sizes on one workspace with plan credits, three
/// grants (one for messages only) and a wallet: the outcome is exactly that of debiting the
/// debits that went through one by one, in the order of their history rows, on a fresh copy.
#[test]
fn sixteen_connections_spend_grants_as_some_serial_order_does() {
    const THREADS: usize = 16;
    const ATTEMPTS: usize = 40;
    let setup = || {
        let fx = Fixture::new();
        fx.subscribed("w", "free", NOV_1);
        fx.topup("w", "tp", "10", NOV_1);
        grant(
            &fx,
            "w",
            "g1",
            Terms {
                amount: "3",
                priority: 10,
                ..PLAIN
            },
        );
        grant(
            &fx,
            "w",
            "g2",
            Terms {
                amount: "4",
                expires_in_days: Some(3),
                kinds: Some(vec![UsageKind::Message]),
                ..PLAIN
            },
        );
        grant(
            &fx,
            "w",
            "g3",
            Terms {
                amount: "2.5",
                agent: Some("agent-0"),
                ..PLAIN
            },
        );
        fx
    };
    // 29.5 credits in all; 16 x 40 attempts of 1 to 4 credits' worth ask for far more.
    let event_of = |thread: usize, n: usize| {
        let kind = if (thread + n).is_multiple_of(2) {
            UsageKind::Message
        } else {
            UsageKind::AiTask
        };
        let quantity = match kind {
            UsageKind::Message => format!("{}", 100 * (1 + (thread * 7 + n) % 4)),
            _ => format!("{}", 1 + (thread + n) % 3),
        };
        event(
            "w",
            &format!("agent-{}", thread % 3),
            &format!("t{thread}-{n}"),
            kind,
            &quantity,
        )
    };
    let raced = setup();
    let barrier = Arc::new(Barrier::new(THREADS));
    let catalog = raced.catalog.clone();
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let db = raced.connect();
            let barrier = Arc::clone(&barrier);
            let catalog = catalog.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..ATTEMPTS)
                    .map(|n| {
                        let event = event_of(thread, n);
                        let answer = block_on(usage::record(&db, &catalog, &event, NOV_1 + 10));
                        (event, answer)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut went_through: Vec<(UsageEvent, DebitResult)> = Vec::new();
    for handle in handles {
        for (event, answer) in handle.join().expect("thread") {
            match answer {
                Ok(debited) => went_through.push((event, debited)),
                Err(LedgerError::InsufficientFunds) => {}
                Err(other) => panic!("{}: {other:?}", event.id),
            }
        }
    }
    assert!(
        went_through.len() > 20,
        "{} debits went through",
        went_through.len()
    );
    raced.assert_invariants();
    went_through.sort_by_key(|(_, debited)| debited.transaction_id);
    let serial = setup();
    for (event, raced_answer) in &went_through {
        let answer = block_on(usage::record(
            &serial.db,
            &serial.catalog,
            event,
            NOV_1 + 10,
        ))
        .expect("what went through races goes through serially");
        assert_eq!(&answer, raced_answer, "{}", event.id);
    }
    assert_eq!(dump(&serial.db), dump(&raced.db));
}

/// What each grant holds, by id.
fn held(fx: &Fixture, ids: &[&str]) -> Vec<i64> {
    grant_column(fx, "held_micros", ids)
}

/// A workspace on Free with its plan spent and `wallet` credits in its wallet.
fn plan_spent(fx: &Fixture, wallet: Option<&str>) {
    fx.subscribed("w", "free", NOV_1);
    if let Some(amount) = wallet {
        fx.topup("w", "tp", amount, NOV_1);
    }
    fx.debit("w", "setup", "plan-out", UsageKind::Message, "1000", NOV_1)
        .expect("empty the plan");
}

/// A call holds on the grants it would spend, in order; a heartbeat holds more on them; its end
/// posts against them exactly and releases the rest of the hold.
#[test]
fn a_call_holds_on_grants_and_posts_against_them() {
    let fx = Fixture::new();
    plan_spent(&fx, Some("10"));
    // 0.03 credits: the first minute's hold (0.02 a minute to +1) takes 0.02 of it, the second
    // minute's 0.01 of it and 0.01 of the next grant.
    let small = grant(
        &fx,
        "w",
        "small",
        Terms {
            amount: "0.03",
            priority: 1,
            ..PLAIN
        },
    );
    let calls_only = grant(
        &fx,
        "w",
        "calls",
        Terms {
            amount: "1",
            kinds: Some(vec![UsageKind::Call]),
            ..PLAIN
        },
    );
    let authorized = fx
        .call(
            "w",
            "agent",
            "c1",
            ledger::catalog::Direction::Outbound,
            "+14155550123",
            NOV_1,
        )
        .expect("authorize");
    assert_eq!(authorized.held, dec("0.02"));
    assert_eq!(held(&fx, &[&small, &calls_only]), [micros("0.02"), 0]);
    fx.assert_invariants();

    let beat = block_on(ledger::calls::heartbeat(
        &fx.db,
        &fx.catalog,
        "c1",
        50,
        NOV_1 + 50,
    ))
    .expect("heartbeat");
    assert!(beat.continue_call);
    assert_eq!(beat.held, dec("0.04"));
    assert_eq!(
        held(&fx, &[&small, &calls_only]),
        [micros("0.03"), micros("0.01")]
    );
    // A debit meanwhile cannot spend what the call holds: the small grant has nothing free.
    let message = fx
        .debit("w", "agent", "m1", UsageKind::Message, "1", NOV_1 + 55)
        .expect("message");
    assert_eq!(
        (message.from_grants, message.from_wallet),
        (dec("0"), dec("0.01"))
    );
    fx.assert_invariants();

    // 70 seconds: two minutes, 0.04, exactly what it holds.
    let posted = block_on(ledger::calls::end(&fx.db, "c1", 70, NOV_1 + 70)).expect("end");
    assert_eq!(
        (posted.charged, posted.from_grants, posted.from_wallet),
        (dec("0.04"), dec("0.04"), dec("0"))
    );
    assert_eq!(held(&fx, &[&small, &calls_only]), [0, 0]);
    assert_eq!(remaining(&fx, &[&small, &calls_only]), [0, micros("0.99")]);

    // A call that ends early releases the rest of its hold on the grant, which keeps it.
    fx.call(
        "w",
        "agent",
        "c2",
        ledger::catalog::Direction::Outbound,
        "+14155550123",
        NOV_1 + 100,
    )
    .expect("authorize");
    block_on(ledger::calls::heartbeat(
        &fx.db,
        &fx.catalog,
        "c2",
        50,
        NOV_1 + 150,
    ))
    .expect("heartbeat");
    assert_eq!(held(&fx, &[&calls_only]), [micros("0.04")]);
    let short = block_on(ledger::calls::end(&fx.db, "c2", 30, NOV_1 + 160)).expect("end");
    assert_eq!(short.from_grants, dec("0.02"));
    assert_eq!(held(&fx, &[&calls_only]), [0]);
    assert_eq!(remaining(&fx, &[&calls_only]), [micros("0.97")]);
    fx.assert_invariants();
}

/// G2, at the catalog's rates: a grant of 10 expiring at E. A call holds 0.02 on it at E - 30
/// and 0.04 after a heartbeat at E - 10. At E the sweep expires 9.96. The call ends at E + 40
/// after 50 seconds, costing 0.02: 0.02 is posted against the grant and the unused 0.02 of the
/// hold expires at the release. The grant ends at 0, with 10 = 9.98 expired + 0.02 spent.
#[test]
fn a_grant_that_expires_under_a_hold_keeps_the_hold_and_expires_the_rest_at_release() {
    let fx = Fixture::new();
    plan_spent(&fx, None);
    let expires_at = NOV_1 + DAY;
    let bonus = grant(
        &fx,
        "w",
        "bonus",
        Terms {
            amount: "10",
            expires_in_days: Some(1),
            ..PLAIN
        },
    );
    fx.call(
        "w",
        "agent",
        "c1",
        ledger::catalog::Direction::Outbound,
        "+14155550123",
        expires_at - 30,
    )
    .expect("authorize");
    block_on(ledger::calls::heartbeat(
        &fx.db,
        &fx.catalog,
        "c1",
        20,
        expires_at - 10,
    ))
    .expect("heartbeat");
    assert_eq!(held(&fx, &[&bonus]), [micros("0.04")]);
    assert_eq!(block_on(grants::expire_due(&fx.db, expires_at)), Ok(1));
    assert_eq!(remaining(&fx, &[&bonus]), [micros("0.04")]);
    let read = block_on(grants::get(&fx.db, &bonus, expires_at + 1)).expect("read");
    assert_eq!((read.remaining, read.held), (dec("0.04"), dec("0.04")));
    fx.assert_invariants();

    let posted = block_on(ledger::calls::end(&fx.db, "c1", 50, expires_at + 40)).expect("end");
    assert_eq!(
        (posted.charged, posted.from_grants),
        (dec("0.02"), dec("0.02"))
    );
    assert_eq!(
        (remaining(&fx, &[&bonus]), held(&fx, &[&bonus])),
        (vec![0], vec![0])
    );
    let rows = block_on(fx.db.query(
        "SELECT kind, amount_micros, created_at FROM grant_entries WHERE grant_id = ?1 ORDER BY id",
        &[SqlValue::Text(bonus.clone())],
    ))
    .expect("entries");
    let kinds: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|row| match row.as_slice() {
            [
                SqlValue::Text(k),
                SqlValue::Integer(a),
                SqlValue::Integer(t),
            ] => (k.clone(), *a, *t),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("granted".into(), micros("10"), NOV_1),
            ("expired".into(), -micros("9.96"), expires_at),
            ("spent".into(), -micros("0.02"), expires_at + 40),
            ("expired".into(), -micros("0.02"), expires_at + 40),
        ]
    );
    fx.assert_invariants();
}

/// An agent's monthly spending limit counts what its calls hold of grants (G4).
#[test]
fn a_spending_limit_counts_grant_holds() {
    let fx = Fixture::new();
    plan_spent(&fx, None);
    grant(
        &fx,
        "w",
        "g",
        Terms {
            amount: "5",
            ..PLAIN
        },
    );
    fx.spend_limits("w", "agent", OveragePolicy::UseBalance, Some("0.03"));
    fx.call(
        "w",
        "agent",
        "c1",
        ledger::catalog::Direction::Outbound,
        "+14155550123",
        NOV_1,
    )
    .expect("first call: 0.02 held on the grant");
    assert_eq!(
        fx.call(
            "w",
            "agent",
            "c2",
            ledger::catalog::Direction::Outbound,
            "+14155550123",
            NOV_1
        )
        .map(|_| ()),
        Err(LedgerError::LimitReached {
            limit: ledger::LimitKind::MonthlySpendLimit
        })
    );
    fx.assert_invariants();
}

/// What a racing thread did that went through, to be done again one by one.
enum Done {
    Call {
        request: ledger::calls::CallRequest,
        now: i64,
        seconds: i64,
        posted: ledger::calls::CallPosted,
    },
    Debit {
        event: UsageEvent,
        now: i64,
        debited: DebitResult,
    },
}

/// The workspace of the calls-and-debits race: Free (10 plan credits) and three grants.
fn race_setup() -> (Fixture, Vec<String>) {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    let ids = vec![
        grant(
            &fx,
            "w",
            "g1",
            Terms {
                amount: "0.5",
                priority: 5,
                ..PLAIN
            },
        ),
        grant(
            &fx,
            "w",
            "g2",
            Terms {
                amount: "0.7",
                kinds: Some(vec![UsageKind::Call]),
                expires_in_days: Some(2),
                ..PLAIN
            },
        ),
        grant(
            &fx,
            "w",
            "g3",
            Terms {
                amount: "0.3",
                agent: Some("agent-1"),
                ..PLAIN
            },
        ),
    ];
    (fx, ids)
}

/// Sixteen connections race call authorizations, heartbeats, ends and debits over three grants.
/// Every call and debit that went through was charged in full; what plan, grants and wallet lost
/// together is exactly what was charged, to the micro-credit; and the outcome is that of a serial
/// order: the order the writes committed in (logged by triggers this test adds), replayed one by
/// one on a fresh copy, gives the same answers and the same rows.
#[test]
fn sixteen_connections_race_calls_and_debits_over_grants() {
    const THREADS: usize = 16;
    const ROUNDS: usize = 12;
    let (fx, ids) = race_setup();
    // The commit order of every write: a call's authorization, heartbeat and posting, a debit.
    for sql in [
        "CREATE TABLE race_log (n INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, id TEXT NOT NULL)",
        "CREATE TRIGGER race_log_authorize AFTER INSERT ON calls
         BEGIN INSERT INTO race_log (op, id) VALUES ('authorize', NEW.call_id); END",
        "CREATE TRIGGER race_log_heartbeat AFTER UPDATE OF reserved_secs ON calls
         BEGIN INSERT INTO race_log (op, id) VALUES ('heartbeat', NEW.call_id); END",
        "CREATE TRIGGER race_log_post AFTER INSERT ON transactions
         BEGIN INSERT INTO race_log (op, id)
               VALUES (CASE WHEN NEW.type = 'call' THEN 'end' ELSE 'debit' END, NEW.reference); END",
    ] {
        block_on(fx.db.execute(sql, &[])).expect("race log");
    }
    // Plan 10 and grants 1.5 against about 96 calls of 0.04 and 96 debits of 0.2.
    let total_before = micros("10") + micros("1.5");
    let barrier = Arc::new(Barrier::new(THREADS));
    let catalog = fx.catalog.clone();
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let db = fx.connect();
            let barrier = Arc::clone(&barrier);
            let catalog = catalog.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut done = Vec::new();
                for round in 0..ROUNDS {
                    let agent = format!("agent-{}", thread % 3);
                    let now = NOV_1 + 10 + round as i64;
                    if (thread + round).is_multiple_of(2) {
                        let call_id = format!("c{thread}-{round}");
                        let request = ledger::calls::CallRequest {
                            workspace_id: "w".into(),
                            agent_id: agent,
                            call_id: call_id.clone(),
                            direction: ledger::catalog::Direction::Outbound,
                            to: "+14155550123".into(),
                            from: "+14155550100".into(),
                        };
                        match block_on(ledger::calls::authorize(&db, &catalog, &request, now)) {
                            Ok(_) => {
                                let beat = block_on(ledger::calls::heartbeat(
                                    &db, &catalog, &call_id, 50, now,
                                ))
                                .expect("heartbeat");
                                // Told to stop, the call ends within what it holds.
                                let seconds = if beat.continue_call { 65 } else { 50 };
                                let posted =
                                    block_on(ledger::calls::end(&db, &call_id, seconds, now))
                                        .expect("end");
                                assert_eq!(posted.unbilled, dec("0"), "{call_id}");
                                done.push(Done::Call {
                                    request,
                                    now,
                                    seconds,
                                    posted,
                                });
                            }
                            Err(LedgerError::InsufficientFunds) => {}
                            Err(other) => panic!("{call_id}: {other:?}"),
                        }
                    } else {
                        let event = event(
                            "w",
                            &agent,
                            &format!("e{thread}-{round}"),
                            UsageKind::Message,
                            "20",
                        );
                        match block_on(usage::record(&db, &catalog, &event, now)) {
                            Ok(debited) => done.push(Done::Debit {
                                event,
                                now,
                                debited,
                            }),
                            Err(LedgerError::InsufficientFunds) => {}
                            Err(other) => panic!("{}: {other:?}", event.id),
                        }
                    }
                }
                done
            })
        })
        .collect();
    let done: Vec<Done> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    let as_micros = |d: rust_decimal::Decimal| -> i64 {
        (d * rust_decimal::Decimal::from(1_000_000))
            .try_into()
            .expect("micros")
    };
    let charged: i64 = done
        .iter()
        .map(|d| match d {
            Done::Call { posted, .. } => as_micros(posted.charged),
            Done::Debit { debited, .. } => as_micros(debited.charged),
        })
        .sum();
    let (plan, wallet) = fx.balances("w");
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let grants_left: i64 = remaining(&fx, &id_refs).iter().sum();
    assert_eq!(held(&fx, &id_refs), [0, 0, 0]);
    assert_eq!(plan + wallet + grants_left + charged, total_before);
    assert!(charged > micros("5"), "charged {charged}");
    fx.assert_invariants();

    // The same writes, one by one, in the order they committed.
    let log = block_on(fx.db.query("SELECT op, id FROM race_log ORDER BY n", &[])).expect("log");
    let (serial, _) = race_setup();
    let calls: std::collections::HashMap<&str, &Done> = done
        .iter()
        .map(|d| match d {
            Done::Call { request, .. } => (request.call_id.as_str(), d),
            Done::Debit { event, .. } => (event.id.as_str(), d),
        })
        .collect();
    for row in &log {
        let [SqlValue::Text(op), SqlValue::Text(id)] = row.as_slice() else {
            panic!("a log row {row:?}");
        };
        match (op.as_str(), calls.get(id.as_str())) {
            ("authorize", Some(Done::Call { request, now, .. })) => {
                block_on(ledger::calls::authorize(
                    &serial.db,
                    &serial.catalog,
                    request,
                    *now,
                ))
                .expect("authorized serially");
            }
            ("heartbeat", Some(Done::Call { now, .. })) => {
                block_on(ledger::calls::heartbeat(
                    &serial.db,
                    &serial.catalog,
                    id,
                    50,
                    *now,
                ))
                .expect("heartbeat serially");
            }
            (
                "end",
                Some(Done::Call {
                    now,
                    seconds,
                    posted,
                    ..
                }),
            ) => {
                let again = block_on(ledger::calls::end(&serial.db, id, *seconds, *now))
                    .expect("ended serially");
                assert_eq!(&again, posted, "{id}");
            }
            (
                "debit",
                Some(Done::Debit {
                    event,
                    now,
                    debited,
                }),
            ) => {
                let again = block_on(usage::record(&serial.db, &serial.catalog, event, *now))
                    .expect("debited serially");
                assert_eq!(&again, debited, "{id}");
            }
            other => panic!(
                "a write of nothing that went through: {op} {id} {:?}",
                other.1.is_some()
            ),
        }
    }
    assert_eq!(dump(&serial.db), dump(&fx.db));
    serial.assert_invariants();
}

/// The summary (R17) lists the grants with something left in spending order, with the days
/// before each expires; its red bar waits while a grant pays for calls (G4), and comes once only
/// a grant for SMS is left.
#[test]
fn the_summary_lists_grants_and_its_red_bar_waits_for_them() {
    let fx = Fixture::new();
    plan_spent(&fx, None);
    let sms = grant(
        &fx,
        "w",
        "sms",
        Terms {
            amount: "1",
            priority: 1,
            kinds: Some(vec![UsageKind::Sms]),
            ..PLAIN
        },
    );
    let calls = grant(
        &fx,
        "w",
        "calls",
        Terms {
            amount: "0.5",
            expires_in_days: Some(3),
            ..PLAIN
        },
    );
    let summary = |now: i64| {
        block_on(ledger::views::summary(&fx.db, &fx.catalog, "w", now)).expect("summary")
    };
    let now = NOV_1 + 3600;
    let first = summary(now);
    assert_eq!(
        first
            .grants
            .iter()
            .map(|g| (g.id.as_str(), g.remaining, g.expires_in_days))
            .collect::<Vec<_>>(),
        [
            (sms.as_str(), dec("1"), None),
            (calls.as_str(), dec("0.5"), Some(3))
        ]
    );
    assert_eq!(first.grant_credits_remaining, dec("1.5"));
    assert_eq!(first.status, ledger::views::Status::LowBalance);
    fx.debit("w", "a", "use-it", UsageKind::Message, "50", now)
        .expect("0.5 from the grant for anything");
    let after = summary(now + 1);
    assert_eq!(after.grant_credits_remaining, dec("1"));
    assert_eq!(after.status, ledger::views::Status::GracePeriod);
}

/// G5, at the top-up minimum: threshold 15, wallet 10. An unscoped grant of 10 expiring in 30
/// days holds the recharge back (20 >= 15); the same grant expiring in 3 days (within the 7-day
/// `credits_expiring_days`) does not, nor one that pays for calls only.
#[test]
fn only_a_lasting_grant_for_everything_holds_back_an_auto_recharge() {
    let claims = |terms: Terms<'_>| {
        let fx = Fixture::new();
        fx.subscribed("w", "free", NOV_1);
        fx.topup("w", "tp", "10", NOV_1);
        fx.debit("w", "a", "plan-out", UsageKind::Message, "1000", NOV_1)
            .expect("empty the plan");
        fx.save_card("w");
        fx.enable_auto_recharge("w", "15", "20");
        grant(&fx, "w", "g", terms);
        let claimed = block_on(ledger::payments::claim_auto_recharge(
            &fx.db,
            &fx.catalog,
            "w",
            NOV_1 + 60,
        ))
        .expect("claim");
        claimed.is_some()
    };
    let lasting = Terms {
        amount: "10",
        expires_in_days: Some(30),
        ..PLAIN
    };
    assert!(!claims(lasting), "10 + 10 >= 15: no recharge");
    let expiring = Terms {
        amount: "10",
        expires_in_days: Some(3),
        ..PLAIN
    };
    assert!(
        claims(expiring),
        "a grant expiring in 3 days does not count"
    );
    let calls_only = Terms {
        amount: "10",
        kinds: Some(vec![UsageKind::Call]),
        ..PLAIN
    };
    assert!(claims(calls_only), "a grant for calls only does not count");
}

/// G9: `credits.granted` with the grant, `credits.expiring` once, 7 days before (the default
/// `credits_expiring_days`) on the workspace's clock, `credits.expired` with what left, whether
/// the sweep or a call's release expired it.
#[test]
fn grants_tell_the_platform_when_given_about_to_expire_and_expired() {
    let fx = Fixture::new();
    plan_spent(&fx, None);
    let id = grant(
        &fx,
        "w",
        "g",
        Terms {
            amount: "3",
            expires_in_days: Some(10),
            ..PLAIN
        },
    );
    let events = || {
        let rows = block_on(fx.db.query(
            "SELECT type, facts FROM notifications WHERE type LIKE 'credits.%' ORDER BY id",
            &[],
        ))
        .expect("outbox");
        rows.iter()
            .map(|row| match row.as_slice() {
                [SqlValue::Text(kind), SqlValue::Text(facts)] => (
                    kind.clone(),
                    serde_json::from_str::<serde_json::Value>(facts).expect("json"),
                ),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let granted = events();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].0, "credits.granted");
    assert_eq!(granted[0].1["amount_micros"], micros("3"));
    assert_eq!(granted[0].1["grant_id"], id.as_str());

    let notify = |now: i64| {
        block_on(grants::notify_expiring(&fx.db, &fx.catalog, now)).expect("expiring sweep")
    };
    assert_eq!(notify(NOV_1 + 3 * DAY - 1), 0, "more than 7 days before");
    assert_eq!(notify(NOV_1 + 3 * DAY), 1);
    assert_eq!(notify(NOV_1 + 4 * DAY), 0, "once per grant");
    let expiring = &events()[1];
    assert_eq!(expiring.0, "credits.expiring");
    assert_eq!(
        (
            expiring.1["remaining_micros"].clone(),
            expiring.1["days_left"].clone()
        ),
        (micros("3").into(), 7.into())
    );

    // A call holds 0.02 of it just before it expires; the sweep expires the rest, and the call,
    // ending unanswered (0 seconds, nothing charged), releases its hold, which expires: two
    // events, 2.98 and 0.02.
    let expires_at = NOV_1 + 10 * DAY;
    fx.call(
        "w",
        "agent",
        "c",
        ledger::catalog::Direction::Outbound,
        "+14155550123",
        expires_at - 5,
    )
    .expect("authorize");
    block_on(grants::expire_due(&fx.db, expires_at)).expect("sweep");
    block_on(ledger::calls::end(&fx.db, "c", 0, expires_at + 5)).expect("end");
    let expired: Vec<_> = events()
        .into_iter()
        .filter(|(kind, _)| kind == "credits.expired")
        .map(|(_, facts)| facts["expired_micros"].as_i64().expect("an amount"))
        .collect();
    assert_eq!(expired, [micros("2.98"), micros("0.02")]);
    fx.assert_invariants();
}

/// A call's posting charges what it holds of a grant first: a grant made after the hold that
/// comes earlier in the order (priority 10 against 50) does not take its place (found by the
/// simulator, issue 26). Grant A 1 (priority 50), a call holds 0.02 on it, grant B 1 (priority
/// 10); the call ends after 60 seconds (0.02): A pays, B is untouched.
#[test]
fn a_posting_charges_its_holds_before_a_grant_made_since() {
    let fx = Fixture::new();
    plan_spent(&fx, None);
    let a = grant(
        &fx,
        "w",
        "A",
        Terms {
            amount: "1",
            ..PLAIN
        },
    );
    fx.call(
        "w",
        "agent",
        "c",
        ledger::catalog::Direction::Outbound,
        "+14155550123",
        NOV_1,
    )
    .expect("authorize");
    assert_eq!(held(&fx, &[&a]), [micros("0.02")]);
    let b = grant(
        &fx,
        "w",
        "B",
        Terms {
            amount: "1",
            priority: 10,
            ..PLAIN
        },
    );
    let posted = block_on(ledger::calls::end(&fx.db, "c", 60, NOV_1 + 60)).expect("end");
    assert_eq!(posted.from_grants, dec("0.02"));
    assert_eq!(remaining(&fx, &[&a, &b]), [micros("0.98"), micros("1")]);
    // A debit, holding nothing, takes B first.
    let debited = fx
        .debit("w", "agent", "m", UsageKind::Message, "1", NOV_1 + 61)
        .expect("debit");
    assert_eq!(
        spent_by(&fx, debited.transaction_id),
        [(b, -micros("0.01"))]
    );
    fx.assert_invariants();
}

/// G6: a grant is never refundable money. With a grant of 5 (3 of it spent) and a top-up of 20
/// untouched in the wallet, refunding the top-up in full takes the wallet's 20 and leaves the
/// grant's 2; a second refund of it takes nothing more from anywhere.
#[test]
fn a_refund_takes_back_wallet_credits_never_a_grant() {
    let fx = Fixture::new();
    plan_spent(&fx, Some("20"));
    let bonus = grant(
        &fx,
        "w",
        "bonus",
        Terms {
            amount: "5",
            ..PLAIN
        },
    );
    let three = fx
        .debit("w", "a", "three", UsageKind::Message, "300", NOV_1 + 10)
        .expect("debit");
    assert_eq!((three.from_grants, three.from_wallet), (dec("3"), dec("0")));
    block_on(ledger::payments::reverse(
        &fx.db,
        "tp",
        "re_1",
        "refund",
        micros("20"),
        NOV_1 + 20,
    ))
    .expect("refund");
    assert_eq!(fx.balances("w"), (0, 0));
    assert_eq!(remaining(&fx, &[&bonus]), [micros("2")]);
    fx.assert_invariants();
}
