//! Two replicas of the app over shared stores, as a platform runs it on several machines
//! (docs/deploy.md): two local hosts reading one runtime-config file, key-value on a real
//! `redis-server`, and the ledger on one SQLite file or, when `SQLD_BIN` names a `sqld`, on a
//! libSQL server. Every scenario ends with balances exact to the micro-credit and the ledger's
//! audit clean.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use e2e::HostOptions;
use e2e::api::{App, SERVICE_KEY, expect, expect_error, micros_of, test_catalog};
use e2e::hrana::HranaDb;
use e2e::stores::{Redis, Sqld};
use futures::executor::block_on;
use serde_json::{Value, json};

/// Where the ledger lives.
enum Sql {
    /// One SQLite file both replicas open (`type = "spin"` with a shared `path`).
    File(PathBuf),
    /// A `sqld` (`type = "libsql"`).
    Server(Sqld),
}

/// The stores and the runtime-config file every replica reads.
struct Stores {
    redis: Redis,
    sql: Sql,
    config: PathBuf,
    /// Replicas run on real Spin (this binary) instead of the local host.
    spin: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Stores {
    /// A Redis and a ledger file.
    fn on_file() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ledger = dir.path().join("shared");
        std::fs::create_dir_all(&ledger)?;
        Self::with(dir, Sql::File(ledger))
    }

    /// A Redis and a `sqld`, or `None` (after one line saying so) without `SQLD_BIN`.
    fn on_sqld(scenario: &str) -> Result<Option<Self>> {
        let Some(sqld) = Sqld::start()? else {
            println!("skipped: SQLD_BIN not set ({scenario} on libSQL)");
            return Ok(None);
        };
        Ok(Some(Self::with(tempfile::tempdir()?, Sql::Server(sqld))?))
    }

    fn with(dir: tempfile::TempDir, sql: Sql) -> Result<Self> {
        let redis = Redis::start()?;
        let database = match &sql {
            Sql::File(ledger) => format!(
                "[sqlite_database.default]\ntype = \"spin\"\npath = \"{}\"\n",
                ledger.join("sqlite_db.db").display()
            ),
            Sql::Server(sqld) => e2e::stores::libsql_database(&sqld.url()),
        };
        let config = e2e::stores::write_runtime_config(
            dir.path(),
            &format!("{database}\n{}", e2e::stores::redis_store(&redis.url())),
        )?;
        Ok(Self {
            redis,
            sql,
            config,
            spin: None,
            _dir: dir,
        })
    }

    /// The same stores, with replicas on real Spin.
    fn on_spin(mut self, bin: &std::path::Path) -> Self {
        self.spin = Some(bin.to_owned());
        self
    }

    fn replica(&self, extra: HostOptions) -> Result<App> {
        match &self.spin {
            Some(bin) => App::start_spin_on(bin, &self.config, extra),
            None => App::start_on(&self.config, extra),
        }
    }

    /// The ledger's invariants, on the store itself.
    fn audit(&self) -> Result<()> {
        let violations = match &self.sql {
            Sql::File(dir) => {
                let db = ledger::native::NativeDb::open(dir.join("sqlite_db.db"))?;
                block_on(ledger::audit::check(&db))?
            }
            Sql::Server(sqld) => block_on(ledger::audit::check(&HranaDb::new(&sqld.url())))?,
        };
        ensure!(
            violations.is_empty(),
            "ledger invariants broken: {violations:#?}"
        );
        Ok(())
    }

    /// The end of the libSQL server's log, for a failure's report.
    fn print_server_log(&self) {
        if let Sql::Server(sqld) = &self.sql {
            let log = sqld.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "sqld's log, last lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    fn restart_sql(&mut self) -> Result<()> {
        match &mut self.sql {
            Sql::File(_) => Ok(()),
            Sql::Server(sqld) => sqld.restart(),
        }
    }
}

/// Messages cost 0.01, outbound calls 0.1 a started minute; the free plan grants 1,000.
fn catalog() -> Value {
    test_catalog(
        json!([{"id": "free", "name": "Free", "price": "0", "monthly_credits": "1000"}]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.1"},
            {"kind": "call", "direction": "inbound", "price": "0.05"},
            {"kind": "message", "price": "0.01"}
        ]),
    )
}

/// Stores the catalog through one replica and subscribes `workspaces` through both in turn.
fn set_up(replicas: &[&App], workspaces: &[String]) -> Result<()> {
    expect(
        &replicas[0].service("PUT", "/v1/catalog", Some(&catalog()))?,
        200,
        "catalog",
    )?;
    for (n, ws) in workspaces.iter().enumerate() {
        let app = replicas[n % replicas.len()];
        app.provision(ws)?;
        app.subscribe(ws, "free")?;
    }
    Ok(())
}

/// Each workspace's plan credits, read through `app`, in micro-credits.
fn plan_credits(app: &App, ws: &str) -> Result<i64> {
    let body = expect(&app.owner(ws, "GET", "/billing", None)?, 200, "billing")?;
    micros_of(&body["plan_credits_remaining"])
}

const FREE_MICROS: i64 = 1_000_000_000;
const MESSAGE_MICROS: i64 = 10_000;
/// A call ended at 61 s: two started minutes at 0.1.
const CALL_MICROS: i64 = 200_000;

fn service(base_url: &str, path: &str, body: &Value, key: Option<&str>) -> Result<e2e::Reply> {
    let bearer = format!("Bearer {SERVICE_KEY}");
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    e2e::post_json(&format!("{base_url}{path}"), &body.to_string(), &headers)
}

#[test]
fn two_replicas_share_workspaces_replays_and_events_and_lose_nothing() -> Result<()> {
    shared_workspaces(&Stores::on_file()?)?;
    if let Some(stores) = Stores::on_sqld("two replicas sharing workspaces")? {
        shared_workspaces(&stores).inspect_err(|_| stores.print_server_log())?;
    }
    Ok(())
}

fn shared_workspaces(stores: &Stores) -> Result<()> {
    let replicas = [
        stores.replica(HostOptions::default())?,
        stores.replica(HostOptions::default())?,
    ];
    let urls: Vec<String> = replicas
        .iter()
        .map(|app| app.host.base_url().to_owned())
        .collect();
    let workspaces: Vec<String> = (0..8).map(|n| format!("ws-rep-{n}")).collect();
    set_up(&[&replicas[0], &replicas[1]], &workspaces)?;

    // 8 clients, each 40 operations spread over both replicas and every workspace: debits, and
    // every fifth a call authorized on one replica and ended on the other.
    let spent: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..8)
            .map(|client| {
                let urls = &urls;
                let workspaces = &workspaces;
                scope.spawn(move || -> Result<Vec<i64>> {
                    let mut spent = vec![0; workspaces.len()];
                    for op in 0..40 {
                        let w = (client * 40 + op) % workspaces.len();
                        let ws = &workspaces[w];
                        let (here, there) =
                            (&urls[(client + op) % 2], &urls[(client + op + 1) % 2]);
                        if op % 5 == 4 {
                            let call_id = format!("call-{client}-{op}");
                            let request = json!({"workspace_id": ws, "agent_id": "agent-1",
                                "call_id": call_id, "direction": "outbound",
                                "to": "+14155550100", "from": "+14155550999"});
                            expect(
                                &service(here, "/v1/calls", &request, None)?,
                                201,
                                "authorize",
                            )?;
                            let end = json!({"duration_seconds": 61});
                            let path = format!("/v1/calls/{call_id}/end");
                            expect(&service(there, &path, &end, None)?, 200, "end")?;
                            spent[w] += CALL_MICROS;
                        } else {
                            let event = json!({"id": format!("m-{client}-{op}"), "workspace_id": ws,
                                "agent_id": "agent-1", "kind": "message", "quantity": "1"});
                            expect(&service(here, "/v1/usage", &event, None)?, 200, "debit")?;
                            spent[w] += MESSAGE_MICROS;
                        }
                    }
                    Ok(spent)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|client| {
                client
                    .join()
                    .map_err(|_| anyhow::anyhow!("client panicked"))?
            })
            .collect::<Result<_>>()
    })?;

    // An Idempotency-Key used on one replica is replayed by the other (from Redis): the same
    // answer, one debit; the same key with another body is a conflict there too.
    let ws = &workspaces[0];
    let event = json!({"id": "keyed-1", "workspace_id": ws, "agent_id": "agent-1",
                       "kind": "message", "quantity": "3"});
    let first = expect(
        &service(&urls[0], "/v1/usage", &event, Some("key-1"))?,
        200,
        "keyed",
    )?;
    let replay = expect(
        &service(&urls[1], "/v1/usage", &event, Some("key-1"))?,
        200,
        "replay",
    )?;
    ensure!(first == replay, "replay differs: {first} vs {replay}");
    let mut other = event.clone();
    other["quantity"] = "4".into();
    expect_error(
        &service(&urls[1], "/v1/usage", &other, Some("key-1"))?,
        409,
        "idempotency_conflict",
        "same key, other body",
    )?;
    // One event sent to both replicas at the same moment is debited once.
    let raced = json!({"id": "raced-1", "workspace_id": ws, "agent_id": "agent-1",
                       "kind": "message", "quantity": "1"});
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let sent: Vec<_> = urls
            .iter()
            .map(|url| scope.spawn(|| service(url, "/v1/usage", &raced, None)))
            .collect();
        sent.into_iter()
            .map(|answer| {
                let reply = answer.join().map_err(|_| anyhow::anyhow!("panicked"))??;
                expect(&reply, 200, "raced debit")
            })
            .collect::<Result<_>>()
    })?;
    ensure!(
        answers[0] == answers[1],
        "raced answers differ: {answers:?}"
    );

    for (w, ws) in workspaces.iter().enumerate() {
        let mut expected = FREE_MICROS - spent.iter().map(|client| client[w]).sum::<i64>();
        if w == 0 {
            expected -= 3 * MESSAGE_MICROS + MESSAGE_MICROS;
        }
        // Read through the replica that did not set it up.
        let app = &replicas[(w + 1) % 2];
        ensure!(
            plan_credits(app, ws)? == expected,
            "{ws}: {} micro-credits, expected {expected}",
            plan_credits(app, ws)?
        );
    }
    stores.audit()
}

#[test]
fn two_real_spin_replicas_share_workspaces_and_survive_faults() -> Result<()> {
    let Some(bin) = e2e::spin::spin_bin() else {
        println!("skipped: SPIN_BIN not set (two real spin up replicas)");
        return Ok(());
    };
    shared_workspaces(&Stores::on_file()?.on_spin(&bin))?;
    faults(Stores::on_file()?.on_spin(&bin))?;
    if let Some(stores) = Stores::on_sqld("two real spin up replicas")? {
        let stores = stores.on_spin(&bin);
        shared_workspaces(&stores).inspect_err(|_| stores.print_server_log())?;
    }
    if let Some(stores) = Stores::on_sqld("two real spin up replicas under faults")? {
        faults(stores.on_spin(&bin))?;
    }
    Ok(())
}

/// How one debit was answered across faults: the statuses of its failed attempts.
#[derive(Default)]
struct Attempts {
    failed: Vec<u16>,
}

/// Sends one debit, with an Idempotency-Key, until a replica answers 200: to the replica of
/// its turn first, then to the others; a connection that fails counts as status 0.
fn debit_until_answered(
    urls: &RwLock<Vec<String>>,
    turn: usize,
    event: &Value,
) -> Result<Attempts> {
    let key = format!("key-{}", event["id"].as_str().unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = Attempts::default();
    for attempt in 0.. {
        let url = {
            let urls = urls.read().map_err(|_| anyhow::anyhow!("poisoned"))?;
            urls[(turn + attempt) % urls.len()].clone()
        };
        match service(&url, "/v1/usage", event, Some(&key)) {
            Ok(reply) if reply.status == 200 => return Ok(attempts),
            Ok(reply) => attempts.failed.push(reply.status),
            Err(_) => attempts.failed.push(0),
        }
        if Instant::now() > deadline {
            bail!("{event} unanswered after 60 s: {:?}", attempts.failed);
        }
        // A client's back-off between retries, not a wait for an outcome.
        std::thread::sleep(Duration::from_millis(20));
    }
    unreachable!()
}

#[test]
fn a_killed_replica_and_restarted_stores_lose_and_double_nothing() -> Result<()> {
    faults(Stores::on_file()?)?;
    if let Some(stores) = Stores::on_sqld("replica kill and store restarts")? {
        faults(stores)?;
    }
    Ok(())
}

fn faults(mut stores: Stores) -> Result<()> {
    let mut replicas = [
        stores.replica(HostOptions::default())?,
        stores.replica(HostOptions::default())?,
    ];
    let workspaces: Vec<String> = (0..4).map(|n| format!("ws-fault-{n}")).collect();
    set_up(&[&replicas[0], &replicas[1]], &workspaces)?;
    let urls = Arc::new(RwLock::new(
        replicas
            .iter()
            .map(|app| app.host.base_url().to_owned())
            .collect::<Vec<_>>(),
    ));
    let on_sqld = matches!(stores.sql, Sql::Server(_));

    // Four clients debit all along (each event retried until answered); meanwhile one replica is
    // killed with SIGKILL and replaced, Redis is restarted, and sqld too when there is one.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, failed) = std::thread::scope(|scope| -> Result<(Vec<usize>, Vec<u16>)> {
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let urls = Arc::clone(&urls);
                let workspaces = &workspaces;
                let stop = &stop;
                scope.spawn(move || -> Result<(Vec<usize>, Vec<u16>)> {
                    let mut sent = vec![0; workspaces.len()];
                    let mut failed = Vec::new();
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                        let w = (client + n) % workspaces.len();
                        let event = json!({"id": format!("f-{client}-{n}"),
                            "workspace_id": workspaces[w], "agent_id": "agent-1",
                            "kind": "message", "quantity": "1"});
                        failed.extend(debit_until_answered(&urls, client + n, &event)?.failed);
                        sent[w] += 1;
                        n += 1;
                    }
                    Ok((sent, failed))
                })
            })
            .collect();
        let settle = || std::thread::sleep(Duration::from_millis(300));
        settle();
        replicas[1].host.kill();
        settle();
        let replacement = stores.replica(HostOptions::default())?;
        urls.write().map_err(|_| anyhow::anyhow!("poisoned"))?[1] =
            replacement.host.base_url().to_owned();
        replicas[1] = replacement;
        settle();
        stores.redis.restart()?;
        settle();
        stores.restart_sql()?;
        settle();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut sent = vec![0; workspaces.len()];
        let mut failed = Vec::new();
        for client in clients {
            let (client_sent, client_failed) = client
                .join()
                .map_err(|_| anyhow::anyhow!("client panicked"))??;
            for (total, more) in sent.iter_mut().zip(client_sent) {
                *total += more;
            }
            failed.extend(client_failed);
        }
        Ok((sent, failed))
    })?;
    // While a replica or a store was down: connection failures and clear 503s, never a 500.
    ensure!(
        failed.iter().all(|status| matches!(status, 0 | 503)),
        "unexpected statuses: {failed:?}"
    );
    println!(
        "faults ({}): {} debits answered, {} failed attempts retried",
        if on_sqld { "sqld" } else { "file" },
        sent.iter().sum::<usize>(),
        failed.len()
    );

    if on_sqld {
        // sqld expires a stream after 10 s idle: both replicas' kept connections are stale now.
        std::thread::sleep(Duration::from_secs(12));
        for (n, app) in replicas.iter().enumerate() {
            let event = json!({"id": format!("after-idle-{n}"), "workspace_id": workspaces[0],
                               "agent_id": "agent-1", "kind": "message", "quantity": "1"});
            expect(
                &service(app.host.base_url(), "/v1/usage", &event, None)?,
                200,
                "after idle",
            )?;
        }
    }
    for (w, ws) in workspaces.iter().enumerate() {
        let idle_debits = if on_sqld && w == 0 { 2 } else { 0 };
        let expected = FREE_MICROS - (sent[w] as i64 + idle_debits) * MESSAGE_MICROS;
        let actual = plan_credits(&replicas[0], ws)?;
        ensure!(
            actual == expected,
            "{ws}: {actual} micro-credits, expected {expected}"
        );
    }
    stores.audit()
}

#[test]
fn a_cron_tick_fired_on_both_replicas_runs_once() -> Result<()> {
    let stores = Stores::on_file()?;
    let replicas = [
        stores.replica(HostOptions::default())?,
        stores.replica(HostOptions::default())?,
    ];
    let ws = "ws-cron".to_owned();
    let clock = |frozen_time: &str| -> Result<()> {
        let body = json!({"frozen_time": frozen_time});
        let reply = replicas[0].service("POST", &format!("/v1/test-clocks/{ws}"), Some(&body))?;
        expect(&reply, 200, "test clock").map(|_| ())
    };
    expect(
        &replicas[0].service("PUT", "/v1/catalog", Some(&catalog()))?,
        200,
        "catalog",
    )?;
    replicas[0].provision(&ws)?;
    clock("2031-01-15T10:00:00Z")?;
    replicas[1].subscribe(&ws, "free")?;

    // Both replicas' schedulers fire the renewal's tick at once: one of them claims it.
    let fire_both = || {
        std::thread::scope(|scope| {
            let fired: Vec<_> = replicas
                .iter()
                .map(|app| scope.spawn(|| app.fire_cron("cycle-renewal", &[])))
                .collect();
            fired
                .into_iter()
                .map(|fire| fire.join().map_err(|_| anyhow::anyhow!("panicked"))?)
                .collect::<Result<Vec<()>>>()
        })
    };
    fire_both()?;
    // The cycle falls due; both fire again within the same minute's tick (the claim lasts 30 s,
    // and this test takes a few): neither runs the pass, so the renewal is still to do.
    clock("2031-02-15T00:00:00Z")?;
    fire_both()?;
    let report = expect(
        &replicas[1].service("POST", "/internal/jobs/renew-cycles", None)?,
        200,
        "renewal's HTTP twin",
    )?;
    ensure!(
        report["workspaces_renewed"] == 1 && report["cycles_advanced"] == 1,
        "the ticks ran the renewal more than once: {report}"
    );
    let db = ledger::native::NativeDb::open(match &stores.sql {
        Sql::File(dir) => dir.join("sqlite_db.db"),
        Sql::Server(_) => bail!("file stores expected"),
    })?;
    let claims = block_on(ledger::Storage::query(
        &db,
        "SELECT job FROM scheduled_runs",
        &[],
    ))?;
    ensure!(
        claims == vec![vec![ledger::SqlValue::Text("cycle-renewal".into())]],
        "claims: {claims:?}"
    );
    stores.audit()
}
