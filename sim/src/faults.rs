//! Storage faults (issue 26, item 3, first increment): [`FaultyDb`] wraps the ledger's
//! [`NativeDb`] and makes one chosen statement of an operation fail before it runs, with the error
//! SQLite itself gives (`SQLITE_BUSY`, `SQLITE_IOERR`, `SQLITE_FULL`), so that the ledger
//! classifies it exactly as it would a real one.
//!
//! The schedule is part of the [`crate::Scenario`] (drawn from the seed, one optional [`Fault`]
//! per operation index), so a failure replays from `--seed` and survives shrinking.
//!
//! A fault injected before a statement runs leaves SQLite as that error would: nothing of the
//! statement was done. On `COMMIT` that means the transaction is still open and nothing of it is
//! committed; the ledger's `tx` code then runs `ROLLBACK` (as it does after a real failed
//! `COMMIT`, which SQLite may or may not have rolled back already), so an operation answered
//! with an error must have written nothing, and the simulator checks exactly that.

use std::cell::Cell;

use ledger::native::NativeDb;
use ledger::storage::{Row, SqlValue, Storage, StorageError};

/// The last statement of an operation a fault can be placed at (0-based, `ROLLBACK` not
/// counted). The operations run 1 to 15 statements: a hot path 1 or 2 (its read, its guarded
/// write), a write transaction up to 15 (`BEGIN IMMEDIATE`, reads, writes, `COMMIT`). An
/// operation that runs fewer statements than its fault's index escapes it; the figures count
/// those apart.
pub const STATEMENT_INDEX_MAX: usize = 15;

/// Consecutive statements a busy storm fails at most: one more than the ledger's busy retries
/// (`ledger::tx::BUSY_RETRIES_MAX`), so that some storms outlast them.
pub const BUSY_STORM_MAX: u32 = ledger::tx::BUSY_RETRIES_MAX + 2;

/// Which error SQLite answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// `SQLITE_BUSY`: another connection holds the lock past the busy timeout.
    Busy,
    /// `SQLITE_IOERR`: the disk failed a read or write.
    IoErr,
    /// `SQLITE_FULL`: the disk (or `max_page_count`) is full.
    Full,
}

impl FaultKind {
    /// SQLite's own message for the code (`sqlite3_errstr`), which is what rusqlite's error
    /// displays and `NativeDb` hands to [`StorageError::from_sqlite_message`].
    pub fn message(self) -> &'static str {
        match self {
            Self::Busy => "database is locked",
            Self::IoErr => "disk I/O error",
            Self::Full => "database or disk is full",
        }
    }

    /// A short name for the figures.
    pub fn name(self) -> &'static str {
        match self {
            Self::Busy => "SQLITE_BUSY",
            Self::IoErr => "SQLITE_IOERR",
            Self::Full => "SQLITE_FULL",
        }
    }
}

/// One operation's fault: statement `at` of the operation, and the `count - 1` statements after
/// it (a busy storm; 1 for the other kinds), fail with `kind` before they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What SQLite answers.
    pub kind: FaultKind,
    /// Which statement of the operation (0-based, `ROLLBACK` not counted).
    pub at: usize,
    /// How many consecutive statements fail.
    pub count: u32,
}

/// Where a fault landed: the first statement it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The fault.
    pub fault: Fault,
    /// What kind of statement it hit (`BEGIN IMMEDIATE`, `COMMIT`, `read`, `write`), for the
    /// figures.
    pub statement: &'static str,
}

/// [`NativeDb`] with at most one armed [`Fault`] at a time.
pub struct FaultyDb {
    inner: NativeDb,
    armed: Cell<Option<Fault>>,
    /// Statements run (or failed) since the fault was armed, `ROLLBACK` not counted.
    statements: Cell<usize>,
    /// Statements still to fail once the fault fired.
    failing: Cell<u32>,
    fired: Cell<Option<(Fault, &'static str)>>,
    /// Test knob: the fault waits for a write outside a transaction, runs it, then fails it (a
    /// lost acknowledgement, which the ledger cannot tell from a write that did not run). Off
    /// in every real run: it exists to prove the simulator catches the write left behind.
    after: bool,
    /// Whether a `BEGIN` ran and no `COMMIT` or `ROLLBACK` since, as SQLite's autocommit flag.
    in_transaction: Cell<bool>,
}

impl FaultyDb {
    /// Wraps `inner`, with nothing armed.
    pub fn new(inner: NativeDb) -> Self {
        Self {
            inner,
            armed: Cell::new(None),
            statements: Cell::new(0),
            failing: Cell::new(0),
            fired: Cell::new(None),
            after: false,
            in_transaction: Cell::new(false),
        }
    }

    /// The test knob of [`FaultyDb::after`]: faults fail their statement after it ran.
    #[doc(hidden)]
    pub fn lose_acknowledgements(&mut self) {
        self.after = true;
    }

    /// Arms `fault` for the next operation.
    pub fn arm(&self, fault: Fault) {
        self.armed.set(Some(fault));
        self.statements.set(0);
        self.failing.set(0);
        self.fired.set(None);
    }

    /// Disarms, and says where the fault fired (`None`: the operation ran fewer statements).
    pub fn disarm(&self) -> Option<Fired> {
        self.armed.set(None);
        self.failing.set(0);
        self.fired
            .take()
            .map(|(fault, statement)| Fired { fault, statement })
    }

    /// The error this statement fails with, if it is one the armed fault covers.
    fn fault_for(&self, sql: &str) -> Option<StorageError> {
        let fault = self.armed.get()?;
        // A ROLLBACK is not a place a fault is put: SQLite answers neither BUSY nor FULL to it,
        // and an I/O error there is a connection lost mid-transaction, a later increment.
        if is_rollback(sql) {
            return None;
        }
        let index = self.statements.get();
        self.statements.set(index + 1);
        let eligible =
            !self.after || (statement_kind(sql) == "write" && !self.in_transaction.get());
        if index >= fault.at && eligible && self.fired.get().is_none() {
            self.failing.set(fault.count);
            self.fired.set(Some((fault, statement_kind(sql))));
        }
        let failing = self.failing.get();
        if failing == 0 {
            return None;
        }
        self.failing.set(failing - 1);
        Some(StorageError::from_sqlite_message(fault.kind.message()))
    }
}

fn is_rollback(sql: &str) -> bool {
    sql.trim_start()
        .get(..8)
        .is_some_and(|word| word.eq_ignore_ascii_case("ROLLBACK"))
}

fn statement_kind(sql: &str) -> &'static str {
    let word = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match word.as_str() {
        "BEGIN" if sql.to_ascii_uppercase().contains("IMMEDIATE") => "BEGIN IMMEDIATE",
        "BEGIN" => "BEGIN",
        "COMMIT" => "COMMIT",
        "SELECT" | "WITH" => "read",
        _ => "write",
    }
}

impl Storage for FaultyDb {
    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<(), StorageError> {
        let result = match self.fault_for(sql) {
            Some(error) if self.after => {
                self.inner.execute(sql, params).await?;
                Err(error)
            }
            Some(error) => Err(error),
            None => self.inner.execute(sql, params).await,
        };
        if result.is_ok() || is_rollback(sql) {
            match statement_kind(sql) {
                "BEGIN" | "BEGIN IMMEDIATE" => self.in_transaction.set(true),
                "COMMIT" => self.in_transaction.set(false),
                _ if is_rollback(sql) => self.in_transaction.set(false),
                _ => {}
            }
        }
        result
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StorageError> {
        match self.fault_for(sql) {
            Some(error) if self.after => {
                self.inner.query(sql, params).await?;
                Err(error)
            }
            Some(error) => Err(error),
            None => self.inner.query(sql, params).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::storage::StorageErrorKind;

    #[test]
    fn the_injected_errors_are_classified_as_sqlites_own() {
        let kind = |fault: FaultKind| StorageError::from_sqlite_message(fault.message()).kind;
        assert_eq!(kind(FaultKind::Busy), StorageErrorKind::Busy);
        assert_eq!(kind(FaultKind::IoErr), StorageErrorKind::Disk);
        assert_eq!(kind(FaultKind::Full), StorageErrorKind::Disk);
    }
}
