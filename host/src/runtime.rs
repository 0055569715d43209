//! The wasmtime side: engine, linker, per-store state and the loaded application.

use crate::bindings::spin::variables::variables as wit_vars;
use crate::kv::KvStores;
use crate::manifest::{self, Manifest, Route};
use crate::outbound::OutboundPolicy;
use crate::sqlite::SqliteDatabases;
use crate::variables::AppVariables;
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Accessor, Component, HasData, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{RequestOptions, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Everything one component may touch, fixed at start-up from the manifest.
pub struct ComponentEnv {
    /// The component's name in the manifest.
    pub name: String,
    /// The app's SQLite databases.
    pub sqlite: Arc<SqliteDatabases>,
    /// Labels this component may open.
    pub allowed_sqlite: BTreeSet<String>,
    /// The app's key-value stores.
    pub kv: Arc<KvStores>,
    /// Labels this component may open.
    pub allowed_kv: BTreeSet<String>,
    /// Resolved component variables.
    pub variables: BTreeMap<String, String>,
    /// Outbound allow-list.
    pub outbound: Arc<OutboundPolicy>,
    /// Guest environment variables.
    pub environment: BTreeMap<String, String>,
}

/// Per-store data.
pub struct Ctx {
    /// Resource table shared by WASI and Spin interfaces.
    pub table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    /// What the component may touch.
    pub env: Arc<ComponentEnv>,
}

impl Ctx {
    /// Fresh store data for one instance of the component.
    pub fn new(env: Arc<ComponentEnv>) -> Self {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout().inherit_stderr();
        for (k, v) in &env.environment {
            wasi.env(k, v);
        }
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                policy: env.outbound.clone(),
                component: env.name.clone(),
            },
            env,
        }
    }

    /// The p3 `wasi:http` view, as a plain fn pointer for wasmtime-wasi-http's handler.
    pub fn http_view(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpView::http(self)
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// WASIp2 `wasi:http` (older components): same context, same outbound policy.
impl wasmtime_wasi_http::p2::WasiHttpView for Ctx {
    fn http(&mut self) -> wasmtime_wasi_http::p2::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::p2::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl Ctx {
    /// The p2 `wasi:http` view, as a plain fn pointer for wasmtime-wasi-http's handler.
    pub fn p2_http_view(&mut self) -> wasmtime_wasi_http::p2::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::p2::WasiHttpView::http(self)
    }
}

impl HasData for Ctx {
    type Data<'a> = &'a mut Ctx;
}

/// Enforces `allowed_outbound_hosts` on every outgoing `wasi:http` request.
struct OutboundHooks {
    policy: Arc<OutboundPolicy>,
    component: String,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<UnsyncBoxBody<Bytes, ErrorCode>>,
                    Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
                ),
                wasmtime_wasi::TrappableError<ErrorCode>,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<UnsyncBoxBody<Bytes, ErrorCode>>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
    ) -> SendFuture {
        drop(fut);
        if !self.policy.allows_uri(request.uri()) {
            eprintln!(
                "component `{}`: outbound request to {} denied (not in allowed_outbound_hosts)",
                self.component,
                request.uri()
            );
            return Box::new(async { Err(ErrorCode::HttpRequestDenied.into()) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::p3::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl wasmtime_wasi_http::p2::WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        config: wasmtime_wasi_http::p2::types::OutgoingRequestConfig,
    ) -> wasmtime_wasi_http::p2::HttpResult<wasmtime_wasi_http::p2::types::HostFutureIncomingResponse>
    {
        if !self.policy.allows_uri(request.uri()) {
            eprintln!(
                "component `{}`: outbound request to {} denied (not in allowed_outbound_hosts)",
                self.component,
                request.uri()
            );
            return Err(
                wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::HttpRequestDenied.into(),
            );
        }
        Ok(wasmtime_wasi_http::p2::default_send_request(
            request, config,
        ))
    }
}

impl wit_vars::Host for Ctx {}

impl<T: Send> wit_vars::HostWithStore<T> for Ctx {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, wit_vars::Error>> {
        if manifest::check_variable_name(&name).is_err() {
            return Ok(Err(wit_vars::Error::InvalidName(name)));
        }
        Ok(
            accessor.with(|mut access| match access.get().env.variables.get(&name) {
                Some(v) => Ok(v.clone()),
                None => Err(wit_vars::Error::Undefined(format!(
                    "no variable for component: {name}"
                ))),
            }),
        )
    }
}

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

/// A compiled, pre-linked component and what it may touch.
pub struct LoadedComponent {
    /// Pre-instantiated component.
    pub pre: InstancePre<Ctx>,
    /// Its environment.
    pub env: Arc<ComponentEnv>,
}

/// One HTTP route of the application.
pub struct HttpRoute {
    /// Route as written in the manifest.
    pub route: String,
    /// Component serving it.
    pub component: String,
}

/// One cron schedule of the application.
pub struct CronSchedule {
    /// Component to run.
    pub component: String,
    /// The parsed expression.
    pub cron: croner::Cron,
    /// The expression as written.
    pub expression: String,
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
    crate::bindings::SpinImports::add_to_linker::<Ctx, Ctx>(&mut linker, |c| c)?;
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
        opts.sqlite_mode,
    ));
    let kv = Arc::new(KvStores::new(opts.state_dir.to_path_buf(), &kv_labels));

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
        let env = component_env(&name, def, &vars, &sqlite, &kv)
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
        sqlite: sqlite.clone(),
        allowed_sqlite: def.sqlite_databases.iter().cloned().collect(),
        kv: kv.clone(),
        allowed_kv: def.key_value_stores.iter().cloned().collect(),
        variables,
        outbound: Arc::new(OutboundPolicy::new(&outbound)?),
        environment: def.environment.clone(),
    })
}

/// A new store for one instance of `comp`.
pub fn new_store(engine: &Engine, comp: &LoadedComponent) -> Store<Ctx> {
    Store::new(engine, Ctx::new(comp.env.clone()))
}
