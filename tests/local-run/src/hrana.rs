//! The ledger's [`Storage`] over a libSQL server's HTTP API (Hrana v2 `/v2/pipeline`), for tests
//! that audit or prepare a database served by `sqld`: a client of its own, written from the
//! protocol, so a test never checks the host's libSQL client with itself.
//!
//! One stream per [`HranaDb`]: each statement is one request carrying the stream's baton, so
//! `BEGIN IMMEDIATE` ... `COMMIT` across calls is one transaction, as on a SQLite connection.

use std::cell::RefCell;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ledger::{Row, SqlValue, Storage, StorageError};
use serde_json::{Value, json};

/// One Hrana stream on a libSQL server.
pub struct HranaDb {
    pipeline_url: String,
    baton: RefCell<Option<String>>,
}

impl HranaDb {
    /// A stream on the server at `base_url` (`http://127.0.0.1:PORT`), opened by the first
    /// statement.
    pub fn new(base_url: &str) -> Self {
        Self {
            pipeline_url: format!("{}/v2/pipeline", base_url.trim_end_matches('/')),
            baton: RefCell::new(None),
        }
    }

    fn run(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StorageError> {
        self.try_run(sql, params).map_err(|error| {
            // The server's own message, classified as rusqlite's are ("constraint failed",
            // "database is locked", the triggers' "ledger:").
            StorageError::from_sqlite_message(format!("{error:#}"))
        })
    }

    fn try_run(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>> {
        let args: Vec<Value> = params.iter().map(to_hrana).collect();
        let request = json!({
            "baton": *self.baton.borrow(),
            "requests": [{"type": "execute", "stmt": {"sql": sql, "args": args}}],
        });
        let reply = crate::post_json(&self.pipeline_url, &request.to_string(), &[])?;
        anyhow::ensure!(
            reply.status == 200,
            "sqld answered {}: {}",
            reply.status,
            reply.body
        );
        let body: Value = serde_json::from_str(&reply.body).context("sqld's answer")?;
        *self.baton.borrow_mut() = body["baton"].as_str().map(str::to_owned);
        let result = &body["results"][0];
        if result["type"] != "ok" {
            anyhow::bail!("{}", result["error"]["message"]);
        }
        result["response"]["result"]["rows"]
            .as_array()
            .context("rows")?
            .iter()
            .map(|row| {
                row.as_array()
                    .context("row")?
                    .iter()
                    .map(from_hrana)
                    .collect()
            })
            .collect()
    }
}

impl Storage for HranaDb {
    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<(), StorageError> {
        self.run(sql, params).map(|_| ())
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StorageError> {
        self.run(sql, params)
    }
}

fn to_hrana(value: &SqlValue) -> Value {
    match value {
        SqlValue::Null => json!({"type": "null"}),
        SqlValue::Integer(v) => json!({"type": "integer", "value": v.to_string()}),
        SqlValue::Real(v) => json!({"type": "float", "value": v}),
        SqlValue::Text(v) => json!({"type": "text", "value": v}),
        SqlValue::Blob(v) => json!({"type": "blob", "base64": STANDARD.encode(v)}),
    }
}

fn from_hrana(value: &Value) -> Result<SqlValue> {
    Ok(match value["type"].as_str() {
        Some("null") => SqlValue::Null,
        Some("integer") => SqlValue::Integer(
            value["value"]
                .as_str()
                .context("integer")?
                .parse()
                .context("integer")?,
        ),
        Some("float") => SqlValue::Real(value["value"].as_f64().context("float")?),
        Some("text") => SqlValue::Text(value["value"].as_str().context("text")?.to_owned()),
        Some("blob") => SqlValue::Blob(
            STANDARD
                .decode(value["base64"].as_str().context("blob")?)
                .context("blob")?,
        ),
        other => anyhow::bail!("unknown Hrana value type {other:?}"),
    })
}
