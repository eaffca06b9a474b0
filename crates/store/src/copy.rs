//! Copy a whole store from one backend to another: a data directory into a
//! bucket, a bucket back into a data directory, or between buckets.
//!
//! Order makes an interrupted copy harmless and a repeated one cheap:
//!
//! 1. content (`blobs/`), each blob streamed through the destination's
//!    upload path and verified against its digest on the way (a blob whose
//!    bytes do not match is reported and not copied); a blob the
//!    destination already holds at the same size is skipped;
//! 2. repository links, referrers and manifests' media types
//!    (`repositories/`, tags excepted);
//! 3. tags, once what they point at is in place;
//! 4. the catalog.
//!
//! Upload sessions are not copied. Memory stays bounded: keys are listed
//! a page at a time and blobs stream.

use crate::backend::{Backend, KeyPages};
use crate::keys;
use crate::registry::{Error, Registry};
use oci::Digest;
use serde::Serialize;
use std::io;

/// Keys listed per request.
const PAGE: usize = 1000;

#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    /// Blobs copied (and verified).
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Blobs the destination already held.
    pub blobs_present: u64,
    /// Links, tags, referrers and catalog entries copied.
    pub metadata: u64,
    /// What could not be copied, and why.
    pub errors: Vec<String>,
}

impl CopyReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Copy everything in `src` into the store of `dst`. Errors of single items
/// are collected in the report; an error of either storage as a whole
/// (unreachable, listing failed) stops the copy.
pub async fn copy_store(
    src: &dyn Backend,
    dst: &Registry,
    progress: bool,
) -> io::Result<CopyReport> {
    let mut report = CopyReport::default();
    let note = |msg: String| {
        if progress {
            eprintln!("{msg}");
        }
    };

    // 1. Content.
    let mut pages = KeyPages::new(src, "blobs/", PAGE);
    while let Some(page) = pages.next().await? {
        for rel in &page {
            let key = format!("blobs/{rel}");
            let Some(digest) = blob_digest(rel) else {
                report
                    .errors
                    .push(format!("{key}: not a blob key, not copied"));
                continue;
            };
            copy_blob(src, dst, &key, &digest, &mut report).await?;
            let n = report.blobs + report.blobs_present;
            if n.is_multiple_of(100) {
                note(format!("blobs: {n} done"));
            }
        }
    }
    note(format!(
        "blobs: {} copied ({} bytes), {} already there",
        report.blobs, report.blob_bytes, report.blobs_present
    ));

    // 2-4. Links, then tags, then the catalog.
    // (prefix, take tag keys?): None takes every key.
    let passes = [
        ("repositories/", Some(false)),
        ("repositories/", Some(true)),
        (keys::CATALOG_PREFIX, None),
    ];
    for (prefix, wanted) in passes {
        let mut pages = KeyPages::new(src, prefix, PAGE);
        while let Some(page) = pages.next().await? {
            let wanted = |k: &&String| wanted.is_none_or(|tags| k.contains("/_tags/") == tags);
            for rel in page.iter().filter(wanted) {
                let key = format!("{prefix}{rel}");
                match src.read(&key).await? {
                    Some(bytes) => {
                        dst.backend().put(&key, bytes).await?;
                        report.metadata += 1;
                    }
                    // Removed from the source since it was listed.
                    None => report
                        .errors
                        .push(format!("{key}: vanished during the copy")),
                }
            }
        }
    }
    note(format!("metadata: {} objects copied", report.metadata));
    Ok(report)
}

/// `sha256/ab/abcdef...` → the digest, if the key is well-formed.
fn blob_digest(rel: &str) -> Option<Digest> {
    let mut parts = rel.split('/');
    let (alg, dir, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !hex.starts_with(dir) || dir.len() != 2 {
        return None;
    }
    format!("{alg}:{hex}").parse().ok()
}

async fn copy_blob(
    src: &dyn Backend,
    dst: &Registry,
    key: &str,
    digest: &Digest,
    report: &mut CopyReport,
) -> io::Result<()> {
    let Some(obj) = src.get(key, None).await? else {
        report
            .errors
            .push(format!("{key}: vanished during the copy"));
        return Ok(());
    };
    if let Some(there) = dst.backend().head(key).await?
        && there.size == obj.meta.size
    {
        report.blobs_present += 1;
        return Ok(());
    }
    match dst.store_blob(obj.body, digest).await {
        Ok(size) => {
            report.blobs += 1;
            report.blob_bytes = report.blob_bytes.saturating_add(size);
        }
        Err(Error::Io(e)) => return Err(e),
        // A digest mismatch (the source is damaged) or an unreadable body.
        Err(e) => report.errors.push(format!("{digest}: {e}; not copied")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryConfig;
    use crate::fs::FsBackend;
    use bytes::Bytes;
    use std::sync::Arc;

    #[test]
    fn blob_keys_parse() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            blob_digest(&format!("sha256/e3/{hex}"))
                .unwrap()
                .to_string(),
            format!("sha256:{hex}")
        );
        for bad in [
            format!("sha256/aa/{hex}"),
            format!("sha256/e3/{hex}/x"),
            "sha256/e3".into(),
            format!("md5/e3/{hex}"),
        ] {
            assert!(blob_digest(&bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn copies_verified_content_and_metadata_and_reports_damage() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let src = FsBackend::open(a.path(), false).unwrap();
        let good = Bytes::from_static(b"good bytes");
        let good_d = Digest::sha256_of(&good);
        src.put(&keys::blob(&good_d), good.clone()).await.unwrap();
        // Damaged: stored under the digest of other bytes.
        let bad_d = Digest::sha256_of(b"what it should be");
        src.put(&keys::blob(&bad_d), Bytes::from_static(b"rot"))
            .await
            .unwrap();
        src.put("repositories/r/_tags/t", Bytes::from_static(b"x"))
            .await
            .unwrap();
        src.put("_catalog/r", Bytes::new()).await.unwrap();
        let dst_fs = FsBackend::open(b.path(), false).unwrap();
        let dst = Registry::new(Arc::new(dst_fs.clone()), RegistryConfig::default());

        let r = copy_store(&src, &dst, false).await.unwrap();
        assert_eq!((r.blobs, r.blobs_present, r.metadata), (1, 0, 2));
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(r.errors[0].contains(&bad_d.to_string()), "{:?}", r.errors);
        assert_eq!(dst_fs.read(&keys::blob(&good_d)).await.unwrap(), Some(good));
        assert!(dst_fs.head(&keys::blob(&bad_d)).await.unwrap().is_none());
        assert!(dst_fs.head("_catalog/r").await.unwrap().is_some());

        // Again: nothing to copy, the damage reported again.
        let r = copy_store(&src, &dst, false).await.unwrap();
        assert_eq!((r.blobs, r.blobs_present), (0, 1));
        assert_eq!(r.errors.len(), 1);
    }
}
