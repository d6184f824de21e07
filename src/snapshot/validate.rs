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
    if !v.node_index.matches(n, |i| v.nodes[i].id.as_str()) {
        return Err(bad("node index does not match nodes"));
    }
    let users = v.users.len();
    if !v.user_index.matches(users, |i| v.users[i].id.as_str()) {
        return Err(bad("user index does not match users"));
    }
    for (i, u) in v.users.iter().enumerate() {
        let scope = u.scope.to_native();
        if scope != NONE && scope as usize >= n {
            return Err(bad(format!(
                "user {i} has guest scope {scope} outside the nodes"
            )));
        }
    }
    for (id, k) in v.api_keys.iter() {
        if k.user.to_native() as usize >= users {
            return Err(bad(format!("API key '{id}' names no user")));
        }
    }
    let roles = v.roles.len();
    let words = v.words.to_native() as usize;
    if words == 0 || words * 64 < roles || v.bitsets.len() % words != 0 || v.bitsets.is_empty() {
        return Err(bad("role bitsets have the wrong shape"));
    }
    if v.memberships
        .iter()
        .any(|g| g.to_native() as usize >= v.groups.len())
    {
        return Err(bad("membership names an unknown group"));
    }
    for (i, u) in v.users.iter().enumerate() {
        if !span_ok(&u.groups, v.memberships.len()) {
            return Err(bad(format!("user {i} has memberships outside the table")));
        }
    }
    if let Some(sso) = v.sso.as_ref() {
        // Decisions hold a token's SSO groups as bits relative to `first_group`.
        let first = sso.first_group.to_native() as usize;
        let max = crate::model::MAX_SSO_GROUPS;
        if first > v.groups.len()
            || sso.groups.iter().any(|(_, g)| {
                let g = g.to_native() as usize;
                g < first || g >= v.groups.len() || g - first >= max
            })
        {
            return Err(bad(
                "an SSO group mapping names a group outside the SSO groups",
            ));
        }
    }
    check_grants(v)?;
    check_plugins(v)
}

/// Roles against plugins (base parts and `plugin_roles`, which assignment changes never
/// rewrite; `check_grants` checks `plugin_roles` names a bitset).
fn check_plugins(v: &ArchivedTenantSnap) -> Result<(), SnapshotError> {
    let words = v.words.to_native() as usize;
    // Every role with a plugin condition points at a plugin, and is flagged in `plugin_roles`
    // (the hot path consults the flag only); a flagged role without a plugin would deny.
    let nplugins = v.plugins.len();
    let flagged = |r: usize| {
        let at = v.plugin_roles.to_native() as usize * words + r / 64;
        v.bitsets
            .get(at)
            .is_some_and(|w| (w.to_native() >> (r % 64)) & 1 == 1)
    };
    for (i, r) in v.roles.iter().enumerate() {
        let slot = r.plugin_slot.to_native();
        let has = r.plugin.is_some();
        if has != (slot != NONE) || (slot != NONE && slot as usize >= nplugins) || has != flagged(i)
        {
            return Err(bad(format!("role {i} has an inconsistent plugin slot")));
        }
    }
    // A canary's share is a percentage strictly between 0 and 100: the split compares it with
    // a bucket in 0..100, so anything else would make it all or nothing.
    for (i, p) in v.plugins.iter().enumerate() {
        if let Some(c) = p.canary.as_ref() {
            if !crate::model::CANARY_SHARES.contains(&c.share) {
                return Err(bad(format!("plugin {i} has a canary share of {}", c.share)));
            }
        }
    }
    Ok(())
}

/// The checks of what a rebuild after assignment changes writes anew (see
/// `build::Compiled::snapshot`): permission maps and the `plugin_roles` index, grant spans,
/// grants and their metadata.
pub(super) fn check_grants(v: &ArchivedTenantSnap) -> Result<(), SnapshotError> {
    let n = v.nodes.len();
    let roles = v.roles.len();
    let words = v.words.to_native() as usize;
    if v.grants.len() >= NONE as usize {
        return Err(bad("too many items"));
    }
    if words == 0 || v.bitsets.len() % words != 0 {
        return Err(bad("role bitsets have the wrong shape"));
    }
    let nsets = v.bitsets.len() / words;
    let set_ok = |s: u32| (s as usize) < nsets;
    if !set_ok(v.perm_all.to_native())
        || v.perm_exact.iter().any(|(_, s)| !set_ok(s.to_native()))
        || v.perm_resource.iter().any(|(_, s)| !set_ok(s.to_native()))
        || v.perm_action.iter().any(|(_, s)| !set_ok(s.to_native()))
        || !set_ok(v.plugin_roles.to_native())
    {
        return Err(bad("permission index points outside the bitsets"));
    }
    let grants = v.grants.len();
    if v.grant_meta.len() != grants {
        return Err(bad("grant metadata does not match grants"));
    }
    let check_slice =
        |span: &ArchivedSpan, who: &dyn Fn() -> String| -> Result<(), SnapshotError> {
            if !span_ok(span, grants) {
                return Err(bad(format!("{} has grants outside the grant table", who())));
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
                    return Err(bad(format!("grant {gi} of {} is out of range", who())));
                }
                if up != NONE && (up < start || up >= gi) {
                    return Err(bad(format!(
                        "grant {gi} of {} links outside its principal",
                        who()
                    )));
                }
            }
            Ok(())
        };
    for (i, u) in v.users.iter().enumerate() {
        check_slice(&u.grants, &|| format!("user {i}"))?;
    }
    for (i, g) in v.groups.iter().enumerate() {
        check_slice(&g.grants, &|| format!("group {i}"))?;
    }
    if v.grant_meta.iter().any(|m| {
        let a = m.assigned_by.to_native();
        a != NONE && a as usize >= v.actors.len()
    }) {
        return Err(bad("grant metadata names an unknown actor"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Snapshot, TenantSnap};
    use super::SnapshotError;

    fn owned() -> TenantSnap {
        let t = crate::worlds::tenant("t", crate::worlds::S, 5);
        let snap = Snapshot::build(&t).unwrap();
        rkyv::from_bytes::<TenantSnap, rkyv::rancor::BoxedError>(snap.as_bytes()).unwrap()
    }

    fn rejects(what: &str, edit: impl FnOnce(&mut TenantSnap)) {
        let mut t = owned();
        edit(&mut t);
        let bytes = rkyv::to_bytes::<rkyv::rancor::BoxedError>(&t).unwrap();
        match Snapshot::from_bytes(&bytes) {
            Err(SnapshotError::Inconsistent(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("expected '{what}', got {other:?}"),
        }
    }

    #[test]
    fn round_trip_is_accepted() {
        let t = owned();
        let bytes = rkyv::to_bytes::<rkyv::rancor::BoxedError>(&t).unwrap();
        let snap = Snapshot::from_bytes(&bytes).unwrap();
        let v = snap.view();
        for (i, n) in t.nodes.iter().enumerate() {
            assert_eq!(
                v.node_index.get(&n.id).map(|x| x.to_native()),
                Some(i as u32)
            );
        }
        assert_eq!(v.node_index.get("nowhere"), None);
        assert_eq!(v.user_index.get("u7").map(|x| x.to_native()), Some(7));
    }

    #[test]
    fn id_indexes_must_match_their_records() {
        const NODES: &str = "node index does not match nodes";
        const USERS: &str = "user index does not match users";
        rejects(NODES, |t| {
            let n = t.nodes.len() as u32;
            *t.node_index.values_mut().next().unwrap() = n;
        });
        rejects(NODES, |t| {
            let k = t.nodes[2].id.clone();
            *t.node_index.get_mut(&k).unwrap() = 3;
        });
        rejects(NODES, |t| {
            let k = t.nodes[2].id.clone();
            t.node_index.remove(&k);
        });
        rejects(NODES, |t| {
            t.node_index.insert("extra".into(), 0);
        });
        rejects(USERS, |t| {
            let (a, b) = (t.users[0].id.clone(), t.users[1].id.clone());
            *t.user_index.get_mut(&a).unwrap() = 1;
            *t.user_index.get_mut(&b).unwrap() = 0;
        });
    }
}
