//! Plans and billing cycles (R13-R16): subscribe, upgrade now with prorated credits, downgrade at
//! the next cycle, renewal that is idempotent and catches up, and grants when invoices are paid.

use serde::Serialize;

use crate::calendar;
use crate::catalog::{Catalog, PlanTerms};
use crate::money;
use crate::post::{self, Entry};
use crate::row::{i, oi, t, text};
use crate::statuses::SubscriptionStatus;
use crate::storage::Storage;
use crate::tx;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, Result};

/// The most cycles one renewal advances a workspace by (100 years of monthly cycles).
pub const RENEWAL_CYCLES_MAX: usize = 1_200;
/// The most workspaces one renewal batch processes.
pub const RENEWAL_BATCH_MAX: i64 = 1_000;
/// How far an invoice's period start may be from our cycle start and still pay for it (Stripe's
/// anchor has a time of day, ours is midnight UTC).
const INVOICE_PERIOD_SLACK_SECS: i64 = 2 * calendar::SECS_PER_DAY;

/// What a plan change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanChange {
    /// `subscribed`, `upgraded`, `downgrade_scheduled`, `pending_change_cancelled` or `unchanged`.
    pub action: &'static str,
    /// The plan in force now.
    pub plan_id: String,
    /// The plan waiting for the next cycle, if any.
    pub pending_plan_id: Option<String>,
    /// When the change takes (took) effect (RFC 3339).
    pub effective_at: String,
    /// Plan credits granted by this change.
    pub credits_granted: rust_decimal::Decimal,
}

/// Whether moving from `from` to `to` is an upgrade (at once, R14) rather than a downgrade (at
/// the next cycle, R15): a higher (price, monthly credits).
pub fn is_upgrade(from: &PlanTerms, to: &PlanTerms) -> bool {
    (to.price_money_micros, to.monthly_credits_micros)
        > (from.price_money_micros, from.monthly_credits_micros)
}

/// The fee of the plan in force (0 without a plan): money, in micro-units of the currency (column
/// `plan_price_micros`).
pub(crate) async fn plan_price_money_micros<S: Storage>(db: &S, workspace_id: &str) -> Result<i64> {
    let rows = db
        .query(
            "SELECT plan_price_micros FROM workspaces WHERE id = ?1",
            &[t(workspace_id)],
        )
        .await?;
    Ok(rows
        .first()
        .map(|r| crate::row::int(r, 0))
        .transpose()?
        .unwrap_or(0))
}

/// Current terms of the workspace's plan (from the workspace row: terms change at cycle start).
fn current_terms(ws: &WorkspaceState, plan_id: &str, price_money_micros: i64) -> PlanTerms {
    PlanTerms {
        id: plan_id.to_owned(),
        price_money_micros,
        monthly_credits_micros: ws.plan_monthly_credits_micros,
        rollover_max_micros: ws.plan_rollover_max_micros,
    }
}

/// What a plan change does (R13-R15), as [`decide`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The plan starts now, on a cycle anchored on today (R13): no plan in force, or a first
    /// paid subscription ([`start_subscription`]).
    Subscribe,
    /// A higher plan: at once, with R14's prorated credits; a pending downgrade is dropped.
    Upgrade,
    /// A lower plan: pending until the cycle ends (R15).
    Downgrade,
    /// The plan in force: nothing changes but a pending downgrade, which is dropped.
    Unchanged,
}

/// A plan change decided, before anything is written: what [`change_plan`] and
/// [`start_subscription`] write, and what `plan_change::preview` shows without writing, so the
/// two cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanDecision {
    /// What the change is.
    pub kind: ChangeKind,
    /// The workspace's time the change runs at (its test clock, when one is set).
    pub now: i64,
    /// When it takes effect: now, or the end of the cycle for a downgrade.
    pub effective_at: i64,
    /// The plan credits the change grants: the plan's monthly credits when subscribing, R14's
    /// prorated credits for an upgrade, else 0.
    pub credits_micros: i64,
    /// Whether those credits come only with the paid first invoice (subscribing to a paid plan
    /// whose first period is not paid yet): then nothing is granted now.
    pub awaiting_payment: bool,
}

/// Decides a change of `ws` (whose plan in force costs `current_price_money_micros`, the
/// workspace's own copy of its terms) to `target`. Pure: [`change_plan`] carries the decision
/// out, the preview shows it. `first_period_paid` says a subscription's fee for the period
/// starting now is settled (a free plan needs none).
pub fn decide(
    ws: &WorkspaceState,
    current_price_money_micros: i64,
    target: &PlanTerms,
    first_period_paid: bool,
    real_now_secs: i64,
) -> Result<PlanDecision> {
    let Some(current_id) = ws.plan_id.as_deref() else {
        return Ok(decide_subscribe(
            ws,
            target,
            first_period_paid,
            real_now_secs,
        ));
    };
    let now = ws.now(real_now_secs);
    let current = current_terms(ws, current_id, current_price_money_micros);
    let cycle_end = ws.cycle_end_at.unwrap_or(now);
    let unchanged = PlanDecision {
        kind: ChangeKind::Unchanged,
        now,
        effective_at: now,
        credits_micros: 0,
        awaiting_payment: false,
    };
    if current_id == target.id {
        return Ok(unchanged);
    }
    if !is_upgrade(&current, target) {
        return Ok(PlanDecision {
            kind: ChangeKind::Downgrade,
            effective_at: cycle_end,
            ..unchanged
        });
    }
    // R14: unused credits stay; add the new plan's credits for the whole days left. None are
    // left once the cycle has ended and its renewal has not run yet (a test clock that jumped,
    // a renewal pass still to come): the next cycle grants the new plan's credits in full.
    let cycle_start = ws.cycle_start_at.unwrap_or(now);
    let days_left = calendar::days_between(now, cycle_end)?.max(0);
    let days_in_cycle = calendar::days_between(cycle_start, cycle_end)?;
    Ok(PlanDecision {
        kind: ChangeKind::Upgrade,
        credits_micros: money::fraction_floor(
            target.monthly_credits_micros,
            days_left,
            days_in_cycle,
        ),
        ..unchanged
    })
}

/// Decides subscribing `ws` to `target` now, whatever plan is in force (a first paid
/// subscription replaces a free plan this way): the cycle's credits at once if the plan is free
/// or its first period is paid, else with the paid invoice.
pub fn decide_subscribe(
    ws: &WorkspaceState,
    target: &PlanTerms,
    first_period_paid: bool,
    real_now_secs: i64,
) -> PlanDecision {
    let now = ws.now(real_now_secs);
    PlanDecision {
        kind: ChangeKind::Subscribe,
        now,
        effective_at: now,
        credits_micros: target.monthly_credits_micros,
        awaiting_payment: !first_period_paid && target.price_money_micros > 0,
    }
}

/// Subscribes, upgrades (at once, R14) or schedules a downgrade (R15), as [`decide`] decides.
/// `first_period_paid` says the fee for the period starting now is settled (always true for a
/// free plan), so its credits are granted at once; otherwise they come with the paid invoice.
pub async fn change_plan<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    plan_id: &str,
    first_period_paid: bool,
    real_now_secs: i64,
) -> Result<PlanChange> {
    let target = catalog.plan(plan_id)?.clone();
    tx::immediate(db, async |db| {
        let ws = workspace::get(db, workspace_id).await?;
        let current_price = plan_price_money_micros(db, &ws.id).await?;
        let decision = decide(
            &ws,
            current_price,
            &target,
            first_period_paid,
            real_now_secs,
        )?;
        apply(db, &ws, &target, &decision).await
    })
    .await
}

/// Writes a decided plan change.
async fn apply<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    target: &PlanTerms,
    decision: &PlanDecision,
) -> Result<PlanChange> {
    let effective_at = calendar::rfc3339(decision.effective_at);
    match decision.kind {
        ChangeKind::Subscribe => subscribe(db, ws, target, decision).await,
        ChangeKind::Unchanged => {
            db.execute(
                "UPDATE workspaces SET pending_plan_id = NULL WHERE id = ?1",
                &[t(&ws.id)],
            )
            .await?;
            Ok(PlanChange {
                action: if ws.pending_plan_id.is_some() {
                    "pending_change_cancelled"
                } else {
                    "unchanged"
                },
                plan_id: target.id.clone(),
                pending_plan_id: None,
                effective_at,
                credits_granted: 0.into(),
            })
        }
        ChangeKind::Downgrade => {
            db.execute(
                "UPDATE workspaces SET pending_plan_id = ?2 WHERE id = ?1",
                &[t(&ws.id), t(&target.id)],
            )
            .await?;
            Ok(PlanChange {
                action: "downgrade_scheduled",
                plan_id: ws.plan_id.clone().unwrap_or_default(),
                pending_plan_id: Some(target.id.clone()),
                effective_at,
                credits_granted: 0.into(),
            })
        }
        ChangeKind::Upgrade => {
            set_plan(db, &ws.id, target).await?;
            db.execute(
                "UPDATE workspaces SET pending_plan_id = NULL WHERE id = ?1",
                &[t(&ws.id)],
            )
            .await?;
            grant_credits(
                db,
                &ws.id,
                &target.id,
                decision.credits_micros,
                "prorated plan credits (upgrade)",
                decision.now,
            )
            .await?;
            Ok(PlanChange {
                action: "upgraded",
                plan_id: target.id.clone(),
                pending_plan_id: None,
                effective_at,
                credits_granted: money::to_decimal(decision.credits_micros),
            })
        }
    }
}

async fn subscribe<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    plan: &PlanTerms,
    decision: &PlanDecision,
) -> Result<PlanChange> {
    let now = decision.now;
    let today = calendar::utc_date(now)?;
    let anchor_day = today.day();
    let (start, end) = calendar::cycle_containing(now, anchor_day)?;
    db.execute(
        "UPDATE workspaces SET plan_id = ?2, plan_monthly_credits_micros = ?3, plan_rollover_max_micros = ?4,
             plan_price_micros = ?5, cycle_anchor_day = ?6, cycle_start_at = ?7, cycle_end_at = ?8,
             cycle_credits_granted = 0, pending_plan_id = NULL, subscription_status = 'active'
         WHERE id = ?1",
        &[t(&ws.id), t(&plan.id), i(plan.monthly_credits_micros), oi(plan.rollover_max_micros), i(plan.price_money_micros), i(i64::from(anchor_day)), i(start), i(end)],
    )
    .await?;
    open_cycle_row(db, &ws.id, &plan.id, start, end, now).await?;
    // The cycle's grant is the plan's monthly credits just written: the decision's credits.
    let granted = if decision.awaiting_payment {
        0
    } else {
        grant_cycle(db, &ws.id, now).await?
    };
    Ok(PlanChange {
        action: "subscribed",
        plan_id: plan.id.clone(),
        pending_plan_id: None,
        effective_at: calendar::rfc3339(decision.effective_at),
        credits_granted: money::to_decimal(granted),
    })
}

async fn set_plan<S: Storage>(db: &S, workspace_id: &str, plan: &PlanTerms) -> Result<()> {
    db.execute(
        "UPDATE workspaces SET plan_id = ?2, plan_monthly_credits_micros = ?3, plan_rollover_max_micros = ?4,
             plan_price_micros = ?5 WHERE id = ?1",
        &[t(workspace_id), t(&plan.id), i(plan.monthly_credits_micros), oi(plan.rollover_max_micros), i(plan.price_money_micros)],
    )
    .await?;
    Ok(())
}

async fn open_cycle_row<S: Storage>(
    db: &S,
    workspace_id: &str,
    plan_id: &str,
    start: i64,
    end: i64,
    now: i64,
) -> Result<()> {
    db.execute(
        "INSERT INTO cycles (workspace_id, start_at, end_at, plan_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (workspace_id, start_at) DO NOTHING",
        &[t(workspace_id), i(start), i(end), t(plan_id), i(now)],
    )
    .await?;
    Ok(())
}

async fn grant_credits<S: Storage>(
    db: &S,
    workspace_id: &str,
    plan_id: &str,
    amount_micros: i64,
    description: &str,
    now: i64,
) -> Result<()> {
    if amount_micros <= 0 {
        return Ok(());
    }
    post::post(
        db,
        workspace_id,
        &Entry {
            kind: "plan_grant",
            reference: Some(plan_id),
            plan_delta_micros: amount_micros,
            occurred_at: now,
            description: Some(description),
            ..Entry::default()
        },
        now,
    )
    .await?;
    workspace::after_credit(db, workspace_id).await
}

/// Grants the current cycle's plan credits once (the cycle row remembers it). Returns the grant.
async fn grant_cycle<S: Storage>(db: &S, workspace_id: &str, now: i64) -> Result<i64> {
    let rows = db
        .query(
            "UPDATE workspaces SET cycle_credits_granted = 1
             WHERE id = ?1 AND cycle_credits_granted = 0 AND plan_id IS NOT NULL
             RETURNING plan_id, plan_monthly_credits_micros, cycle_start_at",
            &[t(workspace_id)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(0);
    };
    let (plan_id, credits, start) = (
        text(row, 0)?,
        crate::row::int(row, 1)?,
        crate::row::int(row, 2)?,
    );
    db.execute(
        "UPDATE cycles SET credits_granted_micros = ?3 WHERE workspace_id = ?1 AND start_at = ?2",
        &[t(workspace_id), i(start), i(credits)],
    )
    .await?;
    grant_credits(
        db,
        workspace_id,
        &plan_id,
        credits,
        "plan credits for the cycle",
        now,
    )
    .await?;
    Ok(credits)
}

/// How long a claim on starting a Stripe subscription blocks another attempt: a request that died
/// between its claim and Stripe's answer must not block the workspace for ever.
pub const SUBSCRIPTION_CLAIM_SECS: i64 = 600;

/// The claim a request holds while it creates a Stripe subscription ([`claim_subscription`]), so
/// that at most one paid subscription is started per workspace: `claim_<unix secs>_<nonce>`, one
/// per request and second (the component derives the attempt's Stripe idempotency keys from it).
/// The ledger keeps it whole in `subscription_claim` and reads nothing in it: when it was taken is
/// `subscription_claimed_at`. It has the form of the claims `stripe_subscription_id` held before
/// schema V16, which moved them as they were.
pub fn subscription_claim(real_now_secs: i64, nonce: &str) -> String {
    format!("claim_{real_now_secs:010}_{nonce}")
}

/// Whether a workspace has a paid subscription in force, as SQL on its `workspaces` row: a Stripe
/// subscription, not ended, on a plan with a fee. The same test as
/// `plan_change::Subscriber::paid_subscription` on a workspace read.
macro_rules! paid_subscription_in_force {
    () => {
        "(stripe_subscription_id IS NOT NULL AND plan_id IS NOT NULL AND plan_price_micros > 0
          AND subscription_status <> 'canceled')"
    };
}

/// Claims the right to create the workspace's Stripe subscription: `claim` (from
/// [`subscription_claim`]) taken at `real_now_secs`, beside `stripe_subscription_id`, which only
/// [`start_subscription`] writes. Refused with 409 `subscription_exists` while a paid subscription
/// is in force, and with 409 `subscription_in_progress` while another request's claim is fresh;
/// one older than [`SUBSCRIPTION_CLAIM_SECS`] is taken over.
pub async fn claim_subscription<S: Storage>(
    db: &S,
    workspace_id: &str,
    claim: &str,
    real_now_secs: i64,
) -> Result<()> {
    let rows = db
        .query(
            concat!(
                "UPDATE workspaces SET subscription_claim = ?2, subscription_claimed_at = ?3,
                     stripe_subscription_id = NULL
                 WHERE id = ?1 AND NOT ",
                paid_subscription_in_force!(),
                "
                   AND (subscription_claimed_at IS NULL OR subscription_claimed_at < ?3 - ?4)
                 RETURNING id"
            ),
            &[
                t(workspace_id),
                t(claim),
                i(real_now_secs),
                i(SUBSCRIPTION_CLAIM_SECS),
            ],
        )
        .await?;
    if !rows.is_empty() {
        return Ok(());
    }
    // Refused: by a paid subscription in force, else by a fresh claim.
    let rows = db
        .query(
            concat!(
                "SELECT ",
                paid_subscription_in_force!(),
                " FROM workspaces WHERE id = ?1"
            ),
            &[t(workspace_id)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Err(LedgerError::NotFound { what: "workspace" });
    };
    Err(if crate::row::int(row, 0)? != 0 {
        LedgerError::Conflict {
            code: "subscription_exists",
            message: "This workspace already has a paid subscription.".into(),
        }
    } else {
        LedgerError::Conflict {
            code: "subscription_in_progress",
            message: "Another subscription change for this workspace is in progress. Try again in a minute.".into(),
        }
    })
}

/// Gives up a claim taken by [`claim_subscription`] (Stripe refused or failed); another claim
/// that replaced it stays.
pub async fn release_subscription_claim<S: Storage>(
    db: &S,
    workspace_id: &str,
    claim: &str,
) -> Result<()> {
    db.execute(
        "UPDATE workspaces SET subscription_claim = NULL, subscription_claimed_at = NULL
         WHERE id = ?1 AND subscription_claim = ?2",
        &[t(workspace_id), t(claim)],
    )
    .await?;
    Ok(())
}

/// A Stripe subscription created under a claim, for [`start_subscription`].
#[derive(Debug, Clone, Copy)]
pub struct StartedSubscription<'a> {
    /// The catalog plan it pays for.
    pub plan_id: &'a str,
    /// The claim taken by [`claim_subscription`].
    pub claim: &'a str,
    /// Stripe's `sub_...`.
    pub subscription_id: &'a str,
    /// Whether Stripe charged the first invoice already.
    pub first_period_paid: bool,
}

/// Starts a paid plan on the Stripe subscription created under its claim (R13): the cycle is
/// re-anchored on today, as Stripe's billing anchor is the subscription's start, and the plan
/// credits of an unused free plan stay (R14's rule for upgrades). The cycle's credits are granted
/// now when the first period is paid, else with `invoice.paid`. Only the request still holding
/// the claim starts it (409 `subscription_in_progress` if another took it over): Stripe's id is
/// recorded and the claim given up in one statement.
pub async fn start_subscription<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    started: StartedSubscription<'_>,
    real_now_secs: i64,
) -> Result<PlanChange> {
    let StartedSubscription {
        plan_id,
        claim,
        subscription_id,
        first_period_paid,
    } = started;
    let target = catalog.plan(plan_id)?.clone();
    tx::immediate(db, async |db| {
        let rows = db
            .query(
                "UPDATE workspaces SET stripe_subscription_id = ?3, subscription_claim = NULL,
                     subscription_claimed_at = NULL
                 WHERE id = ?1 AND subscription_claim = ?2 RETURNING id",
                &[t(workspace_id), t(claim), t(subscription_id)],
            )
            .await?;
        if rows.is_empty() {
            workspace::get(db, workspace_id).await?;
            return Err(LedgerError::Conflict {
                code: "subscription_in_progress",
                message: "Another subscription change for this workspace replaced this one.".into(),
            });
        }
        let ws = workspace::get(db, workspace_id).await?;
        let decision = decide_subscribe(&ws, &target, first_period_paid, real_now_secs);
        apply(db, &ws, &target, &decision).await
    })
    .await
}

/// Cancels a pending downgrade (R15); 404 if there is none.
pub async fn cancel_pending_change<S: Storage>(db: &S, workspace_id: &str) -> Result<()> {
    let rows = db
        .query(
            "UPDATE workspaces SET pending_plan_id = NULL WHERE id = ?1 AND pending_plan_id IS NOT NULL RETURNING id",
            &[t(workspace_id)],
        )
        .await?;
    if rows.is_empty() {
        workspace::get(db, workspace_id).await?;
        return Err(LedgerError::NotFound {
            what: "pending plan change",
        });
    }
    Ok(())
}

/// What a renewal run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RenewalReport {
    /// Workspaces whose cycle advanced.
    pub workspaces_renewed: usize,
    /// Cycles closed in all.
    pub cycles_advanced: usize,
    /// Workspaces skipped because their renewal was refused (e.g. data the ledger cannot use);
    /// the others are still renewed.
    pub workspaces_failed: usize,
    /// Whether more workspaces are due (run again).
    pub more: bool,
}

/// Renews up to `batch_max` workspaces whose cycle ended (R16), each in its own transaction.
pub async fn renew_due<S: Storage>(
    db: &S,
    catalog: &Catalog,
    real_now_secs: i64,
    batch_max: i64,
) -> Result<RenewalReport> {
    let batch = batch_max.clamp(1, RENEWAL_BATCH_MAX);
    let rows = db
        .query(
            // Each branch walks its partial index in order and stops at the batch size, so a
            // batch costs the same with 100 or 100,000 workspaces due.
            "SELECT id FROM (
                 SELECT * FROM (SELECT id, cycle_end_at FROM workspaces
                     WHERE plan_id IS NOT NULL AND cycle_end_at <= ?1 AND test_clock_at IS NULL
                     ORDER BY cycle_end_at LIMIT ?2)
                 UNION ALL
                 SELECT * FROM (SELECT id, cycle_end_at FROM workspaces
                     WHERE plan_id IS NOT NULL AND test_clock_at IS NOT NULL AND cycle_end_at <= test_clock_at
                     ORDER BY cycle_end_at LIMIT ?2))
             ORDER BY cycle_end_at LIMIT ?2",
            &[i(real_now_secs), i(batch + 1)],
        )
        .await?;
    let mut report = RenewalReport {
        more: rows.len() as i64 > batch,
        ..RenewalReport::default()
    };
    for row in rows.iter().take(batch as usize) {
        match renew_workspace(db, catalog, &text(row, 0)?, real_now_secs).await {
            Ok(0) => {}
            Ok(advanced) => {
                report.workspaces_renewed += 1;
                report.cycles_advanced += advanced;
            }
            // A storage failure is systemic: stop, the next run retries.
            Err(LedgerError::Storage(error)) => return Err(LedgerError::Storage(error)),
            // One workspace's problem must not block every renewal after it.
            Err(_) => report.workspaces_failed += 1,
        }
    }
    Ok(report)
}

/// Rolls one workspace's cycles forward to the one containing now: expires plan credits (keeping
/// the rollover), applies a pending downgrade, grants credits only for the cycle in force (never
/// for cycles that already ended) and only when free or paid. Idempotent per cycle start.
pub async fn renew_workspace<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    real_now_secs: i64,
) -> Result<usize> {
    tx::immediate(db, async |db| {
        let mut advanced = 0;
        loop {
            let ws = workspace::get(db, workspace_id).await?;
            let now = ws.now(real_now_secs);
            let (Some(plan_id), Some(anchor), Some(end)) = (ws.plan_id.clone(), ws.cycle_anchor_day, ws.cycle_end_at) else {
                return Ok(advanced);
            };
            if end > now || advanced >= RENEWAL_CYCLES_MAX {
                return Ok(advanced);
            }
            let (expired, rolled_over) = close_cycle(db, &ws, now).await?;
            let next_plan_id = ws.pending_plan_id.clone().unwrap_or(plan_id);
            let terms = match catalog.plan(&next_plan_id) {
                Ok(terms) => terms.clone(),
                // A plan removed from the catalog keeps its last terms.
                Err(_) => current_terms(&ws, &next_plan_id, plan_price_money_micros(db, &ws.id).await?),
            };
            let anchor_day = i8::try_from(anchor).unwrap_or(1);
            let next_end = calendar::midnight_utc(calendar::next_cycle_start(calendar::utc_date(end)?, anchor_day)?)?;
            set_plan(db, &ws.id, &terms).await?;
            db.execute(
                "UPDATE workspaces SET cycle_start_at = ?2, cycle_end_at = ?3, cycle_credits_granted = 0, pending_plan_id = NULL
                 WHERE id = ?1",
                &[t(&ws.id), i(end), i(next_end)],
            )
            .await?;
            open_cycle_row(db, &ws.id, &terms.id, end, next_end, now).await?;
            advanced += 1;
            // Credits only for the cycle in force, once it is free or paid.
            if next_end > now {
                let granted = if terms.price_money_micros == 0 || invoice_paid_for(db, &ws.id, end).await? {
                    grant_cycle(db, &ws.id, now).await?
                } else {
                    0
                };
                crate::notifications::record(
                    db,
                    &ws.id,
                    "plan.renewed",
                    &serde_json::json!({
                        "plan_id": terms.id, "cycle_start_at": end, "cycle_end_at": next_end,
                        "granted_micros": granted, "rolled_over_micros": rolled_over,
                        "expired_micros": expired,
                        "awaiting_payment": granted == 0 && terms.price_money_micros > 0,
                    }),
                    end,
                    real_now_secs,
                )
                .await?;
            }
        }
    })
    .await
}

/// Expires the unheld plan credits at cycle end, keeping up to the plan's rollover. Returns the
/// credits expired and the credits kept.
async fn close_cycle<S: Storage>(db: &S, ws: &WorkspaceState, now: i64) -> Result<(i64, i64)> {
    let expirable = ws.plan_available_micros();
    let keep = expirable.min(ws.plan_rollover_max_micros.unwrap_or(0));
    let expire = expirable - keep;
    if expire > 0 {
        post::post(
            db,
            &ws.id,
            &Entry {
                kind: "plan_expiry",
                reference: ws.plan_id.as_deref(),
                plan_delta_micros: -expire,
                occurred_at: ws.cycle_end_at.unwrap_or(now),
                description: Some("unused plan credits expired at cycle end"),
                ..Entry::default()
            },
            now,
        )
        .await?;
        workspace::mark_exhausted_if_empty(db, &ws.id, now).await?;
    }
    Ok((expire.max(0), keep))
}

async fn invoice_paid_for<S: Storage>(
    db: &S,
    workspace_id: &str,
    cycle_start: i64,
) -> Result<bool> {
    let rows = db
        .query(
            "SELECT 1 FROM invoices_paid WHERE workspace_id = ?1 AND period_start_at > ?2 AND period_start_at < ?3 LIMIT 1",
            &[t(workspace_id), i(cycle_start - INVOICE_PERIOD_SLACK_SECS), i(cycle_start + INVOICE_PERIOD_SLACK_SECS)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Records a paid subscription invoice (R13), once per invoice id; if it pays for the cycle in
/// force, that cycle's credits are granted now. Returns the credits granted.
pub async fn record_invoice_paid<S: Storage>(
    db: &S,
    workspace_id: &str,
    invoice_id: &str,
    period_start_secs: i64,
    real_now_secs: i64,
) -> Result<rust_decimal::Decimal> {
    tx::immediate(db, async |db| {
        let ws = workspace::get(db, workspace_id).await?;
        let now = ws.now(real_now_secs);
        let inserted = db
            .query(
                "INSERT INTO invoices_paid (invoice_id, workspace_id, period_start_at, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (invoice_id) DO NOTHING RETURNING invoice_id",
                &[t(invoice_id), t(&ws.id), i(period_start_secs), i(now)],
            )
            .await?;
        if inserted.is_empty() {
            return Ok(0.into());
        }
        db.execute("UPDATE workspaces SET subscription_status = 'active' WHERE id = ?1 AND plan_id IS NOT NULL", &[t(&ws.id)]).await?;
        let Some(start) = ws.cycle_start_at else { return Ok(0.into()) };
        if (period_start_secs - start).abs() >= INVOICE_PERIOD_SLACK_SECS {
            return Ok(0.into());
        }
        Ok(money::to_decimal(grant_cycle(db, &ws.id, now).await?))
    })
    .await
}

/// Mirrors the Stripe subscription's status (read once: `SubscriptionStatus::parse`): `active`
/// (or `trialing`) is active, `past_due` and `unpaid` are past due; anything else changes nothing
/// here (a deletion ends the subscription through [`end_subscription`]). 404 for an unknown
/// workspace.
pub async fn mirror_subscription_status<S: Storage>(
    db: &S,
    workspace_id: &str,
    stripe_status: SubscriptionStatus,
) -> Result<()> {
    let Some(standing) = stripe_status.standing() else {
        return workspace::get(db, workspace_id).await.map(|_| ());
    };
    let rows = db
        .query(
            "UPDATE workspaces SET subscription_status = ?2 WHERE id = ?1 AND plan_id IS NOT NULL RETURNING id",
            &[t(workspace_id), t(standing.as_str())],
        )
        .await?;
    if rows.is_empty() {
        workspace::get(db, workspace_id).await?;
    }
    Ok(())
}

/// A failed subscription invoice: the workspace is `past_due`; the wallet stays usable.
pub async fn record_invoice_failed<S: Storage>(db: &S, workspace_id: &str) -> Result<()> {
    let rows = db
        .query("UPDATE workspaces SET subscription_status = 'past_due' WHERE id = ?1 AND plan_id IS NOT NULL RETURNING id", &[t(workspace_id)])
        .await?;
    if rows.is_empty() {
        workspace::get(db, workspace_id).await?;
    }
    Ok(())
}

/// The subscription ended: plan credits not held by calls expire and billing is no longer
/// configured until the workspace subscribes again.
pub async fn end_subscription<S: Storage>(
    db: &S,
    workspace_id: &str,
    real_now_secs: i64,
) -> Result<()> {
    tx::immediate(db, async |db| {
        let ws = workspace::get(db, workspace_id).await?;
        if ws.plan_id.is_none() {
            return Ok(());
        }
        // A downgrade scheduled to the end of the paid period (to the free plan: Stripe cancels
        // the subscription then) is applied by the renewal; a plan already free has no fee.
        if ws.pending_plan_id.is_some() || plan_price_money_micros(db, &ws.id).await? == 0 {
            return Ok(());
        }
        let now = ws.now(real_now_secs);
        let expire = ws.plan_available_micros();
        if expire > 0 {
            post::post(
                db,
                &ws.id,
                &Entry { kind: "plan_expiry", reference: ws.plan_id.as_deref(), plan_delta_micros: -expire, occurred_at: now, description: Some("subscription ended"), ..Entry::default() },
                now,
            )
            .await?;
        }
        db.execute(
            "UPDATE workspaces SET plan_id = NULL, pending_plan_id = NULL, subscription_status = 'canceled',
                 cycle_credits_granted = 0 WHERE id = ?1",
            &[t(&ws.id)],
        )
        .await?;
        Ok(())
    })
    .await
}
