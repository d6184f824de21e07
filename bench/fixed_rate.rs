//! A small open-loop (fixed-rate, wrk2-style) HTTP/1.1 load generator for `bench/load.sh`.
//!
//! Debian has no wrk2, `hey -q` paces each worker separately and costs far more CPU per request
//! than the server under test, and `h2load --rate` paces connections, not requests. This one
//! runs on one thread (tokio current-thread runtime, so it fits on one pinned core) and schedules
//! request `i` at `start + i / RATE`, spread round-robin over CONNS keep-alive connections (one
//! request in flight per connection, TCP_NODELAY). Like wrk2 it paces with a millisecond timer,
//! so requests leave in small per-millisecond bursts. For every request after the warm-up it
//! records:
//! - service latency: from the moment the request was written to the end of the response;
//! - scheduled latency: from the moment it *should* have been sent (corrects coordinated
//!   omission, as wrk2 does; includes up to ~1 ms of the generator's own timer granularity).
//!
//! Bodies cycle through a `checks.tsv` made by the `load_bodies` example (`POST PATH` with
//! `{"tenant":"s","subject","action","resource"}`).
//!
//! Usage: `fixed_rate ADDR PATH RATE SECONDS CONNS CHECKS_TSV [WARMUP_SECONDS]`
//! Prints one line: `key=value …` (latencies in microseconds). `late_pct` is the share of
//! requests written more than 2 ms after they were due: non-zero means the generator, not the
//! server, fell behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Default)]
struct Sample {
    service_ns: Vec<u64>,
    sched_ns: Vec<u64>,
    errors: u64,
    non2xx: u64,
    late: u64,
    last_done: Option<Instant>,
}

/// Reads one response (status line, headers, `Content-Length` body). Returns the status.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..h]).unwrap_or("");
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < h + 4 + len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

#[allow(clippy::too_many_arguments)]
async fn conn_loop(
    j: usize,
    conns: usize,
    addr: Rc<String>,
    reqs: Rc<Vec<Vec<u8>>>,
    start: Instant,
    gap: Duration,
    measure_from: Instant,
    end: Instant,
) -> Sample {
    let mut out = Sample::default();
    let mut s = connect(&addr).await.expect("connect");
    let mut buf = Vec::with_capacity(8192);
    let mut k: u64 = 0;
    loop {
        let i = k * conns as u64 + j as u64;
        k += 1;
        let due = start + gap.mul_f64(i as f64);
        if due >= end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let sent = Instant::now();
        let req = &reqs[(i as usize) % reqs.len()];
        let res = match s.write_all(req).await {
            Ok(()) => read_response(&mut s, &mut buf).await,
            Err(e) => Err(e),
        };
        let done = Instant::now();
        match res {
            Ok(st) if due >= measure_from => {
                out.service_ns.push((done - sent).as_nanos() as u64);
                out.sched_ns.push((done - due).as_nanos() as u64);
                out.last_done = Some(done);
                if sent.duration_since(due) > Duration::from_millis(2) {
                    out.late += 1;
                }
                if !(200..300).contains(&st) {
                    out.non2xx += 1;
                }
            }
            Ok(_) => {}
            Err(_) => {
                out.errors += 1;
                match connect(&addr).await {
                    Ok(n) => s = n,
                    Err(_) => break,
                }
            }
        }
    }
    out
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 7 {
        eprintln!("usage: fixed_rate ADDR PATH RATE SECONDS CONNS CHECKS_TSV [WARMUP_SECONDS]");
        std::process::exit(2);
    }
    let addr = a[1].clone();
    let path = a[2].clone();
    let rate: f64 = a[3].parse().expect("RATE");
    let secs: f64 = a[4].parse().expect("SECONDS");
    let conns: usize = a[5].parse().expect("CONNS");
    let tsv = std::fs::read_to_string(&a[6]).expect("CHECKS_TSV");
    let warm: f64 = a.get(7).map_or(2.0, |s| s.parse().expect("WARMUP_SECONDS"));
    assert!(rate > 0.0 && conns > 0, "RATE and CONNS must be positive");

    let reqs: Vec<Vec<u8>> = tsv
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (s, act, r) = (f.next()?, f.next()?, f.next()?);
            let body = format!(
                "{{\"tenant\":\"s\",\"subject\":\"{s}\",\"action\":\"{act}\",\"resource\":\"{r}\"}}"
            );
            Some(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        })
        .collect();
    assert!(!reqs.is_empty(), "no requests in {}", a[6]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs_f64(warm);
    let end = measure_from + Duration::from_secs_f64(secs);
    let samples: Vec<Sample> = local.block_on(&rt, async move {
        let reqs = Rc::new(reqs);
        let addr = Rc::new(addr);
        let handles: Vec<_> = (0..conns)
            .map(|j| {
                tokio::task::spawn_local(conn_loop(
                    j,
                    conns,
                    Rc::clone(&addr),
                    Rc::clone(&reqs),
                    start,
                    gap,
                    measure_from,
                    end,
                ))
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("connection task"));
        }
        out
    });

    let (mut service, mut sched, mut errors, mut non2xx, mut late) =
        (Vec::new(), Vec::new(), 0, 0, 0);
    let mut last = measure_from;
    for o in samples {
        service.extend(o.service_ns);
        sched.extend(o.sched_ns);
        errors += o.errors;
        non2xx += o.non2xx;
        late += o.late;
        last = last.max(o.last_done.unwrap_or(measure_from));
    }
    let elapsed = (last - measure_from).as_secs_f64().max(secs);
    service.sort_unstable();
    sched.sort_unstable();
    // Requests are scheduled over exactly `secs`; when the generator or the server fell behind,
    // the last responses come later and the achieved rate drops below the target.
    println!(
        "target_rps={rate:.0} achieved_rps={:.0} requests={} errors={errors} non2xx={non2xx} late_pct={:.2} \
         p50_us={:.0} p90_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0} \
         sched_p50_us={:.0} sched_p99_us={:.0} sched_max_us={:.0}",
        service.len() as f64 / elapsed,
        service.len(),
        100.0 * late as f64 / service.len().max(1) as f64,
        pct(&service, 50.0),
        pct(&service, 90.0),
        pct(&service, 99.0),
        pct(&service, 99.9),
        pct(&service, 100.0),
        pct(&sched, 50.0),
        pct(&sched, 99.0),
        pct(&sched, 100.0),
    );
}
