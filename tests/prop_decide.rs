//! Property tests: the compiled snapshot and the hot-path decisions (`check`, `filter`, `scopes`,
//! `explain`) agree with the reference decision function of `tests/common` on random worlds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portcullis::decide::{self, GrantOutcome, Reason};
use portcullis::model::{
    format_timestamp, Assignment, GroupStatus, Principal, Rbac, Tenant, TenantStatus, UserKind,
    UserStatus,
};
use portcullis::snapshot::{ArchivedTenantSnap, Snapshot};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn snap(t: &Tenant) -> Snapshot {
    Snapshot::build(t).expect("a valid tenant compiles")
}

/// Ids of the nodes `scopes` returned, checking they are strictly ascending pre-order indexes.
fn scope_ids(v: &ArchivedTenantSnap, out: &[u32]) -> Result<Vec<String>, TestCaseError> {
    prop_assert!(
        out.windows(2).all(|w| w[0] < w[1]),
        "not ascending: {out:?}"
    );
    let mut ids: Vec<String> = out
        .iter()
        .map(|&i| v.nodes[i as usize].id.as_str().to_string())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Expected explain outcome of one assignment (Matched folded into AlsoGrants).
fn ref_outcome(
    t: &Tenant,
    a: &Assignment,
    subject: &str,
    action: &str,
    resource: &str,
) -> GrantOutcome {
    if ref_principal(t, a, subject) == Some(false) {
        return GrantOutcome::GroupInactive;
    }
    if a.expires_at.is_some_and(|e| e <= NOW) {
        return GrantOutcome::Expired;
    }
    if !ref_split(action).is_some_and(|(r, x)| ref_role_grants(t, &a.role, r, x)) {
        return GrantOutcome::RoleLacksPermission;
    }
    if ref_node(t, resource).is_none() || !ref_covers(t, &a.scope, resource) {
        return GrantOutcome::ScopeMismatch;
    }
    GrantOutcome::AlsoGrants
}

type ReportKey = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    GrantOutcome,
);

fn explain_matches(
    t: &Tenant,
    v: &ArchivedTenantSnap,
    subject: &str,
    action: &str,
    resource: &str,
    expected: (bool, Reason),
) -> Result<(), TestCaseError> {
    let e = decide::explain(v, subject, action, resource, NOW);
    prop_assert_eq!(e.allowed, expected.0);
    prop_assert_eq!(e.reason, expected.1.code());
    prop_assert_eq!(e.revision, t.revision);
    prop_assert_eq!(&e.resource_path, &ref_path(t, resource));
    prop_assert_eq!(e.matched.is_some(), expected.1 == Reason::Granted);
    let matched = e
        .assignments
        .iter()
        .filter(|r| r.outcome == GrantOutcome::Matched)
        .count();
    prop_assert_eq!(matched, usize::from(expected.1 == Reason::Granted));
    let applicable_names_allowed = e.assignments.iter().all(|r| match r.outcome {
        GrantOutcome::AlsoGrants => e.allowed,
        GrantOutcome::WouldGrant => !e.allowed,
        _ => true,
    });
    prop_assert!(
        applicable_names_allowed,
        "also_grants only on allow, would_grant only on deny"
    );
    let mut got: Vec<ReportKey> = e
        .assignments
        .iter()
        .map(|r| {
            // Matched / AlsoGrants (allowed) and WouldGrant (denied before assignments
            // apply) are the same applicability; which one is checked just below.
            let outcome = match r.outcome {
                GrantOutcome::Matched | GrantOutcome::WouldGrant => GrantOutcome::AlsoGrants,
                o => o,
            };
            (
                r.principal.clone(),
                r.role.clone(),
                r.scope.clone(),
                r.assigned_by.clone(),
                r.assigned_at.clone(),
                r.expires_at.clone(),
                outcome,
            )
        })
        .collect();
    let mut want: Vec<ReportKey> = if ref_user(t, subject).is_none() {
        Vec::new()
    } else {
        t.assignments
            .iter()
            .filter(|a| ref_principal(t, a, subject).is_some())
            .map(|a| {
                let principal = match &a.principal {
                    Principal::User(u) => format!("user:{u}"),
                    Principal::Group(g) => format!("group:{g}"),
                };
                (
                    principal,
                    a.role.clone(),
                    a.scope.clone(),
                    a.assigned_by.clone(),
                    a.assigned_at.map(format_timestamp),
                    a.expires_at.map(format_timestamp),
                    ref_outcome(t, a, subject, action, resource),
                )
            })
            .collect()
    };
    // The default role: one report per root node, for every user but guests.
    let default_role = t.default_role.as_ref().filter(|_| t.rbac != Rbac::None);
    if let (Some(role), Some(u)) = (default_role, ref_user(t, subject)) {
        if u.kind != UserKind::Guest {
            for root in t.nodes.iter().filter(|n| n.parent.is_none()) {
                let lacks = !ref_split(action).is_some_and(|(r, x)| ref_role_grants(t, role, r, x));
                let outcome = if lacks {
                    GrantOutcome::RoleLacksPermission
                } else if ref_node(t, resource).is_none() || !ref_covers(t, &root.id, resource) {
                    GrantOutcome::ScopeMismatch
                } else {
                    GrantOutcome::AlsoGrants
                };
                want.push((
                    "default_role".to_string(),
                    role.clone(),
                    root.id.clone(),
                    None,
                    None,
                    None,
                    outcome,
                ));
            }
        }
    }
    let key = |k: &ReportKey| format!("{k:?}");
    got.sort_by_key(key);
    want.sort_by_key(key);
    prop_assert_eq!(
        got,
        want,
        "explain reports for {} {} {}",
        subject,
        action,
        resource
    );
    if let Some(m) = &e.matched {
        prop_assert!(ref_node(t, &m.scope).is_some_and(|n| !n.kind.is_empty()));
        prop_assert!(ref_covers(t, &m.scope, resource));
        prop_assert_eq!(&m.scope_kind, &ref_node(t, &m.scope).unwrap().kind);
    }
    Ok(())
}

/// Every (subject, action, resource) of the world: `check` and `explain` against the reference.
fn check_world(t: &Tenant, with_explain: bool) -> Result<(), TestCaseError> {
    let s = snap(t);
    let v = s.view();
    prop_assert_eq!(s.revision(), t.revision);
    prop_assert_eq!(s.tenant_id(), t.id.as_str());
    let resources = resources(t);
    for (si, subject) in subjects(t).into_iter().enumerate() {
        for (ai, action) in all_actions().into_iter().enumerate() {
            for (ri, resource) in resources.iter().enumerate() {
                let want = ref_check(t, &subject, &action, resource, NOW);
                let d = decide::check(v, &subject, &action, resource, NOW);
                prop_assert_eq!(
                    (d.allowed, d.reason),
                    want,
                    "check({}, {}, {}) in {:?}",
                    subject,
                    action,
                    resource,
                    t
                );
                // Explain allocates and is slow in debug builds: a fifth of the requests.
                if with_explain && (si + ai + ri) % 5 == 0 {
                    explain_matches(t, v, &subject, &action, resource, want)?;
                }
            }
        }
    }
    Ok(())
}

/// `filter` over `list` (indexes into the world's resources, repeats allowed) against the
/// reference, for every subject and action; and `scopes` likewise.
fn filter_and_scopes_world(
    t: &Tenant,
    list: &[usize],
    subjects: &[String],
    actions: &[String],
) -> Result<(), TestCaseError> {
    let s = snap(t);
    let v = s.view();
    let all = resources(t);
    let candidates: Vec<&str> = list.iter().map(|&i| all[i % all.len()].as_str()).collect();
    let mut out = Vec::new();
    for subject in subjects {
        let subject = subject.as_str();
        for action in actions {
            let action = action.as_str();
            let (ok, reason, roots) = ref_scopes(t, subject, action, NOW);
            let d = decide::scopes(v, subject, action, NOW, &mut out);
            prop_assert_eq!(
                (d.allowed, d.reason),
                (ok, reason),
                "scopes({}, {})",
                subject,
                action
            );
            prop_assert_eq!(
                scope_ids(v, &out)?,
                roots,
                "scopes({}, {}) in {:?}",
                subject,
                action,
                t
            );

            let mut got = Vec::new();
            let d = decide::filter(v, subject, action, &candidates, NOW, |i| got.push(i));
            let want: Vec<usize> = (0..candidates.len())
                .filter(|&i| ref_check(t, subject, action, candidates[i], NOW).0)
                .collect();
            prop_assert_eq!(
                &got,
                &want,
                "filter({}, {}, {:?}) in {:?}",
                subject,
                action,
                candidates,
                t
            );
            prop_assert_eq!(
                (d.allowed, d.reason),
                (ok, reason),
                "filter outcome ({}, {})",
                subject,
                action
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn check_matches_reference(t in arb_tenant("t", SMALL)) {
        check_world(&t, false)?;
    }

    #[test]
    fn filter_and_scopes_match_reference(
        t in arb_tenant("t", SMALL),
        list in proptest::collection::vec(any::<usize>(), 0..48),
    ) {
        filter_and_scopes_world(&t, &list, &subjects(&t), &all_actions())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn explain_matches_check_and_reference(t in arb_tenant("t", SMALL)) {
        check_world(&t, true)?;
    }
}

/// A world where user `u0` holds many grants: `base` viewer assignments that all match
/// `asset:read` (so `filter` overflows its 64-interval buffer), plus random ones.
fn heavy_world() -> impl Strategy<Value = (Tenant, usize)> {
    (
        arb_tenant(
            "t",
            Shape {
                max_nodes: 40,
                max_users: 3,
                max_groups: 2,
                max_roles: 3,
                max_assignments: 20,
            },
        ),
        65usize..160,
        proptest::collection::vec((any::<usize>(), 0u8..6, any::<bool>()), 160),
    )
        .prop_map(|(mut t, base, extra)| {
            t.status = TenantStatus::Active;
            if t.rbac == Rbac::None {
                t.rbac = Rbac::Basic;
                t.roles.clear();
                t.assignments
                    .retain(|a| portcullis::model::is_builtin_role(&a.role));
            }
            t.users[0].status = UserStatus::Active;
            t.users[0].kind = UserKind::Member;
            let n = t.nodes.len();
            for (k, &(s, r, via_group)) in extra.iter().enumerate() {
                let principal = if via_group && !t.groups.is_empty() && k >= base {
                    let g = s % t.groups.len();
                    if !t.groups[g].members.iter().any(|m| m == "u0") {
                        t.groups[g].members.push("u0".into());
                    }
                    Principal::Group(t.groups[g].id.clone())
                } else {
                    Principal::User("u0".into())
                };
                let role = if k < base {
                    "viewer".to_string()
                } else {
                    [
                        "administrator",
                        "operator",
                        "viewer",
                        "viewer",
                        "operator",
                        "viewer",
                    ][r as usize]
                        .to_string()
                };
                t.assignments.push(Assignment {
                    principal,
                    role,
                    scope: t.nodes[s % n].id.clone(),
                    assigned_by: None,
                    assigned_at: None,
                    expires_at: match r {
                        0 if k >= base => Some(NOW - 1),
                        1 => Some(NOW + 5),
                        _ => None,
                    },
                });
            }
            assert!(t.validate().is_empty());
            (t, base)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn filter_overflow_matches_reference(
        (t, base) in heavy_world(),
        list in proptest::collection::vec(any::<usize>(), 0..120),
    ) {
        // At least `base` > 64 unexpired grants of u0 match asset:read: the overflow path.
        let matching = t.assignments.iter().filter(|a| {
            ref_assignment_grants(&t, a, "u0", "asset", "read", &a.scope, NOW)
        }).count();
        prop_assert!(matching >= base && base > 64);
        let heavy = ["u0".to_string(), "u1".to_string(), "nobody".to_string()];
        filter_and_scopes_world(&t, &list, &heavy, &concrete_actions())?;
        // The overflow path on a list of every node, in reverse order, with each node twice.
        let s = snap(&t);
        let all: Vec<String> = t.nodes.iter().rev().flat_map(|n| [n.id.clone(), n.id.clone()]).collect();
        let mut got = Vec::new();
        decide::filter(s.view(), "u0", "asset:read", &all, NOW, |i| got.push(i));
        let want: Vec<usize> = (0..all.len()).filter(|&i| ref_check(&t, "u0", "asset:read", &all[i], NOW).0).collect();
        prop_assert_eq!(got, want);
    }
}

/// Inactive groups cut group-derived access; the same assignment through an active group grants.
#[test]
fn group_status_controls_group_grants() {
    let mut t = Tenant::new("t");
    t.nodes.push(portcullis::model::Node {
        id: "root".into(),
        kind: "site".into(),
        parent: None,
        name: None,
    });
    t.nodes.push(portcullis::model::Node {
        id: "leaf".into(),
        kind: "asset".into(),
        parent: Some("root".into()),
        name: None,
    });
    t.users.push(portcullis::model::User {
        id: "u".into(),
        email: "u@x.example".into(),
        name: "U".into(),
        status: UserStatus::Active,
        kind: UserKind::Member,
        session_epoch: 0,
        first_name: None,
        last_name: None,
        logout: None,
        scope: None,
    });
    t.groups.push(portcullis::model::Group {
        id: "g".into(),
        name: "G".into(),
        status: GroupStatus::Active,
        members: vec!["u".into()],
        logout: None,
        access: None,
    });
    t.assignments.push(Assignment {
        principal: Principal::Group("g".into()),
        role: "viewer".into(),
        scope: "root".into(),
        assigned_by: None,
        assigned_at: None,
        expires_at: None,
    });
    let d = decide::check(snap(&t).view(), "u", "asset:read", "leaf", NOW);
    assert!(d.allowed);
    assert_eq!(d.reason, Reason::Granted);
    t.groups[0].status = GroupStatus::Inactive;
    let d = decide::check(snap(&t).view(), "u", "asset:read", "leaf", NOW);
    assert_eq!((d.allowed, d.reason), (false, Reason::NoMatchingAssignment));
}
