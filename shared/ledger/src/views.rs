//! Read models: the billing summary and status banner (R17) with its runway, the transaction
//! history with cursor pagination and CSV (R18), and the monthly usage summary with spikes
//! flagged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::calendar;
use crate::catalog::Catalog;
use crate::money;
use crate::payments::Payment;
use crate::row::{i, int, opt_int, opt_text, t, text};
use crate::runway::{self, Runway};
use crate::storage::Storage;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, Result};

/// Largest page of history.
pub const PAGE_LIMIT_MAX: i64 = 100;
/// Default page of history.
pub const PAGE_LIMIT_DEFAULT: i64 = 50;
/// Most rows one CSV export carries: the ledger's largest read, and so also the most rows the
/// Spin storage accepts from one statement (spin-adapter's `ROWS_MAX`).
pub const CSV_ROWS_MAX: i64 = 100_000;

/// The status banner (the seeds' "red bar").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// All good.
    Ok,
    /// No plan (R3).
    BillingNotConfigured,
    /// The subscription's last invoice failed.
    PastDue,
    /// Nothing left and the grace period is over: all calls pause.
    BalanceExhausted,
    /// Nothing left: outbound stops, inbound continues for a while.
    GracePeriod,
    /// Under the low-balance threshold.
    LowBalance,
    /// No saved card.
    NoPaymentMethod,
}

impl Status {
    /// The banner's sentence.
    pub fn message(self) -> &'static str {
        match self {
            Self::Ok => "Billing is active.",
            Self::BillingNotConfigured => {
                "Billing not configured: select a plan and set up your payment method to use your agents."
            }
            Self::PastDue => {
                "Your last subscription payment failed. Update your payment method in the billing portal; your wallet balance keeps working meanwhile."
            }
            Self::BalanceExhausted => {
                "Insufficient funds in your account: all calls are paused until you top up."
            }
            Self::GracePeriod => {
                "Your balance reached zero: outbound calls and paid actions have stopped; inbound calls continue for a short grace period. Top up to restore service."
            }
            Self::LowBalance => {
                "Your balance is low. Top up or enable auto-recharge to avoid interruptions."
            }
            Self::NoPaymentMethod => {
                "Connect a payment method so you can top up and enable auto-recharge."
            }
        }
    }

    /// The banner's sentence for a member, who sees the status but cannot manage billing
    /// (R19): it says who can act instead of asking the reader to.
    pub fn member_message(self) -> &'static str {
        match self {
            Self::Ok => "Billing is active.",
            Self::BillingNotConfigured => {
                "Billing not configured: agents can be used once an owner or admin of this workspace selects a plan and sets up a payment method."
            }
            Self::PastDue => {
                "The last subscription payment failed. An owner or admin of this workspace can update the payment method; the wallet balance keeps working meanwhile."
            }
            Self::BalanceExhausted => {
                "Insufficient funds in your account: all calls are paused until an owner or admin of this workspace tops up."
            }
            Self::GracePeriod => {
                "The balance reached zero: outbound calls and paid actions have stopped; inbound calls continue for a short grace period. Ask an owner or admin of this workspace to top up."
            }
            Self::LowBalance => {
                "The balance is low. Ask an owner or admin of this workspace to top up or enable auto-recharge."
            }
            Self::NoPaymentMethod => {
                "No payment method is connected yet. Ask an owner or admin of this workspace to add one."
            }
        }
    }
}

/// `{"id", "name"}` of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanRef {
    /// Plan id.
    pub id: String,
    /// Plan name.
    pub name: String,
}

/// A pending downgrade.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingPlanChange {
    /// The plan that starts next cycle.
    pub plan_id: String,
    /// When (RFC 3339).
    pub effective_at: String,
}

/// Auto-recharge settings as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoRechargeView {
    /// On or off.
    pub enabled: bool,
    /// Threshold (currency).
    pub threshold: Decimal,
    /// Amount (currency).
    pub amount: Decimal,
    /// The most automatic recharges may charge per calendar month (currency); null: no cap.
    pub max_per_month: Option<Decimal>,
    /// Why it stopped or paused, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The saved card as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardView {
    /// Brand.
    pub brand: String,
    /// Last 4.
    pub last4: String,
    /// Expiry month.
    pub exp_month: i64,
    /// Expiry year.
    pub exp_year: i64,
}

/// `GET /v1/workspaces/{ws}/billing` (R17).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BillingSummary {
    /// Banner.
    pub status: Status,
    /// Banner sentence.
    pub message: String,
    /// Currency.
    pub currency: String,
    /// What a credit costs, in the currency (R1).
    pub credit_price: Decimal,
    /// The smallest manual top-up, in the currency (R9).
    pub topup_min: Decimal,
    /// The largest manual top-up, in the currency (R9).
    pub topup_max: Decimal,
    /// Plan.
    pub plan: Option<PlanRef>,
    /// Subscription state: none, active, past_due, canceled.
    pub subscription_status: String,
    /// Credits the plan grants per cycle.
    pub plan_credits_included: Decimal,
    /// Plan credits left.
    pub plan_credits_remaining: Decimal,
    /// Wallet credits.
    pub wallet_balance: Decimal,
    /// Wallet value in currency.
    pub wallet_value: Decimal,
    /// Credits left on grants in force (docs/grants.md), scheduled ones not included.
    pub grant_credits_remaining: Decimal,
    /// The grants with something left, active or scheduled, in the order they are spent.
    pub grants: Vec<crate::grants::OwnerGrant>,
    /// Credits reserved by calls in progress.
    pub held: Decimal,
    /// Top-ups and recharges waiting for the card.
    pub pending_topups: Vec<Payment>,
    /// Cycle start (RFC 3339).
    pub cycle_start: Option<String>,
    /// Next renewal (RFC 3339).
    pub next_renewal_at: Option<String>,
    /// Pending downgrade.
    pub pending_plan_change: Option<PendingPlanChange>,
    /// Auto-recharge.
    pub auto_recharge: AutoRechargeView,
    /// Card.
    pub payment_method: Option<CardView>,
    /// Average daily spend, when the balance runs out at that rate, and a suggested
    /// auto-recharge (docs/billing-rules.md, "Runway").
    pub runway: Runway,
}

/// The banner for a workspace at `now`, `grants_for_calls_micros` being what its grants can
/// still give to calls of any agent (a workspace has not run out while they can: G4).
pub fn status_of(
    ws: &WorkspaceState,
    catalog: &Catalog,
    now: i64,
    grants_for_calls_micros: i64,
) -> Status {
    let available = ws.plan_available_micros()
        + (ws.wallet_micros - ws.held_wallet_micros)
        + grants_for_calls_micros;
    let grace_secs = i64::from(catalog.settings().inbound_grace_secs);
    if ws.plan_id.is_none() {
        Status::BillingNotConfigured
    } else if ws.subscription_status == "past_due" {
        Status::PastDue
    } else if available <= 0 {
        match ws.exhausted_at {
            Some(since) if now < since + grace_secs => Status::GracePeriod,
            None => Status::GracePeriod,
            Some(_) => Status::BalanceExhausted,
        }
    } else if available < catalog.low_balance_threshold_micros {
        Status::LowBalance
    } else if ws.payment_method_id.is_none() {
        Status::NoPaymentMethod
    } else {
        Status::Ok
    }
}

/// The billing summary (R17), read on one committed state ([`crate::tx::snapshot`]).
pub async fn summary<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    real_now_secs: i64,
) -> Result<BillingSummary> {
    crate::tx::snapshot(db, async |db| {
        summary_of(db, catalog, workspace_id, real_now_secs).await
    })
    .await
}

/// The summary's reads, inside [`summary`]'s snapshot.
async fn summary_of<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    real_now_secs: i64,
) -> Result<BillingSummary> {
    let ws = workspace::get(db, workspace_id).await?;
    let now = ws.now(real_now_secs);
    let live_grants = crate::grants::live_of(db, &ws, now).await?;
    let mut grants_for_calls_micros = 0;
    for grant in &live_grants {
        grants_for_calls_micros += grant.pays_calls_now(now)?;
    }
    let status = status_of(&ws, catalog, now, grants_for_calls_micros);
    let grants = live_grants
        .iter()
        .map(|grant| grant.for_owner(now))
        .collect::<Result<Vec<_>>>()?;
    let pending_topups = crate::payments::pending_of(db, &ws.id).await?;
    let runway_grants = crate::grants::runway_outlook(&live_grants, now)?;
    let runway = runway::load(db, catalog, &ws, now, runway_grants).await?;
    let plan = ws.plan_id.as_ref().map(|id| PlanRef {
        id: id.clone(),
        name: catalog
            .doc
            .plans
            .iter()
            .find(|p| &p.id == id)
            .map_or_else(|| id.clone(), |p| p.name.clone()),
    });
    Ok(BillingSummary {
        status,
        message: status.message().into(),
        currency: ws.currency.clone(),
        credit_price: money::to_decimal(catalog.credit_price_money_micros),
        topup_min: money::to_decimal(catalog.topup_min_money_micros),
        topup_max: money::to_decimal(catalog.topup_max_money_micros),
        plan,
        subscription_status: ws.subscription_status.clone(),
        plan_credits_included: money::to_decimal(if ws.plan_id.is_some() {
            ws.plan_monthly_credits_micros
        } else {
            0
        }),
        plan_credits_remaining: money::to_decimal(ws.plan_credits_micros),
        wallet_balance: money::to_decimal(ws.wallet_micros),
        wallet_value: money::to_decimal(money::money_for_credits(
            ws.wallet_micros,
            catalog.credit_price_money_micros,
        )),
        grant_credits_remaining: money::to_decimal(
            live_grants
                .iter()
                .filter(|grant| grant.effective_at <= now)
                .map(|grant| grant.remaining_at(now))
                .sum(),
        ),
        grants,
        held: money::to_decimal(
            ws.held_micros()
                + live_grants
                    .iter()
                    .map(|grant| grant.held_micros)
                    .sum::<i64>(),
        ),
        pending_topups,
        cycle_start: ws
            .plan_id
            .as_ref()
            .and(ws.cycle_start_at)
            .map(calendar::rfc3339),
        next_renewal_at: ws
            .plan_id
            .as_ref()
            .and(ws.cycle_end_at)
            .map(calendar::rfc3339),
        pending_plan_change: ws
            .pending_plan_id
            .as_ref()
            .map(|plan_id| PendingPlanChange {
                plan_id: plan_id.clone(),
                effective_at: ws.cycle_end_at.map(calendar::rfc3339).unwrap_or_default(),
            }),
        auto_recharge: AutoRechargeView {
            enabled: ws.auto_recharge_enabled,
            threshold: money::to_decimal(ws.auto_recharge_threshold_money_micros),
            amount: money::to_decimal(ws.auto_recharge_amount_money_micros),
            max_per_month: ws
                .auto_recharge_max_per_month_money_micros
                .map(money::to_decimal),
            warning: ws.auto_recharge_warning.clone(),
        },
        payment_method: ws.saved_card().map(|card| CardView {
            brand: card.brand,
            last4: card.last4,
            exp_month: card.exp_month,
            exp_year: card.exp_year,
        }),
        runway,
    })
}

/// One history row (R18).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransactionView {
    /// Id (also the pagination cursor).
    pub id: String,
    /// call, message, sms, stt, ai_task, topup, auto_recharge, plan_grant, plan_expiry, refund, dispute.
    #[serde(rename = "type")]
    pub kind: String,
    /// Agent, for usage.
    pub agent_id: Option<String>,
    /// Event id, call id, PaymentIntent, plan or Stripe object.
    pub reference: Option<String>,
    /// Quantity in `unit`s: for a call, the seconds billed (whole increments of its rate).
    pub quantity: Option<Decimal>,
    /// For a call, how long it lasted (seconds), which `quantity` rounds up to what is billed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// second, message, segment, minute, task.
    pub unit: Option<String>,
    /// Credits per unit (per minute for calls).
    pub rate: Option<Decimal>,
    /// Signed total (negative: charged).
    pub amount: Decimal,
    /// Signed part from plan credits.
    pub plan_amount: Decimal,
    /// Signed part from the wallet.
    pub wallet_amount: Decimal,
    /// Signed part from credit grants (docs/grants.md).
    pub grant_amount: Decimal,
    /// Which grants paid, and how much each (signed), in the order they were spent; empty when
    /// none did.
    pub grants: Vec<GrantPart>,
    /// Plan credits after.
    pub plan_credits_after: Decimal,
    /// Wallet after.
    pub wallet_balance_after: Decimal,
    /// When it happened.
    pub occurred_at: String,
    /// Free text.
    pub description: Option<String>,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransactionPage {
    /// Newest first.
    pub data: Vec<TransactionView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// History filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionFilter {
    /// Page size (1..=100, default 50).
    pub limit: Option<i64>,
    /// Rows older than this cursor.
    pub cursor: Option<String>,
    /// Only this type.
    pub kind: Option<String>,
    /// Only this agent.
    pub agent_id: Option<String>,
}

const TRANSACTION_TYPES: &[&str] = &[
    "call",
    "message",
    "sms",
    "stt",
    "ai_task",
    "topup",
    "auto_recharge",
    "plan_grant",
    "plan_expiry",
    "refund",
    "dispute",
];

/// 400 `malformed_request` naming a query parameter (the history's filters, the notifications').
pub(crate) fn bad_query(field: &'static str, message: &str) -> LedgerError {
    LedgerError::Invalid {
        code: "malformed_request",
        message: message.into(),
        field: Some(field),
    }
}

/// A page size: `requested`, else `default`; 400 `malformed_request` outside 1 to `max` (the
/// history's, the agents' and the notifications' pages).
pub(crate) fn page_limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64> {
    let limit = requested.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(bad_query("limit", &format!("limit must be 1..{max}")))
    }
}

async fn query_transactions<S: Storage>(
    db: &S,
    workspace_id: &str,
    filter: &TransactionFilter,
    limit: i64,
) -> Result<Vec<TransactionView>> {
    let cursor = match &filter.cursor {
        None => i64::MAX,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| bad_query("cursor", "cursor is not a cursor this API returned"))?,
    };
    if let Some(kind) = &filter.kind
        && !TRANSACTION_TYPES.contains(&kind.as_str())
    {
        return Err(bad_query("type", "type is not a transaction type"));
    }
    if let Some(agent) = &filter.agent_id {
        workspace::validate_id("agent", agent)?;
    }
    let rows = db
        .query(
            "SELECT id, type, agent_id, reference, quantity_micros, unit, rate_micros, plan_delta_micros,
                    wallet_delta_micros, plan_after_micros, wallet_after_micros, occurred_at, description,
                    (SELECT c.duration_secs FROM calls c
                     WHERE t.type = 'call' AND c.call_id = t.reference AND c.workspace_id = t.workspace_id),
                    grant_delta_micros,
                    CASE WHEN grant_delta_micros <> 0 THEN
                        (SELECT json_group_array(json_array(e.grant_id, e.amount_micros))
                         FROM grant_entries e WHERE e.transaction_id = t.id AND e.kind = 'spent')
                    END
             FROM transactions t
             WHERE workspace_id = ?1 AND id < ?2 AND (?3 IS NULL OR type = ?3) AND (?4 IS NULL OR agent_id = ?4)
             ORDER BY id DESC LIMIT ?5",
            &[
                t(workspace_id),
                i(cursor),
                filter.kind.as_deref().map_or(crate::SqlValue::Null, t),
                filter.agent_id.as_deref().map_or(crate::SqlValue::Null, t),
                i(limit),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let (plan, wallet, grants) = (int(r, 7)?, int(r, 8)?, int(r, 14)?);
            Ok(TransactionView {
                id: int(r, 0)?.to_string(),
                kind: text(r, 1)?,
                agent_id: opt_text(r, 2)?,
                reference: opt_text(r, 3)?,
                quantity: opt_int(r, 4)?.map(money::to_decimal),
                duration_seconds: opt_int(r, 13)?,
                unit: opt_text(r, 5)?,
                rate: opt_int(r, 6)?.map(money::to_decimal),
                amount: money::to_decimal(plan + wallet + grants),
                plan_amount: money::to_decimal(plan),
                wallet_amount: money::to_decimal(wallet),
                grant_amount: money::to_decimal(grants),
                grants: grant_parts(opt_text(r, 15)?.as_deref())?,
                plan_credits_after: money::to_decimal(int(r, 9)?),
                wallet_balance_after: money::to_decimal(int(r, 10)?),
                occurred_at: calendar::rfc3339(int(r, 11)?),
                description: opt_text(r, 12)?,
            })
        })
        .collect()
}

/// What one grant paid of a history row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrantPart {
    /// The grant (`gr_...`).
    pub grant_id: String,
    /// Signed credits (negative: it paid).
    pub amount: Decimal,
}

/// A history row's `[[grant id, micro-credits], ...]` as its parts.
fn grant_parts(column: Option<&str>) -> Result<Vec<GrantPart>> {
    let Some(text) = column else {
        return Ok(Vec::new());
    };
    let parts: Vec<(String, i64)> = serde_json::from_str(text).map_err(|e| {
        LedgerError::Storage(crate::StorageError::from_sqlite_message(format!(
            "a history row's grants: {e}"
        )))
    })?;
    Ok(parts
        .into_iter()
        .map(|(grant_id, micros)| GrantPart {
            grant_id,
            amount: money::to_decimal(micros),
        })
        .collect())
}

/// A page of history, newest first (R18).
pub async fn transactions<S: Storage>(
    db: &S,
    workspace_id: &str,
    filter: &TransactionFilter,
) -> Result<TransactionPage> {
    let limit = page_limit(filter.limit, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX)?;
    workspace::get(db, workspace_id).await?;
    let mut data = query_transactions(db, workspace_id, filter, limit + 1).await?;
    let next_cursor = if data.len() as i64 > limit {
        data.truncate(limit as usize);
        data.last().map(|row| row.id.clone())
    } else {
        None
    };
    Ok(TransactionPage { data, next_cursor })
}

/// The filtered history as CSV (RFC 4180), newest first, at most [`CSV_ROWS_MAX`] rows.
pub async fn transactions_csv<S: Storage>(
    db: &S,
    workspace_id: &str,
    filter: &TransactionFilter,
) -> Result<String> {
    workspace::get(db, workspace_id).await?;
    let rows = query_transactions(db, workspace_id, filter, CSV_ROWS_MAX).await?;
    let mut csv = String::from(
        "id,type,agent_id,reference,quantity,unit,rate,amount,plan_amount,wallet_amount,plan_credits_after,wallet_balance_after,occurred_at,description,grant_amount,grants\r\n",
    );
    let field = |v: Option<String>| csv_field(&v.unwrap_or_default());
    for r in rows {
        let _ = write!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
            r.id,
            csv_field(&r.kind),
            field(r.agent_id),
            field(r.reference),
            field(r.quantity.map(|d| d.to_string())),
            field(r.unit),
            field(r.rate.map(|d| d.to_string())),
            r.amount,
            r.plan_amount,
            r.wallet_amount,
            r.plan_credits_after,
            r.wallet_balance_after,
            r.occurred_at,
            field(r.description),
            r.grant_amount,
            // `gr_a:-1.5;gr_b:-0.5`: which grants paid, and how much each.
            csv_field(
                &r.grants
                    .iter()
                    .map(|part| format!("{}:{}", part.grant_id, part.amount))
                    .collect::<Vec<_>>()
                    .join(";")
            ),
        );
    }
    Ok(csv)
}

fn csv_field(value: &str) -> String {
    // Quote when needed; a leading formula character is neutralised for spreadsheet safety.
    let neutral = if value.starts_with(['=', '+', '-', '@']) && value.parse::<f64>().is_err() {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if neutral.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

/// Spend of one usage kind or agent in a month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageLine {
    /// Kind or agent id.
    pub key: String,
    /// Events.
    pub count: i64,
    /// Credits charged.
    pub amount: Decimal,
}

/// Spend of one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageDay {
    /// UTC date.
    pub date: String,
    /// Events.
    pub count: i64,
    /// Credits charged.
    pub amount: Decimal,
    /// Unusually high: more than 3x the month's median day (with at least 4 days of usage).
    pub spike: bool,
}

/// `GET /v1/workspaces/{ws}/usage/summary?month=YYYY-MM`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageSummary {
    /// The month.
    pub month: String,
    /// Credits charged in all.
    pub total: Decimal,
    /// By kind.
    pub by_kind: Vec<UsageLine>,
    /// By agent.
    pub by_agent: Vec<UsageLine>,
    /// By UTC day, with spikes flagged.
    pub by_day: Vec<UsageDay>,
}

/// Monthly usage summary (R18), by kind, agent and UTC day.
pub async fn usage_summary<S: Storage>(
    db: &S,
    workspace_id: &str,
    month: &str,
) -> Result<UsageSummary> {
    let first = format!("{month}-01")
        .parse::<jiff::civil::Date>()
        .ok()
        .filter(|_| month.len() == 7)
        .ok_or_else(|| bad_query("month", "month must be YYYY-MM"))?;
    let start = calendar::midnight_utc(first)?;
    let end = calendar::midnight_utc(calendar::next_cycle_start(first, 1)?)?;
    workspace::get(db, workspace_id).await?;
    let rows = db
        .query(
            "SELECT type, COALESCE(agent_id, ''), date(occurred_at, 'unixepoch'), COUNT(*),
                    -SUM(plan_delta_micros + wallet_delta_micros + grant_delta_micros)
             FROM transactions
             WHERE workspace_id = ?1 AND occurred_at >= ?2 AND occurred_at < ?3
               AND type IN ('call', 'message', 'sms', 'stt', 'ai_task')
             GROUP BY 1, 2, 3",
            &[t(workspace_id), i(start), i(end)],
        )
        .await?;
    let mut by_kind: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut by_agent: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut by_day: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut total = 0;
    for r in &rows {
        let (count, amount) = (int(r, 3)?, int(r, 4)?);
        total += amount;
        for (map, key) in [
            (&mut by_kind, text(r, 0)?),
            (&mut by_agent, text(r, 1)?),
            (&mut by_day, text(r, 2)?),
        ] {
            let entry = map.entry(key).or_default();
            entry.0 += count;
            entry.1 += amount;
        }
    }
    let spike_floor = spike_threshold(by_day.values().map(|(_, amount)| *amount).collect());
    let lines = |map: BTreeMap<String, (i64, i64)>| {
        map.into_iter()
            .map(|(key, (count, amount))| UsageLine {
                key,
                count,
                amount: money::to_decimal(amount),
            })
            .collect()
    };
    Ok(UsageSummary {
        month: month.to_owned(),
        total: money::to_decimal(total),
        by_kind: lines(by_kind),
        by_agent: lines(by_agent),
        by_day: by_day
            .into_iter()
            .map(|(date, (count, amount))| UsageDay {
                date,
                count,
                amount: money::to_decimal(amount),
                spike: spike_floor.is_some_and(|floor| amount > floor),
            })
            .collect(),
    })
}

/// Days above this spend are spikes: 3x the median day, once there are at least 4 days of usage.
fn spike_threshold(mut daily: Vec<i64>) -> Option<i64> {
    if daily.len() < 4 {
        return None;
    }
    daily.sort_unstable();
    let median = daily[daily.len() / 2];
    Some(median.saturating_mul(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_spikes() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("-1.5"), "-1.5");
        assert_eq!(spike_threshold(vec![1, 1, 1]), None);
        assert_eq!(spike_threshold(vec![10, 1, 2, 2, 3]), Some(6));
    }

    #[test]
    fn members_are_told_who_can_act() {
        use Status::*;
        for status in [
            BillingNotConfigured,
            PastDue,
            BalanceExhausted,
            GracePeriod,
            LowBalance,
            NoPaymentMethod,
        ] {
            let member = status.member_message();
            assert!(
                member
                    .to_lowercase()
                    .contains("an owner or admin of this workspace"),
                "{status:?}: {member}"
            );
            assert!(!member.contains("Top up"), "{status:?}: {member}");
            assert_ne!(member, status.message(), "{status:?}");
        }
        assert_eq!(Ok.member_message(), Ok.message());
    }
}
