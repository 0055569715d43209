//! Reliability: crash safety. The host is killed with SIGKILL at random moments while clients
//! run a mixed load (debits with `Idempotency-Key`, batches, calls authorized then ended, top-up
//! webhooks signed as Stripe signs them, the renewal job through its HTTP twin for a dozen due
//! workspaces), then restarted on the same state directory. After every kill, every ledger invariant holds on the files the
//! dead host left. The clients replay every request they saw no answer to, with the same ids,
//! until each is answered: in the end every operation took effect exactly once, so the balances
//! equal the serial total to the micro-credit, and replaying everything once more moves nothing.
//!
//! Bounded: 4 kills and 240 operations in CI; `RELIABILITY_SOAK=1` runs 12 kills, 1,200.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use e2e::HostOptions;
use e2e::api::{App, Role, SERVICE_KEY, expect, json_of};
use e2e::reliability::{
    Rng, Scenario, check_invariants_at, micros, soak,
    webhooks::{payment_succeeded, pending_topup, signature_header},
};
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "whsec_reliability_crash";
/// The load's workspace: plan credits far beyond what the load spends, so nothing is refused.
const WS: &str = "ws-load";
/// Workspaces whose cycle is due: the renewal job renews them during the load.
const RENEW_WORKSPACES: usize = 12;

fn renew_ws(n: usize) -> String {
    format!("ws-renew-{n}")
}
const BIG_PLAN_CREDITS: i64 = 1_000_000;
const RENEW_PLAN_CREDITS: i64 = 100;
/// Every top-up: 20 USD = 20 credits.
const TOPUP_MICROS: i64 = 20_000_000;

fn catalog() -> Value {
    let mut catalog = e2e::api::test_catalog(
        json!([
            {"id": "big", "name": "Big", "price": "0", "monthly_credits": BIG_PLAN_CREDITS.to_string()},
            {"id": "small", "name": "Small", "price": "0", "monthly_credits": RENEW_PLAN_CREDITS.to_string()}
        ]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.1"},
            {"kind": "message", "price": "0.01"},
            {"kind": "ai_task", "price": "0.25"}
        ]),
    );
    catalog["settings"]["hold_timeout_secs"] = 600.into();
    catalog["settings"]["low_balance_threshold"] = "1".into();
    catalog
}

/// One client operation; each is retried until answered.
#[derive(Debug, Clone)]
enum Op {
    /// `POST /v1/usage` with `Idempotency-Key` = the event id.
    Debit { id: String, kind: &'static str },
    /// `POST /v1/usage/batch` of 5 messages.
    Batch { id: String },
    /// `POST /v1/calls` then `POST /v1/calls/{id}/end` after 61 s (2 started minutes).
    Call { id: String },
    /// `payment_intent.succeeded` for a pending top-up.
    Webhook { n: usize },
    /// `POST /internal/jobs/renew-cycles`.
    Renew,
}

impl Op {
    /// What this operation takes from the plan credits of [`WS`], in micro-credits.
    fn cost_micros(&self) -> i64 {
        match self {
            Op::Debit {
                kind: "ai_task", ..
            } => 250_000,
            Op::Debit { .. } => 10_000,
            Op::Batch { .. } => 50_000,
            Op::Call { .. } => 200_000,
            Op::Webhook { .. } | Op::Renew => 0,
        }
    }
}

/// The app's address, which changes at every restart.
struct Target {
    base_url: RwLock<String>,
    requests: AtomicU64,
    retries: AtomicU64,
    in_progress_conflicts: AtomicU64,
}

/// What a request came to.
enum Outcome {
    Answered(e2e::Reply),
    /// No answer (connection refused or cut, host down): replay it.
    Lost,
}

impl Target {
    fn send(&self, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Outcome {
        let url = format!(
            "{}{path}",
            self.base_url.read().map(|u| u.clone()).unwrap_or_default()
        );
        self.requests.fetch_add(1, Ordering::Relaxed);
        match e2e::request(method, &url, Some(body), headers) {
            Ok(reply) => Outcome::Answered(reply),
            Err(_) => Outcome::Lost,
        }
    }

    /// Sends until answered with a final status; 409 `in_progress` and 503 are answers that
    /// say "try again", as is no answer at all.
    fn until_answered(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<e2e::Reply> {
        loop {
            match self.send(method, path, body, headers) {
                Outcome::Answered(reply)
                    if reply.status == 409
                        && json_of(&reply)["error"]["reason"] == "in_progress" =>
                {
                    self.in_progress_conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Answered(reply) if reply.status == 503 => {}
                Outcome::Answered(reply) => return Ok(reply),
                Outcome::Lost => {}
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            if Instant::now() >= deadline {
                bail!("{method} {path} still unanswered at the deadline");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn service_headers(key: Option<&str>) -> Vec<(String, String)> {
        let mut headers = vec![("authorization".to_owned(), format!("Bearer {SERVICE_KEY}"))];
        if let Some(key) = key {
            headers.push(("idempotency-key".to_owned(), key.to_owned()));
        }
        headers
    }

    /// Runs `op` to completion; checks what it answered.
    fn run(&self, op: &Op, deadline: Instant) -> Result<()> {
        let call = |method: &str, path: &str, body: &Value, key: Option<&str>| {
            let headers = Self::service_headers(key);
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.until_answered(method, path, &body.to_string(), &headers, deadline)
        };
        match op {
            Op::Debit { id, kind } => {
                let event = json!({"id": id, "workspace_id": WS, "agent_id": "agent-1",
                    "kind": kind, "quantity": "1"});
                let reply = call("POST", "/v1/usage", &event, Some(id))?;
                let body = expect(&reply, 200, id)?;
                ensure!(
                    micros(body["charged"].as_str().unwrap_or(""))? == op.cost_micros(),
                    "{id}: {body}"
                );
            }
            Op::Batch { id } => {
                let events: Vec<Value> = (0..5)
                    .map(|n| {
                        json!({"id": format!("{id}-{n}"), "workspace_id": WS,
                        "agent_id": "agent-2", "kind": "message", "quantity": "1"})
                    })
                    .collect();
                let reply = call(
                    "POST",
                    "/v1/usage/batch",
                    &json!({"events": events}),
                    Some(id),
                )?;
                let body = expect(&reply, 200, id)?;
                let results = body["results"].as_array().context("results")?;
                ensure!(
                    results.len() == 5 && results.iter().all(|r| r["status"] == "ok"),
                    "{id}: {body}"
                );
            }
            Op::Call { id } => {
                let authorize = json!({"workspace_id": WS, "agent_id": "agent-3", "call_id": id,
                    "direction": "outbound", "to": "+14155550123", "from": "+14155550999"});
                let reply = call("POST", "/v1/calls", &authorize, None)?;
                ensure!(
                    reply.status == 201 || reply.status == 200,
                    "authorize {id}: {} {}",
                    reply.status,
                    reply.body
                );
                let reply = call(
                    "POST",
                    &format!("/v1/calls/{id}/end"),
                    &json!({"duration_seconds": 61}),
                    None,
                )?;
                let body = expect(&reply, 200, id)?;
                ensure!(body["charged"] == "0.2", "end {id}: {body}");
            }
            Op::Webhook { n } => {
                let payload = payment_succeeded(
                    &format!("evt_crash_{n}"),
                    &format!("pi_crash_{n}"),
                    &format!("tp-crash-{n}"),
                    TOPUP_MICROS / 10_000,
                )?;
                loop {
                    let header = signature_header(WEBHOOK_SECRET, &payload);
                    let reply = self.until_answered(
                        "POST",
                        "/webhooks/stripe",
                        &payload,
                        &[
                            ("stripe-signature", &header),
                            ("content-type", "application/json"),
                        ],
                        deadline,
                    )?;
                    // Stripe retries anything but a 2xx.
                    if reply.status == 200 {
                        break;
                    }
                    ensure!(
                        reply.status < 500 || reply.status == 503,
                        "webhook {n}: {} {}",
                        reply.status,
                        reply.body
                    );
                }
            }
            Op::Renew => {
                let reply = call("POST", "/internal/jobs/renew-cycles", &json!({}), None)?;
                expect(&reply, 200, "renew")?;
            }
        }
        Ok(())
    }
}

fn start(state_dir: &Path) -> Result<App> {
    App::start_with(
        HostOptions {
            state_dir: Some(state_dir.to_path_buf()),
            ..HostOptions::default()
        }
        .env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    )
}

/// The workspace's billing summary as its owner sees it.
fn billing(app: &App, ws: &str) -> Result<Value> {
    expect(&app.owner(ws, "GET", "/billing", None)?, 200, "billing")
}

/// Sets up both workspaces; returns the operations, shuffled.
fn prepare(app: &App, state_dir: &Path, rng: &mut Rng, operations: usize) -> Result<Vec<Op>> {
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog()))?,
        200,
        "catalog",
    )?;
    let mut workspaces = vec![(WS.to_owned(), "big")];
    workspaces.extend((0..RENEW_WORKSPACES).map(|n| (renew_ws(n), "small")));
    for (ws, plan) in &workspaces {
        app.provision(ws)?;
        let due = *plan == "small";
        if due {
            let clock = json!({"frozen_time": "2030-01-10T10:00:00Z"});
            expect(
                &app.service("POST", &format!("/v1/test-clocks/{ws}"), Some(&clock))?,
                200,
                "clock",
            )?;
        }
        let reply = app.owner(ws, "POST", "/subscription", Some(&json!({"plan_id": plan})))?;
        expect(&reply, 200, "subscribe")?;
        if due {
            // It spends some credits, then its cycle ends.
            let spend = json!({"id": "renew-spend", "workspace_id": ws, "agent_id": "a",
                "kind": "ai_task", "quantity": "1", "occurred_at": "2030-01-10T10:00:00Z"});
            expect(
                &app.service("POST", "/v1/usage", Some(&spend))?,
                200,
                "spend",
            )?;
            let clock = json!({"frozen_time": "2030-02-11T10:00:00Z"});
            expect(
                &app.service("POST", &format!("/v1/test-clocks/{ws}"), Some(&clock))?,
                200,
                "clock",
            )?;
        }
    }

    let webhooks = operations / 12;
    for n in 0..webhooks {
        pending_topup(
            state_dir,
            WS,
            &format!("tp-crash-{n}"),
            TOPUP_MICROS,
            &format!("pi_crash_{n}"),
        )?;
    }
    let mut ops: Vec<Op> = (0..webhooks).map(|n| Op::Webhook { n }).collect();
    ops.extend((0..3).map(|_| Op::Renew));
    let mut n = 0;
    while ops.len() < operations {
        n += 1;
        ops.push(match n % 6 {
            0 => Op::Batch {
                id: format!("batch-{n}"),
            },
            1 | 2 => Op::Call {
                id: format!("call-{n}"),
            },
            3 => Op::Debit {
                id: format!("ai-{n}"),
                kind: "ai_task",
            },
            _ => Op::Debit {
                id: format!("msg-{n}"),
                kind: "message",
            },
        });
    }
    rng.shuffle(&mut ops);
    Ok(ops)
}

#[test]
fn sigkill_at_random_moments_loses_and_doubles_nothing() -> Result<()> {
    let scenario = Scenario::new("SIGKILL during mixed load, replay");
    let (kills, operations) = if soak() { (12, 1_200) } else { (4, 240) };
    let mut rng = Rng::from_env("crash");
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    let mut app = start(&state_dir)?;
    let ops = prepare(&app, &state_dir, &mut rng, operations)?;
    let expected_cost: i64 = ops.iter().map(Op::cost_micros).sum();
    let topups = ops
        .iter()
        .filter(|op| matches!(op, Op::Webhook { .. }))
        .count() as i64;

    let target = Target {
        base_url: RwLock::new(app.host.base_url().to_owned()),
        requests: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        in_progress_conflicts: AtomicU64::new(0),
    };
    let queue = Mutex::new(ops.iter().cloned().collect::<VecDeque<Op>>());
    let finished = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(if soak() { 900 } else { 240 });
    let mut kill_log = Vec::new();
    let mut last_restart = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (target, queue, finished) = (&target, &queue, &finished);
                scope.spawn(move || -> Result<()> {
                    loop {
                        let Some(op) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                            return Ok(());
                        };
                        target
                            .run(&op, deadline)
                            .with_context(|| format!("{op:?}"))?;
                        finished.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // The killer: SIGKILL at a random moment while operations remain, check the files the
        // dead host left, restart on them.
        for kill in 0..kills {
            // Let the clients get some work done since the last restart, then strike at a
            // random moment within the next 80 ms.
            let progress = finished.load(Ordering::Relaxed) + 10 + rng.below(30);
            while finished.load(Ordering::Relaxed) < progress
                && (finished.load(Ordering::Relaxed) as usize) < ops.len()
                && Instant::now() < deadline
                && !workers.iter().all(|worker| worker.is_finished())
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let wait_ms = rng.below(80);
            std::thread::sleep(Duration::from_millis(wait_ms));
            if finished.load(Ordering::Relaxed) as usize >= ops.len() {
                break;
            }
            let before = finished.load(Ordering::Relaxed);
            app.host.kill();
            check_invariants_at(&state_dir).with_context(|| format!("after kill {kill}"))?;
            scenario.invariants_checked();
            app = start(&state_dir)?;
            last_restart = Instant::now();
            if let Ok(mut url) = target.base_url.write() {
                *url = app.host.base_url().to_owned();
            }
            kill_log.push((wait_ms, before));
        }
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        Ok(())
    })?;
    scenario.faults(kill_log.len() as u64);
    // Replays of requests the dead host left half done must not wait for anything to expire.
    let recovery = last_restart.elapsed();
    ensure!(
        recovery < Duration::from_secs(30),
        "the clients needed {recovery:?} after the last restart to finish ({} answers were 409 in_progress)",
        target.in_progress_conflicts.load(Ordering::Relaxed)
    );
    ensure!(!kill_log.is_empty(), "the load ended before the first kill");

    // Every operation took effect exactly once.
    let check = |app: &App| -> Result<()> {
        let summary = billing(app, WS)?;
        let plan = micros(summary["plan_credits_remaining"].as_str().unwrap_or(""))?;
        let wallet = micros(summary["wallet_balance"].as_str().unwrap_or(""))?;
        ensure!(
            plan == BIG_PLAN_CREDITS * 1_000_000 - expected_cost,
            "plan credits {plan}, expected {} ({summary})",
            BIG_PLAN_CREDITS * 1_000_000 - expected_cost
        );
        ensure!(
            wallet == topups * TOPUP_MICROS,
            "wallet {wallet}, expected {} ({summary})",
            topups * TOPUP_MICROS
        );
        ensure!(summary["held"] == "0", "holds left: {summary}");
        // A pass that a kill cut short left the rest for the next pass: finish it.
        let reply = app.service("POST", "/internal/jobs/renew-cycles", None)?;
        ensure!(
            expect(&reply, 200, "renew")?["more"] == false,
            "{}",
            reply.body
        );
        for n in 0..RENEW_WORKSPACES {
            let ws = renew_ws(n);
            let renewed = billing(app, &ws)?;
            ensure!(
                micros(renewed["plan_credits_remaining"].as_str().unwrap_or(""))?
                    == RENEW_PLAN_CREDITS * 1_000_000,
                "{ws} renewed once: {renewed}"
            );
            let grants = expect(
                &app.user(
                    &ws,
                    Role::Owner,
                    "GET",
                    &format!("/v1/workspaces/{ws}/transactions?type=plan_grant&limit=100"),
                    None,
                )?,
                200,
                "grants",
            )?;
            ensure!(
                grants["data"].as_array().map(Vec::len) == Some(2),
                "{ws}: the first cycle's grant and one renewal: {grants}"
            );
        }
        app.check_invariants()
    };
    check(&app)?;
    scenario.invariants_checked();
    // Replaying every operation once more moves nothing.
    let again = Instant::now() + Duration::from_secs(120);
    for op in &ops {
        target.run(op, again)?;
    }
    check(&app)?;
    scenario.invariants_checked();
    let requests = target.requests.load(Ordering::Relaxed);
    scenario.requests(requests);
    eprintln!(
        "crash: {} kills (ms after the progress mark, operations done): {kill_log:?}; {} operations, {requests} requests, {} replays, {} in-progress conflicts",
        kill_log.len(),
        ops.len(),
        target.retries.load(Ordering::Relaxed),
        target.in_progress_conflicts.load(Ordering::Relaxed),
    );
    scenario.passed();
    Ok(())
}
