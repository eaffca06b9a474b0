//! `docker save` tarballs (`docker-archive`): `manifest.json` with
//! `Config`, `RepoTags` and `Layers`, the config as `<hex>.json` and one
//! uncompressed tar per layer.
//!
//! Reading computes the digests of the files as they are and builds a Docker
//! schema 2 manifest for them (gzip-compressed layer files keep the gzip
//! layer type, uncompressed ones get `...rootfs.diff.tar`). Writing
//! decompresses gzip layers (so each file's digest is its diff ID, as
//! `docker load` and `podman load` expect) and names files by digest.

use crate::error::{Error, Result};
use crate::layout::{copy_hashing, safe_relative, unpack_archive};
use oci::manifest::Descriptor;
use oci::{Digest, media};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Largest image config read when checking it.
const MAX_CONFIG: u64 = 16 << 20;

/// What to say when something is not a container image.
fn not_an_image(what: &str, why: &str) -> Error {
    Error::Usage(format!(
        "{what} is not a container image ({why}): a docker-archive holds only \
         container images (docker load and skopeo would reject it); copy it to an \
         OCI layout with oci:DIR[:TAG] or to an oci-archive with oci-archive:FILE[:TAG]"
    ))
}

/// A docker-archive holds container images: refuse, before anything is
/// copied or written, a manifest whose config is not an image config (a
/// `wharf push` file package, an oras artifact, a signature).
pub fn check_image(what: &str, m: &oci::manifest::Manifest) -> Result<()> {
    let config = m.config.as_ref().map(|c| c.media_type.as_str());
    if matches!(config, Some(OCI_CONFIG | DOCKER_CONFIG)) {
        return Ok(());
    }
    let mut why = match config {
        Some(t) => format!("its config is {t}"),
        None => "it has no config".to_owned(),
    };
    if let Some(t) = &m.artifact_type {
        why = format!("an artifact of type {t}; {why}");
    }
    Err(not_an_image(what, &why))
}

/// The image config at `config` must have a `rootfs` with one diff ID per
/// layer, as `docker load` and skopeo require.
fn check_config(config: &Path, layers: usize) -> Result<()> {
    let f = std::fs::File::open(config).map_err(|e| Error::io(config, e))?;
    let mut raw = Vec::new();
    f.take(MAX_CONFIG + 1)
        .read_to_end(&mut raw)
        .map_err(|e| Error::io(config, e))?;
    let what = "the image";
    if raw.len() as u64 > MAX_CONFIG {
        return Err(not_an_image(
            what,
            &format!("its config is larger than {MAX_CONFIG} bytes"),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| not_an_image(what, &format!("its config is not JSON: {e}")))?;
    let n = v
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(|d| d.as_array())
        .map(Vec::len)
        .ok_or_else(|| not_an_image(what, "its config has no rootfs.diff_ids"))?;
    if n != layers {
        return Err(not_an_image(
            what,
            &format!("its config lists {n} diff_ids for {layers} layers"),
        ));
    }
    Ok(())
}

/// One entry of `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

/// An image read from an unpacked archive.
#[derive(Debug)]
pub struct ArchiveImage {
    /// The Docker schema 2 manifest built for it.
    pub manifest: Vec<u8>,
    pub digest: Digest,
    /// Blob digest → file in the unpacked archive.
    pub files: Vec<(Descriptor, PathBuf)>,
    pub repo_tags: Vec<String>,
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

/// Normalise `REPO[:TAG]` as docker names it (`latest` when no tag).
pub fn normalize_name(n: &str) -> String {
    let last = n.rsplit('/').next().unwrap_or(n);
    if last.contains(':') || n.contains('@') {
        n.to_owned()
    } else {
        format!("{n}:latest")
    }
}

fn same_name(a: &str, b: &str) -> bool {
    let strip = |s: &str| {
        let s = s.strip_prefix("docker.io/").unwrap_or(s);
        s.strip_prefix("library/").unwrap_or(s).to_owned()
    };
    strip(&normalize_name(a)) == strip(&normalize_name(b))
}

/// Unpack `file` into `dir` and read the image named `name` (or the only one).
pub fn read(file: &Path, dir: &Path, name: Option<&str>) -> Result<ArchiveImage> {
    unpack_archive(file, dir)?;
    let mf = dir.join("manifest.json");
    let bytes = std::fs::read(&mf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Usage(format!(
                "{} is not a docker-archive (no manifest.json)",
                file.display()
            ))
        } else {
            Error::io(&mf, e)
        }
    })?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Usage(format!("{}: bad manifest.json: {e}", file.display())))?;
    let entry = match name {
        Some(n) => entries
            .into_iter()
            .find(|e| e.repo_tags.iter().flatten().any(|t| same_name(t, n)))
            .ok_or_else(|| Error::NotFound(format!("{}: no image named {n:?}", file.display())))?,
        None => {
            let n = entries.len();
            let mut it = entries.into_iter();
            match (it.next(), n) {
                (Some(e), 1) => e,
                (None, _) => {
                    return Err(Error::NotFound(format!(
                        "{}: the archive holds no image",
                        file.display()
                    )));
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "{} holds {n} images: name one with docker-archive:FILE:REPO:TAG",
                        file.display()
                    )));
                }
            }
        }
    };
    let canon_dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let member = |p: &str| -> Result<PathBuf> {
        let rel = safe_relative(Path::new(p)).ok_or_else(|| {
            Error::Usage(format!(
                "{}: unsafe path {p:?} in manifest.json",
                file.display()
            ))
        })?;
        let full = dir.join(rel);
        let canon = full
            .canonicalize()
            .map_err(|e| Error::Usage(format!("{}: {p:?} is missing: {e}", file.display())))?;
        if !canon.starts_with(&canon_dir) || !canon.is_file() {
            return Err(Error::Usage(format!(
                "{}: {p:?} is not a file in the archive",
                file.display()
            )));
        }
        Ok(canon)
    };
    let config_path = member(&entry.config)?;
    let (cd, cs) = crate::package::digest_file(&config_path)?;
    let config = descriptor(DOCKER_CONFIG, cd, cs);
    let mut files = vec![(config.clone(), config_path)];
    let mut layers = Vec::new();
    for l in &entry.layers {
        let p = member(l)?;
        let (d, s) = crate::package::digest_file(&p)?;
        let mt = if is_gzip(&p)? {
            DOCKER_LAYER_GZIP
        } else {
            DOCKER_LAYER
        };
        let desc = descriptor(mt, d, s);
        layers.push(desc.clone());
        files.push((desc, p));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST,
        "config": config,
        "layers": layers,
    });
    let manifest = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Other(e.to_string()))?;
    Ok(ArchiveImage {
        digest: Digest::sha256_of(&manifest),
        manifest,
        files,
        repo_tags: entry.repo_tags.unwrap_or_default(),
    })
}

fn is_gzip(p: &Path) -> Result<bool> {
    let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| Error::io(p, e))?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// Write a `docker save` tarball to `file`: the config as `<hex>.json`, each
/// layer (decompressed if it is gzip) as `<hex>.tar`, `manifest.json`, and
/// the legacy `repositories` file when there is a name. `scratch` holds
/// decompressed layers while the tarball is written.
pub fn write(
    file: &Path,
    config: &Path,
    layers: &[PathBuf],
    repo_tags: &[String],
    scratch: &Path,
) -> Result<()> {
    check_config(config, layers.len())?;
    let (config_digest, _) = crate::package::digest_file(config)?;
    let config_name = format!("{}.json", config_digest.hex());
    // Each layer as an uncompressed file, named by its digest (= diff ID).
    let mut layer_files: Vec<(String, PathBuf)> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (d, path) = if is_gzip(l)? {
            let out = scratch.join(format!("layer-{i}.tar"));
            let mut w = std::fs::File::create(&out).map_err(|e| Error::io(&out, e))?;
            let r = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                std::fs::File::open(l).map_err(|e| Error::io(l, e))?,
            ));
            let (d, _) = copy_hashing(r, l, &mut w, oci::Algorithm::Sha256)?;
            (d, out)
        } else {
            (crate::package::digest_file(l)?.0, l.clone())
        };
        layer_files.push((format!("{}.tar", d.hex()), path));
    }
    let entry = Entry {
        config: config_name.clone(),
        repo_tags: Some(repo_tags.to_vec()),
        layers: layer_files.iter().map(|(n, _)| n.clone()).collect(),
    };
    let manifest_json = serde_json::to_vec(&[entry]).map_err(|e| Error::Other(e.to_string()))?;
    let mut repositories = serde_json::Map::new();
    if let Some((_, last)) = layer_files.last().map(|(n, p)| (p, n)) {
        let top = last.trim_end_matches(".tar").to_owned();
        for rt in repo_tags {
            if let Some((repo, tag)) = rt.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                let e = repositories
                    .entry(repo.to_owned())
                    .or_insert_with(|| json!({}));
                if let Some(o) = e.as_object_mut() {
                    o.insert(tag.to_owned(), json!(top));
                }
            }
        }
    }

    let tmp = crate::layout::temp_beside(file)?;
    {
        let w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut b = tar::Builder::new(w);
        let add_file = |b: &mut tar::Builder<_>, name: &str, p: &Path| -> Result<()> {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            let len = f.metadata().map_err(|e| Error::io(p, e))?.len();
            let mut h = header(len);
            b.append_data(&mut h, name, f)
                .map_err(|e| Error::io(file, e))
        };
        add_file(&mut b, &config_name, config)?;
        let mut seen = std::collections::HashSet::new();
        for (name, p) in &layer_files {
            if seen.insert(name.clone()) {
                add_file(&mut b, name, p)?;
            }
        }
        let mut h = header(manifest_json.len() as u64);
        b.append_data(&mut h, "manifest.json", &manifest_json[..])
            .map_err(|e| Error::io(file, e))?;
        if !repositories.is_empty() {
            let r = serde_json::to_vec(&repositories).map_err(|e| Error::Other(e.to_string()))?;
            let mut h = header(r.len() as u64);
            b.append_data(&mut h, "repositories", &r[..])
                .map_err(|e| Error::io(file, e))?;
        }
        let mut w = b.into_inner().map_err(|e| Error::io(file, e))?;
        w.flush().map_err(|e| Error::io(file, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(file, e))?;
    tmp.persist(file).map_err(|e| Error::io(file, e.error))?;
    Ok(())
}

fn header(len: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(len);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize_name("a/b"), "a/b:latest");
        assert_eq!(
            normalize_name("127.0.0.1:5000/a"),
            "127.0.0.1:5000/a:latest"
        );
        assert!(same_name("docker.io/library/alpine:3", "alpine:3"));
        assert!(!same_name("alpine:3", "alpine:4"));
    }

    #[test]
    fn write_then_read() {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("cfg");
        std::fs::write(
            &cfg,
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0"]}}"#,
        )
        .unwrap();
        let layer = t.path().join("layer");
        {
            let mut b = tar::Builder::new(std::fs::File::create(&layer).unwrap());
            let mut h = header(2);
            b.append_data(&mut h, "hi", &b"hi"[..]).unwrap();
            b.finish().unwrap();
        }
        // The same layer gzip-compressed comes out decompressed.
        let gz = t.path().join("layer.gz");
        {
            let mut e = flate2::write::GzEncoder::new(
                std::fs::File::create(&gz).unwrap(),
                flate2::Compression::fast(),
            );
            e.write_all(&std::fs::read(&layer).unwrap()).unwrap();
            e.finish().unwrap();
        }
        let file = t.path().join("a.tar");
        let scratch = t.path().join("s");
        std::fs::create_dir(&scratch).unwrap();
        write(&file, &cfg, &[gz], &["x/y:1".into()], &scratch).unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let img = read(&file, &out, Some("x/y:1")).unwrap();
        let (ld, _) = crate::package::digest_file(&layer).unwrap();
        assert_eq!(img.files[1].0.digest, ld);
        assert_eq!(img.files[1].0.media_type, DOCKER_LAYER);
        assert_eq!(img.repo_tags, ["x/y:1"]);
        let out2 = t.path().join("out2");
        std::fs::create_dir(&out2).unwrap();
        assert_eq!(
            read(&file, &out2, Some("x/z:1")).unwrap_err().kind(),
            crate::Kind::NotFound
        );
    }
}
