//! Runs the app on this machine, for the end-to-end tests (`e2e`) and the bench: the local host
//! (or real Spin) over a Spin manifest, the backing stores a runtime config can name (Redis,
//! sqld), and the credentials the app is configured with (the service key, user tokens).
//!
//! [`TestHost::start`] spawns `local-host up` with a fresh temporary state directory and
//! `--listen 127.0.0.1:0`, waits (bounded) for its `listening on` line, and kills the child when
//! dropped. The binary is `$LOCAL_HOST_BIN`, else `$CARGO_TARGET_DIR/release/local-host`, else
//! `<workspace>/target/release/local-host`.

#![warn(missing_docs)]

pub mod credentials;
pub mod hrana;
pub mod spin;
pub mod stores;

use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a host may take to print its `listening on` line (compiling components included).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long real Spin may take to answer after it starts (it compiles the components first).
const SPIN_START_TIMEOUT: Duration = Duration::from_secs(180);

/// The workspace root (the nearest folder above this crate's, or above the crate being run's,
/// that holds `spin.toml`).
///
/// Cargo sets `CARGO_MANIFEST_DIR` when it runs a test or a binary, so the checkout being run
/// wins over the path compiled into the binary: a target directory shared between checkouts may
/// hold a binary built in another one.
pub fn workspace_root() -> PathBuf {
    let compiled = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([compiled.clone()])
        .find_map(|crate_dir| {
            crate_dir
                .ancestors()
                .skip(1)
                .find(|dir| dir.join("spin.toml").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or(compiled)
}

/// The local host binary to run.
pub fn host_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LOCAL_HOST_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release").join("local-host")
}

/// A directory for compiled components shared by all test hosts (speeds up start-up).
pub fn shared_cache_dir() -> PathBuf {
    std::env::temp_dir().join("local-host-test-cache")
}

/// Options for [`TestHost::start`].
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Extra command-line arguments for `local-host up`.
    pub args: Vec<String>,
    /// Extra environment variables (e.g. `SPIN_VARIABLE_*`).
    pub env: Vec<(String, String)>,
    /// Use this state directory instead of a fresh temporary one.
    pub state_dir: Option<PathBuf>,
    /// A program (and its arguments) the host runs under: the host's own command line is
    /// appended to it, so the wrapper ends by `exec`ing it (the host keeps the child's pid).
    pub wrapper: Vec<String>,
}

impl HostOptions {
    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command that runs `bin`: under the wrapper, if one is set.
    fn command(&self, bin: &Path) -> Command {
        match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        }
    }

    /// Runs the host under `wrapper` (see [`HostOptions::wrapper`]).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|part| (*part).to_owned()).collect();
        self
    }
}

/// A running local host.
pub struct TestHost {
    child: Child,
    /// Real Spin: `spin up` runs its trigger in a child process of its own, so the host is the
    /// whole process group (led by `child`), and killing it kills the group.
    process_group: bool,
    base_url: String,
    state_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    // Behind a mutex so that a TestHost (and an App) can be shared by client threads.
    output: std::sync::Mutex<mpsc::Receiver<String>>,
}

impl TestHost {
    /// Starts `local-host up --manifest <manifest_path>` and waits until it listens.
    pub fn start(manifest_path: impl AsRef<Path>, options: HostOptions) -> Result<Self> {
        let (temp, state_dir) = state_dir_of(&options)?;
        let bin = host_binary();
        if !bin.exists() {
            bail!(
                "local host binary {} not found: run scripts/build-host.sh or set LOCAL_HOST_BIN",
                bin.display()
            );
        }
        let mut cmd = options.command(&bin);
        cmd.arg("up")
            .arg("--manifest")
            .arg(manifest_path.as_ref())
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--cache-dir")
            .arg(shared_cache_dir())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let (mut child, rx) = spawn_with_output(cmd, &bin)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let base_url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim().to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    bail!("host did not start listening (exit status {status:?})");
                }
            }
        };
        Ok(Self {
            child,
            process_group: false,
            base_url,
            state_dir,
            _temp: temp,
            output: std::sync::Mutex::new(rx),
        })
    }

    /// Starts real Spin instead (`BIN up --from MANIFEST`, its HTTP triggers only: see
    /// [`spin::http_only_manifest`]) on a free loopback port with `options`' arguments and
    /// environment, and waits (bounded) until its health endpoint answers.
    pub fn start_spin(
        bin: &Path,
        manifest_path: impl AsRef<Path>,
        options: HostOptions,
    ) -> Result<Self> {
        let (temp, state_dir) = state_dir_of(&options)?;
        let manifest = spin::http_only_manifest(manifest_path.as_ref(), &state_dir)?;
        let port = free_port()?;
        let base_url = format!("http://127.0.0.1:{port}");
        let mut cmd = options.command(bin);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg("up")
            .arg("--from")
            .arg(&manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(&state_dir)
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let (mut child, rx) = spawn_with_output(cmd, bin)?;
        let deadline = Instant::now() + SPIN_START_TIMEOUT;
        let health = format!("{base_url}/.well-known/spin/health");
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("spin up exited with {status}");
            }
            if get(&health).is_ok_and(|reply| reply.status == 200) {
                break;
            }
            if Instant::now() >= deadline {
                kill_group(&mut child);
                bail!("spin up did not answer within {SPIN_START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            child,
            process_group: true,
            base_url,
            state_dir,
            _temp: temp,
            output: std::sync::Mutex::new(rx),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every process of the host: on real Spin, `spin up` and the trigger processes it runs
    /// (its process group); else the host's one process.
    pub fn pids(&self) -> Result<Vec<u32>> {
        if !self.process_group {
            return Ok(vec![self.child.id()]);
        }
        let output = Command::new("pgrep")
            .arg("-g")
            .arg(self.child.id().to_string())
            .output()
            .context("cannot run pgrep")?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim().parse().context("pgrep's output"))
            .collect()
    }

    /// Whether the host process has exited (without waiting for it).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The host's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Lines the host printed on stdout after `listening on` so far.
    pub fn drain_output(&self) -> Vec<String> {
        self.output
            .lock()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default()
    }

    /// Kills the host with SIGKILL (no chance to finish anything) and waits for it to exit.
    pub fn kill(&mut self) {
        if self.process_group {
            kill_group(&mut self.child);
        } else {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("host did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL to the process group `child` leads (`spin up` and the trigger process it runs).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--"])
        .arg(format!("-{}", child.id()))
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The state directory `options` name, or a fresh temporary one (kept alive by the guard).
fn state_dir_of(options: &HostOptions) -> Result<(Option<tempfile::TempDir>, PathBuf)> {
    Ok(match &options.state_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::tempdir()?;
            let dir = temp.path().join("state");
            (Some(temp), dir)
        }
    })
}

/// Spawns `cmd` (whose stdout is piped) and reads its stdout lines on a thread of their own.
fn spawn_with_output(mut cmd: Command, bin: &Path) -> Result<(Child, mpsc::Receiver<String>)> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    spawn_reader(stdout, tx);
    Ok((child, rx))
}

fn spawn_reader(stdout: ChildStdout, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// A response: status and body text.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn reply(mut res: ureq::http::Response<ureq::Body>) -> Result<Reply> {
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let mut body = String::new();
    res.body_mut().as_reader().read_to_string(&mut body)?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// GET `url`.
pub fn get(url: &str) -> Result<Reply> {
    reply(
        agent()
            .get(url)
            .call()
            .with_context(|| format!("GET {url}"))?,
    )
}

/// POST `body` (JSON text) to `url` with extra headers.
pub fn post_json(url: &str, body: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    let mut req = agent().post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.send(body).with_context(|| format!("POST {url}"))?)
}

/// Any request: `method` to `url` with an optional JSON body and extra headers.
pub fn request(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    let method = ureq::http::Method::from_bytes(method.as_bytes()).context("method")?;
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(body.unwrap_or("").to_owned())
        .context("request")?;
    reply(
        agent()
            .run(request)
            .with_context(|| format!("request {url}"))?,
    )
}

/// A loopback port free when asked (another process may take it before it is bound).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
