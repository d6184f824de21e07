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
        let p = std::env::temp_dir().join(format!(
            "portcullis-{tag}-{}-{nanos}",
            std::process::id()
        ));
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
        assert_eq!((st, v["code"].as_str()), (409, Some("quota_exceeded")), "{quota}: {v}");
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
    let (st, v) = call(&s, "POST", "/v1/tenants/femo/users/alice/deactivate", Some(json!({})));
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
