#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Plugin conditions in decisions: verdict semantics (allow / abstain / veto / failure), the
//! request context, filter/scopes/explain, atomic replacement, tenant isolation, and plugins
//! declared in data files. WAT fixtures from `tests/fixtures/plugins`, compiled by the `wat`
//! crate into a temporary directory and declared by path.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::decide::{self, GrantOutcome, Reason};
use portcullis::engine::Request;
use portcullis::model::file::{self, DataFile};
use portcullis::plugin::{Limits, Outcome, PluginHost};
use portcullis::snapshot::{Registry, Snapshot, SnapshotGuard};

const NOW: i64 = 1_700_000_000;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/plugins/{name}.wat"));
    wat::parse_file(p).unwrap()
}

/// Writes the named fixtures as `.wasm` files into a fresh directory.
fn plugin_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in names {
        std::fs::write(dir.path().join(format!("{n}.wasm")), fixture(n)).unwrap();
    }
    dir
}

const WORLD: &str = r#"
tenants:
  - id: plant
    plugins:
      - { name: allow, path: allow.wasm }
      - { name: abstain, path: abstain.wasm }
      - { name: deny, path: deny.wasm, description: always vetoes }
      - { name: trap, path: trap.wasm }
      - { name: ctx, path: has_context.wasm }
    nodes:
      - { id: org, kind: organisation }
      - { id: site, kind: site, parent: org }
      - { id: press-1, kind: asset, parent: site }
      - { id: press-2, kind: asset, parent: site }
    roles:
      - { id: op-allow, permissions: ["asset:operate"], plugin: allow }
      - { id: op-abstain, permissions: ["asset:operate"], plugin: abstain }
      - { id: op-deny, permissions: ["asset:operate"], plugin: deny }
      - { id: op-trap, permissions: ["asset:operate"], plugin: trap }
      - { id: op-ctx, permissions: ["asset:operate"], plugin: ctx }
      - { id: op-plain, permissions: ["asset:operate"] }
    users:
      - { id: a, email: a@x.example }
      - { id: b, email: b@x.example }
      - { id: c, email: c@x.example }
      - { id: d, email: d@x.example }
      - { id: e, email: e@x.example }
      - { id: f, email: f@x.example }
      - { id: g, email: g@x.example }
    assignments:
      - { user: a, role: op-allow, scope: site }
      - { user: b, role: op-abstain, scope: site }
      - { user: c, role: op-abstain, scope: site }
      - { user: c, role: op-plain, scope: org }
      - { user: d, role: op-plain, scope: org }
      - { user: d, role: op-deny, scope: press-1 }
      - { user: e, role: op-trap, scope: org }
      - { user: f, role: op-ctx, scope: org }
      - { user: g, role: op-deny, scope: org }
      - { user: g, role: viewer, scope: org }
  - id: other
    nodes: [{ id: org, kind: organisation }, { id: press-1, kind: asset, parent: org }]
    users: [{ id: a, email: a@x.example }]
    assignments: [{ user: a, role: operator, scope: org }]
"#;

fn load_world(dir: &tempfile::TempDir) -> DataFile {
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, WORLD).unwrap();
    file::load_path(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn setup() -> (Registry, tempfile::TempDir) {
    let dir = plugin_dir(&["allow", "abstain", "deny", "trap", "has_context"]);
    let data = load_world(&dir);
    let host = Arc::new(PluginHost::new(Limits::default()).unwrap());
    let reg = Registry::with_plugins(host);
    portcullis::engine::install_all(&reg, &data).unwrap();
    (reg, dir)
}

fn check(
    snap: &SnapshotGuard,
    subject: &str,
    action: &str,
    resource: &str,
    ctx: Option<&str>,
) -> decide::Decision {
    Request {
        subject,
        action,
        now: NOW,
        context: ctx,
        sso: None,
        channel: None,
    }
    .check(snap, resource)
}

#[test]
fn verdicts_decide_matched_grants() {
    let (reg, _dir) = setup();
    let s = reg.get("plant").unwrap();
    let d = |u: &str, a: &str, r: &str| {
        let d = check(&s, u, a, r, None);
        (d.allowed, d.reason)
    };
    // Allow: the grant applies.
    assert_eq!(d("a", "asset:operate", "press-1"), (true, Reason::Granted));
    // Abstain: the grant does not apply; nothing else matches.
    assert_eq!(
        d("b", "asset:operate", "press-1"),
        (false, Reason::ConditionNotMet)
    );
    // Abstain, but a plain grant matches.
    assert_eq!(d("c", "asset:operate", "press-1"), (true, Reason::Granted));
    // Veto beats a plain grant where the vetoing grant matches…
    assert_eq!(
        d("d", "asset:operate", "press-1"),
        (false, Reason::PluginDenied)
    );
    // …and only there.
    assert_eq!(d("d", "asset:operate", "press-2"), (true, Reason::Granted));
    // A trapping plugin denies (fail closed) and is counted.
    assert_eq!(
        d("e", "asset:operate", "press-1"),
        (false, Reason::PluginDenied)
    );
    let trap = s.attached_plugins().find(|p| p.name() == "trap").unwrap();
    assert!(trap.stats().count(Outcome::Trap) >= 1);
    // A plugin role that does not grant the action is not consulted: no veto on reads.
    assert_eq!(d("g", "asset:read", "press-1"), (true, Reason::Granted));
    assert_eq!(
        d("g", "asset:operate", "press-1"),
        (false, Reason::PluginDenied)
    );
    // Subject-level denies come first, plugins are not run.
    assert_eq!(
        d("nobody", "asset:operate", "press-1"),
        (false, Reason::UnknownSubject)
    );
}

#[test]
fn the_request_context_reaches_the_plugin() {
    let (reg, _dir) = setup();
    let s = reg.get("plant").unwrap();
    let d = check(&s, "f", "asset:operate", "press-1", None);
    assert_eq!((d.allowed, d.reason), (false, Reason::ConditionNotMet));
    let d = check(
        &s,
        "f",
        "asset:operate",
        "press-1",
        Some(r#"{"channel":"console"}"#),
    );
    assert_eq!((d.allowed, d.reason), (true, Reason::Granted));
    // The node path is passed: `site` has a path of 2 entries, below the plugin's bar.
    let d = check(&s, "f", "asset:operate", "site", Some("{}"));
    assert_eq!((d.allowed, d.reason), (false, Reason::ConditionNotMet));
}

#[test]
fn without_a_runtime_plugin_conditions_deny_and_plain_tenants_are_untouched() {
    let dir = plugin_dir(&["allow", "abstain", "deny", "trap", "has_context"]);
    let data = load_world(&dir);
    let reg = Registry::new(); // no plugin runtime
    portcullis::engine::install_all(&reg, &data).unwrap();
    let s = reg.get("plant").unwrap();
    let d = check(&s, "a", "asset:operate", "press-1", None);
    assert_eq!((d.allowed, d.reason), (false, Reason::PluginDenied));
    // `check` (no conditions) on the same snapshot: the same fail-closed answer.
    let d = decide::check(s.view(), "a", "asset:operate", "press-1", NOW);
    assert_eq!((d.allowed, d.reason), (false, Reason::PluginDenied));
    // Permissions no plugin role grants take the plain path.
    let d = decide::check(s.view(), "g", "asset:read", "press-1", NOW);
    assert!(d.allowed);
    let o = reg.get("other").unwrap();
    assert!(decide::check(o.view(), "a", "asset:operate", "press-1", NOW).allowed);
}

#[test]
fn filter_scopes_and_explain_run_the_conditions() {
    let (reg, _dir) = setup();
    let s = reg.get("plant").unwrap();
    let resources = ["press-1", "press-2", "site", "ghost"];
    let filter = |subject: &str, ctx: Option<&str>| {
        let mut out = Vec::new();
        Request {
            subject,
            action: "asset:operate",
            now: NOW,
            context: ctx,
            sso: None,
            channel: None,
        }
        .filter(&s, &resources, |i| out.push(resources[i]));
        out
    };
    assert_eq!(filter("f", Some("{}")), vec!["press-1", "press-2"]);
    assert!(filter("f", None).is_empty());
    assert_eq!(filter("d", None), vec!["press-2", "site"]);

    // Scopes leave conditional grants out, and say so.
    let mut roots = Vec::new();
    let scopes = |action| Request {
        subject: "c",
        action,
        now: NOW,
        context: None,
        sso: None,
        channel: None,
    };
    let sc = scopes("asset:operate").scopes(&s, &mut roots);
    let ids: Vec<&str> = roots
        .iter()
        .map(|&x| s.view().nodes[x as usize].id.as_str())
        .collect();
    assert_eq!(ids, vec!["org"]);
    assert!(sc.conditional);
    assert!(!scopes("asset:read").scopes(&s, &mut Vec::new()).conditional);

    // Explain: the vetoing assignment with the plugin's reason and version.
    let e = Request {
        subject: "d",
        action: "asset:operate",
        now: NOW,
        context: None,
        sso: None,
        channel: None,
    }
    .explain(&s, "press-1");
    assert!(!e.allowed);
    assert_eq!(e.reason, "plugin_denied");
    let veto = e.assignments.iter().find(|a| a.role == "op-deny").unwrap();
    assert_eq!(veto.outcome, GrantOutcome::PluginDenied);
    let note = veto.condition.as_ref().unwrap();
    assert_eq!(
        (note.plugin.as_str(), note.outcome, note.reason.as_str()),
        ("deny", "deny", "vetoed")
    );
    assert_eq!(note.version.len(), 64);
    let plain = e.assignments.iter().find(|a| a.role == "op-plain").unwrap();
    assert!(plain.condition.is_none());
}

#[test]
fn replacing_a_plugin_is_atomic_for_checks_in_flight() {
    let dir = plugin_dir(&["allow", "deny"]);
    let host = Arc::new(PluginHost::new(Limits::default()).unwrap());
    let reg = Registry::with_plugins(host);
    let world = |plugin: &str, revision: u64| {
        let text = format!(
            "tenants:\n  - id: t\n    plugins: [{{ name: cond, path: {plugin}.wasm }}]\n    nodes: [{{ id: n, kind: site }}]\n    roles: [{{ id: r, permissions: ['x:y'], plugin: cond }}]\n    users: [{{ id: u, email: u@x.example }}]\n    assignments: [{{ user: u, role: r, scope: n }}]\n"
        );
        let path = dir.path().join(format!("w{revision}.yaml"));
        std::fs::write(&path, text).unwrap();
        let mut t = file::load_path(&path).unwrap().tenants.remove(0);
        t.revision = revision;
        Snapshot::build(&t).unwrap()
    };
    reg.install(world("allow", 1));
    let old = reg.get("t").unwrap(); // a check in flight pins this snapshot
    assert!(check(&old, "u", "x:y", "n", None).allowed);
    reg.install(world("deny", 2));
    let new = reg.get("t").unwrap();
    assert_eq!(
        check(&new, "u", "x:y", "n", None).reason,
        Reason::PluginDenied
    );
    // The pinned snapshot keeps running its own plugin version.
    assert!(check(&old, "u", "x:y", "n", None).allowed);
    let v_old = old.attached_plugins().next().unwrap().version();
    let v_new = new.attached_plugins().next().unwrap().version();
    assert_ne!(v_old, v_new);
}

#[test]
fn a_hostile_plugin_cannot_stall_or_sway_another_tenant() {
    let dir = plugin_dir(&["loop"]);
    let text = "tenants:\n  - id: evil\n    plugins: [{ name: spin, path: loop.wasm }]\n    nodes: [{ id: n, kind: site }]\n    roles: [{ id: r, permissions: ['x:y'], plugin: spin }]\n    users: [{ id: u, email: u@x.example }]\n    assignments: [{ user: u, role: r, scope: n }]\n  - id: good\n    nodes: [{ id: n, kind: site }]\n    users: [{ id: u, email: u@x.example }]\n    assignments: [{ user: u, role: operator, scope: n }]\n";
    let path = dir.path().join("w.yaml");
    std::fs::write(&path, text).unwrap();
    let data = file::load_path(&path).unwrap();
    let host = Arc::new(PluginHost::new(Limits::default()).unwrap());
    let reg = Arc::new(Registry::with_plugins(host));
    portcullis::engine::install_all(&reg, &data).unwrap();
    let deadline = Limits::default().deadline();
    let spinner = {
        let reg = reg.clone();
        std::thread::spawn(move || {
            let s = reg.get("evil").unwrap();
            let mut worst = Duration::ZERO;
            for _ in 0..5 {
                let t = Instant::now();
                let d = check(&s, "u", "x:y", "n", None);
                worst = worst.max(t.elapsed());
                assert_eq!((d.allowed, d.reason), (false, Reason::PluginDenied));
            }
            worst
        })
    };
    let good = reg.get("good").unwrap();
    for _ in 0..10_000 {
        assert!(check(&good, "u", "asset:operate", "n", None).allowed);
    }
    let worst = spinner.join().unwrap();
    // Bounded by the epoch deadline (plus ticker and scheduling slack on a loaded machine).
    assert!(
        worst < deadline * 50,
        "a looping plugin held a check for {worst:?}"
    );
    let s = reg.get("evil").unwrap();
    let p = s.attached_plugins().next().unwrap();
    // Whichever limit hits first: the epoch deadline or the fuel.
    assert_eq!(
        p.stats().count(Outcome::Timeout) + p.stats().count(Outcome::OutOfFuel),
        5
    );
}

#[test]
fn data_files_declare_plugins_by_path_and_are_checked() {
    let dir = plugin_dir(&["allow"]);
    let bad = "tenants:\n  - id: t\n    plugins:\n      - { name: gone, path: missing.wasm }\n      - { name: ok, path: allow.wasm }\n      - { name: ok, path: allow.wasm }\n    roles:\n      - { id: r, permissions: ['x:y'], plugin: nope }\n";
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let err = file::load_path(&path).unwrap_err();
    let text: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    let all = text.join("\n");
    assert!(
        all.contains("plugin 'gone'") && all.contains("missing.wasm"),
        "{all}"
    );
    assert!(all.contains("duplicate plugin name 'ok'"), "{all}");
    assert!(
        all.contains("role 'r' names unknown plugin 'nope'"),
        "{all}"
    );
    assert!(err.problems().iter().all(|p| p.line > 0), "{all}");

    // A module the runtime refuses fails the whole install, naming tenant and plugin.
    std::fs::write(dir.path().join("wasi.wasm"), fixture("wasi")).unwrap();
    let text = "tenants:\n  - id: t\n    plugins: [{ name: w, path: wasi.wasm }]\n";
    let path = dir.path().join("wasi.yaml");
    std::fs::write(&path, text).unwrap();
    let data = file::load_path(&path).unwrap();
    let reg = Registry::with_plugins(Arc::new(PluginHost::new(Limits::default()).unwrap()));
    let e = portcullis::engine::install_all(&reg, &data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tenant 't'") && e.contains("wasi_snapshot_preview1"),
        "{e}"
    );
}

#[test]
fn compiled_modules_survive_a_restart_in_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("plugin-cache");
    let wasm = wat::parse_file(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins/allow.wat"),
    )
    .unwrap();
    let first = PluginHost::new(Limits::default()).unwrap();
    first.use_disk_cache(&cache).unwrap();
    first.load("t", "p", &wasm).unwrap();
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "cache dir mode {mode:o}");
    }
    // A new process (a new host) loads the kept module: the file is not rewritten.
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    let second = PluginHost::new(Limits::default()).unwrap();
    second.use_disk_cache(&cache).unwrap();
    assert!(second.load("t", "p", &wasm).is_ok());
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written
    );
    // A damaged file fails its digest: compiled again and rewritten, never trusted.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let third = PluginHost::new(Limits::default()).unwrap();
    third.use_disk_cache(&cache).unwrap();
    assert!(third.load("t", "p", &wasm).is_ok());
    assert_ne!(
        std::fs::read(&files[0]).unwrap(),
        bytes,
        "the damaged file was rewritten"
    );
}

/// `/v1/filter`'s `reason` is subject-level (README, OpenAPI `FilterResponse`): when every
/// matching grant is vetoed or abstains, nothing is permitted and the reason is
/// `no_matching_assignment`; the plugins' own verdicts are per resource, in explain.
#[test]
fn filter_reason_when_every_grant_is_vetoed_or_abstains() {
    let (reg, _dir) = setup();
    let s = reg.get("plant").unwrap();
    let resources = ["press-1", "press-2"];
    let filter = |subject: &str| {
        let mut out = Vec::new();
        let d = Request {
            subject,
            action: "asset:operate",
            now: NOW,
            context: None,
            sso: None,
            channel: None,
        }
        .filter(&s, &resources, |i| out.push(resources[i]));
        (out, d.allowed, d.reason)
    };
    // g: op-deny at org vetoes everything.
    assert_eq!(filter("g"), (vec![], false, Reason::NoMatchingAssignment));
    // b: op-abstain only.
    assert_eq!(filter("b"), (vec![], false, Reason::NoMatchingAssignment));
    // d: vetoed on press-1 only: granted.
    assert_eq!(filter("d"), (vec!["press-2"], true, Reason::Granted));
    // The per-resource answer names the veto.
    assert_eq!(
        check(&s, "g", "asset:operate", "press-1", None).reason,
        Reason::PluginDenied
    );
}
