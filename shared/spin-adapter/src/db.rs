//! The ledger's storage over `spin:sqlite`, and the per-instance connection cache.
//!
//! Spin opens a new SQLite connection on every `open()`, and closing the last connection to a WAL
//! database checkpoints and deletes the WAL (docs/performance.md, "Reference figures from real
//! Spin"): so each instance keeps one connection open for all the requests it serves. Concurrent
//! requests of one instance share it through an instance-wide async lock held for a whole ledger
//! operation, so statements of one SQL transaction are never interleaved with another request's.

use std::cell::Cell;
use std::rc::Rc;

use futures::lock::Mutex;
use ledger::{LedgerError, Row, SqlValue, Storage, StorageError, StorageErrorKind};
use spin_sdk::sqlite::{Connection, Error as SqliteError, Value};

use crate::error::ApiError;
use crate::turnstile::Turnstile;

/// The SQLite database label every component uses (`sqlite_databases = ["default"]`).
const DATABASE_LABEL: &str = "default";

/// A ledger error met while preparing a connection, as the storage failure it is.
fn as_storage_error(error: LedgerError, what: &str) -> StorageError {
    match error {
        LedgerError::Storage(error) => error,
        other => StorageError {
            kind: StorageErrorKind::Unavailable,
            message: format!("{what} failed: {other}"),
        },
    }
}

/// Upper bound on the rows one statement may return; the ledger pages every list it reads.
const ROWS_MAX: usize = 100_000;

/// One `spin:sqlite` connection implementing [`ledger::Storage`].
pub struct SpinDb {
    connection: Connection,
    /// Set when a call failed with `Unavailable`: the cache then drops this connection.
    broken: Cell<bool>,
}

impl SpinDb {
    /// Opens the `default` database and prepares it: per-connection pragmas, WAL, migrations.
    pub async fn open() -> Result<Self, StorageError> {
        let connection = Connection::open(DATABASE_LABEL)
            .await
            .map_err(storage_error)?;
        let db = Self {
            connection,
            broken: Cell::new(false),
        };
        for pragma in ledger::schema::CONNECTION_PRAGMAS {
            db.execute(pragma, &[]).await?;
        }
        // A database already migrated (every open but the first ones) is left as it is: one
        // read, no write lock taken.
        let current = ledger::schema::is_current(&db)
            .await
            .map_err(|error| as_storage_error(error, "schema check"))?;
        if current {
            return Ok(db);
        }
        // A fresh database has no migrations table yet: that failed read is no fault of the
        // connection's, so don't let it recycle it.
        db.broken.set(false);
        // WAL persists in the file, so this is needed once per database; a database that
        // cannot switch (busy at that instant, or a libSQL backend) still works, just slower.
        if let Err(error) = db.execute(ledger::schema::ENABLE_WAL, &[]).await {
            eprintln!("spin-adapter: could not enable WAL: {error}");
            db.broken.set(false);
        }
        ledger::schema::migrate(&db)
            .await
            .map_err(|error| as_storage_error(error, "migration"))?;
        Ok(db)
    }

    /// Whether a call on this connection failed in a way that warrants reopening it.
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Runs one statement, always draining its row stream and awaiting its completion.
    async fn run(
        &self,
        sql: &str,
        params: &[SqlValue],
        keep_rows: bool,
    ) -> Result<Vec<Row>, StorageError> {
        let result = self.run_unchecked(sql, params, keep_rows).await;
        if let Err(error) = &result
            && error.kind == StorageErrorKind::Unavailable
        {
            self.broken.set(true);
        }
        result
    }

    async fn run_unchecked(
        &self,
        sql: &str,
        params: &[SqlValue],
        keep_rows: bool,
    ) -> Result<Vec<Row>, StorageError> {
        let parameters: Vec<Value> = params.iter().map(to_spin_value).collect();
        let mut result = self
            .connection
            .execute(sql, parameters)
            .await
            .map_err(storage_error)?;
        let mut rows = Vec::new();
        let mut too_many = false;
        // Drain the stream even past the limit or when the rows are not wanted: the completion
        // future only resolves once the host has produced every row.
        while let Some(row) = result.next().await {
            if !keep_rows || too_many {
                continue;
            }
            if rows.len() == ROWS_MAX {
                too_many = true;
                rows.clear();
                continue;
            }
            rows.push(row.values.into_iter().map(from_spin_value).collect());
        }
        result.result().await.map_err(storage_error)?;
        if too_many {
            // A bug in a query, not the caller's fault: reported (and the connection recycled)
            // like any other unusable result.
            return Err(StorageError {
                kind: StorageErrorKind::Unavailable,
                message: format!("statement returned more than {ROWS_MAX} rows"),
            });
        }
        Ok(rows)
    }
}

impl Storage for SpinDb {
    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<(), StorageError> {
        self.run(sql, params, false).await.map(|_| ())
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StorageError> {
        self.run(sql, params, true).await
    }
}

/// Maps a `spin:sqlite` error: engine messages are classified like rusqlite's, everything
/// else (no such database, access denied, invalid connection, full) means the database is unusable.
fn storage_error(error: SqliteError) -> StorageError {
    match error {
        SqliteError::Io(message) => StorageError::from_sqlite_message(message),
        other => StorageError {
            kind: StorageErrorKind::Unavailable,
            message: format!("{other:?}"),
        },
    }
}

fn to_spin_value(value: &SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(v) => Value::Integer(*v),
        SqlValue::Real(v) => Value::Real(*v),
        SqlValue::Text(v) => Value::Text(v.clone()),
        SqlValue::Blob(v) => Value::Blob(v.clone()),
    }
}

fn from_spin_value(value: Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Integer(v) => SqlValue::Integer(v),
        Value::Real(v) => SqlValue::Real(v),
        Value::Text(v) => SqlValue::Text(v),
        Value::Blob(v) => SqlValue::Blob(v),
    }
}

/// The instance's cached connection: `None` until the first request, or after a failure.
type Slot = Rc<Mutex<Option<SpinDb>>>;

thread_local! {
    // Wasm instances are single-threaded: a thread-local is an instance-wide value.
    static LEDGER: Slot = Rc::new(Mutex::new(None));
    // Requests enter ledger sections in arrival order (the mutex alone let late arrivals
    // overtake waiters, which gave p99 tails 80x the median under load).
    static TURNS: Rc<Turnstile> = Rc::new(Turnstile::default());
}

/// Runs `f` with the instance's ledger connection, holding the instance-wide lock throughout.
///
/// The first call in an instance opens and prepares the database ([`SpinDb::open`]); later calls
/// reuse it. The connection is taken out of the cache while `f` runs and put back only when `f`
/// finishes without an `Unavailable` failure: if the request is cancelled mid-transaction, the
/// connection is dropped (closing it rolls the transaction back) instead of being reused with
/// a transaction still open.
///
/// Requests take the lock in arrival order (a ticket turnstile). Waiting on it from another request's
/// task needs wit-bindgen's `inter-task-wakeup` feature, enabled by this crate's direct
/// `wit-bindgen` dependency.
///
/// The lock serialises every ledger operation of the instance, so `f` must be short: no
/// outbound HTTP (Stripe) inside it, and never a nested `with_ledger` call (it would wait on
/// itself forever).
pub async fn with_ledger<T>(f: impl AsyncFnOnce(&SpinDb) -> T) -> Result<T, StorageError> {
    let turnstile = TURNS.with(Rc::clone);
    let _turn = turnstile.enter().await;
    let slot = LEDGER.with(Rc::clone);
    // Uncontended: the turn already excludes every other request of this instance.
    let mut cached = slot.lock().await;
    let db = match cached.take() {
        Some(db) => db,
        None => SpinDb::open().await?,
    };
    let value = f(&db).await;
    if !db.is_broken() {
        *cached = Some(db);
    }
    Ok(value)
}

/// [`with_ledger`] for a ledger operation, with both failure layers mapped to the contract.
pub async fn run_ledger<T>(
    f: impl AsyncFnOnce(&SpinDb) -> ledger::Result<T>,
) -> Result<T, ApiError> {
    match with_ledger(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ApiError::from(error)),
        Err(error) => Err(ApiError::from(error)),
    }
}
