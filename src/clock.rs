//! Time: wall-clock unix seconds, and the [`Clock`] every decision and admin write reads.
//!
//! A leaf module: it imports nothing from the crate, so the model, the plugin runtime, the
//! snapshot builder and the servers can all take the time from one place.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A clock read on the hot path without a syscall: a background thread refreshes it.
/// Tests use [`Clock::fixed`] and [`Clock::set`] to control every time-dependent answer, admin
/// writes included.
#[derive(Clone)]
pub struct Clock(Arc<AtomicI64>);

impl Clock {
    /// A clock that is refreshed by a background thread every 100 ms.
    pub fn ticking() -> Clock {
        let c = Clock::fixed(unix_now());
        let weak = Arc::downgrade(&c.0);
        std::thread::Builder::new()
            .name("portcullis-clock".into())
            .spawn(move || {
                while let Some(cell) = weak.upgrade() {
                    cell.store(unix_now(), Ordering::Relaxed);
                    drop(cell);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        c
    }

    /// A clock stuck at `t` (tests).
    pub fn fixed(t: i64) -> Clock {
        Clock(Arc::new(AtomicI64::new(t)))
    }

    pub fn set(&self, t: i64) {
        self.0.store(t, Ordering::Relaxed);
    }

    #[inline]
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}
