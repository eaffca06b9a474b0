//! One process per data directory: a second `wharf serve`, `wharf import`
//! or `wharf migrate` on a directory that a live server has is refused at
//! once, naming the directory and the server's pid; a server killed with
//! SIGKILL does not keep its directory from being served again. All tests
//! here need a locally spawned wharf and skip themselves with WHARF_TEST_URL.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `wharf ARGS`, without the caller's WHARF_* settings, to completion,
/// which must come within 10 s (the lock is not waited for).
fn wharf(args: &[&str], data: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(&k);
        }
    }
    let mut child = cmd
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wharf");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "wharf {args:?} still running after 10 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `out` failed, saying that `data` is in use by `pid`.
fn assert_refused(what: &str, out: &Output, data: &Path, pid: u32) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded: {err}");
    let want = format!(
        "data directory {} is in use by another Wharf process (pid {pid})",
        data.canonicalize().unwrap().display()
    );
    assert!(err.contains(&want), "{what}: want {want:?} in: {err}");
    assert!(err.contains("--data-dir"), "{what}: no way out in: {err}");
}

/// An OCI image layout at `dir` of one small image, tagged `t`.
fn tiny_layout(dir: &Path) {
    let config = b"{}".to_vec();
    let layer = unique_bytes("lock-layer");
    let (c, l) = (Desc::new(OCI_CONFIG, &config), Desc::new(OCI_LAYER, &layer));
    let manifest = oci_manifest(&c, std::slice::from_ref(&l));
    let m = Desc::new(OCI_MANIFEST, &manifest);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for (d, bytes) in [(&c, &config), (&l, &layer), (&m, &manifest)] {
        std::fs::write(blobs.join(&d.digest["sha256:".len()..]), bytes).unwrap();
    }
    let mut entry = m.json();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "t"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    std::fs::write(dir.join("index.json"), to_bytes(&index)).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[tokio::test]
async fn a_data_directory_has_one_process() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let data = reg.data_dir().unwrap();
    let pid = reg.pid().unwrap();
    let name = repo("lock");
    let img = reg.push_image(&name, "v1").await;
    assert_eq!(
        std::fs::read_to_string(data.join(".lock")).unwrap(),
        format!("{pid}\n"),
        "the lock file names the server"
    );

    // A second server on the same directory (another port) stops at once.
    let out = wharf(&["serve", "--listen", "127.0.0.1:0"], &data);
    assert_refused("a second wharf serve", &out, &data, pid);

    // So do the offline commands that write the directory.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    tiny_layout(&layout);
    let out = wharf(
        &["import", layout.to_str().unwrap(), "lock/imported"],
        &data,
    );
    assert_refused("wharf import", &out, &data, pid);
    let registry2 = work.path().join("registry2");
    std::fs::create_dir_all(registry2.join("docker/registry/v2/repositories")).unwrap();
    let out = wharf(
        &[
            "migrate",
            "--from-distribution",
            registry2.to_str().unwrap(),
        ],
        &data,
    );
    assert_refused("wharf migrate", &out, &data, pid);

    // The first server went on undisturbed; the lock file is no repository.
    let r = reg.get_m(&format!("/v2/{name}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], &img.manifest[..]);
    let v = json_body(reg.get("/v2/_catalog").await).await;
    assert_eq!(v["repositories"], serde_json::json!([name.clone()]));

    // Killed with SIGKILL, the server leaves its lock file behind, naming
    // a dead process: that does not block the next one.
    reg.kill_hard();
    assert_eq!(
        std::fs::read_to_string(data.join(".lock")).unwrap(),
        format!("{pid}\n"),
        "a stale lock file is left"
    );
    reg.restart().await;
    let new_pid = reg.pid().unwrap();
    assert_eq!(
        std::fs::read_to_string(data.join(".lock")).unwrap(),
        format!("{new_pid}\n")
    );
    let r = reg.get_m(&format!("/v2/{name}/manifests/v1")).await;
    assert_eq!(r.status(), 200);

    // Once no server runs, the offline commands have the directory.
    reg.kill_hard();
    let out = wharf(
        &[
            "import",
            layout.to_str().unwrap(),
            "lock/imported",
            "--no-fsync",
        ],
        &data,
    );
    assert!(
        out.status.success(),
        "wharf import on a free directory: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    reg.restart().await;
    let v = json_body(reg.get("/v2/_catalog").await).await;
    assert_eq!(
        v["repositories"],
        serde_json::json!([name.clone(), "lock/imported"])
    );
}
