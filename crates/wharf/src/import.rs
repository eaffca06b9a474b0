//! `wharf import`: copy an OCI image layout, an `oci-archive` or a
//! `docker save` tarball into Wharf's data directory, offline.
//!
//! Three phases, so that nothing unverified is stored and no manifest is
//! stored over missing content: read and verify every manifest (children
//! before their index), bring in every blob (a blob already in the store is
//! only linked; others are streamed through `upload_whole`, which verifies
//! the digest), then store the manifests, children first, tags last.

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use client::docker_archive;
use client::layout::{self, Layout};
use oci::manifest::{self, Descriptor, Kind};
use oci::{Digest, Reference, RepoName, Tag};
use std::collections::{BTreeMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use store::fs::{FsBackend, open_failure};
use store::source::names::split_name;
use store::{Registry, RegistryConfig};

const MAX_NAME_LEN: usize = 255;
const MAX_MANIFEST: u64 = 4 << 20;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// An OCI image layout directory, an oci-archive tarball or a
    /// `docker save` tarball.
    path: PathBuf,
    /// Store the image as REPO:TAG (the source must hold one image), or
    /// REPO alone to give the repository for tags the source names.
    target: Option<String>,
    /// Wharf data directory to import into [default: ./wharf-data].
    /// No `wharf serve` may be running on it during the import.
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Do not fsync writes (faster; a crash can lose imported data).
    #[arg(long, env = "WHARF_NO_FSYNC")]
    no_fsync: bool,
}

pub fn run(args: ImportArgs) -> ExitCode {
    let Some(rt) = crate::runtime(None) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(import_cmd(&args)) {
        Ok(r) => {
            outln!(
                "imported {} images ({} manifests): {} blobs uploaded ({} bytes), {} already present",
                r.images,
                r.manifests,
                r.uploaded,
                r.uploaded_bytes,
                r.present
            );
            for t in &r.tags {
                outln!("  {t}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf import: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Report {
    images: usize,
    manifests: usize,
    uploaded: usize,
    uploaded_bytes: u64,
    present: usize,
    tags: Vec<String>,
}

/// Where blobs come from: the layout's `blobs/` or the files of an archive.
enum Source {
    Layout(Layout),
    Files(BTreeMap<Digest, PathBuf>),
}

impl Source {
    fn path(&self, d: &Digest) -> anyhow::Result<PathBuf> {
        match self {
            Source::Layout(l) => Ok(l.blob_path(d)),
            Source::Files(m) => m
                .get(d)
                .cloned()
                .ok_or_else(|| anyhow!("{d}: not in the archive")),
        }
    }
}

/// One image to import: its top-level descriptor, repository and tags.
struct Root {
    desc: Descriptor,
    repo: RepoName,
    tags: Vec<Tag>,
}

/// A verified manifest, ready to store.
struct Planned {
    repo: RepoName,
    digest: Digest,
    media_type: String,
    bytes: Bytes,
    tags: Vec<Tag>,
}

fn parse_repo(s: &str) -> anyhow::Result<RepoName> {
    RepoName::parse(s, MAX_NAME_LEN).map_err(|e| anyhow!("bad repository name {s:?}: {e}"))
}

fn parse_tag(s: &str) -> anyhow::Result<Tag> {
    Tag::parse(s).map_err(|e| anyhow!("bad tag {s:?}: {e}"))
}

/// The command-line target: a repository, and maybe a tag.
fn target(args: &ImportArgs) -> anyhow::Result<Option<(RepoName, Option<Tag>)>> {
    let Some(t) = &args.target else {
        return Ok(None);
    };
    let (repo, tag) = split_name(t);
    Ok(Some((
        parse_repo(&repo)?,
        tag.as_deref().map(parse_tag).transpose()?,
    )))
}

/// The images a source names: (descriptor, names from the source).
fn roots(
    found: Vec<(Descriptor, Vec<String>)>,
    target: Option<(RepoName, Option<Tag>)>,
    path: &Path,
) -> anyhow::Result<Vec<Root>> {
    if found.is_empty() {
        bail!("{}: holds no image", path.display());
    }
    if let Some((repo, Some(tag))) = &target {
        let distinct: HashSet<&Digest> = found.iter().map(|(d, _)| &d.digest).collect();
        if distinct.len() != 1 {
            bail!(
                "{} holds {} images: REPO:TAG names one image",
                path.display(),
                distinct.len()
            );
        }
        let Some((desc, _)) = found.into_iter().next() else {
            bail!("{}: holds no image", path.display());
        };
        return Ok(vec![Root {
            desc,
            repo: repo.clone(),
            tags: vec![tag.clone()],
        }]);
    }
    let default_repo = target.map(|(r, _)| r);
    let mut out: Vec<Root> = Vec::new();
    for (desc, names) in found {
        if names.is_empty() {
            bail!(
                "{}: image {} has no name: give REPO:TAG",
                path.display(),
                desc.digest
            );
        }
        for n in names {
            let (repo, tag) = if n.contains(['/', ':']) {
                let (r, t) = split_name(&n);
                (parse_repo(&r)?, t.unwrap_or_else(|| "latest".to_owned()))
            } else {
                let r = default_repo.clone().ok_or_else(|| {
                    anyhow!(
                        "{}: image tagged {n:?} has no repository: give REPO or REPO:TAG",
                        path.display()
                    )
                })?;
                (r, n.clone())
            };
            let repo = match &default_repo {
                Some(r) => r.clone(),
                None => repo,
            };
            let tag = parse_tag(&tag)?;
            match out
                .iter_mut()
                .find(|r| r.repo == repo && r.desc.digest == desc.digest)
            {
                Some(r) => {
                    if !r.tags.contains(&tag) {
                        r.tags.push(tag)
                    }
                }
                None => out.push(Root {
                    desc: desc.clone(),
                    repo,
                    tags: vec![tag],
                }),
            }
        }
    }
    Ok(out)
}

async fn import_cmd(args: &ImportArgs) -> anyhow::Result<Report> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./wharf-data"));
    let target = target(args)?;
    let path = &args.path;
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    // Keeps unpacked archives alive until the import is done.
    let mut scratch: Vec<tempfile::TempDir> = Vec::new();
    let mut new_scratch = || -> anyhow::Result<PathBuf> {
        let d = tempfile::Builder::new()
            .prefix(".wharf-import-")
            .tempdir()
            .context("cannot create a scratch directory")?;
        let p = d.path().to_owned();
        scratch.push(d);
        Ok(p)
    };
    let (source, roots, docker_manifests) = if meta.is_dir() {
        let l = Layout::open(path).map_err(|e| anyhow!("{e}"))?;
        let found = layout_found(&l)?;
        (
            Source::Layout(l),
            roots(found, target, path)?,
            BTreeMap::new(),
        )
    } else {
        let dir = new_scratch()?;
        layout::unpack_archive(path, &dir).map_err(|e| anyhow!("{e}"))?;
        if dir.join(layout::LAYOUT_FILE).is_file() {
            let l = Layout::open(&dir).map_err(|e| anyhow!("{e}"))?;
            let found = layout_found(&l)?;
            (
                Source::Layout(l),
                roots(found, target, path)?,
                BTreeMap::new(),
            )
        } else if dir.join("manifest.json").is_file() {
            let mf = dir.join("manifest.json");
            let bytes = std::fs::read(&mf).with_context(|| format!("{}", mf.display()))?;
            let entries: Vec<docker_archive::Entry> = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow!("{}: bad manifest.json: {e}", path.display()))?;
            let mut files = BTreeMap::new();
            let mut found = Vec::new();
            let mut built = BTreeMap::new();
            for (i, e) in entries.iter().enumerate() {
                let name = if entries.len() == 1 {
                    None
                } else {
                    Some(
                        e.repo_tags
                            .iter()
                            .flatten()
                            .next()
                            .ok_or_else(|| {
                                anyhow!(
                                    "{}: image {i} of {} has no RepoTags",
                                    path.display(),
                                    entries.len()
                                )
                            })?
                            .clone(),
                    )
                };
                let img = docker_archive::read(path, &new_scratch()?, name.as_deref())
                    .map_err(|e| anyhow!("{e}"))?;
                for (d, p) in img.files {
                    files.insert(d.digest, p);
                }
                let desc = Descriptor {
                    media_type: oci::media::DOCKER_MANIFEST.to_owned(),
                    digest: img.digest.clone(),
                    size: img.manifest.len() as u64,
                    urls: None,
                    annotations: None,
                    artifact_type: None,
                    platform: None,
                };
                built.insert(img.digest, Bytes::from(img.manifest));
                found.push((desc, img.repo_tags));
            }
            (Source::Files(files), roots(found, target, path)?, built)
        } else {
            bail!(
                "{}: neither an oci-archive (no oci-layout) nor a docker-archive (no manifest.json)",
                path.display()
            );
        }
    };

    // Phase 1: read and verify every manifest, children first.
    let mut plan: Vec<Planned> = Vec::new();
    let mut blobs: Vec<(RepoName, Descriptor)> = Vec::new();
    for root in &roots {
        plan_manifest(
            &source,
            &docker_manifests,
            &root.repo,
            &root.desc,
            root.tags.clone(),
            &mut plan,
            &mut blobs,
        )?;
    }

    // Phase 2: blobs.
    let fs = FsBackend::open(&data_dir, !args.no_fsync)
        .map_err(|e| anyhow::anyhow!("{}", open_failure(&data_dir, &e)))?;
    let registry = Registry::new(Arc::new(fs), RegistryConfig::default());
    let mut report = Report::default();
    let mut done: HashSet<(String, Digest)> = HashSet::new();
    for (repo, desc) in &blobs {
        if !done.insert((repo.as_str().to_owned(), desc.digest.clone())) {
            continue;
        }
        if registry.mount(repo, &desc.digest, None).await? {
            let size = registry.blob_size(repo, &desc.digest).await?;
            if size != Some(desc.size) {
                bail!(
                    "{}: the store holds it with size {size:?}, the source says {}",
                    desc.digest,
                    desc.size
                );
            }
            report.present += 1;
            continue;
        }
        let p = source.path(&desc.digest)?;
        let file = tokio::fs::File::open(&p)
            .await
            .with_context(|| format!("{}: cannot read blob {}", p.display(), desc.digest))?;
        let size = registry
            .upload_whole(repo, file_stream(file), &desc.digest)
            .await
            .map_err(|e| anyhow!("{}: blob {}: {e}", p.display(), desc.digest))?;
        if size != desc.size {
            bail!(
                "{}: blob {} is {size} bytes, its descriptor says {}",
                p.display(),
                desc.digest,
                desc.size
            );
        }
        report.uploaded += 1;
        report.uploaded_bytes += size;
    }

    // Phase 3: manifests, children before indexes; tags with them.
    let mut stored: HashSet<(String, Digest)> = HashSet::new();
    for m in &plan {
        let key = (m.repo.as_str().to_owned(), m.digest.clone());
        if stored.contains(&key) && m.tags.is_empty() {
            continue;
        }
        registry
            .manifest_put(
                &m.repo,
                &Reference::Digest(m.digest.clone()),
                Some(&m.media_type),
                m.bytes.clone(),
                &m.tags,
            )
            .await
            .map_err(|e| anyhow!("manifest {} into {}: {e}", m.digest, m.repo.as_str()))?;
        if stored.insert(key) {
            report.manifests += 1;
        }
        for t in &m.tags {
            report.tags.push(format!(
                "{}:{} -> {}",
                m.repo.as_str(),
                t.as_str(),
                m.digest
            ));
        }
    }
    report.images = roots.len();
    Ok(report)
}

fn layout_found(l: &Layout) -> anyhow::Result<Vec<(Descriptor, Vec<String>)>> {
    let entries = l.entries().map_err(|e| anyhow!("{e}"))?;
    Ok(entries
        .into_iter()
        .map(|d| {
            let names = layout::ref_name(&d)
                .map(str::to_owned)
                .into_iter()
                .collect();
            (d, names)
        })
        .collect())
}

fn plan_manifest(
    source: &Source,
    built: &BTreeMap<Digest, Bytes>,
    repo: &RepoName,
    desc: &Descriptor,
    tags: Vec<Tag>,
    plan: &mut Vec<Planned>,
    blobs: &mut Vec<(RepoName, Descriptor)>,
) -> anyhow::Result<()> {
    let (bytes, shown) = match built.get(&desc.digest) {
        Some(b) => (b.clone(), format!("the manifest built for {}", desc.digest)),
        None => {
            let p = source.path(&desc.digest)?;
            (read_verified(&p, desc)?, p.display().to_string())
        }
    };
    let m = manifest::parse(Some(&desc.media_type), &bytes)
        .map_err(|e| anyhow!("{shown}: not a valid manifest: {e}"))?;
    match m.kind {
        Kind::Index => {
            for child in &m.manifests {
                plan_manifest(source, built, repo, child, Vec::new(), plan, blobs)?;
            }
        }
        Kind::Image => {
            for b in m.required_blobs() {
                blobs.push((repo.clone(), b.clone()));
            }
        }
    }
    plan.push(Planned {
        repo: repo.clone(),
        digest: desc.digest.clone(),
        media_type: m.media_type.clone(),
        bytes,
        tags,
    });
    Ok(())
}

/// A manifest file, checked against its descriptor.
fn read_verified(p: &Path, desc: &Descriptor) -> anyhow::Result<Bytes> {
    if desc.size > MAX_MANIFEST {
        bail!(
            "{}: manifest {} is too large ({} bytes)",
            p.display(),
            desc.digest,
            desc.size
        );
    }
    let f = std::fs::File::open(p)
        .with_context(|| format!("{}: cannot read manifest {}", p.display(), desc.digest))?;
    let mut bytes = Vec::new();
    f.take(MAX_MANIFEST + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read manifest {}", p.display(), desc.digest))?;
    let actual = Digest::of(desc.digest.algorithm(), &bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        bail!(
            "{}: corrupt manifest: expected {} ({} bytes), found {actual} ({} bytes)",
            p.display(),
            desc.digest,
            desc.size,
            bytes.len()
        );
    }
    Ok(Bytes::from(bytes))
}

fn file_stream(file: tokio::fs::File) -> store::backend::ByteStream {
    use tokio::io::AsyncReadExt as _;
    let s = futures_util::stream::unfold(Some(file), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Box::pin(s)
}
