//! Tiers, presets and quotas through HTTP against the real binary: tenants created with a role
//! preset, tier-locked roles (listed as locked, refused with 422 `tier_unavailable` with nothing
//! written, granting nothing after the tier is lowered and again once it is raised), the preset
//! files' own tests, and quotas that hold under many parallel creates — on the embedded store and
//! on PostgreSQL with two processes writing to the same database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;
#[path = "common/store.rs"]
mod store;

use std::sync::{Arc, Barrier};

use serde_json::{json, Value};
use server::Server;

const TOKEN: &str = "presets-admin-token-0123456789abc";

fn start(args: &[&str]) -> Server {
    Server::start(args, &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)])
}

fn call(s: &Server, method: &str, path: &str, body: Value) -> (u16, Value) {
    s.admin_call(TOKEN, method, path, body)
}

/// A data-plane check at (at least) `rev`.
fn allowed(
    s: &Server,
    tenant: &str,
    subject: &str,
    action: &str,
    resource: &str,
    rev: u64,
) -> bool {
    let (st, v) = s.post_json(
        "/v1/check",
        &json!({"tenant": tenant, "subject": subject, "action": action,
                "resource": resource, "min_revision": rev})
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    v["allowed"].as_bool().unwrap()
}

fn revision(s: &Server, tenant: &str) -> u64 {
    let (st, v) = call(s, "GET", &format!("/v1/tenants/{tenant}"), Value::Null);
    assert_eq!(st, 200, "{v}");
    v["revision"].as_u64().unwrap()
}

fn roles(s: &Server, tenant: &str) -> Vec<Value> {
    let (st, v) = call(
        s,
        "GET",
        &format!("/v1/tenants/{tenant}/roles?page_size=1000"),
        Value::Null,
    );
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

/// Creates a tenant from a preset with one root node `org`.
fn tenant_with_preset(s: &Server, id: &str, rbac: &str, preset: &str) {
    let (st, v) = call(
        s,
        "POST",
        "/v1/tenants",
        // No default role: the checks below are about the preset's roles alone.
        json!({"id": id, "rbac": rbac, "preset": preset, "default_role": null}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        s,
        "POST",
        &format!("/v1/tenants/{id}/nodes"),
        json!({"id": "org", "kind": "organisation"}),
    );
    assert_eq!(st, 201, "{v}");
}

fn user(s: &Server, tenant: &str, id: &str) -> u64 {
    let (st, v) = call(
        s,
        "POST",
        &format!("/v1/tenants/{tenant}/users"),
        json!({"id": id, "email": format!("{id}@{tenant}.example"), "first_name": "Test"}),
    );
    assert_eq!(st, 201, "{v}");
    v["revision"].as_u64().unwrap()
}

fn assign(s: &Server, tenant: &str, principal: (&str, &str), role: &str) -> (u16, Value) {
    call(
        s,
        "POST",
        &format!("/v1/tenants/{tenant}/assignments"),
        json!({principal.0: principal.1, "role": role, "scope": "org"}),
    )
}

#[test]
fn a_preset_gives_the_tenant_its_catalogue_with_tiers_and_locks() {
    let s = start(&[]);
    tenant_with_preset(&s, "tb", "basic", "tiered");

    // 4 built-ins + the preset's 14; in basic, 7 of the preset's are locked.
    let all = roles(&s, "tb");
    assert_eq!(all.len(), 18, "{all:?}");
    let locked: Vec<&str> = all
        .iter()
        .filter(|r| r["locked"] == json!(true))
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(locked.len(), 7, "{locked:?}");
    assert!(all.iter().all(|r| r["tier"].is_string()));
    for r in &all {
        let enterprise = r["tier"] == "enterprise";
        assert_eq!(r["locked"] == json!(true), enterprise, "{r}");
    }
    let (st, v) = call(&s, "GET", "/v1/tenants/tb/roles/data-viewer", Value::Null);
    assert_eq!(st, 200);
    assert_eq!(
        (v["locked"].clone(), v["tier"].clone()),
        (json!(true), json!("enterprise"))
    );
    let (_, v) = call(&s, "GET", "/v1/tenants/tb/roles/administrator", Value::Null);
    assert_eq!(
        (v["locked"].clone(), v["tier"].clone()),
        (json!(false), json!("basic"))
    );
    let (_, v) = call(&s, "GET", "/v1/tenants/tb", Value::Null);
    assert_eq!(v["preset"], "tiered");

    // A basic role is assignable and grants.
    user(&s, "tb", "ada");
    let (st, v) = assign(&s, "tb", ("user", "ada"), "data-manager");
    assert_eq!(st, 201, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    assert!(allowed(&s, "tb", "ada", "data:delete", "org", rev));

    // A locked role: 422 tier_unavailable, to a user or a group, and nothing is written.
    let (st, v) = call(&s, "POST", "/v1/tenants/tb/groups", json!({"id": "crew"}));
    assert_eq!(st, 201, "{v}");
    let before = revision(&s, "tb");
    for principal in [("user", "ada"), ("group", "crew")] {
        let (st, v) = assign(&s, "tb", principal, "data-viewer");
        assert_eq!(st, 422, "{v}");
        assert_eq!(v["code"], "tier_unavailable", "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("needs rbac 'enterprise'"),
            "{v}"
        );
    }
    assert_eq!(revision(&s, "tb"), before);
    let (_, v) = call(
        &s,
        "GET",
        "/v1/tenants/tb/assignments?role=data-viewer",
        Value::Null,
    );
    assert_eq!(v["total"], 0, "{v}");

    // Basic tenants still refuse custom roles; preset roles are read-only.
    let (st, v) = call(
        &s,
        "POST",
        "/v1/tenants/tb/roles",
        json!({"id": "mine", "permissions": ["data:read"]}),
    );
    assert_eq!(st, 422, "{v}");
    let (st, v) = call(
        &s,
        "PATCH",
        "/v1/tenants/tb/roles/data-manager",
        json!({"permissions": ["*"]}),
    );
    assert_eq!((st, v["code"].clone()), (409, json!("read_only")), "{v}");
    let (st, v) = call(
        &s,
        "DELETE",
        "/v1/tenants/tb/roles/data-viewer",
        Value::Null,
    );
    assert_eq!((st, v["code"].clone()), (409, json!("read_only")), "{v}");

    // The same preset in enterprise: nothing locked, every role assignable.
    tenant_with_preset(&s, "te", "enterprise", "tiered");
    assert!(roles(&s, "te").iter().all(|r| r["locked"] == json!(false)));
    user(&s, "te", "dan");
    let (st, v) = assign(&s, "te", ("user", "dan"), "data-viewer");
    assert_eq!(st, 201, "{v}");
    assert!(allowed(
        &s,
        "te",
        "dan",
        "data:read",
        "org",
        v["revision"].as_u64().unwrap()
    ));

    // Unknown preset: 422 naming the field and the known presets; no tenant.
    let (st, v) = call(
        &s,
        "POST",
        "/v1/tenants",
        json!({"id": "tx", "preset": "gold"}),
    );
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["field"], "preset", "{v}");
    assert!(v["error"].as_str().unwrap().contains("tiered"), "{v}");
    let (st, _) = call(&s, "GET", "/v1/tenants/tx", Value::Null);
    assert_eq!(st, 404);

    // Every built-in preset creates a tenant.
    for p in ["standard", "tiered", "access-control", "group-levels"] {
        let (st, v) = call(
            &s,
            "POST",
            "/v1/tenants",
            json!({"id": format!("p-{p}"), "preset": p}),
        );
        assert_eq!(st, 201, "{p}: {v}");
    }
    assert_eq!(roles(&s, "p-access-control").len(), 4 + 10);
    assert_eq!(roles(&s, "p-group-levels").len(), 4 + 4);
    assert_eq!(roles(&s, "p-standard").len(), 4);
}

#[test]
fn lowering_the_tier_keeps_assignments_inert_and_raising_it_restores_them() {
    let s = start(&[]);
    tenant_with_preset(&s, "t", "enterprise", "tiered");
    user(&s, "t", "dan");
    user(&s, "t", "ada");
    let (st, v) = assign(&s, "t", ("user", "dan"), "data-viewer");
    assert_eq!(st, 201, "{v}");
    let (st, v) = assign(&s, "t", ("user", "ada"), "data-manager");
    assert_eq!(st, 201, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    assert!(allowed(&s, "t", "dan", "data:read", "org", rev));

    // Lowered to basic: the enterprise role's assignment stays, listed, but grants nothing;
    // the basic role still grants.
    let (st, v) = call(&s, "PATCH", "/v1/tenants/t", json!({"rbac": "basic"}));
    assert_eq!(st, 200, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    assert!(!allowed(&s, "t", "dan", "data:read", "org", rev));
    assert!(allowed(&s, "t", "ada", "data:read", "org", rev));
    let (_, v) = call(&s, "GET", "/v1/tenants/t/assignments?user=dan", Value::Null);
    assert_eq!(v["total"], 1, "{v}");
    let (_, v) = call(&s, "GET", "/v1/tenants/t/roles/data-viewer", Value::Null);
    assert_eq!(v["locked"], true);

    // Raised again: the kept assignment grants again.
    let (st, v) = call(&s, "PATCH", "/v1/tenants/t", json!({"rbac": "enterprise"}));
    assert_eq!(st, 200, "{v}");
    assert!(allowed(
        &s,
        "t",
        "dan",
        "data:read",
        "org",
        v["revision"].as_u64().unwrap()
    ));

    // A custom role still keeps a tenant from going basic (it cannot exist there).
    let (st, v) = call(
        &s,
        "POST",
        "/v1/tenants/t/roles",
        json!({"id": "mine", "permissions": ["data:read"]}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(&s, "PATCH", "/v1/tenants/t", json!({"rbac": "basic"}));
    assert_eq!(st, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("custom role"), "{v}");
}

#[test]
fn the_preset_files_pass_their_tests_and_data_files_name_presets() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/presets");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    for f in &files {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("test")
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The OpenAPI document lists exactly these presets.
    let doc: Value = serde_json::from_str(include_str!("../deploy/openapi.json")).unwrap();
    let mut documented: Vec<String> = doc["components"]["schemas"]["Preset"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    documented.sort();
    let shipped: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(documented, shipped);

    // A data file names a built-in preset; an unknown one is refused with its position.
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.yaml");
    std::fs::write(
        &good,
        "tenants:\n  - id: a\n    rbac: basic\n    preset: access-control\n    nodes: [{ id: hq, kind: organisation }, { id: d1, kind: door, parent: hq }]\n    users: [{ id: u, email: u@a.example }]\n    assignments: [{ user: u, role: place-door-access, scope: hq }]\ntests:\n  - { tenant: a, subject: u, action: door:open, resource: d1, allowed: true }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("test")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "tenants:\n  - id: a\n    preset: gold\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("test")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown preset 'gold'") && err.contains("line 2"),
        "{err}"
    );
}

/// The tenant of the quota races: small quotas, one node.
const QUOTA_DATA: &str = "tenants:\n  - id: q\n    quotas: { max_users: 6, max_admins: 2, max_groups: 3 }\n    nodes: [{ id: q, kind: organisation }]\n";

/// Fires 30 member creates, 10 admin creates and 20 group creates at once, spread over
/// `servers` (each request on its own connection), and checks that the quotas held and that
/// every refusal was 409 `quota_exceeded`. Returns the number of admins created.
fn quota_race(servers: &[&Server]) -> usize {
    let mut jobs: Vec<(String, Value, &'static str)> = Vec::new();
    for i in 0..30 {
        jobs.push((
            "/v1/tenants/q/users".into(),
            json!({"id": format!("m{i}"), "email": format!("m{i}@q.example"), "first_name": "Mem"}),
            "member",
        ));
    }
    for i in 0..10 {
        jobs.push((
            "/v1/tenants/q/users".into(),
            json!({"id": format!("a{i}"), "email": format!("a{i}@q.example"), "first_name": "Adm",
                   "kind": "admin"}),
            "admin",
        ));
    }
    for i in 0..20 {
        jobs.push((
            "/v1/tenants/q/groups".into(),
            json!({"id": format!("g{i}")}),
            "group",
        ));
    }
    // Interleave the kinds so that they really compete.
    jobs.sort_by_key(|(_, b, _)| {
        let id = b["id"].as_str().unwrap().to_string();
        (id[1..].parse::<u32>().unwrap(), id)
    });
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let results: Vec<(&'static str, u16, Value)> = std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, (path, body, what))| {
                let s = servers[i % servers.len()];
                let barrier = barrier.clone();
                sc.spawn(move || {
                    barrier.wait();
                    let (st, v) = s.admin_call(TOKEN, "POST", &path, body);
                    (what, st, v)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = |what: &str| {
        results
            .iter()
            .filter(|(w, st, _)| *w == what && *st == 201)
            .count()
    };
    for (what, st, v) in &results {
        assert!(
            *st == 201 || (*st == 409 && v["code"] == "quota_exceeded"),
            "{what}: {st} {v}"
        );
    }
    let (members, admins, groups) = (created("member"), created("admin"), created("group"));
    // More requests than room: every quota fills exactly (admins up to theirs).
    assert_eq!(members + admins, 6, "members {members}, admins {admins}");
    assert!(admins <= 2, "admins {admins}");
    assert_eq!(groups, 3);
    admins
}

/// What `s` reads of the raced tenant agrees with the answers.
fn stored_agrees(s: &Server, admins: usize) {
    let (_, v) = call(s, "GET", "/v1/tenants/q/users?page_size=1000", Value::Null);
    assert_eq!(v["total"], 6, "{v}");
    let stored_admins = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["kind"] == "admin")
        .count();
    assert_eq!(stored_admins, admins);
    let (_, v) = call(s, "GET", "/v1/tenants/q/groups?page_size=1000", Value::Null);
    assert_eq!(v["total"], 3, "{v}");
}

fn quota_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("q.yaml");
    std::fs::write(&f, QUOTA_DATA).unwrap();
    let f = f.to_str().unwrap().to_string();
    (dir, f)
}

#[test]
fn quotas_hold_under_parallel_creates_on_the_embedded_store() {
    let (dir, data) = quota_file();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap().to_string();
    let s = start(&["--data", &data, "--store", &store]);
    let admins = quota_race(&[&s]);
    stored_agrees(&s, admins);
    // And after a restart, from the store.
    drop(s);
    stored_agrees(&start(&["--data", &data, "--store", &store]), admins);
}

#[test]
fn quotas_hold_under_parallel_creates_by_two_processes_on_postgresql() {
    let url = store::pg_base_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(store::require_postgres(&url));
    let schema = store::unique_name("presets_quota");
    let _guard = store::SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let pg = store::with_schema(&url, &schema);
    let (_dir, data) = quota_file();
    // Two control planes over one database: the second loads the tenant the first seeded.
    let a = start(&["--data", &data, "--store", &pg]);
    let b = start(&["--data", &data, "--store", &pg]);
    let admins = quota_race(&[&a, &b]);
    // A third process reads what the two committed.
    stored_agrees(&start(&["--data", &data, "--store", &pg]), admins);
}
