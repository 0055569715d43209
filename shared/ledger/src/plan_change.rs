//! Planning a plan change that goes through Stripe (R13-R15): what to ask Stripe, what to write
//! in the ledger, and in which order. Pure: [`plan_change`] and [`plan_cancel_pending`] read a
//! [`Subscriber`] (read in one ledger section) and the catalog, and return a typed plan the
//! component carries out step by step, never holding the ledger lock across a Stripe call:
//!
//! - [`PlanChangePlan::LedgerOnly`]: `plans::change_plan` alone (a free plan with no paid
//!   subscription, or the plan in force chosen again with nothing pending);
//! - [`PlanChangePlan::Start`]: ledger `plans::claim_subscription` -> Stripe (the customer's
//!   running subscription to the price adopted, else one created and charged at once) -> ledger
//!   `plans::start_subscription`, or `plans::release_subscription_claim` if Stripe refused;
//! - [`PlanChangePlan::Change`]: Stripe (read the subscription, then [`StripeChange::steps`]) ->
//!   ledger `plans::change_plan`.
//!
//! Refusals come back as [`LedgerError`]s before any side effect: the plan does not exist (404),
//! payments are not configured or the plan has no Stripe price (503 `payment_processing_error`),
//! no saved card for a first paid plan (422 `payment_method_required`), or an upgrade while the
//! last invoice is unpaid (409 `subscription_past_due`).
//!
//! [`preview`] answers what the change would do without doing anything: the same plan (so the
//! same refusals) and the same decision (`plans::decide`, `plans::decide_subscribe`) the ledger
//! steps above carry out.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::catalog::{Catalog, PlanTerms};
use crate::plans::{self, ChangeKind, is_upgrade};
use crate::statuses::{SubscriptionStanding, SubscriptionStatus};
use crate::storage::Storage;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, Result, calendar, money};

/// What plan changes read about a workspace, in one ledger section.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    /// The workspace.
    pub state: WorkspaceState,
    /// The fee of the plan in force as the workspace pays it (0 without a plan): the workspace's
    /// own copy of its terms, which change at cycle start, not the catalog's. Money, in
    /// micro-units of the currency (column `workspaces.plan_price_micros`).
    pub plan_price_money_micros: i64,
}

impl Subscriber {
    /// The workspace's Stripe subscription if a paid plan is in force on it: a subscription, not
    /// ended, on a plan with a fee. Exactly the workspaces `plans::claim_subscription` refuses as
    /// `subscription_exists`.
    pub fn paid_subscription(&self) -> Option<&str> {
        let id = self.state.stripe_subscription_id.as_deref()?;
        let ended = SubscriptionStanding::parse(&self.state.subscription_status)
            == SubscriptionStanding::Canceled;
        let paid_plan = self.state.plan_id.is_some() && self.plan_price_money_micros > 0;
        (!ended && paid_plan).then_some(id)
    }

    /// The terms of the plan in force as the ledger's `plans::change_plan` compares them.
    fn terms_in_force(&self) -> Option<PlanTerms> {
        let id = self.state.plan_id.clone()?;
        Some(PlanTerms {
            id,
            price_money_micros: self.plan_price_money_micros,
            monthly_credits_micros: self.state.plan_monthly_credits_micros,
            rollover_max_micros: self.state.plan_rollover_max_micros,
        })
    }

    fn standing(&self) -> SubscriptionStanding {
        SubscriptionStanding::parse(&self.state.subscription_status)
    }
}

/// Reads what plan changes need about `workspace_id` (404 if it does not exist).
pub async fn subscriber<S: Storage>(db: &S, workspace_id: &str) -> Result<Subscriber> {
    let state = workspace::get(db, workspace_id).await?;
    let plan_price_money_micros = plans::plan_price_money_micros(db, workspace_id).await?;
    Ok(Subscriber {
        state,
        plan_price_money_micros,
    })
}

/// How to carry out `POST /v1/workspaces/{ws}/subscription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanChangePlan {
    /// Only the ledger: `plans::change_plan` with the first period paid.
    LedgerOnly,
    /// A first paid subscription.
    Start(StartPaid),
    /// A change of the paid subscription in force, then `plans::change_plan`.
    Change(StripeChange),
}

/// A first paid subscription: the price to subscribe to and the card to charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPaid {
    /// The catalog plan.
    pub plan_id: String,
    /// Its Stripe price (or legacy plan) id.
    pub stripe_price: String,
    /// The saved card the first invoice is charged to (it becomes the invoice default).
    pub payment_method: String,
}

/// Changes to make to the paid subscription in force, in order: undo a pending change first (an
/// upgrade or another downgrade starts from the plan paid for), then the change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeChange {
    /// `sub_...`.
    pub subscription_id: String,
    /// The pending change to undo, if any.
    pub undo_pending: Option<UndoPending>,
    /// The change, or `None` when the plan in force stays.
    pub change: Option<SubscriptionChange>,
}

/// What undoing a pending change needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoPending {
    /// Whether the pending plan is free (its downgrade ended the subscription with the period).
    pub pending_is_free: bool,
    /// The Stripe price of the plan in force, to move the item back to.
    pub price_in_force: Option<String>,
}

/// The change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// Down to a free plan: the subscription ends with the paid period.
    EndWithPeriod,
    /// To another paid plan: the item moves to `price`, prorated for an upgrade (R14: the
    /// customer pays the difference), not for a downgrade (R15: the period in progress was paid
    /// at the old price and keeps the old plan).
    MoveTo {
        /// The new Stripe price.
        price: String,
        /// Whether Stripe prorates it.
        prorate: bool,
    },
}

/// The subscription as Stripe has it when the change runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSubscription<'a> {
    /// Whether it ends with the current period.
    pub cancel_at_period_end: bool,
    /// Its item's price (or plan) id.
    pub price: Option<&'a str>,
}

/// One Stripe request of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeRequest {
    /// Sets `cancel_at_period_end`.
    SetCancelAtPeriodEnd(bool),
    /// Moves the subscription's item to `price`.
    MoveItem {
        /// The Stripe price.
        price: String,
        /// Whether Stripe prorates it.
        prorate: bool,
    },
}

/// Which idempotency key a step sends: `<prefix><derived id><suffix>`, the derived id being the
/// request's (from its `Idempotency-Key`), so a retried request sends Stripe the same keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKey {
    /// Undoing a pending end of the subscription.
    UndoEnd,
    /// Moving the item back to the plan in force.
    UndoPlan,
    /// Ending the subscription with the period.
    End,
    /// Moving the item to the new plan.
    Plan,
}

impl StepKey {
    /// The key's prefix and suffix around the request's derived id.
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            Self::UndoEnd => ("undo_", "_end"),
            Self::UndoPlan => ("undo_", "_plan"),
            Self::End => ("end_", ""),
            Self::Plan => ("plan_", ""),
        }
    }
}

/// One step: a request and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeStep {
    /// What to ask.
    pub request: StripeRequest,
    /// With which idempotency key.
    pub key: StepKey,
}

impl StripeChange {
    /// The Stripe requests, in order, given the subscription as Stripe has it now: undo a
    /// pending change (keep the subscription running; move the item back without proration,
    /// that period is paid) only where Stripe still has it, then the change.
    pub fn steps(&self, live: &LiveSubscription<'_>) -> Vec<StripeStep> {
        let mut steps = Vec::with_capacity(3);
        if let Some(undo) = &self.undo_pending {
            if live.cancel_at_period_end || undo.pending_is_free {
                steps.push(StripeStep {
                    request: StripeRequest::SetCancelAtPeriodEnd(false),
                    key: StepKey::UndoEnd,
                });
            }
            if let Some(price) = &undo.price_in_force
                && live.price != Some(price.as_str())
            {
                steps.push(StripeStep {
                    request: StripeRequest::MoveItem {
                        price: price.clone(),
                        prorate: false,
                    },
                    key: StepKey::UndoPlan,
                });
            }
        }
        match &self.change {
            None => {}
            Some(SubscriptionChange::EndWithPeriod) => steps.push(StripeStep {
                request: StripeRequest::SetCancelAtPeriodEnd(true),
                key: StepKey::End,
            }),
            Some(SubscriptionChange::MoveTo { price, prorate }) => steps.push(StripeStep {
                request: StripeRequest::MoveItem {
                    price: price.clone(),
                    prorate: *prorate,
                },
                key: StepKey::Plan,
            }),
        }
        steps
    }
}

/// The Stripe price of a catalog plan, if the catalog names one.
fn stripe_price(catalog: &Catalog, plan_id: &str) -> Option<String> {
    catalog
        .doc
        .plans
        .iter()
        .find(|plan| plan.id == plan_id)
        .and_then(|plan| plan.stripe_price_id.clone())
}

/// The Stripe price of a paid plan, or 503: a paid plan without one cannot be bought.
fn required_stripe_price(catalog: &Catalog, plan_id: &str) -> Result<String> {
    stripe_price(catalog, plan_id).ok_or(LedgerError::PaymentsUnavailable {
        message: "This plan cannot be bought yet. Contact our support team.",
    })
}

/// Plans `POST /v1/workspaces/{ws}/subscription` `{"plan_id"}`: subscribe, upgrade, or schedule
/// a downgrade. `stripe_configured` says whether a Stripe key is set.
pub fn plan_change(
    subscriber: &Subscriber,
    catalog: &Catalog,
    plan_id: &str,
    stripe_configured: bool,
) -> Result<PlanChangePlan> {
    let target = catalog.plan(plan_id)?;
    let state = &subscriber.state;
    let Some(subscription_id) = subscriber.paid_subscription() else {
        if target.price_money_micros == 0 {
            return Ok(PlanChangePlan::LedgerOnly);
        }
        if !stripe_configured {
            return Err(LedgerError::payments_not_configured());
        }
        let stripe_price = required_stripe_price(catalog, plan_id)?;
        let payment_method =
            state
                .payment_method_id
                .clone()
                .ok_or_else(|| LedgerError::Invalid {
                    code: "payment_method_required",
                    message: "Add a payment method before subscribing to a paid plan.".into(),
                    field: None,
                })?;
        return Ok(PlanChangePlan::Start(StartPaid {
            plan_id: plan_id.to_owned(),
            stripe_price,
            payment_method,
        }));
    };
    let upgrade = subscriber
        .terms_in_force()
        .is_none_or(|current| is_upgrade(&current, target));
    if upgrade && subscriber.standing() == SubscriptionStanding::PastDue {
        // New credits for a plan whose last invoice is unpaid would be credit for nothing.
        return Err(LedgerError::Conflict {
            code: "subscription_past_due",
            message: "Your last invoice is unpaid. Update your payment method in the billing portal, then upgrade.".into(),
        });
    }
    if !stripe_configured {
        return Err(LedgerError::payments_not_configured());
    }
    let staying = state.plan_id.as_deref() == Some(plan_id);
    let pending = state.pending_plan_id.is_some();
    if staying && !pending {
        return Ok(PlanChangePlan::LedgerOnly);
    }
    let change = if staying {
        None
    } else if target.price_money_micros == 0 {
        Some(SubscriptionChange::EndWithPeriod)
    } else {
        Some(SubscriptionChange::MoveTo {
            price: required_stripe_price(catalog, plan_id)?,
            prorate: upgrade,
        })
    };
    Ok(PlanChangePlan::Change(StripeChange {
        subscription_id: subscription_id.to_owned(),
        undo_pending: undo_pending(subscriber, catalog),
        change,
    }))
}

/// `GET /v1/workspaces/{ws}/subscription/preview?plan_id=`: what `POST .../subscription` with
/// that plan would do now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanChangePreview {
    /// The plan previewed.
    pub plan_id: String,
    /// `subscribe`, `upgrade`, `downgrade` or `unchanged` (the plan in force, a pending
    /// downgrade or not).
    pub change: ChangeKind,
    /// When the change takes effect (RFC 3339): now, or the cycle end for a downgrade.
    pub effective_at: String,
    /// Plan credits the change grants: the plan's monthly credits on subscribing, R14's prorated
    /// credits on an upgrade, else 0.
    pub credits_granted: Decimal,
    /// The plan's price, in the currency.
    pub price: Decimal,
    /// Whether the credits come only with a paid Stripe invoice: a first paid subscription's
    /// first invoice, charged to the saved card when the change is made (a refusal grants
    /// nothing and starts nothing).
    pub awaiting_payment: bool,
}

/// Previews a change to `plan_id` (writes nothing): [`plan_change`]'s refusals, then the
/// decision the ledger step of that plan makes, with the arguments the component gives it:
/// `plans::start_subscription` with Stripe's answer on the first invoice, which is not known
/// yet (so the credits await payment), `plans::change_plan` with the first period paid.
pub fn preview(
    subscriber: &Subscriber,
    catalog: &Catalog,
    plan_id: &str,
    stripe_configured: bool,
    real_now_secs: i64,
) -> Result<PlanChangePreview> {
    let plan = plan_change(subscriber, catalog, plan_id, stripe_configured)?;
    let target = catalog.plan(plan_id)?;
    let decision = match plan {
        PlanChangePlan::Start(_) => {
            plans::decide_subscribe(&subscriber.state, target, false, real_now_secs)
        }
        PlanChangePlan::LedgerOnly | PlanChangePlan::Change(_) => plans::decide(
            &subscriber.state,
            subscriber.plan_price_money_micros,
            target,
            true,
            real_now_secs,
        )?,
    };
    Ok(PlanChangePreview {
        plan_id: target.id.clone(),
        change: decision.kind,
        effective_at: calendar::rfc3339(decision.effective_at),
        credits_granted: money::to_decimal(decision.credits_micros),
        price: money::to_decimal(target.price_money_micros),
        awaiting_payment: decision.awaiting_payment,
    })
}

/// Plans `DELETE /v1/workspaces/{ws}/subscription/pending-change`: the Stripe side to undo (none
/// without a pending change on a paid subscription), before the ledger's
/// `plans::cancel_pending_change` (which answers 404 when nothing is pending).
pub fn plan_cancel_pending(
    subscriber: &Subscriber,
    catalog: &Catalog,
    stripe_configured: bool,
) -> Result<Option<StripeChange>> {
    let Some(subscription_id) = subscriber.paid_subscription() else {
        return Ok(None);
    };
    let Some(undo) = undo_pending(subscriber, catalog) else {
        return Ok(None);
    };
    if !stripe_configured {
        return Err(LedgerError::payments_not_configured());
    }
    Ok(Some(StripeChange {
        subscription_id: subscription_id.to_owned(),
        undo_pending: Some(undo),
        change: None,
    }))
}

/// The pending change to undo, if one is pending. A pending plan gone from the catalog counts
/// as paid (its downgrade moved the item; only Stripe still knows where).
fn undo_pending(subscriber: &Subscriber, catalog: &Catalog) -> Option<UndoPending> {
    let pending = subscriber.state.pending_plan_id.as_deref()?;
    Some(UndoPending {
        pending_is_free: catalog
            .plan(pending)
            .is_ok_and(|plan| plan.price_money_micros == 0),
        price_in_force: subscriber
            .state
            .plan_id
            .as_deref()
            .and_then(|current| stripe_price(catalog, current)),
    })
}

/// Whether a running Stripe subscription of the customer is the one an earlier attempt created
/// for `price` (its answer lost): adopted instead of creating a second one.
pub fn adopts(status: SubscriptionStatus, item_price: Option<&str>, price: &str) -> bool {
    status == SubscriptionStatus::Active && item_price == Some(price)
}

/// Whether a subscription Stripe just created has its first period paid (charged at once); if
/// not, nothing is started and it is canceled (`payment_behavior=error_if_incomplete`).
pub fn first_period_paid(status: SubscriptionStatus) -> bool {
    status == SubscriptionStatus::Active
}
