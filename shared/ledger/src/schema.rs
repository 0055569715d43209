//! The SQL schema, embedded and applied idempotently on first use.
//!
//! Invariants live here as well as in Rust: balances change only through journal rows (a trigger
//! applies each row and another refuses any balance change not backed by the newest journal row),
//! the journal is append-only, plan credits and holds never go negative, one auto-recharge is in
//! flight per workspace at most, and every idempotency id is UNIQUE.
//!
//! # Money columns
//!
//! A column ending in `_micros` holds micro-credits, except these, which hold money in micro-units
//! of the catalog's currency. In Rust their names end in `_money_micros` (`money.rs`, "Units"):
//!
//! - `workspaces.plan_price_micros` (V1): `plans::plan_price_money_micros`,
//!   `plan_change::Subscriber::plan_price_money_micros`, runway's `cycles_of`; written from
//!   `PlanTerms::price_money_micros`.
//! - `workspaces.auto_recharge_threshold_micros` (V1):
//!   `WorkspaceState::auto_recharge_threshold_money_micros`.
//! - `workspaces.auto_recharge_amount_micros` (V1):
//!   `WorkspaceState::auto_recharge_amount_money_micros`.
//! - `workspaces.auto_recharge_max_per_month_micros` (V18):
//!   `WorkspaceState::auto_recharge_max_per_month_money_micros`; NULL is no cap.
//! - `payments.amount_micros` (V1): `Payment::amount_money_micros`, a receipt's `amount`.
//! - `payments.reversed_amount_micros` (V1): `reversed_money_micros` in `payments::reverse`, a
//!   receipt's `refunded_amount`.
//! - `payments.credit_price_micros` (V13): a receipt's `credit_price`; written from
//!   `Catalog::credit_price_money_micros`.
//! - `reversals.amount_micros` (V1): written by `payments::reverse` from `amount_money_micros`.
//! - `grants.cost_basis_micros` (V17): `GrantRow::cost_basis_money_micros` (`grants.rs`), a
//!   grant's `cost_basis`.
//!
//! The `amount_micros` of the facts of `topup.*` and `auto_recharge.*` notifications (V11's
//! trigger, `payments::claim_auto_recharge`) is money too, as are the `max_per_month_micros` and
//! `spent_this_month_micros` facts of `auto_recharge.failed` (`monthly_cap_reached`) and
//! `auto_recharge.cap_warning`. `auto_recharge_threshold_credits_micros`
//! is the same threshold in micro-credits.
//!
//! The columns (and the facts' keys) keep their names: renaming one is a migration, and a replica
//! still running the previous build during a rolling deploy would then name a column that no
//! longer exists. Migrations only add. The Rust names map to them where rows are declared
//! (`row::Column` in a `read_row!`), and the SQL text, the hot paths' included, is unchanged.

use crate::storage::{SqlValue, Storage};
use crate::{Result, calendar};

/// The outside bucket a history row's type implies (`card`, `plan_grant`, `expired` or `usage`),
/// as the one-row table `x` that `transactions_post` joins for each of its two journal rows.
macro_rules! outside_bucket {
    () => {
        "(SELECT CASE
                WHEN NEW.type IN ('topup', 'auto_recharge', 'refund', 'dispute') THEN 'card'
                WHEN NEW.type = 'plan_grant' THEN 'plan_grant'
                WHEN NEW.type = 'plan_expiry' THEN 'expired'
                ELSE 'usage' END AS bucket) x"
    };
}

/// A grant of workspace `$ws` that still pays for calls of any agent at time `$now` (effective,
/// not expired, not voided, something unheld left, no scope or a scope with calls and no agent):
/// while there is one, the workspace has not run out (R7's grace waits; docs/grants.md G4). The
/// same test as `grants::Spendable::keeps_calls_going`.
macro_rules! grant_keeps_calls_going {
    ($ws:literal, $now:literal) => {
        concat!(
            "SELECT 1 FROM grants g WHERE g.workspace_id = ",
            $ws,
            " AND g.remaining_micros > g.held_micros AND g.voided_at IS NULL
               AND g.effective_at <= ",
            $now,
            " AND (g.expires_at IS NULL OR g.expires_at > ",
            $now,
            ") AND g.scope_agent_id IS NULL
               AND (g.scope_kinds IS NULL OR EXISTS (SELECT 1 FROM json_each(g.scope_kinds) k
                                                     WHERE k.value = 'call'))"
        )
    };
}
pub(crate) use grant_keeps_calls_going;

/// Sets a workspace's `low_notified_micros` to the lowest level at or above its balance after
/// `NEW` (V14): the last statement of `notify_balance_low` and the whole of `balance_levels_rearm`.
macro_rules! rearm_levels {
    () => {
        "UPDATE workspaces SET low_notified_micros =
            (SELECT MIN(level_micros) FROM notification_levels
             WHERE level_micros >= NEW.plan_after_micros + NEW.wallet_after_micros)
        WHERE id = NEW.workspace_id;"
    };
}

/// One migration: a version and its statements, each run as one `execute`.
struct Migration {
    version: i64,
    statements: &'static [&'static str],
}

/// All migrations, oldest first. Never edit a released one: append a new version.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        statements: V1,
    },
    Migration {
        version: 2,
        statements: V2,
    },
    Migration {
        version: 3,
        statements: V3,
    },
    Migration {
        version: 4,
        statements: V4,
    },
    Migration {
        version: 5,
        statements: V5,
    },
    Migration {
        version: 6,
        statements: V6,
    },
    Migration {
        version: 7,
        statements: V7,
    },
    Migration {
        version: 8,
        statements: V8,
    },
    Migration {
        version: 9,
        statements: V9,
    },
    Migration {
        version: 10,
        statements: V10,
    },
    Migration {
        version: NOTIFICATIONS_VERSION,
        statements: V11,
    },
    Migration {
        version: 12,
        statements: V12,
    },
    Migration {
        version: 13,
        statements: V13,
    },
    Migration {
        version: 14,
        statements: V14,
    },
    Migration {
        version: 15,
        statements: V15,
    },
    Migration {
        version: 16,
        statements: V16,
    },
    Migration {
        version: 17,
        statements: V17,
    },
    Migration {
        version: 18,
        statements: V18,
    },
    Migration {
        version: 19,
        statements: V19,
    },
    Migration {
        version: 20,
        statements: V20,
    },
    Migration {
        version: 21,
        statements: V21,
    },
    Migration {
        version: 22,
        statements: V22,
    },
];

const V1: &[&str] = &[
    // Catalog versions: the plans, rate card and settings, validated as a whole (catalog.rs).
    "CREATE TABLE catalog_versions (
        version INTEGER PRIMARY KEY,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT",
    // Money, not credits (module docs, "Money columns"): plan_price_micros,
    // auto_recharge_threshold_micros, auto_recharge_amount_micros.
    "CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        currency TEXT NOT NULL,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        created_at INTEGER NOT NULL,
        -- Plan and cycle (R13-R16). plan_id NULL means billing is not configured (R3).
        plan_id TEXT,
        plan_monthly_credits_micros INTEGER NOT NULL DEFAULT 0 CHECK (plan_monthly_credits_micros >= 0),
        plan_rollover_max_micros INTEGER CHECK (plan_rollover_max_micros >= 0),
        plan_price_micros INTEGER NOT NULL DEFAULT 0 CHECK (plan_price_micros >= 0),
        cycle_anchor_day INTEGER CHECK (cycle_anchor_day BETWEEN 1 AND 31),
        cycle_start_at INTEGER,
        cycle_end_at INTEGER,
        cycle_credits_granted INTEGER NOT NULL DEFAULT 0 CHECK (cycle_credits_granted IN (0, 1)),
        pending_plan_id TEXT,
        subscription_status TEXT NOT NULL DEFAULT 'none'
            CHECK (subscription_status IN ('none', 'active', 'past_due', 'canceled')),
        stripe_customer_id TEXT,
        stripe_subscription_id TEXT,
        -- Balances: changed only by the journal trigger below.
        plan_credits_micros INTEGER NOT NULL DEFAULT 0 CHECK (plan_credits_micros >= 0),
        wallet_micros INTEGER NOT NULL DEFAULT 0,
        last_journal_id INTEGER NOT NULL DEFAULT 0,
        -- Holds of calls in progress (R5), maintained by the calls triggers.
        held_plan_micros INTEGER NOT NULL DEFAULT 0 CHECK (held_plan_micros >= 0),
        held_wallet_micros INTEGER NOT NULL DEFAULT 0 CHECK (held_wallet_micros >= 0),
        -- R7: when the wallet ran out; inbound grace runs from here.
        exhausted_at INTEGER,
        -- R10/R11.
        payment_method_id TEXT,
        card_brand TEXT,
        card_last4 TEXT,
        card_exp_month INTEGER,
        card_exp_year INTEGER,
        auto_recharge_enabled INTEGER NOT NULL DEFAULT 0 CHECK (auto_recharge_enabled IN (0, 1)),
        auto_recharge_threshold_micros INTEGER NOT NULL DEFAULT 0 CHECK (auto_recharge_threshold_micros >= 0),
        auto_recharge_threshold_credits_micros INTEGER NOT NULL DEFAULT 0 CHECK (auto_recharge_threshold_credits_micros >= 0),
        auto_recharge_amount_micros INTEGER NOT NULL DEFAULT 0 CHECK (auto_recharge_amount_micros >= 0),
        auto_recharge_warning TEXT,
        -- One charge per crossing (R11): armed while the wallet is at or above the threshold.
        auto_recharge_armed INTEGER NOT NULL DEFAULT 0 CHECK (auto_recharge_armed IN (0, 1)),
        -- Test clock (docs/billing-rules.md, section 'The HTTP contract'): frozen time for this workspace, forward only.
        test_clock_at INTEGER,
        CHECK (plan_id IS NULL OR (cycle_start_at IS NOT NULL AND cycle_end_at > cycle_start_at)),
        CHECK (auto_recharge_enabled = 0 OR payment_method_id IS NOT NULL)
    ) STRICT",
    "CREATE INDEX workspaces_cycle_end ON workspaces (cycle_end_at) WHERE plan_id IS NOT NULL",
    "CREATE INDEX workspaces_recharge ON workspaces (id) WHERE auto_recharge_enabled = 1 AND auto_recharge_armed = 1",
    // The user-visible history (R18): one row per business event, with its split.
    "CREATE TABLE transactions (
        id INTEGER PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        type TEXT NOT NULL CHECK (type IN ('call', 'message', 'sms', 'stt', 'ai_task', 'topup',
            'auto_recharge', 'plan_grant', 'plan_expiry', 'refund', 'dispute')),
        agent_id TEXT,
        reference TEXT,
        quantity_micros INTEGER,
        unit TEXT,
        rate_micros INTEGER,
        plan_delta_micros INTEGER NOT NULL,
        wallet_delta_micros INTEGER NOT NULL,
        plan_after_micros INTEGER NOT NULL,
        wallet_after_micros INTEGER NOT NULL,
        occurred_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        description TEXT
    ) STRICT",
    "CREATE INDEX transactions_by_workspace ON transactions (workspace_id, id)",
    "CREATE INDEX transactions_by_type ON transactions (workspace_id, type, id)",
    "CREATE INDEX transactions_by_agent ON transactions (workspace_id, agent_id, id)",
    "CREATE INDEX transactions_by_time ON transactions (workspace_id, occurred_at)",
    "CREATE TRIGGER transactions_append_only_u BEFORE UPDATE ON transactions
     BEGIN SELECT RAISE(ABORT, 'ledger: transactions are append-only'); END",
    "CREATE TRIGGER transactions_append_only_d BEFORE DELETE ON transactions
     BEGIN SELECT RAISE(ABORT, 'ledger: transactions are append-only'); END",
    // Double-entry journal: every row debits one bucket and credits another. The workspace's own
    // buckets are 'plan' and 'wallet'; the others are the outside world.
    "CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        transaction_id INTEGER NOT NULL REFERENCES transactions (id),
        debit_bucket TEXT NOT NULL CHECK (debit_bucket IN ('plan', 'wallet', 'usage', 'card', 'plan_grant', 'expired')),
        credit_bucket TEXT NOT NULL CHECK (credit_bucket IN ('plan', 'wallet', 'usage', 'card', 'plan_grant', 'expired')),
        amount_micros INTEGER NOT NULL CHECK (amount_micros > 0),
        plan_after_micros INTEGER NOT NULL,
        wallet_after_micros INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        CHECK (debit_bucket <> credit_bucket),
        CHECK (debit_bucket IN ('plan', 'wallet') OR credit_bucket IN ('plan', 'wallet'))
    ) STRICT",
    "CREATE INDEX journal_by_workspace ON journal (workspace_id, id)",
    "CREATE TRIGGER journal_append_only_u BEFORE UPDATE ON journal
     BEGIN SELECT RAISE(ABORT, 'ledger: journal is append-only'); END",
    "CREATE TRIGGER journal_append_only_d BEFORE DELETE ON journal
     BEGIN SELECT RAISE(ABORT, 'ledger: journal is append-only'); END",
    // Applying a journal row is the only way a balance moves.
    "CREATE TRIGGER journal_apply AFTER INSERT ON journal
     BEGIN
        UPDATE workspaces SET
            plan_credits_micros = plan_credits_micros
                + (CASE WHEN NEW.credit_bucket = 'plan' THEN NEW.amount_micros ELSE 0 END)
                - (CASE WHEN NEW.debit_bucket = 'plan' THEN NEW.amount_micros ELSE 0 END),
            wallet_micros = wallet_micros
                + (CASE WHEN NEW.credit_bucket = 'wallet' THEN NEW.amount_micros ELSE 0 END)
                - (CASE WHEN NEW.debit_bucket = 'wallet' THEN NEW.amount_micros ELSE 0 END),
            last_journal_id = NEW.id
        WHERE id = NEW.workspace_id;
        SELECT RAISE(ABORT, 'ledger: balance after does not match the journal')
        FROM workspaces w
        WHERE w.id = NEW.workspace_id
          AND (w.plan_credits_micros <> NEW.plan_after_micros OR w.wallet_micros <> NEW.wallet_after_micros);
     END",
    "CREATE TRIGGER workspaces_balance_guard BEFORE UPDATE OF plan_credits_micros, wallet_micros ON workspaces
     WHEN NEW.plan_credits_micros <> OLD.plan_credits_micros OR NEW.wallet_micros <> OLD.wallet_micros
     BEGIN
        SELECT RAISE(ABORT, 'ledger: balances move only through the journal')
        WHERE NEW.last_journal_id = OLD.last_journal_id
           OR NEW.last_journal_id <> (SELECT MAX(id) FROM journal WHERE workspace_id = NEW.id);
     END",
    // A history row posts itself: one journal row per bucket it moves, against the outside bucket
    // its type implies. The statement fails if the after-balances it claims are not the result.
    concat!(
        "CREATE TRIGGER transactions_post AFTER INSERT ON transactions
     BEGIN
        INSERT INTO journal (workspace_id, transaction_id, debit_bucket, credit_bucket, amount_micros,
                             plan_after_micros, wallet_after_micros, created_at)
        SELECT NEW.workspace_id, NEW.id,
               CASE WHEN NEW.plan_delta_micros < 0 THEN 'plan' ELSE x.bucket END,
               CASE WHEN NEW.plan_delta_micros < 0 THEN x.bucket ELSE 'plan' END,
               abs(NEW.plan_delta_micros), w.plan_credits_micros + NEW.plan_delta_micros,
               w.wallet_micros, NEW.created_at
        FROM workspaces w, ",
        outside_bucket!(),
        "
        WHERE w.id = NEW.workspace_id AND NEW.plan_delta_micros <> 0;
        INSERT INTO journal (workspace_id, transaction_id, debit_bucket, credit_bucket, amount_micros,
                             plan_after_micros, wallet_after_micros, created_at)
        SELECT NEW.workspace_id, NEW.id,
               CASE WHEN NEW.wallet_delta_micros < 0 THEN 'wallet' ELSE x.bucket END,
               CASE WHEN NEW.wallet_delta_micros < 0 THEN x.bucket ELSE 'wallet' END,
               abs(NEW.wallet_delta_micros), w.plan_credits_micros,
               w.wallet_micros + NEW.wallet_delta_micros, NEW.created_at
        FROM workspaces w, ",
        outside_bucket!(),
        "
        WHERE w.id = NEW.workspace_id AND NEW.wallet_delta_micros <> 0;
        SELECT RAISE(ABORT, 'ledger: transaction after-balances do not match the journal')
        FROM workspaces w
        WHERE w.id = NEW.workspace_id
          AND (w.plan_credits_micros <> NEW.plan_after_micros OR w.wallet_micros <> NEW.wallet_after_micros);
     END"
    ),
    // Agents (R6), created implicitly with defaults on first use.
    "CREATE TABLE agents (
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        agent_id TEXT NOT NULL,
        overage_policy TEXT NOT NULL DEFAULT 'use_balance' CHECK (overage_policy IN ('stop', 'use_balance')),
        monthly_spend_limit_micros INTEGER CHECK (monthly_spend_limit_micros >= 0),
        daily_call_limit INTEGER CHECK (daily_call_limit >= 0),
        max_concurrent_calls INTEGER CHECK (max_concurrent_calls >= 0),
        -- Spend in the cycle that started at spend_cycle_start_at (a new cycle resets it).
        spend_cycle_start_at INTEGER NOT NULL DEFAULT 0,
        cycle_spend_micros INTEGER NOT NULL DEFAULT 0 CHECK (cycle_spend_micros >= 0),
        -- Calls authorized on call_day (local date in the workspace time zone).
        call_day TEXT NOT NULL DEFAULT '',
        day_calls INTEGER NOT NULL DEFAULT 0 CHECK (day_calls >= 0),
        created_at INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, agent_id)
    ) STRICT, WITHOUT ROWID",
    // Two-phase calls (R5). A call's hold is split into the plan and wallet parts it reserves.
    "CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        agent_id TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
        to_number TEXT NOT NULL,
        from_number TEXT NOT NULL,
        number_type TEXT NOT NULL,
        rate_micros INTEGER NOT NULL CHECK (rate_micros >= 0),
        increment_secs INTEGER NOT NULL CHECK (increment_secs > 0),
        minimum_secs INTEGER NOT NULL CHECK (minimum_secs >= 0),
        status TEXT NOT NULL CHECK (status IN ('active', 'ended', 'expired')),
        grace INTEGER NOT NULL DEFAULT 0 CHECK (grace IN (0, 1)),
        reserved_secs INTEGER NOT NULL CHECK (reserved_secs >= 0),
        held_plan_micros INTEGER NOT NULL DEFAULT 0 CHECK (held_plan_micros >= 0),
        held_wallet_micros INTEGER NOT NULL DEFAULT 0 CHECK (held_wallet_micros >= 0),
        request_hash TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        ended_at INTEGER,
        duration_secs INTEGER,
        charged_micros INTEGER,
        unbilled_micros INTEGER,
        transaction_id INTEGER REFERENCES transactions (id),
        CHECK (status = 'active' OR (held_plan_micros = 0 AND held_wallet_micros = 0 AND ended_at IS NOT NULL)),
        CHECK (status = 'active' OR charged_micros IS NOT NULL)
    ) STRICT",
    "CREATE INDEX calls_active_by_agent ON calls (workspace_id, agent_id) WHERE status = 'active'",
    "CREATE INDEX calls_active_by_expiry ON calls (expires_at) WHERE status = 'active'",
    // A posted call never changes again: no hold is posted twice.
    "CREATE TRIGGER calls_posted_once BEFORE UPDATE ON calls WHEN OLD.status <> 'active'
     BEGIN SELECT RAISE(ABORT, 'ledger: call already posted'); END",
    "CREATE TRIGGER calls_hold_insert AFTER INSERT ON calls
     BEGIN
        UPDATE workspaces SET held_plan_micros = held_plan_micros + NEW.held_plan_micros,
                              held_wallet_micros = held_wallet_micros + NEW.held_wallet_micros
        WHERE id = NEW.workspace_id;
     END",
    "CREATE TRIGGER calls_hold_update AFTER UPDATE OF held_plan_micros, held_wallet_micros ON calls
     BEGIN
        UPDATE workspaces SET
            held_plan_micros = held_plan_micros + NEW.held_plan_micros - OLD.held_plan_micros,
            held_wallet_micros = held_wallet_micros + NEW.held_wallet_micros - OLD.held_wallet_micros
        WHERE id = NEW.workspace_id;
     END",
    // Idempotent usage debits (R8): the first result of every event id.
    "CREATE TABLE usage_events (
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        event_id TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        transaction_id INTEGER REFERENCES transactions (id),
        result TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, event_id)
    ) STRICT, WITHOUT ROWID",
    // Card payments: manual top-ups and auto-recharges (R9, R11, R21). Money, not credits (module
    // docs, "Money columns"): amount_micros, reversed_amount_micros.
    "CREATE TABLE payments (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        kind TEXT NOT NULL CHECK (kind IN ('topup', 'auto_recharge')),
        amount_micros INTEGER NOT NULL CHECK (amount_micros > 0),
        credits_micros INTEGER NOT NULL CHECK (credits_micros > 0),
        status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        stripe_payment_intent_id TEXT UNIQUE,
        failure_code TEXT,
        failure_message TEXT,
        transaction_id INTEGER REFERENCES transactions (id),
        reversed_credits_micros INTEGER NOT NULL DEFAULT 0 CHECK (reversed_credits_micros >= 0),
        reversed_amount_micros INTEGER NOT NULL DEFAULT 0 CHECK (reversed_amount_micros >= 0),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        CHECK (reversed_credits_micros <= credits_micros),
        CHECK ((status = 'succeeded') = (transaction_id IS NOT NULL))
    ) STRICT",
    "CREATE INDEX payments_by_workspace ON payments (workspace_id, created_at)",
    "CREATE INDEX payments_pending ON payments (updated_at) WHERE status = 'pending'",
    // R11: never a second automatic charge while one is in flight.
    "CREATE UNIQUE INDEX payments_one_recharge_in_flight ON payments (workspace_id)
        WHERE kind = 'auto_recharge' AND status = 'pending'",
    // A success is final (credits land once); a failure may still be followed by a success
    // (the customer retries the same PaymentIntent with another card).
    "CREATE TRIGGER payments_succeeded_final BEFORE UPDATE OF status, transaction_id, credits_micros ON payments
     WHEN OLD.status = 'succeeded'
     BEGIN SELECT RAISE(ABORT, 'ledger: payment already credited'); END",
    // Refunds and disputes (R12), once per Stripe object id. Money, not credits (module docs,
    // "Money columns"): amount_micros.
    "CREATE TABLE reversals (
        id TEXT PRIMARY KEY,
        payment_id TEXT NOT NULL REFERENCES payments (id),
        kind TEXT NOT NULL CHECK (kind IN ('refund', 'dispute')),
        amount_micros INTEGER NOT NULL CHECK (amount_micros > 0),
        credits_micros INTEGER NOT NULL CHECK (credits_micros >= 0),
        transaction_id INTEGER REFERENCES transactions (id),
        created_at INTEGER NOT NULL
    ) STRICT",
    // Cycles (R13, R16): one row per (workspace, cycle start), so renewal is idempotent.
    "CREATE TABLE cycles (
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        start_at INTEGER NOT NULL,
        end_at INTEGER NOT NULL,
        plan_id TEXT NOT NULL,
        credits_granted_micros INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, start_at),
        CHECK (end_at > start_at)
    ) STRICT, WITHOUT ROWID",
    // Paid subscription invoices, by the period they pay for (R13).
    "CREATE TABLE invoices_paid (
        invoice_id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        period_start_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT",
    "CREATE INDEX invoices_paid_by_period ON invoices_paid (workspace_id, period_start_at)",
];

/// Stripe webhooks name customers and subscriptions: find their workspace by index, and never
/// let two workspaces share one.
const V2: &[&str] = &[
    "CREATE UNIQUE INDEX workspaces_by_stripe_customer ON workspaces (stripe_customer_id)
        WHERE stripe_customer_id IS NOT NULL",
    "CREATE UNIQUE INDEX workspaces_by_stripe_subscription ON workspaces (stripe_subscription_id)
        WHERE stripe_subscription_id IS NOT NULL",
];

/// Indexes the benchmarks showed missing (docs/performance.md): lookups that scanned a table.
const V3: &[&str] = &[
    // Every call authorization and heartbeat first posts the workspace's overdue holds: find
    // them by workspace, not among the active calls of every workspace.
    "CREATE INDEX calls_active_by_workspace_expiry ON calls (workspace_id, expires_at)
        WHERE status = 'active'",
    // The renewal sweep's test-clock branch scanned every workspace on every batch (also when
    // nothing is due); workspaces with a test clock are few.
    "CREATE INDEX workspaces_test_clock_cycle_end ON workspaces (cycle_end_at)
        WHERE plan_id IS NOT NULL AND test_clock_at IS NOT NULL",
];

/// A usage debit as ONE statement (docs/performance.md): inserting a row into this view posts
/// the history row (whose triggers write the journal and check the balances after), adds the
/// charge to the agent's cycle spend (creating the agent on first use), starts the grace period
/// if nothing is left, and stores the replay record with its transaction id. The ledger computes
/// every value, and the statement that inserts it is guarded by what that computation read
/// (`usage::debit_write`).
const V4: &[&str] = &[
    "CREATE VIEW usage_debit AS SELECT
        NULL AS workspace_id, NULL AS agent_id, NULL AS event_id, NULL AS request_hash,
        NULL AS result, NULL AS transaction_id, NULL AS kind, NULL AS quantity_micros,
        NULL AS unit, NULL AS rate_micros, NULL AS plan_delta_micros, NULL AS wallet_delta_micros,
        NULL AS plan_after_micros, NULL AS wallet_after_micros, NULL AS occurred_at,
        NULL AS created_at, NULL AS spend_cycle_start_at, NULL AS call_day
     WHERE 0",
    "CREATE TRIGGER usage_debit_post INSTEAD OF INSERT ON usage_debit
     BEGIN
        INSERT INTO transactions (id, workspace_id, type, agent_id, reference, quantity_micros, unit,
                                  rate_micros, plan_delta_micros, wallet_delta_micros,
                                  plan_after_micros, wallet_after_micros, occurred_at, created_at)
        VALUES (NEW.transaction_id, NEW.workspace_id, NEW.kind, NEW.agent_id, NEW.event_id,
                NEW.quantity_micros, NEW.unit, NEW.rate_micros, NEW.plan_delta_micros,
                NEW.wallet_delta_micros, NEW.plan_after_micros, NEW.wallet_after_micros,
                NEW.occurred_at, NEW.created_at);
        INSERT INTO agents (workspace_id, agent_id, spend_cycle_start_at, cycle_spend_micros,
                            call_day, day_calls, created_at)
        VALUES (NEW.workspace_id, NEW.agent_id, NEW.spend_cycle_start_at,
                -(NEW.plan_delta_micros + NEW.wallet_delta_micros), NEW.call_day, 0, NEW.created_at)
        ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
            cycle_spend_micros = CASE WHEN spend_cycle_start_at = excluded.spend_cycle_start_at
                                      THEN cycle_spend_micros ELSE 0 END + excluded.cycle_spend_micros,
            spend_cycle_start_at = excluded.spend_cycle_start_at,
            day_calls = CASE WHEN call_day = excluded.call_day THEN day_calls ELSE 0 END,
            call_day = excluded.call_day;
        UPDATE workspaces SET exhausted_at = NEW.created_at
        WHERE id = NEW.workspace_id AND exhausted_at IS NULL
          AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0;
        INSERT INTO usage_events (workspace_id, event_id, request_hash, transaction_id, result, created_at)
        VALUES (NEW.workspace_id, NEW.event_id, NEW.request_hash, NEW.transaction_id,
                json_set(NEW.result, '$.transaction_id', NEW.transaction_id), NEW.created_at);
     END",
];

/// A call authorization as ONE statement, like a debit (V4): inserting a row into this view
/// inserts the call (whose trigger adds its hold to the workspace's holds), counts it in the
/// agent's day (resetting a cycle's spend or a day's count that is over, creating the agent on
/// first use), and starts the grace period: at once for a grace call, else if the hold left
/// nothing available (its row type: `HoldRow` in `calls/authorize.rs`).
const V5: &[&str] = &[
    "CREATE VIEW call_authorize AS SELECT
        NULL AS call_id, NULL AS workspace_id, NULL AS agent_id, NULL AS direction,
        NULL AS to_number, NULL AS from_number, NULL AS number_type, NULL AS rate_micros,
        NULL AS increment_secs, NULL AS minimum_secs, NULL AS grace, NULL AS reserved_secs,
        NULL AS held_plan_micros, NULL AS held_wallet_micros, NULL AS request_hash,
        NULL AS started_at, NULL AS expires_at, NULL AS spend_cycle_start_at, NULL AS call_day
     WHERE 0",
    "CREATE TRIGGER call_authorize_hold INSTEAD OF INSERT ON call_authorize
     BEGIN
        INSERT INTO calls (call_id, workspace_id, agent_id, direction, to_number, from_number,
                           number_type, rate_micros, increment_secs, minimum_secs, status, grace,
                           reserved_secs, held_plan_micros, held_wallet_micros, request_hash,
                           started_at, expires_at)
        VALUES (NEW.call_id, NEW.workspace_id, NEW.agent_id, NEW.direction, NEW.to_number,
                NEW.from_number, NEW.number_type, NEW.rate_micros, NEW.increment_secs,
                NEW.minimum_secs, 'active', NEW.grace, NEW.reserved_secs, NEW.held_plan_micros,
                NEW.held_wallet_micros, NEW.request_hash, NEW.started_at, NEW.expires_at);
        INSERT INTO agents (workspace_id, agent_id, spend_cycle_start_at, cycle_spend_micros,
                            call_day, day_calls, created_at)
        VALUES (NEW.workspace_id, NEW.agent_id, NEW.spend_cycle_start_at, 0, NEW.call_day, 1,
                NEW.started_at)
        ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
            cycle_spend_micros = CASE WHEN spend_cycle_start_at = excluded.spend_cycle_start_at
                                      THEN cycle_spend_micros ELSE 0 END,
            spend_cycle_start_at = excluded.spend_cycle_start_at,
            day_calls = CASE WHEN call_day = excluded.call_day THEN day_calls ELSE 0 END + 1,
            call_day = excluded.call_day;
        UPDATE workspaces SET exhausted_at = COALESCE(exhausted_at, NEW.started_at)
        WHERE id = NEW.workspace_id AND NEW.grace = 1;
        UPDATE workspaces SET exhausted_at = NEW.started_at
        WHERE id = NEW.workspace_id AND NEW.grace = 0 AND exhausted_at IS NULL
          AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0;
     END",
];

/// Counters of calls in progress, kept by the statements that open, extend and close holds, so
/// that a debit or an authorization reads them instead of counting and summing the agent's
/// active calls (docs/performance.md, round 4: with 1,000 calls in progress on one agent, every
/// debit and authorization scanned them twice). `audit.rs` checks each counter against the sum it
/// replaces.
const V6: &[&str] = &[
    "ALTER TABLE agents ADD COLUMN active_calls INTEGER NOT NULL DEFAULT 0 CHECK (active_calls >= 0)",
    "ALTER TABLE agents ADD COLUMN active_held_micros INTEGER NOT NULL DEFAULT 0
        CHECK (active_held_micros >= 0)",
    "ALTER TABLE workspaces ADD COLUMN active_calls INTEGER NOT NULL DEFAULT 0 CHECK (active_calls >= 0)",
    // Calls in progress when this migration runs: every one has its agent row (an authorization
    // creates it), but a database written by hand might not.
    "INSERT INTO agents (workspace_id, agent_id, created_at)
     SELECT workspace_id, agent_id, MIN(started_at) FROM calls WHERE status = 'active'
     GROUP BY workspace_id, agent_id
     ON CONFLICT (workspace_id, agent_id) DO NOTHING",
    "UPDATE agents SET
        active_calls = (SELECT COUNT(*) FROM calls c WHERE c.workspace_id = agents.workspace_id
                          AND c.agent_id = agents.agent_id AND c.status = 'active'),
        active_held_micros = (SELECT COALESCE(SUM(c.held_plan_micros + c.held_wallet_micros), 0)
                              FROM calls c WHERE c.workspace_id = agents.workspace_id
                                AND c.agent_id = agents.agent_id AND c.status = 'active')
     WHERE EXISTS (SELECT 1 FROM calls c WHERE c.workspace_id = agents.workspace_id
                     AND c.agent_id = agents.agent_id AND c.status = 'active')",
    "UPDATE workspaces SET active_calls = (SELECT COUNT(*) FROM calls c
                                           WHERE c.workspace_id = workspaces.id AND c.status = 'active')
     WHERE EXISTS (SELECT 1 FROM calls c WHERE c.workspace_id = workspaces.id AND c.status = 'active')",
    // The hold triggers of V1, now also counting calls per workspace and per agent. The agent
    // row is created here if the statement that inserts the call has not created it yet.
    "DROP TRIGGER calls_hold_insert",
    "DROP TRIGGER calls_hold_update",
    "CREATE TRIGGER calls_hold_insert AFTER INSERT ON calls WHEN NEW.status = 'active'
     BEGIN
        UPDATE workspaces SET held_plan_micros = held_plan_micros + NEW.held_plan_micros,
                              held_wallet_micros = held_wallet_micros + NEW.held_wallet_micros,
                              active_calls = active_calls + 1
        WHERE id = NEW.workspace_id;
        INSERT INTO agents (workspace_id, agent_id, created_at, active_calls, active_held_micros)
        VALUES (NEW.workspace_id, NEW.agent_id, NEW.started_at, 1,
                NEW.held_plan_micros + NEW.held_wallet_micros)
        ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
            active_calls = active_calls + 1,
            active_held_micros = active_held_micros + excluded.active_held_micros;
     END",
    "CREATE TRIGGER calls_hold_update AFTER UPDATE OF held_plan_micros, held_wallet_micros, status ON calls
     BEGIN
        UPDATE workspaces SET
            held_plan_micros = held_plan_micros + NEW.held_plan_micros - OLD.held_plan_micros,
            held_wallet_micros = held_wallet_micros + NEW.held_wallet_micros - OLD.held_wallet_micros,
            active_calls = active_calls + (NEW.status = 'active') - (OLD.status = 'active')
        WHERE id = NEW.workspace_id;
        UPDATE agents SET
            active_calls = active_calls + (NEW.status = 'active') - (OLD.status = 'active'),
            active_held_micros = active_held_micros
                + NEW.held_plan_micros + NEW.held_wallet_micros
                - OLD.held_plan_micros - OLD.held_wallet_micros
        WHERE workspace_id = NEW.workspace_id AND agent_id = NEW.agent_id;
     END",
    // The counters follow a call by its workspace and agent: those never change.
    "CREATE TRIGGER calls_owner_fixed BEFORE UPDATE OF workspace_id, agent_id ON calls
     BEGIN SELECT RAISE(ABORT, 'ledger: a call never changes workspace or agent'); END",
];

/// A heartbeat and the posting of a call as ONE statement each, like a debit (V4) and an
/// authorization (V5): the ledger decides every value, and the statement that inserts the row is
/// guarded by the read it was decided from (`guarded.rs`).
const V7: &[&str] = &[
    // Sets the call's hold (its hold trigger moves the workspace's and the agent's counters) and
    // starts the grace period if nothing is left.
    "CREATE VIEW call_extend AS SELECT
        NULL AS call_id, NULL AS workspace_id, NULL AS held_plan_micros, NULL AS held_wallet_micros,
        NULL AS reserved_secs, NULL AS expires_at, NULL AS now
     WHERE 0",
    "CREATE TRIGGER call_extend_hold INSTEAD OF INSERT ON call_extend
     BEGIN
        UPDATE calls SET held_plan_micros = NEW.held_plan_micros,
                         held_wallet_micros = NEW.held_wallet_micros,
                         reserved_secs = NEW.reserved_secs, expires_at = NEW.expires_at
        WHERE call_id = NEW.call_id;
        UPDATE workspaces SET exhausted_at = NEW.now
        WHERE id = NEW.workspace_id AND exhausted_at IS NULL
          AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0;
     END",
    // Posts the call's charge (the history row; its triggers write the journal and check the
    // balances after), releases its hold, adds the charge to the agent's cycle spend and starts
    // the grace period if nothing is left. Only an active call is posted, once.
    "CREATE VIEW call_post AS SELECT
        NULL AS call_id, NULL AS workspace_id, NULL AS agent_id, NULL AS transaction_id,
        NULL AS status, NULL AS quantity_micros, NULL AS rate_micros, NULL AS plan_delta_micros,
        NULL AS wallet_delta_micros, NULL AS plan_after_micros, NULL AS wallet_after_micros,
        NULL AS description, NULL AS duration_secs, NULL AS charged_micros,
        NULL AS unbilled_micros, NULL AS now, NULL AS spend_cycle_start_at, NULL AS call_day
     WHERE 0",
    "CREATE TRIGGER call_post_charge INSTEAD OF INSERT ON call_post
     BEGIN
        SELECT RAISE(ABORT, 'ledger: call already posted')
        WHERE NOT EXISTS (SELECT 1 FROM calls WHERE call_id = NEW.call_id AND status = 'active');
        -- A call takes the wallet below zero only on grace, or within what it held of it.
        SELECT RAISE(ABORT, 'ledger: a call charged more wallet than it held')
        FROM calls
        WHERE call_id = NEW.call_id AND grace = 0 AND NEW.wallet_after_micros < 0
          AND -NEW.wallet_delta_micros > held_wallet_micros;
        -- The hold is released before the charge is posted: plan credits never drop below what
        -- calls hold of them (V8), even for the instant between the two.
        UPDATE calls SET held_plan_micros = 0, held_wallet_micros = 0 WHERE call_id = NEW.call_id;
        INSERT INTO transactions (id, workspace_id, type, agent_id, reference, quantity_micros, unit,
                                  rate_micros, plan_delta_micros, wallet_delta_micros,
                                  plan_after_micros, wallet_after_micros, occurred_at, created_at,
                                  description)
        VALUES (NEW.transaction_id, NEW.workspace_id, 'call', NEW.agent_id, NEW.call_id,
                NEW.quantity_micros, 'second', NEW.rate_micros, NEW.plan_delta_micros,
                NEW.wallet_delta_micros, NEW.plan_after_micros, NEW.wallet_after_micros, NEW.now,
                NEW.now, NEW.description);
        -- Posted once the charge exists: naming a history row not inserted yet would leave a
        -- foreign key pending, and inserting it would then scan every call for the reference.
        UPDATE calls SET status = NEW.status, ended_at = NEW.now, duration_secs = NEW.duration_secs,
                         charged_micros = NEW.charged_micros, unbilled_micros = NEW.unbilled_micros,
                         transaction_id = NEW.transaction_id
        WHERE call_id = NEW.call_id;
        INSERT INTO agents (workspace_id, agent_id, spend_cycle_start_at, cycle_spend_micros,
                            call_day, day_calls, created_at)
        VALUES (NEW.workspace_id, NEW.agent_id, NEW.spend_cycle_start_at, NEW.charged_micros,
                NEW.call_day, 0, NEW.now)
        ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
            cycle_spend_micros = CASE WHEN spend_cycle_start_at = excluded.spend_cycle_start_at
                                      THEN cycle_spend_micros ELSE 0 END + excluded.cycle_spend_micros,
            spend_cycle_start_at = excluded.spend_cycle_start_at,
            day_calls = CASE WHEN call_day = excluded.call_day THEN day_calls ELSE 0 END,
            call_day = excluded.call_day;
        UPDATE workspaces SET exhausted_at = NEW.now
        WHERE id = NEW.workspace_id AND exhausted_at IS NULL
          AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0;
     END",
];

/// Two invariants the audit only checked after the fact, now refused by the database as well.
const V8: &[&str] = &[
    // Plan credits are never below what calls in progress hold of them: holds are reserved from
    // what is available, expiry takes only what is not held, and a call releases its hold before
    // its charge is posted.
    "CREATE TRIGGER workspaces_plan_covers_holds
     BEFORE UPDATE OF plan_credits_micros, held_plan_micros ON workspaces
     WHEN NEW.plan_credits_micros < NEW.held_plan_micros
     BEGIN SELECT RAISE(ABORT, 'ledger: plan credits below what calls hold of them'); END",
    // The wallet goes below zero only through a refund or a dispute (R12) or a call's charge
    // (an inbound grace call, R7, or a call within what it held: `call_post` checks which).
    "CREATE TRIGGER transactions_wallet_below_zero
     BEFORE INSERT ON transactions
     WHEN NEW.wallet_delta_micros < 0 AND NEW.wallet_after_micros < 0
          AND NEW.type NOT IN ('refund', 'dispute', 'call')
     BEGIN SELECT RAISE(ABORT, 'ledger: only a refund, a dispute or a call takes the wallet below zero'); END",
];

/// What the counters of V6 made dead: nothing reads an agent's active calls by index any more,
/// and every call opened or closed paid for one more index entry.
const V9: &[&str] = &["DROP INDEX calls_active_by_agent"];

/// Each workspace's usage spend per UTC day, for the runway forecast of the billing summary
/// (`runway.rs`): reading 30 rows instead of 30 days of a busy workspace's history (millions of
/// rows). A trigger keeps it with one small upsert per usage row, whichever statement inserts the
/// row (a debit, a batch, a call's posting); `audit.rs` checks it against the history, day by
/// day. No CHECK on the spend: a constraint that aborts would refuse the debit itself.
const V10: &[&str] = &[
    concat!(
        "CREATE TABLE usage_daily (
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        -- occurred_at / ",
        calendar::secs_per_day!(),
        ": the UTC day number.
        day INTEGER NOT NULL,
        spent_micros INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, day)
    ) STRICT, WITHOUT ROWID"
    ),
    // The history written before this migration, in one pass.
    concat!(
        "INSERT INTO usage_daily (workspace_id, day, spent_micros)
     SELECT workspace_id, occurred_at / ",
        calendar::secs_per_day!(),
        ", -SUM(plan_delta_micros + wallet_delta_micros)
     FROM transactions WHERE type IN ('call', 'message', 'sms', 'stt', 'ai_task')
     GROUP BY workspace_id, occurred_at / ",
        calendar::secs_per_day!()
    ),
    // Every usage row adds its charge to its day, a charge of zero included (the row then exists:
    // the audit expects a rollup row for every day with a usage row, and none for other days).
    concat!(
        "CREATE TRIGGER transactions_usage_daily AFTER INSERT ON transactions
     WHEN NEW.type IN ('call', 'message', 'sms', 'stt', 'ai_task')
     BEGIN
        INSERT INTO usage_daily (workspace_id, day, spent_micros)
        VALUES (NEW.workspace_id, NEW.occurred_at / ",
        calendar::secs_per_day!(),
        ",
                -(NEW.plan_delta_micros + NEW.wallet_delta_micros))
        ON CONFLICT (workspace_id, day) DO UPDATE SET
            spent_micros = spent_micros + excluded.spent_micros;
     END"
    ),
];

/// The migration that creates the notification outbox.
const NOTIFICATIONS_VERSION: i64 = 11;

/// Notifications to the platform (docs/notifications.md): an outbox whose rows are written by the
/// same statement as the change each one reports, so an event is never lost and never sent for a
/// change that did not commit. A level event compares the value before and after the change: it
/// fires once per crossing, and re-arms only when the value rises back above the level.
///
/// `facts` holds what the event needs in micros and ids; `notifications.rs` renders the payload
/// (decimal strings, the workspace's currency) when it is delivered or listed. `occurred_at` is
/// workspace time (test clocks); `created_at`, `next_attempt_at` and `retry_until` are real time,
/// for delivery.
const V11: &[&str] = &[
    "CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        type TEXT NOT NULL,
        facts TEXT NOT NULL CHECK (json_valid(facts)),
        occurred_at INTEGER NOT NULL,
        -- Real time. A trigger's event is written now, due now, and retried for 3 days
        -- (notifications::RETRY_WINDOW_SECS); the ledger's own events give these explicitly.
        created_at INTEGER NOT NULL DEFAULT (unixepoch()),
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        next_attempt_at INTEGER NOT NULL DEFAULT (unixepoch()),
        retry_until INTEGER NOT NULL DEFAULT (unixepoch() + 259200),
        last_attempt_at INTEGER,
        last_response_status INTEGER,
        last_error TEXT,
        delivered_at INTEGER
    ) STRICT",
    "CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending'",
    "CREATE INDEX notifications_by_workspace ON notifications (workspace_id, id)",
    // The balance levels of the newest catalog (its low-balance threshold and extra levels),
    // written with each catalog version (catalog.rs), read by the level trigger below.
    "CREATE TABLE notification_levels (level_micros INTEGER PRIMARY KEY CHECK (level_micros >= 0)) STRICT",
    // The newest catalog's inbound grace, for the grace events.
    "CREATE TABLE notification_settings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        inbound_grace_secs INTEGER NOT NULL CHECK (inbound_grace_secs >= 0)
    ) STRICT",
    // Workspaces in their grace period (R7), until it ends by time (notifications::end_graces)
    // or because the balance came back (the trigger below).
    "CREATE TABLE grace_watch (
        workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id),
        exhausted_at INTEGER NOT NULL,
        ends_at INTEGER NOT NULL
    ) STRICT",
    "CREATE INDEX grace_watch_by_end ON grace_watch (ends_at)",
    // balance.low: plan credits + wallet fell to or below a level. Plan credits expiring at
    // cycle end are not a fall the platform should hear of (the renewal grants new ones in the
    // same transaction); a workspace they leave empty gets balance.depleted.
    "CREATE TRIGGER notify_balance_low AFTER INSERT ON transactions
     WHEN NEW.type <> 'plan_expiry' AND NEW.plan_delta_micros + NEW.wallet_delta_micros < 0
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        SELECT NEW.workspace_id, 'balance.low',
               json_object('level_micros', l.level_micros, 'plan_credits_micros', NEW.plan_after_micros,
                           'wallet_micros', NEW.wallet_after_micros, 'transaction_id', NEW.id),
               NEW.created_at
        FROM notification_levels l
        WHERE l.level_micros < NEW.plan_after_micros + NEW.wallet_after_micros
                               - NEW.plan_delta_micros - NEW.wallet_delta_micros
          AND l.level_micros >= NEW.plan_after_micros + NEW.wallet_after_micros
        ORDER BY l.level_micros DESC;
     END",
    // payment.refunded, payment.disputed (R12).
    "CREATE TRIGGER notify_reversal AFTER INSERT ON transactions
     WHEN NEW.type IN ('refund', 'dispute')
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        VALUES (NEW.workspace_id, CASE NEW.type WHEN 'refund' THEN 'payment.refunded' ELSE 'payment.disputed' END,
                json_object('credits_micros', -(NEW.plan_delta_micros + NEW.wallet_delta_micros),
                            'reference', NEW.reference, 'plan_credits_micros', NEW.plan_after_micros,
                            'wallet_micros', NEW.wallet_after_micros, 'transaction_id', NEW.id),
                NEW.created_at);
     END",
    // balance.depleted, and grace.started when the catalog gives a grace period (R7).
    "CREATE TRIGGER notify_depleted AFTER UPDATE OF exhausted_at ON workspaces
     WHEN OLD.exhausted_at IS NULL AND NEW.exhausted_at IS NOT NULL
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        VALUES (NEW.id, 'balance.depleted',
                json_object('plan_credits_micros', NEW.plan_credits_micros, 'wallet_micros', NEW.wallet_micros,
                            'held_micros', NEW.held_plan_micros + NEW.held_wallet_micros),
                NEW.exhausted_at);
        INSERT INTO grace_watch (workspace_id, exhausted_at, ends_at)
        SELECT NEW.id, NEW.exhausted_at, NEW.exhausted_at + s.inbound_grace_secs
        FROM notification_settings s WHERE s.id = 1 AND s.inbound_grace_secs > 0
        ON CONFLICT (workspace_id) DO UPDATE SET exhausted_at = excluded.exhausted_at, ends_at = excluded.ends_at;
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        SELECT NEW.id, 'grace.started', json_object('grace_ends_at', g.ends_at),
               NEW.exhausted_at
        FROM grace_watch g WHERE g.workspace_id = NEW.id AND g.exhausted_at = NEW.exhausted_at;
     END",
    // balance.restored; a grace period still running ends with it. The time is that of the
    // journal row that brought credit back (workspace time, as the ledger wrote it).
    "CREATE TRIGGER notify_restored AFTER UPDATE OF exhausted_at ON workspaces
     WHEN OLD.exhausted_at IS NOT NULL AND NEW.exhausted_at IS NULL
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        SELECT NEW.id, 'grace.ended',
               json_object('reason', CASE WHEN g.ends_at <= j.created_at THEN 'expired' ELSE 'balance_restored' END),
               MIN(g.ends_at, j.created_at)
        FROM grace_watch g, (SELECT COALESCE(MAX(created_at), unixepoch()) AS created_at
                             FROM journal WHERE id = NEW.last_journal_id) AS j
        WHERE g.workspace_id = NEW.id;
        DELETE FROM grace_watch WHERE workspace_id = NEW.id;
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        SELECT NEW.id, 'balance.restored',
               json_object('plan_credits_micros', NEW.plan_credits_micros, 'wallet_micros', NEW.wallet_micros,
                           'held_micros', NEW.held_plan_micros + NEW.held_wallet_micros),
               COALESCE(MAX(j.created_at), NEW.test_clock_at, unixepoch())
        FROM journal j WHERE j.id = NEW.last_journal_id;
     END",
    // topup.succeeded, topup.failed, auto_recharge.succeeded, auto_recharge.failed.
    "CREATE TRIGGER notify_payment_settled AFTER UPDATE OF status ON payments
     WHEN NEW.status IN ('succeeded', 'failed') AND OLD.status <> NEW.status
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        VALUES (NEW.workspace_id,
                CASE NEW.kind WHEN 'topup' THEN 'topup.' ELSE 'auto_recharge.' END || NEW.status,
                json_object('payment_id', NEW.id, 'amount_micros', NEW.amount_micros,
                            'credits_micros', NEW.credits_micros, 'failure_code', NEW.failure_code,
                            'failure_message', NEW.failure_message),
                COALESCE((SELECT test_clock_at FROM workspaces WHERE id = NEW.workspace_id), unixepoch()));
     END",
    // auto_recharge.disabled: turned off by the owner, or by the ledger (a card removed, a hard
    // decline), whose warning says why.
    "CREATE TRIGGER notify_auto_recharge_disabled AFTER UPDATE OF auto_recharge_enabled ON workspaces
     WHEN OLD.auto_recharge_enabled = 1 AND NEW.auto_recharge_enabled = 0
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        VALUES (NEW.id, 'auto_recharge.disabled', json_object('warning', NEW.auto_recharge_warning),
                COALESCE(NEW.test_clock_at, unixepoch()));
     END",
    // plan.changed: every change of plan, the first one included (from null).
    "CREATE TRIGGER notify_plan_changed AFTER UPDATE OF plan_id ON workspaces
     WHEN OLD.plan_id IS NOT NEW.plan_id
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        VALUES (NEW.id, 'plan.changed', json_object('from_plan_id', OLD.plan_id, 'to_plan_id', NEW.plan_id),
                COALESCE(NEW.test_clock_at, unixepoch()));
     END",
    "CREATE TRIGGER notify_past_due AFTER UPDATE OF subscription_status ON workspaces
     WHEN NEW.subscription_status = 'past_due' AND OLD.subscription_status <> 'past_due'
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        VALUES (NEW.id, 'subscription.past_due', json_object('plan_id', NEW.plan_id),
                COALESCE(NEW.test_clock_at, unixepoch()));
     END",
    // agent.spend_limit.warning (80%) and agent.spend_limit.reached (100%) of an agent's monthly
    // limit, by posted spend. A new cycle resets the spend, which re-arms both. Updates only: an
    // agent row inserted by a debit has no limit yet, and one inserted by setting its limits has
    // spent nothing.
    "CREATE TRIGGER notify_agent_spend AFTER UPDATE OF cycle_spend_micros ON agents
     WHEN NEW.monthly_spend_limit_micros > 0 AND NEW.cycle_spend_micros * 5 >= NEW.monthly_spend_limit_micros * 4
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        SELECT NEW.workspace_id, level.type,
               json_object('agent_id', NEW.agent_id, 'limit_micros', NEW.monthly_spend_limit_micros,
                           'spent_micros', NEW.cycle_spend_micros, 'percent', level.percent),
               COALESCE((SELECT test_clock_at FROM workspaces WHERE id = NEW.workspace_id), unixepoch())
        FROM (SELECT 'agent.spend_limit.warning' AS type, 80 AS percent UNION ALL
              SELECT 'agent.spend_limit.reached', 100) AS level
        WHERE NEW.cycle_spend_micros * 100 >= NEW.monthly_spend_limit_micros * level.percent
          AND (CASE WHEN OLD.spend_cycle_start_at = NEW.spend_cycle_start_at THEN OLD.cycle_spend_micros ELSE 0 END) * 100
              < NEW.monthly_spend_limit_micros * level.percent
        ORDER BY level.percent;
     END",
];

/// `runway.low` (docs/notifications.md): whether each workspace's runway was last found short,
/// so the event fires once per crossing (a workspace never found short has no row), and where
/// the sweep that checks them goes on from.
const V12: &[&str] = &[
    "CREATE TABLE runway_watch (
        workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id),
        low INTEGER NOT NULL CHECK (low IN (0, 1)),
        checked_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID",
    "CREATE TABLE sweep_cursors (
        name TEXT PRIMARY KEY,
        after TEXT NOT NULL
    ) STRICT, WITHOUT ROWID",
];

/// Receipts (docs/billing-rules.md, R20): what each card payment bought and with which card. A
/// payment gets its receipt number (1, 2, ... per workspace, in order of success) and its
/// `paid_at` in the transaction that credits it; the credit price is the one it was priced at.
/// Payments that succeeded before this version are numbered in the order they were last updated.
const V13: &[&str] = &[
    // Money, not credits (module docs, "Money columns").
    "ALTER TABLE payments ADD COLUMN credit_price_micros INTEGER",
    "ALTER TABLE payments ADD COLUMN card_brand TEXT",
    "ALTER TABLE payments ADD COLUMN card_last4 TEXT",
    "ALTER TABLE payments ADD COLUMN receipt_number INTEGER",
    "ALTER TABLE payments ADD COLUMN paid_at INTEGER",
    "UPDATE payments SET credit_price_micros = amount_micros * 1000000 / credits_micros",
    "UPDATE payments SET paid_at = updated_at,
         receipt_number = (SELECT n FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY workspace_id ORDER BY updated_at, rowid) AS n
                                          FROM payments WHERE status = 'succeeded') AS numbered
                           WHERE numbered.id = payments.id)
     WHERE status = 'succeeded'",
    "CREATE UNIQUE INDEX payments_receipts ON payments (workspace_id, receipt_number) WHERE receipt_number IS NOT NULL",
];

/// `balance.low` for a workspace that is below a level it was never told of (docs/notifications.md):
/// born below it (a low-balance threshold at or above what its plan grants), or left below it by
/// a catalog that added it. `low_notified_micros` is the lowest level `balance.low` was sent for
/// that the balance has stayed at or below since, so every level at or above both the balance and
/// it has been sent, and no other (NULL: none). A fall sends every level at or above the new
/// balance that is below it (a crossing, or a level never sent), then it becomes the lowest level
/// at or above the balance; a rise above it re-arms the levels the balance is now above. Both
/// triggers do nothing unless a level changes state, so a debit pays two indexed look-ups.
/// Existing workspaces start as if told of every level they are below (they were, at the crossing
/// the old trigger sent).
const V14: &[&str] = &[
    "ALTER TABLE workspaces ADD COLUMN low_notified_micros INTEGER",
    "UPDATE workspaces SET low_notified_micros =
        (SELECT MIN(level_micros) FROM notification_levels WHERE level_micros >= plan_credits_micros + wallet_micros)",
    "DROP TRIGGER notify_balance_low",
    concat!(
        "CREATE TRIGGER notify_balance_low AFTER INSERT ON transactions
     WHEN NEW.type <> 'plan_expiry' AND NEW.plan_delta_micros + NEW.wallet_delta_micros < 0
      AND EXISTS (SELECT 1 FROM notification_levels
                  WHERE level_micros >= NEW.plan_after_micros + NEW.wallet_after_micros
                    AND level_micros < COALESCE((SELECT low_notified_micros FROM workspaces WHERE id = NEW.workspace_id),
                                                9223372036854775807))
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        SELECT NEW.workspace_id, 'balance.low',
               json_object('level_micros', l.level_micros, 'plan_credits_micros', NEW.plan_after_micros,
                           'wallet_micros', NEW.wallet_after_micros, 'transaction_id', NEW.id),
               NEW.created_at
        FROM notification_levels l
        WHERE l.level_micros >= NEW.plan_after_micros + NEW.wallet_after_micros
          AND l.level_micros < COALESCE((SELECT low_notified_micros FROM workspaces WHERE id = NEW.workspace_id),
                                        9223372036854775807)
        ORDER BY l.level_micros DESC;
        ",
        rearm_levels!(),
        "
     END"
    ),
    concat!(
        "CREATE TRIGGER balance_levels_rearm AFTER INSERT ON transactions
     WHEN NEW.plan_delta_micros + NEW.wallet_delta_micros > 0
      AND (SELECT low_notified_micros FROM workspaces WHERE id = NEW.workspace_id)
          < NEW.plan_after_micros + NEW.wallet_after_micros
     BEGIN
        ",
        rearm_levels!(),
        "
     END"
    ),
];

const V15: &[&str] = &[
    // One row per scheduled job: when a replica last claimed its run (jobs.rs). With several
    // replicas each cron trigger fires on every one; the first claim of a tick runs the job.
    "CREATE TABLE scheduled_runs (
        job TEXT PRIMARY KEY,
        claimed_at INTEGER NOT NULL
    ) STRICT",
];

/// A Stripe subscription being created is claimed in columns of its own
/// (`plans::claim_subscription`): until now the claim, `claim_<unix secs>_<nonce>`, was kept in
/// `stripe_subscription_id` in place of Stripe's id while Stripe was asked, so every reader of
/// that column had to tell the two apart. A claim is the holder's token and when it was taken
/// (real time), both or neither. Claims held when this migration runs move as they are, token and
/// time, so a request holding one across the upgrade still starts or releases it.
const V16: &[&str] = &[
    "ALTER TABLE workspaces ADD COLUMN subscription_claim TEXT",
    "ALTER TABLE workspaces ADD COLUMN subscription_claimed_at INTEGER
        CHECK ((subscription_claimed_at IS NULL) = (subscription_claim IS NULL))",
    "UPDATE workspaces SET subscription_claim = stripe_subscription_id,
         subscription_claimed_at = CAST(substr(stripe_subscription_id, 7, 10) AS INTEGER),
         stripe_subscription_id = NULL
     WHERE stripe_subscription_id LIKE 'claim!_%' ESCAPE '!'",
];

/// Credit grants (`grants.rs`, docs/grants.md): credits a platform gives a workspace outside the
/// plan and the wallet, each with its own remaining balance, moved only by its own append-only
/// entries, as the workspace's balances are moved only by the journal. They have tables of their
/// own rather than new values in the CHECK lists of `transactions.type` and the journal's buckets
/// (V1): SQLite changes a CHECK only by copying the table, and those are the largest tables.
const V17: &[&str] = &[
    // Money, not credits (module docs, "Money columns"): cost_basis_micros.
    "CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        -- The fingerprint of the request that granted it: a retry with its key answers it.
        request_hash TEXT NOT NULL,
        name TEXT NOT NULL,
        category TEXT NOT NULL CHECK (category IN ('promotional', 'paid')),
        cost_basis_micros INTEGER CHECK (cost_basis_micros >= 0),
        priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 100),
        effective_at INTEGER NOT NULL,
        expires_at INTEGER,
        -- A JSON array of usage kinds; NULL pays for every kind.
        scope_kinds TEXT CHECK (scope_kinds IS NULL OR json_valid(scope_kinds)),
        scope_agent_id TEXT,
        metadata TEXT NOT NULL CHECK (json_valid(metadata)),
        amount_micros INTEGER NOT NULL CHECK (amount_micros > 0),
        -- Changed only by grant_entries (the triggers below), as balances by the journal.
        remaining_micros INTEGER NOT NULL DEFAULT 0 CHECK (remaining_micros >= 0),
        held_micros INTEGER NOT NULL DEFAULT 0 CHECK (held_micros >= 0),
        last_entry_id INTEGER NOT NULL DEFAULT 0,
        voided_at INTEGER,
        created_at INTEGER NOT NULL,
        CHECK (remaining_micros <= amount_micros),
        CHECK (held_micros <= remaining_micros),
        CHECK (expires_at IS NULL OR expires_at > effective_at),
        CHECK ((category = 'paid') = (cost_basis_micros IS NOT NULL))
    ) STRICT",
    "CREATE INDEX grants_by_workspace ON grants (workspace_id, created_at, id)",
    // What the expiry sweep finds: grants with an unheld part left and an expiry.
    "CREATE INDEX grants_expiring ON grants (expires_at)
        WHERE expires_at IS NOT NULL AND remaining_micros > held_micros",
    // The sweep expires grants up to the latest of now and every test clock (test clocks run
    // ahead of real time): this makes finding that latest clock one index step.
    "CREATE INDEX workspaces_test_clocks ON workspaces (test_clock_at) WHERE test_clock_at IS NOT NULL",
    "CREATE TRIGGER grants_never_deleted BEFORE DELETE ON grants
     BEGIN SELECT RAISE(ABORT, 'ledger: a grant is never deleted'); END",
    // What was granted stays as granted: a mistake is voided, never edited.
    "CREATE TRIGGER grants_terms_fixed
     BEFORE UPDATE OF id, workspace_id, request_hash, name, category, cost_basis_micros, priority,
                      effective_at, expires_at, scope_kinds, scope_agent_id, metadata,
                      amount_micros, created_at ON grants
     BEGIN SELECT RAISE(ABORT, 'ledger: the terms of a grant never change'); END",
    "CREATE TRIGGER grants_voided_once BEFORE UPDATE OF voided_at ON grants
     WHEN OLD.voided_at IS NOT NULL
     BEGIN SELECT RAISE(ABORT, 'ledger: a grant is voided once'); END",
    // One entry per movement of a grant's remaining: + when granted, - when spent (naming the
    // history row it paid for), expired or voided.
    "CREATE TABLE grant_entries (
        id INTEGER PRIMARY KEY,
        grant_id TEXT NOT NULL REFERENCES grants (id),
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        kind TEXT NOT NULL CHECK (kind IN ('granted', 'spent', 'expired', 'voided')),
        transaction_id INTEGER REFERENCES transactions (id),
        amount_micros INTEGER NOT NULL CHECK (amount_micros <> 0),
        remaining_after_micros INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        CHECK ((kind = 'granted') = (amount_micros > 0)),
        CHECK ((kind = 'spent') = (transaction_id IS NOT NULL))
    ) STRICT",
    "CREATE INDEX grant_entries_by_grant ON grant_entries (grant_id, id)",
    "CREATE INDEX grant_entries_by_workspace ON grant_entries (workspace_id, id)",
    "CREATE INDEX grant_entries_by_transaction ON grant_entries (transaction_id)
        WHERE transaction_id IS NOT NULL",
    "CREATE TRIGGER grant_entries_append_only_u BEFORE UPDATE ON grant_entries
     BEGIN SELECT RAISE(ABORT, 'ledger: grant entries are append-only'); END",
    "CREATE TRIGGER grant_entries_append_only_d BEFORE DELETE ON grant_entries
     BEGIN SELECT RAISE(ABORT, 'ledger: grant entries are append-only'); END",
    // Applying an entry is the only way a grant's remaining moves; the statement fails if the
    // remaining after it claims is not the result, or if the grant is not the workspace's.
    "CREATE TRIGGER grant_entries_apply AFTER INSERT ON grant_entries
     BEGIN
        SELECT RAISE(ABORT, 'ledger: a grant entry for a grant of another workspace')
        WHERE NOT EXISTS (SELECT 1 FROM grants WHERE id = NEW.grant_id
                                                  AND workspace_id = NEW.workspace_id);
        UPDATE grants SET remaining_micros = remaining_micros + NEW.amount_micros,
                          last_entry_id = NEW.id
        WHERE id = NEW.grant_id;
        SELECT RAISE(ABORT, 'ledger: grant remaining after does not match its entries')
        FROM grants g
        WHERE g.id = NEW.grant_id AND g.remaining_micros <> NEW.remaining_after_micros;
     END",
    "CREATE TRIGGER grants_remaining_guard BEFORE UPDATE OF remaining_micros ON grants
     WHEN NEW.remaining_micros <> OLD.remaining_micros
     BEGIN
        SELECT RAISE(ABORT, 'ledger: what a grant has left moves only through its entries')
        WHERE NEW.last_entry_id = OLD.last_entry_id
           OR NEW.last_entry_id <> (SELECT MAX(id) FROM grant_entries WHERE grant_id = NEW.id);
     END",
    // How many grants of a workspace have something left: a debit of a workspace with none reads
    // no grant (docs/grants.md, "Storage and the hot path").
    "ALTER TABLE workspaces ADD COLUMN live_grants INTEGER NOT NULL DEFAULT 0
        CHECK (live_grants >= 0)",
    "CREATE TRIGGER grants_live_count AFTER UPDATE OF remaining_micros ON grants
     WHEN (NEW.remaining_micros > 0) <> (OLD.remaining_micros > 0)
     BEGIN
        UPDATE workspaces
        SET live_grants = live_grants + (NEW.remaining_micros > 0) - (OLD.remaining_micros > 0)
        WHERE id = NEW.workspace_id;
     END",
];

/// Debits spend grants (`agents::fund`, docs/grants.md "The spending order"). A history row
/// carries the credits grants paid (`grant_delta_micros`, beside its plan and wallet deltas), and
/// the debit's one statement writes a `spent` entry per grant it drew on. A usage row's charge is
/// now all three deltas: the daily rollup counts them (its trigger is made again), and so do the
/// agent's cycle spend and the views.
///
/// Version 18 is the auto-recharge monthly cap's, merged separately: versions are looked up one
/// by one, so the order they land in does not matter (`migrate`).
const V19: &[&str] = &[
    "ALTER TABLE transactions ADD COLUMN grant_delta_micros INTEGER NOT NULL DEFAULT 0
        CHECK (grant_delta_micros <= 0)",
    // The view and its trigger are V4's with the grants' columns. A replica still running the
    // previous build inserts without them: they read NULL, and mean no grant.
    "DROP VIEW usage_debit",
    "CREATE VIEW usage_debit AS SELECT
        NULL AS workspace_id, NULL AS agent_id, NULL AS event_id, NULL AS request_hash,
        NULL AS result, NULL AS transaction_id, NULL AS kind, NULL AS quantity_micros,
        NULL AS unit, NULL AS rate_micros, NULL AS plan_delta_micros, NULL AS wallet_delta_micros,
        NULL AS plan_after_micros, NULL AS wallet_after_micros, NULL AS occurred_at,
        NULL AS created_at, NULL AS spend_cycle_start_at, NULL AS call_day,
        NULL AS grant_delta_micros, NULL AS grant_split
     WHERE 0",
    // `grant_split`: a JSON array of [grant id, credits taken (negative), remaining after].
    concat!(
        "CREATE TRIGGER usage_debit_post INSTEAD OF INSERT ON usage_debit
     BEGIN
        INSERT INTO transactions (id, workspace_id, type, agent_id, reference, quantity_micros, unit,
                                  rate_micros, plan_delta_micros, wallet_delta_micros,
                                  plan_after_micros, wallet_after_micros, occurred_at, created_at,
                                  grant_delta_micros)
        VALUES (NEW.transaction_id, NEW.workspace_id, NEW.kind, NEW.agent_id, NEW.event_id,
                NEW.quantity_micros, NEW.unit, NEW.rate_micros, NEW.plan_delta_micros,
                NEW.wallet_delta_micros, NEW.plan_after_micros, NEW.wallet_after_micros,
                NEW.occurred_at, NEW.created_at, COALESCE(NEW.grant_delta_micros, 0));
        INSERT INTO grant_entries (grant_id, workspace_id, kind, transaction_id, amount_micros,
                                   remaining_after_micros, created_at)
        SELECT s.value ->> 0, NEW.workspace_id, 'spent', NEW.transaction_id, s.value ->> 1,
               s.value ->> 2, NEW.created_at
        FROM json_each(COALESCE(NEW.grant_split, '[]')) s;
        SELECT RAISE(ABORT, 'ledger: the grant entries of a debit do not add up to its grant delta')
        WHERE COALESCE(NEW.grant_delta_micros, 0) IS NOT
              (SELECT COALESCE(SUM(s.value ->> 1), 0) FROM json_each(COALESCE(NEW.grant_split, '[]')) s);
        INSERT INTO agents (workspace_id, agent_id, spend_cycle_start_at, cycle_spend_micros,
                            call_day, day_calls, created_at)
        VALUES (NEW.workspace_id, NEW.agent_id, NEW.spend_cycle_start_at,
                -(NEW.plan_delta_micros + NEW.wallet_delta_micros + COALESCE(NEW.grant_delta_micros, 0)),
                NEW.call_day, 0, NEW.created_at)
        ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
            cycle_spend_micros = CASE WHEN spend_cycle_start_at = excluded.spend_cycle_start_at
                                      THEN cycle_spend_micros ELSE 0 END + excluded.cycle_spend_micros,
            spend_cycle_start_at = excluded.spend_cycle_start_at,
            day_calls = CASE WHEN call_day = excluded.call_day THEN day_calls ELSE 0 END,
            call_day = excluded.call_day;
        UPDATE workspaces SET exhausted_at = NEW.created_at
        WHERE id = NEW.workspace_id AND exhausted_at IS NULL
          AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0
          AND NOT EXISTS (",
        grant_keeps_calls_going!("NEW.workspace_id", "NEW.created_at"),
        ");
        INSERT INTO usage_events (workspace_id, event_id, request_hash, transaction_id, result, created_at)
        VALUES (NEW.workspace_id, NEW.event_id, NEW.request_hash, NEW.transaction_id,
                json_set(NEW.result, '$.transaction_id', NEW.transaction_id), NEW.created_at);
     END"
    ),
    "DROP TRIGGER transactions_usage_daily",
    concat!(
        "CREATE TRIGGER transactions_usage_daily AFTER INSERT ON transactions
     WHEN NEW.type IN ('call', 'message', 'sms', 'stt', 'ai_task')
     BEGIN
        INSERT INTO usage_daily (workspace_id, day, spent_micros)
        VALUES (NEW.workspace_id, NEW.occurred_at / ",
        calendar::secs_per_day!(),
        ",
                -(NEW.plan_delta_micros + NEW.wallet_delta_micros + NEW.grant_delta_micros))
        ON CONFLICT (workspace_id, day) DO UPDATE SET
            spent_micros = spent_micros + excluded.spent_micros;
     END"
    ),
];

/// Calls hold on grants and post against them (docs/grants.md, "The spending order" and G2). A
/// call keeps what it holds of each grant (`held_grants`, a JSON object of grant id to
/// micro-credits, and their sum `held_grant_micros`); triggers keep each grant's `held_micros`
/// the sum of its active calls' holds, and the agent's counter of held credits counts them (the
/// spending limit counts credits from every source, G4). A posting releases the holds, posts a
/// `spent` entry per grant it charges, and, for a grant that expired or was voided under the
/// hold, the unused rest of its hold leaves by an `expired` or `voided` entry (G2). The views of
/// V5 and V7 are made again with the grants' columns; a replica still on the previous build
/// inserts without them, and they read NULL: no grant.
const V20: &[&str] = &[
    "ALTER TABLE calls ADD COLUMN held_grant_micros INTEGER NOT NULL DEFAULT 0
        CHECK (held_grant_micros >= 0)",
    "ALTER TABLE calls ADD COLUMN held_grants TEXT
        CHECK (held_grants IS NULL OR json_valid(held_grants))",
    // What a call holds of grants is their sum, of its workspace's grants, each > 0; a posted
    // call holds nothing (V1's CHECK says it of the plan and the wallet).
    "CREATE TRIGGER calls_grant_holds_valid_i BEFORE INSERT ON calls
     WHEN NEW.held_grant_micros <> 0 OR NEW.held_grants IS NOT NULL
     BEGIN
        SELECT RAISE(ABORT, 'ledger: a call holds grants it does not sum, or of another workspace')
        WHERE NEW.status <> 'active'
           OR NEW.held_grant_micros <> (SELECT COALESCE(SUM(h.value), 0) FROM json_each(NEW.held_grants) h)
           OR EXISTS (SELECT 1 FROM json_each(NEW.held_grants) h
                      WHERE h.value <= 0 OR NOT EXISTS (SELECT 1 FROM grants g WHERE g.id = h.key
                                                          AND g.workspace_id = NEW.workspace_id));
     END",
    "CREATE TRIGGER calls_grant_holds_valid_u BEFORE UPDATE OF held_grant_micros, held_grants, status ON calls
     WHEN NEW.held_grant_micros <> 0 OR NEW.held_grants IS NOT NULL
     BEGIN
        SELECT RAISE(ABORT, 'ledger: a call holds grants it does not sum, or of another workspace')
        WHERE NEW.status <> 'active'
           OR NEW.held_grant_micros <> (SELECT COALESCE(SUM(h.value), 0) FROM json_each(NEW.held_grants) h)
           OR EXISTS (SELECT 1 FROM json_each(NEW.held_grants) h
                      WHERE h.value <= 0 OR NOT EXISTS (SELECT 1 FROM grants g WHERE g.id = h.key
                                                          AND g.workspace_id = NEW.workspace_id));
     END",
    "CREATE TRIGGER calls_grant_holds_insert AFTER INSERT ON calls WHEN NEW.held_grants IS NOT NULL
     BEGIN
        UPDATE grants SET held_micros = held_micros
            + (SELECT h.value FROM json_each(NEW.held_grants) h WHERE h.key = grants.id)
        WHERE id IN (SELECT h.key FROM json_each(NEW.held_grants) h);
     END",
    "CREATE TRIGGER calls_grant_holds_update AFTER UPDATE OF held_grants ON calls
     WHEN NEW.held_grants IS NOT OLD.held_grants
     BEGIN
        UPDATE grants SET held_micros = held_micros
            + COALESCE((SELECT h.value FROM json_each(NEW.held_grants) h WHERE h.key = grants.id), 0)
            - COALESCE((SELECT h.value FROM json_each(OLD.held_grants) h WHERE h.key = grants.id), 0)
        WHERE id IN (SELECT h.key FROM json_each(COALESCE(NEW.held_grants, '{}')) h
                     UNION SELECT h.key FROM json_each(COALESCE(OLD.held_grants, '{}')) h);
     END",
    // V6's counters, now counting what calls hold of grants in the agent's held credits.
    "DROP TRIGGER calls_hold_insert",
    "DROP TRIGGER calls_hold_update",
    "CREATE TRIGGER calls_hold_insert AFTER INSERT ON calls WHEN NEW.status = 'active'
     BEGIN
        UPDATE workspaces SET held_plan_micros = held_plan_micros + NEW.held_plan_micros,
                              held_wallet_micros = held_wallet_micros + NEW.held_wallet_micros,
                              active_calls = active_calls + 1
        WHERE id = NEW.workspace_id;
        INSERT INTO agents (workspace_id, agent_id, created_at, active_calls, active_held_micros)
        VALUES (NEW.workspace_id, NEW.agent_id, NEW.started_at, 1,
                NEW.held_plan_micros + NEW.held_wallet_micros + NEW.held_grant_micros)
        ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
            active_calls = active_calls + 1,
            active_held_micros = active_held_micros + excluded.active_held_micros;
     END",
    "CREATE TRIGGER calls_hold_update
     AFTER UPDATE OF held_plan_micros, held_wallet_micros, held_grant_micros, status ON calls
     BEGIN
        UPDATE workspaces SET
            held_plan_micros = held_plan_micros + NEW.held_plan_micros - OLD.held_plan_micros,
            held_wallet_micros = held_wallet_micros + NEW.held_wallet_micros - OLD.held_wallet_micros,
            active_calls = active_calls + (NEW.status = 'active') - (OLD.status = 'active')
        WHERE id = NEW.workspace_id;
        UPDATE agents SET
            active_calls = active_calls + (NEW.status = 'active') - (OLD.status = 'active'),
            active_held_micros = active_held_micros
                + NEW.held_plan_micros + NEW.held_wallet_micros + NEW.held_grant_micros
                - OLD.held_plan_micros - OLD.held_wallet_micros - OLD.held_grant_micros
        WHERE workspace_id = NEW.workspace_id AND agent_id = NEW.agent_id;
     END",
    "DROP VIEW call_authorize",
    "CREATE VIEW call_authorize AS SELECT
        NULL AS call_id, NULL AS workspace_id, NULL AS agent_id, NULL AS direction,
        NULL AS to_number, NULL AS from_number, NULL AS number_type, NULL AS rate_micros,
        NULL AS increment_secs, NULL AS minimum_secs, NULL AS grace, NULL AS reserved_secs,
        NULL AS held_plan_micros, NULL AS held_wallet_micros, NULL AS request_hash,
        NULL AS started_at, NULL AS expires_at, NULL AS spend_cycle_start_at, NULL AS call_day,
        NULL AS held_grant_micros, NULL AS held_grants
     WHERE 0",
    concat!(
        "CREATE TRIGGER call_authorize_hold INSTEAD OF INSERT ON call_authorize
     BEGIN
        INSERT INTO calls (call_id, workspace_id, agent_id, direction, to_number, from_number,
                           number_type, rate_micros, increment_secs, minimum_secs, status, grace,
                           reserved_secs, held_plan_micros, held_wallet_micros, request_hash,
                           started_at, expires_at, held_grant_micros, held_grants)
        VALUES (NEW.call_id, NEW.workspace_id, NEW.agent_id, NEW.direction, NEW.to_number,
                NEW.from_number, NEW.number_type, NEW.rate_micros, NEW.increment_secs,
                NEW.minimum_secs, 'active', NEW.grace, NEW.reserved_secs, NEW.held_plan_micros,
                NEW.held_wallet_micros, NEW.request_hash, NEW.started_at, NEW.expires_at,
                COALESCE(NEW.held_grant_micros, 0), NEW.held_grants);
        INSERT INTO agents (workspace_id, agent_id, spend_cycle_start_at, cycle_spend_micros,
                            call_day, day_calls, created_at)
        VALUES (NEW.workspace_id, NEW.agent_id, NEW.spend_cycle_start_at, 0, NEW.call_day, 1,
                NEW.started_at)
        ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
            cycle_spend_micros = CASE WHEN spend_cycle_start_at = excluded.spend_cycle_start_at
                                      THEN cycle_spend_micros ELSE 0 END,
            spend_cycle_start_at = excluded.spend_cycle_start_at,
            day_calls = CASE WHEN call_day = excluded.call_day THEN day_calls ELSE 0 END + 1,
            call_day = excluded.call_day;
        UPDATE workspaces SET exhausted_at = COALESCE(exhausted_at, NEW.started_at)
        WHERE id = NEW.workspace_id AND NEW.grace = 1;
        UPDATE workspaces SET exhausted_at = NEW.started_at
        WHERE id = NEW.workspace_id AND NEW.grace = 0 AND exhausted_at IS NULL
          AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0
          AND NOT EXISTS (",
        grant_keeps_calls_going!("NEW.workspace_id", "NEW.started_at"),
        ");
     END"
    ),
    "DROP VIEW call_extend",
    "CREATE VIEW call_extend AS SELECT
        NULL AS call_id, NULL AS workspace_id, NULL AS held_plan_micros, NULL AS held_wallet_micros,
        NULL AS reserved_secs, NULL AS expires_at, NULL AS now, NULL AS held_grant_micros,
        NULL AS held_grants
     WHERE 0",
    concat!(
        "CREATE TRIGGER call_extend_hold INSTEAD OF INSERT ON call_extend
     BEGIN
        UPDATE calls SET held_plan_micros = NEW.held_plan_micros,
                         held_wallet_micros = NEW.held_wallet_micros,
                         held_grant_micros = COALESCE(NEW.held_grant_micros, held_grant_micros),
                         held_grants = CASE WHEN NEW.held_grant_micros IS NULL THEN held_grants
                                            ELSE NEW.held_grants END,
                         reserved_secs = NEW.reserved_secs, expires_at = NEW.expires_at
        WHERE call_id = NEW.call_id;
        UPDATE workspaces SET exhausted_at = NEW.now
        WHERE id = NEW.workspace_id AND exhausted_at IS NULL
          AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0
          AND NOT EXISTS (",
        grant_keeps_calls_going!("NEW.workspace_id", "NEW.now"),
        ");
     END"
    ),
    "DROP VIEW call_post",
    "CREATE VIEW call_post AS SELECT
        NULL AS call_id, NULL AS workspace_id, NULL AS agent_id, NULL AS transaction_id,
        NULL AS status, NULL AS quantity_micros, NULL AS rate_micros, NULL AS plan_delta_micros,
        NULL AS wallet_delta_micros, NULL AS plan_after_micros, NULL AS wallet_after_micros,
        NULL AS description, NULL AS duration_secs, NULL AS charged_micros,
        NULL AS unbilled_micros, NULL AS now, NULL AS spend_cycle_start_at, NULL AS call_day,
        NULL AS grant_delta_micros, NULL AS grant_split, NULL AS grant_release
     WHERE 0",
    // `grant_split`: [grant id, credits charged (negative), remaining after]; `grant_release`:
    // [grant id, 'expired' or 'voided', the hold's unused rest (negative), remaining after].
    concat!(
        "CREATE TRIGGER call_post_charge INSTEAD OF INSERT ON call_post
     BEGIN
        SELECT RAISE(ABORT, 'ledger: call already posted')
        WHERE NOT EXISTS (SELECT 1 FROM calls WHERE call_id = NEW.call_id AND status = 'active');
        -- A call takes the wallet below zero only on grace, or within what it held of it.
        SELECT RAISE(ABORT, 'ledger: a call charged more wallet than it held')
        FROM calls
        WHERE call_id = NEW.call_id AND grace = 0 AND NEW.wallet_after_micros < 0
          AND -NEW.wallet_delta_micros > held_wallet_micros;
        -- The holds are released before the charge is posted: plan credits and grants never
        -- drop below what calls hold of them, even for the instant between the two.
        UPDATE calls SET held_plan_micros = 0, held_wallet_micros = 0, held_grant_micros = 0,
                         held_grants = NULL
        WHERE call_id = NEW.call_id;
        INSERT INTO transactions (id, workspace_id, type, agent_id, reference, quantity_micros, unit,
                                  rate_micros, plan_delta_micros, wallet_delta_micros,
                                  plan_after_micros, wallet_after_micros, occurred_at, created_at,
                                  description, grant_delta_micros)
        VALUES (NEW.transaction_id, NEW.workspace_id, 'call', NEW.agent_id, NEW.call_id,
                NEW.quantity_micros, 'second', NEW.rate_micros, NEW.plan_delta_micros,
                NEW.wallet_delta_micros, NEW.plan_after_micros, NEW.wallet_after_micros, NEW.now,
                NEW.now, NEW.description, COALESCE(NEW.grant_delta_micros, 0));
        INSERT INTO grant_entries (grant_id, workspace_id, kind, transaction_id, amount_micros,
                                   remaining_after_micros, created_at)
        SELECT s.value ->> 0, NEW.workspace_id, 'spent', NEW.transaction_id, s.value ->> 1,
               s.value ->> 2, NEW.now
        FROM json_each(COALESCE(NEW.grant_split, '[]')) s;
        SELECT RAISE(ABORT, 'ledger: the grant entries of a call do not add up to its grant delta')
        WHERE COALESCE(NEW.grant_delta_micros, 0) IS NOT
              (SELECT COALESCE(SUM(s.value ->> 1), 0) FROM json_each(COALESCE(NEW.grant_split, '[]')) s);
        INSERT INTO grant_entries (grant_id, workspace_id, kind, amount_micros,
                                   remaining_after_micros, created_at)
        SELECT r.value ->> 0, NEW.workspace_id, r.value ->> 1, r.value ->> 2, r.value ->> 3, NEW.now
        FROM json_each(COALESCE(NEW.grant_release, '[]')) r;
        -- Posted once the charge exists: naming a history row not inserted yet would leave a
        -- foreign key pending, and inserting it would then scan every call for the reference.
        UPDATE calls SET status = NEW.status, ended_at = NEW.now, duration_secs = NEW.duration_secs,
                         charged_micros = NEW.charged_micros, unbilled_micros = NEW.unbilled_micros,
                         transaction_id = NEW.transaction_id
        WHERE call_id = NEW.call_id;
        INSERT INTO agents (workspace_id, agent_id, spend_cycle_start_at, cycle_spend_micros,
                            call_day, day_calls, created_at)
        VALUES (NEW.workspace_id, NEW.agent_id, NEW.spend_cycle_start_at, NEW.charged_micros,
                NEW.call_day, 0, NEW.now)
        ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
            cycle_spend_micros = CASE WHEN spend_cycle_start_at = excluded.spend_cycle_start_at
                                      THEN cycle_spend_micros ELSE 0 END + excluded.cycle_spend_micros,
            spend_cycle_start_at = excluded.spend_cycle_start_at,
            day_calls = CASE WHEN call_day = excluded.call_day THEN day_calls ELSE 0 END,
            call_day = excluded.call_day;
        UPDATE workspaces SET exhausted_at = NEW.now
        WHERE id = NEW.workspace_id AND exhausted_at IS NULL
          AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0
          AND NOT EXISTS (",
        grant_keeps_calls_going!("NEW.workspace_id", "NEW.now"),
        ");
     END"
    ),
];

/// The auto-recharge monthly cap (docs/billing-rules.md, R11; docs/grants.md, G10): money the
/// owner lets automatic recharges charge per calendar month of the workspace's time zone (NULL:
/// no cap), and the last of its 80/90/100% alerts sent, as `YYYY-MM:PPP` (the month, then the
/// percent on three digits), so that a later month or a higher level compares greater as text
/// and one guarded `UPDATE` sends each level once per month (NULL: none yet).
const V18: &[&str] = &[
    // Money, not credits (module docs, "Money columns").
    "ALTER TABLE workspaces ADD COLUMN auto_recharge_max_per_month_micros INTEGER
        CHECK (auto_recharge_max_per_month_micros > 0)",
    "ALTER TABLE workspaces ADD COLUMN auto_recharge_cap_alerted TEXT
        CHECK (auto_recharge_cap_alerted GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]:0[89]0'
               OR auto_recharge_cap_alerted GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]:100')",
];

/// The grants' notifications (docs/notifications.md; docs/grants.md G9): `credits.granted` and
/// `credits.expired` written by triggers in the statement that posts the entry, whoever posts it
/// (the grant, the expiry sweep, a call's release of a hold on an expired grant);
/// `credits.expiring` by the ledger's sweep (`grants::notify_expiring`), once per grant, which
/// `expiring_notified_at` records.
const V21: &[&str] = &[
    "ALTER TABLE grants ADD COLUMN expiring_notified_at INTEGER",
    "CREATE INDEX grants_expiring_unnotified ON grants (expires_at)
        WHERE expires_at IS NOT NULL AND expiring_notified_at IS NULL AND voided_at IS NULL",
    "CREATE TRIGGER notify_credits_granted AFTER INSERT ON grant_entries WHEN NEW.kind = 'granted'
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        SELECT NEW.workspace_id, 'credits.granted',
               json_object('grant_id', g.id, 'name', g.name, 'category', g.category,
                           'amount_micros', NEW.amount_micros, 'effective_at', g.effective_at,
                           'expires_at', g.expires_at),
               NEW.created_at
        FROM grants g WHERE g.id = NEW.grant_id;
     END",
    "CREATE TRIGGER notify_credits_expired AFTER INSERT ON grant_entries WHEN NEW.kind = 'expired'
     BEGIN
        INSERT INTO notifications (workspace_id, type, facts, occurred_at)
        SELECT NEW.workspace_id, 'credits.expired',
               json_object('grant_id', g.id, 'name', g.name, 'expired_micros', -NEW.amount_micros,
                           'remaining_micros', NEW.remaining_after_micros,
                           'expires_at', g.expires_at),
               NEW.created_at
        FROM grants g WHERE g.id = NEW.grant_id;
     END",
];

/// The grants a debit reads are found through an index of their own: by workspace, only those
/// with something unheld left and not voided (`grants::SPENDABLE_COLUMN`'s condition). Through
/// `grants_by_workspace` the read visited every grant the workspace ever had, spent and expired
/// ones included, on every debit.
const V22: &[&str] = &["CREATE INDEX grants_spendable ON grants (workspace_id)
        WHERE remaining_micros > held_micros AND voided_at IS NULL"];

/// Applies every migration whose version is not recorded yet, in order, each in one transaction.
/// Safe to call on every open and from many connections at once. Each version is looked up on
/// its own rather than compared with the highest recorded: a migration merged below one that a
/// database already has (V10, the daily usage rollup, merged after V11, the notifications) still
/// runs there instead of being skipped for ever.
pub async fn migrate<S: Storage>(db: &S) -> Result<()> {
    migrate_to(db, i64::MAX).await
}

/// [`migrate`] without the migrations above `version`: a database as an older release left it,
/// for the tests of a migration that moves what was written before it.
async fn migrate_to<S: Storage>(db: &S, version: i64) -> Result<()> {
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT",
        &[],
    )
    .await?;
    let recorded = recorded_versions(db).await?;
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| migration.version <= version && !recorded.contains(&migration.version))
    {
        crate::tx::immediate(db, async |db| {
            // Re-check inside the write lock: another connection may have applied it meanwhile.
            if is_recorded(db, migration.version).await? {
                return Ok(());
            }
            for statement in migration.statements {
                db.execute(statement, &[]).await?;
            }
            if migration.version == NOTIFICATIONS_VERSION {
                // The triggers' copy of the catalog's levels and grace (catalog.rs).
                let catalog = crate::catalog::load(db).await?;
                crate::catalog::write_notification_settings(db, &catalog).await?;
            }
            db.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, unixepoch())",
                &[SqlValue::Integer(migration.version)],
            )
            .await?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Whether every migration is recorded: ONE read, and nothing written, so that the connection
/// each new instance opens can skip [`migrate`] (whose `CREATE TABLE IF NOT EXISTS` takes the
/// write lock, and so waits behind other instances' writers in SQLite's busy handler on Spin:
/// docs/performance.md, round 5). A database without the table is not current.
pub async fn is_current<S: Storage>(db: &S) -> Result<bool> {
    let Ok(recorded) = recorded_versions(db).await else {
        return Ok(false);
    };
    Ok(MIGRATIONS
        .iter()
        .all(|migration| recorded.contains(&migration.version)))
}

/// The versions recorded as applied (one row per migration: a few dozen at most).
async fn recorded_versions<S: Storage>(db: &S) -> Result<Vec<i64>> {
    let rows = db
        .query("SELECT version FROM schema_migrations", &[])
        .await?;
    rows.iter().map(|row| crate::row::int(row, 0)).collect()
}

async fn is_recorded<S: Storage>(db: &S, version: i64) -> Result<bool> {
    let rows = db
        .query(
            "SELECT 1 FROM schema_migrations WHERE version = ?1",
            &[SqlValue::Integer(version)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Every connection's pragmas, on every backend: set at open, before the first operation.
/// libSQL's server (`sqld`, Turso) takes `foreign_keys` and refuses every other value-setting
/// pragma as an unsupported statement.
pub const CONNECTION_PRAGMAS: &[&str] = &["PRAGMA foreign_keys = ON"];

/// The pragmas of a connection to a local database file, after [`CONNECTION_PRAGMAS`]. A libSQL
/// server keeps its own settings (its journal, checkpoints and durability are the server's).
pub const FILE_PRAGMAS: &[&str] = &[
    // The app's own wait for another connection's lock, set here so that it does not depend on
    // the runtime's default. It equals Spin's (rusqlite's 5 s, which the local host copies as
    // `runtime_config::SPIN_BUSY_TIMEOUT`) by choice, not by necessity: two rules, one value today.
    "PRAGMA busy_timeout = 5000",
    "PRAGMA synchronous = NORMAL",
    // Statement journals (every statement that may fail mid-way inside a transaction, every
    // savepoint of a batch) stay in memory instead of a temporary file: +35% in-process debits.
    "PRAGMA temp_store = MEMORY",
    // Checkpoint every 200 pages (~800 KB) of WAL. On Spin every checkpoint runs inside a
    // request: the commit that crosses the mark copies the WAL back and syncs both files while
    // the request waits, and closing an instance's connection when it is the file's last one
    // (every 128 requests, or after 1 s idle) checkpoints and deletes the WAL under an exclusive
    // lock that the next instance's statements wait out in SQLite's busy handler. At 4,000 pages
    // (~16 MB, chosen for in-process throughput) those waits were Spin's debit tail: p99 44 ms at
    // 500 debits/s over 200 workspaces, 7 ms at 200 pages, in the same run (docs/performance.md,
    // round 5). Our host checkpoints in the background, so the mark is rarely reached there.
    "PRAGMA wal_autocheckpoint = 200",
];

/// One read that tells a libSQL server from a local file: 1 when the database is served by
/// `sqld` (its `libsql_server_database_name` function), 0 on SQLite. Asking is a plain `SELECT`
/// that every backend answers, where trying a pragma would fail a statement on every open.
pub const SERVED_BY_LIBSQL_SERVER: &str =
    "SELECT EXISTS (SELECT 1 FROM pragma_function_list WHERE name = 'libsql_server_database_name')";

/// Switches the database file to WAL; persists in the file, so once per database is enough.
pub const ENABLE_WAL: &str = "PRAGMA journal_mode = WAL";

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use futures::executor::block_on;

    #[test]
    fn a_local_file_is_not_taken_for_a_libsql_server() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::native::NativeDb::open(dir.path().join("ledger.db")).expect("open");
        let rows = block_on(crate::storage::Storage::query(
            &db,
            super::SERVED_BY_LIBSQL_SERVER,
            &[],
        ))
        .expect("the probe is a plain read on SQLite");
        assert_eq!(rows, vec![vec![crate::storage::SqlValue::Integer(0)]]);
    }

    #[test]
    fn a_database_is_current_once_every_migration_is_recorded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::native::NativeDb::open(dir.path().join("ledger.db")).expect("open");
        assert!(!block_on(super::is_current(&db)).expect("fresh"));
        block_on(super::migrate(&db)).expect("migrate");
        assert!(block_on(super::is_current(&db)).expect("migrated"));
        // One version missing (a newer release's migration not yet applied): not current.
        block_on(crate::Storage::execute(
            &db,
            "DELETE FROM schema_migrations WHERE version = 14",
            &[],
        ))
        .expect("forget one");
        assert!(!block_on(super::is_current(&db)).expect("behind"));
    }

    #[test]
    fn v16_moves_a_claim_out_of_stripe_subscription_id() {
        use crate::storage::SqlValue::{Integer, Null, Text};
        const NOV_1: i64 = 1_793_491_200;
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::native::NativeDb::open(dir.path().join("ledger.db")).expect("open");
        // A database as V15 left it: "c" mid-way through creating its subscription (the claim in
        // `stripe_subscription_id`), "s" with its Stripe subscription, "n" with none.
        block_on(super::migrate_to(&db, 15)).expect("migrate to V15");
        block_on(crate::Storage::execute(
            &db,
            "INSERT INTO workspaces (id, name, email, currency, created_at, stripe_subscription_id)
             VALUES ('c', 'C', 'c@example.com', 'USD', ?1, 'claim_1793491200_n1'),
                    ('n', 'N', 'n@example.com', 'USD', ?1, NULL),
                    ('s', 'S', 's@example.com', 'USD', ?1, 'sub_1')",
            &[Integer(NOV_1)],
        ))
        .expect("V15 rows");
        block_on(super::migrate(&db)).expect("migrate");
        let rows = || {
            block_on(crate::Storage::query(
                &db,
                "SELECT id, stripe_subscription_id, subscription_claim, subscription_claimed_at
                 FROM workspaces ORDER BY id",
                &[],
            ))
            .expect("rows")
        };
        let text = |s: &str| Text(s.to_owned());
        assert_eq!(
            rows(),
            vec![
                vec![text("c"), Null, text("claim_1793491200_n1"), Integer(NOV_1)],
                vec![text("n"), Null, Null, Null],
                vec![text("s"), text("sub_1"), Null, Null],
            ]
        );
        // The moved claim is fresh for as long as it was: another request is refused...
        let other = crate::plans::subscription_claim(NOV_1 + 60, "n2");
        let refused = block_on(crate::plans::claim_subscription(
            &db,
            "c",
            &other,
            NOV_1 + 60,
        ));
        assert!(
            matches!(
                refused,
                Err(crate::LedgerError::Conflict {
                    code: "subscription_in_progress",
                    ..
                })
            ),
            "{refused:?}"
        );
        // ... and the request that held it across the upgrade starts its subscription.
        let catalog = crate::catalog::Catalog::default_catalog().expect("catalog");
        let started = crate::plans::StartedSubscription {
            plan_id: "basic",
            claim: "claim_1793491200_n1",
            subscription_id: "sub_2",
            first_period_paid: true,
        };
        block_on(crate::plans::start_subscription(
            &db,
            &catalog,
            "c",
            started,
            NOV_1 + 60,
        ))
        .expect("start");
        assert_eq!(rows()[0], vec![text("c"), text("sub_2"), Null, Null]);
    }
}
