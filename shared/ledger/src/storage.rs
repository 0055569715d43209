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
    /// The database cannot be opened or used (missing, access denied, a schema it lacks, ...).
    Unavailable,
    /// The database's disk is full or failing (`SQLITE_FULL`, `SQLITE_IOERR`): the statement was
    /// refused, nothing of it done, and the same request succeeds once space, or the disk, is
    /// back. A condition of the machine, not of the request: answered 503, never 500 (issue 26).
    Disk,
    /// The database server could not be reached or lost the connection (refused, reset, its
    /// stream expired or forgotten by a restart, the statement interrupted): an outage, which a
    /// retry after it ends resolves. Only a libSQL server (`sqld`, Turso) answers this way.
    Unreachable,
}

/// Words of a libSQL client's messages (Hrana over HTTP) that mean the server was not reached,
/// dropped the connection, or refused the request unrun because it is overloaded (sqld answers
/// 429 "Too many concurrent requests" past its limit), as Spin's and the local host's libSQL
/// clients report them. Each is a temporary failure: 503 with `Retry-After`, not a 500.
const UNREACHABLE_MARKS: &[&str] = &[
    "too many concurrent requests",
    "http error",
    "error trying to connect",
    "connection refused",
    "connection reset",
    "broken pipe",
    "error reading a body from connection",
];

/// Words of a libSQL server's answer that it no longer knows the connection's stream: expired
/// after 10 s idle (Hrana's `STREAM_EXPIRED`), or forgotten by a restart ("invalid baton"). The
/// server refused the statement before running it. Also unreachable.
const STREAM_GONE_MARKS: &[&str] = &["stream_expired", "stream has expired", "invalid baton"];

/// Words of SQLite's messages (and of a libSQL server's error codes) for a full or failing disk.
const DISK_MARKS: &[&str] = &[
    "database or disk is full",
    "disk i/o error",
    "sqlite_full",
    "sqlite_ioerr",
];

/// The word of a libSQL server's answer that it interrupted the statement (see `Busy` below).
const INTERRUPTED_MARK: &str = "sqlite_interrupt";

fn mentions(message: &str, marks: &[&str]) -> bool {
    let lower = message.to_ascii_lowercase();
    marks.iter().any(|mark| lower.contains(mark))
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
            // A libSQL server interrupts a statement of a stream whose previous answer the client
            // stopped reading (its cursor is dropped after the last row, racing the next
            // statement). The statement is rolled back, and its transaction with it: like a
            // busy database, the transaction is run again.
            || lower.contains(INTERRUPTED_MARK)
        {
            StorageErrorKind::Busy
        } else if lower.contains("constraint failed") || lower.contains("ledger:") {
            // Triggers raise messages prefixed "ledger:" (see schema.rs).
            StorageErrorKind::Constraint
        } else if DISK_MARKS.iter().any(|mark| lower.contains(mark)) {
            StorageErrorKind::Disk
        } else if UNREACHABLE_MARKS
            .iter()
            .chain(STREAM_GONE_MARKS)
            .any(|mark| lower.contains(mark))
        {
            StorageErrorKind::Unreachable
        } else {
            StorageErrorKind::Unavailable
        };
        Self { kind, message }
    }

    /// Whether a libSQL server refused the statement because it no longer knew the
    /// connection's stream: nothing of it ran, and a new connection is needed.
    pub fn is_stream_gone(&self) -> bool {
        mentions(&self.message, STREAM_GONE_MARKS)
    }

    /// Whether a libSQL server interrupted the statement: it was rolled back, and so was the
    /// transaction it was part of.
    pub fn is_interrupted(&self) -> bool {
        mentions(&self.message, &[INTERRUPTED_MARK])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts a guest sees from Spin's libSQL client (crates.io `libsql` 0.5) against `sqld`.
    #[test]
    fn a_libsql_server_that_is_down_or_lost_the_stream_is_unreachable() {
        for message in [
            "Hrana: `api error: `{\"message\":\"The stream has expired due to inactivity\",\"code\":\"STREAM_EXPIRED\"}``",
            "Hrana: `api error: `Received an invalid baton``",
            "Hrana: `http error: `error trying to connect: tcp connect error: Connection refused (os error 111)``",
            "Hrana: `cursor error: `error reading a body from connection: unexpected EOF during chunk size line``",
        ] {
            assert_eq!(
                StorageError::from_sqlite_message(message).kind,
                StorageErrorKind::Unreachable,
                "{message}"
            );
        }
        let gone = |message: &str| StorageError::from_sqlite_message(message).is_stream_gone();
        assert!(gone(
            "Hrana: `api error: `{\"message\":\"The stream has expired due to inactivity\",\"code\":\"STREAM_EXPIRED\"}``"
        ));
        assert!(gone("Hrana: `api error: `Received an invalid baton``"));
        assert!(!gone(
            "Hrana: `http error: `error trying to connect: tcp connect error: Connection refused (os error 111)``"
        ));
        let interrupted = StorageError::from_sqlite_message(
            "Hrana: `cursor error: `error at step 0: (error code: SQLITE_INTERRUPT) `SQLite error: interrupted```",
        );
        assert!(interrupted.is_interrupted() && !interrupted.is_stream_gone());
        let kind = |message: &str| StorageError::from_sqlite_message(message).kind;
        assert_eq!(kind("database is locked"), StorageErrorKind::Busy);
        // sqld past its concurrent-request limit (HTTP 429), as libSQL 0.5's client words it.
        assert_eq!(
            kind("Hrana: `api error: `{\"error\":\"Too many concurrent requests\"}``"),
            StorageErrorKind::Unreachable
        );
        assert_eq!(
            kind(
                "Hrana: `cursor error: `error at step 0: (error code: SQLITE_INTERRUPT) `SQLite error: interrupted```"
            ),
            StorageErrorKind::Busy
        );
        assert_eq!(
            kind("UNIQUE constraint failed: journal.id"),
            StorageErrorKind::Constraint
        );
        assert_eq!(
            kind("no such table: journal"),
            StorageErrorKind::Unavailable
        );
        for message in [
            "database or disk is full",
            "disk I/O error",
            "Hrana: `cursor error: `error at step 0: (error code: SQLITE_FULL) `SQLite error: database or disk is full```",
        ] {
            assert_eq!(kind(message), StorageErrorKind::Disk, "{message}");
        }
    }
}
