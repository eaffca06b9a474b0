//! Deterministic blob content, generated on the fly without copying.
//!
//! A blob of seed `s` is a sequence of 1 MiB blocks; block `b` is a window
//! of a 17 MiB pool of pseudo-random bytes (filled from `s`) at an offset
//! derived from `(s, b)`. Every frame handed to the HTTP client is a
//! zero-copy `Bytes` slice of the pool, so generating costs the client
//! next to nothing and nothing but the pool is held in memory.
//!
//! The digest of a (seed, size) is computed once by walking the same frames
//! through SHA-256 and cached in `<cache-dir>/digests.tsv`.

use anyhow::{Context, Result};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

pub const BLOCK: u64 = 1 << 20;
const POOL_BLOCKS: u64 = 16;

pub fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `seed` mixed with `salt` (0: `seed` itself), for content that differs
/// from one run to another.
pub fn salted(seed: u64, salt: u64) -> u64 {
    if salt == 0 {
        return seed;
    }
    let mut s = salt;
    seed ^ splitmix(&mut s)
}

/// `len` pseudo-random bytes from `seed` (for small blobs).
pub fn random_bytes(seed: u64, len: usize) -> Bytes {
    let mut s = seed ^ 0xA5A5_5A5A_0F0F_F0F0;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

#[derive(Clone)]
pub struct Pattern {
    pool: Bytes,
    seed: u64,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        let n = ((POOL_BLOCKS + 1) * BLOCK) as usize;
        Pattern {
            pool: random_bytes(seed, n),
            seed,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn block_offset(&self, block: u64) -> u64 {
        let mut s = self.seed.rotate_left(17) ^ block.wrapping_mul(0x2545_F491_4F6C_DD1D);
        splitmix(&mut s) % (POOL_BLOCKS * BLOCK)
    }

    /// The blob's bytes from `pos`, at most `max` of them, not crossing a
    /// block boundary.
    pub fn piece(&self, pos: u64, max: u64) -> Bytes {
        let within = pos % BLOCK;
        let n = (BLOCK - within).min(max);
        let o = self.block_offset(pos / BLOCK) + within;
        self.pool.slice(o as usize..(o + n) as usize)
    }

    /// Frames for the byte range `[start, end)` of the blob.
    pub fn range(&self, start: u64, end: u64) -> GenBody {
        GenBody {
            pat: self.clone(),
            pos: start,
            end,
        }
    }

    /// Does `data`, found at `pos` of the blob, match?
    pub fn matches(&self, pos: u64, data: &[u8]) -> bool {
        let mut off = 0usize;
        while off < data.len() {
            let p = self.piece(pos + off as u64, (data.len() - off) as u64);
            if p[..] != data[off..off + p.len()] {
                return false;
            }
            off += p.len();
        }
        true
    }
}

pub struct GenBody {
    pat: Pattern,
    pos: u64,
    end: u64,
}

impl GenBody {
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }
}

impl Iterator for GenBody {
    type Item = Bytes;
    fn next(&mut self) -> Option<Bytes> {
        if self.pos >= self.end {
            return None;
        }
        let p = self.pat.piece(self.pos, self.end - self.pos);
        self.pos += p.len() as u64;
        Some(p)
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The digest of blob (pattern, size), from the cache or computed (and
/// cached). Returns the digest and the seconds spent computing it (0 when
/// cached).
pub fn digest_of(cache_dir: &Path, pat: &Pattern, size: u64) -> Result<(String, f64)> {
    let file = cache_dir.join("digests.tsv");
    let key = format!("v1\t{}\t{}\t", pat.seed(), size);
    if let Ok(text) = std::fs::read_to_string(&file) {
        for line in text.lines() {
            if let Some(d) = line.strip_prefix(&key) {
                return Ok((d.to_string(), 0.0));
            }
        }
    }
    let t = Instant::now();
    let mut h = Sha256::new();
    for frame in pat.range(0, size) {
        h.update(&frame);
    }
    let d = format!("sha256:{}", hex::encode(h.finalize()));
    let secs = t.elapsed().as_secs_f64();
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)?;
    writeln!(f, "{key}{d}")?;
    Ok((d, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_deterministic_and_cover_the_range() {
        let p = Pattern::new(7);
        let a: Vec<Bytes> = p.range(100, 3 * BLOCK + 5).collect();
        let total: usize = a.iter().map(|b| b.len()).sum();
        assert_eq!(total as u64, 3 * BLOCK + 5 - 100);
        let q = Pattern::new(7);
        let b: Vec<Bytes> = q.range(100, 3 * BLOCK + 5).collect();
        assert_eq!(a, b);
        let joined: Vec<u8> = a.concat();
        assert!(p.matches(100, &joined));
        assert!(!Pattern::new(8).matches(100, &joined));
    }
}
