//! Helpers of the reliability suite (`tests/tests/reliability_*.rs`): a fingerprint of everything
//! the app stores (to prove that refused requests write nothing), the per-scenario summary the
//! test script prints at the end, raw-socket clients for slow and hostile HTTP, and the soak flag.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ledger::native::NativeDb;
use ledger::{SqlValue, Storage as _};
use sha2::{Digest as _, Sha256};

/// Whether the long runs were asked for (`RELIABILITY_SOAK=1`).
pub fn soak() -> bool {
    std::env::var("RELIABILITY_SOAK").is_ok_and(|v| v == "1" || v == "true")
}

/// Every table of both stores: row count and a hash of the rows, by `file/table`.
///
/// Two equal fingerprints mean the app wrote nothing in between (SQLite and key-value store).
pub fn fingerprint(state_dir: &Path) -> Result<BTreeMap<String, (usize, String)>> {
    let mut tables = BTreeMap::new();
    for file in ["sqlite_db.db", "sqlite_key_value.db"] {
        let path = state_dir.join(file);
        if !path.exists() {
            continue;
        }
        let db = NativeDb::open(&path).with_context(|| format!("open {}", path.display()))?;
        let names = block_on(db.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            &[],
        ))?;
        for row in names {
            let Some(SqlValue::Text(name)) = row.first() else {
                continue;
            };
            let rows = block_on(db.query(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"), &[]))
                .or_else(|_| block_on(db.query(&format!("SELECT * FROM \"{name}\""), &[])))?;
            let mut hash = Sha256::new();
            for row in &rows {
                hash.update(format!("{row:?}\n").as_bytes());
            }
            let digest: String = hash
                .finalize()
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect();
            tables.insert(format!("{file}/{name}"), (rows.len(), digest));
        }
    }
    Ok(tables)
}

/// The tables whose content differs between two fingerprints.
pub fn changed_tables(
    before: &BTreeMap<String, (usize, String)>,
    after: &BTreeMap<String, (usize, String)>,
) -> Vec<String> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .map(|name| {
            format!(
                "{name}: {:?} -> {:?}",
                before.get(name).map(|t| t.0),
                after.get(name).map(|t| t.0)
            )
        })
        .collect()
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    futures::executor::block_on(future)
}

/// Where the scenarios' summary lines go: `$RELIABILITY_SUMMARY`, else
/// `$CARGO_TARGET_DIR/reliability-summary.tsv` (or the workspace's `target/`).
pub fn summary_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RELIABILITY_SUMMARY") {
        return PathBuf::from(path);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
        .join("reliability-summary.tsv")
}

/// One reliability scenario's counters; written as one summary line when dropped. A scenario
/// dropped without [`Scenario::passed`] (an error or a panic) counts one failure.
pub struct Scenario {
    name: String,
    started: Instant,
    requests: AtomicU64,
    faults: AtomicU64,
    invariant_checks: AtomicU64,
    failures: AtomicU64,
    passed: bool,
}

impl Scenario {
    /// Starts counting for scenario `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            started: Instant::now(),
            requests: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            invariant_checks: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            passed: false,
        }
    }

    /// Counts `n` requests sent.
    pub fn requests(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` faults injected (kills, hostile inputs, Stripe errors, ...).
    pub fn faults(&self, n: u64) {
        self.faults.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one run of every ledger invariant (each run checks [`ledger::audit::invariant_count`]).
    pub fn invariants_checked(&self) {
        self.invariant_checks
            .fetch_add(ledger::audit::invariant_count() as u64, Ordering::Relaxed);
    }

    /// Marks the scenario as passed.
    pub fn passed(mut self) {
        self.passed = true;
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let failures = self.failures.load(Ordering::Relaxed) + u64::from(!self.passed);
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\t{:.1}\n",
            self.name,
            self.requests.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
            self.invariant_checks.load(Ordering::Relaxed),
            failures,
            self.started.elapsed().as_secs_f64()
        );
        let path = summary_path();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// What a raw connection saw after a hostile client stopped sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cutoff {
    /// The server answered (status) and/or closed the connection within the wait.
    Closed(Option<u16>),
    /// Still open, nothing received, when the wait ended.
    StillOpen,
}

/// Opens a raw connection to `base_url` (`http://IP:PORT`).
pub fn connect(base_url: &str) -> Result<TcpStream> {
    let address = base_url
        .strip_prefix("http://")
        .context("base url is not http://")?;
    let stream = TcpStream::connect(address).with_context(|| format!("connect {address}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Waits up to `wait` for the server to answer or close `stream`; reads whatever comes.
pub fn wait_for_cutoff(stream: &mut TcpStream, wait: Duration) -> Result<Cutoff> {
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(if received.is_empty() {
                Cutoff::StillOpen
            } else {
                Cutoff::Closed(status_of(&received))
            });
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(Cutoff::Closed(status_of(&received))),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(Cutoff::Closed(status_of(&received))),
        }
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends `request` over a raw connection and reads the answer until the server closes it or
/// `wait` elapses; answers the status line's code, if any.
pub fn raw_exchange(base_url: &str, request: &[u8], wait: Duration) -> Result<Option<u16>> {
    let mut stream = connect(base_url)?;
    // The server may close before reading all of it (that is one of the answers tested).
    let _ = stream.write_all(request);
    let _ = stream.flush();
    match wait_for_cutoff(&mut stream, wait)? {
        Cutoff::Closed(status) => Ok(status),
        Cutoff::StillOpen => Ok(None),
    }
}
