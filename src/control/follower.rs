//! The follower: applies committed changes to its own tenant documents and keeps the live
//! snapshots current, one tenant at a time, coalescing bursts.
//!
//! It is deliberately the same whether commits come from the in-process bus (embedded default)
//! or, later, from NATS: it needs only an initial state and an ordered stream per tenant. A gap
//! (lagging receiver, out-of-order revision) triggers a resync from the source of truth, never a
//! silent divergence.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use super::{ControlPlane, TenantDoc};
use crate::snapshot::{Registry, Snapshot};
use crate::store::Commit;

/// Builds and installs the snapshot of one tenant document (removes it if the tenant is gone).
/// Returns false if the document does not compile (the previous snapshot stays live).
pub fn publish(registry: &Registry, tenant: &str, doc: &TenantDoc) -> bool {
    match doc.to_tenant() {
        None => {
            registry.remove(tenant);
            true
        }
        Some(t) => match Snapshot::build(&t) {
            Ok(s) => {
                registry.install(s);
                true
            }
            Err(e) => {
                tracing::error!(tenant, revision = doc.revision, error = %e, "snapshot build failed; keeping the previous snapshot");
                false
            }
        },
    }
}

/// Starts following `cp`: installs every tenant's snapshot now, then keeps them current.
/// Returns once the initial snapshots are live.
pub async fn start(cp: Arc<ControlPlane>, registry: Arc<Registry>) -> tokio::task::JoinHandle<()> {
    let rx = cp.subscribe();
    let docs = cp.docs().await;
    let docs = {
        let registry = Arc::clone(&registry);
        tokio::task::spawn_blocking(move || {
            for (id, d) in &docs {
                publish(&registry, id, d);
            }
            docs
        })
        .await
        .unwrap_or_default()
    };
    tokio::spawn(run(cp, registry, rx, docs))
}

async fn run(
    cp: Arc<ControlPlane>,
    registry: Arc<Registry>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Commit>>,
    mut docs: HashMap<String, TenantDoc>,
) {
    loop {
        // Wait for one commit, then drain whatever else is already queued (coalescing).
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut resync: BTreeSet<String> = BTreeSet::new();
        let mut resync_all = false;
        match rx.recv().await {
            Ok(c) => note(&mut docs, &c, &mut dirty, &mut resync),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "change stream lagged; resyncing every tenant");
                resync_all = true;
            }
            Err(RecvError::Closed) => return,
        }
        loop {
            match rx.try_recv() {
                Ok(c) => note(&mut docs, &c, &mut dirty, &mut resync),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => resync_all = true,
                Err(_) => break,
            }
        }
        if resync_all {
            docs = cp.docs().await;
            dirty.extend(docs.keys().cloned());
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
                dirty.insert(t);
            }
        }
        // Rebuild the touched tenants off the async workers.
        // One copy per touched tenant (its model), then compile off the async workers.
        let work: Vec<(String, u64, Option<crate::model::Tenant>)> = dirty
            .into_iter()
            .map(|t| {
                let d = docs.get(&t);
                let rev = d.map_or(0, |d| d.revision);
                let m = d.and_then(TenantDoc::to_tenant);
                (t, rev, m)
            })
            .collect();
        let reg = Arc::clone(&registry);
        let _ = tokio::task::spawn_blocking(move || {
            for (t, rev, m) in work {
                match m {
                    Some(m) => match Snapshot::build(&m) {
                        Ok(s) => {
                            reg.install(s);
                        }
                        Err(e) => {
                            tracing::error!(tenant = %t, revision = rev, error = %e, "snapshot build failed; keeping the previous snapshot");
                        }
                    },
                    None => {
                        reg.remove(&t);
                    }
                }
            }
        })
        .await;
    }
}

fn note(
    docs: &mut HashMap<String, TenantDoc>,
    c: &Commit,
    dirty: &mut BTreeSet<String>,
    resync: &mut BTreeSet<String>,
) {
    let d = docs.entry(c.tenant.clone()).or_default();
    if c.revision <= d.revision {
        return; // already have it (initial state raced the stream)
    }
    if let Err(e) = d.apply(c) {
        tracing::warn!(tenant = %c.tenant, error = %e, "cannot apply commit; resyncing tenant");
        resync.insert(c.tenant.clone());
        return;
    }
    dirty.insert(c.tenant.clone());
}
