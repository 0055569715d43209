//! What the billing page reads (issue 16), on a real ledger (SQLite on a temp file): the
//! summary's credit price and top-up bounds, the list of agents with their limits and counters,
//! and the plan-change preview, which must be exactly what the change then does.

mod common;

use common::{Fixture, NOV_1, dec};
use futures::executor::block_on;
use ledger::catalog::Catalog;
use ledger::views;

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
