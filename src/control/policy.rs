//! Which permission each management write needs, and where (the table of the module docs of
//! [`super::authz`]), with the rules about owners, administrators, self-protection and
//! escalation. One function per operation, called with the caller's [`Guard`] before the rule.

use super::authz::{At, Guard, UserOp};
use super::doc::TenantDoc;
use super::rules::{
    AssignmentCreate, AssignmentPatch, GroupCreate, GroupPatch, NodeCreate, NodePatch, RoleCreate,
    RolePatch, RuleError, TenantPatch, UserCreate, UserPatch, UserTransition,
};
use crate::model::UserKind;

type R = Result<(), RuleError>;

/// Plan settings (tier, quotas, status) and tenant deletion belong to the platform.
fn platform_only(g: &Guard, what: &str) -> R {
    if g.is_platform() {
        return Ok(());
    }
    Err(RuleError::conflict(
        "forbidden",
        format!("only the platform may {what}"),
    ))
}

pub fn create_node(g: &Guard, r: &NodeCreate) -> R {
    match &r.parent {
        Some(p) => g.require_at("node:create", p),
        None => g.require("node:create", At::Tenant),
    }
}

pub fn update_node(g: &Guard, id: &str, p: &NodePatch) -> R {
    g.require_at("node:update", id)?;
    match &p.parent {
        // A move also creates the node under its new parent.
        Some(Some(np)) => g.require_at("node:create", np),
        Some(None) => g.require("node:create", At::Tenant),
        None => Ok(()),
    }
}

pub fn delete_node(g: &Guard, id: &str) -> R {
    g.require_at("node:delete", id)
}

pub fn create_user(g: &Guard, r: &UserCreate) -> R {
    g.require_kind_change(r.kind)?;
    g.require("user:create", At::Tenant)
}

pub fn update_user(g: &Guard, d: &TenantDoc, id: &str, p: &UserPatch) -> R {
    let current = d.users.get(id).map(|u| u.user.kind);
    if let Some(k) = p.kind.filter(|k| Some(*k) != current) {
        g.require_user_write("user:update", id, UserOp::Kind)?;
        g.require_kind_change(k)?;
        if current == Some(UserKind::Admin) {
            // Demoting an administrator is the owner's too.
            g.require_kind_change(UserKind::Admin)?;
        }
    }
    g.require_user_write("user:update", id, UserOp::Profile)
}

pub fn transition_user(g: &Guard, id: &str, tr: UserTransition) -> R {
    match tr {
        UserTransition::Activate | UserTransition::Deactivate | UserTransition::Restore => {
            g.require_user_write("user:status", id, UserOp::Status)
        }
        UserTransition::Delete => g.require_user_write("user:delete", id, UserOp::Delete),
        UserTransition::Login => g.require_user_write("user:update", id, UserOp::Profile),
    }
}

pub fn erase_user(g: &Guard, id: &str) -> R {
    g.require_user_write("user:delete", id, UserOp::Delete)
}

/// Credentials of user `id` (password, invitation, cards, API keys). A user's own credentials
/// are the caller's policy to decide (see `server::admin::identity`).
pub fn user_credentials(g: &Guard, id: &str) -> R {
    g.require_user_write("user:password", id, UserOp::Credentials)
}

pub fn create_assignment(g: &Guard, r: &AssignmentCreate) -> R {
    g.require_at("assignment:create", &r.scope)?;
    g.require_grant(&r.role, &r.scope)
}

pub fn update_assignment(g: &Guard, d: &TenantDoc, id: &str, _p: &AssignmentPatch) -> R {
    let Some(a) = d.assignments.get(id) else {
        return g.require("assignment:create", At::Tenant);
    };
    g.require_at("assignment:create", &a.assignment.scope)?;
    g.require_grant(&a.assignment.role, &a.assignment.scope)
}

pub fn delete_assignment(g: &Guard, d: &TenantDoc, id: &str) -> R {
    let Some(a) = d.assignments.get(id) else {
        return g.require("assignment:delete", At::Tenant);
    };
    g.require_at("assignment:delete", &a.assignment.scope)?;
    // Removing a grant is demoting its holder: only who could grant it.
    g.require_grant(&a.assignment.role, &a.assignment.scope)
}

pub fn create_group(g: &Guard, _r: &GroupCreate) -> R {
    g.require("group:create", At::Tenant)
}

pub fn update_group(g: &Guard, id: &str, p: &GroupPatch) -> R {
    g.require("group:update", At::Tenant)?;
    if p.status.is_some() {
        // Switching a group on or off grants or takes away all of its assignments.
        g.require_group_grants(id)?;
    }
    Ok(())
}

pub fn delete_group(g: &Guard, id: &str) -> R {
    g.require("group:delete", At::Tenant)?;
    g.require_group_grants(id)
}

/// Notification rules (`notification_rule:create|update|delete`, at the tenant level). What
/// they route reveals users' emails, so reading their recipients also needs `user:read` (see
/// `server::admin`).
pub fn notification_rule(g: &Guard, verb: &str) -> R {
    g.require(&format!("notification_rule:{verb}"), At::Tenant)
}

/// Adding or removing a member grants or takes away the group's assignments.
pub fn group_member(g: &Guard, group: &str, user: &str) -> R {
    g.require("group:update", At::Tenant)?;
    if g.user_id() != Some(user) {
        // Only the owner changes an administrator's (or the owner's) groups.
        g.require_user_write("group:update", user, UserOp::Profile)
            .or_else(|e| match &e {
                RuleError::Conflict { code, .. } if *code == "privilege_escalation" => Ok(()),
                _ => Err(e),
            })?;
    }
    g.require_group_grants(group)
}

pub fn create_role(g: &Guard, _r: &RoleCreate) -> R {
    g.require("role:create", At::Tenant)
}

pub fn update_role(g: &Guard, id: &str, p: &RolePatch) -> R {
    g.require("role:update", At::Tenant)?;
    let before = g.role_permissions(id);
    let mut changed: Vec<&str> = Vec::new();
    if let Some(after) = &p.permissions {
        changed.extend(
            after
                .iter()
                .map(String::as_str)
                .filter(|a| !before.contains(a)),
        );
        changed.extend(
            before
                .iter()
                .copied()
                .filter(|b| !after.iter().any(|a| a == b)),
        );
    }
    if p.plugin.is_some() {
        // A new (or no) condition changes what every permission of the role grants.
        changed.extend(before.iter().copied());
    }
    g.require_role_change(id, &changed)
}

pub fn delete_role(g: &Guard, _id: &str) -> R {
    g.require("role:delete", At::Tenant)
}

pub fn update_tenant(g: &Guard, p: &TenantPatch) -> R {
    g.require("tenant:update", At::Tenant)?;
    if p.rbac.is_some() || p.quotas.is_some() || p.status.is_some() {
        platform_only(g, "change a tenant's tier, quotas or status")?;
    }
    Ok(())
}

pub fn delete_tenant(g: &Guard) -> R {
    platform_only(g, "delete a tenant")
}

pub fn plugin(g: &Guard, verb: &str) -> R {
    g.require(&format!("plugin:{verb}"), At::Tenant)
}

pub fn create_guest(g: &Guard, scope: &str) -> R {
    g.require_at("guest:create", scope)
}

pub fn revoke_guest(g: &Guard, id: &str) -> R {
    match g.guest_scope(id) {
        Some(scope) => g.require_at("guest:delete", scope),
        None => g.require("guest:delete", At::Tenant),
    }
}

/// A new password for user `id`. One's own password: the owner always; administrators and
/// ordinary users as the tenant's policy says (`admins_change_own_password`,
/// `users_change_own_password`), else 403 `self_action`.
pub fn set_password(g: &Guard, d: &TenantDoc, id: &str) -> R {
    if g.user_id() != Some(id) {
        return user_credentials(g, id);
    }
    let s = d.settings.as_ref().map(|s| &s.sign_in);
    let (allowed, who) = match d.users.get(id).map(|u| u.user.kind) {
        Some(UserKind::Owner) => (true, ""),
        Some(UserKind::Admin) => (
            s.is_some_and(|s| s.admins_change_own_password),
            "administrators' passwords are changed by the owner (tenant setting admins_change_own_password)",
        ),
        _ => (
            s.is_some_and(|s| s.users_change_own_password),
            "users' passwords are changed by their administrators (tenant setting users_change_own_password)",
        ),
    };
    if allowed {
        Ok(())
    } else {
        Err(RuleError::conflict(
            "self_action",
            format!("you may not change your own password here: {who}"),
        ))
    }
}

/// Access cards are issued, never self-registered: `user:password` where the user lives, own
/// account included.
pub fn cards(g: &Guard, id: &str) -> R {
    if g.user_id() == Some(id) {
        return g.require_user("user:password", id);
    }
    user_credentials(g, id)
}

/// An API key of user `id`: one's own keys freely, anyone else's as a credential of theirs.
pub fn api_key(g: &Guard, user: &str) -> R {
    if g.user_id() == Some(user) {
        return Ok(());
    }
    user_credentials(g, user)
}

/// Ownership moves by the owner's decision (or the platform's, when the owner is gone).
pub fn transfer_owner(g: &Guard) -> R {
    if g.is_platform() || g.is_owner() {
        return Ok(());
    }
    Err(RuleError::conflict(
        "owner_protected",
        "only the owner transfers ownership",
    ))
}
