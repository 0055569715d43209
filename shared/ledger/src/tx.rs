//! Transactions on one connection: write transactions (`BEGIN IMMEDIATE` ... `COMMIT`, retried
//! on SQLITE_BUSY) and read snapshots (`BEGIN` ... `COMMIT`).

use crate::storage::{Storage, StorageErrorKind};
use crate::{LedgerError, Result};

/// How many times a transaction that hit SQLITE_BUSY is retried (each attempt already waited up
/// to the connection's `busy_timeout`).
pub const BUSY_RETRIES_MAX: u32 = 3;

fn is_busy(error: &LedgerError) -> bool {
    matches!(error, LedgerError::Storage(e) if e.kind == StorageErrorKind::Busy)
}

/// Runs `body` inside one write transaction. Any error rolls everything back, so a failed
/// operation writes nothing; a busy database is retried up to [`BUSY_RETRIES_MAX`] times.
pub async fn immediate<S, T>(db: &S, mut body: impl AsyncFnMut(&S) -> Result<T>) -> Result<T>
where
    S: Storage,
{
    let mut attempt = 0;
    loop {
        let outcome = run_once(db, "BEGIN IMMEDIATE", &mut body).await;
        match outcome {
            Err(error) if is_busy(&error) && attempt < BUSY_RETRIES_MAX => attempt += 1,
            other => return other,
        }
    }
}

/// Runs `body`, which only reads, on one committed state of the database: a deferred
/// transaction, whose first read fixes the snapshot (WAL) and which takes no write lock. For a
/// view made of several reads whose figures must agree (the summary's balances, pending top-ups
/// and runway), so that a payment settled between two of them is seen in neither or both.
pub async fn snapshot<S, T>(db: &S, mut body: impl AsyncFnMut(&S) -> Result<T>) -> Result<T>
where
    S: Storage,
{
    run_once(db, "BEGIN", &mut body).await
}

async fn run_once<S, T>(
    db: &S,
    begin: &str,
    body: &mut impl AsyncFnMut(&S) -> Result<T>,
) -> Result<T>
where
    S: Storage,
{
    if let Err(error) = db.execute(begin, &[]).await {
        // A BEGIN refused busy started nothing. Any other failure may have been reported after
        // the BEGIN ran (an I/O error, a lost answer): roll back, or the connection would stay
        // inside a transaction where every later statement runs and is never committed. SQLite
        // does not do that today; the simulator's faults showed the path (docs/reliability.md).
        if error.kind != StorageErrorKind::Busy {
            let _ = db.execute("ROLLBACK", &[]).await;
        }
        return Err(error.into());
    }
    let result = match body(db).await {
        Ok(value) => db
            .execute("COMMIT", &[])
            .await
            .map(|()| value)
            .map_err(LedgerError::from),
        Err(error) => Err(error),
    };
    if result.is_err() {
        // SQLite may already have rolled back (e.g. after SQLITE_FULL); "no transaction is
        // active" is then expected, and the original error is the one worth reporting.
        let _ = db.execute("ROLLBACK", &[]).await;
    }
    result
}
