//! The runway of the billing summary (docs/billing-rules.md, "Runway"): the average daily spend
//! over the last 7 and 30 UTC days, when the balance runs out at the 7-day rate (plan credits
//! until each cycle ends, then the wallet), and an auto-recharge setting of about 14 days of
//! usage.
//!
//! [`forecast`] is pure; [`load`] reads what it needs with one statement: the workspace row and
//! one indexed range over `usage_daily` (schema V10, the spend per workspace and UTC day), never
//! the history itself.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::calendar::{self, SECS_PER_DAY};
use crate::catalog::{Catalog, PlanTerms};
use crate::money;
use crate::row::{i, int, t};
use crate::statuses::SubscriptionStanding;
use crate::storage::Storage;
use crate::workspace::WorkspaceState;
use crate::{LedgerError, Result};

/// The short window: today and the 6 days before (UTC).
pub const SHORT_WINDOW_DAYS: i64 = 7;
/// The long window: today and the 29 days before (UTC).
pub const LONG_WINDOW_DAYS: i64 = 30;
/// How far ahead the forecast looks.
pub const HORIZON_DAYS: i64 = 365;
/// Days of usage the suggested threshold, and the suggested amount, each stand for.
pub const SUGGESTION_DAYS: i64 = 14;
/// Less history than this (in the long window) is no basis for a forecast.
pub const HISTORY_MIN_SECS: i64 = SECS_PER_DAY;
/// Most cycle ends the forecast walks through before the horizon: the first is after now and
/// monthly cycles last at least 28 days, so at most 14 end within 365 days (15 if the stored end
/// is off its anchor, which the next end corrects); one more pass reaches the horizon.
const HORIZON_CYCLE_ENDS_MAX: usize = 16;

/// Where the forecast stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunwayStatus {
    /// The balance runs out within the horizon, at `runs_out_at`.
    Forecast,
    /// The balance lasts beyond the horizon at the 7-day rate (or nothing was spent in 7 days).
    BeyondHorizon,
    /// Nothing was spent in the 30-day window.
    NoUsage,
    /// Less than a day of history (a workspace created under 24 hours ago): no guess.
    InsufficientHistory,
}

/// An auto-recharge setting of about [`SUGGESTION_DAYS`] days of usage, in the currency (as
/// `PUT .../auto-recharge` takes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuggestedAutoRecharge {
    /// Recharge when the wallet's value drops below this: whole currency units.
    pub threshold: Decimal,
    /// Charge this much: whole currency units, within the top-up bounds.
    pub amount: Decimal,
}

/// `runway` of the billing summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Runway {
    /// Which of the answers below there is.
    pub status: RunwayStatus,
    /// Days of the 30-day window the workspace existed, one decimal, rounded down.
    pub history_days: Decimal,
    /// Credits a day over the 7-day window (null without enough history).
    pub average_daily_spend_7d: Option<Decimal>,
    /// Credits a day over the 30-day window (null without enough history).
    pub average_daily_spend_30d: Option<Decimal>,
    /// Days until the balance runs out, one decimal, rounded down (status `forecast` only).
    pub days_left: Option<Decimal>,
    /// When the balance runs out, RFC 3339 (status `forecast` only).
    pub runs_out_at: Option<String>,
    /// Null when there is no basis (`insufficient_history`, `no_usage`).
    pub suggested_auto_recharge: Option<SuggestedAutoRecharge>,
}

/// The catalog settings the suggestion is expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    /// Currency micros per credit.
    pub credit_price_money_micros: i64,
    /// Smallest charge, currency micros.
    pub topup_min_money_micros: i64,
    /// Largest charge, currency micros.
    pub topup_max_money_micros: i64,
}

impl Pricing {
    /// The catalog's.
    pub fn of(catalog: &Catalog) -> Self {
        Self {
            credit_price_money_micros: catalog.credit_price_money_micros,
            topup_min_money_micros: catalog.topup_min_money_micros,
            topup_max_money_micros: catalog.topup_max_money_micros,
        }
    }
}

/// A plan's cycles as renewal will carry them out (`plans::renew_workspace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycles {
    /// When the current cycle ends: its plan credits are usable until then.
    pub cycle_end_at: i64,
    /// The day of the month cycles start on (clamped to shorter months).
    pub anchor_day: i8,
    /// What the current plan keeps of unused plan credits at the cycle's end.
    pub rollover_max_micros: i64,
    /// What each later cycle grants: its plan's monthly credits if it renews with credits
    /// ([`renews_with_credits`]), else 0.
    pub next_grant_micros: i64,
    /// What the later cycles' plan keeps at each cycle's end.
    pub next_rollover_max_micros: i64,
}

/// A credit grant the forecast spends (docs/grants.md, G7): one that pays for every usage of
/// every agent and is in force now. Grants for some usage or one agent are left out (the forecast
/// has one rate for all usage, and cannot tell what part of it they would pay: leaving them out
/// errs early, as the forecast does), as are scheduled ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantOutlook {
    /// Credits it has not held by calls in progress.
    pub available_micros: i64,
    /// When what is left of it expires; never if `None`.
    pub expires_at: Option<i64>,
}

/// Everything the forecast depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlook {
    /// The workspace's time (its test clock, if set).
    pub now_secs: i64,
    /// When the workspace was created: the windows do not reach before it.
    pub created_at_secs: i64,
    /// Usage spend on the days of the 7-day window.
    pub spent_7d_micros: i64,
    /// Usage spend on the days of the 30-day window.
    pub spent_30d_micros: i64,
    /// Plan credits not held by calls in progress.
    pub plan_available_micros: i64,
    /// Wallet credits not held by calls in progress (never below zero).
    pub wallet_available_micros: i64,
    /// The grants it spends after the plan and before the wallet, in spending order (R24).
    pub grants: Vec<GrantOutlook>,
    /// The plan's cycles; `None` without a plan (the balance just runs down).
    pub cycles: Option<Cycles>,
    /// For the suggestion.
    pub pricing: Pricing,
}

/// The UTC day numbers `(first day of the 30-day window, first day of the 7-day window, today)`.
pub fn window_days(now_secs: i64) -> (i64, i64, i64) {
    let today = now_secs.div_euclid(SECS_PER_DAY);
    (
        today - (LONG_WINDOW_DAYS - 1),
        today - (SHORT_WINDOW_DAYS - 1),
        today,
    )
}

/// Whether a cycle of a plan whose fee is `next_price_money_micros` will be granted its credits: a
/// free plan always, a paid one only while the subscription is in good standing (past due or
/// canceled, no invoice is paid that renewal could grant for).
pub fn renews_with_credits(next_price_money_micros: i64, standing: SubscriptionStanding) -> bool {
    next_price_money_micros == 0 || standing == SubscriptionStanding::Active
}

/// The workspace's cycles as renewal will carry them out: the current plan's rollover at this
/// cycle's end, then the next plan's terms (the pending downgrade's, else the current plan's, as
/// the catalog has them; a plan the catalog dropped keeps its terms in force). `None` without a
/// plan. `plan_price_money_micros` is the fee of the plan in force.
pub fn cycles_of(
    ws: &WorkspaceState,
    catalog: &Catalog,
    plan_price_money_micros: i64,
) -> Option<Cycles> {
    let (Some(plan_id), Some(anchor_day), Some(cycle_end_at)) =
        (&ws.plan_id, ws.cycle_anchor_day, ws.cycle_end_at)
    else {
        return None;
    };
    let next_plan_id = ws.pending_plan_id.as_deref().unwrap_or(plan_id);
    let next = catalog
        .plan(next_plan_id)
        .cloned()
        .unwrap_or_else(|_| PlanTerms {
            id: next_plan_id.to_owned(),
            price_money_micros: plan_price_money_micros,
            monthly_credits_micros: ws.plan_monthly_credits_micros,
            rollover_max_micros: ws.plan_rollover_max_micros,
        });
    let renews = renews_with_credits(
        next.price_money_micros,
        SubscriptionStanding::parse(&ws.subscription_status),
    );
    Some(Cycles {
        cycle_end_at,
        anchor_day: i8::try_from(anchor_day).unwrap_or(1),
        rollover_max_micros: ws.plan_rollover_max_micros.unwrap_or(0),
        next_grant_micros: if renews {
            next.monthly_credits_micros
        } else {
            0
        },
        next_rollover_max_micros: next.rollover_max_micros.unwrap_or(0),
    })
}

/// The forecast (docs/billing-rules.md, "Runway").
pub fn forecast(outlook: &Outlook) -> Result<Runway> {
    let (first_day_30d, first_day_7d, _) = window_days(outlook.now_secs);
    let covered_secs = |first_day: i64| {
        let start = (first_day * SECS_PER_DAY).max(outlook.created_at_secs);
        (outlook.now_secs - start).max(0)
    };
    let (covered_7d_secs, covered_30d_secs) =
        (covered_secs(first_day_7d), covered_secs(first_day_30d));
    let mut runway = Runway {
        status: RunwayStatus::InsufficientHistory,
        history_days: tenths_of_days(covered_30d_secs),
        average_daily_spend_7d: None,
        average_daily_spend_30d: None,
        days_left: None,
        runs_out_at: None,
        suggested_auto_recharge: None,
    };
    if covered_30d_secs < HISTORY_MIN_SECS {
        return Ok(runway);
    }
    if outlook.spent_30d_micros <= 0 {
        runway.status = RunwayStatus::NoUsage;
        runway.average_daily_spend_7d = Some(money::to_decimal(0));
        runway.average_daily_spend_30d = Some(money::to_decimal(0));
        return Ok(runway);
    }
    // The 7-day window covers at least the day the 30-day one does: never divided by zero.
    let average_7d_micros = average_daily_micros(outlook.spent_7d_micros, covered_7d_secs);
    let average_30d_micros = average_daily_micros(outlook.spent_30d_micros, covered_30d_secs);
    runway.average_daily_spend_7d = Some(money::to_decimal(average_7d_micros));
    runway.average_daily_spend_30d = Some(money::to_decimal(average_30d_micros));
    match runs_out_at(outlook, average_7d_micros)? {
        Some(at) => {
            runway.status = RunwayStatus::Forecast;
            runway.days_left = Some(tenths_of_days(at - outlook.now_secs));
            runway.runs_out_at = Some(calendar::rfc3339(at));
        }
        None => runway.status = RunwayStatus::BeyondHorizon,
    }
    // The higher rate: a quiet week does not shrink the safety margin.
    runway.suggested_auto_recharge = Some(suggest(
        average_7d_micros.max(average_30d_micros),
        outlook.pricing,
    ));
    Ok(runway)
}

/// Spend per day over `covered_secs`, rounded up to the micro-credit (the forecast errs early).
fn average_daily_micros(spent_micros: i64, covered_secs: i64) -> i64 {
    money::fraction_ceil(spent_micros, SECS_PER_DAY, covered_secs)
}

/// Days, one decimal, rounded down ("29.5").
fn tenths_of_days(secs: i64) -> Decimal {
    Decimal::new(secs.max(0).div_euclid(SECS_PER_DAY / 10), 1)
}

/// When the balance runs out spending `rate_micros_per_day`, `None` if not within the horizon
/// (or never, at a rate of zero). Spend takes plan credits first, then the grants in their order,
/// then the wallet (R24); plan credits are usable until their cycle ends, when renewal keeps the
/// rollover and grants the next cycle; a grant is usable until it expires.
fn runs_out_at(outlook: &Outlook, rate_micros_per_day: i64) -> Result<Option<i64>> {
    if rate_micros_per_day <= 0 {
        return Ok(None);
    }
    // Balances in micro-credits x seconds per day: spending `rate` a day then takes exactly
    // `rate` of them a second, so every step below is exact integer arithmetic.
    let scaled = |micros: i64| i128::from(micros.max(0)) * i128::from(SECS_PER_DAY);
    let rate = i128::from(rate_micros_per_day);
    let now = outlook.now_secs;
    let horizon = now + HORIZON_DAYS * SECS_PER_DAY;
    let mut plan = scaled(outlook.plan_available_micros);
    let mut wallet = scaled(outlook.wallet_available_micros);
    let mut grants: Vec<(i128, Option<i64>)> = outlook
        .grants
        .iter()
        .filter(|grant| grant.expires_at.is_none_or(|at| at > now))
        .map(|grant| (scaled(grant.available_micros), grant.expires_at))
        .collect();
    // The plan's cycle ends, and what renewal does at each (no plan: none).
    let mut cycle = match outlook.cycles {
        None => None,
        Some(cycles) => {
            let mut end = cycles.cycle_end_at;
            let mut rollover = scaled(cycles.rollover_max_micros);
            let next_rollover = scaled(cycles.next_rollover_max_micros);
            let next_grant = scaled(cycles.next_grant_micros);
            if end <= now {
                // Renewal is due and has not run yet: it closes every cycle that ended (the
                // first at the plan in force's rollover, any later one at the next plan's) and
                // grants only the cycle in force.
                let (start_in_force, end_in_force) =
                    calendar::cycle_containing(now, cycles.anchor_day)?;
                plan = plan.min(rollover);
                if start_in_force > end {
                    plan = plan.min(next_rollover);
                }
                plan += next_grant;
                (end, rollover) = (end_in_force, next_rollover);
            }
            Some((end, rollover, cycles, next_rollover, next_grant))
        }
    };
    let mut from = now;
    // Each step ends at a cycle end, a grant's expiry or the horizon.
    for _ in 0..HORIZON_CYCLE_ENDS_MAX + grants.len() + 1 {
        let expiry = grants
            .iter()
            .filter(|(left, _)| *left > 0)
            .filter_map(|(_, at)| *at)
            .min();
        let cycle_end = cycle.map(|(end, ..)| end);
        let until = [Some(horizon), expiry, cycle_end]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(horizon);
        let spend = rate * i128::from(until - from);
        let total = plan + grants.iter().map(|(left, _)| left).sum::<i128>() + wallet;
        if spend >= total {
            return Ok(Some(run_down(from, total, rate)));
        }
        let mut rest = spend;
        for source in std::iter::once(&mut plan)
            .chain(grants.iter_mut().map(|(left, _)| left))
            .chain(std::iter::once(&mut wallet))
        {
            let taken = rest.min(*source);
            *source -= taken;
            rest -= taken;
        }
        if until == horizon {
            return Ok(None);
        }
        // What expires now leaves: the grants' unspent part, then the cycle's plan credits
        // beyond the rollover (and the next grant arrives).
        for (left, at) in &mut grants {
            if at.is_some_and(|at| at <= until) {
                *left = 0;
            }
        }
        if let Some((end, rollover, cycles, next_rollover, next_grant)) = cycle
            && end == until
        {
            plan = plan.min(rollover) + next_grant;
            let next_end = calendar::midnight_utc(calendar::next_cycle_start(
                calendar::utc_date(end)?,
                cycles.anchor_day,
            )?)?;
            cycle = Some((next_end, next_rollover, cycles, next_rollover, next_grant));
        }
        from = until;
    }
    Err(crate::guarded::storage(
        "runway: more cycle ends and grant expiries within the horizon than allowed",
    ))
}

/// When `balance` (scaled as in [`runs_out_at`]) is spent from `from_secs`, rounded down to the
/// second.
fn run_down(from_secs: i64, balance: i128, rate: i128) -> i64 {
    from_secs.saturating_add(i64::try_from(balance / rate).unwrap_or(i64::MAX))
}

/// [`SUGGESTION_DAYS`] days at `rate_micros_per_day`, in whole currency units rounded up; the
/// amount also within the top-up bounds, since a recharge outside them would be refused.
fn suggest(rate_micros_per_day: i64, pricing: Pricing) -> SuggestedAutoRecharge {
    let credits_micros = rate_micros_per_day.saturating_mul(SUGGESTION_DAYS);
    let money_micros =
        money::whole_money_for_credits_up(credits_micros, pricing.credit_price_money_micros);
    SuggestedAutoRecharge {
        threshold: money::to_decimal(money_micros),
        amount: money::to_decimal(money_micros.clamp(
            pricing.topup_min_money_micros,
            pricing.topup_max_money_micros,
        )),
    }
}

/// The workspace's creation time and plan fee, and its usage spend on the days `?2..=?4` and
/// `?3..=?4`: a primary-key lookup and a primary-key range of at most 30 rows.
const WINDOWS_SQL: &str =
    "SELECT w.created_at, w.plan_price_micros, COALESCE(SUM(u.spent_micros), 0),
        COALESCE(SUM(CASE WHEN u.day >= ?3 THEN u.spent_micros END), 0)
    FROM workspaces w
    LEFT JOIN usage_daily u ON u.workspace_id = w.id AND u.day BETWEEN ?2 AND ?4
    WHERE w.id = ?1
    GROUP BY w.id";

/// The runway of `ws` at `now_secs` (the workspace's time), spending `grants` after the plan
/// (`grants::runway_of`, or `grants::runway_outlook` of the grants the caller already read):
/// one statement reads the workspace's creation time, its plan's fee and both windows' spend
/// from `usage_daily`.
pub async fn load<S: Storage>(
    db: &S,
    catalog: &Catalog,
    ws: &WorkspaceState,
    now_secs: i64,
    grants: Vec<GrantOutlook>,
) -> Result<Runway> {
    let (first_day_30d, first_day_7d, today) = window_days(now_secs);
    let rows = db
        .query(
            WINDOWS_SQL,
            &[t(&ws.id), i(first_day_30d), i(first_day_7d), i(today)],
        )
        .await?;
    let row = rows
        .first()
        .ok_or(LedgerError::NotFound { what: "workspace" })?;
    let outlook = Outlook {
        now_secs,
        created_at_secs: int(row, 0)?,
        spent_30d_micros: int(row, 2)?,
        spent_7d_micros: int(row, 3)?,
        plan_available_micros: ws.plan_available_micros(),
        wallet_available_micros: ws.wallet_available_micros(),
        grants,
        cycles: cycles_of(ws, catalog, int(row, 1)?),
        pricing: Pricing::of(catalog),
    };
    forecast(&outlook)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDIT: i64 = money::MICROS_PER_UNIT;

    fn at(text: &str) -> i64 {
        calendar::parse_rfc3339("at", text).expect("RFC 3339 literal")
    }

    fn dec(text: &str) -> Decimal {
        text.parse().expect("decimal literal")
    }

    /// Now 2026-11-16T12:00:00Z, the workspace two months old: the 7-day window (Nov 10-16)
    /// covers 6.5 days, the 30-day one (Oct 18-Nov 16) 29.5. Nothing available, no plan.
    fn outlook(spent_7d_micros: i64, spent_30d_micros: i64) -> Outlook {
        Outlook {
            now_secs: at("2026-11-16T12:00:00Z"),
            created_at_secs: at("2026-09-16T00:00:00Z"),
            spent_7d_micros,
            spent_30d_micros,
            plan_available_micros: 0,
            wallet_available_micros: 0,
            grants: Vec::new(),
            cycles: None,
            pricing: Pricing {
                credit_price_money_micros: CREDIT,
                topup_min_money_micros: 10 * CREDIT,
                topup_max_money_micros: 5_000 * CREDIT,
            },
        }
    }

    /// A cycle ending 2026-12-01, anchored on the 1st.
    fn cycles(rollover: i64, next_grant: i64, next_rollover: i64) -> Cycles {
        Cycles {
            cycle_end_at: at("2026-12-01T00:00:00Z"),
            anchor_day: 1,
            rollover_max_micros: rollover,
            next_grant_micros: next_grant,
            next_rollover_max_micros: next_rollover,
        }
    }

    fn suggestion(threshold: &str, amount: &str) -> Option<SuggestedAutoRecharge> {
        Some(SuggestedAutoRecharge {
            threshold: dec(threshold),
            amount: dec(amount),
        })
    }

    fn forecast_ok(outlook: &Outlook) -> Runway {
        forecast(outlook).expect("forecast")
    }

    #[test]
    fn windows_are_whole_utc_days() {
        let today = at("2026-11-16T00:00:00Z") / SECS_PER_DAY;
        assert_eq!(
            window_days(at("2026-11-16T23:59:59Z")),
            (today - 29, today - 6, today)
        );
        assert_eq!(window_days(at("2026-11-17T00:00:00Z")).2, today + 1);
    }

    #[test]
    fn under_a_day_of_history_guesses_nothing() {
        let young = |age_secs: i64| Outlook {
            created_at_secs: at("2026-11-16T12:00:00Z") - age_secs,
            ..outlook(CREDIT, CREDIT)
        };
        assert_eq!(
            forecast_ok(&young(SECS_PER_DAY - 1)),
            Runway {
                status: RunwayStatus::InsufficientHistory,
                history_days: dec("0.9"),
                average_daily_spend_7d: None,
                average_daily_spend_30d: None,
                days_left: None,
                runs_out_at: None,
                suggested_auto_recharge: None,
            }
        );
        // A day old: 1 credit in a day is 1 a day in both windows; nothing available.
        assert_eq!(
            forecast_ok(&young(SECS_PER_DAY)),
            Runway {
                status: RunwayStatus::Forecast,
                history_days: dec("1.0"),
                average_daily_spend_7d: Some(dec("1")),
                average_daily_spend_30d: Some(dec("1")),
                days_left: Some(dec("0.0")),
                runs_out_at: Some("2026-11-16T12:00:00Z".into()),
                suggested_auto_recharge: suggestion("14", "14"),
            }
        );
    }

    #[test]
    fn nothing_spent_in_30_days_is_no_usage() {
        assert_eq!(
            forecast_ok(&outlook(0, 0)),
            Runway {
                status: RunwayStatus::NoUsage,
                history_days: dec("29.5"),
                average_daily_spend_7d: Some(dec("0")),
                average_daily_spend_30d: Some(dec("0")),
                days_left: None,
                runs_out_at: None,
                suggested_auto_recharge: None,
            }
        );
    }

    #[test]
    fn without_a_plan_the_balance_runs_down() {
        // 6.5 credits in 6.5 days, 29.5 in 29.5: 1 a day; 10 available last 10 days.
        let runway = forecast_ok(&Outlook {
            wallet_available_micros: 4 * CREDIT,
            plan_available_micros: 6 * CREDIT,
            ..outlook(6_500_000, 29_500_000)
        });
        assert_eq!(runway.status, RunwayStatus::Forecast);
        assert_eq!(runway.days_left, Some(dec("10.0")));
        assert_eq!(runway.runs_out_at.as_deref(), Some("2026-11-26T12:00:00Z"));
        // 365 days exactly is within the horizon, a second more is not.
        let lasting = |wallet_micros: i64| {
            forecast_ok(&Outlook {
                wallet_available_micros: wallet_micros,
                ..outlook(6_500_000, 29_500_000)
            })
        };
        assert_eq!(lasting(365 * CREDIT).days_left, Some(dec("365.0")));
        assert_eq!(
            lasting(365 * CREDIT).runs_out_at.as_deref(),
            Some("2027-11-16T12:00:00Z")
        );
        let beyond = lasting(365 * CREDIT + 12);
        assert_eq!(beyond.status, RunwayStatus::BeyondHorizon);
        assert_eq!((beyond.days_left, beyond.runs_out_at), (None, None));
        assert_eq!(beyond.suggested_auto_recharge, suggestion("14", "14"));
    }

    /// G7: at 1 a day with a wallet of 10 and a grant of 5 expiring in 3 days, the grant pays
    /// the first 3 days (after the plan, before the wallet), its 2 left expire, and the wallet
    /// lasts 10 more: 13 days, not 15. A grant that never expires counts in full: 15. A grant
    /// already past its expiry counts for nothing.
    #[test]
    fn a_grant_counts_until_it_expires() {
        let now = at("2026-11-16T12:00:00Z");
        let with = |grants: Vec<GrantOutlook>| {
            forecast_ok(&Outlook {
                wallet_available_micros: 10 * CREDIT,
                grants,
                ..outlook(6_500_000, 29_500_000)
            })
        };
        let expiring = with(vec![GrantOutlook {
            available_micros: 5 * CREDIT,
            expires_at: Some(now + 3 * SECS_PER_DAY),
        }]);
        assert_eq!(expiring.days_left, Some(dec("13.0")));
        assert_eq!(
            expiring.runs_out_at.as_deref(),
            Some("2026-11-29T12:00:00Z")
        );
        let lasting = with(vec![GrantOutlook {
            available_micros: 5 * CREDIT,
            expires_at: None,
        }]);
        assert_eq!(lasting.days_left, Some(dec("15.0")));
        let expired = with(vec![GrantOutlook {
            available_micros: 5 * CREDIT,
            expires_at: Some(now),
        }]);
        assert_eq!(expired.days_left, Some(dec("10.0")));
        // Two grants in spending order: the first (expiring in 2 days) pays 2 of its 3, then
        // expires; the second (never) pays 4; then the wallet 10: 16 days.
        let two = with(vec![
            GrantOutlook {
                available_micros: 3 * CREDIT,
                expires_at: Some(now + 2 * SECS_PER_DAY),
            },
            GrantOutlook {
                available_micros: 4 * CREDIT,
                expires_at: None,
            },
        ]);
        assert_eq!(two.days_left, Some(dec("16.0")));
    }

    #[test]
    fn averages_round_up_and_days_left_rounds_down() {
        // 1 credit in 6.5 days = 0.153846153.. a day: 0.153847. 29.5 credits: 1 a day.
        let runway = forecast_ok(&Outlook {
            wallet_available_micros: CREDIT,
            ..outlook(CREDIT, 29_500_000)
        });
        assert_eq!(runway.average_daily_spend_7d, Some(dec("0.153847")));
        assert_eq!(runway.average_daily_spend_30d, Some(dec("1")));
        // 1 / 0.153847 days = 561,596.91 s, rounded down: 6 days 11:59:56 after 12:00.
        assert_eq!(runway.runs_out_at.as_deref(), Some("2026-11-22T23:59:56Z"));
        assert_eq!(runway.days_left, Some(dec("6.4")));
    }

    #[test]
    fn a_free_plan_renews_across_the_cycle_end() {
        // 1 a day. Wallet 18.2 until Dec 1 (14.5 days: 3.7 left), then the grant of 10: 13.7
        // more days, to Dec 14 16:48.
        let runway = forecast_ok(&Outlook {
            wallet_available_micros: 18_200_000,
            cycles: Some(cycles(0, 10 * CREDIT, 0)),
            ..outlook(6_500_000, 11_800_000)
        });
        assert_eq!(
            runway,
            Runway {
                status: RunwayStatus::Forecast,
                history_days: dec("29.5"),
                average_daily_spend_7d: Some(dec("1")),
                average_daily_spend_30d: Some(dec("0.4")),
                days_left: Some(dec("28.2")),
                runs_out_at: Some("2026-12-14T16:48:00Z".into()),
                suggested_auto_recharge: suggestion("14", "14"),
            }
        );
    }

    #[test]
    fn without_renewal_only_the_rollover_survives_the_cycle_end() {
        // 0.5 a day. Plan 24.1 spends 7.25 by Dec 1 (16.85 left), of which 5 roll over and
        // nothing is granted: 5 + 20 in the wallet last 50 days, to Jan 20.
        let base = Outlook {
            plan_available_micros: 24_100_000,
            wallet_available_micros: 20 * CREDIT,
            cycles: Some(cycles(5 * CREDIT, 0, 5 * CREDIT)),
            ..outlook(3_250_000, 5_900_000)
        };
        let runway = forecast_ok(&base);
        assert_eq!(runway.status, RunwayStatus::Forecast);
        assert_eq!(runway.average_daily_spend_7d, Some(dec("0.5")));
        assert_eq!(runway.average_daily_spend_30d, Some(dec("0.2")));
        assert_eq!(runway.days_left, Some(dec("64.5")));
        assert_eq!(runway.runs_out_at.as_deref(), Some("2027-01-20T00:00:00Z"));
        // Renewed with 30 a month, 15.5 spent a month: never runs out.
        let renewed = forecast_ok(&Outlook {
            cycles: Some(cycles(5 * CREDIT, 30 * CREDIT, 5 * CREDIT)),
            ..base
        });
        assert_eq!(renewed.status, RunwayStatus::BeyondHorizon);
        // 0.5 a day x 14 = 7.
        assert_eq!(renewed.suggested_auto_recharge, suggestion("7", "10"));
    }

    #[test]
    fn a_pending_downgrade_sets_the_terms_after_the_cycle_end() {
        // 0.5 a day. Plan 24.1 - 7.25 = 16.85 at Dec 1: 5 roll over (plan in force), plus the
        // next plan's 10 a month without rollover. Month by month (plan first, then wallet 20):
        // Dec 15 -> Dec 31, then 0.5 from the wallet; Jan: 10 over 20 days, 5.5 from the
        // wallet; Feb: 4; Mar: 5.5; Apr: 10 then the last 4.5 over 9 days, to Apr 30.
        let runway = forecast_ok(&Outlook {
            plan_available_micros: 24_100_000,
            wallet_available_micros: 20 * CREDIT,
            cycles: Some(cycles(5 * CREDIT, 10 * CREDIT, 0)),
            ..outlook(3_250_000, 5_900_000)
        });
        assert_eq!(runway.runs_out_at.as_deref(), Some("2027-04-30T00:00:00Z"));
        assert_eq!(runway.days_left, Some(dec("164.5")));
    }

    #[test]
    fn an_overdue_renewal_is_carried_out_now() {
        // 1 a day. The cycle ended Nov 1: renewal keeps 5 of 24.1 and grants 10 (15), which
        // last to Dec 1, 00:00 (14.5 days: 0.5 left), then 0.5 + 10 more: to Dec 11, 12:00.
        let overdue = |end: &str| {
            forecast_ok(&Outlook {
                plan_available_micros: 24_100_000,
                cycles: Some(Cycles {
                    cycle_end_at: at(end),
                    ..cycles(5 * CREDIT, 10 * CREDIT, 2 * CREDIT)
                }),
                ..outlook(6_500_000, 29_500_000)
            })
        };
        assert_eq!(
            overdue("2026-11-01T00:00:00Z").runs_out_at.as_deref(),
            Some("2026-12-11T12:00:00Z")
        );
        // Ended Oct 1 and Nov 1: the second close keeps the next plan's 2 only, then 10: 12
        // days.
        let twice = overdue("2026-10-01T00:00:00Z");
        assert_eq!(twice.runs_out_at.as_deref(), Some("2026-11-28T12:00:00Z"));
        assert_eq!(twice.days_left, Some(dec("12.0")));
    }

    #[test]
    fn a_year_of_renewals_stays_within_the_cycle_bound() {
        // Cycles anchored on the 31st, the first ending a second from now, 100 credits a month
        // at 1 a day: every cycle end within the year is walked, and the balance lasts.
        let runway = forecast_ok(&Outlook {
            cycles: Some(Cycles {
                cycle_end_at: at("2026-11-16T12:00:01Z"),
                anchor_day: 31,
                rollover_max_micros: 0,
                next_grant_micros: 100 * CREDIT,
                next_rollover_max_micros: 0,
            }),
            plan_available_micros: CREDIT,
            ..outlook(6_500_000, 29_500_000)
        });
        assert_eq!(runway.status, RunwayStatus::BeyondHorizon);
    }

    #[test]
    fn spent_only_in_the_30_day_window_never_runs_out_but_still_suggests() {
        let runway = forecast_ok(&outlook(0, 5_900_000));
        assert_eq!(
            runway,
            Runway {
                status: RunwayStatus::BeyondHorizon,
                history_days: dec("29.5"),
                average_daily_spend_7d: Some(dec("0")),
                average_daily_spend_30d: Some(dec("0.2")),
                days_left: None,
                runs_out_at: None,
                // 0.2 x 14 = 2.8: 3, and the amount at least the 10 a top-up needs.
                suggested_auto_recharge: suggestion("3", "10"),
            }
        );
    }

    #[test]
    fn suggestions_round_up_to_whole_units_within_the_top_up_bounds() {
        let priced = |spent_7d_micros: i64| {
            forecast_ok(&Outlook {
                pricing: Pricing {
                    credit_price_money_micros: 1_500_000,
                    topup_min_money_micros: 10 * CREDIT,
                    topup_max_money_micros: 25 * CREDIT,
                },
                ..outlook(spent_7d_micros, spent_7d_micros)
            })
            .suggested_auto_recharge
        };
        // 1 a day: 14 credits at 1.5 = 21.
        assert_eq!(priced(6_500_000), suggestion("21", "21"));
        // 1.3 a day: 18.2 credits, 27.3: threshold 28, amount the top-up maximum 25.
        assert_eq!(priced(8_450_000), suggestion("28", "25"));
        // 0.1 a day: 1.4 credits, 2.1: threshold 3, amount the minimum 10.
        assert_eq!(priced(650_000), suggestion("3", "10"));
        // 1 micro-credit in 6.5 days: 1 micro a day, 14 micro-credits: still a whole unit.
        assert_eq!(priced(1), suggestion("1", "10"));
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn the_windows_are_read_by_primary_key() {
        use crate::storage::SqlValue;
        use futures::executor::block_on;
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::native::NativeDb::open(dir.path().join("plan.db")).expect("open");
        block_on(crate::schema::migrate(&db)).expect("migrate");
        let rows = block_on(db.query(
            &format!("EXPLAIN QUERY PLAN {WINDOWS_SQL}"),
            &[t("w"), i(1), i(2), i(3)],
        ))
        .expect("plan");
        let steps: Vec<String> = rows
            .iter()
            .filter_map(|row| match row.get(3) {
                Some(SqlValue::Text(detail)) => Some(detail.clone()),
                _ => None,
            })
            .collect();
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("SEARCH w USING INDEX sqlite_autoindex_workspaces")),
            "{steps:?}"
        );
        assert!(
            steps.iter().any(|s| s
                .starts_with("SEARCH u USING PRIMARY KEY (workspace_id=? AND day>? AND day<?)")),
            "{steps:?}"
        );
        assert!(!steps.iter().any(|s| s.starts_with("SCAN")), "{steps:?}");
    }

    #[test]
    fn free_plans_renew_paid_ones_only_in_good_standing() {
        use SubscriptionStanding as S;
        for standing in [
            S::Unsubscribed,
            S::Active,
            S::PastDue,
            S::Canceled,
            S::Other,
        ] {
            assert!(renews_with_credits(0, standing), "{standing}");
            assert_eq!(
                renews_with_credits(29 * CREDIT, standing),
                standing == S::Active,
                "{standing}"
            );
        }
    }
}
