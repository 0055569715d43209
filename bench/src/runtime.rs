//! Where the product runs for a measurement: the local host in either of its SQLite modes, or
//! real Spin (`scripts/bench.sh --runtime spin`, with `SPIN_BIN` naming a `spin` binary).
//!
//! Production runs on Spin; the local host is the test bed. Its `--sqlite-mode spin` runs SQLite
//! as Spin does, so that a change can be judged here before it is confirmed on Spin. Every part
//! that measures the product runs once per runtime, in the same run, so their figures compare.

use std::path::{Path, PathBuf};

use anyhow::Result;
use local_run::TestHost;

/// A runtime the product is measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// The local host, its default SQLite mode.
    Local,
    /// The local host with `--sqlite-mode spin`.
    LocalSpinSqlite,
    /// Real Spin.
    Spin(PathBuf),
}

impl Runtime {
    /// Its name in the report.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Local => "local host",
            Self::LocalSpinSqlite => "local host, spin sqlite",
            Self::Spin(_) => "real Spin",
        }
    }

    /// A short key for ratios.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::LocalSpinSqlite => "local-spin-sqlite",
            Self::Spin(_) => "spin",
        }
    }
}

/// The runtimes of this run: both local modes, and real Spin when asked for and available.
/// `$BENCH_RUNTIMES` (keys, comma-separated: `local,local-spin-sqlite,spin`) keeps only some, for
/// a focused experiment.
pub fn runtimes(spin_requested: bool) -> (Vec<Runtime>, Option<String>) {
    let (mut all, skipped) = available(spin_requested);
    if let Ok(only) = std::env::var("BENCH_RUNTIMES") {
        all.retain(|r| only.split(',').any(|key| key.trim() == r.key()));
    }
    (all, skipped)
}

fn available(spin_requested: bool) -> (Vec<Runtime>, Option<String>) {
    let mut all = vec![Runtime::Local, Runtime::LocalSpinSqlite];
    if !spin_requested {
        return (all, None);
    }
    match std::env::var_os("SPIN_BIN").map(PathBuf::from) {
        Some(bin) if bin.is_file() => {
            all.push(Runtime::Spin(bin));
            (all, None)
        }
        Some(bin) => (
            all,
            Some(format!("real Spin skipped: SPIN_BIN={} is not a file", bin.display())),
        ),
        None => (
            all,
            Some("real Spin skipped: set SPIN_BIN to a spin binary (Spin 4.1, see docs/performance.md)".into()),
        ),
    }
}

/// A running app; stopped (and its state removed, when it owns it) on drop.
pub struct Running {
    /// Its `IP:PORT`.
    pub addr: String,
    /// Its state directory.
    pub state_dir: PathBuf,
    // Fields drop in order: the process (a local host or `spin up`) stops before its state
    // directory goes.
    _process: Box<dyn std::any::Any>,
    _state: Option<tempfile::TempDir>,
}

/// Starts `manifest` on `runtime` over `state_dir`.
pub fn start(runtime: &Runtime, manifest: &Path, state_dir: &Path) -> Result<Running> {
    start_with_env(runtime, manifest, state_dir, &[])
}

/// [`start`] with more environment variables (e.g. `SPIN_VARIABLE_*`).
pub fn start_with_env(
    runtime: &Runtime,
    manifest: &Path,
    state_dir: &Path,
    env: &[(String, String)],
) -> Result<Running> {
    let local = |args: &[&str]| -> Result<(String, Box<dyn std::any::Any>)> {
        let host: TestHost = crate::host::start_with_env(manifest, state_dir, args, env)?;
        Ok((crate::host::addr(&host), Box::new(host)))
    };
    let (addr, process) = match runtime {
        Runtime::Local => local(&[])?,
        Runtime::LocalSpinSqlite => local(&["--sqlite-mode", "spin"])?,
        Runtime::Spin(bin) => {
            let mut options = crate::host::secrets(state_dir);
            options.env.extend(env.iter().cloned());
            // `$BENCH_SPIN_ARGS`: more `spin up` arguments for an experiment (e.g.
            // `--max-instance-reuse-count 100000`), as `$BENCH_HOST_ARGS` is for our host.
            options.args.extend(
                std::env::var("BENCH_SPIN_ARGS")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned),
            );
            let spin = TestHost::start_spin(bin, manifest, options)?;
            (
                crate::host::addr(&spin),
                Box::new(spin) as Box<dyn std::any::Any>,
            )
        }
    };
    Ok(Running {
        addr,
        state_dir: state_dir.to_path_buf(),
        _process: process,
        _state: None,
    })
}

/// Copies the data set `set` into a temporary state directory and starts the app on it.
pub fn start_on_copy(runtime: &Runtime, set: &Path) -> Result<Running> {
    start_on_copy_with_env(runtime, set, &[])
}

/// [`start_on_copy`] with more environment variables.
pub fn start_on_copy_with_env(
    runtime: &Runtime,
    set: &Path,
    env: &[(String, String)],
) -> Result<Running> {
    let state = tempfile::tempdir()?;
    let state_dir = state.path().join("state");
    crate::data::copy_into(set, &state_dir)?;
    let mut running = start_with_env(runtime, &crate::host::app_manifest(), &state_dir, env)?;
    running.state_dir = state_dir;
    running._state = Some(state);
    Ok(running)
}
