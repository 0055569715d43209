//! Reliability: concurrency. The same operations run twice on fresh apps: once by one client,
//! one at a time (the serial execution), once by 16 clients released together (debits on two
//! agents, calls holding then posting, every top-up webhook delivered three times at once, an
//! upgrade in the middle of the usage, and on a second workspace the renewal job called eight
//! times at the same instant as its debits). The final state of both runs must be identical:
//! balances to the micro-credit, holds, plans, and the multiset of history rows.
//!
//! The operations are chosen so that every serial order gives the same result (funds never run
//! out; the renewing plan rolls all its unused credits over), so "equal to a serial execution"
//! is a property of the final state alone. Each run ends with the ledger's invariants.

use std::collections::BTreeMap;
use std::sync::{Barrier, Mutex};

use anyhow::{Context as _, Result, ensure};
use e2e::HostOptions;
use e2e::api::{App, Role, expect};
use e2e::reliability::{
    Rng, Scenario, soak,
    webhooks::{payment_succeeded, pending_topup, signature_header},
};
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "whsec_reliability_races";
const WS: &str = "ws-race";
const WS_ROLL: &str = "ws-roll";

fn catalog() -> Value {
    let mut catalog = e2e::api::test_catalog(
        json!([
            {"id": "small", "name": "Small", "price": "0", "monthly_credits": "3000"},
            {"id": "large", "name": "Large", "price": "0", "monthly_credits": "9000"},
            {"id": "roll", "name": "Roll", "price": "0", "monthly_credits": "100",
             "rollover_max_credits": "100"}
        ]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.1", "increment_secs": 6},
            {"kind": "message", "price": "0.01"},
            {"kind": "ai_task", "price": "0.25"}
        ]),
    );
    catalog["settings"]["hold_timeout_secs"] = 600.into();
    catalog["settings"]["low_balance_threshold"] = "1".into();
    catalog
}

#[derive(Debug, Clone)]
enum Op {
    Debit {
        id: String,
        ws: &'static str,
        agent: &'static str,
        kind: &'static str,
        quantity: u32,
    },
    Call {
        id: String,
        duration_secs: u32,
    },
    Webhook {
        n: usize,
    },
    Upgrade,
    Renew,
}

fn run(app: &App, op: &Op) -> Result<()> {
    match op {
        Op::Debit {
            id,
            ws,
            agent,
            kind,
            quantity,
        } => {
            let event = json!({"id": id, "workspace_id": ws, "agent_id": agent, "kind": kind,
                "quantity": quantity.to_string()});
            expect(&app.service("POST", "/v1/usage", Some(&event))?, 200, id)?;
        }
        Op::Call { id, duration_secs } => {
            let request = json!({"workspace_id": WS, "agent_id": "agent-call", "call_id": id,
                "direction": "outbound", "to": "+14155550123", "from": "+14155550999"});
            expect(&app.service("POST", "/v1/calls", Some(&request))?, 201, id)?;
            let end = json!({"duration_seconds": duration_secs});
            expect(
                &app.service("POST", &format!("/v1/calls/{id}/end"), Some(&end))?,
                200,
                id,
            )?;
        }
        Op::Webhook { n } => {
            let payload = payment_succeeded(
                &format!("evt_race_{n}"),
                &format!("pi_race_{n}"),
                &format!("tp-race-{n}"),
                2_000,
            )?;
            let header = signature_header(WEBHOOK_SECRET, &payload);
            let reply = e2e::post_json(
                &app.host.url("/webhooks/stripe"),
                &payload,
                &[("stripe-signature", &header)],
            )?;
            expect(&reply, 200, "webhook")?;
        }
        Op::Upgrade => {
            let reply = app.owner(
                WS,
                "POST",
                "/subscription",
                Some(&json!({"plan_id": "large"})),
            )?;
            let body = expect(&reply, 200, "upgrade")?;
            // Either this request upgraded, or (a concurrent twin did and) it is already on it.
            ensure!(body["plan_id"] == "large", "{body}");
        }
        Op::Renew => {
            expect(
                &app.service("POST", "/internal/jobs/renew-cycles", None)?,
                200,
                "renew",
            )?;
        }
    }
    Ok(())
}

fn start() -> Result<App> {
    let app = App::start_with(
        HostOptions::default().env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    )?;
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog()))?,
        200,
        "catalog",
    )?;
    for (ws, plan, clock) in [
        (WS, "small", "2030-04-01T09:00:00Z"),
        (WS_ROLL, "roll", "2030-03-05T09:00:00Z"),
    ] {
        app.provision(ws)?;
        let clock_body = json!({"frozen_time": clock});
        expect(
            &app.service("POST", &format!("/v1/test-clocks/{ws}"), Some(&clock_body))?,
            200,
            "clock",
        )?;
        let path = format!("/v1/workspaces/{ws}/subscription");
        let reply = app.user(
            ws,
            Role::Owner,
            "POST",
            &path,
            Some(&json!({"plan_id": plan})),
        )?;
        expect(&reply, 200, "subscribe")?;
    }
    // Ten days into a 30-day cycle for the upgrade; past the cycle end for the renewal.
    for (ws, clock) in [
        (WS, "2030-04-11T09:00:00Z"),
        (WS_ROLL, "2030-04-06T09:00:00Z"),
    ] {
        let clock_body = json!({"frozen_time": clock});
        expect(
            &app.service("POST", &format!("/v1/test-clocks/{ws}"), Some(&clock_body))?,
            200,
            "clock",
        )?;
    }
    Ok(app)
}

fn operations(scale: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    for n in 0..scale * 8 {
        let (agent, kind, quantity) = match n % 4 {
            0 => ("agent-a", "ai_task", 3),
            1 => ("agent-b", "message", 7),
            2 => ("agent-a", "message", 1),
            _ => ("agent-b", "ai_task", 1),
        };
        ops.push(Op::Debit {
            id: format!("d-{n}"),
            ws: WS,
            agent,
            kind,
            quantity,
        });
    }
    for n in 0..scale * 2 {
        ops.push(Op::Call {
            id: format!("c-{n}"),
            duration_secs: 7 + (n as u32 * 13) % 300,
        });
    }
    for n in 0..scale {
        for _ in 0..3 {
            ops.push(Op::Webhook { n });
        }
        ops.push(Op::Debit {
            id: format!("r-{n}"),
            ws: WS_ROLL,
            agent: "agent-r",
            kind: "ai_task",
            quantity: 2,
        });
    }
    ops.push(Op::Upgrade);
    ops.extend((0..8).map(|_| Op::Renew));
    ops
}

/// What must not depend on the interleaving: both workspaces' balances and plans, and every
/// history row (type, agent, amount, split), sorted.
fn final_state(app: &App) -> Result<Value> {
    let mut state = BTreeMap::new();
    for ws in [WS, WS_ROLL] {
        let summary = expect(&app.owner(ws, "GET", "/billing", None)?, 200, "billing")?;
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/workspaces/{ws}/transactions?limit=100");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = expect(
                &app.user(ws, Role::Owner, "GET", &path, None)?,
                200,
                "transactions",
            )?;
            for row in page["data"].as_array().context("data")? {
                rows.push(format!(
                    "{} {} {} {} plan {} wallet {}",
                    row["type"],
                    row["agent_id"],
                    row["reference"],
                    row["amount"],
                    row["plan_amount"],
                    row["wallet_amount"]
                ));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        rows.sort();
        state.insert(
            ws,
            json!({
                "plan": summary["plan"], "plan_credits_remaining": summary["plan_credits_remaining"],
                "wallet_balance": summary["wallet_balance"], "held": summary["held"],
                "rows": rows.len(), "history": rows,
            }),
        );
    }
    Ok(serde_json::to_value(state)?)
}

#[test]
fn sixteen_clients_end_where_one_client_does() -> Result<()> {
    let scenario = Scenario::new("16 racing clients = 1 serial client");
    let scale = if soak() { 60 } else { 12 };
    let mut rng = Rng::from_env("races");
    let mut ops = operations(scale);

    // The serial execution.
    let serial = start()?;
    for n in 0..scale {
        pending_topup(
            serial.host.state_dir(),
            WS,
            &format!("tp-race-{n}"),
            20_000_000,
            &format!("pi_race_{n}"),
        )?;
    }
    for op in &ops {
        run(&serial, op).with_context(|| format!("serial {op:?}"))?;
    }
    let expected = final_state(&serial)?;
    serial.check_invariants()?;
    scenario.invariants_checked();

    // The racing execution: 16 clients, shuffled, released at once.
    let racing = start()?;
    for n in 0..scale {
        pending_topup(
            racing.host.state_dir(),
            WS,
            &format!("tp-race-{n}"),
            20_000_000,
            &format!("pi_race_{n}"),
        )?;
    }
    rng.shuffle(&mut ops);
    let queue = Mutex::new(ops.clone());
    let barrier = Barrier::new(16);
    std::thread::scope(|scope| -> Result<()> {
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let (racing, queue, barrier) = (&racing, &queue, &barrier);
                scope.spawn(move || -> Result<()> {
                    barrier.wait();
                    while let Some(op) = queue.lock().ok().and_then(|mut q| q.pop()) {
                        run(racing, &op).with_context(|| format!("racing {op:?}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for client in clients {
            client
                .join()
                .map_err(|_| anyhow::anyhow!("client panicked"))??;
        }
        Ok(())
    })?;
    let actual = final_state(&racing)?;
    racing.check_invariants()?;
    scenario.invariants_checked();
    scenario.requests(2 * ops.len() as u64);
    if actual != expected {
        for ws in [WS, WS_ROLL] {
            let (a, e) = (&actual[ws], &expected[ws]);
            for field in [
                "plan",
                "plan_credits_remaining",
                "wallet_balance",
                "held",
                "rows",
            ] {
                if a[field] != e[field] {
                    eprintln!("{ws} {field}: racing {} serial {}", a[field], e[field]);
                }
            }
        }
        anyhow::bail!("the racing run ended elsewhere than the serial one");
    }
    eprintln!(
        "races: {} operations; {WS}: {} plan credits, {} wallet, {} history rows",
        ops.len(),
        expected[WS]["plan_credits_remaining"],
        expected[WS]["wallet_balance"],
        expected[WS]["rows"]
    );
    scenario.passed();
    Ok(())
}
