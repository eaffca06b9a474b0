//! Single-flight fetch-and-tee of blobs.
//!
//! The first request for an uncached blob starts one fetch, a task of its
//! own (it outlives the clients that asked): it GETs the blob upstream and
//! hands every chunk both to the store (`Registry::upload_whole`, which
//! verifies the digest while it writes and makes the blob visible only
//! when it matches) and to a spool file, an unlinked temporary file (in the
//! upstream's `spool_dir`, else the system's temporary directory). Every
//! client of that blob, the first included, reads the spool at its own
//! pace as it grows, so none waits for the whole blob and none slows the
//! others; later clients join the same fetch. Memory is bounded: chunks
//! go through a small channel to the store and are written to the spool
//! in batches of at most [`SPOOL_BATCH`] bytes.
//!
//! The last byte is held back from readers until the store has verified
//! and committed the blob: a client never receives a complete body that
//! does not match its digest. When the transfer breaks or the digest does
//! not match, nothing is stored (the store's private upload is removed),
//! readers get an error (their response is cut short) and the fetch is
//! forgotten, so the next request fetches again.

use crate::upstream::{Failure, Upstream};
use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Digest, RepoName};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Spool writes are batched up to this many bytes.
pub const SPOOL_BATCH: usize = 256 << 10;
/// Readers read the spool this many bytes at a time at most.
const READ_CHUNK: u64 = 256 << 10;
/// Chunks in flight to the store.
const STORE_QUEUE: usize = 4;

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
    /// Bytes readers may read from the spool.
    pub readable: u64,
    pub end: End,
}

/// A blob being fetched: its spool and its progress.
pub struct Fetch {
    /// The upstream's `Content-Length`, when it sent one.
    pub size: Option<u64>,
    spool: Arc<std::fs::File>,
    progress: watch::Receiver<Progress>,
}

impl Fetch {
    /// Has it failed (so that a new request must fetch again)?
    pub(crate) fn failed(&self) -> bool {
        matches!(self.progress.borrow().end, End::Failed(_))
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
        progress: progress_rx,
    });
    phase.send_replace(Phase::Streaming(fetch));
    tracing::info!(target: "wharf::mirror", upstream = %up, repo = %local, %digest, size, "fetching a blob from the upstream");

    let (store_tx, store_rx) = mpsc::channel::<io::Result<Bytes>>(STORE_QUEUE);
    let body = futures_util::stream::unfold(store_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let stored = registry.upload_whole(&local, Box::pin(body), &digest);
    let pumped = pump(
        resp.response,
        size,
        &spool,
        &progress_tx,
        store_tx,
        &upstream.stats,
    );
    let (stored, pumped) = tokio::join!(stored, pumped);
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

/// Stream the upstream's body to the store and the spool. Returns the
/// byte count, or why it stopped (the store is then told of the failure).
async fn pump(
    resp: reqwest::Response,
    size: Option<u64>,
    spool: &Arc<std::fs::File>,
    progress: &watch::Sender<Progress>,
    store: mpsc::Sender<io::Result<Bytes>>,
    stats: &crate::upstream::Stats,
) -> Result<u64, String> {
    let mut stream = resp.bytes_stream();
    let mut received: u64 = 0;
    let mut written: u64 = 0;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_len: usize = 0;
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
        received = n;
        if let Some(s) = size
            && received > s
        {
            let why = format!("the upstream sent more than its Content-Length of {s} bytes");
            return fail(store, why).await;
        }
        batch_len = batch_len.saturating_add(chunk.len());
        batch.push(chunk.clone());
        if store.send(Ok(chunk)).await.is_err() {
            return Err("the store stopped reading".into());
        }
        if batch_len >= SPOOL_BATCH {
            written = match spool_write(spool, written, std::mem::take(&mut batch)).await {
                Ok(w) => w,
                Err(e) => return fail(store, format!("writing the spool file failed: {e}")).await,
            };
            batch_len = 0;
            publish(progress, written, size);
        }
    }
    if let Some(s) = size
        && received != s
    {
        let why = format!("the upstream ended after {received} of {s} bytes");
        return fail(store, why).await;
    }
    written = match spool_write(spool, written, batch).await {
        Ok(w) => w,
        Err(e) => return fail(store, format!("writing the spool file failed: {e}")).await,
    };
    publish(progress, written, size);
    // Dropping `store` ends the body: the store verifies and commits.
    Ok(received)
}

/// Let readers at `written` bytes, but never at the last byte of a body of
/// known size before the store has verified it.
fn publish(progress: &watch::Sender<Progress>, written: u64, size: Option<u64>) {
    let readable = match size {
        Some(s) if written >= s => s.saturating_sub(1),
        _ => written,
    };
    progress.send_modify(|p| p.readable = readable);
}

/// Append `batch` to the spool at `offset`; returns the new length.
async fn spool_write(
    spool: &Arc<std::fs::File>,
    offset: u64,
    batch: Vec<Bytes>,
) -> io::Result<u64> {
    if batch.is_empty() {
        return Ok(offset);
    }
    let f = spool.clone();
    tokio::task::spawn_blocking(move || {
        let mut at = offset;
        for b in batch {
            f.write_all_at(&b, at)?;
            at = u64::try_from(b.len())
                .ok()
                .and_then(|n| at.checked_add(n))
                .ok_or_else(|| io::Error::other("spool offset overflow"))?;
        }
        Ok(at)
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
        pos: u64,
        end: Option<u64>,
        over: bool,
    }
    let rx = fetch.progress.clone();
    let st = St {
        fetch,
        rx,
        pos: start,
        end,
        over: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.over {
            return None;
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
            if st.pos < avail {
                let n = (avail - st.pos).min(READ_CHUNK);
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
