//! The Stripe side of the job: charging a claimed recharge off-session, and reconciling a
//! payment left pending (R21). Every function here calls Stripe OUTSIDE the ledger lock and
//! then hands what Stripe said to the ledger in its own short operation.
//!
//! What a payment becomes is the ledger's decision, made and written by the one
//! `payments::settle` the webhook and the synchronous top-up use too, so whichever reports
//! first, the ledger credits once and fails alike. This module only asks Stripe, hands over its
//! report, and counts the outcome.

pub use ledger::payments::Outcome;
use ledger::payments::{self, PaidWith, Payment, PaymentMethod, Reported, Settled};
use ledger::settlement::{self, Failure, Report, RequestFailure, Unstarted};
use spin_adapter::{
    ApiError, StripeFailure, card_error_report, classify, intent_report, make_saved_card_default,
    paid_with, run_ledger,
};
use stripe_client::{CardError, Client, NewPaymentIntent, PaymentIntent};

/// Hands Stripe's report on `payment` to the ledger, which settles it in one transaction
/// (recording `intent_id` on it): a hard decline of a recharge turns auto-recharge off with a
/// warning, a soft one re-arms it. `None` when the payment has another PaymentIntent than
/// `intent_id`: it is left as it is.
async fn report_to_ledger(
    payment: &Payment,
    intent_id: Option<&str>,
    report: &Report<'_>,
    paid: &PaidWith,
    now: i64,
) -> Result<Option<Settled>, ApiError> {
    let reported = Reported::Payment {
        id: &payment.id,
        intent_id,
    };
    let settled =
        run_ledger(async |db| payments::settle(db, reported, report, paid, now).await).await?;
    if settled.is_none() {
        spin_adapter::log!(
            "auto-recharge: payment {} has another PaymentIntent than {}; left as it is",
            payment.id,
            intent_id.unwrap_or("none")
        );
    }
    Ok(settled)
}

/// [`report_to_ledger`] with no card, and the outcome the job counts.
async fn report_and_count(
    payment: &Payment,
    intent_id: Option<&str>,
    report: &Report<'_>,
    now: i64,
) -> Result<Outcome, ApiError> {
    let settled = report_to_ledger(payment, intent_id, report, &PaidWith::default(), now).await?;
    Ok(settled.as_ref().map_or(Outcome::Pending, Settled::outcome))
}

/// Settles `payment` from its PaymentIntent; a paid one with the card that paid (`charged` when
/// it was the saved card, else read from Stripe).
async fn report_intent(
    client: &Client,
    payment: &Payment,
    intent: &PaymentIntent,
    charged: Option<&PaymentMethod>,
    now: i64,
) -> Result<Outcome, ApiError> {
    let mut report = Report::Intent(intent_report(intent));
    let mut paid = PaidWith::default();
    if report.is_paid() {
        match paid_with(client, intent, charged).await {
            Ok(card) => paid = card,
            Err(error) => {
                spin_adapter::log!(
                    "auto-recharge: payment {} left pending: {error}",
                    payment.id
                );
                report = Report::CardToSaveUnreadable;
            }
        }
    }
    let Some(settled) = report_to_ledger(payment, Some(&intent.id), &report, &paid, now).await?
    else {
        return Ok(Outcome::Pending);
    };
    // After the ledger: a card the payment saved becomes the customer's default at Stripe too.
    make_saved_card_default(client, &settled.payment, &paid).await;
    Ok(settled.outcome())
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
        let report = Report::Failed(Failure::no_saved_card());
        return report_and_count(payment, None, &report, now).await;
    };
    let amount_minor = match stripe_client::money::to_minor(payment.amount_money_micros, currency) {
        Ok(minor) => minor,
        Err(error) => {
            spin_adapter::log!(
                "auto-recharge: payment {} not chargeable: {error}",
                payment.id
            );
            let report = Report::Failed(Failure::not_chargeable());
            return report_and_count(payment, None, &report, now).await;
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
        Ok(intent) => return report_intent(client, payment, &intent, Some(&card), now).await,
        Err(error) => error,
    };
    match classify(&error) {
        StripeFailure::Card(declined) => report_card_error(client, payment, declined, now).await,
        StripeFailure::Request(failure) => {
            spin_adapter::log!(
                "auto-recharge: charge of payment {} failed at Stripe: {error}",
                payment.id
            );
            let report = Report::RequestFailed(failure);
            report_and_count(payment, None, &report, now).await
        }
    }
}

/// A card error from the confirmed charge: the ledger records its PaymentIntent (Stripe names
/// it; localstripe names only the charge, so it is found through the charge) and settles the
/// payment as it classifies the card's answer.
async fn report_card_error(
    client: &Client,
    payment: &Payment,
    card: &CardError,
    now: i64,
) -> Result<Outcome, ApiError> {
    let intent_id = client.payment_intent_of(card).await;
    // Off-session: the intent's status never matters (nobody can authenticate).
    let report = Report::CardError {
        report: card_error_report(card),
        intent: None,
    };
    report_and_count(payment, intent_id.as_deref(), &report, now).await
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
        Ok(intent) => report_intent(client, payment, &intent, None, now).await,
        Err(error) => {
            spin_adapter::log!(
                "auto-recharge: PaymentIntent {intent_id} of payment {} unreadable: {error}",
                payment.id
            );
            let failure = match classify(&error) {
                StripeFailure::Request(failure) => failure,
                StripeFailure::Card(_) => RequestFailure::Refused,
            };
            let report = Report::IntentUnreadable(failure);
            report_and_count(payment, Some(intent_id), &report, now).await
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
        Ok(Some(intent)) => report_intent(client, payment, &intent, None, now).await,
        Ok(None) => {
            match settlement::reconcile_unstarted(payment.kind, payment.created_at_secs, now) {
                Unstarted::ChargeAgain => charge_recharge(client, payment, currency, now).await,
                Unstarted::Fail(failure) => {
                    let report = Report::Failed(failure);
                    report_and_count(payment, None, &report, now).await
                }
            }
        }
        Err(error) => {
            spin_adapter::log!(
                "auto-recharge: PaymentIntents of payment {} unreadable: {error}",
                payment.id
            );
            Ok(Outcome::Unreachable)
        }
    }
}
