//! Files as OCI artifacts.
//!
//! A Wharf package is an image manifest with `artifactType`
//! [`PACKAGE_ARTIFACT_TYPE`] (or one given), the empty config `{}`
//! ([`media::OCI_EMPTY`]) and one deterministic tar layer ([`LAYER_TAR`]).
//! [`pull`] also restores artifacts pushed by oras (one file per layer, named
//! by `org.opencontainers.image.title`; directories as tar+gzip layers) and
//! single-tar-layer images whose config is `{}`.

use crate::cache::Cache;
use crate::error::{Error, Kind, Result};
use crate::extract::{self, Staging};
use crate::reference::ImageRef;
use crate::registry::{
    BlobPush, Client, FetchedManifest, Progress, index_manifests, referrers_tag,
};
use oci::manifest::{Descriptor, Kind as ManifestKind, Manifest};
use oci::{Digest, Reference, media};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Wharf's default artifact type for packages.
pub const PACKAGE_ARTIFACT_TYPE: &str = "application/vnd.wharf.package.v1";
/// The media type of a package's (uncompressed) tar layer.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// oras' file-name annotation.
pub const TITLE: &str = "org.opencontainers.image.title";
/// oras' "this tar+gzip layer is a directory" annotation.
pub const ORAS_UNPACK: &str = "io.deis.oras.content.unpack";
/// The empty JSON object, `{}`.
pub const EMPTY_JSON: &[u8] = b"{}";

/// Makes a progress reporter for one blob: a label and its size.
pub type ProgressFn<'a> = &'a (dyn Fn(&str, u64) -> Arc<dyn Progress> + Send + Sync);

/// sha256 of `{}`.
pub fn empty_json_digest() -> Digest {
    Digest::sha256_of(EMPTY_JSON)
}

fn empty_config() -> Value {
    json!({
        "mediaType": media::OCI_EMPTY,
        "digest": empty_json_digest().to_string(),
        "size": 2,
    })
}

/// Digest and size of a file, read in a streaming fashion.
pub fn digest_file(path: &Path) -> Result<(Digest, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut d = oci::Algorithm::Sha256.digester();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if k == 0 {
            break;
        }
        d.update(&buf[..k]);
        n += k as u64;
    }
    Ok((d.finish(), n))
}

/// What [`push`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushReport {
    pub reference: String,
    pub digest: Digest,
    pub manifest_size: u64,
    pub layer_digest: Digest,
    pub layer_size: u64,
    pub entries: usize,
    /// The layer was uploaded (false: the registry had it).
    pub uploaded: bool,
}

/// Options for [`push`] and [`attach`].
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// Pack `paths` (relative ones from `base`) into one layer and push it as a
/// package to `target`. The packed layer is also put in the cache.
pub async fn push(
    client: &Client,
    cache: Option<&Cache>,
    target: &ImageRef,
    base: &Path,
    paths: &[PathBuf],
    opts: &PushOptions,
    progress: ProgressFn<'_>,
) -> Result<PushReport> {
    let tmp = match cache {
        Some(c) => c.temp_file()?,
        None => tempfile::NamedTempFile::new().map_err(|e| Error::io(std::env::temp_dir(), e))?,
    };
    let packed = {
        let w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        crate::pack::pack(base, paths, w)?
    };
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    let repo = &target.repo;
    client.push_blob_bytes(repo, EMPTY_JSON).await?;
    let how = client
        .push_blob_file(
            repo,
            &packed.digest,
            packed.size,
            tmp.path(),
            None,
            progress(&short(&packed.digest), packed.size),
        )
        .await?;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": opts.artifact_type.as_deref().unwrap_or(PACKAGE_ARTIFACT_TYPE),
        "config": empty_config(),
        "layers": [{
            "mediaType": LAYER_TAR,
            "digest": packed.digest.to_string(),
            "size": packed.size,
        }],
    });
    if !opts.annotations.is_empty() {
        manifest["annotations"] = json!(opts.annotations);
    }
    let body = serde_json::to_vec(&manifest)
        .map_err(|e| Error::Other(format!("encoding the manifest: {e}")))?;
    let digest = put_to_ref(client, target, &body).await?;
    if let Some(c) = cache {
        c.insert(&packed.digest, tmp)?;
    }
    Ok(PushReport {
        reference: target.to_string(),
        digest,
        manifest_size: body.len() as u64,
        layer_digest: packed.digest,
        layer_size: packed.size,
        entries: packed.entries,
        uploaded: !matches!(how, BlobPush::Exists | BlobPush::Mounted),
    })
}

/// PUT a manifest under the reference's tag (or `latest`), or by digest.
async fn put_to_ref(client: &Client, target: &ImageRef, body: &[u8]) -> Result<Digest> {
    let reference = match (&target.tag, &target.digest) {
        (None, Some(d)) => {
            let got = Digest::of(d.algorithm(), body);
            if got != *d {
                return Err(Error::Usage(format!(
                    "{target}: the manifest's digest is {got}, not the one given; push to a tag instead"
                )));
            }
            Reference::Digest(d.clone())
        }
        _ => target.reference_tag_or_latest(),
    };
    Ok(client
        .put_manifest(&target.repo, &reference, media::OCI_MANIFEST, body)
        .await?
        .digest)
}

fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}

/// How a pulled artifact was laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// A Wharf package: one tar layer.
    Package,
    /// One file per layer, named by the title annotation (oras).
    Files,
    /// An image with one tar layer and the empty config.
    SingleLayer,
}

/// What [`pull`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PullReport {
    pub reference: String,
    pub digest: Digest,
    pub layout: Layout,
    /// Top-level names written into the output directory.
    pub written: Vec<PathBuf>,
    pub blobs: usize,
    pub downloaded: usize,
    pub bytes_downloaded: u64,
}

fn is_tar_media_type(mt: &str) -> bool {
    matches!(
        mt,
        LAYER_TAR
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/x-tar"
            | "application/tar"
            | "application/tar+gzip"
    )
}

fn is_empty_config(c: &Descriptor) -> bool {
    c.digest == empty_json_digest()
}

fn classify(m: &Manifest) -> std::result::Result<Layout, String> {
    let tar_layers = m
        .layers
        .iter()
        .filter(|l| is_tar_media_type(&l.media_type))
        .count();
    let titled = m.layers.iter().any(|l| {
        l.annotations
            .as_ref()
            .is_some_and(|a| a.get(TITLE).is_some_and(|t| !t.is_empty()))
    });
    if m.artifact_type.as_deref() == Some(PACKAGE_ARTIFACT_TYPE)
        && m.layers.len() == 1
        && tar_layers == 1
    {
        return Ok(Layout::Package);
    }
    if titled {
        return Ok(Layout::Files);
    }
    if m.layers.len() == 1 && tar_layers == 1 && m.config.as_ref().is_some_and(is_empty_config) {
        return Ok(Layout::SingleLayer);
    }
    if m.layers.is_empty() {
        return Err("it has no layers".into());
    }
    Err(format!(
        "it is neither a Wharf package, nor an oras artifact (no layer has a {TITLE} annotation), nor an image with one tar layer and the empty config {{}} (it has {} layer(s), config {})",
        m.layers.len(),
        m.config
            .as_ref()
            .map(|c| c.media_type.as_str())
            .unwrap_or("none")
    ))
}

/// Resolve `target` to an image manifest: an index with exactly one
/// manifest is followed.
pub async fn resolve_image(
    client: &Client,
    target: &ImageRef,
) -> Result<(FetchedManifest, Manifest)> {
    let mut fetched = client
        .get_manifest(&target.repo, &target.reference())
        .await?;
    for _ in 0..2 {
        let m = oci::manifest::parse(Some(&fetched.media_type), &fetched.bytes)
            .map_err(|e| Error::Other(format!("{target}: bad manifest: {e}")))?;
        if m.kind == ManifestKind::Image {
            return Ok((fetched, m));
        }
        if m.manifests.len() != 1 {
            return Err(Error::Usage(format!(
                "{target} is an index of {} manifests; pull one of them by digest (see `wharf inspect {target}`)",
                m.manifests.len()
            )));
        }
        let child = &m.manifests[0];
        fetched = client
            .get_manifest(&target.repo, &Reference::Digest(child.digest.clone()))
            .await?;
    }
    Err(Error::Other(format!("{target}: nested indexes")))
}

/// Pull the package (or oras artifact, or single-layer image) at `source`
/// into `out`, through the cache; nothing is written to `out` unless
/// everything was fetched, verified and extracted.
pub async fn pull(
    client: &Client,
    cache: &Cache,
    source: &ImageRef,
    out: &Path,
    replace: bool,
    progress: ProgressFn<'_>,
) -> Result<PullReport> {
    let (fetched, m) = resolve_image(client, source).await?;
    let layout = classify(&m).map_err(|why| {
        Error::Usage(format!(
            "cannot pull {source} as files: {why}; to fetch the image itself use \
             `wharf cp {source} oci:DIR` (or docker-archive:FILE), or `wharf inspect` to look at it"
        ))
    })?;
    let mut paths = Vec::new();
    let mut downloaded = 0;
    let mut bytes = 0;
    for l in &m.layers {
        let (p, fresh) = cache
            .fetch(
                client,
                &source.repo,
                &l.digest,
                Some(l.size),
                progress(&short(&l.digest), l.size),
            )
            .await?;
        if fresh {
            downloaded += 1;
            bytes += l.size;
        }
        paths.push(p);
    }
    let staging = Staging::new(out)?;
    match layout {
        Layout::Package | Layout::SingleLayer => {
            let f = std::fs::File::open(&paths[0]).map_err(|e| Error::io(&paths[0], e))?;
            extract::unpack(f, staging.root())?;
        }
        Layout::Files => {
            for (l, p) in m.layers.iter().zip(&paths) {
                write_titled_layer(l, p, staging.root())?;
            }
        }
    }
    let written = staging.commit(replace)?;
    Ok(PullReport {
        reference: source.to_string(),
        digest: fetched.digest,
        layout,
        written,
        blobs: m.layers.len(),
        downloaded,
        bytes_downloaded: bytes,
    })
}

/// One oras layer: a file named by its title, or a directory (tar+gzip with
/// the unpack annotation) extracted safely.
fn write_titled_layer(l: &Descriptor, blob: &Path, root: &Path) -> Result<()> {
    let ann = l.annotations.as_ref();
    let title = ann.and_then(|a| a.get(TITLE)).filter(|t| !t.is_empty());
    let Some(title) = title else {
        // oras names such files by digest; so do we.
        return copy_file(
            blob,
            root,
            Path::new(&l.digest.to_string().replace(':', "-")),
        );
    };
    let rel = extract::clean(Path::new(title))
        .map_err(|why| Error::Other(format!("refusing layer titled {title:?}: {why}")))?;
    if rel.as_os_str().is_empty() {
        return Err(Error::Other(format!(
            "refusing layer titled {title:?}: empty name"
        )));
    }
    let unpack = ann
        .and_then(|a| a.get(ORAS_UNPACK))
        .is_some_and(|v| v == "true")
        || l.media_type == "application/vnd.oci.image.layer.v1.tar+gzip";
    if unpack {
        let f = std::fs::File::open(blob).map_err(|e| Error::io(blob, e))?;
        extract::unpack(f, root)?;
        return Ok(());
    }
    copy_file(blob, root, &rel)
}

fn copy_file(blob: &Path, root: &Path, rel: &Path) -> Result<()> {
    extract::prepare_parents(root, rel, rel)?;
    let dest = root.join(rel);
    match std::fs::symlink_metadata(&dest) {
        Ok(m) if m.is_dir() => {
            return Err(Error::Other(format!(
                "two layers are both named {}",
                rel.display()
            )));
        }
        Ok(_) => std::fs::remove_file(&dest).map_err(|e| Error::io(&dest, e))?,
        Err(_) => {}
    }
    let mut src = std::fs::File::open(blob).map_err(|e| Error::io(blob, e))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dest)
        .map_err(|e| Error::io(&dest, e))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| Error::io(&dest, e))?;
    Ok(())
}

/// What [`attach`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttachReport {
    pub subject: String,
    pub subject_digest: Digest,
    pub digest: Digest,
    pub artifact_type: String,
    /// The registry has the referrers API; otherwise the referrers tag was updated.
    pub referrers_api: bool,
    pub referrers_tag: Option<String>,
}

/// Push `files` as an artifact whose `subject` is `subject` (one layer per
/// file, named by the title annotation, as oras does). Without the
/// referrers API (no `OCI-Subject` in the answer), the referrers tag schema
/// index `<alg>-<hex>` is updated.
pub async fn attach(
    client: &Client,
    subject: &ImageRef,
    files: &[PathBuf],
    artifact_type: &str,
    annotations: &BTreeMap<String, String>,
    progress: ProgressFn<'_>,
) -> Result<AttachReport> {
    if artifact_type.is_empty() {
        return Err(Error::Usage("--artifact-type must not be empty".into()));
    }
    let subj = client
        .head_manifest(&subject.repo, &subject.reference())
        .await?
        .ok_or_else(|| Error::NotFound(format!("{subject}: no such manifest to attach to")))?;
    let repo = &subject.repo;
    let mut layers = Vec::new();
    let mut titles = std::collections::BTreeSet::new();
    for f in files {
        let title = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Usage(format!("{}: not a file name", f.display())))?;
        if !titles.insert(title.clone()) {
            return Err(Error::Usage(format!("two files are named {title}")));
        }
        let meta = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "{}: attach takes regular files (use `wharf push` for directories)",
                f.display()
            )));
        }
        let (digest, size) = digest_file(f)?;
        client
            .push_blob_file(repo, &digest, size, f, None, progress(&title, size))
            .await?;
        layers.push(json!({
            "mediaType": media::OCTET_STREAM,
            "digest": digest.to_string(),
            "size": size,
            "annotations": { TITLE: title },
        }));
    }
    if layers.is_empty() {
        return Err(Error::Usage("attach needs at least one file".into()));
    }
    client.push_blob_bytes(repo, EMPTY_JSON).await?;
    let subject_desc = json!({
        "mediaType": subj.media_type,
        "digest": subj.digest.to_string(),
        "size": subj.size,
    });
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty_config(),
        "layers": layers,
        "subject": subject_desc,
    });
    if !annotations.is_empty() {
        manifest["annotations"] = json!(annotations);
    }
    let body = serde_json::to_vec(&manifest)
        .map_err(|e| Error::Other(format!("encoding the manifest: {e}")))?;
    let digest = Digest::sha256_of(&body);
    let pushed = client
        .put_manifest(
            repo,
            &Reference::Digest(digest.clone()),
            media::OCI_MANIFEST,
            &body,
        )
        .await?;
    let mut report = AttachReport {
        subject: subject.to_string(),
        subject_digest: subj.digest.clone(),
        digest: pushed.digest,
        artifact_type: artifact_type.to_owned(),
        referrers_api: pushed.oci_subject.is_some(),
        referrers_tag: None,
    };
    if pushed.oci_subject.is_none() {
        let mut desc = json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": digest.to_string(),
            "size": body.len(),
            "artifactType": artifact_type,
        });
        if !annotations.is_empty() {
            desc["annotations"] = json!(annotations);
        }
        let tag = update_referrers_tag(client, repo, &subj.digest, desc).await?;
        report.referrers_tag = Some(tag);
    }
    Ok(report)
}

/// Add `desc` to the referrers tag schema index of `subject`.
pub async fn update_referrers_tag(
    client: &Client,
    repo: &oci::RepoName,
    subject: &Digest,
    desc: Value,
) -> Result<String> {
    let tag = referrers_tag(subject);
    let mut manifests: Vec<Value> = match client.get_manifest(repo, &tag).await {
        Ok(m) => {
            // Keep unknown fields of existing entries: work on JSON values.
            index_manifests(&m.bytes)
                .map_err(|e| Error::Other(format!("referrers tag {tag}: {e}")))?;
            serde_json::from_slice::<Value>(&m.bytes)
                .ok()
                .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
                .unwrap_or_default()
        }
        Err(e) if e.kind() == Kind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let d = desc.get("digest").cloned();
    if !manifests.iter().any(|m| m.get("digest") == d.as_ref()) {
        manifests.push(desc);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let body = serde_json::to_vec(&index)
        .map_err(|e| Error::Other(format!("encoding the referrers index: {e}")))?;
    client
        .put_manifest(repo, &tag, media::OCI_INDEX, &body)
        .await?;
    Ok(tag.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(v: Value) -> Manifest {
        oci::manifest::parse(None, &serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn classifies() {
        let pkg = manifest(
            json!({"schemaVersion":2,"artifactType":PACKAGE_ARTIFACT_TYPE,"config":empty_config(),
            "layers":[{"mediaType":LAYER_TAR,"digest":d(1),"size":1}]}),
        );
        assert_eq!(classify(&pkg), Ok(Layout::Package));
        let oras = manifest(
            json!({"schemaVersion":2,"config":{"mediaType":"application/vnd.unknown.config.v1+json","digest":empty_json_digest().to_string(),"size":2},
            "layers":[{"mediaType":LAYER_TAR,"digest":d(1),"size":1,"annotations":{TITLE:"a.txt"}},
                      {"mediaType":LAYER_TAR,"digest":d(2),"size":1,"annotations":{TITLE:"b.txt"}}]}),
        );
        assert_eq!(classify(&oras), Ok(Layout::Files));
        let single = manifest(
            json!({"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":empty_json_digest().to_string(),"size":2},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d(1),"size":1}]}),
        );
        assert_eq!(classify(&single), Ok(Layout::SingleLayer));
        let image = manifest(
            json!({"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":d(9),"size":200},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d(1),"size":1}]}),
        );
        assert!(classify(&image).unwrap_err().contains("neither"));
        let empty = manifest(json!({"schemaVersion":2,"config":empty_config(),"layers":[]}));
        assert!(classify(&empty).is_err());
    }

    #[test]
    fn titled_layers_are_sanitised() {
        let t = tempfile::tempdir().unwrap();
        let blob = t.path().join("blob");
        std::fs::write(&blob, b"x").unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let layer = |title: &str| Descriptor {
            media_type: LAYER_TAR.into(),
            digest: Digest::sha256_of(b"x"),
            size: 1,
            urls: None,
            annotations: Some(BTreeMap::from([(TITLE.to_owned(), title.to_owned())])),
            artifact_type: None,
            platform: None,
        };
        assert!(write_titled_layer(&layer("../x"), &blob, &root).is_err());
        assert!(write_titled_layer(&layer("/etc/x"), &blob, &root).is_err());
        write_titled_layer(&layer("sub/ok.txt"), &blob, &root).unwrap();
        assert_eq!(std::fs::read(root.join("sub/ok.txt")).unwrap(), b"x");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/tmp", root.join("l")).unwrap();
            let e = write_titled_layer(&layer("l/evil"), &blob, &root).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
    }
}
