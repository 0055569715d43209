//! Posting a money movement: ONE statement inserts the history row; triggers write its journal
//! rows, apply them to the balances and check the balances after (schema.rs).

use crate::row::{i, int, oi, ot, t};
use crate::storage::Storage;
use crate::{LedgerError, Result};

/// What a posting records (R18's columns).
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry<'a> {
    pub kind: &'a str,
    pub agent_id: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub quantity_micros: Option<i64>,
    pub unit: Option<&'a str>,
    pub rate_micros: Option<i64>,
    /// Signed change of plan credits (negative: spent or expired).
    pub plan_delta_micros: i64,
    /// Signed change of the wallet.
    pub wallet_delta_micros: i64,
    pub occurred_at: i64,
    pub description: Option<&'a str>,
}

/// The posted row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Posted {
    pub transaction_id: i64,
    pub plan_after_micros: i64,
    pub wallet_after_micros: i64,
}

/// Posts one entry for a workspace. Fails (and writes nothing of this statement) if the workspace
/// is unknown or a balance invariant would break.
pub(crate) async fn post<S: Storage>(
    db: &S,
    workspace_id: &str,
    entry: &Entry<'_>,
    now_secs: i64,
) -> Result<Posted> {
    let rows = db
        .query(
            "INSERT INTO transactions (workspace_id, type, agent_id, reference, quantity_micros, unit,
                 rate_micros, plan_delta_micros, wallet_delta_micros, plan_after_micros,
                 wallet_after_micros, occurred_at, created_at, description)
             SELECT id, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, plan_credits_micros + ?8, wallet_micros + ?9,
                 ?10, ?11, ?12
             FROM workspaces WHERE id = ?1
             RETURNING id, plan_after_micros, wallet_after_micros",
            &[
                t(workspace_id),
                t(entry.kind),
                ot(entry.agent_id),
                ot(entry.reference),
                oi(entry.quantity_micros),
                ot(entry.unit),
                oi(entry.rate_micros),
                i(entry.plan_delta_micros),
                i(entry.wallet_delta_micros),
                i(entry.occurred_at),
                i(now_secs),
                ot(entry.description),
            ],
        )
        .await?;
    let row = rows
        .first()
        .ok_or(LedgerError::NotFound { what: "workspace" })?;
    Ok(Posted {
        transaction_id: int(row, 0)?,
        plan_after_micros: int(row, 1)?,
        wallet_after_micros: int(row, 2)?,
    })
}
