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
        let mut f = std::fs::File::open(&self.file).map_err(|e| SourceError::io(&self.file, e))?;
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

    pub fn has(&self, name: &str) -> bool {
        self.locate(name).is_ok()
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
            Container::Dir { root } => {
                let p = root.join(&rel);
                let meta = match std::fs::symlink_metadata(&p) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(missing("is missing"));
                    }
                    Err(e) => return Err(SourceError::io(&p, e)),
                };
                if !meta.is_file() {
                    return Err(missing("is not a regular file"));
                }
                Ok(Loc {
                    file: p,
                    offset: 0,
                    len: meta.len(),
                    id: FileId::of(&meta),
                })
            }
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
