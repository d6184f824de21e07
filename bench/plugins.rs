//! Plugin costs: compile (upload), encode the input, call a pooled instance (trivial allow WAT
//! plugin; the shift-hours example when `plugins/build.sh` has built it), a fresh instance per
//! call (the isolated alternative), and whole checks with and without a plugin condition; then
//! the throughput of plugin checks on every core (printed, and appended to
//! `bench/out/plugins-throughput.txt`).
//! Run: `bash plugins/build.sh && cargo bench --bench plugins`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use portcullis::decide;
use portcullis::engine::Request;
use portcullis::model::file;
use portcullis::plugin::{Limits, PluginHost, PluginInput};
use portcullis::snapshot::{Registry, SnapshotGuard};

/// 2023-11-14 22:13:20 UTC: inside the 22–06 night shift.
const NOW: i64 = 1_700_000_000;

fn input(ctx: &serde_json::Value) -> PluginInput<'_> {
    PluginInput {
        now: 1_700_000_000,
        tenant: "femo",
        subject: "alice",
        action_resource: "asset",
        verb: "operate",
        resource: "press-7",
        role: "night-shift-22-06",
        scope: "hawthorne",
        path: &[
            ("organisation", "femo"),
            ("site", "hawthorne"),
            ("asset", "press-7"),
        ],
        attrs: &[("kind", "member"), ("email", "alice@femo.example")],
        context: Some(ctx),
        context_raw: None,
        host_context: &[],
    }
}

/// `wasm` with a custom section holding `n`: other bytes (another content hash), same code.
fn unique(wasm: &[u8], n: u64) -> Vec<u8> {
    let mut v = wasm.to_vec();
    v.extend_from_slice(&[0, 10, 1, b'n']);
    v.extend_from_slice(&n.to_le_bytes());
    v
}

fn benches(c: &mut Criterion) {
    let root = env!("CARGO_MANIFEST_DIR");
    let allow = wat::parse_file(format!("{root}/tests/fixtures/plugins/allow.wat")).unwrap();
    let shift = std::fs::read(format!("{root}/plugins/out/shift-hours.wasm")).ok();
    let host = PluginHost::new(Limits::default()).unwrap();
    let ctx = serde_json::json!({"channel": "console", "mfa_age": 42});
    let mut buf = Vec::new();

    let mut g = c.benchmark_group("plugin");
    g.bench_function("encode_input", |b| {
        b.iter(|| {
            input(&ctx).encode(&mut buf);
            black_box(buf.len())
        })
    });
    input(&ctx).encode(&mut buf);
    let mut n = 0u64;
    g.bench_function("compile_allow_wat", |b| {
        b.iter(|| {
            // New bytes each time (a custom section): no cache hit.
            n += 1;
            black_box(host.load("t", "allow", &unique(&allow, n)).unwrap());
        })
    });
    g.bench_function("load_cached_module_allow_wat", |b| {
        b.iter(|| {
            // The same bytes under a new tenant: the compiled module comes from the
            // content-hash cache; only the plugin's first instance is started.
            n += 1;
            black_box(host.load(&format!("t{n}"), "allow", &allow).unwrap());
            host.unload(&format!("t{n}"), None);
        })
    });
    let p = host.load("femo", "allow", &allow).unwrap();
    g.bench_function("call_allow", |b| {
        b.iter(|| black_box(p.call(black_box(&buf))))
    });
    if let Some(shift) = shift {
        g.bench_function("compile_shift_hours", |b| {
            b.iter(|| {
                n += 1;
                black_box(host.load("t", "shift", &unique(&shift, n)).unwrap());
            })
        });
        let p = host.load("femo", "shift", &shift).unwrap();
        g.bench_function("call_shift_hours", |b| {
            b.iter(|| black_box(p.call(black_box(&buf))))
        });
        g.bench_function("encode_and_call_shift_hours", |b| {
            b.iter(|| {
                input(&ctx).encode(&mut buf);
                black_box(p.call(&buf))
            })
        });
    } else {
        eprintln!(
            "plugins/out/shift-hours.wasm missing: run plugins/build.sh for the example bench"
        );
    }
    g.finish();
}

/// A tenant where alice holds the same permission three ways: a plain role, a role with the
/// trivial allow plugin, a role with the shift-hours example (when built); 5 levels deep.
fn world(dir: &std::path::Path, shift: bool) -> Registry {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        dir.join("allow.wasm"),
        wat::parse_file(format!("{root}/tests/fixtures/plugins/allow.wat")).unwrap(),
    )
    .unwrap();
    let mut y = String::from(
        "tenants:\n  - id: femo\n    plugins:\n      - { name: allow, path: allow.wasm }\n",
    );
    if shift {
        y.push_str(&format!(
            "      - {{ name: shift, path: {root}/plugins/out/shift-hours.wasm }}\n"
        ));
    }
    y.push_str("    nodes:\n      - { id: org, kind: organisation }\n      - { id: site, kind: site, parent: org }\n      - { id: bldg, kind: building, parent: site }\n      - { id: floor, kind: floor, parent: bldg }\n      - { id: press-7, kind: asset, parent: floor }\n");
    y.push_str("    roles:\n      - { id: plain-op, permissions: ['asset:operate'] }\n      - { id: allow-op, permissions: ['asset:calibrate'], plugin: allow }\n");
    if shift {
        y.push_str(
            "      - { id: night-shift-22-06, permissions: ['asset:start'], plugin: shift }\n",
        );
    }
    y.push_str("    users: [{ id: alice, email: alice@femo.example }]\n    assignments:\n      - { user: alice, role: plain-op, scope: site }\n      - { user: alice, role: allow-op, scope: site }\n");
    if shift {
        y.push_str("      - { user: alice, role: night-shift-22-06, scope: site }\n");
    }
    let path = dir.join("world.yaml");
    std::fs::write(&path, y).unwrap();
    let data = file::load_path(&path).unwrap();
    let reg = Registry::with_plugins(Arc::new(PluginHost::new(Limits::default()).unwrap()));
    portcullis::engine::install_all(&reg, &data).unwrap();
    reg
}

fn check(snap: &SnapshotGuard, action: &str, ctx: Option<&str>) -> decide::Decision {
    Request {
        subject: "alice",
        action,
        now: NOW,
        context: ctx,
        sso: None,
        channel: None,
    }
    .check(snap, "press-7")
}

fn checks(c: &mut Criterion) {
    let shift = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plugins/out/shift-hours.wasm"
    ))
    .exists();
    let dir = tempfile::tempdir().unwrap();
    let reg = world(dir.path(), shift);
    let snap = reg.get("femo").unwrap();
    assert!(check(&snap, "asset:operate", None).allowed);
    assert!(check(&snap, "asset:calibrate", None).allowed);
    let mut g = c.benchmark_group("check");
    g.bench_function("plain_role", |b| {
        b.iter(|| black_box(check(&snap, black_box("asset:operate"), None)))
    });
    g.bench_function("allow_plugin_role", |b| {
        b.iter(|| black_box(check(&snap, black_box("asset:calibrate"), None)))
    });
    g.bench_function("allow_plugin_role_with_context", |b| {
        b.iter(|| {
            black_box(check(
                &snap,
                black_box("asset:calibrate"),
                Some(r#"{"channel":"console","mfa_age":42}"#),
            ))
        })
    });
    if shift {
        assert!(
            check(&snap, "asset:start", None).allowed,
            "inside the night shift"
        );
        g.bench_function("shift_hours_plugin_role", |b| {
            b.iter(|| black_box(check(&snap, black_box("asset:start"), None)))
        });
    }
    g.finish();

    // The isolated alternative: no idle instances kept, a fresh instance per call.
    let fresh_host = PluginHost::new(Limits {
        idle_per_plugin: 0,
        ..Limits::default()
    })
    .unwrap();
    let allow = wat::parse_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/plugins/allow.wat"
    ))
    .unwrap();
    let p = fresh_host.load("femo", "allow", &allow).unwrap();
    let ctx = serde_json::json!({"channel": "console"});
    let mut buf = Vec::new();
    input(&ctx).encode(&mut buf);
    let mut g = c.benchmark_group("plugin");
    g.bench_function("call_allow_fresh_instance", |b| {
        b.iter(|| black_box(p.call(black_box(&buf))))
    });
    g.finish();
}

/// Checks per second through the allow plugin on every core (each thread its own requests).
fn throughput() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(world(dir.path(), false));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let secs = 3.0;
    let mut lines = Vec::new();
    for (label, action) in [
        ("plain role", "asset:operate"),
        ("allow plugin role", "asset:calibrate"),
    ] {
        let stop = Instant::now() + Duration::from_secs_f64(secs);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    let snap = reg.get("femo").unwrap();
                    let mut n = 0u64;
                    while Instant::now() < stop {
                        for _ in 0..1000 {
                            n += u64::from(check(&snap, action, None).allowed);
                        }
                    }
                    n
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let line = format!(
            "throughput, {label}, {threads} threads: {:.0} checks/s",
            total as f64 / secs
        );
        eprintln!("{line}");
        lines.push(line);
    }
    // Another tenant's checks while one tenant's plugin loops until its deadline, on one of
    // the cores: latency of batches of 100 plain checks, without and with the spinner.
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        dir.path().join("loop.wasm"),
        wat::parse_file(format!("{root}/tests/fixtures/plugins/loop.wat")).unwrap(),
    )
    .unwrap();
    let evil = dir.path().join("evil.yaml");
    std::fs::write(&evil, "tenants:\n  - id: evil\n    plugins: [{ name: spin, path: loop.wasm }]\n    nodes: [{ id: press-7, kind: asset }]\n    roles: [{ id: r, permissions: ['asset:operate'], plugin: spin }]\n    users: [{ id: alice, email: a@x.example }]\n    assignments: [{ user: alice, role: r, scope: press-7 }]\n").unwrap();
    portcullis::engine::install_all(&reg, &file::load_path(&evil).unwrap()).unwrap();
    let batches = |reg: &Registry| {
        let snap = reg.get("femo").unwrap();
        let mut v: Vec<f64> = (0..20_000)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..100 {
                    black_box(check(&snap, "asset:operate", None));
                }
                t.elapsed().as_secs_f64() * 1e9 / 100.0
            })
            .collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let (q50, q99) = batches(&reg);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinner = {
        let (reg, stop) = (reg.clone(), stop.clone());
        std::thread::spawn(move || {
            let snap = reg.get("evil").unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += u64::from(!check(&snap, "asset:operate", None).allowed);
            }
            n
        })
    };
    let (h50, h99) = batches(&reg);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let vetoed = spinner.join().unwrap();
    let line = format!(
        "other tenant's plain check, ns per check (batches of 100): quiet p50 {q50:.0} p99 {q99:.0}; while a looping plugin runs on another core ({vetoed} calls, all denied at the deadline): p50 {h50:.0} p99 {h99:.0}"
    );
    eprintln!("{line}");
    lines.push(line);
    lines
}

/// A module of `funcs` functions of `ops` straight-line operations (7 bytes of code each).
fn straight_line(funcs: usize, ops: usize) -> Vec<u8> {
    let body = "local.get 0 local.get 1 i32.add local.set 0\n".repeat(ops);
    let mut m = String::from(
        r#"(module (memory (export "memory") 1)
        (func (export "portcullis_abi_version") (result i32) (i32.const 1))
        (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "portcullis_evaluate") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    for _ in 0..funcs {
        m.push_str(&format!(
            "(func (param i32 i32) (result i32) {body} local.get 0)"
        ));
    }
    m.push(')');
    wat::parse_str(m).unwrap()
}

/// What compiling costs at the compile budget's bounds (one compile each: printed).
fn compile_bounds() -> Vec<String> {
    let mut lines = Vec::new();
    let unbounded = PluginHost::new(Limits {
        max_code_bytes: 4 << 20,
        max_function_bytes: 4 << 20,
        ..Limits::default()
    })
    .unwrap();
    let ops = (1 << 20) / 7;
    for (label, funcs, ops) in [
        (
            "1 MiB of code in 4 functions of 256 KiB (the default bounds)",
            4,
            ops / 4,
        ),
        ("1 MiB of code in one function (refused by default)", 1, ops),
    ] {
        let wasm = straight_line(funcs, ops);
        let t = Instant::now();
        let p = unbounded.load("bench", label, &wasm).unwrap();
        let line = format!(
            "compile, {label}: {:.0} ms ({} bytes)",
            t.elapsed().as_secs_f64() * 1e3,
            wasm.len()
        );
        drop(p);
        eprintln!("{line}");
        lines.push(line);
    }
    let bounded = PluginHost::new(Limits::default()).unwrap();
    let wasm = straight_line(1, ops);
    let t = Instant::now();
    let refused = bounded.load("bench", "big", &wasm).is_err();
    let line = format!(
        "compile budget: the one-function module refused={refused} in {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    eprintln!("{line}");
    lines.push(line);
    lines
}

/// Another tenant's check latency while a looping plugin is hammered with 1,000-item batches
/// on every core, through the engine and the plugin pool as the server runs them: a
/// multi-threaded tokio runtime (one worker per core); each hostile task runs
/// `engine::plugin_work` (budget, tenant slots, off the reactor); the victim's checks are tokio
/// tasks timed from spawn to completion. Quiet vs hammered, p50 and p99.
fn isolation() -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        dir.path().join("loop.wasm"),
        wat::parse_file(format!("{root}/tests/fixtures/plugins/loop.wat")).unwrap(),
    )
    .unwrap();
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, "tenants:\n  - id: evil\n    plugins: [{ name: spin, path: loop.wasm }]\n    nodes: [{ id: press-7, kind: asset }]\n    roles: [{ id: r, permissions: ['asset:operate'], plugin: spin }]\n    users: [{ id: alice, email: a@x.example }]\n    assignments: [{ user: alice, role: r, scope: press-7 }]\n  - id: femo\n    nodes: [{ id: press-7, kind: asset }]\n    roles: [{ id: r, permissions: ['asset:operate'] }]\n    users: [{ id: alice, email: a@x.example }]\n    assignments: [{ user: alice, role: r, scope: press-7 }]\n").unwrap();
    // The breaker off: every batch really runs the loop until its budget is spent.
    let limits = Limits {
        breaker_failures: 0,
        ..Limits::default()
    };
    let reg = Arc::new(portcullis::engine::plugin_registry_with(limits));
    portcullis::engine::install_all(&reg, &file::load_path(&path).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    let victim = |reg: Arc<Registry>| {
        rt.block_on(async move {
            let mut v = Vec::with_capacity(4000);
            for _ in 0..4000 {
                let reg = reg.clone();
                let t = Instant::now();
                tokio::spawn(async move {
                    let snap = reg.get("femo").unwrap();
                    black_box(check(&snap, "asset:operate", None));
                })
                .await
                .unwrap();
                v.push(t.elapsed().as_secs_f64() * 1e6);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() * 99 / 100])
        })
    };
    let (q50, q99) = victim(reg.clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let busy = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hammers: Vec<_> = (0..threads * 2)
        .map(|_| {
            let (reg, stop, done, busy) = (reg.clone(), stop.clone(), done.clone(), busy.clone());
            rt.spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let snap = reg.get("evil").unwrap();
                    let r = portcullis::engine::plugin_work(&reg, "evil", || {
                        (0..1000)
                            .filter(|_| !check(&snap, "asset:operate", None).allowed)
                            .count()
                    });
                    match r {
                        Ok(_) => {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::task::yield_now().await;
                        }
                        Err(_) => {
                            // 503 plugin_busy: a client would see it after a round trip.
                            busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let t = Instant::now();
    let (h50, h99) = victim(reg.clone());
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        for h in hammers {
            let _ = h.await;
        }
    });
    let line = format!(
        "isolation, other tenant's check through the runtime (spawn to completion, µs): quiet p50 {q50:.1} p99 {q99:.1}; while {} tasks hammer a looping plugin with 1,000-item batches ({:.0} batches/s answered within the 50 ms budget, {:.0}/s refused plugin_busy): p50 {h50:.1} p99 {h99:.1} (p99 ratio {:.2})",
        threads * 2,
        done.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs,
        busy.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs,
        h99 / q99
    );
    eprintln!("{line}");
    vec![line]
}

criterion_group!(plugin_benches, benches, checks);

/// Whether the printed measurement `name` runs: no name filter given, or one that `name`
/// contains (`cargo bench --bench plugins -- isolation`).
fn wants(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn main() {
    plugin_benches();
    Criterion::default().configure_from_args().final_summary();
    let mut lines = Vec::new();
    if wants("throughput") {
        lines.extend(throughput());
    }
    if wants("isolation") {
        lines.extend(isolation());
    }
    if wants("compile_bounds") {
        lines.extend(compile_bounds());
    }
    if !lines.is_empty() {
        let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out"));
        let _ = std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/bench/out/plugins-throughput.txt"
            ),
            lines.join("\n") + "\n",
        );
    }
}
