//! Failed-login throttling per client address: after `max_failures` failed
//! logins within `window` (counted from the first), further attempts with
//! credentials from that address get 429 until the window ends.
//!
//! Each attempt is counted as a failure *before* the password is checked
//! and forgiven if it was right, so a burst of concurrent guesses cannot
//! slip past the limit while the (slow) checks run. Memory is bounded: at
//! most [`MAX_TRACKED`] addresses are tracked.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const MAX_TRACKED: usize = 10_000;

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    /// address → (failures, including attempts in flight; window start)
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

    /// Start a login attempt from `ip`: `Err(seconds to wait)` if it has
    /// failed too often, else the attempt counts as a failure until
    /// [`Throttle::succeeded`] says otherwise.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), u64> {
        if self.max_failures == 0 {
            return Ok(());
        }
        if !self.failures.contains_key(&ip) && self.failures.len() >= MAX_TRACKED {
            self.failures
                .retain(|_, (_, since)| since.elapsed() < self.window);
            if self.failures.len() >= MAX_TRACKED {
                tracing::warn!("failed-login table full: not tracking another address");
                return Ok(());
            }
        }
        let mut e = self.failures.entry(ip).or_insert((0, Instant::now()));
        let elapsed = e.1.elapsed();
        if elapsed >= self.window {
            *e = (0, Instant::now());
        } else if e.0 >= self.max_failures {
            return Err((self.window - elapsed).as_secs().max(1));
        }
        e.0 = e.0.saturating_add(1);
        Ok(())
    }

    /// The attempt from `ip` had the right credentials: not a failure.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Some(mut e) = self.failures.get_mut(&ip) {
            e.0 = e.0.saturating_sub(1);
        }
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
        // successes do not count
        for _ in 0..10 {
            t.attempt(a).unwrap();
            t.succeeded(a);
        }
        for _ in 0..3 {
            assert!(t.attempt(a).is_ok());
        }
        let wait = t.attempt(a).unwrap_err();
        assert!(wait > 0 && wait <= 3600);
        assert!(t.attempt(b).is_ok());
        // an expired window forgets
        let t = Throttle::new(1, Duration::ZERO);
        t.attempt(a).unwrap();
        assert!(t.attempt(a).is_ok());
        // off
        let t = Throttle::new(0, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(t.attempt(a).is_ok());
        }
    }

    #[test]
    fn attempts_in_flight_count() {
        // Three guesses started at once: the fourth is refused before any
        // of them has finished.
        let t = Throttle::new(3, Duration::from_secs(3600));
        let a: IpAddr = "10.0.0.3".parse().unwrap();
        for _ in 0..3 {
            t.attempt(a).unwrap();
        }
        assert!(t.attempt(a).is_err());
    }

    #[test]
    fn bounded() {
        let t = Throttle::new(5, Duration::from_secs(3600));
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let _ = t.attempt(IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.failures.len() <= MAX_TRACKED);
    }
}
