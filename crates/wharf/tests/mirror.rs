//! The pull-through cache (`[[upstreams]]`, docs/mirror.md) against real
//! upstreams on loopback: another Wharf with token auth on (so every
//! upstream request goes through the challenge and token flow) and
//! Debian's `docker-registry` (Distribution 2.8) with Basic auth.
//! Upstream requests are counted from the upstreams' access logs. In S3
//! runs (`WHARF_TEST_S3_ENV`) the cache keeps its store in the bucket; the
//! upstreams stay on the filesystem.

mod common;

use common::*;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ------------------------------------------------------------------ setup

/// `wharf passwd USER` with the password on standard input.
fn passwd_hash(user: &str, password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["passwd", user, "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{password}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    line.split_once(':').unwrap().1.to_owned()
}

/// An upstream Wharf with token auth: `mirror` may pull, `pusher` may push.
struct Upstream {
    reg: Registry,
    _dir: tempfile::TempDir,
}

async fn upstream() -> Option<Upstream> {
    if external_url().is_some() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("upstream.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[auth.users]]
name = "mirror"
password_hash = "{}"
[[auth.users]]
name = "pusher"
password_hash = "{}"
[auth.token]
enabled = true
[[auth.policy]]
repos = ["**"]
pull = ["user:mirror", "user:pusher"]
push = ["user:pusher"]
[auth.throttle]
max_failures = 0
"#,
            passwd_hash("mirror", "mirror-pw"),
            passwd_hash("pusher", "pusher-pw")
        ),
    )
    .unwrap();
    // The upstream stays on the filesystem in S3 runs: the cache is what
    // is tested on S3.
    let reg = Registry::start_fs(&["--config", config.to_str().unwrap()]).await?;
    Some(Upstream { reg, _dir: dir })
}

impl Upstream {
    /// Let the harness's helpers push to `repos` (a token for them).
    async fn push_as_pusher(&mut self, repos: &[&str]) {
        let mut url = self.reg.url("/token?service=wharf");
        for r in repos {
            url.push_str(&format!("&scope=repository:{r}:pull,push"));
        }
        let r = client()
            .get(url)
            .basic_auth("pusher", Some("pusher-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", v["token"].as_str().unwrap())).unwrap(),
        );
        self.reg.client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .default_headers(h)
            .build()
            .unwrap();
    }

    /// Access-log lines of `method` on `path` answered 200.
    fn count(&self, method: &str, path: &str) -> usize {
        count_wharf(&self.reg.logs(), method, path)
    }

    /// Access-log lines of requests to `/v2/...` (not `/v2/` itself).
    fn api_requests(&self) -> usize {
        self.reg
            .logs()
            .lines()
            .filter(|l| {
                l.contains("wharf::access") && l.contains("path=/v2/") && !l.contains("path=/v2/ ")
            })
            .count()
    }
}

/// Requests answered 200 (not the 401s of the auth challenge, which a
/// client meets once before it fetches a token).
fn count_wharf(logs: &str, method: &str, path: &str) -> usize {
    logs.lines()
        .filter(|l| {
            l.contains("wharf::access")
                && l.contains(&format!("method={method} "))
                && l.contains(&format!("path={path} "))
                && l.contains("status=200 ")
        })
        .count()
}

/// The cache's config: one upstream at `url` under prefix `cache`.
fn cache_config(dir: &Path, url: &str, user: Option<(&str, &str)>, extra: &str) -> PathBuf {
    let creds = match user {
        Some((u, p)) => format!("username = \"{u}\"\npassword = \"{p}\"\n"),
        None => String::new(),
    };
    let path = dir.join("cache.toml");
    std::fs::write(
        &path,
        format!(
            "[[upstreams]]\nname = \"up\"\nurl = \"{url}\"\nprefix = \"cache\"\n{creds}{extra}\n"
        ),
    )
    .unwrap();
    path
}

async fn start_cache(config: &Path) -> Registry {
    Registry::start_with(&["--config", config.to_str().unwrap()])
        .await
        .expect("a local server")
}

async fn cache_of(up: &Upstream, dir: &Path, extra: &str) -> Registry {
    let config = cache_config(
        dir,
        &format!("http://{}", up.reg.host_port()),
        Some(("mirror", "mirror-pw")),
        extra,
    );
    start_cache(&config).await
}

async fn get_manifest(reg: &Registry, repo: &str, reference: &str) -> reqwest::Response {
    reg.client
        .get(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap()
}

fn cache_header(r: &reqwest::Response) -> String {
    header(r, "x-wharf-cache").unwrap_or_default()
}

/// GET a manifest through the cache: its digest and how it was served.
async fn pull_manifest(reg: &Registry, repo: &str, reference: &str) -> (String, String, Vec<u8>) {
    let r = get_manifest(reg, repo, reference).await;
    assert_eq!(r.status(), 200, "{repo}:{reference}: {}", reg.logs());
    let d = header(&r, "docker-content-digest").unwrap();
    let how = cache_header(&r);
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(sha256(&body), d);
    (d, how, body)
}

async fn pull_blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let r = reg.get_blob(repo, digest).await;
    assert_eq!(r.status(), 200, "{repo}@{digest}");
    assert_eq!(header(&r, "docker-content-digest").unwrap(), digest);
    let len = content_length(&r).unwrap();
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(body.len() as u64, len);
    assert_eq!(sha256(&body), digest);
    body
}

/// An image with `n` layers of `size` bytes each, pushed to `repo:tag`.
async fn push_image(reg: &Registry, repo: &str, tag: &str, n: usize, size: usize) -> Image {
    let cfg = to_bytes(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "nonce": nonce(),
    }));
    let config = reg.push_blob_desc(repo, OCI_CONFIG, &cfg).await;
    let mut layers = Vec::new();
    for i in 0..n {
        let data = pseudo_random(size, rand_seed() + i as u64);
        layers.push(reg.push_blob_desc(repo, OCI_LAYER, &data).await);
    }
    let manifest = oci_manifest(&config, &layers);
    reg.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    let digest = sha256(&manifest);
    Image {
        config,
        layers,
        manifest,
        digest,
    }
}

fn rand_seed() -> u64 {
    let n = nonce();
    n.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    })
}

async fn error_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json"),
        "status {status}"
    );
    let v: Value = r.json().await.unwrap();
    (status, v["errors"][0].clone())
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn pulls_through_a_wharf_with_token_auth() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Docker Hub's rule made explicit: cache/app-x is library/app-x.
    let cache = cache_of(&up, dir.path(), "docker_hub_library = true").await;
    let name = format!("app-{}", nonce());
    let remote = format!("library/{name}");
    let local = format!("cache/{name}");
    let deep_remote = format!("team/{name}/tool");
    up.push_as_pusher(&[&remote, &deep_remote]).await;
    let img = push_image(&up.reg, &remote, "v1", 2, 300_000).await;

    // By tag, then by digest: digests identical to the upstream's.
    let (d, how, body) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "miss"));
    assert_eq!(body, img.manifest);
    let r = cache.head_m(&format!("/v2/{local}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), img.digest);
    assert_eq!(header(&r, "content-type").unwrap(), OCI_MANIFEST);
    let (d, how, _) = pull_manifest(&cache, &local, &img.digest).await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "hit"));
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
        let blob_path = format!("/v2/{remote}/blobs/{}", desc.digest);
        assert_eq!(up.count("GET", &blob_path), 1, "{blob_path}");
    }
    assert_eq!(
        up.count("GET", &format!("/v2/{remote}/manifests/{}", img.digest)),
        1
    );

    // The second pull asks the upstream nothing.
    let before = up.api_requests();
    for _ in 0..2 {
        let (d, how, _) = pull_manifest(&cache, &local, "v1").await;
        assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "hit"));
        for desc in std::iter::once(&img.config).chain(&img.layers) {
            pull_blob(&cache, &local, &desc.digest).await;
            let r = cache
                .head(&format!("/v2/{local}/blobs/{}", desc.digest))
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(content_length(&r), Some(desc.size as u64));
        }
    }
    assert_eq!(
        up.api_requests(),
        before,
        "the second pull reached the upstream"
    );

    // A name of several components keeps its path upstream.
    let deep = push_image(&up.reg, &deep_remote, "1.0", 1, 1000).await;
    let (d, _, _) = pull_manifest(&cache, &format!("cache/{deep_remote}"), "1.0").await;
    assert_eq!(d, deep.digest);

    // HEAD of an uncached blob asks the upstream (HEAD) and fetches nothing;
    // a Range of it is served while it is fetched.
    let data = pseudo_random(100_000, 7);
    let extra = up.reg.push_blob(&remote, &data).await;
    let r = cache.head(&format!("/v2/{local}/blobs/{extra}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_length(&r), Some(100_000));
    assert_eq!(header(&r, "docker-content-digest").unwrap(), extra);
    assert_eq!(up.count("GET", &format!("/v2/{remote}/blobs/{extra}")), 0);
    let r = cache
        .client
        .get(cache.url(&format!("/v2/{local}/blobs/{extra}")))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range").unwrap(), "bytes 10-19/100000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);

    // What the upstream does not have: its 404, naming it.
    let (status, e) = error_json(get_manifest(&cache, &local, "nope").await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("MANIFEST_UNKNOWN"))
    );
    assert!(
        e["message"].as_str().unwrap().contains("upstream up"),
        "{e}"
    );
    let missing = sha256(b"not there");
    let (status, e) = error_json(cache.get_blob(&local, &missing).await).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("BLOB_UNKNOWN")));
    assert_eq!(e["detail"]["upstream"], "up");

    // The cached repository is listed, with what is cached.
    let r = cache.get(&format!("/v2/{local}/tags/list")).await;
    assert_eq!(json_body(r).await["tags"], serde_json::json!(["v1"]));
}

#[tokio::test]
async fn tags_are_revalidated_after_their_ttl() {
    // What "within the TTL" means depends on how long the steps take on a
    // loaded machine: each exact expectation below is checked only when
    // the steps it depends on took less than the TTL (they always do on a
    // machine that is not starved); otherwise the weaker one that holds
    // whatever the timing.
    const TTL: Duration = Duration::from_secs(3);
    let past_ttl = TTL + Duration::from_millis(100);
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_of(
        &up,
        dir.path(),
        &format!("tag_ttl_secs = {}", TTL.as_secs()),
    )
    .await;
    let remote = repo("ttl/app");
    let local = format!("cache/{remote}");
    let head_path = format!("/v2/{remote}/manifests/latest");
    up.push_as_pusher(&[&remote]).await;
    let first = push_image(&up.reg, &remote, "latest", 1, 1000).await;
    let checked = Instant::now();
    let (d, how, _) = pull_manifest(&cache, &local, "latest").await;
    assert_eq!((d.as_str(), how.as_str()), (first.digest.as_str(), "miss"));

    // The tag moves upstream; within the TTL the cache still serves the
    // old digest without asking.
    let second = push_image(&up.reg, &remote, "latest", 1, 1000).await;
    let heads = up.count("HEAD", &head_path);
    let (d, how, _) = pull_manifest(&cache, &local, "latest").await;
    if checked.elapsed() >= TTL {
        // The TTL ran out on the way (the cache may have seen the move):
        // what follows would test nothing.
        eprintln!("the first steps took longer than the TTL: the rest is not checked");
        return;
    }
    assert_eq!((d.as_str(), how.as_str()), (first.digest.as_str(), "hit"));
    assert_eq!(up.count("HEAD", &head_path), heads);

    // Past it: a HEAD finds the new digest, which is fetched (by digest).
    tokio::time::sleep(past_ttl).await;
    let heads = up.count("HEAD", &head_path);
    let (d, how, _) = pull_manifest(&cache, &local, "latest").await;
    assert_eq!((d.as_str(), how.as_str()), (second.digest.as_str(), "miss"));
    assert_eq!(up.count("HEAD", &head_path), heads + 1);
    assert_eq!(
        up.count("GET", &format!("/v2/{remote}/manifests/{}", second.digest)),
        1
    );

    // Unchanged on the next revalidation: one HEAD, no GET at all.
    tokio::time::sleep(past_ttl).await;
    let gets = up.count("GET", &format!("/v2/{remote}/manifests/{}", second.digest))
        + up.count("GET", &format!("/v2/{remote}/manifests/latest"));
    let (d, how, _) = pull_manifest(&cache, &local, "latest").await;
    assert_eq!(
        (d.as_str(), how.as_str()),
        (second.digest.as_str(), "revalidated")
    );
    assert_eq!(up.count("HEAD", &head_path), heads + 2);
    assert_eq!(
        up.count("GET", &format!("/v2/{remote}/manifests/{}", second.digest))
            + up.count("GET", &format!("/v2/{remote}/manifests/latest")),
        gets
    );
    // Concurrent pulls of an expired tag: one HEAD for all of them.
    tokio::time::sleep(past_ttl).await;
    let started = Instant::now();
    let all =
        futures_util::future::join_all((0..6).map(|_| pull_manifest(&cache, &local, "latest")))
            .await;
    let took = started.elapsed();
    for (d, how, _) in &all {
        assert_eq!(d, &second.digest);
        assert!(how == "revalidated" || how == "hit", "{how}");
    }
    let revalidations = up.count("HEAD", &head_path) - (heads + 2);
    assert!(revalidations >= 1, "an expired tag was not revalidated");
    if took < TTL {
        assert_eq!(revalidations, 1, "concurrent pulls of an expired tag");
    }

    // The old manifest stays readable by digest.
    let (d, how, _) = pull_manifest(&cache, &local, &first.digest).await;
    assert_eq!((d.as_str(), how.as_str()), (first.digest.as_str(), "hit"));
}

#[tokio::test]
async fn stale_if_error_serves_cached_tags_while_the_upstream_is_down() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_of(
        &up,
        dir.path(),
        "tag_ttl_secs = 1\nmax_stale_secs = 4\ntimeout_secs = 2",
    )
    .await;
    let remote = repo("stale/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let img = push_image(&up.reg, &remote, "v1", 1, 5000).await;
    push_image(&up.reg, &remote, "never-pulled", 1, 1000).await;
    let (d, _, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!(d, img.digest);
    let checked = Instant::now();
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
    }
    let upstream_url = format!("http://{}", up.reg.host_port());
    up.reg.kill_hard();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Past the TTL, the upstream unreachable: served stale, and said so.
    let r = get_manifest(&cache, &local, "v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_header(&r), "stale");
    assert_eq!(
        header(&r, "warning").unwrap(),
        "110 - \"Response is Stale\""
    );
    assert_eq!(header(&r, "docker-content-digest").unwrap(), img.digest);
    assert!(cache.logs().contains("serving the cached tag stale"));
    // Digests and blobs are immutable: served as before.
    let (_, how, _) = pull_manifest(&cache, &local, &img.digest).await;
    assert_eq!(how, "hit");
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
    }

    // Nothing cached: an error naming the upstream and what went wrong.
    let (status, e) = error_json(get_manifest(&cache, &local, "never-pulled").await).await;
    assert_eq!((status, e["code"].as_str()), (502, Some("UNKNOWN")));
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("upstream up ({upstream_url})")),
        "{msg}"
    );
    assert_eq!(e["detail"]["upstream"], "up");
    let (status, _) = error_json(cache.get_blob(&local, &sha256(b"x")).await).await;
    assert_eq!(status, 502);

    // Past max_stale_secs: no longer served.
    let wait = Duration::from_millis(4200).saturating_sub(checked.elapsed());
    tokio::time::sleep(wait).await;
    let (status, e) = error_json(get_manifest(&cache, &local, "v1").await).await;
    assert_eq!(status, 502, "{e}");
}

#[tokio::test]
async fn stale_if_error_when_the_upstream_answers_429_or_stalls() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let proxy = FaultyProxy::start(up.reg.host_port().to_owned(), Fault::None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = cache_config(
        dir.path(),
        &format!("http://{}", proxy.addr),
        Some(("mirror", "mirror-pw")),
        "tag_ttl_secs = 1\ntimeout_secs = 1",
    );
    let cache = start_cache(&config).await;
    let remote = repo("faulty/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let img = push_image(&up.reg, &remote, "v1", 1, 1000).await;
    push_image(&up.reg, &remote, "v2", 1, 1000).await;
    let (d, _, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!(d, img.digest);

    for (fault, status, code) in [
        (Fault::TooManyRequests, 503, "TOOMANYREQUESTS"),
        (Fault::Stall, 504, "UNKNOWN"),
    ] {
        proxy.set(fault);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let started = Instant::now();
        let r = get_manifest(&cache, &local, "v1").await;
        assert_eq!(r.status(), 200, "{fault:?}");
        assert_eq!(cache_header(&r), "stale", "{fault:?}");
        assert_eq!(header(&r, "docker-content-digest").unwrap(), img.digest);
        // A stalled upstream costs the client the upstream's timeout, no more.
        assert!(started.elapsed() < Duration::from_secs(10), "{fault:?}");
        // Nothing cached: the upstream's status, named.
        let (st, e) = error_json(get_manifest(&cache, &local, "v2").await).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (status, Some(code)),
            "{fault:?}: {e}"
        );
        assert!(
            e["message"].as_str().unwrap().contains("upstream up"),
            "{e}"
        );
        if fault == Fault::TooManyRequests {
            assert_eq!(e["detail"]["status"], 429);
        }
    }

    // The upstream back: the tag is revalidated, v2 fetched.
    proxy.set(Fault::None);
    let (d, how, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!(
        (d.as_str(), how.as_str()),
        (img.digest.as_str(), "revalidated")
    );
    pull_manifest(&cache, &local, "v2").await;
}

#[tokio::test]
async fn concurrent_pulls_of_an_uncached_blob_share_one_upstream_get() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(cache_of(&up, dir.path(), "").await);
    let remote = repo("flight/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let data = pseudo_random(24 << 20, rand_seed());
    let digest = up.reg.push_blob(&remote, &data).await;
    let n = 8;
    let bodies = concurrently(n, |_| {
        let (cache, local, digest) = (cache.clone(), local.clone(), digest.clone());
        async move {
            let c = fresh_client();
            let r = c
                .get(cache.url(&format!("/v2/{local}/blobs/{digest}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(content_length(&r), Some(24 << 20));
            sha256(&r.bytes().await.unwrap())
        }
    })
    .await;
    assert_eq!(bodies.len(), n);
    assert!(bodies.iter().all(|d| *d == digest));
    let path = format!("/v2/{remote}/blobs/{digest}");
    assert_eq!(up.count("GET", &path), 1, "upstream blob GETs");
    // And later ones come from the store.
    pull_blob(&cache, &local, &digest).await;
    assert_eq!(up.count("GET", &path), 1);
}

/// What the [`FaultyProxy`] does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Pass everything through.
    None,
    /// Close once this many bytes went from the upstream to the client.
    CutAfter(usize),
    /// Answer every request 429 Too Many Requests.
    TooManyRequests,
    /// Accept, read, never answer.
    Stall,
}

/// A TCP proxy in front of an upstream that misbehaves on demand. A
/// change of mode closes the connections open so far (clients reconnect
/// and meet the new mode).
struct FaultyProxy {
    addr: String,
    mode: tokio::sync::watch::Sender<Fault>,
}

impl FaultyProxy {
    async fn start(target: String, mode: Fault) -> FaultyProxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::watch::channel(mode);
        tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let mut rx = rx.clone();
                let mode = *rx.borrow_and_update();
                let target = target.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = Self::serve(client, target, mode) => {},
                        _ = rx.changed() => {},
                    }
                });
            }
        });
        FaultyProxy { addr, mode: tx }
    }

    fn set(&self, mode: Fault) {
        self.mode.send_replace(mode);
    }

    async fn serve(mut client: tokio::net::TcpStream, target: String, mode: Fault) {
        let limit = match mode {
            Fault::None => usize::MAX,
            Fault::CutAfter(n) => n,
            Fault::TooManyRequests => {
                let mut buf = vec![0u8; 64 << 10];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
                let resp = format!(
                    "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(resp.as_bytes()).await;
                let _ = client.shutdown().await;
                return;
            }
            Fault::Stall => {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = client.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
        };
        let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
            return;
        };
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = async {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
            let _ = sw.shutdown().await;
        };
        let down = async {
            let mut passed = 0usize;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n.min(limit.saturating_sub(passed)),
                };
                if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                passed += n;
            }
            let _ = cw.shutdown().await;
        };
        tokio::select! {
            _ = up => {},
            _ = down => {},
        }
    }
}

#[tokio::test]
async fn a_blob_transfer_cut_midway_leaves_nothing_and_a_retry_succeeds() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let proxy = FaultyProxy::start(up.reg.host_port().to_owned(), Fault::CutAfter(1 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = cache_config(
        dir.path(),
        &format!("http://{}", proxy.addr),
        Some(("mirror", "mirror-pw")),
        "",
    );
    let mut cache = start_cache(&config).await;
    let remote = repo("cut/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let data = pseudo_random(8 << 20, rand_seed());
    let digest = up.reg.push_blob(&remote, &data).await;
    let hex = digest.trim_start_matches("sha256:").to_owned();
    let url = cache.url(&format!("/v2/{local}/blobs/{digest}"));

    // Twice while the upstream cuts every transfer after 1 MiB: the
    // client got bytes while the blob was fetched (it did not wait for the
    // whole), then its body breaks off, and the cache keeps nothing.
    for attempt in 1..=2 {
        let mut r = fresh_client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(content_length(&r), Some(8 << 20));
        let mut got = 0usize;
        while let Ok(Some(chunk)) = r.chunk().await {
            got += chunk.len();
        }
        assert!(
            (512 << 10..8 << 20).contains(&got),
            "attempt {attempt}: {got} bytes before the break"
        );
        // Wait for the failed fetch to be given up.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cache
            .logs()
            .matches("nothing was cached")
            .count()
            .ge(&attempt)
        {
            assert!(Instant::now() < deadline, "{}", cache.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(data_dir) = cache.data_dir().filter(|_| !cache.on_s3()) {
            let blob = data_dir.join(format!("blobs/sha256/{}/{hex}~", &hex[..2]));
            assert!(!blob.exists(), "a partial blob became visible");
        }
    }
    // Every attempt went upstream again (nothing partial was served).
    assert_eq!(up.count("GET", &format!("/v2/{remote}/blobs/{digest}")), 2);

    // The retry, with the upstream whole again, succeeds.
    proxy.set(Fault::None);
    let body = pull_blob(&cache, &local, &digest).await;
    assert_eq!(body, data);
    pull_blob(&cache, &local, &digest).await;
    assert_eq!(up.count("GET", &format!("/v2/{remote}/blobs/{digest}")), 3);

    // Nothing corrupt in the cache's store.
    let store = store_of(&cache);
    cache.kill_hard();
    let out = wharf_command(&["fsck", "--store", &store])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// containerd's mirror convention: `/v2/<name>/...?ns=<registry>` with the
/// name as it is upstream, routed by the upstream's `registry_host` onto
/// `<prefix>/<name>`, the repository prefix-routed pulls use; the cache's
/// auth policy judges that local name.
#[tokio::test]
async fn ns_requests_are_routed_to_the_upstream_of_that_registry() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let n = nonce();
    let (ok_remote, team_remote) = (format!("ok/app-{n}"), format!("team/app-{n}"));
    up.push_as_pusher(&[&ok_remote, &team_remote]).await;
    let img = push_image(&up.reg, &ok_remote, "v1", 1, 50_000).await;
    push_image(&up.reg, &team_remote, "v1", 1, 1000).await;
    // Anonymous pulls of cache/ok/** only; team/** (the bare name of what
    // ?ns= maps to cache/team/**) does not grant the cached repository.
    let extra = r#"registry_host = "Registry.Test.Example:5000"
[auth.token]
enabled = true
[[auth.policy]]
repos = ["cache/ok/**", "team/**"]
pull = ["anonymous"]
"#;
    let cache = cache_of(&up, dir.path(), extra).await;
    let ns = "?ns=registry.test.example:5000";

    // By tag with ?ns=: fetched from the upstream, digest identical.
    let path = format!("/v2/{ok_remote}/manifests/v1{ns}");
    let r = cache.get_m(&path).await;
    assert_eq!(r.status(), 200, "{}", cache.logs());
    assert_eq!(header(&r, "docker-content-digest").unwrap(), img.digest);
    assert_eq!(cache_header(&r), "miss");
    assert_eq!(r.bytes().await.unwrap().as_ref(), img.manifest.as_slice());
    let r = cache.head_m(&path).await;
    assert_eq!((r.status().as_u16(), cache_header(&r)), (200, "hit".into()));
    // The prefix-routed name is the same cache: a hit, nothing upstream.
    let local = format!("cache/{ok_remote}");
    let (d, how, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "hit"));
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        let r = cache
            .get(&format!("/v2/{ok_remote}/blobs/{}{ns}", desc.digest))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(sha256(&r.bytes().await.unwrap()), desc.digest);
        pull_blob(&cache, &local, &desc.digest).await;
        let r = cache
            .head(&format!("/v2/{ok_remote}/blobs/{}{ns}", desc.digest))
            .await;
        assert_eq!(content_length(&r), Some(desc.size as u64));
        assert_eq!(
            up.count("GET", &format!("/v2/{ok_remote}/blobs/{}", desc.digest)),
            1
        );
    }
    let r = cache.get(&format!("/v2/{local}/tags/list")).await;
    assert_eq!(json_body(r).await["tags"], serde_json::json!(["v1"]));
    // The local repository with ?ns= is not the same name: cache/cache/...
    let r = cache.get_m(&format!("/v2/{local}/manifests/v1{ns}")).await;
    assert_eq!(r.status(), 401);

    // The policy judges the local name: team/** does not grant cache/team/**,
    // and the challenge names the local repository.
    let r = cache
        .get_m(&format!("/v2/{team_remote}/manifests/v1{ns}"))
        .await;
    assert_eq!(r.status(), 401);
    let challenge = header(&r, "www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(&format!("repository:cache/{team_remote}:pull")),
        "{challenge}"
    );

    // A registry no upstream is: 404 NAME_UNKNOWN saying so, HEAD too
    // (the upstream's url host is not its registry host here).
    let up_host = up.reg.host_port().to_owned();
    for other in ["quay.io", up_host.as_str(), "docker.io"] {
        let r = cache
            .get_m(&format!("/v2/{ok_remote}/manifests/v1?ns={other}"))
            .await;
        let (status, e) = error_json(r).await;
        assert_eq!((status, e["code"].as_str()), (404, Some("NAME_UNKNOWN")));
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("not mirrored") && msg.contains(other), "{msg}");
        let r = cache
            .head(&format!(
                "/v2/{ok_remote}/blobs/{}?ns={other}",
                img.config.digest
            ))
            .await;
        assert_eq!(r.status(), 404);
    }
    // Without ?ns= the bare name is an ordinary (here empty) repository.
    let r = cache.get_m(&format!("/v2/{ok_remote}/manifests/v1")).await;
    assert_eq!(r.status(), 401, "no rule grants {ok_remote}");
}

/// A free loopback port (bound and let go: the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn an_upstreams_own_listener_serves_it_at_the_root() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let n = nonce();
    let remote = format!("library/app-{n}");
    let mine = format!("library/mine-{n}");
    up.push_as_pusher(&[&remote]).await;
    let img = push_image(&up.reg, &remote, "v1", 2, 60_000).await;
    // The Docker daemon's registry-mirrors sends bare Docker Hub names
    // (/v2/library/alpine/...) to a mirror URL without a path: the
    // upstream's own address serves them as cache/<name>.
    let dir = tempfile::tempdir().unwrap();
    let root = format!("127.0.0.1:{}", free_port());
    let cache = cache_of(&up, dir.path(), &format!("listen = \"{root}\"")).await;
    let at = |path: &str| format!("http://{root}{path}");
    let http = client();
    let get = |path: String| http.get(at(&path)).header("Accept", ACCEPT_ALL).send();

    let r = get(format!("/v2/{remote}/manifests/v1")).await.unwrap();
    assert_eq!(r.status(), 200, "{}", cache.logs());
    assert_eq!(header(&r, "docker-content-digest").unwrap(), img.digest);
    assert_eq!(cache_header(&r), "miss");
    assert_eq!(r.bytes().await.unwrap().as_ref(), img.manifest.as_slice());
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        let r = get(format!("/v2/{remote}/blobs/{}", desc.digest))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(sha256(&r.bytes().await.unwrap()), desc.digest);
        let r = http
            .head(at(&format!("/v2/{remote}/blobs/{}", desc.digest)))
            .send()
            .await
            .unwrap();
        assert_eq!(content_length(&r), Some(desc.size as u64));
    }
    // The same cache as the prefix-routed name: hits, nothing upstream.
    let local = format!("cache/{remote}");
    let before = up.api_requests();
    let (d, how, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "hit"));
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
        let blob_path = format!("/v2/{remote}/blobs/{}", desc.digest);
        assert_eq!(up.count("GET", &blob_path), 1, "{blob_path}");
    }
    let r = get(format!("/v2/{remote}/manifests/{}", img.digest))
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), cache_header(&r)), (200, "hit".into()));
    assert_eq!(
        up.api_requests(),
        before,
        "a cached pull reached the upstream"
    );
    let r = get(format!("/v2/{remote}/tags/list")).await.unwrap();
    assert_eq!(json_body(r).await["tags"], serde_json::json!(["v1"]));
    // ?ns= still names the registry; the main address is unchanged (the
    // bare name is an ordinary, here empty, repository there).
    let r = get(format!("/v2/{remote}/manifests/v1?ns=quay.io"))
        .await
        .unwrap();
    assert_eq!(error_json(r).await.1["code"], "NAME_UNKNOWN");
    let r = cache.get_m(&format!("/v2/{remote}/manifests/v1")).await;
    assert_eq!(r.status(), 404);
    let r = http.get(at("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Pushes there follow the upstream's push setting: refused by default.
    let r = http
        .post(at(&format!("/v2/{mine}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    let (status, e) = error_json(r).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("DENIED")));
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("cache/{mine}")) && msg.contains("push = true"),
        "{msg}"
    );

    // With push = true they land in cache/<name>, and the upload's
    // Location names the repository as the client does there.
    let dir2 = tempfile::tempdir().unwrap();
    let root2 = format!("127.0.0.1:{}", free_port());
    let open = cache_of(
        &up,
        dir2.path(),
        &format!("listen = \"{root2}\"\npush = true"),
    )
    .await;
    let data = unique_bytes("pushed at the root");
    let d = sha256(&data);
    let r = http
        .post(format!("http://{root2}/v2/{mine}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", open.logs());
    let loc = header(&r, "location").unwrap();
    let path = loc.strip_prefix(&format!("http://{root2}")).unwrap_or(&loc);
    assert!(
        path.starts_with(&format!("/v2/{mine}/blobs/uploads/")),
        "{loc}"
    );
    let r = http
        .put(format!("http://{root2}{path}"))
        .query(&[("digest", d.as_str())])
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let loc = header(&r, "location").unwrap();
    assert!(loc.ends_with(&format!("/v2/{mine}/blobs/{d}")), "{loc}");
    let config = Desc::new(OCI_CONFIG, &data);
    let manifest = oci_manifest(&config, &[]);
    let r = http
        .put(format!("http://{root2}/v2/{mine}/manifests/v1"))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", open.logs());
    let (got, _, _) = pull_manifest(&open, &format!("cache/{mine}"), "v1").await;
    assert_eq!(got, sha256(&manifest));
    assert_eq!(pull_blob(&open, &format!("cache/{mine}"), &d).await, data);
}

#[tokio::test]
async fn the_root_listener_is_authorized_by_the_local_name() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let n = nonce();
    let (open, closed) = (format!("library/app-{n}"), format!("other/app-{n}"));
    up.push_as_pusher(&[&open, &closed]).await;
    let img = push_image(&up.reg, &open, "v1", 1, 1000).await;
    push_image(&up.reg, &closed, "v1", 1, 1000).await;
    // Anonymous pulls of cache/library/** only; other/** (the bare name
    // of what the root listener maps to cache/other/**) grants nothing.
    let dir = tempfile::tempdir().unwrap();
    let root = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        r#"listen = "{root}"
[auth.token]
enabled = true
[[auth.policy]]
repos = ["cache/library/**", "other/**"]
pull = ["anonymous"]
"#
    );
    let _cache = cache_of(&up, dir.path(), &extra).await;
    let http = client();
    let r = http
        .get(format!("http://{root}/v2/{open}/manifests/v1"))
        .header("Accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), img.digest);
    let r = http
        .get(format!("http://{root}/v2/{closed}/manifests/v1"))
        .header("Accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = header(&r, "www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(&format!("repository:cache/{closed}:pull"))
            && challenge.contains(&format!("realm=\"http://{root}/token\"")),
        "{challenge}"
    );
}

#[tokio::test]
async fn a_listen_address_in_use_stops_the_server_with_a_clear_message() {
    if external_url().is_some() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = cache_config(
        dir.path(),
        "http://127.0.0.1:9",
        None,
        &format!("listen = \"{addr}\""),
    );
    let out = wharf_command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} (listen of upstream up)")),
        "{err}"
    );
}

#[tokio::test]
async fn pushes_into_a_mirrored_prefix_are_refused() {
    let Some(up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_of(&up, dir.path(), "").await;
    let local = repo("cache/team/app");
    let refused = |r: reqwest::Response| async move {
        let (status, e) = error_json(r).await;
        assert_eq!((status, e["code"].as_str()), (403, Some("DENIED")));
        let msg = e["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("pull-through cache of upstream up"), "{msg}");
        assert!(msg.contains("push = true"), "{msg}");
    };
    let r = cache
        .client
        .post(cache.url(&format!("/v2/{local}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    refused(r).await;
    let body = oci_manifest(&Desc::new(OCI_CONFIG, b"{}"), &[]);
    let r = cache
        .client
        .put(cache.url(&format!("/v2/{local}/manifests/v1")))
        .header("Content-Type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    refused(r).await;
    // A mount into the prefix is a push too.
    let own = repo("own/app");
    let d = cache.push_blob(&own, b"mountable").await;
    let r = cache
        .client
        .post(cache.url(&format!("/v2/{local}/blobs/uploads/?mount={d}&from={own}")))
        .send()
        .await
        .unwrap();
    refused(r).await;
    // Repositories outside the prefix take pushes as ever.
    cache.push_image(&own, "v1").await;

    // With push = true the prefix takes them.
    let dir2 = tempfile::tempdir().unwrap();
    let open = cache_of(&up, dir2.path(), "push = true").await;
    open.push_image(&local, "v1").await;
    let r = get_manifest(&open, &local, "v1").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn skopeo_copies_through_the_cache() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_of(&up, dir.path(), "").await;
    let remote = repo("skopeo/app");
    up.push_as_pusher(&[&remote]).await;
    let img = push_image(&up.reg, &remote, "v1", 2, 200_000).await;
    let dest = dir.path().join("copy");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/cache/{remote}:v1", cache.host_port()))
        .arg(format!("dir:{}", dest.display()))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The manifest as the upstream has it, and every blob.
    let manifest = std::fs::read(dest.join("manifest.json")).unwrap();
    assert_eq!(sha256(&manifest), img.digest);
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        let hex = desc.digest.trim_start_matches("sha256:");
        let blob = std::fs::read(dest.join(hex)).unwrap();
        assert_eq!(sha256(&blob), desc.digest);
    }
}

// ----------------------------------------------------- Distribution 2.8

/// Debian's `docker-registry` with Basic auth (htpasswd), its access log
/// in a file.
struct Distribution {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Distribution {
    async fn start() -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let out = Command::new("htpasswd")
            .args(["-Bbn", "mirror", "mirror-pw"])
            .output()
            .expect("htpasswd (apache2-utils)");
        assert!(out.status.success());
        std::fs::write(&htpasswd, &out.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                dir.path().join("data").display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("/usr/bin/docker-registry");
        let d = Distribution {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = client().get(d.url("/v2/")).send().await
                && r.status() == 401
            {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                d.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Access-log lines of `method` on `path` answered 200 (combined log
    /// format: `"GET /v2/... HTTP/1.1" 200 ...`).
    fn count(&self, method: &str, path: &str) -> usize {
        let needle = format!("\"{method} {path} HTTP/");
        self.logs()
            .lines()
            .filter(|l| {
                l.split_once(&needle).is_some_and(|(_, rest)| {
                    rest.split_once("\" ")
                        .is_some_and(|(_, s)| s.starts_with("200 "))
                })
            })
            .count()
    }

    async fn push_blob(&self, repo: &str, data: &[u8]) -> Desc {
        let c = client();
        let r = c
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .basic_auth("mirror", Some("mirror-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let loc = location(&r);
        let loc = absolute_location(&self.url(""), &loc);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let d = sha256(data);
        let r = c
            .put(format!("{loc}{sep}digest={d}"))
            .basic_auth("mirror", Some("mirror-pw"))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        Desc::new(OCI_LAYER, data)
    }

    async fn push_image(&self, repo: &str, tag: &str) -> Image {
        let cfg = to_bytes(
            &serde_json::json!({"architecture": "amd64", "os": "linux", "nonce": nonce()}),
        );
        let mut config = self.push_blob(repo, &cfg).await;
        config.media_type = DOCKER_CONFIG.into();
        let mut layers = Vec::new();
        for i in 0..2 {
            let mut l = self
                .push_blob(repo, &pseudo_random(400_000, rand_seed() + i))
                .await;
            l.media_type = DOCKER_LAYER.into();
            layers.push(l);
        }
        let manifest = docker_manifest(&config, &layers);
        let r = client()
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .basic_auth("mirror", Some("mirror-pw"))
            .header("Content-Type", DOCKER_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        let digest = sha256(&manifest);
        Image {
            config,
            layers,
            manifest,
            digest,
        }
    }
}

#[tokio::test]
async fn pulls_through_distribution_and_serves_from_cache_when_it_is_gone() {
    if external_url().is_some() {
        return;
    }
    let mut dist = Distribution::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cache_config(
        dir.path(),
        &format!("http://{}", dist.addr),
        Some(("mirror", "mirror-pw")),
        "",
    );
    let cache = start_cache(&config).await;
    let remote = repo("dist/app");
    let local = format!("cache/{remote}");
    let img = dist.push_image(&remote, "v1").await;

    let (d, how, body) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "miss"));
    assert_eq!(body, img.manifest);
    let r = get_manifest(&cache, &local, "v1").await;
    assert_eq!(header(&r, "content-type").unwrap(), DOCKER_MANIFEST);
    let (d, _, _) = pull_manifest(&cache, &local, &img.digest).await;
    assert_eq!(d, img.digest);
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
        assert_eq!(
            dist.count("GET", &format!("/v2/{remote}/blobs/{}", desc.digest)),
            1,
            "{}",
            dist.logs()
        );
    }

    // The upstream gone: everything pulled is served from the cache.
    let _ = dist.child.kill();
    let _ = dist.child.wait();
    let (d, how, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "hit"));
    pull_manifest(&cache, &local, &img.digest).await;
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
    }
}

#[tokio::test]
async fn a_bad_upstream_config_stops_the_server_with_a_clear_message() {
    if external_url().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[upstreams]]\nname = \"hub\"\nurl = \"registry-1.docker.io\"\nprefix = \"dockerhub\"\n",
    )
    .unwrap();
    let out = wharf_command(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(dir.path().join("data"))
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstreams #1 (hub): url \"registry-1.docker.io\" is not a URL"),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs the S3 backend: run by tests/run-all.sh with WHARF_TEST_S3_ENV"]
async fn replicas_share_the_cache_and_when_tags_were_checked() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = cache_of(&up, dir.path(), "").await;
    let b = a.start_replica().await;
    let remote = repo("replicas/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let img = push_image(&up.reg, &remote, "v1", 2, 100_000).await;
    let (d, how, _) = pull_manifest(&a, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "miss"));
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        pull_blob(&a, &local, &desc.digest).await;
    }
    // The other replica finds the tag checked (the time is in the bucket)
    // and the content cached: it asks the upstream nothing.
    let before = up.api_requests();
    let (d, how, _) = pull_manifest(&b, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "hit"));
    for desc in std::iter::once(&img.config).chain(&img.layers) {
        pull_blob(&b, &local, &desc.digest).await;
    }
    assert_eq!(up.api_requests(), before);
}

// ------------------------------------------------------------ fallbacks

impl Distribution {
    async fn push_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
        let r = client()
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .basic_auth("mirror", Some("mirror-pw"))
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
}

/// The same image (same bytes, same digests) pushed to `repo:tag` at both
/// the Wharf upstream and Distribution.
async fn push_to_both(up: &Upstream, dist: &Distribution, repo: &str, tag: &str) -> Image {
    let cfg = to_bytes(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "nonce": nonce(),
    }));
    let config = up.reg.push_blob_desc(repo, OCI_CONFIG, &cfg).await;
    dist.push_blob(repo, &cfg).await;
    let mut layers = Vec::new();
    for i in 0..2 {
        let data = pseudo_random(200_000, rand_seed() + i);
        layers.push(up.reg.push_blob_desc(repo, OCI_LAYER, &data).await);
        dist.push_blob(repo, &data).await;
    }
    let manifest = oci_manifest(&config, &layers);
    up.reg
        .push_manifest(repo, tag, OCI_MANIFEST, &manifest)
        .await;
    dist.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    let digest = sha256(&manifest);
    Image {
        config,
        layers,
        manifest,
        digest,
    }
}

/// An upstream with a fallback: the primary a Wharf with token auth, the
/// fallback Debian's `docker-registry` with Basic auth and its own
/// credentials, both serving the same images. While the primary is down
/// the fallback serves tags (revalidated and new), manifests and blobs;
/// when both are down cached tags are served stale and the error for what
/// is not cached names both registries and their answers.
#[tokio::test]
async fn fallbacks_serve_when_the_primary_is_down() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let mut dist = Distribution::start().await;
    let dir = tempfile::tempdir().unwrap();
    let primary_url = format!("http://{}", up.reg.host_port());
    let fallback_url = format!("http://{}", dist.addr);
    let extra = format!(
        "tag_ttl_secs = 1\ntimeout_secs = 2\n[[upstreams.fallbacks]]\nurl = \"{fallback_url}\"\nusername = \"mirror\"\npassword = \"mirror-pw\"\n"
    );
    let cache = cache_of(&up, dir.path(), &extra).await;
    let remote = repo("fallback/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let a = push_to_both(&up, &dist, &remote, "a").await;
    let b = push_to_both(&up, &dist, &remote, "b").await;
    let c = push_to_both(&up, &dist, &remote, "c").await;

    // The primary up: it serves, the fallback is not asked.
    let fallback_requests = |dist: &Distribution| {
        dist.logs()
            .lines()
            .filter(|l| l.contains(&format!(" /v2/{remote}/")) && l.contains("\" 200 "))
            .count()
    };
    let pushed = fallback_requests(&dist);
    let (d, how, _) = pull_manifest(&cache, &local, "a").await;
    assert_eq!((d.as_str(), how.as_str()), (a.digest.as_str(), "miss"));
    for desc in std::iter::once(&a.config).chain(&a.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
    }
    assert_eq!(
        up.count("GET", &format!("/v2/{remote}/manifests/{}", a.digest)),
        1
    );
    assert_eq!(fallback_requests(&dist), pushed, "{}", dist.logs());

    // The primary down: a cached tag past its TTL is revalidated at the
    // fallback (not served stale), an uncached one fetched from it, blobs
    // too, and what it serves is what the primary had.
    up.reg.kill_hard();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (d, how, _) = pull_manifest(&cache, &local, "a").await;
    assert_eq!(
        (d.as_str(), how.as_str()),
        (a.digest.as_str(), "revalidated")
    );
    assert!(
        dist.count("HEAD", &format!("/v2/{remote}/manifests/a")) >= 1,
        "{}",
        dist.logs()
    );
    let asked = Instant::now();
    let (d, how, body) = pull_manifest(&cache, &local, "b").await;
    assert_eq!((d.as_str(), how.as_str()), (b.digest.as_str(), "miss"));
    assert_eq!(body, b.manifest);
    // A tag from the fallback is cached like the primary's: trusted for
    // its TTL without asking anyone (checked when this machine is quick
    // enough to ask again within the TTL of 1 s).
    let heads = dist.count("HEAD", &format!("/v2/{remote}/manifests/b"));
    let (_, how, _) = pull_manifest(&cache, &local, "b").await;
    if asked.elapsed() < Duration::from_millis(900) {
        assert_eq!(how, "hit");
        assert_eq!(
            dist.count("HEAD", &format!("/v2/{remote}/manifests/b")),
            heads
        );
    }
    for desc in std::iter::once(&b.config).chain(&b.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
        assert_eq!(
            dist.count("GET", &format!("/v2/{remote}/blobs/{}", desc.digest)),
            1
        );
    }
    let (d, how, _) = pull_manifest(&cache, &local, &b.digest).await;
    assert_eq!((d.as_str(), how.as_str()), (b.digest.as_str(), "hit"));
    assert!(
        cache.logs().contains("served by a fallback"),
        "{}",
        cache.logs()
    );
    // What neither has: the fallback's 404 is no answer for the primary,
    // which is down, so the client hears of both.
    let (status, e) = error_json(get_manifest(&cache, &local, "nope").await).await;
    assert_eq!(status, 502, "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&primary_url) && msg.contains(&format!("{fallback_url} answered 404")),
        "{msg}"
    );

    // Both down: cached tags are served stale; the error for what is not
    // cached names both registries and what each did.
    let _ = dist.child.kill();
    let _ = dist.child.wait();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get_manifest(&cache, &local, "a").await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_header(&r), "stale");
    let (status, e) = error_json(get_manifest(&cache, &local, "c").await).await;
    assert_eq!((status, e["code"].as_str()), (502, Some("UNKNOWN")), "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("upstream up and its fallbacks")
            && msg.contains(&primary_url)
            && msg.contains(&fallback_url),
        "{msg}"
    );
    let tried = e["detail"]["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 2, "{e}");
    let urls: Vec<&str> = tried.iter().map(|t| t["url"].as_str().unwrap()).collect();
    assert!(urls.contains(&primary_url.as_str()) && urls.contains(&fallback_url.as_str()));
    let (status, e) = error_json(cache.get_blob(&local, &c.layers[0].digest).await).await;
    assert_eq!(status, 502, "{e}");
    assert_eq!(e["detail"]["tried"].as_array().map(Vec::len), Some(2));
    // Blobs cached while the primary was down stay served.
    for desc in std::iter::once(&b.config).chain(&b.layers) {
        pull_blob(&cache, &local, &desc.digest).await;
    }
}

// ------------------------------------------------- docker config.json

/// A Docker `config.json` for `host` with `entry` as its `auths` entry,
/// plus `extra` top-level keys.
fn docker_config(dir: &Path, name: &str, host_key: &str, entry: Value, extra: Value) -> PathBuf {
    let mut doc = serde_json::json!({ "auths": { host_key: entry } });
    if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    path
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// `wharf serve` with `config`: its failure message (it must not start).
fn refused_config(config: &Path, data: &Path) -> String {
    let out = wharf_command(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data)
    .output()
    .unwrap();
    assert!(!out.status.success(), "the server started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `docker_config`: the upstream's credentials read from a Docker
/// `config.json` (`auths.<host>.auth`, or `username`/`password`), used in
/// the upstream Wharf's token flow; a file that cannot give them stops
/// the server with a message saying why.
#[tokio::test]
async fn credentials_from_a_docker_config_json() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let host = up.reg.host_port().to_owned();
    let url = format!("http://{host}");
    let remote = repo("dockercfg/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let img = push_image(&up.reg, &remote, "v1", 1, 20_000).await;

    // auths.<host>.auth, as `docker login` writes it.
    let cfg = docker_config(
        dir.path(),
        "auth.json",
        &host,
        serde_json::json!({ "auth": basic("mirror", "mirror-pw") }),
        serde_json::json!({}),
    );
    let d1 = tempfile::tempdir().unwrap();
    let config = cache_config(
        d1.path(),
        &url,
        None,
        &format!("docker_config = \"{}\"", cfg.display()),
    );
    let cache = start_cache(&config).await;
    let (d, how, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "miss"));
    pull_blob(&cache, &local, &img.layers[0].digest).await;
    drop(cache);

    // username / password, under a key with a scheme.
    let cfg = docker_config(
        dir.path(),
        "userpass.json",
        &format!("http://{host}"),
        serde_json::json!({ "username": "mirror", "password": "mirror-pw" }),
        serde_json::json!({}),
    );
    let d2 = tempfile::tempdir().unwrap();
    let config = cache_config(
        d2.path(),
        &url,
        None,
        &format!("docker_config = \"{}\"", cfg.display()),
    );
    let cache = start_cache(&config).await;
    let (d, _, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!(d, img.digest);
    drop(cache);

    // Credentials the upstream refuses: 403 DENIED naming it.
    let cfg = docker_config(
        dir.path(),
        "wrong.json",
        &host,
        serde_json::json!({ "auth": basic("mirror", "wrong") }),
        serde_json::json!({}),
    );
    let d3 = tempfile::tempdir().unwrap();
    let config = cache_config(
        d3.path(),
        &url,
        None,
        &format!("docker_config = \"{}\"", cfg.display()),
    );
    let cache = start_cache(&config).await;
    let (status, e) = error_json(get_manifest(&cache, &local, "v1").await).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("DENIED")), "{e}");
    drop(cache);

    // What stops the server, said clearly.
    let d4 = tempfile::tempdir().unwrap();
    let refused = |extra: String| {
        let config = cache_config(d4.path(), &url, None, &extra);
        refused_config(&config, &d4.path().join("data"))
    };
    let other = docker_config(
        dir.path(),
        "other.json",
        "registry.other.example",
        serde_json::json!({ "auth": basic("a", "b") }),
        serde_json::json!({}),
    );
    let err = refused(format!("docker_config = \"{}\"", other.display()));
    assert!(
        err.contains("upstreams #1 (up)") && err.contains(&format!("no credentials for {host}")),
        "{err}"
    );
    let err = refused(format!(
        "docker_config = \"{}\"",
        dir.path().join("missing.json").display()
    ));
    assert!(err.contains("missing.json"), "{err}");
    let helper = docker_config(
        dir.path(),
        "helper.json",
        &host,
        serde_json::json!({}),
        serde_json::json!({ "credsStore": "wharf-test-absent" }),
    );
    let err = refused(format!("docker_config = \"{}\"", helper.display()));
    assert!(err.contains("docker-credential-wharf-test-absent"), "{err}");
    let token = docker_config(
        dir.path(),
        "token.json",
        &host,
        serde_json::json!({ "identitytoken": "abc" }),
        serde_json::json!({}),
    );
    let err = refused(format!("docker_config = \"{}\"", token.display()));
    assert!(err.contains("identitytoken"), "{err}");
    let err = refused(format!(
        "docker_config = \"{}\"\nusername = \"a\"\npassword = \"b\"",
        cfg.display()
    ));
    assert!(err.contains("docker_config"), "{err}");
}

// ------------------------------------------------------------ size cap

/// `max_size`: past the cap, the least recently pulled cached image is
/// evicted (its tag and manifest link; blobs are left to garbage
/// collection), recently pulled ones stay, a pushed image sharing a layer
/// with the evicted one stays whole after a collection, and the evicted
/// image is fetched again when pulled.
#[tokio::test]
async fn a_size_cap_evicts_the_least_recently_pulled_images() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Images of about 300 kB each: room for two, not three.
    let mut cache = cache_of(
        &up,
        dir.path(),
        "max_size = \"700 KB\"\nevict_interval_secs = 1",
    )
    .await;
    let remote = repo("capped/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let a = push_image(&up.reg, &remote, "a", 1, 300_000).await;
    let b = push_image(&up.reg, &remote, "b", 1, 300_000).await;
    let c = push_image(&up.reg, &remote, "c", 1, 300_000).await;
    let pull_all = |img: &Image, tag: &'static str| {
        let (cache, local, img) = (&cache, local.clone(), img.clone());
        async move {
            let (d, _, _) = pull_manifest(cache, &local, tag).await;
            assert_eq!(d, img.digest);
            let mut bodies = Vec::new();
            for desc in std::iter::once(&img.config).chain(&img.layers) {
                bodies.push(pull_blob(cache, &local, &desc.digest).await);
            }
            bodies
        }
    };

    // a first; a pushed image outside the prefix shares its layer.
    let a_bodies = pull_all(&a, "a").await;
    let own = repo("own/app");
    let own_config = cache
        .push_blob_desc(
            &own,
            OCI_CONFIG,
            &to_bytes(&serde_json::json!({"own": nonce()})),
        )
        .await;
    let own_layer = cache.push_blob_desc(&own, OCI_LAYER, &a_bodies[1]).await;
    assert_eq!(own_layer.digest, a.layers[0].digest);
    let own_manifest = oci_manifest(&own_config, std::slice::from_ref(&own_layer));
    cache
        .push_manifest(&own, "v1", OCI_MANIFEST, &own_manifest)
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    pull_all(&b, "b").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    pull_all(&c, "c").await;

    // Over the cap: a, the least recently pulled, goes; b and c stay.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = cache.get(&format!("/v2/{local}/tags/list")).await;
        let tags = json_body(r).await["tags"].clone();
        // (The log line follows the deletes.)
        if tags == serde_json::json!(["b", "c"])
            && cache.logs().contains("evicted a cached manifest")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not evicted: tags {tags}\n{}",
            cache.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (img, tag) in [(&b, "b"), (&c, "c")] {
        let (d, how, _) = pull_manifest(&cache, &local, tag).await;
        assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "hit"));
    }

    // A collection reclaims what only a referenced (its config); the
    // layer it shares with the pushed image stays.
    let store = store_of(&cache);
    cache.kill_hard();
    let out = wharf_command(&["gc", "--store", &store, "--grace", "0", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gc: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let deleted = report["deleted"].to_string();
    let (a_config, a_layer) = (a.config.digest.clone(), a.layers[0].digest.clone());
    assert!(
        deleted.contains(a_config.trim_start_matches("sha256:")),
        "{report}"
    );
    let out = wharf_command(&["fsck", "--store", &store])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    cache.restart().await;
    let r = get_manifest(&cache, &own, "v1").await;
    assert_eq!(r.status(), 200);
    pull_blob(&cache, &own, &own_layer.digest).await;
    pull_blob(&cache, &own, &own_config.digest).await;

    // Pulled again, a is fetched again: its config by GET, its layer
    // (still in the store for the pushed image) linked after a HEAD.
    let (d, how, _) = pull_manifest(&cache, &local, "a").await;
    assert_eq!((d.as_str(), how.as_str()), (a.digest.as_str(), "miss"));
    pull_blob(&cache, &local, &a_config).await;
    pull_blob(&cache, &local, &a_layer).await;
    assert_eq!(
        up.count("GET", &format!("/v2/{remote}/blobs/{a_config}")),
        2
    );
    assert_eq!(up.count("GET", &format!("/v2/{remote}/blobs/{a_layer}")), 1);
}

// ------------------------------------------------------------ spool_dir

/// `spool_dir`: blob fetches keep their spool there. Shown by taking the
/// directory away: the next fetch fails saying so, and nothing else.
#[tokio::test]
async fn blob_fetches_spool_into_spool_dir() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let cache = cache_of(
        &up,
        dir.path(),
        &format!("spool_dir = \"{}\"", spool.display()),
    )
    .await;
    let remote = repo("spool/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let img = push_image(&up.reg, &remote, "v1", 2, 300_000).await;
    pull_manifest(&cache, &local, "v1").await;
    pull_blob(&cache, &local, &img.layers[0].digest).await;

    std::fs::remove_dir(&spool).unwrap();
    let (status, e) = error_json(cache.get_blob(&local, &img.layers[1].digest).await).await;
    assert_eq!(status, 502, "{e}");
    let said = e["detail"]["error"].as_str().unwrap();
    assert!(
        said.contains(&format!(
            "cannot create a spool file in spool_dir {}",
            spool.display()
        )),
        "{e}"
    );
    // The spool back: fetched and served.
    std::fs::create_dir(&spool).unwrap();
    pull_blob(&cache, &local, &img.layers[1].digest).await;
    // Cached blobs never needed it.
    pull_blob(&cache, &local, &img.layers[0].digest).await;
}

/// A primary that answers 429, or stalls, sends requests to the fallback
/// (here the same upstream reached without the misbehaving proxy): tags,
/// manifests and blobs are served, not stale and not an error.
#[tokio::test]
async fn a_primary_answering_429_or_stalling_falls_back() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let proxy = FaultyProxy::start(up.reg.host_port().to_owned(), Fault::None).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "tag_ttl_secs = 1\ntimeout_secs = 1\n[[upstreams.fallbacks]]\nurl = \"http://{}\"\nusername = \"mirror\"\npassword = \"mirror-pw\"\n",
        up.reg.host_port()
    );
    let config = cache_config(
        dir.path(),
        &format!("http://{}", proxy.addr),
        Some(("mirror", "mirror-pw")),
        &extra,
    );
    let cache = start_cache(&config).await;
    let remote = repo("fallback429/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let v1 = push_image(&up.reg, &remote, "v1", 1, 100_000).await;
    let (d, how, _) = pull_manifest(&cache, &local, "v1").await;
    assert_eq!((d.as_str(), how.as_str()), (v1.digest.as_str(), "miss"));
    assert!(!cache.logs().contains("served by a fallback"));

    for (fault, tag) in [(Fault::TooManyRequests, "v2"), (Fault::Stall, "v3")] {
        proxy.set(fault);
        let img = push_image(&up.reg, &remote, tag, 1, 100_000).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The cached tag is revalidated at the fallback, not served stale.
        let (d, how, _) = pull_manifest(&cache, &local, "v1").await;
        assert_eq!(
            (d.as_str(), how.as_str()),
            (v1.digest.as_str(), "revalidated"),
            "{fault:?}"
        );
        // An uncached tag and its blobs come from the fallback.
        let (d, how, _) = pull_manifest(&cache, &local, tag).await;
        assert_eq!((d.as_str(), how.as_str()), (img.digest.as_str(), "miss"));
        for desc in std::iter::once(&img.config).chain(&img.layers) {
            pull_blob(&cache, &local, &desc.digest).await;
        }
    }
    assert!(cache.logs().contains("served by a fallback"));
}

/// A client that stops reading while the fetch goes on falls behind the
/// chunks the fetch keeps in memory (4 MiB): the fetch spools what it
/// still needs, and it reads the rest from there. Clients that come later
/// (a `Range` from near the start, a whole pull) start behind memory and
/// are served from the store once the blob is there. Every byte arrives
/// intact, from one upstream GET.
#[tokio::test]
async fn a_client_that_falls_behind_reads_the_spool() {
    let Some(mut up) = upstream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_of(&up, dir.path(), "").await;
    let remote = repo("lag/app");
    let local = format!("cache/{remote}");
    up.push_as_pusher(&[&remote]).await;
    let size: usize = 40 << 20;
    let data = pseudo_random(size, rand_seed());
    let digest = up.reg.push_blob(&remote, &data).await;
    let url = cache.url(&format!("/v2/{local}/blobs/{digest}"));

    // The slow client: its first bytes, then nothing for a while.
    let slow = fresh_client();
    let mut r = slow.get(url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(content_length(&r), Some(size as u64));
    let mut got: Vec<u8> = Vec::with_capacity(size);
    while got.len() < (1 << 20) {
        let c = r.chunk().await.unwrap().expect("the body ended early");
        got.extend_from_slice(&c);
    }

    // While the fetch may still run: a range near the start.
    let ranged = fresh_client()
        .get(url.clone())
        .header("range", "bytes=100-1048675")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    let part = ranged.bytes().await.unwrap();
    assert_eq!(&part[..], &data[100..1_048_676]);

    // A fast client takes the whole blob: the fetch runs to its end.
    let fast = fresh_client().get(url.clone()).send().await.unwrap();
    assert_eq!(fast.status(), 200);
    assert_eq!(sha256(&fast.bytes().await.unwrap()), digest);

    // The slow one now reads the rest, mostly from the spool.
    while let Some(c) = r.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got.len(), size);
    assert!(got == data, "the slow client's bytes differ from the blob");
    let path = format!("/v2/{remote}/blobs/{digest}");
    assert_eq!(up.count("GET", &path), 1, "upstream blob GETs");
}
