//! The HTTP load generators (hyper, HTTP/1.1 keep-alive, TCP_NODELAY), each for a fixed time
//! after a warm-up:
//!
//! - [`run`], a closed loop: N clients, each sending its next request as soon as the previous
//!   answer is read (it measures N / throughput: a slow answer delays the requests behind it);
//! - [`run_open`], an open loop: requests due on a fixed schedule at an offered rate, whatever
//!   the answers, as a voice platform sends them, each measured from its due time.

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

/// The figures of each kind of request of a mixed load, from its latencies.
fn kind_stats(kinds: BTreeMap<&'static str, Vec<Duration>>) -> BTreeMap<&'static str, KindStats> {
    kinds
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
        .collect()
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
        let by_kind = kind_stats(kinds);
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

/// Connections an open-loop run may hold; a due request beyond them waits for one to come back.
pub const OPEN_CONNECTIONS_MAX: usize = 512;
/// How long answers are awaited after the window; a request still unanswered then is an error.
const OPEN_DRAIN: Duration = Duration::from_secs(5);
/// The most requests one open-loop schedule holds (warm-up and window).
const OPEN_REQUESTS_MAX: u64 = 10_000_000;
/// Saturated: fewer answers in the window than this share of the offered requests...
const ACHIEVED_SATURATED_RATIO: f64 = 0.95;
/// ... or, at the window's end, more requests due and unanswered than this much offered load
/// (by Little's law, a mean latency above 100 ms: a backlog, not requests in flight).
const BACKLOG_SATURATED_SECS: f64 = 0.1;

/// One open-loop run: requests sent on a fixed schedule, whatever the answers.
#[derive(Debug, Clone, Copy)]
pub struct OpenSpec {
    /// Offered requests per second: request `i` is due at the schedule's origin + `i` / rate.
    pub rate_per_sec: f64,
    /// Requests due in this first stretch are sent but not measured.
    pub warmup: Duration,
    /// The measured window, after the warm-up.
    pub duration: Duration,
    /// Connections the pool may open ([`OPEN_CONNECTIONS_MAX`] in the bench).
    pub connections_max: usize,
    /// The schedule is dealt to this many virtual clients: request `i` is
    /// `make(i % clients, i / clients)`, so a maker that orders a client's requests (a call's
    /// authorization before its heartbeats) sees them due in that order.
    pub clients: usize,
}

/// What one open-loop run measured. Latencies run from each request's due time, not from when
/// it went out: a late generator, a wait for a connection or a connection's set-up all count.
#[derive(Debug, Clone)]
pub struct OpenResult {
    /// Offered requests per second.
    pub offered_per_sec: f64,
    /// The measured window.
    pub secs: f64,
    /// 2xx answers received in the window, whenever their requests were due (the throughput).
    pub completed_ok: u64,
    /// Requests due in the window answered non-2xx, failed, or unanswered after the drain.
    pub errors: u64,
    /// Of those, requests still unanswered [`OPEN_DRAIN`] after the window (then abandoned).
    pub unanswered: u64,
    /// Requests due in the window and not answered by its end.
    pub outstanding_at_end: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Latency percentiles (from the due time) of requests due in the window answered 2xx.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// The slowest.
    pub max: Duration,
    /// 99th percentile of how late requests went out (timer, pool wait, connection set-up):
    /// the generator's share of the latencies.
    pub sent_late_p99: Duration,
    /// Connections opened in the run.
    pub connections_opened: usize,
    /// The same figures per kind of request ([`kind_of`]).
    pub by_kind: BTreeMap<&'static str, KindStats>,
}

impl OpenResult {
    /// 2xx answers per second in the window.
    pub fn achieved_per_sec(&self) -> f64 {
        self.completed_ok as f64 / self.secs
    }

    /// Why the run could not keep up with the offered rate, if it could not.
    pub fn saturation(&self) -> Option<String> {
        let mut why = Vec::new();
        let achieved = self.achieved_per_sec() / self.offered_per_sec;
        if achieved < ACHIEVED_SATURATED_RATIO {
            why.push(format!("achieved {achieved:.2}x offered"));
        }
        if self.outstanding_at_end as f64 > BACKLOG_SATURATED_SECS * self.offered_per_sec {
            why.push(format!(
                "{} due and unanswered at the window's end",
                self.outstanding_at_end
            ));
        }
        if self.unanswered > 0 {
            why.push(format!(
                "{} unanswered {}s after it",
                self.unanswered,
                OPEN_DRAIN.as_secs()
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// What became of one scheduled request.
struct Sample {
    kind: &'static str,
    due: Instant,
    /// When it went out (`None`: it never did, its connection failed).
    sent: Option<Instant>,
    done: Instant,
    error: Option<String>,
}

/// The open loop's connections: idle keep-alive connections, and a permit per connection in use
/// (the bound: a request takes a permit, then an idle connection or a new one).
struct Pool {
    addr: String,
    host: http::HeaderValue,
    slots: tokio::sync::Semaphore,
    connections_max: usize,
    idle: std::sync::Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    opened: std::sync::atomic::AtomicUsize,
}

impl Pool {
    fn take_idle(&self) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Called with the request's permit still held: idle and busy connections together never
    /// exceed the bound.
    fn put_back(&self, sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            idle.len() < self.connections_max,
            "more connections than the pool's bound"
        );
        idle.push(sender);
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(sender)
    }

    /// Sends one request on a pooled connection; the status and the start of the body.
    async fn send(
        &self,
        mut request: http::Request<Full<Bytes>>,
        sent: &mut Option<Instant>,
    ) -> Result<(http::StatusCode, Bytes)> {
        let _permit = self.slots.acquire().await?;
        let mut sender = match self.take_idle() {
            Some(sender) => sender,
            None => self.connect().await.context("connect")?,
        };
        sender.ready().await?;
        request
            .headers_mut()
            .insert(http::header::HOST, self.host.clone());
        *sent = Some(Instant::now());
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        self.put_back(sender);
        Ok((status, body))
    }
}

async fn open_request(
    pool: Arc<Pool>,
    due: Instant,
    request: http::Request<Full<Bytes>>,
) -> Sample {
    let kind = kind_of(request.uri().path());
    let mut sent = None;
    let outcome = pool.send(request, &mut sent).await;
    let done = Instant::now();
    let error = match outcome {
        Ok((status, _)) if status.is_success() => None,
        Ok((status, body)) => Some(format!(
            "{status} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
        Err(error) => Some(format!("{error:#}")),
    };
    Sample {
        kind,
        due,
        sent,
        done,
        error,
    }
}

/// Sends requests to `addr` at `spec.rate_per_sec` for the warm-up and the window, over a pool
/// of keep-alive connections, and measures each from its due time.
///
/// A thread of its own keeps the schedule (it sleeps until each due time, to the tens of
/// microseconds, and hands the request's number over); the requests run on one single-threaded
/// runtime, as in [`run`]: the generator takes one core at most.
pub fn run_open(addr: &str, spec: OpenSpec, make: MakeRequest) -> Result<OpenResult> {
    run_open_spread(&[addr], spec, make)
}

/// [`run_open`] over several replicas of the app: request `i` goes to `addrs[i % addrs.len()]`,
/// each replica with its own pool of `spec.connections_max` connections (a load balancer's
/// round robin).
pub fn run_open_spread(addrs: &[&str], spec: OpenSpec, make: MakeRequest) -> Result<OpenResult> {
    anyhow::ensure!(!addrs.is_empty(), "an open loop needs an address");
    anyhow::ensure!(
        spec.rate_per_sec > 0.0 && spec.clients > 0 && spec.connections_max > 0,
        "an open loop needs a rate, clients and connections: {spec:?}"
    );
    let scheduled = ((spec.warmup + spec.duration).as_secs_f64() * spec.rate_per_sec).ceil() as u64;
    anyhow::ensure!(
        scheduled <= OPEN_REQUESTS_MAX,
        "{scheduled} requests scheduled, more than {OPEN_REQUESTS_MAX}"
    );
    let interval_secs = 1.0 / spec.rate_per_sec;
    let due_of =
        move |origin: Instant, i: u64| origin + Duration::from_secs_f64(i as f64 * interval_secs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pools = addrs
        .iter()
        .map(|addr| {
            Ok(Arc::new(Pool {
                addr: (*addr).to_owned(),
                host: http::HeaderValue::from_str(addr)?,
                slots: tokio::sync::Semaphore::new(spec.connections_max),
                connections_max: spec.connections_max,
                idle: std::sync::Mutex::new(Vec::new()),
                opened: std::sync::atomic::AtomicUsize::new(0),
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    // A little lead, so that the first request is not late because the runtime was starting.
    let origin = Instant::now() + Duration::from_millis(20);
    let start = origin + spec.warmup;
    let end = start + spec.duration;
    let (ticks, mut due_numbers) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let ticker = std::thread::spawn(move || {
        for i in 0..scheduled {
            let due = due_of(origin, i);
            if due >= end {
                return;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if ticks.send(i).is_err() {
                return;
            }
        }
    });
    let samples = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let mut samples = Vec::with_capacity(scheduled as usize);
        loop {
            // Due requests first: a finished one only waits to be collected (its time is taken).
            tokio::select! {
                biased;
                next = due_numbers.recv() => match next {
                    Some(i) => {
                        let clients = spec.clients as u64;
                        let request = make((i % clients) as usize, i / clients);
                        let pool = Arc::clone(&pools[(i % pools.len() as u64) as usize]);
                        tasks.spawn(open_request(pool, due_of(origin, i), request));
                    }
                    None => break,
                },
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    samples.push(joined.context("open-loop request task")?);
                }
            }
        }
        let drain_until = tokio::time::Instant::from_std(end + OPEN_DRAIN);
        while let Ok(Some(joined)) = tokio::time::timeout_at(drain_until, tasks.join_next()).await {
            samples.push(joined.context("open-loop request task")?);
        }
        tasks.abort_all();
        anyhow::Ok(samples)
    })?;
    ticker
        .join()
        .map_err(|_| anyhow::anyhow!("the open loop's ticker panicked"))?;
    let in_window = (0..scheduled)
        .map(|i| due_of(origin, i))
        .filter(|due| (start..end).contains(due))
        .count() as u64;
    Ok(summarize_open(
        spec,
        start,
        end,
        in_window,
        &samples,
        pools
            .iter()
            .map(|pool| pool.opened.load(std::sync::atomic::Ordering::Relaxed))
            .sum(),
    ))
}

fn summarize_open(
    spec: OpenSpec,
    start: Instant,
    end: Instant,
    in_window: u64,
    samples: &[Sample],
    connections_opened: usize,
) -> OpenResult {
    let window = |at: Instant| (start..end).contains(&at);
    let completed_ok = samples
        .iter()
        .filter(|s| s.error.is_none() && window(s.done))
        .count() as u64;
    let measured: Vec<&Sample> = samples.iter().filter(|s| window(s.due)).collect();
    let unanswered = in_window.saturating_sub(measured.len() as u64);
    let mut latencies = Vec::with_capacity(measured.len());
    let mut kinds: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    let mut sent_late = Vec::with_capacity(measured.len());
    let mut errors = unanswered;
    let mut first_error = (unanswered > 0).then(|| {
        format!(
            "{unanswered} requests unanswered {}s after the window",
            OPEN_DRAIN.as_secs()
        )
    });
    let mut outstanding_at_end = unanswered;
    for sample in &measured {
        if sample.done >= end {
            outstanding_at_end += 1;
        }
        if let Some(sent) = sample.sent {
            sent_late.push(sent.saturating_duration_since(sample.due));
        }
        match &sample.error {
            None => {
                let latency = sample.done - sample.due;
                latencies.push(latency);
                kinds.entry(sample.kind).or_default().push(latency);
            }
            Some(error) => {
                errors += 1;
                first_error.get_or_insert_with(|| error.clone());
            }
        }
    }
    latencies.sort_unstable();
    sent_late.sort_unstable();
    let by_kind = kind_stats(kinds);
    OpenResult {
        offered_per_sec: spec.rate_per_sec,
        secs: spec.duration.as_secs_f64(),
        completed_ok,
        errors,
        unanswered,
        outstanding_at_end,
        first_error,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        p999: percentile(&latencies, 0.999),
        max: latencies.last().copied().unwrap_or_default(),
        sent_late_p99: percentile(&sent_late, 0.99),
        connections_opened,
        by_kind,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A local server that answers at once, except every 10th request (counted across
    /// connections), which it answers after `stall`.
    fn stalling_server(stall: Duration) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let served = Arc::new(AtomicU64::new(0));
                while let Ok((stream, _)) = listener.accept().await {
                    let served = Arc::clone(&served);
                    let service = hyper::service::service_fn(move |_request| {
                        let n = served.fetch_add(1, Ordering::Relaxed);
                        async move {
                            if n % 10 == 9 {
                                tokio::time::sleep(stall).await;
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service),
                    );
                }
            });
        });
        addr
    }

    fn get() -> MakeRequest {
        Arc::new(|_, _| get_request("/", None))
    }

    /// Every 10th answer takes 50 ms. A closed loop of one client sees it in its p99 too, but
    /// sends less (it waits); the open loop keeps its rate and shows the stall in its p99.
    #[test]
    fn open_loop_keeps_its_rate_where_a_closed_loop_waits() {
        let stall = Duration::from_millis(50);
        let addr = stalling_server(stall);
        let (warmup, window) = (Duration::from_millis(200), Duration::from_millis(800));
        let spec = OpenSpec {
            rate_per_sec: 400.0,
            warmup,
            duration: window,
            connections_max: OPEN_CONNECTIONS_MAX,
            clients: 1,
        };
        let open = run_open(&addr, spec, get()).expect("open loop");
        let closed = run(&addr, 1, warmup, window, get()).expect("closed loop");
        eprintln!("open: {open:?}\nclosed: {closed:?}");
        assert_eq!(open.errors, 0, "{:?}", open.first_error);
        assert!(open.p99 >= stall, "open p99 {:?}", open.p99);
        assert!(open.p50 < stall / 5, "open p50 {:?}", open.p50);
        assert!(
            open.achieved_per_sec() >= 0.9 * spec.rate_per_sec,
            "open achieved {:.0}/s",
            open.achieved_per_sec()
        );
        assert!(open.saturation().is_none(), "{:?}", open.saturation());
        assert!(closed.p99 >= stall, "closed p99 {:?}", closed.p99);
        // One client: at best 10 requests per 50 ms stall, ~200/s.
        assert!(
            closed.rps() < 0.6 * open.achieved_per_sec(),
            "closed {:.0}/s, open {:.0}/s",
            closed.rps(),
            open.achieved_per_sec()
        );
    }

    /// With one connection, the requests due while it is stalled wait for it, and that wait is
    /// their latency: from their due time, half of them wait 50 ms or more (from the time they
    /// were sent, all but the stalled one would look instant).
    #[test]
    fn open_loop_counts_from_the_due_time() {
        let stall = Duration::from_millis(150);
        let addr = stalling_server(stall);
        let spec = OpenSpec {
            // One every 20 ms: a stall delays the 7 requests due after it by 130, 110 ... 10 ms.
            rate_per_sec: 50.0,
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(1_200),
            connections_max: 1,
            clients: 1,
        };
        let open = run_open(&addr, spec, get()).expect("open loop");
        eprintln!("open, one connection: {open:?}");
        assert_eq!(open.errors, 0, "{:?}", open.first_error);
        assert_eq!(open.connections_opened, 1);
        assert!(open.max >= stall, "max {:?}", open.max);
        assert!(open.p50 >= Duration::from_millis(30), "p50 {:?}", open.p50);
        assert!(
            open.sent_late_p99 >= Duration::from_millis(100),
            "sent late p99 {:?}",
            open.sent_late_p99
        );
    }
}
