//! How many upload sessions each owner has open, and all owners together,
//! so nobody can open sessions without end (each one holds files in the
//! data directory until it ends or expires).
//!
//! The owner is the authenticated user when there is one, else the client
//! address (an IPv6 client by its /64, see [`client_group`]). A slot is
//! taken when a session is opened and given back only when the store says
//! the session ended — committed, cancelled, failed by a digest mismatch,
//! expired, vanished, or never created (the [`SessionObserver`]). No
//! request path frees or keeps a slot itself, so a request naming a live
//! session under another repository (404) frees nothing, and a failed
//! closing PUT (the session is over) keeps nothing.
//!
//! In memory and bounded by the total limit: one entry per open session
//! and per owner with open sessions. Sessions that survived a restart are
//! not counted (they still expire).

use crate::conn::client_group;
use dashmap::DashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use store::{SessionEnd, SessionObserver};

/// Whose upload sessions are counted together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An authenticated user, wherever it connects from.
    User(String),
    /// An anonymous client: its address group.
    Client(IpAddr),
}

impl Owner {
    pub fn user(name: &str) -> Owner {
        Owner::User(name.to_owned())
    }

    pub fn client(ip: IpAddr) -> Owner {
        Owner::Client(client_group(ip))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::User(name) => write!(f, "user:{name}"),
            Owner::Client(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a session may not be opened now.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The owner has this many sessions open.
    Owner(usize),
    /// All owners together have this many sessions open.
    Total(usize),
}

pub struct UploadSlots {
    /// Most sessions per owner; 0: no limit.
    per_owner_max: usize,
    /// Most sessions in all; 0: no limit.
    total_max: usize,
    /// Open sessions per owner (owners with none have no entry).
    per_owner: DashMap<Owner, usize>,
    /// Session id -> its owner.
    sessions: DashMap<String, Owner>,
    /// Open sessions in all.
    total: AtomicUsize,
}

/// A slot taken for a session being opened. [`bind`](Self::bind) it to the
/// session's id before the session exists; dropped unbound, it is given
/// back.
pub struct Reservation<'a> {
    slots: &'a UploadSlots,
    owner: Option<Owner>,
}

impl Reservation<'_> {
    /// The session `id` holds this slot until the store reports its end.
    pub fn bind(mut self, id: &str) {
        if let Some(owner) = self.owner.take() {
            self.slots.sessions.insert(id.to_owned(), owner);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            self.slots.give_back(&owner);
        }
    }
}

impl UploadSlots {
    pub fn new(per_owner_max: usize, total_max: usize) -> UploadSlots {
        UploadSlots {
            per_owner_max,
            total_max,
            per_owner: DashMap::new(),
            sessions: DashMap::new(),
            total: AtomicUsize::new(0),
        }
    }

    /// Take a slot for a new session of `owner`, unless it or everybody
    /// has the most sessions allowed open already.
    pub fn take(&self, owner: &Owner) -> Result<Reservation<'_>, Refused> {
        if self.per_owner_max == 0 && self.total_max == 0 {
            return Ok(Reservation {
                slots: self,
                owner: None,
            });
        }
        let max = self.total_max;
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then(|| n.saturating_add(1))
            })
            .map_err(|_| Refused::Total(max))?;
        let mut n = self.per_owner.entry(owner.clone()).or_insert(0);
        if self.per_owner_max > 0 && *n >= self.per_owner_max {
            // `n` > 0 here: no empty entry is left behind.
            drop(n);
            self.total_sub();
            return Err(Refused::Owner(self.per_owner_max));
        }
        *n = n.saturating_add(1);
        Ok(Reservation {
            slots: self,
            owner: Some(owner.clone()),
        })
    }

    fn total_sub(&self) {
        let _ = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    fn give_back(&self, owner: &Owner) {
        self.per_owner.remove_if_mut(owner, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
        self.total_sub();
    }

    /// The session `id` ended: free its slot (nothing if it held none).
    pub fn release(&self, id: &str) {
        if let Some((_, owner)) = self.sessions.remove(id) {
            self.give_back(&owner);
        }
    }

    /// Sessions open now, all owners together (0 when no limit is set:
    /// nothing is counted then).
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Sessions `owner` holds now.
    #[cfg(test)]
    fn held(&self, owner: &Owner) -> usize {
        self.per_owner.get(owner).map_or(0, |n| *n)
    }
}

/// The store reports every session's end here, and only that frees a slot.
impl SessionObserver for UploadSlots {
    fn ended(&self, id: &str, _how: SessionEnd) {
        self.release(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(s: &str) -> Owner {
        Owner::client(s.parse().unwrap())
    }

    #[test]
    fn slots_are_per_owner_and_come_back_when_sessions_end() {
        let s = UploadSlots::new(2, 0);
        let a = client("10.0.0.1");
        let b = client("10.0.0.2");
        s.take(&a).unwrap().bind("one");
        s.take(&a).unwrap().bind("two");
        assert_eq!(s.take(&a).err(), Some(Refused::Owner(2)));
        // Taken and dropped unbound (the session was not opened): given back.
        drop(s.take(&b).unwrap());
        assert_eq!(s.held(&b), 0);
        s.ended("one", SessionEnd::Committed);
        // Reported twice, or a session that held no slot: nothing more.
        s.ended("one", SessionEnd::Expired);
        s.ended("unknown", SessionEnd::Cancelled);
        assert_eq!(s.held(&a), 1);
        s.take(&a).unwrap().bind("three");
        s.ended("two", SessionEnd::DigestMismatch);
        s.ended("three", SessionEnd::NotCreated);
        assert_eq!(s.held(&a), 0);
        assert!(s.per_owner.is_empty() && s.sessions.is_empty());
        assert_eq!(s.total.load(Ordering::Acquire), 0);
    }

    #[test]
    fn users_and_addresses_are_counted_apart() {
        let s = UploadSlots::new(1, 0);
        let ip = client("127.0.0.1");
        s.take(&Owner::user("alice")).unwrap().bind("a");
        s.take(&Owner::user("bob")).unwrap().bind("b");
        s.take(&ip).unwrap().bind("c");
        assert!(s.take(&Owner::user("alice")).is_err());
        assert!(s.take(&ip).is_err());
        // One IPv6 /64 is one client.
        s.take(&client("2001:db8::1")).unwrap().bind("d");
        assert!(s.take(&client("2001:db8::2:3")).is_err());
        s.take(&client("2001:db8:0:1::1")).unwrap().bind("e");
        assert_eq!(Owner::user("alice").to_string(), "user:alice");
        assert_eq!(client("2001:db8::1").to_string(), "2001:db8::");
    }

    #[test]
    fn total_limit_counts_everybody() {
        let s = UploadSlots::new(10, 3);
        s.take(&client("10.0.0.1")).unwrap().bind("a");
        s.take(&client("10.0.0.2")).unwrap().bind("b");
        s.take(&Owner::user("u")).unwrap().bind("c");
        assert_eq!(s.take(&client("10.0.0.3")).err(), Some(Refused::Total(3)));
        // A refusal leaves no empty entry behind.
        assert!(!s.per_owner.contains_key(&client("10.0.0.3")));
        s.ended("b", SessionEnd::Cancelled);
        s.take(&client("10.0.0.3")).unwrap().bind("d");
        // Refused by its own limit: the total is not charged.
        let t = UploadSlots::new(1, 2);
        t.take(&client("10.0.0.1")).unwrap().bind("a");
        assert_eq!(t.take(&client("10.0.0.1")).err(), Some(Refused::Owner(1)));
        t.take(&client("10.0.0.2")).unwrap().bind("b");
    }

    #[test]
    fn zero_means_no_limit() {
        let s = UploadSlots::new(0, 0);
        let a = client("10.0.0.1");
        for i in 0..1000 {
            s.take(&a).unwrap().bind(&i.to_string());
        }
        assert!(s.sessions.is_empty() && s.per_owner.is_empty());
        let s = UploadSlots::new(0, 5);
        for i in 0..5 {
            s.take(&a).unwrap().bind(&i.to_string());
        }
        assert!(s.take(&a).is_err());
    }
}
