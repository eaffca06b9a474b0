//! Immutable tags (`[[immutable_tags]]`): once set, a covered tag keeps its
//! manifest: pushing another one to it, deleting it, or deleting the
//! manifest it names is refused with 403 `DENIED` naming the rule, for
//! every client (auth cannot grant it) and through skopeo too.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

const RULES: &str = r#"
[[immutable_tags]]
repos = ["release/**"]
tags = ["v*"]
"#;

async fn start(extra: &str) -> Option<(Registry, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(&config, format!("{RULES}{extra}")).unwrap();
    let reg = Registry::start_with(&["--config", config.to_str().unwrap()]).await?;
    Some((reg, dir))
}

async fn assert_denied(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 403, "{what}");
    let body: Value = r.json().await.unwrap();
    let e = &body["errors"][0];
    assert_eq!(e["code"], "DENIED", "{what}: {body}");
    assert!(
        e["message"].as_str().unwrap().contains("immutable"),
        "{what}: {body}"
    );
    assert_eq!(
        e["detail"]["rule"], "immutable_tags #1: repos release/**, tags v*",
        "{what}: {body}"
    );
}

async fn tag_digest(reg: &Registry, repo: &str, tag: &str) -> Option<String> {
    let r = reg.head_m(&format!("/v2/{repo}/manifests/{tag}")).await;
    header(&r, "docker-content-digest")
}

#[tokio::test]
async fn a_covered_tag_is_never_moved_or_deleted() {
    let (reg, _dir) = local_only!(start("").await);
    let repo = "release/app";
    let one = reg.push_image(repo, "v1").await;
    // The same manifest again: fine (a retried push).
    reg.push_manifest(repo, "v1", OCI_MANIFEST, &one.manifest)
        .await;
    // Another manifest to v1: refused, by tag and by ?tag=.
    let two = reg.prepare_image(repo, 1).await;
    let r = reg
        .put_manifest(repo, "v1", OCI_MANIFEST, &two.manifest)
        .await;
    assert_denied(r, "move v1").await;
    let r = reg
        .req(
            reqwest::Method::PUT,
            &format!("/v2/{repo}/manifests/{}?tag=v1", two.digest),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(two.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_denied(r, "move v1 with ?tag=").await;
    assert_eq!(tag_digest(&reg, repo, "v1").await, Some(one.digest.clone()));
    // Deleting the tag, or the manifest it names: refused, nothing changes.
    assert_denied(
        reg.delete(&format!("/v2/{repo}/manifests/v1")).await,
        "delete v1",
    )
    .await;
    assert_denied(
        reg.delete(&format!("/v2/{repo}/manifests/{}", one.digest))
            .await,
        "delete the manifest of v1",
    )
    .await;
    assert_eq!(tag_digest(&reg, repo, "v1").await, Some(one.digest.clone()));
    // Tags the rule does not cover move and go as usual...
    reg.push_manifest(repo, "latest", OCI_MANIFEST, &one.manifest)
        .await;
    reg.push_manifest(repo, "latest", OCI_MANIFEST, &two.manifest)
        .await;
    assert_eq!(
        reg.delete(&format!("/v2/{repo}/manifests/latest"))
            .await
            .status(),
        202
    );
    // ...and so do v* tags of repositories it does not cover.
    let other = "team/app";
    let three = reg.push_image(other, "v1").await;
    let four = reg.prepare_image(other, 1).await;
    reg.push_manifest(other, "v1", OCI_MANIFEST, &four.manifest)
        .await;
    assert_eq!(tag_digest(&reg, other, "v1").await, Some(four.digest));
    assert_eq!(
        reg.delete(&format!("/v2/{other}/manifests/{}", three.digest))
            .await
            .status(),
        202
    );
    // A deeper repository is covered by release/**.
    let deep = "release/a/b";
    let five = reg.push_image(deep, "v2.0").await;
    let six = reg.prepare_image(deep, 1).await;
    let r = reg
        .put_manifest(deep, "v2.0", OCI_MANIFEST, &six.manifest)
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(tag_digest(&reg, deep, "v2.0").await, Some(five.digest));
}

/// Auth cannot grant what the rule refuses: a user allowed to push and
/// delete everywhere still gets DENIED.
#[tokio::test]
async fn no_permission_bypasses_the_rule() {
    let hash = {
        let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["passwd", "root"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(b"root-pw\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .split_once(':')
            .unwrap()
            .1
            .to_owned()
    };
    let (mut reg, _dir) = local_only!(
        start(&format!(
            r#"
[[auth.users]]
name = "root"
password_hash = "{hash}"
[[auth.policy]]
repos = ["**"]
pull = ["user:root"]
push = ["user:root"]
delete = ["user:root"]
"#
        ))
        .await
    );
    reg.client = reqwest::Client::builder()
        .default_headers({
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                "Authorization",
                format!(
                    "Basic {}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        "root:root-pw"
                    )
                )
                .parse()
                .unwrap(),
            );
            h
        })
        .build()
        .unwrap();
    let one = reg.push_image("release/app", "v1").await;
    assert_denied(
        reg.delete("/v2/release/app/manifests/v1").await,
        "delete v1 as a user allowed to delete",
    )
    .await;
    assert_denied(
        reg.delete(&format!("/v2/release/app/manifests/{}", one.digest))
            .await,
        "delete v1's manifest as a user allowed to delete",
    )
    .await;
}

/// skopeo copying another image onto an immutable tag fails, and says why.
#[tokio::test]
async fn skopeo_is_refused_with_the_reason() {
    let (reg, _dir) = local_only!(start("").await);
    let skopeo = std::path::Path::new("/usr/bin/skopeo");
    assert!(
        skopeo.exists(),
        "this test needs skopeo (tests/e2e/install.sh installs it)"
    );
    let one = reg.push_image("release/app", "v1").await;
    reg.push_image("release/app", "next").await;
    let host = reg.host_port().to_owned();
    let out = Command::new(skopeo)
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{host}/release/app:next"))
        .arg(format!("docker://{host}/release/app:v1"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "skopeo moved an immutable tag");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("immutable"), "skopeo's error: {err}");
    assert_eq!(
        tag_digest(&reg, "release/app", "v1").await,
        Some(one.digest)
    );
}
