//! The Stripe-side decisions on real ledger states (SQLite on a temp file): plan-change planning
//! (R13-R15: what to ask Stripe, in which order, and what the ledger then writes), and which
//! payment or workspace a Stripe object is about. Settlement and card-failure classification
//! are pure and tested in `src/settlement.rs`.

mod common;

use common::{DAY, Fixture, NOV_1, micros};
use futures::executor::block_on;
use ledger::catalog::Catalog;
use ledger::payments::Reported;
use ledger::plan_change::{
    self, LiveSubscription, PlanChangePlan, StartPaid, StepKey, StripeChange, StripeRequest,
    StripeStep, Subscriber, SubscriptionChange, UndoPending,
};
use ledger::resolve::{self, StripeOwner};
use ledger::settlement::{CardReport, Failure, IntentReport, Report, RequestFailure, Settlement};
use ledger::statuses::{IntentStatus, PaymentKind, SubscriptionStanding, SubscriptionStatus};
use ledger::{LedgerError, payments, plans, workspace};

fn subscriber(fx: &Fixture, ws: &str) -> Subscriber {
    block_on(plan_change::subscriber(&fx.db, ws)).expect("subscriber")
}

fn plan(fx: &Fixture, ws: &str, plan_id: &str) -> Result<PlanChangePlan, LedgerError> {
    plan_change::plan_change(&subscriber(fx, ws), &fx.catalog, plan_id, true)
}

/// `ws` on `plan_id` (29 for Basic, 99 for Professional) through Stripe subscription `sub_1`,
/// its first period paid, with card pm_1 saved.
fn paid(fx: &Fixture, ws: &str, plan_id: &str) {
    fx.subscribed(ws, "free", NOV_1);
    fx.save_card(ws);
    let claim = plans::subscription_claim(NOV_1, "n1");
    block_on(plans::claim_subscription(&fx.db, ws, &claim, NOV_1)).expect("claim");
    block_on(plans::start_subscription(
        &fx.db,
        &fx.catalog,
        ws,
        plans::StartedSubscription {
            plan_id,
            claim: &claim,
            subscription_id: "sub_1",
            first_period_paid: true,
        },
        NOV_1,
    ))
    .expect("start");
}

fn schedule(fx: &Fixture, ws: &str, plan_id: &str) {
    let change = block_on(plans::change_plan(
        &fx.db,
        &fx.catalog,
        ws,
        plan_id,
        true,
        NOV_1 + DAY,
    ))
    .expect("change");
    assert_eq!(change.action, "downgrade_scheduled");
}

fn change(undo_pending: Option<UndoPending>, change: Option<SubscriptionChange>) -> PlanChangePlan {
    PlanChangePlan::Change(StripeChange {
        subscription_id: "sub_1".into(),
        undo_pending,
        change,
    })
}

fn move_to(price: &str, prorate: bool) -> Option<SubscriptionChange> {
    Some(SubscriptionChange::MoveTo {
        price: price.into(),
        prorate,
    })
}

#[test]
fn without_a_paid_subscription_free_plans_need_only_the_ledger() {
    let fx = Fixture::new();
    fx.workspace("w");
    assert_eq!(plan(&fx, "w", "free"), Ok(PlanChangePlan::LedgerOnly));
    // Without Stripe too: a free plan never needs it.
    assert_eq!(
        plan_change::plan_change(&subscriber(&fx, "w"), &fx.catalog, "free", false),
        Ok(PlanChangePlan::LedgerOnly)
    );
    assert_eq!(
        plan(&fx, "w", "gold"),
        Err(LedgerError::NotFound { what: "plan" })
    );
}

#[test]
fn a_first_paid_plan_is_refused_before_any_side_effect_in_this_order() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    let sub = subscriber(&fx, "w");
    // 1. Stripe not configured.
    assert_eq!(
        plan_change::plan_change(&sub, &fx.catalog, "basic", false),
        Err(LedgerError::PaymentsUnavailable {
            message: "Payments are not configured yet."
        })
    );
    // 2. The plan has no Stripe price.
    let mut doc = fx.catalog.doc.clone();
    doc.plans[1].stripe_price_id = None;
    let unpriced = Catalog::validate(1, doc).expect("catalog");
    assert_eq!(
        plan_change::plan_change(&sub, &unpriced, "basic", true),
        Err(LedgerError::PaymentsUnavailable {
            message: "This plan cannot be bought yet. Contact our support team."
        })
    );
    // 3. No saved card.
    let refused = plan(&fx, "w", "basic").unwrap_err();
    assert_eq!(
        (refused.code(), refused.to_string().as_str()),
        (
            "payment_method_required",
            "Add a payment method before subscribing to a paid plan."
        )
    );
    fx.save_card("w");
    assert_eq!(
        plan(&fx, "w", "basic"),
        Ok(PlanChangePlan::Start(StartPaid {
            plan_id: "basic".into(),
            stripe_price: "plan_basic".into(),
            payment_method: "pm_1".into(),
        }))
    );
}

#[test]
fn a_claim_or_an_ended_subscription_is_not_a_paid_subscription_in_force() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.save_card("w");
    let claim = plans::subscription_claim(NOV_1, "n1");
    block_on(plans::claim_subscription(&fx.db, "w", &claim, NOV_1)).expect("claim");
    // The claim is kept beside Stripe's id, never in its place.
    assert_eq!(subscriber(&fx, "w").state.stripe_subscription_id, None);
    assert_eq!(subscriber(&fx, "w").paid_subscription(), None);
    // Planned as a start: the ledger's claim then says another one is in progress.
    assert!(matches!(
        plan(&fx, "w", "basic"),
        Ok(PlanChangePlan::Start(_))
    ));

    let ended = Fixture::new();
    paid(&ended, "e", "basic");
    assert_eq!(subscriber(&ended, "e").paid_subscription(), Some("sub_1"));
    block_on(plans::end_subscription(&ended.db, "e", NOV_1 + DAY)).expect("end");
    let sub = subscriber(&ended, "e");
    assert_eq!(
        SubscriptionStanding::parse(&sub.state.subscription_status),
        SubscriptionStanding::Canceled
    );
    assert_eq!(sub.paid_subscription(), None);
    assert!(matches!(
        plan(&ended, "e", "basic"),
        Ok(PlanChangePlan::Start(_))
    ));
}

#[test]
fn upgrades_and_downgrades_of_a_paid_subscription() {
    let fx = Fixture::new();
    paid(&fx, "w", "basic");
    let sub = subscriber(&fx, "w");
    assert_eq!(
        (sub.paid_subscription(), sub.plan_price_money_micros),
        (Some("sub_1"), micros("29"))
    );
    // Basic (29, 1,000 credits) to Professional (99, 5,000): an upgrade, prorated by Stripe.
    assert_eq!(
        plan(&fx, "w", "professional"),
        Ok(change(None, move_to("plan_professional", true)))
    );
    // Down to free: the subscription ends with the paid period.
    assert_eq!(
        plan(&fx, "w", "free"),
        Ok(change(None, Some(SubscriptionChange::EndWithPeriod)))
    );
    // The plan in force again, nothing pending: the ledger alone answers `unchanged`.
    assert_eq!(plan(&fx, "w", "basic"), Ok(PlanChangePlan::LedgerOnly));
    // Not configured: refused, whatever the change.
    assert_eq!(
        plan_change::plan_change(&sub, &fx.catalog, "professional", false),
        Err(LedgerError::PaymentsUnavailable {
            message: "Payments are not configured yet."
        })
    );

    let pro = Fixture::new();
    paid(&pro, "p", "professional");
    // Professional to Basic: a downgrade, not prorated (the period was paid at 99).
    assert_eq!(
        plan(&pro, "p", "basic"),
        Ok(change(None, move_to("plan_basic", false)))
    );
}

#[test]
fn a_pending_downgrade_is_undone_first() {
    let fx = Fixture::new();
    paid(&fx, "w", "professional");
    schedule(&fx, "w", "basic");
    let undo_paid = Some(UndoPending {
        pending_is_free: false,
        price_in_force: Some("plan_professional".into()),
    });
    // Choosing the plan in force cancels the pending change: undo only.
    assert_eq!(
        plan(&fx, "w", "professional"),
        Ok(change(undo_paid.clone(), None))
    );
    // Down to free instead: undo, then end with the period.
    assert_eq!(
        plan(&fx, "w", "free"),
        Ok(change(
            undo_paid.clone(),
            Some(SubscriptionChange::EndWithPeriod)
        ))
    );
    assert_eq!(
        plan_change::plan_cancel_pending(&subscriber(&fx, "w"), &fx.catalog, true),
        Ok(Some(StripeChange {
            subscription_id: "sub_1".into(),
            undo_pending: undo_paid,
            change: None,
        }))
    );
    assert_eq!(
        plan_change::plan_cancel_pending(&subscriber(&fx, "w"), &fx.catalog, false),
        Err(LedgerError::PaymentsUnavailable {
            message: "Payments are not configured yet."
        })
    );

    let free = Fixture::new();
    paid(&free, "f", "professional");
    schedule(&free, "f", "free");
    assert_eq!(
        plan(&free, "f", "basic"),
        Ok(change(
            Some(UndoPending {
                pending_is_free: true,
                price_in_force: Some("plan_professional".into()),
            }),
            move_to("plan_basic", false)
        ))
    );
}

#[test]
fn nothing_pending_or_no_paid_subscription_leaves_stripe_alone_on_cancel() {
    let fx = Fixture::new();
    paid(&fx, "w", "basic");
    assert_eq!(
        plan_change::plan_cancel_pending(&subscriber(&fx, "w"), &fx.catalog, false),
        Ok(None)
    );
    let free = Fixture::new();
    free.subscribed("f", "basic", NOV_1);
    schedule(&free, "f", "free");
    assert_eq!(
        plan_change::plan_cancel_pending(&subscriber(&free, "f"), &free.catalog, false),
        Ok(None),
        "a plan without a Stripe subscription: the ledger alone"
    );
}

#[test]
fn no_upgrade_while_past_due_but_downgrades_stay_open() {
    let fx = Fixture::new();
    paid(&fx, "w", "basic");
    block_on(plans::record_invoice_failed(&fx.db, "w")).expect("past due");
    let refused = plan(&fx, "w", "professional").unwrap_err();
    assert_eq!(
        refused,
        LedgerError::Conflict {
            code: "subscription_past_due",
            message: "Your last invoice is unpaid. Update your payment method in the billing portal, then upgrade.".into(),
        }
    );
    // Checked before the Stripe configuration: the customer's problem comes first.
    assert_eq!(
        plan_change::plan_change(&subscriber(&fx, "w"), &fx.catalog, "professional", false),
        Err(refused)
    );
    assert_eq!(
        plan(&fx, "w", "free"),
        Ok(change(None, Some(SubscriptionChange::EndWithPeriod)))
    );
}

#[test]
fn the_terms_in_force_decide_not_the_catalog() {
    // Subscribed to Basic at 29; the catalog then drops Basic (or makes it free). The workspace
    // still pays 29 for 1,000 credits until the cycle ends: its subscription is paid, and
    // Professional (99, 5,000) is an upgrade, exactly as the ledger's `change_plan` sees it.
    let fx = Fixture::new();
    paid(&fx, "w", "basic");
    let mut doc = fx.catalog.doc.clone();
    doc.plans.retain(|plan| plan.id != "basic");
    let without_basic = Catalog::validate(2, doc).expect("catalog");
    let sub = subscriber(&fx, "w");
    assert_eq!(
        plan_change::plan_change(&sub, &without_basic, "professional", true),
        Ok(change(None, move_to("plan_professional", true)))
    );
    let mut doc = fx.catalog.doc.clone();
    doc.plans[1].price = 0.into();
    let basic_free = Catalog::validate(3, doc).expect("catalog");
    assert_eq!(sub.paid_subscription(), Some("sub_1"));
    assert_eq!(
        plan_change::plan_change(&sub, &basic_free, "free", true),
        Ok(change(None, Some(SubscriptionChange::EndWithPeriod)))
    );
}

#[test]
fn steps_follow_what_stripe_has_now() {
    let undo_and_move = StripeChange {
        subscription_id: "sub_1".into(),
        undo_pending: Some(UndoPending {
            pending_is_free: false,
            price_in_force: Some("plan_professional".into()),
        }),
        change: move_to("plan_basic", false),
    };
    let step = |request, key| StripeStep { request, key };
    // Stripe still has the pending downgrade (item on Basic) and an end at period end.
    let live = LiveSubscription {
        cancel_at_period_end: true,
        price: Some("plan_basic"),
    };
    assert_eq!(
        undo_and_move.steps(&live),
        vec![
            step(StripeRequest::SetCancelAtPeriodEnd(false), StepKey::UndoEnd),
            step(
                StripeRequest::MoveItem {
                    price: "plan_professional".into(),
                    prorate: false
                },
                StepKey::UndoPlan
            ),
            step(
                StripeRequest::MoveItem {
                    price: "plan_basic".into(),
                    prorate: false
                },
                StepKey::Plan
            ),
        ]
    );
    // Already back on the plan in force and running: only the change.
    let live = LiveSubscription {
        cancel_at_period_end: false,
        price: Some("plan_professional"),
    };
    assert_eq!(undo_and_move.steps(&live).len(), 1);
    // A pending free plan always re-opens the subscription (its end may not show yet).
    let free_pending = StripeChange {
        undo_pending: Some(UndoPending {
            pending_is_free: true,
            price_in_force: None,
        }),
        change: Some(SubscriptionChange::EndWithPeriod),
        ..undo_and_move
    };
    assert_eq!(
        free_pending.steps(&live),
        vec![
            step(StripeRequest::SetCancelAtPeriodEnd(false), StepKey::UndoEnd),
            step(StripeRequest::SetCancelAtPeriodEnd(true), StepKey::End),
        ]
    );
    assert_eq!(StepKey::UndoEnd.parts(), ("undo_", "_end"));
    assert_eq!(StepKey::UndoPlan.parts(), ("undo_", "_plan"));
    assert_eq!(StepKey::End.parts(), ("end_", ""));
    assert_eq!(StepKey::Plan.parts(), ("plan_", ""));
}

#[test]
fn adopting_and_first_periods() {
    use SubscriptionStatus::{Active, Incomplete, PastDue};
    assert!(plan_change::adopts(
        Active,
        Some("plan_basic"),
        "plan_basic"
    ));
    assert!(!plan_change::adopts(
        Active,
        Some("plan_professional"),
        "plan_basic"
    ));
    assert!(!plan_change::adopts(
        Incomplete,
        Some("plan_basic"),
        "plan_basic"
    ));
    assert!(!plan_change::adopts(
        PastDue,
        Some("plan_basic"),
        "plan_basic"
    ));
    assert!(!plan_change::adopts(Active, None, "plan_basic"));
    assert!(plan_change::first_period_paid(Active));
    assert!(!plan_change::first_period_paid(Incomplete));
}

#[test]
fn stripe_statuses_set_the_standing() {
    let fx = Fixture::new();
    paid(&fx, "w", "basic");
    let standing = |status: &str| {
        block_on(plans::mirror_subscription_status(
            &fx.db,
            "w",
            SubscriptionStatus::parse(status),
        ))
        .expect("standing");
        fx.state("w").subscription_status
    };
    assert_eq!(standing("unpaid"), "past_due");
    assert_eq!(standing("paused"), "past_due", "unchanged");
    assert_eq!(standing("trialing"), "active");
    assert_eq!(standing("incomplete_expired"), "active", "unchanged");
    assert_eq!(
        block_on(plans::mirror_subscription_status(
            &fx.db,
            "nobody",
            SubscriptionStatus::Active
        )),
        Err(LedgerError::NotFound { what: "workspace" })
    );
}

#[test]
fn events_find_their_workspace() {
    let fx = Fixture::new();
    paid(&fx, "w", "basic");
    block_on(workspace::set_stripe_customer(&fx.db, "w", "cus_1")).expect("customer");
    let owner = |customer: Option<&str>, subscription: Option<&str>| StripeOwner {
        customer: customer.map(str::to_owned),
        subscription: subscription.map(str::to_owned),
    };
    let of = |o: StripeOwner| block_on(resolve::workspace_of(&fx.db, &o)).expect("lookup");
    assert_eq!(of(owner(None, Some("sub_1"))), Some("w".into()));
    assert_eq!(of(owner(Some("cus_x"), Some("sub_1"))), Some("w".into()));
    assert_eq!(of(owner(Some("cus_1"), None)), Some("w".into()));
    // An old subscription of the same customer must not touch the current one.
    assert_eq!(of(owner(Some("cus_1"), Some("sub_old"))), None);
    assert_eq!(of(owner(Some("cus_2"), Some("sub_2"))), None);
    assert_eq!(of(owner(None, None)), None);
    // A customer whose workspace has no subscription yet takes the event (the first invoice).
    fx.workspace("n");
    block_on(workspace::set_stripe_customer(&fx.db, "n", "cus_n")).expect("customer");
    assert_eq!(of(owner(Some("cus_n"), Some("sub_new"))), Some("n".into()));
    // While a request creates its subscription (a claim held), no event about a subscription is
    // the workspace's, as before the claim had columns of its own; once started, the new one's are.
    let claim = plans::subscription_claim(NOV_1, "n1");
    block_on(plans::claim_subscription(&fx.db, "n", &claim, NOV_1)).expect("claim");
    assert_eq!(of(owner(Some("cus_n"), Some("sub_new"))), None);
    assert_eq!(of(owner(Some("cus_n"), None)), Some("n".into()));
    block_on(plans::release_subscription_claim(&fx.db, "n", &claim)).expect("release");
    assert_eq!(of(owner(Some("cus_n"), Some("sub_new"))), Some("n".into()));
}

#[test]
fn payment_intents_find_their_payment() {
    let fx = Fixture::new();
    fx.workspace("w");
    let create = |id: &str| {
        block_on(payments::create_topup(
            &fx.db,
            &fx.catalog,
            "w",
            id,
            common::dec("25"),
            NOV_1,
        ))
        .expect("top-up")
    };
    create("tp_1");
    create("tp_2");
    // A report that leaves the payment pending (Stripe processing) settles nothing but
    // records the PaymentIntent, so it shows which payment a PaymentIntent is about.
    let processing = Report::Intent(IntentReport {
        status: IntentStatus::Processing,
        has_payment_method: true,
        last_error: None,
    });
    let paid = payments::PaidWith::default();
    let settle = |reported: Reported<'_>| {
        block_on(payments::settle(
            &fx.db,
            reported,
            &processing,
            &paid,
            NOV_1,
        ))
        .expect("settle")
        .map(|settled| settled.payment.id)
    };
    let of = |intent_id: &str, metadata_payment_id: Option<&str>| {
        settle(Reported::Intent {
            intent_id,
            metadata_payment_id,
        })
    };
    // Named by metadata: attached now, then found by the intent alone.
    assert_eq!(of("pi_1", Some("tp_1")), Some("tp_1".into()));
    assert_eq!(of("pi_1", None), Some("tp_1".into()));
    assert_eq!(
        block_on(payments::find_by_intent(&fx.db, "pi_1"))
            .expect("find")
            .map(|p| p.id),
        Some("tp_1".into())
    );
    assert_eq!(
        block_on(resolve::payment_of_intent(&fx.db, "pi_1", None))
            .expect("lookup")
            .map(|p| p.id),
        Some("tp_1".into())
    );
    // Metadata naming a payment with another intent, or no payment of ours: not ours.
    assert_eq!(of("pi_2", Some("tp_1")), None);
    assert_eq!(of("pi_3", Some("tp_unknown")), None);
    assert_eq!(of("pi_4", None), None);
    let by_id = |intent_id: &'static str| {
        settle(Reported::Payment {
            id: "tp_2",
            intent_id: Some(intent_id),
        })
    };
    assert_eq!(by_id("pi_5"), Some("tp_2".into()));
    assert_eq!(by_id("pi_5"), Some("tp_2".into()), "the same intent again");
    assert_eq!(by_id("pi_6"), None);
    fx.assert_invariants();
}

/// A top-up of 25 (currency) left pending, as a route creates it.
fn pending_topup(fx: &Fixture, id: &str, now: i64) {
    block_on(payments::create_topup(
        &fx.db,
        &fx.catalog,
        "w",
        id,
        common::dec("25"),
        now,
    ))
    .expect("top-up");
}

/// Settles `payment_id` from `report` (reported with `intent_id`) as any observer would.
fn report(
    fx: &Fixture,
    payment_id: &str,
    intent_id: Option<&str>,
    report: &Report<'_>,
    now: i64,
) -> payments::Settled {
    let reported = Reported::Payment {
        id: payment_id,
        intent_id,
    };
    let paid = payments::PaidWith::default();
    block_on(payments::settle(&fx.db, reported, report, &paid, now))
        .expect("settle")
        .expect("a payment of ours")
}

fn declined(decline_code: &'static str) -> Report<'static> {
    Report::CardError {
        report: CardReport {
            code: Some("card_declined"),
            decline_code: Some(decline_code),
            message: Some("Your card was declined."),
        },
        intent: None,
    }
}

#[test]
fn one_settlement_whoever_reports_and_in_whatever_order() {
    let fx = Fixture::new();
    fx.workspace("w");
    pending_topup(&fx, "tp_1", NOV_1);
    // The webhook's payment_intent.payment_failed: a hard decline, with Stripe's words.
    let failed = report(&fx, "tp_1", Some("pi_1"), &declined("stolen_card"), NOV_1);
    assert_eq!(
        (
            failed.payment.status.as_str(),
            failed.payment.failure_code.as_deref(),
            failed.payment.payment_intent_id.as_deref(),
        ),
        ("failed", Some("card_declined"), Some("pi_1"))
    );
    let message = failed.payment.failure_message.clone().expect("message");
    assert!(message.contains("Your card was declined."), "{message}");
    assert!(matches!(&failed.settlement, Settlement::Fail(f) if f.hard_decline));
    assert_eq!(fx.balances("w"), (0, 0));
    // The customer retried the same PaymentIntent with another card: the success credits once.
    let paid = report(&fx, "tp_1", Some("pi_1"), &Report::Succeeded, NOV_1 + 60);
    assert_eq!(
        (paid.payment.status.as_str(), paid.payment.failure_code),
        ("succeeded", None)
    );
    assert_eq!(fx.balances("w"), (0, micros("25")));
    // Late reports of every kind leave it as it is: a second success, a failure, a cancel.
    let canceled = Report::Intent(IntentReport {
        status: IntentStatus::Canceled,
        has_payment_method: true,
        last_error: None,
    });
    for (late, what) in [
        (Report::Succeeded, "success"),
        (declined("insufficient_funds"), "decline"),
        (canceled, "cancel"),
    ] {
        let settled = report(&fx, "tp_1", Some("pi_1"), &late, NOV_1 + 120);
        assert_eq!(settled.payment.status.as_str(), "succeeded", "{what}");
    }
    assert_eq!(fx.balances("w"), (0, micros("25")));
    // A report through another PaymentIntent is not about this payment.
    let reported = Reported::Payment {
        id: "tp_1",
        intent_id: Some("pi_other"),
    };
    let paid_with = payments::PaidWith::default();
    let other = block_on(payments::settle(
        &fx.db,
        reported,
        &Report::Succeeded,
        &paid_with,
        NOV_1,
    ));
    assert_eq!(other, Ok(None));
    fx.assert_invariants();
}

#[test]
fn webhook_failures_are_classified_by_the_ledger() {
    let fx = Fixture::new();
    fx.workspace("w");
    // payment_intent.payment_failed without a last_payment_error: a soft processing failure.
    pending_topup(&fx, "tp_1", NOV_1);
    let no_error = Report::CardError {
        report: CardReport::default(),
        intent: None,
    };
    let settled = report(&fx, "tp_1", Some("pi_1"), &no_error, NOV_1);
    assert_eq!(
        settled.payment.failure_code.as_deref(),
        Some("payment_processing_error")
    );
    assert!(matches!(&settled.settlement, Settlement::Fail(f) if !f.hard_decline));
    // payment_intent.canceled after an expired card: failed expired_card, hard.
    pending_topup(&fx, "tp_2", NOV_1);
    let canceled = Report::Intent(IntentReport {
        status: IntentStatus::Canceled,
        has_payment_method: false,
        last_error: Some(CardReport {
            code: Some("expired_card"),
            decline_code: None,
            message: Some("Your card has expired."),
        }),
    });
    let settled = report(&fx, "tp_2", Some("pi_2"), &canceled, NOV_1);
    assert_eq!(
        settled.payment.failure_code.as_deref(),
        Some("expired_card")
    );
    assert!(matches!(&settled.settlement, Settlement::Fail(f) if f.hard_decline));
    // payment_intent.canceled without a failed attempt: soft, Stripe's words kept.
    pending_topup(&fx, "tp_3", NOV_1);
    let canceled = Report::Intent(IntentReport {
        status: IntentStatus::Canceled,
        has_payment_method: false,
        last_error: None,
    });
    let settled = report(&fx, "tp_3", Some("pi_3"), &canceled, NOV_1);
    assert_eq!(
        settled.settlement,
        Settlement::Fail(Failure::of_canceled_intent(None))
    );
    assert_eq!(
        settled.payment.failure_message.as_deref(),
        Some(Failure::of_canceled_intent(None).message.as_str())
    );
    assert_eq!(fx.balances("w"), (0, 0));
    fx.assert_invariants();
}

#[test]
fn a_declined_recharge_turns_auto_recharge_off_when_hard_and_rearms_it_when_soft() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.save_card("w");
    fx.enable_auto_recharge("w", "5", "10");
    let claim = |now: i64| {
        block_on(payments::claim_auto_recharge(&fx.db, &fx.catalog, "w", now))
            .expect("claim")
            .expect("a recharge: the wallet is empty")
    };
    // Soft: the card has no funds today; auto-recharge stays on and is re-armed.
    let first = claim(NOV_1);
    let settled = report(
        &fx,
        &first.id,
        Some("pi_1"),
        &declined("insufficient_funds"),
        NOV_1,
    );
    assert_eq!(settled.payment.status.as_str(), "failed");
    let state = fx.state("w");
    assert!(state.auto_recharge_enabled);
    let warning = state.auto_recharge_warning.expect("warning");
    assert!(warning.contains("will be retried"), "{warning}");
    // Re-armed: the next sweep charges again. Hard this time: lost card, auto-recharge off.
    let second = claim(NOV_1 + 60);
    report(
        &fx,
        &second.id,
        Some("pi_2"),
        &declined("lost_card"),
        NOV_1 + 60,
    );
    let state = fx.state("w");
    assert!(!state.auto_recharge_enabled);
    let warning = state.auto_recharge_warning.expect("warning");
    assert!(warning.contains("turned off"), "{warning}");
    // Off-session authentication nobody can complete: hard too, whoever reads the intent.
    let requires_action = Report::Intent(IntentReport {
        status: IntentStatus::RequiresAction,
        has_payment_method: true,
        last_error: None,
    });
    assert_eq!(
        requires_action.settlement(PaymentKind::AutoRecharge),
        Settlement::Fail(Failure::authentication_off_session())
    );
    assert_eq!(
        fx.balances("w").1,
        0,
        "no failed recharge credits the wallet"
    );
    fx.assert_invariants();
}

#[test]
fn pending_reports_touch_the_reconciliation_queue_only_when_stripe_answered() {
    let fx = Fixture::new();
    fx.workspace("w");
    pending_topup(&fx, "tp_1", NOV_1);
    pending_topup(&fx, "tp_2", NOV_1 + 1);
    report(&fx, "tp_1", Some("pi_1"), &Report::Succeeded, NOV_1 + 2);
    // tp_1 is settled; tp_2 and tp_3 stay pending.
    pending_topup(&fx, "tp_3", NOV_1 + 3);
    let queue = |now: i64| -> Vec<String> {
        block_on(payments::stale_pending(&fx.db, now, 10))
            .expect("stale")
            .into_iter()
            .map(|p| p.id)
            .collect()
    };
    let later = NOV_1 + payments::RECONCILE_AFTER_SECS + 100;
    assert_eq!(queue(later), ["tp_2", "tp_3"]);
    // Stripe did not answer: tp_2 stays first in line.
    let unanswered = Report::IntentUnreadable(RequestFailure::Unanswered);
    let settled = report(&fx, "tp_2", None, &unanswered, NOV_1 + 10);
    assert_eq!(settled.settlement, Settlement::StripeFailed);
    assert_eq!(queue(later), ["tp_2", "tp_3"]);
    // Stripe answered it is still processing: looked at now, tp_2 goes to the back.
    let processing = Report::Intent(IntentReport {
        status: IntentStatus::Processing,
        has_payment_method: true,
        last_error: None,
    });
    let settled = report(&fx, "tp_2", Some("pi_2"), &processing, NOV_1 + 20);
    assert_eq!(
        (settled.settlement, settled.payment.status.as_str()),
        (Settlement::Wait, "pending")
    );
    assert_eq!(queue(later), ["tp_3", "tp_2"]);
    // Paid, but the card it saves cannot be read yet: pending, never credited without it.
    let settled = report(
        &fx,
        "tp_3",
        Some("pi_3"),
        &Report::CardToSaveUnreadable,
        NOV_1 + 30,
    );
    assert_eq!(
        (
            settled.payment.status.as_str(),
            settled.payment.payment_intent_id.as_deref()
        ),
        ("pending", Some("pi_3"))
    );
    assert_eq!(fx.balances("w"), (0, micros("25")), "only tp_1");
    fx.assert_invariants();
}

#[test]
fn failures_decided_before_stripe_answered() {
    let fx = Fixture::new();
    fx.workspace("w");
    pending_topup(&fx, "tp_1", NOV_1);
    let settled = report(
        &fx,
        "tp_1",
        None,
        &Report::Failed(Failure::not_started()),
        NOV_1,
    );
    assert_eq!(
        (
            settled.payment.status.as_str(),
            settled.payment.failure_message.as_deref()
        ),
        ("failed", Some(ledger::settlement::NOT_STARTED_MESSAGE))
    );
    // A top-up's refused request stays pending for the customer's retry.
    pending_topup(&fx, "tp_2", NOV_1);
    let refused = Report::RequestFailed(RequestFailure::Refused);
    let settled = report(&fx, "tp_2", None, &refused, NOV_1);
    assert_eq!(
        (settled.settlement, settled.payment.status.as_str()),
        (Settlement::StripeFailed, "pending")
    );
    fx.assert_invariants();
}
