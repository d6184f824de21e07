//! The last check before a commit: the tenant as the commit would leave it must pass the
//! validation the snapshot builder applies ([`crate::snapshot::check`], the one validator), so
//! that every committed state compiles. The rules give precise answers for what they know; this
//! catches whatever they miss, and a refused change is never committed.
//!
//! Cost: a change of assignments only (the frequent write, which the follower applies without a
//! rebuild) checks just the assignments it writes, against the tenant's current entities (which
//! it does not change) — [`crate::model::check_assignment`], the check `Tenant::validate` applies
//! to each assignment. Any other change checks the whole tenant, like the full rebuild the
//! follower then runs.

use serde::Deserialize;

use super::doc::{AssignmentRow, TenantDoc};
use super::rules::RuleError;
use crate::model::{check_assignment, is_builtin_role, Named};
use crate::snapshot::BuildError;
use crate::store::{Kind, RowOp};

/// Refuses (409 `invalid_state`) a change whose resulting tenant would not compile.
pub fn admit(doc: &TenantDoc, tenant: &str, ops: &[RowOp]) -> Result<(), RuleError> {
    let refuse = |why: String| {
        RuleError::conflict(
            "invalid_state",
            format!("refused: the change would leave tenant '{tenant}' invalid: {why}"),
        )
    };
    // Sign-in bookkeeping (sessions, credentials, invitations, API keys, a user's last sign-in)
    // cannot make a tenant fail to compile: a sign-in never pays for a whole-tenant check.
    if doc.settings.is_some()
        && ops
            .iter()
            .all(|op| inert(doc, op) || op.kind == Kind::Assignment)
    {
        return admit_assignments(doc, ops).map_err(refuse);
    }
    match doc.to_tenant_after(ops) {
        Err(e) => Err(refuse(e.to_string())),
        Ok(None) => Ok(()), // the tenant is deleted
        Ok(Some(t)) => crate::snapshot::check(&t).map_err(|e| {
            refuse(match e {
                BuildError::Invalid { first, count, .. } if count > 1 => {
                    format!("{first} (and {} more problem(s))", count - 1)
                }
                BuildError::Invalid { first, .. } => first,
                e => e.to_string(),
            })
        }),
    }
}

/// Does `op` leave the tenant's model (what the builder compiles and validates) unchanged?
/// Identity rows are outside the model or checked by nothing the builder refuses (revoked
/// sessions, API keys of unknown users are skipped); a user row is inert when only its
/// bookkeeping (`updated_at`, `last_login_at`) changes.
fn inert(doc: &TenantDoc, op: &RowOp) -> bool {
    match op.kind {
        Kind::Session
        | Kind::Credential
        | Kind::Invitation
        | Kind::ApiKey
        | Kind::NotificationRule => true,
        Kind::User => match (&op.value, doc.users.get(&op.id)) {
            (Some(v), Some(cur)) => {
                super::doc::UserRow::deserialize(v).is_ok_and(|next| next.user == cur.user)
            }
            _ => false,
        },
        _ => false,
    }
}

/// The assignments `ops` write, checked against the tenant's entities.
fn admit_assignments(doc: &TenantDoc, ops: &[RowOp]) -> Result<(), String> {
    for op in ops.iter().filter(|op| op.kind == Kind::Assignment) {
        let Some(v) = &op.value else {
            continue; // a deletion cannot break anything
        };
        let row = AssignmentRow::deserialize(v)
            .map_err(|e| format!("assignment '{}' cannot be read: {e}", op.id))?;
        let mut problems = Vec::new();
        let known = |what: Named, id: &str| match what {
            Named::User => doc.users.contains_key(id),
            Named::Group => doc.groups.contains_key(id),
            Named::Role => is_builtin_role(id) || doc.roles.contains_key(id),
            Named::Node => doc.nodes.contains_key(id),
        };
        check_assignment(&row.assignment, known, |m| problems.push(m));
        if !problems.is_empty() {
            return Err(format!("assignment '{}': {}", op.id, problems.join("; ")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::rules::{self, Change, RuleError};
    use super::super::{ControlError, ControlPlane};
    use crate::control::doc::json;
    use crate::model::{Assignment, Principal};
    use crate::store::{Kind, RowOp};

    async fn femo() -> (tempfile::TempDir, ControlPlane) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path().to_str().unwrap())
            .await
            .unwrap();
        let cp = ControlPlane::open(store).await.unwrap();
        let data = crate::model::file::load_str(crate::engine::DEMO_DATA).unwrap();
        cp.seed(&data, "test").await.unwrap();
        (dir, cp)
    }

    /// Password hashes live in the store's rows only: the demo's seeded passwords are hashed,
    /// the stream and the log carry them redacted, and neither the snapshot's bytes nor a
    /// password change's commit contain a hash.
    #[tokio::test]
    async fn password_hashes_stay_in_the_store_rows() {
        let (_dir, cp) = femo().await;
        let mut bus = cp.subscribe();
        let doc = cp.doc("femo").await.unwrap();
        let hash = doc.credentials["dana"].password.clone().unwrap();
        assert!(hash.starts_with("$argon2id$"));
        // Fleet snapshots carry the document's rows: never its credentials.
        let rows = serde_json::to_string(
            &doc.to_rows("femo")
                .rows
                .iter()
                .map(|r| (r.kind, &r.value))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(
            !rows.contains("argon2") && !rows.contains("credential"),
            "{rows}"
        );
        let snap = crate::snapshot::Snapshot::build(&doc.to_tenant().unwrap()).unwrap();
        let bytes = snap.as_bytes();
        assert!(
            !bytes.windows(8).any(|w| w == b"$argon2i"),
            "hash in the snapshot"
        );
        let new = crate::identity::hash_password("Changed-pass-1").unwrap();
        cp.write("femo", "t", None, |d| {
            rules::set_password(d, "dana", &new, 1_800_000_000)
        })
        .await
        .unwrap();
        let published = bus.recv().await.unwrap();
        let text = serde_json::to_string(&*published).unwrap();
        assert!(
            text.contains("\"redacted\":true") && !text.contains("argon2"),
            "{text}"
        );
        let log = cp
            .store()
            .log(&crate::store::LogQuery::replay("femo", 0, 1000))
            .await
            .unwrap();
        let text = serde_json::to_string(&log).unwrap();
        assert!(!text.contains("argon2"), "hash in the log");
        // The row itself holds the new hash, and a restart reads it back.
        let rows = cp.store().load("femo").await.unwrap().unwrap();
        let row = rows
            .rows
            .iter()
            .find(|r| r.kind == Kind::Credential && r.id == "dana")
            .unwrap();
        assert_eq!(row.value["password"], serde_json::json!(new));
    }

    /// A change no rule made: one row `value` of `kind`.
    fn raw(kind: Kind, id: &str, value: serde_json::Value) -> Change {
        Change {
            action: "test.raw".into(),
            target: format!("{}:{id}", kind.as_str()),
            ops: vec![RowOp::put(kind, id, value, None)],
            result: serde_json::Value::Null,
        }
    }

    async fn refused(cp: &ControlPlane, change: Change, why: &str) {
        let before = cp.doc("femo").await.unwrap();
        let stored = cp.store().load("femo").await.unwrap().unwrap().revision;
        match cp.write("femo", "t", None, |_| Ok(change.clone())).await {
            Err(ControlError::Rule(RuleError::Conflict { code, message })) => {
                assert_eq!(code, "invalid_state");
                assert!(message.contains(why), "{message}");
            }
            other => panic!("expected a refusal naming '{why}', got {other:?}"),
        }
        assert_eq!(
            cp.doc("femo").await.unwrap(),
            before,
            "the document changed"
        );
        let after = cp.store().load("femo").await.unwrap().unwrap().revision;
        assert_eq!(after, stored, "the store got a commit");
    }

    #[tokio::test]
    async fn a_change_the_builder_would_reject_is_never_committed() {
        let (_dir, cp) = femo().await;
        // Full check: a user whose email is not one, a node whose parent does not exist, a
        // quota below usage, a group naming an unknown member.
        let d = cp.doc("femo").await.unwrap();
        let mut alice = d.users["alice"].clone();
        alice.user.email = "not-an-email".into();
        refused(&cp, raw(Kind::User, "alice", json(&alice)), "email").await;
        let orphan = serde_json::json!({"id": "x", "kind": "site", "parent": "nowhere"});
        refused(&cp, raw(Kind::Node, "x", orphan), "unknown parent").await;
        let mut s = d.settings.clone().unwrap();
        s.quotas.max_users = Some(1);
        refused(&cp, raw(Kind::Tenant, "femo", json(&s)), "max_users").await;
        let g =
            serde_json::json!({"id": "g", "name": "g", "status": "active", "members": ["nobody"]});
        refused(&cp, raw(Kind::Group, "g", g), "nobody").await;
        // Incremental check (assignments only): unknown role, scope, principal; bad expiry.
        let a = |role: &str, scope: &str, user: &str, expires: Option<i64>| {
            let id = crate::control::doc::assignment_id(&Principal::User(user.into()), role, scope);
            let row = crate::control::doc::AssignmentRow {
                id: id.clone(),
                assignment: Assignment {
                    principal: Principal::User(user.into()),
                    role: role.into(),
                    scope: scope.into(),
                    assigned_by: None,
                    assigned_at: Some(100),
                    expires_at: expires,
                },
            };
            raw(Kind::Assignment, &id, json(&row))
        };
        refused(
            &cp,
            a("no-such-role", "hawthorne", "alice", None),
            "unknown role",
        )
        .await;
        refused(&cp, a("viewer", "mars", "alice", None), "unknown scope").await;
        refused(
            &cp,
            a("viewer", "hawthorne", "nobody", None),
            "unknown user",
        )
        .await;
        refused(
            &cp,
            a("viewer", "hawthorne", "alice", Some(50)),
            "expires_at",
        )
        .await;
        refused(
            &cp,
            raw(Kind::Assignment, "x", serde_json::json!({"id": 5})),
            "cannot be read",
        )
        .await;
        // What passes the builder's validation is committed.
        let ok = cp
            .write("femo", "t", None, |_| {
                Ok(a("viewer", "hawthorne", "alice", Some(500)))
            })
            .await
            .unwrap();
        assert_eq!(ok.revision, d.revision + 1);
        let w = cp
            .write("femo", "t", None, |d| {
                rules::remove_member(d, "auditors", "hana")
            })
            .await
            .unwrap();
        assert_eq!(w.revision, d.revision + 2);
    }
}
