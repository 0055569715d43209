//! The `notify` part: 1,000 workspaces cross a balance level in one batch, then the notifier's
//! passes deliver the 1,000 `balance.low` events to a local endpoint while debits run. What a
//! user sees: how fast the events arrive, and whether debits slow down meanwhile.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use crate::load::{self, LoadResult};
use crate::{host, runtime};

/// A webhook endpoint that answers 204 at once and counts what it received.
pub struct Sink {
    /// `IP:PORT`.
    pub addr: String,
    received: Arc<AtomicU64>,
    _thread: std::thread::JoinHandle<()>,
}

impl Sink {
    /// Starts the endpoint on a free loopback port.
    pub fn start() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?.to_string();
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let counter = Arc::clone(&counter);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: http::Request<hyper::body::Incoming>| {
                                let counter = Arc::clone(&counter);
                                async move {
                                    let _ = req.into_body().collect().await;
                                    counter.fetch_add(1, Ordering::Relaxed);
                                    let mut response = http::Response::new(Full::new(Bytes::new()));
                                    *response.status_mut() = http::StatusCode::NO_CONTENT;
                                    Ok::<_, Infallible>(response)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Ok(Self {
            addr,
            received,
            _thread: thread,
        })
    }

    /// Requests received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// What one run measured.
pub struct NotifyFigures {
    /// Events the crossing wrote.
    pub events: u64,
    /// From the first delivery pass to the last event received.
    pub delivery: Duration,
    /// Passes it took.
    pub passes: u32,
    /// Debits at 16 clients before the crossing, with nothing to deliver.
    pub quiet: LoadResult,
    /// The same load while the events are delivered.
    pub delivering: LoadResult,
}

/// The secret the bench signs with (any valid one: the sink does not verify).
const SECRET: &str = "whsec_YmVuY2gtbm90aWZpY2F0aW9ucy1zZWNyZXQ=";

/// Runs the part on `runtime` over a copy of the data set `set` of `workspaces` workspaces;
/// `debits` makes a debit load with new event ids at each call (a reused id is a cheap replay).
pub fn run(
    runtime: &runtime::Runtime,
    set: &std::path::Path,
    workspaces: u64,
    warmup: Duration,
    duration: Duration,
    debits: &dyn Fn() -> load::MakeRequest,
) -> Result<NotifyFigures> {
    let sink = Sink::start()?;
    let env = [
        (
            "SPIN_VARIABLE_NOTIFICATIONS_URL",
            format!("http://{}/hooks", sink.addr),
        ),
        (
            "SPIN_VARIABLE_NOTIFICATIONS_ORIGIN",
            format!("http://{}", sink.addr),
        ),
        ("SPIN_VARIABLE_NOTIFICATIONS_SECRET", SECRET.to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let app = runtime::start_on_copy_with_env(runtime, set, &env)?;

    // A level every workspace is above, and a batch that takes each one through it.
    let db = ledger::native::NativeDb::open(crate::data::db_file(&app.state_dir))?;
    let rows = futures::executor::block_on(ledger::Storage::query(
        &db,
        "SELECT MIN(plan_credits_micros + wallet_micros), MAX(plan_credits_micros + wallet_micros)
         FROM workspaces WHERE id LIKE 'ws%'",
        &[],
    ))?;
    let (min_micros, max_micros) = match rows.first().map(|r| (r.first(), r.get(1))) {
        Some((Some(ledger::SqlValue::Integer(min)), Some(ledger::SqlValue::Integer(max)))) => {
            (*min, *max)
        }
        _ => bail!("no workspaces in the data set"),
    };
    drop(db);
    let level_micros = min_micros - 1_000_000;
    if level_micros <= 0 {
        bail!("the data set's workspaces hold too little to cross a level");
    }
    let message_price_micros = host::edit_catalog(&app.addr, |catalog| {
        catalog["settings"]["low_balance_levels"] =
            serde_json::json!([ledger::money::to_decimal(level_micros).to_string()]);
        catalog["rates"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|rate| rate["kind"] == "message")
            .and_then(|rate| rate["price"].as_str())
            .and_then(|price| ledger::money::parse_micros("price", price, false).ok())
            .context("the catalog prices no message")
    })?;

    // Debits with nothing to deliver, after a run that warms the instances and the page cache
    // (the delivering run below finds them warm).
    load::run(&app.addr, 16, warmup, duration, debits())?;
    let quiet = load::run(&app.addr, 16, warmup, duration, debits())?;

    // Per workspace, messages costing a little more than the richest holds above the level.
    let tag = crate::run_tag();
    let events: Vec<_> = (0..workspaces)
        .map(|n| {
            serde_json::json!({
                "id": format!("{tag}-cross-{n}"), "workspace_id": crate::data::workspace_id(n),
                "agent_id": "agent", "kind": "message",
                "quantity": ((max_micros - level_micros) / message_price_micros + 1).to_string(),
            })
        })
        .collect();
    let (status, body) = host::send_once(
        &app.addr,
        load::json_request(
            http::Method::POST,
            "/v1/usage/batch",
            Some(host::SERVICE_KEY),
            serde_json::json!({ "events": events }).to_string(),
        ),
    )?;
    if status != 200 {
        bail!(
            "crossing batch: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    // Deliver (the cron's HTTP twin, pass after pass) while the same debits run.
    let before = sink.received();
    let addr = app.addr.clone();
    let target = workspaces;
    let deliverer = {
        let sink_received = Arc::clone(&sink.received);
        std::thread::spawn(move || -> Result<(Duration, u32)> {
            let started = Instant::now();
            let mut passes = 0;
            while sink_received.load(Ordering::Relaxed) - before < target {
                let (status, body) = host::send_once(
                    &addr,
                    load::json_request(
                        http::Method::POST,
                        "/internal/jobs/deliver-notifications",
                        Some(host::SERVICE_KEY),
                        String::new(),
                    ),
                )?;
                passes += 1;
                if status != 200 {
                    bail!("deliver: {status} {}", String::from_utf8_lossy(&body));
                }
                if started.elapsed() > Duration::from_secs(300) {
                    bail!("1,000 events not delivered within 300 s");
                }
            }
            Ok((started.elapsed(), passes))
        })
    };
    // The same window as the delivery, which takes about a second here: what a debit meets while
    // events are sent.
    let delivering = load::run(&app.addr, 16, Duration::ZERO, duration, debits())?;
    let (delivery, passes) = deliverer
        .join()
        .map_err(|_| anyhow::anyhow!("the delivery thread panicked"))??;
    Ok(NotifyFigures {
        events: sink.received() - before,
        delivery,
        passes,
        quiet,
        delivering,
    })
}
