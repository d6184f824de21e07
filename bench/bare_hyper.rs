//! The transport's physical limit on this machine: a bare hyper 1 server with the same setup as
//! `portcullis serve` (tokio multi-thread runtime, hyper-util auto builder for HTTP/1.1 + h2c,
//! keep-alive, TCP_NODELAY) that reads the request body and answers a fixed 200 JSON body to any
//! request. `bench/load.sh` measures it next to Portcullis.
//!
//! Usage: `cargo run --release --example bare_hyper -- [ADDR]` (default 127.0.0.1:8190).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const BODY: &[u8] = b"{\"allowed\":true,\"reason\":\"allowed\",\"revision\":1}";

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body like a real handler would (it is tiny and already buffered).
    let _ = req.into_body().collect().await;
    let mut r = Response::new(Full::new(Bytes::from_static(BODY)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8190".to_string())
        .parse()
        .expect("ADDR");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.expect("bind");
        eprintln!("bare_hyper listening on {}", listener.local_addr().unwrap());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(true)
            .max_buf_size(64 * 1024);
        builder.http2().max_concurrent_streams(256);
        let builder = std::sync::Arc::new(builder);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let b = std::sync::Arc::clone(&builder);
            tokio::spawn(async move {
                let _ = b
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        hyper::service::service_fn(handle),
                    )
                    .await;
            });
        }
    });
}
