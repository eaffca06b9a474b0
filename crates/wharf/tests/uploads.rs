//! Blob upload sessions: POST/PATCH/PUT/GET/DELETE, digests, sha512.

mod common;

use common::*;
use reqwest::{Method, Response};

async fn post_upload(reg: &Registry, name: &str) -> Response {
    reg.req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap()
}

async fn patch(reg: &Registry, url: &str, body: &[u8], range: Option<&str>) -> Response {
    let mut b = reg
        .client
        .patch(url)
        .header("Content-Type", "application/octet-stream")
        .body(body.to_vec());
    if let Some(r) = range {
        b = b.header("Content-Range", r);
    }
    b.send().await.unwrap()
}

async fn put_close(
    reg: &Registry,
    url: &str,
    digest: &str,
    body: &[u8],
    range: Option<&str>,
) -> Response {
    let mut b = reg
        .client
        .put(url)
        .query(&[("digest", digest)])
        .header("Content-Type", "application/octet-stream")
        .body(body.to_vec());
    if let Some(r) = range {
        b = b.header("Content-Range", r);
    }
    b.send().await.unwrap()
}

async fn status(reg: &Registry, url: &str) -> Response {
    reg.client.get(url).send().await.unwrap()
}

fn next_url(reg: &Registry, r: &Response) -> String {
    reg.resolve(&location(r))
}

fn uploads_prefix(name: &str) -> String {
    format!("/v2/{name}/blobs/uploads/")
}

#[tokio::test]
async fn post_starts_session() {
    let reg = Registry::start().await;
    let name = repo("up-post");
    let r = post_upload(&reg, &name).await;
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let uuid = header(&r, "docker-upload-uuid").expect("Docker-Upload-UUID header");
    assert!(!uuid.is_empty());
    assert_eq!(
        location_path(&loc),
        format!("{}{uuid}", uploads_prefix(&name))
    );
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    if !reg.is_external() {
        // absolute, under the address the client used (as Distribution)
        assert_eq!(
            loc,
            reg.url(&location_path(&loc)),
            "wharf returns an absolute Location"
        );
        if let Some(min) = header(&r, "oci-chunk-min-length") {
            let _: u64 = min
                .parse()
                .expect("OCI-Chunk-Min-Length must be an integer");
        }
    }
    // a second session gets a different id
    let r2 = post_upload(&reg, &name).await;
    assert_eq!(r2.status(), 202);
    assert_ne!(header(&r2, "docker-upload-uuid").unwrap(), uuid);
    assert_ne!(location_path(&location(&r2)), location_path(&loc));
}

#[tokio::test]
async fn chunk_min_length_advertised() {
    let reg = local_only!(Registry::start_with(&["--chunk-min-length", "1024"]).await);
    let name = repo("up-chunkmin");
    let r = post_upload(&reg, &name).await;
    assert_eq!(r.status(), 202);
    // The larger of the setting and what the backend needs: S3 parts are
    // at least 8 MiB.
    let want = if on_s3() { "8388608" } else { "1024" };
    assert_eq!(header(&r, "oci-chunk-min-length").as_deref(), Some(want));
    // smaller chunks are still accepted (the header is advisory)
    let url = next_url(&reg, &r);
    let r = patch(&reg, &url, b"tiny", Some("0-3")).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    assert_eq!(
        put_close(&reg, &url, &sha256(b"tiny!"), b"!", None)
            .await
            .status(),
        201
    );
    reg.assert_blob(&name, b"tiny!").await;
}

#[tokio::test]
async fn post_then_put() {
    let reg = Registry::start().await;
    let name = repo("up-mono");
    let data = unique_bytes("mono");
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = put_close(&reg, &url, &d, &data, None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        location_path(&location(&r)),
        format!("/v2/{name}/blobs/{d}")
    );
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    // Location is pullable
    let r = reg
        .client
        .get(reg.resolve(&location(&r)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn single_post_monolithic() {
    let reg = Registry::start().await;
    let name = repo("up-single");
    let data = unique_bytes("single");
    let d = sha256(&data);
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest", d.as_str())])
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    if reg.is_external() && r.status() == 202 {
        return; // single-POST support is optional in the spec
    }
    assert_eq!(r.status(), 201);
    assert_eq!(
        location_path(&location(&r)),
        format!("/v2/{name}/blobs/{d}")
    );
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn single_post_digest_mismatch() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("up-single-bad");
    let data = unique_bytes("single");
    let claimed = sha256(b"something else entirely");
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest", claimed.as_str())])
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(reg.get_blob(&name, &claimed).await.status(), 404);
    assert_eq!(reg.get_blob(&name, &sha256(&data)).await.status(), 404);
}

#[tokio::test]
async fn chunked_with_content_range() {
    let reg = Registry::start().await;
    let name = repo("up-chunked");
    let data = pseudo_random(30, 3);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;

    let r = patch(&reg, &url, &data[0..10], Some("0-9")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-9"));
    assert!(location_path(&location(&r)).starts_with(&uploads_prefix(&name)));
    let url = next_url(&reg, &r);

    let r = patch(&reg, &url, &data[10..25], Some("10-24")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-24"));
    let url = next_url(&reg, &r);

    let r = status(&reg, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-24"));
    assert!(location_path(&location(&r)).starts_with(&uploads_prefix(&name)));
    let url = next_url(&reg, &r);

    let r = patch(&reg, &url, &data[25..], Some("25-29")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-29"));
    let url = next_url(&reg, &r);

    let r = put_close(&reg, &url, &d, b"", None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        location_path(&location(&r)),
        format!("/v2/{name}/blobs/{d}")
    );
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let reg = Registry::start().await;
    let name = repo("up-stream");
    let data = pseudo_random(300_000, 5);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, &data[..100_000], None).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-99999"));
    let url = next_url(&reg, &r);
    let r = patch(&reg, &url, &data[100_000..], None).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-299999"));
    let url = next_url(&reg, &r);
    let r = put_close(&reg, &url, &d, b"", None).await;
    assert_eq!(r.status(), 201);
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn streamed_patch_body_stream() {
    // a PATCH whose body is sent with chunked transfer-encoding (no Content-Length)
    let reg = Registry::start().await;
    let name = repo("up-stream-te");
    let data = pseudo_random(200_000, 6);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(7000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = reg
        .client
        .patch(&url)
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-199999"));
    let url = next_url(&reg, &r);
    let r = put_close(&reg, &url, &d, b"", None).await;
    assert_eq!(r.status(), 201);
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn out_of_order_chunk_is_416() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution 2.8 ignores Content-Range on PATCH
    }
    let name = repo("up-ooo");
    let data = pseudo_random(20, 8);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, &data[0..5], Some("0-4")).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);

    // gap
    let r = patch(&reg, &url, &data[10..15], Some("10-14")).await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range").as_deref(), Some("0-4"));
    if !reg.is_external() {
        assert_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    }
    // overlap / replay
    let r = patch(&reg, &url, &data[0..5], Some("0-4")).await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range").as_deref(), Some("0-4"));
    if !reg.is_external() {
        assert_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    }

    // status unchanged
    let r = status(&reg, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-4"));

    // resume correctly
    let r = patch(&reg, &url, &data[5..20], Some("5-19")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-19"));
    let url = next_url(&reg, &r);
    let r = put_close(&reg, &url, &d, b"", None).await;
    assert_eq!(r.status(), 201);
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn first_chunk_must_start_at_zero() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution 2.8 ignores Content-Range on PATCH
    }
    let name = repo("up-first");
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, b"hello", Some("5-9")).await;
    assert_eq!(r.status(), 416);
    if !reg.is_external() {
        assert_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    }
}

#[tokio::test]
async fn malformed_content_range_is_400() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("up-badrange");
    for cr in ["abc", "0-", "-4", "0-4-5", "x-y", "0 - 4"] {
        let url = reg.start_upload(&name).await;
        let r = patch(&reg, &url, b"hello", Some(cr)).await;
        assert_error(r, 400, "BLOB_UPLOAD_INVALID").await;
    }
}

#[tokio::test]
async fn content_range_length_mismatch_is_400() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("up-lenmismatch");
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, b"hello", Some("0-4")).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    // claims 10 bytes, sends 5
    let r = patch(&reg, &url, b"world", Some("5-14")).await;
    assert_error_any(r, 400, &["SIZE_INVALID", "BLOB_UPLOAD_INVALID"]).await;
    // claims 2 bytes, sends 5
    let r = patch(&reg, &url, b"world", Some("5-6")).await;
    assert_error_any(r, 400, &["SIZE_INVALID", "BLOB_UPLOAD_INVALID"]).await;
    // nothing was appended by the rejected requests
    let r = status(&reg, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-4"));
    let r = patch(&reg, &url, b"world", Some("5-9")).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    assert_eq!(
        put_close(&reg, &url, &sha256(b"helloworld"), b"", None)
            .await
            .status(),
        201
    );
    reg.assert_blob(&name, b"helloworld").await;
}

#[tokio::test]
async fn closing_put_with_final_chunk() {
    let reg = Registry::start().await;
    let name = repo("up-final");
    let data = pseudo_random(1000, 12);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, &data[..600], None).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let r = put_close(&reg, &url, &d, &data[600..], None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn closing_put_with_final_chunk_and_content_range() {
    let reg = Registry::start().await;
    let name = repo("up-final-cr");
    let data = pseudo_random(1000, 13);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, &data[..600], Some("0-599")).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let r = put_close(&reg, &url, &d, &data[600..], Some("600-999")).await;
    assert_eq!(r.status(), 201);
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn closing_put_out_of_order_is_416() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("up-final-ooo");
    let data = pseudo_random(100, 14);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, &data[..50], Some("0-49")).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let r = put_close(&reg, &url, &d, &data[60..], Some("60-99")).await;
    assert_eq!(r.status(), 416);
    assert_eq!(reg.get_blob(&name, &d).await.status(), 404);
}

#[tokio::test]
async fn get_upload_status() {
    let reg = Registry::start().await;
    let name = repo("up-status");
    let url = reg.start_upload(&name).await;
    let r = status(&reg, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    assert!(location_path(&location(&r)).starts_with(&uploads_prefix(&name)));
    assert!(r.bytes().await.unwrap().is_empty());

    let r = patch(&reg, &url, &[7u8; 1234], None).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let r = status(&reg, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-1233"));
    assert_eq!(location_path(&location(&r)), location_path(&url));
}

#[tokio::test]
async fn cancel_upload() {
    let reg = Registry::start().await;
    let name = repo("up-cancel");
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, b"some data", None).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let r = reg.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_error(status(&reg, &url).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        patch(&reg, &url, b"more", None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        put_close(&reg, &url, &sha256(b"some data"), b"", None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        reg.client.delete(&url).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_eq!(
        reg.get_blob(&name, &sha256(b"some data")).await.status(),
        404
    );
}

#[tokio::test]
async fn completed_session_is_gone() {
    let reg = Registry::start().await;
    let name = repo("up-done");
    let data = unique_bytes("done");
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    assert_eq!(put_close(&reg, &url, &d, &data, None).await.status(), 201);
    assert_error(status(&reg, &url).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        patch(&reg, &url, b"x", None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        put_close(&reg, &url, &d, b"", None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn unknown_upload_id() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution encodes state in the URL; ids alone are not meaningful
    }
    let name = repo("up-unknown");
    reg.push_blob(&name, b"make the repo exist").await;
    let d = sha256(b"x");
    for id in [
        "0b7a4f7c-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "not-a-uuid",
        "zzz",
        "a.b",
        "0",
        "AAAA",
        "x_y",
    ] {
        let path = format!("{}{id}", uploads_prefix(&name));
        assert_error(reg.get(&path).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
        assert_error(
            patch(&reg, &reg.url(&path), b"x", None).await,
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .await;
        assert_error(
            put_close(&reg, &reg.url(&path), &d, b"x", None).await,
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .await;
        assert_error(reg.delete(&path).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // a very long id
    let long = "a".repeat(5000);
    let path = format!("{}{long}", uploads_prefix(&name));
    let r = reg.get(&path).await;
    let st = r.status().as_u16();
    assert!(
        st == 404 || st == 414 || st == 431 || st == 400,
        "long id: {st}"
    );
}

#[tokio::test]
async fn upload_session_is_scoped_to_repo() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let a = repo("up-scope-a");
    let b = repo("up-scope-b");
    let url = reg.start_upload(&a).await;
    let path = location_path(&url);
    let other = path.replacen(&format!("/v2/{a}/"), &format!("/v2/{b}/"), 1);
    assert_ne!(path, other);
    assert_error(reg.get(&other).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let data = unique_bytes("scoped");
    assert_error(
        put_close(&reg, &reg.url(&other), &sha256(&data), &data, None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_eq!(reg.get_blob(&b, &sha256(&data)).await.status(), 404);
    // original session still fine
    assert_eq!(status(&reg, &url).await.status(), 204);
}

#[tokio::test]
async fn digest_mismatch_on_put() {
    let reg = Registry::start().await;
    let name = repo("up-mismatch");
    let data = unique_bytes("actual");
    let claimed = sha256(&unique_bytes("claimed"));
    let url = reg.start_upload(&name).await;
    let r = put_close(&reg, &url, &claimed, &data, None).await;
    assert_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(reg.get_blob(&name, &claimed).await.status(), 404);
    assert_eq!(
        reg.head(&format!("/v2/{name}/blobs/{claimed}"))
            .await
            .status(),
        404
    );
    assert_eq!(reg.get_blob(&name, &sha256(&data)).await.status(), 404);
}

#[tokio::test]
async fn digest_mismatch_after_chunks() {
    let reg = Registry::start().await;
    let name = repo("up-mismatch-chunks");
    let data = pseudo_random(100, 21);
    let mut wrong = data.clone();
    wrong[50] ^= 1;
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, &data, None).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let claimed = sha256(&wrong);
    assert_error(
        put_close(&reg, &url, &claimed, b"", None).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_eq!(reg.get_blob(&name, &claimed).await.status(), 404);
}

#[tokio::test]
async fn invalid_digest_strings() {
    let reg = Registry::start().await;
    let name = repo("up-baddigest");
    let data = b"payload".to_vec();
    let bad = [
        "sha256:xyz".to_string(),
        format!("md5:{}", "d41d8cd98f00b204e9800998ecf8427e"),
        format!("sha256:{}", hex_upper(&sha256(&data))),
        format!("sha256:{}", &sha256(&data)[7..70]),
        format!("sha256:{}0", &sha256(&data)[7..]),
        "nocolon".to_string(),
        "sha256:".to_string(),
        ":abc".to_string(),
    ];
    for d in &bad {
        let url = reg.start_upload(&name).await;
        let r = put_close(&reg, &url, d, &data, None).await;
        if reg.is_external() {
            assert!(r.status().is_client_error(), "{d}: {}", r.status());
            continue;
        }
        assert_error(r, 400, "DIGEST_INVALID").await;
        assert_eq!(
            reg.get_blob(&name, &sha256(&data)).await.status(),
            404,
            "{d}"
        );
    }
    // single POST with an invalid digest
    if !reg.is_external() {
        for d in ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e"] {
            let r = reg
                .req(Method::POST, &uploads_prefix(&name))
                .query(&[("digest", d)])
                .body(data.clone())
                .send()
                .await
                .unwrap();
            assert_error(r, 400, "DIGEST_INVALID").await;
        }
    }
}

fn hex_upper(d: &str) -> String {
    d.split_once(':').unwrap().1.to_ascii_uppercase()
}

#[tokio::test]
async fn put_without_digest() {
    let reg = Registry::start().await;
    let name = repo("up-nodigest");
    let url = reg.start_upload(&name).await;
    let r = reg
        .client
        .put(&url)
        .body(b"data".to_vec())
        .send()
        .await
        .unwrap();
    assert_error_any(r, 400, &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"]).await;
}

#[tokio::test]
async fn sha512_chunked_upload() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("up-sha512");
    let data = pseudo_random(5000, 512);
    let d = sha512(&data);
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest-algorithm", "sha512")])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let r = patch(&reg, &url, &data[..3000], Some("0-2999")).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let r = put_close(&reg, &url, &d, &data[3000..], None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(
        location_path(&location(&r)),
        format!("/v2/{name}/blobs/{d}")
    );

    let r = reg.get_blob(&name, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(content_length(&r), Some(5000));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    let r = reg.head(&format!("/v2/{name}/blobs/{d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    let r = reg
        .req(Method::GET, &format!("/v2/{name}/blobs/{d}"))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[100..200]);
    // the same content is not addressable as sha256 unless pushed that way
    assert_eq!(reg.get_blob(&name, &sha256(&data)).await.status(), 404);
}

#[tokio::test]
async fn sha512_monolithic_and_single_post() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("up-sha512-mono");
    // POST ?digest-algorithm=sha512 then PUT everything
    let data = unique_bytes("sha512 mono");
    let d = sha512(&data);
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest-algorithm", "sha512")])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let r = put_close(&reg, &url, &d, &data, None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    let r = reg.get_blob(&name, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    // single POST with a sha512 digest
    let data2 = unique_bytes("sha512 single");
    let d2 = sha512(&data2);
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest", d2.as_str())])
        .body(data2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d2.as_str())
    );
    assert_eq!(
        location_path(&location(&r)),
        format!("/v2/{name}/blobs/{d2}")
    );
    let r = reg.get_blob(&name, &d2).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data2[..]);

    // mismatch
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest-algorithm", "sha512")])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    let url = next_url(&reg, &r);
    let claimed = sha512(b"not it");
    assert_error(
        put_close(&reg, &url, &claimed, &data, None).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_eq!(reg.get_blob(&name, &claimed).await.status(), 404);
}

#[tokio::test]
async fn sha512_mount_and_delete() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let a = repo("up-sha512-a");
    let b = repo("up-sha512-b");
    let data = unique_bytes("sha512 mount");
    let d = sha512(&data);
    let r = reg
        .req(Method::POST, &uploads_prefix(&a))
        .query(&[("digest", d.as_str())])
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(reg.get_blob(&b, &d).await.status(), 404);
    let r = reg
        .req(Method::POST, &uploads_prefix(&b))
        .query(&[("mount", d.as_str()), ("from", a.as_str())])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    let r = reg.get_blob(&b, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    assert_eq!(
        reg.delete(&format!("/v2/{b}/blobs/{d}")).await.status(),
        202
    );
    assert_error(reg.get_blob(&b, &d).await, 404, "BLOB_UNKNOWN").await;
    assert_eq!(reg.get_blob(&a, &d).await.status(), 200);
}

#[tokio::test]
async fn unsupported_digest_algorithm() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("up-badalg");
    for alg in ["md5", "foo", "SHA256", ""] {
        let r = reg
            .req(Method::POST, &uploads_prefix(&name))
            .query(&[("digest-algorithm", alg)])
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        if alg.is_empty() && r.status() == 202 {
            continue; // an empty parameter may be treated as absent
        }
        assert_error(r, 400, "DIGEST_INVALID").await;
    }
    // sha256 spelled explicitly is fine
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest-algorithm", "sha256")])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn empty_blob_single_post() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("up-empty-single");
    let d = sha256(b"");
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest", d.as_str())])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = reg.get_blob(&name, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_length(&r), Some(0));
}

#[tokio::test]
async fn reupload_existing_blob() {
    let reg = Registry::start().await;
    let name = repo("up-again");
    let data = unique_bytes("twice");
    reg.push_blob(&name, &data).await;
    reg.push_blob(&name, &data).await;
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn concurrent_patches_same_range_only_one_wins() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution 2.8 ignores Content-Range
    }
    let name = repo("up-race-range");
    let url = reg.start_upload(&name).await;
    let client = reg.client.clone();
    let u = url.clone();
    let results = concurrently(8, move |i| {
        let (client, url) = (client.clone(), u.clone());
        async move {
            let r = client
                .patch(&url)
                .header("Content-Range", "0-999")
                .body(vec![i as u8; 1000])
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    })
    .await;
    let ok = results.iter().filter(|s| **s == 202).count();
    assert_eq!(
        ok, 1,
        "exactly one PATCH for 0-999 may succeed: {results:?}"
    );
    assert!(
        results.iter().all(|s| *s == 202 || *s == 416),
        "{results:?}"
    );
    let r = status(&reg, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-999"));
}

#[tokio::test]
async fn concurrent_streamed_patches_same_session() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution keeps upload state in the URL; concurrent appends are meaningless there
    }
    let name = repo("up-race-stream");
    let url = reg.start_upload(&name).await;
    let client = reg.client.clone();
    let u = url.clone();
    const LEN: usize = 50_000;
    let results = concurrently(8, move |i| {
        let (client, url) = (client.clone(), u.clone());
        async move {
            let r = client
                .patch(&url)
                .body(vec![b'a' + i as u8; LEN])
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    })
    .await;
    // the registry may refuse concurrent appends, but must never interleave or lose bytes
    assert!(
        results.iter().all(|s| [202, 409, 416, 423].contains(s)),
        "{results:?}"
    );
    let accepted = results.iter().filter(|s| **s == 202).count();
    assert!(accepted >= 1, "{results:?}");
    let r = status(&reg, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "range"),
        Some(format!("0-{}", accepted * LEN - 1)),
        "{results:?}"
    );
    // (the order of the appended chunks is unknown, so the content cannot be
    // verified through a digest; the total length proves no bytes were lost)
    assert_eq!(reg.client.delete(&url).send().await.unwrap().status(), 204);
    let _ = name;
}

#[tokio::test]
async fn concurrent_closing_puts_same_session() {
    let reg = Registry::start().await;
    let name = repo("up-race-put");
    let data = pseudo_random(100_000, 31);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, &data, None).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let client = reg.client.clone();
    let (u, dd) = (url.clone(), d.clone());
    let results = concurrently(4, move |_| {
        let (client, url, d) = (client.clone(), u.clone(), dd.clone());
        async move {
            match client
                .put(&url)
                .query(&[("digest", d.as_str())])
                .timeout(std::time::Duration::from_secs(20))
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(e) if e.is_timeout() => 0,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(
        !results.contains(&0),
        "concurrent closing PUTs hung (0 = no answer in 20s): {results:?}"
    );
    let r = reg
        .client
        .get(reg.url("/v2/"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(
        r.is_ok_and(|r| r.status() == 200),
        "server no longer answers GET /v2/"
    );
    assert!(results.contains(&201), "{results:?}");
    if reg.is_external() {
        assert!(
            results.iter().all(|s| *s == 201 || (400..500).contains(s)),
            "{results:?}"
        );
    } else {
        assert!(
            results.iter().all(|s| *s == 201 || *s == 404),
            "{results:?}"
        );
    }
    reg.assert_blob(&name, &data).await;
}

#[tokio::test]
async fn concurrent_put_status_and_delete_same_session() {
    let reg = Registry::start().await;
    let name = repo("up-race-mixed");
    let data = pseudo_random(100_000, 32);
    let d = sha256(&data);
    let url = reg.start_upload(&name).await;
    let r = patch(&reg, &url, &data, None).await;
    assert_eq!(r.status(), 202);
    let url = next_url(&reg, &r);
    let client = reg.client.clone();
    let (u, dd) = (url.clone(), d.clone());
    let results = concurrently(6, move |i| {
        let (client, url, d) = (client.clone(), u.clone(), dd.clone());
        async move {
            let req = match i {
                0 => client.put(&url).query(&[("digest", d.as_str())]),
                5 => client.delete(&url),
                _ => client.get(&url),
            };
            match req.timeout(std::time::Duration::from_secs(20)).send().await {
                Ok(r) => r.status().as_u16(),
                Err(e) if e.is_timeout() => 0,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(
        !results.contains(&0),
        "requests hung (0 = no answer in 20s): {results:?}"
    );
    let r = reg
        .client
        .get(reg.url("/v2/"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(
        r.is_ok_and(|r| r.status() == 200),
        "server no longer answers GET /v2/"
    );
    let (put, del) = (results[0], results[5]);
    assert!(
        (put == 201 && del == 404) || (put == 404 && del == 204),
        "PUT {put}, DELETE {del}"
    );
    for st in &results[1..5] {
        assert!(*st == 204 || *st == 404, "status GET: {results:?}");
    }
    let blob = reg.get_blob(&name, &d).await.status();
    assert_eq!(blob.as_u16(), if put == 201 { 200 } else { 404 });
}

/// Send `request` as it is over a fresh connection and return the response
/// head as text (the connection is closed by the request or the server).
async fn raw_head(reg: &Registry, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(reg.host_port())
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut buf),
    )
    .await
    .expect("no answer")
    .ok();
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

/// The Location header of a raw response head.
fn raw_location(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_owned())
    })
}

/// Every Location Wharf sends is absolute, under the address the client
/// used: some clients (docker-registry-client-async) cannot follow relative
/// ones. Without a Host there is nothing to build one from: relative.
#[tokio::test]
async fn locations_are_absolute() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("up-abs");
    let want = |r: &Response, path: &str| {
        let loc = location(r);
        assert_eq!(loc, reg.url(path), "{} {}", r.status(), r.url());
        assert!(loc.starts_with("http://127.0.0.1:"), "{loc}");
        loc
    };
    let data = unique_bytes("abs");
    let d = sha256(&data);
    // chunked: POST, PATCH, GET, PUT
    let r = post_upload(&reg, &name).await;
    assert_eq!(r.status(), 202);
    let uuid = header(&r, "docker-upload-uuid").unwrap();
    let session = format!("{}{uuid}", uploads_prefix(&name));
    let url = want(&r, &session);
    let r = patch(&reg, &url, &data[..10], Some("0-9")).await;
    assert_eq!(r.status(), 202);
    let url = want(&r, &session);
    let r = status(&reg, &url).await;
    assert_eq!(r.status(), 204);
    want(&r, &session);
    let r = put_close(&reg, &url, &d, &data[10..], None).await;
    assert_eq!(r.status(), 201);
    want(&r, &format!("/v2/{name}/blobs/{d}"));
    // single POST
    let small = unique_bytes("abs-single");
    let ds = sha256(&small);
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest", ds.as_str())])
        .body(small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    want(&r, &format!("/v2/{name}/blobs/{ds}"));
    // a cross-repository mount
    let other = repo("up-abs-other");
    let r = reg
        .req(Method::POST, &uploads_prefix(&other))
        .query(&[("mount", d.as_str()), ("from", name.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    want(&r, &format!("/v2/{other}/blobs/{d}"));
    // a manifest
    let img = reg.prepare_image(&name, 1).await;
    let r = reg
        .put_manifest(&name, "v1", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(r.status(), 201);
    let loc = want(
        &r,
        &format!("/v2/{name}/manifests/{}", sha256(&img.manifest)),
    );
    assert_eq!(reg.client.get(&loc).send().await.unwrap().status(), 200);

    // the host the client named, whatever it is
    let head = raw_head(
        &reg,
        &format!(
            "POST {} HTTP/1.1\r\nHost: registry.local:5000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            uploads_prefix(&name)
        ),
    )
    .await;
    let loc = raw_location(&head).unwrap_or_else(|| panic!("no Location: {head}"));
    assert!(
        loc.starts_with(&format!(
            "http://registry.local:5000{}",
            uploads_prefix(&name)
        )),
        "{loc}"
    );
    // no Host (HTTP/1.0), or one that is no host: relative
    for host in ["", "Host: evil\"host\r\n"] {
        let head = raw_head(
            &reg,
            &format!(
                "POST {} HTTP/1.0\r\n{host}Content-Length: 0\r\n\r\n",
                uploads_prefix(&name)
            ),
        )
        .await;
        let loc = raw_location(&head).unwrap_or_else(|| panic!("no Location: {head}"));
        assert!(loc.starts_with(&uploads_prefix(&name)), "{host:?}: {loc}");
    }
}

/// With a public URL configured (a reverse proxy in front), Locations start
/// with it whatever address the request came to.
#[tokio::test]
async fn public_url_starts_locations() {
    let reg =
        local_only!(Registry::start_with(&["--public-url", "https://Registry.example.com/"]).await);
    let public = "https://registry.example.com";
    let name = repo("up-public");
    let data = unique_bytes("public");
    let d = sha256(&data);
    let r = post_upload(&reg, &name).await;
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    assert!(
        loc.starts_with(&format!("{public}{}", uploads_prefix(&name))),
        "{loc}"
    );
    // the proxy would forward it here
    let url = reg.url(&location_path(&loc));
    let r = patch(&reg, &url, &data[..5], Some("0-4")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(location(&r), loc);
    let r = put_close(&reg, &url, &d, &data[5..], None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(location(&r), format!("{public}/v2/{name}/blobs/{d}"));
    // (registry.example.com does not resolve: blobs by single POST here)
    let config = unique_bytes("public-config");
    let r = reg
        .req(Method::POST, &uploads_prefix(&name))
        .query(&[("digest", sha256(&config).as_str())])
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        location(&r),
        format!("{public}/v2/{name}/blobs/{}", sha256(&config))
    );
    let manifest = oci_manifest(
        &Desc::new(OCI_CONFIG, &config),
        &[Desc::new(OCI_LAYER, &data)],
    );
    let r = reg.put_manifest(&name, "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        location(&r),
        format!("{public}/v2/{name}/manifests/{}", sha256(&manifest))
    );
}

/// A public URL that is not the absolute URL of a root is refused at start,
/// saying why (flag and environment alike).
#[tokio::test]
async fn bad_public_urls_are_refused() {
    if external_url().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (how, url, why) in [
        ("flag", "https://example.com/registry", "path prefix"),
        ("flag", "registry.example.com", "not an absolute URL"),
        ("env", "https://example.com/?x=1", "query"),
        ("env", "ftp://example.com", "http:// or https://"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"));
        if how == "flag" {
            cmd.args(["--public-url", url]);
        } else {
            cmd.env("WHARF_PUBLIC_URL", url);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{how} {url} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("public_url") && err.contains(why),
            "{how} {url}: {err}"
        );
    }
}
