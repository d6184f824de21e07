//! Decisions: pure functions of an archived tenant snapshot and a request.
//!
//! Nothing here allocates, locks, logs or does I/O (except [`explain`] and the output vector of
//! [`scopes`], which are not on the per-check path). Nothing here fails: every problem,
//! including an index that does not resolve, is a deny with a [`Reason`].

mod explain;

use rkyv::rend::u64_le;

use crate::model::split_action;
use crate::snapshot::{
    ArchivedGrant, ArchivedTenantSnap, ArchivedUserRec, KIND_GUEST, NONE, RBAC_NONE, STATUS_ACTIVE,
    STATUS_DELETED,
};

pub use explain::{explain, Explanation, GrantOutcome, GrantReport};

/// Why a decision came out the way it did. Stable codes for the wire and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// An assignment granted the permission.
    Granted = 0,
    /// The tenant has `rbac: none`: every active user may do everything.
    RbacNone,
    TenantSuspended,
    UnknownSubject,
    SubjectInactive,
    SubjectDeleted,
    UnknownResource,
    /// The action is not a concrete `resource:action`.
    InvalidAction,
    /// Guests may only perform `*:read` actions.
    GuestReadOnly,
    /// No assignment of the subject (or its active groups) grants the permission on the resource.
    NoMatchingAssignment,
    /// A plugin condition said no (or failed, which also denies).
    PluginDenied,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Granted,
        Reason::RbacNone,
        Reason::TenantSuspended,
        Reason::UnknownSubject,
        Reason::SubjectInactive,
        Reason::SubjectDeleted,
        Reason::UnknownResource,
        Reason::InvalidAction,
        Reason::GuestReadOnly,
        Reason::NoMatchingAssignment,
        Reason::PluginDenied,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::Granted => "granted",
            Reason::RbacNone => "rbac_none",
            Reason::TenantSuspended => "tenant_suspended",
            Reason::UnknownSubject => "unknown_subject",
            Reason::SubjectInactive => "subject_inactive",
            Reason::SubjectDeleted => "subject_deleted",
            Reason::UnknownResource => "unknown_resource",
            Reason::InvalidAction => "invalid_action",
            Reason::GuestReadOnly => "guest_read_only",
            Reason::NoMatchingAssignment => "no_matching_assignment",
            Reason::PluginDenied => "plugin_denied",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Reason::Granted => "an assignment grants the permission on the resource or an ancestor",
            Reason::RbacNone => "the tenant does not use RBAC: every active user may act",
            Reason::TenantSuspended => "the tenant is suspended",
            Reason::UnknownSubject => "no such user in this tenant",
            Reason::SubjectInactive => "the user is inactive",
            Reason::SubjectDeleted => "the user is deleted",
            Reason::UnknownResource => "no such resource node in this tenant",
            Reason::InvalidAction => "the action is not of the form resource:action",
            Reason::GuestReadOnly => "guests may only read",
            Reason::NoMatchingAssignment => {
                "no assignment grants the permission on this resource or its ancestors"
            }
            Reason::PluginDenied => "a plugin condition denied",
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// Index of the grant that allowed, or [`NONE`].
    pub grant: u32,
}

impl Decision {
    #[inline]
    pub const fn deny(reason: Reason) -> Decision {
        Decision {
            allowed: false,
            reason,
            grant: NONE,
        }
    }
    #[inline]
    const fn allow(reason: Reason, grant: u32) -> Decision {
        Decision {
            allowed: true,
            reason,
            grant,
        }
    }
}

/// The set of roles granting one concrete permission: the union of up to three bitsets.
#[derive(Clone, Copy)]
pub(crate) struct Perms<'a> {
    sets: [&'a [u64_le]; 3],
}

impl Perms<'_> {
    #[inline]
    pub(crate) fn has(&self, role: u32) -> bool {
        let (w, b) = ((role / 64) as usize, role % 64);
        let word = |s: &[u64_le]| s.get(w).map_or(0, |x| x.to_native());
        ((word(self.sets[0]) | word(self.sets[1]) | word(self.sets[2])) >> b) & 1 == 1
    }

    fn is_empty(&self) -> bool {
        self.sets
            .iter()
            .all(|s| s.iter().all(|w| w.to_native() == 0))
    }
}

#[inline]
fn bitset(v: &ArchivedTenantSnap, idx: u32) -> &[u64_le] {
    let words = v.words.to_native() as usize;
    let start = idx as usize * words;
    v.bitsets.get(start..start + words).unwrap_or(&[])
}

/// Roles granting `resource:action` (already split and syntax-checked).
#[inline]
pub(crate) fn perms<'a>(
    v: &'a ArchivedTenantSnap,
    action: &str,
    res: &str,
    act: &str,
) -> Perms<'a> {
    if let Some(s) = v.perm_exact.get(action) {
        return Perms {
            sets: [bitset(v, s.to_native()), &[], &[]],
        };
    }
    Perms {
        sets: [
            bitset(v, v.perm_all.to_native()),
            v.perm_resource
                .get(res)
                .map_or(&[][..], |s| bitset(v, s.to_native())),
            v.perm_action
                .get(act)
                .map_or(&[][..], |s| bitset(v, s.to_native())),
        ],
    }
}

/// The first grant in a principal's slice `[start, end)` that covers node `x`, holds a role in
/// `perms` and has not expired at `now`; or [`NONE`].
#[inline]
pub(crate) fn find_grant(
    v: &ArchivedTenantSnap,
    start: u32,
    end: u32,
    x: u32,
    perms: &Perms,
    now: i64,
) -> u32 {
    let Some(slice) = v.grants.get(start as usize..end as usize) else {
        return NONE;
    };
    let k = slice.partition_point(|g| g.lo.to_native() <= x);
    if k == 0 {
        return NONE;
    }
    let mut gi = start + k as u32 - 1;
    // Each `up` points strictly backwards (checked at load), so this terminates.
    while let Some(g) = v.grants.get(gi as usize) {
        if x < g.hi.to_native() && g.expires.to_native() > now && perms.has(g.role.to_native()) {
            return gi;
        }
        gi = g.up.to_native();
    }
    NONE
}

/// Subject-level part of a decision, shared by check, filter and scopes.
struct Subject<'a> {
    user: &'a ArchivedUserRec,
    perms: Perms<'a>,
    rbac_none: bool,
}

#[inline]
fn subject<'a>(
    v: &'a ArchivedTenantSnap,
    subject: &str,
    action: &str,
) -> Result<Subject<'a>, Reason> {
    if v.suspended {
        return Err(Reason::TenantSuspended);
    }
    let user = v
        .user_index
        .get(subject)
        .and_then(|u| v.users.get(u.to_native() as usize))
        .ok_or(Reason::UnknownSubject)?;
    match user.status {
        STATUS_ACTIVE => {}
        STATUS_DELETED => return Err(Reason::SubjectDeleted),
        _ => return Err(Reason::SubjectInactive),
    }
    let (res, act) = split_action(action).ok_or(Reason::InvalidAction)?;
    if user.kind == KIND_GUEST && act != "read" {
        return Err(Reason::GuestReadOnly);
    }
    Ok(Subject {
        user,
        perms: perms(v, action, res, act),
        rbac_none: v.rbac == RBAC_NONE,
    })
}

/// Calls `f` with every grant slice that applies to the user: its own, then each active group's.
#[inline]
fn for_each_slice(
    v: &ArchivedTenantSnap,
    user: &ArchivedUserRec,
    mut f: impl FnMut(u32, u32) -> bool,
) {
    if !f(user.grants.start.to_native(), user.grants.end.to_native()) {
        return;
    }
    let (gs, ge) = (
        user.groups.start.to_native() as usize,
        user.groups.end.to_native() as usize,
    );
    for g in v.memberships.get(gs..ge).unwrap_or(&[]) {
        if let Some(group) = v.groups.get(g.to_native() as usize) {
            if group.active && !f(group.grants.start.to_native(), group.grants.end.to_native()) {
                return;
            }
        }
    }
}

#[inline]
fn decide_node(v: &ArchivedTenantSnap, s: &Subject, x: u32, now: i64) -> Decision {
    if s.rbac_none {
        return Decision::allow(Reason::RbacNone, NONE);
    }
    let mut found = NONE;
    for_each_slice(v, s.user, |start, end| {
        found = find_grant(v, start, end, x, &s.perms, now);
        found == NONE
    });
    if found == NONE {
        Decision::deny(Reason::NoMatchingAssignment)
    } else {
        Decision::allow(Reason::Granted, found)
    }
}

/// May `subject` perform `action` on `resource` at time `now` (unix seconds)?
#[inline]
pub fn check(
    v: &ArchivedTenantSnap,
    subject_id: &str,
    action: &str,
    resource: &str,
    now: i64,
) -> Decision {
    let s = match subject(v, subject_id, action) {
        Ok(s) => s,
        Err(r) => return Decision::deny(r),
    };
    let Some(x) = v.node_index.get(resource) else {
        return Decision::deny(Reason::UnknownResource);
    };
    decide_node(v, &s, x.to_native(), now)
}

/// Largest number of covering intervals [`filter`] keeps on the stack; above it, each resource
/// is decided with the per-check search instead (still allocation-free).
const FILTER_INTERVALS: usize = 64;

/// Disjoint, sorted subtree intervals where the subject holds the permission. `None` on
/// overflow of the fixed buffer.
struct Cover {
    iv: [(u32, u32); FILTER_INTERVALS],
    len: usize,
}

impl Cover {
    fn collect(v: &ArchivedTenantSnap, s: &Subject, now: i64) -> Option<Cover> {
        let mut c = Cover {
            iv: [(0, 0); FILTER_INTERVALS],
            len: 0,
        };
        let mut overflow = false;
        for_each_slice(v, s.user, |start, end| {
            for g in v.grants.get(start as usize..end as usize).unwrap_or(&[]) {
                if g.expires.to_native() > now && s.perms.has(g.role.to_native()) {
                    if c.len == FILTER_INTERVALS {
                        overflow = true;
                        return false;
                    }
                    c.iv[c.len] = (g.lo.to_native(), g.hi.to_native());
                    c.len += 1;
                }
            }
            true
        });
        if overflow {
            return None;
        }
        c.normalize();
        Some(c)
    }

    /// Sorts by (lo asc, hi desc) and drops intervals nested in an earlier one.
    fn normalize(&mut self) {
        let iv = &mut self.iv[..self.len];
        iv.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut kept = 0;
        for i in 0..iv.len() {
            if kept > 0 && iv[i].0 < iv[kept - 1].1 {
                continue; // nested (laminar family): covered already
            }
            iv[kept] = iv[i];
            kept += 1;
        }
        self.len = kept;
    }

    #[inline]
    fn covers(&self, x: u32) -> bool {
        let iv = &self.iv[..self.len];
        let k = iv.partition_point(|&(lo, _)| lo <= x);
        k > 0 && x < iv[k - 1].1
    }
}

/// The permitted subset of `resources`: calls `emit(i)` for each permitted index, in order.
/// Returns the subject-level outcome: a deny reason when nothing can be permitted.
pub fn filter<S: AsRef<str>>(
    v: &ArchivedTenantSnap,
    subject_id: &str,
    action: &str,
    resources: &[S],
    now: i64,
    mut emit: impl FnMut(usize),
) -> Decision {
    let s = match subject(v, subject_id, action) {
        Ok(s) => s,
        Err(r) => return Decision::deny(r),
    };
    let node = |r: &S| v.node_index.get(r.as_ref()).map(|x| x.to_native());
    if s.rbac_none {
        for (i, r) in resources.iter().enumerate() {
            if node(r).is_some() {
                emit(i);
            }
        }
        return Decision::allow(Reason::RbacNone, NONE);
    }
    match Cover::collect(v, &s, now) {
        // No grant of the subject holds the permission anywhere: nothing can be permitted.
        Some(c) if c.len == 0 => return Decision::deny(Reason::NoMatchingAssignment),
        Some(c) => {
            for (i, r) in resources.iter().enumerate() {
                if node(r).is_some_and(|x| c.covers(x)) {
                    emit(i);
                }
            }
        }
        None => {
            for (i, r) in resources.iter().enumerate() {
                if node(r).is_some_and(|x| decide_node(v, &s, x, now).allowed) {
                    emit(i);
                }
            }
        }
    }
    Decision::allow(Reason::Granted, NONE)
}

/// Roots (pre-order node indexes, ascending) of the subtrees where the subject holds the
/// permission, written to `out`. Returns the subject-level outcome.
pub fn scopes(
    v: &ArchivedTenantSnap,
    subject_id: &str,
    action: &str,
    now: i64,
    out: &mut Vec<u32>,
) -> Decision {
    out.clear();
    let s = match subject(v, subject_id, action) {
        Ok(s) => s,
        Err(r) => return Decision::deny(r),
    };
    if s.rbac_none {
        out.extend(
            v.nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.parent.to_native() == NONE)
                .map(|(i, _)| i as u32),
        );
        return Decision::allow(Reason::RbacNone, NONE);
    }
    if s.perms.is_empty() {
        return Decision::deny(Reason::NoMatchingAssignment);
    }
    let mut iv: Vec<(u32, u32)> = Vec::new();
    for_each_slice(v, s.user, |start, end| {
        for g in v.grants.get(start as usize..end as usize).unwrap_or(&[]) {
            if g.expires.to_native() > now && s.perms.has(g.role.to_native()) {
                iv.push((g.lo.to_native(), g.hi.to_native()));
            }
        }
        true
    });
    iv.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut end = 0u32;
    for (lo, hi) in iv {
        if out.is_empty() || lo >= end {
            out.push(lo);
            end = hi;
        }
    }
    if out.is_empty() {
        Decision::deny(Reason::NoMatchingAssignment)
    } else {
        Decision::allow(Reason::Granted, NONE)
    }
}

/// Ids of a node and its ancestors, root first.
pub fn node_path(v: &ArchivedTenantSnap, mut x: u32) -> Vec<&str> {
    let mut path = Vec::new();
    while let Some(n) = v.nodes.get(x as usize) {
        path.push(n.id.as_str());
        if path.len() > v.nodes.len() {
            break;
        }
        x = n.parent.to_native();
    }
    path.reverse();
    path
}

pub(crate) fn grant_covers(g: &ArchivedGrant, x: u32) -> bool {
    g.lo.to_native() <= x && x < g.hi.to_native()
}
