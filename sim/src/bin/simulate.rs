//! `simulate [--seed N] [--seeds COUNT] [--ops N] [--faults PERCENT] [--keep I,J,...]
//! [--upgrades-past-cycle-end]`: runs the ledger against the model for COUNT seeds from N, each
//! with N operations, a storage fault armed on PERCENT in a hundred of them (default 0), plan
//! changes also between a cycle's end and its renewal with the last flag; on a divergence prints
//! it, shrinks it and prints the command that replays the shrunk list (exit status 1).

use std::process::ExitCode;
use std::time::Instant;

use ledger_sim::{Options, Tally, generate_with, run, shrink};

struct Args {
    seed: u64,
    seeds: u64,
    ops: usize,
    faults_percent: u64,
    keep: Option<Vec<usize>>,
    options: Options,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seed: 1,
        seeds: 1,
        ops: 2_000,
        faults_percent: 0,
        keep: None,
        options: Options::default(),
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        if flag == "--upgrades-past-cycle-end" {
            args.options.upgrades_past_cycle_end = true;
            continue;
        }
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--seed" => args.seed = value.parse().map_err(bad)?,
            "--seeds" => args.seeds = value.parse().map_err(bad)?,
            "--ops" => args.ops = value.parse().map_err(bad)?,
            "--faults" => args.faults_percent = value.parse().map_err(bad)?,
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
                    "unknown {flag}; usage: simulate [--seed N] [--seeds COUNT] [--ops N] [--faults PERCENT] [--keep I,J,...] [--upgrades-past-cycle-end]"
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
    let started = Instant::now();
    let mut total_ops = 0;
    let mut tally = Tally::new();
    for seed in args.seed..args.seed + args.seeds {
        let scenario = generate_with(seed, args.ops, args.options).with_faults(args.faults_percent);
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
                println!("shrinking...");
                let (keep, shrunk) = shrink(&scenario, &divergence);
                println!("shrunk to {} operations:", keep.len());
                for index in &keep {
                    println!("  [{index}] {:?}", scenario.ops[*index]);
                }
                println!("{shrunk}");
                let list: Vec<String> = keep.iter().map(usize::to_string).collect();
                println!(
                    "replay: simulate --seed {seed} --ops {} --faults {} --keep {}{}",
                    args.ops,
                    args.faults_percent,
                    list.join(","),
                    if args.options.upgrades_past_cycle_end {
                        " --upgrades-past-cycle-end"
                    } else {
                        ""
                    },
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for (label, count) in &tally {
        println!("  {count:>9}  {label}");
    }
    println!(
        "{} seeds from {}, {total_ops} operations, faults on {}% of them, 0 divergences, in {secs:.1} s ({:.0} ops/s)",
        args.seeds,
        args.seed,
        args.faults_percent,
        total_ops as f64 / secs
    );
    ExitCode::SUCCESS
}
