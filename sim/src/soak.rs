//! The soak (issue 26, item 5): seeds after seeds for as long as it is given, on every core,
//! and the file of seeds a soak found failing, which the CI budget replays.
//!
//! A soak starts from a seed of its own (printed, far above the budget's 1 to 100) and runs
//! each seed as the budget does: OPS operations, a quarter of the seeds with storage faults on
//! `faults_percent` of their operations. A divergence stops it: it is shrunk and printed with
//! its replay command, and its seed is appended to [`FOUND_SEEDS`], a file in the repository
//! that `sim/tests/budget.rs` runs in every CI run, so a failure a soak found reproduces in CI
//! from its seed until it is fixed (and keeps being checked after).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{Divergence, Scenario, Tally, generate, run};

/// `sim/found-seeds.txt`: one `SEED OPS FAULTS_PERCENT` line per failure a soak found.
pub const FOUND_SEEDS: &str = "found-seeds.txt";

/// One seed to run: its operations and the share of them with a storage fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// Operations drawn from it.
    pub ops: usize,
    /// Storage faults on this percentage of them.
    pub faults_percent: u64,
}

impl SeedRun {
    /// The scenario it stands for.
    pub fn scenario(&self) -> Scenario {
        generate(self.seed, self.ops).with_faults(self.faults_percent)
    }

    /// The command that replays it.
    pub fn command(&self) -> String {
        format!(
            "cargo run --release -p ledger-sim -- --seed {} --ops {} --faults {}",
            self.seed, self.ops, self.faults_percent
        )
    }
}

/// The path of [`FOUND_SEEDS`] in this crate's directory.
pub fn found_seeds_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(FOUND_SEEDS)
}

/// The seeds in [`FOUND_SEEDS`] (`#` starts a comment); a malformed line is an error.
pub fn found_seeds() -> Result<Vec<SeedRun>, String> {
    let path = found_seeds_path();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut seeds = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            [seed, ops, faults] => seed
                .parse()
                .ok()
                .zip(ops.parse().ok())
                .zip(faults.parse().ok())
                .map(|((seed, ops), faults_percent)| SeedRun {
                    seed,
                    ops,
                    faults_percent,
                }),
            _ => None,
        };
        let run = parsed.ok_or_else(|| {
            format!(
                "{}:{}: expected `SEED OPS FAULTS_PERCENT`, found {line:?}",
                path.display(),
                number + 1
            )
        })?;
        seeds.push(run);
    }
    Ok(seeds)
}

/// Appends `run` to [`FOUND_SEEDS`] with a comment saying what diverged.
fn record_found(run: &SeedRun, divergence: &Divergence) -> std::io::Result<()> {
    use std::io::Write as _;
    // "step N: OPERATION", the line after the seed's.
    let text = divergence.to_string();
    let step = text.lines().nth(1).unwrap_or("").trim();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(found_seeds_path())?;
    writeln!(
        file,
        "{} {} {}  # found by a soak at {step}",
        run.seed, run.ops, run.faults_percent
    )
}

/// What a soak did.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Seeds run to the end.
    pub seeds: u64,
    /// Operations simulated.
    pub ops: u64,
    /// Outcomes by label, summed over the seeds.
    pub tally: Tally,
    /// How long it ran.
    pub elapsed: Duration,
}

/// A soak's settings.
#[derive(Debug, Clone, Copy)]
pub struct Soak {
    /// The first seed; each job takes the next one not taken.
    pub first_seed: u64,
    /// How long to start new seeds for.
    pub duration: Duration,
    /// Threads, one seed each at a time.
    pub jobs: usize,
    /// Operations per seed.
    pub ops: usize,
    /// Storage faults on this percentage of a faulted seed's operations (every fourth seed).
    pub faults_percent: u64,
}

impl Soak {
    /// The run of `seed`: faults on every fourth seed, as the budget has them on its last
    /// quarter.
    pub fn seed_run(&self, seed: u64) -> SeedRun {
        SeedRun {
            seed,
            ops: self.ops,
            faults_percent: if seed.is_multiple_of(4) {
                self.faults_percent
            } else {
                0
            },
        }
    }

    /// Runs until the time is up or a seed diverges; `progress` is called about once a minute.
    /// A divergence is recorded in [`FOUND_SEEDS`] and returned with its seed.
    pub fn run(
        &self,
        progress: &(dyn Fn(&SoakReport) + Sync),
    ) -> Result<SoakReport, (SeedRun, Box<Divergence>)> {
        let started = Instant::now();
        let next_seed = AtomicU64::new(self.first_seed);
        let failed = AtomicBool::new(false);
        let seeds = AtomicU64::new(0);
        let ops = AtomicUsize::new(0);
        let tally = Mutex::new(Tally::new());
        let found = Mutex::new(None);
        let last_progress = Mutex::new(Instant::now());
        std::thread::scope(|scope| {
            for _ in 0..self.jobs.max(1) {
                scope.spawn(|| {
                    while started.elapsed() < self.duration && !failed.load(Ordering::Relaxed) {
                        let seed_run = self.seed_run(next_seed.fetch_add(1, Ordering::Relaxed));
                        match run(&seed_run.scenario(), None) {
                            Ok(outcomes) => {
                                seeds.fetch_add(1, Ordering::Relaxed);
                                ops.fetch_add(seed_run.ops, Ordering::Relaxed);
                                if let Ok(mut tally) = tally.lock() {
                                    for (label, count) in outcomes {
                                        *tally.entry(label).or_default() += count;
                                    }
                                }
                            }
                            Err(divergence) => {
                                failed.store(true, Ordering::Relaxed);
                                if let Ok(mut found) = found.lock()
                                    && found.is_none()
                                {
                                    *found = Some((seed_run, divergence));
                                }
                            }
                        }
                        if let Ok(mut last) = last_progress.lock()
                            && last.elapsed() >= Duration::from_secs(60)
                        {
                            *last = Instant::now();
                            progress(&SoakReport {
                                seeds: seeds.load(Ordering::Relaxed),
                                ops: ops.load(Ordering::Relaxed) as u64,
                                tally: Tally::new(),
                                elapsed: started.elapsed(),
                            });
                        }
                    }
                });
            }
        });
        if let Some((seed_run, divergence)) = found.into_inner().ok().flatten() {
            if let Err(error) = record_found(&seed_run, &divergence) {
                eprintln!(
                    "could not record seed {} in {FOUND_SEEDS}: {error}",
                    seed_run.seed
                );
            }
            return Err((seed_run, divergence));
        }
        Ok(SoakReport {
            seeds: seeds.into_inner(),
            ops: ops.into_inner() as u64,
            tally: tally.into_inner().unwrap_or_default(),
            elapsed: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_found_seeds_file_parses() {
        // Every line must parse, or the budget could not replay what a soak found.
        found_seeds().expect("sim/found-seeds.txt");
    }

    #[test]
    fn every_fourth_seed_has_faults() {
        let soak = Soak {
            first_seed: 1,
            duration: Duration::ZERO,
            jobs: 1,
            ops: 10,
            faults_percent: 5,
        };
        let faulted: Vec<u64> = (1..=8)
            .filter(|seed| soak.seed_run(*seed).faults_percent == 5)
            .collect();
        assert_eq!(faulted, vec![4, 8]);
    }
}
