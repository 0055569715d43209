//! Conformance tests of the local host against Spin's semantics, using the test components in
//! `tests/components` (build them with `scripts/build-components.sh`, the host with
//! `scripts/build-host.sh`).

use anyhow::{Context as _, Result, ensure};
use e2e::{HostOptions, TestHost, get, host_binary, shared_cache_dir, wait_for, workspace_root};
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn manifest(name: &str) -> PathBuf {
    workspace_root().join("tests/components").join(name)
}

fn conformance(options: HostOptions) -> Result<TestHost> {
    TestHost::start(manifest("conformance.toml"), options)
}

fn body(host: &TestHost, path: &str) -> Result<String> {
    let reply = get(&host.url(path))?;
    ensure!(
        reply.status == 200,
        "GET {path}: status {} body {}",
        reply.status,
        reply.body
    );
    Ok(reply.body)
}

fn header_line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn routing_most_specific_wins_and_spin_headers() -> Result<()> {
    let host = conformance(HostOptions::default())?;

    let exact = body(&host, "/route/exact")?;
    assert_eq!(
        header_line(&exact, "spin-matched-route"),
        Some("/route/exact")
    );
    assert_eq!(
        header_line(&exact, "spin-raw-component-route"),
        Some("/route/exact")
    );
    assert_eq!(
        header_line(&exact, "spin-component-route"),
        Some("/route/exact")
    );
    assert_eq!(header_line(&exact, "spin-path-info"), Some(""));

    let wild = body(&host, "/route/other/x?q=1")?;
    assert_eq!(header_line(&wild, "spin-matched-route"), Some("/route/..."));
    assert_eq!(header_line(&wild, "spin-component-route"), Some("/route"));
    assert_eq!(header_line(&wild, "spin-path-info"), Some("/other/x"));
    assert_eq!(header_line(&wild, "spin-base-path"), Some("/"));
    let full = format!("{}/route/other/x?q=1", host.base_url());
    assert_eq!(header_line(&wild, "spin-full-url"), Some(full.as_str()));
    let client = header_line(&wild, "spin-client-addr").unwrap_or("");
    assert!(client.starts_with("127.0.0.1:"), "client addr {client}");

    let root = body(&host, "/echo/a/b")?;
    assert_eq!(header_line(&root, "spin-matched-route"), Some("/..."));
    assert_eq!(header_line(&root, "spin-path-info"), Some("/echo/a/b"));
    assert_eq!(header_line(&root, "spin-component-route"), Some(""));

    let param = body(&host, "/route/items/42/detail")?;
    assert_eq!(
        header_line(&param, "spin-matched-route"),
        Some("/route/items/:id/detail")
    );
    assert_eq!(header_line(&param, "spin-path-match-id"), Some("42"));

    assert_eq!(get(&host.url("/no-such-endpoint"))?.status, 404);
    assert_eq!(get(&host.url("/.well-known/spin/health"))?.status, 200);
    Ok(())
}

#[test]
fn request_and_response_bodies() -> Result<()> {
    let host = conformance(HostOptions::default())?;
    let small = e2e::post_json(&host.url("/body"), "{\"a\":1}", &[])?;
    assert_eq!(small.status, 200);
    assert_eq!(small.body, "{\"a\":1}");
    assert_eq!(small.header("content-length"), Some("7"));

    let chunk = "x".repeat(50_000);
    let big = e2e::post_json(&host.url("/body?repeat=3"), &chunk, &[])?;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 150_000);
    Ok(())
}

#[test]
fn sqlite_statements_errors_and_access() -> Result<()> {
    let host = conformance(HostOptions::default())?;
    assert_eq!(body(&host, "/sql?op=setup")?, "ok");
    assert_eq!(body(&host, "/sql?op=insert&v=a")?, "rowid=1 changes=1");
    assert_eq!(body(&host, "/sql?op=insert&v=b")?, "rowid=2 changes=1");
    assert_eq!(body(&host, "/sql?op=list")?, "id,v\n1|a\n2|b");
    assert_eq!(body(&host, "/sql?op=types")?, "-7|1.5|t|[1, 2]|NULL");

    let dup = body(&host, "/sql?op=insert&v=a")?;
    assert_eq!(dup, "ERR Error::Io(\"UNIQUE constraint failed: items.v\")");
    let raised = body(&host, "/sql?op=insert&v=forbidden")?;
    assert_eq!(raised, "ERR Error::Io(\"forbidden value\")");
    let bad = body(&host, "/sql?op=bad")?;
    assert!(
        bad.starts_with("ERR Error::Io(") && bad.contains("syntax error"),
        "{bad}"
    );

    assert_eq!(body(&host, "/sql?op=undrained")?, "changes=0 count=2");

    let attach = body(&host, "/sql?op=attach")?;
    assert!(
        attach.contains("not authorized"),
        "ATTACH of a file must be refused: {attach}"
    );

    assert_eq!(body(&host, "/sql?op=open&db=other")?, "ok");
    assert_eq!(
        body(&host, "/sql?op=open&db=nope")?,
        "ERR Error::AccessDenied"
    );
    assert_eq!(
        body(&host, "/restricted/sql?op=open")?,
        "ERR Error::AccessDenied"
    );

    // The database is a file per label under the state dir.
    assert!(host.state_dir().join("sqlite_db.db").exists());
    Ok(())
}

#[test]
fn sqlite_concurrent_requests() -> Result<()> {
    let host = conformance(HostOptions::default())?;
    assert_eq!(body(&host, "/sql?op=setup")?, "ok");
    let base = host.base_url().to_owned();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let base = base.clone();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..10 {
                    let reply = get(&format!("{base}/sql?op=insert&v=w{w}-{i}"))?;
                    ensure!(
                        reply.status == 200 && reply.body.starts_with("rowid="),
                        "insert failed: {reply:?}"
                    );
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    let list = body(&host, "/sql?op=list")?;
    assert_eq!(list.lines().count(), 41, "{list}");
    Ok(())
}

#[test]
fn key_value_operations_and_access() -> Result<()> {
    let host = conformance(HostOptions::default())?;
    assert_eq!(body(&host, "/kv?op=get&k=a")?, "<none>");
    assert_eq!(body(&host, "/kv?op=exists&k=a")?, "false");
    assert_eq!(body(&host, "/kv?op=set&k=a&v=1")?, "ok");
    assert_eq!(body(&host, "/kv?op=set&k=b&v=2")?, "ok");
    assert_eq!(body(&host, "/kv?op=set&k=a&v=3")?, "ok");
    assert_eq!(body(&host, "/kv?op=get&k=a")?, "3");
    assert_eq!(body(&host, "/kv?op=exists&k=a")?, "true");
    assert_eq!(body(&host, "/kv?op=keys")?, "a,b");
    assert_eq!(body(&host, "/kv?op=delete&k=a")?, "ok");
    assert_eq!(body(&host, "/kv?op=delete&k=a")?, "ok");
    assert_eq!(body(&host, "/kv?op=keys")?, "b");

    assert_eq!(
        body(&host, "/kv?op=open&store=restricted_only")?,
        "ERR Error::AccessDenied"
    );
    assert_eq!(
        body(&host, "/kv?op=open&store=nope")?,
        "ERR Error::AccessDenied"
    );
    assert_eq!(
        body(&host, "/restricted/kv?op=open")?,
        "ERR Error::AccessDenied"
    );
    assert_eq!(
        body(&host, "/restricted/kv?op=open&store=restricted_only")?,
        "ok"
    );
    Ok(())
}

#[test]
fn variables_default_env_override_and_undeclared() -> Result<()> {
    let host = conformance(HostOptions::default().env("SPIN_VARIABLE_OVERRIDE_ME", "from env"))?;
    assert_eq!(body(&host, "/var?name=greeting")?, "hello, world");
    assert_eq!(body(&host, "/var?name=override_me")?, "from env");
    let undeclared = body(&host, "/var?name=api_key")?;
    assert!(
        undeclared.starts_with("ERR Error::Undefined("),
        "{undeclared}"
    );
    let invalid = body(&host, "/var?name=Bad-Name")?;
    assert!(invalid.starts_with("ERR Error::InvalidName("), "{invalid}");
    assert!(body(&host, "/restricted/var?name=greeting")?.starts_with("ERR Error::Undefined("));
    Ok(())
}

fn write_manifest(dir: &std::path::Path, extra: &str) -> Result<PathBuf> {
    let wasm = workspace_root().join("target/wasm32-wasip2/release/conformance.wasm");
    let text = format!(
        "spin_manifest_version = 2\n[application]\nname = \"t\"\n{extra}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"main\"\n\
         [component.main]\nsource = {:?}\n",
        wasm.display().to_string()
    );
    let path = dir.join("spin.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

#[test]
fn startup_errors_are_clear() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let required = write_manifest(dir.path(), "[variables]\nsecret = { required = true }")?;
    let err = TestHost::start(&required, HostOptions::default()).err();
    assert!(
        err.is_some(),
        "a required variable without value must stop start-up"
    );
    let ok = TestHost::start(
        &required,
        HostOptions::default().env("SPIN_VARIABLE_SECRET", "s"),
    );
    assert!(ok.is_ok(), "{:?}", ok.err());

    let unknown = write_manifest(dir.path(), "[application.frobnicate]\nx = 1")?;
    let output = Command::new(host_binary())
        .args(["up", "--listen", "127.0.0.1:0", "--manifest"])
        .arg(&unknown)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("frobnicate"), "{stderr}");
    Ok(())
}

/// A tiny HTTP server on loopback answering 200 "hi" to every request.
fn loopback_server() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi");
        }
    });
    Ok(port)
}

#[test]
fn outbound_allow_list() -> Result<()> {
    let allowed = loopback_server()?;
    let other = loopback_server()?;
    let host = conformance(HostOptions::default().env(
        "SPIN_VARIABLE_OUTBOUND_URL",
        format!("http://127.0.0.1:{allowed}"),
    ))?;
    let ok = body(&host, &format!("/out?url=http://127.0.0.1:{allowed}/x"))?;
    assert_eq!(ok, "status=200");
    let denied = body(&host, &format!("/out?url=http://127.0.0.1:{other}/x"))?;
    assert!(denied.contains("HttpRequestDenied"), "{denied}");
    let denied = body(&host, "/out?url=https://example.com/")?;
    assert!(denied.contains("HttpRequestDenied"), "{denied}");
    let restricted = body(
        &host,
        &format!("/restricted/out?url=http://127.0.0.1:{allowed}/x"),
    )?;
    assert!(restricted.contains("HttpRequestDenied"), "{restricted}");
    Ok(())
}

fn counters(host: &TestHost, n: usize) -> Result<Vec<u64>> {
    (0..n)
        .map(|_| Ok(body(host, "/counter")?.trim().parse::<u64>()?))
        .collect()
}

#[test]
fn instance_reuse_on() -> Result<()> {
    let host = conformance(HostOptions::default())?;
    assert_eq!(counters(&host, 5)?, vec![1, 2, 3, 4, 5]);
    Ok(())
}

/// Eight requests that each sleep 400 ms finish together: they run concurrently, and with
/// reuse on they share instances (up to 16 in flight per instance).
#[test]
fn concurrent_requests_share_an_instance() -> Result<()> {
    let host = conformance(HostOptions::default())?;
    let start = std::time::Instant::now();
    let base = host.base_url().to_owned();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{base}/sleep?ms=400");
            std::thread::spawn(move || get(&url))
        })
        .collect();
    let mut seen = Vec::new();
    for w in workers {
        let reply = w.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        ensure!(reply.status == 200, "{reply:?}");
        seen.push(reply.body.trim().parse::<u64>()?);
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(2500),
        "not concurrent: {elapsed:?}"
    );
    // The per-instance counter went above 1: at least two requests shared an instance.
    assert!(
        seen.iter().any(|&n| n > 1),
        "no instance was shared: {seen:?}"
    );
    Ok(())
}

#[test]
fn instance_reuse_off_and_idle_timeout() -> Result<()> {
    let fresh = conformance(
        HostOptions::default()
            .arg("--max-instance-reuse-count")
            .arg("1"),
    )?;
    assert_eq!(counters(&fresh, 4)?, vec![1, 1, 1, 1]);

    let idle = conformance(
        HostOptions::default()
            .arg("--idle-instance-timeout-ms")
            .arg("100"),
    )?;
    assert_eq!(counters(&idle, 2)?, vec![1, 2]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counters(&idle, 1)?, vec![1]);
    Ok(())
}

#[test]
fn trap_gives_500_and_host_survives() -> Result<()> {
    let host = conformance(HostOptions::default())?;
    assert_eq!(counters(&host, 2)?, vec![1, 2]);
    assert_eq!(get(&host.url("/trap"))?.status, 500);
    // The trapped instance was discarded: a fresh one serves the next request.
    let next = counters(&host, 1)?;
    assert_eq!(next, vec![1]);
    Ok(())
}

fn fire(state_dir: &std::path::Path, env: &[(&str, &str)]) -> Result<std::process::Output> {
    let mut cmd = Command::new(host_binary());
    cmd.args(["cron", "fire", "--component", "main", "--manifest"])
        .arg(manifest("conformance.toml"))
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--cache-dir")
        .arg(shared_cache_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().context("cannot run local-host cron fire")
}

#[test]
fn cron_fire_on_demand() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let out = fire(&state, &[])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fire(&state, &[])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failing = fire(&state, &[("SPIN_VARIABLE_CRON_SHOULD_FAIL", "true")])?;
    assert!(!failing.status.success());
    let stderr = String::from_utf8_lossy(&failing.stderr);
    assert!(stderr.contains("cron failure requested"), "{stderr}");

    let host = conformance(HostOptions {
        state_dir: Some(state),
        ..HostOptions::default()
    })?;
    assert_eq!(body(&host, "/sql?op=cron_runs")?, "2");
    Ok(())
}

#[test]
fn a_relative_state_dir_and_the_default_cache_dir_work() -> Result<()> {
    // As `scripts/up.sh` starts it: `--state-dir .spin-state`, no `--cache-dir`. wasmtime's
    // compile cache refused the relative directory derived from it.
    let dir = tempfile::tempdir()?;
    let out = Command::new(host_binary())
        .args(["cron", "fire", "--component", "main", "--manifest"])
        .arg(manifest("conformance.toml"))
        .args(["--state-dir", ".spin-state"])
        .current_dir(dir.path())
        .output()
        .context("cannot run local-host cron fire")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        dir.path().join(".spin-state/cache").is_dir(),
        "no compile cache under the state dir"
    );
    ensure!(dir.path().join(".spin-state/sqlite_db.db").is_file());
    Ok(())
}

#[test]
fn cron_schedule_fires() -> Result<()> {
    let host = TestHost::start(manifest("cron.toml"), HostOptions::default())?;
    let runs = wait_for(Duration::from_secs(15), || {
        let n: u64 = body(&host, "/sql?op=cron_runs").ok()?.trim().parse().ok()?;
        (n >= 2).then_some(n)
    });
    assert!(
        runs.is_some(),
        "the every-second schedule did not fire twice in 15 s"
    );
    Ok(())
}

#[test]
fn graceful_stop_finishes_in_flight_requests() -> Result<()> {
    let host = conformance(HostOptions::default())?;
    assert_eq!(counters(&host, 1)?, vec![1]);
    let url = host.url("/sleep?ms=700");
    let in_flight = std::thread::spawn(move || get(&url));
    // Give the request time to reach the guest before the signal.
    std::thread::sleep(Duration::from_millis(200));
    let status = host.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "exit status {status:?}");
    let reply = in_flight
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    assert_eq!(reply.status, 200, "in-flight request was cut: {reply:?}");
    Ok(())
}

#[test]
fn slow_clients_are_cut_off_at_the_request_read_timeout() -> Result<()> {
    use e2e::reliability::{Cutoff, connect, wait_for_cutoff};
    let host = conformance(HostOptions::default().arg("--request-read-timeout-ms=1000"))?;
    // Headers that never finish, and a body that stops half way.
    let mut slow_headers = connect(host.base_url())?;
    slow_headers.write_all(b"POST /body HTTP/1.1\r\nhost: x\r\nx-slow: ")?;
    let mut stalled_body = connect(host.base_url())?;
    stalled_body
        .write_all(b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly-ten-b")?;
    // Others are served meanwhile.
    assert!(!body(&host, "/echo")?.is_empty());
    let cut = wait_for_cutoff(&mut slow_headers, Duration::from_secs(10))?;
    ensure!(
        matches!(cut, Cutoff::Closed(None | Some(408))),
        "slow headers: {cut:?}"
    );
    // The guest reads a connection-read-timeout error (its 400 `ERR ...`), then hyper closes.
    let cut = wait_for_cutoff(&mut stalled_body, Duration::from_secs(10))?;
    ensure!(
        matches!(cut, Cutoff::Closed(None | Some(400))),
        "stalled body: {cut:?}"
    );
    // A body that arrives in time is unaffected.
    let reply = e2e::post_json(&host.url("/body"), "{\"a\":1}", &[])?;
    assert_eq!(reply.body, "{\"a\":1}");
    Ok(())
}
