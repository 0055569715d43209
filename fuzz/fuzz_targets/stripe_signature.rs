//! `Stripe-Signature` verification (`stripe_client::webhook::signature`): never panics, and
//! accepts exactly what is signed with the secret.
//!
//! Input: the header line, a newline, then the body.
#![no_main]

use hmac::{Hmac, KeyInit as _, Mac as _};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use stripe_client::webhook::signature;

const SECRET: &str = "whsec_fuzz";
const NOW: i64 = 1_800_000_000;

fn sign(timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let result = signature::verify(Some(header), body, SECRET, NOW);
    if result.is_ok() {
        // Accepted: then some v1 in it is the true signature of this body at its timestamp.
        let parsed = signature::parse_header(header).expect("accepted header parses");
        let expected = sign(parsed.timestamp, body);
        assert!(
            header.to_ascii_lowercase().contains(&expected),
            "accepted a signature that is not ours: {header:?}"
        );
    }
    // What we sign is accepted, even with the fuzzed header's items around it; one flipped
    // byte of the body is refused.
    let signed = format!("t={NOW},v1={},{header}", sign(NOW, body));
    if signature::parse_header(&signed).is_ok() {
        assert_eq!(signature::verify(Some(&signed), body, SECRET, NOW), Ok(()));
        if let Some(first) = body.first() {
            let mut tampered = body.to_vec();
            tampered[0] = first ^ 1;
            let clean = format!("t={NOW},v1={}", sign(NOW, body));
            assert!(signature::verify(Some(&clean), &tampered, SECRET, NOW).is_err());
        }
    }
});
