//! The `wharf` client commands against a spawned `wharf serve`.

mod client_support;

use client_support::{Env, Server, bytes, sample_tree, snapshot};
use serde_json::Value;

fn reference(s: &Server, repo: &str) -> String {
    format!("{}/{repo}", s.host)
}

#[test]
fn push_pull_round_trip_byte_for_byte() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = reference(&s, "team/pkg:v1");
    let pushed = env.json(Some(&src), &["push", &r, "dir", "single.txt"]);
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"));
    assert_eq!(pushed["entries"], 9);

    let out = env.path("out");
    let pulled = env.json(None, &["pull", &r, "-o", out.to_str().unwrap()]);
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(pulled["layout"], "package");
    let mut want = snapshot(&src);
    let got = snapshot(&out);
    // Only what was given is in the package.
    want.retain(|k, _| k.starts_with("dir") || k == "single.txt");
    assert_eq!(got, want);

    // By digest too.
    let out2 = env.path("out2");
    env.ok(
        None,
        &[
            "pull",
            &format!("{}/team/pkg@{digest}", s.host),
            "-o",
            out2.to_str().unwrap(),
        ],
    );
    assert_eq!(snapshot(&out2), want);

    // The manifest is what the package format says.
    let m = env.json(None, &["inspect", &r]);
    let man = &m["manifest"];
    assert_eq!(man["artifactType"], "application/vnd.wharf.package.v1");
    assert_eq!(
        man["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(man["config"]["size"], 2);
    assert_eq!(man["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        man["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn same_files_same_digest() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let d1 = env.ok(Some(&src), &["push", &reference(&s, "det/a:1"), "dir"]);
    // Touch every file (new mtimes) and push from a copy elsewhere.
    let copy = env.path("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let st = std::process::Command::new("cp")
        .args(["-a", "--no-preserve=timestamps"])
        .arg(src.join("dir"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let d2 = env.ok(Some(&copy), &["push", &reference(&s, "det/b:2"), "./dir/"]);
    assert_eq!(d1.trim(), d2.trim());
    assert!(
        d1.trim().starts_with("sha256:"),
        "quiet output is the digest: {d1}"
    );
}

#[test]
fn annotations_and_artifact_type() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = reference(&s, "ann/x:v");
    env.ok(
        Some(&src),
        &[
            "push",
            &r,
            "single.txt",
            "--artifact-type",
            "application/vnd.example.thing",
            "-a",
            "org.opencontainers.image.version=1.2",
            "--annotation",
            "k=v=w",
        ],
    );
    let m = env.json(None, &["inspect", &r]);
    assert_eq!(
        m["manifest"]["artifactType"],
        "application/vnd.example.thing"
    );
    assert_eq!(
        m["manifest"]["annotations"]["org.opencontainers.image.version"],
        "1.2"
    );
    assert_eq!(m["manifest"]["annotations"]["k"], "v=w");
    // Not Wharf's type, but one tar layer and config {}: still pulls.
    let out = env.path("o");
    env.ok(None, &["pull", &r, "-o", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.join("single.txt")).unwrap(),
        b"one file\n"
    );
    env.fails(2, &["push", &r, "single.txt", "-a", "novalue"]);
}

#[test]
fn cache_downloads_nothing_twice() {
    let s = Server::wharf(&[]);
    let pusher = Env::new();
    let src = sample_tree(pusher.home.path());
    pusher.ok(Some(&src), &["push", &reference(&s, "c/one:v1"), "dir"]);
    // The same files in another repository: the same layer blob.
    pusher.ok(Some(&src), &["push", &reference(&s, "c/two:v1"), "dir"]);

    let puller = Env::new();
    let blob_gets = |s: &Server| s.count("GET", "/blobs/sha256:");
    let before = blob_gets(&s);
    puller.ok(None, &["pull", &reference(&s, "c/one:v1"), "-o", "a"]);
    assert_eq!(blob_gets(&s) - before, 1, "one layer downloaded");
    let r = puller.json(None, &["pull", &reference(&s, "c/one:v1"), "-o", "b"]);
    assert_eq!(r["downloaded"], 0);
    let r = puller.json(None, &["pull", &reference(&s, "c/two:v1"), "-o", "c"]);
    assert_eq!(
        r["downloaded"], 0,
        "a package sharing the blob needs no download"
    );
    assert_eq!(blob_gets(&s) - before, 1, "{}", s.log());
    let layer = r["digest"].as_str().unwrap().to_owned();
    assert!(!layer.is_empty());
    assert_eq!(
        snapshot(&puller.path("work/a")),
        snapshot(&puller.path("work/c"))
    );

    // The blob sits in the cache under its digest, and verifies.
    let blobs = puller.cache().join("blobs/sha256");
    let names: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1);
    let data = std::fs::read(blobs.join(&names[0])).unwrap();
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)),
        names[0]
    );

    let p = puller.json(None, &["cache", "prune"]);
    assert_eq!(p["blobs"], 1);
    assert!(!blobs.exists());
    puller.ok(None, &["pull", &reference(&s, "c/one:v1"), "-o", "d"]);
    assert_eq!(blob_gets(&s) - before, 2, "downloaded again after prune");
    // The pusher's own cache already holds what it packed.
    let r = pusher.json(None, &["pull", &reference(&s, "c/one:v1"), "-o", "mine"]);
    assert_eq!(r["downloaded"], 0);
}

#[test]
fn pull_into_existing_directory() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = reference(&s, "ex/pkg:v1");
    env.ok(Some(&src), &["push", &r, "single.txt"]);
    let out = env.path("work/existing");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mine.txt"), b"keep").unwrap();
    env.ok(None, &["pull", &r, "-o", "existing"]);
    assert_eq!(
        std::fs::read(out.join("single.txt")).unwrap(),
        b"one file\n"
    );
    assert_eq!(std::fs::read(out.join("mine.txt")).unwrap(), b"keep");
    std::fs::write(out.join("single.txt"), b"changed").unwrap();
    let err = env.fails(2, &["pull", &r, "-o", "existing"]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(out.join("single.txt")).unwrap(), b"changed");
    env.ok(None, &["pull", &r, "-o", "existing", "--force"]);
    assert_eq!(
        std::fs::read(out.join("single.txt")).unwrap(),
        b"one file\n"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no staging directory left: {left:?}");
}

#[test]
fn exit_codes_and_messages() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let err = env.fails(3, &["pull", &reference(&s, "no/such:tag"), "-o", "x"]);
    assert!(err.contains("not found"), "{err}");
    env.fails(3, &["inspect", &reference(&s, "no/such:tag")]);
    env.fails(3, &["tags", &reference(&s, "no/such")]);
    env.fails(2, &["pull", "127.0.0.1:1/UPPER:x"]);
    env.fails(2, &["push"]);
    env.fails(2, &["frobnicate"]);
    let port = client_support::free_port();
    let err = env.fails(5, &["tags", &format!("127.0.0.1:{port}/a")]);
    assert!(err.contains("cannot reach"), "{err}");
    // --json errors are JSON on stderr.
    let o = env.run(&["inspect", &reference(&s, "no/such:tag"), "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(v["kind"], "not-found");
    assert_eq!(v["exit_code"], 3);
    // A big image is not a package.
    let src = sample_tree(env.home.path());
    let r = reference(&s, "img/x:v");
    env.ok(Some(&src), &["push", &r, "single.txt"]);
    let idx = env.ok(None, &["inspect", &r, "--raw"]);
    assert!(idx.starts_with('{'));
}

#[test]
fn messages_say_what_to_do() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = reference(&s, "pkgs/tool:1.0");
    env.ok(Some(&src), &["push", &r, "single.txt"]);
    // A forgotten `oci:` on a path.
    let err = env.fails(2, &["cp", &r, "./somedir"]);
    assert!(err.contains("looks like a local path"), "{err}");
    assert!(err.contains("oci:./somedir"), "{err}");
    // Nothing listens on a plain-HTTP loopback port: not "use --insecure".
    let port = client_support::free_port();
    let err = env.fails(5, &["tags", &format!("127.0.0.1:{port}/a")]);
    assert!(
        err.contains(&format!("nothing is listening at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("--insecure"), "{err}");
    // References: what is wrong, in words.
    let err = env.fails(2, &["pull", &reference(&s, "pkgs/tool::1.0"), "-o", "x"]);
    assert!(err.contains("':' is not allowed"), "{err}");
    let err = env.fails(2, &["pull", &reference(&s, "pkgs/Tool:1.0"), "-o", "x"]);
    assert!(err.contains("upper-case letters are not allowed"), "{err}");
    assert!(err.contains("\"pkgs/tool\""), "{err}");
    let err = env.fails(2, &["pull", &reference(&s, "pkgs/tool:"), "-o", "x"]);
    assert!(err.contains("invalid tag \"\": it is empty"), "{err}");
    // A missing tag: the tags there are, and whether the repository exists.
    let err = env.fails(3, &["pull", &reference(&s, "pkgs/tool:2.0"), "-o", "x"]);
    assert!(err.contains("has no tag \"2.0\"; it has 1.0"), "{err}");
    assert!(
        err.contains(&format!("wharf tags {}/pkgs/tool", s.host)),
        "{err}"
    );
    let err = env.fails(3, &["inspect", &reference(&s, "pkgs/nope:2.0")]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn tags_catalog_inspect_rm() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    for t in ["a", "b", "c"] {
        env.ok(
            Some(&src),
            &[
                "push",
                &reference(&s, &format!("list/repo:{t}")),
                "single.txt",
            ],
        );
    }
    env.ok(
        Some(&src),
        &["push", &reference(&s, "list/other:x"), "single.txt"],
    );
    let tags = env.ok(None, &["tags", &reference(&s, "list/repo")]);
    assert_eq!(tags, "a\nb\nc\n");
    let v = env.json(None, &["tags", &reference(&s, "list/repo")]);
    assert_eq!(v["tags"], serde_json::json!(["a", "b", "c"]));
    let cat = env.ok(None, &["catalog", &s.host]);
    assert_eq!(cat, "list/other\nlist/repo\n");

    let human = env.ok(None, &["inspect", &reference(&s, "list/repo:a")]);
    assert!(human.contains("Digest:"), "{human}");
    let raw = env.ok(None, &["inspect", "--raw", &reference(&s, "list/repo:a")]);
    let m = env.json(None, &["inspect", &reference(&s, "list/repo:a")]);
    let d = m["digest"].as_str().unwrap();
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(raw.as_bytes()))
        ),
        d,
        "--raw prints the exact bytes"
    );
    assert_eq!(
        m["totalSize"].as_u64().unwrap(),
        m["size"].as_u64().unwrap() + 2 + m["manifest"]["layers"][0]["size"].as_u64().unwrap()
    );

    // rm a tag: the others stay.
    env.ok(None, &["rm", &reference(&s, "list/repo:b")]);
    assert_eq!(
        env.ok(None, &["tags", &reference(&s, "list/repo")]),
        "a\nc\n"
    );
    // rm by digest: every tag of it goes.
    env.ok(None, &["rm", &format!("{}/list/repo@{d}", s.host)]);
    env.fails(3, &["inspect", &reference(&s, "list/repo:a")]);
    env.fails(3, &["rm", &reference(&s, "list/repo:zzz")]);
}

#[test]
fn inspect_index_shows_platforms() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let m = env.json(
        Some(&src),
        &["push", &reference(&s, "idx/app:amd"), "single.txt"],
    );
    let child = m["digest"].as_str().unwrap().to_owned();
    let size = m["manifest_size"].as_u64().unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": child, "size": size,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}
        }]
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client::Client::new(
            client::Host::parse(&s.host, false).unwrap(),
            client::ClientOptions::default(),
        )
        .unwrap();
        let repo = oci::RepoName::parse("idx/app", 255).unwrap();
        c.put_manifest(
            &repo,
            &oci::Reference::parse("multi").unwrap(),
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
        .await
        .unwrap();
    });
    let human = env.ok(None, &["inspect", &reference(&s, "idx/app:multi")]);
    assert!(human.contains("linux/arm64/v8"), "{human}");
    let v = env.json(None, &["inspect", &reference(&s, "idx/app:multi")]);
    assert_eq!(v["platforms"][0]["digest"], child.as_str());
    // An index of one manifest pulls that manifest.
    env.ok(None, &["pull", &reference(&s, "idx/app:multi"), "-o", "o"]);
    assert_eq!(
        std::fs::read(env.path("work/o/single.txt")).unwrap(),
        b"one file\n"
    );
}

#[test]
fn attach_and_referrers_with_the_api() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = reference(&s, "ref/app:v1");
    env.ok(Some(&src), &["push", &r, "single.txt"]);
    std::fs::write(src.join("sbom.json"), br#"{"spdx":true}"#).unwrap();
    std::fs::write(src.join("sig.txt"), b"signed").unwrap();
    let a = env.json(
        Some(&src),
        &[
            "attach",
            &r,
            "--artifact-type",
            "application/spdx+json",
            "sbom.json",
            "-a",
            "org.example=1",
        ],
    );
    assert_eq!(a["referrers_api"], true);
    assert!(a["referrers_tag"].is_null());
    env.json(
        Some(&src),
        &[
            "attach",
            &r,
            "--artifact-type",
            "application/vnd.example.sig",
            "sig.txt",
        ],
    );
    let all = env.json(None, &["referrers", &r]);
    assert_eq!(all["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(all["referrersApi"], true);
    let sboms = env.json(
        None,
        &["referrers", &r, "--artifact-type", "application/spdx+json"],
    );
    let list = sboms["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], a["digest"]);
    assert_eq!(list[0]["annotations"]["org.example"], "1");
    // The attached artifact pulls as files (one layer per file, titled).
    let out = env.path("sbom-out");
    env.ok(
        None,
        &[
            "pull",
            &format!("{}/ref/app@{}", s.host, a["digest"].as_str().unwrap()),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(out.join("sbom.json")).unwrap(),
        br#"{"spdx":true}"#
    );
    let text = env.ok(None, &["referrers", &r]);
    assert_eq!(text.lines().count(), 2);
    env.fails(
        3,
        &[
            "attach",
            &reference(&s, "ref/app:missing"),
            "--artifact-type",
            "x/y",
            src.join("sig.txt").to_str().unwrap(),
        ],
    );
}

#[test]
fn big_blobs_go_in_chunks_honouring_the_minimum() {
    let s = Server::wharf(&["--chunk-min-length", "65536"]);
    let env = Env::new();
    let src = env.path("big");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("blob.bin"), bytes(1_000_000, 3)).unwrap();
    let r = reference(&s, "big/pkg:v1");
    let o = env
        .cmd()
        .current_dir(&src)
        .env("WHARF_CHUNKED_THRESHOLD", "1")
        .env("WHARF_CHUNK_SIZE", "1000")
        .args(["push", &r, "blob.bin", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let size = v["layer_size"].as_u64().unwrap();
    let patches = s.count("PATCH", "/blobs/uploads/");
    assert_eq!(patches as u64, size.div_ceil(65536), "{}", s.log());
    let out = env.path("out");
    env.ok(None, &["pull", &r, "-o", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.join("blob.bin")).unwrap(),
        bytes(1_000_000, 3)
    );
}

/// Output into a pipe nobody reads (`wharf tags R | head -0`): the command
/// ends quietly with status 0, no panic.
#[test]
fn a_closed_output_pipe_ends_quietly() {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = reference(&s, "pipe/pkg:v1");
    env.ok(Some(&src), &["push", &r, "single.txt"]);
    for args in [
        vec!["tags", r.trim_end_matches(":v1")],
        vec!["inspect", &r],
        vec!["completions", "bash"],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe() fills two fresh descriptors, each owned once below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read);
        let o = env
            .cmd()
            .args(&args)
            .stdout(std::process::Stdio::from(write))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// On a terminal, a blob that needs no transfer gets one line saying why
/// (here "already there" and "cached"), not an empty progress bar.
#[test]
fn skipped_blobs_say_so_on_a_terminal() {
    let s = Server::wharf(&[]);
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = reference(&s, "tty/pkg:v1");
    env.ok(Some(&src), &["push", &r, "single.txt"]);
    // `script` gives the command a pseudo-terminal, so bars are drawn.
    let on_tty = |args: &str| {
        let mut c = env.wrapper("script");
        c.arg("-qec")
            .arg(format!("{} {args}", client_support::WHARF))
            .arg("/dev/null")
            .current_dir(&src);
        let o = c
            .output()
            .expect("script (util-linux) runs commands on a terminal");
        assert!(
            o.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let again = on_tty(&format!("push {} single.txt", reference(&s, "tty/pkg:v2")));
    assert!(again.contains("already there"), "{again}");
    let out = env.path("pulled");
    on_tty(&format!("pull {r} -o {}", out.display()));
    let cached = on_tty(&format!("pull {r} -o {}", env.path("pulled2").display()));
    assert!(cached.contains("cached"), "{cached}");
    assert!(!cached.contains("[>"), "an empty bar: {cached}");
}
