//! Reliability: the key-value store wiped under load (issue 26, item 4). SQL is the truth.
//!
//! The key-value store holds caches only: the service routes' `Idempotency-Key` records (the
//! first response, replayed), the webhook's "event seen" marks, the sweep's cursor. Every money
//! movement is idempotent in SQLite by its own id. So losing the whole store, again and again
//! while clients send and resend requests, may make the app run a request again, and that run
//! must move nothing: every operation here is sent twice at once and once more after, while
//! the store is wiped every few milliseconds (`FLUSHALL` on a real Redis; every row of the
//! embedded store's SQLite file deleted), and in the end every debit, batch, call, grant and
//! top-up took effect exactly once, to the micro-credit, and every answer to a resent request
//! is the first one's.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use e2e::HostOptions;
use e2e::api::{App, expect, json_of};
use e2e::reliability::load::{self, GRANT_MICROS, Op, PLAN_CREDITS, Request, TOPUP_MICROS};
use e2e::reliability::{Scenario, micros, soak, webhooks::signature_header};
use e2e::stores::{Redis, redis_store, write_runtime_config};
use ledger::Storage as _;
use serde_json::Value;

const WEBHOOK_SECRET: &str = "whsec_reliability_kv";
const WS: &str = "ws-kv";
/// Names the webhooks' objects (`evt_kv_N`, `tp-kv-N`).
const TAG: &str = "kv";
const CLIENTS: usize = 4;
/// How often the store is wiped while the clients run.
const WIPE_EVERY: Duration = Duration::from_millis(10);

/// What every answer to request `step` of `op` must agree on, from its body.
trait AnswerKey {
    fn answer_key(&self, step: usize, body: &Value) -> Result<String>;
}

impl AnswerKey for Op {
    fn answer_key(&self, step: usize, body: &Value) -> Result<String> {
        Ok(match (self, step) {
            (Op::Debit { .. }, _) => {
                let charged = micros(body["charged"].as_str().unwrap_or(""))?;
                ensure!(charged == self.cost_micros(), "{self:?}: {body}");
                body["charged"].to_string()
            }
            (Op::Batch { .. }, _) => {
                let results = body["results"].as_array().context("results")?;
                ensure!(
                    results.len() == 5
                        && results
                            .iter()
                            .all(|r| r["status"] == "ok" && r["charged"] == "0.01"),
                    "{self:?}: {body}"
                );
                "5 ok".to_owned()
            }
            (Op::Call { .. }, 0) => body["call_id"].to_string(),
            (Op::Call { .. }, _) => {
                ensure!(body["charged"] == "0.2", "{self:?}: {body}");
                body["charged"].to_string()
            }
            (Op::Grant { .. }, _) => {
                ensure!(body["amount"] == "1", "{self:?}: {body}");
                body["id"].to_string()
            }
            (Op::Webhook { .. }, _) => {
                ensure!(
                    body["outcome"] == "applied" || body["outcome"] == "duplicate",
                    "{self:?}: answered 200 without applying the event: {body}"
                );
                "received".to_owned()
            }
        })
    }
}

struct Clients<'a> {
    app: &'a App,
    requests: AtomicU64,
    retries: AtomicU64,
    /// Resent requests answered from the store's record (`Idempotent-Replayed`, or the
    /// webhook's "duplicate").
    from_record: AtomicU64,
    /// Resent requests run again because their record was gone: the ledger's own idempotency
    /// answered them.
    run_again: AtomicU64,
}

/// Whether an answer came from the store's record rather than a run of the request.
fn from_record(request: &Request, reply: &e2e::Reply) -> bool {
    if request.is_webhook() {
        json_of(reply)["outcome"] == "duplicate"
    } else {
        reply.header("idempotent-replayed") == Some("true")
    }
}

impl Clients<'_> {
    /// Sends one request until it has a final answer (409 `in_progress` and 503 say "again");
    /// returns its body and whether it came from the store's record.
    fn until_answered(&self, request: &Request) -> Result<(Value, bool)> {
        let (path, body) = (request.path.as_str(), request.body.as_str());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut headers = request.headers.clone();
            if request.is_webhook() {
                headers.push(("stripe-signature", signature_header(WEBHOOK_SECRET, body)));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.requests.fetch_add(1, Ordering::Relaxed);
            let reply = e2e::request("POST", &self.app.host.url(path), Some(body), &headers)
                .with_context(|| format!("POST {path}: no answer"))?;
            let again = (reply.status == 409
                && json_of(&reply)["error"]["reason"] == "in_progress")
                || reply.status == 503;
            if !again {
                ensure!(
                    reply.status == 200 || reply.status == 201,
                    "POST {path}: {} {}",
                    reply.status,
                    reply.body
                );
                return Ok((json_of(&reply), from_record(request, &reply)));
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            ensure!(
                Instant::now() < deadline,
                "POST {path} unanswered at the deadline"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Each request of `op` twice at once, then once more; all three answers must agree.
    fn run(&self, op: &Op) -> Result<()> {
        for (step, request) in op.requests(WS, TAG)?.iter().enumerate() {
            let (a, b) = std::thread::scope(|scope| {
                let first = scope.spawn(|| self.until_answered(request));
                let second = self.until_answered(request);
                (first.join(), second)
            });
            let (a, a_recorded) = a.map_err(|_| anyhow::anyhow!("a client panicked"))??;
            let (b, b_recorded) = b?;
            let (c, c_recorded) = self.until_answered(request)?;
            // Calls have no key: the ledger answers every resend itself.
            if !matches!(op, Op::Call { .. }) {
                let recorded =
                    u64::from(a_recorded) + u64::from(b_recorded) + u64::from(c_recorded);
                self.from_record.fetch_add(recorded, Ordering::Relaxed);
                // One of the three ran first; any other that ran found no record.
                self.run_again
                    .fetch_add(3 - recorded - 1, Ordering::Relaxed);
            }
            let keys = [
                op.answer_key(step, &a)?,
                op.answer_key(step, &b)?,
                op.answer_key(step, &c)?,
            ];
            ensure!(
                keys[0] == keys[1] && keys[1] == keys[2],
                "{op:?} step {step}: answers differ: {a} / {b} / {c}"
            );
        }
        Ok(())
    }
}

/// Runs the load on `app` while `wipe` empties the store every WIPE_EVERY (it answers whether it
/// did: a busy store is wiped next time); checks the books.
fn wiped_under_load(
    scenario: &str,
    app: &App,
    wipe: &(dyn Fn() -> Result<bool> + Sync),
) -> Result<()> {
    let scenario = Scenario::new(scenario);
    let operations = if soak() { 800 } else { 160 };
    let ops: Vec<Op> = (0..operations).map(|n| Op::of(n, true)).collect();
    load::prepare(app, WS, TAG, &ops)?;
    let clients = Clients {
        app,
        requests: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        from_record: AtomicU64::new(0),
        run_again: AtomicU64::new(0),
    };
    let queue = Mutex::new(ops.iter().cloned().collect::<VecDeque<Op>>());
    let done = AtomicBool::new(false);
    let wipes = AtomicU64::new(0);
    std::thread::scope(|scope| -> Result<()> {
        let wiper = scope.spawn(|| -> Result<()> {
            while !done.load(Ordering::Relaxed) {
                if wipe()? {
                    wipes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(WIPE_EVERY);
            }
            Ok(())
        });
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while let Some(op) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                        clients.run(&op).with_context(|| format!("{op:?}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut result = Ok(());
        for worker in workers {
            let joined = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))
                .and_then(|r| r);
            if result.is_ok() {
                result = joined;
            }
        }
        done.store(true, Ordering::Relaxed);
        wiper
            .join()
            .map_err(|_| anyhow::anyhow!("the wiper panicked"))??;
        result
    })?;
    let wipes = wipes.load(Ordering::Relaxed);
    let (from_record, run_again) = (
        clients.from_record.load(Ordering::Relaxed),
        clients.run_again.load(Ordering::Relaxed),
    );
    // Without both, the wipes did not matter (or the records did not): the test proves nothing.
    ensure!(
        run_again >= 5 && from_record >= 5,
        "of the resent requests {from_record} were answered from the store and {run_again} ran again ({wipes} wipes)"
    );
    scenario.faults(wipes);

    let expected_cost: i64 = ops.iter().map(Op::cost_micros).sum();
    let count = |f: fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count() as i64;
    let topups = count(|op| matches!(op, Op::Webhook { .. }));
    let grants = count(|op| matches!(op, Op::Grant { .. }));
    let summary = expect(&app.owner(WS, "GET", "/billing", None)?, 200, "billing")?;
    let plan = micros(summary["plan_credits_remaining"].as_str().unwrap_or(""))?;
    let wallet = micros(summary["wallet_balance"].as_str().unwrap_or(""))?;
    let granted = micros(summary["grant_credits_remaining"].as_str().unwrap_or(""))?;
    ensure!(
        plan == PLAN_CREDITS * 1_000_000 - expected_cost
            && wallet == topups * TOPUP_MICROS
            && granted == grants * GRANT_MICROS
            && summary["held"] == "0",
        "expected plan {}, wallet {}, grants {}, nothing held: {summary}",
        PLAN_CREDITS * 1_000_000 - expected_cost,
        topups * TOPUP_MICROS,
        grants * GRANT_MICROS
    );
    let listed = expect(
        &app.service(
            "GET",
            &format!("/v1/grants?workspace_id={WS}&limit=100"),
            None,
        )?,
        200,
        "grants",
    )?;
    let listed = listed["grants"].as_array().map_or(0, Vec::len) as i64;
    ensure!(listed == grants, "{listed} grants listed, {grants} made");
    app.check_invariants()?;
    scenario.invariants_checked();
    let requests = clients.requests.load(Ordering::Relaxed);
    scenario.requests(requests);
    eprintln!(
        "key-value store wiped {wipes} times under {operations} operations ({requests} requests, {} answered 'again'; of the resent requests {from_record} answered from the store, {run_again} run again as their record was gone): 0 lost, 0 doubled",
        clients.retries.load(Ordering::Relaxed)
    );
    scenario.passed();
    Ok(())
}

fn app_options() -> HostOptions {
    HostOptions::default().env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
}

#[test]
fn redis_wiped_under_load_loses_and_doubles_nothing() -> Result<()> {
    let redis = Redis::start()?;
    let dir = tempfile::tempdir()?;
    let config = write_runtime_config(dir.path(), &redis_store(&redis.url()))?;
    let app = App::start_on(&config, app_options())?;
    wiped_under_load("key-value wiped under load (Redis)", &app, &|| {
        redis.flush_all().map(|()| true)
    })
}

#[test]
fn the_embedded_store_wiped_under_load_loses_and_doubles_nothing() -> Result<()> {
    let app = App::start_with(app_options())?;
    let path = app.host.state_dir().join("sqlite_key_value.db");
    wiped_under_load("key-value wiped under load (embedded)", &app, &|| {
        use ledger::storage::StorageErrorKind::Busy;
        if !path.exists() {
            return Ok(false);
        }
        let wiped = ledger::native::NativeDb::open(&path).and_then(|db| {
            futures::executor::block_on(db.execute("DELETE FROM spin_key_value", &[]))
        });
        match wiped {
            Ok(()) => Ok(true),
            // The host is writing it (at the open's pragmas or the delete): next time.
            Err(error) if error.kind == Busy => Ok(false),
            Err(error) if error.to_string().contains("no such table") => Ok(false),
            Err(error) => bail!("wiping the store: {error}"),
        }
    })
}
