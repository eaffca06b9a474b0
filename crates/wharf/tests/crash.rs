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
