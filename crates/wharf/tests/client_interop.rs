//! The `wharf` client against Debian's docker-registry (distribution 2.x,
//! no referrers API), and interoperability with oras-py both ways.
//! Each test skips itself when its counterpart is not installed.

mod client_support;

use client_support::{Env, Server, bytes, oras_helper, sample_tree, snapshot, venv_python};
use serde_json::Value;
use std::path::Path;

#[test]
fn docker_registry_round_trip_and_listing() {
    let Some(s) = Server::docker_registry() else {
        return;
    };
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = format!("{}/dist/pkg:v1", s.host);
    let pushed = env.json(Some(&src), &["push", &r, "dir", "single.txt"]);
    let out = env.path("out");
    let pulled = env.json(None, &["pull", &r, "-o", out.to_str().unwrap()]);
    assert_eq!(pulled["digest"], pushed["digest"]);
    let mut want = snapshot(&src);
    want.retain(|k, _| k.starts_with("dir") || k == "single.txt");
    assert_eq!(snapshot(&out), want);

    env.ok(
        Some(&src),
        &["push", &format!("{}/dist/pkg:v2", s.host), "single.txt"],
    );
    let tags = env.json(None, &["tags", &format!("{}/dist/pkg", s.host)]);
    let mut t: Vec<String> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    t.sort();
    assert_eq!(t, ["v1", "v2"]);
    let cat = env.ok(None, &["catalog", &s.host]);
    assert!(cat.lines().any(|l| l == "dist/pkg"), "{cat}");
    let m = env.json(None, &["inspect", &r]);
    assert_eq!(m["digest"], pushed["digest"]);

    // Distribution cannot delete a tag alone: the manifest goes by digest.
    let rm = env.json(None, &["rm", &format!("{}/dist/pkg:v2", s.host)]);
    assert!(
        rm["note"].as_str().unwrap().contains("cannot delete a tag"),
        "{rm}"
    );
    env.fails(3, &["inspect", &format!("{}/dist/pkg:v2", s.host)]);
    env.ok(None, &["inspect", &r]);
}

#[test]
fn docker_registry_referrers_tag_schema() {
    let Some(s) = Server::docker_registry() else {
        return;
    };
    let env = Env::new();
    let src = sample_tree(env.home.path());
    let r = format!("{}/dist/app:v1", s.host);
    env.ok(Some(&src), &["push", &r, "single.txt"]);
    std::fs::write(src.join("sbom.json"), b"{}\n").unwrap();
    std::fs::write(src.join("sig"), b"sig").unwrap();
    let a = env.json(
        Some(&src),
        &[
            "attach",
            &r,
            "--artifact-type",
            "application/spdx+json",
            "sbom.json",
        ],
    );
    assert_eq!(
        a["referrers_api"], false,
        "distribution 2.x has no referrers API"
    );
    let tag = a["referrers_tag"].as_str().unwrap().to_owned();
    let subject = a["subject_digest"].as_str().unwrap().to_owned();
    assert_eq!(tag, subject.replace(':', "-"));
    env.json(
        Some(&src),
        &[
            "attach",
            &r,
            "--artifact-type",
            "application/vnd.example.sig",
            "sig",
        ],
    );
    let all = env.json(None, &["referrers", &r]);
    assert_eq!(all["referrersApi"], false);
    assert_eq!(all["manifests"].as_array().unwrap().len(), 2, "{all}");
    let sboms = env.json(
        None,
        &["referrers", &r, "--artifact-type", "application/spdx+json"],
    );
    assert_eq!(sboms["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(sboms["manifests"][0]["digest"], a["digest"]);
    // The tag itself is an index holding both.
    let idx = env.json(None, &["inspect", &format!("{}/dist/app:{tag}", s.host)]);
    assert_eq!(idx["manifest"]["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn docker_registry_chunked_push_and_cache() {
    let Some(s) = Server::docker_registry() else {
        return;
    };
    let env = Env::new();
    let src = env.path("big");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("b.bin"), bytes(700_000, 11)).unwrap();
    let r = format!("{}/dist/big:v1", s.host);
    let o = env
        .cmd()
        .current_dir(&src)
        .env("WHARF_CHUNKED_THRESHOLD", "1")
        .env("WHARF_CHUNK_SIZE", "100000")
        .args(["push", &r, "b.bin"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let puller = Env::new();
    let p = puller.json(None, &["pull", &r, "-o", "o"]);
    assert_eq!(p["downloaded"], 1);
    assert_eq!(
        std::fs::read(puller.path("work/o/b.bin")).unwrap(),
        bytes(700_000, 11)
    );
    let p = puller.json(None, &["pull", &r, "-o", "o2"]);
    assert_eq!(p["downloaded"], 0);
}

fn oras(py: &Path, cwd: &Path, args: &[&str]) -> Value {
    let o = std::process::Command::new(py)
        .arg(oras_helper())
        .args(args)
        .current_dir(cwd)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "oras-py {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let last = out.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("oras-py output ({e}): {out}"))
}

fn oras_pushes_wharf_pulls(s: &Server) {
    let Some(py) = venv_python() else {
        return;
    };
    let env = Env::new();
    let src = env.path("oras-src");
    std::fs::create_dir_all(src.join("docs/sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(src.join("b.bin"), bytes(200_000, 5)).unwrap();
    std::fs::write(src.join("docs/sub/c.md"), b"# c\n").unwrap();
    let repo = "interop/from-oras:v1";
    let pushed = oras(
        &py,
        &src,
        &[
            "push",
            &s.host,
            repo,
            "--artifact-type",
            "application/vnd.example.bundle",
            "a.txt",
            "b.bin",
            "docs",
        ],
    );
    assert_eq!(pushed["status"], 201);
    let out = env.path("out");
    let p = env.json(
        None,
        &[
            "pull",
            &format!("{}/{repo}", s.host),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(p["layout"], "files");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(out.join("b.bin")).unwrap(), bytes(200_000, 5));
    assert_eq!(std::fs::read(out.join("docs/sub/c.md")).unwrap(), b"# c\n");
}

fn wharf_pushes_oras_pulls(s: &Server) {
    let Some(py) = venv_python() else {
        return;
    };
    let env = Env::new();
    let src = sample_tree(env.home.path());
    // Titled files (wharf attach): oras-py restores them by name.
    let subject = format!("{}/interop/from-wharf:v1", s.host);
    let pkg = env.json(Some(&src), &["push", &subject, "dir"]);
    std::fs::write(src.join("notes.txt"), b"attached notes\n").unwrap();
    let a = env.json(
        Some(&src),
        &[
            "attach",
            &subject,
            "--artifact-type",
            "text/plain",
            "notes.txt",
            "single.txt",
        ],
    );
    let out = env.path("oras-out");
    let digest = a["digest"].as_str().unwrap();
    let r = oras(
        &py,
        env.home.path(),
        &[
            "pull",
            &s.host,
            &format!("interop/from-wharf@{digest}"),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r["files"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(
        std::fs::read(out.join("notes.txt")).unwrap(),
        b"attached notes\n"
    );
    assert_eq!(
        std::fs::read(out.join("single.txt")).unwrap(),
        b"one file\n"
    );
    // A package: oras-py saves its one layer, the exact tar wharf packed.
    let out2 = env.path("oras-out2");
    let r = oras(
        &py,
        env.home.path(),
        &[
            "pull",
            &s.host,
            "interop/from-wharf:v1",
            out2.to_str().unwrap(),
        ],
    );
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{r}");
    let tar = std::fs::read(files[0].as_str().unwrap()).unwrap();
    let layer = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tar))
    );
    assert_eq!(layer, pkg["layer_digest"].as_str().unwrap());
}

#[test]
fn oras_py_interop_with_wharf() {
    let s = Server::wharf(&[]);
    oras_pushes_wharf_pulls(&s);
    wharf_pushes_oras_pulls(&s);
}

#[test]
fn oras_py_interop_with_docker_registry() {
    let Some(s) = Server::docker_registry() else {
        return;
    };
    oras_pushes_wharf_pulls(&s);
    wharf_pushes_oras_pulls(&s);
}
