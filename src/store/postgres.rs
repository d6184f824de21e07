//! The PostgreSQL engine: `tokio-postgres` (no TLS) behind a small `deadpool-postgres` pool.
//!
//! # Location
//! `postgres://user[:password]@host[:port]/database[?param=value&…]` (or `postgresql://`), with
//! every libpq-style parameter `tokio-postgres` knows, plus two of ours, removed before the rest is
//! parsed:
//! - `schema=NAME` — the PostgreSQL schema holding the tables (default `portcullis`; lower-case
//!   letters, digits and `_`). Lets several deployments or test runs share one database.
//! - `pool_size=N` — most connections (default 8).
//!
//! # Schema (version 2), created or migrated at open under an advisory lock
//! ```sql
//! tenants(id text PRIMARY KEY, revision bigint)
//! rows(tenant text, kind text, id text, doc jsonb, rev bigint, sum bytea,
//!      PRIMARY KEY (tenant, kind, id))
//! commits(tenant text, revision bigint, actor text, at_ms bigint, action text, target text,
//!         ops jsonb, sum bytea, PRIMARY KEY (tenant, revision))
//!   + indexes (actor, tenant, revision), (action, tenant, revision), (at_ms),
//!     (tenant, target, revision) for the log filters
//! schema_version(version int)
//! ```
//! Text columns use the `"C"` collation so that `ORDER BY` agrees with Rust's byte-wise string
//! order and `LIKE 'prefix%'` can use the B-tree indexes.
//!
//! `rev` is the revision of the commit that last wrote the row; `sum` is a SHA-256 over the
//! record's key and the canonical form of its JSON ([`super::integrity`]), checked on every load
//! and log read (a mismatch is [`StoreError::Corrupt`]). Migrating version 1 (no `rev`, no `sum`;
//! the revision as a `_rev` member inside each document and logged op) to 2 moves `_rev` out and
//! computes every checksum, in the migration's transaction.
//!
//! # Commit
//! One transaction: `SELECT revision … FOR UPDATE` locks the tenant's row (serialising writers of
//! that tenant only); a mismatch rolls back with [`StoreError::Conflict`]. A tenant's first commit
//! inserts its row with `ON CONFLICT DO NOTHING`, so of two concurrent first commits exactly one
//! inserts. The ops are collapsed to each row's final state and written with two set-based
//! statements (`unnest` arrays), pipelined with the commit's log insert; then `COMMIT`, which
//! returns once the WAL is flushed — provided the server keeps `synchronous_commit` on (the
//! default; [`PostgresStore::open`] logs a warning otherwise).
//!
//! # Load
//! One streamed query in a `REPEATABLE READ` read-only transaction (consistent with the revision
//! read in the same transaction); rows arrive in the binary protocol as they are produced, no
//! per-row round trip.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{IsolationLevel, NoTls};

use super::health::{Health, Op};
use super::integrity;
use super::{
    BoxFuture, Commit, Kind, LogEdit, LogEditor, LogQuery, Row, RowOp, Store, StoreError,
    StoreHealth, TenantRows,
};

/// Schema used when the location names none.
pub const DEFAULT_SCHEMA: &str = "portcullis";
/// Connections in the pool when the location names no `pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Layout version recorded in `schema_version`; opening a newer schema fails.
pub const SCHEMA_VERSION: i32 = 2;
/// Rows or commits per statement of the version-2 upgrade.
const UPGRADE_BATCH: i64 = 2000;

/// Options that are not part of the connection string proper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    pub schema: String,
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            schema: DEFAULT_SCHEMA.to_string(),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// Splits our own `schema` and `pool_size` parameters off a connection URL; returns the URL that
/// `tokio-postgres` should parse and the options.
pub fn split_location(location: &str) -> Result<(String, PgOptions), StoreError> {
    let bad = |why: &str| StoreError::Location(format!("{}: {why}", redact(location)));
    let mut opts = PgOptions::default();
    let Some((base, query)) = location.split_once('?') else {
        return Ok((location.to_string(), opts));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", v)) => opts.schema = v.to_string(),
            Some(("pool_size", v)) => {
                opts.pool_size = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("pool_size must be a positive integer"))?;
            }
            _ => kept.push(pair),
        }
    }
    check_schema_name(&opts.schema).map_err(|why| bad(&why))?;
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, opts))
}

fn check_schema_name(schema: &str) -> Result<(), String> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema '{schema}' must be 1-63 lower-case letters, digits or '_', not starting with a digit"
        ))
    }
}

/// The location without its password, for messages.
pub fn redact(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((auth, host)) => (auth, host),
        None => return location.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => location.to_string(),
    }
}

/// SQL text, schema-qualified once at open (and cached as prepared statements per connection).
struct Sql {
    lock_tenant: String,
    insert_tenant: String,
    update_tenant: String,
    upsert_rows: String,
    delete_rows: String,
    insert_commit: String,
    tenants: String,
    revision: String,
    load_rows: String,
    log_select: String,
}

impl Sql {
    fn new(s: &str) -> Sql {
        Sql {
            lock_tenant: format!("SELECT revision FROM {s}.tenants WHERE id = $1 FOR UPDATE"),
            insert_tenant: format!(
                "INSERT INTO {s}.tenants (id, revision) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"
            ),
            update_tenant: format!("UPDATE {s}.tenants SET revision = $2 WHERE id = $1"),
            upsert_rows: format!(
                "INSERT INTO {s}.rows (tenant, kind, id, doc, rev, sum) \
                 SELECT $1, k, i, d, $5, c \
                 FROM unnest($2::text[], $3::text[], $4::jsonb[], $6::bytea[]) AS t(k, i, d, c) \
                 ON CONFLICT (tenant, kind, id) \
                 DO UPDATE SET doc = EXCLUDED.doc, rev = EXCLUDED.rev, sum = EXCLUDED.sum"
            ),
            delete_rows: format!(
                "DELETE FROM {s}.rows r USING unnest($2::text[], $3::text[]) AS t(k, i) \
                 WHERE r.tenant = $1 AND r.kind = t.k AND r.id = t.i"
            ),
            insert_commit: format!(
                "INSERT INTO {s}.commits (tenant, revision, actor, at_ms, action, target, ops, sum) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            tenants: format!("SELECT id, revision FROM {s}.tenants ORDER BY id"),
            revision: format!("SELECT revision FROM {s}.tenants WHERE id = $1"),
            load_rows: format!("SELECT kind, id, doc, rev, sum FROM {s}.rows WHERE tenant = $1"),
            log_select: format!(
                "SELECT tenant, revision, actor, at_ms, action, target, ops, sum FROM {s}.commits"
            ),
        }
    }
}

fn migrations(s: &str) -> Vec<String> {
    vec![
        format!(
            r#"
CREATE TABLE IF NOT EXISTS {s}.tenants (
    id       text COLLATE "C" PRIMARY KEY,
    revision bigint NOT NULL CHECK (revision > 0)
);
CREATE TABLE IF NOT EXISTS {s}.rows (
    tenant text COLLATE "C" NOT NULL,
    kind   text COLLATE "C" NOT NULL,
    id     text COLLATE "C" NOT NULL,
    doc    jsonb NOT NULL,
    PRIMARY KEY (tenant, kind, id)
);
CREATE TABLE IF NOT EXISTS {s}.commits (
    tenant   text COLLATE "C" NOT NULL,
    revision bigint NOT NULL,
    actor    text COLLATE "C" NOT NULL,
    at_ms    bigint NOT NULL,
    action   text COLLATE "C" NOT NULL,
    target   text COLLATE "C" NOT NULL,
    ops      jsonb NOT NULL,
    PRIMARY KEY (tenant, revision)
);
CREATE INDEX IF NOT EXISTS commits_actor ON {s}.commits (actor, tenant, revision);
CREATE INDEX IF NOT EXISTS commits_action ON {s}.commits (action, tenant, revision);
CREATE INDEX IF NOT EXISTS commits_at ON {s}.commits (at_ms);
CREATE INDEX IF NOT EXISTS commits_target ON {s}.commits (tenant, target, revision);
"#
        ),
        // Version 2: revision and checksum beside each row, checksum of each commit. The
        // upgrade fills them ([`PostgresStore::upgrade_v2`]) before `NOT NULL` is set.
        format!(
            "ALTER TABLE {s}.rows ADD COLUMN IF NOT EXISTS rev bigint, \
                                  ADD COLUMN IF NOT EXISTS sum bytea; \
             ALTER TABLE {s}.commits ADD COLUMN IF NOT EXISTS sum bytea;"
        ),
    ]
}

/// Run after the version-2 step has filled the new columns.
fn migration_v2_done(s: &str) -> String {
    format!(
        "ALTER TABLE {s}.rows ALTER COLUMN rev SET NOT NULL, ALTER COLUMN sum SET NOT NULL; \
         ALTER TABLE {s}.commits ALTER COLUMN sum SET NOT NULL;"
    )
}

/// The PostgreSQL engine. See the module docs.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    sql: Sql,
    health: Health,
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 22 (data exception) and 54 (program limit exceeded): the input, not the server.
        if code.starts_with("22") || code.starts_with("54") {
            return StoreError::Invalid(format!("postgres: {}", db.message()));
        }
        return StoreError::Unavailable(format!("postgres: {}: {}", code, db.message()));
    }
    StoreError::Unavailable(format!("postgres: {e}"))
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        e => StoreError::Unavailable(format!("postgres pool: {e}")),
    }
}

fn revision_from(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v)
        .map_err(|_| StoreError::corrupt("", format!("postgres: negative revision {v}")))
}

impl PostgresStore {
    /// Connects to `location` (see the module docs), creating or migrating the schema. Fails
    /// with [`StoreError::Unavailable`] if the server cannot be reached within 10 s.
    pub async fn open(location: &str) -> Result<PostgresStore, StoreError> {
        let (url, opts) = split_location(location)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Location(format!("{}: {e}", redact(location))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("portcullis");
        }
        PostgresStore::open_with(config, opts).await
    }

    /// Connects with an already parsed configuration.
    pub async fn open_with(
        config: tokio_postgres::Config,
        opts: PgOptions,
    ) -> Result<PostgresStore, StoreError> {
        check_schema_name(&opts.schema).map_err(StoreError::Location)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("postgres pool: {e}")))?;
        let schema = format!("\"{}\"", opts.schema);
        let store = PostgresStore {
            pool,
            sql: Sql::new(&schema),
            schema: opts.schema,
            health: Health::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The PostgreSQL schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let sync: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        if sync == "off" {
            tracing::warn!(
                synchronous_commit = %sync,
                "postgres synchronous_commit is off: acknowledged commits can be lost on a crash"
            );
        }
        let s = format!("\"{}\"", self.schema);
        let tx = client.transaction().await.map_err(pg_err)?;
        // Serialise concurrent opens of the same schema (CREATE … IF NOT EXISTS can still race).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('portcullis.migrate.' || $1))",
            &[&self.schema],
        )
        .await
        .map_err(pg_err)?;
        // DDL only when something is missing, so that a role without CREATE rights can open a
        // schema its DBA prepared.
        let exists: bool = tx
            .query_one(
                "SELECT to_regclass(quote_ident($1) || '.schema_version') IS NOT NULL",
                &[&self.schema],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        if !exists {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s}; \
                 CREATE TABLE IF NOT EXISTS {s}.schema_version (version int NOT NULL)"
            ))
            .await
            .map_err(pg_err)?;
        }
        let current: i32 = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {s}.schema_version"),
                &[],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        if current > SCHEMA_VERSION {
            return Err(StoreError::corrupt(
                "",
                format!(
                    "postgres schema '{}' has version {current}; this build knows {SCHEMA_VERSION}",
                    self.schema
                ),
            ));
        }
        for (i, step) in migrations(&s).iter().enumerate() {
            let version = i as i32 + 1;
            if version <= current {
                continue;
            }
            tx.batch_execute(step).await.map_err(pg_err)?;
            if version == 2 {
                let (rows, commits) = upgrade_v2(&tx, &s).await?;
                tx.batch_execute(&migration_v2_done(&s))
                    .await
                    .map_err(pg_err)?;
                if current > 0 {
                    tracing::warn!(
                        schema = %self.schema,
                        rows,
                        commits,
                        "postgres store upgraded to schema 2 (checksums; revisions beside the documents)"
                    );
                }
            }
            tx.execute(
                &format!("INSERT INTO {s}.schema_version (version) VALUES ($1)"),
                &[&version],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)
    }

    /// Drops the schema and everything in it. For tests and decommissioning.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .await
            .map_err(pg_err)
    }

    async fn commit_inner(&self, commit: &Commit) -> Result<(), StoreError> {
        commit.validate()?;
        // Validated: 1 <= revision <= i64::MAX.
        let revision = commit.revision as i64;
        let expected = commit.revision - 1;
        let (upserts, deletes) = collapse_ops(&commit.ops);
        // Checksums of the rows as this commit leaves them (revision = the commit's).
        let up_sums: Vec<Vec<u8>> = upserts
            .3
            .iter()
            .zip(&upserts.1)
            .zip(&upserts.2)
            .map(|((kind, id), doc)| {
                integrity::row_sum_canonical(&commit.tenant, *kind, id, commit.revision, doc)
                    .to_vec()
            })
            .collect();
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let lock = tx
            .prepare_cached(&self.sql.lock_tenant)
            .await
            .map_err(pg_err)?;
        let actual = match tx
            .query_opt(&lock, &[&commit.tenant])
            .await
            .map_err(pg_err)?
        {
            Some(row) => revision_from(row.get(0))?,
            None => 0,
        };
        if actual != expected {
            tx.rollback().await.map_err(pg_err)?;
            return Err(StoreError::Conflict {
                tenant: commit.tenant.clone(),
                expected,
                actual,
            });
        }
        if actual == 0 {
            let insert = tx
                .prepare_cached(&self.sql.insert_tenant)
                .await
                .map_err(pg_err)?;
            let inserted = tx
                .execute(&insert, &[&commit.tenant, &revision])
                .await
                .map_err(pg_err)?;
            if inserted == 0 {
                // A concurrent first commit won the insert.
                tx.rollback().await.map_err(pg_err)?;
                let actual = self.revision(&commit.tenant).await?;
                return Err(StoreError::Conflict {
                    tenant: commit.tenant.clone(),
                    expected,
                    actual,
                });
            }
        } else {
            let update = tx
                .prepare_cached(&self.sql.update_tenant)
                .await
                .map_err(pg_err)?;
            tx.execute(&update, &[&commit.tenant, &revision])
                .await
                .map_err(pg_err)?;
        }

        let (up_kinds, up_ids, up_docs, _) = upserts;
        let (del_kinds, del_ids) = deletes;
        // Rows come from the commit, the log from its log form (credentials redacted).
        let logged = commit.log_form();
        let commit_sum = integrity::commit_sum_canonical(&logged).to_vec();
        let upsert = async {
            if up_ids.is_empty() {
                return Ok(0);
            }
            let st = tx.prepare_cached(&self.sql.upsert_rows).await?;
            tx.execute(
                &st,
                &[
                    &commit.tenant,
                    &up_kinds,
                    &up_ids,
                    &up_docs,
                    &revision,
                    &up_sums,
                ],
            )
            .await
        };
        let delete = async {
            if del_ids.is_empty() {
                return Ok(0);
            }
            let st = tx.prepare_cached(&self.sql.delete_rows).await?;
            tx.execute(&st, &[&commit.tenant, &del_kinds, &del_ids])
                .await
        };
        let ops = Json(&logged.ops);
        let log = async {
            let st = tx.prepare_cached(&self.sql.insert_commit).await?;
            let params: [&(dyn ToSql + Sync); 8] = [
                &commit.tenant,
                &revision,
                &commit.actor,
                &commit.at_ms,
                &commit.action,
                &commit.target,
                &ops,
                &commit_sum,
            ];
            tx.execute(&st, &params).await
        };
        // Pipelined on the one connection.
        let (a, b, c) = tokio::join!(upsert, delete, log);
        a.map_err(pg_err)?;
        b.map_err(pg_err)?;
        c.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn revision(&self, tenant: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let st = client
            .prepare_cached(&self.sql.revision)
            .await
            .map_err(pg_err)?;
        match client.query_opt(&st, &[&tenant]).await.map_err(pg_err)? {
            Some(row) => revision_from(row.get(0)),
            None => Ok(0),
        }
    }

    async fn tenants_inner(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let st = client
            .prepare_cached(&self.sql.tenants)
            .await
            .map_err(pg_err)?;
        let rows = client.query(&st, &[]).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((r.get(0), revision_from(r.get(1))?)))
            .collect()
    }

    async fn load_inner(&self, tenant: &str) -> Result<Option<TenantRows>, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let st = tx
            .prepare_cached(&self.sql.revision)
            .await
            .map_err(pg_err)?;
        let Some(row) = tx.query_opt(&st, &[&tenant]).await.map_err(pg_err)? else {
            return Ok(None);
        };
        let revision = revision_from(row.get(0))?;
        let st = tx
            .prepare_cached(&self.sql.load_rows)
            .await
            .map_err(pg_err)?;
        let stream = tx.query_raw(&st, [tenant]).await.map_err(pg_err)?;
        let owner: std::sync::Arc<str> = tenant.into();
        pin_mut!(stream);
        // Rows are received here and decoded (JSON) in chunks on the blocking pool, a few chunks
        // at a time: decoding overlaps receiving, and a large tenant does not stall this
        // runtime thread for seconds.
        let mut parsed = Vec::new();
        let mut in_flight = std::collections::VecDeque::new();
        let mut chunk = Vec::with_capacity(LOAD_CHUNK);
        loop {
            let row = stream.try_next().await.map_err(pg_err)?;
            let done = row.is_none();
            chunk.extend(row);
            if chunk.len() == LOAD_CHUNK || (done && !chunk.is_empty()) {
                let rows = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
                let owner = std::sync::Arc::clone(&owner);
                in_flight.push_back(tokio::task::spawn_blocking(move || {
                    decode_rows(&owner, revision, rows)
                }));
            }
            while in_flight.len() > LOAD_PARALLEL || (done && !in_flight.is_empty()) {
                if let Some(task) = in_flight.pop_front() {
                    parsed.push(task.await.map_err(|e| {
                        StoreError::Unavailable(format!("postgres: decoding rows: {e}"))
                    })??);
                }
            }
            if done {
                break;
            }
        }
        tx.commit().await.map_err(pg_err)?;
        let rows = tokio::task::spawn_blocking(move || {
            let mut rows: Vec<_> = parsed.into_iter().flatten().collect();
            super::sort_rows(&mut rows);
            rows
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("postgres: sorting rows: {e}")))?;
        Ok(Some(TenantRows {
            tenant: tenant.to_string(),
            revision,
            rows,
        }))
    }

    async fn rewrite_log_inner(
        &self,
        tenant: &str,
        through: u64,
        edit: LogEditor,
    ) -> Result<u64, StoreError> {
        let s = &self.schema;
        let through = i64::try_from(through).unwrap_or(i64::MAX);
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The tenant's row lock keeps commits of this tenant out until this rewrite is done.
        let lock = tx
            .prepare_cached(&self.sql.lock_tenant)
            .await
            .map_err(pg_err)?;
        tx.query_opt(&lock, &[&tenant]).await.map_err(pg_err)?;
        let select = format!(
            "{} WHERE tenant = $1 AND revision > $2 AND revision <= $3 ORDER BY revision LIMIT 1000",
            self.sql.log_select
        );
        let delete = format!("DELETE FROM {s}.commits WHERE tenant = $1 AND revision = $2");
        let update = format!(
            "UPDATE {s}.commits SET actor = $3, at_ms = $4, action = $5, target = $6, ops = $7, \
             sum = $8 WHERE tenant = $1 AND revision = $2"
        );
        let mut after = 0i64;
        let mut changed = 0;
        loop {
            let rows = tx
                .query(&select, &[&tenant, &after, &through])
                .await
                .map_err(pg_err)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let commit = decode_commit(row)?;
                let revision = commit.revision as i64;
                after = revision;
                match edit(commit) {
                    LogEdit::Keep => continue,
                    LogEdit::Drop => {
                        tx.execute(&delete, &[&tenant, &revision])
                            .await
                            .map_err(pg_err)?;
                    }
                    LogEdit::Replace(c) => {
                        super::check_replacement(tenant, revision as u64, &c)?;
                        let sum = integrity::commit_sum_canonical(&c).to_vec();
                        let ops = Json(&c.ops);
                        let params: [&(dyn ToSql + Sync); 8] = [
                            &tenant, &revision, &c.actor, &c.at_ms, &c.action, &c.target, &ops,
                            &sum,
                        ];
                        tx.execute(&update, &params).await.map_err(pg_err)?;
                    }
                }
                changed += 1;
            }
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(changed)
    }

    async fn log_inner(&self, query: &LogQuery) -> Result<Vec<Commit>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut sql = self.sql.log_select.clone();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut clause = |sql: &mut String, cond: &str, param: Box<dyn ToSql + Sync + Send>| {
            params.push(param);
            sql.push_str(if params.len() == 1 {
                " WHERE "
            } else {
                " AND "
            });
            sql.push_str(&cond.replace('$', &format!("${}", params.len())));
        };
        if let Some(t) = &query.tenant {
            clause(&mut sql, "tenant = $", Box::new(t.clone()));
        }
        if let Some(after) = query.after_revision {
            // Revisions are at most i64::MAX; anything larger matches nothing.
            clause(
                &mut sql,
                "revision > $",
                Box::new(i64::try_from(after).unwrap_or(i64::MAX)),
            );
        }
        if let Some(a) = &query.actor {
            // `alice` also matches `alice#console` (the actor's channel, see `LogQuery::actor`).
            clause(
                &mut sql,
                "(actor = $ OR starts_with(actor, $ || '#'))",
                Box::new(a.clone()),
            );
        }
        if let Some(p) = &query.action_prefix {
            let pattern = format!("{}%", like_escape(p));
            clause(&mut sql, "action LIKE $ ESCAPE '\\'", Box::new(pattern));
        }
        if let Some(t) = &query.target {
            clause(&mut sql, "target = $", Box::new(t.clone()));
        }
        if let Some(since) = query.since_ms {
            clause(&mut sql, "at_ms >= $", Box::new(since));
        }
        if let Some(until) = query.until_ms {
            clause(&mut sql, "at_ms <= $", Box::new(until));
        }
        params.push(Box::new(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        sql.push_str(&format!(
            " ORDER BY tenant, revision LIMIT ${}",
            params.len()
        ));
        let client = self.pool.get().await.map_err(pool_err)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client.query(&sql, &refs).await.map_err(pg_err)?;
        rows.iter().map(decode_commit).collect()
    }
}

/// Rows per decoding task of a load, and decoding tasks in flight. Smaller chunks in debug
/// builds, so that the tests' 10k-row tenant exercises the pipeline's back-pressure too.
#[cfg(not(debug_assertions))]
const LOAD_CHUNK: usize = 8192;
#[cfg(debug_assertions)]
const LOAD_CHUNK: usize = 1000;
const LOAD_PARALLEL: usize = 4;

/// Decodes and checks `(kind, id, doc, rev, sum)` rows of a load of `tenant` at `revision`.
fn decode_rows(
    tenant: &str,
    revision: u64,
    rows: Vec<tokio_postgres::Row>,
) -> Result<Vec<Row>, StoreError> {
    let corrupt = |e: tokio_postgres::Error| StoreError::corrupt(tenant, format!("row: {e}"));
    rows.iter()
        .map(|row| {
            let kind: &str = row.try_get(0).map_err(corrupt)?;
            let kind = Kind::parse(kind).ok_or_else(|| {
                StoreError::corrupt(tenant, format!("row of unknown kind '{kind}'"))
            })?;
            let id: String = row.try_get(1).map_err(corrupt)?;
            let what = || format!("row {}/{id}", kind.as_str());
            let doc: serde_json::Value = row
                .try_get(2)
                .map_err(|e| StoreError::corrupt(tenant, format!("{}: {e}", what())))?;
            let rev: i64 = row.try_get(3).map_err(corrupt)?;
            let sum: &[u8] = row.try_get(4).map_err(corrupt)?;
            let rev = u64::try_from(rev)
                .ok()
                .filter(|r| *r <= revision)
                .ok_or_else(|| {
                    StoreError::corrupt(tenant, format!("{}: bad revision {rev}", what()))
                })?;
            if sum != integrity::row_sum_canonical(tenant, kind, &id, rev, &doc).as_slice() {
                return Err(StoreError::corrupt(
                    tenant,
                    format!("{}: checksum mismatch", what()),
                ));
            }
            Ok(Row {
                kind,
                id,
                rev,
                value: doc,
            })
        })
        .collect()
}

/// Decodes and checks one row of the log query.
fn decode_commit(r: &tokio_postgres::Row) -> Result<Commit, StoreError> {
    let tenant: String = r.get(0);
    let revision = revision_from(r.get(1))?;
    let what = format!("commit of revision {revision}");
    let ops: Json<Vec<RowOp>> = r
        .try_get(6)
        .map_err(|e| StoreError::corrupt(tenant.as_str(), format!("{what}: {e}")))?;
    let sum: Vec<u8> = r
        .try_get(7)
        .map_err(|e| StoreError::corrupt(tenant.as_str(), format!("{what}: {e}")))?;
    let commit = Commit {
        tenant,
        revision,
        actor: r.get(2),
        at_ms: r.get(3),
        action: r.get(4),
        target: r.get(5),
        ops: ops.0,
    };
    if sum != integrity::commit_sum_canonical(&commit).as_slice() {
        return Err(StoreError::corrupt(
            commit.tenant,
            format!("{what}: checksum mismatch"),
        ));
    }
    Ok(commit)
}

/// Fills `rev` and `sum` of every row and `sum` of every commit of a version-1 schema, moving
/// `_rev` members out of the documents. Returns the numbers of rows and commits.
async fn upgrade_v2(
    tx: &tokio_postgres::Transaction<'_>,
    s: &str,
) -> Result<(usize, usize), StoreError> {
    let mut counts = (0, 0);
    let mut after = (String::new(), String::new(), String::new());
    loop {
        let rows = tx
            .query(
                &format!(
                    "SELECT tenant, kind, id, doc FROM {s}.rows \
                     WHERE (tenant, kind, id) > ($1, $2, $3) ORDER BY tenant, kind, id LIMIT $4"
                ),
                &[&after.0, &after.1, &after.2, &UPGRADE_BATCH],
            )
            .await
            .map_err(pg_err)?;
        let Some(last) = rows.last() else { break };
        after = (last.get(0), last.get(1), last.get(2));
        let mut cols: (Vec<String>, Vec<String>, Vec<String>) = Default::default();
        let mut docs = Vec::with_capacity(rows.len());
        let mut revs = Vec::with_capacity(rows.len());
        let mut sums = Vec::with_capacity(rows.len());
        for row in &rows {
            let (tenant, kind, id): (String, String, String) = (row.get(0), row.get(1), row.get(2));
            let parsed = Kind::parse(&kind).ok_or_else(|| {
                StoreError::corrupt(tenant.as_str(), format!("row of unknown kind '{kind}'"))
            })?;
            let mut doc: serde_json::Value = row.try_get(3).map_err(|e| {
                StoreError::corrupt(tenant.as_str(), format!("row {kind}/{id}: {e}"))
            })?;
            let rev = integrity::take_legacy_rev(&mut doc).unwrap_or(0);
            sums.push(integrity::row_sum_canonical(&tenant, parsed, &id, rev, &doc).to_vec());
            revs.push(i64::try_from(rev).unwrap_or(i64::MAX));
            docs.push(doc);
            cols.0.push(tenant);
            cols.1.push(kind);
            cols.2.push(id);
        }
        tx.execute(
            &format!(
                "UPDATE {s}.rows r SET doc = t.d, rev = t.v, sum = t.c \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::int8[], $6::bytea[]) \
                   AS t(tn, k, i, d, v, c) \
                 WHERE r.tenant = t.tn AND r.kind = t.k AND r.id = t.i"
            ),
            &[&cols.0, &cols.1, &cols.2, &docs, &revs, &sums],
        )
        .await
        .map_err(pg_err)?;
        counts.0 += rows.len();
    }
    let mut after = (String::new(), 0i64);
    loop {
        let rows = tx
            .query(
                &format!(
                    "SELECT tenant, revision, actor, at_ms, action, target, ops FROM {s}.commits \
                     WHERE (tenant, revision) > ($1, $2) ORDER BY tenant, revision LIMIT $3"
                ),
                &[&after.0, &after.1, &UPGRADE_BATCH],
            )
            .await
            .map_err(pg_err)?;
        let Some(last) = rows.last() else { break };
        after = (last.get(0), last.get(1));
        let mut tenants = Vec::with_capacity(rows.len());
        let mut revisions: Vec<i64> = Vec::with_capacity(rows.len());
        let mut ops = Vec::with_capacity(rows.len());
        let mut sums = Vec::with_capacity(rows.len());
        for r in &rows {
            let tenant: String = r.get(0);
            let revision: i64 = r.get(1);
            let what = format!("commit of revision {revision}");
            let logged: Json<Vec<RowOp>> = r
                .try_get(6)
                .map_err(|e| StoreError::corrupt(tenant.as_str(), format!("{what}: {e}")))?;
            let mut commit = Commit {
                tenant,
                revision: revision_from(revision)?,
                actor: r.get(2),
                at_ms: r.get(3),
                action: r.get(4),
                target: r.get(5),
                ops: logged.0,
            };
            integrity::strip_legacy_revs(&mut commit);
            sums.push(integrity::commit_sum_canonical(&commit).to_vec());
            ops.push(serde_json::to_value(&commit.ops).map_err(|e| {
                StoreError::corrupt(commit.tenant.as_str(), format!("{what}: {e}"))
            })?);
            revisions.push(revision);
            tenants.push(commit.tenant);
        }
        tx.execute(
            &format!(
                "UPDATE {s}.commits c SET ops = t.o, sum = t.c \
                 FROM unnest($1::text[], $2::int8[], $3::jsonb[], $4::bytea[]) AS t(tn, v, o, c) \
                 WHERE c.tenant = t.tn AND c.revision = t.v"
            ),
            &[&tenants, &revisions, &ops, &sums],
        )
        .await
        .map_err(pg_err)?;
        counts.1 += rows.len();
    }
    Ok(counts)
}
/// Kind names, ids, documents and kinds of the rows to insert or update.
type Upserts<'a> = (
    Vec<&'static str>,
    Vec<&'a str>,
    Vec<&'a serde_json::Value>,
    Vec<Kind>,
);
type Deletes<'a> = (Vec<&'static str>, Vec<&'a str>);

/// The final state of every row the ops touch (the last op on a row wins), as column arrays.
fn collapse_ops(ops: &[RowOp]) -> (Upserts<'_>, Deletes<'_>) {
    let mut last: HashMap<(Kind, &str), usize> = HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        last.insert((op.kind, op.id.as_str()), i);
    }
    let mut up: Upserts<'_> = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut del: Deletes<'_> = (Vec::new(), Vec::new());
    for (i, op) in ops.iter().enumerate() {
        if last.get(&(op.kind, op.id.as_str())) != Some(&i) {
            continue;
        }
        match &op.value {
            Some(doc) => {
                up.0.push(op.kind.as_str());
                up.1.push(&op.id);
                up.2.push(doc);
                up.3.push(op.kind);
            }
            None => {
                del.0.push(op.kind.as_str());
                del.1.push(&op.id);
            }
        }
    }
    (up, del)
}

/// `s` with the `LIKE` wildcards and the escape character escaped.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn commit<'a>(&'a self, commit: &'a Commit) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.tracked(Op::Write, "postgres write", self.commit_inner(commit)))
    }

    fn tenants(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(self.tracked(Op::Read, "postgres read", self.tenants_inner()))
    }

    fn load<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Option<TenantRows>, StoreError>> {
        Box::pin(self.tracked(Op::Read, "postgres read", self.load_inner(tenant)))
    }

    fn log<'a>(&'a self, query: &'a LogQuery) -> BoxFuture<'a, Result<Vec<Commit>, StoreError>> {
        Box::pin(self.tracked(Op::Read, "postgres read", self.log_inner(query)))
    }

    fn rewrite_log<'a>(
        &'a self,
        tenant: &'a str,
        through_revision: u64,
        edit: LogEditor,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.tracked(
            Op::Write,
            "postgres write",
            self.rewrite_log_inner(tenant, through_revision, edit),
        ))
    }

    fn health(&self) -> StoreHealth {
        self.health.get()
    }
}

impl PostgresStore {
    /// Runs `f`, recording its outcome in the store's health.
    async fn tracked<T>(
        &self,
        op: Op,
        cause: &'static str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = f.await;
        match &result {
            Ok(_) => self.health.ok(op),
            // A conflict or invalid input says nothing about the store's health.
            Err(StoreError::Conflict { .. } | StoreError::Invalid(_)) => self.health.ok(op),
            Err(e) => self.health.fail(op, cause, e),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_parameters_are_split_off() {
        let (url, opts) =
            split_location("postgres://u@h:5/db?schema=t_1&connect_timeout=3&pool_size=2").unwrap();
        assert_eq!(url, "postgres://u@h:5/db?connect_timeout=3");
        assert_eq!(
            opts,
            PgOptions {
                schema: "t_1".into(),
                pool_size: 2
            }
        );
        let (url, opts) = split_location("postgresql://u@h/db").unwrap();
        assert_eq!(url, "postgresql://u@h/db");
        assert_eq!(opts, PgOptions::default());
        assert!(split_location("postgres://h/db?schema=Bad-Name").is_err());
        assert!(split_location("postgres://h/db?pool_size=0").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape(r"a_b%c\d"), r"a\_b\%c\\d");
    }

    #[test]
    fn last_op_on_a_row_wins() {
        use serde_json::json;
        let ops = vec![
            RowOp::put(Kind::User, "a", json!(1), None),
            RowOp::delete(Kind::User, "a", None),
            RowOp::put(Kind::User, "b", json!(2), None),
            RowOp::put(Kind::Node, "a", json!(3), None),
            RowOp::put(Kind::User, "b", json!(4), None),
        ];
        let ((uk, ui, ud, kinds), (dk, di)) = collapse_ops(&ops);
        assert_eq!(kinds, vec![Kind::Node, Kind::User]);
        assert_eq!(uk, vec!["node", "user"]);
        assert_eq!(ui, vec!["a", "b"]);
        assert_eq!(ud, vec![&json!(3), &json!(4)]);
        assert_eq!((dk, di), (vec!["user"], vec!["a"]));
    }
}
