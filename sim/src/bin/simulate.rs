//! `simulate [--seed N] [--seeds COUNT] [--ops N] [--faults PERCENT] [--fault-kinds K,L,...]
//! [--clocks-from-start true] [--keep I,J,...]`: runs the ledger against the model for
//! COUNT seeds from N, each with N operations, a storage fault armed on PERCENT in a hundred of
//! them (default 0), of the families named (`injected`, `after`, `kill`, `full`, `io`; default
//! all), with test clocks from the first operation if asked (`ledger_sim::generate_with`); on a divergence prints
//! it, shrinks it and prints the command that replays the shrunk list (exit status 1).
//!
//! `simulate --soak SECS [--seed N] [--jobs J] [--faults PERCENT]`: the soak (`ledger_sim::soak`):
//! seeds from N (default: drawn from the clock, printed) on J threads (default: every core)
//! until SECS have passed, faults of every family on PERCENT (default 5) of every fourth seed's
//! operations; a
//! divergence is recorded in `sim/found-seeds.txt`, which the CI budget replays.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ledger_sim::faults::Family;
use ledger_sim::soak::{FOUND_SEEDS, Soak, SoakReport};
use ledger_sim::{Scenario, Tally, generate_with, run, shrink};

struct Args {
    seed: u64,
    seeds: u64,
    ops: usize,
    faults_percent: Option<u64>,
    families: Vec<Family>,
    keep: Option<Vec<usize>>,
    soak_secs: Option<u64>,
    seed_given: bool,
    jobs: usize,
    /// Finding 5's draws (`ledger_sim::generate_with`).
    clocks_from_start: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seed: 1,
        seeds: 1,
        ops: 2_000,
        faults_percent: None,
        families: Family::ALL.to_vec(),
        keep: None,
        soak_secs: None,
        seed_given: false,
        jobs: std::thread::available_parallelism().map_or(1, usize::from),
        clocks_from_start: false,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--seed" => {
                args.seed = value.parse().map_err(bad)?;
                args.seed_given = true;
            }
            "--soak" => args.soak_secs = Some(value.parse().map_err(bad)?),
            "--jobs" => args.jobs = value.parse().map_err(bad)?,
            "--seeds" => args.seeds = value.parse().map_err(bad)?,
            "--ops" => args.ops = value.parse().map_err(bad)?,
            "--clocks-from-start" => {
                args.clocks_from_start =
                    value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
            }
            "--faults" => args.faults_percent = Some(value.parse().map_err(bad)?),
            "--fault-kinds" => {
                args.families = value
                    .split(',')
                    .map(|word| {
                        Family::parse(word).ok_or_else(|| {
                            format!("{flag} {word}: one of injected, after, kill, full, io")
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--keep" => {
                args.keep = Some(
                    value
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(bad)?,
                );
            }
            _ => {
                return Err(format!(
                    "unknown {flag}; usage: simulate [--seed N] [--seeds COUNT] [--ops N] [--faults PERCENT] [--fault-kinds K,L,...] [--clocks-from-start true] [--keep I,J,...], or simulate --soak SECS [--seed N] [--jobs J] [--ops N] [--faults PERCENT]"
                ));
            }
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if let Some(secs) = args.soak_secs {
        return soak(&args, secs);
    }
    let faults_percent = args.faults_percent.unwrap_or(0);
    let started = Instant::now();
    let mut total_ops = 0;
    let mut tally = Tally::new();
    for seed in args.seed..args.seed + args.seeds {
        let scenario = generate_with(seed, args.ops, args.clocks_from_start)
            .with_faults_of(faults_percent, &args.families);
        match run(&scenario, args.keep.as_deref()) {
            Ok(outcomes) => {
                total_ops += args.keep.as_ref().map_or(args.ops, Vec::len);
                for (label, count) in outcomes {
                    *tally.entry(label).or_default() += count;
                }
            }
            Err(divergence) => {
                println!("{divergence}");
                if args.keep.is_some() {
                    return ExitCode::FAILURE;
                }
                print_shrunk(
                    &scenario,
                    &divergence,
                    seed,
                    (args.ops, faults_percent),
                    &args.families,
                    args.clocks_from_start,
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    print_tally(&tally);
    println!(
        "{} seeds from {}, {total_ops} operations, faults on {}% of them, 0 divergences, in {secs:.1} s ({:.0} ops/s)",
        args.seeds,
        args.seed,
        faults_percent,
        total_ops as f64 / secs
    );
    ExitCode::SUCCESS
}

/// Shrinks a divergence and prints the short list and the command that replays it.
fn print_shrunk(
    scenario: &Scenario,
    divergence: &ledger_sim::Divergence,
    seed: u64,
    (ops, faults_percent): (usize, u64),
    families: &[Family],
    clocks_from_start: bool,
) {
    println!("shrinking...");
    let (keep, shrunk) = shrink(scenario, divergence);
    println!("shrunk to {} operations:", keep.len());
    for index in &keep {
        println!("  [{index}] {:?}", scenario.ops[*index]);
    }
    println!("{shrunk}");
    let list: Vec<String> = keep.iter().map(usize::to_string).collect();
    let words: Vec<&str> = families.iter().map(|f| f.word()).collect();
    let clocks = if clocks_from_start {
        " --clocks-from-start true"
    } else {
        ""
    };
    println!(
        "replay: simulate --seed {seed} --ops {ops} --faults {faults_percent} --fault-kinds {}{clocks} --keep {}",
        words.join(","),
        list.join(","),
    );
}

fn print_tally(tally: &Tally) {
    for (label, count) in tally {
        println!("  {count:>11}  {label}");
    }
}

/// `--soak SECS`.
fn soak(args: &Args, secs: u64) -> ExitCode {
    // A seed of its own, far above the budget's (1 to 100) and printed, unless one is given.
    let first_seed = if args.seed_given {
        args.seed
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        1_000_000 + nanos % 1_000_000_000_000
    };
    let soak = Soak {
        first_seed,
        duration: Duration::from_secs(secs),
        jobs: args.jobs,
        ops: args.ops,
        faults_percent: args.faults_percent.unwrap_or(5),
    };
    println!(
        "soak: {secs} s from seed {first_seed} on {} threads, {} operations a seed, faults on {}% of every fourth seed's",
        soak.jobs, soak.ops, soak.faults_percent
    );
    let progress = |report: &SoakReport| {
        println!(
            "soak: {:.0} s, {} seeds, {} operations ({:.0} ops/s), 0 divergences",
            report.elapsed.as_secs_f64(),
            report.seeds,
            report.ops,
            report.ops as f64 / report.elapsed.as_secs_f64()
        );
    };
    match soak.run(&progress) {
        Ok(report) => {
            print_tally(&report.tally);
            println!(
                "soak: {} seeds from {first_seed}, {} operations in {:.0} s ({:.0} ops/s), 0 divergences",
                report.seeds,
                report.ops,
                report.elapsed.as_secs_f64(),
                report.ops as f64 / report.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err((seed_run, divergence)) => {
            println!("{divergence}");
            println!(
                "seed {} recorded in sim/{FOUND_SEEDS}: the CI budget replays it ({})",
                seed_run.seed,
                seed_run.command()
            );
            print_shrunk(
                &seed_run.scenario(),
                &divergence,
                seed_run.seed,
                (seed_run.ops, seed_run.faults_percent),
                &Family::ALL,
                false,
            );
            ExitCode::FAILURE
        }
    }
}
