//! The wasmtime side: engine, linker, and the loaded application (its components, routes and
//! cron schedules).

use crate::cron::CronSchedule;
use crate::ctx::{ComponentEnv, Ctx, LoadedComponent};
use crate::kv::{KvAccess, KvHost, KvStores};
use crate::manifest::{self, Manifest, Route};
use crate::outbound::OutboundPolicy;
use crate::sqlite::{SqliteAccess, SqliteDatabases, SqliteHost};
use crate::stdio::{ComponentLog, Stdio};
use crate::variables::AppVariables;
use anyhow::{Context as _, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Instance reuse limits (Spin 4.1 defaults: 128 requests, 16 concurrent, 1 s idle).
#[derive(Debug, Clone, Copy)]
pub struct ReuseConfig {
    /// Requests one instance serves before it is retired (1 = fresh instance per request).
    pub max_requests: usize,
    /// Requests one instance serves at the same time.
    pub max_concurrent: usize,
    /// Idle time after which an instance is dropped.
    pub idle_timeout: std::time::Duration,
}

/// One HTTP route of the application.
pub struct HttpRoute {
    /// Route as written in the manifest.
    pub route: String,
    /// Component serving it.
    pub component: String,
}

/// The loaded application.
pub struct App {
    /// Shared engine.
    pub engine: Engine,
    /// Components by name (only those some trigger uses).
    pub components: BTreeMap<String, LoadedComponent>,
    /// HTTP routes (private routes excluded).
    pub http_routes: Vec<HttpRoute>,
    /// Cron schedules.
    pub crons: Vec<CronSchedule>,
}

/// Builds the engine: component-model async, pooling allocator, on-disk compile cache.
pub fn engine(cache_dir: &Path) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(1000)
        .total_core_instances(1000)
        .total_memories(1000)
        .total_tables(1000)
        .max_memory_size(256 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create cache dir {}", cache_dir.display()))?;
    let mut cache = wasmtime::CacheConfig::new();
    cache.with_directory(cache_dir);
    config.cache(Some(wasmtime::Cache::new(cache)?));
    Ok(Engine::new(&config)?)
}

fn linker(engine: &Engine) -> Result<Linker<Ctx>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::bindings::spin::sqlite::sqlite::add_to_linker::<Ctx, SqliteHost>(
        &mut linker,
        Ctx::sqlite,
    )?;
    crate::bindings::spin::key_value::key_value::add_to_linker::<Ctx, KvHost>(
        &mut linker,
        Ctx::kv,
    )?;
    crate::bindings::spin::variables::variables::add_to_linker::<Ctx, Ctx>(&mut linker, |c| c)?;
    // The cron world's type-only interface, under both names the plugin has used.
    for name in [
        "fermyon:spin-cron/cron-types@2.0.0",
        "spin:cron/cron-types@3.0.0",
    ] {
        linker.instance(name)?;
    }
    Ok(linker)
}

/// Options for loading an application.
pub struct LoadOptions<'a> {
    /// Path to spin.toml.
    pub manifest_path: &'a Path,
    /// State directory (databases, stores).
    pub state_dir: &'a Path,
    /// Compile cache directory.
    pub cache_dir: &'a Path,
    /// Only load these components (None = all that a trigger uses).
    pub only: Option<&'a str>,
    /// How SQLite runs.
    pub sqlite_mode: crate::sqlite::SqliteMode,
    /// Spin's runtime-config file (`--runtime-config-file`): where databases and stores live.
    pub runtime_config: Option<&'a Path>,
}

/// Reads the manifest, resolves variables, compiles and pre-links every triggered component.
pub fn load(opts: &LoadOptions<'_>) -> Result<App> {
    let manifest: Manifest = manifest::load(opts.manifest_path)?;
    let manifest_dir = opts
        .manifest_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let vars = AppVariables::resolve(&manifest.variables, |n| std::env::var(n).ok())?;
    let runtime_config = match opts.runtime_config {
        Some(path) => {
            let cwd = std::env::current_dir().context("cannot read the working directory")?;
            crate::runtime_config::load(path, &cwd)?
        }
        None => crate::runtime_config::RuntimeConfig::default(),
    };

    std::fs::create_dir_all(opts.state_dir)
        .with_context(|| format!("cannot create state dir {}", opts.state_dir.display()))?;
    let sqlite_labels: BTreeSet<String> = manifest
        .component
        .values()
        .flat_map(|c| c.sqlite_databases.iter().cloned())
        .collect();
    let kv_labels: BTreeSet<String> = manifest
        .component
        .values()
        .flat_map(|c| c.key_value_stores.iter().cloned())
        .collect();
    let sqlite = Arc::new(SqliteDatabases::new(
        opts.state_dir.to_path_buf(),
        &sqlite_labels,
        &runtime_config.sqlite,
        opts.sqlite_mode,
    ));
    let kv = Arc::new(KvStores::new(
        opts.state_dir.to_path_buf(),
        &kv_labels,
        &runtime_config.kv,
    )?);

    let mut http_routes = Vec::new();
    let mut used = BTreeSet::new();
    for t in &manifest.trigger.http {
        if let Route::Path(route) = &t.route {
            http_routes.push(HttpRoute {
                route: route.clone(),
                component: t.component.clone(),
            });
        }
        used.insert(t.component.clone());
    }
    let mut crons = Vec::new();
    for t in &manifest.trigger.cron {
        crons.push(CronSchedule {
            component: t.component.clone(),
            cron: crate::cron::parse(&t.cron_expression)
                .with_context(|| format!("[[trigger.cron]] for `{}`", t.component))?,
            expression: t.cron_expression.clone(),
        });
        used.insert(t.component.clone());
    }
    if let Some(only) = opts.only {
        if !manifest.component.contains_key(only) {
            bail!("no component `{only}` in the manifest");
        }
        used = BTreeSet::from([only.to_owned()]);
    }

    let engine = engine(opts.cache_dir)?;
    let linker = linker(&engine)?;
    let mut components = BTreeMap::new();
    for name in used {
        let def = manifest
            .component
            .get(&name)
            .with_context(|| format!("no component `{name}`"))?;
        let env = component_env(
            &name,
            def,
            &vars,
            &sqlite,
            &kv,
            &opts.state_dir.join("logs"),
        )
        .with_context(|| format!("component `{name}`"))?;
        let path = manifest::source_path(&manifest_dir, def)?;
        let bytes = std::fs::read(&path)
            .with_context(|| format!("component `{name}`: cannot read {}", path.display()))?;
        let component = Component::new(&engine, &bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("component `{name}`: cannot compile {}", path.display()))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("component `{name}`: imports not satisfied"))?;
        components.insert(
            name,
            LoadedComponent {
                pre,
                env: Arc::new(env),
            },
        );
    }
    Ok(App {
        engine,
        components,
        http_routes,
        crons,
    })
}

fn component_env(
    name: &str,
    def: &manifest::ComponentDef,
    vars: &AppVariables,
    sqlite: &Arc<SqliteDatabases>,
    kv: &Arc<KvStores>,
    log_dir: &Path,
) -> Result<ComponentEnv> {
    let variables = def
        .variables
        .iter()
        .map(|(k, template)| Ok((k.clone(), vars.expand(template)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let outbound = def
        .allowed_outbound_hosts
        .iter()
        .map(|h| vars.expand(h))
        .collect::<Result<Vec<_>>>()?;
    Ok(ComponentEnv {
        name: name.to_owned(),
        sqlite: SqliteAccess::new(
            sqlite.clone(),
            def.sqlite_databases.iter().cloned().collect(),
        ),
        kv: KvAccess::new(kv.clone(), def.key_value_stores.iter().cloned().collect()),
        variables,
        outbound: Arc::new(OutboundPolicy::new(&outbound)?),
        environment: def.environment.clone(),
        stdout: ComponentLog::open(log_dir, name, Stdio::Stdout)?,
        stderr: ComponentLog::open(log_dir, name, Stdio::Stderr)?,
    })
}

/// Runs `component`'s cron export once in a fresh instance. `Ok(Err(msg))` is the guest's error.
pub async fn fire_cron(
    app: &App,
    component: &str,
    timestamp_secs: u64,
) -> Result<std::result::Result<(), String>> {
    let comp = app
        .components
        .get(component)
        .with_context(|| format!("component `{component}` not loaded"))?;
    crate::cron::fire(&app.engine, comp, timestamp_secs).await
}

/// Runs every cron schedule of `app` until the task is dropped. Each event runs in a fresh
/// instance; events of one schedule never overlap (a late event is skipped, not queued).
pub async fn run_cron_schedules(app: Arc<App>) {
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..app.crons.len() {
        let app = app.clone();
        tasks.spawn(async move {
            let Some(schedule) = app.crons.get(index) else {
                return;
            };
            let Some(comp) = app.components.get(&schedule.component) else {
                eprintln!("cron `{}`: component not loaded", schedule.component);
                return;
            };
            crate::cron::run_schedule(&app.engine, comp, schedule).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}
