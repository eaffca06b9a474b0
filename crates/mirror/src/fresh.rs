//! When a cached tag was last checked against its upstream: a small object
//! per tag under `_mirror/`, in the store and not in memory, so that every
//! replica over a bucket sees the same time.
//!
//! ```text
//! _mirror/tags/<repository>/_/<tag>    {"digest","checkedMs","upstream"}
//! ```
//!
//! (No repository name component starts with `_`, so `/_/` ends the name.)
//! The records are not content: garbage collection does not walk them, a
//! record whose tag is gone is ignored, and losing one costs one HEAD.

use oci::{RepoName, Tag};
use serde::{Deserialize, Serialize};
use std::io;
use std::time::{Duration, SystemTime};
use store::Backend;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    /// The digest the upstream's tag had when checked.
    pub digest: String,
    /// When, in milliseconds since the Unix epoch (the clock of the
    /// replica that checked).
    pub checked_ms: u64,
    /// The upstream's name: a record made for another upstream (the prefix
    /// was moved) is not trusted.
    pub upstream: String,
}

impl TagRecord {
    /// How long ago it was checked (zero if the clock went back).
    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.checked_ms))
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn key(name: &RepoName, tag: &Tag) -> String {
    format!("_mirror/tags/{name}/_/{tag}")
}

pub async fn read(b: &dyn Backend, name: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
    let Some(raw) = b.read(&key(name, tag)).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&raw) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            // Treated as never checked: the next pull revalidates.
            tracing::warn!(target: "wharf::mirror", repo = %name, tag = %tag, error = %e, "ignoring a corrupt tag record");
            Ok(None)
        }
    }
}

pub async fn write(
    b: &dyn Backend,
    name: &RepoName,
    tag: &Tag,
    digest: &oci::Digest,
    upstream: &str,
) -> io::Result<()> {
    let rec = TagRecord {
        digest: digest.to_string(),
        checked_ms: now_ms(),
        upstream: upstream.to_owned(),
    };
    let body = serde_json::to_vec(&rec).map_err(io::Error::other)?;
    b.put(&key(name, tag), body.into()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct() {
        let n = |s: &str| RepoName::parse(s, 255).unwrap();
        let t = |s: &str| Tag::parse(s).unwrap();
        let a = key(&n("a/b"), &t("c"));
        let b = key(&n("a"), &t("b"));
        assert_eq!(a, "_mirror/tags/a/b/_/c");
        assert_ne!(a, b);
        for k in [a, b, key(&n("x.y/z-w"), &t("V1.0_rc-1"))] {
            assert!(store::backend::valid_key(&k), "{k}");
        }
    }
}
