//! No request reaches outside the data directory: hostile repository
//! names, references, digests, upload ids and query parameters (dot
//! segments, percent-encodings, absolute paths, NUL, backslashes, overlong
//! and odd encodings, very long names) neither read nor change anything
//! beyond it, and are answered with OCI error JSON, never a 5xx.

mod common;

use common::*;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file and directory under `dir` (but not under the skipped
/// top-level entries), with a hash of each file's content.
fn snapshot(dir: &Path, skip: &[&str]) -> BTreeMap<PathBuf, Option<String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if rel.components().count() == 1 && skip.iter().any(|s| rel == Path::new(s)) {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.insert(rel, Some(hex::encode(Sha256::digest(&bytes))));
            }
        }
    }
    out
}

/// Request targets that try to leave the data directory. `bait` is the
/// name of a directory beside the data directory.
fn hostile_targets(name: &str, digest: &str, upload: &str, bait: &str) -> Vec<String> {
    let hex = &digest[7..];
    let long_name = "a".repeat(5000);
    let deep_name = "a/".repeat(200) + "b";
    let repo_names = [
        "..".to_string(),
        ".".to_string(),
        "%2e%2e".to_string(),
        "%2E%2e/%2e%2E".to_string(),
        format!("..%2f..%2f{bait}"),
        format!("{name}/../../{bait}"),
        format!("{name}/%2e%2e/%2e%2e/%2e%2e/{bait}"),
        format!("/{bait}"),
        format!("%2f{bait}"),
        format!("%2F..%2F..%2F..%2F{bait}"),
        format!("{name}%00"),
        format!("a%00/../../{bait}"),
        format!("a\\..\\..\\{bait}"),
        format!("a%5c..%5c..%5c{bait}"),
        format!("%252e%252e/%252e%252e/{bait}"),
        format!("%c0%ae%c0%ae/%c0%ae%c0%ae/{bait}"),
        format!("%ef%bc%8e%ef%bc%8e/{bait}"),
        format!("{name}/_uploads"),
        format!("{name}/_blobs/sha256"),
        "_catalog/x".to_string(),
        format!("..../{bait}"),
        format!("{name}/./x"),
        long_name,
        deep_name,
    ];
    let mut t = Vec::new();
    for n in &repo_names {
        t.push(format!("/v2/{n}/tags/list"));
        t.push(format!("/v2/{n}/manifests/latest"));
        t.push(format!("/v2/{n}/blobs/{digest}"));
        t.push(format!("/v2/{n}/blobs/uploads/"));
        t.push(format!("/v2/{n}/blobs/uploads/{upload}"));
        t.push(format!("/v2/{n}/referrers/{digest}"));
    }
    let references = [
        "..".to_string(),
        "%2e%2e".to_string(),
        format!("..%2F..%2F..%2F..%2F{bait}%2Fsecret"),
        format!("%2e%2e%2f%2e%2e%2f{bait}"),
        "sha256:..%2f..%2f..".to_string(),
        format!("sha256:{hex}%2F..%2F..%2F{bait}"),
        "latest%00".to_string(),
        format!("..\\..\\{bait}"),
        format!("%5c..%5c{bait}"),
        "/etc/passwd".to_string(),
        "%2Fetc%2Fpasswd".to_string(),
        "t".repeat(7000),
    ];
    for r in &references {
        t.push(format!("/v2/{name}/manifests/{r}"));
    }
    let digests = [
        format!("sha256:../../../{bait}"),
        "sha256:%2e%2e%2f%2e%2e".to_string(),
        "sha512:..".to_string(),
        format!("sha256:{hex}/../../../../{bait}"),
        format!("sha256:{hex}%2f..%2f..%2f{bait}"),
        format!("md5:{}", &hex[..32]),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{hex}%00"),
        format!("..%2F{hex}"),
        format!("sha256:{}", "0".repeat(6000)),
        "%2Fetc%2Fpasswd".to_string(),
    ];
    for d in &digests {
        t.push(format!("/v2/{name}/blobs/{d}"));
        t.push(format!("/v2/{name}/referrers/{d}"));
        t.push(format!("/v2/{name}/blobs/uploads/{upload}?digest={d}"));
        t.push(format!("/v2/{name}/blobs/uploads/?digest={d}"));
        t.push(format!("/v2/{name}/blobs/uploads/?mount={d}&from={name}"));
    }
    let uploads = [
        "..".to_string(),
        "%2e%2e".to_string(),
        format!("..%2F..%2F..%2F{bait}"),
        format!("{upload}%2F..%2F..%2F..%2F{bait}"),
        format!("{upload}/../../../{bait}"),
        "%2Fetc%2Fpasswd".to_string(),
        format!("..\\..\\{bait}"),
        format!("{upload}%00"),
        "u".repeat(5000),
    ];
    for u in &uploads {
        t.push(format!("/v2/{name}/blobs/uploads/{u}"));
        t.push(format!("/v2/{name}/blobs/uploads/{u}?digest={digest}"));
    }
    t.extend([
        format!("/v2/{name}/tags/list?last=..%2F..%2F{bait}"),
        format!("/v2/_catalog?last=..%2F..%2F..%2F{bait}"),
        format!("/v2/_catalog?last=%2F{bait}&n=5"),
        format!("/v2/{name}/referrers/{digest}?artifactType=..%2F..%2F{bait}"),
        format!("/v2/{name}/blobs/uploads/?mount={digest}&from=..%2F..%2F{bait}"),
        format!("/v2/{name}/blobs/uploads/?mount={digest}&from=%2F{bait}"),
        format!("/v2/{name}/manifests/other?tag=..&tag=%2e%2e%2f{bait}"),
        format!("/v2/../../{bait}/secret"),
        format!("/../../{bait}/secret"),
        format!("/v2/%2e%2e/%2e%2e/{bait}/secret"),
    ]);
    t
}

#[tokio::test]
async fn no_request_reaches_outside_the_data_dir() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let root = reg.root_dir().unwrap().to_path_buf();
    let data = reg.data_dir().unwrap();

    // Bait beside the data directory (and where a key's "~" suffix would
    // point), so a traversal would have something to read or overwrite.
    let bait = format!("outside-{}", nonce());
    let secret = format!("TOP-SECRET-{}", nonce());
    for dir in [root.join(&bait), root.clone()] {
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["secret", "secret~", "latest", "latest~", "passwd~"] {
            std::fs::write(dir.join(f), &secret).unwrap();
        }
    }
    std::fs::create_dir_all(root.join(&bait).join("_tags")).unwrap();
    std::fs::write(root.join(&bait).join("_tags").join("latest~"), &secret).unwrap();

    let name = repo("escape");
    let img = reg.push_image(&name, "latest").await;
    let upload = reg.start_upload(&name).await;
    let upload_id = location_path(&upload)
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let outside_before = snapshot(&root, &["data"]);
    let parent = root.parent().unwrap().to_path_buf();
    let data_before = snapshot(&data, &[".tmp", "_uploads"]);

    let targets = hostile_targets(&name, &img.digest, &upload_id, &bait);
    let mut failures = Vec::new();
    for t in &targets {
        for method in ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"] {
            let (headers, body): (Vec<(&str, &str)>, &[u8]) = match method {
                "PUT" => (vec![("Content-Type", OCI_MANIFEST)], &img.manifest),
                "PATCH" | "POST" => (
                    vec![("Content-Type", "application/octet-stream")],
                    b"hostile payload",
                ),
                _ => (vec![], b""),
            };
            let r = reg.raw(method, t, &headers, body).await;
            let what = format!("{method} {}", &t[..t.len().min(160)]);
            if r.status == 0 || r.status >= 500 {
                failures.push(format!("{what}: status {}", r.status));
                continue;
            }
            if String::from_utf8_lossy(&r.body).contains(&secret) {
                failures.push(format!("{what}: answered with the bait's content"));
            }
            if r.status >= 400 && method != "HEAD" {
                // Every error the router gives is OCI JSON with a known code.
                let codes = r.json().and_then(|v| {
                    v["errors"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|e| e["code"].as_str().map(str::to_owned))
                            .collect::<Vec<_>>()
                    })
                });
                match codes {
                    Some(c)
                        if !c.is_empty() && c.iter().all(|c| ERROR_CODES.contains(&c.as_str())) => {
                    }
                    _ => failures.push(format!(
                        "{what}: {} without OCI error JSON: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests misbehaved:\n{}",
        failures.len(),
        targets.len() * 6,
        failures.join("\n")
    );

    // Nothing beside the data directory was created, changed or removed.
    assert_eq!(snapshot(&root, &["data"]), outside_before);
    for n in [bait.as_str(), "secret", "secret~", "passwd~"] {
        assert!(
            !parent.join(n).exists(),
            "{} appeared above the test root",
            parent.join(n).display()
        );
    }
    // Inside it, no repository, tag, link or blob appeared or changed; only
    // upload sessions (of requests that were valid) may have come and gone.
    let data_after = snapshot(&data, &[".tmp", "_uploads"]);
    let changed: Vec<_> = data_after
        .iter()
        .filter(|(k, v)| data_before.get(*k) != Some(*v))
        .map(|(k, _)| k.display().to_string())
        .chain(
            data_before
                .keys()
                .filter(|k| !data_after.contains_key(*k))
                .map(|k| format!("removed {}", k.display())),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "changed inside the data dir: {changed:?}"
    );

    // The legitimate content is intact.
    let r = reg.get_m(&format!("/v2/{name}/manifests/latest")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), img.manifest);
}
