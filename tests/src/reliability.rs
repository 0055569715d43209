//! Helpers of the reliability suite (`tests/tests/reliability_*.rs`): a fingerprint of everything
//! the app stores (to prove that refused requests write nothing), the per-scenario summary the
//! test script prints at the end, raw-socket clients for slow and hostile HTTP, and the soak flag.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ledger::native::NativeDb;
use ledger::{SqlValue, Storage as _};
use sha2::{Digest as _, Sha256};

/// Whether the long runs were asked for (`RELIABILITY_SOAK=1`).
pub fn soak() -> bool {
    std::env::var("RELIABILITY_SOAK").is_ok_and(|v| v == "1" || v == "true")
}

/// Every table of both stores: row count and a hash of the rows, by `file/table`.
///
/// Two equal fingerprints mean the app wrote nothing in between (SQLite and key-value store).
pub fn fingerprint(state_dir: &Path) -> Result<BTreeMap<String, (usize, String)>> {
    let mut tables = BTreeMap::new();
    for file in ["sqlite_db.db", "sqlite_key_value.db"] {
        let path = state_dir.join(file);
        if !path.exists() {
            continue;
        }
        let db = NativeDb::open(&path).with_context(|| format!("open {}", path.display()))?;
        let names = block_on(db.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            &[],
        ))?;
        for row in names {
            let Some(SqlValue::Text(name)) = row.first() else {
                continue;
            };
            let rows = block_on(db.query(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"), &[]))
                .or_else(|_| block_on(db.query(&format!("SELECT * FROM \"{name}\""), &[])))?;
            let mut hash = Sha256::new();
            for row in &rows {
                hash.update(format!("{row:?}\n").as_bytes());
            }
            let digest: String = hash
                .finalize()
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect();
            tables.insert(format!("{file}/{name}"), (rows.len(), digest));
        }
    }
    Ok(tables)
}

/// The tables whose content differs between two fingerprints.
pub fn changed_tables(
    before: &BTreeMap<String, (usize, String)>,
    after: &BTreeMap<String, (usize, String)>,
) -> Vec<String> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .map(|name| {
            format!(
                "{name}: {:?} -> {:?}",
                before.get(name).map(|t| t.0),
                after.get(name).map(|t| t.0)
            )
        })
        .collect()
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    futures::executor::block_on(future)
}

/// Where the scenarios' summary lines go: `$RELIABILITY_SUMMARY`, else
/// `$CARGO_TARGET_DIR/reliability-summary.tsv` (or the workspace's `target/`).
pub fn summary_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RELIABILITY_SUMMARY") {
        return PathBuf::from(path);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
        .join("reliability-summary.tsv")
}

/// One reliability scenario's counters; written as one summary line when dropped. A scenario
/// dropped without [`Scenario::passed`] (an error or a panic) counts one failure.
pub struct Scenario {
    name: String,
    started: Instant,
    requests: AtomicU64,
    faults: AtomicU64,
    invariant_checks: AtomicU64,
    failures: AtomicU64,
    passed: bool,
}

impl Scenario {
    /// Starts counting for scenario `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            started: Instant::now(),
            requests: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            invariant_checks: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            passed: false,
        }
    }

    /// Counts `n` requests sent.
    pub fn requests(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` faults injected (kills, hostile inputs, Stripe errors, ...).
    pub fn faults(&self, n: u64) {
        self.faults.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one run of every ledger invariant (each run checks [`ledger::audit::invariant_count`]).
    pub fn invariants_checked(&self) {
        self.invariant_checks
            .fetch_add(ledger::audit::invariant_count() as u64, Ordering::Relaxed);
    }

    /// Marks the scenario as passed.
    pub fn passed(mut self) {
        self.passed = true;
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let failures = self.failures.load(Ordering::Relaxed) + u64::from(!self.passed);
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\t{:.1}\n",
            self.name,
            self.requests.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
            self.invariant_checks.load(Ordering::Relaxed),
            failures,
            self.started.elapsed().as_secs_f64()
        );
        let path = summary_path();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// What a raw connection saw after a hostile client stopped sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cutoff {
    /// The server answered (status) and/or closed the connection within the wait.
    Closed(Option<u16>),
    /// Still open, nothing received, when the wait ended.
    StillOpen,
}

/// Opens a raw connection to `base_url` (`http://IP:PORT`).
pub fn connect(base_url: &str) -> Result<TcpStream> {
    let address = base_url
        .strip_prefix("http://")
        .context("base url is not http://")?;
    let stream = TcpStream::connect(address).with_context(|| format!("connect {address}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Waits up to `wait` for the server to answer or close `stream`; reads whatever comes.
pub fn wait_for_cutoff(stream: &mut TcpStream, wait: Duration) -> Result<Cutoff> {
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(if received.is_empty() {
                Cutoff::StillOpen
            } else {
                Cutoff::Closed(status_of(&received))
            });
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(Cutoff::Closed(status_of(&received))),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(Cutoff::Closed(status_of(&received))),
        }
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends `request` over a raw connection and reads the answer until the server closes it or
/// `wait` elapses; answers the status line's code, if any.
pub fn raw_exchange(base_url: &str, request: &[u8], wait: Duration) -> Result<Option<u16>> {
    let mut stream = connect(base_url)?;
    // The server may close before reading all of it (that is one of the answers tested).
    let _ = stream.write_all(request);
    let _ = stream.flush();
    match wait_for_cutoff(&mut stream, wait)? {
        Cutoff::Closed(status) => Ok(status),
        Cutoff::StillOpen => Ok(None),
    }
}

/// Runs every ledger invariant on the database in `state_dir` (the host may be dead).
pub fn check_invariants_at(state_dir: &Path) -> Result<()> {
    let path = state_dir.join("sqlite_db.db");
    let db = NativeDb::open(&path).with_context(|| format!("open {}", path.display()))?;
    let violations = block_on(ledger::audit::check(&db))?;
    anyhow::ensure!(
        violations.is_empty(),
        "ledger invariants broken: {violations:#?}"
    );
    Ok(())
}

/// A small deterministic random source (xorshift64*): the seed is printed so a failing
/// interleaving can be replayed with `RELIABILITY_SEED`.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `RELIABILITY_SEED`, else the clock; prints the seed.
    pub fn from_env(what: &str) -> Self {
        let seed = std::env::var("RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{what}: RELIABILITY_SEED={seed}");
        Self(seed.max(1))
    }

    /// The next number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }

    /// Shuffles `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A decimal string ("12.5", "-0.25") as micro-units.
pub fn micros(text: &str) -> Result<i64> {
    crate::api::micros_of(&serde_json::Value::from(text))
}

/// Stripe webhooks as Stripe signs them, built from Stripe's example objects
/// ([`crate::stripe::fixture`]), for ledger payments created natively.
pub mod webhooks {
    use super::*;
    use hmac::{Hmac, KeyInit as _, Mac as _};
    use serde_json::{Value, json};

    use crate::stripe::fixture;

    /// A `payment_intent.succeeded` event for our payment `payment_id` (amount in cents).
    pub fn payment_succeeded(
        event_id: &str,
        intent_id: &str,
        payment_id: &str,
        cents: i64,
    ) -> Result<String> {
        let mut intent = fixture("payment_intent")?;
        for (key, value) in [
            ("id", json!(intent_id)),
            ("amount", json!(cents)),
            ("amount_received", json!(cents)),
            ("currency", json!("usd")),
            ("status", json!("succeeded")),
            ("metadata", json!({"payment_id": payment_id})),
            ("last_payment_error", Value::Null),
        ] {
            intent[key] = value;
        }
        let mut event = fixture("event")?;
        event["id"] = event_id.into();
        event["type"] = "payment_intent.succeeded".into();
        event["created"] = crate::api::now_secs().into();
        event["data"]["object"] = intent;
        Ok(event.to_string())
    }

    /// The `Stripe-Signature` header for `payload` signed now with `secret`.
    pub fn signature_header(secret: &str, payload: &str) -> String {
        let t = crate::api::now_secs();
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return String::new();
        };
        mac.update(format!("{t}.{payload}").as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("t={t},v1={hex}")
    }

    /// Creates a pending top-up of `amount_money_micros` (money) natively on the host's database,
    /// attached to PaymentIntent `intent`, as the top-up route would have.
    pub fn pending_topup(
        state_dir: &Path,
        ws: &str,
        id: &str,
        amount_money_micros: i64,
        intent: &str,
    ) -> Result<()> {
        let db = NativeDb::open(state_dir.join("sqlite_db.db"))?;
        let now = crate::api::now_secs();
        block_on(async {
            ledger::schema::migrate(&db).await?;
            let catalog = ledger::catalog::load(&db).await?;
            ledger::payments::create_topup(
                &db,
                &catalog,
                ws,
                id,
                ledger::money::to_decimal(amount_money_micros),
                now,
            )
            .await?;
            ledger::payments::attach_intent(&db, id, intent, now).await?;
            Ok::<_, ledger::LedgerError>(())
        })?;
        Ok(())
    }
}

/// The mixed load of the storage-fault scenarios (`reliability_disk.rs`, `reliability_kv.rs`):
/// operations on one workspace whose plan pays for everything, each with a known price, sent as
/// the API's clients send them.
pub mod load {
    use anyhow::Result;
    use serde_json::{Value, json};

    use super::webhooks::payment_succeeded;
    use crate::api::SERVICE_KEY;

    /// Every top-up: 20 USD = 20 credits.
    pub const TOPUP_MICROS: i64 = 20_000_000;
    /// Every grant: 1 credit (never spent: the plan pays first).
    pub const GRANT_MICROS: i64 = 1_000_000;
    /// The plan's credits: far beyond what a load spends.
    pub const PLAN_CREDITS: i64 = 1_000_000;

    /// A catalog whose plan `big` grants [`PLAN_CREDITS`] for free, with the prices
    /// [`Op::cost_micros`] counts.
    pub fn catalog() -> Value {
        let mut catalog = crate::api::test_catalog(
            json!([
                {"id": "big", "name": "Big", "price": "0", "monthly_credits": PLAN_CREDITS.to_string()}
            ]),
            json!([
                {"kind": "call", "direction": "outbound", "price": "0.1"},
                {"kind": "message", "price": "0.01"},
                {"kind": "ai_task", "price": "0.25"}
            ]),
        );
        catalog["settings"]["hold_timeout_secs"] = 600.into();
        catalog
    }

    /// One client operation.
    #[derive(Debug, Clone)]
    pub enum Op {
        /// `POST /v1/usage` with `Idempotency-Key` = the event id.
        Debit {
            /// The event id.
            id: String,
            /// `message` or `ai_task`.
            kind: &'static str,
        },
        /// `POST /v1/usage/batch` of 5 messages, with `Idempotency-Key` = its id.
        Batch {
            /// The batch id (its events' ids end in `-0` to `-4`).
            id: String,
        },
        /// `POST /v1/calls` (no key: the call id is its own), then
        /// `POST /v1/calls/{id}/end` after 61 s (2 started minutes).
        Call {
            /// The call id.
            id: String,
        },
        /// `POST /v1/grants` of 1 credit with `Idempotency-Key` = `key`.
        Grant {
            /// The key.
            key: String,
        },
        /// `payment_intent.succeeded` for the pending top-up `tp-{tag}-{n}` (see
        /// [`super::webhooks::pending_topup`]), as event `evt_{tag}_{n}`.
        Webhook {
            /// Its number.
            n: usize,
        },
    }

    /// One request of an operation (a POST): path, body, and headers but the Stripe signature,
    /// which is made when it is sent ([`super::webhooks::signature_header`]).
    #[derive(Debug, Clone)]
    pub struct Request {
        /// The path.
        pub path: String,
        /// The body.
        pub body: String,
        /// Headers.
        pub headers: Vec<(&'static str, String)>,
    }

    impl Request {
        /// Whether it is a Stripe webhook (to be signed).
        pub fn is_webhook(&self) -> bool {
            self.path == "/webhooks/stripe"
        }
    }

    impl Op {
        /// Operation `n` of a mix: a seventh batches, two sevenths calls, a seventh webhooks,
        /// the rest debits; with `grants`, one in eight is a grant instead.
        pub fn of(n: usize, grants: bool) -> Self {
            let (slot, grant_slot) = if grants {
                (n % 8, Some(7))
            } else {
                (n % 7, None)
            };
            match slot {
                _ if Some(slot) == grant_slot => Op::Grant {
                    key: format!("grant-{n}"),
                },
                0 => Op::Batch {
                    id: format!("batch-{n}"),
                },
                1 | 2 => Op::Call {
                    id: format!("call-{n}"),
                },
                3 => Op::Webhook { n },
                4 => Op::Debit {
                    id: format!("ai-{n}"),
                    kind: "ai_task",
                },
                _ => Op::Debit {
                    id: format!("msg-{n}"),
                    kind: "message",
                },
            }
        }

        /// What it takes from the plan credits, in micro-credits.
        pub fn cost_micros(&self) -> i64 {
            match self {
                Op::Debit {
                    kind: "ai_task", ..
                } => 250_000,
                Op::Debit { .. } => 10_000,
                Op::Batch { .. } => 50_000,
                Op::Call { .. } => 200_000,
                Op::Grant { .. } | Op::Webhook { .. } => 0,
            }
        }

        /// How many requests it takes.
        pub fn steps(&self) -> usize {
            match self {
                Op::Call { .. } => 2,
                _ => 1,
            }
        }

        /// Its requests, in order, for workspace `ws`; `tag` names the webhook's objects.
        pub fn requests(&self, ws: &str, tag: &str) -> Result<Vec<Request>> {
            let service = || ("authorization", format!("Bearer {SERVICE_KEY}"));
            let request = |path: &str, body: Value, headers| Request {
                path: path.to_owned(),
                body: body.to_string(),
                headers,
            };
            Ok(match self {
                Op::Debit { id, kind } => vec![request(
                    "/v1/usage",
                    json!({"id": id, "workspace_id": ws, "agent_id": "agent-1", "kind": kind,
                        "quantity": "1"}),
                    vec![service(), ("idempotency-key", id.clone())],
                )],
                Op::Batch { id } => {
                    let events: Vec<Value> = (0..5)
                        .map(|n| {
                            json!({"id": format!("{id}-{n}"), "workspace_id": ws,
                            "agent_id": "agent-2", "kind": "message", "quantity": "1"})
                        })
                        .collect();
                    vec![request(
                        "/v1/usage/batch",
                        json!({"events": events}),
                        vec![service(), ("idempotency-key", id.clone())],
                    )]
                }
                Op::Call { id } => vec![
                    request(
                        "/v1/calls",
                        json!({"workspace_id": ws, "agent_id": "agent-3", "call_id": id,
                            "direction": "outbound", "to": "+14155550123",
                            "from": "+14155550999"}),
                        vec![service()],
                    ),
                    request(
                        &format!("/v1/calls/{id}/end"),
                        json!({"duration_seconds": 61}),
                        vec![service()],
                    ),
                ],
                Op::Grant { key } => vec![request(
                    "/v1/grants",
                    json!({"workspace_id": ws, "amount": "1", "category": "promotional",
                        "name": key}),
                    vec![service(), ("idempotency-key", key.clone())],
                )],
                Op::Webhook { n } => vec![Request {
                    path: "/webhooks/stripe".to_owned(),
                    body: payment_succeeded(
                        &format!("evt_{tag}_{n}"),
                        &format!("pi_{tag}_{n}"),
                        &format!("tp-{tag}-{n}"),
                        TOPUP_MICROS / 10_000,
                    )?,
                    headers: vec![("content-type", "application/json".to_owned())],
                }],
            })
        }
    }

    /// Sets `app` up for `ops` on workspace `ws`: the catalog, the workspace on plan `big`, and
    /// the pending top-up each webhook of `ops` settles (`tag` as in [`Op::requests`]).
    pub fn prepare(app: &crate::api::App, ws: &str, tag: &str, ops: &[Op]) -> Result<()> {
        use crate::api::expect;
        expect(
            &app.service("PUT", "/v1/catalog", Some(&catalog()))?,
            200,
            "catalog",
        )?;
        app.provision(ws)?;
        app.subscribe(ws, "big")?;
        for op in ops {
            if let Op::Webhook { n } = op {
                super::webhooks::pending_topup(
                    app.host.state_dir(),
                    ws,
                    &format!("tp-{tag}-{n}"),
                    TOPUP_MICROS,
                    &format!("pi_{tag}_{n}"),
                )?;
            }
        }
        Ok(())
    }
}
