//! Persistence across restarts and upload-session expiry. All tests here
//! need a locally spawned wharf and skip themselves with WHARF_TEST_URL.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;

#[tokio::test]
async fn content_survives_restart() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("persist");
    let img = reg.push_image(&name, "v1").await;
    let idx = oci_index(&[img.desc()]);
    let idx_d = reg.push_manifest(&name, "multi", OCI_INDEX, &idx).await;
    let (_, ref_d) = reg
        .push_artifact(
            &name,
            None,
            Some("application/vnd.example.x"),
            OCI_EMPTY,
            Some(&img.desc()),
            None,
        )
        .await;
    let deep = format!("{name}/a/b/c");
    reg.push_image(&deep, "t").await;

    reg.restart().await;

    let r = reg.get(&format!("/v2/{name}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r).as_deref(), Some(OCI_MANIFEST));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &img.manifest[..]);
    let r = reg.get(&format!("/v2/{name}/manifests/{idx_d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r).as_deref(), Some(OCI_INDEX));
    reg.assert_blob(
        &name,
        &reg.get_blob(&name, &img.layers[0].digest)
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .await;
    let v = json_body(reg.get(&format!("/v2/{name}/tags/list")).await).await;
    assert_eq!(v["tags"], serde_json::json!(["multi", "v1"]));
    let v = json_body(reg.get("/v2/_catalog").await).await;
    assert_eq!(
        v["repositories"],
        serde_json::json!([name.clone(), deep.clone()])
    );
    let v = json_body(
        reg.get(&format!("/v2/{name}/referrers/{}", img.digest))
            .await,
    )
    .await;
    assert_eq!(v["manifests"][0]["digest"], serde_json::json!(ref_d));
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn deletes_survive_restart() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("persist-del");
    let img = reg.push_image(&name, "gone").await;
    let keep = reg.push_image(&name, "kept").await;
    assert_eq!(
        reg.delete(&format!("/v2/{name}/manifests/{}", img.digest))
            .await
            .status(),
        202
    );
    assert_eq!(
        reg.delete(&format!("/v2/{name}/blobs/{}", img.layers[0].digest))
            .await
            .status(),
        202
    );
    reg.restart().await;
    assert_eq!(
        reg.get(&format!("/v2/{name}/manifests/gone"))
            .await
            .status(),
        404
    );
    assert_eq!(
        reg.get(&format!("/v2/{name}/manifests/{}", img.digest))
            .await
            .status(),
        404
    );
    assert_eq!(
        reg.get_blob(&name, &img.layers[0].digest).await.status(),
        404
    );
    assert_eq!(
        reg.get(&format!("/v2/{name}/manifests/{}", keep.digest))
            .await
            .status(),
        200
    );
    let v = json_body(reg.get(&format!("/v2/{name}/tags/list")).await).await;
    assert_eq!(v["tags"], serde_json::json!(["kept"]));
}

#[tokio::test]
async fn upload_session_survives_restart() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("persist-upload");
    let data = pseudo_random(100_000, 77);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = reg
        .client
        .patch(&url)
        .header("Content-Range", "0-39999")
        .body(data[..40_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = location_path(&location(&r));
    let loc = location(&r);
    let query = loc
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();

    reg.restart().await;

    // the session is addressed by the same path on the restarted server
    let url = reg.url(&format!("{path}{query}"));
    let r = reg.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-39999"));
    let url = reg.resolve(&location(&r));
    let r = reg
        .client
        .patch(&url)
        .header("Content-Range", "40000-69999")
        .body(data[40_000..70_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-69999"));
    let url = reg.resolve(&location(&r));

    reg.restart().await;
    let url = reg.url(&location_path(&url));
    let r = reg
        .client
        .put(&url)
        .query(&[("digest", d.as_str())])
        .body(data[70_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn sha512_session_survives_restart() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("persist-sha512");
    let data = pseudo_random(10_000, 512);
    let d = sha512(&data);
    let r = reg
        .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
        .query(&[("digest-algorithm", "sha512")])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let url = reg.resolve(&location(&r));
    let r = reg
        .client
        .patch(&url)
        .body(data[..6000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = location_path(&location(&r));
    reg.restart().await;
    let r = reg
        .client
        .put(reg.url(&path))
        .query(&[("digest", d.as_str())])
        .body(data[6000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = reg.get_blob(&name, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
}

#[tokio::test]
async fn cancelled_session_stays_cancelled_after_restart() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("persist-cancel");
    let url = reg.start_upload(&name).await;
    let r = reg
        .client
        .patch(&url)
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = location_path(&location(&r));
    assert_eq!(
        reg.client
            .delete(reg.url(&path))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    reg.restart().await;
    assert_error(reg.get(&path).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn abandoned_upload_expires() {
    let reg = local_only!(Registry::start_with(&["--upload-expiry", "1"]).await);
    let name = repo("expiry");
    let url = reg.start_upload(&name).await;
    let r = reg
        .client
        .patch(&url)
        .body(b"partial".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = location_path(&location(&r));

    // a completed blob must not be affected by the sweeper
    let data = unique_bytes("complete");
    reg.push_blob(&name, &data).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reg.get(&path).await;
        if r.status() == 404 {
            assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
            break;
        }
        assert_eq!(r.status(), 204);
        assert!(
            Instant::now() < deadline,
            "upload session did not expire within 10s with --upload-expiry 1"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // PATCH/PUT on the expired session fail too
    assert_error(
        reg.client
            .patch(reg.url(&path))
            .body(b"more".to_vec())
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        reg.client
            .put(reg.url(&path))
            .query(&[("digest", sha256(b"partial").as_str())])
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    reg.assert_blob(&name, &data).await;

    // new sessions still work
    let data2 = unique_bytes("after expiry");
    reg.push_blob(&name, &data2).await;
    reg.assert_blob(&name, &data2).await;
}

#[tokio::test]
async fn expiry_removes_session_data_from_disk() {
    let reg = local_only!(Registry::start_with(&["--upload-expiry", "1"]).await);
    let name = repo("expiry-disk");
    // a fairly big abandoned upload
    let url = reg.start_upload(&name).await;
    let big = pseudo_random(3 * 1024 * 1024, 3);
    let r = reg.client.patch(&url).body(big).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let path = location_path(&location(&r));
    let du = |p: &std::path::Path| -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            let mut n = 0;
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let m = e.metadata().unwrap();
                    n += if m.is_dir() { walk(&e.path()) } else { m.len() };
                }
            }
            n
        }
        walk(p)
    };
    let data_dir = reg.data_dir().unwrap();
    assert!(
        du(&data_dir) >= 3 * 1024 * 1024,
        "upload data should be on disk"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while reg.get(&path).await.status() != 404 {
        assert!(Instant::now() < deadline, "session did not expire");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        du(&data_dir) < 1024 * 1024,
        "expired upload data must be removed from disk"
    );
}

#[tokio::test]
async fn active_upload_with_long_expiry_is_kept() {
    let reg = local_only!(Registry::start_with(&["--upload-expiry", "3600"]).await);
    let name = repo("expiry-long");
    let url = reg.start_upload(&name).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = reg.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn expiry_counts_idle_time() {
    // sessions that keep receiving data are not "abandoned"
    let reg = local_only!(Registry::start_with(&["--upload-expiry", "2"]).await);
    let name = repo("expiry-idle");
    let mut url = reg.start_upload(&name).await;
    let mut all = Vec::new();
    let start = Instant::now();
    let mut i = 0u8;
    while start.elapsed() < Duration::from_secs(5) {
        let chunk = vec![i; 100];
        let r = reg
            .client
            .patch(&url)
            .body(chunk.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            202,
            "an active session expired after {:?}",
            start.elapsed()
        );
        all.extend(chunk);
        url = reg.resolve(&location(&r));
        i += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let r = reg
        .client
        .put(&url)
        .query(&[("digest", sha256(&all).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    reg.assert_blob(&name, &all).await;
}

#[tokio::test]
async fn cancel_frees_disk() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("cancel-disk");
    let url = reg.start_upload(&name).await;
    let r = reg
        .client
        .patch(&url)
        .body(pseudo_random(3 * 1024 * 1024, 4))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let url = reg.resolve(&location(&r));
    let data_dir = reg.data_dir().unwrap();
    assert!(dir_size(&data_dir) >= 3 * 1024 * 1024);
    assert_eq!(reg.client.delete(&url).send().await.unwrap().status(), 204);
    assert!(
        dir_size(&data_dir) < 1024 * 1024,
        "cancelled upload data must be removed"
    );
}

#[tokio::test]
async fn log_format_json() {
    let reg = local_only!(Registry::start_with(&["--log-format", "json"]).await);
    let name = repo("logjson");
    reg.push_image(&name, "t").await;
    assert_eq!(reg.get("/v2/nope/tags/list").await.status(), 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = reg.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log output");
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    n
}
