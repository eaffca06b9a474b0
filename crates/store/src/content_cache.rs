//! A small cache of content-addressed bytes (manifest bodies), bounded in
//! bytes.
//!
//! The key is the digest of the value, so an entry can never be stale: the
//! caller still checks that the content is linked into the repository being
//! asked, and only the read of the content itself is saved. A manifest GET
//! otherwise opens and reads three small files; this saves one of them for
//! the manifests pulled most.

use bytes::Bytes;
use dashmap::DashMap;
use oci::Digest;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct ContentCache {
    map: DashMap<Digest, Bytes>,
    /// Bytes held (approximately, under concurrent inserts).
    held: AtomicUsize,
    max_total: usize,
    max_entry: usize,
}

impl ContentCache {
    pub(crate) fn new(max_total: usize, max_entry: usize) -> ContentCache {
        ContentCache {
            map: DashMap::new(),
            held: AtomicUsize::new(0),
            max_total,
            max_entry,
        }
    }

    pub(crate) fn get(&self, d: &Digest) -> Option<Bytes> {
        self.map.get(d).map(|e| e.value().clone())
    }

    /// Remember `data`, which must be the content of `d`.
    pub(crate) fn insert(&self, d: &Digest, data: &Bytes) {
        if data.len() > self.max_entry || self.map.contains_key(d) {
            return;
        }
        if self.held.load(Ordering::Relaxed) + data.len() > self.max_total {
            // Full: start again rather than track recency on every hit;
            // the manifests in use come back on their next read.
            self.map.clear();
            self.held.store(0, Ordering::Relaxed);
        }
        // Own the bytes: a slice of a larger buffer would keep all of it.
        if self
            .map
            .insert(d.clone(), Bytes::copy_from_slice(data))
            .is_none()
        {
            self.held.fetch_add(data.len(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keyed_by_content() {
        let c = ContentCache::new(100, 40);
        let blob = |n: u8| Bytes::from(vec![n; 30]);
        let d = |b: &Bytes| Digest::sha256_of(b);
        let (a, b, big) = (blob(1), blob(2), Bytes::from(vec![3; 41]));
        c.insert(&d(&a), &a);
        c.insert(&d(&b), &b);
        assert_eq!(c.get(&d(&a)), Some(a.clone()));
        assert_eq!(c.get(&d(&b)), Some(b.clone()));
        // Too big for an entry: not kept.
        c.insert(&d(&big), &big);
        assert_eq!(c.get(&d(&big)), None);
        // Past the total, the cache starts again; it never holds more.
        for n in 10..20 {
            let x = blob(n);
            c.insert(&d(&x), &x);
            assert!(c.held.load(Ordering::Relaxed) <= 100);
            assert_eq!(c.get(&d(&x)), Some(x));
        }
    }
}
