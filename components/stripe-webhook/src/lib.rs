//! `POST /webhooks/stripe`: Stripe's signed events (docs/billing-rules.md, "Stripe").
//!
//! 1. The body is read (capped by [`read_body`]) and its `Stripe-Signature` verified with the
//!    Spin variable `stripe_webhook_secret` BEFORE anything is parsed
//!    (`stripe_client::webhook::verify`); any failure is a 400 `invalid_signature` and nothing
//!    is written.
//! 2. The event is read (`stripe_client::webhook::parse_event`) and mapped to one ledger action
//!    ([`event`]); a body that is not an event is a 400 `malformed_request`.
//! 3. Events already processed are answered 200 at once: their ids are recorded in the key-value
//!    store `default` (`stripe-event:<id>`) after successful handling, so a failed handling is
//!    retried by Stripe. This record only saves work: every ledger operation is itself idempotent
//!    in SQLite (payment settlement, reversal ids, invoice ids), so losing the store (or two
//!    deliveries racing) never moves money twice.
//! 4. The action runs in ONE `run_ledger` section (a saved card's details are read from Stripe
//!    before it, when the event carries only the card's id). A ledger refusal (unknown payment, reversal of
//!    a payment that did not succeed, ...) is answered 200 and logged: Stripe must not retry it
//!    forever. A storage failure is a 503, which Stripe retries.

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]

mod event;

use event::{Action, Event, IntentFailure};
use http::{HeaderMap, Method};
use ledger::payments::{PaidWith, Payment, Reported};
use ledger::resolve::{self, StripeOwner};
use ledger::settlement::{IntentReport, Report};
use ledger::statuses::IntentStatus;
use ledger::{LedgerError, StorageErrorKind, payments, plans, workspace};
use serde_json::json;
use spin_adapter::{
    ApiError, Reply, SpinDb, card_paid_with, make_saved_card_default, method_not_allowed,
    not_found, now_secs, path_segments, payment_error_report, payment_method, read_body,
    run_ledger, stripe_client, variable,
};
use spin_sdk::http::Request;
use spin_sdk::key_value::Store;
use spin_sdk::wasip3::http_compat::IncomingRequestBody;
use stripe_client::Client;
use stripe_client::webhook::{self as signature, SignatureError};

/// The header Stripe signs every delivery with.
const SIGNATURE_HEADER: &str = "stripe-signature";
/// The key-value store label (`key_value_stores = ["default"]`).
const STORE_LABEL: &str = "default";

/// The component's HTTP entry point.
#[spin_sdk::http_service]
async fn handle(request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let outcome = match path_segments(path).as_slice() {
        ["webhooks", "stripe"] if parts.method == Method::POST => {
            receive_event(&parts.headers, body).await
        }
        ["webhooks", "stripe"] => Err(method_not_allowed(&parts.method, &["POST"])),
        _ => Err(not_found(path)),
    };
    outcome.unwrap_or_else(ApiError::into_reply)
}

/// Verifies, deduplicates and applies one Stripe event.
async fn receive_event(headers: &HeaderMap, body: IncomingRequestBody) -> Result<Reply, ApiError> {
    let body = read_body(body).await?;
    let secret = variable("stripe_webhook_secret").await?;
    let header = match headers.get(SIGNATURE_HEADER).map(|value| value.to_str()) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            return Err(invalid_signature(&SignatureError::Malformed(
                "it is not visible ASCII",
            )));
        }
    };
    signature::verify(header, &body, &secret, now_secs()).map_err(|error| {
        spin_adapter::log!("stripe-webhook: refused delivery: {error}");
        invalid_signature(&error)
    })?;
    let event = event::parse(&body).map_err(ApiError::malformed)?;

    let record_key = format!("stripe-event:{}", event.id);
    let store = match Store::open(STORE_LABEL).await {
        Ok(store) => Some(store),
        Err(error) => {
            spin_adapter::log!("stripe-webhook: key-value store unavailable: {error:?}");
            None
        }
    };
    if let Some(store) = &store {
        match store.get(&record_key).await {
            Ok(Some(_)) => return Ok(received(&event, "duplicate", None)),
            Ok(None) => {}
            // Only work is saved by the record: handle the event anyway (the ledger dedupes).
            Err(error) => spin_adapter::log!("stripe-webhook: key-value get failed: {error:?}"),
        }
    }

    let outcome = apply(&event).await.map_err(|error| {
        spin_adapter::log!(
            "stripe-webhook: {} {} not handled, Stripe will retry: {error}",
            event.kind,
            event.id
        );
        ApiError::unavailable()
    })?;
    if let Outcome::Refused(why) | Outcome::Ignored(why) = &outcome {
        spin_adapter::log!("stripe-webhook: {} {}: {why}", event.kind, event.id);
    }

    if let Some(store) = &store
        && let Err(error) = store
            .set(&record_key, now_secs().to_string().into_bytes())
            .await
    {
        spin_adapter::log!("stripe-webhook: event {} not recorded: {error:?}", event.id);
    }
    let (label, detail) = match &outcome {
        Outcome::Applied(what) => ("applied", Some(what)),
        Outcome::Ignored(why) => ("ignored", Some(why)),
        Outcome::Refused(why) => ("refused", Some(why)),
    };
    Ok(received(&event, label, detail))
}

fn invalid_signature(error: &SignatureError) -> ApiError {
    ApiError::new(400, "invalid_signature", error.to_string())
}

/// The 200 answer: Stripe only looks at the status; the body helps whoever reads the log.
fn received(event: &Event, outcome: &str, detail: Option<&String>) -> Reply {
    let mut body =
        json!({"received": true, "event_id": event.id, "type": event.kind, "outcome": outcome});
    if let Some(detail) = detail {
        body["detail"] = detail.as_str().into();
    }
    Reply::json(200, &body)
}

/// What handling an event did.
#[derive(Debug)]
enum Outcome {
    /// The ledger changed (or already had: every operation is idempotent).
    Applied(String),
    /// Nothing to do for us.
    Ignored(String),
    /// The ledger refused; answered 200 so Stripe does not retry forever.
    Refused(String),
}

/// Runs the event's action in one ledger section. `Err` only for failures worth a retry.
async fn apply(event: &Event) -> Result<Outcome, ApiError> {
    if let Action::Ignore(why) = &event.action {
        return Ok(Outcome::Ignored(why.clone()));
    }
    let now = now_secs();
    let client = stripe_client().await?;
    // Stripe first (outside the ledger lock, never an HTTP call while holding it): the cards the
    // action needs. Then one ledger operation. Then Stripe again only for a payment that saved
    // its card: the ledger's answer says whether it was credited with it.
    let action = read_card(&event.action, client.as_ref()).await?;
    let action = action.as_ref().unwrap_or(&event.action);
    let paid = paying_card(action, client.as_ref()).await?;
    let (outcome, settled) = run_ledger(async |db| {
        Ok(match run_action(db, action, &paid, now).await {
            Ok(done) => done,
            Err(error) => (refusal_is_outcome(Err(error))?, None),
        })
    })
    .await?;
    if let (Some(payment), Some(client)) = (&settled, &client) {
        make_saved_card_default(client, payment, &paid).await;
    }
    Ok(outcome)
}

/// The card a succeeded payment was made with, read from Stripe (outside the ledger lock) for
/// its receipt and, when the payment saves it, to make it the workspace's card: a card to save
/// that cannot be read yet is a failure Stripe retries, so the payment is never credited without
/// the card it saves.
async fn paying_card(action: &Action, client: Option<&Client>) -> Result<PaidWith, ApiError> {
    let Action::PaymentSucceeded {
        payment_method_id,
        saves_card,
        ..
    } = action
    else {
        return Ok(PaidWith::default());
    };
    let Some(client) = client else {
        return Ok(PaidWith::default());
    };
    card_paid_with(client, payment_method_id.as_deref(), *saves_card, None)
        .await
        .map_err(|error| {
            spin_adapter::log!("stripe-webhook: the card a payment saves is unreadable: {error}");
            ApiError::unavailable()
        })
}

/// A saved card's details, read from Stripe (outside the ledger lock) when the event does not
/// carry them: the action with the card, or `None` to run the event's own action. Without a
/// Stripe key the card is left to `POST .../payment-method/refresh`.
async fn read_card(action: &Action, client: Option<&Client>) -> Result<Option<Action>, ApiError> {
    let Action::CardSaved {
        customer,
        payment_method_id,
        card: None,
    } = action
    else {
        return Ok(None);
    };
    let Some(client) = client else {
        return Ok(Some(Action::Ignore(
            "no Stripe key: the card is read by POST .../payment-method/refresh".into(),
        )));
    };
    let card = client
        .retrieve_card(payment_method_id)
        .await
        .map_err(|error| {
            spin_adapter::log!("stripe-webhook: card {payment_method_id} unreadable: {error}");
            ApiError::unavailable()
        })?;
    Ok(Some(Action::CardSaved {
        customer: customer.clone(),
        payment_method_id: payment_method_id.clone(),
        card: Some(card),
    }))
}

/// A ledger refusal, or a constraint the database will refuse again, is an outcome; a busy or
/// unavailable database stays an error (Stripe retries).
fn refusal_is_outcome(result: ledger::Result<Outcome>) -> ledger::Result<Outcome> {
    match result {
        Err(LedgerError::Storage(error)) if error.kind != StorageErrorKind::Constraint => {
            Err(LedgerError::Storage(error))
        }
        Err(LedgerError::Storage(error)) => Ok(Outcome::Refused(format!(
            "refused by the database: {error}"
        ))),
        Err(error) => Ok(Outcome::Refused(format!("{}: {error}", error.code()))),
        ok => ok,
    }
}

/// Runs an event's action; with the payment a success settled, for its card to be made the
/// customer's default at Stripe afterwards.
async fn run_action(
    db: &SpinDb,
    action: &Action,
    paid: &PaidWith,
    now: i64,
) -> ledger::Result<(Outcome, Option<Payment>)> {
    let (intent_id, payment_id, report) = match action {
        Action::PaymentSucceeded {
            intent_id,
            payment_id,
            ..
        } => (intent_id, payment_id, Report::Succeeded),
        Action::PaymentFailed {
            intent_id,
            payment_id,
            failure: IntentFailure::Declined(error),
        } => (
            intent_id,
            payment_id,
            // The PaymentIntent is not read back: its status in the event is the failure's.
            Report::CardError {
                report: payment_error_report(error),
                intent: None,
            },
        ),
        Action::PaymentFailed {
            intent_id,
            payment_id,
            failure: IntentFailure::Canceled(error),
        } => (
            intent_id,
            payment_id,
            Report::Intent(IntentReport {
                status: IntentStatus::Canceled,
                has_payment_method: false,
                last_error: error.as_ref().map(payment_error_report),
            }),
        ),
        other => return Ok((run_other_action(db, other, now).await?, None)),
    };
    let reported = Reported::Intent {
        intent_id,
        metadata_payment_id: payment_id.as_deref(),
    };
    let Some(settled) = payments::settle(db, reported, &report, paid, now).await? else {
        return Ok((unknown_payment(intent_id), None));
    };
    let payment = settled.payment;
    let outcome = Outcome::Applied(format!("payment {} {}", payment.id, payment.status));
    Ok((outcome, Some(payment)))
}

/// Runs an event's action other than a payment's settlement.
async fn run_other_action(db: &SpinDb, action: &Action, now: i64) -> ledger::Result<Outcome> {
    match action {
        Action::PaymentSucceeded { .. } | Action::PaymentFailed { .. } => Ok(Outcome::Ignored(
            "a payment's settlement is run by run_action".into(),
        )),
        Action::Reverse {
            intent_id,
            reversals,
        } => {
            let Some(payment) = payments::find_by_intent(db, intent_id).await? else {
                return Ok(unknown_payment(intent_id));
            };
            let mut done = Vec::new();
            for reversal in reversals {
                let credits = payments::reverse(
                    db,
                    &payment.id,
                    &reversal.id,
                    reversal.kind,
                    reversal.amount_money_micros,
                    now,
                )
                .await?;
                done.push(format!(
                    "{} {} reversed {credits} micro-credits",
                    reversal.kind, reversal.id
                ));
            }
            Ok(Outcome::Applied(done.join("; ")))
        }
        Action::InvoicePaid {
            invoice_id,
            owner,
            period_start,
        } => {
            let Some(ws) = resolve::workspace_of(db, owner).await? else {
                return Ok(unknown_owner(owner));
            };
            let granted =
                plans::record_invoice_paid(db, &ws, invoice_id, *period_start, now).await?;
            Ok(Outcome::Applied(format!(
                "invoice {invoice_id} paid for {ws}, {granted} credits granted"
            )))
        }
        Action::InvoiceFailed { owner } => {
            let Some(ws) = resolve::workspace_of(db, owner).await? else {
                return Ok(unknown_owner(owner));
            };
            plans::record_invoice_failed(db, &ws).await?;
            Ok(Outcome::Applied(format!("{ws} is past due")))
        }
        Action::SubscriptionStatus { owner, status } => {
            let Some(ws) = resolve::workspace_of(db, owner).await? else {
                return Ok(unknown_owner(owner));
            };
            plans::mirror_subscription_status(db, &ws, *status).await?;
            Ok(Outcome::Applied(format!("{ws} subscription {status}")))
        }
        Action::SubscriptionEnded { owner } => {
            let Some(ws) = resolve::workspace_of(db, owner).await? else {
                return Ok(unknown_owner(owner));
            };
            plans::end_subscription(db, &ws, now).await?;
            Ok(Outcome::Applied(format!("{ws} subscription ended")))
        }
        Action::CardSaved {
            customer,
            payment_method_id,
            card,
        } => {
            let Some(card) = card else {
                return Ok(Outcome::Ignored(format!(
                    "card {payment_method_id} not read"
                )));
            };
            let Some(ws) = workspace::find_by_stripe_customer(db, customer).await? else {
                return Ok(Outcome::Ignored(format!(
                    "no workspace for customer {customer}"
                )));
            };
            let method = payment_method(card.clone());
            payments::set_payment_method(db, &ws, &method).await?;
            Ok(Outcome::Applied(format!(
                "{ws} saved card {} ending {}",
                card.id, card.last4
            )))
        }
        Action::PaymentMethodDetached { payment_method_id } => {
            if payments::remove_payment_method(db, payment_method_id).await? {
                Ok(Outcome::Applied(format!(
                    "payment method {payment_method_id} removed"
                )))
            } else {
                Ok(Outcome::Ignored(format!(
                    "payment method {payment_method_id} is not a saved card"
                )))
            }
        }
        Action::Ignore(why) => Ok(Outcome::Ignored(why.clone())),
    }
}

fn unknown_payment(intent_id: &str) -> Outcome {
    Outcome::Ignored(format!("no payment of ours for PaymentIntent {intent_id}"))
}

fn unknown_owner(owner: &StripeOwner) -> Outcome {
    Outcome::Ignored(format!(
        "no workspace for customer {:?} / subscription {:?}",
        owner.customer, owner.subscription
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::StorageError;

    fn storage(kind: StorageErrorKind) -> LedgerError {
        LedgerError::Storage(StorageError {
            kind,
            message: "x".into(),
        })
    }

    #[test]
    fn refusals_are_answered_and_storage_failures_retried() {
        let refused = refusal_is_outcome(Err(LedgerError::Conflict {
            code: "payment_not_succeeded",
            message: "Only a succeeded payment can be reversed.".into(),
        }));
        assert!(
            matches!(&refused, Ok(Outcome::Refused(why)) if why.starts_with("payment_not_succeeded")),
            "{refused:?}"
        );
        let missing = refusal_is_outcome(Err(LedgerError::NotFound { what: "workspace" }));
        assert!(matches!(missing, Ok(Outcome::Refused(_))));
        let constraint = refusal_is_outcome(Err(storage(StorageErrorKind::Constraint)));
        assert!(matches!(constraint, Ok(Outcome::Refused(_))));
        for kind in [
            StorageErrorKind::Busy,
            StorageErrorKind::Unavailable,
            StorageErrorKind::Unreachable,
            StorageErrorKind::Disk,
        ] {
            assert!(refusal_is_outcome(Err(storage(kind))).is_err(), "{kind:?}");
        }
    }
}
