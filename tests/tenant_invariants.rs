//! Every committed state compiles: the management API refuses a change the snapshot builder
//! would reject (instead of committing it and freezing the tenant's snapshot), and a tenant whose
//! stored state does not compile is visible (not ready, a metric, a clear 503), never dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use serde_json::{json, Value};
use server::Server;

const TOKEN: &str = "test-admin-token-0123456789";

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("portcullis-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn store(&self) -> String {
        format!("{}/store", self.0.display())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(store: &str) -> Server {
    Server::start(&["--store", store], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)])
}

fn call(s: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (st, _, b) = s.request(method, path, &headers, body.as_bytes());
    let v = if b.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{method} {path}: {e}: {b}"))
    };
    (st, v)
}

fn check(s: &Server, tenant: &str, subject: &str, min_revision: u64) -> (u16, Value) {
    s.post_json(
        "/v1/check",
        &json!({"tenant": tenant, "subject": subject, "action": "asset:operate",
                "resource": "press-7", "min_revision": min_revision})
        .to_string(),
    )
}

#[test]
fn a_quota_below_current_usage_is_refused_and_the_tenant_keeps_working() {
    let dir = Dir::new("quota");
    let s = start(&dir.store());
    // The demo tenant femo has 9 live users (one deleted), 1 owner, 3 groups.
    for (quota, n) in [("max_users", 1), ("max_admins", 0), ("max_groups", 2)] {
        let (st, v) = call(
            &s,
            "PATCH",
            "/v1/tenants/femo",
            Some(json!({"quotas": {quota: n}})),
        );
        assert_eq!(
            (st, v["code"].as_str()),
            (409, Some("quota_exceeded")),
            "{quota}: {v}"
        );
        assert!(v["error"].as_str().unwrap().contains(quota), "{v}");
    }
    // At usage is fine.
    let (st, v) = call(
        &s,
        "PATCH",
        "/v1/tenants/femo",
        Some(json!({"quotas": {"max_users": 9, "max_admins": 1, "max_groups": 3}})),
    );
    assert_eq!(st, 200, "{v}");
    // The tenant's snapshot follows later writes: a deactivated user loses access.
    let (st, v) = call(
        &s,
        "POST",
        "/v1/tenants/femo/users/alice/deactivate",
        Some(json!({})),
    );
    assert_eq!(st, 200, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    let (st, c) = check(&s, "femo", "alice", rev);
    assert_eq!((st, c["allowed"].as_bool()), (200, Some(false)), "{c}");
    // And it survives a restart.
    drop(s);
    let s = start(&dir.store());
    let (st, _, body) = s.request("GET", "/readyz", &[], b"");
    assert_eq!(st, 200, "{body}");
    let (st, c) = check(&s, "femo", "alice", rev);
    assert_eq!((st, c["allowed"].as_bool()), (200, Some(false)), "{c}");
    let (st, c) = check(&s, "femo", "chitra", 0);
    assert_eq!(st, 200, "{c}");
}

/// Writes a commit straight into the store (bypassing the control plane's rules and checks):
/// node `x` under a parent that does not exist, which no snapshot build accepts.
fn write_uncompilable_state(store: &str) -> u64 {
    use portcullis::store::{Commit, Kind, RowOp};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = portcullis::store::open(store).await.unwrap();
        let rev = s.load("femo").await.unwrap().unwrap().revision + 1;
        let node = json!({"id": "x", "kind": "site", "parent": "nowhere"});
        s.commit(&Commit {
            tenant: "femo".into(),
            revision: rev,
            actor: "hand".into(),
            at_ms: 0,
            action: "node.create".into(),
            target: "node:x".into(),
            ops: vec![RowOp::put(Kind::Node, "x", node, None)],
        })
        .await
        .unwrap();
        rev
    })
}

#[test]
fn a_tenant_whose_stored_state_does_not_compile_is_visible_and_fails_closed() {
    let dir = Dir::new("uncompilable");
    let s = start(&dir.store());
    let (st, c) = check(&s, "femo", "chitra", 0);
    assert_eq!(st, 200, "{c}");
    drop(s);
    let rev = write_uncompilable_state(&dir.store());

    let s = start(&dir.store());
    // Not ready, naming the tenant and why.
    let (st, _, body) = s.request("GET", "/readyz", &[], b"");
    assert_eq!(st, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "not_ready", "{v}");
    assert_eq!(v["failed"][0]["tenant"], "femo", "{v}");
    assert_eq!(v["failed"][0]["revision"], rev, "{v}");
    assert!(
        v["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("nowhere"),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("femo"), "{v}");
    // The tenant fails closed with a clear 503 (with or without min_revision), never 404.
    for min in [0, rev] {
        let (st, c) = check(&s, "femo", "chitra", min);
        assert_eq!(
            (st, c["code"].as_str()),
            (503, Some("tenant_unavailable")),
            "{c}"
        );
        assert!(c["error"].as_str().unwrap().contains("femo"), "{c}");
    }
    // Other tenants are served.
    let (st, c) = s.post_json(
        "/v1/check",
        &json!({"tenant": "towerco", "subject": "kim", "action": "hvac:read",
                "resource": "hvac-f12"})
        .to_string(),
    );
    assert_eq!((st, c["allowed"].as_bool()), (200, Some(true)), "{c}");
    // Counted in the metrics.
    let (st, _, m) = s.request("GET", "/metrics", &[], b"");
    assert_eq!(st, 200);
    assert!(m.contains("portcullis_tenants_unavailable 1"), "{m}");
    assert!(
        m.contains("portcullis_tenant_compile_failures_total{tenant=\"femo\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_errors_total{code=\"tenant_unavailable\"} 2"),
        "{m}"
    );
    // The admin can still read the tenant, and a commit that makes it compile recovers it.
    let (st, v) = call(&s, "GET", "/v1/tenants/femo/nodes/x", None);
    assert_eq!(st, 200, "{v}");
    let (st, v) = call(&s, "DELETE", "/v1/tenants/femo/nodes/x", None);
    assert_eq!(st, 200, "{v}");
    let fixed = v["revision"].as_u64().unwrap();
    let (st, c) = check(&s, "femo", "chitra", fixed);
    assert_eq!(st, 200, "{c}");
    let (st, _, body) = s.request("GET", "/readyz", &[], b"");
    assert_eq!(st, 200, "{body}");
    let (_, _, m) = s.request("GET", "/metrics", &[], b"");
    assert!(m.contains("portcullis_tenants_unavailable 0"), "{m}");
}
