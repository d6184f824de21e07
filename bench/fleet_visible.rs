//! Change-to-visible over NATS: an admin write on a control plane (`serve --nats`) until a check
//! on a sidecar (`sidecar --nats`) answers at the write's revision — p50/p90/p99/max over N
//! writes, on loopback, real processes. Run by `bench/fleet.sh` (release); by hand:
//!
//! ```sh
//! NATS_SERVER_BIN=…/nats-server PORTCULLIS_BIN=target/release/portcullis \
//!   cargo run --release --example fleet_visible -- 1000
//! ```
//!
//! Each write toggles a user (active/inactive); right after its answer, a `/v1/check` with
//! `min_revision` = the write's revision goes to the sidecar, which answers as soon as it has
//! that revision. "ack → visible" is from the write's answer to the check's answer (an upper
//! bound: it includes the check's own round trip); "write → visible" from sending the write.
//!
//! Then, in the same run: the same check over HTTP and over NATS request-reply; and a burst of
//! 10,000 events: the sidecar is stopped (SIGSTOP), 10,000 writes are made on the control plane
//! and published to the stream, the sidecar resumed (SIGCONT) — it applies them while a client
//! keeps sending it checks. Reported: events applied per second (from SIGCONT until a check with
//! `min_revision` = the last write's revision answers) and the checks' latency during the burst
//! against the same checks on the idle sidecar just before.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "fleet-bench-admin-token-0123456789";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd`, returns it with the address of its "portcullis listening" line (or, for
/// nats-server, once "Server is ready" appears).
fn spawn(mut cmd: Command, ready: &str) -> (Kill, Option<SocketAddr>) {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if !sent && line.contains(&ready) {
                let addr = line
                    .find("addr=")
                    .and_then(|i| line[i + 5..].split(' ').next()?.parse().ok());
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("process did not start");
    (Kill(child), addr)
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    fn call(&mut self, method: &str, path: &str, auth: bool, body: &str) -> (u16, String) {
        let auth = if auth {
            format!("authorization: Bearer {TOKEN}\r\n")
        } else {
            String::new()
        };
        write!(
            self.w,
            "{method} {path} HTTP/1.1\r\nhost: bench\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut status = String::new();
        self.r.read_line(&mut status).unwrap();
        let code = status.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0; len];
        self.r.read_exact(&mut b).unwrap();
        (code, String::from_utf8(b).unwrap())
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1000, |a| a.parse().expect("N writes"));
    let nats_bin = std::env::var("NATS_SERVER_BIN").expect("NATS_SERVER_BIN");
    let bin =
        std::env::var("PORTCULLIS_BIN").unwrap_or_else(|_| "target/release/portcullis".into());
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nats = Command::new(&nats_bin);
    nats.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path().join("nats"));
    let (_nats, _) = spawn(nats, "Server is ready");
    let url = format!("nats://127.0.0.1:{port}");
    let mut serve = Command::new(&bin);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--nats", &url, "--data"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/demo.yaml"))
        .arg("--store")
        .arg(dir.path().join("store"))
        .env("PORTCULLIS_ADMIN_TOKEN", TOKEN)
        .env("PORTCULLIS_LOG", "warn,portcullis::app=info");
    let (_cp, cp_addr) = spawn(serve, "portcullis listening");
    let mut sidecar = Command::new(&bin);
    sidecar
        .args(["sidecar", "--listen", "127.0.0.1:0", "--nats", &url])
        .env("PORTCULLIS_LOG", "warn,portcullis::app=info");
    let (sc_proc, sc_addr) = spawn(sidecar, "portcullis listening");
    let (cp_addr, sc_addr) = (cp_addr.unwrap(), sc_addr.unwrap());
    let mut cp = Conn::new(cp_addr);
    let mut sc = Conn::new(sc_addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sc.call("GET", "/readyz", false, "").0 != 200 {
        assert!(Instant::now() < deadline, "sidecar not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ack_visible = Vec::with_capacity(n);
    let mut write_visible = Vec::with_capacity(n);
    let mut write_ack = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let active = i % 2 == 1;
        let verb = if active { "activate" } else { "deactivate" };
        let t0 = Instant::now();
        let (st, body) = cp.call(
            "POST",
            &format!("/v1/tenants/femo/users/alice/{verb}"),
            true,
            "",
        );
        assert_eq!(st, 200, "{body}");
        let t1 = Instant::now();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rev = v["revision"].as_u64().unwrap();
        let q = format!(
            r#"{{"tenant":"femo","subject":"alice","action":"asset:operate","resource":"press-7","min_revision":{rev}}}"#
        );
        let (st, body) = sc.call("POST", "/v1/check", false, &q);
        let t2 = Instant::now();
        assert_eq!(st, 200, "{body}");
        let c: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(c["allowed"].as_bool(), Some(active), "{body}");
        write_ack.push((t1 - t0).as_secs_f64() * 1e3);
        ack_visible.push((t2 - t1).as_secs_f64() * 1e3);
        write_visible.push((t2 - t0).as_secs_f64() * 1e3);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = compare_transports(sc_addr, &url);
    let burst = burst(cp_addr, sc_addr, sc_proc.0.id());
    println!(
        "{n} writes in {elapsed:.2} s ({:.0} writes/s, one at a time)",
        n as f64 / elapsed
    );
    println!("| ms | p50 | p90 | p99 | max |\n|---|---|---|---|---|");
    for (name, mut v) in [
        ("write → ack (control plane)", write_ack),
        ("ack → visible on the sidecar", ack_visible),
        ("write → visible on the sidecar", write_visible),
    ] {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            pct(&v, 0.5),
            pct(&v, 0.9),
            pct(&v, 0.99),
            v[v.len() - 1]
        );
    }
    println!("\nThe same check on the sidecar, HTTP `/v1/check` vs NATS request-reply:\n");
    println!("| transport | one at a time p50 µs | p99 µs | {CONCURRENCY} in flight, checks/s |\n|---|---|---|---|");
    for (name, mut lat, rate) in requests {
        lat.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {name} | {:.0} | {:.0} | {rate:.0} |",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
    let Burst {
        events,
        applied_in,
        mut idle,
        mut during,
        writes_in,
    } = burst;
    println!(
        "\nA burst of {events} events ({events} writes on the control plane in {:.1} s while the sidecar was stopped), \
         applied by the sidecar in {:.2} s from SIGCONT: **{:.0} events/s**, while answering checks \
         (one client, one at a time):\n",
        writes_in.as_secs_f64(),
        applied_in.as_secs_f64(),
        events as f64 / applied_in.as_secs_f64()
    );
    println!("| `/v1/check` on the sidecar | checks | p50 µs | p90 µs | p99 µs | max µs |\n|---|---|---|---|---|---|");
    for (name, v) in [("idle", &mut idle), ("during the burst", &mut during)] {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            v[v.len() - 1]
        );
    }
}

const BURST: usize = 10_000;
/// Users of femo toggled by the burst (the checks ask about omar, whom they leave alone).
const BURST_USERS: [&str; 4] = ["bruno", "chitra", "gwen", "hana"];

struct Burst {
    events: usize,
    writes_in: Duration,
    applied_in: Duration,
    /// Check latencies (µs) on the idle sidecar, and during the burst.
    idle: Vec<f64>,
    during: Vec<f64>,
}

/// One client's check latencies (µs) until `stop`.
fn checks_until(sidecar: SocketAddr, stop: &std::sync::atomic::AtomicBool) -> Vec<f64> {
    let mut c = Conn::new(sidecar);
    let mut lat = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        let (st, body) = c.call("POST", "/v1/check", false, CHECK);
        assert_eq!(st, 200, "{body}");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat
}

/// The control plane's count of published events.
fn published(cp: SocketAddr) -> u64 {
    let (_, text) = Conn::new(cp).call("GET", "/metrics", false, "");
    text.lines()
        .find_map(|l| l.strip_prefix("portcullis_fleet_events_total{outcome=\"published\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

fn burst(cp: SocketAddr, sidecar: SocketAddr, pid: u32) -> Burst {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // Idle: 3 s of checks.
    let stop = AtomicBool::new(false);
    let idle = std::thread::scope(|s| {
        let h = s.spawn(|| checks_until(sidecar, &stop));
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    let before = published(cp);
    signal(pid, "-STOP");
    let last = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for user in BURST_USERS {
            let last = &last;
            s.spawn(move || {
                let mut c = Conn::new(cp);
                for i in 0..BURST / BURST_USERS.len() {
                    let verb = if i % 2 == 0 { "deactivate" } else { "activate" };
                    let (st, body) = c.call(
                        "POST",
                        &format!("/v1/tenants/femo/users/{user}/{verb}"),
                        true,
                        "",
                    );
                    assert_eq!(st, 200, "{body}");
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    last.fetch_max(v["revision"].as_u64().unwrap(), Ordering::Relaxed);
                }
            });
        }
    });
    let writes_in = t.elapsed();
    let last = last.load(Ordering::Relaxed);
    // Every write in the stream before the sidecar resumes.
    let deadline = Instant::now() + Duration::from_secs(120);
    while published(cp) < before + BURST as u64 {
        assert!(Instant::now() < deadline, "the burst was not published");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = AtomicBool::new(false);
    let (applied_in, during) = std::thread::scope(|s| {
        let t0 = Instant::now();
        signal(pid, "-CONT");
        let h = s.spawn(|| checks_until(sidecar, &stop));
        let mut c = Conn::new(sidecar);
        let q = format!(
            r#"{{"tenant":"femo","subject":"omar","action":"asset:calibrate","resource":"press-8","min_revision":{last}}}"#
        );
        loop {
            let (st, body) = c.call("POST", "/v1/check", false, &q);
            if st == 200 {
                break;
            }
            assert_eq!(st, 503, "{body}");
            assert!(t0.elapsed() < Duration::from_secs(300), "burst not applied");
        }
        let applied_in = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        (applied_in, h.join().unwrap())
    });
    Burst {
        events: BURST,
        writes_in,
        applied_in,
        idle,
        during,
    }
}

const CHECK: &str =
    r#"{"tenant":"femo","subject":"omar","action":"asset:calibrate","resource":"press-8"}"#;
const CONCURRENCY: usize = 8;
const ROUNDS: usize = 2000;

/// Latencies (µs, one at a time) and throughput (`CONCURRENCY` in flight) of the same check over
/// HTTP keep-alive and over NATS request-reply.
fn compare_transports(sidecar: SocketAddr, url: &str) -> Vec<(&'static str, Vec<f64>, f64)> {
    let mut http = Conn::new(sidecar);
    let mut lat = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let (st, _) = http.call("POST", "/v1/check", false, CHECK);
        assert_eq!(st, 200);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY {
            s.spawn(|| {
                let mut c = Conn::new(sidecar);
                for _ in 0..ROUNDS {
                    assert_eq!(c.call("POST", "/v1/check", false, CHECK).0, 200);
                }
            });
        }
    });
    let http_rate = (CONCURRENCY * ROUNDS) as f64 / t.elapsed().as_secs_f64();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (nats_lat, nats_rate) = rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let ask = |c: async_nats::Client| async move {
            let r = c
                .request("portcullis.api.femo.check", CHECK.into())
                .await
                .unwrap();
            assert!(
                r.payload.starts_with(b"{\"allowed\":true"),
                "{:?}",
                r.payload
            );
        };
        let mut lat = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            ask(client.clone()).await;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let t = Instant::now();
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        ask(c.clone()).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        (
            lat,
            (CONCURRENCY * ROUNDS) as f64 / t.elapsed().as_secs_f64(),
        )
    });
    vec![
        ("HTTP/1.1 keep-alive", lat, http_rate),
        ("NATS request-reply", nats_lat, nats_rate),
    ]
}
