//! How the registry model maps onto backend keys (see docs/architecture.md).
//!
//! Repository name components never start with `_`, so `_`-prefixed keys
//! cannot collide with names.

use oci::{Digest, RepoName, Tag};

/// Global, deduplicated content: layers, configs and manifest bodies.
pub fn blob(d: &Digest) -> String {
    format!("blobs/{}/{}/{}", d.algorithm(), &d.hex()[..2], d.hex())
}

/// Link: this blob belongs to this repository.
pub fn repo_blob(name: &RepoName, d: &Digest) -> String {
    format!("repositories/{name}/_blobs/{}/{}", d.algorithm(), d.hex())
}

/// Link: this manifest revision is in this repository (holds its media type).
pub fn repo_manifest(name: &RepoName, d: &Digest) -> String {
    format!(
        "repositories/{name}/_manifests/{}/{}",
        d.algorithm(),
        d.hex()
    )
}

pub fn tags_prefix(name: &RepoName) -> String {
    format!("repositories/{name}/_tags/")
}

pub fn tag(name: &RepoName, tag: &Tag) -> String {
    format!("repositories/{name}/_tags/{tag}")
}

pub fn referrers_prefix(name: &RepoName, subject: &Digest) -> String {
    format!(
        "repositories/{name}/_referrers/{}/{}/",
        subject.algorithm(),
        subject.hex()
    )
}

pub fn referrer(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}{}-{}",
        referrers_prefix(name, subject),
        referrer.algorithm(),
        referrer.hex()
    )
}

pub const CATALOG_PREFIX: &str = "_catalog/";

/// Catalog index entry: one per repository, so listing needs no tree walk.
pub fn catalog(name: &RepoName) -> String {
    format!("{CATALOG_PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::valid_key;

    #[test]
    fn all_keys_are_valid_backend_keys() {
        let n = RepoName::parse("a/b-c/d.e/f__g", 255).unwrap();
        let t = Tag::parse("V1.0_rc-1").unwrap();
        let d = Digest::sha256_of(b"x");
        let d2 = Digest::of(oci::Algorithm::Sha512, b"y");
        for k in [
            blob(&d),
            blob(&d2),
            repo_blob(&n, &d),
            repo_manifest(&n, &d2),
            tag(&n, &t),
            referrer(&n, &d, &d2),
            catalog(&n),
        ] {
            assert!(valid_key(&k), "{k}");
        }
    }
}
