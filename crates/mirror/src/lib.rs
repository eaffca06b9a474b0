//! Wharf's pull-through cache.
//!
//! Local repositories below an upstream's prefix (`[[upstreams]]`,
//! [`config`]) are cached from that upstream: a manifest or blob a client
//! asks for that the store does not hold is fetched from the upstream,
//! verified against its digest and stored through the same
//! `store::Registry` API a push uses, so cached content is deduplicated
//! with pushed content and collected like it (docs/gc.md). The server asks
//! this crate only after authentication and authorization.
//!
//! - Manifests by digest are immutable: served from the store when there,
//!   else fetched once.
//! - Manifests by tag are trusted for `tag_ttl_secs` after the upstream
//!   last confirmed them (the time lives in the store, [`fresh`], so
//!   replicas agree), then revalidated with a HEAD; a changed digest
//!   fetches the new manifest and moves the tag. When the upstream fails
//!   (unreachable, 429, 5xx, timeout) a cached tag checked within
//!   `max_stale_secs` is served, marked stale.
//! - Blobs are fetched once however many clients ask at the same time,
//!   and streamed to all of them while they are stored ([`fetch`]).
//!
//! - A request sent to Wharf as a mirror of a registry, containerd's way
//!   (`/v2/<name>/...?ns=<registry>`), is one on `<prefix>/<name>` of the
//!   upstream whose registry host `ns` is ([`local_for_ns`]); the server
//!   maps it before authorization.
//! - A request on an upstream's own address (`listen`), where it is
//!   served at the root for the Docker daemon's `registry-mirrors`
//!   (`/v2/library/alpine/...`), is one on `<prefix>/<name>` too
//!   ([`local_for_root`]).
//!
//! Nothing mutable is kept in memory but the fetches in progress.

pub mod config;
pub mod evict;
pub mod fetch;
pub mod fresh;
pub mod upstream;

pub use config::UpstreamConfig;
pub use fetch::Fetch;

use bytes::Bytes;
use oci::{Digest, ErrorCode, Reference, RegistryError, RepoName, Tag};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use store::Registry;
use tokio::sync::watch;
use upstream::{Failure, Upstream};

type Result<T> = std::result::Result<T, store::Error>;

/// How a manifest was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the store, without asking the upstream.
    Hit,
    /// From the store, after the upstream confirmed the tag.
    Revalidated,
    /// Fetched from the upstream now.
    Miss,
    /// From the store although its tag could not be revalidated: the
    /// upstream failed.
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

/// A manifest for a client.
#[derive(Clone, Debug)]
pub struct ManifestAnswer {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
    pub cache: CacheStatus,
}

/// How to answer a blob GET or HEAD.
pub enum BlobAnswer {
    /// The repository holds it now: serve it from the store.
    Local,
    /// HEAD of a blob that is not cached: the upstream's size.
    Upstream { size: u64 },
    /// Being fetched: stream it with [`fetch::reader`].
    Fetching(Arc<Fetch>),
}

/// A repository's upstream, and its name there.
#[derive(Clone)]
pub struct Route {
    pub upstream: Arc<Upstream>,
    pub remote: RepoName,
}

impl Route {
    /// Does the upstream's configuration accept pushes into its prefix?
    pub fn push_allowed(&self) -> bool {
        self.upstream.spec.push
    }

    /// The 403 for a push into a cached prefix.
    pub fn push_refused(&self, local: &RepoName) -> RegistryError {
        let s = &self.upstream.spec;
        RegistryError::new(
            ErrorCode::Denied,
            format!(
                "repository {local} is a pull-through cache of upstream {} ({}): pushes into {}/ are refused (set push = true in its [[upstreams]] entry to allow them)",
                s.name, s.url, s.prefix
            ),
        )
        .with_detail(serde_json::json!({
            "name": local.as_str(),
            "upstream": s.name,
            "url": s.url,
        }))
    }
}

/// How long a finished fetch stays joinable.
const JOIN_AFTER_DONE: std::time::Duration = std::time::Duration::from_secs(3);

/// Tag revalidations in progress, by `repository:tag`: the digest the
/// upstream confirmed, or why it could not.
type TagFlights = HashMap<String, Arc<tokio::sync::OnceCell<std::result::Result<Digest, Failure>>>>;

/// Blob fetches in progress, by local repository and digest.
type InFlight = HashMap<(String, String), (u64, watch::Receiver<fetch::Phase>)>;

pub struct Mirror {
    upstreams: Vec<Arc<Upstream>>,
    registry: Arc<Registry>,
    max_manifest_size: usize,
    blobs: Arc<Mutex<InFlight>>,
    tags: Mutex<TagFlights>,
    next_fetch: std::sync::atomic::AtomicU64,
    /// Pulls recorded lately, for upstreams with a `max_size`.
    pulls: Arc<evict::PullLog>,
}

impl Mirror {
    /// The cache for `configs` (checked as at startup), or `None` when there
    /// are no upstreams.
    pub fn new(
        configs: &[UpstreamConfig],
        registry: Arc<Registry>,
        max_name_length: usize,
        max_manifest_size: usize,
    ) -> std::result::Result<Option<Mirror>, String> {
        if configs.is_empty() {
            return Ok(None);
        }
        let upstreams = config::check(configs, max_name_length)?
            .into_iter()
            .map(|s| Upstream::new(s).map(Arc::new))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some(Mirror {
            upstreams,
            registry,
            max_manifest_size,
            blobs: Arc::new(Mutex::new(HashMap::new())),
            tags: Mutex::new(HashMap::new()),
            next_fetch: std::sync::atomic::AtomicU64::new(0),
            pulls: Arc::new(evict::PullLog::default()),
        }))
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &config::UpstreamSpec> {
        self.upstreams.iter().map(|u| &u.spec)
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&config::UpstreamSpec> {
        self.upstreams().find(|s| s.name == name)
    }

    /// Each upstream's name and traffic counts, in configuration order.
    pub fn stats(&self) -> impl Iterator<Item = (&str, &upstream::Stats)> {
        self.upstreams
            .iter()
            .map(|u| (u.spec.name.as_str(), &u.stats))
    }

    /// The upstream of a local repository, if it is below a prefix.
    pub fn route(&self, local: &RepoName) -> Option<Route> {
        self.upstreams.iter().find_map(|u| {
            u.spec.upstream_repo(local).map(|remote| Route {
                upstream: u.clone(),
                remote,
            })
        })
    }

    // ------------------------------------------------------------ manifests

    /// A manifest of `local` (below `route`'s prefix) by tag or digest.
    pub async fn manifest(
        &self,
        route: &Route,
        local: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestAnswer> {
        let m = match reference {
            Reference::Digest(d) => self.manifest_by_digest(route, local, d).await,
            Reference::Tag(t) => self.manifest_by_tag(route, local, t).await,
        }?;
        self.note_pull(route, local, &m.digest);
        Ok(m)
    }

    /// For an upstream with a cap: record (in the background, once an hour
    /// at most) that a manifest was pulled.
    fn note_pull(&self, route: &Route, local: &RepoName, d: &Digest) {
        if route.upstream.spec.max_size.is_none() || !self.pulls.due(local, d) {
            return;
        }
        let (registry, pulls) = (self.registry.clone(), self.pulls.clone());
        let (local, d) = (local.clone(), d.clone());
        tokio::spawn(async move {
            if let Err(e) = evict::record(registry.backend().as_ref(), &local, &d).await {
                pulls.forget(&local, &d);
                tracing::warn!(target: "wharf::mirror", repo = %local, digest = %d, error = %e, "could not record a pull");
            }
        });
    }

    /// Start checking each upstream with a `max_size` against it every
    /// `evict_interval_secs` (docs/mirror.md, "Size caps"): the tasks, to
    /// abort at shutdown.
    pub fn start_eviction(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.upstreams
            .iter()
            .filter_map(|u| u.spec.max_size.map(|cap| (u.spec.clone(), cap)))
            .map(|(spec, cap)| {
                let registry = self.registry.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(spec.evict_interval).await;
                        match evict::run(&registry, &spec, cap).await {
                            Ok(r) if !r.evicted.is_empty() => {
                                tracing::info!(target: "wharf::mirror", upstream = %spec.name, max_size = cap, usage_before = r.usage_before, usage_after = r.usage_after, evicted = r.evicted.len(), "the upstream's cached content was over its max_size: evicted the least recently pulled images");
                            }
                            Ok(r) => {
                                tracing::debug!(target: "wharf::mirror", upstream = %spec.name, max_size = cap, usage = r.usage_before, "cached content under max_size");
                            }
                            Err(e) => {
                                tracing::warn!(target: "wharf::mirror", upstream = %spec.name, error = %e, "could not check the cached content against max_size");
                            }
                        }
                    }
                })
            })
            .collect()
    }

    /// A manifest in the store, or `None`.
    async fn stored(&self, local: &RepoName, d: &Digest) -> Result<Option<ManifestAnswer>> {
        match self
            .registry
            .manifest_get(local, &Reference::Digest(d.clone()))
            .await
        {
            Ok(m) => Ok(Some(ManifestAnswer {
                digest: m.digest,
                media_type: m.media_type,
                body: m.body,
                cache: CacheStatus::Hit,
            })),
            Err(store::Error::Registry(e)) if e.code == ErrorCode::ManifestUnknown => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn manifest_by_digest(
        &self,
        route: &Route,
        local: &RepoName,
        d: &Digest,
    ) -> Result<ManifestAnswer> {
        if let Some(m) = self.stored(local, d).await? {
            return Ok(m);
        }
        let m = self.fetch_manifest(route, d).await.map_err(|f| {
            upstream_error(
                route,
                &f,
                ErrorCode::ManifestUnknown,
                &format!("{}@{d}", route.remote),
            )
        })?;
        self.keep(route, local, &Reference::Digest(d.clone()), &m)
            .await?;
        Ok(m)
    }

    /// GET a manifest by digest upstream (verified by the client crate).
    async fn fetch_manifest(
        &self,
        route: &Route,
        d: &Digest,
    ) -> std::result::Result<ManifestAnswer, Failure> {
        let m = route.upstream.get_manifest(&route.remote, d).await?;
        if m.bytes.len() > self.max_manifest_size {
            return Err(Failure::Bad {
                status: Some(200),
                message: format!(
                    "the manifest has {} bytes, over this registry's limit of {} (limits.max_manifest_size)",
                    m.bytes.len(),
                    self.max_manifest_size
                ),
            });
        }
        tracing::info!(target: "wharf::mirror", upstream = %route.upstream.spec.name, repo = %route.remote, digest = %m.digest, "fetched a manifest from the upstream");
        Ok(ManifestAnswer {
            digest: m.digest,
            media_type: m.media_type,
            body: Bytes::from(m.bytes),
            cache: CacheStatus::Miss,
        })
    }

    /// Store a fetched manifest under `reference`. A manifest the registry
    /// refuses (one it cannot parse) is an error of the upstream's; a
    /// storage failure is logged and the manifest still served.
    async fn keep(
        &self,
        route: &Route,
        local: &RepoName,
        reference: &Reference,
        m: &ManifestAnswer,
    ) -> Result<bool> {
        match self
            .registry
            .manifest_put_cached(local, reference, Some(&m.media_type), m.body.clone())
            .await
        {
            Ok(_) => Ok(true),
            Err(store::Error::Registry(e)) if e.code == ErrorCode::ManifestInvalid => {
                let f = Failure::Bad {
                    status: Some(200),
                    message: e.message,
                };
                Err(upstream_error(
                    route,
                    &f,
                    ErrorCode::ManifestUnknown,
                    &format!("{}:{reference}", route.remote),
                ))
            }
            Err(e) => {
                tracing::warn!(target: "wharf::mirror", upstream = %route.upstream.spec.name, repo = %local, %reference, error = %e, "could not cache a manifest; serving it uncached");
                Ok(false)
            }
        }
    }

    async fn manifest_by_tag(
        &self,
        route: &Route,
        local: &RepoName,
        tag: &Tag,
    ) -> Result<ManifestAnswer> {
        let spec = &route.upstream.spec;
        let b = self.registry.backend().as_ref();
        let cached = match self
            .registry
            .manifest_head(local, &Reference::Tag(tag.clone()))
            .await
        {
            Ok((d, _, _)) => Some(d),
            Err(store::Error::Registry(e)) if e.code == ErrorCode::ManifestUnknown => None,
            Err(e) => return Err(e),
        };
        let record = fresh::read(b, local, tag).await?.filter(|r| {
            r.upstream == spec.name && cached.as_ref().is_some_and(|d| r.digest == d.to_string())
        });
        if let (Some(d), Some(r)) = (&cached, &record)
            && r.age() < spec.tag_ttl
            && let Some(m) = self.stored(local, d).await?
        {
            return Ok(m);
        }
        let what = format!("{}:{tag}", route.remote);
        match self
            .revalidate_once(route, local, tag, cached.as_ref())
            .await
        {
            Ok(m) => Ok(m),
            Err(f) => {
                if f.is_transient()
                    && let (Some(d), Some(r)) = (&cached, &record)
                    && r.age() < spec.max_stale
                    && let Some(mut m) = self.stored(local, d).await?
                {
                    tracing::warn!(
                        target: "wharf::mirror",
                        upstream = %spec.name,
                        repo = %local,
                        %tag,
                        digest = %d,
                        checked_secs_ago = r.age().as_secs(),
                        error = f.message(),
                        "the upstream failed: serving the cached tag stale"
                    );
                    m.cache = CacheStatus::Stale;
                    return Ok(m);
                }
                if matches!(f, Failure::NotFound(_))
                    && spec.push
                    && let Some(d) = &cached
                    && let Some(m) = self.stored(local, d).await?
                {
                    // Pushed here: the upstream never had it.
                    return Ok(m);
                }
                Err(upstream_error(route, &f, ErrorCode::ManifestUnknown, &what))
            }
        }
    }

    /// [`Mirror::revalidate`], once for all the requests of this process
    /// that need it at the same time: the first asks the upstream, the
    /// others wait for it and then read what it stored (or share its
    /// failure, so that a stalled upstream costs each of them one timeout,
    /// not one each in turn).
    async fn revalidate_once(
        &self,
        route: &Route,
        local: &RepoName,
        tag: &Tag,
        cached: Option<&Digest>,
    ) -> std::result::Result<ManifestAnswer, Failure> {
        let key = format!("{local}:{tag}");
        let cell = self.lock_tags().entry(key.clone()).or_default().clone();
        let mut mine = None;
        let shared = cell
            .get_or_init(|| async {
                let r = self.revalidate(route, local, tag, cached).await;
                let shared = r.as_ref().map(|m| m.digest.clone()).map_err(Clone::clone);
                mine = Some(r);
                shared
            })
            .await
            .clone();
        {
            let mut map = self.lock_tags();
            if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(&key);
            }
        }
        if let Some(r) = mine {
            return r;
        }
        let digest = shared?;
        match self.stored(local, &digest).await {
            Ok(Some(m)) => Ok(ManifestAnswer {
                cache: CacheStatus::Revalidated,
                ..m
            }),
            // Not stored (the store failed the first request): ask again.
            _ => self.revalidate(route, local, tag, cached).await,
        }
    }

    fn lock_tags(&self) -> std::sync::MutexGuard<'_, TagFlights> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask the upstream what `tag` is now; fetch and store it if it moved.
    async fn revalidate(
        &self,
        route: &Route,
        local: &RepoName,
        tag: &Tag,
        cached: Option<&Digest>,
    ) -> std::result::Result<ManifestAnswer, Failure> {
        let spec = &route.upstream.spec;
        let b = self.registry.backend().as_ref();
        let desc = route
            .upstream
            .head_manifest(&route.remote, &Reference::Tag(tag.clone()))
            .await?
            .ok_or_else(|| {
                Failure::NotFound(format!(
                    "{}:{tag}: the upstream has no such tag",
                    route.remote
                ))
            })?;
        let store_err = |e: store::Error| Failure::Bad {
            status: None,
            message: format!("the local store failed: {e}"),
        };
        let local_copy = self.stored(local, &desc.digest).await.map_err(store_err)?;
        let (m, unchanged) = match local_copy {
            Some(m) if cached == Some(&desc.digest) => (
                ManifestAnswer {
                    cache: CacheStatus::Revalidated,
                    ..m
                },
                true,
            ),
            Some(m) => (
                ManifestAnswer {
                    cache: CacheStatus::Miss,
                    ..m
                },
                false,
            ),
            None => (self.fetch_manifest(route, &desc.digest).await?, false),
        };
        let mut kept = true;
        if !unchanged {
            tracing::info!(target: "wharf::mirror", upstream = %spec.name, repo = %local, %tag, from = ?cached.map(|d| d.to_string()), to = %desc.digest, "the upstream's tag moved");
            kept = match self
                .keep(route, local, &Reference::Tag(tag.clone()), &m)
                .await
            {
                Ok(k) => k,
                Err(store::Error::Registry(e)) => {
                    return Err(Failure::Bad {
                        status: Some(200),
                        message: e.message,
                    });
                }
                Err(e) => return Err(store_err(e)),
            };
        }
        if kept && let Err(e) = fresh::write(b, local, tag, &desc.digest, &spec.name).await {
            tracing::warn!(target: "wharf::mirror", repo = %local, %tag, error = %e, "could not record when a tag was checked");
        }
        Ok(m)
    }

    // ---------------------------------------------------------------- blobs

    /// A blob of `local` (below `route`'s prefix).
    pub async fn blob(
        &self,
        route: &Route,
        local: &RepoName,
        digest: &Digest,
        head: bool,
    ) -> Result<BlobAnswer> {
        if self.registry.blob_size(local, digest).await?.is_some() {
            return Ok(BlobAnswer::Local);
        }
        let what = format!("{}@{digest}", route.remote);
        let key = (local.as_str().to_owned(), digest.to_string());
        let joined = self
            .lock_blobs()
            .get(&key)
            .filter(|(_, rx)| rx.borrow().joinable())
            .map(|(_, rx)| rx.clone());
        if let Some(rx) = joined {
            return self.wait(route, rx, &what, head).await;
        }
        // Content the store holds already (pushed, or cached for another
        // repository): link it once the upstream confirms this repository
        // has it. Likewise a HEAD asks the upstream without fetching.
        let content = self
            .registry
            .backend()
            .head(&store::keys::blob(digest))
            .await?;
        if head || content.is_some() {
            let size = route
                .upstream
                .head_blob(&route.remote, digest)
                .await
                .map_err(|f| upstream_error(route, &f, ErrorCode::BlobUnknown, &what))?
                .ok_or_else(|| {
                    upstream_error(
                        route,
                        &Failure::NotFound(String::new()),
                        ErrorCode::BlobUnknown,
                        &what,
                    )
                })?;
            if content.is_some_and(|m| m.size == size)
                && self.registry.mount(local, digest, None).await?
            {
                return Ok(BlobAnswer::Local);
            }
            if head {
                return Ok(BlobAnswer::Upstream { size });
            }
        }
        let rx = self.start_fetch(route, local, digest, key);
        self.wait(route, rx, &what, head).await
    }

    fn lock_blobs(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join the fetch of `key`, or start it.
    fn start_fetch(
        &self,
        route: &Route,
        local: &RepoName,
        digest: &Digest,
        key: (String, String),
    ) -> watch::Receiver<fetch::Phase> {
        let mut map = self.lock_blobs();
        if let Some((_, rx)) = map.get(&key)
            && rx.borrow().joinable()
        {
            return rx.clone();
        }
        let id = self
            .next_fetch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(fetch::Phase::Starting);
        map.insert(key.clone(), (id, rx.clone()));
        drop(map);
        let job = fetch::Job {
            registry: self.registry.clone(),
            upstream: route.upstream.clone(),
            remote: route.remote.clone(),
            local: local.clone(),
            digest: digest.clone(),
        };
        let blobs = self.blobs.clone();
        tokio::spawn(async move {
            // Forgotten when done, however it ends: the next request finds
            // the blob in the store, or fetches again.
            struct Forget {
                blobs: Arc<Mutex<InFlight>>,
                key: (String, String),
                id: u64,
            }
            impl Drop for Forget {
                fn drop(&mut self) {
                    let mut map = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
                    if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                        map.remove(&self.key);
                    }
                }
            }
            let _forget = Forget { blobs, key, id };
            if fetch::run(job, tx).await {
                // A request that looked in the store just before the blob
                // landed there joins this fetch for a moment longer (and
                // reads it from the store) rather than fetching it again.
                tokio::time::sleep(JOIN_AFTER_DONE).await;
            }
        });
        rx
    }

    /// Wait for a fetch to have the upstream's answer.
    async fn wait(
        &self,
        route: &Route,
        mut rx: watch::Receiver<fetch::Phase>,
        what: &str,
        head: bool,
    ) -> Result<BlobAnswer> {
        let phase = match rx.wait_for(|p| !matches!(p, fetch::Phase::Starting)).await {
            Ok(p) => p.clone(),
            Err(_) => {
                let f = Failure::Bad {
                    status: None,
                    message: "the blob fetch stopped unexpectedly".into(),
                };
                return Err(upstream_error(route, &f, ErrorCode::BlobUnknown, what));
            }
        };
        match phase {
            fetch::Phase::Streaming(f) => match (head, f.size) {
                (true, Some(size)) => Ok(BlobAnswer::Upstream { size }),
                _ => Ok(BlobAnswer::Fetching(f)),
            },
            fetch::Phase::Failed(f) => Err(upstream_error(route, &f, ErrorCode::BlobUnknown, what)),
            fetch::Phase::Starting => unreachable_starting(),
        }
    }
}

/// `wait_for` returned a phase past `Starting`.
fn unreachable_starting() -> Result<BlobAnswer> {
    Err(store::Error::Io(std::io::Error::other(
        "internal error: a blob fetch reported no progress",
    )))
}

/// The local repository for a request sent the way containerd sends it
/// to a mirror: `name` as it is at the registry `ns` names
/// (`/v2/library/alpine/...?ns=docker.io`). It is `<prefix>/<name>` of
/// the first upstream (of `upstreams`, in config order) whose registry
/// host is `ns`, the
/// repository a prefix-routed pull of `<prefix>/<name>` uses, so both share
/// one cache. No such upstream: 404 `NAME_UNKNOWN`; a local name over the
/// length limit: 400 `NAME_INVALID`.
pub fn local_for_ns<'a>(
    mut upstreams: impl Iterator<Item = &'a config::UpstreamSpec>,
    ns: &str,
    name: &RepoName,
    max_name_length: usize,
) -> std::result::Result<RepoName, RegistryError> {
    let shown: String = ns.chars().take(200).collect();
    let Some(spec) = upstreams.find(|s| s.serves_ns(ns)) else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!(
                "repository {name} of registry {shown:?} (?ns=) is not mirrored here: no [[upstreams]] entry of this registry has that registry host (its url's host, or registry_host)"
            ),
        )
        .with_status(404)
        .with_detail(serde_json::json!({ "name": name.as_str(), "ns": shown })));
    };
    spec.local_repo(name, max_name_length).ok_or_else(|| {
        RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "repository {name} of registry {shown:?} would be cached as {}/{name}, longer than this registry's limit of {max_name_length} characters",
                spec.prefix
            ),
        )
        .with_detail(serde_json::json!({ "name": name.as_str(), "ns": shown }))
    })
}

/// The local repository for a request that came to an upstream's own
/// address (its `listen`), where the upstream is served at the root: the
/// Docker daemon's `registry-mirrors` sends Docker Hub names bare
/// (`/v2/library/alpine/...`), with no `?ns=` and no room for a prefix.
/// Every name there is the upstream's: `<prefix>/<name>`, the repository
/// a prefix-routed or `?ns=` pull of the same name uses. A local name over
/// the length limit: 400 `NAME_INVALID`.
pub fn local_for_root(
    spec: &config::UpstreamSpec,
    name: &RepoName,
    max_name_length: usize,
) -> std::result::Result<RepoName, RegistryError> {
    spec.local_repo(name, max_name_length).ok_or_else(|| {
        RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "repository {name} of upstream {} would be cached as {}/{name}, longer than this registry's limit of {max_name_length} characters",
                spec.name, spec.prefix
            ),
        )
        .with_detail(serde_json::json!({ "name": name.as_str(), "upstream": spec.name }))
    })
}

fn upstream_error(route: &Route, f: &Failure, unknown: ErrorCode, what: &str) -> store::Error {
    store::Error::Registry(f.to_error(&route.upstream.spec, unknown, what))
}

#[cfg(test)]
mod tests;
