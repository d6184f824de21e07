//! One conformance suite, run against every store engine: `embedded::*` and `postgres::*` are
//! the same test functions. PostgreSQL tests need a server (`bash tests/run.sh` starts one); they
//! fail, never skip, when it is unreachable. Each PostgreSQL test works in its own schema, dropped
//! at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/store.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    commit, replay, revs_after, revs_of, rows_of, state_of, triples, Engine, State, Target,
};
use portcullis::store::embedded::EmbeddedStore;
use portcullis::store::{
    Commit, CommitWindow, Kind, LogEdit, LogEditor, LogQuery, RowOp, Store, StoreError,
    MAX_KEY_BYTES,
};
use serde_json::{json, Value};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let target = crate::common::Target::new(crate::common::Engine::Embedded).await;
                    crate::$case(&target).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let target = crate::common::Target::new(crate::common::Engine::Postgres).await;
                    crate::$case(&target).await;
                }
            )*
        }
    };
}

conformance!(
    factory_picks_the_engine,
    first_commit_is_revision_one,
    revision_must_be_previous_plus_one,
    ops_upsert_and_delete_rows,
    documents_round_trip,
    tenants_are_listed_in_byte_order,
    log_queries_filter_limit_and_order,
    tenants_are_isolated,
    invalid_commits_are_rejected,
    concurrent_commits_to_one_tenant,
    concurrent_commits_to_different_tenants,
    large_commit,
    reopen_sees_everything,
    old_layout_is_upgraded,
    old_control_plane_store_loads,
    numbers_keep_their_checksums,
    corrupt_rows_and_commits_are_refused,
    log_rewrites_keep_replace_and_drop,
    log_windows_are_slices_of_the_log,
);

fn conflict(result: Result<(), StoreError>) -> (String, u64, u64) {
    match result {
        Err(StoreError::Conflict {
            tenant,
            expected,
            actual,
        }) => (tenant, expected, actual),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn all(tenant: &str) -> LogQuery {
    LogQuery::replay(tenant, 0, usize::MAX)
}

async fn factory_picks_the_engine(target: &Target) {
    let store = target.open().await;
    let expected = match target.engine {
        Engine::Embedded => "embedded",
        Engine::Postgres => "postgres",
    };
    assert_eq!(store.engine(), expected);
    assert!(matches!(
        portcullis::store::open("").await,
        Err(StoreError::Location(_))
    ));
    if target.engine == Engine::Postgres {
        let bad = common::with_schema(&common::pg_base_url(), "No-Such-Schema!");
        assert!(matches!(
            portcullis::store::open(&bad).await,
            Err(StoreError::Location(_))
        ));
    }
}

async fn first_commit_is_revision_one(target: &Target) {
    let store = target.open().await;
    assert_eq!(store.load("t").await.unwrap(), None);
    assert_eq!(store.tenants().await.unwrap(), vec![]);
    assert_eq!(store.log(&all("t")).await.unwrap(), vec![]);

    let op = || {
        vec![RowOp::put(
            Kind::Tenant,
            "t",
            json!({"rbac": "basic"}),
            None,
        )]
    };
    assert_eq!(
        conflict(
            store
                .commit(&commit("t", 2, "alice", "tenant.create", op()))
                .await
        ),
        ("t".to_string(), 1, 0)
    );
    assert!(matches!(
        store
            .commit(&commit("t", 0, "alice", "tenant.create", op()))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.load("t").await.unwrap(), None);
    assert_eq!(store.tenants().await.unwrap(), vec![]);
    assert_eq!(store.log(&all("t")).await.unwrap(), vec![]);

    let first = commit("t", 1, "alice", "tenant.create", op());
    store.commit(&first).await.unwrap();
    let loaded = store.load("t").await.unwrap().unwrap();
    assert_eq!(loaded.tenant, "t");
    assert_eq!(loaded.revision, 1);
    assert_eq!(
        triples(&loaded),
        vec![(Kind::Tenant, "t".to_string(), json!({"rbac": "basic"}))]
    );
    assert_eq!(store.tenants().await.unwrap(), vec![("t".to_string(), 1)]);
    assert_eq!(store.log(&all("t")).await.unwrap(), vec![first]);
}

async fn revision_must_be_previous_plus_one(target: &Target) {
    let store = target.open().await;
    let first = commit(
        "t",
        1,
        "alice",
        "user.create",
        vec![RowOp::put(Kind::User, "u", json!({"v": 1}), None)],
    );
    store.commit(&first).await.unwrap();
    let other = |revision| {
        commit(
            "t",
            revision,
            "bob",
            "user.update",
            vec![
                RowOp::put(Kind::User, "u", json!({"v": 99}), Some(json!({"v": 1}))),
                RowOp::put(Kind::User, "w", json!({"v": 99}), None),
            ],
        )
    };
    assert_eq!(
        conflict(store.commit(&other(1)).await),
        ("t".to_string(), 0, 1)
    );
    assert_eq!(
        conflict(store.commit(&other(3)).await),
        ("t".to_string(), 2, 1)
    );
    assert_eq!(
        conflict(store.commit(&other(i64::MAX as u64)).await),
        ("t".to_string(), i64::MAX as u64 - 1, 1)
    );
    assert!(matches!(
        store.commit(&other(i64::MAX as u64 + 1)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.commit(&other(u64::MAX)).await,
        Err(StoreError::Invalid(_))
    ));
    // Nothing of the rejected commits was applied.
    let loaded = store.load("t").await.unwrap().unwrap();
    assert_eq!(loaded.revision, 1);
    assert_eq!(
        triples(&loaded),
        vec![(Kind::User, "u".to_string(), json!({"v": 1}))]
    );
    assert_eq!(store.log(&all("t")).await.unwrap(), vec![first.clone()]);

    let second = other(2);
    store.commit(&second).await.unwrap();
    assert_eq!(store.load("t").await.unwrap().unwrap().revision, 2);
    assert_eq!(store.tenants().await.unwrap(), vec![("t".to_string(), 2)]);
    assert_eq!(store.log(&all("t")).await.unwrap(), vec![first, second]);
}

async fn ops_upsert_and_delete_rows(target: &Target) {
    let store = target.open().await;
    let c1 = commit(
        "t",
        1,
        "import",
        "import",
        vec![
            RowOp::put(Kind::User, "b", json!({"name": "B"}), None),
            RowOp::put(Kind::User, "a", json!({"name": "A"}), None),
            RowOp::put(Kind::Node, "n1", json!({"kind": "site"}), None),
            RowOp::put(Kind::Role, "r", json!({"permissions": ["*"]}), None),
            RowOp::put(Kind::Tenant, "t", json!({"rbac": "enterprise"}), None),
            RowOp::put(Kind::Group, "g", json!({"members": ["a"]}), None),
            RowOp::put(Kind::Assignment, "x", json!({"user": "a"}), None),
            RowOp::put(Kind::Plugin, "p", json!({"wasm": "AAEC"}), None),
        ],
    );
    store.commit(&c1).await.unwrap();
    let loaded = store.load("t").await.unwrap().unwrap();
    // Sorted by (kind, id), kinds in `Kind`'s order.
    let order: Vec<(Kind, &str)> = loaded
        .rows
        .iter()
        .map(|r| (r.kind, r.id.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![
            (Kind::Tenant, "t"),
            (Kind::Node, "n1"),
            (Kind::Role, "r"),
            (Kind::User, "a"),
            (Kind::User, "b"),
            (Kind::Group, "g"),
            (Kind::Assignment, "x"),
            (Kind::Plugin, "p"),
        ]
    );

    let c2 = commit(
        "t",
        2,
        "alice",
        "mixed",
        vec![
            RowOp::put(
                Kind::User,
                "a",
                json!({"name": "A2"}),
                Some(json!({"name": "A"})),
            ),
            RowOp::delete(Kind::User, "b", Some(json!({"name": "B"}))),
            RowOp::delete(Kind::User, "never-existed", None),
            RowOp::put(Kind::Node, "n2", json!({"kind": "zone"}), None),
            RowOp::delete(Kind::Node, "n2", Some(json!({"kind": "zone"}))),
            RowOp::put(Kind::Role, "r2", json!({"v": 1}), None),
            RowOp::put(Kind::Role, "r2", json!({"v": 2}), Some(json!({"v": 1}))),
            RowOp::delete(Kind::Node, "n1", Some(json!({"kind": "site"}))),
            RowOp::put(Kind::Node, "n1", json!({"kind": "building"}), None),
        ],
    );
    store.commit(&c2).await.unwrap();
    let mut expected = State::new();
    expected.insert((Kind::Tenant, "t".into()), json!({"rbac": "enterprise"}));
    expected.insert((Kind::Node, "n1".into()), json!({"kind": "building"}));
    expected.insert((Kind::Role, "r".into()), json!({"permissions": ["*"]}));
    expected.insert((Kind::Role, "r2".into()), json!({"v": 2}));
    expected.insert((Kind::User, "a".into()), json!({"name": "A2"}));
    expected.insert((Kind::Group, "g".into()), json!({"members": ["a"]}));
    expected.insert((Kind::Assignment, "x".into()), json!({"user": "a"}));
    expected.insert((Kind::Plugin, "p".into()), json!({"wasm": "AAEC"}));
    let loaded = store.load("t").await.unwrap().unwrap();
    assert_eq!(loaded.revision, 2);
    assert_eq!(triples(&loaded), rows_of(&expected));
    let log = store.log(&all("t")).await.unwrap();
    assert_eq!(log, vec![c1, c2]);
    assert_eq!(replay(&log), expected);
    // Each row carries the revision of the commit that last wrote it; untouched rows keep theirs.
    assert_eq!(revs_of(&loaded), revs_after(&log));
    assert_eq!(revs_of(&loaded)[&(Kind::Role, "r".to_string())], 1);
    assert_eq!(revs_of(&loaded)[&(Kind::Node, "n1".to_string())], 2);

    // Deleting every row leaves the tenant with its revision and no rows.
    let ops = expected
        .iter()
        .map(|((k, id), v)| RowOp::delete(*k, id.clone(), Some(v.clone())))
        .collect();
    store
        .commit(&commit("t", 3, "alice", "purge", ops))
        .await
        .unwrap();
    let loaded = store.load("t").await.unwrap().unwrap();
    assert_eq!((loaded.revision, loaded.rows.len()), (3, 0));
    // An empty commit still advances the revision.
    store
        .commit(&commit("t", 4, "alice", "noop", vec![]))
        .await
        .unwrap();
    assert_eq!(store.tenants().await.unwrap(), vec![("t".to_string(), 4)]);
}

async fn documents_round_trip(target: &Target) {
    let store = target.open().await;
    let docs = [
        json!({}),
        json!([]),
        json!(true),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(0.1),
        json!(-1.5e300),
        json!(1.0),
        json!("plain"),
        json!("quotes \" backslash \\ newline \n tab \t ctrl \u{1} é ß 漢字 🚪"),
        json!({"nested": {"deep": [1, [2, [3, {"x": null}]]], "b": false}, "a": "z"}),
        json!({"zeta": 1, "alpha": 2, "": 3, "é": 4}),
    ];
    let ops: Vec<RowOp> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| RowOp::put(Kind::Node, format!("n{i:02}"), d.clone(), None))
        .chain([RowOp::put(
            Kind::User,
            "id with spaces/ünïcode 🚪",
            json!({}),
            Some(json!({"before": [1, 2]})),
        )])
        .collect();
    let c = Commit {
        target: "node:n00".into(),
        at_ms: -5,
        ..commit("tenant ü/🚪 'x'", 1, "actor \"q\"", "action.ü", ops)
    };
    store.commit(&c).await.unwrap();
    let loaded = store.load(&c.tenant).await.unwrap().unwrap();
    assert_eq!(state_of(&loaded), replay([&c]));
    assert_eq!(triples(&loaded), rows_of(&replay([&c])));
    assert_eq!(store.log(&all(&c.tenant)).await.unwrap(), vec![c.clone()]);
    assert_eq!(store.tenants().await.unwrap(), vec![(c.tenant.clone(), 1)]);
}

async fn tenants_are_listed_in_byte_order(target: &Target) {
    let store = target.open().await;
    let put = |t: &str, rev| {
        commit(
            t,
            rev,
            "a",
            "x",
            vec![RowOp::put(Kind::Node, "n", json!(rev), None)],
        )
    };
    for t in ["b", "a", "ä", "Z", "c-x", "a-b", "a b"] {
        store.commit(&put(t, 1)).await.unwrap();
    }
    store.commit(&put("c-x", 2)).await.unwrap();
    // A tenant whose only commit failed does not exist.
    conflict(store.commit(&put("never", 2)).await);
    assert_eq!(
        store.tenants().await.unwrap(),
        vec![
            ("Z".to_string(), 1),
            ("a".to_string(), 1),
            ("a b".to_string(), 1),
            ("a-b".to_string(), 1),
            ("b".to_string(), 1),
            ("c-x".to_string(), 2),
            ("ä".to_string(), 1),
        ]
    );
}

/// The commits used by the log test: two tenants, varied headers.
fn log_fixture() -> Vec<Commit> {
    let spec: [(&str, &str, &str, &str, i64); 10] = [
        ("a", "alice", "user.create", "user:u1", 1_000),
        ("a", "bob", "user.delete", "user:u1", 2_000),
        ("b", "alice", "role.update", "role:r", 2_000),
        ("a", "system", "import", "tenant:a", 3_000),
        ("b", "bob", "user_x.odd", "user:u1", 4_000),
        ("a", "alice", "userXcreate", "user:u2", 5_000),
        ("b", "alice", "user.create", "user:u2", 6_000),
        ("a", "bob", "user.deactivate", "user:u2", 7_000),
        ("b", "system", "user.create", "user:u3", 7_000),
        ("a", "alice", "role.update", "role:r", 9_000),
    ];
    let mut revisions: BTreeMap<&str, u64> = BTreeMap::new();
    spec.iter()
        .enumerate()
        .map(|(i, (tenant, actor, action, target, at_ms))| {
            let rev = revisions.entry(tenant).or_insert(0);
            *rev += 1;
            Commit {
                tenant: tenant.to_string(),
                revision: *rev,
                actor: actor.to_string(),
                at_ms: *at_ms,
                action: action.to_string(),
                target: target.to_string(),
                ops: vec![RowOp::put(
                    Kind::User,
                    format!("u{i}"),
                    json!({"i": i}),
                    None,
                )],
            }
        })
        .collect()
}

async fn log_queries_filter_limit_and_order(target: &Target) {
    let store = target.open().await;
    let commits = log_fixture();
    for c in &commits {
        store.commit(c).await.unwrap();
    }
    let mut ordered = commits.clone();
    ordered.sort_by(|x, y| (&x.tenant, x.revision).cmp(&(&y.tenant, y.revision)));
    let q = |f: &dyn Fn(&mut LogQuery)| {
        let mut q = LogQuery {
            limit: 100,
            ..LogQuery::default()
        };
        f(&mut q);
        q
    };
    let heads = |log: Vec<Commit>| -> Vec<(String, u64)> {
        log.into_iter().map(|c| (c.tenant, c.revision)).collect()
    };
    let h = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(t, r)| (t.to_string(), *r)).collect()
    };

    // Everything, in (tenant, revision) order, commits intact.
    assert_eq!(store.log(&q(&|_| {})).await.unwrap(), ordered);
    // Hand-checked cases.
    let cases: Vec<(LogQuery, Vec<(String, u64)>)> = vec![
        (
            q(&|q| q.tenant = Some("a".into())),
            h(&[("a", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5), ("a", 6)]),
        ),
        (
            q(&|q| {
                q.tenant = Some("a".into());
                q.after_revision = Some(4);
            }),
            h(&[("a", 5), ("a", 6)]),
        ),
        (
            q(&|q| q.after_revision = Some(3)),
            h(&[("a", 4), ("a", 5), ("a", 6), ("b", 4)]),
        ),
        (
            q(&|q| q.actor = Some("alice".into())),
            h(&[("a", 1), ("a", 4), ("a", 6), ("b", 1), ("b", 3)]),
        ),
        (
            q(&|q| q.action_prefix = Some("user.".into())),
            h(&[("a", 1), ("a", 2), ("a", 5), ("b", 3), ("b", 4)]),
        ),
        // `_` and `%` are literal, not wildcards.
        (
            q(&|q| q.action_prefix = Some("user_".into())),
            h(&[("b", 2)]),
        ),
        (q(&|q| q.action_prefix = Some("%".into())), h(&[])),
        (
            q(&|q| q.target = Some("user:u1".into())),
            h(&[("a", 1), ("a", 2), ("b", 2)]),
        ),
        (
            q(&|q| q.since_ms = Some(7_000)),
            h(&[("a", 5), ("a", 6), ("b", 4)]),
        ),
        (
            q(&|q| q.until_ms = Some(2_000)),
            h(&[("a", 1), ("a", 2), ("b", 1)]),
        ),
        (
            q(&|q| {
                q.since_ms = Some(2_000);
                q.until_ms = Some(4_000);
            }),
            h(&[("a", 2), ("a", 3), ("b", 1), ("b", 2)]),
        ),
        (
            q(&|q| {
                q.tenant = Some("b".into());
                q.actor = Some("alice".into());
                q.action_prefix = Some("user".into());
                q.since_ms = Some(6_000);
            }),
            h(&[("b", 3)]),
        ),
        (
            q(&|q| {
                q.actor = Some("alice".into());
                q.limit = 2;
            }),
            h(&[("a", 1), ("a", 4)]),
        ),
        (
            q(&|q| {
                q.tenant = Some("a".into());
                q.limit = 0;
            }),
            h(&[]),
        ),
        (q(&|q| q.tenant = Some("nobody".into())), h(&[])),
        (
            q(&|q| {
                q.tenant = Some("a".into());
                q.after_revision = Some(u64::MAX);
            }),
            h(&[]),
        ),
        (q(&|q| q.actor = Some("ALICE".into())), h(&[])),
    ];
    for (query, expected) in cases {
        assert_eq!(
            heads(store.log(&query).await.unwrap()),
            expected,
            "{query:?}"
        );
    }
    // Every combination of one value per filter, against the reference filter.
    let tenants = [None, Some("a"), Some("b")];
    let actors = [None, Some("alice"), Some("bob")];
    let prefixes = [None, Some("user."), Some("role"), Some("")];
    let targets = [None, Some("user:u2")];
    let windows = [
        (None, None),
        (Some(2_000), None),
        (Some(3_000), Some(7_000)),
    ];
    let afters = [None, Some(2)];
    let limits = [1, 3, usize::MAX];
    let mut checked = 0;
    for t in tenants {
        for a in actors {
            for p in prefixes {
                for tg in targets {
                    for (since, until) in windows {
                        for after in afters {
                            for limit in limits {
                                let query = LogQuery {
                                    tenant: t.map(String::from),
                                    after_revision: after,
                                    actor: a.map(String::from),
                                    action_prefix: p.map(String::from),
                                    target: tg.map(String::from),
                                    since_ms: since,
                                    until_ms: until,
                                    limit,
                                };
                                let expected: Vec<Commit> = ordered
                                    .iter()
                                    .filter(|c| {
                                        query.matches(
                                            &c.tenant, c.revision, &c.actor, c.at_ms, &c.action,
                                            &c.target,
                                        )
                                    })
                                    .take(limit)
                                    .cloned()
                                    .collect();
                                assert_eq!(store.log(&query).await.unwrap(), expected, "{query:?}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 3 * 4 * 2 * 3 * 2 * 3);
}

async fn tenants_are_isolated(target: &Target) {
    let store = target.open().await;
    for (t, v) in [("x", 1), ("y", 2)] {
        store
            .commit(&commit(
                t,
                1,
                "a",
                "import",
                vec![
                    RowOp::put(Kind::User, "alice", json!({"t": v}), None),
                    RowOp::put(Kind::Node, "root", json!({"t": v}), None),
                    RowOp::put(Kind::Tenant, "x", json!({"t": v}), None),
                ],
            ))
            .await
            .unwrap();
    }
    store
        .commit(&commit(
            "x",
            2,
            "a",
            "user.delete",
            vec![
                RowOp::delete(Kind::User, "alice", None),
                RowOp::put(Kind::Node, "root", json!({"t": 10}), None),
            ],
        ))
        .await
        .unwrap();
    // y's revision is independent of x's.
    assert_eq!(
        conflict(store.commit(&commit("y", 3, "a", "x", vec![])).await),
        ("y".to_string(), 2, 1)
    );
    let x = store.load("x").await.unwrap().unwrap();
    let y = store.load("y").await.unwrap().unwrap();
    assert_eq!(x.revision, 2);
    assert_eq!(
        triples(&x),
        vec![
            (Kind::Tenant, "x".to_string(), json!({"t": 1})),
            (Kind::Node, "root".to_string(), json!({"t": 10})),
        ]
    );
    assert_eq!(y.revision, 1);
    assert_eq!(
        triples(&y),
        vec![
            (Kind::Tenant, "x".to_string(), json!({"t": 2})),
            (Kind::Node, "root".to_string(), json!({"t": 2})),
            (Kind::User, "alice".to_string(), json!({"t": 2})),
        ]
    );
    assert_eq!(store.log(&all("x")).await.unwrap().len(), 2);
    assert_eq!(store.log(&all("y")).await.unwrap().len(), 1);
    // A tenant id that is a prefix of another is a different tenant.
    assert_eq!(store.load("").await.unwrap(), None);
    assert_eq!(store.load("x ").await.unwrap(), None);
}

async fn invalid_commits_are_rejected(target: &Target) {
    let store = target.open().await;
    let ok = || vec![RowOp::put(Kind::User, "u", json!({}), None)];
    let long = "x".repeat(MAX_KEY_BYTES + 1);
    let invalid = vec![
        commit("", 1, "a", "x", ok()),
        commit("t\0", 1, "a", "x", ok()),
        commit(&long, 1, "a", "x", ok()),
        commit("t", 1, "a\0", "x", ok()),
        commit("t", 1, "a", &long, ok()),
        commit(
            "t",
            1,
            "a",
            "x",
            vec![RowOp::put(Kind::User, "u\0", json!({}), None)],
        ),
        commit(
            "t",
            1,
            "a",
            "x",
            vec![RowOp::put(Kind::User, long.clone(), json!({}), None)],
        ),
        commit(
            "t",
            1,
            "a",
            "x",
            vec![RowOp::put(Kind::User, "u", json!({"k": "v\u{0}"}), None)],
        ),
        commit(
            "t",
            1,
            "a",
            "x",
            vec![RowOp::put(Kind::User, "u", json!({"k\u{0}": 1}), None)],
        ),
        commit(
            "t",
            1,
            "a",
            "x",
            vec![RowOp::put(Kind::User, "u", json!([[["\u{0}"]]]), None)],
        ),
        commit(
            "t",
            1,
            "a",
            "x",
            vec![RowOp::put(Kind::User, "u", Value::Null, None)],
        ),
        commit(
            "t",
            1,
            "a",
            "x",
            vec![RowOp::delete(Kind::User, "u", Some(json!("\u{0}")))],
        ),
        commit(
            "t",
            1,
            "a",
            "x",
            vec![RowOp::delete(Kind::User, "u", Some(Value::Null))],
        ),
        Commit {
            target: "x\0".into(),
            ..commit("t", 1, "a", "x", ok())
        },
    ];
    for c in &invalid {
        assert!(c.validate().is_err(), "{c:?}");
        match store.commit(c).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("{c:?}: expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(store.tenants().await.unwrap(), vec![]);
    // Exactly at the limits is fine.
    let max = "k".repeat(MAX_KEY_BYTES);
    let c = Commit {
        target: max.clone(),
        ..commit(
            &max,
            1,
            &max,
            &max,
            vec![RowOp::put(Kind::User, max.clone(), json!({}), None)],
        )
    };
    store.commit(&c).await.unwrap();
    assert_eq!(store.log(&all(&max)).await.unwrap(), vec![c]);
}

/// Many tasks race for the revisions of one tenant: each revision has exactly one winner, no
/// acknowledged commit is lost, and the rows are those the log replays to.
async fn concurrent_commits_to_one_tenant(target: &Target) {
    const TASKS: usize = 8;
    const WINS: usize = 8;
    let store = target.open().await;
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0usize;
            let mut next = 1u64;
            while won.len() < WINS {
                let c = commit(
                    "hot",
                    next,
                    &format!("task-{task}"),
                    "race",
                    vec![
                        RowOp::put(
                            Kind::User,
                            format!("task-{task}"),
                            json!({"wins": won.len() + 1}),
                            None,
                        ),
                        RowOp::put(Kind::Node, "shared", json!({"rev": next, "by": task}), None),
                    ],
                );
                match store.commit(&c).await {
                    Ok(()) => {
                        won.push(next);
                        next += 1;
                    }
                    Err(StoreError::Conflict {
                        tenant,
                        expected,
                        actual,
                    }) => {
                        assert_eq!((tenant.as_str(), expected), ("hot", next - 1));
                        assert_ne!(actual, expected);
                        conflicts += 1;
                        next = actual + 1;
                    }
                    Err(e) => panic!("task {task}: {e}"),
                }
            }
            (task, won, conflicts)
        }));
    }
    let mut winner_of: BTreeMap<u64, usize> = BTreeMap::new();
    let mut conflicts = 0;
    for h in handles {
        let (task, won, c) = h.await.unwrap();
        conflicts += c;
        for rev in won {
            assert!(
                winner_of.insert(rev, task).is_none(),
                "revision {rev} acknowledged twice"
            );
        }
    }
    let total = (TASKS * WINS) as u64;
    assert_eq!(
        winner_of.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let log = store.log(&all("hot")).await.unwrap();
    assert_eq!(log.len() as u64, total);
    for c in &log {
        assert_eq!(c.actor, format!("task-{}", winner_of[&c.revision]));
    }
    let loaded = store.load("hot").await.unwrap().unwrap();
    assert_eq!(loaded.revision, total);
    assert_eq!(state_of(&loaded), replay(&log));
    for task in 0..TASKS {
        assert_eq!(
            state_of(&loaded)[&(Kind::User, format!("task-{task}"))],
            json!({"wins": WINS})
        );
    }
    assert_eq!(
        state_of(&loaded)[&(Kind::Node, "shared".to_string())],
        json!({"rev": total, "by": winner_of[&total]})
    );
    eprintln!(
        "{}: {total} revisions won by {TASKS} racing tasks ({conflicts} conflicts) in {:?}",
        store.engine(),
        started.elapsed()
    );
}

/// Commits to different tenants, made concurrently, never conflict and all land; the time taken
/// one after another and concurrently is printed.
async fn concurrent_commits_to_different_tenants(target: &Target) {
    const TENANTS: usize = 8;
    const COMMITS: u64 = 15;
    let store = target.open().await;

    let run = |prefix: &'static str, concurrent: bool| {
        let store = Arc::clone(&store);
        async move {
            let in_flight = Arc::new(AtomicUsize::new(0));
            let max_in_flight = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let work = (0..TENANTS).map(|i| {
                let store = Arc::clone(&store);
                let in_flight = Arc::clone(&in_flight);
                let max_in_flight = Arc::clone(&max_in_flight);
                async move {
                    let tenant = format!("{prefix}-{i}");
                    for rev in 1..=COMMITS {
                        let c = commit(
                            &tenant,
                            rev,
                            "a",
                            "x",
                            vec![RowOp::put(Kind::Node, "n", json!(rev), None)],
                        );
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max_in_flight.fetch_max(now, Ordering::SeqCst);
                        let result = store.commit(&c).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        result.unwrap_or_else(|e| panic!("{tenant}@{rev}: {e}"));
                    }
                }
            });
            if concurrent {
                let handles: Vec<_> = work.map(tokio::spawn).collect();
                for h in handles {
                    h.await.unwrap();
                }
            } else {
                for w in work {
                    w.await;
                }
            }
            (started.elapsed(), max_in_flight.load(Ordering::SeqCst))
        }
    };
    let (sequential, _) = run("seq", false).await;
    let (concurrent, max_in_flight) = run("par", true).await;
    // Timing on a shared machine is too noisy to assert on; the engine-specific tests below
    // check the mechanism (row locks per tenant, shared write transactions) instead.
    eprintln!(
        "{}: {} commits to {TENANTS} tenants: one after another {sequential:?}, concurrently \
         {concurrent:?} (up to {max_in_flight} in flight)",
        store.engine(),
        TENANTS as u64 * COMMITS
    );
    assert!(max_in_flight >= 2, "commits never overlapped");
    let tenants = store.tenants().await.unwrap();
    assert_eq!(tenants.len(), 2 * TENANTS);
    assert!(tenants.iter().all(|(_, rev)| *rev == COMMITS));
    for (t, _) in &tenants {
        let log = store.log(&all(t)).await.unwrap();
        assert_eq!(
            log.iter().map(|c| c.revision).collect::<Vec<_>>(),
            (1..=COMMITS).collect::<Vec<_>>()
        );
        let loaded = store.load(t).await.unwrap().unwrap();
        assert_eq!(state_of(&loaded), replay(&log));
    }
}

/// Embedded only: commits arriving together share one write transaction (and its fsyncs)
/// instead of queueing for one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_concurrent_commits_share_write_transactions() {
    const TENANTS: u64 = 8;
    const COMMITS: u64 = 15;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let before = store.write_stats();
    let handles: Vec<_> = (0..TENANTS)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for rev in 1..=COMMITS {
                    let c = commit(&format!("t{t}"), rev, "a", "x", vec![]);
                    store.commit(&c).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let after = store.write_stats();
    let commits = after.commits - before.commits;
    let transactions = after.transactions - before.transactions;
    eprintln!("embedded: {commits} commits in {transactions} write transactions");
    assert_eq!(commits, TENANTS * COMMITS);
    assert!(
        transactions < commits,
        "every commit had a write transaction of its own"
    );
}

/// PostgreSQL only: a transaction holding one tenant's row lock holds up that tenant's commits
/// and no other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lock_on_one_tenant_does_not_block_another() {
    let target = Target::new(Engine::Postgres).await;
    let store = target.open().await;
    for t in ["a", "b"] {
        store.commit(&commit(t, 1, "x", "x", vec![])).await.unwrap();
    }
    let (client, conn) = common::pg_base_url()
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            &format!(
                "SELECT revision FROM \"{}\".tenants WHERE id = 'a' FOR UPDATE",
                target.schema().unwrap()
            ),
            &[],
        )
        .await
        .unwrap();
    let blocked = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.commit(&commit("a", 2, "x", "x", vec![])).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blocked.is_finished(), "commit ignored the tenant lock");
    tokio::time::timeout(
        Duration::from_secs(10),
        store.commit(&commit("b", 2, "x", "x", vec![])),
    )
    .await
    .expect("commit to tenant b waited for tenant a's lock")
    .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    blocked.await.unwrap().unwrap();
    assert_eq!(
        store.tenants().await.unwrap(),
        vec![("a".to_string(), 2), ("b".to_string(), 2)]
    );
}

async fn large_commit(target: &Target) {
    const N: usize = 10_000;
    let store = target.open().await;
    let ops: Vec<RowOp> = (0..N)
        .map(|i| {
            RowOp::put(
                Kind::Node,
                format!("node-{i:05}"),
                json!({"kind": "asset", "parent": format!("node-{:05}", i / 10), "i": i}),
                None,
            )
        })
        .collect();
    let big = commit("big", 1, "import", "import", ops);
    let started = Instant::now();
    store.commit(&big).await.unwrap();
    let committed = started.elapsed();
    let loaded = store.load("big").await.unwrap().unwrap();
    let loaded_in = started.elapsed() - committed;
    assert_eq!(loaded.rows.len(), N);
    assert_eq!(triples(&loaded), rows_of(&replay([&big])));
    // Delete every other row and rewrite the rest, in one commit.
    let ops: Vec<RowOp> = (0..N)
        .map(|i| {
            let id = format!("node-{i:05}");
            if i % 2 == 0 {
                RowOp::delete(Kind::Node, id, None)
            } else {
                RowOp::put(Kind::Node, id, json!({"i": i, "v": 2}), None)
            }
        })
        .collect();
    let second = commit("big", 2, "import", "import", ops);
    store.commit(&second).await.unwrap();
    let log = store.log(&all("big")).await.unwrap();
    assert_eq!(log, vec![big, second]);
    let loaded = store.load("big").await.unwrap().unwrap();
    assert_eq!(loaded.rows.len(), N / 2);
    assert_eq!(state_of(&loaded), replay(&log));
    eprintln!(
        "{}: {N}-op commit {committed:?}, load {loaded_in:?}, total {:?}",
        store.engine(),
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

async fn reopen_sees_everything(target: &Target) {
    let store = target.open().await;
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..30u64 {
        let tenant = format!("t{}", i % 3);
        let rev = next.entry(tenant.clone()).or_insert(0);
        *rev += 1;
        let mut ops = vec![RowOp::put(
            Kind::User,
            format!("u{}", i % 7),
            json!({"i": i}),
            None,
        )];
        if i % 4 == 0 {
            ops.push(RowOp::delete(Kind::User, format!("u{}", (i + 3) % 7), None));
        }
        store
            .commit(&commit(&tenant, *rev, "a", "x", ops))
            .await
            .unwrap();
    }
    let tenants = store.tenants().await.unwrap();
    let everything = LogQuery {
        limit: usize::MAX,
        ..LogQuery::default()
    };
    let log = store.log(&everything).await.unwrap();
    let mut loads = Vec::new();
    for (t, _) in &tenants {
        loads.push(store.load(t).await.unwrap().unwrap());
    }
    drop(store);

    let store = target.open().await;
    assert_eq!(store.tenants().await.unwrap(), tenants);
    assert_eq!(store.log(&everything).await.unwrap(), log);
    for loaded in &loads {
        assert_eq!(&store.load(&loaded.tenant).await.unwrap().unwrap(), loaded);
        let own: Vec<&Commit> = log.iter().filter(|c| c.tenant == loaded.tenant).collect();
        assert_eq!(revs_of(loaded), revs_after(own.iter().copied()));
        assert_eq!(state_of(loaded), replay(own));
    }
    // The revision carries on from where it was.
    assert_eq!(
        conflict(store.commit(&commit("t0", 10, "a", "x", vec![])).await),
        ("t0".to_string(), 9, 10)
    );
    store
        .commit(&commit("t0", 11, "a", "x", vec![]))
        .await
        .unwrap();
    drop(store);
    let store = target.open().await;
    assert_eq!(store.load("t0").await.unwrap().unwrap().revision, 11);
    if target.engine == Engine::Embedded {
        // One process, one open store: a second open is refused, not corrupting.
        match portcullis::store::open(&target.location).await {
            Err(StoreError::Unavailable(msg)) => assert!(msg.contains("already open"), "{msg}"),
            Err(e) => panic!("second open: unexpected error {e}"),
            Ok(_) => panic!("second open of the same directory succeeded"),
        }
    }
}

// ---- layout upgrade, checksums -------------------------------------------------------------------

/// Writes `log` (one tenant's commits, documents carrying `_rev` as the code before layout 2 put
/// it there) the way a store of layout/schema version 1 held it, then closes it.
async fn write_v1(target: &Target, log: &[Commit]) {
    let tenant = log[0].tenant.clone();
    let revision = log.last().unwrap().revision;
    let rows = replay(log);
    match target.engine {
        Engine::Embedded => {
            use portcullis::store::embedded::{kind_code, v1, FILE_NAME};
            let dir = std::path::Path::new(&target.location);
            std::fs::create_dir_all(dir).unwrap();
            let db = redb::Database::create(dir.join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                txn.open_table(v1::META)
                    .unwrap()
                    .insert("schema_version", 1u64)
                    .unwrap();
                let mut t = txn.open_table(v1::ROWS).unwrap();
                for ((kind, id), doc) in &rows {
                    let bytes = serde_json::to_vec(doc).unwrap();
                    t.insert(
                        (tenant.as_str(), kind_code(*kind), id.as_str()),
                        bytes.as_slice(),
                    )
                    .unwrap();
                }
                txn.open_table(v1::TENANTS)
                    .unwrap()
                    .insert(tenant.as_str(), revision)
                    .unwrap();
                let mut commits = txn.open_table(v1::COMMITS).unwrap();
                let mut metas = txn.open_table(v1::COMMIT_META).unwrap();
                for c in log {
                    let body = serde_json::to_vec(c).unwrap();
                    let meta = serde_json::to_vec(&json!({"actor": c.actor, "at_ms": c.at_ms,
                        "action": c.action, "target": c.target}))
                    .unwrap();
                    commits
                        .insert((tenant.as_str(), c.revision), body.as_slice())
                        .unwrap();
                    metas
                        .insert((tenant.as_str(), c.revision), meta.as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        Engine::Postgres => {
            let s = format!("\"{}\"", target.schema().unwrap());
            let client = pg_client().await;
            client
                .batch_execute(&format!(
                    r#"CREATE SCHEMA {s};
CREATE TABLE {s}.schema_version (version int NOT NULL);
INSERT INTO {s}.schema_version VALUES (1);
CREATE TABLE {s}.tenants (id text COLLATE "C" PRIMARY KEY, revision bigint NOT NULL);
CREATE TABLE {s}.rows (tenant text COLLATE "C" NOT NULL, kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (tenant, kind, id));
CREATE TABLE {s}.commits (tenant text COLLATE "C" NOT NULL, revision bigint NOT NULL,
    actor text COLLATE "C" NOT NULL, at_ms bigint NOT NULL, action text COLLATE "C" NOT NULL,
    target text COLLATE "C" NOT NULL, ops jsonb NOT NULL, PRIMARY KEY (tenant, revision));"#
                ))
                .await
                .unwrap();
            client
                .execute(
                    &format!("INSERT INTO {s}.tenants VALUES ($1, $2)"),
                    &[&tenant, &(revision as i64)],
                )
                .await
                .unwrap();
            for ((kind, id), doc) in &rows {
                client
                    .execute(
                        &format!("INSERT INTO {s}.rows VALUES ($1, $2, $3, $4)"),
                        &[&tenant, &kind.as_str(), id, doc],
                    )
                    .await
                    .unwrap();
            }
            for c in log {
                client
                    .execute(
                        &format!("INSERT INTO {s}.commits VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                        &[
                            &tenant,
                            &(c.revision as i64),
                            &c.actor,
                            &c.at_ms,
                            &c.action,
                            &c.target,
                            &serde_json::to_value(&c.ops).unwrap(),
                        ],
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

async fn pg_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&common::pg_base_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// `v` with `"_rev": rev` added, as the control plane wrote documents before layout 2.
fn with_rev(mut v: Value, rev: u64) -> Value {
    v.as_object_mut().unwrap().insert("_rev".into(), json!(rev));
    v
}

fn without_revs(mut c: Commit) -> Commit {
    for op in &mut c.ops {
        for doc in [&mut op.value, &mut op.before].into_iter().flatten() {
            doc.as_object_mut().unwrap().remove("_rev");
        }
    }
    c
}

async fn old_layout_is_upgraded(target: &Target) {
    let old = vec![
        commit(
            "legacy",
            1,
            "import",
            "import",
            vec![
                RowOp::put(
                    Kind::Tenant,
                    "legacy",
                    with_rev(json!({"name": "L"}), 1),
                    None,
                ),
                RowOp::put(
                    Kind::User,
                    "alice",
                    with_rev(json!({"email": "a@x"}), 1),
                    None,
                ),
                RowOp::put(Kind::Role, "r", with_rev(json!({"p": [1.5, 2]}), 1), None),
            ],
        ),
        commit(
            "legacy",
            2,
            "kim",
            "user.update",
            vec![
                RowOp::put(
                    Kind::User,
                    "alice",
                    with_rev(json!({"email": "b@x"}), 2),
                    Some(json!({"email": "a@x"})),
                ),
                RowOp::put(Kind::Node, "n", with_rev(json!({"kind": "site"}), 2), None),
            ],
        ),
    ];
    write_v1(target, &old).await;
    let store = target.open().await;
    let loaded = store.load("legacy").await.unwrap().unwrap();
    assert_eq!(loaded.revision, 2);
    assert_eq!(
        triples(&loaded),
        vec![
            (Kind::Tenant, "legacy".to_string(), json!({"name": "L"})),
            (Kind::Node, "n".to_string(), json!({"kind": "site"})),
            (Kind::Role, "r".to_string(), json!({"p": [1.5, 2]})),
            (Kind::User, "alice".to_string(), json!({"email": "b@x"})),
        ]
    );
    let expected_log: Vec<Commit> = old.iter().cloned().map(without_revs).collect();
    assert_eq!(revs_of(&loaded), revs_after(&expected_log));
    assert_eq!(store.log(&all("legacy")).await.unwrap(), expected_log);
    // Writes carry on, and the upgraded store reopens as it is.
    let c3 = commit(
        "legacy",
        3,
        "kim",
        "node.delete",
        vec![RowOp::delete(
            Kind::Node,
            "n",
            Some(json!({"kind": "site"})),
        )],
    );
    store.commit(&c3).await.unwrap();
    drop(store);
    let store = target.open().await;
    let loaded = store.load("legacy").await.unwrap().unwrap();
    assert_eq!((loaded.revision, loaded.rows.len()), (3, 3));
    assert_eq!(store.log(&all("legacy")).await.unwrap().len(), 3);
}

/// A store the control plane wrote before layout 2 (the demo tenant imported, documents with
/// `_rev`): it loads, ETags come from the moved revisions, and new change events and audit
/// entries carry no `_rev`.
async fn old_control_plane_store_loads(target: &Target) {
    use portcullis::control::{rules, ControlPlane};
    let data = portcullis::model::file::load_str(portcullis::engine::DEMO_DATA).unwrap();
    let femo = data.tenants.iter().find(|t| t.id == "femo").unwrap();
    let mut ops = rules::import(femo, 1_700_000_000, &[]).unwrap().ops;
    for op in &mut ops {
        if let Some(v) = &mut op.value {
            *v = with_rev(v.clone(), 1);
        }
    }
    let user = ops
        .iter()
        .find(|o| o.kind == Kind::User)
        .unwrap()
        .id
        .clone();
    write_v1(target, &[commit("femo", 1, "import", "import", ops)]).await;
    let cp = ControlPlane::open(target.open().await).await.unwrap();
    let doc = cp.doc("femo").await.unwrap();
    assert_eq!(doc.revision, 1);
    assert_eq!(doc.rev_of(Kind::User, &user), 1);
    assert_eq!(doc.rev_of(Kind::Tenant, "femo"), 1);
    assert!(doc.to_tenant().unwrap().validate().is_empty());
    assert!(cp.store_health().is_ok());
    let mut events = cp.subscribe();
    let w = cp
        .write("femo", "kim", None, |d| {
            let patch = rules::UserPatch {
                name: Some("Renamed".into()),
                ..Default::default()
            };
            rules::update_user(d, &user, &patch, 1_700_000_100)
        })
        .await
        .unwrap();
    assert_eq!(w.revision, 2);
    let event = events.recv().await.unwrap();
    let doc = cp.doc("femo").await.unwrap();
    assert_eq!(doc.rev_of(Kind::User, &user), 2);
    let log = cp.store().log(&all("femo")).await.unwrap();
    assert_eq!(log.len(), 2);
    for c in log.iter().chain([event.as_ref()]) {
        let text = serde_json::to_string(c).unwrap();
        assert!(!text.contains("_rev"), "{text}");
    }
}

async fn corrupt_rows_and_commits_are_refused(target: &Target) {
    let store = target.open().await;
    let c1 = commit(
        "t",
        1,
        "a",
        "import",
        vec![
            RowOp::put(Kind::Tenant, "t", json!({"name": "T"}), None),
            RowOp::put(
                Kind::User,
                "alice",
                json!({"email": "alice@corrupt.example"}),
                None,
            ),
        ],
    );
    let c2 = commit(
        "t",
        2,
        "a",
        "marker.action.zz",
        vec![RowOp::put(Kind::Node, "n", json!({"kind": "site"}), None)],
    );
    store.commit(&c1).await.unwrap();
    store.commit(&c2).await.unwrap();
    drop(store);
    match target.engine {
        Engine::Embedded => {
            let path =
                std::path::Path::new(&target.location).join(portcullis::store::embedded::FILE_NAME);
            let mut bytes = std::fs::read(&path).unwrap();
            let mut flipped = 0;
            for needle in [&b"alice@corrupt.example"[..], &b"marker.action.zz"[..]] {
                let at: Vec<usize> = bytes
                    .windows(needle.len())
                    .enumerate()
                    .filter(|(_, w)| *w == needle)
                    .map(|(i, _)| i)
                    .collect();
                assert!(!at.is_empty());
                for i in at {
                    bytes[i] ^= 0x01;
                    flipped += 1;
                }
            }
            assert!(flipped >= 2);
            std::fs::write(&path, &bytes).unwrap();
        }
        Engine::Postgres => {
            let s = format!("\"{}\"", target.schema().unwrap());
            let client = pg_client().await;
            client
                .batch_execute(&format!(
                    "UPDATE {s}.rows SET doc = jsonb_set(doc, '{{email}}', '\"mallory@x\"') \
                     WHERE id = 'alice'; \
                     UPDATE {s}.commits SET action = 'something.else' WHERE revision = 2;"
                ))
                .await
                .unwrap();
        }
    }
    let store = target.open().await;
    let err = store.load("t").await.unwrap_err();
    match &err {
        StoreError::Corrupt { tenant, what } => {
            assert_eq!(tenant, "t");
            assert!(what.starts_with("row user/alice"), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("store corrupt: tenant 't', row user/alice"),
        "{err}"
    );
    let err = store.log(&LogQuery::replay("t", 1, 10)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { tenant, what } if tenant == "t" && what.contains("revision 2")),
        "{err:?}"
    );
    // Start is refused with the same clear message, no panic text.
    let err = match portcullis::control::ControlPlane::open(store).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a corrupt store must not open"),
    };
    assert!(
        err.contains("store corrupt: tenant 't', row user/alice"),
        "{err}"
    );
    assert!(!err.contains("panick"), "{err}");
}

// ---- disk full ----------------------------------------------------------------------------------

#[path = "common/tmpfs.rs"]
mod tmpfs;
use tmpfs::{fill, Tmpfs};

/// Commits a 48 KB user row `u{i}` at `revision + 1`.
async fn attempt(store: &EmbeddedStore, i: u64, revision: u64) -> (Result<(), StoreError>, Commit) {
    let blob = json!({"i": i, "pad": "x".repeat(48 << 10)});
    let c = commit(
        "t",
        revision + 1,
        "a",
        "x",
        vec![RowOp::put(Kind::User, format!("u{i}"), blob, None)],
    );
    (store.commit(&c).await, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_recovers_from_a_full_disk() {
    let Some(fs) = Tmpfs::mount("4m") else {
        eprintln!("SKIPPED embedded_recovers_from_a_full_disk: cannot mount a tmpfs (not root?)");
        return;
    };
    let location = fs.dir.path().join("store");
    let store = Arc::new(EmbeddedStore::open(&location).await.unwrap());
    // The control plane reports the store's health (the coordinator wires it into /readyz).
    let cp = portcullis::control::ControlPlane::open(Arc::clone(&store) as Arc<dyn Store>)
        .await
        .unwrap();
    let mut acked: Vec<Commit> = Vec::new();
    let mut revision = 0;
    for i in 0..5 {
        let (r, c) = attempt(&store, i, revision).await;
        r.unwrap();
        revision += 1;
        acked.push(c);
    }
    assert!(store.health().is_ok());

    let filler = fill(fs.dir.path());
    let mut failures = 0;
    for i in 5..60 {
        let (r, c) = attempt(&store, i, revision).await;
        match r {
            Ok(()) => {
                revision += 1;
                acked.push(c);
            }
            Err(StoreError::Unavailable(m)) => {
                assert!(!m.contains("panick"), "{m}");
                failures += 1;
                if failures == 3 {
                    break;
                }
            }
            Err(e) => panic!("unexpected error on a full disk: {e:?}"),
        }
    }
    assert_eq!(failures, 3, "writes never failed on a full disk");
    assert!(!store.health().is_ok());
    match cp.store_health() {
        portcullis::store::StoreHealth::Degraded { error, failures } => {
            assert!(error.contains("No space left on device"), "{error}");
            assert!(failures >= 3);
        }
        ok => panic!("store health should be degraded, is {ok:?}"),
    }

    std::fs::remove_file(&filler).unwrap();
    // Writes work again once space is back: no "Previous I/O error" for ever after.
    let (r, c) = attempt(&store, 100, revision).await;
    r.unwrap();
    revision += 1;
    acked.push(c);
    let (r, c) = attempt(&store, 101, revision).await;
    r.unwrap();
    revision += 1;
    acked.push(c);
    assert!(store.health().is_ok());
    assert!(cp.store_health().is_ok());

    // Full again; this time nobody writes after space is back: health recovers on its own.
    let filler = fill(fs.dir.path());
    let mut failed = false;
    for i in 200..260 {
        let (r, c) = attempt(&store, i, revision).await;
        match r {
            Ok(()) => {
                revision += 1;
                acked.push(c);
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed && !store.health().is_ok());
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.health().is_ok() {
        assert!(Instant::now() < deadline, "health did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (r, c) = attempt(&store, 300, revision).await;
    r.unwrap();
    acked.push(c);
    assert_eq!(store.log(&all("t")).await.unwrap(), acked);
    drop(cp);
    drop(store);

    // Every acknowledged write is there after a restart.
    let store = EmbeddedStore::open(&location).await.unwrap();
    assert_eq!(store.log(&all("t")).await.unwrap(), acked);
    let loaded = store.load("t").await.unwrap().unwrap();
    assert_eq!(state_of(&loaded), replay(&acked));
    assert_eq!(revs_of(&loaded), revs_after(&acked));
    drop(store);
    drop(fs);
}

// ---- damaged files --------------------------------------------------------------------------------

type Snapshot = (
    Vec<(String, u64)>,
    Vec<portcullis::store::TenantRows>,
    Vec<Commit>,
);

async fn everything(store: &EmbeddedStore) -> Result<Snapshot, StoreError> {
    let tenants = store.tenants().await?;
    let mut loads = Vec::new();
    for (t, _) in &tenants {
        loads.push(store.load(t).await?.unwrap_or_default());
    }
    let log = store
        .log(&LogQuery {
            limit: usize::MAX,
            ..LogQuery::default()
        })
        .await?;
    Ok((tenants, loads, log))
}

/// One byte flipped anywhere in a stopped store: opening and reading it either fails with a
/// clean error (no panic, no panic text) or returns exactly what was stored — never other data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_byte_flips_never_change_data_silently() {
    let dir = tempfile::tempdir().unwrap();
    let pristine_dir = dir.path().join("pristine");
    let store = EmbeddedStore::open(&pristine_dir).await.unwrap();
    for t in ["alpha", "beta", "gamma"] {
        for rev in 1..=6u64 {
            let ops = (0..8)
                .map(|i| {
                    RowOp::put(
                        Kind::ALL[i % Kind::ALL.len()],
                        format!("{t}-{i}-{}", rev % 3),
                        json!({"email": format!("{t}{i}@example.com"), "rev": rev, "on": i % 2 == 0}),
                        None,
                    )
                })
                .collect();
            store
                .commit(&commit(t, rev, "admin", "bulk", ops))
                .await
                .unwrap();
        }
    }
    let expected = everything(&store).await.unwrap();
    drop(store);
    let file = pristine_dir.join(portcullis::store::embedded::FILE_NAME);
    let bytes = std::fs::read(&file).unwrap();
    let (mut same, mut refused) = (0, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for n in 0..150 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = (seed % bytes.len() as u64) as usize;
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << (n % 8);
        let case = dir.path().join(format!("case-{n}"));
        std::fs::create_dir_all(&case).unwrap();
        std::fs::write(case.join(portcullis::store::embedded::FILE_NAME), &damaged).unwrap();
        let outcome = match EmbeddedStore::open(&case).await {
            Err(e) => Err(e),
            Ok(store) => everything(&store).await,
        };
        match outcome {
            Ok(got) => {
                assert!(got == expected, "byte {at} flipped: data changed silently");
                same += 1;
            }
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains("panick"), "byte {at}: {text}");
                refused += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&case);
    }
    eprintln!("{same} flips harmless, {refused} refused");
}

/// Numbers whose text PostgreSQL's `jsonb` rewrites (`1e18` comes back as
/// `1000000000000000000`, `-0.0` as `0.0`, …) still pass their checksums.
async fn numbers_keep_their_checksums(target: &Target) {
    let store = target.open().await;
    let numbers = [
        1e18,
        -0.0,
        9.3e18,
        1.5e-7,
        5e-324,
        1e300,
        f64::MIN_POSITIVE,
        123_456_789.123_456_78,
        9_007_199_254_740_993.0,
        -2.5e-300,
        1e21,
        100.0,
    ];
    let doc = json!({"n": numbers, "nested": {"x": -0.0, "y": [1e18, 18446744073709551615u64]}});
    let c = commit(
        "t",
        1,
        "a",
        "x",
        vec![RowOp::put(Kind::Node, "n", doc.clone(), Some(doc.clone()))],
    );
    store.commit(&c).await.unwrap();
    let loaded = store.load("t").await.unwrap().unwrap();
    assert_eq!(loaded.rows.len(), 1);
    assert_eq!(store.log(&all("t")).await.unwrap().len(), 1);
    drop(store);
    let store = target.open().await;
    store.load("t").await.unwrap().unwrap();
    store.log(&all("t")).await.unwrap();
}

/// `rewrite_log` keeps, replaces (with valid checksums, also after a reopen) and drops logged
/// commits of one tenant up to a revision, leaves rows, revisions and other tenants alone, and
/// refuses a replacement that moves a commit (changing nothing).
async fn log_rewrites_keep_replace_and_drop(target: &Target) {
    let store = target.open().await;
    let commits = log_fixture();
    for c in &commits {
        store.commit(c).await.unwrap();
    }
    let rows_before = store.load("a").await.unwrap();
    let b_before = store.log(&all("b")).await.unwrap();
    // Revision 1 dropped, 2 scrubbed, 3 kept, 4 (beyond `through`) untouched.
    let edit: LogEditor = Arc::new(|c: Commit| match c.revision {
        1 => LogEdit::Drop,
        2 => LogEdit::Replace(Commit {
            ops: vec![RowOp::put(
                Kind::User,
                "u1",
                json!({"email": "[erased]"}),
                None,
            )],
            ..c
        }),
        _ => LogEdit::Keep,
    });
    assert_eq!(store.rewrite_log("a", 3, edit).await.unwrap(), 2);
    let check = |log: Vec<Commit>| {
        let revs: Vec<u64> = log.iter().map(|c| c.revision).collect();
        assert_eq!(revs, [2, 3, 4, 5, 6]);
        assert_eq!(log[0].ops[0].value, Some(json!({"email": "[erased]"})));
        assert_eq!(log[0].actor, "bob");
    };
    check(store.log(&all("a")).await.unwrap());
    // The header filters see the rewritten commit too.
    let q = LogQuery {
        tenant: Some("a".into()),
        action_prefix: Some("user.delete".into()),
        limit: 10,
        ..LogQuery::default()
    };
    assert_eq!(store.log(&q).await.unwrap().len(), 1);
    assert_eq!(store.load("a").await.unwrap(), rows_before);
    assert_eq!(store.log(&all("b")).await.unwrap(), b_before);
    // A replacement may not move a commit; nothing changes.
    let moved: LogEditor = Arc::new(|c: Commit| {
        if c.revision == 3 {
            LogEdit::Replace(Commit { revision: 9, ..c })
        } else {
            LogEdit::Drop
        }
    });
    assert!(matches!(
        store.rewrite_log("a", 6, moved).await,
        Err(StoreError::Invalid(_))
    ));
    check(store.log(&all("a")).await.unwrap());
    drop(store);
    // Checksums hold after a reopen; the next commit still follows the tenant's revision.
    let store = target.open().await;
    check(store.log(&all("a")).await.unwrap());
    store
        .commit(&commit("a", 7, "x", "user.create", vec![]))
        .await
        .unwrap();
}

/// `log_window` answers the same commits as `log`, each with only the asked window of its ops
/// and the number it has.
async fn log_windows_are_slices_of_the_log(target: &Target) {
    let store = target.open().await;
    let ops: Vec<RowOp> = (0..45)
        .map(|i| {
            RowOp::put(
                Kind::User,
                format!("u{i:02}"),
                json!({"email": format!("u{i}@x")}),
                None,
            )
        })
        .collect();
    store
        .commit(&commit("t", 1, "a", "import", ops))
        .await
        .unwrap();
    store
        .commit(&commit(
            "t",
            2,
            "a",
            "user.delete",
            vec![RowOp::delete(Kind::User, "u00", None)],
        ))
        .await
        .unwrap();
    let full = store.log(&all("t")).await.unwrap();
    for (offset, limit) in [(0, 20), (20, 20), (40, 20), (50, 5), (0, 0)] {
        let w = store.log_window(&all("t"), offset, limit).await.unwrap();
        let expected: Vec<CommitWindow> = full
            .iter()
            .map(|c| CommitWindow::of(c.clone(), offset, limit))
            .collect();
        assert_eq!(w, expected, "window {offset}+{limit}");
        assert_eq!((w[0].op_count, w[1].op_count), (45, 1));
    }
}
