//! The `cluster` part: the product as one replica on local files against two replicas on a
//! libSQL server (`sqld`, named by `SQLD_BIN`) and Redis, both on this machine, at fixed offered
//! rates (open loop: each request timed from when it was due), over the 1,000-workspace set and
//! over one hot workspace. For the replicas it also reports the statements (server round trips)
//! per request and the streams (sqld connections) opened, from sqld's own counters. First it
//! measures sqld alone (a one-row insert per request, no app), the ceiling the replicas share.
//! Without `SQLD_BIN` the replicas' rows say so.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use ledger::Storage as _;
use local_run::stores::{Redis, Sqld};

use crate::load::{self, MakeRequest};
use crate::native::Op;
use crate::{Config, Report, op_request, open_figures, run_tag, runtime, shapes};

/// Offered rates, per second (`--quick`: the first two).
const RATES: &[f64] = &[200.0, 500.0, 1_000.0];

struct Shape {
    name: &'static str,
    op: Op,
    workspaces: u64,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "debits over 1,000 workspaces",
        op: Op::Debit,
        workspaces: 1_000,
    },
    Shape {
        name: "debits, one workspace",
        op: Op::Debit,
        workspaces: 1,
    },
    Shape {
        name: "authorizations over 1,000 workspaces",
        op: Op::Authorize,
        workspaces: 1_000,
    },
    Shape {
        name: "authorizations, one workspace",
        op: Op::Authorize,
        workspaces: 1,
    },
];

/// Two replicas of the app over one sqld and one Redis, serving a copy of `seed`.
struct Replicas {
    sqld: Sqld,
    hosts: Vec<local_run::TestHost>,
    _redis: Redis,
    _dir: tempfile::TempDir,
}

impl Replicas {
    fn start(seed: &Path) -> Result<Option<Self>> {
        let Some(mut sqld) = Sqld::start_seeded(Some(seed))? else {
            return Ok(None);
        };
        // `$BENCH_SQLD_TXN_TIMEOUT_S`: sqld's write-transaction timeout, for an experiment.
        if let Ok(secs) = std::env::var("BENCH_SQLD_TXN_TIMEOUT_S") {
            let secs = secs.trim().parse().map_err(|_| {
                anyhow::anyhow!("BENCH_SQLD_TXN_TIMEOUT_S: {secs:?} is not seconds")
            })?;
            sqld.set_txn_timeout_secs(secs)?;
        }
        let redis = Redis::start()?;
        let dir = tempfile::tempdir()?;
        let config = local_run::stores::write_runtime_config(
            dir.path(),
            &format!(
                "{}\n{}",
                local_run::stores::libsql_database(&sqld.url()),
                local_run::stores::redis_store(&redis.url())
            ),
        )?;
        let config = config.display().to_string();
        let hosts = (0..2)
            .map(|n| {
                crate::host::start_with_env(
                    &crate::host::app_manifest(),
                    &dir.path().join(format!("replica-{n}")),
                    &["--runtime-config-file", &config],
                    &[],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Self {
            sqld,
            hosts,
            _redis: redis,
            _dir: dir,
        }))
    }

    fn addrs(&self) -> Vec<String> {
        self.hosts.iter().map(crate::host::addr).collect()
    }
}

/// Runs every shape at every rate on both deployments.
pub fn cluster(config: &Config, report: &mut Report) -> Result<()> {
    let rates = match crate::open_rates_from_env()? {
        Some(rates) => rates,
        None if config.quick => RATES[..2].to_vec(),
        None => RATES.to_vec(),
    };
    let (window, warmup) = if config.quick {
        (Duration::from_secs(3), Duration::from_secs(1))
    } else {
        (Duration::from_secs(10), Duration::from_secs(2))
    };
    let small = crate::data::cached(config.small)?;
    let seed = small.join("sqlite_db.db");
    let spec = |rate: f64| load::OpenSpec {
        rate_per_sec: rate,
        warmup,
        duration: window,
        connections_max: load::OPEN_CONNECTIONS_MAX,
        clients: 1,
    };
    let make = |shape: &Shape, rate: f64| -> MakeRequest {
        op_request(shape.op, format!("{}-{rate}", run_tag()), shape.workspaces)
    };
    sqld_alone(report, &rates, &spec)?;
    // `$BENCH_OPEN_SHAPES`, as for the `open` part, keeps some shapes.
    let only = std::env::var("BENCH_OPEN_SHAPES").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|list| list.split(',').any(|word| name.contains(word.trim())))
    };
    for shape in SHAPES.iter().filter(|shape| wanted(shape.name)) {
        // One replica on local files: the local host, as the README's first command runs it.
        let one = runtime::start_on_copy(&runtime::Runtime::Local, &small)?;
        shapes::long_holds(&one.addr)?;
        for &rate in &rates {
            let r = load::run_open(&one.addr, spec(rate), make(shape, rate))?;
            report.add(
                "cluster",
                format!(
                    "[one replica, local files] {}, offered {rate:.0}/s",
                    shape.name
                ),
                open_figures(&r),
            );
        }
        drop(one);

        let Some(replicas) = Replicas::start(&seed)? else {
            report.add(
                "cluster",
                format!("[two replicas, libSQL + Redis] {}", shape.name),
                "not run: set SQLD_BIN to a sqld binary (tursodatabase/libsql, libsql-server)",
            );
            continue;
        };
        let addrs = replicas.addrs();
        shapes::long_holds(&addrs[0])?;
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        for &rate in &rates {
            let before = replicas.sqld.counters()?;
            let r = load::run_open_spread(&addrs, spec(rate), make(shape, rate))?;
            let after = replicas.sqld.counters()?;
            // Every request sent, warm-up included: the counter covers them all.
            let sent = (rate * (warmup + window).as_secs_f64()).round();
            report.add(
                "cluster",
                format!(
                    "[two replicas, libSQL + Redis] {}, offered {rate:.0}/s",
                    shape.name
                ),
                format!(
                    "{}; per request sent: {:.2} statements, {:.2} server connections (streams)",
                    open_figures(&r),
                    after.statements.saturating_sub(before.statements) as f64 / sent,
                    after.connections.saturating_sub(before.connections) as f64 / sent
                ),
            );
        }
    }
    Ok(())
}

/// sqld's own ceiling on this machine, with no app in front: one request per one-row `INSERT`,
/// each on a new stream (the pipeline closes it), at the same offered rates. What two replicas
/// reach is bounded by it.
fn sqld_alone(
    report: &mut Report,
    rates: &[f64],
    spec: &dyn Fn(f64) -> load::OpenSpec,
) -> Result<()> {
    let Some(sqld) = Sqld::start()? else {
        return Ok(());
    };
    futures::executor::block_on(local_run::hrana::HranaDb::new(&sqld.url()).execute(
        "CREATE TABLE ceiling (id INTEGER PRIMARY KEY, v INTEGER)",
        &[],
    ))
    .map_err(|error| anyhow::anyhow!("sqld refused the table: {error}"))?;
    let addr = sqld.url().trim_start_matches("http://").to_owned();
    let make: MakeRequest = std::sync::Arc::new(|_client, seq| {
        load::json_request(
            http::Method::POST,
            "/v2/pipeline",
            None,
            format!(
                r#"{{"requests":[{{"type":"execute","stmt":{{"sql":"INSERT INTO ceiling (v) VALUES ({seq})"}}}},{{"type":"close"}}]}}"#
            ),
        )
    });
    for &rate in rates {
        let r = load::run_open(&addr, spec(rate), make.clone())?;
        report.add(
            "cluster",
            format!("[sqld alone, no app] one-row INSERT per request, offered {rate:.0}/s"),
            open_figures(&r),
        );
    }
    Ok(())
}
