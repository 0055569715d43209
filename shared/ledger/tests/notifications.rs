//! Notifications (docs/notifications.md): each event is written with the change it reports,
//! level events fire once per crossing, and the outbox's delivery states move as a sender reports.

mod common;

use common::{DAY, Fixture, NOV_1, dec};
use futures::executor::block_on;
use ledger::agents::OveragePolicy;
use ledger::catalog::UsageKind;
use ledger::notifications::{self, NotificationFilter, Outcome};
use ledger::{Storage, payments};
use serde_json::{Value, json};

/// Every event of `ws`, oldest first, as (type, data).
fn events(fx: &Fixture, ws: &str) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let filter = NotificationFilter {
            workspace_id: Some(ws.into()),
            limit: Some(100),
            cursor,
            ..NotificationFilter::default()
        };
        let page = block_on(notifications::list(&fx.db, &fx.catalog, &filter)).expect("list");
        all.extend(page.data.into_iter().map(|n| (n.kind, n.event.data)));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    all.reverse();
    all
}

fn types(fx: &Fixture, ws: &str) -> Vec<String> {
    events(fx, ws).into_iter().map(|(kind, _)| kind).collect()
}

fn messages(fx: &Fixture, ws: &str, id: &str, count: &str, now: i64) {
    fx.debit(ws, "agent", id, UsageKind::Message, count, now)
        .expect("debit");
}

#[test]
fn a_workspace_burned_down_hears_low_depleted_grace_and_restored_once_each() {
    let fx = Fixture::new();
    fx.subscribed("ws", "free", NOV_1); // 10 plan credits
    fx.topup("ws", "pay_1", "20", NOV_1); // 20 in the wallet: 30 in all
    assert_eq!(types(&fx, "ws"), ["plan.changed", "topup.succeeded"]);

    // 25 credits of messages: 30 -> 5, at the catalog's threshold (5): balance.low.
    messages(&fx, "ws", "m1", "2500", NOV_1 + 60);
    // Further falls below the level are not new crossings.
    messages(&fx, "ws", "m2", "100", NOV_1 + 120);
    messages(&fx, "ws", "m3", "100", NOV_1 + 180);
    let all = events(&fx, "ws");
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(all[2].0, "balance.low");
    assert_eq!(all[2].1["level"], json!("5"));
    assert_eq!(all[2].1["balance"], json!("5"));
    assert_eq!(all[2].1["plan_credits_remaining"], json!("0"));
    assert_eq!(all[2].1["wallet_balance"], json!("5"));

    // The last 3 credits: nothing left, outbound stops, inbound grace starts (900 s).
    messages(&fx, "ws", "m4", "300", NOV_1 + 240);
    let all = events(&fx, "ws");
    assert_eq!(
        all.iter()
            .map(|(kind, _)| kind.as_str())
            .collect::<Vec<_>>(),
        [
            "plan.changed",
            "topup.succeeded",
            "balance.low",
            "balance.depleted",
            "grace.started"
        ]
    );
    assert_eq!(all[4].1["grace_ends_at"], json!("2026-11-01T00:19:00Z"));

    // The grace sweep before the end does nothing; after it, grace.ended at the time it ended.
    assert_eq!(
        block_on(notifications::end_graces(&fx.db, NOV_1 + 1_139, 100)).unwrap(),
        0
    );
    assert_eq!(
        block_on(notifications::end_graces(&fx.db, NOV_1 + 1_140, 100)).unwrap(),
        1
    );
    assert_eq!(
        block_on(notifications::end_graces(&fx.db, NOV_1 + 2_000, 100)).unwrap(),
        0
    );
    let page = block_on(notifications::list(
        &fx.db,
        &fx.catalog,
        &NotificationFilter {
            kind: Some("grace.ended".into()),
            ..NotificationFilter::default()
        },
    ))
    .unwrap();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0].event.timestamp, "2026-11-01T00:19:00Z");
    assert_eq!(page.data[0].event.data["reason"], json!("expired"));

    // A top-up brings the balance back: restored, and no second grace.ended.
    fx.topup("ws", "pay_2", "10", NOV_1 + 3_000);
    let tail: Vec<String> = types(&fx, "ws").into_iter().skip(5).collect();
    assert_eq!(tail, ["grace.ended", "topup.succeeded", "balance.restored"]);

    // Falling through the level again is a new crossing.
    messages(&fx, "ws", "m5", "600", NOV_1 + 3_100);
    assert_eq!(
        types(&fx, "ws").last().map(String::as_str),
        Some("balance.low")
    );
    assert_eq!(types(&fx, "ws").len(), 9);
    fx.assert_invariants();
}

#[test]
fn a_top_up_within_grace_ends_it_as_restored() {
    let fx = Fixture::new();
    fx.subscribed("ws", "free", NOV_1);
    messages(&fx, "ws", "m1", "1000", NOV_1 + 60); // 10 -> 0
    fx.topup("ws", "pay_1", "10", NOV_1 + 120);
    let all = events(&fx, "ws");
    let kinds: Vec<&str> = all.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "plan.changed",
            "balance.low",
            "balance.depleted",
            "grace.started",
            "topup.succeeded",
            "grace.ended",
            "balance.restored"
        ]
    );
    assert_eq!(all[5].1["reason"], json!("balance_restored"));
    // The sweep finds nothing to end any more.
    assert_eq!(
        block_on(notifications::end_graces(&fx.db, NOV_1 + DAY, 100)).unwrap(),
        0
    );
}

#[test]
fn extra_levels_fire_in_order_and_a_batch_crossing_fires_once() {
    let mut fx = Fixture::new();
    let mut doc = fx.catalog.doc.clone();
    doc.settings.low_balance_levels = vec![dec("20"), dec("15")];
    let stored = block_on(ledger::catalog::put(&fx.db, doc, NOV_1)).expect("catalog");
    fx.catalog = ledger::catalog::Catalog::validate(stored.version, stored.doc).unwrap();
    fx.subscribed("ws", "free", NOV_1);
    fx.topup("ws", "pay_1", "20", NOV_1); // 30
    // 30 -> 12 in one debit: crosses 20 and 15 (not 5).
    messages(&fx, "ws", "m1", "1800", NOV_1 + 60);
    let lows: Vec<Value> = events(&fx, "ws")
        .into_iter()
        .filter(|(kind, _)| kind == "balance.low")
        .map(|(_, data)| data["level"].clone())
        .collect();
    assert_eq!(lows, [json!("20"), json!("15")]);
    // A batch of 10 events taking 12 -> 2 crosses 5 once.
    let batch: Vec<_> = (0..10)
        .map(|n| fx.event("ws", "agent", &format!("b{n}"), UsageKind::Message, "100"))
        .collect();
    let answers = block_on(ledger::usage::record_batch(
        &fx.db,
        &fx.catalog,
        &batch,
        NOV_1 + 120,
    ))
    .expect("batch");
    assert!(answers.iter().all(Result::is_ok));
    let lows = types(&fx, "ws")
        .iter()
        .filter(|k| *k == "balance.low")
        .count();
    assert_eq!(lows, 3);
    fx.assert_invariants();
}

#[test]
fn a_workspace_born_below_a_level_hears_it_once_on_its_first_fall() {
    let mut fx = Fixture::new();
    let mut doc = fx.catalog.doc.clone();
    doc.settings.low_balance_levels = vec![dec("20")];
    let stored = block_on(ledger::catalog::put(&fx.db, doc, NOV_1)).expect("catalog");
    fx.catalog = ledger::catalog::Catalog::validate(stored.version, stored.doc).unwrap();
    let lows = |fx: &Fixture| -> Vec<Value> {
        events(fx, "ws")
            .into_iter()
            .filter(|(kind, _)| kind == "balance.low")
            .map(|(_, data)| data["level"].clone())
            .collect()
    };
    // The free plan's 10 credits: below the level 20 from the start, which a rise never sends.
    fx.subscribed("ws", "free", NOV_1);
    assert!(lows(&fx).is_empty());
    // The first fall sends it, once; further falls do not.
    messages(&fx, "ws", "m1", "100", NOV_1 + 60); // 10 -> 9
    assert_eq!(lows(&fx), [json!("20")]);
    messages(&fx, "ws", "m2", "100", NOV_1 + 120); // 8
    assert_eq!(lows(&fx), [json!("20")]);
    // Crossing the threshold (5) is a crossing as before.
    messages(&fx, "ws", "m3", "400", NOV_1 + 180); // 4
    assert_eq!(lows(&fx), [json!("20"), json!("5")]);
    // A top-up to 14 re-arms 5 (the balance is above it), not 20 (it never left it).
    fx.topup("ws", "pay_1", "10", NOV_1 + 240);
    messages(&fx, "ws", "m4", "100", NOV_1 + 300); // 13
    assert_eq!(lows(&fx), [json!("20"), json!("5")]);
    messages(&fx, "ws", "m5", "900", NOV_1 + 360); // 4: crosses 5 again
    assert_eq!(lows(&fx), [json!("20"), json!("5"), json!("5")]);
    // Above both levels, then below both in one fall: each once, highest first.
    fx.topup("ws", "pay_2", "30", NOV_1 + 420); // 34
    messages(&fx, "ws", "m6", "3000", NOV_1 + 480); // 4
    assert_eq!(
        lows(&fx),
        [json!("20"), json!("5"), json!("5"), json!("20"), json!("5")]
    );
    fx.assert_invariants();
}

#[test]
fn an_agent_hears_80_and_100_percent_of_its_limit_once_per_cycle() {
    let fx = Fixture::new();
    fx.subscribed("ws", "basic", NOV_1); // 1,000 plan credits
    fx.spend_limits("ws", "agent", OveragePolicy::UseBalance, Some("10"));
    messages(&fx, "ws", "m1", "700", NOV_1 + 60); // 7
    messages(&fx, "ws", "m2", "100", NOV_1 + 120); // 8: 80%
    messages(&fx, "ws", "m3", "100", NOV_1 + 180); // 9
    messages(&fx, "ws", "m4", "100", NOV_1 + 240); // 10: 100%
    let agent_events: Vec<(String, Value)> = events(&fx, "ws")
        .into_iter()
        .filter(|(kind, _)| kind.starts_with("agent."))
        .collect();
    assert_eq!(agent_events.len(), 2, "{agent_events:#?}");
    assert_eq!(agent_events[0].0, "agent.spend_limit.warning");
    assert_eq!(agent_events[0].1["spent"], json!("8"));
    assert_eq!(agent_events[0].1["percent"], json!(80));
    assert_eq!(agent_events[0].1["agent_id"], json!("agent"));
    assert_eq!(agent_events[1].0, "agent.spend_limit.reached");
    assert_eq!(agent_events[1].1["monthly_spend_limit"], json!("10"));
}

#[test]
fn a_declined_recharge_and_a_renewal_are_told() {
    let fx = Fixture::new();
    fx.subscribed("ws", "free", NOV_1);
    fx.save_card("ws");
    fx.enable_auto_recharge("ws", "50", "100");
    let payment = block_on(payments::claim_auto_recharge(
        &fx.db,
        &fx.catalog,
        "ws",
        NOV_1 + 60,
    ))
    .expect("claim")
    .expect("due: the wallet is under 50");
    block_on(common::report_failure(
        &fx.db,
        &payment.id,
        "card_declined",
        "Your card was declined.",
        true,
        NOV_1 + 61,
    ))
    .expect("settle");
    let all = events(&fx, "ws");
    let failed = all
        .iter()
        .find(|(kind, _)| kind == "auto_recharge.failed")
        .expect("failed");
    assert_eq!(failed.1["reason"], json!("card_declined"));
    assert_eq!(failed.1["amount"], json!("100"));
    assert_eq!(failed.1["currency"], json!("USD"));
    let disabled = all
        .iter()
        .find(|(kind, _)| kind == "auto_recharge.disabled")
        .expect("disabled");
    assert!(
        disabled.1["warning"]
            .as_str()
            .unwrap_or("")
            .contains("card_declined"),
        "{disabled:?}"
    );

    // The free plan renews on Dec 1: 10 credits expire unused, 10 are granted.
    block_on(ledger::plans::renew_due(
        &fx.db,
        &fx.catalog,
        NOV_1 + 30 * DAY + 5,
        10,
    ))
    .expect("renew");
    let renewed = events(&fx, "ws")
        .into_iter()
        .find(|(kind, _)| kind == "plan.renewed")
        .expect("renewed");
    assert_eq!(renewed.1["plan_id"], json!("free"));
    assert_eq!(renewed.1["credits_granted"], json!("10"));
    assert_eq!(renewed.1["credits_expired"], json!("10"));
    assert_eq!(renewed.1["credits_rolled_over"], json!("0"));
    assert_eq!(renewed.1["cycle_start"], json!("2026-12-01T00:00:00Z"));
    assert_eq!(renewed.1["awaiting_payment"], json!(false));
    // The expiry of unused plan credits at renewal is not a fall the platform hears of.
    assert!(!types(&fx, "ws").contains(&"balance.low".to_owned()));
    fx.assert_invariants();
}

#[test]
fn delivery_states_follow_the_outcomes() {
    let fx = Fixture::new();
    fx.subscribed("ws", "free", NOV_1);
    fx.topup("ws", "pay_1", "20", NOV_1);
    // Delivery runs on real time (the triggers stamp events with it); workspace time is NOV_1.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        + 10;
    let due = block_on(notifications::claim_due(&fx.db, &fx.catalog, now, 15, 100)).expect("claim");
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].event.kind, "plan.changed");
    assert_eq!(due[1].event.kind, "topup.succeeded");
    assert!(due.iter().all(|o| o.attempt == 1));
    // Claimed: another sender finds nothing until the lease ends.
    assert!(
        block_on(notifications::claim_due(
            &fx.db,
            &fx.catalog,
            now + 14,
            15,
            100
        ))
        .unwrap()
        .is_empty()
    );
    let report = block_on(notifications::record_outcomes(
        &fx.db,
        &[
            (
                due[0].row_id,
                due[0].attempt,
                Outcome::Delivered { status: 204 },
            ),
            (
                due[1].row_id,
                due[1].attempt,
                Outcome::Failed {
                    status: Some(500),
                    error: "the endpoint answered 500".into(),
                },
            ),
        ],
        now + 1,
    ))
    .expect("record");
    assert_eq!(
        (report.delivered, report.retrying, report.failed),
        (1, 1, 0)
    );
    let failed_id = notifications::event_id(due[1].row_id);
    let listed = |status: &str| {
        block_on(notifications::list(
            &fx.db,
            &fx.catalog,
            &NotificationFilter {
                status: Some(status.into()),
                ..NotificationFilter::default()
            },
        ))
        .unwrap()
        .data
    };
    let delivered = listed("delivered");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].last_response_status, Some(204));
    assert!(delivered[0].delivered_at.is_some() && delivered[0].next_attempt_at.is_none());
    let pending = listed("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, failed_id);
    assert_eq!(pending[0].last_response_status, Some(500));
    assert_eq!(pending[0].attempts, 1);
    // Retried after its delay (5-6 s), with the same id.
    let delay = notifications::retry_delay_secs(1, due[1].row_id);
    assert!(
        block_on(notifications::claim_due(
            &fx.db,
            &fx.catalog,
            now + delay,
            15,
            100
        ))
        .unwrap()
        .is_empty()
    );
    let again = block_on(notifications::claim_due(
        &fx.db,
        &fx.catalog,
        now + 1 + delay,
        15,
        100,
    ))
    .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.id, failed_id);
    assert_eq!(again[0].attempt, 2);
    // Past the 3-day window a failure gives up.
    let late = now + notifications::RETRY_WINDOW_SECS;
    let report = block_on(notifications::record_outcomes(
        &fx.db,
        &[(
            again[0].row_id,
            again[0].attempt,
            Outcome::Failed {
                status: None,
                error: "no answer".into(),
            },
        )],
        late,
    ))
    .unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(listed("failed").len(), 1);
    // The operator sends it again: pending, due now, same id.
    let redelivered = block_on(notifications::redeliver(
        &fx.db,
        &fx.catalog,
        &failed_id,
        late + 5,
    ))
    .unwrap();
    assert_eq!(redelivered.status, "pending");
    assert_eq!(redelivered.event.id, failed_id);
    let due = block_on(notifications::claim_due(
        &fx.db,
        &fx.catalog,
        late + 5,
        15,
        100,
    ))
    .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempt, 3);
    // Unknown ids and bad filters are 404 and 400, writing nothing.
    assert!(matches!(
        block_on(notifications::redeliver(
            &fx.db,
            &fx.catalog,
            "evt_999",
            late
        )),
        Err(ledger::LedgerError::NotFound { .. })
    ));
    for filter in [
        NotificationFilter {
            status: Some("sent".into()),
            ..NotificationFilter::default()
        },
        NotificationFilter {
            kind: Some("balance.lo".into()),
            ..NotificationFilter::default()
        },
        NotificationFilter {
            limit: Some(0),
            ..NotificationFilter::default()
        },
        NotificationFilter {
            cursor: Some("12".into()),
            ..NotificationFilter::default()
        },
    ] {
        assert!(matches!(
            block_on(notifications::list(&fx.db, &fx.catalog, &filter)),
            Err(ledger::LedgerError::Invalid { .. })
        ));
    }
}

#[test]
fn nothing_is_written_for_a_change_that_rolls_back() {
    let fx = Fixture::new();
    fx.subscribed("ws", "free", NOV_1);
    let before = types(&fx, "ws");
    // A debit the balance cannot cover for a `stop` agent is refused: no row, no event.
    fx.spend_limits("ws", "agent", OveragePolicy::Stop, None);
    assert!(
        fx.debit("ws", "agent", "m1", UsageKind::Message, "2000", NOV_1 + 60)
            .is_err()
    );
    assert_eq!(types(&fx, "ws"), before);
    // A transaction rolled back takes its events with it.
    block_on(fx.db.execute("BEGIN IMMEDIATE", &[])).unwrap();
    block_on(fx.db.execute(
        "UPDATE workspaces SET plan_id = 'basic' WHERE id = 'ws'",
        &[],
    ))
    .unwrap();
    block_on(fx.db.execute("ROLLBACK", &[])).unwrap();
    assert_eq!(types(&fx, "ws"), before);
}

#[test]
fn a_short_runway_is_told_once_and_rearmed_when_it_lengthens() {
    let fx = Fixture::new();
    fx.subscribed("ws", "free", NOV_1); // 10 plan credits until Dec 1
    fx.subscribed("calm", "free", NOV_1);
    let check = |at: i64| {
        block_on(notifications::check_runways(&fx.db, &fx.catalog, at, 100)).expect("sweep")
    };
    let runway_events = || -> Vec<Value> {
        events(&fx, "ws")
            .into_iter()
            .filter(|(kind, _)| kind == "runway.low")
            .map(|(_, data)| data)
            .collect()
    };
    // 6 credits on the first day; two days later the 7-day rate is 3 a day: 4 left last ~1.3 days.
    messages(&fx, "ws", "m1", "600", NOV_1 + 3_600);
    assert_eq!(check(NOV_1 + 2 * DAY), 1);
    let told = runway_events();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["days_left"], json!("1.3"));
    assert_eq!(told[0]["threshold_days"], json!(7));
    assert_eq!(told[0]["average_daily_spend_7d"], json!("3"));
    assert_eq!(told[0]["suggested_auto_recharge"]["threshold"], json!("42"));
    assert_eq!(told[0]["suggested_auto_recharge"]["currency"], json!("USD"));
    // Still short: not told again.
    assert_eq!(check(NOV_1 + 2 * DAY + 60), 0);
    // 100 more credits: about 34 days, re-armed without an event; short again after spending.
    fx.topup("ws", "pay_1", "100", NOV_1 + 2 * DAY + 120);
    assert_eq!(check(NOV_1 + 2 * DAY + 180), 0);
    messages(&fx, "ws", "m2", "9500", NOV_1 + 2 * DAY + 240);
    assert_eq!(check(NOV_1 + 2 * DAY + 300), 1);
    assert_eq!(runway_events().len(), 2);
    // The workspace that spends nothing is never told.
    assert!(!types(&fx, "calm").contains(&"runway.low".to_owned()));
    // Re-armed by 5,000 more credits, then spent to nothing before the next sweep: empty,
    // balance.depleted told it, and no runway.low on top.
    fx.topup("ws", "pay_2", "5000", NOV_1 + 2 * DAY + 360);
    assert_eq!(check(NOV_1 + 2 * DAY + 420), 0);
    messages(&fx, "ws", "m3", "500900", NOV_1 + 2 * DAY + 480);
    assert!(fx.state("ws").exhausted_at.is_some());
    assert_eq!(check(NOV_1 + 2 * DAY + 540), 0);
    assert_eq!(runway_events().len(), 2);
    fx.assert_invariants();
}

#[test]
fn a_catalog_can_turn_runway_notices_off() {
    let mut fx = Fixture::new();
    let mut doc = fx.catalog.doc.clone();
    doc.settings.runway_low_days = 0;
    let stored = block_on(ledger::catalog::put(&fx.db, doc, NOV_1)).expect("catalog");
    fx.catalog = ledger::catalog::Catalog::validate(stored.version, stored.doc).unwrap();
    fx.subscribed("ws", "free", NOV_1);
    messages(&fx, "ws", "m1", "600", NOV_1 + 3_600);
    let written = block_on(notifications::check_runways(
        &fx.db,
        &fx.catalog,
        NOV_1 + 2 * DAY,
        100,
    ))
    .unwrap();
    assert_eq!(written, 0);
    let mut doc = fx.catalog.doc.clone();
    doc.settings.runway_low_days = 366;
    assert!(block_on(ledger::catalog::put(&fx.db, doc, NOV_1)).is_err());
}
