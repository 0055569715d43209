//! The reference model: a plain in-memory account of each workspace's buckets and holds and each
//! agent's counters, written from the rules (`docs/billing-rules.md`) and the decisions where they
//! are silent (`docs/decisions.md`), not from the ledger's code. It prices with the shipped
//! catalog's figures written out here (`shared/ledger/catalog/default.json`), so a pricing bug in
//! the ledger shows as a divergence instead of being copied. Credit grants follow R22-R26 and
//! `docs/grants.md` (G1-G4): each grant's remaining and held, the one spending order, holds per
//! grant, expiry on the workspace clock (applied on read before the sweep posts it) and voiding.
//! Plans and cycles follow R13-R16 and the decisions' "Plans and cycles" and "Paid plans through
//! Stripe", with the catalogs' plan figures typed in and a calendar of its own (`crate`'s
//! `days_from_civil`); refunds and disputes follow R12; auto-recharge and the reconciliation
//! R11, R21, R27 and the decisions' "Auto-recharge"; a catalog change the contract ("a change
//! applies to new debits, and a subscribed plan's terms change at the next cycle").

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::{
    CYCLE_START_SECS, DAY_SECS, Event, GrantTerms, Kind, Number, Op, Plan, RechargeSettings, Usage,
    WorkspaceSetup, civil_from_days, days_from_civil, next_cycle_start_secs,
};

/// One credit, in micro-credits.
const CREDIT_MICROS: i64 = 1_000_000;
/// R5: a hold not extended within 120 s (the shipped `hold_timeout_secs`) is posted.
const HOLD_TIMEOUT_SECS: i64 = 120;
/// R7: the inbound grace period (the shipped `inbound_grace_secs`).
const INBOUND_GRACE_SECS: i64 = 900;
/// R4: calls are billed per started minute in the shipped catalog (no minimum).
const INCREMENT_SECS: i64 = 60;
/// R9: top-ups from 10 to 5,000 USD, at one credit per USD (R1).
const TOPUP_MIN_MONEY_MICROS: i64 = 10_000_000;
const TOPUP_MAX_MONEY_MICROS: i64 = 5_000_000_000;
/// Room without a bound (a grace call's wallet, an agent without a monthly limit).
const UNBOUNDED_MICROS: i64 = i64::MAX / 4;
/// R22: a grant's priority when it names none, and the range it must be in.
const GRANT_PRIORITY_DEFAULT: i64 = 50;
const GRANT_PRIORITY_MAX: i64 = 100;
/// Decisions ("Plans and cycles"): an invoice pays for the cycle starting within 2 days of its
/// period's start, either way (Stripe's anchor has a time of day, ours is midnight).
const INVOICE_SLACK_SECS: i64 = 2 * DAY_SECS;
/// R27: a grant expiring within the catalog's `credits_expiring_days` (7) does not hold a
/// recharge back.
const CREDITS_EXPIRING_SECS: i64 = 7 * DAY_SECS;
/// R11: automatic charges per rolling 24 hours (`auto_recharge_max_per_day`, default 5).
const RECHARGES_PER_DAY_MAX: usize = 5;
/// R21: a payment pending this long is reconciled.
const RECONCILE_AFTER_SECS: i64 = 300;
/// The reconciliation's pass looks at this many payments at most (the component's
/// `RECONCILE_PER_PASS_MAX`).
const RECONCILE_BATCH_MAX: usize = 100;

/// What an operation answered: the same shape from the model and from the ledger, amounts in
/// micro-credits, refusals by their contract error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A debit: its answer, or the code refusing it.
    Debit(Result<DebitAnswer, &'static str>),
    /// A batch: each event's.
    Batch(Vec<Result<DebitAnswer, &'static str>>),
    /// An authorization: (status, held, grace), or the code refusing it.
    Authorized(Result<(String, i64, bool), &'static str>),
    /// A heartbeat: (continue, reason, held), or the code refusing it.
    Heartbeat(Result<(bool, Option<String>, i64), &'static str>),
    /// A call's end.
    Posted(Result<PostAnswer, &'static str>),
    /// The sweep: how many holds it posted.
    Expired(usize),
    /// A top-up created pending, or the code refusing it.
    TopUp(Result<(), &'static str>),
    /// A settlement: the payment's status after it, or the code refusing it.
    Settled(Result<&'static str, &'static str>),
    /// A grant asked for: (whether it is new, the grant), or the code refusing it.
    Granted(Result<(bool, GrantView), &'static str>),
    /// A voiding: the grant after it, or the code refusing it.
    Voided(Result<GrantView, &'static str>),
    /// The grants' expiry sweep: how many expiries it posted.
    GrantsExpired(usize),
    /// The renewal pass: (workspaces renewed, cycles advanced, workspaces failed).
    Renewed(Result<(usize, usize, usize), &'static str>),
    /// An invoice recorded: the plan credits it granted.
    InvoicePaid(Result<i64, &'static str>),
    /// A plan change, or the code refusing it.
    PlanChanged(Result<PlanChangeAnswer, &'static str>),
    /// Auto-recharge settings saved, or the code refusing them.
    RechargeSet(Result<(), &'static str>),
    /// The auto-recharge sweep: the recharges it claimed, by id.
    Swept(Result<Vec<String>, &'static str>),
    /// The reconciliation: each stale payment and its status after it, by id.
    Reconciled(Result<Vec<(String, &'static str)>, &'static str>),
    /// A catalog stored: its version.
    CatalogPut(Result<i64, &'static str>),
    /// A refund or dispute: the credits it took back, or the code refusing it.
    Reversed(Result<i64, &'static str>),
    /// A pending change cancelled, or the code refusing it.
    PendingCancelled(Result<(), &'static str>),
    /// The clock moved.
    Advanced,
    /// A workspace's test clock set: its frozen time, or the code refusing it.
    TestClock(Result<i64, &'static str>),
}

impl Answer {
    /// What kind of outcome this is (`debit ok`, `authorize insufficient_funds`, ...), for the
    /// tally of what a run exercised.
    pub fn labels(&self) -> Vec<String> {
        fn of<T>(op: &str, result: &Result<T, &'static str>) -> String {
            match result {
                Ok(_) => format!("{op} ok"),
                Err(code) => format!("{op} {code}"),
            }
        }
        match self {
            Self::Debit(result) => vec![of("debit", result)],
            Self::Batch(results) => results.iter().map(|r| of("batch event", r)).collect(),
            Self::Authorized(Ok((_, _, true))) => vec!["authorize grace".into()],
            Self::Authorized(result) => vec![of("authorize", result)],
            Self::Heartbeat(Ok((_, Some(reason), _))) => vec![format!("heartbeat stop {reason}")],
            Self::Heartbeat(result) => vec![of("heartbeat", result)],
            Self::Posted(Ok(posted)) if posted.unbilled_micros > 0 => {
                vec![format!("end {} with unbilled", posted.status)]
            }
            Self::Posted(Ok(posted)) => vec![format!("end {}", posted.status)],
            Self::Posted(result) => vec![of("end", result)],
            Self::Expired(0) => vec!["sweep none".into()],
            Self::Expired(_) => vec!["sweep posted".into()],
            Self::TopUp(result) => vec![of("top-up", result)],
            Self::Settled(Ok(status)) => vec![format!("settle -> {status}")],
            Self::Settled(result) => vec![of("settle", result)],
            Self::Granted(Ok((true, _))) => vec!["grant made".into()],
            Self::Granted(Ok((false, _))) => vec!["grant replayed".into()],
            Self::Granted(result) => vec![of("grant", result)],
            Self::Voided(Ok(grant)) if grant.held_micros > 0 => vec!["void under a hold".into()],
            Self::Voided(result) => vec![of("void", result)],
            Self::GrantsExpired(0) => vec!["grant sweep none".into()],
            Self::GrantsExpired(_) => vec!["grant sweep posted".into()],
            Self::Renewed(Ok((0, _, _))) => vec!["renew none due".into()],
            Self::Renewed(Ok((renewed, cycles, _))) if cycles > renewed => {
                vec!["renew caught up several cycles".into()]
            }
            Self::Renewed(result) => vec![of("renew", result)],
            Self::InvoicePaid(Ok(0)) => vec!["invoice granted nothing".into()],
            Self::InvoicePaid(result) => vec![of("invoice granted", result)],
            Self::PlanChanged(Ok(change)) => vec![format!("plan {}", change.action)],
            Self::PlanChanged(result) => vec![of("plan change", result)],
            Self::PendingCancelled(result) => vec![of("cancel pending", result)],
            Self::RechargeSet(result) => vec![of("auto-recharge set", result)],
            Self::CatalogPut(result) => vec![of("catalog put", result)],
            Self::Swept(Ok(claimed)) if claimed.is_empty() => {
                vec!["recharge sweep claimed none".into()]
            }
            Self::Swept(result) => vec![of("recharge sweep claimed", result)],
            Self::Reconciled(Ok(settled)) if settled.is_empty() => {
                vec!["reconcile found none".into()]
            }
            Self::Reconciled(Ok(settled)) => settled
                .iter()
                .map(|(id, status)| {
                    let kind = if id.starts_with("ar_") {
                        "recharge"
                    } else {
                        "top-up"
                    };
                    format!("reconcile {kind} -> {status}")
                })
                .collect(),
            Self::Reconciled(result) => vec![of("reconcile", result)],
            Self::Reversed(Ok(0)) => vec!["reverse took nothing more".into()],
            Self::Reversed(result) => vec![of("reverse", result)],
            Self::Advanced => vec!["advance".into()],
            Self::TestClock(result) => vec![of("test clock", result)],
        }
    }
}

/// A debit's answer (`DebitResult` without its transaction id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebitAnswer {
    /// Charged.
    pub charged_micros: i64,
    /// Of which plan credits.
    pub from_plan_micros: i64,
    /// Of which grants.
    pub from_grants_micros: i64,
    /// Of which wallet.
    pub from_wallet_micros: i64,
    /// Wallet after.
    pub wallet_after_micros: i64,
    /// Plan credits after.
    pub plan_after_micros: i64,
}

/// A posted call's answer (`CallPosted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostAnswer {
    /// `ended` or `expired`.
    pub status: &'static str,
    /// Seconds reported (reserved, when expired).
    pub duration_secs: i64,
    /// Seconds billed.
    pub billed_secs: i64,
    /// Charged.
    pub charged_micros: i64,
    /// Of which plan credits.
    pub from_plan_micros: i64,
    /// Of which grants.
    pub from_grants_micros: i64,
    /// Of which wallet.
    pub from_wallet_micros: i64,
    /// What the call cost beyond what it was allowed to take.
    pub unbilled_micros: i64,
    /// Wallet after.
    pub wallet_after_micros: i64,
    /// Plan credits after.
    pub plan_after_micros: i64,
}

/// A plan change's answer (`PlanChange`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChangeAnswer {
    /// `subscribed`, `upgraded`, `downgrade_scheduled`, `pending_change_cancelled` or
    /// `unchanged`.
    pub action: &'static str,
    /// The plan in force after it.
    pub plan: &'static str,
    /// The plan waiting for the next cycle.
    pub pending_plan: Option<&'static str>,
    /// When it takes (took) effect.
    pub effective_at_secs: i64,
    /// Plan credits it granted.
    pub credits_micros: i64,
}

/// Every balance the simulation compares after each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balances {
    /// Per workspace, in order.
    pub workspaces: Vec<WorkspaceBalances>,
}

/// One workspace's buckets, holds and agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceBalances {
    /// Plan credits.
    pub plan_micros: i64,
    /// Wallet.
    pub wallet_micros: i64,
    /// Plan credits held by calls in progress.
    pub held_plan_micros: i64,
    /// Wallet held by calls in progress.
    pub held_wallet_micros: i64,
    /// When nothing was left available (R7's grace period starts), if it is still so.
    pub exhausted_at_secs: Option<i64>,
    /// Per agent, in order: (spent this cycle, calls authorized today, calls in progress).
    pub agents: Vec<(i64, i64, i64)>,
    /// Its grants by key: (key, remaining as its entries left it, held). An expiry the sweep has
    /// not posted yet is still in the remaining here; [`GrantView`] shows it applied.
    pub grants: Vec<(u32, i64, i64)>,
    /// The plan in force, and the one pending for the next cycle.
    pub plans: (Option<&'static str>, Option<&'static str>),
    /// The cycle in force: its start and end.
    pub cycle: (Option<i64>, Option<i64>),
    /// Its test clock's frozen time, once one is set.
    pub test_clock: Option<i64>,
}

/// A grant as the ledger shows it at the time of the read (`grants::list`, a create's or a
/// voiding's answer): compared by the key it was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantView {
    /// The key number it was made with.
    pub key: u32,
    /// What it has left (R23: past its expiry, only what calls hold, before any sweep).
    pub remaining_micros: i64,
    /// What calls in progress hold of it.
    pub held_micros: i64,
    /// `scheduled`, `active`, `depleted`, `expired` or `voided`.
    pub status: &'static str,
}

/// R22: a grant's id, `gr_` and 32 hex digits of SHA-256 of the workspace id, a NUL byte and the
/// key (`w<ws>` and `k<key>`, as the driver names them). Only the spending order's last
/// tie-break (R24: "then by id") needs it.
fn grant_id(ws: usize, key: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("w{ws}").as_bytes());
    hasher.update([0]);
    hasher.update(format!("k{key}").as_bytes());
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("gr_{}", &hex[..32])
}

/// R22's terms as a retry is compared with the first request: the default priority written out,
/// the kinds once each in one order.
fn normal_terms(terms: &GrantTerms) -> GrantTerms {
    let mut normal = terms.clone();
    normal.priority = Some(terms.priority.unwrap_or(GRANT_PRIORITY_DEFAULT));
    if let Some(kinds) = &mut normal.kinds {
        kinds.sort_unstable();
        kinds.dedup();
    }
    normal
}

#[derive(Debug, Clone)]
struct Grant {
    key: u32,
    id: String,
    /// As asked, normalized ([`normal_terms`]).
    terms: GrantTerms,
    paid: bool,
    priority: i64,
    effective_at_secs: i64,
    expires_at_secs: Option<i64>,
    created_at_secs: i64,
    /// What its entries left it (an expiry not swept yet still counts here).
    remaining_micros: i64,
    held_micros: i64,
    voided: bool,
}

impl Grant {
    fn expired(&self, now_secs: i64) -> bool {
        self.expires_at_secs.is_some_and(|at| at <= now_secs)
    }

    /// R24: started, not expired, not voided.
    fn in_force(&self, now_secs: i64) -> bool {
        !self.voided && self.effective_at_secs <= now_secs && !self.expired(now_secs)
    }

    /// R24: what it can give to usage of `kind` by `agent`: its unheld part, if it applies.
    fn available_for(&self, kind: Kind, agent: usize, now_secs: i64) -> i64 {
        let covers = self
            .terms
            .kinds
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&kind))
            && self.terms.agent.is_none_or(|only| only == agent);
        if covers && self.in_force(now_secs) {
            (self.remaining_micros - self.held_micros).max(0)
        } else {
            0
        }
    }

    /// R22, R24: it still pays for calls of any agent, so the workspace has not run out (R7).
    fn pays_calls(&self, now_secs: i64) -> bool {
        self.in_force(now_secs)
            && self.remaining_micros > self.held_micros
            && self.terms.agent.is_none()
            && self
                .terms
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&Kind::Call))
    }

    /// R23: as a read shows it at `now_secs`.
    fn view(&self, now_secs: i64) -> GrantView {
        GrantView {
            key: self.key,
            remaining_micros: if self.expired(now_secs) {
                self.held_micros
            } else {
                self.remaining_micros
            },
            held_micros: self.held_micros,
            status: if self.voided {
                "voided"
            } else if self.expired(now_secs) {
                "expired"
            } else if self.effective_at_secs > now_secs {
                "scheduled"
            } else if self.remaining_micros == 0 {
                "depleted"
            } else {
                "active"
            },
        }
    }
}

/// How a charge or a hold is paid (R24): plan credits, then grants (index, credits) in the
/// spending order, then the wallet.
#[derive(Debug, Clone, Default)]
struct Funding {
    plan_micros: i64,
    grants: Vec<(usize, i64)>,
    wallet_micros: i64,
}

impl Funding {
    fn grants_micros(&self) -> i64 {
        self.grants.iter().map(|(_, micros)| micros).sum()
    }

    fn total_micros(&self) -> i64 {
        self.plan_micros + self.grants_micros() + self.wallet_micros
    }
}

#[derive(Debug, Clone)]
struct Agent {
    stops_at_plan_end: bool,
    monthly_limit_micros: Option<i64>,
    daily_call_limit: Option<i64>,
    max_concurrent_calls: Option<i64>,
    /// Spent in the cycle that started at `spent_cycle_start` (R6: a new cycle starts it at 0).
    spent_micros: i64,
    spent_cycle_start: i64,
    held_micros: i64,
    calls_in_progress: i64,
    /// (UTC day number, calls authorized on it).
    calls_on_day: (i64, i64),
}

/// A workspace's auto-recharge (R11): its settings, and whether it is armed (one charge per
/// crossing of the threshold).
#[derive(Debug, Clone, Default)]
struct Recharge {
    enabled: bool,
    armed: bool,
    threshold_credits_micros: i64,
    amount_money_micros: i64,
    max_per_month_money_micros: Option<i64>,
}

impl Agent {
    /// What it spent in the cycle starting at `cycle_start` (0 if its spending is of another).
    fn spent_in(&self, cycle_start: i64) -> i64 {
        if self.spent_cycle_start == cycle_start {
            self.spent_micros
        } else {
            0
        }
    }

    fn spend(&mut self, cycle_start: i64, micros: i64) {
        self.spent_micros = self.spent_in(cycle_start) + micros;
        self.spent_cycle_start = cycle_start;
    }
}

#[derive(Debug, Clone)]
struct Workspace {
    /// The plan in force (R3: none, billing not configured).
    plan: Option<Plan>,
    /// A downgrade waiting for the next cycle (R15).
    pending: Option<Plan>,
    /// R13: the day of the month cycles start on.
    anchor_day: i64,
    cycle_start: Option<i64>,
    cycle_end: Option<i64>,
    /// Whether the cycle in force had its plan credits (R13, once per cycle).
    cycle_granted: bool,
    /// Whether a paid subscription was started at Stripe (its id is recorded).
    stripe_subscription: bool,
    /// Auto-recharge (R11).
    recharge: Recharge,
    /// The terms of the plan in force, as they were when it took effect (a catalog change
    /// reaches them at the next cycle).
    terms: Terms,
    plan_micros: i64,
    wallet_micros: i64,
    held_plan_micros: i64,
    held_wallet_micros: i64,
    exhausted_at_secs: Option<i64>,
    agents: Vec<Agent>,
    /// Debited events by id: the event and its first answer (R8).
    debited: BTreeMap<u32, (Event, DebitAnswer)>,
    /// Its grants, in the order they were made.
    grants: Vec<Grant>,
}

impl Workspace {
    /// R6: the cycle the agents' spending counts in (0 without one).
    fn spend_cycle(&self) -> i64 {
        self.cycle_start.unwrap_or(0)
    }

    /// Decisions ("Paid plans through Stripe"): a Stripe subscription on a plan with a fee.
    fn paid_subscription_in_force(&self) -> bool {
        self.stripe_subscription && self.plan.is_some() && self.terms.price_money_micros > 0
    }

    /// R13: grants the cycle's plan credits, once per cycle; returns them. Credit that makes
    /// something available again ends the grace period (R7).
    fn grant_cycle(&mut self) -> i64 {
        if self.plan.is_none() || self.cycle_granted {
            return 0;
        }
        self.cycle_granted = true;
        let credits = self.terms.monthly_credits_micros;
        self.credit_plan(credits);
        credits
    }

    fn credit_plan(&mut self, micros: i64) {
        if micros <= 0 {
            return;
        }
        self.plan_micros += micros;
        self.after_credit();
    }

    /// After credit comes in: R7's grace period ends if something is available again, and
    /// auto-recharge is armed again once the wallet is at or above its threshold (decisions:
    /// "one charge per crossing").
    fn after_credit(&mut self) {
        if self.plan_micros - self.held_plan_micros > 0
            || self.wallet_micros - self.held_wallet_micros > 0
        {
            self.exhausted_at_secs = None;
        }
        if self.wallet_micros - self.held_wallet_micros >= self.recharge.threshold_credits_micros {
            self.recharge.armed = true;
        }
    }

    /// R13, decisions: subscribes to `plan` now, on a cycle anchored on today (UTC), its
    /// credits at once unless they wait for a paid plan's first invoice. Returns them.
    fn subscribe(
        &mut self,
        plan: Plan,
        terms: Terms,
        awaiting_payment: bool,
        now_secs: i64,
    ) -> i64 {
        let today = now_secs.div_euclid(DAY_SECS);
        let (_, _, day) = civil_from_days(today);
        self.plan = Some(plan);
        self.terms = terms;
        self.pending = None;
        self.anchor_day = day;
        self.cycle_start = Some(today * DAY_SECS);
        self.cycle_end = Some(next_cycle_start_secs(today * DAY_SECS, day));
        self.cycle_granted = false;
        if awaiting_payment {
            0
        } else {
            self.grant_cycle()
        }
    }

    fn plan_free_micros(&self) -> i64 {
        (self.plan_micros - self.held_plan_micros).max(0)
    }

    fn wallet_free_micros(&self) -> i64 {
        (self.wallet_micros - self.held_wallet_micros).max(0)
    }

    /// R7 (decisions: "Inbound grace"): the grace period starts when nothing is left available,
    /// and a grant that still pays for calls is something (R22, R24).
    fn note_if_exhausted(&mut self, now_secs: i64) {
        if self.exhausted_at_secs.is_none()
            && self.plan_free_micros() == 0
            && self.wallet_free_micros() == 0
            && !self.grants.iter().any(|grant| grant.pays_calls(now_secs))
        {
            self.exhausted_at_secs = Some(now_secs);
        }
    }

    /// R24: the grants in the order they are spent: lower priority first, then the soonest
    /// expiry (never-expiring last), then the oldest, then by id.
    fn spending_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.grants.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&self.grants[a], &self.grants[b]);
            (
                a.priority,
                a.expires_at_secs.is_none(),
                a.expires_at_secs,
                a.created_at_secs,
                &a.id,
            )
                .cmp(&(
                    b.priority,
                    b.expires_at_secs.is_none(),
                    b.expires_at_secs,
                    b.created_at_secs,
                    &b.id,
                ))
        });
        order
    }

    /// R2, R5, R6, R7, R24, R25: how `amount_micros` of usage of `kind` is paid for `agent` (plan
    /// first, then the grants that apply in the spending order, a `stop` agent's promotional ones
    /// only, then the wallet for a `use_balance` agent; holds are not available; the monthly
    /// limit counts spend and holds, of grants too).
    fn fund(
        &self,
        agent: usize,
        kind: Kind,
        amount_micros: i64,
        now_secs: i64,
    ) -> Result<Funding, &'static str> {
        let setup = &self.agents[agent];
        if setup.monthly_limit_micros.is_some_and(|limit| {
            setup.spent_in(self.spend_cycle()) + setup.held_micros + amount_micros > limit
        }) {
            return Err("limit_reached");
        }
        let mut funding = Funding {
            plan_micros: amount_micros.min(self.plan_free_micros()),
            ..Funding::default()
        };
        let mut rest = amount_micros - funding.plan_micros;
        if rest > 0 && !self.grants.is_empty() {
            for index in self.spending_order() {
                let grant = &self.grants[index];
                if rest == 0 {
                    break;
                }
                if grant.paid && setup.stops_at_plan_end {
                    continue;
                }
                let taken = rest.min(grant.available_for(kind, agent, now_secs));
                if taken > 0 {
                    funding.grants.push((index, taken));
                    rest -= taken;
                }
            }
        }
        if rest == 0 {
            Ok(funding)
        } else if setup.stops_at_plan_end {
            Err("plan_credits_exhausted")
        } else if rest <= self.wallet_free_micros() {
            funding.wallet_micros = rest;
            Ok(funding)
        } else {
            Err("insufficient_funds")
        }
    }

    /// Every grant's (key, remaining as its entries left it, held), by key (a shrunk list may
    /// make a later key first, by a replay whose first request was dropped).
    fn grant_rows(&self) -> Vec<(u32, i64, i64)> {
        let mut rows: Vec<(u32, i64, i64)> = self
            .grants
            .iter()
            .map(|grant| (grant.key, grant.remaining_micros, grant.held_micros))
            .collect();
        rows.sort_unstable();
        rows
    }

    /// Every grant as a read shows it at `now_secs`, by key.
    fn grant_views(&self, now_secs: i64) -> Vec<GrantView> {
        let mut views: Vec<GrantView> = self
            .grants
            .iter()
            .map(|grant| grant.view(now_secs))
            .collect();
        views.sort_unstable_by_key(|view| view.key);
        views
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallStatus {
    Active,
    Ended,
    Expired,
}

#[derive(Debug, Clone)]
struct Call {
    ws: usize,
    agent: usize,
    per_minute_micros: i64,
    grace: bool,
    reserved_secs: i64,
    held_plan_micros: i64,
    held_wallet_micros: i64,
    /// What it holds of each grant (index in its workspace's grants).
    held_grants: BTreeMap<usize, i64>,
    expires_at_secs: i64,
    status: CallStatus,
    posted: Option<PostAnswer>,
    /// The cycle it was authorized in (for the tally of calls held over a renewal).
    cycle_start: Option<i64>,
}

impl Call {
    /// What it holds of every source.
    fn held_micros(&self) -> i64 {
        self.held_plan_micros + self.held_wallet_micros + self.held_grants.values().sum::<i64>()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
struct Payment {
    ws: usize,
    /// An automatic recharge rather than a top-up.
    recharge: bool,
    /// When it was created; a pending payment was last looked at then (R21).
    created_at_secs: i64,
    money_micros: i64,
    credits_micros: i64,
    status: PaymentStatus,
    /// R12: money refunded or disputed so far (at most what was paid), and the credits taken
    /// back for it.
    reversed_money_micros: i64,
    reversed_credits_micros: i64,
}

/// The model's whole state.
#[derive(Debug, Clone)]
pub struct Model {
    now_secs: i64,
    /// Each workspace's test clock, once one is set: its frozen time, which everything about that
    /// workspace runs at instead of `now_secs` (the rules' "Test clocks").
    clocks: Vec<Option<i64>>,
    workspaces: Vec<Workspace>,
    /// Calls by id number, in the order they were authorized.
    calls: BTreeMap<u32, Call>,
    /// Authorization order, for the sweep's order among equal expiries.
    call_order: Vec<u32>,
    /// Payments by id (`p<n>` top-ups, `ar_w<ws>_<n>` recharges).
    payments: BTreeMap<String, Payment>,
    /// Refunds and disputes applied, by id number: the credits each took back (R8).
    reversals: BTreeMap<u32, i64>,
    /// Invoices recorded, by id number: (workspace, the period's start).
    invoices: BTreeMap<u32, (usize, i64)>,
    /// Whether the catalog stored last is the repriced one, and how many were stored.
    repriced: bool,
    catalog_versions: i64,
    /// How often the rarer grant paths ran, for the tally (`notes`).
    notes: BTreeMap<&'static str, usize>,
}

/// A plan's terms (R13, R2): its fee (money), the credits a cycle grants, and what a cycle's
/// end keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Terms {
    price_money_micros: i64,
    monthly_credits_micros: i64,
    rollover_max_micros: i64,
}

impl Terms {
    /// Decisions ("Plans and cycles"): an upgrade is a higher (price, monthly credits).
    fn is_upgrade_to(self, to: Terms) -> bool {
        (to.price_money_micros, to.monthly_credits_micros)
            > (self.price_money_micros, self.monthly_credits_micros)
    }
}

/// A plan's terms in the shipped catalog (free 10 credits; Basic 29 USD, 1,000; Professional
/// 99 USD, 5,000, up to 1,000 rolling over) or the repriced one the simulation puts
/// (`Op::PutCatalog`: free 20; Basic 29 USD, 1,500; Professional 99 USD, 6,000, up to 500).
fn plan_terms(plan: Plan, repriced: bool) -> Terms {
    let (price, credits, rollover) = match (plan, repriced) {
        (Plan::None, _) => (0, 0, 0),
        (Plan::Free, false) => (0, 10, 0),
        (Plan::Free, true) => (0, 20, 0),
        (Plan::Basic, false) => (29, 1_000, 0),
        (Plan::Basic, true) => (29, 1_500, 0),
        (Plan::Professional, false) => (99, 5_000, 1_000),
        (Plan::Professional, true) => (99, 6_000, 500),
    };
    Terms {
        price_money_micros: price * 1_000_000,
        monthly_credits_micros: credits * CREDIT_MICROS,
        rollover_max_micros: rollover * CREDIT_MICROS,
    }
}

/// R24, R26: what a call's posting takes of each grant (index, credits) from `budget`: what the
/// call holds of each grant first, in the spending order (a grant made since, however early in
/// the order, does not take a hold's place), then what a debit would take of them (a `stop`
/// agent's promotional ones only).
fn grants_for_posting(
    ws: &Workspace,
    call: &Call,
    budget: &mut i64,
    now_secs: i64,
) -> BTreeMap<usize, i64> {
    let mut taken = BTreeMap::new();
    if ws.grants.is_empty() {
        return taken;
    }
    let order = ws.spending_order();
    let stops = ws.agents[call.agent].stops_at_plan_end;
    for &index in &order {
        let held = call.held_grants.get(&index).copied().unwrap_or(0);
        let micros = (*budget).min(held);
        if micros > 0 {
            taken.insert(index, micros);
            *budget -= micros;
        }
    }
    for &index in &order {
        let grant = &ws.grants[index];
        if grant.paid && stops {
            continue;
        }
        let micros = (*budget).min(grant.available_for(Kind::Call, call.agent, now_secs));
        if micros > 0 {
            *taken.entry(index).or_default() += micros;
            *budget -= micros;
        }
    }
    taken
}

/// `ceil(a * b / c)` for non-negative figures: charges round up (units, above the rules).
fn ceil_div(a: i64, b: i64, c: i64) -> i64 {
    let product = i128::from(a) * i128::from(b);
    ((product + i128::from(c) - 1) / i128::from(c)) as i64
}

/// R4: a call's price per minute, by direction and number, in the shipped catalog or the
/// repriced one (toll-free 0.05, inbound 0.015, outbound 0.03 to `+1`, 0.04 to `+44`, 0.06
/// elsewhere).
fn per_minute_micros(number: Number, inbound: bool, repriced: bool) -> i64 {
    match (number, inbound, repriced) {
        (Number::UsTollFree, _, false) => 40_000,
        (Number::UsTollFree, _, true) => 50_000,
        (_, true, false) => 10_000,
        (_, true, true) => 15_000,
        (Number::Us, false, false) => 20_000,
        (Number::Us, false, true) => 30_000,
        (Number::Uk, false, false) => 30_000,
        (Number::Uk, false, true) => 40_000,
        (Number::France, false, false) => 50_000,
        (Number::France, false, true) => 60_000,
    }
}

/// R4: seconds billed, per started increment.
fn billed_secs(secs: i64) -> i64 {
    if secs <= 0 {
        0
    } else {
        (secs + INCREMENT_SECS - 1) / INCREMENT_SECS * INCREMENT_SECS
    }
}

fn call_cost_micros(per_minute_micros: i64, billed_secs: i64) -> i64 {
    ceil_div(per_minute_micros, billed_secs, 60)
}

/// R4: what a usage event costs (repriced: a message 0.012, an SMS segment 0.008, a minute of
/// speech-to-text 0.007, an AI task 0.025).
fn usage_cost_micros(usage: Usage, repriced: bool) -> i64 {
    let (message, sms, stt, ai_task) = if repriced {
        (12_000, 8_000, 7_000, 25_000)
    } else {
        (10_000, 7_500, 6_000, 20_000)
    };
    match usage {
        Usage::Message(count) => message * count,
        Usage::Sms(segments) => sms * segments,
        Usage::Stt(micro_minutes) => ceil_div(stt, micro_minutes, CREDIT_MICROS),
        Usage::AiTask(count) => ai_task * count,
        Usage::Call {
            number,
            inbound,
            secs,
        } => call_cost_micros(
            per_minute_micros(number, inbound, repriced),
            billed_secs(secs),
        ),
    }
}

impl Model {
    /// Workspaces as set up, each on its plan with its first period paid, at `now_secs`.
    pub fn new(setup: &[WorkspaceSetup], now_secs: i64) -> Self {
        let workspaces = setup
            .iter()
            .map(|ws| Workspace {
                plan: (ws.plan != Plan::None).then_some(ws.plan),
                pending: None,
                anchor_day: 1,
                cycle_start: (ws.plan != Plan::None).then_some(CYCLE_START_SECS),
                cycle_end: (ws.plan != Plan::None)
                    .then(|| next_cycle_start_secs(CYCLE_START_SECS, 1)),
                cycle_granted: ws.plan != Plan::None,
                stripe_subscription: plan_terms(ws.plan, false).price_money_micros > 0,
                recharge: Recharge::default(),
                terms: plan_terms(ws.plan, false),
                plan_micros: plan_terms(ws.plan, false).monthly_credits_micros,
                wallet_micros: 0,
                held_plan_micros: 0,
                held_wallet_micros: 0,
                exhausted_at_secs: None,
                agents: ws
                    .agents
                    .iter()
                    .map(|agent| Agent {
                        stops_at_plan_end: agent.stops_at_plan_end,
                        monthly_limit_micros: agent.monthly_limit_micros,
                        daily_call_limit: agent.daily_call_limit.map(i64::from),
                        max_concurrent_calls: agent.max_concurrent_calls.map(i64::from),
                        spent_micros: 0,
                        spent_cycle_start: 0,
                        held_micros: 0,
                        calls_in_progress: 0,
                        calls_on_day: (0, 0),
                    })
                    .collect(),
                debited: BTreeMap::new(),
                grants: Vec::new(),
            })
            .collect();
        Self {
            now_secs,
            clocks: vec![None; setup.len()],
            workspaces,
            calls: BTreeMap::new(),
            call_order: Vec::new(),
            payments: BTreeMap::new(),
            invoices: BTreeMap::new(),
            repriced: false,
            catalog_versions: 0,
            reversals: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }

    /// How often the rarer grant paths ran (a grant's unused hold leaving at a call's release, a
    /// posting charging a grant past its expiry or voided, ...), for the tally.
    pub fn notes(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.notes.iter().map(|(label, count)| (*label, *count))
    }

    fn note(&mut self, label: &'static str) {
        *self.notes.entry(label).or_default() += 1;
    }

    /// The simulated time.
    pub fn now_secs(&self) -> i64 {
        self.now_secs
    }

    /// The time workspace `ws` runs at: its test clock's frozen time if it has one, else the
    /// simulated time.
    fn ws_now(&self, ws: usize) -> i64 {
        self.clocks[ws].unwrap_or(self.now_secs)
    }

    /// `POST /v1/test-clocks/{ws}`: the clock only moves forward from the time the workspace
    /// runs at (its frozen time, or the simulated time before it has one); an earlier time is
    /// refused and changes nothing. Answers the frozen time.
    fn set_test_clock(&mut self, ws: usize, at_secs: i64) -> Result<i64, &'static str> {
        if at_secs < self.ws_now(ws) {
            return Err("validation_error");
        }
        self.clocks[ws] = Some(at_secs);
        Ok(at_secs)
    }

    /// Every balance, as the simulation compares them.
    pub fn balances(&self) -> Balances {
        Balances {
            workspaces: self
                .workspaces
                .iter()
                .enumerate()
                .map(|(index, ws)| (index, ws, self.ws_now(index).div_euclid(DAY_SECS)))
                .map(|(index, ws, today)| WorkspaceBalances {
                    plan_micros: ws.plan_micros,
                    wallet_micros: ws.wallet_micros,
                    held_plan_micros: ws.held_plan_micros,
                    held_wallet_micros: ws.held_wallet_micros,
                    exhausted_at_secs: ws.exhausted_at_secs,
                    agents: ws
                        .agents
                        .iter()
                        .map(|agent| {
                            let (day, calls) = agent.calls_on_day;
                            let today_calls = if day == today { calls } else { 0 };
                            (
                                agent.spent_in(ws.spend_cycle()),
                                today_calls,
                                agent.calls_in_progress,
                            )
                        })
                        .collect(),
                    grants: ws.grant_rows(),
                    plans: (ws.plan.and_then(Plan::id), ws.pending.and_then(Plan::id)),
                    cycle: (ws.cycle_start, ws.cycle_end),
                    test_clock: self.clocks[index],
                })
                .collect(),
        }
    }

    /// Every workspace's grants as a read shows them now (R23), by key.
    pub fn grant_views(&self) -> Vec<Vec<GrantView>> {
        self.workspaces
            .iter()
            .enumerate()
            .map(|(index, ws)| ws.grant_views(self.ws_now(index)))
            .collect()
    }

    /// Applies one operation and says what the ledger must answer.
    pub fn apply(&mut self, op: &Op) -> Answer {
        match op {
            Op::Debit(event) => Answer::Debit(self.debit(event)),
            Op::Batch(events) => {
                // R8 and "as one-by-one debits": each event decided on what the ones before left.
                Answer::Batch(events.iter().map(|event| self.debit(event)).collect())
            }
            Op::Authorize {
                ws,
                agent,
                call,
                number,
                inbound,
            } => Answer::Authorized(self.authorize(*ws, *agent, *call, *number, *inbound)),
            Op::Heartbeat { call, elapsed_secs } => {
                Answer::Heartbeat(self.heartbeat(*call, *elapsed_secs))
            }
            Op::End {
                call,
                duration_secs,
            } => Answer::Posted(self.end(*call, *duration_secs)),
            Op::ExpireHolds => Answer::Expired(self.expire_overdue(None)),
            Op::TopUp {
                ws,
                payment,
                amount_money_micros,
            } => Answer::TopUp(self.top_up(*ws, *payment, *amount_money_micros)),
            Op::Settle { payment, succeeded } => {
                Answer::Settled(self.settle(&format!("p{payment}"), *succeeded, false))
            }
            Op::SetAutoRecharge { ws, settings } => {
                Answer::RechargeSet(self.set_auto_recharge(*ws, settings))
            }
            Op::SweepRecharges => Answer::Swept(Ok(self.sweep_recharges())),
            Op::SettleRecharge {
                ws,
                succeeded,
                hard_decline,
            } => {
                // Its latest recharge: the sweep names the n-th `ar_w<ws>_<n>`.
                let claimed = self
                    .payments
                    .values()
                    .filter(|paid| paid.recharge && paid.ws == *ws)
                    .count();
                let id = format!("ar_w{ws}_{claimed}");
                Answer::Settled(self.settle(&id, *succeeded, *hard_decline))
            }
            Op::Reconcile { succeeded } => Answer::Reconciled(Ok(self.reconcile(*succeeded))),
            Op::PutCatalog { repriced } => {
                // The contract: a new version applies to new debits and calls, and to a plan's
                // terms when they next take effect (a cycle, a subscription, an upgrade).
                self.repriced = *repriced;
                self.catalog_versions += 1;
                Answer::CatalogPut(Ok(self.catalog_versions))
            }
            Op::Grant { ws, key, terms } => Answer::Granted(self.grant(*ws, *key, terms)),
            Op::Void { ws, key } => Answer::Voided(self.void(*ws, *key)),
            Op::ExpireGrants => Answer::GrantsExpired(self.expire_grants()),
            Op::Renew => Answer::Renewed(Ok(self.renew())),
            Op::InvoicePaid {
                ws,
                invoice,
                next,
                offset_secs,
            } => Answer::InvoicePaid(Ok(self.invoice_paid(*ws, *invoice, *next, *offset_secs))),
            Op::ChangePlan {
                ws,
                plan,
                first_period_paid,
            } => Answer::PlanChanged(self.change_plan(*ws, *plan, *first_period_paid)),
            Op::Reverse {
                payment,
                reversal,
                amount_money_micros,
                ..
            } => Answer::Reversed(self.reverse(*payment, *reversal, *amount_money_micros)),
            Op::CancelPendingChange { ws } => {
                Answer::PendingCancelled(match &mut self.workspaces[*ws].pending {
                    None => Err("not_found"),
                    pending => {
                        *pending = None;
                        Ok(())
                    }
                })
            }
            Op::AdvanceTo { at_secs } => {
                self.now_secs = self.now_secs.max(*at_secs);
                Answer::Advanced
            }
            Op::Advance { secs } => {
                self.now_secs += secs;
                Answer::Advanced
            }
            Op::SetTestClock { ws, at_secs } => {
                Answer::TestClock(self.set_test_clock(*ws, *at_secs))
            }
        }
    }

    fn debit(&mut self, event: &Event) -> Result<DebitAnswer, &'static str> {
        let now = self.ws_now(event.ws);
        let ws = &mut self.workspaces[event.ws];
        // R8: an event id already debited answers its first result; another event under the
        // same id is a conflict. A refused event was not debited, so it is decided again.
        if let Some((first, answer)) = ws.debited.get(&event.id) {
            return if first == event {
                Ok(*answer)
            } else {
                Err("idempotency_conflict")
            };
        }
        if ws.plan.is_none() {
            return Err("billing_not_configured");
        }
        let cost = usage_cost_micros(event.usage, self.repriced);
        let funding = ws.fund(event.agent, event.usage.kind(), cost, now)?;
        ws.plan_micros -= funding.plan_micros;
        ws.wallet_micros -= funding.wallet_micros;
        for &(index, micros) in &funding.grants {
            ws.grants[index].remaining_micros -= micros;
        }
        let cycle = ws.spend_cycle();
        ws.agents[event.agent].spend(cycle, cost);
        ws.note_if_exhausted(now);
        let answer = DebitAnswer {
            charged_micros: cost,
            from_plan_micros: funding.plan_micros,
            from_grants_micros: funding.grants_micros(),
            from_wallet_micros: funding.wallet_micros,
            wallet_after_micros: ws.wallet_micros,
            plan_after_micros: ws.plan_micros,
        };
        ws.debited.insert(event.id, (*event, answer));
        Ok(answer)
    }

    fn authorize(
        &mut self,
        ws_index: usize,
        agent_index: usize,
        call_id: u32,
        number: Number,
        inbound: bool,
    ) -> Result<(String, i64, bool), &'static str> {
        if self.workspaces[ws_index].plan.is_none() {
            return Err("billing_not_configured");
        }
        // Decided on what the workspace's overdue holds leave once posted; a refusal writes
        // nothing, those postings included (they wait for the sweep).
        let mut next = self.clone();
        next.expire_overdue(Some(ws_index));
        let now = next.ws_now(ws_index);
        let today = now.div_euclid(DAY_SECS);
        let ws = &mut next.workspaces[ws_index];
        let agent = &ws.agents[agent_index];
        let calls_today = if agent.calls_on_day.0 == today {
            agent.calls_on_day.1
        } else {
            0
        };
        if agent
            .daily_call_limit
            .is_some_and(|limit| calls_today >= limit)
            || agent
                .max_concurrent_calls
                .is_some_and(|limit| agent.calls_in_progress >= limit)
        {
            return Err("limit_reached");
        }
        let per_minute = per_minute_micros(number, inbound, next.repriced);
        let first_hold = call_cost_micros(per_minute, INCREMENT_SECS);
        // R7: with nothing to pay from, an inbound call to a standard number of a
        // `use_balance` agent still connects, holding nothing, within the grace period.
        let grace_open = inbound
            && number != Number::UsTollFree
            && ws
                .exhausted_at_secs
                .is_none_or(|since| now < since + INBOUND_GRACE_SECS);
        let (funding, grace) = match ws.fund(agent_index, Kind::Call, first_hold, now) {
            Ok(funding) => (funding, false),
            Err("insufficient_funds") if grace_open => (Funding::default(), true),
            Err(refused) => return Err(refused),
        };
        ws.held_plan_micros += funding.plan_micros;
        ws.held_wallet_micros += funding.wallet_micros;
        for &(index, micros) in &funding.grants {
            ws.grants[index].held_micros += micros;
        }
        let agent = &mut ws.agents[agent_index];
        agent.held_micros += funding.total_micros();
        agent.calls_in_progress += 1;
        agent.calls_on_day = (today, calls_today + 1);
        if grace {
            ws.exhausted_at_secs.get_or_insert(now);
        } else {
            ws.note_if_exhausted(now);
        }
        let cycle_start = ws.cycle_start;
        next.calls.insert(
            call_id,
            Call {
                cycle_start,
                ws: ws_index,
                agent: agent_index,
                per_minute_micros: per_minute,
                grace,
                reserved_secs: INCREMENT_SECS,
                held_plan_micros: funding.plan_micros,
                held_wallet_micros: funding.wallet_micros,
                held_grants: funding.grants.iter().copied().collect(),
                expires_at_secs: now + HOLD_TIMEOUT_SECS,
                status: CallStatus::Active,
                posted: None,
            },
        );
        next.call_order.push(call_id);
        *self = next;
        Ok(("authorized".into(), funding.total_micros(), grace))
    }

    fn heartbeat(
        &mut self,
        call_id: u32,
        elapsed_secs: i64,
    ) -> Result<(bool, Option<String>, i64), &'static str> {
        let Some(call) = self.calls.get(&call_id) else {
            return Err("not_found");
        };
        if call.status != CallStatus::Active {
            return Ok((false, Some("call_not_active".into()), 0));
        }
        let ws_index = call.ws;
        self.expire_overdue(Some(ws_index));
        let now = self.ws_now(ws_index);
        let call = self.calls[&call_id].clone();
        if call.status != CallStatus::Active {
            return Ok((false, Some("hold_expired".into()), 0));
        }
        // R5: the hold must cover the minutes so far plus the next one.
        let needed_secs = billed_secs(elapsed_secs) + INCREMENT_SECS;
        let ws = &mut self.workspaces[ws_index];
        let mut extra = Funding::default();
        let mut reason = None;
        if call.grace {
            if ws
                .exhausted_at_secs
                .is_some_and(|since| now >= since + INBOUND_GRACE_SECS)
            {
                reason = Some("insufficient_funds");
            }
        } else if needed_secs > call.reserved_secs {
            let more = call_cost_micros(call.per_minute_micros, needed_secs)
                - call_cost_micros(call.per_minute_micros, call.reserved_secs);
            // R24: a heartbeat holds more in the same order.
            match ws.fund(call.agent, Kind::Call, more, now) {
                Ok(funding) => extra = funding,
                Err(refused) => reason = Some(refused),
            }
        }
        ws.held_plan_micros += extra.plan_micros;
        ws.held_wallet_micros += extra.wallet_micros;
        for &(index, micros) in &extra.grants {
            ws.grants[index].held_micros += micros;
        }
        ws.agents[call.agent].held_micros += extra.total_micros();
        ws.note_if_exhausted(now);
        let call = self.calls.get_mut(&call_id).expect("the call");
        call.held_plan_micros += extra.plan_micros;
        call.held_wallet_micros += extra.wallet_micros;
        for &(index, micros) in &extra.grants {
            *call.held_grants.entry(index).or_default() += micros;
        }
        if reason.is_none() {
            call.reserved_secs = call.reserved_secs.max(needed_secs);
        }
        // Every heartbeat, refused or not, keeps the call alive for another timeout.
        call.expires_at_secs = now + HOLD_TIMEOUT_SECS;
        Ok((
            reason.is_none(),
            reason.map(str::to_owned),
            call.held_micros(),
        ))
    }

    fn end(&mut self, call_id: u32, duration_secs: i64) -> Result<PostAnswer, &'static str> {
        let Some(call) = self.calls.get(&call_id) else {
            return Err("not_found");
        };
        match (call.status, &call.posted) {
            (CallStatus::Active, _) => Ok(self.post(call_id, duration_secs, CallStatus::Ended)),
            (CallStatus::Ended, Some(posted)) if posted.duration_secs != duration_secs => {
                Err("call_already_ended")
            }
            (_, posted) => Ok(posted.clone().expect("a posted call has its answer")),
        }
    }

    /// Posts an active call at `duration_secs` (R5; decisions: "A call is charged at most its
    /// hold plus what its policy and limits still allow", "A granted hold is a commitment"; R24,
    /// R26 for grants).
    fn post(&mut self, call_id: u32, duration_secs: i64, status: CallStatus) -> PostAnswer {
        let call = self.calls[&call_id].clone();
        let now = self.ws_now(call.ws);
        let ws = &mut self.workspaces[call.ws];
        let own_hold = call.held_micros();
        let billed = billed_secs(duration_secs);
        let cost = call_cost_micros(call.per_minute_micros, billed);
        let plan_room = (ws.plan_micros - (ws.held_plan_micros - call.held_plan_micros)).max(0);
        let agent = &ws.agents[call.agent];
        let wallet_room = if call.grace {
            UNBOUNDED_MICROS
        } else if agent.stops_at_plan_end {
            call.held_wallet_micros
        } else {
            (ws.wallet_micros - (ws.held_wallet_micros - call.held_wallet_micros))
                .max(call.held_wallet_micros)
        };
        let limit_room = agent
            .monthly_limit_micros
            .map_or(UNBOUNDED_MICROS, |limit| {
                (limit - agent.spent_in(ws.spend_cycle()) - (agent.held_micros - own_hold))
                    .max(own_hold)
            });
        let mut budget = cost.min(limit_room);
        let from_plan = budget.min(plan_room);
        budget -= from_plan;
        let taken = grants_for_posting(ws, &call, &mut budget, now);
        let from_grants: i64 = taken.values().sum();
        let from_wallet = budget.min(wallet_room);
        let charged = from_plan + from_grants + from_wallet;
        ws.held_plan_micros -= call.held_plan_micros;
        ws.held_wallet_micros -= call.held_wallet_micros;
        ws.plan_micros -= from_plan;
        ws.wallet_micros -= from_wallet;
        let mut notes = Vec::new();
        for (&index, &held) in &call.held_grants {
            let grant = &mut ws.grants[index];
            grant.held_micros -= held;
            let used = taken.get(&index).copied().unwrap_or(0).min(held);
            // R26: the unused rest of a hold on a grant that expired or was voided under it
            // leaves at the release.
            if !grant.in_force(now) {
                notes.push("end charged a grant held past its expiry or voiding");
                if held > used {
                    grant.remaining_micros -= held - used;
                    notes.push(if grant.voided {
                        "end released an unused hold on a voided grant"
                    } else {
                        "end released an unused hold on an expired grant"
                    });
                }
            }
        }
        for (&index, &micros) in &taken {
            ws.grants[index].remaining_micros -= micros;
        }
        let cycle = ws.spend_cycle();
        if call.cycle_start != ws.cycle_start {
            notes.push("end posted a call held over a renewal");
        }
        let agent = &mut ws.agents[call.agent];
        agent.held_micros -= own_hold;
        agent.calls_in_progress -= 1;
        agent.spend(cycle, charged);
        ws.note_if_exhausted(now);
        let answer = PostAnswer {
            status: if status == CallStatus::Expired {
                "expired"
            } else {
                "ended"
            },
            duration_secs,
            billed_secs: billed,
            charged_micros: charged,
            from_plan_micros: from_plan,
            from_grants_micros: from_grants,
            from_wallet_micros: from_wallet,
            unbilled_micros: cost - charged,
            wallet_after_micros: ws.wallet_micros,
            plan_after_micros: ws.plan_micros,
        };
        for label in notes {
            self.note(label);
        }
        let call = self.calls.get_mut(&call_id).expect("the call");
        call.status = status;
        call.held_plan_micros = 0;
        call.held_wallet_micros = 0;
        call.held_grants.clear();
        call.posted = Some(answer.clone());
        answer
    }

    /// R5: posts at their reserved duration the active calls whose timeout has passed (of one
    /// workspace, or all), earliest expiry first. Returns how many.
    fn expire_overdue(&mut self, ws: Option<usize>) -> usize {
        let mut overdue: Vec<(i64, usize, u32)> = self
            .call_order
            .iter()
            .enumerate()
            .filter_map(|(order, id)| {
                let call = &self.calls[id];
                (call.status == CallStatus::Active
                    && call.expires_at_secs <= self.ws_now(call.ws)
                    && ws.is_none_or(|ws| ws == call.ws))
                .then_some((call.expires_at_secs, order, *id))
            })
            .collect();
        overdue.sort_unstable();
        for (_, _, id) in &overdue {
            let reserved = self.calls[id].reserved_secs;
            self.post(*id, reserved, CallStatus::Expired);
        }
        overdue.len()
    }

    /// R22: grants once per key. Terms that are bad whenever they are asked are refused first;
    /// a retry with the first request's terms then answers its grant, even past its expiry
    /// (decisions: "Credit grants"), and only a new grant is refused for being born
    /// expired (an expiry not later than now).
    fn grant(
        &mut self,
        ws_index: usize,
        key: u32,
        terms: &GrantTerms,
    ) -> Result<(bool, GrantView), &'static str> {
        let now = self.ws_now(ws_index);
        let priority = terms.priority.unwrap_or(GRANT_PRIORITY_DEFAULT);
        if !(0..=GRANT_PRIORITY_MAX).contains(&priority)
            || terms
                .expires_at_secs
                .zip(terms.effective_at_secs)
                .is_some_and(|(expires, effective)| expires <= effective)
            || terms.kinds.as_ref().is_some_and(Vec::is_empty)
        {
            return Err("validation_error");
        }
        let normal = normal_terms(terms);
        let ws = &mut self.workspaces[ws_index];
        if let Some(made) = ws.grants.iter().find(|grant| grant.key == key) {
            return if made.terms == normal {
                Ok((false, made.view(now)))
            } else {
                Err("idempotency_conflict")
            };
        }
        if terms.expires_at_secs.is_some_and(|at| at <= now) {
            return Err("validation_error");
        }
        let grant = Grant {
            key,
            id: grant_id(ws_index, key),
            paid: terms.cost_basis_money_micros.is_some(),
            priority,
            effective_at_secs: terms.effective_at_secs.unwrap_or(now),
            expires_at_secs: terms.expires_at_secs,
            created_at_secs: now,
            remaining_micros: terms.amount_micros,
            held_micros: 0,
            voided: false,
            terms: normal,
        };
        let view = grant.view(now);
        ws.grants.push(grant);
        // R22: a grant that pays for calls ends the workspace's having run out (R7).
        if ws.exhausted_at_secs.is_some() && ws.grants.iter().any(|grant| grant.pays_calls(now)) {
            ws.exhausted_at_secs = None;
        }
        Ok((true, view))
    }

    /// R23: voiding takes the unspent, unheld part (its expiry instead, past it), once.
    fn void(&mut self, ws_index: usize, key: u32) -> Result<GrantView, &'static str> {
        let now = self.ws_now(ws_index);
        let Some(grant) = self.workspaces[ws_index]
            .grants
            .iter_mut()
            .find(|grant| grant.key == key)
        else {
            return Err("not_found");
        };
        if !grant.voided {
            grant.remaining_micros = grant.held_micros.min(grant.remaining_micros);
            grant.voided = true;
        }
        Ok(grant.view(now))
    }

    /// R23: the sweep posts, for every grant past its expiry, the unspent part calls do not hold.
    fn expire_grants(&mut self) -> usize {
        let mut posted = 0;
        for index in 0..self.workspaces.len() {
            let now = self.ws_now(index);
            for grant in &mut self.workspaces[index].grants {
                if grant.expired(now) && grant.remaining_micros > grant.held_micros {
                    grant.remaining_micros = grant.held_micros;
                    posted += 1;
                }
            }
        }
        posted
    }

    /// R13, R15, R16, decisions ("Plans and cycles"): rolls every workspace whose cycle ended
    /// forward to the cycle in force: at each end the unheld plan credits expire but the plan's
    /// rollover (credits held by calls stay with them), a pending downgrade takes over, and only
    /// the cycle in force gets credits, if its plan is free or its invoice was paid. Returns
    /// (workspaces renewed, cycles advanced, workspaces failed).
    fn renew(&mut self) -> (usize, usize, usize) {
        let repriced = self.repriced;
        let (mut renewed, mut cycles) = (0, 0);
        let mut held_over = 0;
        for index in 0..self.workspaces.len() {
            let now = self.ws_now(index);
            let mut advanced = 0;
            loop {
                let ws = &mut self.workspaces[index];
                let (Some(plan), Some(end)) = (ws.plan, ws.cycle_end) else {
                    break;
                };
                if end > now {
                    break;
                }
                if ws.held_plan_micros > 0 {
                    held_over += 1;
                }
                let expirable = ws.plan_free_micros();
                let expire = expirable - expirable.min(ws.terms.rollover_max_micros);
                if expire > 0 {
                    ws.plan_micros -= expire;
                    ws.note_if_exhausted(now);
                }
                let next_plan = ws.pending.take().unwrap_or(plan);
                ws.plan = Some(next_plan);
                ws.terms = plan_terms(next_plan, repriced);
                let next_end = next_cycle_start_secs(end, ws.anchor_day);
                ws.cycle_start = Some(end);
                ws.cycle_end = Some(next_end);
                ws.cycle_granted = false;
                advanced += 1;
                if next_end > now {
                    let free = ws.terms.price_money_micros == 0;
                    let paid = self.invoices.values().any(|&(of, period)| {
                        of == index && (period - end).abs() < INVOICE_SLACK_SECS
                    });
                    if free || paid {
                        self.workspaces[index].grant_cycle();
                    }
                }
            }
            if advanced > 0 {
                renewed += 1;
                cycles += advanced;
            }
        }
        for _ in 0..held_over {
            self.note("renewal with plan credits held by a call");
        }
        (renewed, cycles, 0)
    }

    /// R13: an invoice is recorded once per id; if its period starts within the slack of the
    /// cycle in force, that cycle gets its credits now (once). The period is the cycle in force's
    /// start (or the next one's) plus `offset_secs`; without a cycle, now plus it.
    fn invoice_paid(&mut self, ws_index: usize, invoice: u32, next: bool, offset_secs: i64) -> i64 {
        let now = self.now_secs;
        let ws = &mut self.workspaces[ws_index];
        let base = if next { ws.cycle_end } else { ws.cycle_start };
        let period = base.unwrap_or(now) + offset_secs;
        if self.invoices.contains_key(&invoice) {
            return 0;
        }
        self.invoices.insert(invoice, (ws_index, period));
        match ws.cycle_start {
            Some(start) if (period - start).abs() < INVOICE_SLACK_SECS => ws.grant_cycle(),
            _ => 0,
        }
    }

    /// `POST .../subscription` (R13-R15; decisions: "Plans and cycles", "Paid plans through
    /// Stripe"). Without a paid subscription in force, a free plan is subscribed to (or kept)
    /// and a paid one starts a subscription on a cycle anchored on today; with one, the same
    /// plan cancels a pending change, a higher one upgrades at once with the whole days left's
    /// share of its credits (rounded down), a lower one waits for the cycle's end.
    fn change_plan(
        &mut self,
        ws_index: usize,
        target: Plan,
        first_period_paid: bool,
    ) -> Result<PlanChangeAnswer, &'static str> {
        let now = self.ws_now(ws_index);
        let ws = &mut self.workspaces[ws_index];
        let id = |plan: Plan| plan.id().expect("a catalog plan");
        let answer = |action, plan: Plan, pending: Option<Plan>, effective_at_secs, credits| {
            PlanChangeAnswer {
                action,
                plan: id(plan),
                pending_plan: pending.map(id),
                effective_at_secs,
                credits_micros: credits,
            }
        };
        let target_terms = plan_terms(target, self.repriced);
        let paid_target = target_terms.price_money_micros > 0;
        let current = match ws.plan {
            Some(current) if ws.paid_subscription_in_force() || !paid_target => current,
            _ if paid_target => {
                // A first paid subscription (or one replacing a free plan).
                ws.stripe_subscription = true;
                let credits = ws.subscribe(target, target_terms, !first_period_paid, now);
                return Ok(answer("subscribed", target, None, now, credits));
            }
            _ => {
                let credits = ws.subscribe(target, target_terms, false, now);
                return Ok(answer("subscribed", target, None, now, credits));
            }
        };
        if current == target {
            let action = if ws.pending.take().is_some() {
                "pending_change_cancelled"
            } else {
                "unchanged"
            };
            return Ok(answer(action, current, None, now, 0));
        }
        let (start, end) = (
            ws.cycle_start.expect("a plan has a cycle"),
            ws.cycle_end.expect("a plan has a cycle"),
        );
        if !ws.terms.is_upgrade_to(target_terms) {
            ws.pending = Some(target);
            return Ok(answer("downgrade_scheduled", current, Some(target), end, 0));
        }
        // R14: the whole days left (UTC dates) of the cycle's days; none once it has ended.
        let days_left = (end.div_euclid(DAY_SECS) - now.div_euclid(DAY_SECS)).max(0);
        let days = end.div_euclid(DAY_SECS) - start.div_euclid(DAY_SECS);
        let credits = target_terms.monthly_credits_micros * days_left / days;
        ws.plan = Some(target);
        ws.terms = target_terms;
        ws.pending = None;
        ws.credit_plan(credits);
        Ok(answer("upgraded", target, None, now, credits))
    }

    /// R12, R8: a refund or dispute takes back, once per id, the paid share of the credits the
    /// payment bought (rounded up, never more than it bought) from the wallet, which may go
    /// below zero; never from plan credits or grants (R25). Only a payment that succeeded.
    fn reverse(
        &mut self,
        payment: u32,
        reversal: u32,
        amount_money_micros: i64,
    ) -> Result<i64, &'static str> {
        if amount_money_micros <= 0 {
            return Err("invalid_amount");
        }
        if let Some(&credits) = self.reversals.get(&reversal) {
            return Ok(credits);
        }
        let Some(&Payment { ws: paid_ws, .. }) = self.payments.get(&format!("p{payment}")) else {
            return Err("not_found");
        };
        let now = self.ws_now(paid_ws);
        let paid = self
            .payments
            .get_mut(&format!("p{payment}"))
            .expect("a payment");
        if paid.status != PaymentStatus::Succeeded {
            return Err("payment_not_succeeded");
        }
        let money_after = (paid.reversed_money_micros + amount_money_micros).min(paid.money_micros);
        let credits_after =
            ceil_div(paid.credits_micros, money_after, paid.money_micros).min(paid.credits_micros);
        let credits = credits_after - paid.reversed_credits_micros;
        paid.reversed_money_micros = money_after;
        paid.reversed_credits_micros = credits_after;
        let ws = &mut self.workspaces[paid.ws];
        ws.wallet_micros -= credits;
        ws.note_if_exhausted(now);
        let negative = ws.wallet_micros < 0;
        self.reversals.insert(reversal, credits);
        if negative {
            self.note("reverse took the wallet below zero");
        }
        Ok(credits)
    }

    fn top_up(
        &mut self,
        ws: usize,
        payment: u32,
        amount_money_micros: i64,
    ) -> Result<(), &'static str> {
        // R9: bounds; top-ups need no plan (decisions: "Top-ups are allowed without a plan").
        if amount_money_micros < TOPUP_MIN_MONEY_MICROS {
            return Err("amount_below_minimum");
        }
        if amount_money_micros > TOPUP_MAX_MONEY_MICROS {
            return Err("amount_above_maximum");
        }
        // R1: at a credit price of 1, money buys as many credits.
        self.payments.insert(
            format!("p{payment}"),
            Payment {
                ws,
                recharge: false,
                created_at_secs: self.ws_now(ws),
                money_micros: amount_money_micros,
                credits_micros: amount_money_micros,
                status: PaymentStatus::Pending,
                reversed_money_micros: 0,
                reversed_credits_micros: 0,
            },
        );
        Ok(())
    }

    fn settle(
        &mut self,
        payment: &str,
        succeeded: bool,
        hard_decline: bool,
    ) -> Result<&'static str, &'static str> {
        let Some(paid) = self.payments.get_mut(payment) else {
            return Err("not_found");
        };
        // R8, R9: credited exactly once; a success is final, and a payment that failed may
        // still succeed (decisions: "Payments").
        match (paid.status, succeeded) {
            (PaymentStatus::Succeeded, _) => {}
            (_, true) => {
                paid.status = PaymentStatus::Succeeded;
                let ws = &mut self.workspaces[paid.ws];
                ws.wallet_micros += paid.credits_micros;
                ws.after_credit();
            }
            (_, false) => {
                paid.status = PaymentStatus::Failed;
                // R11, decisions: a hard decline of a recharge turns auto-recharge off; a soft
                // one re-arms it (the daily cap bounds the retries).
                if paid.recharge {
                    let ws = &mut self.workspaces[paid.ws];
                    ws.recharge.armed = !hard_decline;
                    ws.recharge.enabled &= !hard_decline;
                }
            }
        }
        Ok(match paid.status {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        })
    }

    /// R11: saves the settings: the amount within the top-up bounds (R9), a monthly cap above
    /// zero and at least the amount; armed when enabled (every workspace here has a card).
    fn set_auto_recharge(
        &mut self,
        ws: usize,
        settings: &RechargeSettings,
    ) -> Result<(), &'static str> {
        if settings.amount_money_micros < TOPUP_MIN_MONEY_MICROS {
            return Err("amount_below_minimum");
        }
        if settings.amount_money_micros > TOPUP_MAX_MONEY_MICROS {
            return Err("amount_above_maximum");
        }
        if settings
            .max_per_month_money_micros
            .is_some_and(|cap| cap <= 0 || cap < settings.amount_money_micros)
        {
            return Err("validation_error");
        }
        let recharge = &mut self.workspaces[ws].recharge;
        recharge.enabled = settings.enabled;
        recharge.armed = settings.enabled;
        // R1: at a credit price of 1 the threshold in credits is the money.
        recharge.threshold_credits_micros = settings.threshold_money_micros;
        recharge.amount_money_micros = settings.amount_money_micros;
        recharge.max_per_month_money_micros = settings.max_per_month_money_micros;
        Ok(())
    }

    /// R11, R27, decisions ("Auto-recharge"): the sweep looks at the workspaces enabled, armed
    /// and with a wallet (less its holds) under the threshold, by id, and claims a recharge for
    /// each that still needs one: none while one is pending, counting as money the pending
    /// recharges and the unheld credits of grants in force for every usage of every agent that
    /// do not expire within 7 days; not past the monthly cap (this UTC month's pending and
    /// succeeded recharges) nor the daily cap (5 in the last 24 hours), which pause it instead.
    /// A claimed recharge is pending, disarms it, and is charged at Stripe (its outcome is a
    /// later operation). Returns the ids claimed.
    fn sweep_recharges(&mut self) -> Vec<String> {
        let mut claimed = Vec::new();
        for index in 0..self.workspaces.len() {
            let now = self.ws_now(index);
            let (year, month, _) = civil_from_days(now.div_euclid(DAY_SECS));
            let month_start = days_from_civil(year, month, 1) * DAY_SECS;
            let month_end = next_cycle_start_secs(month_start, 1);
            let ws = &self.workspaces[index];
            let settings = &ws.recharge;
            if !(settings.enabled
                && settings.armed
                && ws.wallet_micros - ws.held_wallet_micros < settings.threshold_credits_micros)
            {
                continue;
            }
            let recharges: Vec<&Payment> = self
                .payments
                .values()
                .filter(|paid| paid.recharge && paid.ws == index)
                .collect();
            let pending: i64 = recharges
                .iter()
                .filter(|paid| paid.status == PaymentStatus::Pending)
                .map(|paid| paid.credits_micros)
                .sum();
            let last_day = recharges
                .iter()
                .filter(|paid| paid.created_at_secs > now - DAY_SECS)
                .count();
            let month_money: i64 = recharges
                .iter()
                .filter(|paid| {
                    (month_start..month_end).contains(&paid.created_at_secs)
                        && paid.status != PaymentStatus::Failed
                })
                .map(|paid| paid.money_micros)
                .sum();
            let total = recharges.len();
            let covering: i64 = ws
                .grants
                .iter()
                .filter(|grant| {
                    grant.in_force(now)
                        && grant.terms.kinds.is_none()
                        && grant.terms.agent.is_none()
                        && grant
                            .expires_at_secs
                            .is_none_or(|at| at > now + CREDITS_EXPIRING_SECS)
                })
                .map(|grant| (grant.remaining_micros - grant.held_micros).max(0))
                .sum();
            let effective = ws.wallet_micros - ws.held_wallet_micros + pending + covering;
            if pending > 0 || effective >= settings.threshold_credits_micros {
                continue;
            }
            let amount = settings.amount_money_micros;
            if settings
                .max_per_month_money_micros
                .is_some_and(|cap| month_money + amount > cap)
            {
                self.note("recharge paused at the monthly cap");
                continue;
            }
            if last_day >= RECHARGES_PER_DAY_MAX {
                self.note("recharge paused at the daily cap");
                continue;
            }
            let id = format!("ar_w{index}_{}", total + 1);
            self.payments.insert(
                id.clone(),
                Payment {
                    ws: index,
                    recharge: true,
                    created_at_secs: now,
                    money_micros: amount,
                    credits_micros: amount,
                    status: PaymentStatus::Pending,
                    reversed_money_micros: 0,
                    reversed_credits_micros: 0,
                },
            );
            self.workspaces[index].recharge.armed = false;
            claimed.push(id);
        }
        claimed
    }

    /// R21: every payment still pending 300 s after it was created (the simulation reports
    /// nothing else that would look at it) is settled as Stripe has it, `succeeded` or
    /// declined (soft), exactly as the webhook would. Returns (id, status) by id.
    fn reconcile(&mut self, succeeded: bool) -> Vec<(String, &'static str)> {
        let stale: Vec<String> = self
            .payments
            .iter()
            .filter(|(_, paid)| {
                paid.status == PaymentStatus::Pending
                    && paid.created_at_secs <= self.ws_now(paid.ws) - RECONCILE_AFTER_SECS
            })
            .map(|(id, _)| id.clone())
            .take(RECONCILE_BATCH_MAX)
            .collect();
        stale
            .into_iter()
            .map(|id| {
                let status = self.settle(&id, succeeded, false).expect("a payment");
                (id, status)
            })
            .collect()
    }
}
