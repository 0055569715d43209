//! `spin:sqlite/sqlite@3.1.0` over rusqlite: one connection per `open`, one file per label.
//!
//! Blocking SQLite work never runs on an async executor thread: async functions use
//! `spawn_blocking`, sync functions use `block_in_place`. `execute-async` runs the statement to
//! completion on a blocking thread and then streams the collected rows, so a guest that leaves a
//! row stream undrained can still call `changes` on the same connection without a deadlock.

use crate::bindings::spin::sqlite::sqlite::{
    self as wit, Error, HostConnection, HostConnectionWithStore, QueryResult, RowResult, Value,
};
use crate::runtime::Ctx;
use rusqlite::types::{ToSqlOutput, ValueRef};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

/// How long a connection waits on another connection's lock before reporting "database is locked"
/// (rusqlite's default, hence what Spin's in-process SQLite does).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on rows one `execute` may return (a limit, not a slowdown).
const ROWS_MAX: usize = 1_000_000;

/// The app's SQLite databases: label -> file.
#[derive(Debug, Default)]
pub struct SqliteDatabases {
    files: BTreeMap<String, PathBuf>,
}

impl SqliteDatabases {
    /// One file per label under `dir` (`default` is `sqlite_db.db`, as in Spin).
    pub fn new<'a>(dir: PathBuf, labels: impl IntoIterator<Item = &'a String>) -> Self {
        let files = labels
            .into_iter()
            .map(|label| {
                let file = if label == "default" {
                    "sqlite_db.db".to_owned()
                } else {
                    format!("{label}.db")
                };
                (label.clone(), dir.join(file))
            })
            .collect();
        Self { files }
    }

    /// Opens a new connection to `label`'s file.
    pub fn open(&self, label: &str) -> Result<rusqlite::Connection, Error> {
        let path = self.files.get(label).ok_or(Error::NoSuchDatabase)?;
        let mut conn = rusqlite::Connection::open(path).map_err(io)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(io)?;
        // As in Spin: a guest may not ATTACH other files (temporary and in-memory are fine).
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

/// The host side of a `connection` resource.
pub struct Connection {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Io(e.to_string())
}

/// As in Spin: a label the component does not list is `access-denied` (whether or not another
/// component lists it); a listed label without a database would be `no-such-database`.
fn check_access(ctx: &Ctx, label: &str) -> Result<(), Error> {
    if !ctx.env.allowed_sqlite.contains(label) {
        return Err(Error::AccessDenied);
    }
    if !ctx.env.sqlite.files.contains_key(label) {
        return Err(Error::NoSuchDatabase);
    }
    Ok(())
}

fn lock(conn: &Mutex<rusqlite::Connection>) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
    // A panic while holding the lock cannot leave the rusqlite connection half-updated.
    conn.lock()
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

fn get_conn(
    ctx: &Ctx,
    res: &Resource<Connection>,
) -> wasmtime::Result<Arc<Mutex<rusqlite::Connection>>> {
    Ok(ctx.table.get(res)?.conn.clone())
}

impl wit::Host for Ctx {}

impl HostConnection for Ctx {
    fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        if let Err(e) = check_access(self, &database) {
            return Ok(Err(e));
        }
        let dbs = self.env.sqlite.clone();
        match tokio::task::block_in_place(|| dbs.open(&database)) {
            Ok(conn) => {
                let conn = Arc::new(Mutex::new(conn));
                Ok(Ok(self.table.push(Connection { conn })?))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    fn execute(
        &mut self,
        self_: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let conn = get_conn(self, &self_)?;
        let result = tokio::task::block_in_place(|| run(&lock(&conn), &statement, &parameters));
        Ok(result.and_then(|ex| {
            ex.trailing.map(|()| QueryResult {
                columns: ex.columns,
                rows: ex.rows,
            })
        }))
    }

    fn last_insert_rowid(&mut self, self_: Resource<Connection>) -> wasmtime::Result<i64> {
        let conn = get_conn(self, &self_)?;
        Ok(tokio::task::block_in_place(|| {
            lock(&conn).last_insert_rowid()
        }))
    }

    fn changes(&mut self, self_: Resource<Connection>) -> wasmtime::Result<u64> {
        let conn = get_conn(self, &self_)?;
        Ok(tokio::task::block_in_place(|| lock(&conn).changes()))
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

impl<T: Send> HostConnectionWithStore<T> for Ctx {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let checked = accessor.with(|mut access| {
            let ctx = access.get();
            check_access(ctx, &database).map(|()| ctx.env.sqlite.clone())
        });
        let dbs = match checked {
            Ok(dbs) => dbs,
            Err(e) => return Ok(Err(e)),
        };
        match blocking(move || dbs.open(&database)).await? {
            Ok(conn) => {
                let conn = Arc::new(Mutex::new(conn));
                accessor.with(|mut access| Ok(Ok(access.get().table.push(Connection { conn })?)))
            }
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
        let conn = accessor.with(|mut access| get_conn(access.get(), &self_))?;
        let executed = blocking(move || run(&lock(&conn), &statement, &parameters)).await?;
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
        let conn = accessor.with(|mut access| get_conn(access.get(), &self_))?;
        blocking(move || lock(&conn).last_insert_rowid()).await
    }

    async fn changes_async(
        accessor: &Accessor<T, Self>,
        self_: Resource<Connection>,
    ) -> wasmtime::Result<u64> {
        let conn = accessor.with(|mut access| get_conn(access.get(), &self_))?;
        blocking(move || lock(&conn).changes()).await
    }
}
