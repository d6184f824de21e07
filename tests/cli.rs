//! The `portcullis` command, run as a process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
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

/// A scratch file for this test process.
fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

const DEMO: &str = include_str!("../deploy/demo.yaml");

fn demo_tests() -> usize {
    let tests = &DEMO[DEMO.find("\ntests:").unwrap()..];
    tests
        .lines()
        .filter(|l| l.trim_start().starts_with("- {"))
        .count()
}

#[test]
fn test_passes_on_the_demo_data() {
    let out = portcullis(&["test", "deploy/demo.yaml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let n = demo_tests();
    assert!(n >= 40);
    assert!(
        stdout.contains(&format!("{n} passed, 0 failed")),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn test_fails_on_a_wrong_expectation() {
    let needle = "subject: bruno, action: asset:operate, resource: press-7, allowed: false }";
    let line = DEMO.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let wrong = DEMO.replacen(
        needle,
        &needle.replace("allowed: false", "allowed: true"),
        1,
    );
    let path = scratch("wrong.yaml", &wrong);
    let out = portcullis(&["test", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let n = demo_tests();
    assert!(
        stdout.contains(&format!("{} passed, 1 failed", n - 1)),
        "{stdout}"
    );
    let fail = stdout.lines().find(|l| l.starts_with("FAIL ")).unwrap();
    assert!(
        fail.starts_with(&format!(
            "FAIL line {line}: bruno may asset:operate on press-7"
        )),
        "{fail}"
    );
    assert!(
        fail.contains("expected allow, got deny (no_matching_assignment)"),
        "{fail}"
    );
    // A wrong expected reason fails too.
    let needle = "resource: press-99, allowed: false, reason: unknown_resource }";
    let line = DEMO.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let wrong = DEMO.replacen(
        needle,
        &needle.replace("unknown_resource", "unknown_subject"),
        1,
    );
    let path = scratch("wrong-reason.yaml", &wrong);
    let out = portcullis(&["test", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("FAIL line {line}: ")), "{stdout}");
}

#[test]
fn test_rejects_an_invalid_file_with_its_position() {
    let bad = DEMO.replacen(
        "parent: stamping, name: Press 7 }",
        "parent: stomping, name: Press 7 }",
        1,
    );
    let line = bad
        .lines()
        .position(|l| l.contains("parent: stomping"))
        .unwrap()
        + 1;
    let path = scratch("bad.yaml", &bad);
    let out = portcullis(&["test", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("line {line}, column ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown parent 'stomping' of node 'press-7'"),
        "{stderr}"
    );
    assert!(text(&out.stdout).is_empty());

    // A syntax error.
    let path = scratch("syntax.yaml", "tenants: [\n  { id: a,\n");
    let out = portcullis(&["test", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let at = stderr.find("line ").expect(&stderr);
    let rest = &stderr[at + 5..];
    let (l, rest) = rest.split_once(", column ").expect(&stderr);
    let (c, _) = rest.split_once(':').expect(&stderr);
    assert!(
        l.parse::<u64>().unwrap() >= 1 && c.parse::<u64>().is_ok(),
        "{stderr}"
    );

    // A missing file.
    let out = portcullis(&["test", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read 'no/such/file.yaml'"));
}

#[test]
fn check_and_explain_on_the_demo() {
    let args = [
        "--tenant",
        "femo",
        "--subject",
        "alice",
        "--action",
        "asset:operate",
        "--resource",
        "press-7",
    ];
    let out = portcullis(&[&["check"][..], &args].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("allow (granted) at revision "));
    let out = portcullis(&[
        "check",
        "--tenant",
        "femo",
        "--subject",
        "alice",
        "--action",
        "asset:operate",
        "--resource",
        "robot-12",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).starts_with("deny (no_matching_assignment)"));
    let out = portcullis(&[
        "check",
        "--tenant",
        "femo",
        "--subject",
        "gwen",
        "--action",
        "asset:operate",
        "--resource",
        "robot-12",
        "--at",
        "2026-01-20T12:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = portcullis(&[
        "check",
        "--tenant",
        "nope",
        "--subject",
        "a",
        "--action",
        "a:b",
        "--resource",
        "r",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown tenant 'nope'"));

    let out = portcullis(&[&["explain"][..], &args].concat());
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["reason"], "granted");
    assert_eq!(v["matched"]["role"], "machine-operator");
    assert_eq!(v["matched"]["scope"], "hawthorne");
    assert_eq!(
        v["resource_path"],
        serde_json::json!([
            "femo",
            "hawthorne",
            "hawthorne-b1",
            "hawthorne-b1-f0",
            "stamping",
            "press-7"
        ])
    );
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    // `portcullis generate --world m | head -c 100`: the reader goes away long before the end.
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["generate", "--world", "m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(first.starts_with(b"{\"tenants\""));
}

// ------------------------------------------------------------------------------------------
// `serve`: which store is created and seeded, and the admin token
// ------------------------------------------------------------------------------------------

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::Duration;

/// A `portcullis serve` process, ready (its "listening" line seen), killed on drop.
struct Serve {
    child: std::process::Child,
    addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        self.call("GET", path, token, "")
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{auth}\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    fn check_alice(&self) -> (u16, String) {
        self.call(
            "POST",
            "/v1/check",
            None,
            r#"{"tenant":"femo","subject":"alice","action":"asset:operate","resource":"press-7"}"#,
        )
    }
}

/// Runs `portcullis serve --listen 127.0.0.1:0 ARGS` in `dir` with `envs` (and no inherited
/// `PORTCULLIS_*`). Ok: it became ready; Err: it exited first, with this code and log.
fn serve_in(
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<Serve, (Option<i32>, String)> {
    serve_on(dir, "127.0.0.1:0", args, envs)
}

fn serve_on(
    dir: &std::path::Path,
    listen: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<Serve, (Option<i32>, String)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["serve", "--listen", listen])
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PORTCULLIS_")) {
        cmd.env_remove(k);
    }
    cmd.env("PORTCULLIS_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push_str(&line);
            log2.lock().unwrap().push('\n');
            if line.contains("portcullis listening") {
                let addr = line.split("addr").nth(1).and_then(|rest| {
                    let rest = rest.trim_start_matches(['=', '"', ':']);
                    let end = rest.find([' ', '"', ',']).unwrap_or(rest.len());
                    rest[..end].parse::<SocketAddr>().ok()
                });
                let _ = tx.send(addr);
            }
        }
        let _ = tx.send(None);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(addr)) => Ok(Serve { child, addr, log }),
        _ => {
            let _ = child.kill();
            let status = child.wait().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let text = log.lock().unwrap().clone();
            Err((status.code(), text))
        }
    }
}

const TOKEN: &str = "cli-test-token-0123456789abcdef";

#[test]
fn the_quick_start_seeds_the_demo_data_into_a_new_default_store_only() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [("PORTCULLIS_ADMIN_TOKEN", TOKEN)];
    let s = serve_in(dir.path(), &[], &envs).unwrap();
    assert!(
        s.log()
            .contains("creating store portcullis-data and seeding the bundled demo data"),
        "{}",
        s.log()
    );
    assert!(s.log().contains("WARN"), "{}", s.log());
    let (st, body) = s.check_alice();
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"allowed\":true"), "{body}");
    drop(s);
    // Restarted: opened, not seeded again.
    let s = serve_in(dir.path(), &[], &envs).unwrap();
    assert!(!s.log().contains("seed"), "{}", s.log());
    assert!(s.log().contains("store opened"), "{}", s.log());
    drop(s);

    // A default store that exists but holds no tenants is not seeded.
    let empty = tempfile::tempdir().unwrap();
    let s = serve_in(empty.path(), &["--store", "portcullis-data"], &envs).unwrap();
    drop(s);
    let s = serve_in(empty.path(), &[], &envs).unwrap();
    let (st, body) = s.check_alice();
    assert_eq!(st, 404, "{body}");
    assert!(s.log().contains("holds no tenants"), "{}", s.log());
}

#[test]
fn an_explicit_store_that_does_not_exist_is_created_empty() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [("PORTCULLIS_ADMIN_TOKEN", TOKEN)];
    // Mistyped --store: a new, empty store; the demo data is not installed.
    let s = serve_in(dir.path(), &["--store", "portcullis-dta"], &envs).unwrap();
    assert!(
        s.log()
            .contains("creating a new, empty store at portcullis-dta"),
        "{}",
        s.log()
    );
    let (st, body) = s.check_alice();
    assert_eq!((st, body.contains("unknown_tenant")), (404, true), "{body}");
    let (st, body) = s.get("/v1/tenants", Some(TOKEN));
    assert_eq!(st, 200, "{body}");
    assert!(!body.contains("femo"), "{body}");
    drop(s);
    // The same through the variable, and a config file.
    let s = serve_in(
        dir.path(),
        &[],
        &[envs[0], ("PORTCULLIS_STORE", "env-store")],
    )
    .unwrap();
    assert_eq!(s.check_alice().0, 404);
    drop(s);
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, "store: config-store\n").unwrap();
    let s = serve_in(dir.path(), &["--config", config.to_str().unwrap()], &envs).unwrap();
    assert_eq!(s.check_alice().0, 404);
    drop(s);
    assert!(!dir.path().join("portcullis-data").exists());

    // With --data: created and seeded from that file; an existing store with no tenants too.
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/demo.yaml");
    let s = serve_in(dir.path(), &["--store", "seeded", "--data", demo], &envs).unwrap();
    assert_eq!(s.check_alice().0, 200);
    drop(s);
    let s = serve_in(
        dir.path(),
        &["--store", "portcullis-dta", "--data", demo],
        &envs,
    )
    .unwrap();
    assert_eq!(s.check_alice().0, 200);
    assert!(
        s.log().contains("store seeded from data file"),
        "{}",
        s.log()
    );
}

#[test]
fn a_store_file_that_is_empty_truncated_or_foreign_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [("PORTCULLIS_ADMIN_TOKEN", TOKEN)];
    let s = serve_in(dir.path(), &[], &envs).unwrap();
    drop(s);
    let file = dir.path().join("portcullis-data/portcullis.redb");
    let whole = std::fs::read(&file).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("empty", Vec::new(), "is empty"),
        ("truncated", whole[..4096].to_vec(), "truncated"),
        ("half", whole[..whole.len() / 2].to_vec(), "portcullis.redb"),
        (
            "foreign",
            b"tenants: []\n".to_vec(),
            "not a Portcullis store",
        ),
    ];
    for (name, bytes, says) in cases {
        for default in [true, false] {
            std::fs::write(&file, &bytes).unwrap();
            let args: &[&str] = if default {
                &[]
            } else {
                &["--store", "portcullis-data"]
            };
            let (code, log) = serve_in(dir.path(), args, &envs)
                .err()
                .unwrap_or_else(|| panic!("{name}: started"));
            assert_eq!(code, Some(1), "{name}: {log}");
            assert!(log.contains(says), "{name}: {log}");
            assert!(log.contains("portcullis.redb"), "{name}: {log}");
            assert!(!log.contains("seed"), "{name}: {log}");
            assert_eq!(std::fs::read(&file).unwrap(), bytes, "{name}: file changed");
        }
    }
}

#[test]
fn a_start_that_cannot_listen_creates_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let envs = [("PORTCULLIS_ADMIN_TOKEN", TOKEN)];
    for args in [&[][..], &["--store", "explicit"][..]] {
        let (code, log) = serve_on(dir.path(), &addr, args, &envs).err().unwrap();
        assert_eq!(code, Some(1), "{log}");
        assert!(log.contains("cannot listen on"), "{log}");
        assert!(!log.contains("creating"), "{log}");
    }
    // A taken management address too.
    let (code, log) = serve_in(dir.path(), &["--admin-listen", &addr], &envs)
        .err()
        .unwrap();
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_generated_admin_token_goes_to_a_private_file_never_to_the_log() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let s = serve_in(dir.path(), &["--log-format", format], &[]).unwrap();
        let path = dir.path().join("portcullis-data/admin-token");
        let token = std::fs::read_to_string(&path).unwrap();
        let token = token.trim_end();
        assert_eq!(token.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let log = s.log();
        assert!(log.contains("portcullis-data/admin-token"), "{log}");
        assert!(
            !log.contains(token),
            "{format}: the token is in the log:\n{log}"
        );
        assert_eq!(s.get("/v1/tenants", Some(token)).0, 200);
        assert_eq!(s.get("/v1/tenants", Some(TOKEN)).0, 401);
        // The plugin CLI reads the same file.
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["plugin", "list", "--tenant", "femo", "--token-file"])
            .arg(&path)
            .args(["--url", &format!("http://{}", s.addr)])
            .env_remove("PORTCULLIS_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
}

#[test]
fn admin_tokens_from_the_command_line_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    // On the command line: works, with a warning; the token is never logged.
    let s = serve_in(dir.path(), &["--admin-token", TOKEN], &[]).unwrap();
    let log = s.log();
    assert!(log.contains("WARN") && log.contains("visible"), "{log}");
    assert!(!log.contains(TOKEN), "{log}");
    assert!(!dir.path().join("portcullis-data/admin-token").exists());
    assert_eq!(s.get("/v1/tenants", Some(TOKEN)).0, 200);
    drop(s);
    // From the environment: no warning.
    let s = serve_in(dir.path(), &[], &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]).unwrap();
    assert!(!s.log().contains("visible"), "{}", s.log());
    assert_eq!(s.get("/v1/tenants", Some(TOKEN)).0, 200);
    drop(s);

    // From a file: one trailing newline is not part of the token; group/world access refused.
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let f = file.to_str().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, log) = serve_in(dir.path(), &["--admin-token-file", f], &[])
            .err()
            .unwrap();
        assert_eq!(code, Some(1), "{log}");
        assert!(log.contains("chmod 600") && log.contains(f), "{log}");
        assert!(!log.contains("listening"), "{log}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let s = serve_in(dir.path(), &["--admin-token-file", f], &[]).unwrap();
    assert_eq!(s.get("/v1/tenants", Some(TOKEN)).0, 200);
    assert!(!s.log().contains(TOKEN), "{}", s.log());
    drop(s);
    let s = serve_in(dir.path(), &[], &[("PORTCULLIS_ADMIN_TOKEN_FILE", f)]).unwrap();
    assert_eq!(s.get("/v1/tenants", Some(TOKEN)).0, 200);
    drop(s);
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, format!("admin_token_file: {f}\n")).unwrap();
    let s = serve_in(dir.path(), &["--config", config.to_str().unwrap()], &[]).unwrap();
    assert_eq!(s.get("/v1/tenants", Some(TOKEN)).0, 200);
    drop(s);
    // Two sources at once: refused.
    let (code, log) = serve_in(
        dir.path(),
        &["--admin-token-file", f],
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    )
    .err()
    .unwrap();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("give one"), "{log}");
}

#[test]
fn weak_admin_tokens_are_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    for (token, says) in [
        ("                ", "space"),
        ("aaaaaaaaaaaaaaaa", "guessable"),
        ("abababab12121212", "guessable"),
        ("short-token", "at least 16"),
        ("tab\tseparated-token-0123", "control"),
        ("ünïcödé-token-0123456789", "non-ASCII"),
    ] {
        let (code, log) = serve_in(dir.path(), &[], &[("PORTCULLIS_ADMIN_TOKEN", token)])
            .err()
            .unwrap_or_else(|| panic!("{token:?} accepted"));
        assert_eq!(code, Some(1), "{token:?}: {log}");
        assert!(log.contains(says), "{token:?}: {log}");
        assert!(!log.contains("listening"), "{token:?}: {log}");
        assert!(token.trim().is_empty() || !log.contains(token), "{log}");
        std::fs::write(&file, token).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let (code, log) = serve_in(
            dir.path(),
            &["--admin-token-file", file.to_str().unwrap()],
            &[],
        )
        .err()
        .unwrap_or_else(|| panic!("{token:?} accepted from a file"));
        assert_eq!(code, Some(1), "{token:?}: {log}");
        assert!(log.contains(says), "{token:?}: {log}");
    }
    assert!(!dir.path().join("portcullis-data").exists());
}
