//! The billing page (component `billing-ui`, docs/billing-page.md) in a real browser: Debian's
//! Chromium driven by Playwright for Python (`tests/browser/billing_page.py`), against the real
//! `spin.toml` in the local host and localstripe, whose stand-in Stripe.js the page loads.
//!
//! Each test sets a workspace up through the API, runs one browser journey (which asserts what
//! the user sees, and embeds the page as the README shows), then checks the ledger: balances to
//! the micro-credit, journal rows, the invariants. Screenshots of the main states are written to
//! `target/billing-page-screenshots/` (or `$BILLING_SCREENSHOTS`).
//!
//! Needs localstripe, Playwright and Chromium (`source scripts/env.sh` installs them), the host
//! and the components (`scripts/build-components.sh`).

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use e2e::api::{App, Role, SERVICE_KEY, expect, micros_of, now_secs, token};
use e2e::stripe::{
    CARD_DECLINED_ON_CHARGE, CARD_OK, CARD_REQUIRES_AUTH, Localstripe, SECRET_KEY, free_port,
    save_card_through_app,
};
use e2e::{HostOptions, workspace_root};
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "whsec_e2e_billing_page";
const PUBLISHABLE_KEY: &str = "pk_test_localstripe";
/// What Stripe.js reports when the bank declines a card typed into the page (localstripe's
/// words, which are Stripe's).
const STRIPE_DECLINED: &str = "Your card was declined.";
/// What Stripe.js reports when the customer fails 3-D Secure (localstripe's words).
const STRIPE_AUTHENTICATION_FAILED: &str = "The provided PaymentMethod has failed authentication.";

/// The app, localstripe, and the port the journeys serve the embedding product's page on.
struct Setup {
    ls: Localstripe,
    app: App,
    embed_port: u16,
}

/// The journeys' catalog, with `credit_price` (in USD) per credit.
fn catalog(credit_price: &str) -> Value {
    let mut catalog = e2e::api::test_catalog(
        json!([
            {"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"},
            {"id": "starter", "name": "Starter", "price": "0", "monthly_credits": "300"},
            {"id": "growth", "name": "Growth", "price": "0", "monthly_credits": "3000"},
            {"id": "pro", "name": "Pro", "price": "49", "monthly_credits": "5000",
             "stripe_price_id": "plan_pro"}
        ]),
        json!([
            {"kind": "call", "direction": "outbound", "price": "0.05", "increment_secs": 60},
            {"kind": "message", "price": "0.01"},
            {"kind": "ai_task", "price": "0.02"}
        ]),
    );
    catalog["settings"]["credit_price"] = json!(credit_price);
    catalog
}

/// Starts localstripe and the app (a credit at 1 USD), framed only by the journey's embedding
/// page.
fn start(ws: &str) -> Result<Setup> {
    start_priced(ws, "1")
}

/// [`start`], with credits at `credit_price` USD each.
fn start_priced(ws: &str, credit_price: &str) -> Result<Setup> {
    let mut ls = Localstripe::start()?;
    let embed_port = free_port()?;
    let options = HostOptions::default()
        .env("SPIN_VARIABLE_STRIPE_API_BASE", ls.base_url())
        .env("SPIN_VARIABLE_STRIPE_SECRET_KEY", SECRET_KEY)
        .env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("SPIN_VARIABLE_STRIPE_PUBLISHABLE_KEY", PUBLISHABLE_KEY)
        .env(
            "SPIN_VARIABLE_STRIPE_JS_URL",
            format!("{}/js.stripe.com/v3/", ls.base_url()),
        )
        .env(
            "SPIN_VARIABLE_BILLING_EMBED_ORIGINS",
            format!("http://localhost:{embed_port}"),
        );
    ls.create_plan("plan_pro", 4900, "usd")?;
    let app = App::start_with(options)?;
    ls.register_webhook(&app.host.url("/webhooks/stripe"), WEBHOOK_SECRET)?;
    expect(
        &app.service("PUT", "/v1/catalog", Some(&catalog(credit_price)))?,
        200,
        "catalog",
    )?;
    app.provision(ws)?;
    Ok(Setup {
        ls,
        app,
        embed_port,
    })
}

impl Setup {
    /// Runs browser journey `name` as `role` of `ws` with `extra` config; returns what it saw.
    fn journey(&self, name: &str, ws: &str, role: Role, extra: Value) -> Result<Value> {
        let screenshots = std::env::var_os("BILLING_SCREENSHOTS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/billing-page-screenshots"));
        let mut config = json!({
            "app": self.app.host.base_url(),
            "embed_port": self.embed_port,
            "workspace": ws,
            "token": token(ws, role, now_secs() + 3600),
            "stripe": {"base": self.ls.base_url(), "secret_key": SECRET_KEY},
            "screenshots": screenshots,
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            config[key] = value.clone();
        }
        let output = Command::new("python3")
            .arg(workspace_root().join("tests/browser/billing_page.py"))
            .arg(name)
            .arg(config.to_string())
            .output()
            .context("run python3 tests/browser/billing_page.py (source scripts/env.sh)")?;
        ensure!(
            output.status.success(),
            "browser journey {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().context("journey printed nothing")?;
        serde_json::from_str(last).with_context(|| format!("journey output {last}"))
    }

    /// GET `/v1/workspaces/{ws}{rest}` as its owner; the JSON of a 200.
    fn owner_get(&self, ws: &str, rest: &str) -> Result<Value> {
        expect(&self.app.owner(ws, "GET", rest, None)?, 200, rest)
    }

    fn summary(&self, ws: &str) -> Result<Value> {
        self.owner_get(ws, "/billing")
    }

    /// The workspace's receipts, newest first.
    fn receipts(&self, ws: &str) -> Result<Vec<Value>> {
        let list = self.owner_get(ws, "/receipts")?;
        Ok(list["data"].as_array().cloned().unwrap_or_default())
    }

    /// The last4 of every card attached to Stripe customer `customer`, at localstripe.
    fn cards_at_stripe(&self, customer: &str) -> Result<Vec<String>> {
        let list = self
            .ls
            .get(&format!(
                "/v1/payment_methods?customer={customer}&type=card"
            ))?
            .ok()?;
        Ok(list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|card| str_of(&card["card"], "last4").to_owned())
            .collect())
    }

    /// Buys `amount` USD of credits with the saved card, through the API.
    fn top_up(&self, ws: &str, amount: &str) -> Result<Value> {
        expect(
            &self
                .app
                .owner(ws, "POST", "/topups", Some(&json!({"amount": amount})))?,
            201,
            "top-up",
        )
    }

    fn set_auto_recharge(&self, ws: &str, settings: &Value) -> Result<()> {
        expect(
            &self
                .app
                .owner(ws, "PUT", "/auto-recharge", Some(settings))?,
            200,
            "auto-recharge",
        )?;
        Ok(())
    }

    fn transactions(&self, ws: &str, query: &str) -> Result<Vec<Value>> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_query = match &cursor {
                Some(c) => format!("?limit=100&cursor={c}{query}"),
                None => format!("?limit=100{query}"),
            };
            let page = self.owner_get(ws, &format!("/transactions{page_query}"))?;
            rows.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(rows),
            }
        }
    }

    fn subscribe(&self, ws: &str, plan: &str) -> Result<Value> {
        expect(
            &self
                .app
                .owner(ws, "POST", "/subscription", Some(&json!({"plan_id": plan})))?,
            200,
            "subscribe",
        )
    }

    /// Debits `count` events of `kind` for `agent`, each of `quantity`.
    fn use_credits(
        &self,
        ws: &str,
        agent: &str,
        kind: &str,
        quantity: u32,
        count: usize,
    ) -> Result<()> {
        for i in 0..count {
            self.debit(
                &json!({"id": format!("{ws}-{agent}-{kind}-{i}"), "workspace_id": ws,
                "agent_id": agent, "kind": kind, "quantity": quantity}),
            )?;
        }
        Ok(())
    }

    /// Posts one usage event (service key); fails unless it is debited.
    fn debit(&self, event: &Value) -> Result<()> {
        expect(
            &self.app.service("POST", "/v1/usage", Some(event))?,
            200,
            "usage",
        )?;
        Ok(())
    }

    /// A call by `agent` of `duration_seconds`, authorized then ended (service key).
    fn call(&self, ws: &str, call_id: &str, agent: &str, duration_seconds: u32) -> Result<()> {
        let call = json!({"workspace_id": ws, "agent_id": agent, "call_id": call_id,
            "direction": "outbound", "to": "+14155550123", "from": "+14155550100"});
        expect(
            &self.app.service("POST", "/v1/calls", Some(&call))?,
            201,
            "authorize",
        )?;
        expect(
            &self.app.service(
                "POST",
                &format!("/v1/calls/{call_id}/end"),
                Some(&json!({"duration_seconds": duration_seconds})),
            )?,
            200,
            "end",
        )?;
        Ok(())
    }

    /// Grants `ws` the credits `body` describes, through the operator's route (service key,
    /// `key` its `Idempotency-Key`); the grant as made.
    fn grant(&self, ws: &str, key: &str, mut body: Value) -> Result<Value> {
        body["workspace_id"] = json!(ws);
        let auth = format!("Bearer {SERVICE_KEY}");
        let headers = [("authorization", auth.as_str()), ("idempotency-key", key)];
        let reply = self
            .app
            .request("POST", "/v1/grants", Some(&body), &headers)?;
        expect(&reply, 201, "grant")
    }

    /// Sets `ws`'s test clock (forward only).
    fn clock(&self, ws: &str, time: &str) -> Result<()> {
        expect(
            &self.app.service(
                "POST",
                &format!("/v1/test-clocks/{ws}"),
                Some(&json!({"frozen_time": time})),
            )?,
            200,
            "test clock",
        )?;
        Ok(())
    }

    /// A workspace on `plan` since 2027-03-01 whose clock reads 2027-03-20, with a week of
    /// usage behind it: 0.80 credits a day, and 7.20 on 2027-03-18 (a spike: over 3x the median
    /// day). The runway then has a forecast and a suggested auto-recharge. With `wallet`, a card
    /// is saved and that much bought before the usage.
    fn with_history(&self, ws: &str, plan: &str, wallet: Option<&str>) -> Result<()> {
        self.clock(ws, "2027-03-01T08:00:00Z")?;
        self.subscribe(ws, plan)?;
        self.clock(ws, "2027-03-20T12:00:00Z")?;
        if let Some(amount) = wallet {
            save_card_through_app(&self.app, &self.ls, ws, CARD_OK)?;
            self.top_up(ws, amount)?;
        }
        for day in 14..=20 {
            let (agent, kind, quantity, count) = if day == 18 {
                ("sales-agent", "ai_task", 30, 12)
            } else {
                ("support-bot", "message", 40, 2)
            };
            for i in 0..count {
                self.debit(&json!({"id": format!("{ws}-{day}-{i}"), "workspace_id": ws,
                    "agent_id": agent, "kind": kind, "quantity": quantity,
                    "occurred_at": format!("2027-03-{day}T10:00:00Z")}))?;
            }
        }
        Ok(())
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

#[test]
fn an_owner_buys_credits_with_a_new_card_and_sees_them_only_once_paid() -> Result<()> {
    let ws = "ws-buy";
    // Credits at a cent each: the form says what the dollars buy.
    let s = start_priced(ws, "0.01")?;
    s.subscribe(ws, "free")?;
    s.use_credits(ws, "agent-a", "message", 100, 3)?;
    // The card on file is one the bank now declines; the owner pays with a new one.
    save_card_through_app(&s.app, &s.ls, ws, CARD_DECLINED_ON_CHARGE)?;
    s.journey(
        "buy_credits",
        ws,
        Role::Owner,
        json!({"card": CARD_OK, "saved_last4": "0341", "amount": "25", "wallet_before": "0",
               "wallet_after": "2500", "credits": "2500",
               "preview": "$25.00 buys 2,500 credits at $0.01 per credit.",
               "receipt": {"number": "R-0001", "amount_text": "$25.00", "credits": "2500",
                           "credits_text": "2,500.00", "price_text": "$0.01"}}),
    )?;
    let summary = s.summary(ws)?;
    assert_eq!(micros_of(&summary["wallet_balance"])?, 2_500_000_000);
    assert_eq!(summary["payment_method"]["last4"], "4242");
    let topups = s.transactions(ws, "&type=topup")?;
    assert_eq!(topups.len(), 1, "{topups:?}");
    assert_eq!(micros_of(&topups[0]["amount"])?, 2_500_000_000);
    assert_eq!(
        micros_of(&topups[0]["wallet_balance_after"])?,
        2_500_000_000
    );
    let receipts = s.receipts(ws)?;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let receipt = &receipts[0];
    assert_eq!(receipt["number"], "R-0001", "{receipt}");
    assert_eq!(receipt["kind"], "topup", "{receipt}");
    assert_eq!(micros_of(&receipt["amount"])?, 25_000_000);
    assert_eq!(micros_of(&receipt["credits"])?, 2_500_000_000);
    assert_eq!(micros_of(&receipt["credit_price"])?, 10_000);
    assert_eq!(micros_of(&receipt["tax"])?, 0);
    assert_eq!(receipt["card"]["last4"], "4242", "{receipt}");
    s.app.check_invariants()
}

#[test]
fn a_declined_new_card_never_replaces_the_saved_one() -> Result<()> {
    let ws = "ws-issue-21";
    let s = start(ws)?;
    s.subscribe(ws, "free")?;
    let (_, customer) = save_card_through_app(&s.app, &s.ls, ws, CARD_OK)?;
    s.top_up(ws, "30")?;
    let auto = json!({"enabled": true, "threshold": "5", "amount": "20"});
    s.set_auto_recharge(ws, &auto)?;
    let seen = s.journey(
        "declined_new_card_keeps_the_saved_one",
        ws,
        Role::Owner,
        json!({"card": CARD_DECLINED_ON_CHARGE, "amount": "10", "saved_last4": "4242",
               "wallet": "30", "wallet_after": "40", "auto_recharge": auto,
               "message": STRIPE_DECLINED}),
    )?;
    let summary = s.summary(ws)?;
    assert_eq!(summary["payment_method"]["last4"], "4242", "{summary}");
    assert_eq!(micros_of(&summary["wallet_balance"])?, 40_000_000);
    assert_eq!(summary["auto_recharge"]["enabled"], true, "{summary}");
    assert_eq!(
        micros_of(&summary["auto_recharge"]["threshold"])?,
        5_000_000
    );
    assert_eq!(micros_of(&summary["auto_recharge"]["amount"])?, 20_000_000);
    // At Stripe, the declined card was never attached to the customer.
    assert_eq!(s.cards_at_stripe(&customer)?, ["4242"]);
    let declined = s.owner_get(ws, &format!("/topups/{}", str_of(&seen, "declined")))?;
    assert_eq!(declined["status"], "failed", "{declined}");
    assert_eq!(declined["failure_code"], "card_declined", "{declined}");
    let topups = s.transactions(ws, "&type=topup")?;
    assert_eq!(
        topups.len(),
        2,
        "the 30 and the 10 by the saved card: {topups:?}"
    );
    let receipts = s.receipts(ws)?;
    let numbers: Vec<&str> = receipts.iter().map(|r| str_of(r, "number")).collect();
    assert_eq!(numbers, ["R-0002", "R-0001"], "{receipts:?}");
    s.app.check_invariants()
}

#[test]
fn a_new_card_abandoned_at_3_d_secure_saves_and_credits_nothing() -> Result<()> {
    let ws = "ws-3ds-new";
    let s = start(ws)?;
    s.subscribe(ws, "free")?;
    save_card_through_app(&s.app, &s.ls, ws, CARD_OK)?;
    let seen = s.journey(
        "new_card_authentication",
        ws,
        Role::Owner,
        json!({"card": CARD_REQUIRES_AUTH, "amount": "10", "saved_last4": "4242",
               "wallet_after": "10", "message": STRIPE_AUTHENTICATION_FAILED}),
    )?;
    // Completed on the second try: exactly that payment landed, and its card is the saved one.
    let summary = s.summary(ws)?;
    assert_eq!(summary["payment_method"]["last4"], "3155", "{summary}");
    assert_eq!(micros_of(&summary["wallet_balance"])?, 10_000_000);
    let topups = s.transactions(ws, "&type=topup")?;
    assert_eq!(topups.len(), 1, "{topups:?}");
    assert_eq!(s.receipts(ws)?.len(), 1);
    // The abandoned top-up credited nothing (localstripe sends no webhook for a failed
    // authentication, so it is left for the reconciliation, R21).
    let abandoned = s.owner_get(ws, &format!("/topups/{}", str_of(&seen, "abandoned")))?;
    assert_ne!(abandoned["status"], "succeeded", "{abandoned}");
    s.app.check_invariants()
}

#[test]
fn a_payment_the_bank_must_confirm_credits_nothing_until_it_is_confirmed() -> Result<()> {
    let ws = "ws-3ds";
    let s = start(ws)?;
    s.subscribe(ws, "free")?;
    // The card needs 3-D Secure on every charge (saved as Stripe.js would after its own check).
    let setup = expect(
        &s.app
            .owner(ws, "POST", "/payment-method/setup", Some(&json!({})))?,
        200,
        "setup",
    )?;
    let intent =
        s.ls.get(&format!(
            "/v1/setup_intents/{}",
            str_of(&setup, "setup_intent_id")
        ))?
        .ok()?;
    let customer = intent["customer"].as_str().context("no customer")?;
    let card = s.ls.create_card(CARD_REQUIRES_AUTH)?;
    s.ls.attach(&card, customer)?.ok()?;
    expect(
        &s.app
            .owner(ws, "POST", "/payment-method/refresh", Some(&json!({})))?,
        200,
        "refresh",
    )?;
    s.journey(
        "buy_with_authentication",
        ws,
        Role::Owner,
        json!({"amount": "40", "wallet_before": "0", "wallet_after": "40"}),
    )?;
    let topups = s.transactions(ws, "&type=topup")?;
    assert_eq!(topups.len(), 1, "credited once: {topups:?}");
    assert_eq!(micros_of(&s.summary(ws)?["wallet_balance"])?, 40_000_000);
    s.app.check_invariants()
}

#[test]
fn a_declined_new_card_shows_stripes_words_and_saves_nothing() -> Result<()> {
    let ws = "ws-declined";
    let s = start(ws)?;
    s.subscribe(ws, "free")?;
    s.journey(
        "declined_card",
        ws,
        Role::Owner,
        json!({"card": CARD_DECLINED_ON_CHARGE, "message": STRIPE_DECLINED}),
    )?;
    let summary = s.summary(ws)?;
    assert_eq!(micros_of(&summary["wallet_balance"])?, 0);
    assert_eq!(summary["payment_method"], Value::Null, "{summary}");
    assert!(s.transactions(ws, "&type=topup")?.is_empty());
    s.app.check_invariants()
}

#[test]
fn the_red_bar_appears_at_zero_and_goes_after_a_top_up() -> Result<()> {
    let ws = "ws-red";
    let s = start(ws)?;
    s.subscribe(ws, "free")?;
    save_card_through_app(&s.app, &s.ls, ws, CARD_OK)?;
    // The plan's 10 credits, all used: 1,000 messages at 0.01.
    s.use_credits(ws, "agent-a", "message", 1_000, 1)?;
    let before = s.summary(ws)?;
    ensure!(
        ["balance_exhausted", "grace_period"].contains(&str_of(&before, "status")),
        "status at zero: {before}"
    );
    s.journey(
        "red_bar",
        ws,
        Role::Owner,
        json!({"message": str_of(&before, "message"), "amount": "20", "wallet_after": "20"}),
    )?;
    let after = s.summary(ws)?;
    assert_eq!(after["status"], "ok", "{after}");
    assert_eq!(micros_of(&after["wallet_balance"])?, 20_000_000);
    s.app.check_invariants()
}

#[test]
fn an_upgrade_shows_then_grants_the_prorated_credits() -> Result<()> {
    let ws = "ws-upgrade";
    let s = start(ws)?;
    // A 30-day cycle (April), upgraded with 20 whole days left: R14 grants 3,000 x 20 / 30.
    s.clock(ws, "2027-04-01T09:00:00Z")?;
    s.subscribe(ws, "starter")?;
    s.clock(ws, "2027-04-11T09:00:00Z")?;
    s.use_credits(ws, "agent-a", "ai_task", 500, 1)?; // 10 credits of the 300
    let seen = s.journey(
        "upgrade",
        ws,
        Role::Owner,
        json!({"plan": "growth", "plan_name": "Growth", "credits_text": "2,000.00",
               "plan_after": "2290"}),
    )?;
    assert_eq!(seen["preview_credits"], "2000");
    let grants = s.transactions(ws, "&type=plan_grant")?;
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert_eq!(micros_of(&grants[0]["amount"])?, 2_000_000_000);
    let summary = s.summary(ws)?;
    assert_eq!(summary["plan"]["id"], "growth");
    assert_eq!(
        summary["pending_plan_change"],
        Value::Null,
        "the downgrade was cancelled"
    );
    assert_eq!(
        micros_of(&summary["plan_credits_remaining"])?,
        2_290_000_000
    );
    s.app.check_invariants()
}

#[test]
fn an_owner_edits_an_agents_limits() -> Result<()> {
    let ws = "ws-agents";
    let s = start(ws)?;
    s.subscribe(ws, "starter")?;
    s.use_credits(ws, "agent-a", "message", 10, 2)?;
    s.use_credits(ws, "agent-b", "message", 10, 1)?;
    s.journey("agent_limits", ws, Role::Owner, json!({}))?;
    let limits = s.owner_get(ws, "/agents/agent-a/limits")?;
    assert_eq!(
        limits,
        json!({"overage_policy": "stop", "monthly_spend_limit": "50", "daily_call_limit": 100,
               "max_concurrent_calls": 3})
    );
    let other = s.owner_get(ws, "/agents/agent-b/limits")?;
    assert_eq!(other["overage_policy"], "use_balance", "{other}");
    s.app.check_invariants()
}

#[test]
fn the_history_pages_and_its_csv_carries_every_row() -> Result<()> {
    let ws = "ws-csv";
    let s = start(ws)?;
    s.subscribe(ws, "starter")?;
    s.use_credits(ws, "agent-a", "message", 1, 40)?;
    s.use_credits(ws, "agent-b", "ai_task", 1, 20)?;
    let seen = s.journey("csv_export", ws, Role::Owner, json!({}))?;
    let api_ids: Vec<String> = s
        .transactions(ws, "")?
        .iter()
        .map(|row| str_of(row, "id").to_owned())
        .collect();
    assert_eq!(api_ids.len(), 61, "60 debits and the plan grant");
    let csv_ids: Vec<String> = seen["csv_ids"]
        .as_array()
        .context("csv_ids")?
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(csv_ids, api_ids, "the CSV holds every row, newest first");
    s.app.check_invariants()
}

#[test]
fn a_member_sees_only_the_banner() -> Result<()> {
    let ws = "ws-member";
    let s = start(ws)?;
    s.subscribe(ws, "free")?;
    s.use_credits(ws, "agent-a", "message", 800, 1)?; // 2 credits left: low balance
    // The banner as a member is told it (R19: the sentence says who can act).
    let path = format!("/v1/workspaces/{ws}/billing");
    let summary = expect(
        &s.app.user(ws, Role::Member, "GET", &path, None)?,
        200,
        "member's summary",
    )?;
    assert_eq!(summary["status"], "low_balance", "{summary}");
    s.journey(
        "member",
        ws,
        Role::Member,
        json!({"message": str_of(&summary, "message")}),
    )?;
    Ok(())
}

#[test]
fn the_page_reads_well_in_dark_and_at_a_phones_width() -> Result<()> {
    let ws = "ws-looks";
    let s = start(ws)?;
    // The free plan's 10 credits run out within the week: the wallet's 50 then last a month.
    s.with_history(ws, "free", Some("50"))?;
    // A call of 2 min 5 s, billed by the whole minute: 3 min at 0.05.
    s.call(ws, "ws-looks-call", "support-bot", 125)?;
    // Credit grants, after the usage (which they would otherwise pay), so that their card is
    // measured too: the longest scope note, and one that never expires.
    s.grant(
        ws,
        "looks-bonus",
        json!({"amount": "5", "category": "promotional", "name": "Welcome bonus",
               "expires_at": "2027-03-23T12:00:00Z",
               "scope": {"kinds": ["call", "ai_task"], "agent_id": "support-bot"}}),
    )?;
    s.grant(
        ws,
        "looks-contract",
        json!({"amount": "100", "category": "paid", "cost_basis": "80",
               "name": "Support contract"}),
    )?;
    let seen = s.journey(
        "looks",
        ws,
        Role::Owner,
        json!({"spike_date": "2027-03-18", "call_reference": "ws-looks-call",
               "call_usage": "2 min 5 s, 3 min billed at 0.05 credits a minute"}),
    )?;
    // The figures the journey measured (smallest text and control, tables against their cards).
    println!("{}", serde_json::to_string_pretty(&seen["figures"])?);
    Ok(())
}

#[test]
fn credit_grants_show_with_the_balances_and_what_they_paid_in_the_history() -> Result<()> {
    let ws = "ws-grants";
    let s = start(ws)?;
    // A frozen clock: "expires in 3 days" is exact.
    s.clock(ws, "2027-03-20T12:00:00Z")?;
    s.subscribe(ws, "free")?;
    s.use_credits(ws, "agent-a", "message", 1_000, 1)?; // the plan's 10 credits, all used
    let bonus = s.grant(
        ws,
        "bonus",
        json!({"amount": "5", "category": "promotional", "name": "Launch bonus",
               "expires_at": "2027-03-23T12:00:00Z", "scope": {"kinds": ["call"]}}),
    )?;
    let contract = s.grant(
        ws,
        "contract",
        json!({"amount": "100", "category": "paid", "cost_basis": "80",
               "name": "Support contract"}),
    )?;
    let spring = s.grant(
        ws,
        "spring",
        json!({"amount": "20", "category": "promotional", "name": "Spring credit",
               "effective_at": "2027-04-01T00:00:00Z", "expires_at": "2027-06-30T00:00:00Z"}),
    )?;
    // 100 AI tasks at 0.02: outside the bonus's scope, so the contract pays. A call of 2 min
    // 5 s (3 min at 0.05) is paid by the bonus, which expires first.
    s.debit(
        &json!({"id": "ws-grants-task", "workspace_id": ws, "agent_id": "agent-a",
                "kind": "ai_task", "quantity": 100}),
    )?;
    s.call(ws, "ws-grants-call", "agent-a", 125)?;
    // What the API says, first: the page must show exactly this.
    let summary = s.summary(ws)?;
    assert_eq!(
        micros_of(&summary["grant_credits_remaining"])?,
        102_850_000,
        "{summary}"
    );
    let listed: Vec<&str> = summary["grants"]
        .as_array()
        .context("grants")?
        .iter()
        .map(|grant| str_of(grant, "id"))
        .collect();
    let in_order = [&bonus, &spring, &contract].map(|grant| str_of(grant, "id"));
    assert_eq!(listed, in_order, "in the order they are spent: {summary}");
    s.journey(
        "grants",
        ws,
        Role::Owner,
        json!({
            "total": "102.85",
            "grants": [
                {"id": bonus["id"], "name": "Launch bonus", "category": "Promotional",
                 "remaining": "4.85", "remaining_text": "4.85",
                 "amount": "5", "amount_text": "of 5.00 credits left",
                 "notes": ["Calls only", "Expires in 3 days"]},
                {"id": spring["id"], "name": "Spring credit", "category": "Promotional",
                 "remaining": "20", "remaining_text": "20.00",
                 "amount": "20", "amount_text": "of 20.00 credits left",
                 "notes": ["Starts Apr 1, 2027", "Expires Jun 30, 2027"]},
                {"id": contract["id"], "name": "Support contract", "category": "Paid",
                 "remaining": "98", "remaining_text": "98.00",
                 "amount": "100", "amount_text": "of 100.00 credits left",
                 "notes": ["Never expires"]}
            ],
            "history": [
                {"reference": "ws-grants-call", "grant_amount": "-0.15", "text": "−0.15"},
                {"reference": "ws-grants-task", "grant_amount": "-2", "text": "−2.00"},
                {"reference": "ws-grants-agent-a-message-0", "grant_amount": "0", "text": "0.00"}
            ]
        }),
    )?;
    s.app.check_invariants()
}

#[test]
fn auto_recharge_needs_a_card_and_takes_the_suggested_setting() -> Result<()> {
    let ws = "ws-auto";
    let s = start(ws)?;
    s.with_history(ws, "starter", None)?;
    let suggestion = s.summary(ws)?["runway"]["suggested_auto_recharge"].clone();
    ensure!(suggestion.is_object(), "no suggestion: {suggestion}");
    s.journey(
        "auto_recharge",
        ws,
        Role::Owner,
        json!({"suggestion": suggestion, "card": CARD_OK}),
    )?;
    let summary = s.summary(ws)?;
    let auto = &summary["auto_recharge"];
    assert_eq!(auto["enabled"], true, "{summary}");
    assert_eq!(
        micros_of(&auto["threshold"])?,
        micros_of(&suggestion["threshold"])?
    );
    assert_eq!(
        micros_of(&auto["amount"])?,
        micros_of(&suggestion["amount"])?
    );
    assert_eq!(summary["payment_method"]["last4"], "4242");
    // An automatic recharge, paid by the card saved in the journey: both payments have their
    // receipt, the recharge's the newest. The wallet's 15 are below the suggested threshold.
    let report = expect(
        &s.app
            .service("POST", "/internal/jobs/auto-recharge", None)?,
        200,
        "auto-recharge job",
    )?;
    ensure!(report["recharges_succeeded"] == 1, "{report}");
    let amount = str_of(&suggestion, "amount");
    let receipts = s.receipts(ws)?;
    let kinds: Vec<&str> = receipts.iter().map(|r| str_of(r, "kind")).collect();
    assert_eq!(kinds, ["auto_recharge", "topup"], "{receipts:?}");
    s.journey(
        "receipts",
        ws,
        Role::Owner,
        json!({"receipts": [
            {"id": receipts[0]["id"], "number": "R-0002", "kind_text": "Automatic recharge",
             "amount_text": format!("${amount}.00"), "credits_text": format!("{amount}.00")},
            {"id": receipts[1]["id"], "number": "R-0001", "kind_text": "Credits bought (top-up)",
             "amount_text": "$15.00", "credits_text": "15.00"}
        ]}),
    )?;
    s.app.check_invariants()
}

#[test]
fn a_paid_plans_invoice_is_listed_with_its_documents() -> Result<()> {
    let ws = "ws-invoices";
    let s = start(ws)?;
    save_card_through_app(&s.app, &s.ls, ws, CARD_OK)?;
    s.subscribe(ws, "pro")?;
    let invoices = s.owner_get(ws, "/invoices")?;
    let first = invoices["data"][0].clone();
    ensure!(first.is_object(), "no invoice: {invoices}");
    s.journey(
        "invoices",
        ws,
        Role::Owner,
        json!({"invoice": first, "amount_text": "$49.00"}),
    )?;
    Ok(())
}

#[test]
fn the_page_is_served_with_its_policy_and_nothing_else_is() -> Result<()> {
    let ws = "ws-headers";
    let s = start(ws)?;
    let page = e2e::get(&s.app.host.url("/billing/"))?;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    let stripe = s.ls.base_url();
    for directive in [
        "default-src 'none'".to_owned(),
        format!("script-src 'self' {stripe};"),
        "style-src 'self';".to_owned(),
        format!("connect-src 'self' {stripe};"),
        format!("frame-ancestors 'self' http://localhost:{};", s.embed_port),
        "base-uri 'none'".to_owned(),
        "form-action 'none'".to_owned(),
    ] {
        ensure!(policy.contains(&directive), "{directive} not in {policy}");
    }
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    ensure!(
        page.body.contains(&format!(
            "<script src=\"{stripe}/js.stripe.com/v3/\"></script>"
        )),
        "Stripe.js is not loaded from the configured URL"
    );
    ensure!(
        page.body
            .contains(&format!("data-stripe-key=\"{PUBLISHABLE_KEY}\""))
    );

    let embed = e2e::get(&s.app.host.url("/billing/embed.js"))?;
    assert_eq!(embed.status, 200);
    assert_eq!(
        embed.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        embed.header("cross-origin-resource-policy"),
        Some("cross-origin")
    );
    // The bare path redirects to the page (the client follows it).
    let bare = e2e::get(&s.app.host.url("/billing"))?;
    assert_eq!(bare.status, 200);
    assert_eq!(bare.body, page.body);
    let unknown = e2e::get(&s.app.host.url("/billing/secrets.json"))?;
    assert_eq!(unknown.status, 404);
    assert_eq!(e2e::api::json_of(&unknown)["error"]["code"], "not_found");
    let post = e2e::post_json(&s.app.host.url("/billing/"), "{}", &[])?;
    assert_eq!(post.status, 405);
    assert_eq!(
        e2e::api::json_of(&post)["error"]["code"],
        "method_not_allowed"
    );
    Ok(())
}

#[test]
fn an_expired_token_is_reported_and_a_fresh_one_opens_the_page() -> Result<()> {
    let ws = "ws-token";
    let s = start(ws)?;
    s.subscribe(ws, "free")?;
    s.journey(
        "token_refresh",
        ws,
        Role::Owner,
        json!({"expired_token": token(ws, Role::Owner, now_secs() - 60),
               "fresh_token": token(ws, Role::Owner, now_secs() + 3600)}),
    )?;
    Ok(())
}
