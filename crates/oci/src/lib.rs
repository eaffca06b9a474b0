//! The OCI distribution and image specifications as Rust types.
//!
//! Pure: no I/O. Shared by the server and (later) the client so both speak one
//! grammar: digests, repository names, tags, references, media types, manifest
//! documents, the error-code table and the `/v2/` URL path grammar, and the byte-range headers.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;
pub mod path;
pub mod pattern;
pub mod range;

pub use digest::{Algorithm, Digest, DigestStateError, Digester};
pub use error::{ErrorCode, RegistryError};
pub use name::{Reference, RepoName, Tag};
pub use range::{ByteRange, ChunkRange};
