//! The publisher (`portcullis serve --nats URL`): the control plane's commits to the event
//! stream, in revision order per tenant, through a durable outbox; snapshots to the object store.
//!
//! The outbox is the store's log. Each session (one per NATS connection) starts by asking the
//! stream which revision of each tenant it holds last (the `Portcullis-Revision` header of the
//! last message on the tenant's subject), then sends what the log has after it, then follows the
//! change bus. A commit the bus hands over that is not the next one (the bus lagged, a session
//! ended mid-way) sends the log from where the stream stands. So an event acknowledged by the
//! store is never dropped and never reordered; one whose fate is unknown (no ack before an
//! outage) is found in the stream or sent again — with the same `Nats-Msg-Id`, so JetStream
//! drops it if it did arrive.
//!
//! A commit that cannot travel as an event (larger than the server's max payload, or gone from
//! the log: a deleted tenant's log keeps only its tombstone) is replaced by a snapshot of the
//! tenant and a [`RESET_ACTION`] event at its revision: sidecars reload that tenant.
//!
//! Events are published one at a time, each waiting for its JetStream ack: a failed publish can
//! never be followed by a later revision of the same tenant in the stream.
//!
//! A tenant new to the fleet (no event in the stream, no snapshot record) is announced
//! ([`super::announcement`]) right before its first event, so that shard sidecars, which read
//! only their tenants' subjects, learn of it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;

use super::{decode_event, encode_event, encode_object, event_revision, subject, token};
use super::{now_ms, Options, Record, OBJECT_FORMAT, RESET_ACTION};
use super::{Fleet, FleetError};
use crate::control::{ControlError, ControlPlane};
use crate::snapshot::Registry;
use crate::store::Commit;

/// Whether a commit forgets personal data that older events still hold: a user's erasure (the
/// log was scrubbed) or the tenant's deletion (its log dropped).
fn forgets(c: &Commit) -> bool {
    c.action == "user.erase"
        || c.ops
            .iter()
            .any(|op| op.kind == crate::store::Kind::Tenant && op.value.is_none())
}

/// When a changed tenant gets a new snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// After this many revisions since its last snapshot.
    pub every_revisions: u64,
    /// Or once its oldest change without a snapshot is this old.
    pub every: Duration,
}

/// What the publisher has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct Status {
    pub connected: AtomicBool,
    pub events: AtomicU64,
    pub snapshots: AtomicU64,
    pub resets: AtomicU64,
    pub failures: AtomicU64,
    /// Unix ms of the last answer from NATS.
    pub last_contact_ms: AtomicU64,
}

/// Starts publishing `cp`'s commits and snapshots to NATS, forever, reconnecting with backoff.
/// Subscribes to the change bus before returning: nothing committed from now on is missed (and
/// what was committed before is in the log).
pub fn spawn(
    cp: Arc<ControlPlane>,
    registry: Arc<Registry>,
    options: Options,
    policy: Policy,
    status: Arc<Status>,
) -> tokio::task::JoinHandle<()> {
    let rx = cp.subscribe();
    let mut p = Publisher {
        cp,
        registry,
        policy,
        status,
        rx,
        tenants: HashMap::new(),
    };
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let fleet = match Fleet::connect(&options).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(url = %options.shown(), error = %e, retry_in_ms = backoff.as_millis() as u64, "NATS unreachable; events wait in the store's log");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            tracing::info!(url = %options.shown(), "publishing change events to NATS JetStream");
            p.status.connected.store(true, Ordering::Release);
            let r = p.session(&fleet).await;
            p.status.connected.store(false, Ordering::Release);
            match r {
                Ok(()) => return, // the change bus closed: the control plane is gone
                Err(e) => {
                    p.status.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "publishing to NATS failed; resuming from the stream's last revisions");
                    backoff = Duration::from_millis(200);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    })
}

/// What the publisher knows of one tenant.
#[derive(Debug, Default)]
struct Tenant {
    /// Last revision the stream holds (acknowledged).
    published: u64,
    /// Stream sequences of the last events: (revision, sequence).
    seqs: VecDeque<(u64, u64)>,
    /// Revision of the latest snapshot record (`None`: no record).
    snapshot: Option<u64>,
    /// When the oldest change without a snapshot was published.
    dirty_since: Option<Instant>,
    /// New to the fleet: announce it before its first event.
    announce: bool,
}

const RECENT_SEQS: usize = 64;

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("control plane: {0}")]
    Control(#[from] ControlError),
}

fn nats(e: impl std::fmt::Display) -> Error {
    Error::Fleet(FleetError::nats(e))
}

struct Publisher {
    cp: Arc<ControlPlane>,
    registry: Arc<Registry>,
    policy: Policy,
    status: Arc<Status>,
    rx: tokio::sync::broadcast::Receiver<Arc<Commit>>,
    tenants: HashMap<String, Tenant>,
}

impl Publisher {
    /// One connection's work: learn where the stream stands, send the log's tail, follow the
    /// bus. `Ok` only when the bus closed.
    async fn session(&mut self, f: &Fleet) -> Result<(), Error> {
        self.tenants.clear();
        let mut reconnected = f.reconnected.subscribe();
        reconnected.mark_unchanged();
        self.catch_up_all(f).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(c) => self.on_commit(f, &c).await?,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "publisher lagged behind the change bus; sending from the log");
                        self.catch_up_all(f).await?;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = tick.tick() => {
                    if f.client.connection_state() == async_nats::connection::State::Connected {
                        self.status
                            .last_contact_ms
                            .store(now_ms().max(0) as u64, Ordering::Relaxed);
                    }
                    self.snapshots_due(f).await?
                }
                // A restarted server may have lost what it had not written yet: ask it again.
                _ = reconnected.changed() => {
                    return Err(Error::Fleet(FleetError::Nats("connection re-established".into())));
                }
            }
        }
    }

    /// Where the stream stands for `tenant` (asked once per session), and its snapshot record.
    async fn learn(&mut self, f: &Fleet, tenant: &str) -> Result<(), Error> {
        if self.tenants.contains_key(tenant) {
            return Ok(());
        }
        let mut t = Tenant::default();
        let ours = self.cp.doc(tenant).await.map_or(0, |d| d.revision);
        // The last event on the subject, if it is a valid one of a revision we have: anything
        // else (corrupt, foreign, from the future) says nothing about what was published.
        let last = match f
            .stream
            .get_last_raw_message_by_subject(&subject(tenant))
            .await
        {
            Ok(m) => match decode_event(m.subject.as_str(), Some(&m.headers), &m.payload) {
                Ok(c) if c.revision <= ours => Some((c.revision, m.sequence)),
                Ok(c) => {
                    tracing::error!(tenant, revision = c.revision, ours, "the stream's last event claims a revision the store does not have; ignoring it");
                    None
                }
                Err(why) => {
                    tracing::warn!(
                        tenant,
                        why,
                        "the stream's last event is not valid; ignoring it"
                    );
                    None
                }
            },
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                None
            }
            Err(e) => return Err(nats(e)),
        };
        if let Some((revision, seq)) = last {
            t.published = revision;
            t.seqs.push_back((revision, seq));
        }
        let recorded = match f.record(tenant).await {
            Ok(r) => {
                let recorded = r.is_some();
                t.snapshot = r.map(|r| r.revision).filter(|r| *r <= ours);
                recorded
            }
            Err(FleetError::Corrupt(e)) => {
                tracing::warn!(tenant, error = %e, "unreadable snapshot record; publishing a new one");
                true
            }
            Err(e) => return Err(e.into()),
        };
        t.announce = last.is_none() && !recorded;
        if last.is_none() {
            // Without a valid last event, the snapshot is the floor: what it holds, a sidecar
            // gets from it (sending older events again would only make sidecars reload).
            t.published = t.snapshot.unwrap_or(0);
        }
        if t.snapshot.is_none_or(|s| s < t.published) {
            t.dirty_since = Some(Instant::now());
        }
        self.tenants.insert(tenant.to_string(), t);
        Ok(())
    }

    fn published(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).map_or(0, |t| t.published)
    }

    /// Sends every tenant's log after what the stream holds; then snapshots those without one.
    async fn catch_up_all(&mut self, f: &Fleet) -> Result<(), Error> {
        for tenant in self.cp.tenant_ids() {
            self.learn(f, &tenant).await?;
            self.catch_up(f, &tenant).await?;
            let t = self.tenants.get(&tenant);
            if t.is_some_and(|t| t.snapshot.is_none()) {
                self.snapshot(f, &tenant, false).await?;
            }
        }
        Ok(())
    }

    async fn on_commit(&mut self, f: &Fleet, c: &Arc<Commit>) -> Result<(), Error> {
        self.learn(f, &c.tenant).await?;
        let published = self.published(&c.tenant);
        if c.revision <= published {
            return Ok(());
        }
        if c.revision == published + 1 {
            self.send(f, c).await?;
        } else {
            self.catch_up(f, &c.tenant).await?;
        }
        self.snapshot_if_due(f, &c.tenant).await
    }

    /// Sends the log of `tenant` after what the stream holds, up to the control plane's revision.
    async fn catch_up(&mut self, f: &Fleet, tenant: &str) -> Result<(), Error> {
        loop {
            let target = self.cp.doc(tenant).await.map_or(0, |d| d.revision);
            let from = self.published(tenant);
            if from >= target {
                return Ok(());
            }
            let commits = self.cp.replay(tenant, from, 256).await?;
            let mut sent = false;
            for c in &commits {
                let published = self.published(tenant);
                if c.revision <= published {
                    continue; // covered by a reset (a commit too large for an event)
                }
                // A missing revision (dropped from the log) or a tombstone (a deleted tenant's
                // log keeps no changes): the commits cannot travel; the snapshot does.
                if c.revision != published + 1 || c.ops.is_empty() {
                    break;
                }
                self.send(f, c).await?;
                sent = true;
            }
            if !sent {
                return self.reset(f, tenant, false).await;
            }
        }
    }

    /// Publishes one commit (the tenant's next revision) and waits for its ack; one too large
    /// for an event goes as a snapshot and a reset.
    async fn send(&mut self, f: &Fleet, c: &Commit) -> Result<(), Error> {
        let (headers, payload) = encode_event(c)?;
        // Headers and protocol overhead are small; keep well clear of the limit.
        if payload.len() + 4096 > f.client.server_info().max_payload {
            tracing::info!(tenant = %c.tenant, revision = c.revision, bytes = payload.len(), "commit larger than the NATS max payload; publishing a snapshot instead");
            return self.reset(f, &c.tenant, false).await;
        }
        if !self.publish(f, c, headers, payload).await? {
            tracing::error!(tenant = %c.tenant, revision = c.revision, "the stream holds another event under this revision's id; publishing a snapshot");
            return self.reset(f, &c.tenant, true).await;
        }
        if forgets(c) {
            self.forget(f, &c.tenant, c.revision).await?;
        }
        Ok(())
    }

    /// After a commit that forgets personal data (a user erased, a tenant deleted): a snapshot
    /// at it, then the tenant's older events purged from the stream — the store's log was
    /// scrubbed or dropped, NATS keeps no copy either.
    async fn forget(&mut self, f: &Fleet, tenant: &str, revision: u64) -> Result<(), Error> {
        let Some(seq) = self
            .tenants
            .get(tenant)
            .and_then(|t| t.seqs.iter().rev().find(|(r, _)| *r == revision))
            .map(|(_, seq)| *seq)
        else {
            return Ok(());
        };
        self.snapshot(f, tenant, true).await?;
        let purged = f
            .stream
            .purge()
            .filter(subject(tenant))
            .sequence(seq)
            .await
            .map_err(nats)?;
        tracing::info!(
            tenant,
            revision,
            purged = purged.purged,
            "older events of the tenant purged from the stream"
        );
        Ok(())
    }

    /// Publishes an encoded event and waits for its ack. `false`: JetStream already held an
    /// event with its id, with other content.
    async fn publish(
        &mut self,
        f: &Fleet,
        c: &Commit,
        headers: async_nats::HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<bool, Error> {
        if self.tenants.get(&c.tenant).is_some_and(|t| t.announce) {
            self.announce(f, &c.tenant).await?;
        }
        let ack =
            f.js.publish_with_headers(subject(&c.tenant), headers, payload.clone())
                .await
                .map_err(nats)?
                .await
                .map_err(nats)?;
        self.note_sent(&c.tenant, c.revision, ack.sequence);
        self.status
            .last_contact_ms
            .store(now_ms().max(0) as u64, Ordering::Relaxed);
        if ack.duplicate {
            // Sent before (an ack lost in an outage) — or another publisher used this id.
            // (A message that cannot be read back, e.g. purged, counts as other content.)
            let same = f
                .stream
                .get_raw_message(ack.sequence)
                .await
                .is_ok_and(|m| m.payload == payload);
            if !same {
                return Ok(false);
            }
        }
        self.status.events.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Announces a tenant new to the fleet (see the module documentation); once per id within
    /// JetStream's de-duplication window, and harmless when repeated.
    async fn announce(&mut self, f: &Fleet, tenant: &str) -> Result<(), Error> {
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{tenant}:new").as_str(),
        );
        f.js.publish_with_headers(super::announcement(tenant), h, bytes::Bytes::new())
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.announce = false;
        }
        tracing::debug!(tenant, "tenant announced to the fleet");
        Ok(())
    }

    fn note_sent(&mut self, tenant: &str, revision: u64, seq: u64) {
        let t = self.tenants.entry(tenant.to_string()).or_default();
        t.published = t.published.max(revision);
        t.seqs.push_back((revision, seq));
        if t.seqs.len() > RECENT_SEQS {
            t.seqs.pop_front();
        }
        if t.dirty_since.is_none() {
            t.dirty_since = Some(Instant::now());
        }
    }

    /// A snapshot of the tenant as the control plane holds it now, then a reset event at its
    /// revision: sidecars reload it from the snapshot. The revisions in between are never sent.
    /// `force`: even when the stream already holds that revision (with other content).
    async fn reset(&mut self, f: &Fleet, tenant: &str, force: bool) -> Result<(), Error> {
        let Some(revision) = self.snapshot(f, tenant, true).await? else {
            return Ok(());
        };
        let published = self.published(tenant);
        if revision < published || revision == published && !force {
            return Ok(());
        }
        let c = super::reset_event(tenant, revision);
        debug_assert_eq!(c.action, RESET_ACTION);
        self.status.resets.fetch_add(1, Ordering::Relaxed);
        let (headers, payload) = encode_event(&c)?;
        if !self.publish(f, &c, headers, payload).await? {
            tracing::error!(
                tenant,
                revision,
                "the stream holds another reset under this id"
            );
        }
        Ok(())
    }

    async fn snapshot_if_due(&mut self, f: &Fleet, tenant: &str) -> Result<(), Error> {
        let due = self.tenants.get(tenant).is_some_and(|t| {
            let behind = t.published.saturating_sub(t.snapshot.unwrap_or(0));
            behind > 0
                && (t.snapshot.is_none()
                    || behind >= self.policy.every_revisions
                    || t.dirty_since
                        .is_some_and(|s| s.elapsed() >= self.policy.every))
        });
        if due {
            self.snapshot(f, tenant, false).await?;
        }
        Ok(())
    }

    async fn snapshots_due(&mut self, f: &Fleet) -> Result<(), Error> {
        let names: Vec<String> = self.tenants.keys().cloned().collect();
        for t in names {
            self.snapshot_if_due(f, &t).await?;
        }
        Ok(())
    }

    /// Writes the tenant's snapshot object and record at the control plane's current revision.
    /// Returns that revision; `None` when nothing was written: an unknown tenant, or (without
    /// `ahead`) a revision the stream does not hold yet — a sidecar loading the snapshot would
    /// then see the events up to it arrive after it.
    async fn snapshot(
        &mut self,
        f: &Fleet,
        tenant: &str,
        ahead: bool,
    ) -> Result<Option<u64>, Error> {
        let Some(doc) = self.cp.doc(tenant).await else {
            return Ok(None);
        };
        let revision = doc.revision;
        if !ahead && revision != self.published(tenant) {
            return Ok(None);
        }
        let stream_seq = self.seq_at(f, tenant, revision).await?;
        let mut record = Record {
            tenant: tenant.to_string(),
            revision,
            deleted: doc.settings.is_none(),
            object: String::new(),
            sha256: String::new(),
            size: 0,
            format: OBJECT_FORMAT,
            archive_format: None,
            stream_seq,
            at_ms: now_ms(),
        };
        if !record.deleted {
            // The live archive, when the follower has built this very revision.
            let archive = self
                .registry
                .get(tenant)
                .filter(|s| s.revision() == revision)
                .map(|g| Arc::clone(&*g));
            if archive.is_none() && !ahead && self.registry.failure(tenant).is_none() {
                // The follower is still building it: next time (sidecars would compile it).
                return Ok(None);
            }
            let name = tenant.to_string();
            let bytes = tokio::task::spawn_blocking(move || {
                encode_object(&doc.to_rows(&name), archive.as_deref())
                    .map(|b| (b, archive.is_some()))
            })
            .await
            .map_err(|e| FleetError::Corrupt(format!("snapshot encoder failed: {e}")))??;
            let (bytes, with_archive) = bytes;
            record.object = token(tenant);
            record.sha256 = super::sha256_hex(&bytes);
            record.size = bytes.len() as u64;
            record.archive_format = with_archive.then_some(crate::snapshot::FORMAT_VERSION);
            f.objects
                .put(record.object.as_str(), &mut bytes.as_slice())
                .await
                .map_err(nats)?;
        } else {
            // Best effort: a deleted tenant's object is of no use any more.
            let _ = f.objects.delete(token(tenant)).await;
        }
        let json = serde_json::to_vec(&record).map_err(|e| FleetError::Corrupt(e.to_string()))?;
        f.kv.put(token(tenant), json.into()).await.map_err(nats)?;
        self.status.snapshots.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            tenant,
            revision,
            stream_seq,
            bytes = record.size,
            "snapshot published"
        );
        let t = self.tenants.entry(tenant.to_string()).or_default();
        t.snapshot = Some(revision);
        t.dirty_since = None;
        Ok(Some(revision))
    }

    /// The stream sequence of `tenant`'s last event at or before `revision`; 0 when unknown.
    async fn seq_at(&self, f: &Fleet, tenant: &str, revision: u64) -> Result<u64, Error> {
        if let Some(t) = self.tenants.get(tenant) {
            if let Some(&(_, seq)) = t.seqs.iter().rev().find(|(r, _)| *r <= revision) {
                return Ok(seq);
            }
        }
        match f
            .stream
            .get_last_raw_message_by_subject(&subject(tenant))
            .await
        {
            Ok(m) if event_revision(&m.headers).is_some_and(|r| r <= revision) => Ok(m.sequence),
            Ok(_) => Ok(0),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(0)
            }
            Err(e) => Err(nats(e)),
        }
    }
}
