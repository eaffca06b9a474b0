//! Docker-style image references: `HOST[:PORT]/REPO[:TAG][@DIGEST]`.
//!
//! The first component is the registry host when it contains `.` or `:` or is
//! `localhost`; otherwise the reference is on Docker Hub (`docker.io`, with
//! `library/` added to one-component names), as with `docker pull`.

use crate::error::{Error, Result};
use oci::{Digest, Reference, RepoName, Tag};
use std::fmt;

/// Docker Hub's name in references and in credential files.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A registry host and the scheme to talk to it with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Host {
    /// `host[:port]` as written in references (`docker.io` for Docker Hub).
    pub name: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
}

impl Host {
    /// Parse `HOST[:PORT]`, optionally with an `http://` (forces plain HTTP)
    /// or `https://` prefix. `insecure` forces plain HTTP too; loopback hosts
    /// (`localhost`, `127.*`, `::1`) always use plain HTTP.
    pub fn parse(s: &str, insecure: bool) -> Result<Host> {
        let (s, scheme) = if let Some(r) = s.strip_prefix("http://") {
            (r, Some(true))
        } else if let Some(r) = s.strip_prefix("https://") {
            (r, Some(false))
        } else {
            (s, None)
        };
        let s = s.trim_end_matches('/');
        if s.is_empty() || s.contains('/') || s.contains('@') || s.chars().any(char::is_whitespace)
        {
            return Err(Error::Usage(format!(
                "invalid registry host {s:?}: expected HOST[:PORT], e.g. 127.0.0.1:5000"
            )));
        }
        let name = if s == "index.docker.io" || s == DOCKER_HUB_API {
            DOCKER_HUB.to_owned()
        } else {
            s.to_owned()
        };
        let insecure = match scheme {
            Some(plain) => plain || insecure,
            None => insecure || is_loopback(&name),
        };
        Ok(Host { name, insecure })
    }

    /// `http://host[:port]` or `https://host[:port]`.
    pub fn base_url(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        let host = if self.name == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.name
        };
        format!("{scheme}://{host}")
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Is `host[:port]` a loopback name (served over plain HTTP by default)?
pub fn is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub host: Host,
    pub repo: RepoName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parse `HOST[:PORT]/REPO[:TAG][@DIGEST]`.
    pub fn parse(s: &str, insecure: bool) -> Result<ImageRef> {
        let usage = |why: &str| {
            Error::Usage(format!(
                "invalid reference {s:?}: {why} (expected HOST[:PORT]/REPO[:TAG|@DIGEST], e.g. 127.0.0.1:5000/team/app:1.0)"
            ))
        };
        let (rest, digest) = match s.rsplit_once('@') {
            Some((rest, d)) => {
                let d: Digest = d.parse().map_err(|e| usage(&format!("{e}")))?;
                (rest, Some(d))
            }
            None => (s, None),
        };
        // An explicit scheme (`https://127.0.0.1:5443/repo`) goes with the host.
        let scheme_len = ["https://", "http://"]
            .iter()
            .find(|p| rest.starts_with(**p))
            .map_or(0, |p| p.len());
        let (host_part, path) = match rest[scheme_len..].split_once('/') {
            Some((first, path))
                if scheme_len > 0
                    || first.contains('.')
                    || first.contains(':')
                    || first == "localhost" =>
            {
                (&rest[..scheme_len + first.len()], path)
            }
            _ => (DOCKER_HUB, rest),
        };
        let host = Host::parse(host_part, insecure)?;
        let (name, tag) = match path.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (path, None),
        };
        let name = if host.name == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_owned()
        };
        // Name and tag errors say what is wrong, with an example, already.
        let invalid =
            |e: oci::name::NameError| Error::Usage(format!("invalid reference {s:?}: {e}"));
        let repo = RepoName::parse(&name, oci::name::DEFAULT_MAX_NAME_LEN).map_err(invalid)?;
        let tag = tag.map(|t| Tag::parse(t).map_err(invalid)).transpose()?;
        Ok(ImageRef {
            host,
            repo,
            tag,
            digest,
        })
    }

    /// The manifest reference: the digest if given, else the tag, else `latest`.
    pub fn reference(&self) -> Reference {
        if let Some(d) = &self.digest {
            Reference::Digest(d.clone())
        } else if let Some(t) = &self.tag {
            Reference::Tag(t.clone())
        } else {
            Reference::Tag(Tag::parse("latest").unwrap_or_else(|_| unreachable!()))
        }
    }

    /// The tag, or `latest`; ignores a digest (pushes go to a tag).
    pub fn reference_tag_or_latest(&self) -> Reference {
        match &self.tag {
            Some(t) => Reference::Tag(t.clone()),
            None => Reference::Tag(Tag::parse("latest").unwrap_or_else(|_| unreachable!())),
        }
    }

    /// The same repository with another reference.
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            tag: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host.name, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn host_port_repo_tag() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1.0", false).unwrap();
        assert_eq!(r.host.name, "127.0.0.1:5000");
        assert!(r.host.insecure);
        assert_eq!(r.host.base_url(), "http://127.0.0.1:5000");
        let tls = ImageRef::parse("https://127.0.0.1:5443/team/app:1.0", false).unwrap();
        assert!(!tls.host.insecure);
        assert_eq!(tls.host.base_url(), "https://127.0.0.1:5443");
        assert_eq!(tls.tag.as_ref().map(|t| t.as_str()), Some("1.0"));
        assert_eq!(r.repo.as_str(), "team/app");
        assert_eq!(r.tag.as_ref().map(|t| t.as_str()), Some("1.0"));
        assert_eq!(r.reference().to_string(), "1.0");
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:1.0");
    }

    #[test]
    fn digest_and_default_tag() {
        let r = ImageRef::parse(&format!("localhost:5000/a/b/c@{D}"), false).unwrap();
        assert_eq!(r.reference().to_string(), D);
        assert!(r.tag.is_none());
        let r = ImageRef::parse(&format!("localhost/a:t@{D}"), false).unwrap();
        assert_eq!(r.reference().to_string(), D, "digest wins over tag");
        assert_eq!(r.tag.as_ref().map(|t| t.as_str()), Some("t"));
        let r = ImageRef::parse("localhost:5000/a", false).unwrap();
        assert_eq!(r.reference().to_string(), "latest");
    }

    #[test]
    fn schemes() {
        let r = ImageRef::parse("ghcr.io/o/p:v", false).unwrap();
        assert_eq!(r.host.base_url(), "https://ghcr.io");
        let r = ImageRef::parse("ghcr.io/o/p:v", true).unwrap();
        assert_eq!(r.host.base_url(), "http://ghcr.io");
        let r = ImageRef::parse("[::1]:5000/x", false).unwrap();
        assert!(r.host.insecure);
        let r = ImageRef::parse("registry.local:443/x", false).unwrap();
        assert!(!r.host.insecure);
        assert!(Host::parse("http://example.com", false).unwrap().insecure);
        assert!(!Host::parse("https://localhost", false).unwrap().insecure);
        assert!(Host::parse("localhost:1234", false).unwrap().insecure);
    }

    #[test]
    fn docker_hub() {
        let r = ImageRef::parse("alpine", false).unwrap();
        assert_eq!(r.host.name, DOCKER_HUB);
        assert_eq!(r.repo.as_str(), "library/alpine");
        assert_eq!(r.host.base_url(), "https://registry-1.docker.io");
        let r = ImageRef::parse("bitnami/redis:7", false).unwrap();
        assert_eq!(r.repo.as_str(), "bitnami/redis");
        let r = ImageRef::parse("docker.io/alpine:3", false).unwrap();
        assert_eq!(r.repo.as_str(), "library/alpine");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "localhost:5000/",
            "localhost:5000/UPPER",
            "localhost:5000/a:bad/tag",
            "localhost:5000/a@sha256:nope",
            "localhost:5000/a:-x",
            "localhost:5000/a//b",
        ] {
            let e = ImageRef::parse(bad, false).unwrap_err();
            assert_eq!(e.kind(), crate::error::Kind::Usage, "{bad}");
        }
        assert!(Host::parse("a/b", false).is_err());
        assert!(Host::parse("", false).is_err());
    }
}
