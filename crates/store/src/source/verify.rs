//! Hashing a source's blobs once, with the results remembered.
//!
//! Every blob a served manifest names is hashed (streaming) before it is
//! served. The results are kept in the data directory, keyed by the bytes'
//! place (file, offset, length) and the file's identity (device, inode,
//! size, modification time), so a restart does not hash again unless the
//! file changed.

use super::container::{Container, Loc};
use super::{FileId, SourceError};
use oci::{Algorithm, Digest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

/// Bumped when the meaning of a cache entry changes.
pub const CACHE_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheEntry {
    pub id: FileId,
    pub digest: Digest,
    /// The sha256 of the decompressed bytes (docker-save layers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed: Option<Digest>,
    #[serde(default)]
    pub gzip: bool,
}

/// What the data directory remembers about one source.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Cache {
    pub version: u32,
    pub source: String,
    pub entries: BTreeMap<String, CacheEntry>,
}

/// A blob whose bytes were hashed.
#[derive(Clone, Debug)]
pub struct Verified {
    pub loc: Loc,
    pub digest: Digest,
    pub uncompressed: Option<Digest>,
    pub gzip: bool,
}

/// Hashes blobs, reusing the old cache, and builds the new one (only the
/// entries this scan used, so the cache never grows without bound).
pub struct Verifier<'a> {
    old: &'a Cache,
    pub new: Cache,
    pub hashed_bytes: u64,
    pub reused: usize,
}

fn key(loc: &Loc) -> String {
    format!("{}@{}+{}", loc.file.display(), loc.offset, loc.len)
}

impl<'a> Verifier<'a> {
    pub fn new(old: &'a Cache, source: String) -> Verifier<'a> {
        Verifier {
            old,
            new: Cache {
                version: CACHE_VERSION,
                source,
                entries: BTreeMap::new(),
            },
            hashed_bytes: 0,
            reused: 0,
        }
    }

    /// The digest (with `alg`) of the member `name`, and with `decompress`
    /// also the sha256 of its decompressed bytes.
    pub fn hash(
        &mut self,
        c: &Container,
        name: &str,
        alg: Algorithm,
        decompress: bool,
    ) -> Result<Verified, SourceError> {
        let loc = c.locate(name)?;
        let k = key(&loc);
        // Entries of this scan, or of the last one (a cache of another
        // version was dropped when it was loaded).
        if let Some(e) = self
            .new
            .entries
            .get(&k)
            .or_else(|| self.old.entries.get(&k))
            && e.id == loc.id
            && e.digest.algorithm() == alg
            && (!decompress || e.uncompressed.is_some())
        {
            self.reused += 1;
            let v = Verified {
                loc,
                digest: e.digest.clone(),
                uncompressed: e.uncompressed.clone(),
                gzip: e.gzip,
            };
            self.new.entries.insert(k, e.clone());
            return Ok(v);
        }
        let v = hash_loc(c, name, loc, alg, decompress)?;
        self.hashed_bytes += v.loc.len;
        self.new.entries.insert(
            k,
            CacheEntry {
                id: v.loc.id,
                digest: v.digest.clone(),
                uncompressed: v.uncompressed.clone(),
                gzip: v.gzip,
            },
        );
        Ok(v)
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    digester: Option<oci::Digester>,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        if let Some(d) = self.digester.as_mut() {
            d.update(&buf[..k]);
        }
        self.n += k as u64;
        Ok(k)
    }
}

fn hash_loc(
    c: &Container,
    name: &str,
    loc: Loc,
    alg: Algorithm,
    decompress: bool,
) -> Result<Verified, SourceError> {
    let bad = |why: String| SourceError::Invalid {
        file: c.path().to_owned(),
        why: format!("{name:?}: {why}"),
    };
    let mut magic = [0u8; 4];
    let got = read_up_to(loc.open()?, &mut magic).map_err(|e| SourceError::io(&loc.file, e))?;
    let gzip = got >= 2 && magic[..2] == [0x1f, 0x8b];
    if decompress && got == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        return Err(bad(
            "zstd-compressed layers are not supported in docker-save tarballs".into(),
        ));
    }
    let mut raw = Hashing {
        inner: loc.open()?,
        digester: Some(alg.digester()),
        n: 0,
    };
    let mut buf = vec![0u8; 1 << 20];
    let uncompressed = if decompress && gzip {
        let mut d = Hashing {
            inner: flate2::read::MultiGzDecoder::new(&mut raw),
            digester: Some(Algorithm::Sha256.digester()),
            n: 0,
        };
        drain(&mut d, &mut buf).map_err(|e| bad(format!("not a valid gzip stream: {e}")))?;
        let u = d.digester.take().map(|x| x.finish());
        drain(&mut raw, &mut buf).map_err(|e| SourceError::io(&loc.file, e))?;
        u
    } else {
        drain(&mut raw, &mut buf).map_err(|e| SourceError::io(&loc.file, e))?;
        None
    };
    if raw.n != loc.len {
        return Err(bad(format!(
            "truncated: {} of {} bytes could be read",
            raw.n, loc.len
        )));
    }
    let digest = raw
        .digester
        .take()
        .map(|d| d.finish())
        .ok_or_else(|| bad("internal: no digest".into()))?;
    let uncompressed = match (decompress, uncompressed) {
        (false, _) => None,
        (true, Some(u)) => Some(u),
        // Not compressed: the bytes are the layer (sha256 is what docker uses).
        (true, None) if alg == Algorithm::Sha256 => Some(digest.clone()),
        (true, None) => return Err(bad("decompressed digests are sha256".into())),
    };
    Ok(Verified {
        loc,
        digest,
        uncompressed,
        gzip,
    })
}

fn read_up_to(mut r: impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn drain(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<()> {
    loop {
        if r.read(buf)? == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_once_per_scan_and_reuses_the_last_scan_until_the_file_changes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("blob"), b"some bytes").unwrap();
        let c = Container::Dir {
            root: t.path().to_owned(),
        };
        let empty = Cache::default();
        let mut v = Verifier::new(&empty, "x".into());
        let a = v.hash(&c, "blob", Algorithm::Sha256, false).unwrap();
        let b = v.hash(&c, "blob", Algorithm::Sha256, false).unwrap();
        assert_eq!(a.digest, Digest::sha256_of(b"some bytes"));
        assert_eq!(b.digest, a.digest);
        assert_eq!((v.hashed_bytes, v.reused), (10, 1));

        // The next scan reuses it...
        let last = v.new;
        let mut v = Verifier::new(&last, "x".into());
        v.hash(&c, "blob", Algorithm::Sha256, false).unwrap();
        assert_eq!((v.hashed_bytes, v.reused), (0, 1));
        // ...but not for another algorithm, nor after the file changed.
        v.hash(&c, "blob", Algorithm::Sha512, false).unwrap();
        assert_eq!(v.hashed_bytes, 10);
        std::fs::write(t.path().join("blob"), b"other bytes!").unwrap();
        let mut v = Verifier::new(&last, "x".into());
        let d = v.hash(&c, "blob", Algorithm::Sha256, false).unwrap();
        assert_eq!(d.digest, Digest::sha256_of(b"other bytes!"));
        assert_eq!((v.hashed_bytes, v.reused), (12, 0));
    }

    #[test]
    fn gzip_layers_get_their_decompressed_digest() {
        use std::io::Write as _;
        let t = tempfile::tempdir().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"layer content").unwrap();
        let gz = e.finish().unwrap();
        std::fs::write(t.path().join("l"), &gz).unwrap();
        std::fs::write(t.path().join("bad"), [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
        let c = Container::Dir {
            root: t.path().to_owned(),
        };
        let empty = Cache::default();
        let mut v = Verifier::new(&empty, "x".into());
        let got = v.hash(&c, "l", Algorithm::Sha256, true).unwrap();
        assert!(got.gzip);
        assert_eq!(got.digest, Digest::sha256_of(&gz));
        assert_eq!(got.uncompressed, Some(Digest::sha256_of(b"layer content")));
        let err = v.hash(&c, "bad", Algorithm::Sha256, true).unwrap_err();
        assert!(err.to_string().contains("gzip"), "{err}");
    }
}
