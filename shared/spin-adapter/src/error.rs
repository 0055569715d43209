//! The adapter's one error type: an HTTP contract error, ready to become a response.

use std::borrow::Cow;
use std::fmt;

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

/// The one mapping from a ledger error to the HTTP contract: status from `http_status()`, code
/// from `code()`, message from `Display`, extra fields from `details()`. Storage failures keep
/// their SQL out of the response (it goes to the component's log instead).
impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        let status = error.http_status();
        if let LedgerError::Storage(storage) = &error {
            eprintln!("spin-adapter: storage failure: {storage}");
            let (status, retry) = if storage.kind == StorageErrorKind::Busy {
                (503, true)
            } else {
                (500, false)
            };
            let mapped = Self::new(status, error.code(), TEMPORARY_FAILURE);
            return if retry {
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
