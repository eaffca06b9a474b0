//! The catalog of the repositories served from sources, and serving them.
//!
//! Sources are scanned (and every blob verified) at start-up; start-up fails
//! on any bad source. While serving, a blob is read only if its file still
//! has the identity it had when it was hashed; if a source file changed, the
//! request gets an error naming it and the source is scanned again in the
//! background (a source that fails its new scan serves nothing).

use super::container::Loc;
use super::load::{Scanned, scan_source, watch_path};
use super::{FileId, ServedManifest, SourceError};
use crate::backend::{Backend, ByteStream};
use crate::registry::{Page, Registry};
use futures_util::StreamExt as _;
use oci::{Digest, ErrorCode, Reference, RegistryError, RepoName};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// A source as configured: a path and an optional `REPO[:TAG]` to serve
/// its images as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    pub path: PathBuf,
    pub name: Option<String>,
}

struct Source {
    spec: SourceSpec,
    canonical: PathBuf,
    /// The file whose change means the image list may have changed.
    watch_path: PathBuf,
    rescanning: AtomicBool,
    state: Mutex<Result<Arc<Scanned>, String>>,
}

#[derive(Default)]
struct RepoView {
    tags: BTreeMap<String, Digest>,
    manifests: HashMap<Digest, Arc<ServedManifest>>,
    /// Blob → where its verified bytes are, and which source holds them.
    blobs: HashMap<Digest, (Loc, usize)>,
    sources: BTreeSet<usize>,
}

#[derive(Default)]
struct Catalog {
    repos: BTreeMap<String, RepoView>,
}

/// Every source of a server.
pub struct Sources {
    sources: Vec<Source>,
    catalog: RwLock<Arc<Catalog>>,
    /// The repositories served from sources (fixed at start-up), and from
    /// which: writes to them are refused even while a source is being
    /// scanned again or has failed.
    owned: RwLock<BTreeMap<String, BTreeSet<usize>>>,
    backend: Arc<dyn Backend>,
    max_name_len: usize,
}

fn unknown_manifest(r: &dyn std::fmt::Display) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
        .with_detail(serde_json::json!({ "reference": r.to_string() }))
}

fn unknown_blob(d: &Digest) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
        .with_detail(serde_json::json!({ "digest": d.to_string() }))
}

/// The answer for a blob whose file changed (or went away) since it was
/// verified.
fn changed(loc: &Loc, d: &Digest) -> crate::Error {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!(
            "{}: changed since it was verified; it is being verified again, retry later",
            loc.file.display()
        ),
    )
    .with_detail(serde_json::json!({ "digest": d.to_string() }))
    .into()
}

/// Build the catalog from every source's last scan. At start-up (`only` is
/// `None`) a tag named by two sources is an error. When a source is scanned
/// again, only the repositories served since start-up are served (a new
/// name could shadow a repository of the store; it needs a restart, which
/// checks that) and the first source naming a tag wins.
fn build(
    sources: &[Source],
    only: Option<&BTreeMap<String, BTreeSet<usize>>>,
) -> Result<Catalog, SourceError> {
    let strict = only.is_none();
    let mut cat = Catalog::default();
    for (si, s) in sources.iter().enumerate() {
        let scanned = match s.state.lock() {
            Ok(g) => match &*g {
                Ok(sc) => sc.clone(),
                Err(_) => continue,
            },
            Err(_) => continue,
        };
        for (repo, tag, ii) in &scanned.names {
            let Some(img) = scanned.images.get(*ii) else {
                continue;
            };
            if let Some(only) = only
                && !only.contains_key(repo.as_str())
            {
                tracing::warn!(
                    source = %s.spec.path.display(),
                    repo = repo.as_str(),
                    "a new repository in a source is served only after a restart"
                );
                continue;
            }
            let view = cat.repos.entry(repo.as_str().to_owned()).or_default();
            if let Some(prev) = view.tags.get(tag.as_str())
                && *prev != img.root
            {
                let msg = format!(
                    "{}:{} is named by more than one image (in {})",
                    repo.as_str(),
                    tag.as_str(),
                    view.sources
                        .iter()
                        .chain([&si])
                        .filter_map(|i| sources.get(*i))
                        .map(|s| s.spec.path.display().to_string())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if strict {
                    return Err(SourceError::Config(msg));
                }
                tracing::error!("{msg}: the first is served");
                continue;
            }
            view.tags.insert(tag.as_str().to_owned(), img.root.clone());
            view.sources.insert(si);
            for m in &img.manifests {
                view.manifests.insert(m.digest.clone(), m.clone());
            }
            for (d, loc) in &img.blobs {
                view.blobs.entry(d.clone()).or_insert((loc.clone(), si));
            }
        }
    }
    Ok(cat)
}

impl Sources {
    /// Scan and verify every source. Fails, naming the file, if a source is
    /// unreadable, holds anything that does not verify, names a repository
    /// the data directory already has, or two sources name the same tag.
    pub async fn open(
        specs: &[SourceSpec],
        registry: &Registry,
        max_name_len: usize,
    ) -> Result<Sources, SourceError> {
        let backend = registry.backend().clone();
        let mut sources = Vec::new();
        for spec in specs {
            let canonical = spec
                .path
                .canonicalize()
                .map_err(|e| SourceError::io(&spec.path, e))?;
            let scanned = scan_source(&backend, spec, &canonical, max_name_len).await?;
            sources.push(Source {
                spec: spec.clone(),
                watch_path: watch_path(&canonical),
                canonical,
                rescanning: AtomicBool::new(false),
                state: Mutex::new(Ok(Arc::new(scanned))),
            });
        }
        let catalog = build(&sources, None)?;
        let mut owned: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (name, view) in &catalog.repos {
            let repo = RepoName::parse(name, usize::MAX)
                .map_err(|e| SourceError::Config(format!("{name}: {e}")))?;
            if registry
                .repo_exists(&repo)
                .await
                .map_err(|e| SourceError::Config(format!("reading the data directory: {e}")))?
            {
                let files: Vec<String> = view
                    .sources
                    .iter()
                    .filter_map(|i| sources.get(*i))
                    .map(|s| s.spec.path.display().to_string())
                    .collect();
                return Err(SourceError::Config(format!(
                    "repository {name} is in the data directory and is also served from {}: \
                     serve the source under another name with --as, or delete the repository",
                    files.join(", ")
                )));
            }
            owned.insert(name.clone(), view.sources.clone());
        }
        Ok(Sources {
            sources,
            catalog: RwLock::new(Arc::new(catalog)),
            owned: RwLock::new(owned),
            backend,
            max_name_len,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// If `repo` is served from sources, the files it is served from.
    pub fn owner(&self, repo: &RepoName) -> Option<String> {
        let owned = match self.owned.read() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        let set = owned.get(repo.as_str())?;
        Some(
            set.iter()
                .filter_map(|i| self.sources.get(*i))
                .map(|s| s.spec.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// Every repository served from sources, in byte order.
    pub fn repo_names(&self) -> Vec<String> {
        match self.owned.read() {
            Ok(o) => o.keys().cloned().collect(),
            Err(p) => p.into_inner().keys().cloned().collect(),
        }
    }

    /// Why a repository's source is not serving, if it is not.
    fn failure(&self, repo: &RepoName) -> Option<String> {
        let owned = self.owned.read().ok()?;
        for i in owned.get(repo.as_str())? {
            if let Some(s) = self.sources.get(*i)
                && let Ok(g) = s.state.lock()
                && let Err(e) = &*g
            {
                return Some(e.clone());
            }
        }
        None
    }

    /// Look at the sources of `repo`; any whose file changed is scanned again.
    fn check_fresh(self: &Arc<Self>, repo: &RepoName) {
        let idx: Vec<usize> = match self.owned.read() {
            Ok(o) => o
                .get(repo.as_str())
                .into_iter()
                .flatten()
                .copied()
                .collect(),
            Err(_) => return,
        };
        for i in idx {
            let Some(s) = self.sources.get(i) else {
                continue;
            };
            let recorded = match s.state.lock() {
                Ok(g) => match &*g {
                    Ok(sc) => sc.watch,
                    Err(_) => None,
                },
                Err(_) => continue,
            };
            let now = std::fs::metadata(&s.watch_path)
                .ok()
                .map(|m| FileId::of(&m));
            if now != recorded {
                self.rescan(i);
            }
        }
    }

    /// Scan source `i` again in the background (once at a time).
    fn rescan(self: &Arc<Self>, i: usize) {
        let Some(s) = self.sources.get(i) else {
            return;
        };
        if s.rescanning.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(source = %s.spec.path.display(), "source changed: verifying it again");
        let me = self.clone();
        tokio::spawn(async move {
            let Some(s) = me.sources.get(i) else {
                return;
            };
            let result = scan_source(&me.backend, &s.spec, &s.canonical, me.max_name_len).await;
            let state = match result {
                Ok(sc) => Ok(Arc::new(sc)),
                Err(e) => {
                    tracing::error!(error = %e, "source failed verification: it serves nothing until it is fixed");
                    Err(e.to_string())
                }
            };
            if let Ok(mut g) = s.state.lock() {
                *g = state;
            }
            let owned = match me.owned.read() {
                Ok(o) => o.clone(),
                Err(p) => p.into_inner().clone(),
            };
            match build(&me.sources, Some(&owned)) {
                Ok(cat) => {
                    if let Ok(mut c) = me.catalog.write() {
                        *c = Arc::new(cat);
                    }
                }
                Err(e) => tracing::error!(error = %e, "rebuilding the source catalog failed"),
            }
            s.rescanning.store(false, Ordering::Release);
        });
    }

    fn not_serving(&self, repo: &RepoName) -> Option<RegistryError> {
        self.failure(repo).map(|why| {
            RegistryError::new(
                ErrorCode::NameUnknown,
                format!("repository {} is not being served: {why}", repo.as_str()),
            )
            .with_status(404)
        })
    }

    /// A manifest of a source repository, by tag or digest.
    pub fn manifest(
        self: &Arc<Self>,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Arc<ServedManifest>, RegistryError> {
        self.check_fresh(repo);
        let cat = self.catalog();
        let Some(view) = cat.repos.get(repo.as_str()) else {
            return Err(self
                .not_serving(repo)
                .unwrap_or_else(|| unknown_manifest(reference)));
        };
        let d = match reference {
            Reference::Digest(d) => d,
            Reference::Tag(t) => view
                .tags
                .get(t.as_str())
                .ok_or_else(|| unknown_manifest(reference))?,
        };
        view.manifests
            .get(d)
            .cloned()
            .ok_or_else(|| unknown_manifest(reference))
    }

    /// Tags of a source repository in byte order, `n` at most, after `last`.
    pub fn tags(
        self: &Arc<Self>,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        self.check_fresh(repo);
        let cat = self.catalog();
        let Some(view) = cat.repos.get(repo.as_str()) else {
            return Err(self.not_serving(repo).unwrap_or_else(|| {
                RegistryError::new(
                    ErrorCode::NameUnknown,
                    "repository name not known to registry",
                )
            }));
        };
        let limit = n.unwrap_or(usize::MAX);
        let mut items: Vec<String> = view
            .tags
            .keys()
            .filter(|t| last.is_none_or(|l| t.as_str() > l))
            .take(limit.saturating_add(1))
            .cloned()
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, more })
    }

    /// The size of a blob of a source repository.
    pub fn blob_size(&self, repo: &RepoName, d: &Digest) -> Result<u64, RegistryError> {
        let cat = self.catalog();
        cat.repos
            .get(repo.as_str())
            .and_then(|v| v.blobs.get(d))
            .map(|(loc, _)| loc.len)
            .ok_or_else(|| unknown_blob(d))
    }

    /// Stream a blob of a source repository, whole or the half-open range
    /// `start..end`, from the verified bytes in place. If its file changed
    /// since it was verified, nothing is served and the source is scanned
    /// again.
    pub async fn blob_open(
        self: &Arc<Self>,
        repo: &RepoName,
        d: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream, crate::Error> {
        let cat = self.catalog();
        let (loc, si) = cat
            .repos
            .get(repo.as_str())
            .and_then(|v| v.blobs.get(d))
            .cloned()
            .ok_or_else(|| unknown_blob(d))?;
        // Not through a final symbolic link (a layout's files never are
        // one); a file replaced in any other way fails the identity check.
        let opened = match tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&loc.file)
            .await
        {
            Ok(f) => Some(f),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        let mut f = match opened {
            Some(f) if FileId::of(&f.metadata().await?) == loc.id => f,
            _ => {
                self.rescan(si);
                return Err(changed(&loc, d));
            }
        };
        let (start, end) = range.unwrap_or((0, loc.len));
        // Clamped to the member (whose offset + len was checked when it was
        // indexed), so the seek below cannot overflow.
        let end = end.min(loc.len);
        let start = start.min(end);
        f.seek(std::io::SeekFrom::Start(loc.offset.saturating_add(start)))
            .await?;
        let reader = f.take(end.saturating_sub(start));
        let s = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024);
        Ok(s.boxed())
    }
}

/// Merge a page of the store's catalog with the source repositories: the
/// same `n`/`last` semantics over the union.
pub fn merge_catalog(
    store: Page,
    sources: &[String],
    n: Option<usize>,
    last: Option<&str>,
) -> Page {
    let limit = n.unwrap_or(usize::MAX);
    let mut all: BTreeSet<String> = store.items.into_iter().collect();
    all.extend(
        sources
            .iter()
            .filter(|s| last.is_none_or(|l| s.as_str() > l))
            .cloned(),
    );
    let mut items: Vec<String> = all.into_iter().take(limit.saturating_add(1)).collect();
    let more = store.more || items.len() > limit;
    items.truncate(limit);
    Page { items, more }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_merge_paginates_over_the_union() {
        let store = Page {
            items: vec!["a".into(), "c".into()],
            more: true,
        };
        let p = merge_catalog(store, &["b".into(), "d".into()], Some(2), None);
        assert_eq!(p.items, ["a", "b"]);
        assert!(p.more);
        let store = Page {
            items: vec!["c".into()],
            more: false,
        };
        let p = merge_catalog(store, &["b".into(), "d".into()], Some(5), Some("b"));
        assert_eq!(p.items, ["c", "d"]);
        assert!(!p.more);
    }
}
