//! The follower's assignment-only rebuilds (a compiled tenant patched in place) serve exactly
//! the snapshot a full build of the same document gives, across creates, updates, deletes,
//! bursts that coalesce several commits, and commits that force a full rebuild in between —
//! also for a tenant with plugins, whose plugin roles gain and lose assignments incrementally
//! while plugin and role changes take the full path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use portcullis::control::rules::{
    self, AssignmentCreate, AssignmentPatch, PluginUpload, RolePatch, UserCreate,
};
use portcullis::control::{follower, ControlPlane};
use portcullis::model::file::DataFile;
use portcullis::model::{PluginModule, Tenant, UserKind, UserStatus};
use portcullis::snapshot::{Registry, Snapshot};
use portcullis::worlds::{self, Rng};

async fn wait_for(reg: &Registry, tenant: &str, revision: u64) {
    let mut changes = reg.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reg.get(tenant).map_or(0, |s| s.revision()) < revision {
        assert!(
            tokio::time::Instant::now() < deadline,
            "revision {revision} never became visible"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
    }
}

async fn assert_same_as_full_build(cp: &ControlPlane, reg: &Registry, step: usize) {
    let doc = cp.doc("t").await.expect("tenant exists");
    let want = Snapshot::build(&doc.to_tenant().expect("live tenant")).expect("valid tenant");
    let got = reg.get("t").expect("snapshot installed");
    assert_eq!(got.revision(), doc.revision, "step {step}");
    assert!(
        got.as_bytes() == want.as_bytes(),
        "step {step}: served snapshot differs from a full build"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_rebuilds_match_full_builds() {
    drive(worlds::tenant("t", worlds::S, 21), 5, &[]).await;
}

/// A tenant with two plugins and two roles naming them: half the new assignments (and some
/// removals) are of those roles; the occasional plugin replacement or role change recompiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_rebuilds_match_full_builds_with_plugins() {
    let mut t = worlds::tenant("t", worlds::S, 22);
    t.plugins = vec![
        PluginModule::new("first", b"\0asm-first".to_vec()),
        PluginModule {
            name: "second".into(),
            description: Some("the second module".into()),
            wasm: vec![7u8; 3000].into(),
            canary: None,
        },
    ];
    t.roles[0].plugin = Some("second".into());
    t.roles[1].plugin = Some("first".into());
    let favour = [t.roles[0].id.clone(), t.roles[1].id.clone()];
    drive(t, 6, &favour).await;
}

/// Seeds `t` (as tenant `t`), follows it, and runs 60 bursts of random writes, comparing the
/// served snapshot with a full build after each. Roles in `favour` get half of the new
/// assignments and removals; with any, some full-rebuild writes change plugins or roles.
async fn drive(t: Tenant, seed: u64, favour: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = portcullis::store::open(dir.path().to_str().expect("utf-8 path"))
        .await
        .expect("store");
    let cp = Arc::new(ControlPlane::open(store).await.expect("control plane"));
    cp.seed(
        &DataFile {
            tenants: vec![t.clone()],
            tests: vec![],
        },
        "seed",
    )
    .await
    .expect("seed");
    let reg = Arc::new(Registry::new());
    follower::start(cp.clone(), reg.clone()).await;
    assert_same_as_full_build(&cp, &reg, 0).await;

    let live_users: Vec<String> = t
        .users
        .iter()
        .filter(|u| u.status != UserStatus::Deleted)
        .map(|u| u.id.clone())
        .collect();
    let mut rng = Rng::new(seed);
    for step in 1..=60 {
        // A burst of 1..=4 writes, not waiting in between (the follower coalesces them).
        let mut last = 0;
        for k in 0..1 + rng.below(4) {
            let ids: Vec<String> = cp
                .read("t", |d| d.assignments.keys().cloned().collect())
                .await
                .expect("read");
            let w = match rng.below(10) {
                0..=4 => {
                    let (user, group) = if rng.chance(80) {
                        (Some(rng.pick(&live_users).clone()), None)
                    } else {
                        (None, Some(rng.pick(&t.groups).id.clone()))
                    };
                    let req = AssignmentCreate {
                        user,
                        group,
                        role: if !favour.is_empty() && rng.chance(50) {
                            rng.pick(favour).clone()
                        } else {
                            rng.pick(&t.all_roles()).id.clone()
                        },
                        scope: rng.pick(&t.nodes).id.clone(),
                        expires_at: rng.chance(30).then_some(worlds::NOW + 3600),
                    };
                    let actor = format!("admin-{}", rng.below(3));
                    cp.write("t", &actor, None, |d| {
                        rules::create_assignment(d, &req, &actor, worlds::NOW)
                    })
                    .await
                }
                5..=6 => {
                    let favoured: Vec<&String> = ids
                        .iter()
                        .filter(|id| favour.iter().any(|r| id.contains(&format!("~{r}~"))))
                        .collect();
                    let id = if !favoured.is_empty() && rng.chance(50) {
                        (*rng.pick(&favoured)).clone()
                    } else {
                        rng.pick(&ids).clone()
                    };
                    cp.write("t", "admin", None, |d| rules::delete_assignment(d, &id))
                        .await
                }
                7..=8 => {
                    let id = rng.pick(&ids).clone();
                    let patch = AssignmentPatch {
                        expires_at: Some(rng.chance(50).then_some(worlds::NOW + 7200)),
                    };
                    cp.write("t", "admin", None, |d| {
                        rules::update_assignment(d, &id, &patch, worlds::NOW)
                    })
                    .await
                }
                _ if !favour.is_empty() && rng.chance(50) => {
                    // Plugin and role rows are tenant state: the follower recompiles.
                    if rng.chance(50) {
                        let up = PluginUpload {
                            name: "second".into(),
                            description: Some(format!("version {step}-{k}")),
                            wasm: vec![step as u8; 3000 + step].into(),
                            canary: None,
                        };
                        cp.write("t", "admin", None, |d| {
                            rules::put_plugin(d, &up, "admin", worlds::NOW)
                        })
                        .await
                    } else {
                        let role = rng.pick(favour).clone();
                        let patch = RolePatch {
                            name: None,
                            permissions: None,
                            plugin: Some(Some(
                                if rng.chance(50) { "first" } else { "second" }.into(),
                            )),
                        };
                        cp.write("t", "admin", None, |d| rules::update_role(d, &role, &patch))
                            .await
                    }
                }
                _ => {
                    // Not an assignment: the follower recompiles the tenant.
                    let id = format!("new-{step}-{k}");
                    let req = UserCreate {
                        id: Some(id.clone()),
                        first_name: None,
                        last_name: None,
                        password: None,
                        logout: None,
                        groups: Vec::new(),
                        email: format!("{id}@t.example"),
                        name: None,
                        kind: UserKind::Member,
                        status: None,
                    };
                    cp.write("t", "admin", None, |d| {
                        rules::create_user(d, &req, worlds::NOW, &Default::default())
                    })
                    .await
                }
            };
            if let Ok(w) = w {
                last = last.max(w.revision);
            }
        }
        wait_for(&reg, "t", last).await;
        assert_same_as_full_build(&cp, &reg, step).await;
    }
}
