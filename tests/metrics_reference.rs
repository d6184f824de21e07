//! README's metrics reference and the OpenAPI description of `/metrics` match the metric
//! families the code registers: a family added without documentation fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use portcullis::server::metrics::Metrics;

const README: &str = include_str!("../README.md");
const OPENAPI: &str = include_str!("../deploy/openapi.json");

/// The README table's rows: metric name → labels.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let start = README
        .find("### Metrics reference")
        .expect("README has a Metrics reference");
    let rest = &README[start..];
    let end = rest[4..].find("\n## ").map_or(rest.len(), |i| i + 4);
    rest[..end]
        .lines()
        .filter(|l| l.starts_with("| `portcullis_"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert!(
                cells.len() >= 4,
                "row: metric | type | labels | meaning: {l}"
            );
            let name = cells[0].trim_matches('`').to_string();
            let labels = cells[2]
                .split(',')
                .map(|c| c.trim().trim_matches('`').to_string())
                .filter(|c| !c.is_empty() && c != "—")
                .collect();
            (name, labels)
        })
        .collect()
}

fn registered() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new(true).unwrap();
    m.families()
        .iter()
        .map(|f| (f.name.clone(), f.labels.iter().cloned().collect()))
        .collect()
}

#[test]
fn every_metric_family_is_in_the_readme_with_its_labels() {
    let (code, doc) = (registered(), documented());
    assert!(!code.is_empty());
    let missing: Vec<_> = code.keys().filter(|k| !doc.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "families missing from README's Metrics reference: {missing:?}"
    );
    let stale: Vec<_> = doc.keys().filter(|k| !code.contains_key(*k)).collect();
    assert!(
        stale.is_empty(),
        "README documents families the code does not have: {stale:?}"
    );
    for (name, labels) in &code {
        assert_eq!(&doc[name], labels, "labels of {name}");
    }
}

#[test]
fn every_metric_family_is_named_in_the_openapi_description() {
    let v: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    let desc = v["paths"]["/metrics"]["get"]["description"]
        .as_str()
        .unwrap_or_else(|| panic!("no description of GET /metrics"));
    for name in registered().keys() {
        assert!(
            desc.contains(name.as_str()),
            "{name} is not in the /metrics description"
        );
    }
}
