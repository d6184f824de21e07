//! Tenant isolation: changing one tenant in a registry never changes a decision on another, and
//! ids shared by two tenants never carry access across.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portcullis::decide::{self, Reason};
use portcullis::model::{
    Assignment, GroupStatus, Node, Permission, Principal, Rbac, Role, Tenant, TenantStatus, User,
    UserKind, UserStatus,
};
use portcullis::snapshot::{Registry, Snapshot};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// One change to tenant A.
#[derive(Debug, Clone)]
enum Op {
    AddAssignment {
        group: bool,
        principal: usize,
        scope: usize,
        role: usize,
        expired: bool,
    },
    RemoveAssignment(usize),
    SetUserStatus(usize, UserStatus),
    SetUserKind(usize, UserKind),
    SetRolePermissions(usize, Vec<Permission>),
    ChangeAssignmentRole(usize, usize),
    SetGroupStatus(usize, GroupStatus),
    AddNode(usize),
    Suspend(bool),
    SetRbac(Rbac),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), any::<usize>(), any::<usize>(), any::<usize>(), any::<bool>()).prop_map(
            |(group, principal, scope, role, expired)| Op::AddAssignment { group, principal, scope, role, expired }
        ),
        2 => any::<usize>().prop_map(Op::RemoveAssignment),
        2 => (any::<usize>(), prop_oneof![
            Just(UserStatus::Active), Just(UserStatus::Inactive), Just(UserStatus::Deleted)
        ]).prop_map(|(u, s)| Op::SetUserStatus(u, s)),
        1 => (any::<usize>(), prop_oneof![Just(UserKind::Guest), Just(UserKind::Member)])
            .prop_map(|(u, k)| Op::SetUserKind(u, k)),
        2 => (any::<usize>(), proptest::collection::vec(arb_permission(), 0..4))
            .prop_map(|(r, p)| Op::SetRolePermissions(r, p)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, r)| Op::ChangeAssignmentRole(a, r)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(g, a)| Op::SetGroupStatus(
            g, if a { GroupStatus::Active } else { GroupStatus::Inactive }
        )),
        1 => any::<usize>().prop_map(Op::AddNode),
        1 => any::<bool>().prop_map(Op::Suspend),
        1 => prop_oneof![Just(Rbac::None), Just(Rbac::Basic), Just(Rbac::Enterprise)].prop_map(Op::SetRbac),
    ]
}

fn role_ids(t: &Tenant) -> Vec<String> {
    ["administrator", "operator", "viewer"]
        .iter()
        .map(|s| s.to_string())
        .chain(t.roles.iter().map(|r| r.id.clone()))
        .collect()
}

/// Applies `op` to `t`; leaves `t` unchanged when the result would be invalid.
fn apply(t: &mut Tenant, op: &Op) {
    let before = t.clone();
    let nu = t.users.len();
    match op {
        Op::AddAssignment {
            group,
            principal,
            scope,
            role,
            expired,
        } => {
            let principal = if *group && !t.groups.is_empty() {
                Principal::Group(t.groups[principal % t.groups.len()].id.clone())
            } else {
                Principal::User(t.users[principal % nu].id.clone())
            };
            let roles = role_ids(t);
            t.assignments.push(Assignment {
                principal,
                role: roles[role % roles.len()].clone(),
                scope: t.nodes[scope % t.nodes.len()].id.clone(),
                assigned_by: None,
                assigned_at: None,
                expires_at: expired.then_some(NOW - 1),
            });
        }
        Op::RemoveAssignment(i) => {
            if !t.assignments.is_empty() {
                let i = i % t.assignments.len();
                t.assignments.remove(i);
            }
        }
        Op::SetUserStatus(u, s) => t.users[u % nu].status = *s,
        Op::SetUserKind(u, k) => t.users[u % nu].kind = *k,
        Op::SetRolePermissions(r, p) => {
            if !t.roles.is_empty() {
                let i = r % t.roles.len();
                t.roles[i].permissions = p.clone();
            }
        }
        Op::ChangeAssignmentRole(a, r) => {
            if !t.assignments.is_empty() {
                let roles = role_ids(t);
                let i = a % t.assignments.len();
                t.assignments[i].role = roles[r % roles.len()].clone();
            }
        }
        Op::SetGroupStatus(g, s) => {
            if !t.groups.is_empty() {
                let i = g % t.groups.len();
                t.groups[i].status = *s;
            }
        }
        Op::AddNode(p) => {
            let id = format!("added{}", t.nodes.len());
            let parent = t.nodes[p % t.nodes.len()].id.clone();
            t.nodes.push(Node {
                id,
                kind: "zone".into(),
                parent: Some(parent),
                name: None,
            });
        }
        Op::Suspend(s) => {
            t.status = if *s {
                TenantStatus::Suspended
            } else {
                TenantStatus::Active
            }
        }
        Op::SetRbac(r) => t.rbac = *r,
    }
    if !t.validate().is_empty() {
        *t = before;
    }
    t.revision += 1;
}

type Decisions = Vec<(bool, Reason)>;

/// Every decision on tenant `id` in `reg` over the given subjects, actions and resources, plus
/// one `filter` and one `scopes` per subject and action.
fn decisions(
    reg: &Registry,
    id: &str,
    subjects: &[String],
    actions: &[String],
    resources: &[String],
) -> (u64, Decisions, Vec<Vec<usize>>, Vec<Vec<u32>>) {
    let snap = reg.get(id).expect("tenant installed");
    let v = snap.view();
    let mut out = Vec::new();
    let mut filters = Vec::new();
    let mut scopes = Vec::new();
    for s in subjects {
        for a in actions {
            for r in resources {
                let d = decide::check(v, s, a, r, NOW);
                out.push((d.allowed, d.reason));
            }
            let mut f = Vec::new();
            let d = decide::filter(v, s, a, resources, NOW, |i| f.push(i));
            out.push((d.allowed, d.reason));
            filters.push(f);
            let mut sc = Vec::new();
            let d = decide::scopes(v, s, a, NOW, &mut sc);
            out.push((d.allowed, d.reason));
            scopes.push(sc);
        }
    }
    (snap.revision(), out, filters, scopes)
}

fn reference(
    t: &Tenant,
    subjects: &[String],
    actions: &[String],
    resources: &[String],
) -> Decisions {
    let mut out = Vec::new();
    for s in subjects {
        for a in actions {
            for r in resources {
                out.push(ref_check(t, s, a, r, NOW));
            }
        }
    }
    out
}

/// Tenant A gets a user and a node B does not have, and wide grants: a leak would show.
fn widen(mut a: Tenant) -> Tenant {
    a.nodes.push(Node {
        id: "only-a".into(),
        kind: "site".into(),
        parent: None,
        name: None,
    });
    a.users.push(User {
        id: "only-a".into(),
        email: "only-a@a.example".into(),
        name: "Only A".into(),
        status: UserStatus::Active,
        kind: UserKind::Member,
        session_epoch: 0,
        first_name: None,
        last_name: None,
        logout: None,
        scope: None,
    });
    let roots: Vec<String> = a
        .nodes
        .iter()
        .filter(|n| n.parent.is_none())
        .map(|n| n.id.clone())
        .collect();
    for u in a.users.iter().map(|u| u.id.clone()).collect::<Vec<_>>() {
        for r in &roots {
            a.assignments.push(Assignment {
                principal: Principal::User(u.clone()),
                role: "administrator".into(),
                scope: r.clone(),
                assigned_by: None,
                assigned_at: None,
                expires_at: None,
            });
        }
    }
    assert!(a.validate().is_empty());
    a
}

fn isolation(a: Tenant, b: Tenant, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut a = widen(a);
    let reg = Registry::new();
    prop_assert!(reg.install(Snapshot::build(&a).unwrap()));
    prop_assert!(reg.install(Snapshot::build(&b).unwrap()));
    prop_assert_eq!(reg.tenants().len(), 2);

    // B's requests name B's ids, and A's ids (same-named users/nodes, and A-only ones).
    let mut b_subjects = subjects(&b);
    b_subjects.push("only-a".into());
    let actions: Vec<String> = [
        "asset:read",
        "door:unlock",
        "zone:operate",
        "pipeline:purge",
        "asset:*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut b_resources = resources(&b);
    b_resources.push("only-a".into());
    b_resources.push("added0".into());

    let baseline = decisions(&reg, "b", &b_subjects, &actions, &b_resources);
    let b_ref = reference(&b, &b_subjects, &actions, &b_resources);
    let checks_only: Decisions = {
        let per = b_resources.len() + 2;
        baseline
            .1
            .chunks(per)
            .flat_map(|c| c[..b_resources.len()].to_vec())
            .collect()
    };
    prop_assert_eq!(&checks_only, &b_ref, "B before any change");

    let a_subjects = subjects(&a);
    for op in ops {
        apply(&mut a, op);
        prop_assert!(
            reg.install(Snapshot::build(&a).unwrap()),
            "newer revision installs"
        );
        // A changed as asked...
        let (rev, got, _, _) = decisions(&reg, "a", &a_subjects, &actions[..2], &resources(&a));
        prop_assert_eq!(rev, a.revision);
        let want = reference(&a, &a_subjects, &actions[..2], &resources(&a));
        let per = resources(&a).len() + 2;
        let got: Decisions = got
            .chunks(per)
            .flat_map(|c| c[..per - 2].to_vec())
            .collect();
        prop_assert_eq!(got, want, "A after {:?}", op);
        // ...and B did not move at all.
        let now_b = decisions(&reg, "b", &b_subjects, &actions, &b_resources);
        prop_assert_eq!(&now_b, &baseline, "B changed after {:?} on A", op);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn changes_to_one_tenant_never_change_another(
        a in arb_tenant("a", SMALL),
        b in arb_tenant("b", SMALL),
        ops in proptest::collection::vec(arb_op(), 1..12),
    ) {
        isolation(a, b, &ops)?;
    }
}

fn user(id: &str, kind: UserKind) -> User {
    User {
        id: id.into(),
        email: format!("{id}@x.example"),
        name: id.into(),
        status: UserStatus::Active,
        kind,
        session_epoch: 0,
        first_name: None,
        last_name: None,
        logout: None,
        scope: None,
    }
}

fn node(id: &str, parent: Option<&str>) -> Node {
    Node {
        id: id.into(),
        kind: "site".into(),
        parent: parent.map(str::to_string),
        name: None,
    }
}

fn assign(user: &str, role: &str, scope: &str) -> Assignment {
    Assignment {
        principal: Principal::User(user.into()),
        role: role.into(),
        scope: scope.into(),
        assigned_by: None,
        assigned_at: None,
        expires_at: None,
    }
}

/// The same user, node, group and role ids in two tenants: access never crosses.
#[test]
fn shared_ids_never_leak() {
    let mut a = Tenant::new("a");
    a.nodes = vec![
        node("root", None),
        node("leaf", Some("root")),
        node("only-a", Some("root")),
    ];
    a.users = vec![
        user("alice", UserKind::Owner),
        user("bob", UserKind::Member),
    ];
    a.roles = vec![Role {
        id: "door-opener".into(),
        name: "Door opener".into(),
        permissions: vec!["door:*".parse().unwrap()],
        plugin: None,
        tier: None,
    }];
    a.groups = vec![portcullis::model::Group {
        id: "crew".into(),
        name: "Crew".into(),
        status: GroupStatus::Active,
        members: vec!["alice".into(), "bob".into()],
        logout: None,
        access: None,
    }];
    a.assignments = vec![
        assign("alice", "administrator", "root"),
        assign("bob", "door-opener", "root"),
        Assignment {
            principal: Principal::Group("crew".into()),
            role: "administrator".into(),
            scope: "root".into(),
            assigned_by: None,
            assigned_at: None,
            expires_at: None,
        },
    ];
    let mut b = Tenant::new("b");
    b.nodes = vec![node("root", None), node("leaf", Some("root"))];
    b.users = vec![
        user("alice", UserKind::Member),
        user("carol", UserKind::Member),
    ];
    b.roles = vec![Role {
        id: "door-opener".into(),
        name: "Door opener".into(),
        permissions: vec!["door:read".parse().unwrap()],
        plugin: None,
        tier: None,
    }];
    b.groups = vec![portcullis::model::Group {
        id: "crew".into(),
        name: "Crew".into(),
        status: GroupStatus::Active,
        members: vec!["carol".into()],
        logout: None,
        access: None,
    }];
    b.assignments = vec![assign("carol", "door-opener", "leaf")];

    let reg = Registry::new();
    assert!(reg.install(Snapshot::build(&a).unwrap()));
    assert!(reg.install(Snapshot::build(&b).unwrap()));
    let sb = reg.get("b").unwrap();
    let vb = sb.view();
    let d = |s: &str, act: &str, r: &str| {
        let d = decide::check(vb, s, act, r, NOW);
        (d.allowed, d.reason)
    };
    // alice is an administrator of A's root, and nobody in B's.
    assert_eq!(
        d("alice", "door:unlock", "leaf"),
        (false, Reason::NoMatchingAssignment)
    );
    assert_eq!(
        d("alice", "door:read", "root"),
        (false, Reason::NoMatchingAssignment)
    );
    assert_eq!(
        d("bob", "door:read", "leaf"),
        (false, Reason::UnknownSubject)
    );
    assert_eq!(
        d("carol", "door:read", "only-a"),
        (false, Reason::UnknownResource)
    );
    // B's door-opener is B's, not A's door:*.
    assert_eq!(d("carol", "door:read", "leaf"), (true, Reason::Granted));
    assert_eq!(
        d("carol", "door:unlock", "leaf"),
        (false, Reason::NoMatchingAssignment)
    );
    assert_eq!(
        d("carol", "door:read", "root"),
        (false, Reason::NoMatchingAssignment)
    );
    let mut out = Vec::new();
    let s = decide::scopes(vb, "alice", "door:read", NOW, &mut out);
    assert!(!s.allowed && out.is_empty());
    let mut got = Vec::new();
    decide::filter(
        vb,
        "alice",
        "door:read",
        &["root", "leaf", "only-a"],
        NOW,
        |i| got.push(i),
    );
    assert!(got.is_empty());
    let e = decide::explain(vb, "alice", "door:read", "leaf", NOW);
    assert!(!e.allowed && e.assignments.is_empty(), "{e:?}");
    // And the other way round, A is untouched by B.
    let sa = reg.get("a").unwrap();
    let da = decide::check(sa.view(), "carol", "door:read", "leaf", NOW);
    assert_eq!((da.allowed, da.reason), (false, Reason::UnknownSubject));
    let da = decide::check(sa.view(), "bob", "door:unlock", "only-a", NOW);
    assert_eq!((da.allowed, da.reason), (true, Reason::Granted));
    assert!(reg.get("c").is_none());
}

/// A snapshot older than the installed one is ignored; removing a tenant removes only it.
#[test]
fn registry_ignores_older_revisions_and_removes_one_tenant() {
    let mut a = Tenant::new("a");
    a.nodes = vec![node("root", None)];
    a.users = vec![user("alice", UserKind::Member)];
    a.revision = 5;
    let mut b = a.clone();
    b.id = "b".into();
    b.assignments = vec![assign("alice", "viewer", "root")];
    let reg = Registry::new();
    assert!(reg.install(Snapshot::build(&a).unwrap()));
    assert!(reg.install(Snapshot::build(&b).unwrap()));
    let mut newer = a.clone();
    newer.revision = 6;
    newer.assignments = vec![assign("alice", "viewer", "root")];
    assert!(reg.install(Snapshot::build(&newer).unwrap()));
    let mut older = a.clone();
    older.revision = 4;
    assert!(!reg.install(Snapshot::build(&older).unwrap()));
    let sa = reg.get("a").unwrap();
    assert_eq!(sa.revision(), 6);
    assert!(decide::check(sa.view(), "alice", "asset:read", "root", NOW).allowed);
    assert_eq!(
        reg.tenants(),
        vec![("a".to_string(), 6), ("b".to_string(), 5)]
    );
    assert!(reg.remove("a"));
    assert!(!reg.remove("a"));
    assert!(reg.get("a").is_none());
    // A check that still holds A's snapshot finishes on it.
    assert!(decide::check(sa.view(), "alice", "asset:read", "root", NOW).allowed);
    let sb = reg.get("b").unwrap();
    assert!(decide::check(sb.view(), "alice", "asset:read", "root", NOW).allowed);
}
