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
    }
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
            // A new tenant each time: no cache hit.
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
                black_box(host.load(&format!("t{n}"), "shift", &shift).unwrap());
                host.unload(&format!("t{n}"), None);
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
fn throughput() {
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
    let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out"));
    let _ = std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/bench/out/plugins-throughput.txt"
        ),
        lines.join("\n") + "\n",
    );
}

criterion_group!(plugin_benches, benches, checks);

fn main() {
    plugin_benches();
    Criterion::default().configure_from_args().final_summary();
    throughput();
}
