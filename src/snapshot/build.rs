//! Compiling a [`Tenant`] into a [`TenantSnap`] archive.

use rustc_hash::FxHashMap;

use super::{
    validate, Grant, GrantMeta, GroupRec, NodeRec, PluginRec, RoleRec, Snapshot, Span, TenantSnap,
    UserRec, FORMAT_VERSION, NEVER, NONE,
};
use crate::model::{
    GroupStatus, Part, Principal, Rbac, Tenant, TenantStatus, UserKind, UserStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("tenant '{tenant}' is invalid: {first} ({count} problem(s))")]
    Invalid {
        tenant: String,
        first: String,
        count: usize,
    },
    #[error("tenant '{0}' is too large to compile (more than 2^32-2 items)")]
    TooLarge(String),
    #[error("tenant '{tenant}': {message}")]
    Plugin { tenant: String, message: String },
    #[error("archiving tenant '{tenant}' failed: {message}")]
    Archive { tenant: String, message: String },
}

fn idx(n: usize, tenant: &str) -> Result<u32, BuildError> {
    u32::try_from(n)
        .ok()
        .filter(|&v| v != NONE)
        .ok_or_else(|| BuildError::TooLarge(tenant.to_string()))
}

pub(super) fn build(t: &Tenant) -> Result<Snapshot, BuildError> {
    let problems = t.validate();
    if let Some(first) = problems.first() {
        return Err(BuildError::Invalid {
            tenant: t.id.clone(),
            first: first.to_string(),
            count: problems.len(),
        });
    }
    let snap = compile(t)?;
    let bytes =
        rkyv::to_bytes::<rkyv::rancor::BoxedError>(&snap).map_err(|e| BuildError::Archive {
            tenant: t.id.clone(),
            message: e.to_string(),
        })?;
    validate::validate(&bytes).map_err(|e| BuildError::Archive {
        tenant: t.id.clone(),
        message: e.to_string(),
    })?;
    Ok(Snapshot {
        bytes,
        loaded_at: crate::engine::unix_now(),
        plugins: Box::default(),
    })
}

/// Builds the in-memory [`TenantSnap`] of a validated tenant.
pub(super) fn compile(t: &Tenant) -> Result<TenantSnap, BuildError> {
    let tid = t.id.as_str();
    idx(
        t.nodes.len() + t.users.len() + t.groups.len() + t.assignments.len(),
        tid,
    )?;

    // --- Nodes in pre-order -------------------------------------------------------------
    let n = t.nodes.len();
    let by_id: FxHashMap<&str, usize> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, x)| (x.id.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, x) in t.nodes.iter().enumerate() {
        match x.parent.as_deref().and_then(|p| by_id.get(p)) {
            Some(&p) => children[p].push(i),
            None => roots.push(i),
        }
    }
    let mut pre = vec![NONE; n]; // input index -> pre-order index
    let mut order = Vec::with_capacity(n); // pre-order index -> input index
    let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        pre[i] = order.len() as u32;
        order.push(i);
        stack.extend(children[i].iter().rev());
    }
    // Subtree ends: walk pre-order backwards accumulating sizes.
    let mut size = vec![1u32; n];
    for &i in order.iter().rev() {
        if let Some(&p) = t.nodes[i].parent.as_deref().and_then(|p| by_id.get(p)) {
            size[p] += size[i];
        }
    }
    let mut kind_ids: FxHashMap<&str, u32> = FxHashMap::default();
    let mut kinds = Vec::new();
    let mut nodes = Vec::with_capacity(n);
    for (p, &i) in order.iter().enumerate() {
        let x = &t.nodes[i];
        let kind = *kind_ids.entry(x.kind.as_str()).or_insert_with(|| {
            kinds.push(x.kind.clone());
            (kinds.len() - 1) as u32
        });
        nodes.push(NodeRec {
            id: x.id.clone(),
            name: x.name.clone(),
            parent: x
                .parent
                .as_deref()
                .and_then(|q| by_id.get(q))
                .map_or(NONE, |&q| pre[q]),
            end: p as u32 + size[i],
            kind,
        });
    }
    let node_index: FxHashMap<String, u32> = order
        .iter()
        .enumerate()
        .map(|(p, &i)| (t.nodes[i].id.clone(), p as u32))
        .collect();

    // --- Roles and permission bitsets -----------------------------------------------------
    let roles = t.all_roles();
    let nbuiltin = roles.len() - t.roles.len();
    let role_ids: FxHashMap<&str, u32> = roles
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i as u32))
        .collect();
    let words = roles.len().div_ceil(64).max(1);
    let mut bitsets: Vec<u64> = vec![0; words]; // bitset 0: empty
    let mut new_bitset = |members: &[u32]| -> u32 {
        let at = bitsets.len() / words;
        bitsets.extend(std::iter::repeat_n(0, words));
        for &r in members {
            bitsets[at * words + (r as usize) / 64] |= 1u64 << (r % 64);
        }
        at as u32
    };
    let mut all: Vec<u32> = Vec::new();
    let mut by_res: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
    let mut by_act: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
    let mut exact: FxHashMap<(&str, &str), Vec<u32>> = FxHashMap::default();
    for (ri, r) in roles.iter().enumerate() {
        let ri = ri as u32;
        for p in &r.permissions {
            match (&p.resource, &p.action) {
                (Part::Any, Part::Any) => all.push(ri),
                (Part::Name(res), Part::Any) => by_res.entry(res).or_default().push(ri),
                (Part::Any, Part::Name(act)) => by_act.entry(act).or_default().push(ri),
                (Part::Name(res), Part::Name(act)) => exact.entry((res, act)).or_default().push(ri),
            }
        }
    }
    let perm_all = new_bitset(&all);
    let mut perm_exact = FxHashMap::default();
    for (&(res, act), direct) in &exact {
        let mut m: Vec<u32> = direct.clone();
        m.extend(&all);
        m.extend(by_res.get(res).into_iter().flatten());
        m.extend(by_act.get(act).into_iter().flatten());
        perm_exact.insert(format!("{res}:{act}"), new_bitset(&m));
    }
    let perm_resource = by_res
        .iter()
        .map(|(k, v)| ((*k).to_string(), new_bitset(v)))
        .collect();
    let perm_action = by_act
        .iter()
        .map(|(k, v)| ((*k).to_string(), new_bitset(v)))
        .collect();
    // --- Plugins: slots in declaration order; roles naming one are flagged -------------------
    let plugin_slot = |name: &str| {
        t.plugins
            .iter()
            .position(|p| p.name == name)
            .map_or(NONE, |i| i as u32)
    };
    let with_plugin: Vec<u32> = roles
        .iter()
        .enumerate()
        .filter(|(_, r)| r.plugin.is_some())
        .map(|(i, _)| i as u32)
        .collect();
    let plugin_roles = if with_plugin.is_empty() {
        0
    } else {
        new_bitset(&with_plugin)
    };
    let plugins: Vec<PluginRec> = t
        .plugins
        .iter()
        .map(|p| PluginRec {
            name: p.name.clone(),
            sha256: p.sha256(),
            description: p.description.clone(),
            wasm: p.wasm.to_vec(),
        })
        .collect();
    let roles_rec: Vec<RoleRec> = roles
        .iter()
        .enumerate()
        .map(|(i, r)| RoleRec {
            id: r.id.clone(),
            name: r.name.clone(),
            builtin: i < nbuiltin,
            permissions: r.permissions.iter().map(ToString::to_string).collect(),
            plugin: r.plugin.clone(),
            plugin_slot: r.plugin.as_deref().map_or(NONE, plugin_slot),
        })
        .collect();

    // --- Users, groups, memberships --------------------------------------------------------
    let user_index: FxHashMap<String, u32> = t
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id.clone(), i as u32))
        .collect();
    let group_ids: FxHashMap<&str, u32> = t
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.id.as_str(), i as u32))
        .collect();
    let mut groups_of: Vec<Vec<u32>> = vec![Vec::new(); t.users.len()];
    for (gi, g) in t.groups.iter().enumerate() {
        for m in &g.members {
            if let Some(&u) = user_index.get(m) {
                groups_of[u as usize].push(gi as u32);
            }
        }
    }

    // --- Grants, grouped by principal ------------------------------------------------------
    let mut actor_ids: FxHashMap<&str, u32> = FxHashMap::default();
    let mut actors: Vec<String> = Vec::new();
    // (lo, hi, role, expires, assigned_by, assigned_at)
    type Raw = (u32, u32, u32, i64, u32, i64);
    let mut per_user: Vec<Vec<Raw>> = vec![Vec::new(); t.users.len()];
    let mut per_group: Vec<Vec<Raw>> = vec![Vec::new(); t.groups.len()];
    for a in &t.assignments {
        let (Some(&lo), Some(&role)) = (node_index.get(&a.scope), role_ids.get(a.role.as_str()))
        else {
            continue; // unreachable for a validated tenant
        };
        let hi = nodes[lo as usize].end;
        let by = match &a.assigned_by {
            Some(b) => *actor_ids.entry(b.as_str()).or_insert_with(|| {
                actors.push(b.clone());
                (actors.len() - 1) as u32
            }),
            None => NONE,
        };
        let raw = (
            lo,
            hi,
            role,
            a.expires_at.unwrap_or(NEVER),
            by,
            a.assigned_at.unwrap_or(i64::MIN),
        );
        match &a.principal {
            Principal::User(u) => {
                if let Some(&ui) = user_index.get(u) {
                    per_user[ui as usize].push(raw);
                }
            }
            Principal::Group(g) => {
                if let Some(&gi) = group_ids.get(g.as_str()) {
                    per_group[gi as usize].push(raw);
                }
            }
        }
    }
    let mut grants: Vec<Grant> = Vec::with_capacity(t.assignments.len());
    let mut grant_meta: Vec<GrantMeta> = Vec::with_capacity(t.assignments.len());
    let mut push_principal = |list: &mut Vec<Raw>| -> Span {
        list.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.1.cmp(&a.1))
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        let start = grants.len() as u32;
        let mut chain: Vec<u32> = Vec::new(); // stack of enclosing grants
        for &(lo, hi, role, expires, by, at) in list.iter() {
            while let Some(&top) = chain.last() {
                if grants[top as usize].hi > lo {
                    break;
                }
                chain.pop();
            }
            let me = grants.len() as u32;
            grants.push(Grant {
                lo,
                hi,
                role,
                up: chain.last().copied().unwrap_or(NONE),
                expires,
            });
            grant_meta.push(GrantMeta {
                assigned_by: by,
                assigned_at: at,
            });
            chain.push(me);
        }
        Span {
            start,
            end: grants.len() as u32,
        }
    };
    let mut users = Vec::with_capacity(t.users.len());
    let mut memberships = Vec::new();
    for (ui, u) in t.users.iter().enumerate() {
        let gstart = memberships.len() as u32;
        let mut gs = std::mem::take(&mut groups_of[ui]);
        gs.sort_unstable();
        gs.dedup();
        memberships.extend(gs);
        users.push(UserRec {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            status: match u.status {
                UserStatus::Active => super::STATUS_ACTIVE,
                UserStatus::Inactive => super::STATUS_INACTIVE,
                UserStatus::Deleted => super::STATUS_DELETED,
            },
            kind: match u.kind {
                UserKind::Owner => super::KIND_OWNER,
                UserKind::Admin => super::KIND_ADMIN,
                UserKind::Member => super::KIND_MEMBER,
                UserKind::Guest => super::KIND_GUEST,
            },
            session_epoch: u.session_epoch,
            grants: push_principal(&mut per_user[ui]),
            groups: Span {
                start: gstart,
                end: memberships.len() as u32,
            },
        });
    }
    let mut groups = Vec::with_capacity(t.groups.len());
    for (gi, g) in t.groups.iter().enumerate() {
        groups.push(GroupRec {
            id: g.id.clone(),
            name: g.name.clone(),
            active: g.status == GroupStatus::Active,
            members: g.members.len() as u32,
            grants: push_principal(&mut per_group[gi]),
        });
    }
    debug_assert_eq!(grants.len(), grant_meta.len());

    Ok(TenantSnap {
        format: FORMAT_VERSION,
        id: t.id.clone(),
        name: t.name.clone(),
        revision: t.revision,
        rbac: match t.rbac {
            Rbac::None => super::RBAC_NONE,
            Rbac::Basic => super::RBAC_BASIC,
            Rbac::Enterprise => super::RBAC_ENTERPRISE,
        },
        suspended: t.status == TenantStatus::Suspended,
        nodes,
        node_index,
        kinds,
        users,
        user_index,
        groups,
        memberships,
        roles: roles_rec,
        words: words as u32,
        bitsets,
        perm_exact,
        perm_resource,
        perm_action,
        perm_all,
        plugin_roles,
        plugins,
        grants,
        grant_meta,
        actors,
    })
}
