//! Portcullis tenant → Cerbos policies (YAML) and check requests (JSON) for the Cerbos PDP.
//!
//! Dev-only (the bench's `PEERS_MODE=cerbos-prep` writes the files; `bench/peers/http.sh` runs
//! the PDP). Cerbos keeps no user/group/hierarchy data: the PEP sends the principal's effective
//! grants and the resource's ancestors as attributes with every request (see README).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use portcullis::model::{
    split_action, GroupStatus, Part, Principal, Rbac, Tenant, TenantStatus, UserKind, UserStatus,
};
use serde_json::{json, Value};

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Cerbos action patterns for one Portcullis permission over the declared `vocab`.
fn actions(p: &portcullis::model::Permission, vocab: &BTreeSet<String>) -> Vec<String> {
    match (&p.resource, &p.action) {
        (Part::Any, Part::Any) => vec!["*".into()],
        (Part::Name(r), Part::Any) => vec![format!("{r}:*")],
        (Part::Name(r), Part::Name(a)) => vec![format!("{r}:{a}")],
        // Cerbos wildcards only end an action: expand `*:act` over the vocabulary.
        (Part::Any, Part::Name(a)) => vocab
            .iter()
            .filter(|v| split_action(v).is_some_and(|(_, x)| x == a))
            .cloned()
            .collect(),
    }
}

/// Policy files: (file name, YAML text).
pub fn policies(t: &Tenant, vocab: &BTreeSet<String>) -> Vec<(String, String)> {
    let roles = t.all_roles();
    let mut derived = String::from(
        "apiVersion: api.cerbos.dev/v1\nderivedRoles:\n  name: portcullis_roles\n  definitions:\n",
    );
    for (i, r) in roles.iter().enumerate() {
        let _ = write!(
            derived,
            "    - name: holds_{i}\n      parentRoles: [\"user\"]\n      condition:\n        match:\n          expr: >-\n            P.attr.grants.exists(g, g.role == {} && g.scope in R.attr.ancestors && (g.exp == 0 || g.exp > P.attr.now))\n",
            q(&r.id)
        );
    }
    let mut res = String::from(
        "apiVersion: api.cerbos.dev/v1\nresourcePolicy:\n  version: default\n  resource: node\n  importDerivedRoles: [portcullis_roles]\n  rules:\n",
    );
    let _ = write!(
        res,
        "    - name: inactive_users\n      actions: [\"*\"]\n      effect: EFFECT_DENY\n      roles: [\"*\"]\n      condition:\n        match:\n          expr: P.attr.status != \"active\"\n"
    );
    let non_read: Vec<String> = vocab
        .iter()
        .filter(|v| split_action(v).is_some_and(|(_, a)| a != "read"))
        .map(|v| q(v))
        .collect();
    if !non_read.is_empty() {
        let _ = write!(
            res,
            "    - name: guests_read_only\n      actions: [{}]\n      effect: EFFECT_DENY\n      roles: [\"*\"]\n      condition:\n        match:\n          expr: P.attr.kind == \"guest\"\n",
            non_read.join(", ")
        );
    }
    if t.status == TenantStatus::Suspended {
        let _ = write!(
            res,
            "    - name: tenant_suspended\n      actions: [\"*\"]\n      effect: EFFECT_DENY\n      roles: [\"*\"]\n"
        );
    }
    if t.rbac == Rbac::None {
        let _ = write!(
            res,
            "    - name: rbac_none\n      actions: [\"*\"]\n      effect: EFFECT_ALLOW\n      roles: [\"user\"]\n      condition:\n        match:\n          expr: size(R.attr.ancestors) > 0\n"
        );
    }
    for (i, r) in roles.iter().enumerate() {
        let mut acts: BTreeSet<String> = BTreeSet::new();
        for p in &r.permissions {
            acts.extend(actions(p, vocab));
        }
        if acts.is_empty() {
            continue;
        }
        let list: Vec<String> = acts.iter().map(|a| q(a)).collect();
        let _ = write!(
            res,
            "    - name: role_{i}\n      actions: [{}]\n      effect: EFFECT_ALLOW\n      derivedRoles: [holds_{i}]\n",
            list.join(", ")
        );
    }
    vec![
        ("derived_roles.yaml".into(), derived),
        ("node.yaml".into(), res),
    ]
}

/// The PEP side: per-user effective grants and per-node ancestors, looked up from the world.
pub struct Pep {
    users: HashMap<String, (String, String, Vec<Value>)>,
    ancestors: HashMap<String, Vec<String>>,
}

impl Pep {
    pub fn new(t: &Tenant) -> Pep {
        let parent: HashMap<&str, &str> = t
            .nodes
            .iter()
            .filter_map(|n| n.parent.as_deref().map(|p| (n.id.as_str(), p)))
            .collect();
        let ancestors = t
            .nodes
            .iter()
            .map(|n| {
                let mut path = vec![n.id.clone()];
                let mut cur = n.id.as_str();
                while let Some(p) = parent.get(cur) {
                    if path.len() > t.nodes.len() {
                        break;
                    }
                    path.push((*p).to_string());
                    cur = p;
                }
                (n.id.clone(), path)
            })
            .collect();
        let grant = |a: &portcullis::model::Assignment| {
            json!({"scope": a.scope, "role": a.role, "exp": a.expires_at.unwrap_or(0)})
        };
        let mut by_user: HashMap<&str, Vec<Value>> = HashMap::new();
        let mut by_group: HashMap<&str, Vec<Value>> = HashMap::new();
        for a in &t.assignments {
            match &a.principal {
                Principal::User(u) => by_user.entry(u.as_str()).or_default().push(grant(a)),
                Principal::Group(g) => by_group.entry(g.as_str()).or_default().push(grant(a)),
            }
        }
        let mut users: HashMap<String, (String, String, Vec<Value>)> = HashMap::new();
        for u in &t.users {
            let status = match u.status {
                UserStatus::Active => "active",
                UserStatus::Inactive => "inactive",
                UserStatus::Deleted => "deleted",
            };
            let kind = if u.kind == UserKind::Guest { "guest" } else { "member" };
            users.insert(
                u.id.clone(),
                (
                    status.into(),
                    kind.into(),
                    by_user.get(u.id.as_str()).cloned().unwrap_or_default(),
                ),
            );
        }
        for g in &t.groups {
            if g.status != GroupStatus::Active {
                continue;
            }
            for m in &g.members {
                if let (Some(u), Some(gs)) = (users.get_mut(m), by_group.get(g.id.as_str())) {
                    u.2.extend(gs.iter().cloned());
                }
            }
        }
        Pep { users, ancestors }
    }

    /// The Cerbos `POST /api/check/resources` body for one request.
    pub fn body(&self, subject: &str, action: &str, resource: &str, now: i64) -> String {
        let (status, kind, grants) = self
            .users
            .get(subject)
            .cloned()
            .unwrap_or_else(|| ("unknown".into(), "member".into(), Vec::new()));
        let anc = self.ancestors.get(resource).cloned().unwrap_or_default();
        json!({
            "requestId": "bench",
            "principal": {"id": subject, "roles": ["user"],
                "attr": {"status": status, "kind": kind, "now": now, "grants": grants}},
            "resources": [{"actions": [action],
                "resource": {"kind": "node", "id": resource, "attr": {"ancestors": anc}}}],
        })
        .to_string()
    }
}

/// The Cerbos server configuration (loopback only, no audit, no telemetry).
pub fn config(policy_dir: &str, http: &str, grpc: &str) -> String {
    format!(
        "server:\n  httpListenAddr: \"{http}\"\n  grpcListenAddr: \"{grpc}\"\nstorage:\n  driver: disk\n  disk:\n    directory: \"{policy_dir}\"\n    watchForChanges: false\naudit:\n  enabled: false\ntelemetry:\n  disabled: true\n"
    )
}
