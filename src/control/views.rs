//! Read models of the management API, beside the write rules: the JSON views of tenants and
//! entities, the user overview, and list filtering, sorting and paging driven by typed queries.
//! The HTTP layer parses a request's query string once into these queries (refusing bad values)
//! and answers what these functions return.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::doc::{json as to_json, PluginRow, TenantDoc, UserRow};
use super::{rules, ControlError, ControlPlane};
use crate::model::{is_builtin_role, Part, Principal, Rbac, UserKind, UserStatus, BUILTIN_ROLES};
use crate::store::{Commit, CommitWindow, Kind, LogQuery};

/// Largest page a list endpoint returns.
pub const MAX_PAGE: usize = 1000;
/// Page size (and audit limit) when the request names none.
pub const DEFAULT_PAGE: usize = 50;

/// One page of a list: `page_size` items from the `page_token` offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    pub offset: usize,
    pub size: usize,
}

impl Default for PageQuery {
    fn default() -> PageQuery {
        PageQuery {
            offset: 0,
            size: DEFAULT_PAGE,
        }
    }
}

/// Which users a listing keeps by status (deleted users are governed by `include_deleted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    All,
    Active,
    Inactive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserSort {
    #[default]
    Name,
    Email,
    Created,
    LastLogin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// A user listing (per tenant or platform-wide).
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Case-insensitive substring of name or email.
    pub q: Option<String>,
    pub status: StatusFilter,
    pub include_deleted: bool,
    pub sort: UserSort,
    pub order: Order,
    pub page: PageQuery,
}

/// A node listing.
#[derive(Debug, Clone, Default)]
pub struct NodeQuery {
    pub kind: Option<String>,
    pub parent: Option<String>,
    pub page: PageQuery,
}

/// How an assignment listing treats expired assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiredFilter {
    #[default]
    Include,
    Exclude,
    Only,
}

/// An assignment listing.
#[derive(Debug, Clone, Default)]
pub struct AssignmentQuery {
    pub role: Option<String>,
    pub scope: Option<String>,
    pub scope_kind: Option<String>,
    pub group: Option<String>,
    pub user: Option<String>,
    /// With `user`: also the assignments of the groups the user is a member of.
    pub include_groups: bool,
    pub expired: ExpiredFilter,
    pub page: PageQuery,
}

/// A listing of one of a tenant's collections.
#[derive(Debug, Clone)]
pub enum ListQuery {
    Nodes(NodeQuery),
    Users(UserQuery),
    Groups(PageQuery),
    Roles(PageQuery),
    Assignments(AssignmentQuery),
    Plugins(PageQuery),
    NotificationRules(PageQuery),
}

/// A tenant's audit log: the store's log query (`tenant` is set by [`audit`]; `limit`, the
/// entries per answer, is 1..=[`MAX_PAGE`]).
pub type AuditQuery = LogQuery;

/// `{"items","total","next_page_token","revision"}` for one page of `items`.
pub fn paged(items: Vec<Value>, p: &PageQuery, revision: u64) -> Value {
    let total = items.len();
    let end = p.offset.saturating_add(p.size).min(total);
    let slice: Vec<Value> = items.into_iter().skip(p.offset).take(p.size).collect();
    let next = (end < total).then(|| end.to_string());
    json!({ "items": slice, "total": total, "next_page_token": next, "revision": revision })
}

/// The entity's JSON with its `etag` (the revision that last wrote it).
fn with_rev(mut v: Value, rev: u64) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("etag".into(), Value::String(format!("\"{rev}\"")));
    }
    v
}

/// A tenant's settings with its revision and entity counts.
pub fn tenant_summary(d: &TenantDoc) -> Value {
    let mut v = d.settings.as_ref().map(to_json).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("revision".into(), json!(d.revision));
        m.insert(
            "counts".into(),
            json!({
                "nodes": d.nodes.len(), "roles": d.roles.len() + BUILTIN_ROLES.len(),
                "users": d.users.values().filter(|u| u.user.status != UserStatus::Deleted).count(),
                "groups": d.groups.len(), "assignments": d.assignments.len(),
            }),
        );
    }
    v
}

/// A node with its path from the root and its number of children.
pub fn node_json(d: &TenantDoc, id: &str) -> Option<Value> {
    let n = d.nodes.get(id)?;
    let mut path = vec![n.id.clone()];
    let mut cur = n.parent.clone();
    while let Some(c) = cur {
        if path.len() > d.nodes.len() {
            break;
        }
        path.push(c.clone());
        cur = d.nodes.get(&c).and_then(|x| x.parent.clone());
    }
    path.reverse();
    let children = d
        .nodes
        .values()
        .filter(|x| x.parent.as_deref() == Some(id))
        .count();
    let mut v = to_json(n);
    if let Value::Object(m) = &mut v {
        m.insert("path".into(), json!(path));
        m.insert("children".into(), json!(children));
    }
    Some(with_rev(v, d.rev_of(Kind::Node, id)))
}

/// A role (built-in or the tenant's); `detail` adds permissions by resource and the holders.
pub fn role_json(d: &TenantDoc, id: &str, detail: bool) -> Option<Value> {
    let (role, builtin) = if is_builtin_role(id) {
        (crate::model::builtin_role(id)?, true)
    } else {
        (d.roles.get(id)?.clone(), false)
    };
    let mut v = to_json(&role);
    if let Value::Object(m) = &mut v {
        m.insert("builtin".into(), json!(builtin));
        // Every role says the tier it needs and whether the tenant's tier locks it.
        let rbac = d.settings.as_ref().map_or(Rbac::Enterprise, |s| s.rbac);
        m.insert("tier".into(), json!(role.tier()));
        m.insert("locked".into(), json!(role.locked_in(rbac)));
        let default = d.settings.as_ref().and_then(|s| s.default_role.as_deref());
        m.insert("default".into(), json!(default == Some(id)));
        if detail {
            let mut by_res: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for p in &role.permissions {
                let res = match &p.resource {
                    Part::Any => "*".to_string(),
                    Part::Name(n) => n.clone(),
                };
                let act = match &p.action {
                    Part::Any => "*".to_string(),
                    Part::Name(n) => n.clone(),
                };
                by_res.entry(res).or_default().push(act);
            }
            m.insert("permissions_by_resource".into(), json!(by_res));
            let mut holders = Vec::new();
            for a in d.assignments.values().filter(|a| a.assignment.role == id) {
                match &a.assignment.principal {
                    Principal::User(u) => holders
                        .push(json!({"user": u, "via": "direct", "scope": a.assignment.scope})),
                    Principal::Group(g) => {
                        for mbr in d.groups.get(g).map(|g| g.members.as_slice()).unwrap_or(&[]) {
                            holders.push(json!({"user": mbr, "via": format!("group:{g}"), "scope": a.assignment.scope}));
                        }
                    }
                }
            }
            m.insert("holders".into(), json!(holders));
        }
    }
    Some(with_rev(
        v,
        if builtin { 0 } else { d.rev_of(Kind::Role, id) },
    ))
}

/// A user with the groups it is a member of.
pub fn user_json(d: &TenantDoc, u: &UserRow) -> Value {
    let mut v = to_json(u);
    if let Value::Object(m) = &mut v {
        let groups: Vec<&str> = d
            .groups
            .values()
            .filter(|g| g.members.iter().any(|x| x == &u.user.id))
            .map(|g| g.id.as_str())
            .collect();
        m.insert("groups".into(), json!(groups));
    }
    with_rev(v, d.rev_of(Kind::User, &u.user.id))
}

/// An assignment with the kind of its scope and whether it has expired at `now`.
pub fn assignment_json(d: &TenantDoc, id: &str, now: i64) -> Option<Value> {
    let a = d.assignments.get(id)?;
    let mut v = to_json(a);
    if let Value::Object(m) = &mut v {
        let kind = d.nodes.get(&a.assignment.scope).map(|n| n.kind.clone());
        m.insert("scope_kind".into(), json!(kind));
        let exp = a.assignment.expires_at.is_some_and(|e| e <= now);
        m.insert("expired".into(), json!(exp));
    }
    Some(with_rev(v, d.rev_of(Kind::Assignment, id)))
}

fn group_json(d: &TenantDoc, id: &str) -> Option<Value> {
    let g = d.groups.get(id)?;
    Some(with_rev(to_json(g), d.rev_of(Kind::Group, id)))
}

fn notification_rule_json(d: &TenantDoc, id: &str) -> Option<Value> {
    let r = d.notification_rules.get(id)?;
    Some(with_rev(to_json(r), d.rev_of(Kind::NotificationRule, id)))
}

/// Whom a notification to `groups` reaches: the active users who are members of the active
/// ones among them, each once (`id`, `name`, `email`), sorted by name then id.
pub fn recipients(d: &TenantDoc, groups: &[String], page: &PageQuery) -> Value {
    let mut ids: Vec<&str> = groups
        .iter()
        .filter_map(|g| d.groups.get(g))
        .filter(|g| g.status == crate::model::GroupStatus::Active)
        .flat_map(|g| g.members.iter().map(String::as_str))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut users: Vec<&UserRow> = ids
        .into_iter()
        .filter_map(|id| d.users.get(id))
        .filter(|u| u.user.status == UserStatus::Active)
        .collect();
    users.sort_by(|a, b| {
        a.user
            .name
            .to_lowercase()
            .cmp(&b.user.name.to_lowercase())
            .then(a.user.id.cmp(&b.user.id))
    });
    let items = users
        .into_iter()
        .map(|u| json!({"id": u.user.id, "name": u.user.name, "email": u.user.email}))
        .collect();
    paged(items, page, d.revision)
}

/// The recipients of group `id` (see [`recipients`]); `None` when there is no such group.
pub fn group_recipients(d: &TenantDoc, id: &str, page: &PageQuery) -> Option<Value> {
    d.groups.get(id)?;
    Some(recipients(d, &[id.to_string()], page))
}

/// The recipients of notification rule `id`: the union over its groups, deduplicated.
pub fn rule_recipients(d: &TenantDoc, id: &str, page: &PageQuery) -> Option<Value> {
    let r = d.notification_rules.get(id)?;
    let mut v = recipients(d, &r.groups, page);
    if let Value::Object(m) = &mut v {
        m.insert("event".into(), json!(r.event));
        m.insert("groups".into(), json!(r.groups));
    }
    Some(v)
}

fn plugin_json(d: &TenantDoc, id: &str) -> Option<Value> {
    let p = d.plugins.get(id)?;
    Some(with_rev(
        rules::plugin_summary(d, p),
        d.rev_of(Kind::Plugin, id),
    ))
}

/// One entity of a collection, as `GET …/{collection}/{id}` answers it.
pub fn entity(d: &TenantDoc, kind: Kind, id: &str, now: i64) -> Option<Value> {
    match kind {
        Kind::Node => node_json(d, id),
        Kind::User => d.users.get(id).map(|u| user_json(d, u)),
        Kind::Group => group_json(d, id),
        Kind::Role => role_json(d, id, true),
        Kind::Assignment => assignment_json(d, id, now),
        Kind::Plugin => plugin_json(d, id),
        Kind::NotificationRule => notification_rule_json(d, id),
        _ => None,
    }
}

/// Counts for the users page: live users, administrators, active, new in the last 7 days.
pub fn user_overview(d: &TenantDoc, now: i64) -> Value {
    let live: Vec<&UserRow> = d
        .users
        .values()
        .filter(|u| u.user.status != UserStatus::Deleted)
        .collect();
    let admins = live
        .iter()
        .filter(|u| {
            matches!(u.user.kind, UserKind::Owner | UserKind::Admin)
                || d.assignments.values().any(|a| {
                    a.assignment.role == "administrator"
                        && a.assignment.principal == Principal::User(u.user.id.clone())
                })
        })
        .count();
    json!({
        "total": live.len(),
        "administrators": admins,
        "active": live.iter().filter(|u| u.user.status == UserStatus::Active).count(),
        "new_last_7_days": live.iter().filter(|u| u.created_at > now - 7 * 86_400).count(),
    })
}

fn contains_ci(hay: &str, needle_lc: &str) -> bool {
    hay.to_ascii_lowercase().contains(needle_lc)
}

/// Filters and sorts users per the query (shared by the tenant and platform listings).
fn select_users<'a, T>(users: Vec<(T, &'a UserRow)>, q: &UserQuery) -> Vec<(T, &'a UserRow)> {
    let needle = q.q.as_ref().map(|s| s.to_ascii_lowercase());
    let mut out: Vec<(T, &UserRow)> = users
        .into_iter()
        .filter(|(_, u)| q.include_deleted || u.user.status != UserStatus::Deleted)
        .filter(|(_, u)| match q.status {
            StatusFilter::Active => u.user.status == UserStatus::Active,
            StatusFilter::Inactive => u.user.status == UserStatus::Inactive,
            StatusFilter::All => true,
        })
        .filter(|(_, u)| {
            needle
                .as_deref()
                .is_none_or(|n| contains_ci(&u.user.name, n) || contains_ci(&u.user.email, n))
        })
        .collect();
    match q.sort {
        UserSort::Name => out.sort_by(|(_, a), (_, b)| {
            a.user
                .name
                .to_lowercase()
                .cmp(&b.user.name.to_lowercase())
                .then(a.user.id.cmp(&b.user.id))
        }),
        UserSort::Email => out.sort_by(|(_, a), (_, b)| {
            a.user
                .email
                .to_lowercase()
                .cmp(&b.user.email.to_lowercase())
        }),
        UserSort::Created => out.sort_by(|(_, a), (_, b)| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.user.id.cmp(&b.user.id))
        }),
        UserSort::LastLogin => out.sort_by(|(_, a), (_, b)| {
            a.last_login_at
                .cmp(&b.last_login_at)
                .then(a.user.id.cmp(&b.user.id))
        }),
    }
    if q.order == Order::Desc {
        out.reverse();
    }
    out
}

fn assignments(d: &TenantDoc, q: &AssignmentQuery, now: i64) -> Vec<Value> {
    let groups_of_user: Vec<&str> = match &q.user {
        Some(u) if q.include_groups => d
            .groups
            .values()
            .filter(|g| g.members.iter().any(|m| m == u))
            .map(|g| g.id.as_str())
            .collect(),
        _ => Vec::new(),
    };
    d.assignments
        .values()
        .filter(|a| q.role.as_ref().is_none_or(|r| &a.assignment.role == r))
        .filter(|a| q.scope.as_ref().is_none_or(|s| &a.assignment.scope == s))
        .filter(|a| {
            q.scope_kind.as_ref().is_none_or(|k| {
                d.nodes
                    .get(&a.assignment.scope)
                    .is_some_and(|n| &n.kind == k)
            })
        })
        .filter(|a| {
            q.group
                .as_ref()
                .is_none_or(|g| a.assignment.principal == Principal::Group(g.clone()))
        })
        .filter(|a| {
            q.user
                .as_ref()
                .is_none_or(|u| match &a.assignment.principal {
                    Principal::User(x) => x == u,
                    Principal::Group(g) => groups_of_user.contains(&g.as_str()),
                })
        })
        .filter(|a| {
            let ex = a.assignment.expires_at.is_some_and(|e| e <= now);
            match q.expired {
                ExpiredFilter::Exclude => !ex,
                ExpiredFilter::Only => ex,
                ExpiredFilter::Include => true,
            }
        })
        .filter_map(|a| assignment_json(d, &a.id, now))
        .collect()
}

/// One page of a tenant's collection, filtered and sorted per the query.
/// The ids a caller may see in a list (users for `users`, nodes for `nodes`, scope nodes for
/// `assignments`); `None`: everything.
pub type Visible = Option<std::collections::HashSet<String>>;

/// One page of a collection, as far as `visible` lets the caller see it (totals and pages count
/// only what is visible).
pub fn list(d: &TenantDoc, q: &ListQuery, now: i64, visible: &Visible) -> Value {
    let sees = |id: &str| visible.as_ref().is_none_or(|v| v.contains(id));
    let (items, page): (Vec<Value>, &PageQuery) = match q {
        ListQuery::Nodes(q) => (
            d.nodes
                .values()
                .filter(|n| sees(&n.id))
                .filter(|n| q.kind.as_ref().is_none_or(|k| &n.kind == k))
                .filter(|n| {
                    q.parent
                        .as_ref()
                        .is_none_or(|pa| n.parent.as_deref() == Some(pa.as_str()))
                })
                .filter_map(|n| node_json(d, &n.id))
                .collect(),
            &q.page,
        ),
        ListQuery::Users(q) => (
            select_users(
                d.users
                    .values()
                    .filter(|u| sees(&u.user.id))
                    .map(|u| ((), u))
                    .collect(),
                q,
            )
            .into_iter()
            .map(|(_, u)| user_json(d, u))
            .collect(),
            &q.page,
        ),
        ListQuery::Groups(p) => (
            d.groups.keys().filter_map(|id| group_json(d, id)).collect(),
            p,
        ),
        ListQuery::Roles(p) => (
            BUILTIN_ROLES
                .iter()
                .map(|r| r.0.to_string())
                .chain(d.roles.keys().cloned())
                .filter_map(|id| role_json(d, &id, false))
                .collect(),
            p,
        ),
        ListQuery::Plugins(p) => (
            d.plugins
                .keys()
                .filter_map(|id| plugin_json(d, id))
                .collect(),
            p,
        ),
        ListQuery::Assignments(q) => (
            assignments(d, q, now)
                .into_iter()
                .filter(|a| a["scope"].as_str().is_some_and(sees))
                .collect(),
            &q.page,
        ),
        ListQuery::NotificationRules(p) => (
            d.notification_rules
                .keys()
                .filter_map(|id| notification_rule_json(d, id))
                .collect(),
            p,
        ),
    };
    paged(items, page, d.revision)
}

/// One page of the summaries of every tenant.
pub async fn tenants(cp: &ControlPlane, p: &PageQuery) -> Value {
    let mut items = Vec::new();
    for id in cp.tenant_ids() {
        if let Ok(v) = cp.read(&id, tenant_summary).await {
            items.push(v);
        }
    }
    paged(items, p, 0)
}

/// One page of the users of every tenant (each with its `tenant`).
pub async fn platform_users(cp: &ControlPlane, q: &UserQuery) -> Value {
    let mut all: Vec<(String, UserRow)> = Vec::new();
    for t in cp.tenant_ids() {
        if let Ok(users) = cp
            .read(&t, |d| d.users.values().cloned().collect::<Vec<_>>())
            .await
        {
            all.extend(users.into_iter().map(|u| (t.clone(), u)));
        }
    }
    let selected = select_users(all.iter().map(|(t, u)| (t.as_str(), u)).collect(), q);
    let items: Vec<Value> = selected
        .into_iter()
        .map(|(tenant, u)| {
            let mut v = to_json(u);
            if let Value::Object(m) = &mut v {
                m.insert("tenant".into(), json!(tenant));
            }
            v
        })
        .collect();
    paged(items, &q.page, 0)
}

/// Row changes an audit list entry shows at most; the rest are paged by [`audit_changes`].
pub const AUDIT_CHANGES_SHOWN: usize = 20;

/// One row change of an audit entry (plugin modules shown by hash and size).
fn audit_change(o: &crate::store::RowOp) -> Value {
    let show = |v: &Value| {
        if o.kind == Kind::Plugin {
            PluginRow::summary(v)
        } else {
            v.clone()
        }
    };
    json!({
        "kind": o.kind, "id": o.id,
        "before": o.before.as_ref().map(show),
        "after": o.value.as_ref().map(show),
    })
}

/// The header of an audit entry: revision, actor, time, action, target and number of changes.
fn audit_header(c: &Commit, op_count: usize) -> serde_json::Map<String, Value> {
    let v = json!({
        "revision": c.revision, "actor": c.actor, "at": crate::model::format_timestamp(c.at_ms / 1000), "at_ms": c.at_ms,
        "action": c.action, "target": c.target, "change_count": op_count,
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// One audit list entry: the commit's header and its first [`AUDIT_CHANGES_SHOWN`] row changes,
/// with `changes_truncated` when there are more (`w` holds at least those).
pub fn audit_entry(w: &CommitWindow) -> Value {
    let mut m = audit_header(&w.commit, w.op_count);
    let shown: Vec<Value> = w
        .commit
        .ops
        .iter()
        .take(AUDIT_CHANGES_SHOWN)
        .map(audit_change)
        .collect();
    m.insert("changes".into(), Value::Array(shown));
    m.insert(
        "changes_truncated".into(),
        json!(w.op_count > AUDIT_CHANGES_SHOWN),
    );
    Value::Object(m)
}

/// A tenant's audit log per the query: `{"items","next_after_revision"}`.
pub async fn audit(cp: &ControlPlane, tenant: &str, q: &AuditQuery) -> Result<Value, ControlError> {
    cp.read(tenant, |_| ()).await?;
    // One more than asked: whether there is a next page.
    let query = LogQuery {
        tenant: Some(tenant.to_string()),
        limit: q.limit.saturating_add(1),
        ..q.clone()
    };
    // Only the changes an entry shows are decoded (by engines that can skip the others).
    let mut commits = cp
        .store()
        .log_window(&query, 0, AUDIT_CHANGES_SHOWN)
        .await?;
    let more = commits.len() > q.limit;
    commits.truncate(q.limit);
    let next = if more {
        commits.last().map(|w| w.commit.revision.to_string())
    } else {
        None
    };
    let items: Vec<Value> = commits.iter().map(audit_entry).collect();
    Ok(json!({"items": items, "next_after_revision": next}))
}

/// Extra entries read per tenant for the cross-tenant page, beyond the limit: entries at the
/// cursor's millisecond that the cursor already passed.
const PLATFORM_AUDIT_SLACK: usize = 64;

/// The audit logs of every tenant (or of `tenants`), merged in time order: entries sorted by
/// (time, tenant, revision), each with its `tenant`, after the cursor `after`
/// (`<at_ms>:<tenant>:<revision>`, the previous page's `next_after`).
pub async fn platform_audit(
    cp: &ControlPlane,
    q: &AuditQuery,
    tenants: Option<&str>,
    after: Option<(i64, String, u64)>,
) -> Result<Value, ControlError> {
    let ids: Vec<String> = match tenants {
        Some(t) => vec![t.to_string()],
        None => cp.tenant_ids(),
    };
    let mut all: Vec<(i64, String, u64, Value)> = Vec::new();
    for t in ids {
        let query = LogQuery {
            tenant: Some(t.clone()),
            after_revision: None,
            since_ms: match (&after, q.since_ms) {
                (Some((at, ..)), Some(s)) => Some(s.max(*at)),
                (Some((at, ..)), None) => Some(*at),
                (None, s) => s,
            },
            limit: q
                .limit
                .saturating_add(1)
                .saturating_add(PLATFORM_AUDIT_SLACK),
            ..q.clone()
        };
        let commits = match cp.store().log_window(&query, 0, AUDIT_CHANGES_SHOWN).await {
            Ok(c) => c,
            Err(e) => return Err(e.into()),
        };
        for w in &commits {
            let key = (w.commit.at_ms, t.clone(), w.commit.revision);
            if after
                .as_ref()
                .is_some_and(|(a, at, ar)| (key.0, &key.1, key.2) <= (*a, at, *ar))
            {
                continue;
            }
            let mut v = audit_entry(w);
            if let Value::Object(m) = &mut v {
                m.insert("tenant".into(), json!(t));
            }
            all.push((key.0, key.1, key.2, v));
        }
    }
    all.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let more = all.len() > q.limit;
    all.truncate(q.limit);
    let next = if more {
        all.last().map(|(at, t, r, _)| format!("{at}:{t}:{r}"))
    } else {
        None
    };
    let items: Vec<Value> = all.into_iter().map(|e| e.3).collect();
    Ok(json!({"items": items, "next_after": next}))
}

/// One commit of a tenant's audit log with one page of its row changes:
/// the entry's header and `{"changes","next_page_token"}`.
pub async fn audit_changes(
    cp: &ControlPlane,
    tenant: &str,
    revision: u64,
    page: &PageQuery,
) -> Result<Value, ControlError> {
    cp.read(tenant, |_| ()).await?;
    let query = LogQuery {
        tenant: Some(tenant.to_string()),
        after_revision: Some(revision.saturating_sub(1)),
        limit: 1,
        ..LogQuery::default()
    };
    let w = cp
        .store()
        .log_window(&query, page.offset, page.size)
        .await?
        .into_iter()
        .find(|w| w.commit.revision == revision && revision > 0)
        .ok_or_else(|| {
            ControlError::Rule(rules::RuleError::not_found(
                "audit entry",
                &revision.to_string(),
            ))
        })?;
    let total = w.op_count;
    let end = page.offset.saturating_add(page.size).min(total);
    let changes: Vec<Value> = w.commit.ops.iter().map(audit_change).collect();
    let mut m = audit_header(&w.commit, total);
    m.insert("changes".into(), Value::Array(changes));
    m.insert(
        "next_page_token".into(),
        json!((end < total).then(|| end.to_string())),
    );
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::User;

    fn user(id: &str, name: &str, status: UserStatus, created_at: i64) -> UserRow {
        UserRow {
            user: User {
                id: id.into(),
                email: format!("{id}@x.example"),
                name: name.into(),
                status,
                kind: UserKind::Member,
                session_epoch: 0,
                first_name: None,
                last_name: None,
                logout: None,
                scope: None,
            },
            created_at,
            updated_at: created_at,
            last_login_at: None,
        }
    }

    fn doc() -> TenantDoc {
        let mut d = TenantDoc::default();
        for u in [
            user("b", "bea", UserStatus::Active, 3),
            user("a", "Al", UserStatus::Inactive, 2),
            user("c", "cy", UserStatus::Deleted, 1),
        ] {
            d.users.insert(u.user.id.clone(), u);
        }
        d.revision = 7;
        d
    }

    fn ids(v: &Value) -> Vec<&str> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn user_listing_filters_sorts_and_pages() {
        let d = doc();
        let list_users = |q: UserQuery| list(&d, &ListQuery::Users(q), 0, &None);
        let v = list_users(UserQuery::default());
        assert_eq!(
            (ids(&v), &v["total"], &v["revision"]),
            (vec!["a", "b"], &json!(2), &json!(7))
        );
        let v = list_users(UserQuery {
            include_deleted: true,
            sort: UserSort::Created,
            order: Order::Desc,
            ..UserQuery::default()
        });
        assert_eq!(ids(&v), ["b", "a", "c"]);
        let v = list_users(UserQuery {
            status: StatusFilter::Active,
            ..UserQuery::default()
        });
        assert_eq!(ids(&v), ["b"]);
        let v = list_users(UserQuery {
            q: Some("BE".into()),
            ..UserQuery::default()
        });
        assert_eq!(ids(&v), ["b"]);
        let v = list_users(UserQuery {
            include_deleted: true,
            page: PageQuery { offset: 1, size: 1 },
            ..UserQuery::default()
        });
        assert_eq!((ids(&v), &v["next_page_token"]), (vec!["b"], &json!("2")));
        assert_eq!(v["items"][0]["etag"], "\"0\"");
        assert!(v["items"][0].get("_rev").is_none());
    }
}
