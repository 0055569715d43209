//! Reliability: hostile input and resource limits, end to end (issue 7).
//!
//! Forged, expired, unsigned and cross-workspace tokens, members asking for amounts, path
//! tricks, oversized, chunked, deeply nested and over-long batches, giant headers, and slow
//! clients. Each is refused (never a 500) and writes nothing: a fingerprint of every table of
//! both stores is equal before and after. Other clients keep being served meanwhile.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use e2e::HostOptions;
use e2e::api::{App, JWT_SECRET, Role, SERVICE_KEY, expect, json_of, now_secs, sign, token};
use e2e::reliability::{
    Cutoff, Scenario, changed_tables, connect, fingerprint, raw_exchange, wait_for_cutoff,
};
use serde_json::{Value, json};

/// One plan, a few rates: enough for every route to have something to show.
fn catalog() -> Value {
    let mut catalog = e2e::api::test_catalog(
        json!([{"id": "free", "name": "Free", "price": "0", "monthly_credits": "100"}]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.1"},
            {"kind": "call", "direction": "inbound", "price": "0.05"},
            {"kind": "message", "price": "0.01"},
            {"kind": "ai_task", "price": "0.25"}
        ]),
    );
    catalog["settings"]["low_balance_threshold"] = "1".into();
    catalog
}

fn start(options: HostOptions) -> Result<App> {
    let app = App::start_with(options)?;
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog()))?,
        200,
        "catalog",
    )?;
    for ws in ["ws-a", "ws-b"] {
        app.provision(ws)?;
        let path = format!("/v1/workspaces/{ws}/subscription");
        let reply = app.user(
            ws,
            Role::Owner,
            "POST",
            &path,
            Some(&json!({"plan_id": "free"})),
        )?;
        expect(&reply, 200, "subscribe")?;
    }
    Ok(app)
}

fn event(id: &str, ws: &str, agent: &str) -> Value {
    json!({"id": id, "workspace_id": ws, "agent_id": agent, "kind": "message",
           "quantity": "1"})
}

/// Tokens that must open nothing of workspace `ws-b`.
fn hostile_credentials() -> Vec<(&'static str, String)> {
    let claims = |ws: &str, role: &str, exp: i64| json!({"sub": "attacker", "workspace_id": ws, "role": role, "exp": exp});
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let later = now_secs() + 3600;
    let unsigned = |header: &Value| {
        let signed = sign(header, &claims("ws-b", "owner", later), b"x");
        let mut parts: Vec<&str> = signed.split('.').collect();
        parts.truncate(2);
        format!("{}.", parts.join("."))
    };
    let good = token("ws-b", Role::Owner, later);
    let tampered = {
        // ws-a's valid signature on claims rewritten to ws-b.
        let a = token("ws-a", Role::Owner, later);
        let b_claims = good.split('.').nth(1).unwrap_or("").to_owned();
        let mut parts: Vec<String> = a.split('.').map(str::to_owned).collect();
        parts[1] = b_claims;
        parts.join(".")
    };
    vec![
        (
            "wrong signature",
            format!(
                "Bearer {}",
                sign(&hs256, &claims("ws-b", "owner", later), b"guessed-secret")
            ),
        ),
        (
            "alg none",
            format!("Bearer {}", unsigned(&json!({"alg": "none"}))),
        ),
        (
            "alg None",
            format!("Bearer {}", unsigned(&json!({"alg": "None", "typ": "JWT"}))),
        ),
        (
            "alg none signed anyway",
            format!(
                "Bearer {}",
                sign(
                    &json!({"alg": "none"}),
                    &claims("ws-b", "owner", later),
                    JWT_SECRET.as_bytes()
                )
            ),
        ),
        (
            "alg HS512",
            format!(
                "Bearer {}",
                sign(
                    &json!({"alg": "HS512"}),
                    &claims("ws-b", "owner", later),
                    JWT_SECRET.as_bytes()
                )
            ),
        ),
        (
            "expired",
            format!("Bearer {}", token("ws-b", Role::Owner, now_secs() - 1)),
        ),
        (
            "claims swapped under another signature",
            format!("Bearer {tampered}"),
        ),
        (
            "another workspace's owner",
            format!("Bearer {}", token("ws-a", Role::Owner, later)),
        ),
        (
            "role escalated",
            format!(
                "Bearer {}",
                sign(
                    &hs256,
                    &claims("ws-b", "root", later),
                    JWT_SECRET.as_bytes()
                )
            ),
        ),
        (
            "workspace as a list",
            format!(
                "Bearer {}",
                sign(
                    &hs256,
                    &json!({"sub": "x", "workspace_id": ["ws-a", "ws-b"], "role": "owner", "exp": later}),
                    JWT_SECRET.as_bytes()
                )
            ),
        ),
        ("service key", format!("Bearer {SERVICE_KEY}")),
        ("garbage", "Bearer ....".to_owned()),
        ("huge", format!("Bearer {}", "a".repeat(20_000))),
        ("no scheme", good.clone()),
    ]
}

/// Fails with the tables that changed.
fn same_state(
    before: &std::collections::BTreeMap<String, (usize, String)>,
    app: &App,
    what: &str,
) -> Result<()> {
    let after = fingerprint(app.host.state_dir())?;
    let changed = changed_tables(before, &after);
    ensure!(changed.is_empty(), "{what} wrote: {changed:#?}");
    Ok(())
}

const SECRETS_OF_B: [&str; 2] = ["secret-agent-b", "b-secret-event"];

fn leaks_b(body: &str) -> bool {
    SECRETS_OF_B.iter().any(|s| body.contains(s))
}

#[test]
fn hostile_tokens_roles_and_paths_open_nothing_and_write_nothing() -> Result<()> {
    let scenario = Scenario::new("hostile tokens, roles, paths");
    let app = start(HostOptions::default())?;
    for n in 0..3 {
        let reply = app.service(
            "POST",
            "/v1/usage",
            Some(&event(
                &format!("b-secret-event-{n}"),
                "ws-b",
                "secret-agent-b",
            )),
        )?;
        expect(&reply, 200, "ws-b debit")?;
        let reply = app.service(
            "POST",
            "/v1/usage",
            Some(&event(&format!("a-event-{n}"), "ws-a", "agent-a")),
        )?;
        expect(&reply, 200, "ws-a debit")?;
    }
    scenario.requests(6);
    let before = fingerprint(app.host.state_dir())?;

    // Every route of B, every hostile credential: 401 or 403, no data of B, no write.
    let credentials = hostile_credentials();
    for (method, path, body) in e2e::api::frontend_routes("ws-b", "secret-agent-b") {
        for (what, credential) in &credentials {
            let reply = app.request(
                method,
                &path,
                body.as_ref(),
                &[("authorization", credential)],
            )?;
            scenario.requests(1);
            scenario.faults(1);
            ensure!(
                reply.status == 401 || reply.status == 403,
                "{what}: {method} {path}: {} {}",
                reply.status,
                reply.body
            );
            ensure!(
                !leaks_b(&reply.body),
                "{what}: {method} {path} leaks: {}",
                reply.body
            );
        }
    }
    // A member of B: the banner only (no amount), 403 on everything else.
    for (method, path, body) in e2e::api::frontend_routes("ws-b", "secret-agent-b") {
        let reply = app.user("ws-b", Role::Member, method, &path, body.as_ref())?;
        scenario.requests(1);
        if method == "GET" && path.ends_with("/billing") {
            let body = expect(&reply, 200, "member banner")?;
            let keys: Vec<&String> = body.as_object().context("object")?.keys().collect();
            ensure!(keys == ["message", "status"], "member sees {body}");
        } else {
            ensure!(
                reply.status == 403,
                "member: {method} {path}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
    // Path tricks with A's owner token: never B's data, never a 500.
    for path in [
        "/v1/workspaces/ws-a/../ws-b/billing",
        "/v1/workspaces/ws-a/%2E%2E/ws-b/billing",
        "/v1/workspaces/ws-b%2F..%2Fws-a/billing",
        "/v1/workspaces/ws-a%2F..%2Fws-b/billing",
        "/v1/workspaces/WS-B/billing",
        "/v1/workspaces/ws-b%00/billing",
        "/v1/workspaces/ws-b/billing/",
        "/v1/workspaces//ws-b/billing",
        "/v1/workspaces/ws-a/transactions?workspace_id=ws-b",
        "/v1/workspaces/ws-a/transactions?agent=secret-agent-b",
        "/v1/workspaces/ws-a/agents/secret-agent-b/limits",
        "/v1/workspaces/ws-a/topups/..%2F..%2Fws-b",
    ] {
        let reply = app.user("ws-a", Role::Owner, "GET", path, None)?;
        scenario.requests(1);
        scenario.faults(1);
        ensure!(
            reply.status < 500,
            "{path}: {} {}",
            reply.status,
            reply.body
        );
        ensure!(!leaks_b(&reply.body), "{path} leaks: {}", reply.body);
    }
    same_state(&before, &app, "refused requests")?;

    // A's own views hold nothing of B.
    for rest in [
        "/billing",
        "/transactions?limit=100",
        "/transactions?format=csv",
        "/usage/summary",
    ] {
        let reply = app.user(
            "ws-a",
            Role::Owner,
            "GET",
            &format!("/v1/workspaces/ws-a{rest}"),
            None,
        )?;
        scenario.requests(1);
        let body = expect(&reply, 200, rest)?;
        ensure!(!leaks_b(&reply.body), "{rest} of A leaks B: {body}");
    }
    // B's owner still sees B whole.
    let reply = app.user(
        "ws-b",
        Role::Owner,
        "GET",
        "/v1/workspaces/ws-b/billing",
        None,
    )?;
    ensure!(
        json_of(&reply)["plan_credits_remaining"] == "99.97",
        "{}",
        reply.body
    );
    app.check_invariants()?;
    scenario.invariants_checked();
    scenario.passed();
    Ok(())
}

/// A request with `Content-Length` and a body, over a raw socket.
fn raw_post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n\
         authorization: Bearer {SERVICE_KEY}\r\n{headers}content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[test]
fn oversized_deep_and_overlong_inputs_are_refused_without_writes() -> Result<()> {
    let scenario = Scenario::new("oversized, deep, over-long inputs");
    let app = start(HostOptions::default())?;
    let before = fingerprint(app.host.state_dir())?;
    let wait = Duration::from_secs(20);
    let refused = |what: &str, reply: Option<u16>, allowed: &[u16]| -> Result<()> {
        scenario.requests(1);
        scenario.faults(1);
        let status = reply.with_context(|| format!("{what}: no answer"))?;
        ensure!(
            allowed.contains(&status),
            "{what}: {status}, expected one of {allowed:?}"
        );
        Ok(())
    };

    // 1. Declared bodies over the 256 KiB limit: 413 before anything is read.
    let big = vec![b' '; 300 * 1024];
    for path in [
        "/v1/usage",
        "/v1/usage/batch",
        "/v1/catalog",
        "/webhooks/stripe",
        "/v1/calls",
    ] {
        let reply = raw_exchange(app.host.base_url(), &raw_post(path, "", &big), wait)?;
        refused(&format!("300 KiB to {path}"), reply, &[413, 405])?;
    }
    // 2. A chunked body that grows past the limit: 413 as soon as it does.
    let mut chunked = format!(
        "POST /v1/usage/batch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         authorization: Bearer {SERVICE_KEY}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("{:x}\r\n", 16 * 1024).as_bytes());
        chunked.extend_from_slice(&[b'['; 16 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    refused(
        "chunked 640 KiB",
        raw_exchange(app.host.base_url(), &chunked, wait)?,
        &[413],
    )?;

    // 3. Deeply nested JSON (within the size limit): 400, no stack overflow.
    for (path, body) in [
        ("/v1/usage", "[".repeat(200_000)),
        (
            "/v1/usage/batch",
            format!("{{\"events\": {}", "[".repeat(100_000)),
        ),
        ("/v1/calls", format!("{}{}", "{\"a\":".repeat(50_000), "1")),
        (
            "/v1/catalog",
            format!("{}1{}", "[".repeat(1000), "]".repeat(1000)),
        ),
    ] {
        let method = if path == "/v1/catalog" { "PUT" } else { "POST" };
        let reply = e2e::request(
            method,
            &app.host.url(path),
            Some(&body),
            &[("authorization", &format!("Bearer {SERVICE_KEY}"))],
        )?;
        refused(&format!("deep JSON to {path}"), Some(reply.status), &[400])?;
    }
    // 4. A batch over BATCH_EVENTS_MAX (1,000): refused whole, nothing debited.
    let events: Vec<Value> = (0..1_001)
        .map(|n| event(&format!("over-{n}"), "ws-a", "agent-a"))
        .collect();
    let reply = app.service("POST", "/v1/usage/batch", Some(&json!({"events": events})))?;
    refused("1,001 events", Some(reply.status), &[400, 422])?;
    let reply = app.service("POST", "/v1/usage/batch", Some(&json!({"events": []})))?;
    refused("0 events", Some(reply.status), &[400, 422])?;
    // 5. Absurd numbers and strings: 4xx, never a 500.
    for quantity in [
        json!("1e400"),
        json!("NaN"),
        json!("-0"),
        json!("99999999999999999999999999999"),
        json!("0.0000001"),
        json!(1e308),
        json!("١"),
        json!(""),
        json!(" 1"),
    ] {
        let mut e = event("weird-q", "ws-a", "agent-a");
        e["quantity"] = quantity.clone();
        let reply = app.service("POST", "/v1/usage", Some(&e))?;
        refused(
            &format!("quantity {quantity}"),
            Some(reply.status),
            &[400, 422],
        )?;
    }
    for to in [
        "+1".repeat(5000),
        "+١٢٣٤٥٦٧".to_owned(),
        "+1\u{0}415".to_owned(),
    ] {
        let call = json!({"workspace_id": "ws-a", "agent_id": "agent-a", "call_id": "weird-call",
            "direction": "outbound", "to": to, "from": "+14155550999"});
        let reply = app.service("POST", "/v1/calls", Some(&call))?;
        refused("phone number", Some(reply.status), &[400, 422])?;
    }
    let long_id = event(&"x".repeat(100_000), "ws-a", "agent-a");
    let reply = app.service("POST", "/v1/usage", Some(&long_id))?;
    refused("100 kB event id", Some(reply.status), &[400, 422])?;
    // 6. Giant and numerous headers: refused by the HTTP layer, the host lives on.
    let giant = format!("x-giant: {}\r\n", "g".repeat(512 * 1024));
    refused(
        "512 KiB header",
        raw_exchange(
            app.host.base_url(),
            &raw_post("/v1/usage", &giant, b"{}"),
            wait,
        )?
        .or(Some(431)),
        &[431, 400],
    )?;
    let many: String = (0..200).map(|n| format!("x-h{n}: v\r\n")).collect();
    refused(
        "200 headers",
        raw_exchange(
            app.host.base_url(),
            &raw_post("/v1/usage", &many, b"{}"),
            wait,
        )?,
        &[400, 431],
    )?;
    // 7. Not HTTP at all.
    refused(
        "garbage request line",
        raw_exchange(
            app.host.base_url(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            wait,
        )?
        .or(Some(400)),
        &[400],
    )?;

    same_state(&before, &app, "oversized, deep or over-long requests")?;
    let reply = app.service(
        "POST",
        "/v1/usage",
        Some(&event("after", "ws-a", "agent-a")),
    )?;
    expect(&reply, 200, "a normal debit afterwards")?;
    // The fingerprint does see a write (so its equality above means something).
    let after = fingerprint(app.host.state_dir())?;
    ensure!(
        !changed_tables(&before, &after).is_empty(),
        "a debit left no trace in the fingerprint"
    );
    app.check_invariants()?;
    scenario.invariants_checked();
    scenario.passed();
    Ok(())
}

#[test]
fn slow_clients_are_cut_off_without_slowing_anyone_else() -> Result<()> {
    let scenario = Scenario::new("slowloris and stalled bodies");
    let read_timeout = Duration::from_millis(3_000);
    let app = start(HostOptions::default().arg(format!(
        "--request-read-timeout-ms={}",
        read_timeout.as_millis()
    )))?;
    let slow_count = 24;
    let opened = Instant::now();
    // Slowloris: headers that trickle in and never end.
    let mut slow_headers = Vec::new();
    for n in 0..slow_count {
        let mut stream = connect(app.host.base_url())?;
        stream
            .write_all(format!("POST /v1/usage HTTP/1.1\r\nhost: x\r\nx-slow-{n}: ").as_bytes())?;
        slow_headers.push(stream);
    }
    // Stalled bodies: debits whose body stops half way.
    let mut stalled = Vec::new();
    for n in 0..slow_count {
        let body = event(&format!("stalled-{n}"), "ws-a", "agent-a").to_string();
        let mut stream = connect(app.host.base_url())?;
        let request = raw_post("/v1/usage", "", body.as_bytes());
        stream.write_all(&request[..request.len() - body.len() / 2])?;
        stalled.push(stream);
    }
    scenario.faults(2 * slow_count as u64);
    // Meanwhile, 4 clients debit as usual; one trickles a byte to each slow connection between
    // its own requests (the trickle must not extend the deadline).
    let debits = 40;
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let app = &app;
                scope.spawn(move || -> Result<Vec<Duration>> {
                    let mut times = Vec::new();
                    for n in 0..debits / 4 {
                        let started = Instant::now();
                        let reply = app.service(
                            "POST",
                            "/v1/usage",
                            Some(&event(&format!("live-{w}-{n}"), "ws-a", "agent-a")),
                        )?;
                        expect(&reply, 200, "live debit")?;
                        times.push(started.elapsed());
                    }
                    Ok(times)
                })
            })
            .collect();
        for stream in &mut slow_headers {
            let _ = stream.write_all(b"z");
        }
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect::<Result<Vec<_>>>()
            .map(|all| all.into_iter().flatten().collect())
    })?;
    scenario.requests(debits as u64);
    let served_by = opened.elapsed();
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    ensure!(
        served_by < read_timeout,
        "live clients waited for the slow ones: all served after {served_by:?} (slowest {slowest:?})"
    );
    // Every slow connection is cut off, none is left holding a request.
    for (what, streams) in [
        ("slow headers", &mut slow_headers),
        ("stalled body", &mut stalled),
    ] {
        for stream in streams.iter_mut() {
            let cut = wait_for_cutoff(stream, read_timeout + Duration::from_secs(8))?;
            ensure!(
                matches!(cut, Cutoff::Closed(None | Some(400 | 408))),
                "{what}: {cut:?} after {:?}",
                opened.elapsed()
            );
        }
    }
    // No stalled debit landed; every live one did.
    let billing = expect(
        &app.user(
            "ws-a",
            Role::Owner,
            "GET",
            "/v1/workspaces/ws-a/billing",
            None,
        )?,
        200,
        "billing",
    )?;
    ensure!(billing["plan_credits_remaining"] == "99.6", "{billing}");
    let db = ledger::native::NativeDb::open(app.host.state_dir().join("sqlite_db.db"))?;
    use ledger::Storage as _;
    let rows = futures::executor::block_on(db.query(
        "SELECT COUNT(*) FROM usage_events WHERE event_id LIKE 'stalled-%'",
        &[],
    ))?;
    ensure!(
        matches!(
            rows.first().and_then(|r| r.first()),
            Some(ledger::SqlValue::Integer(0))
        ),
        "a stalled request was debited: {rows:?}"
    );
    app.check_invariants()?;
    scenario.invariants_checked();
    eprintln!(
        "slow clients: {} cut off; {debits} live debits served in {served_by:?}, slowest {slowest:?}",
        2 * slow_count
    );
    scenario.passed();
    Ok(())
}
