//! Storage faults (issue 26, item 3): [`FaultyDb`] wraps the ledger's [`NativeDb`] behind the
//! [`Storage`] trait and, at one chosen statement of an operation, makes the storage fail.
//!
//! Two sorts of faults ([`Family`] groups them for the command line). Injected ones answer
//! SQLite's own error for a statement without SQLite having failed (`SQLITE_BUSY`,
//! `SQLITE_IOERR`, `SQLITE_FULL` before the statement runs, or `SQLITE_IOERR` after a statement
//! inside a transaction ran), so that the ledger classifies them as it would real ones. Real
//! ones make SQLite itself fail, on a database file: the connection (or every connection on the
//! file) is closed mid-operation without `COMMIT` and a new one opened on the file (a process
//! killed there; after a crash of all of them, SQLite recovers the database from the WAL),
//! `PRAGMA max_page_count` is lowered to the file's size so that a statement needing a new page
//! gets `SQLITE_FULL` from SQLite and space then returns, or one I/O call under SQLite fails
//! ([`crate::vfs`]).
//!
//! The schedule is part of the [`crate::Scenario`] (drawn from the seed, one optional [`Fault`]
//! per operation index), so a failure replays from `--seed` and survives shrinking.
//!
//! A fault injected before a statement runs leaves SQLite as that error would: nothing of the
//! statement was done. On `COMMIT` that means the transaction is still open and nothing of it is
//! committed; the ledger's `tx` code then runs `ROLLBACK` (as it does after a real failed
//! `COMMIT`, which SQLite may or may not have rolled back already), so an operation answered
//! with an error must have written nothing, and the simulator checks exactly that.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use ledger::native::NativeDb;
use ledger::storage::{Row, SqlValue, Storage, StorageError};

use crate::Rng;
use crate::vfs::{self, IoFault};

/// The last statement of an operation a fault can be placed at (0-based, `ROLLBACK` not
/// counted). The operations run 1 to 15 statements: a hot path 1 or 2 (its read, its guarded
/// write), a write transaction up to 15 (`BEGIN IMMEDIATE`, reads, writes, `COMMIT`). An
/// operation that runs fewer statements than its fault's index escapes it; the figures count
/// those apart.
pub const STATEMENT_INDEX_MAX: usize = 15;

/// Consecutive statements a busy storm fails at most: one more than the ledger's busy retries
/// (`ledger::tx::BUSY_RETRIES_MAX`), so that some storms outlast them.
pub const BUSY_STORM_MAX: u32 = ledger::tx::BUSY_RETRIES_MAX + 2;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Injected before the statement: `SQLITE_BUSY`, another connection holds the lock past
    /// the busy timeout.
    Busy,
    /// Injected before the statement: `SQLITE_IOERR`, the disk failed a read or write.
    IoErr,
    /// Injected before the statement: `SQLITE_FULL`, the disk (or `max_page_count`) is full.
    Full,
    /// Injected after the statement: a statement inside a transaction (after `BEGIN`, before
    /// `COMMIT`), or the `BEGIN` itself, runs, its effects stay in the transaction, and
    /// `SQLITE_IOERR` is answered. The ledger must roll the whole transaction back (after a
    /// failed `BEGIN` too: `tx::run_once` did not, found this way).
    IoErrAfter,
    /// Real: the connection is closed before the statement runs, with whatever transaction it
    /// had open and not committed (as a process killed there: SQLite rolls it back), every later
    /// statement of the operation fails (the process is gone), and a new connection is opened
    /// on the same file for the next operation. Another connection stays open on the file
    /// throughout (another instance), so the close is not the file's last: no checkpoint, the
    /// WAL stays as the killed connection left it.
    Kill,
    /// Real: as [`FaultKind::Kill`], but every connection on the file dies (the whole service,
    /// or the machine's only instance), none of them checkpointing or removing the WAL as they
    /// go ([`vfs::dying`]): the next connection opened finds the WAL as they left it, with its
    /// committed frames and any uncommitted ones past them, and must recover the database from
    /// it.
    Crash,
    /// Real: the process dies in the middle of a write: from the statement on, the
    /// `count`-th `xWrite` under SQLite fails ([`crate::vfs`]) and, if the statement then fails
    /// (a `COMMIT`'s WAL append cut after some of its frames), every connection on the file dies
    /// there as in a [`FaultKind::Crash`]: the WAL keeps the frames written before the cut, past
    /// the last commit, and the recovery must ignore them. A cut that SQLite absorbs (a
    /// checkpoint's write; the statement succeeded) kills nothing: its answer could not be lost
    /// without losing an acknowledgement, which the simulator does not draw.
    TornWrite,
    /// Real: `PRAGMA max_page_count` is lowered to the database's size before the statement, so
    /// the first statement that needs a new page gets `SQLITE_FULL` from SQLite itself; the
    /// limit is raised back after the operation (space returns) on the same connection.
    DiskFull,
    /// Real: from the statement on, the `count`-th call of one I/O method under SQLite fails
    /// ([`crate::vfs`]): SQLite itself handles the failed read, write, sync or truncation.
    Io(IoFault),
}

impl FaultKind {
    /// SQLite's own message for an injected code (`sqlite3_errstr`), which is what rusqlite's
    /// error displays and `NativeDb` hands to [`StorageError::from_sqlite_message`].
    pub fn message(self) -> &'static str {
        match self {
            Self::Busy => "database is locked",
            Self::IoErr | Self::IoErrAfter | Self::Io(_) => "disk I/O error",
            Self::Full | Self::DiskFull => "database or disk is full",
            Self::Kill | Self::Crash | Self::TornWrite => KILLED,
        }
    }

    /// A short name for the figures.
    pub fn name(self) -> &'static str {
        match self {
            Self::Busy => "SQLITE_BUSY",
            Self::IoErr => "SQLITE_IOERR",
            Self::Full => "SQLITE_FULL",
            Self::IoErrAfter => "SQLITE_IOERR after the statement ran",
            Self::Kill => "connection killed",
            Self::Crash => "every connection killed (WAL recovery)",
            Self::TornWrite => "killed mid-write (torn WAL append, recovery)",
            Self::DiskFull => "disk full (max_page_count)",
            Self::Io(fault) => fault.name(),
        }
    }

    /// Whether the fault needs the database to be a file (a connection can be reopened on it).
    pub fn needs_file(self) -> bool {
        matches!(
            self,
            Self::Kill | Self::Crash | Self::TornWrite | Self::DiskFull | Self::Io(_)
        )
    }
}

/// What every statement of an operation answers after its connection was killed: the process
/// is gone, nothing of the statement reaches the file. Classified `Disk` (not retried as busy):
/// nobody hears the answer anyway.
const KILLED: &str = "disk I/O error (simulated: the connection was killed)";

/// Families of faults, as `simulate --fault-kinds` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `injected`: BUSY (single or a storm), IOERR, FULL before a statement.
    Injected,
    /// `after`: IOERR after a statement inside a transaction ran.
    After,
    /// `kill`: the connection killed mid-operation and reopened, alone or with every other
    /// connection on the file.
    Kill,
    /// `full`: a real `SQLITE_FULL` through `max_page_count`.
    DiskFull,
    /// `io`: an I/O call under SQLite fails.
    Io,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 5] = [
        Family::Injected,
        Family::After,
        Family::Kill,
        Family::DiskFull,
        Family::Io,
    ];

    /// The family `simulate --fault-kinds` names `word`.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|family| family.word() == word)
    }

    /// Its name on the command line.
    pub fn word(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::After => "after",
            Self::Kill => "kill",
            Self::DiskFull => "full",
            Self::Io => "io",
        }
    }

    /// Its kinds, each with its weight (out of 120 when every family is drawn).
    fn kinds(self) -> &'static [(u64, FaultKind)] {
        match self {
            Self::Injected => &[
                (25, FaultKind::Busy),
                (10, FaultKind::IoErr),
                (10, FaultKind::Full),
            ],
            Self::After => &[(15, FaultKind::IoErrAfter)],
            Self::Kill => &[
                (7, FaultKind::Kill),
                (7, FaultKind::Crash),
                (6, FaultKind::TornWrite),
            ],
            Self::DiskFull => &[(20, FaultKind::DiskFull)],
            Self::Io => &[
                (4, FaultKind::Io(IoFault::Read)),
                (4, FaultKind::Io(IoFault::Write)),
                (4, FaultKind::Io(IoFault::WriteFull)),
                (4, FaultKind::Io(IoFault::Sync)),
                (4, FaultKind::Io(IoFault::Truncate)),
            ],
        }
    }
}

/// One operation's fault: statement `at` of the operation, and the `count - 1` statements after
/// it (a busy storm; 1 for the other kinds), fail with `kind`; for an I/O fault, the `count`-th
/// call of its method from statement `at` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// Which statement of the operation (0-based, `ROLLBACK` not counted).
    pub at: usize,
    /// How many consecutive statements fail.
    pub count: u32,
}

impl Fault {
    /// Draws one operation's fault from the families `families` (which must not be empty),
    /// taking the same number of values from `rng` whatever it draws, so that each operation's
    /// fault depends only on the seed and its index.
    pub fn draw(rng: &mut Rng, families: &[Family]) -> Self {
        let kinds: Vec<(u64, FaultKind)> = families
            .iter()
            .flat_map(|family| family.kinds().iter().copied())
            .collect();
        let total: u64 = kinds.iter().map(|(weight, _)| weight).sum();
        let (mut roll, early, count) = (
            rng.next_u64() % total,
            rng.chance(50),
            rng.range(1, i64::from(BUSY_STORM_MAX)) as u32,
        );
        // Half on the first two statements (most operations run only those: a hot path's read
        // and guarded write), half anywhere in a long transaction.
        let at = rng.index(if early { 2 } else { STATEMENT_INDEX_MAX + 1 });
        let mut kind = kinds[0].1;
        for (weight, candidate) in kinds {
            if roll < weight {
                kind = candidate;
                break;
            }
            roll -= weight;
        }
        let count = match kind {
            FaultKind::Busy | FaultKind::Io(_) => count,
            _ => 1,
        };
        Self { kind, at, count }
    }
}

/// Where a fault landed: the first statement it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The fault.
    pub fault: Fault,
    /// What kind of statement it hit (`BEGIN IMMEDIATE`, `COMMIT`, `read`, `write`), for the
    /// figures.
    pub statement: &'static str,
    /// For an I/O fault, the file whose call failed (`database`, `WAL`).
    pub file: Option<&'static str>,
}

/// A deliberate defect of the fault layer, for the tests that show the checks can fail. Never
/// set in a real run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sabotage {
    /// None: the faults as documented.
    #[default]
    None,
    /// Injected faults wait for a write outside a transaction, run it, then fail it (a lost
    /// acknowledgement, which the ledger cannot tell from a write that did not run).
    LoseAcknowledgements,
    /// A killed connection commits what its transaction had done before it is closed (as if
    /// the process died after a `COMMIT` nobody asked for).
    CommitKilledWork,
}

/// The database file of a [`FaultyDb`], removed (with its WAL and shared memory) when dropped.
struct DbFile {
    path: PathBuf,
    /// A second connection that stays open on the file (another instance of the service): the
    /// ledger's connection is then never the file's last, so closing it (a kill) neither
    /// checkpoints nor removes the WAL. `None` between a crash and the end of the operation.
    bystander: RefCell<Option<NativeDb>>,
}

impl Drop for DbFile {
    fn drop(&mut self) {
        drop(self.bystander.take());
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// A connection to the file with the ledger's pragmas, through the fault-injecting VFS (whose
/// `xSync` does not sync: each checkpoint's syncs cost a few seconds a seed on this machine's
/// disk, and what the simulator kills is a process, not the machine), checkpointing every
/// [`CHECKPOINT_PAGES`] pages of WAL.
fn connect(path: &std::path::Path) -> Result<NativeDb, StorageError> {
    // A URI's path escapes what would end it or be decoded in it.
    let path = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    let db = NativeDb::open(format!("file:{path}?vfs={}", vfs::NAME))?;
    futures::executor::block_on(db.execute(
        &format!("PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}"),
        &[],
    ))?;
    Ok(db)
}

/// The simulator's connections checkpoint every this many pages of WAL, not the ledger's 200: an
/// operation writes a few pages, and a checkpoint (SQLite reading the WAL back, writing the
/// database, syncing both, truncating) is where most reads, syncs and truncations of a small
/// database happen, so that an I/O fault armed for one operation meets one about as often as a
/// write. How often SQLite checkpoints is not the ledger's behaviour.
const CHECKPOINT_PAGES: u32 = 20;

/// Files made by this process, for unique names.
static FILES: AtomicU64 = AtomicU64::new(0);

/// [`NativeDb`] with at most one armed [`Fault`] at a time.
pub struct FaultyDb {
    /// The ledger's connection; `None` between a kill and the end of the operation (or when it
    /// could not be reopened, with the reason in `reopen_failed`).
    inner: RefCell<Option<Rc<NativeDb>>>,
    /// The file, when the database is one (`None`: in memory, and no real fault can be armed).
    file: Option<DbFile>,
    armed: Cell<Option<Fault>>,
    /// Statements run (or failed) since the fault was armed, `ROLLBACK` not counted.
    statements: Cell<usize>,
    /// Statements still to fail once the fault fired.
    failing: Cell<u32>,
    fired: Cell<Option<(Fault, &'static str)>>,
    /// The file an I/O fault failed a call on.
    fired_file: Cell<Option<&'static str>>,
    /// A real fault put in place (the page limit lowered, an I/O call armed) that has not made
    /// anything fail yet.
    pending: Cell<Option<Fault>>,
    /// The connection's `max_page_count` before it was lowered, to raise it back to.
    page_limit: Cell<Option<i64>>,
    /// The connection was killed during this operation: every statement fails until disarmed.
    killed: Cell<bool>,
    reopen_failed: RefCell<Option<String>>,
    sabotage: Sabotage,
    /// Whether a `BEGIN` ran and no `COMMIT` or `ROLLBACK` since, as SQLite's autocommit flag.
    in_transaction: Cell<bool>,
}

impl FaultyDb {
    /// Wraps `inner`, with nothing armed; no real fault can be armed on it.
    pub fn new(inner: NativeDb) -> Self {
        Self::with_file(inner, None)
    }

    /// An in-memory database.
    pub fn in_memory() -> Result<Self, StorageError> {
        Ok(Self::new(NativeDb::open(":memory:")?))
    }

    /// A new database file in the temporary directory (`TMPDIR`), removed when dropped,
    /// opened through the fault-injecting VFS ([`crate::vfs`]).
    pub fn on_file() -> Result<Self, StorageError> {
        vfs::register().map_err(StorageError::from_sqlite_message)?;
        let path = std::env::temp_dir().join(format!(
            "ledger-sim-{}-{}.db",
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        ));
        let file = DbFile {
            path,
            bystander: RefCell::new(None),
        };
        let inner = connect(&file.path)?;
        *file.bystander.borrow_mut() = Some(connect(&file.path)?);
        Ok(Self::with_file(inner, Some(file)))
    }

    fn with_file(inner: NativeDb, file: Option<DbFile>) -> Self {
        Self {
            inner: RefCell::new(Some(Rc::new(inner))),
            file,
            armed: Cell::new(None),
            statements: Cell::new(0),
            failing: Cell::new(0),
            fired: Cell::new(None),
            fired_file: Cell::new(None),
            pending: Cell::new(None),
            page_limit: Cell::new(None),
            killed: Cell::new(false),
            reopen_failed: RefCell::new(None),
            sabotage: Sabotage::None,
            in_transaction: Cell::new(false),
        }
    }

    /// The test knob of [`Sabotage`].
    #[doc(hidden)]
    pub fn sabotage(&mut self, sabotage: Sabotage) {
        self.sabotage = sabotage;
    }

    /// Arms `fault` for the next operation.
    pub fn arm(&self, fault: Fault) {
        assert!(
            self.file.is_some() || !fault.kind.needs_file(),
            "{fault:?} needs a database file"
        );
        self.armed.set(Some(fault));
        self.statements.set(0);
        self.failing.set(0);
        self.fired.set(None);
        self.fired_file.set(None);
        self.pending.set(None);
    }

    /// Disarms, undoes what a real fault put in place (reopens a killed connection, raises the
    /// page limit back), and says where the fault fired, or why it did not: the operation ran
    /// fewer statements, or needed no new page.
    pub fn disarm(&self) -> Result<Fired, &'static str> {
        self.armed.set(None);
        self.failing.set(0);
        vfs::disarm();
        if self.killed.replace(false) {
            self.reopen();
        }
        if let Some(limit) = self.page_limit.take() {
            let raised = futures::executor::block_on(
                self.pragma(&format!("PRAGMA max_page_count = {limit}")),
            );
            if let Err(error) = raised {
                // Answered by the next statements: the rerun then diverges, naming it.
                *self.reopen_failed.borrow_mut() = Some(format!("space did not return: {error}"));
            }
        }
        let pending = self.pending.take();
        match (self.fired.take(), pending) {
            (Some((fault, statement)), _) => Ok(Fired {
                fault,
                statement,
                file: self.fired_file.take(),
            }),
            (
                None,
                Some(Fault {
                    kind: FaultKind::Io(_) | FaultKind::TornWrite,
                    ..
                }),
            ) => Err("no such I/O call"),
            (None, Some(_)) => Err("no new page needed"),
            (None, None) => Err("fewer statements"),
        }
    }

    /// Opens a new connection on the file, as the service does after its process died (the
    /// first one after a crash recovers the database from the WAL), and the other instance's
    /// again if it died too.
    fn reopen(&self) {
        let Some(file) = &self.file else { return };
        let reopened = connect(&file.path).and_then(|db| {
            if file.bystander.borrow().is_none() {
                *file.bystander.borrow_mut() = Some(connect(&file.path)?);
            }
            Ok(db)
        });
        match reopened {
            Ok(db) => *self.inner.borrow_mut() = Some(Rc::new(db)),
            Err(error) => {
                *self.reopen_failed.borrow_mut() =
                    Some(format!("the connection could not be reopened: {error}"));
            }
        }
    }

    /// Runs a pragma on the connection directly (not a statement of the operation).
    async fn pragma(&self, sql: &str) -> Result<Vec<Row>, StorageError> {
        let db = self.connection()?;
        db.query(sql, &[]).await
    }

    fn connection(&self) -> Result<Rc<NativeDb>, StorageError> {
        if let Some(reason) = self.reopen_failed.borrow().as_ref() {
            return Err(StorageError::from_sqlite_message(reason.clone()));
        }
        self.inner
            .borrow()
            .clone()
            .ok_or_else(|| StorageError::from_sqlite_message(KILLED))
    }

    /// Closes the connection with its transaction uncommitted (rolled back by SQLite's close),
    /// and with `everyone` the other connection on the file too, both dying
    /// ([`vfs::dying`]: no checkpoint, the WAL left in place).
    async fn kill(&self, everyone: bool) {
        let doomed = self.inner.borrow_mut().take();
        if let Some(doomed) = &doomed
            && self.sabotage == Sabotage::CommitKilledWork
            && self.in_transaction.get()
        {
            let _ = doomed.execute("COMMIT", &[]).await;
        }
        let other = match (&self.file, everyone) {
            (Some(file), true) => file.bystander.borrow_mut().take(),
            _ => None,
        };
        vfs::dying(|| {
            // The only reference to the ledger's connection: no statement is in flight.
            // Dropping it closes it.
            drop(doomed);
            drop(other);
        });
        self.in_transaction.set(false);
        self.killed.set(true);
    }

    /// Lowers the page limit to the database's size, remembering the limit to raise it back to.
    async fn lower_page_limit(&self) {
        let before = match self.pragma("PRAGMA max_page_count").await.as_deref() {
            Ok([row]) => match row.first() {
                Some(SqlValue::Integer(limit)) => *limit,
                _ => return,
            },
            _ => return,
        };
        // SQLite keeps the larger of this and the database's current size (its own pages and
        // those of the open transaction).
        if self.pragma("PRAGMA max_page_count = 1").await.is_ok() {
            self.page_limit.set(Some(before));
        }
    }

    /// What happens to this statement: it runs, fails before running, or runs then fails.
    async fn action(&self, sql: &str) -> Action {
        if self.killed.get() {
            return Action::Fail(StorageError::from_sqlite_message(KILLED));
        }
        let Some(fault) = self.armed.get() else {
            return Action::Run;
        };
        // A ROLLBACK is not a place a fault is put: SQLite answers neither BUSY nor FULL to it,
        // and an I/O error there is a connection lost mid-transaction (a kill, before it).
        if is_rollback(sql) {
            return Action::Run;
        }
        let index = self.statements.get();
        self.statements.set(index + 1);
        let statement = statement_kind(sql);
        let eligible = match fault.kind {
            // Inside a transaction, or its BEGIN itself: SQLite never reports a BEGIN that ran
            // as failed, but a lost answer could, and the ledger must then roll it back.
            FaultKind::IoErrAfter => {
                (self.in_transaction.get()
                    && !matches!(statement, "BEGIN" | "BEGIN IMMEDIATE" | "COMMIT"))
                    || matches!(statement, "BEGIN" | "BEGIN IMMEDIATE")
            }
            _ if self.sabotage == Sabotage::LoseAcknowledgements => {
                statement == "write" && !self.in_transaction.get()
            }
            _ => true,
        };
        if index >= fault.at
            && eligible
            && self.fired.get().is_none()
            && self.pending.get().is_none()
        {
            match fault.kind {
                FaultKind::Kill | FaultKind::Crash => {
                    self.fired.set(Some((fault, statement)));
                    self.kill(fault.kind == FaultKind::Crash).await;
                    return Action::Fail(StorageError::from_sqlite_message(KILLED));
                }
                FaultKind::DiskFull => {
                    self.lower_page_limit().await;
                    self.pending.set(Some(fault));
                    return Action::Run;
                }
                FaultKind::Io(io) => {
                    vfs::arm(io, fault.count);
                    self.pending.set(Some(fault));
                    return Action::Run;
                }
                FaultKind::TornWrite => {
                    vfs::arm(IoFault::Write, fault.count);
                    self.pending.set(Some(fault));
                    return Action::Run;
                }
                _ => {
                    self.failing.set(fault.count);
                    self.fired.set(Some((fault, statement)));
                }
            }
        }
        let failing = self.failing.get();
        if failing == 0 {
            return Action::Run;
        }
        self.failing.set(failing - 1);
        let error = StorageError::from_sqlite_message(fault.kind.message());
        if fault.kind == FaultKind::IoErrAfter || self.sabotage == Sabotage::LoseAcknowledgements {
            Action::RunThenFail(error)
        } else {
            Action::Fail(error)
        }
    }

    /// Runs one statement of the operation through the fault layer.
    async fn statement(
        &self,
        sql: &str,
        params: &[SqlValue],
        rows: bool,
    ) -> Result<Vec<Row>, StorageError> {
        let action = self.action(sql).await;
        let run = async || {
            let db = self.connection()?;
            if rows {
                db.query(sql, params).await
            } else {
                db.execute(sql, params).await.map(|()| Vec::new())
            }
        };
        let mut result = match action {
            Action::Run => run().await,
            Action::Fail(error) => Err(error),
            Action::RunThenFail(error) => run().await.and(Err(error)),
        };
        match self.pending.get() {
            Some(
                fault @ Fault {
                    kind: FaultKind::DiskFull,
                    ..
                },
            ) if result
                .as_ref()
                .is_err_and(|error| error.message.contains(FaultKind::DiskFull.message())) =>
            {
                // SQLite itself answered SQLITE_FULL: the real fault fired here.
                self.pending.set(None);
                self.fired.set(Some((fault, statement_kind(sql))));
            }
            Some(
                fault @ Fault {
                    kind: FaultKind::Io(_) | FaultKind::TornWrite,
                    ..
                },
            ) => {
                if let Some(file) = vfs::take_hit() {
                    // The I/O call failed while SQLite ran this statement (which may still
                    // have succeeded: a checkpoint's failure is not the COMMIT's).
                    self.pending.set(None);
                    self.fired.set(Some((fault, statement_kind(sql))));
                    self.fired_file.set(Some(file));
                    if fault.kind == FaultKind::TornWrite && result.is_err() {
                        // The process died in that write: SQLite's handling of the error since
                        // wrote nothing to the files (a WAL transaction's rollback only drops
                        // pages and index entries), so they are as the death left them.
                        self.kill(true).await;
                        result = Err(StorageError::from_sqlite_message(KILLED));
                    }
                }
            }
            _ => {}
        }
        if result.is_ok() || is_rollback(sql) {
            match statement_kind(sql) {
                "BEGIN" | "BEGIN IMMEDIATE" if result.is_ok() => self.in_transaction.set(true),
                "COMMIT" => self.in_transaction.set(false),
                _ if is_rollback(sql) => self.in_transaction.set(false),
                _ => {}
            }
        }
        result
    }
}

enum Action {
    Run,
    Fail(StorageError),
    RunThenFail(StorageError),
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
        "ROLLBACK" => "ROLLBACK",
        "SELECT" | "WITH" => "read",
        _ => "write",
    }
}

impl Storage for FaultyDb {
    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<(), StorageError> {
        self.statement(sql, params, false).await.map(|_| ())
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StorageError> {
        self.statement(sql, params, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use ledger::storage::StorageErrorKind;

    #[test]
    fn the_injected_errors_are_classified_as_sqlites_own() {
        let kind = |fault: FaultKind| StorageError::from_sqlite_message(fault.message()).kind;
        assert_eq!(kind(FaultKind::Busy), StorageErrorKind::Busy);
        assert_eq!(kind(FaultKind::IoErr), StorageErrorKind::Disk);
        assert_eq!(kind(FaultKind::Full), StorageErrorKind::Disk);
        assert_eq!(kind(FaultKind::IoErrAfter), StorageErrorKind::Disk);
        assert_eq!(kind(FaultKind::Kill), StorageErrorKind::Disk);
    }

    fn count(db: &FaultyDb) -> i64 {
        match block_on(db.query("SELECT count(*) FROM t", &[])).as_deref() {
            Ok([row]) => match row[0] {
                SqlValue::Integer(n) => n,
                _ => panic!("{row:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    fn run(db: &FaultyDb, sql: &str) -> Result<(), StorageError> {
        block_on(db.execute(sql, &[]))
    }

    #[test]
    fn a_killed_connections_transaction_is_not_committed_and_a_new_one_serves() {
        let db = FaultyDb::on_file().expect("a file");
        run(&db, "CREATE TABLE t (x INTEGER)").unwrap();
        run(&db, "INSERT INTO t VALUES (1)").unwrap();
        db.arm(Fault {
            kind: FaultKind::Kill,
            at: 2,
            count: 1,
        });
        run(&db, "BEGIN IMMEDIATE").unwrap();
        run(&db, "INSERT INTO t VALUES (2)").unwrap();
        assert!(run(&db, "COMMIT").is_err(), "killed before COMMIT");
        assert!(run(&db, "ROLLBACK").is_err(), "the process is gone");
        let fired = db.disarm().expect("fired");
        assert_eq!(fired.statement, "COMMIT");
        assert_eq!(count(&db), 1, "the committed row kept, the killed one gone");
        run(&db, "INSERT INTO t VALUES (3)").unwrap();
        assert_eq!(count(&db), 2);
    }

    #[test]
    fn a_lowered_page_limit_is_sqlites_own_full_and_space_returns() {
        let db = FaultyDb::on_file().expect("a file");
        run(&db, "CREATE TABLE t (x BLOB)").unwrap();
        db.arm(Fault {
            kind: FaultKind::DiskFull,
            at: 1,
            count: 1,
        });
        run(&db, "BEGIN IMMEDIATE").unwrap();
        let full = run(&db, "INSERT INTO t VALUES (zeroblob(100000))").expect_err("full");
        assert_eq!(full.kind, StorageErrorKind::Disk, "{full}");
        let _ = run(&db, "ROLLBACK");
        let fired = db.disarm().expect("fired");
        assert_eq!(fired.statement, "write");
        assert_eq!(count(&db), 0);
        run(&db, "INSERT INTO t VALUES (zeroblob(100000))").expect("space returned");
        assert_eq!(count(&db), 1);
    }

    #[test]
    fn an_error_after_a_statement_leaves_its_effect_in_the_transaction() {
        let db = FaultyDb::on_file().expect("a file");
        run(&db, "CREATE TABLE t (x INTEGER)").unwrap();
        db.arm(Fault {
            kind: FaultKind::IoErrAfter,
            at: 1,
            count: 1,
        });
        run(&db, "BEGIN IMMEDIATE").unwrap();
        assert!(run(&db, "INSERT INTO t VALUES (1)").is_err());
        assert_eq!(db.disarm().expect("fired").statement, "write");
        assert_eq!(count(&db), 1, "the insert ran, inside the open transaction");
        run(&db, "ROLLBACK").unwrap();
        assert_eq!(count(&db), 0);
    }

    #[test]
    fn an_error_after_a_begin_leaves_the_transaction_open() {
        let db = FaultyDb::on_file().expect("a file");
        run(&db, "CREATE TABLE t (x INTEGER)").unwrap();
        db.arm(Fault {
            kind: FaultKind::IoErrAfter,
            at: 0,
            count: 1,
        });
        assert!(run(&db, "BEGIN IMMEDIATE").is_err());
        assert_eq!(db.disarm().expect("fired").statement, "BEGIN IMMEDIATE");
        // It ran: a ROLLBACK finds the transaction (it fails when none is active).
        run(&db, "ROLLBACK").expect("the BEGIN that reported an error had started one");
    }

    #[test]
    fn each_io_fault_fails_a_real_call_under_sqlite_and_an_error_means_not_committed() {
        let db = FaultyDb::on_file().expect("a file");
        run(&db, "CREATE TABLE t (x BLOB)").unwrap();
        let mut committed = 0;
        for io in [
            IoFault::Read,
            IoFault::Write,
            IoFault::WriteFull,
            IoFault::Sync,
            IoFault::Truncate,
        ] {
            db.arm(Fault {
                kind: FaultKind::Io(io),
                at: 0,
                count: 1,
            });
            // Rows of 3 kB: a checkpoint (reads, syncs, a truncation) every few inserts.
            for _ in 0..1_000 {
                if run(&db, "INSERT INTO t VALUES (zeroblob(3000))").is_ok() {
                    committed += 1;
                }
                if db.fired.get().is_some() {
                    break;
                }
            }
            let fired = db.disarm().unwrap_or_else(|why| panic!("{io:?}: {why}"));
            assert!(fired.file.is_some(), "{io:?}");
            assert_eq!(
                count(&db),
                committed,
                "{io:?}: every insert answered Ok, no other"
            );
        }
    }

    #[test]
    fn after_every_connection_died_the_next_recovers_what_was_committed_from_the_wal() {
        let db = FaultyDb::on_file().expect("a file");
        run(&db, "CREATE TABLE t (x INTEGER)").unwrap();
        for x in 0..5 {
            run(&db, &format!("INSERT INTO t VALUES ({x})")).unwrap();
        }
        db.arm(Fault {
            kind: FaultKind::Crash,
            at: 2,
            count: 1,
        });
        run(&db, "BEGIN IMMEDIATE").unwrap();
        run(&db, "INSERT INTO t VALUES (99)").unwrap();
        assert!(run(&db, "COMMIT").is_err(), "killed before COMMIT");
        let path = &db.file.as_ref().expect("a file").path;
        let wal = std::fs::metadata(format!("{}-wal", path.display())).expect("the WAL left");
        assert!(wal.len() > 0, "frames left for the recovery");
        db.disarm().expect("fired");
        assert_eq!(
            count(&db),
            5,
            "the committed rows recovered, the killed one not"
        );
        run(&db, "INSERT INTO t VALUES (5)").unwrap();
        assert_eq!(count(&db), 6);
    }

    #[test]
    fn a_commit_cut_mid_write_leaves_frames_the_recovery_ignores() {
        let db = FaultyDb::on_file().expect("a file");
        run(&db, "CREATE TABLE t (x BLOB)").unwrap();
        run(&db, "INSERT INTO t VALUES (zeroblob(100))").unwrap();
        let path = &db.file.as_ref().expect("a file").path;
        let wal = || std::fs::metadata(format!("{}-wal", path.display())).map(|m| m.len());
        let before = wal().expect("a WAL");
        db.arm(Fault {
            kind: FaultKind::TornWrite,
            at: 0,
            count: 3,
        });
        run(&db, "BEGIN IMMEDIATE").unwrap();
        // Ten pages' worth: the COMMIT appends several frames, the third write is cut.
        run(&db, "INSERT INTO t VALUES (zeroblob(40000))").unwrap();
        assert!(run(&db, "COMMIT").is_err(), "the COMMIT was cut");
        assert!(run(&db, "ROLLBACK").is_err(), "the process is gone");
        assert!(
            wal().expect("the WAL left") > before,
            "frames of the cut COMMIT written"
        );
        let fired = db.disarm().expect("fired");
        assert_eq!((fired.statement, fired.file), ("COMMIT", Some("WAL")));
        assert_eq!(count(&db), 1, "the recovery kept the committed row only");
        run(&db, "INSERT INTO t VALUES (zeroblob(100))").unwrap();
        assert_eq!(count(&db), 2);
    }
}
