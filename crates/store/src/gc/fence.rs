//! The writers' half of the GC protocol (docs/gc.md): a writer that makes
//! something depend on existing content or an existing link writes its
//! reference first, then looks for doom markers, and fails cleanly if a
//! collector is about to delete what it depends on.

use super::keys as gck;
use crate::backend::{Backend, KeyPages};
use bytes::Bytes;
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

/// What this process knows of collectors from its looks.
#[derive(Default)]
pub(crate) struct IdleSeen(Mutex<Seen>);

#[derive(Default)]
struct Seen {
    /// When the last look that found no collector started.
    at: Option<Instant>,
    /// Bumped whenever a collector may have run unseen since the previous
    /// look: one was seen, or two looks were too far apart for a whole run
    /// to fit between them unseen.
    epoch: u64,
}

/// Taken by a writer *before* it writes: the time of a look that found no
/// collector at work, if there was one recently enough to rely on, and the
/// epoch of looks it belongs to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quiet {
    at: Option<Instant>,
    epoch: u64,
}

impl Quiet {
    /// Did the writes made since this look finish within [`IDLE_CACHE`] of
    /// it? Then no collector can miss them (docs/gc.md), and the writer
    /// needs no other check. Otherwise it checks markers and presence.
    pub(crate) fn holds(&self) -> bool {
        self.at.is_some_and(|t| t.elapsed() < IDLE_CACHE)
    }

    /// While this is the epoch of the looks, no collector has been at work
    /// since the look that started it: a catalog entry known to exist then
    /// exists still.
    pub(crate) fn epoch(&self) -> Option<u64> {
        self.holds().then_some(self.epoch)
    }
}

/// Look for a collector at work, before writing. One listing at most every
/// [`IDLE_CACHE`] per process while none is.
pub(crate) async fn quiet(b: &dyn Backend, seen: &IdleSeen) -> io::Result<Quiet> {
    {
        let s = seen.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.at.is_some_and(|t| t.elapsed() < IDLE_CACHE) {
            return Ok(Quiet {
                at: s.at,
                epoch: s.epoch,
            });
        }
    }
    let asked = Instant::now();
    let active = live_marker(b, gck::ACTIVE_PREFIX).await?;
    let mut s = seen.0.lock().unwrap_or_else(|p| p.into_inner());
    if active {
        s.epoch += 1;
        s.at = None;
        return Ok(Quiet {
            at: None,
            epoch: s.epoch,
        });
    }
    // A collector's flag lives longer than COLLECTOR_START_DELAY: if this
    // look ended within that of the previous one's start, no run began and
    // ended between them.
    let continuous =
        s.at.is_some_and(|prev| prev <= asked && prev.elapsed() < COLLECTOR_START_DELAY);
    if !continuous {
        s.epoch += 1;
    }
    if s.at.is_none_or(|t| t < asked) {
        s.at = Some(asked);
    }
    Ok(Quiet {
        at: Some(asked),
        epoch: s.epoch,
    })
}

/// How long a writer that rewrote a tag or manifest link waits for a
/// collector that marked it to finish, before giving up.
pub const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// A collector removes an empty repository's catalog entry only within
/// this of starting to mark it, so a writer that has waited
/// [`SETTLE_WAIT`] on such a marker (a dead collector's) knows the entry is
/// safe to write again and goes on, rather than fail for an hour.
pub const EMPTY_REPO_BUDGET: Duration = Duration::from_secs(2);

/// What [`settle`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// No collector was at work on the object: it stands as written.
    Kept,
    /// A collector had marked it; it stands now (written again if the
    /// collector took it). What goes with it (a manifest's referrer entry)
    /// needs writing again too: the collector may have taken that.
    Contested,
    /// A collector's marker outlived [`SETTLE_WAIT`].
    TimedOut,
}

/// After writing `value` at `key` (a tag, a manifest link, a catalog
/// entry) under `quiet`: make sure no collector that marked `key` (markers
/// under `markers`) deletes it after the write. While a marker lives, wait
/// for it to go; then, if the collector took the object, write it again
/// under a fresh look.
pub(crate) async fn settle(
    b: &dyn Backend,
    seen: &IdleSeen,
    quiet: Quiet,
    markers: &str,
    key: &str,
    value: &Bytes,
) -> io::Result<Settled> {
    if quiet.holds() {
        return Ok(Settled::Kept);
    }
    let mut contested = false;
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        if !live_marker(b, markers).await? {
            // No collector between marking `key` and finishing with it:
            // the object is either ours to keep or already taken.
            if b.read(key).await?.as_ref() == Some(value) {
                return Ok(if contested {
                    Settled::Contested
                } else {
                    Settled::Kept
                });
            }
            contested = true;
            let q = self::quiet(b, seen).await?;
            b.put(key, value.clone()).await?;
            if q.holds() {
                return Ok(Settled::Contested);
            }
            continue;
        }
        contested = true;
        if Instant::now() >= deadline {
            return Ok(Settled::TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        // A writer's look sees the live run.
        assert!(!quiet(&b, &IdleSeen::default()).await.unwrap().holds());
    }
}
