//! Scanning a source off the async workers, with what the data directory
//! remembers about it (`_sources/<sha256 of its canonical path>.json`).

use super::names::assign;
use super::scan::{self, Format, ScannedImage};
use super::verify::{CACHE_VERSION, Cache, Verifier};
use super::{FileId, SourceError, SourceSpec};
use crate::backend::Backend;
use oci::{Digest, RepoName, Tag};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The result of scanning one source.
pub struct Scanned {
    pub format: Format,
    pub images: Vec<ScannedImage>,
    /// (repository, tag, index into `images`).
    pub names: Vec<(RepoName, Tag, usize)>,
    /// Identity of the file whose change means the image list may have
    /// changed: the tarball, or the layout's `index.json`.
    pub watch: Option<FileId>,
}

/// The file whose change means a source's image list may have changed.
pub fn watch_path(canonical: &Path) -> PathBuf {
    if canonical.is_dir() {
        canonical.join("index.json")
    } else {
        canonical.to_owned()
    }
}

pub fn cache_key(canonical: &Path) -> String {
    format!(
        "_sources/{}.json",
        Digest::sha256_of(canonical.as_os_str().as_encoded_bytes()).hex()
    )
}

/// Scan one source (blocking work on the blocking pool), reusing and then
/// updating its cache in the data directory.
pub async fn scan_source(
    backend: &Arc<dyn Backend>,
    spec: &SourceSpec,
    canonical: &Path,
    max_name_len: usize,
) -> Result<Scanned, SourceError> {
    let key = cache_key(canonical);
    let old = match backend.read(&key).await {
        Ok(Some(raw)) => match serde_json::from_slice::<Cache>(&raw) {
            Ok(c) if c.version == CACHE_VERSION => c,
            Ok(_) => Cache::default(),
            Err(e) => {
                tracing::warn!(source = %canonical.display(), error = %e, "ignoring an unreadable source cache");
                Cache::default()
            }
        },
        Ok(None) => Cache::default(),
        Err(e) => {
            tracing::warn!(source = %canonical.display(), error = %e, "cannot read the source cache");
            Cache::default()
        }
    };
    let path = canonical.to_owned();
    let name = spec.name.clone();
    let (scanned, cache, hashed, reused) = tokio::task::spawn_blocking(move || {
        let watch = std::fs::metadata(watch_path(&path))
            .ok()
            .map(|m| FileId::of(&m));
        let mut v = Verifier::new(&old, path.display().to_string());
        let (format, images) = scan::scan(&path, &mut v)?;
        let names = assign(&path, format, &images, name.as_deref(), max_name_len)?;
        let changed = v.hashed_bytes > 0 || v.new.entries.len() != old.entries.len();
        let (hashed, reused) = (v.hashed_bytes, v.reused);
        Ok::<_, SourceError>((
            Scanned {
                format,
                images,
                names,
                watch,
            },
            changed.then_some(v.new),
            hashed,
            reused,
        ))
    })
    .await
    .map_err(|e| SourceError::Config(format!("{}: scan failed: {e}", spec.path.display())))??;
    if let Some(cache) = cache {
        match serde_json::to_vec(&cache) {
            Ok(bytes) => {
                if let Err(e) = backend.put(&key, bytes.into()).await {
                    tracing::warn!(source = %canonical.display(), error = %e, "cannot write the source cache");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode the source cache"),
        }
    }
    tracing::info!(
        source = %canonical.display(),
        format = scanned.format.as_str(),
        images = scanned.images.len(),
        hashed_bytes = hashed,
        reused_blobs = reused,
        "source verified"
    );
    Ok(scanned)
}
