//! Glue between Spin and the ledger, shared by every component.
//!
//! Public surface:
//! - [`SpinDb`], [`with_ledger`], [`run_ledger`]: the ledger's [`ledger::Storage`] over
//!   `spin:sqlite` (a file or a libSQL server), one cached connection per instance
//!   behind an instance-wide async lock;
//! - [`Job`], [`run_on_demand`], [`Cron`]: the one skeleton of a scheduled job, its HTTP twin
//!   and its cron handler (which claims the tick, so one replica runs it);
//! - [`Reply`], [`ApiError`], [`read_body`], [`parse_json`], [`parse_query`], [`path_segments`]:
//!   the HTTP contract (JSON bodies that always carry `Content-Length`, the error body, one
//!   `LedgerError` mapping);
//! - [`Claims`], [`authenticate_user`], [`for_service`], [`verify_jwt`]: the contract's
//!   authentication (docs/billing-rules.md), `for_service` the one guard of every service route;
//! - [`idempotent`]: `Idempotency-Key` replay over the key-value store;
//! - [`variable`], [`flag`], [`now_secs`]: configuration and the wall clock;
//! - [`catalog`]: the current catalog, cached per instance by version;
//! - [`stripe_client`], [`classify`], [`intent_report`], [`card_error_report`], [`stripe_failure`]:
//!   the one Stripe client constructor, Stripe's answers as the ledger's settlement reads them,
//!   and Stripe's failures in the HTTP contract;
//! - [`ledger_status`], [`payment_failed`]: the HTTP status of every ledger error and failed
//!   payment, decided here and nowhere else;
//! - [`webhooks`]: outgoing webhooks, signed as Standard Webhooks says.
//!
//! Instances are reused across requests (docs/billing-rules.md, "The runtime"): the only globals
//! here are per-instance caches (the SQLite connection, the catalog); nothing per-request lives
//! in a global.

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]

/// Writes one line to the component's stderr, ignoring a failed write. On Spin, a component's
/// stdio goes to files under its state directory (`logs/`), on the same disk as its SQLite files
/// by default: when that disk is full, `eprintln!` panics ("failed printing to stderr"), which
/// traps the instance and turns a clean 503 into a 500 (found by `reliability_disk.rs` on real
/// Spin). A log line is never worth a request.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

mod auth;
mod catalog;
mod config;
mod db;
mod error;
mod http;
mod idempotency;
mod jobs;
mod stripe;
mod turnstile;
pub mod webhooks;

pub use auth::{
    Claims, Role, authenticate_user, bearer_token, for_service, require_billing_manager,
    require_workspace, verify_jwt, verify_service_key,
};
pub use catalog::{catalog, with_catalog};
pub use config::{flag, now_secs, variable};
pub use db::{SpinDb, run_ledger, with_ledger};
pub use error::{ApiError, ledger_status, payment_failed};
pub use http::{
    BODY_LIMIT_BYTES, Reply, method_not_allowed, not_found, parse_json, parse_query, path_segments,
    read_body, read_json,
};
pub use idempotency::{IDEMPOTENCY_HEADER, IdempotencyScope, idempotency_key, idempotent};
pub use jobs::{Cron, Job, run_on_demand};
pub use ledger::sha256_hex;
pub use stripe::{
    ADVICE_REFUSED, StripeFailure, card_error_report, card_paid_with, classify, intent_report,
    make_saved_card_default, paid_with, payment_error_report, payment_method, stripe_client,
    stripe_failure,
};
