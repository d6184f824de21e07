//! Listening: the accept loop with connection admission (`server::conn`), HTTP/1.1 and h2c on
//! one port (or HTTP/1.1 and HTTP/2 over TLS, `server::tls`), graceful drain, and the shutdown
//! signals. `app` binds the listeners.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::body::Resp;
use super::conn;
use super::error::{ApiError, ErrorCode};
use super::protocol;
use super::router::{handle, Surface};
use super::tls::{self, Tls};
use super::State;

type Builder = auto::Builder<TokioExecutor>;

/// Serves until `shutdown` resolves, then drains in-flight requests (up to `limits.drain_ms`).
/// With `tls`, every connection is TLS (and its certificate files are watched for changes).
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    surface: Surface,
    tls: Option<Arc<Tls>>,
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
    let admission = conn::Admission::new(
        conn::ConnLimits {
            first_request: Duration::from_millis(limits.first_request_timeout_ms),
            idle: Duration::from_millis(limits.idle_timeout_ms),
            max_pending: limits.max_pending_connections,
            max_serving: limits.max_connections,
        },
        Arc::clone(&state.conns),
    );
    let reloads = tls.as_ref().map(|t| {
        let errors = state.metrics.tls_reload_errors().clone();
        tokio::spawn(Arc::clone(t).watch(errors))
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
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
        // Pending until its first request; the oldest pending connection makes room.
        let admitted = admission.accept();
        let st = Arc::clone(&state);
        let c = Arc::clone(&admitted);
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(super::admin::identity::PeerAddr(peer));
                let st = Arc::clone(&st);
                let c = Arc::clone(&c);
                async move {
                    let resp = match c.begin() {
                        Ok(_in_flight) => handle(st, surface, req).await,
                        Err(_) => too_many_connections(&st),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let tls = tls.clone();
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            // The handshake too runs under the watchdog: the first-request timeout bounds it.
            let closed = tokio::select! {
                () = connection(&st, stream, tls, &builder, svc, watcher) => None,
                r = admitted.watchdog() => Some(r),
            };
            admitted.finish(closed);
        });
    }
    if let Some(r) = reloads {
        r.abort();
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

/// Serves one accepted connection until it closes: the TLS handshake first when the listener
/// has TLS. Dropping the future closes the socket.
async fn connection<S>(
    state: &State,
    stream: TcpStream,
    tls: Option<Arc<Tls>>,
    builder: &Builder,
    svc: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Resp,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Some(tls) = tls else {
        return http(stream, builder, svc, watcher).await;
    };
    match tls.accept(stream).await {
        Ok(stream) => http(stream, builder, svc, watcher).await,
        Err(tls::Refused::PlainHttp(stream)) => {
            state.metrics.tls_handshake_failures().inc();
            state.metrics.error(ErrorCode::BadRequest);
            tls::refuse_plain_http(stream).await;
        }
        // A TLS error (rustls' errors come as InvalidData): counted. A peer that went away
        // (reset, end of stream) is not a failure of the handshake.
        Err(tls::Refused::Handshake(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            state.metrics.tls_handshake_failures().inc();
            tracing::debug!(listener = tls.listener(), error = %e, "TLS handshake failed");
        }
        Err(tls::Refused::Handshake(e)) => {
            tracing::debug!(listener = tls.listener(), error = %e, "TLS handshake cut off");
        }
        Err(tls::Refused::Closed) => {}
    }
}

/// HTTP/1.1 or HTTP/2 on a connection's (plain or decrypted) byte stream.
async fn http<I, S>(
    io: I,
    builder: &Builder,
    svc: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Resp,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(protocol::ErrorBodies::new(io)), svc)
        .into_owned();
    let _ = watcher.watch(conn).await;
}

/// The answer to a first request that finds the serving limit reached; the connection closes.
fn too_many_connections(state: &State) -> Resp {
    let e = ApiError::new(
        ErrorCode::TooManyConnections,
        "the server is at its connection limit; retry on a new connection",
    );
    state.metrics.error(e.code);
    let mut r = e.into_response();
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// Resolves on SIGINT or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // The handlers are installed now, not when the future is first polled: a signal that
    // arrives right after the "listening" line must stop the process gracefully, not kill it.
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { () = wait(int) => {}, () = wait(term) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}
