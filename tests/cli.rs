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
