//! `wharf import`: OCI layouts and docker-archives copied offline into a
//! data directory, then read back from `wharf serve`.
//!
//! Needs python3 (tests/e2e/helpers/oci_layout.py) and, for the
//! docker-archive test, skopeo; tests skip themselves with a note otherwise.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ACCEPT_ALL, client, sha256};
use serde_json::Value;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn tools_present(tools: &[&str]) -> bool {
    let ok = tools.iter().all(|t| have(t));
    if !ok {
        eprintln!("skipped: needs {tools:?}");
    }
    ok
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

fn wharf() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// `wharf serve` on a data directory, killed on drop.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    async fn start(work: &Path, data: &Path) -> Server {
        let port = free_port();
        let log = work.join("wharf.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = wharf()
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
        let mut s = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = client().get(format!("{}/v2/", s.base)).send().await
                && r.status() == 200
            {
                break;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("wharf serve exited ({st}): {}", s.logs());
            }
            assert!(
                Instant::now() < deadline,
                "wharf serve not ready: {}",
                s.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        client()
            .get(format!("{}{path}", self.base))
            .header("Accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write an OCI layout with tests/e2e/helpers/oci_layout.py.
fn layout(dir: &Path, tag: &str, text: &str) {
    let helper =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/helpers/oci_layout.py");
    let out = Command::new("python3")
        .arg(helper)
        .args(["image"])
        .arg(dir)
        .args(["--ref", tag, "--text", text, "--random-kib", "32"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "oci_layout.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn import(args: &[&str], data: &Path) -> Output {
    wharf()
        .arg("import")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--no-fsync")
        .output()
        .expect("wharf import")
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "wharf import failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// The single image of a layout: (manifest digest, manifest bytes).
fn layout_image(dir: &Path) -> (String, Vec<u8>) {
    let index = read_json(&dir.join("index.json"));
    let d = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let bytes = std::fs::read(blob_path(dir, &d)).unwrap();
    (d, bytes)
}

/// Every file under `dir` with its contents, but the data directory's
/// `.lock`, which holds the pid of the last process that had it.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p == dir.join(".lock") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[tokio::test]
async fn layout_import_is_served_and_idempotent() {
    if !tools_present(&["python3"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let data = work.path().join("data");
    layout(&src, "v1", "import me");
    let (digest, bytes) = layout_image(&src);

    let out = import(&[src.to_str().unwrap(), "team/app"], &data);
    assert_ok(&out);
    let before = tree(&data);

    let out = import(&[src.to_str().unwrap(), "team/app"], &data);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 blobs uploaded"), "{stdout}");
    assert!(stdout.contains("2 already present"), "{stdout}");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        tree(&data).keys().collect::<Vec<_>>(),
        "second import changed the set of stored files"
    );
    assert_eq!(before, tree(&data), "second import changed stored files");

    // REPO:TAG override, into a second repository: blobs are shared.
    let out = import(&[src.to_str().unwrap(), "other/name:stable"], &data);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 blobs uploaded"));

    let server = Server::start(work.path(), &data).await;
    for (repo, tag) in [("team/app", "v1"), ("other/name", "stable")] {
        let r = server.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), 200, "{repo}:{tag}: {}", server.logs());
        assert_eq!(
            r.headers()["docker-content-digest"].to_str().unwrap(),
            digest
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        let mut descs = vec![m["config"].clone()];
        descs.extend(m["layers"].as_array().unwrap().iter().cloned());
        for d in descs {
            let bd = d["digest"].as_str().unwrap();
            let r = server.get(&format!("/v2/{repo}/blobs/{bd}")).await;
            assert_eq!(r.status(), 200, "{repo} blob {bd}");
            let body = r.bytes().await.unwrap();
            assert_eq!(sha256(&body), bd);
            assert_eq!(body.as_ref(), std::fs::read(blob_path(&src, bd)).unwrap());
        }
    }
}

#[tokio::test]
async fn corrupt_layout_blob_is_named_and_nothing_is_tagged() {
    if !tools_present(&["python3"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let data = work.path().join("data");
    layout(&src, "v1", "corrupt me");
    let (_, bytes) = layout_image(&src);
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let lp = blob_path(&src, layer);
    let mut content = std::fs::read(&lp).unwrap();
    let mid = content.len() / 2;
    content[mid] ^= 0xff;
    std::fs::write(&lp, &content).unwrap();

    let out = import(&[src.to_str().unwrap(), "team/bad"], &data);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(lp.to_str().unwrap()), "{stderr}");

    // Truncated manifest: named too.
    let src2 = work.path().join("src2");
    layout(&src2, "v1", "truncate me");
    let (md, mbytes) = layout_image(&src2);
    let mp = blob_path(&src2, &md);
    std::fs::write(&mp, &mbytes[..mbytes.len() / 2]).unwrap();
    let out = import(&[src2.to_str().unwrap(), "team/bad2"], &data);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(mp.to_str().unwrap()), "{stderr}");

    let server = Server::start(work.path(), &data).await;
    for repo in ["team/bad", "team/bad2"] {
        let r = server.get(&format!("/v2/{repo}/manifests/v1")).await;
        assert_eq!(r.status(), 404, "{repo}");
    }
    let r = server.get(&format!("/v2/team/bad/blobs/{layer}")).await;
    assert_eq!(r.status(), 404, "the corrupt layer was stored");
}

#[tokio::test]
async fn docker_archive_round_trip_through_skopeo() {
    if !tools_present(&["python3", "skopeo"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let data = work.path().join("data");
    layout(&src, "v1", "docker me");
    let tar = work.path().join("image.tar");
    let out = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker-archive:{}:team/dock:v2", tar.display()))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = import(&[tar.to_str().unwrap()], &data);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("team/dock:v2"), "{stdout}");
    // Again: nothing new.
    let out = import(&[tar.to_str().unwrap()], &data);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 blobs uploaded"));

    let server = Server::start(work.path(), &data).await;
    let pulled = work.path().join("pulled");
    let host = server.base.trim_start_matches("http://");
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/team/dock:v2"))
        .arg(format!("oci:{}:v2", pulled.display()))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo pull: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );

    // The served layers are the archive's (uncompressed) layer files: the
    // original config's diff IDs; skopeo verified every blob it pulled, and
    // the pulled config has the original diff IDs.
    let (_, obytes) = layout_image(&src);
    let om: Value = serde_json::from_slice(&obytes).unwrap();
    let ocfg = read_json(&blob_path(&src, om["config"]["digest"].as_str().unwrap()));
    let diff_ids: Vec<String> = ocfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let r = server.get("/v2/team/dock/manifests/v2").await;
    assert_eq!(r.status(), 200);
    let sm: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let layer_digests = |m: &Value| -> Vec<String> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(layer_digests(&sm), diff_ids);
    let (_, pbytes) = layout_image(&pulled);
    let pm: Value = serde_json::from_slice(&pbytes).unwrap();
    let pcfg_digest = pm["config"]["digest"].as_str().unwrap();
    let pcfg = read_json(&blob_path(&pulled, pcfg_digest));
    assert_eq!(pcfg["rootfs"]["diff_ids"], ocfg["rootfs"]["diff_ids"]);
    assert_eq!(layer_digests(&pm).len(), diff_ids.len());
    for l in layer_digests(&pm) {
        let b = std::fs::read(blob_path(&pulled, &l)).unwrap();
        assert_eq!(sha256(&b), l);
    }
}
