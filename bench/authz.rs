//! What authorizing a management call adds (harness = false): p50/p99 of a user create through
//! the control plane without authorization (the platform token), authorized for an
//! administrator (kind check), and authorized for a member through the engine (`user:create`
//! held through a role at the root), interleaved in one run on one store. Each authorized write
//! takes the caller's guard from the tenant's snapshot at the revision it writes on, as the
//! management API does; before each measured write the snapshot is caught up (untimed), so the
//! numbers are the authorization's own cost. Also: the guard and policy evaluation alone.
//!
//! `cargo bench --bench authz [-- N]` (default N = 400 creates per variant; tenant of 10k
//! assignments, embedded store in a temp dir).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use portcullis::control::authz::Guard;
use portcullis::control::rules::{self, NewUserSecrets, UserCreate};
use portcullis::control::{follower, policy, ControlPlane};
use portcullis::model::file::DataFile;
use portcullis::model::{Assignment, Principal, Role, User, UserKind};
use portcullis::snapshot::{Registry, SnapshotGuard};
use portcullis::worlds;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn user(like: &User, id: &str, kind: UserKind) -> User {
    let mut u = like.clone();
    u.id = id.into();
    u.email = format!("{id}@bench.example");
    u.kind = kind;
    u
}

async fn caught_up(cp: &ControlPlane, reg: &Registry) -> SnapshotGuard {
    let rev = cp.doc("b").await.unwrap().revision;
    let mut changes = reg.subscribe();
    loop {
        if let Some(s) = reg.get("b") {
            if s.view().revision.to_native() >= rev {
                return s;
            }
        }
        let _ = changes.changed().await;
    }
}

fn create(i: usize, tag: &str) -> UserCreate {
    serde_json::from_value(serde_json::json!({
        "id": format!("{tag}-{i}"),
        "email": format!("{tag}-{i}@bench.example"),
        "first_name": "Bench",
    }))
    .unwrap()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut t = worlds::tenant(
            "b",
            worlds::TenantSpec {
                nodes: 5_000,
                users: 2_000,
                groups: 200,
                assignments: 10_000,
                custom_roles: 20,
            },
            7,
        );
        let like = t.users[0].clone();
        t.users.push(user(&like, "boss-admin", UserKind::Admin));
        t.users.push(user(&like, "user-manager", UserKind::Member));
        t.roles.push(Role {
            id: "user-manager".into(),
            name: "User manager".into(),
            permissions: vec!["user:*".parse().unwrap(), "*:read".parse().unwrap()],
            plugin: None,
            tier: None,
        });
        let roots: Vec<String> = t
            .nodes
            .iter()
            .filter(|n| n.parent.is_none())
            .map(|n| n.id.clone())
            .collect();
        for r in &roots {
            t.assignments.push(Assignment {
                principal: Principal::User("user-manager".into()),
                role: "user-manager".into(),
                scope: r.clone(),
                assigned_by: None,
                assigned_at: None,
                expires_at: None,
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let store = portcullis::store::open(dir.path().to_str().unwrap())
            .await
            .unwrap();
        let cp = Arc::new(ControlPlane::open(store).await.unwrap());
        cp.seed(
            &DataFile {
                tenants: vec![t],
                tests: vec![],
            },
            "bench",
        )
        .await
        .unwrap();
        let reg = Arc::new(Registry::new());
        follower::start(cp.clone(), reg.clone()).await;
        let secrets = NewUserSecrets::default();
        let now = worlds::NOW;
        let (mut plain, mut admin, mut member, mut guard_only) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            for (variant, out) in [
                ("plain", &mut plain),
                ("admin", &mut admin),
                ("member", &mut member),
            ] {
                let snap = caught_up(&cp, &reg).await;
                let req = create(i, variant);
                let start = Instant::now();
                let w = match variant {
                    "plain" => {
                        cp.write("b", "platform", None, |d| {
                            rules::create_user(d, &req, now, &secrets)
                        })
                        .await
                    }
                    caller => {
                        let who = if caller == "admin" {
                            "boss-admin"
                        } else {
                            "user-manager"
                        };
                        let snap = reg.get("b").unwrap_or(snap);
                        let g = Guard::user(snap.view(), who, now).unwrap();
                        cp.write("b", who, None, |d| {
                            assert_eq!(g.revision(), Some(d.revision), "snapshot behind");
                            let t0 = Instant::now();
                            policy::create_user(&g, &req)?;
                            guard_only.push(t0.elapsed().as_secs_f64() * 1e6);
                            rules::create_user(d, &req, now, &secrets)
                        })
                        .await
                    }
                };
                w.unwrap();
                out.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        println!("user create through the control plane, {n} per variant, interleaved, ms:");
        println!("| variant | p50 | p90 | p99 |");
        println!("|---|---|---|---|");
        for (name, v) in [
            ("platform token (no authorization)", &mut plain),
            ("administrator (authorized: kind)", &mut admin),
            ("member with user:create (authorized: engine)", &mut member),
        ] {
            println!(
                "| {name} | {:.3} | {:.3} | {:.3} |",
                pct(v, 0.5),
                pct(v, 0.9),
                pct(v, 0.99)
            );
        }
        println!(
            "guard + policy evaluation alone: p50 {:.2} µs, p99 {:.2} µs",
            pct(&mut guard_only, 0.5),
            pct(&mut guard_only, 0.99)
        );

        // A page of the users list: everything (the platform) vs filtered to where a caller
        // holds `user:read` (one site): the visible set from the snapshot, then the page.
        let snap = caught_up(&cp, &reg).await;
        let doc = cp.doc("b").await.unwrap();
        // The largest subtree below a root: a site.
        let root = doc.nodes.values().find(|n| n.parent.is_none()).unwrap().id.clone();
        let site = doc
            .nodes
            .values()
            .filter(|n| n.parent.as_deref() == Some(root.as_str()))
            .map(|n| n.id.clone())
            .next()
            .unwrap();
        drop(snap);
        cp.write("b", "platform", None, |d| {
            let mut r = create(0, "site-reader");
            r.id = Some("site-reader".into());
            rules::create_user(d, &r, now, &secrets)
        })
        .await
        .unwrap();
        cp.write("b", "platform", None, |d| {
            rules::create_assignment(
                d,
                &rules::AssignmentCreate {
                    user: Some("site-reader".into()),
                    group: None,
                    role: "user-manager".into(),
                    scope: site.clone(),
                    expires_at: None,
                },
                "bench",
                now,
            )
        })
        .await
        .unwrap();
        let snap = caught_up(&cp, &reg).await;
        let doc = cp.doc("b").await.unwrap();
        let q = portcullis::control::views::ListQuery::Users(Default::default());
        let (mut all, mut scoped) = (Vec::new(), Vec::new());
        let mut shown = 0;
        for _ in 0..200 {
            let t0 = Instant::now();
            let v = portcullis::control::views::list(&doc, &q, now, &None);
            std::hint::black_box(v);
            all.push(t0.elapsed().as_secs_f64() * 1e3);
            let t0 = Instant::now();
            let g = Guard::user(snap.view(), "site-reader", now).unwrap();
            let vis = g.visible_users("user:read");
            let v = portcullis::control::views::list(&doc, &q, now, &vis);
            shown = v["total"].as_u64().unwrap_or(0);
            std::hint::black_box(v);
            scoped.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "users list, first page of {} users, ms: everything p50 {:.3} p99 {:.3}; filtered to one site ({shown} visible) p50 {:.3} p99 {:.3}",
            doc.users.len(),
            pct(&mut all, 0.5),
            pct(&mut all, 0.99),
            pct(&mut scoped, 0.5),
            pct(&mut scoped, 0.99)
        );
    });
}
