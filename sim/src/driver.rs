//! The real ledger, driven natively on a fresh SQLite database through the same functions the
//! components call, its answers read into the model's shapes ([`Answer`], [`Balances`]).

use std::collections::BTreeMap;

use futures::executor::block_on;
use ledger::agents::{self, AgentLimits, OveragePolicy};
use ledger::catalog::{self, Catalog, CatalogDoc, Direction, UsageKind};
use ledger::grants::{self, Grant, GrantCategory, GrantInput, GrantScope, GrantStatus};
use ledger::plan_change::{self, PlanChangePlan};
use ledger::plans::{PlanChange, StartedSubscription};
use ledger::settlement::{Failure, FailureCode, Report};
use ledger::usage::{DebitResult, UsageEvent};
use ledger::workspace::WorkspaceInput;
use ledger::{LedgerError, audit, calendar, calls, payments, plans, usage, workspace};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::faults::{Fault, FaultyDb, Fired, Sabotage};
use crate::model::{
    Answer, Balances, DebitAnswer, GrantView, PlanChangeAnswer, PostAnswer, WorkspaceBalances,
};
use crate::{CYCLE_START_SECS, Event, GrantTerms, Kind, Number, Op, Usage, WorkspaceSetup};

/// The ledger on an SQLite database (in memory, or a file for the real faults), behind the
/// fault layer.
pub struct Ledger {
    db: FaultyDb,
    catalog: Catalog,
    workspaces: Vec<WorkspaceSetup>,
    /// Per workspace, the id of every grant asked for (made or not), to the key number it was
    /// asked with: the list is read only where one was asked for, and compared by key.
    grant_keys: Vec<BTreeMap<String, u32>>,
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

fn grant_key(key: u32) -> String {
    format!("k{key}")
}

/// The id R22 gives the grant made with `key` in `ws` (a void names the grant by it).
fn grant_id(ws: usize, key: u32) -> String {
    let hash = ledger::sha256_hex(&[ws_id(ws).as_bytes(), grant_key(key).as_bytes()]);
    format!("gr_{}", &hash[..32])
}

fn usage_kind(kind: Kind) -> UsageKind {
    match kind {
        Kind::Call => UsageKind::Call,
        Kind::Message => UsageKind::Message,
        Kind::Sms => UsageKind::Sms,
        Kind::Stt => UsageKind::Stt,
        Kind::AiTask => UsageKind::AiTask,
    }
}

fn grant_input(ws: usize, key: u32, terms: &GrantTerms) -> GrantInput {
    let scope = (terms.kinds.is_some() || terms.agent.is_some()).then(|| GrantScope {
        kinds: terms
            .kinds
            .as_ref()
            .map(|kinds| kinds.iter().copied().map(usage_kind).collect()),
        agent_id: terms.agent.map(agent_id),
    });
    GrantInput {
        workspace_id: ws_id(ws),
        amount: decimal(terms.amount_micros),
        category: if terms.cost_basis_money_micros.is_some() {
            GrantCategory::Paid
        } else {
            GrantCategory::Promotional
        },
        cost_basis: terms.cost_basis_money_micros.map(decimal),
        priority: terms.priority,
        effective_at: terms.effective_at_secs.map(calendar::rfc3339),
        expires_at: terms.expires_at_secs.map(calendar::rfc3339),
        scope,
        name: format!("g{key}"),
        metadata: BTreeMap::new(),
    }
}

fn status_name(status: GrantStatus) -> &'static str {
    match status {
        GrantStatus::Scheduled => "scheduled",
        GrantStatus::Active => "active",
        GrantStatus::Depleted => "depleted",
        GrantStatus::Expired => "expired",
        GrantStatus::Voided => "voided",
    }
}

/// A grant the ledger answered, as the model shows it: by the key its id was asked with
/// (`u32::MAX`: an id no request named).
fn grant_view(keys: &BTreeMap<String, u32>, grant: &Grant) -> GrantView {
    GrantView {
        key: keys.get(&grant.id).copied().unwrap_or(u32::MAX),
        remaining_micros: micros(grant.remaining),
        held_micros: micros(grant.held),
        status: status_name(grant.status),
    }
}

/// A plan id the ledger answered, as the model names it.
fn plan_name(id: &str) -> &'static str {
    match id {
        "free" => "free",
        "basic" => "basic",
        "professional" => "professional",
        _ => "a plan the catalog does not have",
    }
}

fn plan_change_answer(change: PlanChange) -> PlanChangeAnswer {
    PlanChangeAnswer {
        action: change.action,
        plan: plan_name(&change.plan_id),
        pending_plan: change.pending_plan_id.as_deref().map(plan_name),
        effective_at_secs: calendar::parse_rfc3339("effective_at", &change.effective_at)
            .unwrap_or(i64::MIN),
        credits_micros: micros(change.credits_granted),
    }
}

/// `POST .../subscription {"plan_id"}` as the user-api component runs it once Stripe's side is
/// done (`components/user-api/src/subscription.rs`): the ledger plans it; a first paid
/// subscription is claimed, then started on the subscription Stripe created (charged at once or
/// not, as `first_period_paid` says); anything else is `plans::change_plan` with the period paid.
async fn change_plan<S: ledger::Storage>(
    db: &S,
    catalog: &Catalog,
    ws: usize,
    plan_id: &str,
    first_period_paid: bool,
    now_secs: i64,
) -> Result<PlanChange, LedgerError> {
    let id = ws_id(ws);
    let subscriber = plan_change::subscriber(db, &id).await?;
    match plan_change::plan_change(&subscriber, catalog, plan_id, true)? {
        PlanChangePlan::LedgerOnly | PlanChangePlan::Change(_) => {
            plans::change_plan(db, catalog, &id, plan_id, true, now_secs).await
        }
        PlanChangePlan::Start(start) => {
            let claim = plans::subscription_claim(now_secs, &id);
            plans::claim_subscription(db, &id, &claim, now_secs).await?;
            let subscription_id = format!("sub_{id}_{now_secs}");
            let started = StartedSubscription {
                plan_id: &start.plan_id,
                claim: &claim,
                subscription_id: &subscription_id,
                first_period_paid,
            };
            plans::start_subscription(db, catalog, &id, started, now_secs).await
        }
    }
}

/// The catalog `PUT /v1/catalog` stores: the shipped one, or one with other rates and plan
/// terms and the same settings (the figures the model types in for it).
fn catalog_doc(repriced: bool) -> CatalogDoc {
    let mut doc = Catalog::default_catalog().expect("the shipped catalog").doc;
    if !repriced {
        return doc;
    }
    let figure = |text: &str| text.parse::<Decimal>().expect("a figure");
    for plan in &mut doc.plans {
        match plan.id.as_str() {
            "free" => plan.monthly_credits = figure("20"),
            "basic" => plan.monthly_credits = figure("1500"),
            "professional" => {
                plan.monthly_credits = figure("6000");
                plan.rollover_max_credits = Some(figure("500"));
            }
            _ => {}
        }
    }
    for rate in &mut doc.rates {
        rate.price = figure(match (rate.kind, rate.direction, rate.prefix.as_deref()) {
            (UsageKind::Call, Some(Direction::Outbound), None) => "0.06",
            (UsageKind::Call, Some(Direction::Outbound), Some("+1")) => "0.03",
            (UsageKind::Call, Some(Direction::Outbound), Some("+44")) => "0.04",
            (UsageKind::Call, Some(Direction::Inbound), _) => "0.015",
            // The toll-free entries.
            (UsageKind::Call, ..) => "0.05",
            (UsageKind::Message, ..) => "0.012",
            (UsageKind::Sms, ..) => "0.008",
            (UsageKind::Stt, ..) => "0.007",
            (UsageKind::AiTask, ..) => "0.025",
        });
    }
    doc
}

/// A card decline as Stripe reports it (`card_declined`), hard or soft.
fn decline(hard_decline: bool) -> Report<'static> {
    Report::Failed(Failure {
        code: FailureCode::parse(Some("card_declined")),
        message: "Your card was declined.".into(),
        hard_decline,
    })
}

/// A settlement's answer: the payment's status after it.
fn settled(
    result: Result<Option<payments::Settled>, LedgerError>,
) -> Result<&'static str, &'static str> {
    match result {
        Ok(Some(settled)) => Ok(match settled.payment.status.as_str() {
            "succeeded" => "succeeded",
            "failed" => "failed",
            "pending" => "pending",
            _ => "other",
        }),
        Ok(None) => Err("not_ours"),
        Err(refused) => Err(code(&refused)),
    }
}

/// The auto-recharge component's sweep (`components/auto-recharge/src/lib.rs`): candidates in
/// batches of 50 after the last one seen, up to 100 workspaces a pass, each claimed in its own
/// transaction (a refusal skips the workspace, a storage failure stops the pass). The charges
/// are left pending: Stripe's answer is a later operation. Returns the payments claimed.
async fn sweep_recharges<S: ledger::Storage>(
    db: &S,
    catalog: &Catalog,
    now_secs: i64,
) -> Result<Vec<String>, LedgerError> {
    let mut claimed = Vec::new();
    let mut after = String::new();
    let mut checked = 0;
    while checked < 100 {
        let limit = (100 - checked).min(50);
        let batch = payments::auto_recharge_candidates(db, &after, limit as i64).await?;
        for ws in &batch {
            checked += 1;
            after.clone_from(ws);
            match payments::claim_auto_recharge(db, catalog, ws, now_secs).await {
                Ok(Some(payment)) => claimed.push(payment.id),
                Ok(None) => {}
                Err(LedgerError::Storage(error))
                    if error.kind != ledger::StorageErrorKind::Constraint =>
                {
                    return Err(LedgerError::Storage(error));
                }
                Err(_) => {}
            }
        }
        if batch.len() < limit {
            break;
        }
    }
    claimed.sort_unstable();
    Ok(claimed)
}

/// The reconciliation of the auto-recharge component's pass (R21): every payment pending 300 s,
/// settled as Stripe has it. The component reads the PaymentIntent (or, without one, the
/// customer's charges) and settles from that; here Stripe's answer is the operation's.
async fn reconcile<S: ledger::Storage>(
    db: &S,
    succeeded: bool,
    now_secs: i64,
) -> Result<Vec<(String, &'static str)>, LedgerError> {
    let stale = payments::stale_pending(db, now_secs, 100).await?;
    let report = if succeeded {
        Report::Succeeded
    } else {
        decline(false)
    };
    let mut settled_all = Vec::new();
    for payment in stale {
        let answer = payments::settle(
            db,
            payments::Reported::Payment {
                id: &payment.id,
                intent_id: None,
            },
            &report,
            &payments::PaidWith::default(),
            now_secs,
        )
        .await?;
        let status = settled(Ok(answer)).unwrap_or("not ours");
        settled_all.push((payment.id, status));
    }
    settled_all.sort_unstable();
    Ok(settled_all)
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
            from_grants_micros: micros(debited.from_grants),
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
        Answer::Granted(result) => failed(result),
        Answer::Voided(result) => failed(result),
        Answer::GrantsExpired(posted) => *posted == usize::MAX,
        Answer::Renewed(result) => failed(result),
        Answer::InvoicePaid(result) => failed(result),
        Answer::PlanChanged(result) => failed(result),
        Answer::PendingCancelled(result) => failed(result),
        Answer::Reversed(result) => failed(result),
        Answer::RechargeSet(result) => failed(result),
        Answer::Swept(result) => failed(result),
        Answer::Reconciled(result) => failed(result),
        Answer::CatalogPut(result) => failed(result),
        Answer::Advanced => false,
        Answer::TestClock(result) => failed(result),
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
    /// The database is a file (in `TMPDIR`, removed when the ledger is dropped) if `on_file`,
    /// else in memory.
    pub fn open(setup: &[WorkspaceSetup], on_file: bool) -> Result<Self, String> {
        let db = if on_file {
            FaultyDb::on_file()
        } else {
            FaultyDb::in_memory()
        }
        .map_err(|e| e.to_string())?;
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
            // Every workspace has a card on file (a paid plan needs one).
            let card = payments::PaymentMethod {
                id: format!("pm_{id}"),
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 8,
                exp_year: 2030,
            };
            block_on(payments::set_payment_method(&db, &id, &card)).map_err(|e| e.to_string())?;
            if let Some(plan) = ws.plan.id() {
                block_on(change_plan(
                    &db,
                    &catalog,
                    index,
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
            db,
            catalog,
            workspaces: setup.to_vec(),
            grant_keys: vec![BTreeMap::new(); setup.len()],
        })
    }

    /// Arms `fault` for the next [`Ledger::apply`].
    pub fn arm(&self, fault: Fault) {
        self.db.arm(fault);
    }

    /// Disarms the fault, and says where it fired, or why it did not.
    pub fn disarm(&self) -> Result<Fired, &'static str> {
        self.db.disarm()
    }

    /// Test knob: a deliberate defect of the fault layer (see [`Sabotage`]).
    #[doc(hidden)]
    pub fn sabotage(&mut self, sabotage: Sabotage) {
        self.db.sabotage(sabotage);
    }

    /// Runs one operation at the simulated time `now_secs`.
    pub fn apply(&mut self, op: &Op, now_secs: i64) -> Answer {
        if let Op::PutCatalog { repriced } = op {
            // As the components do, every operation after it runs with the stored catalog.
            let put = block_on(catalog::put(&self.db, catalog_doc(*repriced), now_secs));
            if let Ok(stored) = block_on(catalog::load(&self.db)) {
                self.catalog = stored;
            }
            return Answer::CatalogPut(
                put.map(|stored| stored.version)
                    .map_err(|refused| code(&refused)),
            );
        }
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
                        from_grants_micros: micros(posted.from_grants),
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
                    decline(false)
                };
                let paid = payments::PaidWith::default();
                Answer::Settled(settled(block_on(payments::settle(
                    db, reported, &report, &paid, now_secs,
                ))))
            }
            Op::Grant { ws, key, terms } => {
                let id = grant_id(*ws, *key);
                self.grant_keys[*ws].insert(id.clone(), *key);
                let keys = &self.grant_keys[*ws];
                Answer::Granted(
                    match block_on(grants::create(
                        db,
                        &grant_key(*key),
                        &grant_input(*ws, *key, terms),
                        now_secs,
                    )) {
                        Ok((grant, _)) if grant.id != id => Err("a grant id other than R22's"),
                        Ok((grant, made)) => Ok((made, grant_view(keys, &grant))),
                        Err(refused) => Err(code(&refused)),
                    },
                )
            }
            Op::Void { ws, key } => Answer::Voided(
                block_on(grants::void(db, &grant_id(*ws, *key), now_secs))
                    .map(|grant| grant_view(&self.grant_keys[*ws], &grant))
                    .map_err(|refused| code(&refused)),
            ),
            Op::ExpireGrants => Answer::GrantsExpired(
                block_on(grants::expire_due(db, now_secs)).unwrap_or(usize::MAX),
            ),
            Op::Renew => Answer::Renewed(
                block_on(plans::renew_due(
                    db,
                    catalog,
                    now_secs,
                    plans::RENEWAL_BATCH_MAX,
                ))
                .map(|report| {
                    (
                        report.workspaces_renewed,
                        report.cycles_advanced,
                        report.workspaces_failed,
                    )
                })
                .map_err(|refused| code(&refused)),
            ),
            Op::InvoicePaid {
                ws,
                invoice,
                next,
                offset_secs,
            } => Answer::InvoicePaid(
                block_on(async {
                    // Stripe knows the period it bills: the workspace's cycle as the ledger has
                    // it (the balances compare it with the model's after every step).
                    let state = workspace::get(db, &ws_id(*ws)).await?;
                    let base = if *next {
                        state.cycle_end_at
                    } else {
                        state.cycle_start_at
                    };
                    let period = base.unwrap_or(now_secs) + offset_secs;
                    plans::record_invoice_paid(
                        db,
                        &ws_id(*ws),
                        &format!("in_{invoice}"),
                        period,
                        now_secs,
                    )
                    .await
                })
                .map(micros)
                .map_err(|refused| code(&refused)),
            ),
            Op::ChangePlan {
                ws,
                plan,
                first_period_paid,
            } => Answer::PlanChanged(
                block_on(change_plan(
                    db,
                    catalog,
                    *ws,
                    plan.id().unwrap_or("none"),
                    *first_period_paid,
                    now_secs,
                ))
                .map(plan_change_answer)
                .map_err(|refused| code(&refused)),
            ),
            Op::Reverse {
                payment,
                reversal,
                dispute,
                amount_money_micros,
            } => Answer::Reversed(
                block_on(payments::reverse(
                    db,
                    &payment_id(*payment),
                    &format!("re_{reversal}"),
                    if *dispute { "dispute" } else { "refund" },
                    *amount_money_micros,
                    now_secs,
                ))
                .map_err(|refused| code(&refused)),
            ),
            Op::SetAutoRecharge { ws, settings } => {
                let settings = payments::AutoRechargeSettings {
                    enabled: settings.enabled,
                    threshold: decimal(settings.threshold_money_micros),
                    amount: decimal(settings.amount_money_micros),
                    max_per_month: settings.max_per_month_money_micros.map(decimal),
                };
                Answer::RechargeSet(
                    block_on(payments::set_auto_recharge(
                        db,
                        catalog,
                        &ws_id(*ws),
                        &settings,
                    ))
                    .map(|_| ())
                    .map_err(|refused| code(&refused)),
                )
            }
            Op::SweepRecharges => Answer::Swept(
                block_on(sweep_recharges(db, catalog, now_secs)).map_err(|refused| code(&refused)),
            ),
            Op::SettleRecharge {
                ws,
                succeeded,
                hard_decline,
            } => {
                // The latest recharge: the sweep names the n-th `ar_<ws>_<n>`.
                let claimed = match block_on(ledger::Storage::query(
                    db,
                    "SELECT COUNT(*) FROM payments WHERE workspace_id = ?1 AND kind = 'auto_recharge'",
                    &[ledger::SqlValue::Text(ws_id(*ws))],
                )) {
                    Ok(rows) => match rows.first().map(|row| &row[0]) {
                        Some(ledger::SqlValue::Integer(count)) => *count,
                        _ => -1,
                    },
                    Err(_) => return Answer::Settled(Err("internal_error")),
                };
                let id = format!("ar_{}_{claimed}", ws_id(*ws));
                let report = if *succeeded {
                    Report::Succeeded
                } else {
                    decline(*hard_decline)
                };
                Answer::Settled(settled(block_on(payments::settle(
                    db,
                    payments::Reported::Payment {
                        id: &id,
                        intent_id: None,
                    },
                    &report,
                    &payments::PaidWith::default(),
                    now_secs,
                ))))
            }
            Op::Reconcile { succeeded } => Answer::Reconciled(
                block_on(reconcile(db, *succeeded, now_secs)).map_err(|refused| code(&refused)),
            ),
            Op::CancelPendingChange { ws } => Answer::PendingCancelled(
                block_on(plans::cancel_pending_change(db, &ws_id(*ws)))
                    .map_err(|refused| code(&refused)),
            ),
            Op::Advance { .. } | Op::AdvanceTo { .. } => Answer::Advanced,
            Op::SetTestClock { ws, at_secs } => Answer::TestClock(
                // As `POST /v1/test-clocks/{ws}` does: the frozen time it answers is the
                // workspace's as stored.
                block_on(workspace::set_test_clock(
                    db,
                    &ws_id(*ws),
                    *at_secs,
                    now_secs,
                ))
                .map(|state| state.test_clock_at.unwrap_or(*at_secs))
                .map_err(|refused| code(&refused)),
            ),
            Op::PutCatalog { .. } => unreachable!("a catalog is put before the match"),
        }
    }

    /// Every workspace's grants as `grants::list` shows them at `now_secs` (an expiry applied
    /// on read), by key; none read where none was asked for.
    pub fn grant_views(&self, now_secs: i64) -> Vec<Vec<GrantView>> {
        (0..self.workspaces.len())
            .map(|index| self.grants_listed(index, now_secs))
            .collect()
    }

    fn grants_listed(&self, index: usize, now_secs: i64) -> Vec<GrantView> {
        let keys = &self.grant_keys[index];
        if keys.is_empty() {
            return Vec::new();
        }
        let mut views = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = block_on(grants::list(
                &self.db,
                &ws_id(index),
                Some(grants::PAGE_LIMIT_MAX),
                cursor.as_deref(),
                now_secs,
            ))
            .expect("the grants");
            views.extend(page.grants.iter().map(|grant| grant_view(keys, grant)));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        views.sort_unstable_by_key(|view| view.key);
        views
    }

    /// Every grant's remaining (as its entries left it) and held, per workspace by key: one
    /// query, and none before a grant was asked for. Read in SQL rather than through
    /// [`grants::list`] after every step because it is cheaper and shows what the sweep posted;
    /// the list is compared every few steps ([`Ledger::grant_views`]).
    fn grant_rows(&self) -> Vec<Vec<(u32, i64, i64)>> {
        let mut rows = vec![Vec::new(); self.workspaces.len()];
        if self.grant_keys.iter().all(BTreeMap::is_empty) {
            return rows;
        }
        let read = block_on(ledger::Storage::query(
            &self.db,
            "SELECT workspace_id, id, remaining_micros, held_micros FROM grants",
            &[],
        ))
        .expect("the grants");
        for row in &read {
            let (ledger::SqlValue::Text(ws), ledger::SqlValue::Text(id)) = (&row[0], &row[1])
            else {
                panic!("a grant row: {row:?}");
            };
            let (ledger::SqlValue::Integer(remaining), ledger::SqlValue::Integer(held)) =
                (&row[2], &row[3])
            else {
                panic!("a grant row: {row:?}");
            };
            let index: usize = ws
                .strip_prefix('w')
                .and_then(|n| n.parse().ok())
                .expect("a workspace the simulation made");
            let key = self.grant_keys[index].get(id).copied().unwrap_or(u32::MAX);
            rows[index].push((key, *remaining, *held));
        }
        for grants in &mut rows {
            grants.sort_unstable();
        }
        rows
    }

    /// Every balance the model keeps, as the ledger has it at `now_secs`.
    pub fn balances(&self, now_secs: i64) -> Balances {
        let mut grants = self.grant_rows().into_iter();
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
                    grants: grants.next().unwrap_or_default(),
                    plans: (
                        ws.plan_id.as_deref().map(plan_name),
                        ws.pending_plan_id.as_deref().map(plan_name),
                    ),
                    cycle: (ws.cycle_start_at, ws.cycle_end_at),
                    test_clock: ws.test_clock_at,
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
