//! A verified Stripe event (read by `stripe_client::webhook`, Stripe's wire format) mapped to
//! the one ledger action it calls for (pure: no I/O). What the event means is the ledger's
//! decision: which refunds take credits back (`settlement::refund_takes_credits_back`), which
//! invoices pay for plan cycles (`resolve::invoice_pays_plan_cycle`), what a failed or canceled
//! PaymentIntent does to its payment (`payments::settle`).
//!
//! A known event type whose object lacks a field we need is malformed (400); an unknown type is
//! ignored (200).

use ledger::resolve::{self, StripeOwner};
use ledger::settlement::refund_takes_credits_back;
use ledger::statuses::SubscriptionStatus;
use stripe_client::PaymentError;
use stripe_client::webhook::{self, Object, RefundObject};

/// The envelope of a Stripe event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_...`: the deduplication key.
    pub id: String,
    /// e.g. `payment_intent.succeeded`.
    pub kind: String,
    /// What to do about it.
    pub action: Action,
}

/// One refund or dispute to reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reversal {
    /// Stripe's refund or dispute id (the ledger's idempotency key).
    pub id: String,
    /// `refund` or `dispute`.
    pub kind: &'static str,
    /// Money taken back, in micro-units of the currency.
    pub amount_money_micros: i64,
}

/// How Stripe reports a PaymentIntent that did not pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentFailure {
    /// `payment_intent.payment_failed`: the attempt's `last_payment_error` (empty when absent).
    Declined(PaymentError),
    /// `payment_intent.canceled`: final, it can never succeed; with its last attempt's error.
    Canceled(Option<PaymentError>),
}

/// The ledger action an event maps to.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `payment_intent.succeeded`: credit the payment once.
    PaymentSucceeded {
        /// The PaymentIntent.
        intent_id: String,
        /// Our payment id from the PaymentIntent's metadata.
        payment_id: Option<String>,
        /// The card that paid.
        payment_method_id: Option<String>,
        /// Whether the payment saves its card (`setup_future_usage`): then it becomes the
        /// workspace's card with this success.
        saves_card: bool,
    },
    /// `payment_intent.payment_failed`, or `payment_intent.canceled`: the ledger settles the
    /// payment as it classifies the failure (R9, R11), as the reconciliation would.
    PaymentFailed {
        /// The PaymentIntent.
        intent_id: String,
        /// Our payment id from the PaymentIntent's metadata.
        payment_id: Option<String>,
        /// What Stripe reported.
        failure: IntentFailure,
    },
    /// `charge.refunded`, `refund.created`/`updated`, `charge.dispute.created`.
    Reverse {
        /// The PaymentIntent paid by the charge.
        intent_id: String,
        /// What to reverse, each idempotent by its id.
        reversals: Vec<Reversal>,
    },
    /// `invoice.paid` / `invoice.payment_succeeded`.
    InvoicePaid {
        /// `in_...`.
        invoice_id: String,
        /// Where to find the workspace.
        owner: StripeOwner,
        /// The period the invoice pays for (Unix seconds).
        period_start: i64,
    },
    /// `invoice.payment_failed`.
    InvoiceFailed {
        /// Where to find the workspace.
        owner: StripeOwner,
    },
    /// `customer.subscription.updated`.
    SubscriptionStatus {
        /// Where to find the workspace.
        owner: StripeOwner,
        /// Stripe's subscription status.
        status: SubscriptionStatus,
    },
    /// `customer.subscription.deleted`.
    SubscriptionEnded {
        /// Where to find the workspace.
        owner: StripeOwner,
    },
    /// `setup_intent.succeeded`: the customer saved a card, which becomes the workspace's.
    CardSaved {
        /// `cus_...`.
        customer: String,
        /// `pm_...`.
        payment_method_id: String,
        /// The card, when the event carries it expanded (else it is read from Stripe).
        card: Option<stripe_client::Card>,
    },
    /// `payment_method.detached`.
    PaymentMethodDetached {
        /// `pm_...`.
        payment_method_id: String,
    },
    /// Nothing to do (with why, for the log).
    Ignore(String),
}

/// Reads a verified event body. `Err` is the message of a 400 `malformed_request`.
pub fn parse(body: &[u8]) -> Result<Event, String> {
    let event = webhook::parse_event(body)?;
    let action = action(&event.kind, event.object)?;
    Ok(Event {
        id: event.id,
        kind: event.kind,
        action,
    })
}

fn action(kind: &str, object: Object) -> Result<Action, String> {
    Ok(match (kind, object) {
        ("payment_intent.succeeded", Object::PaymentIntent(intent)) => Action::PaymentSucceeded {
            intent_id: intent.id?,
            payment_id: intent.metadata_payment_id,
            payment_method_id: intent.payment_method,
            saves_card: intent.saves_card,
        },
        ("payment_intent.payment_failed", Object::PaymentIntent(intent)) => Action::PaymentFailed {
            intent_id: intent.id?,
            payment_id: intent.metadata_payment_id,
            failure: IntentFailure::Declined(intent.last_payment_error.unwrap_or_default()),
        },
        ("payment_intent.canceled", Object::PaymentIntent(intent)) => Action::PaymentFailed {
            intent_id: intent.id?,
            payment_id: intent.metadata_payment_id,
            failure: IntentFailure::Canceled(intent.last_payment_error),
        },
        (
            "charge.refunded",
            Object::Charge {
                payment_intent,
                refunds,
            },
        ) => {
            let Some(intent_id) = payment_intent else {
                return Ok(Action::Ignore("the charge has no PaymentIntent".into()));
            };
            let mut reversals = Vec::new();
            for refund in refunds {
                if let Some(reversal) = refund_reversal(refund)? {
                    reversals.push(reversal);
                }
            }
            if reversals.is_empty() {
                // Since API version 2022-11-15 a charge no longer embeds its refunds; the
                // `refund.created` event carries each one instead.
                return Ok(Action::Ignore(
                    "the charge lists no refund to reverse".into(),
                ));
            }
            Action::Reverse {
                intent_id,
                reversals,
            }
        }
        ("refund.created" | "refund.updated", Object::Refund(refund)) => {
            let Some(intent_id) = refund.payment_intent.clone() else {
                return Ok(Action::Ignore("the refund has no PaymentIntent".into()));
            };
            match refund_reversal(refund)? {
                Some(reversal) => Action::Reverse {
                    intent_id,
                    reversals: vec![reversal],
                },
                None => Action::Ignore("the refund did not go through".into()),
            }
        }
        ("charge.dispute.created", Object::Dispute(dispute)) => {
            let Some(intent_id) = dispute.payment_intent else {
                return Ok(Action::Ignore("the dispute has no PaymentIntent".into()));
            };
            let amount_money_micros = dispute.amount_money_micros?;
            Action::Reverse {
                intent_id,
                reversals: vec![Reversal {
                    id: dispute.id?,
                    kind: "dispute",
                    amount_money_micros,
                }],
            }
        }
        ("invoice.paid" | "invoice.payment_succeeded", Object::Invoice(invoice)) => {
            let owner = StripeOwner {
                customer: invoice.customer,
                subscription: invoice.subscription,
            };
            if !resolve::invoice_pays_plan_cycle(&owner, invoice.billing_reason.as_deref()) {
                return Ok(Action::Ignore("not a subscription invoice".into()));
            }
            let period_start = invoice.period_start?;
            Action::InvoicePaid {
                invoice_id: invoice.id?,
                owner,
                period_start,
            }
        }
        ("invoice.payment_failed", Object::Invoice(invoice)) => {
            let owner = StripeOwner {
                customer: invoice.customer,
                subscription: invoice.subscription,
            };
            if !resolve::invoice_pays_plan_cycle(&owner, invoice.billing_reason.as_deref()) {
                return Ok(Action::Ignore("not a subscription invoice".into()));
            }
            Action::InvoiceFailed { owner }
        }
        ("customer.subscription.updated", Object::Subscription(subscription)) => {
            Action::SubscriptionStatus {
                owner: StripeOwner {
                    customer: subscription.customer,
                    subscription: Some(subscription.id?),
                },
                status: SubscriptionStatus::parse(&subscription.status?),
            }
        }
        ("customer.subscription.deleted", Object::Subscription(subscription)) => {
            Action::SubscriptionEnded {
                owner: StripeOwner {
                    customer: subscription.customer,
                    subscription: Some(subscription.id?),
                },
            }
        }
        ("payment_method.detached", Object::PaymentMethod { id }) => {
            Action::PaymentMethodDetached {
                payment_method_id: id?,
            }
        }
        ("setup_intent.succeeded", Object::SetupIntent(setup)) => {
            let Some(payment_method_id) = setup.payment_method else {
                return Ok(Action::Ignore(
                    "the SetupIntent saved no payment method".into(),
                ));
            };
            let Some(customer) = setup.customer else {
                return Ok(Action::Ignore("the SetupIntent has no customer".into()));
            };
            Action::CardSaved {
                customer,
                payment_method_id,
                card: setup.card,
            }
        }
        (other, _) => Action::Ignore(format!("event type {other} is not handled")),
    })
}

/// A refund to reverse, or `None` when it takes no credits back (the ledger's decision).
fn refund_reversal(refund: RefundObject) -> Result<Option<Reversal>, String> {
    if !refund_takes_credits_back(refund.status.as_deref()) {
        return Ok(None);
    }
    Ok(Some(Reversal {
        id: refund.id?,
        kind: "refund",
        amount_money_micros: refund.amount_money_micros?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn event(kind: &str, object: Value) -> Vec<u8> {
        json!({"id": "evt_1", "object": "event", "type": kind, "data": {"object": object}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn envelope_errors() {
        assert!(parse(b"{").is_err());
        assert!(parse(b"{}").is_err());
        assert!(parse(br#"{"id": "evt_1", "type": "x"}"#).is_err());
        let unknown = parse(&event("plan.created", json!({"id": "plan_1"}))).expect("valid");
        assert!(matches!(unknown.action, Action::Ignore(_)));
        assert_eq!(
            (unknown.id.as_str(), unknown.kind.as_str()),
            ("evt_1", "plan.created")
        );
    }

    #[test]
    fn payment_intents() {
        let ok = parse(&event(
            "payment_intent.succeeded",
            json!({"id": "pi_1", "metadata": {"payment_id": "tp_1"}}),
        ))
        .expect("valid");
        assert_eq!(
            ok.action,
            Action::PaymentSucceeded {
                intent_id: "pi_1".into(),
                payment_id: Some("tp_1".into()),
                payment_method_id: None,
                saves_card: false,
            }
        );
        let saving = parse(&event(
            "payment_intent.succeeded",
            json!({"id": "pi_2", "metadata": {"payment_id": "tp_2"}, "payment_method": "pm_9",
                   "setup_future_usage": "off_session"}),
        ))
        .expect("valid");
        assert_eq!(
            saving.action,
            Action::PaymentSucceeded {
                intent_id: "pi_2".into(),
                payment_id: Some("tp_2".into()),
                payment_method_id: Some("pm_9".into()),
                saves_card: true,
            }
        );
        let failed = parse(&event(
            "payment_intent.payment_failed",
            json!({"id": "pi_1", "metadata": {}, "last_payment_error":
                {"code": "card_declined", "decline_code": "stolen_card", "message": "Your card was declined."}}),
        ))
        .expect("valid");
        // What the decline means for the payment is the ledger's (tests/stripe_domain.rs).
        assert_eq!(
            failed.action,
            Action::PaymentFailed {
                intent_id: "pi_1".into(),
                payment_id: None,
                failure: IntentFailure::Declined(PaymentError {
                    code: Some("card_declined".into()),
                    decline_code: Some("stolen_card".into()),
                    message: Some("Your card was declined.".into()),
                }),
            }
        );
        assert!(parse(&event("payment_intent.succeeded", json!({"metadata": {}}))).is_err());
    }

    #[test]
    fn canceled_intents_fail() {
        let canceled = parse(&event(
            "payment_intent.canceled",
            json!({"id": "pi_1", "status": "canceled", "metadata": {"payment_id": "tp_1"},
                   "last_payment_error": null}),
        ))
        .expect("valid");
        assert_eq!(
            canceled.action,
            Action::PaymentFailed {
                intent_id: "pi_1".into(),
                payment_id: Some("tp_1".into()),
                failure: IntentFailure::Canceled(None),
            }
        );
        let after_decline = parse(&event(
            "payment_intent.canceled",
            json!({"id": "pi_2", "status": "canceled", "metadata": {},
                   "last_payment_error": {"code": "expired_card", "message": "Your card has expired."}}),
        ))
        .expect("valid");
        let Action::PaymentFailed { failure, .. } = after_decline.action else {
            panic!("{after_decline:?}");
        };
        assert_eq!(
            failure,
            IntentFailure::Canceled(Some(PaymentError {
                code: Some("expired_card".into()),
                decline_code: None,
                message: Some("Your card has expired.".into()),
            }))
        );
    }

    #[test]
    fn subscription_statuses_are_parsed_once() {
        let updated = parse(&event(
            "customer.subscription.updated",
            json!({"id": "sub_1", "customer": "cus_1", "status": "past_due"}),
        ))
        .expect("valid");
        assert_eq!(
            updated.action,
            Action::SubscriptionStatus {
                owner: StripeOwner {
                    customer: Some("cus_1".into()),
                    subscription: Some("sub_1".into()),
                },
                status: SubscriptionStatus::PastDue,
            }
        );
    }

    #[test]
    fn refunds_and_disputes() {
        let refunded = parse(&event(
            "charge.refunded",
            json!({"id": "ch_1", "currency": "usd", "payment_intent": "pi_1", "refunds": {"data": [
                {"id": "re_1", "amount": 300, "currency": "usd", "status": "succeeded"},
                {"id": "re_2", "amount": 100, "status": "failed"},
                {"id": "re_3", "amount": 200}
            ]}}),
        ))
        .expect("valid");
        assert_eq!(
            refunded.action,
            Action::Reverse {
                intent_id: "pi_1".into(),
                reversals: vec![
                    Reversal {
                        id: "re_1".into(),
                        kind: "refund",
                        amount_money_micros: 3_000_000
                    },
                    Reversal {
                        id: "re_3".into(),
                        kind: "refund",
                        amount_money_micros: 2_000_000
                    },
                ]
            }
        );
        let dispute = parse(&event(
            "charge.dispute.created",
            json!({"id": "dp_1", "amount": 1000, "currency": "usd", "payment_intent": {"id": "pi_1"}}),
        ))
        .expect("valid");
        assert_eq!(
            dispute.action,
            Action::Reverse {
                intent_id: "pi_1".into(),
                reversals: vec![Reversal {
                    id: "dp_1".into(),
                    kind: "dispute",
                    amount_money_micros: 10_000_000
                }]
            }
        );
        let orphan = parse(&event(
            "charge.dispute.created",
            json!({"id": "dp_1", "amount": 1000, "currency": "usd", "payment_intent": null}),
        ))
        .expect("valid");
        assert!(matches!(orphan.action, Action::Ignore(_)));
    }

    #[test]
    fn setup_intents() {
        let saved = parse(&event(
            "setup_intent.succeeded",
            json!({"id": "seti_1", "status": "succeeded", "customer": "cus_1",
                   "payment_method": "pm_1"}),
        ))
        .unwrap();
        assert_eq!(
            saved.action,
            Action::CardSaved {
                customer: "cus_1".into(),
                payment_method_id: "pm_1".into(),
                card: None
            }
        );
        let expanded = parse(&event(
            "setup_intent.succeeded",
            json!({"id": "seti_1", "status": "succeeded", "customer": {"id": "cus_1"},
                   "payment_method": {"id": "pm_1", "card": {"brand": "visa", "last4": "4242",
                                      "exp_month": 8, "exp_year": 2030}}}),
        ))
        .unwrap();
        let Action::CardSaved {
            card: Some(card), ..
        } = expanded.action
        else {
            panic!("{:?}", expanded.action);
        };
        assert_eq!((card.last4.as_str(), card.exp_year), ("4242", 2030));
        let anonymous = parse(&event(
            "setup_intent.succeeded",
            json!({"id": "seti_1", "status": "succeeded", "payment_method": "pm_1"}),
        ))
        .unwrap();
        assert!(matches!(anonymous.action, Action::Ignore(_)));
    }

    #[test]
    fn invoices() {
        let paid = parse(&event(
            "invoice.paid",
            json!({"id": "in_1", "customer": "cus_1", "subscription": null, "period_start": 10,
                   "billing_reason": "subscription_cycle",
                   "lines": {"data": [{"period": {"start": 20, "end": 30}}]}}),
        ))
        .expect("valid");
        assert_eq!(
            paid.action,
            Action::InvoicePaid {
                invoice_id: "in_1".into(),
                owner: StripeOwner {
                    customer: Some("cus_1".into()),
                    subscription: None
                },
                period_start: 20
            }
        );
        let newer = parse(&event(
            "invoice.payment_succeeded",
            json!({"id": "in_1", "customer": "cus_1", "period_start": 10,
                   "parent": {"subscription_details": {"subscription": "sub_1"}}, "lines": {"data": []}}),
        ))
        .expect("valid");
        let Action::InvoicePaid {
            owner,
            period_start,
            ..
        } = newer.action
        else {
            panic!("{newer:?}");
        };
        assert_eq!(
            (owner.subscription.as_deref(), period_start),
            (Some("sub_1"), 10)
        );
        let manual = parse(&event(
            "invoice.paid",
            json!({"id": "in_2", "customer": "cus_1", "billing_reason": "manual", "period_start": 10}),
        ))
        .expect("valid");
        assert!(matches!(manual.action, Action::Ignore(_)));
    }
}
