//! A call's end (R5): posts its charge and releases the hold; the posting of an expired hold is
//! the same decision at the reserved duration (`expiry.rs`).

use crate::agents::{Funding, GrantDraw, OveragePolicy};
use crate::grants::Spendable;
use crate::guarded::{self, Attempt, view_row};
use crate::money;
use crate::row::{i, int};
use crate::storage::Storage;
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
        let (row, answer) = decide_post(&state, duration_secs, "ended")?;
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
        grant_delta_micros: i64,
        grant_split: Option<String>,
        grant_release: Option<String>,
    }
}

/// Decides the posting of an active call that lasted `duration_secs` (an end, or an expiry at
/// its reserved seconds): the row to write and the answer. What it holds of each source is a
/// commitment; what it costs beyond that is taken as a debit would take it, in the same order.
pub(super) fn decide_post(
    state: &CallState,
    duration_secs: i64,
    status: &'static str,
) -> Result<(PostRow, CallPosted)> {
    let CallState {
        call,
        ws,
        agent,
        now,
        ..
    } = state;
    let billed_secs = call.rate.billed_secs(duration_secs);
    let cost = call.rate.charge_for_secs(billed_secs);
    let Posting {
        funding,
        split,
        release,
    } = funding_for_posting(state, cost)?;
    let unbilled = cost - funding.total();
    let plan_after_micros = ws.plan_credits_micros - funding.from_plan_micros;
    let wallet_after_micros = ws.wallet_micros - funding.from_wallet_micros;
    let json_rows = |rows: Vec<serde_json::Value>| {
        (!rows.is_empty()).then(|| serde_json::Value::Array(rows).to_string())
    };
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
        grant_delta_micros: -funding.grants_micros(),
        grant_split: json_rows(split),
        grant_release: json_rows(release),
    };
    let posted = CallPosted {
        call_id: call.call_id.clone(),
        status: status.into(),
        duration_seconds: duration_secs,
        billed_seconds: billed_secs,
        charged: money::to_decimal(funding.total()),
        from_plan: money::to_decimal(funding.from_plan_micros),
        from_wallet: money::to_decimal(funding.from_wallet_micros),
        from_grants: money::to_decimal(funding.grants_micros()),
        unbilled: money::to_decimal(unbilled),
        wallet_balance: money::to_decimal(wallet_after_micros),
        plan_credits_remaining: money::to_decimal(plan_after_micros),
    };
    Ok((row, posted))
}

/// How a call's posting is paid, and what its grants' entries are.
struct Posting {
    funding: Funding,
    /// `[grant id, credits charged (negative), remaining after]`, as `call_post` reads them.
    split: Vec<serde_json::Value>,
    /// `[grant id, 'expired' or 'voided', unused hold (negative), remaining after]`: what the
    /// call held of a grant that expired or was voided under it and did not use (G2).
    release: Vec<serde_json::Value>,
}

/// What the call's cost is paid with: plan credits (what it holds, then what is free), then the
/// grants: what it holds of each, in spending order, then what else they have for this call (in
/// spending order, promotional ones only for a `stop` agent), then the wallet (its hold, then, for a
/// `use_balance` agent, what is free; a grace call without limit), all within the agent's
/// spending limit (counting its own holds back in).
fn funding_for_posting(state: &CallState, cost: i64) -> Result<Posting> {
    let CallState {
        call,
        ws,
        agent,
        grants,
        now,
        ..
    } = state;
    let holds = call.grant_holds()?;
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
    let mut budget = cost.min(limit_room);
    let from_plan_micros = budget.min(plan_room);
    budget -= from_plan_micros;
    // What the call holds of each grant first, in the spending order: it is the call's (a grant
    // that expired or was voided since still pays it, R26), and a grant made since, however
    // early it comes in the order, does not take its place. Then what a debit would take.
    let mut taken: Vec<(&Spendable, i64)> = Vec::with_capacity(grants.len());
    for grant in grants {
        let held = holds.get(&grant.id).copied().unwrap_or(0);
        let micros = budget.min(held);
        budget -= micros;
        taken.push((grant, micros));
    }
    for (grant, micros) in &mut taken {
        if grant.paid && agent.policy == OveragePolicy::Stop {
            continue;
        }
        let more = budget.min(grant.available_for("call", &call.agent_id, *now));
        budget -= more;
        *micros += more;
    }
    let mut from_grants = Vec::new();
    let mut split = Vec::new();
    let mut release = Vec::new();
    for (grant, taken) in taken {
        let held = holds.get(&grant.id).copied().unwrap_or(0);
        if taken > 0 {
            from_grants.push(GrantDraw {
                grant_id: grant.id.clone(),
                micros: taken,
            });
            split.push(serde_json::json!([
                grant.id,
                -taken,
                grant.remaining_micros - taken
            ]));
        }
        let unused = held - taken.min(held);
        if unused > 0 && !grant.in_force_at(*now) {
            let kind = if grant.voided { "voided" } else { "expired" };
            release.push(serde_json::json!([
                grant.id,
                kind,
                -unused,
                grant.remaining_micros - taken - unused
            ]));
        }
    }
    if holds
        .keys()
        .any(|id| grants.iter().all(|grant| &grant.id != id))
    {
        return Err(LedgerError::Storage(
            crate::StorageError::from_sqlite_message("a call holds a grant its read did not give"),
        ));
    }
    let from_wallet_micros = budget.min(wallet_room);
    Ok(Posting {
        funding: Funding {
            from_plan_micros,
            from_grants,
            from_wallet_micros,
        },
        split,
        release,
    })
}

async fn posted_view<S: Storage>(db: &S, call: &CallRow) -> Result<CallPosted> {
    let transaction_id = call.transaction_id.ok_or(LedgerError::NotFound {
        what: "call charge",
    })?;
    let rows = db
        .query(
            "SELECT plan_delta_micros, wallet_delta_micros, plan_after_micros, wallet_after_micros,
                    grant_delta_micros
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
        from_grants: money::to_decimal(-int(row, 4)?),
        unbilled: money::to_decimal(call.unbilled_micros.unwrap_or(0)),
        wallet_balance: money::to_decimal(int(row, 3)?),
        plan_credits_remaining: money::to_decimal(int(row, 2)?),
    })
}
