//! Identity through HTTP against the real binary and a real store: password rules, sign-in and
//! its uniform refusal, throttling, logout, sessions ended by deactivation, deletion and
//! password changes (data plane, forward-auth, management API), logout periods, access cards
//! and channels, invitations (with a real webhook receiver), API keys, guests, and secrets kept
//! out of every answer and of the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use server::{header_of, Server};

const TOKEN: &str = "identity-admin-token-0123456789";

const DATA: &str = r#"
tenants:
  - id: acme
    nodes:
      - { id: acme, kind: organisation }
      - { id: north, kind: site, parent: acme }
      - { id: p1, kind: asset, parent: north }
      - { id: south, kind: site, parent: acme }
      - { id: p2, kind: asset, parent: south }
    users:
      - { id: alice, email: alice@acme.example, first_name: Alice, password: Alice-pass-1, kind: admin }
      - { id: bob, email: bob@acme.example, first_name: Bob, password: Bob-pass-1, logout: 1d }
      - { id: carl, email: Carl@Acme.example, first_name: Carl, password: Carl-pass-1 }
      - { id: dora, email: dora@acme.example, first_name: Dora, password: Dora-pass-1, status: inactive }
      - { id: fred, email: fred@acme.example, first_name: Fred, password: Fred-pass-1 }
      - { id: gina, email: gina@acme.example, first_name: Gina, password: Gina-pass-1 }
    groups:
      - { id: weekly, logout: 5d, members: [carl] }
      - { id: field-crew, access: [field], members: [fred] }
    assignments:
      - { user: alice, role: administrator, scope: acme }
      - { user: bob, role: operator, scope: north }
      - { user: carl, role: viewer, scope: acme }
      - { user: fred, role: viewer, scope: acme }
      - { user: gina, role: operator, scope: acme }
  - id: other
    nodes: [ { id: other, kind: organisation } ]
    users:
      - { id: alice, email: alice@acme.example, first_name: Alice, password: Other-pass-1, kind: admin }
    assignments:
      - { user: alice, role: administrator, scope: other }
"#;

struct Env {
    s: Server,
    dir: std::path::PathBuf,
    hooks: mpsc::Receiver<Value>,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real HTTP receiver for the invitation webhook: every POSTed JSON body goes to the channel.
fn webhook_receiver() -> (u16, mpsc::Receiver<Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body) {
                let _ = tx.send(v);
            }
        }
    });
    (port, rx)
}

fn start() -> Env {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portcullis-identity-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.yaml");
    std::fs::write(&data, DATA).unwrap();
    let (port, hooks) = webhook_receiver();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
sign_in:
  max_failures_per_account: 3
  max_failures_per_client: 1000
  failure_window_seconds: 60
  invitation_webhook: http://127.0.0.1:{port}/hooks/invite
forward_auth:
  identity: bearer
  routes:
    - {{ methods: [GET], path: "/api/{{tenant}}/assets/{{asset}}", tenant: "{{tenant}}", action: "asset:read", resource: "{{asset}}" }}
"#
        ),
    )
    .unwrap();
    let store = dir.join("store");
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
    Env { s, dir, hooks }
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
    fn sign_in(&self, tenant: &str, body: Value) -> (u16, Value, String) {
        let (st, head, b) = self.s.request(
            "POST",
            &format!("/v1/tenants/{tenant}/sessions"),
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        );
        (st, serde_json::from_str(&b).unwrap_or(Value::Null), head)
    }
    fn login(&self, email: &str, password: &str) -> Value {
        let (st, v, _) = self.sign_in("acme", json!({"email": email, "password": password}));
        assert_eq!(st, 201, "{v}");
        v
    }
    /// A data-plane check with a token: `Some(allowed)`, or `None` when the token was refused.
    fn check(&self, token: &str, action: &str, resource: &str) -> Option<bool> {
        let (st, v) = self.s.post_json(
            "/v1/check",
            &json!({"tenant": "acme", "token": token, "action": action, "resource": resource})
                .to_string(),
        );
        match st {
            200 => Some(v["allowed"].as_bool().unwrap()),
            401 => None,
            _ => panic!("check: {st} {v}"),
        }
    }
    /// Forward-auth status for `GET /api/acme/assets/{asset}` with a bearer token.
    fn gateway(&self, token: &str, asset: &str) -> u16 {
        let auth = format!("Bearer {token}");
        let uri = format!("/api/acme/assets/{asset}");
        let (st, _, _) = self.s.request(
            "GET",
            "/v1/forward-auth",
            &[
                ("authorization", auth.as_str()),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", uri.as_str()),
            ],
            b"",
        );
        st
    }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn password_and_name_rules_name_each_field() {
    let e = start();
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/users",
        json!({"email": "x@acme.example", "first_name": "J", "last_name": "D4", "password": "short"}),
    );
    assert_eq!((st, v["code"].as_str()), (422, Some("invalid")), "{v}");
    let fields: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["first_name", "last_name", "password"], "{v}");
    for (password, missing) in [
        ("alllowercase1", "an upper-case letter"),
        ("ALLUPPERCASE1", "a lower-case letter"),
        ("NoDigitsHere", "a digit"),
        ("Sh0rt", "at least 8 characters"),
    ] {
        let (st, v) = e.call(
            TOKEN,
            "POST",
            "/v1/tenants/acme/users",
            json!({"email": "y@acme.example", "first_name": "Jo", "password": password}),
        );
        assert_eq!(st, 422, "{password}: {v}");
        assert!(v["error"].as_str().unwrap().contains(missing), "{v}");
    }
    // Names: letters of any script, spaces, dots, hyphens.
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/users",
        json!({"email": "zoe@acme.example", "first_name": "Zoë-Anne", "last_name": "O. Brien", "password": "Good-pass-1"}),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["name"], "Zoë-Anne O. Brien");
    assert_eq!(v["data"]["id"], "zoe", "id derived from the email");
    assert!(
        v["data"].get("invitation").is_none(),
        "a password: no invitation"
    );
    // Emails: unique per tenant case-insensitively, at most 254 characters, immutable.
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/users",
        json!({"email": "ZOE@acme.example", "first_name": "Zed", "password": "Good-pass-1"}),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("duplicate_email")),
        "{v}"
    );
    let long = format!("{}@acme.example", "a".repeat(250));
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/users",
        json!({"email": long, "first_name": "Long"}),
    );
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["field"], "email");
    let (st, _) = e.call(
        TOKEN,
        "PATCH",
        "/v1/tenants/acme/users/zoe",
        json!({"email": "other@acme.example"}),
    );
    assert_eq!(st, 422);
}

#[test]
fn sign_in_succeeds_and_every_failure_is_the_same_401() {
    let e = start();
    let v = e.login("alice@acme.example", "Alice-pass-1");
    let token = v["token"].as_str().unwrap();
    assert_eq!(v["user"]["id"], "alice");
    let c = claims(token);
    assert_eq!(
        (
            c["iss"].as_str(),
            c["sub"].as_str(),
            c["tenant"].as_str(),
            c["ch"].as_str()
        ),
        (
            Some("portcullis"),
            Some("alice"),
            Some("acme"),
            Some("console")
        )
    );
    assert_eq!(c["sid"], v["session"]);
    // Emails compare case-insensitively.
    e.login("CARL@acme.EXAMPLE", "Carl-pass-1");
    // The token works on the data plane.
    assert_eq!(e.check(token, "asset:read", "p1"), Some(true));

    let refusals = [
        json!({"email": "nobody@acme.example", "password": "Alice-pass-1"}),
        json!({"email": "bob@acme.example", "password": "Wrong-pass-1"}),
        json!({"email": "dora@acme.example", "password": "Dora-pass-1"}),
    ];
    let mut bodies = Vec::new();
    for r in refusals {
        let (st, v, head) = e.sign_in("acme", r);
        assert_eq!(st, 401, "{v}");
        assert_eq!(v["code"], "invalid_credentials");
        assert!(header_of(&head, "www-authenticate").is_some());
        bodies.push(v.to_string());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    // A deleted user: the same answer.
    e.admin("POST", "/v1/tenants/acme/users/gina/delete", json!({}));
    let (st, v, _) = e.sign_in(
        "acme",
        json!({"email": "gina@acme.example", "password": "Gina-pass-1"}),
    );
    assert_eq!((st, v.to_string()), (401, bodies[0].clone()));
    // Another tenant's password is not this tenant's.
    let (st, _, _) = e.sign_in(
        "other",
        json!({"email": "alice@acme.example", "password": "Alice-pass-1"}),
    );
    assert_eq!(st, 401);
    let (st, _, _) = e.sign_in(
        "other",
        json!({"email": "alice@acme.example", "password": "Other-pass-1"}),
    );
    assert_eq!(st, 201);
    // Bad bodies are 400, not 401.
    let (st, _, _) = e.sign_in("acme", json!({"email": "alice@acme.example"}));
    assert_eq!(st, 400);

    // Timing: an unknown email costs the same argon2 work as a wrong password (measured and
    // reported, not asserted: timings are noisy on a shared machine).
    let time = |email: &str| {
        let t = Instant::now();
        for _ in 0..2 {
            let (st, _, _) =
                e.sign_in("other", json!({"email": email, "password": "Wrong-pass-9"}));
            assert!(st == 401 || st == 429);
        }
        t.elapsed().as_secs_f64() * 500.0
    };
    let unknown = time("ghost@acme.example");
    let wrong = time("alice@acme.example");
    eprintln!("sign-in refusal: unknown email {unknown:.1} ms, wrong password {wrong:.1} ms");
}

#[test]
fn repeated_failures_are_throttled_with_retry_after() {
    let e = start();
    for _ in 0..3 {
        let (st, _, _) = e.sign_in(
            "acme",
            json!({"email": "bob@acme.example", "password": "Nope-nope-1"}),
        );
        assert_eq!(st, 401);
    }
    let (st, v, head) = e.sign_in(
        "acme",
        json!({"email": "bob@acme.example", "password": "Bob-pass-1"}),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (429, Some("too_many_attempts")),
        "{v}"
    );
    let retry: i64 = header_of(&head, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Other accounts are not locked out by it.
    e.login("carl@acme.example", "Carl-pass-1");
    let (_, _, metrics) = e.s.request("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("portcullis_sign_ins_total{method=\"password\",result=\"throttled\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_sign_ins_total{method=\"password\",result=\"refused\"} 3"));
    assert!(!metrics.contains("Bob-pass-1") && !metrics.contains("Nope-nope-1"));
}

#[test]
fn logout_and_account_changes_end_sessions_everywhere() {
    let e = start();
    // Logout: that token is dead at once, on every endpoint; another session lives on.
    let t1 = e.login("bob@acme.example", "Bob-pass-1")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let t2 = e.login("bob@acme.example", "Bob-pass-1")["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(e.check(&t1, "asset:read", "p1"), Some(true));
    assert_eq!(e.gateway(&t1, "p1"), 200);
    let (st, _) = e.call(
        &t1,
        "DELETE",
        "/v1/tenants/acme/sessions/current",
        Value::Null,
    );
    assert_eq!(st, 204);
    assert_eq!(e.check(&t1, "asset:read", "p1"), None);
    assert_eq!(e.gateway(&t1, "p1"), 401);
    let (st, _) = e.call(
        &t1,
        "DELETE",
        "/v1/tenants/acme/sessions/current",
        Value::Null,
    );
    assert_eq!(st, 401);
    assert_eq!(e.check(&t2, "asset:read", "p1"), Some(true));

    // A password change ends every session of the user (the changer's own included).
    let (st, v) = e.call(
        &t2,
        "POST",
        "/v1/tenants/acme/users/bob/password",
        json!({"password": "Bob-pass-2"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(e.check(&t2, "asset:read", "p1"), None);
    assert_eq!(e.gateway(&t2, "p1"), 401);
    let (st, _, _) = e.sign_in(
        "acme",
        json!({"email": "bob@acme.example", "password": "Bob-pass-1"}),
    );
    assert_eq!(st, 401);
    let t3 = e.login("bob@acme.example", "Bob-pass-2")["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(e.check(&t3, "asset:read", "p1"), Some(true));
    // A member may change only their own password.
    let (st, v) = e.call(
        &t3,
        "POST",
        "/v1/tenants/acme/users/carl/password",
        json!({"password": "Carl-pass-2"}),
    );
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")));

    // Deactivation by an administrator (a session of the tenant's admin) ends them too.
    let admin = e.login("alice@acme.example", "Alice-pass-1")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, v) = e.call(
        &admin,
        "POST",
        "/v1/tenants/acme/users/bob/deactivate",
        json!({}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(e.check(&t3, "asset:read", "p1"), None);
    assert_eq!(e.gateway(&t3, "p1"), 401);
    let (st, _) = e.call(
        &t3,
        "DELETE",
        "/v1/tenants/acme/sessions/current",
        Value::Null,
    );
    assert_eq!(st, 401);
    // Reactivation does not revive old sessions.
    e.admin("POST", "/v1/tenants/acme/users/bob/activate", json!({}));
    assert_eq!(e.check(&t3, "asset:read", "p1"), None);
    // Deletion.
    let t4 = e.login("bob@acme.example", "Bob-pass-2")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = e.call(&admin, "DELETE", "/v1/tenants/acme/users/bob", Value::Null);
    assert_eq!(st, 200);
    assert_eq!(e.check(&t4, "asset:read", "p1"), None);
    assert_eq!(e.gateway(&t4, "p1"), 401);

    // The audit names the real actor and channel.
    let audit = e.admin("GET", "/v1/tenants/acme/audit?actor=alice", Value::Null);
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["action"].as_str().unwrap(), i["actor"].as_str().unwrap()))
        .collect();
    assert!(
        actions.contains(&("user.deactivate", "alice#console")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("user.delete", "alice#console")),
        "{actions:?}"
    );
    let bob = e.admin("GET", "/v1/tenants/acme/audit?actor=bob", Value::Null);
    assert!(bob["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["action"] == "user.password"));
    // A session of one tenant is nothing in another.
    let (st, _) = e.call(&admin, "GET", "/v1/tenants/other/users", Value::Null);
    assert_eq!(st, 403);
    let (st, _) = e.call(&admin, "GET", "/v1/tenants", Value::Null);
    assert_eq!(st, 403, "platform endpoints need the platform token");
}

#[test]
fn logout_periods_come_from_user_group_tenant_or_the_default() {
    let e = start();
    let hours = |email: &str, password: &str| {
        let v = e.login(email, password);
        let c = claims(v["token"].as_str().unwrap());
        assert_eq!(c["exp"], v["expires_at"]);
        (c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()) / 3600
    };
    assert_eq!(hours("alice@acme.example", "Alice-pass-1"), 12, "default");
    assert_eq!(hours("bob@acme.example", "Bob-pass-1"), 22, "user: 1d");
    assert_eq!(hours("carl@acme.example", "Carl-pass-1"), 110, "group: 5d");
    e.admin("PATCH", "/v1/tenants/acme", json!({"logout": 8}));
    assert_eq!(hours("alice@acme.example", "Alice-pass-1"), 8, "tenant");
    assert_eq!(
        hours("carl@acme.example", "Carl-pass-1"),
        110,
        "a group beats the tenant"
    );
    let (st, v) = e.call(TOKEN, "PATCH", "/v1/tenants/acme", json!({"logout": "2w"}));
    assert_eq!(st, 400, "{v}");
}

#[test]
fn access_cards_sign_in_through_the_field_channel_and_groups_limit_channels() {
    let e = start();
    // Fred's only group allows the field channel: no console sign-in.
    let (st, v, _) = e.sign_in(
        "acme",
        json!({"email": "fred@acme.example", "password": "Fred-pass-1"}),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("sign_in_not_allowed")),
        "{v}"
    );
    let v = e.admin(
        "POST",
        "/v1/tenants/acme/users/fred/cards",
        json!({"card": "04A1B2C3"}),
    );
    assert_eq!(v["data"]["cards"], 1);
    let (st, v, _) = e.sign_in("acme", json!({"card": "04a1b2c3"}));
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        (v["user"]["id"].as_str(), v["channel"].as_str()),
        (Some("fred"), Some("field"))
    );
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(claims(&token)["ch"], "field");
    assert_eq!(e.check(&token, "asset:read", "p2"), Some(true));
    // A card is one user's.
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/users/carl/cards",
        json!({"card": "04A1B2C3"}),
    );
    assert_eq!((st, v["code"].as_str()), (409, Some("card_in_use")));
    // Unknown card: the uniform 401.
    let (st, v, _) = e.sign_in("acme", json!({"card": "DEADBEEF"}));
    assert_eq!((st, v["code"].as_str()), (401, Some("invalid_credentials")));
    // A lost card: removed, and its sessions end.
    e.admin("DELETE", "/v1/tenants/acme/users/fred/cards", Value::Null);
    assert_eq!(e.check(&token, "asset:read", "p2"), None);
    let (st, _, _) = e.sign_in("acme", json!({"card": "04a1b2c3"}));
    assert_eq!(st, 401);
    // require_group: an inactive group leaves its members unable to sign in.
    e.admin("PATCH", "/v1/tenants/acme", json!({"require_group": true}));
    let (st, _, _) = e.sign_in(
        "acme",
        json!({"email": "gina@acme.example", "password": "Gina-pass-1"}),
    );
    assert_eq!(st, 403, "gina belongs to no group");
    e.login("carl@acme.example", "Carl-pass-1");
    e.admin(
        "PATCH",
        "/v1/tenants/acme/groups/weekly",
        json!({"status": "inactive"}),
    );
    let (st, v, _) = e.sign_in(
        "acme",
        json!({"email": "carl@acme.example", "password": "Carl-pass-1"}),
    );
    assert_eq!((st, v["code"].as_str()), (403, Some("sign_in_not_allowed")));
    // Administrators are not ordinary users.
    e.login("alice@acme.example", "Alice-pass-1");
}

#[test]
fn invitations_are_delivered_accepted_once_and_activate() {
    let e = start();
    let v = e.admin(
        "POST",
        "/v1/tenants/acme/users",
        json!({"email": "nina@acme.example", "first_name": "Nina", "status": "inactive"}),
    );
    let inv = v["data"]["invitation"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    // The webhook got the same invitation.
    let hook = e.hooks.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (
            hook["tenant"].as_str(),
            hook["user"].as_str(),
            hook["email"].as_str(),
            hook["token"].as_str()
        ),
        (
            Some("acme"),
            Some("nina"),
            Some("nina@acme.example"),
            Some(inv.as_str())
        )
    );
    let path = hook["accept_path"].as_str().unwrap().to_string();
    // The invitation's token never reaches the audit log.
    let audit = e.admin("GET", "/v1/tenants/acme/audit?limit=1000", Value::Null);
    assert!(!audit.to_string().contains(&inv));
    // A weak password is refused and leaves the invitation usable.
    let (st, _, _) = e.s.request(
        "POST",
        &path,
        &[("content-type", "application/json")],
        br#"{"password":"weak"}"#,
    );
    assert_eq!(st, 422);
    let (st, _, b) = e.s.request(
        "POST",
        &path,
        &[("content-type", "application/json")],
        br#"{"password":"Nina-pass-1"}"#,
    );
    assert_eq!(st, 200, "{b}");
    let v = e.login("nina@acme.example", "Nina-pass-1");
    assert_eq!(v["user"]["status"], "active");
    // Used once only; unknown tokens likewise.
    let (st, _, b) = e.s.request(
        "POST",
        &path,
        &[("content-type", "application/json")],
        br#"{"password":"Nina-pass-2"}"#,
    );
    assert_eq!(st, 410, "{b}");
    assert!(b.contains("invalid_invitation"));
    let (st, _, _) = e.s.request(
        "POST",
        "/v1/tenants/acme/invitations/0000/accept",
        &[("content-type", "application/json")],
        br#"{"password":"Nina-pass-2"}"#,
    );
    assert_eq!(st, 410);
    // A new invitation for an existing user.
    let v = e.admin("POST", "/v1/tenants/acme/users/nina/invitation", json!({}));
    assert!(v["data"]["invitation"]["token"].as_str().unwrap().len() == 64);
}

#[test]
fn api_keys_work_on_both_planes_until_revoked() {
    let e = start();
    let v = e.admin(
        "POST",
        "/v1/tenants/acme/api-keys",
        json!({"user": "alice", "name": "ci pipeline"}),
    );
    let key = v["data"]["key"].as_str().unwrap().to_string();
    let id = v["data"]["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("pck_"));
    // Listing never shows the key or its digest.
    let list = e.admin("GET", "/v1/tenants/acme/api-keys", Value::Null);
    let text = list.to_string();
    assert!(
        text.contains(&id) && !text.contains(&key[20..]) && !text.contains("sha256"),
        "{text}"
    );
    // Management API (alice is an administrator) and data plane.
    let (st, v) = e.call(&key, "GET", "/v1/tenants/acme/users/bob", Value::Null);
    assert_eq!(st, 200, "{v}");
    assert_eq!(e.check(&key, "asset:operate", "p2"), Some(true));
    assert_eq!(e.gateway(&key, "p2"), 200);
    // Writes by a key are audited as the key.
    e.call(
        &key,
        "PATCH",
        "/v1/tenants/acme/users/bob",
        json!({"name": "Bobby"}),
    );
    let audit = e.admin(
        "GET",
        &format!("/v1/tenants/acme/audit?actor=key:{id}"),
        Value::Null,
    );
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    // A wrong secret with a real id is refused.
    let forged = format!("{}{}", &key[..key.len() - 4], "0000");
    assert_eq!(e.check(&forged, "asset:read", "p2"), None);
    // Revoked: refused at once.
    e.admin(
        "DELETE",
        &format!("/v1/tenants/acme/api-keys/{id}"),
        Value::Null,
    );
    assert_eq!(e.check(&key, "asset:read", "p2"), None);
    let (st, _) = e.call(&key, "GET", "/v1/tenants/acme/users/bob", Value::Null);
    assert_eq!(st, 401);
    // Expiry in the past is refused at creation.
    let (st, _) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/api-keys",
        json!({"user": "alice", "name": "x", "expires_at": 1}),
    );
    assert_eq!(st, 422);
}

#[test]
fn guests_read_only_inside_their_scope_until_revoked() {
    let e = start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/guests",
        json!({"name": "Auditor from Acme Insurance", "scope": "north", "expires_at": now + 3600}),
    );
    assert_eq!(st, 201, "{v}");
    let (id, token) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(e.check(&token, "asset:read", "p1"), Some(true));
    assert_eq!(
        e.check(&token, "asset:operate", "p1"),
        Some(false),
        "read-only"
    );
    assert_eq!(
        e.check(&token, "asset:read", "p2"),
        Some(false),
        "outside the scope"
    );
    // Even a broader role assigned by mistake does not widen a guest.
    e.admin(
        "POST",
        "/v1/tenants/acme/assignments",
        json!({"user": id, "role": "administrator", "scope": "acme"}),
    );
    assert_eq!(e.check(&token, "asset:read", "p2"), Some(false));
    assert_eq!(e.check(&token, "asset:operate", "p1"), Some(false));
    let (_, why) = e.s.post_json(
        "/v1/explain",
        &json!({"tenant": "acme", "token": token, "action": "asset:read", "resource": "p2"})
            .to_string(),
    );
    assert_eq!(why["reason"], "guest_out_of_scope", "{why}");
    // Guests appear in user listings with their kind; they cannot sign in with a password.
    let users = e.admin("GET", "/v1/tenants/acme/users?limit=100", Value::Null);
    assert!(users.to_string().contains("\"guest\""));
    // Revoked: dead at once.
    e.admin(
        "DELETE",
        &format!("/v1/tenants/acme/guests/{id}"),
        Value::Null,
    );
    assert_eq!(e.check(&token, "asset:read", "p1"), None);
    // Guest rules: a scope that exists, an expiry within 30 days.
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/guests",
        json!({"name": "X", "scope": "mars", "expires_at": now + 60}),
    );
    assert_eq!(st, 422, "{v}");
    let (st, _) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/acme/guests",
        json!({"name": "X", "scope": "north", "expires_at": now + 40 * 86400}),
    );
    assert_eq!(st, 422);
}

#[test]
fn secrets_stay_out_of_answers_and_the_audit_log() {
    let e = start();
    e.admin(
        "POST",
        "/v1/tenants/acme/users",
        json!({"id": "sam", "email": "sam@acme.example", "first_name": "Sam", "password": "Sam-secret-77"}),
    );
    e.admin(
        "POST",
        "/v1/tenants/acme/users/sam/password",
        json!({"password": "Sam-secret-88"}),
    );
    e.admin(
        "POST",
        "/v1/tenants/acme/users/sam/cards",
        json!({"card": "CARD-9911"}),
    );
    let t = e.login("sam@acme.example", "Sam-secret-88");
    let mut seen = String::new();
    for path in [
        "/v1/tenants/acme/users/sam",
        "/v1/tenants/acme/users?limit=100",
        "/v1/tenants/acme/audit?limit=1000",
        "/v1/users?limit=100",
    ] {
        seen.push_str(&e.admin("GET", path, Value::Null).to_string());
    }
    let audit = e.admin("GET", "/v1/tenants/acme/audit?limit=1000", Value::Null);
    for item in audit["items"].as_array().unwrap() {
        let rev = item["revision"].as_u64().unwrap();
        seen.push_str(
            &e.admin(
                "GET",
                &format!("/v1/tenants/acme/audit/{rev}?page_size=100"),
                Value::Null,
            )
            .to_string(),
        );
    }
    seen.push_str(&t.to_string());
    for secret in [
        "Sam-secret-77",
        "Sam-secret-88",
        "CARD-9911",
        "$argon2id",
        "argon2",
    ] {
        assert!(!seen.contains(secret), "'{secret}' leaked");
    }
    assert!(
        seen.contains("\"redacted\":true"),
        "credential changes are audited, redacted"
    );
    assert!(!e.s.log.lock().unwrap().contains("Sam-secret"));
}

#[test]
fn jwks_publishes_the_session_keys() {
    let e = start();
    let (st, _, b) = e.s.request("GET", "/.well-known/jwks.json", &[], b"");
    assert_eq!(st, 200);
    let jwks: Value = serde_json::from_str(&b).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let t = e.login("alice@acme.example", "Alice-pass-1")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], key["kid"]);
    assert_eq!(header["alg"], "EdDSA");
}
