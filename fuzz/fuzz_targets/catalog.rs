//! Catalog documents (`PUT /v1/catalog`): any JSON is parsed and validated as a whole or
//! refused, never a panic; a valid one rates every kind of usage without overflow.
#![no_main]

use ledger::catalog::{Catalog, CatalogDoc, Direction, UsageKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<CatalogDoc>(data) else {
        return;
    };
    let Ok(catalog) = Catalog::validate(1, doc) else {
        return;
    };
    for kind in [
        UsageKind::Message,
        UsageKind::Sms,
        UsageKind::Stt,
        UsageKind::AiTask,
    ] {
        if let Ok(rate) = catalog.unit_rate_micros(kind, None) {
            assert!(rate >= 0);
            let _ = ledger::money::charge_micros(rate, ledger::money::AMOUNT_MAX_MICROS);
        }
    }
    for number in [
        "+14155550123",
        "+18005550123",
        "+442079460000",
        "+4915112345678",
    ] {
        let number_type = ledger::catalog::number_type_of(number);
        for direction in [Direction::Inbound, Direction::Outbound] {
            if let Ok(rate) = catalog.call_rate(direction, number, number_type) {
                for secs in [0, 1, 59, 60, 61, 3_599, 86_400] {
                    let billed = rate.billed_secs(secs);
                    assert!(billed >= secs, "{secs} s billed as {billed} s");
                    assert!(rate.charge_for_secs(billed) >= 0);
                }
            }
        }
    }
});
