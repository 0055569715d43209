//! What the billing page reads (issue 16), on a real ledger (SQLite on a temp file): the
//! summary's credit price and top-up bounds, the list of agents with their limits and counters,
//! and the plan-change preview, which must be exactly what the change then does.

mod common;

use common::{DAY, Fixture, NOV_1, dec, micros};
use futures::executor::block_on;
use ledger::agents::{self, AgentLimits, AgentPage, OveragePolicy};
use ledger::catalog::{Catalog, Direction, UsageKind};
use ledger::{LedgerError, calls, money, plans, views, workspace};

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
