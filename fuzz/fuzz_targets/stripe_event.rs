//! Stripe event parsing (`stripe_client::webhook::parse_event`): any verified body gives an
//! event or a 400 message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stripe_client::webhook;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = webhook::parse_event(data) {
        // A parsed event is a JSON object with the id and type it reports.
        let value: serde_json::Value = serde_json::from_slice(data).expect("parsed, so JSON");
        assert_eq!(value["id"].as_str(), Some(event.id.as_str()));
        assert_eq!(value["type"].as_str(), Some(event.kind.as_str()));
    }
});
