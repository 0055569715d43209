//! The native sides: the ledger in-process on rusqlite (the ceiling), and the same operations
//! behind a small hyper server over one persistent rusqlite connection (what a team would
//! otherwise build). Same SQL, same pragmas (`ledger::schema::CONNECTION_PRAGMAS` and `FILE_PRAGMAS`, WAL).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures::executor::block_on;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use ledger::calls::CallRequest;
use ledger::catalog::{Catalog, Direction, UsageKind};
use ledger::native::NativeDb;
use ledger::usage::UsageEvent;

use crate::data::workspace_id;
use crate::load::mix;

/// The ledger operation a run repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `usage::record` of one message.
    Debit,
    /// `calls::authorize` of one outbound call.
    Authorize,
    /// `calls::authorize`, `calls::heartbeat` and `calls::end` of one call (a cycle: three
    /// operations, counted as one).
    CallCycle,
}

impl Op {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Debit => "debit",
            Self::Authorize => "call-authorize",
            Self::CallCycle => "call-cycle",
        }
    }
}

/// A unique message event against a pseudo-random workspace of `workspaces`.
pub fn usage_event(tag: &str, n: u64, workspaces: u64) -> UsageEvent {
    UsageEvent {
        id: format!("{tag}-{n}"),
        workspace_id: workspace_id(mix(n) % workspaces),
        agent_id: "agent".into(),
        kind: UsageKind::Message,
        quantity: 1.into(),
        // The time of receipt, as most platforms report usage.
        occurred_at: None,
        direction: None,
        to: None,
        from: None,
    }
}

/// A unique outbound call; agents spread so that no agent collects thousands of active calls.
pub fn call_request(tag: &str, n: u64, workspaces: u64) -> CallRequest {
    let r = mix(n);
    CallRequest {
        workspace_id: workspace_id(r % workspaces),
        agent_id: format!("agent{}", (r >> 32) % 64),
        call_id: format!("{tag}-{n}"),
        direction: Direction::Outbound,
        to: "+14155550100".into(),
        from: "+14155550199".into(),
    }
}

fn run_op(db: &NativeDb, catalog: &Catalog, op: Op, tag: &str, n: u64, workspaces: u64) -> bool {
    let now = crate::data::now_secs();
    match op {
        Op::Debit => block_on(ledger::usage::record(
            db,
            catalog,
            &usage_event(tag, n, workspaces),
            now,
        ))
        .is_ok(),
        Op::Authorize => block_on(ledger::calls::authorize(
            db,
            catalog,
            &call_request(tag, n, workspaces),
            now,
        ))
        .is_ok(),
        Op::CallCycle => {
            let call = call_request(tag, n, workspaces);
            block_on(async {
                ledger::calls::authorize(db, catalog, &call, now).await?;
                ledger::calls::heartbeat(db, catalog, &call.call_id, 30, now).await?;
                ledger::calls::end(db, &call.call_id, 45, now).await
            })
            .is_ok()
        }
    }
}

/// Operations per second from `threads` threads, each with its own connection, for `duration`.
pub fn in_process(
    path: &Path,
    catalog: &Catalog,
    op: Op,
    threads: usize,
    workspaces: u64,
    duration: Duration,
) -> Result<f64> {
    let barrier = Arc::new(Barrier::new(threads));
    let tag = crate::run_tag();
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let path = path.to_path_buf();
            let catalog = catalog.clone();
            let barrier = Arc::clone(&barrier);
            let tag = format!("{tag}-np{thread}-{}", op.name());
            std::thread::spawn(move || -> Result<(u64, u64)> {
                let db = NativeDb::open(path)?;
                barrier.wait();
                let started = Instant::now();
                let (mut done, mut failed) = (0u64, 0u64);
                let mut n = 0u64;
                while started.elapsed() < duration {
                    if run_op(&db, &catalog, op, &tag, n, workspaces) {
                        done += 1;
                    } else {
                        failed += 1;
                    }
                    n += 1;
                }
                Ok((done, failed))
            })
        })
        .collect();
    let mut total = 0;
    for handle in handles {
        let (done, failed) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        anyhow::ensure!(
            failed == 0,
            "{failed} native {} operations failed",
            op.name()
        );
        total += done;
    }
    Ok(total as f64 / duration.as_secs_f64())
}

/// Batches of `batch` debits per second (as debits/s) on one connection at `synchronous`.
pub fn batch_in_process(
    path: &Path,
    catalog: &Catalog,
    synchronous: &str,
    batch: usize,
    workspaces: u64,
    duration: Duration,
) -> Result<f64> {
    let db = NativeDb::open(path)?;
    db.set_synchronous(synchronous)?;
    let tag = format!("{}-nb{synchronous}{batch}", crate::run_tag());
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < duration {
        let events: Vec<UsageEvent> = (0..batch as u64)
            .map(|k| usage_event(&tag, done + k, workspaces))
            .collect();
        let results = block_on(ledger::usage::record_batch(
            &db,
            catalog,
            &events,
            crate::data::now_secs(),
        ))
        .map_err(|e| anyhow::anyhow!("batch: {e}"))?;
        done += results.iter().filter(|r| r.is_ok()).count() as u64;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// The native HTTP baseline server, running on its own 2-thread runtime until dropped.
pub struct NativeServer {
    /// `IP:PORT`.
    pub addr: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct ServerState {
    db: Mutex<NativeDb>,
    catalog: Catalog,
    service_key: String,
}

/// Serves `POST /v1/usage` and `POST /v1/calls` over `db_path` with the service key.
pub fn start_server(db_path: PathBuf, catalog: Catalog, service_key: &str) -> Result<NativeServer> {
    let db = NativeDb::open(&db_path)?;
    let state = Arc::new(ServerState {
        db: Mutex::new(db),
        catalog,
        service_key: format!("Bearer {service_key}"),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let state = Arc::clone(&state);
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let state = Arc::clone(&state);
                                async move { Ok::<_, Infallible>(handle(&state, req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
        });
    });
    Ok(NativeServer {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

fn reply(status: u16, body: String) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(
    state: &ServerState,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == state.service_key.as_bytes());
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(400, r#"{"error":{"code":"malformed_request"}}"#.into()),
    };
    if !authorized {
        return reply(401, r#"{"error":{"code":"unauthorized"}}"#.into());
    }
    let now = crate::data::now_secs();
    // The connection is shared: one ledger operation at a time holds it (SQLite has one writer).
    let outcome = tokio::task::block_in_place(|| -> Result<(u16, String), String> {
        let db = state.db.lock().map_err(|_| "poisoned".to_owned())?;
        match (method, path.as_str()) {
            (http::Method::POST, "/v1/usage") => {
                let event: UsageEvent = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                let result = block_on(ledger::usage::record(&*db, &state.catalog, &event, now))
                    .map_err(|e| e.to_string())?;
                Ok((
                    200,
                    serde_json::to_string(&result).map_err(|e| e.to_string())?,
                ))
            }
            (http::Method::POST, "/v1/calls") => {
                let request: CallRequest =
                    serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                let result = block_on(ledger::calls::authorize(
                    &*db,
                    &state.catalog,
                    &request,
                    now,
                ))
                .map_err(|e| e.to_string())?;
                Ok((
                    201,
                    serde_json::to_string(&result).map_err(|e| e.to_string())?,
                ))
            }
            _ => Err("not_found".into()),
        }
    });
    match outcome {
        Ok((status, body)) => reply(status, body),
        Err(message) => reply(
            422,
            serde_json::json!({"error": {"code": "refused", "message": message}}).to_string(),
        ),
    }
}

/// The database file of a fresh copy of the small set, for one native run.
pub fn fresh_copy(cached_dir: &Path, into: &Path) -> Result<PathBuf> {
    crate::data::copy_into(cached_dir, into).context("copy bench data")?;
    Ok(crate::data::db_file(into))
}
