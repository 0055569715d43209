//! The HTTP load generator: N keep-alive clients (hyper, HTTP/1.1, TCP_NODELAY), each sending its
//! next request as soon as the previous answer is read, for a fixed time after a warm-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

/// Builds request number `seq` of client `client` (method, path, headers and body).
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> http::Request<Full<Bytes>> + Send + Sync>;

/// The most latencies one run keeps (a bound, not a slowdown: beyond it the run stops early).
const SAMPLES_MAX: usize = 20_000_000;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Concurrent clients.
    pub clients: usize,
    /// Successful (2xx) requests completed in the measured window.
    pub ok: u64,
    /// Non-2xx answers and failed connections in the measured window.
    pub errors: u64,
    /// The measured window.
    pub secs: f64,
    /// Latency percentiles of successful requests.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// The same figures per kind of request ([`kind_of`]).
    pub by_kind: BTreeMap<&'static str, KindStats>,
}

/// One kind of request of a mixed load.
#[derive(Debug, Clone, Copy)]
pub struct KindStats {
    /// Successful requests in the measured window.
    pub ok: u64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    /// Successful requests of `kind` per second.
    pub fn kind_rps(&self, kind: &str) -> f64 {
        self.by_kind
            .get(kind)
            .map_or(0.0, |k| k.ok as f64 / self.secs)
    }
}

/// What a request is, by its path: `debit`, `batch`, `authorize`, `heartbeat`, `end` or `other`.
pub fn kind_of(path: &str) -> &'static str {
    match path {
        "/v1/usage" => "debit",
        "/v1/usage/batch" => "batch",
        "/v1/calls" => "authorize",
        p if p.starts_with("/v1/calls/") && p.ends_with("/heartbeat") => "heartbeat",
        p if p.starts_with("/v1/calls/") && p.ends_with("/end") => "end",
        _ => "other",
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        Duration::ZERO
    } else {
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// Runs `clients` clients against `addr` (`IP:PORT`) for `duration` after `warmup`.
pub fn run(
    addr: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    make: MakeRequest,
) -> Result<LoadResult> {
    // One thread for the clients: on a 2-core machine the generator must not take both cores.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let start = Instant::now() + warmup;
        let end = start + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for client_index in 0..clients {
            let addr = addr.to_owned();
            let make = Arc::clone(&make);
            tasks.spawn(async move { client(&addr, client_index, start, end, make).await });
        }
        let mut latencies = Vec::new();
        let mut kinds: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
        let mut errors = 0;
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.context("client task")?;
            for (kind, latency) in outcome.latencies {
                latencies.push(latency);
                kinds.entry(kind).or_default().push(latency);
            }
            errors += outcome.errors;
            if first_error.is_none() {
                first_error = outcome.first_error;
            }
        }
        latencies.sort_unstable();
        let by_kind = kinds
            .into_iter()
            .map(|(kind, mut of_kind)| {
                of_kind.sort_unstable();
                let stats = KindStats {
                    ok: of_kind.len() as u64,
                    p50: percentile(&of_kind, 0.50),
                    p99: percentile(&of_kind, 0.99),
                };
                (kind, stats)
            })
            .collect();
        Ok(LoadResult {
            clients,
            ok: latencies.len() as u64,
            errors,
            secs: duration.as_secs_f64(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            p999: percentile(&latencies, 0.999),
            first_error,
            by_kind,
        })
    })
}

struct ClientOutcome {
    latencies: Vec<(&'static str, Duration)>,
    errors: u64,
    first_error: Option<String>,
}

async fn client(
    addr: &str,
    client_index: usize,
    start: Instant,
    end: Instant,
    make: MakeRequest,
) -> ClientOutcome {
    let mut outcome = ClientOutcome {
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
    };
    if let Err(error) = client_loop(addr, client_index, start, end, &make, &mut outcome).await {
        outcome.errors += 1;
        outcome.first_error.get_or_insert(format!("{error:#}"));
    }
    outcome
}

async fn client_loop(
    addr: &str,
    client_index: usize,
    start: Instant,
    end: Instant,
    make: &MakeRequest,
    outcome: &mut ClientOutcome,
) -> Result<()> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let host = http::HeaderValue::from_str(addr)?;
    let mut seq = 0u64;
    loop {
        let sent = Instant::now();
        if sent >= end || outcome.latencies.len() >= SAMPLES_MAX {
            return Ok(());
        }
        let mut request = make(client_index, seq);
        let kind = kind_of(request.uri().path());
        seq += 1;
        request
            .headers_mut()
            .insert(http::header::HOST, host.clone());
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let done = Instant::now();
        if sent < start || done > end {
            continue;
        }
        if status.is_success() {
            outcome.latencies.push((kind, done - sent));
        } else {
            outcome.errors += 1;
            outcome.first_error.get_or_insert_with(|| {
                format!(
                    "{status} {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )
            });
        }
    }
}

/// A request with a JSON body and optional bearer token.
pub fn json_request(
    method: http::Method,
    path: &str,
    bearer: Option<&str>,
    body: String,
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
}

/// A GET with an optional bearer token.
pub fn get_request(path: &str, bearer: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::builder().method(http::Method::GET).uri(path);
    if let Some(token) = bearer {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
}

/// A small deterministic pseudo-random sequence (SplitMix64) for picking workspaces.
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
