//! Wharf's registry client.
//!
//! - [`reference`]: `HOST[:PORT]/REPO[:TAG|@DIGEST]` references and hosts.
//! - [`auth`]: `WWW-Authenticate` challenges and the credential files docker
//!   and podman use.
//! - [`registry`]: the distribution protocol over HTTP ([`Client`]).
//! - [`pack`]: deterministic tar layers from files and directories.
//! - [`extract`]: safe extraction of untrusted tar layers.
//! - [`cache`]: the local content-addressable blob store.
//! - [`package`]: files as OCI artifacts (push, pull, attach).
//! - [`copy`]: `wharf cp` between registries, OCI layouts ([`layout`]) and
//!   `docker save` tarballs ([`docker_archive`]).
//!
//! Errors are typed ([`Error`]), each of a [`error::Kind`] that maps to an
//! exit code.

pub mod auth;
pub mod cache;
pub mod copy;
pub mod docker_archive;
pub mod error;
pub mod extract;
pub mod layout;
pub mod pack;
pub mod package;
pub mod reference;
pub mod registry;

pub use error::{Error, Kind, Result};
pub use reference::{Host, ImageRef};
pub use registry::{Client, ClientOptions, NoProgress, Progress};
