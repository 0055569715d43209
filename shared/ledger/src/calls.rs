//! Two-phase calls (R5): `authorize` reserves the first increment, `heartbeat` extends the hold,
//! `end` posts the actual charge and releases the rest; a hold not extended in time is posted at
//! its reserved amount. Limits (R6) and the inbound grace period (R7) apply at authorization.

use std::sync::LazyLock;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::agents::{self, AgentState, Funding, OveragePolicy};
use crate::catalog::{self, CallRate, Catalog, Direction, NumberType};
use crate::fingerprint::Fingerprint;
use crate::guarded::{self, Attempt, Read, ViewRow, view_row};
use crate::money;
use crate::row::{i, int, opt_int, t, text};
use crate::storage::Storage;
use crate::tx;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, LimitKind, Result};

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
    /// Cost the agent's policy or limits did not allow (the platform was told to stop).
    pub unbilled: Decimal,
    /// Wallet after.
    pub wallet_balance: Decimal,
    /// Plan credits after.
    pub plan_credits_remaining: Decimal,
}

#[derive(Debug, Clone)]
struct CallRow {
    call_id: String,
    agent_id: String,
    direction: String,
    rate: CallRate,
    status: String,
    grace: bool,
    reserved_secs: i64,
    held_plan_micros: i64,
    held_wallet_micros: i64,
    request_hash: String,
    duration_secs: Option<i64>,
    charged_micros: Option<i64>,
    unbilled_micros: Option<i64>,
    transaction_id: Option<i64>,
}

impl CallRow {
    fn held_micros(&self) -> i64 {
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

async fn load_call<S: Storage>(db: &S, call_id: &str) -> Result<CallRow> {
    workspace::validate_id("call_id", call_id)?;
    let sql = format!("SELECT {CALL_COLUMNS} FROM calls c WHERE c.call_id = ?1");
    let rows = db.query(&sql, &[t(call_id)]).await?;
    rows.first()
        .map_or(Err(LedgerError::NotFound { what: "call" }), |row| {
            call_from_row(row, 0)
        })
}

fn validate(request: &CallRequest) -> Result<Fingerprint> {
    workspace::validate_id("workspace_id", &request.workspace_id)?;
    workspace::validate_id("agent_id", &request.agent_id)?;
    workspace::validate_id("call_id", &request.call_id)?;
    catalog::validate_e164("to", &request.to)?;
    if request.from.is_empty() || request.from.len() > 32 {
        return Err(LedgerError::invalid(
            "validation_error",
            "from",
            "from must be 1-32 characters",
        ));
    }
    Fingerprint::of("call", request)
}

/// What an authorization needs from the catalog, priced before any storage access.
struct Priced {
    /// The catalog version it was priced with: the authorization checks it is still the stored one.
    catalog_version: i64,
    fingerprint: Fingerprint,
    number_type: NumberType,
    rate: CallRate,
    first_secs: i64,
    hold_micros: i64,
    hold_timeout_secs: i64,
    grace_secs: i64,
}

fn price(catalog: &Catalog, request: &CallRequest) -> Result<Priced> {
    let fingerprint = validate(request)?;
    let number_type = catalog::number_type_of(&request.to);
    let rate = catalog.call_rate(request.direction, &request.to, number_type)?;
    let first_secs = rate.billed_secs(rate.increment_secs);
    Ok(Priced {
        catalog_version: catalog.version,
        fingerprint,
        number_type,
        hold_micros: rate.charge_for_secs(first_secs),
        rate,
        first_secs,
        hold_timeout_secs: i64::from(catalog.settings().hold_timeout_secs),
        grace_secs: i64::from(catalog.settings().inbound_grace_secs),
    })
}

/// How an authorization is held, decided from the workspace and agent as read (R5, R6, R7).
fn decide(
    ws: &WorkspaceState,
    agent: &AgentState,
    request: &CallRequest,
    priced: &Priced,
    now: i64,
) -> Result<(Funding, bool)> {
    if agent
        .daily_call_limit
        .is_some_and(|limit| agent.day_calls >= limit)
    {
        return Err(LedgerError::LimitReached {
            limit: LimitKind::DailyCallLimit,
        });
    }
    if agent
        .max_concurrent_calls
        .is_some_and(|limit| agent.active_calls >= limit)
    {
        return Err(LedgerError::LimitReached {
            limit: LimitKind::MaxConcurrentCalls,
        });
    }
    match agents::fund(ws, agent, priced.hold_micros) {
        Ok(funding) => Ok((funding, false)),
        Err(LedgerError::InsufficientFunds)
            if inbound_grace_open(
                ws,
                request.direction,
                priced.number_type,
                now,
                priced.grace_secs,
            ) =>
        {
            Ok((Funding::default(), true))
        }
        Err(refused) => Err(refused),
    }
}

fn authorized(request: &CallRequest, funding: Funding, grace: bool) -> CallAuthorized {
    CallAuthorized {
        call_id: request.call_id.clone(),
        status: "authorized".into(),
        held: money::to_decimal(funding.total()),
        grace,
    }
}

/// Authorizes a call: checks billing, limits and funds, and reserves its first increment.
/// Replaying the same request returns the call as it is; another request with the same call id
/// is an idempotency conflict.
///
/// Like a debit (`guarded.rs`), a new call on a workspace without overdue holds is one read and
/// one guarded write; a replay, overdue holds to post first, or two lost races take the
/// transactional path.
pub async fn authorize<S: Storage>(
    db: &S,
    catalog: &Catalog,
    request: &CallRequest,
    real_now_secs: i64,
) -> Result<CallAuthorized> {
    authorize_with_attempts(db, catalog, request, real_now_secs, guarded::ATTEMPTS).await
}

/// [`authorize`] with a chosen number of unlocked attempts (tests force the locked path with 0).
#[doc(hidden)]
pub async fn authorize_with_attempts<S: Storage>(
    db: &S,
    catalog: &Catalog,
    request: &CallRequest,
    real_now_secs: i64,
    unlocked_attempts: u32,
) -> Result<CallAuthorized> {
    let priced = catalog::priced_before_reading(db, catalog, price(catalog, request)).await?;
    guarded::optimistic(
        db,
        unlocked_attempts,
        async |db| authorize_unlocked(db, request, &priced, real_now_secs).await,
        async |db| authorize_locked(db, catalog, request, &priced, real_now_secs).await,
    )
    .await
}

/// An authorization's read: `?1` the workspace, `?2` the agent, `?3` the call id, `?4` the real
/// time. Besides the workspace, the agent and the catalog version, two flags send the
/// authorization to the transactional path: the call id already exists (a replay or a
/// conflict), or the workspace has overdue holds to post first.
static AUTHORIZE_READ: LazyLock<Read> = LazyLock::new(|| Read {
    stamp: format!(
        "{WORKSPACE_COLUMNS}, {AGENT_COLUMNS},
         EXISTS (SELECT 1 FROM calls WHERE call_id = ?3),
         EXISTS (SELECT 1 FROM calls c WHERE c.workspace_id = ?1 AND c.status = 'active'
                 AND c.expires_at <= COALESCE(workspaces.test_clock_at, ?4)),
         {CURRENT_VERSION}",
        WORKSPACE_COLUMNS = *workspace::QUALIFIED_WORKSPACE_COLUMNS,
        AGENT_COLUMNS = agents::AGENT_COLUMNS,
        CURRENT_VERSION = catalog::CURRENT_VERSION,
    ),
    extra: "",
    from: format!(
        "FROM {} JOIN workspaces ON workspaces.id = k.workspace_id
         LEFT JOIN agents a ON a.workspace_id = k.workspace_id AND a.agent_id = k.agent_id",
        guarded::keys_row(&["workspace_id", "agent_id"]),
    ),
    keys: 4,
});

/// Where [`AUTHORIZE_READ`]'s flags and catalog version are.
const CALL_EXISTS: usize = workspace::WORKSPACE_COLUMN_COUNT + agents::AGENT_COLUMN_COUNT;
const HOLDS_OVERDUE: usize = CALL_EXISTS + 1;
const AUTHORIZE_VERSION: usize = CALL_EXISTS + 2;

view_row! {
    /// A decided authorization: a row of the view `call_authorize`, whose trigger (schema.rs)
    /// inserts the call (its hold trigger adds the hold to the workspace's and the agent's
    /// counters), counts it in the agent's day and starts the grace period: at once for a grace
    /// call, else if the hold left nothing available.
    struct HoldRow in "call_authorize" {
        call_id: String,
        workspace_id: String,
        agent_id: String,
        direction: &'static str,
        to_number: String,
        from_number: String,
        number_type: &'static str,
        rate_micros: i64,
        increment_secs: i64,
        minimum_secs: i64,
        grace: bool,
        reserved_secs: i64,
        held_plan_micros: i64,
        held_wallet_micros: i64,
        request_hash: String,
        started_at: i64,
        expires_at: i64,
        spend_cycle_start_at: i64,
        call_day: String,
    }
}

fn authorize_params(request: &CallRequest, real_now_secs: i64) -> [crate::SqlValue; 4] {
    [
        t(&request.workspace_id),
        t(&request.agent_id),
        t(&request.call_id),
        i(real_now_secs),
    ]
}

/// The fast path of [`authorize`]: one read, then the call, the agent's day count and the grace
/// mark in ONE statement guarded by the read.
async fn authorize_unlocked<S: Storage>(
    db: &S,
    request: &CallRequest,
    priced: &Priced,
    real_now_secs: i64,
) -> Result<Attempt<CallAuthorized>> {
    let params = authorize_params(request, real_now_secs);
    let rows = db.query(&AUTHORIZE_READ.sql(), &params).await?;
    // An unknown workspace: the transactional path tells a conflicting call id from a 404.
    let Some(row) = rows.first() else {
        return Ok(Attempt::NeedsLock);
    };
    // The stored catalog version, read with the state: a cached catalog needs no query of its own.
    if int(row, AUTHORIZE_VERSION)? != priced.catalog_version {
        return Err(LedgerError::CatalogChanged);
    }
    if int(row, CALL_EXISTS)? != 0 || int(row, HOLDS_OVERDUE)? != 0 {
        return Ok(Attempt::NeedsLock);
    }
    let (hold, answer) = decide_hold(row, request, priced, real_now_secs)?;
    let stamp = AUTHORIZE_READ.stamp_of(row)?;
    let (sql, params) = guarded::insert(&[hold], Some((&AUTHORIZE_READ, &params, &stamp)))?;
    Ok(match guarded::write(db, &sql, &params).await? {
        Some(_) => Attempt::Done(answer),
        None => Attempt::Raced,
    })
}

/// [`authorize`] under the write lock: answers a replay, posts the workspace's overdue holds,
/// then the same decision and write, unguarded.
async fn authorize_locked<S: Storage>(
    db: &S,
    catalog: &Catalog,
    request: &CallRequest,
    priced: &Priced,
    real_now_secs: i64,
) -> Result<CallAuthorized> {
    if let Some(existing) = find_call(db, &request.call_id).await? {
        if !priced.fingerprint.matches(&existing.request_hash) {
            return Err(LedgerError::IdempotencyConflict);
        }
        return Ok(CallAuthorized {
            call_id: existing.call_id.clone(),
            status: existing.status.clone(),
            held: money::to_decimal(existing.held_micros()),
            grace: existing.grace,
        });
    }
    let params = authorize_params(request, real_now_secs);
    let mut rows = db.query(&AUTHORIZE_READ.sql(), &params).await?;
    let Some(row) = rows.first() else {
        catalog::ensure_current(db, catalog).await?;
        return Err(LedgerError::NotFound { what: "workspace" });
    };
    if int(row, AUTHORIZE_VERSION)? != priced.catalog_version {
        return Err(LedgerError::CatalogChanged);
    }
    if int(row, HOLDS_OVERDUE)? != 0 {
        let ws = workspace::from_row(row)?;
        if ws.plan_id.is_none() {
            return Err(LedgerError::BillingNotConfigured);
        }
        // Posting an expired hold moves balances and holds: read them again.
        expire_overdue(db, Some(&ws.id), ws.now(real_now_secs), EXPIRY_BATCH_MAX).await?;
        rows = db.query(&AUTHORIZE_READ.sql(), &params).await?;
    }
    let row = rows
        .first()
        .ok_or(LedgerError::NotFound { what: "workspace" })?;
    let (hold, answer) = decide_hold(row, request, priced, real_now_secs)?;
    let (sql, params) = guarded::insert(&[hold], None)?;
    db.execute(&sql, &params).await?;
    Ok(answer)
}

/// Decides an authorization from a row of [`AUTHORIZE_READ`]: the row to write and the answer.
fn decide_hold(
    row: &crate::Row,
    request: &CallRequest,
    priced: &Priced,
    real_now_secs: i64,
) -> Result<(HoldRow, CallAuthorized)> {
    let ws = workspace::from_row(row)?;
    if ws.plan_id.is_none() {
        return Err(LedgerError::BillingNotConfigured);
    }
    let now = ws.now(real_now_secs);
    let agent = agents::from_columns(
        &ws,
        &request.agent_id,
        now,
        row,
        workspace::WORKSPACE_COLUMN_COUNT,
    )?;
    let (funding, grace) = decide(&ws, &agent, request, priced, now)?;
    let hold = HoldRow {
        call_id: request.call_id.clone(),
        workspace_id: ws.id.clone(),
        agent_id: agent.agent_id.clone(),
        direction: request.direction.as_str(),
        to_number: request.to.clone(),
        from_number: request.from.clone(),
        number_type: priced.number_type.as_str(),
        rate_micros: priced.rate.per_minute_micros,
        increment_secs: priced.rate.increment_secs,
        minimum_secs: priced.rate.minimum_secs,
        grace,
        reserved_secs: priced.first_secs,
        held_plan_micros: funding.from_plan_micros,
        held_wallet_micros: funding.from_wallet_micros,
        request_hash: priced.fingerprint.stored().to_owned(),
        started_at: now,
        expires_at: now + priced.hold_timeout_secs,
        spend_cycle_start_at: ws.cycle_start_at.unwrap_or(0),
        call_day: agent.today.clone(),
    };
    Ok((hold, authorized(request, funding, grace)))
}

/// R7: inbound calls to standard numbers keep working for the grace period after the balance ran
/// out (the period starts now if it had not started).
fn inbound_grace_open(
    ws: &WorkspaceState,
    direction: Direction,
    number_type: NumberType,
    now: i64,
    grace_secs: i64,
) -> bool {
    direction == Direction::Inbound
        && number_type == NumberType::Standard
        && now < ws.exhausted_at.unwrap_or(now) + grace_secs
}

async fn find_call<S: Storage>(db: &S, call_id: &str) -> Result<Option<CallRow>> {
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
struct CallState {
    call: CallRow,
    ws: WorkspaceState,
    agent: AgentState,
    holds_overdue: bool,
    /// The workspace's time.
    now: i64,
    /// What the read gave, for the guarded write.
    stamp: Vec<crate::SqlValue>,
}

/// Reads a call with its workspace and agent (404 if the call is unknown).
async fn read_call<S: Storage>(db: &S, call_id: &str, real_now_secs: i64) -> Result<CallState> {
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
async fn write_for_call<S: Storage, R: ViewRow>(
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

view_row! {
    /// A decided heartbeat: a row of the view `call_extend`, whose trigger (schema.rs) sets the
    /// call's hold and expiry and starts the grace period if nothing is left.
    struct ExtendRow in "call_extend" {
        call_id: String,
        workspace_id: String,
        held_plan_micros: i64,
        held_wallet_micros: i64,
        reserved_secs: i64,
        expires_at: i64,
        now: i64,
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
    if !(0..=86_400).contains(&elapsed_secs) {
        return Err(LedgerError::invalid(
            "validation_error",
            "elapsed_seconds",
            "elapsed_seconds must be 0..86400",
        ));
    }
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
            let (row, answer) = decide_heartbeat(&state, terms);
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
            let state = if state.holds_overdue {
                expire_overdue(db, Some(&state.ws.id), state.now, EXPIRY_BATCH_MAX).await?;
                let again = read_call(db, call_id, real_now_secs).await?;
                if again.call.status != "active" {
                    return Ok(stopped("hold_expired", 0));
                }
                again
            } else {
                state
            };
            let (row, answer) = decide_heartbeat(&state, terms);
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
fn decide_heartbeat(state: &CallState, terms: HeartbeatTerms) -> (ExtendRow, Heartbeat) {
    let CallState {
        call,
        ws,
        agent,
        now,
        ..
    } = state;
    let needed_secs = call.rate.billed_secs(terms.elapsed_secs) + call.rate.increment_secs;
    let mut held_plan = call.held_plan_micros;
    let mut held_wallet = call.held_wallet_micros;
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
        match agents::fund(ws, agent, extra) {
            Ok(funding) => {
                held_plan += funding.from_plan_micros;
                held_wallet += funding.from_wallet_micros;
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
    };
    let answer = Heartbeat {
        continue_call: reason.is_none(),
        reason: reason.map(str::to_owned),
        held: money::to_decimal(held_plan + held_wallet),
    };
    (row, answer)
}

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
    if !(0..=86_400).contains(&duration_secs) {
        return Err(LedgerError::invalid(
            "validation_error",
            "duration_seconds",
            "duration_seconds must be 0..86400",
        ));
    }
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
    struct PostRow in "call_post" (transaction_id) {
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
fn decide_post(
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

/// Posts holds whose timeout passed, at their reserved amount (R5): for one workspace or, with
/// `None`, for all, each at its workspace's time (test clock, else `now_secs`). Returns how many.
/// Runs inside the caller's transaction.
pub async fn expire_overdue<S: Storage>(
    db: &S,
    workspace_id: Option<&str>,
    now_secs: i64,
    limit: i64,
) -> Result<usize> {
    // Two statements rather than `(?2 IS NULL OR workspace_id = ?2)`: SQLite cannot pick an
    // index for that, so one workspace's check (every call authorization) scanned every active
    // call of every workspace.
    let filter = if workspace_id.is_some() {
        "c.workspace_id = ?2"
    } else {
        "?2 IS NULL"
    };
    let sql = format!(
        "SELECT c.call_id FROM calls c WHERE c.status = 'active' AND {filter}
           AND c.expires_at <= COALESCE((SELECT test_clock_at FROM workspaces w WHERE w.id = c.workspace_id), ?1)
         ORDER BY c.expires_at LIMIT ?3"
    );
    let workspace_param = workspace_id.map_or(crate::SqlValue::Null, t);
    let rows = db
        .query(
            &sql,
            &[
                i(now_secs),
                workspace_param,
                i(limit.clamp(1, EXPIRY_BATCH_MAX)),
            ],
        )
        .await?;
    for row in &rows {
        // Each hold expires at its own workspace's time (a test clock, or the real time), as the
        // state left by the holds posted before it.
        let state = read_call(db, &text(row, 0)?, now_secs).await?;
        let (post, _) = decide_post(&state, state.call.reserved_secs, "expired");
        write_for_call(db, post, &state, now_secs, false).await?;
    }
    Ok(rows.len())
}

/// The expiry sweep for the scheduler: posts up to `limit` overdue holds in one transaction.
pub async fn expire_holds<S: Storage>(db: &S, real_now_secs: i64, limit: i64) -> Result<usize> {
    tx::immediate(db, async |db| {
        expire_overdue(db, None, real_now_secs, limit).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_row_writes_every_column_of_its_view() {
        guarded::assert_view_matches::<HoldRow>();
        guarded::assert_view_matches::<ExtendRow>();
        guarded::assert_view_matches::<PostRow>();
    }
}
