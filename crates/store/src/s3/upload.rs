//! Upload sessions on S3, kept entirely in the bucket so that the next
//! request of a session may land on any replica:
//!
//! ```text
//! _uploads/<id>/state        JSON: meta, size, multipart id and part ETags,
//!                            the tail's generation, the resume record
//! _uploads/<id>/tail-<gen>   bytes after the last part (less than a part)
//! _uploads/<id>/data         the multipart upload's key (an object only
//!                            once completed, at commit)
//! ```
//!
//! An append streams whole parts to the multipart upload as they fill
//! (two in flight at most), keeps what is left over as a new tail object,
//! then writes the state: the state object is the commit point. A part sent
//! by an append that then failed is simply sent again, under the same part
//! number, by the next append.
//!
//! Part sizes grow with the upload, `max(8 MiB, bytes so far / 1024)`, so
//! that a 1 TiB blob needs about 6,000 parts (S3 allows 10,000) while one
//! part buffer is the only memory an upload holds.

use super::{MIN_PART, S3Backend};
use crate::backend::{Backend, ByteStream, ObjectMeta, UploadStat, UploadWriter};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use std::io;
use std::time::SystemTime;
use tokio::task::JoinHandle;

/// Parts of one upload sent at once.
const PARTS_IN_FLIGHT: usize = 2;
/// S3's largest part.
const MAX_PART: u64 = 5 << 30;

/// The size of the part that starts after `sent` bytes.
/// An upload past 2^64 bytes (the counters would overflow).
fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "upload larger than 2^64 bytes")
}

pub(super) fn part_size(sent: u64) -> u64 {
    (sent / 1024).clamp(MIN_PART, MAX_PART)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// The registry's meta (base64); `None` for a private session.
    meta: Option<String>,
    /// Bytes in the session.
    size: u64,
    /// The multipart upload at `_uploads/<id>/data`, once a part was sent.
    multipart: Option<String>,
    /// The ETags of the parts, in order.
    parts: Vec<String>,
    /// Bytes in the parts; the tail holds `size - in_parts`.
    in_parts: u64,
    /// The generation of the tail object, if there is one.
    tail: Option<u64>,
    /// The registry's resume record at `size` (base64).
    resume: Option<String>,
}

fn bad_id(id: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("invalid upload id {id:?}"),
    )
}

fn gone(id: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("upload session {id} not found"),
    )
}

/// `_uploads/<id>/<name>`, for a well-formed id.
fn key(id: &str, name: &str) -> io::Result<String> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad_id(id));
    }
    Ok(format!("_uploads/{id}/{name}"))
}

fn tail_key(id: &str, generation: u64) -> io::Result<String> {
    key(id, &format!("tail-{generation}"))
}

impl S3Backend {
    async fn load(&self, id: &str) -> io::Result<Option<(State, ObjectMeta)>> {
        let k = key(id, "state")?;
        let path = self.raw_path(&k)?;
        let Some((body, meta)) = self.get_bytes(&k, &path).await? else {
            return Ok(None);
        };
        let state = serde_json::from_slice(&body).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upload session {id}: unreadable state: {e}"),
            )
        })?;
        Ok(Some((state, meta)))
    }

    async fn save(&self, id: &str, state: &State) -> io::Result<()> {
        let k = key(id, "state")?;
        let body = serde_json::to_vec(state).map_err(io::Error::other)?;
        self.put_raw(&k, &self.raw_path(&k)?, Bytes::from(body).into())
            .await
    }

    async fn read_tail(&self, id: &str, state: &State) -> io::Result<Bytes> {
        let Some(generation) = state.tail else {
            return Ok(Bytes::new());
        };
        let k = tail_key(id, generation)?;
        match self.get_bytes(&k, &self.raw_path(&k)?).await? {
            Some((b, _)) if b.len() as u64 == state.size - state.in_parts => Ok(b),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upload session {id}: its tail object is missing or damaged"),
            )),
        }
    }

    fn data_path(&self, id: &str) -> io::Result<Path> {
        self.raw_path(&key(id, "data")?)
    }
}

pub(super) async fn create(b: &S3Backend, id: &str, meta: Option<Bytes>) -> io::Result<()> {
    let state = State {
        meta: meta.map(|m| B64.encode(m)),
        ..State::default()
    };
    b.save(id, &state).await
}

pub(super) async fn stat(b: &S3Backend, id: &str) -> io::Result<Option<UploadStat>> {
    let Some((state, object)) = b.load(id).await? else {
        return Ok(None);
    };
    let Some(meta) = state.meta.as_deref() else {
        return Ok(None);
    };
    let decode = |s: &str| {
        B64.decode(s).map(Bytes::from).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upload session {id}: {e}"),
            )
        })
    };
    Ok(Some(UploadStat {
        meta: decode(meta)?,
        data: ObjectMeta {
            size: state.size,
            modified: object.modified,
        },
        resume: state.resume.as_deref().map(decode).transpose()?,
    }))
}

pub(super) async fn writer(
    b: &S3Backend,
    id: &str,
    offset: u64,
) -> io::Result<Box<dyn UploadWriter>> {
    let (state, _) = b.load(id).await?.ok_or_else(|| gone(id))?;
    if state.size != offset {
        return Err(io::Error::other(format!(
            "upload session {id} holds {} bytes, not {offset}",
            state.size
        )));
    }
    let tail = b.read_tail(id, &state).await?;
    let mut w = S3Writer {
        backend: b.clone(),
        id: id.to_owned(),
        data: b.data_path(id)?,
        sent: state.in_parts,
        state,
        buf: Vec::new(),
        buffered: 0,
        in_flight: FuturesOrdered::new(),
    };
    if !tail.is_empty() {
        w.buffered = tail.len() as u64;
        w.buf.push(tail);
    }
    Ok(Box::new(w))
}

pub(super) async fn truncate(b: &S3Backend, id: &str, len: u64) -> io::Result<()> {
    let (state, _) = b.load(id).await?.ok_or_else(|| gone(id))?;
    // A failed append saves nothing, so there is nothing to undo.
    if state.size == len {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "upload session {id} holds {} bytes and cannot be cut back to {len}",
            state.size
        )))
    }
}

pub(super) async fn read(b: &S3Backend, id: &str) -> io::Result<ByteStream> {
    let (state, _) = b.load(id).await?.ok_or_else(|| gone(id))?;
    if state.multipart.is_some() {
        // Parts of an unfinished multipart upload cannot be read back.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "upload session {id}: its data is in S3 multipart parts, which cannot be re-read before the upload completes"
            ),
        ));
    }
    let tail = b.read_tail(id, &state).await?;
    Ok(Box::pin(futures_util::stream::iter([Ok(tail)])))
}

pub(super) async fn commit(b: &S3Backend, id: &str, key_name: &str, dest: &Path) -> io::Result<()> {
    let (mut state, _) = b.load(id).await?.ok_or_else(|| gone(id))?;
    let store = &b.inner.store;
    let data = b.data_path(id)?;
    // Content-addressed keys: an object of the same size holds the same bytes.
    let present = b
        .head(key_name)
        .await?
        .is_some_and(|m| m.size == state.size);
    if present {
        if let Some(mp) = &state.multipart {
            abort_multipart(b, id, &data, mp).await;
        }
    } else if let Some(mp) = state.multipart.clone() {
        let tail = b.read_tail(id, &state).await?;
        if !tail.is_empty() {
            let part = store
                .put_part(&data, &mp, state.parts.len(), tail.into())
                .await
                .map_err(|e| b.error("PUT part", &format!("_uploads/{id}/data"), e))?;
            state.parts.push(part.content_id);
        }
        let parts = state
            .parts
            .iter()
            .map(|e| PartId {
                content_id: e.clone(),
            })
            .collect();
        if let Err(e) = store.complete_multipart(&data, &mp, parts).await {
            // Completed by an earlier attempt that failed after it?
            let done = store.head(&data).await.is_ok_and(|m| m.size == state.size);
            if !done {
                return Err(b.error("complete multipart", &format!("_uploads/{id}/data"), e));
            }
        }
        // The digest was only known now, so the object is copied to its
        // key; on Garage a copy shares the data blocks (no bytes move).
        store
            .copy(&data, dest)
            .await
            .map_err(|e| b.error("COPY to", key_name, e))?;
    } else {
        let tail = b.read_tail(id, &state).await?;
        b.put_raw(key_name, dest, tail.into()).await?;
    }
    remove_all(b, id).await
}

pub(super) async fn delete(b: &S3Backend, id: &str) -> io::Result<()> {
    if let Some((state, _)) = b.load(id).await?
        && let Some(mp) = &state.multipart
    {
        abort_multipart(b, id, &b.data_path(id)?, mp).await;
    }
    remove_all(b, id).await
}

async fn abort_multipart(b: &S3Backend, id: &str, data: &Path, mp: &str) {
    match b.inner.store.abort_multipart(data, &mp.to_owned()).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        // Left for the bucket's lifecycle rule on incomplete uploads.
        Err(e) => tracing::warn!(upload = id, error = %e, "could not abort a multipart upload"),
    }
}

/// Remove every object of the session, the state last (so a session whose
/// removal stops half-way is still listed, and expires again).
async fn remove_all(b: &S3Backend, id: &str) -> io::Result<()> {
    let dir = key(id, "")?;
    let mut keys: Vec<String> = b
        .list_raw(&dir)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort_by_key(|k| k == "state");
    for k in keys {
        let k = format!("{dir}{k}");
        b.delete_raw(&k, &b.raw_path(&k)?).await?;
    }
    Ok(())
}

pub(super) async fn list(b: &S3Backend) -> io::Result<Vec<(String, SystemTime)>> {
    // id -> last modified; the state's time wins over other objects'.
    let mut found: std::collections::BTreeMap<String, (SystemTime, bool)> = Default::default();
    for (k, meta) in b.list_raw("_uploads/").await? {
        let Some((id, name)) = k.split_once('/') else {
            continue;
        };
        let modified = meta.modified.unwrap_or(SystemTime::UNIX_EPOCH);
        let is_state = name == "state";
        let slot = found.entry(id.to_owned()).or_insert((modified, is_state));
        if is_state && !slot.1 {
            *slot = (modified, true);
        }
    }
    Ok(found.into_iter().map(|(id, (t, _))| (id, t)).collect())
}

/// Appends to a session: full parts go to the multipart upload as they
/// fill, the rest becomes the new tail when the append ends.
struct S3Writer {
    backend: S3Backend,
    id: String,
    data: Path,
    state: State,
    /// Bytes sent or being sent as parts.
    sent: u64,
    /// Bytes not yet in a part (the old tail first).
    buf: Vec<Bytes>,
    buffered: u64,
    in_flight: FuturesOrdered<JoinHandle<io::Result<String>>>,
}

impl S3Writer {
    /// Send the first `len` buffered bytes as the next part.
    async fn send_part(&mut self, len: u64) -> io::Result<()> {
        let mut part = Vec::new();
        let mut need = len;
        while need > 0 {
            let Some(first) = self.buf.first_mut() else {
                break;
            };
            let n = first.len() as u64;
            if n <= need {
                need -= n;
                part.push(self.buf.remove(0));
            } else {
                // `need` < `n`, a usize.
                part.push(first.split_to(need as usize));
                need = 0;
            }
        }
        self.buffered -= len;
        let mp = match &self.state.multipart {
            Some(mp) => mp.clone(),
            None => {
                let mp = self
                    .backend
                    .inner
                    .store
                    .create_multipart(&self.data)
                    .await
                    .map_err(|e| self.err("create multipart", e))?;
                // Recorded at once, so that it is aborted with the session
                // even if this append fails.
                self.state.multipart = Some(mp.clone());
                self.backend.save(&self.id, &self.state).await?;
                mp
            }
        };
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let index = self.state.parts.len() + self.in_flight.len();
        let backend = self.backend.clone();
        let path = self.data.clone();
        let id = self.id.clone();
        self.in_flight.push_back(tokio::spawn(async move {
            backend
                .inner
                .store
                .put_part(&path, &mp, index, PutPayload::from_iter(part))
                .await
                .map(|p| p.content_id)
                .map_err(|e| backend.error("PUT part", &format!("_uploads/{id}/data"), e))
        }));
        self.sent = self.sent.checked_add(len).ok_or_else(too_large)?;
        Ok(())
    }

    async fn join_one(&mut self) -> io::Result<()> {
        if let Some(done) = self.in_flight.next().await {
            let etag = done.map_err(io::Error::other)??;
            self.state.parts.push(etag);
        }
        Ok(())
    }

    fn err(&self, op: &str, e: object_store::Error) -> io::Error {
        self.backend
            .error(op, &format!("_uploads/{}/data", self.id), e)
    }
}

#[async_trait]
impl UploadWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        self.buffered = self
            .buffered
            .checked_add(data.len() as u64)
            .ok_or_else(too_large)?;
        self.buf.push(data);
        loop {
            let size = part_size(self.sent);
            if self.buffered < size {
                return Ok(());
            }
            self.send_part(size).await?;
        }
    }

    async fn finish(mut self: Box<Self>, resume: Option<Bytes>) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let old_tail = self.state.tail;
        self.state.in_parts = self.sent;
        self.state.size = self.sent.checked_add(self.buffered).ok_or_else(too_large)?;
        if self.buffered > 0 {
            let generation = old_tail.map_or(0, |g| g.wrapping_add(1));
            let k = tail_key(&self.id, generation)?;
            let payload = PutPayload::from_iter(std::mem::take(&mut self.buf));
            self.backend
                .put_raw(&k, &self.backend.raw_path(&k)?, payload)
                .await?;
            self.state.tail = Some(generation);
        } else {
            self.state.tail = None;
        }
        self.state.resume = resume.map(|r| B64.encode(r));
        self.backend.save(&self.id, &self.state).await?;
        if let Some(g) = old_tail.filter(|&g| Some(g) != self.state.tail) {
            let k = tail_key(&self.id, g)?;
            if let Err(e) = self
                .backend
                .delete_raw(&k, &self.backend.raw_path(&k)?)
                .await
            {
                tracing::warn!(upload = %self.id, error = %e, "could not remove an old tail");
            }
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> io::Result<()> {
        // Let parts in flight land now, so that none overwrites a part the
        // next append sends under the same number.
        while let Some(done) = self.in_flight.next().await {
            if let Ok(Err(e)) = done {
                tracing::debug!(upload = %self.id, error = %e, "a part of a failed append failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tebibyte_fits_in_s3s_part_limit() {
        let mut sent = 0u64;
        let mut parts = 0u32;
        while sent < 1 << 40 {
            sent += part_size(sent);
            parts += 1;
        }
        assert!(parts < 10_000, "{parts} parts");
        assert_eq!(part_size(0), MIN_PART);
        assert!(part_size(u64::MAX) <= MAX_PART);
    }

    #[test]
    fn ids_are_checked() {
        assert!(key("0f0e-aa", "state").is_ok());
        for bad in ["", "../x", "a/b", "a.b", "a b"] {
            assert!(key(bad, "state").is_err(), "{bad}");
        }
    }

    #[test]
    fn unavailable_is_recognised() {
        assert!(crate::backend::is_unavailable(
            &crate::backend::unavailable("x")
        ));
    }
}
