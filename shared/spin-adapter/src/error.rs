//! The adapter's one error type: an HTTP contract error, ready to become a response; and the
//! one place where the ledger's errors and payment failures get their HTTP status.

use std::borrow::Cow;
use std::fmt;

use ledger::settlement::FailureCode;
use ledger::{LedgerError, StorageError, StorageErrorKind};
use serde_json::{Map, Value};

use crate::http::Reply;

/// The message of every storage failure: SQL text and engine details never reach a client.
const TEMPORARY_FAILURE: &str = "Temporary failure, please retry.";

/// An error answered as `{"error": {"code", "message", ...details}}` with an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The contract's snake_case error code.
    pub code: Cow<'static, str>,
    /// A human sentence.
    pub message: String,
    /// Extra fields of the error object (e.g. `field`, `limit`).
    pub details: Map<String, Value>,
    /// Extra response headers (e.g. `Allow` on a 405).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// Builds an error with no details.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            details: Map::new(),
            headers: Vec::new(),
        }
    }

    /// 400 `malformed_request`: the request cannot be parsed.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(400, "malformed_request", message)
    }

    /// 401 `unauthorized`: missing or invalid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message).with_header("www-authenticate", "Bearer".to_owned())
    }

    /// 403 `forbidden`: valid credentials, wrong workspace or role.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    /// 413 `payload_too_large`: the body is over `limit_bytes`.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("The request body is larger than the limit of {limit_bytes} bytes."),
        )
        .with_detail("limit_bytes", limit_bytes.into())
    }

    /// 501 `not_implemented`: the route exists but its operation is not available yet.
    pub fn not_implemented() -> Self {
        Self::new(
            501,
            "not_implemented",
            "This operation is not implemented yet.",
        )
    }

    /// 500 `internal_error` with a message safe to show (never SQL or secrets).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal_error", message)
    }

    /// 503 `temporarily_unavailable`: a dependency failed; the client should retry.
    pub fn unavailable() -> Self {
        Self::new(503, "temporarily_unavailable", TEMPORARY_FAILURE)
            .with_header("retry-after", "1".to_owned())
    }

    /// Adds one field to the error object.
    pub fn with_detail(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.to_owned(), value);
        self
    }

    /// Adds one response header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The contract's error body.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), Value::String(self.code.to_string()));
        error.insert("message".into(), Value::String(self.message.clone()));
        for (key, value) in &self.details {
            if key != "code" && key != "message" {
                error.insert(key.clone(), value.clone());
            }
        }
        let mut body = Map::new();
        body.insert("error".into(), Value::Object(error));
        Value::Object(body)
    }

    /// The response for this error.
    pub fn into_reply(self) -> Reply {
        let mut reply = Reply::json(self.status, &self.body());
        reply.headers.extend(self.headers);
        reply
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The contract's HTTP status of a ledger error: 400 malformed, 404 unknown, 402 the money is not
/// there (R7, R6 `stop`), 409 the state forbids it (R3, idempotency, conflicts), 422 validation
/// (incl. R11's payment method and R9's bounds), 429 a limit (R6), 503 payments unavailable or
/// the catalog changed under the request (retry), and for storage 503 busy, else 500.
pub fn ledger_status(error: &LedgerError) -> u16 {
    match error {
        LedgerError::Invalid { code, .. } if *code == "malformed_request" => 400,
        LedgerError::Invalid { .. } => 422,
        LedgerError::NotFound { .. } => 404,
        LedgerError::BillingNotConfigured
        | LedgerError::IdempotencyConflict
        | LedgerError::Conflict { .. } => 409,
        LedgerError::InsufficientFunds | LedgerError::PlanCreditsExhausted => 402,
        LedgerError::LimitReached { .. } => 429,
        LedgerError::PaymentMethodRequired
        | LedgerError::AmountBelowMinimum { .. }
        | LedgerError::AmountAboveMaximum { .. } => 422,
        LedgerError::PaymentsUnavailable { .. } | LedgerError::CatalogChanged => 503,
        LedgerError::Storage(storage)
            if matches!(
                storage.kind,
                StorageErrorKind::Busy | StorageErrorKind::Unreachable | StorageErrorKind::Disk
            ) =>
        {
            503
        }
        LedgerError::Storage(_) => 500,
    }
}

/// The HTTP answer to a failed payment (R9): 402 with the help centre's advice when the card
/// refused (`card_declined`, `expired_card`, `authentication_required`), 502
/// `payment_processing_error` when it was not the card.
pub fn payment_failed(code: FailureCode) -> ApiError {
    let status = if code.is_card_fault() { 402 } else { 502 };
    ApiError::new(status, code.as_str(), code.advice())
}

/// The one mapping from a ledger error to the HTTP contract: status from [`ledger_status`], code
/// from `code()`, message from `Display`, extra fields from `details()`. Storage failures keep
/// their SQL out of the response (it goes to the component's log instead).
impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        let status = ledger_status(&error);
        if let LedgerError::Storage(storage) = &error {
            crate::log!("spin-adapter: storage failure: {storage}");
            if matches!(
                storage.kind,
                StorageErrorKind::Unreachable | StorageErrorKind::Disk
            ) {
                // The database server is down or restarting, or its disk is full or failing:
                // nothing was written, and the client retries later.
                return Self::unavailable();
            }
            let mapped = Self::new(status, error.code(), TEMPORARY_FAILURE);
            return if status == 503 {
                mapped.with_header("retry-after", "1".to_owned())
            } else {
                mapped
            };
        }
        let mapped = Self {
            status,
            code: Cow::Borrowed(error.code()),
            message: error.to_string(),
            details: error.details(),
            headers: Vec::new(),
        };
        if error == LedgerError::CatalogChanged {
            // The catalog kept changing under the request (`with_catalog` reloads it first).
            return mapped.with_header("retry-after", "1".to_owned());
        }
        mapped
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        Self::from(LedgerError::Storage(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_code(error: LedgerError) -> (u16, String) {
        let api = ApiError::from(error);
        (api.status, api.code.into_owned())
    }

    #[test]
    fn ledger_errors_get_the_contracts_statuses() {
        let invalid = |code| LedgerError::Invalid {
            code,
            message: "m".into(),
            field: None,
        };
        let cases: Vec<(LedgerError, u16, &str)> = vec![
            (invalid("malformed_request"), 400, "malformed_request"),
            (invalid("validation_error"), 422, "validation_error"),
            (
                invalid("payment_method_required"),
                422,
                "payment_method_required",
            ),
            (LedgerError::NotFound { what: "plan" }, 404, "not_found"),
            (
                LedgerError::BillingNotConfigured,
                409,
                "billing_not_configured",
            ),
            (
                LedgerError::IdempotencyConflict,
                409,
                "idempotency_conflict",
            ),
            (
                LedgerError::Conflict {
                    code: "subscription_past_due",
                    message: "m".into(),
                },
                409,
                "subscription_past_due",
            ),
            (LedgerError::InsufficientFunds, 402, "insufficient_funds"),
            (
                LedgerError::PlanCreditsExhausted,
                402,
                "plan_credits_exhausted",
            ),
            (
                LedgerError::LimitReached {
                    limit: ledger::LimitKind::DailyCallLimit,
                },
                429,
                "limit_reached",
            ),
            (
                LedgerError::PaymentMethodRequired,
                422,
                "payment_method_required",
            ),
            (
                LedgerError::AmountBelowMinimum {
                    minimum: 10.into(),
                    currency: "USD".into(),
                },
                422,
                "amount_below_minimum",
            ),
            (
                LedgerError::AmountAboveMaximum {
                    maximum: 5000.into(),
                    currency: "USD".into(),
                },
                422,
                "amount_above_maximum",
            ),
            (
                LedgerError::PaymentsUnavailable { message: "m" },
                503,
                "payment_processing_error",
            ),
            (LedgerError::CatalogChanged, 503, "internal_error"),
        ];
        for (error, status, code) in cases {
            assert_eq!(status_and_code(error), (status, code.to_owned()));
        }
        let storage = |kind| {
            ApiError::from(LedgerError::Storage(StorageError {
                kind,
                message: "SELECT secret".into(),
            }))
        };
        let busy = storage(StorageErrorKind::Busy);
        assert_eq!(
            (busy.status, busy.message.as_str()),
            (503, TEMPORARY_FAILURE)
        );
        assert_eq!(busy.headers, vec![("retry-after", "1".to_owned())]);
        let broken = storage(StorageErrorKind::Unavailable);
        assert_eq!((broken.status, broken.headers.len()), (500, 0));
        let down = storage(StorageErrorKind::Unreachable);
        assert_eq!(
            (down.status, down.code.as_ref(), down.message.as_str()),
            (503, "temporarily_unavailable", TEMPORARY_FAILURE)
        );
        assert_eq!(down.headers, vec![("retry-after", "1".to_owned())]);
        let full = storage(StorageErrorKind::Disk);
        assert_eq!(
            (full.status, full.code.as_ref(), full.message.as_str()),
            (503, "temporarily_unavailable", TEMPORARY_FAILURE)
        );
        assert_eq!(full.headers, vec![("retry-after", "1".to_owned())]);
    }

    #[test]
    fn payment_failures_are_402_for_the_card_else_502() {
        let answer = payment_failed(FailureCode::ExpiredCard);
        assert_eq!(
            (answer.status, answer.code.as_ref(), answer.message.as_str()),
            (402, "expired_card", ledger::settlement::ADVICE_EXPIRED)
        );
        assert_eq!(payment_failed(FailureCode::CardDeclined).status, 402);
        assert_eq!(
            payment_failed(FailureCode::AuthenticationRequired).status,
            402
        );
        let processing = payment_failed(FailureCode::PaymentProcessingError);
        assert_eq!(
            (processing.status, processing.code.as_ref()),
            (502, "payment_processing_error")
        );
    }
}
