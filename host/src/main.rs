//! `local-host`: a Spin-compatible local host. Reads a Spin manifest (`spin.toml`, version 2)
//! and serves the same .wasm components Spin 4.1 would, with wasmtime.

mod cron;
mod ctx;
mod kv;
mod manifest;
mod outbound;
mod router;
mod runtime;
mod runtime_config;
mod server;
mod sqlite;
mod stdio;
mod variables;

/// Host bindings for the Spin interfaces (generated from `host/wit`).
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "local-host:host/spin-imports",
        imports: { default: trappable },
        with: {
            "spin:sqlite/sqlite.connection": crate::sqlite::Connection,
            "spin:key-value/key-value.store": crate::kv::Store,
        },
        require_store_data_send: true,
    });
}

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Command line.
#[derive(Parser)]
#[command(
    name = "local-host",
    version,
    about = "Serve a Spin app locally with wasmtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the app's HTTP routes and run its cron schedules.
    Up(UpArgs),
    /// Cron triggers.
    Cron {
        #[command(subcommand)]
        command: CronCommand,
    },
}

#[derive(Subcommand)]
enum CronCommand {
    /// Run one component's cron handler once and exit (non-zero if it returns an error).
    Fire(FireArgs),
}

/// Options shared by every command that loads the app.
#[derive(Args)]
struct AppArgs {
    /// Path to the Spin manifest; component paths are relative to its directory.
    #[arg(long, default_value = "spin.toml")]
    manifest: PathBuf,
    /// Directory holding SQLite databases and key-value stores.
    #[arg(long, default_value = ".spin-state")]
    state_dir: PathBuf,
    /// Directory for compiled components (default: STATE_DIR/cache).
    #[arg(long, env = "LOCAL_HOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// How SQLite runs: `local` (this host's: writers take turns, background checkpoints) or
    /// `spin` (as Spin 4.1: a blocking thread per statement, SQLite's busy handler).
    #[arg(long, value_enum, default_value_t = sqlite::SqliteMode::Local)]
    sqlite_mode: sqlite::SqliteMode,
    /// Spin's runtime-config file: `[sqlite_database.LABEL]` (`spin`, `libsql`) and
    /// `[key_value_store.LABEL]` (`spin`, `redis`); other labels keep their STATE_DIR files.
    #[arg(long)]
    runtime_config_file: Option<PathBuf>,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Requests one instance serves before it is retired (1 = fresh instance per request).
    #[arg(long, default_value_t = 128)]
    max_instance_reuse_count: usize,
    /// Requests one instance serves concurrently.
    #[arg(long, default_value_t = 16)]
    max_instance_concurrent_reuse_count: usize,
    /// Idle time after which an instance is dropped, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    idle_instance_timeout_ms: u64,
    /// Time a client has to send a whole request (headers and body), in milliseconds; a slower
    /// client is cut off (0 disables). Bounds what slow or stalled clients can hold.
    #[arg(long, default_value_t = 30_000)]
    request_read_timeout_ms: u64,
    /// Do not run cron schedules.
    #[arg(long)]
    no_cron: bool,
}

#[derive(Args)]
struct FireArgs {
    #[command(flatten)]
    app: AppArgs,
    /// The component whose cron export to run.
    #[arg(long)]
    component: String,
}

impl AppArgs {
    fn load(&self, only: Option<&str>) -> Result<runtime::App> {
        // wasmtime's compile cache wants an absolute directory; relative paths are the user's
        // (`scripts/up.sh` passes `--state-dir .spin-state`), so resolve them here once.
        let absolute = |path: &std::path::Path| {
            std::path::absolute(path)
                .with_context(|| format!("cannot resolve the path {}", path.display()))
        };
        let state_dir = absolute(&self.state_dir)?;
        let cache_dir = match &self.cache_dir {
            Some(dir) => absolute(dir)?,
            None => state_dir.join("cache"),
        };
        runtime::load(&runtime::LoadOptions {
            manifest_path: &self.manifest,
            state_dir: &state_dir,
            cache_dir: &cache_dir,
            only,
            sqlite_mode: self.sqlite_mode,
            runtime_config: self.runtime_config_file.as_deref(),
        })
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Cron {
            command: CronCommand::Fire(args),
        } => {
            let app = args.app.load(Some(&args.component))?;
            match runtime::fire_cron(&app, &args.component, cron::timestamp_now()).await? {
                Ok(()) => {
                    println!("cron handler of `{}` succeeded", args.component);
                    Ok(())
                }
                Err(msg) => bail!(
                    "cron handler of `{}` returned an error: {msg}",
                    args.component
                ),
            }
        }
    }
}

async fn up(args: UpArgs) -> Result<()> {
    if args.max_instance_reuse_count == 0 || args.max_instance_concurrent_reuse_count == 0 {
        bail!("instance reuse counts must be at least 1");
    }
    let reuse = runtime::ReuseConfig {
        max_requests: args.max_instance_reuse_count,
        max_concurrent: args.max_instance_concurrent_reuse_count,
        idle_timeout: Duration::from_millis(args.idle_instance_timeout_ms),
    };
    let app = Arc::new(args.app.load(None).context("cannot load the application")?);
    let cron_task = if args.no_cron || app.crons.is_empty() {
        None
    } else {
        for c in &app.crons {
            println!("  cron {:?} -> {}", c.expression, c.component);
        }
        Some(tokio::spawn(runtime::run_cron_schedules(app.clone())))
    };
    let read_timeout = (args.request_read_timeout_ms > 0)
        .then(|| Duration::from_millis(args.request_read_timeout_ms));
    let result = server::serve(
        &app,
        args.listen,
        reuse,
        read_timeout,
        server::shutdown_signal(),
    )
    .await;
    if let Some(task) = cron_task {
        task.abort();
    }
    result
}
