//! Answering requests for repositories served read-only from `--from`
//! sources (OCI layouts, oci-archives, docker-save tarballs), before the
//! store sees them. Reads come from the source catalog; writes are refused
//! with 403 `DENIED`; the catalog lists store and source repositories
//! together. Other repositories are left to the store.

use crate::action::Action;
use crate::handlers::{
    self, Accept, AppState, CatalogFilter, Result, blob_answer, default_platform_child,
    manifest_response,
};
use crate::response::{self as r, Resp};
use axum::body::Body;
use axum::http::{HeaderMap, header};
use oci::path;
use oci::{ErrorCode, Reference, RegistryError, media};
use std::sync::Arc;
use store::source::{Sources, merge_catalog};

/// The answer for `action` if it concerns the sources; `None` hands it to
/// the store.
pub async fn answer(
    state: &AppState,
    src: &Arc<Sources>,
    action: &Action,
    headers: &HeaderMap,
    catalog_filter: Option<&(dyn Fn(&str) -> bool + Sync)>,
) -> Option<Result<Resp>> {
    if let Action::Catalog { n, last } = action {
        return Some(catalog(state, src, *n, last.as_deref(), catalog_filter).await);
    }
    let repo = action.repo()?;
    let files = src.owner(repo)?;
    Some(match action {
        Action::GetManifest {
            repo,
            reference,
            head,
        } => get_manifest(src, repo, reference, *head, headers),
        Action::GetBlob { repo, digest, head } => {
            let size = match src.blob_size(repo, digest) {
                Ok(s) => s,
                Err(e) => return Some(Err(e.into())),
            };
            match blob_answer(headers, digest, size, *head) {
                Err(resp) => Ok(*resp),
                Ok(a) if *head => Ok(r::build(a.status, &a.headers, Body::empty())),
                Ok(a) => src
                    .blob_open(repo, digest, a.range)
                    .await
                    .map(|s| r::build(a.status, &a.headers, Body::from_stream(s))),
            }
        }
        Action::ListTags { repo, n, last } => match src.tags(repo, *n, last.as_deref()) {
            Ok(page) => {
                let body = serde_json::json!({ "name": repo.as_str(), "tags": page.items });
                let next = page.items.last().filter(|_| page.more).map(|l| {
                    handlers::next_link(
                        &path::tags_path(repo.as_str()),
                        n.unwrap_or(page.items.len()),
                        l,
                    )
                });
                Ok(handlers::json(200, &body, next))
            }
            Err(e) => Err(e.into()),
        },
        Action::Referrers { .. } => {
            // Sources hold no referrers: an empty index.
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_INDEX,
                "manifests": [],
            })
            .to_string();
            Ok(r::build(
                200,
                &[
                    (header::CONTENT_TYPE, media::OCI_INDEX.to_string()),
                    (header::CONTENT_LENGTH, body.len().to_string()),
                ],
                Body::from(body),
            ))
        }
        _ => Err(RegistryError::new(
            ErrorCode::Denied,
            format!(
                "repository {} is served read-only from {files}",
                repo.as_str()
            ),
        )
        .with_detail(serde_json::json!({ "name": repo.as_str(), "source": files }))
        .into()),
    })
}

fn get_manifest(
    src: &Arc<Sources>,
    repo: &oci::RepoName,
    reference: &Reference,
    head: bool,
    headers: &HeaderMap,
) -> Result<Resp> {
    let accept = Accept::parse(headers);
    let mut m = src.manifest(repo, reference)?;
    if !accept.allows(&m.media_type)
        && accept.wants_image_only()
        && let Some(child) = default_platform_child(&m.body, &accept)
    {
        m = src.manifest(repo, &Reference::Digest(child))?;
    }
    Ok(manifest_response(&m.digest, &m.media_type, &m.body, head))
}

async fn catalog(
    state: &AppState,
    src: &Arc<Sources>,
    n: Option<usize>,
    last: Option<&str>,
    keep: CatalogFilter<'_>,
) -> Result<Resp> {
    // With auth on, only what the caller may pull, from both sides.
    let store_page = handlers::store_catalog(&state.registry, n, last, keep).await?;
    let names: Vec<String> = src
        .repo_names()
        .into_iter()
        .filter(|r| keep.is_none_or(|keep| keep(r)))
        .collect();
    let page = merge_catalog(store_page, &names, n, last);
    Ok(handlers::catalog_response(&page, n))
}
