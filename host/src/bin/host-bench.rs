//! `host-bench`: starts the local host on the no-op test component and measures requests per
//! second and p50/p99 latency with 1 and 32 concurrent keep-alive clients (3 s each).
//!
//! Run: `cargo run --release -p local-host --bin host-bench` (build the test components first
//! with `scripts/build-components.sh`). Optional args: `[MANIFEST] [SECONDS]`.

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Client counts to measure.
const CONCURRENCY: [usize; 2] = [1, 32];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let manifest = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/components/noop.toml")
    });
    let seconds: u64 = match args.next() {
        Some(s) => s.parse().context("SECONDS must be an integer")?,
        None => 3,
    };
    let exe = std::env::current_exe()?;
    let host_bin = exe
        .parent()
        .map(|d| d.join("local-host"))
        .context("cannot locate local-host next to host-bench")?;
    let state = std::env::temp_dir().join(format!("host-bench-{}", std::process::id()));
    let mut child = Command::new(&host_bin)
        .args(["up", "--listen", "127.0.0.1:0", "--no-cron", "--manifest"])
        .arg(&manifest)
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", host_bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut addr = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(url) = line.strip_prefix("listening on http://") {
            addr = Some(url.trim().to_owned());
            break;
        }
    }
    let result = match addr {
        Some(addr) => run_all(&addr, Duration::from_secs(seconds)),
        None => Err(anyhow::anyhow!("host exited before listening")),
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&state);
    result
}

fn run_all(addr: &str, duration: Duration) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("local-host bench: GET / on the no-op component, {duration:?} per run");
    for clients in CONCURRENCY {
        let mut latencies = rt.block_on(load(addr, clients, duration))?;
        if latencies.is_empty() {
            bail!("no request completed");
        }
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
        println!(
            "clients={clients:>3}  requests={:>7}  rps={:>9.0}  p50={:>8.1?}  p99={:>8.1?}",
            latencies.len(),
            latencies.len() as f64 / duration.as_secs_f64(),
            pct(0.50),
            pct(0.99),
        );
    }
    Ok(())
}

async fn load(addr: &str, clients: usize, duration: Duration) -> Result<Vec<Duration>> {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let addr = addr.to_owned();
        tasks.spawn(async move { client(&addr, deadline).await });
    }
    let mut all = Vec::new();
    while let Some(res) = tasks.join_next().await {
        all.extend(res??);
    }
    Ok(all)
}

async fn client(addr: &str, deadline: Instant) -> Result<Vec<Duration>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let req = http::Request::get("/")
            .header(http::header::HOST, addr)
            .body(Empty::<Bytes>::new())?;
        let start = Instant::now();
        let res = sender.send_request(req).await?;
        let status = res.status();
        res.into_body().collect().await?;
        if !status.is_success() {
            bail!("status {status}");
        }
        latencies.push(start.elapsed());
    }
    Ok(latencies)
}
