//! Two-phase calls (R5): `authorize` reserves the first increment, `heartbeat` extends the hold,
//! `end` posts the actual charge and releases the rest; a hold not extended in time is posted at
//! its reserved amount. Limits (R6) and the inbound grace period (R7) apply at authorization.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::agents::{self, AgentState, Funding, OveragePolicy};
use crate::catalog::{self, CallRate, Catalog, Direction, NumberType};
use crate::fingerprint::Fingerprint;
use crate::guarded;
use crate::money;
use crate::post::{self, Entry};
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
    workspace_id: String,
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

const CALL_COLUMNS: &str = "call_id, workspace_id, agent_id, direction, NULL, number_type, rate_micros,
    increment_secs, minimum_secs, status, grace, reserved_secs, held_plan_micros, held_wallet_micros,
    request_hash, duration_secs, charged_micros, unbilled_micros, transaction_id";

fn call_from_row(r: &crate::Row) -> Result<CallRow> {
    Ok(CallRow {
        call_id: text(r, 0)?,
        workspace_id: text(r, 1)?,
        agent_id: text(r, 2)?,
        direction: text(r, 3)?,
        rate: CallRate {
            number_type: if text(r, 5)? == "toll_free" {
                NumberType::TollFree
            } else {
                NumberType::Standard
            },
            per_minute_micros: int(r, 6)?,
            increment_secs: int(r, 7)?,
            minimum_secs: int(r, 8)?,
        },
        status: text(r, 9)?,
        grace: int(r, 10)? != 0,
        reserved_secs: int(r, 11)?,
        held_plan_micros: int(r, 12)?,
        held_wallet_micros: int(r, 13)?,
        request_hash: text(r, 14)?,
        duration_secs: opt_int(r, 15)?,
        charged_micros: opt_int(r, 16)?,
        unbilled_micros: opt_int(r, 17)?,
        transaction_id: opt_int(r, 18)?,
    })
}

async fn load_call<S: Storage>(db: &S, call_id: &str) -> Result<CallRow> {
    workspace::validate_id("call_id", call_id)?;
    let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?1");
    let rows = db.query(&sql, &[t(call_id)]).await?;
    rows.first()
        .map_or(Err(LedgerError::NotFound { what: "call" }), call_from_row)
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
    for _ in 0..unlocked_attempts {
        match authorize_unlocked(db, request, &priced, real_now_secs).await? {
            Unlocked::Done(answer) => return Ok(answer),
            Unlocked::Raced => {}
            Unlocked::NeedsLock => break,
        }
    }
    tx::immediate(db, async |db| {
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
        catalog::ensure_current(db, catalog).await?;
        let ws = workspace::get(db, &request.workspace_id).await?;
        if ws.plan_id.is_none() {
            return Err(LedgerError::BillingNotConfigured);
        }
        let now = ws.now(real_now_secs);
        // Posting an expired hold moves balances and holds: read the workspace again only then.
        let ws = if expire_overdue(db, Some(&ws.id), now, EXPIRY_BATCH_MAX).await? > 0 {
            workspace::get(db, &request.workspace_id).await?
        } else {
            ws
        };
        let agent = agents::load(db, &ws, &request.agent_id, now).await?;
        let (funding, grace) = decide(&ws, &agent, request, &priced, now)?;
        let (sql, params) = hold_write(
            request,
            &priced,
            &ws,
            &agent,
            (funding, grace, now),
            real_now_secs,
            None,
        );
        guarded::write_locked(db, &sql, &params).await?;
        Ok(authorized(request, funding, grace))
    })
    .await
}

/// What an authorization's decision depends on, re-read by its guarded write (`guarded.rs`):
/// `?1` is the workspace, `?2` the agent, `?3` the call id, `?4` the real time. The last two
/// columns send the authorization to the transactional path: the call id already exists (a
/// replay or a conflict), or the workspace has overdue holds to post first.
const CALL_STAMP: &str = "workspaces.plan_id, workspaces.plan_credits_micros,
    workspaces.wallet_micros, workspaces.held_plan_micros, workspaces.held_wallet_micros,
    workspaces.exhausted_at, workspaces.cycle_start_at, workspaces.test_clock_at,
    workspaces.timezone,
    a.overage_policy, a.monthly_spend_limit_micros, a.daily_call_limit, a.max_concurrent_calls,
    a.spend_cycle_start_at, a.cycle_spend_micros, a.call_day, a.day_calls,
    (SELECT COUNT(*) FROM calls c WHERE c.workspace_id = ?1 AND c.agent_id = ?2 AND c.status = 'active'),
    (SELECT COALESCE(SUM(c.held_plan_micros + c.held_wallet_micros), 0) FROM calls c
     WHERE c.workspace_id = ?1 AND c.agent_id = ?2 AND c.status = 'active'),
    EXISTS (SELECT 1 FROM calls WHERE call_id = ?3),
    EXISTS (SELECT 1 FROM calls c WHERE c.workspace_id = ?1 AND c.status = 'active'
            AND c.expires_at <= COALESCE(workspaces.test_clock_at, ?4))";

/// How many columns [`CALL_STAMP`] selects.
const CALL_STAMP_COLUMN_COUNT: usize = 21;

/// The first parameter of [`hold_write`]'s guard (`guarded::unchanged`).
const CALL_GUARD_FIRST_PARAM: usize = 21;

/// What the fast path of an authorization did.
enum Unlocked {
    /// Authorized or refused: the answer.
    Done(CallAuthorized),
    /// Another writer changed what it read: nothing was written.
    Raced,
    /// A replay, or overdue holds to post first: only the transactional path does these.
    NeedsLock,
}

/// The fast path of [`authorize`]: one read, then the call, the agent's day count and the grace
/// mark in ONE statement (`call_authorize`'s trigger, schema.rs), guarded by [`CALL_STAMP`].
async fn authorize_unlocked<S: Storage>(
    db: &S,
    request: &CallRequest,
    priced: &Priced,
    real_now_secs: i64,
) -> Result<Unlocked> {
    let sql = format!(
        "SELECT {WORKSPACE_COLUMNS}, {AGENT_COLUMNS}, {CALL_STAMP}, {CURRENT_VERSION}
         FROM workspaces LEFT JOIN agents a ON a.workspace_id = workspaces.id AND a.agent_id = ?2
         WHERE workspaces.id = ?1",
        WORKSPACE_COLUMNS = workspace::WORKSPACE_COLUMNS,
        AGENT_COLUMNS = agents::AGENT_COLUMNS,
        CURRENT_VERSION = catalog::CURRENT_VERSION,
    );
    let params = [
        t(&request.workspace_id),
        t(&request.agent_id),
        t(&request.call_id),
        i(real_now_secs),
    ];
    let rows = db.query(&sql, &params).await?;
    // An unknown workspace: the transactional path tells a conflicting call id from a 404.
    let Some(row) = rows.first() else {
        return Ok(Unlocked::NeedsLock);
    };
    let stamp_first = workspace::WORKSPACE_COLUMN_COUNT + agents::AGENT_COLUMN_COUNT;
    let stamp = guarded::stamp_of(row, stamp_first, CALL_STAMP_COLUMN_COUNT)?;
    // The stored catalog version, read with the state: a cached catalog needs no query of its own.
    if int(row, stamp_first + CALL_STAMP_COLUMN_COUNT)? != priced.catalog_version {
        return Err(LedgerError::CatalogChanged);
    }
    let needs_lock = |value: &crate::SqlValue| *value != crate::SqlValue::Integer(0);
    if stamp[CALL_STAMP_COLUMN_COUNT - 2..].iter().any(needs_lock) {
        return Ok(Unlocked::NeedsLock);
    }
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
    let guard = guarded::guard_params(priced.catalog_version, stamp);
    let (sql, params) = hold_write(
        request,
        priced,
        &ws,
        &agent,
        (funding, grace, now),
        real_now_secs,
        Some(guard),
    );
    Ok(match guarded::write(db, &sql, &params).await? {
        Some(_) => Unlocked::Done(authorized(request, funding, grace)),
        None => Unlocked::Raced,
    })
}

/// A decided authorization's ONE statement: a row into the view `call_authorize`, whose trigger
/// (schema.rs) inserts the call (its hold trigger adds the hold to the workspace), counts it in
/// the agent's day and starts the grace period: at once for a grace call, else if the hold left
/// nothing available. With `guard` ([`guarded::guard_params`]) the row is selected only if
/// nothing the decision read has changed; without, the caller holds the write lock.
fn hold_write(
    request: &CallRequest,
    priced: &Priced,
    ws: &WorkspaceState,
    agent: &AgentState,
    (funding, grace, now): (Funding, bool, i64),
    real_now_secs: i64,
    guard: Option<Vec<crate::SqlValue>>,
) -> (String, Vec<crate::SqlValue>) {
    let condition = match guard {
        Some(_) => format!(
            "WHERE {}",
            guarded::unchanged(CALL_STAMP, CALL_STAMP_COLUMN_COUNT, CALL_GUARD_FIRST_PARAM)
        ),
        None => String::new(),
    };
    let sql = format!(
        "INSERT INTO call_authorize (call_id, workspace_id, agent_id, direction, to_number,
             from_number, number_type, rate_micros, increment_secs, minimum_secs, grace,
             reserved_secs, held_plan_micros, held_wallet_micros, request_hash, started_at,
             expires_at, spend_cycle_start_at, call_day)
         SELECT ?3, ?1, ?2, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
             ?20
         {condition}
         RETURNING grace"
    );
    // ?1-?4 as in `CALL_STAMP` (?4, the real time, only the guard reads).
    let mut params = vec![
        t(&ws.id),
        t(&agent.agent_id),
        t(&request.call_id),
        i(real_now_secs),
        t(request.direction.as_str()),
        t(&request.to),
        t(&request.from),
        t(priced.number_type.as_str()),
        i(priced.rate.per_minute_micros),
        i(priced.rate.increment_secs),
        i(priced.rate.minimum_secs),
        i(i64::from(grace)),
        i(priced.first_secs),
        i(funding.from_plan_micros),
        i(funding.from_wallet_micros),
        t(priced.fingerprint.stored()),
        i(now),
        i(now + priced.hold_timeout_secs),
        i(ws.cycle_start_at.unwrap_or(0)),
        t(&agent.today),
    ];
    params.extend(guard.into_iter().flatten());
    (sql, params)
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

/// Extends a call's hold to cover the next increment after `elapsed_secs`. If the agent cannot
/// afford it (or the grace period is over), answers `continue: false` with the reason.
pub async fn heartbeat<S: Storage>(
    db: &S,
    catalog: &Catalog,
    call_id: &str,
    elapsed_secs: i64,
    real_now_secs: i64,
) -> Result<Heartbeat> {
    if !(0..=86_400).contains(&elapsed_secs) {
        return Err(LedgerError::invalid(
            "validation_error",
            "elapsed_seconds",
            "elapsed_seconds must be 0..86400",
        ));
    }
    let hold_timeout_secs = i64::from(catalog.settings().hold_timeout_secs);
    let grace_secs = i64::from(catalog.settings().inbound_grace_secs);
    tx::immediate(db, async |db| {
        let call = load_call(db, call_id).await?;
        let stopped = |reason: &str, held: i64| Heartbeat { continue_call: false, reason: Some(reason.into()), held: money::to_decimal(held) };
        if call.status != "active" {
            return Ok(stopped("call_not_active", 0));
        }
        let ws = workspace::get(db, &call.workspace_id).await?;
        let now = ws.now(real_now_secs);
        if expire_overdue(db, Some(&ws.id), now, EXPIRY_BATCH_MAX).await? > 0 && load_call(db, call_id).await?.status != "active" {
            return Ok(stopped("hold_expired", 0));
        }
        let needed_secs = call.rate.billed_secs(elapsed_secs) + call.rate.increment_secs;
        let mut held_plan = call.held_plan_micros;
        let mut held_wallet = call.held_wallet_micros;
        let mut reason = None;
        if call.grace {
            if ws.exhausted_at.is_some_and(|since| now >= since + grace_secs) {
                reason = Some(LedgerError::InsufficientFunds.code());
            }
        } else if needed_secs > call.reserved_secs {
            let extra = call.rate.charge_for_secs(needed_secs) - call.rate.charge_for_secs(call.reserved_secs);
            let agent = agents::load(db, &ws, &call.agent_id, now).await?;
            match agents::fund(&ws, &agent, extra) {
                Ok(funding) => {
                    held_plan += funding.from_plan_micros;
                    held_wallet += funding.from_wallet_micros;
                }
                Err(refused) => reason = Some(refused.code()),
            }
        }
        let reserved = if reason.is_none() { needed_secs.max(call.reserved_secs) } else { call.reserved_secs };
        db.execute(
            "UPDATE calls SET held_plan_micros = ?2, held_wallet_micros = ?3, reserved_secs = ?4, expires_at = ?5
             WHERE call_id = ?1",
            &[t(call_id), i(held_plan), i(held_wallet), i(reserved), i(now + hold_timeout_secs)],
        )
        .await?;
        workspace::mark_exhausted_if_empty(db, &ws.id, now).await?;
        Ok(Heartbeat {
            continue_call: reason.is_none(),
            reason: reason.map(str::to_owned),
            held: money::to_decimal(held_plan + held_wallet),
        })
    })
    .await
}

/// Ends a call: posts its charge for `duration_secs` and releases the hold. Replaying the same
/// end returns the posted charge; an end with another duration is a conflict.
pub async fn end<S: Storage>(
    db: &S,
    call_id: &str,
    duration_secs: i64,
    real_now_secs: i64,
) -> Result<CallPosted> {
    if !(0..=86_400).contains(&duration_secs) {
        return Err(LedgerError::invalid(
            "validation_error",
            "duration_seconds",
            "duration_seconds must be 0..86400",
        ));
    }
    tx::immediate(db, async |db| {
        let call = load_call(db, call_id).await?;
        if call.status == "active" {
            let ws = workspace::get(db, &call.workspace_id).await?;
            let now = ws.now(real_now_secs);
            return post_call(db, &ws, &call, duration_secs, "ended", now).await;
        }
        if call.status == "ended" && call.duration_secs != Some(duration_secs) {
            return Err(LedgerError::Conflict {
                code: "call_already_ended",
                message: "This call already ended with another duration.".into(),
            });
        }
        posted_view(db, &call).await
    })
    .await
}

/// Posts a call at `duration_secs`: the charge is capped at what the hold plus the agent's policy
/// and limits allow; the rest is recorded as unbilled. A grace call may take the wallet negative.
async fn post_call<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    call: &CallRow,
    duration_secs: i64,
    status: &str,
    now: i64,
) -> Result<CallPosted> {
    let billed_secs = call.rate.billed_secs(duration_secs);
    let cost = call.rate.charge_for_secs(billed_secs);
    let agent = agents::load(db, ws, &call.agent_id, now).await?;
    let funding = funding_for_posting(ws, &agent, call, cost);
    let posted = post::post(
        db,
        &ws.id,
        &Entry {
            kind: "call",
            agent_id: Some(&call.agent_id),
            reference: Some(&call.call_id),
            quantity_micros: Some(billed_secs * money::MICROS_PER_UNIT),
            unit: Some("second"),
            rate_micros: Some(call.rate.per_minute_micros),
            plan_delta_micros: -funding.from_plan_micros,
            wallet_delta_micros: -funding.from_wallet_micros,
            occurred_at: now,
            description: Some(if call.direction == "inbound" {
                "inbound call"
            } else {
                "outbound call"
            }),
        },
        now,
    )
    .await?;
    let unbilled = cost - funding.total();
    db.execute(
        "UPDATE calls SET status = ?2, held_plan_micros = 0, held_wallet_micros = 0, ended_at = ?3,
             duration_secs = ?4, charged_micros = ?5, unbilled_micros = ?6, transaction_id = ?7
         WHERE call_id = ?1 AND status = 'active'",
        &[
            t(&call.call_id),
            t(status),
            i(now),
            i(duration_secs),
            i(funding.total()),
            i(unbilled),
            i(posted.transaction_id),
        ],
    )
    .await?;
    agents::record_use(db, ws, &agent, funding.total(), 0, now).await?;
    workspace::mark_exhausted_if_empty(db, &ws.id, now).await?;
    Ok(CallPosted {
        call_id: call.call_id.clone(),
        status: status.into(),
        duration_seconds: duration_secs,
        billed_seconds: billed_secs,
        charged: money::to_decimal(funding.total()),
        from_plan: money::to_decimal(funding.from_plan_micros),
        from_wallet: money::to_decimal(funding.from_wallet_micros),
        unbilled: money::to_decimal(unbilled),
        wallet_balance: money::to_decimal(posted.wallet_after_micros),
        plan_credits_remaining: money::to_decimal(posted.plan_after_micros),
    })
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
/// Runs inside the caller's transaction when called from one.
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
        "workspace_id = ?2"
    } else {
        "?2 IS NULL"
    };
    let sql = format!(
        "SELECT {CALL_COLUMNS} FROM calls c WHERE status = 'active' AND {filter}
           AND expires_at <= COALESCE((SELECT test_clock_at FROM workspaces w WHERE w.id = c.workspace_id), ?1)
         ORDER BY expires_at LIMIT ?3"
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
        let call = call_from_row(row)?;
        let ws = workspace::get(db, &call.workspace_id).await?;
        // Each hold expires at its own workspace's time (a test clock, or the real time).
        post_call(
            db,
            &ws,
            &call,
            call.reserved_secs,
            "expired",
            ws.now(now_secs),
        )
        .await?;
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
