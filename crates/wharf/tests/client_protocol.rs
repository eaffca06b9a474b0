//! The client library against `wharf serve` (mounts, pagination), and
//! `wharf login` / credential files against a registry that wants Basic auth.

mod client_support;

use client::registry::BlobPush;
use client::{Client, ClientOptions, Host, NoProgress};
use client_support::{Env, Server};
use oci::{Digest, Reference, RepoName};
use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;

fn repo(s: &str) -> RepoName {
    RepoName::parse(s, 255).unwrap()
}

fn connect(s: &Server) -> Client {
    Client::new(
        Host::parse(&s.host, false).unwrap(),
        ClientOptions::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn cross_repository_mount_and_fallback() {
    let s = Server::wharf(&[]);
    let c = connect(&s);
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("blob");
    let data = client_support::bytes(50_000, 1);
    std::fs::write(&f, &data).unwrap();
    let d = Digest::sha256_of(&data);
    let size = data.len() as u64;
    let p = || Arc::new(NoProgress) as Arc<dyn client::Progress>;
    assert_eq!(
        c.push_blob_file(&repo("m/a"), &d, size, &f, None, p())
            .await
            .unwrap(),
        BlobPush::Monolithic
    );
    assert_eq!(
        c.push_blob_file(&repo("m/a"), &d, size, &f, None, p())
            .await
            .unwrap(),
        BlobPush::Exists
    );
    assert_eq!(
        c.push_blob_file(&repo("m/b"), &d, size, &f, Some(&repo("m/a")), p())
            .await
            .unwrap(),
        BlobPush::Mounted
    );
    assert_eq!(c.head_blob(&repo("m/b"), &d).await.unwrap(), Some(size));
    // A source that does not have it: the registry opens an upload session instead.
    let other = Digest::sha256_of(b"nowhere");
    assert!(
        !c.mount_blob(&repo("m/c"), &other, &repo("m/zzz"))
            .await
            .unwrap()
    );
    assert_eq!(
        c.push_blob_file(&repo("m/d"), &d, size, &f, Some(&repo("m/zzz")), p())
            .await
            .unwrap(),
        BlobPush::Monolithic
    );
    assert_eq!(
        s.count("POST", "/v2/m/b/blobs/uploads/ status=201"),
        1,
        "mounted: {}",
        s.log()
    );
    assert_eq!(s.count("PUT", "/v2/m/b/"), 0, "nothing uploaded to m/b");
    assert_eq!(
        s.count("PUT", "/v2/m/d/blobs/uploads/"),
        1,
        "fallback upload to m/d"
    );
    // The blob round-trips through pull_blob_to_file.
    let out = t.path().join("back");
    c.pull_blob_to_file(&repo("m/d"), &d, Some(size), &out, p())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(
        c.get_blob_bytes(&repo("m/d"), &d, 1 << 20).await.unwrap(),
        data
    );
}

#[tokio::test]
async fn listings_follow_link_pagination() {
    let s = Server::wharf(&[]);
    let c = connect(&s);
    let r = repo("page/app");
    let (cfg, _) = c.push_blob_bytes(&r, b"{}").await.unwrap();
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg.to_string(), "size": 2},
        "layers": []
    }))
    .unwrap();
    for t in ["t1", "t2", "t3", "t4", "t5"] {
        c.put_manifest(
            &r,
            &Reference::parse(t).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
            &body,
        )
        .await
        .unwrap();
    }
    for n in ["x/one", "x/two", "x/three"] {
        c.push_blob_bytes(&repo(n), b"{}").await.unwrap();
    }
    let before = s.count("GET", "/tags/list");
    assert_eq!(
        c.tags(&r, Some(2)).await.unwrap(),
        ["t1", "t2", "t3", "t4", "t5"]
    );
    assert_eq!(
        s.count("GET", "/tags/list") - before,
        3,
        "three pages of two"
    );
    let cat = c.catalog(Some(1)).await.unwrap();
    assert_eq!(cat, ["page/app", "x/one", "x/three", "x/two"]);
    assert!(s.count("GET", "/v2/_catalog") >= 4);
    // HEAD and GET of a manifest agree; a digest reference is verified.
    let head = c
        .head_manifest(&r, &Reference::parse("t1").unwrap())
        .await
        .unwrap()
        .unwrap();
    let got = c
        .get_manifest(&r, &Reference::Digest(head.digest.clone()))
        .await
        .unwrap();
    assert_eq!(got.bytes, body);
    assert_eq!(got.digest, head.digest);
    assert!(
        c.head_manifest(&r, &Reference::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // Referrers of something with none: empty, through the API.
    let refs = c.referrers(&r, &head.digest, None).await.unwrap();
    assert!(refs.api && refs.manifests.is_empty());
}

/// A registry that wants Basic u:p on every request.
async fn basic_registry() -> String {
    use axum::body::Body;
    use axum::http::Request;
    let app = axum::Router::new().fallback(|req: Request<Body>| async move {
        let good = client::auth::Credentials {
            username: "u".into(),
            password: "p".into(),
        }
        .basic_header();
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(good.as_str());
        let mut b = axum::http::Response::builder();
        if !ok {
            b = b
                .status(401)
                .header("www-authenticate", "Basic realm=\"mock\"");
            return b.body(Body::from("")).unwrap();
        }
        b.status(200)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"repositories":["secret/repo"]}"#))
            .unwrap()
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("127.0.0.1:{port}")
}

fn login(env: &Env, host: &str, user: &str, password: &str) -> std::process::Output {
    login_with(env.cmd(), host, user, password)
}

/// `wharf login` through `cmd` (wharf with its environment), the password on stdin.
fn login_with(
    mut cmd: std::process::Command,
    host: &str,
    user: &str,
    password: &str,
) -> std::process::Output {
    let mut child = cmd
        .args(["login", host, "--username", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_docker_credentials_and_commands_use_them() {
    let host = basic_registry().await;
    let env = Env::new();
    let h = host.clone();
    let run = |args: Vec<String>| {
        let env = &env;
        let o = env.cmd().args(&args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, _) = run(vec!["catalog".into(), h.clone()]);
    assert_eq!(code, Some(4), "no credentials: auth error");

    let o = tokio::task::block_in_place(|| login(&env, &host, "u", "wrong"));
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !env.path(".docker/config.json").exists(),
        "nothing stored on failure"
    );

    let o = tokio::task::block_in_place(|| login(&env, &host, "u", "p"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path(".docker/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["auths"][host.as_str()]["auth"], "dTpw", "base64 of u:p");

    let (code, out) = tokio::task::block_in_place(|| run(vec!["catalog".into(), h.clone()]));
    assert_eq!(code, Some(0));
    assert_eq!(out, "secret/repo\n");

    let o = tokio::task::block_in_place(|| env.cmd().args(["logout", &host]).output().unwrap());
    assert!(o.status.success());
    let (code, _) = tokio::task::block_in_place(|| run(vec!["catalog".into(), h.clone()]));
    assert_eq!(code, Some(4));

    // podman's auth.json is read too.
    std::fs::create_dir_all(env.path("run/containers")).unwrap();
    std::fs::write(
        env.path("run/containers/auth.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"dTpw"}}}}}}"#),
    )
    .unwrap();
    let (code, out) = tokio::task::block_in_place(|| run(vec!["catalog".into(), h.clone()]));
    assert_eq!(code, Some(0));
    assert_eq!(out, "secret/repo\n");
}

/// A docker credential helper (`docker-credential-NAME`) in `dir`, keeping
/// its secrets as files in `dir/store/`, as the real ones keep them in a
/// keyring.
fn fake_helper(dir: &std::path::Path, name: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let script = format!(
        r#"#!/bin/sh
set -e
read -r input || true
case "$1" in
get)
    key=$(printf '%s' "$input" | od -An -tx1 | tr -d ' \n')
    if [ -f "{store}/$key" ]; then cat "{store}/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
store)
    url=$(printf '%s' "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
    key=$(printf '%s' "$url" | od -An -tx1 | tr -d ' \n')
    printf '%s' "$input" > "{store}/$key" ;;
erase)
    key=$(printf '%s' "$input" | od -An -tx1 | tr -d ' \n')
    rm -f "{store}/$key" ;;
esac
"#,
        store = store.display()
    );
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_helpers_are_used_for_login_and_lookups() {
    let host = basic_registry().await;
    let env = Env::new();
    let bin = env.path("helpers");
    fake_helper(&bin, "wharftest");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::fs::create_dir_all(env.path(".docker")).unwrap();
    std::fs::write(
        env.path(".docker/config.json"),
        r#"{"credsStore":"wharftest"}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = env.cmd().env("PATH", &path).args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let login = |user: &str, pw: &str| {
        let mut cmd = env.cmd();
        cmd.env("PATH", &path);
        login_with(cmd, &host, user, pw)
    };
    let o = tokio::task::block_in_place(|| login("u", "p"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The secret is in the helper's store, not in the file.
    let cfg = std::fs::read_to_string(env.path(".docker/config.json")).unwrap();
    assert!(!cfg.contains("dTpw") && !cfg.contains("\"p\""), "{cfg}");
    assert_eq!(std::fs::read_dir(bin.join("store")).unwrap().count(), 1);
    let (code, out) = tokio::task::block_in_place(|| run(&["catalog", &host]));
    assert_eq!((code, out.as_str()), (Some(0), "secret/repo\n"));
    // What docker login (or another tool) put in the helper is used as is.
    let o = tokio::task::block_in_place(|| {
        env.cmd()
            .env("PATH", &path)
            .args(["logout", &host])
            .output()
            .unwrap()
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_dir(bin.join("store")).unwrap().count(), 0);
    let (code, _) = tokio::task::block_in_place(|| run(&["catalog", &host]));
    assert_eq!(code, Some(4), "logged out");
    // credHelpers names a helper for one registry only.
    std::fs::write(
        env.path(".docker/config.json"),
        format!(r#"{{"credHelpers":{{"{host}":"wharftest"}}}}"#),
    )
    .unwrap();
    let o = tokio::task::block_in_place(|| login("u", "p"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_dir(bin.join("store")).unwrap().count(), 1);
    let (code, _) = tokio::task::block_in_place(|| run(&["catalog", &host]));
    assert_eq!(code, Some(0));
    // A helper that is not installed is named in the error.
    std::fs::write(
        env.path(".docker/config.json"),
        r#"{"credsStore":"nosuchhelper"}"#,
    )
    .unwrap();
    let o = tokio::task::block_in_place(|| {
        env.cmd()
            .env("PATH", &path)
            .args(["catalog", &host])
            .output()
            .unwrap()
    });
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("docker-credential-nosuchhelper is not on the PATH"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_asks_for_the_password_on_a_terminal() {
    let host = basic_registry().await;
    let env = Env::new();
    let Some(script) = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        panic!("script (util-linux) is needed to give wharf login a terminal");
    };
    // `script` runs the login on a pseudo-terminal; the password is typed
    // after the prompt appears.
    let line = format!("{} login {host} -u u", client_support::WHARF);
    let mut c = env.wrapper(script);
    c.args(["-qec", &line, "/dev/null"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let prompt = format!("Password for u@{host}: ");
    // Type the password once the prompt is there. (Whether it echoes is
    // rpassword's business, and racy to observe: the prompt is written just
    // before echo is turned off.)
    let out = tokio::task::block_in_place(|| {
        use std::io::Read as _;
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&out).contains(&prompt) {
            let n = stdout.read(&mut buf).unwrap();
            assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        stdin.write_all(b"p\n").unwrap();
        drop(stdin);
        stdout.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    });
    let o = tokio::task::block_in_place(|| child.wait_with_output().unwrap());
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("Login succeeded"), "{out:?}");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path(".docker/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["auths"][host.as_str()]["auth"], "dTpw", "base64 of u:p");
    // Without a terminal and without --password-stdin: a clear usage error.
    let o = tokio::task::block_in_place(|| {
        env.cmd()
            .args(["login", &host, "-u", "u"])
            .output()
            .unwrap()
    });
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--password-stdin"));
}
