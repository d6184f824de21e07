//! Portcullis tenant → Cedar (`cedar-policy` 4.x): entities + one policy set per tenant.
//!
//! Dev-only (package `portcullis-peers`); never part of the product.
//!
//! Translation (see `bench/peers/README.md` for the reasoning):
//! - Entities: `Tenant::"<id>"` {status, rbac}; `Node::"<id>"` {kind} in its parent node;
//!   `User::"<id>"` {status, kind} in every `Group::"<id>"` it belongs to; `Group` {status}.
//! - Actions: `Action::"res:act"` for every concrete action of the vocabulary, each a member of
//!   the action groups `Action::"res:*"`, `Action::"*:act"`, `Action::"*"` (Portcullis wildcards)
//!   and `Action::"concrete"` (marks declared, well-formed actions).
//! - One `permit` per assignment: `principal == User` (or `in Group`, plus `when` the group is
//!   active), `action in [<the role's permissions as actions/groups>]`,
//!   `resource in Node::"<scope>"`, `when { context.now < <expires_at> }` if it expires.
//! - Tenant-wide: `forbid` when the tenant is suspended; `forbid` unless the user is active;
//!   `forbid` guests unless `action in Action::"*:read"`; `forbid` unless the action is a declared
//!   concrete action; a `permit` for `rbac: none` (any existing active user, any existing node).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::{anyhow, Context as _};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicySet,
    Request, RestrictedExpression,
};
use portcullis::model::{
    split_action, GroupStatus, Part, Principal, Rbac, Tenant, TenantStatus, UserKind, UserStatus,
};
use serde_json::{json, Value};

/// A Cedar string literal (ids are restricted in Portcullis, but quote defensively).
fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn user_status(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "active",
        UserStatus::Inactive => "inactive",
        UserStatus::Deleted => "deleted",
    }
}

fn user_kind(k: UserKind) -> &'static str {
    match k {
        UserKind::Owner => "owner",
        UserKind::Admin => "admin",
        UserKind::Member => "member",
        UserKind::Guest => "guest",
    }
}

/// The declared action vocabulary: every concrete permission named by a role plus `extra`
/// (the application's `resource:action` list; Cedar's action set is closed, see README).
pub fn vocabulary<S: AsRef<str>>(t: &Tenant, extra: &[S]) -> BTreeSet<String> {
    let mut v: BTreeSet<String> = extra
        .iter()
        .map(|s| s.as_ref().to_string())
        .filter(|s| split_action(s).is_some())
        .collect();
    for r in t.all_roles() {
        for p in &r.permissions {
            if let (Part::Name(res), Part::Name(act)) = (&p.resource, &p.action) {
                v.insert(format!("{res}:{act}"));
            }
        }
    }
    v
}

/// The Cedar policy text of a tenant.
pub fn policies(t: &Tenant) -> String {
    let tenant = format!("Tenant::{}", lit(&t.id));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "// tenant-wide rules\n\
         forbid (principal, action, resource) when {{ {tenant}.status == \"suspended\" }};\n\
         forbid (principal, action, resource) unless {{ principal.status == \"active\" }};\n\
         forbid (principal, action, resource) when {{ principal.kind == \"guest\" }} \
         unless {{ action in Action::\"*:read\" }};\n\
         forbid (principal, action, resource) unless {{ action in Action::\"concrete\" && \
         action != Action::\"concrete\" }};\n\
         permit (principal, action, resource) when {{ {tenant}.rbac == \"none\" && \
         principal has status && resource has kind }};\n\
         // one permit per assignment"
    );
    let roles = t.all_roles();
    for a in &t.assignments {
        let Some(role) = roles.iter().find(|r| r.id == a.role) else {
            continue;
        };
        if role.permissions.is_empty() {
            continue; // grants nothing; `action in []` would never match
        }
        let actions: Vec<String> = role
            .permissions
            .iter()
            .map(|p| format!("Action::{}", lit(&p.to_string())))
            .collect();
        let (principal, mut conds) = match &a.principal {
            Principal::User(u) => (format!("principal == User::{}", lit(u)), Vec::new()),
            Principal::Group(g) => (
                format!("principal in Group::{}", lit(g)),
                vec![format!("Group::{}.status == \"active\"", lit(g))],
            ),
        };
        if let Some(exp) = a.expires_at {
            conds.push(format!("context.now < {exp}"));
        }
        let _ = write!(
            out,
            "permit ({principal}, action in [{}], resource in Node::{})",
            actions.join(", "),
            lit(&a.scope)
        );
        if !conds.is_empty() {
            let _ = write!(out, " when {{ {} }}", conds.join(" && "));
        }
        out.push_str(";\n");
    }
    out
}

/// The Cedar entities (JSON form) of a tenant, with the action hierarchy of `vocab`.
pub fn entities(t: &Tenant, vocab: &BTreeSet<String>) -> Value {
    let mut es: Vec<Value> = Vec::with_capacity(t.nodes.len() + t.users.len() + vocab.len() + 8);
    es.push(json!({
        "uid": {"type": "Tenant", "id": t.id},
        "attrs": {
            "status": match t.status { TenantStatus::Active => "active", TenantStatus::Suspended => "suspended" },
            "rbac": match t.rbac { Rbac::None => "none", Rbac::Basic => "basic", Rbac::Enterprise => "enterprise" },
        },
        "parents": [],
    }));
    for n in &t.nodes {
        let parents: Vec<Value> = n
            .parent
            .iter()
            .map(|p| json!({"type": "Node", "id": p}))
            .collect();
        es.push(json!({"uid": {"type": "Node", "id": n.id}, "attrs": {"kind": n.kind}, "parents": parents}));
    }
    let mut groups_of: std::collections::HashMap<&str, Vec<Value>> =
        std::collections::HashMap::new();
    for g in &t.groups {
        es.push(json!({
            "uid": {"type": "Group", "id": g.id},
            "attrs": {"status": match g.status { GroupStatus::Active => "active", GroupStatus::Inactive => "inactive" }},
            "parents": [],
        }));
        for m in &g.members {
            groups_of
                .entry(m.as_str())
                .or_default()
                .push(json!({"type": "Group", "id": g.id}));
        }
    }
    for u in &t.users {
        es.push(json!({
            "uid": {"type": "User", "id": u.id},
            "attrs": {"status": user_status(u.status), "kind": user_kind(u.kind)},
            "parents": groups_of.remove(u.id.as_str()).unwrap_or_default(),
        }));
    }
    let mut groups: BTreeSet<String> = BTreeSet::new();
    groups.insert("*".into());
    groups.insert("concrete".into());
    for a in vocab {
        if let Some((res, act)) = split_action(a) {
            let parents = [
                format!("{res}:*"),
                format!("*:{act}"),
                "*".to_string(),
                "concrete".to_string(),
            ];
            groups.insert(parents[0].clone());
            groups.insert(parents[1].clone());
            let parents: Vec<Value> = parents
                .iter()
                .map(|p| json!({"type": "Action", "id": p}))
                .collect();
            es.push(json!({"uid": {"type": "Action", "id": a}, "attrs": {}, "parents": parents}));
        }
    }
    for g in groups {
        es.push(json!({"uid": {"type": "Action", "id": g}, "attrs": {}, "parents": []}));
    }
    Value::Array(es)
}

/// A tenant loaded into Cedar.
pub struct CedarWorld {
    pub policies: PolicySet,
    pub entities: Entities,
    authorizer: Authorizer,
    user_t: EntityTypeName,
    action_t: EntityTypeName,
    node_t: EntityTypeName,
}

impl CedarWorld {
    /// Translates and loads `t`; `extra_actions` is the application's action vocabulary.
    pub fn load<S: AsRef<str>>(t: &Tenant, extra_actions: &[S]) -> anyhow::Result<CedarWorld> {
        let vocab = vocabulary(t, extra_actions);
        let text = policies(t);
        let policies =
            PolicySet::from_str(&text).map_err(|e| anyhow!("cedar policies: {e:?}"))?;
        let entities = Entities::from_json_value(entities(t, &vocab), None)
            .context("cedar entities")?;
        Ok(CedarWorld {
            policies,
            entities,
            authorizer: Authorizer::new(),
            user_t: EntityTypeName::from_str("User")?,
            action_t: EntityTypeName::from_str("Action")?,
            node_t: EntityTypeName::from_str("Node")?,
        })
    }

    /// The Cedar decision for one Portcullis request at `now`.
    pub fn check(&self, subject: &str, action: &str, resource: &str, now: i64) -> bool {
        let p = EntityUid::from_type_name_and_id(self.user_t.clone(), EntityId::new(subject));
        let a = EntityUid::from_type_name_and_id(self.action_t.clone(), EntityId::new(action));
        let r = EntityUid::from_type_name_and_id(self.node_t.clone(), EntityId::new(resource));
        let Ok(ctx) = Context::from_pairs([("now".to_string(), RestrictedExpression::new_long(now))])
        else {
            return false;
        };
        let Ok(req) = Request::new(p, a, r, ctx, None) else {
            return false;
        };
        self.authorizer
            .is_authorized(&req, &self.policies, &self.entities)
            .decision()
            == Decision::Allow
    }
}
