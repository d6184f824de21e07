//! The set of live tenant snapshots.
//!
//! Two levels of [`ArcSwap`]: the tenant map (swapped only when a tenant is added or removed)
//! and one slot per tenant (swapped when that tenant's snapshot is rebuilt). A check loads both
//! without locks or allocation; replacing one tenant's snapshot never touches another's slot.
//!
//! A tenant whose state does not compile is recorded as failed ([`Registry::fail`]): its
//! snapshot is taken out (never served stale as if current) and the failure is what `/readyz`,
//! the metrics and the data plane's 503 `tenant_unavailable` report, until a snapshot of it is
//! installed again or it is removed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, Guard};
use rustc_hash::FxHashMap;

use super::Snapshot;

/// A loaded snapshot, pinned for the duration of one request.
pub type SnapshotGuard = Guard<Arc<Snapshot>>;

type Slots = FxHashMap<Box<str>, Arc<ArcSwap<Snapshot>>>;

/// Why a tenant is not served: its state at `revision` does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFailure {
    pub revision: u64,
    pub error: String,
}

#[derive(Debug, Default)]
struct Failures {
    /// Tenants failed now.
    current: BTreeMap<String, TenantFailure>,
    /// Failed builds per tenant since start (kept across recoveries: a counter).
    total: BTreeMap<String, u64>,
}

pub struct Registry {
    slots: ArcSwap<Slots>,
    /// Serialises changes to the tenant *map* (not to individual slots).
    writer: Mutex<()>,
    /// Bumped after every install/removal, for waiters on a revision (`min_revision`).
    changed: tokio::sync::watch::Sender<u64>,
    /// The plugin runtime: snapshots get their plugins compiled (or taken from its cache) as
    /// they are installed. Without one, plugin conditions deny.
    plugins: Option<Arc<crate::plugin::PluginHost>>,
    failures: Mutex<Failures>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            slots: ArcSwap::default(),
            writer: Mutex::new(()),
            changed: tokio::sync::watch::Sender::new(0),
            plugins: None,
            failures: Mutex::default(),
        }
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A registry that runs tenant plugins on `host`.
    pub fn with_plugins(host: Arc<crate::plugin::PluginHost>) -> Registry {
        Registry {
            plugins: Some(host),
            ..Registry::default()
        }
    }

    /// The plugin runtime, if any.
    pub fn plugin_host(&self) -> Option<&Arc<crate::plugin::PluginHost>> {
        self.plugins.as_ref()
    }

    /// A receiver that sees a new value after every install or removal.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// The current snapshot of `tenant`, if it is loaded. Lock-free, allocation-free.
    #[inline]
    pub fn get(&self, tenant: &str) -> Option<SnapshotGuard> {
        let slots = self.slots.load();
        slots.get(tenant).map(|slot| slot.load())
    }

    /// Installs `snap` as its tenant's current snapshot. A snapshot older than the one installed
    /// is ignored (returns false), so out-of-order deliveries never roll a tenant back.
    pub fn install(&self, mut snap: Snapshot) -> bool {
        if let Some(host) = &self.plugins {
            if snap.has_plugins() {
                for e in snap.attach_plugins(host) {
                    tracing::error!(tenant = snap.tenant_id(), error = %e, "plugin failed to load; its conditions deny");
                }
            }
        }
        let tenant = snap.tenant_id().to_string();
        let installed = self.install_inner(snap);
        if installed {
            self.failures().current.remove(&tenant);
            self.notify();
        }
        installed
    }

    fn failures(&self) -> MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `tenant`'s state at `revision` does not compile: its snapshot is taken out
    /// (fail closed) and the failure reported until a snapshot of it is installed again.
    pub fn fail(&self, tenant: &str, revision: u64, error: String) {
        {
            let mut f = self.failures();
            *f.total.entry(tenant.to_string()).or_default() += 1;
            f.current
                .insert(tenant.to_string(), TenantFailure { revision, error });
        }
        if !self.remove_slot(tenant) {
            self.notify();
        }
    }

    /// Why `tenant` is not served, if it failed.
    pub fn failure(&self, tenant: &str) -> Option<TenantFailure> {
        self.failures().current.get(tenant).cloned()
    }

    /// The tenants failed now, sorted by id.
    pub fn failures_now(&self) -> Vec<(String, TenantFailure)> {
        let f = self.failures();
        f.current
            .iter()
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect()
    }

    /// Failed builds per tenant since start, sorted by id.
    pub fn failure_counts(&self) -> Vec<(String, u64)> {
        let f = self.failures();
        f.total.iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    fn install_inner(&self, snap: Snapshot) -> bool {
        let id = snap.tenant_id().to_string();
        let snap = Arc::new(snap);
        if let Some(slot) = self.slots.load().get(id.as_str()) {
            return swap_if_newer(slot, snap);
        }
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.slots.load();
        if let Some(slot) = current.get(id.as_str()) {
            return swap_if_newer(slot, snap);
        }
        let mut next: Slots = (**current).clone();
        next.insert(id.into_boxed_str(), Arc::new(ArcSwap::new(snap)));
        self.slots.store(Arc::new(next));
        true
    }

    /// Removes a tenant (and any failure of it). Checks already holding its snapshot finish on
    /// it.
    pub fn remove(&self, tenant: &str) -> bool {
        let failed = self.failures().current.remove(tenant).is_some();
        let removed = self.remove_slot(tenant);
        if failed && !removed {
            self.notify();
        }
        removed
    }

    /// Takes a tenant's slot out; true (and waiters notified) if it had one.
    fn remove_slot(&self, tenant: &str) -> bool {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.slots.load();
        if !current.contains_key(tenant) {
            return false;
        }
        let mut next: Slots = (**current).clone();
        next.remove(tenant);
        self.slots.store(Arc::new(next));
        if let Some(host) = &self.plugins {
            host.unload(tenant, None);
        }
        self.notify();
        true
    }

    /// Loaded tenants and their revisions, sorted by id.
    pub fn tenants(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .slots
            .load()
            .iter()
            .map(|(k, s)| (k.to_string(), s.load().revision()))
            .collect();
        v.sort();
        v
    }

    /// Every live snapshot with its tenant id, sorted by id.
    pub fn tenant_snapshots(&self) -> Vec<(String, Arc<Snapshot>)> {
        let mut v: Vec<(String, Arc<Snapshot>)> = self
            .slots
            .load()
            .iter()
            .map(|(k, s)| (k.to_string(), s.load_full()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn len(&self) -> usize {
        self.slots.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn swap_if_newer(slot: &ArcSwap<Snapshot>, snap: Arc<Snapshot>) -> bool {
    let mut installed = false;
    slot.rcu(|cur| {
        if snap.revision() >= cur.revision() {
            installed = true;
            Arc::clone(&snap)
        } else {
            installed = false;
            Arc::clone(cur)
        }
    });
    installed
}
