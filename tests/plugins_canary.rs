//! Plugin canaries (issue 18, item 5), through HTTP and the CLI against the real binary with
//! real plugin modules (the WAT fixtures of `tests/fixtures/plugins`): a candidate on a share
//! of a plugin's calls, split by the documented hash of subject and resource; the split is
//! stable, shown side by side (plugin, versions, explain, metric), changed, promoted, aborted,
//! audited with the actor, refused when invalid, and kept across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

#[path = "common/server.rs"]
mod server;

const TOKEN: &str = "canary-admin-token-0123456789";
const USERS: usize = 12;
const ASSETS: usize = 8;

/// The split as `plugins/README.md` documents it: FNV-1a 64 over `subject ‖ 0x00 ‖ resource`,
/// MurmurHash3's finalizer, modulo 100. The candidate runs when the bucket is below the share.
fn bucket(subject: &str, resource: &str) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in subject
        .as_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(resource.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % 100) as u8
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Compiles fixture `name` into `dir/<name>.wasm`; returns the path and the module's SHA-256.
fn wasm(dir: &Path, name: &str) -> (PathBuf, String) {
    let bytes = wat::parse_file(format!("tests/fixtures/plugins/{name}.wat")).unwrap();
    let p = dir.join(format!("{name}.wasm"));
    std::fs::write(&p, &bytes).unwrap();
    (p, sha(&bytes))
}

fn users() -> Vec<String> {
    (0..USERS).map(|i| format!("u{i:02}")).collect()
}

fn assets() -> Vec<String> {
    (0..ASSETS).map(|i| format!("a{i}")).collect()
}

/// Tenant `plant`: plugin `gate` (the `allow` fixture) is the condition of role `op`, which
/// group `crew` (every user) holds on the whole tree: each check runs `gate` once.
fn world(dir: &Path) -> PathBuf {
    wasm(dir, "allow");
    let mut y = String::from(
        "tenants:\n  - id: plant\n    rbac: enterprise\n    plugins:\n      - { name: gate, path: allow.wasm }\n    nodes:\n      - { id: org, kind: organisation }\n",
    );
    for a in assets() {
        y.push_str(&format!(
            "      - {{ id: {a}, kind: asset, parent: org }}\n"
        ));
    }
    y.push_str("    roles:\n      - { id: op, permissions: [\"asset:operate\"], plugin: gate }\n    users:\n");
    for u in users() {
        y.push_str(&format!(
            "      - {{ id: {u}, email: {u}@plant.example }}\n"
        ));
    }
    y.push_str(&format!(
        "    groups:\n      - {{ id: crew, members: [{}] }}\n    assignments:\n      - {{ group: crew, role: op, scope: org }}\ntests: []\n",
        users().join(", ")
    ));
    let p = dir.join("world.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

fn start(world: &Path, store: &Path) -> server::Server {
    server::Server::start(
        &[
            "--data",
            world.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    )
}

/// Runs `portcullis` with `args` in `dir` against server `s`; returns (exit, output).
fn cli(s: &server::Server, dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(dir)
        .env("PORTCULLIS_ADMIN_URL", format!("http://{}", s.addr))
        .env("PORTCULLIS_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn get(s: &server::Server, path: &str) -> (u16, Value) {
    s.admin_call(TOKEN, "GET", path, Value::Null)
}

/// The plugin as `GET …/plugins/gate` shows it, and the revision of its last change.
/// `portcullis plugin upload --tenant T --name N --canary SHARE MODULE`.
fn upload_canary(
    s: &server::Server,
    dir: &Path,
    tenant: &str,
    name: &str,
    share: &str,
    module: &str,
) -> (Option<i32>, String) {
    cli(
        s,
        dir,
        &[
            "plugin", "upload", "--tenant", tenant, "--name", name, "--canary", share, module,
        ],
    )
}

fn gate(s: &server::Server) -> (Value, u64) {
    let (st, v) = get(s, "/v1/tenants/plant/plugins/gate");
    assert_eq!(st, 200, "{v}");
    let rev = v["etag"]
        .as_str()
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap();
    (v, rev)
}

/// `allowed` of one check, read at revision `rev` or later.
fn check(s: &server::Server, subject: &str, resource: &str, rev: u64) -> bool {
    let (st, v) = s.post_json(
        "/v1/check",
        &json!({"tenant": "plant", "subject": subject, "action": "asset:operate",
            "resource": resource, "min_revision": rev})
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    v["allowed"].as_bool().unwrap()
}

/// Every (subject, resource) pair checked twice: the same request gives the same answer, and it
/// is the current version's (`allow`) unless the pair's bucket is below `share` (candidate:
/// `deny`). Returns how many pairs ran the candidate.
fn assert_split(s: &server::Server, share: u8, rev: u64) -> usize {
    let mut candidate = 0;
    for u in users() {
        for a in assets() {
            let first = check(s, &u, &a, rev);
            assert_eq!(first, check(s, &u, &a, rev), "{u} on {a} is not stable");
            let on_candidate = bucket(&u, &a) < share;
            assert_eq!(
                first,
                !on_candidate,
                "{u} on {a}: bucket {} with share {share}",
                bucket(&u, &a)
            );
            candidate += usize::from(on_candidate);
        }
    }
    candidate
}

/// `portcullis_plugin_calls_total` of plugin `gate` by (version, outcome).
fn calls(s: &server::Server, version: &str, outcome: &str) -> u64 {
    let (st, _, body) = s.request("GET", "/metrics", &[], b"");
    assert_eq!(st, 200);
    body.lines()
        .filter(|l| l.starts_with("portcullis_plugin_calls_total{"))
        .filter(|l| {
            l.contains("plugin=\"gate\"")
                && l.contains(&format!("version=\"{version}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The condition note of plugin `gate` in an explanation of `subject` on `resource`.
fn explain_gate(s: &server::Server, subject: &str, resource: &str, rev: u64) -> Value {
    let (st, e) = s.post_json(
        "/v1/explain",
        &json!({"tenant": "plant", "subject": subject, "action": "asset:operate",
            "resource": resource, "min_revision": rev})
        .to_string(),
    );
    assert_eq!(st, 200, "{e}");
    e["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.get("condition").filter(|c| c["plugin"] == "gate"))
        .cloned()
        .unwrap_or_else(|| panic!("{e}"))
}

/// A pair whose bucket is below `share` (candidate) or not.
fn pair(share: u8, candidate: bool) -> (String, String) {
    users()
        .into_iter()
        .flat_map(|u| assets().into_iter().map(move |a| (u.clone(), a)))
        .find(|(u, a)| (bucket(u, a) < share) == candidate)
        .unwrap()
}

#[test]
fn a_canary_splits_stably_shows_both_versions_and_is_promoted_or_aborted_with_audit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = start(&world(d), &d.join("store"));
    let (_, allow) = wasm(d, "allow");
    let (_, deny) = wasm(d, "deny");
    let (_, trap) = wasm(d, "trap");
    wasm(d, "wasi");

    // Before any canary every call runs the current version.
    let (_, rev) = gate(&s);
    assert_split(&s, 0, rev);

    // A module the runtime refuses is refused as a canary too, and nothing changes.
    let (code, out) = upload_canary(&s, d, "plant", "gate", "50", "wasi.wasm");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("HTTP 422"), "{out}");
    assert!(gate(&s).0.get("canary").is_none());
    // Shares outside 1..=99 (or not a number) are 422 naming `canary`; nothing changes.
    let auth = format!("Bearer {TOKEN}");
    for bad in ["0", "100", "-5", "ten"] {
        let (st, _, body) = s.request(
            "PUT",
            &format!("/v1/tenants/plant/plugins/gate?canary={bad}"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/wasm"),
            ],
            &std::fs::read(d.join("deny.wasm")).unwrap(),
        );
        assert_eq!(st, 422, "{bad}: {body}");
        assert!(body.contains("\"canary\""), "{body}");
    }
    // A canary of the current version itself, or of a plugin that does not exist: 409.
    let (code, out) = upload_canary(&s, d, "plant", "gate", "50", "allow.wasm");
    assert!(code == Some(1) && out.contains("HTTP 409"), "{out}");
    let (code, out) = upload_canary(&s, d, "plant", "nope", "50", "deny.wasm");
    assert!(code == Some(1) && out.contains("HTTP 409"), "{out}");
    assert!(gate(&s).0.get("canary").is_none());

    // Start: `deny` on half of the calls.
    let (code, out) = upload_canary(&s, d, "plant", "gate", "50", "deny.wasm");
    assert_eq!(code, Some(0), "{out}");
    let (p, rev) = gate(&s);
    assert_eq!(
        p["sha256"],
        allow.as_str(),
        "the current version stays: {p}"
    );
    assert_eq!(p["canary"]["sha256"], deny.as_str(), "{p}");
    assert_eq!(p["canary"]["share"], 50, "{p}");
    assert!(p["canary"]["since"].as_i64().unwrap() > 0, "{p}");
    assert!(p["canary"].get("wasm").is_none(), "no module bytes: {p}");
    let (st, v) = get(&s, "/v1/tenants/plant/plugins/gate/versions");
    assert_eq!(st, 200);
    assert_eq!(v["data"][0]["sha256"], allow.as_str(), "{v}");
    assert_eq!(v["data"][0]["current"], true, "{v}");
    assert_eq!(v["canary"]["sha256"], deny.as_str(), "{v}");
    let (code, out) = cli(
        &s,
        d,
        &["plugin", "canary", "--tenant", "plant", "--name", "gate"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&deny) && out.contains("\"share\": 50"),
        "{out}"
    );

    // Over many distinct subjects and resources both versions decide, each request always the
    // same way, exactly as the documented bucket says.
    let before_allow = calls(&s, &allow, "allow");
    let n = assert_split(&s, 50, rev);
    assert!(
        n > 0 && n < USERS * ASSETS,
        "{n} of {} on the candidate",
        USERS * ASSETS
    );
    // Side by side: each version's calls counted under its own version.
    assert_eq!(calls(&s, &deny, "deny"), 2 * n as u64);
    assert_eq!(
        calls(&s, &allow, "allow") - before_allow,
        2 * (USERS * ASSETS - n) as u64
    );

    // Explain names the version that decided and how the call was split.
    let (u, a) = pair(50, true);
    let c = explain_gate(&s, &u, &a, rev);
    assert_eq!(c["version"], deny.as_str(), "{c}");
    assert_eq!(c["outcome"], "deny", "{c}");
    assert_eq!(c["canary"]["candidate"], true, "{c}");
    assert_eq!(c["canary"]["share"], 50, "{c}");
    assert_eq!(c["canary"]["bucket"], bucket(&u, &a), "{c}");
    let (u, a) = pair(50, false);
    let c = explain_gate(&s, &u, &a, rev);
    assert_eq!(c["version"], allow.as_str(), "{c}");
    assert_eq!(c["canary"]["candidate"], false, "{c}");

    // While the canary runs, a plain upload and a rollback are refused (409), nothing changes.
    let (code, out) = cli(
        &s,
        d,
        &[
            "plugin",
            "upload",
            "--tenant",
            "plant",
            "--name",
            "gate",
            "trap.wasm",
        ],
    );
    assert!(code == Some(1) && out.contains("HTTP 409"), "{out}");
    assert!(out.contains("promote or abort"), "{out}");
    let (code, out) = cli(
        &s,
        d,
        &[
            "plugin", "rollback", "--tenant", "plant", "--name", "gate", "--to", &allow,
        ],
    );
    assert_eq!(
        code,
        Some(0),
        "rolling back to the current version changes nothing: {out}"
    );
    assert_eq!(gate(&s).1, rev);

    // Changing the share is an update: the cohort at 10 % is a subset of the one at 50 %.
    let (code, out) = cli(
        &s,
        d,
        &[
            "plugin", "canary", "--tenant", "plant", "--name", "gate", "--share", "10",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let (p, rev) = gate(&s);
    assert_eq!(p["canary"]["share"], 10, "{p}");
    assert_split(&s, 10, rev);
    let (code, out) = cli(
        &s,
        d,
        &[
            "plugin", "canary", "--tenant", "plant", "--name", "gate", "--share", "150",
        ],
    );
    assert!(code == Some(1) && out.contains("HTTP 422"), "{out}");
    // Another candidate replaces the running one (its `since` restarts).
    let (code, out) = upload_canary(&s, d, "plant", "gate", "50", "trap.wasm");
    assert_eq!(code, Some(0), "{out}");
    let (p, rev) = gate(&s);
    assert_eq!(p["canary"]["sha256"], trap.as_str(), "{p}");
    assert_split(&s, 50, rev);
    assert!(
        calls(&s, &trap, "trap") > 0,
        "the trapping candidate fails closed"
    );

    // Abort: every call runs the current version again.
    let (code, out) = cli(
        &s,
        d,
        &["plugin", "abort", "--tenant", "plant", "--name", "gate"],
    );
    assert_eq!(code, Some(0), "{out}");
    let (p, rev) = gate(&s);
    assert!(p.get("canary").is_none(), "{p}");
    assert_eq!(p["sha256"], allow.as_str());
    assert_split(&s, 0, rev);
    let (st, v) = get(&s, "/v1/tenants/plant/plugins/gate/canary");
    assert_eq!(st, 404, "{v}");
    let (code, out) = cli(
        &s,
        d,
        &["plugin", "promote", "--tenant", "plant", "--name", "gate"],
    );
    assert!(
        code == Some(1) && out.contains("HTTP 404"),
        "no canary to promote: {out}"
    );

    // Promote: a new canary of `deny` becomes current; every call runs it and `allow` is the
    // newest kept previous version.
    let (code, out) = upload_canary(&s, d, "plant", "gate", "50", "deny.wasm");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli(
        &s,
        d,
        &["plugin", "promote", "--tenant", "plant", "--name", "gate"],
    );
    assert_eq!(code, Some(0), "{out}");
    let (p, rev) = gate(&s);
    assert_eq!(p["sha256"], deny.as_str(), "{p}");
    assert!(p.get("canary").is_none(), "{p}");
    assert_split(&s, 100, rev);
    let (_, v) = get(&s, "/v1/tenants/plant/plugins/gate/versions");
    assert_eq!(v["data"][0]["sha256"], deny.as_str(), "{v}");
    assert_eq!(v["data"][1]["sha256"], allow.as_str(), "{v}");
    assert!(v["canary"].is_null(), "{v}");

    // Audited, with the actor, without module bytes.
    let (st, a) = get(&s, "/v1/tenants/plant/audit?action=plugin.");
    assert_eq!(st, 200, "{a}");
    let entries: Vec<&Value> = a["items"].as_array().unwrap().iter().collect();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in [
        "plugin.canary.start",
        "plugin.canary.share",
        "plugin.canary.replace",
        "plugin.canary.abort",
        "plugin.canary.promote",
    ] {
        let e = entries
            .iter()
            .find(|e| e["action"] == want)
            .unwrap_or_else(|| panic!("no {want} in {actions:?}"));
        assert_eq!(e["actor"], "platform", "{e}");
    }
    assert!(!a.to_string().contains("\"wasm\""), "no module bytes: {a}");
}

/// The canary lives in the stored plugin row: after a restart on the same (embedded redb)
/// store, the tenant's snapshot has it again and splits the same calls the same way.
#[test]
fn a_canary_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let world = world(d);
    let store = d.join("store");
    let (_, allow) = wasm(d, "allow");
    let (_, deny) = wasm(d, "deny");
    {
        let s = start(&world, &store);
        let (code, out) = upload_canary(&s, d, "plant", "gate", "30", "deny.wasm");
        assert_eq!(code, Some(0), "{out}");
        let (_, rev) = gate(&s);
        assert_split(&s, 30, rev);
    }
    let s = start(&world, &store);
    let (p, rev) = gate(&s);
    assert_eq!(p["sha256"], allow.as_str(), "{p}");
    assert_eq!(p["canary"]["sha256"], deny.as_str(), "{p}");
    assert_eq!(p["canary"]["share"], 30, "{p}");
    let n = assert_split(&s, 30, rev);
    assert!(n > 0);
    assert_eq!(calls(&s, &deny, "deny"), 2 * n as u64);
    assert!(calls(&s, &allow, "allow") > 0);
}

/// The `sh` blocks of `plugins/README.md`'s "Canary" section, in order.
fn readme_canary_blocks() -> Vec<String> {
    let readme = include_str!("../plugins/README.md");
    let start = readme
        .find("\n## Canary\n")
        .expect("plugins/README.md has a Canary section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in section.lines() {
        match (&mut cur, line.trim()) {
            (None, "```sh") => cur = Some(String::new()),
            (Some(_), "```") => blocks.extend(cur.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// Runs `script` with bash in `dir`, the test's `portcullis` first on PATH, against `s`.
fn sh(s: &server::Server, dir: &Path, script: &str) -> (Option<i32>, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_portcullis"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("PORTCULLIS_ADMIN_URL", format!("http://{}", s.addr))
        .env("PORTCULLIS_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// `plugins/README.md`'s Canary section, every command as written, against a real server (the
/// demo tenant `femo`): start and widen a canary, abort it; start it again and promote it.
#[test]
fn the_readme_canary_section_runs_as_written() {
    let blocks = readme_canary_blocks();
    assert_eq!(blocks.len(), 3, "start, abort, promote: {blocks:?}");
    assert!(blocks[1].contains("plugin abort") && blocks[2].contains("plugin promote"));
    let s = server::Server::start(&[], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (p, v1) = wasm(d, "allow");
    std::fs::rename(p, d.join("mw-rule.wasm")).unwrap();
    let (p, v2) = wasm(d, "deny");
    std::fs::rename(p, d.join("mw-rule-v2.wasm")).unwrap();
    let (code, out) = sh(
        &s,
        d,
        "portcullis plugin upload --tenant femo --name mw-rule mw-rule.wasm",
    );
    assert_eq!(code, Some(0), "{out}");
    let plugin = || {
        let (st, v) = get(&s, "/v1/tenants/femo/plugins/mw-rule");
        assert_eq!(st, 200, "{v}");
        v
    };

    let (code, out) = sh(&s, d, &blocks[0]);
    assert_eq!(code, Some(0), "{}\n{out}", blocks[0]);
    assert!(out.contains("\"share\": 10"), "the canary is shown: {out}");
    let p = plugin();
    assert_eq!(
        (&p["sha256"], &p["canary"]["sha256"]),
        (&json!(v1), &json!(v2)),
        "{p}"
    );
    assert_eq!(p["canary"]["share"], 50, "{p}");
    let (code, out) = sh(&s, d, &blocks[1]);
    assert_eq!(code, Some(0), "{}\n{out}", blocks[1]);
    let p = plugin();
    assert!(
        p.get("canary").is_none() && p["sha256"] == v1.as_str(),
        "{p}"
    );

    let (code, out) = sh(&s, d, &blocks[0]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = sh(&s, d, &blocks[2]);
    assert_eq!(code, Some(0), "{}\n{out}", blocks[2]);
    let p = plugin();
    assert!(
        p.get("canary").is_none() && p["sha256"] == v2.as_str(),
        "{p}"
    );
    let (_, v) = get(&s, "/v1/tenants/femo/plugins/mw-rule/versions");
    assert_eq!(v["data"][1]["sha256"], v1.as_str(), "{v}");
}

/// The canary endpoints are authorized like the other plugin calls: reading the canary needs
/// `plugin:read` in the tenant, starting, changing, promoting and aborting one `plugin:update`.
#[test]
fn canary_endpoints_need_plugin_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = start(&world(d), &d.join("store"));
    let (_, deny) = wasm(d, "deny");
    let module = std::fs::read(d.join("deny.wasm")).unwrap();
    let ok = |method: &str, path: &str, body: Value| -> Value {
        let (st, v) = s.admin_call(TOKEN, method, path, body);
        assert!(st < 300, "{method} {path}: {st} {v}");
        v
    };
    ok(
        "POST",
        "/v1/tenants/plant/roles",
        json!({"id": "plugin-viewer", "permissions": ["plugin:read"]}),
    );
    ok(
        "POST",
        "/v1/tenants/plant/users",
        json!({"id": "viv", "email": "viv@plant.example", "first_name": "Viv"}),
    );
    ok(
        "POST",
        "/v1/tenants/plant/assignments",
        json!({"user": "viv", "role": "plugin-viewer", "scope": "org"}),
    );
    let key = |user: &str| -> String {
        let v = ok(
            "POST",
            "/v1/tenants/plant/api-keys",
            json!({"user": user, "name": "canary"}),
        );
        v["data"]["key"].as_str().unwrap().to_string()
    };
    let (viewer, nobody) = (key("viv"), key("u00"));
    let put_canary = |token: &str| {
        let auth = format!("Bearer {token}");
        let (st, _, body) = s.request(
            "PUT",
            "/v1/tenants/plant/plugins/gate?canary=20",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/wasm"),
            ],
            &module,
        );
        (st, body)
    };
    let code = |token: &str, method: &str, path: &str, body: Value| -> (u16, String) {
        let (st, v) = s.admin_call(token, method, path, body);
        (st, v["code"].as_str().unwrap_or_default().to_string())
    };
    let forbidden = (403, "forbidden".to_string());
    for token in [&viewer, &nobody] {
        let (st, body) = put_canary(token);
        assert_eq!(st, 403, "{body}");
    }
    let (st, body) = put_canary(TOKEN);
    assert_eq!(st, 200, "{body}");
    let canary = "/v1/tenants/plant/plugins/gate/canary";
    let (st, v) = s.admin_call(&viewer, "GET", canary, Value::Null);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["sha256"], deny.as_str(), "{v}");
    assert_eq!(code(&nobody, "GET", canary, Value::Null), forbidden);
    for token in [&viewer, &nobody] {
        assert_eq!(
            code(token, "PATCH", canary, json!({"share": 30})),
            forbidden
        );
        assert_eq!(code(token, "DELETE", canary, Value::Null), forbidden);
        assert_eq!(
            code(token, "POST", &format!("{canary}/promote"), Value::Null),
            forbidden
        );
    }
    // Nothing changed.
    let (p, _) = gate(&s);
    assert_eq!(p["canary"]["share"], 20, "{p}");
}
