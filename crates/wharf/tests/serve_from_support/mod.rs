//! Fixtures for tests/serve_from.rs: OCI layouts, oci-archives and
//! docker-save tarballs written at test time, including broken ones.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::Write as _;
use std::path::Path;

use crate::common::{sha256, to_bytes, unique_bytes};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An uncompressed layer: a tar holding one file with `content`.
pub fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An image: its uncompressed layers and a config whose diff_ids are theirs.
pub struct Image {
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
}

impl Image {
    pub fn new(label: &str, n_layers: usize) -> Image {
        let layers: Vec<Vec<u8>> = (0..n_layers)
            .map(|i| {
                layer_tar(
                    &format!("f{i}.bin"),
                    &unique_bytes(&format!("{label}-{i}")).repeat(40),
                )
            })
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let config = to_bytes(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": {"label": label}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }));
        Image { layers, config }
    }

    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256(l)).collect()
    }
}

fn put_blob(dir: &Path, data: &[u8]) -> Value {
    let d = sha256(data);
    let p = dir
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    json!({ "digest": d, "size": data.len() })
}

pub fn blob_file(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// An OCI image manifest over `img` (gzip layers) written into a layout
/// dir; returns (manifest digest, manifest bytes, layer blobs as stored).
pub fn layout_image(dir: &Path, img: &Image) -> (String, Vec<u8>, Vec<Vec<u8>>) {
    let mut c = put_blob(dir, &img.config);
    c["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let mut layers = Vec::new();
    let mut stored = Vec::new();
    for l in &img.layers {
        let gz = gzip(l);
        let mut d = put_blob(dir, &gz);
        d["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
        layers.push(d);
        stored.push(gz);
    }
    let m = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": c, "layers": layers,
    }));
    put_blob(dir, &m);
    (sha256(&m), m, stored)
}

/// An OCI layout dir with index.json entries `(ref name, manifest digest,
/// media type, size)`.
pub fn write_index(dir: &Path, entries: &[(Option<&str>, &str, &str, usize)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(name, d, mt, size)| {
            let mut v = json!({ "mediaType": mt, "digest": d, "size": size });
            if let Some(n) = name {
                v["annotations"] = json!({ REF_NAME: n });
            }
            v
        })
        .collect();
    std::fs::write(
        dir.join("index.json"),
        to_bytes(&json!({ "schemaVersion": 2, "manifests": manifests })),
    )
    .unwrap();
}

/// A one-image layout tagged `name`; returns (manifest digest, bytes, stored layers).
pub fn layout(dir: &Path, name: &str, img: &Image) -> (String, Vec<u8>, Vec<Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    let (d, m, stored) = layout_image(dir, img);
    write_index(
        dir,
        &[(
            Some(name),
            &d,
            "application/vnd.oci.image.manifest.v1+json",
            m.len(),
        )],
    );
    (d, m, stored)
}

/// Tar up a directory (an oci-archive of a layout).
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap().flush().unwrap();
}

/// A tar member: name, data, or a symbolic link.
pub enum Member {
    File(String, Vec<u8>),
    Symlink(String, String),
}

fn raw_name(h: &mut tar::Header, name: &str) {
    // Written raw, so that hostile names (`../x`) can be made.
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

pub fn write_tar(out: &Path, members: &[Member]) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(0);
        match m {
            Member::File(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                raw_name(&mut h, name);
                h.set_cksum();
                b.append(&h, &data[..]).unwrap();
            }
            Member::Symlink(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                raw_name(&mut h, name);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap().flush().unwrap();
}

/// How a docker-save tarball lays out its image.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `<id>/layer.tar` members (docker before 25), uncompressed.
    Legacy,
    /// `blobs/sha256/<hex>` members (docker 25+).
    Blobs,
    /// Legacy names, gzip-compressed layer files.
    Gzip,
}

/// The members of a docker-save tarball of `images` (each with its RepoTags).
pub fn docker_members(images: &[(&Image, Vec<&str>)], style: Style) -> Vec<Member> {
    let mut members = Vec::new();
    let mut entries = Vec::new();
    for (img, tags) in images {
        let cfg_hex = img.config_digest().trim_start_matches("sha256:").to_owned();
        let config_name = match style {
            Style::Blobs => format!("blobs/sha256/{cfg_hex}"),
            _ => format!("{cfg_hex}.json"),
        };
        members.push(Member::File(config_name.clone(), img.config.clone()));
        let mut names = Vec::new();
        for (i, l) in img.layers.iter().enumerate() {
            let (name, data) = match style {
                Style::Legacy => (format!("{cfg_hex}{i:02}/layer.tar"), l.clone()),
                Style::Gzip => (format!("{cfg_hex}{i:02}/layer.tar"), gzip(l)),
                Style::Blobs => (
                    format!("blobs/sha256/{}", sha256(l).trim_start_matches("sha256:")),
                    l.clone(),
                ),
            };
            members.push(Member::File(name.clone(), data));
            names.push(name);
        }
        entries.push(json!({ "Config": config_name, "RepoTags": tags, "Layers": names }));
    }
    members.push(Member::File(
        "manifest.json".into(),
        to_bytes(&Value::Array(entries)),
    ));
    members
}

pub fn docker_save(out: &Path, images: &[(&Image, Vec<&str>)], style: Style) {
    write_tar(out, &docker_members(images, style));
}
