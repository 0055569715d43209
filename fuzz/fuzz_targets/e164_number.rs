//! E.164 numbers (`ledger::catalog::validate_e164`, `number_type_of`) and the longest-prefix
//! rate lookup on the shipped catalog: never panics; what is accepted is `+` and 2-15 digits.
#![no_main]

use ledger::catalog::{self, Catalog, Direction};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn default_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| Catalog::default_catalog().expect("the shipped catalog is valid"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(number) = std::str::from_utf8(data) else {
        return;
    };
    let valid = catalog::validate_e164("to", number).is_ok();
    if valid {
        let digits = &number[1..];
        assert!(number.starts_with('+') && (2..=15).contains(&digits.len()));
        assert!(digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'));
        let number_type = catalog::number_type_of(number);
        for direction in [Direction::Inbound, Direction::Outbound] {
            if let Ok(rate) = default_catalog().call_rate(direction, number, number_type) {
                assert!(rate.per_minute_micros >= 0 && rate.increment_secs > 0);
                let billed = rate.billed_secs(86_400);
                assert!(billed >= 86_400);
                assert!(rate.charge_for_secs(billed) >= 0);
            }
        }
    }
});
