//! `wharf fsck`: check a store while it serves. Every repository's tags,
//! manifests and links are followed to the content they need; every blob
//! is hashed (or one in `sample`). Repairs, with `repair`, only what loses
//! nothing: a link whose content is gone is removed (the repository never
//! had the bytes then), and content whose bytes do not match its digest is
//! removed (the bytes are lost already; removing them makes clients upload
//! them again instead of getting corrupt data). Everything else is reported.

use super::{PAGE, content_digest, link_digest};
use crate::backend::{Backend, KeyPages};
use crate::keys as rk;
use crate::registry::Registry;
use futures_util::StreamExt;
use oci::manifest;
use oci::{Digest, RepoName};
use serde::Serialize;
use std::io;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug)]
pub struct FsckOptions {
    /// Hash one blob in this many (1 or 0: every blob).
    pub sample: u64,
    /// Remove dangling links, dangling referrer entries, stale upload
    /// sessions and corrupt content.
    pub repair: bool,
    /// Upload sessions idle for longer than this are orphaned (their
    /// client gave up; the server expires them after `uploads.expiry_secs`).
    pub upload_expiry: Duration,
}

impl Default for FsckOptions {
    fn default() -> Self {
        FsckOptions {
            sample: 0,
            repair: false,
            upload_expiry: Duration::from_secs(86_400),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub repositories: u64,
    pub manifests: u64,
    pub blobs_hashed: u64,
    pub bytes_hashed: u64,
    /// Content whose bytes do not match its digest.
    pub corrupt_blobs: Vec<String>,
    /// `repo@digest`: a blob link whose content is missing.
    pub dangling_links: Vec<String>,
    /// `repo:tag -> digest`: a tag naming a manifest the repository lacks.
    pub broken_tags: Vec<String>,
    /// `repo@manifest -> digest`: a manifest needing a blob the repository lacks.
    pub incomplete_manifests: Vec<String>,
    /// `repo@digest`: a manifest link whose body is missing or unreadable.
    pub unreadable_manifests: Vec<String>,
    /// `repo@subject <- referrer`: a referrer entry whose referrer manifest
    /// the repository lacks.
    pub dangling_referrers: Vec<String>,
    /// Upload sessions idle for longer than the expiry: orphaned data.
    pub stale_uploads: Vec<String>,
    /// Items repaired (removed), when asked to.
    pub repaired: u64,
}

impl FsckReport {
    pub fn clean(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.dangling_links.is_empty()
            && self.broken_tags.is_empty()
            && self.incomplete_manifests.is_empty()
            && self.unreadable_manifests.is_empty()
            && self.dangling_referrers.is_empty()
            && self.stale_uploads.is_empty()
    }
}

pub async fn check(reg: &Registry, opts: &FsckOptions) -> io::Result<FsckReport> {
    let b = reg.backend().as_ref();
    let mut report = FsckReport::default();
    // Content first: corrupt content removed by a repair then shows as a
    // dangling link below, which the same run removes too.
    let mut n = 0u64;
    for_each_key(
        b,
        "blobs/",
        async |rel: String, report: &mut FsckReport| {
            let Some(d) = content_digest(&rel) else {
                return Ok(());
            };
            n += 1;
            if opts.sample > 1 && !(n - 1).is_multiple_of(opts.sample) {
                return Ok(());
            }
            let key = rk::blob(&d);
            let Some(obj) = b.get(&key, None).await? else {
                return Ok(());
            };
            let mut h = d.algorithm().digester();
            let mut body = obj.body;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                size = size.saturating_add(chunk.len() as u64);
                h.update(&chunk);
            }
            report.blobs_hashed += 1;
            report.bytes_hashed = report.bytes_hashed.saturating_add(size);
            if h.finish() != d {
                report.corrupt_blobs.push(d.to_string());
                if opts.repair {
                    b.delete(&key).await?;
                    report.repaired += 1;
                }
            }
            Ok(())
        },
        &mut report,
    )
    .await?;
    for_each_key(
        b,
        rk::CATALOG_PREFIX,
        async |name: String, report: &mut FsckReport| {
            if let Ok(name) = RepoName::parse(&name, usize::MAX) {
                report.repositories += 1;
                check_repository(b, &name, opts, report).await?;
            }
            Ok(())
        },
        &mut report,
    )
    .await?;
    // Upload data nobody will finish.
    let now = SystemTime::now();
    for (id, modified) in b.upload_list().await? {
        let idle = now.duration_since(modified).unwrap_or_default();
        if idle >= opts.upload_expiry || !crate::registry::valid_upload_id(&id) {
            report.stale_uploads.push(id.clone());
            if opts.repair {
                b.upload_delete(&id).await?;
                report.repaired += 1;
            }
        }
    }
    Ok(report)
}

async fn check_repository(
    b: &dyn Backend,
    name: &RepoName,
    opts: &FsckOptions,
    report: &mut FsckReport,
) -> io::Result<()> {
    // Blob links to content.
    let prefix = format!("repositories/{name}/_blobs/");
    for_each_key(
        b,
        &prefix,
        async |rel: String, report: &mut FsckReport| {
            if let Some(d) = link_digest(&rel)
                && b.head(&rk::blob(&d)).await?.is_none()
            {
                report.dangling_links.push(format!("{name}@{d}"));
                if opts.repair {
                    b.delete(&rk::repo_blob(name, &d)).await?;
                    report.repaired += 1;
                }
            }
            Ok(())
        },
        report,
    )
    .await?;
    // Manifests to their bodies and the blobs they need.
    let prefix = format!("repositories/{name}/_manifests/");
    for_each_key(
        b,
        &prefix,
        async |rel: String, report: &mut FsckReport| {
            let Some(d) = link_digest(&rel) else {
                return Ok(());
            };
            report.manifests += 1;
            let parsed = match b.read(&rk::blob(&d)).await? {
                Some(body) => manifest::parse(None, &body).ok(),
                None => None,
            };
            let Some(m) = parsed else {
                report.unreadable_manifests.push(format!("{name}@{d}"));
                return Ok(());
            };
            // A pull-through cache's manifest: what it names is fetched
            // when a client asks for it, not before.
            let link = b.read(&rk::repo_manifest(name, &d)).await?;
            let cached = link
                .and_then(|l| serde_json::from_slice::<serde_json::Value>(&l).ok())
                .is_some_and(|l| l["cached"] == true);
            if cached {
                return Ok(());
            }
            for desc in m.required_blobs() {
                let linked = b.head(&rk::repo_blob(name, &desc.digest)).await?.is_some();
                let stored = b.head(&rk::blob(&desc.digest)).await?.is_some();
                if !(linked && stored) {
                    report
                        .incomplete_manifests
                        .push(format!("{name}@{d} -> {}", desc.digest));
                }
            }
            for desc in &m.manifests {
                if b.head(&rk::repo_manifest(name, &desc.digest))
                    .await?
                    .is_none()
                {
                    report
                        .incomplete_manifests
                        .push(format!("{name}@{d} -> {}", desc.digest));
                }
            }
            Ok(())
        },
        report,
    )
    .await?;
    // Referrer entries to their referrers.
    let prefix = format!("repositories/{name}/_referrers/");
    for_each_key(
        b,
        &prefix,
        async |rel: String, report: &mut FsckReport| {
            // <alg>/<subject hex>/<alg>-<referrer hex>
            let mut parts = rel.split('/');
            let (Some(alg), Some(subject), Some(file)) = (parts.next(), parts.next(), parts.next())
            else {
                return Ok(());
            };
            let Some(referrer) = file
                .split_once('-')
                .and_then(|(a, h)| format!("{a}:{h}").parse::<Digest>().ok())
            else {
                return Ok(());
            };
            if b.head(&rk::repo_manifest(name, &referrer)).await?.is_none() {
                report
                    .dangling_referrers
                    .push(format!("{name}@{alg}:{subject} <- {referrer}"));
                if opts.repair {
                    b.delete(&format!("{prefix}{rel}")).await?;
                    report.repaired += 1;
                }
            }
            Ok(())
        },
        report,
    )
    .await?;
    // Tags to manifests.
    let prefix = rk::tags_prefix(name);
    for_each_key(
        b,
        &prefix,
        async |tag: String, report: &mut FsckReport| {
            let value = b.read(&format!("{prefix}{tag}")).await?;
            let target = value
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<Digest>().ok());
            let ok = match &target {
                Some(d) => b.head(&rk::repo_manifest(name, d)).await?.is_some(),
                None => false,
            };
            if !ok {
                let to = target.map_or_else(|| "(unreadable)".to_owned(), |d| d.to_string());
                report.broken_tags.push(format!("{name}:{tag} -> {to}"));
            }
            Ok(())
        },
        report,
    )
    .await
}

/// Call `f` on every key below `prefix`, a page at a time.
async fn for_each_key<F>(
    b: &dyn Backend,
    prefix: &str,
    mut f: F,
    report: &mut FsckReport,
) -> io::Result<()>
where
    F: AsyncFnMut(String, &mut FsckReport) -> io::Result<()>,
{
    let mut pages = KeyPages::new(b, prefix, PAGE);
    while let Some(page) = pages.next().await? {
        for key in page {
            f(key, report).await?;
        }
    }
    Ok(())
}
