//! Repository names, deep names, path traversal, error document format.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// Assert a raw response is a rejection (400 NAME_INVALID, or 404 when no
/// route matches), never a success or a 5xx.
fn assert_name_rejected(r: &RawResponse, what: &str) {
    if external_url().is_some() {
        // distribution redirects (Go mux) or decodes %2F; only require "no success, no 5xx"
        assert!((300..500).contains(&r.status), "{what}: got {}", r.status);
        return;
    }
    assert!(
        r.status == 400 || r.status == 404,
        "{what}: expected 400/404, got {} {:?}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    if r.status == 400 {
        let codes = error_codes(r.header("content-type"), &r.body, what);
        assert!(
            codes.iter().any(|c| c == "NAME_INVALID"),
            "{what}: expected NAME_INVALID, got {codes:?}"
        );
    } else if !r.body.is_empty() && external_url().is_none() {
        error_codes(r.header("content-type"), &r.body, what);
    }
}

fn invalid_names() -> Vec<String> {
    vec![
        "Upper".into(),
        "a/Upper".into(),
        "a//b".into(),
        "-a".into(),
        "a-".into(),
        "a/".into(),
        "_a".into(),
        "a/_b".into(),
        ".a".into(),
        "a/.b".into(),
        "a/..".into(),
        "a/../b".into(),
        "a..b".into(),
        "a___b".into(),
        "a.-b".into(),
        "a%20b".into(),
        "a%2Fb".into(),
        "caf%C3%A9".into(),
        "a".repeat(300),
        format!("{}x", "abcdefghi/".repeat(26)), // 261 chars, every component valid
    ]
}

#[tokio::test]
async fn invalid_names_are_rejected_everywhere() {
    let reg = Registry::start().await;
    let d = sha256(b"x");
    let manifest = to_bytes(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": Desc::new(OCI_EMPTY, b"{}").json(), "layers": []}),
    );
    for name in invalid_names() {
        let ctx = |m: &str| format!("{m} name {name:?}");
        let r = reg
            .raw("GET", &format!("/v2/{name}/tags/list"), &[], b"")
            .await;
        assert_name_rejected(&r, &ctx("tags/list"));
        let r = reg
            .raw("GET", &format!("/v2/{name}/manifests/latest"), &[], b"")
            .await;
        assert_name_rejected(&r, &ctx("GET manifest"));
        let r = reg
            .raw(
                "PUT",
                &format!("/v2/{name}/manifests/latest"),
                &[("Content-Type", OCI_MANIFEST)],
                &manifest,
            )
            .await;
        assert_name_rejected(&r, &ctx("PUT manifest"));
        let r = reg
            .raw("GET", &format!("/v2/{name}/blobs/{d}"), &[], b"")
            .await;
        assert_name_rejected(&r, &ctx("GET blob"));
        let r = reg
            .raw("POST", &format!("/v2/{name}/blobs/uploads/"), &[], b"")
            .await;
        assert_name_rejected(&r, &ctx("POST upload"));
        let r = reg
            .raw(
                "POST",
                &format!("/v2/{name}/blobs/uploads/?digest={}", sha256(b"hello")),
                &[],
                b"hello",
            )
            .await;
        assert_name_rejected(&r, &ctx("single POST"));
        let r = reg
            .raw("GET", &format!("/v2/{name}/referrers/{d}"), &[], b"")
            .await;
        assert_name_rejected(&r, &ctx("referrers"));
        let r = reg
            .raw("DELETE", &format!("/v2/{name}/manifests/{d}"), &[], b"")
            .await;
        assert_name_rejected(&r, &ctx("DELETE manifest"));
    }
    // nothing got created
    if !reg.is_external() {
        let v = json_body(reg.get("/v2/_catalog").await).await;
        assert_eq!(
            v["repositories"],
            json!([]),
            "invalid names must not create repositories"
        );
    }
}

#[tokio::test]
async fn invalid_name_is_name_invalid_for_simple_cases() {
    // Names that are syntactically a single path segment route fine, so the
    // registry must answer 400 NAME_INVALID (not 404).
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution answers 404 for names its router does not match
    }
    for name in ["Upper", "-a", "_a", "a___b", "a..b"] {
        let r = reg.get(&format!("/v2/{name}/tags/list")).await;
        assert_error(r, 400, "NAME_INVALID").await;
        let r = reg
            .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "NAME_INVALID").await;
    }
    let long = "a".repeat(300);
    let r = reg.get(&format!("/v2/{long}/tags/list")).await;
    assert_error(r, 400, "NAME_INVALID").await;
}

#[tokio::test]
async fn name_length_limit() {
    let reg = Registry::start().await;
    // 255 characters, made of valid components
    let p = format!("len{}", nonce());
    let mut name = p.clone();
    while name.len() < 250 {
        name.push_str("/abcd");
    }
    while name.len() < 255 {
        name.push('x');
    }
    assert_eq!(name.len(), 255);
    if reg.is_external() {
        // distribution limits name length differently; just exercise it
        let _ = reg.get(&format!("/v2/{name}/tags/list")).await;
        return;
    }
    reg.push_image(&name, "t").await;
    let r = reg.get(&format!("/v2/{name}/tags/list")).await;
    assert_eq!(r.status(), 200);
    let too_long = format!("{name}y");
    let r = reg.get(&format!("/v2/{too_long}/tags/list")).await;
    assert_error(r, 400, "NAME_INVALID").await;
    let r = reg
        .req(Method::POST, &format!("/v2/{too_long}/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "NAME_INVALID").await;
}

#[tokio::test]
async fn valid_unusual_names() {
    let reg = Registry::start().await;
    let n = nonce();
    for name in [
        format!("a{n}__b"),
        format!("a{n}--b"),
        format!("a{n}---b.c_d"),
        format!("{n}/0/1/2"),
        format!("x{n}/manifests"),
        format!("x{n}/blobs"),
        format!("x{n}/tags"),
        format!("x{n}/uploads"),
        format!("x{n}/referrers"),
        format!("x{n}/blobs/uploads"),
        format!("x{n}/manifests/latest"),
        format!("x{n}/v2"),
    ] {
        let img = reg.push_image(&name, "latest").await;
        let r = reg.get_m(&format!("/v2/{name}/manifests/latest")).await;
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &img.manifest[..],
            "{name}"
        );
        let r = reg.get(&format!("/v2/{name}/tags/list")).await;
        assert_eq!(r.status(), 200, "{name}");
        let v = json_body(r).await;
        assert_eq!(v["name"], json!(name));
        assert_eq!(v["tags"], json!(["latest"]), "{name}");
        reg.assert_blob(
            &name,
            &reg.get_blob(&name, &img.layers[0].digest)
                .await
                .bytes()
                .await
                .unwrap(),
        )
        .await;
        // the nested name's parent, if any, did not get these tags
    }
}

#[tokio::test]
async fn deep_names_work_everywhere() {
    let reg = Registry::start().await;
    let n = nonce();
    let name = format!("d{n}/b/c/d/e/f/g/h/i/j");
    let other = format!("d{n}/b/c/d/e/f/g/h/i/k");
    assert_eq!(name.split('/').count(), 10);

    // chunked upload, status, cancel
    let url = reg.start_upload(&name).await;
    assert!(location_path(&url).starts_with(&format!("/v2/{name}/blobs/uploads/")));
    let r = reg
        .client
        .patch(&url)
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let url = reg.resolve(&location(&r));
    let r = reg.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-2"));
    let r = reg
        .client
        .put(&url)
        .query(&[("digest", sha256(b"abc").as_str())])
        .body(b"def".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "digest of abc != abcdef");
    let url = reg.start_upload(&name).await;
    assert_eq!(reg.client.delete(&url).send().await.unwrap().status(), 204);

    // blobs
    let img = reg.push_image(&name, "v1").await;
    let ld = img.layers[0].digest.clone();
    assert_eq!(reg.get_blob(&name, &ld).await.status(), 200);
    assert_eq!(
        reg.head(&format!("/v2/{name}/blobs/{ld}")).await.status(),
        200
    );
    // mount deep -> deep
    let r = reg
        .req(Method::POST, &format!("/v2/{other}/blobs/uploads/"))
        .query(&[("mount", ld.as_str()), ("from", name.as_str())])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        location_path(&location(&r)),
        format!("/v2/{other}/blobs/{ld}")
    );
    assert_eq!(reg.get_blob(&other, &ld).await.status(), 200);

    // manifests
    let r = reg.get_m(&format!("/v2/{name}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        reg.head_m(&format!("/v2/{name}/manifests/{}", img.digest))
            .await
            .status(),
        200
    );
    let r = reg.get(&format!("/v2/{name}/tags/list")).await;
    assert_eq!(json_body(r).await, json!({"name": name, "tags": ["v1"]}));

    // referrers
    if !reg.is_external() {
        let (_, ad) = reg
            .push_artifact(
                &name,
                None,
                Some("application/vnd.example.deep"),
                OCI_EMPTY,
                Some(&img.desc()),
                None,
            )
            .await;
        let r = reg
            .get(&format!("/v2/{name}/referrers/{}", img.digest))
            .await;
        assert_eq!(r.status(), 200);
        let v = json_body(r).await;
        assert_eq!(v["manifests"][0]["digest"], json!(ad));
    }

    // catalog
    let r = reg
        .client
        .get(reg.url("/v2/_catalog"))
        .query(&[("n", "1000"), ("last", format!("d{n}").as_str())])
        .send()
        .await
        .unwrap();
    let v = json_body(r).await;
    let repos: Vec<&str> = v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(repos.contains(&name.as_str()), "{repos:?}");

    // deletes
    if !reg.is_external() {
        assert_eq!(
            reg.delete(&format!("/v2/{name}/manifests/v1"))
                .await
                .status(),
            202
        );
    }
    assert_eq!(
        reg.delete(&format!("/v2/{name}/manifests/{}", img.digest))
            .await
            .status(),
        202
    );
    assert_eq!(
        reg.delete(&format!("/v2/{name}/blobs/{ld}")).await.status(),
        202
    );
    assert_eq!(reg.get_blob(&name, &ld).await.status(), 404);
    assert_eq!(reg.get_blob(&other, &ld).await.status(), 200);
}

#[tokio::test]
async fn nested_repos_are_distinct() {
    let reg = Registry::start().await;
    let parent = repo("nest");
    let child = format!("{parent}/child");
    let pi = reg.push_image(&parent, "p").await;
    let ci = reg.push_image(&child, "c").await;
    assert_eq!(
        json_body(reg.get(&format!("/v2/{parent}/tags/list")).await).await["tags"],
        json!(["p"])
    );
    assert_eq!(
        json_body(reg.get(&format!("/v2/{child}/tags/list")).await).await["tags"],
        json!(["c"])
    );
    assert_eq!(
        reg.get(&format!("/v2/{parent}/manifests/c")).await.status(),
        404
    );
    assert_eq!(
        reg.get_blob(&parent, &ci.layers[0].digest).await.status(),
        404
    );
    assert_eq!(
        reg.get_blob(&child, &pi.layers[0].digest).await.status(),
        404
    );
}

fn assert_traversal_rejected(r: &RawResponse, what: &str) {
    if external_url().is_some() && (300..400).contains(&r.status) {
        return; // Go's mux redirects to the cleaned path
    }
    assert!(
        (400..500).contains(&r.status),
        "{what}: expected 4xx, got {} {:?}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains("root:"), "{what}: leaked file content");
}

#[tokio::test]
async fn path_traversal_never_succeeds() {
    let reg = Registry::start().await;
    let name = repo("trav");
    let img = reg.push_image(&name, "latest").await;
    let d = img.layers[0].digest.clone();
    let targets = [
        "/v2/../../etc/passwd/manifests/x".to_string(),
        "/v2/../../../../../../etc/passwd".to_string(),
        "/v2/%2e%2e/%2e%2e/etc/passwd/manifests/latest".to_string(),
        "/v2/%2E%2E/%2E%2E/etc/passwd/tags/list".to_string(),
        "/v2/..%2F..%2Fetc%2Fpasswd/manifests/latest".to_string(),
        format!("/v2/{name}%2F..%2F..%2F..%2Fetc/manifests/latest"),
        format!("/v2/{name}/manifests/..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/v2/{name}/manifests/%2e%2e"),
        format!("/v2/{name}/manifests/.."),
        format!("/v2/{name}/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/v2/{name}/blobs/sha256:../../../../etc/passwd"),
        format!("/v2/{name}/blobs/..%2F{}", &d[7..]),
        format!("/v2/{name}/blobs/uploads/..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/v2/{name}/blobs/uploads/%2e%2e"),
        format!("/v2/{name}/blobs/uploads/../../../../etc/passwd"),
        format!("/v2/{name}/tags/list/../../../../etc/passwd"),
        format!("/v2/{name}/referrers/..%2F..%2Fetc%2Fpasswd"),
        format!("/v2/{name}/../{name}/manifests/latest"),
        format!("/v2/{name}/%2e%2e/{name}/manifests/latest"),
        format!("/v2/{name}%2Fmanifests%2Flatest"),
        "/v2/%00/manifests/latest".to_string(),
        format!("/v2/{name}/manifests/latest%00"),
        "/v2/a\\..\\..\\etc/manifests/latest".to_string(),
    ];
    for t in &targets {
        for method in ["GET", "HEAD", "DELETE"] {
            let r = reg.raw(method, t, &[], b"").await;
            assert_traversal_rejected(&r, &format!("{method} {t}"));
        }
        let r = reg
            .raw("PUT", t, &[("Content-Type", OCI_MANIFEST)], &img.manifest)
            .await;
        assert_traversal_rejected(&r, &format!("PUT {t}"));
        let r = reg.raw("PATCH", t, &[], b"evil").await;
        assert_traversal_rejected(&r, &format!("PATCH {t}"));
        let r = reg.raw("POST", t, &[], b"evil").await;
        assert_traversal_rejected(&r, &format!("POST {t}"));
    }
    // mount/from with traversal
    for from in ["..%2F..%2Fetc", "../../etc", "%2e%2e"] {
        let r = reg
            .raw(
                "POST",
                &format!("/v2/{name}/blobs/uploads/?mount={d}&from={from}"),
                &[],
                b"",
            )
            .await;
        assert!(
            r.status == 202 || r.status == 400 || r.status == 404,
            "mount from {from}: {}",
            r.status
        );
    }
    let r = reg
        .raw(
            "POST",
            &format!("/v2/{name}/blobs/uploads/?mount=sha256:..%2F..%2Fx&from={name}"),
            &[],
            b"",
        )
        .await;
    assert!(
        r.status == 202 || r.status == 400,
        "mount traversal digest: {}",
        r.status
    );
    // the legit content is intact
    assert_eq!(
        reg.get_m(&format!("/v2/{name}/manifests/latest"))
            .await
            .status(),
        200
    );
    // nothing was written outside the data dir
    if let Some(root) = reg.root_dir() {
        let entries: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            entries,
            vec!["data".to_string()],
            "unexpected files next to the data dir"
        );
    }
}

#[tokio::test]
async fn error_bodies_are_oci_json() {
    let reg = Registry::start().await;
    let name = repo("errfmt");
    reg.push_image(&name, "x").await;
    let d = sha256(b"unknown");
    let cases: Vec<(Method, String)> = vec![
        (Method::GET, format!("/v2/{name}/blobs/{d}")),
        (Method::GET, format!("/v2/{name}/manifests/nope")),
        (Method::GET, format!("/v2/{name}/manifests/{d}")),
        (Method::DELETE, format!("/v2/{name}/manifests/{d}")),
        (Method::DELETE, format!("/v2/{name}/blobs/{d}")),
        (
            Method::GET,
            format!("/v2/{}/tags/list", repo("errfmt-unknown")),
        ),
        (Method::PUT, format!("/v2/{name}/manifests/x")), // empty body, no content type
    ];
    let mut cases = cases;
    if !reg.is_external() {
        cases.push((Method::GET, "/v2/UPPER/tags/list".to_string()));
    }
    for (m, p) in cases {
        let r = reg.req(m.clone(), &p).send().await.unwrap();
        let st = r.status();
        assert!(st.is_client_error(), "{m} {p}: {st}");
        let ct = header(&r, "content-type");
        let body = r.bytes().await.unwrap();
        let codes = error_codes(ct.as_deref(), &body, &format!("{m} {p}"));
        for c in &codes {
            assert!(
                ERROR_CODES.contains(&c.as_str()),
                "{m} {p}: non-spec code {c}"
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for e in v["errors"].as_array().unwrap() {
            assert!(e.get("message").map(|m| m.is_string()).unwrap_or(true));
        }
    }
    // HEAD errors have no body
    let r = reg.head(&format!("/v2/{name}/manifests/nope")).await;
    assert_eq!(r.status(), 404);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let reg = Registry::start().await;
    let name = repo("routes");
    reg.push_image(&name, "x").await;
    for (m, p) in [
        ("GET", "/v3/".to_string()),
        ("GET", format!("/v2/{name}")),
        ("GET", format!("/v2/{name}/")),
        ("GET", format!("/v2/{name}/foo")),
        ("GET", format!("/v2/{name}/blobs/")),
        ("GET", format!("/v2/{name}/manifests/")),
        ("PATCH", format!("/v2/{name}/manifests/x")),
        ("POST", format!("/v2/{name}/manifests/x")),
        ("PUT", format!("/v2/{name}/tags/list")),
        ("POST", format!("/v2/{name}/blobs/{}", sha256(b"x"))),
        ("PUT", format!("/v2/{name}/blobs/{}", sha256(b"x"))),
        ("BREW", "/v2/".to_string()),
    ]
    .into_iter()
    .filter(|(m, _)| !(reg.is_external() && *m == "BREW"))
    .chain(if reg.is_external() {
        None
    } else {
        Some(("DELETE", "/v2/".to_string()))
    }) {
        let r = reg.raw(m, &p, &[], b"").await;
        assert!(
            [400, 404, 405, 501].contains(&r.status),
            "{m} {p}: expected a 4xx/501, got {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// method, path, headers, body
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>);

#[tokio::test]
async fn garbage_input_never_500() {
    let reg = Registry::start().await;
    let name = repo("garbage");
    let img = reg.push_image(&name, "x").await;
    let url = location_path(&reg.start_upload(&name).await);
    let d = img.layers[0].digest.clone();
    let cases: Vec<Case> = vec![
        ("PATCH", url.clone(), vec![("Content-Range", "99999999999999999999-99999999999999999999")], b"x".to_vec()),
        ("PATCH", url.clone(), vec![("Content-Range", "\u{7f}")], b"x".to_vec()),
        ("PUT", format!("{url}?digest=%ZZ"), vec![], b"x".to_vec()),
        ("PUT", format!("{url}?digest=sha256:%00"), vec![], b"x".to_vec()),
        ("PUT", format!("{url}?digest={d}&digest={d}"), vec![], b"x".to_vec()),
        ("POST", format!("/v2/{name}/blobs/uploads/?mount=&from="), vec![], vec![]),
        ("POST", format!("/v2/{name}/blobs/uploads/?digest="), vec![], b"x".to_vec()),
        ("POST", format!("/v2/{name}/blobs/uploads/?from={name}"), vec![], vec![]),
        ("GET", format!("/v2/{name}/tags/list?n=&last="), vec![], vec![]),
        ("GET", format!("/v2/{name}/tags/list?n=%FF"), vec![], vec![]),
        ("GET", "/v2/_catalog?n=-5".to_string(), vec![], vec![]),
        ("GET", "/v2/_catalog?n=abc".to_string(), vec![], vec![]),
        ("GET", "/v2/_catalog?last=%FF%FE".to_string(), vec![], vec![]),
        ("PUT", format!("/v2/{name}/manifests/y"), vec![("Content-Type", "")], img.manifest.clone()),
        ("PUT", format!("/v2/{name}/manifests/y"), vec![("Content-Type", "text/plain")], b"\xff\xfe\x00".to_vec()),
        ("PUT", format!("/v2/{name}/manifests/y"), vec![("Content-Type", OCI_MANIFEST)], b"{\"schemaVersion\": 2, \"config\": {\"digest\": 5}}".to_vec()),
        ("PUT", format!("/v2/{name}/manifests/y"), vec![("Content-Type", OCI_MANIFEST)], b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"config\": {\"mediaType\": \"x\", \"digest\": \"sha256:aa\", \"size\": -1}, \"layers\": []}".to_vec()),
        ("PUT", format!("/v2/{name}/manifests/y"), vec![("Content-Type", OCI_MANIFEST)], "[".repeat(100_000).into_bytes()),
        ("GET", format!("/v2/{name}/blobs/{d}"), vec![("Range", "bytes=0-1,3-4")], vec![]),
        ("GET", format!("/v2/{name}/referrers/{d}?artifactType=%FF"), vec![], vec![]),
    ];
    for (m, p, h, body) in cases {
        let r = reg.raw(m, &p, &h, &body).await;
        assert!(
            r.status < 500,
            "{m} {p} {h:?}: got {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    // the registry is still healthy
    assert_eq!(reg.get("/v2/").await.status(), 200);
    assert_eq!(
        reg.get_m(&format!("/v2/{name}/manifests/x")).await.status(),
        200
    );
}

#[tokio::test]
async fn max_name_length_flag() {
    let reg = local_only!(Registry::start_with(&["--max-name-length", "20"]).await);
    let ok = "abcdefghij/klmnopqrs"; // 20
    assert_eq!(ok.len(), 20);
    reg.push_image(ok, "t").await;
    let too_long = "abcdefghij/klmnopqrst"; // 21
    let r = reg.get(&format!("/v2/{too_long}/tags/list")).await;
    assert_error(r, 400, "NAME_INVALID").await;
    let r = reg
        .req(Method::POST, &format!("/v2/{too_long}/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "NAME_INVALID").await;
    // mount from a too-long name
    let r = reg
        .req(Method::POST, &format!("/v2/{ok}/blobs/uploads/"))
        .query(&[("mount", sha256(b"x").as_str()), ("from", too_long)])
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert!(st == 400 || st == 202, "{st}");
}

#[tokio::test]
async fn mount_from_invalid_name() {
    let reg = Registry::start().await;
    let name = repo("mount-badfrom");
    reg.push_blob(&name, b"x").await;
    for from in ["UPPER", "a//b", "-x", "../x"] {
        let r = reg
            .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .query(&[("mount", sha256(b"x").as_str()), ("from", from)])
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        assert!(st == 400 || st == 202, "from={from}: {st}");
        if st == 400 {
            expect_error(r, "NAME_INVALID").await;
        }
    }
}
