//! Listening: the accept loop with connection admission (`server::conn`), HTTP/1.1 and h2c on
//! one port, graceful drain, and the shutdown signals. `app` binds the listeners.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::body::Resp;
use super::conn;
use super::error::{ApiError, ErrorCode};
use super::protocol;
use super::router::{handle, Surface};
use super::State;

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
    let admission = conn::Admission::new(
        conn::ConnLimits {
            first_request: Duration::from_millis(limits.first_request_timeout_ms),
            idle: Duration::from_millis(limits.idle_timeout_ms),
            max_pending: limits.max_pending_connections,
            max_serving: limits.max_connections,
        },
        Arc::clone(&state.conns),
    );
    tokio::pin!(shutdown);
    loop {
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
        // Pending until its first request; the oldest pending connection makes room.
        let admitted = admission.accept();
        let st = Arc::clone(&state);
        let c = Arc::clone(&admitted);
        let svc = hyper::service::service_fn(move |req| {
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
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(protocol::ErrorBodies::new(stream)), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Dropping the connection future closes the socket.
            let closed = tokio::select! {
                _ = conn => None,
                r = admitted.watchdog() => Some(r),
            };
            admitted.finish(closed);
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
