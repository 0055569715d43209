//! [`Storage`] over rusqlite, for native tests and benchmarks. Same SQL as in Wasm.

use std::path::Path;

use rusqlite::types::{Value, ValueRef};

use crate::schema::{CONNECTION_PRAGMAS, ENABLE_WAL, FILE_PRAGMAS};
use crate::storage::{Row, SqlValue, Storage, StorageError};

/// One rusqlite connection to a ledger database file.
pub struct NativeDb {
    connection: rusqlite::Connection,
    /// Statements SQLite prepared again before running them (see [`NativeDb::reprepares`]).
    reprepares: std::cell::Cell<u64>,
}

impl NativeDb {
    /// Opens (creating if needed) the database at `path` with the ledger's pragmas and WAL.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let connection = rusqlite::Connection::open(path).map_err(to_storage_error)?;
        connection.set_prepared_statement_cache_capacity(256);
        // As the local host does: without it SQLite re-prepares (re-parses, re-plans, re-codes
        // the triggers of) a cached statement whenever a parameter it compared with a partial
        // index's WHERE changes, which was a quarter of a debit's CPU (docs/performance.md).
        connection
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )
            .map_err(to_storage_error)?;
        Self::with_pragmas(connection)
    }

    /// Opens the database at `path` as a Spin instance's connection is: rusqlite's defaults (no
    /// query-planner stability flag, the default statement cache), then the ledger's pragmas.
    pub fn open_as_spin(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let connection = rusqlite::Connection::open(path).map_err(to_storage_error)?;
        Self::with_pragmas(connection)
    }

    /// How many times SQLite had to prepare a cached statement again before running it (a
    /// schema change, or a plan that depended on a bound value that changed).
    pub fn reprepares(&self) -> u64 {
        self.reprepares.get()
    }

    fn with_pragmas(connection: rusqlite::Connection) -> Result<Self, StorageError> {
        let db = Self {
            connection,
            reprepares: std::cell::Cell::new(0),
        };
        for pragma in CONNECTION_PRAGMAS
            .iter()
            .chain(FILE_PRAGMAS)
            .chain([&ENABLE_WAL])
        {
            db.run(pragma, &[], |_| {})?;
        }
        Ok(db)
    }

    /// Sets `synchronous` (e.g. `FULL` for the durable-commit benchmark).
    pub fn set_synchronous(&self, level: &str) -> Result<(), StorageError> {
        self.run(&format!("PRAGMA synchronous = {level}"), &[], |_| {})
    }

    fn run(
        &self,
        sql: &str,
        params: &[SqlValue],
        mut on_row: impl FnMut(Row),
    ) -> Result<(), StorageError> {
        let mut statement = self
            .connection
            .prepare_cached(sql)
            .map_err(to_storage_error)?;
        let column_count = statement.column_count();
        let params = rusqlite::params_from_iter(params.iter().map(to_value));
        let mut rows = statement.query(params).map_err(to_storage_error)?;
        while let Some(row) = rows.next().map_err(to_storage_error)? {
            let mut values = Vec::with_capacity(column_count);
            for index in 0..column_count {
                values.push(from_value(row.get_ref(index).map_err(to_storage_error)?));
            }
            on_row(values);
        }
        drop(rows);
        let reprepared = statement.reset_status(rusqlite::StatementStatus::RePrepare);
        self.reprepares
            .set(self.reprepares.get() + u64::try_from(reprepared).unwrap_or(0));
        Ok(())
    }
}

impl Storage for NativeDb {
    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<(), StorageError> {
        self.run(sql, params, |_| {})
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StorageError> {
        let mut rows = Vec::new();
        self.run(sql, params, |row| rows.push(row))?;
        Ok(rows)
    }
}

fn to_value(value: &SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Integer(*i),
        SqlValue::Real(f) => Value::Real(*f),
        SqlValue::Text(s) => Value::Text(s.clone()),
        SqlValue::Blob(b) => Value::Blob(b.clone()),
    }
}

fn from_value(value: ValueRef<'_>) -> SqlValue {
    match value {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

fn to_storage_error(error: rusqlite::Error) -> StorageError {
    StorageError::from_sqlite_message(error.to_string())
}
