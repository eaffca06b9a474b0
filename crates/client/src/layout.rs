//! OCI image layouts (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) and
//! their tarballs (`oci-archive`), read and written.
//!
//! Tags are the `org.opencontainers.image.ref.name` annotation of the
//! `index.json` entries, as skopeo and umoci use them. Blobs are written to a
//! temporary file in the layout, verified against their digest while they
//! stream, and renamed into place; `index.json` is replaced atomically.

use crate::error::{Error, Result};
use oci::manifest::Descriptor;
use oci::{Digest, media};
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::path::{Component, Path, PathBuf};

/// The annotation that names an `index.json` entry (its tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The `oci-layout` marker file.
pub const LAYOUT_FILE: &str = "oci-layout";
/// The layout's top-level index.
pub const INDEX_FILE: &str = "index.json";

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// An existing layout (it must have `oci-layout` and `index.json`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Layout> {
        let root = root.into();
        for f in [LAYOUT_FILE, INDEX_FILE] {
            if !root.join(f).is_file() {
                return Err(Error::NotFound(format!(
                    "{} is not an OCI image layout (no {f})",
                    root.display()
                )));
            }
        }
        Ok(Layout { root })
    }

    /// Open a layout, creating the directory and its files if missing.
    pub fn create(root: impl Into<PathBuf>) -> Result<Layout> {
        let root = root.into();
        let blobs = root.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        let marker = root.join(LAYOUT_FILE);
        if !marker.exists() {
            std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(|e| Error::io(&marker, e))?;
        }
        let l = Layout { root };
        if !l.root.join(INDEX_FILE).exists() {
            l.write_index(&json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_INDEX,
                "manifests": [],
            }))?;
        }
        Ok(l)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Is the blob there, with this size?
    pub fn has_blob(&self, d: &Digest, size: u64) -> bool {
        std::fs::metadata(self.blob_path(d)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    fn read_index(&self) -> Result<Value> {
        let p = self.root.join(INDEX_FILE);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("{}: not JSON: {e}", p.display())))
    }

    fn write_index(&self, v: &Value) -> Result<()> {
        let p = self.root.join(INDEX_FILE);
        let bytes =
            serde_json::to_vec(v).map_err(|e| Error::Other(format!("{}: {e}", p.display())))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.root).map_err(|e| Error::io(&self.root, e))?;
        tmp.write_all(&bytes)
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&p).map_err(|e| Error::io(&p, e.error))?;
        Ok(())
    }

    /// The entries of `index.json`.
    pub fn entries(&self) -> Result<Vec<Descriptor>> {
        let v = self.read_index()?;
        let m = v.get("manifests").cloned().unwrap_or(Value::Array(vec![]));
        serde_json::from_value(m).map_err(|e| {
            Error::Other(format!(
                "{}: bad index.json manifests: {e}",
                self.root.display()
            ))
        })
    }

    /// The entry tagged `tag`; without a tag, the only entry.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor> {
        let entries = self.entries()?;
        match tag {
            Some(t) => entries
                .into_iter()
                .find(|d| ref_name(d) == Some(t))
                .ok_or_else(|| {
                    Error::NotFound(format!("{}: no image tagged {t:?}", self.root.display()))
                }),
            None => {
                let n = entries.len();
                let mut it = entries.into_iter();
                match (it.next(), n) {
                    (Some(d), 1) => Ok(d),
                    (None, _) => Err(Error::NotFound(format!(
                        "{}: the layout holds no image",
                        self.root.display()
                    ))),
                    _ => Err(Error::Usage(format!(
                        "{} holds {n} images: name one with oci:DIR:TAG",
                        self.root.display()
                    ))),
                }
            }
        }
    }

    /// A small blob (a manifest) read into memory and verified.
    pub fn read_blob_bytes(&self, d: &Digest, max: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let f = std::fs::File::open(&p).map_err(|e| not_found_io(&p, e))?;
        let mut bytes = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&p, e))?;
        if bytes.len() as u64 > max {
            return Err(Error::Other(format!(
                "{}: larger than {max} bytes",
                p.display()
            )));
        }
        let got = Digest::of(d.algorithm(), &bytes);
        if got != *d {
            return Err(Error::DigestMismatch {
                what: p.display().to_string(),
                expected: d.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Write a blob held in memory.
    pub fn write_blob_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        let got = Digest::of(d.algorithm(), bytes);
        if got != *d {
            return Err(Error::DigestMismatch {
                what: format!("blob for {}", self.root.display()),
                expected: d.to_string(),
                actual: got.to_string(),
            });
        }
        if self.has_blob(d, bytes.len() as u64) {
            return Ok(());
        }
        let mut tmp = self.blob_temp(d)?;
        tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
        self.persist(d, tmp)
    }

    /// Copy a blob in from a file, verifying digest and size as it streams.
    pub fn copy_blob_in(&self, d: &Digest, size: u64, src: &Path) -> Result<()> {
        if self.has_blob(d, size) {
            return Ok(());
        }
        let mut tmp = self.blob_temp(d)?;
        let (got, n) = {
            let f = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
            copy_hashing(f, src, tmp.as_file_mut(), d.algorithm())?
        };
        if got != *d || n != size {
            return Err(Error::DigestMismatch {
                what: src.display().to_string(),
                expected: format!("{d} ({size} bytes)"),
                actual: format!("{got} ({n} bytes)"),
            });
        }
        self.persist(d, tmp)
    }

    fn blob_temp(&self, d: &Digest) -> Result<tempfile::NamedTempFile> {
        let dir = self.root.join("blobs").join(d.algorithm().as_str());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))
    }

    fn persist(&self, d: &Digest, tmp: tempfile::NamedTempFile) -> Result<()> {
        let dest = self.blob_path(d);
        let f = tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
        // Blobs are read-only content: 0644 like skopeo writes them.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(&dest, e))?;
        Ok(())
    }

    /// Add `desc` to `index.json`, named `tag` if given. An entry with the
    /// same tag (or, untagged, the same digest and no tag) is replaced.
    pub fn add_to_index(&self, desc: &Descriptor, tag: Option<&str>) -> Result<()> {
        let mut v = self.read_index()?;
        let mut entries: Vec<Descriptor> = match v.get("manifests") {
            Some(m) => serde_json::from_value(m.clone()).map_err(|e| {
                Error::Other(format!("{}: bad index.json: {e}", self.root.display()))
            })?,
            None => vec![],
        };
        entries.retain(|e| match tag {
            Some(t) => ref_name(e) != Some(t),
            None => !(ref_name(e).is_none() && e.digest == desc.digest),
        });
        let mut d = desc.clone();
        if let Some(t) = tag {
            d.annotations
                .get_or_insert_with(Default::default)
                .insert(REF_NAME.to_owned(), t.to_owned());
        }
        entries.push(d);
        let obj = v.as_object_mut().ok_or_else(|| {
            Error::Other(format!(
                "{}: index.json is not an object",
                self.root.display()
            ))
        })?;
        obj.insert("schemaVersion".into(), json!(2));
        obj.entry("mediaType").or_insert(json!(media::OCI_INDEX));
        obj.insert(
            "manifests".into(),
            serde_json::to_value(&entries).map_err(|e| Error::Other(e.to_string()))?,
        );
        self.write_index(&v)
    }
}

/// The tag of an `index.json` entry.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
}

fn not_found_io(p: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound(format!("{}: blob missing", p.display()))
    } else {
        Error::io(p, e)
    }
}

/// Stream `r` into `w`, returning the digest and length of what went through.
pub fn copy_hashing(
    mut r: impl std::io::Read,
    rpath: &Path,
    w: &mut std::fs::File,
    alg: oci::Algorithm,
) -> Result<(Digest, u64)> {
    let mut h = alg.digester();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|e| Error::io(rpath, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        w.write_all(&buf[..k]).map_err(|e| Error::io(rpath, e))?;
        n += k as u64;
    }
    w.sync_all().map_err(|e| Error::io(rpath, e))?;
    Ok((h.finish(), n))
}

/// Unpack a tarball (an `oci-archive` or `docker-archive`) into `dir`.
/// Only regular files, directories and symbolic links that stay inside
/// `dir` are accepted.
pub fn unpack_archive(file: &Path, dir: &Path) -> Result<()> {
    let f = std::fs::File::open(file).map_err(|e| not_found_io(file, e))?;
    let mut a = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, f));
    let entries = a
        .entries()
        .map_err(|e| Error::Other(format!("{}: not a tar archive: {e}", file.display())))?;
    let bad = |why: String| Error::Usage(format!("{}: {why}", file.display()));
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a readable tar archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .into_owned();
        let rel = safe_relative(&path).ok_or_else(|| bad(format!("unsafe entry {path:?}")))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let t = entry.header().entry_type();
        if t.is_symlink() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("symbolic link {path:?} without target")))?;
            let parent = rel.parent().unwrap_or(Path::new(""));
            if target.is_absolute() || !stays_inside(&parent.join(&target)) {
                return Err(bad(format!(
                    "symbolic link {path:?} points outside the archive"
                )));
            }
        } else if !(t.is_file() || t.is_dir() || t.is_pax_global_extensions()) {
            continue;
        }
        if !entry
            .unpack_in(dir)
            .map_err(|e| bad(format!("cannot unpack {path:?}: {e}")))?
        {
            return Err(bad(format!("unsafe entry {path:?}")));
        }
    }
    Ok(())
}

/// `p` without `.` components, if it is relative and has no `..`.
pub fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn stays_inside(p: &Path) -> bool {
    let mut depth = 0i64;
    for c in p.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// A temporary file in the directory of `file`, to be renamed over it when
/// complete (so a reader never sees half an archive). Created with mode
/// 0666 less the umask, like any file the user makes (not tempfile's 0600).
pub(crate) fn temp_beside(file: &Path) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o666))
        .prefix(".wharf-archive-")
        .tempfile_in(parent)
        .map_err(|e| Error::io(parent, e))
}

/// Tar the layout in `dir` into `file` (written to a temporary file next to
/// it and renamed). Entries are sorted, owned by root, with zero times.
pub fn pack_archive(dir: &Path, file: &Path) -> Result<()> {
    let tmp = temp_beside(file)?;
    {
        let w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut b = tar::Builder::new(w);
        let mut files = Vec::new();
        walk(dir, Path::new(""), &mut files)?;
        for (rel, is_dir) in files {
            let p = dir.join(&rel);
            let mut h = tar::Header::new_ustar();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            if is_dir {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, &rel, std::io::empty())
                    .map_err(|e| Error::io(file, e))?;
            } else {
                let f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
                let len = f.metadata().map_err(|e| Error::io(&p, e))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(len);
                b.append_data(&mut h, &rel, f)
                    .map_err(|e| Error::io(file, e))?;
            }
        }
        let mut w = b.into_inner().map_err(|e| Error::io(file, e))?;
        w.flush().map_err(|e| Error::io(file, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(file, e))?;
    tmp.persist(file).map_err(|e| Error::io(file, e.error))?;
    Ok(())
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, bool)>) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(&dir, e))?;
    names.sort();
    for n in names {
        if n.to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        let r = rel.join(&n);
        let ft = std::fs::symlink_metadata(root.join(&r))
            .map_err(|e| Error::io(root.join(&r), e))?
            .file_type();
        if ft.is_dir() {
            out.push((r.clone(), true));
            walk(root, &r, out)?;
        } else if ft.is_file() {
            out.push((r, false));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_tags_replace_and_resolve() {
        let t = tempfile::tempdir().unwrap();
        let l = Layout::create(t.path().join("l")).unwrap();
        let body = br#"{"schemaVersion":2}"#;
        let d = Digest::sha256_of(body);
        l.write_blob_bytes(&d, body).unwrap();
        let desc = Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: d.clone(),
            size: body.len() as u64,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: None,
        };
        l.add_to_index(&desc, Some("a")).unwrap();
        l.add_to_index(&desc, Some("b")).unwrap();
        l.add_to_index(&desc, Some("a")).unwrap();
        assert_eq!(l.entries().unwrap().len(), 2);
        assert_eq!(l.resolve(Some("b")).unwrap().digest, d);
        assert!(l.resolve(None).is_err());
        assert_eq!(
            l.resolve(Some("zz")).unwrap_err().kind(),
            crate::Kind::NotFound
        );
        assert_eq!(l.read_blob_bytes(&d, 100).unwrap(), body);
        assert!(l.write_blob_bytes(&Digest::sha256_of(b"x"), body).is_err());
    }

    #[test]
    fn archive_round_trip_and_hostile_links() {
        let t = tempfile::tempdir().unwrap();
        let l = Layout::create(t.path().join("l")).unwrap();
        l.write_blob_bytes(&Digest::sha256_of(b"hi"), b"hi")
            .unwrap();
        let a = t.path().join("a.tar");
        pack_archive(l.root(), &a).unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        unpack_archive(&a, &out).unwrap();
        Layout::open(&out).unwrap();
        assert!(
            Layout::open(&out)
                .unwrap()
                .has_blob(&Digest::sha256_of(b"hi"), 2)
        );

        let evil = t.path().join("evil.tar");
        {
            let mut b = tar::Builder::new(std::fs::File::create(&evil).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "x/layer.tar", "../../etc/passwd")
                .unwrap();
            b.finish().unwrap();
        }
        let out2 = t.path().join("out2");
        std::fs::create_dir(&out2).unwrap();
        assert!(unpack_archive(&evil, &out2).is_err());
    }
}
