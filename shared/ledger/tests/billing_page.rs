//! What the billing page reads (issue 16), on a real ledger (SQLite on a temp file): the
//! summary's credit price and top-up bounds, the list of agents with their limits and counters,
//! and the plan-change preview, which must be exactly what the change then does.

mod common;

use common::{DAY, Fixture, NOV_1, dec, dump, micros};
use futures::executor::block_on;
use ledger::agents::{self, AgentLimits, AgentPage, OveragePolicy};
use ledger::catalog::{Catalog, Direction, UsageKind};
use ledger::native::NativeDb;
use ledger::plan_change::{self, PlanChangePlan, PlanChangePreview};
use ledger::plans::{self, ChangeKind, PlanChange};
use ledger::{LedgerError, Storage, calendar, calls, money, views, workspace};

// ---------------------------------------------------------------------------------------------
// The summary: credit price and top-up bounds.

#[test]
fn the_summary_shows_the_credit_price_and_the_top_up_bounds() {
    let fx = Fixture::new();
    fx.workspace("w");
    let summary = block_on(views::summary(&fx.db, &fx.catalog, "w", NOV_1)).expect("summary");
    assert_eq!(
        (summary.credit_price, summary.topup_min, summary.topup_max),
        (dec("1"), dec("10"), dec("5000"))
    );

    // Another catalog: a credit at 1.5, top-ups from 12.5 to 2,500; the JSON carries decimal
    // strings, as every amount of the API.
    let mut doc = fx.catalog.doc.clone();
    doc.settings.credit_price = dec("1.50");
    doc.settings.topup_min = dec("12.5");
    doc.settings.topup_max = dec("2500");
    let catalog = Catalog::validate(1, doc).expect("catalog");
    let summary = block_on(views::summary(&fx.db, &catalog, "w", NOV_1)).expect("summary");
    let json = serde_json::to_value(&summary).expect("json");
    assert_eq!(
        (
            &json["credit_price"],
            &json["topup_min"],
            &json["topup_max"]
        ),
        (
            &serde_json::json!("1.5"),
            &serde_json::json!("12.5"),
            &serde_json::json!("2500")
        )
    );
    // The bounds shown are the bounds a top-up is held to.
    let refused = block_on(ledger::payments::create_topup(
        &fx.db,
        &catalog,
        "w",
        "tp_low",
        dec("12.49"),
        NOV_1,
    ))
    .expect_err("below the minimum");
    assert_eq!(refused.code(), "amount_below_minimum");
    block_on(ledger::payments::create_topup(
        &fx.db,
        &catalog,
        "w",
        "tp_ok",
        dec("12.5"),
        NOV_1,
    ))
    .expect("at the minimum");
    fx.assert_invariants();
}

// ---------------------------------------------------------------------------------------------
// The agents list.

fn list(
    fx: &Fixture,
    ws: &str,
    limit: Option<i64>,
    cursor: Option<&str>,
    now: i64,
) -> Result<AgentPage, LedgerError> {
    block_on(agents::list(&fx.db, ws, limit, cursor, now))
}

/// (agent, cycle spend, calls today, calls in progress) of each agent of the page.
fn counters(page: &AgentPage) -> Vec<(&str, i64, i64, i64)> {
    page.agents
        .iter()
        .map(|agent| {
            (
                agent.agent_id.as_str(),
                money::decimal_to_micros("cycle_spend", agent.cycle_spend, true)
                    .expect("cycle spend"),
                agent.calls_today,
                agent.calls_in_progress,
            )
        })
        .collect()
}

/// Every agent of every page of `ws`, `limit` at a time.
fn every_agent(fx: &Fixture, ws: &str, limit: i64, now: i64) -> Vec<AgentPage> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(fx, ws, Some(limit), cursor.as_deref(), now).expect("page");
        cursor = page.next_cursor.clone();
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
    }
}

#[test]
fn an_empty_workspace_has_no_agents_and_an_unknown_one_is_not_found() {
    let fx = Fixture::new();
    fx.workspace("w");
    assert_eq!(
        list(&fx, "w", None, None, NOV_1),
        Ok(AgentPage {
            agents: vec![],
            next_cursor: None
        })
    );
    let json = serde_json::to_value(list(&fx, "w", None, None, NOV_1).expect("page"));
    assert_eq!(
        json.expect("json"),
        serde_json::json!({"agents": [], "next_cursor": null})
    );
    assert_eq!(
        list(&fx, "nobody", None, None, NOV_1),
        Err(LedgerError::NotFound { what: "workspace" })
    );
}

#[test]
fn agents_are_listed_by_id_with_their_limits_and_counters_for_now() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.topup("w", "tp1", "100", NOV_1);
    // Limits set, never used.
    let limits = AgentLimits {
        overage_policy: OveragePolicy::Stop,
        monthly_spend_limit: Some(dec("5.5")),
        daily_call_limit: Some(3),
        max_concurrent_calls: Some(2),
    };
    block_on(agents::put_limits(&fx.db, "w", "b-limits", &limits, NOV_1)).expect("limits");
    // 100 messages at 0.01: 1 credit.
    fx.debit("w", "c-debit", "e1", UsageKind::Message, "100", NOV_1)
        .expect("debit");
    // Two calls (0.02 a minute to +1): one ended after 30 s (0.02), one in progress.
    let at = NOV_1 + 3_600;
    for call in ["c1", "c2"] {
        fx.call("w", "a-call", call, Direction::Outbound, "+14155550123", at)
            .expect("call");
    }
    block_on(calls::end(&fx.db, "c2", 30, at + 30)).expect("end");

    let page = list(&fx, "w", None, None, at + 60).expect("page");
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        counters(&page),
        vec![
            ("a-call", micros("0.02"), 2, 1),
            ("b-limits", 0, 0, 0),
            ("c-debit", micros("1"), 0, 0),
        ]
    );
    // The limits are exactly what GET .../agents/{agent}/limits answers, field for field.
    for agent in &page.agents {
        let one =
            block_on(agents::get_limits(&fx.db, "w", &agent.agent_id, at + 60)).expect("limits");
        assert_eq!(agent.limits, one, "{}", agent.agent_id);
        let listed = serde_json::to_value(agent).expect("json");
        for (field, value) in serde_json::to_value(&one)
            .expect("json")
            .as_object()
            .expect("object")
        {
            assert_eq!(&listed[field], value, "{} {field}", agent.agent_id);
        }
    }
    assert_eq!(
        serde_json::to_value(&page.agents[1]).expect("json"),
        serde_json::json!({
            "agent_id": "b-limits", "overage_policy": "stop", "monthly_spend_limit": "5.5",
            "daily_call_limit": 3, "max_concurrent_calls": 2, "cycle_spend": "0",
            "calls_today": 0, "calls_in_progress": 0
        })
    );

    // Pages of 2, then 1; the cursor is the last agent of the page.
    let pages = every_agent(&fx, "w", 2, at + 60);
    assert_eq!(
        pages
            .iter()
            .map(|p| (
                p.agents.iter().map(|a| a.agent_id.as_str()).collect(),
                p.next_cursor.as_deref()
            ))
            .collect::<Vec<(Vec<&str>, Option<&str>)>>(),
        vec![
            (vec!["a-call", "b-limits"], Some("b-limits")),
            (vec!["c-debit"], None),
        ]
    );
    // A page that ends exactly at the last agent says so.
    assert_eq!(
        list(&fx, "w", Some(3), None, at + 60).map(|p| p.next_cursor),
        Ok(None)
    );

    // December 1: a new cycle and a new day. The counters of November read 0; the call still
    // in progress is still counted.
    block_on(plans::renew_due(&fx.db, &fx.catalog, NOV_1 + 30 * DAY, 100)).expect("renew");
    let december = NOV_1 + 30 * DAY + 3_600;
    assert_eq!(
        counters(&list(&fx, "w", None, None, december).expect("page")),
        vec![
            ("a-call", 0, 0, 1),
            ("b-limits", 0, 0, 0),
            ("c-debit", 0, 0, 0),
        ]
    );
    fx.debit("w", "c-debit", "e2", UsageKind::Message, "200", december)
        .expect("debit");
    assert_eq!(
        counters(&list(&fx, "w", None, None, december).expect("page"))[2],
        ("c-debit", micros("2"), 0, 0)
    );
    fx.assert_invariants();
}

#[test]
fn agents_are_counted_on_the_workspace_clock_and_local_day() {
    let fx = Fixture::new();
    let input = workspace::WorkspaceInput {
        name: "NY".into(),
        email: "ny@example.com".into(),
        currency: None,
        timezone: Some("America/New_York".into()),
    };
    block_on(workspace::upsert(&fx.db, &fx.catalog, "w", &input, NOV_1)).expect("ws");
    block_on(plans::change_plan(
        &fx.db,
        &fx.catalog,
        "w",
        "free",
        true,
        NOV_1,
    ))
    .expect("plan");
    // 2026-11-21 03:00 UTC is 22:00 on the 20th in New York.
    let evening = NOV_1 + 20 * DAY + 3 * 3_600;
    fx.call("w", "a", "c1", Direction::Outbound, "+14155550123", evening)
        .expect("call");
    block_on(calls::end(&fx.db, "c1", 30, evening + 30)).expect("end");
    let local_midnight = NOV_1 + 20 * DAY + 5 * 3_600;
    assert_eq!(
        counters(&list(&fx, "w", None, None, local_midnight - 1).expect("page")),
        vec![("a", micros("0.02"), 1, 0)]
    );
    assert_eq!(
        counters(&list(&fx, "w", None, None, local_midnight).expect("page")),
        vec![("a", micros("0.02"), 0, 0)]
    );
    // A test clock drives the time: frozen at local midnight, whatever the real time.
    block_on(workspace::set_test_clock(
        &fx.db,
        "w",
        local_midnight,
        evening + 60,
    ))
    .expect("clock");
    assert_eq!(
        counters(&list(&fx, "w", None, None, evening + 60).expect("page")),
        vec![("a", micros("0.02"), 0, 0)]
    );
    fx.assert_invariants();
}

#[test]
fn a_bad_limit_or_cursor_is_a_malformed_query() {
    let fx = Fixture::new();
    fx.workspace("w");
    for limit in [0, -1, 501] {
        let refused = list(&fx, "w", Some(limit), None, NOV_1).expect_err("bad limit");
        assert_eq!(
            (refused.code(), refused.details()["field"].as_str()),
            ("malformed_request", Some("limit")),
            "{limit}"
        );
    }
    assert!(list(&fx, "w", Some(500), None, NOV_1).is_ok());
    assert!(list(&fx, "w", Some(1), None, NOV_1).is_ok());
    let long = "a".repeat(129);
    for cursor in ["", "../b", long.as_str()] {
        let refused = list(&fx, "w", None, Some(cursor), NOV_1).expect_err("bad cursor");
        assert_eq!(
            (refused.code(), refused.details()["field"].as_str()),
            ("malformed_request", Some("cursor")),
            "{cursor}"
        );
    }
    // The same answers for a transactions page, whose limit is 1 to 100.
    let refused = block_on(views::transactions(
        &fx.db,
        "w",
        &views::TransactionFilter {
            limit: Some(0),
            ..Default::default()
        },
    ))
    .expect_err("bad limit");
    assert_eq!(refused.code(), "malformed_request");
}

// ---------------------------------------------------------------------------------------------
// The plan-change preview.

fn preview(
    fx: &Fixture,
    ws: &str,
    plan_id: &str,
    stripe_configured: bool,
    now: i64,
) -> Result<PlanChangePreview, LedgerError> {
    let subscriber = block_on(plan_change::subscriber(&fx.db, ws))?;
    plan_change::preview(&subscriber, &fx.catalog, plan_id, stripe_configured, now)
}

/// `ws` on `plan_id` through Stripe subscription `sub_<ws>` (its first period paid), card pm_1
/// saved, subscribed at `now`.
fn paid(fx: &Fixture, ws: &str, plan_id: &str, now: i64) {
    fx.subscribed(ws, "free", now);
    fx.save_card(ws);
    let subscription_id = format!("sub_{ws}");
    start(
        &fx.db,
        &fx.catalog,
        ws,
        plan_id,
        &subscription_id,
        true,
        now,
    );
}

/// The first paid subscription's ledger steps, as the component runs them around Stripe.
fn start(
    db: &NativeDb,
    catalog: &Catalog,
    ws: &str,
    plan_id: &str,
    subscription_id: &str,
    first_period_paid: bool,
    now: i64,
) -> PlanChange {
    let claim = plans::subscription_claim(now, "n1");
    block_on(plans::claim_subscription(db, ws, &claim, now)).expect("claim");
    block_on(plans::start_subscription(
        db,
        catalog,
        ws,
        plans::StartedSubscription {
            plan_id,
            claim: &claim,
            subscription_id,
            first_period_paid,
        },
        now,
    ))
    .expect("start")
}

/// `POST .../subscription` as the component carries it out (Stripe configured, every Stripe
/// call succeeding, the first invoice paid at once): the ledger's plan, then its ledger steps.
fn carry_out(db: &NativeDb, catalog: &Catalog, ws: &str, plan_id: &str, now: i64) -> PlanChange {
    let subscriber = block_on(plan_change::subscriber(db, ws)).expect("subscriber");
    match plan_change::plan_change(&subscriber, catalog, plan_id, true).expect("plan") {
        PlanChangePlan::Start(_) => start(db, catalog, ws, plan_id, "sub_new", true, now),
        PlanChangePlan::LedgerOnly | PlanChangePlan::Change(_) => {
            block_on(plans::change_plan(db, catalog, ws, plan_id, true, now)).expect("change")
        }
    }
}

/// A copy of the fixture's database, to make a change on without touching the original.
fn copy_of(fx: &Fixture) -> (tempfile::TempDir, NativeDb) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("copy.db");
    block_on(
        fx.db
            .execute(&format!("VACUUM INTO '{}'", path.display()), &[]),
    )
    .expect("copy");
    let db = NativeDb::open(&path).expect("open copy");
    (dir, db)
}

fn kind_of(action: &str) -> ChangeKind {
    match action {
        "subscribed" => ChangeKind::Subscribe,
        "upgraded" => ChangeKind::Upgrade,
        "downgrade_scheduled" => ChangeKind::Downgrade,
        "unchanged" | "pending_change_cancelled" => ChangeKind::Unchanged,
        other => panic!("unknown action {other}"),
    }
}

/// For every plan of the catalog: the preview, then the change itself on a copy of the ledger,
/// agree on what it is, when it takes effect and, to the micro-credit, what it grants (the
/// plan credits move by exactly that); and the preview wrote nothing. Returns what each change
/// was, and whether its credits awaited payment.
fn assert_previews_match_changes(fx: &Fixture, ws: &str, now: i64) -> Vec<(ChangeKind, bool)> {
    let before = dump(&fx.db);
    let mut seen = Vec::new();
    for plan_id in ["free", "basic", "professional"] {
        let shown = preview(fx, ws, plan_id, true, now).expect("preview");
        assert_eq!(dump(&fx.db), before, "the preview of {plan_id} wrote");
        let (_dir, copy) = copy_of(fx);
        let plan_before = block_on(workspace::get(&copy, ws))
            .expect("ws")
            .plan_credits_micros;
        let change = carry_out(&copy, &fx.catalog, ws, plan_id, now);
        let granted = block_on(workspace::get(&copy, ws))
            .expect("ws")
            .plan_credits_micros
            - plan_before;
        let what = format!("{ws} to {plan_id}: {shown:?} then {change:?}");
        assert_eq!(shown.plan_id, plan_id, "{what}");
        assert_eq!(shown.change, kind_of(change.action), "{what}");
        assert_eq!(shown.effective_at, change.effective_at, "{what}");
        assert_eq!(shown.credits_granted, change.credits_granted, "{what}");
        assert_eq!(money::to_decimal(granted), shown.credits_granted, "{what}");
        let price = fx.catalog.plan(plan_id).expect("plan").price_money_micros;
        assert_eq!(shown.price, money::to_decimal(price), "{what}");
        // Credits await payment exactly when the change starts a paid subscription.
        assert_eq!(
            shown.awaiting_payment,
            shown.change == ChangeKind::Subscribe && price > 0,
            "{what}"
        );
        seen.push((shown.change, shown.awaiting_payment));
    }
    seen
}

#[test]
fn every_preview_is_what_the_change_then_does() {
    let fx = Fixture::new();
    let now = NOV_1 + 10 * DAY + 5 * 3_600;
    // No plan yet (with a card, so paid plans can be bought).
    fx.workspace("none");
    fx.save_card("none");
    // Free, spent down a little.
    fx.subscribed("free", "free", NOV_1);
    fx.save_card("free");
    fx.debit("free", "a", "e1", UsageKind::Message, "300", NOV_1)
        .expect("debit");
    // Basic through Stripe, 600 of its 1,000 used.
    paid(&fx, "basic", "basic", NOV_1);
    fx.debit("basic", "a", "e1", UsageKind::Message, "60000", NOV_1)
        .expect("debit");
    // Basic with a downgrade to free pending.
    paid(&fx, "pending", "basic", NOV_1);
    block_on(plans::change_plan(
        &fx.db,
        &fx.catalog,
        "pending",
        "free",
        true,
        NOV_1 + DAY,
    ))
    .expect("downgrade");
    // Professional, on a cycle anchored on the 20th (October 20 to November 20).
    paid(&fx, "pro", "professional", NOV_1 - 12 * DAY);
    // Basic on a test clock frozen later than the real time.
    paid(&fx, "clock", "basic", NOV_1);
    block_on(workspace::set_test_clock(
        &fx.db,
        "clock",
        NOV_1 + 25 * DAY,
        NOV_1,
    ))
    .expect("clock");
    let mut seen = Vec::new();
    for ws in ["none", "free", "basic", "pending", "pro", "clock"] {
        seen.extend(assert_previews_match_changes(&fx, ws, now));
    }
    for kind in [
        (ChangeKind::Subscribe, false),
        (ChangeKind::Subscribe, true),
        (ChangeKind::Upgrade, false),
        (ChangeKind::Downgrade, false),
        (ChangeKind::Unchanged, false),
    ] {
        assert!(seen.contains(&kind), "no {kind:?} among {seen:?}");
    }
    fx.assert_invariants();
}

#[test]
fn the_preview_of_r14s_example_is_what_the_upgrade_grants() {
    let fx = Fixture::new();
    paid(&fx, "w", "basic", NOV_1);
    // The free plan's 10 credits stay (R14's rule for a first paid plan); 600 used: 410 left.
    fx.debit("w", "a", "e1", UsageKind::Message, "60000", NOV_1)
        .expect("600 used");
    assert_eq!(fx.balances("w").0, micros("410"));
    // November 11: 20 of the cycle's 30 days left, 5,000 x 20 / 30 rounded down.
    let now = NOV_1 + 10 * DAY;
    let r14_micros = 5_000 * 1_000_000 * 20 / 30;
    let shown = preview(&fx, "w", "professional", true, now).expect("preview");
    assert_eq!(
        shown,
        PlanChangePreview {
            plan_id: "professional".into(),
            change: ChangeKind::Upgrade,
            effective_at: "2026-11-11T00:00:00Z".into(),
            credits_granted: money::to_decimal(r14_micros),
            price: dec("99"),
            awaiting_payment: false,
        }
    );
    assert_eq!(shown.credits_granted, dec("3333.333333"));
    assert_eq!(
        serde_json::to_value(&shown).expect("json"),
        serde_json::json!({
            "plan_id": "professional", "change": "upgrade",
            "effective_at": "2026-11-11T00:00:00Z", "credits_granted": "3333.333333",
            "price": "99", "awaiting_payment": false
        })
    );
    let change = carry_out(&fx.db, &fx.catalog, "w", "professional", now);
    assert_eq!(
        (change.action, change.credits_granted),
        ("upgraded", shown.credits_granted)
    );
    assert_eq!(fx.balances("w").0, micros("410") + r14_micros);
    fx.assert_invariants();
}

#[test]
fn previews_of_subscribing_downgrading_and_staying() {
    let fx = Fixture::new();
    fx.workspace("w");
    // No plan: subscribing to the free plan grants its 10 credits now.
    assert_eq!(
        preview(&fx, "w", "free", false, NOV_1 + 3_600),
        Ok(PlanChangePreview {
            plan_id: "free".into(),
            change: ChangeKind::Subscribe,
            effective_at: "2026-11-01T01:00:00Z".into(),
            credits_granted: dec("10"),
            price: dec("0"),
            awaiting_payment: false,
        })
    );
    fx.subscribed("w", "free", NOV_1 + 3_600);
    // Basic from the free plan starts a paid subscription: the full 1,000 credits, with the
    // paid first invoice.
    fx.save_card("w");
    assert_eq!(
        preview(&fx, "w", "basic", true, NOV_1 + 2 * DAY),
        Ok(PlanChangePreview {
            plan_id: "basic".into(),
            change: ChangeKind::Subscribe,
            effective_at: "2026-11-03T00:00:00Z".into(),
            credits_granted: dec("1000"),
            price: dec("29"),
            awaiting_payment: true,
        })
    );
    start(
        &fx.db,
        &fx.catalog,
        "w",
        "basic",
        "sub_1",
        true,
        NOV_1 + 2 * DAY,
    );
    // Re-anchored on November 3: the downgrade waits for December 3.
    let down = preview(&fx, "w", "free", true, NOV_1 + 5 * DAY).expect("preview");
    assert_eq!(
        (
            down.change,
            down.effective_at.as_str(),
            down.credits_granted,
            down.price
        ),
        (
            ChangeKind::Downgrade,
            "2026-12-03T00:00:00Z",
            dec("0"),
            dec("0")
        )
    );
    let stay = preview(&fx, "w", "basic", true, NOV_1 + 5 * DAY).expect("preview");
    assert_eq!(
        (
            stay.change,
            stay.effective_at.as_str(),
            stay.credits_granted
        ),
        (ChangeKind::Unchanged, "2026-11-06T00:00:00Z", dec("0"))
    );
    // With the downgrade pending: the plan in force is still "unchanged", an upgrade is still
    // prorated from the plan in force (and drops the pending change).
    block_on(plans::change_plan(
        &fx.db,
        &fx.catalog,
        "w",
        "free",
        true,
        NOV_1 + 5 * DAY,
    ))
    .expect("downgrade");
    let stay = preview(&fx, "w", "basic", true, NOV_1 + 6 * DAY).expect("preview");
    assert_eq!(
        (stay.change, stay.credits_granted),
        (ChangeKind::Unchanged, dec("0"))
    );
    // November 8: 25 of the 30 days to December 3 left.
    let up = preview(&fx, "w", "professional", true, NOV_1 + 7 * DAY).expect("preview");
    assert_eq!(
        (up.change, up.credits_granted, up.awaiting_payment),
        (
            ChangeKind::Upgrade,
            money::to_decimal(5_000 * 1_000_000 * 25 / 30),
            false
        )
    );
    let change = carry_out(&fx.db, &fx.catalog, "w", "professional", NOV_1 + 7 * DAY);
    assert_eq!(
        (
            change.action,
            change.credits_granted,
            change.pending_plan_id
        ),
        ("upgraded", up.credits_granted, None)
    );
    fx.assert_invariants();
}

#[test]
fn credits_awaiting_payment_are_what_the_paid_invoice_grants() {
    let fx = Fixture::new();
    fx.subscribed("w", "free", NOV_1);
    fx.save_card("w");
    let shown = preview(&fx, "w", "professional", true, NOV_1).expect("preview");
    assert_eq!(
        (shown.change, shown.credits_granted, shown.awaiting_payment),
        (ChangeKind::Subscribe, dec("5000"), true)
    );
    // Started with the first invoice not paid yet (R13): nothing now, the preview's credits
    // with the invoice.
    let change = start(
        &fx.db,
        &fx.catalog,
        "w",
        "professional",
        "sub_1",
        false,
        NOV_1,
    );
    assert_eq!(change.credits_granted, dec("0"));
    let granted = block_on(plans::record_invoice_paid(
        &fx.db,
        "w",
        "in_1",
        NOV_1 + 60,
        NOV_1 + 60,
    ))
    .expect("paid");
    assert_eq!(granted, shown.credits_granted);
    fx.assert_invariants();
}

#[test]
fn a_preview_refuses_what_the_change_refuses() {
    let fx = Fixture::new();
    fx.workspace("w");
    assert_eq!(
        preview(&fx, "w", "gold", true, NOV_1),
        Err(LedgerError::NotFound { what: "plan" })
    );
    assert_eq!(
        block_on(plan_change::subscriber(&fx.db, "nobody")).map(|_| ()),
        Err(LedgerError::NotFound { what: "workspace" })
    );
    // A paid plan: Stripe must be configured and a card saved, as for the change.
    assert_eq!(
        preview(&fx, "w", "basic", false, NOV_1),
        Err(LedgerError::payments_not_configured())
    );
    assert_eq!(
        preview(&fx, "w", "basic", true, NOV_1).map_err(|e| e.code()),
        Err("payment_method_required")
    );
    // No upgrade while the last invoice is unpaid; a downgrade still previews.
    paid(&fx, "p", "basic", NOV_1);
    block_on(plans::record_invoice_failed(&fx.db, "p")).expect("failed");
    assert_eq!(
        preview(&fx, "p", "professional", true, NOV_1 + DAY).map_err(|e| e.code()),
        Err("subscription_past_due")
    );
    assert_eq!(
        preview(&fx, "p", "free", true, NOV_1 + DAY).map(|p| p.change),
        Ok(ChangeKind::Downgrade)
    );
    let effective = calendar::rfc3339(NOV_1 + 30 * DAY);
    assert_eq!(
        preview(&fx, "p", "free", true, NOV_1 + DAY).map(|p| p.effective_at),
        Ok(effective)
    );
    fx.assert_invariants();
}

// ---------------------------------------------------------------------------------------------
// The summary is one committed state.

#[test]
fn a_payment_settled_while_the_summary_reads_is_in_neither_figure_or_both() {
    let fx = Fixture::new();
    fx.workspace("w");
    block_on(ledger::payments::create_topup(
        &fx.db,
        &fx.catalog,
        "w",
        "tp_1",
        dec("25"),
        NOV_1,
    ))
    .expect("pending top-up");
    // Another instance settles the top-up after the summary's first read (the workspace's
    // balances) and before its next (the pending top-ups).
    let path = fx.dir.path().join("ledger.db");
    let settled = std::cell::Cell::new(false);
    let watched = common::Watched::new(&fx.db, vec![2], || {
        let path = path.clone();
        std::thread::spawn(move || {
            let other = NativeDb::open(path).expect("open");
            block_on(common::report_success(
                &other,
                "tp_1",
                &ledger::payments::PaidWith::default(),
                NOV_1,
            ))
            .expect("settled elsewhere");
        })
        .join()
        .expect("other thread");
        settled.set(true);
    });
    let summary = block_on(views::summary(&watched, &fx.catalog, "w", NOV_1)).expect("summary");
    assert!(settled.get(), "{:?}", watched.statements());
    // The summary saw the state before the settlement: no credit yet, the top-up pending.
    assert_eq!(summary.wallet_balance, dec("0"));
    let pending: Vec<_> = summary
        .pending_topups
        .iter()
        .map(|p| (p.id.as_str(), p.status))
        .collect();
    assert_eq!(
        pending,
        [("tp_1", ledger::statuses::PaymentStatus::Pending)],
        "{:?}",
        watched.statements()
    );
    // The next summary sees the settlement in both.
    let summary = block_on(views::summary(&fx.db, &fx.catalog, "w", NOV_1)).expect("summary");
    assert_eq!(summary.wallet_balance, dec("25"));
    assert!(summary.pending_topups.is_empty());
    fx.assert_invariants();
}
