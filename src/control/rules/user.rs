//! Rules of user writes: create (unique id and email, quotas), profile updates (emails are
//! immutable), status transitions (activate, deactivate, delete, restore, login).

use super::tenant::{is_admin, quota_room, Usage};
use super::{Change, Fields, Rule, RuleError};
use crate::control::doc::{json, CredentialRow, InvitationRow, TenantDoc, UserRow};
use crate::model::Principal;
use crate::model::{
    check_email, check_id, check_password, check_person_name, Timestamp, User, UserKind, UserStatus,
};
use crate::store::{Commit, Kind, RowOp};

requests! {
    UserCreate {
        /// Derived from the email's local part when absent.
        pub id: Option<String>,
        pub email: String,
        /// Display name; `first_name last_name` when absent.
        pub name: Option<String>,
        pub first_name: Option<String>,
        pub last_name: Option<String>,
        /// Hashed before the rule runs (see [`NewUserSecrets`]); never stored as given.
        pub password: Option<crate::model::Password>,
        #[serde(default)]
        pub kind: UserKind,
        pub status: Option<UserStatus>,
        pub logout: Option<crate::model::LogoutPeriod>,
        /// Groups the new user joins in the same write (required for ordinary users while the
        /// tenant has `require_group`).
        #[serde(default)]
        pub groups: Vec<String>,
    }
    UserPatch {
        pub name: Option<String>,
        pub first_name: Option<String>,
        pub last_name: Option<String>,
        pub kind: Option<UserKind>,
        /// Emails are immutable: accepted only when unchanged.
        pub email: Option<String>,
        pub logout: Option<crate::model::LogoutPeriod>,
    }
}

/// What a user create stores besides the user: the password's hash (computed before the
/// tenant is locked: argon2 is slow on purpose), or else an invitation (the SHA-256 of its
/// token, and its expiry).
#[derive(Debug, Clone, Default)]
pub struct NewUserSecrets {
    pub password_hash: Option<String>,
    pub invitation: Option<(String, Timestamp)>,
}

fn owner_protected(message: &str) -> RuleError {
    RuleError::conflict("owner_protected", message)
}

/// `POST /v1/tenants/{t}/owner` `{"user"}`: user `to` (active, not a guest) becomes the owner;
/// the previous owner (if any) becomes an administrator. Who may call it is the caller's
/// business (the owner, or the platform).
pub fn transfer_owner(doc: &TenantDoc, to: &str, now: Timestamp) -> Rule {
    let Some(new) = doc.users.get(to) else {
        return Err(RuleError::invalid("user", format!("unknown user '{to}'")));
    };
    if new.user.status != UserStatus::Active {
        return Err(RuleError::invalid(
            "user",
            format!("user '{to}' is not active: ownership goes to an active user"),
        ));
    }
    match new.user.kind {
        UserKind::Owner => {
            return Err(RuleError::conflict(
                "invalid_state",
                format!("user '{to}' already owns the tenant"),
            ))
        }
        UserKind::Guest => return Err(RuleError::invalid("user", "a guest cannot own a tenant")),
        UserKind::Admin | UserKind::Member => {}
    }
    let mut ops = Vec::new();
    for old in doc
        .users
        .values()
        .filter(|u| u.user.kind == UserKind::Owner)
    {
        let mut o = old.clone();
        o.user.kind = UserKind::Admin;
        o.updated_at = now;
        ops.push(RowOp::put(
            Kind::User,
            o.user.id.as_str(),
            json(&o),
            Some(json(old)),
        ));
    }
    if new.user.kind == UserKind::Member && ops.is_empty() {
        // One more among owners and administrators.
        quota_room(
            doc,
            Usage {
                admins: 1,
                ..Usage::default()
            },
        )?;
    }
    let mut n = new.clone();
    n.user.kind = UserKind::Owner;
    n.updated_at = now;
    ops.push(RowOp::put(Kind::User, to, json(&n), Some(json(new))));
    Ok(Change {
        action: "tenant.owner".into(),
        target: to.to_string(),
        ops,
        result: serde_json::json!({"owner": to}),
    })
}

/// The next session epoch of a user: `now`, or one more than the current epoch when that is
/// not older (epochs only grow, and each raise kills the sessions opened before it).
pub fn next_epoch(current: u64, now: Timestamp) -> u64 {
    (now.max(0) as u64).max(current.saturating_add(1))
}

/// An id for a user created without one: the email's local part made an id, with `-2`, `-3`…
/// when taken.
fn derive_user_id(doc: &TenantDoc, email: &str) -> String {
    let local = email.split('@').next().unwrap_or("");
    let mut base: String = local
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | '.' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(64)
        .collect();
    if base.is_empty() || base.bytes().all(|b| b == b'.') {
        base = "user".into();
    }
    if !doc.users.contains_key(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !doc.users.contains_key(id))
        .unwrap_or(base)
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

pub fn create_user(
    doc: &TenantDoc,
    req: &UserCreate,
    now: Timestamp,
    secrets: &NewUserSecrets,
) -> Rule {
    let mut f = Fields::default();
    let id = match &req.id {
        Some(id) => id.clone(),
        None => derive_user_id(doc, &req.email),
    };
    f.check("id", check_id("user id", &id));
    f.check("email", check_email(&req.email));
    if let Some(n) = &req.first_name {
        f.check("first_name", check_person_name("first_name", n));
    } else if req.name.is_none() {
        f.push("first_name", "first_name is required");
    }
    if let Some(n) = &req.last_name {
        f.check("last_name", check_person_name("last_name", n));
    }
    if let Some(p) = &req.password {
        f.check("password", check_password(p.expose()));
    }
    if req.kind == UserKind::Guest {
        f.push("kind", "guests are created through /guests");
    }
    let display = match (&req.first_name, &req.last_name) {
        (Some(a), Some(b)) => Some(format!("{a} {b}")),
        (Some(a), None) => Some(a.clone()),
        _ => None,
    };
    let name = super::name_or_id(&req.name.clone().or(display), &id, &mut f);
    if req.status == Some(UserStatus::Deleted) {
        f.push("status", "a new user cannot be created deleted");
    }
    for (i, g) in req.groups.iter().enumerate() {
        if !doc.groups.contains_key(g) {
            f.push(&format!("groups[{i}]"), format!("unknown group '{g}'"));
        } else if req.groups[..i].contains(g) {
            f.push(
                &format!("groups[{i}]"),
                format!("group '{g}' is listed twice"),
            );
        }
    }
    f.done()?;
    if req.password.is_some() != secrets.password_hash.is_some() {
        return Err(RuleError::invalid(
            "password",
            "the password was not hashed before the write (internal error)",
        ));
    }
    super::absent(&doc.users, Kind::User, &id)?;
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
            id: id.clone(),
            email: req.email.clone(),
            name,
            status: req.status.unwrap_or(UserStatus::Active),
            kind: req.kind,
            session_epoch: 0,
            first_name: req.first_name.clone(),
            last_name: req.last_name.clone(),
            logout: req.logout,
            scope: None,
        },
        created_at: now,
        updated_at: now,
        last_login_at: None,
    };
    if req.groups.is_empty() && super::group::needs_group(doc, &u.user) {
        return Err(super::group::group_required(
            &id,
            "creating the user without 'groups'",
        ));
    }
    let mut c = super::created(Kind::User, &id, &u);
    for gid in &req.groups {
        if let Some(g) = doc.groups.get(gid) {
            let mut next = g.clone();
            next.members.push(id.clone());
            c.ops.push(RowOp::put(
                Kind::Group,
                gid.as_str(),
                json(&next),
                Some(json(g)),
            ));
        }
    }
    if let Some(hash) = &secrets.password_hash {
        let cred = CredentialRow {
            password: Some(hash.clone()),
            cards: Vec::new(),
        };
        c.ops
            .push(RowOp::put(Kind::Credential, id.as_str(), json(&cred), None));
    } else if let Some((sha, expires_at)) = &secrets.invitation {
        let inv = InvitationRow {
            user: id.clone(),
            created_at: now,
            expires_at: *expires_at,
            accepted_at: None,
        };
        c.ops
            .push(RowOp::put(Kind::Invitation, sha.as_str(), json(&inv), None));
    }
    Ok(c)
}

pub fn update_user(doc: &TenantDoc, id: &str, patch: &UserPatch, now: Timestamp) -> Rule {
    super::edit(&doc.users, Kind::User, id, |cur, u, f| {
        if patch.email.as_ref().is_some_and(|e| *e != cur.user.email) {
            f.push("email", "email is immutable");
        }
        super::rename(&patch.name, &mut u.user.name, f);
        if let Some(n) = &patch.first_name {
            f.check("first_name", check_person_name("first_name", n));
            u.user.first_name = Some(n.clone());
        }
        if let Some(n) = &patch.last_name {
            f.check("last_name", check_person_name("last_name", n));
            u.user.last_name = Some(n.clone());
        }
        if let Some(l) = patch.logout {
            u.user.logout = Some(l);
        }
        if let Some(k) = patch.kind {
            if k != cur.user.kind && (k == UserKind::Owner || cur.user.kind == UserKind::Owner) {
                return Err(owner_protected(
                    "the owner changes only by a transfer of ownership (POST /v1/tenants/{t}/owner)",
                ));
            }
            if (k == UserKind::Guest) != (cur.user.kind == UserKind::Guest) {
                f.push("kind", "a user cannot become a guest or stop being one");
            }
            f.take()?;
            if is_admin(k) && !is_admin(cur.user.kind) && cur.user.status != UserStatus::Deleted {
                let admin = Usage {
                    admins: 1,
                    ..Usage::default()
                };
                quota_room(doc, admin)?;
            }
            u.user.kind = k;
            if !super::group::needs_group(doc, &cur.user)
                && super::group::needs_group(doc, &u.user)
                && super::group::groups_of(doc, id, None) == 0
            {
                return Err(super::group::group_required(
                    id,
                    "making them an ordinary user",
                ));
            }
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
                if cur.user.kind == UserKind::Owner {
                    return Err(owner_protected(
                        "the owner cannot be deactivated or deleted: transfer ownership first",
                    ));
                }
                not_deleted(status, || match deleting {
                    true => format!("user '{id}' is already deleted"),
                    false => format!("user '{id}' is deleted"),
                })?;
                u.user.session_epoch = next_epoch(cur.user.session_epoch, now);
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
                if super::group::needs_group(doc, &u.user)
                    && super::group::groups_of(doc, id, None) == 0
                {
                    return Err(super::group::group_required(id, "restoring them"));
                }
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
    if u.user.kind == UserKind::Owner {
        return Err(owner_protected("the owner cannot be erased"));
    }
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
    if doc.credentials.contains_key(id) {
        ops.push(RowOp::delete(Kind::Credential, id, None));
    }
    let owned = |user: &str| user == id;
    ops.extend(
        doc.sessions
            .iter()
            .filter(|(_, s)| owned(&s.user))
            .map(|(sid, _)| RowOp::delete(Kind::Session, sid.as_str(), None)),
    );
    ops.extend(
        doc.api_keys
            .iter()
            .filter(|(_, k)| owned(&k.user))
            .map(|(kid, _)| RowOp::delete(Kind::ApiKey, kid.as_str(), None)),
    );
    ops.extend(
        doc.invitations
            .iter()
            .filter(|(_, i)| owned(&i.user))
            .map(|(iid, _)| RowOp::delete(Kind::Invitation, iid.as_str(), None)),
    );
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
