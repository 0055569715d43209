//! Stripe event parsing (components/stripe-webhook/src/event.rs, compiled here as it is): any
//! verified body gives an event or a 400 message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../components/stripe-webhook/src/event.rs"]
mod event;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = event::parse(data) {
        // A parsed event is a JSON object with the id and type it reports.
        let value: serde_json::Value = serde_json::from_slice(data).expect("parsed, so JSON");
        assert_eq!(value["id"].as_str(), Some(event.id.as_str()));
        assert_eq!(value["type"].as_str(), Some(event.kind.as_str()));
    }
});
