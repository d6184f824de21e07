//! Rules of assignment writes: a user (live) or a group, a known role and scope node, an expiry
//! in the future; one assignment per (principal, role, scope).

use super::{find, Fields, Rule, RuleError};
use crate::control::doc::{assignment_id, AssignmentRow, TenantDoc};
use crate::model::{is_builtin_role, Assignment, Principal, Timestamp, UserStatus};
use crate::store::Kind;

requests! {
    AssignmentCreate {
        pub user: Option<String>,
        pub group: Option<String>,
        pub role: String,
        pub scope: String,
        #[serde(default, deserialize_with = "crate::model::de_opt_timestamp")]
        pub expires_at: Option<Timestamp>,
    }
    AssignmentPatch {
        /// New expiry; `null` removes it.
        #[serde(default, deserialize_with = "de_double_ts")]
        pub expires_at: Option<Option<Timestamp>>,
    }
}

fn de_double_ts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Timestamp>>, D::Error> {
    crate::model::de_opt_timestamp(d).map(Some)
}

/// An expiry must lie in the future.
fn check_expiry(expires_at: Option<Timestamp>, now: Timestamp, f: &mut Fields) {
    if expires_at.is_some_and(|e| e <= now) {
        f.push("expires_at", "must be in the future");
    }
}

pub fn create_assignment(
    doc: &TenantDoc,
    req: &AssignmentCreate,
    actor: &str,
    now: Timestamp,
) -> Rule {
    let mut f = Fields::default();
    let principal = match (&req.user, &req.group) {
        (Some(u), None) => {
            match doc.users.get(u) {
                None => f.push("user", format!("unknown user '{u}'")),
                Some(x) if x.user.status == UserStatus::Deleted => {
                    f.push("user", format!("user '{u}' is deleted"))
                }
                Some(_) => {}
            }
            Some(Principal::User(u.clone()))
        }
        (None, Some(g)) => {
            if !doc.groups.contains_key(g) {
                f.push("group", format!("unknown group '{g}'"));
            }
            Some(Principal::Group(g.clone()))
        }
        _ => {
            f.push("user", "give exactly one of 'user' or 'group'");
            None
        }
    };
    if !is_builtin_role(&req.role) && !doc.roles.contains_key(&req.role) {
        f.push("role", format!("unknown role '{}'", req.role));
    }
    if !doc.nodes.contains_key(&req.scope) {
        f.push("scope", format!("unknown scope node '{}'", req.scope));
    }
    check_expiry(req.expires_at, now, &mut f);
    f.done()?;
    super::available(doc, &req.role)?;
    let Some(principal) = principal else {
        return Err(RuleError::invalid("user", "missing principal"));
    };
    let id = assignment_id(&principal, &req.role, &req.scope);
    let one_per_place = doc
        .settings
        .as_ref()
        .is_some_and(|s| s.sign_in.one_role_per_place);
    if let (true, Principal::User(_)) = (one_per_place, &principal) {
        if let Some(other) = doc.assignments.values().find(|a| {
            a.assignment.principal == principal
                && a.assignment.scope == req.scope
                && a.assignment.role != req.role
        }) {
            return Err(RuleError::conflict(
                "one_role_per_place",
                format!(
                    "{principal} already holds role '{}' on '{}', and this tenant allows one role per user per place (one_role_per_place)",
                    other.assignment.role, req.scope
                ),
            ));
        }
    }
    if doc.assignments.contains_key(&id) {
        return Err(RuleError::conflict(
            "assignment",
            format!(
                "{principal} already holds role '{}' on '{}'",
                req.role, req.scope
            ),
        ));
    }
    let a = AssignmentRow {
        id: id.clone(),
        assignment: Assignment {
            principal,
            role: req.role.clone(),
            scope: req.scope.clone(),
            assigned_by: Some(actor.to_string()),
            assigned_at: Some(now),
            expires_at: req.expires_at,
        },
    };
    Ok(super::created(Kind::Assignment, &id, &a))
}

pub fn update_assignment(
    doc: &TenantDoc,
    id: &str,
    patch: &AssignmentPatch,
    // A new expiry must lie after this.
    now: Timestamp,
) -> Rule {
    super::edit(&doc.assignments, Kind::Assignment, id, |_, a, f| {
        if let Some(e) = patch.expires_at {
            check_expiry(e, now, f);
            a.assignment.expires_at = e;
        }
        Ok("assignment.update")
    })
}

pub fn delete_assignment(doc: &TenantDoc, id: &str) -> Rule {
    let cur = find(&doc.assignments, "assignment", id)?;
    Ok(super::deleted(Kind::Assignment, id, cur, Vec::new()))
}
