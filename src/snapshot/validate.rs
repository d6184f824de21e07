//! Validation of untrusted snapshot bytes: rkyv's structural check, then every index.
//!
//! After this passes, the decision code can index without bounds surprises and every `up`
//! chain terminates (each `up` points strictly backwards within its principal's slice). The hot
//! path still uses checked indexing and fails closed, as defence in depth.

use super::{ArchivedSpan, ArchivedTenantSnap, FORMAT_VERSION, NONE};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot bytes are malformed: {0}")]
    Malformed(String),
    #[error("snapshot format {found} is not supported (expected {expected})")]
    Format { found: u32, expected: u32 },
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

fn bad(msg: impl Into<String>) -> SnapshotError {
    SnapshotError::Inconsistent(msg.into())
}

pub(super) fn validate(bytes: &[u8]) -> Result<(), SnapshotError> {
    let v = rkyv::access::<ArchivedTenantSnap, rkyv::rancor::BoxedError>(bytes)
        .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    check(v)
}

fn span_ok(s: &ArchivedSpan, len: usize) -> bool {
    let (a, b) = (s.start.to_native() as usize, s.end.to_native() as usize);
    a <= b && b <= len
}

fn check(v: &ArchivedTenantSnap) -> Result<(), SnapshotError> {
    let format = v.format.to_native();
    if format != FORMAT_VERSION {
        return Err(SnapshotError::Format {
            found: format,
            expected: FORMAT_VERSION,
        });
    }
    let n = v.nodes.len();
    if n >= NONE as usize || v.grants.len() >= NONE as usize {
        return Err(bad("too many items"));
    }
    for (i, node) in v.nodes.iter().enumerate() {
        let (parent, end, kind) = (
            node.parent.to_native(),
            node.end.to_native() as usize,
            node.kind.to_native(),
        );
        if end <= i || end > n {
            return Err(bad(format!(
                "node {i} has subtree end {end} outside ({i}, {n}]"
            )));
        }
        if parent != NONE {
            let p = parent as usize;
            if p >= i || v.nodes[p].end.to_native() < end as u32 {
                return Err(bad(format!(
                    "node {i} has parent {p} that does not enclose it"
                )));
            }
        }
        if kind as usize >= v.kinds.len() {
            return Err(bad(format!("node {i} has unknown kind {kind}")));
        }
    }
    if v.node_index.len() != n
        || v.node_index.iter().any(|(k, x)| {
            let x = x.to_native() as usize;
            x >= n || v.nodes[x].id.as_str() != k.as_str()
        })
    {
        return Err(bad("node index does not match nodes"));
    }
    let users = v.users.len();
    if v.user_index.len() != users
        || v.user_index.iter().any(|(k, x)| {
            let x = x.to_native() as usize;
            x >= users || v.users[x].id.as_str() != k.as_str()
        })
    {
        return Err(bad("user index does not match users"));
    }
    let roles = v.roles.len();
    let words = v.words.to_native() as usize;
    if words == 0 || words * 64 < roles || v.bitsets.len() % words != 0 || v.bitsets.is_empty() {
        return Err(bad("role bitsets have the wrong shape"));
    }
    let nsets = v.bitsets.len() / words;
    let set_ok = |s: u32| (s as usize) < nsets;
    if !set_ok(v.perm_all.to_native())
        || v.perm_exact.iter().any(|(_, s)| !set_ok(s.to_native()))
        || v.perm_resource.iter().any(|(_, s)| !set_ok(s.to_native()))
        || v.perm_action.iter().any(|(_, s)| !set_ok(s.to_native()))
    {
        return Err(bad("permission index points outside the bitsets"));
    }
    let grants = v.grants.len();
    if v.grant_meta.len() != grants {
        return Err(bad("grant metadata does not match grants"));
    }
    let groups = v.groups.len();
    let check_slice = |span: &ArchivedSpan, who: &str| -> Result<(), SnapshotError> {
        if !span_ok(span, grants) {
            return Err(bad(format!("{who} has grants outside the grant table")));
        }
        let start = span.start.to_native();
        for gi in start..span.end.to_native() {
            let g = &v.grants[gi as usize];
            let (lo, hi, up) = (g.lo.to_native(), g.hi.to_native(), g.up.to_native());
            if lo as usize >= n
                || hi as usize > n
                || hi <= lo
                || g.role.to_native() as usize >= roles
            {
                return Err(bad(format!("grant {gi} of {who} is out of range")));
            }
            if up != NONE && (up < start || up >= gi) {
                return Err(bad(format!(
                    "grant {gi} of {who} links outside its principal"
                )));
            }
        }
        Ok(())
    };
    for (i, u) in v.users.iter().enumerate() {
        check_slice(&u.grants, &format!("user {i}"))?;
        if !span_ok(&u.groups, v.memberships.len()) {
            return Err(bad(format!("user {i} has memberships outside the table")));
        }
    }
    if v.memberships
        .iter()
        .any(|g| g.to_native() as usize >= groups)
    {
        return Err(bad("membership names an unknown group"));
    }
    for (i, g) in v.groups.iter().enumerate() {
        check_slice(&g.grants, &format!("group {i}"))?;
    }
    if v.grant_meta.iter().any(|m| {
        let a = m.assigned_by.to_native();
        a != NONE && a as usize >= v.actors.len()
    }) {
        return Err(bad("grant metadata names an unknown actor"));
    }
    Ok(())
}
