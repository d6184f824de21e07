//! The management API against the real binary and a real store: business rules, errors,
//! read-your-writes through the data plane, concurrency, audit, and crash safety (kill -9).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

#[path = "common/server.rs"]
mod server;

use serde_json::{json, Value};
use server::{header_of, Server};

const TOKEN: &str = "test-admin-token-0123456789";

struct Admin {
    s: Server,
    _dir: Option<tempdir::Dir>,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "portcullis-{tag}-{}-{}",
                std::process::id(),
                nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    pub fn nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }
}

impl Admin {
    fn start() -> Admin {
        let dir = tempdir::Dir::new("admin");
        let store = format!("{}/store", dir.path());
        let s = Server::start(&["--store", &store], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
        Admin { s, _dir: Some(dir) }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> (u16, Value, String) {
        let auth = format!("Bearer {TOKEN}");
        let mut headers: Vec<(&str, &str)> = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (st, head, b) = self.s.request(method, path, &headers, body.as_bytes());
        let v = if b.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{method} {path}: {e}: {b}"))
        };
        (st, v, head)
    }

    fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (st, v, _) = self.call(method, path, Some(body), &[]);
        assert!((200..300).contains(&st), "{method} {path} -> {st} {v}");
        v
    }

    fn check(
        &self,
        tenant: &str,
        subject: &str,
        action: &str,
        resource: &str,
        min_revision: u64,
    ) -> Value {
        let (st, v) = self.s.post_json(
            "/v1/check",
            &json!({"tenant": tenant, "subject": subject, "action": action, "resource": resource, "min_revision": min_revision}).to_string(),
        );
        assert_eq!(st, 200, "{v}");
        v
    }
}

fn setup_acme(a: &Admin) -> u64 {
    a.ok(
        "POST",
        "/v1/tenants",
        json!({"id": "acme", "name": "Acme", "rbac": "enterprise"}),
    );
    a.ok(
        "POST",
        "/v1/tenants/acme/nodes",
        json!({"id": "acme", "kind": "organisation"}),
    );
    a.ok(
        "POST",
        "/v1/tenants/acme/nodes",
        json!({"id": "plant-1", "kind": "site", "parent": "acme"}),
    );
    a.ok(
        "POST",
        "/v1/tenants/acme/nodes",
        json!({"id": "plant-2", "kind": "site", "parent": "acme"}),
    );
    a.ok(
        "POST",
        "/v1/tenants/acme/nodes",
        json!({"id": "press-1", "kind": "asset", "parent": "plant-1"}),
    );
    a.ok(
        "POST",
        "/v1/tenants/acme/roles",
        json!({"id": "op", "name": "Operator", "permissions": ["asset:read", "asset:operate"]}),
    );
    a.ok(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "ann", "email": "ann@acme.example", "name": "Ann"}),
    );
    a.ok(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "bob", "email": "bob@acme.example", "name": "Bob"}),
    );
    let v = a.ok(
        "POST",
        "/v1/tenants/acme/assignments",
        json!({"user": "ann", "role": "op", "scope": "plant-1"}),
    );
    v["revision"].as_u64().unwrap()
}

#[test]
fn writes_are_visible_to_checks_at_their_revision() {
    let a = Admin::start();
    let rev = setup_acme(&a);
    assert_eq!(
        a.check("acme", "ann", "asset:operate", "press-1", rev)["allowed"],
        true
    );
    assert_eq!(
        a.check("acme", "bob", "asset:operate", "press-1", rev)["allowed"],
        false
    );
    // Deactivation cuts access at the next revision.
    let v = a.ok("POST", "/v1/tenants/acme/users/ann/deactivate", json!({}));
    let rev = v["revision"].as_u64().unwrap();
    let c = a.check("acme", "ann", "asset:operate", "press-1", rev);
    assert_eq!(
        (c["allowed"].as_bool(), c["reason"].as_str()),
        (Some(false), Some("subject_inactive"))
    );
    assert_eq!(v["data"]["status"], "inactive");
    assert!(v["data"]["session_epoch"].as_u64().unwrap() > 0);
    // Role edits apply to every holder atomically.
    a.ok("POST", "/v1/tenants/acme/users/ann/activate", json!({}));
    let v = a.ok(
        "PATCH",
        "/v1/tenants/acme/roles/op",
        json!({"permissions": ["asset:read"]}),
    );
    let rev = v["revision"].as_u64().unwrap();
    assert_eq!(
        a.check("acme", "ann", "asset:operate", "press-1", rev)["allowed"],
        false
    );
    assert_eq!(
        a.check("acme", "ann", "asset:read", "press-1", rev)["allowed"],
        true
    );
    // Groups: an inactive group cuts its members' group-derived access.
    a.ok(
        "POST",
        "/v1/tenants/acme/groups",
        json!({"id": "crew", "members": ["bob"]}),
    );
    let v = a.ok(
        "POST",
        "/v1/tenants/acme/assignments",
        json!({"group": "crew", "role": "viewer", "scope": "acme"}),
    );
    assert_eq!(
        a.check(
            "acme",
            "bob",
            "asset:read",
            "press-1",
            v["revision"].as_u64().unwrap()
        )["allowed"],
        true
    );
    let v = a.ok(
        "PATCH",
        "/v1/tenants/acme/groups/crew",
        json!({"status": "inactive"}),
    );
    assert_eq!(
        a.check(
            "acme",
            "bob",
            "asset:read",
            "press-1",
            v["revision"].as_u64().unwrap()
        )["allowed"],
        false
    );
    // Moving a subtree moves access with it.
    let v = a.ok(
        "PATCH",
        "/v1/tenants/acme/nodes/press-1",
        json!({"parent": "plant-2"}),
    );
    assert_eq!(
        a.check(
            "acme",
            "ann",
            "asset:read",
            "press-1",
            v["revision"].as_u64().unwrap()
        )["allowed"],
        false
    );
}

#[test]
fn errors_are_precise() {
    let a = Admin::start();
    setup_acme(&a);
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        ("GET", "/v1/tenants/nope", None, 404, "unknown_tenant"),
        (
            "GET",
            "/v1/tenants/acme/users/nobody",
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/tenants/acme/users",
            Some(json!({"id": "x1", "first_name": "Test", "email": "ANN@acme.example"})),
            409,
            "duplicate_email",
        ),
        (
            "POST",
            "/v1/tenants/acme/users",
            Some(json!({"id": "ann", "first_name": "Test", "email": "ann2@acme.example"})),
            409,
            "already_exists",
        ),
        (
            "POST",
            "/v1/tenants/acme/users",
            Some(json!({"id": "bad id", "first_name": "Test", "email": "nope"})),
            422,
            "invalid",
        ),
        (
            "POST",
            "/v1/tenants/acme/nodes",
            Some(json!({"id": "n1", "kind": "site", "parent": "ghost"})),
            422,
            "invalid",
        ),
        (
            "PATCH",
            "/v1/tenants/acme/nodes/acme",
            Some(json!({"parent": "press-1"})),
            422,
            "invalid",
        ),
        (
            "DELETE",
            "/v1/tenants/acme/nodes/plant-1",
            None,
            409,
            "in_use",
        ),
        (
            "PATCH",
            "/v1/tenants/acme/roles/viewer",
            Some(json!({"name": "x"})),
            409,
            "read_only",
        ),
        ("DELETE", "/v1/tenants/acme/roles/op", None, 409, "in_use"),
        (
            "POST",
            "/v1/tenants/acme/roles",
            Some(json!({"id": "r2", "permissions": ["bad perm"]})),
            422,
            "invalid",
        ),
        (
            "POST",
            "/v1/tenants/acme/assignments",
            Some(json!({"user": "ann", "role": "op", "scope": "plant-1"})),
            409,
            "already_exists",
        ),
        (
            "POST",
            "/v1/tenants/acme/assignments",
            Some(json!({"user": "zed", "role": "nope", "scope": "mars"})),
            422,
            "invalid",
        ),
        (
            "PATCH",
            "/v1/tenants/acme/users/ann",
            Some(json!({"email": "new@acme.example"})),
            422,
            "invalid",
        ),
        (
            "PATCH",
            "/v1/tenants/acme/users/ann",
            Some(json!({"colour": "blue"})),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/v1/tenants",
            Some(json!({"id": "acme"})),
            409,
            "already_exists",
        ),
        (
            "POST",
            "/v1/tenants/acme/users/bob/restore",
            Some(json!({})),
            409,
            "invalid_state",
        ),
        (
            "GET",
            "/v1/tenants/acme/users?sort=shoe",
            None,
            400,
            "bad_request",
        ),
        ("GET", "/v1/tenants/acme/widgets", None, 404, "not_found"),
    ];
    for (m, p, b, st, code) in cases {
        let (got, v, _) = a.call(m, p, b.clone(), &[]);
        assert_eq!(
            (got, v["code"].as_str().unwrap_or("")),
            (st, code),
            "{m} {p} {b:?}: {v}"
        );
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (_, v, _) = a.call(
        "POST",
        "/v1/tenants/acme/assignments",
        Some(json!({"user": "zed", "role": "nope", "scope": "mars"})),
        &[],
    );
    let fields: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["user", "role", "scope"]);
    // Authentication.
    let (st, _, b) = a.s.request("GET", "/v1/tenants", &[], b"");
    assert_eq!(st, 401, "{b}");
    let (st, _, _) = a.s.request(
        "GET",
        "/v1/tenants",
        &[("authorization", "Bearer wrong-token-wrong-token")],
        b"",
    );
    assert_eq!(st, 401);
    // Oversized body.
    let big = format!("{{\"id\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (st, _, _) = a.s.request(
        "POST",
        "/v1/tenants",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        big.as_bytes(),
    );
    assert_eq!(st, 413);
}

#[test]
fn etags_prevent_lost_updates() {
    let a = Admin::start();
    setup_acme(&a);
    let (_, _, head) = a.call("GET", "/v1/tenants/acme/users/bob", None, &[]);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let (st, _, _) = a.call(
        "PATCH",
        "/v1/tenants/acme/users/bob",
        Some(json!({"name": "Bobby"})),
        &[("if-match", &etag)],
    );
    assert_eq!(st, 200);
    let (st, v, _) = a.call(
        "PATCH",
        "/v1/tenants/acme/users/bob",
        Some(json!({"name": "Robert"})),
        &[("if-match", &etag)],
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("revision_conflict")),
        "{v}"
    );
    // Unrelated writes do not conflict with an entity's ETag.
    let (_, _, head) = a.call("GET", "/v1/tenants/acme/users/ann", None, &[]);
    let ann = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    a.ok(
        "PATCH",
        "/v1/tenants/acme/users/bob",
        json!({"name": "Rob"}),
    );
    let (st, _, _) = a.call(
        "PATCH",
        "/v1/tenants/acme/users/ann",
        Some(json!({"name": "Annie"})),
        &[("if-match", &ann)],
    );
    assert_eq!(st, 200);
}

#[test]
fn concurrent_writes_lose_nothing() {
    let a = std::sync::Arc::new(Admin::start());
    a.ok("POST", "/v1/tenants", json!({"id": "t1"}));
    a.ok("POST", "/v1/tenants", json!({"id": "t2"}));
    let mut hs = Vec::new();
    for w in 0..8 {
        let a = a.clone();
        hs.push(std::thread::spawn(move || {
            for i in 0..10 {
                let t = if i % 2 == 0 { "t1" } else { "t2" };
                a.ok(
                    "POST",
                    &format!("/v1/tenants/{t}/users"),
                    json!({"id": format!("u{w}-{i}"), "first_name": "Test", "email": format!("u{w}-{i}@x.example")}),
                );
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    let v = a.ok("GET", "/v1/tenants/t1/users?page_size=1000", Value::Null);
    assert_eq!(v["total"], 40);
    let v = a.ok("GET", "/v1/tenants/t2", Value::Null);
    assert_eq!(
        v["revision"], 41,
        "1 create + 40 users, each its own revision"
    );
}

#[test]
fn user_listing_and_overview() {
    let a = Admin::start();
    setup_acme(&a);
    a.ok(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "cy", "email": "cy@acme.example", "name": "Cy Young", "kind": "admin"}),
    );
    a.ok("DELETE", "/v1/tenants/acme/users/bob", Value::Null);
    let v = a.ok(
        "GET",
        "/v1/tenants/acme/users?sort=name&order=desc",
        Value::Null,
    );
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cy", "ann"]);
    let v = a.ok(
        "GET",
        "/v1/tenants/acme/users?include_deleted=true&q=ACME.EXAMPLE&page_size=2",
        Value::Null,
    );
    assert_eq!(
        (v["total"].as_u64(), v["items"].as_array().unwrap().len()),
        (Some(3), 2)
    );
    let next = v["next_page_token"].as_str().unwrap().to_string();
    let v = a.ok("GET", &format!("/v1/tenants/acme/users?include_deleted=true&q=acme.example&page_size=2&page_token={next}"), Value::Null);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let v = a.ok("GET", "/v1/tenants/acme/users/overview", Value::Null);
    assert_eq!(
        v,
        json!({"total": 2, "administrators": 1, "active": 2, "new_last_7_days": 2})
    );
    // Restore returns the user active with the profile intact.
    let v = a.ok("POST", "/v1/tenants/acme/users/bob/restore", json!({}));
    assert_eq!(
        (v["data"]["status"].as_str(), v["data"]["name"].as_str()),
        (Some("active"), Some("Bob"))
    );
    // Platform-wide listing.
    let v = a.ok("GET", "/v1/users?q=cy", Value::Null);
    assert_eq!(v["items"][0]["tenant"], "acme");
    // Role detail: grouped permissions and holders; access-rights overview by scope kind.
    let v = a.ok("GET", "/v1/tenants/acme/roles/op", Value::Null);
    assert_eq!(
        v["permissions_by_resource"]["asset"],
        json!(["read", "operate"])
    );
    assert_eq!(v["holders"][0]["user"], "ann");
    let v = a.ok(
        "GET",
        "/v1/tenants/acme/assignments?scope_kind=site",
        Value::Null,
    );
    assert_eq!(v["total"], 1);
    assert_eq!(v["items"][0]["scope_kind"], "site");
}

#[test]
fn audit_records_every_change() {
    let a = Admin::start();
    setup_acme(&a);
    a.ok(
        "PATCH",
        "/v1/tenants/acme/users/bob",
        json!({"name": "Bobby"}),
    );
    let v = a.ok(
        "GET",
        "/v1/tenants/acme/audit?action=user.update",
        Value::Null,
    );
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let c = &items[0]["changes"][0];
    assert_eq!(
        (c["before"]["name"].as_str(), c["after"]["name"].as_str()),
        (Some("Bob"), Some("Bobby"))
    );
    assert_eq!(items[0]["actor"], "platform");
    let v = a.ok("GET", "/v1/tenants/acme/audit?limit=3", Value::Null);
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    let after = v["next_after_revision"].as_str().unwrap();
    let v2 = a.ok(
        "GET",
        &format!("/v1/tenants/acme/audit?limit=3&after_revision={after}"),
        Value::Null,
    );
    assert!(v2["items"][0]["revision"].as_u64().unwrap() > after.parse::<u64>().unwrap());
}

/// Audit list entries show at most 20 changes; one commit's changes are paged on
/// `GET …/audit/{revision}`. Erasing a deleted user removes it and scrubs its email and name from
/// every audit entry (the entries stay).
#[test]
fn audit_entries_are_bounded_and_erasure_scrubs_the_log() {
    let a = Admin::start();
    setup_acme(&a);
    for i in 0..25 {
        a.ok(
            "POST",
            "/v1/tenants/acme/groups",
            json!({"id": format!("g{i:02}"), "members": ["bob"]}),
        );
    }
    // Only a deleted user can be erased.
    let (st, v, _) = a.call("POST", "/v1/tenants/acme/users/bob/erase", None, &[]);
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("invalid_state")),
        "{v}"
    );
    let (st, _, _) = a.call("POST", "/v1/tenants/acme/users/nobody/erase", None, &[]);
    assert_eq!(st, 404);
    a.ok("POST", "/v1/tenants/acme/users/bob/delete", json!({}));
    let (_, before, _) = a.call("GET", "/v1/tenants/acme/audit?limit=1000", None, &[]);
    assert!(before.to_string().contains("bob@acme.example"));
    let v = a.ok("POST", "/v1/tenants/acme/users/bob/erase", json!({}));
    let rev = v["revision"].as_u64().unwrap();
    let (st, _, _) = a.call("GET", "/v1/tenants/acme/users/bob", None, &[]);
    assert_eq!(st, 404);
    let g = a.ok("GET", "/v1/tenants/acme/groups/g00", Value::Null);
    assert_eq!(g["members"], json!([]));

    let (_, after, _) = a.call("GET", "/v1/tenants/acme/audit?limit=1000", None, &[]);
    let text = after.to_string();
    assert!(
        !text.contains("bob@acme.example") && !text.contains("\"Bob\""),
        "{text}"
    );
    let items = after["items"].as_array().unwrap();
    assert_eq!(items.len(), before["items"].as_array().unwrap().len() + 1);
    let created = items
        .iter()
        .find(|e| e["action"] == "user.create" && e["target"] == "user:bob")
        .unwrap();
    assert_eq!(created["changes"][0]["after"]["email"], "[erased]");
    assert_eq!(created["changes"][0]["after"]["name"], "[erased]");
    let erase = items.last().unwrap();
    assert_eq!(
        (
            &erase["action"],
            &erase["revision"],
            &erase["change_count"],
            &erase["changes_truncated"]
        ),
        // 25 memberships, the pending invitation (bob was created without a password), the user.
        (&json!("user.erase"), &json!(rev), &json!(27), &json!(true))
    );
    assert_eq!(erase["changes"].as_array().unwrap().len(), 20);

    // The whole commit, page by page.
    let p1 = a.ok(
        "GET",
        &format!("/v1/tenants/acme/audit/{rev}?page_size=20"),
        Value::Null,
    );
    assert_eq!(
        (p1["change_count"].as_u64(), p1["next_page_token"].as_str()),
        (Some(27), Some("20"))
    );
    assert_eq!(p1["changes"].as_array().unwrap().len(), 20);
    let p2 = a.ok(
        "GET",
        &format!("/v1/tenants/acme/audit/{rev}?page_size=20&page_token=20"),
        Value::Null,
    );
    assert_eq!(p2["changes"].as_array().unwrap().len(), 7);
    assert!(p2["next_page_token"].is_null());
    assert_eq!(
        p2["changes"][6],
        json!({"kind": "user", "id": "bob", "before": null, "after": null})
    );
    let (st, _, _) = a.call(
        "GET",
        &format!("/v1/tenants/acme/audit/{}", rev + 100),
        None,
        &[],
    );
    assert_eq!(st, 404);
    let (st, _, _) = a.call("GET", "/v1/tenants/acme/audit/x", None, &[]);
    assert_eq!(st, 400);
    let (st, _, _) = a.call("GET", "/v1/tenants/acme/audit?limit=1001", None, &[]);
    assert_eq!(st, 400);
    // Erasing a user also removes its assignments.
    a.ok("POST", "/v1/tenants/acme/users/ann/delete", json!({}));
    let v = a.ok("POST", "/v1/tenants/acme/users/ann/erase", json!({}));
    let rev = v["revision"].as_u64().unwrap();
    let v = a.ok("GET", "/v1/tenants/acme/assignments?user=ann", Value::Null);
    assert_eq!(v["total"], 0);
    assert_eq!(
        a.check("acme", "ann", "asset:operate", "press-1", rev)["allowed"],
        false
    );
    let (_, after, _) = a.call("GET", "/v1/tenants/acme/audit?limit=1000", None, &[]);
    assert!(!after.to_string().contains("ann@acme.example"));
}

/// Deleting a tenant forgets its audit log; a tenant created again with the same id starts with
/// an audit log of its own (nothing of the old one), also after a restart.
#[test]
fn a_recreated_tenant_inherits_no_audit_log() {
    let dir = tempdir::Dir::new("recreate");
    let store = format!("{}/store", dir.path());
    let s = Server::start(&["--store", &store], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    let a = Admin { s, _dir: None };
    let old = setup_acme(&a);
    a.ok("DELETE", "/v1/tenants/acme", Value::Null);
    let v = a.ok(
        "POST",
        "/v1/tenants",
        json!({"id": "acme", "name": "Acme 2"}),
    );
    assert!(v["revision"].as_u64().unwrap() > old);
    let check = |a: &Admin| {
        let v = a.ok("GET", "/v1/tenants/acme/audit", Value::Null);
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{v}");
        assert_eq!(items[0]["action"], "tenant.create");
        assert!(!v.to_string().contains("acme.example"), "{v}");
        let (st, _, _) = a.call("GET", &format!("/v1/tenants/acme/audit/{old}"), None, &[]);
        assert_eq!(st, 404);
    };
    check(&a);
    drop(a);
    let s = Server::start(&["--store", &store], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    check(&Admin { s, _dir: None });
}

/// Kill -9 during a stream of writes; every acknowledged write survives the restart.
#[test]
fn kill_9_loses_no_acknowledged_write() {
    let dir = tempdir::Dir::new("crash");
    let store = format!("{}/store", dir.path());
    let s = Server::start(&["--store", &store], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    let a = Admin { s, _dir: None };
    a.ok("POST", "/v1/tenants", json!({"id": "c"}));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let addr = a.s.addr;
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for i in 0..100_000 {
                let body =
                    json!({"id": format!("u{i}"), "first_name": "Test", "email": format!("u{i}@c.example")}).to_string();
                let auth = format!("Bearer {TOKEN}");
                let (st, _, b) = server::raw_request(
                    addr,
                    "POST",
                    "/v1/tenants/c/users",
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    body.as_bytes(),
                );
                if st != 201 {
                    break; // server gone
                }
                let v: Value = serde_json::from_str(&b).unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((format!("u{i}"), v["revision"].as_u64().unwrap()));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut a = a;
    a.s.child.kill().unwrap(); // SIGKILL
    a.s.child.wait().unwrap();
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 5,
        "too few writes before the kill: {}",
        acked.len()
    );
    let s = Server::start(&["--store", &store], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    let b = Admin { s, _dir: Some(dir) };
    let v = b.ok(
        "GET",
        "/v1/tenants/c/users?page_size=1000&sort=created",
        Value::Null,
    );
    let total = v["total"].as_u64().unwrap() as usize;
    assert!(
        total >= acked.len(),
        "store has {total} users, {} were acknowledged",
        acked.len()
    );
    let last = acked.last().unwrap();
    let (st, _, _) = b.call("GET", &format!("/v1/tenants/c/users/{}", last.0), None, &[]);
    assert_eq!(st, 200);
    // Snapshot and store agree, and revisions continue.
    let t = b.ok("GET", "/v1/tenants/c", Value::Null);
    let rev = t["revision"].as_u64().unwrap();
    assert!(rev > last.1 - 1);
    let c = b.check("c", &last.0, "asset:read", "nowhere", rev);
    assert_eq!(c["revision"].as_u64(), Some(rev));
    let v = b.ok(
        "POST",
        "/v1/tenants/c/users",
        json!({"id": "after", "first_name": "Test", "email": "after@c.example"}),
    );
    assert_eq!(v["revision"].as_u64(), Some(rev + 1));
}

#[test]
fn management_405s_list_the_allowed_methods() {
    let a = Admin::start();
    setup_acme(&a);
    for (method, path, allow) in [
        ("DELETE", "/v1/users", "GET"),
        ("PUT", "/v1/tenants", "GET, POST"),
        ("POST", "/v1/tenants/acme", "GET, PATCH, DELETE"),
        ("POST", "/v1/tenants/acme/audit", "GET"),
        ("PUT", "/v1/tenants/acme/nodes", "GET, POST"),
        ("POST", "/v1/tenants/acme/plugins", "GET"),
        ("PUT", "/v1/tenants/acme/users/ann", "GET, PATCH, DELETE"),
        ("PATCH", "/v1/tenants/acme/plugins/p", "GET, PUT, DELETE"),
        ("DELETE", "/v1/tenants/acme/plugins/p/wasm", "GET"),
        ("GET", "/v1/tenants/acme/users/ann/activate", "POST"),
        ("GET", "/v1/tenants/acme/groups/g/members", "POST"),
        ("GET", "/v1/tenants/acme/groups/g/members/ann", "DELETE"),
    ] {
        let (st, v, head) = a.call(method, path, None, &[]);
        assert_eq!(st, 405, "{method} {path}: {v}");
        assert_eq!(v["code"], "method_not_allowed", "{method} {path}");
        assert_eq!(
            header_of(&head, "allow").as_deref(),
            Some(allow),
            "{method} {path}: {head}"
        );
    }
    // Unknown paths stay 404.
    let (st, v, _) = a.call("PUT", "/v1/tenants/acme/widgets/x", None, &[]);
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")));
}

#[test]
fn path_segments_keep_plus_and_refuse_encoded_slash_and_nul() {
    let a = Admin::start();
    setup_acme(&a);
    // `+` is a plain character in a path: the id is `a+b`, not `a b`.
    let (st, v, _) = a.call("GET", "/v1/tenants/a+b", None, &[]);
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("unknown_tenant")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("'a+b'"), "{v}");
    let (st, v, _) = a.call("GET", "/v1/tenants/acme/users/x+y", None, &[]);
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("'x+y'"), "{v}");
    // Percent-encoded ordinary characters are decoded.
    let (st, v, _) = a.call("GET", "/v1/tenants/%61cme/users/ann", None, &[]);
    assert_eq!(st, 200, "{v}");
    // A segment that decodes to `/` or NUL (or to invalid UTF-8) is refused.
    for p in [
        "/v1/tenants/acme%2Fusers",
        "/v1/tenants/acme/users/ann%2f..",
        "/v1/tenants/acme/users/ann%00",
        "/v1/tenants/acme/users/%ff",
    ] {
        let (st, v, _) = a.call("GET", p, None, &[]);
        assert_eq!(
            (st, v["code"].as_str()),
            (400, Some("bad_request")),
            "{p}: {v}"
        );
    }
    // In a query string `+` is still a space.
    let (st, v, _) = a.call("GET", "/v1/tenants/acme/users?q=Ann+Adams", None, &[]);
    assert_eq!(st, 200, "{v}");
}
