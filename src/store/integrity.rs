//! Application-level checksums of stored records, so that damage to a stopped store (a flipped
//! byte, a hand-edited row) is detected when the record is read instead of silently changing an
//! authorization decision.
//!
//! Every row and every commit record is stored with a SHA-256 over its key and its content:
//! - a row: tenant, kind, id, revision and document;
//! - a commit: tenant, revision and the whole commit (header and ops);
//! - the embedded engine's tenant record: tenant and revision.
//!
//! The embedded engine hashes the exact bytes it stores. PostgreSQL keeps documents as `jsonb`,
//! which reorders keys and reformats numbers, so it hashes a canonical form of the JSON value
//! ([`canonical_value`]): object keys in byte order, numbers as normalised decimals. A plain hash,
//! not a MAC: it detects accidental damage; whoever can write the store can also recompute it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Commit, Kind};

/// Bytes of a checksum.
pub const SUM_LEN: usize = 32;
/// A checksum.
pub type Sum = [u8; SUM_LEN];

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn finish(h: Sha256) -> Sum {
    let mut out = [0u8; SUM_LEN];
    out.copy_from_slice(&h.finalize());
    out
}

fn row_head(domain: &[u8], tenant: &str, kind: Kind, id: &str, rev: u64) -> Sha256 {
    let mut h = Sha256::new();
    field(&mut h, domain);
    field(&mut h, tenant.as_bytes());
    field(&mut h, kind.as_str().as_bytes());
    field(&mut h, id.as_bytes());
    h.update(rev.to_le_bytes());
    h
}

/// Checksum of a row whose document is stored as exactly `json`.
pub fn row_sum(tenant: &str, kind: Kind, id: &str, rev: u64, json: &[u8]) -> Sum {
    let mut h = row_head(b"portcullis/row/bytes/1", tenant, kind, id, rev);
    field(&mut h, json);
    finish(h)
}

/// Checksum of a row over the canonical form of its document (see the module docs).
pub fn row_sum_canonical(tenant: &str, kind: Kind, id: &str, rev: u64, doc: &Value) -> Sum {
    let mut h = row_head(b"portcullis/row/canonical/1", tenant, kind, id, rev);
    canonical_value(&mut h, doc);
    finish(h)
}

/// Checksum of a record stored as exactly `bytes` under `(tenant, revision)`; `domain` tells
/// the record types apart (`commit`, `meta`, `tenant`).
pub fn record_sum(domain: &str, tenant: &str, revision: u64, bytes: &[u8]) -> Sum {
    let mut h = Sha256::new();
    field(&mut h, b"portcullis/record/1");
    field(&mut h, domain.as_bytes());
    field(&mut h, tenant.as_bytes());
    h.update(revision.to_le_bytes());
    field(&mut h, bytes);
    finish(h)
}

/// Checksum of a commit over its fields, documents in canonical form.
pub fn commit_sum_canonical(c: &Commit) -> Sum {
    let mut h = Sha256::new();
    field(&mut h, b"portcullis/commit/canonical/1");
    field(&mut h, c.tenant.as_bytes());
    h.update(c.revision.to_le_bytes());
    field(&mut h, c.actor.as_bytes());
    h.update(c.at_ms.to_le_bytes());
    field(&mut h, c.action.as_bytes());
    field(&mut h, c.target.as_bytes());
    h.update((c.ops.len() as u64).to_le_bytes());
    for op in &c.ops {
        field(&mut h, op.kind.as_str().as_bytes());
        field(&mut h, op.id.as_bytes());
        for doc in [&op.value, &op.before] {
            match doc {
                None => h.update(b"-"),
                Some(v) => {
                    h.update(b"+");
                    canonical_value(&mut h, v);
                }
            }
        }
    }
    finish(h)
}

/// Feeds the canonical form of `v` to `h`: keys sorted, numbers normalised, every item
/// length-prefixed or tagged so that no two values share an encoding.
pub fn canonical_value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(true) => h.update(b"t"),
        Value::Bool(false) => h.update(b"f"),
        Value::Number(n) => {
            h.update(b"d");
            field(h, canonical_number(&n.to_string()).as_bytes());
        }
        Value::String(s) => {
            h.update(b"s");
            field(h, s.as_bytes());
        }
        Value::Array(items) => {
            h.update(b"a");
            h.update((items.len() as u64).to_le_bytes());
            for item in items {
                canonical_value(h, item);
            }
        }
        Value::Object(map) => {
            h.update(b"o");
            h.update((map.len() as u64).to_le_bytes());
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            for (k, item) in entries {
                field(h, k.as_bytes());
                canonical_value(h, item);
            }
        }
    }
}

/// The decimal value of a JSON number as `[-]DIGITSeEXP`, with no leading or trailing zeros in
/// `DIGITS` (`0` for zero, whatever its sign): `1e18`, `1000000000000000000` and
/// `1000000000000000000.0` all give `1e18`.
pub fn canonical_number(text: &str) -> String {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exp) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = int.chars().chain(frac.chars()).collect();
    let mut exp = exp.saturating_sub(frac.len() as i64);
    let trimmed = digits.trim_end_matches('0').len();
    exp = exp.saturating_add((digits.len() - trimmed) as i64);
    digits.truncate(trimmed);
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return "0".to_string();
    }
    format!("{}{digits}e{exp}", if negative { "-" } else { "" })
}

/// Removes the `_rev` member that stores written before revisions were kept beside the value
/// put into every row document. Returns it, if it was a number.
pub fn take_legacy_rev(doc: &mut Value) -> Option<u64> {
    doc.as_object_mut()
        .and_then(|m| m.remove("_rev"))
        .and_then(|v| v.as_u64())
}

/// Removes legacy `_rev` members from a commit's documents (see [`take_legacy_rev`]).
pub fn strip_legacy_revs(c: &mut Commit) {
    for op in &mut c.ops {
        for doc in [&mut op.value, &mut op.before].into_iter().flatten() {
            take_legacy_rev(doc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_normalised() {
        for (a, b) in [
            ("1e18", "1000000000000000000"),
            ("1.5e-7", "0.00000015"),
            ("-0.0", "0"),
            ("1.0", "1"),
            ("1e300", &format!("1{}", "0".repeat(300))),
            ("9.223372036854776e18", "9223372036854776000"),
            ("120", "1.2e2"),
        ] {
            assert_eq!(canonical_number(a), canonical_number(b), "{a} vs {b}");
        }
        assert_ne!(canonical_number("12"), canonical_number("1.2"));
        assert_ne!(canonical_number("-1"), canonical_number("1"));
        assert_eq!(canonical_number("0.00"), "0");
        assert_eq!(canonical_number("-250"), "-25e1");
    }

    #[test]
    fn canonical_sums_ignore_key_order_and_number_format_only() {
        let a = json!({"b": [1, 2.5, "x"], "a": {"z": null, "y": true}});
        let b: Value =
            serde_json::from_str(r#"{"a":{"y":true,"z":null},"b":[1.0,25e-1,"x"]}"#).unwrap();
        let sum = |v: &Value| row_sum_canonical("t", Kind::User, "u", 3, v);
        assert_eq!(sum(&a), sum(&b));
        let c = json!({"b": [1, 2.5, "y"], "a": {"z": null, "y": true}});
        assert_ne!(sum(&a), sum(&c));
        assert_ne!(
            sum(&a),
            row_sum_canonical("t", Kind::User, "u", 4, &a),
            "the revision is covered"
        );
        assert_ne!(sum(&a), row_sum_canonical("t", Kind::Node, "u", 3, &a));
        assert_ne!(sum(&json!(["ab"])), sum(&json!(["a", "b"])));
    }

    #[test]
    fn legacy_revs_are_moved_out() {
        let mut v = json!({"id": "a", "_rev": 7});
        assert_eq!(take_legacy_rev(&mut v), Some(7));
        assert_eq!(v, json!({"id": "a"}));
        assert_eq!(take_legacy_rev(&mut json!([1])), None);
    }
}
