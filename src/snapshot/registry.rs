//! The set of live tenant snapshots.
//!
//! Two levels of [`ArcSwap`]: the tenant map (swapped only when a tenant is added or removed)
//! and one slot per tenant (swapped when that tenant's snapshot is rebuilt). A check loads both
//! without locks or allocation; replacing one tenant's snapshot never touches another's slot.
//!
//! Plugins: a snapshot gets its plugins attached (compiled, or taken from the runtime's
//! content-hash cache) as it is installed. With [`Registry::compile_in_background`], a snapshot
//! whose plugins still need compiling is handed to one background compile thread instead, so
//! the caller (the follower, a start-up load) never waits for a compile: the tenant is
//! *loading* ([`Registry::is_loading`]) until it is installed — a tenant seen for the first time
//! is absent meanwhile, an updated tenant keeps serving its previous snapshot.
//!
//! A tenant whose state does not compile is recorded as failed ([`Registry::fail`]): its
//! snapshot is taken out (never served stale as if current) and the failure is what `/readyz`,
//! the metrics and the data plane's 503 `tenant_unavailable` report, until a snapshot of it is
//! installed again or it is removed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

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

/// What the background compile thread shares with the registry.
struct Shared {
    slots: ArcSwap<Slots>,
    /// Serialises changes to the tenant *map* (not to individual slots).
    writer: Mutex<()>,
    /// Bumped after every install/removal, for waiters on a revision (`min_revision`).
    changed: tokio::sync::watch::Sender<u64>,
    /// Tenants whose snapshot waits for its plugins to compile → newest such revision.
    loading: Mutex<HashMap<String, u64>>,
    failures: Mutex<Failures>,
}

pub struct Registry {
    shared: Arc<Shared>,
    /// The plugin runtime: snapshots get their plugins compiled (or taken from its cache) as
    /// they are installed. Without one, plugin conditions deny.
    plugins: Option<Arc<crate::plugin::PluginHost>>,
    /// The background compile queue, when enabled ([`Registry::compile_in_background`]).
    background: Mutex<Option<mpsc::Sender<Snapshot>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            shared: Arc::new(Shared {
                slots: ArcSwap::default(),
                writer: Mutex::new(()),
                changed: tokio::sync::watch::Sender::new(0),
                loading: Mutex::new(HashMap::new()),
                failures: Mutex::default(),
            }),
            plugins: None,
            background: Mutex::new(None),
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

    /// From now on, snapshots whose plugins need compiling are installed by one background
    /// thread (compiles run one at a time: bounded memory), and [`Registry::install`] returns
    /// at once. Without a plugin runtime this changes nothing.
    pub fn compile_in_background(&self) -> std::io::Result<()> {
        let Some(host) = self.plugins.clone() else {
            return Ok(());
        };
        let mut bg = lock(&self.background);
        if bg.is_some() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel::<Snapshot>();
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("plugin-compile".into())
            .spawn(move || {
                for mut snap in rx {
                    attach(&host, &mut snap);
                    let (tenant, revision) = (snap.tenant_id().to_string(), snap.revision());
                    if shared.install(snap) {
                        lock(&shared.failures).current.remove(&tenant);
                    }
                    shared.loaded(&tenant, revision);
                    shared.notify();
                }
            })?;
        *bg = Some(tx);
        Ok(())
    }

    /// Whether `tenant` has a snapshot waiting for its plugins to compile.
    pub fn is_loading(&self, tenant: &str) -> bool {
        lock(&self.shared.loading).contains_key(tenant)
    }

    /// Tenants waiting for their plugins to compile.
    pub fn loading(&self) -> usize {
        lock(&self.shared.loading).len()
    }

    /// The plugin runtime, if any.
    pub fn plugin_host(&self) -> Option<&Arc<crate::plugin::PluginHost>> {
        self.plugins.as_ref()
    }

    /// A receiver that sees a new value after every install or removal.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// The current snapshot of `tenant`, if it is loaded. Lock-free, allocation-free.
    #[inline]
    pub fn get(&self, tenant: &str) -> Option<SnapshotGuard> {
        let slots = self.shared.slots.load();
        slots.get(tenant).map(|slot| slot.load())
    }

    /// Installs `snap` as its tenant's current snapshot. A snapshot older than the one installed
    /// is ignored (returns false), so out-of-order deliveries never roll a tenant back. With
    /// [`Registry::compile_in_background`], a snapshot whose plugins need compiling is queued
    /// (returns true; the tenant is loading until it is installed).
    pub fn install(&self, mut snap: Snapshot) -> bool {
        if let Some(host) = &self.plugins {
            if snap.has_plugins() {
                let background = lock(&self.background).is_some();
                if background
                    && !snap.view().plugins.iter().all(|p| {
                        host.is_compiled(p.sha256.as_str())
                            && p.canary
                                .as_ref()
                                .is_none_or(|c| host.is_compiled(c.sha256.as_str()))
                    })
                {
                    match self.defer(snap) {
                        Ok(()) => return true,
                        Err(s) => snap = s,
                    }
                }
                attach(host, &mut snap);
            }
        }
        let (tenant, revision) = (snap.tenant_id().to_string(), snap.revision());
        let installed = self.shared.install(snap);
        if installed {
            lock(&self.shared.failures).current.remove(&tenant);
            self.shared.loaded(&tenant, revision);
            self.shared.notify();
        }
        installed
    }

    /// Records that `tenant`'s state at `revision` does not compile: its snapshot is taken out
    /// (fail closed) and the failure reported until a snapshot of it is installed again.
    pub fn fail(&self, tenant: &str, revision: u64, error: String) {
        {
            let mut f = lock(&self.shared.failures);
            *f.total.entry(tenant.to_string()).or_default() += 1;
            f.current
                .insert(tenant.to_string(), TenantFailure { revision, error });
        }
        if !self.remove_slot(tenant) {
            self.shared.notify();
        }
    }

    /// Why `tenant` is not served, if it failed.
    pub fn failure(&self, tenant: &str) -> Option<TenantFailure> {
        lock(&self.shared.failures).current.get(tenant).cloned()
    }

    /// The tenants failed now, sorted by id.
    pub fn failures_now(&self) -> Vec<(String, TenantFailure)> {
        let f = lock(&self.shared.failures);
        f.current
            .iter()
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect()
    }

    /// Failed builds per tenant since start, sorted by id.
    pub fn failure_counts(&self) -> Vec<(String, u64)> {
        let f = lock(&self.shared.failures);
        f.total.iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    /// Queues `snap` for the background compile thread; gives it back when there is none.
    fn defer(&self, snap: Snapshot) -> Result<(), Snapshot> {
        let bg = lock(&self.background);
        let Some(tx) = bg.as_ref() else {
            return Err(snap);
        };
        let (tenant, revision) = (snap.tenant_id().to_string(), snap.revision());
        // Marked before it is queued: the thread may finish first.
        lock(&self.shared.loading)
            .entry(tenant.clone())
            .and_modify(|r| *r = (*r).max(revision))
            .or_insert(revision);
        match tx.send(snap) {
            Ok(()) => {
                tracing::info!(
                    tenant,
                    revision,
                    "tenant plugins compile in the background; the tenant is loading"
                );
                Ok(())
            }
            Err(mpsc::SendError(snap)) => {
                self.shared.loaded(&tenant, revision);
                Err(snap)
            }
        }
    }

    /// Removes a tenant (and any failure of it). Checks already holding its snapshot finish on
    /// it.
    pub fn remove(&self, tenant: &str) -> bool {
        let failed = lock(&self.shared.failures).current.remove(tenant).is_some();
        let removed = self.remove_slot(tenant);
        if failed && !removed {
            self.shared.notify();
        }
        removed
    }

    /// Takes a tenant's slot out; true (and waiters notified) if it had one.
    fn remove_slot(&self, tenant: &str) -> bool {
        let s = &self.shared;
        let _w = lock(&s.writer);
        let current = s.slots.load();
        if !current.contains_key(tenant) {
            return false;
        }
        let mut next: Slots = (**current).clone();
        next.remove(tenant);
        s.slots.store(Arc::new(next));
        if let Some(host) = &self.plugins {
            host.unload(tenant, None);
        }
        s.notify();
        true
    }

    /// Loaded tenants and their revisions, sorted by id.
    pub fn tenants(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .shared
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
            .shared
            .slots
            .load()
            .iter()
            .map(|(k, s)| (k.to_string(), s.load_full()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn len(&self) -> usize {
        self.shared.slots.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Attaches `snap`'s plugins, logging the ones that fail (their conditions deny).
fn attach(host: &crate::plugin::PluginHost, snap: &mut Snapshot) {
    for e in snap.attach_plugins(host) {
        tracing::error!(tenant = snap.tenant_id(), error = %e, "plugin failed to load; its conditions deny");
    }
}

impl Shared {
    fn notify(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// The tenant is no longer loading once a revision at least as new as the queued one is
    /// installed (or dropped as older than the live one).
    fn loaded(&self, tenant: &str, revision: u64) {
        let mut loading = lock(&self.loading);
        if loading.get(tenant).is_some_and(|&r| r <= revision) {
            loading.remove(tenant);
        }
    }

    fn install(&self, snap: Snapshot) -> bool {
        let id = snap.tenant_id().to_string();
        let snap = Arc::new(snap);
        if let Some(slot) = self.slots.load().get(id.as_str()) {
            return swap_if_newer(slot, snap);
        }
        let _w = lock(&self.writer);
        let current = self.slots.load();
        if let Some(slot) = current.get(id.as_str()) {
            return swap_if_newer(slot, snap);
        }
        let mut next: Slots = (**current).clone();
        next.insert(id.into_boxed_str(), Arc::new(ArcSwap::new(snap)));
        self.slots.store(Arc::new(next));
        true
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::plugin::{Limits, PluginHost};

    /// Tenant `t` at `revision` with one plugin role (the module abstains).
    fn snapshot(dir: &std::path::Path, revision: u64) -> Snapshot {
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 1)
            (func (export "portcullis_abi_version") (result i32) (i32.const 1))
            (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "portcullis_evaluate") (param i32 i32) (result i32) (i32.const 0)))"#,
        )
        .unwrap();
        std::fs::write(dir.join("p.wasm"), wasm).unwrap();
        let y = "tenants:\n  - id: t\n    rbac: enterprise\n    plugins: [{ name: p, path: p.wasm }]\n    nodes: [{ id: n, kind: asset }]\n    roles: [{ id: r, permissions: ['asset:read'], plugin: p }]\n    users: [{ id: u, email: u@t.example }]\n    assignments: [{ user: u, role: r, scope: n }]\n";
        std::fs::write(dir.join("t.yaml"), y).unwrap();
        let mut tenant = crate::model::file::load_path(&dir.join("t.yaml"))
            .unwrap()
            .tenants
            .remove(0);
        tenant.revision = revision;
        Snapshot::build(&tenant).unwrap()
    }

    #[test]
    fn plugins_compile_in_the_background_and_the_tenant_is_loading_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(PluginHost::new(Limits::default()).unwrap());
        let reg = Registry::with_plugins(host.clone());
        reg.compile_in_background().unwrap();
        assert!(reg.install(snapshot(dir.path(), 1)));
        // Never absent and not loading: absent means loading.
        assert!(reg.get("t").is_some() || reg.is_loading("t"));
        let until = Instant::now() + Duration::from_secs(30);
        while reg.get("t").is_none() || reg.is_loading("t") {
            assert!(Instant::now() < until, "never installed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let snap = reg.get("t").unwrap();
        assert_eq!(snap.attached_plugins().count(), 1, "plugins attached");
        assert_eq!(reg.loading(), 0);
        // The same module again (a new revision): compiled already, installed at once.
        assert!(reg.install(snapshot(dir.path(), 2)));
        assert_eq!(reg.get("t").unwrap().revision(), 2);
        assert!(!reg.is_loading("t"));
    }

    #[test]
    fn without_background_compiles_install_inline() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::with_plugins(Arc::new(PluginHost::new(Limits::default()).unwrap()));
        assert!(reg.install(snapshot(dir.path(), 1)));
        assert_eq!(reg.get("t").unwrap().attached_plugins().count(), 1);
        assert!(!reg.is_loading("t"));
    }
}
