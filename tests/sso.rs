//! Single sign-on through HTTP against the real binary: a tenant trusts an identity provider's
//! tokens (minted here with the test keys) and maps its groups to roles at scopes; such a token
//! gets exactly the mapped roles on every data-plane endpoint and through forward-auth, and is
//! refused (401) when expired, not yet valid, badly signed, for another audience, of another
//! tenant's provider, or on the management API. The setting is validated field by field, gated
//! to enterprise tenants, protects the roles and nodes it names, and a change takes effect on the
//! next request.
//!
//! The setting reaches sidecars in the tenant's snapshot (through NATS JetStream).
//!
//! Also here: the channel of a session (`console` for a password, `field` for an access card)
//! reaches plugins as the context member `channel`, set by the host over the caller's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/nats.rs"]
mod nats_server;
#[path = "common/server.rs"]
mod server;

use portcullis::server::tokens::sign::{sign, sign_raw, SigningKey};
use serde_json::{json, Value};
use server::{header_of, Server};

const TOKEN: &str = "sso-admin-token-0123456789abcdef";
const ED1: &str = include_str!("../src/server/testdata/ed1.key");
const ED1_PUB: &str = include_str!("../src/server/testdata/ed1.pub");
const ED2: &str = include_str!("../src/server/testdata/ed2.key");
const ED2_PUB: &str = include_str!("../src/server/testdata/ed2.pub");
const RSA1: &str = include_str!("../src/server/testdata/rsa1.key");
const RSA1_PUB: &str = include_str!("../src/server/testdata/rsa1.pub");

const ISS_A: &str = "https://idp-a.example";
const ISS_B: &str = "https://idp-b.example";

/// A field-only plugin: allows when the context member `channel` is `field`, denies otherwise.
const FIELD_ONLY: &str = r#"
(module
  (memory (export "memory") 2)
  (data (i32.const 16) "channel")
  (data (i32.const 32) "field")
  (func (export "portcullis_abi_version") (result i32) (i32.const 1))
  (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 1024))
  (func $eq (param $a i32) (param $al i32) (param $b i32) (param $bl i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $al) (local.get $bl)) (then (return (i32.const 0))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $al)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 1))
  (func (export "portcullis_evaluate") (param $p i32) (param $len i32) (result i32)
    (local $at i32) (local $n i32) (local $i i32) (local $e i32)
    (local.set $at (i32.add (local.get $p) (i32.load (i32.add (local.get $p) (i32.const 96)))))
    (local.set $n (i32.load (i32.add (local.get $p) (i32.const 100))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $e (i32.add (local.get $at) (i32.mul (local.get $i) (i32.const 16))))
        (if (call $eq (i32.add (local.get $p) (i32.load (local.get $e)))
                      (i32.load offset=4 (local.get $e)) (i32.const 16) (i32.const 7))
          (then
            (return (if (result i32)
              (call $eq (i32.add (local.get $p) (i32.load offset=8 (local.get $e)))
                        (i32.load offset=12 (local.get $e)) (i32.const 32) (i32.const 5))
              (then (i32.const 1)) (else (i32.const 2))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 2)))
"#;

fn indent(pem: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    pem.trim()
        .lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn data() -> String {
    format!(
        r#"
tenants:
  - id: acme
    rbac: enterprise
    nodes:
      - {{ id: acme, kind: organisation }}
      - {{ id: north, kind: site, parent: acme }}
      - {{ id: p1, kind: asset, parent: north }}
      - {{ id: south, kind: site, parent: acme }}
      - {{ id: p2, kind: asset, parent: south }}
      - {{ id: lab, kind: site, parent: acme }}
    roles:
      - {{ id: tech, permissions: [asset:operate] }}
    users:
      - {{ id: alice, email: alice@acme.example, first_name: Alice, password: Alice-pass-1 }}
    assignments:
      - {{ user: alice, role: viewer, scope: acme }}
    sso:
      issuer: {ISS_A}
      audience: portcullis
      keys:
        - kid: a1
          pem: |
{ed1}
        - kid: r1
          pem: |
{rsa1}
      mappings:
        - {{ group: readers, role: viewer, scope: north }}
        - {{ group: techs, role: tech, scope: south }}
        - {{ group: lab-crew, role: operator, scope: lab }}
  - id: beta
    rbac: enterprise
    nodes:
      - {{ id: beta, kind: organisation }}
    sso:
      issuer: {ISS_B}
      keys:
        - kid: b1
          pem: |
{ed2}
      mappings:
        - {{ group: readers, role: viewer, scope: beta }}
  - id: small
    rbac: basic
    nodes:
      - {{ id: small, kind: organisation }}
  - id: plant
    rbac: enterprise
    plugins:
      - {{ name: field-only, path: field-only.wasm }}
    nodes:
      - {{ id: plant, kind: organisation }}
      - {{ id: press-1, kind: asset, parent: plant }}
    roles:
      - {{ id: field-operator, permissions: [asset:operate], plugin: field-only }}
    users:
      - {{ id: fred, email: fred@plant.example, first_name: Fred, password: Fred-pass-1 }}
    assignments:
      - {{ user: fred, role: field-operator, scope: plant }}
"#,
        ed1 = indent(ED1_PUB, 12),
        rsa1 = indent(RSA1_PUB, 12),
        ed2 = indent(ED2_PUB, 12),
    )
}

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
        "portcullis-sso-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.yaml"), data()).unwrap();
    std::fs::write(
        dir.join("field-only.wasm"),
        wat::parse_str(FIELD_ONLY).unwrap(),
    )
    .unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        r#"
forward_auth:
  identity: bearer
  routes:
    - { methods: [GET], path: "/api/{tenant}/assets/{asset}", tenant: "{tenant}", action: "asset:read", resource: "{asset}" }
"#,
    )
    .unwrap();
    let s = Server::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data",
            dir.join("data.yaml").to_str().unwrap(),
            "--store",
            dir.join("store").to_str().unwrap(),
        ],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    );
    Env { s, dir }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a good token of provider A for `groups`.
fn claims(groups: &[&str]) -> Value {
    let t = now();
    json!({"iss": ISS_A, "sub": "u-123@idp", "aud": ["portcullis"], "groups": groups,
           "iat": t - 5, "exp": t + 600})
}

fn ed(kid: &str, c: &Value) -> String {
    sign(&SigningKey::EdDsaPem(ED1), Some(kid), &c.to_string()).unwrap()
}

/// A token of provider A (Ed25519, kid `a1`) for `groups`.
fn token(groups: &[&str]) -> String {
    ed("a1", &claims(groups))
}

impl Env {
    fn call(&self, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.s.admin_call(token, method, path, body)
    }

    fn patch(&self, tenant: &str, body: Value) -> (u16, Value) {
        self.call(TOKEN, "PATCH", &format!("/v1/tenants/{tenant}"), body)
    }

    /// A data-plane call with a token: (status, answer).
    fn ask(&self, path: &str, body: Value) -> (u16, Value) {
        self.s.post_json(path, &body.to_string())
    }

    /// `Some(allowed)`, or `None` when the token was refused (401).
    fn check_on(&self, tenant: &str, token: &str, action: &str, resource: &str) -> Option<bool> {
        let (st, v) = self.ask(
            "/v1/check",
            json!({"tenant": tenant, "token": token, "action": action, "resource": resource}),
        );
        match st {
            200 => Some(v["allowed"].as_bool().unwrap()),
            401 => {
                assert_eq!(v["code"], "unauthenticated", "{v}");
                None
            }
            _ => panic!("check: {st} {v}"),
        }
    }

    fn check(&self, token: &str, action: &str, resource: &str) -> Option<bool> {
        self.check_on("acme", token, action, resource)
    }

    /// Sets acme's `sso` and waits until the data plane serves the change.
    fn set_sso(&self, sso: Value) {
        let (st, v) = self.patch("acme", json!({ "sso": sso }));
        assert_eq!(st, 200, "{v}");
        let rev = v["revision"].as_u64().unwrap();
        let (st, v) = self.ask(
            "/v1/check",
            json!({"tenant": "acme", "subject": "alice", "action": "asset:read",
                   "resource": "acme", "min_revision": rev}),
        );
        assert_eq!(st, 200, "{v}");
    }

    /// Forward-auth for `GET /api/{tenant}/assets/{asset}`: status and response head.
    fn gateway(&self, token: &str, tenant: &str, asset: &str) -> (u16, String) {
        let auth = format!("Bearer {token}");
        let uri = format!("/api/{tenant}/assets/{asset}");
        let (st, head, _) = self.s.request(
            "GET",
            "/v1/forward-auth",
            &[
                ("authorization", auth.as_str()),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", uri.as_str()),
            ],
            b"",
        );
        (st, head)
    }
}

#[test]
fn a_mapped_group_grants_exactly_its_role_at_its_scope() {
    let e = start();
    let readers = token(&["readers"]);
    // viewer at north: read inside the subtree only, and nothing the role lacks.
    assert_eq!(e.check(&readers, "asset:read", "p1"), Some(true));
    assert_eq!(e.check(&readers, "asset:read", "north"), Some(true));
    assert_eq!(e.check(&readers, "asset:read", "p2"), Some(false));
    assert_eq!(e.check(&readers, "asset:read", "acme"), Some(false));
    assert_eq!(e.check(&readers, "asset:operate", "p1"), Some(false));
    // The same token again (the verification cache) decides the same.
    assert_eq!(e.check(&readers, "asset:read", "p1"), Some(true));
    // No user record is involved: the subject claim names nobody of the tenant, and a user's
    // assignments are not the token's (alice may read everywhere).
    let mut c = claims(&["readers"]);
    c["sub"] = "alice".into();
    assert_eq!(e.check(&ed("a1", &c), "asset:read", "p2"), Some(false));

    // Two groups combine; unmapped names are ignored.
    let both = token(&["readers", "techs", "unknown-group"]);
    assert_eq!(e.check(&both, "asset:read", "p1"), Some(true));
    assert_eq!(e.check(&both, "asset:operate", "p2"), Some(true));
    assert_eq!(e.check(&both, "asset:read", "p2"), Some(false));
    assert_eq!(e.check(&both, "asset:operate", "p1"), Some(false));

    // Only unmapped groups, or none: denied with a clear reason.
    for t in [token(&["nobody", "else"]), token(&[])] {
        let (st, v) = e.ask(
            "/v1/check",
            json!({"tenant": "acme", "token": t, "action": "asset:read", "resource": "p1"}),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(
            (v["allowed"].as_bool(), v["reason"].as_str()),
            (Some(false), Some("no_mapped_groups"))
        );
    }
    // A groups claim that is one string is one group.
    let mut c = claims(&[]);
    c["groups"] = "techs".into();
    assert_eq!(e.check(&ed("a1", &c), "asset:operate", "p2"), Some(true));

    // RS256 keys work the same way.
    let rs = sign(
        &SigningKey::Rs256Pem(RSA1),
        Some("r1"),
        &claims(&["readers"]).to_string(),
    )
    .unwrap();
    assert_eq!(e.check(&rs, "asset:read", "p1"), Some(true));
    assert_eq!(e.check(&rs, "asset:read", "p2"), Some(false));
}

#[test]
fn every_data_plane_endpoint_and_forward_auth_take_sso_tokens() {
    let e = start();
    let both = token(&["readers", "techs"]);
    let (st, v) = e.ask(
        "/v1/check/batch",
        json!({"tenant": "acme", "checks": [
            {"token": both, "action": "asset:read", "resource": "p1"},
            {"token": both, "action": "asset:read", "resource": "p2"},
            {"token": both, "action": "asset:operate", "resource": "p2"}]}),
    );
    assert_eq!(st, 200, "{v}");
    let got: Vec<bool> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(got, [true, false, true]);
    let (st, v) = e.ask(
        "/v1/filter",
        json!({"tenant": "acme", "token": both, "action": "asset:read",
               "resources": ["p1", "p2", "north", "lab"]}),
    );
    assert_eq!(
        (st, v["allowed"].clone()),
        (200, json!(["p1", "north"])),
        "{v}"
    );
    let (st, v) = e.ask(
        "/v1/scopes",
        json!({"tenant": "acme", "token": both, "action": "asset:operate"}),
    );
    assert_eq!((st, v["nodes"].clone()), (200, json!(["south"])), "{v}");
    let (st, v) = e.ask(
        "/v1/explain",
        json!({"tenant": "acme", "token": both, "action": "asset:read", "resource": "p1"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["allowed"], true);
    assert_eq!(v["subject"], "u-123@idp");
    assert_eq!(v["matched"]["principal"], "group:sso:readers");
    assert_eq!(v["matched"]["role"], "viewer");

    // Forward-auth: the subject claim and the kind travel as identity headers.
    let (st, head) = e.gateway(&both, "acme", "p1");
    assert_eq!(st, 200, "{head}");
    assert_eq!(
        header_of(&head, "x-portcullis-subject").as_deref(),
        Some("u-123@idp")
    );
    assert_eq!(
        header_of(&head, "x-portcullis-tenant").as_deref(),
        Some("acme")
    );
    assert_eq!(
        header_of(&head, "x-portcullis-kind").as_deref(),
        Some("sso")
    );
    assert_eq!(e.gateway(&both, "acme", "p2").0, 403);
    assert_eq!(e.gateway(&token(&["nobody"]), "acme", "p1").0, 403);
    let mut c = claims(&["readers"]);
    c["exp"] = (now() - 3600).into();
    assert_eq!(e.gateway(&ed("a1", &c), "acme", "p1").0, 401);
    // Provider A's token on tenant beta's route: not beta's provider.
    assert_eq!(e.gateway(&both, "beta", "beta").0, 401);

    // The management API does not take SSO tokens, and says so.
    let (st, v) = e.call(&both, "GET", "/v1/tenants/acme", Value::Null);
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("data plane only"),
        "{v}"
    );
}

#[test]
fn bad_sso_tokens_are_refused_with_401() {
    let e = start();
    let t = now();
    let base = claims(&["readers"]);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let refused = |tok: &str, needle: &str| {
        let (st, v) = e.ask(
            "/v1/check",
            json!({"tenant": "acme", "token": tok, "action": "asset:read", "resource": "p1"}),
        );
        assert_eq!(st, 401, "{needle}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    };
    refused(&ed("a1", &with("exp", (t - 3600).into())), "expired");
    refused(&ed("a1", &without("exp")), "no 'exp' claim");
    refused(
        &ed("a1", &with("nbf", (t + 3600).into())),
        "not valid before",
    );
    refused(&ed("a1", &with("aud", json!(["someone-else"]))), "audience");
    refused(&ed("a1", &without("aud")), "audience");
    refused(&ed("a1", &without("sub")), "no 'sub' claim");
    refused(&ed("a1", &with("groups", json!([1, 2]))), "groups");
    // Signed by a key the tenant does not trust (beta's provider key), under A's kid.
    let forged = sign(&SigningKey::EdDsaPem(ED2), Some("a1"), &base.to_string()).unwrap();
    refused(&forged, "invalid token signature");
    refused(&ed("zz", &base), "key id 'zz' is unknown");
    // Another algorithm than the key's, and `none`.
    let hs = sign(
        &SigningKey::Hs256(&[7u8; 32]),
        Some("a1"),
        &base.to_string(),
    )
    .unwrap();
    refused(&hs, "not accepted");
    let none = sign_raw(
        &SigningKey::Hs256(&[7u8; 32]),
        r#"{"alg":"none","kid":"a1"}"#,
        &base.to_string(),
    )
    .unwrap();
    refused(&none, "not accepted");
    // A tampered payload under a good signature.
    let good = token(&["readers"]);
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine as _;
    let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(with("groups", json!(["readers", "techs"])).to_string());
    refused(
        &format!("{}.{evil}.{}", parts[0], parts[2]),
        "invalid token signature",
    );
    // A wrong issuer is not this tenant's provider: no token path accepts it.
    let (st, _) = e.ask(
        "/v1/check",
        json!({"tenant": "acme", "token": ed("a1", &with("iss", "https://evil.example".into())),
               "action": "asset:read", "resource": "p1"}),
    );
    assert_eq!(st, 401);

    // Tenant isolation: A's tokens are nothing on beta, whatever their claims.
    assert_eq!(e.check_on("beta", &good, "asset:read", "beta"), None);
    // Claiming beta's issuer with A's key (under beta's kid, or A's).
    let as_b = with("iss", ISS_B.into());
    assert_eq!(
        e.check_on("beta", &ed("b1", &as_b), "asset:read", "beta"),
        None
    );
    assert_eq!(
        e.check_on("beta", &ed("a1", &as_b), "asset:read", "beta"),
        None
    );
    // Beta's own token works on beta, and not on acme.
    let b = sign(
        &SigningKey::EdDsaPem(ED2),
        Some("b1"),
        &with("iss", ISS_B.into()).to_string(),
    )
    .unwrap();
    assert_eq!(e.check_on("beta", &b, "asset:read", "beta"), Some(true));
    assert_eq!(e.check_on("acme", &b, "asset:read", "p1"), None);
}

#[test]
fn the_setting_is_validated_gated_and_changes_apply_at_once() {
    let e = start();
    let sso = |mappings: Value, key: Value| json!({"sso": {"issuer": ISS_A, "keys": [key], "mappings": mappings}});
    let good_key = json!({"kid": "a1", "pem": ED1_PUB});
    // Field by field.
    let (st, v) = e.patch(
        "acme",
        sso(json!([]), json!({"kid": "a1", "pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"})),
    );
    assert_eq!((st, v["code"].as_str()), (422, Some("invalid")), "{v}");
    assert!(v.to_string().contains("sso.keys[0]"), "{v}");
    let (st, v) = e.patch(
        "acme",
        sso(
            json!([{"group": "g", "role": "nope", "scope": "north"}]),
            good_key.clone(),
        ),
    );
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("sso.mappings[0].role"), "{v}");
    let (st, v) = e.patch(
        "acme",
        sso(
            json!([{"group": "g", "role": "viewer", "scope": "nowhere"}]),
            good_key.clone(),
        ),
    );
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("sso.mappings[0].scope"), "{v}");
    let (st, v) = e.patch(
        "acme",
        json!({"sso": {"issuer": "portcullis", "keys": [good_key], "mappings": []}}),
    );
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("sso.issuer"), "{v}");
    let (st, v) = e.patch(
        "acme",
        json!({"sso": {"issuer": ISS_A, "keys": [], "bogus": 1}}),
    );
    assert!(st == 400 || st == 422, "{st} {v}");

    // The tier gate: basic tenants cannot enable it; an SSO tenant cannot drop to basic.
    let (st, v) = e.patch(
        "small",
        json!({"sso": {"issuer": ISS_A, "keys": [{"kid": "a1", "pem": ED1_PUB}],
                       "mappings": [{"group": "g", "role": "viewer", "scope": "small"}]}}),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("tier_unavailable")),
        "{v}"
    );
    let (st, v) = e.patch("beta", json!({"rbac": "basic"}));
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("tier_unavailable")),
        "{v}"
    );

    // Roles and nodes a mapping names cannot be deleted.
    let (st, v) = e.call(TOKEN, "DELETE", "/v1/tenants/acme/roles/tech", Value::Null);
    assert_eq!((st, v["code"].as_str()), (409, Some("in_use")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("SSO mapping"), "{v}");
    let (st, v) = e.call(TOKEN, "DELETE", "/v1/tenants/acme/nodes/lab", Value::Null);
    assert_eq!((st, v["code"].as_str()), (409, Some("in_use")), "{v}");

    // A change takes effect on the next request, with the same token.
    let readers = token(&["readers"]);
    assert_eq!(e.check(&readers, "asset:read", "p2"), Some(false));
    let (st, v) = e.patch(
        "acme",
        json!({"sso": {"issuer": ISS_A, "audience": "portcullis",
                       "keys": [{"kid": "a1", "pem": ED1_PUB}],
                       "mappings": [{"group": "readers", "role": "viewer", "scope": "acme"}]}}),
    );
    assert_eq!(st, 200, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    let (st, v) = e.ask(
        "/v1/check",
        json!({"tenant": "acme", "token": readers, "action": "asset:read", "resource": "p2",
               "min_revision": rev}),
    );
    assert_eq!((st, v["allowed"].as_bool()), (200, Some(true)), "{v}");
    // The RSA key was removed: its tokens are refused, even one verified before.
    let rs = sign(
        &SigningKey::Rs256Pem(RSA1),
        Some("r1"),
        &claims(&["readers"]).to_string(),
    )
    .unwrap();
    assert_eq!(e.check(&rs, "asset:read", "p1"), None);
    // With the key removed while its token is cached: refused too.
    e.set_sso(json!({"issuer": ISS_A, "audience": "portcullis",
                     "keys": [{"kid": "r1", "pem": RSA1_PUB}],
                     "mappings": [{"group": "readers", "role": "viewer", "scope": "acme"}]}));
    assert_eq!(e.check(&readers, "asset:read", "p2"), None);
    assert_eq!(e.check(&rs, "asset:read", "p2"), Some(true));
    // Another audience: the cached token is refused on the next request.
    e.set_sso(json!({"issuer": ISS_A, "audience": "someone-else",
                     "keys": [{"kid": "r1", "pem": RSA1_PUB}],
                     "mappings": [{"group": "readers", "role": "viewer", "scope": "acme"}]}));
    assert_eq!(e.check(&rs, "asset:read", "p2"), None);
    // Turned off: the provider's tokens are nothing.
    e.set_sso(Value::Null);
    assert_eq!(e.check(&rs, "asset:read", "p2"), None);
    // Now the role and the node may go.
    let (st, v) = e.call(TOKEN, "DELETE", "/v1/tenants/acme/nodes/lab", Value::Null);
    assert!(st < 300, "{st} {v}");
}

#[test]
fn the_session_channel_reaches_plugins_and_the_caller_cannot_claim_it() {
    let e = start();
    let sign_in = |body: Value| {
        let (st, v) = e.ask("/v1/tenants/plant/sessions", body);
        assert_eq!(st, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    };
    let console = sign_in(json!({"email": "fred@plant.example", "password": "Fred-pass-1"}));
    let (st, v) = e.call(
        TOKEN,
        "POST",
        "/v1/tenants/plant/users/fred/cards",
        json!({"card": "04A1B2C3"}),
    );
    assert!(st < 300, "{st} {v}");
    let field = sign_in(json!({"card": "04a1b2c3"}));
    let check = |tok: &str, ctx: Option<Value>| {
        let mut body = json!({"tenant": "plant", "token": tok, "action": "asset:operate",
                              "resource": "press-1"});
        if let Some(c) = ctx {
            body["context"] = c;
        }
        let (st, v) = e.ask("/v1/check", body);
        assert_eq!(st, 200, "{v}");
        (
            v["allowed"].as_bool().unwrap(),
            v["reason"].as_str().unwrap().to_string(),
        )
    };
    // The same check, two sessions: the field-only plugin allows the card's session only.
    assert_eq!(check(&field, None), (true, "granted".into()));
    assert_eq!(check(&console, None), (false, "plugin_denied".into()));
    // A caller cannot claim a channel: the session's wins over the request context.
    assert_eq!(
        check(&console, Some(json!({"channel": "field"}))),
        (false, "plugin_denied".into())
    );
    assert_eq!(
        check(&field, Some(json!({"channel": "console", "other": 1}))),
        (true, "granted".into())
    );
    // Without a session the context is the caller's own (and nothing sets a channel).
    let (st, v) = e.ask(
        "/v1/check",
        json!({"tenant": "plant", "subject": "fred", "action": "asset:operate",
               "resource": "press-1"}),
    );
    assert_eq!((st, v["allowed"].as_bool()), (200, Some(false)), "{v}");
}

#[test]
fn mappings_reach_sidecars_in_the_snapshot() {
    let nats = nats_server::Nats::start();
    let cfg = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        cfg.path(),
        "nats:\n  snapshot_every_revisions: 1\n  snapshot_every_seconds: 1\nlimits:\n  max_revision_wait_ms: 15000\n",
    )
    .unwrap();
    let url = nats.url();
    let cp = Server::start(
        &["--nats", &url, "--config", cfg.path().to_str().unwrap()],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    );
    let sidecar = || {
        let s = Server::start_sidecar(&["--nats", &url, "--config", cfg.path().to_str().unwrap()]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while s.request("GET", "/readyz", &[], b"").0 != 200 {
            assert!(std::time::Instant::now() < deadline, "sidecar not ready");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        s
    };
    let a = sidecar();
    let set = |scope: &str| -> u64 {
        let (st, v) = cp.admin_call(
            TOKEN,
            "PATCH",
            "/v1/tenants/femo",
            json!({"sso": {"issuer": ISS_A, "keys": [{"kid": "a1", "pem": ED1_PUB}],
                           "mappings": [{"group": "maintenance", "role": "operator", "scope": scope}]}}),
        );
        assert_eq!(st, 200, "{v}");
        v["revision"].as_u64().unwrap()
    };
    let mut c = claims(&["maintenance"]);
    c.as_object_mut().unwrap().remove("aud");
    let t = ed("a1", &c);
    let check = |s: &Server, resource: &str, rev: u64| -> bool {
        let (st, v) = s.post_json(
            "/v1/check",
            &json!({"tenant": "femo", "token": t, "action": "asset:operate",
                    "resource": resource, "min_revision": rev})
            .to_string(),
        );
        assert_eq!(st, 200, "{v}");
        v["allowed"].as_bool().unwrap()
    };
    let rev = set("lyon");
    assert!(check(&a, "robot-12", rev));
    assert!(!check(&a, "press-7", rev));
    // A new mapping: the sidecar decides by it at its revision.
    let rev = set("hawthorne");
    assert!(check(&a, "press-7", rev));
    assert!(!check(&a, "robot-12", rev));
    // A sidecar booting now gets the setting (keys included) from the snapshot.
    let b = sidecar();
    assert!(check(&b, "press-7", rev));
    assert!(!check(&b, "robot-12", rev));
}
