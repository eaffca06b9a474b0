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

/// Why a repository name or tag is refused, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "invalid repository name {name:?}: {why} (names are lower-case letters and digits, \
         separated by '.', '_', '__' or '-' within a component and '/' between \
         components, e.g. team/app)"
    )]
    Invalid { name: String, why: String },
    #[error("repository name is longer than {0} characters")]
    TooLong(usize),
    #[error(
        "invalid tag {tag:?}: {why} (a tag is 1 to 128 letters, digits, '_', '.' or '-', \
         not starting with '.' or '-', e.g. v1.0)"
    )]
    InvalidTag { tag: String, why: String },
}

/// What is wrong with a name `NAME_RE` refuses.
fn name_problem(s: &str) -> String {
    if s.is_empty() {
        return "it is empty".into();
    }
    if let Some(c) = s.chars().find(|c| c.is_ascii_uppercase()) {
        return format!(
            "upper-case letters are not allowed ({c:?}; use {:?})",
            s.to_ascii_lowercase()
        );
    }
    if let Some(c) = s.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/'))
    }) {
        return format!("{c:?} is not allowed");
    }
    for comp in s.split('/') {
        if comp.is_empty() {
            return "it has an empty component (a leading, trailing or doubled '/')".into();
        }
        let first = comp.chars().next().unwrap_or('a');
        let last = comp.chars().last().unwrap_or('a');
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return format!("the component {comp:?} must start and end with a letter or digit");
        }
        if comp.contains("___")
            || comp.contains("..")
            || comp.contains("._")
            || comp.contains("_.")
            || comp.contains(".-")
            || comp.contains("-.")
            || comp.contains("_-")
            || comp.contains("-_")
        {
            return format!("the component {comp:?} has separators next to each other");
        }
    }
    "it does not follow the naming rules".into()
}

/// What is wrong with a tag `TAG_RE` refuses.
fn tag_problem(s: &str) -> String {
    if s.is_empty() {
        return "it is empty".into();
    }
    if s.len() > MAX_TAG_LEN {
        return format!("it is longer than {MAX_TAG_LEN} characters");
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return format!("{c:?} is not allowed");
    }
    "it must not start with '.' or '-'".into()
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
            return Err(NameError::Invalid {
                name: s.to_owned(),
                why: name_problem(s),
            });
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
            Err(NameError::InvalidTag {
                tag: s.to_owned(),
                why: tag_problem(s),
            })
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
        let why = |s: &str| RepoName::parse(s, 255).unwrap_err().to_string();
        assert!(
            why("Team/app").contains("upper-case letters are not allowed ('T'; use \"team/app\")")
        );
        assert!(why("").contains("it is empty"));
        assert!(why("a//b").contains("empty component"));
        assert!(why("tool:").contains("':' is not allowed"));
        assert!(why("a/-b").contains("\"-b\" must start and end"));
        assert!(why("a._b").contains("separators next to each other"));
        assert!(why("a b").contains("' ' is not allowed"));
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", "a+b", &"t".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
        let why = |s: &str| Tag::parse(s).unwrap_err().to_string();
        assert!(why("").contains("invalid tag \"\": it is empty"));
        assert!(why(":1.0").contains("':' is not allowed"));
        assert!(why("-x").contains("must not start with '.' or '-'"));
        assert!(why(&"t".repeat(129)).contains("longer than 128"));
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
