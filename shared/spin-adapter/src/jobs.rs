//! The one skeleton of a scheduled job ([`ledger::jobs`]): an HTTP twin that a service caller
//! runs on demand, and a cron handler that first claims the tick, so that one replica of the app
//! runs it. A component describes its job once ([`Job`]) and instantiates both from it.

use std::marker::PhantomData;

use http::HeaderMap;

use crate::auth::for_service;
use crate::config::now_secs;
use crate::db::run_ledger;
use crate::error::ApiError;
use crate::http::Reply;

/// A scheduled job as its component describes it: its schedule, one pass, and what a pass says.
pub trait Job {
    /// The job's name and period, the key of its tick's claim.
    const SCHEDULE: ledger::jobs::Schedule;

    /// What one pass did: the HTTP twin's answer.
    type Report: serde::Serialize;

    /// Runs one pass at the wall clock.
    fn run_pass() -> impl Future<Output = Result<Self::Report, ApiError>>;

    /// The cron handler's log line for a pass (after `"<job>: "`), or `None` when it did nothing
    /// worth a line.
    fn summary(report: &Self::Report) -> Option<String>;
}

/// The job's HTTP twin: for a service caller, one pass, answered 200 with its report. It does not
/// claim the tick: a pass asked for by hand always runs.
pub async fn run_on_demand<J: Job>(headers: &HeaderMap) -> Result<Reply, ApiError> {
    for_service(headers, async || {
        J::run_pass().await.map(|report| Reply::json(200, &report))
    })
    .await
}

/// The job's cron handler, exported by its component with
/// `spin_cron::export_cron!(spin_adapter::Cron<TheJob>)`.
pub struct Cron<J>(PhantomData<J>);

impl<J: Job> spin_cron::CronHandler for Cron<J> {
    async fn handle(timestamp_secs: u64) -> Result<(), String> {
        // Every replica fires this trigger; one of them runs the tick.
        if !claim_scheduled_run(J::SCHEDULE)
            .await
            .map_err(|error| error.to_string())?
        {
            return Ok(());
        }
        // The event's scheduled time is informational; the pass runs at the wall clock, as the
        // HTTP twin does (a delayed event must not renew at an older time).
        let _ = timestamp_secs;
        let report = J::run_pass().await.map_err(|error| error.to_string())?;
        if let Some(line) = J::summary(&report) {
            // Not `println!`, which panics when the log's disk is full (see `log!`).
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "{}: {line}", J::SCHEDULE.job);
        }
        Ok(())
    }
}

/// Claims this tick of a scheduled job (ledger::jobs): false when another replica of the app
/// already runs it.
async fn claim_scheduled_run(schedule: ledger::jobs::Schedule) -> Result<bool, ApiError> {
    let now = now_secs();
    run_ledger(async |db| ledger::jobs::claim_run(db, schedule, now).await).await
}
