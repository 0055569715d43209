//! Request fingerprints (R8): what a replay of an event id or a call id is compared with.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{LedgerError, Result};

/// A request's fingerprint: the SHA-256 of its JSON (64 hex digits) is what is stored, a fixed
/// 64 bytes per replay record instead of the whole request.
#[derive(Debug, Clone)]
pub(crate) struct Fingerprint {
    json: String,
    hash: String,
}

impl Fingerprint {
    /// The fingerprint of `request` (`field` names it in the error if it cannot be serialised).
    pub(crate) fn of<T: Serialize>(field: &'static str, request: &T) -> Result<Self> {
        let json = serde_json::to_string(request)
            .map_err(|e| LedgerError::invalid("validation_error", field, e.to_string()))?;
        let hash = sha256_hex(&[json.as_bytes()]);
        Ok(Self { json, hash })
    }

    /// What a replay record stores.
    pub(crate) fn stored(&self) -> &str {
        &self.hash
    }

    /// Whether a stored fingerprint is this request's. Records written before fingerprints were
    /// hashed hold the request's JSON itself, and still match it.
    pub(crate) fn matches(&self, stored: &str) -> bool {
        stored == self.hash || stored == self.json
    }
}

/// Lower-case hex of the SHA-256 of `parts`, each followed by a NUL separator except the last
/// (so ("ab", "c") and ("a", "bc") differ): the ledger's request fingerprints, and the
/// components' idempotency records and Stripe idempotency keys.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    use std::fmt::Write as _;
    let mut hasher = Sha256::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hasher.update([0]);
        }
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_separates_parts() {
        assert_eq!(
            sha256_hex(&[b"abc"]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(sha256_hex(&[b"ab", b"c"]), sha256_hex(&[b"a", b"bc"]));
    }

    #[test]
    fn a_fingerprint_is_the_sha256_of_the_json_and_matches_either_form() {
        let fingerprint = Fingerprint::of("event", &serde_json::json!({"id": "e1"})).expect("json");
        // sha256 of `{"id":"e1"}` (Python's hashlib).
        let expected = "1ad7401339abf0befd878e710eefc4ba4f65bfd915845550ec7d4fd9db2bda02";
        assert_eq!(fingerprint.stored(), expected);
        assert!(fingerprint.matches(expected));
        assert!(fingerprint.matches(r#"{"id":"e1"}"#));
        assert!(!fingerprint.matches(r#"{"id":"e2"}"#));
    }
}
