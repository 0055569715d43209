//! The HTTP trigger: accepts connections, routes requests, sets Spin's headers and hands each
//! request to the component's `ProxyHandler`, which reuses instances as Spin 4.1 does.

use crate::ctx::{Ctx, LoadedComponent};
use crate::router::{RoutePattern, Router};
use crate::runtime::{App, ReuseConfig};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use wasmtime::component::GuestTaskId;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    self, HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, ViewFn, WorkerExpiration,
    WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode as P3ErrorCode;

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Set once the server has stopped: instances dropped after that are not worth a log line.
static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Per-component handler state: how to make instances and when to retire them.
struct ComponentHandler {
    engine: Engine,
    pre: ProxyPre<Ctx>,
    view: ViewFn<Ctx>,
    comp: Arc<LoadedComponent>,
    reuse: ReuseConfig,
}

impl HandlerState for ComponentHandler {
    type StoreData = Ctx;
    type WorkerExpiration = IdleExpiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Ctx, IdleExpiration, Worker>> {
        let mut store = Store::new(&self.engine, Ctx::new(self.comp.env.clone()));
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: self.view,
            expiration: IdleExpiration::new(self.reuse.idle_timeout),
            state: Worker {
                reuse: self.reuse,
                component: self.comp.env.name.clone(),
            },
        })
    }
}

/// Retires an instance after it has been idle for the configured time.
struct IdleExpiration {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed_for: Option<Instant>,
}

impl IdleExpiration {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed_for: None,
        }
    }
}

impl WorkerExpiration for IdleExpiration {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        state: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        if state != WorkerStatus::Idle {
            this.armed_for = None;
            return Poll::Pending;
        }
        let deadline = start + this.timeout;
        if this.armed_for != Some(deadline) {
            this.sleep.as_mut().reset(deadline.into());
            this.armed_for = Some(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

/// Decides how many requests one instance takes.
struct Worker {
    reuse: ReuseConfig,
    component: String,
}

impl WorkerState for Worker {
    type StoreData = Ctx;
    type RequestId = ();

    fn should_accept_request(&self, concurrent_count: usize, total_count: usize) -> ShouldAccept {
        if total_count >= self.reuse.max_requests {
            ShouldAccept::Never
        } else if concurrent_count >= self.reuse.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, Ctx>,
        _id: (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + 'static + Send + Sync>> {
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<Ctx>, result: wasmtime::Result<()>) {
        if let Err(e) = result
            && !STOPPED.load(std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!("component `{}`: instance discarded: {e:#}", self.component);
        }
        drop(store);
    }
}

/// The running HTTP trigger.
struct Server {
    router: Router,
    handlers: BTreeMap<String, ProxyHandler<ComponentHandler>>,
    /// Time a client has to send a request's headers, then again its body (`None`: unbounded).
    read_timeout: Option<Duration>,
}

type HostBody = UnsyncBoxBody<Bytes, std::io::Error>;

fn text_response(status: StatusCode, text: &str) -> Response<HostBody> {
    let mut res = Response::new(
        Full::new(Bytes::copy_from_slice(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn set_header(req: &mut Request<impl Sized>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        req.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

impl Server {
    async fn handle(
        &self,
        req: Request<Incoming>,
        local: SocketAddr,
        client: SocketAddr,
    ) -> Response<HostBody> {
        let path = req.uri().path().to_owned();
        if path == "/.well-known/spin/health" {
            return text_response(StatusCode::OK, "OK");
        }
        let Some(m) = self.router.route(&path) else {
            return text_response(StatusCode::NOT_FOUND, "Not Found");
        };
        let Some(handler) = self.handlers.get(&m.route.component) else {
            return text_response(StatusCode::NOT_FOUND, "Not Found");
        };
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| local.to_string());
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let full_url = format!("http://{host}{path_and_query}");
        let (mut parts, body) = req.into_parts();
        match full_url.parse() {
            Ok(uri) => parts.uri = uri,
            Err(_) => return text_response(StatusCode::BAD_REQUEST, "Bad Request"),
        }
        let body = body
            .map_err(|e| handler::ErrorCode::from(incoming_error(&e)))
            .boxed_unsync();
        let body = match self.read_timeout {
            Some(timeout) => DeadlineBody::boxed(body, timeout),
            None => body,
        };
        let mut req = Request::from_parts(parts, body);
        // Transport-level header, meaningless to the guest (Spin removes it too).
        req.headers_mut().remove(http::header::CONNECTION);
        set_header(&mut req, "spin-full-url", &full_url);
        set_header(&mut req, "spin-path-info", &m.path_info);
        set_header(&mut req, "spin-matched-route", &m.route.raw);
        set_header(&mut req, "spin-raw-component-route", &m.route.raw);
        set_header(&mut req, "spin-component-route", &m.route.component_route());
        set_header(&mut req, "spin-base-path", "/");
        set_header(&mut req, "spin-client-addr", &client.to_string());
        for (name, value) in &m.params {
            let header = format!("spin-path-match-{}", name.to_ascii_lowercase());
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(header.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                req.headers_mut().insert(n, v);
            }
        }
        match handler.handle((), req).await {
            Ok(res) => {
                with_known_length(res.map(|b| {
                    b.map_err(|e| std::io::Error::other(format!("{e:#}")))
                        .boxed_unsync()
                }))
                .await
            }
            Err(e) => {
                eprintln!(
                    "component `{}`: request {path} failed: {e:#}",
                    m.route.component
                );
                text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }
}

/// Bodies up to this size are buffered so the response carries a `Content-Length`.
const BUFFER_BODY_MAX_BYTES: usize = 64 * 1024;

/// Buffers a response body of unknown length while it stays small, so that small responses
/// (nearly all of them) carry `Content-Length`; larger ones stream as before.
async fn with_known_length(res: Response<HostBody>) -> Response<HostBody> {
    use http_body::Body as _;
    let (mut parts, mut body) = res.into_parts();
    let no_body_status = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    if no_body_status
        || parts.headers.contains_key(http::header::CONTENT_LENGTH)
        || body.size_hint().exact().is_some()
    {
        return Response::from_parts(parts, body);
    }
    let mut buffered = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => {
                parts.headers.insert(
                    http::header::CONTENT_LENGTH,
                    HeaderValue::from(buffered.len()),
                );
                let full = Full::new(buffered.freeze())
                    .map_err(|never| match never {})
                    .boxed_unsync();
                return Response::from_parts(parts, full);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buffered.extend_from_slice(&data);
                    if buffered.len() > BUFFER_BODY_MAX_BYTES {
                        let prefix = vec![http_body::Frame::data(buffered.freeze())];
                        return Response::from_parts(parts, Prefixed::boxed(prefix, body));
                    }
                }
                Err(frame) => {
                    let prefix = vec![http_body::Frame::data(buffered.freeze()), frame];
                    return Response::from_parts(parts, Prefixed::boxed(prefix, body));
                }
            },
            Some(Err(e)) => {
                eprintln!("response body failed: {e}");
                let prefix = vec![http_body::Frame::data(buffered.freeze())];
                let failed = http_body_util::StreamBody::new(futures::stream::iter([Err(e)]));
                return Response::from_parts(parts, Prefixed::boxed(prefix, failed.boxed_unsync()));
            }
        }
    }
}

/// A body that yields some already-read frames, then the rest of another body.
struct Prefixed {
    frames: std::collections::VecDeque<http_body::Frame<Bytes>>,
    rest: HostBody,
}

impl Prefixed {
    fn boxed(frames: Vec<http_body::Frame<Bytes>>, rest: HostBody) -> HostBody {
        Self {
            frames: frames.into(),
            rest,
        }
        .boxed_unsync()
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
}

type GuestBody = UnsyncBoxBody<Bytes, handler::ErrorCode>;

/// A request body that must arrive completely within a time limit: past it, the guest reads a
/// `connection-read-timeout` error (and hyper closes the connection, whose body is unread), so
/// a client that stalls mid-body cannot hold a request, and its instance slot, forever.
struct DeadlineBody {
    inner: GuestBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl DeadlineBody {
    fn boxed(inner: GuestBody, timeout: Duration) -> GuestBody {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
        }
        .boxed_unsync()
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = handler::ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired = true;
            return Poll::Ready(Some(Err(handler::ErrorCode::from(
                P3ErrorCode::ConnectionReadTimeout,
            ))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn incoming_error(e: &hyper::Error) -> P3ErrorCode {
    if e.is_timeout() {
        P3ErrorCode::ConnectionReadTimeout
    } else {
        P3ErrorCode::HttpProtocolError
    }
}

/// Serves the app's HTTP routes on `listen` until SIGINT/SIGTERM (or `shutdown` resolves).
///
/// `read_timeout` bounds how long a client may take to send a request's headers, and then its
/// body; `None` leaves both unbounded.
pub async fn serve(
    app: &App,
    listen: SocketAddr,
    reuse: ReuseConfig,
    read_timeout: Option<Duration>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut patterns = Vec::new();
    for r in &app.http_routes {
        patterns.push(RoutePattern::parse(&r.route, &r.component)?);
    }
    let router = Router::new(patterns)?;
    let mut handlers = BTreeMap::new();
    for r in &app.http_routes {
        if handlers.contains_key(&r.component) {
            continue;
        }
        let comp = app
            .components
            .get(&r.component)
            .with_context(|| format!("component `{}` not loaded", r.component))?;
        // WASIp3 `wasi:http/handler@0.3.0` (spin-sdk 7), else WASIp2 `incoming-handler@0.2.x`.
        let (pre, view) = match ServicePre::new(comp.pre.clone()) {
            Ok(pre) => (ProxyPre::P3(pre), ViewFn::P3(Ctx::http_view)),
            Err(p3_error) => {
                match wasmtime_wasi_http::p2::bindings::ProxyPre::new(comp.pre.clone()) {
                    Ok(pre) => (ProxyPre::P2(pre), ViewFn::P2(Ctx::p2_http_view)),
                    Err(_) => bail!(
                        "component `{}` exports neither wasi:http/handler@0.3.0 nor \
                     wasi:http/incoming-handler@0.2.x: {p3_error}",
                        r.component
                    ),
                }
            }
        };
        let state = ComponentHandler {
            engine: app.engine.clone(),
            pre,
            view,
            comp: Arc::new(LoadedComponent {
                pre: comp.pre.clone(),
                env: comp.env.clone(),
            }),
            reuse,
        };
        handlers.insert(r.component.clone(), ProxyHandler::new(state));
    }
    let server = Arc::new(Server {
        router,
        handlers,
        read_timeout,
    });

    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    for r in server.router.routes() {
        println!("  http://{local}{} -> {}", r.raw, r.component);
    }
    println!("listening on http://{local}");
    use std::io::Write as _;
    std::io::stdout().flush()?;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("cannot set TCP_NODELAY: {e}");
        }
        let server = server.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, std::convert::Infallible>(server.handle(req, local, client).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("connection from {client}: {e}");
            }
        });
    }
    drop(listener);
    eprintln!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}");
    }
    STOPPED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
