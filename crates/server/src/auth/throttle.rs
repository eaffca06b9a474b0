//! Failed-login throttling per client address: after `max_failures` failed
//! logins within `window`, further attempts with credentials from that
//! address get 429 until the window (counted from the first failure) ends.
//! Memory is bounded: at most [`MAX_TRACKED`] addresses are tracked.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const MAX_TRACKED: usize = 10_000;

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    failures: DashMap<IpAddr, (u32, Instant)>,
}

impl Throttle {
    pub fn new(max_failures: u32, window: Duration) -> Throttle {
        Throttle {
            max_failures,
            window,
            failures: DashMap::new(),
        }
    }

    /// `Err(seconds to wait)` if `ip` has failed too often.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let Some(entry) = self.failures.get(&ip) else {
            return Ok(());
        };
        let (count, since) = *entry;
        drop(entry);
        let elapsed = since.elapsed();
        if elapsed >= self.window {
            self.failures
                .remove_if(&ip, |_, (_, s)| s.elapsed() >= self.window);
            return Ok(());
        }
        if count >= self.max_failures {
            return Err((self.window - elapsed).as_secs().max(1));
        }
        Ok(())
    }

    /// Count a failed login from `ip`.
    pub fn failure(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        if !self.failures.contains_key(&ip) && self.failures.len() >= MAX_TRACKED {
            self.failures
                .retain(|_, (_, since)| since.elapsed() < self.window);
            if self.failures.len() >= MAX_TRACKED {
                tracing::warn!("failed-login table full: not tracking another address");
                return;
            }
        }
        let mut e = self.failures.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        e.0 = e.0.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures() {
        let t = Throttle::new(3, Duration::from_secs(3600));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check(a).is_ok());
            t.failure(a);
        }
        let wait = t.check(a).unwrap_err();
        assert!(wait > 0 && wait <= 3600);
        assert!(t.check(b).is_ok());
        // an expired window forgets
        let t = Throttle::new(1, Duration::ZERO);
        t.failure(a);
        assert!(t.check(a).is_ok());
        // off
        let t = Throttle::new(0, Duration::from_secs(60));
        t.failure(a);
        assert!(t.check(a).is_ok());
    }

    #[test]
    fn bounded() {
        let t = Throttle::new(5, Duration::from_secs(3600));
        for i in 0..(MAX_TRACKED as u32 + 10) {
            t.failure(IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.failures.len() <= MAX_TRACKED);
    }
}
