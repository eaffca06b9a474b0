//! Garbage collection through the real server and the `wharf gc` command,
//! on the filesystem and (in S3 runs) on the bucket: what a deleted image
//! held is reclaimed, what a tagged image needs never is, also while many
//! clients push, delete and re-push images sharing layers as the server
//! collects in a loop.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A config (in `dir`) collecting every second with no grace period.
fn collecting_config(dir: &tempfile::TempDir) -> String {
    let config = dir.path().join("wharf.toml");
    std::fs::write(&config, "[gc]\ninterval_secs = 1\ngrace_secs = 0\n").unwrap();
    config.to_str().unwrap().to_owned()
}

/// A server collecting every second with no grace period.
async fn collecting() -> Option<(Registry, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start_with(&["--config", &collecting_config(&dir)]).await?;
    Some((reg, dir))
}

/// Two images in a new repository `<prefix>-...`, the second one deleted:
/// (repository, kept image, deleted image).
async fn one_kept_one_deleted(reg: &Registry, prefix: &str) -> (String, Image, Image) {
    let repo = repo(prefix);
    let keep = reg.push_image(&repo, "keep").await;
    let gone = reg.push_image(&repo, "gone").await;
    let d = reg
        .delete(&format!("/v2/{repo}/manifests/{}", gone.digest))
        .await;
    assert_eq!(d.status(), 202);
    (repo, keep, gone)
}

#[tokio::test]
async fn the_server_reclaims_a_deleted_image_and_keeps_the_rest() {
    // Pushed before collection starts: with no grace period, a collector
    // may take a blob between its upload and its manifest (the client then
    // pushes again; the hammer test below does that).
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let (repo, keep, gone) = one_kept_one_deleted(&reg, "gc/app").await;
    let dir = tempfile::tempdir().unwrap();
    reg.restart_with(&["--config", &collecting_config(&dir)])
        .await;
    // The server collects in the background; give it a generous while.
    let deadline = Instant::now() + Duration::from_secs(120);
    let layer = &gone.layers[0].digest;
    while reg
        .head(&format!("/v2/{repo}/blobs/{layer}"))
        .await
        .status()
        != 404
    {
        assert!(
            Instant::now() < deadline,
            "the deleted image's layer is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // (The layer can go before the run that removes it has logged.)
    while !reg.logs().contains("garbage collection done") {
        assert!(Instant::now() < deadline, "no run was logged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_complete(&reg, &repo, "keep", &keep).await;
}

/// `wharf gc` on the store of a stopped server: a dry run reports and
/// deletes nothing, the run reclaims, the server then serves what is kept.
#[tokio::test]
async fn the_gc_command_with_a_dry_run_first() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let (repo, keep, gone) = one_kept_one_deleted(&reg, "gc/cmd").await;
    reg.kill_hard();
    let store = store_of(&reg);
    let gc = |extra: &[&str]| -> Value {
        let mut cmd = wharf_command(&["gc", "--store", &store, "--grace", "0", "--json"]);
        cmd.args(extra);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "wharf gc {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dry = gc(&["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    // The links of its config and layer (each image has its own), then
    // those two blobs and the manifest body.
    assert_eq!(dry["links_deleted"], 2, "{dry}");
    assert_eq!(dry["blobs_deleted"], 3, "{dry}");
    let done = gc(&[]);
    assert_eq!(done["links_deleted"], 2, "{done}");
    assert_eq!(done["blobs_deleted"], 3, "{done}");
    assert!(
        done["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == gone.layers[0].digest.as_str()),
        "{done}"
    );
    let again = gc(&[]);
    assert_eq!(
        (
            again["links_deleted"].as_u64(),
            again["blobs_deleted"].as_u64()
        ),
        (Some(0), Some(0))
    );
    reg.restart().await;
    assert_complete(&reg, &repo, "keep", &keep).await;
    let layer = &gone.layers[0].digest;
    assert_eq!(
        reg.head(&format!("/v2/{repo}/blobs/{layer}"))
            .await
            .status(),
        404
    );
}

/// A single-POST upload; `None` when refused because a collector holds
/// the blob (404 BLOB_UNKNOWN: the client uploads again).
async fn try_push(reg: &Registry, repo: &str, media_type: &str, data: &[u8]) -> Option<Desc> {
    let r = reg.post_blob(repo, data).await;
    match r.status().as_u16() {
        201 => Some(Desc::new(media_type, data)),
        404 => {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN", "{body}");
            None
        }
        s => panic!(
            "blob upload answered {s}: {}",
            r.text().await.unwrap_or_default()
        ),
    }
}

/// Eight clients push images sharing layers into `<prefix>0..2`, move and
/// delete tags and push again, spread over `reg` and `other`. A push may be
/// refused while a collector holds what it needs (the client pushes again,
/// as clients do). Returns, per client, its repository and the images it
/// left tagged.
async fn hammer(
    reg: &std::sync::Arc<Registry>,
    other: &Option<std::sync::Arc<Registry>>,
    prefix: &str,
) -> Vec<(String, Vec<(String, Image)>)> {
    let mut clients = Vec::new();
    for c in 0..8 {
        let reg = match other {
            Some(o) if c % 2 == 1 => o.clone(),
            _ => reg.clone(),
        };
        let repo = format!("{prefix}{}", c % 3);
        clients.push(tokio::spawn(async move {
            let mut kept: Vec<(String, Image)> = Vec::new();
            for i in 0..12 {
                let tag = format!("c{c}-t{}", i % 4);
                // Shared layers across clients and rounds.
                let shared = format!("shared layer {}", i % 3).into_bytes();
                let mut pushed = None;
                for _attempt in 0..20 {
                    let (Some(cfg), Some(layer), Some(own)) = (
                        try_push(&reg, &repo, OCI_CONFIG, format!("{{\"c\":{c}}}").as_bytes())
                            .await,
                        try_push(&reg, &repo, OCI_LAYER, &shared).await,
                        try_push(&reg, &repo, OCI_LAYER, &unique_bytes(&format!("{c}-{i}"))).await,
                    ) else {
                        continue;
                    };
                    let manifest = oci_manifest(&cfg, &[layer.clone(), own.clone()]);
                    let r = reg.put_manifest(&repo, &tag, OCI_MANIFEST, &manifest).await;
                    match r.status().as_u16() {
                        201 => {
                            pushed = Some(Image {
                                digest: sha256(&manifest),
                                config: cfg,
                                layers: vec![layer, own],
                                manifest,
                            });
                            break;
                        }
                        400 => {
                            let body: Value = r.json().await.unwrap();
                            assert_eq!(
                                body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN",
                                "{body}"
                            );
                        }
                        s => panic!("manifest PUT answered {s}"),
                    }
                }
                let img = pushed.expect("pushed within 20 attempts");
                kept.retain(|(t, _)| *t != tag);
                if i % 3 == 2 {
                    // Retention may have taken the tag already.
                    let d = reg.delete(&format!("/v2/{repo}/manifests/{tag}")).await;
                    assert!([202, 404].contains(&d.status().as_u16()), "{}", d.status());
                } else {
                    kept.push((tag, img));
                }
            }
            (repo, kept)
        }));
    }
    let mut all = Vec::new();
    for c in clients {
        all.push(c.await.unwrap());
    }
    all
}

/// On S3, a second replica over the bucket (collecting too).
async fn second_replica(reg: &Registry) -> Option<std::sync::Arc<Registry>> {
    if reg.on_s3() {
        Some(std::sync::Arc::new(reg.start_replica().await))
    } else {
        None
    }
}

/// The hammer while the server collects every second with no grace period
/// (on S3: two replicas, both collecting, the clients spread over them):
/// nothing acknowledged and still tagged may lose a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_and_deletes_while_collecting() {
    let (reg, _dir) = local_only!(collecting().await);
    let other = second_replica(&reg).await;
    let reg = std::sync::Arc::new(reg);
    let all = hammer(&reg, &other, "gc/hammer").await;
    // Let a few more runs go by, then check everything acknowledged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (repo, kept) in &all {
        for (tag, img) in kept {
            // Tags carry the client's number: no other client moved it.
            assert_complete(&reg, repo, tag, img).await;
        }
    }
}

/// The hammer with a retention rule (keep the newest two tags of each
/// repository, no untagged manifest) applied by every run: what a run
/// leaves tagged is complete, and no more than the rule keeps is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_while_retention_removes_tags() {
    let dir = tempfile::tempdir().unwrap();
    let config = collecting_config(&dir);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "[[retention]]\nrepos = [\"gc/retained*\"]\nkeep_newest = 2\nuntagged_older_than = \"0s\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let reg = local_only!(Registry::start_with(&["--config", &config]).await);
    let other = second_replica(&reg).await;
    let reg = std::sync::Arc::new(reg);
    let all = hammer(&reg, &other, "gc/retained").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut repos: Vec<&String> = all.iter().map(|(r, _)| r).collect();
    repos.sort();
    repos.dedup();
    for repo in repos {
        // Runs go on: wait until one has brought the repository down to
        // the newest two, then check what is left.
        let tags = loop {
            let v: Value = reg
                .get(&format!("/v2/{repo}/tags/list"))
                .await
                .json()
                .await
                .unwrap();
            let tags: Vec<String> = v["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if tags.len() <= 2 {
                break tags;
            }
            assert!(Instant::now() < deadline, "{repo} keeps {tags:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for tag in tags {
            let r = reg.get_m(&format!("/v2/{repo}/manifests/{tag}")).await;
            assert_eq!(r.status(), 200, "{repo}:{tag}");
            let m: Value = r.json().await.unwrap();
            let config = std::iter::once(&m["config"]);
            for d in config.chain(m["layers"].as_array().unwrap()) {
                let digest = d["digest"].as_str().unwrap();
                let r = reg.get_blob(repo, digest).await;
                assert_eq!(r.status(), 200, "{repo}:{tag} lost {digest}");
                assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
            }
        }
    }
}

/// `wharf fsck` on a stopped server's store: clean after pushes (exit 0);
/// on the filesystem, a rotten layer is found (exit 1) and `--repair`
/// removes it and its link, after which the store checks clean.
#[tokio::test]
async fn fsck_checks_the_store() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let repo = repo("fsck/app");
    let img = reg.push_image(&repo, "v1").await;
    reg.kill_hard();
    let store = store_of(&reg);
    let fsck = |extra: &[&str]| -> (i32, Value) {
        let mut cmd = wharf_command(&["fsck", "--store", &store, "--json"]);
        cmd.args(extra);
        let out = cmd.output().unwrap();
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), report)
    };
    let (code, clean) = fsck(&[]);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(clean["manifests"], 1, "{clean}");
    assert_eq!(clean["blobs_hashed"], 3, "{clean}");
    if reg.on_s3() {
        return;
    }
    // Rot the layer's bytes on disk.
    let hex = img.layers[0]
        .digest
        .trim_start_matches("sha256:")
        .to_owned();
    let data = reg.data_dir().unwrap();
    let file = std::fs::read_dir(data.join(format!("blobs/sha256/{}", &hex[..2])))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&hex))
        .expect("the layer's file");
    std::fs::write(&file, b"rotten").unwrap();
    let (code, found) = fsck(&[]);
    assert_eq!(code, 1, "{found}");
    assert_eq!(
        found["corrupt_blobs"][0],
        img.layers[0].digest.as_str(),
        "{found}"
    );
    // The corrupt layer and then its link go; the manifest that needs the
    // layer is reported (exit 1): only the client can push the bytes again.
    let (code, fixed) = fsck(&["--repair"]);
    assert_eq!(code, 1, "{fixed}");
    assert_eq!(fixed["repaired"], 2, "{fixed}");
    let (code, after) = fsck(&[]);
    // The manifest now lacks its layer: reported, not guessed at.
    assert_eq!(code, 1, "{after}");
    assert!(
        after["corrupt_blobs"].as_array().unwrap().is_empty(),
        "{after}"
    );
    assert_eq!(
        after["incomplete_manifests"].as_array().unwrap().len(),
        1,
        "{after}"
    );
}
