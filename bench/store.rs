//! Store engines: sustained commits/s of small commits (1 op) and the time to load a tenant.
//!
//! `cargo bench --bench store` (release profile). PostgreSQL: `PORTCULLIS_TEST_PG` or
//! `postgres://postgres@127.0.0.1:5432/test` (`bash tests/run.sh` starts one); a throwaway schema
//! per run. Without a server the PostgreSQL benchmarks are skipped with a message.
//! `PORTCULLIS_BENCH_ROWS` sets the rows of the load benchmark (default 100000; 2000 when
//! `cargo test --all-targets` runs the benchmarks once as tests).
//!
//! - `store_commit/<engine>/sequential`: one task, each commit awaited before the next — the
//!   latency-bound rate (one fsync round per commit).
//! - `store_commit/<engine>/8_tenants`: eight tasks on eight tenants — throughput with commits in
//!   flight together (group commit for the embedded engine, parallel transactions for PostgreSQL).
//! - `store_load/<engine>/<rows>`: `Store::load` of one tenant with that many rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis::store::{self, Commit, Kind, RowOp, Store};
use serde_json::json;
use tokio::runtime::Runtime;

const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

struct Engine {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

fn engines(rt: &Runtime) -> Vec<Engine> {
    let dir = tempfile::tempdir().unwrap();
    let embedded = rt
        .block_on(store::open(&dir.path().display().to_string()))
        .unwrap();
    let mut out = vec![Engine {
        name: "embedded",
        store: embedded,
        _dir: Some(dir),
        schema: None,
    }];
    let url = std::env::var("PORTCULLIS_TEST_PG").unwrap_or_else(|_| PG_DEFAULT.to_string());
    let schema = format!("portcullis_bench_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    match rt.block_on(store::open(&format!("{url}{sep}schema={schema}"))) {
        Ok(pg) => out.push(Engine {
            name: "postgres",
            store: pg,
            _dir: None,
            schema: Some(schema),
        }),
        Err(e) => eprintln!(
            "\n*** PostgreSQL benchmarks SKIPPED: {e}. Run `bash tests/run.sh` to start it.\n"
        ),
    }
    out
}

fn one_op(tenant: &str, revision: u64) -> Commit {
    Commit {
        tenant: tenant.to_string(),
        revision,
        actor: "bench".into(),
        at_ms: revision as i64,
        action: "user.update".into(),
        target: "user:u".into(),
        ops: vec![RowOp::put(
            Kind::User,
            format!("u{}", revision % 1000),
            json!({"email": "u@example.com", "name": "U", "status": "active", "rev": revision}),
            None,
        )],
    }
}

fn bench_commits(c: &mut Criterion, rt: &Runtime, engines: &[Engine]) {
    let mut group = c.benchmark_group("store_commit");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(1));
    for e in engines {
        let next = AtomicU64::new(1);
        group.bench_function(format!("{}/sequential", e.name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let rev = next.fetch_add(1, Ordering::Relaxed);
                        e.store.commit(&one_op("seq", rev)).await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
        const TASKS: u64 = 8;
        let next: Arc<Vec<AtomicU64>> = Arc::new((0..TASKS).map(|_| AtomicU64::new(1)).collect());
        group.bench_function(format!("{}/8_tenants", e.name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    let handles: Vec<_> = (0..TASKS)
                        .map(|t| {
                            let store = Arc::clone(&e.store);
                            let next = Arc::clone(&next);
                            let n = iters / TASKS + u64::from(t < iters % TASKS);
                            tokio::spawn(async move {
                                let tenant = format!("par-{t}");
                                for _ in 0..n {
                                    let rev = next[t as usize].fetch_add(1, Ordering::Relaxed);
                                    store.commit(&one_op(&tenant, rev)).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn bench_load(c: &mut Criterion, rt: &Runtime, engines: &[Engine]) {
    // `cargo test --all-targets` runs each benchmark once, without `--bench`: keep that quick.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let rows: usize = std::env::var("PORTCULLIS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking { 100_000 } else { 2_000 });
    let mut group = c.benchmark_group("store_load");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(rows as u64));
    for e in engines {
        let tenant = "big";
        let started = Instant::now();
        rt.block_on(async {
            const PER_COMMIT: usize = 10_000;
            for (i, start) in (0..rows).step_by(PER_COMMIT).enumerate() {
                let ops = (start..rows.min(start + PER_COMMIT))
                    .map(|n| {
                        let kind = [Kind::User, Kind::Node, Kind::Assignment][n % 3];
                        RowOp::put(
                            kind,
                            format!("id-{n:08}"),
                            json!({"name": format!("Row {n}"), "parent": format!("id-{:08}", n / 8),
                                   "status": "active", "n": n}),
                            None,
                        )
                    })
                    .collect();
                let c = Commit {
                    ops,
                    ..one_op(tenant, i as u64 + 1)
                };
                e.store.commit(&c).await.unwrap();
            }
        });
        eprintln!(
            "{}: wrote {rows} rows in {:?} (commits of 10000 ops)",
            e.name,
            started.elapsed()
        );
        group.bench_function(format!("{}/{rows}", e.name), |b| {
            b.iter(|| {
                let loaded = rt.block_on(e.store.load(tenant)).unwrap().unwrap();
                assert_eq!(loaded.rows.len(), rows);
                loaded
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let engines = engines(&rt);
    bench_commits(c, &rt, &engines);
    bench_load(c, &rt, &engines);
    for e in &engines {
        if let Some(schema) = &e.schema {
            let url =
                std::env::var("PORTCULLIS_TEST_PG").unwrap_or_else(|_| PG_DEFAULT.to_string());
            rt.block_on(async {
                let (client, conn) = url
                    .parse::<tokio_postgres::Config>()
                    .unwrap()
                    .connect(tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                    .unwrap();
            });
        }
    }
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
