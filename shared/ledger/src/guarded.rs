//! One-statement writes guarded by what they were decided from (the hot paths: `usage::record`,
//! `calls::authorize`).
//!
//! The operation reads without a transaction, decides in Rust, then writes everything in ONE
//! `INSERT INTO <view> SELECT ... WHERE <the stamp is still as read>`: the view's INSTEAD OF
//! trigger (schema.rs) does the writes. The stamp is a list of SQL expressions over the
//! workspace (`workspaces`, parameter `?1`) and its agent (`a`, parameter `?2`): everything the
//! decision depended on. If another writer changed any of it in between, the SELECT yields no
//! row, nothing is written, and the caller decides again. In Wasm that is one host round trip
//! holding the write lock, where a `BEGIN IMMEDIATE` ... `COMMIT` operation holds it for several.

use crate::row::int;
use crate::storage::{Row, SqlValue, Storage, StorageErrorKind};
use crate::{LedgerError, Result};

/// How many times a hot path tries its guarded write before it runs as one write transaction.
pub(crate) const ATTEMPTS: u32 = 2;

/// `FROM` clause the stamps are written against.
const STAMP_FROM: &str = "FROM workspaces
    LEFT JOIN agents a ON a.workspace_id = workspaces.id AND a.agent_id = ?2
    WHERE workspaces.id = ?1";

/// The guard: the stored catalog version `IS` the one the decision priced with (bound as
/// `?first_param`), and the stamp, evaluated now, `IS` the values read (bound from
/// `?first_param + 1` on). Callers bind [`guard_params`] there.
pub(crate) fn unchanged(stamp: &str, stamp_columns: usize, first_param: usize) -> String {
    let read = (first_param + 1..=first_param + stamp_columns)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{CURRENT_VERSION} = ?{first_param}
         AND (SELECT {stamp} {STAMP_FROM}) IS ({read})",
        CURRENT_VERSION = crate::catalog::CURRENT_VERSION,
    )
}

/// SQL written for one operation (`?1` the workspace, `?2` the agent, `?3` the event id)
/// rewritten for each row of a statement over many (`usage::rounds`), whose columns `g_ws`,
/// `g_agent` and `g_event` hold them.
pub(crate) fn per_row(sql: &str) -> String {
    sql.replace("?1", "g_ws")
        .replace("?2", "g_agent")
        .replace("?3", "g_event")
}

/// A row of values as the JSON array a statement over many rows reads with `->>` (which gives back the
/// same SQL types: integer, text, null). Blobs have no JSON form and are never written here.
pub(crate) fn json_row(values: &[SqlValue]) -> Result<serde_json::Value> {
    values
        .iter()
        .map(|value| match value {
            SqlValue::Null => Ok(serde_json::Value::Null),
            SqlValue::Integer(v) => Ok((*v).into()),
            SqlValue::Real(v) => Ok((*v).into()),
            SqlValue::Text(v) => Ok(v.as_str().into()),
            SqlValue::Blob(_) => Err(LedgerError::Storage(
                crate::StorageError::from_sqlite_message("a blob in a row bound as JSON"),
            )),
        })
        .collect()
}

/// The values [`unchanged`] binds: the catalog version, then the stamp as read.
pub(crate) fn guard_params(catalog_version: i64, stamp: Vec<SqlValue>) -> Vec<SqlValue> {
    let mut params = Vec::with_capacity(stamp.len() + 1);
    params.push(SqlValue::Integer(catalog_version));
    params.extend(stamp);
    params
}

/// The stamp's values in a row that selected it from column `first` on.
pub(crate) fn stamp_of(row: &Row, first: usize, stamp_columns: usize) -> Result<Vec<SqlValue>> {
    row.get(first..first + stamp_columns)
        .map(<[SqlValue]>::to_vec)
        .ok_or_else(|| {
            LedgerError::Storage(crate::StorageError::from_sqlite_message(
                "a read returned fewer columns than its stamp",
            ))
        })
}

/// Runs an `INSERT ... SELECT ... RETURNING <one integer>`: `Some(value)` if it wrote, `None` if
/// its guard found the state changed (or another connection held the lock past the busy
/// timeout): then nothing was written.
pub(crate) async fn write<S: Storage>(
    db: &S,
    sql: &str,
    params: &[SqlValue],
) -> Result<Option<i64>> {
    match db.query(sql, params).await {
        Ok(rows) => rows.first().map(|row| int(row, 0)).transpose(),
        Err(error) if error.kind == StorageErrorKind::Busy => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The same write made under the write lock with no guard: it always writes one row.
pub(crate) async fn write_locked<S: Storage>(
    db: &S,
    sql: &str,
    params: &[SqlValue],
) -> Result<i64> {
    write(db, sql, params).await?.ok_or_else(|| {
        LedgerError::Storage(crate::StorageError::from_sqlite_message(
            "an unguarded write under the write lock wrote nothing",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`per_row`] only knows `?1` to `?3`: SQL it rewrites must not use any other parameter.
    #[test]
    fn per_row_sql_uses_only_the_first_three_parameters() {
        for sql in [
            STAMP_FROM,
            crate::usage::DEBIT_STAMP,
            crate::agents::AGENT_COLUMNS,
        ] {
            let rewritten = per_row(sql);
            assert!(!rewritten.contains('?'), "a parameter left in {rewritten}");
            for (at, _) in sql.match_indices('?') {
                let next = sql[at + 1..].chars().nth(1);
                assert!(
                    !next.is_some_and(|c| c.is_ascii_digit()),
                    "a parameter past ?9 in {sql}"
                );
            }
        }
    }
}
