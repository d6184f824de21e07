//! Rules of group writes: create (known, live, distinct members; quota), rename and
//! (de)activation, membership changes, delete (only when empty and no notification rule
//! names the group; with the group's assignments).
//!
//! `require_group`: while a tenant requires groups, no write may leave an ordinary user (kind
//! `member`, not deleted) without a group — creating one without `groups`, removing one from
//! the last group, making an owner or admin an ordinary user who has none: 409 `group_required`.
//! Membership of any group counts (an inactive group too: deactivating a group cuts access and
//! sign-in, and is never refused); sign-in also needs an active group. Owners, admins and
//! guests are exempt; users who had no group when the setting was turned on keep none until a
//! write touches them (they cannot sign in).

use super::tenant::{quota_room, Usage};
use super::{find, Fields, Rule, RuleError};
use crate::control::doc::{json, TenantDoc};
use crate::model::{check_id, Group, GroupStatus, Principal, User, UserKind, UserStatus};
use crate::store::{Kind, RowOp};

requests! {
    GroupCreate {
        pub id: String,
        pub name: Option<String>,
        #[serde(default)]
        pub status: GroupStatus,
        #[serde(default)]
        pub members: Vec<String>,
        pub logout: Option<crate::model::LogoutPeriod>,
        pub access: Option<Vec<crate::model::Channel>>,
    }
    GroupPatch {
        pub name: Option<String>,
        pub status: Option<GroupStatus>,
        pub logout: Option<crate::model::LogoutPeriod>,
        pub access: Option<Vec<crate::model::Channel>>,
    }
}

fn check_members(doc: &TenantDoc, members: &[String], f: &mut Fields) {
    let mut seen = std::collections::HashSet::new();
    for (i, m) in members.iter().enumerate() {
        match doc.users.get(m) {
            None => f.push(&format!("members[{i}]"), format!("unknown user '{m}'")),
            Some(u) if u.user.status == UserStatus::Deleted => {
                f.push(&format!("members[{i}]"), format!("user '{m}' is deleted"))
            }
            Some(_) if !seen.insert(m.as_str()) => f.push(
                &format!("members[{i}]"),
                format!("user '{m}' is listed twice"),
            ),
            Some(_) => {}
        }
    }
}

pub fn create_group(doc: &TenantDoc, req: &GroupCreate) -> Rule {
    let mut f = Fields::default();
    f.check("id", check_id("group id", &req.id));
    let name = super::name_or_id(&req.name, &req.id, &mut f);
    check_members(doc, &req.members, &mut f);
    f.done()?;
    super::absent(&doc.groups, Kind::Group, &req.id)?;
    quota_room(
        doc,
        Usage {
            groups: 1,
            ..Usage::default()
        },
    )?;
    let g = Group {
        id: req.id.clone(),
        name,
        status: req.status,
        members: req.members.clone(),
        logout: req.logout,
        access: req.access.clone(),
    };
    Ok(super::created(Kind::Group, &g.id, &g))
}

pub fn update_group(doc: &TenantDoc, id: &str, patch: &GroupPatch) -> Rule {
    super::edit(&doc.groups, Kind::Group, id, |cur, g, f| {
        super::rename(&patch.name, &mut g.name, f);
        if let Some(l) = patch.logout {
            g.logout = Some(l);
        }
        if let Some(a) = &patch.access {
            g.access = Some(a.clone());
        }
        let Some(s) = patch.status else {
            return Ok("group.update");
        };
        g.status = s;
        Ok(match s {
            _ if s == cur.status => "group.update",
            GroupStatus::Active => "group.activate",
            _ => "group.deactivate",
        })
    })
}

/// Must `u` keep a group: the tenant requires groups and `u` is a live ordinary user?
pub(super) fn needs_group(doc: &TenantDoc, u: &User) -> bool {
    doc.settings
        .as_ref()
        .is_some_and(|s| s.sign_in.require_group)
        && u.kind == UserKind::Member
        && u.status != UserStatus::Deleted
}

/// The number of groups `user` is a member of, not counting `except`.
pub(super) fn groups_of(doc: &TenantDoc, user: &str, except: Option<&str>) -> usize {
    doc.groups
        .values()
        .filter(|g| Some(g.id.as_str()) != except && g.members.iter().any(|m| m == user))
        .count()
}

/// The refusal of a write that would leave `user` without a group (409 `group_required`).
pub(super) fn group_required(user: &str, what: &str) -> RuleError {
    RuleError::conflict(
        "group_required",
        format!(
            "the tenant requires every ordinary user to belong to a group (require_group); \
             {what} would leave user '{user}' in none"
        ),
    )
}

pub fn delete_group(doc: &TenantDoc, id: &str) -> Rule {
    let cur = find(&doc.groups, "group", id)?;
    if !cur.members.is_empty() {
        return Err(RuleError::conflict(
            "group_not_empty",
            format!(
                "group '{id}' has {} member(s); remove them first",
                cur.members.len()
            ),
        ));
    }
    let rules: Vec<String> = doc
        .notification_rules
        .values()
        .filter(|r| r.groups.iter().any(|g| g == id))
        .map(|r| format!("'{}'", r.id))
        .collect();
    super::unused(rules.len(), || {
        format!(
            "group '{id}' is a target of notification rule(s) {}; remove it from them first",
            rules.join(", ")
        )
    })?;
    let principal = Principal::Group(id.to_string());
    let cascade = doc
        .assignments
        .iter()
        .filter(|(_, a)| a.assignment.principal == principal)
        .map(|(aid, a)| RowOp::delete(Kind::Assignment, aid.as_str(), Some(json(a))))
        .collect();
    Ok(super::deleted(Kind::Group, id, cur, cascade))
}

pub fn add_member(doc: &TenantDoc, id: &str, user: &str) -> Rule {
    super::edit(&doc.groups, Kind::Group, id, |cur, g, f| {
        check_members(doc, &[user.to_string()], f);
        if !f.is_empty() {
            find(&doc.users, "user", user)?;
            f.take()?;
        }
        if cur.members.iter().any(|m| m == user) {
            return Err(RuleError::conflict(
                "already_member",
                format!("user '{user}' is already a member of group '{id}'"),
            ));
        }
        g.members.push(user.to_string());
        Ok("group.member.add")
    })
}

pub fn remove_member(doc: &TenantDoc, id: &str, user: &str) -> Rule {
    super::edit(&doc.groups, Kind::Group, id, |cur, g, _| {
        if !cur.members.iter().any(|m| m == user) {
            return Err(RuleError::not_found("member", user));
        }
        if let Some(u) = doc.users.get(user) {
            if needs_group(doc, &u.user) && groups_of(doc, user, Some(id)) == 0 {
                return Err(group_required(
                    user,
                    &format!("removing them from group '{id}'"),
                ));
            }
        }
        g.members.retain(|m| m != user);
        Ok("group.member.remove")
    })
}
