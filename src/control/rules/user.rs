//! Rules of user writes: create (unique id and email, quotas), profile updates (emails are
//! immutable), status transitions (activate, deactivate, delete, restore, login).

use super::tenant::{is_admin, quota_room, Usage};
use super::{Fields, Rule, RuleError};
use crate::control::doc::{TenantDoc, UserRow};
use crate::model::Principal;
use crate::model::{check_email, check_id, Timestamp, User, UserKind, UserStatus};
use crate::store::{Commit, Kind, RowOp};

requests! {
    UserCreate {
        pub id: String,
        pub email: String,
        pub name: Option<String>,
        #[serde(default)]
        pub kind: UserKind,
        pub status: Option<UserStatus>,
    }
    UserPatch {
        pub name: Option<String>,
        pub kind: Option<UserKind>,
        /// Emails are immutable: accepted only when unchanged.
        pub email: Option<String>,
    }
}

/// Status transitions of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserTransition {
    Activate,
    Deactivate,
    Delete,
    Restore,
    /// Records a login (bookkeeping for "sort by last login").
    Login,
}

/// Quota room for one more live user, who is an admin or not.
fn room_for_user(doc: &TenantDoc, kind: UserKind) -> Result<(), RuleError> {
    quota_room(
        doc,
        Usage {
            users: 1,
            admins: usize::from(is_admin(kind)),
            groups: 0,
        },
    )
}

pub fn create_user(doc: &TenantDoc, req: &UserCreate, now: Timestamp) -> Rule {
    let mut f = Fields::default();
    f.check("id", check_id("user id", &req.id));
    f.check("email", check_email(&req.email));
    let name = super::name_or_id(&req.name, &req.id, &mut f);
    if req.status == Some(UserStatus::Deleted) {
        f.push("status", "a new user cannot be created deleted");
    }
    f.done()?;
    super::absent(&doc.users, Kind::User, &req.id)?;
    let email_lc = req.email.to_ascii_lowercase();
    if let Some(other) = doc
        .users
        .values()
        .find(|u| u.user.email.to_ascii_lowercase() == email_lc)
    {
        return Err(RuleError::conflict(
            "duplicate_email",
            format!(
                "email '{}' is already used by user '{}'",
                req.email, other.user.id
            ),
        ));
    }
    room_for_user(doc, req.kind)?;
    let u = UserRow {
        user: User {
            id: req.id.clone(),
            email: req.email.clone(),
            name,
            status: req.status.unwrap_or(UserStatus::Active),
            kind: req.kind,
            session_epoch: 0,
            first_name: None,
            last_name: None,
            logout: None,
            scope: None,
        },
        created_at: now,
        updated_at: now,
        last_login_at: None,
    };
    Ok(super::created(Kind::User, &req.id, &u))
}

pub fn update_user(doc: &TenantDoc, id: &str, patch: &UserPatch, now: Timestamp) -> Rule {
    super::edit(&doc.users, Kind::User, id, |cur, u, f| {
        if patch.email.as_ref().is_some_and(|e| *e != cur.user.email) {
            f.push("email", "email is immutable");
        }
        super::rename(&patch.name, &mut u.user.name, f);
        if let Some(k) = patch.kind {
            f.take()?;
            if is_admin(k) && !is_admin(cur.user.kind) && cur.user.status != UserStatus::Deleted {
                let admin = Usage {
                    admins: 1,
                    ..Usage::default()
                };
                quota_room(doc, admin)?;
            }
            u.user.kind = k;
        }
        if u != cur {
            u.updated_at = now;
        }
        Ok("user.update")
    })
}

/// A transition that a deleted user cannot make (409 `invalid_state`).
fn not_deleted(status: UserStatus, message: impl FnOnce() -> String) -> Result<(), RuleError> {
    if status == UserStatus::Deleted {
        return Err(RuleError::conflict("invalid_state", message()));
    }
    Ok(())
}

pub fn transition_user(doc: &TenantDoc, id: &str, t: UserTransition, now: Timestamp) -> Rule {
    super::edit(&doc.users, Kind::User, id, |cur, u, _| {
        let status = cur.user.status;
        let action = match t {
            UserTransition::Activate => {
                not_deleted(status, || {
                    format!("user '{id}' is deleted; restore it instead")
                })?;
                u.user.status = UserStatus::Active;
                "user.activate"
            }
            UserTransition::Deactivate | UserTransition::Delete => {
                let deleting = t == UserTransition::Delete;
                not_deleted(status, || match deleting {
                    true => format!("user '{id}' is already deleted"),
                    false => format!("user '{id}' is deleted"),
                })?;
                u.user.session_epoch = now.max(0) as u64;
                if deleting {
                    u.user.status = UserStatus::Deleted;
                    "user.delete"
                } else {
                    u.user.status = UserStatus::Inactive;
                    "user.deactivate"
                }
            }
            UserTransition::Restore => {
                if status != UserStatus::Deleted {
                    return Err(RuleError::conflict(
                        "invalid_state",
                        format!("user '{id}' is not deleted"),
                    ));
                }
                room_for_user(doc, u.user.kind)?;
                u.user.status = UserStatus::Active;
                "user.restore"
            }
            UserTransition::Login => {
                u.last_login_at = Some(now);
                return Ok("user.login");
            }
        };
        u.updated_at = now;
        Ok(action)
    })
}

/// What an erased user's email and name become in the audit log.
pub const ERASED: &str = "[erased]";

/// Erases a deleted user: removes the user's row (the audit entry carries no value of it) and
/// the assignments and group memberships that still name the user. The audit log is scrubbed by
/// the control plane ([`scrub_user`]). A user that is not deleted is 409 `invalid_state`.
pub fn erase_user(doc: &TenantDoc, id: &str) -> Rule {
    let Some(u) = doc.users.get(id) else {
        return Err(RuleError::not_found("user", id));
    };
    if u.user.status != UserStatus::Deleted {
        return Err(RuleError::conflict(
            "invalid_state",
            format!("user '{id}' is not deleted; delete it first"),
        ));
    }
    let mut ops: Vec<RowOp> = doc
        .assignments
        .iter()
        .filter(|(_, a)| a.assignment.principal == Principal::User(id.to_string()))
        .map(|(aid, _)| RowOp::delete(Kind::Assignment, aid.as_str(), None))
        .collect();
    for (gid, g) in &doc.groups {
        if g.members.iter().any(|m| m == id) {
            let mut g = g.clone();
            g.members.retain(|m| m != id);
            ops.push(RowOp::put(
                Kind::Group,
                gid.as_str(),
                crate::control::doc::json(&g),
                None,
            ));
        }
    }
    ops.push(RowOp::delete(Kind::User, id, None));
    Ok(super::Change {
        action: "user.erase".into(),
        target: format!("user:{id}"),
        ops,
        result: serde_json::json!({"id": id, "erased": true}),
    })
}

/// Replaces the email and name of user `id` in a logged commit by [`ERASED`]; `None` when the
/// commit holds neither.
pub fn scrub_user(c: &Commit, id: &str) -> Option<Commit> {
    let mut out = c.clone();
    let mut changed = false;
    for op in &mut out.ops {
        if op.kind != Kind::User || op.id != id {
            continue;
        }
        for doc in [&mut op.value, &mut op.before].into_iter().flatten() {
            if let serde_json::Value::Object(m) = doc {
                for field in ["email", "name"] {
                    if let Some(v) = m.get_mut(field) {
                        if v != ERASED {
                            *v = serde_json::Value::String(ERASED.into());
                            changed = true;
                        }
                    }
                }
            }
        }
    }
    changed.then_some(out)
}
