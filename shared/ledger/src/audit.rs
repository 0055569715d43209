//! The ledger's invariants, checked from the data alone. Tests run this after every scenario;
//! operators can run it against a live database.

use crate::Result;
use crate::calendar;
use crate::row::{int, text};
use crate::storage::Storage;

/// Each query returns the rows that break one invariant, with a workspace id and a detail.
const CHECKS: &[(&str, &str)] = &[
    (
        "every bucket's balance equals the sum of its journal rows",
        "SELECT w.id, 'plan ' || w.plan_credits_micros || ' vs journal ' || COALESCE(j.plan, 0)
                 || ', wallet ' || w.wallet_micros || ' vs journal ' || COALESCE(j.wallet, 0)
         FROM workspaces w LEFT JOIN (
             SELECT workspace_id,
                    SUM(CASE WHEN credit_bucket = 'plan' THEN amount_micros WHEN debit_bucket = 'plan' THEN -amount_micros ELSE 0 END) AS plan,
                    SUM(CASE WHEN credit_bucket = 'wallet' THEN amount_micros WHEN debit_bucket = 'wallet' THEN -amount_micros ELSE 0 END) AS wallet
             FROM journal GROUP BY workspace_id) j ON j.workspace_id = w.id
         WHERE w.plan_credits_micros <> COALESCE(j.plan, 0) OR w.wallet_micros <> COALESCE(j.wallet, 0)",
    ),
    (
        "every history row moves exactly what its journal rows move",
        "SELECT x.workspace_id, 'transaction ' || x.id
         FROM transactions x LEFT JOIN (
             SELECT transaction_id,
                    SUM(CASE WHEN credit_bucket = 'plan' THEN amount_micros WHEN debit_bucket = 'plan' THEN -amount_micros ELSE 0 END) AS plan,
                    SUM(CASE WHEN credit_bucket = 'wallet' THEN amount_micros WHEN debit_bucket = 'wallet' THEN -amount_micros ELSE 0 END) AS wallet
             FROM journal GROUP BY transaction_id) j ON j.transaction_id = x.id
         WHERE x.plan_delta_micros <> COALESCE(j.plan, 0) OR x.wallet_delta_micros <> COALESCE(j.wallet, 0)",
    ),
    (
        "holds equal the sum of active calls' holds",
        "SELECT w.id, 'held plan ' || w.held_plan_micros || ' wallet ' || w.held_wallet_micros
         FROM workspaces w LEFT JOIN (
             SELECT workspace_id, SUM(held_plan_micros) AS p, SUM(held_wallet_micros) AS wl
             FROM calls WHERE status = 'active' GROUP BY workspace_id) c ON c.workspace_id = w.id
         WHERE w.held_plan_micros <> COALESCE(c.p, 0) OR w.held_wallet_micros <> COALESCE(c.wl, 0)",
    ),
    (
        "each workspace's count of calls in progress equals its active calls",
        "SELECT w.id, 'active_calls ' || w.active_calls || ' vs ' || COALESCE(c.n, 0)
         FROM workspaces w LEFT JOIN (
             SELECT workspace_id, COUNT(*) AS n FROM calls WHERE status = 'active'
             GROUP BY workspace_id) c ON c.workspace_id = w.id
         WHERE w.active_calls <> COALESCE(c.n, 0)",
    ),
    (
        "each agent's counters of calls in progress equal its active calls and their holds",
        "SELECT a.workspace_id, 'agent ' || a.agent_id || ': active_calls ' || a.active_calls
                 || ' vs ' || COALESCE(c.n, 0) || ', active_held_micros ' || a.active_held_micros
                 || ' vs ' || COALESCE(c.held, 0)
         FROM agents a LEFT JOIN (
             SELECT workspace_id, agent_id, COUNT(*) AS n,
                    SUM(held_plan_micros + held_wallet_micros + held_grant_micros) AS held
             FROM calls WHERE status = 'active' GROUP BY workspace_id, agent_id) c
           ON c.workspace_id = a.workspace_id AND c.agent_id = a.agent_id
         WHERE a.active_calls <> COALESCE(c.n, 0) OR a.active_held_micros <> COALESCE(c.held, 0)",
    ),
    (
        "every call in progress has its agent",
        "SELECT c.workspace_id, 'call ' || c.call_id FROM calls c
         WHERE c.status = 'active' AND NOT EXISTS (
             SELECT 1 FROM agents a WHERE a.workspace_id = c.workspace_id AND a.agent_id = c.agent_id)",
    ),
    (
        "no call is posted twice",
        "SELECT workspace_id, 'call ' || reference FROM transactions WHERE type = 'call'
         GROUP BY workspace_id, reference HAVING COUNT(*) > 1",
    ),
    (
        "every posted call has its one charge row",
        "SELECT c.workspace_id, 'call ' || c.call_id FROM calls c
         WHERE c.status <> 'active' AND NOT EXISTS (
             SELECT 1 FROM transactions x WHERE x.id = c.transaction_id AND x.type = 'call' AND x.reference = c.call_id)",
    ),
    (
        "every payment is credited at most once, and a succeeded one exactly once",
        "SELECT p.workspace_id, 'payment ' || p.id FROM payments p
         WHERE (SELECT COUNT(*) FROM transactions x WHERE x.workspace_id = p.workspace_id
                  AND x.type IN ('topup', 'auto_recharge') AND x.reference = COALESCE(p.stripe_payment_intent_id, p.id))
               <> (CASE WHEN p.status = 'succeeded' THEN 1 ELSE 0 END)",
    ),
    (
        "every usage event has one charge row",
        "SELECT e.workspace_id, 'event ' || e.event_id FROM usage_events e
         WHERE (SELECT COUNT(*) FROM transactions x WHERE x.id = e.transaction_id) <> 1",
    ),
    (
        // Exact, zero-charge days included: the trigger (schema V10) writes a row for every
        // usage row, so a day has a rollup row if and only if it has a usage row.
        "each workspace's daily usage rollup equals its usage history, day by day",
        concat!(
            "SELECT workspace_id, 'day ' || day || ' (' || date(day * ",
            calendar::secs_per_day!(),
            ", 'unixepoch') || '): rollup '
                 || CASE WHEN SUM(rollup_rows) = 0 THEN 'missing' ELSE SUM(rollup_micros) END
                 || ' vs history ' || CASE WHEN SUM(history_rows) = 0 THEN 'none' ELSE SUM(history_micros) END
         FROM (
             SELECT workspace_id, day, spent_micros AS rollup_micros, 0 AS history_micros,
                    1 AS rollup_rows, 0 AS history_rows
             FROM usage_daily
             UNION ALL
             SELECT workspace_id, occurred_at / ",
            calendar::secs_per_day!(),
            ", 0, -(plan_delta_micros + wallet_delta_micros + grant_delta_micros), 0, 1
             FROM transactions WHERE type IN ('call', 'message', 'sms', 'stt', 'ai_task'))
         GROUP BY workspace_id, day
         HAVING SUM(rollup_micros) <> SUM(history_micros) OR SUM(rollup_rows) = 0 OR SUM(history_rows) = 0"
        ),
    ),
    (
        "plan credits are never below what calls in progress hold of them",
        "SELECT id, 'plan ' || plan_credits_micros || ' held ' || held_plan_micros FROM workspaces
         WHERE plan_credits_micros < held_plan_micros",
    ),
    (
        "only a refund, a dispute or a call's charge takes the wallet below zero",
        "SELECT x.workspace_id, 'transaction ' || x.id || ' (' || x.type || ')' FROM transactions x
         WHERE x.wallet_delta_micros < 0 AND x.wallet_after_micros < 0
           AND x.type NOT IN ('refund', 'dispute')
           AND NOT (x.type = 'call' AND EXISTS (
               SELECT 1 FROM calls c WHERE c.call_id = x.reference AND c.transaction_id = x.id))",
    ),
    (
        "every grant's remaining equals the sum of its entries",
        "SELECT g.workspace_id, 'grant ' || g.id || ': remaining ' || g.remaining_micros
                 || ' vs entries ' || COALESCE(e.total, 0)
         FROM grants g LEFT JOIN (
             SELECT grant_id, SUM(amount_micros) AS total FROM grant_entries GROUP BY grant_id) e
           ON e.grant_id = g.id
         WHERE g.remaining_micros <> COALESCE(e.total, 0)",
    ),
    (
        "every grant was granted once, its amount, when it was made",
        "SELECT g.workspace_id, 'grant ' || g.id FROM grants g
         WHERE (SELECT COUNT(*) || ' ' || COALESCE(SUM(amount_micros), 0) || ' ' || MIN(created_at)
                FROM grant_entries e WHERE e.grant_id = g.id AND e.kind = 'granted')
               IS NOT ('1 ' || g.amount_micros || ' ' || g.created_at)",
    ),
    (
        "a grant expires only at or after its expiry, and is voided only when it is voided",
        "SELECT g.workspace_id, 'grant ' || g.id || ': ' || e.kind || ' entry ' || e.id
         FROM grant_entries e JOIN grants g ON g.id = e.grant_id
         WHERE (e.kind = 'expired' AND (g.expires_at IS NULL OR e.created_at < g.expires_at))
            OR (e.kind = 'voided' AND (g.voided_at IS NULL OR e.created_at < g.voided_at))",
    ),
    (
        "every history row's grant delta equals its grants' spent entries",
        "SELECT x.workspace_id, 'transaction ' || x.id || ': grant delta ' || x.grant_delta_micros
                 || ' vs entries ' || COALESCE(e.total, 0)
         FROM transactions x LEFT JOIN (
             SELECT transaction_id, SUM(amount_micros) AS total FROM grant_entries
             WHERE kind = 'spent' GROUP BY transaction_id) e ON e.transaction_id = x.id
         WHERE x.grant_delta_micros <> COALESCE(e.total, 0)",
    ),
    (
        "nothing is spent from a grant of another workspace, outside its scope, before its start, \
         or at or after its expiry or voiding but what a call held of it before",
        "SELECT g.workspace_id, 'grant ' || g.id || ': spent entry ' || e.id
         FROM grant_entries e JOIN grants g ON g.id = e.grant_id
         JOIN transactions x ON x.id = e.transaction_id
         WHERE e.kind = 'spent'
           AND (x.workspace_id <> g.workspace_id
                OR e.created_at < g.effective_at
                -- A voiding's time is a whole second: what was spent in that second may have
                -- come before it, so the voiding counts from the end of its second.
                OR (e.created_at >= MIN(COALESCE(g.expires_at, e.created_at + 1),
                                        COALESCE(g.voided_at + 1, e.created_at + 1))
                    -- A call posts what it held of a grant that expired or was voided under it.
                    AND NOT EXISTS (SELECT 1 FROM calls c
                                    WHERE c.transaction_id = x.id AND c.call_id = x.reference
                                      AND c.started_at < MIN(COALESCE(g.expires_at, c.started_at + 1),
                                                             COALESCE(g.voided_at + 1, c.started_at + 1))))
                OR x.agent_id IS NOT COALESCE(g.scope_agent_id, x.agent_id)
                OR (g.scope_kinds IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM json_each(g.scope_kinds) k WHERE k.value = x.type)))",
    ),
    (
        "what each grant has held equals its active calls' holds on it",
        "SELECT g.workspace_id, 'grant ' || g.id || ': held ' || g.held_micros || ' vs calls '
                 || COALESCE(h.total, 0)
         FROM grants g LEFT JOIN (
             SELECT h.key AS grant_id, SUM(h.value) AS total
             FROM calls c, json_each(c.held_grants) h
             WHERE c.status = 'active' AND c.held_grants IS NOT NULL GROUP BY h.key) h
           ON h.grant_id = g.id
         WHERE g.held_micros <> COALESCE(h.total, 0)",
    ),
    (
        "each workspace's count of live grants equals its grants with something left",
        "SELECT w.id, 'live_grants ' || w.live_grants || ' vs ' || COALESCE(g.n, 0)
         FROM workspaces w LEFT JOIN (
             SELECT workspace_id, COUNT(*) AS n FROM grants WHERE remaining_micros > 0
             GROUP BY workspace_id) g ON g.workspace_id = w.id
         WHERE w.live_grants <> COALESCE(g.n, 0)",
    ),
];

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant.
    pub invariant: &'static str,
    /// Workspace.
    pub workspace_id: String,
    /// What is off.
    pub detail: String,
}

/// Checks every invariant over the whole database; empty means all hold.
pub async fn check<S: Storage>(db: &S) -> Result<Vec<Violation>> {
    let mut violations = Vec::new();
    for (invariant, sql) in CHECKS {
        for row in db.query(sql, &[]).await? {
            violations.push(Violation {
                invariant,
                workspace_id: text(&row, 0)?,
                detail: text(&row, 1)?,
            });
        }
    }
    Ok(violations)
}

/// How many invariant checks [`check`] runs.
pub fn invariant_count() -> usize {
    CHECKS.len()
}

/// The number of journal rows (for reports).
pub async fn journal_rows<S: Storage>(db: &S) -> Result<i64> {
    let rows = db.query("SELECT COUNT(*) FROM journal", &[]).await?;
    rows.first().map_or(Ok(0), |r| int(r, 0))
}
