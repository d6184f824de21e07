//! A fleet of sidecars fed by NATS JetStream.
//!
//! The control plane (`portcullis serve --nats URL`) publishes ([`publish`]):
//! - every committed change of a tenant, in revision order, on the subject
//!   `portcullis.events.<tenant>` of the stream [`STREAM`] — one message per commit, its
//!   `Nats-Msg-Id` `tenant:revision` (JetStream drops a re-sent one), its SHA-256 in a header;
//! - now and then (every `nats.snapshot_every_revisions` commits or `nats.snapshot_every_seconds`
//!   seconds, whichever comes first) a snapshot of each changed tenant in the object store
//!   [`OBJECT_BUCKET`] — the tenant's rows at a revision (what later commits apply to) and its
//!   rkyv archive (served as it is, after validation) — described by a [`Record`] in the KV bucket
//!   [`KV_BUCKET`]: revision, object digest, formats, and the stream sequence the tail starts after.
//!
//! A sidecar (`portcullis sidecar --nats URL`) follows ([`follow`]): boots from the records and
//! objects, replays the tail, then follows the stream; see there for gaps, duplicates and
//! corrupt messages.
//!
//! Before a tenant's first event, the publisher announces the tenant on
//! `portcullis.events.<tenant>.new` ([`announcement`], in the same stream, empty body): sidecars
//! that follow a shard read only their own tenants' subjects (JetStream filters them on the
//! server) plus the announcements, so a tenant created later that falls in their shard is added
//! to what they read.
//!
//! The outbox is the store's log: the publisher asks NATS which revision of each tenant it holds
//! last, and sends what the log has after it — after a crash, an outage, or a slow start.

pub mod follow;
pub mod publish;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::snapshot::Snapshot;
use crate::store::{Commit, Kind, Row, TenantRows};

/// The JetStream stream of change events.
pub const STREAM: &str = "portcullis-events";
/// Events of tenant `t` go to `portcullis.events.<token(t)>`.
pub const SUBJECT_PREFIX: &str = "portcullis.events";
/// One [`Record`] per tenant, keyed by [`token`].
pub const KV_BUCKET: &str = "portcullis-tenants";
/// Snapshot objects, one per tenant, named by [`token`].
pub const OBJECT_BUCKET: &str = "portcullis-snapshots";
/// Data-plane requests over NATS request-reply go to `portcullis.api.<tenant>.<endpoint>`
/// (`check`, `batch`, `filter`, `scopes`, `explain`), with the same JSON body as over HTTP.
pub const API_PREFIX: &str = "portcullis.api";
/// Each sidecar's status, keyed by its id; entries expire ([`SIDECAR_TTL`]) when it stops.
pub const SIDECARS_BUCKET: &str = "portcullis-sidecars";
/// How long a sidecar's status stays without being refreshed (it refreshes every 5 s).
pub const SIDECAR_TTL: Duration = Duration::from_secs(30);
/// Layout version of a snapshot object ([`encode_object`]).
pub const OBJECT_FORMAT: u32 = 1;
/// The action of an event that carries no changes: "reload this tenant from its snapshot"
/// (sent when a commit cannot travel as an event: too large, or gone from the log).
pub const RESET_ACTION: &str = "fleet.reset";
/// How long events stay in the stream. Snapshots are published far more often, so a sidecar
/// never needs older events.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// JetStream's de-duplication window for `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

const H_TENANT: &str = "Portcullis-Tenant";
const H_REVISION: &str = "Portcullis-Revision";
const H_SHA256: &str = "Portcullis-Sha256";
const MAGIC: &[u8; 8] = b"PCSNAP\0\x01";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Corrupt(String),
}

impl FleetError {
    pub fn nats(e: impl std::fmt::Display) -> FleetError {
        FleetError::Nats(e.to_string())
    }
}

/// A tenant id as one subject token, KV key and object name: itself when it is made of ASCII
/// letters, digits, `_` and `-`; otherwise `=` and its bytes in hex (`=` starts no tenant id).
pub fn token(tenant: &str) -> String {
    let plain = !tenant.is_empty()
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        tenant.to_string()
    } else {
        format!("={}", crate::model::hex(tenant.as_bytes()))
    }
}

/// The tenant id a [`token`] stands for.
pub fn tenant_of(token: &str) -> Option<String> {
    match token.strip_prefix('=') {
        None if !token.is_empty() => Some(token.to_string()),
        None => None,
        Some(hex) => {
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            String::from_utf8(bytes?).ok()
        }
    }
}

/// The subject of `tenant`'s events.
pub fn subject(tenant: &str) -> String {
    format!("{SUBJECT_PREFIX}.{}", token(tenant))
}

/// The last token of an [`announcement`] subject.
pub const ANNOUNCE_TOKEN: &str = "new";

/// The subject announcing `tenant` before its first event.
pub fn announcement(tenant: &str) -> String {
    format!("{SUBJECT_PREFIX}.{}.{ANNOUNCE_TOKEN}", token(tenant))
}

/// Every announcement subject (a consumer filter).
pub fn announcements() -> String {
    format!("{SUBJECT_PREFIX}.*.{ANNOUNCE_TOKEN}")
}

/// The tenant an [`announcement`] subject announces.
pub fn tenant_of_announcement(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
    let t = rest.strip_suffix(ANNOUNCE_TOKEN)?.strip_suffix('.')?;
    if t.contains('.') {
        return None;
    }
    tenant_of(t)
}

/// The tenant of an event subject.
pub fn tenant_of_subject(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
    if rest.contains('.') {
        return None;
    }
    tenant_of(rest)
}

/// The subject of a data-plane request about `tenant` to `endpoint`.
pub fn api_subject(tenant: &str, endpoint: &str) -> String {
    format!("{API_PREFIX}.{}.{endpoint}", token(tenant))
}

/// The tenant and endpoint of a data-plane request subject.
pub fn parse_api_subject(subject: &str) -> Option<(String, &str)> {
    let rest = subject.strip_prefix(API_PREFIX)?.strip_prefix('.')?;
    let (t, endpoint) = rest.split_once('.')?;
    if endpoint.contains('.') {
        return None;
    }
    Some((tenant_of(t)?, endpoint))
}

/// What a sidecar subscribes to for data-plane requests, and its queue group: sidecars that
/// follow the same tenants share the work; those following other tenants (another shard, another
/// list) form other groups, and stay silent about tenants they do not hold.
pub fn api_subscription(set: &crate::control::TenantSet) -> (String, String) {
    use crate::control::TenantSet;
    let group = match set {
        TenantSet::All => "portcullis-all".to_string(),
        TenantSet::Shard { index, count } => format!("portcullis-shard-{index}-of-{count}"),
        TenantSet::Only(names) => {
            let list: Vec<&str> = names.iter().map(String::as_str).collect();
            format!(
                "portcullis-list-{}",
                &sha256_hex(list.join(",").as_bytes())[..16]
            )
        }
    };
    (format!("{API_PREFIX}.*.*"), group)
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::model::hex(&Sha256::digest(bytes))
}

/// An event: headers (message id, tenant, revision, digest) and the commit as JSON.
pub fn encode_event(c: &Commit) -> Result<(HeaderMap, bytes::Bytes), FleetError> {
    let payload = serde_json::to_vec(c).map_err(|e| FleetError::Corrupt(e.to_string()))?;
    let mut h = HeaderMap::new();
    // A reset shares no id with the commit of its revision (which may be in the stream).
    let reset = if c.action == RESET_ACTION {
        ":reset"
    } else {
        ""
    };
    h.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{}:{}{reset}", c.tenant, c.revision).as_str(),
    );
    h.insert(H_TENANT, c.tenant.as_str());
    h.insert(H_REVISION, c.revision.to_string().as_str());
    h.insert(H_SHA256, sha256_hex(&payload).as_str());
    Ok((h, payload.into()))
}

/// The revision an event's headers claim (for the publisher's "last published" lookup).
pub fn event_revision(headers: &HeaderMap) -> Option<u64> {
    headers.get(H_REVISION)?.as_str().parse().ok()
}

/// Reads an event received on `subject`: the digest must match, the commit must name the
/// subject's tenant and the revision of its header. Anything else is corrupt.
pub fn decode_event(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Commit, String> {
    let tenant = tenant_of_subject(subject).ok_or("not an event subject")?;
    let headers = headers.ok_or("no headers")?;
    let digest = headers.get(H_SHA256).ok_or("no digest header")?;
    if digest.as_str() != sha256_hex(payload) {
        return Err("digest mismatch".into());
    }
    let c: Commit = serde_json::from_slice(payload).map_err(|e| format!("not a commit: {e}"))?;
    if c.tenant != tenant {
        return Err(format!(
            "commit of tenant '{}' on the subject of '{tenant}'",
            c.tenant
        ));
    }
    if event_revision(headers) != Some(c.revision) {
        return Err("revision header disagrees with the commit".into());
    }
    Ok(c)
}

/// A "reload from the snapshot" event of `tenant` at `revision` (see [`RESET_ACTION`]).
pub fn reset_event(tenant: &str, revision: u64) -> Commit {
    Commit {
        tenant: tenant.to_string(),
        revision,
        actor: "system".into(),
        at_ms: now_ms(),
        action: RESET_ACTION.into(),
        target: format!("tenant:{tenant}"),
        ops: Vec::new(),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The KV record of a tenant: where its latest snapshot is, and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub tenant: String,
    /// The tenant's revision in the snapshot (or of its deletion).
    pub revision: u64,
    /// The tenant is deleted (no object).
    #[serde(default)]
    pub deleted: bool,
    /// Object name in [`OBJECT_BUCKET`].
    #[serde(default)]
    pub object: String,
    /// SHA-256 of the object's bytes, hex.
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub size: u64,
    /// [`OBJECT_FORMAT`] of the object.
    pub format: u32,
    /// `snapshot::FORMAT_VERSION` of the archive inside, if there is one.
    #[serde(default)]
    pub archive_format: Option<u32>,
    /// Stream sequence of the tenant's last event at or before `revision` (0: unknown — the
    /// tail is searched from the start of the stream).
    #[serde(default)]
    pub stream_seq: u64,
    pub at_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct WireRow {
    kind: Kind,
    id: String,
    rev: u64,
    value: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct ObjectHeader {
    tenant: String,
    revision: u64,
    rows_len: u64,
    archive_len: u64,
    archive_format: Option<u32>,
}

/// A snapshot object: magic, header length, header (JSON), rows (JSON), archive (rkyv).
pub fn encode_object(rows: &TenantRows, archive: Option<&Snapshot>) -> Result<Vec<u8>, FleetError> {
    let wire: Vec<WireRow> = rows
        .rows
        .iter()
        .map(|r| WireRow {
            kind: r.kind,
            id: r.id.clone(),
            rev: r.rev,
            value: r.value.clone(),
        })
        .collect();
    let rows_json = serde_json::to_vec(&wire).map_err(|e| FleetError::Corrupt(e.to_string()))?;
    let archive_bytes = archive.map_or(&[][..], |a| a.as_bytes());
    let header = ObjectHeader {
        tenant: rows.tenant.clone(),
        revision: rows.revision,
        rows_len: rows_json.len() as u64,
        archive_len: archive_bytes.len() as u64,
        archive_format: archive.map(|_| crate::snapshot::FORMAT_VERSION),
    };
    let header = serde_json::to_vec(&header).map_err(|e| FleetError::Corrupt(e.to_string()))?;
    let mut out =
        Vec::with_capacity(MAGIC.len() + 4 + header.len() + rows_json.len() + archive_bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&rows_json);
    out.extend_from_slice(archive_bytes);
    Ok(out)
}

/// A decoded snapshot object: the rows, and the archive when it was there, of this build's
/// format, and valid ([`Snapshot::from_bytes`]: the bytes are untrusted) for the same tenant
/// and revision.
pub struct Decoded {
    pub rows: TenantRows,
    pub archive: Option<Snapshot>,
}

/// Reads a snapshot object that must hold `tenant` at `revision`.
pub fn decode_object(bytes: &[u8], tenant: &str, revision: u64) -> Result<Decoded, String> {
    let rest = bytes
        .strip_prefix(&MAGIC[..])
        .ok_or("not a snapshot object")?;
    let (len, rest) = rest.split_at_checked(4).ok_or("truncated")?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (header, rest) = rest.split_at_checked(len).ok_or("truncated header")?;
    let header: ObjectHeader =
        serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
    if header.tenant != tenant || header.revision != revision {
        return Err(format!(
            "object holds tenant '{}' at revision {}, not '{tenant}' at {revision}",
            header.tenant, header.revision
        ));
    }
    let rows_len = usize::try_from(header.rows_len).map_err(|_| "rows too long")?;
    let (rows_json, archive) = rest.split_at_checked(rows_len).ok_or("truncated rows")?;
    if archive.len() as u64 != header.archive_len {
        return Err("archive length disagrees with the header".into());
    }
    let wire: Vec<WireRow> = serde_json::from_slice(rows_json).map_err(|e| format!("rows: {e}"))?;
    let mut rows: Vec<Row> = wire
        .into_iter()
        .map(|w| Row {
            kind: w.kind,
            id: w.id,
            rev: w.rev,
            value: w.value,
        })
        .collect();
    crate::store::sort_rows(&mut rows);
    let rows = TenantRows {
        tenant: tenant.to_string(),
        revision,
        rows,
    };
    let archive = match header.archive_format {
        Some(f) if f == crate::snapshot::FORMAT_VERSION && !archive.is_empty() => {
            match Snapshot::from_bytes(archive) {
                Ok(s) if s.tenant_id() == tenant && s.revision() == revision => Some(s),
                Ok(s) => {
                    tracing::warn!(tenant, revision, archive_tenant = s.tenant_id(), archive_revision = s.revision(), "snapshot archive is of another tenant or revision; compiling from the rows");
                    None
                }
                Err(e) => {
                    tracing::warn!(tenant, revision, error = %e, "snapshot archive fails validation; compiling from the rows");
                    None
                }
            }
        }
        // Another build's archive layout: compile from the rows.
        _ => None,
    };
    Ok(Decoded { rows, archive })
}

/// The NATS side of a process: JetStream, the event stream, the KV bucket and the object store
/// (each created when missing, with the settings above; existing ones are used as they are).
#[derive(Clone)]
pub struct Fleet {
    /// Bumped each time the connection is (re-)established: a server that restarted has lost
    /// its ephemeral consumers.
    pub reconnected: tokio::sync::watch::Sender<u64>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub stream: jetstream::stream::Stream,
    pub kv: jetstream::kv::Store,
    pub objects: jetstream::object_store::ObjectStore,
    pub sidecars: jetstream::kv::Store,
}

/// Where and how to reach NATS.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    /// Connection name shown by the server (`portcullis-serve`, `portcullis-sidecar`).
    pub name: String,
    /// Replicas of the stream and buckets when this process creates them.
    pub replicas: usize,
}

impl Options {
    /// The server addresses of a comma-separated URL list.
    fn addrs(&self) -> Result<Vec<async_nats::ServerAddr>, FleetError> {
        self.url
            .split(',')
            .map(|u| {
                u.trim()
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|e| FleetError::Nats(format!("bad NATS URL '{}': {e}", shown_url(u))))
            })
            .collect()
    }

    /// The URL(s) for logs: any `user:password@` replaced by `***@`.
    pub fn shown(&self) -> String {
        self.url
            .split(',')
            .map(shown_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn shown_url(u: &str) -> String {
    match (u.find("://"), u.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}***{}", &u[..s + 3], &u[a..]),
        (None, Some(a)) => format!("***{}", &u[a..]),
        _ => u.to_string(),
    }
}

impl Fleet {
    /// Connects once (no retry: callers retry with backoff) and opens or creates the stream and
    /// buckets. After this, the client reconnects by itself.
    pub async fn connect(o: &Options) -> Result<Fleet, FleetError> {
        let (reconnected, _) = tokio::sync::watch::channel(0u64);
        let bump = reconnected.clone();
        // Only a connection that comes back counts (the first one is announced too).
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .name(&o.name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(2_000))
            })
            .event_callback(move |event| {
                let (bump, lost) = (bump.clone(), lost.clone());
                async move {
                    use std::sync::atomic::Ordering::AcqRel;
                    match event {
                        async_nats::Event::Connected if lost.swap(false, AcqRel) => {
                            tracing::info!("NATS connection re-established");
                            bump.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Connected => {}
                        async_nats::Event::Disconnected => {
                            lost.store(true, std::sync::atomic::Ordering::Release);
                            tracing::warn!("NATS connection lost; reconnecting")
                        }
                        other => tracing::info!(event = %other, "NATS"),
                    }
                }
            })
            .connect(o.addrs()?)
            .await
            .map_err(FleetError::nats)?;
        let js = jetstream::new(client.clone());
        let replicas = o.replicas.max(1);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                storage: jetstream::stream::StorageType::File,
                max_age: STREAM_MAX_AGE,
                duplicate_window: DUPLICATE_WINDOW,
                allow_direct: true,
                num_replicas: replicas,
                description: Some("Portcullis change events, one subject per tenant".into()),
                ..Default::default()
            })
            .await
            .map_err(FleetError::nats)?;
        let kv = match js.get_key_value(KV_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(jetstream::kv::Config {
                    bucket: KV_BUCKET.into(),
                    description: "Portcullis: the latest snapshot of each tenant".into(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(FleetError::nats)?,
        };
        let objects = match js.get_object_store(OBJECT_BUCKET).await {
            Ok(o) => o,
            Err(_) => js
                .create_object_store(jetstream::object_store::Config {
                    bucket: OBJECT_BUCKET.into(),
                    description: Some("Portcullis tenant snapshots (rows and archive)".into()),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(FleetError::nats)?,
        };
        let sidecars = match js.get_key_value(SIDECARS_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(jetstream::kv::Config {
                    bucket: SIDECARS_BUCKET.into(),
                    description: "Portcullis: each sidecar's status (expires when not refreshed)"
                        .into(),
                    history: 1,
                    max_age: SIDECAR_TTL,
                    storage: jetstream::stream::StorageType::Memory,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(FleetError::nats)?,
        };
        Ok(Fleet {
            sidecars,
            reconnected,
            client,
            js,
            stream,
            kv,
            objects,
        })
    }

    /// The record of `tenant`, if any. A record that does not parse is an error.
    pub async fn record(&self, tenant: &str) -> Result<Option<Record>, FleetError> {
        let Some(v) = self.kv.get(token(tenant)).await.map_err(FleetError::nats)? else {
            return Ok(None);
        };
        let r: Record = serde_json::from_slice(&v)
            .map_err(|e| FleetError::Corrupt(format!("record of tenant '{tenant}': {e}")))?;
        if r.tenant != tenant {
            return Err(FleetError::Corrupt(format!(
                "record under the key of tenant '{tenant}' names '{}'",
                r.tenant
            )));
        }
        Ok(Some(r))
    }

    /// Every tenant with a record.
    pub async fn recorded_tenants(&self) -> Result<Vec<String>, FleetError> {
        use futures_util::StreamExt;
        let mut keys = self.kv.keys().await.map_err(FleetError::nats)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(FleetError::nats)?;
            if let Some(t) = tenant_of(&k) {
                out.push(t);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every tenant with events (or an announcement) in the stream.
    pub async fn tenants_in_stream(&self) -> Result<Vec<String>, FleetError> {
        use futures_util::StreamExt;
        let mut subjects = self
            .stream
            .info_with_subjects(format!("{SUBJECT_PREFIX}.>"))
            .await
            .map_err(FleetError::nats)?;
        let mut out = Vec::new();
        while let Some(s) = subjects.next().await {
            let (subject, _) = s.map_err(FleetError::nats)?;
            out.extend(tenant_of_subject(&subject).or_else(|| tenant_of_announcement(&subject)));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The stream sequence of `tenant`'s first event still in the stream.
    pub async fn first_seq(&self, tenant: &str) -> Result<Option<u64>, FleetError> {
        match self
            .stream
            .direct_get_first_for_subject(subject(tenant))
            .await
        {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(FleetError::nats(e)),
        }
    }

    /// The bytes of the object a record names, checked against the record's digest and size.
    pub async fn object(&self, r: &Record) -> Result<Vec<u8>, FleetError> {
        use tokio::io::AsyncReadExt;
        let mut obj = self
            .objects
            .get(&r.object)
            .await
            .map_err(FleetError::nats)?;
        let mut bytes = Vec::with_capacity(usize::try_from(r.size).unwrap_or(0).min(1 << 30));
        obj.read_to_end(&mut bytes)
            .await
            .map_err(FleetError::nats)?;
        if bytes.len() as u64 != r.size || sha256_hex(&bytes) != r.sha256 {
            return Err(FleetError::Corrupt(format!(
                "snapshot object '{}' of tenant '{}' does not match its record (size or SHA-256)",
                r.object, r.tenant
            )));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        let o = |url: &str| Options {
            url: url.into(),
            name: "t".into(),
            replicas: 1,
        };
        assert_eq!(o("nats://u:secret@h:4222").shown(), "nats://***@h:4222");
        assert_eq!(
            o("nats://h:1,nats://tok@h:2").shown(),
            "nats://h:1,nats://***@h:2"
        );
        assert_eq!(o("u:p@h").shown(), "***@h");
        assert_eq!(o("nats://h:4222").shown(), "nats://h:4222");
    }

    #[test]
    fn api_subjects_round_trip() {
        assert_eq!(api_subject("femo", "check"), "portcullis.api.femo.check");
        assert_eq!(
            parse_api_subject(&api_subject("a.b", "batch")),
            Some(("a.b".to_string(), "batch"))
        );
        assert_eq!(parse_api_subject("portcullis.api.femo"), None);
        assert_eq!(parse_api_subject("portcullis.api.femo.check.x"), None);
        assert_eq!(parse_api_subject("other.api.femo.check"), None);
        let all = api_subscription(&crate::control::TenantSet::All);
        let shard = api_subscription(&crate::control::TenantSet::shard("1/3").unwrap());
        assert_ne!(all.1, shard.1);
    }

    #[test]
    fn tokens_round_trip_and_stay_one_subject_token() {
        for t in ["femo", "a-b_c", "x.y", "user@corp", "a:b", "..x", "Z9"] {
            let k = token(t);
            assert!(
                !k.contains('.') && !k.contains('*') && !k.contains('>'),
                "{k}"
            );
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)),
                "{k} is not a KV key"
            );
            assert_eq!(tenant_of(&k).as_deref(), Some(t));
            assert_eq!(tenant_of_subject(&subject(t)).as_deref(), Some(t));
        }
        for t in ["femo", "x.y", "a:b"] {
            assert_eq!(tenant_of_announcement(&announcement(t)).as_deref(), Some(t));
            assert_eq!(tenant_of_subject(&announcement(t)), None);
            assert_eq!(tenant_of_announcement(&subject(t)), None);
        }
        assert_eq!(tenant_of_announcement("portcullis.events.a.b.new"), None);
        assert_eq!(token("femo"), "femo");
        assert_eq!(tenant_of("=zz"), None);
        assert_eq!(tenant_of_subject("portcullis.events.a.b"), None);
    }

    fn commit() -> Commit {
        Commit {
            tenant: "femo".into(),
            revision: 7,
            actor: "a".into(),
            at_ms: 1,
            action: "user.update".into(),
            target: "user:x".into(),
            ops: vec![],
        }
    }

    #[test]
    fn events_are_checked_against_digest_subject_and_revision() {
        let c = commit();
        let (h, p) = encode_event(&c).unwrap();
        assert_eq!(decode_event(&subject("femo"), Some(&h), &p).unwrap(), c);
        assert!(decode_event(&subject("towerco"), Some(&h), &p)
            .unwrap_err()
            .contains("subject"));
        let mut bad = p.to_vec();
        bad[5] ^= 1;
        assert_eq!(
            decode_event(&subject("femo"), Some(&h), &bad).unwrap_err(),
            "digest mismatch"
        );
        assert!(decode_event(&subject("femo"), None, &p).is_err());
        let mut h2 = h.clone();
        h2.insert(H_REVISION, "8");
        assert!(decode_event(&subject("femo"), Some(&h2), &p).is_err());
    }

    #[test]
    fn objects_round_trip_and_refuse_the_wrong_tenant_or_revision() {
        let rows = TenantRows {
            tenant: "femo".into(),
            revision: 3,
            rows: vec![Row {
                kind: Kind::Node,
                id: "n".into(),
                rev: 2,
                value: serde_json::json!({"id": "n", "kind": "site"}),
            }],
        };
        let bytes = encode_object(&rows, None).unwrap();
        let d = decode_object(&bytes, "femo", 3).unwrap();
        assert_eq!(d.rows, rows);
        assert!(d.archive.is_none());
        assert!(decode_object(&bytes, "femo", 4).is_err());
        assert!(decode_object(&bytes, "other", 3).is_err());
        assert!(decode_object(&bytes[..bytes.len() - 3], "femo", 3).is_err());
        assert!(decode_object(b"garbage", "femo", 3).is_err());
    }
}
