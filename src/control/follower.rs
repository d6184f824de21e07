//! The follower: applies committed changes to its own tenant documents and keeps the live
//! snapshots current, one tenant at a time, coalescing bursts.
//!
//! It is the same whether commits come from the in-process bus (`serve`, [`Bus`]) or from NATS
//! (`portcullis sidecar`, `fleet::follow`): a [`Source`] gives it each tenant's initial state
//! (a document, and possibly a validated archive to serve before compiling) and an ordered
//! stream of commits. A gap (lagging receiver, out-of-order revision, a commit that does not
//! apply) or a source's own resync request reloads that tenant from the source, never a silent
//! divergence.
//!
//! Each tenant stays compiled between builds ([`Compiled`]). When every commit since the last
//! build changed only assignments, those changes are applied to the compiled tenant and the
//! archive is rewritten from it (cost: a copy of the tenant's base bytes plus its grants);
//! anything else — users, groups, nodes, roles, settings, a resync, a change the compiled tenant
//! cannot apply — compiles the tenant from its document again, with full validation.
//!
//! The control plane commits nothing that fails that validation, but stored state can still fail
//! it (written by another version, or by hand). Such a tenant is recorded as failed in the
//! registry ([`Registry::fail`]): not served (the data plane answers 503 `tenant_unavailable`),
//! named by `/readyz` (503) and counted in the metrics — never silently dropped or frozen.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{ControlPlane, TenantDoc};
use crate::model::Assignment;
use crate::snapshot::{Compiled, Registry, Snapshot};
use crate::store::{BoxFuture, Commit, Kind};

/// What a [`Source`] hands the follower.
#[derive(Debug)]
pub enum Event {
    /// A commit; normally its tenant's next revision (older ones are ignored, a gap reloads).
    Commit(Arc<Commit>),
    /// Reload this tenant from the source (it saw a gap, a duplicate, a corrupt message).
    Resync(String),
    /// Reload every tenant (the source lost track, e.g. a lagging receiver).
    ResyncAll,
}

/// A tenant's state as a source loads it.
pub struct Loaded {
    pub doc: TenantDoc,
    /// A validated archive of the tenant at `doc.revision`, served before anything compiles.
    pub archive: Option<Snapshot>,
}

impl Loaded {
    pub fn doc(doc: TenantDoc) -> Loaded {
        Loaded { doc, archive: None }
    }
}

/// Where a follower's commits and states come from.
pub trait Source: Send + 'static {
    /// The next event, waiting for it; `None` when the source is closed for good.
    fn next(&mut self) -> BoxFuture<'_, Option<Event>>;
    /// The next event if one is already there (coalescing).
    fn try_next(&mut self) -> Option<Event>;
    /// The current state of `tenant`; `None`: it does not exist (deleted, or never created).
    /// Events handed out after this call follow the state it returns.
    fn load<'a>(&'a mut self, tenant: &'a str) -> BoxFuture<'a, Option<Loaded>>;
    /// The current state of every tenant the follower follows.
    fn load_all(&mut self) -> BoxFuture<'_, HashMap<String, Loaded>>;
}

/// The in-process change bus of a [`ControlPlane`] (`portcullis serve`).
pub struct Bus {
    cp: Arc<ControlPlane>,
    rx: tokio::sync::broadcast::Receiver<Arc<Commit>>,
}

impl Bus {
    /// Subscribes to `cp`'s change bus (before any state is loaded: nothing is missed).
    pub fn new(cp: Arc<ControlPlane>) -> Bus {
        let rx = cp.subscribe();
        Bus { cp, rx }
    }
}

impl Source for Bus {
    fn next(&mut self) -> BoxFuture<'_, Option<Event>> {
        Box::pin(async move {
            match self.rx.recv().await {
                Ok(c) => Some(Event::Commit(c)),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "change stream lagged; resyncing every tenant");
                    Some(Event::ResyncAll)
                }
                Err(RecvError::Closed) => None,
            }
        })
    }

    fn try_next(&mut self) -> Option<Event> {
        match self.rx.try_recv() {
            Ok(c) => Some(Event::Commit(c)),
            Err(TryRecvError::Lagged(_)) => Some(Event::ResyncAll),
            Err(_) => None,
        }
    }

    fn load<'a>(&'a mut self, tenant: &'a str) -> BoxFuture<'a, Option<Loaded>> {
        Box::pin(async move { self.cp.doc(tenant).await.map(Loaded::doc) })
    }

    fn load_all(&mut self) -> BoxFuture<'_, HashMap<String, Loaded>> {
        Box::pin(async move {
            let docs = self.cp.docs().await;
            docs.into_iter().map(|(t, d)| (t, Loaded::doc(d))).collect()
        })
    }
}

/// Assignment changes of one commit: previous values, new values, revision.
type AssignmentDelta = (Vec<Assignment>, Vec<Assignment>, u64);

/// What changed in a tenant since its last build.
#[derive(Default)]
struct Pending {
    /// Something other than assignments changed, or the document was reloaded.
    full: bool,
    /// Otherwise: the assignment changes of each commit, in order.
    deltas: Vec<AssignmentDelta>,
    /// The document was reloaded with an archive of it, and nothing changed since.
    install: Option<Snapshot>,
}

impl Pending {
    /// Rebuild from the document (anything pending so far is superseded).
    fn full() -> Pending {
        Pending {
            full: true,
            ..Pending::default()
        }
    }
}

enum Job {
    Remove,
    /// Serve a loaded archive (validated by its source) as it is.
    Install(Box<Snapshot>),
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
            Job::Install(snap) => {
                registry.install(*snap);
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
                        // Fail closed and visibly: not served, reported by /readyz and metrics.
                        tracing::error!(tenant = %t, revision = rev, error = %e, "tenant does not compile; not served until it does");
                        registry.fail(&t, rev, e.to_string());
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
    start_from(Bus::new(cp), registry).await
}

/// Starts following `source`: loads and installs every tenant now, then keeps them current.
/// Returns once the initial snapshots are installed (or handed to the plugin compiler).
pub async fn start_from<S: Source>(
    mut source: S,
    registry: Arc<Registry>,
) -> tokio::task::JoinHandle<()> {
    let loaded = source.load_all().await;
    let mut docs = HashMap::with_capacity(loaded.len());
    let mut jobs = Vec::with_capacity(loaded.len());
    for (t, mut l) in loaded {
        let job = match loaded_pending(&mut l).install {
            Some(a) => Job::Install(Box::new(a)),
            None => Job::Full,
        };
        jobs.push((t.clone(), job));
        docs.insert(t, l.doc);
    }
    let mut compiled = HashMap::new();
    let docs = run_blocking(&registry, docs, jobs, &mut compiled).await;
    tokio::spawn(run(source, registry, docs, compiled))
}

/// The pending work of a tenant just loaded.
fn loaded_pending(l: &mut Loaded) -> Pending {
    match l.archive.take() {
        Some(a) if a.revision() == l.doc.revision => Pending {
            install: Some(a),
            ..Pending::default()
        },
        _ => Pending::full(),
    }
}

async fn run<S: Source>(
    mut source: S,
    registry: Arc<Registry>,
    mut docs: HashMap<String, TenantDoc>,
    mut compiled: HashMap<String, Compiled>,
) {
    loop {
        // Wait for one event, then take whatever else is already queued (coalescing). Events
        // are handled in order: a reload happens where the source asked for it.
        let mut pending: HashMap<String, Pending> = HashMap::new();
        if docs.is_empty() && !compiled.is_empty() {
            // The builder lost the documents (it failed): reload everything.
            reload_all(&mut source, &mut docs, &compiled, &mut pending).await;
        }
        let Some(first) = source.next().await else {
            return;
        };
        let mut event = Some(first);
        while let Some(e) = event {
            match e {
                Event::Commit(c) => {
                    if !note(&mut docs, &c, &mut pending) {
                        reload(&mut source, &mut docs, &mut pending, &c.tenant).await;
                    }
                }
                Event::Resync(t) => reload(&mut source, &mut docs, &mut pending, &t).await,
                Event::ResyncAll => {
                    reload_all(&mut source, &mut docs, &compiled, &mut pending).await
                }
            }
            event = source.try_next();
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
            if let Some(s) = p.install {
                jobs.push((t, Job::Install(Box::new(s))));
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

/// Reloads one tenant from the source; it is rebuilt (or its archive served).
async fn reload<S: Source>(
    source: &mut S,
    docs: &mut HashMap<String, TenantDoc>,
    pending: &mut HashMap<String, Pending>,
    tenant: &str,
) {
    match source.load(tenant).await {
        Some(mut l) => {
            pending.insert(tenant.to_string(), loaded_pending(&mut l));
            docs.insert(tenant.to_string(), l.doc);
        }
        None => {
            docs.remove(tenant);
            pending.insert(tenant.to_string(), Pending::full());
        }
    }
}

/// Reloads every tenant; those gone are removed.
async fn reload_all<S: Source>(
    source: &mut S,
    docs: &mut HashMap<String, TenantDoc>,
    compiled: &HashMap<String, Compiled>,
    pending: &mut HashMap<String, Pending>,
) {
    let loaded = source.load_all().await;
    let gone: Vec<String> = compiled
        .keys()
        .chain(docs.keys())
        .filter(|t| !loaded.contains_key(*t))
        .cloned()
        .collect();
    docs.clear();
    for t in gone {
        pending.insert(t, Pending::full());
    }
    for (t, mut l) in loaded {
        pending.insert(t.clone(), loaded_pending(&mut l));
        docs.insert(t, l.doc);
    }
}

/// Applies a commit to its tenant's document and records the work it makes. `false`: it does
/// not apply (a gap, or rows that do not read back) and the tenant must be reloaded.
/// Does `op` leave the compiled tenant as it is? Credentials, invitations and notification
/// rules are not in it; a new or pruned (expired) session is not (revoked ones are); a user row
/// whose only change is bookkeeping (`last_login_at`, `updated_at`) is not.
fn snapshot_inert(d: &TenantDoc, op: &crate::store::RowOp) -> bool {
    use serde::Deserialize;
    match (op.kind, &op.value) {
        (Kind::Credential | Kind::Invitation | Kind::NotificationRule, _) => true,
        (Kind::Session, None) => true,
        (Kind::Session, Some(v)) => {
            super::doc::SessionRow::deserialize(v).is_ok_and(|s| !s.revoked)
                && d.sessions.get(&op.id).is_none_or(|cur| !cur.revoked)
        }
        (Kind::User, Some(v)) => d.users.get(&op.id).is_some_and(|cur| {
            super::doc::UserRow::deserialize(v).is_ok_and(|next| next.user == cur.user)
        }),
        _ => false,
    }
}

fn note(
    docs: &mut HashMap<String, TenantDoc>,
    c: &Commit,
    pending: &mut HashMap<String, Pending>,
) -> bool {
    let d = docs.entry(c.tenant.clone()).or_default();
    if c.revision <= d.revision {
        return true; // already have it (initial state raced the stream)
    }
    // Assignment-only commits are applied to the compiled tenant: keep their old values.
    // Sign-in bookkeeping changes nothing the snapshot holds: such commits only re-stamp the
    // archive with their revision (no recompile per sign-in).
    let assignment_ids: Option<BTreeSet<&str>> = c
        .ops
        .iter()
        .filter(|op| !snapshot_inert(d, op))
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
        return false;
    }
    let p = pending.entry(c.tenant.clone()).or_default();
    if p.install.take().is_some() {
        // The loaded archive is behind now: compile from the document.
        p.full = true;
    }
    match (before, &assignment_ids) {
        (Some(before), Some(ids)) if !p.full => {
            p.deltas.push((before, values(d, ids), c.revision));
        }
        _ => {
            p.full = true;
            p.deltas.clear();
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::{rules, ControlPlane};
    use crate::snapshot::Registry;
    use crate::store::{Commit, Kind, RowOp};

    /// Waits until `done` holds for the registry (bounded).
    async fn until(reg: &Registry, done: impl Fn(&Registry) -> bool) {
        let mut changes = reg.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(reg) {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }
    }

    /// A commit that bypassed the rules (another writer on the same store) and does not compile
    /// takes the tenant out of service visibly; a commit that fixes it brings it back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_that_leaves_a_tenant_uncompilable_fails_it_visibly() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path().to_str().unwrap())
            .await
            .unwrap();
        let cp = Arc::new(ControlPlane::open(store).await.unwrap());
        let data = crate::model::file::load_str(crate::engine::DEMO_DATA).unwrap();
        cp.seed(&data, "test").await.unwrap();
        let reg = Arc::new(Registry::new());
        super::start(Arc::clone(&cp), Arc::clone(&reg)).await;
        let rev = reg.get("femo").unwrap().revision() + 1;
        let raw = Commit {
            tenant: "femo".into(),
            revision: rev,
            actor: "elsewhere".into(),
            at_ms: 0,
            action: "role.update".into(),
            target: "role:machine-operator".into(),
            ops: vec![RowOp::put(
                Kind::Role,
                "machine-operator",
                serde_json::json!({"id": "machine-operator", "name": "M", "permissions": ["press:run"], "plugin": "gone"}),
                None,
            )],
        };
        cp.store().commit(&raw).await.unwrap();
        {
            let h = cp
                .tenants
                .get("femo")
                .map(|e| Arc::clone(e.value()))
                .unwrap();
            h.lock().await.apply(&raw).unwrap();
        }
        let _ = cp.bus.send(Arc::new(raw));
        until(&reg, |r| r.failure("femo").is_some()).await;
        let f = reg.failure("femo").unwrap();
        assert_eq!(f.revision, rev);
        assert!(f.error.contains("unknown plugin 'gone'"), "{}", f.error);
        assert!(
            reg.get("femo").is_none(),
            "a stale snapshot is still served"
        );
        assert!(reg.get("towerco").is_some());
        assert_eq!(reg.failure_counts(), vec![("femo".to_string(), 1)]);
        // Fixing the role (full check: the result compiles) recovers the tenant.
        let patch = rules::RolePatch {
            plugin: Some(None),
            ..Default::default()
        };
        let w = cp
            .write("femo", "admin", None, |d| {
                rules::update_role(d, "machine-operator", &patch)
            })
            .await
            .unwrap();
        until(&reg, |r| {
            r.get("femo").is_some_and(|s| s.revision() == w.revision)
        })
        .await;
        assert!(reg.failure("femo").is_none());
        assert!(reg.failures_now().is_empty());
    }
}
