//! Bench data sets, generated once with bulk SQL and cached outside the clone
//! (`$BENCH_DATA_DIR`, default `~/.cache/voice-billing/bench-data`).
//!
//! One template workspace is built through the ledger's own operations; it is then cloned with
//! `INSERT ... SELECT`. Balances are never copied: every clone receives the template's history
//! rows, so the schema's triggers write the journal and move the balances as for a real posting.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use futures::executor::block_on;
use ledger::catalog::Catalog;
use ledger::native::NativeDb;
use ledger::workspace::WorkspaceInput;
use ledger::{SqlValue, Storage, payments, plans, workspace};

/// Bumped when the shape of the generated data changes, or when a migration the cached sets already
/// ran was changed before its release (old caches are then ignored): 2 for migration 7's trigger;
/// 3 for migrations 10 to 12 (the daily usage rollup, the notifications outbox, whose triggers
/// changed before release, and the runway watch): sets generated with them, rather than shared
/// sets migrated in place (which a branch without them would then measure with their triggers).
const DATA_VERSION: u32 = 3;
/// The template workspace every clone copies.
const TEMPLATE: &str = "template";
/// Largest data set this bench generates (a bound on the seed loop).
const WORKSPACES_MAX: u64 = 10_000_000;

/// Where cached data sets live.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BENCH_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/voice-billing/bench-data")
}

/// The database file inside a state directory (the host's name for label `default`).
pub fn db_file(state_dir: &Path) -> PathBuf {
    state_dir.join("sqlite_db.db")
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    local_run::credentials::now_secs()
}

/// Workspace id number `n` of a generated set.
pub fn workspace_id(n: u64) -> String {
    format!("ws{n}")
}

/// What a data set holds.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Workspaces `ws0` .. `ws{n-1}`.
    pub workspaces: u64,
    /// `professional` (paid, with a 5,000-credit top-up) or `free`.
    pub plan: &'static str,
    /// Days before now the template subscribed (cycles due for renewal if > 31).
    pub age_days: i64,
    /// Usage debits per workspace added after the set-up (2 journal rows each).
    pub debits_per_workspace: u64,
}

impl Spec {
    fn name(&self) -> String {
        format!(
            "v{DATA_VERSION}-{}-{}ws-{}d-{}debits",
            self.plan, self.workspaces, self.age_days, self.debits_per_workspace
        )
    }
}

/// The cached state directory for `spec`, generated first if missing.
pub fn cached(spec: Spec) -> Result<PathBuf> {
    let dir = data_dir().join(spec.name());
    if db_file(&dir).exists() {
        // A set generated before a schema migration gets it here, outside any measurement.
        let db = NativeDb::open(db_file(&dir))?;
        block_on(ledger::schema::migrate(&db))?;
        return Ok(dir);
    }
    std::fs::create_dir_all(data_dir())?;
    let building = data_dir().join(format!("{}.building-{}", spec.name(), std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building)?;
    let started = Instant::now();
    eprintln!(
        "bench: generating {} (once; cached in {})",
        spec.name(),
        data_dir().display()
    );
    generate(&db_file(&building), spec).with_context(|| format!("generating {}", spec.name()))?;
    std::fs::rename(&building, &dir)?;
    eprintln!(
        "bench: generated {} in {:.1?}",
        spec.name(),
        started.elapsed()
    );
    Ok(dir)
}

/// Reads a file once so that it is in the OS page cache.
pub fn warm_page_cache(path: &Path) -> Result<()> {
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut std::io::sink())?;
    Ok(())
}

/// Copies a cached set's database into a fresh state directory (for runs that change it).
pub fn copy_into(cached_dir: &Path, state_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(state_dir)?;
    std::fs::copy(db_file(cached_dir), db_file(state_dir))?;
    Ok(())
}

fn run(db: &NativeDb, sql: &str, params: &[SqlValue]) -> Result<()> {
    block_on(db.execute(sql, params)).with_context(|| format!("SQL: {sql}"))
}

fn generate(path: &Path, spec: Spec) -> Result<()> {
    if spec.workspaces == 0 || spec.workspaces > WORKSPACES_MAX {
        bail!("workspaces must be 1..={WORKSPACES_MAX}");
    }
    let catalog = Catalog::default_catalog().map_err(|e| anyhow::anyhow!("catalog: {e}"))?;
    let db = NativeDb::open(path)?;
    // Loading only: nothing here needs to survive a crash (a half-built set is never renamed).
    for pragma in [
        "PRAGMA synchronous = OFF",
        "PRAGMA cache_size = -1000000",
        "PRAGMA temp_store = MEMORY",
    ] {
        run(&db, pragma, &[])?;
    }
    block_on(ledger::schema::migrate(&db))?;
    template(&db, &catalog, spec)?;
    clone_workspaces(&db, spec.workspaces)?;
    for round in 0..spec.debits_per_workspace {
        seed_debits(&db, round)?;
    }
    run(
        &db,
        "INSERT INTO usage_events (workspace_id, event_id, request_hash, transaction_id, result, created_at)
         SELECT workspace_id, reference, 'seed', id, '{}', created_at FROM transactions WHERE type = 'message'",
        &[],
    )?;
    run(&db, "ANALYZE", &[])?;
    run(&db, "PRAGMA wal_checkpoint(TRUNCATE)", &[])?;
    Ok(())
}

/// The template workspace, through the ledger's own operations.
fn template(db: &NativeDb, catalog: &Catalog, spec: Spec) -> Result<()> {
    let at = now_secs() - spec.age_days * 86_400;
    let input = WorkspaceInput {
        name: "Template".into(),
        email: "template@example.com".into(),
        currency: None,
        timezone: None,
    };
    let ledger_error = |e: ledger::LedgerError| anyhow::anyhow!("template: {e}");
    block_on(workspace::upsert(db, catalog, TEMPLATE, &input, at)).map_err(ledger_error)?;
    block_on(plans::change_plan(
        db, catalog, TEMPLATE, spec.plan, true, at,
    ))
    .map_err(ledger_error)?;
    if spec.plan != "free" {
        block_on(payments::create_topup(
            db,
            catalog,
            TEMPLATE,
            "template-topup",
            5_000.into(),
            at,
        ))
        .map_err(ledger_error)?;
        let reported = payments::Reported::Payment {
            id: "template-topup",
            intent_id: None,
        };
        block_on(payments::settle(
            db,
            reported,
            &ledger::settlement::Report::Succeeded,
            &payments::PaidWith::default(),
            at,
        ))
        .map_err(ledger_error)?;
    }
    Ok(())
}

/// `ws0..ws{n-1}`: the template's columns except identity and balances, its cycle rows, then
/// its history rows one at a time in order (the triggers post each one).
fn clone_workspaces(db: &NativeDb, count: u64) -> Result<()> {
    let columns: Vec<String> =
        block_on(db.query("SELECT name FROM pragma_table_info('workspaces')", &[]))?
            .into_iter()
            .filter_map(|row| match row.into_iter().next() {
                Some(SqlValue::Text(name)) => Some(name),
                _ => None,
            })
            .filter(|name| {
                !matches!(
                    name.as_str(),
                    "id" | "name"
                        | "email"
                        | "plan_credits_micros"
                        | "wallet_micros"
                        | "last_journal_id"
                        | "held_plan_micros"
                        | "held_wallet_micros"
                        | "stripe_customer_id"
                        | "stripe_subscription_id"
                        | "exhausted_at"
                )
            })
            .collect();
    let list = columns.join(", ");
    let copied = columns
        .iter()
        .map(|c| format!("tpl.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    run(
        db,
        &format!(
            "WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < ?1)
             INSERT INTO workspaces (id, name, email, {list})
             SELECT 'ws' || n, 'Workspace ' || n, 'ws' || n || '@example.com', {copied}
             FROM seq, workspaces tpl WHERE tpl.id = '{TEMPLATE}'"
        ),
        &[SqlValue::Integer(count as i64)],
    )?;
    run(
        db,
        &format!(
            "INSERT INTO cycles (workspace_id, start_at, end_at, plan_id, credits_granted_micros, created_at)
             SELECT w.id, c.start_at, c.end_at, c.plan_id, c.credits_granted_micros, c.created_at
             FROM cycles c, workspaces w WHERE c.workspace_id = '{TEMPLATE}' AND w.id <> '{TEMPLATE}'"
        ),
        &[],
    )?;
    let history = block_on(db.query(
        &format!("SELECT id FROM transactions WHERE workspace_id = '{TEMPLATE}' ORDER BY id"),
        &[],
    ))?;
    for row in history {
        let Some(id) = row.into_iter().next() else {
            continue;
        };
        run(
            db,
            &format!(
                "INSERT INTO transactions (workspace_id, type, agent_id, reference, quantity_micros, unit,
                     rate_micros, plan_delta_micros, wallet_delta_micros, plan_after_micros,
                     wallet_after_micros, occurred_at, created_at, description)
                 SELECT w.id, t.type, t.agent_id, t.reference, t.quantity_micros, t.unit, t.rate_micros,
                     t.plan_delta_micros, t.wallet_delta_micros, t.plan_after_micros,
                     t.wallet_after_micros, t.occurred_at, t.created_at, t.description
                 FROM transactions t, workspaces w WHERE t.id = ?1 AND w.id <> '{TEMPLATE}'
                 ORDER BY w.id"
            ),
            &[id],
        )?;
    }
    Ok(())
}

/// One message debit per workspace (0.01 from the plan, 0.005 from the wallet: two journal rows),
/// from a snapshot of the balances so that each row's after-balances are exact.
fn seed_debits(db: &NativeDb, round: u64) -> Result<()> {
    run(
        db,
        &format!(
            "CREATE TEMP TABLE snapshot AS SELECT id, plan_credits_micros AS plan, wallet_micros AS wallet
             FROM workspaces WHERE id <> '{TEMPLATE}' ORDER BY id"
        ),
        &[],
    )?;
    let at = now_secs();
    run(
        db,
        "INSERT INTO transactions (workspace_id, type, agent_id, reference, quantity_micros, unit,
             rate_micros, plan_delta_micros, wallet_delta_micros, plan_after_micros,
             wallet_after_micros, occurred_at, created_at)
         SELECT id, 'message', 'agent', 'seed-' || ?1 || '-' || id, 1000000, 'message', 10000,
             -10000, -5000, plan - 10000, wallet - 5000, ?2, ?2
         FROM snapshot",
        &[SqlValue::Integer(round as i64), SqlValue::Integer(at)],
    )?;
    run(db, "DROP TABLE snapshot", &[])?;
    Ok(())
}
