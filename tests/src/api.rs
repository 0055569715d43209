//! The product's API as its clients use it: the real `spin.toml` in the local host, service-key
//! calls, user tokens minted with the app's JWT secret, and the ledger's invariants checked on
//! the host's own SQLite file.

use anyhow::{Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{HostOptions, Reply, TestHost, workspace_root};

pub use local_run::credentials::{JWT_SECRET, Role, SERVICE_KEY, now_secs, sign, token};

/// The whole app, served by the local host on a fresh state dir, test clocks enabled.
pub struct App {
    /// The running host.
    pub host: TestHost,
    /// The runtime-config file the host serves with, if any (its stores are then elsewhere).
    runtime_config: Option<std::path::PathBuf>,
}

/// The app's secrets and test clocks, on top of `extra`.
fn app_options(extra: HostOptions) -> HostOptions {
    extra
        .env("SPIN_VARIABLE_SERVICE_API_KEY", SERVICE_KEY)
        .env("SPIN_VARIABLE_AUTH_JWT_SECRET", JWT_SECRET)
        .env("SPIN_VARIABLE_TEST_CLOCKS_ENABLED", "true")
}

impl App {
    /// Starts the app with `extra` host options (e.g. instance reuse flags).
    pub fn start_with(extra: HostOptions) -> Result<Self> {
        let options = app_options(extra).arg("--no-cron");
        let host = TestHost::start(workspace_root().join("spin.toml"), options)?;
        Ok(Self {
            host,
            runtime_config: None,
        })
    }

    /// Starts the app as one replica over the stores a runtime-config file names (Spin's
    /// `--runtime-config-file`), with `extra` host options.
    pub fn start_on(runtime_config: &std::path::Path, extra: HostOptions) -> Result<Self> {
        let mut app = Self::start_with(
            extra
                .arg("--runtime-config-file")
                .arg(runtime_config.display().to_string()),
        )?;
        app.runtime_config = Some(runtime_config.to_owned());
        Ok(app)
    }

    /// Starts the app with the host's defaults.
    pub fn start() -> Result<Self> {
        Self::start_with(HostOptions::default())
    }

    /// Starts the app on real Spin (`bin`, its HTTP triggers) as one replica over the stores a
    /// runtime-config file names, with the instance settings the README recommends.
    pub fn start_spin_on(
        bin: &std::path::Path,
        runtime_config: &std::path::Path,
        extra: HostOptions,
    ) -> Result<Self> {
        let options = app_options(extra)
            .arg("--runtime-config-file")
            .arg(runtime_config.display().to_string())
            .arg("--max-instance-reuse-count")
            .arg("10000")
            .arg("--idle-instance-timeout")
            .arg("60s");
        let host = TestHost::start_spin(bin, workspace_root().join("spin.toml"), options)?;
        Ok(Self {
            host,
            runtime_config: Some(runtime_config.to_owned()),
        })
    }

    /// A request with the service key.
    pub fn service(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply> {
        self.request(
            method,
            path,
            body,
            &[("authorization", &format!("Bearer {SERVICE_KEY}"))],
        )
    }

    /// A request with a user token for `workspace` and `role`.
    pub fn user(
        &self,
        workspace: &str,
        role: Role,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let token = token(workspace, role, now_secs() + 3600);
        self.request(
            method,
            path,
            body,
            &[("authorization", &format!("Bearer {token}"))],
        )
    }

    /// A request as `workspace`'s owner to `/v1/workspaces/{workspace}{rest}`.
    pub fn owner(
        &self,
        workspace: &str,
        method: &str,
        rest: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let path = format!("/v1/workspaces/{workspace}{rest}");
        self.user(workspace, Role::Owner, method, &path, body)
    }

    /// Runs component `component`'s cron export once on this app's state, as the scheduler would
    /// (`local-host cron fire`), with the app's secrets plus `env`; fails unless it succeeds.
    pub fn fire_cron(&self, component: &str, env: &[(&str, &str)]) -> Result<()> {
        let output = std::process::Command::new(crate::host_binary())
            .args(["cron", "fire", "--component", component, "--manifest"])
            .arg(workspace_root().join("spin.toml"))
            .arg("--state-dir")
            .arg(self.host.state_dir())
            .arg("--cache-dir")
            .arg(crate::shared_cache_dir())
            .args(self.runtime_config.iter().flat_map(|file| {
                [
                    std::ffi::OsStr::new("--runtime-config-file"),
                    file.as_os_str(),
                ]
            }))
            .env("SPIN_VARIABLE_SERVICE_API_KEY", SERVICE_KEY)
            .env("SPIN_VARIABLE_AUTH_JWT_SECRET", JWT_SECRET)
            .envs(env.iter().copied())
            .output()
            .context("run local-host cron fire")?;
        anyhow::ensure!(
            output.status.success(),
            "cron fire failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// A request with explicit headers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply> {
        let text = body.map(Value::to_string);
        crate::request(method, &self.host.url(path), text.as_deref(), headers)
    }

    /// Creates a workspace (service call) and returns its id.
    pub fn provision(&self, workspace: &str) -> Result<()> {
        let body = json!({"name": format!("Workspace {workspace}"), "email": format!("billing@{workspace}.example")});
        let reply = self.service("PUT", &format!("/v1/workspaces/{workspace}"), Some(&body))?;
        anyhow::ensure!(
            reply.status == 200 || reply.status == 201,
            "provision {workspace}: {} {}",
            reply.status,
            reply.body
        );
        Ok(())
    }

    /// Subscribes `workspace` to `plan_id` through the frontend route, as its owner; fails
    /// unless it answers 200.
    pub fn subscribe(&self, workspace: &str, plan_id: &str) -> Result<Value> {
        let reply = self.user(
            workspace,
            Role::Owner,
            "POST",
            &format!("/v1/workspaces/{workspace}/subscription"),
            Some(&json!({"plan_id": plan_id})),
        )?;
        expect(&reply, 200, "subscribe")
    }

    /// Runs every ledger invariant on the host's database; an error lists what broke.
    pub fn check_invariants(&self) -> Result<()> {
        let path = self.host.state_dir().join("sqlite_db.db");
        let db = ledger::native::NativeDb::open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let violations = futures::executor::block_on(ledger::audit::check(&db))?;
        anyhow::ensure!(
            violations.is_empty(),
            "ledger invariants broken: {violations:#?}"
        );
        Ok(())
    }

    /// Makes every pending payment look [`ledger::payments::RECONCILE_AFTER_SECS`] older (R21's
    /// reconciliation uses the real clock), writing the host's SQLite file as the ledger does.
    pub fn age_pending_payments(&self) -> Result<()> {
        use ledger::Storage as _;
        let path = self.host.state_dir().join("sqlite_db.db");
        let db = ledger::native::NativeDb::open(&path)?;
        let back = ledger::SqlValue::Integer(ledger::payments::RECONCILE_AFTER_SECS + 60);
        futures::executor::block_on(db.execute(
            "UPDATE payments SET updated_at = updated_at - ?1 WHERE status = 'pending'",
            &[back],
        ))?;
        Ok(())
    }
}

/// The body as JSON (Null if it is not JSON).
pub fn json_of(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body).unwrap_or(Value::Null)
}

/// The reply's JSON body, if its status is `status` (else an error naming `what`).
pub fn expect(reply: &Reply, status: u16, what: &str) -> Result<Value> {
    anyhow::ensure!(
        reply.status == status,
        "{what}: expected {status}, got {} {}",
        reply.status,
        reply.body
    );
    Ok(json_of(reply))
}

/// The reply's `error` object, if its status is `status` and its code `code`.
pub fn expect_error(reply: &Reply, status: u16, code: &str, what: &str) -> Result<Value> {
    let body = expect(reply, status, what)?;
    anyhow::ensure!(
        body["error"]["code"] == code,
        "{what}: expected code {code}, got {}",
        reply.body
    );
    Ok(body["error"].clone())
}

/// A decimal string of the API (`"12.5"`, `"-0.000001"`) in micro-units.
pub fn micros_of(value: &Value) -> Result<i64> {
    let text = value.as_str().context("not a decimal string")?;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    anyhow::ensure!(fraction.len() <= 6, "too many decimals in {text}");
    let whole: i64 = whole.parse().with_context(|| format!("decimal {text}"))?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}")
            .parse()
            .with_context(|| format!("decimal {text}"))?
    };
    let value = whole * 1_000_000 + fraction;
    Ok(if negative { -value } else { value })
}

/// An RFC 3339 time of the API in Unix seconds.
pub fn parse_time(value: &Value) -> Result<i64> {
    let text = value.as_str().context("not a time string")?;
    ledger::calendar::parse_rfc3339("time", text).map_err(|e| anyhow::anyhow!("{text}: {e}"))
}

/// `v1` as Stripe computes it: hex HMAC-SHA256 of `"{t}.{payload}"`.
pub fn stripe_signature(secret: &str, timestamp: i64, payload: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Posts `payload` to the app's webhook, signed now with `secret` as Stripe signs.
pub fn deliver_signed(app: &App, payload: &str, secret: &str) -> Result<Reply> {
    let t = now_secs();
    let header = format!("t={t},v1={}", stripe_signature(secret, t, payload));
    crate::post_json(
        &app.host.url("/webhooks/stripe"),
        payload,
        &[("stripe-signature", header.as_str())],
    )
}

/// A catalog for tests: USD at 1 credit per dollar, top-ups from 10 to 5,000, 900 s inbound
/// grace, 120 s holds, low balance under 5, five automatic recharges a day; with `plans` and
/// `rates`. Tests change a setting with `catalog["settings"]["..."] = ...`.
pub fn test_catalog(plans: Value, rates: Value) -> Value {
    json!({
        "settings": {
            "currency": "USD",
            "credit_price": "1",
            "topup_min": "10",
            "topup_max": "5000",
            "inbound_grace_secs": 900,
            "hold_timeout_secs": 120,
            "low_balance_threshold": "5",
            "auto_recharge_max_per_day": 5
        },
        "plans": plans,
        "rates": rates
    })
}

/// Every route of the `user-api` component under workspace `ws` (agent `agent` for the limits),
/// reads and writes, each with a plausible body: what authorization tests walk through.
pub fn frontend_routes(ws: &str, agent: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let p = |rest: &str| format!("/v1/workspaces/{ws}{rest}");
    vec![
        ("GET", p("/billing"), None),
        ("POST", p("/subscription"), Some(json!({"plan_id": "free"}))),
        ("GET", p("/subscription/preview?plan_id=free"), None),
        ("DELETE", p("/subscription/pending-change"), None),
        ("POST", p("/payment-method/setup"), Some(json!({}))),
        ("POST", p("/payment-method/refresh"), Some(json!({}))),
        ("POST", p("/topups"), Some(json!({"amount": "20"}))),
        ("GET", p("/topups/tp_1"), None),
        (
            "PUT",
            p("/auto-recharge"),
            Some(json!({"enabled": false, "threshold": "5", "amount": "20"})),
        ),
        ("GET", p("/agents"), None),
        ("GET", p(&format!("/agents/{agent}/limits")), None),
        (
            "PUT",
            p(&format!("/agents/{agent}/limits")),
            Some(json!({"overage_policy": "stop"})),
        ),
        ("GET", p("/transactions"), None),
        ("GET", p("/transactions?format=csv"), None),
        ("GET", p("/usage/summary"), None),
        ("GET", p("/invoices"), None),
        ("POST", p("/billing-portal"), Some(json!({}))),
    ]
}
