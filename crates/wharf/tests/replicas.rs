//! Several `wharf serve` replicas over one bucket behave as one registry:
//! an upload session continues on any replica, what one replica writes the
//! next request to another sees, and concurrent writers to one tag leave
//! every acknowledged manifest readable. S3 only: these tests are ignored
//! in filesystem runs and run by tests/run-all.sh against the Garage
//! cluster (`WHARF_TEST_S3_ENV`).

mod common;

use common::*;
use serde_json::Value;

/// The path and query of an upload URL, to send it to another replica.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/".into(), |i| rest[i..].to_owned())
}

async fn replicas(n: usize) -> Vec<Registry> {
    let first = Registry::start_with(&[]).await.expect("a local server");
    let mut all = vec![];
    for _ in 1..n {
        all.push(first.start_replica().await);
    }
    all.insert(0, first);
    all
}

#[tokio::test]
#[ignore = "needs the S3 backend: run by tests/run-all.sh with WHARF_TEST_S3_ENV"]
async fn chunked_upload_spread_over_three_replicas() {
    let r = replicas(3).await;
    // Chunks of 9 MiB (above the part minimum), 1 MiB and 3 bytes (below
    // it: buffered in the session), then the final PUT with a body.
    let mut data = Vec::new();
    for (i, n) in [9usize << 20, 1 << 20, 3, 5].iter().enumerate() {
        data.extend(unique_bytes(&format!("chunk{i}")).iter().cycle().take(*n));
    }
    let digest = sha256(&data);
    let loc = r[0].start_upload("spread/app").await;
    let mut path = path_of(&loc);
    let cuts = [0, 9 << 20, (10 << 20), (10 << 20) + 3];
    for (i, w) in cuts.windows(2).enumerate() {
        let replica = &r[(i + 1) % 3];
        let resp = replica
            .client
            .patch(replica.url(&path))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{}-{}", w[0], w[1] - 1))
            .body(data[w[0]..w[1]].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            202,
            "PATCH {i} on replica {}: {}",
            (i + 1) % 3,
            resp.text().await.unwrap_or_default()
        );
        assert_eq!(
            header(&resp, "range").as_deref(),
            Some(format!("0-{}", w[1] - 1).as_str())
        );
        path = path_of(&location(&resp));
    }
    // Status on yet another replica.
    let st = r[1].get(&path).await;
    assert_eq!(st.status(), 204);
    assert_eq!(
        header(&st, "range").as_deref(),
        Some(format!("0-{}", cuts[3] - 1).as_str())
    );
    let sep = if path.contains('?') { '&' } else { '?' };
    let resp = r[0]
        .client
        .put(r[0].url(&format!("{path}{sep}digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(data[cuts[3]..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    for replica in &r {
        replica.assert_blob("spread/app", &data).await;
    }
    // A range read through another replica.
    let resp = r[2]
        .client
        .get(r[2].url(&format!("/v2/spread/app/blobs/{digest}")))
        .header("Range", "bytes=9437180-9437189")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        &data[9437180..9437190]
    );
}

#[tokio::test]
#[ignore = "needs the S3 backend: run by tests/run-all.sh with WHARF_TEST_S3_ENV"]
async fn writes_on_one_replica_are_seen_by_the_others_at_once() {
    let r = replicas(3).await;
    let one = r[0].push_image("seen/app", "v1").await;
    // Pushed through A, served by B and C on the next request.
    for replica in &r[1..] {
        let got = replica.get_m("/v2/seen/app/manifests/v1").await;
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().as_ref(), one.manifest.as_slice());
    }
    // The tag moved on B is seen moved on A and C (no stale tag cache).
    let two = r[1].prepare_image("seen/app", 1).await;
    r[1].push_manifest("seen/app", "v1", OCI_MANIFEST, &two.manifest)
        .await;
    for replica in [&r[0], &r[2]] {
        let got = replica.head_m("/v2/seen/app/manifests/v1").await;
        assert_eq!(
            header(&got, "docker-content-digest").as_deref(),
            Some(two.digest.as_str())
        );
    }
    // Listings: tags and catalog through another replica.
    r[2].push_manifest("seen/app", "v2", OCI_MANIFEST, &one.manifest)
        .await;
    let tags: Value = r[0]
        .get("/v2/seen/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
    let cat: Value = r[1].get("/v2/_catalog").await.json().await.unwrap();
    assert!(
        cat["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "seen/app"),
        "{cat}"
    );
    // A delete on C is seen everywhere.
    let d = r[2].delete("/v2/seen/app/manifests/v2").await;
    assert_eq!(d.status(), 202);
    for replica in &r {
        assert_eq!(
            replica.get_m("/v2/seen/app/manifests/v2").await.status(),
            404
        );
        let tags: Value = replica
            .get("/v2/seen/app/tags/list")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    }
    // Deleting the manifest by digest on A: gone on B, though B served it.
    let by_digest = format!("/v2/seen/app/manifests/{}", one.digest);
    assert_eq!(r[1].get_m(&by_digest).await.status(), 200);
    assert_eq!(r[0].delete(&by_digest).await.status(), 202);
    assert_eq!(r[1].get_m(&by_digest).await.status(), 404);
}

#[tokio::test]
#[ignore = "needs the S3 backend: run by tests/run-all.sh with WHARF_TEST_S3_ENV"]
async fn concurrent_pushes_to_one_tag_leave_every_manifest_readable() {
    let r = replicas(3).await;
    let mut images = vec![];
    for i in 0..6 {
        images.push(r[i % 3].prepare_image("race/app", 1).await);
    }
    let mut tasks = vec![];
    for (i, img) in images.iter().enumerate() {
        let replica = &r[i % 3];
        tasks.push(replica.put_manifest("race/app", "latest", OCI_MANIFEST, &img.manifest));
    }
    for resp in futures_util::future::join_all(tasks).await {
        assert_eq!(resp.status(), 201);
    }
    // Last writer wins: the tag names one of them, the same on every replica.
    let mut seen = vec![];
    for replica in &r {
        let h = replica.head_m("/v2/race/app/manifests/latest").await;
        seen.push(header(&h, "docker-content-digest").unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    assert!(images.iter().any(|i| i.digest == seen[0]));
    // Every acknowledged manifest stays readable by digest, everywhere.
    for img in &images {
        for replica in &r {
            let got = replica
                .get_m(&format!("/v2/race/app/manifests/{}", img.digest))
                .await;
            assert_eq!(got.status(), 200);
        }
    }
}
