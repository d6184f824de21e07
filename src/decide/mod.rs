//! Decisions: pure functions of an archived tenant snapshot and a request.
//!
//! Nothing here allocates, locks, logs or does I/O (except [`explain`] and the output vector of
//! [`scopes`], which are not on the per-check path). Nothing here fails: every problem,
//! including an index that does not resolve, is a deny with a [`Reason`].

mod explain;

use rkyv::Archived;

use crate::model::{is_segment, split_action};
use crate::snapshot::{
    ArchivedGrant, ArchivedTenantSnap, ArchivedUserRec, KIND_GUEST, NONE, RBAC_NONE, STATUS_ACTIVE,
    STATUS_DELETED,
};

/// One archived bitset word.
type Word = Archived<u64>;

pub use explain::{
    explain, explain_as, explain_with, ConditionNote, Explanation, GrantOutcome, GrantReport,
};

/// A plugin condition's verdict on a matched grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The grant does not apply; other grants may still allow.
    Abstain,
    /// The grant applies.
    Allow,
    /// Veto the whole check.
    Deny,
    /// The plugin did not run: the request's plugin time budget is spent. Vetoes like `Deny`,
    /// with the reason `plugin_budget_exhausted`.
    BudgetExhausted,
    /// The plugin did not run: its circuit breaker is open. Vetoes like `Deny`, with the reason
    /// `plugin_unavailable`.
    Unavailable,
}

impl Verdict {
    /// The reason of a check this verdict vetoes, if it is a veto.
    #[inline]
    pub fn veto_reason(self) -> Option<Reason> {
        match self {
            Verdict::Abstain | Verdict::Allow => None,
            Verdict::Deny => Some(Reason::PluginDenied),
            Verdict::BudgetExhausted => Some(Reason::PluginBudgetExhausted),
            Verdict::Unavailable => Some(Reason::PluginUnavailable),
        }
    }
}

/// Evaluates the plugin condition of a matched grant (the engine implements it over the wasm
/// runtime: `crate::engine::conditions`). Decisions call it only for grants that cover the resource, hold the
/// permission, have not expired and whose role names a plugin.
pub trait Conditions {
    /// The verdict of the plugin of grant `grant`'s role for node `x`. Failures are `Deny`.
    fn evaluate(&mut self, v: &ArchivedTenantSnap, grant: u32, x: u32) -> Verdict;

    /// As [`Conditions::evaluate`], with a description for explanations.
    fn explain(&mut self, v: &ArchivedTenantSnap, grant: u32, x: u32) -> (Verdict, ConditionNote) {
        let verdict = self.evaluate(v, grant, x);
        (verdict, ConditionNote::of(v, grant, verdict))
    }
}

/// No plugin runtime: every plugin condition denies (fail closed).
pub struct NoPlugins;

impl Conditions for NoPlugins {
    fn evaluate(&mut self, _: &ArchivedTenantSnap, _: u32, _: u32) -> Verdict {
        Verdict::Deny
    }
}

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
    /// Guests may only act inside their scope node's subtree.
    GuestOutOfScope,
    /// No assignment of the subject (or its active groups) grants the permission on the resource.
    NoMatchingAssignment,
    /// A plugin condition vetoed the check (or failed, which also denies).
    PluginDenied,
    /// Only grants with plugin conditions matched, and none of the plugins allowed.
    ConditionNotMet,
    /// A plugin condition had to run, but the request's plugin time budget was spent.
    PluginBudgetExhausted,
    /// A plugin condition had to run, but its circuit breaker is open (it keeps failing).
    PluginUnavailable,
    /// An SSO token whose group claim names none of the tenant's mapped groups.
    NoMappedGroups,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::Granted,
        Reason::RbacNone,
        Reason::TenantSuspended,
        Reason::UnknownSubject,
        Reason::SubjectInactive,
        Reason::SubjectDeleted,
        Reason::UnknownResource,
        Reason::InvalidAction,
        Reason::GuestReadOnly,
        Reason::GuestOutOfScope,
        Reason::NoMatchingAssignment,
        Reason::PluginDenied,
        Reason::ConditionNotMet,
        Reason::PluginBudgetExhausted,
        Reason::PluginUnavailable,
        Reason::NoMappedGroups,
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
            Reason::GuestOutOfScope => "guest_out_of_scope",
            Reason::NoMatchingAssignment => "no_matching_assignment",
            Reason::PluginDenied => "plugin_denied",
            Reason::ConditionNotMet => "condition_not_met",
            Reason::PluginBudgetExhausted => "plugin_budget_exhausted",
            Reason::PluginUnavailable => "plugin_unavailable",
            Reason::NoMappedGroups => "no_mapped_groups",
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
            Reason::GuestOutOfScope => "guests may only act inside their scope",
            Reason::NoMatchingAssignment => {
                "no assignment grants the permission on this resource or its ancestors"
            }
            Reason::PluginDenied => "a plugin condition vetoed the request (or failed)",
            Reason::ConditionNotMet => {
                "the only matching assignments have plugin conditions, and none applied"
            }
            Reason::PluginBudgetExhausted => {
                "a plugin condition had to run, but the request's plugin time budget was spent"
            }
            Reason::PluginUnavailable => {
                "a plugin condition had to run, but the plugin keeps failing (circuit breaker open)"
            }
            Reason::NoMappedGroups => {
                "the SSO token's groups include none that the tenant maps to roles"
            }
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
    sets: [&'a [Word]; 3],
}

impl Perms<'_> {
    #[inline]
    pub(crate) fn has(&self, role: u32) -> bool {
        let (w, b) = ((role / 64) as usize, role % 64);
        let word = |s: &[Word]| s.get(w).map_or(0, |x| x.to_native());
        ((word(self.sets[0]) | word(self.sets[1]) | word(self.sets[2])) >> b) & 1 == 1
    }

    fn is_empty(&self) -> bool {
        self.sets
            .iter()
            .all(|s| s.iter().all(|w| w.to_native() == 0))
    }

    /// Whether any role in `other` is in this set.
    fn intersects(&self, other: &[Word]) -> bool {
        other.iter().enumerate().any(|(w, o)| {
            let word = |s: &[Word]| s.get(w).map_or(0, |x| x.to_native());
            (word(self.sets[0]) | word(self.sets[1]) | word(self.sets[2])) & o.to_native() != 0
        })
    }
}

/// Whether bit `role` is set in a bitset.
#[inline]
fn bit(set: &[Word], role: u32) -> bool {
    set.get((role / 64) as usize)
        .is_some_and(|w| (w.to_native() >> (role % 64)) & 1 == 1)
}

/// The roles with plugin conditions that could grant `perms`, if any: the slow path is taken
/// only then.
#[inline]
fn conditional_roles<'a>(v: &'a ArchivedTenantSnap, perms: &Perms) -> Option<&'a [Word]> {
    let pr = v.plugin_roles.to_native();
    if pr == 0 {
        return None;
    }
    let set = bitset(v, pr);
    perms.intersects(set).then_some(set)
}

#[inline]
fn bitset(v: &ArchivedTenantSnap, idx: u32) -> &[Word] {
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

/// Slices shorter than this are binary-searched directly.
const INTERPOLATE_MIN: usize = 32;

/// The number of grants in `slice` (sorted by `lo`) whose `lo` is at most `x`: the same as
/// `slice.partition_point(|g| g.lo <= x)`, found with fewer cache misses on long slices.
///
/// Scope intervals start at pre-order numbers, which spread evenly over the hierarchy, so an
/// interpolated first guess lands within a few grants of the answer; a galloping search from
/// the guess then brackets it, and a binary search finishes inside the bracket. A binary
/// search over a group's hundreds of grants costs one dependent cache miss per halving; this
/// costs about three. Any slice (even one not sorted) gives an in-bounds answer.
#[inline]
pub(crate) fn count_lo_le(slice: &[ArchivedGrant], x: u32) -> usize {
    let n = slice.len();
    if n < INTERPOLATE_MIN {
        return slice.partition_point(|g| g.lo.to_native() <= x);
    }
    let key = |i: usize| slice[i].lo.to_native();
    let (first, last) = (key(0), key(n - 1));
    if x < first {
        return 0;
    }
    if x >= last {
        return n;
    }
    // first <= x < last, so last > first and the guess is at most n - 2.
    let guess = (u64::from(x - first) * (n as u64 - 1) / u64::from(last - first)) as usize;
    // Bracket the answer: key(a) <= x < key(b), a < b.
    let (a, b) = if key(guess) <= x {
        let (mut a, mut step) = (guess, 1);
        loop {
            let c = (a + step).min(n - 1);
            if key(c) > x {
                break (a, c);
            }
            a = c;
            step *= 2;
        }
    } else {
        let (mut b, mut step) = (guess, 1);
        loop {
            let c = b.saturating_sub(step);
            if key(c) <= x {
                break (c, b);
            }
            b = c;
            step *= 2;
        }
    };
    a + 1 + slice[a + 1..b].partition_point(|g| g.lo.to_native() <= x)
}

/// Calls `f(grant, role)` for each grant in a principal's slice `[start, end)` that covers node
/// `x`, holds a role in `perms` and has not expired, innermost scope first, until `f` returns
/// false.
#[inline]
fn each_matching(
    v: &ArchivedTenantSnap,
    start: u32,
    end: u32,
    x: u32,
    perms: &Perms,
    now: i64,
    mut f: impl FnMut(u32, u32) -> bool,
) {
    let Some(slice) = v.grants.get(start as usize..end as usize) else {
        return;
    };
    let k = count_lo_le(slice, x);
    if k == 0 {
        return;
    }
    let mut gi = start + k as u32 - 1;
    // Each `up` points strictly backwards (checked at load), so this terminates.
    while let Some(g) = v.grants.get(gi as usize) {
        let role = g.role.to_native();
        if x < g.hi.to_native() && g.expires.to_native() > now && perms.has(role) && !f(gi, role) {
            return;
        }
        gi = g.up.to_native();
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
    let mut found = NONE;
    each_matching(v, start, end, x, perms, now, |gi, _| {
        found = gi;
        false
    });
    found
}

/// The SSO groups an SSO token names: bit `i` is the tenant's SSO group `first_group + i`
/// (see [`crate::snapshot::SsoRec`]). A fixed-size set: no allocation per check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SsoGroups {
    bits: [u64; 4],
}

impl SsoGroups {
    /// Most SSO groups a tenant may have ([`crate::model::MAX_SSO_GROUPS`]).
    pub const CAPACITY: u32 = 256;

    /// Adds SSO group `i` (relative to the first); out-of-range indexes are ignored.
    #[inline]
    pub fn insert(&mut self, i: u32) {
        if let Some(w) = self.bits.get_mut((i / 64) as usize) {
            *w |= 1 << (i % 64);
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The groups in the set, ascending.
    #[inline]
    pub fn iter(self) -> impl Iterator<Item = u32> {
        (0..Self::CAPACITY).filter(move |&i| (self.bits[(i / 64) as usize] >> (i % 64)) & 1 == 1)
    }
}

/// Who a decision is for.
#[derive(Clone, Copy, Debug)]
pub enum Principal<'a> {
    /// A user of the tenant, by id.
    User(&'a str),
    /// The bearer of a verified SSO token: exactly the mapped roles of the SSO groups it names.
    Sso(SsoGroups),
}

/// The principal a decision found: a user record, or a set of SSO groups.
#[derive(Clone, Copy)]
enum Who<'a> {
    User(&'a ArchivedUserRec),
    Sso(SsoGroups),
}

/// Subject-level part of a decision, shared by check, filter and scopes.
struct Subject<'a> {
    who: Who<'a>,
    perms: Perms<'a>,
    rbac_none: bool,
}

/// The user `id` of the tenant, whatever its status: the one place a user is looked up.
#[inline]
pub fn user<'a>(v: &'a ArchivedTenantSnap, id: &str) -> Option<&'a ArchivedUserRec> {
    v.user_index
        .get(id)
        .and_then(|u| v.users.get(u.to_native() as usize))
}

/// The user `id` if it exists and is active, else why not (`unknown_subject`,
/// `subject_deleted`, `subject_inactive`): the one place a user's status is judged. Decisions
/// deny with the reason; identity checks (tokens, gateway headers) refuse with it.
#[inline]
pub fn active_user<'a>(v: &'a ArchivedTenantSnap, id: &str) -> Result<&'a ArchivedUserRec, Reason> {
    let user = user(v, id).ok_or(Reason::UnknownSubject)?;
    match user.status {
        STATUS_ACTIVE => Ok(user),
        STATUS_DELETED => Err(Reason::SubjectDeleted),
        _ => Err(Reason::SubjectInactive),
    }
}

#[inline]
fn subject<'a>(
    v: &'a ArchivedTenantSnap,
    principal: Principal<'_>,
    action: &str,
) -> Result<Subject<'a>, Reason> {
    if v.suspended {
        return Err(Reason::TenantSuspended);
    }
    let who = match principal {
        Principal::User(id) => Who::User(active_user(v, id)?),
        Principal::Sso(g) if g.is_empty() || v.sso.is_none() => return Err(Reason::NoMappedGroups),
        Principal::Sso(g) => Who::Sso(g),
    };
    let (res, act) = split_action(action).ok_or(Reason::InvalidAction)?;
    if let Who::User(user) = who {
        if user.kind == KIND_GUEST && act != "read" {
            return Err(Reason::GuestReadOnly);
        }
    }
    Ok(Subject {
        who,
        perms: perms(v, action, res, act),
        rbac_none: v.rbac == RBAC_NONE,
    })
}

/// Calls `f` with every grant slice that applies to the principal: a user's own, then each
/// active group's; an SSO token's SSO groups.
#[inline]
fn for_each_slice(v: &ArchivedTenantSnap, who: &Who, mut f: impl FnMut(u32, u32) -> bool) {
    let user = match who {
        Who::User(user) => user,
        Who::Sso(set) => {
            let Some(first) = v.sso.as_ref().map(|s| s.first_group.to_native() as usize) else {
                return;
            };
            for i in set.iter() {
                if let Some(group) = v.groups.get(first + i as usize) {
                    if !f(group.grants.start.to_native(), group.grants.end.to_native()) {
                        return;
                    }
                }
            }
            return;
        }
    };
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

/// Is node `x` outside the subtree a guest is limited to?
#[inline]
fn out_of_guest_scope(v: &ArchivedTenantSnap, who: &Who, x: u32) -> bool {
    let Who::User(user) = who else {
        return false;
    };
    let lo = user.scope.to_native();
    if lo == NONE {
        return false;
    }
    let hi = v.nodes.get(lo as usize).map_or(lo, |n| n.end.to_native());
    !(lo <= x && x < hi)
}

#[inline]
fn decide_node(v: &ArchivedTenantSnap, s: &Subject, x: u32, now: i64) -> Decision {
    if out_of_guest_scope(v, &s.who, x) {
        return Decision::deny(Reason::GuestOutOfScope);
    }
    if s.rbac_none {
        return Decision::allow(Reason::RbacNone, NONE);
    }
    let mut found = NONE;
    for_each_slice(v, &s.who, |start, end| {
        found = find_grant(v, start, end, x, &s.perms, now);
        found == NONE
    });
    if found == NONE {
        Decision::deny(Reason::NoMatchingAssignment)
    } else {
        Decision::allow(Reason::Granted, found)
    }
}

/// [`decide_node`], running plugin conditions when some role that could grant the permission
/// has one. The common case (no such role) stays inline on the plain path.
#[inline]
fn decide_node_with(
    v: &ArchivedTenantSnap,
    s: &Subject,
    x: u32,
    now: i64,
    cond: &mut dyn Conditions,
) -> Decision {
    if out_of_guest_scope(v, &s.who, x) {
        return Decision::deny(Reason::GuestOutOfScope);
    }
    if s.rbac_none {
        return Decision::allow(Reason::RbacNone, NONE);
    }
    match conditional_roles(v, &s.perms) {
        None => decide_node(v, s, x, now),
        Some(pbits) => decide_conditional(v, s, x, now, pbits, cond),
    }
}

/// Visits every matching grant. A plugin `Deny` vetoes the check; otherwise any plain grant or
/// plugin `Allow` allows; a plugin `Abstain` makes its grant not apply.
#[inline(never)]
fn decide_conditional(
    v: &ArchivedTenantSnap,
    s: &Subject,
    x: u32,
    now: i64,
    pbits: &[Word],
    cond: &mut dyn Conditions,
) -> Decision {
    let (mut allowed, mut veto, mut conditional) = (NONE, NONE, false);
    let mut why = Reason::PluginDenied;
    for_each_slice(v, &s.who, |start, end| {
        each_matching(v, start, end, x, &s.perms, now, |gi, role| {
            if !bit(pbits, role) {
                if allowed == NONE {
                    allowed = gi;
                }
                return true;
            }
            conditional = true;
            match cond.evaluate(v, gi, x) {
                Verdict::Allow if allowed == NONE => allowed = gi,
                Verdict::Allow | Verdict::Abstain => {}
                vetoed => {
                    veto = gi;
                    why = vetoed.veto_reason().unwrap_or(Reason::PluginDenied);
                }
            }
            veto == NONE
        });
        veto == NONE
    });
    if veto != NONE {
        Decision {
            allowed: false,
            reason: why,
            grant: veto,
        }
    } else if allowed != NONE {
        Decision::allow(Reason::Granted, allowed)
    } else if conditional {
        Decision::deny(Reason::ConditionNotMet)
    } else {
        Decision::deny(Reason::NoMatchingAssignment)
    }
}

/// May `subject` perform `action` on `resource` at time `now` (unix seconds)? Plugin conditions
/// deny ([`NoPlugins`]); use [`check_with`] to run them.
#[inline]
pub fn check(
    v: &ArchivedTenantSnap,
    subject_id: &str,
    action: &str,
    resource: &str,
    now: i64,
) -> Decision {
    check_with(v, subject_id, action, resource, now, &mut NoPlugins)
}

/// [`check`], running plugin conditions through `cond`. Tenants (and permissions) without
/// plugin roles take exactly the plain path.
#[inline]
pub fn check_with(
    v: &ArchivedTenantSnap,
    subject_id: &str,
    action: &str,
    resource: &str,
    now: i64,
    cond: &mut dyn Conditions,
) -> Decision {
    check_as(v, Principal::User(subject_id), action, resource, now, cond)
}

/// [`check_with`] for any [`Principal`].
#[inline]
pub fn check_as(
    v: &ArchivedTenantSnap,
    principal: Principal<'_>,
    action: &str,
    resource: &str,
    now: i64,
    cond: &mut dyn Conditions,
) -> Decision {
    // The node lookup does not depend on the subject: issue it first so that its cache miss
    // overlaps the subject's. Subject reasons still take precedence over an unknown resource.
    let x = v.node_index.get(resource).map(|x| x.to_native());
    let s = match subject(v, principal, action) {
        Ok(s) => s,
        Err(r) => return Decision::deny(r),
    };
    let Some(x) = x else {
        return Decision::deny(Reason::UnknownResource);
    };
    decide_node_with(v, &s, x, now, cond)
}

/// Does `subject_id` hold the permission *pattern* `pattern` (`res:act`, `res:*`, `*:act` or
/// `*`) on the node at pre-order index `x`? A wildcard pattern is held only through a grant whose
/// role holds that wildcard (or a wider one): holding `user:create` does not hold `user:*`.
/// Plugin-conditioned grants do not count (they depend on a request), nor does the tenant's
/// default role (everyone's data access, not a right to manage). The management API's question
/// ("may this caller grant role R at N?"), answered by the data plane's own search.
pub fn holds(
    v: &ArchivedTenantSnap,
    subject_id: &str,
    pattern: &str,
    x: u32,
    now: i64,
) -> Decision {
    if v.suspended {
        return Decision::deny(Reason::TenantSuspended);
    }
    let user = match active_user(v, subject_id) {
        Ok(u) => u,
        Err(r) => return Decision::deny(r),
    };
    let all = bitset(v, v.perm_all.to_native());
    let (perms, act) = match pattern.split_once(':') {
        _ if pattern == "*" || pattern == "*:*" => (
            Perms {
                sets: [all, &[], &[]],
            },
            "*",
        ),
        Some(("*", a)) if is_segment(a) => (
            Perms {
                sets: [
                    all,
                    v.perm_action
                        .get(a)
                        .map_or(&[][..], |s| bitset(v, s.to_native())),
                    &[],
                ],
            },
            a,
        ),
        Some((r, "*")) if is_segment(r) => (
            Perms {
                sets: [
                    all,
                    v.perm_resource
                        .get(r)
                        .map_or(&[][..], |s| bitset(v, s.to_native())),
                    &[],
                ],
            },
            "*",
        ),
        Some((r, a)) if is_segment(r) && is_segment(a) => (perms(v, pattern, r, a), a),
        _ => return Decision::deny(Reason::InvalidAction),
    };
    if user.kind == KIND_GUEST && act != "read" {
        return Decision::deny(Reason::GuestReadOnly);
    }
    if x as usize >= v.nodes.len() {
        return Decision::deny(Reason::UnknownResource);
    }
    if out_of_guest_scope(v, &Who::User(user), x) {
        return Decision::deny(Reason::GuestOutOfScope);
    }
    if v.rbac == RBAC_NONE {
        return Decision::allow(Reason::RbacNone, NONE);
    }
    // Plain grants only (a plugin condition depends on a request), and not the tenant's default
    // role: it gives everyone data access, not the right to manage.
    let pbits = conditional_roles(v, &perms).unwrap_or(&[]);
    let default = default_role_slice(v);
    let mut found = NONE;
    for_each_slice(v, &Who::User(user), |start, end| {
        if Some((start, end)) == default {
            return true;
        }
        each_matching(v, start, end, x, &perms, now, |gi, role| {
            if bit(pbits, role) {
                return true;
            }
            found = gi;
            false
        });
        found == NONE
    });
    if found == NONE {
        Decision::deny(Reason::NoMatchingAssignment)
    } else {
        Decision::allow(Reason::Granted, found)
    }
}

/// The grant slice of the tenant's default role (the hidden last group), if it has one.
fn default_role_slice(v: &ArchivedTenantSnap) -> Option<(u32, u32)> {
    // After the tenant's own groups, before any SSO groups.
    let i = match v.sso.as_ref() {
        Some(s) => (s.first_group.to_native() as usize).checked_sub(1)?,
        None => v.groups.len().checked_sub(1)?,
    };
    v.groups
        .get(i)
        .filter(|g| g.id == crate::snapshot::DEFAULT_ROLE_GROUP)
        .map(|g| (g.grants.start.to_native(), g.grants.end.to_native()))
}

/// Largest number of covering intervals [`filter`] keeps on the stack (nested ones are dropped
/// whenever the buffer fills); above it, each resource is decided with the per-check search
/// instead (still allocation-free).
const FILTER_INTERVALS: usize = 256;

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
        for_each_slice(v, &s.who, |start, end| {
            for g in v.grants.get(start as usize..end as usize).unwrap_or(&[]) {
                if g.expires.to_native() > now && s.perms.has(g.role.to_native()) {
                    if c.len == FILTER_INTERVALS {
                        // Most intervals of a large slice nest in a few wide ones.
                        c.normalize();
                    }
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
    emit: impl FnMut(usize),
) -> Decision {
    filter_with(v, subject_id, action, resources, now, &mut NoPlugins, emit)
}

/// [`filter`], running plugin conditions through `cond` (per resource, when a role that could
/// grant the permission has one).
pub fn filter_with<S: AsRef<str>>(
    v: &ArchivedTenantSnap,
    subject_id: &str,
    action: &str,
    resources: &[S],
    now: i64,
    cond: &mut dyn Conditions,
    emit: impl FnMut(usize),
) -> Decision {
    filter_as(
        v,
        Principal::User(subject_id),
        action,
        resources,
        now,
        cond,
        emit,
    )
}

/// [`filter_with`] for any [`Principal`].
pub fn filter_as<S: AsRef<str>>(
    v: &ArchivedTenantSnap,
    principal: Principal<'_>,
    action: &str,
    resources: &[S],
    now: i64,
    cond: &mut dyn Conditions,
    mut emit: impl FnMut(usize),
) -> Decision {
    let s = match subject(v, principal, action) {
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
    if conditional_roles(v, &s.perms).is_some() {
        let mut any = false;
        for (i, r) in resources.iter().enumerate() {
            if node(r).is_some_and(|x| decide_node_with(v, &s, x, now, cond).allowed) {
                any = true;
                emit(i);
            }
        }
        return if any || resources.is_empty() {
            Decision::allow(Reason::Granted, NONE)
        } else {
            Decision::deny(Reason::NoMatchingAssignment)
        };
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
    scopes_of(v, Principal::User(subject_id), action, now, out, false)
}

/// [`scopes`] for any [`Principal`].
pub fn scopes_as(
    v: &ArchivedTenantSnap,
    principal: Principal<'_>,
    action: &str,
    now: i64,
    out: &mut Vec<u32>,
) -> Decision {
    scopes_of(v, principal, action, now, out, false)
}

/// [`scopes`] for the management API: the tenant's default role does not count (it grants data
/// access to everyone; managing needs a role of one's own).
pub fn managed_scopes(
    v: &ArchivedTenantSnap,
    subject_id: &str,
    action: &str,
    now: i64,
    out: &mut Vec<u32>,
) -> Decision {
    scopes_of(v, Principal::User(subject_id), action, now, out, true)
}

fn scopes_of(
    v: &ArchivedTenantSnap,
    principal: Principal<'_>,
    action: &str,
    now: i64,
    out: &mut Vec<u32>,
    own_roles_only: bool,
) -> Decision {
    out.clear();
    let s = match subject(v, principal, action) {
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
    // Grants with plugin conditions depend on the resource and the request: not listed.
    let pbits = conditional_roles(v, &s.perms).unwrap_or(&[]);
    let mut iv: Vec<(u32, u32)> = Vec::new();
    let default = default_role_slice(v);
    for_each_slice(v, &s.who, |start, end| {
        if own_roles_only && Some((start, end)) == default {
            return true;
        }
        for g in v.grants.get(start as usize..end as usize).unwrap_or(&[]) {
            let role = g.role.to_native();
            if g.expires.to_native() > now && s.perms.has(role) && !bit(pbits, role) {
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

/// Whether a role with a plugin condition could grant `action` to `subject_id` (then
/// [`scopes`] leaves its grants out, and checks under any scope may be vetoed).
pub fn has_conditions(v: &ArchivedTenantSnap, subject_id: &str, action: &str) -> bool {
    has_conditions_as(v, Principal::User(subject_id), action)
}

/// [`has_conditions`] for any [`Principal`].
pub fn has_conditions_as(v: &ArchivedTenantSnap, principal: Principal<'_>, action: &str) -> bool {
    subject(v, principal, action)
        .is_ok_and(|s| !s.rbac_none && conditional_roles(v, &s.perms).is_some())
}

/// Whether a role with a plugin condition could grant `action` to anyone in the tenant: one
/// bitset test per permission set, no user lookup. False means no check of this action can run
/// a plugin (the request stays on the plain path).
pub fn action_has_conditions(v: &ArchivedTenantSnap, action: &str) -> bool {
    if v.plugin_roles.to_native() == 0 {
        return false;
    }
    match split_action(action) {
        Some((res, act)) => conditional_roles(v, &perms(v, action, res, act)).is_some(),
        None => false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Grant;
    use crate::worlds::Rng;

    #[test]
    fn count_lo_le_matches_partition_point() {
        let mut rng = Rng::new(3);
        for case in 0..300 {
            let n = rng.below(300);
            let spread = 1 + rng.below(if case % 3 == 0 { 10 } else { 100_000 });
            let mut los: Vec<u32> = (0..n).map(|_| rng.below(spread) as u32).collect();
            if case % 7 != 0 {
                los.sort_unstable(); // every 7th case unsorted: must still be in bounds
            }
            let grants: Vec<Grant> = los
                .iter()
                .map(|&lo| Grant {
                    lo,
                    hi: lo + 1,
                    role: 0,
                    up: NONE,
                    expires: i64::MAX,
                })
                .collect();
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&grants).unwrap();
            let archived =
                rkyv::access::<rkyv::vec::ArchivedVec<ArchivedGrant>, rkyv::rancor::Error>(&bytes)
                    .unwrap();
            for _ in 0..200 {
                let x = rng.below(spread + 2) as u32;
                let got = count_lo_le(archived, x);
                assert!(got <= n);
                if case % 7 != 0 {
                    let want = archived.partition_point(|g| g.lo.to_native() <= x);
                    assert_eq!(got, want, "n {n} spread {spread} x {x}");
                }
            }
        }
    }
}
