//! A call's heartbeat (R5): extends its hold to cover the next increment, or tells it to stop.

use crate::agents;
use crate::catalog::Catalog;
use crate::grants;
use crate::guarded::{self, Attempt, view_row};
use crate::money;
use crate::storage::Storage;
use crate::{LedgerError, Result};

use super::Heartbeat;
use super::expiry::expire_overdue;
use super::read::{CallState, read_call, write_for_call};

view_row! {
    /// A decided heartbeat: a row of the view `call_extend`, whose trigger (schema.rs) sets the
    /// call's hold and expiry and starts the grace period if nothing is left.
    pub(super) struct ExtendRow in "call_extend" {
        call_id: String,
        workspace_id: String,
        held_plan_micros: i64,
        held_wallet_micros: i64,
        reserved_secs: i64,
        expires_at: i64,
        now: i64,
        held_grant_micros: i64,
        held_grants: Option<String>,
    }
}

/// What a heartbeat needs from the catalog.
#[derive(Clone, Copy)]
struct HeartbeatTerms {
    elapsed_secs: i64,
    hold_timeout_secs: i64,
    grace_secs: i64,
}

/// Extends a call's hold to cover the next increment after `elapsed_secs`. If the agent cannot
/// afford it (or the grace period is over), answers `continue: false` with the reason.
///
/// A heartbeat on a workspace without overdue holds is one read and one guarded write; overdue
/// holds to post first, or two lost races, take the transactional path.
pub async fn heartbeat<S: Storage>(
    db: &S,
    catalog: &Catalog,
    call_id: &str,
    elapsed_secs: i64,
    real_now_secs: i64,
) -> Result<Heartbeat> {
    heartbeat_with_attempts(
        db,
        catalog,
        call_id,
        elapsed_secs,
        real_now_secs,
        guarded::ATTEMPTS,
    )
    .await
}

/// [`heartbeat`] with a chosen number of unlocked attempts (tests force the locked path with 0).
#[doc(hidden)]
pub async fn heartbeat_with_attempts<S: Storage>(
    db: &S,
    catalog: &Catalog,
    call_id: &str,
    elapsed_secs: i64,
    real_now_secs: i64,
    unlocked_attempts: u32,
) -> Result<Heartbeat> {
    super::within_a_day("elapsed_seconds", elapsed_secs)?;
    let terms = HeartbeatTerms {
        elapsed_secs,
        hold_timeout_secs: i64::from(catalog.settings().hold_timeout_secs),
        grace_secs: i64::from(catalog.settings().inbound_grace_secs),
    };
    guarded::optimistic(
        db,
        unlocked_attempts,
        async |db| {
            let state = read_call(db, call_id, real_now_secs).await?;
            if state.call.status != "active" {
                return Ok(Attempt::Done(stopped("call_not_active", 0)));
            }
            if state.holds_overdue {
                return Ok(Attempt::NeedsLock);
            }
            let (row, answer) = decide_heartbeat(&state, terms)?;
            Ok(
                if write_for_call(db, row, &state, real_now_secs, true).await? {
                    Attempt::Done(answer)
                } else {
                    Attempt::Raced
                },
            )
        },
        async |db| {
            let state = read_call(db, call_id, real_now_secs).await?;
            if state.call.status != "active" {
                return Ok(stopped("call_not_active", 0));
            }
            // As for an authorization (`authorize.rs`), in this transaction: the heartbeat is
            // then decided on the state the postings left, its own hold's included.
            let state = if state.holds_overdue {
                expire_overdue(db, &state.ws.id, state.now).await?;
                let again = read_call(db, call_id, real_now_secs).await?;
                if again.call.status != "active" {
                    return Ok(stopped("hold_expired", 0));
                }
                again
            } else {
                state
            };
            let (row, answer) = decide_heartbeat(&state, terms)?;
            write_for_call(db, row, &state, real_now_secs, false).await?;
            Ok(answer)
        },
    )
    .await
}

fn stopped(reason: &str, held_micros: i64) -> Heartbeat {
    Heartbeat {
        continue_call: false,
        reason: Some(reason.into()),
        held: money::to_decimal(held_micros),
    }
}

/// Decides a heartbeat on an active call (R5, R6, R7): the hold it keeps and the answer. A
/// refused extension keeps the hold as it is, and the call is told to stop.
fn decide_heartbeat(
    state: &CallState,
    terms: HeartbeatTerms,
) -> crate::Result<(ExtendRow, Heartbeat)> {
    let CallState {
        call,
        ws,
        agent,
        now,
        grants,
        ..
    } = state;
    let needed_secs = call.rate.billed_secs(terms.elapsed_secs) + call.rate.increment_secs;
    let mut held_plan = call.held_plan_micros;
    let mut held_wallet = call.held_wallet_micros;
    let mut held_grants = call.grant_holds()?;
    let mut reason = None;
    if call.grace {
        if ws
            .exhausted_at
            .is_some_and(|since| *now >= since + terms.grace_secs)
        {
            reason = Some(LedgerError::InsufficientFunds.code());
        }
    } else if needed_secs > call.reserved_secs {
        let extra =
            call.rate.charge_for_secs(needed_secs) - call.rate.charge_for_secs(call.reserved_secs);
        match agents::fund(ws, agent, grants, "call", *now, extra) {
            Ok(funding) => {
                held_plan += funding.from_plan_micros;
                held_wallet += funding.from_wallet_micros;
                for draw in funding.from_grants {
                    *held_grants.entry(draw.grant_id).or_default() += draw.micros;
                }
            }
            Err(refused) => reason = Some(refused.code()),
        }
    }
    let reserved_secs = if reason.is_none() {
        needed_secs.max(call.reserved_secs)
    } else {
        call.reserved_secs
    };
    let row = ExtendRow {
        call_id: call.call_id.clone(),
        workspace_id: ws.id.clone(),
        held_plan_micros: held_plan,
        held_wallet_micros: held_wallet,
        reserved_secs,
        expires_at: now + terms.hold_timeout_secs,
        now: *now,
        held_grant_micros: held_grants.values().sum(),
        held_grants: grants::holds_column(&held_grants),
    };
    let answer = Heartbeat {
        continue_call: reason.is_none(),
        reason: reason.map(str::to_owned),
        held: money::to_decimal(held_plan + held_wallet + row.held_grant_micros),
    };
    Ok((row, answer))
}
