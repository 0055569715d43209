//! A `spin:sqlite` connection to a libSQL server, as Spin 4.1's `crates/sqlite-libsql`: the
//! client (`Builder::new_remote(url, token).build()` + `connect()`) is made lazily at the first
//! call, once per `open`, so one Hrana stream per open and one round trip per statement. Errors
//! are `io(message)` with libSQL's text. No reconnect: when the server has dropped the stream
//! (sqld does after about 10 s idle) the next statement fails, and the guest sees it.

use super::{Error, Executed, ROWS_MAX, RowResult, Value, io};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// A lazily made libSQL remote connection (cheap to clone: all clones share it).
#[derive(Clone)]
pub struct RemoteConnection {
    inner: Arc<Lazy>,
}

struct Lazy {
    url: String,
    token: String,
    conn: OnceCell<libsql::Connection>,
}

impl RemoteConnection {
    /// A connection to `url` with `token`, made at its first use.
    pub(super) fn new(url: String, token: String) -> Self {
        Self {
            inner: Arc::new(Lazy {
                url,
                token,
                conn: OnceCell::new(),
            }),
        }
    }

    /// The client, made at the first call. As Spin, a failure is `invalid-connection`.
    async fn connection(&self) -> Result<&libsql::Connection, Error> {
        let lazy = &*self.inner;
        lazy.conn
            .get_or_try_init(|| async {
                let db = libsql::Builder::new_remote(lazy.url.clone(), lazy.token.clone())
                    .build()
                    .await?;
                db.connect()
            })
            .await
            .map_err(|e| {
                eprintln!(
                    "local-host: cannot create the libSQL client for {}: {e}",
                    lazy.url
                );
                Error::InvalidConnection
            })
    }

    /// Runs one statement: `Err` if it could not be sent or the server refused it; an error
    /// while reading its rows ends them and is the trailing error.
    pub(super) async fn run(&self, sql: &str, params: &[Value]) -> Result<Executed, Error> {
        let conn = self.connection().await?;
        let mut rows = conn
            .query(sql, params.iter().map(to_libsql).collect::<Vec<_>>())
            .await
            .map_err(io)?;
        let n = rows.column_count();
        let columns = (0..n)
            .map(|i| rows.column_name(i).unwrap_or("").to_owned())
            .collect();
        let mut out = Vec::new();
        let trailing = loop {
            match rows.next().await {
                Ok(Some(row)) => {
                    if out.len() >= ROWS_MAX {
                        break Err(Error::Io(format!(
                            "query returned more than {ROWS_MAX} rows"
                        )));
                    }
                    match (0..n)
                        .map(|i| row.get_value(i).map(from_libsql))
                        .collect::<libsql::Result<Vec<_>>>()
                    {
                        Ok(values) => out.push(RowResult { values }),
                        Err(e) => break Err(io(e)),
                    }
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

    /// `changes` and `last-insert-rowid` of the last statement (libSQL's client keeps them).
    /// As Spin, failing to make the client here is a host error (the guest traps).
    pub(super) async fn counts(&self) -> wasmtime::Result<(u64, i64)> {
        let conn = self
            .connection()
            .await
            .map_err(|e| wasmtime::format_err!("libSQL connection unavailable: {e:?}"))?;
        Ok((conn.changes(), conn.last_insert_rowid()))
    }
}

fn to_libsql(v: &Value) -> libsql::Value {
    match v {
        Value::Integer(i) => libsql::Value::Integer(*i),
        Value::Real(f) => libsql::Value::Real(*f),
        Value::Text(t) => libsql::Value::Text(t.clone()),
        Value::Blob(b) => libsql::Value::Blob(b.clone()),
        Value::Null => libsql::Value::Null,
    }
}

fn from_libsql(v: libsql::Value) -> Value {
    match v {
        libsql::Value::Null => Value::Null,
        libsql::Value::Integer(i) => Value::Integer(i),
        libsql::Value::Real(f) => Value::Real(f),
        libsql::Value::Text(t) => Value::Text(t),
        libsql::Value::Blob(b) => Value::Blob(b),
    }
}
