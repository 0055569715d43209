//! What `PUT /v1/catalog` and `PUT /v1/workspaces/{ws}` take (issue 14's friction): omitted
//! settings take their documented defaults, and currencies are taken in any case and stored
//! upper case. On a real SQLite file.

mod common;

use common::{Fixture, NOV_1};
use futures::executor::block_on;
use ledger::LedgerError;
use ledger::catalog::{self, CatalogDoc};
use ledger::workspace::{self, WorkspaceInput};

const MINIMAL: &str = r#"{
    "settings": {"currency": "usd", "topup_min": "10", "topup_max": "5000",
                 "hold_timeout_secs": 120, "low_balance_threshold": "5"},
    "plans": [{"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}],
    "rates": [{"kind": "message", "price": "0.01"}]
}"#;

#[test]
fn a_catalog_without_defaulted_settings_is_stored_with_them() {
    let fx = Fixture::new();
    let doc: CatalogDoc = serde_json::from_str(MINIMAL).expect("parses");
    let stored = block_on(catalog::put(&fx.db, doc, NOV_1)).expect("stored");
    assert_eq!(stored.version, 1);
    let loaded = block_on(catalog::load(&fx.db)).expect("loaded");
    let settings = loaded.settings();
    assert_eq!(
        (
            settings.currency.as_str(),
            settings.credit_price,
            settings.inbound_grace_secs,
            settings.auto_recharge_max_per_day,
        ),
        ("USD", 1.into(), 900, 5)
    );
    assert_eq!(stored.doc, loaded.doc, "answered as stored");
    // A message at 0.01 credits is priced at 10,000 micro-credits: credit price 1 applied.
    assert_eq!(
        loaded.unit_rate_micros(catalog::UsageKind::Message, None),
        Ok(10_000)
    );
}

#[test]
fn workspaces_take_the_currency_in_any_case() {
    let mut fx = Fixture::new();
    let doc: CatalogDoc = serde_json::from_str(MINIMAL).expect("parses");
    block_on(catalog::put(&fx.db, doc, NOV_1)).expect("stored");
    fx.catalog = block_on(catalog::load(&fx.db)).expect("loaded");
    let upsert = |id: &str, currency: &str| {
        let input = WorkspaceInput {
            name: "Acme".into(),
            email: "billing@acme.example".into(),
            // As the `service-api` component hands it over.
            currency: Some(catalog::currency_code(currency)),
            timezone: None,
        };
        block_on(workspace::upsert(&fx.db, &fx.catalog, id, &input, NOV_1))
    };
    assert_eq!(upsert("w1", "usd").expect("usd").currency, "USD");
    assert_eq!(upsert("w2", "Usd").expect("Usd").currency, "USD");
    assert_eq!(fx.state("w1").currency, "USD");
    let refused = upsert("w3", "eur").unwrap_err();
    assert!(
        matches!(
            refused,
            LedgerError::Invalid {
                code: "unsupported_currency",
                ..
            }
        ),
        "{refused:?}"
    );
}
