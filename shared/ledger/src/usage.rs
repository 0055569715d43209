//! Usage debits (R2, R4, R6, R7, R8): single and batch, idempotent by event id.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::agents::{self, AgentState, Funding};
use crate::calendar;
use crate::catalog::{self, Catalog, Direction, UsageKind};
use crate::fingerprint::Fingerprint;
use crate::guarded;
use crate::money::{self, MICROS_PER_UNIT};
use crate::row::{i, int, opt_text, t, text};
use crate::storage::Storage;
use crate::tx;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, Result};

mod rounds;

/// The most events one batch may carry.
pub const BATCH_EVENTS_MAX: usize = 1_000;

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
    /// When it happened (RFC 3339).
    pub occurred_at: String,
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
    /// Wallet after.
    pub wallet_balance: Decimal,
    /// Plan credits after.
    pub plan_credits_remaining: Decimal,
    /// The history row.
    pub transaction_id: i64,
    /// Whether the wallet is now under the auto-recharge threshold with a charge due (R11):
    /// the caller may start the recharge at once rather than wait for the sweep.
    #[serde(default)]
    pub auto_recharge_due: bool,
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
    calendar::parse_rfc3339("occurred_at", &event.occurred_at)?;
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
            if quantity_micros % MICROS_PER_UNIT != 0 || quantity_micros / MICROS_PER_UNIT > 86_400
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
/// statement guarded by what it read (one host round trip holding the write lock, where a
/// `BEGIN IMMEDIATE` ... `COMMIT` debit holds it for five). If another writer changed any of it
/// meanwhile the write changes nothing and the debit starts again; after two such races (a busy
/// workspace) it runs inside one write transaction (`guarded.rs`).
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
    let fingerprint = fingerprint(event)?;
    for _ in 0..unlocked_attempts {
        if let Some(result) =
            debit_unlocked(db, catalog, event, &rated, &fingerprint, real_now_secs).await?
        {
            return Ok(result);
        }
    }
    tx::immediate(db, async |db| {
        debit_in_tx(db, event, &rated, &fingerprint, real_now_secs).await
    })
    .await
}

/// Debits up to [`BATCH_EVENTS_MAX`] events in ONE transaction (one durable commit); each event
/// succeeds or is refused on its own and a refused event writes nothing. The events are debited
/// in rounds (`rounds.rs`): each round reads and writes the next event of every workspace of the
/// batch in one statement each. Answers are in the events' order.
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
            Ok((rated, fingerprint)) => checked.push((index, rated, fingerprint)),
            Err(refused) => answers[index] = Some(Err(refused)),
        }
    }
    let debited = tx::immediate(db, async |db| {
        if checked.len() < events.len() {
            // Refusals priced before the transaction only stand against the stored catalog.
            catalog::ensure_current(db, catalog).await?;
        }
        rounds::debit_in_rounds(db, events, &checked, real_now_secs).await
    })
    .await?;
    for (index, answer) in debited {
        answers[index] = Some(answer);
    }
    answers
        .into_iter()
        .map(|answer| {
            answer.ok_or_else(|| {
                LedgerError::Storage(crate::StorageError::from_sqlite_message(
                    "a batch event was left unanswered",
                ))
            })
        })
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
    event: &UsageEvent,
    rated: &Rated,
    real_now_secs: i64,
) -> Result<Decided> {
    if ws.plan_id.is_none() {
        return Err(LedgerError::BillingNotConfigured);
    }
    let funding = agents::fund(ws, agent, rated.charge_micros)?;
    let wallet_after_micros = ws.wallet_micros - funding.from_wallet_micros;
    Ok(Decided {
        now: ws.now(real_now_secs),
        occurred_at: calendar::parse_rfc3339("occurred_at", &event.occurred_at)?,
        funding,
        result: DebitResult {
            id: event.id.clone(),
            charged: money::to_decimal(funding.total()),
            from_plan: money::to_decimal(funding.from_plan_micros),
            from_wallet: money::to_decimal(funding.from_wallet_micros),
            wallet_balance: money::to_decimal(wallet_after_micros),
            plan_credits_remaining: money::to_decimal(
                ws.plan_credits_micros - funding.from_plan_micros,
            ),
            transaction_id: 0,
            auto_recharge_due: recharge_due(ws, funding, wallet_after_micros),
        },
    })
}

/// A debit read and decided: its first result if it is a replay, else the state it was decided
/// from (with the stamp its guarded write checks) and the decision.
enum Prepared {
    Replay(Box<DebitResult>),
    Fresh(Box<(WorkspaceState, AgentState, Vec<crate::SqlValue>, Decided)>),
}

async fn read_and_decide<S: Storage>(
    db: &S,
    event: &UsageEvent,
    rated: &Rated,
    fingerprint: &Fingerprint,
    real_now_secs: i64,
) -> Result<Prepared> {
    let read = read_for_debit(db, event, fingerprint, real_now_secs).await?;
    prepare(read, event, rated, real_now_secs)
}

/// Decides a debit from what it read.
fn prepare(
    read: DebitRead,
    event: &UsageEvent,
    rated: &Rated,
    real_now_secs: i64,
) -> Result<Prepared> {
    match read {
        DebitRead::Replay(previous) => Ok(Prepared::Replay(previous)),
        DebitRead::Fresh {
            catalog_version, ..
        } if catalog_version != rated.catalog_version => Err(LedgerError::CatalogChanged),
        DebitRead::Fresh {
            ws, agent, stamp, ..
        } => {
            let decided = decide(&ws, &agent, event, rated, real_now_secs)?;
            Ok(Prepared::Fresh(Box::new((*ws, *agent, stamp, decided))))
        }
    }
}

fn result_json(result: &DebitResult) -> Result<String> {
    serde_json::to_string(result).map_err(|e| invalid("result", &e.to_string()))
}

/// The debit inside a write transaction (the locked path, and every event of a batch): the same
/// read, decision and write as [`debit_unlocked`], the write unguarded since the lock is held.
async fn debit_in_tx<S: Storage>(
    db: &S,
    event: &UsageEvent,
    rated: &Rated,
    fingerprint: &Fingerprint,
    real_now_secs: i64,
) -> Result<DebitResult> {
    let (ws, agent, _, decided) =
        match read_and_decide(db, event, rated, fingerprint, real_now_secs).await? {
            Prepared::Replay(previous) => return Ok(*previous),
            Prepared::Fresh(fresh) => *fresh,
        };
    let values = debit_values(event, rated, fingerprint, &ws, &agent, &decided)?;
    let (sql, params) = debit_write(values, None);
    let transaction_id = guarded::write_locked(db, &sql, &params).await?;
    Ok(DebitResult {
        transaction_id,
        ..decided.result
    })
}

/// What a debit's decision depends on, re-read by its one-statement write: `?1` is the workspace,
/// `?2` the agent, `?3` the event id. Any change (a posting, a hold, a renewal, a setting, the
/// agent's spend or limits, the same event debited) makes the write a no-op.
pub(crate) const DEBIT_STAMP: &str = "workspaces.plan_id, workspaces.plan_credits_micros,
    workspaces.wallet_micros, workspaces.held_plan_micros, workspaces.held_wallet_micros,
    workspaces.exhausted_at, workspaces.cycle_start_at, workspaces.test_clock_at,
    workspaces.timezone, workspaces.auto_recharge_enabled,
    workspaces.auto_recharge_threshold_credits_micros,
    a.overage_policy, a.monthly_spend_limit_micros, a.spend_cycle_start_at, a.cycle_spend_micros,
    (SELECT COALESCE(SUM(c.held_plan_micros + c.held_wallet_micros), 0) FROM calls c
     WHERE c.workspace_id = ?1 AND c.agent_id = ?2 AND c.status = 'active'),
    (SELECT COUNT(*) FROM usage_events WHERE workspace_id = ?1 AND event_id = ?3)";

/// How many columns [`DEBIT_STAMP`] selects.
const DEBIT_STAMP_COLUMN_COUNT: usize = 17;

/// The first parameter of [`debit_write`]'s guard (`guarded::unchanged`).
const DEBIT_GUARD_FIRST_PARAM: usize = 18;

/// The fast path of [`record`] (see `guarded.rs`): reads, decides, then makes the write guarded
/// by the stamp and the catalog version. `None`: another writer got there first; nothing was
/// written.
async fn debit_unlocked<S: Storage>(
    db: &S,
    catalog: &Catalog,
    event: &UsageEvent,
    rated: &Rated,
    fingerprint: &Fingerprint,
    real_now_secs: i64,
) -> Result<Option<DebitResult>> {
    let (ws, agent, stamp, decided) =
        match read_and_decide(db, event, rated, fingerprint, real_now_secs).await? {
            Prepared::Replay(previous) => return Ok(Some(*previous)),
            Prepared::Fresh(fresh) => *fresh,
        };
    let guard = guarded::guard_params(catalog.version, stamp);
    let values = debit_values(event, rated, fingerprint, &ws, &agent, &decided)?;
    let (sql, params) = debit_write(values, Some(guard));
    let written = guarded::write(db, &sql, &params).await?;
    Ok(written.map(|transaction_id| DebitResult {
        transaction_id,
        ..decided.result
    }))
}

/// A decided debit's ONE statement: a row into the view `usage_debit`, whose trigger
/// (schema.rs) posts the history row, adds the agent's spend, starts the grace period if nothing
/// is left and stores the replay record; `values` are its [`debit_values`]. With `guard`
/// ([`guarded::guard_params`]) the row is selected only if nothing the decision read has changed;
/// without, the caller holds the write lock.
fn debit_write(
    values: Vec<crate::SqlValue>,
    guard: Option<Vec<crate::SqlValue>>,
) -> (String, Vec<crate::SqlValue>) {
    let condition = match guard {
        Some(_) => format!(
            "WHERE {}",
            guarded::unchanged(
                DEBIT_STAMP,
                DEBIT_STAMP_COLUMN_COUNT,
                DEBIT_GUARD_FIRST_PARAM
            )
        ),
        None => String::new(),
    };
    let sql = format!(
        "INSERT INTO usage_debit ({DEBIT_WRITE_COLUMNS})
         SELECT ?1, ?2, ?3, ?4, ?5, (SELECT COALESCE(MAX(id), 0) + 1 FROM transactions), ?6, ?7,
             ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17
         {condition}
         RETURNING transaction_id"
    );
    let mut params = values;
    params.extend(guard.into_iter().flatten());
    (sql, params)
}

/// The columns of `usage_debit` a debit writes: [`debit_values`] in order, with the transaction
/// id (allocated by the write itself) sixth.
const DEBIT_WRITE_COLUMNS: &str = "workspace_id, agent_id, event_id, request_hash, result,
    transaction_id, kind, quantity_micros, unit, rate_micros, plan_delta_micros,
    wallet_delta_micros, plan_after_micros, wallet_after_micros, occurred_at, created_at,
    spend_cycle_start_at, call_day";

/// How many values [`debit_values`] gives.
const DEBIT_VALUE_COUNT: usize = 17;

/// The values of a decided debit's row in `usage_debit`, in [`DEBIT_WRITE_COLUMNS`] order
/// without the transaction id.
fn debit_values(
    event: &UsageEvent,
    rated: &Rated,
    fingerprint: &Fingerprint,
    ws: &WorkspaceState,
    agent: &AgentState,
    decided: &Decided,
) -> Result<Vec<crate::SqlValue>> {
    let funding = decided.funding;
    Ok(vec![
        t(&ws.id),
        t(&agent.agent_id),
        t(&event.id),
        t(fingerprint.stored()),
        t(result_json(&decided.result)?),
        t(event.kind.as_str()),
        i(rated.quantity_micros),
        t(rated.unit),
        i(rated.rate_micros),
        i(-funding.from_plan_micros),
        i(-funding.from_wallet_micros),
        i(ws.plan_credits_micros - funding.from_plan_micros),
        i(ws.wallet_micros - funding.from_wallet_micros),
        i(decided.occurred_at),
        i(decided.now),
        i(ws.cycle_start_at.unwrap_or(0)),
        t(&agent.today),
    ])
}

/// Whether a debit left the wallet under an armed auto-recharge threshold.
pub(crate) fn recharge_due(
    ws: &WorkspaceState,
    funding: Funding,
    wallet_after_micros: i64,
) -> bool {
    ws.auto_recharge_enabled
        && funding.from_wallet_micros > 0
        && wallet_after_micros - ws.held_wallet_micros < ws.auto_recharge_threshold_credits_micros
}

/// What a debit reads before it writes.
enum DebitRead {
    /// The event was already debited: its first result.
    Replay(Box<DebitResult>),
    /// The workspace and the agent, for a new debit, and the stamp [`debit_unlocked`] guards.
    Fresh {
        ws: Box<WorkspaceState>,
        agent: Box<AgentState>,
        stamp: Vec<crate::SqlValue>,
        /// The stored catalog version when it was read.
        catalog_version: i64,
    },
}

/// The columns a debit reads (`?1` workspace, `?2` agent, `?3` event id): the workspace, the
/// agent, the replay record, the stamp and the stored catalog version (so that a cached catalog
/// needs no query of its own); [`debit_read_of`] parses them.
fn debit_read_columns() -> String {
    format!(
        "{WORKSPACE_COLUMNS}, {AGENT_COLUMNS},
         (SELECT request_hash FROM usage_events WHERE workspace_id = ?1 AND event_id = ?3),
         (SELECT result FROM usage_events WHERE workspace_id = ?1 AND event_id = ?3),
         {DEBIT_STAMP}, {CURRENT_VERSION}",
        WORKSPACE_COLUMNS = workspace::WORKSPACE_COLUMNS,
        AGENT_COLUMNS = agents::AGENT_COLUMNS,
        CURRENT_VERSION = catalog::CURRENT_VERSION,
    )
}

/// How many columns [`debit_read_columns`] selects.
const DEBIT_READ_COLUMN_COUNT: usize = workspace::WORKSPACE_COLUMN_COUNT
    + agents::AGENT_COLUMN_COUNT
    + 2
    + DEBIT_STAMP_COLUMN_COUNT
    + 1;

/// Reads the replay record, the workspace and the agent in ONE statement (each statement is a
/// host round trip in Wasm): unknown workspace is 404, a replay with another body is 409.
async fn read_for_debit<S: Storage>(
    db: &S,
    event: &UsageEvent,
    fingerprint: &Fingerprint,
    real_now_secs: i64,
) -> Result<DebitRead> {
    let sql = format!(
        "SELECT {columns}
         FROM workspaces LEFT JOIN agents a ON a.workspace_id = workspaces.id AND a.agent_id = ?2
         WHERE workspaces.id = ?1",
        columns = debit_read_columns(),
    );
    let rows = db
        .query(
            &sql,
            &[t(&event.workspace_id), t(&event.agent_id), t(&event.id)],
        )
        .await?;
    let row = rows
        .first()
        .ok_or(LedgerError::NotFound { what: "workspace" })?;
    debit_read_of(row, event, fingerprint, real_now_secs)
}

/// Parses a row of [`debit_read_columns`]: a replay (409 if its body differs), or the state.
fn debit_read_of(
    row: &crate::Row,
    event: &UsageEvent,
    fingerprint: &Fingerprint,
    real_now_secs: i64,
) -> Result<DebitRead> {
    const REPLAY_FIRST: usize = workspace::WORKSPACE_COLUMN_COUNT + agents::AGENT_COLUMN_COUNT;
    if let Some(request_hash) = opt_text(row, REPLAY_FIRST)? {
        if !fingerprint.matches(&request_hash) {
            return Err(LedgerError::IdempotencyConflict);
        }
        let previous = serde_json::from_str(&text(row, REPLAY_FIRST + 1)?).map_err(|e| {
            LedgerError::Storage(crate::StorageError::from_sqlite_message(format!(
                "stored result unreadable: {e}"
            )))
        })?;
        return Ok(DebitRead::Replay(Box::new(previous)));
    }
    let ws = workspace::from_row(row)?;
    let agent = agents::from_columns(
        &ws,
        &event.agent_id,
        ws.now(real_now_secs),
        row,
        workspace::WORKSPACE_COLUMN_COUNT,
    )?;
    let stamp = guarded::stamp_of(row, REPLAY_FIRST + 2, DEBIT_STAMP_COLUMN_COUNT)?;
    Ok(DebitRead::Fresh {
        ws: Box::new(ws),
        agent: Box::new(agent),
        stamp,
        catalog_version: int(row, DEBIT_READ_COLUMN_COUNT - 1)?,
    })
}
