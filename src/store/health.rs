//! Store health (for `/readyz`) and rate-limited logging of repeated store failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::StoreError;

/// What [`super::Store::health`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StoreHealth {
    Ok,
    /// The last write or read failed (and none of its class succeeded since).
    Degraded {
        /// The last error, as logged.
        error: String,
        /// Failures since the store was last healthy.
        failures: u64,
    },
}

impl StoreHealth {
    pub fn is_ok(&self) -> bool {
        matches!(self, StoreHealth::Ok)
    }
}

/// Operation classes tracked apart: a working read does not hide a failing write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Write,
    Read,
}

#[derive(Default)]
struct State {
    write: Option<String>,
    read: Option<String>,
    failures: u64,
}

/// Health of one store instance plus the log limiter of its failures.
#[derive(Default)]
pub(crate) struct Health {
    state: Mutex<State>,
    log: LogLimiter,
}

impl Health {
    pub(crate) fn get(&self) -> StoreHealth {
        let Ok(s) = self.state.lock() else {
            return StoreHealth::Degraded {
                error: "store health unknown".into(),
                failures: 0,
            };
        };
        match s.write.as_ref().or(s.read.as_ref()) {
            None => StoreHealth::Ok,
            Some(e) => StoreHealth::Degraded {
                error: e.clone(),
                failures: s.failures,
            },
        }
    }

    /// An operation of class `op` succeeded.
    pub(crate) fn ok(&self, op: Op) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let slot = match op {
            Op::Write => &mut s.write,
            Op::Read => &mut s.read,
        };
        if slot.take().is_some() {
            let failures = s.failures;
            if s.write.is_none() && s.read.is_none() {
                s.failures = 0;
                tracing::warn!(failures, "store healthy again");
            }
        }
    }

    /// An operation of class `op` failed with `e`; conflicts and invalid input are the caller's
    /// business and change nothing. Logs at ERROR, at most once a second per `cause`.
    pub(crate) fn fail(&self, op: Op, cause: &'static str, e: &StoreError) {
        if matches!(e, StoreError::Conflict { .. } | StoreError::Invalid(_)) {
            return;
        }
        let message = e.to_string();
        if let Ok(mut s) = self.state.lock() {
            s.failures += 1;
            match op {
                Op::Write => s.write = Some(message.clone()),
                Op::Read => s.read = Some(message.clone()),
            }
        }
        if let Some(suppressed) = self.log.allow(cause) {
            tracing::error!(cause, error = %message, suppressed, "store failure");
        }
    }
}

/// At most one line per second per cause; the line carries how many were suppressed before it.
#[derive(Default)]
pub(crate) struct LogLimiter {
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

const LOG_INTERVAL: Duration = Duration::from_secs(1);

impl LogLimiter {
    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub(crate) fn allow(&self, cause: &'static str) -> Option<u64> {
        let Ok(mut last) = self.last.lock() else {
            return Some(0);
        };
        let now = Instant::now();
        match last.get_mut(cause) {
            Some((at, suppressed)) if now.duration_since(*at) < LOG_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                *at = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                last.insert(cause, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_most_once_a_second_per_cause() {
        let l = LogLimiter::default();
        assert_eq!(l.allow("a"), Some(0));
        assert_eq!(l.allow("a"), None);
        assert_eq!(l.allow("a"), None);
        assert_eq!(l.allow("b"), Some(0));
        if let Ok(mut m) = l.last.lock() {
            if let Some(e) = m.get_mut("a") {
                e.0 -= LOG_INTERVAL;
            }
        }
        assert_eq!(l.allow("a"), Some(2));
        assert_eq!(l.allow("a"), None);
    }

    #[test]
    fn health_tracks_writes_and_reads_apart() {
        let h = Health::default();
        assert!(h.get().is_ok());
        let e = StoreError::Unavailable("disk full".into());
        h.fail(Op::Write, "write", &e);
        h.fail(Op::Read, "read", &e);
        h.fail(Op::Write, "write", &StoreError::Invalid("x".into()));
        assert_eq!(
            h.get(),
            StoreHealth::Degraded {
                error: "store unavailable: disk full".into(),
                failures: 2
            }
        );
        h.ok(Op::Read);
        assert!(!h.get().is_ok());
        h.ok(Op::Write);
        assert!(h.get().is_ok());
    }
}
