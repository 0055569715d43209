//! Amounts: integer micro-units in SQLite, `Decimal` at the edges, never floats.
//!
//! # Units
//!
//! An amount is either credits or money, each in micro-units (1 unit = [`MICROS_PER_UNIT`]), and
//! its name says which:
//! - a name ending in `_micros` alone is **micro-credits**: balances, holds, charges, rates
//!   (credits per unit of usage: a rate's price), journal and history amounts, limits, levels;
//!   `_credits_micros` says the same where the name alone would not
//!   (`auto_recharge_threshold_credits_micros`);
//! - a name ending in `_money_micros` is **money**, in micro-units of the catalog's currency: the
//!   price of a credit and of a plan, top-up bounds, a payment's amount, what a refund or dispute
//!   takes back, auto-recharge's amount and threshold as the customer set them.
//!
//! The rule holds for Rust names. SQL columns and the JSON of the HTTP API keep the names they
//! had (`payments.amount_micros` is money): schema.rs lists the money columns, and the Rust names
//! that read them. Money and credits convert at the credit price, with [`credits_for_money`] and
//! [`money_for_credits`].
//!
//! Charges round up to the micro-credit; conversions of paid money into credits round down.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::{LedgerError, Result};

/// Micro-units in one unit (credit or currency unit): the same scale for both.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// The largest amount any single input may carry: 10^12 units, far beyond any real wallet, and
/// small enough that products of two amounts fit in i128 and sums of many fit in i64.
pub const AMOUNT_MAX_MICROS: i64 = 1_000_000_000_000 * MICROS_PER_UNIT;

/// Converts micro-units to a `Decimal` for JSON ("12.5").
pub fn to_decimal(micros: i64) -> Decimal {
    Decimal::new(micros, 6).normalize()
}

/// Converts a decimal string from input into micro-units. Refuses more than 6 decimals,
/// negative values and values beyond [`AMOUNT_MAX_MICROS`]; zero only when `allow_zero`.
pub fn parse_micros(field: &'static str, text: &str, allow_zero: bool) -> Result<i64> {
    let text = text.trim();
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let plain = |part: &str| {
        !part.is_empty() && part.len() <= 28 && part.bytes().all(|b| b.is_ascii_digit())
    };
    if !plain(whole) || !plain(fraction) {
        return Err(LedgerError::invalid(
            "invalid_amount",
            field,
            format!("{field} must be a decimal number such as \"12.5\""),
        ));
    }
    let value: Decimal = text.parse().map_err(|_| {
        LedgerError::invalid(
            "invalid_amount",
            field,
            format!("{field} must be a decimal number"),
        )
    })?;
    decimal_to_micros(field, value, allow_zero)
}

/// Like [`parse_micros`], for a `Decimal` already parsed.
pub fn decimal_to_micros(field: &'static str, value: Decimal, allow_zero: bool) -> Result<i64> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(LedgerError::invalid(
            "invalid_amount",
            field,
            format!("{field} must not be negative"),
        ));
    }
    if value.is_zero() && !allow_zero {
        return Err(LedgerError::invalid(
            "invalid_amount",
            field,
            format!("{field} must be greater than zero"),
        ));
    }
    // Decimal's `*` panics on overflow: input may be as large as Decimal allows.
    let scaled = value
        .checked_mul(Decimal::from(MICROS_PER_UNIT))
        .ok_or_else(|| {
            LedgerError::invalid("invalid_amount", field, format!("{field} is too large"))
        })?;
    if !scaled.fract().is_zero() {
        return Err(LedgerError::invalid(
            "invalid_amount",
            field,
            format!("{field} has more than 6 decimal places"),
        ));
    }
    let micros = scaled
        .to_i64()
        .filter(|m| *m <= AMOUNT_MAX_MICROS)
        .ok_or_else(|| {
            LedgerError::invalid("invalid_amount", field, format!("{field} is too large"))
        })?;
    Ok(micros)
}

/// `rate x quantity`: micro-credits per unit times micro-units of usage, in micro-credits rounded
/// up (a charge).
pub fn charge_micros(rate_micros: i64, quantity_micros: i64) -> i64 {
    let product = i128::from(rate_micros) * i128::from(quantity_micros);
    let per_unit = i128::from(MICROS_PER_UNIT);
    clamp_i64((product + per_unit - 1).div_euclid(per_unit))
}

/// Micro-credits bought with `money_micros` of currency at `credit_price_money_micros` per
/// credit, rounded down to the micro-credit (a conversion of paid money).
pub fn credits_for_money(money_micros: i64, credit_price_money_micros: i64) -> i64 {
    let numerator = i128::from(money_micros) * i128::from(MICROS_PER_UNIT);
    clamp_i64(numerator.div_euclid(i128::from(credit_price_money_micros.max(1))))
}

/// The currency value of `credits_micros` at `credit_price_money_micros`, in micro-units of the
/// currency (rounded down).
pub fn money_for_credits(credits_micros: i64, credit_price_money_micros: i64) -> i64 {
    let product = i128::from(credits_micros) * i128::from(credit_price_money_micros);
    clamp_i64(product.div_euclid(i128::from(MICROS_PER_UNIT)))
}

/// The currency value of `credits_micros` at `credit_price_money_micros`, in micro-units of the
/// currency rounded up to a whole currency unit (a suggested setting: converted back to credits,
/// it covers at least `credits_micros`). Exact: [`money_for_credits`] first would round down to
/// the micro-unit, and could land on a whole unit the exact value is above.
pub fn whole_money_for_credits_up(credits_micros: i64, credit_price_money_micros: i64) -> i64 {
    let units = fraction_ceil(
        credits_micros,
        credit_price_money_micros,
        MICROS_PER_UNIT * MICROS_PER_UNIT,
    );
    units.saturating_mul(MICROS_PER_UNIT)
}

/// `total x numerator / denominator`, rounded up (used for prorations and partial reversals,
/// where a full fraction must give back exactly `total`).
pub fn fraction_ceil(total: i64, numerator: i64, denominator: i64) -> i64 {
    if denominator <= 0 {
        return 0;
    }
    let product = i128::from(total) * i128::from(numerator);
    let d = i128::from(denominator);
    clamp_i64((product + d - 1).div_euclid(d))
}

/// `total x numerator / denominator`, rounded down (a grant of credits).
pub fn fraction_floor(total: i64, numerator: i64, denominator: i64) -> i64 {
    if denominator <= 0 {
        return 0;
    }
    clamp_i64((i128::from(total) * i128::from(numerator)).div_euclid(i128::from(denominator)))
}

fn clamp_i64(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(parse_micros("a", "12.5", false), Ok(12_500_000));
        assert_eq!(parse_micros("a", "0.000001", false), Ok(1));
        assert!(parse_micros("a", "0.0000001", false).is_err());
        assert!(parse_micros("a", "-1", false).is_err());
        assert!(parse_micros("a", "0", false).is_err());
        assert_eq!(parse_micros("a", "0", true), Ok(0));
        assert!(parse_micros("a", "1e3", false).is_err());
        assert!(parse_micros("a", "abc", false).is_err());
        assert!(parse_micros("a", "99999999999999999999", false).is_err());
        let largest = Decimal::MAX;
        assert_eq!(
            decimal_to_micros("a", largest, false).map_err(|e| e.code()),
            Err("invalid_amount")
        );
        assert!(parse_micros("a", "79228162514264337593543950335", false).is_err());
        assert_eq!(to_decimal(12_500_000).to_string(), "12.5");
        assert_eq!(to_decimal(-3).to_string(), "-0.000003");
    }

    #[test]
    fn rounding_directions() {
        // 0.333333 credits/min for 1.5 min = 0.4999995 -> charged 0.5 (up).
        assert_eq!(charge_micros(333_333, 1_500_000), 500_000);
        // 10 currency at 3 per credit = 3.333333... credits -> 3.333333 (down).
        assert_eq!(credits_for_money(10_000_000, 3_000_000), 3_333_333);
        // R14: 5,000 credits x 20/30 = 3,333.333333 (down: a grant).
        assert_eq!(fraction_floor(5_000_000_000, 20, 30), 3_333_333_333);
        assert_eq!(fraction_ceil(10, 1, 3), 4);
        // 14 credits at 1.5 = 21 exactly; 14.000001 credits = 21.0000015: 22; a micro-credit's
        // worth is a whole unit.
        assert_eq!(
            whole_money_for_credits_up(14_000_000, 1_500_000),
            21_000_000
        );
        assert_eq!(
            whole_money_for_credits_up(14_000_001, 1_500_000),
            22_000_000
        );
        assert_eq!(whole_money_for_credits_up(1, 1_000_000), 1_000_000);
        assert_eq!(whole_money_for_credits_up(0, 1_000_000), 0);
        // 3 credits at 0.333333 = 0.999999: one unit, where a value of exactly 1 stays 1.
        assert_eq!(whole_money_for_credits_up(3_000_000, 333_333), 1_000_000);
        assert_eq!(whole_money_for_credits_up(3_000_000, 333_334), 2_000_000);
        // 0.999999 credits at 1.000002 are worth 1.000000999998: money_for_credits rounds that
        // down to exactly 1, the exact value rounds up to 2.
        assert_eq!(money_for_credits(999_999, 1_000_002), 1_000_000);
        assert_eq!(whole_money_for_credits_up(999_999, 1_000_002), 2_000_000);
    }
}
