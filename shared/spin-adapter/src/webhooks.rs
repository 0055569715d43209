//! Outgoing webhooks, signed as the Standard Webhooks specification says (standardwebhooks.com):
//! headers `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`, the key being the secret after its `whsec_` prefix, base64
//! decoded. Any Standard Webhooks library verifies them.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// The shortest key we accept (the specification suggests 24 to 64 bytes).
const KEY_MIN_BYTES: usize = 16;

/// The most of an endpoint's answer we read (for the operator's `last_error`).
const ANSWER_MAX_BYTES: usize = 512;

/// A signing key, from a `whsec_...` secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// Reads a secret: `whsec_` (optional) then base64 of at least 16 bytes. The error never
    /// contains the secret.
    pub fn from_secret(secret: &str) -> Result<Self, String> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "the secret is not whsec_ followed by base64".to_owned())?;
        if key.len() < KEY_MIN_BYTES {
            return Err(format!("the secret's key is under {KEY_MIN_BYTES} bytes"));
        }
        Ok(Self { key })
    }

    /// The `webhook-signature` header's value for message `id` sent at `timestamp_secs`.
    pub fn signature(&self, id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        // A key of any length is valid for HMAC: `new_from_slice` cannot fail here.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// How one webhook request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The endpoint answered (any status).
    Answered {
        /// Its status.
        status: u16,
        /// The start of its body, lossy UTF-8.
        body: String,
    },
    /// No answer in time.
    TimedOut,
    /// No connection, a refused destination, a broken answer.
    Failed(String),
}

/// POSTs `body` (JSON) to `url` as message `id`, signed, giving up after `timeout`.
pub async fn send(
    url: &str,
    signer: &Signer,
    id: &str,
    timestamp_secs: i64,
    body: Bytes,
    timeout: Duration,
) -> Delivery {
    use futures::future::{Either, select};
    let request = match http::Request::post(url)
        .header("content-type", "application/json")
        // A length, not chunks: every endpoint reads a sized body.
        .header("content-length", body.len().to_string())
        .header("user-agent", "voice-billing-notifier/1")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp_secs.to_string())
        .header(
            "webhook-signature",
            signer.signature(id, timestamp_secs, &body),
        )
        .body(spin_sdk::http::FullBody::new(body))
    {
        Ok(request) => request,
        Err(error) => return Delivery::Failed(format!("cannot build the request: {error}")),
    };
    let call = std::pin::pin!(exchange(request));
    let timer = std::pin::pin!(spin_sdk::time::sleep(timeout));
    match select(call, timer).await {
        Either::Left((delivery, _)) => delivery,
        Either::Right(((), _)) => Delivery::TimedOut,
    }
}

async fn exchange(request: http::Request<spin_sdk::http::FullBody<Bytes>>) -> Delivery {
    use spin_sdk::http::body::IncomingBodyExt as _;
    let response = match spin_sdk::http::send(request).await {
        Ok(response) => response,
        Err(error) => return Delivery::Failed(error.to_string()),
    };
    let status = response.status().as_u16();
    // The status decides; a body that breaks off does not undo a 2xx.
    let body = response.into_body().bytes().await.unwrap_or_default();
    let end = body.len().min(ANSWER_MAX_BYTES);
    Delivery::Answered {
        status,
        body: String::from_utf8_lossy(&body[..end]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specification_example() {
        // The example of the Standard Webhooks specification (and its libraries' tests).
        let signer = Signer::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signer.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_secrets_it_cannot_use() {
        assert!(Signer::from_secret("").is_err());
        assert!(Signer::from_secret("whsec_not base64!").is_err());
        assert!(Signer::from_secret("whsec_c2hvcnQ=").is_err(), "5 bytes");
        let error = Signer::from_secret("whsec_c2hvcnQ=").unwrap_err();
        assert!(!error.contains("c2hvcnQ"), "{error}");
        assert!(
            Signer::from_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok(),
            "prefix optional"
        );
    }
}
