//! A call's authorization (R5, R6, R7): priced before any storage access, then one read and one
//! guarded write; a replay, overdue holds to post first, or two lost races take the locked path.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::agents::{self, AgentColumns, AgentState, Funding};
use crate::catalog::{self, CallRate, Catalog, Direction, NumberType};
use crate::fingerprint::Fingerprint;
use crate::grants::{self, Spendable};
use crate::guarded::{self, Attempt, Read, view_row};
use crate::money;
use crate::row::{self, i, read_row, t};
use crate::storage::Storage;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, LimitKind, Result};

use super::expiry::expire_overdue;
use super::read::find_call;
use super::{CallAuthorized, CallRequest};

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
    grants: &[Spendable],
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
    match agents::fund(ws, agent, grants, "call", now, priced.hold_micros) {
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

fn authorized(request: &CallRequest, funding: &Funding, grace: bool) -> CallAuthorized {
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

read_row! {
    /// A row of [`AUTHORIZE_READ`]: besides the workspace, the agent, the grants that may pay
    /// (read only if the workspace has live ones) and the catalog version, two
    /// flags send the authorization to the transactional path: the call id already exists (a
    /// replay or a conflict), or the workspace has overdue holds to post first.
    struct AuthorizeRead in "" {
        ws: WorkspaceState,
        agent: AgentColumns,
        grants: Option<String> = grants::SPENDABLE_COLUMN.as_str(),
        call_exists: bool = "EXISTS (SELECT 1 FROM calls WHERE call_id = ?3)",
        holds_overdue: bool = "EXISTS (SELECT 1 FROM calls c WHERE c.workspace_id = ?1
             AND c.status = 'active' AND c.expires_at <= COALESCE(workspaces.test_clock_at, ?4))",
        catalog_version: i64 = catalog::CURRENT_VERSION,
    }
}

/// An authorization's read: `?1` the workspace, `?2` the agent, `?3` the call id, `?4` the real
/// time; its row is an [`AuthorizeRead`].
static AUTHORIZE_READ: LazyLock<Read> = LazyLock::new(|| {
    Read::of::<AuthorizeRead>(
        0,
        format!(
            "FROM {} JOIN workspaces ON workspaces.id = k.workspace_id
             LEFT JOIN agents a ON a.workspace_id = k.workspace_id AND a.agent_id = k.agent_id",
            guarded::keys_row(&["workspace_id", "agent_id"]),
        ),
        4,
    )
});

view_row! {
    /// A decided authorization: a row of the view `call_authorize`, whose trigger (schema.rs)
    /// inserts the call (its hold trigger adds the hold to the workspace's and the agent's
    /// counters), counts it in the agent's day and starts the grace period: at once for a grace
    /// call, else if the hold left nothing available.
    pub(super) struct HoldRow in "call_authorize" {
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
        held_grant_micros: i64,
        held_grants: Option<String>,
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
    let read: AuthorizeRead = row::decode_row(row)?;
    // The stored catalog version, read with the state: a cached catalog needs no query of its own.
    if read.catalog_version != priced.catalog_version {
        return Err(LedgerError::CatalogChanged);
    }
    if read.call_exists || read.holds_overdue {
        return Ok(Attempt::NeedsLock);
    }
    let (hold, answer) = decide_hold(&read, request, priced, real_now_secs)?;
    let stamp = AUTHORIZE_READ.stamp_of(row)?;
    let (sql, params) = guarded::insert(&[hold], Some((&AUTHORIZE_READ, &params, &stamp)))?;
    Ok(match guarded::write(db, &sql, &params).await? {
        Some(_) => Attempt::Done(answer),
        None => Attempt::Raced,
    })
}

/// [`authorize`] under the write lock: the same read, then a replay's answer, the workspace's
/// overdue holds posted (`expiry.rs`) and read again, and the same decision and write, unguarded.
async fn authorize_locked<S: Storage>(
    db: &S,
    catalog: &Catalog,
    request: &CallRequest,
    priced: &Priced,
    real_now_secs: i64,
) -> Result<CallAuthorized> {
    let params = authorize_params(request, real_now_secs);
    let mut read = read_locked(db, &params).await?;
    // A call id already used, in this workspace or any other, is answered as the call is: a
    // replay, or a conflict (before any other check, so a replay's answer never changes).
    let call_exists = read.as_ref().is_none_or(|read| read.call_exists);
    if call_exists && let Some(existing) = find_call(db, &request.call_id).await? {
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
    let Some(first) = &read else {
        catalog::ensure_current(db, catalog).await?;
        return Err(LedgerError::NotFound { what: "workspace" });
    };
    if first.catalog_version != priced.catalog_version {
        return Err(LedgerError::CatalogChanged);
    }
    if first.holds_overdue {
        let ws = &first.ws;
        if ws.plan_id.is_none() {
            return Err(LedgerError::BillingNotConfigured);
        }
        // The other calls' overdue holds are posted here, in this transaction, and not by an
        // operation of their own before it: a refused authorization writes nothing (R5's holds
        // stay as they were until the sweep), and the fast path, which sends a workspace with
        // overdue holds here, then writes exactly what this path writes (tests/one_statement.rs).
        // Posting them moves balances and holds: the decision is made on the state read again.
        expire_overdue(db, &ws.id, ws.now(real_now_secs)).await?;
        read = read_locked(db, &params).await?;
    }
    let read = read.ok_or(LedgerError::NotFound { what: "workspace" })?;
    let (hold, answer) = decide_hold(&read, request, priced, real_now_secs)?;
    let (sql, params) = guarded::insert(&[hold], None)?;
    db.execute(&sql, &params).await?;
    Ok(answer)
}

/// [`AUTHORIZE_READ`] under the write lock: its row, if the workspace exists.
async fn read_locked<S: Storage>(
    db: &S,
    params: &[crate::SqlValue],
) -> Result<Option<AuthorizeRead>> {
    let rows = db.query(&AUTHORIZE_READ.sql(), params).await?;
    rows.first().map(row::decode_row).transpose()
}

/// Decides an authorization from its read: the row to write and the answer.
fn decide_hold(
    read: &AuthorizeRead,
    request: &CallRequest,
    priced: &Priced,
    real_now_secs: i64,
) -> Result<(HoldRow, CallAuthorized)> {
    let ws = &read.ws;
    if ws.plan_id.is_none() {
        return Err(LedgerError::BillingNotConfigured);
    }
    let now = ws.now(real_now_secs);
    let agent = read.agent.state(ws, &request.agent_id, now)?;
    let grants = grants::spendable(read.grants.as_deref())?;
    let (funding, grace) = decide(ws, &agent, &grants, request, priced, now)?;
    let held_grants: BTreeMap<String, i64> = funding
        .from_grants
        .iter()
        .map(|draw| (draw.grant_id.clone(), draw.micros))
        .collect();
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
        held_grant_micros: funding.grants_micros(),
        held_grants: grants::holds_column(&held_grants),
    };
    Ok((hold, authorized(request, &funding, grace)))
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
