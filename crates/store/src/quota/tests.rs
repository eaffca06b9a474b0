//! Quotas over the filesystem backend: what counts, what is refused and
//! what is left behind, and how the records of usage fold.

use super::*;
use crate::backend::ByteStream;
use crate::fs::FsBackend;
use crate::registry::{Registry, RegistryConfig};
use oci::{Algorithm, ChunkRange, Reference};

fn name(s: &str) -> RepoName {
    RepoName::parse(s, 255).unwrap()
}

fn rule(i: usize, patterns: &[&str], max_bytes: u64) -> Quota {
    Quota {
        name: format!("quotas #{}", i + 1),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        repos: patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect(),
        max_bytes,
    }
}

fn open(dir: &std::path::Path, quotas: Vec<Quota>) -> Registry {
    Registry::new(
        Arc::new(FsBackend::open(dir, false).unwrap()),
        RegistryConfig {
            quotas,
            ..RegistryConfig::default()
        },
    )
}

fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

async fn used(r: &Registry, repo: &str) -> u64 {
    r.quotas().room(&name(repo)).await.unwrap().unwrap().used
}

fn refused(e: Error) -> serde_json::Value {
    assert!(is_refusal(&e), "not a quota refusal: {e:?}");
    match e {
        Error::Registry(r) => {
            assert_eq!(r.status, 403);
            r.detail.unwrap()
        }
        _ => unreachable!(),
    }
}

async fn push(r: &Registry, repo: &str, data: &[u8]) -> Result<Digest, Error> {
    let d = Digest::sha256_of(data);
    r.upload_whole(&name(repo), body(data), &d).await?;
    Ok(d)
}

/// A manifest naming `layers` (pushed already) with an empty config
/// pushed here; returns its body.
async fn manifest(r: &Registry, repo: &str, layers: &[(&Digest, usize)]) -> Bytes {
    let config = push(r, repo, b"{}").await.unwrap();
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, size)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": d.to_string(), "size": size})
        })
        .collect();
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.to_string(), "size": 2},
            "layers": layers,
        }))
        .unwrap(),
    )
}

fn no_content(dir: &std::path::Path, d: &Digest) -> bool {
    !dir.join(format!("{}~", keys::blob(d))).exists()
}

#[test]
fn sizes_parse_and_print() {
    assert_eq!(parse_size("1073741824"), Ok(1 << 30));
    assert_eq!(parse_size("10GiB"), Ok(10 << 30));
    assert_eq!(parse_size(" 512 mib "), Ok(512 << 20));
    assert_eq!(parse_size("1.5 KiB"), Ok(1536));
    assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
    assert_eq!(parse_size("0"), Ok(0));
    assert!(parse_size("16384 PiB").is_err());
    for bad in [
        "",
        "GiB",
        "1.2.3 GiB",
        "ten",
        "10 XB",
        "-1",
        "1e9",
        "99999999999 PiB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_size("17179869183 GiB"), Ok(u64::MAX - (1 << 30) + 1));
    assert!(parse_size("17179869184 GiB").is_err());
    assert_eq!(human(0), "0 B");
    assert_eq!(human(1023), "1023 B");
    assert_eq!(human(10 << 30), "10 GiB");
    assert_eq!(human((98 << 30) / 10 + 1), "9.8 GiB");
    assert_eq!(human(300 << 20), "300 MiB");
    assert_eq!(human(u64::MAX), "15.9 EiB");
}

#[test]
fn records_are_named_and_read_back() {
    let d = Digest::of(Algorithm::Sha512, b"x");
    let delta = Record::Delta(Delta {
        at_ms: 1_700_000_000_123,
        size: 42,
        kind: Kind::Manifest,
        digest: format!("sha512-{}", d.hex()),
    });
    let snap = Record::Snapshot(Snapshot {
        walk_ms: 5,
        bytes: u64::MAX,
        blobs: 1,
        manifests: 2,
    });
    for r in [delta.clone(), snap] {
        let n = r.name();
        assert!(
            crate::backend::valid_key(&format!("_usage/a/b/_/{n}")),
            "{n}"
        );
        assert_eq!(Record::parse(&n), Some(r));
    }
    // Deltas sort before snapshots: a listing sees them first.
    assert!(delta.name().as_str() < "s-");
    for junk in [
        "x-1-2",
        "d-1-2-b-sha256-zz",
        "d-1-2-q-sha256-00",
        "s-1-2-3",
        "s-1-2-3-4-5",
        "s-a-2-3-4",
    ] {
        assert_eq!(Record::parse(junk), None, "{junk}");
    }
}

#[test]
fn the_first_matching_rule_applies() {
    let rules = vec![
        rule(0, &["team-a/special"], 10),
        rule(1, &["team-a/**"], 20),
        rule(2, &["**"], 30),
    ];
    assert_eq!(rule_for(&rules, "team-a/special"), Some(0));
    assert_eq!(rule_for(&rules, "team-a/app"), Some(1));
    assert_eq!(rule_for(&rules, "team-b/app"), Some(2));
    assert_eq!(rule_for(&rules[..2], "team-b/app"), None);
    assert_eq!(rules[1].records_prefix(), "_usage/team-a/");
    assert_eq!(rules[2].records_prefix(), "_usage/");
    assert_eq!(rule(0, &["team-*/**"], 1).records_prefix(), "_usage/");
    assert_eq!(
        rule(0, &["org/a/*", "org/b/**"], 1).records_prefix(),
        "_usage/org/"
    );
}

#[tokio::test]
async fn new_content_counts_and_content_held_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), vec![rule(0, &["team/**"], 10_000)]);
    let layer = bytes(4000, 1);
    let d = push(&r, "team/app", &layer).await.unwrap();
    assert_eq!(used(&r, "team/app").await, 4000);
    // The same content again: free, and not counted twice.
    push(&r, "team/app", &layer).await.unwrap();
    assert_eq!(used(&r, "team/app").await, 4000);
    // A manifest counts its own size.
    let m = manifest(&r, "team/app", &[(&d, 4000)]).await;
    let tag = Reference::Tag(oci::Tag::parse("v1").unwrap());
    r.manifest_put(&name("team/app"), &tag, None, m.clone(), &[])
        .await
        .unwrap();
    let want = 4000 + 2 + m.len() as u64;
    assert_eq!(used(&r, "team/app").await, want);
    // The records say what a walk finds.
    let walked = count(r.backend().as_ref(), &name("team/app"))
        .await
        .unwrap();
    assert_eq!((walked.bytes, walked.blobs, walked.manifests), (want, 2, 1));
    // Repositories no rule covers are not counted at all.
    push(&r, "other/app", &bytes(50_000, 2)).await.unwrap();
    assert!(r.quotas().room(&name("other/app")).await.unwrap().is_none());
    assert!(
        !tracked(r.backend().as_ref(), &name("other/app"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_push_that_does_not_fit_is_refused_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), vec![rule(0, &["team/**"], 10_000)]);
    push(&r, "team/app", &bytes(6000, 1)).await.unwrap();
    // Small (buffered) and large (streamed through a private upload).
    for n in [5000, 600_000] {
        let big = bytes(n, 3);
        let e = push(&r, "team/app", &big).await.unwrap_err();
        let detail = refused(e);
        assert_eq!(detail["rule"], "quotas #1");
        assert_eq!(detail["limit"], 10_000);
        assert_eq!(detail["used"], 6000);
        let d = Digest::sha256_of(&big);
        assert!(
            no_content(dir.path(), &d),
            "content of a refused push stored"
        );
        assert!(r.blob_size(&name("team/app"), &d).await.unwrap().is_none());
        assert!(r.backend().upload_list().await.unwrap().is_empty());
    }
    // A declared length is refused before anything is read.
    let d = Digest::sha256_of(b"never sent");
    let never: ByteStream = Box::pin(futures_util::stream::once(async {
        Err::<Bytes, _>(io::Error::other("the body was read"))
    }));
    let e = r
        .upload_whole_sized(&name("team/app"), never, &d, Some(5000))
        .await
        .unwrap_err();
    assert_eq!(refused(e)["needed"], 5000);
    assert_eq!(used(&r, "team/app").await, 6000);
    // What still fits goes in.
    push(&r, "team/app", &bytes(4000, 4)).await.unwrap();
    assert_eq!(used(&r, "team/app").await, 10_000);
    // Full: content the repository holds may still be pushed (free), and
    // so may an empty blob.
    push(&r, "team/app", &bytes(6000, 1)).await.unwrap();
    push(&r, "team/app", b"").await.unwrap();
    refused(push(&r, "team/app", b"x").await.unwrap_err());
}

#[tokio::test]
async fn a_chunked_upload_is_refused_midway_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), vec![rule(0, &["team/**"], 10_000)]);
    let repo = name("team/app");
    let chunk = |n: u64| ChunkRange::new(0, n - 1).unwrap();
    // A chunk that says it does not fit: refused unread, session gone.
    let id = r
        .upload_start(&repo, Algorithm::Sha256, |_| {})
        .await
        .unwrap();
    r.upload_append(&repo, &id, body(&bytes(4000, 1)), Some(chunk(4000)))
        .await
        .unwrap();
    let e = r
        .upload_append_sized(&repo, &id, body(&bytes(7000, 1)), None, Some(7000))
        .await
        .unwrap_err();
    assert_eq!(refused(e)["needed"], 11_000);
    assert!(r.upload_status(&repo, &id).await.is_err());
    assert!(r.backend().upload_list().await.unwrap().is_empty());
    // A chunk of unknown length: stopped when it passes the room.
    let id = r
        .upload_start(&repo, Algorithm::Sha256, |_| {})
        .await
        .unwrap();
    let e = r
        .upload_append(&repo, &id, body(&bytes(20_000, 2)), None)
        .await
        .unwrap_err();
    let detail = refused(e);
    assert!(detail["needed"].as_u64().unwrap() > 10_000);
    assert!(r.backend().upload_list().await.unwrap().is_empty());
    // A session that fits chunk by chunk but is refused at the commit
    // because the repository filled meanwhile: removed, never linked.
    let id = r
        .upload_start(&repo, Algorithm::Sha256, |_| {})
        .await
        .unwrap();
    let data = bytes(6000, 5);
    r.upload_append(&repo, &id, body(&data), None)
        .await
        .unwrap();
    push(&r, "team/app", &bytes(5000, 6)).await.unwrap();
    let d = Digest::sha256_of(&data);
    let e = r
        .upload_finish(&repo, &id, None, None, &d)
        .await
        .unwrap_err();
    assert_eq!(refused(e)["needed"], 6000);
    assert!(no_content(dir.path(), &d));
    assert!(r.blob_size(&repo, &d).await.unwrap().is_none());
    assert!(r.backend().upload_list().await.unwrap().is_empty());
    assert_eq!(used(&r, "team/app").await, 5000);
    // The same through a session with the final PUT's body: commit fits.
    let id = r
        .upload_start(&repo, Algorithm::Sha256, |_| {})
        .await
        .unwrap();
    let last = bytes(5000, 7);
    let d = Digest::sha256_of(&last);
    r.upload_finish(&repo, &id, Some(body(&last)), None, &d)
        .await
        .unwrap();
    assert_eq!(used(&r, "team/app").await, 10_000);
}

#[tokio::test]
async fn mounts_count_in_each_repository_unless_held() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), vec![rule(0, &["small/**"], 5000)]);
    let d = push(&r, "big/app", &bytes(6000, 1)).await.unwrap();
    let e = r
        .mount(&name("small/app"), &d, Some(&name("big/app")))
        .await
        .unwrap_err();
    assert_eq!(refused(e)["needed"], 6000);
    assert!(r.blob_size(&name("small/app"), &d).await.unwrap().is_none());
    let small = push(&r, "big/app", &bytes(2000, 2)).await.unwrap();
    assert!(
        r.mount(&name("small/app"), &small, Some(&name("big/app")))
            .await
            .unwrap()
    );
    assert_eq!(used(&r, "small/app").await, 2000);
    // Shared content counts in each repository of the namespace.
    assert!(r.mount(&name("small/two"), &small, None).await.unwrap());
    assert_eq!(used(&r, "small/app").await, 4000);
    refused(
        r.mount(&name("small/three"), &small, None)
            .await
            .unwrap_err(),
    );
    // Mounting what a repository holds again is free.
    assert!(r.mount(&name("small/app"), &small, None).await.unwrap());
    assert_eq!(used(&r, "small/two").await, 4000);
}

#[tokio::test]
async fn a_namespace_shares_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(
        dir.path(),
        vec![rule(0, &["team-a/**"], 10_000), rule(1, &["**"], 1_000_000)],
    );
    push(&r, "team-a/one", &bytes(6000, 1)).await.unwrap();
    push(&r, "team-a/two/deep", &bytes(3000, 2)).await.unwrap();
    // Counted by the catch-all rule, not by team-a's.
    push(&r, "team-b/one", &bytes(9000, 3)).await.unwrap();
    assert_eq!(used(&r, "team-a/one").await, 9000);
    assert_eq!(used(&r, "team-b/one").await, 9000);
    let detail = refused(
        push(&r, "team-a/two/deep", &bytes(2000, 4))
            .await
            .unwrap_err(),
    );
    assert_eq!(detail["used"], 9000);
    assert_eq!(detail["repository"], "team-a/two/deep");
    let msg = match push(&r, "team-a/three", &bytes(1001, 5)).await.unwrap_err() {
        Error::Registry(e) => e.message,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        msg,
        "quota exceeded: team-a/** may hold 9.7 KiB, it holds 8.7 KiB and this push needs 1001 B more (quotas #1)"
    );
}

#[tokio::test]
async fn deletes_stop_counting_after_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), vec![rule(0, &["team/**"], 10_000)]);
    let repo = name("team/app");
    let d = push(&r, "team/app", &bytes(7000, 1)).await.unwrap();
    refused(push(&r, "team/app", &bytes(4000, 2)).await.unwrap_err());
    r.blob_delete(&repo, &d).await.unwrap();
    // The delete has its repository recounted in the background; a push
    // during a recount may count twice until the next one (never less).
    r.quotas().settled().await;
    assert_eq!(used(&r, "team/app").await, 0);
    assert_eq!(used(&r, "team/app").await, 0);
    push(&r, "team/app", &bytes(4000, 2)).await.unwrap();
    // Pushed again after its delete: refused now, counted when it fits.
    refused(push(&r, "team/app", &bytes(7000, 1)).await.unwrap_err());
    r.blob_delete(&repo, &Digest::sha256_of(&bytes(4000, 2)))
        .await
        .unwrap();
    r.quotas().settled().await;
    push(&r, "team/app", &bytes(7000, 1)).await.unwrap();
    assert_eq!(used(&r, "team/app").await, 7000);
}

#[tokio::test]
async fn repositories_with_content_from_before_the_quota_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let before = open(dir.path(), Vec::new());
        push(&before, "team/old", &bytes(3000, 1)).await.unwrap();
        push(&before, "team/sibling", &bytes(2000, 2))
            .await
            .unwrap();
    }
    let r = open(dir.path(), vec![rule(0, &["team/**"], 10_000)]);
    // The repository pushed to is counted at its first push...
    assert_eq!(used(&r, "team/old").await, 3000);
    // ...its siblings when the server starts.
    assert_eq!(r.quotas().count_uncounted().await.unwrap(), 1);
    assert_eq!(used(&r, "team/old").await, 5000);
    assert_eq!(r.quotas().count_uncounted().await.unwrap(), 0);
}

/// A recount folds what its walk covers: deltas older than the margin,
/// older snapshots, fresh deltas of links it saw (counted once, through
/// the delta) and fresh deltas of links gone.
#[tokio::test]
async fn recounts_fold_records() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), vec![rule(0, &["team/**"], 1 << 30)]);
    let b = r.backend().clone();
    let repo = name("team/app");
    let prefix = records_of(&repo);
    let now = ms(SystemTime::now());
    let put = |rec: Record| {
        let b = b.clone();
        let key = format!("{prefix}{}", rec.name());
        async move { b.put(&key, Bytes::new()).await.unwrap() }
    };
    let delta = |at_ms: u64, size: u64, d: &Digest| {
        Record::Delta(Delta {
            at_ms,
            size,
            kind: Kind::Blob,
            digest: format!("sha256-{}", d.hex()),
        })
    };
    let listed = || {
        let b = b.clone();
        let prefix = prefix.clone();
        async move { b.list(&prefix, None, 100).await.unwrap() }
    };
    // The first push counts the (empty) repository, then records a delta.
    let x = push(&r, "team/app", &bytes(1000, 1)).await.unwrap();
    // A second writer's record of the same link: counted once.
    put(delta(now + 10_000, 1000, &x)).await;
    // A delta from long ago: older than any snapshot's margin.
    put(delta(1, 777, &Digest::sha256_of(b"old"))).await;
    // A fresh delta of a link that is gone (deleted since).
    put(delta(now + 10_001, 50, &Digest::sha256_of(b"gone"))).await;
    // An older snapshot: the newest walk wins.
    put(Record::Snapshot(Snapshot {
        walk_ms: 2,
        bytes: 999_999,
        blobs: 9,
        manifests: 9,
    }))
    .await;
    assert_eq!(listed().await.len(), 6, "{:?}", listed().await);
    // Until a recount: never less than the truth.
    assert_eq!(used(&r, "team/app").await, 1000 + 50);
    recount(b.as_ref(), &repo).await.unwrap();
    let after = listed().await;
    // Left: the snapshot, and the two records of x (which it leaves out).
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after.iter().filter(|n| n.starts_with("s-")).count(), 1);
    assert!(
        after
            .iter()
            .filter(|n| n.starts_with("d-"))
            .all(|n| n.contains(x.hex()))
    );
    assert_eq!(used(&r, "team/app").await, 1000);
    let records = read_records(b.as_ref(), &prefix).await.unwrap();
    let snapshot = records.get("team/app").unwrap().snapshot.unwrap();
    assert_eq!((snapshot.bytes, snapshot.blobs), (0, 0));
    // Once its deltas are older than the margin, the next recount folds
    // them into its snapshot. (Simulated: a snapshot whose walk is later
    // by more than the margin drops them from the count.)
    let later = now + margin_ms() * 2;
    put(Record::Snapshot(Snapshot {
        walk_ms: later,
        bytes: 1000,
        blobs: 1,
        manifests: 0,
    }))
    .await;
    assert_eq!(used(&r, "team/app").await, 1000);
}

/// Recounts running at the same time as each other and as writers never
/// lose a link: the usage afterwards is at least what the links hold.
#[tokio::test]
async fn concurrent_recounts_and_writers_never_under_count() {
    let dir = tempfile::tempdir().unwrap();
    let r = Arc::new(open(dir.path(), vec![rule(0, &["team/**"], 1 << 40)]));
    let repo = name("team/app");
    let mut tasks = Vec::new();
    for w in 0..4u8 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15u8 {
                push(&r, "team/app", &bytes(100 + usize::from(i), w * 16 + i))
                    .await
                    .unwrap();
            }
        }));
    }
    for _ in 0..3 {
        let b = r.backend().clone();
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                recount(b.as_ref(), &repo).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let truth = count(r.backend().as_ref(), &repo).await.unwrap();
    assert_eq!(truth.blobs, 60);
    assert!(used(&r, "team/app").await >= truth.bytes);
    recount(r.backend().as_ref(), &repo).await.unwrap();
    assert_eq!(used(&r, "team/app").await, truth.bytes);
}

#[tokio::test]
async fn garbage_collection_recounts_what_it_freed() {
    use crate::gc::{GcOptions, collect};
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), vec![rule(0, &["team/**"], 1 << 30)]);
    let repo = name("team/app");
    let d = push(&r, "team/app", &bytes(4000, 1)).await.unwrap();
    let m = manifest(&r, "team/app", &[(&d, 4000)]).await;
    let digest = Digest::sha256_of(&m);
    r.manifest_put(&repo, &Reference::Digest(digest.clone()), None, m, &[])
        .await
        .unwrap();
    assert!(used(&r, "team/app").await > 4000);
    r.manifest_delete(&repo, &Reference::Digest(digest))
        .await
        .unwrap();
    let opts = GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    };
    let report = collect(&r, &opts).await.unwrap();
    assert_eq!(report.links_deleted, 2);
    // Only records within the clock margin of the walk remain on top of
    // it; none of them is a link that still exists.
    let walked = count(r.backend().as_ref(), &repo).await.unwrap();
    assert_eq!(walked.bytes, 0);
    let records = read_records(r.backend().as_ref(), &records_of(&repo))
        .await
        .unwrap();
    let snapshot = records.values().next().unwrap().snapshot.unwrap();
    assert_eq!(snapshot.bytes, 0);
}

/// Pushes checked at the same time in one process: what one admitted
/// counts for the others until its delta is written, so exactly what fits
/// goes in.
#[tokio::test]
async fn one_process_never_admits_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let r = Arc::new(open(dir.path(), vec![rule(0, &["team/**"], 10_000)]));
    push(&r, "team/app", &bytes(6000, 1)).await.unwrap();
    let tasks: Vec<_> = (0..10u8)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { push(&r, &format!("team/r{i}"), &bytes(1000, 10 + i)).await })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused(e);
            }
        }
    }
    assert_eq!(accepted, 4);
    assert_eq!(used(&r, "team/app").await, 10_000);
    // Every admission was recorded: nothing stays reserved.
    assert_eq!(r.quotas().reserved(0), 0);
    // An admission whose push fails before its record gives its bytes back.
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), vec![rule(0, &["team/**"], 10_000)]);
    let d = Digest::sha256_of(b"never linked");
    let q = r.quotas();
    let charge = q.admit(&name("team/x"), Kind::Blob, &d, 1).await.unwrap();
    assert!(charge.is_some());
    assert_eq!(q.reserved(0), 1);
    drop(charge);
    assert_eq!(q.reserved(0), 0);
}
