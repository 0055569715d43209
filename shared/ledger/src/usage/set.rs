//! Debits as a set: ONE read of every workspace, agent and replay record the events need, the
//! decisions in Rust, event after event, on that state as each debit leaves it, then ONE write of
//! every decided debit (`guarded.rs`). A single debit is a set of one; a batch of 1,000 events is
//! still one read and one write, whatever the number of workspaces.
//!
//! The decisions follow the events' order and carry each debit's effect (balances, the agent's
//! spend) to the next event of its workspace, so every answer and every row is what debiting the
//! events one after another gives, history ids included (`tests/batch_rounds.rs` compares both).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::LazyLock;

use super::{DebitResult, Decided, Rated, UsageEvent, decide};
use crate::agents::{AgentColumns, AgentState};
use crate::catalog;
use crate::fingerprint::Fingerprint;
use crate::grants::{self, Spendable};
use crate::guarded::{self, Attempt, Read, view_row};
use crate::row::{self, read_row};
use crate::storage::{Row, SqlValue, Storage};
use crate::workspace::WorkspaceState;
use crate::{LedgerError, Result};

/// A checked and priced event: its position in the batch, its price and its fingerprint.
pub(super) struct Checked<'a> {
    pub index: usize,
    pub event: &'a UsageEvent,
    pub rated: Rated,
    pub fingerprint: Fingerprint,
}

view_row! {
    /// A decided debit: a row of the view `usage_debit`, whose trigger (schema.rs) posts the
    /// history row, adds the agent's spend, starts the grace period if nothing is left and
    /// stores the replay record.
    struct DebitRow in "usage_debit" (transaction_id) {
        workspace_id: String,
        agent_id: String,
        event_id: String,
        request_hash: String,
        result: String,
        transaction_id: Option<i64>,
        kind: &'static str,
        quantity_micros: i64,
        unit: &'static str,
        rate_micros: i64,
        plan_delta_micros: i64,
        wallet_delta_micros: i64,
        plan_after_micros: i64,
        wallet_after_micros: i64,
        occurred_at: i64,
        created_at: i64,
        spend_cycle_start_at: i64,
        call_day: String,
        grant_delta_micros: i64,
        grant_split: Option<String>,
    }
}

read_row! {
    /// A row of [`READ`]: the workspace, the agent and the grants that may pay (a key that carries
    /// the state; the grants are read only if the workspace has live ones), the replay
    /// record (a key whose event was already debited), the catalog version; then, outside the
    /// stamp, the key's position and the largest history id.
    struct DebitRead in "" {
        ws: WorkspaceState,
        agent: AgentColumns,
        grants: Option<String> = grants::SPENDABLE_COLUMN.as_str(),
        replay_hash: Option<String> = "e.request_hash",
        replay_result: Option<String> = "e.result",
        catalog_version: i64 = catalog::CURRENT_VERSION,
        key: i64 = "g_key",
        last_transaction_id: i64 = "(SELECT COALESCE(MAX(id), 0) FROM transactions)",
    }
}

/// A debit's read, for any number of events: `?1` is a JSON array of `[workspace, agent,
/// event id, 1 if this row must carry the state]`. It gives a row for every key that carries
/// the state and every key whose event was already debited (its replay record).
static READ: LazyLock<Read> = LazyLock::new(|| {
    Read::of::<DebitRead>(
        2,
        "FROM (SELECT key AS g_key, value ->> 0 AS g_ws, value ->> 1 AS g_agent,
                 value ->> 2 AS g_event, value ->> 3 AS g_state FROM json_each(?1)) g
         JOIN workspaces ON workspaces.id = g_ws
         LEFT JOIN agents a ON a.workspace_id = g_ws AND a.agent_id = g_agent
         LEFT JOIN usage_events e ON e.workspace_id = g_ws AND e.event_id = g_event
         WHERE g_state OR e.event_id IS NOT NULL"
            .into(),
        1,
    )
});

/// The fast path of one debit: read, decide, and the guarded write. `Raced`: another writer got
/// there first and nothing was written.
pub(super) async fn debit_unlocked<S: Storage>(
    db: &S,
    checked: &Checked<'_>,
    real_now_secs: i64,
) -> Result<Attempt<DebitResult>> {
    let keys = keys(std::slice::from_ref(checked));
    let rows = db.query(&READ.sql(), &keys).await?;
    let mut set = decide_set(&rows, std::slice::from_ref(checked), real_now_secs)?;
    let Some(answer) = set.answers.pop() else {
        return Err(guarded::storage("a debit was left unanswered"));
    };
    if set.rows.is_empty() {
        return answer.map(Attempt::Done);
    }
    let stamp = match rows.first() {
        Some(row) => READ.stamp_of(row)?,
        None => return Err(guarded::storage("a debit decided without its read")),
    };
    // Unlocked, the next id is not known until the write: the statement allocates it.
    for row in &mut set.rows {
        row.transaction_id = None;
    }
    let (sql, params) = guarded::insert(&set.rows, Some((&READ, &keys, &stamp)))?;
    Ok(match guarded::write(db, &sql, &params).await? {
        Some(transaction_id) => Attempt::Done(DebitResult {
            transaction_id,
            ..answer?
        }),
        None => Attempt::Raced,
    })
}

/// Debits `checked` under the write lock the caller holds: one read, one write. An answer per
/// event, with its position. A failure (the database, or a catalog that changed) is returned and
/// the caller rolls everything back; a refused event is its own answer and writes nothing.
pub(super) async fn debit_locked<S: Storage>(
    db: &S,
    checked: &[Checked<'_>],
    real_now_secs: i64,
) -> Result<Vec<(usize, Result<DebitResult>)>> {
    if checked.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db.query(&READ.sql(), &keys(checked)).await?;
    let Set { mut answers, rows } = decide_set(&rows, checked, real_now_secs)?;
    if !rows.is_empty() {
        let (sql, params) = guarded::insert(&rows, None)?;
        db.execute(&sql, &params).await?;
    }
    Ok(checked
        .iter()
        .map(|c| c.index)
        .zip(answers.drain(..))
        .collect())
}

/// The read's keys: the first event of each (workspace, agent) carries the state.
fn keys(checked: &[Checked<'_>]) -> [SqlValue; 1] {
    let mut seen = std::collections::HashSet::new();
    let keys = checked
        .iter()
        .map(|c| {
            let e = c.event;
            let first = seen.insert((e.workspace_id.as_str(), e.agent_id.as_str()));
            serde_json::json!([e.workspace_id, e.agent_id, e.id, i64::from(first)])
        })
        .collect();
    [SqlValue::Text(serde_json::Value::Array(keys).to_string())]
}

/// The decisions of a set: an answer per event, in order, and the rows to write.
struct Set {
    answers: Vec<Result<DebitResult>>,
    rows: Vec<DebitRow>,
}

/// A workspace as the set's debits leave it.
struct WorkspaceRun {
    ws: WorkspaceState,
    /// Its grants that may pay, in spending order.
    grants: Vec<Spendable>,
    catalog_version: i64,
}

/// Decides every event of `checked` from the rows of [`READ`], in order. Ids of the history rows
/// follow the largest one read (the locked path writes them; the guarded write allocates its own).
fn decide_set(rows: &[Row], checked: &[Checked<'_>], real_now_secs: i64) -> Result<Set> {
    let mut workspaces: HashMap<String, WorkspaceRun> = HashMap::new();
    let mut agents: HashMap<(String, String), Result<AgentState>> = HashMap::new();
    let mut replays: HashMap<i64, (String, String)> = HashMap::new();
    let mut next_transaction_id = None;
    for row in rows {
        let read: DebitRead = row::decode_row(row)?;
        let key = read.key;
        let event = checked
            .get(usize::try_from(key).map_err(|_| guarded::storage("a negative read key"))?)
            .ok_or_else(|| guarded::storage("a read row for no event"))?
            .event;
        next_transaction_id.get_or_insert(read.last_transaction_id + 1);
        if let Some(request_hash) = read.replay_hash {
            let result = read
                .replay_result
                .ok_or_else(|| guarded::storage("a replay record without its result"))?;
            replays.insert(key, (request_hash, result));
        }
        let run = match workspaces.entry(event.workspace_id.clone()) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => slot.insert(WorkspaceRun {
                ws: read.ws,
                grants: grants::spendable(read.grants.as_deref())?,
                catalog_version: read.catalog_version,
            }),
        };
        if let Entry::Vacant(slot) =
            agents.entry((event.workspace_id.clone(), event.agent_id.clone()))
        {
            let now = run.ws.now(real_now_secs);
            slot.insert(read.agent.state(&run.ws, &event.agent_id, now));
        }
    }

    let mut next_transaction_id = next_transaction_id.unwrap_or(1);
    let mut set = Set {
        answers: Vec::with_capacity(checked.len()),
        rows: Vec::new(),
    };
    // Events this set debits, by (workspace, event id): a later event with the same id is a
    // replay of it (the answer at that position).
    let mut debited: HashMap<(&str, &str), usize> = HashMap::new();
    for (key, c) in (0_i64..).zip(checked) {
        let event = c.event;
        let answer = match workspaces.get_mut(&event.workspace_id) {
            None => Err(LedgerError::NotFound { what: "workspace" }),
            Some(_) if replays.contains_key(&key) => {
                let (request_hash, result) = &replays[&key];
                replay(&c.fingerprint, request_hash, result)
            }
            Some(_) if debited.contains_key(&(&event.workspace_id, &event.id)) => {
                let first = debited[&(event.workspace_id.as_str(), event.id.as_str())];
                if c.fingerprint.matches(checked[first].fingerprint.stored()) {
                    set.answers[first].clone()
                } else {
                    Err(LedgerError::IdempotencyConflict)
                }
            }
            Some(run) => {
                let agent = agents
                    .get_mut(&(event.workspace_id.clone(), event.agent_id.clone()))
                    .ok_or_else(|| guarded::storage("a debit's agent was not read"))?;
                match debit_fresh(run, agent, c, next_transaction_id, real_now_secs)? {
                    Ok((result, row)) => {
                        debited.insert((&event.workspace_id, &event.id), set.answers.len());
                        set.rows.push(row);
                        next_transaction_id += 1;
                        Ok(result)
                    }
                    Err(refused) => Err(refused),
                }
            }
        };
        set.answers.push(answer);
    }
    Ok(set)
}

/// Decides an event not debited yet on the state its workspace and agent are in, and leaves that
/// state as the debit's write will. The outer error fails the whole set (a catalog that changed);
/// the inner one refuses this event only.
fn debit_fresh(
    run: &mut WorkspaceRun,
    agent: &mut Result<AgentState>,
    c: &Checked<'_>,
    transaction_id: i64,
    real_now_secs: i64,
) -> Result<Result<(DebitResult, DebitRow)>> {
    if run.catalog_version != c.rated.catalog_version {
        return Err(LedgerError::CatalogChanged);
    }
    let agent = match agent {
        Ok(agent) => agent,
        Err(refused) => return Ok(Err(refused.clone())),
    };
    Ok(decide(
        &run.ws,
        agent,
        &run.grants,
        c.event,
        &c.rated,
        real_now_secs,
    )
    .and_then(|decided| {
        let row = row(c, run, agent, &decided, transaction_id)?;
        apply(run, agent, &decided);
        let result = DebitResult {
            transaction_id,
            ..decided.result
        };
        Ok((result, row))
    }))
}

/// The first result of an event already debited, or 409 if this request differs from it (R8).
fn replay(fingerprint: &Fingerprint, request_hash: &str, result: &str) -> Result<DebitResult> {
    if !fingerprint.matches(request_hash) {
        return Err(LedgerError::IdempotencyConflict);
    }
    serde_json::from_str(result).map_err(|e| {
        LedgerError::Storage(crate::StorageError::from_sqlite_message(format!(
            "stored result unreadable: {e}"
        )))
    })
}

/// A decided debit's row. `transaction_id` is the id the locked path gives it.
fn row(
    c: &Checked<'_>,
    run: &WorkspaceRun,
    agent: &AgentState,
    decided: &Decided,
    transaction_id: i64,
) -> Result<DebitRow> {
    let ws = &run.ws;
    let funding = &decided.funding;
    // [grant id, credits taken (negative), what the grant has left after].
    let split: Vec<serde_json::Value> = funding
        .from_grants
        .iter()
        .map(|draw| {
            let remaining = run
                .grants
                .iter()
                .find(|grant| grant.id == draw.grant_id)
                .map(|grant| grant.remaining_micros)
                .ok_or_else(|| guarded::storage("a debit drew on a grant it did not read"))?;
            Ok(serde_json::json!([
                draw.grant_id,
                -draw.micros,
                remaining - draw.micros
            ]))
        })
        .collect::<Result<_>>()?;
    Ok(DebitRow {
        workspace_id: ws.id.clone(),
        agent_id: agent.agent_id.clone(),
        event_id: c.event.id.clone(),
        request_hash: c.fingerprint.stored().to_owned(),
        result: serde_json::to_string(&decided.result)
            .map_err(|e| super::invalid("result", &e.to_string()))?,
        transaction_id: Some(transaction_id),
        kind: c.event.kind.as_str(),
        quantity_micros: c.rated.quantity_micros,
        unit: c.rated.unit,
        rate_micros: c.rated.rate_micros,
        plan_delta_micros: -funding.from_plan_micros,
        wallet_delta_micros: -funding.from_wallet_micros,
        plan_after_micros: ws.plan_credits_micros - funding.from_plan_micros,
        wallet_after_micros: ws.wallet_micros - funding.from_wallet_micros,
        occurred_at: decided.occurred_at,
        created_at: decided.now,
        spend_cycle_start_at: ws.cycle_start_at.unwrap_or(0),
        call_day: agent.today.clone(),
        grant_delta_micros: -funding.grants_micros(),
        grant_split: (!split.is_empty()).then(|| serde_json::Value::Array(split).to_string()),
    })
}

/// What a written debit does to the state the next event of its workspace is decided from: what
/// `usage_debit`'s trigger does to the rows.
fn apply(run: &mut WorkspaceRun, agent: &mut AgentState, decided: &Decided) {
    let funding = &decided.funding;
    let ws = &mut run.ws;
    ws.plan_credits_micros -= funding.from_plan_micros;
    ws.wallet_micros -= funding.from_wallet_micros;
    for draw in &funding.from_grants {
        if let Some(grant) = run.grants.iter_mut().find(|g| g.id == draw.grant_id) {
            grant.remaining_micros -= draw.micros;
        }
    }
    if ws.exhausted_at.is_none()
        && ws.plan_available_micros() == 0
        && ws.wallet_micros - ws.held_wallet_micros <= 0
        && !run
            .grants
            .iter()
            .any(|grant| grant.keeps_calls_going(decided.now))
    {
        ws.exhausted_at = Some(decided.now);
    }
    agent.cycle_spend_micros += funding.total();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debit_row_writes_every_column_of_its_view() {
        guarded::assert_view_matches::<DebitRow>();
    }
}
