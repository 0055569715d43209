//! The auto-recharge sweep (R11) and the payment reconciliation (R21), run by the cron trigger
//! and by its HTTP twin `POST /internal/jobs/auto-recharge` (service key).
//!
//! One pass:
//! 1. **Sweep**: in bounded batches, the workspaces whose auto-recharge is armed, enabled and
//!    under its threshold; for each, one ledger operation (`payments::claim_auto_recharge`)
//!    decides whether to charge (armed, nothing in flight, under the threshold counting pending
//!    recharges, daily cap) and records the payment `pending`.
//! 2. **Charge** each claimed payment off-session at Stripe, OUTSIDE the ledger lock, with the
//!    payment id as Stripe's idempotency key, then settle it from Stripe's answer (see
//!    [`charge`]). Stripe unreachable leaves it pending and ends the sweep for this pass.
//! 3. **Reconcile** payments pending for [`ledger::payments::RECONCILE_AFTER_SECS`]: read their
//!    PaymentIntent and settle them as the webhook would; a recharge never started at Stripe is
//!    retried with the same idempotency key; a manual top-up never started is settled failed.
//!
//! Everything is bounded: at most [`WORKSPACES_PER_PASS_MAX`] workspaces checked and
//! [`RECONCILE_PER_PASS_MAX`] payments reconciled per pass; what is left is reported as `more`
//! and picked up by the next pass (the cron runs every minute), whose sweep starts where this
//! one stopped (a cursor in the key-value store). Without Stripe configured (empty
//! `stripe_secret_key`) the pass does nothing and says so (`"payments_configured": false`).

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]

mod charge;

use http::Method;
use ledger::{LedgerError, StorageErrorKind, payments};
use spin_adapter::{
    ApiError, Job, Reply, method_not_allowed, not_found, now_secs, path_segments, run_ledger,
    run_on_demand, stripe_client,
};
use spin_sdk::http::Request;
use spin_sdk::key_value::Store;
use stripe_client::Client;

use charge::Outcome;

/// The most workspaces one pass checks.
const WORKSPACES_PER_PASS_MAX: usize = 100;
/// Workspaces read per candidate query.
const CANDIDATE_BATCH: usize = 50;
/// The most stale pending payments one pass reconciles.
const RECONCILE_PER_PASS_MAX: usize = 100;

/// Key-value key of the workspace id the next pass's sweep starts after: when more workspaces
/// are under their threshold than one pass checks (paused ones stay there for up to a day),
/// the next pass goes on where this one stopped instead of checking the same ones again.
const CURSOR_KEY: &str = "auto-recharge:sweep-cursor";

/// What one pass did (the HTTP answer).
#[derive(Debug, Default, serde::Serialize)]
struct JobReport {
    /// Whether Stripe is configured; without it the pass does nothing.
    payments_configured: bool,
    /// Workspaces the sweep looked at (armed, enabled, under their threshold).
    workspaces_checked: usize,
    /// Automatic charges claimed and sent to Stripe in this pass.
    recharges_started: usize,
    /// Of those, charges that succeeded (wallet credited).
    recharges_succeeded: usize,
    /// Of those, charges that failed (declined, authentication required, refused).
    recharges_failed: usize,
    /// Stale pending payments settled by the reconciliation.
    reconciled: usize,
    /// Whether work remains for the next pass (a budget ran out, or Stripe was unreachable).
    more: bool,
}

/// Runs one pass at `now` (seconds since the epoch).
async fn run_pass(now: i64) -> Result<JobReport, ApiError> {
    let Some(client) = stripe_client().await? else {
        return Ok(JobReport::default());
    };
    let mut report = JobReport {
        payments_configured: true,
        ..JobReport::default()
    };
    let currency =
        run_ledger(async |db| Ok(spin_adapter::catalog(db).await?.settings().currency.clone()))
            .await?;
    let stripe_up = sweep(&client, &currency, now, &mut report).await?;
    if stripe_up {
        reconcile(&client, &currency, now, &mut report).await?;
    }
    Ok(report)
}

/// The key-value store (`None` when unavailable: every pass then starts at the first
/// workspace) and the sweep's starting point.
async fn load_cursor() -> (Option<Store>, String) {
    let store = match Store::open("default").await {
        Ok(store) => store,
        Err(error) => {
            spin_adapter::log!("auto-recharge: key-value store unavailable: {error:?}");
            return (None, String::new());
        }
    };
    let cursor = match store.get(CURSOR_KEY).await {
        Ok(Some(bytes)) => String::from_utf8(bytes).unwrap_or_default(),
        Ok(None) => String::new(),
        Err(error) => {
            spin_adapter::log!("auto-recharge: sweep cursor unreadable: {error:?}");
            String::new()
        }
    };
    (Some(store), cursor)
}

/// Saves where the next pass's sweep starts (best effort).
async fn save_cursor(store: Option<&Store>, cursor: &str) {
    if let Some(store) = store
        && let Err(error) = store.set(CURSOR_KEY, cursor.as_bytes().to_vec()).await
    {
        spin_adapter::log!("auto-recharge: sweep cursor not saved: {error:?}");
    }
}

/// Step 1 and 2: claims and charges recharges, from where the last pass stopped. Returns
/// whether Stripe stayed reachable.
async fn sweep(
    client: &Client,
    currency: &str,
    now: i64,
    report: &mut JobReport,
) -> Result<bool, ApiError> {
    let (store, mut after) = load_cursor().await;
    loop {
        let room = WORKSPACES_PER_PASS_MAX - report.workspaces_checked;
        if room == 0 {
            // The budget ran out: more only if a candidate remains; the next pass goes on.
            let next =
                run_ledger(async |db| payments::auto_recharge_candidates(db, &after, 1).await)
                    .await?;
            report.more |= !next.is_empty();
            let cursor = if next.is_empty() { "" } else { after.as_str() };
            save_cursor(store.as_ref(), cursor).await;
            return Ok(true);
        }
        let limit = i64::try_from(room.min(CANDIDATE_BATCH)).unwrap_or(1);
        let batch =
            run_ledger(async |db| payments::auto_recharge_candidates(db, &after, limit).await)
                .await?;
        for ws in &batch {
            report.workspaces_checked += 1;
            after.clone_from(ws);
            let Some(payment) = claim(ws, now).await? else {
                continue;
            };
            report.recharges_started += 1;
            match charge::charge_recharge(client, &payment, currency, now).await? {
                Outcome::Succeeded => report.recharges_succeeded += 1,
                Outcome::Failed => report.recharges_failed += 1,
                Outcome::Pending => {}
                Outcome::Unreachable => {
                    // Stripe is down or refusing us: stop charging; the next pass goes on
                    // after this workspace (its recharge is pending, reconciled later).
                    report.more = true;
                    save_cursor(store.as_ref(), &after).await;
                    return Ok(false);
                }
            }
        }
        if usize::try_from(limit).map_or(true, |l| batch.len() < l) {
            // The end: the next pass starts at the first workspace again.
            save_cursor(store.as_ref(), "").await;
            return Ok(true);
        }
    }
}

/// One ledger operation deciding whether `ws` is charged now. A refusal of this workspace (a
/// concurrent pass's recharge in flight, a vanished workspace) is logged and skipped; a storage
/// failure ends the pass.
async fn claim(ws: &str, now: i64) -> Result<Option<payments::Payment>, ApiError> {
    let outcome = run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        match payments::claim_auto_recharge(db, &catalog, ws, now).await {
            Ok(claimed) => Ok(Ok(claimed)),
            Err(LedgerError::Storage(error)) if error.kind != StorageErrorKind::Constraint => {
                Err(LedgerError::Storage(error))
            }
            Err(refused) => Ok(Err(refused)),
        }
    })
    .await?;
    Ok(outcome.unwrap_or_else(|refused| {
        spin_adapter::log!("auto-recharge: workspace {ws} skipped: {refused}");
        None
    }))
}

/// Step 3 (R21): settles payments pending for too long, oldest first.
async fn reconcile(
    client: &Client,
    currency: &str,
    now: i64,
    report: &mut JobReport,
) -> Result<(), ApiError> {
    let limit = i64::try_from(RECONCILE_PER_PASS_MAX).unwrap_or(100);
    let stale = run_ledger(async |db| payments::stale_pending(db, now, limit).await).await?;
    report.more |= stale.len() >= RECONCILE_PER_PASS_MAX;
    for payment in &stale {
        match charge::reconcile_payment(client, payment, currency, now).await? {
            Outcome::Succeeded | Outcome::Failed => report.reconciled += 1,
            Outcome::Pending => {}
            Outcome::Unreachable => {
                report.more = true;
                break;
            }
        }
    }
    Ok(())
}

/// The job: the sweep and the reconciliation, once a minute and on demand.
struct AutoRecharge;

impl Job for AutoRecharge {
    const SCHEDULE: ledger::jobs::Schedule = ledger::jobs::AUTO_RECHARGE;
    type Report = JobReport;

    async fn run_pass() -> Result<JobReport, ApiError> {
        run_pass(now_secs()).await
    }

    fn summary(report: &JobReport) -> Option<String> {
        let worth_a_line = report.recharges_started > 0 || report.reconciled > 0 || report.more;
        worth_a_line.then(|| {
            format!(
                "{} workspaces checked, {} recharges started ({} succeeded, {} failed), {} reconciled, more: {}",
                report.workspaces_checked,
                report.recharges_started,
                report.recharges_succeeded,
                report.recharges_failed,
                report.reconciled,
                report.more
            )
        })
    }
}

/// The component's HTTP entry point.
#[spin_sdk::http_service]
async fn handle(request: Request) -> Reply {
    let (parts, _body) = request.into_parts();
    let path = parts.uri.path();
    let outcome = match path_segments(path).as_slice() {
        ["internal", "jobs", "auto-recharge"] if parts.method == Method::POST => {
            run_on_demand::<AutoRecharge>(&parts.headers).await
        }
        ["internal", "jobs", "auto-recharge"] => Err(method_not_allowed(&parts.method, &["POST"])),
        _ => Err(not_found(path)),
    };
    outcome.unwrap_or_else(ApiError::into_reply)
}

spin_cron::export_cron!(spin_adapter::Cron<AutoRecharge>);
