//! Real backing stores for the runtime-config tests: a `redis-server` and a `sqld` (libSQL's
//! server) on free loopback ports, each with its own temporary data directory, which can be
//! stopped (an outage) and restarted on the same port with the same data.
//!
//! `redis-server` comes from Debian (`scripts/test.sh` installs it); `sqld` is taken from the
//! environment variable `SQLD_BIN`, and [`Sqld::start`] returns `None` without it.

use anyhow::{Context as _, Result, bail};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{START_TIMEOUT, free_port};

/// How long a store may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `text` as `runtime-config.toml` in `dir` and returns its path.
pub fn write_runtime_config(dir: &Path, text: &str) -> Result<PathBuf> {
    let path = dir.join("runtime-config.toml");
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The runtime-config table putting SQLite database `default` on the libSQL server at `url`.
pub fn libsql_database(url: &str) -> String {
    format!("[sqlite_database.default]\ntype = \"libsql\"\nurl = \"{url}\"\ntoken = \"\"\n")
}

/// The runtime-config table putting key-value store `default` on the Redis at `url`.
pub fn redis_store(url: &str) -> String {
    format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}\"\n")
}

/// A child process on a fixed port with a log file, restartable.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Server {
    fn log_file(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Spawns `cmd` (output to the log) and waits until `ready` answers true.
    fn spawn(&mut self, mut cmd: Command, ready: impl Fn(u16) -> bool) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", self.name))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT.min(START_TIMEOUT);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("{} exited with {status}: {}", self.name, self.log());
            }
            if ready(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "{} did not answer within {READY_TIMEOUT:?}: {}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a fresh server on a free port, retrying on another port if the probed one was taken.
fn start_on_free_port(
    name: &'static str,
    mut spawn: impl FnMut(&mut Server) -> Result<()>,
) -> Result<Server> {
    let mut errors = Vec::new();
    for _ in 0..3 {
        let mut server = Server {
            child: None,
            port: free_port()?,
            dir: tempfile::tempdir()?,
            name,
        };
        match spawn(&mut server) {
            Ok(()) => return Ok(server),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!("{name} did not start: {}", errors.join("; "))
}

/// A running `redis-server` (data in a temporary directory, every write synced to its AOF).
pub struct Redis {
    server: Server,
}

impl Redis {
    /// Starts a fresh `redis-server` on a free loopback port and waits until it answers PING.
    pub fn start() -> Result<Self> {
        let server = start_on_free_port("redis-server", Self::spawn)?;
        Ok(Self { server })
    }

    fn spawn(server: &mut Server) -> Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(server.port.to_string())
            .arg("--dir")
            .arg(server.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]);
        server.spawn(cmd, answers_ping)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.server.port)
    }

    /// Kills it (an outage); [`Redis::restart`] brings it back with its data.
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<()> {
        self.server.kill();
        Self::spawn(&mut self.server)
    }

    /// Deletes every key (`redis-cli FLUSHALL`): the store lost, the server still up.
    pub fn flush_all(&self) -> Result<()> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.server.port.to_string())
            .arg("FLUSHALL")
            .output()
            .context("cannot run redis-cli")?;
        anyhow::ensure!(
            output.status.success() && output.stdout.starts_with(b"OK"),
            "redis-cli FLUSHALL: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Every key (`redis-cli KEYS '*'`).
    pub fn keys(&self) -> Result<Vec<String>> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.server.port.to_string())
            .args(["--raw", "KEYS", "*"])
            .output()
            .context("cannot run redis-cli")?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// What it printed.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// Whether a Redis on `port` answers an inline PING.
fn answers_ping(port: u16) -> bool {
    let ping = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"+PONG"))
    };
    ping().unwrap_or(false)
}

/// What a `sqld` has done since it started (from its Prometheus metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct SqldCounters {
    /// Statements run.
    pub statements: u64,
    /// SQLite connections opened: one per Hrana stream.
    pub connections: u64,
}

/// A running `sqld` (`$SQLD_BIN`), answering Hrana over HTTP on `/v2/pipeline`.
pub struct Sqld {
    server: Server,
    bin: PathBuf,
    /// Its admin API's port (`/metrics`: the statements it ran).
    admin_port: u16,
}

impl Sqld {
    /// Starts a fresh `sqld` on a free loopback port; `Ok(None)` when `SQLD_BIN` is not set.
    pub fn start() -> Result<Option<Self>> {
        Self::start_seeded(None)
    }

    /// [`Sqld::start`] serving a copy of the SQLite database file `seed` (sqld takes a plain
    /// SQLite file as its database and rebuilds its replication log from it).
    pub fn start_seeded(seed: Option<&Path>) -> Result<Option<Self>> {
        let Some(bin) = std::env::var_os("SQLD_BIN").map(PathBuf::from) else {
            return Ok(None);
        };
        let admin_port = free_port()?;
        let server = start_on_free_port("sqld", |s| {
            if let Some(seed) = seed {
                let database = s.dir.path().join("data/dbs/default");
                std::fs::create_dir_all(&database)?;
                std::fs::copy(seed, database.join("data"))
                    .with_context(|| format!("copy {}", seed.display()))?;
            }
            Self::spawn(&bin, s, admin_port)
        })?;
        Ok(Some(Self {
            server,
            bin,
            admin_port,
        }))
    }

    fn spawn(bin: &Path, server: &mut Server, admin_port: u16) -> Result<()> {
        let mut cmd = Command::new(bin);
        cmd.arg("-d")
            .arg(server.dir.path().join("data"))
            .arg("--http-listen-addr")
            .arg(format!("127.0.0.1:{}", server.port))
            .arg("--admin-listen-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .current_dir(server.dir.path());
        server.spawn(cmd, |port| {
            let url = format!("http://127.0.0.1:{port}/v2/pipeline");
            let body =
                r#"{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}},{"type":"close"}]}"#;
            crate::post_json(&url, body, &[]).is_ok_and(|r| r.status == 200)
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// Kills it (an outage); [`Sqld::restart`] brings it back with its data.
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port with the same data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.server.kill();
        Self::spawn(&self.bin, &mut self.server, self.admin_port)
    }

    /// Sets sqld's write-transaction timeout (how long a writer may hold the lock while others
    /// wait before one of them steals it; 5 s by default) through its admin API, then restarts
    /// it so that the new value applies (sqld reads it when it opens the database).
    pub fn set_txn_timeout_secs(&mut self, secs: u64) -> Result<()> {
        let url = format!(
            "http://127.0.0.1:{}/v1/namespaces/default/config",
            self.admin_port
        );
        let body = format!(
            "{{\"block_reads\": false, \"block_writes\": false, \"txn_timeout_s\": {secs}}}"
        );
        let reply = crate::post_json(&url, &body, &[])?;
        anyhow::ensure!(
            reply.status == 200,
            "sqld config: {} {}",
            reply.status,
            reply.body
        );
        self.restart()
    }

    /// Its counters since it started: statements run, and SQLite connections it opened (one
    /// per Hrana stream).
    pub fn counters(&self) -> Result<SqldCounters> {
        let metrics = crate::get(&format!("http://127.0.0.1:{}/metrics", self.admin_port))?;
        anyhow::ensure!(metrics.status == 200, "sqld metrics: {}", metrics.status);
        let count = |name: &str| -> u64 {
            metrics
                .body
                .lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
                .map_or(0, |value| value as u64)
        };
        Ok(SqldCounters {
            statements: count("libsql_server_query_count "),
            connections: count("libsql_server_connection_create_time_count "),
        })
    }

    /// What it printed.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
