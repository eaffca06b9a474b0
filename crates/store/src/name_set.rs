//! A sorted set of short strings packed into blocks of bytes.
//!
//! The filesystem backend keeps the sorted entries of listed directories in
//! memory (see `fs::DirIndex`). A `BTreeSet<String>` costs about 70 bytes per
//! entry (the `String`, its heap block, the tree node); 100,000 tags took
//! 7 MB. Here an entry costs its bytes plus a 2-byte length: entries live
//! back to back, in order, in blocks of at most [`BLOCK_MAX`] entries, and the
//! blocks are kept in order. Lookups binary-search the blocks by their first
//! entry and walk one block; inserts and removals move at most one block's
//! bytes.

use std::cmp::Ordering;

/// Most entries in one block (a block is split in two when it grows past).
const BLOCK_MAX: usize = 128;

#[derive(Default)]
pub(crate) struct NameSet {
    blocks: Vec<Block>,
}

/// Entries in order, each a little-endian `u16` length and then its bytes.
#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    count: usize,
}

impl Block {
    /// The entries with their byte offsets.
    fn entries(&self) -> Entries<'_> {
        Entries {
            bytes: &self.bytes,
            at: 0,
        }
    }

    fn first(&self) -> Option<&str> {
        self.entries().next().map(|(_, s)| s)
    }

    /// Where `name` is or would go: (byte offset, found).
    fn position(&self, name: &str) -> (usize, bool) {
        for (at, entry) in self.entries() {
            match entry.cmp(name) {
                Ordering::Less => {}
                Ordering::Equal => return (at, true),
                Ordering::Greater => return (at, false),
            }
        }
        (self.bytes.len(), false)
    }
}

struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Entries<'a> {
    /// (byte offset of the entry, the entry)
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.at;
        let len_bytes = self.bytes.get(start..start + 2)?;
        let len = u16::from_le_bytes([len_bytes[0], len_bytes[1]]) as usize;
        let text = self.bytes.get(start + 2..start + 2 + len)?;
        self.at = start + 2 + len;
        // Only whole `&str`s are ever written, so this cannot fail.
        std::str::from_utf8(text).ok().map(|s| (start, s))
    }
}

impl NameSet {
    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.blocks.iter().map(|b| b.count).sum()
    }

    /// The block `name` belongs in: the last whose first entry is ≤ `name`
    /// (or the first block).
    fn block_for(&self, name: &str) -> usize {
        self.blocks
            .partition_point(|b| b.first().is_some_and(|f| f <= name))
            .saturating_sub(1)
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        match self.blocks.get(self.block_for(name)) {
            Some(b) => b.position(name).1,
            None => false,
        }
    }

    /// Add `name`; false if it was there. Names longer than 65,535 bytes
    /// (never a file name) are not stored.
    pub(crate) fn insert(&mut self, name: &str) -> bool {
        let Ok(len) = u16::try_from(name.len()) else {
            return false;
        };
        if self.blocks.is_empty() {
            self.blocks.push(Block::default());
        }
        let i = self.block_for(name);
        let block = &mut self.blocks[i];
        let (at, found) = block.position(name);
        if found {
            return false;
        }
        block
            .bytes
            .splice(at..at, len.to_le_bytes().into_iter().chain(name.bytes()));
        block.count += 1;
        if block.count > BLOCK_MAX {
            let (mid, _) = block.entries().nth(block.count / 2).unwrap_or_default();
            let tail = Block {
                bytes: block.bytes.split_off(mid),
                count: block.count - block.count / 2,
            };
            block.count /= 2;
            block.bytes.shrink_to_fit();
            self.blocks.insert(i + 1, tail);
        }
        true
    }

    /// Remove `name`; false if it was not there.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        let i = self.block_for(name);
        let Some(block) = self.blocks.get_mut(i) else {
            return false;
        };
        let (at, found) = block.position(name);
        if !found {
            return false;
        }
        block.bytes.drain(at..at + 2 + name.len());
        block.count -= 1;
        if block.count == 0 {
            self.blocks.remove(i);
        }
        true
    }

    /// Up to `n` entries after `after` (from the start without it), in order.
    pub(crate) fn page(&self, after: Option<&str>, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n.min(1024));
        let first = after.map_or(0, |a| self.block_for(a));
        for block in self.blocks.iter().skip(first) {
            for (_, entry) in block.entries() {
                if out.len() >= n {
                    return out;
                }
                if after.is_none_or(|a| entry > a) {
                    out.push(entry.to_owned());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn basics() {
        let mut s = NameSet::default();
        assert!(s.page(None, 10).is_empty());
        assert!(!s.contains("a"));
        assert!(!s.remove("a"));
        assert!(s.insert("b"));
        assert!(s.insert("a/"));
        assert!(!s.insert("b"));
        assert!(s.insert(""));
        assert_eq!(s.page(None, 10), ["", "a/", "b"]);
        assert_eq!(s.page(Some("a"), 10), ["a/", "b"]);
        assert_eq!(s.page(Some("b"), 10), Vec::<String>::new());
        assert!(s.remove("a/"));
        assert!(!s.contains("a/"));
        assert_eq!(s.page(None, 1), [""]);
    }

    #[test]
    fn many_entries_split_into_blocks() {
        let mut s = NameSet::default();
        for i in (0..10_000).rev() {
            assert!(s.insert(&format!("tag-{i:05}")));
        }
        assert!(s.blocks.len() > 10_000 / BLOCK_MAX);
        assert!(s.blocks.iter().all(|b| b.count <= BLOCK_MAX));
        assert_eq!(s.page(Some("tag-04999"), 2), ["tag-05000", "tag-05001"]);
        for i in 0..10_000 {
            assert!(s.remove(&format!("tag-{i:05}")));
        }
        assert!(s.blocks.is_empty());
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(
            ops in proptest::collection::vec((any::<bool>(), "[a-d]{0,3}/?"), 0..600),
            after in proptest::option::of("[a-d]{0,3}"),
            n in 0usize..50,
        ) {
            let mut s = NameSet::default();
            let mut model = BTreeSet::new();
            for (add, name) in &ops {
                if *add {
                    prop_assert_eq!(s.insert(name), model.insert(name.clone()));
                } else {
                    prop_assert_eq!(s.remove(name), model.remove(name));
                }
            }
            for name in &model {
                prop_assert!(s.contains(name));
            }
            let expect: Vec<String> = model
                .iter()
                .filter(|e| after.as_ref().is_none_or(|a| *e > a))
                .take(n)
                .cloned()
                .collect();
            prop_assert_eq!(s.page(after.as_deref(), n), expect);
        }
    }
}
