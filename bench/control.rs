//! Control-plane benchmark (harness = false): write → visible latency, sustained admin writes per
//! store engine, and snapshot rebuild cost as a tenant grows.
//!
//! `cargo bench --bench control` (PostgreSQL at `PORTCULLIS_BENCH_PG`, default
//! `postgres://postgres@127.0.0.1:5432/test`; set it to `off` to skip that engine).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::control::rules::{self, AssignmentCreate, UserCreate};
use portcullis::control::{follower, ControlPlane};
use portcullis::model::file::DataFile;
use portcullis::model::{Assignment, Principal, UserKind};
use portcullis::snapshot::{Compiled, Registry, Snapshot};
use portcullis::worlds;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn tenant_with(assignments: usize) -> portcullis::model::Tenant {
    let spec = worlds::TenantSpec {
        nodes: (assignments / 2).clamp(100, 200_000),
        users: (assignments / 5).clamp(50, 100_000),
        groups: 200.min(assignments / 10 + 1),
        assignments,
        custom_roles: 20,
    };
    worlds::tenant("b", spec, 7)
}

async fn open_cp(
    location: &str,
    t: &portcullis::model::Tenant,
) -> (Arc<ControlPlane>, Arc<Registry>) {
    let store = portcullis::store::open(location).await.unwrap();
    let cp = Arc::new(ControlPlane::open(store).await.unwrap());
    cp.seed(
        &DataFile {
            tenants: vec![t.clone()],
            tests: vec![],
        },
        "bench",
    )
    .await
    .unwrap();
    let reg = Arc::new(Registry::new());
    follower::start(cp.clone(), reg.clone()).await;
    (cp, reg)
}

/// Writes one assignment at a time and waits until a check sees it. Returns (write → visible,
/// write → acknowledged (durable)) latencies in milliseconds.
async fn write_to_visible(
    cp: &ControlPlane,
    reg: &Registry,
    t: &portcullis::model::Tenant,
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut lat = Vec::with_capacity(n);
    let mut acks = Vec::with_capacity(n);
    let mut changes = reg.subscribe();
    for i in 0..n {
        let user = &t.users[i % t.users.len()].id;
        let node = &t.nodes[(i * 7919) % t.nodes.len()].id;
        let req = AssignmentCreate {
            user: Some(user.clone()),
            group: None,
            role: "viewer".into(),
            scope: node.clone(),
            expires_at: None,
        };
        let start = Instant::now();
        let w = match cp
            .write("b", "bench", None, |d| {
                rules::create_assignment(d, &req, "bench", worlds::NOW)
            })
            .await
        {
            Ok(w) => w,
            Err(_) => continue, // duplicate (principal, role, scope): skip
        };
        acks.push(start.elapsed().as_secs_f64() * 1e3);
        while reg.get("b").map(|s| s.revision()).unwrap_or(0) < w.revision {
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
        lat.push(start.elapsed().as_secs_f64() * 1e3);
        // A check against the new snapshot (what "visible" means).
        let snap = reg.get("b").unwrap();
        assert!(snap.view().user_index.get(user).is_some());
    }
    (lat, acks)
}

/// Where a full rebuild's time goes for one tenant: the document → model copy, then each
/// build phase, then the install. Medians of `reps` runs, milliseconds.
async fn follower_phases(cp: &ControlPlane, reg: &Registry, reps: usize) -> String {
    let doc = cp.doc("b").await.unwrap();
    let mut cols: Vec<(String, Vec<f64>)> = Vec::new();
    let mut add = |k: &str, v: f64| match cols.iter_mut().find(|c| c.0 == k) {
        Some(c) => c.1.push(v),
        None => cols.push((k.to_string(), vec![v])),
    };
    for _ in 0..reps {
        let s = Instant::now();
        let t = doc.to_tenant().unwrap();
        add("doc→model copy", s.elapsed().as_secs_f64() * 1e3);
        for (k, v) in portcullis::snapshot::profile_build(&t).unwrap() {
            add(k, v);
        }
        let snap = Snapshot::build(&t).unwrap();
        let s = Instant::now();
        reg.install(snap);
        add("install", s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        drop(t);
        add("drop model", s.elapsed().as_secs_f64() * 1e3);
    }
    cols.iter_mut()
        .map(|(k, v)| format!("{k} {:.2}", pct(v, 0.5)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sustained single-entity writes per second (users), 16 concurrent writers, no waiting for
/// visibility.
async fn writes_per_second(cp: Arc<ControlPlane>, secs: f64) -> f64 {
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..16)
        .map(|k| {
            let cp = cp.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                let mut i = 0u64;
                while Instant::now() < stop {
                    let id = format!("w{k}-{i}");
                    let req = UserCreate {
                        id: Some(id.clone()),
                        first_name: None,
                        last_name: None,
                        password: None,
                        logout: None,
                        groups: Vec::new(),
                        email: format!("{id}@b.example"),
                        name: None,
                        kind: UserKind::Member,
                        status: None,
                    };
                    if cp
                        .write("b", "bench", None, |d| {
                            rules::create_user(d, &req, worlds::NOW, &Default::default())
                        })
                        .await
                        .is_ok()
                    {
                        done += 1;
                    }
                    i += 1;
                }
                done
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap_or(0);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = std::env::var("PORTCULLIS_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut report = String::new();

    // 1. Rebuild cost as a tenant grows.
    report.push_str("| assignments | model copy (ms) | snapshot build (ms) | rebuild after one assignment change (ms) | archive bytes/assignment |\n|---:|---:|---:|---:|---:|\n");
    for &n in &[100usize, 10_000, 100_000, 1_000_000] {
        let t = tenant_with(n);
        let s = Instant::now();
        let copy = t.clone();
        let copy_ms = s.elapsed().as_secs_f64() * 1e3;
        let mut builds = Vec::new();
        let reps = if n >= 1_000_000 { 2 } else { 5 };
        let mut bytes = 0;
        for _ in 0..reps {
            let s = Instant::now();
            let snap = Snapshot::build(&copy).unwrap();
            builds.push(s.elapsed().as_secs_f64() * 1e3);
            bytes = snap.as_bytes().len();
        }
        let b = pct(&mut builds, 0.5);
        // A compiled tenant after one more assignment (what the follower does for an
        // assignment-only commit).
        let mut c = Compiled::new(&copy).unwrap();
        c.snapshot().unwrap();
        let mut incs = Vec::new();
        for i in 0..reps * 4 {
            let a = Assignment {
                principal: Principal::User(copy.users[(i * 13) % copy.users.len()].id.clone()),
                role: "viewer".into(),
                scope: copy.nodes[(i * 7919 + 1) % copy.nodes.len()].id.clone(),
                assigned_by: Some("bench".into()),
                assigned_at: Some(worlds::NOW),
                expires_at: None,
            };
            let s = Instant::now();
            assert!(c.apply(&[], &[a], copy.revision + 1 + i as u64));
            let snap = c.snapshot().unwrap();
            incs.push(s.elapsed().as_secs_f64() * 1e3);
            drop(snap);
        }
        let inc = pct(&mut incs, 0.5);
        report.push_str(&format!(
            "| {n} | {copy_ms:.1} | {b:.1} | {inc:.2} | {:.1} |\n",
            bytes as f64 / n as f64
        ));
        eprintln!(
            "rebuild {n}: copy {copy_ms:.1} ms, build {b:.1} ms, after one assignment {inc:.2} ms"
        );
    }

    // 2. Write → visible, and sustained writes, per engine.
    report.push_str("\n| engine | tenant assignments | write→visible p50 (ms) | p99 (ms) | max (ms) | write acknowledged p50 / p99 (ms) | sustained writes/s (16 writers) |\n|---|---:|---:|---:|---:|---:|---:|\n");
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    let mut engines: Vec<(String, String)> =
        vec![("embedded".into(), dir.to_string_lossy().into_owned())];
    if pg != "off" {
        let schema = format!("bench_{}", std::process::id());
        let sep = if pg.contains('?') { '&' } else { '?' };
        engines.push(("postgres".into(), format!("{pg}{sep}schema={schema}")));
    }
    let mut phase_lines = String::from("\nPhases of one full rebuild (median of 3, ms):\n");
    for (name, loc) in engines {
        for &n in &[10_000usize, 100_000] {
            let t = tenant_with(n);
            let loc = if name == "embedded" {
                format!("{loc}-{n}")
            } else {
                format!("{loc}_{n}")
            };
            let r = rt.block_on(async {
                let (cp, reg) = open_cp(&loc, &t).await;
                let _ = write_to_visible(&cp, &reg, &t, 20).await; // warm-up
                let (mut lat, mut acks) = write_to_visible(&cp, &reg, &t, 200).await;
                let p50 = pct(&mut lat, 0.5);
                let p99 = pct(&mut lat, 0.99);
                let max = pct(&mut lat, 1.0);
                let ack = (pct(&mut acks, 0.5), pct(&mut acks, 0.99));
                let phases = follower_phases(&cp, &reg, 3).await;
                let wps = writes_per_second(cp.clone(), 5.0).await;
                (p50, p99, max, wps, ack, phases)
            });
            eprintln!(
                "{name} {n}: p50 {:.2} ms p99 {:.2} ms max {:.2} ms, {:.0} writes/s; \
                 write acknowledged p50 {:.2} p99 {:.2}; follower phases (ms): {}",
                r.0, r.1, r.2, r.3, r.4 .0, r.4 .1, r.5
            );
            report.push_str(&format!(
                "| {name} | {n} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {:.0} |\n",
                r.0, r.1, r.2, r.4 .0, r.4 .1, r.3
            ));
            phase_lines.push_str(&format!("- {name} {n}: {}\n", r.5));
            if name == "embedded" {
                let _ = std::fs::remove_dir_all(&loc);
            } else if let Some(schema) = loc.rsplit("schema=").next() {
                // Leave the database as we found it.
                let schema = schema.split('&').next().unwrap_or(schema).to_string();
                let base = pg.clone();
                rt.block_on(async move {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .await;
                    }
                });
            }
        }
    }
    report.push_str(&phase_lines);
    println!("{report}");
}
