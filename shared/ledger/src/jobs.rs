//! Scheduled jobs run once per tick across replicas.
//!
//! Every replica of the app runs the same cron triggers, so each scheduled job fires once per
//! replica. The jobs are already safe to run concurrently (every renewal, recharge claim and
//! notification claim is a guarded write), but N replicas would do N times the reading and
//! calling. A job therefore first claims its run: one guarded write, won by the first replica of
//! a tick; the others skip it. The claim is kept for half the job's period, which tolerates
//! clocks apart by up to that much and still lets the next tick run. A replica that claims and
//! then dies leaves its tick undone: the next tick picks the work up, as after any failed pass.
//! The operator's HTTP twins of the jobs do not claim: a pass asked for by hand always runs.

use crate::Result;
use crate::storage::{SqlValue, Storage};

/// A scheduled job: its name and how often its trigger fires.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The job's name, the claim's key (e.g. `"cycle-renewal"`).
    pub job: &'static str,
    /// The period of its cron expression in spin.toml, in seconds.
    pub every_secs: i64,
}

impl Schedule {
    /// How long a claim keeps other replicas out: half the period, at least a second.
    pub fn claim_secs(&self) -> i64 {
        (self.every_secs / 2).max(1)
    }
}

/// The cycle renewal and hold-expiry sweep: `cron_expression = "0 * * * * *"` in spin.toml.
pub const CYCLE_RENEWAL: Schedule = Schedule {
    job: "cycle-renewal",
    every_secs: 60,
};

/// The auto-recharge sweep and payment reconciliation: `"30 * * * * *"`.
pub const AUTO_RECHARGE: Schedule = Schedule {
    job: "auto-recharge",
    every_secs: 60,
};

/// Notification delivery and the grace and runway sweeps: `"*/5 * * * * *"`.
pub const NOTIFIER: Schedule = Schedule {
    job: "notifier",
    every_secs: 5,
};

/// Every scheduled job, by the component that runs it (spin.toml's `[[trigger.cron]]`).
pub const SCHEDULES: &[Schedule] = &[CYCLE_RENEWAL, AUTO_RECHARGE, NOTIFIER];

/// Claims this tick's run of `schedule` at `now_secs`: true for the first replica of the tick,
/// false for every other one until [`Schedule::claim_secs`] have passed.
pub async fn claim_run<S: Storage>(db: &S, schedule: Schedule, now_secs: i64) -> Result<bool> {
    let rows = db
        .query(
            "INSERT INTO scheduled_runs (job, claimed_at) VALUES (?1, ?2)
             ON CONFLICT (job) DO UPDATE SET claimed_at = excluded.claimed_at
                 WHERE scheduled_runs.claimed_at <= excluded.claimed_at - ?3
             RETURNING claimed_at",
            &[
                SqlValue::Text(schedule.job.to_owned()),
                SqlValue::Integer(now_secs),
                SqlValue::Integer(schedule.claim_secs()),
            ],
        )
        .await?;
    Ok(!rows.is_empty())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use futures::executor::block_on;

    const RENEWAL: Schedule = CYCLE_RENEWAL;

    fn migrated() -> (tempfile::TempDir, crate::native::NativeDb) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::native::NativeDb::open(dir.path().join("ledger.db")).expect("open");
        block_on(crate::schema::migrate(&db)).expect("migrate");
        (dir, db)
    }

    #[test]
    fn the_first_replica_of_a_tick_runs_the_job_and_the_others_skip_it() {
        let (_dir, db) = migrated();
        // Three replicas fire the minute's renewal within a second of each other.
        assert!(block_on(claim_run(&db, RENEWAL, 1_000)).expect("claim"));
        assert!(!block_on(claim_run(&db, RENEWAL, 1_000)).expect("claim"));
        assert!(!block_on(claim_run(&db, RENEWAL, 1_001)).expect("claim"));
        // Another job's claim is its own.
        assert!(block_on(claim_run(&db, NOTIFIER, 1_001)).expect("claim"));
        // A clock 29 s ahead still counts as the same tick; the next minute runs.
        assert!(!block_on(claim_run(&db, RENEWAL, 1_029)).expect("claim"));
        assert!(block_on(claim_run(&db, RENEWAL, 1_060)).expect("claim"));
        assert!(!block_on(claim_run(&db, RENEWAL, 1_060)).expect("claim"));
        // Every 5 s: claims 2 s apart are one tick, 5 s apart two.
        assert!(!block_on(claim_run(&db, NOTIFIER, 1_002)).expect("claim"));
        assert!(block_on(claim_run(&db, NOTIFIER, 1_006)).expect("claim"));
    }

    /// The periods above are spin.toml's cron expressions: a changed schedule must change them.
    #[test]
    fn every_schedule_matches_its_cron_trigger_in_spin_toml() {
        let manifest = include_str!("../../../spin.toml");
        let mut triggers = Vec::new();
        let mut component = None;
        for line in manifest.lines() {
            if let Some(name) = line.strip_prefix("component = ") {
                component = Some(name.trim_matches('"'));
            } else if let Some(expression) = line.strip_prefix("cron_expression = ") {
                triggers.push((
                    component.take().expect("component first"),
                    expression.trim_matches('"'),
                ));
            }
        }
        let period_secs = |expression: &str| match expression {
            "0 * * * * *" | "30 * * * * *" => 60,
            "*/5 * * * * *" => 5,
            other => panic!("a new cron expression {other:?}: give its period here"),
        };
        let mut found: Vec<_> = triggers
            .iter()
            .map(|(component, expression)| (component.to_string(), period_secs(expression)))
            .collect();
        let mut expected: Vec<_> = SCHEDULES
            .iter()
            .map(|schedule| (schedule.job.to_owned(), schedule.every_secs))
            .collect();
        found.sort();
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn racing_replicas_claim_a_tick_exactly_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ledger.db");
        block_on(crate::schema::migrate(
            &crate::native::NativeDb::open(&path).expect("open"),
        ))
        .expect("migrate");
        for tick in 0..20 {
            let now_secs = 10_000 + tick * RENEWAL.every_secs;
            let winners: usize = std::thread::scope(|scope| {
                let replicas: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            let db = crate::native::NativeDb::open(&path).expect("open");
                            block_on(claim_run(&db, RENEWAL, now_secs)).expect("claim")
                        })
                    })
                    .collect();
                replicas
                    .into_iter()
                    .map(|replica| usize::from(replica.join().expect("replica")))
                    .sum()
            });
            assert_eq!(winners, 1, "tick {tick}");
        }
    }
}
