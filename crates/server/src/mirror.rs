//! Answering requests for repositories below an upstream's prefix (the
//! pull-through cache, crates/mirror), after authentication and
//! authorization. Manifests go through the cache (tags are revalidated,
//! misses fetched); blobs the repository holds are left to the store's
//! handler, others are fetched (or joined) and streamed; pushes are
//! refused unless the upstream's `push` setting allows them. Everything
//! else (tags list, referrers, deletes, the catalog) is the store's: it
//! answers with what is cached.

use crate::action::{Access, Action};
use crate::handlers::{Accept, Result, blob_answer, default_platform_child, manifest_response};
use crate::metrics::Metrics;
use crate::response::{self as r, Resp};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use mirror::{BlobAnswer, CacheStatus, Mirror, Route};
use oci::{Digest, Reference, RepoName, media};
use std::sync::Arc;

/// `hit`, `revalidated`, `miss` or `stale`: how the cache served a response.
pub const X_WHARF_CACHE: HeaderName = HeaderName::from_static("x-wharf-cache");

/// The answer for `action` if the cache has one; `None` hands it on.
pub async fn answer(
    m: &Arc<Mirror>,
    metrics: &Metrics,
    action: &Action,
    headers: &HeaderMap,
) -> Option<Result<Resp>> {
    let repo = action.repo()?;
    let route = m.route(repo)?;
    let upstream = route.upstream.spec.name.as_str();
    match action {
        Action::GetManifest {
            repo,
            reference,
            head,
        } => {
            let (answer, cache) = get_manifest(m, &route, repo, reference, *head, headers).await;
            metrics.cache(
                upstream,
                "manifest",
                cache.map_or("error", CacheStatus::as_str),
            );
            Some(answer)
        }
        Action::GetBlob { repo, digest, head } => {
            let answer = get_blob(m, &route, repo, digest, *head, headers).await;
            let result = match &answer {
                // The store serves it.
                None => "hit",
                Some(Ok(_)) => "miss",
                Some(Err(_)) => "error",
            };
            metrics.cache(upstream, "blob", result);
            answer
        }
        a if a.access() == Access::Push && !route.push_allowed() => {
            Some(Err(route.push_refused(repo).into()))
        }
        _ => None,
    }
}

async fn get_manifest(
    m: &Mirror,
    route: &Route,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
    headers: &HeaderMap,
) -> (Result<Resp>, Option<CacheStatus>) {
    match manifest_answer(m, route, repo, reference, head, headers).await {
        Ok((resp, cache)) => (Ok(resp), Some(cache)),
        Err(e) => (Err(e), None),
    }
}

/// The response to a manifest GET or HEAD, and how the cache served it.
async fn manifest_answer(
    m: &Mirror,
    route: &Route,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
    headers: &HeaderMap,
) -> Result<(Resp, CacheStatus)> {
    let accept = Accept::parse(headers);
    let mut got = m.manifest(route, repo, reference).await?;
    if !accept.allows(&got.media_type)
        && accept.wants_image_only()
        && let Some(child) = default_platform_child(&got.body, &accept)
    {
        // A client that cannot read an index: its linux/amd64 image, as
        // for stored content (handlers::dispatch).
        let stale = got.cache == CacheStatus::Stale;
        got = m.manifest(route, repo, &Reference::Digest(child)).await?;
        if stale {
            got.cache = CacheStatus::Stale;
        }
    }
    let mut resp = manifest_response(&got.digest, &got.media_type, &got.body, head);
    mark(&mut resp, got.cache);
    Ok((resp, got.cache))
}

fn mark(resp: &mut Resp, cache: CacheStatus) {
    let h = resp.headers_mut();
    h.insert(X_WHARF_CACHE, HeaderValue::from_static(cache.as_str()));
    if cache == CacheStatus::Stale {
        h.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
    }
}

async fn get_blob(
    m: &Mirror,
    route: &Route,
    repo: &RepoName,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Option<Result<Resp>> {
    let answer = match m.blob(route, repo, digest, head).await {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let (size, fetch) = match answer {
        BlobAnswer::Local => return None,
        BlobAnswer::Upstream { size } => (Some(size), None),
        BlobAnswer::Fetching(f) => (f.size, Some(f)),
    };
    let mut resp = match size {
        Some(size) => {
            let reply = match blob_answer(headers, digest, size, head) {
                Ok(a) => a,
                Err(resp) => return Some(Ok(*resp)),
            };
            let body = match fetch {
                Some(f) if !head => {
                    let (start, end) = reply.range.unwrap_or((0, size));
                    Body::from_stream(mirror::fetch::reader(f, start, Some(end)))
                }
                _ => Body::empty(),
            };
            r::build(reply.status, &reply.headers, body)
        }
        // The upstream sent no length: the whole blob, chunked.
        None => {
            let d = digest.to_string();
            let hdrs = [
                (r::DOCKER_CONTENT_DIGEST, d.clone()),
                (header::ETAG, format!("\"{d}\"")),
                (header::CONTENT_TYPE, media::OCTET_STREAM.into()),
            ];
            let body = match fetch {
                Some(f) if !head => Body::from_stream(mirror::fetch::reader(f, 0, None)),
                _ => Body::empty(),
            };
            r::build(200, &hdrs, body)
        }
    };
    mark(&mut resp, CacheStatus::Miss);
    Some(Ok(resp))
}
