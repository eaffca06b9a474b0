//! Deterministic tar layers from files and directories.
//!
//! Each path is stored under the name it was given (`dir/sub` stays
//! `dir/sub/...`; `./x` is `x`; `.` stores a directory's contents at the top;
//! an absolute path or one with `..` is stored under its last component).
//! Entries are sorted by name; modes (permission and sticky bits) and
//! symlinks are kept; modification times, owners and groups are zeroed, so
//! the same files always give the same bytes and digest. setuid and setgid
//! bits are dropped; hard links are stored as separate files; sockets, fifos
//! and devices are refused.

use crate::error::{Error, Result};
use oci::{Algorithm, Digest, Digester};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// The result of [`pack`].
#[derive(Clone, Debug)]
pub struct Packed {
    pub digest: Digest,
    pub size: u64,
    /// Number of entries (files, directories, symlinks).
    pub entries: usize,
}

enum Item {
    Dir(u32),
    File(PathBuf, u32, u64),
    Symlink(PathBuf),
}

/// The archive name for a path as given on the command line (empty: the
/// contents of a directory go at the top).
pub fn archive_name(given: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in given.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return given.file_name().map(PathBuf::from).unwrap_or_default();
            }
        }
    }
    out
}

fn mode_of(meta: &Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o1777
    }
    #[cfg(not(unix))]
    {
        if meta.permissions().readonly() {
            0o444
        } else {
            0o644
        }
    }
}

fn collect(
    fs_path: &Path,
    name: &Path,
    out: &mut BTreeMap<Vec<u8>, (PathBuf, Item)>,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(fs_path).map_err(|e| Error::io(fs_path, e))?;
    let ft = meta.file_type();
    let item = if ft.is_symlink() {
        Item::Symlink(std::fs::read_link(fs_path).map_err(|e| Error::io(fs_path, e))?)
    } else if ft.is_dir() {
        Item::Dir(mode_of(&meta))
    } else if ft.is_file() {
        Item::File(fs_path.to_owned(), mode_of(&meta), meta.len())
    } else {
        return Err(Error::Usage(format!(
            "{}: cannot pack a socket, fifo or device file",
            fs_path.display()
        )));
    };
    let is_dir = matches!(item, Item::Dir(_));
    if !name.as_os_str().is_empty() {
        let key = name_bytes(name);
        if out.contains_key(&key) {
            return Err(Error::Usage(format!(
                "{} is given twice (as {})",
                name.display(),
                fs_path.display()
            )));
        }
        out.insert(key, (name.to_owned(), item));
    }
    if is_dir {
        let rd = std::fs::read_dir(fs_path).map_err(|e| Error::io(fs_path, e))?;
        let mut children: Vec<OsString> = Vec::new();
        for e in rd {
            children.push(e.map_err(|e| Error::io(fs_path, e))?.file_name());
        }
        for c in children {
            collect(&fs_path.join(&c), &name.join(&c), out)?;
        }
    }
    Ok(())
}

fn name_bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().replace('\\', "/").into_bytes()
    }
}

/// A writer that digests and counts what passes through it.
struct HashWriter<W> {
    inner: W,
    digester: Digester,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Pack `inputs` (relative ones are taken from `base`, usually the current
/// directory) into one uncompressed tar written to `out`.
pub fn pack<W: Write>(base: &Path, inputs: &[PathBuf], out: W) -> Result<Packed> {
    if inputs.is_empty() {
        return Err(Error::Usage(
            "nothing to pack: give at least one path".into(),
        ));
    }
    let mut items = BTreeMap::new();
    for p in inputs {
        collect(&base.join(p), &archive_name(p), &mut items)?;
    }
    if items.is_empty() {
        return Err(Error::Usage(
            "nothing to pack: the directories given are empty".into(),
        ));
    }
    let entries = items.len();
    let writer = HashWriter {
        inner: out,
        digester: Algorithm::Sha256.digester(),
        count: 0,
    };
    let mut b = tar::Builder::new(writer);
    let werr = |e: std::io::Error| Error::Other(format!("writing the layer: {e}"));
    for (_, (name, item)) in items {
        match item {
            Item::Dir(mode) => {
                let mut h = header(tar::EntryType::Directory, mode, 0);
                let mut n = name.into_os_string();
                n.push("/");
                b.append_data(&mut h, PathBuf::from(n), std::io::empty())
                    .map_err(werr)?;
            }
            Item::File(path, mode, len) => {
                let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let mut h = header(tar::EntryType::Regular, mode, len);
                // A file that changes size while being packed would corrupt the layer.
                let mut r = std::io::Read::take(f, len);
                b.append_data(&mut h, &name, &mut r)
                    .map_err(|e| Error::Other(format!("packing {}: {e}", path.display())))?;
                if r.limit() != 0 {
                    return Err(Error::Other(format!(
                        "{} changed while being packed",
                        path.display()
                    )));
                }
            }
            Item::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, &name, &target).map_err(werr)?;
            }
        }
    }
    let mut w = b.into_inner().map_err(werr)?;
    w.flush().map_err(werr)?;
    Ok(Packed {
        digest: w.digester.finish(),
        size: w.count,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/a.txt"), b"alpha").unwrap();
        std::fs::write(root.join("d/sub/b.bin"), vec![7u8; 10000]).unwrap();
        std::fs::write(root.join("top"), b"top").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::symlink("a.txt", root.join("d/link")).unwrap();
            std::fs::set_permissions(root.join("top"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
    }

    fn names(tar_bytes: &[u8]) -> Vec<(String, u32, u64, u64)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn archive_names() {
        assert_eq!(archive_name(Path::new("a/b")), PathBuf::from("a/b"));
        assert_eq!(archive_name(Path::new("./a/./b/")), PathBuf::from("a/b"));
        assert_eq!(archive_name(Path::new(".")), PathBuf::new());
        assert_eq!(archive_name(Path::new("/x/y")), PathBuf::from("y"));
        assert_eq!(archive_name(Path::new("../x/y")), PathBuf::from("y"));
    }

    #[test]
    fn deterministic_and_sorted() {
        let t1 = tempfile::tempdir().unwrap();
        let t2 = tempfile::tempdir().unwrap();
        tree(t1.path());
        // Same content, created in another order, with other mtimes.
        std::fs::write(t2.path().join("top"), b"top").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        tree(t2.path());
        let mut out1 = Vec::new();
        let p1 = pack(t1.path(), &["d".into(), "top".into()], &mut out1).unwrap();
        let mut out2 = Vec::new();
        let p2 = pack(t2.path(), &["./top".into(), "d/".into()], &mut out2).unwrap();
        // An absolute path is stored under its last component.
        let mut out3 = Vec::new();
        pack(
            Path::new("/"),
            &[t1.path().join("d"), t1.path().join("top")],
            &mut out3,
        )
        .unwrap();
        assert_eq!(out1, out3);
        assert_eq!(p1.digest, p2.digest);
        assert_eq!(out1, out2);
        assert_eq!(p1.size, out1.len() as u64);
        assert_eq!(p1.digest, Digest::sha256_of(&out1));
        let n = names(&out1);
        let paths: Vec<&str> = n.iter().map(|x| x.0.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert!(paths.contains(&"d/sub/b.bin"));
        assert!(paths.contains(&"top"));
        assert!(n.iter().all(|x| x.2 == 0 && x.3 == 0));
        #[cfg(unix)]
        {
            assert!(n.iter().any(|x| x.0 == "top" && x.1 == 0o755));
            let mut a = tar::Archive::new(&out1[..]);
            let link = a
                .entries()
                .unwrap()
                .map(|e| e.unwrap())
                .find(|e| e.path().unwrap().ends_with("link"))
                .unwrap();
            assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
            assert_eq!(link.link_name().unwrap().unwrap(), Path::new("a.txt"));
        }
    }

    #[test]
    fn dot_packs_contents_and_long_names_work() {
        let t = tempfile::tempdir().unwrap();
        let long = "x".repeat(150);
        std::fs::create_dir_all(t.path().join(&long)).unwrap();
        std::fs::write(t.path().join(&long).join(&long), b"deep").unwrap();
        let mut out = Vec::new();
        pack(t.path(), &[".".into()], &mut out).unwrap();
        let n = names(&out);
        assert!(n.iter().any(|x| x.0 == format!("{long}/{long}")), "{n:?}");
    }

    #[test]
    fn refuses_duplicates_and_nothing() {
        let t = tempfile::tempdir().unwrap();
        tree(t.path());
        let mut out = Vec::new();
        assert!(pack(t.path(), &[], &mut out).is_err());
        let e = pack(t.path(), &["top".into(), "./top".into()], &mut out).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        assert!(pack(t.path(), &["missing".into()], &mut out).is_err());
    }
}
