//! Sidecar cold boot from the NATS object store: a generated world (`s`, `m` or `l`) is
//! published the way the control plane's publisher does it (per tenant: its rows and rkyv
//! archive as one object in `portcullis-snapshots`, a record in `portcullis-tenants`), then a
//! sidecar (`portcullis sidecar --nats`) is started and timed until `/readyz` answers 200, its
//! `/proc/PID/status` read along the way (VmRSS when ready, VmHWM: the peak during boot).
//! Run by `bench/fleet_boot.sh`; by hand:
//!
//! ```sh
//! NATS_SERVER_BIN=…/nats-server PORTCULLIS_BIN=target/release/portcullis \
//!   target/release/examples/fleet_boot m [TENANTS]
//! ```
//!
//! `TENANTS` (world L only) publishes the first that many tenants of it (`l0000`, the largest,
//! first), for machines without the disk or time for all 1,000.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis::control::TenantDoc;
use portcullis::fleet::{self, Fleet, Record};
use portcullis::model::Tenant;
use portcullis::snapshot::Snapshot;
use sha2::{Digest, Sha256};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// When the sidecar logged that its snapshots were loaded (before the replay and the swap).
static LOADED_AT: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// Spawns `cmd`; returns once a stderr line contains `ready`, with the `addr=` of that line.
fn spawn(mut cmd: Command, ready: &str) -> (Kill, Option<SocketAddr>) {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("snapshots loaded") {
                *LOADED_AT.lock().unwrap() = Some(Instant::now());
            }
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
        .recv_timeout(Duration::from_secs(120))
        .expect("process did not start");
    (Kill(child), addr)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// What the publisher writes for one tenant at revision 1.
struct Published {
    archive: u64,
    object: u64,
}

async fn publish(f: &Fleet, mut t: Tenant) -> Published {
    t.revision = 1;
    let id = t.id.clone();
    let (bytes, archive) = tokio::task::spawn_blocking(move || {
        let snap = Snapshot::build(&t).expect("world tenant compiles");
        let mut doc = TenantDoc::default();
        for op in TenantDoc::ops_from_tenant(&t, portcullis::worlds::NOW) {
            doc.apply_op(&op, 1).expect("world tenant applies");
        }
        doc.revision = 1;
        let rows = doc.to_rows(&t.id);
        let bytes = fleet::encode_object(&rows, Some(&snap)).unwrap();
        (bytes, snap.as_bytes().len() as u64)
    })
    .await
    .unwrap();
    let record = Record {
        tenant: id.clone(),
        revision: 1,
        deleted: false,
        object: fleet::token(&id),
        sha256: portcullis::model::hex(&Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        format: fleet::OBJECT_FORMAT,
        archive_format: Some(portcullis::snapshot::FORMAT_VERSION),
        stream_seq: 0,
        at_ms: 0,
    };
    f.objects
        .put(record.object.as_str(), &mut bytes.as_slice())
        .await
        .unwrap();
    f.kv.put(
        fleet::token(&id),
        serde_json::to_vec(&record).unwrap().into(),
    )
    .await
    .unwrap();
    Published {
        archive,
        object: bytes.len() as u64,
    }
}

fn main() {
    let world = std::env::args().nth(1).unwrap_or_else(|| "m".into());
    let limit: Option<usize> = std::env::args().nth(2).map(|n| n.parse().expect("TENANTS"));
    let nats_bin = std::env::var("NATS_SERVER_BIN").expect("NATS_SERVER_BIN");
    let bin =
        std::env::var("PORTCULLIS_BIN").unwrap_or_else(|_| "target/release/portcullis".into());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(&nats_bin);
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path().join("js"));
    let (_nats, _) = spawn(cmd, "Server is ready");
    let url = format!("nats://127.0.0.1:{port}");

    // The same sidecar with nothing to load: the process's own footprint.
    let baseline = {
        let mut cmd = Command::new(&bin);
        cmd.args(["sidecar", "--nats", &url, "--listen", "127.0.0.1:0"])
            .env("PORTCULLIS_LOG", "info");
        let (empty, addr) = spawn(cmd, "portcullis listening");
        let addr = addr.expect("sidecar address");
        while get(addr, "/readyz").0 != 200 {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs(1));
        status_bytes(empty.0.id(), "VmRSS")
    };
    *LOADED_AT.lock().unwrap() = None;

    let tenants: Box<dyn Iterator<Item = Tenant>> = match world.as_str() {
        "s" => Box::new(portcullis::worlds::world_s().into_iter()),
        "m" => Box::new(portcullis::worlds::world_m().into_iter()),
        "l" => Box::new(portcullis::worlds::world_l().take(limit.unwrap_or(usize::MAX))),
        other => panic!("world {other}: expected s, m or l"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (count, assignments, archives, objects) = rt.block_on(async {
        let f = Fleet::connect(&fleet::Options {
            url: url.clone(),
            name: "fleet-boot-bench".into(),
            replicas: 1,
        })
        .await
        .unwrap();
        let (mut n, mut a, mut archives, mut objects) = (0usize, 0usize, 0u64, 0u64);
        for t in tenants {
            a += t.assignments.len();
            let p = publish(&f, t).await;
            archives += p.archive;
            objects += p.object;
            n += 1;
            if n % 100 == 0 {
                eprintln!(
                    "{n} tenants published ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        (n, a, archives, objects)
    });
    let publish_time = started.elapsed();

    // The sidecar, cold: timed from spawn to `/readyz` 200.
    let t0 = Instant::now();
    let mut cmd = Command::new(&bin);
    cmd.args(["sidecar", "--nats", &url, "--listen", "127.0.0.1:0"])
        .env("PORTCULLIS_LOG", "info");
    let (sidecar, addr) = spawn(cmd, "portcullis listening");
    let addr = addr.expect("sidecar address");
    let pid = sidecar.0.id();
    let mut peak_rss = 0;
    let ready = loop {
        peak_rss = peak_rss.max(status_bytes(pid, "VmRSS"));
        let (code, body) = get(addr, "/readyz");
        if code == 200 {
            break body;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1800),
            "sidecar not ready: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let boot = t0.elapsed();
    let rss_ready = status_bytes(pid, "VmRSS");
    let hwm = status_bytes(pid, "VmHWM");
    // Settled: a few seconds later (allocator returns, background work done).
    std::thread::sleep(Duration::from_secs(3));
    let rss_settled = status_bytes(pid, "VmRSS");

    println!(
        "world {world}{}: {count} tenants, {assignments} assignments; archives {:.1} MiB, \
         snapshot objects (rows + archive) {:.1} MiB; published in {:.1} s",
        limit.map_or(String::new(), |l| format!(" (first {l} tenants)")),
        mib(archives),
        mib(objects),
        publish_time.as_secs_f64()
    );
    println!();
    println!("| sidecar cold boot | value |");
    println!("|---|---|");
    println!("| spawn → `/readyz` 200 | {:.2} s |", boot.as_secs_f64());
    if let Some(at) = *LOADED_AT.lock().unwrap() {
        println!(
            "| of which spawn → snapshots fetched, checked and decoded (log line \"snapshots loaded\") | {:.2} s |",
            at.duration_since(t0).as_secs_f64()
        );
    }
    println!(
        "| VmRSS when ready | {:.1} MiB ({:.2}× the archives) |",
        mib(rss_ready),
        rss_ready as f64 / archives as f64
    );
    println!(
        "| VmRSS 3 s later | {:.1} MiB ({:.2}× the archives) |",
        mib(rss_settled),
        rss_settled as f64 / archives as f64
    );
    println!(
        "| VmHWM (peak during boot) | {:.1} MiB ({:.2}× the archives) |",
        mib(hwm),
        hwm as f64 / archives as f64
    );
    println!(
        "| VmRSS when ready, minus an empty sidecar's ({:.1} MiB) | {:.1} MiB ({:.2}× the archives) |",
        mib(baseline),
        mib(rss_ready.saturating_sub(baseline)),
        rss_ready.saturating_sub(baseline) as f64 / archives as f64
    );
    println!("| `/readyz` | `{}` |", ready.trim());
}
