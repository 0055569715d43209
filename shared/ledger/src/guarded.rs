//! Hot-path writes: one read, a decision in Rust, then ONE statement that makes every write of the
//! operation (`usage::record` and `record_batch`, `calls::authorize`, `heartbeat`, `end`).
//!
//! Each operation is described once, by two things:
//! - a [`Read`]: the `SELECT` of everything its decision depends on;
//! - a [`ViewRow`]: a row of a view whose INSTEAD OF trigger (schema.rs) does the writes. The
//!   `view_row!` macro declares the row's named fields, which ARE the view's columns: the column
//!   list, the JSON accessors and the values are generated from that one list, so they cannot
//!   disagree in number or order.
//!
//! [`insert`] writes any number of rows in ONE `INSERT INTO <view> SELECT ... FROM json_each(?)`.
//! Unlocked, the write is guarded: its `WHERE` evaluates the operation's read again and selects
//! the rows only if it `IS` what the decision was made from (the "stamp": the whole read, so a
//! field the decision reads cannot be left out of it). If another writer changed any of it, the
//! statement writes nothing and the operation decides again; in Wasm that is one host round trip
//! holding the write lock, where a `BEGIN IMMEDIATE` ... `COMMIT` operation holds it for several.
//! Under the write lock (a batch, or an operation that lost [`ATTEMPTS`] races) the same
//! statement runs without the guard.

use crate::row::{ReadRow, int};
use crate::storage::{Row, SqlValue, Storage, StorageErrorKind};
use crate::{LedgerError, Result};

/// How many times a hot path tries its guarded write before it runs as one write transaction.
pub(crate) const ATTEMPTS: u32 = 2;

/// What an operation reads before it decides: `SELECT {stamp}, {extra} {from}`, with its own
/// parameters `?1..=?keys`. Its columns are a row declared with `read_row!` (`row.rs`), which the
/// operation decodes by name.
///
/// `stamp` is everything the decision depends on (the guard compares all of it); `extra` is
/// what only the locked path uses and must not make a guarded write fail (the next transaction
/// id, a row's position in a batch): the row's last fields.
pub(crate) struct Read {
    stamp: String,
    extra: String,
    from: String,
    keys: usize,
    stamp_len: usize,
}

impl Read {
    /// The read of a row `R` from `from`, whose last `extra` columns are not part of the stamp.
    pub fn of<R: ReadRow>(extra: usize, from: String, keys: usize) -> Read {
        let mut columns = Vec::new();
        R::select_from(R::TABLE, &mut columns);
        let stamp_len = columns.len().saturating_sub(extra);
        let extra = columns.split_off(stamp_len).join(", ");
        Read {
            stamp: columns.join(", "),
            extra,
            from,
            keys,
            stamp_len,
        }
    }

    /// The `SELECT` itself.
    pub fn sql(&self) -> String {
        if self.extra.is_empty() {
            format!("SELECT {} {}", self.stamp, self.from)
        } else {
            format!("SELECT {}, {} {}", self.stamp, self.extra, self.from)
        }
    }

    /// The values a row of [`Read::sql`] read for the stamp.
    pub fn stamp_of(&self, row: &Row) -> Result<Vec<SqlValue>> {
        row.get(..self.stamp_len)
            .map(<[SqlValue]>::to_vec)
            .ok_or_else(|| storage("a read returned fewer columns than its stamp"))
    }
}

/// `(SELECT ?1 AS a, ?2 AS b, ...) k`: a read's keys as a one-row table `k`, for a read that
/// joins other tables to its keyed row.
///
/// Joined as `FROM k JOIN t ON t.id = k.id` rather than `FROM t ... WHERE t.id = ?1`: with
/// `WHERE t.id = ?1` and a `LEFT JOIN`, SQLite's planner compares the bound value while planning
/// and marks the statement to be prepared again whenever a new value is bound, unless the
/// connection sets `SQLITE_DBCONFIG_ENABLE_QPSG`. Spin's SQLite does not set it, and its
/// statement cache clears the bindings after each use, so each call authorization, heartbeat and
/// end was compiled afresh, triggers included: 3.5-4x the CPU of an authorization
/// (docs/performance.md, round 8).
pub(crate) fn keys_row(names: &[&str]) -> String {
    let columns: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("?{} AS {name}", i + 1))
        .collect();
    format!("(SELECT {}) k", columns.join(", "))
}

/// A value as a statement parameter (and as an element of a JSON row).
pub(crate) trait ToSql {
    fn to_sql(&self) -> SqlValue;
}

impl ToSql for i64 {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Integer(*self)
    }
}

impl ToSql for bool {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Integer(i64::from(*self))
    }
}

impl ToSql for String {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Text(self.clone())
    }
}

impl ToSql for &'static str {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Text((*self).to_owned())
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> SqlValue {
        self.as_ref().map_or(SqlValue::Null, ToSql::to_sql)
    }
}

/// A row of a view whose INSTEAD OF trigger makes an operation's writes. Declared with
/// `view_row!`, never by hand.
pub(crate) trait ViewRow {
    /// The view.
    const VIEW: &'static str;
    /// Its columns, in the order of [`ViewRow::values`].
    const COLUMNS: &'static [&'static str];
    /// The column holding the history row's id, if the row posts one: NULL there means "the
    /// next id", allocated by the statement itself (a guarded write cannot know it in advance).
    const TRANSACTION_ID: Option<&'static str>;
    /// The row's values.
    fn values(&self) -> Vec<SqlValue>;
}

/// Declares a [`ViewRow`]: `view_row! { struct Name in "view" (transaction_id: field) { field:
/// Type, ... } }`. The field names are the view's columns.
macro_rules! view_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $view:literal $(($tx:ident))? {
            $($(#[$field_meta:meta])* $field:ident: $ty:ty,)+
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* pub $field: $ty,)+
        }

        impl $crate::guarded::ViewRow for $name {
            const VIEW: &'static str = $view;
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];
            const TRANSACTION_ID: Option<&'static str> = $crate::guarded::view_row!(@tx $($tx)?);
            fn values(&self) -> Vec<$crate::SqlValue> {
                vec![$($crate::guarded::ToSql::to_sql(&self.$field)),+]
            }
        }
    };
    (@tx) => { None };
    (@tx $tx:ident) => { Some(stringify!($tx)) };
}
pub(crate) use view_row;

/// The one statement that writes `rows` (see the module docs). With `guard` (the read and the
/// stamp it gave), the rows are written only if the read still gives the stamp, and the
/// statement returns the transaction id of each written row (none: another writer got there
/// first). Without, the caller holds the write lock and the statement returns nothing.
pub(crate) fn insert<R: ViewRow>(
    rows: &[R],
    guard: Option<(&Read, &[SqlValue], &[SqlValue])>,
) -> Result<(String, Vec<SqlValue>)> {
    let (keys, read_params) = match guard {
        Some((read, params, _)) => (read.keys, params.to_vec()),
        None => (0, Vec::new()),
    };
    let rows_param = keys + 1;
    let accessors = R::COLUMNS
        .iter()
        .enumerate()
        .map(|(n, column)| {
            if R::TRANSACTION_ID == Some(column) {
                // Rows are selected before the first trigger runs, so MAX(id) is read once.
                format!(
                    "COALESCE(r.value ->> {n}, (SELECT COALESCE(MAX(id), 0) FROM transactions) + 1 + r.key)"
                )
            } else {
                format!("r.value ->> {n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!(
        "INSERT INTO {view} ({columns}) SELECT {accessors} FROM json_each(?{rows_param}) r",
        view = R::VIEW,
        columns = R::COLUMNS.join(", "),
    );
    let mut params = read_params;
    params.push(SqlValue::Text(
        serde_json::Value::Array(
            rows.iter()
                .map(|row| json_row(&row.values()))
                .collect::<Result<_>>()?,
        )
        .to_string(),
    ));
    if let Some((read, _, stamp)) = guard {
        let first = rows_param + 1;
        let read_again = (first..first + stamp.len())
            .map(|n| format!("?{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        sql.push_str(&format!(
            " WHERE (SELECT {} {}) IS ({read_again}) RETURNING {}",
            read.stamp,
            read.from,
            R::TRANSACTION_ID.unwrap_or("1"),
        ));
        params.extend_from_slice(stamp);
    }
    Ok((sql, params))
}

/// A row of values as the JSON array [`insert`] reads with `->>` (which gives back the same SQL
/// types: integer, text, null). Blobs and reals have no place in these rows.
fn json_row(values: &[SqlValue]) -> Result<serde_json::Value> {
    values
        .iter()
        .map(|value| match value {
            SqlValue::Null => Ok(serde_json::Value::Null),
            SqlValue::Integer(v) => Ok((*v).into()),
            SqlValue::Text(v) => Ok(v.as_str().into()),
            SqlValue::Real(_) | SqlValue::Blob(_) => {
                Err(storage("a real or a blob in a row written as JSON"))
            }
        })
        .collect()
}

/// Runs a guarded [`insert`] of one row: `Some(the RETURNING value)` if it wrote, `None` if its
/// guard found the state changed (or another connection held the lock past the busy timeout):
/// then nothing was written.
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

/// What one attempt of an operation did.
pub(crate) enum Attempt<T> {
    /// Done (written, or answered without a write).
    Done(T),
    /// Another writer changed what it read: nothing was written.
    Raced,
    /// Only the locked path does this (a replay to look up, overdue holds to post first, ...).
    NeedsLock,
}

/// Runs `unlocked` up to `attempts` times, then, if it never finished, `locked` inside one write
/// transaction (`tx.rs`).
pub(crate) async fn optimistic<S: Storage, T>(
    db: &S,
    attempts: u32,
    mut unlocked: impl AsyncFnMut(&S) -> Result<Attempt<T>>,
    locked: impl AsyncFnMut(&S) -> Result<T>,
) -> Result<T> {
    for _ in 0..attempts {
        match unlocked(db).await? {
            Attempt::Done(answer) => return Ok(answer),
            Attempt::Raced => {}
            Attempt::NeedsLock => break,
        }
    }
    crate::tx::immediate(db, locked).await
}

pub(crate) fn storage(message: &str) -> LedgerError {
    LedgerError::Storage(crate::StorageError::from_sqlite_message(message))
}

/// Checks that `R`'s columns are exactly its view's, on a freshly migrated database.
#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) fn assert_view_matches<R: ViewRow>() {
    use futures::executor::block_on;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = crate::native::NativeDb::open(dir.path().join("ledger.db")).expect("open");
    block_on(crate::schema::migrate(&db)).expect("migrate");
    let rows = block_on(db.query(
        &format!(
            "SELECT name FROM pragma_table_info('{}') ORDER BY name",
            R::VIEW
        ),
        &[],
    ))
    .expect("columns");
    let mut view: Vec<String> = rows
        .iter()
        .map(|row| crate::row::text(row, 0).expect("a name"))
        .collect();
    let mut written: Vec<String> = R::COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    view.sort();
    written.sort();
    assert_eq!(written, view, "{}", R::VIEW);
}
