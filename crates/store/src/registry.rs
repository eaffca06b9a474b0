//! The registry core: blobs, upload sessions, manifests, tags, referrers and
//! the catalog, with the rules of the distribution spec. No HTTP here.
//!
//! Concurrency: there is no global lock. Each upload session has its own
//! mutex (sessions are found through a sharded map); everything else is
//! atomic puts of immutable or last-writer-wins objects.

use crate::backend::{Backend, ByteStream, ObjectReader};
use crate::content_cache::ContentCache;
use crate::events::{Event, EventKind, EventSink};
use crate::gc;
use crate::hashing::StreamHasher;
use crate::keys;
use crate::quota::{self, Quotas, Room};
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use oci::manifest::{self, Descriptor, Kind, Manifest};
use oci::pattern::Pattern;
use oci::{
    Algorithm, ChunkRange, Digest, Digester, ErrorCode, Reference, RegistryError, RepoName, Tag,
};
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

/// A rule of immutable tags: a tag matching `tags` in a repository matching
/// `repos`, once set, keeps its digest for good: pushing another manifest
/// to it and deleting it (or the manifest it names) are refused with
/// `DENIED`, whoever asks. Pushing the same manifest again is fine.
#[derive(Clone, Debug)]
pub struct ImmutableTags {
    /// How errors name the rule, e.g. `immutable_tags #1: repos release/**, tags v*`.
    pub name: String,
    pub repos: Vec<Pattern>,
    pub tags: Vec<Pattern>,
}

impl ImmutableTags {
    pub(crate) fn covers(&self, name: &RepoName, tag: &Tag) -> bool {
        self.repos.iter().any(|p| p.matches(name.as_str()))
            && self.tags.iter().any(|p| p.matches(tag.as_str()))
    }
}

/// Stripes of the lock that makes "is this immutable tag set?" and
/// setting it one step within this process.
const TAG_LOCK_STRIPES: usize = 64;

/// Content known in advance up to this size is written with one put.
const SMALL_BLOB: usize = 256 << 10;

/// Reference checks of one manifest PUT run this many at a time.
const REFERENCE_CHECKS_IN_FLIGHT: usize = 8;

/// A referenced descriptor and the size of what the repository holds for it.
type SizeOf<'a> = (&'a Descriptor, Option<u64>);

/// Errors of the registry core: client-visible domain errors, kept apart
/// from storage failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A chunk did not start where the upload session ends (416).
    #[error("upload chunk out of order: the session holds {offset} bytes")]
    RangeNotSatisfiable { offset: u64 },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn err(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::Registry(RegistryError::new(code, message))
}

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Whether deletes (manifests, tags, blobs) are allowed.
    pub delete_enabled: bool,
    /// Tags that, once set, are never moved or deleted.
    pub immutable_tags: Vec<ImmutableTags>,
    /// Byte limits per repository pattern (docs/quotas.md).
    pub quotas: Vec<quota::Quota>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            delete_enabled: true,
            immutable_tags: Vec::new(),
            quotas: Vec::new(),
        }
    }
}

/// What a manifest link records.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestLink {
    media_type: String,
    size: u64,
    /// Stored by a pull-through cache ([`Registry::manifest_put_cached`]):
    /// the blobs and child manifests it names were not required to be
    /// present. Absent (false) on pushed manifests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
}

/// What an upload session's meta records (persisted: sessions survive restarts).
#[derive(Serialize, Deserialize)]
struct UploadMeta {
    repo: String,
    algorithm: String,
    created: u64,
}

/// In-memory state of an upload session: the running digest of its data.
struct Session {
    repo: String,
    /// The running digest and how many bytes it covers; `None` until known
    /// (after a restart it is rebuilt from the data on first use).
    hasher: Option<(Digester, u64)>,
    algorithm: Algorithm,
    /// The session ended (committed or cancelled) while a caller waited for it.
    ended: bool,
}

/// How an upload session ended. Every session that [`Registry::upload_start`]
/// announced ends exactly once in one of these ways (reported to the
/// [`SessionObserver`]); a request naming the session under another
/// repository, or failing part-way, ends nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// Its storage could not be created: the session never existed.
    NotCreated,
    /// Closed with the right digest: the blob is stored.
    Committed,
    /// Cancelled by the client (DELETE).
    Cancelled,
    /// Closed with a digest that does not match its data: removed.
    DigestMismatch,
    /// Idle longer than the expiry: removed.
    Expired,
    /// Its data disappeared from under it (removed outside this session's
    /// requests).
    Vanished,
    /// Refused by a quota: its data is removed.
    OverQuota,
}

/// Told when upload sessions end (the server's per-client session count
/// follows it). Called without any lock held that it could wait on; it must
/// not block.
pub trait SessionObserver: Send + Sync {
    fn ended(&self, id: &str, how: SessionEnd);
}

/// A manifest read back from the store.
#[derive(Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// The result of a manifest push.
#[derive(Debug)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub tags: Vec<Tag>,
}

/// A page of a listing and whether more entries follow.
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

pub struct Registry {
    backend: Arc<dyn Backend>,
    config: RegistryConfig,
    sessions: DashMap<String, Arc<Mutex<Session>>>,
    /// Repositories known to have a catalog entry, with the epoch of
    /// collector looks in which that was seen (saves a write per push; a
    /// collector may remove the entries of empty repositories, so an entry
    /// counts only while no collector has been at work since).
    known_repos: DashMap<String, u64>,
    /// Manifest bodies recently read, by digest.
    manifests: ContentCache,
    /// Told when a session ends.
    observer: Option<Arc<dyn SessionObserver>>,
    /// Serialises check-and-set of immutable tags (by stripe of the key).
    tag_locks: Vec<Mutex<()>>,
    /// When this process last saw no garbage collector at work.
    gc_idle: gc::fence::IdleSeen,
    /// The quotas and their usage records.
    quotas: Quotas,
    /// Told of every change (and pull) once it is in the store.
    events: Option<Arc<dyn EventSink>>,
}

/// Manifest bodies kept in memory: at most this many bytes in all...
const MANIFEST_CACHE_BYTES: usize = 1 << 20;
/// ...and none bigger than this.
const MANIFEST_CACHE_ENTRY: usize = 64 << 10;

/// The valid form of an upload session id (a UUID).
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
            }
        })
}

fn new_upload_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An upload whose size would not fit in a `u64` (a client can only claim
/// it, never send it).
fn too_large(offset: u64) -> Error {
    err(
        ErrorCode::SizeInvalid,
        format!("the upload holds {offset} bytes and cannot grow past 2^64 - 1"),
    )
}

fn upload_unknown() -> Error {
    err(
        ErrorCode::BlobUploadUnknown,
        "blob upload unknown to registry",
    )
}

fn blob_unknown(d: &Digest) -> Error {
    Error::Registry(
        RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(serde_json::json!({ "digest": d.to_string() })),
    )
}

fn digest_mismatch(expected: &Digest, actual: &Digest) -> Error {
    Error::Registry(
        RegistryError::new(
            ErrorCode::DigestInvalid,
            "provided digest did not match uploaded content",
        )
        .with_detail(
            serde_json::json!({ "expected": expected.to_string(), "actual": actual.to_string() }),
        ),
    )
}

/// The client's request body broke off (or its stream failed).
fn body_failed(e: io::Error) -> Error {
    err(
        ErrorCode::BlobUploadInvalid,
        format!("reading the request body failed: {e}"),
    )
}

/// A blob a collector is deleting at this moment: the client uploads it again.
fn being_collected(d: &Digest) -> Error {
    Error::Registry(
        RegistryError::new(
            ErrorCode::BlobUnknown,
            "blob is being garbage collected; upload it again",
        )
        .with_detail(serde_json::json!({ "digest": d.to_string() })),
    )
}

/// A push that met a retention rule removing what it wrote, for longer
/// than a writer waits.
fn being_retained(what: &str) -> Error {
    Error::Registry(
        RegistryError::new(
            ErrorCode::TooManyRequests,
            format!("{what} is being removed by a garbage collection run (retention, or an empty repository); push again"),
        )
        .with_detail(serde_json::json!({ "reference": what })),
    )
}

/// A push or delete an immutable-tags rule refuses.
fn immutable(name: &RepoName, tag: &Tag, rule: &ImmutableTags, what: &str) -> Error {
    Error::Registry(
        RegistryError::new(
            ErrorCode::Denied,
            format!(
                "tag {tag} of {name} is immutable (rule {}): it cannot be {what}",
                rule.name
            ),
        )
        .with_detail(serde_json::json!({
            "rule": rule.name,
            "repository": name.as_str(),
            "tag": tag.as_str(),
        })),
    )
}

fn manifest_unknown(r: &dyn std::fmt::Display) -> Error {
    Error::Registry(
        RegistryError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
            .with_detail(serde_json::json!({ "reference": r.to_string() })),
    )
}

impl Registry {
    pub fn new(backend: Arc<dyn Backend>, config: RegistryConfig) -> Registry {
        let quotas = Quotas::new(config.quotas.clone(), backend.clone());
        Registry {
            backend,
            config,
            sessions: DashMap::new(),
            known_repos: DashMap::new(),
            manifests: ContentCache::new(MANIFEST_CACHE_BYTES, MANIFEST_CACHE_ENTRY),
            observer: None,
            tag_locks: (0..TAG_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            gc_idle: gc::fence::IdleSeen::default(),
            quotas,
            events: None,
        }
    }

    /// Tell `sink` of every manifest pushed, tag set, manifest or tag
    /// deleted (and manifest pulled: [`Registry::record_pull`]), after the
    /// change is in the store and before the call that made it returns.
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Registry {
        self.events = Some(sink);
        self
    }

    /// Does the event sink want events of `kind` in `name`?
    fn wants(&self, kind: EventKind, name: &RepoName) -> bool {
        self.events.as_ref().is_some_and(|s| s.wants(kind, name))
    }

    /// Give the sink the events it wants of those of one operation. An
    /// error (the events could not be recorded) fails the operation, whose
    /// change stays made: see docs/events.md.
    async fn emit(&self, events: Vec<Event>) -> Result<()> {
        let Some(sink) = &self.events else {
            return Ok(());
        };
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| sink.wants(e.kind, &e.repository))
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        sink.emit(events).await.map_err(Error::Io)
    }

    /// A manifest was served to a client (a GET by `reference`): the pull
    /// event, if the sink wants one. The caller decides whether a failure
    /// matters (the server logs it and serves the manifest anyway).
    pub async fn record_pull(
        &self,
        name: &RepoName,
        reference: &Reference,
        m: &StoredManifest,
    ) -> Result<()> {
        if !self.wants(EventKind::ManifestPulled, name) {
            return Ok(());
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        self.emit(vec![Event {
            kind: EventKind::ManifestPulled,
            repository: name.clone(),
            digest: Some(m.digest.clone()),
            media_type: Some(m.media_type.clone()),
            size: Some(m.body.len() as u64),
            tag,
        }])
        .await
    }

    /// Report the end of every upload session to `observer`.
    pub fn with_session_observer(mut self, observer: Arc<dyn SessionObserver>) -> Registry {
        self.observer = Some(observer);
        self
    }

    /// The session `id` is over: forget it and say so. The one place where
    /// a session ends; `s` is its state when the caller holds its lock.
    fn end_session(&self, id: &str, s: Option<&mut Session>, how: SessionEnd) {
        if let Some(s) = s {
            s.ended = true;
        }
        self.sessions.remove(id);
        if let Some(o) = &self.observer {
            o.ended(id, how);
        }
    }

    /// The immutable-tags rules (retention never removes what they cover).
    pub fn immutable_tags(&self) -> &[ImmutableTags] {
        &self.config.immutable_tags
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    fn check_delete(&self) -> Result<()> {
        if self.config.delete_enabled {
            Ok(())
        } else {
            Err(err(
                ErrorCode::Unsupported,
                "deletes are disabled on this registry",
            ))
        }
    }

    /// Record the repository in the catalog index, before a write into it
    /// (under `quiet`, the writer's look for collectors): the collector
    /// walks repositories by their catalog entries, so an entry must exist
    /// before anything the repository holds does (docs/gc.md).
    async fn ensure_repo(&self, name: &RepoName, quiet: gc::fence::Quiet) -> Result<()> {
        if let Some(epoch) = quiet.epoch()
            && self
                .known_repos
                .get(name.as_str())
                .is_some_and(|e| *e == epoch)
        {
            return Ok(());
        }
        self.backend.put(&keys::catalog(name), Bytes::new()).await?;
        if let Some(epoch) = quiet.epoch() {
            self.known_repos.insert(name.as_str().to_owned(), epoch);
        }
        Ok(())
    }

    /// After the writes into `name` under `quiet`: unless no collector can
    /// have missed them, make sure none removes the repository's catalog
    /// entry (an empty repository's) after they were made. Never fails on a
    /// dead collector's marker: it waits [`gc::fence::SETTLE_WAIT`] at most.
    async fn settle_repo(&self, name: &RepoName, quiet: gc::fence::Quiet) -> Result<()> {
        let b = self.backend.as_ref();
        let settled = gc::fence::settle(
            b,
            &self.gc_idle,
            quiet,
            &gc::keys::repo_markers(name),
            &keys::catalog(name),
            &Bytes::new(),
        )
        .await?;
        if settled == gc::fence::Settled::TimedOut {
            // The marker's collector is dead, or past the short time it has
            // to remove the entry (EMPTY_REPO_BUDGET): the entry written
            // now stands.
            b.put(&keys::catalog(name), Bytes::new()).await?;
        }
        Ok(())
    }

    pub async fn repo_exists(&self, name: &RepoName) -> Result<bool> {
        Ok(self.backend.head(&keys::catalog(name)).await?.is_some())
    }

    // ---------------------------------------------------------------- blobs

    /// Size of a blob if it is in the repository.
    pub async fn blob_size(&self, name: &RepoName, d: &Digest) -> Result<Option<u64>> {
        // Both at once: one round trip to a remote store instead of two.
        let (link_key, blob_key) = (keys::repo_blob(name, d), keys::blob(d));
        let (link, content) =
            tokio::join!(self.backend.head(&link_key), self.backend.head(&blob_key));
        if link?.is_none() {
            return Ok(None);
        }
        Ok(content?.map(|m| m.size))
    }

    /// Open a blob of the repository, whole or the half-open range `start..end`.
    pub async fn blob_get(
        &self,
        name: &RepoName,
        d: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<ObjectReader> {
        if self
            .backend
            .head(&keys::repo_blob(name, d))
            .await?
            .is_none()
        {
            return Err(blob_unknown(d));
        }
        self.backend
            .get(&keys::blob(d), range)
            .await?
            .ok_or_else(|| blob_unknown(d))
    }

    /// A presigned URL of the blob's bytes when the backend is configured to
    /// hand them out (S3 with `redirect`); the caller has checked the
    /// repository's link.
    pub async fn blob_redirect(&self, d: &Digest) -> Result<Option<String>> {
        Ok(self.backend.presigned_get(&keys::blob(d)).await?)
    }

    /// Remove a blob from the repository (the content stays until garbage collection).
    pub async fn blob_delete(&self, name: &RepoName, d: &Digest) -> Result<()> {
        self.check_delete()?;
        if !self.backend.delete(&keys::repo_blob(name, d)).await? {
            return Err(blob_unknown(d));
        }
        self.quotas.recount_soon(name);
        Ok(())
    }

    /// Link a blob that is in the store into `name`. With `from`, the blob
    /// must be in that repository. Returns whether the mount happened.
    pub async fn mount(
        &self,
        name: &RepoName,
        d: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool> {
        if let Some(from) = from
            && self
                .backend
                .head(&keys::repo_blob(from, d))
                .await?
                .is_none()
        {
            return Ok(false);
        }
        let Some(content) = self.backend.head(&keys::blob(d)).await? else {
            return Ok(false);
        };
        let charge = self
            .quotas
            .admit(name, quota::Kind::Blob, d, content.size)
            .await?;
        self.link_blob(name, d).await?;
        self.quotas.record(name, charge).await?;
        Ok(true)
    }

    async fn link_blob(&self, name: &RepoName, d: &Digest) -> Result<()> {
        let b = self.backend.as_ref();
        let quiet = gc::fence::quiet(b, &self.gc_idle).await?;
        self.ensure_repo(name, quiet).await?;
        // Written even when it exists: its time is what the grace period of
        // garbage collection counts from, and a collector that looked at the
        // old time sees the new one when it looks again (docs/gc.md).
        let link = keys::repo_blob(name, d);
        b.put(&link, Bytes::new()).await?;
        // Unless no collector can have missed the writes, make sure none is
        // about to take the repository's entry, the link or the content
        // away, or just did.
        if !quiet.holds() {
            self.settle_repo(name, quiet).await?;
            if gc::fence::link_doomed(b, name, d).await?
                || gc::fence::content_doomed(b, d).await?
                || b.head(&keys::blob(d)).await?.is_none()
                || b.head(&link).await?.is_none()
            {
                return Err(being_collected(d));
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- uploads

    /// Start an upload session for `algorithm`; returns its id. `claim` is
    /// called with the id before the session exists, so whatever it records
    /// is in place before the session can end; if the session cannot be
    /// created, its end ([`SessionEnd::NotCreated`]) is reported.
    pub async fn upload_start(
        &self,
        name: &RepoName,
        algorithm: Algorithm,
        claim: impl FnOnce(&str),
    ) -> Result<String> {
        let id = new_upload_id();
        claim(&id);
        let meta = UploadMeta {
            repo: name.as_str().to_owned(),
            algorithm: algorithm.as_str().to_owned(),
            created: unix_now(),
        };
        let created = match serde_json::to_vec(&meta) {
            Ok(meta) => self.backend.upload_create(&id, Some(meta.into())).await,
            Err(e) => Err(io::Error::other(e)),
        };
        if let Err(e) = created {
            self.end_session(&id, None, SessionEnd::NotCreated);
            return Err(e.into());
        }
        let session = Session {
            repo: name.as_str().to_owned(),
            hasher: Some((algorithm.digester(), 0)),
            algorithm,
            ended: false,
        };
        self.sessions
            .insert(id.clone(), Arc::new(Mutex::new(session)));
        Ok(id)
    }

    /// Find a session of this repository, loading it from storage after a restart.
    async fn session(&self, name: &RepoName, id: &str) -> Result<Arc<Mutex<Session>>> {
        if !valid_upload_id(id) {
            return Err(upload_unknown());
        }
        // Clone the Arc out so the map's shard guard is released before awaiting.
        let cached = self.sessions.get(id).map(|entry| entry.value().clone());
        if let Some(s) = cached {
            if s.lock().await.repo != name.as_str() {
                return Err(upload_unknown());
            }
            return Ok(s);
        }
        let Some(stat) = self.backend.upload_stat(id).await? else {
            return Err(upload_unknown());
        };
        let meta: UploadMeta = serde_json::from_slice(&stat.meta).map_err(|_| upload_unknown())?;
        if meta.repo != name.as_str() {
            return Err(upload_unknown());
        }
        let algorithm = meta.algorithm.parse().map_err(|_| upload_unknown())?;
        let session = Arc::new(Mutex::new(Session {
            repo: meta.repo,
            hasher: None,
            algorithm,
            ended: false,
        }));
        Ok(self
            .sessions
            .entry(id.to_owned())
            .or_insert(session)
            .clone())
    }

    /// Current size of the session's data, bringing the running digest up to date.
    async fn session_offset(&self, id: &str, s: &mut Session) -> Result<u64> {
        if s.ended {
            return Err(upload_unknown());
        }
        let Some(stat) = self.backend.upload_stat(id).await? else {
            self.end_session(id, Some(s), SessionEnd::Vanished);
            return Err(upload_unknown());
        };
        let size = stat.data.size;
        // A backend shared by replicas keeps the running digest with the
        // session: it is the truth whoever appended last.
        let resumed = stat
            .resume
            .as_deref()
            .and_then(|r| Digester::restore_state(s.algorithm, r).ok());
        match (&s.hasher, resumed) {
            (_, Some(h)) => s.hasher = Some((h, size)),
            (Some((_, n)), None) if *n == size => {}
            _ => {
                // Only after a restart (or a failed write): re-read the data once.
                tracing::info!(
                    upload = id,
                    size,
                    "re-reading an upload's data to rebuild its digest"
                );
                s.hasher = match self.hash_upload(id, s.algorithm).await {
                    Ok(h) => Some(h),
                    // Finished or cancelled by another request meanwhile.
                    Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        self.end_session(id, Some(s), SessionEnd::Vanished);
                        return Err(upload_unknown());
                    }
                    Err(e) => return Err(e),
                };
            }
        }
        Ok(size)
    }

    /// Digest a session's data from the start: the digester and the byte count.
    async fn hash_upload(&self, id: &str, algorithm: Algorithm) -> Result<(Digester, u64)> {
        let mut h = algorithm.digester();
        let mut n = 0u64;
        let mut stream = self.backend.upload_read(id).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            h.update(&chunk);
            n += chunk.len() as u64;
        }
        Ok((h, n))
    }

    /// Bytes received so far by a session.
    pub async fn upload_status(&self, name: &RepoName, id: &str) -> Result<u64> {
        let s = self.session(name, id).await?;
        let mut s = s.lock().await;
        self.session_offset(id, &mut s).await
    }

    /// Append a chunk. `range` is the request's Content-Range (inclusive
    /// start and end) if it sent one. A chunk is all or nothing: if the body
    /// fails or does not match the range, the session is left as it was.
    pub async fn upload_append(
        &self,
        name: &RepoName,
        id: &str,
        body: ByteStream,
        range: Option<ChunkRange>,
    ) -> Result<u64> {
        self.upload_append_sized(name, id, body, range, None).await
    }

    /// [`Registry::upload_append`] of a body that says its length
    /// (`Content-Length`): a chunk that cannot fit the repository's quota
    /// is refused before any of it is read.
    pub async fn upload_append_sized(
        &self,
        name: &RepoName,
        id: &str,
        body: ByteStream,
        range: Option<ChunkRange>,
        declared: Option<u64>,
    ) -> Result<u64> {
        let s = self.session(name, id).await?;
        let mut s = s.lock().await;
        // The digest is not known yet: every byte counts.
        let room = self.quotas.room(name).await?;
        let cap = room.as_ref().map(|r| (name, r));
        let appended = self
            .append_locked(id, &mut s, body, range, declared, cap)
            .await;
        self.end_if_refused(id, &mut s, appended).await
    }

    /// A session a quota refused is over, its data removed: nothing is
    /// left behind.
    async fn end_if_refused<T>(&self, id: &str, s: &mut Session, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && quota::is_refusal(e)
        {
            self.end_session(id, Some(s), SessionEnd::OverQuota);
            if let Err(de) = self.backend.upload_delete(id).await {
                tracing::warn!(upload = id, error = %de, "could not remove a refused upload");
            }
        }
        r
    }

    /// Append to a session; with `cap`, the session may not grow past the
    /// room its quota leaves (a chunk that says it would is refused unread).
    async fn append_locked(
        &self,
        id: &str,
        s: &mut Session,
        body: ByteStream,
        range: Option<ChunkRange>,
        declared: Option<u64>,
        cap: Option<(&RepoName, &Room)>,
    ) -> Result<u64> {
        let offset = self.session_offset(id, s).await?;
        if let Some(r) = range
            && r.start() != offset
        {
            return Err(Error::RangeNotSatisfiable { offset });
        }
        if let Some((name, room)) = cap
            && let Some(len) = range.map(|r| r.len()).or(declared)
        {
            room.check(name, offset.saturating_add(len))?;
        }
        let Some((hasher, _)) = s.hasher.as_ref() else {
            return Err(upload_unknown());
        };
        match self
            .write_body(id, offset, hasher.clone(), body, range, cap)
            .await
        {
            Ok((hasher, size)) => {
                s.hasher = Some((hasher, size));
                Ok(size)
            }
            Err(e) => {
                // Undo the partial chunk; the running digest still covers `offset` bytes.
                if let Err(te) = self.backend.upload_truncate(id, offset).await {
                    tracing::warn!(upload = id, error = %te, "could not undo a failed chunk");
                    s.hasher = None;
                }
                Err(e)
            }
        }
    }

    /// Stream `body` onto the end of upload `id` (`offset` bytes long),
    /// digesting it on top of `hasher`. Returns the digester and the
    /// upload's new size; on failure the caller undoes whatever was written.
    /// A body longer than its `Content-Range` is refused as soon as it
    /// passes the range's length; with `cap`, as soon as the upload would
    /// pass the room its quota leaves (before the chunk is written).
    async fn write_body(
        &self,
        id: &str,
        offset: u64,
        hasher: Digester,
        mut body: ByteStream,
        range: Option<ChunkRange>,
        cap: Option<(&RepoName, &Room)>,
    ) -> Result<(Digester, u64)> {
        let expected = range.map(|r| r.len());
        let mismatch = |written: u64| match range {
            Some(r) => err(
                ErrorCode::SizeInvalid,
                format!("Content-Range {r} does not match the {written} bytes sent"),
            ),
            None => too_large(offset),
        };
        let mut hasher = StreamHasher::new(hasher, expected);
        let mut written = 0u64;
        let mut w = self.backend.upload_writer(id, offset).await?;
        let streamed: Result<(Digester, u64)> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(body_failed)?;
                written = u64::try_from(chunk.len())
                    .ok()
                    .and_then(|n| written.checked_add(n))
                    .filter(|&w| expected.is_none_or(|e| w <= e))
                    .ok_or_else(|| mismatch(written.saturating_add(chunk.len() as u64)))?;
                if let Some((name, room)) = cap
                    && offset.saturating_add(written) > room.left()
                {
                    return Err(room.refusal(name, offset.saturating_add(written), true));
                }
                hasher.update(&chunk).await?;
                w.write(chunk).await?;
            }
            match expected {
                Some(e) if e != written => Err(mismatch(written)),
                _ => Ok(()),
            }?;
            let size = offset
                .checked_add(written)
                .ok_or_else(|| too_large(offset))?;
            Ok((hasher.finish().await.map_err(Error::Io)?, size))
        }
        .await;
        // Stop the writer even after a failure, before anything else touches
        // the session: undoing the chunk must not race the writer's last writes.
        match streamed {
            Ok((hasher, size)) => {
                let resume = Bytes::from(hasher.save_state());
                w.finish(Some(resume)).await?;
                Ok((hasher, size))
            }
            Err(e) => {
                if let Err(ae) = w.abort().await {
                    tracing::warn!(upload = id, error = %ae, "stopping a failed append failed");
                }
                Err(e)
            }
        }
    }

    /// Close a session: append the final chunk (if any), verify the digest of
    /// the whole blob and make it visible in the repository.
    pub async fn upload_finish(
        &self,
        name: &RepoName,
        id: &str,
        body: Option<ByteStream>,
        range: Option<ChunkRange>,
        expected: &Digest,
    ) -> Result<u64> {
        self.upload_finish_sized(name, id, body, range, expected, None)
            .await
    }

    /// [`Registry::upload_finish`] with the final chunk's declared length
    /// (`Content-Length`), checked against the quota before it is read.
    /// The blob's size is checked again at the commit; a blob the quota
    /// refuses is removed, never linked.
    pub async fn upload_finish_sized(
        &self,
        name: &RepoName,
        id: &str,
        body: Option<ByteStream>,
        range: Option<ChunkRange>,
        expected: &Digest,
        declared: Option<u64>,
    ) -> Result<u64> {
        let s = self.session(name, id).await?;
        let mut s = s.lock().await;
        let link = keys::repo_blob(name, expected);
        let size = match body {
            Some(body) => {
                let room = self.quotas.room_for_new(name, &link).await?;
                let cap = room.as_ref().map(|r| (name, r));
                let appended = self
                    .append_locked(id, &mut s, body, range, declared, cap)
                    .await;
                self.end_if_refused(id, &mut s, appended).await?
            }
            None => self.session_offset(id, &mut s).await?,
        };
        let actual = match &s.hasher {
            Some((h, _)) if h.algorithm() == expected.algorithm() => h.clone().finish(),
            _ => {
                // The client chose another algorithm than the session's: hash again.
                self.hash_upload(id, expected.algorithm()).await?.0.finish()
            }
        };
        if &actual != expected {
            // The session is over whether or not its data can be removed
            // now (expiry removes what is left).
            self.end_session(id, Some(&mut s), SessionEnd::DigestMismatch);
            self.backend.upload_delete(id).await?;
            return Err(digest_mismatch(expected, &actual));
        }
        // The binding check, as late as can be: the size is final.
        let admitted = self
            .quotas
            .admit(name, quota::Kind::Blob, expected, size)
            .await;
        let charge = self.end_if_refused(id, &mut s, admitted).await?;
        self.backend
            .upload_commit(id, &keys::blob(expected))
            .await?;
        self.end_session(id, Some(&mut s), SessionEnd::Committed);
        self.link_blob(name, expected).await?;
        self.quotas.record(name, charge).await?;
        Ok(size)
    }

    /// Monolithic upload in one call (single POST with `digest`). No
    /// session is recorded: nobody else can see or resume it, so its data
    /// is a private upload that becomes the blob or is removed.
    pub async fn upload_whole(
        &self,
        name: &RepoName,
        body: ByteStream,
        expected: &Digest,
    ) -> Result<u64> {
        self.upload_whole_sized(name, body, expected, None).await
    }

    /// [`Registry::upload_whole`] of a body that says its length
    /// (`Content-Length`): refused before any of it is read if it cannot
    /// fit the repository's quota, and stopped as soon as it passes it.
    pub async fn upload_whole_sized(
        &self,
        name: &RepoName,
        body: ByteStream,
        expected: &Digest,
        declared: Option<u64>,
    ) -> Result<u64> {
        self.upload_whole_inner(name, body, expected, declared, None)
            .await
    }

    /// [`Registry::upload_whole`] that also says, on `verified`, when the
    /// whole body has arrived and matched `expected`: before the blob is
    /// committed (and fsync'ed), so a caller streaming the same bytes
    /// elsewhere can let them go. The blob may still fail to be stored
    /// (quota, disk) after that; the result says.
    pub async fn upload_whole_verified(
        &self,
        name: &RepoName,
        body: ByteStream,
        expected: &Digest,
        verified: tokio::sync::oneshot::Sender<()>,
    ) -> Result<u64> {
        self.upload_whole_inner(name, body, expected, None, Some(verified))
            .await
    }

    async fn upload_whole_inner(
        &self,
        name: &RepoName,
        body: ByteStream,
        expected: &Digest,
        declared: Option<u64>,
        verified: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<u64> {
        let room = self
            .quotas
            .room_for_new(name, &keys::repo_blob(name, expected))
            .await?;
        if let Some(room) = &room {
            room.check(name, declared.unwrap_or(0))?;
        }
        let cap = room.as_ref().map(|r| (name, r));
        let (size, charge) = self
            .store_blob_capped(body, expected, cap, verified)
            .await?;
        self.link_blob(name, expected).await?;
        self.quotas.record(name, charge).await?;
        Ok(size)
    }

    /// Store content whose digest is known in advance, verified while it
    /// streams, without linking it into any repository (a store copy
    /// brings the links itself). Nothing is left behind on failure.
    pub async fn store_blob(&self, body: ByteStream, expected: &Digest) -> Result<u64> {
        Ok(self.store_blob_capped(body, expected, None, None).await?.0)
    }

    /// [`Registry::store_blob`] for a new link in a repository under a
    /// quota (`cap`): stopped as soon as it passes the room the quota
    /// leaves, and checked once more before the content is stored; then
    /// the link's charge.
    async fn store_blob_capped(
        &self,
        mut body: ByteStream,
        expected: &Digest,
        cap: Option<(&RepoName, &Room)>,
        verified: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(u64, Option<quota::Charge>)> {
        // Small content (configs, small layers) is checked in memory and
        // written with one put: an upload session costs a dozen requests
        // on S3. Larger content streams through a session.
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_failed)?;
            buf.extend_from_slice(&chunk);
            if let Some((name, room)) = cap {
                room.check(name, buf.len() as u64)?;
            }
            if buf.len() > SMALL_BLOB {
                let head = buf.freeze();
                let whole = futures_util::stream::once(async move { Ok(head) }).chain(body);
                return self
                    .store_blob_streamed(Box::pin(whole), expected, cap, verified)
                    .await;
            }
        }
        let data = buf.freeze();
        let actual = Digest::of(expected.algorithm(), &data);
        if &actual != expected {
            return Err(digest_mismatch(expected, &actual));
        }
        if let Some(v) = verified {
            let _ = v.send(());
        }
        let key = keys::blob(expected);
        let size = data.len() as u64;
        let charge = self.admit_capped(expected, size, cap).await?;
        // Kept if present with the right size (content-addressed); a
        // damaged (truncated) copy is replaced.
        if self.backend.head(&key).await?.map(|m| m.size) != Some(size) {
            self.backend.put(&key, data).await?;
        }
        Ok((size, charge))
    }

    /// With a `cap`: the quota's binding check of a new link of `size`
    /// bytes, made again now that the size is final (others may have
    /// pushed since the cap was read).
    async fn admit_capped(
        &self,
        d: &Digest,
        size: u64,
        cap: Option<(&RepoName, &Room)>,
    ) -> Result<Option<quota::Charge>> {
        match cap {
            Some((name, _)) => self.quotas.admit(name, quota::Kind::Blob, d, size).await,
            None => Ok(None),
        }
    }

    /// [`Registry::store_blob`] through a private upload session.
    async fn store_blob_streamed(
        &self,
        body: ByteStream,
        expected: &Digest,
        cap: Option<(&RepoName, &Room)>,
        verified: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(u64, Option<quota::Charge>)> {
        let id = new_upload_id();
        self.backend.upload_create(&id, None).await?;
        let result = async {
            let (hasher, size) = self
                .write_body(&id, 0, expected.algorithm().digester(), body, None, cap)
                .await?;
            let actual = hasher.finish();
            if &actual != expected {
                return Err(digest_mismatch(expected, &actual));
            }
            if let Some(v) = verified {
                let _ = v.send(());
            }
            let charge = self.admit_capped(expected, size, cap).await?;
            self.backend
                .upload_commit(&id, &keys::blob(expected))
                .await?;
            Ok((size, charge))
        }
        .await;
        if result.is_err()
            && let Err(e) = self.backend.upload_delete(&id).await
        {
            tracing::warn!(upload = id, error = %e, "could not remove a failed upload");
        }
        result
    }

    pub async fn upload_cancel(&self, name: &RepoName, id: &str) -> Result<()> {
        let s = self.session(name, id).await?;
        let mut s = s.lock().await;
        if s.ended {
            return Err(upload_unknown());
        }
        self.end_session(id, Some(&mut s), SessionEnd::Cancelled);
        self.backend.upload_delete(id).await?;
        Ok(())
    }

    /// Remove sessions whose data has not changed for `max_age`. Sessions in
    /// use right now are left alone. Returns how many were removed.
    pub async fn expire_uploads(&self, max_age: Duration) -> Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for (id, modified) in self.backend.upload_list().await? {
            let age = now.duration_since(modified).unwrap_or_default();
            if age < max_age || !valid_upload_id(&id) {
                continue;
            }
            let session = self.sessions.get(&id).map(|entry| entry.value().clone());
            let mut guard = match &session {
                Some(s) => match s.try_lock() {
                    Ok(guard) => Some(guard),
                    // In use right now.
                    Err(_) => continue,
                },
                None => None,
            };
            self.end_session(&id, guard.as_deref_mut(), SessionEnd::Expired);
            drop(guard);
            self.backend.upload_delete(&id).await?;
            removed += 1;
        }
        Ok(removed)
    }

    // ------------------------------------------------------------ manifests

    async fn resolve(&self, name: &RepoName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => {
                let Some(raw) = self.backend.read(&keys::tag(name, t)).await? else {
                    return Err(manifest_unknown(t));
                };
                std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| Error::Io(io::Error::other(format!("corrupt tag {name}:{t}"))))
            }
        }
    }

    async fn manifest_link(&self, name: &RepoName, d: &Digest) -> Result<Option<ManifestLink>> {
        let Some(raw) = self.backend.read(&keys::repo_manifest(name, d)).await? else {
            return Ok(None);
        };
        let link = serde_json::from_slice(&raw)
            .map_err(|e| io::Error::other(format!("corrupt manifest link {name}@{d}: {e}")))?;
        Ok(Some(link))
    }

    /// Digest, media type and size of a manifest (HEAD).
    pub async fn manifest_head(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, String, u64)> {
        let d = self.resolve(name, reference).await?;
        let link = self
            .manifest_link(name, &d)
            .await?
            .ok_or_else(|| manifest_unknown(reference))?;
        Ok((d, link.media_type, link.size))
    }

    pub async fn manifest_get(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let (d, media_type, _) = self.manifest_head(name, reference).await?;
        let body = match self.manifests.get(&d) {
            Some(body) => body,
            None => {
                let body = self.backend.read(&keys::blob(&d)).await?.ok_or_else(|| {
                    io::Error::other(format!("manifest {d} is linked but its content is missing"))
                })?;
                self.manifests.insert(&d, &body);
                body
            }
        };
        Ok(StoredManifest {
            digest: d,
            media_type,
            body,
        })
    }

    /// Store a manifest (bytes exactly as pushed) under a tag or digest
    /// reference, plus any extra `tags`.
    pub async fn manifest_put(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: &[Tag],
    ) -> Result<PutManifest> {
        self.put_manifest(name, reference, content_type, body, extra_tags, false)
            .await
    }

    /// Store a manifest a pull-through cache fetched from its upstream
    /// (crates/mirror), under a tag or digest reference. Every rule of
    /// [`Registry::manifest_put`] holds (digest check, parsing, immutable
    /// tags, the order of writes, the garbage collector's fence on the
    /// manifest link, its body and its tag) but one: the blobs and child
    /// manifests it names need not be in the repository, since a cache
    /// fetches them when a client asks for them. Its link records that it
    /// was cached. What it names is kept by the collector like what any
    /// manifest names once it is there (docs/gc.md).
    pub async fn manifest_put_cached(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        self.put_manifest(name, reference, content_type, body, &[], true)
            .await
    }

    /// [`Registry::manifest_put`], or with `cached` its pull-through form.
    async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: &[Tag],
        cached: bool,
    ) -> Result<PutManifest> {
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of(algorithm, &body);
        if let Reference::Digest(d) = reference
            && d != &digest
        {
            return Err(Error::Registry(
                RegistryError::new(
                    ErrorCode::DigestInvalid,
                    "manifest digest does not match its content",
                )
                .with_detail(
                    serde_json::json!({ "expected": d.to_string(), "actual": digest.to_string() }),
                ),
            ));
        }
        let m = manifest::parse(content_type, &body)
            .map_err(|e| err(ErrorCode::ManifestInvalid, e.to_string()))?;
        if !cached {
            self.check_references(name, &m).await?;
        }
        let mut tags: Vec<Tag> = Vec::new();
        if let Reference::Tag(t) = reference {
            tags.push(t.clone());
        }
        for t in extra_tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        // Immutable tags: checked and set under this process's lock. (Two
        // replicas setting one new immutable tag at the same instant are
        // not serialised: S3 offers no compare-and-swap that Garage keeps.)
        let _held = self.lock_immutable_tags(name, &tags).await;
        for t in &tags {
            if let Some(rule) = self.immutable_rule(name, t)
                && let Some(current) = self.backend.read(&keys::tag(name, t)).await?
                && current.as_ref() != digest.to_string().as_bytes()
            {
                return Err(immutable(name, t, rule, "moved to another manifest"));
            }
        }

        // The quota first: a refused push writes nothing, and its check
        // (a listing) stays out of the fence's window below.
        let charge = self
            .quotas
            .admit(name, quota::Kind::Manifest, &digest, body.len() as u64)
            .await?;
        let b = self.backend.as_ref();
        // Before any write: whether a collector is at work (docs/gc.md).
        let quiet = gc::fence::quiet(b, &self.gc_idle).await?;
        self.ensure_repo(name, quiet).await?;
        let blob_key = keys::blob(&digest);
        // Kept if present with the right size; a damaged (truncated) copy
        // is replaced.
        if b.head(&blob_key).await?.map(|m| m.size) != Some(body.len() as u64) {
            b.put(&blob_key, body.clone()).await?;
        }
        let link = ManifestLink {
            media_type: m.media_type.clone(),
            size: body.len() as u64,
            cached,
        };
        let link_key = keys::repo_manifest(name, &digest);
        let link_value = Bytes::from(serde_json::to_vec(&link).map_err(io::Error::other)?);
        // Written even when it exists: its time is the manifest's push time
        // (retention counts from it), and a collector sees it change.
        b.put(&link_key, link_value.clone()).await?;
        let referrer = match &m.subject {
            Some(subject) => {
                let desc = Descriptor {
                    media_type: m.media_type.clone(),
                    digest: digest.clone(),
                    size: body.len() as u64,
                    urls: None,
                    annotations: m.annotations.clone(),
                    artifact_type: m.referrer_artifact_type(),
                    platform: None,
                };
                let entry = (
                    keys::referrer(name, &subject.digest, &digest),
                    Bytes::from(serde_json::to_vec(&desc).map_err(io::Error::other)?),
                );
                b.put(&entry.0, entry.1.clone()).await?;
                Some(entry)
            }
            None => None,
        };
        let subject = m.subject.as_ref().map(|s| s.digest.clone());
        let undo = || async {
            if let Some((key, _)) = &referrer {
                b.delete(key).await?;
            }
            b.delete(&link_key).await?;
            Ok::<_, io::Error>(())
        };
        // Unless no collector can have missed the writes, make sure none is
        // about to take the manifest away (a retention rule) or what it
        // names, or just did (docs/gc.md). The manifest first: if a
        // collector took it, it is written again, and what it names is
        // checked after that.
        if !quiet.holds() {
            self.settle_repo(name, quiet).await?;
            let markers = gc::keys::link_markers(name, &digest);
            match gc::fence::settle(b, &self.gc_idle, quiet, &markers, &link_key, &link_value)
                .await?
            {
                gc::fence::Settled::Kept => {}
                gc::fence::Settled::Contested => {
                    if let Some((key, value)) = &referrer {
                        b.put(key, value.clone()).await?;
                    }
                }
                gc::fence::Settled::TimedOut => {
                    undo().await?;
                    return Err(being_retained(&digest.to_string()));
                }
            }
            let gone = self.collected_references(name, &digest, &m, cached).await?;
            if !gone.is_empty() {
                undo().await?;
                return Err(Error::Registry(
                    RegistryError::new(
                        ErrorCode::ManifestBlobUnknown,
                        format!(
                            "manifest references content being garbage collected: {}; push it again",
                            gone.join(", ")
                        ),
                    )
                    .with_detail(serde_json::json!({ "digests": gone })),
                ));
            }
        }
        let value = Bytes::from(digest.to_string());
        for t in &tags {
            b.put(&keys::tag(name, t), value.clone()).await?;
        }
        // A retention rule may be removing a tag just written again.
        for t in &tags {
            let markers = gc::keys::tag_markers(name, t.as_str());
            let settled = gc::fence::settle(
                b,
                &self.gc_idle,
                quiet,
                &markers,
                &keys::tag(name, t),
                &value,
            )
            .await?;
            if settled == gc::fence::Settled::TimedOut {
                return Err(being_retained(&format!("{name}:{t}")));
            }
        }
        self.quotas.record(name, charge).await?;
        // What a cache stores for its clients is no push (docs/events.md).
        if !cached {
            let mut events = Vec::with_capacity(tags.len() + 1);
            let event = |kind, tag: Option<&Tag>| Event {
                kind,
                repository: name.clone(),
                digest: Some(digest.clone()),
                media_type: Some(m.media_type.clone()),
                size: Some(body.len() as u64),
                tag: tag.cloned(),
            };
            events.push(event(EventKind::ManifestPushed, None));
            for t in &tags {
                events.push(event(EventKind::TagSet, Some(t)));
            }
            self.emit(events).await?;
        }
        Ok(PutManifest {
            digest,
            subject,
            tags,
        })
    }

    /// What a just-written manifest needs that a collector is about to take
    /// or has taken: its own body, its blobs, the manifests an index lists
    /// (only its body when `cached`: a cache's manifest needs nothing else
    /// present).
    async fn collected_references(
        &self,
        name: &RepoName,
        digest: &Digest,
        m: &Manifest,
        cached: bool,
    ) -> Result<Vec<String>> {
        let b = self.backend.as_ref();
        let mut gone = Vec::new();
        // The manifest's own body too: pushed again after a delete, it may
        // be content a collector is about to take.
        if gc::fence::content_doomed(b, digest).await?
            || b.head(&keys::blob(digest)).await?.is_none()
        {
            gone.push(digest.to_string());
        }
        if cached {
            return Ok(gone);
        }
        for desc in m.required_blobs() {
            let d = &desc.digest;
            if gc::fence::link_doomed(b, name, d).await?
                || gc::fence::content_doomed(b, d).await?
                || self.blob_size(name, d).await?.is_none()
            {
                gone.push(d.to_string());
            }
        }
        for desc in &m.manifests {
            let d = &desc.digest;
            let present = self.manifest_link(name, d).await?.is_some()
                || self.blob_size(name, d).await?.is_some();
            if gc::fence::link_doomed(b, name, d).await?
                || gc::fence::content_doomed(b, d).await?
                || !present
            {
                gone.push(d.to_string());
            }
        }
        Ok(gone)
    }

    /// The first immutable-tags rule covering `tag` in `name`.
    fn immutable_rule(&self, name: &RepoName, tag: &Tag) -> Option<&ImmutableTags> {
        self.config
            .immutable_tags
            .iter()
            .find(|r| r.covers(name, tag))
    }

    /// Lock the stripes of the immutable ones among `tags`, in stripe
    /// order (so two pushes never wait on each other in a cycle).
    async fn lock_immutable_tags(
        &self,
        name: &RepoName,
        tags: &[Tag],
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let mut stripes: Vec<usize> = tags
            .iter()
            .filter(|t| self.immutable_rule(name, t).is_some())
            .map(|t| {
                let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(keys::tag(name, t));
                (h % TAG_LOCK_STRIPES as u64) as usize
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut held = Vec::with_capacity(stripes.len());
        for i in stripes {
            if let Some(lock) = self.tag_locks.get(i) {
                held.push(lock.lock().await);
            }
        }
        held
    }

    /// Every blob and child manifest a manifest names must be in the
    /// repository; the subject need not be.
    async fn check_references(&self, name: &RepoName, m: &Manifest) -> Result<()> {
        let mut missing = Vec::new();
        let mut wrong_size = Vec::new();
        // The checks are independent: a few at a time, so that a remote
        // store's latency is paid once per batch rather than per reference.
        let descs: Vec<&Descriptor> = match m.kind {
            Kind::Image => m.required_blobs().collect(),
            Kind::Index => m.manifests.iter().collect(),
        };
        // Boxed with an explicit `Send`: the compiler cannot prove it for
        // the closure's anonymous futures inside the server's handler.
        let checks: Vec<BoxFuture<'_, Result<SizeOf<'_>>>> = descs
            .into_iter()
            .map(|desc| {
                Box::pin(async move {
                    let size = match m.kind {
                        Kind::Image => self.blob_size(name, &desc.digest).await?,
                        Kind::Index => match self.manifest_link(name, &desc.digest).await? {
                            Some(link) => Some(link.size),
                            None => self.blob_size(name, &desc.digest).await?,
                        },
                    };
                    Ok((desc, size))
                }) as BoxFuture<'_, _>
            })
            .collect();
        let sizes = futures_util::stream::iter(checks)
            .buffered(REFERENCE_CHECKS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        for found in sizes {
            let (desc, size) = found?;
            match size {
                None => missing.push(desc.digest.to_string()),
                Some(size) if size != desc.size => wrong_size.push(desc.digest.to_string()),
                Some(_) => {}
            }
        }
        if !missing.is_empty() {
            return Err(Error::Registry(
                RegistryError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!(
                        "manifest references content unknown to this repository: {}",
                        missing.join(", ")
                    ),
                )
                .with_detail(serde_json::json!({ "digests": missing })),
            ));
        }
        if !wrong_size.is_empty() {
            return Err(Error::Registry(
                RegistryError::new(
                    ErrorCode::ManifestInvalid,
                    format!(
                        "descriptor size does not match the stored content: {}",
                        wrong_size.join(", ")
                    ),
                )
                .with_detail(serde_json::json!({ "digests": wrong_size })),
            ));
        }
        Ok(())
    }

    /// Delete a tag (only the tag) or a manifest (and every tag pointing at it).
    pub async fn manifest_delete(&self, name: &RepoName, reference: &Reference) -> Result<()> {
        self.check_delete()?;
        match reference {
            Reference::Tag(t) => {
                if let Some(rule) = self.immutable_rule(name, t)
                    && self.backend.head(&keys::tag(name, t)).await?.is_some()
                {
                    return Err(immutable(name, t, rule, "deleted"));
                }
                // The digest it names, for the event (one read, only when
                // an event is wanted).
                let named = if self.wants(EventKind::TagDeleted, name) {
                    self.backend
                        .read(&keys::tag(name, t))
                        .await?
                        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
                } else {
                    None
                };
                if !self.backend.delete(&keys::tag(name, t)).await? {
                    return Err(manifest_unknown(t));
                }
                self.emit(vec![Event {
                    kind: EventKind::TagDeleted,
                    repository: name.clone(),
                    digest: named,
                    media_type: None,
                    size: None,
                    tag: Some(t.clone()),
                }])
                .await
            }
            Reference::Digest(d) => {
                let Some(link) = self.manifest_link(name, d).await? else {
                    return Err(manifest_unknown(d));
                };
                self.delete_manifest_and_tags(name, d, &link, true).await
            }
        }
    }

    /// Evict a manifest a pull-through cache stored
    /// ([`Registry::manifest_put_cached`]) and the tags pointing at it, as
    /// [`Registry::manifest_delete`] does but whatever `delete_enabled`
    /// says. Returns `false`, deleting nothing, when the link is gone or
    /// was not stored by the cache (a pushed manifest), or a tag pointing
    /// at it is immutable. Its blobs are left to garbage collection.
    pub async fn manifest_evict_cached(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        let link = match self.manifest_link(name, d).await? {
            Some(link) if link.cached => link,
            _ => return Ok(false),
        };
        // What a cache stores is no push, and its eviction no delete: no events.
        match self.delete_manifest_and_tags(name, d, &link, false).await {
            Ok(()) => Ok(true),
            Err(Error::Registry(e)) if e.code == ErrorCode::Denied => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Delete the manifest link `d` of `name` (its `link`), the tags
    /// pointing at it first (none may be immutable), and its referrer
    /// entry; tell the event sink when `events` says so.
    async fn delete_manifest_and_tags(
        &self,
        name: &RepoName,
        d: &Digest,
        link: &ManifestLink,
        tell: bool,
    ) -> Result<()> {
        // The tags pointing at it go with it: none may be immutable.
        let value = d.to_string();
        let prefix = keys::tags_prefix(name);
        let mut pointing = Vec::new();
        for tag in self.backend.list(&prefix, None, usize::MAX).await? {
            let key = format!("{prefix}{tag}");
            if let Some(v) = self.backend.read(&key).await?
                && v.as_ref() == value.as_bytes()
            {
                if let Ok(t) = Tag::parse(&tag)
                    && let Some(rule) = self.immutable_rule(name, &t)
                {
                    return Err(immutable(name, &t, rule, "deleted with its manifest"));
                }
                pointing.push((key, tag));
            }
        }
        // Tags first, so no tag ever points at a missing manifest.
        let mut events = Vec::with_capacity(pointing.len() + 1);
        for (key, tag) in pointing {
            if self.backend.delete(&key).await?
                && let Ok(tag) = Tag::parse(&tag)
            {
                events.push(Event {
                    kind: EventKind::TagDeleted,
                    repository: name.clone(),
                    digest: Some(d.clone()),
                    media_type: Some(link.media_type.clone()),
                    size: Some(link.size),
                    tag: Some(tag),
                });
            }
        }
        if let Some(body) = self.backend.read(&keys::blob(d)).await?
            && let Ok(m) = manifest::parse(None, &body)
            && let Some(subject) = m.subject
        {
            self.backend
                .delete(&keys::referrer(name, &subject.digest, d))
                .await?;
        }
        self.backend.delete(&keys::repo_manifest(name, d)).await?;
        self.quotas.recount_soon(name);
        if !tell {
            return Ok(());
        }
        events.push(Event {
            kind: EventKind::ManifestDeleted,
            repository: name.clone(),
            digest: Some(d.clone()),
            media_type: Some(link.media_type.clone()),
            size: Some(link.size),
            tag: None,
        });
        self.emit(events).await
    }

    // ------------------------------------------------------------- listings

    async fn page(&self, prefix: &str, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let limit = n.unwrap_or(usize::MAX);
        let mut items = self
            .backend
            .list(prefix, last, limit.saturating_add(1))
            .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, more })
    }

    /// Tags of a repository in byte order, `n` at most, after `last`.
    pub async fn tags(
        &self,
        name: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        if !self.repo_exists(name).await? {
            return Err(Error::Registry(
                RegistryError::new(
                    ErrorCode::NameUnknown,
                    "repository name not known to registry",
                )
                .with_detail(serde_json::json!({ "name": name.as_str() })),
            ));
        }
        self.page(&keys::tags_prefix(name), n, last).await
    }

    /// The digest a tag points at and when it was last set (the tag
    /// object's modification time, where the backend keeps one); `None`
    /// when the repository has no such tag. For listings that show tags
    /// with their push time (the web UI): one read and one head per tag.
    pub async fn tag_info(
        &self,
        name: &RepoName,
        tag: &Tag,
    ) -> Result<Option<(Digest, Option<SystemTime>)>> {
        let key = keys::tag(name, tag);
        let (raw, meta) = tokio::join!(self.backend.read(&key), self.backend.head(&key));
        let Some(raw) = raw? else {
            return Ok(None);
        };
        let d = std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::Io(io::Error::other(format!("corrupt tag {name}:{tag}"))))?;
        Ok(Some((d, meta?.and_then(|m| m.modified))))
    }

    /// Repository names in byte order, `n` at most, after `last`.
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        self.page(keys::CATALOG_PREFIX, n, last).await
    }

    /// Like [`Registry::catalog`], listing only the names `keep` accepts:
    /// `n` of those at most, after `last`. Reads the catalog in batches
    /// until the page is full, so a caller who may see few repositories
    /// costs a longer scan, never a wrong page.
    pub async fn catalog_where(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Page> {
        let limit = n.unwrap_or(usize::MAX);
        let batch = limit.saturating_add(1).clamp(64, 1000);
        let mut items = Vec::new();
        let mut cursor = last.map(str::to_owned);
        loop {
            let got = self
                .backend
                .list(keys::CATALOG_PREFIX, cursor.as_deref(), batch)
                .await?;
            let done = got.len() < batch;
            cursor = got.last().cloned();
            for name in got {
                if keep(&name) {
                    if items.len() == limit {
                        return Ok(Page { items, more: true });
                    }
                    items.push(name);
                }
            }
            if done {
                return Ok(Page { items, more: false });
            }
        }
    }

    /// Descriptors of the manifests in `name` whose subject is `subject`,
    /// optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let prefix = keys::referrers_prefix(name, subject);
        let mut out = Vec::new();
        for entry in self.backend.list(&prefix, None, usize::MAX).await? {
            let Some(raw) = self.backend.read(&format!("{prefix}{entry}")).await? else {
                continue;
            };
            let desc: Descriptor = match serde_json::from_slice(&raw) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(repo = %name, entry, error = %e, "skipping a corrupt referrer entry");
                    continue;
                }
            };
            if artifact_type.is_none_or(|a| desc.artifact_type.as_deref() == Some(a)) {
                out.push(desc);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
