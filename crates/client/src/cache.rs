//! The local content-addressable blob store:
//! `$XDG_CACHE_HOME/wharf/blobs/<alg>/<hex>` (`~/.cache/wharf/...` when
//! `XDG_CACHE_HOME` is unset).
//!
//! A blob is downloaded into `tmp/`, verified against its digest while it
//! streams, then renamed into place, so a blob in the store is always
//! complete and correct; a blob already there is never downloaded again.

use crate::error::{Error, Result};
use crate::registry::{Client, Progress};
use oci::{Digest, RepoName};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

/// What [`Cache::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub blobs: u64,
    pub bytes: u64,
}

impl Cache {
    /// `$XDG_CACHE_HOME/wharf`, else `$HOME/.cache/wharf`.
    pub fn from_env() -> Result<Cache> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let base = env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .ok_or_else(|| {
                Error::Usage("cannot find a cache directory: set XDG_CACHE_HOME or HOME".into())
            })?;
        Ok(Cache::at(base.join("wharf")))
    }

    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Is the blob in the store (with the expected size, if given)?
    pub fn has(&self, digest: &Digest, size: Option<u64>) -> bool {
        match std::fs::metadata(self.blob_path(digest)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    fn tmp_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// A temporary file inside the store, for [`Cache::insert`].
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let dir = self.tmp_dir()?;
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))
    }

    /// Move a complete, verified temporary file into the store.
    pub fn insert(&self, digest: &Digest, file: tempfile::NamedTempFile) -> Result<PathBuf> {
        let dest = self.blob_path(digest);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        file.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
        Ok(dest)
    }

    /// The blob's path in the store, downloading it first if it is not
    /// there. Returns whether it was downloaded.
    pub async fn fetch(
        &self,
        client: &Client,
        repo: &RepoName,
        digest: &Digest,
        size: Option<u64>,
        progress: Arc<dyn Progress>,
    ) -> Result<(PathBuf, bool)> {
        if self.has(digest, size) {
            progress.skipped("cached");
            return Ok((self.blob_path(digest), false));
        }
        let tmp = self.temp_file()?;
        client
            .pull_blob_to_file(repo, digest, size, tmp.path(), progress)
            .await?;
        Ok((self.insert(digest, tmp)?, true))
    }

    /// Empty the store.
    pub fn prune(&self) -> Result<Pruned> {
        let mut p = Pruned::default();
        for sub in ["blobs", "tmp"] {
            let dir = self.root.join(sub);
            if !dir.exists() {
                continue;
            }
            count(&dir, &mut p);
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(p)
    }
}

fn count(dir: &Path, p: &mut Pruned) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => count(&e.path(), p),
            Ok(_) => {
                p.blobs += 1;
                p.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn insert_has_prune() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::at(t.path().join("wharf"));
        let d = Digest::sha256_of(b"hello");
        assert!(!c.has(&d, None));
        let mut f = c.temp_file().unwrap();
        f.write_all(b"hello").unwrap();
        let p = c.insert(&d, f).unwrap();
        assert_eq!(p, t.path().join("wharf/blobs/sha256").join(d.hex()));
        assert!(c.has(&d, Some(5)));
        assert!(!c.has(&d, Some(6)));
        assert_eq!(c.prune().unwrap(), Pruned { blobs: 1, bytes: 5 });
        assert!(!c.has(&d, None));
        assert_eq!(c.prune().unwrap(), Pruned::default());
    }
}
