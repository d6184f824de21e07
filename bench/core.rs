//! Criterion benchmarks of the core engine: snapshot build, check, filter, scopes, explain.
//!
//! World L is generated and built once per process (about a minute); every group shares it.
//! Run with `cargo bench --bench core`; `bash bench/core.sh` runs this and the latency harness
//! and writes `bench/RESULTS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common.rs"]
mod common;

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis::decide;
use portcullis::engine::Request;
use portcullis::snapshot::Snapshot;
use portcullis::worlds::{self, NOW};

use common::{Pool, World};

/// Requests per check pool: enough that consecutive checks touch unrelated memory.
const POOL: usize = 400_000;

struct Fixture {
    world: World,
    allow: Pool,
    deny: Pool,
}

fn fixture(name: &str) -> &'static Fixture {
    static S: OnceLock<Fixture> = OnceLock::new();
    static L: OnceLock<Fixture> = OnceLock::new();
    let (cell, load): (_, fn() -> World) = match name {
        "S" => (&S, common::load_s),
        _ => (&L, common::load_l),
    };
    cell.get_or_init(|| {
        let world = load();
        let pool = common::requests(&world, POOL, 7);
        let (allow, deny) = common::classify(&world, &pool, NOW);
        eprintln!(
            "[{name}] request pool: {} allowed, {} denied",
            allow.len(),
            deny.len()
        );
        Fixture { world, allow, deny }
    })
}

fn bench_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    let s = worlds::world_s().remove(0);
    g.throughput(Throughput::Elements(s.assignments.len() as u64));
    g.bench_function("S", |b| b.iter(|| Snapshot::build(black_box(&s)).unwrap()));
    drop(s);
    let largest = worlds::world_l().next().unwrap();
    g.throughput(Throughput::Elements(largest.assignments.len() as u64));
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("L-largest", |b| {
        b.iter(|| Snapshot::build(black_box(&largest)).unwrap())
    });
    g.finish();
}

/// End to end as the server does it: registry lookup by tenant id, then the engine's door
/// (`engine::Request::check`, plugin conditions wired). `check-decide/*` is the same pool
/// through the bare `decide::check` (no conditions), so one run shows what the door costs.
fn run_checks(c: &mut Criterion, world: &str) {
    let f = fixture(world);
    let mut g = c.benchmark_group("check");
    g.measurement_time(Duration::from_secs(4));
    for (kind, pool) in [("allow", &f.allow), ("deny", &f.deny)] {
        g.bench_function(BenchmarkId::new(world, kind), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let [t, s, a, r] = pool.get(i);
                i = if i + 1 == pool.len() { 0 } else { i + 1 };
                let snap = f.world.registry.get(t).unwrap();
                let req = Request {
                    subject: s,
                    action: a,
                    now: NOW,
                    context: None,
                    sso: None,
                    channel: None,
                };
                black_box(req.check(&snap, r))
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("check-decide");
    g.measurement_time(Duration::from_secs(4));
    for (kind, pool) in [("allow", &f.allow), ("deny", &f.deny)] {
        g.bench_function(BenchmarkId::new(world, kind), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let [t, s, a, r] = pool.get(i);
                i = if i + 1 == pool.len() { 0 } else { i + 1 };
                let snap = f.world.registry.get(t).unwrap();
                black_box(decide::check(snap.view(), s, a, r, NOW))
            })
        });
    }
    g.finish();
}

fn bench_check(c: &mut Criterion) {
    run_checks(c, "S");
    run_checks(c, "L");
}

fn bench_filter(c: &mut Criterion) {
    const BATCH: usize = 1_000;
    let f = fixture("L");
    let batches = common::filter_batches(&f.world, 256, BATCH, NOW, 11);
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("L/1000", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let q = &batches[i];
            i = (i + 1) % batches.len();
            let snap = f.world.registry.get(&q.tenant).unwrap();
            let mut allowed = 0usize;
            let d = decide::filter(
                snap.view(),
                &q.subject,
                &q.action,
                &q.resources,
                NOW,
                |_| allowed += 1,
            );
            black_box((d, allowed))
        })
    });
    g.finish();
}

fn bench_scopes(c: &mut Criterion) {
    let mut g = c.benchmark_group("scopes");
    g.measurement_time(Duration::from_secs(3));
    for world in ["S", "L"] {
        let f = fixture(world);
        let pool = &f.allow;
        g.bench_function(world, |b| {
            let mut i = 0usize;
            let mut out = Vec::new();
            b.iter(|| {
                let [t, s, a, _] = pool.get(i);
                i = if i + 1 == pool.len() { 0 } else { i + 1 };
                let snap = f.world.registry.get(t).unwrap();
                black_box(decide::scopes(snap.view(), s, a, NOW, &mut out));
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn bench_explain(c: &mut Criterion) {
    let f = fixture("S");
    let mut g = c.benchmark_group("explain");
    g.measurement_time(Duration::from_secs(3));
    for (kind, pool) in [("allow", &f.allow), ("deny", &f.deny)] {
        g.bench_function(BenchmarkId::new("S", kind), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let [t, s, a, r] = pool.get(i);
                i = if i + 1 == pool.len() { 0 } else { i + 1 };
                let snap = f.world.registry.get(t).unwrap();
                black_box(decide::explain(snap.view(), s, a, r, NOW))
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_build,
    bench_check,
    bench_filter,
    bench_scopes,
    bench_explain
);
criterion_main!(benches);
