//! The billing ledger: money, the rules (R1-R21, `docs/billing-rules.md`), the SQL schema and
//! every ledger operation, and the decisions about what Stripe reports (settlement, plan-change
//! planning, statuses, which payment or workspace a Stripe object is about).
//!
//! The crate knows nothing of HTTP, Spin or Stripe's wire format: callers hand it Stripe's words
//! (codes, statuses) already read. It runs on any [`Storage`] (Spin's SQLite in Wasm, rusqlite
//! natively), and every operation takes the current time as an argument so that test clocks and
//! renewals are deterministic.

pub mod agents;
pub mod audit;
pub mod calendar;
pub mod calls;
pub mod catalog;
pub mod error;
mod fingerprint;
pub mod grants;
mod guarded;
pub mod jobs;
pub mod money;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod notifications;
pub mod payments;
pub mod plan_change;
pub mod plans;
mod post;
pub mod receipts;
pub mod resolve;
mod row;
pub mod runway;
pub mod schema;
pub mod settlement;
pub mod statuses;
pub mod storage;
pub mod tx;
pub mod usage;
pub mod views;
pub mod workspace;

pub use error::{LedgerError, LimitKind, Result};
pub use fingerprint::sha256_hex;
pub use storage::{Row, SqlValue, Storage, StorageError, StorageErrorKind};
