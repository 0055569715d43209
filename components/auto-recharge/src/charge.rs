//! The Stripe side of the job: charging a claimed recharge off-session, and reconciling a
//! payment left pending (R21). Every function here calls Stripe OUTSIDE the ledger lock and
//! then records what Stripe said in its own short ledger operation.
//!
//! What a payment becomes is the ledger's decision (`ledger::settlement`), the same one the
//! webhook and the synchronous top-up use, so whichever reports first, the ledger credits once
//! and fails alike. This module only asks Stripe and carries the settlement out.

use ledger::payments::{self, PaidWith, Payment, PaymentMethod};
use ledger::resolve;
use ledger::settlement::{
    self, Failure, RequestFailure, Settlement, Unstarted, settle_card_error, settle_intent,
    settle_request_failure, settle_unreadable_intent,
};
use ledger::statuses::PaymentStatus;
use spin_adapter::{
    ApiError, StripeFailure, classify, intent_report, make_saved_card_default, paid_with,
    run_ledger,
};
use stripe_client::{CardError, Client, NewPaymentIntent, PaymentIntent};

/// What became of one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Credited (now or before).
    Succeeded,
    /// Settled failed.
    Failed,
    /// Still pending at Stripe (processing, or waiting for the customer).
    Pending,
    /// Stripe could not be reached or refused our credentials: left pending, try later.
    Unreachable,
}

/// The outcome recorded in a settled payment.
fn outcome_of(payment: &Payment) -> Outcome {
    match payment.status {
        PaymentStatus::Succeeded => Outcome::Succeeded,
        PaymentStatus::Failed => Outcome::Failed,
        PaymentStatus::Pending | PaymentStatus::Other => Outcome::Pending,
    }
}

/// Carries out the ledger's settlement of `payment`: credits it (exactly once, whoever reports
/// it first, with the card that paid: `charged` when it was the saved card, else read from
/// Stripe through the PaymentIntent) or settles it failed (a hard decline of a recharge turns
/// auto-recharge off with a warning, a soft one re-arms it: the ledger decides), or leaves it
/// pending.
async fn carry_out(
    client: &Client,
    payment: &Payment,
    settlement: Settlement,
    paid_by: (Option<&PaymentIntent>, Option<&PaymentMethod>),
    now: i64,
) -> Result<Outcome, ApiError> {
    let settled = match settlement {
        Settlement::Succeed => {
            let paid = match paid_by {
                (Some(intent), charged) => match paid_with(client, intent, charged).await {
                    Ok(paid) => paid,
                    Err(error) => {
                        eprintln!(
                            "auto-recharge: payment {} left pending: {error}",
                            payment.id
                        );
                        return Ok(Outcome::Unreachable);
                    }
                },
                (None, charged) => PaidWith {
                    card: charged.cloned(),
                    saves_card: false,
                },
            };
            let settled = run_ledger(async |db| {
                payments::settle_succeeded(db, &payment.id, &paid, now).await
            })
            .await?;
            make_saved_card_default(client, &settled, &paid).await;
            settled
        }
        Settlement::Fail(failure) => {
            run_ledger(async |db| payments::settle_failure(db, &payment.id, &failure, now).await)
                .await?
        }
        Settlement::Wait | Settlement::AwaitCustomer { .. } => return Ok(Outcome::Pending),
        Settlement::StripeFailed => return Ok(Outcome::Unreachable),
    };
    Ok(outcome_of(&settled))
}

/// Records `intent_id` on `payment` (`ledger::resolve::attach_intent`). `false` when the payment
/// already has another PaymentIntent (then nothing is settled from this one).
async fn attach(payment: &Payment, intent_id: &str, now: i64) -> Result<bool, ApiError> {
    let attached =
        run_ledger(async |db| resolve::attach_intent(db, &payment.id, intent_id, now).await)
            .await?;
    if !attached {
        eprintln!(
            "auto-recharge: payment {} has another PaymentIntent than {intent_id}; left as it is",
            payment.id
        );
    }
    Ok(attached)
}

/// Charges a pending recharge off-session: the workspace's saved card, the payment's amount in
/// the catalog's currency, Stripe idempotency key = the payment id (a retry never charges
/// twice), then settles it from Stripe's answer.
pub async fn charge_recharge(
    client: &Client,
    payment: &Payment,
    currency: &str,
    now: i64,
) -> Result<Outcome, ApiError> {
    let ws = run_ledger(async |db| ledger::workspace::get(db, &payment.workspace_id).await).await?;
    let (Some(customer), Some(card)) = (ws.stripe_customer_id.clone(), ws.saved_card()) else {
        let settlement = Settlement::Fail(Failure::no_saved_card());
        return carry_out(client, payment, settlement, (None, None), now).await;
    };
    let amount_minor = match stripe_client::money::to_minor(payment.amount_micros, currency) {
        Ok(minor) => minor,
        Err(error) => {
            eprintln!(
                "auto-recharge: payment {} not chargeable: {error}",
                payment.id
            );
            let settlement = Settlement::Fail(Failure::not_chargeable());
            return carry_out(client, payment, settlement, (None, None), now).await;
        }
    };
    let new = NewPaymentIntent {
        amount_minor,
        currency: currency.to_owned(),
        customer,
        payment_method: Some(card.id.clone()),
        confirm: true,
        off_session: true,
        save_card: false,
        payment_id: payment.id.clone(),
        workspace_id: payment.workspace_id.clone(),
    };
    let error = match client.create_payment_intent(&new, &payment.id).await {
        Ok(intent) => {
            if !attach(payment, &intent.id, now).await? {
                return Ok(Outcome::Pending);
            }
            let settlement = settle_intent(&intent_report(&intent), payment.kind);
            return carry_out(
                client,
                payment,
                settlement,
                (Some(&intent), Some(&card)),
                now,
            )
            .await;
        }
        Err(error) => error,
    };
    match classify(&error) {
        StripeFailure::Card(declined) => card_failure(client, payment, declined, now).await,
        StripeFailure::Request(failure) => {
            eprintln!(
                "auto-recharge: charge of payment {} failed at Stripe: {error}",
                payment.id
            );
            let settlement = settle_request_failure(failure, payment.kind);
            carry_out(client, payment, settlement, (None, None), now).await
        }
    }
}

/// A card error from the confirmed charge: the PaymentIntent is recorded (Stripe names it;
/// localstripe names only the charge, so it is found through the charge), then the payment is
/// settled as the ledger classifies the card's answer.
async fn card_failure(
    client: &Client,
    payment: &Payment,
    card: &CardError,
    now: i64,
) -> Result<Outcome, ApiError> {
    if let Some(intent) = client.payment_intent_of(card).await
        && !attach(payment, &intent, now).await?
    {
        return Ok(Outcome::Pending);
    }
    // Off-session: the intent's status never matters (nobody can authenticate).
    let settlement = settle_card_error(spin_adapter::card_report(card), payment.kind, None);
    carry_out(client, payment, settlement, (None, None), now).await
}

/// Reconciles one payment pending for too long (R21): with a PaymentIntent, reads it and
/// settles it as the webhook would (still pending: it goes to the back of the queue); without
/// one, the customer's charges are searched for it (a charge whose answer was lost) and it is
/// settled from the one found; if none, the ledger decides (`settlement::reconcile_unstarted`):
/// a recharge is charged again with the same idempotency key, anything else fails.
pub async fn reconcile_payment(
    client: &Client,
    payment: &Payment,
    currency: &str,
    now: i64,
) -> Result<Outcome, ApiError> {
    let Some(intent_id) = payment.payment_intent_id.as_deref() else {
        return reconcile_without_intent(client, payment, currency, now).await;
    };
    match client.retrieve_payment_intent(intent_id).await {
        Ok(intent) => {
            let settlement = settle_intent(&intent_report(&intent), payment.kind);
            let outcome =
                carry_out(client, payment, settlement, (Some(&intent), None), now).await?;
            if outcome == Outcome::Pending {
                attach(payment, intent_id, now).await?;
            }
            Ok(outcome)
        }
        Err(error) => {
            eprintln!(
                "auto-recharge: PaymentIntent {intent_id} of payment {} unreadable: {error}",
                payment.id
            );
            let failure = match classify(&error) {
                StripeFailure::Request(failure) => failure,
                StripeFailure::Card(_) => RequestFailure::Refused,
            };
            let settlement = settle_unreadable_intent(failure);
            if settlement == Settlement::Wait {
                attach(payment, intent_id, now).await?;
            }
            carry_out(client, payment, settlement, (None, None), now).await
        }
    }
}

/// Reconciles a pending payment that has no PaymentIntent: its charge may have happened with
/// the answer lost, so it is looked for before anything else.
async fn reconcile_without_intent(
    client: &Client,
    payment: &Payment,
    currency: &str,
    now: i64,
) -> Result<Outcome, ApiError> {
    let ws = run_ledger(async |db| ledger::workspace::get(db, &payment.workspace_id).await).await?;
    let since = settlement::charge_search_since(payment.created_at_secs);
    let found = match ws.stripe_customer_id.as_deref() {
        Some(customer) => {
            client
                .find_payment_intent(customer, &payment.id, since)
                .await
        }
        None => Ok(None),
    };
    match found {
        Ok(Some(intent)) => {
            if !attach(payment, &intent.id, now).await? {
                return Ok(Outcome::Pending);
            }
            let settlement = settle_intent(&intent_report(&intent), payment.kind);
            carry_out(client, payment, settlement, (Some(&intent), None), now).await
        }
        Ok(None) => {
            match settlement::reconcile_unstarted(payment.kind, payment.created_at_secs, now) {
                Unstarted::ChargeAgain => charge_recharge(client, payment, currency, now).await,
                Unstarted::Fail(failure) => {
                    carry_out(
                        client,
                        payment,
                        Settlement::Fail(failure),
                        (None, None),
                        now,
                    )
                    .await
                }
            }
        }
        Err(error) => {
            eprintln!(
                "auto-recharge: PaymentIntents of payment {} unreadable: {error}",
                payment.id
            );
            Ok(Outcome::Unreachable)
        }
    }
}
