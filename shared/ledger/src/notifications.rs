//! Notifications to the platform (docs/notifications.md): the events the outbox holds, rendered
//! as the payloads the platform receives, and their delivery state.
//!
//! Most events are written by the schema's triggers, in the statement that makes the change they
//! report (schema.rs, migration 11); the few decided in Rust ([`record`]) are written in the
//! transaction of their change. Either way an event exists if and only if its change committed.
//! The outbox keeps facts (micros, ids); the payload is rendered here, when the event is sent or
//! listed, with the workspace's currency.
//!
//! Delivery is at least once: a sender claims due events for a lease ([`claim_due`]), sends them
//! with no ledger lock held, and records each outcome ([`record_outcomes`]). A sender that dies
//! between the claim and the record leaves the events to be claimed again when the lease ends,
//! with the same id (`webhook-id`), so a receiver deduplicates on it.

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::row::{i, int, opt_int, opt_text, t, text};
use crate::storage::{SqlValue, Storage};
use crate::views::bad_query;
use crate::{LedgerError, Result, calendar, money};

/// How long an event is retried after it was written (or redelivered): 3 days.
pub const RETRY_WINDOW_SECS: i64 = 3 * calendar::SECS_PER_DAY;

/// The most events one claim takes.
pub const CLAIM_BATCH_MAX: i64 = 100;

/// The most graces one sweep ends.
pub const GRACE_BATCH_MAX: i64 = 500;

/// The most workspaces one runway sweep checks (a notifier pass every 5 seconds goes through
/// 1,000,000 workspaces in about 7 hours; a runway is days long).
pub const RUNWAY_BATCH_MAX: i64 = 200;

/// The waits between attempts, by attempts made so far: quick at first (a receiver restarting),
/// then spreading out to hours. Each wait is stretched by up to a fifth ([`retry_delay_secs`]).
const RETRY_SCHEDULE_SECS: [i64; 10] =
    [5, 30, 120, 600, 1_800, 3_600, 7_200, 14_400, 28_800, 43_200];

/// Page sizes of the operator's list.
const LIST_LIMIT_DEFAULT: i64 = 50;
const LIST_LIMIT_MAX: i64 = 100;

/// The prefix of an event's public id: `evt_` and the outbox row's id.
const EVENT_ID_PREFIX: &str = "evt_";

/// Every event type, as the platform receives it.
pub const EVENT_TYPES: &[&str] = &[
    "balance.low",
    "balance.depleted",
    "balance.restored",
    "grace.started",
    "grace.ended",
    "topup.succeeded",
    "topup.failed",
    "payment.refunded",
    "payment.disputed",
    "auto_recharge.succeeded",
    "auto_recharge.failed",
    "auto_recharge.disabled",
    "auto_recharge.cap_warning",
    "plan.renewed",
    "plan.changed",
    "subscription.past_due",
    "agent.spend_limit.warning",
    "agent.spend_limit.reached",
    "runway.low",
    "credits.granted",
    "credits.expiring",
    "credits.expired",
];

/// Where an event's delivery is.
pub const DELIVERY_STATUSES: &[&str] = &["pending", "delivered", "failed"];

/// An event as the platform receives it (the request body of the webhook).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `evt_...`, also the `webhook-id` header: stable across retries and redeliveries.
    pub id: String,
    /// One of [`EVENT_TYPES`].
    #[serde(rename = "type")]
    pub kind: String,
    /// When the change happened, in workspace time (test clocks), RFC 3339.
    pub timestamp: String,
    /// The workspace.
    pub workspace_id: String,
    /// What an email needs, without another API call.
    pub data: Value,
}

/// One event with its delivery state (the operator's view).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// `evt_...`.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The workspace.
    pub workspace_id: String,
    /// `pending`, `delivered` or `failed` (gave up after the retry window).
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the event was written (real time).
    pub created_at: String,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<String>,
    /// The last attempt.
    pub last_attempt_at: Option<String>,
    /// The HTTP status the endpoint last answered, if it answered.
    pub last_response_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
    /// The payload sent.
    pub event: Event,
}

/// A page of the operator's list, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationPage {
    /// Newest first.
    pub data: Vec<Notification>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// The operator's filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    /// Only this workspace.
    pub workspace_id: Option<String>,
    /// Only this delivery status.
    pub status: Option<String>,
    /// Only this type.
    pub kind: Option<String>,
    /// Page size (1..=100, default 50).
    pub limit: Option<i64>,
    /// Events older than this cursor.
    pub cursor: Option<String>,
}

/// An event claimed for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The outbox row.
    pub row_id: i64,
    /// The payload.
    pub event: Event,
    /// Attempts including this one.
    pub attempt: i64,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Anything else: another status, a timeout, no connection.
    Failed {
        /// The status, if the endpoint answered.
        status: Option<u16>,
        /// What went wrong, for the operator.
        error: String,
    },
}

/// What [`record_outcomes`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeReport {
    /// Events delivered.
    pub delivered: usize,
    /// Failed attempts that will be retried.
    pub retrying: usize,
    /// Events given up on (the retry window is over).
    pub failed: usize,
}

/// The public id of outbox row `row_id`.
pub fn event_id(row_id: i64) -> String {
    format!("{EVENT_ID_PREFIX}{row_id}")
}

fn parse_event_id(text: &str) -> Option<i64> {
    text.strip_prefix(EVENT_ID_PREFIX)?
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
}

/// The wait after attempt number `attempts` (1 = the first failed) of row `row_id`: the schedule,
/// stretched by 0-20% spread by the row id and attempt, so that events written together (a
/// sweep over 1,000 workspaces) do not all come back in the same second.
pub fn retry_delay_secs(attempts: i64, row_id: i64) -> i64 {
    let index = usize::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(RETRY_SCHEDULE_SECS.len() - 1);
    let base = RETRY_SCHEDULE_SECS[index];
    // SplitMix64 of (row, attempt): a fixed spread, reproducible in tests.
    let mut z = (row_id as u64) ^ ((attempts as u64) << 40);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let fifth = (base / 5).max(1);
    base + (z % (fifth as u64 + 1)) as i64
}

/// Writes an event decided in Rust, in the caller's transaction (the triggers write the others).
pub async fn record<S: Storage>(
    db: &S,
    workspace_id: &str,
    kind: &str,
    facts: &Value,
    occurred_at: i64,
    real_now_secs: i64,
) -> Result<()> {
    db.execute(
        "INSERT INTO notifications (workspace_id, type, facts, occurred_at, created_at, next_attempt_at, retry_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
        &[
            t(workspace_id),
            t(kind),
            t(facts.to_string()),
            i(occurred_at),
            i(real_now_secs),
            i(real_now_secs + RETRY_WINDOW_SECS),
        ],
    )
    .await?;
    Ok(())
}

const COLUMNS: &str =
    "n.id, n.workspace_id, n.type, n.facts, n.occurred_at, n.created_at, n.status,
    n.attempts, n.next_attempt_at, n.last_attempt_at, n.last_response_status, n.last_error,
    n.delivered_at, w.currency";

/// Claims up to `limit` events due at `real_now_secs` for `lease_secs`: another sender will not
/// take them before the lease ends, and will if this one never records an outcome. Oldest first.
/// The claim is one statement (no transaction holds the write lock across host calls); the
/// payloads are read after it.
pub async fn claim_due<S: Storage>(
    db: &S,
    catalog: &Catalog,
    real_now_secs: i64,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<Outgoing>> {
    let ids = db
        .query(
            "UPDATE notifications SET next_attempt_at = ?1 + ?2, attempts = attempts + 1, last_attempt_at = ?1
             WHERE id IN (SELECT id FROM notifications
                          WHERE status = 'pending' AND next_attempt_at <= ?1
                          ORDER BY next_attempt_at, id LIMIT ?3)
             RETURNING id",
            &[i(real_now_secs), i(lease_secs.max(1)), i(limit.clamp(1, CLAIM_BATCH_MAX))],
        )
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids
        .iter()
        .map(|row| int(row, 0).map(|id| id.to_string()))
        .collect::<Result<Vec<_>>>()?
        .join(",");
    let claimed = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM notifications n JOIN workspaces w ON w.id = n.workspace_id
                 WHERE n.id IN ({list}) ORDER BY n.id"
            ),
            &[],
        )
        .await?;
    claimed
        .iter()
        .map(|row| {
            let notification = notification_of(row, catalog)?;
            Ok(Outgoing {
                row_id: int(row, 0)?,
                attempt: notification.attempts,
                event: notification.event,
            })
        })
        .collect()
}

/// Records how the attempts of one sending went: `(row id, attempt number, outcome)` each. Every
/// delivery of the batch is one statement; each failure another (rare), none in a transaction.
/// An event redelivered or settled meanwhile by another sender is left as that one left it.
pub async fn record_outcomes<S: Storage>(
    db: &S,
    outcomes: &[(i64, i64, Outcome)],
    real_now_secs: i64,
) -> Result<OutcomeReport> {
    let mut report = OutcomeReport::default();
    // `[[row id, status], ...]`.
    let delivered: Vec<[i64; 2]> = outcomes
        .iter()
        .filter_map(|(row_id, _, outcome)| match outcome {
            Outcome::Delivered { status } => Some([*row_id, i64::from(*status)]),
            Outcome::Failed { .. } => None,
        })
        .collect();
    if !delivered.is_empty() {
        let delivered_json = serde_json::to_string(&delivered).unwrap_or_else(|_| "[]".into());
        let rows = db
            .query(
                "UPDATE notifications SET status = 'delivered', delivered_at = ?2, last_error = NULL,
                     last_response_status = (SELECT d.value ->> 1 FROM json_each(?1) d
                                             WHERE d.value ->> 0 = notifications.id)
                 WHERE id IN (SELECT d.value ->> 0 FROM json_each(?1) d) AND status = 'pending'
                 RETURNING id",
                &[t(delivered_json.as_str()), i(real_now_secs)],
            )
            .await?;
        report.delivered = rows.len();
    }
    for (row_id, attempt, outcome) in outcomes {
        let Outcome::Failed { status, error } = outcome else {
            continue;
        };
        let next = real_now_secs + retry_delay_secs(*attempt, *row_id);
        let rows = db
            .query(
                "UPDATE notifications SET status = CASE WHEN ?2 > retry_until THEN 'failed' ELSE 'pending' END,
                     next_attempt_at = ?2, last_response_status = ?3, last_error = ?4
                 WHERE id = ?1 AND status = 'pending'
                 RETURNING status",
                &[
                    i(*row_id),
                    i(next),
                    status.map_or(SqlValue::Null, |s| i(i64::from(s))),
                    t(error_text(error)),
                ],
            )
            .await?;
        match rows.first().map(|row| text(row, 0)).transpose()?.as_deref() {
            Some("failed") => report.failed += 1,
            Some(_) => report.retrying += 1,
            None => {}
        }
    }
    Ok(report)
}

/// At most 500 characters of an error, on a character boundary.
fn error_text(error: &str) -> String {
    error.chars().take(500).collect()
}

/// Ends the grace periods that ran out by `real_now_secs` (each workspace at its own time, test
/// clocks included): `grace.ended` with reason `expired`, at the time it ended. Returns how many.
pub async fn end_graces<S: Storage>(db: &S, real_now_secs: i64, limit: i64) -> Result<usize> {
    // Most passes find nothing: a read, and no write lock taken.
    let due = db
        .query(
            "SELECT 1 FROM grace_watch g JOIN workspaces w ON w.id = g.workspace_id
             WHERE g.ends_at <= COALESCE(w.test_clock_at, ?1) LIMIT 1",
            &[i(real_now_secs)],
        )
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    crate::tx::immediate(db, async |db| {
        let ended = db
            .query(
                "DELETE FROM grace_watch
                 WHERE workspace_id IN (
                     SELECT g.workspace_id FROM grace_watch g JOIN workspaces w ON w.id = g.workspace_id
                     WHERE g.ends_at <= COALESCE(w.test_clock_at, ?1) LIMIT ?2)
                 RETURNING workspace_id, ends_at",
                &[i(real_now_secs), i(limit.clamp(1, GRACE_BATCH_MAX))],
            )
            .await?;
        for row in &ended {
            record(
                db,
                &text(row, 0)?,
                "grace.ended",
                &json!({"reason": "expired"}),
                int(row, 1)?,
                real_now_secs,
            )
            .await?;
        }
        Ok(ended.len())
    })
    .await
}

/// Checks the runway of the next `limit` workspaces with a plan (round the table, from where the
/// last sweep stopped) and sends `runway.low` for each whose forecast newly says fewer than the
/// catalog's `runway_low_days` days; one found long enough again is re-armed. An empty workspace
/// is left alone (`balance.depleted` told). The forecasts are read outside any transaction; only a
/// change of state is written, one short transaction for the batch, guarded by the state read so
/// that two sweeps at once send one event. Returns the events written.
pub async fn check_runways<S: Storage>(
    db: &S,
    catalog: &Catalog,
    real_now_secs: i64,
    limit: i64,
) -> Result<usize> {
    let threshold_days = catalog.settings().runway_low_days;
    let limit = limit.clamp(1, RUNWAY_BATCH_MAX);
    let after = db
        .query("SELECT after FROM sweep_cursors WHERE name = 'runway'", &[])
        .await?
        .first()
        .map(|row| text(row, 0))
        .transpose()?
        .unwrap_or_default();
    let rows = db
        .query(
            "SELECT w.id, COALESCE(r.low, 0) FROM workspaces w
             LEFT JOIN runway_watch r ON r.workspace_id = w.id
             WHERE w.id > ?1 AND w.plan_id IS NOT NULL ORDER BY w.id LIMIT ?2",
            &[t(&after), i(limit)],
        )
        .await?;
    // Round the table: a short batch means the next sweep starts again from the first.
    let next_after = if (rows.len() as i64) < limit {
        String::new()
    } else {
        rows.last()
            .map(|row| text(row, 0))
            .transpose()?
            .unwrap_or_default()
    };
    let mut changes = Vec::new();
    for row in &rows {
        let (workspace_id, was_low) = (text(row, 0)?, int(row, 1)? == 1);
        let ws = crate::workspace::get(db, &workspace_id).await?;
        let now = ws.now(real_now_secs);
        let grants = crate::grants::runway_of(db, &ws, now).await?;
        let runway = crate::runway::load(db, catalog, &ws, now, grants).await?;
        let short = threshold_days > 0
            && ws.exhausted_at.is_none()
            && runway.status == crate::runway::RunwayStatus::Forecast
            && runway
                .days_left
                .is_some_and(|days| days < Decimal::from(threshold_days));
        if short != was_low {
            changes.push((workspace_id, short, now, runway));
        }
    }
    let save_cursor = async |db: &S| -> Result<()> {
        db.execute(
            "INSERT INTO sweep_cursors (name, after) VALUES ('runway', ?1)
             ON CONFLICT (name) DO UPDATE SET after = excluded.after",
            &[t(&next_after)],
        )
        .await?;
        Ok(())
    };
    if changes.is_empty() {
        // The usual pass: one statement, no transaction.
        save_cursor(db).await?;
        return Ok(0);
    }
    crate::tx::immediate(db, async |db| {
        let mut written = 0;
        for (workspace_id, short, now, runway) in &changes {
            let changed = db
                .query(
                    "INSERT INTO runway_watch (workspace_id, low, checked_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (workspace_id) DO UPDATE SET low = excluded.low, checked_at = excluded.checked_at
                     WHERE runway_watch.low <> excluded.low
                     RETURNING low",
                    &[t(workspace_id), i(i64::from(*short)), i(real_now_secs)],
                )
                .await?;
            if *short && !changed.is_empty() {
                let suggested = runway.suggested_auto_recharge.as_ref();
                record(
                    db,
                    workspace_id,
                    "runway.low",
                    &json!({
                        "threshold_days": threshold_days,
                        "days_left": runway.days_left,
                        "runs_out_at": runway.runs_out_at,
                        "average_daily_spend_7d": runway.average_daily_spend_7d,
                        "average_daily_spend_30d": runway.average_daily_spend_30d,
                        "suggested_threshold": suggested.map(|s| s.threshold),
                        "suggested_amount": suggested.map(|s| s.amount),
                    }),
                    *now,
                    real_now_secs,
                )
                .await?;
                written += 1;
            }
        }
        save_cursor(db).await?;
        Ok(written)
    })
    .await
}

/// The operator's list, newest first, with cursor paging.
pub async fn list<S: Storage>(
    db: &S,
    catalog: &Catalog,
    filter: &NotificationFilter,
) -> Result<NotificationPage> {
    let limit = crate::views::page_limit(filter.limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let cursor = match &filter.cursor {
        None => i64::MAX,
        Some(cursor) => parse_event_id(cursor)
            .ok_or_else(|| bad_query("cursor", "cursor is not a cursor this API returned"))?,
    };
    if let Some(status) = &filter.status
        && !DELIVERY_STATUSES.contains(&status.as_str())
    {
        return Err(bad_query(
            "status",
            "status must be pending, delivered or failed",
        ));
    }
    if let Some(kind) = &filter.kind
        && !EVENT_TYPES.contains(&kind.as_str())
    {
        return Err(bad_query("type", "type is not an event type"));
    }
    if let Some(workspace) = &filter.workspace_id {
        crate::workspace::validate_id("workspace", workspace)?;
    }
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM notifications n JOIN workspaces w ON w.id = n.workspace_id
                 WHERE n.id < ?1 AND (?2 IS NULL OR n.workspace_id = ?2) AND (?3 IS NULL OR n.status = ?3)
                   AND (?4 IS NULL OR n.type = ?4)
                 ORDER BY n.id DESC LIMIT ?5"
            ),
            &[
                i(cursor),
                filter.workspace_id.as_deref().map_or(SqlValue::Null, t),
                filter.status.as_deref().map_or(SqlValue::Null, t),
                filter.kind.as_deref().map_or(SqlValue::Null, t),
                i(limit + 1),
            ],
        )
        .await?;
    let mut data = rows
        .iter()
        .take(limit as usize)
        .map(|row| notification_of(row, catalog))
        .collect::<Result<Vec<_>>>()?;
    let next_cursor = (rows.len() as i64 > limit)
        .then(|| data.last().map(|n| n.id.clone()))
        .flatten();
    data.truncate(limit as usize);
    Ok(NotificationPage { data, next_cursor })
}

/// Sends an event again as soon as a sender runs (whatever its status), with the same id, and
/// gives it a new retry window.
pub async fn redeliver<S: Storage>(
    db: &S,
    catalog: &Catalog,
    id: &str,
    real_now_secs: i64,
) -> Result<Notification> {
    let row_id = parse_event_id(id).ok_or(LedgerError::NotFound {
        what: "notification",
    })?;
    let updated = db
        .query(
            "UPDATE notifications SET status = 'pending', next_attempt_at = ?2, retry_until = ?3, delivered_at = NULL
             WHERE id = ?1 RETURNING id",
            &[i(row_id), i(real_now_secs), i(real_now_secs + RETRY_WINDOW_SECS)],
        )
        .await?;
    if updated.is_empty() {
        return Err(LedgerError::NotFound {
            what: "notification",
        });
    }
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM notifications n JOIN workspaces w ON w.id = n.workspace_id
                 WHERE n.id = ?1"
            ),
            &[i(row_id)],
        )
        .await?;
    let row = rows.first().ok_or(LedgerError::NotFound {
        what: "notification",
    })?;
    notification_of(row, catalog)
}

fn notification_of(row: &crate::Row, catalog: &Catalog) -> Result<Notification> {
    let row_id = int(row, 0)?;
    let workspace_id = text(row, 1)?;
    let kind = text(row, 2)?;
    let facts: Value = serde_json::from_str(&text(row, 3)?).unwrap_or(Value::Null);
    let occurred_at = int(row, 4)?;
    let status = text(row, 6)?;
    let currency = text(row, 13)?;
    let data = render(&kind, &facts, &currency, catalog);
    Ok(Notification {
        id: event_id(row_id),
        kind: kind.clone(),
        workspace_id: workspace_id.clone(),
        attempts: int(row, 7)?,
        created_at: calendar::rfc3339(int(row, 5)?),
        next_attempt_at: (status == "pending")
            .then(|| int(row, 8))
            .transpose()?
            .map(calendar::rfc3339),
        last_attempt_at: opt_int(row, 9)?.map(calendar::rfc3339),
        last_response_status: opt_int(row, 10)?,
        last_error: opt_text(row, 11)?,
        delivered_at: opt_int(row, 12)?.map(calendar::rfc3339),
        status,
        event: Event {
            id: event_id(row_id),
            kind,
            timestamp: calendar::rfc3339(occurred_at),
            workspace_id,
            data,
        },
    })
}

/// A micros fact as a decimal string ("0" when absent).
fn amount(facts: &Value, key: &str) -> Decimal {
    money::to_decimal(facts.get(key).and_then(Value::as_i64).unwrap_or(0))
}

fn fact_text(facts: &Value, key: &str) -> Value {
    facts
        .get(key)
        .and_then(Value::as_str)
        .map_or(Value::Null, |s| Value::String(s.to_owned()))
}

/// Why a payment failed, in the words the platform branches on.
pub fn failure_reason(failure_code: Option<&str>) -> &'static str {
    match failure_code {
        Some("card_declined") => "card_declined",
        Some("expired_card") => "expired_card",
        Some("authentication_required") => "authentication_required",
        Some("daily_cap_reached") => "daily_cap_reached",
        Some("monthly_cap_reached") => "monthly_cap_reached",
        _ => "processing_error",
    }
}

/// The `data` of an event: amounts as decimal strings, times in RFC 3339, and a sentence.
fn render(kind: &str, facts: &Value, currency: &str, catalog: &Catalog) -> Value {
    let balances = || {
        let plan = amount(facts, "plan_credits_micros");
        let wallet = amount(facts, "wallet_micros");
        (plan, wallet, plan + wallet)
    };
    match kind {
        "balance.low" => {
            let (plan, wallet, total) = balances();
            let level = amount(facts, "level_micros");
            json!({
                "level": level, "balance": total, "plan_credits_remaining": plan,
                "wallet_balance": wallet,
                "message": format!("The balance fell to {total} credits, at or below {level}. Top up or turn on auto-recharge to keep calls running."),
            })
        }
        "balance.depleted" => {
            let (plan, wallet, total) = balances();
            json!({
                "balance": total, "plan_credits_remaining": plan, "wallet_balance": wallet,
                "held": amount(facts, "held_micros"),
                "message": "No credits are left: outbound calls and messages have stopped. Top up to resume.",
            })
        }
        "balance.restored" => {
            let (plan, wallet, total) = balances();
            json!({
                "balance": total, "plan_credits_remaining": plan, "wallet_balance": wallet,
                "message": "Credits are available again: calls and messages work as before.",
            })
        }
        "grace.started" => {
            let ends_at = facts
                .get("grace_ends_at")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            json!({
                "grace_ends_at": calendar::rfc3339(ends_at),
                "message": format!("Inbound calls keep working until {} while the balance is empty.", calendar::rfc3339(ends_at)),
            })
        }
        "grace.ended" => {
            let reason = fact_text(facts, "reason");
            let message = if reason == "balance_restored" {
                "The grace period ended: the balance is back."
            } else {
                "The grace period is over: inbound calls stop until the balance is topped up."
            };
            json!({"reason": reason, "message": message})
        }
        "topup.succeeded" | "topup.failed" | "auto_recharge.succeeded" | "auto_recharge.failed" => {
            let money = amount(facts, "amount_micros");
            let credits = amount(facts, "credits_micros");
            let mut data = json!({
                "payment_id": fact_text(facts, "payment_id"), "amount": money, "currency": currency,
                "credits": credits,
            });
            if kind.ends_with(".failed") {
                let reason = failure_reason(facts.get("failure_code").and_then(Value::as_str));
                data["reason"] = json!(reason);
                data["message"] = match facts.get("failure_message").and_then(Value::as_str) {
                    Some(message) => json!(message),
                    None => json!(format!(
                        "The charge of {money} {currency} failed ({reason})."
                    )),
                };
                if reason == "daily_cap_reached" {
                    data["max_per_day"] = json!(catalog.settings().auto_recharge_max_per_day);
                }
                if reason == "monthly_cap_reached" {
                    data["max_per_month"] = json!(amount(facts, "max_per_month_micros"));
                    data["spent_this_month"] = json!(amount(facts, "spent_this_month_micros"));
                }
            } else {
                data["message"] = json!(format!(
                    "{credits} credits were added for {money} {currency}."
                ));
            }
            data
        }
        "auto_recharge.cap_warning" => {
            let percent = facts.get("percent").and_then(Value::as_i64).unwrap_or(0);
            let spent = amount(facts, "spent_this_month_micros");
            let cap = amount(facts, "max_per_month_micros");
            json!({
                "percent": percent, "spent_this_month": spent, "max_per_month": cap,
                "currency": currency, "month": fact_text(facts, "month"),
                "message": format!("Automatic recharges this month reached {spent} {currency}, {percent}% of the monthly cap of {cap} {currency}."),
            })
        }
        "auto_recharge.disabled" => json!({
            "warning": fact_text(facts, "warning"),
            "message": facts.get("warning").and_then(Value::as_str)
                .unwrap_or("Auto-recharge was turned off."),
        }),
        "payment.refunded" | "payment.disputed" => {
            let (plan, wallet, _) = balances();
            let credits = amount(facts, "credits_micros");
            let verb = if kind == "payment.refunded" {
                "refunded"
            } else {
                "disputed"
            };
            json!({
                "reference": fact_text(facts, "reference"), "credits": credits,
                "plan_credits_remaining": plan, "wallet_balance": wallet,
                "message": format!("A payment was {verb}: {credits} credits were taken back."),
            })
        }
        "plan.renewed" => {
            let granted = amount(facts, "granted_micros");
            json!({
                "plan_id": fact_text(facts, "plan_id"),
                "cycle_start": calendar::rfc3339(facts.get("cycle_start_at").and_then(Value::as_i64).unwrap_or(0)),
                "cycle_end": calendar::rfc3339(facts.get("cycle_end_at").and_then(Value::as_i64).unwrap_or(0)),
                "credits_granted": granted,
                "credits_rolled_over": amount(facts, "rolled_over_micros"),
                "credits_expired": amount(facts, "expired_micros"),
                "awaiting_payment": facts.get("awaiting_payment").and_then(Value::as_bool).unwrap_or(false),
                "message": format!("The plan renewed with {granted} credits."),
            })
        }
        "plan.changed" => json!({
            "from_plan_id": fact_text(facts, "from_plan_id"),
            "to_plan_id": fact_text(facts, "to_plan_id"),
        }),
        "subscription.past_due" => json!({
            "plan_id": fact_text(facts, "plan_id"),
            "message": "The subscription's last invoice is unpaid. Update the card to keep the plan.",
        }),
        "agent.spend_limit.warning" | "agent.spend_limit.reached" => {
            let limit = amount(facts, "limit_micros");
            let percent = facts.get("percent").and_then(Value::as_i64).unwrap_or(0);
            json!({
                "agent_id": fact_text(facts, "agent_id"), "monthly_spend_limit": limit,
                "spent": amount(facts, "spent_micros"), "percent": percent,
                "message": format!("The agent has spent {percent}% of its monthly limit of {limit} credits."),
            })
        }
        "runway.low" => {
            let days_left = fact_text(facts, "days_left");
            let days = days_left.as_str().unwrap_or("0").to_owned();
            json!({
                "days_left": days_left,
                "runs_out_at": fact_text(facts, "runs_out_at"),
                "threshold_days": facts.get("threshold_days").cloned().unwrap_or(Value::Null),
                "average_daily_spend_7d": fact_text(facts, "average_daily_spend_7d"),
                "average_daily_spend_30d": fact_text(facts, "average_daily_spend_30d"),
                "suggested_auto_recharge": {
                    "threshold": fact_text(facts, "suggested_threshold"),
                    "amount": fact_text(facts, "suggested_amount"),
                    "currency": currency,
                },
                "message": format!("At the last 7 days' usage the balance lasts about {days} more days. Top up or turn on auto-recharge."),
            })
        }
        "credits.granted" => {
            let granted = amount(facts, "amount_micros");
            let expires_at = facts.get("expires_at").and_then(Value::as_i64);
            json!({
                "grant_id": fact_text(facts, "grant_id"), "name": fact_text(facts, "name"),
                "category": fact_text(facts, "category"), "amount": granted,
                "effective_at": calendar::rfc3339(facts.get("effective_at").and_then(Value::as_i64).unwrap_or(0)),
                "expires_at": expires_at.map(calendar::rfc3339),
                "message": match expires_at {
                    Some(at) => format!("{granted} credits were granted; they expire at {}.", calendar::rfc3339(at)),
                    None => format!("{granted} credits were granted."),
                },
            })
        }
        "credits.expiring" => {
            let remaining = amount(facts, "remaining_micros");
            let expires_at =
                calendar::rfc3339(facts.get("expires_at").and_then(Value::as_i64).unwrap_or(0));
            json!({
                "grant_id": fact_text(facts, "grant_id"), "name": fact_text(facts, "name"),
                "remaining": remaining, "expires_at": expires_at,
                "days_left": facts.get("days_left").cloned().unwrap_or(Value::Null),
                "message": format!("{remaining} granted credits expire at {expires_at} unless used."),
            })
        }
        "credits.expired" => {
            let expired = amount(facts, "expired_micros");
            json!({
                "grant_id": fact_text(facts, "grant_id"), "name": fact_text(facts, "name"),
                "expired": expired, "remaining": amount(facts, "remaining_micros"),
                "expires_at": calendar::rfc3339(facts.get("expires_at").and_then(Value::as_i64).unwrap_or(0)),
                "message": format!("{expired} granted credits expired unused."),
            })
        }
        _ => facts.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_spread_and_stay_bounded() {
        for (attempts, base) in [(1, 5), (2, 30), (3, 120), (10, 43_200), (50, 43_200)] {
            for row in 1..200 {
                let delay = retry_delay_secs(attempts, row);
                assert!(
                    (base..=base + base / 5).contains(&delay),
                    "{attempts} {row} {delay}"
                );
            }
        }
        // Spread: events written together do not all come back in the same second.
        let distinct: std::collections::BTreeSet<i64> =
            (1..100).map(|row| retry_delay_secs(2, row)).collect();
        assert!(distinct.len() > 3, "{distinct:?}");
        // Within 3 days an event is tried about a dozen times.
        let (mut elapsed, mut tries) = (0, 0);
        while elapsed <= RETRY_WINDOW_SECS {
            tries += 1;
            elapsed += retry_delay_secs(tries, 7);
        }
        assert!((10..=16).contains(&tries), "{tries}");
    }

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(event_id(42), "evt_42");
        assert_eq!(parse_event_id("evt_42"), Some(42));
        assert_eq!(parse_event_id("evt_0"), None);
        assert_eq!(parse_event_id("42"), None);
        assert_eq!(parse_event_id("evt_x"), None);
    }

    #[test]
    fn failure_reasons() {
        assert_eq!(failure_reason(Some("card_declined")), "card_declined");
        assert_eq!(
            failure_reason(Some("payment_processing_error")),
            "processing_error"
        );
        assert_eq!(
            failure_reason(Some("monthly_cap_reached")),
            "monthly_cap_reached"
        );
        assert_eq!(failure_reason(None), "processing_error");
    }
}
