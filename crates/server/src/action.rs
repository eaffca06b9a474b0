//! The typed router: method + path + query → [`Action`], before anything else
//! runs. Authentication and authorization (later) look only at the Action.

use oci::path::{self, Route};
use oci::{Algorithm, Digest, ErrorCode, Reference, RegistryError, RepoName, Tag};

/// What a request asks the registry to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `GET /v2/`
    Base,
    Catalog {
        n: Option<usize>,
        last: Option<String>,
    },
    ListTags {
        repo: RepoName,
        n: Option<usize>,
        last: Option<String>,
    },
    GetManifest {
        repo: RepoName,
        reference: Reference,
        head: bool,
    },
    PutManifest {
        repo: RepoName,
        reference: Reference,
        tags: Vec<Tag>,
    },
    DeleteManifest {
        repo: RepoName,
        reference: Reference,
    },
    GetBlob {
        repo: RepoName,
        digest: Digest,
        head: bool,
    },
    DeleteBlob {
        repo: RepoName,
        digest: Digest,
    },
    /// `POST /blobs/uploads/`: a session, a single-request upload (`digest`),
    /// or a cross-repository mount (`mount`, optional `from`).
    StartUpload {
        repo: RepoName,
        digest: Option<Digest>,
        algorithm: Algorithm,
        mount: Option<Digest>,
        from: Option<RepoName>,
    },
    PatchUpload {
        repo: RepoName,
        id: String,
    },
    PutUpload {
        repo: RepoName,
        id: String,
        digest: Digest,
    },
    GetUpload {
        repo: RepoName,
        id: String,
    },
    DeleteUpload {
        repo: RepoName,
        id: String,
    },
    Referrers {
        repo: RepoName,
        subject: Digest,
        artifact_type: Option<String>,
    },
}

/// Every [`Action::metric_name`].
pub const ACTION_NAMES: [&str; 18] = [
    "base",
    "catalog",
    "list_tags",
    "head_manifest",
    "get_manifest",
    "put_manifest",
    "delete_manifest",
    "head_blob",
    "get_blob",
    "delete_blob",
    "mount_blob",
    "post_blob",
    "start_blob_upload",
    "patch_blob_upload",
    "put_blob_upload",
    "get_blob_upload",
    "delete_blob_upload",
    "get_referrers",
];

/// The kind of access an action needs, for authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No repository involved (`/v2/`).
    None,
    Pull,
    Push,
    Delete,
    /// The registry-wide catalog.
    Catalog,
}

impl Action {
    /// The repository the action touches, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        use Action::*;
        match self {
            Base | Catalog { .. } => None,
            ListTags { repo, .. }
            | GetManifest { repo, .. }
            | PutManifest { repo, .. }
            | DeleteManifest { repo, .. }
            | GetBlob { repo, .. }
            | DeleteBlob { repo, .. }
            | StartUpload { repo, .. }
            | PatchUpload { repo, .. }
            | PutUpload { repo, .. }
            | GetUpload { repo, .. }
            | DeleteUpload { repo, .. }
            | Referrers { repo, .. } => Some(repo),
        }
    }

    pub fn access(&self) -> Access {
        use Action::*;
        match self {
            Base => Access::None,
            Catalog { .. } => Access::Catalog,
            ListTags { .. } | GetManifest { .. } | GetBlob { .. } | Referrers { .. } => {
                Access::Pull
            }
            PutManifest { .. }
            | StartUpload { .. }
            | PatchUpload { .. }
            | PutUpload { .. }
            | GetUpload { .. }
            | DeleteUpload { .. } => Access::Push,
            DeleteManifest { .. } | DeleteBlob { .. } => Access::Delete,
        }
    }

    /// The same action on another repository: how a request sent to
    /// Wharf as a mirror (`?ns=`, [`namespace`]) becomes one on the local
    /// repository that caches it, before authorization looks at it.
    pub fn with_repo(self, local: RepoName) -> Action {
        use Action::*;
        match self {
            a @ (Base | Catalog { .. }) => a,
            ListTags { n, last, .. } => ListTags {
                repo: local,
                n,
                last,
            },
            GetManifest {
                reference, head, ..
            } => GetManifest {
                repo: local,
                reference,
                head,
            },
            PutManifest {
                reference, tags, ..
            } => PutManifest {
                repo: local,
                reference,
                tags,
            },
            DeleteManifest { reference, .. } => DeleteManifest {
                repo: local,
                reference,
            },
            GetBlob { digest, head, .. } => GetBlob {
                repo: local,
                digest,
                head,
            },
            DeleteBlob { digest, .. } => DeleteBlob {
                repo: local,
                digest,
            },
            StartUpload {
                digest,
                algorithm,
                mount,
                from,
                ..
            } => StartUpload {
                repo: local,
                digest,
                algorithm,
                mount,
                from,
            },
            PatchUpload { id, .. } => PatchUpload { repo: local, id },
            PutUpload { id, digest, .. } => PutUpload {
                repo: local,
                id,
                digest,
            },
            GetUpload { id, .. } => GetUpload { repo: local, id },
            DeleteUpload { id, .. } => DeleteUpload { repo: local, id },
            Referrers {
                subject,
                artifact_type,
                ..
            } => Referrers {
                repo: local,
                subject,
                artifact_type,
            },
        }
    }

    /// The action's name in metrics (`wharf_http_requests_total{action=...}`):
    /// one of [`ACTION_NAMES`], never a repository, reference or path.
    pub fn metric_name(&self) -> &'static str {
        use Action::*;
        match self {
            Base => "base",
            Catalog { .. } => "catalog",
            ListTags { .. } => "list_tags",
            GetManifest { head: true, .. } => "head_manifest",
            GetManifest { .. } => "get_manifest",
            PutManifest { .. } => "put_manifest",
            DeleteManifest { .. } => "delete_manifest",
            GetBlob { head: true, .. } => "head_blob",
            GetBlob { .. } => "get_blob",
            DeleteBlob { .. } => "delete_blob",
            StartUpload { mount: Some(_), .. } => "mount_blob",
            StartUpload {
                digest: Some(_), ..
            } => "post_blob",
            StartUpload { .. } => "start_blob_upload",
            PatchUpload { .. } => "patch_blob_upload",
            PutUpload { .. } => "put_blob_upload",
            GetUpload { .. } => "get_blob_upload",
            DeleteUpload { .. } => "delete_blob_upload",
            Referrers { .. } => "get_referrers",
        }
    }

    /// A cross-repository mount also reads the source repository (a
    /// `from` without `mount` reads nothing).
    pub fn mount_source(&self) -> Option<&RepoName> {
        match self {
            Action::StartUpload {
                mount: Some(_),
                from,
                ..
            } => from.as_ref(),
            _ => None,
        }
    }
}

/// Limits the router enforces while parsing.
#[derive(Clone, Copy, Debug)]
pub struct RouterLimits {
    pub max_name_length: usize,
    pub max_tags_per_push: usize,
}

fn bad(code: ErrorCode, msg: impl Into<String>) -> RegistryError {
    RegistryError::new(code, msg)
}

fn not_found() -> RegistryError {
    bad(
        ErrorCode::Unsupported,
        "no such endpoint: see the OCI distribution spec for the /v2/ API",
    )
    .with_status(404)
}

fn method_not_allowed() -> RegistryError {
    bad(
        ErrorCode::Unsupported,
        "method not allowed on this endpoint",
    )
    .with_status(405)
}

fn name(raw: &str, limits: &RouterLimits) -> Result<RepoName, RegistryError> {
    RepoName::parse(raw, limits.max_name_length).map_err(|e| {
        bad(
            ErrorCode::NameInvalid,
            format!("invalid repository name: {e}"),
        )
        .with_detail(serde_json::json!({ "name": raw.chars().take(300).collect::<String>() }))
    })
}

fn parse_digest(raw: &str) -> Result<Digest, RegistryError> {
    raw.parse().map_err(|e| {
        bad(ErrorCode::DigestInvalid, format!("invalid digest: {e}"))
            .with_detail(serde_json::json!({ "digest": raw.chars().take(200).collect::<String>() }))
    })
}

fn reference(raw: &str) -> Result<Reference, RegistryError> {
    Reference::parse(raw).map_err(|e| match e {
        oci::name::ReferenceError::Digest(e) => {
            bad(ErrorCode::DigestInvalid, format!("invalid digest: {e}"))
        }
        oci::name::ReferenceError::Tag(e) => {
            bad(ErrorCode::ManifestInvalid, format!("invalid tag: {e}")).with_detail(
                serde_json::json!({ "tag": raw.chars().take(200).collect::<String>() }),
            )
        }
    })
}

/// The 404 for a read of a manifest by a malformed reference.
fn no_such_manifest(raw: &str) -> RegistryError {
    bad(
        ErrorCode::ManifestUnknown,
        "manifest unknown: the reference is neither a valid tag nor a valid digest",
    )
    .with_status(404)
    .with_detail(serde_json::json!({ "reference": raw.chars().take(200).collect::<String>() }))
}

/// Decoded query parameters, in order.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn n(&self) -> Result<Option<usize>, RegistryError> {
        self.get("n")
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    bad(ErrorCode::Unsupported, "n must be a non-negative integer").with_status(400)
                })
            })
            .transpose()
    }

    fn last(&self) -> Option<String> {
        self.get("last").map(str::to_owned)
    }
}

/// The registry host a request names in `?ns=`: containerd's convention
/// for a request sent to a mirror (`GET /v2/library/alpine/manifests/3.20?ns=docker.io`
/// is `docker.io/library/alpine:3.20`). The repository in the path is the
/// name at that registry; the server maps it onto the local repository that
/// caches it (`mirror::Mirror::local_for_ns`) before authorization.
pub fn namespace(query: Option<&str>) -> Option<String> {
    Query::parse(query).get("ns").map(str::to_owned)
}

/// Route a request. `head` requests route like `GET`.
pub fn route(
    method: &str,
    path: &str,
    query: Option<&str>,
    limits: &RouterLimits,
) -> Result<Action, RegistryError> {
    let route = path::parse(path).ok_or_else(not_found)?;
    let q = Query::parse(query);
    let head = method == "HEAD";
    let is_get = method == "GET" || head;
    let action = match route {
        Route::Base if is_get => Action::Base,
        Route::Catalog if is_get => Action::Catalog {
            n: q.n()?,
            last: q.last(),
        },
        Route::Tags { name: n } if is_get => Action::ListTags {
            repo: name(n, limits)?,
            n: q.n()?,
            last: q.last(),
        },
        Route::Manifest {
            name: n,
            reference: r,
        } => {
            let repo = name(n, limits)?;
            let reference = match reference(r) {
                Ok(reference) => reference,
                // Nothing can exist under a reference that is neither a
                // tag nor a digest: a read finds nothing (as Distribution
                // answers, and as clients probing for existence expect); a
                // push of one is invalid.
                Err(_) if is_get => return Err(no_such_manifest(r)),
                Err(e) => return Err(e),
            };
            match method {
                "GET" | "HEAD" => Action::GetManifest {
                    repo,
                    reference,
                    head,
                },
                "PUT" => {
                    let raw: Vec<&str> = q.all("tag").collect();
                    if raw.len() > limits.max_tags_per_push {
                        return Err(bad(
                            ErrorCode::Unsupported,
                            format!(
                                "at most {} tag parameters per request",
                                limits.max_tags_per_push
                            ),
                        )
                        .with_status(414));
                    }
                    let tags = raw
                        .into_iter()
                        .map(|t| {
                            Tag::parse(t).map_err(|e| {
                                bad(ErrorCode::ManifestInvalid, format!("invalid tag parameter: {e}"))
                                    .with_detail(serde_json::json!({ "tag": t.chars().take(200).collect::<String>() }))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Action::PutManifest {
                        repo,
                        reference,
                        tags,
                    }
                }
                "DELETE" => Action::DeleteManifest { repo, reference },
                _ => return Err(method_not_allowed()),
            }
        }
        Route::Blob { name: n, digest: d } => {
            let repo = name(n, limits)?;
            let digest = parse_digest(d)?;
            match method {
                "GET" | "HEAD" => Action::GetBlob { repo, digest, head },
                "DELETE" => Action::DeleteBlob { repo, digest },
                _ => return Err(method_not_allowed()),
            }
        }
        Route::Uploads { name: n } if method == "POST" => {
            let repo = name(n, limits)?;
            let digest = q.get("digest").map(parse_digest).transpose()?;
            let mount = q.get("mount").map(parse_digest).transpose()?;
            let from = q
                .get("from")
                .filter(|f| !f.is_empty())
                .map(|f| name(f, limits))
                .transpose()?;
            let algorithm = match q.get("digest-algorithm") {
                Some(a) => a.parse().map_err(|e: oci::digest::DigestError| {
                    bad(
                        ErrorCode::DigestInvalid,
                        format!("invalid digest-algorithm: {e}"),
                    )
                })?,
                None => digest.as_ref().map_or(Algorithm::Sha256, Digest::algorithm),
            };
            Action::StartUpload {
                repo,
                digest,
                algorithm,
                mount,
                from,
            }
        }
        Route::Upload { name: n, id } => {
            let repo = name(n, limits)?;
            let id = id.to_owned();
            match method {
                "PATCH" => Action::PatchUpload { repo, id },
                "PUT" => {
                    let d = q.get("digest").ok_or_else(|| {
                        bad(
                            ErrorCode::DigestInvalid,
                            "the closing PUT of an upload needs a digest query parameter",
                        )
                    })?;
                    Action::PutUpload {
                        repo,
                        id,
                        digest: parse_digest(d)?,
                    }
                }
                "GET" | "HEAD" => Action::GetUpload { repo, id },
                "DELETE" => Action::DeleteUpload { repo, id },
                _ => return Err(method_not_allowed()),
            }
        }
        Route::Referrers { name: n, digest: d } if is_get => Action::Referrers {
            repo: name(n, limits)?,
            subject: parse_digest(d)?,
            artifact_type: q
                .get("artifactType")
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
        },
        _ => return Err(method_not_allowed()),
    };
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: RouterLimits = RouterLimits {
        max_name_length: 255,
        max_tags_per_push: 3,
    };
    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn r(m: &str, p: &str, q: Option<&str>) -> Result<Action, RegistryError> {
        route(m, p, q, &L)
    }

    fn code(res: Result<Action, RegistryError>) -> (ErrorCode, u16) {
        let e = res.unwrap_err();
        (e.code, e.status)
    }

    #[test]
    fn every_endpoint() {
        assert_eq!(r("GET", "/v2/", None).unwrap(), Action::Base);
        assert!(matches!(
            r("GET", "/v2/_catalog", Some("n=2&last=a")).unwrap(),
            Action::Catalog { n: Some(2), .. }
        ));
        assert!(matches!(
            r("GET", "/v2/a/b/tags/list", None).unwrap(),
            Action::ListTags { .. }
        ));
        assert!(matches!(
            r("HEAD", "/v2/a/manifests/v1", None).unwrap(),
            Action::GetManifest { head: true, .. }
        ));
        let put = r("PUT", &format!("/v2/a/manifests/{D}"), Some("tag=x&tag=y")).unwrap();
        assert!(matches!(put, Action::PutManifest { ref tags, .. } if tags.len() == 2));
        assert_eq!(put.access(), Access::Push);
        assert!(matches!(
            r("DELETE", "/v2/a/manifests/v1", None).unwrap(),
            Action::DeleteManifest { .. }
        ));
        assert!(matches!(
            r("GET", &format!("/v2/a/blobs/{D}"), None).unwrap(),
            Action::GetBlob { head: false, .. }
        ));
        assert_eq!(
            r("DELETE", &format!("/v2/a/blobs/{D}"), None)
                .unwrap()
                .access(),
            Access::Delete
        );
        let mount = r(
            "POST",
            "/v2/a/blobs/uploads/",
            Some(&format!("mount={D}&from=b/c")),
        )
        .unwrap();
        assert_eq!(mount.mount_source().unwrap().as_str(), "b/c");
        assert!(matches!(
            r(
                "POST",
                "/v2/a/blobs/uploads/",
                Some("digest-algorithm=sha512")
            )
            .unwrap(),
            Action::StartUpload {
                algorithm: Algorithm::Sha512,
                ..
            }
        ));
        assert!(matches!(
            r("PATCH", "/v2/a/blobs/uploads/x", None).unwrap(),
            Action::PatchUpload { .. }
        ));
        assert!(matches!(
            r("PUT", "/v2/a/blobs/uploads/x", Some(&format!("digest={D}"))).unwrap(),
            Action::PutUpload { .. }
        ));
        assert!(matches!(
            r("GET", "/v2/a/blobs/uploads/x", None).unwrap(),
            Action::GetUpload { .. }
        ));
        assert!(matches!(
            r("DELETE", "/v2/a/blobs/uploads/x", None).unwrap(),
            Action::DeleteUpload { .. }
        ));
        let refs = r(
            "GET",
            &format!("/v2/a/referrers/{D}"),
            Some("artifactType=application%2Fx"),
        )
        .unwrap();
        assert!(
            matches!(refs, Action::Referrers { artifact_type: Some(ref a), .. } if a == "application/x")
        );
    }

    #[test]
    fn ns_is_read_and_every_action_moves_to_another_repository() {
        assert_eq!(
            namespace(Some("ns=docker.io")).as_deref(),
            Some("docker.io")
        );
        assert_eq!(
            namespace(Some("n=1&ns=registry.example%3A5000")).as_deref(),
            Some("registry.example:5000")
        );
        assert_eq!(namespace(Some("n=1")), None);
        assert_eq!(namespace(None), None);
        let local = RepoName::parse("dockerhub/library/alpine", 255).unwrap();
        let requests = [
            ("GET", "/v2/library/alpine/tags/list".to_owned(), None),
            ("HEAD", "/v2/library/alpine/manifests/3.20".to_owned(), None),
            ("PUT", "/v2/library/alpine/manifests/3.20".to_owned(), None),
            (
                "DELETE",
                "/v2/library/alpine/manifests/3.20".to_owned(),
                None,
            ),
            ("GET", format!("/v2/library/alpine/blobs/{D}"), None),
            ("DELETE", format!("/v2/library/alpine/blobs/{D}"), None),
            (
                "POST",
                "/v2/library/alpine/blobs/uploads/".to_owned(),
                Some(format!("mount={D}&from=b/c")),
            ),
            (
                "PATCH",
                "/v2/library/alpine/blobs/uploads/x".to_owned(),
                None,
            ),
            (
                "PUT",
                "/v2/library/alpine/blobs/uploads/x".to_owned(),
                Some(format!("digest={D}")),
            ),
            ("GET", "/v2/library/alpine/blobs/uploads/x".to_owned(), None),
            (
                "DELETE",
                "/v2/library/alpine/blobs/uploads/x".to_owned(),
                None,
            ),
            ("GET", format!("/v2/library/alpine/referrers/{D}"), None),
        ];
        for (m, p, q) in requests {
            let a = r(m, &p, q.as_deref()).unwrap();
            assert_eq!(a.repo().unwrap().as_str(), "library/alpine");
            let moved = a.clone().with_repo(local.clone());
            assert_eq!(moved.repo(), Some(&local), "{m} {p}");
            assert_eq!(moved.access(), a.access(), "{m} {p}");
            assert_eq!(moved.mount_source(), a.mount_source(), "{m} {p}");
            assert_eq!(moved.metric_name(), a.metric_name(), "{m} {p}");
            assert!(ACTION_NAMES.contains(&a.metric_name()), "{m} {p}");
            // Nothing but the repository changed.
            assert_eq!(moved.with_repo(a.repo().unwrap().clone()), a, "{m} {p}");
        }
        for a in [Action::Base, r("GET", "/v2/_catalog", None).unwrap()] {
            assert_eq!(a.clone().with_repo(local.clone()), a);
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            code(r("GET", "/v2/A/tags/list", None)),
            (ErrorCode::NameInvalid, 400)
        );
        assert_eq!(
            code(r("GET", "/v2/a/../b/tags/list", None)),
            (ErrorCode::NameInvalid, 400)
        );
        assert_eq!(
            code(r("GET", "/v2/a%2Fb/tags/list", None)),
            (ErrorCode::NameInvalid, 400)
        );
        assert_eq!(
            code(r("GET", "/v2/a/blobs/sha256:zz", None)),
            (ErrorCode::DigestInvalid, 400)
        );
        // a read by a malformed reference finds nothing; a push of one is invalid
        for m in ["GET", "HEAD"] {
            for bad in ["-x", "bad..ref!", "sha256:zz"] {
                assert_eq!(
                    code(r(m, &format!("/v2/a/manifests/{bad}"), None)),
                    (ErrorCode::ManifestUnknown, 404),
                    "{m} {bad}"
                );
            }
        }
        assert_eq!(
            code(r("PUT", "/v2/a/manifests/-x", None)),
            (ErrorCode::ManifestInvalid, 400)
        );
        assert_eq!(
            code(r("PUT", "/v2/a/manifests/sha256:zz", None)),
            (ErrorCode::DigestInvalid, 400)
        );
        // the name is still checked first
        assert_eq!(
            code(r("GET", "/v2/A/manifests/-x", None)),
            (ErrorCode::NameInvalid, 400)
        );
        assert_eq!(
            code(r(
                "PUT",
                "/v2/a/manifests/v1",
                Some("tag=a&tag=b&tag=c&tag=d")
            ))
            .1,
            414
        );
        assert_eq!(
            code(r("PUT", "/v2/a/manifests/v1", Some("tag=-bad"))),
            (ErrorCode::ManifestInvalid, 400)
        );
        assert_eq!(
            code(r("PUT", "/v2/a/blobs/uploads/x", None)),
            (ErrorCode::DigestInvalid, 400)
        );
        assert_eq!(
            code(r(
                "POST",
                "/v2/a/blobs/uploads/",
                Some("digest-algorithm=md5")
            )),
            (ErrorCode::DigestInvalid, 400)
        );
        assert_eq!(code(r("GET", "/v2/_catalog", Some("n=-1"))).1, 400);
        assert_eq!(
            code(r("POST", "/v2/a/tags/list", None)),
            (ErrorCode::Unsupported, 405)
        );
        assert_eq!(code(r("GET", "/nope", None)), (ErrorCode::Unsupported, 404));
        let long = format!("/v2/{}/tags/list", "a".repeat(256));
        assert_eq!(code(r("GET", &long, None)), (ErrorCode::NameInvalid, 400));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the method, path and query, routing answers without panicking,
        /// and every refusal is a 4xx.
        #[test]
        fn route_never_panics(
            method in prop::sample::select(vec!["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]),
            path in "(/v2/)?[a-zA-Z0-9_./:%-]{0,60}",
            query in prop::option::of("[a-z=&%0-9:._/-]{0,60}"),
        ) {
            let limits = RouterLimits { max_name_length: 255, max_tags_per_push: 10 };
            if let Err(e) = route(method, &path, query.as_deref(), &limits) {
                prop_assert!((400..500).contains(&e.status), "{} for {} {}", e.status, method, path);
            }
        }
    }
}
