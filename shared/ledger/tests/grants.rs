//! Credit grants (docs/grants.md; docs/billing-rules.md, "Credit grants"): granting once per key,
//! voiding, expiry by entry (by the sweep, and on read before it), and the schema's guards, on a
//! real SQLite file.

mod common;

use std::collections::BTreeMap;

use common::{DAY, Fixture, NOV_1, dec, micros};
use futures::executor::block_on;
use ledger::grants::{self, GrantCategory, GrantInput, GrantScope, GrantStatus};
use ledger::{LedgerError, SqlValue, Storage, catalog::UsageKind};

fn input(ws: &str, amount: &str) -> GrantInput {
    GrantInput {
        workspace_id: ws.to_owned(),
        amount: dec(amount),
        category: GrantCategory::Promotional,
        cost_basis: None,
        priority: None,
        effective_at: None,
        expires_at: None,
        scope: None,
        name: "Welcome bonus".to_owned(),
        metadata: BTreeMap::new(),
    }
}

fn at(secs: i64) -> String {
    ledger::calendar::rfc3339(secs)
}

/// Every entry of `grant_id`: (kind, amount, remaining after, created at).
fn entries(fx: &Fixture, grant_id: &str) -> Vec<(String, i64, i64, i64)> {
    let rows = block_on(fx.db.query(
        "SELECT kind, amount_micros, remaining_after_micros, created_at FROM grant_entries
         WHERE grant_id = ?1 ORDER BY id",
        &[SqlValue::Text(grant_id.to_owned())],
    ))
    .expect("entries");
    rows.iter()
        .map(|row| match row.as_slice() {
            [
                SqlValue::Text(kind),
                SqlValue::Integer(amount),
                SqlValue::Integer(after),
                SqlValue::Integer(created),
            ] => (kind.clone(), *amount, *after, *created),
            other => panic!("unexpected entry row {other:?}"),
        })
        .collect()
}

fn count(fx: &Fixture, sql: &str) -> i64 {
    let rows = block_on(fx.db.query(sql, &[])).expect("count");
    match rows.first().and_then(|row| row.first()) {
        Some(SqlValue::Integer(n)) => *n,
        other => panic!("not a count: {other:?}"),
    }
}

fn live_grants(fx: &Fixture, ws: &str) -> i64 {
    count(
        fx,
        &format!("SELECT live_grants FROM workspaces WHERE id = '{ws}'"),
    )
}

#[test]
fn a_grant_is_made_once_per_key_and_a_retry_answers_it() {
    let fx = Fixture::new();
    fx.workspace("w");
    let mut bonus = input("w", "25.5");
    bonus.priority = Some(10);
    bonus.expires_at = Some(at(NOV_1 + 30 * DAY));
    bonus.scope = Some(GrantScope {
        kinds: Some(vec![UsageKind::Call, UsageKind::AiTask, UsageKind::Call]),
        agent_id: None,
    });
    bonus.metadata.insert("campaign".into(), "launch".into());

    let (grant, created) = block_on(grants::create(&fx.db, "key-1", &bonus, NOV_1)).expect("grant");
    assert!(created);
    assert!(
        grant.id.starts_with("gr_") && grant.id.len() == 35,
        "{}",
        grant.id
    );
    assert_eq!(grant.amount, dec("25.5"));
    assert_eq!(grant.remaining, dec("25.5"));
    assert_eq!(grant.held, dec("0"));
    assert_eq!(grant.status, GrantStatus::Active);
    assert_eq!(grant.priority, 10);
    assert_eq!(grant.effective_at, at(NOV_1));
    assert_eq!(grant.expires_at, Some(at(NOV_1 + 30 * DAY)));
    // The scope is stored sorted and without repeats.
    assert_eq!(
        grant.scope.as_ref().and_then(|s| s.kinds.clone()),
        Some(vec![UsageKind::AiTask, UsageKind::Call])
    );
    assert_eq!(grant.metadata["campaign"], "launch");
    assert_eq!(
        entries(&fx, &grant.id),
        [("granted".into(), micros("25.5"), micros("25.5"), NOV_1)]
    );
    assert_eq!(live_grants(&fx, "w"), 1);

    // The same key, later, with the same terms: the same grant, nothing new.
    let (again, created) =
        block_on(grants::create(&fx.db, "key-1", &bonus, NOV_1 + 60)).expect("retry");
    assert!(!created);
    assert_eq!(again.id, grant.id);
    assert_eq!(entries(&fx, &grant.id).len(), 1);
    // Even after it expired: the retry answers the grant (expired), not a refusal of its terms.
    let (late, created) =
        block_on(grants::create(&fx.db, "key-1", &bonus, NOV_1 + 31 * DAY)).expect("late retry");
    assert!(!created);
    assert_eq!(late.status, GrantStatus::Expired);

    // The same key with other terms is a conflict, and writes nothing.
    let mut other = bonus.clone();
    other.amount = dec("30");
    assert_eq!(
        block_on(grants::create(&fx.db, "key-1", &other, NOV_1 + 60)),
        Err(LedgerError::IdempotencyConflict)
    );
    // Another key is another grant.
    let (second, created) =
        block_on(grants::create(&fx.db, "key-2", &other, NOV_1 + 60)).expect("second");
    assert!(created);
    assert_ne!(second.id, grant.id);
    // The same key in another workspace is another grant too.
    fx.workspace("v");
    let (elsewhere, _) =
        block_on(grants::create(&fx.db, "key-1", &input("v", "1"), NOV_1)).expect("elsewhere");
    assert_ne!(elsewhere.id, grant.id);

    let page = block_on(grants::list(&fx.db, "w", None, None, NOV_1 + 60)).expect("list");
    let ids: Vec<&str> = page.grants.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, [grant.id.as_str(), second.id.as_str()]);
    assert_eq!(page.next_cursor, None);
    assert_eq!(count(&fx, "SELECT COUNT(*) FROM grants"), 3);
    assert_eq!(live_grants(&fx, "w"), 2);
    fx.assert_invariants();
}

#[test]
fn a_paid_grant_keeps_its_cost_basis() {
    let fx = Fixture::new();
    fx.workspace("w");
    let mut contract = input("w", "1000");
    contract.category = GrantCategory::Paid;
    contract.cost_basis = Some(dec("800"));
    contract.name = "Annual contract".into();
    let (grant, _) = block_on(grants::create(&fx.db, "c", &contract, NOV_1)).expect("grant");
    assert_eq!(grant.category, GrantCategory::Paid);
    assert_eq!(grant.cost_basis, Some(dec("800")));
    assert_eq!(
        count(&fx, "SELECT cost_basis_micros FROM grants"),
        micros("800")
    );
}

/// A change that makes a good grant bad.
type Change = Box<dyn Fn(&mut GrantInput)>;

#[test]
fn bad_grants_are_refused_by_field_and_write_nothing() {
    let fx = Fixture::new();
    fx.workspace("w");
    let cases: Vec<(&str, Change)> = vec![
        ("amount", Box::new(|g| g.amount = dec("0"))),
        ("amount", Box::new(|g| g.amount = dec("-1"))),
        ("amount", Box::new(|g| g.amount = dec("0.0000001"))),
        ("cost_basis", Box::new(|g| g.category = GrantCategory::Paid)),
        ("cost_basis", Box::new(|g| g.cost_basis = Some(dec("5")))),
        ("priority", Box::new(|g| g.priority = Some(101))),
        ("priority", Box::new(|g| g.priority = Some(-1))),
        (
            "effective_at",
            Box::new(|g| g.effective_at = Some("soon".into())),
        ),
        ("expires_at", Box::new(|g| g.expires_at = Some(at(NOV_1)))),
        (
            "expires_at",
            Box::new(|g| g.expires_at = Some(at(NOV_1 - 1))),
        ),
        (
            "expires_at",
            Box::new(|g| {
                g.effective_at = Some(at(NOV_1 + 10 * DAY));
                g.expires_at = Some(at(NOV_1 + 5 * DAY));
            }),
        ),
        (
            "scope.kinds",
            Box::new(|g| {
                g.scope = Some(GrantScope {
                    kinds: Some(vec![]),
                    agent_id: None,
                })
            }),
        ),
        (
            "scope.agent_id",
            Box::new(|g| {
                g.scope = Some(GrantScope {
                    kinds: None,
                    agent_id: Some("no spaces".into()),
                })
            }),
        ),
        ("name", Box::new(|g| g.name = "  ".into())),
        ("name", Box::new(|g| g.name = "x".repeat(201))),
        (
            "metadata",
            Box::new(|g| {
                g.metadata = (0..21).map(|n| (format!("k{n}"), "v".into())).collect();
            }),
        ),
        (
            "metadata",
            Box::new(|g| {
                g.metadata.insert("k".repeat(41), "v".into());
            }),
        ),
        (
            "workspace_id",
            Box::new(|g| g.workspace_id = "bad id".into()),
        ),
    ];
    for (field, change) in cases {
        let mut bad = input("w", "10");
        change(&mut bad);
        match block_on(grants::create(&fx.db, "k", &bad, NOV_1)) {
            Err(LedgerError::Invalid { field: Some(f), .. }) => {
                assert_eq!(f, field, "{bad:?}");
            }
            other => panic!("{field}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(
        block_on(grants::create(&fx.db, "", &input("w", "1"), NOV_1)).map(|_| ()),
        Err(LedgerError::invalid(
            "validation_error",
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 bytes"
        ))
    );
    assert_eq!(
        block_on(grants::create(&fx.db, "k", &input("nobody", "1"), NOV_1)).map(|_| ()),
        Err(LedgerError::NotFound { what: "workspace" })
    );
    assert_eq!(count(&fx, "SELECT COUNT(*) FROM grants"), 0);
    assert_eq!(count(&fx, "SELECT COUNT(*) FROM grant_entries"), 0);
    assert_eq!(live_grants(&fx, "w"), 0);
}

/// Grant 10 expiring at NOV_1 + 1 day: the second before, all 10 show; at the expiry a read shows
/// 0 before any sweep; the sweep posts one entry of -10, and a second sweep nothing.
#[test]
fn expiry_posts_an_entry_and_reads_apply_it_before_the_sweep() {
    let fx = Fixture::new();
    fx.workspace("w");
    let expires_at = NOV_1 + DAY;
    let mut bonus = input("w", "10");
    bonus.expires_at = Some(at(expires_at));
    let (grant, _) = block_on(grants::create(&fx.db, "k", &bonus, NOV_1)).expect("grant");

    let before = block_on(grants::get(&fx.db, &grant.id, expires_at - 1)).expect("get");
    assert_eq!(
        (before.remaining, before.status),
        (dec("10"), GrantStatus::Active)
    );
    assert_eq!(
        block_on(grants::expire_due(&fx.db, expires_at - 1)),
        Ok(0),
        "nothing is due a second early"
    );

    let read = block_on(grants::get(&fx.db, &grant.id, expires_at)).expect("get");
    assert_eq!(
        (read.remaining, read.status),
        (dec("0"), GrantStatus::Expired)
    );
    assert_eq!(entries(&fx, &grant.id).len(), 1, "a read writes nothing");

    assert_eq!(block_on(grants::expire_due(&fx.db, expires_at + 5)), Ok(1));
    assert_eq!(
        entries(&fx, &grant.id),
        [
            ("granted".into(), micros("10"), micros("10"), NOV_1),
            ("expired".into(), -micros("10"), 0, expires_at + 5),
        ]
    );
    assert_eq!(block_on(grants::expire_due(&fx.db, expires_at + 60)), Ok(0));
    assert_eq!(live_grants(&fx, "w"), 0);
    // Voiding an expired grant marks it and moves nothing: what left, left by expiring.
    let voided = block_on(grants::void(&fx.db, &grant.id, expires_at + 90)).expect("void");
    assert_eq!(voided.status, GrantStatus::Voided);
    assert_eq!(entries(&fx, &grant.id).len(), 2);
    fx.assert_invariants();
}

#[test]
fn voiding_takes_the_rest_once_and_a_second_void_changes_nothing() {
    let fx = Fixture::new();
    fx.workspace("w");
    let (grant, _) =
        block_on(grants::create(&fx.db, "k", &input("w", "7.25"), NOV_1)).expect("grant");
    let voided = block_on(grants::void(&fx.db, &grant.id, NOV_1 + 100)).expect("void");
    assert_eq!(voided.status, GrantStatus::Voided);
    assert_eq!(voided.remaining, dec("0"));
    assert_eq!(voided.voided_at, Some(at(NOV_1 + 100)));
    let again = block_on(grants::void(&fx.db, &grant.id, NOV_1 + 200)).expect("void again");
    assert_eq!(again, voided);
    assert_eq!(
        entries(&fx, &grant.id),
        [
            ("granted".into(), micros("7.25"), micros("7.25"), NOV_1),
            ("voided".into(), -micros("7.25"), 0, NOV_1 + 100),
        ]
    );
    assert_eq!(
        block_on(grants::void(&fx.db, "gr_nope", NOV_1)),
        Err(LedgerError::NotFound { what: "grant" })
    );
    assert_eq!(live_grants(&fx, "w"), 0);
    fx.assert_invariants();
}

#[test]
fn a_future_grant_is_scheduled_until_it_starts() {
    let fx = Fixture::new();
    fx.workspace("w");
    let mut later = input("w", "5");
    later.effective_at = Some(at(NOV_1 + 3 * DAY));
    later.expires_at = Some(at(NOV_1 + 10 * DAY));
    let (grant, _) = block_on(grants::create(&fx.db, "k", &later, NOV_1)).expect("grant");
    assert_eq!(grant.status, GrantStatus::Scheduled);
    assert_eq!(grant.remaining, dec("5"));
    let started = block_on(grants::get(&fx.db, &grant.id, NOV_1 + 3 * DAY)).expect("get");
    assert_eq!(started.status, GrantStatus::Active);
}

/// A workspace on a test clock expires its grants on its clock: the sweep at real time NOV_1
/// expires the grant of the workspace whose clock is 2 days ahead, not the other's.
#[test]
fn the_sweep_expires_each_grant_on_its_workspace_clock() {
    let fx = Fixture::new();
    fx.workspace("clocked");
    fx.workspace("real");
    let mut bonus = input("clocked", "3");
    bonus.expires_at = Some(at(NOV_1 + DAY));
    let (clocked, _) = block_on(grants::create(&fx.db, "k", &bonus, NOV_1)).expect("grant");
    bonus.workspace_id = "real".into();
    let (real, _) = block_on(grants::create(&fx.db, "k", &bonus, NOV_1)).expect("grant");
    block_on(ledger::workspace::set_test_clock(
        &fx.db,
        "clocked",
        NOV_1 + 2 * DAY,
        NOV_1,
    ))
    .expect("clock");

    assert_eq!(block_on(grants::expire_due(&fx.db, NOV_1 + 60)), Ok(1));
    assert_eq!(
        entries(&fx, &clocked.id).last(),
        Some(&("expired".into(), -micros("3"), 0, NOV_1 + 2 * DAY))
    );
    assert_eq!(entries(&fx, &real.id).len(), 1);
    fx.assert_invariants();
}

/// The sweep is bounded: a pass expires at most `EXPIRY_SWEEP_MAX` grants, soonest first, and the
/// next goes on.
#[test]
fn the_sweep_is_bounded_and_the_next_pass_goes_on() {
    let fx = Fixture::new();
    fx.workspace("w");
    let total = grants::EXPIRY_SWEEP_MAX + 3;
    for n in 0..total {
        let mut bonus = input("w", "1");
        bonus.expires_at = Some(at(NOV_1 + 100 + n));
        block_on(grants::create(&fx.db, &format!("k{n}"), &bonus, NOV_1)).expect("grant");
    }
    let later = NOV_1 + DAY;
    assert_eq!(
        block_on(grants::expire_due(&fx.db, later)),
        Ok(grants::EXPIRY_SWEEP_MAX as usize)
    );
    assert_eq!(block_on(grants::expire_due(&fx.db, later)), Ok(3));
    assert_eq!(block_on(grants::expire_due(&fx.db, later)), Ok(0));
    assert_eq!(live_grants(&fx, "w"), 0);
    fx.assert_invariants();
}

#[test]
fn the_schema_moves_a_grant_only_through_its_entries() {
    let fx = Fixture::new();
    fx.workspace("w");
    fx.workspace("v");
    let (grant, _) =
        block_on(grants::create(&fx.db, "k", &input("w", "10"), NOV_1)).expect("grant");
    let refused = |sql: &str, expected: &str| {
        let error = block_on(fx.db.execute(sql, &[])).expect_err(sql);
        assert!(error.to_string().contains(expected), "{sql}: {error}");
    };
    let id = &grant.id;
    refused(
        &format!("UPDATE grants SET remaining_micros = 1 WHERE id = '{id}'"),
        "moves only through its entries",
    );
    refused(
        &format!("UPDATE grants SET amount_micros = 99000000 WHERE id = '{id}'"),
        "terms of a grant never change",
    );
    refused(
        &format!("DELETE FROM grants WHERE id = '{id}'"),
        "never deleted",
    );
    refused(
        &format!(
            "INSERT INTO grant_entries (grant_id, workspace_id, kind, amount_micros,
                                        remaining_after_micros, created_at)
             VALUES ('{id}', 'w', 'voided', -1000000, 1, 0)"
        ),
        "remaining after does not match",
    );
    refused(
        &format!(
            "INSERT INTO grant_entries (grant_id, workspace_id, kind, amount_micros,
                                        remaining_after_micros, created_at)
             VALUES ('{id}', 'v', 'voided', -1000000, 9000000, 0)"
        ),
        "of another workspace",
    );
    refused(
        &format!(
            "INSERT INTO grant_entries (grant_id, workspace_id, kind, amount_micros,
                                        remaining_after_micros, created_at)
             VALUES ('{id}', 'w', 'voided', -11000000, -1000000, 0)"
        ),
        "CHECK constraint failed",
    );
    refused("UPDATE grant_entries SET amount_micros = 1", "append-only");
    refused("DELETE FROM grant_entries", "append-only");
    assert_eq!(
        block_on(grants::get(&fx.db, id, NOV_1)).map(|g| g.remaining),
        Ok(dec("10"))
    );
    fx.assert_invariants();
}

#[test]
fn the_list_pages_oldest_first() {
    let fx = Fixture::new();
    fx.workspace("w");
    let mut ids = Vec::new();
    for n in 0..5 {
        let (grant, _) = block_on(grants::create(
            &fx.db,
            &format!("k{n}"),
            &input("w", "1"),
            NOV_1 + n,
        ))
        .expect("grant");
        ids.push(grant.id);
    }
    let first = block_on(grants::list(&fx.db, "w", Some(2), None, NOV_1 + 9)).expect("page 1");
    assert_eq!(first.grants.len(), 2);
    let second = block_on(grants::list(
        &fx.db,
        "w",
        Some(2),
        first.next_cursor.as_deref(),
        NOV_1 + 9,
    ))
    .expect("page 2");
    let third = block_on(grants::list(
        &fx.db,
        "w",
        Some(2),
        second.next_cursor.as_deref(),
        NOV_1 + 9,
    ))
    .expect("page 3");
    assert_eq!(third.next_cursor, None);
    let listed: Vec<String> = [first, second, third]
        .into_iter()
        .flat_map(|page| page.grants)
        .map(|g| g.id)
        .collect();
    assert_eq!(listed, ids);
    assert!(matches!(
        block_on(grants::list(
            &fx.db,
            "w",
            Some(2),
            Some("gr_unknown"),
            NOV_1
        )),
        Err(LedgerError::Invalid {
            field: Some("cursor"),
            ..
        })
    ));
}
