//! The sidecar's [`Source`]: tenants loaded from the snapshot records and objects, commits from
//! the event stream, checked before the follower sees them.
//!
//! Each followed tenant has an expected revision (the one the follower holds) and the stream
//! sequence up to which its events are accounted for (the snapshot's `stream_seq`, then each
//! event taken). One ordered consumer reads the stream from the lowest such sequence, filtered
//! on the server: every subject for a sidecar of every tenant; the listed tenants' subjects for
//! `--tenants`; for `--tenant-shard`, the subjects of the shard's tenants plus the tenant
//! announcements — one of a tenant of the shard adds its subject (the consumer is opened again
//! from the announcement on), so a sidecar of a shard never receives other tenants' events (up
//! to [`MAX_FILTER_SUBJECTS`] tenants; a larger set reads every subject and keeps its own). A message
//! at or below its tenant's sequence was accounted for (a re-read) and is skipped. Otherwise:
//! - the next revision → handed to the follower;
//! - live (beyond everything read before): corrupt (digest, subject, JSON), a revision already
//!   held (duplicate, out of order), a revision further on (gap), or a reset event → the tenant
//!   is reloaded from its snapshot, and the stream re-read from the snapshot's sequence;
//! - during such a re-read (or the boot replay), a message that is corrupt, old or beyond a gap
//!   is skipped: it was judged already, and reloading again would not change it. The tenant
//!   then holds its last good revision until the next event or snapshot — never a state that
//!   skips a revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::{FutureExt, StreamExt};

use super::{decode_event, decode_object, subject, tenant_of_subject, Fleet, FleetError, Options};
use super::{Record, RESET_ACTION, SUBJECT_PREFIX};
use crate::control::follower::{Event, Loaded, Source};
use crate::control::{TenantDoc, TenantSet};
use crate::store::BoxFuture;

/// What the sidecar's follower has seen, for `/readyz`, metrics and tests.
#[derive(Debug, Default)]
pub struct Status {
    /// Boot replay done and built: every followed tenant is loaded at the stream's position of
    /// boot time.
    pub ready: AtomicBool,
    pub connected: AtomicBool,
    /// Unix ms of the last sign of life from NATS: a message, an answer, or the connection
    /// seen up (checked every 250 ms).
    pub last_contact_ms: Arc<AtomicU64>,
    pub events: AtomicU64,
    /// Messages the consumer delivered (of any tenant, re-reads included).
    pub received: AtomicU64,
    pub resyncs: AtomicU64,
    pub corrupt: AtomicU64,
    pub duplicates: AtomicU64,
    pub gaps: AtomicU64,
    pub resets: AtomicU64,
    /// Per tenant: highest revision seen in the stream, and the revision held.
    pub tenants: Mutex<HashMap<String, (u64, u64)>>,
}

impl Status {
    fn contact(&self) {
        self.last_contact_ms
            .store(super::now_ms().max(0) as u64, Ordering::Relaxed);
    }

    fn held(&self, tenant: &str, seen: u64, held: u64) {
        let mut m = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(tenant.to_string()).or_default();
        e.0 = e.0.max(seen).max(held);
        e.1 = held;
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tenant {
    /// Revision the follower holds (0: none).
    revision: u64,
    /// Stream sequence up to which this tenant's events are accounted for.
    seq: u64,
}

/// The most subjects a consumer filters on (about 40 bytes each in its configuration, which must
/// stay well under NATS's 1 MiB message limit); a sidecar of more tenants reads every subject.
const MAX_FILTER_SUBJECTS: usize = 5_000;

/// The NATS source of a sidecar.
pub struct Follow {
    options: Options,
    set: TenantSet,
    status: Arc<Status>,
    fleet: Option<Fleet>,
    messages: Option<jetstream::consumer::pull::Ordered>,
    tenants: HashMap<String, Tenant>,
    /// Highest stream sequence read so far: anything at or below it is a re-read.
    high: u64,
    /// Read the stream again from this sequence (a reload moved a tenant back).
    restart: Option<u64>,
    /// Stream sequence at boot: reached once the boot replay is done.
    boot_high: u64,
    caught_up: bool,
    /// Changes when the connection is re-established.
    reconnected: tokio::sync::watch::Receiver<u64>,
}

impl Follow {
    pub fn new(options: Options, set: TenantSet, status: Arc<Status>) -> Follow {
        Follow {
            options,
            set,
            status,
            fleet: None,
            messages: None,
            tenants: HashMap::new(),
            high: 0,
            restart: None,
            boot_high: 0,
            caught_up: false,
            reconnected: tokio::sync::watch::channel(0).1,
        }
    }

    /// Connected NATS, connecting (with backoff, forever) when needed.
    async fn fleet(&mut self) -> Fleet {
        if let Some(f) = &self.fleet {
            return f.clone();
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            match Fleet::connect(&self.options).await {
                Ok(f) => {
                    tracing::info!(url = %self.options.shown(), follows = %self.set.describe(), "following NATS JetStream");
                    self.status.connected.store(true, Ordering::Release);
                    self.status.contact();
                    self.reconnected = f.reconnected.subscribe();
                    self.reconnected.mark_unchanged();
                    self.fleet = Some(f.clone());
                    return f;
                }
                Err(e) => {
                    self.status.connected.store(false, Ordering::Release);
                    tracing::warn!(url = %self.options.shown(), error = %e, retry_in_ms = backoff.as_millis() as u64, "NATS unreachable; serving the snapshots held");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// One attempt at loading `tenant`'s snapshot: `None` when it has no record; a deleted tenant
/// is an empty document at its deletion's revision.
async fn try_load(f: &Fleet, tenant: &str) -> Result<(Option<Record>, Option<Loaded>), FleetError> {
    let Some(r) = f.record(tenant).await? else {
        return Ok((None, None));
    };
    if r.deleted {
        // Nothing to serve; but the id's revisions go on if it is created again.
        let doc = TenantDoc {
            revision: r.revision,
            ..TenantDoc::default()
        };
        return Ok((Some(r), Some(Loaded::doc(doc))));
    }
    let bytes = f.object(&r).await?;
    let (tenant_s, revision) = (tenant.to_string(), r.revision);
    let decoded = tokio::task::spawn_blocking(move || {
        let d = decode_object(&bytes, &tenant_s, revision).map_err(FleetError::Corrupt)?;
        let doc = TenantDoc::from_rows(&d.rows)
            .map_err(|e| FleetError::Corrupt(format!("rows of tenant '{tenant_s}': {e}")))?;
        Ok::<_, FleetError>(Loaded {
            doc,
            archive: d.archive,
        })
    })
    .await
    .map_err(|e| FleetError::Corrupt(format!("snapshot decoder failed: {e}")))??;
    Ok((Some(r), Some(decoded)))
}

impl Follow {
    /// Loads `tenant` (retrying until NATS answers and the snapshot reads back) and moves its
    /// stream position to its snapshot's.
    async fn load_tenant(&mut self, tenant: &str) -> Option<Loaded> {
        let mut backoff = Duration::from_millis(200);
        let (record, loaded) = loop {
            let f = self.fleet().await;
            match try_load(&f, tenant).await {
                Ok(r) => {
                    self.status.contact();
                    break r;
                }
                Err(e) => {
                    tracing::warn!(tenant, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot load the tenant's snapshot; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let t = match &record {
            Some(r) => Tenant {
                revision: r.revision,
                seq: r.stream_seq,
            },
            // No snapshot yet: its events from the start of the stream.
            None => Tenant::default(),
        };
        tracing::debug!(
            tenant,
            revision = t.revision,
            stream_seq = t.seq,
            "tenant loaded"
        );
        self.tenants.insert(tenant.to_string(), t);
        self.status.held(tenant, t.revision, t.revision);
        if t.seq < self.high {
            self.restart = Some(self.restart.map_or(t.seq + 1, |r| r.min(t.seq + 1)));
        }
        loaded
    }

    /// A new ordered consumer reading from `start`.
    async fn open(&mut self, start: u64) -> Result<(), FleetError> {
        let f = self.fleet().await;
        let mut config = jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ..Default::default()
        };
        // A consumer's configuration must fit in one message: a set of more tenants than this
        // reads every subject (and `judge` keeps its own).
        let many = self
            .tenants
            .len()
            .max(self.set.named().map_or(0, |n| n.len()));
        match &self.set {
            TenantSet::All => config.filter_subject = format!("{SUBJECT_PREFIX}.>"),
            _ if many > MAX_FILTER_SUBJECTS => {
                config.filter_subject = format!("{SUBJECT_PREFIX}.>")
            }
            TenantSet::Only(names) => {
                config.filter_subjects = names.iter().map(|t| subject(t)).collect()
            }
            TenantSet::Shard { .. } => {
                let mut subjects: Vec<String> = self.tenants.keys().map(|t| subject(t)).collect();
                subjects.sort();
                subjects.push(super::announcements());
                config.filter_subjects = subjects;
            }
        }
        let consumer = f
            .stream
            .create_consumer(config)
            .await
            .map_err(FleetError::nats)?;
        self.messages = Some(consumer.messages().await.map_err(FleetError::nats)?);
        tracing::debug!(start, "reading the event stream");
        Ok(())
    }

    /// Judges one message (see the module documentation).
    fn judge(&mut self, m: &jetstream::Message) -> Option<Event> {
        self.status.contact();
        self.status.received.fetch_add(1, Ordering::Relaxed);
        let info = m.info().ok()?;
        let seq = info.stream_sequence;
        let reread = seq <= self.high;
        self.high = self.high.max(seq);
        if !self.caught_up && (self.high >= self.boot_high || info.pending == 0) {
            self.caught_up = true;
        }
        if let Some(tenant) = super::tenant_of_announcement(m.subject.as_str()) {
            self.announced(tenant, seq);
            return None;
        }
        let tenant = tenant_of_subject(m.subject.as_str())?;
        if !self.set.contains(&tenant) {
            return None;
        }
        let t = self.tenants.entry(tenant.clone()).or_default();
        if seq <= t.seq {
            return None;
        }
        t.seq = seq;
        let held = t.revision;
        let event = match decode_event(m.subject.as_str(), m.headers.as_ref(), &m.payload) {
            Err(why) => {
                self.status.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant, seq, why, "corrupt event");
                (!reread).then(|| Event::Resync(tenant.clone()))
            }
            Ok(c) if c.action == RESET_ACTION => {
                if c.revision > held || (!reread && c.revision == held) {
                    self.status.resets.fetch_add(1, Ordering::Relaxed);
                    Some(Event::Resync(tenant.clone()))
                } else {
                    None
                }
            }
            Ok(c) if c.revision == held + 1 => {
                t.revision = c.revision;
                self.status.events.fetch_add(1, Ordering::Relaxed);
                self.status.held(&tenant, c.revision, c.revision);
                return Some(Event::Commit(Arc::new(c)));
            }
            Ok(c) => {
                let gap = c.revision > held;
                let counter = if gap {
                    &self.status.gaps
                } else {
                    &self.status.duplicates
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.status.held(&tenant, c.revision, held);
                tracing::warn!(
                    tenant,
                    seq,
                    revision = c.revision,
                    held,
                    reread,
                    "{} event",
                    if gap {
                        "gap before an"
                    } else {
                        "duplicate or out-of-order"
                    }
                );
                (!reread).then(|| Event::Resync(tenant.clone()))
            }
        };
        if matches!(event, Some(Event::Resync(_))) {
            self.status.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        event
    }

    /// A tenant announced at stream sequence `seq`: a shard sidecar that does not read its
    /// subject yet reads the stream again from there, with it. (Others read every subject, or
    /// a fixed list.)
    fn announced(&mut self, tenant: String, seq: u64) {
        let shard = matches!(self.set, TenantSet::Shard { .. });
        if !shard || !self.set.contains(&tenant) || self.tenants.contains_key(&tenant) {
            return;
        }
        tracing::info!(tenant, seq, "a new tenant of this shard; following it");
        self.tenants.insert(tenant, Tenant { revision: 0, seq });
        self.restart = Some(self.restart.map_or(seq + 1, |r| r.min(seq + 1)));
    }

    /// The stream position to (re)start from, if the consumer must be (re)opened.
    fn start_position(&mut self) -> Option<u64> {
        if let Some(r) = self.restart.take() {
            return Some(r);
        }
        self.messages.is_none().then_some(self.high + 1)
    }
}

/// The stream sequence of the last event of any of `tenants` (0: none).
async fn last_seq_of(f: &Fleet, tenants: &[String]) -> Result<u64, FleetError> {
    let mut high = 0;
    for t in tenants {
        match f.stream.get_last_raw_message_by_subject(&subject(t)).await {
            Ok(m) => high = high.max(m.sequence),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(FleetError::nats(e)),
        }
    }
    Ok(high)
}

impl Source for Follow {
    fn next(&mut self) -> BoxFuture<'_, Option<Event>> {
        Box::pin(async move {
            // The previous batch is built: once the boot replay was in it, the sidecar is ready.
            if self.caught_up {
                self.status.ready.store(true, Ordering::Release);
            }
            let mut backoff = Duration::from_millis(200);
            loop {
                if let Some(start) = self.start_position() {
                    if let Err(e) = self.open(start).await {
                        tracing::warn!(error = %e, "cannot read the event stream; retrying");
                        self.status.connected.store(false, Ordering::Release);
                        self.restart = Some(start);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    self.status.connected.store(true, Ordering::Release);
                }
                let Some(messages) = self.messages.as_mut() else {
                    continue;
                };
                let alive = self.fleet.as_ref().map(|f| f.client.clone());
                let next = tokio::select! {
                    m = messages.next() => m,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {
                        let up = alive.is_some_and(|c| {
                            c.connection_state() == async_nats::connection::State::Connected
                        });
                        self.status.connected.store(up, Ordering::Release);
                        if up {
                            self.status.contact();
                        }
                        continue;
                    }
                    _ = self.reconnected.changed() => {
                        // A restarted server has no consumer for us: read on from where we are.
                        tracing::info!(from = self.high + 1, "NATS reconnected; reading the event stream again");
                        self.messages = None;
                        continue;
                    }
                };
                match next {
                    Some(Ok(m)) => {
                        self.status.connected.store(true, Ordering::Release);
                        if let Some(e) = self.judge(&m) {
                            return Some(e);
                        }
                        if self.caught_up {
                            self.status.ready.store(true, Ordering::Release);
                        }
                    }
                    Some(Err(e)) => {
                        self.status.connected.store(false, Ordering::Release);
                        tracing::warn!(error = %e, "event stream interrupted; reading again from where it stopped");
                        self.messages = None;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    None => self.messages = None,
                }
            }
        })
    }

    fn try_next(&mut self) -> Option<Event> {
        if self.restart.is_some() {
            return None;
        }
        loop {
            let m = match self.messages.as_mut()?.next().now_or_never() {
                Some(Some(Ok(m))) => m,
                _ => return None,
            };
            if let Some(e) = self.judge(&m) {
                return Some(e);
            }
            if self.restart.is_some() {
                return None;
            }
        }
    }

    fn load<'a>(&'a mut self, tenant: &'a str) -> BoxFuture<'a, Option<Loaded>> {
        Box::pin(async move {
            let loaded = self.load_tenant(tenant).await;
            let revision = self.tenants.get(tenant).map_or(0, |t| t.revision);
            tracing::info!(tenant, revision, "tenant reloaded from its snapshot");
            loaded
        })
    }

    fn load_all(&mut self) -> BoxFuture<'_, HashMap<String, Loaded>> {
        Box::pin(async move {
            // Where the stream is now: the boot replay ends there.
            let names = loop {
                let f = self.fleet().await;
                let listed = match self.set.named() {
                    Some(n) => Ok(n.iter().cloned().collect::<Vec<_>>()),
                    // Those with a snapshot, and those with only events so far.
                    None => match (f.recorded_tenants().await, f.tenants_in_stream().await) {
                        (Ok(mut a), Ok(b)) => {
                            a.extend(b);
                            a.sort();
                            a.dedup();
                            a.retain(|t| self.set.contains(t));
                            Ok(a)
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    },
                };
                // Where the boot replay ends: the last event this sidecar will receive.
                let high = match &listed {
                    Ok(names) if self.set != TenantSet::All => last_seq_of(&f, names).await,
                    _ => f
                        .stream
                        .get_info()
                        .await
                        .map(|i| i.state.last_sequence)
                        .map_err(FleetError::nats),
                };
                match (listed, high) {
                    (Ok(names), Ok(high)) => {
                        self.boot_high = high;
                        break names;
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "cannot list the fleet's tenants; retrying");
                        self.fleet = None;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            };
            self.tenants.clear();
            self.messages = None;
            self.restart = None;
            let mut out = HashMap::new();
            let names: Vec<String> = names.into_iter().filter(|t| self.set.contains(t)).collect();
            for t in names {
                if let Some(l) = self.load_tenant(&t).await {
                    out.insert(t, l);
                }
            }
            // Read from the oldest snapshot's position (for a tenant without a snapshot, from its
            // first event); everything up to now is a replay.
            let mut start = self.boot_high;
            let tenants: Vec<(String, Tenant)> =
                self.tenants.iter().map(|(t, s)| (t.clone(), *s)).collect();
            for (t, s) in tenants {
                if s.seq > 0 || s.revision > 0 {
                    start = start.min(s.seq);
                    continue;
                }
                let f = self.fleet().await;
                match f.first_seq(&t).await {
                    Ok(Some(first)) => start = start.min(first.saturating_sub(1)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(tenant = %t, error = %e, "cannot find the tenant's first event; reading the whole stream");
                        start = 0;
                    }
                }
            }
            self.high = self.boot_high;
            self.restart = Some(start + 1);
            self.caught_up = start >= self.boot_high;
            tracing::info!(
                tenants = out.len(),
                stream_seq = self.boot_high,
                replay_from = start + 1,
                "snapshots loaded"
            );
            out
        })
    }
}

/// A sidecar's status as it reports it to the control plane's side ([`super::SIDECARS_BUCKET`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub id: String,
    /// What it follows ("every tenant", "tenants a, b", "tenant shard 1/3").
    pub follows: String,
    pub ready: bool,
    pub connected: bool,
    pub last_contact_ms: u64,
    pub events_applied: u64,
    /// Messages received from the stream (any tenant, re-reads included).
    #[serde(default)]
    pub received: u64,
    pub resyncs: u64,
    /// Per tenant: `[highest revision seen in the stream, revision applied]`.
    pub tenants: std::collections::BTreeMap<String, (u64, u64)>,
    pub at_ms: i64,
}

impl Status {
    pub fn report(&self, id: &str, follows: &str) -> Report {
        Report {
            id: id.to_string(),
            follows: follows.to_string(),
            ready: self.ready.load(Ordering::Acquire),
            connected: self.connected.load(Ordering::Acquire),
            last_contact_ms: self.last_contact_ms.load(Ordering::Relaxed),
            events_applied: self.events.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            tenants: self
                .tenants
                .lock()
                .map(|m| m.iter().map(|(t, v)| (t.clone(), *v)).collect())
                .unwrap_or_default(),
            at_ms: super::now_ms(),
        }
    }
}

/// Reports the sidecar's status every 5 s under `id` in [`super::SIDECARS_BUCKET`] (its own
/// connection; failures are logged and retried).
pub fn spawn_reporter(
    options: Options,
    id: String,
    follows: String,
    status: Arc<Status>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut fleet: Option<Fleet> = None;
        let key = super::token(&id);
        let mut reported: Option<(std::time::Instant, bool)> = None;
        loop {
            // Every 5 s, and at once when readiness changes.
            let ready = status.ready.load(Ordering::Acquire);
            let due = reported
                .is_none_or(|(at, was)| was != ready || at.elapsed() >= Duration::from_secs(5));
            if !due {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            if fleet.is_none() {
                fleet = Fleet::connect(&options).await.ok();
            }
            reported = Some((std::time::Instant::now(), ready));
            if let Some(f) = &fleet {
                let r = status.report(&id, &follows);
                match serde_json::to_vec(&r) {
                    Ok(json) => {
                        if let Err(e) = f.sidecars.put(&key, json.into()).await {
                            tracing::debug!(error = %e, "sidecar status not reported");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sidecar status not encoded"),
                }
            }
        }
    })
}

/// Every sidecar's last report (those that stopped reporting have expired).
pub async fn sidecars(f: &Fleet) -> Result<Vec<Report>, FleetError> {
    let mut keys = f.sidecars.keys().await.map_err(FleetError::nats)?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        names.push(k.map_err(FleetError::nats)?);
    }
    let mut out = Vec::new();
    for k in names {
        if let Some(v) = f.sidecars.get(&k).await.map_err(FleetError::nats)? {
            if let Ok(r) = serde_json::from_slice::<Report>(&v) {
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The control plane's view of the sidecars (`GET /v1/fleet/sidecars`): their reports, read
/// from NATS when asked, over a connection opened at the first request and kept.
pub struct Directory {
    options: Options,
    fleet: tokio::sync::Mutex<Option<Fleet>>,
}

impl Directory {
    pub fn new(options: Options) -> Directory {
        Directory {
            options,
            fleet: tokio::sync::Mutex::new(None),
        }
    }

    /// Every sidecar's last report; an error when NATS does not answer within `timeout`.
    pub async fn reports(&self, timeout: Duration) -> Result<Vec<Report>, FleetError> {
        let read = async {
            let f = {
                let mut held = self.fleet.lock().await;
                match held.as_ref() {
                    Some(f) => f.clone(),
                    None => {
                        let f = Fleet::connect(&self.options).await?;
                        *held = Some(f.clone());
                        f
                    }
                }
            };
            sidecars(&f).await
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(FleetError::Nats(format!(
                "no answer from NATS ({}) within {} ms",
                self.options.shown(),
                timeout.as_millis()
            ))),
        }
    }
}
