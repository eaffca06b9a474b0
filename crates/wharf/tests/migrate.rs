//! `wharf migrate --from-distribution`: images pushed with skopeo into
//! Debian's reference registry (CNCF Distribution), migrated offline into a
//! Wharf data directory, then pulled back from `wharf serve` byte for byte.
//!
//! Needs /usr/bin/docker-registry (or DOCKER_REGISTRY_BIN), skopeo and
//! python3; each test skips itself with a note when one is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ACCEPT_ALL, DOCKER_MANIFEST, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, client, sha256};
use serde_json::{Value, json};

fn registry_bin() -> PathBuf {
    std::env::var_os("DOCKER_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether the tools are installed; prints a skip note if not.
fn tools_present() -> bool {
    let ok = registry_bin().exists() && have("skopeo") && have("python3");
    if !ok {
        eprintln!("skipped: needs docker-registry, skopeo and python3 (tests/e2e/install.sh)");
    }
    ok
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// A child process killed on drop.
struct Proc {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Proc {
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let c = client();
        loop {
            if let Ok(r) = c.get(format!("{}/v2/", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "{} exited early ({status}):\n{}",
                    self.base,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer /v2/:\n{}",
                self.base,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Distribution with filesystem storage at `root`.
async fn start_distribution(work: &Path, root: &Path) -> Proc {
    let port = free_port();
    let config = work.join("distribution.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        ),
    )
    .unwrap();
    let log = work.join("distribution.log");
    let logf = std::fs::File::create(&log).unwrap();
    let child = Command::new(registry_bin())
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("spawn docker-registry");
    let mut p = Proc {
        child: Some(child),
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    p.wait_ready().await;
    p
}

async fn start_wharf(work: &Path, data: &Path) -> Proc {
    let port = free_port();
    let log = work.join("wharf.log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(&k);
        }
    }
    let child = cmd
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("spawn wharf");
    let mut p = Proc {
        child: Some(child),
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    p.wait_ready().await;
    p
}

/// Write an OCI layout with tests/e2e/helpers/oci_layout.py; returns its summary.
fn layout(args: &[&str]) -> Value {
    let helper =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/helpers/oci_layout.py");
    let out = Command::new("python3")
        .arg(helper)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "oci_layout.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn skopeo_copy(extra: &[&str], src: &str, dest: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .args(extra)
        .args([src, dest])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {src} {dest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wharf_migrate(args: &[&str]) -> (Output, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(&k);
        }
    }
    let out = cmd
        .arg("migrate")
        .args(args)
        .arg("--json")
        .output()
        .expect("wharf migrate");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "wharf migrate {args:?}: no JSON report ({e}); status {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

/// Everything a registry holds for some repositories, read over HTTP.
#[derive(Debug, Default, PartialEq)]
struct Snapshot {
    /// repo -> tag -> digest
    tags: BTreeMap<String, BTreeMap<String, String>>,
    /// (repo, digest) -> (content type, bytes)
    manifests: BTreeMap<(String, String), (String, Vec<u8>)>,
    /// (repo, digest) -> bytes
    blobs: BTreeMap<(String, String), Vec<u8>>,
}

async fn get(base: &str, path: &str) -> reqwest::Response {
    client()
        .get(format!("{base}{path}"))
        .header("Accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap()
}

/// Read `repo:tag` and everything below it (children, config, layers).
async fn snapshot(base: &str, refs: &[(&str, &str)]) -> Snapshot {
    let mut s = Snapshot::default();
    for (repo, tag) in refs {
        let r = get(base, &format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), 200, "{base} {repo}:{tag}");
        let digest = r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        s.tags
            .entry(repo.to_string())
            .or_default()
            .insert(tag.to_string(), digest.clone());
        let mut todo = vec![digest];
        while let Some(d) = todo.pop() {
            if s.manifests.contains_key(&(repo.to_string(), d.clone())) {
                continue;
            }
            let r = get(base, &format!("/v2/{repo}/manifests/{d}")).await;
            assert_eq!(r.status(), 200, "{base} {repo}@{d}");
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            let body = r.bytes().await.unwrap().to_vec();
            assert_eq!(sha256(&body), d);
            let m: Value = serde_json::from_slice(&body).unwrap();
            for child in m["manifests"].as_array().into_iter().flatten() {
                todo.push(child["digest"].as_str().unwrap().to_owned());
            }
            let blobs = m["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&m["config"]).filter(|c| c.is_object()));
            for b in blobs {
                let bd = b["digest"].as_str().unwrap().to_owned();
                let r = get(base, &format!("/v2/{repo}/blobs/{bd}")).await;
                assert_eq!(r.status(), 200, "{base} {repo} blob {bd}");
                let bytes = r.bytes().await.unwrap().to_vec();
                assert_eq!(sha256(&bytes), bd);
                s.blobs.insert((repo.to_string(), bd), bytes);
            }
            s.manifests.insert((repo.to_string(), d), (ct, body));
        }
    }
    s
}

/// Push one blob to a registry (POST then PUT with the digest).
async fn push_blob(base: &str, repo: &str, data: &[u8]) -> String {
    let c = client();
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let loc = if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc
    };
    let d = sha256(data);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={d}"))
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "blob PUT");
    d
}

fn problem_kinds(report: &Value) -> Vec<(String, String)> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["item"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Path of a blob's data file in Distribution's storage.
fn dist_blob(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    root.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[tokio::test]
async fn migrates_everything_byte_for_byte() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    std::fs::create_dir_all(work.join("dist")).unwrap();
    let dist_root = work.join("dist").canonicalize().unwrap();
    let w = |p: &str| work.join(p).display().to_string();

    let img = layout(&[
        "image",
        &w("img"),
        "--ref",
        "v1",
        "--text",
        "one",
        "--random-kib",
        "96",
    ]);
    let img2 = layout(&[
        "image",
        &w("img2"),
        "--ref",
        "v1",
        "--text",
        "two",
        "--random-kib",
        "8",
    ]);
    let idx = layout(&[
        "index",
        &w("idx"),
        "--ref",
        "multi",
        "--archs",
        "amd64,arm64",
        "--text",
        "multi",
    ]);

    let mut dist = start_distribution(work, &dist_root).await;
    let host = dist.base.trim_start_matches("http://").to_owned();
    let dest = |r: &str| format!("docker://{host}/{r}");
    let img_src = format!("oci:{}:v1", w("img"));
    skopeo_copy(&[], &img_src, &dest("team/app:v1"));
    skopeo_copy(&[], &img_src, &dest("team/app:latest"));
    skopeo_copy(&[], &img_src, &dest("a/b/c:single"));
    skopeo_copy(
        &["--all"],
        &format!("oci:{}:multi", w("idx")),
        &dest("a/b/c:multi"),
    );
    skopeo_copy(
        &["--all"],
        &format!("oci:{}:multi", w("idx")),
        &dest("a/b/c:stable"),
    );
    skopeo_copy(
        &["--format", "v2s2"],
        &format!("oci:{}:v1", w("img2")),
        &dest("docker/img:v2s2"),
    );

    // An artifact whose subject is team/app:v1, pushed by digest (no tag).
    let subject_digest = img["top"]["digest"].as_str().unwrap().to_owned();
    let subject_size = img["top"]["size"].as_u64().unwrap();
    let empty = push_blob(&dist.base, "team/app", b"{}").await;
    let art = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": OCI_EMPTY, "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
    }))
    .unwrap();
    let art_digest = sha256(&art);
    let r = client()
        .put(format!("{}/v2/team/app/manifests/{art_digest}", dist.base))
        .header("Content-Type", OCI_MANIFEST)
        .body(art.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "artifact push to distribution");

    let refs = [
        ("team/app", "v1"),
        ("team/app", "latest"),
        ("a/b/c", "single"),
        ("a/b/c", "multi"),
        ("a/b/c", "stable"),
        ("docker/img", "v2s2"),
    ];
    let before = snapshot(&dist.base, &refs).await;
    dist.stop();

    // What skopeo pushed is what Distribution holds.
    assert_eq!(before.tags["team/app"]["v1"], subject_digest);
    assert_eq!(
        before.tags["a/b/c"]["multi"],
        idx["top"]["digest"].as_str().unwrap()
    );
    let v2s2 = &before.tags["docker/img"]["v2s2"];
    assert_eq!(
        before.manifests[&("docker/img".to_owned(), v2s2.clone())].0,
        DOCKER_MANIFEST
    );
    assert_ne!(v2s2, img2["top"]["digest"].as_str().unwrap());
    assert_eq!(before.manifests.len(), 6, "{:?}", before.manifests.keys());

    // A dry run reads everything and writes nothing.
    let dry_dir = work.join("dry");
    let (out, report) = wharf_migrate(&[
        "--from-distribution",
        &dist_root.display().to_string(),
        "--data-dir",
        &dry_dir.display().to_string(),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["dry_run"], true);
    assert!(!dry_dir.exists(), "dry run created the data dir");
    let dry_counts = (
        report["manifests"].clone(),
        report["tags"].clone(),
        report["blobs"]["count"].clone(),
    );

    // The migration.
    let data = work.join("wharf");
    let (out, report) = wharf_migrate(&[
        "--from-distribution",
        &dist_root.display().to_string(),
        "--data-dir",
        &data.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["problems"], json!([]));
    let names: Vec<&str> = report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a/b/c", "docker/img", "team/app"]);
    // manifests: a/b/c 1+1+2, docker/img 1, team/app 1+1 (the artifact)
    assert_eq!(report["manifests"], 7);
    assert_eq!(report["tags"], 6);
    assert_eq!(
        dry_counts,
        (
            report["manifests"].clone(),
            report["tags"].clone(),
            report["blobs"]["count"].clone()
        )
    );
    let mut distinct_blobs: BTreeSet<&String> = before.blobs.keys().map(|(_, d)| d).collect();
    distinct_blobs.insert(&empty); // the artifact's config and layer
    assert_eq!(report["blobs"]["count"], distinct_blobs.len());
    assert_eq!(
        report["blobs"]["linked"],
        distinct_blobs.len(),
        "same filesystem: hard links"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[3/3] team/app"), "progress: {stderr}");
    // Hard linked: the source file now has a second name.
    for d in &distinct_blobs {
        assert_eq!(
            std::fs::metadata(dist_blob(&dist_root, d)).unwrap().nlink(),
            2,
            "{d}"
        );
    }

    // Pull everything back from Wharf.
    let wharf = start_wharf(work, &data).await;
    let after = snapshot(&wharf.base, &refs).await;
    assert_eq!(after.tags, before.tags);
    assert_eq!(after.blobs, before.blobs);
    assert_eq!(
        after.manifests.keys().collect::<Vec<_>>(),
        before.manifests.keys().collect::<Vec<_>>()
    );
    for (k, (ct, body)) in &before.manifests {
        let (ct2, body2) = &after.manifests[k];
        assert_eq!(body2, body, "{k:?}");
        assert_eq!(ct2, ct, "{k:?}");
    }
    assert_eq!(
        after.manifests[&("a/b/c".to_owned(), before.tags["a/b/c"]["multi"].clone())].0,
        OCI_INDEX
    );
    // The artifact, by digest, and the referrers index.
    let r = get(&wharf.base, &format!("/v2/team/app/manifests/{art_digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), art);
    let r = get(
        &wharf.base,
        &format!("/v2/team/app/referrers/{subject_digest}"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"][0]["digest"], json!(art_digest));
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    // Catalog and tag lists.
    let v: Value = get(&wharf.base, "/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        json!(["a/b/c", "docker/img", "team/app"])
    );
    let v: Value = get(&wharf.base, "/v2/a/b/c/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["multi", "single", "stable"]));
    let v: Value = get(&wharf.base, "/v2/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["latest", "v1"]));
    // Blobs are per repository: team/app does not hold the index's layers.
    let (_, some_layer) = before
        .blobs
        .keys()
        .find(|(r, d)| {
            r == "a/b/c"
                && !before
                    .blobs
                    .contains_key(&("team/app".to_owned(), d.clone()))
        })
        .unwrap();
    assert_eq!(
        get(&wharf.base, &format!("/v2/team/app/blobs/{some_layer}"))
            .await
            .status(),
        404
    );
    drop(wharf);

    // Running it again changes nothing and is fine.
    let (out, report) = wharf_migrate(&[
        "--from-distribution",
        &dist_root.display().to_string(),
        "--data-dir",
        &data.display().to_string(),
        "--copy",
    ]);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["blobs"]["already_present"], distinct_blobs.len());
    assert_eq!(report["blobs"]["copied"], 0);
    assert_eq!(report["manifests"], 7);
    let wharf = start_wharf(work, &data).await;
    assert_eq!(snapshot(&wharf.base, &refs).await, after);
}

#[tokio::test]
async fn corrupt_source_is_reported_and_the_rest_migrated() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    std::fs::create_dir_all(work.join("dist")).unwrap();
    let dist_root = work.join("dist").canonicalize().unwrap();
    let w = |p: &str| work.join(p).display().to_string();

    let good = layout(&[
        "image",
        &w("good"),
        "--ref",
        "v1",
        "--text",
        "good",
        "--random-kib",
        "4",
    ]);
    layout(&[
        "image",
        &w("gone"),
        "--ref",
        "v1",
        "--text",
        "gone",
        "--random-kib",
        "4",
    ]);
    layout(&[
        "image",
        &w("bad"),
        "--ref",
        "v1",
        "--text",
        "bad",
        "--random-kib",
        "4",
    ]);
    layout(&[
        "index",
        &w("idx"),
        "--ref",
        "multi",
        "--archs",
        "amd64,arm64",
        "--text",
        "idx",
        "--random-kib",
        "4",
    ]);

    let mut dist = start_distribution(work, &dist_root).await;
    let host = dist.base.trim_start_matches("http://").to_owned();
    let dest = |r: &str| format!("docker://{host}/{r}");
    skopeo_copy(&[], &format!("oci:{}:v1", w("good")), &dest("good/app:v1"));
    skopeo_copy(
        &[],
        &format!("oci:{}:v1", w("gone")),
        &dest("broken/missing:v1"),
    );
    skopeo_copy(
        &[],
        &format!("oci:{}:v1", w("bad")),
        &dest("broken/corrupt:v1"),
    );
    skopeo_copy(
        &["--all"],
        &format!("oci:{}:multi", w("idx")),
        &dest("good/multi:multi"),
    );
    let missing_snap = snapshot(&dist.base, &[("broken/missing", "v1")]).await;
    let corrupt_snap = snapshot(&dist.base, &[("broken/corrupt", "v1")]).await;
    let before = snapshot(&dist.base, &[("good/app", "v1"), ("good/multi", "multi")]).await;
    dist.stop();

    let layer_of = |s: &Snapshot| -> String {
        let (_, body) = s.manifests.values().next().unwrap();
        let m: Value = serde_json::from_slice(body).unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_owned()
    };
    // 1. a blob whose data file is gone
    let missing_layer = layer_of(&missing_snap);
    std::fs::remove_file(dist_blob(&dist_root, &missing_layer)).unwrap();
    // 2. a blob whose content was changed
    let corrupt_layer = layer_of(&corrupt_snap);
    std::fs::write(dist_blob(&dist_root, &corrupt_layer), b"not the layer").unwrap();
    // 3. a tag naming a manifest that does not exist
    let ghost = sha256(b"no such manifest");
    let repo_dir = dist_root.join("docker/registry/v2/repositories/good/app");
    std::fs::create_dir_all(repo_dir.join("_manifests/tags/ghost/current")).unwrap();
    std::fs::write(repo_dir.join("_manifests/tags/ghost/current/link"), &ghost).unwrap();
    // 4. a manifest revision whose content is not a manifest
    let junk = b"this is not json".to_vec();
    let junk_digest = sha256(&junk);
    let junk_path = dist_blob(&dist_root, &junk_digest);
    std::fs::create_dir_all(junk_path.parent().unwrap()).unwrap();
    std::fs::write(&junk_path, &junk).unwrap();
    let rev = repo_dir
        .join("_manifests/revisions/sha256")
        .join(junk_digest.trim_start_matches("sha256:"));
    std::fs::create_dir_all(&rev).unwrap();
    std::fs::write(rev.join("link"), &junk_digest).unwrap();
    // 5. a layer link holding garbage
    let garbage = repo_dir.join("_layers/sha256").join("ab".repeat(32));
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("link"), "garbage").unwrap();

    let missing_manifest = missing_snap.tags["broken/missing"]["v1"].clone();
    let corrupt_manifest = corrupt_snap.tags["broken/corrupt"]["v1"].clone();
    let expected: BTreeSet<(String, String)> = [
        ("missing_blob", missing_layer.as_str()),
        ("digest_mismatch", corrupt_layer.as_str()),
        ("dangling_link", "ghost"),
        ("unreadable_manifest", junk_digest.as_str()),
        ("dangling_link", &format!("sha256:{}", "ab".repeat(32))),
        ("incomplete_manifest", missing_manifest.as_str()),
        ("incomplete_manifest", corrupt_manifest.as_str()),
        ("skipped_tag", "v1"),
        ("skipped_tag", "v1"),
    ]
    .iter()
    .map(|(k, i)| (k.to_string(), i.to_string()))
    .collect();

    let src = dist_root.display().to_string();
    let (out, dry) = wharf_migrate(&[
        "--from-distribution",
        &src,
        "--data-dir",
        &w("dry"),
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(1), "{dry}");
    let data = work.join("wharf");
    let (out, report) = wharf_migrate(&[
        "--from-distribution",
        &src,
        "--data-dir",
        &data.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let got: Vec<(String, String)> = problem_kinds(&report);
    assert_eq!(got.len(), 9, "{report:#}");
    assert_eq!(
        got.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{report:#}"
    );
    assert_eq!(problem_kinds(&dry), got, "dry run finds the same problems");
    // Each problem names its repository and the source file where there is one.
    let missing = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "missing_blob")
        .unwrap();
    assert_eq!(missing["repository"], "broken/missing");
    assert_eq!(
        missing["path"],
        dist_blob(&dist_root, &missing_layer).display().to_string()
    );
    // The text report lists them too.
    let text = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["migrate", "-q", "--from-distribution", &src, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("9 problems"), "{text}");
    assert!(
        text.contains(&format!("digest_mismatch broken/corrupt {corrupt_layer}")),
        "{text}"
    );

    // The good content is all there; nothing unverified is served.
    let wharf = start_wharf(work, &data).await;
    let after = snapshot(&wharf.base, &[("good/app", "v1"), ("good/multi", "multi")]).await;
    assert_eq!(after, before);
    assert_eq!(
        good["top"]["digest"].as_str().unwrap(),
        after.tags["good/app"]["v1"]
    );
    let v: Value = get(&wharf.base, "/v2/good/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["v1"]));
    for (repo, d) in [
        ("broken/missing", &missing_manifest),
        ("broken/corrupt", &corrupt_manifest),
    ] {
        assert_eq!(
            get(&wharf.base, &format!("/v2/{repo}/manifests/v1"))
                .await
                .status(),
            404
        );
        assert_eq!(
            get(&wharf.base, &format!("/v2/{repo}/manifests/{d}"))
                .await
                .status(),
            404
        );
    }
    assert_eq!(
        get(
            &wharf.base,
            &format!("/v2/broken/corrupt/blobs/{corrupt_layer}")
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        get(
            &wharf.base,
            &format!("/v2/broken/missing/blobs/{missing_layer}")
        )
        .await
        .status(),
        404
    );
    // The intact blobs of the broken repositories (their configs) did come over.
    let (_, cfg) = corrupt_snap
        .blobs
        .keys()
        .find(|(_, d)| d != &corrupt_layer)
        .unwrap();
    assert_eq!(
        get(&wharf.base, &format!("/v2/broken/corrupt/blobs/{cfg}"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn move_mode_empties_the_source_and_refuses_missing_source() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    std::fs::create_dir_all(work.join("dist")).unwrap();
    let dist_root = work.join("dist").canonicalize().unwrap();
    let w = |p: &str| work.join(p).display().to_string();
    layout(&[
        "image",
        &w("img"),
        "--ref",
        "v1",
        "--text",
        "mv",
        "--random-kib",
        "4",
    ]);
    let mut dist = start_distribution(work, &dist_root).await;
    let host = dist.base.trim_start_matches("http://").to_owned();
    skopeo_copy(
        &[],
        &format!("oci:{}:v1", w("img")),
        &format!("docker://{host}/mv/app:v1"),
    );
    let before = snapshot(&dist.base, &[("mv/app", "v1")]).await;
    dist.stop();

    let data = work.join("wharf");
    let (out, report) = wharf_migrate(&[
        "--from-distribution",
        &dist_root.display().to_string(),
        "--data-dir",
        &data.display().to_string(),
        "--move",
    ]);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["blobs"]["moved"], 2);
    for (_, d) in before.blobs.keys() {
        assert!(
            !dist_blob(&dist_root, d).exists(),
            "{d} still in the source"
        );
    }
    let wharf = start_wharf(work, &data).await;
    assert_eq!(snapshot(&wharf.base, &[("mv/app", "v1")]).await, before);

    // No Distribution storage there: a clear error, exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["migrate", "--from-distribution"])
        .arg(work.join("nothing"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Distribution storage"));
}
