//! Tags list, catalog and referrers.

mod common;

use common::*;
use reqwest::Response;
use serde_json::{Value, json};

/// Push one small manifest and tag it with each of `tags`.
async fn tag_all(reg: &Registry, name: &str, tags: &[&str]) -> Image {
    let img = reg.prepare_image(name, 1).await;
    for t in tags {
        reg.push_manifest(name, t, OCI_MANIFEST, &img.manifest)
            .await;
    }
    img
}

fn tags_of(v: &Value) -> Vec<String> {
    v["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags array in {v}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// Check a Link header's target: path and query parameters (order-independent).
fn check_link(link: &str, path: &str, n: usize, last: &str) {
    assert_eq!(location_path(link), path, "Link path in {link}");
    let q = query_pairs(link);
    let get = |k: &str| q.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("n").as_deref(),
        Some(n.to_string().as_str()),
        "n in {link}"
    );
    assert_eq!(get("last").as_deref(), Some(last), "last in {link}");
}

async fn get_tags(reg: &Registry, name: &str, query: &[(&str, &str)]) -> Response {
    reg.client
        .get(reg.url(&format!("/v2/{name}/tags/list")))
        .query(query)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tags_list_sorted() {
    let reg = Registry::start().await;
    let name = repo("tags-sorted");
    let tags = [
        "b", "a", "B", "A", "1", "a-b", "a.b", "a_b", "latest", "v1.0", "v1.10", "v1.9", "_z", "Z9",
    ];
    tag_all(&reg, &name, &tags).await;
    let r = reg.get(&format!("/v2/{name}/tags/list")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r).as_deref(), Some("application/json"));
    assert_eq!(header(&r, "link"), None);
    let v = json_body(r).await;
    assert_eq!(v["name"], json!(name));
    let mut want: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
    want.sort(); // byte order == ASCIIbetical
    let mut got = tags_of(&v);
    if reg.is_external() {
        got.sort(); // distribution 2.8 returns directory order
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn tags_list_pagination() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // not supported by distribution 2.8
    }
    let name = repo("tags-page");
    let tags = ["t01", "t02", "t03", "t04", "t05", "t06"];
    tag_all(&reg, &name, &tags).await;
    let path = format!("/v2/{name}/tags/list");

    // n=3: two full pages, Link only on the first
    let r = get_tags(&reg, &name, &[("n", "3")]).await;
    assert_eq!(r.status(), 200);
    let link = next_link(&r).expect("Link header on first page");
    check_link(&link, &path, 3, "t03");
    assert_eq!(tags_of(&json_body(r).await), vec!["t01", "t02", "t03"]);
    let r = reg.client.get(reg.resolve(&link)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let more = next_link(&r);
    assert_eq!(tags_of(&json_body(r).await), vec!["t04", "t05", "t06"]);
    if !reg.is_external() {
        assert_eq!(more, None, "no Link on the last page");
    }

    // n=4: 4 then 2
    let r = get_tags(&reg, &name, &[("n", "4")]).await;
    let link = next_link(&r).expect("Link header");
    check_link(&link, &path, 4, "t04");
    assert_eq!(
        tags_of(&json_body(r).await),
        vec!["t01", "t02", "t03", "t04"]
    );
    let r = reg.client.get(reg.resolve(&link)).send().await.unwrap();
    assert_eq!(next_link(&r), None);
    assert_eq!(tags_of(&json_body(r).await), vec!["t05", "t06"]);

    // n larger than total: everything, no Link
    let r = get_tags(&reg, &name, &[("n", "100")]).await;
    assert_eq!(next_link(&r), None);
    assert_eq!(tags_of(&json_body(r).await), tags.to_vec());

    // walk with n=1 following Link headers
    let mut url = reg.url(&format!("{path}?n=1"));
    let mut seen = Vec::new();
    for _ in 0..20 {
        let r = reg.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let link = next_link(&r);
        let page = tags_of(&json_body(r).await);
        assert!(page.len() <= 1);
        seen.extend(page);
        match link {
            Some(l) => url = reg.resolve(&l),
            None => break,
        }
    }
    assert_eq!(seen, tags.to_vec());
}

#[tokio::test]
async fn tags_list_last() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // not supported by distribution 2.8
    }
    let name = repo("tags-last");
    let tags = ["a", "b", "c", "d", "e"];
    tag_all(&reg, &name, &tags).await;
    let r = get_tags(&reg, &name, &[("n", "2"), ("last", "b")]).await;
    assert_eq!(r.status(), 200);
    let link = next_link(&r).expect("Link");
    check_link(&link, &format!("/v2/{name}/tags/list"), 2, "d");
    assert_eq!(tags_of(&json_body(r).await), vec!["c", "d"]);
    // last without n
    let r = get_tags(&reg, &name, &[("last", "c")]).await;
    assert_eq!(tags_of(&json_body(r).await), vec!["d", "e"]);
    // last that is not a tag: lexical position
    let r = get_tags(&reg, &name, &[("last", "bb"), ("n", "10")]).await;
    assert_eq!(tags_of(&json_body(r).await), vec!["c", "d", "e"]);
    // last at the end
    let r = get_tags(&reg, &name, &[("last", "e")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(next_link(&r), None);
    assert!(tags_of(&json_body(r).await).is_empty());
}

#[tokio::test]
async fn tags_list_n_zero() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution 2.8 treats n=0 as "no limit"
    }
    let name = repo("tags-zero");
    tag_all(&reg, &name, &["a", "b"]).await;
    let r = get_tags(&reg, &name, &[("n", "0")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "link"), None);
    let v = json_body(r).await;
    assert_eq!(v["name"], json!(name));
    assert!(tags_of(&v).is_empty());
}

#[tokio::test]
async fn tags_list_bad_n() {
    let reg = Registry::start().await;
    let name = repo("tags-badn");
    tag_all(&reg, &name, &["a"]).await;
    for n in ["-1", "abc", "1.5", "99999999999999999999999"] {
        let r = get_tags(&reg, &name, &[("n", n)]).await;
        let st = r.status().as_u16();
        assert!(st == 400 || st == 200, "n={n}: {st}");
        if !reg.is_external() && n != "99999999999999999999999" {
            assert_eq!(st, 400, "n={n}");
        }
        if st == 400 {
            let ct = header(&r, "content-type");
            error_codes(ct.as_deref(), &r.bytes().await.unwrap(), n);
        }
    }
}

#[tokio::test]
async fn tags_list_unknown_repo() {
    let reg = Registry::start().await;
    let name = repo("tags-unknown");
    assert_error(
        reg.get(&format!("/v2/{name}/tags/list")).await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn tags_list_with_untagged_manifest_only() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // not supported by distribution 2.8
    }
    let name = repo("tags-untagged");
    let img = reg.prepare_image(&name, 1).await;
    reg.push_manifest(&name, &img.digest, OCI_MANIFEST, &img.manifest)
        .await;
    let r = reg.get(&format!("/v2/{name}/tags/list")).await;
    assert_eq!(r.status(), 200);
    let v = json_body(r).await;
    assert_eq!(v["name"], json!(name));
    assert!(
        v["tags"]
            .as_array()
            .map(|a| a.is_empty())
            .unwrap_or(v["tags"].is_null()),
        "{v}"
    );
}

// ---------------------------------------------------------------------------
// catalog
// ---------------------------------------------------------------------------

/// Collect all catalog entries after `start` that begin with `prefix`,
/// paginating with `n` and following Link headers.
async fn catalog_walk(reg: &Registry, prefix: &str, n: usize) -> Vec<String> {
    let mut url = format!("{}/v2/_catalog?n={n}&last={}", reg.base, pct_encode(prefix));
    let mut out = Vec::new();
    for _ in 0..200 {
        let r = reg.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let link = next_link(&r);
        if let Some(l) = &link {
            assert_eq!(location_path(l), "/v2/_catalog", "{l}");
            let q = query_pairs(l);
            assert!(
                q.iter().any(|(k, v)| k == "n" && *v == n.to_string()),
                "n in {l}"
            );
            assert!(q.iter().any(|(k, _)| k == "last"), "last in {l}");
        }
        let v = json_body(r).await;
        let page: Vec<String> = v["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        assert!(page.len() <= n, "page larger than n: {page:?}");
        let mut done = link.is_none();
        for p in page {
            if p.starts_with(prefix) {
                out.push(p);
            } else if p.as_str() > prefix {
                done = true;
            }
        }
        if done {
            return out;
        }
        url = reg.resolve(&link.unwrap());
    }
    panic!("catalog pagination did not terminate");
}

#[tokio::test]
async fn catalog_lexical_order_and_pagination() {
    let reg = Registry::start().await;
    let p = format!("cat{}", nonce());
    let names = [
        format!("{p}/a"),
        format!("{p}/a-b"),
        format!("{p}/a.b"),
        format!("{p}/a/b"),
        format!("{p}/a/b.x"),
        format!("{p}/a/b-c"),
        format!("{p}/a/b/c/d/e/f/g/h/i/j"),
        format!("{p}/a0"),
        format!("{p}/a_b"),
        format!("{p}/ab"),
        format!("{p}-x"),
    ];
    for n in &names {
        tag_all(&reg, n, &["latest"]).await;
    }
    let mut want = names.to_vec();
    want.sort();

    // full listing (large n) contains them in byte order
    let all = catalog_walk(&reg, &p, 1000).await;
    if reg.is_external() {
        // distribution orders by filesystem walk; only check membership there
        let mut got = all.clone();
        got.sort();
        assert_eq!(got, want);
        return;
    }
    assert_eq!(all, want);
    for n in [1, 2, 3, 5] {
        assert_eq!(catalog_walk(&reg, &p, n).await, want, "n={n}");
    }
}

#[tokio::test]
async fn catalog_basic() {
    let reg = Registry::start().await;
    let name = repo("catbasic");
    tag_all(&reg, &name, &["x"]).await;
    let r = reg.get("/v2/_catalog").await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r).as_deref(), Some("application/json"));
    let v = json_body(r).await;
    let repos: Vec<&str> = v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    if !reg.is_external() {
        assert!(repos.contains(&name.as_str()), "{repos:?}");
        let mut sorted = repos.clone();
        sorted.sort();
        assert_eq!(repos, sorted, "catalog must be in byte order");
    }
    // n=0
    if !reg.is_external() {
        let r = reg.get("/v2/_catalog?n=0").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "link"), None);
        let v = json_body(r).await;
        assert_eq!(v["repositories"], json!([]));
    }
}

#[tokio::test]
async fn catalog_fresh_registry() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let r = reg.get("/v2/_catalog").await;
    assert_eq!(r.status(), 200);
    let v = json_body(r).await;
    assert_eq!(v["repositories"], json!([]));
    let a = "zz/a";
    let b = "aa";
    tag_all(&reg, a, &["1"]).await;
    tag_all(&reg, b, &["1"]).await;
    let r = reg.get("/v2/_catalog").await;
    let v = json_body(r).await;
    assert_eq!(v["repositories"], json!(["aa", "zz/a"]));
    let r = reg.get("/v2/_catalog?n=1").await;
    let link = next_link(&r).expect("Link");
    check_link(&link, "/v2/_catalog", 1, "aa");
    assert_eq!(json_body(r).await["repositories"], json!(["aa"]));
    let r = reg.client.get(reg.resolve(&link)).send().await.unwrap();
    assert_eq!(next_link(&r), None);
    assert_eq!(json_body(r).await["repositories"], json!(["zz/a"]));
}

// ---------------------------------------------------------------------------
// referrers
// ---------------------------------------------------------------------------

async fn referrers(
    reg: &Registry,
    name: &str,
    digest: &str,
    artifact_type: Option<&str>,
) -> Response {
    let mut b = reg
        .client
        .get(reg.url(&format!("/v2/{name}/referrers/{digest}")));
    if let Some(at) = artifact_type {
        b = b.query(&[("artifactType", at)]);
    }
    b.send().await.unwrap()
}

/// Check the referrers response envelope and return the descriptors keyed by digest.
async fn referrer_descs(r: Response) -> Vec<Value> {
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r).as_deref(), Some(OCI_INDEX));
    let v = json_body(r).await;
    assert_eq!(v["schemaVersion"], json!(2));
    assert_eq!(v["mediaType"], json!(OCI_INDEX));
    let mut m = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests must be an array: {v}"))
        .clone();
    m.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    m
}

fn desc_json(
    media_type: &str,
    body: &[u8],
    artifact_type: Option<&str>,
    annotations: Option<Value>,
) -> Value {
    let mut v = json!({"mediaType": media_type, "digest": sha256(body), "size": body.len()});
    if let Some(at) = artifact_type {
        v["artifactType"] = json!(at);
    }
    if let Some(a) = annotations {
        v["annotations"] = a;
    }
    v
}

/// Compare descriptors, treating absent and empty `annotations` as equal.
fn normalize(mut v: Vec<Value>) -> Vec<Value> {
    for d in v.iter_mut() {
        let obj = d.as_object_mut().unwrap();
        if obj
            .get("annotations")
            .map(|a| a.as_object().map(|o| o.is_empty()).unwrap_or(a.is_null()))
            .unwrap_or(false)
        {
            obj.remove("annotations");
        }
    }
    v.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    v
}

#[tokio::test]
async fn referrers_list_and_filter() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return; // distribution 2.8 has no referrers API
    }
    let name = repo("refs");
    let subject = reg.push_image(&name, "app").await;
    let sd = subject.desc();

    let sbom_ann = json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "org.example.sbom.format": "json"});
    let (sbom, _) = reg
        .push_artifact(
            &name,
            None,
            Some("application/vnd.example.sbom.v1"),
            OCI_EMPTY,
            Some(&sd),
            Some(sbom_ann.clone()),
        )
        .await;
    // no artifactType: falls back to the config media type
    let (sig, _) = reg
        .push_artifact(
            &name,
            Some("sig"),
            None,
            "application/vnd.example.signature.config.v1+json",
            Some(&sd),
            None,
        )
        .await;
    // an index referrer with artifactType and annotations
    let child = reg.push_image(&name, "child").await;
    let idx_ann = json!({"k": "v"});
    let idx = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [child.desc().json()],
        "subject": sd.json(),
        "annotations": idx_ann,
    }));
    let r = reg
        .put_manifest(&name, &sha256(&idx), OCI_INDEX, &idx)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "oci-subject").as_deref(),
        Some(sd.digest.as_str())
    );
    // an index referrer without artifactType: artifactType omitted
    let idx2 = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child.desc().json()],
        "subject": sd.json(),
    }));
    reg.push_manifest(&name, &sha256(&idx2), OCI_INDEX, &idx2)
        .await;
    // a referrer of some other subject, and a plain image: not listed
    let other_subject = reg.push_image(&name, "other").await;
    reg.push_artifact(
        &name,
        None,
        Some("application/vnd.example.sbom.v1"),
        OCI_EMPTY,
        Some(&other_subject.desc()),
        None,
    )
    .await;

    let want = normalize(vec![
        desc_json(
            OCI_MANIFEST,
            &sbom,
            Some("application/vnd.example.sbom.v1"),
            Some(sbom_ann),
        ),
        desc_json(
            OCI_MANIFEST,
            &sig,
            Some("application/vnd.example.signature.config.v1+json"),
            None,
        ),
        desc_json(
            OCI_INDEX,
            &idx,
            Some("application/vnd.example.bundle"),
            Some(idx_ann),
        ),
        desc_json(OCI_INDEX, &idx2, None, None),
    ]);
    let r = referrers(&reg, &name, &sd.digest, None).await;
    assert_eq!(header(&r, "oci-filters-applied"), None);
    let got = normalize(referrer_descs(r).await);
    assert_eq!(got, want);

    // filter
    let r = referrers(
        &reg,
        &name,
        &sd.digest,
        Some("application/vnd.example.sbom.v1"),
    )
    .await;
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let got = normalize(referrer_descs(r).await);
    assert_eq!(
        got,
        vec![
            want.iter()
                .find(|d| d["digest"] == json!(sha256(&sbom)))
                .unwrap()
                .clone()
        ]
    );

    // filter matching the config-mediaType fallback
    let r = referrers(
        &reg,
        &name,
        &sd.digest,
        Some("application/vnd.example.signature.config.v1+json"),
    )
    .await;
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let got = referrer_descs(r).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["digest"], json!(sha256(&sig)));

    // filter matching nothing
    let r = referrers(&reg, &name, &sd.digest, Some("application/x-nothing")).await;
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    assert!(referrer_descs(r).await.is_empty());
}

#[tokio::test]
async fn referrers_before_subject_exists_and_after_delete() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("refs-order");
    // subject is never pushed
    let ghost = Desc::new(OCI_MANIFEST, &unique_bytes("ghost subject"));
    let (a, ad) = reg
        .push_artifact(
            &name,
            None,
            Some("application/vnd.example.a"),
            OCI_EMPTY,
            Some(&ghost),
            None,
        )
        .await;
    let (_b, bd) = reg
        .push_artifact(
            &name,
            Some("b"),
            Some("application/vnd.example.b"),
            OCI_EMPTY,
            Some(&ghost),
            None,
        )
        .await;
    let got = referrer_descs(referrers(&reg, &name, &ghost.digest, None).await).await;
    let mut digests: Vec<&str> = got.iter().map(|d| d["digest"].as_str().unwrap()).collect();
    digests.sort();
    let mut want = vec![ad.as_str(), bd.as_str()];
    want.sort();
    assert_eq!(digests, want);
    assert_eq!(
        got.iter().find(|d| d["digest"] == json!(ad)).unwrap()["size"],
        json!(a.len())
    );

    // delete one referrer by digest
    assert_eq!(
        reg.delete(&format!("/v2/{name}/manifests/{ad}"))
            .await
            .status(),
        202
    );
    let got = referrer_descs(referrers(&reg, &name, &ghost.digest, None).await).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["digest"], json!(bd));
    // deleting only the tag of the other one keeps it listed (manifest still exists)
    assert_eq!(
        reg.delete(&format!("/v2/{name}/manifests/b"))
            .await
            .status(),
        202
    );
    let got = referrer_descs(referrers(&reg, &name, &ghost.digest, None).await).await;
    assert_eq!(got.len(), 1);
    // deleting it by digest empties the list
    assert_eq!(
        reg.delete(&format!("/v2/{name}/manifests/{bd}"))
            .await
            .status(),
        202
    );
    assert!(
        referrer_descs(referrers(&reg, &name, &ghost.digest, None).await)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn referrers_scoped_to_repo() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let a = repo("refs-scope-a");
    let b = repo("refs-scope-b");
    let subject = reg.push_image(&a, "s").await;
    reg.push_manifest(&b, "s", OCI_MANIFEST, &{
        // make the same subject exist in b too
        for blob in std::iter::once(&subject.config).chain(subject.layers.iter()) {
            let data = reg
                .get_blob(&a, &blob.digest)
                .await
                .bytes()
                .await
                .unwrap()
                .to_vec();
            reg.push_blob(&b, &data).await;
        }
        subject.manifest.clone()
    })
    .await;
    reg.push_artifact(
        &a,
        None,
        Some("application/vnd.example.a"),
        OCI_EMPTY,
        Some(&subject.desc()),
        None,
    )
    .await;
    assert_eq!(
        referrer_descs(referrers(&reg, &a, &subject.digest, None).await)
            .await
            .len(),
        1
    );
    assert!(
        referrer_descs(referrers(&reg, &b, &subject.digest, None).await)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn referrers_unknown_subject_and_invalid_digest() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("refs-unknown");
    reg.push_image(&name, "x").await;
    let r = referrers(&reg, &name, &sha256(b"nothing refers to me"), None).await;
    assert!(referrer_descs(r).await.is_empty());
    for bad in [
        "sha256:xyz",
        "notadigest",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "latest",
    ] {
        let r = referrers(&reg, &name, bad, None).await;
        let st = expect_error_any(r, &["DIGEST_INVALID", "MANIFEST_INVALID", "NAME_INVALID"]).await;
        assert_eq!(st, 400, "{bad}");
    }
}

#[tokio::test]
async fn referrers_of_sha512_subject() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("refs-sha512");
    let ghost = Desc {
        media_type: OCI_MANIFEST.into(),
        digest: sha512(b"ghost"),
        size: 5,
    };
    let (_, d) = reg
        .push_artifact(
            &name,
            None,
            Some("application/vnd.example.a"),
            OCI_EMPTY,
            Some(&ghost),
            None,
        )
        .await;
    let got = referrer_descs(referrers(&reg, &name, &ghost.digest, None).await).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["digest"], json!(d));
}
