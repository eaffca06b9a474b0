//! `wharf serve --from`: OCI layouts, oci-archives and docker-save tarballs
//! served read-only and in place, beside normal writable repositories.
//! Fixtures are written at test time (tests/serve_from_support), including
//! hostile ones.

mod common;
mod serve_from_support;

use common::{DOCKER_MANIFEST, OCI_MANIFEST, Registry, assert_error, header, json_body, sha256};
use reqwest::Method;
use serde_json::Value;
use serve_from_support::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

async fn start(args: &[String]) -> Registry {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Registry::start_with(&a)
        .await
        .expect("needs a locally spawned wharf")
}

/// `wharf serve` with `args` must refuse to start; returns its stderr.
fn refuses(args: &[String]) -> String {
    let data = tempfile::tempdir().unwrap();
    refuses_in(data.path(), args)
}

fn refuses_in(data: &Path, args: &[String]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(&k);
        }
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!st.success(), "wharf serve {args:?} started: {stderr}");
            return stderr;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wharf serve {args:?} kept running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn body(r: reqwest::Response) -> Vec<u8> {
    r.bytes().await.unwrap().to_vec()
}

async fn manifest(reg: &Registry, repo: &str, reference: &str) -> (String, String, Vec<u8>) {
    let r = reg
        .get_m(&format!("/v2/{repo}/manifests/{reference}"))
        .await;
    assert_eq!(r.status(), 200, "{repo}:{reference}: {}", reg.logs());
    let d = header(&r, "docker-content-digest").unwrap();
    let ct = header(&r, "content-type").unwrap();
    let b = body(r).await;
    assert_eq!(sha256(&b), d, "digest header of {repo}:{reference}");
    (d, ct, b)
}

async fn blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let r = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.status(), 200, "{repo} blob {digest}: {}", reg.logs());
    body(r).await
}

fn layer_digests(m: &[u8]) -> Vec<(String, String, u64)> {
    let v: Value = serde_json::from_slice(m).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_owned(),
                l["mediaType"].as_str().unwrap().to_owned(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn layout_oci_archive_and_docker_save_served_beside_a_writable_repo() {
    let work = tempfile::tempdir().unwrap();
    // An OCI layout tagged with a bare tag: the repository comes from --as.
    let lay = work.path().join("layout");
    let limg = Image::new("layout", 2);
    let (ld, lm, lstored) = layout(&lay, "v1", &limg);
    // An oci-archive whose ref.name is a full name.
    let oa_dir = work.path().join("oa");
    let oimg = Image::new("ociarchive", 1);
    let (od, om, _) = layout(&oa_dir, "team/oa:2.0", &oimg);
    let oa = work.path().join("oa.tar");
    tar_dir(&oa_dir, &oa);
    // A docker-save tarball (legacy layout, uncompressed layers).
    let dimg = Image::new("docker", 2);
    let ds = work.path().join("docker.tar");
    docker_save(
        &ds,
        &[(&dimg, vec!["team/dock:1.0", "team/dock:latest"])],
        Style::Legacy,
    );

    let reg = start(&[
        "--from".into(),
        arg(&lay),
        "--as".into(),
        "team/lay".into(),
        "--from".into(),
        arg(&oa),
        "--from".into(),
        arg(&ds),
    ])
    .await;

    // A normal repository on the same server still takes pushes.
    let pushed = reg.push_image("team/rw", "v1").await;
    let (d, _, _) = manifest(&reg, "team/rw", "v1").await;
    assert_eq!(d, pushed.digest);

    // Catalog and tags.
    let cat = json_body(reg.get("/v2/_catalog").await).await;
    assert_eq!(
        cat["repositories"],
        serde_json::json!(["team/dock", "team/lay", "team/oa", "team/rw"])
    );
    let r = reg.get("/v2/_catalog?n=2").await;
    assert!(header(&r, "link").is_some());
    assert_eq!(
        json_body(r).await["repositories"],
        serde_json::json!(["team/dock", "team/lay"])
    );
    let r = reg.get("/v2/_catalog?n=2&last=team/lay").await;
    assert_eq!(
        json_body(r).await["repositories"],
        serde_json::json!(["team/oa", "team/rw"])
    );
    let tags = json_body(reg.get("/v2/team/dock/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["1.0", "latest"]));
    let tags = json_body(reg.get("/v2/team/lay/tags/list?n=1").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    // The OCI layout and archive: manifests byte for byte, blobs as stored.
    let (d, ct, b) = manifest(&reg, "team/lay", "v1").await;
    assert_eq!(
        (d.as_str(), ct.as_str(), &b),
        (ld.as_str(), OCI_MANIFEST, &lm)
    );
    let (d, _, b) = manifest(&reg, "team/lay", &ld).await;
    assert_eq!((d, b), (ld.clone(), lm.clone()));
    assert_eq!(
        blob(&reg, "team/lay", &limg.config_digest()).await,
        limg.config
    );
    for (l, stored) in layer_digests(&lm).iter().zip(&lstored) {
        assert_eq!(&blob(&reg, "team/lay", &l.0).await, stored);
    }
    let (d, _, b) = manifest(&reg, "team/oa", "2.0").await;
    assert_eq!((d, b), (od.clone(), om.clone()));
    assert_eq!(
        blob(&reg, "team/oa", &oimg.config_digest()).await,
        oimg.config
    );

    // docker-save: a Docker schema 2 manifest whose config is the config
    // as stored (its digest is the image ID) and whose layers are the
    // layer files as stored, which are the config's diff_ids.
    let (dd, ct, dm) = manifest(&reg, "team/dock", "1.0").await;
    assert_eq!(ct, DOCKER_MANIFEST);
    let v: Value = serde_json::from_slice(&dm).unwrap();
    assert_eq!(v["config"]["digest"], dimg.config_digest().as_str());
    assert_eq!(
        v["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    let layers = layer_digests(&dm);
    assert_eq!(
        layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
        dimg.diff_ids()
    );
    for (l, data) in layers.iter().zip(&dimg.layers) {
        assert_eq!(l.1, "application/vnd.docker.image.rootfs.diff.tar");
        assert_eq!(l.2, data.len() as u64);
        assert_eq!(&blob(&reg, "team/dock", &l.0).await, data);
    }
    assert_eq!(
        blob(&reg, "team/dock", &dimg.config_digest()).await,
        dimg.config
    );
    let (d2, _, _) = manifest(&reg, "team/dock", "latest").await;
    assert_eq!(d2, dd);

    // HEAD and ranges of a blob that is a byte range of the tarball.
    let l0 = &layers[0].0;
    let r = reg
        .req(Method::HEAD, &format!("/v2/team/dock/blobs/{l0}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-length").unwrap(),
        dimg.layers[0].len().to_string()
    );
    assert_eq!(header(&r, "docker-content-digest").unwrap(), *l0);
    let r = reg
        .req(Method::GET, &format!("/v2/team/dock/blobs/{l0}"))
        .header("Range", "bytes=100-611")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "content-range").unwrap(),
        format!("bytes 100-611/{}", dimg.layers[0].len())
    );
    assert_eq!(body(r).await, dimg.layers[0][100..612].to_vec());
    let r = reg
        .req(Method::GET, &format!("/v2/team/dock/blobs/{l0}"))
        .header("Range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let n = dimg.layers[0].len();
    assert_eq!(body(r).await, dimg.layers[0][n - 10..].to_vec());
    let r = reg
        .req(Method::GET, &format!("/v2/team/dock/blobs/{l0}"))
        .header("Range", format!("bytes={n}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    // Repository isolation: source blobs are not readable elsewhere, and a
    // source repository does not show the store's blobs or others'.
    let r = reg.get(&format!("/v2/team/rw/blobs/{l0}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN").await;
    let r = reg.get(&format!("/v2/team/lay/blobs/{l0}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN").await;
    let r = reg
        .get(&format!("/v2/team/dock/blobs/{}", pushed.config.digest))
        .await;
    assert_error(r, 404, "BLOB_UNKNOWN").await;
    let r = reg.get("/v2/team/dock/manifests/nope").await;
    assert_error(r, 404, "MANIFEST_UNKNOWN").await;
    // Mounting a source blob into a writable repository is not a mount.
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/team/rw/blobs/uploads/?mount={l0}&from=team/dock"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "a source blob was mounted");

    // Referrers: an empty index.
    let r = reg.get(&format!("/v2/team/dock/referrers/{dd}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await["manifests"], serde_json::json!([]));

    // Writes are refused, naming the file the repository is served from.
    let ds_name = arg(&ds);
    let checks: Vec<(Method, String)> = vec![
        (Method::PUT, "/v2/team/dock/manifests/new".into()),
        (Method::DELETE, format!("/v2/team/dock/manifests/{dd}")),
        (Method::DELETE, "/v2/team/dock/manifests/1.0".into()),
        (Method::DELETE, format!("/v2/team/dock/blobs/{l0}")),
        (Method::POST, "/v2/team/dock/blobs/uploads/".into()),
        (
            Method::POST,
            format!(
                "/v2/team/dock/blobs/uploads/?mount={}&from=team/rw",
                pushed.config.digest
            ),
        ),
        (
            Method::PUT,
            "/v2/team/dock/blobs/uploads/7d1c6f1e-0000-4000-8000-000000000000?digest=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        ),
    ];
    for (m, p) in checks {
        let r = reg
            .req(m.clone(), &p)
            .header("Content-Type", DOCKER_MANIFEST)
            .body(dm.clone())
            .send()
            .await
            .unwrap();
        let st = r.status();
        let v = json_body(r).await;
        assert_eq!(st, 403, "{m} {p}: {v}");
        assert_eq!(v["errors"][0]["code"], "DENIED", "{m} {p}");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(&ds_name) && msg.contains("read-only"), "{msg}");
    }
    let r = reg.put_manifest("team/lay", "x", OCI_MANIFEST, &lm).await;
    assert_error(r, 403, "DENIED").await;
    // Still all there afterwards.
    manifest(&reg, "team/dock", "1.0").await;
    manifest(&reg, "team/lay", "v1").await;
}

fn log_count(reg: &Registry, needle: &str) -> usize {
    reg.logs().matches(needle).count()
}

#[tokio::test]
async fn docker_save_gzip_and_blobs_styles_digests_stable_and_cached() {
    let work = tempfile::tempdir().unwrap();
    let gz_img = Image::new("gz", 2);
    let gz = work.path().join("gz.tar");
    docker_save(&gz, &[(&gz_img, vec!["gz/img:1"])], Style::Gzip);
    // docker 25+ style, two images in one tarball sharing nothing.
    let a = Image::new("a", 1);
    let b = Image::new("b", 3);
    let multi = work.path().join("multi.tar");
    docker_save(
        &multi,
        &[
            (&a, vec!["multi/a:1"]),
            (&b, vec!["multi/b:1", "multi/b:2"]),
        ],
        Style::Blobs,
    );

    let mut reg = start(&["--from".into(), arg(&gz), "--from".into(), arg(&multi)]).await;
    let (d1, _, m) = manifest(&reg, "gz/img", "1").await;
    let layers = layer_digests(&m);
    for (l, raw) in layers.iter().zip(&gz_img.layers) {
        // Served as stored (gzip), typed as gzip; the decompressed bytes
        // are the config's diff_id (checked at scan time).
        assert_eq!(l.1, "application/vnd.docker.image.rootfs.diff.tar.gzip");
        let served = blob(&reg, "gz/img", &l.0).await;
        assert_eq!(sha256(&served), l.0);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&served[..]), &mut out)
            .unwrap();
        assert_eq!(out, *raw);
    }
    let (_, _, mb) = manifest(&reg, "multi/b", "2").await;
    assert_eq!(
        layer_digests(&mb)
            .iter()
            .map(|l| l.0.clone())
            .collect::<Vec<_>>(),
        b.diff_ids()
    );
    manifest(&reg, "multi/a", "1").await;
    assert_eq!(log_count(&reg, "hashed_bytes=0"), 0, "{}", reg.logs());

    // Restart: same manifest digest, and nothing is hashed again.
    reg.restart().await;
    let (d2, _, _) = manifest(&reg, "gz/img", "1").await;
    assert_eq!(d1, d2, "the synthesized manifest changed across restarts");
    assert_eq!(log_count(&reg, "hashed_bytes=0"), 2, "{}", reg.logs());

    // The tarball changes (same bytes, new modification time): rehashed.
    let f = std::fs::File::options().append(true).open(&gz).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    reg.restart().await;
    assert_eq!(log_count(&reg, "hashed_bytes=0"), 3, "{}", reg.logs());
    let (d3, _, _) = manifest(&reg, "gz/img", "1").await;
    assert_eq!(d1, d3);
}

#[tokio::test]
async fn a_changed_source_is_never_served_stale_and_is_verified_again() {
    let work = tempfile::tempdir().unwrap();
    let one = Image::new("one", 1);
    let ds = work.path().join("img.tar");
    docker_save(&ds, &[(&one, vec!["app/x:1"])], Style::Legacy);
    let reg = start(&["--from".into(), arg(&ds)]).await;
    let (d1, _, m1) = manifest(&reg, "app/x", "1").await;
    let l1 = layer_digests(&m1)[0].0.clone();
    assert_eq!(blob(&reg, "app/x", &l1).await, one.layers[0]);

    // Overwrite the tarball in place with another image under the same tag.
    let two = Image::new("two", 1);
    let tmp = work.path().join("new.tar");
    docker_save(&tmp, &[(&two, vec!["app/x:1"])], Style::Legacy);
    std::fs::write(&ds, std::fs::read(&tmp).unwrap()).unwrap();

    // The old layer is not served from the changed file.
    let r = reg.get(&format!("/v2/app/x/blobs/{l1}")).await;
    let st = r.status();
    let v = json_body(r).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&arg(&ds)),
        "{v}"
    );
    // It is verified again; then the new image is served.
    let deadline = Instant::now() + Duration::from_secs(30);
    let d2 = loop {
        let (d, _, _) = manifest(&reg, "app/x", "1").await;
        if d != d1 {
            break d;
        }
        assert!(Instant::now() < deadline, "never rescanned: {}", reg.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, _, m2) = manifest(&reg, "app/x", &d2).await;
    let l2 = layer_digests(&m2)[0].0.clone();
    assert_eq!(blob(&reg, "app/x", &l2).await, two.layers[0]);

    // Corrupted in place: the source stops serving, with the reason.
    let mut bytes = std::fs::read(&ds).unwrap();
    let mid = 512 + 100; // inside the first member's data (the config)
    bytes[mid] ^= 0x20;
    std::fs::write(&ds, &bytes).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = reg.get_m("/v2/app/x/manifests/1").await;
        if r.status() == 404 {
            let v = json_body(r).await;
            let msg = v["errors"][0]["message"].as_str().unwrap_or("").to_owned();
            if msg.contains(&arg(&ds)) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "still served: {}", reg.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = reg.get(&format!("/v2/app/x/blobs/{l2}")).await;
    assert_eq!(r.status(), 404);
    // Still read-only.
    let r = reg
        .req(Method::POST, "/v2/app/x/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "DENIED").await;
}

#[tokio::test]
async fn names_as_overrides_and_config_file() {
    let work = tempfile::tempdir().unwrap();
    let img = Image::new("named", 1);
    let ds = work.path().join("d.tar");
    docker_save(
        &ds,
        &[(&img, vec!["docker.io/library/base:3", "base:edge"])],
        Style::Legacy,
    );
    let lay = work.path().join("l");
    layout(&lay, "localhost:5000/some/thing:v9", &Image::new("lay", 1));
    let cfg = work.path().join("wharf.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[sources]]\npath = \"{}\"\nas = \"cfg/named:one\"\n",
            arg(&ds)
        ),
    )
    .unwrap();

    let reg = start(&[
        "--config".into(),
        arg(&cfg),
        // --as REPO keeps the source's tags.
        "--from".into(),
        arg(&ds),
        "--as".into(),
        "renamed".into(),
        "--from".into(),
        arg(&lay),
    ])
    .await;
    let cat = json_body(reg.get("/v2/_catalog").await).await;
    assert_eq!(
        cat["repositories"],
        serde_json::json!(["cfg/named", "renamed", "some/thing"])
    );
    let tags = json_body(reg.get("/v2/renamed/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["3", "edge"]));
    let tags = json_body(reg.get("/v2/cfg/named/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["one"]));
    manifest(&reg, "some/thing", "v9").await;
    // Not served under the source's own names.
    let r = reg.get("/v2/library/base/tags/list").await;
    assert_error(r, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn bad_names_and_conflicts_refuse_to_start() {
    let work = tempfile::tempdir().unwrap();
    let a = Image::new("a", 1);
    let b = Image::new("b", 1);
    let multi = work.path().join("multi.tar");
    docker_save(
        &multi,
        &[(&a, vec!["m/a:1"]), (&b, vec!["m/b:1"])],
        Style::Legacy,
    );
    let err = refuses(&["--from".into(), arg(&multi), "--as".into(), "x:1".into()]);
    assert!(
        err.contains(&arg(&multi)) && err.contains("2 images"),
        "{err}"
    );

    let lay = work.path().join("lay");
    layout(&lay, "v1", &a);
    let err = refuses(&["--from".into(), arg(&lay)]);
    assert!(err.contains(&arg(&lay)) && err.contains("--as"), "{err}");

    let noname = work.path().join("noname.tar");
    docker_save(&noname, &[(&a, vec![])], Style::Legacy);
    let err = refuses(&["--from".into(), arg(&noname)]);
    assert!(
        err.contains(&arg(&noname)) && err.contains("no name"),
        "{err}"
    );

    // Two sources naming one tag for different images.
    let other = work.path().join("other.tar");
    docker_save(&other, &[(&b, vec!["m/a:1"])], Style::Legacy);
    let err = refuses(&["--from".into(), arg(&multi), "--from".into(), arg(&other)]);
    assert!(err.contains("m/a:1") && err.contains(&arg(&other)), "{err}");

    let err = refuses(&["--as".into(), "x".into(), "--from".into(), arg(&lay)]);
    assert!(err.contains("--as"), "{err}");

    // A repository that the data directory already holds.
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("import")
        .arg(&lay)
        .arg("m/a:old")
        .arg("--data-dir")
        .arg(data.path())
        .arg("--no-fsync")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = refuses_in(data.path(), &["--from".into(), arg(&multi)]);
    assert!(
        err.contains("m/a") && err.contains("data directory") && err.contains(&arg(&multi)),
        "{err}"
    );
}

/// Every hostile or broken source stops start-up with an error that names
/// the file and says what is wrong; nothing is served.
#[tokio::test]
async fn hostile_sources_are_refused_naming_the_file() {
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    let img = Image::new("hostile", 2);
    let check = |path: &Path, what: &str| {
        let err = refuses(&["--from".into(), arg(path), "--as".into(), "h/x".into()]);
        assert!(
            err.contains(&arg(path)) && err.contains(what),
            "{} should be refused with {what:?}: {err}",
            path.display()
        );
    };

    // Truncated tarball.
    let t = w("truncated.tar");
    docker_save(&t, &[(&img, vec!["h/x:1"])], Style::Legacy);
    let bytes = std::fs::read(&t).unwrap();
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    check(&t, "truncated");

    // Not a tarball at all.
    let junk = w("junk.tar");
    std::fs::write(&junk, common::pseudo_random(5000, 7)).unwrap();
    let err = refuses(&["--from".into(), arg(&junk)]);
    assert!(err.contains(&arg(&junk)), "{err}");

    // manifest.json garbage.
    let g = w("garbage.tar");
    write_tar(
        &g,
        &[Member::File(
            "manifest.json".into(),
            b"[{\"Config\": 7".to_vec(),
        )],
    );
    check(&g, "manifest.json is not a docker-save manifest");

    // A member whose name climbs out of the archive.
    let mut members = docker_members(&[(&img, vec!["h/x:1"])], Style::Legacy);
    members.insert(0, Member::File("../../evil".into(), b"x".to_vec()));
    let up = w("dotdot.tar");
    write_tar(&up, &members);
    check(&up, "outside the archive");

    // manifest.json naming a path outside the archive.
    let cfg_hex = img.config_digest().trim_start_matches("sha256:").to_owned();
    let esc = w("escape-ref.tar");
    write_tar(
        &esc,
        &[
            Member::File(format!("{cfg_hex}.json"), img.config.clone()),
            Member::File(
                "manifest.json".into(),
                format!(
                    r#"[{{"Config":"{cfg_hex}.json","RepoTags":["h/x:1"],"Layers":["../../../etc/passwd","a/layer.tar"]}}]"#
                )
                .into_bytes(),
            ),
        ],
    );
    check(&esc, "outside the archive");

    // A layer that is a symbolic link out of the archive.
    let mut members = docker_members(&[(&img, vec!["h/x:1"])], Style::Legacy);
    let target = format!("{cfg_hex}00/layer.tar");
    members.retain(|m| !matches!(m, Member::File(n, _) if *n == target));
    members.insert(0, Member::Symlink(target, "../../../etc/passwd".into()));
    let sl = w("symlink.tar");
    write_tar(&sl, &members);
    check(&sl, "outside the archive");

    // manifest.json naming a layer the tarball does not have.
    let mut members = docker_members(&[(&img, vec!["h/x:1"])], Style::Legacy);
    let target = format!("{cfg_hex}01/layer.tar");
    members.retain(|m| !matches!(m, Member::File(n, _) if *n == target));
    let ml = w("missing-layer.tar");
    write_tar(&ml, &members);
    check(&ml, "missing");

    // A layer that is not what the config's diff_ids say.
    let mut members = docker_members(&[(&img, vec!["h/x:1"])], Style::Legacy);
    for m in members.iter_mut() {
        if let Member::File(n, data) = m
            && n.ends_with("00/layer.tar")
        {
            data[700] ^= 1;
        }
    }
    let bad = w("diffid.tar");
    write_tar(&bad, &members);
    check(&bad, "does not match the image config");

    // OCI layout whose layer blob does not match its digest.
    let lay = w("corrupt-layout");
    let (_, m, _) = layout(&lay, "v1", &img);
    let l0 = layer_digests(&m)[0].0.clone();
    let f = blob_file(&lay, &l0);
    let mut data = std::fs::read(&f).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&f, &data).unwrap();
    check(&lay, "does not match its digest");

    // The same as an oci-archive: the tarball is named.
    let oa = w("corrupt.oci.tar");
    tar_dir(&lay, &oa);
    check(&oa, "does not match its digest");

    // OCI layout whose manifest names a blob that is not there.
    let lay = w("missing-blob");
    let (_, m, _) = layout(&lay, "v1", &img);
    let l1 = layer_digests(&m)[1].0.clone();
    std::fs::remove_file(blob_file(&lay, &l1)).unwrap();
    check(&lay, "missing");

    // A corrupt manifest in a layout.
    let lay = w("corrupt-manifest");
    let (d, m, _) = layout(&lay, "v1", &img);
    std::fs::write(blob_file(&lay, &d), &m[..m.len() - 3]).unwrap();
    check(&lay, "does not match its digest");

    // An index naming a child manifest that is missing.
    let lay = w("missing-child");
    std::fs::create_dir_all(&lay).unwrap();
    let ghost = sha256(b"not here");
    let index = common::to_bytes(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": ghost, "size": 8}],
    }));
    let idx_file = lay.join("blobs/sha256");
    std::fs::create_dir_all(&idx_file).unwrap();
    std::fs::write(idx_file.join(&sha256(&index)[7..]), &index).unwrap();
    write_index(
        &lay,
        &[(
            Some("v1"),
            &sha256(&index),
            "application/vnd.oci.image.index.v1+json",
            index.len(),
        )],
    );
    check(&lay, "missing");

    // A directory that is not a layout.
    let empty = w("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    check(&empty, "not an OCI image layout");
}

/// No path component below a layout's directory may be a symbolic link:
/// a `blobs/sha256` (or `blobs`) linked to a host directory would serve
/// every file there whose digest someone knows. Start-up is refused naming
/// the link; the bytes behind it are never served.
#[tokio::test]
async fn layouts_with_symlinked_directories_or_files_are_refused() {
    use std::os::unix::fs::symlink;
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    let img = Image::new("linked", 1);
    let check = |lay: &Path, link: &Path| {
        let err = refuses(&["--from".into(), arg(lay), "--as".into(), "h/x".into()]);
        assert!(
            err.contains(&arg(link)) && err.contains("symbolic link"),
            "{} should be refused naming {}: {err}",
            lay.display(),
            link.display()
        );
    };

    // The attack as reported: manifest and config under blobs/sha512, the
    // layer under blobs/sha256, which is a link to a "host" store.
    let host = w("host-store/blobs/sha256");
    std::fs::create_dir_all(&host).unwrap();
    let layer = gzip(&img.layers[0]);
    let layer_d = sha256(&layer);
    std::fs::write(host.join(&layer_d[7..]), &layer).unwrap();
    let lay = w("sha512-layout");
    std::fs::create_dir_all(lay.join("blobs/sha512")).unwrap();
    let put512 = |data: &[u8]| {
        let d = common::sha512(data);
        std::fs::write(lay.join("blobs/sha512").join(&d[7..]), data).unwrap();
        d
    };
    let config_d = put512(&img.config);
    let m = common::to_bytes(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_d, "size": img.config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_d, "size": layer.len()}],
    }));
    let md = put512(&m);
    write_index(&lay, &[(Some("v1"), &md, OCI_MANIFEST, m.len())]);
    symlink(&host, lay.join("blobs/sha256")).unwrap();
    check(&lay, &lay.join("blobs/sha256"));

    // An ordinary layout whose blobs/sha256 was moved out and linked back.
    let lay = w("linked-alg-dir");
    layout(&lay, "v1", &img);
    let moved = w("elsewhere-sha256");
    std::fs::rename(lay.join("blobs/sha256"), &moved).unwrap();
    symlink(&moved, lay.join("blobs/sha256")).unwrap();
    check(&lay, &lay.join("blobs/sha256"));

    // The same with the whole blobs directory, by a relative link.
    let lay = w("linked-blobs-dir");
    layout(&lay, "v1", &img);
    std::fs::rename(lay.join("blobs"), w("elsewhere-blobs")).unwrap();
    symlink("../elsewhere-blobs", lay.join("blobs")).unwrap();
    check(&lay, &lay.join("blobs"));

    // index.json and oci-layout as links.
    for name in ["index.json", "oci-layout"] {
        let lay = w(&format!("linked-{name}"));
        layout(&lay, "v1", &img);
        let real = w(&format!("real-{name}"));
        std::fs::rename(lay.join(name), &real).unwrap();
        symlink(&real, lay.join(name)).unwrap();
        check(&lay, &lay.join(name));
    }

    // The layout directory itself may be reached through a link.
    let lay = w("plain");
    let (_, m, _) = layout(&lay, "v1", &img);
    let via = w("via-link");
    symlink(&lay, &via).unwrap();
    let reg = start(&["--from".into(), arg(&via), "--as".into(), "h/x".into()]).await;
    let l0 = layer_digests(&m)[0].0.clone();
    let bytes = blob(&reg, "h/x", &l0).await;

    // blobs/sha256 swapped for a link to a "host" store (with a file of
    // the same digest) while served: not served from there, and the
    // layout's new verification refuses it naming the link.
    let store = w("host-store-2/sha256");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join(&l0[7..]), &bytes).unwrap();
    let alg_dir = lay.join("blobs/sha256");
    std::fs::rename(&alg_dir, w("plain-sha256-moved")).unwrap();
    symlink(&store, &alg_dir).unwrap();
    let r = reg.get(&format!("/v2/h/x/blobs/{l0}")).await;
    assert_eq!(r.status(), 404, "served through the link");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = reg.get_m("/v2/h/x/manifests/v1").await;
        if r.status() == 404 {
            let v = json_body(r).await;
            let msg = v["errors"][0]["message"].as_str().unwrap_or("").to_owned();
            if msg.contains(&arg(&alg_dir)) && msg.contains("symbolic link") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "still served: {}", reg.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = reg.get(&format!("/v2/h/x/blobs/{l0}")).await;
    assert_eq!(r.status(), 404);
}

/// A multi-platform index in a layout: the index and its children.
#[tokio::test]
async fn layout_index_and_children_are_served() {
    let work = tempfile::tempdir().unwrap();
    let lay = work.path().join("multi");
    std::fs::create_dir_all(&lay).unwrap();
    let amd = Image::new("amd64", 1);
    let arm = Image::new("arm64", 1);
    let (da, ma, _) = layout_image(&lay, &amd);
    let (db, mb, _) = layout_image(&lay, &arm);
    let index = common::to_bytes(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": da, "size": ma.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": db, "size": mb.len(),
             "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }));
    let di = sha256(&index);
    std::fs::write(blob_file(&lay, &di), &index).unwrap();
    write_index(
        &lay,
        &[(
            Some("all"),
            &di,
            "application/vnd.oci.image.index.v1+json",
            index.len(),
        )],
    );
    let reg = start(&["--from".into(), arg(&lay), "--as".into(), "plat/img".into()]).await;
    let (d, ct, b) = manifest(&reg, "plat/img", "all").await;
    assert_eq!(
        (d.as_str(), ct.as_str()),
        (di.as_str(), "application/vnd.oci.image.index.v1+json")
    );
    assert_eq!(b, index);
    let (d, _, _) = manifest(&reg, "plat/img", &db).await;
    assert_eq!(d, db);
    assert_eq!(
        blob(&reg, "plat/img", &arm.config_digest()).await,
        arm.config
    );
    // A client that only takes image manifests gets linux/amd64.
    let r = reg
        .req(Method::GET, "/v2/plat/img/manifests/all")
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest").unwrap(), da);
}

/// A layout blob deleted while served: a clear 404 naming the file (not a
/// 500), then the layout fails its new verification and serves nothing.
/// A repository that appears in a source only after start-up is not served.
#[tokio::test]
async fn a_layout_losing_a_blob_stops_serving_it() {
    let work = tempfile::tempdir().unwrap();
    let lay = work.path().join("lay");
    let img = Image::new("lose", 1);
    let (_, m, _) = layout(&lay, "lose/me:1", &img);
    let reg = start(&["--from".into(), arg(&lay)]).await;
    let l0 = layer_digests(&m)[0].0.clone();
    blob(&reg, "lose/me", &l0).await;

    // A second image under a new repository name, added to index.json.
    let other = Image::new("other", 1);
    let (d2, m2, _) = layout_image(&lay, &other);
    let (d1, _, _) = manifest(&reg, "lose/me", "1").await;
    write_index(
        &lay,
        &[
            (Some("lose/me:1"), &d1, OCI_MANIFEST, m.len()),
            (Some("lose/me:2"), &d2, OCI_MANIFEST, m2.len()),
            (Some("brand/new:1"), &d2, OCI_MANIFEST, m2.len()),
        ],
    );
    // The new tag of the known repository shows up; the new repository not.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tags = json_body(reg.get("/v2/lose/me/tags/list").await).await;
        if tags["tags"] == serde_json::json!(["1", "2"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new tag never served: {tags} {}",
            reg.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = reg.get("/v2/brand/new/tags/list").await;
    assert_error(r, 404, "NAME_UNKNOWN").await;
    let cat = json_body(reg.get("/v2/_catalog").await).await;
    assert_eq!(cat["repositories"], serde_json::json!(["lose/me"]));

    std::fs::remove_file(blob_file(&lay, &l0)).unwrap();
    let r = reg.get(&format!("/v2/lose/me/blobs/{l0}")).await;
    let st = r.status();
    let v = json_body(r).await;
    assert_eq!(st, 404, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&l0[7..]),
        "{v}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = reg.get_m("/v2/lose/me/manifests/1").await;
        if r.status() == 404 {
            let v = json_body(r).await;
            let msg = v["errors"][0]["message"].as_str().unwrap_or("").to_owned();
            if msg.contains(&arg(&lay)) && msg.contains("missing") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "still served: {}", reg.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `wharf passwd USER` with the password on standard input.
fn htpasswd_line(user: &str, password: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["passwd", user, "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn auth_applies_to_served_images() {
    if common::external_url().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lay = dir.path().join("layout");
    let (d, _, _) = layout(&lay, "v1", &Image::new("auth", 1));
    let ht = dir.path().join("htpasswd");
    std::fs::write(
        &ht,
        htpasswd_line("alice", "a-pw") + &htpasswd_line("bob", "b-pw"),
    )
    .unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nhtpasswd = \"{}\"\n[[auth.policy]]\nrepos = [\"team/**\"]\npull = [\"user:alice\"]\n",
            ht.display()
        ),
    )
    .unwrap();
    let reg = start(&[
        "--config".into(),
        arg(&config),
        "--from".into(),
        arg(&lay),
        "--as".into(),
        "team/served:v1".into(),
    ])
    .await;
    let get = |who: Option<(&str, &str)>, path: String| {
        let mut rb = reg
            .client
            .get(reg.url(&path))
            .header("accept", OCI_MANIFEST);
        if let Some((u, p)) = who {
            rb = rb.basic_auth(u, Some(p));
        }
        rb.send()
    };
    let m = "/v2/team/served/manifests/v1".to_owned();
    assert_eq!(get(None, m.clone()).await.unwrap().status(), 401);
    assert_eq!(
        get(Some(("bob", "b-pw")), m.clone())
            .await
            .unwrap()
            .status(),
        403
    );
    let r = get(Some(("alice", "a-pw")), m).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    // the catalog (store + served images) shows only what the caller may pull
    let cat = |who| {
        let get = &get;
        async move {
            let v: Value = get(Some(who), "/v2/_catalog".into())
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["repositories"].clone()
        }
    };
    assert_eq!(
        cat(("alice", "a-pw")).await,
        serde_json::json!(["team/served"])
    );
    assert_eq!(cat(("bob", "b-pw")).await, serde_json::json!([]));
}
