//! Manifest push/pull, validation, tags via query, deletes, concurrency.

mod common;

use common::*;
use reqwest::{Method, Response};
use serde_json::json;

async fn get_manifest(
    reg: &Registry,
    name: &str,
    reference: &str,
    accept: Option<&str>,
) -> Response {
    let mut b = reg.req(Method::GET, &format!("/v2/{name}/manifests/{reference}"));
    if let Some(a) = accept {
        b = b.header("Accept", a);
    }
    b.send().await.unwrap()
}

async fn head_manifest(reg: &Registry, name: &str, reference: &str) -> Response {
    reg.req(Method::HEAD, &format!("/v2/{name}/manifests/{reference}"))
        .header(
            "Accept",
            [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", "),
        )
        .send()
        .await
        .unwrap()
}

const ALL_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Assert GET and HEAD for `reference` return exactly `body` with `media_type`.
async fn assert_manifest(
    reg: &Registry,
    name: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let d = sha256(body);
    let r = get_manifest(reg, name, reference, Some(ALL_TYPES)).await;
    assert_eq!(r.status(), 200, "GET {name}:{reference}");
    assert_eq!(
        content_type(&r).as_deref(),
        Some(media_type),
        "Content-Type of {name}:{reference}"
    );
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str()),
        "digest of {name}:{reference}"
    );
    assert_eq!(content_length(&r), Some(body.len() as u64));
    let got = r.bytes().await.unwrap();
    assert!(
        got.as_ref() == body,
        "manifest bytes differ for {name}:{reference}:\n{}",
        String::from_utf8_lossy(&got)
    );

    let r = head_manifest(reg, name, reference).await;
    assert_eq!(r.status(), 200, "HEAD {name}:{reference}");
    assert_eq!(content_type(&r).as_deref(), Some(media_type));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(content_length(&r), Some(body.len() as u64));
    assert!(r.bytes().await.unwrap().is_empty());
}

async fn assert_manifest_unknown(reg: &Registry, name: &str, reference: &str) {
    assert_error(
        get_manifest(reg, name, reference, Some(ALL_TYPES)).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let r = head_manifest(reg, name, reference).await;
    assert_eq!(r.status(), 404, "HEAD {name}:{reference}");
    assert!(r.bytes().await.unwrap().is_empty());
}

async fn tags(reg: &Registry, name: &str) -> Vec<String> {
    let r = reg.get(&format!("/v2/{name}/tags/list")).await;
    assert_eq!(r.status(), 200);
    let v = json_body(r).await;
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn push_and_pull_oci_manifest() {
    let reg = Registry::start().await;
    let name = repo("man-oci");
    let img = reg.prepare_image(&name, 2).await;
    let r = reg
        .put_manifest(&name, "v1", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(img.digest.as_str())
    );
    let loc = location(&r);
    assert!(
        location_path(&loc).starts_with(&format!("/v2/{name}/manifests/")),
        "{loc}"
    );
    // Location is pullable
    let r = reg
        .client
        .get(reg.resolve(&loc))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &img.manifest[..]);

    assert_manifest(&reg, &name, "v1", OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&reg, &name, &img.digest, OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn push_by_digest() {
    let reg = Registry::start().await;
    let name = repo("man-bydigest");
    let img = reg.prepare_image(&name, 1).await;
    let r = reg
        .put_manifest(&name, &img.digest, OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(img.digest.as_str())
    );
    assert_eq!(
        location_path(&location(&r)),
        format!("/v2/{name}/manifests/{}", img.digest)
    );
    assert_manifest(&reg, &name, &img.digest, OCI_MANIFEST, &img.manifest).await;
    // pushing the same again is idempotent
    reg.push_manifest(&name, &img.digest, OCI_MANIFEST, &img.manifest)
        .await;
}

#[tokio::test]
async fn exact_bytes_are_preserved() {
    let reg = Registry::start().await;
    let name = repo("man-bytes");
    let img = reg.prepare_image(&name, 1).await;
    // odd key order, whitespace, escapes and a trailing newline
    let body = format!(
        "{{\n\t\"layers\" : [ {{\"size\":{},\"digest\":\"{}\",\"mediaType\":\"{}\"}} ],\r\n  \"config\":{{\"digest\":\"{}\",\"size\":{},\"mediaType\":\"{}\"}},\"schemaVersion\":2, \"mediaType\":\"{}\",\n\"annotations\":{{\"x\":\"caf\\u00e9 \u{1F433}\"}}   }}\n",
        img.layers[0].size, img.layers[0].digest, img.layers[0].media_type, img.config.digest, img.config.size, img.config.media_type, OCI_MANIFEST
    )
    .into_bytes();
    serde_json::from_slice::<serde_json::Value>(&body).expect("test manifest is valid JSON");
    reg.push_manifest(&name, "odd", OCI_MANIFEST, &body).await;
    assert_manifest(&reg, &name, "odd", OCI_MANIFEST, &body).await;
    assert_manifest(&reg, &name, &sha256(&body), OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn push_oci_index() {
    let reg = Registry::start().await;
    let name = repo("man-index");
    let a = reg.push_image(&name, "amd").await;
    let b = reg.prepare_image(&name, 1).await;
    reg.push_manifest(&name, &b.digest, OCI_MANIFEST, &b.manifest)
        .await;
    let index = oci_index(&[a.desc(), b.desc()]);
    let d = reg.push_manifest(&name, "multi", OCI_INDEX, &index).await;
    assert_manifest(&reg, &name, "multi", OCI_INDEX, &index).await;
    assert_manifest(&reg, &name, &d, OCI_INDEX, &index).await;
    // children still resolvable
    assert_manifest(&reg, &name, &b.digest, OCI_MANIFEST, &b.manifest).await;
}

#[tokio::test]
async fn docker_manifest_and_list() {
    let reg = Registry::start().await;
    let name = repo("man-docker");
    let cfg = to_bytes(
        &json!({"architecture": "arm64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "n": nonce()}),
    );
    let config = reg.push_blob_desc(&name, DOCKER_CONFIG, &cfg).await;
    let layer = reg
        .push_blob_desc(&name, DOCKER_LAYER, &unique_bytes("docker layer"))
        .await;
    let m = docker_manifest(&config, &[layer]);
    let md = reg.push_manifest(&name, "d1", DOCKER_MANIFEST, &m).await;
    assert_manifest(&reg, &name, "d1", DOCKER_MANIFEST, &m).await;
    assert_manifest(&reg, &name, &md, DOCKER_MANIFEST, &m).await;

    let list = docker_list(&[Desc {
        media_type: DOCKER_MANIFEST.into(),
        digest: md.clone(),
        size: m.len(),
    }]);
    let ld = reg.push_manifest(&name, "list", DOCKER_LIST, &list).await;
    assert_manifest(&reg, &name, "list", DOCKER_LIST, &list).await;
    assert_manifest(&reg, &name, &ld, DOCKER_LIST, &list).await;
}

#[tokio::test]
async fn artifact_with_empty_config() {
    let reg = Registry::start().await;
    let name = repo("man-artifact");
    let (body, d) = reg
        .push_artifact(
            &name,
            Some("sbom"),
            Some("application/vnd.example.sbom.v1"),
            OCI_EMPTY,
            None,
            None,
        )
        .await;
    assert_manifest(&reg, &name, "sbom", OCI_MANIFEST, &body).await;
    assert_manifest(&reg, &name, &d, OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn content_type_parameters_are_ignored() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("man-ctparam");
    let img = reg.prepare_image(&name, 1).await;
    let r = reg
        .put_manifest(
            &name,
            "p",
            &format!("{OCI_MANIFEST}; charset=utf-8"),
            &img.manifest,
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = get_manifest(&reg, &name, "p", Some(OCI_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r).as_deref(), Some(OCI_MANIFEST));
}

#[tokio::test]
async fn tags_via_query_parameters() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // optional feature
    }
    let name = repo("man-qtags");
    let img = reg.prepare_image(&name, 1).await;
    let tag_list = ["1.2.3", "1.2", "1", "latest", "A_b-c.d"];
    let q: Vec<(&str, &str)> = tag_list.iter().map(|t| ("tag", *t)).collect();
    let r = reg
        .req(Method::PUT, &format!("/v2/{name}/manifests/{}", img.digest))
        .query(&q)
        .header("Content-Type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(img.digest.as_str())
    );
    let mut got = header_list(&r, "oci-tag");
    got.sort();
    let mut want: Vec<String> = tag_list.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "OCI-Tag headers");
    for t in tag_list {
        assert_manifest(&reg, &name, t, OCI_MANIFEST, &img.manifest).await;
    }
    let mut listed = tags(&reg, &name).await;
    listed.sort();
    assert_eq!(listed, want);
}

#[tokio::test]
async fn tags_via_query_with_invalid_tag() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("man-qtags-bad");
    let img = reg.prepare_image(&name, 1).await;
    let r = reg
        .req(Method::PUT, &format!("/v2/{name}/manifests/{}", img.digest))
        .query(&[("tag", "good"), ("tag", "-bad")])
        .header("Content-Type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_eq!(
        st, 400,
        "a request containing an invalid tag must be rejected"
    );
    // must not leave a tag pointing at the manifest
    assert!(
        !get_manifest(&reg, &name, "-bad", None)
            .await
            .status()
            .is_success()
    );
}

#[tokio::test]
async fn put_by_digest_mismatch() {
    let reg = Registry::start().await;
    let name = repo("man-digest-mismatch");
    let img = reg.prepare_image(&name, 1).await;
    let wrong = sha256(b"not this manifest");
    let r = reg
        .put_manifest(&name, &wrong, OCI_MANIFEST, &img.manifest)
        .await;
    assert_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(get_manifest(&reg, &name, &wrong, None).await.status(), 404);
    assert_eq!(
        get_manifest(&reg, &name, &img.digest, None).await.status(),
        404
    );
}

#[tokio::test]
async fn missing_config_blob() {
    let reg = Registry::start().await;
    let name = repo("man-missing-cfg");
    let layer = reg
        .push_blob_desc(&name, OCI_LAYER, &unique_bytes("l"))
        .await;
    let config = Desc::new(OCI_CONFIG, &unique_bytes("never pushed config"));
    let m = oci_manifest(&config, &[layer]);
    assert_error(
        reg.put_manifest(&name, "t", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(get_manifest(&reg, &name, "t", None).await.status(), 404);
}

#[tokio::test]
async fn missing_layer_blob() {
    let reg = Registry::start().await;
    let name = repo("man-missing-layer");
    let img = reg.prepare_image(&name, 1).await;
    let missing = Desc::new(OCI_LAYER, &unique_bytes("never pushed layer"));
    let m = oci_manifest(&img.config, &[img.layers[0].clone(), missing]);
    assert_error(
        reg.put_manifest(&name, "t", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        reg.put_manifest(&name, &sha256(&m), OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn blob_in_other_repo_does_not_count() {
    let reg = Registry::start().await;
    let a = repo("man-other-a");
    let b = repo("man-other-b");
    let img = reg.prepare_image(&a, 1).await;
    // b has the config but the layer only exists in a
    reg.push_blob(&b, &{
        // re-push config bytes into b: reconstruct from a
        let r = reg.get_blob(&a, &img.config.digest).await;
        r.bytes().await.unwrap().to_vec()
    })
    .await;
    assert_error(
        reg.put_manifest(&b, "t", OCI_MANIFEST, &img.manifest).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    // after mounting the layer it works
    let r = reg
        .req(Method::POST, &format!("/v2/{b}/blobs/uploads/"))
        .query(&[
            ("mount", img.layers[0].digest.as_str()),
            ("from", a.as_str()),
        ])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    reg.push_manifest(&b, "t", OCI_MANIFEST, &img.manifest)
        .await;
}

#[tokio::test]
async fn docker_manifest_missing_layer() {
    let reg = Registry::start().await;
    let name = repo("man-docker-missing");
    let config = reg
        .push_blob_desc(&name, DOCKER_CONFIG, &unique_bytes("cfg"))
        .await;
    let missing = Desc::new(DOCKER_LAYER, &unique_bytes("nope"));
    let m = docker_manifest(&config, &[missing]);
    assert_error(
        reg.put_manifest(&name, "t", DOCKER_MANIFEST, &m).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn index_with_missing_child() {
    let reg = Registry::start().await;
    let name = repo("man-index-missing");
    let a = reg.push_image(&name, "a").await;
    let ghost = Desc::new(OCI_MANIFEST, &unique_bytes("ghost manifest"));
    let index = oci_index(&[a.desc(), ghost]);
    assert_error(
        reg.put_manifest(&name, "idx", OCI_INDEX, &index).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(get_manifest(&reg, &name, "idx", None).await.status(), 404);
}

#[tokio::test]
async fn index_with_child_in_other_repo() {
    let reg = Registry::start().await;
    let a = repo("man-index-other-a");
    let b = repo("man-index-other-b");
    let img = reg.push_image(&a, "x").await;
    reg.push_image(&b, "y").await;
    let index = oci_index(&[img.desc()]);
    assert_error(
        reg.put_manifest(&b, "idx", OCI_INDEX, &index).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn docker_list_with_missing_child() {
    let reg = Registry::start().await;
    let name = repo("man-list-missing");
    reg.push_image(&name, "a").await;
    let ghost = Desc::new(DOCKER_MANIFEST, &unique_bytes("ghost"));
    let list = docker_list(&[ghost]);
    assert_error(
        reg.put_manifest(&name, "l", DOCKER_LIST, &list).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn subject_may_be_missing() {
    let reg = Registry::start().await;
    let name = repo("man-subject");
    let subject = Desc::new(OCI_MANIFEST, &unique_bytes("subject that does not exist"));
    let config = reg.push_blob_desc(&name, OCI_EMPTY, b"{}").await;
    let mut v = oci_manifest_value(&config, &[]);
    v["artifactType"] = json!("application/vnd.example.sig");
    v["subject"] = subject.json();
    let body = to_bytes(&v);
    let r = reg
        .put_manifest(&name, &sha256(&body), OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), 201);
    if !reg.is_external() {
        assert_eq!(
            header(&r, "oci-subject").as_deref(),
            Some(subject.digest.as_str())
        );
    }
    assert_manifest(&reg, &name, &sha256(&body), OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn no_subject_no_oci_subject_header() {
    let reg = Registry::start().await;
    let name = repo("man-nosubject");
    let img = reg.prepare_image(&name, 1).await;
    let r = reg
        .put_manifest(&name, "t", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "oci-subject"), None);
}

#[tokio::test]
async fn invalid_manifests() {
    let reg = Registry::start().await;
    let name = repo("man-invalid");
    let img = reg.prepare_image(&name, 1).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"this is not json".to_vec()),
        ("truncated", img.manifest[..img.manifest.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("array", b"[]".to_vec()),
        (
            "missing config",
            to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []})),
        ),
        (
            "config not an object",
            to_bytes(
                &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": "nope", "layers": []}),
            ),
        ),
        (
            "layers not an array",
            to_bytes(
                &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": img.config.json(), "layers": 5}),
            ),
        ),
    ];
    for (what, body) in cases {
        let r = reg.put_manifest(&name, "bad", OCI_MANIFEST, &body).await;
        let st = r.status();
        let ct = header(&r, "content-type");
        let got = error_codes(ct.as_deref(), &r.bytes().await.unwrap(), what);
        assert_eq!(st, 400, "{what}");
        if !reg.is_external() {
            assert!(
                got.iter().any(|c| c == "MANIFEST_INVALID"),
                "{what}: expected MANIFEST_INVALID, got {got:?}"
            );
        }
    }
    // index without manifests array
    let r = reg
        .put_manifest(
            &name,
            "bad",
            OCI_INDEX,
            &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX})),
        )
        .await;
    if reg.is_external() {
        return;
    }
    assert_error(r, 400, "MANIFEST_INVALID").await;
    assert_eq!(get_manifest(&reg, &name, "bad", None).await.status(), 404);
}

#[tokio::test]
async fn invalid_descriptor_digest_in_manifest() {
    let reg = Registry::start().await;
    let name = repo("man-baddesc");
    let img = reg.prepare_image(&name, 1).await;
    let mut v = oci_manifest_value(&img.config, &img.layers);
    v["layers"][0]["digest"] = json!("sha256:xyz");
    let r = reg
        .put_manifest(&name, "bad", OCI_MANIFEST, &to_bytes(&v))
        .await;
    assert_error_any(
        r,
        400,
        &[
            "MANIFEST_INVALID",
            "DIGEST_INVALID",
            "MANIFEST_BLOB_UNKNOWN",
        ],
    )
    .await;
}

/// An OCI manifest of exactly `len` bytes (padded through an annotation).
fn padded_manifest(img: &Image, len: usize) -> Vec<u8> {
    let base = |pad: usize| {
        let mut v = oci_manifest_value(&img.config, &img.layers);
        v["annotations"] = json!({"pad": "x".repeat(pad)});
        serde_json::to_vec(&v).unwrap()
    };
    let overhead = base(0).len();
    assert!(len >= overhead, "cannot pad to {len}");
    let out = base(len - overhead);
    assert_eq!(out.len(), len);
    out
}

#[tokio::test]
async fn manifest_size_limit_flag() {
    let reg = local_only!(Registry::start_with(&["--max-manifest-size", "1000"]).await);
    let name = repo("man-limit");
    let img = reg.prepare_image(&name, 1).await;
    let ok = padded_manifest(&img, 1000);
    reg.push_manifest(&name, "ok", OCI_MANIFEST, &ok).await;
    let too_big = padded_manifest(&img, 1001);
    let r = reg.put_manifest(&name, "big", OCI_MANIFEST, &too_big).await;
    assert_eq!(r.status(), 413);
    let ct = header(&r, "content-type");
    let body = r.bytes().await.unwrap();
    error_codes(ct.as_deref(), &body, "413 body");
    assert_eq!(get_manifest(&reg, &name, "big", None).await.status(), 404);
    // by digest too
    let r = reg
        .put_manifest(&name, &sha256(&too_big), OCI_MANIFEST, &too_big)
        .await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn manifest_default_size_limit() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("man-deflimit");
    let img = reg.prepare_image(&name, 1).await;
    let ok = padded_manifest(&img, 4 * 1024 * 1024);
    reg.push_manifest(&name, "ok", OCI_MANIFEST, &ok).await;
    assert_manifest(&reg, &name, "ok", OCI_MANIFEST, &ok).await;
    let too_big = padded_manifest(&img, 4 * 1024 * 1024 + 1);
    let r = reg.put_manifest(&name, "big", OCI_MANIFEST, &too_big).await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn invalid_tags() {
    let reg = Registry::start().await;
    let name = repo("man-badtag");
    let img = reg.prepare_image(&name, 1).await;
    let long = "t".repeat(129);
    for tag in [
        "-bad",
        ".bad",
        long.as_str(),
        "bad%20tag",
        "a+b",
        "ta:g",
        "b%C3%A9",
        "a%2Fb",
    ] {
        let r = reg
            .put_manifest(&name, tag, OCI_MANIFEST, &img.manifest)
            .await;
        let st = r.status().as_u16();
        assert!(st == 400 || st == 404, "PUT tag {tag:?}: {st}");
        if st == 400 {
            let ct = header(&r, "content-type");
            error_codes(ct.as_deref(), &r.bytes().await.unwrap(), tag);
        }
        if !reg.is_external() {
            assert_eq!(st, 400, "PUT tag {tag:?}");
        }
        let r = get_manifest(&reg, &name, tag, None).await;
        let st = r.status().as_u16();
        assert!(st == 400 || st == 404, "GET tag {tag:?}: {st}");
        if !reg.is_external() {
            // nothing can exist under it: not found, as Distribution says
            assert_manifest_unknown(&reg, &name, tag).await;
        }
    }
    // `a/b` as a tag changes the route shape: 400 or 404, never success
    let r = reg
        .put_manifest(&name, "a/b", OCI_MANIFEST, &img.manifest)
        .await;
    assert!(r.status() == 400 || r.status() == 404, "{}", r.status());
}

/// GET and HEAD of a manifest by a reference that is neither a valid tag
/// nor a digest find nothing (404 MANIFEST_UNKNOWN, as clients probing for
/// existence expect); a PUT of one is invalid (400).
#[tokio::test]
async fn malformed_reference_reads_are_unknown() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("man-badref");
    let img = reg.push_image(&name, "v1").await;
    for bad in ["bad..ref!", "-x", "sha256:zz"] {
        let target = format!("/v2/{name}/manifests/{bad}");
        let r = reg.raw("GET", &target, &[], b"").await;
        assert_eq!(r.status, 404, "GET {bad}");
        assert_eq!(
            error_codes(r.header("content-type"), &r.body, bad),
            ["MANIFEST_UNKNOWN"]
        );
        let r = reg.raw("HEAD", &target, &[], b"").await;
        assert_eq!(r.status, 404, "HEAD {bad}");
        assert!(r.body.is_empty(), "HEAD {bad} has a body");
        let r = reg
            .raw(
                "PUT",
                &target,
                &[("Content-Type", OCI_MANIFEST)],
                &img.manifest,
            )
            .await;
        assert_eq!(r.status, 400, "PUT {bad}");
        let want = if bad.starts_with("sha256:") {
            "DIGEST_INVALID"
        } else {
            "MANIFEST_INVALID"
        };
        assert_eq!(error_codes(r.header("content-type"), &r.body, bad), [want]);
    }
    // an invalid name is still an invalid name
    let r = reg
        .raw("GET", "/v2/Bad/manifests/bad..ref!", &[], b"")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        error_codes(r.header("content-type"), &r.body, "name"),
        ["NAME_INVALID"]
    );
}

#[tokio::test]
async fn valid_unusual_tags() {
    let reg = Registry::start().await;
    let name = repo("man-oddtag");
    let img = reg.prepare_image(&name, 1).await;
    let long = format!("_{}", "T".repeat(127));
    for tag in [
        "_x",
        "A.b-c_d",
        "1",
        "v1.0.0-rc.1",
        "UPPER",
        "a..b",
        "a--b",
        long.as_str(),
    ] {
        reg.push_manifest(&name, tag, OCI_MANIFEST, &img.manifest)
            .await;
        assert_manifest(&reg, &name, tag, OCI_MANIFEST, &img.manifest).await;
    }
}

#[tokio::test]
async fn unknown_manifest() {
    let reg = Registry::start().await;
    let name = repo("man-unknown");
    let img = reg.push_image(&name, "exists").await;
    assert_manifest_unknown(&reg, &name, "nope").await;
    assert_manifest_unknown(&reg, &name, &sha256(b"no such manifest")).await;
    // a blob digest is not a manifest
    assert_manifest_unknown(&reg, &name, &img.layers[0].digest).await;
    // unknown repository
    let other = repo("man-unknown-repo");
    let r = get_manifest(&reg, &other, "latest", None).await;
    assert_error_any(r, 404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]).await;
    let r = head_manifest(&reg, &other, "latest").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn manifests_are_scoped_to_repo() {
    let reg = Registry::start().await;
    let a = repo("man-scope-a");
    let b = repo("man-scope-b");
    let img = reg.push_image(&a, "t").await;
    reg.push_image(&b, "other").await;
    assert_manifest_unknown(&reg, &b, "t").await;
    assert_manifest_unknown(&reg, &b, &img.digest).await;
}

#[tokio::test]
async fn content_negotiation_never_converts() {
    let reg = Registry::start().await;
    let name = repo("man-accept");
    let img = reg.push_image(&name, "oci").await;
    let cfg = reg
        .push_blob_desc(&name, DOCKER_CONFIG, &unique_bytes("dcfg"))
        .await;
    let layer = reg
        .push_blob_desc(&name, DOCKER_LAYER, &unique_bytes("dl"))
        .await;
    let dm = docker_manifest(&cfg, &[layer]);
    reg.push_manifest(&name, "docker", DOCKER_MANIFEST, &dm)
        .await;

    // Accept headers that include the stored type: portable
    for accept in [
        OCI_MANIFEST.to_string(),
        format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"),
        format!("{OCI_MANIFEST};q=0.5, {OCI_INDEX};q=0.9"),
        ALL_TYPES.to_string(),
    ] {
        let r = get_manifest(&reg, &name, "oci", Some(&accept)).await;
        assert_eq!(r.status(), 200, "{accept}");
        assert_eq!(content_type(&r).as_deref(), Some(OCI_MANIFEST), "{accept}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &img.manifest[..]);
    }
    let r = get_manifest(&reg, &name, "docker", Some(DOCKER_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r).as_deref(), Some(DOCKER_MANIFEST));

    if reg.is_external() {
        return;
    }
    // Accept headers that do not include the stored type: wharf still returns it
    for accept in [
        None,
        Some("*/*"),
        Some(OCI_INDEX),
        Some(DOCKER_MANIFEST),
        Some("application/json"),
        Some("text/html"),
    ] {
        let r = get_manifest(&reg, &name, "oci", accept).await;
        assert_eq!(r.status(), 200, "{accept:?}");
        assert_eq!(
            content_type(&r).as_deref(),
            Some(OCI_MANIFEST),
            "{accept:?}"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &img.manifest[..]);
        let r = get_manifest(&reg, &name, "docker", accept).await;
        assert_eq!(r.status(), 200, "{accept:?}");
        assert_eq!(
            content_type(&r).as_deref(),
            Some(DOCKER_MANIFEST),
            "{accept:?}"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &dm[..]);
    }
    let r = reg.head(&format!("/v2/{name}/manifests/docker")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r).as_deref(), Some(DOCKER_MANIFEST));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(sha256(&dm).as_str())
    );
}

#[tokio::test]
async fn tag_overwrite() {
    let reg = Registry::start().await;
    let name = repo("man-overwrite");
    let a = reg.push_image(&name, "t").await;
    let b = reg.push_image(&name, "t").await;
    assert_manifest(&reg, &name, "t", OCI_MANIFEST, &b.manifest).await;
    assert_manifest(&reg, &name, &a.digest, OCI_MANIFEST, &a.manifest).await;
    assert_eq!(tags(&reg, &name).await, vec!["t".to_string()]);
}

#[tokio::test]
async fn delete_tag_only() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution 2.8 refuses tag deletion with 400
    }
    let name = repo("man-deltag");
    let img = reg.push_image(&name, "t1").await;
    reg.push_manifest(&name, "t2", OCI_MANIFEST, &img.manifest)
        .await;
    let r = reg.delete(&format!("/v2/{name}/manifests/t1")).await;
    assert_eq!(r.status(), 202);
    assert_manifest_unknown(&reg, &name, "t1").await;
    assert_manifest(&reg, &name, &img.digest, OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&reg, &name, "t2", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(tags(&reg, &name).await, vec!["t2".to_string()]);
    // deleting the tag again
    assert_error(
        reg.delete(&format!("/v2/{name}/manifests/t1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn delete_by_digest_removes_tags() {
    let reg = Registry::start().await;
    let name = repo("man-deldigest");
    let img = reg.push_image(&name, "t1").await;
    reg.push_manifest(&name, "t2", OCI_MANIFEST, &img.manifest)
        .await;
    let keep = reg.push_image(&name, "t3").await;
    let r = reg
        .delete(&format!("/v2/{name}/manifests/{}", img.digest))
        .await;
    assert_eq!(r.status(), 202);
    assert_manifest_unknown(&reg, &name, &img.digest).await;
    assert_manifest_unknown(&reg, &name, "t1").await;
    assert_manifest_unknown(&reg, &name, "t2").await;
    assert_manifest(&reg, &name, "t3", OCI_MANIFEST, &keep.manifest).await;
    assert_eq!(tags(&reg, &name).await, vec!["t3".to_string()]);
    // delete again
    assert_error(
        reg.delete(&format!("/v2/{name}/manifests/{}", img.digest))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // re-push works and the old tags stay gone
    reg.push_manifest(&name, &img.digest, OCI_MANIFEST, &img.manifest)
        .await;
    assert_manifest(&reg, &name, &img.digest, OCI_MANIFEST, &img.manifest).await;
    assert_manifest_unknown(&reg, &name, "t1").await;
}

#[tokio::test]
async fn delete_unknown_manifest() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution 2.8 refuses tag deletion with 400
    }
    let name = repo("man-delunknown");
    reg.push_image(&name, "x").await;
    assert_error(
        reg.delete(&format!("/v2/{name}/manifests/{}", sha256(b"nope")))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        reg.delete(&format!("/v2/{name}/manifests/nosuchtag")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let other = repo("man-delunknown-repo");
    let r = reg
        .delete(&format!("/v2/{other}/manifests/{}", sha256(b"nope")))
        .await;
    assert_error_any(r, 404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]).await;
}

#[tokio::test]
async fn delete_disabled_with_no_delete() {
    let reg = local_only!(Registry::start_with(&["--no-delete"]).await);
    let name = repo("man-nodelete");
    let img = reg.push_image(&name, "t").await;
    assert_error(
        reg.delete(&format!("/v2/{name}/manifests/t")).await,
        405,
        "UNSUPPORTED",
    )
    .await;
    assert_error(
        reg.delete(&format!("/v2/{name}/manifests/{}", img.digest))
            .await,
        405,
        "UNSUPPORTED",
    )
    .await;
    assert_manifest(&reg, &name, "t", OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&reg, &name, &img.digest, OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn sha512_manifest_reference_and_layers() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("man-sha512");
    // a layer pushed with a sha512 digest
    let data = unique_bytes("sha512 layer");
    let ld = sha512(&data);
    let r = reg
        .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
        .query(&[("digest", ld.as_str())])
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let config = reg
        .push_blob_desc(&name, OCI_CONFIG, &unique_bytes("cfg"))
        .await;
    let layer = Desc {
        media_type: OCI_LAYER.into(),
        digest: ld,
        size: data.len(),
    };
    let m = oci_manifest(&config, &[layer]);
    reg.push_manifest(&name, "t", OCI_MANIFEST, &m).await;
    assert_manifest(&reg, &name, "t", OCI_MANIFEST, &m).await;

    // the manifest addressed by its sha512 digest
    let md = sha512(&m);
    let r = reg.put_manifest(&name, &md, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    let r = get_manifest(&reg, &name, &md, Some(OCI_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &m[..]);
    // wrong sha512
    let r = reg
        .put_manifest(&name, &sha512(b"other"), OCI_MANIFEST, &m)
        .await;
    assert_error(r, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn concurrent_puts_same_manifest_and_tag() {
    let reg = Registry::start().await;
    let name = repo("man-conc");
    let img = reg.prepare_image(&name, 2).await;
    let client = reg.client.clone();
    let base = reg.base.clone();
    let n2 = name.clone();
    let m = img.manifest.clone();
    let results = concurrently(8, move |_| {
        let (client, base, name, m) = (client.clone(), base.clone(), n2.clone(), m.clone());
        async move {
            let r = client
                .put(format!("{base}/v2/{name}/manifests/latest"))
                .header("Content-Type", OCI_MANIFEST)
                .body(m)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    })
    .await;
    assert!(results.iter().all(|s| *s == 201), "{results:?}");
    assert_manifest(&reg, &name, "latest", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(tags(&reg, &name).await, vec!["latest".to_string()]);
}

#[tokio::test]
async fn concurrent_puts_different_manifests_same_tag() {
    let reg = Registry::start().await;
    let name = repo("man-conc-diff");
    let mut imgs = Vec::new();
    for _ in 0..8 {
        imgs.push(reg.prepare_image(&name, 1).await);
    }
    let bodies: Vec<Vec<u8>> = imgs.iter().map(|i| i.manifest.clone()).collect();
    let client = reg.client.clone();
    let base = reg.base.clone();
    let n2 = name.clone();
    let b2 = bodies.clone();
    let results = concurrently(8, move |i| {
        let (client, base, name, m) = (client.clone(), base.clone(), n2.clone(), b2[i].clone());
        async move {
            let r = client
                .put(format!("{base}/v2/{name}/manifests/race"))
                .header("Content-Type", OCI_MANIFEST)
                .body(m)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    })
    .await;
    assert!(results.iter().all(|s| *s == 201), "{results:?}");
    let r = get_manifest(&reg, &name, "race", Some(OCI_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    let hd = header(&r, "docker-content-digest").unwrap();
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(hd, sha256(&body), "digest header must match body");
    assert!(
        bodies.contains(&body),
        "tag must point at one of the pushed manifests"
    );
    // every manifest is individually retrievable by digest
    for img in &imgs {
        assert_manifest(&reg, &name, &img.digest, OCI_MANIFEST, &img.manifest).await;
    }
}

#[tokio::test]
async fn many_tags_in_one_push() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("man-manytags");
    let img = reg.prepare_image(&name, 1).await;
    let tag_list: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    let q: Vec<(&str, &str)> = tag_list.iter().map(|t| ("tag", t.as_str())).collect();
    let r = reg
        .req(Method::PUT, &format!("/v2/{name}/manifests/{}", img.digest))
        .query(&q)
        .header("Content-Type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut got = header_list(&r, "oci-tag");
    got.sort();
    assert_eq!(got, tag_list);
    assert_eq!(tags(&reg, &name).await, tag_list);
}

#[tokio::test]
async fn too_many_tags_in_one_push() {
    let reg = local_only!(Registry::start_with(&["--max-tags-per-push", "3"]).await);
    let name = repo("man-toomanytags");
    let img = reg.prepare_image(&name, 1).await;
    let put = |tags: &'static [&'static str]| {
        let q: Vec<(&str, &str)> = tags.iter().map(|t| ("tag", *t)).collect();
        reg.req(Method::PUT, &format!("/v2/{name}/manifests/{}", img.digest))
            .query(&q)
            .header("Content-Type", OCI_MANIFEST)
            .body(img.manifest.clone())
            .send()
    };
    let r = put(&["a", "b", "c", "d"]).await.unwrap();
    assert_eq!(r.status(), 414);
    assert_eq!(get_manifest(&reg, &name, "a", None).await.status(), 404);
    let r = put(&["a", "b", "c"]).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(tags(&reg, &name).await, vec!["a", "b", "c"]);
}

#[tokio::test]
async fn manifest_referencing_deleted_blob() {
    let reg = Registry::start().await;
    let name = repo("man-deletedblob");
    let img = reg.prepare_image(&name, 1).await;
    let r = reg
        .delete(&format!("/v2/{name}/blobs/{}", img.layers[0].digest))
        .await;
    assert_eq!(r.status(), 202);
    assert_error(
        reg.put_manifest(&name, "t", OCI_MANIFEST, &img.manifest)
            .await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}
