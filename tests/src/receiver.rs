//! A webhook endpoint for the notification tests: `tests/receiver/webhook_receiver.py`, which
//! checks every signature with PyPI `standardwebhooks` (installed by `scripts/env.sh`) and keeps
//! what it accepted. Killed when dropped.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use crate::workspace_root;

/// A Standard Webhooks secret for the tests (`whsec_` + base64 of 24 bytes).
pub const SECRET: &str = "whsec_dGVzdC1ub3RpZmljYXRpb25zLXNlY3JldC0x";

/// One verified delivery, as the receiver saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The `webhook-id` header.
    pub webhook_id: String,
    /// What the receiver answered.
    pub status: u16,
    /// The verified payload.
    pub event: Value,
}

/// The running receiver.
pub struct Receiver {
    child: Child,
    port: u16,
}

impl Receiver {
    /// Starts a receiver that verifies with `secret`, on a free port.
    pub fn start(secret: &str) -> Result<Self> {
        Self::start_on(secret, 0)
    }

    /// Starts a receiver that verifies with `secret`, on `port` (0: a free one).
    pub fn start_on(secret: &str, port: u16) -> Result<Self> {
        let script = workspace_root().join("tests/receiver/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(secret)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", script.display()))?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("receiver port")?;
        let port = line
            .trim()
            .parse()
            .with_context(|| format!("receiver port {line:?}"))?;
        Ok(Self { child, port })
    }

    /// `http://127.0.0.1:PORT`: what `notifications_origin` must allow.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The endpoint: what `notifications_url` names.
    pub fn url(&self) -> String {
        format!("{}/hooks", self.origin())
    }

    /// Answers every later webhook with `status`, after `delay_ms`.
    pub fn answer(&self, status: u16, delay_ms: u64) -> Result<()> {
        let body = json!({"status": status, "delay_ms": delay_ms}).to_string();
        let reply = crate::post_json(&format!("{}/mode", self.origin()), &body, &[])?;
        ensure!(reply.status == 204, "mode: {} {}", reply.status, reply.body);
        Ok(())
    }

    /// Every verified delivery in order of arrival, and how many failed verification.
    pub fn received(&self) -> Result<(Vec<Received>, u64)> {
        let reply = crate::get(&format!("{}/received", self.origin()))?;
        let body: Value = serde_json::from_str(&reply.body).context("received: JSON")?;
        let accepted = body["accepted"]
            .as_array()
            .context("accepted")?
            .iter()
            .map(|item| Received {
                webhook_id: item["webhook_id"].as_str().unwrap_or_default().to_owned(),
                status: item["status"].as_u64().unwrap_or_default() as u16,
                event: item["event"].clone(),
            })
            .collect();
        Ok((accepted, body["rejected"].as_u64().unwrap_or(u64::MAX)))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
