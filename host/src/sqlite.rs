//! `spin:sqlite/sqlite@3.1.0` over rusqlite: one connection per `open`, one file per label; or,
//! for a label the runtime-config file puts on a libSQL server, over libSQL's remote client
//! ([`remote`], as Spin's `crates/sqlite-libsql`). What follows is about the rusqlite side; none
//! of it (modes, write turns, checkpointer) applies to a libSQL database.
//!
//! Two modes ([`SqliteMode`]). `local`, the default, is described below: it adds to Spin's
//! semantics what makes this host fast (writers take turns, a background checkpointer, reads on
//! the calling thread). `spin` runs SQLite the way Spin 4.1's in-process SQLite does (its
//! `crates/sqlite-inproc`), so that a change can be judged on this host before it is confirmed on
//! real Spin: every statement on a blocking thread, but the connection made (and a statement's
//! counts read) on the async worker, contending writers left to SQLite's busy handler (the 5 s
//! busy timeout rusqlite sets, whose sleeps grow from 1 to 100 ms), no helper connection, and no
//! query-planner setting of our own.
//!
//! Writers take turns: a connection that starts a write (`BEGIN IMMEDIATE`, or any writing
//! statement) first waits, asynchronously and in arrival order, for its database file's write
//! turn, and keeps it until SQLite is back in autocommit mode (COMMIT, ROLLBACK, or an error that
//! ended the transaction). Concurrent instances therefore queue instead of colliding in SQLite's
//! busy handler, whose growing sleeps gave p99 tails near a second on Spin (docs/performance.md,
//! "Reference figures from real Spin"). The wait is
//! bounded by the busy timeout; past it the statement runs anyway and SQLite decides, as before.
//!
//! Statements that may wait on a lock or run long never run on an async executor thread:
//! async functions use `spawn_blocking`, sync functions use `block_in_place`. The exception is a
//! statement of a connection that holds its file's write turn (other than COMMIT, which may
//! checkpoint): no other writer of this process can hold the lock then, and the thread hop would
//! cost more than the statement. So is a `SELECT` on a file in WAL mode, where readers never
//! wait for writers (a ledger debit reads outside any transaction). `execute-async` runs the statement to completion and then
//! streams the collected rows, so a guest that leaves a row stream undrained can still call
//! `changes` on the same connection without a deadlock.

mod remote;

use crate::bindings::spin::sqlite::sqlite::{
    self as wit, Error, HostConnection, HostConnectionWithStore, QueryResult, RowResult, Value,
};
use crate::runtime_config::{SPIN_BUSY_TIMEOUT, SqliteBackend};
use rusqlite::types::{ToSqlOutput, ValueRef};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader};

/// Upper bound on rows one `execute` may return (a limit, not a slowdown).
const ROWS_MAX: usize = 1_000_000;

/// One write turn per database file (see the module docs).
type WriteGate = Arc<tokio::sync::Mutex<()>>;

/// How the host runs SQLite (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteMode {
    /// This host's own: writers take turns, a background checkpointer, reads inline.
    #[default]
    Local,
    /// As Spin 4.1 does it: a blocking thread per statement, SQLite's busy handler.
    Spin,
}

/// The app's SQLite databases: label -> where it lives.
#[derive(Debug, Default)]
pub struct SqliteDatabases {
    databases: BTreeMap<String, SqliteBackend>,
    gates: BTreeMap<String, WriteGate>,
    mode: SqliteMode,
}

impl SqliteDatabases {
    /// The `configured` backends (from the runtime-config file), and for every other label one
    /// file under `dir` (`default` is `sqlite_db.db`, as in Spin).
    pub fn new<'a>(
        dir: PathBuf,
        labels: impl IntoIterator<Item = &'a String>,
        configured: &BTreeMap<String, SqliteBackend>,
        mode: SqliteMode,
    ) -> Self {
        let mut databases = configured.clone();
        for label in labels {
            databases.entry(label.clone()).or_insert_with(|| {
                let file = if label == "default" {
                    "sqlite_db.db".to_owned()
                } else {
                    format!("{label}.db")
                };
                SqliteBackend::Spin {
                    path: Some(dir.join(file)),
                    allow_attach_file: false,
                }
            });
        }
        let gates = databases
            .keys()
            .map(|label| (label.clone(), WriteGate::default()))
            .collect();
        if mode == SqliteMode::Local {
            for backend in databases.values() {
                if let SqliteBackend::Spin {
                    path: Some(path), ..
                } = backend
                {
                    spawn_checkpointer(path.clone());
                }
            }
        }
        Self {
            databases,
            gates,
            mode,
        }
    }

    /// Opens a new connection to `label`'s database (blocking for a local file; a libSQL
    /// connection is only made at its first statement, as Spin).
    fn open(&self, label: &str) -> Result<Connection, Error> {
        match self.databases.get(label).ok_or(Error::NoSuchDatabase)? {
            SqliteBackend::Spin {
                path,
                allow_attach_file,
            } => {
                let conn = self.open_local(path.as_deref(), *allow_attach_file)?;
                let gate = self.gates.get(label).cloned().unwrap_or_default();
                Ok(Connection::Local(LocalConnection::new(conn, gate)))
            }
            SqliteBackend::Libsql { url, token } => Ok(Connection::Remote(
                remote::RemoteConnection::new(url.clone(), token.clone()),
            )),
        }
    }

    /// A rusqlite connection to `path` (in memory when `None`, a fresh database each time).
    fn open_local(
        &self,
        path: Option<&std::path::Path>,
        allow_attach_file: bool,
    ) -> Result<rusqlite::Connection, Error> {
        let mut conn = crate::runtime_config::open_spin_file(path).map_err(io)?;
        conn.busy_timeout(SPIN_BUSY_TIMEOUT).map_err(io)?;
        if self.mode == SqliteMode::Local {
            // Plans never depend on bound values: otherwise SQLite re-prepares (re-parses,
            // re-plans and re-codes the triggers of) a cached statement whenever a parameter it
            // compared with a partial index's WHERE changes; that was a quarter of a ledger
            // debit's CPU. (Spin does not set it: the `spin` mode leaves it off.)
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )
            .map_err(io)?;
        }
        // As in Spin: a guest may not ATTACH other files (temporary and in-memory are fine),
        // unless the runtime config says `allow_attach_file = true`.
        if allow_attach_file {
            return Ok(conn);
        }
        conn.authorizer(Some(|ctx: rusqlite::hooks::AuthContext<'_>| {
            use rusqlite::hooks::{AuthAction, Authorization};
            match ctx.action {
                AuthAction::Attach { filename } if !matches!(filename, "" | ":memory:") => {
                    Authorization::Deny
                }
                _ => Authorization::Allow,
            }
        }))
        .map_err(io)?;
        Ok(conn)
    }
}

/// The databases one component may open (its `sqlite_databases` in the manifest).
pub struct SqliteAccess {
    databases: Arc<SqliteDatabases>,
    allowed: BTreeSet<String>,
}

impl SqliteAccess {
    /// `allowed` labels of the app's `databases`.
    pub fn new(databases: Arc<SqliteDatabases>, allowed: BTreeSet<String>) -> Self {
        Self { databases, allowed }
    }
}

/// What the `spin:sqlite` functions of one instance work on: its resource table and what its
/// component may open.
pub struct SqliteView<'a> {
    /// The instance's resource table (connections live there).
    pub table: &'a mut ResourceTable,
    /// The databases its component may open.
    pub access: &'a SqliteAccess,
}

/// Links `spin:sqlite` to a [`SqliteView`] of the store's data.
pub struct SqliteHost;

impl HasData for SqliteHost {
    type Data<'a> = SqliteView<'a>;
}

/// How often the background checkpointer looks at a database's WAL.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);

/// Keeps one connection to `path` open for the life of the process, and checkpoints its WAL
/// from it in the background (PASSIVE: never blocks a reader or a writer).
///
/// Two costs leave the request path with it. A guest's commit no longer copies the WAL back
/// into the database once the WAL passes its `wal_autocheckpoint` (which, with the write turn
/// held, made every waiting writer wait too). And closing an instance's connection is no longer
/// closing the last one, which made SQLite checkpoint and delete the whole WAL every time an
/// instance retired (every 128 requests). Real Spin has neither helper; the ledger is correct
/// without them (its connections checkpoint themselves), just slower.
fn spawn_checkpointer(path: PathBuf) {
    let shown = path.display().to_string();
    let spawned = std::thread::Builder::new()
        .name("sqlite-checkpointer".into())
        .spawn(move || {
            let mut conn = None;
            loop {
                std::thread::sleep(CHECKPOINT_INTERVAL);
                // Opened once a component has created the file: never create it here.
                if conn.is_none() && path.exists() {
                    conn = rusqlite::Connection::open(&path).ok();
                }
                if let Some(conn) = &conn {
                    // In rollback-journal mode (before a component switched the file to WAL)
                    // this is a no-op; a checkpoint that found a lock busy simply runs next time.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            }
        });
    if let Err(error) = spawned {
        eprintln!("local-host: no background checkpointer for {shown}: {error}");
    }
}

/// The host side of a `connection` resource.
#[derive(Clone)]
pub enum Connection {
    /// A rusqlite connection to a local file (or memory).
    Local(LocalConnection),
    /// A libSQL server's (one Hrana stream).
    Remote(remote::RemoteConnection),
}

impl Connection {
    /// Runs one statement from a synchronous host function (never on an async worker's time).
    fn execute_blocking(&self, sql: &str, params: &[Value]) -> Result<Executed, Error> {
        tokio::task::block_in_place(|| match self {
            Self::Local(conn) => conn.run(sql, params),
            Self::Remote(conn) => tokio::runtime::Handle::current().block_on(conn.run(sql, params)),
        })
    }

    /// `changes` and `last-insert-rowid` of the connection's last statement.
    async fn counts(&self, mode: SqliteMode) -> wasmtime::Result<(u64, i64)> {
        match self {
            // As Spin: read under the connection's lock on the async worker.
            Self::Local(conn) if mode == SqliteMode::Spin => Ok(conn.counts()),
            Self::Local(conn) => {
                let conn = conn.clone();
                blocking(move || conn.counts()).await
            }
            Self::Remote(conn) => conn.counts().await,
        }
    }

    fn counts_blocking(&self) -> wasmtime::Result<(u64, i64)> {
        tokio::task::block_in_place(|| match self {
            Self::Local(conn) => Ok(conn.counts()),
            Self::Remote(conn) => tokio::runtime::Handle::current().block_on(conn.counts()),
        })
    }
}

/// A rusqlite connection and its place in its file's write turns.
#[derive(Clone)]
pub struct LocalConnection {
    // Field order is drop order: the connection closes (rolling back an open transaction)
    // before its write turn is released.
    conn: Arc<Mutex<rusqlite::Connection>>,
    /// Held from the first writing statement of a transaction until autocommit again.
    turn: Arc<Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>>,
    gate: WriteGate,
    /// Set once the file was seen in WAL mode (see [`Connection::in_wal_mode`]).
    wal: Arc<std::sync::atomic::AtomicBool>,
}

impl LocalConnection {
    fn new(conn: rusqlite::Connection, gate: WriteGate) -> Self {
        Self {
            conn: Arc::new(Mutex::new(conn)),
            turn: Arc::default(),
            gate,
            wal: Arc::default(),
        }
    }

    /// Whether the file is in WAL mode, where a reader never waits for a writer. Remembered once
    /// seen (the ledger switches its file to WAL at its first open and never back).
    fn in_wal_mode(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.wal.load(Ordering::Relaxed) {
            return true;
        }
        let wal = lock(&self.conn)
            .pragma_query_value(None, "journal_mode", |row| row.get::<_, String>(0))
            .is_ok_and(|mode| mode.eq_ignore_ascii_case("wal"));
        self.wal.store(wal, Ordering::Relaxed);
        wal
    }

    /// `changes` and `last-insert-rowid` of the last statement, under the connection's lock.
    fn counts(&self) -> (u64, i64) {
        let conn = lock(&self.conn);
        (conn.changes(), conn.last_insert_rowid())
    }

    fn holds_turn(&self) -> bool {
        lock(&self.turn).is_some()
    }

    /// Waits (bounded by the busy timeout) for the file's write turn if `sql` writes and this
    /// connection does not hold it yet.
    async fn take_turn_for(&self, sql: &str) {
        if !starts_write(sql) || self.holds_turn() {
            return;
        }
        if let Ok(guard) =
            tokio::time::timeout(SPIN_BUSY_TIMEOUT, Arc::clone(&self.gate).lock_owned()).await
        {
            *lock(&self.turn) = Some(guard);
        }
    }

    /// Runs one statement, then gives the write turn back if the transaction is over.
    fn run(&self, sql: &str, params: &[Value]) -> Result<Executed, Error> {
        let conn = lock(&self.conn);
        let result = run(&conn, sql, params);
        if conn.is_autocommit() {
            *lock(&self.turn) = None;
        }
        result
    }
}

/// Whether `sql` may write (conservatively: `WITH` may be an `INSERT`), so needs the write turn.
/// A deferred `BEGIN` does not: its first writing statement takes the turn.
fn starts_write(sql: &str) -> bool {
    let mut words = sql.split_whitespace();
    let first = words.next().unwrap_or("").to_ascii_uppercase();
    match first.as_str() {
        "BEGIN" => words.next().is_some_and(|w| {
            matches!(
                w.trim_end_matches(';').to_ascii_uppercase().as_str(),
                "IMMEDIATE" | "EXCLUSIVE"
            )
        }),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "WITH" | "CREATE" | "DROP" | "ALTER"
        | "REINDEX" => true,
        _ => false,
    }
}

/// Whether `sql` only reads: in WAL mode a reader never waits for a writer, so (outside a
/// transaction) it runs on the calling thread instead of hopping to a blocking one.
fn is_plain_read(sql: &str) -> bool {
    sql.split_whitespace()
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case("SELECT"))
}

/// Whether `sql` ends a transaction (and may checkpoint the WAL, which syncs files).
fn is_commit(sql: &str) -> bool {
    let first = sql.split_whitespace().next().unwrap_or("");
    first.eq_ignore_ascii_case("COMMIT") || first.eq_ignore_ascii_case("END")
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Io(e.to_string())
}

/// As in Spin: a label the component does not list is `access-denied` (whether or not another
/// component lists it); a listed label without a database would be `no-such-database`.
fn check_access(access: &SqliteAccess, label: &str) -> Result<(), Error> {
    if !access.allowed.contains(label) {
        return Err(Error::AccessDenied);
    }
    if !access.databases.databases.contains_key(label) {
        return Err(Error::NoSuchDatabase);
    }
    Ok(())
}

fn lock<T>(value: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the rusqlite connection half-updated.
    value
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_sql(v: &Value) -> ToSqlOutput<'_> {
    match v {
        Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
        Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
        Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
    }
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Rows read before any error, plus the error that stopped stepping (if any).
struct Executed {
    columns: Vec<String>,
    rows: Vec<RowResult>,
    trailing: Result<(), Error>,
}

/// Runs one statement; `Err` means it could not be prepared or bound.
fn run(conn: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<Executed, Error> {
    let mut stmt = conn.prepare_cached(sql).map_err(io)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let n = columns.len();
    let bound: Vec<ToSqlOutput<'_>> = params.iter().map(to_sql).collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(bound.iter()))
        .map_err(io)?;
    let mut out = Vec::new();
    let trailing = loop {
        match rows.next() {
            Ok(Some(row)) => {
                if out.len() >= ROWS_MAX {
                    break Err(Error::Io(format!(
                        "query returned more than {ROWS_MAX} rows"
                    )));
                }
                let mut values = Vec::with_capacity(n);
                for i in 0..n {
                    match row.get_ref(i) {
                        Ok(v) => values.push(from_sql(v)),
                        Err(e) => return Err(io(e)),
                    }
                }
                out.push(RowResult { values });
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(io(e)),
        }
    };
    Ok(Executed {
        columns,
        rows: out,
        trailing,
    })
}

fn get_connection(
    table: &ResourceTable,
    res: &Resource<Connection>,
) -> wasmtime::Result<Connection> {
    Ok(table.get(res)?.clone())
}

/// The connection behind `res` and the mode its host runs SQLite in.
fn connection_and_mode<T: Send>(
    accessor: &Accessor<T, SqliteHost>,
    res: &Resource<Connection>,
) -> wasmtime::Result<(Connection, SqliteMode)> {
    accessor.with(|mut access| {
        let view = access.get();
        get_connection(view.table, res).map(|conn| (conn, view.access.databases.mode))
    })
}

impl wit::Host for SqliteView<'_> {}

impl HostConnection for SqliteView<'_> {
    fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        if let Err(e) = check_access(self.access, &database) {
            return Ok(Err(e));
        }
        let dbs = self.access.databases.clone();
        match tokio::task::block_in_place(|| dbs.open(&database)) {
            Ok(conn) => Ok(Ok(self.table.push(conn)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn execute(
        &mut self,
        self_: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let conn = get_connection(self.table, &self_)?;
        let result = conn.execute_blocking(&statement, &parameters);
        Ok(result.and_then(|ex| {
            ex.trailing.map(|()| QueryResult {
                columns: ex.columns,
                rows: ex.rows,
            })
        }))
    }

    fn last_insert_rowid(&mut self, self_: Resource<Connection>) -> wasmtime::Result<i64> {
        let conn = get_connection(self.table, &self_)?;
        Ok(conn.counts_blocking()?.1)
    }

    fn changes(&mut self, self_: Resource<Connection>) -> wasmtime::Result<u64> {
        let conn = get_connection(self.table, &self_)?;
        Ok(conn.counts_blocking()?.0)
    }

    fn drop(&mut self, rep: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> wasmtime::Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| wasmtime::format_err!("sqlite worker failed: {e}"))
}

impl<T: Send> HostConnectionWithStore<T> for SqliteHost {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let checked = accessor.with(|mut access| {
            let view = access.get();
            check_access(view.access, &database).map(|()| view.access.databases.clone())
        });
        let dbs = match checked {
            Ok(dbs) => dbs,
            Err(e) => return Ok(Err(e)),
        };
        // Spin makes the connection on the async worker that runs the instance (its
        // `create_connection`, at the first statement), so a slow open stalls every task of that
        // worker; the `spin` mode does the same, to show that stall here.
        let opened = match dbs.mode {
            SqliteMode::Spin => dbs.open(&database),
            SqliteMode::Local => blocking(move || dbs.open(&database)).await?,
        };
        match opened {
            Ok(conn) => accessor.with(|mut access| Ok(Ok(access.get().table.push(conn)?))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        self_: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<
        Result<
            (
                Vec<String>,
                StreamReader<RowResult>,
                FutureReader<Result<(), Error>>,
            ),
            Error,
        >,
    > {
        let (conn, mode) = connection_and_mode(accessor, &self_)?;
        let executed = match conn {
            Connection::Local(conn) => run_local(conn, mode, statement, parameters).await?,
            Connection::Remote(conn) => conn.run(&statement, &parameters).await,
        };
        let Executed {
            columns,
            rows,
            trailing,
        } = match executed {
            Ok(ex) => ex,
            Err(e) => return Ok(Err(e)),
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, rows)?;
            let done =
                FutureReader::new(&mut access, async move { wasmtime::error::Ok(trailing) })?;
            Ok(Ok((columns, rows, done)))
        })
    }

    async fn last_insert_rowid_async(
        accessor: &Accessor<T, Self>,
        self_: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        let (conn, mode) = connection_and_mode(accessor, &self_)?;
        Ok(conn.counts(mode).await?.1)
    }

    async fn changes_async(
        accessor: &Accessor<T, Self>,
        self_: Resource<Connection>,
    ) -> wasmtime::Result<u64> {
        let (conn, mode) = connection_and_mode(accessor, &self_)?;
        Ok(conn.counts(mode).await?.0)
    }
}

/// Runs one statement of `execute-async` on a local connection, inline or on a blocking thread
/// (see the module docs).
async fn run_local(
    conn: LocalConnection,
    mode: SqliteMode,
    statement: String,
    parameters: Vec<Value>,
) -> wasmtime::Result<Result<Executed, Error>> {
    let inline = match mode {
        SqliteMode::Spin => false,
        SqliteMode::Local => {
            conn.take_turn_for(&statement).await;
            if conn.holds_turn() {
                !is_commit(&statement)
            } else {
                is_plain_read(&statement) && conn.in_wal_mode()
            }
        }
    };
    if inline {
        Ok(conn.run(&statement, &parameters))
    } else {
        blocking(move || conn.run(&statement, &parameters)).await
    }
}

#[cfg(test)]
mod tests {
    use super::{is_commit, starts_write};

    #[test]
    fn writes_take_the_turn_reads_and_deferred_begins_do_not() {
        for sql in [
            "BEGIN IMMEDIATE",
            "begin exclusive;",
            "  INSERT INTO t VALUES (1)",
            "update t set a = 1",
            "DELETE FROM t",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "CREATE TABLE t (a)",
        ] {
            assert!(starts_write(sql), "{sql}");
        }
        for sql in [
            "BEGIN",
            "BEGIN DEFERRED",
            "SELECT 1",
            "PRAGMA busy_timeout = 5000",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT s",
            "",
        ] {
            assert!(!starts_write(sql), "{sql}");
        }
        assert!(is_commit("COMMIT") && is_commit("end") && !is_commit("ROLLBACK"));
    }
}
