//! Business rules: each management operation, given the tenant's current document, either
//! yields the row operations of the change or a [`RuleError`] saying precisely what is wrong.
//! Pure functions: no I/O, no clock (the caller passes `now`).

use serde::{Deserialize, Serialize};

use super::doc::{assignment_id, json, AssignmentRow, PluginRow, Settings, TenantDoc, UserRow};
use crate::model::{
    check_email, check_id, check_text, is_builtin_role, Assignment, Group, GroupStatus, Node,
    Permission, Principal, Quotas, Rbac, Role, Tenant, TenantStatus, Timestamp, User, UserKind,
    UserStatus,
};
use crate::store::{Kind, RowOp};

/// What a rule decided: the audit action and target, the row operations, and the resulting
/// entity (for the response).
#[derive(Debug, Clone)]
pub struct Change {
    pub action: String,
    pub target: String,
    pub ops: Vec<RowOp>,
    pub result: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuleError {
    #[error("{what} '{id}' not found")]
    NotFound { what: &'static str, id: String },
    #[error("invalid request: {}", .0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
}

impl RuleError {
    pub fn not_found(what: &'static str, id: &str) -> RuleError {
        RuleError::NotFound {
            what,
            id: id.to_string(),
        }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> RuleError {
        RuleError::Invalid(vec![FieldError {
            field: field.to_string(),
            message: message.into(),
        }])
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> RuleError {
        let code = match code {
            "tenant" | "node" | "user" | "group" | "role" | "assignment" => "already_exists",
            c => c,
        };
        RuleError::Conflict {
            code,
            message: message.into(),
        }
    }
}

/// Collects field errors, then fails with all of them at once.
#[derive(Default)]
struct Fields(Vec<FieldError>);

impl Fields {
    fn check(&mut self, field: &str, r: Result<(), String>) {
        if let Err(m) = r {
            self.0.push(FieldError {
                field: field.to_string(),
                message: m,
            });
        }
    }
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }
    fn done(self) -> Result<(), RuleError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RuleError::Invalid(self.0))
        }
    }
}

fn put(kind: Kind, id: &str, before: Option<serde_json::Value>, after: serde_json::Value) -> RowOp {
    RowOp {
        kind,
        id: id.to_string(),
        value: Some(after),
        before,
    }
}

fn del(kind: Kind, id: &str, before: serde_json::Value) -> RowOp {
    RowOp {
        kind,
        id: id.to_string(),
        value: None,
        before: Some(before),
    }
}

fn change(action: &str, target: String, ops: Vec<RowOp>, result: serde_json::Value) -> Change {
    Change {
        action: action.to_string(),
        target,
        ops,
        result,
    }
}

// ---------------------------------------------------------------------------------------------
// Tenants

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantCreate {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub rbac: Rbac,
    #[serde(default)]
    pub status: TenantStatus,
    #[serde(default)]
    pub quotas: Quotas,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub rbac: Option<Rbac>,
    pub status: Option<TenantStatus>,
    pub quotas: Option<Quotas>,
}

/// Imports a whole (validated) tenant as its first commit.
pub fn import(t: &Tenant, now: Timestamp) -> Result<Change, RuleError> {
    let problems = t.validate();
    if !problems.is_empty() {
        return Err(RuleError::Invalid(
            problems
                .iter()
                .map(|p| FieldError {
                    field: format!("{}[{}]", p.collection.as_str(), p.index),
                    message: p.message.clone(),
                })
                .collect(),
        ));
    }
    let ops = TenantDoc::ops_from_tenant(t, now);
    Ok(change(
        "tenant.import",
        format!("tenant:{}", t.id),
        ops,
        serde_json::json!({ "id": t.id }),
    ))
}

pub fn create_tenant(req: &TenantCreate, now: Timestamp) -> Result<Change, RuleError> {
    let mut f = Fields::default();
    f.check("id", check_id("tenant id", &req.id));
    let name = req.name.clone().unwrap_or_else(|| req.id.clone());
    f.check("name", check_text("name", &name));
    f.done()?;
    let s = Settings {
        id: req.id.clone(),
        name,
        rbac: req.rbac,
        status: req.status,
        quotas: req.quotas,
        created_at: now,
    };
    let v = json(&s);
    Ok(change(
        "tenant.create",
        format!("tenant:{}", req.id),
        vec![put(Kind::Tenant, &req.id, None, v.clone())],
        v,
    ))
}

pub fn update_tenant(doc: &TenantDoc, patch: &TenantPatch) -> Result<Change, RuleError> {
    let Some(cur) = &doc.settings else {
        return Err(RuleError::not_found("tenant", ""));
    };
    let mut s = cur.clone();
    let mut f = Fields::default();
    if let Some(n) = &patch.name {
        f.check("name", check_text("name", n));
        s.name = n.clone();
    }
    if let Some(r) = patch.rbac {
        if r == Rbac::Basic && !doc.roles.is_empty() {
            f.push(
                "rbac",
                format!(
                    "tenant has {} custom role(s); 'basic' allows built-in roles only",
                    doc.roles.len()
                ),
            );
        }
        s.rbac = r;
    }
    if let Some(st) = patch.status {
        s.status = st;
    }
    f.done()?;
    if let Some(q) = patch.quotas {
        quotas_cover_usage(doc, &q)?;
        s.quotas = q;
    }
    let v = json(&s);
    Ok(change(
        "tenant.update",
        format!("tenant:{}", s.id),
        vec![put(Kind::Tenant, &s.id, Some(json(cur)), v.clone())],
        v,
    ))
}

/// Deletes a tenant and every row it has.
pub fn delete_tenant(doc: &TenantDoc) -> Result<Change, RuleError> {
    let Some(s) = &doc.settings else {
        return Err(RuleError::not_found("tenant", ""));
    };
    let mut ops = Vec::new();
    for (id, a) in &doc.assignments {
        ops.push(del(Kind::Assignment, id, json(a)));
    }
    for (id, g) in &doc.groups {
        ops.push(del(Kind::Group, id, json(g)));
    }
    for (id, u) in &doc.users {
        ops.push(del(Kind::User, id, json(u)));
    }
    for (id, r) in &doc.roles {
        ops.push(del(Kind::Role, id, json(r)));
    }
    for (id, n) in &doc.nodes {
        ops.push(del(Kind::Node, id, json(n)));
    }
    for (id, p) in &doc.plugins {
        ops.push(del(Kind::Plugin, id, PluginRow::summary(&json(p))));
    }
    ops.push(del(Kind::Tenant, &s.id, json(s)));
    Ok(change(
        "tenant.delete",
        format!("tenant:{}", s.id),
        ops,
        serde_json::json!({ "id": s.id, "deleted": true }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Nodes

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCreate {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePatch {
    pub name: Option<String>,
    pub kind: Option<String>,
    /// Move the subtree under this node; `null` makes it a root.
    #[serde(default, with = "double_option")]
    pub parent: Option<Option<String>>,
}

/// Distinguishes an absent field from an explicit `null`.
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

pub fn create_node(doc: &TenantDoc, req: &NodeCreate) -> Result<Change, RuleError> {
    let mut f = Fields::default();
    f.check("id", check_id("node id", &req.id));
    f.check("kind", check_id("node kind", &req.kind));
    if let Some(n) = &req.name {
        f.check("name", check_text("name", n));
    }
    if let Some(p) = &req.parent {
        if !doc.nodes.contains_key(p) {
            f.push("parent", format!("unknown parent node '{p}'"));
        }
    }
    f.done()?;
    if doc.nodes.contains_key(&req.id) {
        return Err(RuleError::conflict(
            "node",
            format!("node '{}' already exists", req.id),
        ));
    }
    let n = Node {
        id: req.id.clone(),
        kind: req.kind.clone(),
        parent: req.parent.clone(),
        name: req.name.clone(),
    };
    let v = json(&n);
    Ok(change(
        "node.create",
        format!("node:{}", n.id),
        vec![put(Kind::Node, &n.id, None, v.clone())],
        v,
    ))
}

/// Is `ancestor` equal to `node` or above it?
fn is_ancestor_or_self(doc: &TenantDoc, ancestor: &str, node: &str) -> bool {
    let mut cur = Some(node.to_string());
    let mut steps = 0;
    while let Some(c) = cur {
        if c == ancestor {
            return true;
        }
        steps += 1;
        if steps > doc.nodes.len() + 1 {
            return true; // corrupt (cycle): treat as unsafe
        }
        cur = doc.nodes.get(&c).and_then(|n| n.parent.clone());
    }
    false
}

pub fn update_node(doc: &TenantDoc, id: &str, patch: &NodePatch) -> Result<Change, RuleError> {
    let cur = doc
        .nodes
        .get(id)
        .ok_or_else(|| RuleError::not_found("node", id))?;
    let mut n = cur.clone();
    let mut f = Fields::default();
    if let Some(name) = &patch.name {
        f.check("name", check_text("name", name));
        n.name = Some(name.clone());
    }
    if let Some(k) = &patch.kind {
        f.check("kind", check_id("node kind", k));
        n.kind = k.clone();
    }
    let mut action = "node.update";
    if let Some(parent) = &patch.parent {
        if let Some(p) = parent {
            if !doc.nodes.contains_key(p) {
                f.push("parent", format!("unknown parent node '{p}'"));
            } else if is_ancestor_or_self(doc, id, p) {
                f.push(
                    "parent",
                    format!("moving '{id}' under '{p}' would create a cycle"),
                );
            }
        }
        if n.parent != *parent {
            action = "node.move";
        }
        n.parent = parent.clone();
    }
    f.done()?;
    let v = json(&n);
    Ok(change(
        action,
        format!("node:{id}"),
        vec![put(Kind::Node, id, Some(json(cur)), v.clone())],
        v,
    ))
}

pub fn delete_node(doc: &TenantDoc, id: &str) -> Result<Change, RuleError> {
    let cur = doc
        .nodes
        .get(id)
        .ok_or_else(|| RuleError::not_found("node", id))?;
    let children = doc
        .nodes
        .values()
        .filter(|n| n.parent.as_deref() == Some(id))
        .count();
    if children > 0 {
        return Err(RuleError::conflict(
            "in_use",
            format!("node '{id}' has {children} child node(s); move or delete them first"),
        ));
    }
    let scoped = doc
        .assignments
        .values()
        .filter(|a| a.assignment.scope == id)
        .count();
    if scoped > 0 {
        return Err(RuleError::conflict(
            "in_use",
            format!("node '{id}' is the scope of {scoped} assignment(s); delete them first"),
        ));
    }
    Ok(change(
        "node.delete",
        format!("node:{id}"),
        vec![del(Kind::Node, id, json(cur))],
        serde_json::json!({"id": id, "deleted": true}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Users

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: UserKind,
    #[serde(default)]
    pub status: Option<UserStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub kind: Option<UserKind>,
    /// Emails are immutable: accepted only when unchanged.
    pub email: Option<String>,
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

/// What a tenant's quotas count: live (not deleted) users, live owners and admins, groups.
struct Usage {
    users: usize,
    admins: usize,
    groups: usize,
}

fn usage(doc: &TenantDoc) -> Usage {
    let live = || {
        doc.users
            .values()
            .filter(|u| u.user.status != UserStatus::Deleted)
    };
    Usage {
        users: live().count(),
        admins: live()
            .filter(|u| matches!(u.user.kind, UserKind::Owner | UserKind::Admin))
            .count(),
        groups: doc.groups.len(),
    }
}

/// New quotas must not be below what the tenant already holds (409 `quota_exceeded`, like any
/// change that would leave the tenant over a quota).
fn quotas_cover_usage(doc: &TenantDoc, q: &Quotas) -> Result<(), RuleError> {
    let u = usage(doc);
    let over = [
        ("max_users", q.max_users, u.users, "users"),
        ("max_admins", q.max_admins, u.admins, "owners/admins"),
        ("max_groups", q.max_groups, u.groups, "groups"),
    ]
    .into_iter()
    .filter_map(|(name, max, n, what)| {
        max.filter(|m| n > *m as usize)
            .map(|m| format!("quotas.{name}: tenant has {n} {what}; cannot lower {name} to {m}"))
    })
    .collect::<Vec<_>>();
    if over.is_empty() {
        Ok(())
    } else {
        Err(RuleError::conflict("quota_exceeded", over.join("; ")))
    }
}

fn quota_check(doc: &TenantDoc, adding_user: bool, adding_admin: bool) -> Result<(), RuleError> {
    let Some(s) = &doc.settings else {
        return Ok(());
    };
    let u = usage(doc);
    if adding_user {
        if let Some(max) = s.quotas.max_users {
            let n = u.users;
            if n >= max as usize {
                return Err(RuleError::conflict(
                    "quota_exceeded",
                    format!("tenant has {n} users; quota max_users is {max}"),
                ));
            }
        }
    }
    if adding_admin {
        if let Some(max) = s.quotas.max_admins {
            let n = u.admins;
            if n >= max as usize {
                return Err(RuleError::conflict(
                    "quota_exceeded",
                    format!("tenant has {n} owners/admins; quota max_admins is {max}"),
                ));
            }
        }
    }
    Ok(())
}

pub fn create_user(doc: &TenantDoc, req: &UserCreate, now: Timestamp) -> Result<Change, RuleError> {
    let mut f = Fields::default();
    f.check("id", check_id("user id", &req.id));
    f.check("email", check_email(&req.email));
    let name = req.name.clone().unwrap_or_else(|| req.id.clone());
    f.check("name", check_text("name", &name));
    if req.status == Some(UserStatus::Deleted) {
        f.push("status", "a new user cannot be created deleted");
    }
    f.done()?;
    if doc.users.contains_key(&req.id) {
        return Err(RuleError::conflict(
            "user",
            format!("user '{}' already exists", req.id),
        ));
    }
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
    quota_check(
        doc,
        true,
        matches!(req.kind, UserKind::Owner | UserKind::Admin),
    )?;
    let u = UserRow {
        user: User {
            id: req.id.clone(),
            email: req.email.clone(),
            name,
            status: req.status.unwrap_or(UserStatus::Active),
            kind: req.kind,
            session_epoch: 0,
        },
        created_at: now,
        updated_at: now,
        last_login_at: None,
    };
    let v = json(&u);
    Ok(change(
        "user.create",
        format!("user:{}", req.id),
        vec![put(Kind::User, &req.id, None, v.clone())],
        v,
    ))
}

pub fn update_user(
    doc: &TenantDoc,
    id: &str,
    patch: &UserPatch,
    now: Timestamp,
) -> Result<Change, RuleError> {
    let cur = doc
        .users
        .get(id)
        .ok_or_else(|| RuleError::not_found("user", id))?;
    let mut u = cur.clone();
    let mut f = Fields::default();
    if let Some(e) = &patch.email {
        if *e != cur.user.email {
            f.push("email", "email is immutable");
        }
    }
    if let Some(n) = &patch.name {
        f.check("name", check_text("name", n));
        u.user.name = n.clone();
    }
    if let Some(k) = patch.kind {
        let becomes_admin = matches!(k, UserKind::Owner | UserKind::Admin)
            && !matches!(cur.user.kind, UserKind::Owner | UserKind::Admin)
            && cur.user.status != UserStatus::Deleted;
        f.done()?;
        f = Fields::default();
        quota_check(doc, false, becomes_admin)?;
        u.user.kind = k;
    }
    f.done()?;
    if u != *cur {
        u.updated_at = now;
    }
    let v = json(&u);
    Ok(change(
        "user.update",
        format!("user:{id}"),
        vec![put(Kind::User, id, Some(json(cur)), v.clone())],
        v,
    ))
}

pub fn transition_user(
    doc: &TenantDoc,
    id: &str,
    t: UserTransition,
    now: Timestamp,
) -> Result<Change, RuleError> {
    let cur = doc
        .users
        .get(id)
        .ok_or_else(|| RuleError::not_found("user", id))?;
    let mut u = cur.clone();
    let status = cur.user.status;
    let action = match t {
        UserTransition::Activate => {
            if status == UserStatus::Deleted {
                return Err(RuleError::conflict(
                    "invalid_state",
                    format!("user '{id}' is deleted; restore it instead"),
                ));
            }
            u.user.status = UserStatus::Active;
            "user.activate"
        }
        UserTransition::Deactivate => {
            if status == UserStatus::Deleted {
                return Err(RuleError::conflict(
                    "invalid_state",
                    format!("user '{id}' is deleted"),
                ));
            }
            u.user.status = UserStatus::Inactive;
            u.user.session_epoch = now.max(0) as u64;
            "user.deactivate"
        }
        UserTransition::Delete => {
            if status == UserStatus::Deleted {
                return Err(RuleError::conflict(
                    "invalid_state",
                    format!("user '{id}' is already deleted"),
                ));
            }
            u.user.status = UserStatus::Deleted;
            u.user.session_epoch = now.max(0) as u64;
            "user.delete"
        }
        UserTransition::Restore => {
            if status != UserStatus::Deleted {
                return Err(RuleError::conflict(
                    "invalid_state",
                    format!("user '{id}' is not deleted"),
                ));
            }
            quota_check(
                doc,
                true,
                matches!(u.user.kind, UserKind::Owner | UserKind::Admin),
            )?;
            u.user.status = UserStatus::Active;
            "user.restore"
        }
        UserTransition::Login => {
            u.last_login_at = Some(now);
            "user.login"
        }
    };
    if t != UserTransition::Login {
        u.updated_at = now;
    }
    let v = json(&u);
    Ok(change(
        action,
        format!("user:{id}"),
        vec![put(Kind::User, id, Some(json(cur)), v.clone())],
        v,
    ))
}

// ---------------------------------------------------------------------------------------------
// Groups

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCreate {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: GroupStatus,
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    pub name: Option<String>,
    pub status: Option<GroupStatus>,
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

pub fn create_group(doc: &TenantDoc, req: &GroupCreate) -> Result<Change, RuleError> {
    let mut f = Fields::default();
    f.check("id", check_id("group id", &req.id));
    let name = req.name.clone().unwrap_or_else(|| req.id.clone());
    f.check("name", check_text("name", &name));
    check_members(doc, &req.members, &mut f);
    f.done()?;
    if doc.groups.contains_key(&req.id) {
        return Err(RuleError::conflict(
            "group",
            format!("group '{}' already exists", req.id),
        ));
    }
    if let Some(max) = doc.settings.as_ref().and_then(|s| s.quotas.max_groups) {
        if doc.groups.len() >= max as usize {
            return Err(RuleError::conflict(
                "quota_exceeded",
                format!(
                    "tenant has {} groups; quota max_groups is {max}",
                    doc.groups.len()
                ),
            ));
        }
    }
    let g = Group {
        id: req.id.clone(),
        name,
        status: req.status,
        members: req.members.clone(),
    };
    let v = json(&g);
    Ok(change(
        "group.create",
        format!("group:{}", g.id),
        vec![put(Kind::Group, &g.id, None, v.clone())],
        v,
    ))
}

pub fn update_group(doc: &TenantDoc, id: &str, patch: &GroupPatch) -> Result<Change, RuleError> {
    let cur = doc
        .groups
        .get(id)
        .ok_or_else(|| RuleError::not_found("group", id))?;
    let mut g = cur.clone();
    let mut f = Fields::default();
    if let Some(n) = &patch.name {
        f.check("name", check_text("name", n));
        g.name = n.clone();
    }
    let mut action = "group.update";
    if let Some(s) = patch.status {
        if s != g.status {
            action = if s == GroupStatus::Active {
                "group.activate"
            } else {
                "group.deactivate"
            };
        }
        g.status = s;
    }
    f.done()?;
    let v = json(&g);
    Ok(change(
        action,
        format!("group:{id}"),
        vec![put(Kind::Group, id, Some(json(cur)), v.clone())],
        v,
    ))
}

pub fn delete_group(doc: &TenantDoc, id: &str) -> Result<Change, RuleError> {
    let cur = doc
        .groups
        .get(id)
        .ok_or_else(|| RuleError::not_found("group", id))?;
    let mut ops: Vec<RowOp> = doc
        .assignments
        .iter()
        .filter(|(_, a)| a.assignment.principal == Principal::Group(id.to_string()))
        .map(|(aid, a)| del(Kind::Assignment, aid, json(a)))
        .collect();
    ops.push(del(Kind::Group, id, json(cur)));
    Ok(change(
        "group.delete",
        format!("group:{id}"),
        ops,
        serde_json::json!({"id": id, "deleted": true}),
    ))
}

pub fn add_member(doc: &TenantDoc, id: &str, user: &str) -> Result<Change, RuleError> {
    let cur = doc
        .groups
        .get(id)
        .ok_or_else(|| RuleError::not_found("group", id))?;
    let mut f = Fields::default();
    check_members(doc, &[user.to_string()], &mut f);
    if !f.0.is_empty() {
        if !doc.users.contains_key(user) {
            return Err(RuleError::not_found("user", user));
        }
        f.done()?;
    }
    if cur.members.iter().any(|m| m == user) {
        return Err(RuleError::conflict(
            "already_member",
            format!("user '{user}' is already a member of group '{id}'"),
        ));
    }
    let mut g = cur.clone();
    g.members.push(user.to_string());
    let v = json(&g);
    Ok(change(
        "group.member.add",
        format!("group:{id}"),
        vec![put(Kind::Group, id, Some(json(cur)), v.clone())],
        v,
    ))
}

pub fn remove_member(doc: &TenantDoc, id: &str, user: &str) -> Result<Change, RuleError> {
    let cur = doc
        .groups
        .get(id)
        .ok_or_else(|| RuleError::not_found("group", id))?;
    if !cur.members.iter().any(|m| m == user) {
        return Err(RuleError::not_found("member", user));
    }
    let mut g = cur.clone();
    g.members.retain(|m| m != user);
    let v = json(&g);
    Ok(change(
        "group.member.remove",
        format!("group:{id}"),
        vec![put(Kind::Group, id, Some(json(cur)), v.clone())],
        v,
    ))
}

// ---------------------------------------------------------------------------------------------
// Roles

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleCreate {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub plugin: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    pub name: Option<String>,
    pub permissions: Option<Vec<String>>,
    #[serde(default, with = "double_option")]
    pub plugin: Option<Option<String>>,
}

/// A role's plugin must be a valid name of a plugin the tenant holds.
fn check_plugin_ref(doc: &TenantDoc, p: &str, f: &mut Fields) {
    if let Err(m) = check_id("plugin name", p) {
        f.push("plugin", m);
    } else if !doc.plugins.contains_key(p) {
        f.push(
            "plugin",
            format!("no plugin '{p}' in this tenant; upload it first (PUT …/plugins/{p})"),
        );
    }
}

fn parse_perms(perms: &[String], f: &mut Fields) -> Vec<Permission> {
    let mut out = Vec::with_capacity(perms.len());
    for (i, p) in perms.iter().enumerate() {
        match p.parse::<Permission>() {
            Ok(p) if out.contains(&p) => f.push(
                &format!("permissions[{i}]"),
                format!("'{p}' is listed twice"),
            ),
            Ok(p) => out.push(p),
            Err(e) => f.push(&format!("permissions[{i}]"), e.to_string()),
        }
    }
    out
}

pub fn create_role(doc: &TenantDoc, req: &RoleCreate) -> Result<Change, RuleError> {
    let mut f = Fields::default();
    f.check("id", check_id("role id", &req.id));
    let name = req.name.clone().unwrap_or_else(|| req.id.clone());
    f.check("name", check_text("name", &name));
    let perms = parse_perms(&req.permissions, &mut f);
    if let Some(p) = &req.plugin {
        check_plugin_ref(doc, p, &mut f);
    }
    if doc.settings.as_ref().is_some_and(|s| s.rbac == Rbac::Basic) {
        f.push(
            "id",
            "custom roles need rbac 'enterprise' (tenant has 'basic')",
        );
    }
    f.done()?;
    if is_builtin_role(&req.id) {
        return Err(RuleError::conflict(
            "read_only",
            format!("role '{}' is built in and read-only", req.id),
        ));
    }
    if doc.roles.contains_key(&req.id) {
        return Err(RuleError::conflict(
            "role",
            format!("role '{}' already exists", req.id),
        ));
    }
    let r = Role {
        id: req.id.clone(),
        name,
        permissions: perms,
        plugin: req.plugin.clone(),
    };
    let v = json(&r);
    Ok(change(
        "role.create",
        format!("role:{}", r.id),
        vec![put(Kind::Role, &r.id, None, v.clone())],
        v,
    ))
}

pub fn update_role(doc: &TenantDoc, id: &str, patch: &RolePatch) -> Result<Change, RuleError> {
    if is_builtin_role(id) {
        return Err(RuleError::conflict(
            "read_only",
            format!("role '{id}' is built in and read-only"),
        ));
    }
    let cur = doc
        .roles
        .get(id)
        .ok_or_else(|| RuleError::not_found("role", id))?;
    let mut r = cur.clone();
    let mut f = Fields::default();
    if let Some(n) = &patch.name {
        f.check("name", check_text("name", n));
        r.name = n.clone();
    }
    if let Some(p) = &patch.permissions {
        r.permissions = parse_perms(p, &mut f);
    }
    if let Some(p) = &patch.plugin {
        if let Some(p) = p {
            check_plugin_ref(doc, p, &mut f);
        }
        r.plugin = p.clone();
    }
    f.done()?;
    let v = json(&r);
    Ok(change(
        "role.update",
        format!("role:{id}"),
        vec![put(Kind::Role, id, Some(json(cur)), v.clone())],
        v,
    ))
}

pub fn delete_role(doc: &TenantDoc, id: &str) -> Result<Change, RuleError> {
    if is_builtin_role(id) {
        return Err(RuleError::conflict(
            "read_only",
            format!("role '{id}' is built in and read-only"),
        ));
    }
    let cur = doc
        .roles
        .get(id)
        .ok_or_else(|| RuleError::not_found("role", id))?;
    let used = doc
        .assignments
        .values()
        .filter(|a| a.assignment.role == id)
        .count();
    if used > 0 {
        return Err(RuleError::conflict(
            "in_use",
            format!("role '{id}' is used by {used} assignment(s); delete them first"),
        ));
    }
    Ok(change(
        "role.delete",
        format!("role:{id}"),
        vec![del(Kind::Role, id, json(cur))],
        serde_json::json!({"id": id, "deleted": true}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Plugins

/// An upload: the module bytes were already validated and compiled by the plugin runtime.
#[derive(Debug, Clone)]
pub struct PluginUpload {
    pub name: String,
    pub description: Option<String>,
    pub wasm: std::sync::Arc<[u8]>,
}

/// A plugin name as the API takes it.
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    check_id("plugin name", name)
}

/// Roles naming plugin `name`, sorted.
pub fn plugin_users(doc: &TenantDoc, name: &str) -> Vec<String> {
    doc.roles
        .values()
        .filter(|r| r.plugin.as_deref() == Some(name))
        .map(|r| r.id.clone())
        .collect()
}

/// The API form of a plugin row: no module bytes, plus the roles using it.
pub fn plugin_summary(doc: &TenantDoc, row: &PluginRow) -> serde_json::Value {
    let mut v = PluginRow::summary(&json(row));
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("roles".into(), json(&plugin_users(doc, &row.name)));
    }
    v
}

/// Creates or replaces a plugin. Replacing with the same bytes and description changes nothing.
pub fn put_plugin(
    doc: &TenantDoc,
    req: &PluginUpload,
    actor: &str,
    now: Timestamp,
) -> Result<Change, RuleError> {
    let mut f = Fields::default();
    f.check("name", check_id("plugin name", &req.name));
    if let Some(d) = &req.description {
        f.check("description", check_text("description", d));
    }
    if req.wasm.is_empty() || req.wasm.len() > crate::model::MAX_PLUGIN_BYTES {
        f.push(
            "wasm",
            format!(
                "a module must be 1 to {} bytes, got {}",
                crate::model::MAX_PLUGIN_BYTES,
                req.wasm.len()
            ),
        );
    }
    if doc
        .settings
        .as_ref()
        .is_some_and(|s| s.rbac != Rbac::Enterprise)
    {
        f.push("name", "plugins need rbac 'enterprise'");
    }
    f.done()?;
    let cur = doc.plugins.get(&req.name);
    if cur.is_none() && doc.plugins.len() >= crate::model::MAX_PLUGINS {
        return Err(RuleError::conflict(
            "quota_exceeded",
            format!(
                "a tenant holds at most {} plugins",
                crate::model::MAX_PLUGINS
            ),
        ));
    }
    let sha256 = crate::model::sha256_hex(&req.wasm);
    if let Some(c) = cur {
        if c.sha256 == sha256 && c.description == req.description {
            return Ok(change(
                "plugin.replace",
                format!("plugin:{}", req.name),
                Vec::new(),
                plugin_summary(doc, c),
            ));
        }
    }
    let row = PluginRow {
        name: req.name.clone(),
        description: req.description.clone(),
        sha256,
        size: req.wasm.len(),
        wasm: req.wasm.clone(),
        uploaded_by: Some(actor.to_string()),
        uploaded_at: now,
    };
    let before = cur.map(|c| PluginRow::summary(&json(c)));
    let action = if cur.is_some() {
        "plugin.replace"
    } else {
        "plugin.create"
    };
    Ok(change(
        action,
        format!("plugin:{}", req.name),
        vec![put(Kind::Plugin, &req.name, before, json(&row))],
        plugin_summary(doc, &row),
    ))
}

pub fn delete_plugin(doc: &TenantDoc, name: &str) -> Result<Change, RuleError> {
    let cur = doc
        .plugins
        .get(name)
        .ok_or_else(|| RuleError::not_found("plugin", name))?;
    let roles = plugin_users(doc, name);
    if !roles.is_empty() {
        return Err(RuleError::conflict(
            "in_use",
            format!(
                "plugin '{name}' is the condition of role(s) {}; change them first",
                roles.join(", ")
            ),
        ));
    }
    Ok(change(
        "plugin.delete",
        format!("plugin:{name}"),
        vec![del(Kind::Plugin, name, PluginRow::summary(&json(cur)))],
        serde_json::json!({"id": name, "deleted": true}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Assignments

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentCreate {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub role: String,
    pub scope: String,
    #[serde(default, deserialize_with = "crate::model::de_opt_timestamp")]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentPatch {
    /// New expiry; `null` removes it.
    #[serde(default, deserialize_with = "de_double_ts")]
    pub expires_at: Option<Option<Timestamp>>,
}

fn de_double_ts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Timestamp>>, D::Error> {
    crate::model::de_opt_timestamp(d).map(Some)
}

pub fn create_assignment(
    doc: &TenantDoc,
    req: &AssignmentCreate,
    actor: &str,
    now: Timestamp,
) -> Result<Change, RuleError> {
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
    if let Some(e) = req.expires_at {
        if e <= now {
            f.push("expires_at", "must be in the future");
        }
    }
    f.done()?;
    let Some(principal) = principal else {
        return Err(RuleError::invalid("user", "missing principal"));
    };
    let id = assignment_id(&principal, &req.role, &req.scope);
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
    let v = json(&a);
    Ok(change(
        "assignment.create",
        format!("assignment:{id}"),
        vec![put(Kind::Assignment, &id, None, v.clone())],
        v,
    ))
}

pub fn update_assignment(
    doc: &TenantDoc,
    id: &str,
    patch: &AssignmentPatch,
    now: Timestamp,
) -> Result<Change, RuleError> {
    let cur = doc
        .assignments
        .get(id)
        .ok_or_else(|| RuleError::not_found("assignment", id))?;
    let mut a = cur.clone();
    if let Some(e) = patch.expires_at {
        if e.is_some_and(|e| e <= now) {
            return Err(RuleError::invalid("expires_at", "must be in the future"));
        }
        a.assignment.expires_at = e;
    }
    let v = json(&a);
    Ok(change(
        "assignment.update",
        format!("assignment:{id}"),
        vec![put(Kind::Assignment, id, Some(json(cur)), v.clone())],
        v,
    ))
}

pub fn delete_assignment(doc: &TenantDoc, id: &str) -> Result<Change, RuleError> {
    let cur = doc
        .assignments
        .get(id)
        .ok_or_else(|| RuleError::not_found("assignment", id))?;
    Ok(change(
        "assignment.delete",
        format!("assignment:{id}"),
        vec![del(Kind::Assignment, id, json(cur))],
        serde_json::json!({"id": id, "deleted": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Commit;

    fn doc() -> TenantDoc {
        let data = crate::model::file::load_str(crate::engine::DEMO_DATA).unwrap();
        let t = data.tenants.iter().find(|t| t.id == "femo").unwrap();
        let mut d = TenantDoc::default();
        let c = import(t, 1000).unwrap();
        d.apply(&Commit {
            tenant: "femo".into(),
            revision: 1,
            actor: "t".into(),
            at_ms: 0,
            action: c.action,
            target: c.target,
            ops: c.ops,
        })
        .unwrap();
        d
    }

    fn apply(d: &mut TenantDoc, c: Change) {
        let rev = d.revision + 1;
        d.apply(&Commit {
            tenant: "femo".into(),
            revision: rev,
            actor: "t".into(),
            at_ms: 0,
            action: c.action,
            target: c.target,
            ops: c.ops,
        })
        .unwrap();
        assert!(
            d.to_tenant().unwrap().validate().is_empty(),
            "{:?}",
            d.to_tenant().unwrap().validate()
        );
    }

    #[test]
    fn import_round_trips_the_model() {
        let d = doc();
        let t = d.to_tenant().unwrap();
        assert_eq!(t.users.len(), 10);
        assert!(t.validate().is_empty());
    }

    #[test]
    fn moving_a_node_under_its_descendant_is_a_cycle() {
        let d = doc();
        let patch = NodePatch {
            parent: Some(Some("press-7".into())),
            ..Default::default()
        };
        let e = update_node(&d, "hawthorne", &patch).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        let ok = update_node(
            &d,
            "press-7",
            &NodePatch {
                parent: Some(Some("lyon".into())),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ok.action, "node.move");
    }

    #[test]
    fn duplicate_email_is_case_insensitive() {
        let d = doc();
        let req = UserCreate {
            id: "zed".into(),
            email: "ALICE@femo.example".into(),
            name: None,
            kind: UserKind::Member,
            status: None,
        };
        match create_user(&d, &req, 5).unwrap_err() {
            RuleError::Conflict { code, .. } => assert_eq!(code, "duplicate_email"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn delete_and_restore_keep_the_profile() {
        let mut d = doc();
        let c = transition_user(&d, "alice", UserTransition::Delete, 2000).unwrap();
        apply(&mut d, c);
        assert_eq!(d.users["alice"].user.status, UserStatus::Deleted);
        assert_eq!(d.users["alice"].user.session_epoch, 2000);
        let c = transition_user(&d, "alice", UserTransition::Restore, 3000).unwrap();
        apply(&mut d, c);
        let u = &d.users["alice"].user;
        assert_eq!(
            (u.status, u.name.as_str(), u.email.as_str()),
            (UserStatus::Active, "Alice Adams", "alice@femo.example")
        );
    }

    #[test]
    fn field_errors_name_the_fields() {
        let d = doc();
        let req = AssignmentCreate {
            user: Some("nobody".into()),
            group: None,
            role: "nope".into(),
            scope: "mars".into(),
            expires_at: Some(1),
        };
        match create_assignment(&d, &req, "dana", 5).unwrap_err() {
            RuleError::Invalid(f) => {
                let names: Vec<&str> = f.iter().map(|x| x.field.as_str()).collect();
                assert_eq!(names, ["user", "role", "scope", "expires_at"]);
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn builtins_are_read_only_and_roles_in_use_stay() {
        let d = doc();
        assert!(matches!(
            update_role(&d, "viewer", &RolePatch::default()),
            Err(RuleError::Conflict {
                code: "read_only",
                ..
            })
        ));
        assert!(matches!(
            delete_role(&d, "machine-operator"),
            Err(RuleError::Conflict { code: "in_use", .. })
        ));
    }

    #[test]
    fn deleting_a_group_removes_its_assignments() {
        let mut d = doc();
        let before = d.assignments.len();
        let c = delete_group(&d, "auditors").unwrap();
        apply(&mut d, c);
        assert_eq!(d.assignments.len(), before - 1);
    }
}
