//! Stripe's errors, typed.
//!
//! Stripe answers a failed request with a non-2xx status and
//! `{"error": {"type", "code", "decline_code", "message", "param", "payment_intent", "charge"}}`.
//! [`StripeError::from_response`] maps it by status and by `code` (and `decline_code`), never
//! by `type`: localstripe reports a declined card as `"type": "invalid_request_error"` with
//! `"code": "card_declined"`, where Stripe says `"type": "card_error"`.

use serde_json::Value;
use std::time::Duration;

/// Stripe `code`s that describe the card or its authentication (a [`CardError`]).
pub const CARD_ERROR_CODES: &[&str] = &[
    "card_declined",
    "expired_card",
    "incorrect_cvc",
    "incorrect_number",
    "incorrect_zip",
    "invalid_cvc",
    "invalid_expiry_month",
    "invalid_expiry_year",
    "invalid_number",
    "processing_error",
    "authentication_required",
    "payment_intent_authentication_failure",
    "card_decline_rate_limit_exceeded",
];

/// A card could not be charged, saved or authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardError {
    /// HTTP status (402 from Stripe; localstripe also answers 402).
    pub status: u16,
    /// Stripe's `code`, e.g. `card_declined`, `expired_card`, `authentication_required`.
    pub code: String,
    /// Stripe's `decline_code` for `card_declined`, e.g. `insufficient_funds`.
    pub decline_code: Option<String>,
    /// Stripe's human message, e.g. "Your card was declined."
    pub message: String,
    /// The PaymentIntent the failure belongs to, when Stripe names it (localstripe does not).
    pub payment_intent: Option<String>,
    /// The failed charge, when named.
    pub charge: Option<String>,
}

/// Every way a Stripe call can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// The card was declined, expired, needs authentication, ... (see [`CardError`]).
    #[error("card error {}: {}", .0.code, .0.message)]
    Card(Box<CardError>),
    /// 429: too many requests.
    #[error("rate limited by Stripe: {message}")]
    RateLimited {
        /// Stripe's message.
        message: String,
    },
    /// 401: the secret key is missing or wrong.
    #[error("Stripe authentication failed: {message}")]
    Authentication {
        /// Stripe's message.
        message: String,
    },
    /// Any other 4xx: a parameter Stripe refused, an unknown id (404), an idempotency conflict.
    #[error("Stripe refused the request ({status}): {message}")]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// Stripe's `code`, when given (e.g. `resource_missing`, `idempotency_key_in_use`).
        code: Option<String>,
        /// The parameter at fault, when given.
        param: Option<String>,
        /// Stripe's message.
        message: String,
    },
    /// 5xx: Stripe failed.
    #[error("Stripe API error ({status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stripe's message, or the body.
        message: String,
    },
    /// The request did not reach Stripe or the answer did not come back.
    #[error("network error talking to Stripe: {0}")]
    Network(String),
    /// No answer within the client's timeout.
    #[error("Stripe did not answer within {0:?}")]
    Timeout(Duration),
    /// A 2xx answer that is not the JSON object expected.
    #[error("unexpected answer from Stripe: {0}")]
    Decode(String),
    /// Refused before sending (an amount with a fraction of a minor unit, a bad header value).
    #[error("request not sent: {0}")]
    BadInput(String),
}

/// Result of a Stripe call.
pub type Result<T, E = StripeError> = std::result::Result<T, E>;

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// The id of a field that is either an id string or an expanded object with an `id`.
pub(crate) fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl StripeError {
    /// Maps a non-2xx answer (status and body) to an error.
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let message = error.and_then(|e| text(e, "message")).unwrap_or_else(|| {
            let raw = String::from_utf8_lossy(body);
            let raw = raw.trim();
            if raw.is_empty() {
                format!("HTTP {status}")
            } else {
                raw.chars().take(300).collect()
            }
        });
        let code = error.and_then(|e| text(e, "code"));
        if status == 429 {
            return Self::RateLimited { message };
        }
        if status == 401 {
            return Self::Authentication { message };
        }
        if let (Some(error), Some(code)) = (error, code.as_deref())
            && CARD_ERROR_CODES.contains(&code)
        {
            return Self::Card(Box::new(CardError {
                status,
                code: code.to_owned(),
                decline_code: text(error, "decline_code"),
                message,
                payment_intent: id_of(error.get("payment_intent")),
                charge: id_of(error.get("charge")),
            }));
        }
        if status >= 500 {
            return Self::Api { status, message };
        }
        Self::InvalidRequest {
            status,
            code,
            param: error.and_then(|e| text(e, "param")),
            message,
        }
    }

    /// The card error, if this is one.
    pub fn card(&self) -> Option<&CardError> {
        match self {
            Self::Card(card) => Some(card),
            _ => None,
        }
    }

    /// Stripe's `code` (card errors and refused requests), if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Card(card) => Some(&card.code),
            Self::InvalidRequest { code, .. } => code.as_deref(),
            Self::RateLimited { .. } => Some("rate_limit"),
            _ => None,
        }
    }

    /// Whether the same call may succeed later unchanged because Stripe or the network failed:
    /// rate limits, Stripe's own failures, network failures and timeouts. A card's answer is not
    /// such a failure (`false`): whether retrying the card may pass (a soft decline) is the
    /// ledger's classification (`ledger::settlement::is_hard_decline`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Card(_) => false,
            Self::RateLimited { .. } | Self::Api { .. } | Self::Network(_) | Self::Timeout(_) => {
                true
            }
            Self::Authentication { .. }
            | Self::InvalidRequest { .. }
            | Self::Decode(_)
            | Self::BadInput(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(status: u16, body: Value) -> StripeError {
        StripeError::from_response(status, body.to_string().as_bytes())
    }

    #[test]
    fn stripe_card_declined_with_payment_intent_object() {
        // As Stripe answers a confirmed off-session PaymentIntent that is declined.
        let err = map(
            402,
            json!({"error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
                "charge": "ch_3Pgb",
                "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                "payment_intent": {"id": "pi_3Pgb", "object": "payment_intent",
                                   "status": "requires_payment_method"},
                "payment_method": {"id": "pm_1", "object": "payment_method"},
                "request_log_url": "https://dashboard.stripe.com/test/logs/req_1"
            }}),
        );
        let card = err.card().expect("card error");
        assert_eq!(card.code, "card_declined");
        assert_eq!(card.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(card.message, "Your card has insufficient funds.");
        assert_eq!(card.payment_intent.as_deref(), Some("pi_3Pgb"));
        assert_eq!(card.charge.as_deref(), Some("ch_3Pgb"));
        // Whether insufficient funds is soft is the ledger's call (`settlement` tests); the wire
        // crate only says it is the card's answer, not a transport failure.
        assert!(!err.is_retryable());
        assert_eq!(err.code(), Some("card_declined"));
    }

    #[test]
    fn localstripe_decline_is_mapped_by_code_not_type() {
        // localstripe 1.15.10, card 4000000000000341, off-session confirm.
        let err = map(
            402,
            json!({"error": {"charge": "ch_abc", "code": "card_declined",
                              "message": "Your card was declined.",
                              "type": "invalid_request_error"}}),
        );
        let card = err.card().expect("card error");
        assert_eq!(card.code, "card_declined");
        assert_eq!(card.decline_code, None);
        assert_eq!(card.payment_intent, None);
        assert_eq!(card.charge.as_deref(), Some("ch_abc"));
    }

    #[test]
    fn every_card_code_keeps_its_words() {
        // The classification (hard or soft, product code) of these is `ledger::settlement`'s;
        // here: each is a card error carrying Stripe's code and decline code unchanged.
        for (code, decline) in [
            ("card_declined", Some("try_again_later")),
            ("card_declined", Some("stolen_card")),
            ("expired_card", None),
            ("incorrect_number", None),
            ("incorrect_cvc", None),
            ("authentication_required", Some("authentication_required")),
            ("processing_error", None),
        ] {
            let err = map(
                402,
                json!({"error": {"type": "card_error", "code": code,
                                  "decline_code": decline, "message": "m"}}),
            );
            let card = err.card().expect("card error");
            assert_eq!(
                (card.code.as_str(), card.decline_code.as_deref()),
                (code, decline)
            );
        }
    }

    #[test]
    fn statuses() {
        let rate = map(
            429,
            json!({"error": {"type": "invalid_request_error", "code": "rate_limit",
                              "message": "Too many requests"}}),
        );
        assert_eq!(
            rate,
            StripeError::RateLimited {
                message: "Too many requests".into()
            }
        );
        assert!(rate.is_retryable());
        assert!(rate.card().is_none());

        let auth = map(
            401,
            json!({"error": {"type": "invalid_request_error",
                              "message": "Invalid API Key provided: sk_test_****"}}),
        );
        assert!(matches!(auth, StripeError::Authentication { .. }));
        assert!(!auth.is_retryable());

        let missing = map(
            404,
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
                              "param": "id", "message": "No such customer: 'cus_x'"}}),
        );
        assert_eq!(
            missing,
            StripeError::InvalidRequest {
                status: 404,
                code: Some("resource_missing".into()),
                param: Some("id".into()),
                message: "No such customer: 'cus_x'".into()
            }
        );
        assert_eq!(missing.code(), Some("resource_missing"));

        // localstripe refuses unknown parameters with a bare 400.
        let unexpected = map(
            400,
            json!({"error": {"message": "Unexpected description", "type": "invalid_request_error"}}),
        );
        assert!(matches!(
            unexpected,
            StripeError::InvalidRequest { status: 400, code: None, ref message, .. }
                if message == "Unexpected description"
        ));

        let api = map(
            500,
            json!({"error": {"type": "api_error", "message": "Something went wrong"}}),
        );
        assert_eq!(
            api,
            StripeError::Api {
                status: 500,
                message: "Something went wrong".into()
            }
        );
        assert!(api.is_retryable());
    }

    #[test]
    fn non_json_bodies() {
        let err = StripeError::from_response(502, b"<html>Bad gateway</html>");
        assert_eq!(
            err,
            StripeError::Api {
                status: 502,
                message: "<html>Bad gateway</html>".into()
            }
        );
        let err = StripeError::from_response(503, b"");
        assert_eq!(
            err,
            StripeError::Api {
                status: 503,
                message: "HTTP 503".into()
            }
        );
        assert!(StripeError::Network("reset".into()).is_retryable());
        assert!(StripeError::Timeout(Duration::from_secs(15)).is_retryable());
    }
}
