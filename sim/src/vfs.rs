//! I/O errors under SQLite: a VFS (`ledger-sim-faults`) that wraps the default one (`unix`)
//! and makes one chosen call of `xRead`, `xWrite`, `xSync` or `xTruncate` fail with the code a
//! failing disk gives (`SQLITE_IOERR_READ`, `_WRITE`, `_FSYNC`, `_TRUNCATE`, or `SQLITE_FULL` for
//! a write), so that SQLite handles a real I/O failure: a page it cannot read, a WAL frame it
//! cannot append at `COMMIT`, a checkpoint that fails half way.
//!
//! The simulator's database files are opened through it (`file:...?vfs=ledger-sim-faults`, a
//! URI, which rusqlite's default flags allow). Unarmed it forwards every call unchanged, except
//! that `xSync` does not sync: what the simulator kills is a process, not the machine, so the
//! operating system keeps what SQLite wrote, and syncing it to the disk would only cost time.
//! SQLite still calls `xSync` where its settings say (the ledger's `synchronous = NORMAL` in WAL:
//! at every checkpoint), so a sync can still be failed.
//!
//! Which call fails is armed per thread ([`arm`]): the simulator's operations run on the
//! thread that armed it, and the tests that run beside it in the same process (other threads,
//! their own connections through this VFS) are not touched.
//!
//! This is the crate's only unsafe code: the C interface of a VFS. Every function below that
//! SQLite calls receives the `sqlite3_file` that [`open`] filled in, whose first field is the
//! `sqlite3_file` header and whose `real` pointer points at the wrapped VFS's own file object,
//! placed by [`open`] inside the same allocation (SQLite allocates `szOsFile` bytes, which
//! [`register`] sets to room for both). The wrapped methods are called with that object, as the
//! wrapped VFS itself would be.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use rusqlite::ffi;

/// The VFS's name, for a URI's `vfs=` parameter.
pub const NAME: &str = "ledger-sim-faults";
const NAME_C: &CStr = c"ledger-sim-faults";

/// One I/O call failed under SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IoFault {
    /// `xRead` answers `SQLITE_IOERR_READ`.
    Read,
    /// `xWrite` answers `SQLITE_IOERR_WRITE`.
    Write,
    /// `xWrite` answers `SQLITE_FULL` (no space left on the device).
    WriteFull,
    /// `xSync` answers `SQLITE_IOERR_FSYNC`.
    Sync,
    /// `xTruncate` answers `SQLITE_IOERR_TRUNCATE`.
    Truncate,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Read,
    Write,
    Sync,
    Truncate,
}

impl IoFault {
    fn method(self) -> Method {
        match self {
            Self::Read => Method::Read,
            Self::Write | Self::WriteFull => Method::Write,
            Self::Sync => Method::Sync,
            Self::Truncate => Method::Truncate,
        }
    }

    fn code(self) -> c_int {
        match self {
            Self::Read => ffi::SQLITE_IOERR_READ,
            Self::Write => ffi::SQLITE_IOERR_WRITE,
            Self::WriteFull => ffi::SQLITE_FULL,
            Self::Sync => ffi::SQLITE_IOERR_FSYNC,
            Self::Truncate => ffi::SQLITE_IOERR_TRUNCATE,
        }
    }

    /// A short name for the figures.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "xRead SQLITE_IOERR_READ",
            Self::Write => "xWrite SQLITE_IOERR_WRITE",
            Self::WriteFull => "xWrite SQLITE_FULL",
            Self::Sync => "xSync SQLITE_IOERR_FSYNC",
            Self::Truncate => "xTruncate SQLITE_IOERR_TRUNCATE",
        }
    }
}

thread_local! {
    /// The armed fault, and how many calls of its method it lets through before failing one.
    static ARMED: Cell<Option<(IoFault, u32)>> = const { Cell::new(None) };
    /// The file the failed call was on, once one failed.
    static HIT: Cell<Option<&'static str>> = const { Cell::new(None) };
    /// Connections closing now are dying (see [`dying`]).
    static DYING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `close` (which drops connections) as if their process died: a connection's close
/// cannot take the database's exclusive lock, so SQLite takes it for not the file's last one
/// and neither checkpoints nor removes the WAL and its index, which a killed process would not
/// have done either. (A process that dies also leaves its locks to the operating system, which
/// releases them; SQLite's close releases them too, and rolls back, which for a WAL database is
/// dropping the pages it had not committed.)
pub fn dying<T>(close: impl FnOnce() -> T) -> T {
    DYING.set(true);
    let closed = close();
    DYING.set(false);
    closed
}

/// Arms `fault` on this thread: the `nth` call (1: the next) of its method fails, on any file
/// of this VFS, and only that one.
pub fn arm(fault: IoFault, nth: u32) {
    ARMED.set(Some((fault, nth.max(1))));
    HIT.set(None);
}

/// Disarms this thread's fault, if it had not fired.
pub fn disarm() {
    ARMED.set(None);
}

/// Which file (`database`, `WAL`, ...) the armed fault failed a call on, once, since it was
/// armed or this was last asked.
pub fn take_hit() -> Option<&'static str> {
    HIT.take()
}

/// The error code the armed fault gives this call, if it is the one to fail.
fn fails(method: Method, file: &'static str) -> Option<c_int> {
    let (fault, left) = ARMED.get()?;
    if fault.method() != method {
        return None;
    }
    if left > 1 {
        ARMED.set(Some((fault, left - 1)));
        return None;
    }
    ARMED.set(None);
    HIT.set(Some(file));
    Some(fault.code())
}

/// What SQLite allocates for one of our files: this header, then the wrapped VFS's file at
/// [`REAL_OFFSET`].
#[repr(C)]
struct ShimFile {
    /// SQLite's view of the file: its methods are ours ([`METHODS`]), or null if the open
    /// failed.
    base: ffi::sqlite3_file,
    /// The wrapped VFS's file object, inside the same allocation.
    real: *mut ffi::sqlite3_file,
    /// What the file is, for the figures.
    kind: &'static str,
}

/// Where the wrapped file starts in the allocation: after the header, 8-aligned as SQLite
/// aligns its own objects.
const REAL_OFFSET: usize = std::mem::size_of::<ShimFile>().next_multiple_of(8);

/// The wrapped VFS, set once by [`register`] before ours is registered.
static REAL: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());
static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the VFS (once per process; not as the default), so that a URI can name it.
pub fn register() -> Result<(), String> {
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` (which initializes SQLite) returns the default VFS or
            // null; a VFS object lives as long as the process. Ours is a copy of it (every
            // method but `xOpen` is the wrapped one's, called with our object, which the unix
            // methods other than `xOpen` do not read; `pAppData` is copied too), leaked so that
            // it outlives every connection, and registered once.
            unsafe {
                let real = ffi::sqlite3_vfs_find(ptr::null());
                if real.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let mut shim = *real;
                let room = c_int::try_from(REAL_OFFSET).expect("a small header");
                shim.szOsFile = room + (*real).szOsFile;
                shim.pNext = ptr::null_mut();
                shim.zName = NAME_C.as_ptr();
                shim.xOpen = Some(open);
                REAL.store(real, Ordering::Release);
                match ffi::sqlite3_vfs_register(Box::into_raw(Box::new(shim)), 0) {
                    ffi::SQLITE_OK => Ok(()),
                    code => Err(format!("registering the VFS failed: code {code}")),
                }
            }
        })
        .clone()
}

fn kind_of(flags: c_int) -> &'static str {
    if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        "database"
    } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
        "WAL"
    } else if flags & ffi::SQLITE_OPEN_MAIN_JOURNAL != 0 {
        "journal"
    } else {
        "temporary file"
    }
}

/// `xOpen`: opens the wrapped file inside our allocation and puts our methods in front of it.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = REAL.load(Ordering::Acquire);
    // SAFETY: SQLite hands us `szOsFile` writable bytes at `file` (8-aligned), which
    // `register` made room for a `ShimFile` then the wrapped file; `real_vfs` is the wrapped
    // VFS, set before ours was registered, and its `xOpen` receives the same arguments it would
    // have without us, with its own object.
    unsafe {
        let shim = file.cast::<ShimFile>();
        let real = file
            .cast::<u8>()
            .add(REAL_OFFSET)
            .cast::<ffi::sqlite3_file>();
        ptr::addr_of_mut!((*shim).base.pMethods).write(ptr::null());
        ptr::addr_of_mut!((*shim).real).write(real);
        ptr::addr_of_mut!((*shim).kind).write(kind_of(flags));
        ptr::addr_of_mut!((*real).pMethods).write(ptr::null());
        let Some(real_open) = (*real_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let code = real_open(real_vfs, name, real, flags, out_flags);
        let methods = (*real).pMethods;
        if code != ffi::SQLITE_OK || methods.is_null() || (*methods).iVersion < 3 {
            // Ours stays null, so SQLite will not call our `xClose`: close the wrapped file
            // here if it was opened. (The unix VFS's files are version 3, with WAL's memory
            // map, which our methods forward; anything older is refused rather than dressed
            // up as a version it is not.)
            if !methods.is_null()
                && let Some(close) = (*methods).xClose
            {
                close(real);
            }
            return if code == ffi::SQLITE_OK {
                ffi::SQLITE_CANTOPEN
            } else {
                code
            };
        }
        ptr::addr_of_mut!((*shim).base.pMethods).write(&METHODS);
        code
    }
}

/// Our methods: each forwards to the wrapped file's, `xRead`, `xWrite`, `xSync` and
/// `xTruncate` after asking whether the armed fault fails this call.
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The wrapped file, its methods, and what the file is.
///
/// # Safety
/// `file` must be a file [`open`] opened successfully (SQLite calls our methods only on
/// those) and not yet closed.
unsafe fn unwrap(
    file: *mut ffi::sqlite3_file,
) -> (
    *mut ffi::sqlite3_file,
    &'static ffi::sqlite3_io_methods,
    &'static str,
) {
    // SAFETY: per the contract, `file` is our `ShimFile`, whose `real` was opened with methods
    // of version 3 or more, which live as long as the process (the unix VFS's are statics).
    unsafe {
        let shim = &*file.cast::<ShimFile>();
        (shim.real, &*(*shim.real).pMethods, shim.kind)
    }
}

/// Calls the wrapped method `$name` of `$file` with the other arguments, or answers
/// `SQLITE_IOERR` if the wrapped file lacks it (which version 3 files do not).
macro_rules! forward {
    ($file:expr, $name:ident $(, $arg:expr)*) => {{
        // SAFETY: SQLite calls our methods only on files `open` opened, until `xClose`.
        let (real, methods, _) = unsafe { unwrap($file) };
        match methods.$name {
            // SAFETY: the wrapped method, on its own file, with SQLite's arguments.
            Some(method) => unsafe { method(real $(, $arg)*) },
            None => ffi::SQLITE_IOERR,
        }
    }};
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xClose)
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buffer: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as in `forward!`.
    let (_, _, kind) = unsafe { unwrap(file) };
    if let Some(code) = fails(Method::Read, kind) {
        return code;
    }
    forward!(file, xRead, buffer, amount, offset)
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buffer: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as in `forward!`.
    let (_, _, kind) = unsafe { unwrap(file) };
    if let Some(code) = fails(Method::Write, kind) {
        return code;
    }
    forward!(file, xWrite, buffer, amount, offset)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: as in `forward!`.
    let (_, _, kind) = unsafe { unwrap(file) };
    if let Some(code) = fails(Method::Truncate, kind) {
        return code;
    }
    forward!(file, xTruncate, size)
}

/// Does not sync (see the module's documentation), but can fail.
unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    // SAFETY: as in `forward!`.
    let (_, _, kind) = unsafe { unwrap(file) };
    fails(Method::Sync, kind).unwrap_or(ffi::SQLITE_OK)
}

unsafe extern "C" fn file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    forward!(file, xFileSize, size)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as in `forward!`.
    let (_, _, kind) = unsafe { unwrap(file) };
    if DYING.get() && kind == "database" && level == ffi::SQLITE_LOCK_EXCLUSIVE {
        return ffi::SQLITE_BUSY;
    }
    forward!(file, xLock, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xUnlock, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    forward!(file, xCheckReservedLock, out)
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    forward!(file, xFileControl, op, arg)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `forward!`.
    let (real, methods, _) = unsafe { unwrap(file) };
    // SAFETY: the wrapped method on its own file.
    methods
        .xSectorSize
        .map_or(4096, |method| unsafe { method(real) })
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `forward!`.
    let (real, methods, _) = unsafe { unwrap(file) };
    // SAFETY: the wrapped method on its own file.
    methods
        .xDeviceCharacteristics
        .map_or(0, |method| unsafe { method(real) })
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(file, xShmMap, region, size, extend, out)
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    count: c_int,
    flags: c_int,
) -> c_int {
    forward!(file, xShmLock, offset, count, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: as in `forward!`.
    let (real, methods, _) = unsafe { unwrap(file) };
    if let Some(method) = methods.xShmBarrier {
        // SAFETY: the wrapped method on its own file.
        unsafe { method(real) }
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    forward!(file, xShmUnmap, delete)
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(file, xFetch, offset, amount, out)
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    page: *mut c_void,
) -> c_int {
    forward!(file, xUnfetch, offset, page)
}
