//! Data-plane exposure settings (`data_plane.*`, `metrics.bearer_token_file`,
//! `metrics.admin_listener_only`) against the real binary. All off by default: the other test
//! files run without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis::server::tokens::sign::{sign, SigningKey};
use server::Server;
use sha2::{Digest, Sha256};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const KEY_FEMO: &str = "femo-caller-key-0123456789";
const KEY_BOTH: &str = "both-caller-key-0123456789";

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(sub: &str, tenant: &str) -> String {
    let c = serde_json::json!({ "sub": sub, "tenant": tenant, "iat": now(), "exp": now() + 600 });
    sign(&SigningKey::Hs256(SECRET.as_bytes()), None, &c.to_string()).unwrap()
}

/// A temporary directory holding `config.yaml` (and any other file), removed on drop.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(yaml: &str, name: &str) -> (Server, Dir) {
    let d = std::env::temp_dir().join(format!("portcullis-exposure-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let yaml = yaml.replace("$DIR", &d.display().to_string());
    let cfg = d.join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()], &[]);
    (s, Dir(d))
}

/// One HTTP/1.1 request with an explicit `Host` (none when `host` is `None`).
fn req(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if let Some(h) = host {
        r.push_str(&format!("host: {h}\r\n"));
    }
    if !body.is_empty() {
        r.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    s.write_all(r.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn check_body(tenant: &str, who: &str) -> String {
    format!(r#"{{"tenant":"{tenant}",{who},"action":"asset:read","resource":"press-7"}}"#)
}

#[test]
fn defaults_keep_the_loopback_sidecar_open() {
    let (s, _d) = start("log: info\n", "defaults");
    let body = check_body("femo", r#""subject":"alice""#);
    assert_eq!(
        req(s.addr, "POST", "/v1/check", Some("anything"), &[], &body).0,
        200
    );
    assert_eq!(
        req(s.addr, "POST", "/v1/explain", Some("x"), &[], &body).0,
        200
    );
    assert_eq!(req(s.addr, "GET", "/metrics", Some("x"), &[], "").0, 200);
}

#[test]
fn require_token_refuses_a_bare_subject() {
    let (s, _d) = start(
        &format!(
            "data_plane: {{ require_token: true }}\ntokens: {{ keys: [ {{ alg: HS256, secret: \"{SECRET}\" }} ] }}\n"
        ),
        "require-token",
    );
    let (st, b) = req(
        s.addr,
        "POST",
        "/v1/check",
        Some("h"),
        &[],
        &check_body("femo", r#""subject":"alice""#),
    );
    assert_eq!((st, code(&b).as_str()), (401, "unauthenticated"), "{b}");
    let batch = r#"{"tenant":"femo","checks":[{"subject":"alice","action":"asset:read","resource":"press-7"}]}"#;
    assert_eq!(
        req(s.addr, "POST", "/v1/check/batch", Some("h"), &[], batch).0,
        401
    );
    let (st, b) = req(
        s.addr,
        "POST",
        "/v1/check",
        Some("h"),
        &[],
        &check_body("femo", &format!(r#""token":"{}""#, token("alice", "femo"))),
    );
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("\"allowed\":true"), "{b}");
}

#[test]
fn api_keys_bind_callers_to_tenants() {
    let (s, _d) = start(
        &format!(
            "data_plane:\n  api_keys:\n    - {{ sha256: \"{}\", tenants: [femo] }}\n    - {{ sha256: \"{}\", tenants: [femo, towerco] }}\n",
            hex_sha256(KEY_FEMO),
            hex_sha256(KEY_BOTH).to_uppercase()
        ),
        "api-keys",
    );
    let femo = check_body("femo", r#""subject":"alice""#);
    let tower = check_body("towerco", r#""subject":"alice""#);
    let auth = |k: &str| format!("Bearer {k}");
    // No key, an unknown key: 401.
    let (st, b) = req(s.addr, "POST", "/v1/check", Some("h"), &[], &femo);
    assert_eq!((st, code(&b).as_str()), (401, "unauthenticated"), "{b}");
    let bad = auth("not-a-key");
    let (st, _) = req(
        s.addr,
        "POST",
        "/v1/check",
        Some("h"),
        &[("authorization", &bad)],
        &femo,
    );
    assert_eq!(st, 401);
    // The key's own tenant: answered; another tenant: 403 forbidden, on every endpoint.
    let k1 = auth(KEY_FEMO);
    let h1 = [("authorization", k1.as_str())];
    assert_eq!(
        req(s.addr, "POST", "/v1/check", Some("h"), &h1, &femo).0,
        200
    );
    for (path, body) in [
        ("/v1/check", tower.clone()),
        ("/v1/explain", tower.clone()),
        (
            "/v1/check/batch",
            r#"{"tenant":"towerco","checks":[]}"#.to_string(),
        ),
        (
            "/v1/filter",
            r#"{"tenant":"towerco","subject":"a","action":"asset:read","resources":[]}"#
                .to_string(),
        ),
        (
            "/v1/scopes",
            r#"{"tenant":"towerco","subject":"a","action":"asset:read"}"#.to_string(),
        ),
    ] {
        let (st, b) = req(s.addr, "POST", path, Some("h"), &h1, &body);
        assert_eq!((st, code(&b).as_str()), (403, "forbidden"), "{path}: {b}");
    }
    let k2 = auth(KEY_BOTH);
    let h2 = [("authorization", k2.as_str())];
    assert_eq!(
        req(s.addr, "POST", "/v1/check", Some("h"), &h2, &tower).0,
        200
    );
    // Health and metrics are not data-plane questions.
    assert_eq!(req(s.addr, "GET", "/healthz", Some("h"), &[], "").0, 200);
}

#[test]
fn explain_off_and_token_only() {
    let (s, _d) = start("data_plane: { explain: off }\n", "explain-off");
    let body = check_body("femo", r#""subject":"alice""#);
    let (st, b) = req(s.addr, "POST", "/v1/explain", Some("h"), &[], &body);
    assert_eq!((st, code(&b).as_str()), (404, "not_found"), "{b}");
    assert_eq!(
        req(s.addr, "POST", "/v1/check", Some("h"), &[], &body).0,
        200
    );
    drop(s);

    let (s, _d) = start(
        &format!(
            "data_plane: {{ explain: token }}\ntokens: {{ keys: [ {{ alg: HS256, secret: \"{SECRET}\" }} ] }}\n"
        ),
        "explain-token",
    );
    let (st, b) = req(s.addr, "POST", "/v1/explain", Some("h"), &[], &body);
    assert_eq!((st, code(&b).as_str()), (403, "forbidden"), "{b}");
    let with_token = check_body("femo", &format!(r#""token":"{}""#, token("alice", "femo")));
    let (st, b) = req(s.addr, "POST", "/v1/explain", Some("h"), &[], &with_token);
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("\"subject\":\"alice\""), "{b}");
}

#[test]
fn metrics_need_their_bearer_token() {
    let metrics_token = "metrics-token-0123456789abcdef";
    let d = std::env::temp_dir().join(format!(
        "portcullis-exposure-{}-metrics-token",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("metrics-token");
    std::fs::write(&f, format!("{metrics_token}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (s, _d) = start(
        &format!("metrics: {{ bearer_token_file: \"{}\" }}\n", f.display()),
        "metrics",
    );
    let (st, b) = req(s.addr, "GET", "/metrics", Some("h"), &[], "");
    assert_eq!((st, code(&b).as_str()), (401, "unauthenticated"), "{b}");
    let wrong = [("authorization", "Bearer metrics-token-wrong-0123456")];
    assert_eq!(req(s.addr, "GET", "/metrics", Some("h"), &wrong, "").0, 401);
    let good = format!("Bearer {metrics_token}");
    let (st, b) = req(
        s.addr,
        "GET",
        "/metrics",
        Some("h"),
        &[("authorization", &good)],
        "",
    );
    assert_eq!(st, 200);
    assert!(b.contains("portcullis_"), "{b}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn metrics_on_the_admin_listener_only() {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let (s, _d) = start(
        &format!(
            "admin_listen: {admin_addr}\nadmin_token: 0123456789abcdefXYZ\nmetrics: {{ admin_listener_only: true }}\n"
        ),
        "metrics-admin",
    );
    let (st, b) = req(s.addr, "GET", "/metrics", Some("h"), &[], "");
    assert_eq!((st, code(&b).as_str()), (404, "not_found"), "{b}");
    let mut got = 0;
    for _ in 0..100 {
        if TcpStream::connect(admin_addr).is_ok() {
            got = req(admin_addr, "GET", "/metrics", Some("h"), &[], "").0;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(got, 200);
}

#[test]
fn hosts_outside_the_allow_list_are_misdirected() {
    let (s, _d) = start(
        "data_plane: { allowed_hosts: [portcullis.internal, 'localhost:8180'] }\n",
        "hosts",
    );
    let body = check_body("femo", r#""subject":"alice""#);
    for host in [
        Some("evil.example"),
        Some("localhost"),
        Some("portcullis.internal.evil.example"),
        None,
    ] {
        let (st, b) = req(s.addr, "POST", "/v1/check", host, &[], &body);
        assert_eq!(
            (st, code(&b).as_str()),
            (421, "host_not_allowed"),
            "{host:?}: {b}"
        );
        assert_eq!(req(s.addr, "GET", "/metrics", host, &[], "").0, 421);
        // Forward-auth answers gateways 2xx, 401 or 403 only.
        let (st, b) = req(s.addr, "GET", "/v1/forward-auth/x", host, &[], "");
        assert_eq!((st, code(&b).as_str()), (403, "host_not_allowed"), "{b}");
        // Health probes are exempt.
        assert_eq!(req(s.addr, "GET", "/healthz", host, &[], "").0, 200);
        assert_eq!(req(s.addr, "GET", "/readyz", host, &[], "").0, 200);
    }
    for host in [
        "portcullis.internal",
        "PORTCULLIS.internal:9999",
        "localhost:8180",
    ] {
        let (st, b) = req(s.addr, "POST", "/v1/check", Some(host), &[], &body);
        assert_eq!(st, 200, "{host}: {b}");
    }
}
