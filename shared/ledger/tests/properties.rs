//! Random sequences of ledger operations; after every step every invariant holds: balances equal
//! journal sums, holds equal active calls, no hold posted twice, no wallet below its floor, and
//! no operation fails for any reason but a typed refusal.

mod common;

use common::{DAY, Fixture, NOV_1};
use futures::executor::block_on;
use ledger::agents::{self, AgentLimits, OveragePolicy};
use ledger::catalog::{Direction, UsageKind};
use ledger::{LedgerError, calls, payments, plans};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Debit {
        agent: u8,
        kind: u8,
        quantity: u16,
    },
    Authorize {
        agent: u8,
        call: u8,
        inbound: bool,
        toll_free: bool,
    },
    Heartbeat {
        call: u8,
        elapsed: u16,
    },
    End {
        call: u8,
        duration: u16,
    },
    Wait {
        secs: u32,
    },
    Topup {
        amount: u16,
    },
    Refund {
        payment: u8,
        amount: u16,
    },
    Policy {
        agent: u8,
        stop: bool,
        cap: Option<u8>,
    },
    Plan {
        plan: u8,
    },
    Renew,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..5u8, 1..400u16).prop_map(|(agent, kind, quantity)| Op::Debit { agent, kind, quantity }),
        3 => (0..3u8, 0..6u8, any::<bool>(), any::<bool>()).prop_map(|(agent, call, inbound, toll_free)| Op::Authorize { agent, call, inbound, toll_free }),
        2 => (0..6u8, 0..600u16).prop_map(|(call, elapsed)| Op::Heartbeat { call, elapsed }),
        2 => (0..6u8, 0..900u16).prop_map(|(call, duration)| Op::End { call, duration }),
        2 => (1..2_000u32).prop_map(|secs| Op::Wait { secs }),
        1 => (10..60u16).prop_map(|amount| Op::Topup { amount }),
        1 => (0..4u8, 1..80u16).prop_map(|(payment, amount)| Op::Refund { payment, amount }),
        1 => (0..3u8, any::<bool>(), proptest::option::of(1..20u8)).prop_map(|(agent, stop, cap)| Op::Policy { agent, stop, cap }),
        1 => (0..3u8).prop_map(|plan| Op::Plan { plan }),
        1 => Just(Op::Renew),
    ]
}

/// Only typed refusals are acceptable; a storage failure or a broken invariant is a bug.
fn accept<T>(result: Result<T, LedgerError>) {
    if let Err(LedgerError::Storage(error)) = result {
        panic!("storage failure: {error}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_step_keeps_the_books(ops in proptest::collection::vec(op(), 1..60)) {
        let fx = Fixture::new();
        fx.subscribed("w", "free", NOV_1);
        let mut now = NOV_1;
        let mut topups = 0;
        let mut reversed = false;
        let call_id = |call: u8| format!("c{call}");
        for op in ops {
            match op {
                Op::Debit { agent, kind, quantity } => {
                    let kind = [UsageKind::Message, UsageKind::Sms, UsageKind::AiTask, UsageKind::Stt, UsageKind::Message][kind as usize];
                    accept(fx.debit("w", &format!("a{agent}"), &format!("e{now}-{agent}-{quantity}"), kind, &quantity.to_string(), now));
                }
                Op::Authorize { agent, call, inbound, toll_free } => {
                    let to = if toll_free { "+18005550123" } else { "+14155550123" };
                    let direction = if inbound { Direction::Inbound } else { Direction::Outbound };
                    accept(fx.call("w", &format!("a{agent}"), &call_id(call), direction, to, now));
                }
                Op::Heartbeat { call, elapsed } => accept(block_on(calls::heartbeat(&fx.db, &fx.catalog, &call_id(call), i64::from(elapsed), now))),
                Op::End { call, duration } => accept(block_on(calls::end(&fx.db, &call_id(call), i64::from(duration), now))),
                Op::Wait { secs } => {
                    now += i64::from(secs);
                    accept(block_on(calls::expire_holds(&fx.db, now, 100)));
                }
                Op::Topup { amount } => {
                    topups += 1;
                    fx.topup("w", &format!("tp{topups}"), &amount.to_string(), now);
                }
                Op::Refund { payment, amount } => {
                    let id = format!("tp{}", payment + 1);
                    let outcome = block_on(payments::reverse(&fx.db, &id, &format!("re-{now}-{payment}"), "refund", i64::from(amount) * 1_000_000, now));
                    reversed |= outcome.as_ref().is_ok_and(|credits| *credits > 0);
                    accept(outcome);
                }
                Op::Policy { agent, stop, cap } => {
                    let limits = AgentLimits {
                        overage_policy: if stop { OveragePolicy::Stop } else { OveragePolicy::UseBalance },
                        monthly_spend_limit: cap.map(rust_decimal::Decimal::from),
                        daily_call_limit: None,
                        max_concurrent_calls: Some(3),
                    };
                    accept(block_on(agents::put_limits(&fx.db, "w", &format!("a{agent}"), &limits, now)));
                }
                Op::Plan { plan } => {
                    let plan = ["free", "basic", "professional"][plan as usize];
                    accept(block_on(plans::change_plan(&fx.db, &fx.catalog, "w", plan, true, now)));
                }
                Op::Renew => {
                    now += 31 * DAY;
                    accept(block_on(plans::renew_due(&fx.db, &fx.catalog, now, 10)));
                }
            }
            let violations = block_on(ledger::audit::check(&fx.db)).expect("audit runs");
            prop_assert!(violations.is_empty(), "after {:?}: {:#?}", now, violations);
            let ws = fx.state("w");
            prop_assert!(ws.plan_credits_micros >= 0 && ws.held_plan_micros <= ws.plan_credits_micros);
            // Only a refund or dispute may take the wallet below what calls hold (R12).
            prop_assert!(reversed || ws.held_wallet_micros <= ws.wallet_micros.max(0), "holds never exceed the wallet");
        }
    }
}
