//! Retention rules applied by the collector, and a tag or manifest pushed
//! again while a rule removes it.

use super::retention::RetentionRule;
use super::tests::{
    assert_tagged_images_complete, image, name, now_opts, present, push_blob, push_image,
};
use super::*;
use crate::RegistryConfig;
use crate::fs::FsBackend;
use oci::pattern::Pattern;
use oci::{Reference, Tag};
use std::sync::Arc;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn patterns(ps: &[&str]) -> Vec<Pattern> {
    ps.iter().map(|p| Pattern::parse(p).unwrap()).collect()
}

fn rule(keep_newest: Option<usize>, untagged: Option<Duration>) -> RetentionRule {
    RetentionRule {
        name: "retention #1: repos keep/**".into(),
        repos: patterns(&["keep/**"]),
        tags: patterns(&["*"]),
        protect: patterns(&["latest"]),
        keep_newest,
        tags_older_than: None,
        untagged_older_than: untagged,
    }
}

fn with_rule(rule: RetentionRule) -> GcOptions {
    GcOptions {
        retention: vec![rule],
        ..now_opts()
    }
}

/// A registry where tags `stable-*` of `keep/**` are immutable.
fn open_immutable(dir: &std::path::Path) -> Arc<Registry> {
    Arc::new(Registry::new(
        Arc::new(FsBackend::open(dir, false).unwrap()),
        RegistryConfig {
            immutable_tags: vec![crate::ImmutableTags {
                name: "immutable_tags #1".into(),
                repos: patterns(&["keep/**"]),
                tags: patterns(&["stable-*"]),
            }],
            ..RegistryConfig::default()
        },
    ))
}

async fn put(
    r: &Registry,
    repo: &RepoName,
    reference: Reference,
    ct: &str,
    body: Vec<u8>,
) -> Digest {
    r.manifest_put(repo, &reference, Some(ct), Bytes::from(body), &[])
        .await
        .unwrap()
        .digest
}

fn tag(t: &str) -> Reference {
    Reference::Tag(Tag::parse(t).unwrap())
}

async fn resolves(r: &Registry, repo: &RepoName, reference: Reference) -> bool {
    r.manifest_head(repo, &reference).await.is_ok()
}

/// `latest` (protected), `stable-1` (immutable), then a1..a5, each with a
/// layer of its own.
async fn five_and_two(r: &Registry, repo: &RepoName) -> Vec<(Digest, Digest)> {
    push_image(r, repo, "latest", b"latest layer").await;
    push_image(r, repo, "stable-1", b"stable layer").await;
    let mut pushed = Vec::new();
    for i in 1..=5 {
        let layer = format!("layer {i}");
        pushed.push(push_image(r, repo, &format!("a{i}"), layer.as_bytes()).await);
    }
    pushed
}

#[tokio::test]
async fn keeps_the_newest_tags_and_removes_the_rest_with_their_content() {
    let dir = tempfile::tempdir().unwrap();
    let r = open_immutable(dir.path());
    let repo = name("keep/app");
    let other = name("other/app");
    let pushed = five_and_two(&r, &repo).await;
    // Not covered by the rule: untouched.
    push_image(&r, &other, "o1", b"other 1").await;
    push_image(&r, &other, "o2", b"other 2").await;

    let opts = with_rule(rule(Some(2), Some(Duration::ZERO)));
    let dry = collect(
        &r,
        &GcOptions {
            dry_run: true,
            ..opts.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!((dry.tags_deleted, dry.manifests_deleted), (3, 3), "{dry:?}");
    assert!(
        dry.removed_by_retention
            .contains(&"keep/app:a1".to_string()),
        "{dry:?}"
    );
    // What only the removed images held shows as reclaimable in the dry run:
    // three layers and three manifest bodies.
    assert_eq!(dry.blobs_deleted, 6, "{dry:?}");
    assert!(
        resolves(&r, &repo, tag("a1")).await,
        "a dry run deletes nothing"
    );

    let rep = collect(&r, &opts).await.unwrap();
    assert_eq!((rep.tags_deleted, rep.manifests_deleted), (3, 3), "{rep:?}");
    assert_eq!(rep.blobs_deleted, dry.blobs_deleted, "{rep:?} vs {dry:?}");
    for (i, (m, layer)) in pushed.iter().enumerate() {
        let t = format!("a{}", i + 1);
        let kept = i >= 3;
        assert_eq!(resolves(&r, &repo, tag(&t)).await, kept, "{t}");
        assert_eq!(
            resolves(&r, &repo, Reference::Digest(m.clone())).await,
            kept,
            "{t}'s manifest"
        );
        assert_eq!(present(&r, layer).await, kept, "{t}'s layer");
    }
    for t in ["latest", "stable-1"] {
        assert!(resolves(&r, &repo, tag(t)).await, "{t} is protected");
    }
    for t in ["o1", "o2"] {
        assert!(
            resolves(&r, &other, tag(t)).await,
            "{t}: no rule covers other/app"
        );
    }
    assert_tagged_images_complete(&r).await;
    // Nothing left to remove, no marker left behind.
    let again = collect(&r, &opts).await.unwrap();
    assert_eq!(
        (again.tags_deleted, again.manifests_deleted),
        (0, 0),
        "{again:?}"
    );
    for p in [keys::TAG_MARKERS, keys::LINK_MARKERS, keys::ACTIVE_PREFIX] {
        assert!(
            r.backend().list(p, None, 10).await.unwrap().is_empty(),
            "{p}"
        );
    }
}

#[tokio::test]
async fn tags_older_than_spares_the_young_and_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let r = open_immutable(dir.path());
    let repo = name("keep/aged");
    let pushed = five_and_two(&r, &repo).await;
    let young = RetentionRule {
        tags_older_than: Some(Duration::from_secs(3600)),
        ..rule(None, None)
    };
    let rep = collect(&r, &with_rule(young)).await.unwrap();
    assert_eq!(
        rep.tags_deleted, 0,
        "every tag is younger than an hour: {rep:?}"
    );
    let old = RetentionRule {
        tags_older_than: Some(Duration::ZERO),
        ..rule(Some(1), None)
    };
    let rep = collect(&r, &with_rule(old)).await.unwrap();
    assert_eq!(rep.tags_deleted, 4, "all but the newest: {rep:?}");
    // No untagged rule: the manifests stay, by digest.
    assert_eq!(rep.manifests_deleted, 0, "{rep:?}");
    for (m, _) in &pushed {
        assert!(resolves(&r, &repo, Reference::Digest(m.clone())).await);
    }
    assert!(resolves(&r, &repo, tag("a5")).await);
}

/// An image manifest with a subject (a signature-like referrer).
fn referrer_of(config: &Digest, subject: &Digest, subject_size: usize, note: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": config.to_string(), "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": subject_size},
        "annotations": {"note": note},
    }))
    .unwrap()
}

fn index_of(children: &[(&Digest, usize)]) -> Vec<u8> {
    let manifests: Vec<_> = children
        .iter()
        .map(|(d, size)| serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": size}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
    }))
    .unwrap()
}

/// An untagged image manifest with its own layer; returns (digest, size).
async fn untagged_image(r: &Registry, repo: &RepoName, layer: &[u8]) -> (Digest, usize) {
    let config = push_blob(r, repo, b"{}").await;
    let l = push_blob(r, repo, layer).await;
    let body = image(
        &config,
        &[(&l, layer.len())],
        &String::from_utf8_lossy(layer),
    );
    let size = body.len();
    let d = Digest::sha256_of(&body);
    put(r, repo, Reference::Digest(d.clone()), OCI_MANIFEST, body).await;
    (d, size)
}

#[tokio::test]
async fn untagged_manifests_go_but_children_and_referrers_of_kept_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let r = open_immutable(dir.path());
    let repo = name("keep/tree");
    let config = push_blob(&r, &repo, b"{}").await;
    // A tagged image and its signature (untagged): both stay.
    let (a, _) = push_image(&r, &repo, "a", b"image a").await;
    let a_size = r.manifest_head(&repo, &tag("a")).await.unwrap().2 as usize;
    let sig_a = referrer_of(&config, &a, a_size, "sig a");
    let sig_a = put(
        &r,
        &repo,
        Reference::Digest(Digest::sha256_of(&sig_a)),
        OCI_MANIFEST,
        sig_a,
    )
    .await;
    // A tagged index and its untagged children: all stay.
    let c1 = untagged_image(&r, &repo, b"child 1").await;
    let c2 = untagged_image(&r, &repo, b"child 2").await;
    put(
        &r,
        &repo,
        tag("multi"),
        OCI_INDEX,
        index_of(&[(&c1.0, c1.1), (&c2.0, c2.1)]),
    )
    .await;
    // An untagged image and its signature: both go.
    let u = untagged_image(&r, &repo, b"untagged").await;
    let sig_u = referrer_of(&config, &u.0, u.1, "sig u");
    let sig_u = put(
        &r,
        &repo,
        Reference::Digest(Digest::sha256_of(&sig_u)),
        OCI_MANIFEST,
        sig_u,
    )
    .await;
    // An untagged index and its only child: both go.
    let c3 = untagged_image(&r, &repo, b"child 3").await;
    let j = index_of(&[(&c3.0, c3.1)]);
    let j = put(
        &r,
        &repo,
        Reference::Digest(Digest::sha256_of(&j)),
        OCI_INDEX,
        j,
    )
    .await;

    let rep = collect(&r, &with_rule(rule(None, Some(Duration::ZERO))))
        .await
        .unwrap();
    assert_eq!(rep.tags_deleted, 0, "{rep:?}");
    for (d, kept) in [
        (&a, true),
        (&sig_a, true),
        (&c1.0, true),
        (&c2.0, true),
        (&u.0, false),
        (&sig_u, false),
        (&j, false),
        (&c3.0, false),
    ] {
        assert_eq!(
            resolves(&r, &repo, Reference::Digest(d.clone())).await,
            kept,
            "{d}: {rep:?}"
        );
    }
    assert_eq!(rep.manifests_deleted, 4, "{rep:?}");
    // The removed signature left the referrers list; the kept one is there.
    let listed = |subject: Digest| {
        let r = r.clone();
        let repo = repo.clone();
        async move {
            r.referrers(&repo, &subject, None)
                .await
                .unwrap()
                .iter()
                .map(|d| d.digest.clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(a.clone()).await, vec![sig_a.clone()]);
    assert!(listed(u.0.clone()).await.is_empty());
    // The untagged ones pushed within the grace period stay.
    let fresh = untagged_image(&r, &repo, b"fresh").await;
    let graceful = GcOptions {
        grace: Duration::from_secs(3600),
        ..with_rule(rule(None, Some(Duration::ZERO)))
    };
    let rep = collect(&r, &graceful).await.unwrap();
    assert_eq!(rep.manifests_deleted, 0, "{rep:?}");
    assert!(resolves(&r, &repo, Reference::Digest(fresh.0)).await);
}

/// A tag pushed again (same manifest) while a rule removes it.
async fn repush_during_retention(after_recheck: bool) {
    let dir = tempfile::tempdir().unwrap();
    let r = open_immutable(dir.path());
    let repo = name("keep/race");
    five_and_two(&r, &repo).await;
    let a1 = r.manifest_get(&repo, &tag("a1")).await.unwrap();
    type Push = tokio::task::JoinHandle<Result<(), String>>;
    let outcome: Arc<std::sync::Mutex<Option<Push>>> = Arc::default();
    let hook: Hook = {
        let (r, repo, outcome) = (r.clone(), repo.clone(), outcome.clone());
        Box::new(move || {
            let (r, repo, outcome, body) =
                (r.clone(), repo.clone(), outcome.clone(), a1.body.clone());
            Box::pin(async move {
                if outcome.lock().unwrap().is_some() {
                    return; // once
                }
                let push = tokio::spawn(async move {
                    r.manifest_put(&repo, &tag("a1"), Some(OCI_MANIFEST), body, &[])
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}"))
                });
                // Let the push write its tag and manifest link (and, after the
                // second look, wait for the collector's markers to go).
                tokio::time::sleep(Duration::from_millis(300)).await;
                *outcome.lock().unwrap() = Some(push);
            })
        })
    };
    let hooks = if after_recheck {
        GcHooks {
            after_retention_recheck: Some(hook),
            ..GcHooks::default()
        }
    } else {
        GcHooks {
            after_retention_marks: Some(hook),
            ..GcHooks::default()
        }
    };
    let rep = collect_with(&r, &with_rule(rule(Some(2), Some(Duration::ZERO))), &hooks)
        .await
        .unwrap();
    let push = outcome.lock().unwrap().take().expect("the hook ran");
    match push.await.unwrap() {
        // Acknowledged: a1 resolves and its image is complete.
        Ok(()) => assert!(resolves(&r, &repo, tag("a1")).await, "{rep:?}"),
        // After the second look the manifest is written again once the
        // rule's deletes are done; the collection of its layer's link that
        // follows may then refuse it, cleanly.
        Err(e) => assert!(
            after_recheck && e.contains("ManifestBlobUnknown"),
            "refused: {e} ({rep:?})"
        ),
    }
    assert_tagged_images_complete(&r).await;
    if !after_recheck {
        // The second look saw the manifest written again: it stays (the
        // tag, not yet written again then, went and came back).
        assert_eq!(rep.manifests_deleted, 2, "{rep:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_pushed_again_before_the_second_look_is_kept() {
    repush_during_retention(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_pushed_again_after_the_second_look_is_written_again() {
    repush_during_retention(true).await;
}

#[tokio::test]
async fn empty_repositories_and_dangling_referrer_entries_go() {
    let dir = tempfile::tempdir().unwrap();
    let r = open_immutable(dir.path());
    let (gone, kept) = (name("prune/gone"), name("prune/kept"));
    let (m, _) = push_image(&r, &gone, "v1", b"soon unreferenced").await;
    r.manifest_delete(&gone, &Reference::Digest(m))
        .await
        .unwrap();
    let (k, _) = push_image(&r, &kept, "v1", b"kept").await;
    // A referrer whose manifest link vanished without its entry (as after
    // a crash between the two deletes).
    let config = push_blob(&r, &kept, b"{}").await;
    let k_size = r.manifest_head(&kept, &tag("v1")).await.unwrap().2 as usize;
    let sig = referrer_of(&config, &k, k_size, "sig");
    let sig = put(
        &r,
        &kept,
        Reference::Digest(Digest::sha256_of(&sig)),
        OCI_MANIFEST,
        sig,
    )
    .await;
    r.backend()
        .delete(&rk::repo_manifest(&kept, &sig))
        .await
        .unwrap();
    assert_eq!(r.referrers(&kept, &k, None).await.unwrap().len(), 1);
    let found = super::fsck::check(&r, &super::fsck::FsckOptions::default())
        .await
        .unwrap();
    assert_eq!(found.dangling_referrers.len(), 1, "{found:?}");

    let dry = collect(
        &r,
        &GcOptions {
            dry_run: true,
            ..now_opts()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.referrers_deleted, 1, "{dry:?}");
    let rep = collect(&r, &now_opts()).await.unwrap();
    assert_eq!(rep.referrers_deleted, 1, "{rep:?}");
    assert_eq!(rep.repositories_deleted, 1, "{rep:?}");
    assert!(r.referrers(&kept, &k, None).await.unwrap().is_empty());
    let catalog = r.catalog(None, None).await.unwrap().items;
    assert_eq!(catalog, vec!["prune/kept".to_string()]);
    assert_tagged_images_complete(&r).await;
    for p in [keys::REPO_MARKERS, keys::LINK_MARKERS, keys::ACTIVE_PREFIX] {
        assert!(
            r.backend().list(p, None, 10).await.unwrap().is_empty(),
            "{p}"
        );
    }
    // Pushed into again, it is back.
    push_image(&r, &gone, "v2", b"back").await;
    assert_eq!(r.catalog(None, None).await.unwrap().items.len(), 2);
}

/// A blob uploaded into an empty repository just as a run removes its
/// catalog entry: the entry is written again, so the next run walks the
/// repository and keeps what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_into_a_repository_being_pruned_keeps_it_listed() {
    let dir = tempfile::tempdir().unwrap();
    let r = open_immutable(dir.path());
    let repo = name("prune/race");
    // The layer the racing upload sends is held by another repository (so
    // that the run, with no grace period, does not take its content).
    push_image(&r, &name("prune/other"), "v1", b"late layer").await;
    let (m, _) = push_image(&r, &repo, "v1", b"first").await;
    r.manifest_delete(&repo, &Reference::Digest(m))
        .await
        .unwrap();
    type Upload = tokio::task::JoinHandle<Digest>;
    let upload: Arc<std::sync::Mutex<Option<Upload>>> = Arc::default();
    let hook: Hook = {
        let (r, repo, upload) = (r.clone(), repo.clone(), upload.clone());
        Box::new(move || {
            let (r, repo, upload) = (r.clone(), repo.clone(), upload.clone());
            Box::pin(async move {
                let task = tokio::spawn(async move { push_blob(&r, &repo, b"late layer").await });
                // Let it write its link (and wait for the marker to go).
                tokio::time::sleep(Duration::from_millis(300)).await;
                *upload.lock().unwrap() = Some(task);
            })
        })
    };
    let hooks = GcHooks {
        after_empty_recheck: Some(hook),
        ..GcHooks::default()
    };
    collect_with(&r, &now_opts(), &hooks).await.unwrap();
    let task = upload.lock().unwrap().take().expect("the hook ran");
    let layer = task.await.unwrap();
    // Still listed, so the next run walks it (and finds the link).
    assert_eq!(
        r.catalog(None, None).await.unwrap().items,
        vec!["prune/other".to_string(), "prune/race".to_string()]
    );
    assert!(r.blob_size(&repo, &layer).await.unwrap().is_some());
}
