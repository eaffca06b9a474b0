//! The `/v2/` URL path grammar, spelled once for server and client.
//!
//! Repository names have any number of `/`-separated components, so paths are
//! parsed from the right: the last one or two segments say which endpoint it
//! is, everything before them is the name.

/// An endpoint, with its path parameters still as raw strings (validated by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: &'a str },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: &'a str, reference: &'a str },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: &'a str, digest: &'a str },
    /// `/v2/<name>/blobs/uploads/`
    Uploads { name: &'a str },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: &'a str, id: &'a str },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: &'a str, digest: &'a str },
}

/// Parse a request path (without query). `None` means no endpoint matches.
pub fn parse(path: &str) -> Option<Route<'_>> {
    if path == "/v2" || path == "/v2/" {
        return Some(Route::Base);
    }
    let rest = path.strip_prefix("/v2/")?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    let route = match (kind, last) {
        ("tags", "list") => Route::Tags { name },
        ("blobs", "uploads") => Route::Uploads { name },
        ("manifests", r) if !r.is_empty() => Route::Manifest { name, reference: r },
        ("blobs", d) if !d.is_empty() => Route::Blob { name, digest: d },
        ("referrers", d) if !d.is_empty() => Route::Referrers { name, digest: d },
        ("uploads", id) => {
            let name = name.strip_suffix("/blobs")?;
            if name.is_empty() {
                return None;
            }
            if id.is_empty() {
                Route::Uploads { name }
            } else {
                Route::Upload { name, id }
            }
        }
        _ => return None,
    };
    Some(route)
}

pub fn blob_path(name: &str, digest: &str) -> String {
    format!("/v2/{name}/blobs/{digest}")
}

pub fn manifest_path(name: &str, reference: &str) -> String {
    format!("/v2/{name}/manifests/{reference}")
}

pub fn uploads_path(name: &str) -> String {
    format!("/v2/{name}/blobs/uploads/")
}

pub fn upload_path(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

pub fn tags_path(name: &str) -> String {
    format!("/v2/{name}/tags/list")
}

pub fn referrers_path(name: &str, digest: &str) -> String {
    format!("/v2/{name}/referrers/{digest}")
}

pub const CATALOG_PATH: &str = "/v2/_catalog";

#[cfg(test)]
mod tests {
    use super::*;
    use Route::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Some(Base));
        assert_eq!(parse("/v2"), Some(Base));
        assert_eq!(parse("/v2/_catalog"), Some(Catalog));
        assert_eq!(parse("/v2/a/tags/list"), Some(Tags { name: "a" }));
        assert_eq!(
            parse("/v2/a/b/c/d/e/f/g/h/i/j/manifests/latest"),
            Some(Manifest {
                name: "a/b/c/d/e/f/g/h/i/j",
                reference: "latest"
            })
        );
        assert_eq!(
            parse("/v2/a/blobs/sha256:x"),
            Some(Blob {
                name: "a",
                digest: "sha256:x"
            })
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads/"),
            Some(Uploads { name: "a/b" })
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads"),
            Some(Uploads { name: "a/b" })
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/xyz"),
            Some(Upload {
                name: "a",
                id: "xyz"
            })
        );
        assert_eq!(
            parse("/v2/a/referrers/sha256:x"),
            Some(Referrers {
                name: "a",
                digest: "sha256:x"
            })
        );
    }

    #[test]
    fn names_that_look_like_keywords() {
        // A repository may itself be called "blobs", "manifests", "tags"...
        assert_eq!(
            parse("/v2/x/blobs/blobs/uploads/"),
            Some(Uploads { name: "x/blobs" })
        );
        assert_eq!(
            parse("/v2/x/blobs/uploads/manifests/v1"),
            Some(Manifest {
                name: "x/blobs/uploads",
                reference: "v1"
            })
        );
        assert_eq!(parse("/v2/tags/tags/list"), Some(Tags { name: "tags" }));
    }

    #[test]
    fn no_route() {
        for p in [
            "/",
            "/v1/",
            "/v2/manifests/latest",
            "/v2/a/manifests/",
            "/v2/a/blobs/",
            "/v2/blobs/uploads/",
            "/v2/a/unknown/x",
            "/v2/a",
            "/v2//manifests/x",
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
    }

    #[test]
    fn builders_round_trip() {
        assert_eq!(
            parse(&blob_path("a/b", "d")),
            Some(Blob {
                name: "a/b",
                digest: "d"
            })
        );
        assert_eq!(
            parse(&upload_path("a", "i")),
            Some(Upload { name: "a", id: "i" })
        );
        assert_eq!(parse(&uploads_path("a")), Some(Uploads { name: "a" }));
        assert_eq!(
            parse(&manifest_path("a", "t")),
            Some(Manifest {
                name: "a",
                reference: "t"
            })
        );
        assert_eq!(parse(&tags_path("a")), Some(Tags { name: "a" }));
        assert_eq!(
            parse(&referrers_path("a", "d")),
            Some(Referrers {
                name: "a",
                digest: "d"
            })
        );
    }
}
