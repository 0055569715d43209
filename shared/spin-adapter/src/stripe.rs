//! Stripe for the components: the one client constructor (from the Spin variables), Stripe's
//! answers translated into the domain's inputs (`ledger::settlement`, `ledger::statuses`), and
//! Stripe's failures answered in the HTTP contract. The decisions themselves are the ledger's.

use ledger::payments::{PaidWith, Payment, PaymentMethod};
use ledger::settlement::{CardReport, IntentReport, RequestFailure};
use ledger::statuses::{IntentStatus, PaymentStatus};
use stripe_client::{Card, CardError, Client, PaymentError, PaymentIntent, StripeError};

use crate::config::variable;
use crate::db::run_ledger;
use crate::error::ApiError;

/// The customer-facing sentence of a Stripe failure that is not temporary (502).
pub const ADVICE_REFUSED: &str =
    "The payment could not be processed. Try again later or contact our support team.";

/// The Stripe client for `stripe_api_base` with `stripe_secret_key`, or `None` when the key is
/// empty (Stripe not configured: payments answer 503, the jobs do nothing).
pub async fn stripe_client() -> Result<Option<Client>, ApiError> {
    let key = variable("stripe_secret_key").await?;
    if key.trim().is_empty() {
        return Ok(None);
    }
    let base = variable("stripe_api_base").await?;
    Ok(Some(Client::new(base.trim(), key.trim())))
}

/// A card error (a declined charge's answer) as settlement reads it.
pub fn card_error_report(card: &CardError) -> CardReport<'_> {
    CardReport {
        code: Some(card.code.as_str()),
        decline_code: card.decline_code.as_deref(),
        message: Some(card.message.as_str()),
    }
}

/// A PaymentIntent's `last_payment_error` as settlement reads it.
pub fn payment_error_report(error: &PaymentError) -> CardReport<'_> {
    CardReport {
        code: error.code.as_deref(),
        decline_code: error.decline_code.as_deref(),
        message: error.message.as_deref(),
    }
}

/// A PaymentIntent as settlement reads it (its status parsed here, once).
pub fn intent_report(intent: &PaymentIntent) -> IntentReport<'_> {
    IntentReport {
        status: IntentStatus::parse(&intent.status),
        has_payment_method: intent.payment_method.is_some(),
        last_error: intent.last_payment_error.as_ref().map(payment_error_report),
    }
}

/// A card read from Stripe, as the ledger keeps it.
pub fn payment_method(card: Card) -> PaymentMethod {
    PaymentMethod {
        id: card.id,
        brand: card.brand,
        last4: card.last4,
        exp_month: i64::from(card.exp_month),
        exp_year: i64::from(card.exp_year),
    }
}

/// What a succeeded PaymentIntent was paid with, for the ledger's settlement: `charged` when its
/// `payment_method` is the saved card the caller charged, else the card read from Stripe, and
/// whether the payment saves it (`setup_future_usage`). A card the payment saves must be read,
/// so its failure is returned (settle later, when it can be read); any other unreadable card
/// only leaves the receipt without one.
pub async fn paid_with(
    client: &Client,
    intent: &PaymentIntent,
    charged: Option<&PaymentMethod>,
) -> Result<PaidWith, StripeError> {
    card_paid_with(
        client,
        intent.payment_method.as_deref(),
        intent.saves_card(),
        charged,
    )
    .await
}

/// [`paid_with`] from a PaymentIntent's `payment_method` and whether it saves it.
pub async fn card_paid_with(
    client: &Client,
    payment_method_id: Option<&str>,
    saves_card: bool,
    charged: Option<&PaymentMethod>,
) -> Result<PaidWith, StripeError> {
    let Some(id) = payment_method_id else {
        return Ok(PaidWith::default());
    };
    if let Some(card) = charged.filter(|card| card.id == id && !saves_card) {
        return Ok(PaidWith::card(card.clone()));
    }
    match client.retrieve_card(id).await {
        Ok(card) => Ok(PaidWith {
            card: Some(payment_method(card)),
            saves_card,
        }),
        Err(error) if saves_card => Err(error),
        Err(error) => {
            crate::log!("stripe: card {id} unreadable: {error}");
            Ok(PaidWith::default())
        }
    }
}

/// After a payment that saved its card succeeded: that card also becomes the customer's default
/// at Stripe (what subscription invoices charge and `payment-method/refresh` reads), as long as
/// it is still the workspace's card. The ledger already holds it, so a failure is only logged.
pub async fn make_saved_card_default(client: &Client, payment: &Payment, paid: &PaidWith) {
    let (true, PaymentStatus::Succeeded, Some(card)) =
        (paid.saves_card, payment.status, paid.card.as_ref())
    else {
        return;
    };
    let ws = match run_ledger(async |db| ledger::workspace::get(db, &payment.workspace_id).await)
        .await
    {
        Ok(ws) => ws,
        Err(error) => {
            crate::log!(
                "stripe: card {} not made default: {}",
                card.id,
                error.message
            );
            return;
        }
    };
    let (Some(customer), Some(saved)) = (ws.stripe_customer_id, ws.payment_method_id) else {
        return;
    };
    if saved != card.id {
        return;
    }
    let key = format!("default-card-{}", card.id);
    if let Err(error) = client
        .set_default_payment_method(&customer, &card.id, &key)
        .await
    {
        crate::log!("stripe: card {} not made default: {error}", card.id);
    }
}

/// How a Stripe request failed, as settlement reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeFailure<'a> {
    /// The card refused (its report: [`card_error_report`]).
    Card(&'a CardError),
    /// Not the card: no usable answer, or the request refused.
    Request(RequestFailure),
}

/// Classifies a failed Stripe request. Unanswered (the charge may have happened, or the failure
/// is ours or Stripe's, not the customer's): network, timeout, 5xx, rate limit, a concurrent
/// request holding the idempotency key (409), our key refused (401), an answer not understood.
/// Refused: any other 4xx, and a request we would not send.
pub fn classify(error: &StripeError) -> StripeFailure<'_> {
    match error {
        StripeError::Card(card) => StripeFailure::Card(card),
        StripeError::InvalidRequest { status: 409, .. }
        | StripeError::RateLimited { .. }
        | StripeError::Api { .. }
        | StripeError::Network(_)
        | StripeError::Timeout(_)
        | StripeError::Authentication { .. }
        | StripeError::Decode(_) => StripeFailure::Request(RequestFailure::Unanswered),
        StripeError::InvalidRequest { .. } | StripeError::BadInput(_) => {
            StripeFailure::Request(RequestFailure::Refused)
        }
    }
}

/// The HTTP answer to a Stripe failure that is not a card's (`context` names the call in the
/// log, where the details go): 503 `payment_processing_error` with `Retry-After` when the same
/// request may pass later (network, timeout, 5xx, rate limit, a concurrent request with the same
/// idempotency key), else 502.
pub fn stripe_failure(context: &str, error: &StripeError) -> ApiError {
    crate::log!("stripe: {context} failed: {error}");
    let temporary = match error {
        StripeError::InvalidRequest { status, .. } => *status == 409,
        StripeError::Card(_) => false,
        other => other.is_retryable(),
    };
    if temporary {
        ApiError::new(
            503,
            "payment_processing_error",
            ledger::settlement::ADVICE_TEMPORARY,
        )
        .with_header("retry-after", "60".to_owned())
    } else {
        ApiError::new(502, "payment_processing_error", ADVICE_REFUSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn invalid(status: u16) -> StripeError {
        StripeError::InvalidRequest {
            status,
            code: None,
            param: None,
            message: "m".into(),
        }
    }

    #[test]
    fn failures_are_unanswered_refused_or_the_cards() {
        let unanswered = [
            invalid(409),
            StripeError::RateLimited {
                message: "m".into(),
            },
            StripeError::Api {
                status: 500,
                message: "m".into(),
            },
            StripeError::Network("reset".into()),
            StripeError::Timeout(Duration::from_secs(15)),
            StripeError::Authentication {
                message: "m".into(),
            },
            StripeError::Decode("m".into()),
        ];
        for error in &unanswered {
            assert_eq!(
                classify(error),
                StripeFailure::Request(RequestFailure::Unanswered),
                "{error}"
            );
        }
        for error in [
            invalid(400),
            invalid(404),
            StripeError::BadInput("m".into()),
        ] {
            assert_eq!(
                classify(&error),
                StripeFailure::Request(RequestFailure::Refused),
                "{error}"
            );
        }
        let card = StripeError::from_response(
            402,
            br#"{"error": {"code": "card_declined", "decline_code": "insufficient_funds",
                           "message": "Your card has insufficient funds."}}"#,
        );
        let StripeFailure::Card(declined) = classify(&card) else {
            panic!("{card}");
        };
        assert_eq!(
            card_error_report(declined),
            CardReport {
                code: Some("card_declined"),
                decline_code: Some("insufficient_funds"),
                message: Some("Your card has insufficient funds."),
            }
        );
    }

    #[test]
    fn http_answers_to_stripe_failures() {
        for temporary in [
            invalid(409),
            StripeError::Network("reset".into()),
            StripeError::Api {
                status: 503,
                message: "m".into(),
            },
        ] {
            let answer = stripe_failure("test", &temporary);
            assert_eq!(
                (answer.status, answer.code.as_ref()),
                (503, "payment_processing_error")
            );
            assert_eq!(answer.headers, vec![("retry-after", "60".to_owned())]);
        }
        for refused in [
            invalid(400),
            StripeError::Authentication {
                message: "m".into(),
            },
            StripeError::Decode("m".into()),
        ] {
            let answer = stripe_failure("test", &refused);
            assert_eq!(
                (answer.status, answer.message.as_str()),
                (502, ADVICE_REFUSED)
            );
        }
    }

    #[test]
    fn intents_as_settlement_reads_them() {
        let intent = PaymentIntent::from_json(&serde_json::json!({
            "id": "pi_1", "status": "requires_payment_method", "amount": 2000,
            "currency": "usd", "payment_method": "pm_1",
            "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}
        }))
        .expect("intent");
        assert_eq!(
            intent_report(&intent),
            IntentReport {
                status: IntentStatus::RequiresPaymentMethod,
                has_payment_method: true,
                last_error: Some(CardReport {
                    code: Some("card_declined"),
                    decline_code: None,
                    message: Some("Your card was declined."),
                }),
            }
        );
    }
}
