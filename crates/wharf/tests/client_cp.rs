//! `wharf cp` between registries (a spawned `wharf serve`), OCI layouts,
//! oci-archives and docker-archives, and interoperability with skopeo,
//! umoci and podman (each such test skips itself, with a message, when the
//! tool is missing). Test images are built by hand: small tar layers, a
//! config, a manifest, an index, in an OCI layout.

mod client_support;

use client_support::{Env, Server};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn sha(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
    )
}

/// A hand-built image in a layout: digests of its parts.
struct Image {
    manifest: String,
    config: String,
    layers: Vec<String>,
}

fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = sha(data);
    let p = layout.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    d
}

/// A tar layer holding `files` (name, content), packed by the client crate.
fn tar_layer(scratch: &Path, files: &[(&str, &[u8])]) -> Vec<u8> {
    let base = tempfile::tempdir_in(scratch).unwrap();
    let mut names = Vec::new();
    for (n, c) in files {
        let p = base.path().join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, c).unwrap();
        names.push(PathBuf::from(n));
    }
    let mut out = Vec::new();
    client::pack::pack(base.path(), &names, &mut out).unwrap();
    out
}

/// Write one image (two layers) into `layout`; `docker` picks Docker
/// schema 2 media types instead of OCI ones.
fn build_image(layout: &Path, arch: &str, docker: bool, seed: &str) -> (Image, Value) {
    let scratch = layout.parent().unwrap();
    let l1 = tar_layer(
        scratch,
        &[("etc/hello.txt", format!("hello {seed}\n").as_bytes())],
    );
    let l2 = tar_layer(
        scratch,
        &[(
            "usr/share/data.bin",
            &client_support::bytes(200_000, seed.len() as u64),
        )],
    );
    let d1 = put_blob(layout, &l1);
    let d2 = put_blob(layout, &l2);
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [d1, d2]},
        "history": [{"created_by": "hand"}, {"created_by": "hand"}],
    }))
    .unwrap();
    let cd = put_blob(layout, &config);
    let (mt, ct, lt) = if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        )
    };
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": ct, "digest": cd, "size": config.len()},
        "layers": [
            {"mediaType": lt, "digest": d1, "size": l1.len()},
            {"mediaType": lt, "digest": d2, "size": l2.len()},
        ],
    }))
    .unwrap();
    let md = put_blob(layout, &manifest);
    let desc = json!({
        "mediaType": mt, "digest": md, "size": manifest.len(),
        "platform": {"os": "linux", "architecture": arch},
    });
    (
        Image {
            manifest: md,
            config: cd,
            layers: vec![d1, d2],
        },
        desc,
    )
}

fn write_index(layout: &Path, entries: Vec<Value>) {
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .unwrap(),
    )
    .unwrap();
}

fn tagged(mut desc: Value, tag: &str) -> Value {
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    desc
}

/// A layout with one image tagged `v1`.
fn single_layout(env: &Env, name: &str, docker: bool) -> (PathBuf, Image) {
    let l = env.path(name);
    std::fs::create_dir_all(&l).unwrap();
    let (img, desc) = build_image(&l, "amd64", docker, name);
    write_index(&l, vec![tagged(desc, "v1")]);
    (l, img)
}

fn raw(env: &Env, r: &str) -> Vec<u8> {
    let o = env.run(&["inspect", "--raw", r]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

fn tool(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin").join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: {name} is not installed");
        None
    }
}

fn run_tool(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Blob mounts into `repo` in the server's access log (a POST answered 201).
fn mounts(s: &Server, repo: &str) -> usize {
    s.log()
        .lines()
        .filter(|l| {
            l.contains("method=POST")
                && l.contains(&format!("{repo}/blobs/uploads/"))
                && l.contains("status=201")
        })
        .count()
}

#[test]
fn registry_to_registry_skips_mounts_and_copies() {
    let s = Server::wharf(&[]);
    let other = Server::wharf(&[]);
    let env = Env::new();
    let (l, img) = single_layout(&env, "hand", false);
    let src = format!("{}/team/src:v1", s.host);
    let r = env.json(None, &["cp", &format!("oci:{}:v1", l.display()), &src]);
    assert_eq!(r["digest"], img.manifest);
    assert_eq!(
        (r["copied"].as_u64(), r["blobs"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(sha(&raw(&env, &src)), img.manifest);

    // Same registry, other repository: every blob is mounted, none uploaded.
    let patches = s.count("PATCH", "/blobs/uploads/");
    let puts = s.count("PUT", "/blobs/uploads/");
    let dst = format!("{}/other/dst:v2", s.host);
    let r = env.json(None, &["cp", &src, &dst]);
    assert_eq!(r["mounted"], 3, "{r}");
    assert_eq!(r["copied"], 0, "{r}");
    assert_eq!(mounts(&s, "other/dst"), 3);
    assert_eq!(s.count("PATCH", "/blobs/uploads/"), patches);
    assert_eq!(s.count("PUT", "/blobs/uploads/"), puts);
    assert_eq!(raw(&env, &dst), raw(&env, &src));

    // Again: everything is there already (HEAD), nothing moves.
    let r = env.json(None, &["cp", &src, &dst]);
    assert_eq!(
        (r["skipped"].as_u64(), r["mounted"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(mounts(&s, "other/dst"), 3);

    // To another registry: downloaded once (through the cache), uploaded.
    let far = format!("{}/far/copy:v1", other.host);
    let r = env.json(None, &["cp", &src, &far, "-j", "2"]);
    assert_eq!(r["copied"], 3, "{r}");
    assert_eq!(raw(&env, &far), raw(&env, &src));
    assert_eq!(other.count("PUT", "/blobs/uploads/"), 3);
    let r = env.json(None, &["cp", &src, &far]);
    assert_eq!(r["skipped"], 3, "{r}");
    assert_eq!(other.count("PUT", "/blobs/uploads/"), 3);

    // Big blobs go in chunks (thresholds lowered so the 200 kB layer is big).
    let third = Server::wharf(&[]);
    let chunked = format!("{}/chunked/copy:v1", third.host);
    let o = env
        .cmd()
        .env("WHARF_CHUNKED_THRESHOLD", "65536")
        .env("WHARF_CHUNK_SIZE", "65536")
        .args(["cp", &src, &chunked])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        third.count("PATCH", "/blobs/uploads/") >= 4,
        "{}",
        third.log()
    );
    assert_eq!(raw(&env, &chunked), raw(&env, &src));

    // By digest, and a digest that does not match the destination.
    let by_digest = format!("{}/far/copy@{}", other.host, img.manifest);
    env.ok(None, &["cp", &src, &by_digest]);
    let wrong = format!("{}/far/copy@{}", other.host, img.config);
    env.fails(1, &["cp", &src, &wrong]);
    env.fails(3, &["cp", &format!("{}/team/nope:v1", s.host), &far]);

    // `wharf pull` unpacks files; for a container image it says how to
    // fetch the image instead.
    let out = env.path("not-files");
    let err = env.fails(2, &["pull", &src, "-o", out.to_str().unwrap()]);
    assert!(err.contains(&format!("wharf cp {src} oci:DIR")), "{err}");
    assert!(!out.exists());
}

#[test]
fn registry_layout_registry_round_trip_is_byte_for_byte() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    for (docker, repo) in [(true, "rt/docker"), (false, "rt/oci")] {
        let (l, img) = single_layout(&env, &format!("hand-{docker}"), docker);
        let a = format!("{}/{repo}:a", s.host);
        env.ok(None, &["cp", &format!("oci:{}:v1", l.display()), &a]);
        let original = raw(&env, &a);
        assert_eq!(sha(&original), img.manifest);

        let out = env.path(&format!("out-{docker}"));
        let o = format!("oci:{}:copied", out.display());
        let r = env.json(None, &["cp", &a, &o]);
        assert_eq!(r["digest"], img.manifest);
        let index: Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        let e = &index["manifests"][0];
        assert_eq!(e["digest"], img.manifest);
        assert_eq!(
            e["annotations"]["org.opencontainers.image.ref.name"],
            "copied"
        );
        assert_eq!(
            e["mediaType"],
            if docker {
                "application/vnd.docker.distribution.manifest.v2+json"
            } else {
                "application/vnd.oci.image.manifest.v1+json"
            }
        );
        for d in img.layers.iter().chain([&img.config, &img.manifest]) {
            let p = out.join("blobs/sha256").join(&d[7..]);
            assert_eq!(sha(&std::fs::read(&p).unwrap()), *d);
        }

        let b = format!("{}/{repo}:b", s.host);
        env.ok(None, &["cp", &o, &b]);
        assert_eq!(raw(&env, &b), original);

        // oci-archive both ways.
        let tarball = env.path(&format!("img-{docker}.tar"));
        env.ok(
            None,
            &["cp", &a, &format!("oci-archive:{}:t", tarball.display())],
        );
        let c = format!("{}/{repo}:c", s.host);
        let r = env.json(
            None,
            &["cp", &format!("oci-archive:{}:t", tarball.display()), &c],
        );
        assert_eq!(r["skipped"], 3, "{r}");
        assert_eq!(raw(&env, &c), original);
    }
    // A corrupted blob in a layout is refused.
    let (l, img) = single_layout(&env, "corrupt", false);
    let p = l.join("blobs/sha256").join(&img.layers[0][7..]);
    let len = std::fs::metadata(&p).unwrap().len() as usize;
    std::fs::write(&p, b"garbage").unwrap();
    let dest = format!("oci:{}", env.path("x").display());
    env.fails(3, &["cp", &format!("oci:{}:v1", l.display()), &dest]);
    // Same size, wrong content: the digest check refuses it.
    std::fs::write(&p, vec![b'x'; len]).unwrap();
    env.fails(1, &["cp", &format!("oci:{}:v1", l.display()), &dest]);
}

#[test]
fn all_copies_a_two_platform_index_else_one_platform() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let l = env.path("multi");
    std::fs::create_dir_all(&l).unwrap();
    let (amd, amd_desc) = build_image(&l, "amd64", false, "amd");
    let (arm, arm_desc) = build_image(&l, "arm64", false, "arm");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd_desc, arm_desc],
    }))
    .unwrap();
    let idx = put_blob(&l, &index);
    write_index(
        &l,
        vec![tagged(
            json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idx, "size": index.len()}),
            "multi",
        )],
    );
    let src = format!("oci:{}:multi", l.display());

    let all = format!("{}/multi/all:1", s.host);
    // Two images sharing one layer: 2 configs + 3 distinct layers.
    let r = env.json(None, &["cp", "--all", &src, &all]);
    assert_eq!(
        (r["manifests"].as_u64(), r["blobs"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(raw(&env, &all), index);
    for m in [&amd.manifest, &arm.manifest] {
        env.ok(None, &["inspect", &format!("{}/multi/all@{m}", s.host)]);
    }

    let one = format!("{}/multi/one:1", s.host);
    let r = env.json(None, &["cp", "--platform", "linux/arm64", &src, &one]);
    assert_eq!(r["digest"], arm.manifest);
    assert_eq!(sha(&raw(&env, &one)), arm.manifest);
    assert_eq!(
        r["mounted"].as_u64().unwrap() + r["copied"].as_u64().unwrap(),
        3
    );
    if std::env::consts::ARCH == "x86_64" {
        let r = env.json(None, &["cp", &src, &one]);
        assert_eq!(
            r["digest"], amd.manifest,
            "the default is this machine's platform"
        );
    }
    env.fails(3, &["cp", "--platform", "linux/s390x", &src, &one]);
    env.fails(2, &["cp", "--platform", "nonsense", &src, &one]);

    // --all from the registry into a layout keeps the index.
    let out = env.path("all-out");
    let r = env.json(
        None,
        &["cp", "--all", &all, &format!("oci:{}:x", out.display())],
    );
    assert_eq!(r["digest"], idx);
    // A docker-archive holds one image.
    let tarball = env.path("x.tar");
    env.fails(
        2,
        &[
            "cp",
            "--all",
            &all,
            &format!("docker-archive:{}", tarball.display()),
        ],
    );
    if let Some(skopeo) = tool("skopeo") {
        let mut c = Command::new(skopeo);
        c.args(["--insecure-policy", "inspect", "--raw"])
            .arg(format!("oci:{}:x", out.display()));
        assert_eq!(sha(run_tool(c).as_bytes()), idx);
    }
}

#[test]
fn oci_layout_from_wharf_is_read_by_skopeo_and_umoci() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let (l, img) = single_layout(&env, "hand", false);
    let r = format!("{}/lay/app:v1", s.host);
    env.ok(None, &["cp", &format!("oci:{}:v1", l.display()), &r]);
    let out = env.path("layout");
    env.ok(None, &["cp", &r, &format!("oci:{}:mytag", out.display())]);

    if let Some(skopeo) = tool("skopeo") {
        let mut c = Command::new(&skopeo);
        c.args(["--insecure-policy", "inspect", "--raw"])
            .arg(format!("oci:{}:mytag", out.display()));
        assert_eq!(sha(run_tool(c).as_bytes()), img.manifest);
        // skopeo reads every blob (and verifies it) when it copies.
        let dir = env.path("skopeo-dir");
        let mut c = Command::new(&skopeo);
        c.args(["--insecure-policy", "copy"])
            .arg(format!("oci:{}:mytag", out.display()))
            .arg(format!("dir:{}", dir.display()));
        run_tool(c);
        assert_eq!(
            sha(&std::fs::read(dir.join("manifest.json")).unwrap()),
            img.manifest
        );
        for d in &img.layers {
            assert!(dir.join(&d[7..]).exists(), "skopeo dir: lacks {d}");
        }
    }
    if let Some(umoci) = tool("umoci") {
        let mut c = Command::new(&umoci);
        c.arg("ls").arg("--layout").arg(&out);
        let tags = run_tool(c);
        assert_eq!(tags.lines().collect::<Vec<_>>(), ["mytag"], "{tags}");
        let bundle = env.path("bundle");
        let mut c = Command::new(&umoci);
        c.args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:mytag", out.display()))
            .arg(&bundle);
        run_tool(c);
        assert_eq!(
            std::fs::read(bundle.join("rootfs/etc/hello.txt")).unwrap(),
            b"hello hand\n"
        );
    }
}

/// Temporary containers configuration: vfs storage, no /etc.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path();
        for d in ["storage", "tmp", "run", "home/.config/containers"] {
            std::fs::create_dir_all(w.join(d)).unwrap();
        }
        std::fs::write(
            w.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/storage/graph\"\nrunroot = \"{0}/storage/run\"\n",
                w.display()
            ),
        )
        .unwrap();
        std::fs::write(
            w.join("containers.conf"),
            format!(
                "[engine]\ntmp_dir = \"{0}/tmp\"\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n",
                w.display()
            ),
        )
        .unwrap();
        std::fs::write(
            w.join("home/.config/containers/policy.json"),
            br#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        std::fs::write(
            w.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        Podman { dir }
    }

    fn cmd(&self) -> Command {
        let w = self.dir.path();
        let mut c = Command::new("/usr/bin/podman");
        c.env("CONTAINERS_STORAGE_CONF", w.join("storage.conf"))
            .env("CONTAINERS_CONF", w.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", w.join("registries.conf"))
            .env("HOME", w.join("home"))
            .env("TMPDIR", w.join("tmp"))
            .env("XDG_RUNTIME_DIR", w.join("run"));
        c
    }
}

#[test]
fn docker_archive_from_wharf_is_read_by_skopeo_and_podman() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let (l, img) = single_layout(&env, "hand", true);
    let r = format!("{}/dock/app:v1", s.host);
    env.ok(None, &["cp", &format!("oci:{}:v1", l.display()), &r]);
    let tarball = env.path("saved.tar");
    env.ok(
        None,
        &[
            "cp",
            &r,
            &format!(
                "docker-archive:{}:example.com/dock/app:v1",
                tarball.display()
            ),
        ],
    );

    // What is inside: manifest.json, <hex>.json config, <hex>.tar layers.
    let listing = run_tool({
        let mut c = Command::new("tar");
        c.arg("tf").arg(&tarball);
        c
    });
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    let mut want = vec![
        format!("{}.json", &img.config[7..]),
        format!("{}.tar", &img.layers[0][7..]),
        format!("{}.tar", &img.layers[1][7..]),
        "manifest.json".into(),
        "repositories".into(),
    ];
    want.sort();
    assert_eq!(names, want);

    // wharf reads it back: same config and layers.
    let back = format!("{}/dock/back:v1", s.host);
    let rr = env.json(
        None,
        &[
            "cp",
            &format!(
                "docker-archive:{}:example.com/dock/app:v1",
                tarball.display()
            ),
            &back,
        ],
    );
    assert_eq!(
        rr["media_type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let m: Value = serde_json::from_slice(&raw(&env, &back)).unwrap();
    assert_eq!(m["config"]["digest"], img.config);
    assert_eq!(m["layers"][0]["digest"], img.layers[0]);
    assert_eq!(m["layers"][1]["digest"], img.layers[1]);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );

    if let Some(skopeo) = tool("skopeo") {
        let dir = env.path("from-archive");
        let mut c = Command::new(&skopeo);
        c.args(["--insecure-policy", "copy"])
            .arg(format!("docker-archive:{}", tarball.display()))
            .arg(format!("dir:{}", dir.display()));
        run_tool(c);
        let m: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["config"]["digest"], img.config);
        assert_eq!(m["layers"][0]["digest"], img.layers[0]);
        assert_eq!(m["layers"][1]["digest"], img.layers[1]);
        for d in img.layers.iter().chain([&img.config]) {
            assert_eq!(sha(&std::fs::read(dir.join(&d[7..])).unwrap()), *d);
        }
    }
    if tool("podman").is_some() {
        let p = Podman::new();
        let mut c = p.cmd();
        c.arg("load").arg("-i").arg(&tarball);
        let out = run_tool(c);
        assert!(out.contains("example.com/dock/app:v1"), "{out}");
        let mut c = p.cmd();
        c.args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "example.com/dock/app:v1",
        ]);
        let id = run_tool(c);
        assert_eq!(id.trim(), &img.config[7..]);
    }
}

#[test]
fn docker_archive_from_skopeo_is_read_by_wharf() {
    let Some(skopeo) = tool("skopeo") else {
        return;
    };
    let s = Server::wharf(&[]);
    let env = Env::new();
    let (l, img) = single_layout(&env, "hand", false);
    let tarball = env.path("skopeo.tar");
    let mut c = Command::new(&skopeo);
    c.args(["--insecure-policy", "copy"])
        .arg(format!("oci:{}:v1", l.display()))
        .arg(format!(
            "docker-archive:{}:skopeo/made:v7",
            tarball.display()
        ));
    run_tool(c);

    let r = format!("{}/from/skopeo:v1", s.host);
    env.ok(
        None,
        &[
            "cp",
            &format!("docker-archive:{}:skopeo/made:v7", tarball.display()),
            &r,
        ],
    );
    // Without a name: the only image.
    env.ok(
        None,
        &[
            "cp",
            &format!("docker-archive:{}", tarball.display()),
            &format!("{}/from/skopeo:v2", s.host),
        ],
    );
    env.fails(
        3,
        &[
            "cp",
            &format!("docker-archive:{}:skopeo/other:v1", tarball.display()),
            &r,
        ],
    );
    let m: Value = serde_json::from_slice(&raw(&env, &r)).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        img.layers.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // skopeo may rewrite the config; its diff IDs must still be our layers.
    let cfg = env.json(None, &["inspect", &r]);
    assert_eq!(cfg["config"]["rootfs"]["diff_ids"], json!(img.layers));
    // And the image skopeo reads back from wharf is the same.
    let mut c = Command::new(&skopeo);
    c.args([
        "--insecure-policy",
        "inspect",
        "--tls-verify=false",
        "--raw",
    ])
    .arg(format!("docker://{r}"));
    assert_eq!(run_tool(c).as_bytes(), raw(&env, &r));
}

#[test]
fn archives_honour_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = Server::wharf(&[]);
    let env = Env::new();
    let (l, _) = single_layout(&env, "umask", true);
    let r = format!("{}/umask/app:v1", s.host);
    env.ok(None, &["cp", &format!("oci:{}:v1", l.display()), &r]);
    for (umask, want) in [("027", 0o640), ("022", 0o644)] {
        for kind in ["docker-archive", "oci-archive"] {
            let file = env.path(&format!("{kind}-{umask}.tar"));
            // The same command, run by a shell that sets the umask first.
            let mut c = env.wrapper("sh");
            c.arg("-c")
                .arg(format!("umask {umask} && exec \"$@\""))
                .arg("sh")
                .arg(client_support::WHARF)
                .args(["cp", &r, &format!("{kind}:{}", file.display())]);
            run_tool(c);
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, want, "{kind} written under umask {umask}: {mode:o}");
        }
    }
}

/// Names of the entries of `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A docker-archive holds container images. A `wharf push`ed file package
/// (empty config, an artifactType) or an image whose config has no
/// `rootfs` is refused with a message naming what works, and no file (nor
/// any scratch debris) is left; a real image still makes an archive that
/// skopeo accepts.
#[test]
fn only_container_images_become_docker_archives() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = client_support::sample_tree(&env.path("files"));
    let r = format!("{}/pkgs/tool:1.0", s.host);
    env.ok(Some(&src), &["push", &r, "dir", "single.txt"]);

    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let tarball = out.join("pkg.tar");
    let err = env.fails(
        2,
        &["cp", &r, &format!("docker-archive:{}", tarball.display())],
    );
    assert!(
        err.contains("not a container image")
            && err.contains("oci:DIR")
            && err.contains("oci-archive:FILE")
            && err.contains("application/vnd.oci.empty.v1+json"),
        "{err}"
    );
    assert!(entries(&out).is_empty(), "left behind: {:?}", entries(&out));
    // What the message suggests works.
    let oa = out.join("pkg.oci.tar");
    env.ok(
        None,
        &["cp", &r, &format!("oci-archive:{}:1.0", oa.display())],
    );
    assert!(oa.is_file());
    std::fs::remove_file(&oa).unwrap();

    // An image-typed config without rootfs is not a container image either.
    let l = env.path("no-rootfs");
    std::fs::create_dir_all(&l).unwrap();
    let layer = tar_layer(&env.path("work"), &[("a.txt", b"a\n")]);
    let ld = put_blob(&l, &layer);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = put_blob(&l, config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": ld, "size": layer.len()}],
    }))
    .unwrap();
    let md = put_blob(&l, &manifest);
    write_index(
        &l,
        vec![tagged(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": md, "size": manifest.len()}),
            "v1",
        )],
    );
    let err = env.fails(
        2,
        &[
            "cp",
            &format!("oci:{}:v1", l.display()),
            &format!("docker-archive:{}", tarball.display()),
        ],
    );
    assert!(
        err.contains("not a container image") && err.contains("rootfs"),
        "{err}"
    );
    assert!(entries(&out).is_empty(), "left behind: {:?}", entries(&out));

    // A real image (OCI media types) still becomes a valid docker-archive.
    let (l, img) = single_layout(&env, "real", false);
    let good = out.join("real.tar");
    env.ok(
        None,
        &[
            "cp",
            &format!("oci:{}:v1", l.display()),
            &format!("docker-archive:{}:x/real:v1", good.display()),
        ],
    );
    assert_eq!(entries(&out), ["real.tar"]);
    if let Some(skopeo) = tool("skopeo") {
        let mut c = Command::new(&skopeo);
        c.args(["--insecure-policy", "inspect"])
            .arg(format!("docker-archive:{}", good.display()));
        let v: Value = serde_json::from_str(&run_tool(c)).unwrap();
        assert_eq!(v["Layers"], json!(img.layers), "{v}");
    }
}
