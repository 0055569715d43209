//! Billing-cycle renewal (R13-R16) and the hold-expiry sweep (R5), run by the cron trigger and by
//! its HTTP twin `POST /internal/jobs/renew-cycles` (service key).
//!
//! One pass renews due workspaces in bounded batches (each batch its own ledger operation, so the
//! instance's database lock is released between batches and other requests interleave), then
//! posts overdue holds, then expires grants past their expiry (`ledger::grants::expire_due`,
//! bounded per pass) and tells the platform of grants about to expire
//! (`ledger::grants::notify_expiring`). Renewal is idempotent per (workspace, cycle start) in the ledger, so two
//! passes running at once (cron and HTTP, or two instances) renew each cycle once.

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]

use http::Method;
use ledger::calls::EXPIRY_BATCH_MAX;
use ledger::plans::RENEWAL_BATCH_MAX;
use spin_adapter::{
    ApiError, Job, Reply, method_not_allowed, not_found, now_secs, path_segments, run_ledger,
    run_on_demand,
};
use spin_sdk::http::Request;

/// The most renewal batches one pass runs; anything left is reported as `more` and picked up by
/// the next pass (the cron runs every minute).
const BATCHES_PER_RUN_MAX: usize = 20;

/// What one pass did (the HTTP answer).
#[derive(Debug, Default, serde::Serialize)]
struct JobReport {
    /// Workspaces whose cycle advanced.
    workspaces_renewed: usize,
    /// Cycles closed in all.
    cycles_advanced: usize,
    /// Workspaces whose renewal was refused and skipped (the others still renewed).
    workspaces_failed: usize,
    /// Overdue holds posted at their reserved amount.
    holds_expired: usize,
    /// Grants whose unspent part expired.
    grants_expired: usize,
    /// Grants whose coming expiry was told (`credits.expiring`).
    grants_expiring_told: usize,
    /// Whether due workspaces remain (the batch budget ran out).
    more: bool,
}

/// Runs one pass of the job at `now` (seconds since the epoch).
async fn run_pass(now: i64) -> Result<JobReport, ApiError> {
    let mut report = JobReport::default();
    for _ in 0..BATCHES_PER_RUN_MAX {
        let batch = run_ledger(async |db| {
            let catalog = spin_adapter::catalog(db).await?;
            ledger::plans::renew_due(db, &catalog, now, RENEWAL_BATCH_MAX).await
        })
        .await?;
        report.workspaces_renewed += batch.workspaces_renewed;
        report.cycles_advanced += batch.cycles_advanced;
        report.workspaces_failed += batch.workspaces_failed;
        report.more = batch.more;
        // A batch that advanced nothing would find the same workspaces again: stop there.
        if !batch.more || batch.cycles_advanced == 0 {
            break;
        }
    }
    report.holds_expired =
        run_ledger(async |db| ledger::calls::expire_holds(db, now, EXPIRY_BATCH_MAX).await).await?;
    report.grants_expired =
        run_ledger(async |db| ledger::grants::expire_due(db, now).await).await?;
    report.grants_expiring_told = run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        ledger::grants::notify_expiring(db, &catalog, now).await
    })
    .await?;
    Ok(report)
}

/// The job: renewal and the hold-expiry sweep, once a minute and on demand.
struct Renewal;

impl Job for Renewal {
    const SCHEDULE: ledger::jobs::Schedule = ledger::jobs::CYCLE_RENEWAL;
    type Report = JobReport;

    async fn run_pass() -> Result<JobReport, ApiError> {
        run_pass(now_secs()).await
    }

    fn summary(report: &JobReport) -> Option<String> {
        let worth_a_line = report.workspaces_renewed > 0
            || report.workspaces_failed > 0
            || report.holds_expired > 0
            || report.grants_expired > 0
            || report.more;
        worth_a_line.then(|| {
            format!(
                "{} workspaces renewed, {} cycles advanced, {} failed, {} holds expired, \
                 {} grants expired, more: {}",
                report.workspaces_renewed,
                report.cycles_advanced,
                report.workspaces_failed,
                report.holds_expired,
                report.grants_expired,
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
        ["internal", "jobs", "renew-cycles"] if parts.method == Method::POST => {
            run_on_demand::<Renewal>(&parts.headers).await
        }
        ["internal", "jobs", "renew-cycles"] => Err(method_not_allowed(&parts.method, &["POST"])),
        _ => Err(not_found(path)),
    };
    outcome.unwrap_or_else(ApiError::into_reply)
}

spin_cron::export_cron!(spin_adapter::Cron<Renewal>);
