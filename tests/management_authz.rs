//! The management API authorized by the engine, through HTTP against the real binary: API-level
//! permissions checked where they apply (users where they live, assignments at their scope,
//! the rest tenant-wide) with filtered lists; no privilege escalation (grants, demotions, role
//! edits); self-protection; the owner and administrators; refused writes audited; tenants
//! created with their owner. Callers use API keys (no argon2 work per request).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use serde_json::{json, Value};
use server::Server;

const TOKEN: &str = "authz-admin-token-0123456789";

const DATA: &str = r#"
tenants:
  - id: acme
    rbac: enterprise
    nodes:
      - { id: acme, kind: organisation }
      - { id: site-a, kind: site, parent: acme }
      - { id: a1, kind: asset, parent: site-a }
      - { id: site-b, kind: site, parent: acme }
      - { id: b1, kind: asset, parent: site-b }
    roles:
      - { id: site-user-manager, permissions: ["user:*", "assignment:*", "*:read"] }
      - { id: site-ops, permissions: ["asset:operate"] }
      - { id: role-editor, permissions: ["role:update", "role:read"] }
      - { id: spare, permissions: ["asset:read"] }
    users:
      - { id: olga, email: olga@acme.example, first_name: Olga, kind: owner }
      - { id: alice, email: alice@acme.example, first_name: Alice, kind: admin }
      - { id: adam, email: adam@acme.example, first_name: Adam, kind: admin }
      - { id: mia, email: mia@acme.example, first_name: Mia }
      - { id: sam, email: sam@acme.example, first_name: Sam }
      - { id: oscar, email: oscar@acme.example, first_name: Oscar }
      - { id: bella, email: bella@acme.example, first_name: Bella }
      - { id: rita, email: rita@acme.example, first_name: Rita }
      - { id: nora, email: nora@acme.example, first_name: Nora }
    assignments:
      - { user: mia, role: site-user-manager, scope: site-a }
      - { user: sam, role: viewer, scope: a1 }
      - { user: oscar, role: site-ops, scope: site-a }
      - { user: bella, role: viewer, scope: site-b }
      - { user: rita, role: role-editor, scope: acme }
  - id: other
    nodes: [ { id: other, kind: organisation } ]
    users:
      - { id: zed, email: zed@other.example, first_name: Zed, kind: admin }
"#;

struct Env {
    s: Server,
    dir: std::path::PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start() -> Env {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portcullis-authz-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.yaml");
    std::fs::write(&data, DATA).unwrap();
    let store = dir.join("store");
    let config = dir.join("config.yaml");
    std::fs::write(&config, "sign_in:\n  platform_tenant: other\n").unwrap();
    let s = Server::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    );
    Env { s, dir }
}

impl Env {
    fn call(&self, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.s.admin_call(token, method, path, body)
    }
    fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let (st, v) = self.call(TOKEN, method, path, body);
        assert!(st < 300, "{method} {path} -> {st} {v}");
        v
    }
    /// An API key of `user` of `tenant`, made with the platform token.
    fn key(&self, tenant: &str, user: &str) -> String {
        let v = self.admin(
            "POST",
            &format!("/v1/tenants/{tenant}/api-keys"),
            json!({"user": user, "name": "test"}),
        );
        v["data"]["key"].as_str().unwrap().to_string()
    }
    /// Status and code of a call.
    fn code(&self, token: &str, method: &str, path: &str, body: Value) -> (u16, String) {
        let (st, v) = self.call(token, method, path, body);
        (st, v["code"].as_str().unwrap_or_default().to_string())
    }
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn forbidden() -> (u16, String) {
    (403, "forbidden".into())
}

fn refused(code: &str) -> (u16, String) {
    (403, code.into())
}

#[test]
fn permissions_apply_where_they_are_held_and_lists_show_only_that() {
    let e = start();
    let mia = e.key("acme", "mia");
    let nora = e.key("acme", "nora");

    // Users live where their assignments are: mia (user:* at site-a) sees site-a's users.
    let (st, v) = e.call(&mia, "GET", "/v1/tenants/acme/users", json!(null));
    assert_eq!(st, 200, "{v}");
    assert_eq!(ids(&v), ["mia", "oscar", "sam"]);
    assert_eq!(v["total"], 3);
    // Paging counts only what is visible.
    let (_, v) = e.call(
        &mia,
        "GET",
        "/v1/tenants/acme/users?page_size=2",
        json!(null),
    );
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["total"], 3);
    assert_eq!(
        e.code(&mia, "GET", "/v1/tenants/acme/users/bella", json!(null)),
        forbidden()
    );
    let (st, _) = e.call(&mia, "GET", "/v1/tenants/acme/users/sam", json!(null));
    assert_eq!(st, 200);
    // Nodes and assignments by node.
    let (_, v) = e.call(&mia, "GET", "/v1/tenants/acme/nodes", json!(null));
    assert_eq!(ids(&v), ["a1", "site-a"]);
    let (_, v) = e.call(&mia, "GET", "/v1/tenants/acme/assignments", json!(null));
    let scopes: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["scope"].as_str().unwrap())
        .collect();
    assert!(
        !scopes.is_empty() && scopes.iter().all(|s| ["site-a", "a1"].contains(s)),
        "{v}"
    );

    // Writes: inside site-a yes, outside no, tenant-wide things no.
    let (st, v) = e.call(
        &mia,
        "POST",
        "/v1/tenants/acme/users/sam/deactivate",
        json!({}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        e.code(
            &mia,
            "POST",
            "/v1/tenants/acme/users/bella/deactivate",
            json!({})
        ),
        forbidden()
    );
    assert_eq!(
        e.code(&mia, "POST", "/v1/tenants/acme/groups", json!({"id": "g"})),
        forbidden()
    );
    assert_eq!(
        e.code(
            &mia,
            "POST",
            "/v1/tenants/acme/users",
            json!({"email": "new@acme.example", "first_name": "New"})
        ),
        forbidden()
    );
    assert_eq!(
        e.code(&mia, "GET", "/v1/tenants/acme/audit", json!(null)),
        forbidden()
    );
    assert_eq!(
        e.code(&mia, "GET", "/v1/tenants/acme/groups", json!(null)),
        forbidden()
    );
    // The message names the permission and the place.
    let (_, v) = e.call(
        &mia,
        "POST",
        "/v1/tenants/acme/users/bella/deactivate",
        json!({}),
    );
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("user:status"), "{msg}");

    // Without any role: nothing to see, nothing to do.
    let (st, v) = e.call(&nora, "GET", "/v1/tenants/acme/users", json!(null));
    assert_eq!((st, v["total"].clone()), (200, json!(0)), "{v}");
    assert_eq!(
        e.code(
            &nora,
            "POST",
            "/v1/tenants/acme/users/sam/activate",
            json!({})
        ),
        forbidden()
    );

    // Keys of a tenant's users never reach other tenants or platform-wide endpoints.
    let unauthenticated = (401, "unauthenticated".to_string());
    assert_eq!(
        e.code(&mia, "GET", "/v1/tenants", json!(null)),
        unauthenticated
    );
    assert_eq!(
        e.code(&mia, "GET", "/v1/tenants/other/users", json!(null)),
        unauthenticated
    );
    assert_eq!(
        e.code(&mia, "GET", "/v1/users", json!(null)),
        unauthenticated
    );
}

#[test]
fn nobody_grants_or_takes_away_what_they_do_not_hold() {
    let e = start();
    let mia = e.key("acme", "mia");
    let rita = e.key("acme", "rita");
    let assign = |who: &str, role: &str, scope: &str| {
        e.code(
            &mia,
            "POST",
            "/v1/tenants/acme/assignments",
            json!({"user": who, "role": role, "scope": scope}),
        )
    };
    // mia holds *:read at site-a: she may grant viewer there, not administrator, not elsewhere.
    assert_eq!(assign("nora", "viewer", "site-a").0, 201);
    assert_eq!(
        assign("nora", "administrator", "site-a"),
        refused("privilege_escalation")
    );
    assert_eq!(
        assign("nora", "site-ops", "a1"),
        refused("privilege_escalation")
    );
    assert_eq!(assign("nora", "viewer", "site-b"), forbidden());
    // Nothing was written by the refusals.
    let v = e.admin("GET", "/v1/tenants/acme/assignments?user=nora", json!(null));
    assert_eq!(v["total"], 1, "{v}");

    // oscar holds asset:operate at site-a, which mia lacks: she may not touch him.
    assert_eq!(
        e.code(
            &mia,
            "POST",
            "/v1/tenants/acme/users/oscar/deactivate",
            json!({})
        ),
        refused("privilege_escalation")
    );
    assert_eq!(
        e.code(
            &mia,
            "DELETE",
            "/v1/tenants/acme/assignments/user~oscar~site-ops~site-a",
            json!(null)
        ),
        refused("privilege_escalation")
    );
    let (st, _) = e.call(
        &mia,
        "PATCH",
        "/v1/tenants/acme/users/oscar",
        json!({"first_name": "Oz"}),
    );
    assert_eq!(st, 403);
    let v = e.admin("GET", "/v1/tenants/acme/users/oscar", json!(null));
    assert_eq!(v["status"], "active");
    assert_eq!(v["first_name"], "Oscar");

    // Role edits: not adding (or removing) what the editor lacks where the role is in use.
    assert_eq!(
        e.code(
            &rita,
            "PATCH",
            "/v1/tenants/acme/roles/site-ops",
            json!({"permissions": ["asset:operate", "door:open"]})
        ),
        refused("privilege_escalation")
    );
    let (st, v) = e.call(
        &rita,
        "PATCH",
        "/v1/tenants/acme/roles/site-ops",
        json!({"name": "Site ops"}),
    );
    assert_eq!(st, 200, "{v}");
    // A role nobody holds may be edited freely.
    let (st, v) = e.call(
        &rita,
        "PATCH",
        "/v1/tenants/acme/roles/spare",
        json!({"permissions": ["asset:read", "door:open"]}),
    );
    assert_eq!(st, 200, "{v}");

    // Refused writes are in the audit log with their actor and code.
    let v = e.admin("GET", "/v1/tenants/acme/audit?page_size=100", json!(null));
    let refusals: Vec<&Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "refused")
        .collect();
    assert!(
        refusals.iter().any(|r| r["target"]
            .as_str()
            .unwrap()
            .contains("privilege_escalation")
            && r["actor"].as_str().unwrap().starts_with("key:")),
        "{v}"
    );
    assert!(refusals.len() >= 6, "{refusals:?}");
}

#[test]
fn self_owner_and_administrator_rules() {
    let e = start();
    let alice = e.key("acme", "alice");
    let adam = e.key("acme", "adam");
    let olga = e.key("acme", "olga");

    // Self-protection.
    for op in ["deactivate", "delete"] {
        assert_eq!(
            e.code(
                &alice,
                "POST",
                &format!("/v1/tenants/acme/users/alice/{op}"),
                json!({})
            ),
            refused("self_action")
        );
    }
    assert_eq!(
        e.code(
            &alice,
            "DELETE",
            "/v1/tenants/acme/users/alice",
            json!(null)
        ),
        refused("self_action")
    );
    // Administrators do not manage administrators or the owner.
    assert_eq!(
        e.code(
            &alice,
            "POST",
            "/v1/tenants/acme/users/adam/deactivate",
            json!({})
        ),
        refused("admin_protected")
    );
    assert_eq!(
        e.code(
            &alice,
            "POST",
            "/v1/tenants/acme/users/adam/password",
            json!({"password": "Adam-pass-2"})
        ),
        refused("admin_protected")
    );
    assert_eq!(
        e.code(
            &alice,
            "POST",
            "/v1/tenants/acme/users",
            json!({"email": "ad@acme.example", "first_name": "Ad", "kind": "admin", "password": "Ad-pass-123"})
        ),
        refused("admin_protected")
    );
    assert_eq!(
        e.code(
            &alice,
            "PATCH",
            "/v1/tenants/acme/users/sam",
            json!({"kind": "admin"})
        ),
        refused("admin_protected")
    );
    assert_eq!(
        e.code(
            &alice,
            "POST",
            "/v1/tenants/acme/users/olga/deactivate",
            json!({})
        ),
        refused("owner_protected")
    );
    assert_eq!(
        e.code(
            &alice,
            "POST",
            "/v1/tenants/acme/users/olga/password",
            json!({"password": "Olga-pass-2"})
        ),
        refused("owner_protected")
    );
    // Own password: administrators only where the tenant allows it.
    assert_eq!(
        e.code(
            &alice,
            "POST",
            "/v1/tenants/acme/users/alice/password",
            json!({"password": "Alice-pass-2"})
        ),
        refused("self_action")
    );
    // Controlled users: administrators change their passwords.
    let (st, v) = e.call(
        &alice,
        "POST",
        "/v1/tenants/acme/users/sam/password",
        json!({"password": "Sam-pass-22"}),
    );
    assert_eq!(st, 200, "{v}");
    // Plan settings are the platform's; other settings the administrators'.
    assert_eq!(
        e.code(
            &alice,
            "PATCH",
            "/v1/tenants/acme",
            json!({"quotas": {"max_users": 1000}})
        ),
        forbidden()
    );
    let (st, v) = e.call(
        &alice,
        "PATCH",
        "/v1/tenants/acme",
        json!({"admins_change_own_password": true}),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = e.call(
        &adam,
        "POST",
        "/v1/tenants/acme/users/adam/password",
        json!({"password": "Adam-pass-3"}),
    );
    assert_eq!(st, 200, "{v}");

    // The owner manages administrators, is protected from everyone (the platform included)
    // and from herself, and alone transfers ownership.
    let (st, v) = e.call(
        &olga,
        "POST",
        "/v1/tenants/acme/users/adam/password",
        json!({"password": "Adam-pass-4"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        e.code(
            &olga,
            "POST",
            "/v1/tenants/acme/users/olga/deactivate",
            json!({})
        ),
        refused("self_action")
    );
    assert_eq!(
        e.code(
            TOKEN,
            "POST",
            "/v1/tenants/acme/users/olga/delete",
            json!({})
        ),
        refused("owner_protected")
    );
    assert_eq!(
        e.code(
            TOKEN,
            "PATCH",
            "/v1/tenants/acme/users/olga",
            json!({"kind": "member"})
        ),
        refused("owner_protected")
    );
    assert_eq!(
        e.code(
            TOKEN,
            "PATCH",
            "/v1/tenants/acme/users/sam",
            json!({"kind": "owner"})
        ),
        refused("owner_protected")
    );
    assert_eq!(
        e.code(
            &alice,
            "POST",
            "/v1/tenants/acme/owner",
            json!({"user": "alice"})
        ),
        refused("owner_protected")
    );
    let (st, v) = e.call(
        &olga,
        "POST",
        "/v1/tenants/acme/owner",
        json!({"user": "alice"}),
    );
    assert_eq!(st, 200, "{v}");
    let kind = |u: &str| {
        e.admin("GET", &format!("/v1/tenants/acme/users/{u}"), json!(null))["kind"].clone()
    };
    assert_eq!(
        (kind("alice"), kind("olga")),
        (json!("owner"), json!("admin"))
    );
    // Now alice owns the tenant: she manages administrators.
    let (st, v) = e.call(
        &alice,
        "POST",
        "/v1/tenants/acme/users/adam/deactivate",
        json!({}),
    );
    assert_eq!(st, 200, "{v}");

    // Guests never use the management API.
    let g = e.admin(
        "POST",
        "/v1/tenants/acme/guests",
        json!({"name": "Visitor", "scope": "site-a", "expires_at": unix_now() + 86_400}),
    );
    let guest = g["token"].as_str().unwrap();
    assert_eq!(
        e.code(guest, "GET", "/v1/tenants/acme/users", json!(null)),
        forbidden()
    );
}

#[test]
fn a_tenant_is_created_with_its_owner() {
    let e = start();
    // Field rules name the owner's fields.
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants",
        json!({"id": "newco", "owner": {"email": "boss@newco.example", "first_name": "B", "password": "short"}}),
    );
    assert_eq!(st, 422, "{v}");
    let fields: Vec<&str> = v["details"]
        .as_array()
        .or(v["fields"].as_array())
        .map(|a| a.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(fields.contains(&"owner.password"), "{v}");
    assert!(fields.contains(&"owner.first_name"), "{v}");
    let v = e.admin(
        "POST",
        "/v1/tenants",
        json!({"id": "newco", "owner": {"id": "boss", "email": "boss@newco.example", "first_name": "Bo", "last_name": "Ss", "password": "Boss-pass-1"}}),
    );
    assert_eq!(v["data"]["owner"]["kind"], "owner", "{v}");
    assert!(!v.to_string().contains("Boss-pass-1"));
    let u = e.admin("GET", "/v1/tenants/newco/users/boss", json!(null));
    assert_eq!(u["kind"], "owner");
    let t = e.admin("GET", "/v1/tenants/newco", json!(null));
    assert_eq!(t["users_change_own_password"], false, "{t}");
    // The owner signs in with that password and manages the tenant.
    let (st, _, body) = e.s.request(
        "POST",
        "/v1/tenants/newco/sessions",
        &[("content-type", "application/json")],
        json!({"email": "boss@newco.example", "password": "Boss-pass-1"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(st, 201, "{body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, v) = e.call(
        &token,
        "POST",
        "/v1/tenants/newco/users",
        json!({"id": "worker", "email": "w@newco.example", "first_name": "Wo", "password": "Work-pass-1"}),
    );
    assert_eq!(st, 201, "{v}");
    // Its users are controlled: they do not change their own password.
    let worker = e.key("newco", "worker");
    assert_eq!(
        e.code(
            &worker,
            "POST",
            "/v1/tenants/newco/users/worker/password",
            json!({"password": "Work-pass-2"})
        ),
        refused("self_action")
    );
}

#[test]
fn one_role_per_place_when_the_tenant_asks_for_it() {
    let e = start();
    let assign = |role: &str, scope: &str| {
        e.code(
            TOKEN,
            "POST",
            "/v1/tenants/acme/assignments",
            json!({"user": "sam", "role": role, "scope": scope}),
        )
    };
    // Off by default: several roles at one place are normal.
    assert_eq!(assign("operator", "a1").0, 201);
    e.admin(
        "PATCH",
        "/v1/tenants/acme",
        json!({"one_role_per_place": true}),
    );
    assert_eq!(
        assign("administrator", "a1"),
        (409, "one_role_per_place".into())
    );
    // Another place is fine.
    assert_eq!(assign("administrator", "site-b").0, 201);
    let t = e.admin("GET", "/v1/tenants/acme", json!(null));
    assert_eq!(t["one_role_per_place"], true, "{t}");
}

#[test]
fn platform_administrators_manage_and_audit_every_tenant() {
    let e = start();
    // zed administers the platform tenant `other` (sign_in.platform_tenant).
    let zed = e.key("other", "zed");
    let (st, v) = e.call(&zed, "GET", "/v1/tenants", json!(null));
    assert_eq!(st, 200, "{v}");
    let (st, v) = e.call(&zed, "GET", "/v1/users?page_size=100", json!(null));
    assert_eq!(st, 200, "{v}");
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["tenant"] == "acme"));
    let (st, v) = e.call(
        &zed,
        "POST",
        "/v1/tenants/acme/users/sam/deactivate",
        json!({}),
    );
    assert_eq!(st, 200, "{v}");
    // The owner stays protected from the platform too.
    assert_eq!(
        e.code(
            &zed,
            "POST",
            "/v1/tenants/acme/users/olga/deactivate",
            json!({})
        ),
        refused("owner_protected")
    );
    // Audited as a platform administrator; the cross-tenant audit merges every tenant's log.
    let v = e.admin(
        "GET",
        "/v1/tenants/acme/audit?action=user.deactivate",
        json!(null),
    );
    assert_eq!(v["items"][0]["actor"], "platform:other/zed", "{v}");
    let (st, v) = e.call(&zed, "GET", "/v1/audit?limit=1000", json!(null));
    assert_eq!(st, 200, "{v}");
    let tenants: std::collections::BTreeSet<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["acme", "other"].into_iter().collect());
    let times: Vec<i64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["at_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
    // Paging by cursor visits every entry once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(c) => format!("/v1/audit?limit=2&after={c}"),
            None => "/v1/audit?limit=2".to_string(),
        };
        let v = e.admin("GET", &path, json!(null));
        for i in v["items"].as_array().unwrap() {
            seen.push((
                i["tenant"].as_str().unwrap().to_string(),
                i["revision"].as_u64().unwrap(),
            ));
        }
        match v["next_after"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), times.len(), "{seen:?}");
    // In the platform tenant itself, zed is one of its administrators.
    assert_eq!(
        e.code(
            &zed,
            "POST",
            "/v1/tenants/other/users/zed/deactivate",
            json!({})
        ),
        refused("self_action")
    );
    // Tenant administrators are not platform administrators.
    let alice = e.key("acme", "alice");
    assert_eq!(e.code(&alice, "GET", "/v1/audit", json!(null)).0, 401);
}

#[test]
fn the_default_role_gives_data_access_not_management() {
    let e = start();
    e.admin(
        "PATCH",
        "/v1/tenants/acme",
        json!({"default_role": "member"}),
    );
    let nora = e.key("acme", "nora");
    let mia = e.key("acme", "mia");
    // Data: every user reads everywhere.
    let (st, v) = e.s.post_json(
        "/v1/check",
        &json!({"tenant": "acme", "subject": "nora", "action": "asset:read", "resource": "b1", "min_revision": 1000})
            .to_string(),
    );
    assert!(st == 200 || st == 503, "{st} {v}");
    let (st, v) = e.s.post_json(
        "/v1/check",
        &json!({"tenant": "acme", "subject": "nora", "action": "asset:read", "resource": "b1"})
            .to_string(),
    );
    assert_eq!((st, v["allowed"].clone()), (200, json!(true)), "{v}");
    // Management: nothing more than before.
    let (st, v) = e.call(&nora, "GET", "/v1/tenants/acme/users", json!(null));
    assert_eq!((st, v["total"].clone()), (200, json!(0)), "{v}");
    assert_eq!(
        e.code(&nora, "GET", "/v1/tenants/acme/audit", json!(null)),
        forbidden()
    );
    assert_eq!(
        e.code(
            &nora,
            "POST",
            "/v1/tenants/acme/assignments",
            json!({"user": "nora", "role": "viewer", "scope": "b1"})
        ),
        forbidden()
    );
    // Users still live where their own roles are: mia sees site-a's users only.
    let (_, v) = e.call(&mia, "GET", "/v1/tenants/acme/users", json!(null));
    assert_eq!(ids(&v), ["mia", "oscar", "sam"]);
    // A tenant created with an owner (or a preset) has the member default role.
    let v = e.admin(
        "POST",
        "/v1/tenants",
        json!({"id": "withowner", "owner": {"email": "o@w.example", "first_name": "Ow", "password": "Owner-pass-1"}}),
    );
    assert_eq!(v["data"]["default_role"], "member", "{v}");
    let v = e.admin("POST", "/v1/tenants", json!({"id": "plain"}));
    assert!(
        v["data"].get("default_role").is_none_or(Value::is_null),
        "{v}"
    );
}
