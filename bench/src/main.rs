//! `bench`: prints figures, never asserts them. `cargo run --release -p bench -- native`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use ledger::catalog::{Catalog, UsageKind};
use ledger::native::NativeDb;
use ledger::usage::UsageEvent;
use ledger::workspace::WorkspaceInput;
use ledger::{payments, plans, workspace};

/// 2026-11-01T00:00:00Z.
const NOV_1: i64 = 1_793_491_200;
/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "native".into());
    match which.as_str() {
        "native" => native(),
        other => {
            eprintln!("unknown benchmark {other}; available: native");
            std::process::exit(2);
        }
    }
}

fn setup(dir: &std::path::Path, catalog: &Catalog, workspaces: usize) -> Result<(), String> {
    let db = NativeDb::open(dir.join("ledger.db")).map_err(|e| e.to_string())?;
    block_on(ledger::schema::migrate(&db)).map_err(|e| e.to_string())?;
    for n in 0..workspaces {
        let id = format!("ws{n}");
        let input = WorkspaceInput {
            name: id.clone(),
            email: format!("{id}@example.com"),
            currency: None,
            timezone: None,
        };
        block_on(workspace::upsert(&db, catalog, &id, &input, NOV_1)).map_err(|e| e.to_string())?;
        block_on(plans::change_plan(
            &db,
            catalog,
            &id,
            "professional",
            true,
            NOV_1,
        ))
        .map_err(|e| e.to_string())?;
        block_on(payments::create_topup(
            &db,
            catalog,
            &id,
            &format!("tp{n}"),
            5_000.into(),
            NOV_1,
        ))
        .map_err(|e| e.to_string())?;
        block_on(payments::settle_succeeded(&db, &format!("tp{n}"), NOV_1))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Debits per second from `threads` threads, each with its own connection, for [`RUN`].
fn debits_per_sec(
    dir: &std::path::Path,
    catalog: &Catalog,
    threads: usize,
    workspaces: usize,
) -> f64 {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let path = dir.join("ledger.db");
            let catalog = catalog.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let Ok(db) = NativeDb::open(path) else {
                    return 0;
                };
                barrier.wait();
                let started = Instant::now();
                let mut done = 0u64;
                while started.elapsed() < RUN {
                    let event = UsageEvent {
                        id: format!("t{thread}-{done}"),
                        workspace_id: format!("ws{}", (done as usize + thread) % workspaces),
                        agent_id: "agent".into(),
                        kind: UsageKind::Message,
                        quantity: 1.into(),
                        occurred_at: "2026-11-01T00:00:00Z".into(),
                        direction: None,
                        to: None,
                        from: None,
                    };
                    if block_on(ledger::usage::record(&db, &catalog, &event, NOV_1)).is_ok() {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / RUN.as_secs_f64()
}

fn native() {
    let catalog = match Catalog::default_catalog() {
        Ok(c) => c,
        Err(e) => return eprintln!("catalog: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return eprintln!("temp dir: {e}"),
    };
    if let Err(e) = setup(dir.path(), &catalog, 16) {
        return eprintln!("setup: {e}");
    }
    println!(
        "| benchmark (native, in-process ledger on rusqlite, WAL, synchronous=NORMAL) | debits/s |"
    );
    println!("|---|---|");
    for threads in [1, 2] {
        let rate = debits_per_sec(dir.path(), &catalog, threads, 16);
        println!("| usage debit, {threads} thread(s), 16 workspaces | {rate:.0} |");
    }
}
