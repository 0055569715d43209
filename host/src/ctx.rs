//! What one instance of a component runs with: its environment (what it may touch) and its
//! store data ([`Ctx`]), which the WASI, `wasi:http` and Spin interfaces are implemented on.
//!
//! The Spin interfaces live in their own modules (`sqlite.rs`, `kv.rs`) and know nothing of
//! [`Ctx`]: it hands each a view of what it needs ([`Ctx::sqlite`], [`Ctx::kv`]).

use crate::bindings::spin::variables::variables as wit_vars;
use crate::kv::{KvAccess, KvView};
use crate::manifest;
use crate::outbound::OutboundPolicy;
use crate::sqlite::{SqliteAccess, SqliteView};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{Accessor, HasData, InstancePre, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{RequestOptions, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Everything one component may touch, fixed at start-up from the manifest.
pub struct ComponentEnv {
    /// The component's name in the manifest.
    pub name: String,
    /// The SQLite databases it may open.
    pub sqlite: SqliteAccess,
    /// The key-value stores it may open.
    pub kv: KvAccess,
    /// Resolved component variables.
    pub variables: BTreeMap<String, String>,
    /// Outbound allow-list.
    pub outbound: Arc<OutboundPolicy>,
    /// Guest environment variables.
    pub environment: BTreeMap<String, String>,
    /// Its stdout and stderr: log files under the state directory, as Spin keeps them.
    pub stdout: crate::stdio::ComponentLog,
    /// See `stdout`.
    pub stderr: crate::stdio::ComponentLog,
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
        wasi.stdout(env.stdout.clone()).stderr(env.stderr.clone());
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

    /// What `spin:sqlite` works on: the resource table and the databases this component may open.
    pub fn sqlite(&mut self) -> SqliteView<'_> {
        SqliteView {
            table: &mut self.table,
            access: &self.env.sqlite,
        }
    }

    /// What `spin:key-value` works on: the resource table and the stores this component may open.
    pub fn kv(&mut self) -> KvView<'_> {
        KvView {
            table: &mut self.table,
            access: &self.env.kv,
        }
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

/// A compiled, pre-linked component and what it may touch.
pub struct LoadedComponent {
    /// Pre-instantiated component.
    pub pre: InstancePre<Ctx>,
    /// Its environment.
    pub env: Arc<ComponentEnv>,
}

/// A new store for one instance of `comp`.
pub fn new_store(engine: &Engine, comp: &LoadedComponent) -> Store<Ctx> {
    Store::new(engine, Ctx::new(comp.env.clone()))
}
