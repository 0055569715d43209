//! Two-phase calls (R5): `authorize` reserves the first increment, `heartbeat` extends the hold,
//! `end` posts the actual charge and releases the rest; a hold not extended in time is posted at
//! its reserved amount. Limits (R6) and the inbound grace period (R7) apply at authorization.
//!
//! One module per operation, each read from the top down: [`authorize`](authorize()) (`authorize.rs`),
//! [`heartbeat`] (`extend.rs`), [`end`] (`end.rs`), the expiry of overdue holds
//! ([`expire_holds`], `expiry.rs`); the call's read and row, which the last three share, are in
//! `read.rs`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::catalog::Direction;

mod authorize;
mod end;
mod expiry;
mod extend;
mod read;

pub use authorize::{authorize, authorize_with_attempts};
pub use end::{end, end_with_attempts};
pub use expiry::{expire_holds, expire_overdue};
pub use extend::{heartbeat, heartbeat_with_attempts};

/// The most overdue holds one expiry sweep posts.
pub const EXPIRY_BATCH_MAX: i64 = 500;

/// `POST /v1/calls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// Workspace.
    pub workspace_id: String,
    /// Agent.
    pub agent_id: String,
    /// Client-chosen, globally unique call id.
    pub call_id: String,
    /// Direction.
    pub direction: Direction,
    /// Callee (E.164); for inbound calls, the workspace's number.
    pub to: String,
    /// Caller.
    pub from: String,
}

/// The answer to an authorization.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallAuthorized {
    /// Call id.
    pub call_id: String,
    /// `authorized` (or, on a replay, the call's current status).
    pub status: String,
    /// Credits reserved.
    pub held: Decimal,
    /// Whether the call runs on the inbound grace period (R7).
    pub grace: bool,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heartbeat {
    /// Whether the call may go on.
    #[serde(rename = "continue")]
    pub continue_call: bool,
    /// Why not, as an error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Credits reserved now.
    pub held: Decimal,
}

/// A posted call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallPosted {
    /// Call id.
    pub call_id: String,
    /// `ended`, or `expired` when the hold timed out.
    pub status: String,
    /// Seconds reported (or reserved, for an expired hold).
    pub duration_seconds: i64,
    /// Seconds billed (per started increment).
    pub billed_seconds: i64,
    /// Credits charged.
    pub charged: Decimal,
    /// Of which plan credits.
    pub from_plan: Decimal,
    /// Of which wallet.
    pub from_wallet: Decimal,
    /// Credits grants paid (docs/grants.md).
    pub from_grants: Decimal,
    /// Cost the agent's policy or limits did not allow (the platform was told to stop).
    pub unbilled: Decimal,
    /// Wallet after.
    pub wallet_balance: Decimal,
    /// Plan credits after.
    pub plan_credits_remaining: Decimal,
}

/// A call's seconds (an end's duration, a heartbeat's elapsed time) are within one day, or the
/// contract's `validation_error` on `field`.
fn within_a_day(field: &'static str, secs: i64) -> crate::Result<()> {
    if (0..=crate::calendar::SECS_PER_DAY).contains(&secs) {
        return Ok(());
    }
    Err(crate::LedgerError::invalid(
        "validation_error",
        field,
        format!("{field} must be 0..{}", crate::calendar::SECS_PER_DAY),
    ))
}

#[cfg(test)]
mod tests {
    use crate::guarded;

    #[test]
    fn every_call_row_writes_every_column_of_its_view() {
        guarded::assert_view_matches::<super::authorize::HoldRow>();
        guarded::assert_view_matches::<super::extend::ExtendRow>();
        guarded::assert_view_matches::<super::end::PostRow>();
    }
}
