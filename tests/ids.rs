//! Identifiers people and URLs could confuse are refused: ids made of dots only, tenant ids that
//! differ from an existing one only in case, and times beyond year 9999.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use serde_json::{json, Value};
use server::Server;

const TOKEN: &str = "test-admin-token-0123456789";

fn call(s: &Server, method: &str, path: &str, body: Value) -> (u16, Value) {
    s.admin_call(TOKEN, method, path, body)
}

#[test]
fn confusable_ids_and_unbounded_times_are_refused() {
    let s = Server::start(&[], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    let (st, v) = call(&s, "POST", "/v1/tenants", json!({"id": "FEMO"}));
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("only in case"), "{v}");
    for id in [".", ".."] {
        let (st, v) = call(&s, "POST", "/v1/tenants", json!({ "id": id }));
        assert_eq!(st, 422, "{id}: {v}");
        let (st, v) = call(
            &s,
            "POST",
            "/v1/tenants/femo/nodes",
            json!({"id": id, "kind": "site", "parent": "femo"}),
        );
        assert_eq!(st, 422, "{id}: {v}");
    }
    let (st, v) = call(
        &s,
        "POST",
        "/v1/tenants/femo/assignments",
        json!({"user": "alice", "role": "viewer", "scope": "femo", "expires_at": "999999999999"}),
    );
    assert!(st == 422 || st == 400, "{st}: {v}");
    // The lower-case twin of a new tenant is refused too, and the original still works.
    let (st, v) = call(&s, "POST", "/v1/tenants", json!({"id": "plant-9"}));
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(&s, "POST", "/v1/tenants", json!({"id": "Plant-9"}));
    assert_eq!(st, 409, "{v}");
}

#[test]
fn a_data_file_with_case_twin_tenants_is_refused() {
    let text = "tenants:\n  - { id: acme }\n  - { id: ACME }\n";
    let e = portcullis::model::file::load_str(text).expect_err("twins");
    assert!(e.to_string().contains("only in case"), "{e}");
}
