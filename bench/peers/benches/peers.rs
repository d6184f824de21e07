//! Side by side with the peers: the same requests against Portcullis, Cedar, Casbin and Regorus
//! on the generated worlds S and M.
//!
//! Modes (environment variable `PEERS_MODE`; `bash bench/peers.sh` runs them all; records go
//! to `bench/out/`, the report to `bench/PEERS.md`):
//! - unset: criterion, per world and engine, one check per iteration over allow requests and
//!   over deny requests (`peers-S/cedar/allow`, …); medians land in `target/criterion`.
//! - `agree`: every engine decides the bench requests; writes `bench/out/agree.jsonl`.
//! - `p99`: each check timed on its own (allow list and deny list apart); writes `bench/out/p99.jsonl`.
//! - `mem`: each engine loads each world in a child process; the child reports resident-set
//!   growth and peak (`VmRSS`/`VmHWM`); writes `bench/out/mem.jsonl`.
//! - `report`: writes `bench/PEERS.md` from the above.
//!
//! `PEERS_WORLDS=S,M` and `PEERS_ENGINES=portcullis,cedar,casbin,regorus` narrow a run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_peers::{casbin as casbin_peer, cedar, cerbos, rego, report};

use std::cell::RefCell;
use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use portcullis::decide::{self, Reason};
use portcullis::worlds::{self, NOW};
use portcullis::model::Tenant;
use portcullis::snapshot::Snapshot;

pub const ENGINES: &[&str] = &["portcullis", "cedar", "casbin", "regorus"];
pub const WORLDS: &[&str] = &["S", "M"];
/// Requests of each kind (allow / deny) per world.
const PER_KIND: usize = 200;

type Req = (String, String, String);

fn selected(var: &str, all: &[&'static str]) -> Vec<&'static str> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => all
            .iter()
            .copied()
            .filter(|x| v.split(',').any(|s| s.trim().eq_ignore_ascii_case(x)))
            .collect(),
        _ => all.to_vec(),
    }
}

fn world(name: &str) -> Tenant {
    match name {
        "S" => worlds::world_s().remove(0),
        "M" => worlds::world_m().remove(0),
        other => panic!("unknown world {other}"),
    }
}

/// The application's action vocabulary (Cedar declares it; see README).
fn vocabulary() -> Vec<String> {
    worlds::RESOURCES
        .iter()
        .flat_map(|r| worlds::ACTIONS.iter().map(move |a| format!("{r}:{a}")))
        .collect()
}

/// `PER_KIND` allowed requests and `PER_KIND` denied for lack of a matching assignment (the
/// deny that has to look at every grant), from the deterministic request generator.
fn bench_requests(t: &Tenant, snap: &Snapshot) -> (Vec<Req>, Vec<Req>) {
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    for r in worlds::requests(t, 200_000, 42) {
        let d = decide::check(snap.view(), &r.0, &r.1, &r.2, NOW);
        if d.allowed && allow.len() < PER_KIND {
            allow.push(r);
        } else if d.reason == Reason::NoMatchingAssignment && deny.len() < PER_KIND {
            deny.push(r);
        }
        if allow.len() == PER_KIND && deny.len() == PER_KIND {
            break;
        }
    }
    (allow, deny)
}

/// One loaded engine.
enum Engine {
    Portcullis(Snapshot),
    Cedar(cedar::CedarWorld),
    Casbin(casbin_peer::CasbinWorld),
    Rego(RefCell<rego::RegoWorld>),
}

impl Engine {
    fn load(name: &str, t: &Tenant) -> Engine {
        match name {
            "portcullis" => Engine::Portcullis(Snapshot::build(t).unwrap()),
            "cedar" => Engine::Cedar(cedar::CedarWorld::load(t, &vocabulary()).unwrap()),
            "casbin" => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                Engine::Casbin(rt.block_on(casbin_peer::CasbinWorld::load(t)).unwrap())
            }
            "regorus" => Engine::Rego(RefCell::new(rego::RegoWorld::load(t).unwrap())),
            other => panic!("unknown engine {other}"),
        }
    }

    /// What the engine holds, in its own units.
    fn size(&self) -> String {
        match self {
            Engine::Portcullis(s) => format!("{} KiB archive", s.as_bytes().len() / 1024),
            Engine::Cedar(c) => format!("{} policies", c.policies.policies().count()),
            Engine::Casbin(c) => format!("{} rows", c.rows),
            Engine::Rego(_) => "1 policy + data".to_string(),
        }
    }

    #[inline]
    fn check(&self, r: &Req) -> bool {
        match self {
            Engine::Portcullis(s) => decide::check(s.view(), &r.0, &r.1, &r.2, NOW).allowed,
            Engine::Cedar(c) => c.check(&r.0, &r.1, &r.2, NOW),
            Engine::Casbin(c) => c.check(&r.0, &r.1, &r.2, NOW),
            Engine::Rego(g) => g.borrow_mut().check(&r.0, &r.1, &r.2, NOW),
        }
    }
}

/// Rough seconds per check, from a few checks.
fn probe(e: &Engine, reqs: &[Req]) -> f64 {
    let n = reqs.len().min(8);
    let t0 = Instant::now();
    for r in &reqs[..n] {
        black_box(e.check(r));
    }
    t0.elapsed().as_secs_f64() / n.max(1) as f64
}

/// `bench/out` of the repository (cargo runs benches in the package directory).
fn out_dir() -> String {
    format!("{}/../out", env!("CARGO_MANIFEST_DIR"))
}

fn out_file(name: &str) -> std::fs::File {
    std::fs::create_dir_all(out_dir()).unwrap();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{}/{name}", out_dir()))
        .unwrap()
}

fn criterion_mode() {
    let mut c = Criterion::default().configure_from_args();
    for w in selected("PEERS_WORLDS", WORLDS) {
        let t = world(w);
        let snap = Snapshot::build(&t).unwrap();
        let (allow, deny) = bench_requests(&t, &snap);
        drop(snap);
        for name in selected("PEERS_ENGINES", ENGINES) {
            let e = Engine::load(name, &t);
            let mut g = c.benchmark_group(format!("peers-{w}"));
            let per = probe(&e, &deny).max(probe(&e, &allow));
            if per > 1e-3 {
                // Slow engine: few, flat samples; bounded wall time.
                g.sampling_mode(SamplingMode::Flat)
                    .sample_size(10)
                    .warm_up_time(Duration::from_secs_f64((per * 3.0).min(5.0)))
                    .measurement_time(Duration::from_secs_f64((per * 20.0).clamp(2.0, 60.0)));
            } else {
                g.sample_size(30)
                    .warm_up_time(Duration::from_millis(500))
                    .measurement_time(Duration::from_secs(2));
            }
            for (kind, reqs) in [("allow", &allow), ("deny", &deny)] {
                g.bench_function(BenchmarkId::new(name, kind), |b| {
                    let mut i = 0usize;
                    b.iter(|| {
                        let r = &reqs[i % reqs.len()];
                        i += 1;
                        black_box(e.check(black_box(r)))
                    })
                });
            }
            g.finish();
        }
    }
    c.final_summary();
}

/// Every engine decides every bench request (allow and deny lists) plus a mixed sample of
/// generated requests (unknown subjects/resources, inactive users, guests …).
fn agree_mode() {
    let mut out = out_file("agree.jsonl");
    for w in selected("PEERS_WORLDS", WORLDS) {
        let t = world(w);
        let snap = Snapshot::build(&t).unwrap();
        let (allow, deny) = bench_requests(&t, &snap);
        let mixed: Vec<Req> = worlds::requests(&t, 200, 7);
        let mut all: Vec<Req> = allow.into_iter().chain(deny).chain(mixed).collect();
        all.dedup();
        let expected: Vec<bool> = all
            .iter()
            .map(|r| decide::check(snap.view(), &r.0, &r.1, &r.2, NOW).allowed)
            .collect();
        drop(snap);
        for name in selected("PEERS_ENGINES", ENGINES) {
            let e = Engine::load(name, &t);
            // Slow engines (Casbin at M: O(rows) per check) decide an evenly spread subset
            // that fits about a minute.
            let per = probe(&e, &all);
            let step = ((per * all.len() as f64 / 60.0).ceil() as usize).max(1);
            let mut bad = Vec::new();
            let mut cases = 0;
            for (r, want) in all.iter().zip(&expected).step_by(step) {
                cases += 1;
                if e.check(r) != *want {
                    bad.push(r.clone());
                }
            }
            eprintln!(
                "agree {w} {name}: {} of {cases} differ {:?}",
                bad.len(),
                &bad[..bad.len().min(3)]
            );
            writeln!(
                out,
                "{}",
                serde_json::json!({"world": w, "engine": name, "cases": cases, "differ": bad.len(),
                    "examples": &bad[..bad.len().min(3)]})
            )
            .unwrap();
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Each check timed alone (`Instant` around one call; its own cost, ~20-30 ns, is included), on
/// the allow list and on the deny list separately (one record per world, engine and kind).
fn p99_mode() {
    let budget = std::env::var("PEERS_P99_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0f64);
    let mut out = out_file("p99.jsonl");
    for w in selected("PEERS_WORLDS", WORLDS) {
        let t = world(w);
        let snap = Snapshot::build(&t).unwrap();
        let (allow, deny) = bench_requests(&t, &snap);
        drop(snap);
        for name in selected("PEERS_ENGINES", ENGINES) {
            let e = Engine::load(name, &t);
            for (kind, reqs) in [("allow", &allow), ("deny", &deny)] {
                let per = probe(&e, reqs).max(1e-9);
                // Half the budget per kind.
                let n = ((budget / 2.0 / per) as usize).clamp(50, 200_000);
                for r in reqs.iter().take(n.min(reqs.len()) / 4) {
                    black_box(e.check(r)); // warm-up
                }
                let mut ns: Vec<u64> = Vec::with_capacity(n);
                for i in 0..n {
                    let r = &reqs[i % reqs.len()];
                    let t0 = Instant::now();
                    black_box(e.check(black_box(r)));
                    ns.push(t0.elapsed().as_nanos() as u64);
                }
                ns.sort_unstable();
                let rec = serde_json::json!({
                    "world": w, "engine": name, "kind": kind, "checks": n,
                    "p50_ns": percentile(&ns, 0.50), "p99_ns": percentile(&ns, 0.99),
                    "p999_ns": percentile(&ns, 0.999), "max_ns": ns.last().copied().unwrap_or(0),
                });
                eprintln!("p99 {rec}");
                writeln!(out, "{rec}").unwrap();
            }
        }
    }
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Child: load one engine on one world and report memory.
fn mem_child() {
    let w = std::env::var("PEERS_WORLD").unwrap();
    let name = std::env::var("PEERS_ENGINE").unwrap();
    let t = world(&w);
    let rss0 = status_kb("VmRSS:");
    let t0 = Instant::now();
    let e = Engine::load(&name, &t);
    let load_s = t0.elapsed().as_secs_f64();
    let rss1 = status_kb("VmRSS:");
    let hwm = status_kb("VmHWM:");
    // One check so the engine is "in use" (lazy structures, caches).
    let r = worlds::requests(&t, 1, 3).remove(0);
    black_box(e.check(&r));
    let rss2 = status_kb("VmRSS:");
    println!(
        "{}",
        serde_json::json!({
            "world": w, "engine": name, "load_s": load_s, "size": e.size(),
            "rss_delta_kb": rss2.max(rss1).saturating_sub(rss0),
            "peak_delta_kb": hwm.saturating_sub(rss0),
        })
    );
}

fn mem_mode() {
    let exe = std::env::current_exe().unwrap();
    let mut out = out_file("mem.jsonl");
    for w in selected("PEERS_WORLDS", WORLDS) {
        for name in selected("PEERS_ENGINES", ENGINES) {
            let o = std::process::Command::new(&exe)
                .env("PEERS_MODE", "mem-child")
                .env("PEERS_WORLD", w)
                .env("PEERS_ENGINE", name)
                .output()
                .unwrap();
            let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
            eprintln!("mem {line}");
            if o.status.success() && !line.is_empty() {
                writeln!(out, "{line}").unwrap();
            } else {
                eprintln!("{}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
}

/// Under `cargo test --all-targets` (no `--bench` argument): a quick smoke test on world S
/// instead of the benchmarks — every engine loads and agrees with Portcullis on a few requests.
fn smoke_test() {
    let t = world("S");
    let snap = Snapshot::build(&t).unwrap();
    let reqs = worlds::requests(&t, 12, 5);
    for name in ENGINES {
        let e = Engine::load(name, &t);
        for r in &reqs {
            let want = decide::check(snap.view(), &r.0, &r.1, &r.2, NOW).allowed;
            assert_eq!(e.check(r), want, "{name} disagrees on {r:?}");
        }
    }
    println!("peers smoke test: {} engines agree on {} requests", ENGINES.len(), reqs.len());
}

/// Writes, per world, the Cerbos policies and config and the request bodies (Cerbos and
/// Portcullis, same requests in the same order, mixed allow/deny) under `bench/out/cerbos/`.
fn cerbos_prep() {
    let vocab: std::collections::BTreeSet<String> = vocabulary().into_iter().collect();
    for (wi, w) in selected("PEERS_WORLDS", WORLDS).into_iter().enumerate() {
        let t = world(w);
        let snap = Snapshot::build(&t).unwrap();
        let (allow, deny) = bench_requests(&t, &snap);
        let dir = format!("{}/cerbos/{w}", out_dir());
        std::fs::create_dir_all(format!("{dir}/policies")).unwrap();
        for (name, text) in cerbos::policies(&t, &vocab) {
            std::fs::write(format!("{dir}/policies/{name}"), text).unwrap();
        }
        let abs = std::fs::canonicalize(format!("{dir}/policies")).unwrap();
        let port = 3592 + 10 * wi;
        std::fs::write(
            format!("{dir}/config.yaml"),
            cerbos::config(
                &abs.to_string_lossy(),
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{}", port + 1),
            ),
        )
        .unwrap();
        let pep = cerbos::Pep::new(&t);
        // `portcullis serve` decides at the wall clock, so both servers are compared at "now".
        let now = portcullis::clock::unix_now();
        let mut cb = String::new();
        let mut pb = String::new();
        let mut ex = String::new();
        for (a, d) in allow.iter().zip(&deny) {
            for r in [a, d] {
                cb.push_str(&pep.body(&r.0, &r.1, &r.2, now));
                cb.push('\n');
                pb.push_str(
                    &serde_json::json!({"tenant": t.id, "subject": r.0, "action": r.1, "resource": r.2})
                        .to_string(),
                );
                pb.push('\n');
                let allowed = decide::check(snap.view(), &r.0, &r.1, &r.2, now).allowed;
                ex.push_str(&serde_json::json!({"action": r.1, "allowed": allowed}).to_string());
                ex.push('\n');
            }
        }
        std::fs::write(format!("{dir}/cerbos.jsonl"), cb).unwrap();
        std::fs::write(format!("{dir}/portcullis.jsonl"), pb).unwrap();
        std::fs::write(format!("{dir}/expected.jsonl"), ex).unwrap();
        std::fs::write(
            format!("{dir}/world.json"),
            portcullis::model::file::to_json(std::slice::from_ref(&t), &[]),
        )
        .unwrap();
        eprintln!("wrote {dir} (cerbos on 127.0.0.1:{port})");
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    match std::env::var("PEERS_MODE").as_deref() {
        Err(_) if !bench => smoke_test(),
        Ok("agree") => agree_mode(),
        Ok("p99") => p99_mode(),
        Ok("mem") => mem_mode(),
        Ok("mem-child") => mem_child(),
        Ok("cerbos-prep") => cerbos_prep(),
        Ok("report") => report::write(ENGINES, WORLDS, &out_dir()).unwrap(),
        _ => criterion_mode(),
    }
}
