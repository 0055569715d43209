//! The CI budget: a fixed list of seeds, run against the model in `cargo test --release` (the
//! README's test command). Fixed rather than timed, so that a failure reproduces from its seed.

use std::time::Instant;

use ledger_sim::soak::found_seeds;
use ledger_sim::{Tally, generate, run, shrink};

/// Seeds 1..=SEEDS of OPS_PER_SEED operations each: the 200,000 operations issue 26 asks of CI.
/// With every operation and fault family of the simulator, this test and the soak seeds' took
/// 41 s in a fresh-clone CI run on the 2-core machine (2026-12-07); 23 s before grants, cycles,
/// recharges, test clocks and the real storage faults (docs/reliability.md, "The simulator").
const SEEDS: u64 = 100;
const OPS_PER_SEED: usize = 2_000;
/// The last seeds run with storage faults on FAULTS_PERCENT of their operations, of every kind
/// (`Family::ALL`: injected errors, an error after a statement, a killed connection or every
/// one, a real full disk, an I/O error under SQLite), their database a file. Not all: a faulted
/// step also runs the audit (twice when the attempt was refused), which would take the budget
/// past 25 s (before grants); seeds 1 to 75 stay as they were, in memory, so the defects listed
/// in docs/reliability.md are found at the seeds listed there.
const FAULTED_SEEDS: u64 = 25;
const FAULTS_PERCENT: u64 = 5;

#[test]
fn the_ledger_agrees_with_the_model_on_every_seed_of_the_budget() {
    let started = Instant::now();
    let mut total_ops = 0;
    let mut faults = Tally::new();
    for seed in 1..=SEEDS {
        let faults_percent = if seed > SEEDS - FAULTED_SEEDS {
            FAULTS_PERCENT
        } else {
            0
        };
        let scenario = generate(seed, OPS_PER_SEED).with_faults(faults_percent);
        match run(&scenario, None) {
            Ok(tally) => {
                total_ops += OPS_PER_SEED;
                for (label, count) in tally {
                    if label.starts_with("fault") {
                        *faults.entry(label).or_default() += count;
                    }
                }
            }
            Err(divergence) => {
                let (keep, shrunk) = shrink(&scenario, &divergence);
                let list: Vec<String> = keep.iter().map(usize::to_string).collect();
                panic!(
                    "{divergence}\nshrunk to {} operations:\n{shrunk}\nreplay: cargo run --release -p ledger-sim -- --seed {seed} --ops {OPS_PER_SEED} --faults {faults_percent} --keep {}",
                    keep.len(),
                    list.join(",")
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for (label, count) in &faults {
        println!("  {count:>7}  {label}");
    }
    println!(
        "simulated {total_ops} operations over {SEEDS} seeds (the last {FAULTED_SEEDS} with faults on {FAULTS_PERCENT}%) in {secs:.1} s ({:.0} ops/s), 0 divergences",
        total_ops as f64 / secs
    );
}

/// Every seed a soak found diverging (`sim/found-seeds.txt`): a failure a soak found reproduces
/// here, in every CI run, from its seed alone, and stays checked after its fix.
#[test]
fn every_seed_a_soak_found_agrees_with_the_model() {
    let seeds = found_seeds().expect("sim/found-seeds.txt");
    for seed_run in &seeds {
        if let Err(divergence) = run(&seed_run.scenario(), None) {
            panic!(
                "{divergence}\nfound by a soak; replay and shrink: {}",
                seed_run.command()
            );
        }
    }
    println!("{} seeds found by soaks: 0 divergences", seeds.len());
}
