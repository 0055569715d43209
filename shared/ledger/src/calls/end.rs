//! A call's end (R5): posts its charge and releases the hold; the posting of an expired hold is
//! the same decision at the reserved duration (`expiry.rs`).

use crate::agents::{AgentState, Funding, OveragePolicy};
use crate::guarded::{self, Attempt, view_row};
use crate::money;
use crate::row::{i, int};
use crate::storage::Storage;
use crate::workspace::WorkspaceState;
use crate::{LedgerError, Result};

use super::CallPosted;
use super::read::{CallRow, CallState, read_call, write_for_call};

/// Ends a call: posts its charge for `duration_secs` and releases the hold. Replaying the same
/// end returns the posted charge; an end with another duration is a conflict.
///
/// Ending an active call is one read and one guarded write; two lost races take the
/// transactional path.
pub async fn end<S: Storage>(
    db: &S,
    call_id: &str,
    duration_secs: i64,
    real_now_secs: i64,
) -> Result<CallPosted> {
    end_with_attempts(db, call_id, duration_secs, real_now_secs, guarded::ATTEMPTS).await
}

/// [`end`] with a chosen number of unlocked attempts (tests force the locked path with 0).
#[doc(hidden)]
pub async fn end_with_attempts<S: Storage>(
    db: &S,
    call_id: &str,
    duration_secs: i64,
    real_now_secs: i64,
    unlocked_attempts: u32,
) -> Result<CallPosted> {
    super::within_a_day("duration_seconds", duration_secs)?;
    let attempt = async |db: &S, guard: bool| -> Result<Attempt<CallPosted>> {
        let state = read_call(db, call_id, real_now_secs).await?;
        if state.call.status != "active" {
            // A posted call never changes again: its answer needs no lock.
            if state.call.status == "ended" && state.call.duration_secs != Some(duration_secs) {
                return Err(LedgerError::Conflict {
                    code: "call_already_ended",
                    message: "This call already ended with another duration.".into(),
                });
            }
            return posted_view(db, &state.call).await.map(Attempt::Done);
        }
        let (row, answer) = decide_post(&state, duration_secs, "ended");
        Ok(
            if write_for_call(db, row, &state, real_now_secs, guard).await? {
                Attempt::Done(answer)
            } else {
                Attempt::Raced
            },
        )
    };
    guarded::optimistic(
        db,
        unlocked_attempts,
        async |db| attempt(db, true).await,
        async |db| match attempt(db, false).await? {
            Attempt::Done(answer) => Ok(answer),
            Attempt::Raced | Attempt::NeedsLock => {
                Err(guarded::storage("an unguarded call posting wrote nothing"))
            }
        },
    )
    .await
}

view_row! {
    /// A decided posting of a call: a row of the view `call_post`, whose trigger (schema.rs)
    /// posts the history row (the journal triggers move the balances), releases the call's hold,
    /// adds the charge to the agent's cycle spend and starts the grace period if nothing is left.
    pub(super) struct PostRow in "call_post" (transaction_id) {
        call_id: String,
        workspace_id: String,
        agent_id: String,
        transaction_id: Option<i64>,
        status: &'static str,
        quantity_micros: i64,
        rate_micros: i64,
        plan_delta_micros: i64,
        wallet_delta_micros: i64,
        plan_after_micros: i64,
        wallet_after_micros: i64,
        description: &'static str,
        duration_secs: i64,
        charged_micros: i64,
        unbilled_micros: i64,
        now: i64,
        spend_cycle_start_at: i64,
        call_day: String,
    }
}

/// Decides the posting of an active call at `duration_secs` (R5): the charge is capped at what
/// the hold plus the agent's policy and limits allow; the rest is recorded as unbilled. A grace
/// call may take the wallet negative.
pub(super) fn decide_post(
    state: &CallState,
    duration_secs: i64,
    status: &'static str,
) -> (PostRow, CallPosted) {
    let CallState {
        call,
        ws,
        agent,
        now,
        ..
    } = state;
    let billed_secs = call.rate.billed_secs(duration_secs);
    let cost = call.rate.charge_for_secs(billed_secs);
    let funding = funding_for_posting(ws, agent, call, cost);
    let unbilled = cost - funding.total();
    let plan_after_micros = ws.plan_credits_micros - funding.from_plan_micros;
    let wallet_after_micros = ws.wallet_micros - funding.from_wallet_micros;
    let row = PostRow {
        call_id: call.call_id.clone(),
        workspace_id: ws.id.clone(),
        agent_id: call.agent_id.clone(),
        transaction_id: None,
        status,
        quantity_micros: billed_secs * money::MICROS_PER_UNIT,
        rate_micros: call.rate.per_minute_micros,
        plan_delta_micros: -funding.from_plan_micros,
        wallet_delta_micros: -funding.from_wallet_micros,
        plan_after_micros,
        wallet_after_micros,
        description: if call.direction == "inbound" {
            "inbound call"
        } else {
            "outbound call"
        },
        duration_secs,
        charged_micros: funding.total(),
        unbilled_micros: unbilled,
        now: *now,
        spend_cycle_start_at: ws.cycle_start_at.unwrap_or(0),
        call_day: agent.today.clone(),
    };
    let posted = CallPosted {
        call_id: call.call_id.clone(),
        status: status.into(),
        duration_seconds: duration_secs,
        billed_seconds: billed_secs,
        charged: money::to_decimal(funding.total()),
        from_plan: money::to_decimal(funding.from_plan_micros),
        from_wallet: money::to_decimal(funding.from_wallet_micros),
        unbilled: money::to_decimal(unbilled),
        wallet_balance: money::to_decimal(wallet_after_micros),
        plan_credits_remaining: money::to_decimal(plan_after_micros),
    };
    (row, posted)
}

fn funding_for_posting(
    ws: &WorkspaceState,
    agent: &AgentState,
    call: &CallRow,
    cost: i64,
) -> Funding {
    // What this call may use: its own hold plus what nobody else has reserved.
    let plan_room = (ws.plan_credits_micros - (ws.held_plan_micros - call.held_plan_micros)).max(0);
    let wallet_room = if call.grace {
        i64::MAX / 4
    } else if agent.policy == OveragePolicy::UseBalance {
        // A granted hold is a commitment: even if a refund emptied the wallet since, the call
        // may take what it holds (the wallet may then go negative, as refunds allow).
        (ws.wallet_micros - (ws.held_wallet_micros - call.held_wallet_micros))
            .max(call.held_wallet_micros)
    } else {
        call.held_wallet_micros
    };
    let limit_room = agent
        .monthly_spend_limit_micros
        .map_or(i64::MAX / 4, |limit| {
            (limit - agent.cycle_spend_micros - (agent.active_held_micros - call.held_micros()))
                .max(call.held_micros())
        });
    let charged = cost
        .min(plan_room.saturating_add(wallet_room))
        .min(limit_room);
    let from_plan_micros = charged.min(plan_room);
    Funding {
        from_plan_micros,
        from_grants: Vec::new(),
        from_wallet_micros: charged - from_plan_micros,
    }
}

async fn posted_view<S: Storage>(db: &S, call: &CallRow) -> Result<CallPosted> {
    let transaction_id = call.transaction_id.ok_or(LedgerError::NotFound {
        what: "call charge",
    })?;
    let rows = db
        .query(
            "SELECT plan_delta_micros, wallet_delta_micros, plan_after_micros, wallet_after_micros
             FROM transactions WHERE id = ?1",
            &[i(transaction_id)],
        )
        .await?;
    let row = rows.first().ok_or(LedgerError::NotFound {
        what: "call charge",
    })?;
    let duration = call.duration_secs.unwrap_or(0);
    Ok(CallPosted {
        call_id: call.call_id.clone(),
        status: call.status.clone(),
        duration_seconds: duration,
        billed_seconds: call.rate.billed_secs(duration),
        charged: money::to_decimal(call.charged_micros.unwrap_or(0)),
        from_plan: money::to_decimal(-int(row, 0)?),
        from_wallet: money::to_decimal(-int(row, 1)?),
        unbilled: money::to_decimal(call.unbilled_micros.unwrap_or(0)),
        wallet_balance: money::to_decimal(int(row, 3)?),
        plan_credits_remaining: money::to_decimal(int(row, 2)?),
    })
}
