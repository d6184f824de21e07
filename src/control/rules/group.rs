//! Rules of group writes: create (known, live, distinct members; quota), rename and
//! (de)activation, membership changes, delete (with the group's assignments).

use super::tenant::{quota_room, Usage};
use super::{find, Fields, Rule, RuleError};
use crate::control::doc::{json, TenantDoc};
use crate::model::{check_id, Group, GroupStatus, Principal, UserStatus};
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

pub fn delete_group(doc: &TenantDoc, id: &str) -> Rule {
    let cur = find(&doc.groups, "group", id)?;
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
        g.members.retain(|m| m != user);
        Ok("group.member.remove")
    })
}
