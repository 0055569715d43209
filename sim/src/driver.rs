//! The real ledger, driven natively on a fresh SQLite database through the same functions the
//! components call, its answers read into the model's shapes ([`Answer`], [`Balances`]).

use futures::executor::block_on;
use ledger::agents::{self, AgentLimits, OveragePolicy};
use ledger::catalog::{Catalog, Direction, UsageKind};
use ledger::native::NativeDb;
use ledger::settlement::{Failure, FailureCode, Report};
use ledger::usage::{DebitResult, UsageEvent};
use ledger::workspace::WorkspaceInput;
use ledger::{LedgerError, audit, calls, payments, plans, usage, workspace};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::faults::{Fault, FaultyDb, Fired};
use crate::model::{Answer, Balances, DebitAnswer, PostAnswer, WorkspaceBalances};
use crate::{CYCLE_START_SECS, Event, Number, Op, Usage, WorkspaceSetup};

/// The ledger on an in-memory SQLite database, behind the fault layer.
pub struct Ledger {
    db: FaultyDb,
    catalog: Catalog,
    workspaces: Vec<WorkspaceSetup>,
}

fn ws_id(ws: usize) -> String {
    format!("w{ws}")
}

fn agent_id(agent: usize) -> String {
    format!("a{agent}")
}

fn call_id(call: u32) -> String {
    format!("c{call}")
}

fn payment_id(payment: u32) -> String {
    format!("p{payment}")
}

/// Micro-units of a decimal the ledger answered (always whole micro-units).
fn micros(value: Decimal) -> i64 {
    (value * Decimal::from(1_000_000))
        .to_i64()
        .expect("an amount within i64 micro-units")
}

fn decimal(micros: i64) -> Decimal {
    Decimal::new(micros, 6)
}

fn code(error: &LedgerError) -> &'static str {
    error.code()
}

fn debit_answer(result: Result<DebitResult, LedgerError>) -> Result<DebitAnswer, &'static str> {
    result
        .map(|debited| DebitAnswer {
            charged_micros: micros(debited.charged),
            from_plan_micros: micros(debited.from_plan),
            from_wallet_micros: micros(debited.from_wallet),
            wallet_after_micros: micros(debited.wallet_balance),
            plan_after_micros: micros(debited.plan_credits_remaining),
        })
        .map_err(|refused| code(&refused))
}

fn usage_event(event: &Event) -> UsageEvent {
    let (kind, quantity, direction, to) = match event.usage {
        Usage::Message(count) => (UsageKind::Message, Decimal::from(count), None, None),
        Usage::Sms(segments) => (UsageKind::Sms, Decimal::from(segments), None, None),
        Usage::Stt(micro_minutes) => (UsageKind::Stt, decimal(micro_minutes), None, None),
        Usage::AiTask(count) => (UsageKind::AiTask, Decimal::from(count), None, None),
        Usage::Call {
            number,
            inbound,
            secs,
        } => (
            UsageKind::Call,
            Decimal::from(secs),
            Some(direction(inbound)),
            Some(number.e164().to_owned()),
        ),
    };
    UsageEvent {
        id: format!("e{}", event.id),
        workspace_id: ws_id(event.ws),
        agent_id: agent_id(event.agent),
        kind,
        quantity,
        occurred_at: None,
        direction,
        to,
        from: None,
    }
}

/// Whether `answer` is the clean failure a storage error gives (`internal_error` for the whole
/// operation, or a sweep that failed), rather than a business answer. A batch refused as a whole
/// answers one error; a batch answers each of its 2 or more events otherwise, so one of them
/// failing alone is not this (and is compared with the model like any answer).
pub fn is_storage_failure(answer: &Answer) -> bool {
    fn failed<T>(result: &Result<T, &'static str>) -> bool {
        matches!(result, Err(code) if *code == "internal_error")
    }
    match answer {
        Answer::Debit(result) => failed(result),
        Answer::Batch(results) => results.len() == 1 && failed(&results[0]),
        Answer::Authorized(result) => failed(result),
        Answer::Heartbeat(result) => failed(result),
        Answer::Posted(result) => failed(result),
        Answer::Expired(posted) => *posted == usize::MAX,
        Answer::TopUp(result) => failed(result),
        Answer::Settled(result) => failed(result),
        Answer::Advanced => false,
    }
}

fn direction(inbound: bool) -> Direction {
    if inbound {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

impl Ledger {
    /// A fresh database with the workspaces set up: created, subscribed to their plan with its
    /// first period paid, and their agents' limits put, all at [`CYCLE_START_SECS`].
    pub fn open(setup: &[WorkspaceSetup]) -> Result<Self, String> {
        let db = NativeDb::open(":memory:").map_err(|e| e.to_string())?;
        block_on(ledger::schema::migrate(&db)).map_err(|e| e.to_string())?;
        let catalog = Catalog::default_catalog().map_err(|e| e.to_string())?;
        for (index, ws) in setup.iter().enumerate() {
            let id = ws_id(index);
            let input = WorkspaceInput {
                name: id.clone(),
                email: format!("{id}@example.com"),
                currency: None,
                timezone: None,
            };
            block_on(workspace::upsert(
                &db,
                &catalog,
                &id,
                &input,
                CYCLE_START_SECS,
            ))
            .map_err(|e| e.to_string())?;
            if let Some(plan) = ws.plan.id() {
                block_on(plans::change_plan(
                    &db,
                    &catalog,
                    &id,
                    plan,
                    true,
                    CYCLE_START_SECS,
                ))
                .map_err(|e| e.to_string())?;
            }
            for (agent, limits) in ws.agents.iter().enumerate() {
                let limits = AgentLimits {
                    overage_policy: if limits.stops_at_plan_end {
                        OveragePolicy::Stop
                    } else {
                        OveragePolicy::UseBalance
                    },
                    monthly_spend_limit: limits.monthly_limit_micros.map(decimal),
                    daily_call_limit: limits.daily_call_limit,
                    max_concurrent_calls: limits.max_concurrent_calls,
                };
                block_on(agents::put_limits(
                    &db,
                    &id,
                    &agent_id(agent),
                    &limits,
                    CYCLE_START_SECS,
                ))
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(Self {
            db: FaultyDb::new(db),
            catalog,
            workspaces: setup.to_vec(),
        })
    }

    /// Arms `fault` for the next [`Ledger::apply`].
    pub fn arm(&self, fault: Fault) {
        self.db.arm(fault);
    }

    /// Disarms the fault, and says where it fired (`None`: it did not).
    pub fn disarm(&self) -> Option<Fired> {
        self.db.disarm()
    }

    /// Test knob: faults fail their statement after it ran (see `FaultyDb`).
    #[doc(hidden)]
    pub fn lose_acknowledgements(&mut self) {
        self.db.lose_acknowledgements();
    }

    /// Runs one operation at the simulated time `now_secs`.
    pub fn apply(&mut self, op: &Op, now_secs: i64) -> Answer {
        let (db, catalog) = (&self.db, &self.catalog);
        match op {
            Op::Debit(event) => Answer::Debit(debit_answer(block_on(usage::record(
                db,
                catalog,
                &usage_event(event),
                now_secs,
            )))),
            Op::Batch(events) => {
                let events: Vec<UsageEvent> = events.iter().map(usage_event).collect();
                match block_on(usage::record_batch(db, catalog, &events, now_secs)) {
                    Ok(answers) => Answer::Batch(answers.into_iter().map(debit_answer).collect()),
                    Err(failed) => Answer::Batch(vec![Err(code(&failed))]),
                }
            }
            Op::Authorize {
                ws,
                agent,
                call,
                number,
                inbound,
            } => {
                let request = calls::CallRequest {
                    workspace_id: ws_id(*ws),
                    agent_id: agent_id(*agent),
                    call_id: call_id(*call),
                    direction: direction(*inbound),
                    to: Number::e164(*number).to_owned(),
                    from: "+14155550100".into(),
                };
                Answer::Authorized(
                    block_on(calls::authorize(db, catalog, &request, now_secs))
                        .map(|authorized| {
                            (authorized.status, micros(authorized.held), authorized.grace)
                        })
                        .map_err(|refused| code(&refused)),
                )
            }
            Op::Heartbeat { call, elapsed_secs } => Answer::Heartbeat(
                block_on(calls::heartbeat(
                    db,
                    catalog,
                    &call_id(*call),
                    *elapsed_secs,
                    now_secs,
                ))
                .map(|beat| (beat.continue_call, beat.reason, micros(beat.held)))
                .map_err(|refused| code(&refused)),
            ),
            Op::End {
                call,
                duration_secs,
            } => Answer::Posted(
                block_on(calls::end(db, &call_id(*call), *duration_secs, now_secs))
                    .map(|posted| PostAnswer {
                        status: if posted.status == "expired" {
                            "expired"
                        } else {
                            "ended"
                        },
                        duration_secs: posted.duration_seconds,
                        billed_secs: posted.billed_seconds,
                        charged_micros: micros(posted.charged),
                        from_plan_micros: micros(posted.from_plan),
                        from_wallet_micros: micros(posted.from_wallet),
                        unbilled_micros: micros(posted.unbilled),
                        wallet_after_micros: micros(posted.wallet_balance),
                        plan_after_micros: micros(posted.plan_credits_remaining),
                    })
                    .map_err(|refused| code(&refused)),
            ),
            Op::ExpireHolds => Answer::Expired(
                block_on(calls::expire_holds(db, now_secs, calls::EXPIRY_BATCH_MAX))
                    .unwrap_or(usize::MAX),
            ),
            Op::TopUp {
                ws,
                payment,
                amount_money_micros,
            } => Answer::TopUp(
                block_on(payments::create_topup(
                    db,
                    catalog,
                    &ws_id(*ws),
                    &payment_id(*payment),
                    decimal(*amount_money_micros),
                    now_secs,
                ))
                .map(|_| ())
                .map_err(|refused| code(&refused)),
            ),
            Op::Settle { payment, succeeded } => {
                let id = payment_id(*payment);
                let reported = payments::Reported::Payment {
                    id: &id,
                    intent_id: None,
                };
                let report = if *succeeded {
                    Report::Succeeded
                } else {
                    Report::Failed(Failure {
                        code: FailureCode::parse(Some("card_declined")),
                        message: "Your card was declined.".into(),
                        hard_decline: false,
                    })
                };
                let paid = payments::PaidWith::default();
                Answer::Settled(
                    match block_on(payments::settle(db, reported, &report, &paid, now_secs)) {
                        Ok(Some(settled)) => Ok(match settled.payment.status.as_str() {
                            "succeeded" => "succeeded",
                            "failed" => "failed",
                            "pending" => "pending",
                            _ => "other",
                        }),
                        Ok(None) => Err("not_ours"),
                        Err(refused) => Err(code(&refused)),
                    },
                )
            }
            Op::Advance { .. } => Answer::Advanced,
        }
    }

    /// Every balance the model keeps, as the ledger has it at `now_secs`.
    pub fn balances(&self, now_secs: i64) -> Balances {
        let workspaces = (0..self.workspaces.len())
            .map(|index| {
                let id = ws_id(index);
                let ws = block_on(workspace::get(&self.db, &id)).expect("a workspace set up");
                let page = block_on(agents::list(&self.db, &id, Some(500), None, now_secs))
                    .expect("the agents");
                WorkspaceBalances {
                    plan_micros: ws.plan_credits_micros,
                    wallet_micros: ws.wallet_micros,
                    held_plan_micros: ws.held_plan_micros,
                    held_wallet_micros: ws.held_wallet_micros,
                    exhausted_at_secs: ws.exhausted_at,
                    agents: page
                        .agents
                        .iter()
                        .map(|agent| {
                            (
                                micros(agent.cycle_spend),
                                agent.calls_today,
                                agent.calls_in_progress,
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        Balances { workspaces }
    }

    /// The ledger's invariants (`ledger::audit::check`), as one line per violation; empty when
    /// they hold.
    pub fn audit(&self) -> String {
        match block_on(audit::check(&self.db)) {
            Ok(violations) => violations
                .iter()
                .map(|v| format!("{}: {} {}; ", v.invariant, v.workspace_id, v.detail))
                .collect(),
            Err(failed) => format!("the audit failed: {failed}"),
        }
    }
}
