//! Where a source's bytes live: files of an OCI layout directory, or byte
//! ranges of the members of a tarball. Nothing is unpacked or copied.
//!
//! A tarball is indexed once (member name → offset and length of its data,
//! found by seeking over the data, not reading it). Member names that are
//! absolute or climb out with `..`, and links that point outside the
//! archive, make the whole tarball unusable: it is hostile or broken.

use super::{FileId, SourceError};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Most members a tarball may have.
const MAX_MEMBERS: usize = 1_000_000;
/// Most link hops followed when resolving a member.
const MAX_LINK_HOPS: usize = 16;

/// Bytes `offset .. offset + len` of `file`, verified while `file` had
/// identity `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub id: FileId,
}

impl Loc {
    /// Open the bytes for reading (blocking), checking that the file is
    /// still the one that was verified.
    pub fn open(&self) -> Result<impl Read + use<>, SourceError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        // The identity check below catches a file replaced since it was
        // verified, through a link or not; not following a final link
        // keeps such a file from even being opened.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.file)
            .map_err(|e| SourceError::io(&self.file, e))?;
        let meta = f.metadata().map_err(|e| SourceError::io(&self.file, e))?;
        if FileId::of(&meta) != self.id {
            return Err(SourceError::Changed(self.file.clone()));
        }
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| SourceError::io(&self.file, e))?;
        Ok(f.take(self.len))
    }
}

pub enum Member {
    File {
        offset: u64,
        len: u64,
    },
    /// A symbolic link (target relative to the member's directory) or a
    /// hard link (target relative to the archive root), already normalised
    /// to a member name.
    Link(String),
}

/// The place a source's files are read from.
pub enum Container {
    /// An OCI layout directory.
    Dir { root: PathBuf },
    /// A tarball and the index of its members.
    Tar {
        file: PathBuf,
        id: FileId,
        members: HashMap<String, Member>,
    },
}

impl Container {
    /// Open a tarball and index its members.
    pub fn tar(file: &Path) -> Result<Container, SourceError> {
        let f = std::fs::File::open(file).map_err(|e| SourceError::io(file, e))?;
        let meta = f.metadata().map_err(|e| SourceError::io(file, e))?;
        let id = FileId::of(&meta);
        let total = meta.len();
        let bad = |why: String| SourceError::Invalid {
            file: file.to_owned(),
            why,
        };
        let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(64 * 1024, f));
        let unreadable = |e: std::io::Error| {
            // The tar reader may quote the bad bytes: keep the message printable.
            let msg: String = e
                .to_string()
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .take(120)
                .collect();
            bad(format!("not a tar archive, or a corrupt one ({msg})"))
        };
        let entries = archive.entries_with_seek().map_err(unreadable)?;
        let mut members = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(unreadable)?;
            if members.len() >= MAX_MEMBERS {
                return Err(bad(format!("more than {MAX_MEMBERS} members")));
            }
            let raw = entry
                .path()
                .map_err(|e| bad(format!("bad member name: {e}")))?
                .into_owned();
            let name = normalize(&raw)
                .ok_or_else(|| bad(format!("member {raw:?} points outside the archive")))?;
            let kind = entry.header().entry_type();
            let member = if kind.is_file() {
                let (offset, len) = (entry.raw_file_position(), entry.size());
                if offset.checked_add(len).is_none_or(|end| end > total) {
                    return Err(bad(format!(
                        "truncated: member {name:?} ends past the end of the file ({total} bytes)"
                    )));
                }
                Member::File { offset, len }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(format!("bad link target of {name:?}: {e}")))?
                    .ok_or_else(|| bad(format!("link {name:?} has no target")))?
                    .into_owned();
                let joined = if kind.is_symlink() {
                    let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                    parent.join(&target)
                } else {
                    target.clone()
                };
                let t = normalize(&joined).ok_or_else(|| {
                    bad(format!(
                        "link {name:?} -> {target:?} points outside the archive"
                    ))
                })?;
                Member::Link(t)
            } else {
                // Directories, devices, FIFOs: never content.
                continue;
            };
            if name.is_empty() {
                continue;
            }
            members.insert(name, member);
        }
        Ok(Container::Tar {
            file: file.to_owned(),
            id,
            members,
        })
    }

    /// Where the source is (for messages).
    pub fn path(&self) -> &Path {
        match self {
            Container::Dir { root } => root,
            Container::Tar { file, .. } => file,
        }
    }

    /// Whether the regular file `name` is there. A symbolic link on the
    /// way to it (in a layout directory) or an unreadable directory is an
    /// error, not a missing file.
    pub fn has(&self, name: &str) -> Result<bool, SourceError> {
        match self {
            Container::Dir { root } => {
                let Some(rel) = normalize(Path::new(name)) else {
                    return Ok(false);
                };
                match locate_in_dir(root, &rel) {
                    Ok(_) => Ok(true),
                    Err(DirMiss::Missing | DirMiss::NotFile) => Ok(false),
                    Err(DirMiss::Hostile(e)) => Err(e),
                }
            }
            Container::Tar { .. } => Ok(self.locate(name).is_ok()),
        }
    }

    /// The bytes of the regular file `name` (relative, `/`-separated).
    pub fn locate(&self, name: &str) -> Result<Loc, SourceError> {
        let missing = |why: &str| SourceError::Invalid {
            file: self.path().to_owned(),
            why: format!("{name:?} {why}"),
        };
        let rel =
            normalize(Path::new(name)).ok_or_else(|| missing("points outside the archive"))?;
        match self {
            Container::Dir { root } => match locate_in_dir(root, &rel) {
                Ok(loc) => Ok(loc),
                Err(DirMiss::Missing) => Err(missing("is missing")),
                Err(DirMiss::NotFile) => Err(missing("is not a regular file")),
                Err(DirMiss::Hostile(e)) => Err(e),
            },
            Container::Tar { file, id, members } => {
                let mut cur = rel;
                for _ in 0..MAX_LINK_HOPS {
                    match members.get(&cur) {
                        None => return Err(missing("is missing from the archive")),
                        Some(Member::File { offset, len }) => {
                            return Ok(Loc {
                                file: file.clone(),
                                offset: *offset,
                                len: *len,
                                id: *id,
                            });
                        }
                        Some(Member::Link(t)) => cur = t.clone(),
                    }
                }
                Err(missing("is a loop of links"))
            }
        }
    }

    /// A small file read whole (manifests, configs, index.json).
    pub fn read_small(&self, name: &str, max: u64) -> Result<(Vec<u8>, Loc), SourceError> {
        let loc = self.locate(name)?;
        if loc.len > max {
            return Err(SourceError::Invalid {
                file: self.path().to_owned(),
                why: format!("{name:?} is larger than {max} bytes"),
            });
        }
        let mut bytes = Vec::with_capacity(loc.len as usize);
        loc.open()?
            .read_to_end(&mut bytes)
            .map_err(|e| SourceError::io(&loc.file, e))?;
        if bytes.len() as u64 != loc.len {
            return Err(SourceError::Invalid {
                file: self.path().to_owned(),
                why: format!("{name:?} is truncated"),
            });
        }
        Ok((bytes, loc))
    }
}

/// Why a file of a layout directory cannot be read.
enum DirMiss {
    Missing,
    NotFile,
    /// A symbolic link on the way, or an I/O error: the source is refused.
    Hostile(SourceError),
}

/// The regular file `rel` (normalised, `/`-separated) below the layout
/// directory `root`, checked component by component: no directory or file
/// below `root` may be a symbolic link. A link could point anywhere on the
/// host (say, another runtime's content store), and every file there whose
/// digest someone knows would be served.
fn locate_in_dir(root: &Path, rel: &str) -> Result<Loc, DirMiss> {
    let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    let mut p = root.to_owned();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DirMiss::Missing),
            Err(e) => return Err(DirMiss::Hostile(SourceError::io(&p, e))),
        };
        if meta.file_type().is_symlink() {
            return Err(DirMiss::Hostile(SourceError::Invalid {
                file: p,
                why: "is a symbolic link; nothing below a layout's directory may be one \
                      (it could point anywhere on this host)"
                    .into(),
            }));
        }
        if i + 1 < parts.len() {
            if !meta.is_dir() {
                return Err(DirMiss::Missing);
            }
            continue;
        }
        if !meta.is_file() {
            return Err(DirMiss::NotFile);
        }
        return Ok(Loc {
            file: p,
            offset: 0,
            len: meta.len(),
            id: FileId::of(&meta),
        });
    }
    Err(DirMiss::NotFile)
}

/// A member name as a relative `/`-separated path without `.` components;
/// `None` if it is absolute or climbs above the root.
fn normalize(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_member_names() {
        assert_eq!(normalize(Path::new("./a/b/")).as_deref(), Some("a/b"));
        assert_eq!(normalize(Path::new("a/../b")).as_deref(), Some("b"));
        assert_eq!(normalize(Path::new("../b")), None);
        assert_eq!(normalize(Path::new("a/../../b")), None);
        assert_eq!(normalize(Path::new("/etc/passwd")), None);
    }
}
