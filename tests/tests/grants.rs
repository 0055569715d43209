//! Credit grants end to end (docs/grants.md; docs/billing-rules.md R22-R26): the operator's
//! routes (service key) to grant, list and void, the owner's list and summary, spending through
//! `POST /v1/usage`, and expiry by the renewal job's pass on a test clock; against the real
//! `spin.toml` in the local host, every amount to the micro-credit, ending with the ledger's
//! invariants.

use anyhow::{Context as _, Result, ensure};
use e2e::Reply;
use e2e::api::{App, Role, SERVICE_KEY, expect, expect_error};
use serde_json::{Value, json};

const WS: &str = "acme";
/// A test clock well ahead of the wall clock (clocks only move forward).
const T0: &str = "2030-01-10T10:00:00Z";

/// `POST /v1/grants` with `key` as its `Idempotency-Key` (none when `None`).
fn grant(app: &App, key: Option<&str>, body: &Value) -> Result<Reply> {
    let auth = format!("Bearer {SERVICE_KEY}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    app.request("POST", "/v1/grants", Some(body), &headers)
}

fn set_clock(app: &App, frozen_time: &str) -> Result<()> {
    let reply = app.service(
        "POST",
        &format!("/v1/test-clocks/{WS}"),
        Some(&json!({"frozen_time": frozen_time})),
    )?;
    expect(&reply, 200, "set the clock").map(|_| ())
}

#[test]
fn grants_are_made_spent_listed_voided_and_expired_through_the_api() -> Result<()> {
    let app = App::start()?;
    app.provision(WS)?;
    set_clock(&app, T0)?;
    app.subscribe(WS, "free")?;

    let bonus = json!({
        "workspace_id": WS, "amount": "2.5", "category": "promotional", "name": "Welcome bonus",
        "expires_at": "2030-01-20T10:00:00Z", "scope": {"kinds": ["message"]},
        "metadata": {"campaign": "launch"}
    });
    // The key is required: the grant's id derives from it.
    let refused = expect_error(
        &grant(&app, None, &bonus)?,
        422,
        "validation_error",
        "no key",
    )?;
    ensure!(refused["field"] == "Idempotency-Key", "{refused}");
    let made = expect(&grant(&app, Some("bonus-1"), &bonus)?, 201, "grant")?;
    let id = made["id"].as_str().context("an id")?.to_owned();
    ensure!(
        made["remaining"] == "2.5"
            && made["status"] == "active"
            && made["metadata"]["campaign"] == "launch",
        "{made}"
    );
    // A retry answers the first response (the service routes' cache; without it, the ledger
    // answers the grant the key made, 200).
    let replay = expect(&grant(&app, Some("bonus-1"), &bonus)?, 201, "replay")?;
    ensure!(replay == made, "{replay}");
    let mut other = bonus.clone();
    other["amount"] = "3".into();
    // The service routes' response cache answers a reused key with another body first: 409.
    let reply = grant(&app, Some("bonus-1"), &other)?;
    ensure!(reply.status == 409, "{} {}", reply.status, reply.body);
    expect_error(
        &grant(
            &app,
            Some("bad"),
            &json!({"workspace_id": WS, "amount": "0", "category": "promotional", "name": "x"}),
        )?,
        422,
        "invalid_amount",
        "a zero grant",
    )?;
    expect_error(
        &grant(
            &app,
            Some("paid"),
            &json!({"workspace_id": WS, "amount": "5", "category": "paid", "name": "x"}),
        )?,
        422,
        "validation_error",
        "a paid grant without its cost basis",
    )?;
    expect_error(
        &grant(
            &app,
            Some("nobody"),
            &json!({"workspace_id": "nobody", "amount": "5", "category": "promotional", "name": "x"}),
        )?,
        404,
        "not_found",
        "an unknown workspace",
    )?;

    // Spending: the plan's 10 credits first (1,000 messages at 0.01), then the grant.
    let debit = |id: &str, quantity: &str| -> Result<Value> {
        let event = json!({"id": id, "workspace_id": WS, "agent_id": "a1", "kind": "message",
                           "quantity": quantity});
        expect(&app.service("POST", "/v1/usage", Some(&event))?, 200, id)
    };
    debit("plan", "1000")?;
    let from_grant = debit("from-grant", "100")?;
    ensure!(
        from_grant["from_plan"] == "0"
            && from_grant["from_grants"] == "1"
            && from_grant["from_wallet"] == "0",
        "{from_grant}"
    );
    // An AI task is outside the grant's scope: the wallet is empty, so it is refused.
    let task = json!({"id": "task", "workspace_id": WS, "agent_id": "a1", "kind": "ai_task",
                      "quantity": "1"});
    expect_error(
        &app.service("POST", "/v1/usage", Some(&task))?,
        402,
        "insufficient_funds",
        "an AI task",
    )?;

    // The operator's list; the owner's list and summary (no metadata); members see none.
    let listed = expect(
        &app.service("GET", &format!("/v1/grants?workspace_id={WS}"), None)?,
        200,
        "list",
    )?;
    ensure!(
        listed["grants"].as_array().map(Vec::len) == Some(1),
        "{listed}"
    );
    ensure!(listed["grants"][0]["remaining"] == "1.5", "{listed}");
    expect_error(
        &app.service("GET", "/v1/grants", None)?,
        400,
        "malformed_request",
        "no workspace",
    )?;
    let owner = expect(&app.owner(WS, "GET", "/grants", None)?, 200, "owner's list")?;
    ensure!(
        owner["data"][0]["remaining"] == "1.5"
            && owner["data"][0]["expires_in_days"] == 10
            && owner["data"][0].get("metadata").is_none(),
        "{owner}"
    );
    let summary = expect(&app.owner(WS, "GET", "/billing", None)?, 200, "summary")?;
    ensure!(
        summary["grant_credits_remaining"] == "1.5" && summary["grants"][0]["id"] == id.as_str(),
        "{summary}"
    );
    let member = app.user(
        WS,
        Role::Member,
        "GET",
        &format!("/v1/workspaces/{WS}/grants"),
        None,
    )?;
    ensure!(
        member.status == 403,
        "a member: {} {}",
        member.status,
        member.body
    );
    let history = expect(
        &app.owner(WS, "GET", "/transactions", None)?,
        200,
        "history",
    )?;
    ensure!(
        history["data"][0]["amount"] == "-1" && history["data"][0]["grant_amount"] == "-1",
        "{history}"
    );

    // Expiry: on the workspace's clock, by the renewal job's pass.
    let later = json!({
        "workspace_id": WS, "amount": "4", "category": "promotional", "name": "Outage credit",
        "expires_at": "2030-01-12T10:00:00Z"
    });
    let outage = expect(&grant(&app, Some("outage"), &later)?, 201, "outage credit")?;
    set_clock(&app, "2030-01-13T00:00:00Z")?;
    let pass = expect(
        &app.service("POST", "/internal/jobs/renew-cycles", None)?,
        200,
        "pass",
    )?;
    ensure!(pass["grants_expired"] == 1, "{pass}");
    let expired = expect(
        &app.service("GET", &format!("/v1/grants?workspace_id={WS}"), None)?,
        200,
        "list",
    )?;
    // Made at the same (frozen) time, grants list by id after their time.
    let outage_now = expired["grants"]
        .as_array()
        .and_then(|grants| grants.iter().find(|g| g["id"] == outage["id"]))
        .context("the outage credit is listed")?;
    ensure!(
        outage_now["status"] == "expired" && outage_now["remaining"] == "0",
        "{expired}"
    );

    // Voiding takes the rest once; what was spent stays spent.
    let void_path = format!("/v1/grants/{id}/void");
    let voided = expect(&app.service("POST", &void_path, None)?, 200, "void")?;
    ensure!(
        voided["status"] == "voided" && voided["remaining"] == "0",
        "{voided}"
    );
    let again = expect(&app.service("POST", &void_path, None)?, 200, "void again")?;
    ensure!(again["voided_at"] == voided["voided_at"], "{again}");
    expect_error(
        &app.service("POST", "/v1/grants/gr_unknown/void", None)?,
        404,
        "not_found",
        "an unknown grant",
    )?;
    let owner = expect(&app.owner(WS, "GET", "/grants", None)?, 200, "owner's list")?;
    ensure!(owner["data"] == json!([]), "{owner}");

    // The platform heard of both grants and of the expiry (docs/notifications.md).
    let outbox = expect(
        &app.service(
            "GET",
            &format!("/v1/notifications?workspace_id={WS}&limit=100"),
            None,
        )?,
        200,
        "notifications",
    )?;
    let told: Vec<(String, String)> = outbox["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| &n["event"])
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("credits."))
        })
        .map(|e| {
            let data = &e["data"];
            let amount = data["amount"]
                .as_str()
                .or(data["expired"].as_str())
                .unwrap_or("");
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                amount.to_owned(),
            )
        })
        .collect();
    ensure!(
        told.iter().filter(|(t, _)| t == "credits.granted").count() == 2
            && told.contains(&("credits.expired".to_owned(), "4".to_owned())),
        "{outbox}"
    );
    app.check_invariants()
}
