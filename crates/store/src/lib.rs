//! Wharf storage.
//!
//! - [`backend`]: a small object-store interface (get with range, head, atomic
//!   put, streaming upload, lexical prefix listing with start-after, delete)
//!   and its filesystem implementation [`fs::FsBackend`].
//! - [`registry`]: the OCI data model (blobs, manifests, tags, referrers,
//!   upload sessions) mapped onto backend keys. It knows nothing of HTTP.
//! - [`events`]: the registry's domain events and where it sends them.
//! - [`quota`]: byte limits per repository pattern and the usage records
//!   that keep them cheap to check.
//! - [`source`]: read-only images served in place from OCI layouts,
//!   oci-archives and docker-save tarballs (`wharf serve --from`).

pub mod backend;
mod content_cache;
pub mod copy;
pub mod events;
pub mod fs;
pub mod gc;
mod hashing;
pub mod keys;
pub mod migrate;
mod name_set;
pub mod quota;
pub mod registry;
pub mod s3;
pub mod source;

pub use backend::{Backend, ByteStream, ObjectMeta, UploadStat};
pub use registry::{Error, ImmutableTags, Registry, RegistryConfig, SessionEnd, SessionObserver};
