//! HTTP helpers: bounded body reading, JSON parsing, and responses that carry `Content-Length`.

use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::http::FullBody;
use spin_sdk::wasip3::http::types::{ErrorCode, Response as WasiResponse};
use spin_sdk::wasip3::http_compat::IncomingRequestBody;

use crate::error::ApiError;

/// The largest request body accepted (a 1,000-event usage batch fits with room to spare).
pub const BODY_LIMIT_BYTES: usize = 256 * 1024;

const JSON: &str = "application/json";

/// A complete response: status, headers and an in-memory body.
///
/// Converting it into a Spin response always sets `Content-Length`: a response without it is
/// sent chunked and stalls ~40 ms on keep-alive clients (docs/performance.md, "Reference figures
/// from real Spin").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type`, when there is a body.
    pub content_type: Option<String>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON response; a value that cannot be serialised becomes a 500 (a bug, not bad input).
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::bytes(status, JSON, body),
            Err(error) => {
                crate::log!("spin-adapter: response serialisation failed: {error}");
                Self::bytes(
                    500,
                    JSON,
                    br#"{"error":{"code":"internal_error","message":"Internal error."}}"#.to_vec(),
                )
            }
        }
    }

    /// A response with a body of the given content type (e.g. CSV exports).
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: Some(content_type.to_owned()),
            headers: Vec::new(),
            body,
        }
    }

    /// A response without a body (e.g. 204).
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds one header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Whether this status forbids a body and a `Content-Length` (1xx, 204, 304).
    fn bodyless(&self) -> bool {
        self.status < 200 || self.status == 204 || self.status == 304
    }

    /// The `http` crate response this reply describes.
    pub fn into_http(self) -> Result<http::Response<FullBody<Bytes>>, http::Error> {
        let bodyless = self.bodyless();
        let mut builder = http::Response::builder().status(self.status);
        if let Some(content_type) = &self.content_type
            && !bodyless
        {
            builder = builder.header(CONTENT_TYPE, content_type.as_str());
        }
        for (name, value) in &self.headers {
            // Header values are built by this crate, never echoed from input; skip any that
            // would be invalid rather than fail the whole response.
            if let Ok(value) = HeaderValue::from_str(value) {
                builder = builder.header(*name, value);
            }
        }
        let body = if bodyless {
            Bytes::new()
        } else {
            builder = builder.header(CONTENT_LENGTH, self.body.len());
            Bytes::from(self.body)
        };
        builder.body(FullBody::new(body))
    }
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Self {
        error.into_reply()
    }
}

impl spin_sdk::http::IntoResponse for Reply {
    fn into_response(self) -> Result<WasiResponse, ErrorCode> {
        let response = self
            .into_http()
            .map_err(|error| ErrorCode::InternalError(Some(error.to_string())))?;
        spin_sdk::http::IntoResponse::into_response(response)
    }
}

/// Reads the whole request body, refusing more than [`BODY_LIMIT_BYTES`] with 413.
///
/// A declared `Content-Length` over the limit is refused before reading anything; a body that
/// grows past the limit while streaming is refused as soon as it does.
pub async fn read_body(body: IncomingRequestBody) -> Result<Vec<u8>, ApiError> {
    use http_body::Body as _;
    if body
        .size_hint()
        .upper()
        .is_some_and(|declared| declared > BODY_LIMIT_BYTES as u64)
    {
        return Err(ApiError::payload_too_large(BODY_LIMIT_BYTES));
    }
    let mut body = body;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::malformed(format!("The request body could not be read: {error:?}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > BODY_LIMIT_BYTES {
                return Err(ApiError::payload_too_large(BODY_LIMIT_BYTES));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// Parses a JSON body into `T`: malformed JSON or wrong types are a 400 `malformed_request`
/// whose message says what and where (serde's line and column), never a panic.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed("A JSON request body is required."));
    }
    serde_json::from_slice(body).map_err(|error| {
        let message = if error.is_data() {
            format!("The request body does not match the expected shape: {error}.")
        } else {
            format!("The request body is not valid JSON: {error}.")
        };
        ApiError::malformed(message)
    })
}

/// [`read_body`] then [`parse_json`].
pub async fn read_json<T: DeserializeOwned>(body: IncomingRequestBody) -> Result<T, ApiError> {
    parse_json(&read_body(body).await?)
}

/// Parses the URI's query string into `T` (`?limit=20&type=call`, percent-decoded); an unknown
/// shape or a wrong type is a 400 `malformed_request`. No query parses like an empty one.
pub fn parse_query<T: DeserializeOwned>(uri: &http::Uri) -> Result<T, ApiError> {
    serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|error| ApiError::malformed(format!("Invalid query string: {error}.")))
}

/// The path's segments without the leading slash, ignoring one trailing slash:
/// `/v1/workspaces/w1/` gives `["v1", "workspaces", "w1"]`.
pub fn path_segments(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

/// 404 `not_found` for a path no route matches.
pub fn not_found(path: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("No route matches {path}."))
}

/// 405 `method_not_allowed`, with the `Allow` header listing `allowed`.
pub fn method_not_allowed(method: &http::Method, allowed: &[&str]) -> ApiError {
    let allow = allowed.join(", ");
    ApiError::new(
        405,
        "method_not_allowed",
        format!("Method {method} is not allowed here; use {allow}."),
    )
    .with_detail(
        "allowed",
        allowed
            .iter()
            .map(|m| serde_json::Value::from(*m))
            .collect(),
    )
    .with_header("allow", allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Amount {
        #[allow(dead_code)]
        amount: String,
    }

    #[test]
    fn json_reply_carries_content_length() {
        let reply = Reply::json(201, &serde_json::json!({"id": "t1"}));
        let response = reply.into_http().expect("valid response");
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()[CONTENT_LENGTH], "11");
        assert_eq!(response.headers()[CONTENT_TYPE], JSON);
    }

    #[test]
    fn no_content_has_no_length() {
        let response = Reply::empty(204).into_http().expect("valid response");
        assert!(response.headers().get(CONTENT_LENGTH).is_none());
    }

    #[test]
    fn malformed_json_is_400() {
        let error = parse_json::<Amount>(b"{\"amount\": ").expect_err("truncated");
        assert_eq!(
            (error.status, error.code.as_ref()),
            (400, "malformed_request")
        );
        let error = parse_json::<Amount>(b"{\"amount\": 5}").expect_err("wrong type");
        assert_eq!(error.status, 400);
        assert!(
            error.message.contains("expected a string"),
            "{}",
            error.message
        );
        let error = parse_json::<Amount>(b"  ").expect_err("empty");
        assert_eq!(error.status, 400);
    }

    #[test]
    fn query_strings() {
        #[derive(Debug, serde::Deserialize)]
        struct Page {
            limit: Option<u32>,
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        let uri: http::Uri = "/v1/x?limit=20&type=ai%20task".parse().expect("uri");
        let page: Page = parse_query(&uri).expect("valid");
        assert_eq!(
            (page.limit, page.kind.as_deref()),
            (Some(20), Some("ai task"))
        );
        let uri: http::Uri = "/v1/x?limit=many".parse().expect("uri");
        assert_eq!(
            parse_query::<Page>(&uri).expect_err("not a number").status,
            400
        );
        let uri: http::Uri = "/v1/x".parse().expect("uri");
        assert!(parse_query::<Page>(&uri).expect("empty").limit.is_none());
    }

    #[test]
    fn segments() {
        assert_eq!(
            path_segments("/v1/workspaces/w1/"),
            ["v1", "workspaces", "w1"]
        );
        assert!(path_segments("/").is_empty());
    }

    #[test]
    fn error_body_shape() {
        let error = ApiError::from(ledger::LedgerError::invalid(
            "invalid_amount",
            "amount",
            "Bad.",
        ));
        assert_eq!(error.status, 422);
        assert_eq!(
            error.body(),
            serde_json::json!({"error": {"code": "invalid_amount", "message": "Bad.", "field": "amount"}})
        );
        let storage =
            ledger::StorageError::from_sqlite_message("database is locked: INSERT INTO x");
        let error = ApiError::from(storage);
        assert_eq!(error.status, 503);
        assert_eq!(error.message, "Temporary failure, please retry.");
        let storage = ledger::StorageError::from_sqlite_message("no such table: journal");
        assert_eq!(ApiError::from(storage).status, 500);
    }
}
