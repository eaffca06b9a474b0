//! Where the collector's markers live (all under `_gc/`, which no
//! repository name can reach).

use oci::{Digest, RepoName};

/// `_gc/active/<run>`: a collector run between marking and deleting.
pub const ACTIVE_PREFIX: &str = "_gc/active/";
/// `_gc/doomed/<alg>/<hex>/<run>`: content a run wants to delete.
pub const CONTENT_MARKERS: &str = "_gc/doomed/";
/// `_gc/doomed-links/<repo>/_/<alg>/<hex>/<run>`: a blob link (or a manifest link) a run wants to delete.
pub const LINK_MARKERS: &str = "_gc/doomed-links/";

/// `_gc/doomed-tags/<repo>/_/<tag>/<run>`: a tag a run's retention rule removes.
pub const TAG_MARKERS: &str = "_gc/doomed-tags/";

pub fn tag_markers(name: &RepoName, tag: &str) -> String {
    format!("{TAG_MARKERS}{name}/_/{tag}/")
}

/// `_gc/doomed-repos/<repo>/_/<run>`: the catalog entry of an empty
/// repository a run wants to delete.
pub const REPO_MARKERS: &str = "_gc/doomed-repos/";

pub fn repo_markers(name: &RepoName) -> String {
    format!("{REPO_MARKERS}{name}/_/")
}

pub fn content_markers(d: &Digest) -> String {
    format!("{CONTENT_MARKERS}{}/{}/", d.algorithm(), d.hex())
}

/// The `_` component ends the repository name (no name component starts
/// with `_`), so one repository's markers never list under another's.
pub fn link_markers(name: &RepoName, d: &Digest) -> String {
    format!("{LINK_MARKERS}{name}/_/{}/{}/", d.algorithm(), d.hex())
}
