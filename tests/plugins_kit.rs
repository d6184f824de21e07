//! The plugin authors' kit (issue 18), run as a tenant developer would: `portcullis plugin eval`
//! and data-file test cases asserting a plugin's reason, through the real `portcullis` process
//! and WAT fixtures (`tests/fixtures/plugins`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run portcullis")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fixture(name: &str) -> String {
    format!("tests/fixtures/plugins/{name}.wat")
}

/// Compiles fixture `name` into `dir/<as>.wasm`.
fn wasm_into(dir: &Path, name: &str, as_name: &str) -> PathBuf {
    let p = dir.join(format!("{as_name}.wasm"));
    std::fs::write(&p, wat::parse_file(fixture(name)).unwrap()).unwrap();
    p
}

fn eval(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["plugin", "eval"];
    all.extend_from_slice(args);
    let o = portcullis(&all);
    let stdout = text(&o.stdout);
    let stderr = text(&o.stderr);
    (o.status.code(), format!("{stdout}{stderr}"))
}

#[test]
fn eval_prints_verdict_reason_fuel_time_and_trap() {
    let base = ["--action", "asset:operate", "--resource", "press-7"];
    let with = |f: &str, extra: &[&str]| {
        let fx = fixture(f);
        let mut a = vec![fx.as_str()];
        a.extend_from_slice(&base);
        a.extend_from_slice(extra);
        eval(&a)
    };
    let (code, out) = with("deny", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("verdict: deny\n"), "{out}");
    assert!(out.contains("reason: vetoed\n"), "{out}");
    assert!(
        out.contains("fuel: ") && out.contains(" of 10000000"),
        "{out}"
    );
    assert!(out.contains("µs per call"), "{out}");

    let (code, out) = with("allow", &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verdict: allow\n"), "{out}");

    // A trap names itself and where it happened.
    let (code, out) = with("trap", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("verdict: deny (outcome trap)"), "{out}");
    assert!(
        out.contains("trap: wasm trap: wasm `unreachable` instruction executed in func["),
        "{out}"
    );

    // Running out of fuel shows the whole budget burnt.
    let (code, out) = with("loop", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("(outcome out_of_fuel)") || out.contains("(outcome timeout)"),
        "{out}"
    );

    // The context reaches the plugin (flag bit) — and a context the data plane would refuse is
    // refused here too.
    let (_, out) = with("has_context", &["--context", r#"{"a":1}"#]);
    assert!(out.contains("verdict: abstain"), "path of 1 entry: {out}");
    let (code, out) = with("has_context", &["--context", r#"{"a":1,"a":2}"#]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("duplicate key 'a'"), "{out}");

    // JSON output, repeated calls.
    let (code, out) = with("deny", &["--json", "--repeat", "50"]);
    assert_eq!(code, Some(2), "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["reason"], "vetoed");
    assert_eq!(v["calls"], 50);
    assert!(v["fuel_used"].as_u64().unwrap() > 0, "{v}");
    assert!(v["time_us"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["version"].as_str().unwrap().len(), 64);

    // Bad answers say what was wrong.
    let (code, out) = with("bad_alloc", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("(outcome bad_alloc)"), "{out}");
    assert!(out.contains("trap: portcullis_alloc("), "{out}");
    let (_, out) = with("bad_result", &[]);
    assert!(
        out.contains("trap: portcullis_evaluate returned 7; verdicts are 0"),
        "{out}"
    );

    // Bad flags are errors (exit 1), not verdicts.
    let (code, out) = with("deny", &["--at", "yesterday"]);
    assert_eq!(code, Some(1), "{out}");
    let (code, out) = eval(&[&fixture("deny"), "--action", "operate", "--resource", "x"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("resource:verb"), "{out}");
    let (code, out) = eval(&[&fixture("wasi"), "--action", "a:b", "--resource", "x"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("refused") && out.contains("wasi"), "{out}");
}

/// `--at` is the plugin's `now`, and it may be 0 (the epoch).
#[test]
fn eval_at_sets_now_even_zero() {
    let dir = tempfile::tempdir().unwrap();
    // Allows iff now (i64 at offset 8) is 0; else abstains.
    let src = dir.path().join("epoch.wat");
    std::fs::write(
        &src,
        r#"(module
  (memory (export "memory") 1)
  (func (export "portcullis_abi_version") (result i32) (i32.const 1))
  (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "portcullis_evaluate") (param $p i32) (param i32) (result i32)
    (i64.eqz (i64.load (i32.add (local.get $p) (i32.const 8))))))"#,
    )
    .unwrap();
    let f = src.to_str().unwrap();
    let args = |at: &'static str| [f, "--action", "a:b", "--resource", "r", "--at", at];
    assert_eq!(eval(&args("0")).0, Some(0));
    assert_eq!(eval(&args("1970-01-01T00:00:00Z")).0, Some(0));
    assert_eq!(eval(&args("1")).0, Some(2));
    assert_eq!(eval(&[f, "--action", "a:b", "--resource", "r"]).0, Some(2));
}

const WORLD: &str = r#"
tenants:
  - id: plant
    rbac: enterprise
    plugins:
      - { name: deny, path: deny.wasm }
      - { name: ctx, path: has_context.wasm }
      - { name: trap, path: trap.wasm }
    nodes:
      - { id: org, kind: organisation }
      - { id: site, kind: site, parent: org }
      - { id: press-1, kind: asset, parent: site }
    roles:
      - { id: op-deny, permissions: ["asset:operate"], plugin: deny }
      - { id: op-ctx, permissions: ["asset:operate"], plugin: ctx }
      - { id: op-trap, permissions: ["asset:operate"], plugin: trap }
    users:
      - { id: dana, email: dana@x.example, kind: admin }
      - { id: finn, email: finn@x.example }
      - { id: tess, email: tess@x.example }
    groups:
      - { id: crew, members: [finn] }
    assignments:
      - { user: dana, role: op-deny, scope: org }
      - { group: crew, role: op-ctx, scope: site }
      - { user: tess, role: op-trap, scope: org }
"#;

fn world(dir: &Path, tests: &str) -> PathBuf {
    wasm_into(dir, "deny", "deny");
    wasm_into(dir, "has_context", "has_context");
    wasm_into(dir, "trap", "trap");
    let p = dir.join("world.yaml");
    let tests = if tests.is_empty() {
        "tests: []\n".to_string()
    } else {
        format!("tests:\n{tests}")
    };
    std::fs::write(&p, format!("{WORLD}{tests}")).unwrap();
    p
}

#[test]
fn data_file_cases_assert_a_plugin_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = world(
        dir.path(),
        r#"  - { tenant: plant, subject: dana, action: asset:operate, resource: press-1, allowed: false, reason: plugin_denied, plugin_reason: vetoed }
  - { tenant: plant, subject: finn, action: asset:operate, resource: press-1, allowed: true, context: { channel: console } }
"#,
    );
    let o = portcullis(&["test", good.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("2 passed, 0 failed"), "{out}");

    // A wrong plugin reason fails, and the failure says what each plugin said.
    let bad = world(
        dir.path(),
        r#"  - { tenant: plant, subject: dana, action: asset:operate, resource: press-1, allowed: false, plugin_reason: "out of hours" }
  - { tenant: plant, subject: finn, action: asset:operate, resource: press-1, allowed: true }
  - { tenant: plant, subject: tess, action: asset:operate, resource: press-1, allowed: true }
  - { tenant: plant, subject: finn, action: asset:operate, resource: press-1, allowed: false, plugin_reason: anything }
"#,
    );
    let o = portcullis(&["test", bad.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", text(&o.stderr));
    assert!(out.contains("0 passed, 4 failed"), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains(r#"with plugin reason "out of hours""#)
            && lines[0].contains(r#"plugins: deny deny "vetoed""#),
        "{}",
        lines[0]
    );
    // Without context the group's plugin abstains.
    assert!(
        lines[1].contains("got deny (condition_not_met); plugins: ctx abstain"),
        "{}",
        lines[1]
    );
    // A trap shows its message.
    assert!(
        lines[2].contains("plugins: trap trap (trap: wasm trap: wasm `unreachable`"),
        "{}",
        lines[2]
    );
    // Asking for a reason no plugin gave fails even when the decision matches.
    assert!(lines[3].contains("plugins: ctx abstain"), "{}", lines[3]);
}

#[test]
fn eval_builds_the_input_from_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = world(dir.path(), "");
    let d = data.to_str().unwrap();
    // finn holds op-ctx through the group, at site: the path org > site > press-1 has 3 entries.
    let (code, out) = eval(&[
        &fixture("has_context"),
        "--data",
        d,
        "--subject",
        "finn",
        "--action",
        "asset:operate",
        "--resource",
        "press-1",
        "--context",
        "{}",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "role 'op-ctx', scope 'site', path organisation:org > site:site > asset:press-1"
        ),
        "{out}"
    );
    assert!(out.contains("subject 'finn' (member)"), "{out}");
    // On `site` the path has 2 entries: abstain.
    let (code, out) = eval(&[
        &fixture("has_context"),
        "--data",
        d,
        "--subject",
        "finn",
        "--action",
        "asset:operate",
        "--resource",
        "site",
        "--context",
        "{}",
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("verdict: abstain"), "{out}");
    // Attributes come from the user.
    let (_, out) = eval(&[
        &fixture("deny"),
        "--data",
        d,
        "--subject",
        "dana",
        "--action",
        "asset:operate",
        "--resource",
        "press-1",
    ]);
    assert!(
        out.contains("subject 'dana' (admin), role 'op-deny', scope 'org'"),
        "{out}"
    );
    // Unknown subject, resource: clear errors.
    for (s, r, needle) in [
        ("nobody", "press-1", "no user 'nobody'"),
        ("finn", "ghost", "no node 'ghost'"),
        ("finn", "org", "no assignment of 'finn'"),
    ] {
        let (code, out) = eval(&[
            &fixture("deny"),
            "--data",
            d,
            "--subject",
            s,
            "--action",
            "asset:operate",
            "--resource",
            r,
        ]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(needle), "{needle}: {out}");
    }
}

/// Debian's wasm32 Rust toolchain and clang (DESIGN §4): installed by `plugins/build.sh` when
/// absent, as `tests/run.sh` does before the tests.
fn toolchains() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let ok = Path::new("/usr/bin/rustc").exists()
            && Path::new("/usr/bin/cargo").exists()
            && Path::new("/usr/lib/rustlib/wasm32-unknown-unknown").exists()
            && Path::new("/usr/bin/clang").exists();
        if !ok {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/build.sh");
            let st = Command::new("bash").arg(&script).status().unwrap();
            assert!(
                st.success(),
                "plugins/build.sh (installs the toolchains) failed"
            );
        }
    });
}

/// Runs `cmd` in `dir` with the test's `portcullis` first on PATH; returns (exit, output).
fn sh(dir: &Path, cmd: &str, envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_portcullis"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", cmd])
        .current_dir(dir)
        .env("PATH", path)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        o.status.code(),
        format!("{}{}", text(&o.stdout), text(&o.stderr)),
    )
}

/// `portcullis plugin new` in each language: the project builds outside this repository,
/// validates, evaluates and passes its data-file tests; a broken rule fails them.
#[test]
fn plugin_new_scaffolds_a_project_that_builds_evals_and_tests() {
    toolchains();
    let root = tempfile::tempdir().unwrap();
    for (lang, build) in [
        ("rust", "./build.sh"),
        ("c", "./build.sh"),
        (
            "wat",
            "portcullis plugin validate mw-wat.wat --out mw-wat.wasm",
        ),
    ] {
        let name = format!("mw-{lang}");
        let (code, out) = sh(
            root.path(),
            &format!("portcullis plugin new {name} --lang {lang}"),
            &[],
        );
        assert_eq!(code, Some(0), "{out}");
        let dir = root.path().join(&name);
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains(&format!("--lang {lang}")), "{readme}");
        let t0 = std::time::Instant::now();
        let (code, out) = sh(&dir, build, &[]);
        assert_eq!(code, Some(0), "{lang} build: {out}");
        let wasm = std::fs::metadata(dir.join(format!("{name}.wasm")))
            .unwrap()
            .len();
        eprintln!("{lang}: built in {:?}, {wasm} bytes", t0.elapsed());
        assert!(wasm < 32 * 1024, "{lang}: {wasm} bytes");
        let (code, out) = sh(
            &dir,
            &format!("portcullis plugin validate {name}.wasm"),
            &[],
        );
        assert_eq!(code, Some(0), "{out}");
        assert!(!out.contains("warning"), "a stripped module: {out}");
        let ctx = if lang == "wat" {
            "{}"
        } else {
            r#"{"ticket":"MW-1234"}"#
        };
        let (code, out) = sh(
            &dir,
            &format!(
                "portcullis plugin eval {name}.wasm --action asset:operate --resource press-7 \
                 --context '{ctx}' --at 2026-01-05T23:00:00Z"
            ),
            &[],
        );
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("verdict: allow"), "{out}");
        let (code, out) = sh(
            &dir,
            &format!(
                "portcullis plugin eval {name}.wasm --data tests.yaml --subject mia \
                 --action asset:operate --resource press-7 --context '{ctx}' --at 2026-01-05T12:00:00Z"
            ),
            &[],
        );
        assert_eq!(code, Some(2), "{out}");
        assert!(
            out.contains("reason: outside the maintenance window (22:00-06:00 UTC)"),
            "{out}"
        );
        let (code, out) = sh(&dir, "portcullis test tests.yaml", &[]);
        assert_eq!(code, Some(0), "{lang}: {out}");
        assert!(out.contains(" passed, 0 failed"), "{out}");
        // The tests can fail: a rule that no longer gives its reason is caught.
        let tests = std::fs::read_to_string(dir.join("tests.yaml")).unwrap();
        std::fs::write(
            dir.join("broken.yaml"),
            tests.replace("(22:00-06:00 UTC)\"", "(21:00-06:00 UTC)\""),
        )
        .unwrap();
        let (code, out) = sh(&dir, "portcullis test broken.yaml", &[]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("1 failed"), "{out}");
        assert!(
            out.contains(&format!(
                "plugins: {name} abstain \"outside the maintenance window (22:00-06:00 UTC)\""
            )),
            "{out}"
        );
    }
    // The SDK's context reader is linear: a 55 KB context of 1,500 members (the ticket last)
    // costs well under the fuel limit.
    let mut big: serde_json::Map<String, serde_json::Value> = (0..1500)
        .map(|i| (format!("k{i}"), serde_json::Value::from(i)))
        .collect();
    big.insert("ticket".into(), "MW-1".into());
    let big = serde_json::Value::Object(big).to_string();
    let (code, out) = eval(&[
        root.path().join("mw-rust/mw-rust.wasm").to_str().unwrap(),
        "--action",
        "asset:operate",
        "--resource",
        "p",
        "--at",
        "2026-01-05T23:00:00Z",
        "--json",
        "--context",
        &big,
    ]);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["fuel_used"].as_u64().unwrap() < 4_000_000, "{v}");
    // The Rust project's own unit tests run natively with the SDK's InputBuilder — on the
    // host toolchain, as `cargo test` would for its author.
    let (code, out) = sh(
        &root.path().join("mw-rust"),
        "CARGO_TARGET_DIR=target/native cargo test --quiet 2>&1",
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 passed"), "{out}");
    // A second `new` into the same place is refused; so is a bad name.
    let (code, out) = sh(root.path(), "portcullis plugin new mw-rust", &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not empty"), "{out}");
    let (code, out) = sh(root.path(), "portcullis plugin new ../evil", &[]);
    assert_eq!(code, Some(1), "{out}");
}

#[path = "common/server.rs"]
mod server;

const TOKEN: &str = "kit-admin-token-0123456789";

/// The fenced `sh` blocks of a README, in order, as one script.
fn sh_blocks(readme: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.trim() == "```sh" {
            inside = true;
        } else if inside && line.trim() == "```" {
            inside = false;
        } else if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A scaffolded project's README, every command as written, against a real server: build,
/// validate, eval, data-file tests, upload, bind, explain, versions — and, after a second
/// version, rollback; then the server holds the first version again, and the audit log says so.
#[test]
fn the_scaffolded_readme_runs_as_written_against_a_real_server() {
    toolchains();
    let s = server::Server::start(&[], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    let root = tempfile::tempdir().unwrap();
    let token_file = root.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let url = format!("http://{}", s.addr);
    let envs = [
        ("PORTCULLIS_ADMIN_URL", url.as_str()),
        ("PORTCULLIS_ADMIN_TOKEN_FILE", token_file.to_str().unwrap()),
        ("TENANT", "femo"),
    ];
    let versions = |name: &str| -> serde_json::Value {
        let (st, v) = s.admin_call(
            TOKEN,
            "GET",
            &format!("/v1/tenants/femo/plugins/{name}/versions"),
            serde_json::Value::Null,
        );
        assert_eq!(st, 200, "{v}");
        v
    };
    for lang in ["rust", "wat"] {
        let name = format!("readme-{lang}");
        let (code, out) = sh(
            root.path(),
            &format!("portcullis plugin new {name} --lang {lang}"),
            &[],
        );
        assert_eq!(code, Some(0), "{out}");
        let dir = root.path().join(&name);
        let script = sh_blocks(&std::fs::read_to_string(dir.join("README.md")).unwrap());
        assert!(script.contains("portcullis plugin rollback"), "{script}");
        let (code, out) = sh(&dir, &script, &envs);
        assert_eq!(code, Some(0), "{lang} README:\n{out}");
        assert!(out.contains(" passed, 0 failed"), "{out}");
        // The explanation shows the plugin's verdict, version and reason.
        assert!(
            out.contains("\"outcome\":\"abstain\"")
                && out.contains(&format!("\"plugin\":\"{name}\"")),
            "{out}"
        );
        let v1 = versions(&name)["data"][0]["sha256"]
            .as_str()
            .unwrap()
            .to_string();
        if lang == "wat" {
            // A second version (another window), uploaded by the same script: it rolls back.
            let wat = dir.join(format!("{name}.wat"));
            let text = std::fs::read_to_string(&wat).unwrap();
            std::fs::write(&wat, text.replace("(i64.const 22)", "(i64.const 21)")).unwrap();
            let (code, out) = sh(&dir, &script, &envs);
            assert_eq!(code, Some(0), "{out}");
            let v = versions(&name);
            assert_eq!(v["data"][0]["sha256"], v1.as_str(), "rolled back: {v}");
            assert_eq!(v["data"][0]["current"], true);
            let v2 = v["data"][1]["sha256"].as_str().unwrap().to_string();
            assert_ne!(v2, v1);
            // Audited.
            let (st, a) = s.admin_call(
                TOKEN,
                "GET",
                "/v1/tenants/femo/audit?action=plugin.",
                serde_json::Value::Null,
            );
            assert_eq!(st, 200);
            let actions: Vec<&str> = a["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["target"].as_str().is_some_and(|t| t.contains(&name)))
                .filter_map(|e| e["action"].as_str())
                .collect();
            assert!(actions.contains(&"plugin.rollback"), "{a}");
            assert!(actions.contains(&"plugin.replace"), "{a}");
            assert!(
                !a.to_string().contains("\"wasm\""),
                "no module bytes in the audit log"
            );
        }
    }
}

/// Versions and rollback through the CLI and the API: the store keeps the last 3 previous
/// versions, a rollback needs a kept SHA-256, `--if-match` refuses a stale replacement, and a
/// failing plugin's warning names its version and trap.
#[test]
fn versions_rollback_and_if_match() {
    let s = server::Server::start(&[], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}", s.addr);
    let envs = [
        ("PORTCULLIS_ADMIN_URL", url.as_str()),
        ("PORTCULLIS_ADMIN_TOKEN", TOKEN),
    ];
    let fixtures = ["allow", "deny", "abstain", "has_context", "trap"];
    let mut shas = Vec::new();
    for f in fixtures {
        let p = wasm_into(dir.path(), f, f);
        shas.push(portcullis_sha(&std::fs::read(&p).unwrap()));
        let (code, out) = sh(
            dir.path(),
            &format!("portcullis plugin upload --tenant femo --name gate {f}.wasm"),
            &envs,
        );
        assert_eq!(code, Some(0), "{out}");
    }
    let versions = |s: &server::Server| {
        let (st, v) = s.admin_call(
            TOKEN,
            "GET",
            "/v1/tenants/femo/plugins/gate/versions",
            serde_json::Value::Null,
        );
        assert_eq!(st, 200, "{v}");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sha256"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Current (trap) first, then the 3 newest previous ones; the oldest (allow) is dropped.
    assert_eq!(
        versions(&s),
        vec![
            shas[4].clone(),
            shas[3].clone(),
            shas[2].clone(),
            shas[1].clone()
        ]
    );
    // Roll back to `deny`; `trap` becomes the newest previous version.
    let (code, out) = sh(
        dir.path(),
        &format!(
            "portcullis plugin rollback --tenant femo --name gate --to {}",
            shas[1]
        ),
        &envs,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        versions(&s),
        vec![
            shas[1].clone(),
            shas[4].clone(),
            shas[3].clone(),
            shas[2].clone()
        ]
    );
    // A version not kept: 404; not a SHA-256: 422.
    let (code, out) = sh(
        dir.path(),
        &format!(
            "portcullis plugin rollback --tenant femo --name gate --to {}",
            shas[0]
        ),
        &envs,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HTTP 404") && out.contains("not found"),
        "{out}"
    );
    let (code, out) = sh(
        dir.path(),
        "portcullis plugin rollback --tenant femo --name gate --to xyz",
        &envs,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("HTTP 422"), "{out}");
    // --if-match: the current ETag passes, a stale one is refused (409), nothing changes.
    let (_, v) = s.admin_call(
        TOKEN,
        "GET",
        "/v1/tenants/femo/plugins/gate",
        serde_json::Value::Null,
    );
    let tag = v["etag"].as_str().unwrap().trim_matches('"').to_string();
    let (code, out) = sh(
        dir.path(),
        "portcullis plugin upload --tenant femo --name gate --if-match 1 allow.wasm",
        &envs,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("HTTP 409"), "{out}");
    assert_eq!(versions(&s)[0], shas[1], "the stale upload changed nothing");
    let (code, out) = sh(
        dir.path(),
        &format!("portcullis plugin upload --tenant femo --name gate --if-match {tag} allow.wasm"),
        &envs,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(versions(&s)[0], shas[0]);
    // Audited: the rollback is an entry of its own, without module bytes.
    let (_, a) = s.admin_call(
        TOKEN,
        "GET",
        "/v1/tenants/femo/audit?action=plugin.rollback",
        serde_json::Value::Null,
    );
    let items = a["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{a}");
    assert!(!a.to_string().contains("\"wasm\""), "{a}");

    // A trapping version in a check: the warning names the plugin, its version and the trap.
    let (code, out) = sh(
        dir.path(),
        &format!(
            "portcullis plugin rollback --tenant femo --name gate --to {}",
            shas[4]
        ),
        &envs,
    );
    assert_eq!(code, Some(0), "{out}");
    let (st, v) = s.admin_call(
        TOKEN,
        "POST",
        "/v1/tenants/femo/roles",
        serde_json::json!({"id": "gated", "permissions": ["asset:operate"], "plugin": "gate"}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.admin_call(
        TOKEN,
        "POST",
        "/v1/tenants/femo/assignments",
        serde_json::json!({"user": "hana", "role": "gated", "scope": "femo"}),
    );
    assert_eq!(st, 201, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    let (st, e) = s.post_json(
        "/v1/explain",
        &serde_json::json!({"tenant": "femo", "subject": "hana", "action": "asset:operate",
            "resource": "press-7", "min_revision": rev})
        .to_string(),
    );
    assert_eq!(st, 200, "{e}");
    let cond = e["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.get("condition").filter(|c| c["plugin"] == "gate"))
        .unwrap_or_else(|| panic!("{e}"));
    assert_eq!(cond["outcome"], "trap");
    assert!(
        cond["trap"]
            .as_str()
            .unwrap()
            .starts_with("wasm trap: wasm `unreachable` instruction executed"),
        "{cond}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = s.log.lock().unwrap().clone();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("plugin call failed") && l.contains("plugin=gate"))
        {
            assert!(line.contains(&format!("version={}", shas[4])), "{line}");
            assert!(
                line.contains("trap=\"wasm trap: wasm `unreachable`"),
                "{line}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no warning:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn portcullis_sha(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Logs `n` debug lines (`line 0` …) per call, then allows.
fn chatty_wat(n: u32) -> String {
    format!(
        r#"(module
  (import "portcullis" "debug_log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "line 0")
  (func (export "portcullis_abi_version") (result i32) (i32.const 1))
  (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "portcullis_evaluate") (param i32 i32) (result i32) (local $i i32)
    (loop $l
      (i32.store8 (i32.const 21) (i32.add (i32.const 48) (i32.rem_u (local.get $i) (i32.const 10))))
      (call $log (i32.const 16) (i32.const 6))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))
    (i32.const 1)))"#
    )
}

/// `portcullis.debug_log`: printed by `plugin eval`; logged by the server only for the tenants
/// of `plugins.debug_log_tenants`, at most 10 lines a second per plugin version.
#[test]
fn debug_log_is_off_by_default_per_tenant_and_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("chatty.wat");
    std::fs::write(&f, chatty_wat(3)).unwrap();
    let (code, out) = eval(&[f.to_str().unwrap(), "--action", "a:b", "--resource", "r"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("debug: line 0\ndebug: line 1\ndebug: line 2\n"),
        "{out}"
    );
    let wasm = wat::parse_str(chatty_wat(30)).unwrap();
    let config = dir.path().join("portcullis.yaml");
    std::fs::write(&config, "plugins:\n  debug_log_tenants: [femo]\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    for (tenant_on, args) in [(true, vec!["--config", config.as_str()]), (false, vec![])] {
        let s = server::Server::start(&args, &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]);
        let (st, _, b) = s.request(
            "PUT",
            "/v1/tenants/femo/plugins/chatty",
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/wasm"),
            ],
            &wasm,
        );
        assert!(st == 200 || st == 201, "{b}");
        let mut rev = 0;
        for (method, path, body) in [
            (
                "POST",
                "/v1/tenants/femo/roles",
                serde_json::json!({"id": "chat", "permissions": ["asset:operate"], "plugin": "chatty"}),
            ),
            (
                "POST",
                "/v1/tenants/femo/assignments",
                serde_json::json!({"user": "hana", "role": "chat", "scope": "femo"}),
            ),
        ] {
            let (st, v) = s.admin_call(TOKEN, method, path, body);
            assert_eq!(st, 201, "{v}");
            rev = v["revision"].as_u64().unwrap();
        }
        let body = format!(
            r#"{{"tenant":"femo","subject":"hana","action":"asset:operate","resource":"press-7","min_revision":{rev}}}"#
        );
        let (st, v) = s.post_json("/v1/check", &body);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["allowed"], true, "{v}");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let log = s.log.lock().unwrap().clone();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("plugin debug_log"))
            .collect();
        if tenant_on {
            // 30 lines in one call, one second: 10 written (a second that turns during the
            // call may let a few more through).
            assert!(
                (10..=20).contains(&lines.len()),
                "{} lines:\n{log}",
                lines.len()
            );
            assert!(
                lines[0].contains("plugin=chatty")
                    && lines[0].contains("version=")
                    && lines[0].contains("line=\"line 0\""),
                "{}",
                lines[0]
            );
        } else {
            assert!(lines.is_empty(), "off by default:\n{log}");
        }
    }
}

/// A Rust plugin that panics: the SDK's panic handler sets the reason before the trap — `panic`
/// by default, `panic at FILE:LINE` with `panic-location`, the text with `panic-message` — and
/// `plugin eval` shows it with the trap.
#[test]
fn a_panicking_rust_plugin_reports_its_panic() {
    toolchains();
    let root = tempfile::tempdir().unwrap();
    let (code, out) = sh(root.path(), "portcullis plugin new boom", &[]);
    assert_eq!(code, Some(0), "{out}");
    let dir = root.path().join("boom");
    let lib = dir.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    let needle = "    if input.verb() == \"read\" {\n        return Verdict::Allow;\n    }";
    assert!(text.contains(needle));
    std::fs::write(
        &lib,
        text.replace(
            needle,
            "    if input.verb() == \"read\" {\n        panic!(\"boom: {}\", input.resource());\n    }",
        ),
    )
    .unwrap();
    let manifest = dir.join("Cargo.toml");
    let cargo = std::fs::read_to_string(&manifest).unwrap();
    let dep = "portcullis-plugin-sdk = { path = \"portcullis-plugin-sdk\" }";
    assert!(cargo.contains(dep));
    for (feature, reason) in [
        ("", "reason: panic\n"),
        ("panic-location", "reason: panic at src/lib.rs:"),
        (
            // The text's layout is the toolchain's (1.63: `panicked at 'boom: press-7', …`).
            "panic-message",
            "boom: press-7",
        ),
    ] {
        let with = if feature.is_empty() {
            dep.to_string()
        } else {
            dep.replace(" }", &format!(", features = [\"{feature}\"] }}"))
        };
        std::fs::write(&manifest, cargo.replace(dep, &with)).unwrap();
        let (code, out) = sh(&dir, "./build.sh", &[]);
        assert_eq!(code, Some(0), "{out}");
        let (code, out) = eval(&[
            dir.join("boom.wasm").to_str().unwrap(),
            "--action",
            "asset:read",
            "--resource",
            "press-7",
        ]);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("verdict: deny (outcome trap)"), "{out}");
        assert!(out.contains(reason), "{feature}: {out}");
        assert!(
            out.contains("trap: wasm trap: wasm `unreachable` instruction executed"),
            "{out}"
        );
    }
}
