//! The writers' half of the GC protocol (docs/gc.md): a writer that makes
//! something depend on existing content or an existing link writes its
//! reference first, then looks for doom markers, and fails cleanly if a
//! collector is about to delete what it depends on.

use super::keys as gck;
use crate::backend::{Backend, KeyPages};
use oci::{Digest, RepoName};
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Markers older than this are a dead collector's and are ignored; a
/// collector gives up on a candidate well before (a quarter of it).
pub const MARKER_TTL: Duration = Duration::from_secs(3600);

/// How long a writer may rely on having seen no collector at work. A
/// collector waits [`COLLECTOR_START_DELAY`] (longer) after announcing
/// itself before its first look, so a writer that saw none at most this
/// long ago wrote its reference before any look that could miss it.
pub const IDLE_CACHE: Duration = Duration::from_secs(2);

/// What a collector waits after announcing itself, before its first look.
pub const COLLECTOR_START_DELAY: Duration = Duration::from_secs(3);

/// When this process last saw no collector at work (taken before the
/// listing started, so the age is never under-counted).
#[derive(Default)]
pub(crate) struct IdleSeen(Mutex<Option<Instant>>);

/// Is any collector between announcing itself and finishing? One listing
/// at most every [`IDLE_CACHE`] while none is; when none is, the writer
/// needs no other check.
pub(crate) async fn collector_active(b: &dyn Backend, seen: &IdleSeen) -> io::Result<bool> {
    let fresh = |at: &Option<Instant>| at.is_some_and(|t| t.elapsed() < IDLE_CACHE);
    if fresh(&seen.0.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(false);
    }
    let asked = Instant::now();
    let active = live_marker(b, gck::ACTIVE_PREFIX).await?;
    if !active {
        let mut at = seen.0.lock().unwrap_or_else(|p| p.into_inner());
        if at.is_none_or(|t| t < asked) {
            *at = Some(asked);
        }
    }
    Ok(active)
}

/// Is `d`'s content doomed by a collector run?
pub(crate) async fn content_doomed(b: &dyn Backend, d: &Digest) -> io::Result<bool> {
    live_marker(b, &gck::content_markers(d)).await
}

/// Is the link of `d` in `name` doomed by a collector run?
pub(crate) async fn link_doomed(b: &dyn Backend, name: &RepoName, d: &Digest) -> io::Result<bool> {
    live_marker(b, &gck::link_markers(name, d)).await
}

/// Any marker under `prefix` younger than [`MARKER_TTL`]? Every key is
/// looked at, not a first page: markers of dead runs (a collector that
/// crashed again and again) may sort before a live run's, and stay until
/// the next run removes them.
async fn live_marker(b: &dyn Backend, prefix: &str) -> io::Result<bool> {
    let now = SystemTime::now();
    let mut pages = KeyPages::new(b, prefix, 16);
    while let Some(page) = pages.next().await? {
        for name in page {
            let key = format!("{prefix}{name}");
            if let Some(meta) = b.head(&key).await? {
                let age = meta
                    .modified
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if age < MARKER_TTL {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::FsBackend;
    use bytes::Bytes;

    /// Twenty markers of dead runs, older than MARKER_TTL and sorting
    /// first, hide neither a live run's flag nor its marker.
    #[tokio::test]
    async fn a_live_marker_behind_many_stale_ones_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path(), false).unwrap();
        let d = Digest::sha256_of(b"doomed");
        let old = SystemTime::now() - MARKER_TTL - Duration::from_secs(60);
        for prefix in [gck::ACTIVE_PREFIX.to_owned(), gck::content_markers(&d)] {
            for i in 0..20 {
                let key = format!("{prefix}0dead{i:02}");
                b.put(&key, Bytes::new()).await.unwrap();
                let file = std::fs::File::options()
                    .write(true)
                    .open(dir.path().join(format!("{key}~")))
                    .unwrap();
                file.set_modified(old).unwrap();
            }
            assert!(!live_marker(&b, &prefix).await.unwrap(), "{prefix}");
            b.put(&format!("{prefix}ffff"), Bytes::new()).await.unwrap();
            assert!(live_marker(&b, &prefix).await.unwrap(), "{prefix}");
        }
        assert!(content_doomed(&b, &d).await.unwrap());
        assert!(collector_active(&b, &IdleSeen::default()).await.unwrap());
    }
}
