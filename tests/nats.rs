//! The fleet over NATS JetStream, with real processes: a nats-server 2.10+ started here, a
//! control plane (`portcullis serve --nats`) and sidecars (`portcullis sidecar --nats`).
//! Needs a nats-server (see tests/common/nats.rs; `tests/run.sh` installs one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/nats.rs"]
mod nats_server;
#[path = "common/server.rs"]
mod server;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nats_server::Nats;
use portcullis::fleet::{self, Fleet};
use serde_json::{json, Value};
use server::Server;

const TOKEN: &str = "nats-test-admin-token-0123456789";

/// These tests start several processes each: one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A config file for the processes: frequent snapshots, a generous `min_revision` wait.
fn config() -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        f.path(),
        "nats:\n  snapshot_every_revisions: 5\n  snapshot_every_seconds: 1\nlimits:\n  max_revision_wait_ms: 15000\n",
    )
    .unwrap();
    f
}

/// A control plane with the demo data, once it has published a snapshot of each demo tenant (a
/// sidecar started earlier would not know the tenants published after it booted — until their
/// events arrive).
fn control_plane(nats: &Nats, config: &tempfile::NamedTempFile) -> Server {
    let cp = Server::start(
        &[
            "--nats",
            &nats.url(),
            "--config",
            config.path().to_str().unwrap(),
        ],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    );
    let rt = runtime();
    let f = fleet(&rt, nats);
    wait_until("the demo tenants' snapshots", || {
        rt.block_on(f.recorded_tenants()).unwrap().len() >= 5
    });
    cp
}

/// A sidecar, once `/readyz` says ready.
fn sidecar(nats: &Nats, config: &tempfile::NamedTempFile, args: &[&str]) -> Server {
    let mut all = vec![
        "--nats",
        nats.url().leak(),
        "--config",
        config.path().to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let s = Server::start_sidecar(&all);
    wait_ready(&s);
    s
}

fn wait_ready(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, _, body) = s.request("GET", "/readyz", &[], b"");
        if st == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sidecar not ready: {st} {body}\n{}",
            s.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/v1/check` on `s`; `min` is `min_revision`.
fn check(
    s: &Server,
    tenant: &str,
    subject: &str,
    action: &str,
    resource: &str,
    min: Option<u64>,
) -> (u16, Value) {
    let mut body =
        json!({"tenant": tenant, "subject": subject, "action": action, "resource": resource});
    if let Some(m) = min {
        body["min_revision"] = json!(m);
    }
    s.post_json("/v1/check", &body.to_string())
}

/// Alice may operate press-7 while she is active.
fn alice(s: &Server, min: Option<u64>) -> (u16, Value) {
    check(s, "femo", "alice", "asset:operate", "press-7", min)
}

/// Activates or deactivates a femo user on the control plane; the commit's revision.
fn set_active(cp: &Server, user: &str, active: bool) -> u64 {
    let verb = if active { "activate" } else { "deactivate" };
    let (st, v) = cp.admin_call(
        TOKEN,
        "POST",
        &format!("/v1/tenants/femo/users/{user}/{verb}"),
        Value::Null,
    );
    assert_eq!(st, 200, "{verb} {user}: {v}");
    v["revision"].as_u64().unwrap()
}

/// Asserts that `s` answers alice's check as `active` at revision `rev` or later.
fn assert_alice(s: &Server, rev: u64, active: bool) {
    let (st, v) = alice(s, Some(rev));
    assert_eq!(st, 200, "{v}\n{}", s.log.lock().unwrap());
    assert_eq!(v["allowed"], json!(active), "at {rev}: {v}");
    assert!(v["revision"].as_u64().unwrap() >= rev, "{v}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A client of the test's own (for reading and injecting).
fn fleet(rt: &tokio::runtime::Runtime, nats: &Nats) -> Fleet {
    rt.block_on(Fleet::connect(&fleet::Options {
        url: nats.url(),
        name: "test".into(),
        replicas: 1,
    }))
    .unwrap()
}

/// The revisions of a tenant's events in the stream, in stream order.
fn stream_revisions(rt: &tokio::runtime::Runtime, f: &Fleet, tenant: &str) -> Vec<u64> {
    rt.block_on(async {
        let mut out = Vec::new();
        let mut seq = 1;
        while let Ok(m) = f
            .stream
            .direct_get_next_for_subject(fleet::subject(tenant), Some(seq))
            .await
        {
            // Messages injected by the tests carry no revision: skipped.
            out.extend(fleet::event_revision(&m.headers));
            seq = m.sequence + 1;
        }
        out
    })
}

/// Every message on `tenant`'s event subject, as text.
fn stream_payloads(rt: &tokio::runtime::Runtime, f: &Fleet, tenant: &str) -> Vec<String> {
    rt.block_on(async {
        let mut out = Vec::new();
        let mut seq = 1;
        while let Ok(m) = f
            .stream
            .direct_get_next_for_subject(fleet::subject(tenant), Some(seq))
            .await
        {
            out.push(String::from_utf8_lossy(&m.payload).into_owned());
            seq = m.sequence + 1;
        }
        out
    })
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn writes_reach_every_sidecar_and_a_late_one_boots_from_a_snapshot() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let a = sidecar(&nats, &cfg, &[]);
    let b = sidecar(&nats, &cfg, &[]);
    assert_eq!(alice(&a, None).1["allowed"], json!(true));
    // Read-your-writes: each write's revision as min_revision, on both sidecars.
    let mut rev = 0;
    for i in 0..12 {
        let active = i % 2 == 1;
        rev = set_active(&cp, "alice", active);
        assert_alice(&a, rev, active);
        assert_alice(&b, rev, active);
    }
    // Without min_revision the sidecars get there too.
    wait_until("sidecar b at the last revision", || {
        alice(&b, None).1["revision"] == json!(rev)
    });
    // The snapshot record moved on (every 5 revisions or 1 second).
    let rt = runtime();
    let f = fleet(&rt, &nats);
    wait_until("a snapshot at the last revision", || {
        rt.block_on(f.record("femo"))
            .unwrap()
            .is_some_and(|r| r.revision == rev && r.archive_format.is_some())
    });
    // Every commit is in the stream once, in order.
    let revs = stream_revisions(&rt, &f, "femo");
    assert_eq!(revs, (1..=rev).collect::<Vec<_>>());
    // A sidecar started now loads the snapshot (no replay of femo's events) and is current.
    let c = sidecar(&nats, &cfg, &[]);
    let (st, v) = alice(&c, None);
    assert_eq!((st, v["revision"].as_u64()), (200, Some(rev)), "{v}");
    assert_eq!(v["allowed"], json!(true));
    // Then follows: one more write, visible on the late one.
    let rev = set_active(&cp, "alice", false);
    assert_alice(&c, rev, false);
    assert!(
        c.log.lock().unwrap().contains("snapshots loaded"),
        "{}",
        c.log.lock().unwrap()
    );
    // A tenant whose snapshot record is missing is rebuilt from its events by a new sidecar
    // (the publisher writes no new record while femo does not change).
    wait_until("the snapshot of the last write", || {
        rt.block_on(f.record("femo"))
            .unwrap()
            .is_some_and(|r| r.revision == rev)
    });
    rt.block_on(f.kv.delete(fleet::token("femo"))).unwrap();
    assert!(rt.block_on(f.record("femo")).unwrap().is_none());
    let d = sidecar(&nats, &cfg, &[]);
    let (st, v) = alice(&d, None);
    assert_eq!((st, v["revision"].as_u64()), (200, Some(rev)), "{v}");
    assert_eq!(v["allowed"], json!(false));
    // min_revision beyond what exists: 503 after the configured wait.
    let (st, v) = alice(&a, Some(rev + 1_000));
    assert_eq!(
        (st, v["code"].as_str()),
        (503, Some("revision_unavailable")),
        "{v}"
    );
}

#[test]
fn nats_and_a_sidecar_killed_and_restarted_during_writes_lose_nothing() {
    let _s = serial();
    let mut nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let mut a = Some(sidecar(&nats, &cfg, &[]));
    let b = sidecar(&nats, &cfg, &[]);
    let mut last = (0, true);
    for i in 0..30 {
        match i {
            8 => nats.kill(),
            12 => a = None, // the sidecar dies too
            18 => nats.restart(),
            24 => {
                a = Some(Server::start_sidecar(&[
                    "--nats",
                    nats.url().leak(),
                    "--config",
                    cfg.path().to_str().unwrap(),
                ]))
            }
            _ => {}
        }
        // Writes are acknowledged by the control plane whatever NATS does.
        let active = i % 2 == 1;
        last = (set_active(&cp, "alice", active), active);
        // Also omar, on every third write: two users' histories interleave.
        if i % 3 == 0 {
            last = (set_active(&cp, "omar", i % 6 != 0), active);
        }
    }
    let a = a.unwrap();
    wait_ready(&a);
    let (rev, active) = last;
    assert_alice(&a, rev, active);
    assert_alice(&b, rev, active);
    let (st, v) = check(&b, "femo", "omar", "asset:calibrate", "press-8", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}"); // i = 27: 27 % 6 != 0
                                                                 // The stream holds every revision once, in order: nothing lost, nothing reordered.
    let rt = runtime();
    let f = fleet(&rt, &nats);
    assert_eq!(
        stream_revisions(&rt, &f, "femo"),
        (1..=rev).collect::<Vec<_>>()
    );
}

#[test]
fn corrupt_duplicate_and_out_of_order_events_resync_and_never_decide_wrong() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let a = sidecar(&nats, &cfg, &[]);
    let r1 = set_active(&cp, "alice", false);
    assert_alice(&a, r1, false);
    let rt = runtime();
    let f = fleet(&rt, &nats);
    // The real event of r1, to forge from: alice active again.
    let real = rt
        .block_on(
            f.stream
                .get_last_raw_message_by_subject(&fleet::subject("femo")),
        )
        .unwrap();
    let mut forged: portcullis::store::Commit = serde_json::from_slice(&real.payload).unwrap();
    assert_eq!(forged.revision, r1);
    for op in &mut forged.ops {
        if let Some(v) = op.value.as_mut() {
            v["status"] = json!("active");
        }
    }
    let inject = |c: Option<&portcullis::store::Commit>, id: &str| {
        let (mut h, p) = match c {
            Some(c) => fleet::encode_event(c).unwrap(),
            None => (
                async_nats::HeaderMap::new(),
                bytes::Bytes::from_static(b"\x00garbage{"),
            ),
        };
        h.insert("Nats-Msg-Id", id);
        rt.block_on(async {
            f.js.publish_with_headers(fleet::subject("femo"), h, p)
                .await
                .unwrap()
                .await
                .unwrap()
        });
    };
    let log_count = |s: &Server, what: &str| s.log.lock().unwrap().matches(what).count();
    // 1. Garbage.
    inject(None, "inject-corrupt");
    wait_until("the corrupt event seen", || {
        log_count(&a, "corrupt event") >= 1
    });
    assert_alice(&a, r1, false);
    // 2. A duplicate of r1 with other content.
    inject(Some(&forged), "inject-duplicate");
    wait_until("the duplicate seen", || {
        log_count(&a, "duplicate or out-of-order") >= 1
    });
    assert_alice(&a, r1, false);
    // 3. An event two revisions ahead (a gap), granting access.
    let mut ahead = forged.clone();
    ahead.revision = r1 + 2;
    inject(Some(&ahead), "inject-ahead");
    wait_until("the gap seen", || log_count(&a, "gap before an") >= 1);
    let (st, v) = alice(&a, None);
    assert_eq!(
        (st, &v["allowed"], v["revision"].as_u64()),
        (200, &json!(false), Some(r1)),
        "{v}"
    );
    // Each was followed by a reload of the tenant.
    wait_until("three reloads", || {
        log_count(&a, "tenant reloaded from its snapshot") >= 3
    });
    // Real writes continue to apply, including the real r1 + 2.
    let r2 = set_active(&cp, "omar", false);
    let r3 = set_active(&cp, "omar", true);
    assert_eq!(r3, r1 + 2);
    assert_alice(&a, r3, false);
    // A sidecar booting now replays over the injected events and decides the same.
    let b = sidecar(&nats, &cfg, &[]);
    assert_alice(&b, r3, false);
    let (st, v) = check(&b, "femo", "omar", "asset:calibrate", "press-8", Some(r2));
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
}

#[test]
fn sharded_sidecars_hold_only_their_tenants() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let _cp = control_plane(&nats, &cfg);
    // FNV-1a modulo 3: femo, visitorhub, solo-lab, dormant are in shard 1, towerco in 2.
    let shard = sidecar(&nats, &cfg, &["--tenant-shard", "2/3"]);
    let (st, v) = check(&shard, "towerco", "kim", "hvac:setpoint", "hvac-f12", None);
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
    let (st, v) = alice(&shard, None);
    assert_eq!(
        (st, v["code"].as_str()),
        (421, Some("tenant_not_here")),
        "{v}"
    );
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("'femo'") && msg.contains("shard 1/3"), "{msg}");
    let (_, _, ready) = shard.request("GET", "/readyz", &[], b"");
    assert!(ready.contains("\"tenants\":1"), "{ready}");
    // `portcullis fleet status` lists it, holding towerco only.
    let status = || -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["fleet", "status", "--nats", &nats.url()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["follows"] == "tenant shard 2/3")
            .cloned()
            .unwrap_or(Value::Null)
    };
    wait_until("the shard sidecar to report ready", || {
        status()["ready"] == json!(true)
    });
    let mine = status();
    let held: Vec<&String> = mine["tenants"].as_object().unwrap().keys().collect();
    assert_eq!(held, ["towerco"], "{mine}");
    // A list.
    let only = sidecar(&nats, &cfg, &["--tenants", "femo,visitorhub"]);
    assert_eq!(alice(&only, None).1["allowed"], json!(true));
    let (st, v) = check(&only, "towerco", "kim", "hvac:setpoint", "hvac-f12", None);
    assert_eq!(
        (st, v["code"].as_str()),
        (421, Some("tenant_not_here")),
        "{v}"
    );
    // A listed tenant that does not exist keeps the sidecar unready, naming it.
    let missing = Server::start_sidecar(&["--nats", nats.url().leak(), "--tenants", "femo,nope"]);
    wait_until("the sidecar to load femo", || {
        alice(&missing, None).0 == 200
    });
    let (st, _, body) = missing.request("GET", "/readyz", &[], b"");
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("nope"), "{body}");
}

/// The value of an unlabelled (or fully labelled) sample in a `/metrics` text.
fn metric(s: &Server, name: &str) -> Option<f64> {
    let (_, _, text) = s.request("GET", "/metrics", &[], b"");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn max_staleness_fails_closed_while_nats_is_silent_and_metrics_show_the_fleet() {
    let _s = serial();
    let mut nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let strict = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        strict.path(),
        "nats:\n  max_staleness_seconds: 2\nmetrics:\n  per_tenant: true\n",
    )
    .unwrap();
    let strict_sidecar = sidecar(&nats, &strict, &[]);
    let lenient = sidecar(&nats, &cfg, &[]);
    let rev = set_active(&cp, "alice", false);
    assert_alice(&strict_sidecar, rev, false);
    assert_eq!(
        metric(&strict_sidecar, "portcullis_fleet_connected"),
        Some(1.0)
    );
    assert!(
        metric(
            &strict_sidecar,
            "portcullis_fleet_events_total{outcome=\"applied\"}"
        ) >= Some(1.0)
    );
    assert_eq!(
        metric(
            &strict_sidecar,
            "portcullis_fleet_tenant_revision_applied{tenant=\"femo\"}"
        ),
        Some(rev as f64)
    );
    assert!(metric(&cp, "portcullis_fleet_events_total{outcome=\"published\"}") >= Some(1.0));
    nats.kill();
    // The strict one refuses once NATS has been silent for 2 s; the other keeps serving.
    wait_until("the strict sidecar to fail closed", || {
        alice(&strict_sidecar, None).0 == 503
    });
    let (st, v) = alice(&strict_sidecar, None);
    assert_eq!((st, v["code"].as_str()), (503, Some("stale")), "{v}");
    let (st, _, body) = strict_sidecar.request("GET", "/readyz", &[], b"");
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("\"stale\""), "{body}");
    assert_eq!(
        metric(&strict_sidecar, "portcullis_fleet_connected"),
        Some(0.0)
    );
    assert!(metric(&strict_sidecar, "portcullis_fleet_seconds_since_contact") >= Some(2.0));
    let (st, v) = alice(&lenient, None);
    assert_eq!((st, &v["allowed"]), (200, &json!(false)), "{v}");
    // A write during the outage; NATS back: both serve it.
    let rev = set_active(&cp, "alice", true);
    nats.restart();
    wait_until("the strict sidecar to hear from NATS again", || {
        alice(&strict_sidecar, None).0 == 200
    });
    assert_alice(&strict_sidecar, rev, true);
    assert_alice(&lenient, rev, true);
    wait_ready(&strict_sidecar);
}

#[test]
fn tenant_creation_and_deletion_travel_to_sidecars() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let a = sidecar(&nats, &cfg, &[]);
    let ok = |method: &str, path: &str, body: Value| -> u64 {
        let (st, v) = cp.admin_call(TOKEN, method, path, body);
        assert!(st == 200 || st == 201, "{method} {path}: {st} {v}");
        v["revision"].as_u64().unwrap_or(0)
    };
    ok(
        "POST",
        "/v1/tenants",
        json!({"id": "acme", "name": "Acme", "rbac": "enterprise"}),
    );
    ok(
        "POST",
        "/v1/tenants/acme/nodes",
        json!({"id": "acme", "kind": "organisation"}),
    );
    ok(
        "POST",
        "/v1/tenants/acme/nodes",
        json!({"id": "press-1", "kind": "asset", "parent": "acme"}),
    );
    ok(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "ann", "email": "ann@acme.example", "name": "Ann"}),
    );
    let rev = ok(
        "POST",
        "/v1/tenants/acme/assignments",
        json!({"user": "ann", "role": "operator", "scope": "acme"}),
    );
    let (st, v) = check(&a, "acme", "ann", "asset:operate", "press-1", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
    // acme is in shard 1 of 2 (FNV-1a), no demo tenant is: a sidecar of that shard started
    // now has it — even without its snapshot record, from its events.
    let rt = runtime();
    let f = fleet(&rt, &nats);
    wait_until("acme's snapshot", || {
        rt.block_on(f.record("acme"))
            .unwrap()
            .is_some_and(|r| r.revision == rev)
    });
    rt.block_on(f.kv.delete(fleet::token("acme"))).unwrap();
    let shard = sidecar(&nats, &cfg, &["--tenant-shard", "1/2"]);
    let (st, v) = check(&shard, "acme", "ann", "asset:operate", "press-1", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
    assert_eq!(alice(&shard, None).0, 421, "femo is in shard 0/2");
    // Deleted: gone from the sidecars, and from one that boots afterwards.
    let (st, v) = cp.admin_call(TOKEN, "DELETE", "/v1/tenants/acme", Value::Null);
    assert!(st == 200 || st == 204, "{st} {v}");
    for s in [&a, &shard] {
        wait_until("acme gone", || {
            check(s, "acme", "ann", "asset:operate", "press-1", None).0 == 404
        });
    }
    let late = sidecar(&nats, &cfg, &[]);
    let (st, v) = check(&late, "acme", "ann", "asset:operate", "press-1", None);
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("unknown_tenant")),
        "{v}"
    );
    assert_eq!(alice(&late, None).0, 200);
    // The id created again: its revisions go on, and every sidecar follows the new tenant.
    let again = ok(
        "POST",
        "/v1/tenants",
        json!({"id": "acme", "name": "Acme 2", "rbac": "none"}),
    );
    assert!(again > rev, "{again} after {rev}");
    ok(
        "POST",
        "/v1/tenants/acme/nodes",
        json!({"id": "acme", "kind": "organisation"}),
    );
    let rev = ok(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "cy", "email": "cy@acme.example", "name": "Cy"}),
    );
    for s in [&a, &shard, &late] {
        let (st, v) = check(s, "acme", "cy", "asset:read", "acme", Some(rev));
        assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
        let (st, v) = check(s, "acme", "ann", "asset:read", "acme", Some(rev));
        assert_eq!((st, &v["allowed"]), (200, &json!(false)), "{v}");
    }
}

#[test]
fn commits_made_while_nats_is_down_are_published_by_the_restarted_control_plane() {
    let _s = serial();
    let mut nats = Nats::start();
    let cfg = config();
    let store = tempfile::tempdir().unwrap();
    let start_cp = |nats: &Nats| {
        Server::start(
            &[
                "--nats",
                &nats.url(),
                "--config",
                cfg.path().to_str().unwrap(),
                "--store",
                store.path().to_str().unwrap(),
            ],
            &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
        )
    };
    let cp = start_cp(&nats);
    let a = sidecar(&nats, &cfg, &[]);
    let rev = set_active(&cp, "alice", false);
    assert_alice(&a, rev, false);
    // NATS down; writes are committed (the store is the outbox); the control plane dies.
    nats.kill();
    set_active(&cp, "alice", true);
    set_active(&cp, "omar", false);
    let rev = set_active(&cp, "alice", false);
    drop(cp);
    // A garbage message is the last one on femo's subject when the control plane comes back.
    nats.restart();
    let rt = runtime();
    let f = fleet(&rt, &nats);
    rt.block_on(async {
        f.js.publish(fleet::subject("femo"), bytes::Bytes::from_static(b"junk"))
            .await
            .unwrap()
            .await
            .unwrap()
    });
    let cp = start_cp(&nats);
    assert_alice(&a, rev, false);
    let (st, v) = check(&a, "femo", "omar", "asset:calibrate", "press-8", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(false)), "{v}");
    // Every revision once, in order (the junk aside).
    let revs: Vec<u64> = stream_revisions(&rt, &f, "femo");
    assert_eq!(revs, (1..=rev).collect::<Vec<_>>());
    let rev = set_active(&cp, "alice", true);
    assert_alice(&a, rev, true);
}

#[test]
fn plugin_modules_travel_and_run_on_the_sidecar() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let a = sidecar(&nats, &cfg, &[]);
    let wasm = |name: &str| {
        wat::parse_file(format!(
            "{}/tests/fixtures/plugins/{name}.wat",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let upload = |module: &[u8]| -> u64 {
        let auth = format!("Bearer {TOKEN}");
        let (st, _, body) = cp.request(
            "PUT",
            "/v1/tenants/femo/plugins/gate",
            &[
                ("authorization", &auth),
                ("content-type", "application/wasm"),
            ],
            module,
        );
        assert!(st == 200 || st == 201, "{st} {body}");
        serde_json::from_str::<Value>(&body).unwrap()["revision"]
            .as_u64()
            .unwrap()
    };
    let ok = |method: &str, path: &str, body: Value| -> u64 {
        let (st, v) = cp.admin_call(TOKEN, method, path, body);
        assert!(st == 200 || st == 201, "{method} {path}: {st} {v}");
        v["revision"].as_u64().unwrap()
    };
    upload(&wasm("deny"));
    ok(
        "POST",
        "/v1/tenants/femo/roles",
        json!({"id": "gated", "name": "Gated", "permissions": ["door:open"], "plugin": "gate"}),
    );
    let rev = ok(
        "POST",
        "/v1/tenants/femo/assignments",
        json!({"user": "omar", "role": "gated", "scope": "femo"}),
    );
    let (st, v) = check(&a, "femo", "omar", "door:open", "press-7", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(false)), "{v}");
    // The module replaced: the sidecar compiles and runs the new one.
    let rev = upload(&wasm("allow"));
    let (st, v) = check(&a, "femo", "omar", "door:open", "press-7", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
    // A sidecar booting now gets the module from the snapshot.
    let b = sidecar(&nats, &cfg, &[]);
    let (st, v) = check(&b, "femo", "omar", "door:open", "press-7", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
}

/// A plugin canary: the control plane, a sidecar following the stream and a sidecar booting
/// from the snapshot afterwards all run the same version for the same request (the split is a
/// function of the snapshot and the request: `plugin::canary_bucket` against the share), and
/// both versions decide some of the calls.
#[test]
fn a_plugin_canary_splits_the_same_on_every_sidecar() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let a = sidecar(&nats, &cfg, &[]);
    let wasm = |name: &str| {
        wat::parse_file(format!(
            "{}/tests/fixtures/plugins/{name}.wat",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let upload = |query: &str, module: &[u8]| -> u64 {
        let auth = format!("Bearer {TOKEN}");
        let (st, _, body) = cp.request(
            "PUT",
            &format!("/v1/tenants/femo/plugins/gate{query}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/wasm"),
            ],
            module,
        );
        assert!(st == 200 || st == 201, "{st} {body}");
        serde_json::from_str::<Value>(&body).unwrap()["revision"]
            .as_u64()
            .unwrap()
    };
    let ok = |method: &str, path: &str, body: Value| -> u64 {
        let (st, v) = cp.admin_call(TOKEN, method, path, body);
        assert!(st == 200 || st == 201, "{method} {path}: {st} {v}");
        v["revision"].as_u64().unwrap()
    };
    upload("", &wasm("allow"));
    ok(
        "POST",
        "/v1/tenants/femo/roles",
        json!({"id": "gated", "name": "Gated", "permissions": ["door:open"], "plugin": "gate"}),
    );
    let users: Vec<String> = (0..6).map(|i| format!("canary-u{i}")).collect();
    let doors: Vec<String> = (0..6).map(|i| format!("canary-door-{i}")).collect();
    for u in &users {
        ok(
            "POST",
            "/v1/tenants/femo/users",
            json!({"id": u, "email": format!("{u}@femo.example"), "first_name": "Canary"}),
        );
        ok(
            "POST",
            "/v1/tenants/femo/assignments",
            json!({"user": u, "role": "gated", "scope": "femo"}),
        );
    }
    for d in &doors {
        ok(
            "POST",
            "/v1/tenants/femo/nodes",
            json!({"id": d, "kind": "asset", "parent": "femo"}),
        );
    }
    let rev = upload("?canary=50", &wasm("deny"));
    let b = sidecar(&nats, &cfg, &[]);
    let mut seen = [false; 2];
    for u in &users {
        for d in &doors {
            let allowed = portcullis::plugin::canary_bucket(u, d) >= 50;
            seen[usize::from(allowed)] = true;
            for (who, s) in [("control plane", &cp), ("sidecar a", &a), ("sidecar b", &b)] {
                let (st, v) = check(s, "femo", u, "door:open", d, Some(rev));
                assert_eq!(st, 200, "{who}: {v}");
                assert_eq!(v["allowed"], allowed, "{who}: {u} on {d}: {v}");
            }
        }
    }
    assert_eq!(seen, [true, true], "both versions decide some calls");
}

#[test]
fn an_erased_user_leaves_no_copy_in_nats() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let a = sidecar(&nats, &cfg, &[]);
    set_active(&cp, "omar", false);
    let (st, v) = cp.admin_call(TOKEN, "DELETE", "/v1/tenants/femo/users/omar", Value::Null);
    assert!(st == 200 || st == 204, "{st} {v}");
    let (st, v) = cp.admin_call(
        TOKEN,
        "POST",
        "/v1/tenants/femo/users/omar/erase",
        json!({}),
    );
    assert_eq!(st, 200, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    let (st, v) = check(&a, "femo", "omar", "asset:calibrate", "press-8", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(false)), "{v}");
    // Neither the stream nor the snapshot object holds omar's email any more.
    let rt = runtime();
    let f = fleet(&rt, &nats);
    wait_until("the snapshot at the erasure", || {
        rt.block_on(f.record("femo"))
            .unwrap()
            .is_some_and(|r| r.revision >= rev)
    });
    let payloads = stream_payloads(&rt, &f, "femo");
    assert!(!payloads.is_empty());
    assert!(
        payloads.iter().all(|p| !p.contains("omar@femo.example")),
        "{payloads:?}"
    );
    let record = rt.block_on(f.record("femo")).unwrap().unwrap();
    let object = rt.block_on(f.object(&record)).unwrap();
    assert!(!String::from_utf8_lossy(&object).contains("omar@femo.example"));
    assert!(String::from_utf8_lossy(&object).contains("alice@femo.example"));
    // A sidecar booting now (snapshot + what is left of the stream) decides the same.
    let b = sidecar(&nats, &cfg, &[]);
    let (st, v) = check(&b, "femo", "omar", "asset:calibrate", "press-8", Some(rev));
    assert_eq!(
        (st, v["reason"].as_str()),
        (200, Some("unknown_subject")),
        "{v}"
    );
    assert_alice(&b, rev, true);
}

#[test]
fn nats_request_reply_agrees_with_http() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let _cp = control_plane(&nats, &cfg);
    let a = sidecar(&nats, &cfg, &[]);
    let shard = sidecar(&nats, &cfg, &["--tenant-shard", "2/3"]); // towerco only
    let rt = runtime();
    let f = fleet(&rt, &nats);
    let request = |tenant: &str, endpoint: &str, body: &Value| -> Option<(u16, Value)> {
        rt.block_on(async {
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                f.client.request(
                    fleet::api_subject(tenant, endpoint),
                    body.to_string().into(),
                ),
            )
            .await
            .ok()?
            .ok()?;
            let status = reply
                .headers
                .as_ref()
                .and_then(|h| h.get("Portcullis-Status"))
                .and_then(|v| v.as_str().parse().ok())
                .unwrap();
            Some((status, serde_json::from_slice(&reply.payload).unwrap()))
        })
    };
    let cases = [
        (
            "femo",
            "check",
            "/v1/check",
            json!({"tenant": "femo", "subject": "alice", "action": "asset:operate", "resource": "press-7"}),
        ),
        (
            "femo",
            "check",
            "/v1/check",
            json!({"tenant": "femo", "subject": "alice", "action": "asset:operate", "resource": "robot-12"}),
        ),
        (
            "femo",
            "batch",
            "/v1/check/batch",
            json!({"tenant": "femo", "checks": [
            {"subject": "alice", "action": "asset:operate", "resource": "press-7"},
            {"subject": "omar", "action": "asset:calibrate", "resource": "robot-12"}]}),
        ),
        (
            "femo",
            "filter",
            "/v1/filter",
            json!({"tenant": "femo", "subject": "alice", "action": "asset:read", "resources": ["press-7", "robot-12", "press-8"]}),
        ),
        (
            "femo",
            "scopes",
            "/v1/scopes",
            json!({"tenant": "femo", "subject": "alice", "action": "asset:operate"}),
        ),
        (
            "towerco",
            "check",
            "/v1/check",
            json!({"tenant": "towerco", "subject": "kim", "action": "hvac:setpoint", "resource": "hvac-f12"}),
        ),
        (
            "femo",
            "check",
            "/v1/check",
            json!({"tenant": "femo", "subject": "alice"}),
        ),
        (
            "nope",
            "check",
            "/v1/check",
            json!({"tenant": "nope", "subject": "a", "action": "a:b", "resource": "r"}),
        ),
    ];
    for (tenant, endpoint, path, body) in &cases {
        let (st, http) = a.post_json(path, &body.to_string());
        let (nst, nats_answer) =
            request(tenant, endpoint, body).unwrap_or_else(|| panic!("no reply: {body}"));
        assert_eq!((nst, &nats_answer), (st, &http), "{endpoint} {body}");
    }
    // A request whose subject and body name different tenants is refused.
    let (st, v) = request("towerco", "check", &cases[0].3).unwrap();
    assert_eq!((st, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    // The shard sidecar answers for towerco only; both groups are subscribed, femo still works.
    drop(a);
    let (st, v) = request("towerco", "check", &cases[5].3).unwrap();
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
    assert!(
        request("femo", "check", &cases[0].3).is_none(),
        "the shard sidecar must stay silent about femo"
    );
    drop(shard);
}

/// A session opened on the control plane is accepted by a sidecar given the same session keys,
/// and refused there once the user signs out (read-your-writes with the sign-out's revision).
/// Password hashes never travel: not in the stream, not in the snapshot objects' rows.
#[test]
fn sessions_opened_on_the_control_plane_work_and_end_on_sidecars() {
    let _s = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("session.pem");
    std::fs::write(
        &key,
        portcullis::identity::SessionKeys::generate_pem().unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        cfg.path(),
        format!(
            "nats:\n  snapshot_every_revisions: 5\n  snapshot_every_seconds: 1\nlimits:\n  max_revision_wait_ms: 15000\nsign_in:\n  session_keys: [ {{ private_key_file: {} }} ]\n",
            key.display()
        ),
    )
    .unwrap();
    let cp = control_plane(&nats, &cfg);
    let sc = sidecar(&nats, &cfg, &[]);
    let (st, head, body) = cp.request(
        "POST",
        "/v1/tenants/femo/sessions",
        &[("content-type", "application/json")],
        br#"{"email":"alice@femo.example","password":"Alice-demo-2026"}"#,
    );
    assert_eq!(st, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    let rev: u64 = server::header_of(&head, "x-portcullis-revision")
        .unwrap()
        .parse()
        .unwrap();
    let ask = |min: u64| {
        sc.post_json(
            "/v1/check",
            &json!({"tenant": "femo", "token": token, "action": "asset:operate", "resource": "press-7", "min_revision": min}).to_string(),
        )
    };
    let (st, v) = ask(rev);
    assert_eq!((st, v["allowed"].clone()), (200, json!(true)), "{v}");
    let auth = format!("Bearer {token}");
    let (st, head, _) = cp.request(
        "DELETE",
        "/v1/tenants/femo/sessions/current",
        &[("authorization", auth.as_str())],
        b"",
    );
    assert_eq!(st, 204);
    let rev: u64 = server::header_of(&head, "x-portcullis-revision")
        .unwrap()
        .parse()
        .unwrap();
    let (st, v) = ask(rev);
    assert_eq!(st, 401, "{v}");
    // What NATS holds of femo — its events (the import carried the demo's hashed passwords)
    // and its snapshot object — has no password hash.
    let rt = runtime();
    let f = fleet(&rt, &nats);
    wait_until("a snapshot of femo", || {
        rt.block_on(f.record("femo")).unwrap().is_some()
    });
    let payloads = stream_payloads(&rt, &f, "femo");
    assert!(!payloads.is_empty());
    assert!(
        payloads.iter().all(|p| !p.contains("argon2")),
        "a hash reached the stream"
    );
    assert!(payloads.iter().any(|p| p.contains("\"redacted\":true")));
    let record = rt.block_on(f.record("femo")).unwrap().unwrap();
    let object = rt.block_on(f.object(&record)).unwrap();
    assert!(
        !String::from_utf8_lossy(&object).contains("argon2"),
        "a hash reached the object store"
    );
}

/// `GET /v1/fleet/sidecars` on `cp` with the platform token.
fn listed_sidecars(cp: &Server) -> Vec<Value> {
    let (st, v) = cp.admin_call(TOKEN, "GET", "/v1/fleet/sidecars", Value::Null);
    assert_eq!(st, 200, "{v}");
    v["sidecars"].as_array().unwrap().clone()
}

/// The tenants of a listed sidecar, by id.
fn listed_tenants(s: &Value) -> std::collections::BTreeMap<String, Value> {
    s["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tenant"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

#[test]
fn the_control_plane_lists_its_sidecars_with_their_lag() {
    let _s = serial();
    let mut nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    let all = sidecar(&nats, &cfg, &[]);
    // FNV-1a modulo 3: towerco alone is in shard 2.
    let shard = sidecar(&nats, &cfg, &["--tenant-shard", "2/3"]);
    wait_until("both sidecars listed as ready", || {
        let l = listed_sidecars(&cp);
        l.len() == 2 && l.iter().all(|s| s["ready"] == json!(true))
    });
    let rev = set_active(&cp, "alice", false);
    assert_alice(&all, rev, false);
    // Reports come every 5 s: the one of the sidecar of every tenant shows femo caught up.
    wait_until("femo at the write's revision in the report", || {
        listed_sidecars(&cp)
            .iter()
            .find(|s| s["follows"] == "every tenant")
            .is_some_and(|s| listed_tenants(s)["femo"]["applied"] == json!(rev))
    });
    let list = listed_sidecars(&cp);
    let every = list
        .iter()
        .find(|s| s["follows"] == "every tenant")
        .unwrap();
    let femo = &listed_tenants(every)["femo"];
    assert_eq!(femo["control_plane"], json!(rev), "{every}");
    assert_eq!(femo["lag"], json!(0), "{every}");
    assert_eq!(every["max_lag"], json!(0), "{every}");
    assert_eq!(every["stale"], json!(false), "{every}");
    assert_eq!(every["connected"], json!(true), "{every}");
    assert!(
        every["seconds_since_report"].as_f64().unwrap() < 15.0,
        "{every}"
    );
    assert!(every["events_applied"].as_u64().unwrap() >= 1, "{every}");
    let sharded = list
        .iter()
        .find(|s| s["follows"] == "tenant shard 2/3")
        .unwrap();
    let held: Vec<String> = listed_tenants(sharded).into_keys().collect();
    assert_eq!(held, ["towerco"], "{sharded}");
    assert_ne!(every["id"], sharded["id"]);
    // A sidecar that stopped: listed as stale once it has missed three reports.
    drop(shard);
    wait_until("the stopped sidecar listed as stale", || {
        listed_sidecars(&cp)
            .iter()
            .any(|s| s["follows"] == "tenant shard 2/3" && s["stale"] == json!(true))
    });
    // The platform token only: a tenant's API key is refused, no token is refused.
    let (st, v) = cp.admin_call(
        TOKEN,
        "POST",
        "/v1/tenants/femo/api-keys",
        json!({"user": "alice", "name": "fleet"}),
    );
    assert_eq!(st, 201, "{v}");
    let key = v["data"]["key"].as_str().unwrap();
    let (st, v) = cp.admin_call(key, "GET", "/v1/fleet/sidecars", Value::Null);
    assert_eq!(
        (st, v["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    let (st, _, _) = cp.request("GET", "/v1/fleet/sidecars", &[], b"");
    assert_eq!(st, 401);
    let (st, v) = cp.admin_call(TOKEN, "POST", "/v1/fleet/sidecars", Value::Null);
    assert_eq!(st, 405, "{v}");
    // NATS down: a clear 503, not a hang.
    nats.kill();
    let started = Instant::now();
    let (st, v) = cp.admin_call(TOKEN, "GET", "/v1/fleet/sidecars", Value::Null);
    assert_eq!(
        (st, v["code"].as_str()),
        (503, Some("nats_unavailable")),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A control plane without NATS has no fleet to list.
    let alone = Server::start(&[], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    let (st, v) = alone.admin_call(TOKEN, "GET", "/v1/fleet/sidecars", Value::Null);
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("nats_not_configured")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("--nats"), "{v}");
}

/// A tenant id (`prefix-N`) in shard `index` of `count`, or not in it.
fn tenant_in_shard(prefix: &str, index: u32, count: u32, inside: bool) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|t| (portcullis::control::shard::shard_of(t, count) == index) == inside)
        .unwrap()
}

/// Creates `tenant` with an organisation node and a user `ann` who operates it; the revision.
fn create_tenant(cp: &Server, tenant: &str) -> u64 {
    let mut rev = 0;
    for (path, body) in [
        (
            "/v1/tenants".to_string(),
            json!({"id": tenant, "name": tenant, "rbac": "enterprise"}),
        ),
        (
            format!("/v1/tenants/{tenant}/nodes"),
            json!({"id": "org", "kind": "organisation"}),
        ),
        (
            format!("/v1/tenants/{tenant}/users"),
            json!({"id": "ann", "email": "ann@example.com", "name": "Ann"}),
        ),
        (
            format!("/v1/tenants/{tenant}/assignments"),
            json!({"user": "ann", "role": "operator", "scope": "org"}),
        ),
    ] {
        let (st, v) = cp.admin_call(TOKEN, "POST", &path, body);
        assert!(st == 200 || st == 201, "{path}: {st} {v}");
        rev = v["revision"].as_u64().unwrap_or(rev);
    }
    rev
}

#[test]
fn a_shard_sidecar_reads_only_its_tenants_and_picks_up_new_ones() {
    let _s = serial();
    let nats = Nats::start();
    let cfg = config();
    let cp = control_plane(&nats, &cfg);
    use portcullis::control::shard::shard_of;
    // A quarter that does not hold femo.
    let index = (shard_of("femo", 4) + 1) % 4;
    let spec = format!("{index}/4");
    let shard = sidecar(&nats, &cfg, &["--tenant-shard", &spec]);
    let received = || {
        metric(
            &shard,
            "portcullis_fleet_events_total{outcome=\"received\"}",
        )
        .unwrap_or(0.0)
    };
    let before = received();
    // 20 writes on femo and a tenant of another shard: none reaches this sidecar.
    for i in 0..20 {
        set_active(&cp, "alice", i % 2 == 1);
    }
    let outside = tenant_in_shard("outside", index, 4, false);
    create_tenant(&cp, &outside);
    // A tenant of its shard created after it started: followed from its first event.
    let inside = tenant_in_shard("inside", index, 4, true);
    let rev = create_tenant(&cp, &inside);
    let (st, v) = check(&shard, &inside, "ann", "asset:operate", "org", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(true)), "{v}");
    let (st, v) = check(&shard, &outside, "ann", "asset:operate", "org", None);
    assert_eq!(
        (st, v["code"].as_str()),
        (421, Some("tenant_not_here")),
        "{v}"
    );
    // Received: the two announcements and the new tenant's 4 events (a re-read or two at most), not
    // the 24 events of the others, which came before them in the stream.
    let got = received() - before;
    assert!((6.0..=9.0).contains(&got), "received {got} messages");
    // It follows the new tenant on: a later write, and after a restart of the sidecar.
    let (st, v) = cp.admin_call(
        TOKEN,
        "POST",
        &format!("/v1/tenants/{inside}/users/ann/deactivate"),
        Value::Null,
    );
    assert_eq!(st, 200, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    let (st, v) = check(&shard, &inside, "ann", "asset:operate", "org", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(false)), "{v}");
    drop(shard);
    let again = sidecar(&nats, &cfg, &["--tenant-shard", &spec]);
    let (st, v) = check(&again, &inside, "ann", "asset:operate", "org", Some(rev));
    assert_eq!((st, &v["allowed"]), (200, &json!(false)), "{v}");
}
