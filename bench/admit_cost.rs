//! What the pre-commit check (`control::check::admit`) costs on a large tenant (release build):
//! `cargo run --release --example admit_cost [assignments]` (default 100 000, on world M's
//! tenant shape).
//!
//! An assignment-only change checks its new assignments; any other change checks the whole
//! tenant as the commit would leave it (model copy + `snapshot::check`). For scale, the
//! follower's full rebuild of the same tenant is timed too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use portcullis::control::check::admit;
use portcullis::control::rules::{self, AssignmentCreate, UserCreate};
use portcullis::control::TenantDoc;
use portcullis::model::UserKind;
use portcullis::snapshot::Snapshot;
use portcullis::store::Commit;
use portcullis::worlds;

/// Median of `n` runs of `f`, milliseconds.
fn median(n: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[n / 2]
}

fn main() {
    let assignments: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    // World M's tenant shape (50k nodes, 20k users, 200 groups), `assignments` of them.
    let spec = worlds::TenantSpec {
        assignments,
        ..worlds::M
    };
    let t = worlds::tenant("b", spec, 7);
    let c = rules::import(&t, worlds::NOW, &[]).unwrap();
    let mut doc = TenantDoc::default();
    doc.apply(&Commit {
        tenant: "b".into(),
        revision: 1,
        actor: "bench".into(),
        at_ms: 0,
        action: c.action,
        target: c.target,
        ops: c.ops,
    })
    .unwrap();
    println!(
        "tenant: {} assignments, {} users, {} nodes, {} groups",
        doc.assignments.len(),
        doc.users.len(),
        doc.nodes.len(),
        doc.groups.len()
    );

    let assign = rules::create_assignment(
        &doc,
        &AssignmentCreate {
            user: Some(t.users[3].id.clone()),
            group: None,
            role: "viewer".into(),
            scope: t.nodes[t.nodes.len() / 2].id.clone(),
            expires_at: None,
        },
        "bench",
        worlds::NOW,
    )
    .unwrap();
    let ms = median(1001, || admit(&doc, "b", &assign.ops).unwrap());
    println!("admit, one assignment created (incremental): {:.4} ms", ms);

    let user = rules::create_user(
        &doc,
        &UserCreate {
            id: Some("new-user".into()),
            first_name: None,
            last_name: None,
            password: None,
            logout: None,
            groups: Vec::new(),
            email: "new-user@bench.example".into(),
            name: None,
            kind: UserKind::Member,
            status: None,
        },
        worlds::NOW,
        &Default::default(),
    )
    .unwrap();
    let ms = median(11, || admit(&doc, "b", &user.ops).unwrap());
    println!("admit, one user created (full check): {:.2} ms", ms);
    let ms = median(11, || {
        doc.to_tenant_after(&user.ops).unwrap().unwrap();
    });
    println!("  of which the model of the result (copy): {:.2} ms", ms);

    let ms = median(5, || {
        Snapshot::build(&doc.to_tenant().unwrap()).unwrap();
    });
    println!(
        "for scale, the follower's full rebuild (copy + check + compile + archive): {:.2} ms",
        ms
    );
}
