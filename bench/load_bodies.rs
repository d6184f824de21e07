//! Request material for `bench/load.sh`, made from world S (`portcullis generate --world s`):
//!
//! - `DIR/checks.tsv`: `subject\taction\tresource\tallowed` lines from `worlds::requests()`, chosen so
//!   that about `ALLOW_PCT` percent are allowed now (the rest are denies of every kind the mix
//!   produces: no matching assignment, unknown/inactive subject, unknown resource…);
//! - `DIR/filter.json`: a `/v1/filter` body with all 1,000 nodes of world S as resources, for a
//!   subject and action that permit part of them.
//!
//! Decisions are computed in-process at the current time, so the load script can verify that the
//! server agrees. Usage: `cargo run --release --example load_bodies -- DIR [N] [ALLOW_PCT]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::PathBuf;

use portcullis::clock::unix_now;
use portcullis::decide;
use portcullis::snapshot::Snapshot;
use portcullis::worlds;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: load_bodies DIR [N] [ALLOW_PCT]"));
    let n: usize = args.next().map_or(2000, |s| s.parse().expect("N"));
    let allow_pct: usize = args.next().map_or(50, |s| s.parse().expect("ALLOW_PCT"));
    std::fs::create_dir_all(&dir).expect("create DIR");

    let t = worlds::world_s().remove(0);
    let snap = Snapshot::build(&t).expect("world S builds");
    let v = snap.view();
    let now = unix_now();

    // Checks: draw from the generator's request mix until both quotas are filled.
    let want_allow = n * allow_pct / 100;
    let want_deny = n - want_allow;
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
    let mut seed = 1;
    let mut drawn = 0usize;
    while (allow.len() < want_allow || deny.len() < want_deny) && seed < 1000 {
        for (s, a, r) in worlds::requests(&t, 10_000, seed) {
            drawn += 1;
            let d = decide::check(v, &s, &a, &r, now);
            let (bucket, want) = if d.allowed {
                (&mut allow, want_allow)
            } else {
                (&mut deny, want_deny)
            };
            if bucket.len() < want {
                if !d.allowed {
                    *reasons.entry(d.reason.code()).or_default() += 1;
                }
                bucket.push((s, a, r, d.allowed));
            }
        }
        seed += 1;
    }
    // Interleave deterministically so every stretch of the list has the same mix.
    let mut lines = String::new();
    let (mut ia, mut id) = (0, 0);
    for i in 0..n {
        let take_allow = if allow_pct == 0 {
            false
        } else {
            ia < allow.len() && (id >= deny.len() || ia * 100 <= i * allow_pct)
        };
        let (s, a, r, ok) = if take_allow {
            ia += 1;
            &allow[ia - 1]
        } else if id < deny.len() {
            id += 1;
            &deny[id - 1]
        } else {
            break;
        };
        writeln!(lines, "{s}\t{a}\t{r}\t{ok}").unwrap();
    }
    std::fs::write(dir.join("checks.tsv"), &lines).expect("write checks.tsv");

    // Filter: all nodes, for the first (subject, action) whose permitted share is 20–80%.
    let resources: Vec<&str> = t.nodes.iter().map(|x| x.id.as_str()).collect();
    let mut best: Option<(String, String, usize)> = None;
    'search: for u in &t.users {
        for res in worlds::RESOURCES {
            for act in worlds::ACTIONS {
                let action = format!("{res}:{act}");
                let mut k = 0usize;
                decide::filter(v, &u.id, &action, &resources, now, |_| k += 1);
                if (200..=800).contains(&k) {
                    best = Some((u.id.clone(), action, k));
                    break 'search;
                }
            }
        }
    }
    let (subject, action, permitted) = best.expect("a subject/action with a partial filter");
    let body = serde_json::json!({
        "tenant": t.id, "subject": subject, "action": action, "resources": resources,
    });
    std::fs::write(dir.join("filter.json"), body.to_string()).expect("write filter.json");

    println!(
        "checks={} allowed={} denied={} drawn={} deny_reasons={:?} filter_subject={} filter_action={} filter_resources={} filter_permitted={}",
        ia + id,
        ia,
        id,
        drawn,
        reasons,
        subject,
        action,
        resources.len(),
        permitted
    );
}
