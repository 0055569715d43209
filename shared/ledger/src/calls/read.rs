//! A call's row and the read a heartbeat, an end and an expiry share: the call with its workspace
//! and its agent, and the guarded write of a row decided from it.

use std::sync::LazyLock;

use crate::agents::{self, AgentState};
use crate::catalog::{CallRate, NumberType};
use crate::guarded::{self, Read, ViewRow};
use crate::row::{i, int, opt_int, t, text};
use crate::storage::Storage;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, Result};

#[derive(Debug, Clone)]
pub(super) struct CallRow {
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
}

impl CallRow {
    pub(super) fn held_micros(&self) -> i64 {
        self.held_plan_micros + self.held_wallet_micros
    }
}

/// A call's row, for a query that reads `calls c`. Decoded by [`call_from_row`].
const CALL_COLUMNS: &str = "c.call_id, c.workspace_id, c.agent_id, c.direction, NULL,
    c.number_type, c.rate_micros, c.increment_secs, c.minimum_secs, c.status, c.grace,
    c.reserved_secs, c.held_plan_micros, c.held_wallet_micros, c.request_hash, c.duration_secs,
    c.charged_micros, c.unbilled_micros, c.transaction_id";

/// How many columns [`CALL_COLUMNS`] selects.
const CALL_COLUMN_COUNT: usize = 19;

/// Decodes [`CALL_COLUMNS`] starting at column `first`.
fn call_from_row(r: &crate::Row, first: usize) -> Result<CallRow> {
    let at = |n: usize| first + n;
    Ok(CallRow {
        call_id: text(r, at(0))?,
        agent_id: text(r, at(2))?,
        direction: text(r, at(3))?,
        rate: CallRate {
            number_type: if text(r, at(5))? == "toll_free" {
                NumberType::TollFree
            } else {
                NumberType::Standard
            },
            per_minute_micros: int(r, at(6))?,
            increment_secs: int(r, at(7))?,
            minimum_secs: int(r, at(8))?,
        },
        status: text(r, at(9))?,
        grace: int(r, at(10))? != 0,
        reserved_secs: int(r, at(11))?,
        held_plan_micros: int(r, at(12))?,
        held_wallet_micros: int(r, at(13))?,
        request_hash: text(r, at(14))?,
        duration_secs: opt_int(r, at(15))?,
        charged_micros: opt_int(r, at(16))?,
        unbilled_micros: opt_int(r, at(17))?,
        transaction_id: opt_int(r, at(18))?,
    })
}

pub(super) async fn load_call<S: Storage>(db: &S, call_id: &str) -> Result<CallRow> {
    workspace::validate_id("call_id", call_id)?;
    let sql = format!("SELECT {CALL_COLUMNS} FROM calls c WHERE c.call_id = ?1");
    let rows = db.query(&sql, &[t(call_id)]).await?;
    rows.first()
        .map_or(Err(LedgerError::NotFound { what: "call" }), |row| {
            call_from_row(row, 0)
        })
}

pub(super) async fn find_call<S: Storage>(db: &S, call_id: &str) -> Result<Option<CallRow>> {
    match load_call(db, call_id).await {
        Ok(call) => Ok(Some(call)),
        Err(LedgerError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// A call's read, for a heartbeat, an end or an expiry: `?1` the call id, `?2` the real time.
/// The call, its workspace and its agent, and whether the workspace has overdue holds (which a
/// heartbeat posts first, on the transactional path).
static CALL_READ: LazyLock<Read> = LazyLock::new(|| Read {
    stamp: format!(
        "{WORKSPACE_COLUMNS}, {AGENT_COLUMNS}, {CALL_COLUMNS},
         EXISTS (SELECT 1 FROM calls o WHERE o.workspace_id = c.workspace_id AND o.status = 'active'
                 AND o.expires_at <= COALESCE(workspaces.test_clock_at, ?2))",
        WORKSPACE_COLUMNS = *workspace::QUALIFIED_WORKSPACE_COLUMNS,
        AGENT_COLUMNS = agents::AGENT_COLUMNS,
    ),
    extra: "",
    from: format!(
        "FROM {} JOIN calls c ON c.call_id = k.call_id
         JOIN workspaces ON workspaces.id = c.workspace_id
         LEFT JOIN agents a ON a.workspace_id = c.workspace_id AND a.agent_id = c.agent_id",
        guarded::keys_row(&["call_id"]),
    ),
    keys: 2,
});

/// Where [`CALL_READ`]'s call and flag are.
const CALL_FIRST: usize = workspace::WORKSPACE_COLUMN_COUNT + agents::AGENT_COLUMN_COUNT;
const CALL_HOLDS_OVERDUE: usize = CALL_FIRST + CALL_COLUMN_COUNT;

/// A call with its workspace and agent, as [`CALL_READ`] gave them.
pub(super) struct CallState {
    pub(super) call: CallRow,
    pub(super) ws: WorkspaceState,
    pub(super) agent: AgentState,
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
    let ws = workspace::from_row(row)?;
    let call = call_from_row(row, CALL_FIRST)?;
    let now = ws.now(real_now_secs);
    let agent = agents::from_columns(
        &ws,
        &call.agent_id,
        now,
        row,
        workspace::WORKSPACE_COLUMN_COUNT,
    )?;
    Ok(CallState {
        holds_overdue: int(row, CALL_HOLDS_OVERDUE)? != 0,
        stamp: CALL_READ.stamp_of(row)?,
        call,
        ws,
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
