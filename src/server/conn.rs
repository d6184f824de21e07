//! Connection admission: who may hold a connection, and for how long.
//!
//! A connection that never sends a request must not hold a serving slot (an unauthenticated
//! client could otherwise park thousands of silent sockets, or half an HTTP/2 preface, and make
//! every tenant unreachable). So:
//! - a connection is *pending* from accept until its first request starts; pending connections
//!   are bounded (`max_pending`) and, when that bound is reached, the **oldest** pending one is
//!   closed to admit the new one: a silent socket can never keep a real client out, because a
//!   real client sends its request at once;
//! - a pending connection that has not started a request within `first_request` is closed (a
//!   first-byte / preface timeout that also covers a partial HTTP/2 preface);
//! - a connection counts against the serving limit (`max_serving`) only from its first request;
//!   when that limit is reached, the request is answered 503 and the connection closed;
//! - a connection with no request in flight for `idle` is closed (HTTP/1.1 keep-alive, and
//!   HTTP/2 clients that only answer PINGs).
//!
//! Per request this costs two atomic operations and a clock read; the lock is taken once per
//! connection (accept, first request, close), never per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The admission limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time from accept to the first request's headers.
    pub first_request: Duration,
    /// Time a connection may stay open with no request in flight.
    pub idle: Duration,
    /// Most connections that have not sent a request yet; the oldest is closed beyond it.
    pub max_pending: usize,
    /// Most connections that have sent a request (the serving limit).
    pub max_serving: usize,
}

/// Why a connection was closed by the server (other than by the client or an HTTP error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Closed {
    /// No request within `first_request` of accept.
    FirstRequestTimeout = 0,
    /// No request in flight for `idle`.
    IdleTimeout = 1,
    /// The oldest pending connection, closed to admit a new one.
    Evicted = 2,
    /// The serving limit was reached when its first request arrived (answered 503).
    Refused = 3,
}

impl Closed {
    pub const ALL: [Closed; 4] = [
        Closed::FirstRequestTimeout,
        Closed::IdleTimeout,
        Closed::Evicted,
        Closed::Refused,
    ];

    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            Closed::FirstRequestTimeout => "first_request_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
        }
    }

    fn from_u8(v: u8) -> Closed {
        match v {
            0 => Closed::FirstRequestTimeout,
            1 => Closed::IdleTimeout,
            2 => Closed::Evicted,
            _ => Closed::Refused,
        }
    }
}

/// Connection counters of one process (all listeners), read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct ConnStats {
    closed: [AtomicU64; 4],
    pending: AtomicI64,
    serving: AtomicI64,
    accepted: AtomicU64,
}

impl ConnStats {
    /// Connections closed by the server for `reason`, since start.
    pub fn closed(&self, reason: Closed) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }
    /// Open connections that have not sent a request yet.
    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }
    /// Open connections that have sent a request.
    pub fn serving(&self) -> i64 {
        self.serving.load(Ordering::Relaxed)
    }
    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// The admission state of one listener.
pub struct Admission {
    limits: ConnLimits,
    serving: Arc<Semaphore>,
    /// Pending connections by accept order: the first entry is the oldest.
    pending: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    stats: Arc<ConnStats>,
}

impl Admission {
    pub fn new(limits: ConnLimits, stats: Arc<ConnStats>) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            serving: Arc::new(Semaphore::new(limits.max_serving.max(1))),
            pending: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            stats,
        })
    }

    /// Registers a freshly accepted connection as pending, closing the oldest pending one when
    /// the bound is reached.
    pub fn accept(self: &Arc<Self>) -> Arc<Conn> {
        let now = Instant::now();
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            admission: Arc::clone(self),
            accepted_at: now,
            epoch: now,
            last_active_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            admitted: AtomicBool::new(false),
            permit: Mutex::new(None),
            closing: AtomicU8::new(u8::MAX),
            close: Notify::new(),
            finished: AtomicBool::new(false),
        });
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let evicted = if pending.len() >= self.limits.max_pending.max(1) {
                pending.pop_first().map(|(_, c)| c)
            } else {
                None
            };
            pending.insert(conn.id, Arc::clone(&conn));
            evicted
        };
        if let Some(old) = evicted {
            old.shut(Closed::Evicted);
        }
        conn
    }

    fn leave_pending(&self, id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(&id);
    }
}

/// One connection's admission state, shared by its requests and its watchdog.
pub struct Conn {
    id: u64,
    admission: Arc<Admission>,
    accepted_at: Instant,
    epoch: Instant,
    /// Milliseconds since `epoch` at which the last request ended (or began).
    last_active_ms: AtomicU64,
    in_flight: AtomicUsize,
    admitted: AtomicBool,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// The reason the server closes it (`u8::MAX`: not closing).
    closing: AtomicU8,
    close: Notify,
    finished: AtomicBool,
}

/// Held while a request is in flight on its connection.
pub struct InFlight<'a> {
    conn: &'a Conn,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.conn.touch();
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    /// A request starts on this connection. The first one takes a serving slot; `Err` when the
    /// serving limit is reached (answer 503; the connection is closed).
    #[inline]
    pub fn begin(&self) -> Result<InFlight<'_>, Closed> {
        if !self.admitted.load(Ordering::Acquire) {
            self.admit()?;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Ok(InFlight { conn: self })
    }

    #[cold]
    fn admit(&self) -> Result<(), Closed> {
        let mut slot = self.permit.lock().unwrap_or_else(|p| p.into_inner());
        if self.admitted.load(Ordering::Acquire) {
            return Ok(());
        }
        let adm = &self.admission;
        match Arc::clone(&adm.serving).try_acquire_owned() {
            Ok(p) => {
                *slot = Some(p);
                self.admitted.store(true, Ordering::Release);
                drop(slot);
                adm.leave_pending(self.id);
                adm.stats.pending.fetch_sub(1, Ordering::Relaxed);
                adm.stats.serving.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                drop(slot);
                self.shut(Closed::Refused);
                Err(Closed::Refused)
            }
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// Asks the connection's watchdog to close it.
    fn shut(&self, reason: Closed) {
        if self
            .closing
            .compare_exchange(u8::MAX, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.close.notify_one();
        }
    }

    /// Resolves when the server must close this connection, with the reason; never resolves
    /// for a connection that keeps sending requests within its limits.
    pub async fn watchdog(&self) -> Closed {
        let limits = self.admission.limits;
        let reason = tokio::select! {
            r = self.timeouts(limits) => r,
            () = self.close.notified() => Closed::from_u8(self.closing.load(Ordering::Acquire)),
        };
        let _ = self.closing.compare_exchange(
            u8::MAX,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        reason
    }

    async fn timeouts(&self, limits: ConnLimits) -> Closed {
        tokio::time::sleep_until(self.accepted_at + limits.first_request).await;
        if !self.admitted.load(Ordering::Acquire) && self.in_flight.load(Ordering::Acquire) == 0 {
            return Closed::FirstRequestTimeout;
        }
        loop {
            let last =
                self.epoch + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
            let deadline = last + limits.idle;
            if Instant::now() >= deadline && self.in_flight.load(Ordering::Acquire) == 0 {
                return Closed::IdleTimeout;
            }
            // Busy or recently active: look again when the idle period could have run out.
            tokio::time::sleep_until(deadline.max(Instant::now() + Duration::from_millis(10)))
                .await;
        }
    }

    /// The connection ended (closed by either side): frees its slot and records why.
    pub fn finish(&self, closed_by_server: Option<Closed>) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let adm = &self.admission;
        if self.admitted.load(Ordering::Acquire) {
            adm.stats.serving.fetch_sub(1, Ordering::Relaxed);
        } else {
            adm.leave_pending(self.id);
            adm.stats.pending.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(r) = closed_by_server {
            adm.stats.closed[r as usize].fetch_add(1, Ordering::Relaxed);
        }
        let mut slot = self.permit.lock().unwrap_or_else(|p| p.into_inner());
        *slot = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_pending: usize, max_serving: usize) -> ConnLimits {
        ConnLimits {
            first_request: Duration::from_millis(200),
            idle: Duration::from_millis(300),
            max_pending,
            max_serving,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_first_request_timeout() {
        let stats = Arc::new(ConnStats::default());
        let adm = Admission::new(limits(8, 8), Arc::clone(&stats));
        let c = adm.accept();
        assert_eq!(stats.pending(), 1);
        let start = Instant::now();
        let r = c.watchdog().await;
        assert_eq!(r, Closed::FirstRequestTimeout);
        assert!(start.elapsed() >= Duration::from_millis(200));
        c.finish(Some(r));
        assert_eq!(stats.pending(), 0);
        assert_eq!(stats.closed(Closed::FirstRequestTimeout), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_pending_connection_makes_room() {
        let stats = Arc::new(ConnStats::default());
        let adm = Admission::new(limits(2, 8), Arc::clone(&stats));
        let a = adm.accept();
        let b = adm.accept();
        let c = adm.accept(); // evicts a
        assert_eq!(a.watchdog().await, Closed::Evicted);
        a.finish(Some(Closed::Evicted));
        // b and c are still pending; c starts a request and is admitted.
        let g = c.begin();
        assert!(g.is_ok());
        drop(g);
        assert_eq!(stats.pending(), 1);
        assert_eq!(stats.serving(), 1);
        b.finish(None);
        c.finish(None);
        assert_eq!(stats.pending(), 0);
        assert_eq!(stats.serving(), 0);
        assert_eq!(stats.closed(Closed::Evicted), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_serving_limit_counts_only_connections_with_requests() {
        let stats = Arc::new(ConnStats::default());
        let adm = Admission::new(limits(64, 1), Arc::clone(&stats));
        let silent: Vec<_> = (0..10).map(|_| adm.accept()).collect();
        let a = adm.accept();
        assert!(a.begin().is_ok(), "silent sockets hold no serving slot");
        let b = adm.accept();
        assert_eq!(b.begin().err(), Some(Closed::Refused));
        assert_eq!(b.watchdog().await, Closed::Refused);
        b.finish(Some(Closed::Refused));
        a.finish(None);
        let c = adm.accept();
        assert!(c.begin().is_ok(), "a finished connection frees its slot");
        for s in silent {
            s.finish(None);
        }
        c.finish(None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
        let stats = Arc::new(ConnStats::default());
        let adm = Admission::new(limits(8, 8), Arc::clone(&stats));
        let c = adm.accept();
        let start = Instant::now();
        {
            let _g = c.begin();
            // A long request in flight: the watchdog must not fire while it runs.
            tokio::select! {
                _ = c.watchdog() => panic!("closed while busy"),
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        let r = c.watchdog().await;
        assert_eq!(r, Closed::IdleTimeout);
        assert!(start.elapsed() >= Duration::from_millis(2300));
        c.finish(Some(r));
        assert_eq!(stats.serving(), 0);
    }
}
