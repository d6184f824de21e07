//! The control plane: business rules over a durable [`Store`], an ordered change stream, and the
//! follower that turns committed changes into live snapshots.
//!
//! Writes to one tenant are serialised by that tenant's lock; writes to different tenants run in
//! parallel. A write is: check the precondition (`If-Match` revision), compute row operations
//! under the business rules, check the tenant they would leave with the snapshot builder's own
//! validation ([`check`]), commit them to the store (durable before anything else happens),
//! apply them to the in-memory document, publish the commit on the change bus. The follower
//! applies commits to its own documents and rebuilds only the touched tenants' snapshots,
//! coalescing bursts.

pub mod authz;
pub mod check;
pub mod doc;
pub mod follower;
pub mod policy;
pub mod rules;
pub mod shard;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{broadcast, Mutex};

pub use doc::TenantDoc;
pub use rules::{Change, RuleError};
pub use shard::TenantSet;

use crate::model::file::DataFile;
use crate::store::{Commit, LogEdit, LogEditor, Store, StoreError, StoreHealth};

/// Capacity of the in-process change bus; a follower that falls further behind resyncs.
const BUS_CAPACITY: usize = 8192;

/// How often a write whose commit lost the race to another process on the same database is
/// evaluated again (on the reloaded document) before answering 409 `revision_conflict`. Each
/// loss means another commit landed, and the reload takes longer than another process's
/// in-memory rule and commit, so one write may lose many races in a burst: a small tenant's
/// 60-request race on two processes saw one write lose 9 in a row.
const WRITE_RETRIES: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("unknown tenant '{0}'")]
    UnknownTenant(String),
    #[error("{target} changed (revision {actual}, expected {expected}): reload and retry")]
    Precondition {
        target: String,
        expected: u64,
        actual: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored data for tenant '{0}' cannot be read: {1}")]
    Corrupt(String, String),
}

/// An `If-Match` precondition: the row must still be at this revision.
#[derive(Debug, Clone)]
pub struct Expect {
    pub kind: crate::store::Kind,
    pub id: String,
    pub revision: u64,
}

/// The result of a committed write.
#[derive(Debug, Clone)]
pub struct Written {
    pub revision: u64,
    pub change: Change,
}

pub struct ControlPlane {
    store: Arc<dyn Store>,
    tenants: DashMap<String, Arc<Mutex<TenantDoc>>>,
    /// Serialises tenant creation (the map insert), not writes.
    create: Mutex<()>,
    bus: broadcast::Sender<Arc<Commit>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A commit as it leaves the control plane (the change bus, NATS, a replay from the log): the
/// one place where what followers may see of a commit is decided — the log's form, with
/// credentials (password and card hashes) redacted.
pub fn published(commit: Commit) -> Commit {
    match commit.log_form() {
        std::borrow::Cow::Borrowed(_) => commit,
        std::borrow::Cow::Owned(c) => c,
    }
}

impl ControlPlane {
    /// Opens the control plane over `store`, loading every tenant.
    pub async fn open(store: Arc<dyn Store>) -> Result<ControlPlane, ControlError> {
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        let cp = ControlPlane {
            store,
            tenants: DashMap::new(),
            create: Mutex::new(()),
            bus,
        };
        for (id, _) in cp.store.tenants().await? {
            let doc = cp.load_doc(&id).await?;
            cp.tenants.insert(id, Arc::new(Mutex::new(doc)));
        }
        Ok(cp)
    }

    async fn load_doc(&self, tenant: &str) -> Result<TenantDoc, ControlError> {
        let rows = self.store.load(tenant).await?.unwrap_or_default();
        TenantDoc::from_rows(&rows)
            .map_err(|e| ControlError::Corrupt(tenant.to_string(), e.to_string()))
    }

    pub fn store_engine(&self) -> &'static str {
        self.store.engine()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store's health: degraded while its writes (or reads) fail, with the last error.
    pub fn store_health(&self) -> StoreHealth {
        self.store.health()
    }

    /// Imports every tenant of `data` that the store does not have yet (one commit each).
    /// Returns the ids imported.
    pub async fn seed(&self, data: &DataFile, actor: &str) -> Result<Vec<String>, ControlError> {
        let mut imported = Vec::new();
        for t in &data.tenants {
            if self.tenants.contains_key(&t.id) {
                continue;
            }
            // Initial passwords of the data file: hashed here, stored as credentials.
            let mut hashes = Vec::with_capacity(t.sign_in.passwords.len());
            for (user, password) in &t.sign_in.passwords {
                let hash = crate::identity::hash_password(password)
                    .map_err(|e| RuleError::invalid("password", format!("user '{user}': {e}")))?;
                hashes.push((user.clone(), hash));
            }
            self.write_new(&t.id, actor, |_| {
                rules::import(t, crate::clock::unix_now(), &hashes)
            })
            .await?;
            imported.push(t.id.clone());
        }
        Ok(imported)
    }

    /// Subscribes to committed changes, in commit order per tenant.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Commit>> {
        self.bus.subscribe()
    }

    /// The logged commits of `tenant` after revision `after` (at most `limit`), in the form the
    /// change bus carries them ([`published`]): what a publisher that fell behind (a crash, an
    /// outage) sends again. Commits a log rewrite dropped are missing: callers check continuity.
    pub async fn replay(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Commit>>, ControlError> {
        let q = crate::store::LogQuery::replay(tenant, after, limit);
        let commits = self.store.log(&q).await?;
        Ok(commits
            .into_iter()
            .map(|c| Arc::new(published(c)))
            .collect())
    }

    /// Copies of every tenant document (for a follower starting up; subscribe first).
    pub async fn docs(&self) -> HashMap<String, TenantDoc> {
        let handles: Vec<(String, Arc<Mutex<TenantDoc>>)> = self
            .tenants
            .iter()
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        let mut out = HashMap::with_capacity(handles.len());
        for (id, h) in handles {
            out.insert(id, h.lock().await.clone());
        }
        out
    }

    /// A copy of one tenant's document.
    pub async fn doc(&self, tenant: &str) -> Option<TenantDoc> {
        let h = self.tenants.get(tenant).map(|e| Arc::clone(e.value()))?;
        let d = h.lock().await.clone();
        Some(d)
    }

    /// A tenant's revision (a deleted tenant's too); `None` for an id never used.
    pub async fn revision_of(&self, tenant: &str) -> Option<u64> {
        let h = self.tenants.get(tenant).map(|e| Arc::clone(e.value()))?;
        let r = h.lock().await.revision;
        Some(r)
    }

    /// Runs `f` with read access to a tenant's document.
    pub async fn read<R>(
        &self,
        tenant: &str,
        f: impl FnOnce(&TenantDoc) -> R,
    ) -> Result<R, ControlError> {
        let h = self.tenants.get(tenant).map(|e| Arc::clone(e.value()));
        let h = h.ok_or_else(|| ControlError::UnknownTenant(tenant.to_string()))?;
        let d = h.lock().await;
        if d.settings.is_none() {
            return Err(ControlError::UnknownTenant(tenant.to_string()));
        }
        Ok(f(&d))
    }

    /// Tenant ids with live settings, sorted.
    pub fn tenant_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tenants.iter().map(|e| e.key().clone()).collect();
        v.sort();
        v
    }

    /// Writes to an existing tenant: `f` computes the change from the current document under
    /// the business rules; `expected` is the caller's `If-Match` revision.
    ///
    /// The tenant's lock makes the rule and the commit one step within this process. Another
    /// process writing to the same database may still commit in between: the store then refuses
    /// the commit (its revision check), the document is reloaded, and the precondition and the
    /// rule are evaluated again on what the other process committed — so a rule's limits (quotas,
    /// uniqueness) hold across processes, and a refusal says why (`quota_exceeded`), not that
    /// the tenant moved.
    pub async fn write(
        &self,
        tenant: &str,
        actor: &str,
        expected: Option<Expect>,
        mut f: impl FnMut(&TenantDoc) -> Result<Change, RuleError>,
    ) -> Result<Written, ControlError> {
        let mut doc = self.live(tenant).await?;
        let mut attempt = 0;
        loop {
            if let Some(e) = &expected {
                let actual = doc.rev_of(e.kind, &e.id);
                // An unknown entity (revision 0) is left to the rule, which answers "not found".
                if actual != 0 && e.revision != actual {
                    return Err(ControlError::Precondition {
                        target: format!("{} '{}'", e.kind.as_str(), e.id),
                        expected: e.revision,
                        actual,
                    });
                }
            }
            let change = f(&doc)?;
            match self.commit(tenant, actor, &mut doc, change).await {
                Err(ControlError::Precondition { actual, .. }) if attempt < WRITE_RETRIES => {
                    attempt += 1;
                    tracing::debug!(
                        tenant,
                        attempt,
                        revision = actual,
                        "another process committed first; evaluating the write again"
                    );
                }
                r => return r,
            }
        }
    }

    /// The document of a live (not deleted) tenant, locked for a write.
    async fn live(
        &self,
        tenant: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<TenantDoc>, ControlError> {
        let h = self.tenants.get(tenant).map(|e| Arc::clone(e.value()));
        let h = h.ok_or_else(|| ControlError::UnknownTenant(tenant.to_string()))?;
        let doc = h.lock_owned().await;
        if doc.settings.is_none() {
            return Err(ControlError::UnknownTenant(tenant.to_string()));
        }
        Ok(doc)
    }

    /// Records a refused management write in the tenant's audit log: an entry without row
    /// changes (action `refused`, the request and the refusal as its target), so that refused
    /// escalations are audited with their actor. Raises the revision like any entry; changes
    /// nothing else.
    pub async fn record_refusal(
        &self,
        tenant: &str,
        actor: &str,
        target: String,
    ) -> Result<u64, ControlError> {
        let mut doc = self.live(tenant).await?;
        let revision = doc.revision + 1;
        let commit = Commit {
            tenant: tenant.to_string(),
            revision,
            actor: actor.to_string(),
            at_ms: now_ms(),
            action: "refused".into(),
            target,
            ops: Vec::new(),
        };
        self.store.commit(&commit).await?;
        if let Err(e) = doc.apply(&commit) {
            tracing::error!(tenant, error = %e, "in-memory apply failed after commit; reloading tenant");
            *doc = self.load_doc(tenant).await?;
        }
        let _ = self.bus.send(Arc::new(published(commit)));
        Ok(revision)
    }

    /// Erases deleted user `id` of `tenant` (see [`rules::erase_user`]): first scrubs the user's
    /// email and name from every logged commit (as [`rules::ERASED`]), then commits the erasure,
    /// both under the tenant's lock so that nothing touches the user in between. A failed scrub
    /// commits nothing (retry); a failed commit leaves a scrubbed log and the deleted user.
    pub async fn erase_user(
        &self,
        tenant: &str,
        actor: &str,
        id: &str,
    ) -> Result<Written, ControlError> {
        let mut doc = self.live(tenant).await?;
        let change = rules::erase_user(&doc, id)?;
        let user = id.to_string();
        let edit: LogEditor = Arc::new(move |c: Commit| match rules::scrub_user(&c, &user) {
            Some(scrubbed) => LogEdit::Replace(scrubbed),
            None => LogEdit::Keep,
        });
        let scrubbed = self.store.rewrite_log(tenant, doc.revision, edit).await?;
        tracing::info!(tenant, scrubbed, "user erased from the audit log");
        self.commit(tenant, actor, &mut doc, change).await
    }

    /// Forgets the log of a deleted tenant's incarnation through `revision` (its deletion): every
    /// commit is dropped but the deletion, which stays as a tombstone without row changes
    /// (revision, actor, time, action, target). With `keep_tombstone: false` (re-creation of the
    /// id) the tombstone goes too, so that the new tenant's audit shows nothing of the old one.
    async fn forget_log(
        &self,
        tenant: &str,
        revision: u64,
        keep_tombstone: bool,
    ) -> Result<u64, StoreError> {
        let edit: LogEditor = Arc::new(move |c: Commit| {
            if keep_tombstone && c.revision == revision {
                LogEdit::Replace(Commit {
                    ops: Vec::new(),
                    ..c
                })
            } else {
                LogEdit::Drop
            }
        });
        self.store.rewrite_log(tenant, revision, edit).await
    }

    /// Creates a tenant (or writes the first commit of one): fails if it exists.
    pub async fn write_new(
        &self,
        tenant: &str,
        actor: &str,
        f: impl FnOnce(&TenantDoc) -> Result<Change, RuleError>,
    ) -> Result<Written, ControlError> {
        let _c = self.create.lock().await;
        if let Some(twin) = self.tenants.iter().find_map(|e| {
            (e.key() != tenant && e.key().eq_ignore_ascii_case(tenant)).then(|| e.key().clone())
        }) {
            return Err(RuleError::conflict(
                "tenant",
                format!("tenant '{tenant}' differs from existing tenant '{twin}' only in case"),
            )
            .into());
        }
        let h = match self.tenants.get(tenant).map(|e| Arc::clone(e.value())) {
            Some(h) => h,
            None => {
                let h = Arc::new(Mutex::new(TenantDoc::default()));
                self.tenants.insert(tenant.to_string(), Arc::clone(&h));
                h
            }
        };
        let mut doc = h.lock().await;
        drop(_c);
        if doc.settings.is_some() {
            return Err(
                RuleError::conflict("tenant", format!("tenant '{tenant}' already exists")).into(),
            );
        }
        if doc.revision > 0 {
            // The id was used by a deleted tenant: its log must not show in the new one's audit.
            self.forget_log(tenant, doc.revision, false).await?;
        }
        let result = match f(&doc) {
            Ok(change) => self.commit(tenant, actor, &mut doc, change).await,
            Err(e) => Err(e.into()),
        };
        if doc.settings.is_none() && doc.revision == 0 {
            // Nothing was created: do not leave an empty entry behind.
            drop(doc);
            self.tenants.remove_if(tenant, |_, h| {
                h.try_lock()
                    .is_ok_and(|d| d.settings.is_none() && d.revision == 0)
            });
        }
        result
    }

    async fn commit(
        &self,
        tenant: &str,
        actor: &str,
        doc: &mut TenantDoc,
        mut change: Change,
    ) -> Result<Written, ControlError> {
        // Drop operations that change nothing (e.g. an empty PATCH): no revision, no audit entry.
        change
            .ops
            .retain(|op| op.value.is_none() || op.value != op.before);
        if change.ops.is_empty() {
            return Ok(Written {
                revision: doc.revision,
                change,
            });
        }
        // Nothing is committed that the snapshot builder would refuse.
        check::admit(doc, tenant, &change.ops)?;
        // Each row's revision (its ETag) is the commit's: the store keeps it beside the value.
        let revision = doc.revision + 1;
        let ops = change.ops.clone();
        let commit = Commit {
            tenant: tenant.to_string(),
            revision,
            actor: actor.to_string(),
            at_ms: now_ms(),
            action: change.action.clone(),
            target: change.target.clone(),
            ops,
        };
        match self.store.commit(&commit).await {
            Ok(()) => {}
            Err(StoreError::Conflict { actual, .. }) => {
                // Another writer (another process on the same database) got there first: reload.
                *doc = self.load_doc(tenant).await?;
                return Err(ControlError::Precondition {
                    target: format!("tenant '{tenant}'"),
                    expected: revision - 1,
                    actual,
                });
            }
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = doc.apply(&commit) {
            // The store has the commit; our copy disagrees. Reload from the store.
            tracing::error!(tenant, error = %e, "in-memory apply failed after commit; reloading tenant");
            *doc = self.load_doc(tenant).await?;
        }
        let deleted = doc.settings.is_none();
        let _ = self.bus.send(Arc::new(published(commit)));
        if deleted {
            // The tenant is gone: so is the personal data in its log (its rows went with the
            // commit). A failure here is repaired when the id is created again.
            if let Err(e) = self.forget_log(tenant, revision, true).await {
                tracing::error!(tenant, error = %e, "forgetting the deleted tenant's audit log failed");
            }
        }
        Ok(Written { revision, change })
    }
}
