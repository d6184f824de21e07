//! The follower: applies committed changes to its own tenant documents and keeps the live
//! snapshots current, one tenant at a time, coalescing bursts.
//!
//! It is deliberately the same whether commits come from the in-process bus (embedded default)
//! or, later, from NATS: it needs only an initial state and an ordered stream per tenant. A gap
//! (lagging receiver, out-of-order revision) triggers a resync from the source of truth, never a
//! silent divergence.
//!
//! Each tenant stays compiled between builds ([`Compiled`]). When every commit since the last
//! build changed only assignments, those changes are applied to the compiled tenant and the
//! archive is rewritten from it (cost: a copy of the tenant's base bytes plus its grants);
//! anything else — users, groups, nodes, roles, settings, a resync, a change the compiled tenant
//! cannot apply — compiles the tenant from its document again, with full validation.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use super::{ControlPlane, TenantDoc};
use crate::model::Assignment;
use crate::snapshot::{Compiled, Registry};
use crate::store::{Commit, Kind};

/// Assignment changes of one commit: previous values, new values, revision.
type AssignmentDelta = (Vec<Assignment>, Vec<Assignment>, u64);

/// What changed in a tenant since its last build.
#[derive(Debug, Default)]
struct Pending {
    /// Something other than assignments changed, or the document was reloaded.
    full: bool,
    /// Otherwise: the assignment changes of each commit, in order.
    deltas: Vec<AssignmentDelta>,
}

enum Job {
    Remove,
    /// Recompile from the document.
    Full,
    /// Archive a compiled tenant that has had assignment changes applied.
    Archive(Box<Compiled>),
}

/// Runs `jobs` (on a blocking thread): installs or removes snapshots. Returns the compiled
/// tenants to keep and the tenants whose archive failed after assignment changes (to be
/// recompiled from their documents).
fn run_jobs(
    registry: &Registry,
    docs: &HashMap<String, TenantDoc>,
    jobs: Vec<(String, Job)>,
) -> (Vec<(String, Compiled)>, Vec<String>) {
    let mut keep = Vec::new();
    let mut retry = Vec::new();
    for (t, job) in jobs {
        let rev = docs.get(&t).map_or(0, |d| d.revision);
        match job {
            Job::Remove => {
                registry.remove(&t);
            }
            Job::Archive(mut c) => match c.snapshot() {
                Ok(s) => {
                    registry.install(s);
                    keep.push((t, *c));
                }
                Err(e) => {
                    tracing::warn!(tenant = %t, revision = rev, error = %e, "archive after assignment changes failed; recompiling");
                    retry.push(t);
                }
            },
            Job::Full => {
                let Some(m) = docs.get(&t).and_then(TenantDoc::to_tenant) else {
                    registry.remove(&t);
                    continue;
                };
                match Compiled::new(&m).and_then(|mut c| Ok((c.snapshot()?, c))) {
                    Ok((s, c)) => {
                        registry.install(s);
                        keep.push((t, c));
                    }
                    Err(e) => {
                        tracing::error!(tenant = %t, revision = rev, error = %e, "snapshot build failed; keeping the previous snapshot");
                    }
                }
            }
        }
    }
    (keep, retry)
}

/// Runs `jobs` off the async workers, lending them the documents; returns the documents.
async fn run_blocking(
    registry: &Arc<Registry>,
    docs: HashMap<String, TenantDoc>,
    jobs: Vec<(String, Job)>,
    compiled: &mut HashMap<String, Compiled>,
) -> HashMap<String, TenantDoc> {
    let reg = Arc::clone(registry);
    let r = tokio::task::spawn_blocking(move || {
        let (keep, retry) = run_jobs(&reg, &docs, jobs);
        let retry = retry.into_iter().map(|t| (t, Job::Full)).collect();
        let (again, _) = run_jobs(&reg, &docs, retry);
        (docs, keep, again)
    })
    .await;
    match r {
        Ok((docs, keep, again)) => {
            compiled.extend(keep);
            compiled.extend(again);
            docs
        }
        Err(e) => {
            // A panic while building: the documents went with it; reload them.
            tracing::error!(error = %e, "snapshot builder failed; reloading every tenant");
            HashMap::new()
        }
    }
}

/// Starts following `cp`: installs every tenant's snapshot now, then keeps them current.
/// Returns once the initial snapshots are live.
pub async fn start(cp: Arc<ControlPlane>, registry: Arc<Registry>) -> tokio::task::JoinHandle<()> {
    let rx = cp.subscribe();
    let docs = cp.docs().await;
    let jobs = docs.keys().map(|t| (t.clone(), Job::Full)).collect();
    let mut compiled = HashMap::new();
    let docs = run_blocking(&registry, docs, jobs, &mut compiled).await;
    tokio::spawn(run(cp, registry, rx, docs, compiled))
}

async fn run(
    cp: Arc<ControlPlane>,
    registry: Arc<Registry>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Commit>>,
    mut docs: HashMap<String, TenantDoc>,
    mut compiled: HashMap<String, Compiled>,
) {
    loop {
        // Wait for one commit, then drain whatever else is already queued (coalescing).
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut resync: BTreeSet<String> = BTreeSet::new();
        let mut resync_all = docs.is_empty() && !compiled.is_empty();
        match rx.recv().await {
            Ok(c) => note(&mut docs, &c, &mut pending, &mut resync),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "change stream lagged; resyncing every tenant");
                resync_all = true;
            }
            Err(RecvError::Closed) => return,
        }
        loop {
            match rx.try_recv() {
                Ok(c) => note(&mut docs, &c, &mut pending, &mut resync),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => resync_all = true,
                Err(_) => break,
            }
        }
        if resync_all {
            docs = cp.docs().await;
            let gone: Vec<String> = compiled
                .keys()
                .filter(|t| !docs.contains_key(*t))
                .cloned()
                .collect();
            for t in docs.keys().chain(&gone) {
                pending.entry(t.clone()).or_default().full = true;
            }
        } else {
            for t in resync {
                match cp.doc(&t).await {
                    Some(d) => {
                        docs.insert(t.clone(), d);
                    }
                    None => {
                        docs.remove(&t);
                    }
                }
                pending.entry(t).or_default().full = true;
            }
        }
        // Apply assignment-only changes to the compiled tenants here (cheap); archive and
        // compile off the async workers.
        let mut pending: Vec<(String, Pending)> = pending.into_iter().collect();
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        let mut jobs = Vec::with_capacity(pending.len());
        for (t, p) in pending {
            let prev = compiled.remove(&t);
            if !docs.contains_key(&t) {
                jobs.push((t, Job::Remove));
                continue;
            }
            let job = match prev {
                Some(mut c)
                    if !p.full && p.deltas.first().map(|d| d.2) == Some(c.revision() + 1) =>
                {
                    if p.deltas
                        .iter()
                        .all(|(old, new, rev)| c.apply(old, new, *rev))
                    {
                        Job::Archive(Box::new(c))
                    } else {
                        Job::Full
                    }
                }
                _ => Job::Full,
            };
            jobs.push((t, job));
        }
        docs = run_blocking(&registry, docs, jobs, &mut compiled).await;
    }
}

fn note(
    docs: &mut HashMap<String, TenantDoc>,
    c: &Commit,
    pending: &mut HashMap<String, Pending>,
    resync: &mut BTreeSet<String>,
) {
    let d = docs.entry(c.tenant.clone()).or_default();
    if c.revision <= d.revision {
        return; // already have it (initial state raced the stream)
    }
    // Assignment-only commits are applied to the compiled tenant: keep their old values.
    let assignment_ids: Option<BTreeSet<&str>> = c
        .ops
        .iter()
        .map(|op| (op.kind == Kind::Assignment).then_some(op.id.as_str()))
        .collect();
    let values = |d: &TenantDoc, ids: &BTreeSet<&str>| -> Vec<Assignment> {
        ids.iter()
            .filter_map(|id| d.assignments.get(*id).map(|r| r.assignment.clone()))
            .collect()
    };
    let before = assignment_ids.as_ref().map(|ids| values(d, ids));
    if let Err(e) = d.apply(c) {
        tracing::warn!(tenant = %c.tenant, error = %e, "cannot apply commit; resyncing tenant");
        resync.insert(c.tenant.clone());
        return;
    }
    let p = pending.entry(c.tenant.clone()).or_default();
    match (before, &assignment_ids) {
        (Some(before), Some(ids)) if !p.full => {
            p.deltas.push((before, values(d, ids), c.revision));
        }
        _ => {
            p.full = true;
            p.deltas.clear();
        }
    }
}
