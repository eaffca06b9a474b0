//! The filesystem backend: the default, a local data directory.
//!
//! Layout under the root:
//! - `<key>~` — the object `key`. Objects carry a `~` suffix (never part of a
//!   key) so that a key can also be the prefix of other keys, as on S3: the
//!   object `_catalog/a/b` is the file `_catalog/a/b~` beside the directory
//!   `_catalog/a/b/` that holds `_catalog/a/b/c~`.
//! - `.tmp/` — files being written; renamed into place when complete.
//! - `_uploads/<id>.data`, `_uploads/<id>.meta` — upload sessions; the data
//!   is renamed to the blob's key on commit (no copy). Plain files, not a
//!   directory per session: an upload then frees at most one inode (the
//!   meta), and a single-request upload, which has no meta, none. Creating
//!   files is what a registry does all day, and on ext4 without a journal
//!   every new inode is searched for past the ones freed in the last
//!   minutes, so freeing fewer keeps pushes fast. (Directories left by the
//!   earlier `_uploads/<id>/` layout are expired like any other session.)
//! - `.lock` — locked (`flock`, exclusive) by the process that has the
//!   directory open, and holding its pid; see [`FsBackend::open`].
//!
//! Every write that a caller is told about is durable: the file is fsynced
//! before the rename and the directory after it (unless fsync is disabled).

use crate::backend::{
    Backend, ByteStream, ObjectMeta, ObjectReader, UploadStat, UploadWriter, invalid_key, valid_key,
};
use crate::name_set::NameSet;
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio_util::io::ReaderStream;

const OBJECT_SUFFIX: char = '~';
const TMP_DIR: &str = ".tmp";
/// Locked by the process that has the directory open. Not a key: names
/// starting with `.` are neither valid keys nor listing entries.
const LOCK_FILE: &str = ".lock";
const UPLOADS_DIR: &str = "_uploads";
/// Objects up to this size are read on the calling worker thread. Opening
/// and reading a small file on a local filesystem costs a few microseconds,
/// less than handing it to tokio's blocking pool: profiling manifest GETs
/// showed 40% of the CPU in those thread switches. Bigger reads, fsyncs,
/// renames and listings still go to the blocking pool.
const INLINE_READ_MAX: u64 = 64 * 1024;
/// Read buffer for streaming upload data (hashing a session after a restart).
const READ_CHUNK: usize = 256 * 1024;
/// Objects are served in windows of this size, each a memory map of the
/// file handed to the HTTP layer as is (see [`mapped_stream`]).
const MAP_WINDOW: u64 = 1 << 20;

#[derive(Clone)]
pub struct FsBackend {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    fsync: bool,
    index: DirIndex,
    /// `.lock`, locked for as long as the backend lives (closing the file,
    /// or the end of the process, releases it).
    _lock: std::fs::File,
}

/// Why [`FsBackend::open`] failed when another process (or another open
/// backend) has the data directory: carried by an [`io::Error`] of kind
/// [`ErrorKind::WouldBlock`]; its message is meant for the user as is.
#[derive(Debug)]
pub struct DirInUse {
    /// The data directory (canonical).
    pub dir: PathBuf,
    /// The holder's pid, as it wrote it in `.lock` (if readable).
    pub pid: Option<u32>,
}

impl DirInUse {
    /// The [`DirInUse`] that an error of [`FsBackend::open`] carries, if
    /// that is why it failed.
    pub fn of(e: &io::Error) -> Option<&DirInUse> {
        e.get_ref()?.downcast_ref()
    }
}

/// What to tell the user when [`FsBackend::open`] fails on `dir`: a
/// directory in use says so in full (directory, holder, what to do);
/// anything else names the directory.
pub fn open_failure(dir: &Path, e: &io::Error) -> String {
    match DirInUse::of(e) {
        Some(busy) => busy.to_string(),
        None => format!("cannot open data directory {}: {e}", dir.display()),
    }
}

impl std::fmt::Display for DirInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data directory {} is in use by another Wharf process",
            self.dir.display()
        )?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        write!(
            f,
            ": the filesystem backend allows one process per directory; \
             stop it or use another --data-dir"
        )
    }
}

impl std::error::Error for DirInUse {}

/// Take the data directory `root` for this backend: an exclusive,
/// non-blocking `flock` on `root/.lock`, into which the pid is written for
/// the message another process gets. The lock, not the file's existence, is
/// what counts: the kernel releases it when the file is closed or the
/// process ends, however it ends, so a `.lock` left by a crash or a
/// `kill -9` does not block. Two opens in one process conflict as well
/// (each has its own open file description).
fn lock_dir(root: &Path) -> io::Result<std::fs::File> {
    use std::io::{Read, Write};
    let path = root.join(LOCK_FILE);
    let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(at)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // Empty if the holder has not written it yet: no pid then.
            let mut text = String::new();
            let pid = match file.read_to_string(&mut text) {
                Ok(_) => text.trim().parse().ok(),
                Err(_) => None,
            };
            return Err(io::Error::new(
                ErrorKind::WouldBlock,
                DirInUse {
                    dir: root.to_owned(),
                    pid,
                },
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(at(e)),
    }
    file.set_len(0).map_err(at)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(at)?;
    Ok(file)
}

/// Sorted entries of the directories that have been listed, kept current by
/// this process's writes, so a page of a listing costs O(log n + page) and
/// not a `readdir` and sort of the whole directory. Valid because one
/// process owns a data directory (enforced by `.lock`: see
/// [`FsBackend::open`]). Each directory has its own lock. Bounded: beyond
/// [`INDEXED_DIRS`] directories or [`INDEXED_NAMES`] names, the directories
/// indexed first are dropped, and read again when next listed (a walk of
/// the whole store, as garbage collection makes, does not keep it all).
#[derive(Default)]
struct DirIndex {
    dirs: DashMap<PathBuf, Arc<Mutex<Option<NameSet>>>>,
    /// Directories in the order they were indexed, with how many names
    /// each held then.
    order: Mutex<std::collections::VecDeque<(PathBuf, usize)>>,
    /// Names indexed, as counted when their directories were read.
    names: std::sync::atomic::AtomicUsize,
}

/// Directories indexed at most.
const INDEXED_DIRS: usize = 4096;
/// Names indexed at most (as counted when their directories were read).
const INDEXED_NAMES: usize = 1 << 16;

impl DirIndex {
    /// Run `f` on the sorted entries of `dir` ("name" for an object,
    /// "name/" for a directory), reading the directory on first use.
    /// Blocking.
    fn with<T>(&self, dir: &Path, f: impl FnOnce(&NameSet) -> T) -> io::Result<T> {
        let slot = self.dirs.entry(dir.to_owned()).or_default().clone();
        let mut guard = slot
            .lock()
            .map_err(|_| io::Error::other("directory index poisoned"))?;
        let mut read = None;
        if guard.is_none() {
            let set = read_entries(dir)?;
            read = Some(set.len());
            *guard = Some(set);
        }
        let out = match guard.as_ref() {
            Some(set) => Ok(f(set)),
            None => Err(io::Error::other("directory index missing")),
        };
        drop(guard);
        drop(slot);
        if let Some(n) = read {
            self.indexed(dir, n);
        }
        out
    }

    /// Count a directory just read, and drop the oldest while over budget.
    fn indexed(&self, dir: &Path, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.names.fetch_add(n, Relaxed).saturating_add(n);
        let mut drop_now = Vec::new();
        if let Ok(mut order) = self.order.lock() {
            order.push_back((dir.to_owned(), n));
            let mut total = total;
            while order.len() > INDEXED_DIRS || (total > INDEXED_NAMES && order.len() > 1) {
                let Some((d, k)) = order.pop_front() else {
                    break;
                };
                total = total.saturating_sub(k);
                drop_now.push((d, k));
            }
        }
        for (d, k) in drop_now {
            self.names
                .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(k)))
                .ok();
            self.forget(&d);
        }
    }

    /// Drop the index of `dir`: emptied under its lock (a listing holding
    /// it finishes first; the next one reads the directory again), then
    /// removed from the map unless someone holds it. Writes to a directory
    /// not indexed need no record: the disk has them.
    fn forget(&self, dir: &Path) {
        let slot = self.dirs.get(dir).map(|e| e.value().clone());
        if let Some(slot) = slot {
            if let Ok(mut guard) = slot.lock() {
                *guard = None;
            }
            drop(slot);
        }
        self.dirs
            .remove_if(dir, |_, slot| Arc::strong_count(slot) == 1);
    }

    /// Up to `n` entries of `dir` after `after`.
    fn page(&self, dir: &Path, after: Option<&str>, n: usize) -> io::Result<Vec<String>> {
        self.with(dir, |set| set.page(after, n))
    }

    /// Record a new entry of `dir` (if `dir` is indexed).
    fn added(&self, dir: &Path, entry: String) {
        let slot = self.dirs.get(dir).map(|e| e.value().clone());
        if let Some(slot) = slot
            && let Ok(mut guard) = slot.lock()
            && let Some(set) = guard.as_mut()
        {
            set.insert(&entry);
        }
    }

    /// Forget an entry of `dir` (if `dir` is indexed).
    fn removed(&self, dir: &Path, entry: &str) {
        let slot = self.dirs.get(dir).map(|e| e.value().clone());
        if let Some(slot) = slot
            && let Ok(mut guard) = slot.lock()
            && let Some(set) = guard.as_mut()
        {
            set.remove(entry);
        }
    }
}

/// The listing entries of a directory: objects `name~` as "name",
/// directories as "name/"; temporary and hidden files are not entries.
fn read_entries(dir: &Path) -> io::Result<NameSet> {
    let mut set = NameSet::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            return Ok(set);
        }
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            set.insert(&format!("{name}/"));
        } else if let Some(stem) = name.strip_suffix(OBJECT_SUFFIX) {
            set.insert(stem);
        }
    }
    Ok(set)
}

/// The parent directory of an object file and its listing entry.
fn object_entry(path: &Path) -> Option<(&Path, String)> {
    let name = path.file_name()?.to_str()?.strip_suffix(OBJECT_SUFFIX)?;
    Some((path.parent()?, name.to_owned()))
}

impl FsBackend {
    /// Open (creating if needed) a data directory. Leftover temporary files
    /// from an earlier crash are removed.
    ///
    /// One backend at a time has a directory, for as long as it lives: the
    /// listing index and the start-up cleanup assume one writer. Fails with
    /// [`ErrorKind::WouldBlock`] carrying a [`DirInUse`] if another process
    /// (or another backend of this one) has it.
    pub fn open(root: impl Into<PathBuf>, fsync: bool) -> io::Result<FsBackend> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let root = root.canonicalize()?;
        // Before anything else: `.tmp` holds the writes in flight of the
        // process that has the directory.
        let lock = lock_dir(&root)?;
        let tmp = root.join(TMP_DIR);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(root.join(UPLOADS_DIR))?;
        Ok(FsBackend {
            inner: Arc::new(Inner {
                root,
                fsync,
                index: DirIndex::default(),
                _lock: lock,
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn object_path(&self, key: &str) -> io::Result<PathBuf> {
        if !valid_key(key) || key.starts_with(UPLOADS_DIR) {
            return Err(invalid_key(key));
        }
        let mut p = self.inner.root.join(key).into_os_string();
        p.push(OBJECT_SUFFIX.to_string());
        Ok(PathBuf::from(p))
    }

    /// `_uploads/<id>` plus `ext`, for a well-formed session id.
    fn upload_path(&self, id: &str, ext: &str) -> io::Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(invalid_key(id));
        }
        Ok(self.inner.root.join(UPLOADS_DIR).join(format!("{id}{ext}")))
    }

    fn upload_data(&self, id: &str) -> io::Result<PathBuf> {
        self.upload_path(id, ".data")
    }

    fn upload_meta(&self, id: &str) -> io::Result<PathBuf> {
        self.upload_path(id, ".meta")
    }

    fn tmp_path(&self) -> PathBuf {
        let name: u128 = rand::random();
        self.inner.root.join(TMP_DIR).join(format!("{name:032x}"))
    }

    /// Run a sequence of blocking filesystem calls as one task on the
    /// blocking pool: one thread hop per operation, not one per syscall.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FsBackend) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(io::Error::other)?
    }

    fn sync_dir_blocking(&self, dir: &Path) -> io::Result<()> {
        if self.inner.fsync {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Create `dir` and any missing parents, making each new entry durable.
    fn ensure_dir_blocking(&self, dir: &Path) -> io::Result<()> {
        // Walk up to the first existing ancestor, then create downwards.
        let mut missing = Vec::new();
        let mut cur = dir;
        while std::fs::metadata(cur).is_err() {
            missing.push(cur.to_owned());
            match cur.parent() {
                Some(p) if p.starts_with(&self.inner.root) => cur = p,
                _ => break,
            }
        }
        for d in missing.iter().rev() {
            match std::fs::create_dir(d) {
                Ok(()) => {
                    if let (Some(parent), Some(name)) =
                        (d.parent(), d.file_name().and_then(|n| n.to_str()))
                    {
                        if self.inner.fsync {
                            std::fs::File::open(parent)?.sync_all()?;
                        }
                        self.inner.index.added(parent, format!("{name}/"));
                    }
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Note a new object file in the listing index.
    fn record_added(&self, path: &Path) {
        if let Some((dir, entry)) = object_entry(path) {
            self.inner.index.added(dir, entry);
        }
    }

    /// Write `data` to a temp file and rename it to `dest`; with `durable`,
    /// fsync the file before and the directory after the rename.
    fn write_atomic_blocking(&self, dest: &Path, data: &[u8], durable: bool) -> io::Result<()> {
        use std::io::Write;
        let tmp = self.tmp_path();
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            if durable && self.inner.fsync {
                f.sync_all()?;
            }
            drop(f);
            let parent = dest.parent().ok_or_else(|| invalid_key("/"))?;
            self.ensure_dir_blocking(parent)?;
            std::fs::rename(&tmp, dest)?;
            self.record_added(dest);
            if durable {
                self.sync_dir_blocking(parent)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// How [`FsBackend::import_file`] brings a local file into the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    /// Hard link the file; copy it if the filesystems differ.
    Link,
    /// Copy the file.
    Copy,
    /// Hard link the file and remove the source (copy and remove across
    /// filesystems).
    Move,
}

/// What [`FsBackend::import_file`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Imported {
    /// The object already existed; nothing was read or written.
    AlreadyPresent {
        size: u64,
    },
    Linked {
        size: u64,
    },
    Copied {
        size: u64,
    },
    /// Linked (or copied) and the source removed.
    Moved {
        size: u64,
    },
    /// The file's content does not hash to the expected digest; nothing stored.
    Mismatch {
        actual: oci::Digest,
    },
}

/// Hash `file` from its start.
fn hash_file(
    file: &mut std::fs::File,
    algorithm: oci::Algorithm,
) -> io::Result<(oci::Digest, u64)> {
    use std::io::Read;
    let mut h = algorithm.digester();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut n = 0u64;
    loop {
        let r = file.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((h.finish(), n))
}

/// Copy `src` to the new file `dest`, hashing what is copied.
fn copy_hashing(
    src: &Path,
    dest: &Path,
    algorithm: oci::Algorithm,
) -> io::Result<(oci::Digest, u64)> {
    use std::io::{Read, Write};
    let mut input = std::fs::File::open(src)?;
    let mut out = std::fs::File::create(dest)?;
    let mut h = algorithm.digester();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut n = 0u64;
    loop {
        let r = input.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        out.write_all(&buf[..r])?;
        n += r as u64;
    }
    out.flush()?;
    Ok((h.finish(), n))
}

impl FsBackend {
    /// Bring the local file `src` in as the object `key`, whose content must
    /// hash to `expected`: hard linked (or copied, or moved) into a temporary
    /// file, verified there, then renamed into place durably. If `key`
    /// already exists with `src`'s size it is kept and `src` is left alone
    /// (one of another size is damaged and is replaced). On a mismatch
    /// nothing is stored and `src` is left alone.
    ///
    /// A hard link shares the file with its source: the source must not be
    /// modified in place afterwards (removing it is fine).
    pub async fn import_file(
        &self,
        key: &str,
        src: &Path,
        expected: &oci::Digest,
        mode: ImportMode,
    ) -> io::Result<Imported> {
        let dest = self.object_path(key)?;
        let this = self.clone();
        let src = src.to_owned();
        let expected = expected.clone();
        tokio::task::spawn_blocking(move || this.import_blocking(&dest, &src, &expected, mode))
            .await
            .map_err(io::Error::other)?
    }

    fn import_blocking(
        &self,
        dest: &Path,
        src: &Path,
        expected: &oci::Digest,
        mode: ImportMode,
    ) -> io::Result<Imported> {
        let src_meta = std::fs::metadata(src)?;
        if !src_meta.is_file() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("{} is not a regular file", src.display()),
            ));
        }
        // An existing object of another size is damaged: replace it.
        if let Ok(m) = std::fs::metadata(dest)
            && m.is_file()
            && m.len() == src_meta.len()
        {
            return Ok(Imported::AlreadyPresent { size: m.len() });
        }
        let tmp = self.tmp_path();
        let result = (|| {
            let linked = match mode {
                ImportMode::Copy => false,
                ImportMode::Link | ImportMode::Move => match std::fs::hard_link(src, &tmp) {
                    Ok(()) => true,
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::CrossesDevices
                                | ErrorKind::PermissionDenied
                                | ErrorKind::Unsupported
                        ) =>
                    {
                        false
                    }
                    Err(e) => return Err(e),
                },
            };
            let (actual, size) = if linked {
                hash_file(&mut std::fs::File::open(&tmp)?, expected.algorithm())?
            } else {
                copy_hashing(src, &tmp, expected.algorithm())?
            };
            if &actual != expected {
                return Ok(Imported::Mismatch { actual });
            }
            if self.inner.fsync {
                std::fs::File::open(&tmp)?.sync_all()?;
            }
            let parent = dest.parent().ok_or_else(|| invalid_key("/"))?;
            self.ensure_dir_blocking(parent)?;
            std::fs::rename(&tmp, dest)?;
            self.record_added(dest);
            if self.inner.fsync {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(match (mode, linked) {
                (ImportMode::Move, _) => {
                    std::fs::remove_file(src)?;
                    Imported::Moved { size }
                }
                (_, true) => Imported::Linked { size },
                (_, false) => Imported::Copied { size },
            })
        })();
        if !matches!(
            result,
            Ok(Imported::Linked { .. } | Imported::Copied { .. } | Imported::Moved { .. })
        ) {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn meta_of(m: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        size: m.len(),
        modified: m.modified().ok(),
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lexical listing of a directory tree of objects: entries are ordered as
/// "name" (object) and "name/" (directory), so the walk yields keys in byte
/// order. `rel` is the key prefix of `dir`; `start_after` is relative to the
/// listing's root.
fn walk(
    index: &DirIndex,
    dir: &Path,
    rel: &str,
    start_after: Option<&str>,
    limit: usize,
    out: &mut Vec<String>,
) -> io::Result<()> {
    // Where to start in this directory: after start_after's part below `rel`.
    let mut cursor: Option<String> = start_after
        .and_then(|s| s.strip_prefix(rel))
        .map(str::to_owned);
    // start_after may lie inside a subdirectory: finish that one first.
    if let Some((first, _)) = cursor.as_deref().and_then(|c| c.split_once('/')) {
        let sub = format!("{first}/");
        if index.with(dir, |set| set.contains(&sub))? {
            walk(
                index,
                &dir.join(first),
                &format!("{rel}{sub}"),
                start_after,
                limit,
                out,
            )?;
        }
    }
    while out.len() < limit {
        let batch = index.page(dir, cursor.as_deref(), 256)?;
        if batch.is_empty() {
            break;
        }
        for entry in batch {
            if out.len() >= limit {
                return Ok(());
            }
            match entry.strip_suffix('/') {
                Some(name) => walk(
                    index,
                    &dir.join(name),
                    &format!("{rel}{entry}"),
                    start_after,
                    limit,
                    out,
                )?,
                None => out.push(format!("{rel}{entry}")),
            }
            cursor = Some(entry);
        }
    }
    Ok(())
}

/// The bytes `start..end` of an object as a stream of memory-mapped windows.
///
/// The bytes go from the page cache to the socket without being copied
/// through a userspace buffer (the HTTP layer writes straight from the
/// mapping), and each window costs one hop to the blocking pool, where the
/// mapping is populated in one go. Memory stays bounded: a window is
/// unmapped as soon as it has been written.
fn mapped_stream(file: std::fs::File, start: u64, end: u64) -> ByteStream {
    let file = Arc::new(file);
    Box::pin(futures_util::stream::try_unfold(start, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let len = (end - pos).min(MAP_WINDOW);
            let window = tokio::task::spawn_blocking(move || map_window(&file, pos, len))
                .await
                .map_err(io::Error::other)??;
            Ok(Some((window, pos + len)))
        }
    }))
}

/// One window of an object file, mapped (or read, where mapping fails).
fn map_window(file: &std::fs::File, pos: u64, len: u64) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    // A file shorter than expected would make the mapping fault: refuse it.
    if file.metadata()?.len() < pos + len {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "object file shorter than its size",
        ));
    }
    // SAFETY: objects are immutable. A file under the store's object paths is
    // only ever created whole (written to a temporary file, synced, renamed
    // into place) and removed by unlinking, which leaves an existing mapping
    // valid; nothing writes to or truncates it in place. The length was just
    // checked, so every mapped page is backed by the file.
    let mapped = unsafe {
        memmap2::MmapOptions::new()
            .offset(pos)
            .len(len as usize)
            .populate()
            .map(file)
    };
    match mapped {
        Ok(map) => Ok(Bytes::from_owner(map)),
        Err(_) => {
            // Filesystems without mmap support: an ordinary read.
            let mut buf = vec![0; len as usize];
            file.read_exact_at(&mut buf, pos)?;
            Ok(Bytes::from(buf))
        }
    }
}

/// Bytes written between starts of background writeback of an upload.
const SYNC_EVERY: u64 = 8 << 20;
/// Chunks queued to an upload's writer thread (as for hashing: two suffice).
const WRITE_QUEUE: usize = 2;

/// Appends to an upload's data file from a blocking thread of its own, so
/// chunks go straight from the request to `write(2)` with no copy and no
/// thread hop per write, while the request task receives (and hashes) more.
struct FsUploadWriter {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl FsUploadWriter {
    /// `offset` is where `file` is positioned (the session's size so far).
    fn start(mut file: std::fs::File, offset: u64, fsync: bool) -> FsUploadWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut writeback = Writeback::new(offset);
            let mut pos = offset;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                pos += chunk.len() as u64;
                if fsync && pos - writeback.from >= SYNC_EVERY {
                    writeback.start(&file, pos)?;
                }
            }
            if fsync {
                // Also the tail of this request: a chunked upload's next
                // request, or the commit's fsync, finds it on its way to disk.
                writeback.start(&file, pos)?;
            }
            writeback.finish()
        });
        FsUploadWriter {
            tx: Some(tx),
            task: Some(task),
        }
    }

    /// The writer thread's outcome (after it stopped).
    async fn join(&mut self) -> io::Result<()> {
        self.tx = None;
        match self.task.take() {
            Some(t) => t.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

/// Starts writeback of an upload's bytes while more arrive, so the fsync at
/// commit finds them written and has little left to do, whether they came
/// in one request or in many chunks.
///
/// On Linux, `sync_file_range(SYNC_FILE_RANGE_WRITE)` queues the range's
/// dirty pages for writing and returns: no waiting for the disk and no
/// journal commit (the file's size is made durable by the commit's fsync).
/// Elsewhere a thread runs `fdatasync` (one at a time).
struct Writeback {
    /// Writeback has been started for the bytes before this offset.
    from: u64,
    #[cfg(not(target_os = "linux"))]
    syncing: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Writeback {
    fn new(from: u64) -> Writeback {
        Writeback {
            from,
            #[cfg(not(target_os = "linux"))]
            syncing: None,
        }
    }

    /// Start writeback of `[self.from, to)`.
    #[cfg(target_os = "linux")]
    fn start(&mut self, file: &std::fs::File, to: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if to <= self.from {
            return Ok(());
        }
        let (Ok(from), Ok(len)) = (
            libc::off64_t::try_from(self.from),
            libc::off64_t::try_from(to - self.from),
        ) else {
            return Ok(());
        };
        // SAFETY: a plain system call on a descriptor `file` keeps open for
        // the duration of the call; it takes no pointers.
        let r = unsafe {
            libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        self.from = to;
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn start(&mut self, file: &std::fs::File, to: u64) -> io::Result<()> {
        self.finish_previous()?;
        let f = file.try_clone()?;
        self.syncing = Some(std::thread::spawn(move || f.sync_data()));
        self.from = to;
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn finish_previous(&mut self) -> io::Result<()> {
        match self.syncing.take() {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("sync thread panicked"))?,
            None => Ok(()),
        }
    }

    /// The outcome of the writeback started (Linux: nothing to wait for;
    /// write errors surface in the commit's fsync).
    #[cfg(target_os = "linux")]
    fn finish(self) -> io::Result<()> {
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn finish(mut self) -> io::Result<()> {
        self.finish_previous()
    }
}

#[async_trait]
impl UploadWriter for FsUploadWriter {
    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(data).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer thread stopped: report why.
        self.join().await?;
        Err(io::Error::other("upload writer stopped"))
    }

    async fn finish(mut self: Box<Self>, _resume: Option<Bytes>) -> io::Result<()> {
        // One process owns the data directory: the registry keeps the
        // running digest in memory, and rebuilds it after a restart.
        self.join().await
    }

    async fn abort(mut self: Box<Self>) -> io::Result<()> {
        self.join().await
    }
}

#[async_trait]
impl Backend for FsBackend {
    async fn ready(&self) -> io::Result<()> {
        // The data directory is there, is a directory, and can be read:
        // a stat and the first entry of a readdir (microseconds).
        let root = &self.inner.root;
        let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", root.display()));
        if !std::fs::metadata(root).map_err(at)?.is_dir() {
            return Err(at(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        std::fs::read_dir(root)
            .map_err(at)?
            .next()
            .transpose()
            .map_err(at)?;
        Ok(())
    }

    async fn head(&self, key: &str) -> io::Result<Option<ObjectMeta>> {
        let p = self.object_path(key)?;
        // A stat costs microseconds: less than a hop to the blocking pool.
        Ok(not_found_is_none(std::fs::metadata(&p))?
            .filter(|m| m.is_file())
            .map(|m| meta_of(&m)))
    }

    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> io::Result<Option<ObjectReader>> {
        use std::os::unix::fs::FileExt;
        let p = self.object_path(key)?;
        // Opening and a stat cost microseconds: done in place, like `head`.
        let Some(f) = not_found_is_none(std::fs::File::open(&p))? else {
            return Ok(None);
        };
        let meta = meta_of(&f.metadata()?);
        let (start, end) = match range {
            None => (0, meta.size),
            // Clamped so that start <= end <= size whatever the caller asked.
            Some((start, end)) => {
                let start = start.min(meta.size);
                (start, end.clamp(start, meta.size))
            }
        };
        let body: ByteStream = if end - start <= INLINE_READ_MAX {
            // Small objects and ranges: one read in place (see INLINE_READ_MAX).
            let mut buf = vec![0; (end - start) as usize];
            f.read_exact_at(&mut buf, start)?;
            Box::pin(futures_util::stream::once(std::future::ready(Ok(
                Bytes::from(buf),
            ))))
        } else {
            mapped_stream(f, start, end)
        };
        Ok(Some(ObjectReader { meta, body }))
    }

    async fn read(&self, key: &str) -> io::Result<Option<Bytes>> {
        use std::io::Read;
        let p = self.object_path(key)?;
        let Some(mut f) = not_found_is_none(std::fs::File::open(&p))? else {
            return Ok(None);
        };
        let len = f.metadata()?.len();
        if len <= INLINE_READ_MAX {
            // Links, tags and most manifests: read in place (see INLINE_READ_MAX).
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf)?;
            return Ok(Some(Bytes::from(buf)));
        }
        tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf).map(|_| Some(Bytes::from(buf)))
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn put(&self, key: &str, data: Bytes) -> io::Result<()> {
        let p = self.object_path(key)?;
        let parent = p.parent().ok_or_else(|| invalid_key(key))?.to_owned();
        self.blocking(move |this| {
            if !data.is_empty() {
                return this.write_atomic_blocking(&p, &data, true);
            }
            // An empty object (a link) cannot be seen half-written: create it
            // in place; the directory fsync makes it durable.
            this.ensure_dir_blocking(&parent)?;
            std::fs::File::create(&p)?;
            this.record_added(&p);
            this.sync_dir_blocking(&parent)
        })
        .await
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        let p = self.object_path(key)?;
        self.blocking(move |this| match std::fs::remove_file(&p) {
            Ok(()) => {
                if let Some((dir, entry)) = object_entry(&p) {
                    this.inner.index.removed(dir, &entry);
                }
                if let Some(parent) = p.parent() {
                    this.sync_dir_blocking(parent)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> io::Result<Vec<String>> {
        let dir = match prefix.strip_suffix('/') {
            Some(p) if valid_key(p) => self.inner.root.join(p),
            _ => return Err(invalid_key(prefix)),
        };
        let start_after = start_after.map(str::to_owned);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(
                &this.inner.index,
                &dir,
                "",
                start_after.as_deref(),
                limit,
                &mut out,
            )?;
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn upload_create(&self, id: &str, meta: Option<Bytes>) -> io::Result<()> {
        let data = self.upload_data(id)?;
        let meta_path = self.upload_meta(id)?;
        self.blocking(move |this| {
            std::fs::File::create(&data)?;
            // A session is not acknowledged data: after a power loss the
            // client starts again. It survives a restart of the process.
            match meta {
                Some(meta) => this.write_atomic_blocking(&meta_path, &meta, false),
                None => Ok(()),
            }
        })
        .await
    }

    async fn upload_stat(&self, id: &str) -> io::Result<Option<UploadStat>> {
        // Small reads: inline, like `read` (see INLINE_READ_MAX).
        let Some(meta) = not_found_is_none(std::fs::read(self.upload_meta(id)?))? else {
            return Ok(None);
        };
        let Some(data) = not_found_is_none(std::fs::metadata(self.upload_data(id)?))? else {
            return Ok(None);
        };
        Ok(Some(UploadStat {
            meta: Bytes::from(meta),
            data: meta_of(&data),
            resume: None,
        }))
    }

    async fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>> {
        let path = self.upload_data(id)?;
        let fsync = self.inner.fsync;
        let file = tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
            use std::io::Seek;
            let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
            if file.metadata()?.len() != offset {
                file.set_len(offset)?;
            }
            file.seek(io::SeekFrom::Start(offset))?;
            Ok(file)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Box::new(FsUploadWriter::start(file, offset, fsync)))
    }

    async fn upload_truncate(&self, id: &str, len: u64) -> io::Result<()> {
        let path = self.upload_data(id)?;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await?;
        file.set_len(len).await
    }

    async fn upload_read(&self, id: &str) -> io::Result<ByteStream> {
        let path = self.upload_data(id)?;
        let f = tokio::fs::File::open(&path).await?;
        Ok(Box::pin(ReaderStream::with_capacity(f, READ_CHUNK)))
    }

    async fn upload_commit(&self, id: &str, key: &str) -> io::Result<()> {
        let dest = self.object_path(key)?;
        let parent = dest.parent().ok_or_else(|| invalid_key(key))?.to_owned();
        let data = self.upload_data(id)?;
        let meta = self.upload_meta(id)?;
        self.blocking(move |this| {
            let size = std::fs::metadata(&data)?.len();
            // Keys are content-addressed: an object of the same size holds
            // the same bytes. One of another size is damaged (truncated by
            // a crash under --no-fsync, or a disk error): the verified
            // upload replaces it, atomically by the rename.
            let intact = std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size);
            if intact {
                remove_if_present(&data)?;
            } else {
                if this.inner.fsync {
                    std::fs::File::open(&data)?.sync_all()?;
                }
                this.ensure_dir_blocking(&parent)?;
                std::fs::rename(&data, &dest)?;
                this.record_added(&dest);
                this.sync_dir_blocking(&parent)?;
            }
            remove_if_present(&meta)
        })
        .await
    }

    async fn upload_delete(&self, id: &str) -> io::Result<()> {
        let data = self.upload_data(id)?;
        let meta = self.upload_meta(id)?;
        let legacy = self.upload_path(id, "")?;
        self.blocking(move |_| {
            remove_if_present(&data)?;
            remove_if_present(&meta)?;
            not_found_is_none(std::fs::remove_dir_all(&legacy)).map(drop)
        })
        .await
    }

    async fn upload_list(&self) -> io::Result<Vec<(String, SystemTime)>> {
        let uploads = self.inner.root.join(UPLOADS_DIR);
        self.blocking(move |_| {
            // id -> last modified; the data's time wins over the meta's.
            let mut found: std::collections::BTreeMap<String, (SystemTime, bool)> =
                Default::default();
            for entry in std::fs::read_dir(&uploads)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let (id, is_data) = match name.rsplit_once('.') {
                    Some((id, "data")) => (id.to_owned(), true),
                    Some((id, "meta")) => (id.to_owned(), false),
                    // A directory of the earlier layout, or debris.
                    _ => (name, false),
                };
                let Some(meta) = not_found_is_none(entry.metadata())? else {
                    continue;
                };
                let modified = meta.modified()?;
                let slot = found.entry(id).or_insert((modified, is_data));
                if is_data && !slot.1 {
                    *slot = (modified, true);
                }
            }
            Ok(found.into_iter().map(|(id, (t, _))| (id, t)).collect())
        })
        .await
    }
}

/// Remove a file; a file already gone is fine.
fn remove_if_present(path: &Path) -> io::Result<()> {
    not_found_is_none(std::fs::remove_file(path)).map(drop)
}

/// Collect a stream into memory (tests and small objects only).
pub async fn collect(mut s: ByteStream) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(chunk) = s.next().await {
        v.extend_from_slice(&chunk?);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn backend() -> (tempfile::TempDir, FsBackend) {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path(), true).unwrap();
        (dir, b)
    }

    #[tokio::test]
    async fn key_pages_walk_every_key_once() {
        let (_d, b) = backend().await;
        let mut want: Vec<String> = (0..25).map(|i| format!("k/{i:02}")).collect();
        for k in &want {
            b.put(&format!("p/{k}"), Bytes::new()).await.unwrap();
        }
        want.sort();
        // A page size that divides the count, one that does not, and 1.
        for page in [5, 10, 1, 100] {
            let mut pages = crate::backend::KeyPages::new(&b, "p/", page);
            let mut got = Vec::new();
            while let Some(keys) = pages.next().await.unwrap() {
                assert!(keys.len() <= page);
                got.extend(keys);
            }
            assert_eq!(got, want, "page size {page}");
        }
    }

    #[tokio::test]
    async fn put_get_delete() {
        let (_d, b) = backend().await;
        assert_eq!(b.head("a/b").await.unwrap(), None);
        b.put("a/b", Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(b.head("a/b").await.unwrap().unwrap().size, 5);
        assert_eq!(&b.read("a/b").await.unwrap().unwrap()[..], b"hello");
        let r = b.get("a/b", Some((1, 3))).await.unwrap().unwrap();
        assert_eq!(collect(r.body).await.unwrap(), b"el");
        // A key can be an object and a prefix at once.
        b.put("a/b/c", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(&b.read("a/b").await.unwrap().unwrap()[..], b"hello");
        assert!(b.delete("a/b").await.unwrap());
        assert!(!b.delete("a/b").await.unwrap());
        assert_eq!(b.head("a/b").await.unwrap(), None);
        assert!(b.put("../x", Bytes::new()).await.is_err());
        assert!(b.put("_uploads/x", Bytes::new()).await.is_err());
    }

    #[tokio::test]
    async fn list_is_lexical_and_paginates() {
        let (_d, b) = backend().await;
        let keys = [
            "a/b", "a/b/c", "a-b", "a/b.x", "a/b/c/d", "b", "a/a", "_x/y",
        ];
        for k in keys {
            b.put(&format!("cat/{k}"), Bytes::new()).await.unwrap();
        }
        let mut want: Vec<&str> = keys.to_vec();
        want.sort();
        assert_eq!(b.list("cat/", None, 100).await.unwrap(), want);
        // Page through with every possible start_after.
        for (i, k) in want.iter().enumerate() {
            assert_eq!(
                b.list("cat/", Some(k), 2).await.unwrap(),
                want[i + 1..].iter().take(2).copied().collect::<Vec<_>>()
            );
        }
        assert_eq!(
            b.list("cat/", Some("a/b/"), 100).await.unwrap(),
            ["a/b/c", "a/b/c/d", "b"]
        );
        assert!(b.list("nothing/", None, 10).await.unwrap().is_empty());
    }

    /// The index kept current by writes agrees with a fresh read of the disk,
    /// page by page, whatever the interleaving of puts, deletes and lists.
    /// A walk over more directories than the index keeps drops the oldest;
    /// listings stay right, also of a directory written to while dropped.
    #[tokio::test]
    async fn listing_index_is_bounded() {
        let (_dir, b) = backend().await;
        let dirs = INDEXED_DIRS + 100;
        for i in 0..dirs {
            b.put(&format!("many/{i:05}/x"), Bytes::new())
                .await
                .unwrap();
        }
        for i in 0..dirs {
            let got = b.list(&format!("many/{i:05}/"), None, 10).await.unwrap();
            assert_eq!(got, ["x"], "{i}");
        }
        let indexed = b.inner.index.dirs.len();
        assert!(indexed <= INDEXED_DIRS + 1, "{indexed} directories indexed");
        // The first directories were dropped: written to now, and listed.
        b.put("many/00000/y", Bytes::new()).await.unwrap();
        b.delete("many/00001/x").await.unwrap();
        assert_eq!(b.list("many/00000/", None, 10).await.unwrap(), ["x", "y"]);
        assert!(b.list("many/00001/", None, 10).await.unwrap().is_empty());
        // And one still indexed stays current too.
        let last = format!("many/{:05}/", dirs - 1);
        b.put(&format!("{last}z"), Bytes::new()).await.unwrap();
        assert_eq!(b.list(&last, None, 10).await.unwrap(), ["x", "z"]);
    }

    #[tokio::test]
    async fn listing_index_stays_current() {
        let (_dir, b) = backend().await;
        let parts = ["a", "a-b", "a.c", "b", "z"];
        let mut seed = 12345u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let depth = 1 + (next() % 3) as usize;
            let key: Vec<&str> = (0..depth)
                .map(|_| parts[(next() % parts.len() as u64) as usize])
                .collect();
            let key = format!("cat/{}", key.join("/"));
            if next() % 4 == 0 {
                b.delete(&key).await.unwrap();
            } else {
                b.put(&key, Bytes::new()).await.unwrap();
            }
            if round % 10 == 0 {
                // What a fresh backend would list (one cannot be opened
                // beside `b`: the directory is locked): a new index.
                let all = fresh_listing(&b.root().join("cat"));
                let mut sorted = all.clone();
                sorted.sort();
                assert_eq!(all, sorted, "fresh listing not in byte order");
                assert_eq!(
                    b.list("cat/", None, usize::MAX).await.unwrap(),
                    all,
                    "round {round}"
                );
                // Page through with a small page size from every start.
                for start in std::iter::once(None).chain(all.iter().map(|k| Some(k.as_str()))) {
                    let want: Vec<String> = all
                        .iter()
                        .filter(|k| start.is_none_or(|s| k.as_str() > s))
                        .take(3)
                        .cloned()
                        .collect();
                    assert_eq!(
                        b.list("cat/", start, 3).await.unwrap(),
                        want,
                        "round {round} after {start:?}"
                    );
                }
            }
        }
    }

    /// Every key under `dir`, read from the disk by an empty index.
    fn fresh_listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        walk(&DirIndex::default(), dir, "", None, usize::MAX, &mut out).unwrap();
        out
    }

    /// One backend at a time has a directory: another open fails, naming
    /// the directory and the holder's pid, and touches nothing (not even
    /// `.tmp`); once the holder and all its clones are gone the directory
    /// opens again, whatever `.lock` still holds.
    #[tokio::test]
    async fn one_backend_per_directory() {
        let (dir, b) = backend().await;
        let root = b.root().to_owned();
        b.put("a", Bytes::from_static(b"x")).await.unwrap();
        let in_flight = root.join(TMP_DIR).join("in-flight");
        std::fs::write(&in_flight, b"being written").unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(root.join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );

        let clone = b.clone();
        drop(b);
        let Err(e) = FsBackend::open(dir.path(), true) else {
            panic!("a second backend opened a directory in use");
        };
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        let busy = DirInUse::of(&e).expect("a DirInUse");
        assert_eq!((busy.dir.as_path(), busy.pid), (root.as_path(), Some(pid)));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("data directory {} is in use", root.display()))
                && msg.contains(&format!("(pid {pid})")),
            "{msg}"
        );
        assert!(in_flight.exists(), "the failed open cleared .tmp");

        // `.lock` is neither a key nor a listing entry.
        assert!(clone.head(LOCK_FILE).await.is_err());
        assert_eq!(fresh_listing(&root), ["a"]);

        // Released with the last clone; a stale `.lock` (here naming another
        // pid) does not block.
        drop(clone);
        std::fs::write(root.join(LOCK_FILE), b"4194304\n").unwrap();
        let b = FsBackend::open(dir.path(), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        assert!(!in_flight.exists(), "debris of .tmp is cleared at open");
        assert_eq!(&b.read("a").await.unwrap().unwrap()[..], b"x");
    }

    #[tokio::test]
    async fn import_file_verifies_then_links_copies_or_moves() {
        let (dir, b) = backend().await;
        let src_dir = dir.path().join("src");
        std::fs::create_dir_all(&src_dir).unwrap();
        let src = src_dir.join("data");
        std::fs::write(&src, b"content").unwrap();
        let d = oci::Digest::sha256_of(b"content");
        let wrong = oci::Digest::sha256_of(b"other");

        // A mismatch stores nothing and leaves the source alone.
        for mode in [ImportMode::Link, ImportMode::Copy, ImportMode::Move] {
            assert_eq!(
                b.import_file("blobs/w", &src, &wrong, mode).await.unwrap(),
                Imported::Mismatch { actual: d.clone() }
            );
        }
        assert_eq!(b.head("blobs/w").await.unwrap(), None);
        assert!(src.exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(),
            0
        );

        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            b.import_file("blobs/l", &src, &d, ImportMode::Link)
                .await
                .unwrap(),
            Imported::Linked { size: 7 }
        );
        assert_eq!(std::fs::metadata(&src).unwrap().nlink(), 2);
        assert_eq!(&b.read("blobs/l").await.unwrap().unwrap()[..], b"content");
        assert_eq!(
            b.import_file("blobs/l", &src, &d, ImportMode::Copy)
                .await
                .unwrap(),
            Imported::AlreadyPresent { size: 7 }
        );
        assert_eq!(
            b.import_file("blobs/c", &src, &d, ImportMode::Copy)
                .await
                .unwrap(),
            Imported::Copied { size: 7 }
        );
        assert_eq!(std::fs::metadata(&src).unwrap().nlink(), 2);
        assert_eq!(
            b.import_file("blobs/m", &src, &d, ImportMode::Move)
                .await
                .unwrap(),
            Imported::Moved { size: 7 }
        );
        assert!(!src.exists());
        assert_eq!(&b.read("blobs/m").await.unwrap().unwrap()[..], b"content");
        assert_eq!(b.list("blobs/", None, 10).await.unwrap(), ["c", "l", "m"]);
        assert!(
            b.import_file("blobs/x", &src, &d, ImportMode::Copy)
                .await
                .is_err()
        );
        assert!(
            b.import_file("../x", &src, &d, ImportMode::Copy)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn uploads() {
        let (_d, b) = backend().await;
        b.upload_create("u1", Some(Bytes::from_static(b"{}")))
            .await
            .unwrap();
        let mut w = b.upload_writer("u1", 0).await.unwrap();
        w.write(Bytes::from_static(b"abc")).await.unwrap();
        w.finish(None).await.unwrap();
        let mut w = b.upload_writer("u1", 3).await.unwrap();
        w.write(Bytes::from_static(b"def")).await.unwrap();
        w.finish(None).await.unwrap();
        b.upload_truncate("u1", 4).await.unwrap();
        let stat = b.upload_stat("u1").await.unwrap().unwrap();
        assert_eq!(&stat.meta[..], b"{}");
        assert_eq!(stat.data.size, 4);
        assert_eq!(b.upload_list().await.unwrap().len(), 1);
        b.upload_commit("u1", "blobs/x").await.unwrap();
        assert_eq!(&b.read("blobs/x").await.unwrap().unwrap()[..], b"abcd");
        assert!(b.upload_stat("u1").await.unwrap().is_none());
        assert!(b.upload_list().await.unwrap().is_empty());
        assert!(b.upload_stat("../etc").await.is_err());
        // Committing frees no inode but the meta's: nothing is left behind.
        let uploads = b.root().join(UPLOADS_DIR);
        assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0);
    }

    /// The session ids `upload_list` reports, sorted.
    async fn upload_ids(b: &FsBackend) -> Vec<String> {
        let mut ids: Vec<String> = b
            .upload_list()
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn private_uploads_and_debris() {
        let (_d, b) = backend().await;
        // Without meta: invisible to upload_stat, listed (so it can expire),
        // committed like any other.
        b.upload_create("p1", None).await.unwrap();
        let mut w = b.upload_writer("p1", 0).await.unwrap();
        w.write(Bytes::from_static(b"xyz")).await.unwrap();
        w.finish(None).await.unwrap();
        assert!(b.upload_stat("p1").await.unwrap().is_none());
        assert_eq!(upload_ids(&b).await, ["p1"]);
        b.upload_commit("p1", "blobs/y").await.unwrap();
        assert_eq!(&b.read("blobs/y").await.unwrap().unwrap()[..], b"xyz");

        // Committing content that already exists (same key, same size)
        // drops the upload's copy: the object file stays the same file.
        use std::os::unix::fs::MetadataExt as _;
        let y = b.root().join("blobs/y~");
        let ino = std::fs::metadata(&y).unwrap().ino();
        b.upload_create("p2", None).await.unwrap();
        let mut w = b.upload_writer("p2", 0).await.unwrap();
        w.write(Bytes::from_static(b"xyz")).await.unwrap();
        w.finish(None).await.unwrap();
        b.upload_commit("p2", "blobs/y").await.unwrap();
        assert_eq!(std::fs::metadata(&y).unwrap().ino(), ino);
        assert_eq!(&b.read("blobs/y").await.unwrap().unwrap()[..], b"xyz");
        assert_eq!(upload_ids(&b).await, Vec::<String>::new());

        // An existing object of another size is damaged (truncated): the
        // commit replaces it.
        std::fs::write(&y, b"x").unwrap();
        b.upload_create("p3", None).await.unwrap();
        let mut w = b.upload_writer("p3", 0).await.unwrap();
        w.write(Bytes::from_static(b"xyz")).await.unwrap();
        w.finish(None).await.unwrap();
        b.upload_commit("p3", "blobs/y").await.unwrap();
        assert_eq!(&b.read("blobs/y").await.unwrap().unwrap()[..], b"xyz");
        assert_eq!(upload_ids(&b).await, Vec::<String>::new());

        // A session directory of the earlier layout and a meta without data
        // are listed once each and removed by upload_delete.
        let uploads = b.root().join(UPLOADS_DIR);
        std::fs::create_dir_all(uploads.join("old1")).unwrap();
        std::fs::write(uploads.join("old1/data"), b"d").unwrap();
        std::fs::write(uploads.join("m1.meta"), b"{}").unwrap();
        let ids = upload_ids(&b).await;
        assert_eq!(ids, ["m1", "old1"]);
        for id in ids {
            b.upload_delete(&id).await.unwrap();
        }
        assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0);
        // Deleting what is gone is fine.
        b.upload_delete("m1").await.unwrap();
    }
}
