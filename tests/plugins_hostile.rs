//! Hostile plugins (WAT fixtures under tests/fixtures/plugins): each is refused at load or denies
//! at call within its deadline, and other tenants' plugins keep working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::decide::Reason;
use portcullis::engine::{self, Request};

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
        host_context: &[],
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

/// A 1 MB reason is cut to the limit with a marker; the verdict stands. A negative length
/// or a reason outside memory is a failure (deny).
#[test]
fn huge_reason_is_cut_with_a_marker() {
    let h = host();
    let p = h.load("acme", "huge_reason", &wasm("huge_reason")).unwrap();
    let mut reason = String::new();
    assert_eq!(p.call_with_reason(&input(), &mut reason), Outcome::Allow);
    assert_eq!(reason.len(), 256, "{reason:?}");
    assert!(reason.ends_with(portcullis::plugin::REASON_TRUNCATED));
    // A multi-byte character is never split: 300 × "é" keeps 126 of them and the marker.
    let cut = |text: &str| {
        let src = format!(
            r#"(module (import "portcullis" "set_reason" (func $r (param i32 i32)))
              (memory (export "memory") 1) (data (i32.const 16) "{text}")
              (func (export "portcullis_abi_version") (result i32) (i32.const 1))
              (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 4096))
              (func (export "portcullis_evaluate") (param i32 i32) (result i32)
                (call $r (i32.const 16) (i32.const {len})) (i32.const 0)))"#,
            len = text.len()
        );
        let p = h
            .load("acme", "cut", &wat::parse_str(&src).unwrap())
            .unwrap();
        let mut reason = String::new();
        let o = p.call_with_reason(&input(), &mut reason);
        (o, reason)
    };
    let (o, r) = cut(&"é".repeat(300));
    assert_eq!(o, Outcome::Abstain);
    assert_eq!(r, format!("{}…", "é".repeat(126)));
    let (o, r) = cut(&"x".repeat(256));
    assert_eq!(
        (o, r.len()),
        (Outcome::Abstain, 256),
        "the limit itself is kept whole"
    );
    // Negative length: a failure.
    let neg = r#"(module (import "portcullis" "set_reason" (func $r (param i32 i32)))
      (memory (export "memory") 1)
      (func (export "portcullis_abi_version") (result i32) (i32.const 1))
      (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 4096))
      (func (export "portcullis_evaluate") (param i32 i32) (result i32)
        (call $r (i32.const 16) (i32.const -1)) (i32.const 1)))"#;
    let p = h
        .load("acme", "neg", &wat::parse_str(neg).unwrap())
        .unwrap();
    assert_eq!(p.call(&input()), Outcome::ReasonTooLong);
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

/// A valid plugin (abstains) plus `funcs` extra functions of `ops` straight-line operations each
/// (7 bytes of code per operation).
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

#[test]
fn same_bytes_compile_once_whatever_the_tenant_or_name() {
    let h = host();
    let bytes = straight_line(1, 2_000);
    let a = h.load("acme", "first", &bytes).unwrap();
    assert!(a.compile_time() > Duration::ZERO);
    assert_eq!(h.cached_modules(), 1);
    // Another name, another tenant: a plugin of its own (own instances, own counters), over the
    // module compiled once.
    for (t, n) in [("acme", "second"), ("globex", "first")] {
        let b = h.load(t, n, &bytes).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.compile_time(), Duration::ZERO, "{t}/{n} compiled again");
        assert_eq!(b.module_compile_time(), a.module_compile_time());
        assert_eq!(b.call(&input()), Outcome::Abstain);
        assert_eq!(b.stats().count(Outcome::Abstain), 1);
    }
    assert_eq!(a.stats().count(Outcome::Abstain), 0);
    assert_eq!(h.cached_modules(), 1);
    // Refused bytes are not kept.
    assert!(h.load("acme", "wrong", &wasm("wrong_abi")).is_err());
    assert!(h.load("acme", "wrong", &wasm("wrong_abi")).is_err());
}

#[test]
fn module_cache_is_bounded_and_evicts_modules_no_plugin_uses() {
    let h = PluginHost::new(Limits {
        module_cache: 2,
        ..Limits::default()
    })
    .unwrap();
    let held = h.load("acme", "held", &straight_line(1, 10)).unwrap();
    for ops in 11..16 {
        // Each version replaces the previous one of the same plugin: the old module is unused.
        h.load("acme", "churn", &straight_line(1, ops)).unwrap();
        assert!(h.cached_modules() <= 2, "{}", h.cached_modules());
    }
    // The module a live plugin holds stays.
    let again = h.load("globex", "held", &straight_line(1, 10)).unwrap();
    assert_eq!(again.compile_time(), Duration::ZERO);
    drop(held);
}

#[test]
fn compile_budget_refuses_before_compiling() {
    let h = PluginHost::new(Limits {
        max_function_bytes: 16 << 10,
        max_code_bytes: 64 << 10,
        max_functions: 20,
        ..Limits::default()
    })
    .unwrap();
    let cases = [
        (straight_line(1, 3_000), "the largest function body"),
        (straight_line(10, 1_000), "the code section"),
        (straight_line(30, 1), "the function count"),
    ];
    for (bytes, what) in cases {
        let t = Instant::now();
        match h.load("acme", "big", &bytes) {
            Err(ModuleError::TooComplex {
                what: w, got, max, ..
            }) => {
                assert_eq!(w, what);
                assert!(got > max);
            }
            other => panic!("{what}: {:?}", other.map(|p| p.version())),
        }
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    // Within the budget: compiles.
    h.load("acme", "small", &straight_line(5, 1_000)).unwrap();
}

#[test]
fn per_tenant_plugin_count_is_limited() {
    let h = PluginHost::new(Limits {
        max_per_tenant: 2,
        ..Limits::default()
    })
    .unwrap();
    assert!(h.check_plugin_count(0, false).is_ok());
    assert!(h.check_plugin_count(1, false).is_ok());
    let e = h.check_plugin_count(2, false).unwrap_err();
    assert!(matches!(e, ModuleError::TooMany { max: 2 }), "{e}");
    // Replacing one of them is always fine.
    assert!(h.check_plugin_count(2, true).is_ok());
    assert_eq!(Limits::default().max_per_tenant, 16);
}

/// A plugin that traps when the input is longer than 100 bytes and allows otherwise.
fn trap_on_long_input() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1)
        (func (export "portcullis_abi_version") (result i32) (i32.const 1))
        (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "portcullis_evaluate") (param i32 i32) (result i32)
          (if (i32.gt_u (local.get 1) (i32.const 100)) (then unreachable))
          (i32.const 1)))"#,
    )
    .unwrap()
}

#[test]
fn circuit_breaker_opens_after_repeated_limit_hits_and_a_probe_closes_it() {
    let h = PluginHost::new(Limits {
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(200),
        ..Limits::default()
    })
    .unwrap();
    let p = h.load("acme", "flaky", &trap_on_long_input()).unwrap();
    let (bad, good) = (input(), vec![0u8; 8]);
    assert!(bad.len() > 100);
    // Two hits, then an answer: the streak restarts.
    for _ in 0..2 {
        assert!(p.admit());
        assert_eq!(p.call(&bad), Outcome::Trap);
    }
    assert_eq!(p.call(&good), Outcome::Allow);
    for _ in 0..3 {
        assert!(p.admit());
        assert_eq!(p.call(&bad), Outcome::Trap);
    }
    assert!(!p.admit(), "open after 3 consecutive limit hits");
    assert_eq!(p.stats().breaker_opens(), 1);
    // Cool-down over: one probe at a time; a failing probe opens it again.
    std::thread::sleep(Duration::from_millis(250));
    assert!(p.admit());
    assert!(!p.admit(), "one probe at a time");
    assert_eq!(p.call(&bad), Outcome::Trap);
    assert!(!p.admit());
    assert_eq!(p.stats().breaker_opens(), 2);
    // A probe that answers closes it.
    std::thread::sleep(Duration::from_millis(250));
    assert!(p.admit());
    assert_eq!(p.call(&good), Outcome::Allow);
    assert!(p.admit());
    assert!(p.admit());
    // Another tenant's plugin over the same module has its own breaker.
    let other = h.load("globex", "flaky", &trap_on_long_input()).unwrap();
    assert!(other.admit());
}

#[test]
fn plugin_work_slots_are_per_tenant_and_bounded() {
    let h = PluginHost::new(Limits {
        max_concurrent_per_tenant: 2,
        max_concurrent: 3,
        ..Limits::default()
    })
    .unwrap();
    let a1 = h.enter("acme").unwrap();
    let _a2 = h.enter("acme").unwrap();
    assert!(matches!(
        h.enter("acme"),
        Err(portcullis::plugin::Busy::Tenant { max: 2, .. })
    ));
    let _g1 = h.enter("globex").unwrap();
    assert!(matches!(
        h.enter("initech"),
        Err(portcullis::plugin::Busy::Host { max: 3 })
    ));
    drop(a1);
    let a3 = h.enter("acme").unwrap();
    // A request may wait (bounded) for a slot: one freed in time is taken...
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            drop(a3);
        });
        let t = Instant::now();
        let _a4 = h.enter_within("acme", Duration::from_secs(5)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(25),
            "{:?}",
            t.elapsed()
        );
        // ...and one that stays taken is refused after the wait.
        let t = Instant::now();
        assert!(h.enter_within("acme", Duration::from_millis(30)).is_err());
        assert!(t.elapsed() >= Duration::from_millis(25));
    });
}

/// A data file with tenant `hostile` (role `op` needs the looping plugin) and tenant `calm`
/// (plain roles), and a registry holding both.
fn hostile_world(
    limits: Limits,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    portcullis::snapshot::Registry,
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loop.wasm"), wasm("loop")).unwrap();
    let data = r#"
tenants:
  - id: hostile
    rbac: enterprise
    plugins: [{ name: spin, path: loop.wasm }]
    nodes:
      - { id: org, kind: organisation }
      - { id: press-1, kind: asset, parent: org }
    roles:
      - { id: op, permissions: ["asset:operate"], plugin: spin }
      - { id: reader, permissions: ["asset:read"] }
    users: [{ id: ann, email: ann@hostile.example }]
    assignments:
      - { user: ann, role: op, scope: org }
      - { user: ann, role: reader, scope: org }
  - id: calm
    nodes:
      - { id: org, kind: organisation }
      - { id: press-1, kind: asset, parent: org }
    roles: [{ id: op, permissions: ["asset:operate"] }]
    users: [{ id: bob, email: bob@calm.example }]
    assignments: [{ user: bob, role: op, scope: org }]
"#;
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, data).unwrap();
    let file = portcullis::model::file::load_path(&path).unwrap();
    let reg = engine::plugin_registry_with(limits);
    engine::install_all(&reg, &file).unwrap();
    (dir, path, reg)
}

#[test]
fn request_budget_bounds_a_request_and_denies_the_rest_with_a_reason() {
    let limits = Limits {
        request_budget: Duration::from_millis(40),
        breaker_failures: 0,
        ..Limits::default()
    };
    let (_dir, _, reg) = hostile_world(limits);
    let snap = reg.get("hostile").unwrap();
    let req = |action| Request {
        subject: "ann",
        action,
        now: 1_800_000_000,
        context: None,
        sso: None,
        channel: None,
    };
    assert!(engine::needs_plugins(&snap, "asset:operate"));
    assert!(!engine::needs_plugins(&snap, "asset:read"));
    let t = Instant::now();
    let reasons = engine::plugin_work(&reg, "hostile", || {
        (0..1000)
            .map(|_| req("asset:operate").check(&snap, "press-1").reason)
            .collect::<Vec<_>>()
    })
    .unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_millis(40 + 250), "took {took:?}");
    assert_eq!(
        reasons[0],
        Reason::PluginDenied,
        "the first call runs (and times out)"
    );
    assert_eq!(reasons[999], Reason::PluginBudgetExhausted);
    let spent = reasons
        .iter()
        .filter(|r| **r == Reason::PluginDenied)
        .count();
    // Calls end at their deadline or when their fuel runs out (sooner): a few ran, then none.
    assert!((1..100).contains(&spent), "{spent} calls ran");
    // The plain path of the same tenant is untouched by the budget.
    let d = engine::plugin_work(&reg, "hostile", || {
        req("asset:read").check(&snap, "press-1")
    })
    .unwrap();
    assert_eq!(d.reason, Reason::Granted);
    // A new request has a budget of its own.
    let d = engine::plugin_work(&reg, "hostile", || {
        req("asset:operate").check(&snap, "press-1")
    })
    .unwrap();
    assert_eq!(d.reason, Reason::PluginDenied);
    // Without a request scope (CLI, tests), only the per-call limits apply.
    assert_eq!(
        req("asset:operate").check(&snap, "press-1").reason,
        Reason::PluginDenied
    );
}

#[test]
fn an_open_breaker_denies_at_once_with_plugin_unavailable() {
    let limits = Limits {
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(60),
        ..Limits::default()
    };
    let (_dir, _, reg) = hostile_world(limits);
    let snap = reg.get("hostile").unwrap();
    let check = || {
        Request {
            subject: "ann",
            action: "asset:operate",
            now: 1_800_000_000,
            context: None,
            sso: None,
            channel: None,
        }
        .check(&snap, "press-1")
        .reason
    };
    for _ in 0..3 {
        assert_eq!(check(), Reason::PluginDenied);
    }
    let t = Instant::now();
    for _ in 0..1000 {
        assert_eq!(check(), Reason::PluginUnavailable);
    }
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    let p = reg.plugin_host().unwrap().get("hostile", "spin").unwrap();
    assert_eq!(p.stats().count(Outcome::CircuitOpen), 1000);
    assert_eq!(p.stats().breaker_opens(), 1);
}

/// Through the real binary: two 1,000-item batches against the looping plugin answer within
/// the budget (plus slack), later items deny with `plugin_budget_exhausted`, and meanwhile
/// another tenant's check and `/healthz` answer quickly.
#[test]
fn a_looping_plugin_cannot_stall_other_tenants_over_http() {
    let (dir, data, _) = hostile_world(Limits::default());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "plugins:\n  request_budget_ms: 50\n  breaker_failures: 0\n",
    )
    .unwrap();
    let s = server::Server::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let item = r#"{"subject":"ann","action":"asset:operate","resource":"press-1"}"#;
    let batch = format!(
        r#"{{"tenant":"hostile","checks":[{}]}}"#,
        vec![item; 1000].join(",")
    );
    let batch = Arc::new(batch);
    let addr = s.addr;
    let post = move |body: &str| {
        server::raw_request(
            addr,
            "POST",
            "/v1/check/batch",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammers: Vec<_> = (0..2)
        .map(|_| {
            let (batch, stop) = (batch.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || answers.is_empty() {
                    let t = Instant::now();
                    let (status, _, body) = post(&batch);
                    answers.push((status, t.elapsed(), body));
                }
                answers
            })
        })
        .collect();
    // Meanwhile: the other tenant and health.
    let calm = r#"{"tenant":"calm","subject":"bob","action":"asset:operate","resource":"press-1"}"#;
    let mut worst = (Duration::ZERO, Duration::ZERO);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let t = Instant::now();
        let (st, v) = s.post_json("/v1/check", calm);
        assert_eq!((st, &v["allowed"]), (200, &serde_json::json!(true)), "{v}");
        worst.0 = worst.0.max(t.elapsed());
        let t = Instant::now();
        let (st, _, _) = s.request("GET", "/healthz", &[], b"");
        assert_eq!(st, 200);
        worst.1 = worst.1.max(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut batches = 0;
    for h in hammers {
        for (status, took, body) in h.join().unwrap() {
            if status == 503 {
                // Both slots of the tenant taken by the other hammer: refused at once.
                assert!(body.contains("plugin_busy"), "{body}");
                continue;
            }
            assert_eq!(status, 200, "{body}");
            batches += 1;
            assert!(
                took < Duration::from_millis(50 + 1500),
                "batch took {took:?}"
            );
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let results = v["results"].as_array().unwrap();
            assert_eq!(results.len(), 1000);
            assert!(results.iter().all(|r| r["allowed"] == false));
            assert_eq!(results[0]["reason"], "plugin_denied", "the first call ran");
            assert_eq!(results[999]["reason"], "plugin_budget_exhausted");
        }
    }
    assert!(batches > 0);
    eprintln!(
        "{batches} hostile batches; worst other-tenant check {:?}, worst /healthz {:?}",
        worst.0, worst.1
    );
    assert!(
        worst.0 < Duration::from_millis(500),
        "other tenant's check: {:?}",
        worst.0
    );
    assert!(
        worst.1 < Duration::from_millis(500),
        "/healthz: {:?}",
        worst.1
    );
}
