//! The layering README's architecture table states is the code's: every top-level module of the
//! library uses (`crate::x`) only the modules its row lists. A new upward import fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const README: &str = include_str!("../README.md");

/// Module → the modules README allows it to import.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let start = README
        .find("## Architecture")
        .expect("README has an Architecture section");
    let rest = &README[start..];
    rest.lines()
        .filter(|l| l.starts_with("| `") && !l.starts_with("| `cli`"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let module = cells[0].trim_matches('`').to_string();
            let imports = cells[cells.len() - 1]
                .split(|c: char| c == ',' || c.is_whitespace())
                .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect();
            (module, imports)
        })
        .collect()
}

/// The `crate::x` modules a source file uses outside comments and its test module.
fn uses(text: &str, out: &mut BTreeSet<String>) {
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with("#[cfg(test)]") {
            break;
        }
        if l.starts_with("//") {
            continue;
        }
        let mut rest = l;
        while let Some(i) = rest.find("crate::") {
            let name: String = rest[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = &rest[i + 7..];
        }
    }
}

fn walk(path: &Path, out: &mut BTreeSet<String>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        uses(&std::fs::read_to_string(path).unwrap(), out);
    }
}

#[test]
fn every_module_imports_only_what_the_readme_table_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let table = allowed();
    assert!(
        table.contains_key("decide") && table.contains_key("server"),
        "{table:?}"
    );
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if matches!(name.as_str(), "lib" | "main" | "cli") {
            continue;
        }
        let Some(ok) = table.get(&name) else {
            problems.push(format!(
                "module '{name}' has no row in README's architecture table"
            ));
            continue;
        };
        let mut used = BTreeSet::new();
        walk(&path, &mut used);
        used.remove(&name);
        for u in used.difference(ok) {
            problems.push(format!(
                "'{name}' imports '{u}', which its README row does not list"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
