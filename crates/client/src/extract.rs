//! Safe extraction of untrusted tar layers.
//!
//! A layer is unpacked into a fresh staging directory next to the target
//! ([`Staging`]), and moved into place only when every entry was accepted, so
//! a refused or broken layer leaves nothing behind. Refused, with an error
//! naming the entry:
//!
//! - absolute paths and paths with `..`;
//! - symbolic links whose target is absolute or resolves outside the
//!   target directory (checked on the final tree, following the other links,
//!   so chains such as `a -> .` and `b -> a/..` are caught);
//! - writing through a symbolic link: an entry whose parent path passes
//!   through a link (a link planted earlier and then written through);
//! - hard links whose target is outside, through a link, or not a regular
//!   file already extracted;
//! - character and block devices, fifos, sparse and unknown entry types;
//! - setuid and setgid bits.
//!
//! gzip-compressed layers are recognised by their magic bytes.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Why extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("refusing to extract {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("broken archive: {0}")]
    Archive(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<ExtractError> for crate::Error {
    fn from(e: ExtractError) -> crate::Error {
        match e {
            ExtractError::Conflict(m) => crate::Error::Usage(m),
            e => crate::Error::Other(e.to_string()),
        }
    }
}

type Result<T, E = ExtractError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_owned(),
        source,
    }
}

fn refused(entry: &Path, reason: impl Into<String>) -> ExtractError {
    ExtractError::Refused {
        entry: entry.to_string_lossy().into_owned(),
        reason: reason.into(),
    }
}

/// What [`unpack`] wrote.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub hardlinks: usize,
    pub bytes: u64,
}

/// Wrap a reader, decompressing gzip if the data starts with its magic.
pub fn decompressed<'a, R: Read + 'a>(r: R) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 << 10, r);
    let head = br
        .fill_buf()
        .map_err(|e| ExtractError::Archive(format!("reading the layer: {e}")))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(br)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(ExtractError::Archive(
            "zstd-compressed layers are not supported".into(),
        ))
    } else {
        Ok(Box::new(br))
    }
}

/// A relative path of normal components, or why not.
pub(crate) fn clean(raw: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("the path is absolute"),
        }
    }
    Ok(out)
}

/// Unpack the tar stream `r` (gzip detected) into `root`, an empty staging
/// directory the caller owns.
pub fn unpack<R: Read>(r: R, root: &Path) -> Result<Stats> {
    let r = decompressed(r)?;
    let mut archive = tar::Archive::new(r);
    let mut stats = Stats::default();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    let mut links: Vec<PathBuf> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| ExtractError::Archive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ExtractError::Archive(e.to_string()))?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|e| ExtractError::Archive(format!("bad entry name: {e}")))?
            .into_owned();
        let rel = clean(&raw).map_err(|why| refused(&raw, why))?;
        let mode = entry
            .header()
            .mode()
            .map_err(|e| refused(&raw, format!("bad mode: {e}")))?;
        if mode & 0o6000 != 0 {
            return Err(refused(
                &raw,
                format!("setuid/setgid bits are set (mode {mode:o})"),
            ));
        }
        match kind {
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refused(&raw, "device files are not extracted"));
            }
            tar::EntryType::Fifo => return Err(refused(&raw, "fifos are not extracted")),
            tar::EntryType::Directory
            | tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Symlink
            | tar::EntryType::Link => {}
            other => {
                return Err(refused(
                    &raw,
                    format!("unsupported entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        if rel.as_os_str().is_empty() {
            if kind == tar::EntryType::Directory {
                continue; // "./": the target itself
            }
            return Err(refused(&raw, "the entry has no name"));
        }
        let dest = root.join(&rel);
        prepare_parents(root, &rel, &raw)?;
        let existing = fs::symlink_metadata(&dest).ok();
        let existing_dir = existing.as_ref().is_some_and(|m| m.file_type().is_dir());
        if kind != tar::EntryType::Directory {
            if existing_dir {
                return Err(refused(
                    &raw,
                    "a directory of that name was already extracted",
                ));
            }
            if existing.is_some() {
                fs::remove_file(&dest).map_err(io_err(&dest))?;
            }
        }
        match kind {
            tar::EntryType::Directory => {
                if !existing_dir {
                    if existing.is_some() {
                        fs::remove_file(&dest).map_err(io_err(&dest))?;
                    }
                    fs::create_dir(&dest).map_err(io_err(&dest))?;
                    stats.dirs += 1;
                }
                dirs.push((rel, mode & 0o1777));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(io_err(&dest))?;
                let n = io::copy(&mut entry, &mut f).map_err(|e| {
                    ExtractError::Archive(format!("reading {}: {e}", raw.display()))
                })?;
                drop(f);
                set_mode(&dest, mode & 0o777)?;
                stats.files += 1;
                stats.bytes += n;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| ExtractError::Archive(format!("bad link name: {e}")))?
                    .ok_or_else(|| refused(&raw, "symbolic link without a target"))?
                    .into_owned();
                check_symlink_lexically(&rel, &target).map_err(|why| refused(&raw, why))?;
                symlink(&target, &dest)?;
                links.push(rel);
                stats.symlinks += 1;
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|e| ExtractError::Archive(format!("bad link name: {e}")))?
                    .ok_or_else(|| refused(&raw, "hard link without a target"))?
                    .into_owned();
                let target = clean(&target_raw).map_err(|why| {
                    refused(&raw, format!("hard link target {target_raw:?}: {why}"))
                })?;
                if target.as_os_str().is_empty() {
                    return Err(refused(&raw, "hard link to the target directory"));
                }
                check_no_links_in_parents(root, &target).map_err(|why| {
                    refused(&raw, format!("hard link target {target_raw:?}: {why}"))
                })?;
                let src = root.join(&target);
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.file_type().is_file() => {}
                    Ok(_) => {
                        return Err(refused(
                            &raw,
                            format!("hard link target {target_raw:?} is not a regular file"),
                        ));
                    }
                    Err(_) => {
                        return Err(refused(
                            &raw,
                            format!(
                                "hard link target {target_raw:?} is not in the archive before it"
                            ),
                        ));
                    }
                }
                fs::hard_link(&src, &dest).map_err(io_err(&dest))?;
                stats.hardlinks += 1;
            }
            other => {
                return Err(refused(
                    &raw,
                    format!("unsupported entry type {:?}", other.as_byte() as char),
                ));
            }
        }
    }
    // Links may point through other links: check the final tree.
    for l in &links {
        let path = root.join(l);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            resolve_inside(root, l).map_err(|why| refused(l, why))?;
        }
    }
    // Directory modes last (a read-only directory would block its children), deepest first.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, mode) in dirs {
        set_mode(&root.join(rel), mode)?;
    }
    Ok(stats)
}

/// Create missing parents of `rel` as plain directories; refuse when one is
/// a symbolic link or not a directory.
pub(crate) fn prepare_parents(root: &Path, rel: &Path, raw: &Path) -> Result<()> {
    let mut cur = root.to_owned();
    let parent = match rel.parent() {
        Some(p) => p,
        None => return Ok(()),
    };
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    raw,
                    format!(
                        "it would be written through the symbolic link {:?}",
                        cur.strip_prefix(root).unwrap_or(&cur)
                    ),
                ));
            }
            Ok(_) => {
                return Err(refused(
                    raw,
                    format!(
                        "{:?} is not a directory",
                        cur.strip_prefix(root).unwrap_or(&cur)
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io_err(&cur))?;
            }
            Err(e) => return Err(io_err(&cur)(e)),
        }
    }
    Ok(())
}

fn check_no_links_in_parents(root: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut cur = root.to_owned();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            if let Ok(m) = fs::symlink_metadata(&cur)
                && !m.file_type().is_dir()
            {
                return Err(format!(
                    "{:?} is a symbolic link or not a directory",
                    cur.strip_prefix(root).unwrap_or(&cur)
                ));
            }
        }
    }
    Ok(())
}

/// A link at `rel` pointing to `target` must stay inside the root, judged
/// on its own (links through other links are checked at the end).
fn check_symlink_lexically(rel: &Path, target: &Path) -> std::result::Result<(), String> {
    if target.as_os_str().is_empty() {
        return Err("symbolic link with an empty target".into());
    }
    let mut depth: Vec<OsString> = rel
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str().to_owned()).collect())
        .unwrap_or_default();
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("symbolic link to the absolute path {target:?}"));
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return Err(format!(
                        "symbolic link to {target:?} points outside the target directory"
                    ));
                }
            }
            Component::Normal(n) => depth.push(n.to_owned()),
        }
    }
    Ok(())
}

/// Resolve the link at `rel` in the extracted tree, following links, and
/// check it never leaves the root.
fn resolve_inside(root: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut stack: Vec<OsString> = rel
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str().to_owned()).collect())
        .unwrap_or_default();
    let first = fs::read_link(root.join(rel)).map_err(|e| e.to_string())?;
    let mut queue: VecDeque<OsString> = VecDeque::new();
    let mut expansions = 0;
    push_front_components(&mut queue, &first)?;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            if stack.pop().is_none() {
                return Err(format!(
                    "symbolic link to {first:?} resolves outside the target directory"
                ));
            }
            continue;
        }
        stack.push(c);
        let here: PathBuf = root.join(stack.iter().collect::<PathBuf>());
        if fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink()) {
            expansions += 1;
            if expansions > 64 {
                return Err("symbolic link loop".into());
            }
            let t = fs::read_link(&here).map_err(|e| e.to_string())?;
            stack.pop();
            push_front_components(&mut queue, &t)?;
        }
    }
    Ok(())
}

fn push_front_components(
    queue: &mut VecDeque<OsString>,
    target: &Path,
) -> std::result::Result<(), String> {
    let mut comps = Vec::new();
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("symbolic link to the absolute path {target:?}"));
            }
            Component::CurDir => {}
            Component::ParentDir => comps.push(OsString::from("..")),
            Component::Normal(n) => comps.push(n.to_owned()),
        }
    }
    for c in comps.into_iter().rev() {
        queue.push_front(c);
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, dest: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, dest).map_err(io_err(dest))
}

#[cfg(not(unix))]
fn symlink(_target: &Path, dest: &Path) -> Result<()> {
    Err(refused(
        dest,
        "symbolic links are not supported on this system",
    ))
}

/// A staging directory next to a target; [`Staging::commit`] moves its
/// contents into place, dropping it removes everything.
pub struct Staging {
    target: PathBuf,
    tmp: Option<tempfile::TempDir>,
    target_existed: bool,
}

impl Staging {
    /// Stage for `target`: inside it if it is an existing directory (so the
    /// final renames stay on one filesystem), else beside it.
    pub fn new(target: &Path) -> Result<Staging> {
        let target_existed = match fs::metadata(target) {
            Ok(m) if m.is_dir() => true,
            Ok(_) => {
                return Err(ExtractError::Conflict(format!(
                    "{} exists and is not a directory",
                    target.display()
                )));
            }
            Err(_) => false,
        };
        let tmp = if target_existed {
            tempfile::Builder::new()
                .prefix(".wharf-staging-")
                .tempdir_in(target)
                .map_err(io_err(target))?
        } else {
            let parent = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            fs::create_dir_all(parent).map_err(io_err(parent))?;
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tempfile::Builder::new()
                .prefix(&format!(".{name}.wharf-staging-"))
                .tempdir_in(parent)
                .map_err(io_err(parent))?
        };
        Ok(Staging {
            target: target.to_owned(),
            tmp: Some(tmp),
            target_existed,
        })
    }

    pub fn root(&self) -> &Path {
        match &self.tmp {
            Some(t) => t.path(),
            None => &self.target,
        }
    }

    /// Move everything into place. Into an existing directory, top-level
    /// names that exist already are an error (checked before anything
    /// moves) unless `replace`, which removes them first.
    pub fn commit(mut self, replace: bool) -> Result<Vec<PathBuf>> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for e in fs::read_dir(tmp.path()).map_err(io_err(tmp.path()))? {
            names.push(e.map_err(io_err(tmp.path()))?.file_name());
        }
        names.sort();
        if !self.target_existed {
            let path = tmp.keep();
            set_mode(&path, 0o755)?;
            if let Err(e) = fs::rename(&path, &self.target) {
                let _ = fs::remove_dir_all(&path);
                return Err(io_err(&self.target)(e));
            }
            return Ok(names.into_iter().map(PathBuf::from).collect());
        }
        let conflicts: Vec<String> = names
            .iter()
            .filter(|n| fs::symlink_metadata(self.target.join(n)).is_ok())
            .map(|n| self.target.join(n).display().to_string())
            .collect();
        if !conflicts.is_empty() && !replace {
            return Err(ExtractError::Conflict(format!(
                "{} already exist{}; nothing was written (use --force to replace)",
                conflicts.join(", "),
                if conflicts.len() == 1 { "s" } else { "" }
            )));
        }
        for n in &names {
            let dest = self.target.join(n);
            match fs::symlink_metadata(&dest) {
                Ok(m) if m.file_type().is_dir() => {
                    fs::remove_dir_all(&dest).map_err(io_err(&dest))?
                }
                Ok(_) => fs::remove_file(&dest).map_err(io_err(&dest))?,
                Err(_) => {}
            }
            fs::rename(tmp.path().join(n), &dest).map_err(io_err(&dest))?;
        }
        drop(tmp);
        Ok(names.into_iter().map(PathBuf::from).collect())
    }
}

/// Unpack a layer into `target` through a [`Staging`] directory.
pub fn unpack_to<R: Read>(r: R, target: &Path, replace: bool) -> Result<Stats> {
    let staging = Staging::new(target)?;
    let stats = unpack(r, staging.root())?;
    staging.commit(replace)?;
    Ok(stats)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tar::{EntryType, Header};

    /// Build tarballs with any names, bypassing the tar crate's checks.
    struct Evil {
        b: tar::Builder<Vec<u8>>,
    }

    impl Evil {
        fn new() -> Evil {
            Evil {
                b: tar::Builder::new(Vec::new()),
            }
        }
        fn raw(
            &mut self,
            kind: EntryType,
            name: &str,
            link: &str,
            mode: u32,
            data: &[u8],
        ) -> &mut Self {
            let mut h = Header::new_old();
            {
                let o = h.as_old_mut();
                o.name[..name.len()].copy_from_slice(name.as_bytes());
                o.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_mtime(0);
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.raw(EntryType::Regular, name, "", 0o644, data)
        }
        fn dir(&mut self, name: &str) -> &mut Self {
            self.raw(EntryType::Directory, name, "", 0o755, b"")
        }
        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(EntryType::Symlink, name, target, 0o777, b"")
        }
        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(EntryType::Link, name, target, 0o644, b"")
        }
        fn bytes(&mut self) -> Vec<u8> {
            let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
            b.into_inner().unwrap()
        }
    }

    /// Extract into a fresh `out` dir under a temp dir; return the error.
    fn refuse(tarball: Vec<u8>, needle: &str) {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("out");
        let e = unpack_to(&tarball[..], &target, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(needle),
            "error {msg:?} should mention {needle:?}"
        );
        assert!(!target.exists(), "nothing may be left at the target");
        let left: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
        assert!(left.is_empty(), "staging directory left behind: {left:?}");
    }

    #[test]
    fn good_archive_round_trips() {
        let tar = Evil::new()
            .dir("d/")
            .file("d/a.txt", b"alpha")
            .raw(EntryType::Regular, "d/run.sh", "", 0o750, b"#!/bin/sh\n")
            .symlink("d/link", "a.txt")
            .symlink("up", "d/../d/a.txt")
            .hardlink("d/hard", "d/a.txt")
            .raw(EntryType::Directory, "ro/", "", 0o555, b"")
            .file("ro/inside", b"x")
            .file("./dot/slash", b"y")
            .bytes();
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("new/out");
        let s = unpack_to(&tar[..], &out, false).unwrap();
        assert_eq!((s.files, s.symlinks, s.hardlinks), (4, 2, 1));
        assert_eq!(fs::read(out.join("d/a.txt")).unwrap(), b"alpha");
        assert_eq!(fs::read(out.join("d/link")).unwrap(), b"alpha");
        assert_eq!(fs::read(out.join("up")).unwrap(), b"alpha");
        assert_eq!(fs::read(out.join("d/hard")).unwrap(), b"alpha");
        assert_eq!(fs::read(out.join("dot/slash")).unwrap(), b"y");
        let mode = |p: &str| {
            fs::symlink_metadata(out.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("d/run.sh"), 0o750);
        assert_eq!(mode("ro"), 0o555);
        assert_eq!(
            fs::read_link(out.join("d/link")).unwrap(),
            Path::new("a.txt")
        );
        let _ = fs::set_permissions(out.join("ro"), fs::Permissions::from_mode(0o755));
    }

    #[test]
    fn gzip_is_detected() {
        let tar = Evil::new().file("g", b"zipped").bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let t = tempfile::tempdir().unwrap();
        unpack_to(&gz[..], &t.path().join("o"), false).unwrap();
        assert_eq!(fs::read(t.path().join("o/g")).unwrap(), b"zipped");
    }

    #[test]
    fn refuses_parent_dir() {
        refuse(
            Evil::new().file("ok", b"1").file("../evil", b"x").bytes(),
            "\"../evil\"",
        );
        refuse(Evil::new().file("a/../../evil", b"x").bytes(), "`..`");
        refuse(Evil::new().dir("..").bytes(), "`..`");
    }

    #[test]
    fn refuses_absolute_paths() {
        refuse(
            Evil::new().file("/tmp/wharf-evil", b"x").bytes(),
            "absolute",
        );
        refuse(Evil::new().dir("/").bytes(), "absolute");
    }

    #[test]
    fn refuses_symlink_escapes() {
        refuse(Evil::new().symlink("etc", "/etc").bytes(), "absolute path");
        refuse(Evil::new().symlink("up", "..").bytes(), "outside");
        refuse(Evil::new().symlink("a/b/up", "../../..").bytes(), "outside");
        refuse(Evil::new().symlink("x", "d/../../y").bytes(), "outside");
        // Each link is fine alone; together `b` resolves to the parent of the root.
        refuse(
            Evil::new().symlink("a", ".").symlink("b", "a/..").bytes(),
            "resolves outside",
        );
        refuse(
            Evil::new()
                .dir("d/e/")
                .symlink("d/e/s", "..")
                .symlink("d/t", "e/s/../..")
                .symlink("z", "d/t/..")
                .bytes(),
            "outside",
        );
        refuse(
            Evil::new().symlink("l1", "l2").symlink("l2", "l1").bytes(),
            "loop",
        );
    }

    #[test]
    fn refuses_writing_through_symlinks() {
        // A harmless-looking link inside, then a write through it.
        refuse(
            Evil::new()
                .dir("real/")
                .symlink("l", "real")
                .file("l/x", b"x")
                .bytes(),
            "through the symbolic link",
        );
        // The classic: link to outside, then write through it (the link alone is refused first).
        refuse(
            Evil::new()
                .symlink("l", "/tmp")
                .file("l/evil", b"x")
                .bytes(),
            "absolute path",
        );
        // A directory entry through a link.
        refuse(
            Evil::new()
                .dir("real/")
                .symlink("l", "real")
                .dir("l/sub/")
                .bytes(),
            "through the symbolic link",
        );
    }

    #[test]
    fn replacing_a_symlink_with_a_file_does_not_follow_it() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let tar = Evil::new()
            .file("victim", b"inside")
            .symlink("s", "victim")
            .file("s", b"replaced")
            .bytes();
        let out = t.path().join("out");
        unpack_to(&tar[..], &out, false).unwrap();
        assert_eq!(fs::read(out.join("victim")).unwrap(), b"inside");
        assert_eq!(fs::read(out.join("s")).unwrap(), b"replaced");
        assert!(
            !fs::symlink_metadata(out.join("s"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn refuses_hardlink_escapes() {
        refuse(Evil::new().hardlink("h", "/etc/passwd").bytes(), "absolute");
        refuse(Evil::new().hardlink("h", "../outside").bytes(), "`..`");
        refuse(
            Evil::new().hardlink("h", "missing").bytes(),
            "not in the archive",
        );
        refuse(
            Evil::new()
                .dir("d/")
                .file("d/f", b"x")
                .symlink("s", "d")
                .hardlink("h", "s/f")
                .bytes(),
            "symbolic link",
        );
        refuse(
            Evil::new()
                .file("f", b"x")
                .symlink("s", "f")
                .hardlink("h", "s")
                .bytes(),
            "not a regular file",
        );
        refuse(
            Evil::new().dir("d/").hardlink("h", "d").bytes(),
            "not a regular file",
        );
    }

    #[test]
    fn refuses_special_files_and_setuid() {
        refuse(
            Evil::new()
                .raw(EntryType::Char, "null", "", 0o666, b"")
                .bytes(),
            "device",
        );
        refuse(
            Evil::new()
                .raw(EntryType::Block, "sda", "", 0o660, b"")
                .bytes(),
            "device",
        );
        refuse(
            Evil::new()
                .raw(EntryType::Fifo, "pipe", "", 0o644, b"")
                .bytes(),
            "fifo",
        );
        refuse(
            Evil::new()
                .raw(EntryType::Regular, "suid", "", 0o4755, b"x")
                .bytes(),
            "setuid/setgid",
        );
        refuse(
            Evil::new()
                .raw(EntryType::Directory, "sgid/", "", 0o2775, b"")
                .bytes(),
            "setuid/setgid",
        );
        refuse(
            Evil::new()
                .raw(EntryType::GNUSparse, "sparse", "", 0o644, b"")
                .bytes(),
            "sparse",
        );
        refuse(
            Evil::new()
                .raw(EntryType::new(b'Z'), "odd", "", 0o644, b"")
                .bytes(),
            "unsupported entry type",
        );
    }

    #[test]
    fn refuses_file_over_directory() {
        refuse(
            Evil::new()
                .dir("d/")
                .file("d/x", b"1")
                .file("d", b"2")
                .bytes(),
            "directory of that name",
        );
        refuse(
            Evil::new().file("f", b"1").file("f/x", b"2").bytes(),
            "not a directory",
        );
    }

    #[test]
    fn truncated_archive_leaves_nothing() {
        let mut tar = Evil::new().file("a", b"1").file("b", &[9u8; 5000]).bytes();
        tar.truncate(512 * 3 + 100);
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        assert!(unpack_to(&tar[..], &out, false).is_err());
        assert!(!out.exists());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[test]
    fn existing_target_is_untouched_on_failure_and_conflicts_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("mine"), b"precious").unwrap();
        // A failure: only `mine` remains, no staging directory.
        let bad = Evil::new().file("new", b"n").file("../x", b"x").bytes();
        assert!(unpack_to(&bad[..], &out, false).is_err());
        let names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("mine")]);
        // New names go in beside existing ones.
        let ok = Evil::new().file("new", b"n").bytes();
        unpack_to(&ok[..], &out, false).unwrap();
        assert_eq!(fs::read(out.join("new")).unwrap(), b"n");
        // An existing name is a conflict, nothing moves...
        let again = Evil::new().file("new", b"N").file("other", b"o").bytes();
        let e = unpack_to(&again[..], &out, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(!out.join("other").exists());
        assert_eq!(fs::read(out.join("new")).unwrap(), b"n");
        // ...unless asked to replace.
        unpack_to(&again[..], &out, true).unwrap();
        assert_eq!(fs::read(out.join("new")).unwrap(), b"N");
        assert_eq!(fs::read(out.join("mine")).unwrap(), b"precious");
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            3,
            "no staging dir left"
        );
    }

    #[test]
    fn target_that_is_a_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, b"").unwrap();
        let tar = Evil::new().file("a", b"1").bytes();
        assert!(unpack_to(&tar[..], &f, false).is_err());
    }

    #[test]
    fn pack_then_unpack_restores_everything() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("p/q")).unwrap();
        fs::write(src.path().join("p/q/f"), b"data").unwrap();
        fs::set_permissions(src.path().join("p/q/f"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("q/f", src.path().join("p/l")).unwrap();
        let mut buf = Vec::new();
        crate::pack::pack(src.path(), &["p".into()], &mut buf).unwrap();
        let t = tempfile::tempdir().unwrap();
        unpack_to(&buf[..], &t.path().join("o"), false).unwrap();
        assert_eq!(fs::read(t.path().join("o/p/q/f")).unwrap(), b"data");
        assert_eq!(
            fs::metadata(t.path().join("o/p/q/f"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(
            fs::read_link(t.path().join("o/p/l")).unwrap(),
            Path::new("q/f")
        );
    }
}
