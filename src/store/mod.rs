//! Durable storage of the control plane's state, behind one trait with two engines:
//! an embedded engine (a directory on local disk) and PostgreSQL.
//!
//! The store is deliberately generic: per tenant it keeps rows `(collection, id) → JSON document`,
//! the tenant's current revision, and an append-only log of committed changes (which doubles as
//! the audit log). Business rules live above it, in the control plane; the store only guarantees
//! that a [`Commit`] is applied atomically, durably and in revision order.
//!
//! Engines: [`embedded::EmbeddedStore`] (redb, one file in a directory — the default) and
//! [`postgres::PostgresStore`]. [`open`] picks one from a location string, the value of
//! `portcullis serve --store`. Both pass the same conformance suite (`tests/store_conformance.rs`)
//! and crash test (`tests/store_crash.rs`), so callers may rely on identical behaviour, including
//! the input limits checked by [`Commit::validate`].

pub mod embedded;
mod health;
pub mod integrity;
pub mod postgres;
mod window;

pub use health::StoreHealth;

use std::sync::Arc;

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
    /// A user's secrets (password hash, access-card hashes), id = user id. Stored as rows, but
    /// never logged or published: [`Commit::log_form`] replaces their documents by
    /// [`REDACTED`] in the log (audit) and on the change stream.
    Credential,
    /// A sign-in session (id = session id): user, channel, expiry, whether it was revoked.
    Session,
    /// A machine client's API key (id = key id): owner, SHA-256 of the secret, expiry, revoked.
    ApiKey,
    /// A pending invitation (id = SHA-256 of its token): user, expiry, whether it was used.
    Invitation,
    /// A notification rule (id = rule id): event kind and target groups.
    NotificationRule,
}

/// What a [`Kind::Credential`] document becomes in the log and on the change stream.
pub const REDACTED: &str = "redacted";

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Tenant,
        Kind::Node,
        Kind::Role,
        Kind::User,
        Kind::Group,
        Kind::Assignment,
        Kind::Plugin,
        Kind::Credential,
        Kind::Session,
        Kind::ApiKey,
        Kind::Invitation,
        Kind::NotificationRule,
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
            Kind::Credential => "credential",
            Kind::Session => "session",
            Kind::ApiKey => "api_key",
            Kind::Invitation => "invitation",
            Kind::NotificationRule => "notification_rule",
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

/// One stored row: its key, the revision of the commit that last wrote it (its ETag) and its
/// document. The revision is kept beside the document, never inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub kind: Kind,
    pub id: String,
    /// The revision of the commit that last wrote this row.
    pub rev: u64,
    pub value: serde_json::Value,
}

/// The stored state of one tenant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantRows {
    pub tenant: String,
    pub revision: u64,
    /// All rows, sorted by `(kind, id)`.
    pub rows: Vec<Row>,
}

impl RowOp {
    /// An insert or update of `(kind, id)` to `value`; `before` is its previous state, if any.
    pub fn put(
        kind: Kind,
        id: impl Into<String>,
        value: serde_json::Value,
        before: Option<serde_json::Value>,
    ) -> RowOp {
        RowOp {
            kind,
            id: id.into(),
            value: Some(value),
            before,
        }
    }

    /// A deletion of `(kind, id)`; `before` is its previous state, if any.
    pub fn delete(kind: Kind, id: impl Into<String>, before: Option<serde_json::Value>) -> RowOp {
        RowOp {
            kind,
            id: id.into(),
            value: None,
            before,
        }
    }
}

/// Longest tenant id, row id, `actor`, `action` or `target` a store accepts, in bytes (they are
/// index keys; PostgreSQL's B-tree entries are limited to about 2.7 KB).
pub const MAX_KEY_BYTES: usize = 1024;

impl Commit {
    /// The commit as the log (audit) and the change stream carry it: the documents of
    /// [`Kind::Credential`] rows replaced by `{"redacted": true}`. Rows are stored from the
    /// commit itself; only this form leaves the store.
    pub fn log_form(&self) -> std::borrow::Cow<'_, Commit> {
        if !self.ops.iter().any(|op| op.kind == Kind::Credential) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut c = self.clone();
        for op in c.ops.iter_mut().filter(|op| op.kind == Kind::Credential) {
            for doc in [&mut op.value, &mut op.before].into_iter().flatten() {
                *doc = serde_json::json!({ REDACTED: true });
            }
        }
        std::borrow::Cow::Owned(c)
    }

    /// Checks what every engine can store identically, so that behaviour does not depend on the
    /// engine: `revision` in `1..=i64::MAX` (PostgreSQL `bigint`), a non-empty tenant id, no string
    /// longer than [`MAX_KEY_BYTES`] among the keys, no NUL character anywhere — neither in
    /// the keys nor inside the JSON documents (PostgreSQL `text` and `jsonb` reject `\u0000`) —
    /// and no document that is JSON `null` (it would read back from the log as a deletion).
    /// Both engines call it first in [`Store::commit`]; callers may call it earlier.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.revision == 0 || self.revision > i64::MAX as u64 {
            return Err(StoreError::Invalid(format!(
                "revision {} of tenant '{}' is outside 1..={}",
                self.revision,
                self.tenant,
                i64::MAX
            )));
        }
        if self.tenant.is_empty() {
            return Err(StoreError::Invalid("empty tenant id".into()));
        }
        let keys = [
            ("tenant id", self.tenant.as_str()),
            ("actor", self.actor.as_str()),
            ("action", self.action.as_str()),
            ("target", self.target.as_str()),
        ];
        for (what, value) in keys {
            check_key(what, value)?;
        }
        for op in &self.ops {
            check_key("row id", &op.id)?;
            for doc in [&op.value, &op.before].into_iter().flatten() {
                if doc.is_null() {
                    // `Some(null)` would read back from the log as `None`, i.e. a deletion.
                    return Err(StoreError::Invalid(format!(
                        "document of {} '{}' is JSON null (a deletion is `value: None`)",
                        op.kind.as_str(),
                        op.id
                    )));
                }
                if json_has_nul(doc) {
                    return Err(StoreError::Invalid(format!(
                        "document of {} '{}' contains a NUL character",
                        op.kind.as_str(),
                        op.id
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Checks a [`LogEdit::Replace`] commit against the key it replaces.
pub(crate) fn check_replacement(tenant: &str, revision: u64, c: &Commit) -> Result<(), StoreError> {
    if c.tenant != tenant || c.revision != revision {
        return Err(StoreError::Invalid(format!(
            "a log rewrite may not move revision {revision} of tenant '{tenant}'"
        )));
    }
    c.validate()
}

fn check_key(what: &str, value: &str) -> Result<(), StoreError> {
    if value.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "{what} is {} bytes long, the limit is {MAX_KEY_BYTES}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{what} '{}' contains a NUL character",
            value.escape_default()
        )));
    }
    Ok(())
}

fn json_has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Sorts rows by `(kind, id)` as [`TenantRows::rows`] requires: nothing to do for sorted input
/// (the embedded engine's key order); otherwise grouped by kind first, then each group sorted by
/// id, which is linear for groups already in id order (PostgreSQL's heap order after a bulk load).
pub(crate) fn sort_rows(rows: &mut Vec<Row>) {
    if rows.is_sorted_by(|a, b| (a.kind, &a.id) <= (b.kind, &b.id)) {
        return;
    }
    let mut kinds = Kind::ALL;
    kinds.sort_unstable();
    let mut groups: Vec<Vec<Row>> = kinds.iter().map(|_| Vec::new()).collect();
    let mut other = Vec::new();
    for row in rows.drain(..) {
        match kinds.binary_search(&row.kind) {
            Ok(i) => groups[i].push(row),
            Err(_) => other.push(row),
        }
    }
    for group in &mut groups {
        group.sort_by(|a, b| a.id.cmp(&b.id));
    }
    rows.extend(groups.into_iter().flatten());
    // Unreachable while `Kind::ALL` lists every kind; kept total rather than panicking.
    if !other.is_empty() {
        rows.extend(other);
        rows.sort_unstable_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    }
}

/// Filters for reading the commit log (audit). All filters are conjunctive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only this tenant (required unless the caller is a platform administrator).
    pub tenant: Option<String>,
    /// Revisions strictly greater than this — for replay and paging (meant for one tenant;
    /// without `tenant` it applies to every tenant's revisions alike).
    pub after_revision: Option<u64>,
    /// The actor: `alice` matches commits by `alice` and by `alice#<channel>` (an actor signed
    /// in through a channel, see `server::admin::Caller`).
    pub actor: Option<String>,
    /// Prefix match on `action`, e.g. `user.`.
    pub action_prefix: Option<String>,
    /// Exact match on `target`.
    pub target: Option<String>,
    /// Commit time window, unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// At most this many commits. `0` returns nothing (so `..Default::default()` must set it);
    /// the engines impose no cap of their own — callers exposing the log over an API should.
    pub limit: usize,
}

impl LogQuery {
    /// Every commit of `tenant` after `after_revision`, at most `limit` — the replay query.
    pub fn replay(tenant: impl Into<String>, after_revision: u64, limit: usize) -> LogQuery {
        LogQuery {
            tenant: Some(tenant.into()),
            after_revision: Some(after_revision),
            limit,
            ..LogQuery::default()
        }
    }

    /// Whether a commit with these header fields passes every filter (`limit` aside).
    pub fn matches(
        &self,
        tenant: &str,
        revision: u64,
        actor: &str,
        at_ms: i64,
        action: &str,
        target: &str,
    ) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.after_revision.is_none_or(|after| revision > after)
            && self.actor.as_deref().is_none_or(|a| {
                a == actor || actor.strip_prefix(a).is_some_and(|r| r.starts_with('#'))
            })
            && self
                .action_prefix
                .as_deref()
                .is_none_or(|p| action.starts_with(p))
            && self.target.as_deref().is_none_or(|t| t == target)
            && self.since_ms.is_none_or(|since| at_ms >= since)
            && self.until_ms.is_none_or(|until| at_ms <= until)
    }
}

/// A commit read with only a window of its row changes ([`Store::log_window`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CommitWindow {
    /// The commit; `ops` holds only the window asked for.
    pub commit: Commit,
    /// How many row changes the whole commit has.
    pub op_count: usize,
}

impl CommitWindow {
    /// The window `offset..offset + limit` of `commit`'s ops.
    pub fn of(mut commit: Commit, offset: usize, limit: usize) -> CommitWindow {
        let op_count = commit.ops.len();
        commit.ops = commit.ops.into_iter().skip(offset).take(limit).collect();
        CommitWindow { commit, op_count }
    }
}

/// What [`Store::rewrite_log`] does with one logged commit.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEdit {
    /// Leave it as it is.
    Keep,
    /// Store this instead (same tenant and revision; its checksums are recomputed).
    Replace(Commit),
    /// Remove it from the log.
    Drop,
}

/// Decides a [`LogEdit`] for each commit [`Store::rewrite_log`] visits.
pub type LogEditor = Arc<dyn Fn(Commit) -> LogEdit + Send + Sync>;

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
    /// Stored data failed its checksum or cannot be decoded, or the storage engine failed while
    /// reading it. `tenant` is empty when no single tenant is concerned.
    #[error("store corrupt: {}", corrupt_message(.tenant, .what))]
    Corrupt { tenant: String, what: String },
    #[error("invalid store location '{0}'")]
    Location(String),
    /// The commit cannot be stored as given (see [`Commit::validate`]); retrying cannot help.
    #[error("invalid commit: {0}")]
    Invalid(String),
}

impl StoreError {
    /// A [`StoreError::Corrupt`].
    pub fn corrupt(tenant: impl Into<String>, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            tenant: tenant.into(),
            what: what.into(),
        }
    }
}

fn corrupt_message(tenant: &str, what: &str) -> String {
    if tenant.is_empty() {
        what.to_string()
    } else {
        format!("tenant '{tenant}', {what}")
    }
}

/// A durable store. Every method is atomic; a successful [`Store::commit`] is durable (fsync'd /
/// committed) before it returns.
///
/// Dropping a `commit` future after it was first polled does not cancel the commit: it may still
/// be applied (as with any database, the outcome of an interrupted commit is unknown — reload).
pub trait Store: Send + Sync + 'static {
    /// Engine name for logs and metrics (`embedded`, `postgres`).
    fn engine(&self) -> &'static str;

    /// Applies `commit` atomically iff the tenant's stored revision is `commit.revision - 1`
    /// (0 for a tenant never written), appending it to the log. Otherwise [`StoreError::Conflict`]
    /// (`expected` = `commit.revision - 1`, `actual` = the stored revision) and nothing is applied.
    /// Ops are applied in order (the last op on a row wins); deleting a missing row is a no-op.
    /// A commit failing [`Commit::validate`] is [`StoreError::Invalid`].
    fn commit<'a>(&'a self, commit: &'a Commit) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Ids and revisions of every tenant that has at least one commit, sorted by id.
    fn tenants(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>>;

    /// The current rows and revision of one tenant (`None` if never written).
    fn load<'a>(&'a self, tenant: &'a str)
        -> BoxFuture<'a, Result<Option<TenantRows>, StoreError>>;

    /// Commits matching `query`, in (tenant, revision) order; at most `query.limit`.
    fn log<'a>(&'a self, query: &'a LogQuery) -> BoxFuture<'a, Result<Vec<Commit>, StoreError>>;

    /// Like [`Store::log`], but each commit keeps only its row changes `ops_offset..ops_offset +
    /// ops_limit` and tells how many it has: for answers that must stay small however big a
    /// commit is. Engines that can skip the other changes without decoding them do so.
    fn log_window<'a>(
        &'a self,
        query: &'a LogQuery,
        ops_offset: usize,
        ops_limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CommitWindow>, StoreError>> {
        Box::pin(async move {
            let commits = self.log(query).await?;
            Ok(commits
                .into_iter()
                .map(|c| CommitWindow::of(c, ops_offset, ops_limit))
                .collect())
        })
    }

    /// Rewrites the log of `tenant` up to and including `through_revision`, atomically: each
    /// commit is handed to `edit`, which keeps, replaces (e.g. personal data scrubbed) or drops it.
    /// Rows and the tenant's revision are untouched; checksums of rewritten commits are valid.
    /// Returns how many commits were replaced or dropped. A replacement naming another tenant or
    /// revision, or failing [`Commit::validate`], is [`StoreError::Invalid`] and nothing changes.
    fn rewrite_log<'a>(
        &'a self,
        tenant: &'a str,
        through_revision: u64,
        edit: LogEditor,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Whether the last writes and reads worked; after a failure, the last error until an
    /// operation of the same class (write or read) succeeds again.
    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }
}

/// Opens the store at `location`, the value of `portcullis serve --store`:
/// `postgres://…` or `postgresql://…` is a PostgreSQL database (see [`postgres::PostgresStore::open`]
/// for the extra `schema` and `pool_size` parameters); anything else is a directory for the
/// embedded engine, created if missing.
pub async fn open(location: &str) -> Result<Arc<dyn Store>, StoreError> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(location).await?))
    } else if location.trim().is_empty() {
        Err(StoreError::Location(location.to_string()))
    } else {
        Ok(Arc::new(
            embedded::EmbeddedStore::open(std::path::Path::new(location)).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sort_rows_orders_by_kind_then_id() {
        let mut rows: Vec<Row> = (0..300)
            .map(|n: u32| Row {
                kind: Kind::ALL[n as usize % Kind::ALL.len()],
                id: format!("id-{:03}", (n * 37) % 300),
                rev: u64::from(n),
                value: json!(n),
            })
            .collect();
        let mut expected = rows.clone();
        expected.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        sort_rows(&mut rows);
        assert_eq!(rows, expected);
        sort_rows(&mut rows);
        assert_eq!(rows, expected);
    }

    #[test]
    fn log_query_matches_every_filter() {
        let q = LogQuery {
            tenant: Some("t".into()),
            after_revision: Some(2),
            actor: Some("a".into()),
            action_prefix: Some("user.".into()),
            target: Some("user:x".into()),
            since_ms: Some(10),
            until_ms: Some(20),
            limit: 1,
        };
        assert!(q.matches("t", 3, "a", 10, "user.create", "user:x"));
        assert!(q.matches("t", 3, "a", 20, "user.", "user:x"));
        assert!(!q.matches("u", 3, "a", 10, "user.create", "user:x"));
        assert!(!q.matches("t", 2, "a", 10, "user.create", "user:x"));
        assert!(!q.matches("t", 3, "b", 10, "user.create", "user:x"));
        assert!(q.matches("t", 3, "a#console", 10, "user.create", "user:x"));
        assert!(!q.matches("t", 3, "ab", 10, "user.create", "user:x"));
        assert!(!q.matches("t", 3, "a", 10, "role.create", "user:x"));
        assert!(!q.matches("t", 3, "a", 10, "user.create", "user:y"));
        assert!(!q.matches("t", 3, "a", 9, "user.create", "user:x"));
        assert!(!q.matches("t", 3, "a", 21, "user.create", "user:x"));
        assert!(LogQuery::default().matches("any", 0, "", i64::MIN, "", ""));
    }
}
