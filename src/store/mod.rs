//! Durable storage of the control plane's state, behind one trait with two engines:
//! an embedded engine (a directory on local disk) and PostgreSQL.
//!
//! The store is deliberately generic: per tenant it keeps rows `(collection, id) → JSON document`,
//! the tenant's current revision, and an append-only log of committed changes (which doubles as
//! the audit log). Business rules live above it, in the control plane; the store only guarantees
//! that a [`Commit`] is applied atomically, durably and in revision order.

use serde::{Deserialize, Serialize};

/// A boxed future, so that the trait stays object-safe (`Arc<dyn Store>`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Row collections of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The tenant's own settings (one row, id = tenant id).
    Tenant,
    Node,
    Role,
    User,
    Group,
    Assignment,
    Plugin,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Tenant,
        Kind::Node,
        Kind::Role,
        Kind::User,
        Kind::Group,
        Kind::Assignment,
        Kind::Plugin,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Node => "node",
            Kind::Role => "role",
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Assignment => "assignment",
            Kind::Plugin => "plugin",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One row change: `value: None` deletes the row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowOp {
    pub kind: Kind,
    pub id: String,
    /// State after the change (`None` = row deleted).
    pub value: Option<serde_json::Value>,
    /// State before the change (`None` = row did not exist). Kept for the audit log.
    pub before: Option<serde_json::Value>,
}

/// One committed change to one tenant: the unit of atomicity, of the change stream and of audit.
/// Self-contained: applying `ops` to the tenant's rows at `revision - 1` yields the rows at
/// `revision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub tenant: String,
    /// The tenant's revision after this commit (previous + 1; 1 for the first commit).
    pub revision: u64,
    /// Who made the change (user id, token name, `system`, `import`).
    pub actor: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// What was done, e.g. `user.deactivate`, `assignment.create`, `import`.
    pub action: String,
    /// Main target, e.g. `user:alice`.
    pub target: String,
    pub ops: Vec<RowOp>,
}

/// The stored state of one tenant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantRows {
    pub tenant: String,
    pub revision: u64,
    /// All rows, sorted by `(kind, id)`.
    pub rows: Vec<(Kind, String, serde_json::Value)>,
}

/// Filters for reading the commit log (audit). All filters are conjunctive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only this tenant (required unless the caller is a platform administrator).
    pub tenant: Option<String>,
    /// Revisions strictly greater than this (tenant given) — for replay and paging.
    pub after_revision: Option<u64>,
    pub actor: Option<String>,
    /// Prefix match on `action`, e.g. `user.`.
    pub action_prefix: Option<String>,
    /// Exact match on `target`.
    pub target: Option<String>,
    /// Commit time window, unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// At most this many commits (engine may cap it).
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The tenant's revision is not `commit.revision - 1` (a concurrent writer won).
    #[error("revision conflict on tenant '{tenant}': expected {expected}, store has {actual}")]
    Conflict {
        tenant: String,
        expected: u64,
        actual: u64,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid store location '{0}'")]
    Location(String),
}

/// A durable store. Every method is atomic; a successful [`Store::commit`] is durable (fsync'd /
/// committed) before it returns.
pub trait Store: Send + Sync + 'static {
    /// Engine name for logs and metrics (`embedded`, `postgres`).
    fn engine(&self) -> &'static str;

    /// Applies `commit` atomically iff the tenant's stored revision is `commit.revision - 1`
    /// (0 for a tenant never written), appending it to the log. Otherwise [`StoreError::Conflict`].
    fn commit<'a>(&'a self, commit: &'a Commit) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Ids and revisions of every tenant that has at least one commit, sorted by id.
    fn tenants(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>>;

    /// The current rows and revision of one tenant (`None` if never written).
    fn load<'a>(&'a self, tenant: &'a str)
        -> BoxFuture<'a, Result<Option<TenantRows>, StoreError>>;

    /// Commits matching `query`, in (tenant, revision) order; at most `query.limit`.
    fn log<'a>(&'a self, query: &'a LogQuery) -> BoxFuture<'a, Result<Vec<Commit>, StoreError>>;
}
