//! Plugins through the real binary: upload, inspect, download, replace and delete over the
//! management API; roles bound to them; checks with a request context; refusals of bad
//! modules; audit, metrics, and durability across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/server.rs"]
mod server;

use std::path::PathBuf;

use serde_json::{json, Value};
use server::Server;

const TOKEN: &str = "test-admin-token-0123456789";
const AUTH: (&str, &str) = ("authorization", "Bearer test-admin-token-0123456789");

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/plugins/{name}.wat"));
    wat::parse_file(p).unwrap()
}

fn start(store: &str) -> Server {
    Server::start(&["--store", store], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)])
}

fn call(s: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let b = body.map(|v| v.to_string()).unwrap_or_default();
    let (st, _, text) = s.request(
        method,
        path,
        &[AUTH, ("content-type", "application/json")],
        b.as_bytes(),
    );
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    };
    (st, v)
}

fn upload(s: &Server, name: &str, wasm: &[u8], ct: &str) -> (u16, String, Value) {
    let (st, head, text) = s.request(
        "PUT",
        &format!("/v1/tenants/plant/plugins/{name}?description=test%20plugin"),
        &[AUTH, ("content-type", ct)],
        wasm,
    );
    (st, head, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn check(s: &Server, subject: &str, ctx: Option<Value>, min_revision: u64) -> Value {
    let mut body = json!({"tenant": "plant", "subject": subject, "action": "asset:operate",
        "resource": "press-1", "min_revision": min_revision});
    if let Some(c) = ctx {
        body["context"] = c;
    }
    let (st, v) = s.post_json("/v1/check", &body.to_string());
    assert_eq!(st, 200, "{v}");
    v
}

#[test]
fn plugins_over_the_management_api() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").to_string_lossy().into_owned();
    let s = start(&store);
    let ok = |(st, v): (u16, Value), want: u16| {
        assert_eq!(st, want, "{v}");
        v
    };
    ok(
        call(
            &s,
            "POST",
            "/v1/tenants",
            Some(json!({"id": "plant", "name": "Plant"})),
        ),
        201,
    );
    for n in [
        json!({"id": "org", "kind": "organisation"}),
        json!({"id": "site", "kind": "site", "parent": "org"}),
        json!({"id": "press-1", "kind": "asset", "parent": "site"}),
    ] {
        ok(call(&s, "POST", "/v1/tenants/plant/nodes", Some(n)), 201);
    }
    ok(
        call(
            &s,
            "POST",
            "/v1/tenants/plant/users",
            Some(json!({"id": "ann", "first_name": "Test", "email": "ann@plant.example"})),
        ),
        201,
    );

    // A role cannot name a plugin the tenant does not have.
    let v = ok(
        call(
            &s,
            "POST",
            "/v1/tenants/plant/roles",
            Some(
                json!({"id": "console-op", "permissions": ["asset:operate"], "plugin": "console"}),
            ),
        ),
        422,
    );
    assert_eq!(v["fields"][0]["field"], "plugin", "{v}");

    // Upload: validated, compiled, stored; the same bytes again change nothing.
    let ctx = fixture("has_context");
    let (st, head, v) = upload(&s, "console", &ctx, "application/wasm");
    assert_eq!(st, 201, "{v}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-portcullis-compile-ms"),
        "{head}"
    );
    let sha = v["data"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    assert_eq!(v["data"]["size"], ctx.len());
    assert_eq!(v["data"]["description"], "test plugin");
    assert!(v["data"].get("wasm").is_none(), "{v}");
    let rev = v["revision"].as_u64().unwrap();
    let (st, _, v) = upload(&s, "console", &ctx, "application/octet-stream");
    assert_eq!((st, v["revision"].as_u64()), (200, Some(rev)), "{v}");

    let v = ok(
        call(
            &s,
            "POST",
            "/v1/tenants/plant/roles",
            Some(
                json!({"id": "console-op", "permissions": ["asset:operate"], "plugin": "console"}),
            ),
        ),
        201,
    );
    assert_eq!(v["data"]["plugin"], "console");
    let v = ok(
        call(
            &s,
            "POST",
            "/v1/tenants/plant/assignments",
            Some(json!({"user": "ann", "role": "console-op", "scope": "site"})),
        ),
        201,
    );
    let rev = v["revision"].as_u64().unwrap();

    // An explanation runs the plugin once per grant (the decision's call is reused).
    let calls = |s: &Server| -> u64 {
        let (_, _, m) = s.request("GET", "/metrics", &[], b"");
        m.lines()
            .filter(|l| l.starts_with("portcullis_plugin_calls_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let before = calls(&s);
    let body = json!({"tenant": "plant", "subject": "ann", "action": "asset:operate",
        "resource": "press-1", "context": {"channel": "console"}, "min_revision": rev});
    let (st, e) = s.post_json("/v1/explain", &body.to_string());
    assert_eq!(st, 200, "{e}");
    assert_eq!(
        calls(&s) - before,
        1,
        "explain called the plugin more than once: {e}"
    );

    // Inspect and download.
    let v = ok(
        call(&s, "GET", "/v1/tenants/plant/plugins/console", None),
        200,
    );
    assert_eq!(v["roles"], json!(["console-op"]));
    assert_eq!(v["sha256"], sha.as_str());
    let v = ok(call(&s, "GET", "/v1/tenants/plant/plugins", None), 200);
    assert_eq!(v["total"], 1);
    let (st, head, body) = s.request(
        "GET",
        "/v1/tenants/plant/plugins/console/wasm",
        &[AUTH],
        b"",
    );
    assert_eq!(st, 200);
    assert!(head.contains("application/wasm"), "{head}");
    // (The test client reads bodies as lossy UTF-8: compare the same way.)
    assert_eq!(body, String::from_utf8_lossy(&ctx));

    // Checks run the plugin, with the request context.
    let v = check(&s, "ann", None, rev);
    assert_eq!(
        (v["allowed"].clone(), v["reason"].clone()),
        (json!(false), json!("condition_not_met")),
        "{v}"
    );
    let v = check(&s, "ann", Some(json!({"channel": "console"})), rev);
    assert_eq!(v["allowed"], true, "{v}");

    // A context the plugin layer could not read is refused, never turned into no context
    // (a veto plugin would then be skipped); duplicate keys are refused too.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for (ctx, needle) in [
        (
            r#"{"channel":"console","pad":1e400}"#.to_string(),
            "out of range",
        ),
        (
            r#"{"channel":"console","pad":-1e999}"#.to_string(),
            "out of range",
        ),
        (
            format!(r#"{{"channel":"console","pad":{deep}}}"#),
            "nested deeper",
        ),
        (
            r#"{"channel":"other","channel":"console"}"#.to_string(),
            "duplicate key",
        ),
    ] {
        for path in ["/v1/check", "/v1/explain"] {
            let body = format!(
                r#"{{"tenant":"plant","subject":"ann","action":"asset:operate","resource":"press-1","context":{ctx}}}"#
            );
            let (st, e) = s.post_json(path, &body);
            assert_eq!(
                (st, e["code"].as_str()),
                (400, Some("malformed_json")),
                "{path} {ctx}: {e}"
            );
            assert!(e["error"].as_str().unwrap().contains(needle), "{e}");
        }
        let body = format!(
            r#"{{"tenant":"plant","checks":[{{"subject":"ann","action":"asset:operate","resource":"press-1","context":{ctx}}}]}}"#
        );
        let (st, e) = s.post_json("/v1/check/batch", &body);
        assert_eq!(st, 400, "batch {ctx}: {e}");
        let body = format!(
            r#"{{"tenant":"plant","subject":"ann","action":"asset:operate","resources":["press-1"],"context":{ctx}}}"#
        );
        let (st, e) = s.post_json("/v1/filter", &body);
        assert_eq!(st, 400, "filter {ctx}: {e}");
    }

    // Replace atomically with a vetoing version; read-your-write through min_revision.
    let (st, _, v) = upload(&s, "console", &fixture("deny"), "application/wasm");
    assert_eq!(st, 200, "{v}");
    assert_ne!(v["data"]["sha256"], sha.as_str());
    let rev = v["revision"].as_u64().unwrap();
    let v = check(&s, "ann", Some(json!({"channel": "console"})), rev);
    assert_eq!(v["reason"], "plugin_denied", "{v}");
    let (st, e) = s.post_json(
        "/v1/explain",
        &json!({"tenant": "plant", "subject": "ann", "action": "asset:operate", "resource": "press-1"}).to_string(),
    );
    assert_eq!(st, 200, "{e}");
    let cond = &e["assignments"][0]["condition"];
    assert_eq!(
        (
            cond["plugin"].as_str(),
            cond["outcome"].as_str(),
            cond["reason"].as_str()
        ),
        (Some("console"), Some("deny"), Some("vetoed")),
        "{e}"
    );

    // Refusals: bad modules (422 naming the problem), media type, size; in-use delete.
    let (st, _, v) = upload(&s, "wasi", &fixture("wasi"), "application/wasm");
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("wasi_snapshot_preview1"),
        "{v}"
    );
    assert_eq!(v["fields"][0]["field"], "wasm");
    let (st, _, v) = upload(&s, "wrong", &fixture("wrong_abi"), "application/wasm");
    assert_eq!(st, 422, "{v}");
    let (st, _, v) = upload(&s, "junk", b"not wasm at all", "application/wasm");
    assert_eq!(st, 422, "{v}");
    let (st, _, v) = upload(&s, "text", &ctx, "text/plain");
    assert_eq!(st, 415, "{v}");
    let big = vec![0u8; (4 << 20) + 1];
    let (st, _, v) = upload(&s, "big", &big, "application/wasm");
    assert_eq!(st, 413, "{v}");
    let (st, _, _) = upload(&s, "Bad%20Name", &ctx, "application/wasm");
    assert_eq!(st, 422);
    let v = ok(call(&s, "GET", "/v1/tenants/plant/plugins", None), 200);
    assert_eq!(v["total"], 1, "refused uploads stored nothing: {v}");
    let v = ok(
        call(&s, "DELETE", "/v1/tenants/plant/plugins/console", None),
        409,
    );
    assert_eq!(v["code"], "in_use");
    ok(call(&s, "GET", "/v1/tenants/plant/plugins/nope", None), 404);
    ok(
        call(&s, "DELETE", "/v1/tenants/plant/plugins/nope", None),
        404,
    );
    let (st, _, _) = s.request(
        "PUT",
        "/v1/tenants/ghost/plugins/x",
        &[AUTH, ("content-type", "application/wasm")],
        &ctx,
    );
    assert_eq!(st, 404);
    let (st, _, _) = s.request(
        "PUT",
        "/v1/tenants/plant/plugins/x",
        &[("content-type", "application/wasm")],
        &ctx,
    );
    assert_eq!(st, 401);

    // Audit: every change, with the version and size, never the module bytes.
    let v = ok(
        call(&s, "GET", "/v1/tenants/plant/audit?action=plugin.", None),
        200,
    );
    let actions: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["plugin.create", "plugin.replace"], "{v}");
    let change = &v["items"][1]["changes"][0];
    assert_eq!(change["before"]["sha256"], sha.as_str());
    assert!(
        change["after"].get("wasm").is_none() && change["after"]["size"].is_u64(),
        "{change}"
    );

    // Metrics count the calls of the live version by outcome.
    let (_, _, m) = s.request("GET", "/metrics", &[], b"");
    assert!(
        m.lines()
            .any(|l| l.starts_with("portcullis_plugin_calls_total{")
                && l.contains("outcome=\"deny\"")
                && l.contains("tenant=\"plant\"")
                && l.contains("version=\"")),
        "{m}"
    );

    // Durable: after a restart the plugin and the role binding are back.
    drop(s);
    let s = start(&store);
    let v = check(&s, "ann", None, rev);
    assert_eq!(v["reason"], "plugin_denied", "{v}");

    // Unbind, then delete; the role's checks no longer consult a plugin.
    ok(
        call(
            &s,
            "PATCH",
            "/v1/tenants/plant/roles/console-op",
            Some(json!({"plugin": null})),
        ),
        200,
    );
    let v = ok(
        call(&s, "DELETE", "/v1/tenants/plant/plugins/console", None),
        200,
    );
    let rev = v["revision"].as_u64().unwrap();
    let v = check(&s, "ann", None, rev);
    assert_eq!(v["allowed"], true, "{v}");
}

#[test]
fn a_data_file_with_plugins_seeds_the_store_and_passes_its_tests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ctx.wasm"), fixture("has_context")).unwrap();
    let data = r#"
tenants:
  - id: plant
    plugins: [{ name: console, path: ctx.wasm }]
    nodes:
      - { id: org, kind: organisation }
      - { id: site, kind: site, parent: org }
      - { id: press-1, kind: asset, parent: site }
    roles: [{ id: console-op, permissions: ["asset:operate"], plugin: console }]
    users: [{ id: ann, email: ann@plant.example }]
    assignments: [{ user: ann, role: console-op, scope: site }]
tests:
  - { tenant: plant, subject: ann, action: asset:operate, resource: press-1, allowed: false, reason: condition_not_met }
  - { tenant: plant, subject: ann, action: asset:operate, resource: press-1, allowed: true, context: { channel: console } }
"#;
    let path = dir.path().join("plant.yaml");
    std::fs::write(&path, data).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["test", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 passed"), "{text}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "check",
            "--data",
            path.to_str().unwrap(),
            "--tenant",
            "plant",
            "--subject",
            "ann",
            "--action",
            "asset:operate",
            "--resource",
            "press-1",
            "--context",
            r#"{"channel":"console"}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let store = dir.path().join("store").to_string_lossy().into_owned();
    let s = Server::start(
        &["--store", &store, "--data", path.to_str().unwrap()],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    );
    let v = check(&s, "ann", Some(json!({"channel": "console"})), 0);
    assert_eq!(v["allowed"], true, "{v}");
    let (st, v) = call(&s, "GET", "/v1/tenants/plant/plugins/console", None);
    assert_eq!(
        (st, v["size"].as_u64()),
        (
            200,
            Some(std::fs::read(dir.path().join("ctx.wasm")).unwrap().len() as u64)
        )
    );
}

#[test]
fn the_cli_manages_plugins_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").to_string_lossy().into_owned();
    let s = start(&store);
    let (st, v) = call(&s, "POST", "/v1/tenants", Some(json!({"id": "plant"})));
    assert_eq!(st, 201, "{v}");
    let good = dir.path().join("allow.wasm");
    std::fs::write(&good, fixture("allow")).unwrap();
    let bad = dir.path().join("wasi.wasm");
    std::fs::write(&bad, fixture("wasi")).unwrap();
    let url = format!("http://{}", s.addr);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("plugin")
            .args(args)
            .env("PORTCULLIS_ADMIN_URL", &url)
            .env("PORTCULLIS_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = cli(&["validate", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok:") && out.contains("sha256"), "{out}");
    let (code, out) = cli(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("wasi_snapshot_preview1"), "{out}");

    let (code, out) = cli(&[
        "upload",
        "--tenant",
        "plant",
        "--name",
        "gate",
        "--description",
        "lets all in",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"sha256\""), "{out}");
    let (code, out) = cli(&[
        "upload",
        "--tenant",
        "plant",
        "--name",
        "bad",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("422"), "{out}");
    let (code, out) = cli(&["list", "--tenant", "plant"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"gate\"") && out.contains("lets all in"),
        "{out}"
    );
    let (code, out) = cli(&["show", "--tenant", "plant", "--name", "gate"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["delete", "--tenant", "plant", "--name", "gate"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["show", "--tenant", "plant", "--name", "gate"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("404"), "{out}");
    // A wrong token is refused, and said so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "plugin",
            "list",
            "--tenant",
            "plant",
            "--url",
            &url,
            "--token",
            "wrong-token-wrong-token",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn a_tenant_holds_at_most_plugins_max_per_tenant_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg.yaml");
    std::fs::write(&cfg, "plugins:\n  max_per_tenant: 2\n").unwrap();
    let store = dir.path().join("store");
    let s = Server::start(
        &[
            "--store",
            store.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    );
    let (st, v) = call(&s, "POST", "/v1/tenants", Some(json!({"id": "plant"})));
    assert_eq!(st, 201, "{v}");
    let wasm = fixture("has_context");
    for name in ["a", "b"] {
        let (st, _, v) = upload(&s, name, &wasm, "application/wasm");
        assert_eq!(st, 201, "{name}: {v}");
    }
    // A third is refused; replacing one of the two is not a new plugin.
    let (st, _, v) = upload(&s, "c", &wasm, "application/wasm");
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["code"], "quota_exceeded", "{v}");
    let (st, _, v) = upload(&s, "a", &fixture("deny"), "application/wasm");
    assert_eq!(st, 200, "{v}");
}
