//! Reading a source's images: an OCI layout (directory or `oci-archive`
//! tarball) or a `docker save` tarball. Blocking; run it off the async
//! workers. Every manifest and blob an image needs is verified here, or the
//! scan fails naming the file and what is wrong with it.

use super::container::{Container, Loc};
use super::verify::Verifier;
use super::{ServedManifest, SourceError};
use bytes::Bytes;
use oci::manifest::{self, Descriptor, Kind};
use oci::{Algorithm, Digest, media};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest manifest read from a source.
const MAX_MANIFEST: u64 = 4 << 20;
/// Largest `index.json`, `manifest.json` or image config read.
const MAX_METADATA: u64 = 16 << 20;
/// Deepest nesting of indexes.
const MAX_DEPTH: usize = 8;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One image of a source: the names the source gives it, its top-level
/// manifest, every manifest below it and every blob they need.
pub struct ScannedImage {
    pub names: Vec<String>,
    pub root: Digest,
    pub manifests: Vec<Arc<ServedManifest>>,
    pub blobs: Vec<(Digest, Loc)>,
}

/// The kind of a source, found from its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Layout,
    OciArchive,
    DockerArchive,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Layout => "OCI layout",
            Format::OciArchive => "oci-archive",
            Format::DockerArchive => "docker-archive",
        }
    }
}

/// Open a source and read all its images.
pub fn scan(
    path: &std::path::Path,
    v: &mut Verifier<'_>,
) -> Result<(Format, Vec<ScannedImage>), SourceError> {
    let meta = std::fs::metadata(path).map_err(|e| SourceError::io(path, e))?;
    let invalid = |why: &str| SourceError::Invalid {
        file: path.to_owned(),
        why: why.to_owned(),
    };
    if meta.is_dir() {
        let c = Container::Dir {
            root: path.to_owned(),
        };
        if !c.has("oci-layout")? || !c.has("index.json")? {
            return Err(invalid(
                "not an OCI image layout (it needs oci-layout and index.json)",
            ));
        }
        return Ok((Format::Layout, scan_oci(&c, v)?));
    }
    let c = Container::tar(path)?;
    // A docker-save tarball may also hold an OCI layout (docker 25 and
    // later): manifest.json is what `docker load` reads, so it wins.
    if c.has("manifest.json")? {
        Ok((Format::DockerArchive, scan_docker(&c, v)?))
    } else if c.has("oci-layout")? && c.has("index.json")? {
        Ok((Format::OciArchive, scan_oci(&c, v)?))
    } else {
        Err(invalid(
            "neither a docker-save tarball (no manifest.json) nor an oci-archive (no oci-layout and index.json)",
        ))
    }
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

// ------------------------------------------------------------------ OCI

fn scan_oci(c: &Container, v: &mut Verifier<'_>) -> Result<Vec<ScannedImage>, SourceError> {
    let invalid = |why: String| SourceError::Invalid {
        file: c.path().to_owned(),
        why,
    };
    let (raw, _) = c.read_small("index.json", MAX_METADATA)?;
    let index: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| invalid(format!("index.json is not JSON: {e}")))?;
    let entries: Vec<Descriptor> = match index.get("manifests") {
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|e| invalid(format!("index.json: bad manifests list: {e}")))?,
        None => return Err(invalid("index.json has no manifests list".into())),
    };
    let mut images = Vec::new();
    for entry in entries {
        let mut img = ScannedImage {
            names: entry
                .annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned()
                .into_iter()
                .collect(),
            root: entry.digest.clone(),
            manifests: Vec::new(),
            blobs: Vec::new(),
        };
        walk(c, v, &entry, 0, &mut img)?;
        images.push(img);
    }
    Ok(images)
}

/// Read and verify the manifest `desc` and everything below it.
fn walk(
    c: &Container,
    v: &mut Verifier<'_>,
    desc: &Descriptor,
    depth: usize,
    img: &mut ScannedImage,
) -> Result<(), SourceError> {
    let name = blob_name(&desc.digest);
    let invalid = |why: String| SourceError::Invalid {
        file: c.path().to_owned(),
        why: format!("manifest {name}: {why}"),
    };
    if depth > MAX_DEPTH {
        return Err(invalid(format!("indexes nested deeper than {MAX_DEPTH}")));
    }
    if img.manifests.iter().any(|m| m.digest == desc.digest) {
        return Ok(());
    }
    if desc.size > MAX_MANIFEST {
        return Err(invalid(format!("larger than {MAX_MANIFEST} bytes")));
    }
    let (bytes, _) = c.read_small(&name, MAX_MANIFEST)?;
    let actual = Digest::of(desc.digest.algorithm(), &bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(invalid(format!(
            "does not match its digest: expected {} ({} bytes), found {actual} ({} bytes)",
            desc.digest,
            desc.size,
            bytes.len()
        )));
    }
    let m = manifest::parse(Some(&desc.media_type), &bytes)
        .map_err(|e| invalid(format!("not a valid manifest: {e}")))?;
    match m.kind {
        Kind::Index => {
            for child in &m.manifests {
                walk(c, v, child, depth + 1, img)?;
            }
        }
        Kind::Image => {
            for b in m.required_blobs() {
                if img.blobs.iter().any(|(d, _)| *d == b.digest) {
                    continue;
                }
                let bname = blob_name(&b.digest);
                let got = v.hash(c, &bname, b.digest.algorithm(), false)?;
                if got.digest != b.digest || got.loc.len != b.size {
                    return Err(SourceError::Invalid {
                        file: c.path().to_owned(),
                        why: format!(
                            "blob {bname} does not match its digest: expected {} ({} bytes), found {} ({} bytes)",
                            b.digest, b.size, got.digest, got.loc.len
                        ),
                    });
                }
                img.blobs.push((b.digest.clone(), got.loc));
            }
        }
    }
    img.manifests.push(Arc::new(ServedManifest {
        digest: desc.digest.clone(),
        media_type: m.media_type,
        body: Bytes::from(bytes),
    }));
    Ok(())
}

// ---------------------------------------------------------- docker save

/// One entry of a docker-save `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct DockerConfig {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<Digest>,
}

/// The Docker schema 2 manifest served for a docker-save image. Field
/// order is fixed, so the bytes (and digest) are the same on every start.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Schema2<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size,
        urls: None,
        annotations: None,
        artifact_type: None,
        platform: None,
    }
}

/// If a member is named after a digest (`<hex>.json`, `blobs/sha256/<hex>`),
/// that hex.
fn named_hex(name: &str) -> Option<&str> {
    let base = name.rsplit('/').next()?;
    let stem = base.strip_suffix(".json").unwrap_or(base);
    (stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit())).then_some(stem)
}

fn scan_docker(c: &Container, v: &mut Verifier<'_>) -> Result<Vec<ScannedImage>, SourceError> {
    let invalid = |why: String| SourceError::Invalid {
        file: c.path().to_owned(),
        why,
    };
    let (raw, _) = c.read_small("manifest.json", MAX_METADATA)?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(&raw)
        .map_err(|e| invalid(format!("manifest.json is not a docker-save manifest: {e}")))?;
    let mut images = Vec::new();
    // Layers shared by several images are hashed once.
    let mut seen: HashMap<String, super::verify::Verified> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let (config, cloc) = c.read_small(&e.config, MAX_METADATA)?;
        let config_digest = Digest::sha256_of(&config);
        if let Some(hex) = named_hex(&e.config)
            && hex != config_digest.hex()
        {
            return Err(invalid(format!(
                "image config {:?} does not match its name: its digest is {config_digest}",
                e.config
            )));
        }
        let parsed: DockerConfig = serde_json::from_slice(&config).map_err(|err| {
            invalid(format!(
                "image config {:?} is not an image config: {err}",
                e.config
            ))
        })?;
        let diff_ids = parsed.rootfs.diff_ids;
        if diff_ids.len() != e.layers.len() {
            return Err(invalid(format!(
                "image {i}: manifest.json lists {} layers but its config {:?} has {} diff_ids",
                e.layers.len(),
                e.config,
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        let mut blobs = vec![(config_digest.clone(), cloc)];
        for (l, diff_id) in e.layers.iter().zip(&diff_ids) {
            let got = match seen.get(l) {
                Some(g) => g.clone(),
                None => {
                    let g = v.hash(c, l, Algorithm::Sha256, true)?;
                    seen.insert(l.clone(), g.clone());
                    g
                }
            };
            if let Some(hex) = named_hex(l)
                && l.starts_with("blobs/")
                && hex != got.digest.hex()
            {
                return Err(invalid(format!(
                    "layer {l:?} does not match its name: its digest is {}",
                    got.digest
                )));
            }
            if got.uncompressed.as_ref() != Some(diff_id) {
                return Err(invalid(format!(
                    "layer {l:?} does not match the image config: its content is {}, the config's diff_id is {diff_id}",
                    got.uncompressed
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )));
            }
            let mt = if got.gzip {
                DOCKER_LAYER_GZIP
            } else {
                DOCKER_LAYER
            };
            layers.push(descriptor(mt, got.digest.clone(), got.loc.len));
            if !blobs.iter().any(|(d, _)| *d == got.digest) {
                blobs.push((got.digest.clone(), got.loc.clone()));
            }
        }
        let body = serde_json::to_vec_pretty(&Schema2 {
            schema_version: 2,
            media_type: media::DOCKER_MANIFEST,
            config: descriptor(DOCKER_CONFIG, config_digest, config.len() as u64),
            layers,
        })
        .map_err(|e| invalid(format!("cannot build a manifest: {e}")))?;
        let digest = Digest::sha256_of(&body);
        images.push(ScannedImage {
            names: e.repo_tags.clone().unwrap_or_default(),
            root: digest.clone(),
            manifests: vec![Arc::new(ServedManifest {
                digest,
                media_type: media::DOCKER_MANIFEST.to_owned(),
                body: Bytes::from(body),
            })],
            blobs,
        });
    }
    Ok(images)
}
