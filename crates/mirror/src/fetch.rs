//! Single-flight fetch-and-tee of blobs.
//!
//! The first request for an uncached blob starts one fetch, a task of its
//! own (it outlives the clients that asked): it GETs the blob upstream and
//! hands every chunk to the store (`Registry::upload_whole`, which
//! verifies the digest while it writes and makes the blob visible only
//! when it matches) and to its readers, every client of that blob, the
//! first included, each at its own pace: none waits for the whole blob and
//! none slows the others; later clients join the same fetch.
//!
//! Readers that keep up are served from memory: the newest chunks (at
//! least [`RECENT_BYTES`] of them) stay there as the upstream's own
//! `Bytes`, and a reader is handed slices of them (a reference count, no
//! copy, no system call). A chunk that leaves memory while a reader still
//! needs it is first written to a spool file (an unlinked temporary file in
//! the upstream's `spool_dir`, else the system's temporary directory,
//! at the chunk's offset), where that reader finds it: a slow client
//! makes the fetch spool, a fast one costs no spool I/O at all. A reader
//! that starts behind what memory holds (a client that joined late, a
//! `Range` from near the start) waits for the blob to be stored and reads
//! it from the store. Memory is bounded: chunks go through a small
//! channel to the store, and what stays in memory is bounded whatever the
//! readers do.
//!
//! The last byte is held back from readers until the store has the whole
//! body and has verified it (before its commit): a client never receives
//! a complete body that does not match its digest. When the transfer breaks or the digest does
//! not match, nothing is stored (the store's private upload is removed),
//! readers get an error (their response is cut short) and the fetch is
//! forgotten, so the next request fetches again.

use crate::upstream::{Failure, Upstream};
use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Digest, RepoName};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

/// Spool writes are batched up to this many bytes.
pub const SPOOL_BATCH: usize = 256 << 10;
/// Readers read the spool this many bytes at a time at most.
const READ_CHUNK: u64 = 256 << 10;
/// Chunks in flight to the store.
const STORE_QUEUE: usize = 4;
/// Bytes kept in memory for readers that keep up.
pub const RECENT_BYTES: usize = 4 << 20;
/// Chunks kept in memory at most (each holds its whole buffer).
const RECENT_CHUNKS: usize = 256;

/// How far a fetch has come.
#[derive(Clone, Debug)]
pub(crate) enum End {
    Running,
    /// Stored and verified: this many bytes, all readable.
    Done(u64),
    Failed(Arc<str>),
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Bytes readers may read (from memory or the spool).
    pub readable: u64,
    pub end: End,
}

/// A blob being fetched: its spool, its newest chunks and its progress.
pub struct Fetch {
    /// The upstream's `Content-Length`, when it sent one.
    pub size: Option<u64>,
    spool: Arc<std::fs::File>,
    recent: Mutex<Recent>,
    progress: watch::Receiver<Progress>,
    /// Where late readers read the blob once it is stored.
    registry: Arc<store::Registry>,
    local: RepoName,
    digest: Digest,
}

/// The newest chunks received, contiguous, each at its offset, and the
/// readers' positions. A chunk leaves memory only once no reader needs it
/// or it is spooled; a reader is registered only at or past the first
/// chunk here, so every byte a registered reader still needs is in memory
/// or in the spool.
#[derive(Default)]
struct Recent {
    /// (offset, bytes, written to the spool)
    chunks: VecDeque<(u64, Bytes, bool)>,
    bytes: usize,
    /// Where memory starts: every byte before it left.
    start: u64,
    /// Registered readers' positions.
    readers: HashMap<u64, u64>,
    next_reader: u64,
}

/// Where a reader at some position finds its next bytes.
enum Source {
    /// In memory: a slice of a received chunk.
    Memory(Bytes),
    /// In the spool, up to this offset (where memory starts).
    Spool(u64),
}

impl Recent {
    fn push(&mut self, at: u64, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.bytes = self.bytes.saturating_add(chunk.len());
        self.chunks.push_back((at, chunk, false));
    }

    /// A reader from `pos`, or `None` if memory is already past it.
    fn register(&mut self, pos: u64) -> Option<u64> {
        if pos < self.start {
            return None;
        }
        let id = self.next_reader;
        self.next_reader = self.next_reader.wrapping_add(1);
        self.readers.insert(id, pos);
        Some(id)
    }

    fn over(&self) -> bool {
        self.bytes > RECENT_BYTES || self.chunks.len() > RECENT_CHUNKS
    }

    /// Drop the oldest chunks past the bounds that no reader needs (or
    /// that are spooled). Returns the chunks to spool before the next can
    /// go (empty when within the bounds): unspooled ones from the oldest
    /// on, up to [`SPOOL_BATCH`] bytes or what memory holds.
    fn trim(&mut self) -> Vec<(u64, Bytes)> {
        let low = self.readers.values().min().copied();
        while self.over() {
            let Some((at, c, spooled)) = self.chunks.front() else {
                break;
            };
            let end = at.saturating_add(c.len() as u64);
            if !*spooled && low.is_some_and(|l| l < end) {
                break;
            }
            self.bytes = self.bytes.saturating_sub(c.len());
            self.start = end;
            self.chunks.pop_front();
        }
        let mut out = Vec::new();
        if !self.over() {
            return out;
        }
        let mut n = 0usize;
        for (at, c, spooled) in &self.chunks {
            if n >= SPOOL_BATCH {
                break;
            }
            if !*spooled {
                n = n.saturating_add(c.len());
                out.push((*at, c.clone()));
            }
        }
        out
    }

    /// Mark the chunks ending at or before `upto` as spooled.
    fn spooled(&mut self, upto: u64) {
        for (at, c, spooled) in self.chunks.iter_mut() {
            if at.saturating_add(c.len() as u64) > upto {
                break;
            }
            *spooled = true;
        }
    }

    /// The bytes from `pos` (below `avail`) in memory, or how far the spool
    /// must be read; moves reader `id` to `pos`.
    fn find(&mut self, id: u64, pos: u64, avail: u64) -> Source {
        if let Some(p) = self.readers.get_mut(&id) {
            *p = pos;
        }
        if pos < self.start {
            return Source::Spool(self.start.min(avail));
        }
        // The last chunk starting at or before `pos`.
        let i = self.chunks.partition_point(|(at, _, _)| *at <= pos);
        let Some((at, c, _)) = i.checked_sub(1).and_then(|i| self.chunks.get(i)) else {
            return Source::Spool(avail);
        };
        let from = usize::try_from(pos - at).unwrap_or(usize::MAX);
        let to = usize::try_from(avail.saturating_sub(*at)).unwrap_or(usize::MAX);
        let to = to.min(c.len());
        if from >= to {
            // Past the newest chunk (cannot happen: readers never pass what
            // was received).
            return Source::Spool(avail);
        }
        Source::Memory(c.slice(from..to))
    }
}

impl Fetch {
    /// Has it failed (so that a new request must fetch again)?
    pub(crate) fn failed(&self) -> bool {
        matches!(self.progress.borrow().end, End::Failed(_))
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a fetch is: waiting for the upstream's answer, streaming, or
/// failed before any byte.
#[derive(Clone)]
pub(crate) enum Phase {
    Starting,
    Streaming(Arc<Fetch>),
    Failed(Failure),
}

impl Phase {
    /// May a new request join it? Not once it failed: a failed fetch stays
    /// in the table until its task is done, and the next request must
    /// fetch again rather than share the failure.
    pub(crate) fn joinable(&self) -> bool {
        match self {
            Phase::Starting => true,
            Phase::Streaming(f) => !f.failed(),
            Phase::Failed(_) => false,
        }
    }
}

/// What a fetch needs.
pub(crate) struct Job {
    pub registry: Arc<store::Registry>,
    pub upstream: Arc<Upstream>,
    pub remote: RepoName,
    pub local: RepoName,
    pub digest: Digest,
}

/// Run one fetch to its end, saying how it goes on `phase`. Returns
/// whether the blob was stored.
pub(crate) async fn run(job: Job, phase: watch::Sender<Phase>) -> bool {
    let Job {
        registry,
        upstream,
        remote,
        local,
        digest,
    } = job;
    let up = &upstream.spec.name;
    let resp = match upstream.get_blob(&remote, &digest).await {
        Ok(r) => r,
        Err(f) => {
            tracing::warn!(target: "wharf::mirror", upstream = %up, repo = %local, %digest, error = f.message(), "blob fetch failed");
            phase.send_replace(Phase::Failed(f));
            return false;
        }
    };
    let spool_dir = upstream.spec.spool_dir.clone();
    let where_ = spool_dir.clone();
    let made = tokio::task::spawn_blocking(move || match &spool_dir {
        Some(d) => tempfile::tempfile_in(d),
        None => tempfile::tempfile(),
    })
    .await;
    let spool = match made {
        Ok(Ok(f)) => Arc::new(f),
        Ok(Err(e)) => {
            phase.send_replace(Phase::Failed(spool_failure(where_.as_deref(), &e)));
            return false;
        }
        Err(e) => {
            let e = io::Error::other(e);
            phase.send_replace(Phase::Failed(spool_failure(where_.as_deref(), &e)));
            return false;
        }
    };
    let size = resp.size;
    let (progress_tx, progress_rx) = watch::channel(Progress {
        readable: 0,
        end: End::Running,
    });
    let fetch = Arc::new(Fetch {
        size,
        spool: spool.clone(),
        recent: Mutex::new(Recent::default()),
        progress: progress_rx,
        registry: registry.clone(),
        local: local.clone(),
        digest: digest.clone(),
    });
    phase.send_replace(Phase::Streaming(fetch.clone()));
    tracing::info!(target: "wharf::mirror", upstream = %up, repo = %local, %digest, size, "fetching a blob from the upstream");

    let (store_tx, store_rx) = mpsc::channel::<io::Result<Bytes>>(STORE_QUEUE);
    let body = futures_util::stream::unfold(store_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let (verified_tx, verified_rx) = oneshot::channel();
    let stored = registry.upload_whole_verified(&local, Box::pin(body), &digest, verified_tx);
    let pumped = pump(
        resp.response,
        size,
        &fetch,
        &progress_tx,
        store_tx,
        &upstream.stats,
    );
    // The last byte goes out once the store has the whole body and it
    // matched the digest, without waiting for the commit's fsync.
    let release = async {
        if verified_rx.await.is_ok()
            && let Some(s) = size
        {
            progress_tx.send_modify(|p| p.readable = p.readable.max(s));
        }
    };
    let (stored, pumped, ()) = tokio::join!(stored, pumped, release);
    let end = match (stored, pumped) {
        (Ok(n), Ok(_)) => {
            tracing::info!(target: "wharf::mirror", upstream = %up, repo = %local, %digest, size = n, "blob cached");
            progress_tx.send_replace(Progress {
                readable: n,
                end: End::Done(n),
            });
            return true;
        }
        (Err(e), _) => format!("storing the blob failed: {e}"),
        (Ok(_), Err(e)) => e,
    };
    tracing::warn!(target: "wharf::mirror", upstream = %up, repo = %local, %digest, error = %end, "blob fetch failed; nothing was cached");
    let readable = progress_tx.borrow().readable;
    progress_tx.send_replace(Progress {
        readable,
        end: End::Failed(end.into()),
    });
    false
}

fn spool_failure(dir: Option<&std::path::Path>, e: &io::Error) -> Failure {
    let dir = match dir {
        Some(d) => format!("spool_dir {}", d.display()),
        None => "the temporary directory".to_owned(),
    };
    tracing::error!(target: "wharf::mirror", error = %e, "cannot create a spool file in {dir}");
    Failure::Bad {
        status: None,
        message: format!("cannot create a spool file in {dir}: {e}"),
    }
}

/// Stream the upstream's body to the store and the readers (spooling
/// what a lagging reader needs). Returns the byte count, or why it stopped
/// (the store is then told of the failure).
async fn pump(
    resp: reqwest::Response,
    size: Option<u64>,
    fetch: &Fetch,
    progress: &watch::Sender<Progress>,
    store: mpsc::Sender<io::Result<Bytes>>,
    stats: &crate::upstream::Stats,
) -> Result<u64, String> {
    let mut stream = resp.bytes_stream();
    let mut received: u64 = 0;
    let fail = |store: mpsc::Sender<io::Result<Bytes>>, why: String| async move {
        // An error, not an early end: the store must not take a short
        // body for a whole one.
        let _ = store.send(Err(io::Error::other(why.clone()))).await;
        Err::<u64, String>(why)
    };
    loop {
        let chunk = match stream.next().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                stats
                    .broken
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let why = format!("the upstream transfer broke after {received} bytes: {e}");
                return fail(store, why).await;
            }
            None => break,
        };
        stats.received(chunk.len());
        let Some(n) = u64::try_from(chunk.len())
            .ok()
            .and_then(|n| received.checked_add(n))
        else {
            return fail(store, "the upstream sent more than 2^64 bytes".into()).await;
        };
        let at = received;
        received = n;
        if let Some(s) = size
            && received > s
        {
            let why = format!("the upstream sent more than its Content-Length of {s} bytes");
            return fail(store, why).await;
        }
        fetch.recent().push(at, chunk.clone());
        publish(progress, received, size);
        if store.send(Ok(chunk)).await.is_err() {
            return Err("the store stopped reading".into());
        }
        // Back within the bounds, spooling what a reader still needs.
        loop {
            let batch = fetch.recent().trim();
            let Some(upto) = batch
                .last()
                .map(|(at, c)| at.saturating_add(c.len() as u64))
            else {
                break;
            };
            if let Err(e) = spool_write(&fetch.spool, batch).await {
                return fail(store, format!("writing the spool file failed: {e}")).await;
            }
            fetch.recent().spooled(upto);
        }
    }
    if let Some(s) = size
        && received != s
    {
        let why = format!("the upstream ended after {received} of {s} bytes");
        return fail(store, why).await;
    }
    // Dropping `store` ends the body: the store verifies and commits.
    Ok(received)
}

/// Let readers at `received` bytes, but never at the last byte of a body
/// of known size before the store has verified it.
fn publish(progress: &watch::Sender<Progress>, received: u64, size: Option<u64>) {
    let readable = match size {
        Some(s) if received >= s => s.saturating_sub(1),
        _ => received,
    };
    progress.send_modify(|p| p.readable = readable);
}

/// Write each chunk of `batch` to the spool at its offset.
async fn spool_write(spool: &Arc<std::fs::File>, batch: Vec<(u64, Bytes)>) -> io::Result<()> {
    let f = spool.clone();
    tokio::task::spawn_blocking(move || {
        for (at, b) in batch {
            f.write_all_at(&b, at)?;
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

/// The bytes `start..end` of a fetch (to its end when `end` is `None`), as
/// they become readable. Ends with an error if the fetch fails.
pub fn reader(
    fetch: Arc<Fetch>,
    start: u64,
    end: Option<u64>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct St {
        fetch: Arc<Fetch>,
        rx: watch::Receiver<Progress>,
        /// Registered with the fetch; `None`: started behind its memory,
        /// reads the store once the blob is there.
        id: Option<u64>,
        /// The stored blob, for a reader that started late.
        stored: Option<store::ByteStream>,
        pos: u64,
        end: Option<u64>,
        over: bool,
    }
    impl Drop for St {
        fn drop(&mut self) {
            if let Some(id) = self.id {
                self.fetch.recent().readers.remove(&id);
            }
        }
    }
    let rx = fetch.progress.clone();
    let id = fetch.recent().register(start);
    let st = St {
        fetch,
        rx,
        id,
        stored: None,
        pos: start,
        end,
        over: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.over {
            return None;
        }
        if let Some(body) = st.stored.as_mut() {
            return match body.next().await {
                Some(Ok(b)) => Some((Ok(b), st)),
                Some(Err(e)) => {
                    st.over = true;
                    Some((Err(e), st))
                }
                None => None,
            };
        }
        loop {
            let p = st.rx.borrow_and_update().clone();
            let limit = match (st.end, &p.end) {
                (Some(e), _) => e,
                (None, End::Done(total)) => *total,
                (None, _) => u64::MAX,
            };
            if st.pos >= limit {
                return None;
            }
            let avail = p.readable.min(limit);
            if let Some(id) = st.id
                && st.pos < avail
            {
                let found = st.fetch.recent().find(id, st.pos, avail);
                let upto = match found {
                    Source::Memory(b) => {
                        st.pos = st.pos.saturating_add(b.len() as u64);
                        return Some((Ok(b), st));
                    }
                    Source::Spool(upto) => upto,
                };
                let n = upto.saturating_sub(st.pos).clamp(1, READ_CHUNK);
                let (f, at) = (st.fetch.spool.clone(), st.pos);
                let read = tokio::task::spawn_blocking(move || {
                    let len = usize::try_from(n).map_err(io::Error::other)?;
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, at)?;
                    Ok::<_, io::Error>(Bytes::from(buf))
                })
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
                return match read {
                    Ok(b) => {
                        st.pos = st.pos.saturating_add(n);
                        Some((Ok(b), st))
                    }
                    Err(e) => {
                        st.over = true;
                        Some((Err(e), st))
                    }
                };
            }
            match p.end {
                End::Failed(why) => {
                    st.over = true;
                    return Some((Err(io::Error::other(why.to_string())), st));
                }
                End::Done(_) if st.id.is_none() => {
                    // Stored: read it from the store.
                    let f = &st.fetch;
                    match f
                        .registry
                        .blob_get(&f.local, &f.digest, Some((st.pos, limit)))
                        .await
                    {
                        Ok(r) => {
                            st.stored = Some(r.body);
                            let body = st.stored.as_mut()?;
                            return match body.next().await {
                                Some(Ok(b)) => Some((Ok(b), st)),
                                Some(Err(e)) => {
                                    st.over = true;
                                    Some((Err(e), st))
                                }
                                None => None,
                            };
                        }
                        Err(e) => {
                            st.over = true;
                            return Some((Err(io::Error::other(e.to_string())), st));
                        }
                    }
                }
                // Everything readable was read and the range lies beyond
                // the blob (cannot happen with a checked range).
                End::Done(_) => return None,
                End::Running => {
                    if st.rx.changed().await.is_err() {
                        st.over = true;
                        return Some((
                            Err(io::Error::other("the blob fetch stopped unexpectedly")),
                            st,
                        ));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod recent_tests {
    use super::{RECENT_BYTES, Recent, Source};
    use bytes::Bytes;

    fn at(s: Source) -> Result<Bytes, u64> {
        match s {
            Source::Memory(b) => Ok(b),
            Source::Spool(upto) => Err(upto),
        }
    }

    fn chunk(n: usize, v: u8) -> Bytes {
        Bytes::from(vec![v; n])
    }

    #[test]
    fn nobody_behind_nothing_spooled() {
        let mut r = Recent::default();
        let fast = r.register(0).unwrap();
        let half = RECENT_BYTES / 2;
        for i in 0..4u8 {
            r.push(u64::from(i) * half as u64, chunk(half, i));
            let _ = r.find(
                fast,
                u64::from(i) * half as u64,
                u64::from(i + 1) * half as u64,
            );
            assert!(r.trim().is_empty(), "nothing to spool");
        }
        // Two chunks left memory, unspooled: a reader from before them is
        // refused (it reads the store), one from within memory is not.
        assert_eq!(r.start, 2 * half as u64);
        assert_eq!(r.register(0), None);
        assert!(r.register(2 * half as u64).is_some());
    }

    #[test]
    fn a_lagging_reader_makes_the_fetch_spool_and_finds_its_bytes() {
        let mut r = Recent::default();
        assert!(r.trim().is_empty());
        let slow = r.register(5).unwrap();
        let fast = r.register(0).unwrap();
        let half = RECENT_BYTES / 2;
        r.push(0, chunk(half, 1));
        r.push(half as u64, chunk(half, 2));
        r.push(2 * half as u64, Bytes::new());
        r.push(2 * half as u64, chunk(10, 3));
        let end = 2 * half as u64 + 10;
        assert_eq!(at(r.find(fast, 5, end)).unwrap(), chunk(half - 5, 1));
        assert_eq!(
            at(r.find(fast, half as u64 + 1, half as u64 + 3)).unwrap(),
            chunk(2, 2)
        );
        assert_eq!(at(r.find(fast, end - 1, end)).unwrap(), chunk(1, 3));
        // Over the bound, and the slow reader needs the first chunk: it
        // must be spooled before it can leave.
        let batch = r.trim();
        assert_eq!(batch.len(), 1, "up to the batch size, from the oldest");
        assert_eq!(batch[0].0, 0);
        assert_eq!(r.chunks.len(), 3);
        r.spooled(batch[0].1.len() as u64);
        assert!(r.trim().is_empty());
        assert_eq!(r.chunks.len(), 2);
        assert_eq!(r.start, half as u64);
        // The slow reader is sent to the spool, up to where memory starts.
        assert_eq!(at(r.find(slow, 5, end)), Err(half as u64));
        assert_eq!(at(r.find(slow, 5, 7)), Err(7));
        assert_eq!(at(r.find(slow, half as u64, end)).unwrap(), chunk(half, 2));
        // Gone readers hold nothing back.
        r.readers.clear();
        r.push(end, chunk(half, 4));
        assert!(r.trim().is_empty());
    }
}
