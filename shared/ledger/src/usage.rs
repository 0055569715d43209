//! Usage debits (R2, R4, R6, R7, R8): single and batch, idempotent by event id.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::agents::{self, AgentState, Funding};
use crate::calendar::{self, SECS_PER_DAY};
use crate::catalog::{self, Catalog, Direction, UsageKind};
use crate::fingerprint::Fingerprint;
use crate::guarded;
use crate::money::{self, MICROS_PER_UNIT};
use crate::storage::Storage;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, Result};

mod set;

/// The most events one batch may carry.
pub const BATCH_EVENTS_MAX: usize = 1_000;

/// How long after it happened an event may still be reported: 35 days, as Stripe's meter events
/// (a late report of a platform's outage still lands in the right cycle's history).
pub const OCCURRED_AT_PAST_MAX_SECS: i64 = 35 * SECS_PER_DAY;

/// How far ahead of the workspace's time an event may say it happened: 5 minutes of clock skew,
/// as Stripe's meter events.
pub const OCCURRED_AT_FUTURE_MAX_SECS: i64 = 5 * 60;

/// One usage event (`POST /v1/usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// Client-chosen id: a replay returns the first result and moves nothing (R8).
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// Agent (created with defaults on first use).
    pub agent_id: String,
    /// What was used.
    pub kind: UsageKind,
    /// Messages, SMS segments, tasks, speech-to-text minutes; for `call`, seconds.
    pub quantity: Decimal,
    /// When it happened (RFC 3339); the time it is received when absent. At most
    /// [`OCCURRED_AT_PAST_MAX_SECS`] before the workspace's time and
    /// [`OCCURRED_AT_FUTURE_MAX_SECS`] after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// Calls and messages: direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Calls: the callee's E.164 number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Calls: the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The result of a debit, stored with its event id and returned again on replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebitResult {
    /// The event id.
    pub id: String,
    /// Credits charged.
    pub charged: Decimal,
    /// Of which from plan credits.
    pub from_plan: Decimal,
    /// Of which from the wallet.
    pub from_wallet: Decimal,
    /// Credits grants paid (docs/grants.md); 0 in answers stored before grants existed.
    #[serde(default)]
    pub from_grants: Decimal,
    /// Wallet after.
    pub wallet_balance: Decimal,
    /// Plan credits after.
    pub plan_credits_remaining: Decimal,
    /// The history row.
    pub transaction_id: i64,
}

struct Rated {
    /// The catalog version it was priced with: the debit's read checks it is still the stored one.
    catalog_version: i64,
    charge_micros: i64,
    quantity_micros: i64,
    unit: &'static str,
    rate_micros: i64,
}

fn invalid(field: &'static str, message: &str) -> LedgerError {
    LedgerError::invalid("validation_error", field, message)
}

/// Checks an event and prices it (no storage access: bad input is refused before any write).
fn rate(catalog: &Catalog, event: &UsageEvent) -> Result<Rated> {
    workspace::validate_id("id", &event.id)?;
    workspace::validate_id("workspace_id", &event.workspace_id)?;
    workspace::validate_id("agent_id", &event.agent_id)?;
    if let Some(occurred_at) = &event.occurred_at {
        calendar::parse_rfc3339("occurred_at", occurred_at)?;
    }
    let quantity_micros = money::decimal_to_micros("quantity", event.quantity, false)?;
    match event.kind {
        UsageKind::Call => {
            let direction = event
                .direction
                .ok_or_else(|| invalid("direction", "a call needs a direction"))?;
            let to = event
                .to
                .as_deref()
                .ok_or_else(|| invalid("to", "a call needs a to number"))?;
            catalog::validate_e164("to", to)?;
            if quantity_micros % MICROS_PER_UNIT != 0
                || quantity_micros / MICROS_PER_UNIT > SECS_PER_DAY
            {
                return Err(invalid(
                    "quantity",
                    "a call's quantity is whole seconds, at most 86400",
                ));
            }
            let call = catalog.call_rate(direction, to, catalog::number_type_of(to))?;
            let billed_secs = call.billed_secs(quantity_micros / MICROS_PER_UNIT);
            Ok(Rated {
                catalog_version: catalog.version,
                charge_micros: call.charge_for_secs(billed_secs),
                quantity_micros: billed_secs * MICROS_PER_UNIT,
                unit: "second",
                rate_micros: call.per_minute_micros,
            })
        }
        kind => {
            if kind != UsageKind::Stt && quantity_micros % MICROS_PER_UNIT != 0 {
                return Err(invalid("quantity", "this kind counts whole units"));
            }
            let rate_micros = catalog.unit_rate_micros(kind, event.direction)?;
            Ok(Rated {
                catalog_version: catalog.version,
                charge_micros: money::charge_micros(rate_micros, quantity_micros),
                quantity_micros,
                unit: kind.unit(),
                rate_micros,
            })
        }
    }
}

fn fingerprint(event: &UsageEvent) -> Result<Fingerprint> {
    Fingerprint::of("event", event)
}

/// Debits one usage event, atomically.
///
/// The fast path reads without a transaction, decides in Rust, and writes everything in ONE
/// statement guarded by what it read (`guarded.rs`). If another writer changed any of it
/// meanwhile the write changes nothing and the debit starts again; after two such races (a busy
/// workspace) it runs as a batch of one inside one write transaction.
pub async fn record<S: Storage>(
    db: &S,
    catalog: &Catalog,
    event: &UsageEvent,
    real_now_secs: i64,
) -> Result<DebitResult> {
    record_with_attempts(db, catalog, event, real_now_secs, guarded::ATTEMPTS).await
}

/// [`record`] with a chosen number of unlocked attempts (tests force the locked path with 0).
#[doc(hidden)]
pub async fn record_with_attempts<S: Storage>(
    db: &S,
    catalog: &Catalog,
    event: &UsageEvent,
    real_now_secs: i64,
    unlocked_attempts: u32,
) -> Result<DebitResult> {
    let rated = catalog::priced_before_reading(db, catalog, rate(catalog, event)).await?;
    let checked = [set::Checked {
        index: 0,
        event,
        rated,
        fingerprint: fingerprint(event)?,
    }];
    guarded::optimistic(
        db,
        unlocked_attempts,
        async |db| set::debit_unlocked(db, &checked[0], real_now_secs).await,
        async |db| {
            let mut answers = set::debit_locked(db, &checked, real_now_secs).await?;
            answers.pop().map_or_else(
                || Err(guarded::storage("a debit was left unanswered")),
                |a| a.1,
            )
        },
    )
    .await
}

/// Debits up to [`BATCH_EVENTS_MAX`] events in ONE transaction (one durable commit); each event
/// succeeds or is refused on its own and a refused event writes nothing. The events are read,
/// decided and written as one set (`set.rs`): one read and one write for the whole batch, with
/// the answers and rows that debiting them one after another gives. Answers are in the events'
/// order.
pub async fn record_batch<S: Storage>(
    db: &S,
    catalog: &Catalog,
    events: &[UsageEvent],
    real_now_secs: i64,
) -> Result<Vec<Result<DebitResult>>> {
    if events.is_empty() || events.len() > BATCH_EVENTS_MAX {
        return Err(invalid("events", "a batch has 1 to 1000 events"));
    }
    let mut answers: Vec<Option<Result<DebitResult>>> = vec![None; events.len()];
    let mut checked = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        match rate(catalog, event).and_then(|rated| Ok((rated, fingerprint(event)?))) {
            Ok((rated, fingerprint)) => checked.push(set::Checked {
                index,
                event,
                rated,
                fingerprint,
            }),
            Err(refused) => answers[index] = Some(Err(refused)),
        }
    }
    let debited = crate::tx::immediate(db, async |db| {
        if checked.len() < events.len() {
            // Refusals priced before the transaction only stand against the stored catalog.
            catalog::ensure_current(db, catalog).await?;
        }
        set::debit_locked(db, &checked, real_now_secs).await
    })
    .await?;
    for (index, answer) in debited {
        answers[index] = Some(answer);
    }
    answers
        .into_iter()
        .map(|answer| answer.ok_or_else(|| guarded::storage("a batch event was left unanswered")))
        .collect()
}

/// What a debit decided from the state it read: how it is funded, and its answer (but for the
/// transaction id, known once posted).
struct Decided {
    now: i64,
    occurred_at: i64,
    funding: Funding,
    result: DebitResult,
}

/// Decides a debit against the workspace and agent as read (R2, R3, R6, R7, R11).
fn decide(
    ws: &WorkspaceState,
    agent: &AgentState,
    grants: &[crate::grants::Spendable],
    event: &UsageEvent,
    rated: &Rated,
    real_now_secs: i64,
) -> Result<Decided> {
    if ws.plan_id.is_none() {
        return Err(LedgerError::BillingNotConfigured);
    }
    let now = ws.now(real_now_secs);
    let occurred_at = occurred_at(event, now)?;
    let funding = agents::fund(
        ws,
        agent,
        grants,
        event.kind.as_str(),
        now,
        rated.charge_micros,
    )?;
    let wallet_after_micros = ws.wallet_micros - funding.from_wallet_micros;
    let result = DebitResult {
        id: event.id.clone(),
        charged: money::to_decimal(funding.total()),
        from_plan: money::to_decimal(funding.from_plan_micros),
        from_wallet: money::to_decimal(funding.from_wallet_micros),
        from_grants: money::to_decimal(funding.grants_micros()),
        wallet_balance: money::to_decimal(wallet_after_micros),
        plan_credits_remaining: money::to_decimal(
            ws.plan_credits_micros - funding.from_plan_micros,
        ),
        transaction_id: 0,
    };
    Ok(Decided {
        now,
        occurred_at,
        funding,
        result,
    })
}

/// When an event happened, in the workspace's time `now` (test clocks included): as reported,
/// within the window a report may be late or early, or `now` when not reported.
fn occurred_at(event: &UsageEvent, now: i64) -> Result<i64> {
    let Some(reported) = &event.occurred_at else {
        return Ok(now);
    };
    let at = calendar::parse_rfc3339("occurred_at", reported)?;
    if at < now - OCCURRED_AT_PAST_MAX_SECS || at > now + OCCURRED_AT_FUTURE_MAX_SECS {
        return Err(invalid(
            "occurred_at",
            "occurred_at must be within the last 35 days and at most 5 minutes ahead",
        ));
    }
    Ok(at)
}
