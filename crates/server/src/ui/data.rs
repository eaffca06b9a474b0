//! What the pages show, read from the registry core. Every list is one
//! page of a prefix listing (the catalog, a repository's tags) plus reads
//! of that page's own entries, so a page costs the same at 10 or 100,000
//! entries; the one exception, tags by push time, is offered only for
//! repositories of at most [`PUSH_SORT_MAX`] tags.

use super::routes::{CatalogQuery, TagQuery, TagSort};
use futures_util::{StreamExt, TryStreamExt};
use oci::manifest::{self, Descriptor, Kind, Manifest};
use oci::{Digest, Reference, RepoName, Tag};
use std::collections::BTreeMap;
use std::time::SystemTime;
use store::{Error, Registry};

type Result<T> = std::result::Result<T, Error>;

/// Catalog entries read per listing call while searching.
const CATALOG_BATCH: usize = 500;
/// Catalog entries one search request looks at, at most; past that the
/// page ends with a link that continues the search from there.
pub(crate) const SCAN_MAX: usize = 20_000;
/// Tags sorted by push time only up to this many (each costs a read).
pub(crate) const PUSH_SORT_MAX: usize = 5_000;
/// Reads of one page's entries in flight at once.
const CONCURRENCY: usize = 16;
/// Platform manifests of an index whose trees are shown.
const MAX_CHILDREN: usize = 64;
/// Largest config blob read for its highlights.
const MAX_CONFIG: u64 = 1 << 20;

/// A page of the catalog as a viewer sees it.
pub(crate) struct Found {
    pub names: Vec<String>,
    /// Where the next page starts (`last=`), when there is more.
    pub next: Option<String>,
    /// The scan stopped at [`SCAN_MAX`] entries before the page was full.
    pub partial: bool,
}

/// One page of the repositories the viewer `sees` whose names match the
/// query. A prefix search starts listing at the prefix and stops past it;
/// a substring search reads the catalog in order, at most [`SCAN_MAX`]
/// names per page.
pub(crate) async fn catalog(
    reg: &Registry,
    q: &CatalogQuery,
    sees: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Found> {
    let needle = q.q.as_str();
    // Just before the prefix: the longest proper prefix of it lists from
    // there (entries between it and the prefix are skipped by the filter).
    let start = if q.prefix && !needle.is_empty() {
        let mut s = needle.to_owned();
        s.pop();
        (!s.is_empty()).then_some(s)
    } else {
        None
    };
    let mut cursor = match (&q.last, start) {
        (Some(l), Some(s)) => Some(if *l > s { l.clone() } else { s }),
        (Some(l), None) => Some(l.clone()),
        (None, s) => s,
    };
    let mut names = Vec::new();
    let mut scanned = 0usize;
    loop {
        let page = reg.catalog(Some(CATALOG_BATCH), cursor.as_deref()).await?;
        for name in page.items {
            scanned = scanned.saturating_add(1);
            if q.prefix && !name.starts_with(needle) && name.as_str() > needle {
                return Ok(Found {
                    names,
                    next: None,
                    partial: false,
                });
            }
            let hit = if q.prefix {
                name.starts_with(needle)
            } else {
                name.contains(needle)
            };
            if hit && sees(&name) {
                if names.len() == q.n {
                    // One more than the page: there is a next page.
                    let next = names.last().cloned();
                    return Ok(Found {
                        names,
                        next,
                        partial: false,
                    });
                }
                names.push(name.clone());
            }
            cursor = Some(name);
            if scanned >= SCAN_MAX {
                return Ok(Found {
                    names,
                    next: cursor,
                    partial: true,
                });
            }
        }
        if !page.more {
            return Ok(Found {
                names,
                next: None,
                partial: false,
            });
        }
    }
}

/// A tag as its row shows it.
pub(crate) struct TagRow {
    pub tag: String,
    /// `None` when the tag went away between the listing and the read.
    pub digest: Option<Digest>,
    pub pushed: Option<SystemTime>,
    pub summary: Option<Summary>,
}

/// What a manifest is, in a few words.
pub(crate) struct Summary {
    pub media_type: String,
    /// "image", "index", or the artifact type.
    pub kind: String,
    /// Config and layers of an image; `None` for an index.
    pub size: Option<u64>,
    /// Platforms of an index.
    pub platforms: Vec<String>,
}

pub(crate) struct Tags {
    pub rows: Vec<TagRow>,
    /// Name order: the `last=` of the next page.
    pub next: Option<String>,
    /// Push-time order: whether a next page exists.
    pub more: bool,
    /// Push-time order was asked for but the repository has too many tags.
    pub too_many_to_sort: bool,
}

/// One page of a repository's tags: by name (a listing page), or by push
/// time (newest first) for repositories of at most [`PUSH_SORT_MAX`] tags.
pub(crate) async fn tags(reg: &Registry, repo: &RepoName, q: &TagQuery) -> Result<Tags> {
    if q.sort == TagSort::Pushed {
        let all = reg.tags(repo, Some(PUSH_SORT_MAX), None).await?;
        if !all.more {
            let mut timed: Vec<(String, Option<SystemTime>)> =
                futures_util::stream::iter(all.items)
                    .map(|t| async move {
                        let when = match Tag::parse(&t) {
                            Ok(tag) => reg.tag_info(repo, &tag).await?.and_then(|(_, w)| w),
                            Err(_) => None,
                        };
                        Ok::<_, Error>((t, when))
                    })
                    .buffered(CONCURRENCY * 2)
                    .try_collect()
                    .await?;
            // Newest first; the same time (or none) by name.
            timed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let start = q.page.saturating_mul(q.n).min(timed.len());
            let end = start.saturating_add(q.n).min(timed.len());
            let more = end < timed.len();
            let page: Vec<String> = timed.drain(start..end).map(|(t, _)| t).collect();
            return Ok(Tags {
                rows: rows(reg, repo, page).await?,
                next: None,
                more,
                too_many_to_sort: false,
            });
        }
        let page = reg.tags(repo, Some(q.n), q.last.as_deref()).await?;
        let next = page.items.last().filter(|_| page.more).cloned();
        return Ok(Tags {
            rows: rows(reg, repo, page.items).await?,
            next,
            more: page.more,
            too_many_to_sort: true,
        });
    }
    let page = reg.tags(repo, Some(q.n), q.last.as_deref()).await?;
    let next = page.items.last().filter(|_| page.more).cloned();
    Ok(Tags {
        rows: rows(reg, repo, page.items).await?,
        next,
        more: page.more,
        too_many_to_sort: false,
    })
}

/// The rows of a page of tags: digest and push time of each, and the
/// manifest it names summarised (bodies are cached by digest, so tags of
/// one manifest cost one read).
async fn rows(reg: &Registry, repo: &RepoName, tags: Vec<String>) -> Result<Vec<TagRow>> {
    futures_util::stream::iter(tags)
        .map(|t| async move {
            let Ok(tag) = Tag::parse(&t) else {
                return Ok(TagRow {
                    tag: t,
                    digest: None,
                    pushed: None,
                    summary: None,
                });
            };
            let Some((digest, pushed)) = reg.tag_info(repo, &tag).await? else {
                return Ok(TagRow {
                    tag: t,
                    digest: None,
                    pushed: None,
                    summary: None,
                });
            };
            let summary = match reg
                .manifest_get(repo, &Reference::Digest(digest.clone()))
                .await
            {
                Ok(m) => Some(summarise(&m.media_type, &m.body)),
                Err(Error::Registry(_)) => None,
                Err(e) => return Err(e),
            };
            Ok(TagRow {
                tag: t,
                digest: Some(digest),
                pushed,
                summary,
            })
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

fn summarise(media_type: &str, body: &[u8]) -> Summary {
    match manifest::parse(Some(media_type), body) {
        Ok(m) => {
            let (kind, size, platforms) = match m.kind {
                Kind::Index => (
                    "index".to_owned(),
                    None,
                    m.manifests.iter().map(platform).collect(),
                ),
                Kind::Image => (
                    kind_of(&m),
                    Some(
                        m.layers
                            .iter()
                            .chain(m.config.iter())
                            .fold(0u64, |a, d| a.saturating_add(d.size)),
                    ),
                    Vec::new(),
                ),
            };
            Summary {
                media_type: media_type.to_owned(),
                kind,
                size,
                platforms,
            }
        }
        Err(_) => Summary {
            media_type: media_type.to_owned(),
            kind: "unreadable manifest".into(),
            size: None,
            platforms: Vec::new(),
        },
    }
}

/// Helm charts' config media type.
pub(crate) const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// "image", "Helm chart", or the artifact type.
fn kind_of(m: &Manifest) -> String {
    let config = m.config.as_ref().map(|c| c.media_type.as_str());
    match (&m.artifact_type, config) {
        (_, Some(HELM_CONFIG)) => "Helm chart".into(),
        (Some(a), _) => a.clone(),
        (None, Some(OCI_CONFIG | DOCKER_CONFIG)) => "image".into(),
        (None, Some(c)) => c.to_owned(),
        (None, None) => "image".into(),
    }
}

/// `linux/arm64/v8` of an index entry ("unknown" without a platform).
pub(crate) fn platform(d: &Descriptor) -> String {
    let Some(p) = &d.platform else {
        return d
            .annotations
            .as_ref()
            .and_then(|a| a.get("vnd.docker.reference.type"))
            .cloned()
            .unwrap_or_else(|| "unknown".into());
    };
    let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let mut s = format!("{}/{}", field("os"), field("architecture"));
    if !field("variant").is_empty() {
        s.push('/');
        s.push_str(field("variant"));
    }
    s
}

/// What a tar layer is: can its files be listed?
pub(crate) fn is_tar_layer(media_type: &str) -> bool {
    // Plain or gzip tar (zstd is not read).
    let m = media_type;
    (m.contains(".tar") || m.ends_with("+tar") || m == "application/x-tar") && !m.contains("zstd")
}

/// Highlights of an image config.
#[derive(Default)]
pub(crate) struct ConfigInfo {
    pub created: Option<String>,
    pub platform: Option<String>,
    pub entrypoint: Option<String>,
    pub cmd: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<String>,
}

/// An image manifest with what it names.
pub(crate) struct ImageView {
    pub digest: Digest,
    pub manifest: Manifest,
    pub config: Option<ConfigInfo>,
    pub total: u64,
    pub kind: String,
}

pub(crate) struct ChildView {
    pub desc: Descriptor,
    pub platform: String,
    /// `None` when the child is not in the repository (or too many).
    pub image: Option<ImageView>,
}

/// Everything the manifest page shows.
pub(crate) struct ManifestView {
    pub digest: Digest,
    pub media_type: String,
    pub size: usize,
    /// Pretty-printed body.
    pub raw: String,
    pub parsed: Option<Manifest>,
    pub image: Option<ImageView>,
    pub children: Vec<ChildView>,
    /// Children not shown (past [`MAX_CHILDREN`]).
    pub children_hidden: usize,
    pub referrers: Vec<Descriptor>,
    pub kind: String,
}

pub(crate) async fn manifest(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
) -> Result<ManifestView> {
    let m = reg.manifest_get(repo, reference).await?;
    let parsed = manifest::parse(Some(&m.media_type), &m.body).ok();
    let raw = serde_json::from_slice::<serde_json::Value>(&m.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&m.body).into_owned());
    let referrers = reg.referrers(repo, &m.digest, None).await?;
    let mut view = ManifestView {
        digest: m.digest.clone(),
        media_type: m.media_type.clone(),
        size: m.body.len(),
        raw,
        parsed: None,
        image: None,
        children: Vec::new(),
        children_hidden: 0,
        referrers,
        kind: "manifest".into(),
    };
    let Some(p) = parsed else {
        return Ok(view);
    };
    match p.kind {
        Kind::Image => {
            let img = image(reg, repo, m.digest.clone(), p.clone()).await?;
            view.kind = img.kind.clone();
            view.image = Some(img);
        }
        Kind::Index => {
            view.kind = "index".into();
            view.children_hidden = p.manifests.len().saturating_sub(MAX_CHILDREN);
            view.children = futures_util::stream::iter(p.manifests.iter().cloned().enumerate())
                .map(|(i, desc)| async move {
                    let platform = platform(&desc);
                    let image = if i < MAX_CHILDREN {
                        match reg
                            .manifest_get(repo, &Reference::Digest(desc.digest.clone()))
                            .await
                        {
                            Ok(c) => match manifest::parse(Some(&c.media_type), &c.body) {
                                Ok(cm) if cm.kind == Kind::Image => {
                                    Some(image(reg, repo, c.digest, cm).await?)
                                }
                                _ => None,
                            },
                            Err(Error::Registry(_)) => None,
                            Err(e) => return Err(e),
                        }
                    } else {
                        None
                    };
                    Ok::<_, Error>(ChildView {
                        desc,
                        platform,
                        image,
                    })
                })
                .buffered(CONCURRENCY)
                .try_collect()
                .await?;
        }
    }
    view.parsed = Some(p);
    Ok(view)
}

async fn image(reg: &Registry, repo: &RepoName, digest: Digest, m: Manifest) -> Result<ImageView> {
    let total = m
        .layers
        .iter()
        .chain(m.config.iter())
        .fold(0u64, |a, d| a.saturating_add(d.size));
    let config = match &m.config {
        Some(c)
            if (c.media_type == OCI_CONFIG || c.media_type == DOCKER_CONFIG)
                && c.size <= MAX_CONFIG =>
        {
            config_info(reg, repo, &c.digest).await?
        }
        _ => None,
    };
    Ok(ImageView {
        digest,
        kind: kind_of(&m),
        manifest: m,
        config,
        total,
    })
}

/// Read an image config (at most [`MAX_CONFIG`] bytes) and pick out what
/// people look for.
async fn config_info(reg: &Registry, repo: &RepoName, d: &Digest) -> Result<Option<ConfigInfo>> {
    let mut obj = match reg.blob_get(repo, d, None).await {
        Ok(o) => o,
        Err(Error::Registry(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = obj.body.next().await {
        let chunk = chunk?;
        if bytes.len().saturating_add(chunk.len()) as u64 > MAX_CONFIG {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let list = |v: &serde_json::Value| {
        v.as_array().map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect::<Vec<_>>()
        })
    };
    let c = &v["config"];
    let mut info = ConfigInfo {
        created: s(&v["created"]),
        entrypoint: list(&c["Entrypoint"]).map(|l| shell_words(&l)),
        cmd: list(&c["Cmd"]).map(|l| shell_words(&l)),
        workdir: s(&c["WorkingDir"]).filter(|w| !w.is_empty()),
        user: s(&c["User"]).filter(|w| !w.is_empty()),
        env: list(&c["Env"]).unwrap_or_default(),
        ..ConfigInfo::default()
    };
    if let (Some(os), Some(arch)) = (s(&v["os"]), s(&v["architecture"])) {
        let mut p = format!("{os}/{arch}");
        if let Some(var) = s(&v["variant"]) {
            p.push('/');
            p.push_str(&var);
        }
        info.platform = Some(p);
    }
    if let Some(labels) = c["Labels"].as_object() {
        for (k, val) in labels {
            info.labels.insert(
                k.clone(),
                val.as_str().map_or_else(|| val.to_string(), str::to_owned),
            );
        }
    }
    if let Some(ports) = c["ExposedPorts"].as_object() {
        info.ports = ports.keys().cloned().collect();
    }
    Ok(Some(info))
}

/// A command as a shell would take it: words with spaces or quotes in
/// single quotes.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Is this manifest a file package or an oras-style artifact (files as
/// layers), rather than a container image?
pub(crate) fn is_files_artifact(m: &Manifest) -> bool {
    let config = m.config.as_ref().map(|c| c.media_type.as_str());
    m.kind == Kind::Image
        && config != Some(OCI_CONFIG)
        && config != Some(DOCKER_CONFIG)
        && config != Some(HELM_CONFIG)
}

/// The file name oras gives a layer.
pub(crate) fn title(d: &Descriptor) -> Option<&str> {
    d.annotations
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.title"))
        .map(String::as_str)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_like_a_shell_would() {
        let w = |v: &[&str]| shell_words(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(w(&["/bin/sh", "-c", "echo hi"]), "/bin/sh -c 'echo hi'");
        assert_eq!(w(&["it's"]), "'it'\\''s'");
        assert_eq!(w(&[""]), "''");
    }

    #[test]
    fn tar_layers() {
        assert!(is_tar_layer("application/vnd.oci.image.layer.v1.tar"));
        assert!(is_tar_layer("application/vnd.oci.image.layer.v1.tar+gzip"));
        assert!(is_tar_layer(
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        ));
        assert!(!is_tar_layer("application/vnd.oci.image.layer.v1.tar+zstd"));
        assert!(!is_tar_layer("text/plain"));
    }
}
