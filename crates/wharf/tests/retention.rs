//! Retention rules (`[[retention]]`) through the real server and the
//! `wharf gc --config` command, on the filesystem and (in S3 runs) on the
//! bucket: the newest tags, protected tags, and the referrers of kept
//! images stay; older tags, untagged manifests and what only they held go.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Keep the newest two tags of `ret/**` (and `latest`), and no untagged
/// manifest beyond the grace period.
const RULE: &str = r#"
[[retention]]
repos = ["ret/**"]
protect = ["latest"]
keep_newest = 2
untagged_older_than = "0s"
"#;

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("wharf.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn tags(reg: &Registry, repo: &str) -> Vec<String> {
    let r = reg.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Push times on S3 are whole seconds: let one pass between pushes whose
/// order the rules look at.
async fn next_second(reg: &Registry) {
    if reg.on_s3() {
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

async fn manifest_status(reg: &Registry, repo: &str, reference: &str) -> u16 {
    reg.head_m(&format!("/v2/{repo}/manifests/{reference}"))
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_gc_command_applies_retention_with_a_dry_run_first() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let repo = repo("ret/cmd");
    let latest = reg.push_image(&repo, "latest").await;
    let mut images = Vec::new();
    for i in 1..=4 {
        next_second(&reg).await;
        images.push(reg.push_image(&repo, &format!("a{i}")).await);
    }
    // An untagged image (goes) and a signature of a4 (stays with it).
    let untagged = reg.prepare_image(&repo, 1).await;
    reg.push_manifest(&repo, &untagged.digest, OCI_MANIFEST, &untagged.manifest)
        .await;
    let a4 = Desc {
        media_type: OCI_MANIFEST.into(),
        digest: images[3].digest.clone(),
        size: images[3].manifest.len(),
    };
    let (_, signature) = reg
        .push_artifact(
            &repo,
            None,
            Some("application/vnd.example.signature"),
            "application/vnd.oci.empty.v1+json",
            Some(&a4),
            None,
        )
        .await;
    // An unrelated repository: no rule covers it.
    let other = common::repo("team/app");
    let old = reg.push_image(&other, "old").await;
    reg.push_image(&other, "new").await;
    reg.kill_hard();

    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, RULE);
    let store = store_of(&reg);
    let gc = |extra: &[&str]| -> Value {
        let mut cmd = wharf_command(&[
            "gc", "--store", &store, "--config", &config, "--grace", "0", "--json",
        ]);
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
    assert_eq!(dry["tags_deleted"], 2, "{dry}");
    assert_eq!(dry["manifests_deleted"], 3, "{dry}");
    let listed: Vec<&str> = dry["removed_by_retention"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        format!("{repo}:a1"),
        format!("{repo}:a2"),
        format!("{repo}@{}", images[0].digest),
        format!("{repo}@{}", untagged.digest),
    ] {
        assert!(listed.contains(&expected.as_str()), "{expected} in {dry}");
    }
    // Each removed image's config and layer (each image has its own), and
    // its manifest body: three images.
    assert_eq!(dry["blobs_deleted"], 9, "{dry}");

    let done = gc(&[]);
    for field in [
        "tags_deleted",
        "manifests_deleted",
        "links_deleted",
        "blobs_deleted",
    ] {
        assert_eq!(done[field], dry[field], "{field}: {done} vs {dry}");
    }
    let again = gc(&[]);
    assert_eq!(
        (
            again["tags_deleted"].as_u64(),
            again["manifests_deleted"].as_u64(),
            again["blobs_deleted"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{again}"
    );

    reg.restart().await;
    assert_eq!(tags(&reg, &repo).await, ["a3", "a4", "latest"]);
    assert_complete(&reg, &repo, "a3", &images[2]).await;
    assert_complete(&reg, &repo, "a4", &images[3]).await;
    assert_complete(&reg, &repo, "latest", &latest).await;
    for gone in [&images[0], &images[1], &untagged] {
        assert_eq!(manifest_status(&reg, &repo, &gone.digest).await, 404);
        let layer = &gone.layers[0].digest;
        assert_eq!(
            reg.head(&format!("/v2/{repo}/blobs/{layer}"))
                .await
                .status(),
            404
        );
    }
    // The signature of a kept image stays, and is still listed.
    assert_eq!(manifest_status(&reg, &repo, &signature).await, 200);
    let r = reg
        .get(&format!("/v2/{repo}/referrers/{}", images[3].digest))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"][0]["digest"], signature.as_str(), "{v}");
    // Untouched outside the rule.
    assert_eq!(tags(&reg, &other).await, ["new", "old"]);
    assert_complete(&reg, &other, "old", &old).await;
}

#[tokio::test]
async fn the_server_applies_retention_in_the_background() {
    // Pushed before collection starts: with no grace period a collector
    // may take a blob between its upload and its manifest.
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let repo = repo("ret/bg");
    let mut images = Vec::new();
    for i in 1..=3 {
        next_second(&reg).await;
        images.push(reg.push_image(&repo, &format!("t{i}")).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!("[gc]\ninterval_secs = 1\ngrace_secs = 0\n{RULE}")
            .replace("keep_newest = 2", "keep_newest = 1"),
    );
    reg.restart_with(&["--config", &config]).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let layer = images[0].layers[0].digest.clone();
    loop {
        let gone = tags(&reg, &repo).await == ["t3"]
            && reg
                .head(&format!("/v2/{repo}/blobs/{layer}"))
                .await
                .status()
                == 404;
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "t1 and t2 are still there: {:?}",
            tags(&reg, &repo).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(manifest_status(&reg, &repo, &images[1].digest).await, 404);
    assert_complete(&reg, &repo, "t3", &images[2]).await;
    // A new push is the newest: it stays, t3 goes.
    next_second(&reg).await;
    let t4 = reg.push_image(&repo, "t4").await;
    while tags(&reg, &repo).await != ["t4"] {
        assert!(Instant::now() < deadline, "t3 is still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_complete(&reg, &repo, "t4", &t4).await;
}

#[tokio::test]
async fn a_rule_that_removes_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "[[retention]]\nrepos = [\"ret/**\"]\n");
    let data = dir.path().join("data");
    let out = wharf_command(&[
        "gc",
        "--store",
        &format!("dir:{}", data.display()),
        "--config",
        &config,
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retention #1") && err.contains("says nothing to remove"),
        "{err}"
    );
    let bad = config_file(
        &dir,
        "[[retention]]\nrepos = [\"ret/**\"]\ntags_older_than = \"a while\"\n",
    );
    let out = wharf_command(&[
        "gc",
        "--store",
        &format!("dir:{}", data.display()),
        "--config",
        &bad,
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tags_older_than") && err.contains("not a duration"),
        "{err}"
    );
}
