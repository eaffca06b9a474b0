//! The files in a tar layer (a `wharf push` package, a directory pushed by
//! oras, an image layer): listed, and served one at a time, by streaming
//! through the layer on a blocking thread (`tar` reads synchronously). The
//! layer is never held in memory: a listing keeps at most
//! [`MAX_ENTRIES`] names, a download passes the file's bytes through a
//! small channel, and stops reading when the client goes away.

use bytes::Bytes;
use oci::{Digest, RepoName};
use std::io::{self, BufRead, BufReader, Read};
use store::{ByteStream, Error, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Entries a listing shows at most.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// Bytes per chunk of a download, and chunks buffered ahead of the client.
const CHUNK: usize = 64 << 10;
const CHUNKS_AHEAD: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
    Other,
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub kind: EntryKind,
}

pub(crate) struct Listing {
    pub entries: Vec<Entry>,
    /// More than [`MAX_ENTRIES`] entries: the rest are not listed.
    pub truncated: bool,
    pub gzip: bool,
    /// The layer is not a (complete) tar archive: what went wrong.
    pub error: Option<String>,
}

/// A file's bytes, streamed out of its layer.
pub(crate) struct FileOut {
    pub size: u64,
    pub body: ByteStream,
}

/// A blocking reader over the blob: gzip is recognised by its magic bytes.
async fn open(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Box<dyn Read + Send>, Error> {
    let obj = reg.blob_get(repo, digest, None).await?;
    let bridge = SyncIoBridge::new(StreamReader::new(obj.body));
    Ok(Box::new(bridge))
}

/// Wrap `raw` in a gzip decoder if it starts like gzip; runs on the
/// blocking thread.
fn decoder(raw: Box<dyn Read + Send>) -> io::Result<(Box<dyn Read + Send>, bool)> {
    let mut buffered = BufReader::with_capacity(CHUNK, raw);
    let head = buffered.fill_buf()?;
    let gzip = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    if gzip {
        Ok((Box::new(flate2::read::GzDecoder::new(buffered)), true))
    } else {
        Ok((Box::new(buffered), false))
    }
}

fn path_of<R: Read>(e: &tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&e.path_bytes()).into_owned()
}

fn kind_of<R: Read>(e: &tar::Entry<'_, R>) -> EntryKind {
    let target = || {
        e.link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    match e.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => EntryKind::Symlink(target()),
        tar::EntryType::Link => EntryKind::Hardlink(target()),
        _ => EntryKind::Other,
    }
}

/// The entries of the tar layer `digest` (plain or gzip).
pub(crate) async fn list(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Listing, Error> {
    let raw = open(reg, repo, digest).await?;
    let job = tokio::task::spawn_blocking(move || {
        let mut listing = Listing {
            entries: Vec::new(),
            truncated: false,
            gzip: false,
            error: None,
        };
        let (reader, gzip) = match decoder(raw) {
            Ok(r) => r,
            Err(e) => {
                listing.error = Some(e.to_string());
                return listing;
            }
        };
        listing.gzip = gzip;
        let mut archive = tar::Archive::new(reader);
        let entries = match archive.entries() {
            Ok(e) => e,
            Err(e) => {
                listing.error = Some(e.to_string());
                return listing;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    listing.error = Some(e.to_string());
                    break;
                }
            };
            if listing.entries.len() == MAX_ENTRIES {
                listing.truncated = true;
                break;
            }
            listing.entries.push(Entry {
                path: path_of(&entry),
                size: entry.size(),
                mode: entry.header().mode().unwrap_or(0),
                kind: kind_of(&entry),
            });
        }
        listing
    });
    job.await
        .map_err(|e| Error::Io(io::Error::other(format!("listing a layer failed: {e}"))))
}

/// The regular file `path` of the tar layer `digest`, streamed; `None`
/// when the layer has no such regular file.
pub(crate) async fn extract(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
    path: &str,
) -> Result<Option<FileOut>, Error> {
    let raw = open(reg, repo, digest).await?;
    let (found_tx, found_rx) = oneshot::channel::<io::Result<Option<u64>>>();
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_AHEAD);
    let wanted = path.to_owned();
    tokio::task::spawn_blocking(move || {
        // Says once whether the file is there; false: nobody is waiting.
        let mut found = Some(found_tx);
        let mut report =
            |r: io::Result<Option<u64>>| found.take().is_some_and(|f| f.send(r).is_ok());
        let (reader, _) = match decoder(raw) {
            Ok(r) => r,
            Err(e) => {
                report(Err(e));
                return;
            }
        };
        let mut archive = tar::Archive::new(reader);
        let entries = match archive.entries() {
            Ok(e) => e,
            Err(e) => {
                report(Err(e));
                return;
            }
        };
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    report(Err(e));
                    return;
                }
            };
            if path_of(&entry) != wanted || kind_of(&entry) != EntryKind::File {
                continue;
            }
            if !report(Ok(Some(entry.size()))) {
                return;
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                match entry.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .is_err()
                        {
                            // The client went away.
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        }
        report(Ok(None));
    });
    let size = match found_rx.await {
        Ok(Ok(Some(size))) => size,
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(e)) => {
            return Err(Error::Registry(
                oci::RegistryError::new(
                    oci::ErrorCode::BlobUnknown,
                    format!("the layer is not a readable tar archive: {e}"),
                )
                .with_status(422),
            ));
        }
        Err(_) => {
            return Err(Error::Io(io::Error::other("reading the layer failed")));
        }
    };
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Some(FileOut {
        size,
        body: Box::pin(body),
    }))
}
