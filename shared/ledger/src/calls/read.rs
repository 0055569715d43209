//! A call's row and the read a heartbeat, an end and an expiry share: the call with its workspace
//! and its agent, and the guarded write of a row decided from it.

use std::sync::LazyLock;

use std::collections::BTreeMap;

use crate::agents::{AgentColumns, AgentState};
use crate::catalog::{CallRate, NumberType};
use crate::grants::{self, Spendable};
use crate::guarded::{self, Read, ViewRow};
use crate::row::{self, Columns, ReadRow, i, read_row, t};
use crate::storage::Storage;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, Result};

read_row! {
    /// A call's row, for a read that joins `calls c`.
    #[derive(Debug, Clone)]
    pub(super) struct CallRow in "c" {
        pub(super) call_id: String,
        pub(super) agent_id: String,
        pub(super) direction: String,
        pub(super) rate: CallRate,
        pub(super) status: String,
        pub(super) grace: bool,
        pub(super) reserved_secs: i64,
        pub(super) held_plan_micros: i64,
        pub(super) held_wallet_micros: i64,
        pub(super) request_hash: String,
        pub(super) duration_secs: Option<i64>,
        pub(super) charged_micros: Option<i64>,
        pub(super) unbilled_micros: Option<i64>,
        pub(super) transaction_id: Option<i64>,
        pub(super) held_grant_micros: i64,
        pub(super) held_grants: Option<String>,
    }
}

impl CallRow {
    /// What it holds, of every source.
    pub(super) fn held_micros(&self) -> i64 {
        self.held_plan_micros + self.held_wallet_micros + self.held_grant_micros
    }

    /// What it holds of each grant.
    pub(super) fn grant_holds(&self) -> Result<BTreeMap<String, i64>> {
        grants::holds_of(self.held_grants.as_deref())
    }
}

read_row! {
    /// The columns of a call's rate, as its authorization priced it.
    struct RateColumns in "c" {
        number_type: String,
        rate_micros: i64,
        increment_secs: i64,
        minimum_secs: i64,
    }
}

/// A call's rate is read as its [`RateColumns`].
impl Columns for CallRate {
    fn select(table: &str, _name: &str, out: &mut Vec<String>) {
        RateColumns::select_from(table, out);
    }

    fn decode(row: &crate::Row, at: &mut usize) -> Result<Self> {
        let stored = RateColumns::decode(row, at)?;
        Ok(CallRate {
            number_type: if stored.number_type == "toll_free" {
                NumberType::TollFree
            } else {
                NumberType::Standard
            },
            per_minute_micros: stored.rate_micros,
            increment_secs: stored.increment_secs,
            minimum_secs: stored.minimum_secs,
        })
    }
}

pub(super) async fn load_call<S: Storage>(db: &S, call_id: &str) -> Result<CallRow> {
    workspace::validate_id("call_id", call_id)?;
    let sql = format!(
        "SELECT {} FROM calls c WHERE c.call_id = ?1",
        row::select_list::<CallRow>(true)
    );
    let rows = db.query(&sql, &[t(call_id)]).await?;
    rows.first()
        .map_or(Err(LedgerError::NotFound { what: "call" }), |row| {
            row::decode_row(row)
        })
}

pub(super) async fn find_call<S: Storage>(db: &S, call_id: &str) -> Result<Option<CallRow>> {
    match load_call(db, call_id).await {
        Ok(call) => Ok(Some(call)),
        Err(LedgerError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

read_row! {
    /// A row of [`CALL_READ`].
    struct CallReadRow in "" {
        ws: WorkspaceState,
        agent: AgentColumns,
        call: CallRow,
        grants: Option<String> = grants::CALL_GRANTS_COLUMN.as_str(),
        holds_overdue: bool = "EXISTS (SELECT 1 FROM calls o WHERE o.workspace_id = c.workspace_id
             AND o.status = 'active' AND o.expires_at <= COALESCE(workspaces.test_clock_at, ?2))",
    }
}

/// A call's read, for a heartbeat, an end or an expiry: `?1` the call id, `?2` the real time.
/// The call, its workspace and its agent, and whether the workspace has overdue holds (which a
/// heartbeat posts first, on the transactional path).
static CALL_READ: LazyLock<Read> = LazyLock::new(|| {
    Read::of::<CallReadRow>(
        0,
        format!(
            "FROM {} JOIN calls c ON c.call_id = k.call_id
             JOIN workspaces ON workspaces.id = c.workspace_id
             LEFT JOIN agents a ON a.workspace_id = c.workspace_id AND a.agent_id = c.agent_id",
            guarded::keys_row(&["call_id"]),
        ),
        2,
    )
});

/// A call with its workspace and agent, as [`CALL_READ`] gave them.
pub(super) struct CallState {
    pub(super) call: CallRow,
    pub(super) ws: WorkspaceState,
    pub(super) agent: AgentState,
    /// The workspace's grants that may pay and those the call holds, in spending order.
    pub(super) grants: Vec<Spendable>,
    pub(super) holds_overdue: bool,
    /// The workspace's time.
    pub(super) now: i64,
    /// What the read gave, for the guarded write.
    pub(super) stamp: Vec<crate::SqlValue>,
}

/// Reads a call with its workspace and agent (404 if the call is unknown).
pub(super) async fn read_call<S: Storage>(
    db: &S,
    call_id: &str,
    real_now_secs: i64,
) -> Result<CallState> {
    workspace::validate_id("call_id", call_id)?;
    let rows = db
        .query(&CALL_READ.sql(), &[t(call_id), i(real_now_secs)])
        .await?;
    let row = rows.first().ok_or(LedgerError::NotFound { what: "call" })?;
    let read: CallReadRow = row::decode_row(row)?;
    let now = read.ws.now(real_now_secs);
    let agent = read.agent.state(&read.ws, &read.call.agent_id, now)?;
    Ok(CallState {
        holds_overdue: read.holds_overdue,
        stamp: CALL_READ.stamp_of(row)?,
        grants: grants::spendable(read.grants.as_deref())?,
        call: read.call,
        ws: read.ws,
        agent,
        now,
    })
}

/// Writes `row` for a call read as `state`: guarded by that read (`Some(true)` written,
/// `Some(false)` raced), or, with `guard` false, under the caller's write lock.
pub(super) async fn write_for_call<S: Storage, R: ViewRow>(
    db: &S,
    row: R,
    state: &CallState,
    real_now_secs: i64,
    guard: bool,
) -> Result<bool> {
    if !guard {
        let (sql, params) = guarded::insert(&[row], None)?;
        db.execute(&sql, &params).await?;
        return Ok(true);
    }
    let keys = [t(&state.call.call_id), i(real_now_secs)];
    let (sql, params) = guarded::insert(&[row], Some((&CALL_READ, &keys, &state.stamp)))?;
    Ok(guarded::write(db, &sql, &params).await?.is_some())
}
