//! Portcullis tenant → Rego for `regorus` (0.14.x): one fixed policy plus a data document.
//!
//! Dev-only (package `portcullis-peers`); never part of the product.
//!
//! - The policy is the decision rule, written once; the tenant is data: users (status, kind,
//!   groups), groups (active), every node's ancestor set (Rego has no recursion, so the
//!   hierarchy closure is computed when the data is written, as Cedar does for its entities),
//!   grants by principal, and each role's permission patterns as a set.
//! - Wildcards are matched by looking up the four patterns that can grant a concrete action
//!   (`res:act`, `res:*`, `*:act`, `*`) in the role's set.

use std::collections::{BTreeMap, HashMap};

use anyhow::anyhow;
use portcullis::model::{GroupStatus, Principal, Rbac, Tenant, TenantStatus, UserKind, UserStatus};
use regorus::{Engine, Value};
use serde_json::{json, Map};

pub const POLICY: &str = r#"
package portcullis

import rego.v1

default allow := false

user := data.users[input.subject]

parts := split(input.action, ":")

segment_ok(s) if {
	count(s) > 0
	count(s) <= 64
	not contains(s, "*")
	not contains(s, " ")
}

base_ok if {
	not data.tenant.suspended
	user.status == "active"
	count(parts) == 2
	segment_ok(parts[0])
	segment_ok(parts[1])
	data.ancestors[input.resource]
	guest_ok
}

guest_ok if user.kind != "guest"

guest_ok if parts[1] == "read"

role_grants(r) if data.roles[r][input.action]

role_grants(r) if data.roles[r][concat(":", [parts[0], "*"])]

role_grants(r) if data.roles[r][concat(":", ["*", parts[1]])]

role_grants(r) if data.roles[r]["*"]

live(g) if g.exp == null

live(g) if g.exp > input.now

grant_ok(g) if {
	data.ancestors[input.resource][g.scope]
	live(g)
	role_grants(g.role)
}

allow if {
	base_ok
	data.tenant.rbac == "none"
}

allow if {
	base_ok
	data.tenant.rbac != "none"
	some g in data.grants.users[input.subject]
	grant_ok(g)
}

allow if {
	base_ok
	data.tenant.rbac != "none"
	some gid in user.groups
	data.groups[gid].active
	some g in data.grants.groups[gid]
	grant_ok(g)
}
"#;

/// The data document of a tenant.
pub fn data(t: &Tenant) -> serde_json::Value {
    let parent: HashMap<&str, &str> = t
        .nodes
        .iter()
        .filter_map(|n| n.parent.as_deref().map(|p| (n.id.as_str(), p)))
        .collect();
    let mut ancestors = Map::new();
    for n in &t.nodes {
        let mut set = Map::new();
        let mut cur = Some(n.id.as_str());
        while let Some(c) = cur {
            if set.insert(c.to_string(), json!(true)).is_some() {
                break;
            }
            cur = parent.get(c).copied();
        }
        ancestors.insert(n.id.clone(), serde_json::Value::Object(set));
    }
    let mut groups_of: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut groups = Map::new();
    for g in &t.groups {
        groups.insert(
            g.id.clone(),
            json!({"active": g.status == GroupStatus::Active}),
        );
        for m in &g.members {
            groups_of.entry(m.as_str()).or_default().push(g.id.as_str());
        }
    }
    let mut users = Map::new();
    for u in &t.users {
        users.insert(
            u.id.clone(),
            json!({
                "status": match u.status { UserStatus::Active => "active", UserStatus::Inactive => "inactive", UserStatus::Deleted => "deleted" },
                "kind": if u.kind == UserKind::Guest { "guest" } else { "member" },
                "groups": groups_of.get(u.id.as_str()).cloned().unwrap_or_default(),
            }),
        );
    }
    let mut by_user: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    let mut by_group: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for a in &t.assignments {
        let g = json!({"scope": a.scope, "role": a.role, "exp": a.expires_at});
        match &a.principal {
            Principal::User(u) => by_user.entry(u.as_str()).or_default().push(g),
            Principal::Group(x) => by_group.entry(x.as_str()).or_default().push(g),
        }
    }
    let mut roles = Map::new();
    for r in t.all_roles() {
        let set: Map<String, serde_json::Value> = r
            .permissions
            .iter()
            .map(|p| (p.to_string(), json!(true)))
            .collect();
        roles.insert(r.id.clone(), serde_json::Value::Object(set));
    }
    json!({
        "tenant": {
            "suspended": t.status == TenantStatus::Suspended,
            "rbac": match t.rbac { Rbac::None => "none", Rbac::Basic => "basic", Rbac::Enterprise => "enterprise" },
        },
        "users": users,
        "groups": groups,
        "ancestors": ancestors,
        "grants": {"users": by_user, "groups": by_group},
        "roles": roles,
    })
}

/// A tenant loaded into a regorus engine.
pub struct RegoWorld {
    pub engine: Engine,
}

impl RegoWorld {
    pub fn load(t: &Tenant) -> anyhow::Result<RegoWorld> {
        let mut engine = Engine::new();
        engine
            .add_policy("portcullis.rego".into(), POLICY.into())
            .map_err(|e| anyhow!("rego policy: {e}"))?;
        let text = serde_json::to_string(&data(t))?;
        engine
            .add_data(Value::from_json_str(&text).map_err(|e| anyhow!("rego data: {e}"))?)
            .map_err(|e| anyhow!("rego data: {e}"))?;
        Ok(RegoWorld { engine })
    }

    pub fn check(&mut self, subject: &str, action: &str, resource: &str, now: i64) -> bool {
        let mut input = Value::new_object();
        if let Ok(o) = input.as_object_mut() {
            o.insert(Value::from("subject"), Value::from(subject));
            o.insert(Value::from("action"), Value::from(action));
            o.insert(Value::from("resource"), Value::from(resource));
            o.insert(Value::from("now"), Value::from(now));
        }
        self.engine.set_input(input);
        matches!(
            self.engine.eval_rule("data.portcullis.allow".into()),
            Ok(v) if v == Value::from(true)
        )
    }
}
