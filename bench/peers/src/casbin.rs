//! Portcullis tenant → Casbin (`casbin` 2.x): an RBAC-with-domains model plus policy rows,
//! loaded through the in-memory adapter.
//!
//! Dev-only (package `portcullis-peers`); never part of the product.
//!
//! - Domain = tenant. `g` links users to their active groups (and to two marker roles:
//!   `kind:guest`, `rbac:none-active`); `g2` links every node to its parent (resource roles).
//! - One `p` row per (assignment, role permission): principal, tenant, scope node, the
//!   permission's resource and action parts (`*` allowed), and the expiry as a zero-padded
//!   20-digit string (compared as strings in the matcher, since Casbin values are strings).
//! - State Casbin has no place for is applied when the rows are written: inactive or deleted
//!   users and inactive groups get no rows/links, a suspended tenant gets no rows at all.
//! - The request translator (the PEP) splits `resource:action` and denies malformed actions
//!   before asking Casbin (Casbin has no input validation).

use std::collections::HashSet;

use anyhow::Context as _;
use casbin::prelude::*;
use portcullis::model::{
    split_action, GroupStatus, Part, Principal, Rbac, Tenant, TenantStatus, UserKind, UserStatus,
};

pub const MODEL: &str = r#"
[request_definition]
r = sub, dom, obj, res, act, now

[policy_definition]
p = sub, dom, obj, res, act, exp

[role_definition]
g = _, _, _
g2 = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (p.act == "*" || p.act == r.act) && (p.res == "*" || p.res == r.res) && r.dom == p.dom && g(r.sub, p.sub, r.dom) && r.now < p.exp && g2(r.obj, p.obj, r.dom) && (r.act == "read" || !g(r.sub, "kind:guest", r.dom))
"#;

const NEVER: &str = "99999999999999999999";

fn stamp(t: i64) -> String {
    format!("{:020}", t.max(0))
}

fn part(p: &Part) -> String {
    match p {
        Part::Any => "*".to_string(),
        Part::Name(n) => n.clone(),
    }
}

/// Policy rows: (`p` rows, `g` rows, `g2` rows).
#[allow(clippy::type_complexity)]
pub fn rules(t: &Tenant) -> (Vec<Vec<String>>, Vec<Vec<String>>, Vec<Vec<String>>) {
    let dom = t.id.clone();
    let mut p: Vec<Vec<String>> = Vec::new();
    let mut g: Vec<Vec<String>> = Vec::new();
    let mut g2: Vec<Vec<String>> = Vec::new();
    if t.status == TenantStatus::Suspended {
        return (p, g, g2);
    }
    for n in &t.nodes {
        if let Some(parent) = &n.parent {
            g2.push(vec![n.id.clone(), parent.clone(), dom.clone()]);
        }
    }
    let active: HashSet<&str> = t
        .users
        .iter()
        .filter(|u| u.status == UserStatus::Active)
        .map(|u| u.id.as_str())
        .collect();
    for u in &t.users {
        if u.status == UserStatus::Active && u.kind == UserKind::Guest {
            g.push(vec![format!("u:{}", u.id), "kind:guest".into(), dom.clone()]);
        }
    }
    for grp in &t.groups {
        if grp.status != GroupStatus::Active {
            continue;
        }
        for m in &grp.members {
            if active.contains(m.as_str()) {
                g.push(vec![format!("u:{m}"), format!("g:{}", grp.id), dom.clone()]);
            }
        }
    }
    if t.rbac == Rbac::None {
        for u in &active {
            g.push(vec![format!("u:{u}"), "rbac:none-active".into(), dom.clone()]);
        }
        for n in t.nodes.iter().filter(|n| n.parent.is_none()) {
            p.push(vec![
                "rbac:none-active".into(),
                dom.clone(),
                n.id.clone(),
                "*".into(),
                "*".into(),
                NEVER.into(),
            ]);
        }
        return (p, g, g2);
    }
    let roles = t.all_roles();
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    for a in &t.assignments {
        let sub = match &a.principal {
            Principal::User(u) if active.contains(u.as_str()) => format!("u:{u}"),
            Principal::User(_) => continue,
            Principal::Group(g) => format!("g:{g}"),
        };
        let Some(role) = roles.iter().find(|r| r.id == a.role) else {
            continue;
        };
        let exp = a.expires_at.map_or_else(|| NEVER.to_string(), stamp);
        for perm in &role.permissions {
            let row = vec![
                sub.clone(),
                dom.clone(),
                a.scope.clone(),
                part(&perm.resource),
                part(&perm.action),
                exp.clone(),
            ];
            if seen.insert(row.clone()) {
                p.push(row);
            }
        }
    }
    (p, g, g2)
}

/// A tenant loaded into a Casbin enforcer.
pub struct CasbinWorld {
    pub enforcer: Enforcer,
    dom: String,
    pub rows: usize,
}

impl CasbinWorld {
    pub async fn load(t: &Tenant) -> anyhow::Result<CasbinWorld> {
        let model = DefaultModel::from_str(MODEL).await.context("casbin model")?;
        let mut e = Enforcer::new(model, MemoryAdapter::default())
            .await
            .context("casbin enforcer")?;
        let (p, g, g2) = rules(t);
        let rows = p.len() + g.len() + g2.len();
        if !p.is_empty() {
            e.add_policies(p).await.context("casbin p rows")?;
        }
        if !g.is_empty() {
            e.add_named_grouping_policies("g", g)
                .await
                .context("casbin g rows")?;
        }
        if !g2.is_empty() {
            e.add_named_grouping_policies("g2", g2)
                .await
                .context("casbin g2 rows")?;
        }
        Ok(CasbinWorld {
            enforcer: e,
            dom: t.id.clone(),
            rows,
        })
    }

    pub fn check(&self, subject: &str, action: &str, resource: &str, now: i64) -> bool {
        let Some((res, act)) = split_action(action) else {
            return false;
        };
        self.enforcer
            .enforce((
                format!("u:{subject}"),
                self.dom.as_str(),
                resource,
                res,
                act,
                stamp(now),
            ))
            .unwrap_or(false)
    }
}
