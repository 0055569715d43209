//! The loads a voice platform really makes (issue 13), each measured on every runtime:
//!
//! - `campaign`: one agent with 1,000 calls in progress while debits and authorize → heartbeat →
//!   end cycles run on it, against the same with no call in progress;
//! - `tenants`: 10,000 workspaces, traffic skewed (a few hot workspaces take most requests);
//! - `mixed`: about 70% debits, 20% heartbeats, 10% authorize/end, over the same tenants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::Full;

use crate::data::{self, Spec, workspace_id};
use crate::load::{self, LoadResult, MakeRequest, mix};
use crate::runtime::{self, Runtime};

/// Calls left in progress on the campaign's agent.
pub const CAMPAIGN_CALLS: usize = 1_000;
/// The campaign's workspace (of the 1,000-workspace set) and agent.
const CAMPAIGN_WS: u64 = 0;
const CAMPAIGN_AGENT: &str = "campaign";
/// Calls each mixed-load client keeps in progress.
const MIXED_CALLS_PER_CLIENT: u64 = 8;

/// The many-tenants data set: 10,000 workspaces on a paid plan with a wallet.
pub fn tenants_spec() -> Spec {
    Spec {
        workspaces: 10_000,
        plan: "professional",
        age_days: 0,
        debits_per_workspace: 4,
    }
}

/// A workspace of `workspaces`, skewed: rank `floor(n^u) - 1` for `u` uniform in [0, 1), so a
/// quarter of the requests go to the 10 hottest of 10,000 workspaces and half to the 100
/// hottest (roughly Zipf's law with exponent 1, as usage across a platform's customers is).
pub fn skewed_workspace(workspaces: u64, seed: u64) -> u64 {
    let u = (mix(seed) >> 11) as f64 / (1u64 << 53) as f64;
    ((workspaces as f64).powf(u).floor() as u64).saturating_sub(1) % workspaces
}

fn service(
    method: http::Method,
    path: &str,
    body: serde_json::Value,
) -> http::Request<Full<Bytes>> {
    load::json_request(
        method,
        path,
        Some(crate::host::SERVICE_KEY),
        body.to_string(),
    )
}

/// `POST /v1/usage` of one message.
pub fn debit(ws: &str, agent: &str, id: &str) -> http::Request<Full<Bytes>> {
    service(
        http::Method::POST,
        "/v1/usage",
        serde_json::json!({
            "id": id, "workspace_id": ws, "agent_id": agent, "kind": "message", "quantity": "1",
        }),
    )
}

/// `POST /v1/calls` of an outbound call.
pub fn authorize(ws: &str, agent: &str, call_id: &str) -> http::Request<Full<Bytes>> {
    service(
        http::Method::POST,
        "/v1/calls",
        serde_json::json!({
            "workspace_id": ws, "agent_id": agent, "call_id": call_id, "direction": "outbound",
            "to": "+14155550100", "from": "+14155550199",
        }),
    )
}

/// `POST /v1/calls/{id}/heartbeat`.
pub fn heartbeat(call_id: &str, elapsed_secs: u64) -> http::Request<Full<Bytes>> {
    service(
        http::Method::POST,
        &format!("/v1/calls/{call_id}/heartbeat"),
        serde_json::json!({ "elapsed_seconds": elapsed_secs }),
    )
}

/// `POST /v1/calls/{id}/end`.
pub fn end(call_id: &str, duration_secs: u64) -> http::Request<Full<Bytes>> {
    service(
        http::Method::POST,
        &format!("/v1/calls/{call_id}/end"),
        serde_json::json!({ "duration_seconds": duration_secs }),
    )
}

/// Sends each request on a fresh connection (set-up only, never measured); every answer must be
/// 2xx.
pub fn send_each(addr: &str, requests: Vec<http::Request<Full<Bytes>>>) -> Result<()> {
    for request in requests {
        let path = request.uri().path().to_owned();
        let (status, body) = crate::host::send_once(addr, request)?;
        if !(200..300).contains(&status) {
            bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
        }
    }
    Ok(())
}

/// Makes holds outlive the bench (`hold_timeout_secs` 86,400), so that calls left in progress
/// are never posted as expired in the middle of a measurement.
pub fn long_holds(addr: &str) -> Result<()> {
    crate::host::edit_catalog(addr, |catalog| {
        catalog["settings"]["hold_timeout_secs"] = 86_400.into();
        Ok(())
    })
}

/// What the campaign measured on one runtime.
#[derive(Default)]
pub struct Campaign {
    /// Debits, by (calls in progress, clients).
    pub debits: BTreeMap<(usize, usize), LoadResult>,
    /// authorize → heartbeat → end cycles, by (calls in progress, clients).
    pub cycles: BTreeMap<(usize, usize), LoadResult>,
    /// authorize → end cycles with no call in progress, by clients.
    pub short_cycles: BTreeMap<usize, LoadResult>,
}

/// Cycles of `steps` requests per call (2: authorize → end; 3: with a heartbeat between).
fn cycles(tag: String, steps: u64) -> MakeRequest {
    let ws = workspace_id(CAMPAIGN_WS);
    Arc::new(move |client, seq| {
        let call = format!("{tag}-{client}-{}", seq / steps);
        match (seq % steps, steps) {
            (0, _) => authorize(&ws, CAMPAIGN_AGENT, &call),
            (1, 3) => heartbeat(&call, 30),
            _ => end(&call, 45),
        }
    })
}

/// The campaign shape on `runtime`: debits and call cycles on one agent, first with no call in
/// progress, then with [`CAMPAIGN_CALLS`].
pub fn campaign(
    runtime: &Runtime,
    set: &std::path::Path,
    clients: &[usize],
    warmup: Duration,
    run: Duration,
) -> Result<Campaign> {
    let app = runtime::start_on_copy(runtime, set)?;
    let addr = app.addr.clone();
    long_holds(&addr)?;
    let tag = crate::run_tag();
    let ws = workspace_id(CAMPAIGN_WS);
    let mut out = Campaign::default();
    for in_progress in [0, CAMPAIGN_CALLS] {
        if in_progress > 0 {
            let holds = (0..in_progress)
                .map(|n| authorize(&ws, CAMPAIGN_AGENT, &format!("{tag}-campaign-{n}")))
                .collect();
            send_each(&addr, holds).context("1,000 calls in progress")?;
        }
        for &c in clients {
            let prefix = format!("{tag}-d{in_progress}-{c}");
            let ws = ws.clone();
            let make: MakeRequest = Arc::new(move |client, seq| {
                debit(&ws, CAMPAIGN_AGENT, &format!("{prefix}-{client}-{seq}"))
            });
            out.debits
                .insert((in_progress, c), load::run(&addr, c, warmup, run, make)?);
        }
        for &c in clients.iter().filter(|c| **c > 1) {
            let make = cycles(format!("{tag}-c{in_progress}-{c}"), 3);
            out.cycles
                .insert((in_progress, c), load::run(&addr, c, warmup, run, make)?);
            if in_progress == 0 {
                let make = cycles(format!("{tag}-s-{c}"), 2);
                out.short_cycles
                    .insert(c, load::run(&addr, c, warmup, run, make)?);
            }
        }
    }
    Ok(out)
}

/// Debits over the many-tenants set, skewed, at each client count.
pub fn tenants(
    runtime: &Runtime,
    set: &std::path::Path,
    clients: &[usize],
    warmup: Duration,
    run: Duration,
) -> Result<Vec<LoadResult>> {
    let app = runtime::start_on_copy(runtime, set)?;
    let tag = crate::run_tag();
    let workspaces = tenants_spec().workspaces;
    clients
        .iter()
        .map(|&c| {
            let prefix = format!("{tag}-t{c}");
            let make: MakeRequest = Arc::new(move |client, seq| {
                let n = ((client as u64) << 40) | seq;
                let ws = workspace_id(skewed_workspace(workspaces, n));
                let agent = format!("agent{}", mix(n ^ 0xa9e) % 8);
                debit(&ws, &agent, &format!("{prefix}-{client}-{seq}"))
            });
            load::run(&app.addr, c, warmup, run, make)
        })
        .collect()
}

/// The mixed load over the many-tenants set: per client, blocks of 20 requests (14 debits,
/// 4 heartbeats, 1 authorization and 1 end), each client keeping
/// [`MIXED_CALLS_PER_CLIENT`] calls in progress.
pub fn mixed(
    runtime: &Runtime,
    set: &std::path::Path,
    clients: &[usize],
    warmup: Duration,
    run: Duration,
) -> Result<Vec<LoadResult>> {
    let app = runtime::start_on_copy(runtime, set)?;
    let tag = crate::run_tag();
    let workspaces = tenants_spec().workspaces;
    clients
        .iter()
        .map(|&c| {
            let pick: PickWorkspace = Arc::new(move |seed| skewed_workspace(workspaces, seed));
            let make = mixed_requests(format!("{tag}-x{c}"), pick);
            load::run(&app.addr, c, warmup, run, make)
        })
        .collect()
}

/// Picks a workspace number from a pseudo-random seed.
pub type PickWorkspace = Arc<dyn Fn(u64) -> u64 + Send + Sync>;

/// The mixed load's requests: per client, blocks of 20 requests (14 debits, 4 heartbeats of the
/// client's calls authorized 1 to 4 blocks before, 1 authorization and 1 end of the call
/// authorized [`MIXED_CALLS_PER_CLIENT`] blocks before), on workspaces chosen by `pick`. A
/// client's requests must be sent in order (a call's heartbeats after its authorization).
pub fn mixed_requests(prefix: String, pick: PickWorkspace) -> MakeRequest {
    Arc::new(move |client, seq| {
        let (block, position) = (seq / 20, seq % 20);
        let call_ws = |k: u64| workspace_id(pick(mix((client as u64) << 32 | k)));
        let call = |k: u64| format!("{prefix}-{client}-{k}");
        let older = |back: u64| block.checked_sub(back);
        let mixed_debit = || {
            let ws = workspace_id(pick(((client as u64) << 40) | seq));
            debit(&ws, "agent", &format!("{prefix}-d-{client}-{seq}"))
        };
        match position {
            14..=17 => match older(position - 13) {
                Some(k) => heartbeat(&call(k), (block - k) * 15),
                None => mixed_debit(),
            },
            18 => authorize(&call_ws(block), "agent", &call(block)),
            19 => match older(MIXED_CALLS_PER_CLIENT) {
                Some(k) => end(&call(k), MIXED_CALLS_PER_CLIENT * 15),
                None => mixed_debit(),
            },
            _ => mixed_debit(),
        }
    })
}

/// The many-tenants data set, generated once.
pub fn tenants_set() -> Result<std::path::PathBuf> {
    data::cached(tenants_spec())
}

/// Sets workspaces `ws0`..`ws{workspaces - 1}` up for the grants shape (issue 25): spends what is
/// left of each one's plan credits (so debits reach the grants: plan credits pay first, R24), then
/// gives it three grants a debit of a message considers: priority 10 for messages only (never
/// expiring), priority 50 for everything expiring in 30 days, priority 50 for calls only
/// expiring in 90 days (read and skipped). Each is large enough for any run.
pub fn three_grants(addr: &str, workspaces: u64) -> Result<()> {
    spend_plans(addr, workspaces)?;
    let now = local_run::credentials::now_secs();
    let day = 86_400;
    for n in 0..workspaces {
        let ws = workspace_id(n);
        for (k, grant) in [
            serde_json::json!({"priority": 10, "scope": {"kinds": ["message"]}}),
            serde_json::json!({"priority": 50,
                               "expires_at": ledger::calendar::rfc3339(now + 30 * day)}),
            serde_json::json!({"priority": 50, "scope": {"kinds": ["call"]},
                               "expires_at": ledger::calendar::rfc3339(now + 90 * day)}),
        ]
        .into_iter()
        .enumerate()
        {
            let mut body = grant;
            body["workspace_id"] = ws.clone().into();
            body["amount"] = "100000".into();
            body["category"] = "promotional".into();
            body["name"] = format!("bench grant {k}").into();
            let mut request = crate::load::json_request(
                http::Method::POST,
                "/v1/grants",
                Some(crate::host::SERVICE_KEY),
                body.to_string(),
            );
            request.headers_mut().insert(
                "idempotency-key",
                http::HeaderValue::from_str(&format!("bench-{ws}-{k}"))?,
            );
            let (status, reply) = crate::host::send_once(addr, request)?;
            if status != 201 && status != 200 {
                anyhow::bail!(
                    "grant {k} to {ws}: {status} {}",
                    String::from_utf8_lossy(&reply)
                );
            }
        }
    }
    Ok(())
}

/// Spends what is left of the plan credits of workspaces `ws0`..`ws{workspaces - 1}` with one
/// debit each, so that later debits are paid by what comes after the plan (R24).
pub fn spend_plans(addr: &str, workspaces: u64) -> Result<()> {
    let now = local_run::credentials::now_secs();
    for n in 0..workspaces {
        let ws = workspace_id(n);
        let token =
            local_run::credentials::token(&ws, local_run::credentials::Role::Owner, now + 3600);
        let (status, body) = crate::host::send_once(
            addr,
            crate::load::get_request(&format!("/v1/workspaces/{ws}/billing"), Some(&token)),
        )?;
        if status != 200 {
            anyhow::bail!("summary of {ws}: {status}");
        }
        let summary: serde_json::Value = serde_json::from_slice(&body)?;
        let plan: rust_decimal::Decimal = summary["plan_credits_remaining"]
            .as_str()
            .unwrap_or("0")
            .parse()?;
        // Messages cost 0.01: the plan's credits are 100 x as many messages.
        let messages = (plan * rust_decimal::Decimal::from(100)).floor();
        if !messages.is_zero() {
            let drain = serde_json::json!({
                "id": format!("drain-{ws}"), "workspace_id": ws, "agent_id": "drain",
                "kind": "message", "quantity": messages.normalize().to_string(),
            });
            let (status, body) = crate::host::send_once(
                addr,
                crate::load::json_request(
                    http::Method::POST,
                    "/v1/usage",
                    Some(crate::host::SERVICE_KEY),
                    drain.to_string(),
                ),
            )?;
            if status != 200 {
                anyhow::bail!("drain {ws}: {status} {}", String::from_utf8_lossy(&body));
            }
        }
    }
    Ok(())
}
