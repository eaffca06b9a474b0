//! The collector on the filesystem backend, and the races of docs/gc.md
//! injected between its two looks.

use super::*;
use crate::RegistryConfig;
use crate::backend::ByteStream;
use crate::fs::FsBackend;
use oci::{Reference, Tag};
use std::sync::Arc;

pub(super) fn name(s: &str) -> RepoName {
    RepoName::parse(s, 255).unwrap()
}

pub(super) fn open(dir: &std::path::Path) -> Arc<Registry> {
    Arc::new(Registry::new(
        Arc::new(FsBackend::open(dir, false).unwrap()),
        RegistryConfig::default(),
    ))
}

pub(super) fn body(data: Vec<u8>) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::from(data))]))
}

/// No grace: everything unreferenced is collectable at once.
pub(super) fn now_opts() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    }
}

pub(super) async fn push_blob(r: &Registry, repo: &RepoName, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    r.upload_whole(repo, body(data.to_vec()), &d).await.unwrap();
    d
}

pub(super) fn image(config: &Digest, layers: &[(&Digest, usize)], note: &str) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, size)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d.to_string(), "size": size })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.to_string(), "size": 2},
        "layers": layers,
        "annotations": {"note": note},
    }))
    .unwrap()
}

/// Push `{}` as config, `layer` as the one layer, and a manifest tagged `tag`.
pub(super) async fn push_image(
    r: &Registry,
    repo: &RepoName,
    tag: &str,
    layer: &[u8],
) -> (Digest, Digest) {
    let config = push_blob(r, repo, b"{}").await;
    let l = push_blob(r, repo, layer).await;
    let m = image(&config, &[(&l, layer.len())], &format!("{repo}:{tag}"));
    let put = r
        .manifest_put(
            repo,
            &Reference::Tag(Tag::parse(tag).unwrap()),
            Some("application/vnd.oci.image.manifest.v1+json"),
            Bytes::from(m),
            &[],
        )
        .await
        .unwrap();
    (put.digest, l)
}

pub(super) async fn present(r: &Registry, d: &Digest) -> bool {
    r.backend().head(&rk::blob(d)).await.unwrap().is_some()
}

#[tokio::test]
async fn reclaims_what_a_deleted_image_held_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let (a, repo_b) = (name("team/a"), name("team/b"));
    let (m1, l1) = push_image(&r, &a, "old", b"layer one").await;
    let (_m2, l2) = push_image(&r, &a, "new", b"layer two").await;
    // The same layer in another repository keeps its content alive.
    let (_m3, l3) = push_image(&r, &repo_b, "x", b"layer one").await;
    assert_eq!(l1, l3);
    // A layer only team/b has, then deleted there.
    let (m4, l4) = push_image(&r, &repo_b, "gone", b"layer four").await;
    r.manifest_delete(&a, &Reference::Digest(m1.clone()))
        .await
        .unwrap();
    r.manifest_delete(&repo_b, &Reference::Digest(m4.clone()))
        .await
        .unwrap();

    let dry = collect(
        &r,
        &GcOptions {
            dry_run: true,
            ..now_opts()
        },
    )
    .await
    .unwrap();
    assert!(dry.dry_run);
    assert!(
        present(&r, &l4).await && present(&r, &m4).await,
        "a dry run deletes nothing"
    );
    let rep = collect(&r, &now_opts()).await.unwrap();
    assert_eq!(rep.links_deleted, dry.links_deleted, "{rep:?} vs {dry:?}");
    assert_eq!(rep.blobs_deleted, dry.blobs_deleted, "{rep:?} vs {dry:?}");
    // l1's link in team/a went; its content stays (team/b still links it).
    assert!(r.blob_size(&a, &l1).await.unwrap().is_none());
    assert!(present(&r, &l1).await);
    // l4 and the deleted manifests' bodies are gone; l2 stays.
    assert!(!present(&r, &l4).await);
    assert!(!present(&r, &m4).await);
    assert!(!present(&r, &m1).await);
    assert!(present(&r, &l2).await);
    assert!(r.blob_size(&a, &l2).await.unwrap().is_some());
    // l1 in team/a and l4 in team/b (the config is still referenced in both).
    assert_eq!(rep.links_deleted, 2, "{rep:?}");
    // l4, m1 and m4.
    assert_eq!(rep.blobs_deleted, 3, "{rep:?}");
    // Nothing left to do.
    let again = collect(&r, &now_opts()).await.unwrap();
    assert_eq!(
        (again.links_deleted, again.blobs_deleted),
        (0, 0),
        "{again:?}"
    );
    // No marker or active flag left behind.
    for p in [
        keys::ACTIVE_PREFIX,
        keys::CONTENT_MARKERS,
        keys::LINK_MARKERS,
    ] {
        assert!(
            r.backend().list(p, None, 10).await.unwrap().is_empty(),
            "{p}"
        );
    }
}

/// Every tag's manifest is readable and every blob it needs is there.
pub(super) async fn assert_tagged_images_complete(r: &Registry) {
    let repos = r.catalog(None, None).await.unwrap().items;
    for repo in repos {
        let repo = name(&repo);
        let tags = match r.tags(&repo, None, None).await {
            Ok(p) => p.items,
            Err(_) => continue,
        };
        for t in tags {
            let got = r
                .manifest_get(&repo, &Reference::Tag(Tag::parse(&t).unwrap()))
                .await
                .unwrap_or_else(|e| panic!("{repo}:{t} does not resolve: {e:?}"));
            let m = manifest::parse(None, &got.body).unwrap();
            for desc in m.required_blobs() {
                assert!(
                    r.blob_size(&repo, &desc.digest).await.unwrap().is_some(),
                    "{repo}:{t} lost {}",
                    desc.digest
                );
                assert!(
                    present(r, &desc.digest).await,
                    "{repo}:{t} lost the content of {}",
                    desc.digest
                );
            }
        }
    }
}

/// A hook that runs a writer when called and records whether the write
/// was acknowledged.
pub(super) fn recording<F>(write: F) -> (Hook, Arc<std::sync::Mutex<Option<bool>>>)
where
    F: Fn() -> futures_util::future::BoxFuture<'static, bool> + Send + Sync + 'static,
{
    let outcome = Arc::new(std::sync::Mutex::new(None));
    let seen = outcome.clone();
    let hook: Hook = Box::new(move || {
        let (write, seen) = (write(), seen.clone());
        Box::pin(async move {
            let ok = write.await;
            *seen.lock().unwrap() = Some(ok);
        })
    });
    (hook, outcome)
}

/// Which phase of a run the racing writer meets.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Links,
    Content,
}

/// `hook` at `when` in `phase`.
fn at(when: When, phase: Phase, hook: Hook) -> GcHooks {
    let mut hooks = GcHooks::default();
    let slot = match (phase, when) {
        (Phase::Links, When::BeforeRecheck) => &mut hooks.after_link_marks,
        (Phase::Links, When::AfterRecheck) => &mut hooks.after_link_recheck,
        (Phase::Content, When::BeforeRecheck) => &mut hooks.after_content_marks,
        (Phase::Content, When::AfterRecheck) => &mut hooks.after_content_recheck,
    };
    *slot = Some(hook);
    hooks
}

/// When the racing writer runs.
#[derive(Clone, Copy, Debug)]
enum When {
    /// After the markers, before the second look: the look sees it.
    BeforeRecheck,
    /// After the second look, before the delete: the fence stops it.
    AfterRecheck,
}

/// A manifest pushed during a run, naming a doomed link: the push is
/// refused; never a tagged manifest without its layer.
async fn push_during_link_collection(when: When) {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("race/links");
    let (m, layer) = push_image(&r, &a, "v1", b"contested layer").await;
    r.manifest_delete(&a, &Reference::Digest(m)).await.unwrap();
    let (hook, outcome) = recording({
        let (r, a, layer) = (r.clone(), a.clone(), layer.clone());
        move || {
            let (r, a, layer) = (r.clone(), a.clone(), layer.clone());
            Box::pin(async move {
                let config = Digest::sha256_of(b"{}");
                let m = image(&config, &[(&layer, 15)], "again");
                r.manifest_put(
                    &a,
                    &Reference::Tag(Tag::parse("v2").unwrap()),
                    Some("application/vnd.oci.image.manifest.v1+json"),
                    Bytes::from(m),
                    &[],
                )
                .await
                .is_ok()
            })
        }
    });
    let hooks = at(when, Phase::Links, hook);
    collect_with(&r, &now_opts(), &hooks).await.unwrap();
    assert_tagged_images_complete(&r).await;
    let pushed = outcome.lock().unwrap().expect("the hook ran");
    assert!(!pushed, "{when:?}: the push saw the marker and was refused");
    // The refused push left no manifest behind.
    assert!(
        r.tags(&a, None, None)
            .await
            .map(|p| p.items)
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn a_push_before_the_second_look_at_links() {
    push_during_link_collection(When::BeforeRecheck).await;
}

#[tokio::test]
async fn a_push_after_the_second_look_at_links() {
    push_during_link_collection(When::AfterRecheck).await;
}

/// A blob uploaded to another repository (its link written) during the
/// content phase: the upload is refused; the content is never lost under
/// an acknowledged upload.
async fn upload_during_content_collection(when: When) {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("race/content");
    let layer = push_blob(&r, &a, b"contested content").await;
    r.blob_delete(&a, &layer).await.unwrap();
    let b = name("race/other");
    let (hook, outcome) = recording({
        let (r, b, layer) = (r.clone(), b.clone(), layer.clone());
        move || {
            let (r, b, layer) = (r.clone(), b.clone(), layer.clone());
            Box::pin(async move {
                r.upload_whole(&b, body(b"contested content".to_vec()), &layer)
                    .await
                    .is_ok()
            })
        }
    });
    let hooks = at(when, Phase::Content, hook);
    let rep = collect_with(&r, &now_opts(), &hooks).await.unwrap();
    let uploaded = outcome.lock().unwrap().expect("the hook ran");
    if uploaded {
        assert!(
            present(&r, &layer).await,
            "{when:?}: an acknowledged upload lost its content ({rep:?})"
        );
    }
    assert!(
        !uploaded,
        "{when:?}: the upload saw the marker and was refused ({rep:?})"
    );
    // Refused cleanly; uploading again works, and the upload stays for
    // the grace period though no manifest names it yet.
    push_blob(&r, &b, b"contested content").await;
    collect(&r, &GcOptions::default()).await.unwrap();
    assert!(r.blob_size(&b, &layer).await.unwrap().is_some());
    assert!(present(&r, &layer).await);
}

#[tokio::test]
async fn an_upload_before_the_second_walk() {
    upload_during_content_collection(When::BeforeRecheck).await;
}

#[tokio::test]
async fn an_upload_after_the_second_walk() {
    upload_during_content_collection(When::AfterRecheck).await;
}

/// Two collectors at once and writers pushing, deleting and re-pushing
/// images that share layers: every tagged image stays complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_collectors_and_writers() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut collectors = Vec::new();
    for _ in 0..2 {
        let (r, stop) = (r.clone(), stop.clone());
        collectors.push(tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || runs == 0 {
                collect(&r, &now_opts()).await.unwrap();
                runs += 1;
            }
            runs
        }));
    }
    let mut writers = Vec::new();
    for w in 0..4 {
        let r = r.clone();
        writers.push(tokio::spawn(async move {
            let repo = name(&format!("hammer/w{w}"));
            for i in 0..25 {
                let layer = format!("shared layer {}", i % 3).into_bytes();
                let config = Digest::sha256_of(b"{}");
                let ok = async {
                    r.upload_whole(&repo, body(b"{}".to_vec()), &config).await?;
                    let l = Digest::sha256_of(&layer);
                    r.upload_whole(&repo, body(layer.clone()), &l).await?;
                    let m = image(&config, &[(&l, layer.len())], &format!("{w}-{i}"));
                    let tag = Reference::Tag(Tag::parse(&format!("t{}", i % 5)).unwrap());
                    r.manifest_put(&repo, &tag, Some("application/vnd.oci.image.manifest.v1+json"), Bytes::from(m), &[])
                        .await?;
                    if i % 4 == 3 {
                        r.manifest_delete(&repo, &tag).await?;
                    }
                    Ok::<_, Error>(())
                }
                .await;
                // A refusal (content being collected) is fine; anything
                // else is not.
                if let Err(e) = ok {
                    assert!(
                        matches!(&e, Error::Registry(re) if matches!(re.code, oci::ErrorCode::BlobUnknown | oci::ErrorCode::ManifestBlobUnknown)),
                        "{e:?}"
                    );
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in collectors {
        assert!(c.await.unwrap() >= 1);
    }
    assert_tagged_images_complete(&r).await;
    collect(&r, &now_opts()).await.unwrap();
    assert_tagged_images_complete(&r).await;
}

/// A manifest deleted, then pushed again (its body is still stored, so
/// the push does not rewrite it) during the content phase: the push is
/// refused, or the body survives.
async fn repush_during_content_collection(when: When) {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("race/repush");
    let config = push_blob(&r, &a, b"{}").await;
    let layer = push_blob(&r, &a, b"kept layer").await;
    let m = image(&config, &[(&layer, 10)], "repush");
    let tag = Reference::Tag(Tag::parse("v1").unwrap());
    let mt = Some("application/vnd.oci.image.manifest.v1+json");
    let put = r
        .manifest_put(&a, &tag, mt, Bytes::from(m.clone()), &[])
        .await
        .unwrap();
    // Another manifest keeps the config and layer referenced.
    let other = image(&config, &[(&layer, 10)], "keeper");
    r.manifest_put(
        &a,
        &Reference::Tag(Tag::parse("keeper").unwrap()),
        mt,
        Bytes::from(other),
        &[],
    )
    .await
    .unwrap();
    r.manifest_delete(&a, &Reference::Digest(put.digest.clone()))
        .await
        .unwrap();
    let (hook, outcome) = recording({
        let (r, a) = (r.clone(), a.clone());
        move || {
            let (r, a, m) = (r.clone(), a.clone(), m.clone());
            Box::pin(async move {
                let tag = Reference::Tag(Tag::parse("v1").unwrap());
                r.manifest_put(
                    &a,
                    &tag,
                    Some("application/vnd.oci.image.manifest.v1+json"),
                    Bytes::from(m),
                    &[],
                )
                .await
                .is_ok()
            })
        }
    });
    let hooks = at(when, Phase::Content, hook);
    collect_with(&r, &now_opts(), &hooks).await.unwrap();
    assert_tagged_images_complete(&r).await;
    let pushed = outcome.lock().unwrap().expect("the hook ran");
    assert!(!pushed, "{when:?}: the push saw the marker and was refused");
}

#[tokio::test]
async fn a_manifest_pushed_again_before_the_second_walk() {
    repush_during_content_collection(When::BeforeRecheck).await;
}

#[tokio::test]
async fn a_manifest_pushed_again_after_the_second_walk() {
    repush_during_content_collection(When::AfterRecheck).await;
}

/// A blob uploaded again into its repository between the collector's
/// first look and its markers: the upload is acknowledged (no marker yet),
/// so its link must survive the run.
#[tokio::test]
async fn an_upload_before_the_link_markers_keeps_its_link() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("race/touch");
    let layer = push_blob(&r, &a, b"uploaded twice").await;
    // Let the link's time pass the (zero) grace period for sure.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (hook, outcome) = recording({
        let (r, a, layer) = (r.clone(), a.clone(), layer.clone());
        move || {
            let (r, a, layer) = (r.clone(), a.clone(), layer.clone());
            Box::pin(async move {
                r.upload_whole(&a, body(b"uploaded twice".to_vec()), &layer)
                    .await
                    .is_ok()
            })
        }
    });
    let hooks = GcHooks {
        before_link_marks: Some(hook),
        ..GcHooks::default()
    };
    let rep = collect_with(&r, &now_opts(), &hooks).await.unwrap();
    assert_eq!(
        *outcome.lock().unwrap(),
        Some(true),
        "no marker yet: the upload succeeds"
    );
    assert!(
        r.blob_size(&a, &layer).await.unwrap().is_some(),
        "an acknowledged upload lost its link ({rep:?})"
    );
    assert_eq!(rep.kept_after_recheck, 1, "{rep:?}");
}

#[tokio::test]
async fn fsck_finds_damage_and_repairs_what_loses_nothing() {
    use super::fsck::{FsckOptions, check};
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("fsck/app");
    let (m, layer) = push_image(&r, &a, "v1", b"a layer").await;
    let clean = check(&r, &FsckOptions::default()).await.unwrap();
    assert!(clean.clean(), "{clean:?}");
    assert_eq!(
        (clean.repositories, clean.manifests, clean.blobs_hashed),
        (1, 1, 3)
    );
    // Damage: the layer's bytes rot, the config's content vanishes, a tag
    // names a manifest the repository does not have.
    let b = r.backend();
    b.put(&rk::blob(&layer), Bytes::from_static(b"rotten"))
        .await
        .unwrap();
    let config = Digest::sha256_of(b"{}");
    b.delete(&rk::blob(&config)).await.unwrap();
    let nowhere = Digest::sha256_of(b"nowhere");
    b.put(
        &rk::tag(&a, &Tag::parse("broken").unwrap()),
        Bytes::from(nowhere.to_string()),
    )
    .await
    .unwrap();
    let found = check(&r, &FsckOptions::default()).await.unwrap();
    assert_eq!(found.corrupt_blobs, vec![layer.to_string()], "{found:?}");
    assert_eq!(
        found.dangling_links,
        vec![format!("{a}@{config}")],
        "{found:?}"
    );
    assert_eq!(
        found.broken_tags,
        vec![format!("{a}:broken -> {nowhere}")],
        "{found:?}"
    );
    assert_eq!(
        found.incomplete_manifests,
        vec![format!("{a}@{m} -> {config}")],
        "{found:?}"
    );
    assert_eq!(found.repaired, 0);
    // Repair: the dangling link and the corrupt content go; the rest is
    // reported again, never guessed at.
    let fixed = check(
        &r,
        &FsckOptions {
            repair: true,
            ..FsckOptions::default()
        },
    )
    .await
    .unwrap();
    // The corrupt layer, then its link and the config's (both dangling).
    assert_eq!(fixed.repaired, 3, "{fixed:?}");
    assert!(!present(&r, &layer).await);
    assert!(r.blob_size(&a, &config).await.unwrap().is_none());
    assert!(r.blob_size(&a, &layer).await.unwrap().is_none());
    let after = check(&r, &FsckOptions::default()).await.unwrap();
    assert!(
        after.corrupt_blobs.is_empty() && after.dangling_links.is_empty(),
        "{after:?}"
    );
    assert_eq!(after.broken_tags.len(), 1);
    // Sampling hashes fewer blobs.
    let sampled = check(
        &r,
        &FsckOptions {
            sample: 2,
            ..FsckOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(
        sampled.blobs_hashed < after.blobs_hashed.max(2),
        "{sampled:?} vs {after:?}"
    );
}

/// A run that takes long writes its content markers and active flag again
/// before writers stop honouring them (here: at every step, so the markers seen after the
/// second walk were written after the marking ended).
#[tokio::test]
async fn a_long_run_keeps_its_markers_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("fresh/app");
    let (m, layer) = push_image(&r, &a, "v1", b"to be collected").await;
    r.manifest_delete(&a, &Reference::Digest(m)).await.unwrap();
    let times: Arc<std::sync::Mutex<Vec<Vec<SystemTime>>>> = Arc::default();
    let snapshot = |times: Arc<std::sync::Mutex<Vec<Vec<SystemTime>>>>, r: Arc<Registry>| -> Hook {
        Box::new(move || {
            let (times, r) = (times.clone(), r.clone());
            Box::pin(async move {
                let b = r.backend();
                let mut seen = Vec::new();
                // The run's content markers and its active flag.
                for prefix in [keys::CONTENT_MARKERS, keys::ACTIVE_PREFIX] {
                    let mut pages = KeyPages::new(b.as_ref(), prefix, 100);
                    while let Some(page) = pages.next().await.unwrap() {
                        for rel in page {
                            let key = format!("{prefix}{rel}");
                            seen.push(b.head(&key).await.unwrap().unwrap().modified.unwrap());
                        }
                    }
                }
                // Markers written now are measurably newer.
                tokio::time::sleep(Duration::from_millis(20)).await;
                times.lock().unwrap().push(seen);
            })
        })
    };
    let hooks = GcHooks {
        after_content_marks: Some(snapshot(times.clone(), r.clone())),
        after_content_recheck: Some(snapshot(times.clone(), r.clone())),
        ..GcHooks::default()
    };
    let opts = GcOptions {
        marker_refresh: Duration::ZERO,
        ..now_opts()
    };
    let rep = collect_with(&r, &opts, &hooks).await.unwrap();
    let times = times.lock().unwrap().clone();
    let (marked, rechecked) = (&times[0], &times[1]);
    assert!(!marked.is_empty(), "{rep:?}");
    let newest_marked = marked.iter().max().unwrap();
    assert!(
        rechecked.iter().all(|t| t > newest_marked),
        "markers not written again: {marked:?} then {rechecked:?}"
    );
    // And the run still deleted what it marked.
    assert!(!present(&r, &layer).await, "{rep:?}");
}

/// What a dead collector left in a directory only this process may use is
/// removed when the directory is opened again; writers are not held up.
#[tokio::test]
async fn markers_of_a_dead_run_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("dead/app");
    let layer = push_blob(&r, &a, b"a candidate").await;
    let b = r.backend().clone();
    b.put(&format!("{}deadbeef", keys::ACTIVE_PREFIX), Bytes::new())
        .await
        .unwrap();
    b.put(
        &marker(&keys::content_markers(&layer), "deadbeef"),
        Bytes::new(),
    )
    .await
    .unwrap();
    drop((r, b));
    // While the markers stand, re-uploading the blob is refused (by a
    // process that has not seen the store before).
    let r = open(dir.path());
    let again = r
        .upload_whole(&a, body(b"a candidate".to_vec()), &layer)
        .await;
    assert!(again.is_err(), "{again:?}");
    assert_eq!(forget_dead_runs(r.backend().as_ref()).await.unwrap(), 2);
    assert!(r.backend().list("_gc/", None, 10).await.unwrap().is_empty());
    drop(r);
    let r = open(dir.path());
    r.upload_whole(&a, body(b"a candidate".to_vec()), &layer)
        .await
        .unwrap();
}

/// An upload session nobody finished is orphaned data to fsck once it is
/// idle for longer than the expiry; `--repair` removes it.
#[tokio::test]
async fn fsck_finds_orphaned_uploads() {
    use super::fsck::{FsckOptions, check};
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("fsck/uploads");
    let id = r
        .upload_start(&a, oci::Algorithm::Sha256, |_| {})
        .await
        .unwrap();
    let fresh = check(&r, &FsckOptions::default()).await.unwrap();
    assert!(fresh.clean(), "a young session is fine: {fresh:?}");
    let idle = FsckOptions {
        upload_expiry: Duration::ZERO,
        ..FsckOptions::default()
    };
    let found = check(&r, &idle).await.unwrap();
    assert_eq!(found.stale_uploads, vec![id.clone()], "{found:?}");
    let repaired = check(
        &r,
        &FsckOptions {
            repair: true,
            ..idle.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(repaired.repaired, 1, "{repaired:?}");
    assert!(check(&r, &idle).await.unwrap().clean());
}

/// A pull-through cache's manifest names blobs fetched only when asked
/// for: fsck does not count them missing.
#[tokio::test]
async fn fsck_accepts_a_cached_manifest_without_its_blobs() {
    use super::fsck::{FsckOptions, check};
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("mirror/app");
    let config = Digest::sha256_of(b"{}");
    let layer = Digest::sha256_of(b"not here yet");
    let m = image(&config, &[(&layer, 12)], "cached");
    r.manifest_put_cached(
        &a,
        &Reference::Tag(Tag::parse("v1").unwrap()),
        Some("application/vnd.oci.image.manifest.v1+json"),
        Bytes::from(m),
    )
    .await
    .unwrap();
    let report = check(&r, &FsckOptions::default()).await.unwrap();
    assert!(report.clean(), "{report:?}");
}

/// A dead collector's marker on a repository's catalog entry (S3 keeps it
/// for an hour) holds a push into the repository back for SETTLE_WAIT at
/// most; then the entry is written again and the push goes in.
#[tokio::test]
async fn a_dead_runs_repository_marker_delays_a_push_but_does_not_fail_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let a = name("dead/repo");
    let b = r.backend().clone();
    b.put(&format!("{}deadbeef", keys::ACTIVE_PREFIX), Bytes::new())
        .await
        .unwrap();
    b.put(&marker(&keys::repo_markers(&a), "deadbeef"), Bytes::new())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    push_blob(&r, &a, b"into a repository a dead run marked").await;
    assert!(
        started.elapsed() >= fence::SETTLE_WAIT,
        "it waited the marker out"
    );
    assert_eq!(
        r.catalog(None, None).await.unwrap().items,
        vec!["dead/repo".to_string()]
    );
}
