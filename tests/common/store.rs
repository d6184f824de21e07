//! Shared by the store tests: where the engines live during a test, and small builders.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use portcullis::store::{self, Commit, Kind, RowOp, Store, TenantRows};
use serde_json::Value;

/// PostgreSQL used by the tests; `PORTCULLIS_TEST_PG` overrides.
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn pg_base_url() -> String {
    std::env::var("PORTCULLIS_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// A name unique to this process and call, usable as a PostgreSQL schema.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with `schema=NAME` added.
pub fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema={schema}")
}

/// Fails the test (never skips) when PostgreSQL is unreachable.
pub async fn require_postgres(url: &str) {
    let mut config: tokio_postgres::Config = url
        .parse()
        .unwrap_or_else(|e| panic!("PORTCULLIS_TEST_PG '{url}' is not a connection string: {e}"));
    config.connect_timeout(std::time::Duration::from_secs(5));
    match config.connect(tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            let task = tokio::spawn(conn);
            drop(client);
            let _ = task.await;
        }
        Err(e) => panic!(
            "PostgreSQL is unreachable at {url} ({e}). Run `bash tests/run.sh`, which installs and \
             starts it, or point PORTCULLIS_TEST_PG at a server (database must exist, trust or \
             password in the URL)"
        ),
    }
}

/// Drops a test schema when the test ends, pass or fail.
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        // Own thread and runtime: Drop may run inside (or after) the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(config) = url.parse::<tokio_postgres::Config>() else {
                    return;
                };
                if let Ok((client, conn)) = config.connect(tokio_postgres::NoTls).await {
                    let task = tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                    drop(client);
                    let _ = task.await;
                }
            });
        })
        .join();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Embedded,
    Postgres,
}

/// Where one test's store lives; `open` may be called again to reopen it.
pub struct Target {
    pub engine: Engine,
    pub location: String,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<SchemaGuard>,
}

impl Target {
    pub async fn new(engine: Engine) -> Target {
        match engine {
            Engine::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                Target {
                    engine,
                    location: dir.path().join("store").display().to_string(),
                    _dir: Some(dir),
                    _schema: None,
                }
            }
            Engine::Postgres => {
                let url = pg_base_url();
                require_postgres(&url).await;
                let schema = unique_name("portcullis_test");
                Target {
                    engine,
                    location: with_schema(&url, &schema),
                    _dir: None,
                    _schema: Some(SchemaGuard { url, schema }),
                }
            }
        }
    }

    /// The PostgreSQL schema of this target.
    pub fn schema(&self) -> Option<&str> {
        self._schema.as_ref().map(|g| g.schema.as_str())
    }

    /// Opens the store through the public factory.
    pub async fn open(&self) -> Arc<dyn Store> {
        store::open(&self.location)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.location))
    }
}

pub fn commit(tenant: &str, revision: u64, actor: &str, action: &str, ops: Vec<RowOp>) -> Commit {
    Commit {
        tenant: tenant.to_string(),
        revision,
        actor: actor.to_string(),
        at_ms: 1_700_000_000_000_i64.saturating_add_unsigned(revision),
        action: action.to_string(),
        target: String::new(),
        ops,
    }
}

pub type State = BTreeMap<(Kind, String), Value>;

/// The rows that applying `log` (one tenant, in order) from nothing yields.
pub fn replay<'a>(log: impl IntoIterator<Item = &'a Commit>) -> State {
    let mut state = State::new();
    for c in log {
        for op in &c.ops {
            match &op.value {
                Some(v) => state.insert((op.kind, op.id.clone()), v.clone()),
                None => state.remove(&(op.kind, op.id.clone())),
            };
        }
    }
    state
}

pub fn state_of(rows: &TenantRows) -> State {
    rows.rows
        .iter()
        .map(|r| ((r.kind, r.id.clone()), r.value.clone()))
        .collect()
}

/// The loaded rows without their revisions.
pub fn triples(rows: &TenantRows) -> Vec<(Kind, String, Value)> {
    rows.rows
        .iter()
        .map(|r| (r.kind, r.id.clone(), r.value.clone()))
        .collect()
}

/// The revision of the commit that last wrote each row after applying `log` (one tenant).
pub fn revs_after<'a>(log: impl IntoIterator<Item = &'a Commit>) -> BTreeMap<(Kind, String), u64> {
    let mut revs = BTreeMap::new();
    for c in log {
        for op in &c.ops {
            match &op.value {
                Some(_) => revs.insert((op.kind, op.id.clone()), c.revision),
                None => revs.remove(&(op.kind, op.id.clone())),
            };
        }
    }
    revs
}

/// The loaded rows' revisions.
pub fn revs_of(rows: &TenantRows) -> BTreeMap<(Kind, String), u64> {
    rows.rows
        .iter()
        .map(|r| ((r.kind, r.id.clone()), r.rev))
        .collect()
}

/// `rows` as a load must return them: sorted by (kind, id).
pub fn rows_of(state: &State) -> Vec<(Kind, String, Value)> {
    state
        .iter()
        .map(|((k, id), v)| (*k, id.clone(), v.clone()))
        .collect()
}
