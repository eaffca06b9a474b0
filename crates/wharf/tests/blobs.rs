//! Blob pull (GET/HEAD, ranges), repository isolation, mounting, deletion.

mod common;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn base_endpoint() {
    let reg = Registry::start().await;
    let r = reg.get("/v2/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    let v = json_body(r).await;
    assert_eq!(v, serde_json::json!({}));
    let r = reg.head("/v2/").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn get_and_head_blob() {
    let reg = Registry::start().await;
    let name = repo("blob-get");
    let data = unique_bytes("get-head");
    let d = reg.push_blob(&name, &data).await;
    assert_eq!(d, sha256(&data));

    let r = reg.get_blob(&name, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(
        content_type(&r).as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(content_length(&r), Some(data.len() as u64));
    assert_eq!(header(&r, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    let r = reg.head(&format!("/v2/{name}/blobs/{d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(content_length(&r), Some(data.len() as u64));
    assert_eq!(
        content_type(&r).as_deref(),
        Some("application/octet-stream")
    );
    assert!(
        r.bytes().await.unwrap().is_empty(),
        "HEAD must not have a body"
    );
}

#[tokio::test]
async fn unknown_blob_is_404() {
    let reg = Registry::start().await;
    let name = repo("blob-unknown");
    // repo exists (has another blob) but not this digest
    reg.push_blob(&name, &unique_bytes("other")).await;
    let d = sha256(&unique_bytes("never pushed"));
    assert_error(reg.get_blob(&name, &d).await, 404, "BLOB_UNKNOWN").await;

    let r = reg.head(&format!("/v2/{name}/blobs/{d}")).await;
    assert_eq!(r.status(), 404);
    assert!(
        r.bytes().await.unwrap().is_empty(),
        "HEAD 404 must not have a body"
    );

    // unknown repository as well
    let other = repo("blob-unknown-repo");
    let r = reg.get_blob(&other, &d).await;
    let st = expect_error_any(r, &["BLOB_UNKNOWN", "NAME_UNKNOWN"]).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn blob_not_visible_in_other_repo() {
    let reg = Registry::start().await;
    let a = repo("iso-a");
    let b = repo("iso-b");
    let data = unique_bytes("isolated");
    let d = reg.push_blob(&a, &data).await;
    reg.push_blob(&b, &unique_bytes("b has something")).await;
    assert_error(reg.get_blob(&b, &d).await, 404, "BLOB_UNKNOWN").await;
    let r = reg.head(&format!("/v2/{b}/blobs/{d}")).await;
    assert_eq!(r.status(), 404);
    // range requests must not leak either
    let r = reg
        .req(Method::GET, &format!("/v2/{b}/blobs/{d}"))
        .header("Range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // still visible in A
    reg.assert_blob(&a, &data).await;
}

#[tokio::test]
async fn empty_blob() {
    let reg = Registry::start().await;
    let name = repo("blob-empty");
    let d = reg.push_blob(&name, b"").await;
    assert_eq!(
        d,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let r = reg.get_blob(&name, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_length(&r), Some(0));
    assert!(r.bytes().await.unwrap().is_empty());
    let r = reg.head(&format!("/v2/{name}/blobs/{d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_length(&r), Some(0));
}

async fn range_get(reg: &Registry, name: &str, d: &str, range: &str) -> reqwest::Response {
    reg.req(Method::GET, &format!("/v2/{name}/blobs/{d}"))
        .header("Range", range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn range_requests() {
    let reg = Registry::start().await;
    let name = repo("blob-range");
    let data = pseudo_random(1000, 7);
    let d = reg.push_blob(&name, &data).await;
    let total = data.len();

    for (range, start, end) in [
        ("bytes=0-0", 0usize, 0usize),
        ("bytes=10-19", 10, 19),
        ("bytes=500-", 500, total - 1),
        ("bytes=-100", total - 100, total - 1),
        ("bytes=990-5000", 990, total - 1),
        ("bytes=0-999", 0, 999),
        ("bytes=999-999", 999, 999),
        ("bytes=-5000", 0, total - 1),
    ] {
        let r = range_get(&reg, &name, &d, range).await;
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            header(&r, "content-range").as_deref(),
            Some(format!("bytes {start}-{end}/{total}").as_str()),
            "{range}"
        );
        assert_eq!(
            content_length(&r),
            Some((end - start + 1) as u64),
            "{range}"
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &data[start..=end],
            "{range}"
        );
    }
}

#[tokio::test]
async fn range_unsatisfiable() {
    let reg = Registry::start().await;
    let name = repo("blob-range416");
    let data = pseudo_random(100, 9);
    let d = reg.push_blob(&name, &data).await;
    for range in ["bytes=100-", "bytes=100-200", "bytes=5000-6000"] {
        let r = range_get(&reg, &name, &d, range).await;
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(
            header(&r, "content-range").as_deref(),
            Some("bytes */100"),
            "{range}"
        );
    }
}

#[tokio::test]
async fn range_on_empty_blob_is_unsatisfiable() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // reference registries differ on this edge case
    }
    let name = repo("blob-range-empty");
    let d = reg.push_blob(&name, b"").await;
    let r = range_get(&reg, &name, &d, "bytes=0-").await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */0"));
}

#[tokio::test]
async fn malformed_range_never_500() {
    let reg = Registry::start().await;
    let name = repo("blob-badrange");
    let data = pseudo_random(50, 11);
    let d = reg.push_blob(&name, &data).await;
    for range in [
        "bytes=abc",
        "bytes=5-2",
        "items=0-3",
        "bytes=",
        "bytes=--1",
        "bytes=99999999999999999999999-",
    ] {
        let r = range_get(&reg, &name, &d, range).await;
        let st = r.status().as_u16();
        assert!(
            st == 200 || st == 206 || st == 416 || st == 400,
            "{range}: unexpected status {st}"
        );
        if st == 200 {
            // an ignored Range header must yield the full blob
            assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..], "{range}");
        }
    }
}

#[tokio::test]
async fn large_blob_roundtrip() {
    let reg = Registry::start().await;
    let name = repo("blob-large");
    let data = pseudo_random(5 * 1024 * 1024 + 123, 42);
    reg.push_blob(&name, &data).await;
    reg.assert_blob(&name, &data).await;
    let d = sha256(&data);
    let r = range_get(&reg, &name, &d, "bytes=4194300-4194309").await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[4194300..=4194309]);
    // Ranges bigger than one read, starting off page boundaries and
    // crossing the server's 1 MiB windows, and the unaligned tail.
    let total = data.len();
    for (start, end) in [
        (1, 70_000),
        (1_000_000, 3_500_001),
        (1_048_575, 1_048_577 + 65_536),
        (4_000_003, total - 1),
    ] {
        let r = range_get(&reg, &name, &d, &format!("bytes={start}-{end}")).await;
        assert_eq!(r.status(), 206, "{start}-{end}");
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &data[start..=end],
            "{start}-{end}"
        );
    }
}

#[tokio::test]
async fn mount_from_repo_that_has_blob() {
    let reg = Registry::start().await;
    let a = repo("mount-src");
    let b = repo("mount-dst");
    let data = unique_bytes("mountable");
    let d = reg.push_blob(&a, &data).await;
    let r = reg
        .req(Method::POST, &format!("/v2/{b}/blobs/uploads/"))
        .query(&[("mount", d.as_str()), ("from", a.as_str())])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(location_path(&location(&r)), format!("/v2/{b}/blobs/{d}"));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    reg.assert_blob(&b, &data).await;
    reg.assert_blob(&a, &data).await;
}

#[tokio::test]
async fn mount_when_source_lacks_blob_falls_back_to_upload() {
    let reg = Registry::start().await;
    let a = repo("mount-nosrc");
    let b = repo("mount-nodst");
    let data = unique_bytes("not in a");
    let d = sha256(&data);
    reg.push_blob(&a, &unique_bytes("a has something else"))
        .await;
    // the blob exists in the registry, but in a third repo, not in `a`
    let c = repo("mount-third");
    reg.push_blob(&c, &data).await;

    let r = reg
        .req(Method::POST, &format!("/v2/{b}/blobs/uploads/"))
        .query(&[("mount", d.as_str()), ("from", a.as_str())])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = reg.resolve(&location(&r));
    assert!(
        location_path(&loc).starts_with(&format!("/v2/{b}/blobs/uploads/")),
        "{loc}"
    );
    // the fallback session is usable
    let r = reg
        .client
        .put(&loc)
        .query(&[("digest", d.as_str())])
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    reg.assert_blob(&b, &data).await;
}

#[tokio::test]
async fn mount_from_unknown_repo_falls_back_to_upload() {
    let reg = Registry::start().await;
    let b = repo("mount-unkrepo");
    let data = unique_bytes("x");
    let d = sha256(&data);
    let r = reg
        .req(Method::POST, &format!("/v2/{b}/blobs/uploads/"))
        .query(&[
            ("mount", d.as_str()),
            ("from", repo("does-not-exist").as_str()),
        ])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(location_path(&location(&r)).starts_with(&format!("/v2/{b}/blobs/uploads/")));
}

#[tokio::test]
async fn mount_without_from() {
    let reg = Registry::start().await;
    let a = repo("mount-nofrom-src");
    let b = repo("mount-nofrom-dst");
    let data = unique_bytes("present somewhere");
    let d = reg.push_blob(&a, &data).await;
    let r = reg
        .req(Method::POST, &format!("/v2/{b}/blobs/uploads/"))
        .query(&[("mount", d.as_str())])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    if reg.is_external() {
        // the spec makes `from`-less mounting optional (201 or 202)
        assert!(r.status() == 201 || r.status() == 202, "{}", r.status());
        return;
    }
    assert_eq!(r.status(), 201);
    assert_eq!(location_path(&location(&r)), format!("/v2/{b}/blobs/{d}"));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    reg.assert_blob(&b, &data).await;

    // unknown digest without from -> upload session
    let unknown = sha256(&unique_bytes("nowhere"));
    let r = reg
        .req(Method::POST, &format!("/v2/{b}/blobs/uploads/"))
        .query(&[("mount", unknown.as_str())])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(location_path(&location(&r)).starts_with(&format!("/v2/{b}/blobs/uploads/")));
}

#[tokio::test]
async fn mount_invalid_digest() {
    let reg = Registry::start().await;
    let a = repo("mount-baddig-src");
    reg.push_blob(&a, &unique_bytes("a")).await;
    let b = repo("mount-baddig");
    let r = reg
        .req(Method::POST, &format!("/v2/{b}/blobs/uploads/"))
        .query(&[("mount", "sha256:xyz"), ("from", a.as_str())])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    // Either reject the digest or ignore the mount and open a session; never 201/500.
    let st = r.status().as_u16();
    assert!(st == 400 || st == 202, "got {st}");
    if !reg.is_external() {
        assert_eq!(st, 400, "wharf rejects an invalid mount digest");
    }
    if st == 400 {
        expect_error(r, "DIGEST_INVALID").await;
    }
}

#[tokio::test]
async fn delete_blob() {
    let reg = Registry::start().await;
    let name = repo("blob-del");
    let data = unique_bytes("deleteme");
    let d = reg.push_blob(&name, &data).await;
    let r = reg.delete(&format!("/v2/{name}/blobs/{d}")).await;
    assert_eq!(r.status(), 202);
    assert_error(reg.get_blob(&name, &d).await, 404, "BLOB_UNKNOWN").await;
    let r = reg.head(&format!("/v2/{name}/blobs/{d}")).await;
    assert_eq!(r.status(), 404);
    // deleting again / unknown
    assert_error(
        reg.delete(&format!("/v2/{name}/blobs/{d}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    let unknown = sha256(&unique_bytes("never"));
    assert_error(
        reg.delete(&format!("/v2/{name}/blobs/{unknown}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // can be pushed again afterwards
    reg.push_blob(&name, &data).await;
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn delete_blob_in_one_repo_keeps_it_in_another() {
    let reg = Registry::start().await;
    let a = repo("blob-del-a");
    let b = repo("blob-del-b");
    let data = unique_bytes("shared");
    let d = reg.push_blob(&a, &data).await;
    reg.push_blob(&b, &data).await;
    assert_eq!(
        reg.delete(&format!("/v2/{a}/blobs/{d}")).await.status(),
        202
    );
    assert_eq!(reg.get_blob(&a, &d).await.status(), 404);
    reg.assert_blob(&b, &data).await;
}

#[tokio::test]
async fn delete_blob_invalid_digest() {
    let reg = Registry::start().await;
    let name = repo("blob-del-bad");
    reg.push_blob(&name, &unique_bytes("x")).await;
    let r = reg.delete(&format!("/v2/{name}/blobs/sha256:nothex")).await;
    let st = expect_error_any(r, &["DIGEST_INVALID", "BLOB_UNKNOWN"]).await;
    assert!(st == 400 || st == 404, "{st}");
    if !reg.is_external() {
        assert_eq!(st, 400);
    }
}

#[tokio::test]
async fn get_blob_invalid_digest() {
    let reg = Registry::start().await;
    let name = repo("blob-bad-digest");
    reg.push_blob(&name, &unique_bytes("x")).await;
    for d in [
        "sha256:xyz",
        "sha256:ABCDEF",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nocolon",
        "sha256:",
    ] {
        let r = reg.get_blob(&name, d).await;
        let st = expect_error_any(r, &["DIGEST_INVALID", "BLOB_UNKNOWN"]).await;
        assert!(st == 400 || st == 404, "{d}: {st}");
        if !reg.is_external() {
            assert_eq!(st, 400, "{d}: invalid digest strings are DIGEST_INVALID");
        }
    }
}

#[tokio::test]
async fn delete_blob_disabled_with_no_delete() {
    let reg = local_only!(Registry::start_with(&["--no-delete"]).await);
    let name = repo("blob-nodel");
    let data = unique_bytes("kept");
    let d = reg.push_blob(&name, &data).await;
    assert_error(
        reg.delete(&format!("/v2/{name}/blobs/{d}")).await,
        405,
        "UNSUPPORTED",
    )
    .await;
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn concurrent_monolithic_pushes_of_same_blob() {
    let reg = Registry::start().await;
    let name = repo("blob-conc");
    let data = pseudo_random(256 * 1024, 99);
    let d = sha256(&data);
    let client = reg.client.clone();
    let base = reg.base.clone();
    let results = concurrently(8, |i| {
        let client = client.clone();
        let base = base.clone();
        let name = name.clone();
        let data = data.clone();
        let d = d.clone();
        async move {
            if i % 2 == 0 {
                // POST then PUT
                let r = client
                    .post(format!("{base}/v2/{name}/blobs/uploads/"))
                    .header("Content-Length", "0")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let loc = location(&r);
                let url = if loc.starts_with("http") {
                    loc
                } else {
                    format!("{base}{loc}")
                };
                let r = client
                    .put(url)
                    .query(&[("digest", d.as_str())])
                    .body(data)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            } else {
                // single POST (falls back to POST+PUT if the registry answers 202);
                // own client: a registry may answer before reading the body and close
                let client = common::fresh_client();
                let r = client
                    .post(format!("{base}/v2/{name}/blobs/uploads/"))
                    .query(&[("digest", d.as_str())])
                    .body(data.clone())
                    .send()
                    .await
                    .unwrap();
                if r.status() == 202 {
                    let loc = location(&r);
                    let url = if loc.starts_with("http") {
                        loc
                    } else {
                        format!("{base}{loc}")
                    };
                    let r = client
                        .put(url)
                        .query(&[("digest", d.as_str())])
                        .body(data)
                        .send()
                        .await
                        .unwrap();
                    r.status().as_u16()
                } else {
                    r.status().as_u16()
                }
            }
        }
    })
    .await;
    assert!(results.iter().all(|s| *s == 201), "{results:?}");
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn concurrent_pushes_of_different_blobs() {
    let reg = Registry::start().await;
    let name = repo("blob-conc-diff");
    let client = reg.client.clone();
    let base = reg.base.clone();
    let blobs: Vec<Vec<u8>> = (0..8)
        .map(|i| pseudo_random(64 * 1024 + i, 1000 + i as u64))
        .collect();
    let bl = blobs.clone();
    let n2 = name.clone();
    let results = concurrently(8, move |i| {
        let client = client.clone();
        let base = base.clone();
        let name = n2.clone();
        let data = bl[i].clone();
        async move {
            let d = sha256(&data);
            let r = client
                .post(format!("{base}/v2/{name}/blobs/uploads/"))
                .header("Content-Length", "0")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let abs = |loc: String| {
                if loc.starts_with("http") {
                    loc
                } else {
                    format!("{base}{loc}")
                }
            };
            let url = abs(location(&r));
            // two streamed PATCHes then an empty closing PUT
            let half = data.len() / 2;
            let r = client
                .patch(&url)
                .header("Content-Type", "application/octet-stream")
                .body(data[..half].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let url = abs(location(&r));
            let r = client
                .patch(&url)
                .header("Content-Type", "application/octet-stream")
                .body(data[half..].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let url = abs(location(&r));
            client
                .put(url)
                .query(&[("digest", d.as_str())])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    })
    .await;
    assert!(results.iter().all(|s| *s == 201), "{results:?}");
    for b in &blobs {
        reg.assert_blob(&name, b).await;
    }
}
