//! Read-only image sources served in place (`wharf serve --from`): OCI
//! image layout directories, `oci-archive` tarballs and `docker save`
//! tarballs.
//!
//! - [`container`]: where the bytes are (layout files, tar member ranges).
//! - [`scan`]: reading a source's images; docker-save images become Docker
//!   schema 2 manifests over the tar members as they are.
//! - [`names`]: the repository and tag each image is served as.
//! - [`load`]: scanning a source off the async workers, with its cache.
//! - [`verify`]: hashing every served blob once, remembered in
//!   `<data_dir>/_sources/<sha256 of the source path>.json`.
//! - [`catalog`]: repositories → tags → manifests and blobs, and serving.

pub mod catalog;
pub mod container;
pub mod load;
pub mod names;
pub mod scan;
pub mod verify;

pub use catalog::{SourceSpec, Sources, merge_catalog};

use bytes::Bytes;
use oci::Digest;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A manifest served from a source (verified, in memory).
#[derive(Debug)]
pub struct ServedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// The identity of a file: if any of these change, its bytes are no longer
/// the ones that were verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileId {
    pub fn of(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt as _;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// Why a source cannot be served. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: {why}", file.display())]
    Invalid { file: PathBuf, why: String },
    #[error("{}: {err}", file.display())]
    Io { file: PathBuf, err: std::io::Error },
    #[error("{}: changed since it was verified", .0.display())]
    Changed(PathBuf),
    #[error("{0}")]
    Config(String),
}

impl SourceError {
    pub fn io(file: &Path, err: std::io::Error) -> SourceError {
        SourceError::Io {
            file: file.to_owned(),
            err,
        }
    }
}
