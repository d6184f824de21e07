//! Property test of the control plane's rules: random sequences of management writes (users,
//! groups and members, roles, plugins, nodes and moves, assignments, quota patches, tenant status
//! and RBAC), applied through the business rules and `ControlPlane::write` exactly as the
//! management API applies them. After every accepted change the tenant compiles (the snapshot
//! builder accepts it), the pre-commit view (`TenantDoc::to_tenant_after`) is the tenant the
//! commit produced, and no change is refused by the final pre-commit check alone (the rules
//! themselves say what is wrong); a refused change leaves the document as it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis::control::rules::{self, Rule, RuleError};
use portcullis::control::{ControlError, ControlPlane, TenantDoc};
use portcullis::model::file::DataFile;
use portcullis::model::{GroupStatus, Quotas, Rbac, TenantStatus, UserKind, UserStatus};
use portcullis::snapshot::Snapshot;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// The rules' clock: after the demo data's dates.
const NOW: i64 = 2_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    CreateUser {
        user: u8,
        email: u8,
        kind: u8,
        inactive: bool,
    },
    UpdateUser {
        user: u8,
        kind: Option<u8>,
        email: Option<u8>,
    },
    Transition {
        user: u8,
        to: u8,
    },
    CreateGroup {
        group: u8,
        members: Vec<u8>,
    },
    UpdateGroup {
        group: u8,
        active: bool,
    },
    DeleteGroup {
        group: u8,
    },
    AddMember {
        group: u8,
        user: u8,
    },
    RemoveMember {
        group: u8,
        user: u8,
    },
    CreateRole {
        role: u8,
        perms: u8,
        plugin: Option<u8>,
    },
    UpdateRole {
        role: u8,
        perms: Option<u8>,
        plugin: Option<Option<u8>>,
    },
    DeleteRole {
        role: u8,
    },
    PutPlugin {
        plugin: u8,
        fill: u8,
        /// Upload as a canary with this share (0 and over 99 are refused).
        canary: Option<u8>,
    },
    CanaryShare {
        plugin: u8,
        share: u8,
    },
    PromoteCanary {
        plugin: u8,
    },
    AbortCanary {
        plugin: u8,
    },
    DeletePlugin {
        plugin: u8,
    },
    CreateNode {
        node: u8,
        parent: Option<u8>,
    },
    MoveNode {
        node: u8,
        parent: Option<u8>,
    },
    DeleteNode {
        node: u8,
    },
    CreateAssignment {
        user: Option<u8>,
        group: u8,
        role: u8,
        scope: u8,
        expires: u8,
    },
    UpdateAssignment {
        a: u8,
        expires: u8,
    },
    DeleteAssignment {
        a: u8,
    },
    Quotas {
        users: Option<u8>,
        admins: Option<u8>,
        groups: Option<u8>,
    },
    Status {
        suspended: bool,
    },
    Rbac {
        basic: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let n = any::<u8>;
    let small = || 0u8..16;
    prop_oneof![
        (n(), n(), n(), any::<bool>()).prop_map(|(user, email, kind, inactive)| Op::CreateUser {
            user,
            email,
            kind,
            inactive
        }),
        (n(), proptest::option::of(n()), proptest::option::of(n()))
            .prop_map(|(user, kind, email)| Op::UpdateUser { user, kind, email }),
        (n(), n()).prop_map(|(user, to)| Op::Transition { user, to }),
        (n(), proptest::collection::vec(n(), 0..3))
            .prop_map(|(group, members)| Op::CreateGroup { group, members }),
        (n(), any::<bool>()).prop_map(|(group, active)| Op::UpdateGroup { group, active }),
        n().prop_map(|group| Op::DeleteGroup { group }),
        (n(), n()).prop_map(|(group, user)| Op::AddMember { group, user }),
        (n(), n()).prop_map(|(group, user)| Op::RemoveMember { group, user }),
        (n(), n(), proptest::option::of(n())).prop_map(|(role, perms, plugin)| Op::CreateRole {
            role,
            perms,
            plugin
        }),
        (
            n(),
            proptest::option::of(n()),
            proptest::option::of(proptest::option::of(n()))
        )
            .prop_map(|(role, perms, plugin)| Op::UpdateRole {
                role,
                perms,
                plugin
            }),
        n().prop_map(|role| Op::DeleteRole { role }),
        (n(), n(), proptest::option::of(0u8..=101)).prop_map(|(plugin, fill, canary)| {
            Op::PutPlugin {
                plugin,
                fill,
                canary,
            }
        }),
        (n(), 0u8..=101).prop_map(|(plugin, share)| Op::CanaryShare { plugin, share }),
        n().prop_map(|plugin| Op::PromoteCanary { plugin }),
        n().prop_map(|plugin| Op::AbortCanary { plugin }),
        n().prop_map(|plugin| Op::DeletePlugin { plugin }),
        (n(), proptest::option::of(n())).prop_map(|(node, parent)| Op::CreateNode { node, parent }),
        (n(), proptest::option::of(n())).prop_map(|(node, parent)| Op::MoveNode { node, parent }),
        n().prop_map(|node| Op::DeleteNode { node }),
        (proptest::option::of(n()), n(), n(), n(), n()).prop_map(
            |(user, group, role, scope, expires)| Op::CreateAssignment {
                user,
                group,
                role,
                scope,
                expires
            }
        ),
        (n(), n()).prop_map(|(a, expires)| Op::UpdateAssignment { a, expires }),
        n().prop_map(|a| Op::DeleteAssignment { a }),
        (
            proptest::option::of(small()),
            proptest::option::of(small()),
            proptest::option::of(small())
        )
            .prop_map(|(users, admins, groups)| Op::Quotas {
                users,
                admins,
                groups
            }),
        any::<bool>().prop_map(|suspended| Op::Status { suspended }),
        any::<bool>().prop_map(|basic| Op::Rbac { basic }),
    ]
}

/// Element `i` (wrapping) of the ids `doc` has, plus some it has not.
fn pick<'a>(have: impl Iterator<Item = &'a String>, new: &[&str], i: u8) -> String {
    let mut ids: Vec<String> = have.cloned().collect();
    ids.extend(new.iter().map(|s| s.to_string()));
    ids.sort();
    ids.dedup();
    ids[i as usize % ids.len()].clone()
}

fn user(d: &TenantDoc, i: u8) -> String {
    pick(d.users.keys(), &["n0", "n1", "n2"], i)
}
fn group(d: &TenantDoc, i: u8) -> String {
    pick(d.groups.keys(), &["g0", "g1"], i)
}
fn role(d: &TenantDoc, i: u8) -> String {
    pick(d.roles.keys(), &["r0", "r1", "viewer"], i)
}
fn node(d: &TenantDoc, i: u8) -> String {
    pick(d.nodes.keys(), &["z0", "z1", "z2"], i)
}
fn plugin(d: &TenantDoc, i: u8) -> String {
    pick(d.plugins.keys(), &["p0", "p1"], i)
}
fn assignment(d: &TenantDoc, i: u8) -> String {
    pick(d.assignments.keys(), &["nope"], i)
}
fn expiry(i: u8) -> Option<i64> {
    [None, Some(NOW - 10), Some(NOW + 1000)][i as usize % 3]
}
fn kind(i: u8) -> UserKind {
    [
        UserKind::Member,
        UserKind::Admin,
        UserKind::Owner,
        UserKind::Guest,
    ][i as usize % 4]
}
fn perms(i: u8) -> Vec<String> {
    let all = ["asset:read", "asset:*", "*:read", "door:unlock", "bad perm"];
    let n = i as usize % 3;
    (0..n)
        .map(|k| all[(i as usize + k) % all.len()].to_string())
        .collect()
}

/// The rule call of `op` on `d`, as the management API makes it.
fn rule(d: &TenantDoc, op: &Op) -> Rule {
    match op {
        Op::CreateUser {
            user: u,
            email,
            kind: k,
            inactive,
        } => {
            let emails = [
                "x0@e.example",
                "x1@e.example",
                "alice@femo.example",
                "not an email",
            ];
            let req = rules::UserCreate {
                id: Some(user(d, *u)),
                first_name: None,
                last_name: None,
                password: None,
                logout: None,
                groups: Vec::new(),
                email: emails[*email as usize % emails.len()].into(),
                name: None,
                kind: kind(*k),
                status: inactive.then_some(UserStatus::Inactive),
            };
            rules::create_user(d, &req, NOW, &Default::default())
        }
        Op::UpdateUser {
            user: u,
            kind: k,
            email,
        } => {
            let id = user(d, *u);
            let email = email.map(|e| match d.users.get(&id) {
                Some(x) if e % 2 == 0 => x.user.email.clone(),
                _ => "changed@e.example".into(),
            });
            let p = rules::UserPatch {
                name: Some(format!("Name {u}")),
                kind: k.map(kind),
                email,
                ..Default::default()
            };
            rules::update_user(d, &id, &p, NOW)
        }
        Op::Transition { user: u, to } => {
            use rules::UserTransition::*;
            let t = [Activate, Deactivate, Delete, Restore, Login][*to as usize % 5];
            rules::transition_user(d, &user(d, *u), t, NOW)
        }
        Op::CreateGroup { group: g, members } => {
            let req = rules::GroupCreate {
                id: group(d, *g),
                name: None,
                status: GroupStatus::Active,
                members: members.iter().map(|m| user(d, *m)).collect(),
                logout: None,
                access: None,
            };
            rules::create_group(d, &req)
        }
        Op::UpdateGroup { group: g, active } => {
            let status = if *active {
                GroupStatus::Active
            } else {
                GroupStatus::Inactive
            };
            let p = rules::GroupPatch {
                status: Some(status),
                ..Default::default()
            };
            rules::update_group(d, &group(d, *g), &p)
        }
        Op::DeleteGroup { group: g } => rules::delete_group(d, &group(d, *g)),
        Op::AddMember { group: g, user: u } => rules::add_member(d, &group(d, *g), &user(d, *u)),
        Op::RemoveMember { group: g, user: u } => {
            rules::remove_member(d, &group(d, *g), &user(d, *u))
        }
        Op::CreateRole {
            role: r,
            perms: p,
            plugin: pl,
        } => {
            let req = rules::RoleCreate {
                id: role(d, *r),
                name: None,
                permissions: perms(*p),
                plugin: pl.map(|i| plugin(d, i)),
            };
            rules::create_role(d, &req)
        }
        Op::UpdateRole {
            role: r,
            perms: p,
            plugin: pl,
        } => {
            let patch = rules::RolePatch {
                name: None,
                permissions: p.map(perms),
                plugin: pl.map(|o| o.map(|i| plugin(d, i))),
            };
            rules::update_role(d, &role(d, *r), &patch)
        }
        Op::DeleteRole { role: r } => rules::delete_role(d, &role(d, *r)),
        Op::PutPlugin {
            plugin: p,
            fill,
            canary,
        } => {
            let up = rules::PluginUpload {
                name: plugin(d, *p),
                description: None,
                wasm: vec![*fill % 3; 16].into(),
                canary: *canary,
            };
            rules::put_plugin(d, &up, "prop", NOW)
        }
        Op::CanaryShare { plugin: p, share } => {
            rules::set_canary_share(d, &plugin(d, *p), i64::from(*share))
        }
        Op::PromoteCanary { plugin: p } => rules::promote_canary(d, &plugin(d, *p)),
        Op::AbortCanary { plugin: p } => rules::abort_canary(d, &plugin(d, *p)),
        Op::DeletePlugin { plugin: p } => rules::delete_plugin(d, &plugin(d, *p)),
        Op::CreateNode { node: n, parent } => {
            let req = rules::NodeCreate {
                id: node(d, *n),
                kind: "site".into(),
                parent: parent.map(|p| node(d, p)),
                name: None,
            };
            rules::create_node(d, &req)
        }
        Op::MoveNode { node: n, parent } => {
            let p = rules::NodePatch {
                parent: Some(parent.map(|p| node(d, p))),
                ..Default::default()
            };
            rules::update_node(d, &node(d, *n), &p)
        }
        Op::DeleteNode { node: n } => rules::delete_node(d, &node(d, *n)),
        Op::CreateAssignment {
            user: u,
            group: g,
            role: r,
            scope,
            expires,
        } => {
            let req = rules::AssignmentCreate {
                user: u.map(|u| user(d, u)),
                group: u.is_none().then(|| group(d, *g)),
                role: role(d, *r),
                scope: node(d, *scope),
                expires_at: expiry(*expires),
            };
            rules::create_assignment(d, &req, "prop", NOW)
        }
        Op::UpdateAssignment { a, expires } => {
            let p = rules::AssignmentPatch {
                expires_at: Some(expiry(*expires)),
            };
            rules::update_assignment(d, &assignment(d, *a), &p, NOW)
        }
        Op::DeleteAssignment { a } => rules::delete_assignment(d, &assignment(d, *a)),
        Op::Quotas {
            users,
            admins,
            groups,
        } => {
            let q = Quotas {
                max_users: users.map(u32::from),
                max_admins: admins.map(u32::from),
                max_groups: groups.map(u32::from),
            };
            tenant_patch(d, |p| p.quotas = Some(q))
        }
        Op::Status { suspended } => {
            let status = [TenantStatus::Active, TenantStatus::Suspended][usize::from(*suspended)];
            tenant_patch(d, |p| p.status = Some(status))
        }
        Op::Rbac { basic } => {
            let rbac = [Rbac::Enterprise, Rbac::Basic][usize::from(*basic)];
            tenant_patch(d, |p| p.rbac = Some(rbac))
        }
    }
}

fn tenant_patch(d: &TenantDoc, set: impl FnOnce(&mut rules::TenantPatch)) -> Rule {
    let mut p = rules::TenantPatch::default();
    set(&mut p);
    rules::update_tenant(d, &p)
}

/// The demo tenant `femo` in a fresh embedded store (on tmpfs when there is one: the test is
/// about the rules, not about fsync).
async fn femo() -> (tempfile::TempDir, ControlPlane) {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let store = portcullis::store::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let cp = ControlPlane::open(store).await.unwrap();
    let data = portcullis::model::file::load_str(portcullis::engine::DEMO_DATA).unwrap();
    let femo = data.tenants.into_iter().find(|t| t.id == "femo").unwrap();
    let data = DataFile {
        tenants: vec![femo],
        tests: vec![],
    };
    cp.seed(&data, "import").await.unwrap();
    (dir, cp)
}

async fn run(ops: &[Op]) -> Result<usize, TestCaseError> {
    let (_dir, cp) = femo().await;
    let mut accepted = 0;
    for (step, op) in ops.iter().enumerate() {
        let before = cp.doc("femo").await.unwrap();
        let result = cp.write("femo", "prop", None, |d| rule(d, op)).await;
        let after = cp.doc("femo").await.unwrap();
        match result {
            Ok(w) => {
                let t = after.to_tenant().unwrap();
                if let Err(e) = Snapshot::build(&t) {
                    return Err(TestCaseError::fail(format!(
                        "step {step} {op:?}: committed a tenant that does not compile: {e}"
                    )));
                }
                if !w.change.ops.is_empty() {
                    accepted += 1;
                    let seen = before.to_tenant_after(&w.change.ops).unwrap();
                    prop_assert_eq!(seen, Some(t), "step {} {:?}: pre-commit view", step, op);
                } else {
                    prop_assert_eq!(&before, &after, "step {} {:?}: no-op changed", step, op);
                }
            }
            Err(ControlError::Rule(RuleError::Conflict { message, .. }))
                if message.starts_with("refused:") =>
            {
                return Err(TestCaseError::fail(format!(
                    "step {step} {op:?}: the rules let through what the builder refuses: {message}"
                )));
            }
            Err(ControlError::Rule(_)) => {
                prop_assert_eq!(
                    &before,
                    &after,
                    "step {} {:?}: refused but changed",
                    step,
                    op
                );
            }
            Err(e) => return Err(TestCaseError::fail(format!("step {step} {op:?}: {e}"))),
        }
    }
    Ok(accepted)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_change_compiles(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&ops))?;
    }
}

/// Not every write is refused: the sequences do exercise commits.
#[test]
fn the_generated_writes_are_mostly_accepted() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ops = proptest::collection::vec(op(), 200)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let accepted = rt.block_on(run(&ops)).unwrap();
    assert!(accepted >= 40, "only {accepted} of 200 writes committed");
}
