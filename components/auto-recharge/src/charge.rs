//! The Stripe side of the job: charging a claimed recharge off-session, and reconciling a
//! payment left pending (R21). Every function here calls Stripe OUTSIDE the ledger lock and
//! then records what Stripe said in its own short ledger operation.
//!
//! Settlement follows the webhook exactly (`settle_succeeded` / `settle_failed` with the same
//! failure classification, `stripe_client::is_hard_decline`), so whichever of the synchronous
//! answer, the webhook or this job reports first, the ledger credits once.

use ledger::LedgerError;
use ledger::payments::{self, Payment};
use spin_adapter::{ApiError, run_ledger};
use stripe_client::{Client, NewPaymentIntent, PaymentIntent, StripeError};

/// The product code of every failure that is not the card's.
const PROCESSING_ERROR: &str = "payment_processing_error";

/// The failure message of a manual top-up that never reached Stripe.
const NOT_STARTED: &str = "The payment was not started; please try again.";

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

/// Whether a Stripe failure leaves the payment pending: the request may not have been handled
/// (network, timeout, 5xx, rate limit, a concurrent request with the same idempotency key), the
/// answer was not understood (the charge may have happened), or our key is refused (an
/// operator's mistake, not the customer's).
fn leaves_pending(error: &StripeError) -> bool {
    match error {
        StripeError::InvalidRequest { status, .. } => *status == 409,
        StripeError::RateLimited { .. }
        | StripeError::Api { .. }
        | StripeError::Network(_)
        | StripeError::Timeout(_)
        | StripeError::Authentication { .. }
        | StripeError::Decode(_) => true,
        StripeError::Card(_) | StripeError::BadInput(_) => false,
    }
}

/// The outcome recorded in a settled payment.
fn outcome_of(payment: &Payment) -> Outcome {
    match payment.status.as_str() {
        "succeeded" => Outcome::Succeeded,
        "failed" => Outcome::Failed,
        _ => Outcome::Pending,
    }
}

/// Credits `payment` (exactly once, whoever reports it first).
async fn succeed(payment: &Payment, now: i64) -> Result<Outcome, ApiError> {
    let settled =
        run_ledger(async |db| payments::settle_succeeded(db, &payment.id, now).await).await?;
    Ok(outcome_of(&settled))
}

/// Settles `payment` failed; a hard decline of a recharge turns auto-recharge off with a
/// warning, a soft one re-arms it (the ledger decides).
async fn fail(
    payment: &Payment,
    code: &str,
    message: &str,
    hard_decline: bool,
    now: i64,
) -> Result<Outcome, ApiError> {
    let settled = run_ledger(async |db| {
        payments::settle_failed(db, &payment.id, code, message, hard_decline, now).await
    })
    .await?;
    Ok(outcome_of(&settled))
}

/// Records `intent_id` on `payment` (this also marks it as looked at now, so a payment left
/// pending goes to the back of the reconciliation queue). `false` when the payment already has
/// another PaymentIntent (then nothing is settled from this one).
async fn attach(payment: &Payment, intent_id: &str, now: i64) -> Result<bool, ApiError> {
    let attached = run_ledger(async |db| {
        match payments::attach_intent(db, &payment.id, intent_id, now).await {
            Ok(()) => Ok(true),
            Err(LedgerError::Conflict { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    })
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
    let (Some(customer), Some(method)) = (ws.stripe_customer_id, ws.payment_method_id) else {
        let message = "There is no saved payment method to charge; save one again.";
        return fail(payment, PROCESSING_ERROR, message, true, now).await;
    };
    let amount_minor = match stripe_client::money::to_minor(payment.amount_micros, currency) {
        Ok(minor) => minor,
        Err(error) => {
            // A configuration Stripe cannot charge: retrying cannot help, so it turns off.
            eprintln!(
                "auto-recharge: payment {} not chargeable: {error}",
                payment.id
            );
            let message = stripe_client::failure_message(PROCESSING_ERROR, None);
            return fail(payment, PROCESSING_ERROR, &message, true, now).await;
        }
    };
    let new = NewPaymentIntent {
        amount_minor,
        currency: currency.to_owned(),
        customer,
        payment_method: Some(method),
        confirm: true,
        off_session: true,
        payment_id: payment.id.clone(),
        workspace_id: payment.workspace_id.clone(),
    };
    match client.create_payment_intent(&new, &payment.id).await {
        Ok(intent) => {
            if !attach(payment, &intent.id, now).await? {
                return Ok(Outcome::Pending);
            }
            settle_from_intent(payment, &intent, now).await
        }
        Err(error @ StripeError::Card(_)) => card_failure(client, payment, &error, now).await,
        Err(error) if leaves_pending(&error) => {
            eprintln!(
                "auto-recharge: payment {} left pending after a Stripe failure: {error}",
                payment.id
            );
            Ok(Outcome::Unreachable)
        }
        Err(error) => {
            // Stripe refused the request itself (e.g. the card is gone): retrying the same
            // request cannot succeed, so it fails hard (auto-recharge off, with a warning).
            eprintln!(
                "auto-recharge: payment {} refused by Stripe: {error}",
                payment.id
            );
            let message = stripe_client::failure_message(PROCESSING_ERROR, None);
            fail(payment, PROCESSING_ERROR, &message, true, now).await
        }
    }
}

/// A card error from the confirmed charge: the PaymentIntent is recorded (Stripe names it;
/// localstripe names only the charge, so it is found through the charge) and the payment is
/// settled failed with the product code, the advice and the hard/soft classification.
async fn card_failure(
    client: &Client,
    payment: &Payment,
    error: &StripeError,
    now: i64,
) -> Result<Outcome, ApiError> {
    let Some(card) = error.card() else {
        return Ok(Outcome::Unreachable);
    };
    let intent_id = client.payment_intent_of(card).await;
    if let Some(intent) = intent_id.as_deref()
        && !attach(payment, intent, now).await?
    {
        return Ok(Outcome::Pending);
    }
    let code = error.product_code();
    let message = stripe_client::failure_message(code, Some(&card.message));
    fail(payment, code, &message, error.is_hard_decline(), now).await
}

/// Settles a payment from its PaymentIntent as the webhook would. A recharge is off-session:
/// anything that needs the customer (authentication) fails hard, and anything that is neither
/// done nor in progress fails. A manual top-up waiting for the customer (Stripe.js, 3-D Secure)
/// stays pending.
async fn settle_from_intent(
    payment: &Payment,
    intent: &PaymentIntent,
    now: i64,
) -> Result<Outcome, ApiError> {
    let recharge = payment.kind == "auto_recharge";
    match intent.status.as_str() {
        "succeeded" => succeed(payment, now).await,
        "processing" | "requires_capture" => Ok(Outcome::Pending),
        "requires_action" | "requires_confirmation" if recharge => {
            let code = "authentication_required";
            let message = stripe_client::failure_message(code, None);
            fail(payment, code, &message, true, now).await
        }
        "requires_payment_method" | "canceled" if intent.last_payment_error.is_some() => {
            let error = intent.last_payment_error.as_ref();
            let stripe_code = error.and_then(|e| e.code.as_deref());
            let decline = error.and_then(|e| e.decline_code.as_deref());
            let code = stripe_client::product_code(stripe_code);
            let message =
                stripe_client::failure_message(code, error.and_then(|e| e.message.as_deref()));
            let hard = stripe_client::is_hard_decline(stripe_code, decline);
            fail(payment, code, &message, hard, now).await
        }
        "canceled" => {
            let message = stripe_client::failure_message(
                PROCESSING_ERROR,
                Some("The PaymentIntent was canceled."),
            );
            fail(payment, PROCESSING_ERROR, &message, false, now).await
        }
        _ if recharge => {
            let message = stripe_client::failure_message(PROCESSING_ERROR, None);
            fail(payment, PROCESSING_ERROR, &message, false, now).await
        }
        _ => Ok(Outcome::Pending),
    }
}

/// Stripe keeps idempotency keys for 24 hours; we retry with the same key only well inside that.
const IDEMPOTENCY_RETRY_WINDOW_SECS: i64 = 23 * 3600;

/// Whether `payment` is too old to retry safely with its idempotency key.
fn beyond_idempotency_window(payment: &Payment, now: i64) -> bool {
    ledger::calendar::parse_rfc3339("created_at", &payment.created_at).map_or(true, |created| {
        now - created >= IDEMPOTENCY_RETRY_WINDOW_SECS
    })
}

/// Reconciles one payment pending for too long (R21): with a PaymentIntent, reads it and
/// settles it as the webhook would (still pending: it goes to the back of the queue); without
/// one, the customer's PaymentIntents are searched for it (a charge whose answer was lost) and
/// settled from the one found; if none, a recharge is charged again with the same idempotency
/// key (within 23 h of its creation) and anything else, never started at Stripe, is settled
/// failed (a late webhook can still credit it).
pub async fn reconcile_payment(
    client: &Client,
    payment: &Payment,
    currency: &str,
    now: i64,
) -> Result<Outcome, ApiError> {
    let Some(intent_id) = payment.payment_intent_id.as_deref() else {
        // The charge may have happened with its answer lost: look for it before anything else.
        let ws =
            run_ledger(async |db| ledger::workspace::get(db, &payment.workspace_id).await).await?;
        // Clocks differ: look a minute before the payment was created.
        let since = ledger::calendar::parse_rfc3339("created_at", &payment.created_at)
            .map_or(0, |created| created - 60);
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
                return settle_from_intent(payment, &intent, now).await;
            }
            Ok(None) => {}
            Err(error) => {
                eprintln!(
                    "auto-recharge: PaymentIntents of payment {} unreadable: {error}",
                    payment.id
                );
                return Ok(Outcome::Unreachable);
            }
        }
        if payment.kind == "auto_recharge" && !beyond_idempotency_window(payment, now) {
            return charge_recharge(client, payment, currency, now).await;
        }
        // Never retried past Stripe's idempotency window: a retry then could charge twice. If
        // the first attempt did reach Stripe, its webhook still credits the payment (the ledger
        // lets a failed payment succeed later).
        return fail(payment, PROCESSING_ERROR, NOT_STARTED, false, now).await;
    };
    match client.retrieve_payment_intent(intent_id).await {
        Ok(intent) => {
            let outcome = settle_from_intent(payment, &intent, now).await?;
            if outcome == Outcome::Pending {
                attach(payment, intent_id, now).await?;
            }
            Ok(outcome)
        }
        Err(error) if leaves_pending(&error) => {
            eprintln!(
                "auto-recharge: PaymentIntent {intent_id} of payment {} unreadable: {error}",
                payment.id
            );
            Ok(Outcome::Unreachable)
        }
        Err(error) => {
            eprintln!(
                "auto-recharge: PaymentIntent {intent_id} of payment {} refused: {error}; left pending",
                payment.id
            );
            attach(payment, intent_id, now).await?;
            Ok(Outcome::Pending)
        }
    }
}
