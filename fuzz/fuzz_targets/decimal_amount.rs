//! Decimal amounts from JSON (`ledger::money::parse_micros`) and the arithmetic on them: never
//! panics (overflow checks are on in fuzz builds), round-trips exactly, charges round up.
#![no_main]

use ledger::money;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for allow_zero in [false, true] {
        if let Ok(micros) = money::parse_micros("amount", text, allow_zero) {
            assert!(
                micros >= 0 && micros <= money::AMOUNT_MAX_MICROS,
                "{text:?} -> {micros}"
            );
            assert!(allow_zero || micros > 0);
            // What we print parses back to the same amount.
            let printed = money::to_decimal(micros).to_string();
            assert_eq!(
                money::parse_micros("amount", &printed, true).ok(),
                Some(micros),
                "{text:?} printed as {printed:?}"
            );
            // Charges round up, conversions round down, never past the exact value.
            for rate in [1, 7, 999_999, 1_000_000, 250_000, money::AMOUNT_MAX_MICROS] {
                let charge = money::charge_micros(rate, micros);
                let exact = i128::from(rate) * i128::from(micros);
                if (exact + 999_999) / 1_000_000 > i128::from(i64::MAX) {
                    // Beyond any balance: saturates (and is then refused as unaffordable).
                    assert_eq!(charge, i64::MAX);
                } else {
                    assert!(i128::from(charge) * 1_000_000 >= exact);
                    assert!(i128::from(charge) * 1_000_000 - exact < 1_000_000);
                }
                let credits = money::credits_for_money(micros, rate);
                assert!(i128::from(credits) * i128::from(rate) <= i128::from(micros) * 1_000_000);
            }
            let third = money::fraction_ceil(micros, 1, 3);
            assert!(i128::from(third) * 3 >= i128::from(micros));
            assert_eq!(money::fraction_ceil(micros, 30, 30), micros);
            assert_eq!(money::fraction_floor(micros, 30, 30), micros);
        }
    }
});
