//! A verified Stripe event read into the one ledger action it calls for (pure: no I/O).
//!
//! Events are read as JSON values rather than typed structs: Stripe objects are large, vary by
//! API version, and only a few fields matter here. A known event type whose object lacks a field
//! we need is malformed (400); an unknown type is ignored (200).

use ledger::resolve::StripeOwner;
use ledger::settlement::{CardReport, Failure};
use ledger::statuses::SubscriptionStatus;
use serde_json::Value;

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
    /// Amount taken back, in currency micros.
    pub amount_micros: i64,
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
    /// `payment_intent.payment_failed`, or `payment_intent.canceled` (final: it can never
    /// succeed, so it settles failed as the reconciliation would).
    PaymentFailed {
        /// The PaymentIntent.
        intent_id: String,
        /// Our payment id from the PaymentIntent's metadata.
        payment_id: Option<String>,
        /// Why, as the ledger classifies it (R9, R11).
        failure: Failure,
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
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| format!("The event is not valid JSON: {error}."))?;
    let id = str_at(&value, &["id"]).ok_or("The event has no id.")?;
    let kind = str_at(&value, &["type"]).ok_or("The event has no type.")?;
    let object = value
        .pointer("/data/object")
        .filter(|o| o.is_object())
        .ok_or("The event has no data.object.")?;
    let action = action(&kind, object)?;
    Ok(Event { id, kind, action })
}

fn action(kind: &str, object: &Value) -> Result<Action, String> {
    let object_id = || required(object, &["id"], kind);
    Ok(match kind {
        "payment_intent.succeeded" => Action::PaymentSucceeded {
            intent_id: object_id()?,
            payment_id: str_at(object, &["metadata", "payment_id"]),
            payment_method_id: id_at(object, "payment_method"),
            saves_card: str_at(object, &["setup_future_usage"]).is_some(),
        },
        "payment_intent.payment_failed" => Action::PaymentFailed {
            intent_id: object_id()?,
            payment_id: str_at(object, &["metadata", "payment_id"]),
            failure: Failure::of_card(card_report(object.get("last_payment_error"))),
        },
        "payment_intent.canceled" => {
            let last_error = object.get("last_payment_error").filter(|e| e.is_object());
            Action::PaymentFailed {
                intent_id: object_id()?,
                payment_id: str_at(object, &["metadata", "payment_id"]),
                failure: Failure::of_canceled_intent(last_error.map(|e| card_report(Some(e)))),
            }
        }
        "charge.refunded" => {
            let Some(intent_id) = id_at(object, "payment_intent") else {
                return Ok(Action::Ignore("the charge has no PaymentIntent".into()));
            };
            let refunds = object
                .pointer("/refunds/data")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let charge_currency = str_at(object, &["currency"]);
            let mut reversals = Vec::new();
            for refund in refunds {
                if let Some(reversal) = refund_reversal(refund, charge_currency.as_deref(), kind)? {
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
        "refund.created" | "refund.updated" => {
            let Some(intent_id) = id_at(object, "payment_intent") else {
                return Ok(Action::Ignore("the refund has no PaymentIntent".into()));
            };
            match refund_reversal(object, None, kind)? {
                Some(reversal) => Action::Reverse {
                    intent_id,
                    reversals: vec![reversal],
                },
                None => Action::Ignore("the refund did not go through".into()),
            }
        }
        "charge.dispute.created" => {
            let Some(intent_id) = id_at(object, "payment_intent") else {
                return Ok(Action::Ignore("the dispute has no PaymentIntent".into()));
            };
            let amount_micros = amount_micros(object, None, kind)?;
            Action::Reverse {
                intent_id,
                reversals: vec![Reversal {
                    id: object_id()?,
                    kind: "dispute",
                    amount_micros,
                }],
            }
        }
        "invoice.paid" | "invoice.payment_succeeded" => {
            let owner = invoice_owner(object);
            if !is_subscription_invoice(object, &owner) {
                return Ok(Action::Ignore("not a subscription invoice".into()));
            }
            let period_start = object
                .pointer("/lines/data/0/period/start")
                .and_then(Value::as_i64)
                .or_else(|| object.get("period_start").and_then(Value::as_i64))
                .ok_or_else(|| format!("The {kind} invoice has no period start."))?;
            Action::InvoicePaid {
                invoice_id: object_id()?,
                owner,
                period_start,
            }
        }
        "invoice.payment_failed" => {
            let owner = invoice_owner(object);
            if !is_subscription_invoice(object, &owner) {
                return Ok(Action::Ignore("not a subscription invoice".into()));
            }
            Action::InvoiceFailed { owner }
        }
        "customer.subscription.updated" => Action::SubscriptionStatus {
            owner: StripeOwner {
                customer: id_at(object, "customer"),
                subscription: Some(object_id()?),
            },
            status: SubscriptionStatus::parse(&required(object, &["status"], kind)?),
        },
        "customer.subscription.deleted" => Action::SubscriptionEnded {
            owner: StripeOwner {
                customer: id_at(object, "customer"),
                subscription: Some(object_id()?),
            },
        },
        "payment_method.detached" => Action::PaymentMethodDetached {
            payment_method_id: object_id()?,
        },
        "setup_intent.succeeded" => {
            let Some(payment_method_id) = id_at(object, "payment_method") else {
                return Ok(Action::Ignore(
                    "the SetupIntent saved no payment method".into(),
                ));
            };
            let Some(customer) = id_at(object, "customer") else {
                return Ok(Action::Ignore("the SetupIntent has no customer".into()));
            };
            // Expanded (`payment_method` as an object), the card is in the event already.
            let card = object
                .get("payment_method")
                .filter(|pm| pm.is_object())
                .and_then(|pm| stripe_client::Card::from_json(pm).ok());
            Action::CardSaved {
                customer,
                payment_method_id,
                card,
            }
        }
        other => Action::Ignore(format!("event type {other} is not handled")),
    })
}

/// A refund to reverse, or `None` when it failed or was canceled.
fn refund_reversal(
    refund: &Value,
    fallback_currency: Option<&str>,
    kind: &str,
) -> Result<Option<Reversal>, String> {
    if matches!(
        str_at(refund, &["status"]).as_deref(),
        Some("failed" | "canceled")
    ) {
        return Ok(None);
    }
    Ok(Some(Reversal {
        id: required(refund, &["id"], kind)?,
        kind: "refund",
        amount_micros: amount_micros(refund, fallback_currency, kind)?,
    }))
}

/// `amount` (minor units of `currency`) in currency micros.
fn amount_micros(
    object: &Value,
    fallback_currency: Option<&str>,
    kind: &str,
) -> Result<i64, String> {
    let amount = object
        .get("amount")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("The {kind} object has no integer amount."))?;
    let currency = str_at(object, &["currency"])
        .or_else(|| fallback_currency.map(str::to_owned))
        .ok_or_else(|| format!("The {kind} object has no currency."))?;
    minor_to_micros(amount, &currency)
        .ok_or_else(|| format!("The {kind} amount {amount} {currency} is out of range."))
}

/// Stripe's minor units to micros (`stripe_client::money`); negative amounts and overflow are
/// refused.
pub fn minor_to_micros(amount: i64, currency: &str) -> Option<i64> {
    if amount < 0 {
        return None;
    }
    stripe_client::money::from_minor(amount, currency).ok()
}

/// A `last_payment_error` (absent: a failure without a code) as the ledger classifies it.
fn card_report(error: Option<&Value>) -> CardReport<'_> {
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    CardReport {
        code: field("code"),
        decline_code: field("decline_code"),
        message: field("message"),
    }
}

/// The customer and subscription of an invoice (the subscription moved under
/// `parent.subscription_details` in API version 2025-03-31).
fn invoice_owner(invoice: &Value) -> StripeOwner {
    let subscription = id_at(invoice, "subscription")
        .or_else(|| {
            invoice
                .pointer("/parent/subscription_details")
                .and_then(|details| id_at(details, "subscription"))
        })
        .or_else(|| {
            invoice
                .pointer("/lines/data/0")
                .and_then(|line| id_at(line, "subscription"))
        });
    StripeOwner {
        customer: id_at(invoice, "customer"),
        subscription,
    }
}

/// Only subscription invoices pay for plan cycles: a one-off invoice must never grant credits.
fn is_subscription_invoice(invoice: &Value, owner: &StripeOwner) -> bool {
    owner.subscription.is_some()
        || str_at(invoice, &["billing_reason"]).is_some_and(|r| r.starts_with("subscription"))
}

/// A string at a path of keys.
fn str_at(value: &Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A field holding an id, or an expanded object with an id.
fn id_at(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        object @ Value::Object(_) => str_at(object, &["id"]),
        _ => None,
    }
}

fn required(value: &Value, path: &[&str], kind: &str) -> Result<String, String> {
    str_at(value, path).ok_or_else(|| format!("The {kind} object has no {}.", path.join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let Action::PaymentFailed {
            failure,
            payment_id,
            ..
        } = failed.action
        else {
            panic!("not a failure: {failed:?}");
        };
        assert_eq!(
            (failure.code.as_str(), failure.hard_decline, payment_id),
            ("card_declined", true, None)
        );
        assert!(
            failure.message.contains("Your card was declined."),
            "{}",
            failure.message
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
                failure: Failure::of_canceled_intent(None),
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
            (failure.code.as_str(), failure.hard_decline),
            ("expired_card", true)
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
    fn amounts() {
        assert_eq!(minor_to_micros(1099, "usd"), Some(10_990_000));
        assert_eq!(minor_to_micros(1099, "EUR"), Some(10_990_000));
        assert_eq!(minor_to_micros(500, "jpy"), Some(500_000_000));
        assert_eq!(minor_to_micros(1500, "kwd"), Some(1_500_000));
        assert_eq!(minor_to_micros(-1, "usd"), None);
        assert_eq!(minor_to_micros(i64::MAX, "usd"), None);
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
                        amount_micros: 3_000_000
                    },
                    Reversal {
                        id: "re_3".into(),
                        kind: "refund",
                        amount_micros: 2_000_000
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
                    amount_micros: 10_000_000
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
