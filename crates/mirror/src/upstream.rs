//! One upstream registry: its client (auth challenges and tokens are the
//! client crate's), the requests the cache makes, and what their failures
//! mean to a client of the cache.

use crate::config::{Endpoint, UpstreamSpec};
use client::registry::{FetchedManifest, Scope};
use client::{Client, ClientOptions};
use oci::manifest::Descriptor;
use oci::{Digest, ErrorCode, Reference, RegistryError, RepoName};
use reqwest::StatusCode;
use reqwest::header;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A registry that failed the way a fallback is for (unreachable, timed
/// out, 429, 5xx) is tried after the others for this long.
pub const DOWN_FOR: Duration = Duration::from_secs(30);

/// An upstream and its clients: one for its `url`, one per fallback.
pub struct Upstream {
    pub spec: UpstreamSpec,
    /// The primary first, then the fallbacks in their order.
    registries: Vec<Registry>,
    /// What this process received from it and how its requests failed
    /// (the server's `/metrics` reads them).
    pub stats: Stats,
}

/// Counts of one upstream's traffic (all its registries, fallbacks
/// included) since the process started. Plain atomics: the server reads
/// them when it is scraped.
#[derive(Debug, Default)]
pub struct Stats {
    /// Body bytes received: manifests and blobs (also of transfers that
    /// broke off).
    pub bytes: AtomicU64,
    /// Requests that failed because a registry was unreachable, timed
    /// out, or answered 429 or 5xx.
    pub unavailable: AtomicU64,
    /// Requests a registry refused (401, 403, or its token service did).
    pub denied: AtomicU64,
    /// Malformed answers, content not matching its digest, unexpected
    /// statuses.
    pub bad: AtomicU64,
    /// Blob transfers cut off mid-way.
    pub broken: AtomicU64,
}

impl Stats {
    pub fn received(&self, n: usize) {
        self.bytes
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Count a failed request (a 404 is an answer, not a failure; the
    /// attempts of a request tried at fallbacks are counted each).
    pub fn failed(&self, f: &Failure) {
        let c = match f {
            Failure::NotFound(_) | Failure::Tried { .. } => return,
            Failure::Denied(_) => &self.denied,
            Failure::Unavailable { .. } => &self.unavailable,
            Failure::Bad { .. } => &self.bad,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One registry of an upstream and its client.
struct Registry {
    url: String,
    primary: bool,
    client: Client,
    /// Until when it is tried last (it failed transiently): health, not
    /// content, so a process may keep it to itself.
    down_until: Mutex<Option<Instant>>,
}

impl Registry {
    fn is_down(&self, now: Instant) -> bool {
        self.lock().is_some_and(|t| t > now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.down_until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one registry of an upstream answered, when none could serve a
/// request.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub url: String,
    pub primary: bool,
    pub failure: Failure,
}

/// Why an upstream request did not give what was asked.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The upstream says it does not have it (404).
    NotFound(String),
    /// The upstream refused access (401, 403; or the token service did).
    Denied(String),
    /// Unreachable, timed out, 429 or 5xx: the cases where a cached tag
    /// is served stale.
    Unavailable {
        status: Option<u16>,
        timed_out: bool,
        message: String,
    },
    /// Anything else: a malformed answer, content that does not match its
    /// digest, an unexpected status.
    Bad {
        status: Option<u16>,
        message: String,
    },
    /// The upstream has fallbacks and none served the request: what each
    /// registry tried answered, the primary (whose failure was transient)
    /// among them.
    Tried {
        attempts: Vec<Attempt>,
        message: String,
    },
}

impl Failure {
    /// Does stale-if-error apply? (With fallbacks: the primary failed
    /// transiently and no fallback could serve.)
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::Unavailable { .. } => true,
            Failure::Tried { .. } => self.primary().is_some_and(Failure::is_transient),
            _ => false,
        }
    }

    /// The primary's failure among several.
    fn primary(&self) -> Option<&Failure> {
        match self {
            Failure::Tried { attempts, .. } => attempts
                .iter()
                .find(|a| a.primary)
                .or(attempts.first())
                .map(|a| &a.failure),
            other => Some(other),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Unavailable { status, .. } | Failure::Bad { status, .. } => *status,
            Failure::NotFound(_) => Some(404),
            Failure::Denied(_) => None,
            Failure::Tried { .. } => self
                .primary()
                .filter(|p| !matches!(p, Failure::Tried { .. }))
                .and_then(Failure::status),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::NotFound(m)
            | Failure::Denied(m)
            | Failure::Unavailable { message: m, .. }
            | Failure::Bad { message: m, .. }
            | Failure::Tried { message: m, .. } => m,
        }
    }

    /// What a registry did, for a message: `answered 503`, `timed out`,
    /// `failed (...)`.
    fn said(&self) -> String {
        match self {
            Failure::Unavailable {
                timed_out: true, ..
            } => "timed out".to_owned(),
            _ => match self.status() {
                Some(s) => format!("answered {s}"),
                None => format!("failed ({})", self.message()),
            },
        }
    }

    /// Several registries' failures as one.
    fn tried(attempts: Vec<Attempt>) -> Failure {
        let message = attempts
            .iter()
            .map(|a| format!("{} {}", a.url, a.failure.said()))
            .collect::<Vec<_>>()
            .join("; ");
        Failure::Tried { attempts, message }
    }

    /// Classify an error of the client crate.
    fn from_client(e: client::Error) -> Failure {
        let message = e.to_string();
        match &e {
            client::Error::Registry { status, .. } => from_status(*status, message),
            client::Error::DigestMismatch { .. } => Failure::Bad {
                status: None,
                message,
            },
            _ => match e.kind() {
                client::Kind::NotFound => Failure::NotFound(message),
                client::Kind::Auth => Failure::Denied(message),
                client::Kind::Network => Failure::Unavailable {
                    status: None,
                    timed_out: message.contains("timed out"),
                    message,
                },
                _ => Failure::Bad {
                    status: None,
                    message,
                },
            },
        }
    }

    /// The OCI error a client of the cache gets for this failure, naming
    /// the upstream and its status; `unknown` is the code for "not there"
    /// (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`), `what` the thing asked for.
    pub fn to_error(&self, up: &UpstreamSpec, unknown: ErrorCode, what: &str) -> RegistryError {
        if let Failure::Tried { attempts, message } = self {
            // Classified as the primary's failure; the message names every
            // registry tried and what it answered.
            let base = match self.primary() {
                Some(p) if !matches!(p, Failure::Tried { .. }) => p.to_error(up, unknown, what),
                _ => RegistryError::new(ErrorCode::Unknown, String::new()).with_status(502),
            };
            let tried: Vec<_> = attempts
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "url": a.url,
                        "fallback": !a.primary,
                        "status": a.failure.status(),
                        "error": a.failure.message(),
                    })
                })
                .collect();
            return RegistryError::new(
                base.code,
                format!(
                    "upstream {} and its fallbacks could not serve {what}, and nothing usable is cached: {message}",
                    up.name
                ),
            )
            .with_status(base.status)
            .with_detail(serde_json::json!({
                "upstream": up.name,
                "url": up.url,
                "status": self.status(),
                "error": message,
                "tried": tried,
            }));
        }
        let status = self.status();
        let said = match status {
            Some(s) => format!("answered {s}"),
            None => "failed".to_owned(),
        };
        let (code, http, message) = match self {
            Failure::NotFound(_) => (
                unknown,
                404,
                format!(
                    "{what} is not in upstream {} ({}): it answered 404",
                    up.name, up.url
                ),
            ),
            Failure::Denied(_) => (
                ErrorCode::Denied,
                403,
                format!(
                    "upstream {} ({}) refused access to {what}: the repository does not exist there, or the credentials configured for the upstream may not read it",
                    up.name, up.url
                ),
            ),
            Failure::Unavailable {
                timed_out: true, ..
            } => (
                ErrorCode::Unknown,
                504,
                format!(
                    "upstream {} ({}) did not answer in time for {what}, and nothing usable is cached",
                    up.name, up.url
                ),
            ),
            Failure::Unavailable {
                status: Some(429), ..
            } => (
                ErrorCode::TooManyRequests,
                503,
                format!(
                    "upstream {} ({}) answered 429 Too Many Requests for {what}, and nothing usable is cached; try again later",
                    up.name, up.url
                ),
            ),
            Failure::Unavailable { .. } => (
                ErrorCode::Unknown,
                502,
                format!(
                    "upstream {} ({}) {said} for {what}, and nothing usable is cached",
                    up.name, up.url
                ),
            ),
            Failure::Bad { .. } | Failure::Tried { .. } => (
                ErrorCode::Unknown,
                502,
                format!(
                    "upstream {} ({}) {said} for {what} with an answer the cache cannot use",
                    up.name, up.url
                ),
            ),
        };
        RegistryError::new(code, message)
            .with_status(http)
            .with_detail(serde_json::json!({
                "upstream": up.name,
                "url": up.url,
                "status": status,
                "error": self.message(),
            }))
    }
}

fn from_status(status: u16, message: String) -> Failure {
    match status {
        404 => Failure::NotFound(message),
        401 | 403 => Failure::Denied(message),
        429 | 500..=599 => Failure::Unavailable {
            status: Some(status),
            timed_out: false,
            message,
        },
        _ => Failure::Bad {
            status: Some(status),
            message,
        },
    }
}

fn timed_out(what: &str, after: Duration) -> Failure {
    Failure::Unavailable {
        status: None,
        timed_out: true,
        message: format!("{what}: no answer within {} s", after.as_secs()),
    }
}

/// A blob GET that the upstream answered with its bytes.
pub struct BlobResponse {
    /// `Content-Length`, if it sent one.
    pub size: Option<u64>,
    pub response: reqwest::Response,
}

impl Upstream {
    pub fn new(spec: UpstreamSpec) -> Result<Upstream, String> {
        let primary = Endpoint {
            url: spec.url.clone(),
            host: spec.host.clone(),
            credentials: spec.credentials.clone(),
            ca_cert: spec.ca_cert.clone(),
        };
        let registries = std::iter::once((true, &primary))
            .chain(spec.fallbacks.iter().map(|f| (false, f)))
            .map(|(is_primary, e)| {
                let opts = ClientOptions {
                    credentials: e.credentials.clone(),
                    user_agent: concat!("wharf-mirror/", env!("CARGO_PKG_VERSION")).into(),
                    connect_timeout: spec.timeout,
                    read_timeout: spec.timeout,
                    ca_cert: e.ca_cert.clone(),
                    ..ClientOptions::default()
                };
                let client = Client::new(e.host.clone(), opts)
                    .map_err(|err| format!("upstream {} ({}): {err}", spec.name, e.url))?;
                Ok(Registry {
                    url: e.url.clone(),
                    primary: is_primary,
                    client,
                    down_until: Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Upstream {
            spec,
            registries,
            stats: Stats::default(),
        })
    }

    /// Run `f` within the upstream's timeout.
    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        // The whole exchange (token flow, redirects) gets a few read
        // timeouts' worth; each read is bounded by the client itself.
        let limit = self.spec.timeout.saturating_mul(3);
        let r = tokio::time::timeout(limit, f)
            .await
            .unwrap_or_else(|_| Err(timed_out(what, limit)));
        if let Err(f) = &r {
            self.stats.failed(f);
        }
        r
    }

    /// Ask the upstream's registries in turn until one answers: the
    /// primary, then the fallbacks in order (one that failed transiently
    /// less than [`DOWN_FOR`] ago goes after the others). A fallback is
    /// asked when the one before it is unreachable, times out, answers 429
    /// or 5xx, or (a fallback) does not have it or refuses; the primary's
    /// own 404 or refusal is the answer. With no fallbacks this is one
    /// request.
    async fn each<'a, T, F, Fut>(&'a self, what: &str, f: F) -> Result<T, Failure>
    where
        F: Fn(&'a Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let now = Instant::now();
        let mut order: Vec<&Registry> = self.registries.iter().collect();
        if order.len() > 1 {
            // Stable: those up first, each group in config order.
            order.sort_by_key(|r| r.is_down(now));
        }
        let mut attempts = Vec::new();
        for r in order {
            match self.timed(what, f(&r.client)).await {
                Ok(v) => {
                    if !attempts.is_empty() {
                        tracing::warn!(target: "wharf::mirror", upstream = %self.spec.name, url = %r.url, what, failed = %Failure::tried(attempts).message(), "served by a fallback");
                    }
                    *r.lock() = None;
                    return Ok(v);
                }
                Err(failure) => {
                    if failure.is_transient() {
                        *r.lock() = Some(Instant::now() + DOWN_FOR);
                    }
                    if self.registries.len() == 1 || (r.primary && !failure.is_transient()) {
                        return Err(failure);
                    }
                    attempts.push(Attempt {
                        url: r.url.clone(),
                        primary: r.primary,
                        failure,
                    });
                }
            }
        }
        Err(Failure::tried(attempts))
    }

    /// HEAD a manifest by tag: its descriptor, `None` when the upstream
    /// does not have it. (A HEAD is not a pull on Docker Hub.)
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Descriptor>, Failure> {
        let what = format!("HEAD manifest {repo}:{reference}");
        let r = self
            .each(&what, |c| async move {
                match c.head_manifest(repo, reference).await {
                    // A fallback's "not here" is no answer: ask the next.
                    Ok(None) => Err(Failure::NotFound(format!(
                        "{repo}:{reference}: no such manifest"
                    ))),
                    other => other.map_err(Failure::from_client),
                }
            })
            .await;
        match r {
            Ok(d) => Ok(d),
            Err(Failure::NotFound(_)) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// GET a manifest by digest, verified against it.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<FetchedManifest, Failure> {
        let what = format!("GET manifest {repo}@{digest}");
        let reference = Reference::Digest(digest.clone());
        let m = self
            .each(&what, |c| {
                let reference = &reference;
                async move {
                    c.get_manifest(repo, reference)
                        .await
                        .map_err(Failure::from_client)
                }
            })
            .await?;
        self.stats.received(m.bytes.len());
        Ok(m)
    }

    async fn send_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        head: bool,
    ) -> Result<reqwest::Response, Failure> {
        let path = oci::path::blob_path(repo.as_str(), &digest.to_string());
        let what = format!("{} blob {repo}@{digest}", if head { "HEAD" } else { "GET" },);
        let path = &path;
        let what_ref = &what;
        self.each(&what, |c| async move {
            let base = c.host().base_url();
            let url = url::Url::parse(&base)
                .and_then(|u| u.join(path))
                .map_err(|e| Failure::Bad {
                    status: None,
                    message: format!("bad URL for {path}: {e}"),
                })?;
            let what = format!("{what_ref} at {base}");
            let resp = c
                .send(&what, &[Scope::Pull(repo.clone())], &|h| {
                    Ok(if head {
                        h.head(url.clone())
                    } else {
                        h.get(url.clone())
                    })
                })
                .await
                .map_err(Failure::from_client)?;
            let status = resp.status();
            if status == StatusCode::OK {
                return Ok(resp);
            }
            Err(from_status(
                status.as_u16(),
                format!("{what}: the upstream answered {status}"),
            ))
        })
        .await
    }

    /// HEAD a blob: its size, `None` when the upstream does not have it.
    pub async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, Failure> {
        match self.send_blob(repo, digest, true).await {
            Ok(resp) => match content_length(&resp) {
                Some(n) => Ok(Some(n)),
                None => Err(Failure::Bad {
                    status: Some(200),
                    message: format!("HEAD blob {repo}@{digest}: no Content-Length"),
                }),
            },
            Err(Failure::NotFound(_)) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// GET a blob: the response whose body the caller streams.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<BlobResponse, Failure> {
        let response = self.send_blob(repo, digest, false).await?;
        Ok(BlobResponse {
            size: content_length(&response),
            response,
        })
    }
}

fn content_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_errors_naming_the_upstream() {
        let spec = crate::config::check(
            &[toml::from_str(
                "name = \"hub\"\nurl = \"https://registry-1.docker.io\"\nprefix = \"dockerhub\"\n",
            )
            .unwrap()],
            255,
        )
        .unwrap()
        .remove(0);
        let e = from_status(503, "x".into()).to_error(&spec, ErrorCode::ManifestUnknown, "a:b");
        assert_eq!((e.status, e.code), (502, ErrorCode::Unknown));
        assert!(
            e.message
                .contains("upstream hub (https://registry-1.docker.io) answered 503")
        );
        assert_eq!(e.detail.as_ref().unwrap()["status"], 503);
        let e = from_status(429, "x".into()).to_error(&spec, ErrorCode::ManifestUnknown, "a:b");
        assert_eq!((e.status, e.code), (503, ErrorCode::TooManyRequests));
        let e = from_status(404, "x".into()).to_error(&spec, ErrorCode::BlobUnknown, "a@d");
        assert_eq!((e.status, e.code), (404, ErrorCode::BlobUnknown));
        let e = from_status(401, "x".into()).to_error(&spec, ErrorCode::BlobUnknown, "a@d");
        assert_eq!((e.status, e.code), (403, ErrorCode::Denied));
        let e = timed_out("x", Duration::from_secs(3)).to_error(&spec, ErrorCode::BlobUnknown, "a");
        assert_eq!(e.status, 504);
        assert!(from_status(500, String::new()).is_transient());
        assert!(from_status(429, String::new()).is_transient());
        assert!(!from_status(404, String::new()).is_transient());
        assert!(!from_status(401, String::new()).is_transient());
        assert!(!from_status(400, String::new()).is_transient());
        let unreachable = Failure::from_client(client::Error::Unreachable {
            message: "cannot reach".into(),
            hint: String::new(),
        });
        assert!(unreachable.is_transient());

        // With fallbacks: classified as the primary's failure, every
        // registry named with its answer.
        let attempt = |url: &str, primary: bool, failure: Failure| Attempt {
            url: url.into(),
            primary,
            failure,
        };
        let t = Failure::tried(vec![
            attempt("https://b.example", false, from_status(404, "x".into())),
            attempt(
                "https://registry-1.docker.io",
                true,
                from_status(503, "y".into()),
            ),
            attempt(
                "https://c.example",
                false,
                timed_out("z", Duration::from_secs(3)),
            ),
        ]);
        assert!(t.is_transient());
        assert_eq!(t.status(), Some(503));
        let e = t.to_error(&spec, ErrorCode::ManifestUnknown, "library/a:b");
        assert_eq!((e.status, e.code), (502, ErrorCode::Unknown));
        assert!(
            e.message.contains("upstream hub and its fallbacks could not serve library/a:b")
                && e.message.contains(
                    "https://b.example answered 404; https://registry-1.docker.io answered 503; https://c.example timed out"
                ),
            "{}",
            e.message
        );
        let d = e.detail.unwrap();
        assert_eq!(d["tried"].as_array().unwrap().len(), 3);
        assert_eq!(d["tried"][1]["fallback"], false);
        assert_eq!(d["status"], 503);
        let t = Failure::tried(vec![
            attempt(
                "https://registry-1.docker.io",
                true,
                from_status(429, "y".into()),
            ),
            attempt("https://b.example", false, from_status(502, "x".into())),
        ]);
        let e = t.to_error(&spec, ErrorCode::BlobUnknown, "a@d");
        assert_eq!((e.status, e.code), (503, ErrorCode::TooManyRequests));
    }
}
