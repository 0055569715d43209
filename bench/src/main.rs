//! `bench`: prints figures, never asserts them. `scripts/bench.sh [--quick] [PART...]`, or
//! `cargo run --release -p bench -- [--quick] [PART...]` once the components and the host are
//! built. PART is `all` (the default) or any of [`PARTS`]. Every side of a ratio is measured in
//! the same run; the load average is printed with every figure (the machine may be shared).

mod cluster;
mod data;
mod host;
mod load;
mod native;
mod notify;
mod runtime;
mod shapes;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ledger::catalog::Catalog;

use crate::data::Spec;
use crate::load::{LoadResult, MakeRequest};
use crate::native::Op;
use crate::runtime::Runtime;

/// The parts, in the order `all` runs them.
const PARTS: &[&str] = &[
    "sizes",
    "fsync",
    "native",
    "native-http",
    "noop",
    "product",
    "campaign",
    "tenants",
    "mixed",
    "open",
    "cluster",
    "batch",
    "notify",
    "scale",
    "renewal",
    "cold-start",
];

/// How long and how big: the full run, or `--quick` (~1 s per measurement, small data sets).
struct Config {
    quick: bool,
    /// The runtimes the product is measured on (both local SQLite modes, real Spin if asked).
    runtimes: Vec<Runtime>,
    run: Duration,
    warmup: Duration,
    clients: Vec<usize>,
    small: Spec,
    large: Spec,
    renewal: Spec,
}

impl Config {
    fn new(quick: bool, runtimes: Vec<Runtime>) -> Self {
        let shape = |workspaces, plan, age_days, debits_per_workspace| Spec {
            workspaces,
            plan,
            age_days,
            debits_per_workspace,
        };
        Self {
            quick,
            runtimes,
            run: Duration::from_secs(if quick { 1 } else { 5 }),
            warmup: Duration::from_millis(if quick { 300 } else { 1000 }),
            clients: vec![1, 8, 16, 64],
            // Every set has 2 journal rows per workspace from its set-up plus 2 per seeded debit:
            // 1,000,000 workspaces x (2 + 4 x 2) = 10 million journal rows.
            small: shape(1_000, "professional", 0, 4),
            large: shape(
                if quick { 100_000 } else { 1_000_000 },
                "professional",
                0,
                4,
            ),
            renewal: shape(if quick { 10_000 } else { 100_000 }, "free", 45, 0),
        }
    }
}

/// A unique tag for this run's event and call ids (runs reuse cached data sets).
pub(crate) fn run_tag() -> String {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("b{}-{}-{call}", data::now_secs(), std::process::id())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Every figure of the run, and what the ratios need.
#[derive(Default)]
struct Report {
    rows: Vec<(String, String, String, String)>,
    fsync_per_sec: Option<f64>,
    in_process: BTreeMap<(&'static str, usize), f64>,
    native_http: BTreeMap<(&'static str, usize), LoadResult>,
    /// By (runtime key, operation, clients).
    product: BTreeMap<(&'static str, &'static str, usize), LoadResult>,
    /// By (runtime key, clients).
    noop: BTreeMap<(&'static str, usize), LoadResult>,
    /// By runtime key.
    campaign: BTreeMap<&'static str, shapes::Campaign>,
    /// One workspace's 1,000-event batch through HTTP, events/s by runtime key.
    batch_one_workspace: BTreeMap<&'static str, f64>,
    batch_full_per_sec: Option<f64>,
    single_full_per_sec: Option<f64>,
    scale_p50: BTreeMap<&'static str, Duration>,
    scale_p99: BTreeMap<&'static str, Duration>,
}

impl Report {
    fn add(&mut self, part: &str, measure: impl Into<String>, value: impl Into<String>) {
        let row = (
            part.to_owned(),
            measure.into(),
            value.into(),
            load_average(),
        );
        eprintln!("  {} | {} | {} | load {}", row.0, row.1, row.2, row.3);
        self.rows.push(row);
    }

    fn add_load(&mut self, part: &str, what: &str, r: &LoadResult) {
        let errors = if r.errors == 0 {
            String::new()
        } else {
            format!(
                ", {} errors (first: {})",
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            )
        };
        self.add(
            part,
            format!("{what}, {} clients", r.clients),
            format!(
                "{:.0} req/s, p50 {}, p99 {}, p99.9 {}{errors}",
                r.rps(),
                ms(r.p50),
                ms(r.p99),
                ms(r.p999)
            ),
        );
    }

    fn ratios(&mut self) {
        let mut out = Vec::new();
        for (&(runtime, op, clients), product) in &self.product {
            if op == "debit"
                && let Some(noop) = self.noop.get(&(runtime, clients))
            {
                out.push((
                    format!("[{runtime}] debit / no-op throughput, {clients} clients"),
                    product.rps() / noop.rps(),
                ));
            }
            if runtime != "local" {
                if let Some(local) = self.product.get(&("local", op, clients)) {
                    out.push((
                        format!(
                            "[{runtime}] / [local] {op} throughput, {clients} clients (Spin target at 16: >= 0.8)"
                        ),
                        product.rps() / local.rps(),
                    ));
                }
                continue;
            }
            if let Some(native) = self.native_http.get(&(op, clients)) {
                out.push((
                    format!("product / native-HTTP {op} throughput, {clients} clients"),
                    product.rps() / native.rps(),
                ));
            }
        }
        for op in ["debit", "call-authorize"] {
            let best = self
                .product
                .iter()
                .filter(|((runtime, o, _), _)| *runtime == "local" && *o == op)
                .map(|(_, r)| r.rps())
                .fold(0.0, f64::max);
            let ceiling = self
                .in_process
                .iter()
                .filter(|((o, _), _)| *o == op)
                .map(|(_, v)| *v)
                .fold(0.0, f64::max);
            if best > 0.0 && ceiling > 0.0 {
                out.push((
                    format!("product (best) / in-process (best) {op} throughput"),
                    best / ceiling,
                ));
            }
        }
        if let (Some(p), Some(n)) = (
            self.product.get(&("local", "debit", 64)),
            self.native_http.get(&("debit", 64)),
        ) && !n.p99.is_zero()
        {
            out.push((
                "product p99 / native-HTTP p99, debit, 64 clients".into(),
                p.p99.as_secs_f64() / n.p99.as_secs_f64(),
            ));
        }
        if let (Some(batch), Some(fsync)) = (self.batch_full_per_sec, self.fsync_per_sec) {
            out.push((
                "batch-ingest debits/s at synchronous=FULL / fsyncs/s (durable debits per fsync)"
                    .into(),
                batch / fsync,
            ));
        }
        if let (Some(batch), Some(single)) = (self.batch_full_per_sec, self.single_full_per_sec) {
            // The same ratio against this run's own durable single debits, which (unlike the raw
            // fsync rate) pay the same per-commit costs as a batch: steadier on a shared disk.
            out.push((
                "batch-ingest debits/s / single durable debits/s, both at synchronous=FULL".into(),
                batch / single,
            ));
        }
        if let (Some(small), Some(large)) =
            (self.scale_p50.get("small"), self.scale_p50.get("large"))
        {
            out.push((
                "scale: debit p50 at the large set / at 1,000 workspaces".into(),
                large.as_secs_f64() / small.as_secs_f64(),
            ));
        }
        if let (Some(small), Some(large)) =
            (self.scale_p99.get("small"), self.scale_p99.get("large"))
        {
            out.push((
                "scale: debit p99 at the large set / at 1,000 workspaces".into(),
                large.as_secs_f64() / small.as_secs_f64(),
            ));
        }
        out.extend(self.campaign_ratios());
        if let Some(local) = self.batch_one_workspace.get("local") {
            for (runtime, rate) in &self.batch_one_workspace {
                if *runtime != "local" {
                    out.push((
                        format!("[{runtime}] / [local] one workspace's 1,000-event batch (target on Spin: >= 0.8)"),
                        rate / local,
                    ));
                }
            }
        }
        for (measure, value) in out {
            self.add("ratio", measure, format!("{value:.2}"));
        }
        let spin_tails: Vec<_> = self
            .product
            .iter()
            .filter(|((runtime, _, clients), _)| *runtime == "spin" && *clients == 64)
            .map(|((_, op, _), r)| {
                (
                    format!("[spin] {op} p99 at 64 clients (target <= 50 ms)"),
                    ms(r.p99),
                )
            })
            .collect();
        for (measure, value) in spin_tails {
            self.add("target", measure, value);
        }
    }

    /// The campaign's ratios: with 1,000 calls in progress against none (target >= 0.9), and a
    /// call's authorize → end cycle against a debit (target >= 0.5).
    fn campaign_ratios(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (runtime, c) in &self.campaign {
            for (&(in_progress, clients), loaded) in &c.debits {
                if in_progress == 0 {
                    continue;
                }
                if let Some(none) = c.debits.get(&(0, clients)) {
                    out.push((
                        format!("[{runtime}] campaign: debits with {in_progress} calls in progress / with none, {clients} clients (target >= 0.9)"),
                        loaded.rps() / none.rps(),
                    ));
                }
                let (Some(cycles), Some(none)) = (
                    c.cycles.get(&(in_progress, clients)),
                    c.cycles.get(&(0, clients)),
                ) else {
                    continue;
                };
                out.push((
                    format!("[{runtime}] campaign: authorize -> heartbeat -> end cycles with {in_progress} calls in progress / with none, {clients} clients (target >= 0.9)"),
                    cycles.rps() / none.rps(),
                ));
                out.push((
                    format!("[{runtime}] campaign: authorizations/s with {in_progress} calls in progress / with none, {clients} clients (target >= 0.9)"),
                    cycles.kind_rps("authorize") / none.kind_rps("authorize"),
                ));
            }
            for (clients, short) in &c.short_cycles {
                if let Some(debits) = c.debits.get(&(0, *clients)) {
                    out.push((
                        format!("[{runtime}] campaign: authorize -> end cycles/s / debits/s, {clients} clients (target >= 0.5)"),
                        short.rps() / 2.0 / debits.rps(),
                    ));
                }
            }
        }
        out
    }

    fn print(&self) {
        println!("| part | measure | value | load avg (1/5/15 min) |");
        println!("|---|---|---|---|");
        for (part, measure, value, load) in &self.rows {
            println!("| {part} | {measure} | {value} | {load} |");
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut quick = false;
    let mut spin = false;
    let mut parts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--runtime" => match args.next().as_deref() {
                Some("spin") => spin = true,
                Some("local") => {}
                other => {
                    eprintln!("--runtime takes `spin` (or `local`), not {other:?}");
                    std::process::exit(2);
                }
            },
            "all" => parts.extend(PARTS.iter().map(|p| (*p).to_owned())),
            p if PARTS.contains(&p) => parts.push(p.to_owned()),
            other => {
                eprintln!(
                    "unknown argument {other}; usage: bench [--quick] [--runtime spin] [all | {}]...",
                    PARTS.join(" | ")
                );
                std::process::exit(2);
            }
        }
    }
    if parts.is_empty() {
        parts.extend(PARTS.iter().map(|p| (*p).to_owned()));
    }
    let (runtimes, skipped) = runtime::runtimes(spin);
    let config = Config::new(quick, runtimes);
    let mut report = Report::default();
    print_machine(&config, &parts);
    if let Some(skipped) = skipped {
        eprintln!("bench: {skipped}");
        report.add("runtime", "real Spin", skipped);
    }
    let mut failed = false;
    for part in &parts {
        let started = Instant::now();
        eprintln!("bench: {part} ...");
        if let Err(error) = run_part(part, &config, &mut report) {
            eprintln!("bench: {part} failed: {error:#}");
            report.add(part, "FAILED", format!("{error:#}"));
            failed = true;
        }
        eprintln!("bench: {part} took {:.1?}", started.elapsed());
    }
    report.ratios();
    report.print();
    if failed {
        std::process::exit(1);
    }
}

fn print_machine(config: &Config, parts: &[String]) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    println!(
        "bench {}: {} | {cores} cores | Linux {kernel} | load {} | parts: {} | runtimes: {} | data: {}",
        if config.quick { "--quick" } else { "(full)" },
        cpu,
        load_average(),
        parts.join(" "),
        config
            .runtimes
            .iter()
            .map(Runtime::label)
            .collect::<Vec<_>>()
            .join(", "),
        data::data_dir().display()
    );
    println!();
}

fn run_part(part: &str, config: &Config, report: &mut Report) -> Result<()> {
    let catalog = Catalog::default_catalog().map_err(|e| anyhow::anyhow!("catalog: {e}"))?;
    match part {
        "sizes" => sizes(report),
        "fsync" => fsync(config, report),
        "native" => native_ceiling(config, &catalog, report),
        "native-http" => native_http(config, &catalog, report),
        "noop" => noop(config, report),
        "product" => product(config, report),
        "campaign" => campaign(config, report),
        "tenants" => tenants(config, report),
        "mixed" => mixed(config, report),
        "open" => open(config, report),
        "cluster" => cluster::cluster(config, report),
        "batch" => batch(config, &catalog, report),
        "notify" => notify_part(config, report),
        "scale" => scale(config, report),
        "renewal" => renewal(config, report),
        "cold-start" => cold_start(report),
        other => bail!("unknown part {other}"),
    }
}

fn sizes(report: &mut Report) -> Result<()> {
    let sizes = host::component_sizes();
    if sizes.is_empty() {
        bail!("no .wasm under target/wasm32-wasip2/release: run scripts/build-components.sh");
    }
    for (name, bytes) in sizes {
        report.add(
            "sizes",
            name,
            format!("{bytes} bytes ({:.1} MiB)", bytes as f64 / 1_048_576.0),
        );
    }
    Ok(())
}

/// 4 KiB written in place and `fdatasync`ed, as fast as possible, on the data directory's disk.
fn fsync(config: &Config, report: &mut Report) -> Result<()> {
    use std::io::{Seek as _, SeekFrom, Write as _};
    std::fs::create_dir_all(data::data_dir())?;
    let dir = tempfile::tempdir_in(data::data_dir())?;
    let mut file = std::fs::File::create(dir.path().join("fsync.bin"))?;
    file.write_all(&vec![0u8; 1 << 20])?;
    file.sync_all()?;
    let block = vec![7u8; 4096];
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < config.run {
        file.seek(SeekFrom::Start((count % 256) * 4096))?;
        file.write_all(&block)?;
        file.sync_data()?;
        count += 1;
    }
    let per_sec = count as f64 / started.elapsed().as_secs_f64();
    report.fsync_per_sec = Some(per_sec);
    report.add(
        "fsync",
        "4 KiB write + fdatasync, same disk as the data",
        format!("{per_sec:.0} /s ({:.2} ms each)", 1000.0 / per_sec),
    );
    Ok(())
}

fn native_ceiling(config: &Config, catalog: &Catalog, report: &mut Report) -> Result<()> {
    let small = data::cached(config.small)?;
    for op in [Op::Debit, Op::Authorize, Op::CallCycle] {
        for threads in [1, 2] {
            let temp = tempfile::tempdir()?;
            let path = native::fresh_copy(&small, temp.path())?;
            let rate = native::in_process(
                &path,
                catalog,
                op,
                threads,
                config.small.workspaces,
                config.run,
            )?;
            report.in_process.insert((op.name(), threads), rate);
            report.add(
                "native",
                format!(
                    "in-process {}, {threads} thread(s), WAL, synchronous=NORMAL",
                    op.name()
                ),
                format!("{rate:.0} /s"),
            );
        }
    }
    Ok(())
}

fn op_request(op: Op, tag: String, workspaces: u64) -> MakeRequest {
    Arc::new(move |client, seq| {
        let n = ((client as u64) << 40) | seq;
        match op {
            Op::Debit => load::json_request(
                http::Method::POST,
                "/v1/usage",
                Some(host::SERVICE_KEY),
                serde_json::to_string(&native::usage_event(&tag, n, workspaces))
                    .unwrap_or_default(),
            ),
            Op::Authorize => load::json_request(
                http::Method::POST,
                "/v1/calls",
                Some(host::SERVICE_KEY),
                serde_json::to_string(&native::call_request(&tag, n, workspaces))
                    .unwrap_or_default(),
            ),
            // Three requests per call, in order on the client's connection.
            Op::CallCycle => {
                let call =
                    native::call_request(&tag, ((client as u64) << 40) | (seq / 3), workspaces);
                match seq % 3 {
                    0 => load::json_request(
                        http::Method::POST,
                        "/v1/calls",
                        Some(host::SERVICE_KEY),
                        serde_json::to_string(&call).unwrap_or_default(),
                    ),
                    1 => shapes::heartbeat(&call.call_id, 30),
                    _ => shapes::end(&call.call_id, 45),
                }
            }
        }
    })
}

/// Runs both operations at every client count against `addr`.
fn op_sweep(
    config: &Config,
    addr: &str,
    workspaces: u64,
    mut record: impl FnMut(Op, LoadResult),
) -> Result<()> {
    let tag = run_tag();
    for op in [Op::Debit, Op::Authorize] {
        for &clients in &config.clients {
            let make = op_request(op, format!("{tag}-{}-{clients}", op.name()), workspaces);
            record(
                op,
                load::run(addr, clients, config.warmup, config.run, make)?,
            );
        }
    }
    Ok(())
}

fn native_http(config: &Config, catalog: &Catalog, report: &mut Report) -> Result<()> {
    let small = data::cached(config.small)?;
    let temp = tempfile::tempdir()?;
    let path = native::fresh_copy(&small, temp.path())?;
    let server = native::start_server(path, catalog.clone(), host::SERVICE_KEY)?;
    let mut results = Vec::new();
    op_sweep(config, &server.addr, config.small.workspaces, |op, r| {
        results.push((op, r));
    })?;
    drop(server);
    for (op, r) in results {
        report.add_load(
            "native-http",
            &format!("hyper + rusqlite {}", op.name()),
            &r,
        );
        report.native_http.insert((op.name(), r.clients), r);
    }
    Ok(())
}

fn noop(config: &Config, report: &mut Report) -> Result<()> {
    // The no-op touches no SQLite: the local host's two modes are the same there.
    for runtime in config
        .runtimes
        .iter()
        .filter(|r| **r != Runtime::LocalSpinSqlite)
    {
        let temp = tempfile::tempdir()?;
        let app = runtime::start(runtime, &host::noop_manifest(), &temp.path().join("state"))?;
        for &clients in &config.clients {
            let make: MakeRequest = Arc::new(|_, _| load::get_request("/", None));
            let r = load::run(&app.addr, clients, config.warmup, config.run, make)?;
            report.add_load(
                "noop",
                &format!("[{}] GET / on the no-op component", runtime.label()),
                &r,
            );
            report.noop.insert((runtime.key(), clients), r);
        }
    }
    Ok(())
}

fn product(config: &Config, report: &mut Report) -> Result<()> {
    let small = data::cached(config.small)?;
    for runtime in &config.runtimes {
        let app = runtime::start_on_copy(runtime, &small)?;
        let mut results = Vec::new();
        op_sweep(config, &app.addr, config.small.workspaces, |op, r| {
            results.push((op, r));
        })?;
        drop(app);
        for (op, r) in results {
            report.add_load(
                "product",
                &format!("[{}] service-api component {}", runtime.label(), op.name()),
                &r,
            );
            report
                .product
                .insert((runtime.key(), op.name(), r.clients), r);
        }
    }
    Ok(())
}

/// Client counts of the new load shapes: 1, 16 and 64 (16 alone with `--quick`).
fn shape_clients(config: &Config) -> Vec<usize> {
    if config.quick {
        vec![16]
    } else {
        vec![1, 16, 64]
    }
}

fn campaign(config: &Config, report: &mut Report) -> Result<()> {
    let small = data::cached(config.small)?;
    let clients = shape_clients(config);
    for runtime in &config.runtimes {
        let label = runtime.label();
        let c = shapes::campaign(runtime, &small, &clients, config.warmup, config.run)?;
        for ((in_progress, _), r) in &c.debits {
            let what = format!("[{label}] debit, {in_progress} calls in progress on the agent");
            report.add_load("campaign", &what, r);
        }
        for ((in_progress, clients), r) in &c.cycles {
            report.add(
                "campaign",
                format!("[{label}] authorize -> heartbeat -> end, {in_progress} calls in progress on the agent, {clients} clients"),
                cycle_figures(r, 3),
            );
        }
        for (clients, r) in &c.short_cycles {
            report.add(
                "campaign",
                format!("[{label}] authorize -> end, no call in progress, {clients} clients"),
                cycle_figures(r, 2),
            );
        }
        report.campaign.insert(runtime.key(), c);
    }
    Ok(())
}

/// Cycles per second and each step's latency.
fn cycle_figures(r: &LoadResult, steps: u32) -> String {
    let steps_text = r
        .by_kind
        .iter()
        .map(|(kind, k)| format!("{kind} p50 {} p99 {}", ms(k.p50), ms(k.p99)))
        .collect::<Vec<_>>()
        .join(", ");
    let errors = if r.errors == 0 {
        String::new()
    } else {
        format!(
            ", {} errors (first: {})",
            r.errors,
            r.first_error.as_deref().unwrap_or("?")
        )
    };
    format!(
        "{:.0} cycles/s ({:.0} req/s); {steps_text}{errors}",
        r.rps() / f64::from(steps),
        r.rps()
    )
}

fn tenants(config: &Config, report: &mut Report) -> Result<()> {
    let set = shapes::tenants_set()?;
    for runtime in &config.runtimes {
        for r in shapes::tenants(runtime, &set, &[16, 64], config.warmup, config.run)? {
            report.add_load(
                "tenants",
                &format!(
                    "[{}] debit over 10,000 workspaces, skewed (a quarter of requests on the 10 hottest)",
                    runtime.label()
                ),
                &r,
            );
        }
    }
    Ok(())
}

fn mixed(config: &Config, report: &mut Report) -> Result<()> {
    let set = shapes::tenants_set()?;
    for runtime in &config.runtimes {
        for r in shapes::mixed(runtime, &set, &[16, 64], config.warmup, config.run)? {
            let kinds = r
                .by_kind
                .iter()
                .map(|(kind, k)| format!("{kind} {:.0}/s p99 {}", k.ok as f64 / r.secs, ms(k.p99)))
                .collect::<Vec<_>>()
                .join(", ");
            report.add_load(
                "mixed",
                &format!(
                    "[{}] 70% debits, 20% heartbeats, 10% authorize/end over 10,000 workspaces",
                    runtime.label()
                ),
                &r,
            );
            report.add(
                "mixed",
                format!("[{}] by kind, {} clients", runtime.label(), r.clients),
                kinds,
            );
        }
    }
    Ok(())
}

/// The open loop's workspaces: the first 200 of the 1,000-workspace set.
const OPEN_WORKSPACES: u64 = 200;
/// Offered rates (requests/s) of the open loop, unless `$BENCH_OPEN_RATES` says otherwise.
const OPEN_RATES: &[f64] = &[50.0, 100.0, 250.0, 500.0, 1_000.0];
/// The same with `--quick`.
const OPEN_RATES_QUICK: &[f64] = &[100.0, 250.0, 500.0];
/// Requests one shape may schedule on one runtime (warm-ups included): at 0.02 credits, a call's
/// first minute and the dearest request here, 200,000 take 4,000 of a workspace's ~10,000
/// credits, so that a run never starts refusing for want of funds.
const OPEN_REQUESTS_PER_SHAPE_MAX: f64 = 200_000.0;
/// The mixed shape deals its schedule to virtual clients of 100 requests/s each: a client's
/// block of 20 requests spans 0.2 s, its calls live 8 blocks (1.6 s), and a call's first
/// heartbeat is due 0.16 s after its authorization (the maker's order, which an answer slower
/// than that would break: a heartbeat of a call not yet authorized counts as an error).
const OPEN_MIXED_CLIENT_PER_SEC: f64 = 100.0;

/// The open loop's rates, window and warm-up.
struct OpenSchedule {
    rates: Vec<f64>,
    window: Duration,
    warmup: Duration,
}

/// `--quick`: 100, 250 and 500/s for 3 s each; full: 50 to 1,000/s for 15 s each; 1 s and 2 s
/// of warm-up. `$BENCH_OPEN_RATES` (`50,100`) and `$BENCH_OPEN_SECS` (`15`) override them.
fn open_schedule(config: &Config) -> Result<OpenSchedule> {
    let rates = match open_rates_from_env()? {
        Some(rates) => rates,
        None if config.quick => OPEN_RATES_QUICK.to_vec(),
        None => OPEN_RATES.to_vec(),
    };
    let window_secs = match std::env::var("BENCH_OPEN_SECS") {
        Ok(secs) => match secs.trim().parse::<u64>() {
            Ok(s) if (1..=3_600).contains(&s) => s,
            _ => bail!("BENCH_OPEN_SECS: {secs:?} is not 1..=3600 seconds"),
        },
        Err(_) if config.quick => 3,
        Err(_) => 15,
    };
    let schedule = OpenSchedule {
        rates,
        window: Duration::from_secs(window_secs),
        warmup: Duration::from_secs(if config.quick { 1 } else { 2 }),
    };
    let per_rate_secs = (schedule.window + schedule.warmup).as_secs_f64();
    let requests: f64 = schedule.rates.iter().map(|r| r * per_rate_secs).sum();
    if requests > OPEN_REQUESTS_PER_SHAPE_MAX {
        bail!(
            "the open loop's rates and window schedule {requests:.0} requests per shape, more than {OPEN_REQUESTS_PER_SHAPE_MAX:.0} (one workspace's credits)"
        );
    }
    Ok(schedule)
}

/// `$BENCH_OPEN_RATES` (`50,100`): the offered rates an experiment asks for, if any.
pub(crate) fn open_rates_from_env() -> Result<Option<Vec<f64>>> {
    let Ok(list) = std::env::var("BENCH_OPEN_RATES") else {
        return Ok(None);
    };
    list.split(',')
        .map(|rate| match rate.trim().parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
            _ => bail!("BENCH_OPEN_RATES: {rate:?} is not a rate per second"),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A shape of the open loop: its name, its requests (given a unique tag), and its virtual
/// clients at a rate.
struct OpenShape {
    name: &'static str,
    make: fn(String) -> MakeRequest,
    clients: fn(f64) -> usize,
    /// What the shape needs done on its copy of the data set first.
    setup: Option<fn(&str) -> Result<()>>,
}

fn open_shapes() -> [OpenShape; 7] {
    let one = |_| 1;
    [
        OpenShape {
            name: "debits over 200 workspaces",
            make: |tag| op_request(Op::Debit, tag, OPEN_WORKSPACES),
            clients: one,
            setup: None,
        },
        // Issue 25's pair: a debit paid by the wallet after the plan, and the same paid by one of
        // three grants the debit reads (plan credits pay first, so both spend the plan first).
        OpenShape {
            name: "grants pair: debits over 200 workspaces, plan spent",
            make: |tag| op_request(Op::Debit, tag, OPEN_WORKSPACES),
            clients: one,
            setup: Some(|addr| shapes::spend_plans(addr, OPEN_WORKSPACES)),
        },
        OpenShape {
            name: "grants pair: debits over 200 workspaces, plan spent, 3 grants",
            make: |tag| op_request(Op::Debit, tag, OPEN_WORKSPACES),
            clients: one,
            setup: Some(|addr| shapes::three_grants(addr, OPEN_WORKSPACES)),
        },
        OpenShape {
            name: "debits, one workspace",
            make: |tag| op_request(Op::Debit, tag, 1),
            clients: one,
            setup: None,
        },
        // Calls left in progress (holds made to outlive the run), spread over 64 agents with no
        // limits: nothing refuses them but funds, which OPEN_REQUESTS_PER_SHAPE_MAX keeps ample.
        OpenShape {
            name: "authorizations over 200 workspaces",
            make: |tag| op_request(Op::Authorize, tag, OPEN_WORKSPACES),
            clients: one,
            setup: None,
        },
        OpenShape {
            name: "authorizations, one workspace",
            make: |tag| op_request(Op::Authorize, tag, 1),
            clients: one,
            setup: None,
        },
        OpenShape {
            name: "mixed over 200 workspaces",
            make: |tag| {
                shapes::mixed_requests(tag, Arc::new(|seed| load::mix(seed) % OPEN_WORKSPACES))
            },
            clients: |rate| (rate / OPEN_MIXED_CLIENT_PER_SEC).ceil().max(1.0) as usize,
            setup: None,
        },
    ]
}

/// Whether a `$BENCH_OPEN_SHAPES` word keeps shape `name`: a word keeps the shapes whose name
/// contains it; a word starting with `=` keeps only the shape named exactly the rest.
fn shape_matches(name: &str, word: &str) -> bool {
    match word.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(word),
    }
}

/// Each shape at each offered rate, on every runtime, over a fresh copy of the 1,000-workspace
/// set per shape and runtime; a shape's higher rates are skipped on a runtime once a rate
/// saturated it.
fn open(config: &Config, report: &mut Report) -> Result<()> {
    let schedule = open_schedule(config)?;
    let small = data::cached(config.small)?;
    // `$BENCH_OPEN_SHAPES` (`debits over,one workspace`) keeps the shapes whose name contains
    // one of its words (`=name`: exactly that name), for a focused experiment.
    let only = std::env::var("BENCH_OPEN_SHAPES").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|list| list.split(',').any(|word| shape_matches(name, word.trim())))
    };
    for shape in open_shapes().into_iter().filter(|shape| wanted(shape.name)) {
        for runtime in &config.runtimes {
            let label = runtime.label();
            let app = runtime::start_on_copy(runtime, &small)?;
            shapes::long_holds(&app.addr)?;
            if let Some(setup) = shape.setup {
                setup(&app.addr)?;
            }
            let mut saturated_at = None;
            for &rate in &schedule.rates {
                let measure = format!("[{label}] {}, offered {rate:.0}/s", shape.name);
                if let Some(at) = saturated_at {
                    report.add("open", measure, format!("not run: saturated at {at:.0}/s"));
                    continue;
                }
                let spec = load::OpenSpec {
                    rate_per_sec: rate,
                    warmup: schedule.warmup,
                    duration: schedule.window,
                    connections_max: load::OPEN_CONNECTIONS_MAX,
                    clients: (shape.clients)(rate),
                };
                let r = load::run_open(&app.addr, spec, (shape.make)(run_tag()))?;
                report.add("open", measure.clone(), open_figures(&r));
                if r.by_kind.len() > 1 {
                    let kinds = r
                        .by_kind
                        .iter()
                        .map(|(kind, k)| {
                            format!(
                                "{kind} {:.0}/s p50 {} p99 {}",
                                k.ok as f64 / r.secs,
                                ms(k.p50),
                                ms(k.p99)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    report.add("open", format!("{measure}, by kind"), kinds);
                }
                if r.saturation().is_some() {
                    saturated_at = Some(rate);
                }
            }
        }
    }
    Ok(())
}

/// An open-loop row: achieved rate, latencies from the due time, errors, saturation.
fn open_figures(r: &load::OpenResult) -> String {
    let errors = match (r.errors, &r.first_error) {
        (0, _) => "0 errors".to_owned(),
        (n, first) => format!("{n} errors (first: {})", first.as_deref().unwrap_or("?")),
    };
    let saturated = match r.saturation() {
        Some(why) => format!("SATURATED ({why})"),
        None => "not saturated".to_owned(),
    };
    format!(
        "achieved {:.0}/s, p50 {}, p99 {}, p99.9 {}, max {}, {errors}, {saturated}; sent late p99 {}, {} connections",
        r.achieved_per_sec(),
        ms(r.p50),
        ms(r.p99),
        ms(r.p999),
        ms(r.max),
        ms(r.sent_late_p99),
        r.connections_opened
    )
}

/// 1,000 workspaces cross a balance level in one batch; the notifier delivers the 1,000 events
/// while debits run at 16 clients, against the same debits with nothing to deliver.
fn notify_part(config: &Config, report: &mut Report) -> Result<()> {
    let small = data::cached(config.small)?;
    for runtime in &config.runtimes {
        let figures = notify::run(
            runtime,
            &small,
            config.small.workspaces,
            config.warmup,
            config.run,
            &|| op_request(Op::Debit, run_tag(), config.small.workspaces),
        )?;
        let label = runtime.label();
        report.add(
            "notify",
            format!(
                "[{label}] {} events after 1,000 workspaces crossed a level in one batch, delivered",
                figures.events
            ),
            format!(
                "{:.0} events/s ({} in {} passes)",
                figures.events as f64 / figures.delivery.as_secs_f64(),
                ms(figures.delivery),
                figures.passes
            ),
        );
        report.add_load(
            "notify",
            &format!("[{label}] debit, nothing to deliver"),
            &figures.quiet,
        );
        report.add_load(
            "notify",
            &format!("[{label}] debit, while the events are delivered"),
            &figures.delivering,
        );
        report.add(
            "ratio",
            format!("[{label}] debit p99 while delivering / with nothing to deliver, 16 clients"),
            format!(
                "{:.2}",
                figures.delivering.p99.as_secs_f64() / figures.quiet.p99.as_secs_f64()
            ),
        );
    }
    Ok(())
}

/// A batch of 1,000 events over `workspaces` (spread), or of one workspace when `workspaces` is 1
/// (a busy tenant's minute).
fn batch_body(tag: &str, first: u64, workspaces: u64) -> String {
    let events: Vec<_> = (0..ledger::usage::BATCH_EVENTS_MAX as u64)
        .map(|k| native::usage_event(tag, first + k, workspaces))
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

fn batch(config: &Config, catalog: &Catalog, report: &mut Report) -> Result<()> {
    let small = data::cached(config.small)?;
    let events = ledger::usage::BATCH_EVENTS_MAX;
    // In-process at synchronous=FULL: every commit is durable (one WAL fsync per commit).
    for (synchronous, size) in [("FULL", 1), ("FULL", events), ("NORMAL", events)] {
        let temp = tempfile::tempdir()?;
        let path = native::fresh_copy(&small, temp.path())?;
        let rate = native::batch_in_process(
            &path,
            catalog,
            synchronous,
            size,
            config.small.workspaces,
            config.run,
        )?;
        if synchronous == "FULL" && size == events {
            report.batch_full_per_sec = Some(rate);
        }
        if synchronous == "FULL" && size == 1 {
            report.single_full_per_sec = Some(rate);
        }
        report.add(
            "batch",
            format!("in-process record_batch of {size}, synchronous={synchronous}"),
            format!("{rate:.0} debits/s"),
        );
    }
    // Through the product (the components' synchronous=NORMAL), on every runtime: events spread
    // over the 1,000 workspaces, then every event of one workspace.
    for runtime in &config.runtimes {
        let app = runtime::start_on_copy(runtime, &small)?;
        for (spread, workspaces) in [
            ("1,000 workspaces", config.small.workspaces),
            ("one workspace", 1),
        ] {
            let rate = batch_http(config, &app.addr, workspaces)?;
            report.add(
                "batch",
                format!(
                    "[{}] POST /v1/usage/batch ({events} events of {spread}), 1 client",
                    runtime.label()
                ),
                format!("{:.0} events/s (slowest request {})", rate.0, ms(rate.1)),
            );
            if workspaces == 1 {
                report.batch_one_workspace.insert(runtime.key(), rate.0);
            }
        }
    }
    Ok(())
}

/// Events/s of 1,000-event batches through `POST /v1/usage/batch`, and the slowest request.
fn batch_http(config: &Config, addr: &str, workspaces: u64) -> Result<(f64, Duration)> {
    let events = ledger::usage::BATCH_EVENTS_MAX as u64;
    let tag = run_tag();
    let send = |first: u64, tag: &str| {
        host::send_once(
            addr,
            load::json_request(
                http::Method::POST,
                "/v1/usage/batch",
                Some(host::SERVICE_KEY),
                batch_body(tag, first, workspaces),
            ),
        )
    };
    let (status, body) = send(0, &format!("{tag}-check"))?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 || text.contains("\"status\":\"error\"") {
        bail!("batch check: {status} {}", &text[..text.len().min(400)]);
    }
    // A batch takes a while: time whole requests, one client.
    let batches = if config.quick { 3 } else { 10 };
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for n in 0..batches {
        let sent = Instant::now();
        let (status, body) = send((n + 1) * events, &tag)?;
        if status != 200 {
            bail!("batch {n}: {status} {}", String::from_utf8_lossy(&body));
        }
        slowest = slowest.max(sent.elapsed());
    }
    let rate = (batches * events) as f64 / started.elapsed().as_secs_f64();
    Ok((rate, slowest))
}

/// Debit latency (1 client) and throughput (16 clients), then summary and history pages, on the
/// 1,000-workspace set and on the large one.
fn scale(config: &Config, report: &mut Report) -> Result<()> {
    let large = data::cached(config.large)?;
    let small = data::cached(config.small)?;
    // Measure the database, not the page cache: a large set evicted by other work on the machine
    // (builds, tests) made the first debits read from disk (3x slower p50 in one run).
    data::warm_page_cache(&data::db_file(&large))?;
    let temp = tempfile::tempdir()?;
    let small_state = temp.path().join("state");
    data::copy_into(&small, &small_state)?;
    for (label, spec, state) in [
        ("small", config.small, small_state.as_path()),
        // The large set is used in place: a run adds a few thousand rows to millions.
        ("large", config.large, large.as_path()),
    ] {
        let what = format!(
            "{} workspaces, {} journal rows",
            spec.workspaces,
            spec.workspaces * (2 + 2 * spec.debits_per_workspace)
        );
        scale_one(config, report, label, spec.workspaces, state, &what)?;
    }
    Ok(())
}

fn scale_one(
    config: &Config,
    report: &mut Report,
    label: &'static str,
    workspaces: u64,
    state: &Path,
    what: &str,
) -> Result<()> {
    let host = host::start(&host::app_manifest(), state, &[])?;
    let addr = host::addr(&host);
    let tag = format!("{}-scale-{label}", run_tag());
    for clients in [1, 16] {
        let make = op_request(Op::Debit, format!("{tag}-{clients}"), workspaces);
        let r = load::run(&addr, clients, config.warmup, config.run, make)?;
        if clients == 1 {
            report.scale_p50.insert(label, r.p50);
            report.scale_p99.insert(label, r.p99);
        }
        report.add_load("scale", &format!("debit at {what}"), &r);
    }
    let exp = data::now_secs() + 3600;
    for (page, path) in [
        ("billing summary", "billing"),
        ("transactions page (limit 50)", "transactions?limit=50"),
    ] {
        let make: MakeRequest = Arc::new(move |_, seq| {
            let ws = data::workspace_id(load::mix(seq ^ 0x5eed) % workspaces);
            let token =
                local_run::credentials::token(&ws, local_run::credentials::Role::Owner, exp);
            load::get_request(&format!("/v1/workspaces/{ws}/{path}"), Some(&token))
        });
        let r = load::run(&addr, 1, config.warmup, config.run, make)?;
        report.add_load("scale", &format!("{page} at {what}"), &r);
    }
    Ok(())
}

/// The cycle-renewal job's HTTP twin over every due workspace, then once more (nothing to do).
fn renewal(config: &Config, report: &mut Report) -> Result<()> {
    let app = runtime::start_on_copy(&Runtime::Local, &data::cached(config.renewal)?)?;
    let addr = &app.addr;
    let pass = || -> Result<serde_json::Value> {
        let (status, body) = host::send_once(
            addr,
            load::json_request(
                http::Method::POST,
                "/internal/jobs/renew-cycles",
                Some(host::SERVICE_KEY),
                String::new(),
            ),
        )?;
        if status != 200 {
            bail!("renew-cycles: {status} {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).context("renew-cycles answer")
    };
    let started = Instant::now();
    let (mut renewed, mut passes) = (0u64, 0u64);
    // Bounded: each pass renews up to 20,000 workspaces.
    for _ in 0..1_000 {
        let answer = pass()?;
        passes += 1;
        renewed += answer["workspaces_renewed"].as_u64().unwrap_or(0);
        if answer["more"] != serde_json::Value::Bool(true) {
            break;
        }
    }
    let elapsed = started.elapsed();
    report.add(
        "renewal",
        format!(
            "renew {} due workspaces (free plan: expiry + grant)",
            config.renewal.workspaces
        ),
        format!(
            "{renewed} renewed in {:.2} s over {passes} passes ({:.0} workspaces/s)",
            elapsed.as_secs_f64(),
            renewed as f64 / elapsed.as_secs_f64()
        ),
    );
    let again = Instant::now();
    let second = pass()?;
    report.add(
        "renewal",
        "second run (must do nothing)",
        format!(
            "{} renewed, {} cycles advanced, in {}",
            second["workspaces_renewed"],
            second["cycles_advanced"],
            ms(again.elapsed())
        ),
    );
    Ok(())
}

fn cold_start(report: &mut Report) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let cache = temp.path().join("cache");
    let cold = host::cold_start(&temp.path().join("state-1"), &cache)?;
    report.add(
        "cold-start",
        "spawn to first answer, empty compile cache (5 components compiled)",
        ms(cold),
    );
    let warm = host::cold_start(&temp.path().join("state-2"), &cache)?;
    report.add(
        "cold-start",
        "spawn to first answer, warm compile cache, new database",
        ms(warm),
    );
    Ok(())
}
