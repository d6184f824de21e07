//! Connection admission against the real binary: silent sockets, half-sent HTTP/2 prefaces and
//! idle connections cannot take the serving capacity away from real clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use server::Server;

const LIMITS: &str = "tests/fixtures/connection-limits.yaml";

fn start() -> Server {
    Server::start(&["--config", LIMITS], &[])
}

/// Waits until the server closes `c` (read returns 0 or an error); the time it took.
fn closed_within(c: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let t = Instant::now();
    c.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            Err(_) => return Some(t.elapsed()),
        }
    }
}

fn metric(s: &Server, line_prefix: &str) -> u64 {
    let (_, _, body) = s.request("GET", "/metrics", &[], b"");
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[test]
fn silent_sockets_and_half_prefaces_do_not_lock_out_real_clients() {
    let s = start();
    // Far more silent sockets than the serving limit (4) and the pending bound (16).
    let mut held = Vec::new();
    for i in 0..60 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        if i % 3 == 0 {
            c.write_all(b"PRI * HTTP/2").unwrap(); // a partial HTTP/2 preface
        }
        held.push(c);
    }
    // A real client is served at once, repeatedly, while they are held.
    for _ in 0..8 {
        let t = Instant::now();
        let (status, _, body) = s.request("GET", "/healthz", &[], b"");
        assert_eq!(status, 200, "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "healthz took {:?} with silent sockets held",
            t.elapsed()
        );
        let (status, v) = s.post_json(
            "/v1/check",
            r#"{"tenant":"femo","subject":"alice","action":"asset:operate","resource":"press-7"}"#,
        );
        assert_eq!(status, 200, "{v}");
    }
    // The held sockets are closed by the server: evicted, or after the first-request timeout.
    for c in &mut held {
        assert!(
            closed_within(c, Duration::from_secs(5)).is_some(),
            "a silent connection was kept open"
        );
    }
    assert!(
        metric(
            &s,
            "portcullis_connections_closed_total{reason=\"evicted\"}"
        ) > 0
    );
    assert!(
        metric(
            &s,
            "portcullis_connections_closed_total{reason=\"first_request_timeout\"}"
        ) > 0
    );
}

#[test]
fn a_silent_connection_is_closed_after_the_first_request_timeout() {
    let s = start();
    let mut c = TcpStream::connect(s.addr).unwrap();
    let took = closed_within(&mut c, Duration::from_secs(5)).expect("closed");
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_served() {
    let s = start();
    let mut c = TcpStream::connect(s.addr).unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    // Requests more often than the idle timeout keep the connection open past it.
    for _ in 0..4 {
        c.write_all(req).unwrap();
        let mut buf = [0u8; 1024];
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(600));
    }
    // Then silence: closed after the idle timeout (1.5 s).
    let took = closed_within(&mut c, Duration::from_secs(6)).expect("idle connection closed");
    assert!(
        took >= Duration::from_millis(700),
        "closed too early: {took:?}"
    );
    assert!(
        metric(
            &s,
            "portcullis_connections_closed_total{reason=\"idle_timeout\"}"
        ) > 0
    );
}

#[test]
fn the_serving_limit_refuses_with_503_and_frees_slots() {
    let s = start();
    // Four keep-alive connections that have sent a request hold the four serving slots.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        busy.push(c);
    }
    let (status, _, body) = s.request("GET", "/healthz", &[], b"");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too_many_connections"), "{body}");
    drop(busy);
    // Closed by the client: the slots come back.
    let t = Instant::now();
    loop {
        let (status, _, _) = s.request("GET", "/healthz", &[], b"");
        if status == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "slots were not freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}
