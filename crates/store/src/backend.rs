//! The object-store-shaped interface every storage backend implements.
//!
//! Keys are `/`-separated strings of `[A-Za-z0-9._:+-]` components (never empty,
//! `.` or `..`, never starting with `.`). A key may be both an object and the
//! prefix of other keys, as on S3.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

/// A stream of bytes read from or written to a backend.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// An object opened for reading: its metadata and the requested bytes.
pub struct ObjectReader {
    pub meta: ObjectMeta,
    pub body: ByteStream,
}

/// Appends bytes to an upload session's data.
#[async_trait]
pub trait UploadWriter: Send {
    async fn write(&mut self, data: Bytes) -> io::Result<()>;
    /// End a successful append: what was written is now part of the
    /// session. `resume` is the caller's record for continuing the session
    /// at its new length (the running digest state); a backend whose
    /// sessions can continue in another process keeps it with the session
    /// and returns it from [`Backend::upload_stat`]. Durability is only
    /// promised by `upload_commit`.
    async fn finish(self: Box<Self>, resume: Option<Bytes>) -> io::Result<()>;
    /// End a failed append. The caller then cuts the session back to its
    /// length before the append with [`Backend::upload_truncate`].
    async fn abort(self: Box<Self>) -> io::Result<()>;
}

/// An upload session as [`Backend::upload_stat`] finds it.
#[derive(Clone, Debug)]
pub struct UploadStat {
    /// The meta given to `upload_create`.
    pub meta: Bytes,
    /// Size and last-modified time of the session's data.
    pub data: ObjectMeta,
    /// The `resume` record of the last append, if the backend keeps them
    /// and it was saved at the data's current size.
    pub resume: Option<Bytes>,
}

/// The storage cannot be reached or refused to work (object storage down,
/// wrong credentials, a missing bucket). Wrapped in an `io::Error`; the
/// server answers 503 with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// An `io::Error` carrying [`Unavailable`].
pub fn unavailable(message: impl Into<String>) -> io::Error {
    io::Error::other(Unavailable(message.into()))
}

/// Is `e` (or an error it wraps) the storage being unavailable?
pub fn is_unavailable(e: &io::Error) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        match e.get_ref() {
            Some(inner) if inner.is::<Unavailable>() => return true,
            Some(inner) => cur = inner.downcast_ref::<io::Error>(),
            None => return false,
        }
    }
    false
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Can the storage serve requests now? Cheap (a readiness probe calls
    /// it every few seconds); the error says what is wrong.
    async fn ready(&self) -> io::Result<()>;

    async fn head(&self, key: &str) -> io::Result<Option<ObjectMeta>>;

    /// Read an object, or the half-open byte range `start..end` of it.
    /// The caller has checked the range against the size from `head`.
    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> io::Result<Option<ObjectReader>>;

    /// Read a small object whole (metadata: links, tags, manifests).
    async fn read(&self, key: &str) -> io::Result<Option<Bytes>>;

    /// Store an object atomically and durably: readers see the old object or
    /// the whole new one, and once this returns it survives a crash.
    async fn put(&self, key: &str, data: Bytes) -> io::Result<()>;

    /// Remove an object. Returns whether it existed.
    async fn delete(&self, key: &str) -> io::Result<bool>;

    /// Keys below `prefix` (which ends with `/`), relative to it, in lexical
    /// byte order, strictly after `start_after`, at most `limit` of them.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> io::Result<Vec<String>>;

    // Upload sessions: data that grows by appends and becomes an object on commit.

    /// Start an upload session holding `meta` (opaque to the backend). A
    /// session without meta is private to its caller: `upload_stat` does
    /// not find it, the other calls work.
    async fn upload_create(&self, id: &str, meta: Option<Bytes>) -> io::Result<()>;
    /// The session's meta, the size / last-modified time of its data and
    /// its resume record.
    async fn upload_stat(&self, id: &str) -> io::Result<Option<UploadStat>>;
    /// Append to the session's data, which must currently be `offset` bytes long.
    async fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>>;
    /// Cut the session's data back to `len` bytes (undo a failed append).
    async fn upload_truncate(&self, id: &str, len: u64) -> io::Result<()>;
    /// Read the session's data from the start. Only a fallback (a restart
    /// without a resume record, or a digest of another algorithm than the
    /// session's); a backend may refuse it with `Unsupported`.
    async fn upload_read(&self, id: &str) -> io::Result<ByteStream>;
    /// Make the session's data the object `key` (durably) and end the session.
    /// If `key` already exists with the session data's size, its content is
    /// kept (content-addressed keys: same key and size, same bytes); an
    /// existing object of another size is damaged (truncated) and is
    /// replaced atomically.
    async fn upload_commit(&self, id: &str, key: &str) -> io::Result<()>;
    /// End a session and remove its data.
    async fn upload_delete(&self, id: &str) -> io::Result<()>;
    /// Every session with the last-modified time of its data.
    async fn upload_list(&self) -> io::Result<Vec<(String, SystemTime)>>;

    /// The smallest chunk worth sending to this backend's upload sessions
    /// (advertised as `OCI-Chunk-Min-Length`); 0 when any size is fine.
    fn chunk_min_length(&self) -> u64 {
        0
    }

    /// A time-limited URL from which a client can GET the object `key`
    /// directly, if the backend offers them and is configured to.
    async fn presigned_get(&self, key: &str) -> io::Result<Option<String>> {
        let _ = key;
        Ok(None)
    }
}

/// Every key below a prefix, a page of listing at a time: what a walk over
/// the whole store holds in memory is one page.
pub struct KeyPages<'a> {
    backend: &'a dyn Backend,
    prefix: String,
    page: usize,
    after: Option<String>,
    done: bool,
}

impl<'a> KeyPages<'a> {
    pub fn new(backend: &'a dyn Backend, prefix: &str, page: usize) -> KeyPages<'a> {
        KeyPages {
            backend,
            prefix: prefix.to_owned(),
            page: page.max(1),
            after: None,
            done: false,
        }
    }

    /// The next page of keys (relative to the prefix), `None` at the end.
    pub async fn next(&mut self) -> io::Result<Option<Vec<String>>> {
        if self.done {
            return Ok(None);
        }
        let keys = self
            .backend
            .list(&self.prefix, self.after.as_deref(), self.page)
            .await?;
        match keys.last() {
            Some(last) if keys.len() == self.page => self.after = Some(last.clone()),
            _ => self.done = true,
        }
        Ok(Some(keys))
    }
}

/// Is `key` a well-formed backend key?
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'+')
                })
        })
}

pub(crate) fn invalid_key(key: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("invalid storage key {key:?}"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys() {
        assert!(super::valid_key("blobs/sha256/ab/abcd"));
        assert!(super::valid_key("repositories/a/b/_tags/v1.0"));
        for bad in [
            "", "/a", "a/", "a//b", "a/../b", "a/.x", "a/b~", "a b", "a\\b",
        ] {
            assert!(!super::valid_key(bad), "{bad}");
        }
    }
}
