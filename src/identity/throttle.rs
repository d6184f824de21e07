//! Sign-in throttling: failures are counted per account and per client address in a sliding
//! window; past the limit, further attempts are refused (429 with `Retry-After`) until the
//! oldest counted failure leaves the window. A success clears the account's count.
//!
//! Memory is bounded: at most `max_entries` keys are tracked; when full, entries whose window
//! has passed are dropped first, then the oldest.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Throttling limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures allowed per account within the window.
    pub per_account: u32,
    /// Failures allowed per client address within the window.
    pub per_client: u32,
    /// Window length, seconds.
    pub window_seconds: i64,
    /// Most keys tracked.
    pub max_entries: usize,
}

#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn account_key(tenant: &str, account: &str) -> String {
        format!("a\u{0}{tenant}\u{0}{}", account.to_lowercase())
    }

    fn client_key(client: &str) -> String {
        format!("c\u{0}{client}")
    }

    /// `Some(seconds to wait)` when the account or the client is over its limit at `now`.
    pub fn blocked(&self, tenant: &str, account: &str, client: &str, now: i64) -> Option<i64> {
        let Ok(mut map) = self.failures.lock() else {
            return Some(self.limits.window_seconds); // poisoned: fail closed
        };
        let keys = [
            (Self::account_key(tenant, account), self.limits.per_account),
            (Self::client_key(client), self.limits.per_client),
        ];
        let mut wait = None;
        for (key, limit) in keys {
            if let Some(q) = map.get_mut(&key) {
                while q
                    .front()
                    .is_some_and(|&t| t + self.limits.window_seconds <= now)
                {
                    q.pop_front();
                }
                if q.len() >= limit as usize {
                    let oldest = q.front().copied().unwrap_or(now);
                    let w = (oldest + self.limits.window_seconds - now).max(1);
                    wait = Some(wait.map_or(w, |x: i64| x.max(w)));
                }
            }
        }
        wait
    }

    /// Records a failed sign-in.
    pub fn failed(&self, tenant: &str, account: &str, client: &str, now: i64) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() + 2 > self.limits.max_entries {
            let window = self.limits.window_seconds;
            map.retain(|_, q| q.back().is_some_and(|&t| t + window > now));
            while map.len() + 2 > self.limits.max_entries {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied().unwrap_or(i64::MIN))
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => {
                        map.remove(&k);
                    }
                    None => break,
                }
            }
        }
        for key in [Self::account_key(tenant, account), Self::client_key(client)] {
            let q = map.entry(key).or_default();
            q.push_back(now);
            // Never more than the largest limit matters.
            let cap = self.limits.per_account.max(self.limits.per_client) as usize + 1;
            while q.len() > cap {
                q.pop_front();
            }
        }
    }

    /// Records a successful sign-in: the account's failures are forgotten.
    pub fn succeeded(&self, tenant: &str, account: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&Self::account_key(tenant, account));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_account: 3,
            per_client: 5,
            window_seconds: 60,
            max_entries: 100,
        }
    }

    #[test]
    fn accounts_and_clients_are_limited_in_a_window() {
        let t = Throttle::new(limits());
        for i in 0..3 {
            assert_eq!(t.blocked("t", "A@x", "1.2.3.4", 100 + i), None);
            t.failed("t", "a@x", "1.2.3.4", 100 + i);
        }
        assert_eq!(t.blocked("t", "a@x", "9.9.9.9", 103), Some(57));
        assert_eq!(t.blocked("u", "a@x", "9.9.9.9", 103), None, "per tenant");
        assert_eq!(t.blocked("t", "a@x", "9.9.9.9", 160), None, "window passed");
        for i in 0..2 {
            t.failed("t", &format!("other{i}"), "1.2.3.4", 110);
        }
        assert!(
            t.blocked("t", "fresh", "1.2.3.4", 111).is_some(),
            "client limit"
        );
        t.succeeded("t", "a@x");
        assert_eq!(t.blocked("t", "a@x", "5.5.5.5", 104), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let t = Throttle::new(Limits {
            max_entries: 10,
            ..limits()
        });
        for i in 0..1000 {
            t.failed("t", &format!("u{i}"), &format!("c{i}"), i);
        }
        assert!(t.failures.lock().unwrap().len() <= 10);
    }
}
