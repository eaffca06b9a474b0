//! Crash safety: `kill -9` while pushes are in flight loses nothing that was
//! acknowledged and leaves nothing half-written visible.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What a worker was told succeeded: (repo, tag, manifest bytes, blobs).
type Acked = Vec<(String, String, Vec<u8>, Vec<Vec<u8>>)>;

/// Push one small image (config + two layers, one of them in two chunks)
/// and tag it. Returns None as soon as any request fails (the server died).
async fn push_one(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    seed: u64,
) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let config = format!("{{\"seed\":{seed}}}").into_bytes();
    let layer1 = pseudo_random(64 * 1024 + (seed as usize % 999), seed);
    let layer2 = pseudo_random(300 * 1024, seed ^ 0xdead_beef);
    for blob in [&config, &layer1] {
        let r = client
            .post(format!(
                "{base}/v2/{repo}/blobs/uploads/?digest={}",
                sha256(blob)
            ))
            .body(blob.clone())
            .send()
            .await
            .ok()?;
        if r.status() != 201 {
            return None;
        }
    }
    // Chunked: POST, PATCH, PATCH, PUT.
    let r = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .ok()?;
    if r.status() != 202 {
        return None;
    }
    let mut loc = absolute_location(base, r.headers().get("location")?.to_str().ok()?);
    let half = layer2.len() / 2;
    for (start, part) in [(0, &layer2[..half]), (half, &layer2[half..])] {
        let r = client
            .patch(&loc)
            .header(
                "Content-Range",
                format!("{}-{}", start, start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .await
            .ok()?;
        if r.status() != 202 {
            return None;
        }
        loc = absolute_location(base, r.headers().get("location")?.to_str().ok()?);
    }
    let r = client
        .put(format!("{loc}?digest={}", sha256(&layer2)))
        .send()
        .await
        .ok()?;
    if r.status() != 201 {
        return None;
    }
    let manifest = oci_manifest(
        &Desc::new("application/vnd.oci.image.config.v1+json", &config),
        &[
            Desc::new("application/vnd.oci.image.layer.v1.tar", &layer1),
            Desc::new("application/vnd.oci.image.layer.v1.tar", &layer2),
        ],
    );
    let r = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .ok()?;
    if r.status() != 201 {
        return None;
    }
    Some((manifest, vec![config, layer1, layer2]))
}

/// Every object file under the data dir's blobs/ must hash to its name.
fn check_blob_files(dir: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            check_blob_files(&path);
            continue;
        }
        let name = entry.file_name().into_string().unwrap();
        let hex = name.trim_end_matches('~');
        let data = std::fs::read(&path).unwrap();
        let alg = path
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.file_name())
            .unwrap();
        let actual = if alg == "sha512" {
            sha512(&data)
        } else {
            sha256(&data)
        };
        assert!(
            actual.ends_with(hex),
            "visible blob file {} does not match its digest",
            path.display()
        );
    }
}

/// Acknowledged pushes each round waits for before it kills the server.
const ACKS_PER_ROUND: usize = 6;

#[tokio::test]
async fn kill_9_during_pushes_loses_nothing_acknowledged() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut seed = 0u64;
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..4 {
            let (client, base, acked, stop) = (
                fresh_client(),
                reg.base.clone(),
                acked.clone(),
                stop.clone(),
            );
            seed += 1000;
            let first_seed = seed;
            workers.push(tokio::spawn(async move {
                let repo = format!("crash/r{round}/w{w}");
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let tag = format!("t{i}");
                    match push_one(&client, &base, &repo, &tag, first_seed + i).await {
                        Some((m, blobs)) => acked.lock().await.push((repo.clone(), tag, m, blobs)),
                        None => break,
                    }
                    i += 1;
                }
            }));
        }
        // Kill once this round has had a few acknowledged pushes, however
        // fast or slow the machine is: the workers are mid-push by then.
        let wanted = acked.lock().await.len() + ACKS_PER_ROUND;
        let deadline = Instant::now() + Duration::from_secs(300);
        while acked.lock().await.len() < wanted {
            assert!(
                Instant::now() < deadline,
                "round {round}: fewer than {ACKS_PER_ROUND} pushes acknowledged in 300 s"
            );
            assert!(
                !workers.iter().all(|w| w.is_finished()),
                "round {round}: every worker stopped before {ACKS_PER_ROUND} pushes were acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // SIGKILL mid-flight, then start again on the same data directory.
        stop.store(true, Ordering::Relaxed);
        reg.restart().await;
        for w in workers {
            w.await.unwrap();
        }
    }
    let acked = acked.lock().await;
    assert!(acked.len() >= 3 * ACKS_PER_ROUND);
    for (repo, tag, manifest, blobs) in acked.iter() {
        let r = reg
            .client
            .get(reg.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("Accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged {repo}:{tag} lost");
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &manifest[..],
            "{repo}:{tag} changed"
        );
        for b in blobs {
            let r = reg.get(&format!("/v2/{repo}/blobs/{}", sha256(b))).await;
            assert_eq!(r.status(), 200, "acknowledged blob lost in {repo}");
            assert_eq!(&r.bytes().await.unwrap()[..], &b[..]);
        }
    }
    let data = reg.data_dir().unwrap();
    check_blob_files(&data.join("blobs"));
    // Leftover temporary files are cleared at start-up.
    assert_eq!(std::fs::read_dir(data.join(".tmp")).unwrap().count(), 0);
    // The catalog still lists every repository that had an acknowledged push.
    let r = reg.get("/v2/_catalog").await;
    let cat: serde_json::Value = r.json().await.unwrap();
    let names: Vec<&str> = cat["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for (repo, ..) in acked.iter() {
        assert!(
            names.contains(&repo.as_str()),
            "{repo} missing from the catalog"
        );
    }
}

/// The file of blob `d` in the data directory (docs/architecture.md:
/// `blobs/<alg>/<2 hex>/<hex>~`).
fn blob_file(reg: &Registry, d: &str) -> std::path::PathBuf {
    let (alg, hex) = d.split_once(':').unwrap();
    reg.data_dir()
        .unwrap()
        .join("blobs")
        .join(alg)
        .join(&hex[..2])
        .join(format!("{hex}~"))
}

/// Truncate a stored object's file, as a power loss under `--no-fsync` or
/// a disk error may leave it.
fn truncate(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .set_len(len)
        .unwrap();
}

async fn assert_blob_intact(reg: &Registry, repo: &str, data: &[u8], how: &str) {
    let d = sha256(data);
    let r = reg.head(&format!("/v2/{repo}/blobs/{d}")).await;
    assert_eq!(r.status(), 200, "{how}");
    assert_eq!(
        content_length(&r),
        Some(data.len() as u64),
        "{how}: HEAD length"
    );
    reg.assert_blob(repo, data).await;
}

/// A damaged (truncated) blob file is replaced when the same blob is pushed
/// again, whether monolithically or in chunks; a damaged manifest body is
/// replaced when the manifest is pushed again.
#[tokio::test]
async fn a_truncated_blob_is_replaced_by_the_next_push_of_it() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let repo = repo("damaged");
    let data = pseudo_random(3 * 1024 * 1024 + 17, 11);
    let d = reg.push_blob(&repo, &data).await;
    let file = blob_file(&reg, &d);
    assert_blob_intact(&reg, &repo, &data, "first push").await;

    // Monolithic push (single POST with the digest) over an empty file.
    truncate(&file, 0);
    let r = reg.head(&format!("/v2/{repo}/blobs/{d}")).await;
    assert_eq!(content_length(&r), Some(0), "the damage is visible");
    let r = reg.post_blob(&repo, &data).await;
    assert_eq!(r.status(), 201);
    assert_blob_intact(&reg, &repo, &data, "after a monolithic push").await;

    // POST + PUT over a half-length file.
    truncate(&file, data.len() as u64 / 2);
    reg.push_blob(&repo, &data).await;
    assert_blob_intact(&reg, &repo, &data, "after POST + PUT").await;

    // Chunked push (PATCH, PATCH, PUT) over an empty file.
    truncate(&file, 0);
    let mut loc = reg.start_upload(&repo).await;
    let half = data.len() / 2;
    for (start, chunk) in [(0, &data[..half]), (half, &data[half..])] {
        let r = reg
            .client
            .patch(&loc)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        loc = reg.resolve(&location(&r));
    }
    let r = reg
        .client
        .put(&loc)
        .query(&[("digest", d.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_blob_intact(&reg, &repo, &data, "after a chunked push").await;

    // A manifest body is a blob file too. Restart so that nothing the
    // server remembers hides the damage.
    let img = reg.push_image(&repo, "v1").await;
    let mfile = blob_file(&reg, &img.digest);
    truncate(&mfile, 5);
    reg.restart().await;
    reg.push_manifest(&repo, "v1", OCI_MANIFEST, &img.manifest)
        .await;
    let r = reg.get_m(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), img.manifest.as_slice());
}

/// The OCI error body of a 507 must say that the storage is full.
async fn assert_storage_full(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 507, "{what}");
    let ct = content_type(&r);
    let body = r.bytes().await.unwrap();
    assert_eq!(
        error_codes(ct.as_deref(), &body, what),
        ["UNKNOWN"],
        "{what}"
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("storage is full"), "{what}: {msg}");
}

/// A full disk (a 16 MiB tmpfs, mounted by the test): pushes get 507 with
/// an OCI error body saying the storage is full (not a 500), the log says
/// so once rather than per request, nothing half-written becomes visible,
/// and everything acknowledged before still pulls intact.
#[tokio::test]
async fn a_full_disk_answers_507_and_keeps_what_was_acknowledged() {
    let reg = local_only!(Registry::start_on_small_fs("16m", &[]).await);
    let repo = repo("full");
    let img = reg.push_image(&repo, "v1").await;

    // Fill it with 512 KiB blobs until a push is refused.
    let mut pushed: Vec<Vec<u8>> = Vec::new();
    let mut refused = None;
    for i in 0..100u64 {
        let data = pseudo_random(512 * 1024, 5000 + i);
        let d = sha256(&data);
        let r = reg.post_blob(&repo, &data).await;
        match r.status().as_u16() {
            201 => pushed.push(data),
            507 => {
                refused = Some((d, r));
                break;
            }
            s => panic!(
                "push {i}: {s} {}\n{}",
                r.text().await.unwrap_or_default(),
                reg.logs()
            ),
        }
    }
    let (d, r) = refused.expect("50 MiB went into a 16 MiB tmpfs without a 507");
    assert!(pushed.len() >= 8, "only {} pushes fitted", pushed.len());
    assert_storage_full(r, "monolithic push").await;
    // Nothing of the refused blob is visible.
    let r = reg.head(&format!("/v2/{repo}/blobs/{d}")).await;
    assert_eq!(r.status(), 404);

    // More writes of every kind are refused the same way. The bodies are
    // larger than socket buffers and sent whole over a raw connection (its
    // write fails if the server resets the connection): the server must
    // read the rest of a body it cannot store, or the client would see a
    // reset instead of the 507.
    let big = pseudo_random(16 << 20, 77);
    let raw_full = |r: RawResponse, what: &str| {
        assert_eq!(r.status, 507, "{what}: {r:?}");
        let v = r.json().unwrap_or_default();
        assert_eq!(v["errors"][0]["code"], "UNKNOWN", "{what}: {v}");
        let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("storage is full"), "{what}: {v}");
    };
    let r = reg
        .raw(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&big)),
            &[],
            &big,
        )
        .await;
    raw_full(r, "second monolithic push");
    let r = reg
        .req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    if r.status() == 202 {
        // A chunk that does not fit: refused, and the session holds what
        // it held before (nothing).
        let loc = reg.resolve(&location(&r));
        let r = reg
            .raw(
                "PATCH",
                loc.strip_prefix(reg.base.as_str()).unwrap_or(&loc),
                &[("Content-Type", "application/octet-stream")],
                &big,
            )
            .await;
        raw_full(r, "chunk");
        let r = reg.client.get(&loc).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert!(
            header(&r, "range").is_none_or(|v| v == "0-0"),
            "the session should be empty: {:?}",
            header(&r, "range")
        );
    } else {
        assert_storage_full(r, "upload session start").await;
    }
    // A manifest too large for what is left (annotations fill it).
    let mut m = oci_manifest_value(&img.config, &img.layers);
    m["annotations"] = serde_json::json!({ "filler": "x".repeat(3 << 20) });
    let body = to_bytes(&m);
    let r = reg.put_manifest(&repo, "v2", OCI_MANIFEST, &body).await;
    assert_storage_full(r, "manifest push").await;
    let r = reg.get_m(&format!("/v2/{repo}/manifests/v2")).await;
    assert_eq!(r.status(), 404, "a refused manifest must not be tagged");

    // Logged once, not per request.
    let logs = reg.logs();
    assert_eq!(
        logs.matches("storage is full").count(),
        1,
        "the full storage should be logged once:\n{logs}"
    );

    // Everything acknowledged is intact.
    for data in &pushed {
        reg.assert_blob(&repo, data).await;
    }
    let r = reg.get_m(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), img.manifest.as_slice());
    for b in img.layers.iter().chain([&img.config]) {
        let r = reg.head(&format!("/v2/{repo}/blobs/{}", b.digest)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(content_length(&r), Some(b.size as u64));
    }
}
