//! The writers' half of the GC protocol (docs/gc.md): a writer that makes
//! something depend on existing content or an existing link writes its
//! reference first, then looks for doom markers, and fails cleanly if a
//! collector is about to delete what it depends on.

use super::keys as gck;
use crate::backend::Backend;
use oci::{Digest, RepoName};
use std::io;
use std::time::{Duration, SystemTime};

/// Markers older than this are a dead collector's and are ignored; a
/// collector gives up on a candidate well before (a quarter of it).
pub const MARKER_TTL: Duration = Duration::from_secs(3600);

/// Is any collector between marking and deleting right now? One listing:
/// when none is, the writer needs no other check.
pub(crate) async fn collector_active(b: &dyn Backend) -> io::Result<bool> {
    live_marker(b, gck::ACTIVE_PREFIX).await
}

/// Is `d`'s content doomed by a collector run?
pub(crate) async fn content_doomed(b: &dyn Backend, d: &Digest) -> io::Result<bool> {
    live_marker(b, &gck::content_markers(d)).await
}

/// Is the link of `d` in `name` doomed by a collector run?
pub(crate) async fn link_doomed(b: &dyn Backend, name: &RepoName, d: &Digest) -> io::Result<bool> {
    live_marker(b, &gck::link_markers(name, d)).await
}

/// Any marker under `prefix` younger than [`MARKER_TTL`]?
async fn live_marker(b: &dyn Backend, prefix: &str) -> io::Result<bool> {
    let now = SystemTime::now();
    for name in b.list(prefix, None, 16).await? {
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
    Ok(false)
}
