//! A full disk over HTTP: writes answer 503 (nothing acknowledged is lost), `/readyz` says the
//! store is degraded, and once space returns the store recovers by itself: ready again, writes
//! accepted, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::Server;
use tmpfs::{fill, Tmpfs};

const TOKEN: &str = "disk-full-test-token-0123456789";

fn call(s: &Server, method: &str, path: &str, body: Value) -> (u16, Value) {
    s.admin_call(TOKEN, method, path, body)
}

#[test]
fn a_full_disk_is_not_ready_and_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount("8m") else {
        eprintln!("SKIPPED a_full_disk_is_not_ready_and_recovers_when_space_returns: cannot mount a tmpfs (not root?)");
        return;
    };
    let store = fs.dir.path().join("store");
    let store = store.to_str().unwrap();
    let s = Server::start(
        &["--store", store, "--data", "deploy/demo.yaml"],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    );
    let (st, _, _) = s.request("GET", "/readyz", &[], b"");
    assert_eq!(st, 200);
    let filler = fill(fs.dir.path());
    let pad = "x".repeat(200);
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let id = format!("disk-{i}");
        let (st, v) = call(
            &s,
            "POST",
            "/v1/tenants/femo/users",
            json!({"id": id, "email": format!("{id}@femo.example"), "name": pad}),
        );
        match st {
            201 => acked.push(id),
            503 => {
                assert!(!v.to_string().contains("panick"), "{v}");
                refused += 1;
                if refused == 2 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(refused, 2, "writes never failed on a full disk");
    let (st, _, body) = s.request("GET", "/readyz", &[], b"");
    assert_eq!(st, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["code"], "store_unavailable", "{v}");

    std::fs::remove_file(filler).unwrap();
    let t = Instant::now();
    loop {
        let (st, _, _) = s.request("GET", "/readyz", &[], b"");
        if st == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "store did not recover"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, v) = call(
        &s,
        "POST",
        "/v1/tenants/femo/users",
        json!({"id": "after", "email": "after@femo.example", "name": "After"}),
    );
    assert_eq!(st, 201, "{v}");
    // Every acknowledged write is there.
    for id in acked.iter().chain(std::iter::once(&"after".to_string())) {
        let (st, v) = call(
            &s,
            "GET",
            &format!("/v1/tenants/femo/users/{id}"),
            Value::Null,
        );
        assert_eq!(st, 200, "{id}: {v}");
    }
}
