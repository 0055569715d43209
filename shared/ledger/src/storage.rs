//! The storage interface the ledger runs on: parameterised SQL, nothing else.
//!
//! Two implementations run the same SQL: [`crate::native::NativeDb`] over rusqlite (native tests,
//! benches) and the Spin adapter over `spin:sqlite` (Wasm components). A value of a type
//! implementing [`Storage`] is one connection used by one operation at a time: callers that share a
//! connection between concurrent requests must serialise whole ledger operations on it.

use std::fmt;

/// One SQL parameter or result value. Money is always `Integer` micro-credits, never `Real`.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A floating-point value (never used for money).
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Blob(Vec<u8>),
}

/// One result row: values in the order of the statement's columns.
pub type Row = Vec<SqlValue>;

/// What kind of failure a statement hit; the ledger retries `Busy` and maps `Constraint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The database is locked by another writer (SQLITE_BUSY / SQLITE_LOCKED).
    Busy,
    /// A CHECK, UNIQUE, NOT NULL, FOREIGN KEY constraint or a trigger's RAISE(ABORT) refused it.
    Constraint,
    /// The database cannot be opened or used (missing, access denied, I/O, full, ...).
    Unavailable,
}

/// A failed storage call, with the engine's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    /// The classification the ledger acts on.
    pub kind: StorageErrorKind,
    /// SQLite's message text (e.g. "UNIQUE constraint failed: journal.id").
    pub message: String,
}

impl StorageError {
    /// Classifies an SQLite error message the way both implementations report it.
    pub fn from_sqlite_message(message: impl Into<String>) -> Self {
        let message = message.into();
        let lower = message.to_ascii_lowercase();
        let kind = if lower.contains("database is locked")
            || lower.contains("database table is locked")
            || lower.contains("database is busy")
        {
            StorageErrorKind::Busy
        } else if lower.contains("constraint failed") || lower.contains("ledger:") {
            // Triggers raise messages prefixed "ledger:" (see schema.rs).
            StorageErrorKind::Constraint
        } else {
            StorageErrorKind::Unavailable
        };
        Self { kind, message }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for StorageError {}

/// A connection to the ledger's SQLite database.
///
/// Each call runs exactly one SQL statement. Transactions are plain statements
/// (`BEGIN IMMEDIATE`, `COMMIT`, `ROLLBACK`) on the same connection.
#[allow(async_fn_in_trait)]
pub trait Storage {
    /// Runs one statement that returns no rows the caller needs (use `RETURNING` + [`Storage::query`]
    /// to learn what a write changed: one host round trip instead of two).
    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<(), StorageError>;

    /// Runs one statement and returns all its rows.
    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StorageError>;
}
