use super::*;
use crate::fs::{FsBackend, collect};
use oci::media;

fn stream(data: &'static [u8]) -> ByteStream {
    Box::pin(futures_util::stream::iter(
        data.chunks(3)
            .map(|c| Ok(Bytes::from_static(c)))
            .collect::<Vec<_>>(),
    ))
}

fn cr(start: u64, end: u64) -> Option<ChunkRange> {
    Some(ChunkRange::new(start, end).unwrap())
}

fn name(s: &str) -> RepoName {
    RepoName::parse(s, 255).unwrap()
}

fn open(dir: &std::path::Path) -> Registry {
    Registry::new(
        Arc::new(FsBackend::open(dir, true).unwrap()),
        RegistryConfig::default(),
    )
}

fn code(e: Error) -> ErrorCode {
    match e {
        Error::Registry(r) => r.code,
        other => panic!("not a registry error: {other:?}"),
    }
}

#[tokio::test]
async fn chunked_upload_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let repo = name("a/b");
    let id = {
        let r = open(dir.path());
        let id = r
            .upload_start(&repo, Algorithm::Sha256, |_| {})
            .await
            .unwrap();
        assert_eq!(
            r.upload_append(&repo, &id, stream(b"hello "), cr(0, 5))
                .await
                .unwrap(),
            6
        );
        // Out of order.
        assert!(matches!(
            r.upload_append(&repo, &id, stream(b"x"), cr(3, 3)).await,
            Err(Error::RangeNotSatisfiable { offset: 6 })
        ));
        // Range that does not match the body: rolled back.
        assert_eq!(
            code(
                r.upload_append(&repo, &id, stream(b"xyz"), cr(6, 6))
                    .await
                    .unwrap_err()
            ),
            ErrorCode::SizeInvalid
        );
        // A body longer than its range is refused (and rolled back) as
        // soon as it passes the range, also at the u64 edge.
        for range in [cr(6, 7), cr(6, u64::MAX)] {
            assert_eq!(
                code(
                    r.upload_append(&repo, &id, stream(b"xyzxyzxyz"), range)
                        .await
                        .unwrap_err()
                ),
                ErrorCode::SizeInvalid
            );
        }
        assert_eq!(r.upload_status(&repo, &id).await.unwrap(), 6);
        id
    };
    let r = open(dir.path());
    assert_eq!(r.upload_status(&repo, &id).await.unwrap(), 6);
    // Another repository cannot see the session.
    assert_eq!(
        code(r.upload_status(&name("other"), &id).await.unwrap_err()),
        ErrorCode::BlobUploadUnknown
    );
    let d = Digest::sha256_of(b"hello world");
    r.upload_finish(&repo, &id, Some(stream(b"world")), None, &d)
        .await
        .unwrap();
    assert_eq!(r.blob_size(&repo, &d).await.unwrap(), Some(11));
    assert_eq!(r.blob_size(&name("other"), &d).await.unwrap(), None);
    let body = r.blob_get(&repo, &d, Some((6, 11))).await.unwrap().body;
    assert_eq!(collect(body).await.unwrap(), b"world");
    assert_eq!(
        code(r.upload_status(&repo, &id).await.unwrap_err()),
        ErrorCode::BlobUploadUnknown
    );
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let repo = name("x");
    let wrong = Digest::sha256_of(b"other");
    assert_eq!(
        code(
            r.upload_whole(&repo, stream(b"data"), &wrong)
                .await
                .unwrap_err()
        ),
        ErrorCode::DigestInvalid
    );
    assert_eq!(r.blob_size(&repo, &wrong).await.unwrap(), None);
    assert_eq!(
        r.blob_size(&repo, &Digest::sha256_of(b"data"))
            .await
            .unwrap(),
        None
    );
    assert!(r.backend().upload_list().await.unwrap().is_empty());
}

/// `upload_whole_verified` says "verified" for a body that matched (small
/// and streamed), never for one that did not.
#[tokio::test]
async fn upload_whole_verified_says_so_only_for_a_match() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let repo = name("x");
    let big: &'static [u8] = Box::leak(vec![7u8; 600 << 10].into_boxed_slice());
    let stream = |data: &'static [u8]| -> ByteStream {
        Box::pin(futures_util::stream::iter(
            data.chunks(64 << 10)
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        ))
    };
    for data in [&b"data"[..], big] {
        let d = Digest::sha256_of(data);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let n = r
            .upload_whole_verified(&repo, stream(data), &d, tx)
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(rx.await.is_ok(), "a match is reported");
        assert_eq!(r.blob_size(&repo, &d).await.unwrap(), Some(n));

        let wrong = Digest::sha256_of(b"other");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let e = r
            .upload_whole_verified(&repo, stream(data), &wrong, tx)
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::DigestInvalid);
        assert!(
            rx.await.is_err(),
            "a mismatch is never reported as verified"
        );
    }
}

#[tokio::test]
async fn sha512_and_algorithm_switch() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let repo = name("x");
    let d = Digest::of(Algorithm::Sha512, b"abc");
    r.upload_whole(&repo, stream(b"abc"), &d).await.unwrap();
    assert_eq!(r.blob_size(&repo, &d).await.unwrap(), Some(3));
    // A sha256 session closed with a sha512 digest is hashed again, not refused.
    let id = r
        .upload_start(&repo, Algorithm::Sha256, |_| {})
        .await
        .unwrap();
    let d2 = Digest::of(Algorithm::Sha512, b"defg");
    r.upload_finish(&repo, &id, Some(stream(b"defg")), None, &d2)
        .await
        .unwrap();
    assert_eq!(r.blob_size(&repo, &d2).await.unwrap(), Some(4));
}

fn image(config: &Digest, layer: &Digest, subject: Option<&Digest>) -> Bytes {
    let subject = subject
        .map(|s| {
            format!(
                r#","subject":{{"mediaType":"{}","digest":"{s}","size":10}}"#,
                media::OCI_MANIFEST
            )
        })
        .unwrap_or_default();
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/x.cfg","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/x.layer","digest":"{layer}","size":3}}],"annotations":{{"k":"v"}}{subject}}}"#,
        media::OCI_MANIFEST
    ))
}

#[tokio::test]
async fn manifests_tags_referrers() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let repo = name("m");
    let cfg = Digest::sha256_of(b"{}");
    let layer = Digest::sha256_of(b"abc");
    let tag = Reference::Tag(Tag::parse("v1").unwrap());
    let body = image(&cfg, &layer, None);
    // Blobs missing.
    assert_eq!(
        code(
            r.manifest_put(&repo, &tag, Some(media::OCI_MANIFEST), body.clone(), &[])
                .await
                .unwrap_err()
        ),
        ErrorCode::ManifestBlobUnknown
    );
    r.upload_whole(&repo, stream(b"{}"), &cfg).await.unwrap();
    r.upload_whole(&repo, stream(b"abc"), &layer).await.unwrap();
    let put = r
        .manifest_put(
            &repo,
            &tag,
            Some(media::OCI_MANIFEST),
            body.clone(),
            &[Tag::parse("latest").unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(put.digest, Digest::sha256_of(&body));
    let got = r.manifest_get(&repo, &tag).await.unwrap();
    assert_eq!(got.body, body);
    assert_eq!(got.media_type, media::OCI_MANIFEST);
    assert_eq!(
        r.tags(&repo, None, None).await.unwrap().items,
        ["latest", "v1"]
    );
    // A tag's digest and push time (the web UI's tag rows).
    let before = std::time::SystemTime::now() - Duration::from_secs(60);
    let (d, when) = r
        .tag_info(&repo, &Tag::parse("v1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d, put.digest);
    assert!(when.is_some_and(|t| t > before), "{when:?}");
    assert!(
        r.tag_info(&repo, &Tag::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // A referrer whose subject is the image.
    let sig = image(&cfg, &layer, Some(&put.digest));
    let sig_put = r
        .manifest_put(
            &repo,
            &Reference::Digest(Digest::sha256_of(&sig)),
            Some(media::OCI_MANIFEST),
            sig.clone(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(sig_put.subject.as_ref(), Some(&put.digest));
    let refs = r.referrers(&repo, &put.digest, None).await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x.cfg"));
    assert_eq!(refs[0].annotations.as_ref().unwrap()["k"], "v");
    assert!(
        r.referrers(&repo, &put.digest, Some("other"))
            .await
            .unwrap()
            .is_empty()
    );

    // Tag delete removes only the tag; digest delete removes every tag.
    r.manifest_delete(&repo, &Reference::Tag(Tag::parse("latest").unwrap()))
        .await
        .unwrap();
    assert!(r.manifest_get(&repo, &tag).await.is_ok());
    r.manifest_delete(&repo, &Reference::Digest(put.digest.clone()))
        .await
        .unwrap();
    assert_eq!(
        code(r.manifest_get(&repo, &tag).await.err().unwrap()),
        ErrorCode::ManifestUnknown
    );
    assert!(r.tags(&repo, None, None).await.unwrap().items.is_empty());
    r.manifest_delete(&repo, &Reference::Digest(sig_put.digest.clone()))
        .await
        .unwrap();
    assert!(
        r.referrers(&repo, &put.digest, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(r.catalog(None, None).await.unwrap().items, ["m"]);
}

#[tokio::test]
async fn expiry_removes_idle_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let repo = name("x");
    let id = r
        .upload_start(&repo, Algorithm::Sha256, |_| {})
        .await
        .unwrap();
    assert_eq!(
        r.expire_uploads(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    assert_eq!(r.expire_uploads(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(
        code(r.upload_status(&repo, &id).await.unwrap_err()),
        ErrorCode::BlobUploadUnknown
    );
}

/// Records every end a registry reports.
#[derive(Default)]
struct Ends(std::sync::Mutex<Vec<(String, SessionEnd)>>);

impl SessionObserver for Ends {
    fn ended(&self, id: &str, how: SessionEnd) {
        self.0.lock().unwrap().push((id.to_owned(), how));
    }
}

impl Ends {
    fn take(&self) -> Vec<(String, SessionEnd)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn every_session_end_is_reported_once_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let ends = Arc::new(Ends::default());
    let r = open(dir.path()).with_session_observer(ends.clone());
    let repo = name("mine");
    let other = name("other");
    let start = || async {
        let mut claimed = None;
        let id = r
            .upload_start(&repo, Algorithm::Sha256, |id| claimed = Some(id.to_owned()))
            .await
            .unwrap();
        assert_eq!(claimed.as_deref(), Some(id.as_str()));
        id
    };

    // Requests naming the session under another repository end nothing.
    let a = start().await;
    assert_eq!(
        code(r.upload_status(&other, &a).await.unwrap_err()),
        ErrorCode::BlobUploadUnknown
    );
    let e = r
        .upload_append(&other, &a, stream(b""), None)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::BlobUploadUnknown);
    let good = Digest::of(Algorithm::Sha256, b"abc");
    let e = r
        .upload_finish(&other, &a, None, None, &good)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::BlobUploadUnknown);
    let e = r.upload_cancel(&other, &a).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::BlobUploadUnknown);
    // A chunk out of order ends nothing either.
    assert!(matches!(
        r.upload_append(
            &repo,
            &a,
            stream(b"x"),
            Some(oci::ChunkRange::new(5, 5).unwrap())
        )
        .await,
        Err(Error::RangeNotSatisfiable { offset: 0 })
    ));
    assert!(ends.take().is_empty());

    // Committed.
    r.upload_append(&repo, &a, stream(b"abc"), None)
        .await
        .unwrap();
    r.upload_finish(&repo, &a, None, None, &good).await.unwrap();
    assert_eq!(ends.take(), vec![(a.clone(), SessionEnd::Committed)]);

    // Digest mismatch.
    let b = start().await;
    let e = r
        .upload_finish(&repo, &b, Some(stream(b"abd")), None, &good)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::DigestInvalid);
    assert_eq!(ends.take(), vec![(b.clone(), SessionEnd::DigestMismatch)]);
    // Asking again is a 404 and reports nothing more.
    let e = r.upload_cancel(&repo, &b).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::BlobUploadUnknown);

    // Cancelled.
    let c = start().await;
    r.upload_cancel(&repo, &c).await.unwrap();
    assert_eq!(ends.take(), vec![(c.clone(), SessionEnd::Cancelled)]);

    // Expired.
    let d = start().await;
    assert_eq!(r.expire_uploads(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(ends.take(), vec![(d, SessionEnd::Expired)]);
    assert!(ends.take().is_empty());
}

/// Records the events the registry emits; fails while `fail` is set.
#[derive(Default)]
struct Recorder {
    got: std::sync::Mutex<Vec<crate::events::Event>>,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl crate::events::EventSink for Recorder {
    fn wants(&self, kind: EventKind, _: &RepoName) -> bool {
        kind != EventKind::ManifestPulled
    }
    async fn emit(&self, events: Vec<crate::events::Event>) -> io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("outbox down"));
        }
        self.got.lock().unwrap().extend(events);
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> Vec<(EventKind, Option<String>, Option<Digest>)> {
        std::mem::take(&mut *self.got.lock().unwrap())
            .into_iter()
            .map(|e| (e.kind, e.tag.map(|t| t.as_str().to_owned()), e.digest))
            .collect()
    }
}

#[tokio::test]
async fn changes_are_told_to_the_event_sink_after_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::default());
    let r = open(dir.path()).with_event_sink(rec.clone());
    let repo = name("ev/app");
    let cfg = Digest::sha256_of(b"{}");
    let layer = Digest::sha256_of(b"abc");
    r.upload_whole(&repo, stream(b"{}"), &cfg).await.unwrap();
    r.upload_whole(&repo, stream(b"abc"), &layer).await.unwrap();
    assert!(rec.take().is_empty(), "blobs make no events");
    let body = image(&cfg, &layer, None);
    let v1 = Reference::Tag(Tag::parse("v1").unwrap());
    let d = r
        .manifest_put(
            &repo,
            &v1,
            Some(media::OCI_MANIFEST),
            body.clone(),
            &[Tag::parse("latest").unwrap()],
        )
        .await
        .unwrap()
        .digest;
    let some = Some(d.clone());
    assert_eq!(
        rec.take(),
        [
            (EventKind::ManifestPushed, None, some.clone()),
            (EventKind::TagSet, Some("v1".into()), some.clone()),
            (EventKind::TagSet, Some("latest".into()), some.clone()),
        ]
    );
    // A refused push tells nothing.
    assert!(
        r.manifest_put(&repo, &v1, Some(media::OCI_MANIFEST), Bytes::from("{"), &[])
            .await
            .is_err()
    );
    assert!(rec.take().is_empty());
    // Pulls are not wanted by this sink: nothing, and no error.
    let m = r.manifest_get(&repo, &v1).await.unwrap();
    r.record_pull(&repo, &v1, &m).await.unwrap();
    assert!(rec.take().is_empty());
    // A tag delete names the digest the tag named.
    r.manifest_delete(&repo, &v1).await.unwrap();
    assert_eq!(
        rec.take(),
        [(EventKind::TagDeleted, Some("v1".into()), some.clone())]
    );
    // A manifest delete: its tags first, then the manifest.
    r.manifest_delete(&repo, &Reference::Digest(d.clone()))
        .await
        .unwrap();
    assert_eq!(
        rec.take(),
        [
            (EventKind::TagDeleted, Some("latest".into()), some.clone()),
            (EventKind::ManifestDeleted, None, some.clone()),
        ]
    );
    // What a pull-through cache stores is no push.
    r.manifest_put_cached(&repo, &v1, Some(media::OCI_MANIFEST), body.clone())
        .await
        .unwrap();
    assert!(rec.take().is_empty());
    // A sink that cannot record fails the call; the change is made.
    rec.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let v2 = Reference::Tag(Tag::parse("v2").unwrap());
    assert!(matches!(
        r.manifest_put(&repo, &v2, Some(media::OCI_MANIFEST), body, &[])
            .await,
        Err(Error::Io(_))
    ));
    assert_eq!(r.manifest_get(&repo, &v2).await.unwrap().digest, d);
}

/// A pull-through cache's eviction removes its own manifests and their
/// tags, whatever `delete_enabled` says, never a pushed manifest, and
/// leaves the blob links to garbage collection.
#[tokio::test]
async fn only_cached_manifests_are_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let repo = name("cache/app");
    let cfg = Digest::sha256_of(b"{}");
    let layer = Digest::sha256_of(b"abc");
    r.upload_whole(&repo, stream(b"{}"), &cfg).await.unwrap();
    r.upload_whole(&repo, stream(b"abc"), &layer).await.unwrap();
    let cached = image(&cfg, &layer, None);
    let v1 = Reference::Tag(Tag::parse("v1").unwrap());
    let put = r
        .manifest_put_cached(&repo, &v1, Some(media::OCI_MANIFEST), cached)
        .await
        .unwrap();
    let pushed = image(&cfg, &layer, Some(&Digest::sha256_of(b"other")));
    let v2 = Reference::Tag(Tag::parse("v2").unwrap());
    let pushed_put = r
        .manifest_put(&repo, &v2, Some(media::OCI_MANIFEST), pushed, &[])
        .await
        .unwrap();
    assert!(
        !r.manifest_evict_cached(&repo, &pushed_put.digest)
            .await
            .unwrap()
    );
    assert!(r.manifest_evict_cached(&repo, &put.digest).await.unwrap());
    assert!(!r.manifest_evict_cached(&repo, &put.digest).await.unwrap());
    assert_eq!(r.tags(&repo, None, None).await.unwrap().items, ["v2"]);
    assert_eq!(
        code(r.manifest_get(&repo, &v1).await.unwrap_err()),
        ErrorCode::ManifestUnknown
    );
    r.manifest_get(&repo, &v2).await.unwrap();
    assert_eq!(r.blob_size(&repo, &layer).await.unwrap(), Some(3));
}
