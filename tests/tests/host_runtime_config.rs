//! The local host's `--runtime-config-file` (Spin's runtime config): start-up errors, the app
//! with its key-value store on a real `redis-server` (including a Redis restart mid-run), and,
//! when `SQLD_BIN` names a `sqld`, the app with its SQLite database on a real libSQL server.
//!
//! Build first: `scripts/build-components.sh` and `scripts/build-host.sh`.

use anyhow::{Context as _, Result, ensure};
use e2e::api::{App, SERVICE_KEY, expect, json_of, test_catalog};
use e2e::stores::{Redis, Sqld, write_runtime_config};
use e2e::{HostOptions, Reply, workspace_root};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// The app on the local host with `runtime_config` as its `--runtime-config-file`.
fn app_with(runtime_config: &Path) -> Result<App> {
    App::start_with(
        HostOptions::default()
            .arg("--runtime-config-file")
            .arg(runtime_config.display().to_string()),
    )
}

/// `PUT /v1/workspaces/{ws}` with an `Idempotency-Key`.
fn provision_with_key(app: &App, ws: &str, key: &str) -> Result<Reply> {
    let body = json!({"name": format!("Workspace {ws}"), "email": format!("billing@{ws}.example")});
    app.request(
        "PUT",
        &format!("/v1/workspaces/{ws}"),
        Some(&body),
        &[
            ("authorization", &format!("Bearer {SERVICE_KEY}")),
            ("idempotency-key", key),
        ],
    )
}

/// Runs `local-host up` with the runtime config `text`; returns its exit code and stderr.
fn start_up_error(text: &str) -> Result<(Option<i32>, String)> {
    let dir = tempfile::tempdir()?;
    let config = write_runtime_config(dir.path(), text)?;
    let output = std::process::Command::new(e2e::host_binary())
        .arg("up")
        .arg("--manifest")
        .arg(workspace_root().join("spin.toml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--cache-dir")
        .arg(e2e::shared_cache_dir())
        .args(["--listen", "127.0.0.1:0", "--runtime-config-file"])
        .arg(&config)
        .env("SPIN_VARIABLE_SERVICE_API_KEY", SERVICE_KEY)
        .env("SPIN_VARIABLE_AUTH_JWT_SECRET", e2e::api::JWT_SECRET)
        .output()
        .context("run local-host up")?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn bad_runtime_configs_refuse_to_start_with_one_line() -> Result<()> {
    let cases = [
        ("baz = 1\n", "unused runtime config key(s): baz"),
        (
            "[sqlite_database.default]\ntype = \"mysql\"\n",
            "Unknown database kind: mysql",
        ),
        (
            "[key_value_store.default]\ntype = \"memcached\"\n",
            "the store type 'memcached' was not registered with the config resolver",
        ),
        (
            "[sqlite_database.default]\ntype = \"libsql\"\nurl = \"libsql://db.example\"\ntoken = \"\"\n",
            "URL does not start with 'https://' or 'http://'. Spin currently only supports \
             talking to libSQL databases over HTTP(S)",
        ),
        (
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1\"\nport = 1\n",
            "unknown field `port`",
        ),
        (
            "[[config_provider]]\ntype = \"vault\"\n",
            "runtime config key `config_provider` is not supported by the local host",
        ),
    ];
    for (text, wanted) in cases {
        let (code, stderr) = start_up_error(text)?;
        ensure!(
            code == Some(1),
            "{text:?}: exit {code:?}, stderr {stderr:?}"
        );
        ensure!(
            stderr.lines().count() == 1 && stderr.contains(wanted),
            "{text:?}: expected one line with {wanted:?}, got {stderr:?}"
        );
    }
    Ok(())
}

#[test]
fn key_value_on_redis_serves_idempotency_replays() -> Result<()> {
    let redis = Redis::start()?;
    let dir = tempfile::tempdir()?;
    let config = write_runtime_config(dir.path(), &e2e::stores::redis_store(&redis.url()))?;
    let app = app_with(&config)?;

    let first = provision_with_key(&app, "ws-r", "provision-ws-r")?;
    expect(&first, 200, "provision")?;
    let replay = provision_with_key(&app, "ws-r", "provision-ws-r")?;
    ensure!(
        replay.status == 200 && replay.body == first.body,
        "replay: {} {}",
        replay.status,
        replay.body
    );
    // The same key with another body is a conflict: the record is read back from Redis.
    let other = app.request(
        "PUT",
        "/v1/workspaces/ws-r",
        Some(&json!({"name": "Renamed", "email": "billing@ws-r.example"})),
        &[
            ("authorization", &format!("Bearer {SERVICE_KEY}")),
            ("idempotency-key", "provision-ws-r"),
        ],
    )?;
    ensure!(
        other.status == 409,
        "conflict: {} {}",
        other.status,
        other.body
    );

    let keys = redis.keys()?;
    ensure!(
        keys.len() == 1 && keys[0].starts_with("idempotency/"),
        "keys in Redis: {keys:?}"
    );
    ensure!(
        !app.host.state_dir().join("sqlite_key_value.db").exists(),
        "the default store must not fall back to its SQLite file"
    );
    app.check_invariants()
}

#[test]
fn redis_restart_fails_calls_cleanly_then_recovers() -> Result<()> {
    let mut redis = Redis::start()?;
    let dir = tempfile::tempdir()?;
    let config = write_runtime_config(dir.path(), &e2e::stores::redis_store(&redis.url()))?;
    let app = app_with(&config)?;
    expect(&provision_with_key(&app, "ws-a", "k-a")?, 200, "before")?;

    redis.stop();
    let started = Instant::now();
    let down = provision_with_key(&app, "ws-b", "k-b")?;
    e2e::api::expect_error(&down, 503, "temporarily_unavailable", "Redis down")?;
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "a call with Redis down took {:?}",
        started.elapsed()
    );
    // Without a key the request does not touch Redis: the app still serves.
    app.provision("ws-c")?;

    redis.restart()?;
    // The first call after Redis is back works (the manager reconnects).
    expect(&provision_with_key(&app, "ws-b", "k-b")?, 200, "after")?;
    let replay = provision_with_key(&app, "ws-a", "k-a")?;
    expect(
        &replay,
        200,
        "replay of a record written before the restart",
    )?;
    let keys = redis.keys()?;
    ensure!(keys.len() == 2, "keys in Redis: {keys:?}");
    app.check_invariants()
}

/// The service API's usage debit and the owner's billing summary.
fn debit_and_read_back(app: &App, ws: &str) -> Result<Value> {
    let catalog = test_catalog(
        json!([{"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}]),
        json!([{"kind": "message", "price": "0.01"}]),
    );
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog))?,
        200,
        "catalog",
    )?;
    app.provision(ws)?;
    app.subscribe(ws, "free")?;
    let event = json!({"id": "ev-1", "workspace_id": ws, "agent_id": "agent-1",
                       "kind": "message", "quantity": "250"});
    let debited = expect(
        &app.service("POST", "/v1/usage", Some(&event))?,
        200,
        "debit",
    )?;
    ensure!(debited["charged"] == "2.5", "{debited}");
    let replayed = expect(
        &app.service("POST", "/v1/usage", Some(&event))?,
        200,
        "same event again",
    )?;
    ensure!(
        replayed["plan_credits_remaining"] == "7.5",
        "an event id is debited once: {replayed}"
    );
    let summary = app.owner(ws, "GET", "/billing", None)?;
    expect(&summary, 200, "billing summary")
}

#[test]
fn sqlite_on_sqld_provisions_debits_and_reads_back() -> Result<()> {
    let Some(sqld) = Sqld::start()? else {
        println!("skipped: SQLD_BIN not set");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let config = write_runtime_config(dir.path(), &e2e::stores::libsql_database(&sqld.url()))?;
    let app = app_with(&config)?;
    let summary = debit_and_read_back(&app, "ws-l")?;
    ensure!(
        summary["plan_credits_remaining"] == "7.5" && summary["wallet_balance"] == "0",
        "{summary}"
    );
    ensure!(
        !app.host.state_dir().join("sqlite_db.db").exists(),
        "the default database must not fall back to its SQLite file"
    );
    Ok(())
}

#[test]
fn sqld_restart_fails_calls_cleanly_then_recovers() -> Result<()> {
    let Some(mut sqld) = Sqld::start()? else {
        println!("skipped: SQLD_BIN not set");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let config = write_runtime_config(dir.path(), &e2e::stores::libsql_database(&sqld.url()))?;
    let app = app_with(&config)?;
    app.provision("ws-before")?;

    sqld.stop();
    let down = app.service("GET", "/v1/catalog", None)?;
    ensure!(
        down.status >= 500,
        "sqld down: {} {}",
        down.status,
        down.body
    );

    sqld.restart()?;
    // Instances that held a stream of the old server may fail once; new ones work.
    let back = e2e::wait_for(Duration::from_secs(30), || app.provision("ws-after").ok());
    ensure!(
        back.is_some(),
        "the app did not recover after sqld came back"
    );
    let reply = app.owner("ws-before", "GET", "/billing", None)?;
    ensure!(
        reply.status == 200 && json_of(&reply).is_object(),
        "data written before the restart: {} {}",
        reply.status,
        reply.body
    );
    Ok(())
}
