//! Reliability: Stripe faults. The app talks to localstripe through a fault-injecting proxy
//! ([`e2e::faults::StripeProxy`], which also gives localstripe Stripe's `Idempotency-Key`
//! semantics) that is down, slow, answers 500 or 429, or does the work and loses the answer,
//! during manual top-ups and during auto-recharge sweeps (four sweeps at once). Then webhooks
//! arrive duplicated, in the wrong order and after the payments were settled by
//! reconciliation. Afterwards money is exact, no card was charged twice for one top-up or one
//! crossing (counted in localstripe), no request got a 500, and every invariant holds.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::api::{App, Role, expect, json_of};
use e2e::faults::{Fault, StripeProxy};
use e2e::reliability::{Scenario, micros, webhooks::signature_header};
use e2e::stripe::{CARD_OK, Localstripe, SECRET_KEY, payment_intents, save_card_through_app};
use e2e::{HostOptions, Reply, wait_for};
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "whsec_reliability_faults";

fn catalog() -> Value {
    let mut catalog = e2e::api::test_catalog(
        json!([{"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}]),
        json!([{"kind": "message", "price": "0.01"}]),
    );
    catalog["settings"]["auto_recharge_max_per_day"] = 10.into();
    catalog
}

struct World {
    ls: Localstripe,
    proxy: StripeProxy,
    app: App,
    customer: String,
}

fn owner(
    app: &App,
    ws: &str,
    method: &str,
    rest: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    let token = e2e::api::token(ws, Role::Owner, e2e::api::now_secs() + 3600);
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    app.request(method, &format!("/v1/workspaces/{ws}{rest}"), body, &all)
}

fn summary(app: &App, ws: &str) -> Result<Value> {
    expect(
        &owner(app, ws, "GET", "/billing", None, &[])?,
        200,
        "billing",
    )
}

fn wallet_micros(app: &App, ws: &str) -> Result<i64> {
    micros(
        summary(app, ws)?["wallet_balance"]
            .as_str()
            .context("wallet")?,
    )
}

/// The app against `proxy`, on `state_dir` when given; localstripe's webhooks go to it.
fn start_app(
    ls: &mut Localstripe,
    proxy: &StripeProxy,
    state_dir: Option<&std::path::Path>,
) -> Result<App> {
    let app = App::start_with(
        HostOptions {
            state_dir: state_dir.map(std::path::Path::to_path_buf),
            ..HostOptions::default()
        }
        .env("SPIN_VARIABLE_STRIPE_API_BASE", proxy.url())
        .env("SPIN_VARIABLE_STRIPE_SECRET_KEY", SECRET_KEY)
        .env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    )?;
    ls.register_webhook(&app.host.url("/webhooks/stripe"), WEBHOOK_SECRET)?;
    Ok(app)
}

/// The app behind the proxy, localstripe's webhooks registered, `ws` on the free plan with a
/// saved card (saved while the proxy forwards normally).
fn world(ws: &str) -> Result<World> {
    world_at(ws, None)
}

fn world_at(ws: &str, state_dir: Option<&std::path::Path>) -> Result<World> {
    let mut ls = Localstripe::start()?;
    let proxy = StripeProxy::start(&ls.base_url())?;
    let app = start_app(&mut ls, &proxy, state_dir)?;
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog()))?,
        200,
        "catalog",
    )?;
    app.provision(ws)?;
    expect(
        &owner(
            &app,
            ws,
            "POST",
            "/subscription",
            Some(&json!({"plan_id": "free"})),
            &[],
        )?,
        200,
        "subscribe",
    )?;
    let (_, customer) = save_card_through_app(&app, &ls, ws, CARD_OK)?;
    Ok(World {
        ls,
        proxy,
        app,
        customer,
    })
}

/// Succeeded PaymentIntents of the customer, by our payment id.
fn succeeded_by_payment(world: &World) -> Result<Vec<(String, String)>> {
    Ok(payment_intents(&world.ls, &world.customer)?
        .iter()
        .filter(|pi| pi["status"] == "succeeded")
        .map(|pi| {
            (
                pi["metadata"]["payment_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                pi["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

fn no_server_error(reply: &Reply, what: &str) -> Result<()> {
    ensure!(
        reply.status != 500
            && (reply.status < 500
                || json_of(reply)["error"]["code"] == "payment_processing_error"),
        "{what}: {} {}",
        reply.status,
        reply.body
    );
    Ok(())
}

/// Late, duplicated and out-of-order webhooks for every succeeded PaymentIntent: a second
/// `succeeded`, then a `payment_failed` (which must not undo a success). Answers 200 each.
fn replay_late_webhooks(world: &World, scenario: &Scenario) -> Result<()> {
    for (payment_id, intent_id) in succeeded_by_payment(world)? {
        let mut intent = payment_intents(&world.ls, &world.customer)?
            .into_iter()
            .find(|pi| pi["id"] == intent_id.as_str())
            .context("intent")?;
        for (n, kind) in [
            "payment_intent.succeeded",
            "payment_intent.succeeded",
            "payment_intent.payment_failed",
        ]
        .iter()
        .enumerate()
        {
            if *kind == "payment_intent.payment_failed" {
                intent["status"] = json!("requires_payment_method");
                intent["last_payment_error"] = json!({"type": "card_error", "code": "card_declined",
                    "decline_code": "generic_decline", "message": "Your card was declined."});
            }
            let event = json!({"id": format!("evt_late_{payment_id}_{n}"), "object": "event",
                "type": kind, "created": e2e::api::now_secs(), "livemode": false,
                "data": {"object": intent}});
            let payload = event.to_string();
            let header = signature_header(WEBHOOK_SECRET, &payload);
            let reply = e2e::post_json(
                &world.app.host.url("/webhooks/stripe"),
                &payload,
                &[("stripe-signature", &header)],
            )?;
            scenario.requests(1);
            scenario.faults(1);
            expect(&reply, 200, "late webhook")?;
        }
    }
    Ok(())
}

#[test]
fn top_ups_under_stripe_faults_charge_each_card_once() -> Result<()> {
    let scenario = Scenario::new("Stripe faults during top-ups");
    let ws = "ws-faults-topup";
    let world = world(ws)?;
    let faults = [
        Fault::Status(500),
        Fault::Status(429),
        Fault::Down,
        Fault::LoseResponse,
        Fault::Slow(Duration::from_millis(1500)),
    ];
    for (n, fault) in faults.iter().enumerate() {
        let key = format!("topup-{n}");
        world.proxy.set(*fault);
        let first = owner(
            &world.app,
            ws,
            "POST",
            "/topups",
            Some(&json!({"amount": "20"})),
            &[("idempotency-key", &key)],
        )?;
        scenario.requests(1);
        no_server_error(&first, &format!("{fault:?}"))?;
        // Stripe is back; the client retries with the same key until the top-up is settled.
        world.proxy.set(Fault::None);
        let settled = wait_for(Duration::from_secs(30), || {
            let reply = owner(
                &world.app,
                ws,
                "POST",
                "/topups",
                Some(&json!({"amount": "20"})),
                &[("idempotency-key", &key)],
            )
            .ok()?;
            scenario.requests(1);
            let body = json_of(&reply);
            (body["status"] == "succeeded").then_some(body)
        })
        .with_context(|| {
            format!(
                "top-up {n} after {fault:?} never succeeded (first answer {} {})",
                first.status, first.body
            )
        })?;
        ensure!(settled["credits"] == "20", "{settled}");
    }
    // Exactly one charge per top-up, and exactly its credits.
    let charged = succeeded_by_payment(&world)?;
    let mut ids: Vec<&String> = charged.iter().map(|(payment, _)| payment).collect();
    ids.sort();
    ids.dedup();
    ensure!(
        charged.len() == faults.len() && ids.len() == faults.len(),
        "{} top-ups, charges: {charged:?}",
        faults.len()
    );
    ensure!(
        wallet_micros(&world.app, ws)? == 100_000_000,
        "{}",
        summary(&world.app, ws)?
    );
    // Webhooks duplicated, reordered and late change nothing.
    replay_late_webhooks(&world, &scenario)?;
    ensure!(
        wallet_micros(&world.app, ws)? == 100_000_000,
        "after late webhooks: {}",
        summary(&world.app, ws)?
    );
    world.app.check_invariants()?;
    scenario.invariants_checked();
    scenario.faults(world.proxy.faults_injected());
    eprintln!(
        "stripe faults, top-ups: {} Stripe requests, {} faulted; {} charges",
        world.proxy.requests(),
        world.proxy.faults_injected(),
        charged.len()
    );
    scenario.passed();
    Ok(())
}

/// Four sweeps at the same moment; none may answer 500.
fn sweeps(app: &App, scenario: &Scenario) -> Result<()> {
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| app.service("POST", "/internal/jobs/auto-recharge", None)))
            .collect();
        for handle in handles {
            let reply = handle
                .join()
                .map_err(|_| anyhow::anyhow!("sweep panicked"))??;
            scenario.requests(1);
            no_server_error(&reply, "sweep")?;
        }
        Ok(())
    })
}

#[test]
fn auto_recharge_under_stripe_faults_charges_once_per_crossing() -> Result<()> {
    let scenario = Scenario::new("Stripe faults during auto-recharge");
    let ws = "ws-faults-ar";
    let world = world(ws)?;
    let settings = json!({"enabled": true, "threshold": "5", "amount": "20"});
    expect(
        &owner(
            &world.app,
            ws,
            "PUT",
            "/auto-recharge",
            Some(&settings),
            &[],
        )?,
        200,
        "enable",
    )?;
    let crossings: [&[Fault]; 3] = [
        &[Fault::Status(500), Fault::Status(429)],
        &[Fault::LoseResponse, Fault::Down],
        &[Fault::Slow(Duration::from_millis(1500))],
    ];
    let mut expected_wallet = 0;
    for (n, faults) in crossings.iter().enumerate() {
        // Below the threshold (the first time the wallet is simply empty).
        // (Crossing 1 burns the plan's 10 credits first, then 16 of the wallet's 20.)
        let burns = [None, Some(("2600", 16_000_000)), Some(("2000", 20_000_000))];
        if let Some((quantity, from_wallet)) = burns[n] {
            let event = json!({"id": format!("burn-{n}"), "workspace_id": ws, "agent_id": "a",
                "kind": "message", "quantity": quantity});
            expect(
                &world.app.service("POST", "/v1/usage", Some(&event))?,
                200,
                "burn",
            )?;
            expected_wallet -= from_wallet;
        }
        for fault in *faults {
            world.proxy.set(*fault);
            // A recharge left pending by the previous fault is retried (reconciled) under this one.
            world.app.age_pending_payments()?;
            sweeps(&world.app, &scenario)?;
        }
        world.proxy.set(Fault::None);
        // Stripe is back: sweeps (and, after 5 minutes, reconciliation with the same key) settle
        // the crossing's one recharge.
        let recharged = wait_for(Duration::from_secs(40), || {
            let _ = world.app.age_pending_payments();
            sweeps(&world.app, &scenario).ok()?;
            let shown = summary(&world.app, ws).ok()?;
            let wallet = micros(shown["wallet_balance"].as_str()?).ok()?;
            (wallet == expected_wallet + 20_000_000 && shown["pending_topups"] == json!([]))
                .then_some(wallet)
        })
        .with_context(|| {
            format!(
                "crossing {n} never recharged: {}",
                summary(&world.app, ws)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        })?;
        expected_wallet = recharged;
        // More sweeps for the same crossing charge nothing.
        sweeps(&world.app, &scenario)?;
        ensure!(
            wallet_micros(&world.app, ws)? == expected_wallet,
            "crossing {n} charged again"
        );
        let charged = succeeded_by_payment(&world)?;
        ensure!(
            charged.len() == n + 1,
            "after crossing {n}: charges {charged:?}"
        );
    }
    replay_late_webhooks(&world, &scenario)?;
    ensure!(
        wallet_micros(&world.app, ws)? == expected_wallet,
        "after late webhooks"
    );
    let history = expect(
        &owner(
            &world.app,
            ws,
            "GET",
            "/transactions?type=auto_recharge&limit=100",
            None,
            &[],
        )?,
        200,
        "history",
    )?;
    ensure!(
        history["data"].as_array().map(Vec::len) == Some(crossings.len()),
        "{history}"
    );
    world.app.check_invariants()?;
    scenario.invariants_checked();
    scenario.faults(world.proxy.faults_injected());
    eprintln!(
        "stripe faults, auto-recharge: {} Stripe requests, {} faulted; {} crossings, {} charges",
        world.proxy.requests(),
        world.proxy.faults_injected(),
        crossings.len(),
        succeeded_by_payment(&world)?.len()
    );
    scenario.passed();
    Ok(())
}

/// Kills the host (SIGKILL) while `action` (run on another thread) is waiting on Stripe: the
/// proxy holds the request (slow), forwards it after the host is dead (Stripe charges), and the
/// answer goes nowhere. Restarts the app on the same files.
fn kill_while_at_stripe(
    world: &mut World,
    state_dir: &std::path::Path,
    action: impl FnOnce(String) + Send,
) -> Result<()> {
    world.proxy.set(Fault::Slow(Duration::from_millis(1500)));
    let before = world.proxy.requests();
    let forwarded = world.proxy.forwarded();
    let base_url = world.app.host.base_url().to_owned();
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || action(base_url));
        wait_for(Duration::from_secs(20), || {
            (world.proxy.requests() > before).then_some(())
        })
        .context("the request never reached Stripe")?;
        world.app.host.kill();
        Ok(())
    })?;
    e2e::reliability::check_invariants_at(state_dir)?;
    // The held request reaches localstripe (the card is charged), then the app comes back.
    wait_for(Duration::from_secs(20), || {
        (world.proxy.forwarded() > forwarded).then_some(())
    })
    .context("the held request never reached localstripe")?;
    world.proxy.set(Fault::None);
    world.app = start_app(&mut world.ls, &world.proxy, Some(state_dir))?;
    Ok(())
}

#[test]
fn a_crash_while_stripe_charges_never_charges_twice() -> Result<()> {
    let scenario = Scenario::new("SIGKILL while a charge is at Stripe");
    let ws = "ws-crash-stripe";
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    let mut world = world_at(ws, Some(&state_dir))?;

    // A top-up: the host dies while Stripe confirms it; the client retries with its key.
    kill_while_at_stripe(&mut world, &state_dir, |base_url| {
        let token = e2e::api::token(ws, Role::Owner, e2e::api::now_secs() + 3600);
        let _ = e2e::request(
            "POST",
            &format!("{base_url}/v1/workspaces/{ws}/topups"),
            Some(&json!({"amount": "20"}).to_string()),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("idempotency-key", "crash-topup"),
            ],
        );
    })?;
    scenario.faults(1);
    scenario.invariants_checked();
    let mut last = None;
    let settled = wait_for(Duration::from_secs(30), || {
        let reply = owner(
            &world.app,
            ws,
            "POST",
            "/topups",
            Some(&json!({"amount": "20"})),
            &[("idempotency-key", "crash-topup")],
        )
        .ok()?;
        scenario.requests(1);
        let body = json_of(&reply);
        last = Some((reply.status, reply.body));
        (body["status"] == "succeeded").then_some(body)
    })
    .with_context(|| {
        let intents = payment_intents(&world.ls, &world.customer).map(|all| {
            all.iter()
                .map(|pi| {
                    format!(
                        "{} {} {}",
                        pi["id"], pi["status"], pi["metadata"]["payment_id"]
                    )
                })
                .collect::<Vec<_>>()
        });
        format!(
            "the top-up never succeeded after the crash: last answer {last:?}; intents {intents:?}"
        )
    })?;
    ensure!(settled["credits"] == "20", "{settled}");
    let charged = succeeded_by_payment(&world)?;
    ensure!(charged.len() == 1, "one top-up, charges {charged:?}");
    ensure!(
        wallet_micros(&world.app, ws)? == 20_000_000,
        "{}",
        summary(&world.app, ws)?
    );

    // An automatic recharge: burn the wallet below the threshold, the host dies while the sweep
    // charges; after the restart sweeps and reconciliation settle that one crossing.
    let settings = json!({"enabled": true, "threshold": "5", "amount": "20"});
    expect(
        &owner(
            &world.app,
            ws,
            "PUT",
            "/auto-recharge",
            Some(&settings),
            &[],
        )?,
        200,
        "enable",
    )?;
    let event = json!({"id": "burn", "workspace_id": ws, "agent_id": "a", "kind": "message",
        "quantity": "2600"});
    expect(
        &world.app.service("POST", "/v1/usage", Some(&event))?,
        200,
        "burn",
    )?;
    kill_while_at_stripe(&mut world, &state_dir, |base_url| {
        let _ = e2e::request(
            "POST",
            &format!("{base_url}/internal/jobs/auto-recharge"),
            None,
            &[(
                "authorization",
                &format!("Bearer {}", e2e::api::SERVICE_KEY),
            )],
        );
    })?;
    scenario.faults(1);
    scenario.invariants_checked();
    wait_for(Duration::from_secs(40), || {
        let _ = world.app.age_pending_payments();
        sweeps(&world.app, &scenario).ok()?;
        let shown = summary(&world.app, ws).ok()?;
        (shown["wallet_balance"] == "24" && shown["pending_topups"] == json!([])).then_some(())
    })
    .with_context(|| {
        format!(
            "the recharge never settled: {}",
            summary(&world.app, ws)
                .map(|s| s.to_string())
                .unwrap_or_default()
        )
    })?;
    sweeps(&world.app, &scenario)?;
    let charged = succeeded_by_payment(&world)?;
    ensure!(
        charged.len() == 2,
        "a top-up and one crossing, charges {charged:?}"
    );
    ensure!(
        wallet_micros(&world.app, ws)? == 24_000_000,
        "{}",
        summary(&world.app, ws)?
    );
    world.app.check_invariants()?;
    scenario.invariants_checked();
    scenario.passed();
    Ok(())
}
