//! Plugin costs: compile (upload), encode the input, call a pooled instance (trivial allow WAT
//! plugin; the shift-hours example when `plugins/build.sh` has built it).
//! Run: `cargo bench --bench plugins`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::plugin::{Limits, PluginHost, PluginInput};

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

criterion_group!(plugin_benches, benches);
criterion_main!(plugin_benches);
