//! Agents and their limits (R6), and the funding decision every debit and hold goes through.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar;
use crate::grants::Spendable;
use crate::money;
use std::sync::LazyLock;

use crate::row::{self, i, oi, read_row, t};
use crate::storage::Storage;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, LimitKind, Result};

/// What an agent does once plan credits run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OveragePolicy {
    /// Never use the wallet: stop until the cycle renews or credits are added.
    Stop,
    /// Continue on the prepaid wallet (the default).
    UseBalance,
}

impl OveragePolicy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::UseBalance => "use_balance",
        }
    }
}

/// An agent's limits, as `GET|PUT /v1/workspaces/{ws}/agents/{agent}/limits` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// Overage policy.
    pub overage_policy: OveragePolicy,
    /// Credits per billing cycle; none if absent.
    #[serde(default)]
    pub monthly_spend_limit: Option<Decimal>,
    /// Calls per local day; none if absent.
    #[serde(default)]
    pub daily_call_limit: Option<u32>,
    /// Calls at once; none if absent.
    #[serde(default)]
    pub max_concurrent_calls: Option<u32>,
}

/// An agent's limits and its counters for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentState {
    pub agent_id: String,
    pub policy: OveragePolicy,
    pub monthly_spend_limit_micros: Option<i64>,
    pub daily_call_limit: Option<i64>,
    pub max_concurrent_calls: Option<i64>,
    /// Spent in the workspace's current cycle.
    pub cycle_spend_micros: i64,
    /// Calls authorized on the current local day.
    pub day_calls: i64,
    /// The current local day.
    pub today: String,
    pub active_calls: i64,
    /// Held by this agent's calls in progress.
    pub active_held_micros: i64,
}

/// How a charge is paid: plan credits first, then the grants that apply, then the wallet (R2,
/// docs/grants.md "The spending order").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Funding {
    pub from_plan_micros: i64,
    /// What each grant gives, in the order they are spent.
    pub from_grants: Vec<GrantDraw>,
    pub from_wallet_micros: i64,
}

/// What one grant gives to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantDraw {
    pub grant_id: String,
    pub micros: i64,
}

impl Funding {
    pub fn total(&self) -> i64 {
        self.from_plan_micros + self.grants_micros() + self.from_wallet_micros
    }

    /// What the grants give, together.
    pub fn grants_micros(&self) -> i64 {
        self.from_grants.iter().map(|draw| draw.micros).sum()
    }
}

/// Decides how `amount_micros` of usage of `kind` is funded for `agent` at `now_secs`, or why
/// it is refused (R2, R6, R7; docs/grants.md G1). `grants` are the workspace's in spending order
/// ([`grants::spendable`]). Holds count against every source, so what calls in progress reserved
/// cannot be spent twice. A `stop` agent spends plan credits and promotional grants, never the
/// wallet or a paid grant: money the customer paid.
pub(crate) fn fund(
    ws: &WorkspaceState,
    agent: &AgentState,
    grants: &[Spendable],
    kind: &str,
    now_secs: i64,
    amount_micros: i64,
) -> Result<Funding> {
    if let Some(limit) = agent.monthly_spend_limit_micros
        && agent.cycle_spend_micros + agent.active_held_micros + amount_micros > limit
    {
        return Err(LedgerError::LimitReached {
            limit: LimitKind::MonthlySpendLimit,
        });
    }
    let from_plan_micros = amount_micros.min(ws.plan_available_micros());
    let mut rest_micros = amount_micros - from_plan_micros;
    let mut from_grants = Vec::new();
    for grant in grants {
        if rest_micros == 0 {
            break;
        }
        if grant.paid && agent.policy == OveragePolicy::Stop {
            continue;
        }
        let micros = rest_micros.min(grant.available_for(kind, &agent.agent_id, now_secs));
        if micros > 0 {
            from_grants.push(GrantDraw {
                grant_id: grant.id.clone(),
                micros,
            });
            rest_micros -= micros;
        }
    }
    if rest_micros == 0 {
        return Ok(Funding {
            from_plan_micros,
            from_grants,
            from_wallet_micros: 0,
        });
    }
    match agent.policy {
        OveragePolicy::Stop => Err(LedgerError::PlanCreditsExhausted),
        OveragePolicy::UseBalance if rest_micros <= ws.wallet_available_micros() => Ok(Funding {
            from_plan_micros,
            from_grants,
            from_wallet_micros: rest_micros,
        }),
        OveragePolicy::UseBalance => Err(LedgerError::InsufficientFunds),
    }
}

read_row! {
    /// An agent's stored row with its counters of calls in progress, for a query that joins
    /// `agents a` (NULLs when the agent was never used). Made an [`AgentState`] by
    /// [`AgentColumns::state`]. The counters are kept by the calls triggers (schema.rs, V6):
    /// reading them costs the same whatever the number of calls in progress.
    pub(crate) struct AgentColumns in "a" {
        overage_policy: Option<String>,
        monthly_spend_limit_micros: Option<i64>,
        daily_call_limit: Option<i64>,
        max_concurrent_calls: Option<i64>,
        spend_cycle_start_at: Option<i64>,
        cycle_spend_micros: Option<i64>,
        call_day: Option<String>,
        day_calls: Option<i64>,
        active_calls: i64 = "COALESCE(a.active_calls, 0)",
        active_held_micros: i64 = "COALESCE(a.active_held_micros, 0)",
    }
}

/// [`AgentColumns`]' select list.
pub(crate) static AGENT_COLUMNS: LazyLock<String> =
    LazyLock::new(|| row::select_list::<AgentColumns>(true));

read_row! {
    /// A row of an agents page: the agent's id, then its columns.
    struct AgentListRow in "a" {
        agent_id: String,
        columns: AgentColumns,
    }
}

/// Reads an agent with its counters for `now_secs` (defaults if it was never used; reading
/// creates nothing, the first write does).
pub(crate) async fn load<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    agent_id: &str,
    now_secs: i64,
) -> Result<AgentState> {
    workspace::validate_id("agent_id", agent_id)?;
    let sql = format!(
        "SELECT {} FROM (SELECT 1)
         LEFT JOIN agents a ON a.workspace_id = ?1 AND a.agent_id = ?2",
        *AGENT_COLUMNS
    );
    let rows = db.query(&sql, &[t(&ws.id), t(agent_id)]).await?;
    let row = rows
        .first()
        .ok_or(LedgerError::NotFound { what: "agent" })?;
    row::decode_row::<AgentColumns>(row)?.state(ws, agent_id, now_secs)
}

impl AgentColumns {
    /// The agent as of `now_secs`: the counters of a cycle or a day that is over count as zero.
    pub(crate) fn state(
        &self,
        ws: &WorkspaceState,
        agent_id: &str,
        now_secs: i64,
    ) -> Result<AgentState> {
        let today = calendar::local_day(now_secs, &ws.timezone)?;
        let cycle_start = ws.cycle_start_at.unwrap_or(0);
        let mut agent = AgentState {
            agent_id: agent_id.to_owned(),
            policy: OveragePolicy::UseBalance,
            monthly_spend_limit_micros: None,
            daily_call_limit: None,
            max_concurrent_calls: None,
            cycle_spend_micros: 0,
            day_calls: 0,
            today,
            active_calls: self.active_calls,
            active_held_micros: self.active_held_micros,
        };
        // `overage_policy` is NOT NULL: NULL means no agent row yet, so the defaults stand.
        if let Some(policy) = &self.overage_policy {
            // The columns below are NOT NULL too: in a stored row, NULL is a broken read.
            let stored = |value: Option<i64>| value.ok_or_else(|| not_null("an agent's counter"));
            agent.policy = if policy == "stop" {
                OveragePolicy::Stop
            } else {
                OveragePolicy::UseBalance
            };
            agent.monthly_spend_limit_micros = self.monthly_spend_limit_micros;
            agent.daily_call_limit = self.daily_call_limit;
            agent.max_concurrent_calls = self.max_concurrent_calls;
            if stored(self.spend_cycle_start_at)? == cycle_start {
                agent.cycle_spend_micros = stored(self.cycle_spend_micros)?;
            }
            let call_day = self
                .call_day
                .as_deref()
                .ok_or_else(|| not_null("call_day"))?;
            if call_day == agent.today {
                agent.day_calls = stored(self.day_calls)?;
            }
        }
        Ok(agent)
    }
}

fn not_null(what: &str) -> LedgerError {
    LedgerError::Storage(crate::StorageError::from_sqlite_message(format!(
        "{what}: expected a value, read NULL"
    )))
}

/// An agent's limits (defaults if never set).
pub async fn get_limits<S: Storage>(
    db: &S,
    workspace_id: &str,
    agent_id: &str,
    real_now_secs: i64,
) -> Result<AgentLimits> {
    let ws = workspace::get(db, workspace_id).await?;
    let agent = load(db, &ws, agent_id, ws.now(real_now_secs)).await?;
    Ok(limits_of(&agent))
}

fn limits_of(agent: &AgentState) -> AgentLimits {
    AgentLimits {
        overage_policy: agent.policy,
        monthly_spend_limit: agent.monthly_spend_limit_micros.map(money::to_decimal),
        daily_call_limit: agent.daily_call_limit.and_then(|v| u32::try_from(v).ok()),
        max_concurrent_calls: agent
            .max_concurrent_calls
            .and_then(|v| u32::try_from(v).ok()),
    }
}

/// Sets an agent's limits (creating the agent if needed).
pub async fn put_limits<S: Storage>(
    db: &S,
    workspace_id: &str,
    agent_id: &str,
    limits: &AgentLimits,
    real_now_secs: i64,
) -> Result<AgentLimits> {
    workspace::validate_id("agent_id", agent_id)?;
    let spend_limit = limits
        .monthly_spend_limit
        .map(|v| money::decimal_to_micros("monthly_spend_limit", v, true))
        .transpose()?;
    for (field, value) in [
        ("daily_call_limit", limits.daily_call_limit),
        ("max_concurrent_calls", limits.max_concurrent_calls),
    ] {
        if value.is_some_and(|v| v > 1_000_000) {
            return Err(LedgerError::invalid(
                "validation_error",
                field,
                format!("{field} must be at most 1000000"),
            ));
        }
    }
    let ws = workspace::get(db, workspace_id).await?;
    db.execute(
        "INSERT INTO agents (workspace_id, agent_id, overage_policy, monthly_spend_limit_micros, daily_call_limit,
                             max_concurrent_calls, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (workspace_id, agent_id) DO UPDATE SET overage_policy = ?3,
             monthly_spend_limit_micros = ?4, daily_call_limit = ?5, max_concurrent_calls = ?6",
        &[
            t(&ws.id),
            t(agent_id),
            t(limits.overage_policy.as_str()),
            oi(spend_limit),
            oi(limits.daily_call_limit.map(i64::from)),
            oi(limits.max_concurrent_calls.map(i64::from)),
            i(ws.now(real_now_secs)),
        ],
    )
    .await?;
    get_limits(db, workspace_id, agent_id, real_now_secs).await
}

/// Largest page of `GET /v1/workspaces/{ws}/agents`.
pub const AGENT_PAGE_LIMIT_MAX: i64 = 500;
/// Default page of `GET /v1/workspaces/{ws}/agents`.
pub const AGENT_PAGE_LIMIT_DEFAULT: i64 = 100;

/// One agent of the list: its limits exactly as `GET .../agents/{agent}/limits` shows them, and
/// its counters for now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    /// The agent.
    pub agent_id: String,
    /// Its limits (flattened: `overage_policy`, `monthly_spend_limit`, `daily_call_limit`,
    /// `max_concurrent_calls`).
    #[serde(flatten)]
    pub limits: AgentLimits,
    /// Credits spent in the workspace's current cycle (0 when its counter is of an older cycle).
    pub cycle_spend: Decimal,
    /// Calls authorized on the workspace's current local day (0 when its counter is of another
    /// day).
    pub calls_today: i64,
    /// Calls in progress.
    pub calls_in_progress: i64,
}

/// A page of agents, by agent id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentPage {
    /// The agents, ordered by agent id.
    pub agents: Vec<AgentView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The agents of a workspace (those used, or whose limits were set), by agent id, `limit` (1 to
/// [`AGENT_PAGE_LIMIT_MAX`], default [`AGENT_PAGE_LIMIT_DEFAULT`]) at a time after `cursor`
/// (the last agent id of the page before). Counters are for now on the workspace's clock, as
/// every debit and authorization reads them ([`AgentColumns`]).
pub async fn list<S: Storage>(
    db: &S,
    workspace_id: &str,
    limit: Option<i64>,
    cursor: Option<&str>,
    real_now_secs: i64,
) -> Result<AgentPage> {
    let limit = crate::views::page_limit(limit, AGENT_PAGE_LIMIT_DEFAULT, AGENT_PAGE_LIMIT_MAX)?;
    if let Some(cursor) = cursor {
        workspace::validate_id("cursor", cursor).map_err(|_| {
            crate::views::bad_query("cursor", "cursor is not a cursor this API returned")
        })?;
    }
    let ws = workspace::get(db, workspace_id).await?;
    let now = ws.now(real_now_secs);
    // The primary key (workspace_id, agent_id) walked in order from the cursor.
    let sql = format!(
        "SELECT {} FROM agents a
         WHERE a.workspace_id = ?1 AND a.agent_id > ?2 ORDER BY a.agent_id LIMIT ?3",
        row::select_list::<AgentListRow>(true)
    );
    let rows = db
        .query(&sql, &[t(&ws.id), t(cursor.unwrap_or("")), i(limit + 1)])
        .await?;
    let mut agents = Vec::with_capacity(rows.len());
    for row in rows.iter().take(limit as usize) {
        let listed: AgentListRow = row::decode_row(row)?;
        let agent = listed.columns.state(&ws, &listed.agent_id, now)?;
        agents.push(AgentView {
            limits: limits_of(&agent),
            cycle_spend: money::to_decimal(agent.cycle_spend_micros),
            calls_today: agent.day_calls,
            calls_in_progress: agent.active_calls,
            agent_id: agent.agent_id,
        });
    }
    let next_cursor = if rows.len() as i64 > limit {
        agents.last().map(|agent| agent.agent_id.clone())
    } else {
        None
    };
    Ok(AgentPage {
        agents,
        next_cursor,
    })
}
