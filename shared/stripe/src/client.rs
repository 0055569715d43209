//! The HTTP client: Stripe's headers, form bodies, a timeout, and error mapping.
//!
//! Requests go out through `spin_sdk::http::send`, so a component must list the API base in
//! `allowed_outbound_hosts`. Building the request ([`Client::request`]) and reading the answer
//! ([`parse_response`]) are pure and tested natively.

use crate::error::{Result, StripeError};
use crate::form::Form;
use bytes::Bytes;
use http::{Method, Request};
use serde_json::Value;
use std::time::Duration;

/// The Stripe API version every request pins (`Stripe-Version`).
pub const STRIPE_VERSION: &str = "2024-06-20";

/// Stripe's production API base.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// How long a call may take, request and answer, before it fails with
/// [`StripeError::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest idempotency key Stripe accepts.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A Stripe API client: an API base and a secret key.
#[derive(Clone)]
pub struct Client {
    api_base: String,
    secret_key: String,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("api_base", &self.api_base)
            .field("secret_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client for `api_base` (e.g. `https://api.stripe.com`, or localstripe's
    /// `http://127.0.0.1:PORT`; a trailing `/` is ignored) with the [`DEFAULT_TIMEOUT`].
    pub fn new(api_base: impl Into<String>, secret_key: impl Into<String>) -> Self {
        let api_base = api_base.into().trim_end_matches('/').to_owned();
        Self {
            api_base,
            secret_key: secret_key.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API base, without a trailing `/`.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The timeout of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Builds a request: `path` (e.g. `/v1/customers`) under the API base; a POST carries the
    /// form as its body and requires an idempotency key, a GET or DELETE carries it as the
    /// query string.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        form: &Form,
        idempotency_key: Option<&str>,
    ) -> Result<Request<Bytes>> {
        let encoded = form.encode()?;
        let is_post = method == Method::POST;
        let mut uri = format!("{}{}", self.api_base, path);
        if !is_post && !encoded.is_empty() {
            uri.push(if path.contains('?') { '&' } else { '?' });
            uri.push_str(&encoded);
        }
        let mut builder = Request::builder()
            .method(method)
            .uri(&uri)
            .header("authorization", format!("Bearer {}", self.secret_key))
            .header("stripe-version", STRIPE_VERSION)
            .header("accept", "application/json");
        let body = if is_post {
            let key = idempotency_key.unwrap_or("");
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
                return Err(StripeError::BadInput(format!(
                    "a POST needs an idempotency key of 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"
                )));
            }
            builder = builder
                .header("idempotency-key", key)
                .header("content-type", "application/x-www-form-urlencoded");
            Bytes::from(encoded)
        } else {
            if let Some(key) = idempotency_key {
                builder = builder.header("idempotency-key", key);
            }
            Bytes::new()
        };
        builder
            .body(body)
            .map_err(|e| StripeError::BadInput(format!("cannot build request to {uri}: {e}")))
    }

    /// POSTs `form` to `path` with `Idempotency-Key: idempotency_key`.
    pub async fn post(&self, path: &str, form: &Form, idempotency_key: &str) -> Result<Value> {
        let request = self.request(Method::POST, path, form, Some(idempotency_key))?;
        self.execute(request).await
    }

    /// GETs `path` with `query` as the query string.
    pub async fn get(&self, path: &str, query: &Form) -> Result<Value> {
        let request = self.request(Method::GET, path, query, None)?;
        self.execute(request).await
    }

    /// DELETEs `path`.
    pub async fn delete(&self, path: &str) -> Result<Value> {
        let request = self.request(Method::DELETE, path, &Form::new(), None)?;
        self.execute(request).await
    }

    /// Sends a request built by [`Client::request`], racing it against the timeout.
    pub async fn execute(&self, request: Request<Bytes>) -> Result<Value> {
        use futures::future::{Either, select};
        let call = std::pin::pin!(send(request, self.timeout));
        let timer = std::pin::pin!(spin_sdk::time::sleep(self.timeout));
        match select(call, timer).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => Err(StripeError::Timeout(self.timeout)),
        }
    }
}

async fn send(request: Request<Bytes>, timeout: Duration) -> Result<Value> {
    use spin_sdk::http::body::IncomingBodyExt as _;
    use spin_sdk::wasip3::http::types::ErrorCode;
    let transport = |e: ErrorCode| match e {
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout => StripeError::Timeout(timeout),
        other => StripeError::Network(other.to_string()),
    };
    let request = request.map(spin_sdk::http::FullBody::new);
    let response = spin_sdk::http::send(request).await.map_err(transport)?;
    let status = response.status().as_u16();
    let body = response.into_body().bytes().await.map_err(transport)?;
    parse_response(status, &body)
}

/// Reads an answer: a 2xx JSON object, else the mapped [`StripeError`].
pub fn parse_response(status: u16, body: &[u8]) -> Result<Value> {
    if !(200..300).contains(&status) {
        return Err(StripeError::from_response(status, body));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(StripeError::Decode(
            "the answer is not a JSON object".into(),
        )),
        Err(e) => Err(StripeError::Decode(format!("the answer is not JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(req: &'a Request<Bytes>, name: &str) -> Option<&'a str> {
        req.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn post_carries_stripe_headers_and_form_body() {
        let client = Client::new("http://127.0.0.1:8420/", "sk_test_123");
        let form = Form::new()
            .with("email", "a@b.c")
            .with_metadata("workspace_id", "ws 1");
        let req = client
            .request(Method::POST, "/v1/customers", &form, Some("ws_1:customer"))
            .unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "http://127.0.0.1:8420/v1/customers");
        assert_eq!(header(&req, "authorization"), Some("Bearer sk_test_123"));
        assert_eq!(header(&req, "stripe-version"), Some(STRIPE_VERSION));
        assert_eq!(header(&req, "idempotency-key"), Some("ws_1:customer"));
        assert_eq!(
            header(&req, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            req.body().as_ref(),
            b"email=a%40b.c&metadata%5Bworkspace_id%5D=ws+1"
        );
    }

    #[test]
    fn post_without_idempotency_key_is_refused() {
        let client = Client::new(DEFAULT_API_BASE, "sk_test_123");
        for key in [None, Some(""), Some(&*"k".repeat(256))] {
            let err = client
                .request(Method::POST, "/v1/customers", &Form::new(), key)
                .unwrap_err();
            assert!(matches!(err, StripeError::BadInput(_)), "{err}");
        }
    }

    #[test]
    fn get_puts_the_form_in_the_query() {
        let client = Client::new(DEFAULT_API_BASE, "sk_test_123");
        let query = Form::new().with("customer", "cus_1").with("type", "card");
        let req = client
            .request(Method::GET, "/v1/payment_methods", &query, None)
            .unwrap();
        assert_eq!(
            req.uri(),
            "https://api.stripe.com/v1/payment_methods?customer=cus_1&type=card"
        );
        assert!(req.body().is_empty());
        assert_eq!(header(&req, "idempotency-key"), None);
        assert_eq!(header(&req, "content-type"), None);
        let req = client
            .request(Method::GET, "/v1/invoices", &Form::new(), None)
            .unwrap();
        assert_eq!(req.uri(), "https://api.stripe.com/v1/invoices");
    }

    #[test]
    fn bad_key_is_refused_not_sent() {
        let client = Client::new(DEFAULT_API_BASE, "sk_test\n123");
        assert!(matches!(
            client.request(Method::GET, "/v1/invoices", &Form::new(), None),
            Err(StripeError::BadInput(_))
        ));
        assert!(!format!("{client:?}").contains("sk_test"));
    }

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(200, br#"{"id": "cus_1"}"#).unwrap()["id"],
            "cus_1"
        );
        assert!(matches!(
            parse_response(200, b"[]"),
            Err(StripeError::Decode(_))
        ));
        assert!(matches!(
            parse_response(200, b"<html>"),
            Err(StripeError::Decode(_))
        ));
        assert!(matches!(
            parse_response(
                402,
                br#"{"error": {"code": "card_declined", "message": "no"}}"#
            ),
            Err(StripeError::Card(_))
        ));
    }
}
