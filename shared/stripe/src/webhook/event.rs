//! A verified Stripe event read into the objects the product looks at (pure: no I/O).
//!
//! Events are read as JSON values rather than whole typed objects: Stripe objects are large,
//! vary by API version, and only a few fields matter. A field the product needs only for some
//! events is a [`Field`]: its value, or the sentence saying it is missing, for the caller to
//! answer 400 with when it needs the field.

use serde_json::Value;

use crate::api::{Card, PaymentError};
use crate::money;

/// A field Stripe should send: its value, or the 400 message saying it is missing.
pub type Field<T> = Result<T, String>;

/// The envelope of a Stripe event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_...`: the deduplication key.
    pub id: String,
    /// e.g. `payment_intent.succeeded`.
    pub kind: String,
    /// `data.object`, read by the event type's prefix.
    pub object: Object,
}

/// An event's `data.object`.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// `payment_intent.*`.
    PaymentIntent(PaymentIntentObject),
    /// `charge.*` other than disputes: the PaymentIntent it paid and the refunds it lists.
    Charge {
        /// The PaymentIntent paid by the charge.
        payment_intent: Option<String>,
        /// `refunds.data` (each in the charge's currency when it names none).
        refunds: Vec<RefundObject>,
    },
    /// `refund.*`.
    Refund(RefundObject),
    /// `charge.dispute.*`.
    Dispute(DisputeObject),
    /// `invoice.*`.
    Invoice(InvoiceObject),
    /// `customer.subscription.*`.
    Subscription(SubscriptionObject),
    /// `payment_method.*`.
    PaymentMethod {
        /// `pm_...`.
        id: Field<String>,
    },
    /// `setup_intent.*`.
    SetupIntent(SetupIntentObject),
    /// Any other type: not read.
    Other,
}

/// A PaymentIntent in an event.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentIntentObject {
    /// `pi_...`.
    pub id: Field<String>,
    /// `metadata[payment_id]`: our payment id, set when we created it.
    pub metadata_payment_id: Option<String>,
    /// The card that paid, or is to pay.
    pub payment_method: Option<String>,
    /// Whether `setup_future_usage` is set: the payment saves its card.
    pub saves_card: bool,
    /// `last_payment_error`, when it is an object (empty strings read as absent).
    pub last_payment_error: Option<PaymentError>,
}

/// A refund, on its own or in a charge's list.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundObject {
    /// `re_...`.
    pub id: Field<String>,
    /// `pending`, `succeeded`, `failed`, `canceled`, ...
    pub status: Option<String>,
    /// The amount refunded: money, in micro-units of the currency.
    pub amount_money_micros: Field<i64>,
    /// The PaymentIntent refunded.
    pub payment_intent: Option<String>,
}

/// A dispute.
#[derive(Debug, Clone, PartialEq)]
pub struct DisputeObject {
    /// `dp_...`.
    pub id: Field<String>,
    /// The amount disputed: money, in micro-units of the currency.
    pub amount_money_micros: Field<i64>,
    /// The PaymentIntent disputed.
    pub payment_intent: Option<String>,
}

/// An invoice.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceObject {
    /// `in_...`.
    pub id: Field<String>,
    /// `cus_...`.
    pub customer: Option<String>,
    /// `sub_...`: `subscription`, or where API version 2025-03-31 moved it
    /// (`parent.subscription_details`), or its first line's.
    pub subscription: Option<String>,
    /// `billing_reason`, e.g. `subscription_cycle`, `manual`.
    pub billing_reason: Option<String>,
    /// The start of the period it pays for: its first line's period, else `period_start`.
    pub period_start: Field<i64>,
}

/// A subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionObject {
    /// `sub_...`.
    pub id: Field<String>,
    /// `cus_...`.
    pub customer: Option<String>,
    /// Stripe's `status`.
    pub status: Field<String>,
}

/// A SetupIntent.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupIntentObject {
    /// `cus_...`.
    pub customer: Option<String>,
    /// `pm_...`: the payment method it saved.
    pub payment_method: Option<String>,
    /// The card, when `payment_method` is expanded.
    pub card: Option<Card>,
}

/// Reads a verified event body. `Err` is the message of a 400 `malformed_request`.
pub fn parse_event(body: &[u8]) -> Result<Event, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| format!("The event is not valid JSON: {error}."))?;
    let id = str_at(&value, &["id"]).ok_or("The event has no id.")?;
    let kind = str_at(&value, &["type"]).ok_or("The event has no type.")?;
    let object = value
        .pointer("/data/object")
        .filter(|o| o.is_object())
        .ok_or("The event has no data.object.")?;
    let object = read_object(&kind, object);
    Ok(Event { id, kind, object })
}

fn read_object(kind: &str, object: &Value) -> Object {
    let prefix = kind.rsplit_once('.').map_or(kind, |(prefix, _)| prefix);
    let object_id = || required(object, &["id"], kind);
    match prefix {
        "payment_intent" => Object::PaymentIntent(PaymentIntentObject {
            id: object_id(),
            metadata_payment_id: str_at(object, &["metadata", "payment_id"]),
            payment_method: id_at(object, "payment_method"),
            saves_card: str_at(object, &["setup_future_usage"]).is_some(),
            last_payment_error: object
                .get("last_payment_error")
                .filter(|e| e.is_object())
                .map(payment_error),
        }),
        "charge" => {
            let currency = str_at(object, &["currency"]);
            let refunds = object
                .pointer("/refunds/data")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            Object::Charge {
                payment_intent: id_at(object, "payment_intent"),
                refunds: refunds
                    .iter()
                    .map(|refund| refund_object(refund, currency.as_deref(), kind))
                    .collect(),
            }
        }
        "refund" => Object::Refund(refund_object(object, None, kind)),
        "charge.dispute" => Object::Dispute(DisputeObject {
            id: object_id(),
            amount_money_micros: amount_money_micros(object, None, kind),
            payment_intent: id_at(object, "payment_intent"),
        }),
        "invoice" => Object::Invoice(InvoiceObject {
            id: object_id(),
            customer: id_at(object, "customer"),
            subscription: invoice_subscription(object),
            billing_reason: str_at(object, &["billing_reason"]),
            period_start: object
                .pointer("/lines/data/0/period/start")
                .and_then(Value::as_i64)
                .or_else(|| object.get("period_start").and_then(Value::as_i64))
                .ok_or_else(|| format!("The {kind} invoice has no period start.")),
        }),
        "customer.subscription" => Object::Subscription(SubscriptionObject {
            id: object_id(),
            customer: id_at(object, "customer"),
            status: required(object, &["status"], kind),
        }),
        "payment_method" => Object::PaymentMethod { id: object_id() },
        "setup_intent" => Object::SetupIntent(SetupIntentObject {
            customer: id_at(object, "customer"),
            payment_method: id_at(object, "payment_method"),
            // Expanded (`payment_method` as an object), the card is in the event already.
            card: object
                .get("payment_method")
                .filter(|pm| pm.is_object())
                .and_then(|pm| Card::from_json(pm).ok()),
        }),
        _ => Object::Other,
    }
}

fn refund_object(refund: &Value, fallback_currency: Option<&str>, kind: &str) -> RefundObject {
    RefundObject {
        id: required(refund, &["id"], kind),
        status: str_at(refund, &["status"]),
        amount_money_micros: amount_money_micros(refund, fallback_currency, kind),
        payment_intent: id_at(refund, "payment_intent"),
    }
}

/// A `last_payment_error` object.
fn payment_error(error: &Value) -> PaymentError {
    let field = |name: &str| str_at(error, &[name]);
    PaymentError {
        code: field("code"),
        decline_code: field("decline_code"),
        message: field("message"),
    }
}

/// `amount` (minor units of `currency`) as money in micro-units of the currency.
fn amount_money_micros(object: &Value, fallback_currency: Option<&str>, kind: &str) -> Field<i64> {
    let amount = object
        .get("amount")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("The {kind} object has no integer amount."))?;
    let currency = str_at(object, &["currency"])
        .or_else(|| fallback_currency.map(str::to_owned))
        .ok_or_else(|| format!("The {kind} object has no currency."))?;
    minor_to_money_micros(amount, &currency)
        .ok_or_else(|| format!("The {kind} amount {amount} {currency} is out of range."))
}

/// Stripe's minor units to money in micro-units of the currency ([`money::from_minor`]);
/// negative amounts and overflow are refused.
pub fn minor_to_money_micros(amount: i64, currency: &str) -> Option<i64> {
    if amount < 0 {
        return None;
    }
    money::from_minor(amount, currency).ok()
}

/// The subscription of an invoice (moved under `parent.subscription_details` in API version
/// 2025-03-31).
fn invoice_subscription(invoice: &Value) -> Option<String> {
    id_at(invoice, "subscription")
        .or_else(|| {
            invoice
                .pointer("/parent/subscription_details")
                .and_then(|details| id_at(details, "subscription"))
        })
        .or_else(|| {
            invoice
                .pointer("/lines/data/0")
                .and_then(|line| id_at(line, "subscription"))
        })
}

/// A non-empty string at a path of keys.
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

fn required(value: &Value, path: &[&str], kind: &str) -> Field<String> {
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
    fn envelopes() {
        assert!(parse_event(b"{").is_err());
        assert!(parse_event(b"{}").is_err());
        assert!(parse_event(br#"{"id": "evt_1", "type": "x"}"#).is_err());
        let other = parse_event(&event("plan.created", json!({"id": "plan_1"}))).expect("valid");
        assert_eq!(
            (other.id.as_str(), other.kind.as_str(), other.object),
            ("evt_1", "plan.created", Object::Other)
        );
    }

    #[test]
    fn objects_by_type() {
        let dispute = parse_event(&event(
            "charge.dispute.created",
            json!({"id": "dp_1", "amount": 1000, "currency": "usd", "payment_intent": {"id": "pi_1"}}),
        ))
        .expect("valid");
        assert_eq!(
            dispute.object,
            Object::Dispute(DisputeObject {
                id: Ok("dp_1".into()),
                amount_money_micros: Ok(10_000_000),
                payment_intent: Some("pi_1".into()),
            })
        );
        let intent = parse_event(&event(
            "payment_intent.payment_failed",
            json!({"metadata": {}, "last_payment_error": {"code": "card_declined", "message": ""}}),
        ))
        .expect("valid");
        assert_eq!(
            intent.object,
            Object::PaymentIntent(PaymentIntentObject {
                id: Err("The payment_intent.payment_failed object has no id.".into()),
                metadata_payment_id: None,
                payment_method: None,
                saves_card: false,
                last_payment_error: Some(PaymentError {
                    code: Some("card_declined".into()),
                    decline_code: None,
                    message: None,
                }),
            })
        );
        let charge = parse_event(&event(
            "charge.refunded",
            json!({"id": "ch_1", "currency": "usd", "payment_intent": "pi_1", "refunds": {"data": [
                {"id": "re_1", "amount": 300, "status": "succeeded"}, {"status": "failed"}]}}),
        ))
        .expect("valid");
        let Object::Charge { refunds, .. } = charge.object else {
            panic!("{charge:?}");
        };
        assert_eq!(refunds[0].amount_money_micros, Ok(3_000_000));
        assert_eq!(
            refunds[1].amount_money_micros,
            Err("The charge.refunded object has no integer amount.".into())
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(minor_to_money_micros(1099, "usd"), Some(10_990_000));
        assert_eq!(minor_to_money_micros(1099, "EUR"), Some(10_990_000));
        assert_eq!(minor_to_money_micros(500, "jpy"), Some(500_000_000));
        assert_eq!(minor_to_money_micros(1500, "kwd"), Some(1_500_000));
        assert_eq!(minor_to_money_micros(-1, "usd"), None);
        assert_eq!(minor_to_money_micros(i64::MAX, "usd"), None);
    }
}
