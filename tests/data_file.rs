//! Adversarial data files: every invalid file is a clean `Err` with the right message and a
//! position, never a panic, never accepted. The bundled demo data loads and its tests pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::*;
use portcullis::clock;
use portcullis::engine::{self, DEMO_DATA};
use portcullis::model::file::{
    load_bytes, load_path, load_str, to_json, DataFile, LoadError, Problem,
};
use portcullis::snapshot::{Registry, Snapshot};
use proptest::prelude::*;

/// A valid file, one item per line so that every line number below is easy to check.
const BASE: &str = "\
tenants:
  - id: acme
    rbac: enterprise
    quotas: { max_admins: 2, max_users: 10, max_groups: 5 }
    nodes:
      - { id: org, kind: organisation }
      - { id: site, kind: site, parent: org }
      - { id: asset, kind: asset, parent: site }
    roles:
      - { id: op, name: Op, permissions: [asset:read, \"asset:*\", \"*:read\", \"*\"] }
    users:
      - { id: alice, email: alice@acme.example, kind: owner }
      - { id: bob, email: bob@acme.example }
    groups:
      - { id: crew, members: [alice, bob] }
    assignments:
      - { user: alice, role: op, scope: site }
      - { group: crew, role: viewer, scope: org }
  - id: other
    nodes:
      - { id: org, kind: organisation }
tests:
  - { tenant: acme, subject: alice, action: asset:read, resource: asset, allowed: true }
";

/// `BASE` with line `n` (1-based) replaced by `text`.
fn replace_line(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    assert!(n >= 1 && n <= lines.len());
    lines[n - 1] = text;
    lines.join("\n") + "\n"
}

/// `BASE` with `text` inserted after line `n`, so that it becomes line `n + 1`.
fn insert_after(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines.insert(n, text);
    lines.join("\n") + "\n"
}

/// Loads `bytes`, which must not panic.
fn load(bytes: &[u8]) -> Result<DataFile, LoadError> {
    match catch_unwind(AssertUnwindSafe(|| load_bytes(bytes))) {
        Ok(r) => r,
        Err(_) => panic!(
            "loader panicked on:\n{}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(2000)])
        ),
    }
}

/// The problems of a file that must be rejected.
fn rejected(text: &str) -> Vec<Problem> {
    match load(text.as_bytes()) {
        Ok(f) => panic!(
            "accepted an invalid file ({} tenants):\n{text}",
            f.tenants.len()
        ),
        Err(LoadError::Invalid(p)) => {
            assert!(!p.is_empty(), "rejected without a problem:\n{text}");
            p
        }
        Err(e) => panic!("unexpected error kind {e:?}"),
    }
}

/// Asserts that `text` is rejected with a problem at `line` (when given) whose message contains
/// `needle`, that every problem has a position, and that the error renders `line L, column C:`.
#[track_caller]
fn expect_problem(text: &str, line: Option<u64>, needle: &str) {
    let problems = rejected(text);
    let hit = problems
        .iter()
        .any(|p| p.message.contains(needle) && line.is_none_or(|l| p.line == l));
    assert!(
        hit,
        "expected a problem{} containing {needle:?}, got {problems:#?}\nfile:\n{text}",
        line.map(|l| format!(" on line {l}")).unwrap_or_default()
    );
    for p in &problems {
        assert!(p.line >= 1, "problem without a line: {p:?}\nfile:\n{text}");
        assert!(
            p.to_string()
                .starts_with(&format!("line {}, column {}: ", p.line, p.column)),
            "{p}"
        );
    }
    let rendered = LoadError::Invalid(problems).to_string();
    assert!(rendered.starts_with("data file rejected ("), "{rendered}");
}

#[test]
fn base_file_is_valid() {
    let f = load(BASE.as_bytes()).unwrap();
    assert_eq!(f.tenants.len(), 2);
    assert_eq!(f.tests.len(), 1);
    assert_eq!(f.tests[0].line, 23);
    let reg = Registry::new();
    engine::install_all(&reg, &f).unwrap();
    assert!(engine::run_tests(&reg, &f, NOW).is_empty());
}

#[test]
fn duplicate_ids_of_every_kind() {
    expect_problem(
        &replace_line(19, "  - id: acme"),
        Some(19),
        "duplicate tenant id 'acme'",
    );
    expect_problem(
        &insert_after(8, "      - { id: asset, kind: zone, parent: org }"),
        Some(9),
        "duplicate node id 'asset' (first at nodes[2])",
    );
    expect_problem(
        &insert_after(10, "      - { id: op, permissions: [] }"),
        Some(11),
        "duplicate role id 'op'",
    );
    for builtin in ["administrator", "operator", "viewer"] {
        expect_problem(
            &insert_after(
                10,
                &format!("      - {{ id: {builtin}, permissions: [\"*\"] }}"),
            ),
            Some(11),
            &format!("role '{builtin}' is built in and cannot be redefined"),
        );
    }
    expect_problem(
        &insert_after(13, "      - { id: bob, email: bob2@acme.example }"),
        Some(14),
        "duplicate user id 'bob' (first at users[1])",
    );
    expect_problem(
        &insert_after(13, "      - { id: carol, email: BOB@Acme.Example }"),
        Some(14),
        "duplicate email 'BOB@Acme.Example' (first at users[1])",
    );
    expect_problem(
        &insert_after(15, "      - { id: crew }"),
        Some(16),
        "duplicate group id 'crew' (first at groups[0])",
    );
    expect_problem(
        &replace_line(15, "      - { id: crew, members: [alice, bob, alice] }"),
        Some(15),
        "member 'alice' is listed twice in group 'crew'",
    );
    // The same YAML key twice in one mapping.
    expect_problem(
        &replace_line(6, "      - { id: org, id: org2, kind: organisation }"),
        Some(6),
        "duplicate mapping key",
    );
}

#[test]
fn unknown_references_of_every_kind() {
    expect_problem(
        &replace_line(8, "      - { id: asset, kind: asset, parent: nowhere }"),
        Some(8),
        "unknown parent 'nowhere' of node 'asset'",
    );
    expect_problem(
        &replace_line(15, "      - { id: crew, members: [alice, zed] }"),
        Some(15),
        "member 'zed' of group 'crew' is not a user of this tenant",
    );
    expect_problem(
        &replace_line(17, "      - { user: zed, role: op, scope: site }"),
        Some(17),
        "unknown user 'zed'",
    );
    expect_problem(
        &replace_line(18, "      - { group: zed, role: viewer, scope: org }"),
        Some(18),
        "unknown group 'zed'",
    );
    expect_problem(
        &replace_line(17, "      - { user: alice, role: ghost, scope: site }"),
        Some(17),
        "unknown role 'ghost'",
    );
    expect_problem(
        &replace_line(17, "      - { user: alice, role: op, scope: mars }"),
        Some(17),
        "unknown scope node 'mars'",
    );
    // Another tenant's users, groups and roles are unknown here.
    let cross = insert_after(
        21,
        "    assignments: [{ user: alice, role: viewer, scope: org }, { group: crew, role: viewer, scope: org }, { user: alice, role: op, scope: org }]",
    );
    for needle in [
        "unknown user 'alice'",
        "unknown group 'crew'",
        "unknown role 'op'",
    ] {
        expect_problem(&cross, Some(22), needle);
    }
    expect_problem(
        &replace_line(23, "  - { tenant: nope, subject: alice, action: asset:read, resource: asset, allowed: true }"),
        Some(23),
        "test names unknown tenant 'nope'",
    );
    expect_problem(
        &replace_line(17, "      - { role: op, scope: site }"),
        Some(17),
        "names exactly one of 'user' or 'group'",
    );
    expect_problem(
        &replace_line(
            17,
            "      - { user: alice, group: crew, role: op, scope: site }",
        ),
        Some(17),
        "names exactly one of 'user' or 'group'",
    );
}

#[test]
fn hierarchy_cycles() {
    expect_problem(
        &replace_line(6, "      - { id: org, kind: organisation, parent: org }"),
        Some(6),
        "node 'org' is its own parent",
    );
    let two = replace_line(6, "      - { id: org, kind: organisation, parent: site }");
    let p = rejected(&two);
    assert!(
        p.iter()
            .any(|p| p.message.contains("hierarchy cycle through node")
                && (p.line == 6 || p.line == 7)),
        "{p:?}"
    );
    expect_problem(&two, None, "hierarchy cycle");
    // A long cycle, with a tail hanging off it and a healthy tree beside it.
    let mut text =
        String::from("tenants:\n  - id: t\n    nodes:\n      - { id: ok, kind: site }\n");
    for i in 0..200 {
        let parent = if i == 0 { 199 } else { i - 1 };
        text.push_str(&format!(
            "      - {{ id: c{i}, kind: zone, parent: c{parent} }}\n"
        ));
    }
    text.push_str("      - { id: tail, kind: asset, parent: c17 }\n");
    let p = rejected(&text);
    let cycles: Vec<&Problem> = p
        .iter()
        .filter(|p| p.message.contains("hierarchy cycle"))
        .collect();
    assert_eq!(cycles.len(), 1, "{p:?}");
    assert!((5..=204).contains(&cycles[0].line), "{p:?}");
    assert!(
        !p.iter()
            .any(|p| p.message.contains("'ok'") || p.message.contains("'tail'")),
        "{p:?}"
    );
}

#[test]
fn bad_permission_syntax() {
    for bad in [
        "asset",
        "a:b:c",
        "asset:",
        ":read",
        "as set:read",
        "**",
        "asset:re*d",
        "",
        "*:",
        ":*",
        "asset:read ",
    ] {
        let text = replace_line(
            10,
            &format!("      - {{ id: op, permissions: [\"{bad}\"] }}"),
        );
        expect_problem(&text, Some(10), &format!("invalid permission '{bad}'"));
    }
    let long = format!("{}:read", "a".repeat(65));
    let text = replace_line(
        10,
        &format!("      - {{ id: op, permissions: [\"{long}\"] }}"),
    );
    expect_problem(&text, Some(10), "invalid permission");
}

#[test]
fn bad_emails_ids_and_texts() {
    for bad in [
        "not-an-email",
        "a@b",
        "@b.c",
        "a@@b.c",
        "a b@c.d",
        "a@.c",
        "a@c.",
        "a@b..c",
        "",
    ] {
        let text = replace_line(13, &format!("      - {{ id: bob, email: \"{bad}\" }}"));
        expect_problem(&text, Some(13), "not a valid email address");
    }
    for (bad, needle) in [
        ("\"a b\"", "node id 'a b' contains ' '"),
        ("\"\"", "node id must not be empty"),
        (
            &format!("\"{}\"", "x".repeat(129)),
            "is longer than 128 bytes",
        ),
        ("\"caf\u{e9}\"", "contains '\u{e9}'"),
    ] {
        let text = replace_line(
            8,
            &format!("      - {{ id: {bad}, kind: asset, parent: site }}"),
        );
        expect_problem(&text, Some(8), needle);
    }
    let text = replace_line(
        12,
        "      - { id: alice, email: alice@acme.example, kind: owner, name: \"a\\tb\" }",
    );
    expect_problem(&text, Some(12), "user name contains a control character");
    let text = replace_line(
        17,
        "      - { user: alice, role: op, scope: site, assigned_at: \"2026-01-02T00:00:00Z\", expires_at: \"2026-01-01T00:00:00Z\" }",
    );
    expect_problem(&text, Some(17), "expires_at must be after assigned_at");
    let text = replace_line(
        17,
        "      - { user: alice, role: op, scope: site, expires_at: soon }",
    );
    expect_problem(&text, Some(17), "invalid timestamp 'soon'");
}

#[test]
fn basic_tenant_with_custom_roles() {
    expect_problem(
        &replace_line(3, "    rbac: basic"),
        Some(10),
        "custom role 'op' needs rbac 'enterprise' (tenant has 'basic')",
    );
}

#[test]
fn quota_violations() {
    let q = |text: &str| replace_line(4, &format!("    quotas: {{ {text} }}"));
    expect_problem(
        &q("max_admins: 0"),
        Some(2),
        "1 owners/admins exceed the quota max_admins=0",
    );
    expect_problem(
        &q("max_users: 1"),
        Some(2),
        "2 users exceed the quota max_users=1",
    );
    expect_problem(
        &q("max_groups: 0"),
        Some(2),
        "1 groups exceed the quota max_groups=0",
    );
    expect_problem(&q("max_users: -1"), Some(4), "invalid u32");
    expect_problem(&q("max_nodes: 3"), Some(4), "unknown field `max_nodes`");
    // Deleted users do not count against max_users.
    let ok = q("max_users: 1").replace(
        "{ id: bob, email: bob@acme.example }",
        "{ id: bob, email: bob@acme.example, status: deleted }",
    );
    assert!(load(ok.as_bytes()).is_ok());
}

#[test]
fn wrong_types_and_unknown_fields() {
    let cases: Vec<(String, u64, &str)> = vec![
        (replace_line(3, "    rbac: superuser"), 3, "superuser"),
        (replace_line(3, "    rbac: [enterprise]"), 3, ""),
        (replace_line(5, "    nodes: 5"), 5, ""),
        (replace_line(15, "      - { id: crew, members: alice }"), 15, ""),
        (replace_line(15, "      - { id: crew, members: [[alice]] }"), 15, ""),
        (replace_line(13, "      - { id: bob, email: bob@acme.example, session_epoch: -1 }"), 13, "invalid u64"),
        (replace_line(13, "      - { id: bob, email: bob@acme.example, status: asleep }"), 13, "asleep"),
        (replace_line(13, "      - { id: bob, email: bob@acme.example, kind: root }"), 13, "root"),
        (replace_line(13, "      - { id: bob }"), 13, "email"),
        (replace_line(23, "  - { tenant: acme, subject: alice, action: asset:read, resource: asset, allowed: maybe }"), 23, ""),
        (replace_line(23, "  - { tenant: acme, subject: alice, action: asset:read, resource: asset }"), 23, "allowed"),
        (replace_line(6, "      - { id: org, kind: organisation, colour: red }"), 6, "unknown field `colour`"),
        (replace_line(3, "    colour: red"), 3, "unknown field `colour`"),
        (insert_after(21, "extra: 1"), 22, "unknown field `extra`"),
        (replace_line(23, "  - { tenant: acme, subject: alice, action: asset:read, resource: asset, allowed: true, expected: 1 }"), 23, "unknown field `expected`"),
        (replace_line(17, "      - { user: alice, role: op, scope: site, why: because }"), 17, "unknown field `why`"),

        ("- a\n- b\n".to_string(), 1, ""),
        ("just a scalar\n".to_string(), 1, ""),
        ("tenants: 5\n".to_string(), 1, ""),
        ("tenants: []\n---\ntenants: []\n".to_string(), 3, "multiple YAML documents"),
        ("tenants:\n\t- { id: a }\n".to_string(), 2, "tabs"),
    ];
    for (text, line, needle) in cases {
        expect_problem(&text, Some(line), needle);
    }
    // A block mapping without a required field: serde-saphyr reports the missing field at the
    // mapping's last key rather than at its start; the line is still inside the tenant.
    let p = rejected(&replace_line(2, "  - name: acme"));
    assert!(
        p.iter()
            .any(|p| p.message.contains("missing field `id`") && (2..=18).contains(&p.line)),
        "{p:?}"
    );
}

#[test]
fn not_utf8() {
    let mut bytes = BASE.as_bytes().to_vec();
    let at = BASE.find("Op,").unwrap();
    bytes[at] = 0xff;
    let p = match load(&bytes) {
        Err(LoadError::Invalid(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, 10);
    assert!(p[0].message.contains("not valid UTF-8"));
}

/// Everything wrong is reported at once, sorted by position.
#[test]
fn all_problems_at_once_sorted() {
    let text = replace_line(8, "      - { id: asset, kind: asset, parent: nowhere }")
        .replace("scope: site }", "scope: mars }")
        .replace("tenant: acme,", "tenant: nope,");
    let p = rejected(&text);
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(
        p.iter().map(|p| p.line).collect::<Vec<_>>(),
        vec![8, 17, 23]
    );
}

/// Runs `f` on another thread; fails if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

#[test]
fn deep_nesting_is_rejected() {
    let n = 100_000;
    let cases = vec![
        format!("tenants: {}{}\n", "[".repeat(n), "]".repeat(n)),
        format!("tenants: {}\n", "[".repeat(n)),
        format!(
            "tenants:\n  - id: a\n    nodes: {}{}\n",
            "{a: ".repeat(n),
            "}".repeat(n)
        ),
        {
            let mut s = String::from("tenants:\n");
            for i in 0..3000 {
                s.push_str(&" ".repeat(2 + i));
                s.push_str("-\n");
            }
            s
        },
        {
            let mut s = String::from("tenants:\n  - id: a\n    name:\n");
            for i in 0..3000 {
                s.push_str(&" ".repeat(6 + 2 * i));
                s.push_str(&format!("k{i}:\n"));
            }
            s
        },
    ];
    for text in cases {
        let start = Instant::now();
        let p = within(Duration::from_secs(30), move || {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || rejected(&text))
                .unwrap()
                .join()
                .unwrap()
        });
        assert!(p.iter().all(|p| p.line >= 1), "{p:?}");
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn alias_bombs_are_rejected_quickly() {
    // The classic "billion laughs".
    let mut laughs = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 10].join(",");
        laughs.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], refs));
    }
    laughs.push_str("tenants: *i\n");
    // The same, inside fields the loader does read.
    let mut inside = String::from(
        "tenants:\n  - id: t\n    users: [{ id: x, email: x@t.example }]\n    groups:\n",
    );
    inside.push_str("      - { id: g0, members: &m0 [x, x, x, x, x, x, x, x, x, x] }\n");
    for i in 1..9 {
        let refs = vec![format!("*m{}", i - 1); 10].join(", ");
        inside.push_str(&format!(
            "      - {{ id: g{i}, members: &m{i} [{refs}] }}\n"
        ));
    }
    // Mappings anchored and aliased many times.
    let mut maps = String::from("tenants:\n  - &t0 { id: t, nodes: [&n0 { id: n, kind: k }] }\n");
    for i in 1..9 {
        let refs = vec![format!("*t{}", i - 1); 10].join(", ");
        maps.push_str(&format!("  - &t{i} [{refs}]\n"));
    }
    // A flat flood of aliases, more than any budget allows.
    let flood = format!(
        "tenants:\n  - id: t\n    users: [{{ id: x, email: x@t.example }}]\n    groups:\n      - {{ id: g, members: [&x x, {}] }}\n",
        vec!["*x"; 300_000].join(", ")
    );
    // A smaller flood that parses: rejected for its contents.
    let small = format!(
        "tenants:\n  - id: t\n    nodes: [&n {{ id: n, kind: k }}, {}]\n",
        vec!["*n"; 50].join(", ")
    );
    let ratio = small.replace(&vec!["*n"; 50].join(", "), &vec!["*n"; 2_000].join(", "));
    for (name, text, needle) in [
        ("laughs", laughs, ""),
        ("inside", inside, ""),
        ("maps", maps, ""),
        ("flood", flood, ""),
        ("small", small, "duplicate node id 'n'"),
        ("ratio", ratio, "budget breached"),
    ] {
        let start = Instant::now();
        let p = within(Duration::from_secs(60), move || rejected(&text));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(20), "{name} took {took:?}");
        assert!(
            p.iter().any(|p| p.message.contains(needle)),
            "{name}: {p:?}"
        );
        assert!(p.iter().all(|p| p.line >= 1), "{name}: {p:?}");
    }
}

#[test]
fn truncated_files_never_panic_and_are_never_half_accepted() {
    let full = load(DEMO_DATA.as_bytes()).unwrap();
    let bytes = DEMO_DATA.as_bytes();
    let mut rejected_count = 0;
    let mut cuts: Vec<usize> = (0..bytes.len()).step_by(23).collect();
    cuts.extend(
        bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i),
    );
    for cut in cuts {
        let part = &bytes[..cut];
        match load(part) {
            Err(LoadError::Invalid(p)) => {
                rejected_count += 1;
                assert!(!p.is_empty());
                assert!(
                    p.iter().all(|p| p.line >= 1 && !p.message.is_empty()),
                    "cut {cut}: {p:?}"
                );
            }
            Err(e) => panic!("cut {cut}: {e}"),
            Ok(f) => {
                // A cut that leaves a flow mapping open cannot be accepted.
                let text = String::from_utf8_lossy(part);
                let (mut open, mut close) = (0, 0);
                for line in text.lines() {
                    let code = line.split('#').next().unwrap_or("");
                    open += code.matches('{').count();
                    close += code.matches('}').count();
                }
                assert_eq!(open, close, "cut {cut} accepted an open mapping");
                // What is accepted is complete and valid: every tenant builds, every test
                // names a tenant.
                assert!(f.tenants.len() <= full.tenants.len());
                assert!(f.tests.len() <= full.tests.len());
                for t in &f.tenants {
                    assert!(t.validate().is_empty());
                    Snapshot::build(t).unwrap();
                }
                for c in &f.tests {
                    assert!(f.tenants.iter().any(|t| t.id == c.tenant));
                }
            }
        }
    }
    assert!(rejected_count > 350, "only {rejected_count} cuts rejected");
}

#[test]
fn demo_data_loads_and_its_tests_pass() {
    let f = load_path(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/demo.yaml"
    )))
    .unwrap();
    assert_eq!(
        f,
        load_str(DEMO_DATA).unwrap(),
        "bundled demo differs from deploy/demo.yaml"
    );
    assert_eq!(f.tenants.len(), 5);
    assert!(f.tests.len() >= 40, "{}", f.tests.len());
    let reg = Registry::new();
    engine::install_all(&reg, &f).unwrap();
    let failures = engine::run_tests(&reg, &f, clock::unix_now());
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The reference agrees with every assertion of the demo, too.
    for c in &f.tests {
        let t = f.tenants.iter().find(|t| t.id == c.tenant).unwrap();
        let (allowed, reason) = ref_check(
            t,
            &c.subject,
            &c.action,
            &c.resource,
            c.at.unwrap_or(clock::unix_now()),
        );
        assert_eq!(allowed, c.allowed, "line {}", c.line);
        if let Some(r) = &c.reason {
            assert_eq!(reason.code(), r, "line {}", c.line);
        }
    }
    // And a wrong expectation is reported as a failure, with its line.
    let wrong = DEMO_DATA.replacen(
        "resource: press-7, allowed: true }",
        "resource: press-7, allowed: false }",
        1,
    );
    let f = load_str(&wrong).unwrap();
    let failures = engine::run_tests(&reg, &f, clock::unix_now());
    assert_eq!(failures.len(), 1);
    let line = DEMO_DATA
        .lines()
        .position(|l| l.contains("resource: press-7, allowed: true }"))
        .unwrap() as u64
        + 1;
    assert_eq!(failures[0].case.line, line);
    assert!(
        failures[0]
            .to_string()
            .starts_with(&format!("line {line}: ")),
        "{}",
        failures[0]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Random bytes: a clean error or (rarely) an empty file, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(f) = load(&bytes) {
            for t in &f.tenants {
                prop_assert!(t.validate().is_empty());
            }
        }
    }

    /// Random YAML-ish text built from the characters that matter to YAML.
    #[test]
    fn random_yaml_never_panics(text in "[\\[\\]{}:,\\-&*!|>'\"#?% \\n a-z0-9@.]{0,300}") {
        if let Ok(f) = load(text.as_bytes()) {
            for t in &f.tenants {
                prop_assert!(t.validate().is_empty());
            }
        }
    }

    /// The demo file with a few bytes changed: never a panic; what is accepted is valid.
    #[test]
    fn mutated_demo_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = DEMO_DATA.as_bytes().to_vec();
        for (at, b) in edits {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        match load(&bytes) {
            Ok(f) => {
                for t in &f.tenants {
                    prop_assert!(t.validate().is_empty());
                    prop_assert!(Snapshot::build(t).is_ok());
                }
            }
            Err(e) => {
                prop_assert!(!e.problems().is_empty());
                prop_assert!(e.problems().iter().all(|p| p.line >= 1), "{:?}", e.problems());
            }
        }
    }

    /// Random valid worlds survive the JSON writer and the loader unchanged.
    #[test]
    fn json_writer_round_trips(t in arb_tenant("t", SMALL)) {
        let back = load_str(&to_json(std::slice::from_ref(&t), &[])).unwrap();
        prop_assert_eq!(&back.tenants, &vec![t]);
    }
}

/// Honest large files load: above serde-saphyr's default budget of 250k YAML nodes, which
/// rejected e.g. the output of `portcullis generate --world m`.
#[test]
fn large_files_within_the_size_limit_load() {
    let users = 55_000;
    let mut s = String::from(
        "{\"tenants\":[{\"id\":\"big\",\"nodes\":[{\"id\":\"n\",\"kind\":\"k\"}],\"users\":[",
    );
    for i in 0..users {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{{\"id\":\"u{i}\",\"email\":\"u{i}@b.example\"}}"));
    }
    s.push_str("]}]}");
    let f = load_str(&s).unwrap();
    assert_eq!(f.tenants[0].users.len(), users);
}

/// Windows line ends and a byte-order mark change neither the result nor the positions.
#[test]
fn crlf_and_bom() {
    let bad = replace_line(8, "      - { id: asset, kind: asset, parent: nowhere }");
    for text in [
        bad.replace('\n', "\r\n"),
        format!("\u{feff}{bad}"),
        format!("\u{feff}{}", bad.replace('\n', "\r\n")),
    ] {
        expect_problem(&text, Some(8), "unknown parent 'nowhere'");
    }
    let f = load(format!("\u{feff}{}", BASE.replace('\n', "\r\n")).as_bytes()).unwrap();
    assert_eq!(f, load(BASE.as_bytes()).unwrap());
}
