//! The registry protocol: one [`Client`] per registry host.
//!
//! Every request goes through [`Client::send`], which adds the credentials
//! the registry asked for: after a `401`, it reads the `WWW-Authenticate`
//! challenge and either sends Basic credentials or runs the Docker token flow
//! (`GET realm?service=..&scope=repository:NAME:pull,push` with Basic
//! credentials if there are any), caching the token per scope, then retries
//! once. Request bodies are rebuilt for the retry (files are reopened), so
//! nothing is buffered in memory.

use crate::auth::{Challenge, Credentials, parse_challenge};
use crate::error::{Error, Result, parse_error_body};
use crate::reference::Host;
use futures_util::TryStreamExt as _;
use oci::manifest::Descriptor;
use oci::{Digest, Reference, RepoName, media};
use reqwest::header::{self, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::io::{Seek as _, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use url::Url;

/// Every manifest type the client understands, for `Accept`.
pub const MANIFEST_ACCEPT: &[&str] = &[
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
];

/// Largest manifest the client reads.
pub const MAX_MANIFEST_SIZE: usize = 16 << 20;

/// Blobs at least this big are pushed in chunks by default.
pub const DEFAULT_CHUNKED_THRESHOLD: u64 = 64 << 20;
/// Default size of a chunk (raised to the registry's `OCI-Chunk-Min-Length`).
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;

/// How many times a blob download is resumed after a broken connection.
const PULL_ATTEMPTS: u32 = 6;

/// Receives byte counts while a blob moves (a progress bar, or nothing).
pub trait Progress: Send + Sync {
    /// `n` more bytes moved.
    fn inc(&self, n: u64);
    /// The transfer restarted at `pos` bytes.
    fn set_position(&self, pos: u64);
    /// No bytes need to move: `why` (e.g. "already there", "mounted").
    fn skipped(&self, why: &str) {
        let _ = why;
    }
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn inc(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
}

/// What a token (or Basic credentials) is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// No particular resource (`/v2/`).
    None,
    Pull(RepoName),
    Push(RepoName),
    Delete(RepoName),
    Catalog,
}

impl Scope {
    fn token_scope(&self) -> Option<String> {
        match self {
            Scope::None => None,
            Scope::Pull(r) => Some(format!("repository:{r}:pull")),
            Scope::Push(r) => Some(format!("repository:{r}:pull,push")),
            Scope::Delete(r) => Some(format!("repository:{r}:delete")),
            Scope::Catalog => Some("registry:catalog:*".into()),
        }
    }
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by the space-joined scopes they were issued for.
    tokens: HashMap<String, String>,
}

/// Options for a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub credentials: Option<Credentials>,
    /// Blobs at least this big are pushed in chunks (`u64::MAX`: never).
    pub chunked_threshold: u64,
    /// Chunk size for chunked pushes (raised to `OCI-Chunk-Min-Length`).
    pub chunk_size: u64,
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// A read that stalls this long breaks the connection (pulls then resume).
    pub read_timeout: Duration,
    /// PEM CA certificates to trust besides the system's (a private CA).
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            credentials: None,
            chunked_threshold: DEFAULT_CHUNKED_THRESHOLD,
            chunk_size: DEFAULT_CHUNK_SIZE,
            user_agent: concat!("wharf/", env!("CARGO_PKG_VERSION")).into(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            ca_cert: None,
        }
    }
}

/// A manifest as the registry served it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl FetchedManifest {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: None,
        }
    }
}

/// The answer to a manifest push.
#[derive(Clone, Debug)]
pub struct PushedManifest {
    pub digest: Digest,
    /// The `OCI-Subject` header: the registry processed the `subject` field
    /// (it has the referrers API).
    pub oci_subject: Option<String>,
}

/// How a blob reached the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobPush {
    /// It was there already (HEAD said so).
    Exists,
    /// Cross-repository mount.
    Mounted,
    /// Uploaded in one PUT.
    Monolithic,
    /// Uploaded in this many PATCH chunks.
    Chunked(u64),
}

/// A client for one registry.
pub struct Client {
    http: reqwest::Client,
    host: Host,
    base: Url,
    opts: ClientOptions,
    auth: Mutex<AuthState>,
}

/// The certificates of a PEM file.
fn read_ca_certs(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::Usage(format!(
            "cannot read CA certificates {}: {e}",
            path.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| Error::Usage(format!("bad CA certificate file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Usage(format!(
            "no PEM certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

type Builder<'a> = dyn Fn(&reqwest::Client) -> Result<RequestBuilder> + Send + Sync + 'a;

impl Client {
    pub fn new(host: Host, opts: ClientOptions) -> Result<Client> {
        let base = Url::parse(&host.base_url())
            .map_err(|e| Error::Usage(format!("invalid registry host {}: {e}", host.name)))?;
        let mut b = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::limited(10));
        if crate::reference::is_loopback(&host.name) {
            b = b.no_proxy();
        }
        if let Some(path) = &opts.ca_cert {
            for cert in read_ca_certs(path)? {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b
            .build()
            .map_err(|e| Error::Other(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            host,
            base,
            opts,
            auth: Mutex::new(AuthState::default()),
        })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    fn url(&self, path_and_query: &str) -> Result<Url> {
        self.base
            .join(path_and_query)
            .map_err(|e| Error::Other(format!("bad URL {path_and_query:?}: {e}")))
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Authorization header to send for `scopes`, if known.
    fn auth_header(&self, scopes: &[Scope]) -> Option<String> {
        let st = self.lock_auth();
        match &st.challenge {
            Some(Challenge::Basic) => self.opts.credentials.as_ref().map(|c| c.basic_header()),
            Some(Challenge::Bearer { .. }) => st
                .tokens
                .get(&scope_key(scopes))
                .map(|t| format!("Bearer {t}")),
            None => None,
        }
    }

    /// Send a request built by `build`, answering an auth challenge once.
    pub async fn send(
        &self,
        what: &str,
        scopes: &[Scope],
        build: &Builder<'_>,
    ) -> Result<Response> {
        // A known Bearer challenge but no token for these scopes yet: get one
        // first, so bodies are not sent twice.
        let bearer_known = matches!(self.lock_auth().challenge, Some(Challenge::Bearer { .. }));
        if bearer_known && self.auth_header(scopes).is_none() {
            self.fetch_token(scopes, None).await?;
        }
        let resp = self.send_once(what, scopes, build).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge);
        let Some(challenge) = challenge else {
            return Ok(resp);
        };
        let had_auth = self.auth_header(scopes).is_some();
        match &challenge {
            Challenge::Basic => {
                if self.opts.credentials.is_none() || had_auth {
                    return Ok(resp);
                }
                self.lock_auth().challenge = Some(Challenge::Basic);
            }
            Challenge::Bearer { scope, .. } => {
                self.lock_auth().challenge = Some(challenge.clone());
                self.fetch_token(scopes, scope.as_deref()).await?;
            }
        }
        drop(resp);
        self.send_once(what, scopes, build).await
    }

    async fn send_once(
        &self,
        what: &str,
        scopes: &[Scope],
        build: &Builder<'_>,
    ) -> Result<Response> {
        let mut rb = build(&self.http)?;
        if let Some(h) = self.auth_header(scopes) {
            rb = rb.header(header::AUTHORIZATION, h);
        }
        rb.send().await.map_err(|e| self.net_error(what, e))
    }

    fn net_error(&self, what: &str, e: reqwest::Error) -> Error {
        let base = self.host.base_url();
        let mut message = format!("{what}: cannot reach {base}");
        if e.is_timeout() {
            message.push_str(" (timed out)");
        }
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        let mut detail = String::new();
        while let Some(s) = src {
            detail = s.to_string();
            src = s.source();
        }
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(&detail);
        }
        let host = &self.host;
        let lower = detail.to_ascii_lowercase();
        let hint = if lower.contains("connection refused") {
            if host.insecure {
                format!(
                    "nothing is listening at {host}: is the registry running there (e.g. `wharf serve --listen {host}`)? Check the address and port"
                )
            } else {
                format!(
                    "nothing is listening at {host} for HTTPS: check the address and port; if the registry serves plain HTTP, use --insecure"
                )
            }
        } else if lower.contains("dns")
            || lower.contains("resolve")
            || lower.contains("name or service not known")
        {
            format!(
                "the host name in \"{host}\" cannot be resolved: check the reference (HOST[:PORT]/REPO[:TAG])"
            )
        } else if !host.insecure && detail.contains("InvalidContentType") {
            message.push_str(" (is it a plain-HTTP registry?)");
            "the registry answered in plain HTTP: use --insecure (or an http:// host)".into()
        } else if lower.contains("certificate") || lower.contains("unknownissuer") {
            "the registry's certificate is not trusted here: pass its CA with --ca-cert FILE (or WHARF_CA_CERT)".into()
        } else if e.is_timeout() {
            format!("{host} did not answer in time: check the network and the registry's load")
        } else if host.insecure {
            format!("check that the registry at {host} is running and speaks plain HTTP")
        } else {
            "check the registry address and that it is running; for a plain-HTTP registry use --insecure".into()
        };
        Error::Unreachable { message, hint }
    }

    /// Docker token flow: get a token for `scopes` (plus the challenge's own scope).
    async fn fetch_token(&self, scopes: &[Scope], challenge_scope: Option<&str>) -> Result<()> {
        let (realm, service) = match &self.lock_auth().challenge {
            Some(Challenge::Bearer { realm, service, .. }) => (realm.clone(), service.clone()),
            _ => return Ok(()),
        };
        let mut url = Url::parse(&realm)
            .or_else(|_| self.base.join(&realm))
            .map_err(|e| Error::Auth(format!("bad token realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &service {
                q.append_pair("service", s);
            }
            let mut wanted: Vec<String> = scopes.iter().filter_map(Scope::token_scope).collect();
            if let Some(cs) = challenge_scope {
                for s in cs.split(' ').filter(|s| !s.is_empty()) {
                    if !wanted.iter().any(|w| w == s) {
                        wanted.push(s.to_owned());
                    }
                }
            }
            for s in &wanted {
                q.append_pair("scope", s);
            }
        }
        let mut rb = self.http.get(url.clone());
        if let Some(c) = &self.opts.credentials {
            rb = rb.header(header::AUTHORIZATION, c.basic_header());
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| self.net_error("token request", e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Auth(format!(
                "{}: the token service {realm} refused {} ({status})",
                self.host,
                if self.opts.credentials.is_some() {
                    "the credentials"
                } else {
                    "anonymous access"
                }
            )));
        }
        if !status.is_success() {
            // An outage (5xx, 429) keeps its status: a caller such as the
            // pull-through cache tells it apart from refused credentials.
            return Err(Error::Registry {
                what: format!("{}: token service {realm}", self.host),
                status: status.as_u16(),
                errors: Vec::new(),
            });
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.net_error("token request", e))?;
        let tok: Tok = serde_json::from_slice(&body)
            .map_err(|e| Error::Auth(format!("token service {realm}: bad answer: {e}")))?;
        let token = tok
            .token
            .or(tok.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Auth(format!("token service {realm} sent no token")))?;
        self.lock_auth().tokens.insert(scope_key(scopes), token);
        Ok(())
    }

    /// Turn a non-`ok` answer into a typed error.
    async fn check(&self, what: &str, resp: Response, ok: &[u16]) -> Result<Response> {
        let status = resp.status().as_u16();
        if ok.contains(&status) {
            return Ok(resp);
        }
        let body = read_capped(resp, 64 << 10).await.unwrap_or_default();
        let errors = parse_error_body(&body);
        let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
        let codes = if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes.join(", "))
        };
        Err(match status {
            404 => Error::NotFound(format!("{what}: not found{codes}")),
            401 => Error::Auth(format!(
                "{what}: authentication required{codes}{}",
                if self.opts.credentials.is_some() {
                    " (the stored credentials were refused)"
                } else {
                    ""
                }
            )),
            // The registry's reason, when it gives one, is what the user needs.
            403 if errors.iter().any(|e| !e.message.is_empty()) => Error::Denied {
                what: what.to_owned(),
                errors,
            },
            403 => Error::Auth(format!("{what}: access denied{codes}")),
            _ => Error::Registry {
                what: what.to_owned(),
                status,
                errors,
            },
        })
    }

    // ---------------------------------------------------------------- base

    /// `GET /v2/`: the registry answers and accepts our credentials.
    pub async fn ping(&self) -> Result<()> {
        let url = self.url("/v2/")?;
        let what = format!("ping {}", self.host);
        let resp = self
            .send(&what, &[Scope::None], &|h| Ok(h.get(url.clone())))
            .await?;
        self.check(&what, resp, &[200]).await?;
        Ok(())
    }

    // ----------------------------------------------------------- manifests

    fn accept() -> String {
        MANIFEST_ACCEPT.join(", ")
    }

    /// HEAD a manifest: its descriptor, or `None` if it does not exist.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Descriptor>> {
        let url = self.url(&oci::path::manifest_path(
            repo.as_str(),
            &reference.to_string(),
        ))?;
        let what = format!("manifest {}/{repo}:{reference}", self.host);
        let resp = self
            .send(&what, &[Scope::Pull(repo.clone())], &|h| {
                Ok(h.head(url.clone()).header(header::ACCEPT, Self::accept()))
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check(&what, resp, &[200]).await?;
        let media_type = content_type(resp.headers());
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok());
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        match (digest, size, media_type) {
            (Some(digest), Some(size), Some(media_type)) => Ok(Some(Descriptor {
                media_type,
                digest,
                size,
                urls: None,
                annotations: None,
                artifact_type: None,
                platform: None,
            })),
            // Not enough in the headers: fetch the manifest itself.
            _ => Ok(Some(self.get_manifest(repo, reference).await?.descriptor())),
        }
    }

    /// GET a manifest, verifying its digest when fetched by digest.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<FetchedManifest> {
        let url = self.url(&oci::path::manifest_path(
            repo.as_str(),
            &reference.to_string(),
        ))?;
        let what = format!("manifest {}/{repo}:{reference}", self.host);
        let what = what.replace(":sha", "@sha");
        let resp = self
            .send(&what, &[Scope::Pull(repo.clone())], &|h| {
                Ok(h.get(url.clone()).header(header::ACCEPT, Self::accept()))
            })
            .await?;
        let resp = match self.check(&what, resp, &[200]).await {
            Ok(r) => r,
            Err(e) if e.kind() == crate::error::Kind::NotFound => {
                return Err(match reference {
                    Reference::Tag(tag) => self.missing_tag(&what, repo, tag, e).await,
                    Reference::Digest(_) => e,
                });
            }
            Err(e) => return Err(e),
        };
        let header_type = content_type(resp.headers());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok());
        let bytes = read_capped(resp, MAX_MANIFEST_SIZE)
            .await
            .map_err(|e| match e {
                Error::Other(m) => Error::Other(format!("{what}: {m}")),
                e => e,
            })?;
        let alg = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => header_digest
                .as_ref()
                .map(|d| d.algorithm())
                .unwrap_or(oci::Algorithm::Sha256),
        };
        let digest = Digest::of(alg, &bytes);
        if let Reference::Digest(d) = reference
            && *d != digest
        {
            return Err(Error::DigestMismatch {
                what,
                expected: d.to_string(),
                actual: digest.to_string(),
            });
        }
        let media_type = match header_type.filter(|t| oci::manifest::is_manifest_media_type(t)) {
            Some(t) => t,
            None => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| media::OCI_MANIFEST.to_owned()),
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The error for a tag the registry does not have: whether the
    /// repository exists, and a few of the tags it has (one `tags/list`
    /// page). `e` (the 404) stands if the listing fails otherwise.
    async fn missing_tag(&self, what: &str, repo: &RepoName, tag: &oci::Tag, e: Error) -> Error {
        const SHOWN: usize = 5;
        let path = format!("{}?n={}", oci::path::tags_path(repo.as_str()), SHOWN);
        let Ok(url) = self.url(&path) else {
            return e;
        };
        let listed = async {
            let resp = self
                .send(what, &[Scope::Pull(repo.clone())], &|h| {
                    Ok(h.get(url.clone()))
                })
                .await?;
            let resp = self.check(what, resp, &[200]).await?;
            let more = next_link(&url, resp.headers()).is_some();
            let body = read_capped(resp, 1 << 20).await?;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let tags: Vec<String> = v
                .get("tags")
                .and_then(|t| t.as_array())
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            Ok::<_, Error>((tags, more))
        };
        let name = format!("{}/{repo}", self.host);
        match listed.await {
            Ok((tags, _)) if tags.is_empty() => Error::NotFound(format!(
                "{what}: not found (MANIFEST_UNKNOWN); the repository {name} exists but has no tags"
            )),
            Ok((tags, more)) => Error::NotFound(format!(
                "{what}: not found: the repository {name} has no tag \"{tag}\"; it has {}{}: list them with `wharf tags {name}`",
                tags.join(", "),
                if more || tags.len() > SHOWN {
                    ", ..."
                } else {
                    ""
                }
            )),
            Err(le) if le.kind() == crate::error::Kind::NotFound => Error::NotFound(format!(
                "{what}: not found: the repository {name} does not exist (or you may not read it)"
            )),
            Err(_) => e,
        }
    }

    /// PUT a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        media_type: &str,
        body: &[u8],
    ) -> Result<PushedManifest> {
        let url = self.url(&oci::path::manifest_path(
            repo.as_str(),
            &reference.to_string(),
        ))?;
        let what = format!("push manifest {}/{repo}:{reference}", self.host);
        let body = bytes::Bytes::copy_from_slice(body);
        let resp = self
            .send(&what, &[Scope::Push(repo.clone())], &|h| {
                Ok(h.put(url.clone())
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        let resp = self.check(&what, resp, &[200, 201, 202]).await?;
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok())
            .unwrap_or_else(|| Digest::sha256_of(&body));
        let oci_subject = resp
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(PushedManifest {
            digest,
            oci_subject,
        })
    }

    /// DELETE a manifest by digest, or a tag.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let url = self.url(&oci::path::manifest_path(
            repo.as_str(),
            &reference.to_string(),
        ))?;
        let what = format!("delete {}/{repo}:{reference}", self.host);
        let resp = self
            .send(&what, &[Scope::Delete(repo.clone())], &|h| {
                Ok(h.delete(url.clone()))
            })
            .await?;
        self.check(&what, resp, &[200, 202, 204]).await?;
        Ok(())
    }

    // --------------------------------------------------------------- blobs

    /// HEAD a blob: its size, or `None` if the repository does not have it.
    pub async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&oci::path::blob_path(repo.as_str(), &digest.to_string()))?;
        let what = format!("blob {}/{repo}@{digest}", self.host);
        let resp = self
            .send(&what, &[Scope::Pull(repo.clone())], &|h| {
                Ok(h.head(url.clone()))
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check(&what, resp, &[200]).await?;
        Ok(Some(
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        ))
    }

    /// GET a small blob (a config) into memory, verified.
    pub async fn get_blob_bytes(
        &self,
        repo: &RepoName,
        digest: &Digest,
        max: usize,
    ) -> Result<Vec<u8>> {
        let url = self.url(&oci::path::blob_path(repo.as_str(), &digest.to_string()))?;
        let what = format!("blob {}/{repo}@{digest}", self.host);
        let resp = self
            .send(&what, &[Scope::Pull(repo.clone())], &|h| {
                Ok(h.get(url.clone()))
            })
            .await?;
        let resp = self.check(&what, resp, &[200]).await?;
        let bytes = read_capped(resp, max).await?;
        let got = Digest::of(digest.algorithm(), &bytes);
        if got != *digest {
            return Err(Error::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Upload bytes held in memory (configs, small manifests' blobs).
    pub async fn push_blob_bytes(
        &self,
        repo: &RepoName,
        data: &[u8],
    ) -> Result<(Digest, BlobPush)> {
        let digest = Digest::sha256_of(data);
        if self.head_blob(repo, &digest).await?.is_some() {
            return Ok((digest, BlobPush::Exists));
        }
        let loc = self.start_upload(repo, None).await?;
        let loc = match loc {
            UploadStart::Mounted => return Ok((digest, BlobPush::Mounted)),
            UploadStart::Session { location, .. } => location,
        };
        let mut url = loc;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let what = format!("upload blob {}/{repo}@{digest}", self.host);
        let body = bytes::Bytes::copy_from_slice(data);
        let resp = self
            .send(&what, &[Scope::Push(repo.clone())], &|h| {
                Ok(h.put(url.clone())
                    .header(header::CONTENT_TYPE, media::OCTET_STREAM)
                    .body(body.clone()))
            })
            .await?;
        self.check(&what, resp, &[201, 204]).await?;
        Ok((digest, BlobPush::Monolithic))
    }

    /// Push a blob from a file (already digested) without reading it into
    /// memory. Skips blobs the repository has; tries a cross-repository
    /// mount from `mount_from` first; uses chunks for big blobs.
    pub async fn push_blob_file(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        path: &Path,
        mount_from: Option<&RepoName>,
        progress: Arc<dyn Progress>,
    ) -> Result<BlobPush> {
        if self.head_blob(repo, digest).await?.is_some() {
            progress.skipped("already there");
            return Ok(BlobPush::Exists);
        }
        let start = self
            .start_upload(repo, mount_from.map(|from| (digest, from)))
            .await?;
        let (location, min_chunk) = match start {
            UploadStart::Mounted => {
                progress.skipped("mounted");
                return Ok(BlobPush::Mounted);
            }
            UploadStart::Session {
                location,
                min_chunk,
            } => (location, min_chunk),
        };
        if size >= self.opts.chunked_threshold && size > 0 {
            let chunk = self.opts.chunk_size.max(min_chunk.unwrap_or(0)).max(1);
            let n = self
                .upload_chunks(repo, digest, size, path, location, chunk, progress)
                .await?;
            Ok(BlobPush::Chunked(n))
        } else {
            let mut url = location;
            url.query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            let what = format!("upload blob {}/{repo}@{digest}", self.host);
            let resp = self
                .send(&what, &[Scope::Push(repo.clone())], &|h| {
                    progress.set_position(0);
                    let body = file_body(path, 0, size, progress.clone())?;
                    Ok(h.put(url.clone())
                        .header(header::CONTENT_TYPE, media::OCTET_STREAM)
                        .header(header::CONTENT_LENGTH, size)
                        .body(body))
                })
                .await?;
            self.check(&what, resp, &[201, 204]).await?;
            Ok(BlobPush::Monolithic)
        }
    }

    /// Cross-repository mount of `digest` from `from` into `repo`. `true` if
    /// mounted; `false` if the registry would not (the upload session it
    /// opened instead is left to expire).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<bool> {
        Ok(matches!(
            self.start_upload(repo, Some((digest, from))).await?,
            UploadStart::Mounted
        ))
    }

    async fn start_upload(
        &self,
        repo: &RepoName,
        mount: Option<(&Digest, &RepoName)>,
    ) -> Result<UploadStart> {
        let mut url = self.url(&oci::path::uploads_path(repo.as_str()))?;
        let mut scopes = vec![Scope::Push(repo.clone())];
        if let Some((d, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &d.to_string())
                .append_pair("from", from.as_str());
            if from != repo {
                scopes.push(Scope::Pull(from.clone()));
            }
        }
        let what = format!("start upload to {}/{repo}", self.host);
        let resp = self
            .send(&what, &scopes, &|h| {
                Ok(h.post(url.clone()).header(header::CONTENT_LENGTH, 0))
            })
            .await?;
        let resp = self.check(&what, resp, &[201, 202]).await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(UploadStart::Mounted);
        }
        let location = self.location(&what, resp.headers())?;
        let min_chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        Ok(UploadStart::Session {
            location,
            min_chunk,
        })
    }

    fn location(&self, what: &str, headers: &HeaderMap) -> Result<Url> {
        let loc = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Other(format!("{what}: the registry sent no Location")))?;
        self.base
            .join(loc)
            .map_err(|e| Error::Other(format!("{what}: bad Location {loc:?}: {e}")))
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_chunks(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        path: &Path,
        mut location: Url,
        chunk: u64,
        progress: Arc<dyn Progress>,
    ) -> Result<u64> {
        let what = format!("upload blob {}/{repo}@{digest}", self.host);
        let mut offset = 0u64;
        let mut n = 0u64;
        while offset < size {
            let len = chunk.min(size - offset);
            let end = offset + len - 1;
            let url = location.clone();
            let resp = self
                .send(&what, &[Scope::Push(repo.clone())], &|h| {
                    progress.set_position(offset);
                    let body = file_body(path, offset, len, progress.clone())?;
                    Ok(h.patch(url.clone())
                        .header(header::CONTENT_TYPE, media::OCTET_STREAM)
                        .header(header::CONTENT_LENGTH, len)
                        .header(header::CONTENT_RANGE, format!("{offset}-{end}"))
                        .body(body))
                })
                .await?;
            let resp = self.check(&what, resp, &[202, 204]).await?;
            location = self.location(&what, resp.headers()).unwrap_or(location);
            offset += len;
            n += 1;
        }
        let mut url = location;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let resp = self
            .send(&what, &[Scope::Push(repo.clone())], &|h| {
                Ok(h.put(url.clone())
                    .header(header::CONTENT_TYPE, media::OCTET_STREAM)
                    .header(header::CONTENT_LENGTH, 0))
            })
            .await?;
        self.check(&what, resp, &[201, 204]).await?;
        Ok(n)
    }

    /// Download a blob into `dest` (created or truncated), verifying size
    /// and digest; a broken connection is resumed with `Range` from where it
    /// stopped. On error `dest` may hold partial data: the caller removes it.
    pub async fn pull_blob_to_file(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: Option<u64>,
        dest: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<u64> {
        let url = self.url(&oci::path::blob_path(repo.as_str(), &digest.to_string()))?;
        let what = format!("blob {}/{repo}@{digest}", self.host);
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| Error::io(dest, e))?;
        let mut hasher = digest.algorithm().digester();
        let mut have = 0u64;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let from = have;
            let resp = self
                .send(&what, &[Scope::Pull(repo.clone())], &|h| {
                    let mut rb = h.get(url.clone());
                    if from > 0 {
                        rb = rb.header(header::RANGE, format!("bytes={from}-"));
                    }
                    Ok(rb)
                })
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) if e.kind() == crate::error::Kind::Network && attempt < PULL_ATTEMPTS => {
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if size == Some(have) && have > 0 && resp.status() == StatusCode::RANGE_NOT_SATISFIABLE
            {
                break;
            }
            let resp = self.check(&what, resp, &[200, 206]).await?;
            let resumed = resp.status() == StatusCode::PARTIAL_CONTENT
                && content_range_start(resp.headers()) == Some(from);
            if !resumed && have > 0 {
                // The registry sent everything again: start over.
                file.set_len(0).await.map_err(|e| Error::io(dest, e))?;
                file.seek(SeekFrom::Start(0))
                    .await
                    .map_err(|e| Error::io(dest, e))?;
                hasher = digest.algorithm().digester();
                have = 0;
            }
            progress.set_position(have);
            let mut stream = resp.bytes_stream();
            let broke = loop {
                match stream.try_next().await {
                    Ok(Some(chunk)) => {
                        if let Some(s) = size
                            && have + chunk.len() as u64 > s
                        {
                            return Err(Error::Other(format!(
                                "{what}: the registry sent more than the expected {s} bytes"
                            )));
                        }
                        file.write_all(&chunk)
                            .await
                            .map_err(|e| Error::io(dest, e))?;
                        hasher.update(&chunk);
                        have += chunk.len() as u64;
                        progress.inc(chunk.len() as u64);
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            let complete = match (broke, size) {
                (None, Some(s)) => have == s,
                (None, None) => true,
                (Some(_), _) => false,
            };
            if complete {
                break;
            }
            if attempt >= PULL_ATTEMPTS {
                return Err(Error::Connection(format!(
                    "{what}: the connection broke {attempt} times; got {have} of {} bytes",
                    size.map_or_else(|| "?".to_owned(), |s| s.to_string())
                )));
            }
            backoff(attempt).await;
        }
        file.flush().await.map_err(|e| Error::io(dest, e))?;
        file.sync_all().await.map_err(|e| Error::io(dest, e))?;
        let got = hasher.finish();
        if got != *digest {
            return Err(Error::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(have)
    }

    // ------------------------------------------------------------ listings

    /// All tags of a repository, following `Link` pagination (`page`: `n`).
    pub async fn tags(&self, repo: &RepoName, page: Option<u32>) -> Result<Vec<String>> {
        let mut path = oci::path::tags_path(repo.as_str());
        if let Some(n) = page {
            path.push_str(&format!("?n={n}"));
        }
        let what = format!("tags of {}/{repo}", self.host);
        self.paginate(&what, path, "tags", &[Scope::Pull(repo.clone())])
            .await
    }

    /// All repositories, following `Link` pagination (`page`: `n`).
    pub async fn catalog(&self, page: Option<u32>) -> Result<Vec<String>> {
        let mut path = oci::path::CATALOG_PATH.to_owned();
        if let Some(n) = page {
            path.push_str(&format!("?n={n}"));
        }
        let what = format!("catalog of {}", self.host);
        self.paginate(&what, path, "repositories", &[Scope::Catalog])
            .await
    }

    async fn paginate(
        &self,
        what: &str,
        first: String,
        field: &str,
        scopes: &[Scope],
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(self.url(&first)?);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 100_000 {
                return Err(Error::Other(format!("{what}: too many pages")));
            }
            let u = url.clone();
            let resp = self.send(what, scopes, &|h| Ok(h.get(u.clone()))).await?;
            let resp = self.check(what, resp, &[200]).await?;
            next = next_link(&url, resp.headers());
            let body = read_capped(resp, 64 << 20).await?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| Error::Other(format!("{what}: bad JSON: {e}")))?;
            let items = v.get(field).and_then(|t| t.as_array());
            let before = out.len();
            for t in items.into_iter().flatten() {
                if let Some(s) = t.as_str() {
                    out.push(s.to_owned());
                }
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// Referrers of `digest`: the referrers API, or on a 404 the referrers
    /// tag schema (`<alg>-<hex>`); filtered by `artifact_type` either way.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        let mut url = self.url(&oci::path::referrers_path(
            repo.as_str(),
            &digest.to_string(),
        ))?;
        if let Some(t) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", t);
        }
        let what = format!("referrers of {}/{repo}@{digest}", self.host);
        let mut manifests = Vec::new();
        let mut next = Some(url);
        let mut api = true;
        let mut filtered = true;
        while let Some(url) = next.take() {
            let u = url.clone();
            let resp = self
                .send(&what, &[Scope::Pull(repo.clone())], &|h| {
                    Ok(h.get(u.clone()).header(header::ACCEPT, media::OCI_INDEX))
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND && manifests.is_empty() {
                api = false;
                break;
            }
            let resp = self.check(&what, resp, &[200]).await?;
            let applied = resp
                .headers()
                .get("oci-filters-applied")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
            filtered &= applied;
            next = next_link(&url, resp.headers());
            let body = read_capped(resp, MAX_MANIFEST_SIZE).await?;
            manifests
                .extend(index_manifests(&body).map_err(|e| Error::Other(format!("{what}: {e}")))?);
        }
        if !api {
            let tag = referrers_tag(digest);
            match self.get_manifest(repo, &tag).await {
                Ok(m) => {
                    manifests = index_manifests(&m.bytes)
                        .map_err(|e| Error::Other(format!("{what}: referrers tag {tag}: {e}")))?
                }
                Err(e) if e.kind() == crate::error::Kind::NotFound => {}
                Err(e) => return Err(e),
            }
            filtered = false;
        }
        if let Some(t) = artifact_type
            && !filtered
        {
            manifests.retain(|d| d.artifact_type.as_deref() == Some(t));
        }
        Ok(Referrers { manifests, api })
    }
}

/// The answer of [`Client::referrers`].
#[derive(Clone, Debug)]
pub struct Referrers {
    pub manifests: Vec<Descriptor>,
    /// The registry has the referrers API (else the tag schema was read).
    pub api: bool,
}

enum UploadStart {
    Mounted,
    Session {
        location: Url,
        min_chunk: Option<u64>,
    },
}

/// The referrers tag schema's tag for a subject digest: `<alg>-<hex>`,
/// truncated as the distribution spec says.
pub fn referrers_tag(digest: &Digest) -> Reference {
    let alg: String = digest.algorithm().as_str().chars().take(32).collect();
    let hex: String = digest.hex().chars().take(64).collect();
    match oci::Tag::parse(&format!("{alg}-{hex}")) {
        Ok(t) => Reference::Tag(t),
        Err(_) => Reference::Digest(digest.clone()),
    }
}

/// The `manifests` of an image index body.
pub fn index_manifests(body: &[u8]) -> std::result::Result<Vec<Descriptor>, String> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    serde_json::from_slice::<Index>(body)
        .map(|i| i.manifests)
        .map_err(|e| format!("not an image index: {e}"))
}

fn scope_key(scopes: &[Scope]) -> String {
    let v: Vec<String> = scopes.iter().filter_map(Scope::token_scope).collect();
    v.join(" ")
}

fn content_type(h: &HeaderMap) -> Option<String> {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| media::essence(s).to_owned())
        .filter(|s| !s.is_empty())
}

fn content_range_start(h: &HeaderMap) -> Option<u64> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let v = v.trim().strip_prefix("bytes")?.trim_start();
    v.split('-').next()?.trim().parse().ok()
}

/// The `Link: <url>; rel="next"` target, resolved against `current`.
pub fn next_link(current: &Url, h: &HeaderMap) -> Option<Url> {
    for v in h.get_all(header::LINK).iter() {
        let v = v.to_str().ok()?;
        for part in v.split(',') {
            let (target, params) = part.split_once(';').unwrap_or((part, ""));
            let target = target.trim();
            let is_next = params.split(';').any(|p| {
                p.replace(' ', "").eq_ignore_ascii_case("rel=\"next\"") || p.trim() == "rel=next"
            });
            if is_next && target.starts_with('<') && target.ends_with('>') {
                return current.join(&target[1..target.len() - 1]).ok();
            }
        }
    }
    None
}

async fn read_capped(resp: Response, max: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| Error::Connection(format!("reading an answer: {e}")))?
    {
        if out.len() + chunk.len() > max {
            return Err(Error::Other(format!("answer larger than {max} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A request body streaming `len` bytes of `path` from `offset`.
fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    progress: Arc<dyn Progress>,
) -> Result<reqwest::Body> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    let f = tokio::fs::File::from_std(f).take(len);
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 << 10)
        .inspect_ok(move |b| progress.inc(b.len() as u64));
    Ok(reqwest::Body::wrap_stream(stream))
}

async fn backoff(attempt: u32) {
    let ms = 100u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn links() {
        let cur = Url::parse("http://h:1/v2/_catalog?n=2").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/_catalog?last=b&n=2>; rel=\"next\""),
        );
        assert_eq!(
            next_link(&cur, &h).unwrap().as_str(),
            "http://h:1/v2/_catalog?last=b&n=2"
        );
        h.insert(
            header::LINK,
            HeaderValue::from_static("<http://other/v2/x/tags/list?last=a>; rel=next"),
        );
        assert_eq!(
            next_link(&cur, &h).unwrap().as_str(),
            "http://other/v2/x/tags/list?last=a"
        );
        h.insert(header::LINK, HeaderValue::from_static("<x>; rel=\"prev\""));
        assert!(next_link(&cur, &h).is_none());
    }

    #[test]
    fn locations_relative_and_absolute() {
        let c = Client::new(
            Host::parse("127.0.0.1:5000", false).unwrap(),
            ClientOptions::default(),
        )
        .unwrap();
        let at = |loc: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_static(loc));
            c.location("upload", &h).unwrap().to_string()
        };
        let path = "/v2/a/blobs/uploads/0b1c?state=x";
        // relative (allowed by the spec), absolute on the same host (what
        // Wharf and Distribution send), and on another host (a proxy, or
        // storage elsewhere)
        assert_eq!(at(path), format!("http://127.0.0.1:5000{path}"));
        assert_eq!(
            at("http://127.0.0.1:5000/v2/a/blobs/uploads/0b1c?state=x"),
            format!("http://127.0.0.1:5000{path}")
        );
        assert_eq!(
            at("https://registry.example.com/v2/a/blobs/uploads/0b1c"),
            "https://registry.example.com/v2/a/blobs/uploads/0b1c"
        );
        assert!(c.location("upload", &HeaderMap::new()).is_err());
    }

    #[test]
    fn referrers_tags() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(referrers_tag(&d).to_string(), format!("sha256-{}", d.hex()));
        let d = Digest::of(oci::Algorithm::Sha512, b"x");
        let t = referrers_tag(&d).to_string();
        assert_eq!(t, format!("sha512-{}", &d.hex()[..64]));
    }

    #[test]
    fn content_ranges() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/200"),
        );
        assert_eq!(content_range_start(&h), Some(100));
    }

    #[test]
    fn scopes() {
        let r = RepoName::parse("a/b", 255).unwrap();
        assert_eq!(
            scope_key(&[
                Scope::Push(r.clone()),
                Scope::Pull(RepoName::parse("c", 255).unwrap())
            ]),
            "repository:a/b:pull,push repository:c:pull"
        );
        assert_eq!(scope_key(&[Scope::None]), "");
        assert_eq!(Scope::Catalog.token_scope().unwrap(), "registry:catalog:*");
        assert_eq!(
            Scope::Delete(r).token_scope().unwrap(),
            "repository:a/b:delete"
        );
    }
}
