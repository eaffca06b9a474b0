//! `wharf store-copy` moves a whole registry between a data directory and
//! an S3 bucket, both ways: what the first server served, the server on
//! the copy serves, byte for byte. The round trip through the bucket runs
//! in S3 runs only (ignored otherwise); the directory-to-directory copy
//! always runs.

mod common;

use common::*;
use serde_json::Value;

/// What a registry holds, to compare after a copy.
struct Seeded {
    repo: String,
    image: Image,
    big: Vec<u8>,
    referrer: String,
}

async fn seed(reg: &Registry) -> Seeded {
    let repo = repo("copy/app");
    let image = reg.push_image(&repo, "v1").await;
    reg.push_manifest(&repo, "v2", OCI_MANIFEST, &image.manifest)
        .await;
    // Above S3's part minimum: stored as a multipart upload.
    let big: Vec<u8> = unique_bytes("big")
        .iter()
        .cycle()
        .take((9 << 20) + 5)
        .copied()
        .collect();
    reg.push_blob(&repo, &big).await;
    let (_, referrer) = reg
        .push_artifact(
            &repo,
            None,
            Some("application/x.sig"),
            "application/vnd.oci.empty.v1+json",
            Some(&image.desc()),
            None,
        )
        .await;
    Seeded {
        repo,
        image,
        big,
        referrer,
    }
}

async fn check(reg: &Registry, s: &Seeded) {
    for tag in ["v1", "v2"] {
        let r = reg.get_m(&format!("/v2/{}/manifests/{tag}", s.repo)).await;
        assert_eq!(r.status(), 200, "{tag}");
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            s.image.manifest.as_slice()
        );
    }
    for layer in &s.image.layers {
        let r = reg.get_blob(&s.repo, &layer.digest).await;
        assert_eq!(r.status(), 200);
    }
    reg.assert_blob(&s.repo, &s.big).await;
    let refs: Value = reg
        .get(&format!("/v2/{}/referrers/{}", s.repo, s.image.digest))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        refs["manifests"][0]["digest"],
        s.referrer.as_str(),
        "{refs}"
    );
    let cat: Value = reg.get("/v2/_catalog").await.json().await.unwrap();
    assert!(
        cat["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == s.repo.as_str()),
        "{cat}"
    );
}

/// `wharf store-copy --from FROM --to TO`, asserting success; its stdout.
fn store_copy(from: &str, to: &str) -> String {
    let out = wharf_command(&["store-copy", "-q", "--from", from, "--to", to])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "store-copy {from} -> {to}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn dir(reg: &Registry) -> String {
    format!("dir:{}", reg.data_dir().unwrap().display())
}

#[tokio::test]
async fn a_directory_copied_to_another_serves_the_same() {
    let mut a = local_only!(Registry::start_fs(&[]).await);
    let s = seed(&a).await;
    let mut b = Registry::start_fs(&[]).await.unwrap();
    a.kill_hard();
    b.kill_hard();
    let out = store_copy(&dir(&a), &dir(&b));
    assert!(out.contains("verified"), "{out}");
    b.restart().await;
    check(&b, &s).await;
    // Again: everything is already there.
    b.kill_hard();
    let out = store_copy(&dir(&a), &dir(&b));
    assert!(out.contains("copied 0 blobs"), "{out}");
}

#[tokio::test]
async fn a_damaged_blob_is_reported_and_not_copied() {
    let mut a = local_only!(Registry::start_fs(&[]).await);
    let s = seed(&a).await;
    let mut b = Registry::start_fs(&[]).await.unwrap();
    a.kill_hard();
    b.kill_hard();
    // Rot one layer in the source.
    let layer = &s.image.layers[0].digest;
    let hex = layer.trim_start_matches("sha256:");
    let data = a.data_dir().unwrap();
    let path = walk(&data)
        .into_iter()
        .find(|p| {
            p.to_string_lossy()
                .contains(&format!("blobs/sha256/{}/{hex}", &hex[..2]))
        })
        .expect("the layer's file");
    std::fs::write(&path, b"rotten").unwrap();
    let out = wharf_command(&["store-copy", "-q", "--from", &dir(&a), "--to", &dir(&b)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("not copied: {layer}")), "{stdout}");
    b.restart().await;
    assert_eq!(b.get_blob(&s.repo, layer).await.status(), 404);
    b.assert_blob(&s.repo, &s.big).await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs the S3 backend: run by tests/run-all.sh with WHARF_TEST_S3_ENV"]
async fn a_bucket_to_a_directory_and_back() {
    let mut a = Registry::start_with(&[]).await.expect("a local server");
    assert!(a.on_s3());
    let s = seed(&a).await;
    a.kill_hard();
    // Bucket -> directory.
    let mut b = Registry::start_fs(&[]).await.unwrap();
    b.kill_hard();
    store_copy(&a.s3_store(), &dir(&b));
    b.restart().await;
    check(&b, &s).await;
    // Directory -> another prefix of the bucket.
    let mut c = Registry::start_with(&[]).await.unwrap();
    c.kill_hard();
    b.kill_hard();
    store_copy(&dir(&b), &c.s3_store());
    c.restart().await;
    check(&c, &s).await;
}
