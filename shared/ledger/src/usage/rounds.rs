//! A batch's debits in rounds: inside the batch's write transaction, each round takes the next
//! event of every workspace in the batch, reads them all in ONE statement and writes them all in
//! ONE statement. A 1,000-event batch over hundreds of workspaces is then a handful of
//! statements (each a host round trip in Wasm) instead of four per event.
//!
//! The events of one workspace stay in order, one per round, and the decisions of different
//! workspaces do not depend on each other: every answer and every row but the history ids is what
//! debiting the events one after another gives. An event a round cannot settle on its own terms
//! (its row unreadable) is debited alone, in a savepoint, before the next round.

use std::collections::{BTreeMap, HashSet};

use super::{
    DEBIT_READ_COLUMN_COUNT, DEBIT_VALUE_COUNT, DEBIT_WRITE_COLUMNS, DebitResult, Prepared, Rated,
    UsageEvent, debit_in_tx, debit_read_columns, debit_read_of, debit_values, prepare,
};
use crate::fingerprint::Fingerprint;
use crate::guarded;
use crate::row::{int, t, text};
use crate::storage::{Row, Storage};
use crate::{LedgerError, Result};

/// The round's rows as the relation `g`: `g_key` is the position in the JSON array bound as
/// `?1`, `g_value` the row (a JSON array), `g_ws`, `g_agent` and `g_event` its first three values.
const ROUND_ROWS: &str = "(SELECT key AS g_key, value AS g_value, value ->> 0 AS g_ws,
    value ->> 1 AS g_agent, value ->> 2 AS g_event FROM json_each(?1)) g";

/// A checked and priced event: its position in the batch, its price and its fingerprint.
pub(super) type Checked = (usize, Rated, Fingerprint);

/// A member of a round decided for the write.
struct Decided {
    index: usize,
    workspace_id: String,
    result: DebitResult,
    values: Vec<crate::SqlValue>,
}

/// Debits the `checked` events of `events` in rounds, inside the caller's write transaction:
/// an answer per checked event, with its position in `events`. A failure (the database, or a
/// catalog that changed) is returned and the caller rolls the whole batch back; a refused event
/// is its own answer and writes nothing.
pub(super) async fn debit_in_rounds<S: Storage>(
    db: &S,
    events: &[UsageEvent],
    checked: &[Checked],
    real_now_secs: i64,
) -> Result<Vec<(usize, Result<DebitResult>)>> {
    let mut answers = Vec::with_capacity(checked.len());
    let mut pending: Vec<&Checked> = checked.iter().collect();
    while !pending.is_empty() {
        let mut workspaces = HashSet::new();
        let (round, later): (Vec<&Checked>, Vec<&Checked>) = pending
            .into_iter()
            .partition(|(index, ..)| workspaces.insert(events[*index].workspace_id.as_str()));
        let alone = if round.len() == 1 {
            round
        } else {
            debit_round(db, events, round, real_now_secs, &mut answers).await?
        };
        for (index, rated, fingerprint) in alone {
            let answer =
                debit_alone(db, &events[*index], rated, fingerprint, real_now_secs).await?;
            answers.push((*index, answer));
        }
        pending = later;
    }
    Ok(answers)
}

/// One event in a savepoint (the batch's path for every event before rounds): a refusal rolls
/// back whatever it wrote and is its answer; a failure ([`LedgerError::is_failure`]) is returned.
async fn debit_alone<S: Storage>(
    db: &S,
    event: &UsageEvent,
    rated: &Rated,
    fingerprint: &Fingerprint,
    real_now_secs: i64,
) -> Result<Result<DebitResult>> {
    db.execute("SAVEPOINT usage_event", &[]).await?;
    match debit_in_tx(db, event, rated, fingerprint, real_now_secs).await {
        Err(failure) if failure.is_failure() => Err(failure),
        Err(refused) => {
            db.execute("ROLLBACK TO usage_event", &[]).await?;
            db.execute("RELEASE usage_event", &[]).await?;
            Ok(Err(refused))
        }
        Ok(debited) => {
            db.execute("RELEASE usage_event", &[]).await?;
            Ok(Ok(debited))
        }
    }
}

/// Reads, decides and writes a round (events of different workspaces) in two statements.
/// Answers what it settles; returns the members to debit alone.
async fn debit_round<'c, S: Storage>(
    db: &S,
    events: &[UsageEvent],
    round: Vec<&'c Checked>,
    real_now_secs: i64,
    answers: &mut Vec<(usize, Result<DebitResult>)>,
) -> Result<Vec<&'c Checked>> {
    let keys = round
        .iter()
        .map(|(index, ..)| {
            let event = &events[*index];
            serde_json::json!([event.workspace_id, event.agent_id, event.id])
        })
        .collect::<Vec<_>>();
    let read_sql = format!(
        "SELECT {columns}, g_key FROM {ROUND_ROWS}
         JOIN workspaces ON workspaces.id = g_ws
         LEFT JOIN agents a ON a.workspace_id = workspaces.id AND a.agent_id = g_agent",
        columns = guarded::per_row(&debit_read_columns()),
    );
    let rows = db
        .query(&read_sql, &[t(serde_json::Value::Array(keys).to_string())])
        .await?;
    let mut row_of: BTreeMap<i64, &Row> = BTreeMap::new();
    for row in &rows {
        row_of.insert(int(row, DEBIT_READ_COLUMN_COUNT)?, row);
    }

    let mut alone = Vec::new();
    let mut decided = Vec::with_capacity(round.len());
    for (key, member) in (0_i64..).zip(round) {
        let (index, rated, fingerprint) = member;
        let index = *index;
        let event = &events[index];
        let prepared = match row_of.get(&key) {
            None => Err(LedgerError::NotFound { what: "workspace" }),
            Some(row) => debit_read_of(row, event, fingerprint, real_now_secs)
                .and_then(|read| prepare(read, event, rated, real_now_secs)),
        };
        match prepared {
            // Not this event's answer: it is read again, alone.
            Err(LedgerError::Storage(_)) => alone.push(member),
            Err(failure) if failure.is_failure() => return Err(failure),
            Err(refused) => answers.push((index, Err(refused))),
            Ok(Prepared::Replay(previous)) => answers.push((index, Ok(*previous))),
            Ok(Prepared::Fresh(fresh)) => {
                let (ws, agent, _, decision) = *fresh;
                let values = debit_values(event, rated, fingerprint, &ws, &agent, &decision)?;
                decided.push(Decided {
                    index,
                    workspace_id: ws.id,
                    result: decision.result,
                    values,
                });
            }
        }
    }
    if !decided.is_empty() {
        let mut written = write(db, &decided).await?;
        for member in decided {
            let transaction_id = written.remove(&member.workspace_id).ok_or_else(|| {
                LedgerError::Storage(crate::StorageError::from_sqlite_message(
                    "a round's write left out one of its debits",
                ))
            })?;
            answers.push((
                member.index,
                Ok(DebitResult {
                    transaction_id,
                    ..member.result
                }),
            ));
        }
    }
    Ok(alone)
}

/// The round's ONE write, under the batch's write lock: a row into `usage_debit` per decided
/// member, each with its own transaction id, in the round's order. Returns the transaction id
/// written for each workspace.
async fn write<S: Storage>(db: &S, decided: &[Decided]) -> Result<BTreeMap<String, i64>> {
    let rows = decided
        .iter()
        .map(|member| guarded::json_row(&member.values))
        .collect::<Result<Vec<_>>>()?;
    let value = |n: usize| format!("g_value ->> {n}");
    let before_id = (0..5).map(value).collect::<Vec<_>>().join(", ");
    let after_id = (5..DEBIT_VALUE_COUNT)
        .map(value)
        .collect::<Vec<_>>()
        .join(", ");
    // SQLite selects every row of an `INSERT ... SELECT` into a view with triggers before the
    // first trigger runs: the largest id is read once, and each row adds its rank to it.
    let sql = format!(
        "INSERT INTO usage_debit ({DEBIT_WRITE_COLUMNS})
         SELECT {before_id},
             (SELECT COALESCE(MAX(id), 0) FROM transactions) + ROW_NUMBER() OVER (ORDER BY g_key),
             {after_id}
         FROM {ROUND_ROWS}
         RETURNING workspace_id, transaction_id"
    );
    let returned = db
        .query(&sql, &[t(serde_json::Value::Array(rows).to_string())])
        .await?;
    returned
        .iter()
        .map(|row| Ok((text(row, 0)?, int(row, 1)?)))
        .collect()
}
