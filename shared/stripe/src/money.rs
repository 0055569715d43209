//! Money: the ledger's currency micro-units (1 unit = 1,000,000) <-> Stripe's minor units.
//!
//! Stripe amounts are integers in the currency's smallest unit: cents for two-decimal
//! currencies (USD 10.50 is 1050), whole units for zero-decimal ones (JPY 500 is 500),
//! thousandths for three-decimal ones (KWD 1.250 is 1250, and Stripe wants the last digit 0).
//! ISK is zero-decimal but sent as two-decimal with `00`: whole units only. An amount with a
//! fraction of a minor unit is refused, never rounded.

use crate::error::StripeError;

/// Micro-units in one currency unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// Stripe's zero-decimal currencies (lower case).
pub const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Stripe's three-decimal currencies (lower case).
pub const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// Decimal places of `currency`'s minor unit as Stripe counts them (0, 2 or 3).
pub fn exponent(currency: &str) -> u32 {
    let c = currency.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&c.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&c.as_str()) {
        3
    } else {
        2
    }
}

fn micros_per_minor(currency: &str) -> i64 {
    // 10^(6 - exponent): 1 for micro, 10_000 for cents, 1_000_000 for zero-decimal.
    10_i64.pow(6 - exponent(currency))
}

/// Converts money in micro-units of `currency` to Stripe's minor units. Refuses negative amounts
/// and amounts with a fraction of a minor unit (or, for ISK and three-decimal currencies, amounts
/// Stripe does not accept).
pub fn to_minor(money_micros: i64, currency: &str) -> Result<i64, StripeError> {
    if money_micros < 0 {
        return Err(StripeError::BadInput(format!(
            "negative amount {money_micros} micro-units of {currency}"
        )));
    }
    let step = micros_per_minor(currency);
    if money_micros % step != 0 {
        return Err(StripeError::BadInput(format!(
            "{} {} has a fraction of the smallest unit Stripe charges",
            display(money_micros),
            currency.to_ascii_uppercase()
        )));
    }
    let minor = money_micros / step;
    let c = currency.to_ascii_lowercase();
    if c == "isk" {
        if money_micros % MICROS_PER_UNIT != 0 {
            return Err(StripeError::BadInput(format!(
                "{} ISK: Stripe takes whole krónur only",
                display(money_micros)
            )));
        }
    } else if THREE_DECIMAL.contains(&c.as_str()) && minor % 10 != 0 {
        return Err(StripeError::BadInput(format!(
            "{} {}: Stripe wants the last of three decimals to be 0",
            display(money_micros),
            c.to_ascii_uppercase()
        )));
    }
    Ok(minor)
}

/// Converts Stripe's minor units to money in micro-units of `currency` (refuses amounts that
/// overflow).
pub fn from_minor(minor: i64, currency: &str) -> Result<i64, StripeError> {
    minor
        .checked_mul(micros_per_minor(currency))
        .ok_or_else(|| StripeError::Decode(format!("amount {minor} {currency} overflows")))
}

fn display(micros: i64) -> String {
    let units = micros / MICROS_PER_UNIT;
    let frac = (micros % MICROS_PER_UNIT).abs();
    if frac == 0 {
        units.to_string()
    } else {
        let s = format!("{units}.{frac:06}");
        s.trim_end_matches('0').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_decimal() {
        assert_eq!(to_minor(10_500_000, "usd").unwrap(), 1050);
        assert_eq!(to_minor(10_500_000, "EUR").unwrap(), 1050);
        assert_eq!(to_minor(10_000, "usd").unwrap(), 1);
        assert_eq!(to_minor(0, "usd").unwrap(), 0);
        assert_eq!(from_minor(1050, "usd").unwrap(), 10_500_000);
        assert!(to_minor(10_005_000, "usd").is_err(), "half a cent");
        assert!(to_minor(1, "gbp").is_err(), "one micro");
        let err = to_minor(12_345_600, "usd").unwrap_err();
        assert!(err.to_string().contains("12.3456 USD"), "{err}");
    }

    #[test]
    fn zero_decimal() {
        assert_eq!(exponent("JPY"), 0);
        assert_eq!(to_minor(500_000_000, "jpy").unwrap(), 500);
        assert_eq!(to_minor(1_000_000, "krw").unwrap(), 1);
        assert_eq!(from_minor(500, "jpy").unwrap(), 500_000_000);
        assert!(to_minor(500_500_000, "jpy").is_err(), "half a yen");
        assert!(to_minor(10_000, "krw").is_err());
    }

    #[test]
    fn three_decimal_and_special_cases() {
        assert_eq!(exponent("kwd"), 3);
        assert_eq!(to_minor(1_250_000, "kwd").unwrap(), 1250);
        assert_eq!(from_minor(1250, "kwd").unwrap(), 1_250_000);
        assert!(to_minor(1_255_000, "kwd").is_err(), "last digit must be 0");
        assert_eq!(to_minor(100_000_000, "isk").unwrap(), 10_000);
        assert!(to_minor(100_500_000, "isk").is_err(), "whole krónur only");
    }

    #[test]
    fn refusals() {
        assert!(to_minor(-1_000_000, "usd").is_err());
        assert!(from_minor(i64::MAX, "jpy").is_err());
    }
}
