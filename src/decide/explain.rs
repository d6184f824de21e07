//! Explanations: the decision plus every assignment considered and why it did or did not apply.
//! Allocates; not on the per-check path.

use serde::Serialize;

use super::Verdict;
use super::{
    bit, check_as, conditional_roles, grant_covers, node_path, perms, Conditions, Decision,
    NoPlugins, Principal, Reason,
};
use crate::model::{format_timestamp, split_action};
use crate::snapshot::{ArchivedTenantSnap, DEFAULT_ROLE_GROUP, NEVER, NONE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantOutcome {
    /// This assignment allowed the request.
    Matched,
    /// Would also allow; another assignment matched first.
    AlsoGrants,
    /// Would grant, but the request was denied before assignments apply (e.g. inactive user).
    WouldGrant,
    /// The scope is not the resource or one of its ancestors.
    ScopeMismatch,
    /// The role does not grant the action.
    RoleLacksPermission,
    /// The assignment has expired.
    Expired,
    /// The assignment is via a group that is inactive.
    GroupInactive,
    /// The role's plugin condition vetoed the request (or failed).
    PluginDenied,
    /// The role's plugin condition abstained: the assignment does not apply to this request.
    ConditionNotMet,
}

/// What a plugin condition said about one assignment.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionNote {
    pub plugin: String,
    /// Plugin version (SHA-256), when known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `allow`, `deny`, `abstain`, or the failure (`timeout`, `trap`, `unavailable`, …).
    pub outcome: &'static str,
    /// The reason the plugin gave, if any (after a trap: what it set before trapping).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What stopped the call when it trapped or failed to start (wasmtime's description and
    /// the innermost wasm frame).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trap: String,
    /// While the plugin runs a canary: the share, this call's bucket, and whether the candidate
    /// (the version in `version`) decided rather than the current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::plugin::CanarySplit>,
}

impl ConditionNote {
    /// A note naming grant `grant`'s plugin with a bare verdict.
    pub fn of(v: &ArchivedTenantSnap, grant: u32, verdict: Verdict) -> ConditionNote {
        let role = v
            .grants
            .get(grant as usize)
            .and_then(|g| v.roles.get(g.role.to_native() as usize));
        ConditionNote {
            plugin: role
                .and_then(|r| r.plugin.as_ref())
                .map(|p| p.to_string())
                .unwrap_or_default(),
            version: String::new(),
            outcome: match verdict {
                Verdict::Allow => "allow",
                Verdict::Deny => "deny",
                Verdict::Abstain => "abstain",
                Verdict::BudgetExhausted => "budget_exhausted",
                Verdict::Unavailable => "circuit_open",
            },
            reason: String::new(),
            trap: String::new(),
            canary: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GrantReport {
    /// `user:<id>`, `group:<id>`, or `default_role`: the tenant's default role, which every
    /// user but guests holds at the roots without an assignment.
    pub principal: String,
    pub role: String,
    pub scope: String,
    pub scope_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub outcome: GrantOutcome,
    /// The plugin condition's verdict, for assignments whose role has one and that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<ConditionNote>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub allowed: bool,
    pub reason: &'static str,
    pub detail: &'static str,
    pub revision: u64,
    /// The resource and its ancestors, root first (empty if the resource is unknown).
    pub resource_path: Vec<String>,
    /// The assignment that allowed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<GrantReport>,
    /// Every assignment of the subject and of its groups, with its outcome.
    pub assignments: Vec<GrantReport>,
}

/// Explains the decision `check` makes for the same arguments (same snapshot, same time).
pub fn explain(
    v: &ArchivedTenantSnap,
    subject: &str,
    action: &str,
    resource: &str,
    now: i64,
) -> Explanation {
    explain_with(v, subject, action, resource, now, &mut NoPlugins)
}

/// Remembers each plugin condition's verdict, so an explanation calls each plugin once per
/// grant: the decision's calls are reused for the report.
struct Once<'c> {
    inner: &'c mut dyn Conditions,
    seen: Vec<(u32, u32, Verdict, ConditionNote)>,
}

impl Conditions for Once<'_> {
    fn evaluate(&mut self, v: &ArchivedTenantSnap, grant: u32, x: u32) -> Verdict {
        self.explain(v, grant, x).0
    }

    fn explain(&mut self, v: &ArchivedTenantSnap, grant: u32, x: u32) -> (Verdict, ConditionNote) {
        if let Some((_, _, verdict, note)) = self.seen.iter().find(|s| s.0 == grant && s.1 == x) {
            return (*verdict, note.clone());
        }
        let (verdict, note) = self.inner.explain(v, grant, x);
        self.seen.push((grant, x, verdict, note.clone()));
        (verdict, note)
    }
}

/// Explains the decision [`super::check_with`] makes with the same conditions: the verdicts of
/// matching assignments' plugin conditions are reported (each plugin runs once per grant).
pub fn explain_with(
    v: &ArchivedTenantSnap,
    subject: &str,
    action: &str,
    resource: &str,
    now: i64,
    cond: &mut dyn Conditions,
) -> Explanation {
    explain_as(v, Principal::User(subject), action, resource, now, cond)
}

/// [`explain_with`] for any [`Principal`]; an SSO token's assignments are its SSO groups'
/// mapped roles (principal `group:sso:<name>`).
pub fn explain_as(
    v: &ArchivedTenantSnap,
    principal: Principal<'_>,
    action: &str,
    resource: &str,
    now: i64,
    cond: &mut dyn Conditions,
) -> Explanation {
    let mut cond = Once {
        inner: cond,
        seen: Vec::new(),
    };
    let d: Decision = check_as(v, principal, action, resource, now, &mut cond);
    let x = v.node_index.get(resource).map(|x| x.to_native());
    let mut out = Explanation {
        allowed: d.allowed,
        reason: d.reason.code(),
        detail: d.reason.describe(),
        revision: v.revision.to_native(),
        resource_path: x
            .map(|x| node_path(v, x).into_iter().map(str::to_string).collect())
            .unwrap_or_default(),
        matched: None,
        assignments: Vec::new(),
    };
    let ps = split_action(action).map(|(r, a)| perms(v, action, r, a));
    let pbits = ps
        .as_ref()
        .and_then(|p| conditional_roles(v, p))
        .unwrap_or(&[]);
    let group_slice = |group: &crate::snapshot::ArchivedGroupRec| {
        (
            if group.id == DEFAULT_ROLE_GROUP {
                "default_role".to_string()
            } else {
                format!("group:{}", group.id)
            },
            group.active,
            group.grants.start.to_native(),
            group.grants.end.to_native(),
        )
    };
    let mut slices = Vec::new();
    match principal {
        Principal::User(subject) => {
            let Some(user) = super::user(v, subject) else {
                return out;
            };
            slices.push((
                format!("user:{subject}"),
                true,
                user.grants.start.to_native(),
                user.grants.end.to_native(),
            ));
            let (gs, ge) = (
                user.groups.start.to_native() as usize,
                user.groups.end.to_native() as usize,
            );
            for g in v.memberships.get(gs..ge).unwrap_or(&[]) {
                if let Some(group) = v.groups.get(g.to_native() as usize) {
                    slices.push(group_slice(group));
                }
            }
        }
        Principal::Sso(set) => {
            let first = v
                .sso
                .as_ref()
                .map_or(usize::MAX, |s| s.first_group.to_native() as usize);
            for i in set.iter() {
                if let Some(group) = v.groups.get(first.saturating_add(i as usize)) {
                    slices.push(group_slice(group));
                }
            }
        }
    }
    for (principal, active, start, end) in slices {
        for gi in start..end {
            let (Some(g), Some(meta)) = (v.grants.get(gi as usize), v.grant_meta.get(gi as usize))
            else {
                continue;
            };
            let role = v.roles.get(g.role.to_native() as usize);
            let scope = v.nodes.get(g.lo.to_native() as usize);
            let mut condition = None;
            let mut verdict = Verdict::Allow;
            let applies = active
                && g.expires.to_native() > now
                && ps.is_some_and(|p| p.has(g.role.to_native()))
                && x.is_some_and(|x| grant_covers(g, x));
            if let (true, Some(x)) = (applies && bit(pbits, g.role.to_native()), x) {
                let (vd, note) = cond.explain(v, gi, x);
                verdict = vd;
                condition = Some(note);
            }
            let outcome = if gi == d.grant && d.reason == Reason::Granted {
                GrantOutcome::Matched
            } else if applies && verdict.veto_reason().is_some() {
                GrantOutcome::PluginDenied
            } else if applies && verdict == Verdict::Abstain {
                GrantOutcome::ConditionNotMet
            } else if !active {
                GrantOutcome::GroupInactive
            } else if g.expires.to_native() <= now {
                GrantOutcome::Expired
            } else if !ps.is_some_and(|p| p.has(g.role.to_native())) {
                GrantOutcome::RoleLacksPermission
            } else if !x.is_some_and(|x| grant_covers(g, x)) {
                GrantOutcome::ScopeMismatch
            } else if d.allowed {
                GrantOutcome::AlsoGrants
            } else {
                GrantOutcome::WouldGrant
            };
            let by = meta.assigned_by.to_native();
            let at = meta.assigned_at.to_native();
            let exp = g.expires.to_native();
            let report = GrantReport {
                principal: principal.clone(),
                role: role.map(|r| r.id.to_string()).unwrap_or_default(),
                scope: scope.map(|n| n.id.to_string()).unwrap_or_default(),
                scope_kind: scope
                    .and_then(|n| v.kinds.get(n.kind.to_native() as usize))
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
                assigned_by: (by != NONE)
                    .then(|| v.actors.get(by as usize).map(|a| a.to_string()))
                    .flatten(),
                assigned_at: (at != i64::MIN).then(|| format_timestamp(at)),
                expires_at: (exp != NEVER).then(|| format_timestamp(exp)),
                outcome,
                condition,
            };
            if outcome == GrantOutcome::Matched {
                out.matched = Some(report.clone());
            }
            out.assignments.push(report);
        }
    }
    out
}
