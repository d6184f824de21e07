//! The configuration reference (README.md, "Configuration reference") and the example file
//! (deploy/portcullis.yaml) against the code: a setting added to `Config` without being
//! documented in both fails here, as does an environment variable the code reads but the table
//! does not name, or a default the table misstates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use portcullis::server::Config;
use serde_json::Value;

const README: &str = include_str!("../README.md");
const EXAMPLE: &str = include_str!("../deploy/portcullis.yaml");

/// Every setting as a dotted path (`limits.max_batch`, `tokens.keys[].alg`,
/// `forward_auth.tables.<name>.routes`), with its default when it has one outside lists and maps.
fn settings() -> Vec<(String, Option<Value>)> {
    // The defaults, plus one list item / map entry wherever the default is empty, so that the
    // fields of keys, routes and route tables are walked too.
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let sample = Config::parse(
        r#"
tokens: { keys: [ { alg: HS256 } ] }
data_plane: { api_keys: [ { sha256: x, tenants: [] } ] }
forward_auth:
  routes: [ { path: /x, tenant: t, action: "a:b", resource: r } ]
  tables: { "<name>": {} }
"#,
        "sample",
    )
    .unwrap();
    let sample = serde_json::to_value(sample).unwrap();
    let mut out = Vec::new();
    walk(&sample, Some(&defaults), String::new(), &mut out);
    out
}

fn walk(v: &Value, default: Option<&Value>, path: String, out: &mut Vec<(String, Option<Value>)>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let d = default.and_then(|d| d.get(k));
                walk(child, d, join(k), out);
            }
        }
        Value::Array(items) if !items.is_empty() => walk(&items[0], None, format!("{path}[]"), out),
        _ => out.push((path, default.cloned())),
    }
}

/// The "Configuration reference" section of the README.
fn reference() -> &'static str {
    let start = README
        .find("### Configuration reference")
        .expect("README has a Configuration reference");
    let rest = &README[start..];
    let end = rest[4..].find("\n## ").map_or(rest.len(), |i| i + 4);
    &rest[..end]
}

/// The table's rows as cells, keyed by their first cell without backquotes.
fn rows() -> Vec<Vec<String>> {
    reference()
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| setting |"))
        .map(|l| {
            // Cells are separated by `|`; `\|` is a pipe inside a cell.
            let mut cells = vec![String::new()];
            let mut escaped = false;
            for c in l
                .trim()
                .trim_start_matches('|')
                .trim_end_matches('|')
                .chars()
            {
                match c {
                    '|' if !escaped => cells.push(String::new()),
                    _ => cells.last_mut().unwrap().push(c),
                }
                escaped = c == '\\';
            }
            cells.iter().map(|c| c.trim().to_string()).collect()
        })
        .collect()
}

#[test]
fn every_setting_is_in_the_readme_table_with_its_default() {
    let rows = rows();
    let mut missing = Vec::new();
    for (path, default) in settings() {
        let Some(row) = rows.iter().find(|r| r[0] == format!("`{path}`")) else {
            missing.push(path);
            continue;
        };
        assert_eq!(
            row.len(),
            5,
            "row of {path}: setting | default | env | flag | meaning"
        );
        let shown = match default {
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(Value::Null) => Some("none".into()),
            _ => None,
        };
        if let Some(shown) = shown {
            let cell = &row[1];
            assert!(
                cell.contains(&format!("`{shown}`")) || shown == "none" && cell.starts_with("none"),
                "README gives {path} the default {cell}; the code says {shown}"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "settings missing from README's Configuration reference: {missing:?}"
    );
}

/// Every `"PORTCULLIS_…"` string literal in the sources.
fn env_vars_in(dir: &Path, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            env_vars_in(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for (i, _) in text.match_indices("\"PORTCULLIS_") {
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    }
}

#[test]
fn every_environment_variable_is_in_the_readme_table() {
    let mut read = BTreeSet::new();
    env_vars_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut read,
    );
    assert!(read.contains("PORTCULLIS_LISTEN"), "{read:?}");
    let documented: BTreeSet<String> = rows()
        .iter()
        .filter_map(|r| {
            let v = r.get(2)?.trim_matches('`');
            v.starts_with("PORTCULLIS_").then(|| v.to_string())
        })
        .collect();
    let undocumented: Vec<_> = read.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code, not in the README table: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&read).collect();
    assert!(
        stale.is_empty(),
        "in the README table, read by no code: {stale:?}"
    );
}

/// The key paths of a YAML file written for people: commented-out settings (`# key: value`,
/// indented like the setting) count, list items count as their parent, prose is skipped.
fn yaml_paths(text: &str) -> BTreeSet<Vec<String>> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let lead = line.len() - line.trim_start().len();
        let mut rest = line.trim_start();
        if let Some(r) = rest.strip_prefix('#') {
            rest = r.strip_prefix(' ').unwrap_or(r);
        }
        let mut at = lead + (rest.len() - rest.trim_start().len());
        rest = rest.trim_start();
        while let Some(r) = rest.strip_prefix("- ") {
            rest = r;
            at += 2;
        }
        let Some((key, _)) = rest.split_once(':') else {
            continue;
        };
        let key = key.trim_matches('"');
        let is_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            && rest[key.len()..].starts_with(':')
            && rest[key.len() + 1..]
                .chars()
                .next()
                .is_none_or(|c| c == ' ');
        if !is_key {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= at) {
            stack.pop();
        }
        stack.push((at, key.to_string()));
        out.insert(stack.iter().map(|(_, k)| k.clone()).collect());
    }
    out
}

#[test]
fn every_setting_is_in_the_example_config() {
    let found = yaml_paths(EXAMPLE);
    let mut missing = Vec::new();
    for (path, _) in settings() {
        let want: Vec<&str> = path.split('.').map(|s| s.trim_end_matches("[]")).collect();
        let present = found.iter().any(|f| {
            f.len() == want.len() && f.iter().zip(&want).all(|(a, b)| *b == "<name>" || a == b)
        });
        if !present {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "settings missing from deploy/portcullis.yaml (set or commented out): {missing:?}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/portcullis.yaml");
    let config = Config::from_file(&path).unwrap();
    config.validate().unwrap();
    // What it sets uncommented is the default, but for the demo's keys and routes.
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let example = serde_json::to_value(&config).unwrap();
    for key in [
        "listen",
        "limits",
        "metrics",
        "plugins",
        "log",
        "log_format",
    ] {
        assert_eq!(example[key], defaults[key], "deploy/portcullis.yaml: {key}");
    }
}

#[test]
fn the_yaml_reader_of_this_test_reads_comments_and_lists() {
    let found = yaml_paths(
        "a: 1\n# b: 2\nc:\n  # Prose: not a key.\n  d:\n    - e: 1\n      f: 2\n    # - g: 1\n    #   h: 2\n  # i: 3\n",
    );
    let want: BTreeSet<Vec<String>> = [
        "a", "b", "c", "c.d", "c.d.e", "c.d.f", "c.d.g", "c.d.h", "c.i",
    ]
    .iter()
    .map(|p| p.split('.').map(String::from).collect())
    .collect();
    assert_eq!(found, want);
}
