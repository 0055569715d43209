//! The product side: the real components (`spin.toml`) and the no-op component in the local host.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use local_run::{HostOptions, TestHost};

/// The service key the bench configures.
pub const SERVICE_KEY: &str = local_run::credentials::SERVICE_KEY;

/// The app's manifest.
pub fn app_manifest() -> PathBuf {
    local_run::workspace_root().join("spin.toml")
}

/// The no-op component's manifest.
pub fn noop_manifest() -> PathBuf {
    local_run::workspace_root().join("tests/components/noop.toml")
}

/// Extra `local-host up` flags for every host the bench starts, from `$BENCH_HOST_ARGS`
/// (e.g. `--max-instance-concurrent-reuse-count 1`), to compare host settings.
fn extra_args() -> Vec<String> {
    std::env::var("BENCH_HOST_ARGS")
        .map(|args| args.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `state_dir` and the bench's secrets: what every runtime the bench starts is given.
pub fn secrets(state_dir: &Path) -> HostOptions {
    HostOptions {
        state_dir: Some(state_dir.to_path_buf()),
        ..HostOptions::default()
    }
    .env("SPIN_VARIABLE_SERVICE_API_KEY", SERVICE_KEY)
    .env(
        "SPIN_VARIABLE_AUTH_JWT_SECRET",
        local_run::credentials::JWT_SECRET,
    )
}

fn options(state_dir: &Path, args: &[&str]) -> HostOptions {
    let mut options = secrets(state_dir).arg("--no-cron");
    options.args.extend(args.iter().map(|a| (*a).to_owned()));
    options.args.extend(extra_args());
    options
}

/// Starts the local host on `manifest` with the bench's secrets, `state_dir` and `args`.
pub fn start(manifest: &Path, state_dir: &Path, args: &[&str]) -> Result<TestHost> {
    start_with_env(manifest, state_dir, args, &[])
}

/// [`start`] with more environment variables (e.g. `SPIN_VARIABLE_*`).
pub fn start_with_env(
    manifest: &Path,
    state_dir: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> Result<TestHost> {
    let mut options = options(state_dir, args);
    options.env.extend(env.iter().cloned());
    TestHost::start(manifest, options)
}

/// `IP:PORT` of a running host.
pub fn addr(host: &TestHost) -> String {
    host.base_url().trim_start_matches("http://").to_owned()
}

/// Sends one request on a fresh connection, without a timeout (a renewal pass may be long).
pub fn send_once(addr: &str, mut request: http::Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        request
            .headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_str(addr)?);
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    })
}

/// Spawns `local-host up` on the app with its own state and compile-cache directories, and
/// returns the time from spawn to the first successful answer of `GET /v1/catalog`.
pub fn cold_start(state_dir: &Path, cache_dir: &Path) -> Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new(local_run::host_binary())
        .arg("up")
        .arg("--manifest")
        .arg(app_manifest())
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(["--listen", "127.0.0.1:0", "--no-cron"])
        .env("SPIN_VARIABLE_SERVICE_API_KEY", SERVICE_KEY)
        .env(
            "SPIN_VARIABLE_AUTH_JWT_SECRET",
            local_run::credentials::JWT_SECRET,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn local-host")?;
    let outcome = (|| {
        let stdout = child.stdout.take().context("no stdout")?;
        let mut addr = None;
        for line in std::io::BufReader::new(stdout).lines() {
            if let Some(url) = line?.strip_prefix("listening on http://") {
                addr = Some(url.trim().to_owned());
                break;
            }
        }
        let Some(addr) = addr else {
            bail!("host exited before listening");
        };
        let (status, body) = send_once(
            &addr,
            crate::load::get_request("/v1/catalog", Some(SERVICE_KEY)),
        )?;
        if status != 200 {
            bail!(
                "GET /v1/catalog: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(started.elapsed())
    })();
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// The release .wasm of each component, with its size in bytes.
pub fn component_sizes() -> Vec<(String, u64)> {
    let dir = local_run::workspace_root().join("target/wasm32-wasip2/release");
    [
        "service_api",
        "user_api",
        "stripe_webhook",
        "auto_recharge",
        "cycle_renewal",
        "noop",
    ]
    .iter()
    .filter_map(|name| {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::metadata(&path)
            .ok()
            .map(|m| (format!("{name}.wasm"), m.len()))
    })
    .collect()
}

/// Stores a new catalog version: the current one as `edit` changes it. Returns what `edit`
/// returned (something it read from the catalog).
pub fn edit_catalog<T>(
    addr: &str,
    edit: impl FnOnce(&mut serde_json::Value) -> Result<T>,
) -> Result<T> {
    let (status, body) = send_once(
        addr,
        crate::load::get_request("/v1/catalog", Some(SERVICE_KEY)),
    )?;
    if status != 200 {
        bail!("GET /v1/catalog: {status}");
    }
    let mut catalog: serde_json::Value = serde_json::from_slice(&body)?;
    if let Some(doc) = catalog.as_object_mut() {
        doc.remove("version");
    }
    let out = edit(&mut catalog)?;
    let (status, body) = send_once(
        addr,
        crate::load::json_request(
            http::Method::PUT,
            "/v1/catalog",
            Some(SERVICE_KEY),
            catalog.to_string(),
        ),
    )?;
    if status != 200 {
        bail!(
            "PUT /v1/catalog: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(out)
}
