//! `Stripe-Signature` verification (Stripe's webhook signing scheme), pure so it is unit-tested
//! natively and fuzzed.
//!
//! The header is `t=<unix seconds>,v1=<hex>,v1=<hex>,...`; other schemes (`v0`, ...) and unknown
//! items are ignored. The signed payload is `"{t}.{raw body}"`, HMAC-SHA256 keyed with the
//! endpoint's secret (the whole `whsec_...` string, as Stripe's own libraries use it). The event is
//! accepted when ANY `v1` matches (Stripe sends several while a secret is being rolled) and `t` is
//! within [`TOLERANCE_SECS`] of now, either way. Every comparison is constant-time (`hmac`'s
//! `verify_slice`).

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far the signature's timestamp may be from now, in either direction (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused. Every case is a 400 `invalid_signature`; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    Missing,
    /// The header cannot be read (no timestamp, no `v1`, bad hex, non-ASCII...).
    Malformed(&'static str),
    /// The endpoint has no secret configured, so nothing can be verified.
    NoSecret,
    /// The timestamp is more than [`TOLERANCE_SECS`] away from now.
    OutsideTolerance {
        /// The header's timestamp.
        timestamp: i64,
        /// The clock at verification.
        now: i64,
    },
    /// No `v1` signature matches the body with the configured secret.
    Mismatch,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "The Stripe-Signature header is missing."),
            Self::Malformed(why) => write!(f, "The Stripe-Signature header is malformed: {why}."),
            Self::NoSecret => write!(
                f,
                "Webhook signatures cannot be verified: no webhook secret is configured."
            ),
            Self::OutsideTolerance { timestamp, now } => write!(
                f,
                "The Stripe-Signature timestamp {timestamp} is more than {TOLERANCE_SECS} s away from the server time {now}."
            ),
            Self::Mismatch => write!(
                f,
                "No v1 signature in the Stripe-Signature header matches the request body."
            ),
        }
    }
}

impl std::error::Error for SignatureError {}

/// The parts of a `Stripe-Signature` header this endpoint uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// `t`: when Stripe signed (Unix seconds).
    pub timestamp: i64,
    /// Every `v1` signature, decoded.
    pub signatures: Vec<Vec<u8>>,
}

/// Parses `t=...,v1=...[,v1=...]`. Items other than `t` and `v1` are ignored; a second `t`, a
/// missing `t`, no `v1`, or a `v1` that is not hex is malformed.
pub fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one timestamp"));
                }
                let value = value.trim();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed("the timestamp is not a number"));
                }
                let parsed = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("the timestamp is out of range"))?;
                timestamp = Some(parsed);
            }
            "v1" => signatures.push(
                decode_hex(value.trim())
                    .ok_or(SignatureError::Malformed("a v1 signature is not hex"))?,
            ),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no timestamp (t=)"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    Ok(SignatureHeader {
        timestamp,
        signatures,
    })
}

/// Verifies `body` against the header value with `secret` at `now` (Unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = header.ok_or(SignatureError::Missing)?;
    let parsed = parse_header(header)?;
    if now.abs_diff(parsed.timestamp) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance {
            timestamp: parsed.timestamp,
            now,
        });
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::NoSecret)?;
    mac.update(parsed.timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // Check every candidate (no early exit on the first match: the work does not depend on
    // which one matches); each comparison is constant-time.
    let matched = parsed.signatures.iter().fold(false, |found, signature| {
        mac.clone().verify_slice(signature).is_ok() | found
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Decodes lower- or upper-case hex; `None` for an odd length or a non-hex digit.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const NOW: i64 = 1_700_000_000;

    fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn header(timestamp: i64, signatures: &[String]) -> String {
        let mut header = format!("t={timestamp}");
        for signature in signatures {
            header.push_str(",v1=");
            header.push_str(signature);
        }
        header
    }

    #[test]
    fn valid_signature_is_accepted() {
        let h = header(NOW, &[sign(SECRET, NOW, BODY)]);
        assert_eq!(verify(Some(&h), BODY, SECRET, NOW), Ok(()));
        // Upper-case hex and spaces around items are tolerated.
        let h = format!("t={NOW}, v1={}", sign(SECRET, NOW, BODY).to_uppercase());
        assert_eq!(verify(Some(&h), BODY, SECRET, NOW), Ok(()));
    }

    #[test]
    fn any_matching_v1_is_enough() {
        let good = sign(SECRET, NOW, BODY);
        let other = sign("whsec_old_secret", NOW, BODY);
        let h = format!("t={NOW},v1={other},v0={},v1={good}", "ab".repeat(32));
        assert_eq!(verify(Some(&h), BODY, SECRET, NOW), Ok(()));
        let h = header(NOW, &[good, other]);
        assert_eq!(verify(Some(&h), BODY, SECRET, NOW), Ok(()));
    }

    #[test]
    fn v0_alone_is_not_enough() {
        let h = format!("t={NOW},v0={}", sign(SECRET, NOW, BODY));
        assert_eq!(
            verify(Some(&h), BODY, SECRET, NOW),
            Err(SignatureError::Malformed("no v1 signature"))
        );
    }

    #[test]
    fn tampered_body_is_refused() {
        let h = header(NOW, &[sign(SECRET, NOW, BODY)]);
        let tampered = br#"{"id":"evt_1","type":"payment_intent.succeeded" }"#;
        assert_eq!(
            verify(Some(&h), tampered, SECRET, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn wrong_secret_is_refused() {
        let h = header(NOW, &[sign("whsec_other", NOW, BODY)]);
        assert_eq!(
            verify(Some(&h), BODY, SECRET, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamp_is_part_of_the_signature() {
        // A valid signature replayed under another (fresh) timestamp does not verify.
        let h = header(NOW, &[sign(SECRET, NOW - 10, BODY)]);
        assert_eq!(
            verify(Some(&h), BODY, SECRET, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let stale = NOW - TOLERANCE_SECS - 1;
        let h = header(stale, &[sign(SECRET, stale, BODY)]);
        assert!(matches!(
            verify(Some(&h), BODY, SECRET, NOW),
            Err(SignatureError::OutsideTolerance { .. })
        ));
        let future = NOW + TOLERANCE_SECS + 1;
        let h = header(future, &[sign(SECRET, future, BODY)]);
        assert!(matches!(
            verify(Some(&h), BODY, SECRET, NOW),
            Err(SignatureError::OutsideTolerance { .. })
        ));
        // The edges of the window are accepted.
        for t in [NOW - TOLERANCE_SECS, NOW + TOLERANCE_SECS] {
            let h = header(t, &[sign(SECRET, t, BODY)]);
            assert_eq!(verify(Some(&h), BODY, SECRET, NOW), Ok(()), "t={t}");
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = sign(SECRET, NOW, BODY);
        assert_eq!(
            verify(None, BODY, SECRET, NOW),
            Err(SignatureError::Missing)
        );
        for bad in [
            String::new(),
            "garbage".to_owned(),
            format!("v1={good}"),
            format!("t={NOW}"),
            format!("t=abc,v1={good}"),
            format!("t=-5,v1={good}"),
            format!("t=99999999999999999999999,v1={good}"),
            format!("t={NOW},t={NOW},v1={good}"),
            format!("t={NOW},v1=xyz"),
            format!("t={NOW},v1=abc"),
            format!("t={NOW},v1="),
        ] {
            assert!(
                matches!(
                    verify(Some(&bad), BODY, SECRET, NOW),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn empty_secret_refuses_everything() {
        let h = header(NOW, &[sign("", NOW, BODY)]);
        assert_eq!(
            verify(Some(&h), BODY, "", NOW),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn messages_are_clear() {
        assert!(SignatureError::Missing.to_string().contains("missing"));
        assert!(
            SignatureError::OutsideTolerance {
                timestamp: 1,
                now: 1000
            }
            .to_string()
            .contains("300 s")
        );
    }
}
