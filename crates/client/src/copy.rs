//! `wharf cp`: copy an image (or a whole index) between registries, OCI
//! image layouts (`oci:DIR[:TAG]`), their tarballs (`oci-archive:FILE[:TAG]`)
//! and `docker save` tarballs (`docker-archive:FILE[:REPO:TAG]`).
//!
//! Manifests are copied byte for byte, so digests and media types (Docker
//! schema 2 or OCI) are kept. Blobs the destination has are skipped (HEAD);
//! between two repositories of one registry they are mounted; the others
//! move in parallel (at most [`CopyOptions::jobs`] at a time), staged
//! through the blob cache (registry sources) or read from the unpacked
//! archive / layout, never held in memory.

use crate::cache::Cache;
use crate::docker_archive;
use crate::error::{Error, Result};
use crate::layout::{Layout, pack_archive, unpack_archive};
use crate::package::ProgressFn;
use crate::reference::{Host, ImageRef};
use crate::registry::{Client, MAX_MANIFEST_SIZE};
use futures_util::StreamExt as _;
use oci::manifest::{Descriptor, Kind as ManifestKind};
use oci::{Digest, Reference, media};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// One side of a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Registry(ImageRef),
    Oci { dir: PathBuf, tag: Option<String> },
    OciArchive { file: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf, name: Option<String> },
}

impl Endpoint {
    /// `HOST/REPO[:TAG|@DIGEST]`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`
    /// or `docker-archive:FILE[:REPO[:TAG]]` (the path ends at the first `:`,
    /// as with skopeo).
    pub fn parse(s: &str, insecure: bool) -> Result<Endpoint> {
        let split = |rest: &str| -> Result<(PathBuf, Option<String>)> {
            let (p, t) = match rest.split_once(':') {
                Some((p, t)) => (p, Some(t.to_owned()).filter(|t| !t.is_empty())),
                None => (rest, None),
            };
            if p.is_empty() {
                return Err(Error::Usage(format!("{s:?}: the path is missing")));
            }
            Ok((PathBuf::from(p), t))
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split(rest)?;
            if let Some(t) = &tag {
                oci::Tag::parse(t)
                    .map_err(|e| Error::Usage(format!("{s:?}: bad tag {t:?}: {e}")))?;
            }
            Ok(Endpoint::Oci { dir, tag })
        } else if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split(rest)?;
            Ok(Endpoint::OciArchive { file, tag })
        } else if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (file, name) = split(rest)?;
            Ok(Endpoint::DockerArchive { file, name })
        } else if let Some(rest) = s.strip_prefix("docker://") {
            Ok(Endpoint::Registry(ImageRef::parse(rest, insecure)?))
        } else if s.starts_with(['.', '/', '~']) {
            // A registry reference never starts so: a forgotten `oci:`.
            Err(Error::Usage(format!(
                "{s:?} looks like a local path, not a registry reference: to copy into or from a directory write oci:{s} (an OCI layout), or oci-archive:FILE / docker-archive:FILE for a tarball"
            )))
        } else {
            Ok(Endpoint::Registry(ImageRef::parse(s, insecure)?))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |t: &Option<String>| t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        match self {
            Endpoint::Registry(r) => write!(f, "{r}"),
            Endpoint::Oci { dir, tag } => write!(f, "oci:{}{}", dir.display(), opt(tag)),
            Endpoint::OciArchive { file, tag } => {
                write!(f, "oci-archive:{}{}", file.display(), opt(tag))
            }
            Endpoint::DockerArchive { file, name } => {
                write!(f, "docker-archive:{}{}", file.display(), opt(name))
            }
        }
    }
}

/// `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts[..] {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: Some(v.into()),
            }),
            _ => Err(Error::Usage(format!(
                "bad platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64"
            ))),
        }
    }

    /// This machine's platform, named as Go (and so OCI) names it.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            a => a,
        };
        Platform {
            os: std::env::consts::OS.into(),
            architecture: architecture.into(),
            variant: (architecture == "arm").then(|| "v7".into()),
        }
    }

    fn matches(&self, p: &Value) -> bool {
        let get = |k: &str| p.get(k).and_then(Value::as_str);
        get("os") == Some(&self.os)
            && get("architecture") == Some(&self.architecture)
            && match &self.variant {
                None => true,
                Some(v) => {
                    get("variant") == Some(v)
                        // arm64 images often leave out the v8 variant.
                        || (get("variant").is_none() && self.architecture == "arm64" && v == "v8")
                }
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How to copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Copy a whole index (else pick [`CopyOptions::platform`] from it).
    pub all: bool,
    pub platform: Platform,
    /// Blobs moving at once.
    pub jobs: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            all: false,
            platform: Platform::host(),
            jobs: 4,
        }
    }
}

/// What [`copy`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    /// The digest of the top manifest written.
    pub digest: String,
    pub media_type: String,
    pub manifests: usize,
    pub blobs: usize,
    /// Blobs copied.
    pub copied: usize,
    /// Blobs the destination had.
    pub skipped: usize,
    /// Blobs mounted from the source repository.
    pub mounted: usize,
    pub bytes_copied: u64,
}

/// Makes a client for a registry host.
pub type ConnectFn<'a> = &'a (dyn Fn(&Host) -> Result<Client> + Send + Sync);

struct Manifest {
    bytes: Vec<u8>,
    media_type: String,
    digest: Digest,
}

impl Manifest {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: None,
        }
    }
    fn parse(&self, what: &str) -> Result<oci::manifest::Manifest> {
        oci::manifest::parse(Some(&self.media_type), &self.bytes)
            .map_err(|e| Error::Other(format!("{what}: bad manifest {}: {e}", self.digest)))
    }
}

// One of each per copy: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Source {
    Registry {
        client: Client,
        r: ImageRef,
    },
    Layout {
        layout: Layout,
        tag: Option<String>,
        _tmp: Option<tempfile::TempDir>,
    },
    Docker {
        image: docker_archive::ArchiveImage,
        _tmp: tempfile::TempDir,
    },
}

impl Source {
    async fn open(e: &Endpoint, connect: ConnectFn<'_>) -> Result<Source> {
        Ok(match e {
            Endpoint::Registry(r) => Source::Registry {
                client: connect(&r.host)?,
                r: r.clone(),
            },
            Endpoint::Oci { dir, tag } => Source::Layout {
                layout: Layout::open(dir)?,
                tag: tag.clone(),
                _tmp: None,
            },
            Endpoint::OciArchive { file, tag } => {
                let (tmp, file) = (scratch_dir(file)?, file.clone());
                let dir = tmp.path().to_owned();
                blocking(move || unpack_archive(&file, &dir)).await?;
                Source::Layout {
                    layout: Layout::open(tmp.path())?,
                    tag: tag.clone(),
                    _tmp: Some(tmp),
                }
            }
            Endpoint::DockerArchive { file, name } => {
                let (tmp, file, name) = (scratch_dir(file)?, file.clone(), name.clone());
                let dir = tmp.path().to_owned();
                let image =
                    blocking(move || docker_archive::read(&file, &dir, name.as_deref())).await?;
                Source::Docker { image, _tmp: tmp }
            }
        })
    }

    async fn root(&self) -> Result<Manifest> {
        match self {
            Source::Registry { client, r } => {
                let m = client.get_manifest(&r.repo, &r.reference()).await?;
                Ok(Manifest {
                    bytes: m.bytes,
                    media_type: m.media_type,
                    digest: m.digest,
                })
            }
            Source::Layout { layout, tag, .. } => {
                let d = layout.resolve(tag.as_deref())?;
                let bytes = layout.read_blob_bytes(&d.digest, MAX_MANIFEST_SIZE as u64)?;
                Ok(Manifest {
                    bytes,
                    media_type: d.media_type,
                    digest: d.digest,
                })
            }
            Source::Docker { image, .. } => Ok(Manifest {
                bytes: image.manifest.clone(),
                media_type: media::DOCKER_MANIFEST.into(),
                digest: image.digest.clone(),
            }),
        }
    }

    async fn child(&self, d: &Descriptor) -> Result<Manifest> {
        let bytes = match self {
            Source::Registry { client, r } => {
                client
                    .get_manifest(&r.repo, &Reference::Digest(d.digest.clone()))
                    .await?
                    .bytes
            }
            Source::Layout { layout, .. } => {
                layout.read_blob_bytes(&d.digest, MAX_MANIFEST_SIZE as u64)?
            }
            Source::Docker { .. } => {
                return Err(Error::Other("a docker-archive holds no index".into()));
            }
        };
        Ok(Manifest {
            bytes,
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
        })
    }

    /// A file holding the blob (downloaded into the cache if needed).
    async fn blob(
        &self,
        d: &Descriptor,
        cache: &Cache,
        progress: ProgressFn<'_>,
    ) -> Result<(PathBuf, bool)> {
        match self {
            Source::Registry { client, r } => {
                let p = progress(&short(&d.digest), d.size);
                cache
                    .fetch(client, &r.repo, &d.digest, Some(d.size), p)
                    .await
            }
            Source::Layout { layout, .. } => {
                let p = layout.blob_path(&d.digest);
                if !layout.has_blob(&d.digest, d.size) {
                    return Err(Error::NotFound(format!(
                        "{}: blob {} ({} bytes) is missing",
                        layout.root().display(),
                        d.digest,
                        d.size
                    )));
                }
                Ok((p, false))
            }
            Source::Docker { image, .. } => image
                .files
                .iter()
                .find(|(f, _)| f.digest == d.digest)
                .map(|(_, p)| (p.clone(), false))
                .ok_or_else(|| Error::NotFound(format!("blob {} is not in the archive", d.digest))),
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Dest {
    Registry {
        client: Client,
        r: ImageRef,
        /// The source repository, when it is on the same registry.
        mount_from: Option<oci::RepoName>,
    },
    Layout {
        layout: Layout,
        tag: Option<String>,
        /// For oci-archive: the file, and the staging layout's directory.
        archive: Option<(PathBuf, tempfile::TempDir)>,
    },
    Docker {
        file: PathBuf,
        name: Option<String>,
        blobs: Mutex<HashMap<Digest, PathBuf>>,
    },
}

impl Dest {
    fn open(e: &Endpoint, src: &Endpoint, connect: ConnectFn<'_>) -> Result<Dest> {
        Ok(match e {
            Endpoint::Registry(r) => {
                let mount_from = match src {
                    Endpoint::Registry(s) if s.host.name == r.host.name && s.repo != r.repo => {
                        Some(s.repo.clone())
                    }
                    _ => None,
                };
                Dest::Registry {
                    client: connect(&r.host)?,
                    r: r.clone(),
                    mount_from,
                }
            }
            Endpoint::Oci { dir, tag } => Dest::Layout {
                layout: Layout::create(dir)?,
                tag: tag.clone(),
                archive: None,
            },
            Endpoint::OciArchive { file, tag } => {
                let tmp = scratch_dir(file)?;
                Dest::Layout {
                    layout: Layout::create(tmp.path())?,
                    tag: tag.clone(),
                    archive: Some((file.clone(), tmp)),
                }
            }
            Endpoint::DockerArchive { file, name } => Dest::Docker {
                file: file.clone(),
                name: name.clone().or_else(|| match src {
                    Endpoint::Registry(s) if s.tag.is_some() => Some(format!(
                        "{}/{}:{}",
                        s.host.name,
                        s.repo,
                        s.reference_tag_or_latest()
                    )),
                    _ => None,
                }),
                blobs: Mutex::new(HashMap::new()),
            },
        })
    }

    async fn has_blob(&self, d: &Descriptor) -> Result<bool> {
        match self {
            Dest::Registry { client, r, .. } => {
                Ok(client.head_blob(&r.repo, &d.digest).await?.is_some())
            }
            Dest::Layout { layout, .. } => Ok(layout.has_blob(&d.digest, d.size)),
            Dest::Docker { .. } => Ok(false),
        }
    }
}

/// The outcome of one blob.
enum Moved {
    Skipped,
    Mounted,
    Copied(u64),
}

/// Copy `src` to `dst`.
pub async fn copy(
    src: &Endpoint,
    dst: &Endpoint,
    connect: ConnectFn<'_>,
    cache: &Cache,
    opts: &CopyOptions,
    progress: ProgressFn<'_>,
) -> Result<CopyReport> {
    let source = Source::open(src, connect).await?;
    let dest = Dest::open(dst, src, connect)?;
    let what = src.to_string();

    // The manifests to copy: children first, the top one last.
    let root = source.root().await?;
    let parsed = root.parse(&what)?;
    let mut manifests: Vec<Manifest> = Vec::new();
    let mut images: Vec<oci::manifest::Manifest> = Vec::new();
    match parsed.kind {
        ManifestKind::Image => {
            images.push(parsed);
            manifests.push(root);
        }
        ManifestKind::Index if opts.all => {
            if matches!(dest, Dest::Docker { .. }) {
                return Err(Error::Usage(format!(
                    "{what} is an index of {} images and a docker-archive holds one: drop --all (and pick one with --platform)",
                    parsed.manifests.len()
                )));
            }
            for d in &parsed.manifests {
                let child = source.child(d).await?;
                let p = child.parse(&what)?;
                if p.kind != ManifestKind::Image {
                    return Err(Error::Other(format!(
                        "{what}: nested index {} is not supported",
                        d.digest
                    )));
                }
                images.push(p);
                manifests.push(child);
            }
            manifests.push(root);
        }
        ManifestKind::Index => {
            let d = parsed
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| opts.platform.matches(p))
                })
                .ok_or_else(|| {
                    let have: Vec<String> = parsed
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref())
                        .map(platform_string)
                        .collect();
                    Error::NotFound(format!(
                        "{what} has no image for {} (it has {}); use --platform or --all",
                        opts.platform,
                        if have.is_empty() {
                            "none".into()
                        } else {
                            have.join(", ")
                        }
                    ))
                })?;
            let child = source.child(d).await?;
            let p = child.parse(&what)?;
            if p.kind != ManifestKind::Image {
                return Err(Error::Other(format!("{what}: nested index {}", d.digest)));
            }
            images.push(p);
            manifests.push(child);
        }
    }

    // A docker-archive can only hold container images: refuse anything
    // else before a byte is copied or a file is written.
    if matches!(dest, Dest::Docker { .. }) {
        for m in &images {
            docker_archive::check_image(&what, m)?;
        }
    }

    // Blobs, each once.
    let mut seen = BTreeSet::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    for m in &images {
        for b in m.required_blobs() {
            if seen.insert(b.digest.to_string()) {
                blobs.push(b.clone());
            }
        }
    }
    let (copied, skipped, mounted, bytes) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicU64::new(0),
    );
    let results: Vec<Result<()>> = futures_util::stream::iter(blobs.iter())
        .map(|d| async {
            let moved = move_blob(&source, &dest, d, cache, progress).await?;
            match moved {
                Moved::Skipped => skipped.fetch_add(1, Ordering::Relaxed),
                Moved::Mounted => mounted.fetch_add(1, Ordering::Relaxed),
                Moved::Copied(n) => {
                    bytes.fetch_add(n, Ordering::Relaxed);
                    copied.fetch_add(1, Ordering::Relaxed)
                }
            };
            Ok(())
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;

    // Manifests, children before the index that lists them.
    let n = manifests.len();
    let top = manifests
        .last()
        .map(|m| (m.digest.to_string(), m.media_type.clone()))
        .unwrap_or_default();
    for (i, m) in manifests.iter().enumerate() {
        put_manifest(&dest, m, i + 1 == n).await?;
    }
    finish(dest, &images).await?;

    Ok(CopyReport {
        source: src.to_string(),
        destination: dst.to_string(),
        digest: top.0,
        media_type: top.1,
        manifests: n,
        blobs: blobs.len(),
        copied: copied.into_inner(),
        skipped: skipped.into_inner(),
        mounted: mounted.into_inner(),
        bytes_copied: bytes.into_inner(),
    })
}

async fn move_blob(
    source: &Source,
    dest: &Dest,
    d: &Descriptor,
    cache: &Cache,
    progress: ProgressFn<'_>,
) -> Result<Moved> {
    if dest.has_blob(d).await? {
        return Ok(Moved::Skipped);
    }
    if let Dest::Registry {
        client,
        r,
        mount_from: Some(from),
    } = dest
        && client.mount_blob(&r.repo, &d.digest, from).await?
    {
        return Ok(Moved::Mounted);
    }
    let (path, _) = source.blob(d, cache, progress).await?;
    match dest {
        Dest::Registry { client, r, .. } => {
            let p = progress(&short(&d.digest), d.size);
            client
                .push_blob_file(&r.repo, &d.digest, d.size, &path, None, p)
                .await?;
        }
        Dest::Layout { layout, .. } => {
            let (l, dg, size) = (layout.clone(), d.digest.clone(), d.size);
            blocking(move || l.copy_blob_in(&dg, size, &path)).await?;
        }
        Dest::Docker { blobs, .. } => {
            blobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(d.digest.clone(), path);
        }
    }
    Ok(Moved::Copied(d.size))
}

async fn put_manifest(dest: &Dest, m: &Manifest, top: bool) -> Result<()> {
    match dest {
        Dest::Registry { client, r, .. } => {
            let reference = if !top {
                Reference::Digest(m.digest.clone())
            } else if r.tag.is_some() || r.digest.is_none() {
                if let Some(want) = &r.digest
                    && *want != m.digest
                {
                    return Err(Error::DigestMismatch {
                        what: format!("destination {r}"),
                        expected: want.to_string(),
                        actual: m.digest.to_string(),
                    });
                }
                r.reference_tag_or_latest()
            } else {
                let want = r.reference();
                if want != Reference::Digest(m.digest.clone()) {
                    return Err(Error::DigestMismatch {
                        what: format!("destination {r}"),
                        expected: want.to_string(),
                        actual: m.digest.to_string(),
                    });
                }
                want
            };
            client
                .put_manifest(&r.repo, &reference, &m.media_type, &m.bytes)
                .await?;
        }
        Dest::Layout { layout, tag, .. } => {
            layout.write_blob_bytes(&m.digest, &m.bytes)?;
            if top {
                layout.add_to_index(&m.descriptor(), tag.as_deref())?;
            }
        }
        Dest::Docker { .. } => {}
    }
    Ok(())
}

async fn finish(dest: Dest, images: &[oci::manifest::Manifest]) -> Result<()> {
    match dest {
        Dest::Registry { .. } => Ok(()),
        Dest::Layout {
            layout,
            archive: Some((file, tmp)),
            ..
        } => {
            blocking(move || {
                let r = pack_archive(layout.root(), &file);
                drop(tmp);
                r
            })
            .await
        }
        Dest::Layout { .. } => Ok(()),
        Dest::Docker { file, name, blobs } => {
            let blobs = blobs.into_inner().unwrap_or_else(|p| p.into_inner());
            let img = images
                .first()
                .ok_or_else(|| Error::Other("nothing to write".into()))?;
            let path_of = |d: &Descriptor| {
                blobs
                    .get(&d.digest)
                    .cloned()
                    .ok_or_else(|| Error::Other(format!("blob {} was not staged", d.digest)))
            };
            let config = path_of(
                img.config
                    .as_ref()
                    .ok_or_else(|| Error::Other("the image has no config".into()))?,
            )?;
            let layers = img.layers.iter().map(path_of).collect::<Result<Vec<_>>>()?;
            let tags: Vec<String> = name
                .iter()
                .map(|n| docker_archive::normalize_name(n))
                .collect();
            let scratch = scratch_dir(&file)?;
            blocking(move || docker_archive::write(&file, &config, &layers, &tags, scratch.path()))
                .await
        }
    }
}

/// A temporary directory next to `file` (same filesystem, so big archives
/// do not fill /tmp).
fn scratch_dir(file: &Path) -> Result<tempfile::TempDir> {
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parent = if parent.is_dir() {
        parent.to_owned()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(".wharf-cp-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("background task failed: {e}")))?
}

fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}

fn platform_string(p: &Value) -> String {
    let get = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    let mut s = format!("{}/{}", get("os"), get("architecture"));
    if !get("variant").is_empty() {
        s.push('/');
        s.push_str(get("variant"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_not_a_registry_reference() {
        for p in ["./somedir", "/tmp/x", "../up", ".", "~/img"] {
            let e = Endpoint::parse(p, false).unwrap_err().to_string();
            assert!(e.contains(&format!("write oci:{p}")), "{e}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("oci:/tmp/l:v1", false).unwrap(),
            Endpoint::Oci {
                dir: "/tmp/l".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Endpoint::parse("oci:dir", false).unwrap(),
            Endpoint::Oci {
                dir: "dir".into(),
                tag: None
            }
        );
        assert_eq!(
            Endpoint::parse("docker-archive:a.tar:127.0.0.1:5000/x/y:1", false).unwrap(),
            Endpoint::DockerArchive {
                file: "a.tar".into(),
                name: Some("127.0.0.1:5000/x/y:1".into())
            }
        );
        assert!(matches!(
            Endpoint::parse("127.0.0.1:5000/a/b:1", false).unwrap(),
            Endpoint::Registry(_)
        ));
        assert!(Endpoint::parse("oci::x", false).is_err());
        assert!(Endpoint::parse("oci:d:bad tag", false).is_err());
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(p.matches(&serde_json::json!({"os":"linux","architecture":"arm64"})));
        assert!(!p.matches(&serde_json::json!({"os":"linux","architecture":"amd64"})));
        let p = Platform::parse("linux/arm/v6").unwrap();
        assert!(!p.matches(&serde_json::json!({"os":"linux","architecture":"arm","variant":"v7"})));
        assert!(Platform::parse("linux").is_err());
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
    }
}
