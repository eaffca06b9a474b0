//! Carrying out an [`Action`] on the registry core and answering in HTTP.

use crate::action::{self, Action, RouterLimits};
use crate::auth::{self, Auth, AuthUser};
use crate::config::Config;
use crate::conn::ConnInfo;
use crate::metrics::{ActionName, Metrics};
use crate::origin;
use crate::response::{self as r, Resp};
use crate::upload_slots::{Owner, Refused, UploadSlots};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci::path;
use oci::{ByteRange, ChunkRange, Digest, ErrorCode, Reference, RegistryError, RepoName, media};
use std::io;
use std::sync::Arc;
use store::{ByteStream, Registry};

pub struct AppState {
    pub registry: Arc<Registry>,
    /// `[http] public_url`, normalised (`scheme://host[:port]`).
    pub public_origin: Option<String>,
    /// Repositories served read-only from `--from` sources.
    pub sources: Option<Arc<store::source::Sources>>,
    /// The pull-through cache of `[[upstreams]]`, if any.
    pub mirror: Option<Arc<mirror::Mirror>>,
    pub config: Config,
    pub limits: RouterLimits,
    /// Authentication and authorization; `None`: everything is allowed.
    pub auth: Option<Arc<Auth>>,
    /// Upload sessions open per owner (user or client address) and in all;
    /// the registry reports sessions' ends to it.
    pub upload_slots: Arc<UploadSlots>,
    /// The process's metrics (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// Is `/metrics` served on the main listener (enabled, and no separate
    /// metrics listener)?
    pub metrics_on_main: bool,
}

/// Which repositories a caller sees in the catalog (`None`: all).
pub(crate) type CatalogFilter<'a> = Option<&'a (dyn Fn(&str) -> bool + Sync)>;

/// The one handler behind every path: route, authenticate and authorize
/// (when auth is on), dispatch. The response carries the name of what was
/// asked ([`ActionName`]) for the request layer's metrics.
pub async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Resp {
    let mut name = "unknown";
    let mut resp = handle_named(state, req, &mut name).await;
    resp.extensions_mut().insert(ActionName(name));
    resp
}

async fn handle_named(state: Arc<AppState>, req: Request, name: &mut &'static str) -> Resp {
    let head = req.method() == "HEAD";
    // Health probes: before routing and auth, which they never need.
    if crate::health::is_health_path(req.uri().path()) {
        *name = if req.uri().path() == "/healthz" {
            "healthz"
        } else {
            "readyz"
        };
        return crate::health::serve(&state, req.method().as_str(), req.uri().path()).await;
    }
    if state.metrics_on_main && req.uri().path() == crate::metrics::METRICS_PATH {
        *name = "metrics";
        return crate::metrics::serve(&state, req, true).await;
    }
    // The web UI (docs/ui.md): its own pages, the same auth decision.
    if state.config.ui.enabled && crate::ui::is_ui_path(req.uri().path()) {
        *name = "ui";
        return crate::ui::serve(&state, req).await;
    }
    if let Some(auth) = &state.auth
        && auth::endpoint::is_token_path(req.uri().path())
    {
        *name = "token";
        return auth::endpoint::serve(auth, req).await;
    }
    let action = match action::route(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query(),
        &state.limits,
    ) {
        Ok(a) => a,
        Err(e) => return r::error(&e, head),
    };
    *name = action.metric_name();
    // containerd's mirror convention: `?ns=<registry>` and the name there;
    // or an upstream's own address, where it is served at the root (the
    // Docker daemon's `registry-mirrors`). Everything after this (auth and
    // policy included) sees the local repository that caches it.
    let root = req.extensions().get::<crate::mirror::RootOf>().cloned();
    let mut unprefix = None;
    let action = match (action::namespace(req.uri().query()), root) {
        (Some(ns), _) => match mirrored(&state, action, &ns) {
            Ok(a) => a,
            Err(e) => return r::error(&e, head),
        },
        (None, Some(root)) => match crate::mirror::rooted(&state, action, &root) {
            Ok((a, prefix)) => {
                unprefix = prefix;
                a
            }
            Err(e) => return r::error(&e, head),
        },
        (None, None) => action,
    };
    let conn = ConnInfo::of(&req).cloned();
    let client = conn.as_ref().map(|c| c.peer.ip());
    let (parts, body) = req.into_parts();
    let body = state.metrics.received(name, body);
    // Where the client sent the request (HTTP/2 carries the host in the
    // URI, HTTP/1.1 in the Host header), for absolute Location URLs and
    // the default token realm.
    let origin = origin::of_request(
        state.public_origin.as_deref(),
        state.config.tls_enabled(),
        parts.uri.authority().map(|a| a.as_str()),
        &parts.headers,
    );
    let origin = origin.as_deref();
    let (action, id) = match &state.auth {
        None => (action, None),
        Some(auth) => match auth
            .check(&parts.headers, conn.as_ref(), action, head, origin)
            .await
        {
            Ok((a, id)) => (a, Some(id)),
            Err(resp) => return resp,
        },
    };
    let visible = |repo: &str| match (&state.auth, &id) {
        (Some(auth), Some(id)) => auth::decide::sees_in_catalog(&auth.policy, id, repo),
        _ => true,
    };
    let filter: CatalogFilter<'_> = state.auth.as_ref().map(|_| &visible as _);
    // Upload sessions count against the user when there is one, else
    // against the client's address.
    let owner = match id.as_ref().and_then(|id| id.principal.name()) {
        Some(name) => Some(Owner::user(name)),
        None => client.map(Owner::client),
    };
    let req = Req {
        headers: &parts.headers,
        origin,
        owner,
    };
    // Who caused the events this request makes (docs/events.md).
    let context = crate::events::RequestContext {
        actor: id
            .as_ref()
            .and_then(|id| id.principal.name())
            .map(str::to_owned),
        request_id: crate::events::request_id(&parts.headers),
    };
    let dispatched = crate::events::scope(context, dispatch(&state, action, &req, body, filter));
    let mut resp = match dispatched.await {
        Ok(resp) => resp,
        Err(e) => r::from_store(e, head),
    };
    if let Some(prefix) = &unprefix {
        // Where the client goes next (an upload's Location, a page's Link)
        // in the names it uses here.
        crate::mirror::unprefix_links(&mut resp, prefix, origin);
    }
    if let Some(name) = id.as_ref().and_then(|id| id.principal.name()) {
        resp.extensions_mut().insert(AuthUser(name.to_owned()));
    }
    resp
}

/// `action` (sent with `?ns=ns`) on the local repository that caches its
/// repository; actions on no repository are left as they are.
fn mirrored(
    state: &AppState,
    action: Action,
    ns: &str,
) -> std::result::Result<Action, RegistryError> {
    let Some(name) = action.repo() else {
        return Ok(action);
    };
    let upstreams = state.mirror.iter().flat_map(|m| m.upstreams());
    let local = mirror::local_for_ns(upstreams, ns, name, state.limits.max_name_length)?;
    Ok(action.with_repo(local))
}

pub(crate) type Result<T> = std::result::Result<T, store::Error>;

fn reg_err(code: ErrorCode, msg: impl Into<String>) -> store::Error {
    store::Error::Registry(RegistryError::new(code, msg))
}

fn header_str<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, &header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// Does the request carry a body (a declared non-zero length, or chunked)?
fn has_body(h: &HeaderMap) -> bool {
    match content_length(h) {
        Some(n) => n > 0,
        None => h.contains_key(header::TRANSFER_ENCODING),
    }
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(io::Error::other))
}

/// Parse `Content-Range: <start>-<end>` of a chunk upload (inclusive ends;
/// `oci::range` does the checked arithmetic). A range whose length cannot be
/// counted, or that disagrees with `Content-Length`, is refused before any
/// byte of the body is read.
fn chunk_range(h: &HeaderMap) -> Result<Option<ChunkRange>> {
    let Some(raw) = h.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let range = raw
        .to_str()
        .map_err(|_| oci::range::ChunkRangeError::Malformed)
        .and_then(ChunkRange::parse)
        .map_err(|e| reg_err(ErrorCode::BlobUploadInvalid, e.to_string()))?;
    if let Some(len) = content_length(h)
        && len != range.len()
    {
        return Err(reg_err(
            ErrorCode::SizeInvalid,
            format!("Content-Range {range} does not match Content-Length {len}"),
        ));
    }
    Ok(Some(range))
}

/// How to answer a blob GET/HEAD: status, headers, and the byte range
/// (half-open) to send, if not all of it.
pub(crate) struct BlobReply {
    pub status: u16,
    pub headers: Vec<(HeaderName, String)>,
    pub range: Option<(u64, u64)>,
}

/// The reply to a blob GET/HEAD of a blob of `size` bytes, or the 416
/// answer to an unsatisfiable `Range`.
pub(crate) fn blob_answer(
    headers: &HeaderMap,
    digest: &Digest,
    size: u64,
    head: bool,
) -> std::result::Result<BlobReply, Box<Resp>> {
    let digest_s = digest.to_string();
    let mut hdrs = vec![
        (r::DOCKER_CONTENT_DIGEST, digest_s.clone()),
        (header::ETAG, format!("\"{digest_s}\"")),
        (header::ACCEPT_RANGES, "bytes".into()),
        (header::CONTENT_TYPE, media::OCTET_STREAM.into()),
        (header::CACHE_CONTROL, "max-age=31536000".into()),
    ];
    let range = ByteRange::parse(header_str(headers, &header::RANGE), size);
    let (status, range) = match range {
        ByteRange::Whole => (200, None),
        ByteRange::Part { start, end } => (206, Some((start, end))),
        ByteRange::Unsatisfiable => {
            let e = RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("requested range not satisfiable: the blob has {size} bytes"),
            )
            .with_status(416);
            let mut resp = r::error(&e, head);
            if let Ok(v) = format!("bytes */{size}").parse() {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Err(Box::new(resp));
        }
    };
    let len = match range {
        // `ByteRange::Part` guarantees start < end <= size.
        Some((s, e)) => {
            let last = e.saturating_sub(1);
            hdrs.push((header::CONTENT_RANGE, format!("bytes {s}-{last}/{size}")));
            e.saturating_sub(s)
        }
        None => size,
    };
    hdrs.push((header::CONTENT_LENGTH, len.to_string()));
    Ok(BlobReply {
        status,
        headers: hdrs,
        range,
    })
}

/// What dispatch needs to know of a request besides its action and body.
struct Req<'a> {
    headers: &'a HeaderMap,
    /// Where the client sent it (see [`origin::of_request`]): absolute
    /// `Location`s start with it.
    origin: Option<&'a str>,
    /// Whom a new upload session counts against (user or address).
    owner: Option<Owner>,
}

async fn dispatch(
    state: &AppState,
    action: Action,
    req: &Req<'_>,
    body: Body,
    catalog_filter: CatalogFilter<'_>,
) -> Result<Resp> {
    let Req {
        headers,
        origin,
        ref owner,
    } = *req;
    // Repositories served from `--from` sources, and the catalog, which
    // lists them too.
    if let Some(src) = &state.sources
        && let Some(answer) =
            crate::sources::answer(state, src, &action, headers, catalog_filter).await
    {
        return answer;
    }
    // Repositories below an upstream's prefix: cache misses and refused
    // pushes (what the store holds is served below).
    if let Some(m) = &state.mirror
        && let Some(answer) = crate::mirror::answer(m, &state.metrics, &action, headers).await
    {
        return answer;
    }
    let reg = &state.registry;
    match action {
        Action::Base => Ok(r::build(
            200,
            &[
                (header::CONTENT_TYPE, media::JSON.into()),
                (header::CONTENT_LENGTH, "2".into()),
            ],
            Body::from("{}"),
        )),

        Action::GetBlob { repo, digest, head } => {
            let size = reg.blob_size(&repo, &digest).await?.ok_or_else(|| {
                store::Error::Registry(
                    RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
                        .with_detail(serde_json::json!({ "digest": digest.to_string() })),
                )
            })?;
            let reply = match blob_answer(headers, &digest, size, head) {
                Ok(a) => a,
                Err(resp) => return Ok(*resp),
            };
            if head {
                return Ok(r::build(reply.status, &reply.headers, Body::empty()));
            }
            // The link was checked above; the bytes may come straight from
            // the bucket (the client sends its Range there itself).
            if let Some(url) = reg.blob_redirect(&digest).await? {
                return Ok(redirect(&url, &digest));
            }
            let obj = reg.blob_get(&repo, &digest, reply.range).await?;
            Ok(r::build(
                reply.status,
                &reply.headers,
                Body::from_stream(obj.body),
            ))
        }

        Action::DeleteBlob { repo, digest } => {
            reg.blob_delete(&repo, &digest).await?;
            Ok(r::build(
                202,
                &[(header::CONTENT_LENGTH, "0".into())],
                Body::empty(),
            ))
        }

        Action::StartUpload {
            repo,
            digest,
            algorithm,
            mount,
            from,
        } => {
            if let Some(m) = mount {
                if reg.mount(&repo, &m, from.as_ref()).await? {
                    return Ok(blob_created(origin, &repo, &m));
                }
                // Could not mount: fall back to an upload session (202).
            } else if let Some(d) =
                digest.filter(|d| has_body(headers) || *d == oci::Digest::of(d.algorithm(), b""))
            {
                reg.upload_whole_sized(&repo, body_stream(body), &d, content_length(headers))
                    .await?;
                return Ok(blob_created(origin, &repo, &d));
            }
            // A `digest` without a body: the client will send the bytes later.
            let id = start_session(state, &repo, algorithm, owner.as_ref()).await?;
            let mut resp = upload_accepted(origin, &repo, &id, 0, 202);
            // The larger of the configured size and what the backend needs
            // (S3 parts): smaller chunks are still accepted, and buffered.
            let min = state
                .config
                .uploads
                .chunk_min_length
                .max(reg.backend().chunk_min_length());
            if min > 0
                && let Ok(v) = min.to_string().parse()
            {
                resp.headers_mut().insert(r::OCI_CHUNK_MIN_LENGTH, v);
            }
            Ok(resp)
        }

        Action::PatchUpload { repo, id } => {
            let range = chunk_range(headers)?;
            let offset = reg
                .upload_append_sized(
                    &repo,
                    &id,
                    body_stream(body),
                    range,
                    content_length(headers),
                )
                .await?;
            Ok(upload_accepted(origin, &repo, &id, offset, 202))
        }

        Action::PutUpload { repo, id, digest } => {
            let range = chunk_range(headers)?;
            let body = has_body(headers).then(|| body_stream(body));
            reg.upload_finish_sized(&repo, &id, body, range, &digest, content_length(headers))
                .await?;
            Ok(blob_created(origin, &repo, &digest))
        }

        Action::GetUpload { repo, id } => {
            let offset = reg.upload_status(&repo, &id).await?;
            Ok(upload_accepted(origin, &repo, &id, offset, 204))
        }

        Action::DeleteUpload { repo, id } => {
            reg.upload_cancel(&repo, &id).await?;
            Ok(r::build(204, &[], Body::empty()))
        }

        Action::GetManifest {
            repo,
            reference,
            head,
        } => {
            let accept = Accept::parse(headers);
            if head {
                let (digest, media_type, size) = reg.manifest_head(&repo, &reference).await?;
                if accept.allows(&media_type) || !accept.wants_image_only() {
                    return Ok(r::build(
                        200,
                        &manifest_headers(&digest.to_string(), &media_type, size),
                        Body::empty(),
                    ));
                }
            }
            let mut m = reg.manifest_get(&repo, &reference).await?;
            if !accept.allows(&m.media_type) && accept.wants_image_only() {
                // A client that cannot read an index asked for a multi-platform
                // image: give it the linux/amd64 image, as Distribution does.
                if let Some(child) = default_platform_child(&m.body, &accept) {
                    m = reg.manifest_get(&repo, &Reference::Digest(child)).await?;
                }
            }
            if !head && let Err(e) = reg.record_pull(&repo, &reference, &m).await {
                // A pull changes nothing: it is served even when its event
                // cannot be recorded.
                tracing::error!(repo = %repo, digest = %m.digest, error = %e, "the pull event could not be written to the outbox; it is not delivered");
            }
            Ok(manifest_response(&m.digest, &m.media_type, &m.body, head))
        }

        Action::PutManifest {
            repo,
            reference,
            tags,
        } => {
            let limit = state.config.limits.max_manifest_size;
            let bytes = read_limited(headers, body, limit).await?;
            let content_type = header_str(headers, &header::CONTENT_TYPE);
            let put = reg
                .manifest_put(&repo, &reference, content_type, bytes, &tags)
                .await?;
            let digest = put.digest.to_string();
            let mut hdrs = vec![
                (
                    header::LOCATION,
                    origin::url(origin, &path::manifest_path(repo.as_str(), &digest)),
                ),
                (r::DOCKER_CONTENT_DIGEST, digest),
                (header::CONTENT_LENGTH, "0".into()),
            ];
            if let Some(s) = put.subject {
                hdrs.push((r::OCI_SUBJECT, s.to_string()));
            }
            if !tags.is_empty() {
                for t in &put.tags {
                    hdrs.push((r::OCI_TAG, t.to_string()));
                }
            }
            Ok(r::build(201, &hdrs, Body::empty()))
        }

        Action::DeleteManifest { repo, reference } => {
            reg.manifest_delete(&repo, &reference).await?;
            Ok(r::build(
                202,
                &[(header::CONTENT_LENGTH, "0".into())],
                Body::empty(),
            ))
        }

        Action::ListTags { repo, n, last } => {
            let page = reg.tags(&repo, n, last.as_deref()).await?;
            let body = serde_json::json!({ "name": repo.as_str(), "tags": page.items });
            let next = page.items.last().filter(|_| page.more).map(|l| {
                next_link(
                    &path::tags_path(repo.as_str()),
                    n.unwrap_or(page.items.len()),
                    l,
                )
            });
            Ok(json(200, &body, next))
        }

        Action::Catalog { n, last } => {
            let page = store_catalog(reg, n, last.as_deref(), catalog_filter).await?;
            Ok(catalog_response(&page, n))
        }

        Action::Referrers {
            repo,
            subject,
            artifact_type,
        } => {
            let manifests = reg
                .referrers(&repo, &subject, artifact_type.as_deref())
                .await?;
            let index = oci::manifest::IndexDocument {
                schema_version: 2,
                media_type: media::OCI_INDEX,
                manifests: &manifests,
            };
            let body = serde_json::to_vec(&index).map_err(io::Error::other)?;
            let mut hdrs = vec![
                (header::CONTENT_TYPE, media::OCI_INDEX.to_string()),
                (header::CONTENT_LENGTH, body.len().to_string()),
            ];
            if artifact_type.is_some() {
                hdrs.push((r::OCI_FILTERS_APPLIED, "artifactType".into()));
            }
            Ok(r::build(200, &hdrs, Body::from(body)))
        }
    }
}

/// The media types a request's `Accept` headers list (q=0 entries dropped).
pub(crate) struct Accept(Vec<String>);

impl Accept {
    pub(crate) fn parse(h: &HeaderMap) -> Accept {
        let mut types = Vec::new();
        for v in h.get_all(header::ACCEPT) {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',') {
                let mut parts = item.split(';');
                let mt = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                if !mt.is_empty() && !refused {
                    types.push(mt);
                }
            }
        }
        Accept(types)
    }

    /// No Accept, a wildcard, or the type itself.
    pub(crate) fn allows(&self, media_type: &str) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|t| t == "*/*" || t == "application/*" || t == media_type)
    }

    /// The client names image manifest types but no index type and no wildcard.
    pub(crate) fn wants_image_only(&self) -> bool {
        let image = [media::OCI_MANIFEST, media::DOCKER_MANIFEST];
        let index = [media::OCI_INDEX, media::DOCKER_MANIFEST_LIST];
        self.0.iter().any(|t| image.contains(&t.as_str()))
            && !self
                .0
                .iter()
                .any(|t| index.contains(&t.as_str()) || t == "*/*" || t == "application/*")
    }
}

/// The linux/amd64 entry of an index, if its type is one the client accepts.
pub(crate) fn default_platform_child(body: &[u8], accept: &Accept) -> Option<Digest> {
    let m = oci::manifest::parse(None, body).ok()?;
    m.manifests
        .into_iter()
        .find(|d| {
            let field = |k: &str| {
                d.platform
                    .as_ref()
                    .and_then(|p| p.get(k))
                    .and_then(|v| v.as_str())
            };
            field("os") == Some("linux")
                && field("architecture") == Some("amd64")
                && accept.allows(&d.media_type)
        })
        .map(|d| d.digest)
}

/// The 200 answer to a manifest GET (or HEAD: the same headers, no body).
pub(crate) fn manifest_response(
    digest: &Digest,
    media_type: &str,
    body: &Bytes,
    head: bool,
) -> Resp {
    let hdrs = manifest_headers(&digest.to_string(), media_type, body.len() as u64);
    let body = if head {
        Body::empty()
    } else {
        Body::from(body.clone())
    };
    r::build(200, &hdrs, body)
}

fn manifest_headers(digest: &str, media_type: &str, size: u64) -> Vec<(HeaderName, String)> {
    vec![
        (header::CONTENT_TYPE, media_type.to_owned()),
        (header::CONTENT_LENGTH, size.to_string()),
        (r::DOCKER_CONTENT_DIGEST, digest.to_owned()),
        (header::ETAG, format!("\"{digest}\"")),
    ]
}

/// 307 to a presigned URL of the blob's bytes.
fn redirect(url: &str, digest: &oci::Digest) -> Resp {
    r::build(
        307,
        &[
            (header::LOCATION, url.to_owned()),
            (r::DOCKER_CONTENT_DIGEST, digest.to_string()),
            (header::CONTENT_LENGTH, "0".into()),
        ],
        Body::empty(),
    )
}

fn blob_created(origin: Option<&str>, repo: &RepoName, digest: &oci::Digest) -> Resp {
    let d = digest.to_string();
    r::build(
        201,
        &[
            (
                header::LOCATION,
                origin::url(origin, &path::blob_path(repo.as_str(), &d)),
            ),
            (r::DOCKER_CONTENT_DIGEST, d),
            (header::CONTENT_LENGTH, "0".into()),
        ],
        Body::empty(),
    )
}

/// A page of the store's catalog: only the repositories `keep` allows, or
/// all of them without a filter.
pub(crate) async fn store_catalog(
    reg: &Registry,
    n: Option<usize>,
    last: Option<&str>,
    keep: CatalogFilter<'_>,
) -> Result<store::registry::Page> {
    match keep {
        None => reg.catalog(n, last).await,
        Some(keep) => reg.catalog_where(n, last, keep).await,
    }
}

/// A catalog page as the API answers it: the JSON, and a `Link` to the next
/// page when there is more.
pub(crate) fn catalog_response(page: &store::registry::Page, n: Option<usize>) -> Resp {
    let body = serde_json::json!({ "repositories": page.items });
    let next = page
        .items
        .last()
        .filter(|_| page.more)
        .map(|l| next_link(path::CATALOG_PATH, n.unwrap_or(page.items.len()), l));
    json(200, &body, next)
}

/// Open an upload session, counted against its owner's limit and the
/// total. The slot is bound to the session before the session exists and
/// given back when the registry reports its end (see `upload_slots`).
async fn start_session(
    state: &AppState,
    repo: &RepoName,
    algorithm: oci::Algorithm,
    owner: Option<&Owner>,
) -> Result<String> {
    let slot = match owner.map(|o| state.upload_slots.take(o)) {
        None => None,
        Some(Ok(slot)) => Some(slot),
        Some(Err(refused)) => {
            let msg = match refused {
                Refused::Owner(n) => format!(
                    "{} has {n} upload sessions open already; finish or cancel some first",
                    match owner {
                        Some(Owner::User(_)) => "this user",
                        _ => "this client address",
                    }
                ),
                Refused::Total(n) => {
                    format!("the registry has {n} upload sessions open, its limit; try again later")
                }
            };
            return Err(reg_err(ErrorCode::TooManyRequests, msg));
        }
    };
    state
        .registry
        .upload_start(repo, algorithm, |id| {
            if let Some(slot) = slot {
                slot.bind(id);
            }
        })
        .await
}

fn upload_accepted(
    origin: Option<&str>,
    repo: &RepoName,
    id: &str,
    offset: u64,
    status: u16,
) -> Resp {
    r::build(
        status,
        &[
            (
                header::LOCATION,
                origin::url(origin, &path::upload_path(repo.as_str(), id)),
            ),
            (header::RANGE, r::upload_range(offset)),
            (r::DOCKER_UPLOAD_UUID, id.to_owned()),
            (header::CONTENT_LENGTH, "0".into()),
        ],
        Body::empty(),
    )
}

pub(crate) fn next_link(base: &str, n: usize, last: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    format!("<{base}?{q}>; rel=\"next\"")
}

pub(crate) fn json(status: u16, v: &serde_json::Value, link: Option<String>) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut hdrs = vec![
        (header::CONTENT_TYPE, media::JSON.to_string()),
        (header::CONTENT_LENGTH, body.len().to_string()),
    ];
    if let Some(l) = link {
        hdrs.push((header::LINK, l));
    }
    r::build(status, &hdrs, Body::from(body))
}

/// Read a request body of at most `limit` bytes; larger ones get 413.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes> {
    let too_large = || {
        store::Error::Registry(
            RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("manifest is larger than this registry's limit of {limit} bytes"),
            )
            .with_status(413),
        )
    };
    let mut stream = body.into_data_stream();
    let declared_too_large = content_length(headers).is_some_and(|n| n > limit as u64);
    let mut out = Vec::new();
    if !declared_too_large {
        loop {
            let Some(chunk) = stream.next().await else {
                return Ok(Bytes::from(out));
            };
            let chunk = chunk.map_err(|e| {
                reg_err(
                    ErrorCode::ManifestInvalid,
                    format!("reading the request body failed: {e}"),
                )
            })?;
            if out.len().saturating_add(chunk.len()) > limit {
                break;
            }
            out.extend_from_slice(&chunk);
        }
    }
    // Too large. The rest of the body is drained when it is dropped (up to
    // `stall::DRAIN_MAX`), so the client gets this 413 rather than a reset.
    Err(too_large())
}
