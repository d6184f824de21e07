//! Groups, notification routing and the default member role, through HTTP against the real
//! binary: group-derived access on the data plane (cut at once by deactivation or removal),
//! deletion only of empty groups, `require_group` kept by every write, recipients of groups and
//! of notification rules, and the tenant's default role (data plane, explain, role listings).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use serde_json::{json, Value};
use server::Server;

const TOKEN: &str = "groups-admin-token-0123456789";

const DATA: &str = r#"
tenants:
  - id: acme
    nodes:
      - { id: acme, kind: organisation }
      - { id: north, kind: site, parent: acme }
      - { id: p1, kind: asset, parent: north }
      - { id: south, kind: site, parent: acme }
      - { id: p2, kind: asset, parent: south }
      - { id: annex, kind: organisation }
      - { id: a1, kind: asset, parent: annex }
    users:
      - { id: alice, email: alice@acme.example, name: Alice Admin, kind: admin }
      - { id: bob, email: bob@acme.example, name: Bob Baker }
      - { id: carl, email: carl@acme.example, name: Carl Cole }
      - { id: dora, email: dora@acme.example, name: Dora Dunn }
      - { id: erin, email: erin@acme.example, name: Erin Ellis }
      - { id: gus, email: gus@acme.example, name: Gus Guest, kind: guest, scope: north }
      - { id: ivy, email: ivy@acme.example, name: Ivy Idle, status: inactive }
    groups:
      - { id: crew, name: Crew, members: [bob, carl] }
      - { id: night, name: Night shift, members: [carl, dora, ivy] }
      - { id: spare }
    assignments:
      - { user: alice, role: administrator, scope: acme }
      - { group: crew, role: operator, scope: north }
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
        "portcullis-groups-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.yaml");
    std::fs::write(&data, DATA).unwrap();
    let store = dir.join("store");
    let s = Server::start(
        &[
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
    fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.s.admin_call(TOKEN, method, path, body)
    }
    /// A management call that must succeed; its answer.
    fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let (st, v) = self.call(method, path, body);
        assert!(st < 300, "{method} {path} -> {st} {v}");
        v
    }
    /// A management call that must be refused with `status` and `code`; its message.
    fn refused(&self, method: &str, path: &str, body: Value, status: u16, code: &str) -> String {
        let (st, v) = self.call(method, path, body);
        assert_eq!((st, v["code"].as_str()), (status, Some(code)), "{v}");
        v["error"].as_str().unwrap().to_string()
    }
    /// A data-plane check, with no `min_revision`: decided on whatever this process serves.
    fn check(&self, subject: &str, action: &str, resource: &str) -> bool {
        self.check_at(subject, action, resource, 0)
    }
    /// A data-plane check at `min_revision`.
    fn check_at(&self, subject: &str, action: &str, resource: &str, rev: u64) -> bool {
        let mut body =
            json!({"tenant": "acme", "subject": subject, "action": action, "resource": resource});
        if rev > 0 {
            body["min_revision"] = json!(rev);
        }
        let (st, v) = self.s.post_json("/v1/check", &body.to_string());
        assert_eq!(st, 200, "{v}");
        v["allowed"].as_bool().unwrap()
    }
    fn explain(&self, subject: &str, action: &str, resource: &str, rev: u64) -> Value {
        let body = json!({"tenant": "acme", "subject": subject, "action": action,
            "resource": resource, "min_revision": rev});
        let (st, v) = self.s.post_json("/v1/explain", &body.to_string());
        assert_eq!(st, 200, "{v}");
        v
    }
}

fn rev(v: &Value) -> u64 {
    v["revision"].as_u64().unwrap()
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_group_gives_its_active_members_its_scope_and_loses_it_at_once() {
    let e = start();
    // The group's assignment at `north` reaches both members, in north's subtree only.
    assert!(e.check("bob", "asset:operate", "p1"));
    assert!(e.check("carl", "asset:operate", "north"));
    assert!(!e.check("bob", "asset:operate", "p2"));
    assert!(!e.check("dora", "asset:operate", "p1"));
    // Deactivating the group cuts its members' group-derived access with the write's answer,
    // and reactivating restores it: each check right after the answer, no min_revision.
    for _ in 0..10 {
        e.admin(
            "PATCH",
            "/v1/tenants/acme/groups/crew",
            json!({"status": "inactive"}),
        );
        assert!(!e.check("bob", "asset:operate", "p1"), "inactive group");
        e.admin(
            "PATCH",
            "/v1/tenants/acme/groups/crew",
            json!({"status": "active"}),
        );
        assert!(e.check("bob", "asset:operate", "p1"), "active again");
    }
    let v = e.admin(
        "PATCH",
        "/v1/tenants/acme/groups/crew",
        json!({"status": "inactive"}),
    );
    let x = e.explain("bob", "asset:operate", "p1", rev(&v));
    assert_eq!(x["reason"], "no_matching_assignment", "{x}");
    assert_eq!(x["assignments"][0]["principal"], "group:crew", "{x}");
    assert_eq!(x["assignments"][0]["outcome"], "group_inactive", "{x}");
    e.admin(
        "PATCH",
        "/v1/tenants/acme/groups/crew",
        json!({"status": "active"}),
    );
    // A member removed loses the group's access with the answer too.
    for _ in 0..5 {
        e.admin(
            "DELETE",
            "/v1/tenants/acme/groups/crew/members/carl",
            Value::Null,
        );
        assert!(!e.check("carl", "asset:operate", "p1"), "removed member");
        // An addition grants; read at its revision.
        let v = e.admin(
            "POST",
            "/v1/tenants/acme/groups/crew/members",
            json!({"user": "carl"}),
        );
        assert!(e.check_at("carl", "asset:operate", "p1", rev(&v)));
    }
    // An inactive user gains nothing from an active group.
    let v = e.admin(
        "POST",
        "/v1/tenants/acme/groups/crew/members",
        json!({"user": "ivy"}),
    );
    assert!(!e.check_at("ivy", "asset:operate", "p1", rev(&v)));
}

#[test]
fn only_an_empty_group_that_no_rule_names_can_be_deleted() {
    let e = start();
    let msg = e.refused(
        "DELETE",
        "/v1/tenants/acme/groups/crew",
        Value::Null,
        409,
        "group_not_empty",
    );
    assert!(msg.contains("2 member(s)"), "{msg}");
    // Nothing was deleted: the group and its assignment still give access.
    assert!(e.check("bob", "asset:operate", "p1"));
    for m in ["bob", "carl"] {
        e.admin(
            "DELETE",
            &format!("/v1/tenants/acme/groups/crew/members/{m}"),
            Value::Null,
        );
    }
    e.admin("DELETE", "/v1/tenants/acme/groups/crew", Value::Null);
    e.refused(
        "GET",
        "/v1/tenants/acme/groups/crew",
        Value::Null,
        404,
        "not_found",
    );
    // With its assignments.
    let v = e.admin(
        "GET",
        "/v1/tenants/acme/assignments?group=crew",
        Value::Null,
    );
    assert_eq!(v["total"], 0, "{v}");
    // A group a notification rule targets stays until the rule lets go of it.
    e.admin(
        "POST",
        "/v1/tenants/acme/notification-rules",
        json!({"id": "spares", "event": "stock.low", "groups": ["spare"]}),
    );
    let msg = e.refused(
        "DELETE",
        "/v1/tenants/acme/groups/spare",
        Value::Null,
        409,
        "in_use",
    );
    assert!(msg.contains("'spares'"), "{msg}");
    e.admin(
        "DELETE",
        "/v1/tenants/acme/notification-rules/spares",
        Value::Null,
    );
    e.admin("DELETE", "/v1/tenants/acme/groups/spare", Value::Null);
}

#[test]
fn require_group_keeps_every_ordinary_user_in_a_group() {
    let e = start();
    // Off: users come and go from groups freely.
    e.admin(
        "POST",
        "/v1/tenants/acme/users",
        json!({"email": "fay@acme.example", "first_name": "Fay"}),
    );
    e.admin("PATCH", "/v1/tenants/acme", json!({"require_group": true}));
    // A new ordinary user needs `groups`; nothing is written when refused.
    let msg = e.refused(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "hal", "email": "hal@acme.example", "first_name": "Hal"}),
        409,
        "group_required",
    );
    assert!(msg.contains("'hal'"), "{msg}");
    e.refused(
        "GET",
        "/v1/tenants/acme/users/hal",
        Value::Null,
        404,
        "not_found",
    );
    e.refused(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "hal", "email": "hal@acme.example", "first_name": "Hal", "groups": ["nope"]}),
        422,
        "invalid",
    );
    let v = e.admin(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "hal", "email": "hal@acme.example", "first_name": "Hal", "groups": ["crew"]}),
    );
    // Joined in the same write: the group's access comes with it.
    assert!(e.check_at("hal", "asset:operate", "p1", rev(&v)));
    let u = e.admin("GET", "/v1/tenants/acme/users/hal", Value::Null);
    assert_eq!(u["groups"], json!(["crew"]));
    // Administrators are exempt.
    e.admin(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "ada", "email": "ada@acme.example", "first_name": "Ada", "kind": "admin"}),
    );
    // Removing a user from the last group is refused; from one of several is not.
    let msg = e.refused(
        "DELETE",
        "/v1/tenants/acme/groups/crew/members/bob",
        Value::Null,
        409,
        "group_required",
    );
    assert!(msg.contains("'bob'") && msg.contains("'crew'"), "{msg}");
    assert!(e.check("bob", "asset:operate", "p1"));
    e.admin(
        "DELETE",
        "/v1/tenants/acme/groups/crew/members/carl",
        Value::Null,
    );
    // An admin without a group cannot be made an ordinary user; with one, can.
    e.refused(
        "PATCH",
        "/v1/tenants/acme/users/ada",
        json!({"kind": "member"}),
        409,
        "group_required",
    );
    e.admin(
        "POST",
        "/v1/tenants/acme/groups/spare/members",
        json!({"user": "ada"}),
    );
    e.admin(
        "PATCH",
        "/v1/tenants/acme/users/ada",
        json!({"kind": "member"}),
    );
    // Deactivating a group is never refused (its members keep a group, inactive).
    e.admin(
        "PATCH",
        "/v1/tenants/acme/groups/crew",
        json!({"status": "inactive"}),
    );
    // Turned off, the rule no longer applies.
    e.admin("PATCH", "/v1/tenants/acme", json!({"require_group": false}));
    e.admin(
        "DELETE",
        "/v1/tenants/acme/groups/crew/members/bob",
        Value::Null,
    );
    e.admin(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "ike", "email": "ike@acme.example", "first_name": "Ike"}),
    );
}

#[test]
fn notification_rules_reach_the_active_members_of_their_active_groups() {
    let e = start();
    let r = e.admin(
        "GET",
        "/v1/tenants/acme/groups/night/recipients",
        Value::Null,
    );
    // ivy is inactive: not a recipient.
    assert_eq!(ids(&r), ["carl", "dora"], "{r}");
    assert_eq!(
        r["items"][0],
        json!({"id": "carl", "name": "Carl Cole", "email": "carl@acme.example"})
    );
    e.refused(
        "GET",
        "/v1/tenants/acme/groups/nope/recipients",
        Value::Null,
        404,
        "not_found",
    );
    // Rules: CRUD, validation, audit.
    e.refused(
        "POST",
        "/v1/tenants/acme/notification-rules",
        json!({"id": "alarms", "event": "alarm raised", "groups": ["crew", "crew", "nope"]}),
        422,
        "invalid",
    );
    e.refused(
        "POST",
        "/v1/tenants/acme/notification-rules",
        json!({"id": "alarms", "event": "alarm.raised", "groups": []}),
        422,
        "invalid",
    );
    let v = e.admin(
        "POST",
        "/v1/tenants/acme/notification-rules",
        json!({"id": "alarms", "name": "Alarms", "event": "alarm.raised", "groups": ["crew", "night"]}),
    );
    assert_eq!(v["data"]["groups"], json!(["crew", "night"]));
    e.refused(
        "POST",
        "/v1/tenants/acme/notification-rules",
        json!({"id": "alarms", "event": "alarm.raised", "groups": ["crew"]}),
        409,
        "already_exists",
    );
    let l = e.admin("GET", "/v1/tenants/acme/notification-rules", Value::Null);
    assert_eq!(ids(&l), ["alarms"]);
    let one = e.admin(
        "GET",
        "/v1/tenants/acme/notification-rules/alarms",
        Value::Null,
    );
    assert_eq!(
        (one["event"].as_str(), one["name"].as_str()),
        (Some("alarm.raised"), Some("Alarms"))
    );
    // The union of the groups' recipients, each once (carl is in both).
    let r = e.admin(
        "GET",
        "/v1/tenants/acme/notification-rules/alarms/recipients",
        Value::Null,
    );
    assert_eq!(ids(&r), ["bob", "carl", "dora"], "{r}");
    assert_eq!(r["total"], 3);
    assert_eq!(r["event"], "alarm.raised");
    // Paged like other lists.
    let p = e.admin(
        "GET",
        "/v1/tenants/acme/notification-rules/alarms/recipients?page_size=2",
        Value::Null,
    );
    assert_eq!(
        (ids(&p), p["next_page_token"].as_str()),
        (vec!["bob".to_string(), "carl".to_string()], Some("2"))
    );
    let p = e.admin(
        "GET",
        "/v1/tenants/acme/notification-rules/alarms/recipients?page_size=2&page_token=2",
        Value::Null,
    );
    assert_eq!(
        (ids(&p), &p["next_page_token"]),
        (vec!["dora".to_string()], &Value::Null)
    );
    // An inactive user, an inactive group, a deleted user are not reached.
    e.admin("POST", "/v1/tenants/acme/users/bob/deactivate", Value::Null);
    e.admin(
        "PATCH",
        "/v1/tenants/acme/groups/night",
        json!({"status": "inactive"}),
    );
    let r = e.admin(
        "GET",
        "/v1/tenants/acme/notification-rules/alarms/recipients",
        Value::Null,
    );
    assert_eq!(ids(&r), ["carl"], "{r}");
    let r = e.admin(
        "GET",
        "/v1/tenants/acme/groups/night/recipients",
        Value::Null,
    );
    assert_eq!(ids(&r), Vec::<String>::new(), "{r}");
    e.admin("POST", "/v1/tenants/acme/users/carl/delete", Value::Null);
    let r = e.admin(
        "GET",
        "/v1/tenants/acme/notification-rules/alarms/recipients",
        Value::Null,
    );
    assert_eq!(r["total"], 0, "{r}");
    // Edits, then deletion; every write is audited.
    e.admin(
        "PATCH",
        "/v1/tenants/acme/groups/night",
        json!({"status": "active"}),
    );
    e.admin(
        "PATCH",
        "/v1/tenants/acme/notification-rules/alarms",
        json!({"groups": ["night"], "event": "alarm.cleared"}),
    );
    let r = e.admin(
        "GET",
        "/v1/tenants/acme/notification-rules/alarms/recipients",
        Value::Null,
    );
    assert_eq!(
        (ids(&r), r["event"].as_str()),
        (vec!["dora".to_string()], Some("alarm.cleared"))
    );
    e.admin(
        "DELETE",
        "/v1/tenants/acme/notification-rules/alarms",
        Value::Null,
    );
    e.refused(
        "GET",
        "/v1/tenants/acme/notification-rules/alarms/recipients",
        Value::Null,
        404,
        "not_found",
    );
    // The rules' commits went through the change stream: the data plane follows (it serves
    // the tenant at the latest revision, decisions unchanged).
    let t = e.admin("GET", "/v1/tenants/acme", Value::Null);
    assert!(!e.check_at("dora", "asset:read", "p1", rev(&t)));
    assert!(e.check_at("alice", "asset:read", "p1", rev(&t)));
    let audit = e.admin("GET", "/v1/tenants/acme/audit?limit=100", Value::Null);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    for a in [
        "notification_rule.create",
        "notification_rule.update",
        "notification_rule.delete",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
}

#[test]
fn the_default_role_grants_every_user_but_guests_its_permissions_at_the_roots() {
    let e = start();
    // Off by default: existing decisions are unchanged.
    assert!(!e.check("erin", "asset:read", "p1"));
    let roles = e.admin("GET", "/v1/tenants/acme/roles", Value::Null);
    let member = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "member")
        .unwrap()
        .clone();
    assert_eq!(
        (
            &member["builtin"],
            &member["default"],
            &member["permissions"]
        ),
        (&json!(true), &json!(false), &json!(["*:read"]))
    );
    e.refused(
        "PATCH",
        "/v1/tenants/acme",
        json!({"default_role": "nope"}),
        422,
        "invalid",
    );
    let v = e.admin(
        "PATCH",
        "/v1/tenants/acme",
        json!({"default_role": "member"}),
    );
    let r = rev(&v);
    // Every active user, at every root (both trees of the forest), read-only.
    for res in ["acme", "p1", "p2", "a1"] {
        assert!(e.check_at("erin", "asset:read", res, r), "{res}");
    }
    assert!(!e.check_at("erin", "asset:operate", "p1", r));
    // Not guests, not inactive users.
    assert!(!e.check_at("gus", "asset:read", "p1", r));
    assert!(!e.check_at("ivy", "asset:read", "p1", r));
    // Batch and filter and scopes see it too.
    let (st, f) = e.s.post_json(
        "/v1/filter",
        &json!({"tenant": "acme", "subject": "erin", "action": "asset:read",
            "resources": ["p1", "a1", "ghost"], "min_revision": r})
        .to_string(),
    );
    assert_eq!((st, &f["allowed"]), (200, &json!(["p1", "a1"])), "{f}");
    // Explain names it.
    let x = e.explain("erin", "asset:read", "p2", r);
    assert_eq!(x["reason"], "granted", "{x}");
    assert_eq!(
        (
            &x["matched"]["principal"],
            &x["matched"]["role"],
            &x["matched"]["scope"]
        ),
        (&json!("default_role"), &json!("member"), &json!("acme")),
        "{x}"
    );
    // Role listings mark it.
    let one = e.admin("GET", "/v1/tenants/acme/roles/member", Value::Null);
    assert_eq!(one["default"], true);
    let t = e.admin("GET", "/v1/tenants/acme", Value::Null);
    assert_eq!(t["default_role"], "member");
    // A custom role as the default; it cannot be deleted while it is.
    e.admin(
        "POST",
        "/v1/tenants/acme/roles",
        json!({"id": "reader", "permissions": ["asset:read", "door:open"]}),
    );
    let v = e.admin(
        "PATCH",
        "/v1/tenants/acme",
        json!({"default_role": "reader"}),
    );
    assert!(e.check_at("erin", "door:open", "a1", rev(&v)));
    assert!(!e.check_at("erin", "report:read", "a1", rev(&v)));
    e.refused(
        "DELETE",
        "/v1/tenants/acme/roles/reader",
        Value::Null,
        409,
        "in_use",
    );
    // Turned off with null: back to assignments only.
    let v = e.admin("PATCH", "/v1/tenants/acme", json!({"default_role": null}));
    assert!(!e.check_at("erin", "asset:read", "p1", rev(&v)));
    e.admin("DELETE", "/v1/tenants/acme/roles/reader", Value::Null);
    // A tenant created with the default role on.
    e.admin(
        "POST",
        "/v1/tenants",
        json!({"id": "beta", "default_role": "member"}),
    );
    e.admin(
        "POST",
        "/v1/tenants/beta/nodes",
        json!({"id": "hq", "kind": "organisation"}),
    );
    let v = e.admin(
        "POST",
        "/v1/tenants/beta/users",
        json!({"id": "zed", "email": "zed@beta.example", "first_name": "Zed"}),
    );
    let (st, c) = e.s.post_json(
        "/v1/check",
        &json!({"tenant": "beta", "subject": "zed", "action": "site:read", "resource": "hq",
            "min_revision": rev(&v)})
        .to_string(),
    );
    assert_eq!((st, &c["allowed"]), (200, &json!(true)), "{c}");
}

#[test]
fn data_files_set_the_default_role() {
    let dir = std::env::temp_dir().join(format!("portcullis-groups-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.yaml");
    std::fs::write(
        &file,
        r#"
tenants:
  - id: t
    default_role: member
    nodes: [ { id: root, kind: organisation }, { id: x, kind: asset, parent: root } ]
    users:
      - { id: u, email: u@t.example, name: U }
      - { id: g, email: g@t.example, name: G, kind: guest, scope: x }
tests:
  - { tenant: t, subject: u, action: asset:read, resource: x, allowed: true }
  - { tenant: t, subject: u, action: asset:write, resource: x, allowed: false }
  - { tenant: t, subject: g, action: asset:read, resource: x, allowed: false }
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("test")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(
        &file,
        "tenants:\n  - id: t\n    default_role: nope\n    nodes: [ { id: root, kind: organisation } ]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("test")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("default_role names unknown role 'nope'"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_default_role_leaves_scoped_management_where_it_was() {
    let e = start();
    e.admin(
        "POST",
        "/v1/tenants/acme/roles",
        json!({"id": "north-users", "permissions": ["user:*", "assignment:*", "*:read"]}),
    );
    e.admin(
        "POST",
        "/v1/tenants/acme/assignments",
        json!({"user": "dora", "role": "north-users", "scope": "north"}),
    );
    e.admin(
        "POST",
        "/v1/tenants/acme/assignments",
        json!({"user": "erin", "role": "viewer", "scope": "p1"}),
    );
    let key = e.admin(
        "POST",
        "/v1/tenants/acme/api-keys",
        json!({"user": "dora", "name": "test"}),
    )["data"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    // Recipients list users' emails: `user:read` at the tenant level is needed, not at a site.
    let (st, body) = e.s.admin_call(
        &key,
        "GET",
        "/v1/tenants/acme/groups/crew/recipients",
        Value::Null,
    );
    assert_eq!(st, 403, "{body}");
    let v = e.admin(
        "PATCH",
        "/v1/tenants/acme",
        json!({"default_role": "member"}),
    );
    // Every user now holds `member` at the roots; erin still lives at p1, inside dora's site.
    assert!(e.check_at("erin", "asset:read", "a1", rev(&v)));
    let (st, body) = e.s.admin_call(
        &key,
        "PATCH",
        "/v1/tenants/acme/users/erin",
        json!({"name": "Erin E."}),
    );
    assert_eq!(st, 200, "{body}");
    // A user with no assignment of their own lives at the tenant level: out of dora's reach.
    let (st, body) = e.s.admin_call(
        &key,
        "PATCH",
        "/v1/tenants/acme/users/ivy",
        json!({"name": "Ivy I."}),
    );
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    // The default role is data access only: it gives dora no tenant-wide management reads.
    let (st, body) = e.s.admin_call(
        &key,
        "GET",
        "/v1/tenants/acme/groups/crew/recipients",
        Value::Null,
    );
    assert_eq!(st, 403, "{body}");
}
