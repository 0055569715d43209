//! Conformance test component: exercises each host interface behind a small HTTP API, and
//! exports a cron handler from the same .wasm (HTTP and cron in one component).
//!
//! Responses are plain text; errors are `ERR <debug>` with status 200 so tests can assert the
//! exact error the host returned.

use spin_sdk::http::{IntoResponse, Request, StatusCode};
use spin_sdk::sqlite::{Connection, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-instance counter: shows whether instances are reused.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), decode(v)),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.push(b'%'),
                }
                i += 3;
                continue;
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(req: &Request, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_owned()
}

fn arg<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map(String::as_str).unwrap_or("")
}

/// The HTTP handler.
#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let full_path = req.uri().path().to_owned();
    // The `restricted` component is mounted under /restricted/...: same endpoints, no rights.
    let path = full_path.strip_prefix("/restricted").unwrap_or(&full_path);
    let q = query(&req);
    if path == "/body" {
        // Echoes the request body `repeat` times (large responses exercise streaming).
        use spin_sdk::http::body::IncomingBodyExt as _;
        let repeat = arg(&q, "repeat").parse().unwrap_or(1usize).min(100);
        return match req.into_body().bytes().await {
            Ok(bytes) => (
                StatusCode::OK,
                String::from_utf8_lossy(&bytes).repeat(repeat),
            ),
            Err(e) => (StatusCode::BAD_REQUEST, format!("ERR {e:?}")),
        };
    }
    let body = match path {
        p if p.starts_with("/echo") || p.starts_with("/route") => echo(&req),
        "/counter" => (COUNTER.fetch_add(1, Ordering::SeqCst) + 1).to_string(),
        "/sleep" => {
            let ms = arg(&q, "ms").parse().unwrap_or(0u64).min(5_000);
            let before = COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
            spin_sdk::time::sleep(std::time::Duration::from_millis(ms)).await;
            format!("{before}")
        }
        "/trap" => panic!("trap requested"),
        "/var" => match spin_sdk::variables::get(arg(&q, "name")).await {
            Ok(v) => v,
            Err(e) => format!("ERR {e:?}"),
        },
        "/kv" => kv(&q).await.unwrap_or_else(|e| format!("ERR {e:?}")),
        "/sql" => sql(&q).await.unwrap_or_else(|e| format!("ERR {e:?}")),
        "/out" => outbound(arg(&q, "url")).await,
        _ => return (StatusCode::NOT_FOUND, "no such test endpoint".to_owned()),
    };
    (StatusCode::OK, body)
}

fn echo(req: &Request) -> String {
    [
        "spin-full-url",
        "spin-path-info",
        "spin-matched-route",
        "spin-raw-component-route",
        "spin-component-route",
        "spin-base-path",
        "spin-client-addr",
        "spin-path-match-id",
    ]
    .iter()
    .map(|h| format!("{h}={}\n", header(req, h)))
    .collect()
}

async fn kv(q: &HashMap<String, String>) -> Result<String, spin_sdk::key_value::Error> {
    let store =
        spin_sdk::key_value::Store::open(q.get("store").map_or("default", String::as_str)).await?;
    let key = arg(q, "k");
    Ok(match arg(q, "op") {
        "open" => "ok".to_owned(),
        "set" => {
            store.set(key, arg(q, "v").as_bytes()).await?;
            "ok".to_owned()
        }
        "get" => match store.get(key).await? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => "<none>".to_owned(),
        },
        "delete" => {
            store.delete(key).await?;
            "ok".to_owned()
        }
        "exists" => store.exists(key).await?.to_string(),
        "keys" => {
            let mut keys = store.get_keys().await.collect().await?;
            keys.sort();
            keys.join(",")
        }
        other => format!("unknown op {other}"),
    })
}

fn show(v: &Value) -> String {
    match v {
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => format!("{b:?}"),
        Value::Null => "NULL".to_owned(),
    }
}

async fn sql(q: &HashMap<String, String>) -> Result<String, spin_sdk::sqlite::Error> {
    let conn = Connection::open(q.get("db").map_or("default", String::as_str)).await?;
    let v = arg(q, "v").to_owned();
    Ok(match arg(q, "op") {
        "open" => "ok".to_owned(),
        "setup" => {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)",
                [],
            )
            .await?
            .collect()
            .await?;
            conn.execute(
                "CREATE TRIGGER IF NOT EXISTS no_forbidden BEFORE INSERT ON items \
                 WHEN NEW.v = 'forbidden' BEGIN SELECT RAISE(ABORT, 'forbidden value'); END",
                [],
            )
            .await?
            .collect()
            .await?;
            "ok".to_owned()
        }
        "insert" => {
            conn.execute("INSERT INTO items (v) VALUES (?)", [Value::Text(v)])
                .await?
                .collect()
                .await?;
            format!(
                "rowid={} changes={}",
                conn.last_insert_rowid().await,
                conn.changes().await
            )
        }
        "list" => {
            let rows = conn
                .execute("SELECT id, v FROM items ORDER BY id", [])
                .await?;
            let cols = rows.columns().join(",");
            let rows = rows.collect().await?;
            let lines: Vec<String> = rows
                .iter()
                .map(|r| r.values.iter().map(show).collect::<Vec<_>>().join("|"))
                .collect();
            format!("{cols}\n{}", lines.join("\n"))
        }
        "types" => {
            let rows = conn
                .execute(
                    "SELECT ?, ?, ?, ?, ?",
                    [
                        Value::Integer(-7),
                        Value::Real(1.5),
                        Value::Text("t".to_owned()),
                        Value::Blob(vec![1, 2]),
                        Value::Null,
                    ],
                )
                .await?
                .collect()
                .await?;
            rows.iter()
                .map(|r| r.values.iter().map(show).collect::<Vec<_>>().join("|"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        "cron_runs" => {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS cron_runs (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL)",
                [],
            )
            .await?
            .collect()
            .await?;
            let rows = conn
                .execute("SELECT count(*) FROM cron_runs", [])
                .await?
                .collect()
                .await?;
            rows.first()
                .and_then(|r| r.values.first())
                .map(show)
                .unwrap_or_default()
        }
        "undrained" => {
            // Leave a row stream undrained, then use the same connection again.
            let rows = conn.execute("SELECT id, v FROM items", []).await?;
            let changes = conn.changes().await;
            drop(rows);
            let again = conn
                .execute("SELECT count(*) FROM items", [])
                .await?
                .collect()
                .await?;
            format!(
                "changes={changes} count={}",
                again
                    .first()
                    .and_then(|r| r.values.first())
                    .map(show)
                    .unwrap_or_default()
            )
        }
        "attach" => {
            conn.execute("ATTACH DATABASE 'elsewhere.db' AS elsewhere", [])
                .await?
                .collect()
                .await?;
            "attached".to_owned()
        }
        "bad" => {
            conn.execute("SELEC nonsense", []).await?.collect().await?;
            "unexpected".to_owned()
        }
        other => format!("unknown op {other}"),
    })
}

async fn outbound(url: &str) -> String {
    match spin_sdk::http::get(url).await {
        Ok(res) => format!("status={}", res.status().as_u16()),
        Err(e) => format!("ERR {e:?}"),
    }
}

/// The cron handler: records a run in the default database; fails on request.
struct Cron;

impl spin_cron::CronHandler for Cron {
    async fn handle(timestamp_secs: u64) -> Result<(), String> {
        if spin_sdk::variables::get("cron_should_fail")
            .await
            .ok()
            .as_deref()
            == Some("true")
        {
            return Err("cron failure requested".to_owned());
        }
        let conn = Connection::open("default")
            .await
            .map_err(|e| format!("{e:?}"))?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS cron_runs (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL)",
            [],
        )
        .await
        .map_err(|e| format!("{e:?}"))?
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
        let ts = i64::try_from(timestamp_secs).map_err(|e| e.to_string())?;
        conn.execute(
            "INSERT INTO cron_runs (ts) VALUES (?)",
            [Value::Integer(ts)],
        )
        .await
        .map_err(|e| format!("{e:?}"))?
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}

spin_cron::export_cron!(Cron);
