//! Repository names, tags and manifest references.

use crate::digest::Digest;
use regex::Regex;
use std::fmt;
use std::sync::LazyLock;

/// Default maximum length of a repository name (see the spec's implementers' note).
pub const DEFAULT_MAX_NAME_LEN: usize = 255;
/// Maximum tag length fixed by the spec.
pub const MAX_TAG_LEN: usize = 128;

static NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("static regex")
});
static TAG_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("static regex"));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "repository name must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*"
    )]
    Invalid,
    #[error("repository name is longer than {0} characters")]
    TooLong(usize),
    #[error("tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag,
}

/// A validated repository name: lowercase components separated by `/`, any depth.
///
/// No component can start with `_` or `.`, or be `..`, so a name can be used
/// as a storage key prefix without escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str, max_len: usize) -> Result<RepoName, NameError> {
        if s.len() > max_len {
            return Err(NameError::TooLong(max_len));
        }
        if !NAME_RE.is_match(s) {
            return Err(NameError::Invalid);
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag, NameError> {
        if TAG_RE.is_match(s) {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::InvalidTag)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<tag-or-digest>` in a manifest URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest, anything else a tag.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            s.parse()
                .map(Reference::Digest)
                .map_err(ReferenceError::Digest)
        } else {
            Tag::parse(s)
                .map(Reference::Tag)
                .map_err(ReferenceError::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Tag(NameError),
    #[error(transparent)]
    Digest(crate::digest::DigestError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/ubuntu",
            "a/b/c/d/e/f/g/h/i/j",
            "foo.bar/baz_qux/a__b/c---d",
            "0/1",
        ] {
            assert!(RepoName::parse(ok, 255).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a//b", "/a", "a/", "-a", "a-", "_a", "a/_b", ".a", "a/..", "..", "a/./b",
            "a___b", "a%2fb", "a b", "a\\b",
        ] {
            assert!(RepoName::parse(bad, 255).is_err(), "{bad}");
        }
        let long = "a".repeat(256);
        assert_eq!(RepoName::parse(&long, 255), Err(NameError::TooLong(255)));
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", "a+b", &"t".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            Ok(Reference::Digest(_))
        ));
        assert!(Reference::parse("sha256:nope").is_err());
    }
}
