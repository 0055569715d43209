//! The ledger's storage over `spin:sqlite`, and the per-instance connection cache.
//!
//! Spin opens a new SQLite connection on every `open()`, and closing the last connection to a WAL
//! database checkpoints and deletes the WAL (docs/performance.md, "Reference figures from real
//! Spin"): so each instance keeps one connection open for all the requests it serves. Concurrent
//! requests of one instance share it through an instance-wide async lock held for a whole ledger
//! operation, so statements of one SQL transaction are never interleaved with another request's.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

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

/// Upper bound on the rows one statement may return: the ledger pages every list it reads, and its
/// largest read is one CSV export, so this is that export's limit (one value: were they two, an
/// export the ledger allows could be refused here); anything more is a query's bug.
const ROWS_MAX: usize = ledger::views::CSV_ROWS_MAX as usize;

/// How long a connection to a libSQL server may sit unused before the next request reopens it.
/// `sqld` drops a stream after 10 s without a statement and answers the next one with
/// `STREAM_EXPIRED` (tursodatabase/libsql#985); Spin does not reopen it, so this cache does,
/// before the server's limit rather than after a failed statement.
const LIBSQL_IDLE_REOPEN: Duration = Duration::from_secs(5);

/// What serves the `default` database, as the runtime config chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// A database file in the process (`type = "spin"`, Spin's default).
    File,
    /// A libSQL server, `sqld` or Turso (`type = "libsql"`): statements are round trips.
    LibsqlServer,
}

/// One `spin:sqlite` connection implementing [`ledger::Storage`].
pub struct SpinDb {
    connection: Connection,
    backend: Backend,
    /// Set when a call failed with `Unavailable`: the cache then drops this connection.
    broken: Cell<bool>,
    /// Whether no statement has run since [`with_ledger`] handed the connection out.
    untouched: Cell<bool>,
    /// Set when an operation's first statement found that the server had dropped this
    /// connection's stream: nothing of the operation ran, so it may run again, whole, on a new
    /// connection.
    lost_before_first_statement: Cell<bool>,
    /// When the last statement ended.
    last_used: Cell<Instant>,
    /// Whether a `BEGIN` has run without its `COMMIT` or `ROLLBACK` yet.
    in_transaction: Cell<bool>,
}

impl SpinDb {
    /// Opens the `default` database and prepares it: per-connection pragmas, WAL, migrations.
    pub async fn open() -> Result<Self, StorageError> {
        let connection = Connection::open(DATABASE_LABEL)
            .await
            .map_err(storage_error)?;
        let mut db = Self {
            connection,
            backend: Backend::File,
            broken: Cell::new(false),
            untouched: Cell::new(false),
            lost_before_first_statement: Cell::new(false),
            last_used: Cell::new(Instant::now()),
            in_transaction: Cell::new(false),
        };
        let served = db
            .query(ledger::schema::SERVED_BY_LIBSQL_SERVER, &[])
            .await?;
        if served.first().and_then(|row| row.first()) == Some(&SqlValue::Integer(1)) {
            db.backend = Backend::LibsqlServer;
        }
        let file_pragmas = match db.backend {
            Backend::File => ledger::schema::FILE_PRAGMAS,
            Backend::LibsqlServer => &[],
        };
        for pragma in ledger::schema::CONNECTION_PRAGMAS
            .iter()
            .chain(file_pragmas)
        {
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
        // cannot switch (busy at that instant) still works, just slower. A libSQL server keeps
        // its own journal.
        if db.backend == Backend::File
            && let Err(error) = db.execute(ledger::schema::ENABLE_WAL, &[]).await
        {
            crate::log!("spin-adapter: could not enable WAL: {error}");
            db.broken.set(false);
        }
        // Several replicas may migrate one fresh database at once: each version is applied in
        // its own write transaction after a re-check (ledger::schema::migrate).
        ledger::schema::migrate(&db)
            .await
            .map_err(|error| as_storage_error(error, "migration"))?;
        Ok(db)
    }

    /// Whether this connection should be replaced before its next use: a libSQL server's
    /// stream unused for [`LIBSQL_IDLE_REOPEN`] is about to expire, or has.
    fn is_stale(&self) -> bool {
        self.backend == Backend::LibsqlServer
            && self.last_used.get().elapsed() >= LIBSQL_IDLE_REOPEN
    }

    /// Whether a call on this connection failed in a way that warrants reopening it.
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Follows the ledger's transaction statements (ledger `tx.rs`): a `BEGIN` that ran opens
    /// one; after a `COMMIT` or `ROLLBACK`, even a failed one, none is left open.
    fn track_transaction(&self, sql: &str, ran: bool) {
        let head = sql.trim_start().as_bytes();
        let starts = |verb: &str| {
            head.get(..verb.len())
                .is_some_and(|word| word.eq_ignore_ascii_case(verb.as_bytes()))
        };
        if starts("BEGIN") && ran {
            self.in_transaction.set(true);
        } else if starts("COMMIT") || starts("ROLLBACK") || starts("END") {
            self.in_transaction.set(false);
        }
    }

    /// Runs one statement, always draining its row stream and awaiting its completion.
    async fn run(
        &self,
        sql: &str,
        params: &[SqlValue],
        keep_rows: bool,
    ) -> Result<Vec<Row>, StorageError> {
        let mut result = self.run_unchecked(sql, params, keep_rows).await;
        if let Err(error) = &result
            && !self.in_transaction.get()
            && error.is_interrupted()
        {
            // A libSQL server interrupted it before it took effect (ledger::StorageError,
            // Busy): outside a transaction the statement is all there is to run again.
            result = self.run_unchecked(sql, params, keep_rows).await;
        }
        self.track_transaction(sql, result.is_ok());
        if self.backend == Backend::LibsqlServer {
            // Only a libSQL stream expires (`is_stale`): a file's statements skip the clock.
            self.last_used.set(Instant::now());
        }
        let first = self.untouched.replace(false);
        if let Err(error) = &result
            && matches!(
                error.kind,
                StorageErrorKind::Unavailable
                    | StorageErrorKind::Unreachable
                    | StorageErrorKind::Disk
            )
        {
            self.broken.set(true);
            if first && error.is_stream_gone() {
                self.lost_before_first_statement.set(true);
            }
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
pub async fn with_ledger<T>(f: impl AsyncFn(&SpinDb) -> T) -> Result<T, StorageError> {
    let turnstile = TURNS.with(Rc::clone);
    let _turn = turnstile.enter().await;
    let slot = LEDGER.with(Rc::clone);
    // Uncontended: the turn already excludes every other request of this instance.
    let mut cached = slot.lock().await;
    let db = match cached.take() {
        Some(db) if !db.is_stale() => db,
        _ => SpinDb::open().await?,
    };
    db.untouched.set(true);
    let mut value = f(&db).await;
    let db = if db.lost_before_first_statement.get() {
        // The server had dropped the stream (idle past its limit, or restarted) and refused
        // `f`'s first statement: nothing of `f` ran, so it runs once more, whole, on a new
        // connection. A stream lost later in `f` is not retried here: the request fails with 503
        // and the client's retry is resolved by the operation's own idempotency.
        drop(db);
        let db = SpinDb::open().await?;
        db.untouched.set(true);
        value = f(&db).await;
        db
    } else {
        db
    };
    if !db.is_broken() {
        *cached = Some(db);
    }
    Ok(value)
}

/// [`with_ledger`] for a ledger operation, with both failure layers mapped to the contract.
pub async fn run_ledger<T>(f: impl AsyncFn(&SpinDb) -> ledger::Result<T>) -> Result<T, ApiError> {
    match with_ledger(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ApiError::from(error)),
        Err(error) => Err(ApiError::from(error)),
    }
}
