//! The HTTP server (hyper 1 on tokio): HTTP/1.1 keep-alive and HTTP/2 cleartext (h2c) on one
//! port, strict input limits, graceful shutdown.

pub mod admin;
pub mod api;
pub mod config;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod tokens;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use config::Config;
use config::ConfigError;
use error::ApiError;
use metrics::{Endpoint, Metrics};

use crate::clock::Clock;
use crate::snapshot::{Registry, SnapshotGuard};

/// Everything a request handler needs. Shared by all connections.
pub struct State {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub clock: Clock,
    pub metrics: Metrics,
    pub tokens: tokens::Tokens,
    pub forward: forward::ForwardAuth,
    pub ready: AtomicBool,
    /// The control plane, when this process runs one (`portcullis serve`).
    pub control: Option<Arc<crate::control::ControlPlane>>,
    /// Bearer token of the management API.
    pub admin_token: Option<String>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl State {
    /// Builds the shared state: parses token keys and compiles forward-auth routes, so a bad
    /// key or route stops the server before it binds.
    pub fn new(config: Config, registry: Arc<Registry>, clock: Clock) -> Result<State, StartError> {
        config.validate()?;
        let metrics = Metrics::new(config.metrics.per_tenant)?;
        let tokens = tokens::Tokens::new(&config.tokens)?;
        let forward = forward::ForwardAuth::new(&config.forward_auth, &tokens)?;
        Ok(State {
            config,
            registry,
            clock,
            metrics,
            tokens,
            forward,
            ready: AtomicBool::new(false),
            control: None,
            admin_token: None,
        })
    }
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Data plane and management API (no separate admin listener).
    All,
    /// Data plane only (the management API has its own listener).
    DataPlane,
    /// Management API only (plus health).
    Admin,
}

/// Serves until `shutdown` resolves, then drains in-flight requests (up to `limits.drain_ms`).
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    surface: Surface,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let limits = &state.config.limits;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let st = Arc::clone(&state);
        let svc = hyper::service::service_fn(move |req| {
            let st = Arc::clone(&st);
            async move { Ok::<_, Infallible>(handle(st, surface, req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let drain = Duration::from_millis(state.config.limits.drain_ms);
    tracing::info!(connections = graceful.count(), "draining");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
    Ok(())
}

/// Binds the configured listener(s) and serves until SIGINT/SIGTERM.
pub async fn run(state: Arc<State>) -> std::io::Result<()> {
    let listener = TcpListener::bind(state.config.listen).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let admin = match state.config.admin_listen {
        Some(a) => {
            let l = TcpListener::bind(a).await?;
            let admin_addr = l.local_addr()?;
            tracing::info!(addr = %admin_addr, "management API listening");
            Some(tokio::spawn(serve(
                Arc::clone(&state),
                l,
                Surface::Admin,
                stopped(),
            )))
        }
        None => None,
    };
    let surface = if admin.is_some() {
        Surface::DataPlane
    } else {
        Surface::All
    };
    tracing::info!(%addr, tenants = state.registry.len(), "portcullis listening");
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let main = serve(state, listener, surface, stopped()).await;
    if let Some(a) = admin {
        let _ = a.await;
    }
    main
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutdown signal received");
}

async fn handle(state: Arc<State>, surface: Surface, req: Request<Incoming>) -> Resp {
    let start = Instant::now();
    let (endpoint, result) = route(&state, surface, req).await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            state.metrics.error(e.code);
            e.into_response()
        }
    };
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE && endpoint == Endpoint::Other {
        state.metrics.error("not_ready");
    }
    state
        .metrics
        .latency(endpoint, start.elapsed().as_secs_f64());
    resp
}

async fn route(
    state: &State,
    surface: Surface,
    req: Request<Incoming>,
) -> (Endpoint, Result<Resp, ApiError>) {
    let path = req.uri().path();
    let admin_path =
        path.starts_with("/v1/tenants") || path == "/v1/users" || path == "/v1/openapi.json";
    if surface == Surface::Admin && !admin_path && path != "/healthz" {
        return (Endpoint::Other, Err(ApiError::not_found(path)));
    }
    if surface == Surface::DataPlane && admin_path {
        return (Endpoint::Other, Err(ApiError::not_found(path)));
    }
    if let Some(rest) = path.strip_prefix(forward::PREFIX) {
        if forward::is_forward_auth(path) {
            // Any method; the body (if any) is ignored.
            let r = forward::handle(state, req.method(), rest, req.uri().query(), req.headers());
            return (Endpoint::ForwardAuth, r);
        }
    }
    let endpoint = match path {
        "/v1/check" => Endpoint::Check,
        "/v1/check/batch" => Endpoint::Batch,
        "/v1/filter" => Endpoint::Filter,
        "/v1/scopes" => Endpoint::Scopes,
        "/v1/explain" => Endpoint::Explain,
        _ => Endpoint::Other,
    };
    let method = req.method().clone();
    let result = match (path, &method) {
        ("/healthz", &Method::GET | &Method::HEAD) => Ok(json(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\"}"),
        )),
        ("/readyz", &Method::GET | &Method::HEAD) => Ok(readyz(state)),
        ("/metrics", &Method::GET | &Method::HEAD) => {
            let mut r = Response::new(Full::new(Bytes::from(
                state.metrics.render(&state.registry, state.clock.now()),
            )));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        (_, &Method::POST) if endpoint != Endpoint::Other => {
            match check_body_headers(state, req.headers()) {
                Ok(()) => data_plane(state, endpoint, req.into_body()).await,
                Err(e) => Err(e),
            }
        }
        (_, _) if admin_path => {
            return (Endpoint::Admin, admin::handle(state, req).await);
        }
        ("/healthz" | "/readyz" | "/metrics", _) => Err(method_not_allowed("GET, HEAD")),
        (_, _) if endpoint != Endpoint::Other => Err(method_not_allowed("POST")),
        _ => Err(ApiError::not_found(path)),
    };
    (endpoint, result)
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allow}"),
    )
}

fn readyz(state: &State) -> Resp {
    let n = state.registry.len();
    let failed = state.registry.failures_now();
    if state.ready.load(Ordering::Acquire) && !failed.is_empty() {
        // Fail visibly: a tenant that cannot be compiled is not served.
        let names: Vec<&str> = failed.iter().map(|(t, _)| t.as_str()).collect();
        let body = serde_json::json!({
            "status": "degraded",
            "code": "not_ready",
            "error": format!("tenant(s) {} cannot be compiled and are not served", names.join(", ")),
            "tenants": n,
            "failed": failed.iter().map(|(t, f)| serde_json::json!({
                "tenant": t, "revision": f.revision, "error": f.error,
            })).collect::<Vec<_>>(),
        });
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from(body.to_string()),
        )
    } else if state.ready.load(Ordering::Acquire) {
        json(
            StatusCode::OK,
            Bytes::from(format!("{{\"status\":\"ready\",\"tenants\":{n}}}")),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"{\"status\":\"loading\",\"code\":\"not_ready\"}"),
        )
    }
}

/// Reads a JSON body within the size and time limits.
pub async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    check_body_headers(state, req.headers())?;
    read_body_limited(state, req.into_body()).await
}

/// The header half of [`read_body`]: media type and declared length.
fn check_body_headers(state: &State, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ok = ct
            .to_str()
            .ok()
            .and_then(|s| s.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request body must be application/json",
            ));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(ApiError::too_large("request body", limits.max_body_bytes));
    }
    Ok(())
}

/// The body half of [`read_body`]. Takes only the body, not the whole request: every async
/// level that holds a `Request` by value keeps its own copy in the handler future, which hyper
/// moves per request.
async fn read_body_limited(state: &State, body: Incoming) -> Result<Bytes, ApiError> {
    read_body_max(state, body, state.config.limits.max_body_bytes).await
}

/// Reads a binary body (plugin uploads): `application/wasm`, `application/octet-stream` or no
/// content type, at most `max` bytes.
pub async fn read_binary_body(
    state: &State,
    req: Request<Incoming>,
    max: usize,
) -> Result<Bytes, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ok = ct
            .to_str()
            .ok()
            .and_then(|s| s.split(';').next())
            .map(str::trim)
            .is_some_and(|m| {
                m.eq_ignore_ascii_case("application/wasm")
                    || m.eq_ignore_ascii_case("application/octet-stream")
            });
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a plugin upload body must be application/wasm (or application/octet-stream)",
            ));
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::too_large("plugin module", max));
    }
    read_body_max(state, req.into_body(), max).await
}

async fn read_body_max(state: &State, body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    let limits = &state.config.limits;
    let mut collect = std::pin::pin!(Limited::new(body, max).collect());
    // A small body has almost always arrived with the headers: try once before arming the
    // timer (saves a clock read and a timer entry per request); the timeout applies as before
    // to a body that is still on its way.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(collect.as_mut(), cx))
    })
    .await;
    let read = match first {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => {
            tokio::time::timeout(Duration::from_millis(limits.body_timeout_ms), collect).await
        }
    };
    match read {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "request body not received in time",
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large("request body", max))
        }
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read request body: {e}"
        ))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// The snapshot of `tenant`, waiting (bounded) until it reaches `min_revision`.
pub async fn snapshot_at(
    state: &State,
    tenant: &str,
    min_revision: Option<u64>,
) -> Result<SnapshotGuard, ApiError> {
    let Some(min) = min_revision else {
        return state
            .registry
            .get(tenant)
            .ok_or_else(|| ApiError::no_snapshot(&state.registry, tenant));
    };
    let mut changes = state.registry.subscribe();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(state.config.limits.max_revision_wait_ms);
    loop {
        let current = state.registry.get(tenant).map(|s| s.revision());
        if current.is_none() {
            // A tenant that failed at or after `min` stays failed until a later commit.
            if let Some(f) = state.registry.failure(tenant).filter(|f| f.revision >= min) {
                return Err(ApiError::tenant_unavailable(tenant, &f));
            }
        }
        if current.is_some_and(|r| r >= min) {
            if let Some(s) = state.registry.get(tenant) {
                return Ok(s);
            }
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                return Err(match current {
                    None => ApiError::no_snapshot(&state.registry, tenant),
                    Some(r) => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "revision_unavailable",
                        format!("tenant '{tenant}' is at revision {r}; min_revision {min} not reached in time"),
                    ),
                })
            }
        }
    }
}

/// A data-plane POST whose headers passed [`check_body_headers`].
async fn data_plane(state: &State, endpoint: Endpoint, body: Incoming) -> Result<Resp, ApiError> {
    let body = read_body_limited(state, body).await?;
    // Each arm: parse (borrowing from `body`), pin the snapshot, decide synchronously.
    let out = match endpoint {
        Endpoint::Check | Endpoint::Explain => {
            let r = api::parse_check(&body)?;
            let snap = snapshot_at(state, &r.tenant, r.min_revision).await?;
            if endpoint == Endpoint::Check {
                api::check(state, &snap, &r)?
            } else {
                api::explain(state, &snap, &r)?
            }
        }
        Endpoint::Batch => {
            let r: api::BatchReq = api::parse(&body)?;
            let snap = snapshot_at(state, &r.tenant, r.min_revision).await?;
            api::batch(state, &snap, &r)?
        }
        Endpoint::Filter => {
            let r: api::FilterReq = api::parse(&body)?;
            let snap = snapshot_at(state, &r.tenant, r.min_revision).await?;
            api::filter(state, &snap, &r)?
        }
        Endpoint::Scopes => {
            let r: api::ScopesReq = api::parse(&body)?;
            let snap = snapshot_at(state, &r.tenant, r.min_revision).await?;
            api::scopes(state, &snap, &r)?
        }
        Endpoint::ForwardAuth | Endpoint::Admin | Endpoint::Other => {
            return Err(ApiError::not_found(""))
        }
    };
    Ok(json(StatusCode::OK, out))
}
