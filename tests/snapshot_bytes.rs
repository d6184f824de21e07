//! Untrusted snapshot bytes: `Snapshot::from_bytes` rejects corrupt archives, and whatever it
//! accepts can be decided on without a panic or a hang. Hand-made inconsistent snapshots (grant
//! `up` loops and forward links, indexes out of range) are rejected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use portcullis::decide;
use portcullis::engine::DEMO_DATA;
use portcullis::model::file::load_str;
use portcullis::model::Tenant;
use portcullis::snapshot::{Snapshot, SnapshotError, Span, TenantSnap, NONE};
use proptest::prelude::*;
use rkyv::rancor::BoxedError;

const NOW: i64 = 1_769_000_000;

fn femo() -> Tenant {
    load_str(DEMO_DATA)
        .unwrap()
        .tenants
        .into_iter()
        .find(|t| t.id == "femo")
        .unwrap()
}

fn base() -> Snapshot {
    Snapshot::build(&femo()).unwrap()
}

/// The owned form of a real snapshot, to tamper with.
fn owned() -> TenantSnap {
    rkyv::from_bytes::<TenantSnap, BoxedError>(base().as_bytes()).unwrap()
}

fn archive(s: &TenantSnap) -> Vec<u8> {
    rkyv::to_bytes::<BoxedError>(s).unwrap().to_vec()
}

/// Requests over the femo world and some strangers.
fn requests() -> (Vec<String>, Vec<String>, Vec<String>) {
    let t = femo();
    let mut subjects: Vec<String> = t.users.iter().map(|u| u.id.clone()).collect();
    subjects.push("nobody".into());
    let mut resources: Vec<String> = t.nodes.iter().map(|n| n.id.clone()).collect();
    resources.push("nowhere".into());
    let actions = [
        "asset:read",
        "asset:operate",
        "zone:read",
        "report:export",
        "door:unlock",
        "asset:*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (subjects, actions, resources)
}

/// Runs a sample of every kind of decision on `snap` (which must not panic). `seed` picks the
/// sample so that different mutants see different requests.
fn exercise(snap: &Snapshot, seed: u64, reqs: &(Vec<String>, Vec<String>, Vec<String>)) {
    let v = snap.view();
    let (subjects, actions, resources) = reqs;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut out = Vec::new();
    for _ in 0..12 {
        let s = &subjects[next(subjects.len())];
        let a = &actions[next(actions.len())];
        let r = &resources[next(resources.len())];
        let d = decide::check(v, s, a, r, NOW);
        let e = decide::explain(v, s, a, r, NOW);
        assert_eq!(d.allowed, e.allowed);
        let mut n = 0;
        decide::filter(v, s, a, resources, NOW, |_| n += 1);
        assert!(n <= resources.len());
        decide::scopes(v, s, a, NOW, &mut out);
        assert!(out.iter().all(|&i| (i as usize) < v.nodes.len()));
    }
    let _ = decide::node_path(v, 0);
    let _ = (snap.tenant_id(), snap.revision(), format!("{snap:?}"));
}

/// Runs `f` on another thread and fails if it panics or takes longer than `limit` (a hang).
fn within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r.is_ok());
    });
    match rx.recv_timeout(limit) {
        Ok(true) => {}
        Ok(false) => panic!("panicked (see above)"),
        Err(_) => panic!("did not finish within {limit:?}: a hang?"),
    }
}

/// `from_bytes` on `bytes`: must not panic; if accepted, decisions must not panic either.
/// Returns whether the bytes were accepted.
fn adopt(bytes: &[u8], seed: u64, reqs: &(Vec<String>, Vec<String>, Vec<String>)) -> bool {
    match catch_unwind(AssertUnwindSafe(|| Snapshot::from_bytes(bytes))) {
        Err(_) => panic!("from_bytes panicked on {} bytes (seed {seed})", bytes.len()),
        Ok(Err(e)) => {
            assert!(!e.to_string().is_empty());
            false
        }
        Ok(Ok(snap)) => {
            if catch_unwind(AssertUnwindSafe(|| exercise(&snap, seed, reqs))).is_err() {
                panic!("decisions panicked on accepted bytes (seed {seed})");
            }
            true
        }
    }
}

#[test]
fn real_bytes_round_trip() {
    let s = base();
    let again = Snapshot::from_bytes(s.as_bytes()).unwrap();
    assert_eq!(again.as_bytes(), s.as_bytes());
    // The owned route gives back an equivalent archive.
    let t = owned();
    let back = Snapshot::from_bytes(&archive(&t)).unwrap();
    let reqs = requests();
    for subject in &reqs.0 {
        for action in &reqs.1 {
            for resource in &reqs.2 {
                assert_eq!(
                    decide::check(s.view(), subject, action, resource, NOW),
                    decide::check(back.view(), subject, action, resource, NOW)
                );
            }
        }
    }
    // Unaligned input is copied, not rejected.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(s.as_bytes());
    assert!(Snapshot::from_bytes(&shifted[1..]).is_ok());
}

#[test]
fn empty_and_tiny_inputs_are_rejected() {
    assert!(matches!(
        Snapshot::from_bytes(&[]),
        Err(SnapshotError::Malformed(_))
    ));
    for n in 1..64 {
        assert!(
            Snapshot::from_bytes(&vec![0u8; n]).is_err(),
            "{n} zero bytes"
        );
        assert!(
            Snapshot::from_bytes(&vec![0xffu8; n]).is_err(),
            "{n} 0xff bytes"
        );
    }
}

#[test]
fn truncated_bytes_are_rejected() {
    within(Duration::from_secs(300), || {
        let s = base();
        let bytes = s.as_bytes();
        let reqs = requests();
        let mut accepted = 0;
        for len in 0..bytes.len() {
            if adopt(&bytes[..len], len as u64, &reqs) {
                accepted += 1;
            }
        }
        // rkyv's root is at the end: no proper prefix is a valid archive.
        assert_eq!(accepted, 0, "{accepted} truncations accepted");
    });
}

#[test]
fn bit_flips_never_panic_or_hang() {
    within(Duration::from_secs(300), || {
        let s = base();
        let bytes = s.as_bytes().to_vec();
        let reqs = requests();
        let n = bytes.len();
        // Every bit of the last 256 bytes (the root and the tables near it) and of 400 positions
        // spread over the rest.
        let mut positions: Vec<usize> = (n.saturating_sub(256)..n).collect();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            positions.push((x % n as u64) as usize);
        }
        let (mut accepted, mut total) = (0, 0);
        let mut buf = bytes.clone();
        for &p in &positions {
            for bit in 0..8 {
                buf[p] ^= 1 << bit;
                total += 1;
                if adopt(&buf, (p * 8 + bit) as u64, &reqs) {
                    accepted += 1;
                }
                buf[p] ^= 1 << bit;
            }
        }
        assert_eq!(buf, bytes);
        assert!(total >= 5000, "{total}");
        // Most flips land in plain data (ids, names, timestamps) and are accepted; many land in
        // lengths and pointers and must be rejected.
        assert!(accepted < total, "{accepted}/{total}");
        eprintln!("bit flips: {accepted} of {total} accepted");
    });
}

#[test]
fn random_garbage_is_rejected() {
    within(Duration::from_secs(120), || {
        let reqs = requests();
        let mut x: u64 = 7;
        for case in 0..3000u64 {
            let len = (case as usize * 7) % 4096;
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(
                !adopt(&garbage, case, &reqs),
                "garbage of {len} bytes accepted"
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A real snapshot with random bytes overwritten in a random window.
    #[test]
    fn overwritten_windows_never_panic(at in any::<usize>(), junk in proptest::collection::vec(any::<u8>(), 1..32)) {
        let s = base();
        let mut bytes = s.as_bytes().to_vec();
        let n = bytes.len();
        for (i, b) in junk.iter().enumerate() {
            bytes[(at + i) % n] = *b;
        }
        let reqs = requests();
        within(Duration::from_secs(60), move || {
            adopt(&bytes, at as u64, &reqs);
        });
    }
}

/// Tampers with a real snapshot and checks `from_bytes` rejects the result with `needle`.
#[track_caller]
fn rejects(what: &str, needle: &str, tamper: impl FnOnce(&mut TenantSnap)) {
    let mut t = owned();
    tamper(&mut t);
    match Snapshot::from_bytes(&archive(&t)) {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => assert!(e.to_string().contains(needle), "{what}: {e}"),
    }
}

/// The user with the most grants (chitra: maintenance on pune and operator on line-3 inside it).
fn nested_user(t: &TenantSnap) -> (usize, Span) {
    let (i, u) = t
        .users
        .iter()
        .enumerate()
        .max_by_key(|(_, u)| u.grants.end - u.grants.start)
        .unwrap();
    assert!(u.grants.end - u.grants.start >= 2);
    (i, u.grants)
}

#[test]
fn grant_links_must_point_strictly_backwards_within_the_principal() {
    let t = owned();
    let (_, span) = nested_user(&t);
    let (a, b) = (span.start as usize, span.start as usize + 1);
    // The real snapshot has the nested grant linked to its enclosing one.
    assert_eq!(t.grants[b].up, a as u32, "{:?}", &t.grants[a..=b]);
    rejects("up points to itself", "links outside its principal", |t| {
        t.grants[b].up = b as u32
    });
    rejects("up points forward", "links outside its principal", |t| {
        t.grants[a].up = b as u32
    });
    rejects(
        "two grants point at each other",
        "links outside its principal",
        |t| {
            t.grants[a].up = b as u32;
            t.grants[b].up = a as u32;
        },
    );
    rejects(
        "up points past the table",
        "links outside its principal",
        |t| t.grants[b].up = t.grants.len() as u32 + 7,
    );
    // A link into another principal's grants (before this principal's slice).
    let mut t2 = owned();
    let (ui, _) = nested_user(&t2);
    let other = t2
        .users
        .iter()
        .enumerate()
        .find(|(i, u)| *i != ui && u.grants.end > u.grants.start && u.grants.start < span.start)
        .map(|(_, u)| u.grants.start)
        .unwrap();
    t2.grants[b].up = other;
    assert!(Snapshot::from_bytes(&archive(&t2)).is_err());
    // A group's grant linking into a user's slice.
    rejects(
        "group grant links into a user slice",
        "links outside its principal",
        |t| {
            let g = t
                .groups
                .iter()
                .find(|g| g.grants.end > g.grants.start)
                .unwrap()
                .grants;
            t.grants[g.start as usize].up = 0;
        },
    );
    // NONE is fine.
    let mut ok = owned();
    ok.grants[b].up = NONE;
    assert!(Snapshot::from_bytes(&archive(&ok)).is_ok());
}

#[test]
fn grant_fields_must_be_in_range() {
    rejects("role past the roles", "out of range", |t| {
        t.grants[0].role = t.roles.len() as u32
    });
    rejects("role NONE", "out of range", |t| t.grants[0].role = NONE);
    rejects("lo past the nodes", "out of range", |t| {
        t.grants[0].lo = t.nodes.len() as u32
    });
    rejects("hi past the nodes", "out of range", |t| {
        t.grants[0].hi = t.nodes.len() as u32 + 1
    });
    rejects("empty interval", "out of range", |t| {
        t.grants[0].hi = t.grants[0].lo
    });
    rejects(
        "grant metadata short",
        "grant metadata does not match grants",
        |t| {
            t.grant_meta.pop();
        },
    );
    rejects("unknown actor", "unknown actor", |t| {
        t.grant_meta[0].assigned_by = t.actors.len() as u32
    });
}

#[test]
fn node_fields_must_be_consistent() {
    rejects("parent after child", "does not enclose", |t| {
        t.nodes[1].parent = 2
    });
    rejects("parent is self", "does not enclose", |t| {
        t.nodes[1].parent = 1
    });
    rejects("parent past the nodes", "does not enclose", |t| {
        t.nodes[1].parent = 1000
    });
    rejects("subtree end past the nodes", "subtree end", |t| {
        t.nodes[0].end = t.nodes.len() as u32 + 1
    });
    rejects("empty subtree", "subtree end", |t| t.nodes[3].end = 3);
    rejects("child subtree outgrows parent", "does not enclose", |t| {
        // node 1's parent is 0; make 0's subtree end before 1's.
        let e = t.nodes[1].end;
        t.nodes[0].end = e - 1;
    });
    rejects("unknown kind", "unknown kind", |t| {
        t.nodes[2].kind = t.kinds.len() as u32
    });
    rejects(
        "node index points past the nodes",
        "node index does not match nodes",
        |t| {
            *t.node_index.values_mut().next().unwrap() = t.nodes.len() as u32;
        },
    );
    rejects(
        "node index names the wrong node",
        "node index does not match nodes",
        |t| {
            let k = t.nodes[2].id.clone();
            *t.node_index.get_mut(&k).unwrap() = 3;
        },
    );
    rejects(
        "node index missing a node",
        "node index does not match nodes",
        |t| {
            let k = t.nodes[2].id.clone();
            t.node_index.remove(&k);
        },
    );
}

#[test]
fn user_group_and_role_indexes_must_be_in_range() {
    rejects(
        "user index points past the users",
        "user index does not match users",
        |t| {
            *t.user_index.values_mut().next().unwrap() = t.users.len() as u32;
        },
    );
    rejects(
        "user index swaps two users",
        "user index does not match users",
        |t| {
            let (a, b) = (t.users[0].id.clone(), t.users[1].id.clone());
            *t.user_index.get_mut(&a).unwrap() = 1;
            *t.user_index.get_mut(&b).unwrap() = 0;
        },
    );
    rejects(
        "user grants past the table",
        "grants outside the grant table",
        |t| t.users[0].grants.end = t.grants.len() as u32 + 1,
    );
    rejects(
        "user grant span reversed",
        "grants outside the grant table",
        |t| {
            let g = t.users[1].grants;
            t.users[1].grants = Span {
                start: g.end + 1,
                end: g.end,
            };
        },
    );
    rejects(
        "group grants past the table",
        "grants outside the grant table",
        |t| t.groups[0].grants.end = t.grants.len() as u32 + 1,
    );
    rejects(
        "membership of an unknown group",
        "membership names an unknown group",
        |t| {
            t.memberships[0] = t.groups.len() as u32;
        },
    );
    rejects(
        "memberships past the table",
        "memberships outside the table",
        |t| {
            t.users[0].groups.end = t.memberships.len() as u32 + 1;
        },
    );
    rejects(
        "permission bitset past the bitsets",
        "permission index points outside the bitsets",
        |t| {
            *t.perm_exact.values_mut().next().unwrap() =
                (t.bitsets.len() / t.words as usize) as u32;
        },
    );
    rejects(
        "resource bitset past the bitsets",
        "permission index points outside the bitsets",
        |t| {
            *t.perm_resource.values_mut().next().unwrap() = u32::MAX;
        },
    );
    rejects(
        "action bitset past the bitsets",
        "permission index points outside the bitsets",
        |t| {
            *t.perm_action.values_mut().next().unwrap() = u32::MAX;
        },
    );
    rejects(
        "all bitset past the bitsets",
        "permission index points outside the bitsets",
        |t| {
            t.perm_all = 1_000_000;
        },
    );
    rejects("zero words", "role bitsets have the wrong shape", |t| {
        t.words = 0
    });
    rejects("ragged bitsets", "role bitsets have the wrong shape", |t| {
        t.words = 2;
        t.bitsets.push(0);
        if t.bitsets.len() % 2 == 0 {
            t.bitsets.push(0);
        }
    });
    rejects("no bitsets", "role bitsets have the wrong shape", |t| {
        t.bitsets.clear()
    });
    rejects(
        "too many roles for the words",
        "role bitsets have the wrong shape",
        |t| {
            let r = t.roles.pop().unwrap();
            for i in 0..70 {
                t.roles.push(portcullis::snapshot::RoleRec {
                    id: format!("{}{i}", r.id),
                    name: r.name.clone(),
                    builtin: false,
                    permissions: r.permissions.clone(),
                    plugin: None,
                    plugin_slot: portcullis::snapshot::NONE,
                });
            }
        },
    );
    rejects(
        "plugin slot past the plugins",
        "inconsistent plugin slot",
        |t| {
            let r = t.roles.last_mut().unwrap();
            r.plugin = Some("ghost".into());
            r.plugin_slot = 0;
        },
    );
    rejects("plugin role not flagged", "inconsistent plugin slot", |t| {
        t.plugins.push(portcullis::snapshot::PluginRec {
            name: "p".into(),
            sha256: String::new(),
            description: None,
            wasm: vec![0, 97, 115, 109],
            canary: None,
        });
        let r = t.roles.last_mut().unwrap();
        r.plugin = Some("p".into());
        r.plugin_slot = 0;
    });
    // A canary share is a percentage strictly between 0 and 100 (else all or nothing).
    for share in [0u8, 100, 255] {
        rejects("canary share out of range", "canary share", move |t| {
            t.plugins.push(portcullis::snapshot::PluginRec {
                name: "p".into(),
                sha256: String::new(),
                description: None,
                wasm: vec![0, 97, 115, 109],
                canary: Some(portcullis::snapshot::CanaryRec {
                    sha256: String::new(),
                    share,
                    wasm: vec![0, 97, 115, 109],
                }),
            });
        });
    }
    rejects(
        "plugin_roles outside the bitsets",
        "permission index points outside the bitsets",
        |t| t.plugin_roles = 1_000_000,
    );
    rejects("unknown format", "format 99 is not supported", |t| {
        t.format = 99
    });
}
