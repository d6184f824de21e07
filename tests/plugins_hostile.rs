//! Hostile plugins (WAT fixtures under tests/fixtures/plugins): each is refused at load or denies
//! at call within its deadline, and other tenants' plugins keep working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use portcullis::decide::Verdict;
use portcullis::engine::conditions::verdict;
use portcullis::plugin::{Limits, ModuleError, Outcome, PluginHost, PluginInput};

fn wasm(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/plugins/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn input() -> Vec<u8> {
    let ctx = serde_json::json!({"channel": "console"});
    let mut b = Vec::new();
    PluginInput {
        now: 1_700_000_000,
        tenant: "acme",
        subject: "alice",
        action_resource: "asset",
        verb: "read",
        resource: "press-7",
        role: "operator",
        scope: "acme",
        path: &[("organisation", "acme"), ("asset", "press-7")],
        attrs: &[("kind", "member"), ("email", "alice@acme.example")],
        context: Some(&ctx),
        context_raw: None,
    }
    .encode(&mut b);
    b
}

fn host() -> PluginHost {
    PluginHost::new(Limits::default()).unwrap()
}

/// Generous bound for "within the deadline": deadline + scheduling noise on a loaded 2-core box.
fn bound(h: &PluginHost) -> Duration {
    h.limits().deadline() + Duration::from_millis(250)
}

/// Call a loaded plugin; it must deny with `want` (one of) within the bound, twice (the second
/// call runs on a fresh instance since the failed one is dropped).
fn denies(h: &PluginHost, tenant: &str, fixture: &str, want: &[Outcome]) {
    let p = h.load(tenant, fixture, &wasm(fixture)).unwrap();
    let input = input();
    for _ in 0..2 {
        let t = Instant::now();
        let o = p.call(&input);
        let took = t.elapsed();
        assert!(
            want.contains(&o),
            "{fixture}: got {o:?}, want one of {want:?}"
        );
        assert_eq!(verdict(o), Verdict::Deny, "{fixture}");
        assert!(took < bound(h), "{fixture}: took {took:?}");
    }
    assert_eq!(want.iter().map(|w| p.stats().count(*w)).sum::<u64>(), 2);
}

fn refused(h: &PluginHost, fixture: &str) -> ModuleError {
    let t = Instant::now();
    let e = match h.load("acme", fixture, &wasm(fixture)) {
        Ok(_) => panic!("{fixture}: loaded"),
        Err(e) => e,
    };
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{fixture}: load took {:?}",
        t.elapsed()
    );
    eprintln!("{fixture}: {e}");
    e
}

#[test]
fn well_behaved_plugin_allows_with_reason() {
    let h = host();
    let p = h.load("acme", "allow", &wasm("allow")).unwrap();
    let mut reason = String::new();
    assert_eq!(p.call_with_reason(&input(), &mut reason), Outcome::Allow);
    assert_eq!(reason, "ok");
    eprintln!("compile time of allow.wat: {:?}", p.compile_time());
    // Same bytes: cached, same plugin.
    let again = h.load("acme", "allow", &wasm("allow")).unwrap();
    assert!(std::sync::Arc::ptr_eq(&p, &again));
    assert_eq!(p.stats().instantiations(), 1, "instances are reused");
    // Call latency on a pooled instance (debug profile here; see bench/plugins.rs for release).
    let input = input();
    let n = 10_000u32;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(p.call(&input), Outcome::Allow);
    }
    eprintln!(
        "pooled call (debug profile): {:?} per call",
        t.elapsed() / n
    );
    assert_eq!(p.stats().instantiations(), 1);
}

#[test]
fn infinite_loop_times_out() {
    // Unlimited fuel: the epoch deadline must stop it.
    let h = PluginHost::new(Limits {
        fuel: u64::MAX,
        ..Limits::default()
    })
    .unwrap();
    denies(&h, "acme", "loop", &[Outcome::Timeout]);
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let h = PluginHost::new(Limits {
        fuel: 100_000,
        deadline_ticks: 10_000,
        ..Limits::default()
    })
    .unwrap();
    denies(&h, "acme", "loop", &[Outcome::OutOfFuel]);
}

#[test]
fn memory_bomb_hits_the_cap() {
    denies(&host(), "acme", "membomb", &[Outcome::MemoryLimit]);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    denies(&host(), "acme", "stack", &[Outcome::StackOverflow]);
}

#[test]
fn huge_reason_denies() {
    denies(&host(), "acme", "huge_reason", &[Outcome::ReasonTooLong]);
}

#[test]
fn bad_verdict_denies() {
    denies(&host(), "acme", "bad_result", &[Outcome::BadResult]);
}

#[test]
fn buffer_outside_memory_denies() {
    let h = host();
    let p = h.load("acme", "bad_alloc", &wasm("bad_alloc")).unwrap();
    assert_eq!(p.call(&input()), Outcome::BadAlloc);
}

#[test]
fn trap_denies() {
    denies(&host(), "acme", "trap", &[Outcome::Trap]);
}

#[test]
fn oversized_input_denies_without_calling() {
    let h = host();
    let p = h.load("acme", "allow", &wasm("allow")).unwrap();
    let big = vec![0u8; h.limits().max_input_bytes + 1];
    assert_eq!(p.call(&big), Outcome::InputTooLarge);
}

#[test]
fn wrong_abi_version_is_refused() {
    let e = refused(&host(), "wrong_abi");
    assert!(matches!(e, ModuleError::AbiVersion { got: 2, .. }), "{e}");
}

#[test]
fn missing_export_is_refused() {
    let e = refused(&host(), "missing_export");
    assert!(
        matches!(
            e,
            ModuleError::MissingExport {
                export: "portcullis_evaluate",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn wasi_import_is_refused() {
    let e = refused(&host(), "wasi");
    assert!(
        e.to_string().contains("wasi_snapshot_preview1.fd_write"),
        "{e}"
    );
    assert!(matches!(e, ModuleError::ForbiddenImport { .. }));
}

#[test]
fn looping_start_function_is_refused_in_time() {
    let e = refused(&host(), "start_loop");
    assert!(matches!(e, ModuleError::Instantiate { .. }), "{e}");
    // Whichever limit hits first.
    let m = e.to_string();
    assert!(m.contains("timeout") || m.contains("out_of_fuel"), "{e}");
}

#[test]
fn oversized_memory_is_refused() {
    // Refused by our check or already by the pooling allocator's slot size at compile.
    let e = refused(&host(), "big_memory");
    assert!(
        matches!(
            e,
            ModuleError::MemoryTooLarge { .. } | ModuleError::Invalid { .. }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("memory"), "{e}");
}

#[test]
fn oversized_and_garbage_modules_are_refused() {
    let h = host();
    let big = vec![0u8; h.limits().max_module_bytes + 1];
    assert!(matches!(
        h.load("acme", "big", &big),
        Err(ModuleError::TooLarge { .. })
    ));
    assert!(matches!(
        h.load("acme", "junk", b"not wasm"),
        Err(ModuleError::Invalid { .. })
    ));
}

#[test]
fn other_tenants_keep_working_while_one_misbehaves() {
    let h = std::sync::Arc::new(host());
    let good = h.load("globex", "allow", &wasm("allow")).unwrap();
    let mut bad = Vec::new();
    for f in ["loop", "membomb", "stack", "trap"] {
        bad.push(h.load("acme", f, &wasm(f)).unwrap());
    }
    let input = input();
    let hostile = {
        let (bad, input) = (bad.clone(), input.clone());
        std::thread::spawn(move || {
            for _ in 0..5 {
                for p in &bad {
                    assert_eq!(verdict(p.call(&input)), Verdict::Deny);
                }
            }
        })
    };
    for _ in 0..1000 {
        assert_eq!(good.call(&input), Outcome::Allow);
    }
    hostile.join().unwrap();
    assert_eq!(good.call(&input), Outcome::Allow);
    assert_eq!(good.stats().count(Outcome::Allow), 1001);
    // Plugins are per tenant: the same name in another tenant is another plugin.
    assert!(h.get("acme", "allow").is_none());
    assert!(h.get("globex", "allow").is_some());
}

#[test]
fn state_kept_between_calls_never_crosses_tenants_or_versions() {
    let h = host();
    let bytes = wasm("counter");
    let input = input();
    let count = |p: &portcullis::plugin::Plugin| {
        let mut r = String::new();
        assert_eq!(p.call_with_reason(&input, &mut r), Outcome::Allow);
        r
    };
    // Sequential calls reuse the tenant's live instance: its state survives (documented).
    let a = h.load("acme", "counter", &bytes).unwrap();
    assert_eq!(count(&a), "1");
    assert_eq!(count(&a), "2");
    assert_eq!(count(&a), "3");
    // The same module in another tenant starts from scratch: no instance is shared.
    let b = h.load("globex", "counter", &bytes).unwrap();
    assert_eq!(count(&b), "1");
    assert_eq!(count(&a), "4");
    // A new version of the same plugin (other bytes) starts from scratch too.
    let mut v2 = bytes.clone();
    v2.extend_from_slice(&[0, 5, 4, b'n', b'o', b't', b'e']); // a custom section: same code
    let a2 = h.load("acme", "counter", &v2).unwrap();
    assert_ne!(a2.version(), a.version());
    assert_eq!(count(&a2), "1");
}
