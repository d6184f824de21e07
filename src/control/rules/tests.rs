//! Unit tests of the rules on the demo tenant `femo`.

use super::*;
use crate::control::doc::TenantDoc;
use crate::model::{UserKind, UserStatus};
use crate::store::Commit;

fn doc() -> TenantDoc {
    let data = crate::model::file::load_str(crate::engine::DEMO_DATA).unwrap();
    let t = data.tenants.iter().find(|t| t.id == "femo").unwrap();
    let mut d = TenantDoc::default();
    apply(&mut d, import(t, 1000, &[]).unwrap());
    d
}

fn apply(d: &mut TenantDoc, c: Change) {
    let rev = d.revision + 1;
    d.apply(&Commit {
        tenant: "femo".into(),
        revision: rev,
        actor: "t".into(),
        at_ms: 0,
        action: c.action,
        target: c.target,
        ops: c.ops,
    })
    .unwrap();
    assert!(
        d.to_tenant().unwrap().validate().is_empty(),
        "{:?}",
        d.to_tenant().unwrap().validate()
    );
}

#[test]
fn import_round_trips_the_model() {
    let d = doc();
    let t = d.to_tenant().unwrap();
    assert_eq!(t.users.len(), 10);
    assert!(t.validate().is_empty());
}

#[test]
fn moving_a_node_under_its_descendant_is_a_cycle() {
    let d = doc();
    let patch = NodePatch {
        parent: Some(Some("press-7".into())),
        ..Default::default()
    };
    let e = update_node(&d, "hawthorne", &patch).unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");
    let ok = update_node(
        &d,
        "press-7",
        &NodePatch {
            parent: Some(Some("lyon".into())),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ok.action, "node.move");
}

#[test]
fn duplicate_email_is_case_insensitive() {
    let d = doc();
    let req = UserCreate {
        id: Some("zed".into()),
        email: "ALICE@femo.example".into(),
        name: None,
        first_name: Some("Zed".into()),
        last_name: None,
        password: None,
        kind: UserKind::Member,
        status: None,
        logout: None,
        groups: Vec::new(),
    };
    match create_user(&d, &req, 5, &NewUserSecrets::default()).unwrap_err() {
        RuleError::Conflict { code, .. } => assert_eq!(code, "duplicate_email"),
        e => panic!("{e}"),
    }
}

#[test]
fn delete_and_restore_keep_the_profile() {
    let mut d = doc();
    let c = transition_user(&d, "alice", UserTransition::Delete, 2000).unwrap();
    apply(&mut d, c);
    assert_eq!(d.users["alice"].user.status, UserStatus::Deleted);
    assert_eq!(d.users["alice"].user.session_epoch, 2000);
    let c = transition_user(&d, "alice", UserTransition::Restore, 3000).unwrap();
    apply(&mut d, c);
    let u = &d.users["alice"].user;
    assert_eq!(
        (u.status, u.name.as_str(), u.email.as_str()),
        (UserStatus::Active, "Alice Adams", "alice@femo.example")
    );
}

#[test]
fn field_errors_name_the_fields() {
    let d = doc();
    let req = AssignmentCreate {
        user: Some("nobody".into()),
        group: None,
        role: "nope".into(),
        scope: "mars".into(),
        expires_at: Some(1),
    };
    match create_assignment(&d, &req, "dana", 5).unwrap_err() {
        RuleError::Invalid(f) => {
            let names: Vec<&str> = f.iter().map(|x| x.field.as_str()).collect();
            assert_eq!(names, ["user", "role", "scope", "expires_at"]);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn builtins_are_read_only_and_roles_in_use_stay() {
    let d = doc();
    assert!(matches!(
        update_role(&d, "viewer", &RolePatch::default()),
        Err(RuleError::Conflict {
            code: "read_only",
            ..
        })
    ));
    assert!(matches!(
        delete_role(&d, "machine-operator"),
        Err(RuleError::Conflict { code: "in_use", .. })
    ));
}

#[test]
fn deleting_a_group_removes_its_assignments() {
    let mut d = doc();
    let before = d.assignments.len();
    // Only an empty group can be deleted.
    assert!(matches!(
        delete_group(&d, "auditors"),
        Err(RuleError::Conflict { code: "group_not_empty", ref message, .. }) if message.contains("2 member(s)")
    ));
    for m in ["hana", "ivan"] {
        let c = remove_member(&d, "auditors", m).unwrap();
        apply(&mut d, c);
    }
    let c = delete_group(&d, "auditors").unwrap();
    apply(&mut d, c);
    assert_eq!(d.assignments.len(), before - 1);
}

#[test]
fn invitations_expire_and_are_used_once() {
    let mut d = doc();
    let req = UserCreate {
        id: Some("nina".into()),
        email: "nina@femo.example".into(),
        name: None,
        first_name: Some("Nina".into()),
        last_name: None,
        password: None,
        kind: UserKind::Member,
        status: Some(UserStatus::Inactive),
        logout: None,
        groups: Vec::new(),
    };
    let secrets = NewUserSecrets {
        password_hash: None,
        invitation: Some(("sha-1".into(), 5000)),
    };
    let c = create_user(&d, &req, 2000, &secrets).unwrap();
    apply(&mut d, c);
    let code = |r: Rule| match r {
        Err(RuleError::Conflict { code, .. }) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(accept_invitation(&d, "sha-1", "h", 5000)),
        "invalid_invitation",
        "expired"
    );
    assert_eq!(
        code(accept_invitation(&d, "nope", "h", 2001)),
        "invalid_invitation"
    );
    let c = accept_invitation(&d, "sha-1", "h", 4999).unwrap();
    apply(&mut d, c);
    assert_eq!(d.users["nina"].user.status, UserStatus::Active);
    assert_eq!(d.credentials["nina"].password.as_deref(), Some("h"));
    assert_eq!(
        code(accept_invitation(&d, "sha-1", "h2", 4999)),
        "invalid_invitation",
        "used"
    );
}

#[test]
fn sessions_open_with_the_logout_period_and_close_once() {
    let mut d = doc();
    let c = login_candidate(&d, "ALICE@femo.example").unwrap();
    assert_eq!(c.user, "alice");
    assert!(
        c.password_hash.is_none(),
        "this document was imported without hashes"
    );
    let o = open_session(&d, &c, crate::model::Channel::Console, "s1", 10_000).unwrap();
    assert_eq!(o.expires_at, 10_000 + 12 * 3600);
    apply(&mut d, o.change);
    assert_eq!(d.users["alice"].last_login_at, Some(10_000));
    // A stale epoch (the password changed meanwhile) is refused.
    let stale = LoginCandidate {
        epoch: 7,
        ..c.clone()
    };
    assert!(open_session(&d, &stale, crate::model::Channel::Console, "s2", 10_001).is_err());
    let closed = close_session(&d, "s1", "alice", 10_002).unwrap();
    apply(&mut d, closed);
    assert!(d.sessions["s1"].revoked);
    assert!(
        close_session(&d, "s1", "bob", 10_003).is_err(),
        "another user's session"
    );
    // Expired sessions are pruned by later sign-ins.
    let o = open_session(
        &d,
        &c,
        crate::model::Channel::Console,
        "s3",
        10_000 + 13 * 3600,
    )
    .unwrap();
    apply(&mut d, o.change);
    assert!(!d.sessions.contains_key("s1"));
    // Guests and inactive users are no candidates.
    assert!(login_candidate(&d, "erik@femo.example").is_none());
}
