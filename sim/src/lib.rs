//! A seeded, deterministic simulation of the ledger (issue 26, first increment).
//!
//! From one `u64` seed, [`generate`] draws a workspace setup and a list of operations (debits and
//! batches, idempotent replays, call authorizations, heartbeats, ends and the expiry sweep,
//! top-ups settled late, twice or after a failure, credit grants made, replayed, voided and
//! expired, cycle renewals, invoices paid, plan changes, catalog changes, refunds and
//! disputes, auto-recharge sweeps and their outcomes, the reconciliation, the clock moving
//! forward, across cycle ends, and workspaces' test clocks set and moved, which freeze the
//! time one workspace runs at while the others follow the clock). [`run`] applies
//! them to the real ledger on a fresh SQLite database through the functions the components call
//! (`driver`), and to a plain in-memory account of every bucket and hold written from
//! `docs/billing-rules.md` and `docs/decisions.md`, not from the ledger's code (`model`). After
//! every step the answers and every balance must agree to the micro-credit, and the ledger's
//! audit runs every [`AUDIT_EVERY_STEPS`] steps and at the end.
//!
//! A divergence names the seed and the step; [`shrink`] then finds a shorter list of the seed's
//! operations (by their indices) that still diverges, so that `simulate --seed N --keep ...`
//! replays it. Time is simulated only: nothing here reads the wall clock except the figures the
//! binary prints.

pub mod driver;
pub mod faults;
pub mod model;
pub mod soak;
pub mod vfs;

use std::collections::BTreeMap;
use std::fmt;

use faults::{Fault, Sabotage};

/// 2026-11-01T00:00:00Z: every workspace subscribes then, so its cycle ends on December 1.
pub const CYCLE_START_SECS: i64 = 1_793_491_200;
/// Seconds in a day.
pub const DAY_SECS: i64 = 86_400;
/// The simulated clock never passes this: 100 days, so that a run crosses up to three cycle ends
/// (December 1, January 1, February 1 for the workspaces set up; other days for those that
/// subscribe during the run).
pub const HORIZON_SECS: i64 = CYCLE_START_SECS + 100 * DAY_SECS;
/// How often the ledger's own audit (`ledger::audit::check`) runs, in steps.
pub const AUDIT_EVERY_STEPS: usize = 50;
/// How often every grant is compared as `grants::list` shows it (an expiry applied on read, its
/// status), in steps, besides after every grant operation: what each grant has left and holds is
/// compared after every step, in one query (`driver::Ledger::balances`).
pub const GRANT_VIEWS_EVERY_STEPS: usize = 50;

/// SplitMix64: small, fast, and the same sequence on every machine for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: i64, high: i64) -> i64 {
        let span = (high - low + 1) as u64;
        low + (self.next_u64() % span) as i64
    }

    /// An index below `count` (which must not be zero).
    pub fn index(&mut self, count: usize) -> usize {
        (self.next_u64() % count as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// A UTC date's days since 1970-01-01 (the proleptic Gregorian calendar; H. Hinnant's
/// `days_from_civil`). Written here rather than taken from the ledger's calendar, so that the
/// model's cycles are its own.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The UTC date (year, month, day) of a day number since 1970-01-01 (`civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// R13: the midnight (UTC) that starts the cycle after the one starting at `start_secs`, for
/// cycles anchored on `anchor_day`: that day of the next month, or its last day if shorter.
pub fn next_cycle_start_secs(start_secs: i64, anchor_day: i64) -> i64 {
    let (year, month, _) = civil_from_days(start_secs.div_euclid(DAY_SECS));
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let first = days_from_civil(next_year, next_month, 1);
    let (after_year, after_month) = if next_month == 12 {
        (next_year + 1, 1)
    } else {
        (next_year, next_month + 1)
    };
    let days_in_month = days_from_civil(after_year, after_month, 1) - first;
    (first + anchor_day.min(days_in_month) - 1) * DAY_SECS
}

/// The plan a workspace is set up on (`None`: billing not configured, R3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No plan.
    None,
    /// 10 credits.
    Free,
    /// 1,000 credits.
    Basic,
    /// 5,000 credits.
    Professional,
}

impl Plan {
    /// The plans of the shipped catalog, cheapest first.
    pub const CATALOG: [Plan; 3] = [Plan::Free, Plan::Basic, Plan::Professional];

    /// The catalog's plan id.
    pub fn id(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Free => Some("free"),
            Self::Basic => Some("basic"),
            Self::Professional => Some("professional"),
        }
    }
}

/// An agent's limits (R6), set once before the first operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSetup {
    /// `stop` rather than `use_balance`.
    pub stops_at_plan_end: bool,
    /// Monthly spending limit, in micro-credits.
    pub monthly_limit_micros: Option<i64>,
    /// Calls a day.
    pub daily_call_limit: Option<u32>,
    /// Calls at once.
    pub max_concurrent_calls: Option<u32>,
}

/// A workspace: its plan and agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSetup {
    /// The plan, subscribed at [`CYCLE_START_SECS`] with its first period paid.
    pub plan: Plan,
    /// Agents `a0`, `a1`, ...
    pub agents: Vec<AgentSetup>,
}

/// The numbers calls go to, one per rate of the shipped catalog that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Number {
    /// `+1` standard.
    Us,
    /// `+44` standard.
    Uk,
    /// Elsewhere (`+33`).
    France,
    /// `+1800`, toll-free.
    UsTollFree,
}

impl Number {
    /// The E.164 number.
    pub fn e164(self) -> &'static str {
        match self {
            Self::Us => "+14155550123",
            Self::Uk => "+442071234567",
            Self::France => "+33142685300",
            Self::UsTollFree => "+18005550123",
        }
    }
}

/// A usage kind, as a grant's scope names it (R4, R24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Calls, authorized or reported.
    Call,
    /// Messages.
    Message,
    /// SMS.
    Sms,
    /// Speech-to-text.
    Stt,
    /// AI tasks.
    AiTask,
}

impl Kind {
    /// Every kind, in the contract's order.
    pub const ALL: [Kind; 5] = [
        Kind::Call,
        Kind::Message,
        Kind::Sms,
        Kind::Stt,
        Kind::AiTask,
    ];
}

/// What a usage event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Messages.
    Message(i64),
    /// SMS segments.
    Sms(i64),
    /// Speech-to-text, in micro-minutes (fractions are allowed).
    Stt(i64),
    /// AI tasks.
    AiTask(i64),
    /// A finished call reported as usage.
    Call {
        /// Where to.
        number: Number,
        /// Inbound rather than outbound.
        inbound: bool,
        /// Duration.
        secs: i64,
    },
}

impl Usage {
    /// Its usage kind.
    pub fn kind(self) -> Kind {
        match self {
            Self::Message(_) => Kind::Message,
            Self::Sms(_) => Kind::Sms,
            Self::Stt(_) => Kind::Stt,
            Self::AiTask(_) => Kind::AiTask,
            Self::Call { .. } => Kind::Call,
        }
    }
}

/// A grant's terms as the operator asks for them (R22); its name is `g<key>`, no metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantTerms {
    /// Credits, in micro-credits.
    pub amount_micros: i64,
    /// `paid`, sold for this much money (micro-units of the currency); `promotional` if `None`.
    pub cost_basis_money_micros: Option<i64>,
    /// 0-100 (out of range now and then); the default 50 if `None`.
    pub priority: Option<i64>,
    /// When it starts; when it is granted if `None`.
    pub effective_at_secs: Option<i64>,
    /// When it expires; never if `None`.
    pub expires_at_secs: Option<i64>,
    /// The usage kinds it pays for; every kind if `None`.
    pub kinds: Option<Vec<Kind>>,
    /// The one agent (index) it pays for; every agent if `None`.
    pub agent: Option<usize>,
}

/// Auto-recharge settings (R11), money in micro-units of the currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RechargeSettings {
    /// On or off.
    pub enabled: bool,
    /// Recharge when the wallet falls below this.
    pub threshold_money_micros: i64,
    /// Charged each time.
    pub amount_money_micros: i64,
    /// The monthly cap, if any.
    pub max_per_month_money_micros: Option<i64>,
}

/// One usage event; its id is `e<id>`, unique per workspace unless it is a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Workspace index.
    pub ws: usize,
    /// Agent index.
    pub agent: usize,
    /// Event id number.
    pub id: u32,
    /// What was used.
    pub usage: Usage,
}

/// One simulated operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `usage::record`.
    Debit(Event),
    /// `usage::record_batch`.
    Batch(Vec<Event>),
    /// `calls::authorize` of call `c<call>`.
    Authorize {
        /// Workspace index.
        ws: usize,
        /// Agent index.
        agent: usize,
        /// Call id number.
        call: u32,
        /// Where to.
        number: Number,
        /// Inbound rather than outbound.
        inbound: bool,
    },
    /// `calls::heartbeat`.
    Heartbeat {
        /// Call id number.
        call: u32,
        /// Seconds the call has lasted.
        elapsed_secs: i64,
    },
    /// `calls::end`.
    End {
        /// Call id number.
        call: u32,
        /// Seconds the call lasted.
        duration_secs: i64,
    },
    /// `calls::expire_holds`, the sweep the scheduler runs.
    ExpireHolds,
    /// `payments::create_topup` of payment `p<payment>`.
    TopUp {
        /// Workspace index.
        ws: usize,
        /// Payment id number.
        payment: u32,
        /// Money asked for, in micro-units of the currency.
        amount_money_micros: i64,
    },
    /// `payments::settle` with Stripe's success, or a card decline.
    Settle {
        /// Payment id number.
        payment: u32,
        /// Success rather than `card_declined`.
        succeeded: bool,
    },
    /// `grants::create` with the idempotency key `k<key>`.
    Grant {
        /// Workspace index.
        ws: usize,
        /// Key number: a replay uses an earlier grant's.
        key: u32,
        /// The terms asked for.
        terms: GrantTerms,
    },
    /// `grants::void` of the grant made with key `k<key>` (perhaps never made).
    Void {
        /// Workspace index.
        ws: usize,
        /// Key number.
        key: u32,
    },
    /// `grants::expire_due`, the sweep of the cycle-renewal job's pass.
    ExpireGrants,
    /// `plans::renew_due`, the cycle-renewal job's pass (R13, R15, R16): every workspace whose
    /// cycle ended is rolled forward.
    Renew,
    /// `plans::record_invoice_paid` of Stripe invoice `in_<invoice>` (the `invoice.paid`
    /// webhook): the invoice of the workspace's cycle in force (`next`: of the cycle after it),
    /// its period starting `offset_secs` after that cycle's start (Stripe's anchor has a time of
    /// day, ours is midnight). A replay repeats an earlier invoice's operation.
    InvoicePaid {
        /// Workspace index.
        ws: usize,
        /// Invoice id number.
        invoice: u32,
        /// For the next cycle rather than the one in force.
        next: bool,
        /// The period's start, from the cycle's.
        offset_secs: i64,
    },
    /// `POST .../subscription {"plan_id"}` as the user-api component runs it: the ledger plans
    /// it (`plan_change::plan_change`), then either `plans::change_plan` (a free plan, an
    /// upgrade, a downgrade, the same plan) or, for a first paid subscription,
    /// `plans::claim_subscription` and `plans::start_subscription`.
    ChangePlan {
        /// Workspace index.
        ws: usize,
        /// The plan asked for.
        plan: Plan,
        /// For a first paid subscription: whether Stripe charged its first invoice at once
        /// (else its credits wait for `invoice.paid`, R13).
        first_period_paid: bool,
    },
    /// `payments::reverse` of payment `p<payment>` by Stripe refund or dispute `re_<reversal>`
    /// (what the stripe-webhook component runs for `charge.refunded`, `refund.created` and
    /// `charge.dispute.created`, once it has found the payment by its PaymentIntent).
    Reverse {
        /// Payment id number (perhaps never created, or not settled yet).
        payment: u32,
        /// Reversal id number: a replay uses an earlier reversal's.
        reversal: u32,
        /// A dispute rather than a refund.
        dispute: bool,
        /// Money taken back, in micro-units of the currency (now and then 0 or less).
        amount_money_micros: i64,
    },
    /// `payments::set_auto_recharge` (`PUT .../auto-recharge`, R11).
    SetAutoRecharge {
        /// Workspace index.
        ws: usize,
        /// The settings.
        settings: RechargeSettings,
    },
    /// The auto-recharge component's sweep: `payments::auto_recharge_candidates` in batches,
    /// `payments::claim_auto_recharge` for each; the charges it starts are settled by later
    /// operations.
    SweepRecharges,
    /// `payments::settle` of workspace `ws`'s latest automatic recharge (the webhook of the
    /// charge the sweep started; perhaps settled already, or never claimed): Stripe's success or
    /// a decline, hard or soft.
    SettleRecharge {
        /// Workspace index.
        ws: usize,
        /// Success rather than a decline.
        succeeded: bool,
        /// A hard decline (turns auto-recharge off) rather than a soft one.
        hard_decline: bool,
    },
    /// The reconciliation (R21): `payments::stale_pending`, then each payment settled as Stripe
    /// has it, `succeeded` or a soft decline (its webhook never came).
    Reconcile {
        /// What Stripe has for every stale payment.
        succeeded: bool,
    },
    /// `catalog::put` (`PUT /v1/catalog`): the shipped catalog, or one with other rates and plan
    /// terms (the same settings), stored as a new version.
    PutCatalog {
        /// The repriced catalog rather than the shipped one.
        repriced: bool,
    },
    /// `plans::cancel_pending_change` (R15).
    CancelPendingChange {
        /// Workspace index.
        ws: usize,
    },
    /// The simulated clock moves to `at_secs`, if that is later (a cycle stream's jump to a
    /// cycle's end: absolute, so that a shrunk list without the steps before it still gets
    /// there).
    AdvanceTo {
        /// The time.
        at_secs: i64,
    },
    /// The simulated clock moves forward.
    Advance {
        /// By how much.
        secs: i64,
    },
    /// `workspace::set_test_clock` as the service-api component runs it (`POST
    /// /v1/test-clocks/{ws}`): workspace `ws`'s clock is frozen at `at_secs` (absolute, so a
    /// shrunk list still asks for the same time), which the ledger refuses if it is earlier than
    /// the time the workspace runs at. From then on everything about the workspace runs at its
    /// frozen time, and the simulated clock no longer moves it.
    SetTestClock {
        /// Workspace index.
        ws: usize,
        /// The frozen time.
        at_secs: i64,
    },
}

/// A seed's world: the workspaces and the operations.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed it was drawn from.
    pub seed: u64,
    /// Workspaces `w0`, `w1`, ...
    pub workspaces: Vec<WorkspaceSetup>,
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// The storage fault armed for each operation, by index (empty: none, see
    /// [`Scenario::with_faults`]). Indexed like `ops`, so a shrunk list keeps each kept
    /// operation's fault.
    pub faults: Vec<Option<Fault>>,
}

/// Salt of the fault schedule's generator: it is drawn from the seed but not from the stream
/// that drew the operations, so turning faults on leaves the operations unchanged.
const FAULT_SALT: u64 = 0x5EED_FA17_0000_0001;

impl Scenario {
    /// This scenario with a storage fault armed on about `percent` in a hundred of its
    /// operations that reach the ledger (a clock step runs no statement), of every kind
    /// ([`Scenario::with_faults_of`]).
    pub fn with_faults(self, percent: u64) -> Self {
        self.with_faults_of(percent, &faults::Family::ALL)
    }

    /// This scenario with a storage fault of the `families` armed on about `percent` in a
    /// hundred of its operations that reach the ledger, drawn by [`Fault::draw`]: at statement
    /// 0 or 1 of the operation half of the time, else at statement 0 to
    /// [`faults::STATEMENT_INDEX_MAX`].
    pub fn with_faults_of(mut self, percent: u64, families: &[faults::Family]) -> Self {
        let mut rng = Rng::new(self.seed ^ FAULT_SALT);
        self.faults = self
            .ops
            .iter()
            .map(|op| {
                // Drawn for every operation, so that each one's fault depends only on the seed.
                let hit = rng.chance(percent);
                let fault = Fault::draw(&mut rng, families);
                // A renewal, a plan change, the recharge sweep and the reconciliation run several
                // transactions (a workspace or a payment each; a claim then the start of a
                // subscription): one failing after another committed
                // is not "nothing written", so they run without faults.
                let unfaulted = matches!(
                    op,
                    Op::Advance { .. }
                        | Op::AdvanceTo { .. }
                        | Op::Renew
                        | Op::ChangePlan { .. }
                        | Op::SweepRecharges
                        | Op::Reconcile { .. }
                        | Op::PutCatalog { .. }
                );
                (hit && !unfaulted).then_some(fault)
            })
            .collect();
        self
    }

    /// Whether a fault of the schedule needs the database to be a file (else it is in memory).
    pub fn on_file(&self) -> bool {
        self.faults
            .iter()
            .flatten()
            .any(|fault| fault.kind.needs_file())
    }
}

fn agent_setup(rng: &mut Rng) -> AgentSetup {
    AgentSetup {
        stops_at_plan_end: rng.chance(25),
        monthly_limit_micros: rng
            .chance(35)
            .then(|| rng.range(1, 60) * 1_000_000 + rng.range(0, 999_999)),
        daily_call_limit: rng.chance(25).then(|| rng.range(1, 6) as u32),
        max_concurrent_calls: rng.chance(30).then(|| rng.range(1, 3) as u32),
    }
}

fn usage(rng: &mut Rng) -> Usage {
    // Mostly small charges, and now and then a large one, so that plan credits, wallets and
    // limits all run out within a run.
    let big = rng.chance(10);
    match rng.index(5) {
        0 => Usage::Message(rng.range(1, if big { 2_000 } else { 40 })),
        1 => Usage::Sms(rng.range(1, if big { 2_000 } else { 40 })),
        2 => Usage::Stt(rng.range(1, if big { 600_000 } else { 20_000 }) * 50),
        3 => Usage::AiTask(rng.range(1, if big { 1_000 } else { 30 })),
        _ => Usage::Call {
            number: number(rng),
            inbound: rng.chance(40),
            secs: rng.range(1, if big { 86_400 } else { 900 }),
        },
    }
}

/// Salt of the grants' generator: grant operations are drawn on a stream of their own, between
/// the others, so that the other operations are those a seed drew before grants existed, in the
/// same order (shifted by the grant operations placed among them).
const GRANT_SALT: u64 = 0x5EED_0000_6AA7_0001;
/// About this many operations in a hundred are grant operations: enough that grants are made,
/// spent, held, voided and expired in every run, few enough that plan credits, wallets and
/// limits still run out as they did.
const GRANT_OPS_PERCENT: u64 = 5;

/// A grant operation: a new grant (about half), a replay of one with the same or other terms, a
/// voiding (recent grants most often, some held by calls in progress, some already voided, now
/// and then a key never used), or the expiry sweep.
fn grant_op(
    rng: &mut Rng,
    workspaces: &[WorkspaceSetup],
    now: i64,
    clocks: &[Option<i64>],
    made: &mut Vec<(usize, u32, GrantTerms)>,
    keys: &mut u32,
) -> Op {
    let roll = rng.index(20);
    match roll {
        11..=12 if !made.is_empty() => {
            let (ws, key, mut terms) = made[rng.index(made.len())].clone();
            if rng.chance(50) {
                match rng.index(3) {
                    0 => terms.amount_micros += 1,
                    // The default priority spelled out: the same terms.
                    1 => {
                        terms.priority = match terms.priority {
                            None => Some(50),
                            Some(50) => None,
                            other => other,
                        }
                    }
                    _ => terms.expires_at_secs = Some(terms.expires_at_secs.unwrap_or(now) + 1),
                }
            }
            Op::Grant { ws, key, terms }
        }
        13..=16 => {
            if made.is_empty() || rng.chance(5) {
                *keys += 1;
                Op::Void {
                    ws: rng.index(workspaces.len()),
                    key: *keys,
                }
            } else {
                let recent = if rng.chance(60) {
                    made.len() - 1 - rng.index(made.len().min(4))
                } else {
                    rng.index(made.len())
                };
                let (ws, key, _) = made[recent];
                Op::Void { ws, key }
            }
        }
        17..=19 => Op::ExpireGrants,
        _ => {
            *keys += 1;
            let ws = rng.index(workspaces.len());
            // Its start and expiry on the workspace's clock.
            let terms = grant_terms(rng, workspaces[ws].agents.len(), clocks[ws].unwrap_or(now));
            made.push((ws, *keys, terms.clone()));
            Op::Grant {
                ws,
                key: *keys,
                terms,
            }
        }
    }
}

/// A grant's terms: mostly small amounts (so that plan credits, grants and wallets all run out),
/// a third paid, priorities with ties, some starting later, half expiring minutes to days ahead
/// (so that clock jumps cross expiries, some under calls' holds), some scoped; now and then a
/// term the ledger must refuse (a priority of 101, an expiry not after the start, no kinds).
fn grant_terms(rng: &mut Rng, agents: usize, now: i64) -> GrantTerms {
    let amount_micros = if rng.chance(10) {
        rng.range(5, 50) * 1_000_000 + rng.range(0, 999_999)
    } else {
        rng.range(1, 3_000_000)
    };
    let cost_basis_money_micros = rng.chance(30).then(|| rng.range(0, amount_micros));
    let priority = match rng.index(10) {
        0..=2 => None,
        3 => Some(0),
        4 => Some(10),
        5 | 6 => Some(50),
        7 => Some(100),
        8 => Some(rng.range(0, 100)),
        _ => Some(if rng.chance(20) { 101 } else { 10 }),
    };
    let effective_at_secs = match rng.index(20) {
        0..=2 => Some(now + rng.range(30, 3_600)),
        3 => Some(now - rng.range(1, 3_600)),
        _ => None,
    };
    let start = effective_at_secs.unwrap_or(now).max(now);
    let expires_at_secs = rng.chance(50).then(|| {
        start
            + match rng.index(10) {
                0..=3 => rng.range(60, 600),
                4..=6 => rng.range(600, 7_200),
                7 | 8 => rng.range(7_200, 3 * DAY_SECS),
                _ if rng.chance(30) => 0,
                _ => rng.range(1, 59),
            }
    });
    let kinds = rng.chance(25).then(|| {
        let first = if rng.chance(50) {
            Kind::Call
        } else {
            Kind::ALL[rng.index(Kind::ALL.len())]
        };
        match rng.index(50) {
            0 => Vec::new(),
            1..=25 => vec![first],
            _ => vec![first, Kind::ALL[rng.index(Kind::ALL.len())]],
        }
    });
    // Now and then an agent the workspace's setup does not have.
    let agent = rng.chance(15).then(|| rng.index(agents + 1));
    GrantTerms {
        amount_micros,
        cost_basis_money_micros,
        priority,
        effective_at_secs,
        expires_at_secs,
        kinds,
        agent,
    }
}

/// Salt of the cycles' generator: renewals, invoices, plan changes, catalog changes and the
/// clock's jumps to a cycle's end are drawn on a stream of their own, between the others, as
/// grants are.
const CYCLE_SALT: u64 = 0x5EED_0000_C7C1_0001;
/// About this many operations in a hundred are cycle operations.
const CYCLE_OPS_PERCENT: u64 = 3;
/// After the clock jumps to a cycle's end, this many slots draw cycle operations more often
/// ([`CYCLE_BOOST_PERCENT`]), so that renewals run while calls started before the end still
/// hold plan credits.
const CYCLE_BOOST_SLOTS: u32 = 40;
const CYCLE_BOOST_PERCENT: u64 = 12;

/// What the cycles' generator remembers between its operations.
#[derive(Default)]
struct CycleDraws {
    /// Invoices sent, for replays.
    invoices: Vec<Op>,
    /// Invoice id numbers used.
    invoice_ids: u32,
    /// Slots left with cycle operations drawn more often.
    boost: u32,
}

/// A cycle operation: a renewal (a third), a jump of the clock to just before or after the next
/// first of a month (the end of the set-up workspaces' cycles), an invoice paid (a fifth a
/// replay; its period near the cycle's start, now and then just inside or outside Stripe's 2
/// days of slack), a plan change, a cancelled pending change, or a catalog stored.
fn cycle_op(rng: &mut Rng, workspaces: usize, now: &mut i64, draws: &mut CycleDraws) -> Op {
    match rng.index(100) {
        35..=49 => {
            let (year, month, _) = civil_from_days(now.div_euclid(DAY_SECS));
            let next_month = next_cycle_start_secs(days_from_civil(year, month, 1) * DAY_SECS, 1);
            let target = if rng.chance(70) {
                next_month - rng.range(0, 600)
            } else {
                next_month + rng.range(0, 120)
            };
            if target <= *now || target > HORIZON_SECS {
                return Op::Renew;
            }
            *now = target;
            draws.boost = CYCLE_BOOST_SLOTS;
            Op::AdvanceTo { at_secs: target }
        }
        50..=69 => {
            if !draws.invoices.is_empty() && rng.chance(20) {
                return draws.invoices[rng.index(draws.invoices.len())].clone();
            }
            draws.invoice_ids += 1;
            let slack = 2 * DAY_SECS;
            let offset_secs = match rng.index(10) {
                0 => slack - rng.range(0, 1),
                1 => -slack + rng.range(0, 1),
                2 => rng.range(-slack, slack),
                _ => rng.range(0, 3_600),
            };
            let op = Op::InvoicePaid {
                ws: rng.index(workspaces),
                invoice: draws.invoice_ids,
                next: rng.chance(50),
                offset_secs,
            };
            draws.invoices.push(op.clone());
            op
        }
        // Anywhere, also between a cycle's end and its renewal (finding 3, fixed).
        70..=89 => Op::ChangePlan {
            ws: rng.index(workspaces),
            plan: Plan::CATALOG[rng.index(Plan::CATALOG.len())],
            first_period_paid: rng.chance(70),
        },
        90..=96 => Op::CancelPendingChange {
            ws: rng.index(workspaces),
        },
        97..=99 => Op::PutCatalog {
            repriced: rng.chance(60),
        },
        _ => Op::Renew,
    }
}

/// Salt of the test clocks' generator, a stream of its own.
const TEST_CLOCK_SALT: u64 = 0x5EED_0000_7C10_0001;
/// About this many operations in a hundred set or move a workspace's test clock, from the first
/// operation, with finding 5's draws ([`generate_with`]).
const TEST_CLOCK_OPS_PERCENT: u64 = 2;
/// By default, test clocks are set only in the last quarter of a seed's operations (so that the
/// first three quarters are the operations the seed drew before test clocks, reconciliations
/// included), this many in a hundred there.
const TEST_CLOCK_LATE_OPS_PERCENT: u64 = 4;
/// Of those, about this many in a hundred ask for a time earlier than the workspace's (refused).
const TEST_CLOCK_BACKWARDS_PERCENT: u64 = 10;

/// A test-clock operation on a workspace whose time is `clocks[ws]` if frozen, else `now`: a
/// time earlier than that now and then (refused), else the same time or later by seconds (past a
/// call's hold timeout), minutes to hours (past grants' expiries), days (past daily limits), or
/// to around the next first of a month (past a cycle's end, so renewals, rollovers and the
/// monthly cap run on the frozen time). Never past the horizon.
fn test_clock_op(rng: &mut Rng, now: i64, clocks: &mut [Option<i64>]) -> Op {
    let ws = rng.index(clocks.len());
    let base = clocks[ws].unwrap_or(now);
    if rng.chance(TEST_CLOCK_BACKWARDS_PERCENT) {
        return Op::SetTestClock {
            ws,
            at_secs: base - rng.range(1, 3_600),
        };
    }
    let at_secs = match rng.index(20) {
        0 => base,
        1..=6 => base + rng.range(1, 300),
        7..=11 => base + rng.range(300, 6 * 3_600),
        12..=15 => base + rng.range(DAY_SECS / 2, 3 * DAY_SECS),
        _ => {
            let (year, month, _) = civil_from_days(base.div_euclid(DAY_SECS));
            let next_month = next_cycle_start_secs(days_from_civil(year, month, 1) * DAY_SECS, 1);
            next_month + rng.range(-600, 600)
        }
    }
    .clamp(base, HORIZON_SECS.max(base));
    clocks[ws] = Some(at_secs);
    Op::SetTestClock { ws, at_secs }
}

/// Salt of the reversals' generator (refunds and disputes), a stream of its own.
const REVERSAL_SALT: u64 = 0x5EED_0000_2EF0_0001;
/// About this many operations in a hundred are refunds or disputes.
const REVERSAL_OPS_PERCENT: u64 = 2;

/// A refund or dispute: of a recent top-up most often (some not settled yet, some failed), now
/// and then of a payment not created yet; a fifth a replay of an earlier one; of the whole
/// amount, part of it, a few micro-units (rounded up to credits), more than was paid, or
/// nothing (refused).
fn reversal_op(rng: &mut Rng, topups: &[i64], made: &mut Vec<Op>) -> Op {
    if !made.is_empty() && rng.chance(20) {
        return made[rng.index(made.len())].clone();
    }
    let (payment, paid) = if topups.is_empty() || rng.chance(10) {
        (topups.len() as u32 + 1, 10_000_000)
    } else {
        let index = if rng.chance(60) {
            topups.len() - 1 - rng.index(topups.len().min(4))
        } else {
            rng.index(topups.len())
        };
        (index as u32 + 1, topups[index].max(1))
    };
    let amount_money_micros = match rng.index(20) {
        0..=6 => paid,
        7..=13 => rng.range(1, paid),
        14 | 15 => rng.range(1, 100),
        16 | 17 => paid + rng.range(1, paid),
        _ => -rng.range(0, 1),
    };
    let op = Op::Reverse {
        payment,
        reversal: made.len() as u32 + 1,
        dispute: rng.chance(25),
        amount_money_micros,
    };
    made.push(op.clone());
    op
}

/// Salt of the auto-recharge generator, a stream of its own.
const RECHARGE_SALT: u64 = 0x5EED_0000_A07C_0001;
/// About this many operations in a hundred are auto-recharge or reconciliation operations.
const RECHARGE_OPS_PERCENT: u64 = 3;

/// An auto-recharge operation: settings (mostly enabled, thresholds of 0 to 6,000 credits so
/// that wallets of every size cross them, amounts of 10 to 60 and now and then out of bounds, a monthly cap a
/// third of the time, sometimes below the amount or zero), the sweep, a recharge's outcome (a
/// success most often, some declines hard), or the reconciliation (a sixth).
fn recharge_op(rng: &mut Rng, workspaces: usize) -> Op {
    match rng.index(20) {
        0..=4 => {
            let amount_money_micros = match rng.index(20) {
                0 => 9_990_000,
                1 => 5_000_010_000,
                _ => rng.range(10, 60) * 1_000_000 + rng.range(0, 99) * 10_000,
            };
            let max_per_month_money_micros = rng.chance(35).then(|| match rng.index(10) {
                0 => 0,
                1 => amount_money_micros - 10_000,
                2 => amount_money_micros,
                _ => amount_money_micros * rng.range(1, 5) + rng.range(0, 20) * 1_000_000,
            });
            Op::SetAutoRecharge {
                ws: rng.index(workspaces),
                settings: RechargeSettings {
                    enabled: rng.chance(85),
                    threshold_money_micros: match rng.index(10) {
                        0..=4 => rng.range(0, 50),
                        5..=7 => rng.range(50, 1_000),
                        _ => rng.range(1_000, 6_000),
                    } * 1_000_000
                        + rng.range(0, 99) * 10_000,
                    amount_money_micros,
                    max_per_month_money_micros,
                },
            }
        }
        5..=10 => Op::SweepRecharges,
        11..=16 => Op::SettleRecharge {
            ws: rng.index(workspaces),
            succeeded: rng.chance(70),
            hard_decline: rng.chance(30),
        },
        _ => Op::Reconcile {
            succeeded: rng.chance(75),
        },
    }
}

fn number(rng: &mut Rng) -> Number {
    match rng.index(6) {
        0 | 1 => Number::Us,
        2 => Number::Uk,
        3 => Number::France,
        _ => Number::UsTollFree,
    }
}

/// Draws a seed's scenario: 2 to 4 workspaces of 1 to 3 agents, and `ops` operations.
pub fn generate(seed: u64, ops: usize) -> Scenario {
    generate_with(seed, ops, false)
}

/// [`generate`], and with `clocks_from_start` test clocks drawn from the first operation.
/// Without it (the budget, the soak), test clocks are set only in the last quarter of a seed's
/// operations, whose first three quarters are then the operations drawn before test clocks, so
/// the planted defects of docs/reliability.md found before that keep their steps.
pub fn generate_with(seed: u64, ops: usize, clocks_from_start: bool) -> Scenario {
    let mut rng = Rng::new(seed);
    let workspaces = (0..rng.range(2, 4))
        .map(|_| WorkspaceSetup {
            plan: match rng.index(20) {
                0 => Plan::None,
                1..=10 => Plan::Free,
                11..=16 => Plan::Basic,
                _ => Plan::Professional,
            },
            agents: (0..rng.range(1, 3))
                .map(|_| agent_setup(&mut rng))
                .collect(),
        })
        .collect::<Vec<_>>();
    let mut now = CYCLE_START_SECS + 3_600;
    let mut events: Vec<Event> = Vec::new();
    let mut calls: Vec<(u32, i64)> = Vec::new();
    let mut payments = 0u32;
    let mut grant_rng = Rng::new(seed ^ GRANT_SALT);
    let mut grants_made: Vec<(usize, u32, GrantTerms)> = Vec::new();
    let mut grant_keys = 0u32;
    let mut cycle_rng = Rng::new(seed ^ CYCLE_SALT);
    let mut cycle_draws = CycleDraws::default();
    let mut recharge_rng = Rng::new(seed ^ RECHARGE_SALT);
    let mut reversal_rng = Rng::new(seed ^ REVERSAL_SALT);
    let mut reversals: Vec<Op> = Vec::new();
    let mut topups: Vec<i64> = Vec::new();
    let mut clock_rng = Rng::new(seed ^ TEST_CLOCK_SALT);
    let mut clocks: Vec<Option<i64>> = vec![None; workspaces.len()];
    let mut list = Vec::with_capacity(ops);
    let fresh_event = |rng: &mut Rng, events: &mut Vec<Event>| -> Event {
        let ws = rng.index(workspaces.len());
        let previous: Vec<&Event> = events.iter().filter(|e| e.ws == ws).collect();
        let event = if !previous.is_empty() && rng.chance(15) {
            // A replay of an earlier event, or (rarely) the same id for another event.
            let mut again = *previous[rng.index(previous.len())];
            if rng.chance(15) {
                again.usage = usage(rng);
            }
            again
        } else {
            Event {
                ws,
                agent: rng.index(workspaces[ws].agents.len()),
                id: events.len() as u32,
                usage: usage(rng),
            }
        };
        events.push(event);
        event
    };
    while list.len() < ops {
        let clock_percent = if clocks_from_start {
            TEST_CLOCK_OPS_PERCENT
        } else if list.len() >= ops - ops / 4 {
            TEST_CLOCK_LATE_OPS_PERCENT
        } else {
            0
        };
        if clock_percent > 0 && clock_rng.chance(clock_percent) {
            list.push(test_clock_op(&mut clock_rng, now, &mut clocks));
            continue;
        }
        if grant_rng.chance(GRANT_OPS_PERCENT) {
            list.push(grant_op(
                &mut grant_rng,
                &workspaces,
                now,
                &clocks,
                &mut grants_made,
                &mut grant_keys,
            ));
            continue;
        }
        let cycle_percent = if cycle_draws.boost > 0 {
            cycle_draws.boost -= 1;
            CYCLE_BOOST_PERCENT
        } else {
            CYCLE_OPS_PERCENT
        };
        if cycle_rng.chance(cycle_percent) {
            list.push(cycle_op(
                &mut cycle_rng,
                workspaces.len(),
                &mut now,
                &mut cycle_draws,
            ));
            continue;
        }
        if recharge_rng.chance(RECHARGE_OPS_PERCENT) {
            // Reconciliations of frozen workspaces' payments too, since finding 5's fix.
            list.push(recharge_op(&mut recharge_rng, workspaces.len()));
            continue;
        }
        if reversal_rng.chance(REVERSAL_OPS_PERCENT) {
            list.push(reversal_op(&mut reversal_rng, &topups, &mut reversals));
            continue;
        }
        let roll = rng.index(100);
        let op = match roll {
            0..=31 => Op::Debit(fresh_event(&mut rng, &mut events)),
            32..=35 => Op::Batch(
                (0..rng.range(2, 8))
                    .map(|_| fresh_event(&mut rng, &mut events))
                    .collect(),
            ),
            36..=47 => {
                let ws = rng.index(workspaces.len());
                let call = calls.len() as u32;
                calls.push((call, now));
                Op::Authorize {
                    ws,
                    agent: rng.index(workspaces[ws].agents.len()),
                    call,
                    number: number(&mut rng),
                    inbound: rng.chance(40),
                }
            }
            48..=57 if !calls.is_empty() => {
                let (call, started) = calls[calls.len() - 1 - rng.index(calls.len().min(6))];
                Op::Heartbeat {
                    call,
                    elapsed_secs: (now - started + rng.range(-5, 30)).clamp(0, DAY_SECS),
                }
            }
            58..=66 if !calls.is_empty() => {
                let (call, started) = calls[calls.len() - 1 - rng.index(calls.len().min(8))];
                Op::End {
                    call,
                    duration_secs: (now - started + rng.range(-10, 90)).clamp(0, DAY_SECS),
                }
            }
            67..=69 => Op::ExpireHolds,
            70..=72 => {
                payments += 1;
                let amount_money_micros = match rng.index(20) {
                    0 => 9_990_000,
                    1 => 5_000_010_000,
                    2 => 5_000_000_000,
                    _ => rng.range(10, 300) * 1_000_000 + rng.range(0, 99) * 10_000,
                };
                topups.push(amount_money_micros);
                Op::TopUp {
                    ws: rng.index(workspaces.len()),
                    payment: payments,
                    amount_money_micros,
                }
            }
            73..=78 if payments > 0 => Op::Settle {
                // Now and then a payment that was never created.
                payment: rng.range(1, i64::from(payments) + 1) as u32,
                succeeded: rng.chance(65),
            },
            _ => {
                let secs = match rng.index(100) {
                    0..=59 => rng.range(1, 30),
                    60..=89 => rng.range(30, 300),
                    90..=97 => rng.range(300, 7_200),
                    _ => rng.range(DAY_SECS / 2, 3 * DAY_SECS),
                };
                if now + secs > HORIZON_SECS {
                    continue;
                }
                now += secs;
                Op::Advance { secs }
            }
        };
        list.push(op);
    }
    Scenario {
        seed,
        workspaces,
        ops: list,
        faults: Vec::new(),
    }
}

/// Where the ledger and the model disagreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The seed.
    pub seed: u64,
    /// The index, in the seed's operation list, of the operation after which they disagreed
    /// (`None`: the setup, or the final audit).
    pub op_index: Option<usize>,
    /// The operation.
    pub op: Option<Op>,
    /// What the model expected.
    pub expected: String,
    /// What the ledger did.
    pub actual: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "DIVERGENCE seed {}", self.seed)?;
        match (self.op_index, &self.op) {
            (Some(index), Some(op)) => writeln!(f, "  step {index}: {op:?}")?,
            _ => writeln!(f, "  at the setup or the final audit")?,
        }
        writeln!(f, "  expected: {}", self.expected)?;
        write!(f, "  actual:   {}", self.actual)
    }
}

/// How many times each kind of outcome happened (`debit ok`, `authorize grace`, ...): what a run
/// exercised.
pub type Tally = BTreeMap<String, usize>;

/// Runs the operations of `scenario` whose indices are in `keep` (all when `None`), in order, on
/// a fresh database and a fresh model. `Ok` with the tally of outcomes, or the first divergence.
pub fn run(scenario: &Scenario, keep: Option<&[usize]>) -> Result<Tally, Box<Divergence>> {
    run_on(scenario, keep, Sabotage::None)
}

/// [`run`] with every fault failing its statement after it ran (a lost acknowledgement), which
/// the ledger cannot tell apart from a failure: the proof that the checks of a refused attempt
/// catch a write that was not undone (`tests/faults.rs`).
#[doc(hidden)]
pub fn run_losing_acknowledgements(scenario: &Scenario) -> Result<Tally, Box<Divergence>> {
    run_on(scenario, None, Sabotage::LoseAcknowledgements)
}

/// [`run`] with a killed connection committing what its transaction had done before it is
/// closed: the proof that the checks of a killed attempt catch work that survived the kill
/// (`tests/faults.rs`).
#[doc(hidden)]
pub fn run_committing_killed_work(scenario: &Scenario) -> Result<Tally, Box<Divergence>> {
    run_on(scenario, None, Sabotage::CommitKilledWork)
}

fn run_on(
    scenario: &Scenario,
    keep: Option<&[usize]>,
    sabotage: Sabotage,
) -> Result<Tally, Box<Divergence>> {
    let indices: Vec<usize> = match keep {
        Some(keep) => keep.to_vec(),
        None => (0..scenario.ops.len()).collect(),
    };
    let diverged = |op_index: Option<usize>, expected: String, actual: String| {
        Box::new(Divergence {
            seed: scenario.seed,
            op_index,
            op: op_index.map(|index| scenario.ops[index].clone()),
            expected,
            actual,
        })
    };
    let mut ledger = driver::Ledger::open(&scenario.workspaces, scenario.on_file())
        .map_err(|failure| diverged(None, "a ledger set up".into(), failure))?;
    ledger.sabotage(sabotage);
    let mut model = model::Model::new(&scenario.workspaces, CYCLE_START_SECS + 3_600);
    let mut tally = Tally::new();
    for (step, &index) in indices.iter().enumerate() {
        let op = &scenario.ops[index];
        let now = model.now_secs();
        let fault = scenario.faults.get(index).copied().flatten();
        let (actual, fired) = match fault {
            Some(fault) => faulted(&mut ledger, &model, op, now, fault, &mut tally)
                .map_err(|(expected, actual)| diverged(Some(index), expected, actual))?,
            None => (ledger.apply(op, now), false),
        };
        let expected = model.apply(op);
        for label in expected.labels() {
            *tally.entry(label).or_default() += 1;
        }
        if expected != actual {
            return Err(diverged(
                Some(index),
                format!("{expected:?}"),
                format!("{actual:?}"),
            ));
        }
        let expected = model.balances();
        let actual = ledger.balances(model.now_secs());
        if expected != actual {
            return Err(diverged(
                Some(index),
                format!("{expected:?}"),
                format!("{actual:?}"),
            ));
        }
        let grant_op = matches!(op, Op::Grant { .. } | Op::Void { .. } | Op::ExpireGrants);
        if grant_op || (step + 1) % GRANT_VIEWS_EVERY_STEPS == 0 {
            let expected = model.grant_views();
            let actual = ledger.grant_views(model.now_secs());
            if expected != actual {
                return Err(diverged(
                    Some(index),
                    format!("grants {expected:?}"),
                    format!("grants {actual:?}"),
                ));
            }
        }
        if fired || (step + 1) % AUDIT_EVERY_STEPS == 0 {
            let violations = ledger.audit();
            if !violations.is_empty() {
                return Err(diverged(Some(index), "a clean audit".into(), violations));
            }
        }
    }
    let violations = ledger.audit();
    if !violations.is_empty() {
        return Err(diverged(None, "a clean audit".into(), violations));
    }
    for (label, count) in model.notes() {
        *tally.entry(label.to_owned()).or_default() += count;
    }
    Ok(tally)
}

/// Runs `op` with `fault` armed: `Ok` with the answer to compare with the model's and whether the
/// fault fired, or `Err((expected, actual))` if a refused attempt left anything behind.
///
/// A fired fault must give either the model's answer (the ledger retried) or a storage failure
/// of the whole operation. After a failure the ledger must still hold the model's balances from
/// before the operation (it wrote nothing) and pass its audit; then the caller's retry, without a
/// fault, must act as the first attempt, which the caller checks as any step.
fn faulted(
    ledger: &mut driver::Ledger,
    model: &model::Model,
    op: &Op,
    now: i64,
    fault: Fault,
    tally: &mut Tally,
) -> Result<(model::Answer, bool), (String, String)> {
    ledger.arm(fault);
    let answer = ledger.apply(op, now);
    let fired = match ledger.disarm() {
        Ok(fired) => fired,
        Err(why) => {
            *tally.entry(format!("fault escaped ({why})")).or_default() += 1;
            return Ok((answer, false));
        }
    };
    let failed = driver::is_storage_failure(&answer);
    let outcome = if failed { "refused" } else { "absorbed" };
    let file = fired
        .file
        .map(|file| format!("fault on the {file} {outcome}"));
    for label in [
        format!("fault {} {outcome}", fired.fault.kind.name()),
        format!("fault at {} {outcome}", fired.statement),
    ]
    .into_iter()
    .chain(file)
    {
        *tally.entry(label).or_default() += 1;
    }
    if !failed {
        return Ok((answer, true));
    }
    let expected = model.balances();
    let after = ledger.balances(now);
    if expected != after {
        return Err((
            format!("nothing written by the refused attempt: {expected:?}"),
            format!("{after:?} (answered {answer:?})"),
        ));
    }
    let violations = ledger.audit();
    if !violations.is_empty() {
        return Err(("a clean audit after the refused attempt".into(), violations));
    }
    Ok((ledger.apply(op, now), true))
}

/// A shorter list of the scenario's operation indices that still diverges, from the list `keep`
/// that does (delta debugging: drop chunks, halving their size, while the rest still fails on a
/// fresh database). Returns the shortest list found and its divergence.
pub fn shrink(scenario: &Scenario, failing: &Divergence) -> (Vec<usize>, Box<Divergence>) {
    // Nothing after the diverging step matters.
    let last = failing.op_index.unwrap_or(scenario.ops.len() - 1);
    let mut keep: Vec<usize> = (0..=last).collect();
    let mut divergence = Box::new(failing.clone());
    let mut chunk = keep.len().div_ceil(2);
    while chunk >= 1 {
        let mut start = 0;
        let mut removed_any = false;
        while start < keep.len() {
            let end = (start + chunk).min(keep.len());
            let candidate: Vec<usize> = keep[..start].iter().chain(&keep[end..]).copied().collect();
            match run(scenario, Some(&candidate)) {
                Err(found) if !candidate.is_empty() => {
                    // Cut whatever follows the new diverging step as well.
                    let cut = found
                        .op_index
                        .and_then(|at| candidate.iter().position(|&i| i == at))
                        .map_or(candidate.len(), |position| position + 1);
                    keep = candidate[..cut].to_vec();
                    divergence = found;
                    removed_any = true;
                }
                _ => start = end,
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        chunk = if removed_any { chunk } else { chunk / 2 };
        chunk = chunk.min(keep.len().div_ceil(2)).max(1);
    }
    (keep, divergence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_walks_anchored_cycles_as_r13_says() {
        assert_eq!(days_from_civil(2026, 11, 1) * DAY_SECS, CYCLE_START_SECS);
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
        let day = |y, m, d| days_from_civil(y, m, d) * DAY_SECS;
        // R13's anchor-31 walk: January 31, February 28 (29 in a leap year), March 31.
        assert_eq!(
            next_cycle_start_secs(day(2027, 1, 31), 31),
            day(2027, 2, 28)
        );
        assert_eq!(
            next_cycle_start_secs(day(2028, 1, 31), 31),
            day(2028, 2, 29)
        );
        assert_eq!(
            next_cycle_start_secs(day(2027, 2, 28), 31),
            day(2027, 3, 31)
        );
        assert_eq!(next_cycle_start_secs(day(2026, 12, 1), 1), day(2027, 1, 1));
    }

    #[test]
    fn a_test_clock_only_moves_forward_and_freezes_its_workspace_alone() {
        let setup = vec![
            WorkspaceSetup {
                plan: Plan::Free,
                agents: Vec::new(),
            };
            2
        ];
        let start = CYCLE_START_SECS + 3_600;
        let mut model = model::Model::new(&setup, start);
        let clock = |ws, at_secs| Op::SetTestClock { ws, at_secs };
        let answer = model::Answer::TestClock;
        // Before it has one, a workspace runs at the simulated time.
        assert_eq!(
            model.apply(&clock(0, start - 1)),
            answer(Err("validation_error"))
        );
        assert_eq!(model.apply(&clock(0, start + 60)), answer(Ok(start + 60)));
        model.apply(&Op::Advance { secs: DAY_SECS });
        // Frozen: the simulated day that passed did not move it, and it refuses going back.
        assert_eq!(
            model.apply(&clock(0, start + 59)),
            answer(Err("validation_error"))
        );
        assert_eq!(model.apply(&clock(0, start + 60)), answer(Ok(start + 60)));
        let balances = model.balances();
        assert_eq!(balances.workspaces[0].test_clock, Some(start + 60));
        assert_eq!(balances.workspaces[1].test_clock, None);
        assert_eq!(
            model.apply(&clock(1, start + 60)),
            answer(Err("validation_error"))
        );
    }
}
