//! How many upload sessions each client address has open, so one client
//! cannot open sessions without end. In memory and bounded: an entry lives
//! as long as its session (finished, cancelled, or expired as idle).

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub struct UploadSlots {
    /// Most sessions per address; 0: no limit (nothing is tracked).
    max: usize,
    /// Open sessions per client address.
    per_client: DashMap<IpAddr, usize>,
    /// Session id -> the address that opened it, and when it was last used.
    sessions: DashMap<String, (IpAddr, Instant)>,
}

impl UploadSlots {
    pub fn new(max: usize) -> UploadSlots {
        UploadSlots {
            max,
            per_client: DashMap::new(),
            sessions: DashMap::new(),
        }
    }

    /// Take a slot for a new session of `client`; `false` if it has the
    /// most it may have. A taken slot must be [`bind`](Self::bind)ed to the
    /// session or [`give_back`](Self::give_back).
    pub fn take(&self, client: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut n = self.per_client.entry(client).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// Return a slot taken for a session that was not created.
    pub fn give_back(&self, client: IpAddr) {
        if self.max == 0 {
            return;
        }
        self.per_client.remove_if_mut(&client, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    /// The session `id` holds the slot taken for `client`.
    pub fn bind(&self, id: &str, client: IpAddr) {
        if self.max > 0 {
            self.sessions
                .insert(id.to_owned(), (client, Instant::now()));
        }
    }

    /// The session was used: it is not idle.
    pub fn touch(&self, id: &str) {
        if let Some(mut e) = self.sessions.get_mut(id) {
            e.1 = Instant::now();
        }
    }

    /// The session is gone (finished, cancelled or unknown): free its slot.
    pub fn release(&self, id: &str) {
        if let Some((_, (client, _))) = self.sessions.remove(id) {
            self.give_back(client);
        }
    }

    /// Free the slots of sessions unused for `max_age` (the store expires
    /// them after the same time).
    pub fn expire(&self, max_age: Duration) {
        let now = Instant::now();
        let mut stale = Vec::new();
        self.sessions.retain(|_, (client, used)| {
            let keep = now.duration_since(*used) < max_age;
            if !keep {
                stale.push(*client);
            }
            keep
        });
        for client in stale {
            self.give_back(client);
        }
    }

    /// Sessions `client` holds now.
    #[cfg(test)]
    fn held(&self, client: IpAddr) -> usize {
        self.per_client.get(&client).map_or(0, |n| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_client_and_come_back() {
        let s = UploadSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(s.take(a));
        s.bind("one", a);
        assert!(s.take(a));
        s.bind("two", a);
        assert!(!s.take(a));
        assert!(s.take(b));
        s.give_back(b);
        assert_eq!(s.held(b), 0);
        s.release("one");
        s.release("one");
        assert_eq!(s.held(a), 1);
        assert!(s.take(a));
        s.bind("three", a);
        s.expire(Duration::ZERO);
        assert_eq!(s.held(a), 0);
        assert!(s.per_client.is_empty() && s.sessions.is_empty());
    }

    #[test]
    fn zero_means_no_limit() {
        let s = UploadSlots::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..1000 {
            assert!(s.take(a));
            s.bind(&i.to_string(), a);
        }
        assert!(s.sessions.is_empty());
    }
}
