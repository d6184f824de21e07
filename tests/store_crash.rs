//! Crash test, for both engines: a child process commits to several tenants as fast as it can and
//! prints every acknowledged revision; the parent `kill -9`s it mid-stream, reopens the store and
//! checks that every acknowledged commit survived, the log is gap-free and intact, and the rows
//! are exactly what the log replays to. Three kills per engine, each resuming from the recovered
//! state.
//!
//! The child is this test binary re-executed with `PORTCULLIS_CRASH_CHILD` set, running only the
//! `crash_child` test (a no-op otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/store.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{replay, state_of, Engine, Target};
use portcullis::store::{Commit, Kind, LogQuery, RowOp};
use serde_json::json;

const CHILD_ENV: &str = "PORTCULLIS_CRASH_CHILD";
const TENANTS: [&str; 4] = ["crash-a", "crash-b", "crash-c", "crash-d"];
const ROUNDS: usize = 3;

/// The commit the child makes at `revision` of `tenant`: deterministic, so the parent can check
/// the log's content, not only its length. Every 7th is large (300 extra rows), to widen the
/// window in which the kill lands mid-write.
fn crash_commit(tenant: &str, revision: u64) -> Commit {
    let mut ops = vec![
        RowOp::put(Kind::Tenant, tenant, json!({"rev": revision}), None),
        RowOp::put(
            Kind::User,
            format!("u{}", revision % 50),
            json!({"rev": revision}),
            None,
        ),
        RowOp::delete(Kind::User, format!("u{}", (revision + 25) % 50), None),
    ];
    if revision % 7 == 0 {
        ops.extend((0..300).map(|i| {
            RowOp::put(
                Kind::Node,
                format!("n{i:03}"),
                json!({"rev": revision, "pad": "x".repeat(100)}),
                None,
            )
        }));
    }
    Commit {
        tenant: tenant.to_string(),
        revision,
        actor: "crash".into(),
        at_ms: revision as i64,
        action: "crash.commit".into(),
        target: format!("rev:{revision}"),
        ops,
    }
}

/// The child's body. Without `PORTCULLIS_CRASH_CHILD` this test does nothing.
#[test]
fn crash_child() {
    let Ok(location) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = portcullis::store::open(&location).await.unwrap();
        let mut tasks = Vec::new();
        for tenant in TENANTS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut revision = store.load(tenant).await.unwrap().map_or(0, |r| r.revision);
                loop {
                    revision += 1;
                    store
                        .commit(&crash_commit(tenant, revision))
                        .await
                        .unwrap_or_else(|e| panic!("{tenant}@{revision}: {e}"));
                    // Not `println!`: the test harness may capture that.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {tenant} {revision}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Notes an `ACK tenant revision` line; false for any other line.
fn record(line: &str, acked: &mut BTreeMap<String, u64>) -> bool {
    let Some(rest) = line.strip_prefix("ACK ") else {
        return false;
    };
    let (tenant, rev) = rest.split_once(' ').unwrap();
    let rev: u64 = rev.parse().unwrap();
    let max = acked.entry(tenant.to_string()).or_insert(0);
    *max = (*max).max(rev);
    true
}

/// Runs the child until it has acknowledged `acks` commits, then kills it with SIGKILL.
/// Returns the highest acknowledged revision per tenant (including lines already in the pipe).
fn run_and_kill(location: &str, acks: usize) -> BTreeMap<String, u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, location)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen < acks {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if record(&line, &mut acked) {
                    seen += 1;
                }
            }
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!("child stopped after {seen} of {acks} acknowledgements ({e}; {status})");
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "child was not killed: {status}");
    // Whatever it printed before dying was acknowledged too.
    for line in rx.iter() {
        record(&line, &mut acked);
    }
    reader.join().unwrap();
    acked
}

async fn verify(target: &Target, acked: &BTreeMap<String, u64>) -> u64 {
    let store = target.open().await;
    let mut total = 0;
    for (tenant, &ack) in acked {
        let loaded = store
            .load(tenant)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{tenant}: acknowledged up to {ack}, store has nothing"));
        assert!(
            loaded.revision >= ack,
            "{tenant}: acknowledged {ack}, store has {}",
            loaded.revision
        );
        let log = store
            .log(&LogQuery::replay(tenant.as_str(), 0, usize::MAX))
            .await
            .unwrap();
        assert_eq!(
            log.iter().map(|c| c.revision).collect::<Vec<_>>(),
            (1..=loaded.revision).collect::<Vec<_>>(),
            "{tenant}: log has gaps"
        );
        for c in &log {
            assert_eq!(
                c,
                &crash_commit(tenant, c.revision),
                "{tenant}: log entry differs"
            );
        }
        assert_eq!(
            state_of(&loaded),
            replay(&log),
            "{tenant}: rows disagree with the log"
        );
        assert_eq!(
            state_of(&loaded)[&(Kind::Tenant, tenant.clone())],
            json!({"rev": loaded.revision})
        );
        total += loaded.revision;
    }
    total
}

fn crash_test(engine: Engine) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let target = rt.block_on(Target::new(engine));
    let started = Instant::now();
    let mut acked_total: BTreeMap<String, u64> = BTreeMap::new();
    // Vary where the kill lands.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    for round in 0..ROUNDS {
        let acks = 40 + (seed.wrapping_mul(31).wrapping_add(round * 97)) % 120;
        let acked = run_and_kill(&target.location, acks);
        for (t, rev) in acked {
            let max = acked_total.entry(t).or_insert(0);
            *max = (*max).max(rev);
        }
        let stored = rt.block_on(verify(&target, &acked_total));
        eprintln!(
            "{engine:?} round {round}: killed after {acks} acks; acknowledged {:?}, {stored} \
             revisions stored and verified",
            acked_total
        );
    }
    assert_eq!(acked_total.len(), TENANTS.len());
    eprintln!("{engine:?}: crash test took {:?}", started.elapsed());
}

#[test]
fn embedded_survives_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    crash_test(Engine::Embedded);
}

#[test]
fn postgres_survives_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    crash_test(Engine::Postgres);
}
