//! Frontend token verification (`spin_adapter::verify_jwt`): never panics; accepts only tokens
//! signed HS256 with the secret; a token we sign over fuzzed claims verifies or is refused as
//! malformed, never half-accepted.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: &[u8] = b"fuzz-jwt-secret-of-reasonable-length";
const NOW: i64 = 1_800_000_000;

fn sign(header_b64: &str, claims_b64: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(format!("{header_b64}.{claims_b64}").as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fuzz_target!(|data: &[u8]| {
    // 1. The raw input as a token.
    if let Ok(token) = std::str::from_utf8(data)
        && spin_adapter::verify_jwt(token, SECRET, NOW).is_ok()
    {
        let mut parts = token.split('.');
        let (header, claims, signature) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let decoded = URL_SAFE_NO_PAD
            .decode(header)
            .expect("accepted header is base64");
        let header_json: serde_json::Value =
            serde_json::from_slice(&decoded).expect("accepted header is JSON");
        assert_eq!(header_json["alg"], "HS256", "accepted alg {header_json}");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(signature).ok(),
            URL_SAFE_NO_PAD.decode(sign(header, claims)).ok(),
            "accepted a signature that is not ours"
        );
    }
    // 2. The input as claims, signed properly.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(data);
    let token = format!("{header}.{claims}.{}", sign(&header, &claims));
    if let Ok(verified) = spin_adapter::verify_jwt(&token, SECRET, NOW) {
        assert!(verified.exp > NOW, "accepted an expired token");
        assert!(!verified.workspace_id.is_empty());
        assert!(verified.nbf.is_none_or(|nbf| nbf <= NOW));
    }
    // 3. The same with a wrong secret or alg none: always refused.
    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    assert!(spin_adapter::verify_jwt(&format!("{none}.{claims}."), SECRET, NOW).is_err());
    assert!(spin_adapter::verify_jwt(&token, b"another-secret", NOW).is_err());
});
