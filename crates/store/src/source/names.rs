//! The repository and tag each image of a source is served as: the names
//! the source gives (`RepoTags`, `org.opencontainers.image.ref.name`), or
//! `--as REPO[:TAG]`.

use super::SourceError;
use super::scan::{self, Format, ScannedImage};
use oci::{Digest, RepoName, Tag};
use std::collections::BTreeSet;
use std::path::Path;

/// `[HOST/]REPO[:TAG]` → repository (host dropped, as docker names it) and tag.
pub fn split_name(s: &str) -> (String, Option<String>) {
    let s = s.split('@').next().unwrap_or(s);
    let (name, tag) = match s.rfind(':') {
        Some(i) if !s[i..].contains('/') => (&s[..i], Some(s[i + 1..].to_owned())),
        _ => (s, None),
    };
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        parts.remove(0);
    }
    (parts.join("/"), tag)
}

/// The repository and tag of each image of a source.
pub fn assign(
    path: &Path,
    format: Format,
    images: &[ScannedImage],
    name: Option<&str>,
    max_name_len: usize,
) -> Result<Vec<(RepoName, Tag, usize)>, SourceError> {
    let invalid = |why: String| SourceError::Invalid {
        file: path.to_owned(),
        why,
    };
    let repo = |s: &str| {
        RepoName::parse(s, max_name_len)
            .map_err(|e| invalid(format!("bad repository name {s:?}: {e}")))
    };
    let tag = |s: &str| Tag::parse(s).map_err(|e| invalid(format!("bad tag {s:?}: {e}")));
    if images.is_empty() {
        return Err(invalid(format!("the {} holds no image", format.as_str())));
    }
    let (as_repo, as_tag) = match name {
        Some(n) => {
            let (r, t) = split_name(n);
            (Some(repo(&r)?), t.as_deref().map(tag).transpose()?)
        }
        None => (None, None),
    };
    if let (Some(r), Some(t)) = (&as_repo, &as_tag) {
        let distinct: BTreeSet<&Digest> = images.iter().map(|i| &i.root).collect();
        if distinct.len() != 1 {
            return Err(invalid(format!(
                "holds {} images: --as {}:{} names one image (use --as REPO to keep their tags)",
                distinct.len(),
                r.as_str(),
                t.as_str()
            )));
        }
        return Ok(vec![(r.clone(), t.clone(), 0)]);
    }
    let mut out = Vec::new();
    for (i, img) in images.iter().enumerate() {
        if img.names.is_empty() {
            return Err(invalid(format!(
                "image {} has no name (no RepoTags or {} annotation): give it one with --as REPO:TAG",
                img.root,
                scan::REF_NAME
            )));
        }
        for n in &img.names {
            let (r, t) = if n.contains(['/', ':']) {
                let (r, t) = split_name(n);
                (r, t.unwrap_or_else(|| "latest".into()))
            } else {
                // A bare tag (an OCI layout's ref.name): the repository comes from --as.
                match &as_repo {
                    Some(r) => (r.as_str().to_owned(), n.clone()),
                    None => {
                        return Err(invalid(format!(
                            "image {} is tagged {n:?} without a repository: give one with --as REPO",
                            img.root
                        )));
                    }
                }
            };
            let r = match &as_repo {
                Some(a) => a.clone(),
                None => repo(&r)?,
            };
            out.push((r, tag(&t)?, i));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(split_name("alpine:3"), ("alpine".into(), Some("3".into())));
        assert_eq!(
            split_name("docker.io/library/alpine:3"),
            ("library/alpine".into(), Some("3".into()))
        );
        assert_eq!(split_name("localhost:5000/a/b"), ("a/b".into(), None));
        assert_eq!(split_name("a/b"), ("a/b".into(), None));
    }
}
