//! Shared by the integration tests: a tiny, obviously-correct reference decision function written
//! directly over [`model::Tenant`] (independent of the snapshot compiler and the hot path), and
//! proptest strategies for random worlds and requests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis::decide::Reason;
use portcullis::model::{
    Assignment, Group, GroupStatus, Node, Permission, Principal, Rbac, Role, Tenant, TenantStatus,
    Tier, User, UserKind, UserStatus,
};
use proptest::prelude::*;

/// The fixed "now" of every property test.
pub const NOW: i64 = 1_000_000;

// ------------------------------------------------------------------------------------------
// Reference decisions
// ------------------------------------------------------------------------------------------

/// Is `s` a concrete permission segment: 1..=64 ASCII letters, digits, `_`, `-`, `.`?
fn ref_segment(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Splits a request action into exactly two concrete segments.
pub fn ref_split(action: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = action.split(':').collect();
    if parts.len() != 2 || !ref_segment(parts[0]) || !ref_segment(parts[1]) {
        return None;
    }
    Some((parts[0], parts[1]))
}

/// The permission list of role `id` (built-ins spelled out here, not taken from the crate).
pub fn ref_role_perms(t: &Tenant, id: &str) -> Vec<Permission> {
    let builtin: Option<&[&str]> = match id {
        "administrator" => Some(&["*"]),
        "operator" => Some(&["*:read", "*:operate"]),
        "viewer" | "member" => Some(&["*:read"]),
        _ => None,
    };
    if let Some(list) = builtin {
        return list.iter().map(|p| p.parse().unwrap()).collect();
    }
    // A basic tenant's roles grant only when they are catalogue roles of tier basic.
    t.roles
        .iter()
        .find(|r| r.id == id)
        .filter(|r| t.rbac != Rbac::Basic || r.tier == Some(Tier::Basic))
        .map(|r| r.permissions.clone())
        .unwrap_or_default()
}

pub fn ref_user<'a>(t: &'a Tenant, id: &str) -> Option<&'a User> {
    t.users.iter().find(|u| u.id == id)
}

pub fn ref_node<'a>(t: &'a Tenant, id: &str) -> Option<&'a Node> {
    t.nodes.iter().find(|n| n.id == id)
}

/// Is `scope` the node `resource` or one of its ancestors? Walks the parent chain with a loop.
pub fn ref_covers(t: &Tenant, scope: &str, resource: &str) -> bool {
    let mut cur = ref_node(t, resource);
    let mut steps = 0;
    while let Some(n) = cur {
        if n.id == scope {
            return true;
        }
        steps += 1;
        assert!(steps <= t.nodes.len(), "cycle in a valid tenant?");
        cur = n.parent.as_deref().and_then(|p| ref_node(t, p));
    }
    false
}

/// The ids of a node and its ancestors, root first.
pub fn ref_path(t: &Tenant, resource: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = ref_node(t, resource);
    while let Some(n) = cur {
        out.push(n.id.clone());
        cur = n.parent.as_deref().and_then(|p| ref_node(t, p));
    }
    out.reverse();
    out
}

/// Does assignment `a` apply to `subject` through its principal? Returns (applies, via active
/// principal). A direct assignment applies when the user is its principal; a group assignment
/// when the user is a member of the group (it is "active" only if the group is active).
pub fn ref_principal(t: &Tenant, a: &Assignment, subject: &str) -> Option<bool> {
    match &a.principal {
        Principal::User(u) => (u == subject).then_some(true),
        Principal::Group(g) => {
            let group = t.groups.iter().find(|x| &x.id == g)?;
            group
                .members
                .iter()
                .any(|m| m == subject)
                .then_some(group.status == GroupStatus::Active)
        }
    }
}

pub fn ref_role_grants(t: &Tenant, role: &str, res: &str, act: &str) -> bool {
    ref_role_perms(t, role).iter().any(|p| p.grants(res, act))
}

/// Does assignment `a` grant `res:act` on `resource` to `subject` at `now` (ignoring the
/// subject-level conditions)?
pub fn ref_assignment_grants(
    t: &Tenant,
    a: &Assignment,
    subject: &str,
    res: &str,
    act: &str,
    resource: &str,
    now: i64,
) -> bool {
    ref_principal(t, a, subject) == Some(true)
        && a.expires_at.is_none_or(|e| e > now)
        && ref_role_grants(t, &a.role, res, act)
        && ref_covers(t, &a.scope, resource)
}

/// Does the tenant's default role grant `res:act` to `subject`? Every user but guests holds it
/// on every node (at the roots, so on their subtrees: the whole tenant).
pub fn ref_default_role_grants(t: &Tenant, subject: &str, res: &str, act: &str) -> bool {
    let Some(role) = &t.default_role else {
        return false;
    };
    ref_user(t, subject).is_some_and(|u| u.kind != UserKind::Guest)
        && ref_role_grants(t, role, res, act)
}

/// The subject-level part of a decision: `Err(reason)` when the request is denied whatever the
/// resource, else the split action.
pub fn ref_subject<'a>(
    t: &Tenant,
    subject: &str,
    action: &'a str,
) -> Result<(&'a str, &'a str), Reason> {
    if t.status == TenantStatus::Suspended {
        return Err(Reason::TenantSuspended);
    }
    let Some(u) = ref_user(t, subject) else {
        return Err(Reason::UnknownSubject);
    };
    match u.status {
        UserStatus::Active => {}
        UserStatus::Inactive => return Err(Reason::SubjectInactive),
        UserStatus::Deleted => return Err(Reason::SubjectDeleted),
    }
    let Some((res, act)) = ref_split(action) else {
        return Err(Reason::InvalidAction);
    };
    if u.kind == UserKind::Guest && act != "read" {
        return Err(Reason::GuestReadOnly);
    }
    Ok((res, act))
}

/// The reference decision: (allowed, reason).
pub fn ref_check(
    t: &Tenant,
    subject: &str,
    action: &str,
    resource: &str,
    now: i64,
) -> (bool, Reason) {
    let (res, act) = match ref_subject(t, subject, action) {
        Ok(x) => x,
        Err(r) => return (false, r),
    };
    if ref_node(t, resource).is_none() {
        return (false, Reason::UnknownResource);
    }
    if t.rbac == Rbac::None {
        return (true, Reason::RbacNone);
    }
    if t.assignments
        .iter()
        .any(|a| ref_assignment_grants(t, a, subject, res, act, resource, now))
        || ref_default_role_grants(t, subject, res, act)
    {
        (true, Reason::Granted)
    } else {
        (false, Reason::NoMatchingAssignment)
    }
}

/// The reference scopes: the ids of the nodes where the subject holds the permission and none
/// of whose ancestors it holds it on, sorted; plus the subject-level outcome.
pub fn ref_scopes(
    t: &Tenant,
    subject: &str,
    action: &str,
    now: i64,
) -> (bool, Reason, Vec<String>) {
    if let Err(r) = ref_subject(t, subject, action) {
        return (false, r, Vec::new());
    }
    let holds = |id: &str| ref_check(t, subject, action, id, now).0;
    let mut roots: Vec<String> = t
        .nodes
        .iter()
        .filter(|n| holds(&n.id))
        .filter(|n| {
            let path = ref_path(t, &n.id);
            path[..path.len() - 1].iter().all(|a| !holds(a))
        })
        .map(|n| n.id.clone())
        .collect();
    roots.sort();
    if t.rbac == Rbac::None {
        (true, Reason::RbacNone, roots)
    } else if roots.is_empty() {
        (false, Reason::NoMatchingAssignment, roots)
    } else {
        (true, Reason::Granted, roots)
    }
}

// ------------------------------------------------------------------------------------------
// Random worlds
// ------------------------------------------------------------------------------------------

pub const RESOURCES: &[&str] = &["asset", "door", "zone"];
pub const ACTIONS: &[&str] = &["read", "operate", "unlock"];
/// Requested actions that are not concrete `resource:action`.
pub const INVALID_ACTIONS: &[&str] = &[
    "asset", "asset:*", "*:read", "*", "a:b:c", "", ":read", "asset:",
];

/// Every concrete action the worlds' roles can mention, plus one nobody mentions.
pub fn concrete_actions() -> Vec<String> {
    let mut v: Vec<String> = RESOURCES
        .iter()
        .flat_map(|r| ACTIONS.iter().map(move |a| format!("{r}:{a}")))
        .collect();
    v.push("pipeline:purge".into());
    v
}

/// Every requested action: the concrete ones and the invalid ones.
pub fn all_actions() -> Vec<String> {
    let mut v = concrete_actions();
    v.extend(INVALID_ACTIONS.iter().map(|s| s.to_string()));
    v
}

/// One random permission in any of the four forms.
pub fn arb_permission() -> impl Strategy<Value = Permission> {
    (0..8usize, 0..RESOURCES.len(), 0..ACTIONS.len()).prop_map(|(form, r, a)| {
        let text = match form {
            0 => "*".to_string(),
            1 => format!("{}:*", RESOURCES[r]),
            2 => format!("*:{}", ACTIONS[a]),
            _ => format!("{}:{}", RESOURCES[r], ACTIONS[a]),
        };
        text.parse().unwrap()
    })
}

/// Shape of a random world.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub max_nodes: usize,
    pub max_users: usize,
    pub max_groups: usize,
    pub max_roles: usize,
    pub max_assignments: usize,
}

pub const SMALL: Shape = Shape {
    max_nodes: 24,
    max_users: 6,
    max_groups: 4,
    max_roles: 4,
    max_assignments: 30,
};

/// Parent choice of one node: root, the previous node (long chains), or a random earlier one.
fn parent_of(i: usize, choice: u8, r: usize, depth: &[usize]) -> Option<usize> {
    if i == 0 {
        return None;
    }
    let p = match choice {
        0 => return None,
        1..=3 => i - 1,
        _ => r % i,
    };
    // Keep the depth at most 8.
    (depth[p] < 7).then_some(p)
}

/// A random, valid tenant with id `id`.
pub fn arb_tenant(id: &'static str, shape: Shape) -> impl Strategy<Value = Tenant> {
    (
        1..=shape.max_nodes,
        1..=shape.max_users,
        0..=shape.max_groups,
        0..=shape.max_roles,
        0..=shape.max_assignments,
    )
        .prop_flat_map(move |(n, nu, ng, nr, na)| {
            (
                proptest::collection::vec((0u8..10, any::<usize>()), n),
                proptest::collection::vec(proptest::collection::vec(arb_permission(), 0..4), nr),
                proptest::collection::vec((0u8..10, 0u8..10), nu),
                proptest::collection::vec(
                    (any::<bool>(), proptest::collection::vec(0u8..3, nu)),
                    ng,
                ),
                proptest::collection::vec(
                    (
                        0u8..4,
                        any::<usize>(),
                        any::<usize>(),
                        any::<usize>(),
                        0u8..8,
                    ),
                    na,
                ),
                prop_oneof![
                    1 => Just(Rbac::None),
                    3 => Just(Rbac::Basic),
                    6 => Just(Rbac::Enterprise),
                ],
                prop_oneof![9 => Just(TenantStatus::Active), 1 => Just(TenantStatus::Suspended)],
                any::<u64>(),
            )
        })
        .prop_map(
            move |(nodes, roles, users, groups, asg, rbac, status, order)| {
                make_tenant(
                    id, &nodes, &roles, &users, &groups, &asg, rbac, status, order,
                )
            },
        )
}

#[allow(clippy::too_many_arguments)]
fn make_tenant(
    id: &str,
    nodes: &[(u8, usize)],
    roles: &[Vec<Permission>],
    users: &[(u8, u8)],
    groups: &[(bool, Vec<u8>)],
    asg: &[(u8, usize, usize, usize, u8)],
    rbac: Rbac,
    status: TenantStatus,
    order: u64,
) -> Tenant {
    let mut t = Tenant::new(id);
    t.rbac = rbac;
    t.status = status;
    let mut depth = Vec::with_capacity(nodes.len());
    for (i, &(choice, r)) in nodes.iter().enumerate() {
        let parent = parent_of(i, choice, r, &depth);
        depth.push(parent.map_or(0, |p| depth[p] + 1));
        t.nodes.push(Node {
            id: format!("n{i}"),
            kind: ["site", "zone", "asset"][i % 3].into(),
            parent: parent.map(|p| format!("n{p}")),
            name: None,
        });
    }
    // Input order of nodes must not matter: rotate and reverse some of them.
    let len = t.nodes.len();
    t.nodes.rotate_left((order as usize) % len);
    if order & (1 << 40) != 0 {
        t.nodes.reverse();
    }
    // Enterprise tenants get custom and catalogue roles of both tiers; basic tenants catalogue
    // roles only (custom ones cannot exist there), half of them locked.
    if rbac != Rbac::None {
        for (j, perms) in roles.iter().enumerate() {
            let tier = match (rbac, j % 3) {
                (Rbac::Enterprise, 0) => None,
                (_, 1) => Some(Tier::Enterprise),
                _ => Some(Tier::Basic),
            };
            t.roles.push(Role {
                id: format!("r{j}"),
                name: format!("Role {j}"),
                permissions: perms.clone(),
                plugin: None,
                tier,
            });
        }
    }
    for (k, &(status, kind)) in users.iter().enumerate() {
        t.users.push(User {
            id: format!("u{k}"),
            email: format!("u{k}@x.example"),
            name: format!("User {k}"),
            status: match status {
                0 => UserStatus::Inactive,
                1 => UserStatus::Deleted,
                _ => UserStatus::Active,
            },
            kind: match kind {
                0 | 1 => UserKind::Guest,
                2 => UserKind::Owner,
                3 => UserKind::Admin,
                _ => UserKind::Member,
            },
            session_epoch: 0,
            first_name: None,
            last_name: None,
            logout: None,
            scope: None,
        });
    }
    for (j, (active, members)) in groups.iter().enumerate() {
        t.groups.push(Group {
            logout: None,
            access: None,
            id: format!("g{j}"),
            name: format!("Group {j}"),
            status: if *active {
                GroupStatus::Active
            } else {
                GroupStatus::Inactive
            },
            members: members
                .iter()
                .enumerate()
                .filter(|(_, &m)| m > 0)
                .map(|(k, _)| format!("u{k}"))
                .collect(),
        });
    }
    // A default role in some worlds, from bits of `order` not used above.
    t.default_role = match (order >> 41) % 4 {
        0 => Some("member".to_string()),
        1 if !t.roles.is_empty() => Some("r0".to_string()),
        _ => None,
    };
    let role_ids: Vec<String> = ["administrator", "operator", "viewer"]
        .iter()
        .map(|s| s.to_string())
        .chain(t.roles.iter().map(|r| r.id.clone()))
        .collect();
    for &(kind, p, s, r, exp) in asg {
        let principal = if kind == 0 && !t.groups.is_empty() {
            Principal::Group(format!("g{}", p % t.groups.len()))
        } else {
            Principal::User(format!("u{}", p % t.users.len()))
        };
        // Custom roles are drawn more often than built-ins when they exist.
        let role = if role_ids.len() > 3 && r % 3 != 0 {
            role_ids[3 + r % (role_ids.len() - 3)].clone()
        } else {
            role_ids[r % role_ids.len()].clone()
        };
        t.assignments.push(Assignment {
            principal,
            role,
            scope: format!("n{}", s % len),
            assigned_by: (r % 2 == 0).then(|| "tester".to_string()),
            assigned_at: (r % 4 == 0).then_some(NOW - 10_000),
            expires_at: match exp {
                0 => Some(NOW - 100),
                1 => Some(NOW),
                2 => Some(NOW + 1),
                3 => Some(NOW + 1_000),
                _ => None,
            },
        });
    }
    assert!(
        t.validate().is_empty(),
        "generator made an invalid tenant: {:?}",
        t.validate()
    );
    t
}

/// Requested subjects: every user, plus ids that are nobody here.
pub fn subjects(t: &Tenant) -> Vec<String> {
    let mut v: Vec<String> = t.users.iter().map(|u| u.id.clone()).collect();
    v.extend(["nobody".to_string(), "g0".to_string(), "n0".to_string()]);
    v
}

/// Requested resources: every node, plus ids that are no node here.
pub fn resources(t: &Tenant) -> Vec<String> {
    let mut v: Vec<String> = t.nodes.iter().map(|n| n.id.clone()).collect();
    v.extend(["nowhere".to_string(), "u0".to_string(), String::new()]);
    v
}
