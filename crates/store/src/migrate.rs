//! Offline migration from the filesystem storage of CNCF Distribution
//! (`registry:2`, Debian's `docker-registry`) into Wharf's store.
//!
//! Distribution's layout under `<root>/docker/registry/v2/`:
//!
//! ```text
//! blobs/sha256/<2 hex>/<hex>/data                          content
//! repositories/<name...>/_layers/sha256/<hex>/link         blob in the repository
//! repositories/<name...>/_manifests/revisions/sha256/<hex>/link   manifest in the repository
//! repositories/<name...>/_manifests/tags/<tag>/current/link       the tag's digest
//! ```
//!
//! Everything goes in through [`Registry`] (blob links, manifest links with
//! their media type, referrers, tags, catalog), except the blob content,
//! which [`FsBackend::import_file`] hard links, copies or moves into place
//! after verifying its digest. A bad item (dangling link, missing blob,
//! digest mismatch, unreadable manifest) is reported and skipped; the rest
//! goes on. Running it again is harmless: what is there is kept.

use crate::fs::{FsBackend, ImportMode, Imported};
use crate::registry::Registry;
use bytes::Bytes;
use oci::manifest::{self, Kind, Manifest};
use oci::{Digest, Reference, RepoName, Tag};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Longest repository name accepted (Wharf's default limit).
const MAX_NAME_LEN: usize = 255;
/// Largest manifest read from the source.
const MAX_MANIFEST: u64 = 16 << 20;

/// How blobs are brought in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobMode {
    /// Hard links where the filesystems allow, copies elsewhere.
    Auto,
    /// Hard links only (the source must be on the data directory's filesystem).
    Link,
    Copy,
    /// Rename (remove the source once the blob is in).
    Move,
}

/// Where the migrated content goes; `None` for a dry run.
pub struct Target<'a> {
    pub registry: &'a Registry,
    pub fs: &'a FsBackend,
}

pub struct Options {
    /// The directory given to Distribution as `rootdirectory` (or its
    /// `docker/registry/v2` directory itself).
    pub source: PathBuf,
    pub mode: BlobMode,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// Dry run only: whether hard links would work (source and data
    /// directory on one filesystem), for the report.
    pub dry_run_can_link: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A link file that cannot be read, does not hold a digest, or names
    /// something that is not there (a tag naming an unknown manifest).
    DanglingLink,
    /// A link names a blob whose data file is missing.
    MissingBlob,
    /// A blob's content does not hash to its digest.
    DigestMismatch,
    /// A manifest that cannot be read or parsed, or that Wharf refuses.
    UnreadableManifest,
    /// A manifest that names blobs or manifests that could not be migrated.
    IncompleteManifest,
    /// A tag whose manifest was skipped.
    SkippedTag,
    /// A repository or tag name Wharf does not accept.
    InvalidName,
    /// Any other read or write failure.
    Io,
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The digest or tag concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The source file concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoReport {
    pub name: String,
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BlobCounts {
    /// Distinct blobs brought in (or found already there).
    pub count: u64,
    pub bytes: u64,
    pub linked: u64,
    pub copied: u64,
    pub moved: u64,
    pub already_present: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub source: String,
    pub dry_run: bool,
    pub mode: BlobMode,
    pub repositories: Vec<RepoReport>,
    pub blobs: BlobCounts,
    pub manifests: u64,
    pub tags: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether anything was skipped.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Find Distribution's `docker/registry/v2` directory under `source`.
pub fn v2_root(source: &Path) -> io::Result<PathBuf> {
    let nested = source.join("docker/registry/v2");
    for cand in [&nested, &source.to_path_buf()] {
        if cand.join("repositories").is_dir() || cand.join("blobs").is_dir() {
            return Ok(cand.clone());
        }
    }
    Err(io::Error::new(
        ErrorKind::NotFound,
        format!(
            "{} holds no Distribution storage (no docker/registry/v2/repositories or blobs)",
            source.display()
        ),
    ))
}

/// Whether `a` and `b` (or their nearest existing ancestors) are on one filesystem.
pub fn same_filesystem(a: &Path, b: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    fn dev(p: &Path) -> io::Result<u64> {
        let mut cur = p;
        loop {
            match std::fs::metadata(cur) {
                Ok(m) => return Ok(m.dev()),
                Err(e) if e.kind() == ErrorKind::NotFound => match cur.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => cur = parent,
                    _ => return std::fs::metadata(".").map(|m| m.dev()),
                },
                Err(e) => return Err(e),
            }
        }
    }
    Ok(dev(a)? == dev(b)?)
}

/// The state of one distinct blob, shared by every repository naming it.
#[derive(Clone)]
enum BlobState {
    Good(u64),
    Bad,
}

struct Migration<'a> {
    target: Option<Target<'a>>,
    root: PathBuf,
    mode: ImportMode,
    progress: bool,
    can_link: bool,
    /// When a progress line was last printed.
    last_progress: std::time::Instant,
    blobs: HashMap<Digest, BlobState>,
    report: Report,
}

/// Run the migration. `target` is `None` for a dry run, which reads and
/// verifies everything and writes nothing. Fails only if the source cannot
/// be read at all; every per-item failure is a [`Problem`] in the report.
pub async fn migrate(target: Option<Target<'_>>, opts: &Options) -> io::Result<Report> {
    let root = v2_root(&opts.source)?;
    let root = root.canonicalize().unwrap_or(root);
    let mode = match opts.mode {
        BlobMode::Copy => ImportMode::Copy,
        BlobMode::Move => ImportMode::Move,
        BlobMode::Auto => ImportMode::Link,
        BlobMode::Link => {
            if let Some(t) = &target
                && !same_filesystem(&root, t.fs.root())?
            {
                return Err(io::Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "--link: {} and {} are on different filesystems (use --copy or the default)",
                        root.display(),
                        t.fs.root().display()
                    ),
                ));
            }
            ImportMode::Link
        }
    };
    let mut m = Migration {
        report: Report {
            source: root.display().to_string(),
            dry_run: target.is_none(),
            mode: opts.mode,
            repositories: Vec::new(),
            blobs: BlobCounts::default(),
            manifests: 0,
            tags: 0,
            problems: Vec::new(),
        },
        target,
        root,
        mode,
        progress: opts.progress,
        can_link: opts.dry_run_can_link,
        last_progress: std::time::Instant::now(),
        blobs: HashMap::new(),
    };
    let mut repos = Vec::new();
    let repos_dir = m.root.join("repositories");
    if repos_dir.is_dir() {
        find_repos(&repos_dir, "", &mut repos, &mut m.report.problems);
    }
    let total = repos.len();
    for (i, name) in repos.into_iter().enumerate() {
        let r = m.repo(&name).await;
        if m.progress {
            let b = &m.report.blobs;
            eprintln!(
                "[{}/{total}] {name}: {} blobs, {} manifests, {} tags (total {} blobs, {}; {} problems)",
                i + 1,
                r.blobs,
                r.manifests,
                r.tags,
                b.count,
                human_bytes(b.bytes),
                m.report.problems.len()
            );
        }
        m.report.manifests += r.manifests;
        m.report.tags += r.tags;
        m.report.repositories.push(r);
    }
    Ok(m.report)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Directories under `dir` holding `_manifests` or `_layers` are
/// repositories; names nest, so every non-`_` subdirectory is searched.
fn find_repos(dir: &Path, prefix: &str, out: &mut Vec<String>, problems: &mut Vec<Problem>) {
    let entries = match sorted_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem {
                kind: ProblemKind::Io,
                repository: (!prefix.is_empty()).then(|| prefix.to_owned()),
                item: None,
                path: Some(dir.display().to_string()),
                detail: format!("cannot list the directory: {e}"),
            });
            return;
        }
    };
    if !prefix.is_empty()
        && entries
            .iter()
            .any(|(n, is_dir)| *is_dir && (n == "_manifests" || n == "_layers"))
    {
        out.push(prefix.to_owned());
    }
    for (name, is_dir) in entries {
        if !is_dir || name.starts_with('_') {
            continue;
        }
        let sub = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        find_repos(&dir.join(&name), &sub, out, problems);
    }
}

/// Entries of a directory (UTF-8 names only) with whether each is a directory, sorted.
fn sorted_dir(dir: &Path) -> io::Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        out.push((name, entry.file_type()?.is_dir()));
    }
    out.sort();
    Ok(out)
}

/// Subdirectory names of `dir`, or none if it does not exist.
fn subdirs(dir: &Path) -> io::Result<Vec<String>> {
    match sorted_dir(dir) {
        Ok(v) => Ok(v.into_iter().filter(|(_, d)| *d).map(|(n, _)| n).collect()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Read a link file: a digest, which must be `expected` if given.
fn read_link(path: &Path, expected: Option<&str>) -> Result<Digest, String> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1024).read_to_end(&mut raw))
        .map_err(|e| format!("cannot read the link: {e}"))?;
    let text = std::str::from_utf8(&raw).map_err(|_| "the link is not UTF-8".to_owned())?;
    let d: Digest = text
        .trim()
        .parse()
        .map_err(|e| format!("the link does not hold a digest ({text:?}): {e}"))?;
    if let Some(hex) = expected
        && d.hex() != hex
    {
        return Err(format!("the link holds {d}, not the digest its path names"));
    }
    Ok(d)
}

impl Migration<'_> {
    fn problem(
        &mut self,
        kind: ProblemKind,
        repo: &str,
        item: Option<String>,
        path: Option<&Path>,
        detail: impl Into<String>,
    ) {
        self.report.problems.push(Problem {
            kind,
            repository: Some(repo.to_owned()),
            item,
            path: path.map(|p| p.display().to_string()),
            detail: detail.into(),
        });
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
            .join("data")
    }

    /// Digests linked under `dir/<alg>/<hex>/<link_tail>`, reporting bad links.
    fn links(&mut self, repo: &str, dir: &Path, link_tail: &str) -> Vec<Digest> {
        let mut out = Vec::new();
        let algs = match subdirs(dir) {
            Ok(a) => a,
            Err(e) => {
                self.problem(ProblemKind::Io, repo, None, Some(dir), e.to_string());
                return out;
            }
        };
        for alg in algs {
            let adir = dir.join(&alg);
            let hexes = match subdirs(&adir) {
                Ok(h) => h,
                Err(e) => {
                    self.problem(ProblemKind::Io, repo, None, Some(&adir), e.to_string());
                    continue;
                }
            };
            for hex in hexes {
                let path = adir.join(&hex).join(link_tail);
                match read_link(&path, Some(&hex)) {
                    Ok(d) => out.push(d),
                    Err(e) => self.problem(
                        ProblemKind::DanglingLink,
                        repo,
                        Some(format!("{alg}:{hex}")),
                        Some(&path),
                        e,
                    ),
                }
            }
        }
        out
    }

    async fn repo(&mut self, name: &str) -> RepoReport {
        let mut r = RepoReport {
            name: name.to_owned(),
            ..RepoReport::default()
        };
        let repo_name = match RepoName::parse(name, MAX_NAME_LEN) {
            Ok(n) => n,
            Err(e) => {
                self.problem(
                    ProblemKind::InvalidName,
                    name,
                    None,
                    None,
                    format!("not a valid repository name: {e}"),
                );
                return r;
            }
        };
        let dir = self.root.join("repositories").join(name);

        // Blobs of the repository.
        let mut good_blobs: HashMap<Digest, u64> = HashMap::new();
        for d in self.links(name, &dir.join("_layers"), "link") {
            if let Some(size) = self.blob(name, &repo_name, &d).await {
                good_blobs.insert(d, size);
                r.blobs += 1;
            }
        }

        // Tags, by the manifest they name.
        let mut tags: BTreeMap<Digest, Vec<Tag>> = BTreeMap::new();
        let tags_dir = dir.join("_manifests/tags");
        let tag_names = subdirs(&tags_dir).unwrap_or_else(|e| {
            self.problem(ProblemKind::Io, name, None, Some(&tags_dir), e.to_string());
            Vec::new()
        });
        for t in tag_names {
            let path = tags_dir.join(&t).join("current/link");
            let tag = match Tag::parse(&t) {
                Ok(tag) => tag,
                Err(e) => {
                    self.problem(
                        ProblemKind::InvalidName,
                        name,
                        Some(t.clone()),
                        Some(&path),
                        format!("not a valid tag: {e}"),
                    );
                    continue;
                }
            };
            match read_link(&path, None) {
                Ok(d) => tags.entry(d).or_default().push(tag),
                Err(e) => self.problem(ProblemKind::DanglingLink, name, Some(t), Some(&path), e),
            }
        }

        // Manifests: read and verify them all, then store them children first.
        let revisions = self.links(name, &dir.join("_manifests/revisions"), "link");
        let linked: BTreeSet<Digest> = revisions.iter().cloned().collect();
        let mut pending: Vec<(Digest, Bytes, Manifest)> = Vec::new();
        for d in revisions {
            if let Some((body, m)) = self.read_manifest(name, &d) {
                pending.push((d, body, m));
            }
        }
        let mut done: BTreeSet<Digest> = BTreeSet::new();
        loop {
            let mut progressed = false;
            let mut still = Vec::new();
            let waiting_for: BTreeSet<Digest> = pending.iter().map(|p| p.0.clone()).collect();
            for (d, body, m) in std::mem::take(&mut pending) {
                let missing = missing_refs(&m, &good_blobs, &done);
                if missing.iter().any(|c| c != &d && waiting_for.contains(c)) {
                    still.push((d, body, m));
                    continue;
                }
                progressed = true;
                if !missing.is_empty() {
                    let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
                    self.problem(
                        ProblemKind::IncompleteManifest,
                        name,
                        Some(d.to_string()),
                        None,
                        format!(
                            "names content that could not be migrated: {}",
                            list.join(", ")
                        ),
                    );
                    continue;
                }
                let its_tags = tags.get(&d).cloned().unwrap_or_default();
                if self
                    .put_manifest(name, &repo_name, &d, body, &its_tags)
                    .await
                {
                    done.insert(d);
                    r.manifests += 1;
                    r.tags += its_tags.len() as u64;
                }
            }
            pending = still;
            if pending.is_empty() || !progressed {
                break;
            }
        }
        for (d, _, _) in pending {
            self.problem(
                ProblemKind::IncompleteManifest,
                name,
                Some(d.to_string()),
                None,
                "its references form a cycle",
            );
        }

        // Tags whose manifest did not make it.
        for (d, ts) in &tags {
            if done.contains(d) {
                continue;
            }
            for t in ts {
                let (kind, detail) = if linked.contains(d) {
                    (
                        ProblemKind::SkippedTag,
                        format!("its manifest {d} was skipped"),
                    )
                } else {
                    (
                        ProblemKind::DanglingLink,
                        format!("names {d}, which is not a manifest of the repository"),
                    )
                };
                let path = tags_dir.join(t.as_str()).join("current/link");
                self.problem(kind, name, Some(t.as_str().to_owned()), Some(&path), detail);
            }
        }
        r
    }

    /// Bring one blob in (once) and link it into the repository. Returns its
    /// size if it is there.
    async fn blob(&mut self, repo: &str, name: &RepoName, d: &Digest) -> Option<u64> {
        let size = match self.blobs.get(d).cloned() {
            Some(BlobState::Good(size)) => size,
            Some(BlobState::Bad) => return None,
            None => {
                let state = self.import(repo, d).await;
                self.blobs.insert(d.clone(), state.clone());
                match state {
                    BlobState::Good(size) => size,
                    BlobState::Bad => return None,
                }
            }
        };
        if let Some(t) = &self.target {
            match t.registry.mount(name, d, None).await {
                Ok(true) => {}
                Ok(false) => {
                    self.problem(
                        ProblemKind::Io,
                        repo,
                        Some(d.to_string()),
                        None,
                        "the blob vanished from the store",
                    );
                    return None;
                }
                Err(e) => {
                    self.problem(
                        ProblemKind::Io,
                        repo,
                        Some(d.to_string()),
                        None,
                        e.to_string(),
                    );
                    return None;
                }
            }
        }
        Some(size)
    }

    async fn import(&mut self, repo: &str, d: &Digest) -> BlobState {
        let src = self.blob_path(d);
        match std::fs::metadata(&src) {
            Ok(m) if m.is_file() => {}
            Ok(_) | Err(_) => {
                self.problem(
                    ProblemKind::MissingBlob,
                    repo,
                    Some(d.to_string()),
                    Some(&src),
                    "the blob's data file is missing",
                );
                return BlobState::Bad;
            }
        }
        let outcome = match &self.target {
            Some(t) => {
                t.fs.import_file(&crate::keys::blob(d), &src, d, self.mode)
                    .await
            }
            None => verify_file(&src, d).map(|v| match v {
                Imported::Copied { size } => match self.mode {
                    ImportMode::Move => Imported::Moved { size },
                    ImportMode::Link if self.can_link => Imported::Linked { size },
                    _ => Imported::Copied { size },
                },
                other => other,
            }),
        };
        let counts = &mut self.report.blobs;
        let size = match outcome {
            Ok(Imported::Mismatch { actual }) => {
                self.problem(
                    ProblemKind::DigestMismatch,
                    repo,
                    Some(d.to_string()),
                    Some(&src),
                    format!("the content hashes to {actual}"),
                );
                return BlobState::Bad;
            }
            Err(e) => {
                self.problem(
                    ProblemKind::Io,
                    repo,
                    Some(d.to_string()),
                    Some(&src),
                    e.to_string(),
                );
                return BlobState::Bad;
            }
            Ok(Imported::AlreadyPresent { size }) => {
                counts.already_present += 1;
                size
            }
            Ok(Imported::Linked { size }) => {
                counts.linked += 1;
                size
            }
            Ok(Imported::Copied { size }) => {
                counts.copied += 1;
                size
            }
            Ok(Imported::Moved { size }) => {
                counts.moved += 1;
                size
            }
        };
        counts.count += 1;
        counts.bytes += size;
        if self.progress && self.last_progress.elapsed() >= std::time::Duration::from_secs(2) {
            self.last_progress = std::time::Instant::now();
            eprintln!(
                "  {repo}: {} blobs so far ({})",
                counts.count,
                human_bytes(counts.bytes)
            );
        }
        BlobState::Good(size)
    }

    /// Read, verify and parse a manifest revision.
    fn read_manifest(&mut self, repo: &str, d: &Digest) -> Option<(Bytes, Manifest)> {
        let src = self.blob_path(d);
        let body = match std::fs::File::open(&src).and_then(|f| {
            let mut v = Vec::new();
            f.take(MAX_MANIFEST + 1).read_to_end(&mut v)?;
            Ok(v)
        }) {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.problem(
                    ProblemKind::MissingBlob,
                    repo,
                    Some(d.to_string()),
                    Some(&src),
                    "the manifest's data file is missing",
                );
                return None;
            }
            Err(e) => {
                self.problem(
                    ProblemKind::UnreadableManifest,
                    repo,
                    Some(d.to_string()),
                    Some(&src),
                    e.to_string(),
                );
                return None;
            }
        };
        if body.len() as u64 > MAX_MANIFEST {
            self.problem(
                ProblemKind::UnreadableManifest,
                repo,
                Some(d.to_string()),
                Some(&src),
                format!("larger than {MAX_MANIFEST} bytes"),
            );
            return None;
        }
        let actual = Digest::of(d.algorithm(), &body);
        if &actual != d {
            self.problem(
                ProblemKind::DigestMismatch,
                repo,
                Some(d.to_string()),
                Some(&src),
                format!("the manifest hashes to {actual}"),
            );
            return None;
        }
        match manifest::parse(None, &body) {
            Ok(m) => Some((Bytes::from(body), m)),
            Err(e) => {
                self.problem(
                    ProblemKind::UnreadableManifest,
                    repo,
                    Some(d.to_string()),
                    Some(&src),
                    e.to_string(),
                );
                None
            }
        }
    }

    /// Store a manifest and its tags through the registry (nothing on a dry run).
    async fn put_manifest(
        &mut self,
        repo: &str,
        name: &RepoName,
        d: &Digest,
        body: Bytes,
        tags: &[Tag],
    ) -> bool {
        let Some(t) = &self.target else {
            return true;
        };
        match t
            .registry
            .manifest_put(name, &Reference::Digest(d.clone()), None, body, tags)
            .await
        {
            Ok(_) => true,
            Err(crate::registry::Error::Registry(e)) => {
                self.problem(
                    ProblemKind::UnreadableManifest,
                    repo,
                    Some(d.to_string()),
                    None,
                    format!("refused by the store: {e}"),
                );
                false
            }
            Err(e) => {
                self.problem(
                    ProblemKind::Io,
                    repo,
                    Some(d.to_string()),
                    None,
                    e.to_string(),
                );
                false
            }
        }
    }
}

/// What a manifest needs that is not (yet) available: blobs of an image,
/// children of an index.
fn missing_refs(
    m: &Manifest,
    blobs: &HashMap<Digest, u64>,
    manifests: &BTreeSet<Digest>,
) -> Vec<Digest> {
    match m.kind {
        Kind::Image => m
            .required_blobs()
            .filter(|desc| !blobs.contains_key(&desc.digest))
            .map(|desc| desc.digest.clone())
            .collect(),
        Kind::Index => m
            .manifests
            .iter()
            .filter(|desc| !manifests.contains(&desc.digest) && !blobs.contains_key(&desc.digest))
            .map(|desc| desc.digest.clone())
            .collect(),
    }
}

/// Hash a file (dry run): what a real run would find.
fn verify_file(path: &Path, expected: &Digest) -> io::Result<Imported> {
    let mut f = std::fs::File::open(path)?;
    let mut h = expected.algorithm().digester();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    let actual = h.finish();
    if &actual == expected {
        Ok(Imported::Copied { size })
    } else {
        Ok(Imported::Mismatch { actual })
    }
}
