//! Credit grants (docs/grants.md): credits a platform gives a workspace outside the plan and the
//! wallet (a sign-up bonus, credits back after an outage, a contract's prepaid block), each with
//! a category, a priority, an optional start and expiry, and an optional scope.
//!
//! A grant's remaining balance moves only through its entries (`grant_entries`, schema V17), as a
//! workspace's balances move only through the journal: `granted` when it is made, `expired` at
//! its expiry (the sweep, [`expire_due`]), `voided` when the platform takes it back ([`void`]).
//! Reads apply an expiry the sweep has not posted yet, so a grant never shows credits that have
//! expired. Granting is idempotent by the request's key.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar;
use crate::catalog::UsageKind;
use crate::fingerprint::{Fingerprint, sha256_hex};
use crate::money;
use crate::row::{self, i, oi, ot, read_row, t};
use crate::storage::Storage;
use crate::tx;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, Result};

/// Lowest and highest priority; lower is spent first.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = 0..=100;
/// The priority of a grant that names none.
pub const PRIORITY_DEFAULT: i64 = 50;
/// Most metadata pairs a grant keeps.
pub const METADATA_PAIRS_MAX: usize = 20;
/// Longest metadata key, in bytes.
pub const METADATA_KEY_MAX: usize = 40;
/// Longest metadata value, in bytes.
pub const METADATA_VALUE_MAX: usize = 500;
/// Longest name, in characters.
pub const NAME_MAX: usize = 200;
/// Longest idempotency key, in bytes.
pub const KEY_MAX: usize = 255;
/// Most grants one sweep expires; the next sweep goes on.
pub const EXPIRY_SWEEP_MAX: i64 = 500;
/// Largest page of a grants list.
pub const PAGE_LIMIT_MAX: i64 = 100;
/// Default page of a grants list.
pub const PAGE_LIMIT_DEFAULT: i64 = 50;

/// Why a grant was given: for nothing, or sold outside Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantCategory {
    /// Given: a bonus, a goodwill credit, a trial.
    Promotional,
    /// Sold outside Stripe (a contract's prepaid block), with its cost basis.
    Paid,
}

impl GrantCategory {
    fn as_str(self) -> &'static str {
        match self {
            Self::Promotional => "promotional",
            Self::Paid => "paid",
        }
    }
}

/// Where a grant stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Not effective yet: listed, neither available nor spent.
    Scheduled,
    /// Effective, with credits left.
    Active,
    /// Effective, nothing left.
    Depleted,
    /// Past its expiry.
    Expired,
    /// Taken back by the platform.
    Voided,
}

/// What a grant may pay for. Without a scope it pays for everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantScope {
    /// The usage kinds it pays for; every kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<UsageKind>>,
    /// The one agent it pays for; every agent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// The body of `POST /v1/grants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// The workspace it is given to.
    pub workspace_id: String,
    /// Credits, > 0, at most 6 decimals.
    pub amount: Decimal,
    /// `promotional` or `paid`.
    pub category: GrantCategory,
    /// `paid` only, required there: what the customer paid for it, in the catalog's currency.
    #[serde(default)]
    pub cost_basis: Option<Decimal>,
    /// 0-100, lower is spent first; 50 when absent.
    #[serde(default)]
    pub priority: Option<i64>,
    /// RFC 3339; from now when absent. A future time schedules it.
    #[serde(default)]
    pub effective_at: Option<String>,
    /// RFC 3339, later than now and than `effective_at`; never when absent.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// What it may pay for; everything when absent.
    #[serde(default)]
    pub scope: Option<GrantScope>,
    /// What the owner sees it as.
    pub name: String,
    /// The platform's string pairs, kept as given.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A grant as the API shows it, at the time it was read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grant {
    /// `gr_` and 32 hex digits.
    pub id: String,
    /// Its workspace.
    pub workspace_id: String,
    /// What the owner sees it as.
    pub name: String,
    /// `promotional` or `paid`.
    pub category: GrantCategory,
    /// A paid grant's cost basis, in the catalog's currency.
    pub cost_basis: Option<Decimal>,
    /// Lower is spent first.
    pub priority: i64,
    /// Credits granted.
    pub amount: Decimal,
    /// Credits left: an expiry or a voiding takes all but what calls in progress hold.
    pub remaining: Decimal,
    /// Credits reserved on it by calls in progress.
    pub held: Decimal,
    /// Where it stands.
    pub status: GrantStatus,
    /// When it became (or becomes) spendable.
    pub effective_at: String,
    /// When it expires; never if null.
    pub expires_at: Option<String>,
    /// What it may pay for; everything if null.
    pub scope: Option<GrantScope>,
    /// The platform's pairs.
    pub metadata: BTreeMap<String, String>,
    /// When it was granted.
    pub created_at: String,
    /// When it was voided.
    pub voided_at: Option<String>,
}

/// A page of grants, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrantPage {
    /// The grants.
    pub grants: Vec<Grant>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

read_row! {
    /// A stored grant, as every read of one selects it.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct GrantRow in "grants" {
        pub id: String,
        pub workspace_id: String,
        pub request_hash: String,
        pub name: String,
        pub category: String,
        pub cost_basis_money_micros: Option<i64> = row::Column("cost_basis_micros"),
        pub priority: i64,
        pub effective_at: i64,
        pub expires_at: Option<i64>,
        pub scope_kinds: Option<String>,
        pub scope_agent_id: Option<String>,
        pub metadata: String,
        pub amount_credits_micros: i64 = row::Column("amount_micros"),
        pub remaining_micros: i64,
        pub held_micros: i64,
        pub voided_at: Option<i64>,
        pub created_at: i64,
    }
}

static GRANT_COLUMNS: LazyLock<String> = LazyLock::new(|| row::select_list::<GrantRow>(true));

impl GrantRow {
    /// Whether it is past its expiry at `now_secs`.
    pub(crate) fn expired_at(&self, now_secs: i64) -> bool {
        self.expires_at
            .is_some_and(|expires_at| expires_at <= now_secs)
    }

    /// What it has left at `now_secs`: an expiry the sweep has not posted yet already took all
    /// but what calls hold (and a voiding took it when it was voided).
    pub(crate) fn remaining_at(&self, now_secs: i64) -> i64 {
        if self.expired_at(now_secs) {
            self.held_micros
        } else {
            self.remaining_micros
        }
    }

    /// Where it stands at `now_secs`.
    pub(crate) fn status_at(&self, now_secs: i64) -> GrantStatus {
        if self.voided_at.is_some() {
            GrantStatus::Voided
        } else if self.expired_at(now_secs) {
            GrantStatus::Expired
        } else if self.effective_at > now_secs {
            GrantStatus::Scheduled
        } else if self.remaining_micros == 0 {
            GrantStatus::Depleted
        } else {
            GrantStatus::Active
        }
    }

    fn view(&self, now_secs: i64) -> Result<Grant> {
        let category = match self.category.as_str() {
            "paid" => GrantCategory::Paid,
            "promotional" => GrantCategory::Promotional,
            other => return Err(stored(&format!("a grant of category {other:?}"))),
        };
        let kinds = self
            .scope_kinds
            .as_deref()
            .map(serde_json::from_str::<Vec<UsageKind>>)
            .transpose()
            .map_err(|e| stored(&format!("a grant's scope: {e}")))?;
        let scope = (kinds.is_some() || self.scope_agent_id.is_some()).then(|| GrantScope {
            kinds,
            agent_id: self.scope_agent_id.clone(),
        });
        let metadata = serde_json::from_str(&self.metadata)
            .map_err(|e| stored(&format!("a grant's metadata: {e}")))?;
        Ok(Grant {
            id: self.id.clone(),
            workspace_id: self.workspace_id.clone(),
            name: self.name.clone(),
            category,
            cost_basis: self.cost_basis_money_micros.map(money::to_decimal),
            priority: self.priority,
            amount: money::to_decimal(self.amount_credits_micros),
            remaining: money::to_decimal(self.remaining_at(now_secs)),
            held: money::to_decimal(self.held_micros),
            status: self.status_at(now_secs),
            effective_at: calendar::rfc3339(self.effective_at),
            expires_at: self.expires_at.map(calendar::rfc3339),
            scope,
            metadata,
            created_at: calendar::rfc3339(self.created_at),
            voided_at: self.voided_at.map(calendar::rfc3339),
        })
    }
}

fn stored(what: &str) -> LedgerError {
    LedgerError::Storage(crate::StorageError::from_sqlite_message(format!(
        "unreadable: {what}"
    )))
}

/// A grant's terms once checked: what is stored, and what a retry is compared with.
#[derive(Debug, Serialize)]
struct Terms {
    workspace_id: String,
    name: String,
    category: &'static str,
    cost_basis_money_micros: Option<i64>,
    priority: i64,
    /// As requested: absent means "from when it was granted", which a retry must not change.
    effective_at: Option<i64>,
    expires_at: Option<i64>,
    scope_kinds: Option<Vec<&'static str>>,
    scope_agent_id: Option<String>,
    metadata: BTreeMap<String, String>,
    /// Named as the column (and as the fingerprints of grants made before the rename have it).
    #[serde(rename = "amount_micros")]
    amount_credits_micros: i64,
}

/// Checks `input`: every refusal names its field. What depends on the time (an expiry still to
/// come) is [`Terms::check_at`]'s, for a new grant only: a retry of one made before its expiry
/// answers it whenever it comes.
fn terms_of(input: &GrantInput) -> Result<Terms> {
    let invalid = |field, message: &str| LedgerError::invalid("validation_error", field, message);
    let amount_credits_micros = money::decimal_to_micros("amount", input.amount, false)?;
    let cost_basis_money_micros = match (input.category, input.cost_basis) {
        (GrantCategory::Paid, Some(cost)) => {
            Some(money::decimal_to_micros("cost_basis", cost, true)?)
        }
        (GrantCategory::Paid, None) => {
            return Err(invalid("cost_basis", "a paid grant needs its cost_basis"));
        }
        (GrantCategory::Promotional, Some(_)) => {
            return Err(invalid("cost_basis", "only a paid grant has a cost_basis"));
        }
        (GrantCategory::Promotional, None) => None,
    };
    let priority = input.priority.unwrap_or(PRIORITY_DEFAULT);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(invalid("priority", "priority must be 0 to 100"));
    }
    let effective_at = input
        .effective_at
        .as_deref()
        .map(|text| calendar::parse_rfc3339("effective_at", text))
        .transpose()?;
    let expires_at = input
        .expires_at
        .as_deref()
        .map(|text| calendar::parse_rfc3339("expires_at", text))
        .transpose()?;
    if let (Some(expires_at), Some(effective_at)) = (expires_at, effective_at)
        && expires_at <= effective_at
    {
        return Err(invalid(
            "expires_at",
            "expires_at must be later than now and than effective_at",
        ));
    }
    let scope = input.scope.as_ref();
    let scope_kinds = match scope.and_then(|scope| scope.kinds.as_ref()) {
        Some(kinds) if kinds.is_empty() => {
            return Err(invalid(
                "scope.kinds",
                "scope.kinds lists at least one usage kind (omit it for every kind)",
            ));
        }
        Some(kinds) => {
            let mut names: Vec<&'static str> = kinds.iter().map(|kind| kind.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            Some(names)
        }
        None => None,
    };
    let scope_agent_id = scope.and_then(|scope| scope.agent_id.clone());
    if let Some(agent_id) = &scope_agent_id {
        workspace::validate_id("scope.agent_id", agent_id)?;
    }
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX {
        return Err(invalid("name", "name must be 1 to 200 characters"));
    }
    if input.metadata.len() > METADATA_PAIRS_MAX {
        return Err(invalid("metadata", "metadata holds at most 20 pairs"));
    }
    if input.metadata.iter().any(|(key, value)| {
        key.is_empty() || key.len() > METADATA_KEY_MAX || value.len() > METADATA_VALUE_MAX
    }) {
        return Err(invalid(
            "metadata",
            "metadata keys are 1 to 40 bytes and values at most 500",
        ));
    }
    Ok(Terms {
        workspace_id: input.workspace_id.clone(),
        name: name.to_owned(),
        category: input.category.as_str(),
        cost_basis_money_micros,
        priority,
        effective_at,
        expires_at,
        scope_kinds,
        scope_agent_id,
        metadata: input.metadata.clone(),
        amount_credits_micros,
    })
}

impl Terms {
    /// Refuses a grant that would be born expired at `now_secs` (the workspace's time).
    fn check_at(&self, now_secs: i64) -> Result<()> {
        match self.expires_at {
            Some(expires_at) if expires_at <= now_secs => Err(LedgerError::invalid(
                "validation_error",
                "expires_at",
                "expires_at must be later than now and than effective_at",
            )),
            _ => Ok(()),
        }
    }
}

/// The id a grant made with `key` in `workspace_id` has: the same key grants once.
fn grant_id(workspace_id: &str, key: &str) -> String {
    let hash = sha256_hex(&[workspace_id.as_bytes(), key.as_bytes()]);
    format!("gr_{}", &hash[..32])
}

/// Gives `input.workspace_id` a grant, once per `key` (the request's `Idempotency-Key`): a retry
/// with the same key and terms answers the grant it made (`false`: nothing new), with other
/// terms 409 `idempotency_conflict`. Refusals write nothing.
pub async fn create<S: Storage>(
    db: &S,
    key: &str,
    input: &GrantInput,
    real_now_secs: i64,
) -> Result<(Grant, bool)> {
    if key.is_empty() || key.len() > KEY_MAX {
        return Err(LedgerError::invalid(
            "validation_error",
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 bytes",
        ));
    }
    workspace::validate_id("workspace_id", &input.workspace_id)?;
    tx::immediate(db, async |db| {
        let ws = workspace::get(db, &input.workspace_id).await?;
        let now = ws.now(real_now_secs);
        let terms = terms_of(input)?;
        let fingerprint = Fingerprint::of("grant", &terms)?;
        let id = grant_id(&ws.id, key);
        if let Some(existing) = find(db, &id).await? {
            if !fingerprint.matches(&existing.request_hash) {
                return Err(LedgerError::IdempotencyConflict);
            }
            return Ok((existing.view(now)?, false));
        }
        terms.check_at(now)?;
        insert(db, &ws, &id, &terms, fingerprint.stored(), now).await?;
        let made = find(db, &id)
            .await?
            .ok_or_else(|| stored("a grant just inserted"))?;
        Ok((made.view(now)?, true))
    })
    .await
}

/// Inserts the grant (nothing left) and its `granted` entry (which gives it its amount).
async fn insert<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    id: &str,
    terms: &Terms,
    request_hash: &str,
    now: i64,
) -> Result<()> {
    let scope_kinds = terms
        .scope_kinds
        .as_ref()
        .map(|kinds| serde_json::json!(kinds).to_string());
    let metadata = serde_json::json!(terms.metadata).to_string();
    db.execute(
        "INSERT INTO grants (id, workspace_id, request_hash, name, category, cost_basis_micros,
                             priority, effective_at, expires_at, scope_kinds, scope_agent_id,
                             metadata, amount_micros, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        &[
            t(id),
            t(&ws.id),
            t(request_hash),
            t(&terms.name),
            t(terms.category),
            oi(terms.cost_basis_money_micros),
            i(terms.priority),
            i(terms.effective_at.unwrap_or(now)),
            oi(terms.expires_at),
            ot(scope_kinds.as_deref()),
            ot(terms.scope_agent_id.as_deref()),
            t(metadata),
            i(terms.amount_credits_micros),
            i(now),
        ],
    )
    .await?;
    post_entries(
        db,
        &[Entry {
            grant_id: id,
            workspace_id: &ws.id,
            kind: "granted",
            amount_credits_micros: terms.amount_credits_micros,
            remaining_after_micros: terms.amount_credits_micros,
            created_at: now,
        }],
    )
    .await?;
    workspace::after_grant(db, &ws.id, now).await
}

/// One movement of a grant's remaining, as `grant_entries` stores it (a spending entry names its
/// history row, and is written with it: not here).
struct Entry<'a> {
    grant_id: &'a str,
    workspace_id: &'a str,
    kind: &'static str,
    amount_credits_micros: i64,
    remaining_after_micros: i64,
    created_at: i64,
}

/// Posts `entries` in ONE statement (their triggers move each grant's remaining and check it).
async fn post_entries<S: Storage>(db: &S, entries: &[Entry<'_>]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!([
                e.grant_id,
                e.workspace_id,
                e.kind,
                e.amount_credits_micros,
                e.remaining_after_micros,
                e.created_at
            ])
        })
        .collect();
    db.execute(
        "INSERT INTO grant_entries (grant_id, workspace_id, kind, amount_micros,
                                    remaining_after_micros, created_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
         FROM json_each(?1)",
        &[t(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

/// The grant `id`, if there is one.
async fn find<S: Storage>(db: &S, id: &str) -> Result<Option<GrantRow>> {
    let sql = format!("SELECT {} FROM grants WHERE grants.id = ?1", *GRANT_COLUMNS);
    let rows = db.query(&sql, &[t(id)]).await?;
    rows.first().map(row::decode_row).transpose()
}

/// The expiry entry a grant past its expiry at `now` still owes: its unheld part.
fn expiry_owed<'a>(grant: &'a GrantRow, now: i64) -> Option<Entry<'a>> {
    let unheld = grant.remaining_micros - grant.held_micros;
    (grant.expired_at(now) && unheld > 0).then(|| Entry {
        grant_id: &grant.id,
        workspace_id: &grant.workspace_id,
        kind: "expired",
        amount_credits_micros: -unheld,
        remaining_after_micros: grant.held_micros,
        created_at: now,
    })
}

/// Voids the grant `grant_id`: its unspent part not held by calls in progress leaves with a
/// `voided` entry (what a call holds leaves when the call ends); what was spent stays spent.
/// Voiding a voided grant changes nothing and answers it. A grant already past its expiry has
/// its expiry posted first: what left, left by expiring.
pub async fn void<S: Storage>(db: &S, grant_id: &str, real_now_secs: i64) -> Result<Grant> {
    workspace::validate_id("grant_id", grant_id)?;
    tx::immediate(db, async |db| {
        let grant = find(db, grant_id)
            .await?
            .ok_or(LedgerError::NotFound { what: "grant" })?;
        let ws = workspace::get(db, &grant.workspace_id).await?;
        let now = ws.now(real_now_secs);
        if grant.voided_at.is_some() {
            return grant.view(now);
        }
        let mut entries: Vec<Entry<'_>> = expiry_owed(&grant, now).into_iter().collect();
        let unheld = grant.remaining_micros - grant.held_micros;
        if entries.is_empty() && unheld > 0 {
            entries.push(Entry {
                grant_id: &grant.id,
                workspace_id: &grant.workspace_id,
                kind: "voided",
                amount_credits_micros: -unheld,
                remaining_after_micros: grant.held_micros,
                created_at: now,
            });
        }
        post_entries(db, &entries).await?;
        db.execute(
            "UPDATE grants SET voided_at = ?2 WHERE id = ?1",
            &[t(&grant.id), i(now)],
        )
        .await?;
        find(db, &grant.id)
            .await?
            .ok_or_else(|| stored("a grant just voided"))?
            .view(now)
    })
    .await
}

read_row! {
    /// A grant a sweep found due (`due_within`), with its workspace's time.
    struct DueGrant in "grants" {
        grant: GrantRow,
        now: i64 = "COALESCE(w.test_clock_at, ?1)",
    }
}

/// The grants with something unheld left that expire within `window_secs` of their workspace's
/// clock (0: that have expired), and meet `condition` (SQL, `grants` and its workspace `w`),
/// soonest first, at most [`EXPIRY_SWEEP_MAX`]. Found up to the latest clock of any workspace
/// (a test clock may run ahead of real time) through the index of grants with something unheld
/// left, then each on its own clock.
async fn due_within<S: Storage>(
    db: &S,
    window_secs: i64,
    condition: &str,
    real_now_secs: i64,
) -> Result<Vec<DueGrant>> {
    let sql = format!(
        "SELECT {} FROM grants JOIN workspaces w ON w.id = grants.workspace_id
         WHERE grants.expires_at IS NOT NULL
           AND grants.remaining_micros > grants.held_micros
           AND grants.expires_at <= MAX(?1, (SELECT COALESCE(MAX(test_clock_at), 0)
                                             FROM workspaces WHERE test_clock_at IS NOT NULL)) + ?3
           AND grants.expires_at <= COALESCE(w.test_clock_at, ?1) + ?3
           {condition}
         ORDER BY grants.expires_at LIMIT ?2",
        row::select_list::<DueGrant>(true)
    );
    let rows = db
        .query(
            &sql,
            &[i(real_now_secs), i(EXPIRY_SWEEP_MAX), i(window_secs)],
        )
        .await?;
    rows.iter().map(row::decode_row::<DueGrant>).collect()
}

/// Posts the expiry of grants past their `expires_at` (on each workspace's clock): the unspent
/// part not held by calls in progress leaves by an `expired` entry. At most
/// [`EXPIRY_SWEEP_MAX`] grants per pass, soonest expired first; returns how many it expired.
pub async fn expire_due<S: Storage>(db: &S, real_now_secs: i64) -> Result<usize> {
    tx::immediate(db, async |db| {
        let due = due_within(db, 0, "", real_now_secs).await?;
        let entries: Vec<Entry<'_>> = due
            .iter()
            .filter_map(|due| expiry_owed(&due.grant, due.now))
            .collect();
        post_entries(db, &entries).await?;
        Ok(entries.len())
    })
    .await
}

/// The grants of `workspace_id`, oldest first, `limit` (1 to [`PAGE_LIMIT_MAX`], default
/// [`PAGE_LIMIT_DEFAULT`]) at a time after `cursor` (the last id of the page before), as they
/// stand on the workspace's clock.
pub async fn list<S: Storage>(
    db: &S,
    workspace_id: &str,
    limit: Option<i64>,
    cursor: Option<&str>,
    real_now_secs: i64,
) -> Result<GrantPage> {
    let limit = crate::views::page_limit(limit, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX)?;
    let bad_cursor =
        || crate::views::bad_query("cursor", "cursor is not a cursor this API returned");
    if let Some(cursor) = cursor {
        workspace::validate_id("cursor", cursor).map_err(|_| bad_cursor())?;
    }
    let ws = workspace::get(db, workspace_id).await?;
    let now = ws.now(real_now_secs);
    let after = match cursor {
        None => (i64::MIN, String::new()),
        Some(cursor) => match find(db, cursor).await? {
            Some(grant) if grant.workspace_id == ws.id => (grant.created_at, grant.id),
            _ => return Err(bad_cursor()),
        },
    };
    let sql = format!(
        "SELECT {} FROM grants
         WHERE grants.workspace_id = ?1 AND (grants.created_at, grants.id) > (?2, ?3)
         ORDER BY grants.created_at, grants.id LIMIT ?4",
        *GRANT_COLUMNS
    );
    let rows = db
        .query(&sql, &[t(&ws.id), i(after.0), t(after.1), i(limit + 1)])
        .await?;
    let mut grants = Vec::with_capacity(rows.len());
    for found in rows.iter().take(limit as usize) {
        grants.push(row::decode_row::<GrantRow>(found)?.view(now)?);
    }
    let next_cursor = if rows.len() as i64 > limit {
        grants.last().map(|grant| grant.id.clone())
    } else {
        None
    };
    Ok(GrantPage {
        grants,
        next_cursor,
    })
}

/// The grant `grant_id` as it stands now.
pub async fn get<S: Storage>(db: &S, grant_id: &str, real_now_secs: i64) -> Result<Grant> {
    workspace::validate_id("grant_id", grant_id)?;
    let grant = find(db, grant_id)
        .await?
        .ok_or(LedgerError::NotFound { what: "grant" })?;
    let ws = workspace::get(db, &grant.workspace_id).await?;
    grant.view(ws.now(real_now_secs))
}

/// A grant a debit may draw on, as a debit's read gives it ([`SPENDABLE_COLUMN`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spendable {
    pub id: String,
    /// Paid grants are the wallet's side of R6's `stop` (docs/grants.md, G1).
    pub paid: bool,
    pub priority: i64,
    pub effective_at: i64,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    /// Usage kinds it pays for (`UsageKind::as_str`); every kind when `None`.
    pub kinds: Option<Vec<String>>,
    pub agent_id: Option<String>,
    pub remaining_micros: i64,
    pub held_micros: i64,
    pub voided: bool,
}

/// The grants of the read's workspace that may have something to spend, as a JSON array (see
/// [`spendable`]), or NULL when the workspace has no live grant: then no grant is read at all,
/// and a debit costs what it cost before grants. Selected with the workspace (`workspaces`).
pub(crate) static SPENDABLE_COLUMN: LazyLock<String> = LazyLock::new(|| spendable_column(""));

/// [`SPENDABLE_COLUMN`] for a read of a call (`calls c`): with the grants the call holds, even
/// those with nothing more to give (fully held, expired or voided: what it holds is still its).
pub(crate) static CALL_GRANTS_COLUMN: LazyLock<String> = LazyLock::new(|| {
    spendable_column(
        "
          UNION SELECT * FROM grants s
          WHERE s.id IN (SELECT h.key FROM json_each(COALESCE(c.held_grants, '{}')) h)",
    )
});

fn spendable_column(or_held: &str) -> String {
    // The first part is the `grants_spendable` index's condition (schema V22), so that a debit
    // visits only grants that can give something; a call's own holds are id lookups.
    format!(
        "CASE WHEN workspaces.live_grants > 0 THEN (
    SELECT json_group_array(json_array(g.id, g.category = 'paid', g.priority, g.effective_at,
                                       g.expires_at, g.created_at, json(g.scope_kinds),
                                       g.scope_agent_id, g.remaining_micros, g.held_micros,
                                       g.voided_at IS NOT NULL))
    FROM (SELECT * FROM grants s
          WHERE s.workspace_id = workspaces.id AND s.remaining_micros > s.held_micros
            AND s.voided_at IS NULL{or_held}) g) END"
    )
}

/// The grants of [`SPENDABLE_COLUMN`] or [`CALL_GRANTS_COLUMN`], in the order they are spent: lower priority first, then
/// the soonest expiry (never last), then the oldest, then by id (docs/grants.md).
pub(crate) fn spendable(column: Option<&str>) -> Result<Vec<Spendable>> {
    type Read = (
        String,
        i64,
        i64,
        i64,
        Option<i64>,
        i64,
        Option<Vec<String>>,
        Option<String>,
        i64,
        i64,
        i64,
    );
    let Some(text) = column else {
        return Ok(Vec::new());
    };
    let read: Vec<Read> =
        serde_json::from_str(text).map_err(|e| stored(&format!("spendable grants: {e}")))?;
    let mut grants: Vec<Spendable> = read
        .into_iter()
        .map(
            |(
                id,
                paid,
                priority,
                effective_at,
                expires_at,
                created_at,
                kinds,
                agent_id,
                remaining_micros,
                held_micros,
                voided,
            )| {
                Spendable {
                    id,
                    paid: paid != 0,
                    priority,
                    effective_at,
                    expires_at,
                    created_at,
                    kinds,
                    agent_id,
                    remaining_micros,
                    held_micros,
                    voided: voided != 0,
                }
            },
        )
        .collect();
    grants.sort_by(|a, b| {
        (
            a.priority,
            a.expires_at.is_none(),
            a.expires_at,
            a.created_at,
            &a.id,
        )
            .cmp(&(
                b.priority,
                b.expires_at.is_none(),
                b.expires_at,
                b.created_at,
                &b.id,
            ))
    });
    Ok(grants)
}

impl Spendable {
    /// Whether it is in force at `now_secs`: started, not expired, not voided.
    pub(crate) fn in_force_at(&self, now_secs: i64) -> bool {
        !self.voided
            && self.effective_at <= now_secs
            && self.expires_at.is_none_or(|at| at > now_secs)
    }

    /// What it can give now to usage of `kind` by `agent_id`: its unheld part if it is in force
    /// and its scope covers the usage, else 0.
    pub(crate) fn available_for(&self, kind: &str, agent_id: &str, now_secs: i64) -> i64 {
        let covers = self
            .kinds
            .as_ref()
            .is_none_or(|kinds| kinds.iter().any(|k| k == kind))
            && self.agent_id.as_deref().is_none_or(|only| only == agent_id);
        if covers && self.in_force_at(now_secs) {
            (self.remaining_micros - self.held_micros).max(0)
        } else {
            0
        }
    }

    /// Whether it still pays for calls of any agent at `now_secs`: while one does, the
    /// workspace has not run out (R7; the schema's `grant_keeps_calls_going!`).
    pub(crate) fn keeps_calls_going(&self, now_secs: i64) -> bool {
        self.in_force_at(now_secs)
            && self.remaining_micros > self.held_micros
            && self.agent_id.is_none()
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.iter().any(|k| k == "call"))
    }
}

/// What a call holds of each grant, as `calls.held_grants` stores it (a JSON object of grant id
/// to micro-credits; NULL when it holds none).
pub(crate) fn holds_of(column: Option<&str>) -> Result<BTreeMap<String, i64>> {
    column.map_or_else(
        || Ok(BTreeMap::new()),
        |text| {
            serde_json::from_str(text).map_err(|e| stored(&format!("a call's grant holds: {e}")))
        },
    )
}

/// [`holds_of`]'s column for `holds`: NULL when it holds none.
pub(crate) fn holds_column(holds: &BTreeMap<String, i64>) -> Option<String> {
    (!holds.is_empty()).then(|| serde_json::json!(holds).to_string())
}

/// Most grants an owner's list shows (live ones; a workspace rarely has more than a few).
pub const OWNER_LIST_MAX: i64 = 100;

/// A grant as the workspace's owners and admins see it (the billing summary, `GET
/// /v1/workspaces/{ws}/grants`): what is left and when it expires; not the platform's metadata
/// nor the cost basis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnerGrant {
    /// `gr_...`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `promotional` or `paid`.
    pub category: GrantCategory,
    /// Credits granted.
    pub amount: Decimal,
    /// Credits left.
    pub remaining: Decimal,
    /// Credits reserved on it by calls in progress.
    pub held: Decimal,
    /// `active` or `scheduled`.
    pub status: GrantStatus,
    /// When it starts (or started).
    pub effective_at: String,
    /// When it expires; never if null.
    pub expires_at: Option<String>,
    /// Whole days until it expires, rounded up (1 on its last day); null if it never expires.
    pub expires_in_days: Option<i64>,
    /// What it pays for; everything if null.
    pub scope: Option<GrantScope>,
}

/// The grants of `ws` with something left at `now_secs` (active or scheduled), in the order
/// they are spent, at most [`OWNER_LIST_MAX`]. One query, through the workspace's grants index.
pub(crate) async fn live_of<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    now_secs: i64,
) -> Result<Vec<GrantRow>> {
    let sql = format!(
        "SELECT {} FROM grants
         WHERE grants.workspace_id = ?1 AND grants.remaining_micros > 0
           AND grants.voided_at IS NULL AND (grants.expires_at IS NULL OR grants.expires_at > ?2)
         ORDER BY grants.priority, grants.expires_at IS NULL, grants.expires_at,
                  grants.created_at, grants.id
         LIMIT ?3",
        *GRANT_COLUMNS
    );
    let rows = db
        .query(&sql, &[t(&ws.id), i(now_secs), i(OWNER_LIST_MAX)])
        .await?;
    rows.iter().map(row::decode_row).collect()
}

impl GrantRow {
    /// As an owner sees it at `now_secs`.
    pub(crate) fn for_owner(&self, now_secs: i64) -> Result<OwnerGrant> {
        let view = self.view(now_secs)?;
        Ok(OwnerGrant {
            id: view.id,
            name: view.name,
            category: view.category,
            amount: view.amount,
            remaining: view.remaining,
            held: view.held,
            status: view.status,
            effective_at: view.effective_at,
            expires_at: view.expires_at,
            expires_in_days: self.expires_at.map(|at| days_until(at, now_secs)),
            scope: view.scope,
        })
    }

    /// What it can give now to calls of any agent ([`Spendable::keeps_calls_going`]): the red
    /// bar shows only when this is 0 everywhere (R17, docs/grants.md G4).
    pub(crate) fn pays_calls_now(&self, now_secs: i64) -> Result<i64> {
        let grant = self.spendable()?;
        Ok(if grant.keeps_calls_going(now_secs) {
            grant.remaining_micros - grant.held_micros
        } else {
            0
        })
    }

    /// As a debit's read would give it.
    fn spendable(&self) -> Result<Spendable> {
        let kinds = self
            .scope_kinds
            .as_deref()
            .map(serde_json::from_str::<Vec<String>>)
            .transpose()
            .map_err(|e| stored(&format!("a grant's scope: {e}")))?;
        Ok(Spendable {
            id: self.id.clone(),
            paid: self.category == GrantCategory::Paid.as_str(),
            priority: self.priority,
            effective_at: self.effective_at,
            expires_at: self.expires_at,
            created_at: self.created_at,
            kinds,
            agent_id: self.scope_agent_id.clone(),
            remaining_micros: self.remaining_micros,
            held_micros: self.held_micros,
            voided: self.voided_at.is_some(),
        })
    }
}

/// Whole days from `now_secs` until `at`, rounded up (1 on the last day).
fn days_until(at: i64, now_secs: i64) -> i64 {
    (at - now_secs + calendar::SECS_PER_DAY - 1) / calendar::SECS_PER_DAY
}

/// The live grants of `workspace_id` as its owners see them (`GET /v1/workspaces/{ws}/grants`).
pub async fn list_for_owner<S: Storage>(
    db: &S,
    workspace_id: &str,
    real_now_secs: i64,
) -> Result<Vec<OwnerGrant>> {
    let ws = workspace::get(db, workspace_id).await?;
    let now = ws.now(real_now_secs);
    live_of(db, &ws, now)
        .await?
        .iter()
        .map(|grant| grant.for_owner(now))
        .collect()
}

/// Tells the platform `credits.expiring` once per grant, `credits_expiring_days` (catalog) before
/// it expires, on its workspace's clock, while it still has unheld credits (G9): at most
/// [`EXPIRY_SWEEP_MAX`] grants a pass, soonest first. Returns how many it told. With the setting
/// at 0, none.
pub async fn notify_expiring<S: Storage>(
    db: &S,
    catalog: &crate::catalog::Catalog,
    real_now_secs: i64,
) -> Result<usize> {
    let window_secs = i64::from(catalog.settings().credits_expiring_days) * calendar::SECS_PER_DAY;
    if window_secs == 0 {
        return Ok(0);
    }
    tx::immediate(db, async |db| {
        let not_told = "AND grants.expiring_notified_at IS NULL AND grants.voided_at IS NULL
                        AND grants.expires_at > COALESCE(w.test_clock_at, ?1)";
        let due = due_within(db, window_secs, not_told, real_now_secs).await?;
        for found in &due {
            let grant = &found.grant;
            let expires_at = grant.expires_at.unwrap_or(found.now);
            db.execute(
                "UPDATE grants SET expiring_notified_at = ?2 WHERE id = ?1",
                &[t(&grant.id), i(found.now)],
            )
            .await?;
            crate::notifications::record(
                db,
                &grant.workspace_id,
                "credits.expiring",
                &serde_json::json!({
                    "grant_id": grant.id, "name": grant.name,
                    "remaining_micros": grant.remaining_micros - grant.held_micros,
                    "expires_at": expires_at,
                    "days_left": days_until(expires_at, found.now),
                }),
                found.now,
                real_now_secs,
            )
            .await?;
        }
        Ok(due.len())
    })
    .await
}

/// What `ws`'s grants count for beside the wallet against the auto-recharge threshold at
/// `now_secs` (G5): the unheld credits of grants in force that pay for every usage of every
/// agent and do not expire within the catalog's `credits_expiring_days`.
pub(crate) async fn covering_recharge<S: Storage>(
    db: &S,
    catalog: &crate::catalog::Catalog,
    ws: &WorkspaceState,
    now_secs: i64,
) -> Result<i64> {
    let window_secs = i64::from(catalog.settings().credits_expiring_days) * calendar::SECS_PER_DAY;
    let rows = db
        .query(
            "SELECT COALESCE(SUM(remaining_micros - held_micros), 0) FROM grants
             WHERE workspace_id = ?1 AND remaining_micros > held_micros AND voided_at IS NULL
               AND effective_at <= ?2 AND scope_kinds IS NULL AND scope_agent_id IS NULL
               AND (expires_at IS NULL OR expires_at > ?2 + ?3)",
            &[t(&ws.id), i(now_secs), i(window_secs)],
        )
        .await?;
    rows.first().map_or(Ok(0), |found| row::int(found, 0))
}

/// The grants the runway spends at `now_secs` (G7: in force, paying for every usage of every
/// agent), in spending order, with what each has not held and when it expires.
pub(crate) async fn runway_of<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    now_secs: i64,
) -> Result<Vec<crate::runway::GrantOutlook>> {
    runway_outlook(&live_of(db, ws, now_secs).await?, now_secs)
}

/// [`runway_of`] from the grants [`live_of`] read.
pub(crate) fn runway_outlook(
    live: &[GrantRow],
    now_secs: i64,
) -> Result<Vec<crate::runway::GrantOutlook>> {
    let mut outlook = Vec::with_capacity(live.len());
    for row in live {
        let grant = row.spendable()?;
        if grant.in_force_at(now_secs) && grant.kinds.is_none() && grant.agent_id.is_none() {
            outlook.push(crate::runway::GrantOutlook {
                available_micros: (grant.remaining_micros - grant.held_micros).max(0),
                expires_at: grant.expires_at,
            });
        }
    }
    Ok(outlook)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use futures::executor::block_on;

    use super::*;

    /// The plan SQLite makes of `sql`: its steps' details.
    fn plan_of(sql: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::native::NativeDb::open(dir.path().join("ledger.db")).expect("open");
        block_on(crate::schema::migrate(&db)).expect("migrate");
        let rows = block_on(db.query(&format!("EXPLAIN QUERY PLAN {sql}"), &[])).expect("plan");
        rows.iter()
            .map(|row| row::text(row, 3).expect("a detail"))
            .collect()
    }

    /// A debit's read visits only the grants that can give something (the `grants_spendable`
    /// index, schema V22), not every grant the workspace ever had; a call's read adds its own
    /// holds by id.
    #[test]
    fn the_reads_find_grants_through_the_spendable_index() {
        let debit = plan_of(&format!(
            "SELECT {} FROM workspaces WHERE workspaces.id = 'w'",
            *SPENDABLE_COLUMN
        ));
        assert!(
            debit.iter().any(|step| step.contains("grants_spendable")),
            "{debit:#?}"
        );
        let call = plan_of(&format!(
            "SELECT {} FROM calls c JOIN workspaces ON workspaces.id = c.workspace_id
             WHERE c.call_id = 'c'",
            *CALL_GRANTS_COLUMN
        ));
        assert!(
            call.iter().any(|step| step.contains("grants_spendable")),
            "{call:#?}"
        );
        assert!(
            call.iter().all(|step| !step.contains("SCAN s")),
            "{call:#?}"
        );
    }
}
