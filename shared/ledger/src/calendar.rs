//! Calendar math for billing cycles (R13, R14) and daily limits (R6), with jiff.
//!
//! Cycles start at 00:00 UTC on the anchor day of each month, clamped to the month's last day
//! (anchor 31: Jan 31, Feb 28/29, Mar 31). Times are Unix seconds throughout the ledger.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::{LedgerError, Result};

/// [`SECS_PER_DAY`] as a literal, for SQL text built with `concat!` (which takes literals, not
/// constants): the schema's and the audit's day numbers are the same number as Rust's.
macro_rules! secs_per_day {
    () => {
        86400
    };
}
pub(crate) use secs_per_day;

/// Seconds in a UTC day (Unix time has no leap seconds): `secs.div_euclid(SECS_PER_DAY)` is the
/// UTC day number (`usage_daily.day`), and the longest time a setting or a call may span.
pub const SECS_PER_DAY: i64 = secs_per_day!();

fn date_error(message: impl Into<String>) -> LedgerError {
    LedgerError::invalid("validation_error", "time", message)
}

/// The UTC date of a Unix time.
pub fn utc_date(secs: i64) -> Result<Date> {
    let ts = Timestamp::from_second(secs).map_err(|e| date_error(e.to_string()))?;
    Ok(ts.to_zoned(TimeZone::UTC).date())
}

/// Midnight UTC of `date`, as Unix seconds.
pub fn midnight_utc(date: Date) -> Result<i64> {
    let zoned = date
        .to_zoned(TimeZone::UTC)
        .map_err(|e| date_error(e.to_string()))?;
    Ok(zoned.timestamp().as_second())
}

/// The day `anchor_day` of the month of `date`, clamped to that month's last day.
pub fn anchored_in_month(date: Date, anchor_day: i8) -> Date {
    let day = anchor_day.min(date.days_in_month());
    Date::new(date.year(), date.month(), day).unwrap_or(date)
}

/// The start of the cycle after the one starting on `start` (same anchor, next month).
pub fn next_cycle_start(start: Date, anchor_day: i8) -> Result<Date> {
    let first_of_next = start
        .first_of_month()
        .checked_add(1.month())
        .map_err(|e| date_error(e.to_string()))?;
    Ok(anchored_in_month(first_of_next, anchor_day))
}

/// The cycle `[start, end)` (midnight UTC times) that contains `now_secs`, for an anchor day.
pub fn cycle_containing(now_secs: i64, anchor_day: i8) -> Result<(i64, i64)> {
    let today = utc_date(now_secs)?;
    let this_month = anchored_in_month(today, anchor_day);
    let start = if this_month <= today {
        this_month
    } else {
        let first_of_prev = today
            .first_of_month()
            .checked_sub(1.month())
            .map_err(|e| date_error(e.to_string()))?;
        anchored_in_month(first_of_prev, anchor_day)
    };
    let end = next_cycle_start(start, anchor_day)?;
    Ok((midnight_utc(start)?, midnight_utc(end)?))
}

/// Whole days between two midnight-UTC times, or from `now`'s UTC date to `end` (R14).
pub fn days_between(from_secs: i64, to_secs: i64) -> Result<i64> {
    let from = utc_date(from_secs)?;
    let to = utc_date(to_secs)?;
    let span = from.until(to).map_err(|e| date_error(e.to_string()))?;
    Ok(i64::from(span.get_days()))
}

/// The local date (YYYY-MM-DD) of `now_secs` in the IANA time zone `tz` (daily limits reset at
/// local midnight).
pub fn local_day(now_secs: i64, tz: &str) -> Result<String> {
    let zone = TimeZone::get(tz).map_err(|_| date_error(format!("unknown time zone {tz}")))?;
    let ts = Timestamp::from_second(now_secs).map_err(|e| date_error(e.to_string()))?;
    Ok(ts.to_zoned(zone).date().to_string())
}

/// A calendar month of a time zone: what the auto-recharge monthly cap counts in (R11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMonth {
    /// `YYYY-MM`.
    pub label: String,
    /// Local midnight of its first day, as Unix seconds.
    pub start_secs: i64,
    /// Local midnight of the next month's first day (exclusive).
    pub end_secs: i64,
}

/// The calendar month of `now_secs` in the IANA time zone `tz`, with its bounds: a month begins
/// at local midnight of its first day, whatever UTC says.
pub fn local_month(now_secs: i64, tz: &str) -> Result<LocalMonth> {
    let zone = TimeZone::get(tz).map_err(|_| date_error(format!("unknown time zone {tz}")))?;
    let ts = Timestamp::from_second(now_secs).map_err(|e| date_error(e.to_string()))?;
    let first = ts.to_zoned(zone.clone()).date().first_of_month();
    let next = first
        .checked_add(1.month())
        .map_err(|e| date_error(e.to_string()))?;
    let midnight = |date: Date| {
        date.to_zoned(zone.clone())
            .map(|zoned| zoned.timestamp().as_second())
            .map_err(|e| date_error(e.to_string()))
    };
    Ok(LocalMonth {
        label: first.strftime("%Y-%m").to_string(),
        start_secs: midnight(first)?,
        end_secs: midnight(next)?,
    })
}

/// Checks an IANA time zone name.
pub fn validate_timezone(tz: &str) -> Result<()> {
    TimeZone::get(tz).map(|_| ()).map_err(|_| {
        LedgerError::invalid(
            "validation_error",
            "timezone",
            format!("unknown time zone {tz}"),
        )
    })
}

/// RFC 3339 UTC text of a Unix time.
pub fn rfc3339(secs: i64) -> String {
    Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |ts| ts.to_string())
}

/// Parses RFC 3339 text into Unix seconds.
pub fn parse_rfc3339(field: &'static str, text: &str) -> Result<i64> {
    text.parse::<Timestamp>()
        .map(|ts| ts.as_second())
        .map_err(|_| {
            LedgerError::invalid(
                "validation_error",
                field,
                format!("{field} must be an RFC 3339 time"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn secs(d: Date) -> i64 {
        midnight_utc(d).expect("valid date")
    }

    #[test]
    fn anchor_31_through_february() {
        let jan31 = date(2027, 1, 31);
        let feb = next_cycle_start(jan31, 31).expect("next");
        assert_eq!(feb, date(2027, 2, 28));
        assert_eq!(next_cycle_start(feb, 31).expect("next"), date(2027, 3, 31));
        assert_eq!(
            next_cycle_start(date(2028, 1, 31), 31).expect("next"),
            date(2028, 2, 29)
        );
        assert_eq!(
            cycle_containing(secs(date(2027, 3, 15)), 31).expect("cycle"),
            (secs(date(2027, 2, 28)), secs(date(2027, 3, 31)))
        );
        assert_eq!(
            cycle_containing(secs(date(2027, 3, 31)), 31).expect("cycle"),
            (secs(date(2027, 3, 31)), secs(date(2027, 4, 30)))
        );
    }

    #[test]
    fn local_midnight() {
        // 2026-11-21 03:00 UTC is still the 20th in New York.
        let t = secs(date(2026, 11, 21)) + 3 * 3600;
        assert_eq!(local_day(t, "America/New_York").expect("tz"), "2026-11-20");
        assert_eq!(local_day(t, "UTC").expect("tz"), "2026-11-21");
        assert!(local_day(t, "Mars/Olympus").is_err());
    }

    #[test]
    fn local_months_begin_at_local_midnight() {
        // 2026-12-01 03:00 UTC is still November 30 in New York (UTC-5 in winter).
        let t = secs(date(2026, 12, 1)) + 3 * 3600;
        let november = local_month(t, "America/New_York").expect("tz");
        assert_eq!(november.label, "2026-11");
        // November 1 began at 04:00 UTC (still daylight time), December 1 at 05:00 UTC.
        assert_eq!(november.start_secs, secs(date(2026, 11, 1)) + 4 * 3600);
        assert_eq!(november.end_secs, secs(date(2026, 12, 1)) + 5 * 3600);
        let utc = local_month(t, "UTC").expect("tz");
        assert_eq!(
            (utc.label.as_str(), utc.start_secs, utc.end_secs),
            ("2026-12", secs(date(2026, 12, 1)), secs(date(2027, 1, 1)))
        );
        assert!(local_month(t, "Mars/Olympus").is_err());
    }

    #[test]
    fn days() {
        assert_eq!(
            days_between(secs(date(2026, 11, 11)), secs(date(2026, 12, 1))).expect("days"),
            20
        );
    }
}
