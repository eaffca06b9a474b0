//! Failed-login throttling per client: after `max_failures` failed logins
//! within `window` (counted from the first), further attempts with
//! credentials from that client get 429 until the window ends. A client is
//! an IPv4 address or an IPv6 /64 ([`client_group`]): whoever has one IPv6
//! address has the whole /64.
//!
//! Each attempt is counted as a failure *before* the password is checked
//! and forgiven if it was right, so a burst of concurrent guesses cannot
//! slip past the limit while the (slow) checks run.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] clients are tracked. When the
//! table is full, the client whose window started longest ago is forgotten
//! to make room, so throttling keeps working for everybody else. Entries
//! are kept in the order their windows started; finding the oldest, and
//! dropping entries whose window has ended, costs O(1) amortised per
//! attempt, never a scan of the table.

use crate::conn::client_group;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_TRACKED: usize = 10_000;

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<Table>,
}

struct Entry {
    /// Failures, including attempts in flight.
    failures: u32,
    /// When the window started.
    since: Instant,
    /// Which item of `Table::order` stands for this entry.
    seq: u64,
}

#[derive(Default)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    /// Clients in the order their windows started, each with the `seq` it
    /// had then. An item whose `seq` is not its entry's any more is stale
    /// (the window restarted and the client was queued again): skipped.
    order: VecDeque<(IpAddr, u64)>,
    next_seq: u64,
}

impl Table {
    /// Start a new window for `key` now, at the back of the order.
    fn start(&mut self, key: IpAddr, now: Instant) -> &mut Entry {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.order.push_back((key, seq));
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            since: now,
            seq,
        });
        *e = Entry {
            failures: 0,
            since: now,
            seq,
        };
        e
    }

    /// Is the front of the order a live entry whose window started at
    /// `since`?
    fn front(&self) -> Option<(IpAddr, Option<Instant>)> {
        let &(key, seq) = self.order.front()?;
        let live = self.entries.get(&key).filter(|e| e.seq == seq);
        Some((key, live.map(|e| e.since)))
    }

    /// Forget the entry at the front of the order (and stale items before
    /// it) if `pred` holds for its window start. Returns whether one was.
    fn pop_front_if(&mut self, pred: impl Fn(Instant) -> bool) -> bool {
        while let Some((key, since)) = self.front() {
            match since {
                None => {
                    self.order.pop_front();
                }
                Some(since) if pred(since) => {
                    self.order.pop_front();
                    self.entries.remove(&key);
                    return true;
                }
                Some(_) => return false,
            }
        }
        false
    }

    /// Drop stale items when they outnumber live ones (amortised O(1)).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
    }
}

impl Throttle {
    pub fn new(max_failures: u32, window: Duration) -> Throttle {
        Throttle::with_capacity(max_failures, window, MAX_TRACKED)
    }

    fn with_capacity(max_failures: u32, window: Duration, capacity: usize) -> Throttle {
        Throttle {
            max_failures,
            window,
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table stays consistent between statements: a panic elsewhere
        // while it was held does not make it unusable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a login attempt from `ip`: `Err(seconds to wait)` if its client
    /// has failed too often, else the attempt counts as a failure until
    /// [`Throttle::succeeded`] says otherwise.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), u64> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let key = client_group(ip);
        let window = self.window;
        let mut t = self.table();
        // Read under the lock, so windows start in the order they are queued.
        let now = Instant::now();
        // Windows that have ended are at the front: forget them.
        while t.pop_front_if(|since| now.duration_since(since) >= window) {}
        let current = t
            .entries
            .get(&key)
            .filter(|e| now.duration_since(e.since) < window)
            .map(|e| (e.failures, e.since));
        let e = match current {
            Some((failures, since)) if failures >= self.max_failures => {
                let left = window.saturating_sub(now.duration_since(since));
                return Err(left.as_secs().max(1));
            }
            Some(_) => match t.entries.get_mut(&key) {
                Some(e) => e,
                None => return Ok(()),
            },
            None => {
                if !t.entries.contains_key(&key) {
                    // Full: the client tracked longest makes room.
                    while t.entries.len() >= self.capacity && t.pop_front_if(|_| true) {}
                }
                t.compact();
                t.start(key, now)
            }
        };
        e.failures = e.failures.saturating_add(1);
        Ok(())
    }

    /// The attempt from `ip` had the right credentials: not a failure.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Some(e) = self.table().entries.get_mut(&client_group(ip)) {
            e.failures = e.failures.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let t = self.table();
        (t.entries.len(), t.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_max_failures() {
        let t = Throttle::new(3, Duration::from_secs(3600));
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
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
        assert!(t.tracked().0 <= 1);
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
        let a = ip("10.0.0.3");
        for _ in 0..3 {
            t.attempt(a).unwrap();
        }
        assert!(t.attempt(a).is_err());
    }

    #[test]
    fn a_full_table_forgets_the_oldest_and_keeps_throttling() {
        let t = Throttle::new(2, Duration::from_secs(3600));
        let old = ip("192.0.2.1");
        t.attempt(old).unwrap();
        t.attempt(old).unwrap();
        assert!(t.attempt(old).is_err());
        // Fill the table (and more) with other clients.
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let _ = t.attempt(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        }
        let (entries, order) = t.tracked();
        assert!(entries <= MAX_TRACKED, "{entries} tracked");
        assert!(order <= 2 * MAX_TRACKED + 16, "{order} queued");
        // A client never seen before, arriving at a full table, is still
        // throttled.
        let new = ip("198.51.100.7");
        t.attempt(new).unwrap();
        t.attempt(new).unwrap();
        assert!(t.attempt(new).is_err(), "a full table stopped throttling");
        // The most recent clients are still tracked; the oldest made room.
        let recent = IpAddr::from((0x0a00_0000 + MAX_TRACKED as u32 + 9).to_be_bytes());
        t.attempt(recent).unwrap();
        assert!(t.attempt(recent).is_err());
        assert!(t.attempt(old).is_ok(), "the oldest entry was not evicted");
    }

    #[test]
    fn eviction_takes_the_oldest_window_first() {
        let t = Throttle::with_capacity(1, Duration::from_secs(3600), 3);
        let [a, b, c, d] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map(ip);
        for x in [a, b, c] {
            t.attempt(x).unwrap();
        }
        // d makes room by forgetting a, the oldest.
        t.attempt(d).unwrap();
        assert_eq!(t.tracked().0, 3);
        assert!(t.attempt(b).is_err());
        assert!(t.attempt(c).is_err());
        assert!(t.attempt(d).is_err());
        // a starts afresh (and b, now the oldest, makes room for it).
        t.attempt(a).unwrap();
        assert!(t.attempt(c).is_err());
        assert!(t.attempt(a).is_err());
        assert_eq!(t.tracked().0, 3);
    }

    #[test]
    fn many_refused_attempts_do_not_grow_the_queue() {
        let t = Throttle::with_capacity(1, Duration::ZERO, 4);
        // Every attempt restarts an ended window: stale items are dropped.
        for i in 0..10_000u32 {
            t.attempt(IpAddr::from((i % 8).to_be_bytes())).unwrap();
        }
        let (entries, order) = t.tracked();
        assert!(entries <= 4 && order <= 2 * 4 + 16, "{entries} {order}");
    }

    #[test]
    fn ipv6_is_throttled_per_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::new(2, Duration::from_secs(3600));
        // Each guess from another address of the same /64.
        t.attempt(ip("2001:db8:1:2::1")).unwrap();
        t.attempt(ip("2001:db8:1:2:aaaa::2")).unwrap();
        assert!(t.attempt(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).is_err());
        // The next /64 is another client.
        assert!(t.attempt(ip("2001:db8:1:3::1")).is_ok());
        // An IPv4 client is the same client over an IPv4-mapped address.
        t.attempt(ip("203.0.113.5")).unwrap();
        t.attempt(ip("::ffff:203.0.113.5")).unwrap();
        assert!(t.attempt(ip("203.0.113.5")).is_err());
        assert!(t.attempt(ip("203.0.113.6")).is_ok());
        // Success is forgiven for the whole group too.
        let t = Throttle::new(1, Duration::from_secs(3600));
        t.attempt(ip("2001:db8::1")).unwrap();
        t.succeeded(ip("2001:db8::2"));
        assert!(t.attempt(ip("2001:db8::3")).is_ok());
    }
}
