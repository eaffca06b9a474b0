//! Answering requests for repositories below an upstream's prefix (the
//! pull-through cache, crates/mirror), after authentication and
//! authorization. Manifests go through the cache (tags are revalidated,
//! misses fetched); blobs the repository holds are left to the store's
//! handler, others are fetched (or joined) and streamed; pushes are
//! refused unless the upstream's `push` setting allows them. Everything
//! else (tags list, referrers, deletes, the catalog) is the store's: it
//! answers with what is cached.
//!
//! An upstream with an address of its own (`listen`) is served there at
//! the root: a request for `<name>` on that listener is one for
//! `<prefix>/<name>` ([`rooted`]), as the Docker daemon's
//! `registry-mirrors` needs.

use crate::action::{Access, Action};
use crate::handlers::AppState;
use crate::handlers::{Accept, Result, blob_answer, default_platform_child, manifest_response};
use crate::metrics::Metrics;
use crate::response::{self as r, Resp};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use mirror::{BlobAnswer, CacheStatus, Mirror, Route};
use oci::{Digest, ErrorCode, Reference, RegistryError, RepoName, media};
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

/// In the requests of an upstream's own listener (its `listen`): the name
/// of the upstream served at the root there.
#[derive(Clone, Debug)]
pub struct RootOf(pub Arc<str>);

/// `action`, come to the listener of upstream `root`, on the local
/// repository that caches its repository (`mirror::local_for_root`), and
/// that upstream's prefix; actions on no repository (the base, the
/// catalog) are left as they are, with no prefix.
pub fn rooted(
    state: &AppState,
    action: Action,
    root: &RootOf,
) -> std::result::Result<(Action, Option<String>), RegistryError> {
    let Some(name) = action.repo() else {
        return Ok((action, None));
    };
    let Some(spec) = state.mirror.as_ref().and_then(|m| m.upstream(&root.0)) else {
        // Listeners are made for configured upstreams only.
        return Err(RegistryError::new(
            ErrorCode::Unknown,
            format!("internal error: upstream {} is not configured", root.0),
        )
        .with_status(500));
    };
    let local = mirror::local_for_root(spec, name, state.limits.max_name_length)?;
    Ok((action.with_repo(local), Some(spec.prefix.to_string())))
}

/// Rewrite the `Location` and `Link` headers of a response to a request
/// on an upstream's listener so that they name repositories as clients do
/// there: `/v2/<prefix>/<name>/...` becomes `/v2/<name>/...` (relative, or
/// after `origin`). Other values (a presigned bucket URL) are left alone.
pub fn unprefix_links(resp: &mut Resp, prefix: &str, origin: Option<&str>) {
    for name in [header::LOCATION, header::LINK] {
        let Some(v) = resp.headers().get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(new) = unprefixed(v, prefix, origin)
            && let Ok(hv) = HeaderValue::from_str(&new)
        {
            resp.headers_mut().insert(name, hv);
        }
    }
}

fn unprefixed(value: &str, prefix: &str, origin: Option<&str>) -> Option<String> {
    let (lt, rest) = match value.strip_prefix('<') {
        Some(r) => ("<", r),
        None => ("", value),
    };
    let (at, path) = match origin.and_then(|o| rest.strip_prefix(o).map(|p| (o, p))) {
        Some((o, p)) => (o, p),
        None => ("", rest),
    };
    let tail = path
        .strip_prefix("/v2/")?
        .strip_prefix(prefix)?
        .strip_prefix('/')?;
    Some(format!("{lt}{at}/v2/{tail}"))
}

#[cfg(test)]
mod tests {
    use super::unprefixed;

    #[test]
    fn links_lose_the_prefix() {
        let o = Some("http://127.0.0.1:5001");
        assert_eq!(
            unprefixed("/v2/hub/library/a/blobs/uploads/x", "hub", None).as_deref(),
            Some("/v2/library/a/blobs/uploads/x")
        );
        assert_eq!(
            unprefixed(
                "http://127.0.0.1:5001/v2/hub/library/a/manifests/sha256:00",
                "hub",
                o
            )
            .as_deref(),
            Some("http://127.0.0.1:5001/v2/library/a/manifests/sha256:00")
        );
        assert_eq!(
            unprefixed(
                "</v2/hub/library/a/tags/list?n=1&last=b>; rel=\"next\"",
                "hub",
                o
            )
            .as_deref(),
            Some("</v2/library/a/tags/list?n=1&last=b>; rel=\"next\"")
        );
        // Not below the prefix, or elsewhere (a bucket's URL): left alone.
        assert_eq!(unprefixed("/v2/hubx/a/blobs/uploads/x", "hub", None), None);
        assert_eq!(unprefixed("/v2/_catalog?n=1", "hub", None), None);
        assert_eq!(
            unprefixed(
                "https://bucket.example/v2/hub/a?X-Amz-Signature=1",
                "hub",
                o
            ),
            None
        );
    }
}
