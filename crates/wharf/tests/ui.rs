//! The web UI over plain HTTP against the real binary (docs/ui.md): pages
//! and their content, search and paging, the manifest tree, referrers and
//! config highlights, files of packages, deletes with confirmation and the
//! CSRF check, and the same policy as the API (a user who may not pull a
//! repository sees neither it nor its tags, in pages or in the API).

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};

async fn page(reg: &Registry, path: &str) -> (StatusCode, String) {
    let r = reg.get(path).await;
    let st = r.status();
    (st, r.text().await.unwrap())
}

/// Local server with the UI on (the default) and these extra arguments.
async fn start(args: &[&str]) -> Option<Registry> {
    Registry::start_with(args).await
}

/// The `last=` of a page's "Next page" link, if it has one.
fn next_last(html: &str) -> Option<String> {
    let at = html.find("id=\"next\"")?;
    let tail = &html[at..];
    let href = tail.split("href=\"").nth(1)?.split('"').next()?;
    let href = href.replace("&amp;", "&");
    let q = href.split_once('?')?.1.to_owned();
    url_decode_pairs(&q)
        .into_iter()
        .find(|(k, _)| k == "last")
        .map(|(_, v)| v)
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap();
            out.push(h);
            i += 3;
        } else if b[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Names of `<a class="tag">` links in a repository page, in order.
fn tags_in(html: &str) -> Vec<String> {
    html.split("class=\"tag\" href=\"")
        .skip(1)
        .filter_map(|s| s.split('>').nth(1))
        .filter_map(|s| s.split('<').next())
        .map(str::to_owned)
        .collect()
}

/// Names listed in the catalog page.
fn repos_in(html: &str) -> Vec<String> {
    let Some(list) = html.split("id=\"repositories\"").nth(1) else {
        return Vec::new();
    };
    let list = list.split("</ul>").next().unwrap_or("");
    list.split("<a href=\"/ui/r/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn root_redirects_and_pages_carry_a_strict_csp() {
    let reg = local_only!(start(&[]).await);
    let r = reg.get("/").await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location").as_deref(), Some("/ui/"));
    let r = reg.get("/ui/").await;
    assert_eq!(r.status(), 200);
    let csp = header(&r, "content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(
        header(&r, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert!(header(&r, "content-type").unwrap().starts_with("text/html"));
    let body = r.text().await.unwrap();
    assert!(body.contains("<h1>Repositories</h1>"), "{body}");
    assert!(
        body.contains("<label for=\"q\">"),
        "the search box has a label"
    );
    for s in ["/ui/static/style.css", "/ui/static/ui.js"] {
        let r = reg.get(s).await;
        assert_eq!(r.status(), 200, "{s}");
    }
    // unknown UI paths: an HTML 404, not a registry error
    let (st, body) = page(&reg, "/ui/nothing").await;
    assert_eq!(st, 404);
    assert!(body.contains("Not found"));
    // the API is untouched
    assert_eq!(reg.get("/v2/").await.status(), 200);
}

#[tokio::test]
async fn ui_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, "[ui]\nenabled = false\n").unwrap();
    let reg = local_only!(start(&["--config", cfg.to_str().unwrap()]).await);
    for p in ["/", "/ui/", "/ui/static/style.css"] {
        let r = reg.get(p).await;
        assert_eq!(r.status(), 404, "{p}");
        assert!(
            header(&r, "content-type").unwrap().contains("json"),
            "{p}: the API's error"
        );
    }
    assert_eq!(reg.get("/v2/").await.status(), 200);
}

#[tokio::test]
async fn catalog_search_and_paging() {
    let reg = local_only!(start(&[]).await);
    let names = [
        "alpha/app",
        "alpha/tool",
        "beta/app",
        "beta/web",
        "gamma",
        "gamma/x",
    ];
    for n in names {
        reg.push_image(n, "v1").await;
    }
    let (st, body) = page(&reg, "/ui/").await;
    assert_eq!(st, 200);
    assert_eq!(repos_in(&body), names);

    // substring
    let (_, body) = page(&reg, "/ui/?q=app").await;
    assert_eq!(repos_in(&body), ["alpha/app", "beta/app"]);
    // prefix: "gamma" itself and below it, not "alpha/..."
    let (_, body) = page(&reg, "/ui/?q=gamma&match=prefix").await;
    assert_eq!(repos_in(&body), ["gamma", "gamma/x"]);
    let (_, body) = page(&reg, "/ui/?q=a&match=prefix").await;
    assert_eq!(repos_in(&body), ["alpha/app", "alpha/tool"]);
    // nothing
    let (_, body) = page(&reg, "/ui/?q=zzz").await;
    assert!(repos_in(&body).is_empty());
    assert!(body.contains("No repository matches"));

    // pages of 4, then 2, following the links
    let (_, body) = page(&reg, "/ui/?n=4").await;
    assert_eq!(repos_in(&body), names[..4]);
    let last = next_last(&body).expect("a next page");
    assert_eq!(last, "beta/web");
    let (_, body) = page(&reg, &format!("/ui/?n=4&last={last}")).await;
    assert_eq!(repos_in(&body), names[4..]);
    assert_eq!(next_last(&body), None);
    // a search's pages keep the search
    let (_, body) = page(&reg, "/ui/?q=a&n=2").await;
    assert_eq!(repos_in(&body), ["alpha/app", "alpha/tool"]);
    let last = next_last(&body).unwrap();
    let (_, body) = page(&reg, &format!("/ui/?q=a&n=2&last={last}")).await;
    assert_eq!(repos_in(&body), ["beta/app", "beta/web"]);
    // a page of exactly the rest has no next link
    let (_, body) = page(&reg, "/ui/?q=gamma&n=2").await;
    assert_eq!(repos_in(&body), ["gamma", "gamma/x"]);
    assert_eq!(next_last(&body), None);
}

#[tokio::test]
async fn repository_page_pages_tags_with_digest_size_and_push_time() {
    let reg = local_only!(start(&[]).await);
    let repo = "team/paged";
    let img = reg.prepare_image(repo, 2).await;
    let tags: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
    for t in &tags {
        reg.push_manifest(repo, t, OCI_MANIFEST, &img.manifest)
            .await;
    }
    let (st, body) = page(&reg, &format!("/ui/r/{repo}?n=3")).await;
    assert_eq!(st, 200);
    assert_eq!(tags_in(&body), tags[..3]);
    assert!(body.contains(&img.digest[..19]), "short digest shown");
    let size: usize = img.config.size + img.layers.iter().map(|l| l.size).sum::<usize>();
    assert!(
        body.contains(&format!("{size} bytes")),
        "size shown: {size}"
    );
    // push time in RFC 3339
    assert!(body.contains("Z</td>"), "push time shown");
    let mut seen = tags_in(&body);
    let mut last = next_last(&body);
    while let Some(l) = last {
        let (_, body) = page(&reg, &format!("/ui/r/{repo}?n=3&last={l}")).await;
        seen.extend(tags_in(&body));
        last = next_last(&body);
    }
    assert_eq!(seen, tags);

    // newest first by push time
    reg.push_manifest(repo, "a-newest", OCI_MANIFEST, &img.manifest)
        .await;
    let (_, body) = page(&reg, &format!("/ui/r/{repo}?sort=pushed&n=2")).await;
    assert_eq!(tags_in(&body)[0], "a-newest", "{body}");
    assert!(body.contains("id=\"next\""));

    // an unknown repository: 404
    let (st, _) = page(&reg, "/ui/r/no/such/repo").await;
    assert_eq!(st, 404);
    // names of any depth
    reg.push_image("a/b/c/d/e/f/g/h", "deep").await;
    let (st, body) = page(&reg, "/ui/r/a/b/c/d/e/f/g/h").await;
    assert_eq!(st, 200);
    assert_eq!(tags_in(&body), ["deep"]);
}

#[tokio::test]
async fn manifest_page_shows_tree_config_referrers_and_pull_commands() {
    let reg = local_only!(start(&[]).await);
    let repo = "team/multi";
    let mut children = Vec::new();
    for (arch, entry) in [("amd64", "/bin/amd"), ("arm64", "/bin/arm")] {
        let cfg = to_bytes(&json!({
            "architecture": arch, "os": "linux",
            "created": "2024-05-01T10:00:00Z",
            "config": {
                "Entrypoint": [entry, "--flag"],
                "Cmd": ["serve", "a b"],
                "Env": ["PATH=/usr/bin", "MODE=<prod>"],
                "Labels": {"org.opencontainers.image.source": "https://example.com/src"}
            },
            "rootfs": {"type": "layers", "diff_ids": []},
        }));
        let config = reg.push_blob_desc(repo, OCI_CONFIG, &cfg).await;
        let layer = reg
            .push_blob_desc(repo, OCI_LAYER, &unique_bytes(arch))
            .await;
        let m = oci_manifest(&config, &[layer]);
        let d = reg.push_manifest(repo, &sha256(&m), OCI_MANIFEST, &m).await;
        let mut desc = Desc::new(OCI_MANIFEST, &m);
        desc.digest = d;
        children.push((desc, arch));
    }
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(d, arch)| {
            let mut v = d.json();
            v["platform"] = json!({"os": "linux", "architecture": arch});
            v
        }).collect::<Vec<_>>(),
        "annotations": {"org.opencontainers.image.description": "two platforms"},
    });
    let index_bytes = to_bytes(&index);
    let index_digest = reg.push_manifest(repo, "v1", OCI_INDEX, &index_bytes).await;
    // a signature-like referrer of the index
    let subject = Desc {
        media_type: OCI_INDEX.into(),
        digest: index_digest.clone(),
        size: index_bytes.len(),
    };
    let (_, sig) = reg
        .push_artifact(
            repo,
            None,
            Some("application/vnd.dev.cosign.signature.v1+json"),
            OCI_EMPTY,
            Some(&subject),
            Some(json!({"org.opencontainers.image.created": "2024-05-02T00:00:00Z"})),
        )
        .await;

    let r = reg
        .client
        .get(reg.url(&format!("/ui/r/{repo}/-/manifest/v1")))
        .header("Host", "registry.example:5000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains(OCI_INDEX));
    assert!(body.contains(&index_digest));
    assert!(body.contains("linux/amd64") && body.contains("linux/arm64"));
    for (d, _) in &children {
        assert!(body.contains(&d.digest[..19]), "child {} shown", d.digest);
    }
    // pull commands name the request's host and the digest
    assert!(
        body.contains(&format!(
            "docker pull registry.example:5000/{repo}@{index_digest}"
        )),
        "{body}"
    );
    assert!(body.contains(&format!(
        "podman pull registry.example:5000/{repo}@{index_digest}"
    )));
    // annotations, referrers with their artifact type
    assert!(body.contains("two platforms"));
    assert!(body.contains("application/vnd.dev.cosign.signature.v1+json"));
    assert!(body.contains(&sig[..19]));

    // a platform manifest: config highlights, escaped
    let (st, body) = page(
        &reg,
        &format!("/ui/r/{repo}/-/manifest/{}", children[0].0.digest),
    )
    .await;
    assert_eq!(st, 200);
    assert!(body.contains("/bin/amd --flag"), "entrypoint");
    assert!(body.contains("serve &#39;a b&#39;") || body.contains("serve 'a b'"));
    assert!(body.contains("MODE=&lt;prod&gt;"), "env escaped");
    assert!(body.contains("org.opencontainers.image.source"));
    assert!(body.contains("2024-05-01T10:00:00Z"));
    assert!(!body.contains("MODE=<prod>"));

    // the referrer's own page names its subject
    let (st, body) = page(&reg, &format!("/ui/r/{repo}/-/manifest/{sig}")).await;
    assert_eq!(st, 200);
    assert!(body.contains(&index_digest));

    // unknown manifest: 404; bad reference: 404 page
    let (st, _) = page(&reg, &format!("/ui/r/{repo}/-/manifest/nope")).await;
    assert_eq!(st, 404);
    let (st, _) = page(&reg, &format!("/ui/r/{repo}/-/manifest/sha256:zz")).await;
    assert_eq!(st, 404);
}

/// A tar of (path, bytes) entries.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[tokio::test]
async fn files_of_packages_are_listed_and_downloaded() {
    let reg = local_only!(start(&[]).await);
    let repo = "pkgs/tools";
    let big = pseudo_random(300_000, 7);
    let long_name = format!("dir/{}/deep.txt", "x".repeat(120));
    let layer_bytes = tar_of(&[
        ("README.md", b"hello <world>\n"),
        ("bin/tool", &big),
        (&long_name, b"long"),
    ]);
    let config = reg.push_blob_desc(repo, OCI_EMPTY, b"{}").await;
    let layer = reg
        .push_blob_desc(repo, "application/vnd.oci.image.layer.v1.tar", &layer_bytes)
        .await;
    let mut m = oci_manifest_value(&config, std::slice::from_ref(&layer));
    m["artifactType"] = json!("application/vnd.wharf.package.v1");
    let m = to_bytes(&m);
    let d = reg.push_manifest(repo, "1.0", OCI_MANIFEST, &m).await;

    let (st, body) = page(&reg, &format!("/ui/r/{repo}/-/manifest/1.0")).await;
    assert_eq!(st, 200);
    // a package: wharf pull and oras pull, not docker pull
    let host = reg.host_port();
    assert!(
        body.contains(&format!("wharf pull {host}/{repo}@{d} -o ./tools")),
        "{body}"
    );
    assert!(body.contains(&format!("oras pull {host}/{repo}@{d}")));
    assert!(!body.contains("docker pull"));
    let files_link = format!("/ui/r/{repo}/-/files/{}?from={d}", layer.digest);
    assert!(body.contains(&files_link), "{body}");

    let (st, body) = page(&reg, &files_link).await;
    assert_eq!(st, 200);
    assert!(body.contains("README.md") && body.contains("bin/tool"));
    assert!(body.contains(&long_name), "GNU long names");
    assert!(body.contains("3 entries"));

    for (path, want) in [
        ("README.md", b"hello <world>\n".to_vec()),
        ("bin/tool", big.clone()),
        (long_name.as_str(), b"long".to_vec()),
    ] {
        let q: String = url_encode(path);
        let r = reg
            .get(&format!("/ui/r/{repo}/-/file/{}?path={q}", layer.digest))
            .await;
        assert_eq!(r.status(), 200, "{path}");
        let cd = header(&r, "content-disposition").unwrap();
        let base = path.rsplit('/').next().unwrap();
        assert!(cd.starts_with("attachment;") && cd.contains(base), "{cd}");
        assert_eq!(
            header(&r, "content-length").unwrap(),
            want.len().to_string()
        );
        assert_eq!(r.bytes().await.unwrap().to_vec(), want, "{path}");
    }
    let r = reg
        .get(&format!("/ui/r/{repo}/-/file/{}?path=nope", layer.digest))
        .await;
    assert_eq!(r.status(), 404);

    // gzip layers are listed too
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar_of(&[("etc/conf", b"k=v")])).unwrap();
    let gz = gz.finish().unwrap();
    let gl = reg.push_blob_desc(repo, OCI_LAYER, &gz).await;
    let (st, body) = page(&reg, &format!("/ui/r/{repo}/-/files/{}", gl.digest)).await;
    assert_eq!(st, 200);
    assert!(body.contains("etc/conf") && body.contains("gzip"));
    let r = reg
        .get(&format!("/ui/r/{repo}/-/file/{}?path=etc/conf", gl.digest))
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"k=v");

    // not a tar: the page says so instead of failing
    let junk = reg
        .push_blob_desc(repo, "application/vnd.oci.image.layer.v1.tar", &[7u8; 1000])
        .await;
    let (st, body) = page(&reg, &format!("/ui/r/{repo}/-/files/{}", junk.digest)).await;
    assert_eq!(st, 200);
    assert!(body.contains("could not be read"), "{body}");

    // oras style: one file per layer, named by its title
    let data = b"report body".to_vec();
    let f = reg.push_blob_desc(repo, "text/plain", &data).await;
    let mut fj = f.json();
    fj["annotations"] = json!({"org.opencontainers.image.title": "report.txt"});
    let om = to_bytes(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.report",
        "config": config.json(), "layers": [fj],
    }));
    reg.push_manifest(repo, "report", OCI_MANIFEST, &om).await;
    let (_, body) = page(&reg, &format!("/ui/r/{repo}/-/manifest/report")).await;
    assert!(body.contains("report.txt"));
    let link = format!("/ui/r/{repo}/-/blob/{}?name=report.txt", f.digest);
    assert!(body.contains(&link), "{body}");
    let r = reg.get(&link).await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "content-disposition")
            .unwrap()
            .contains("report.txt")
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
    // a blob of another repository is not served through this one
    let other = reg
        .push_blob_desc("pkgs/other", "text/plain", b"private")
        .await;
    let r = reg
        .get(&format!("/ui/r/{repo}/-/blob/{}", other.digest))
        .await;
    assert_eq!(r.status(), 404);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------- auth

fn passwd(user: &str, password: &str) -> String {
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
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// alice may do anything; bob may pull team/**; anonymous may pull
/// public/**. `extra` is appended to the config.
fn auth_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let htpasswd = dir.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!(
            "{}\n{}\n",
            passwd("alice", "alice-pw"),
            passwd("bob", "bob-pw")
        ),
    )
    .unwrap();
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
htpasswd = "{}"
[auth.throttle]
max_failures = 0
[[auth.policy]]
repos = ["**"]
pull = ["user:alice"]
push = ["user:alice"]
delete = ["user:alice"]
[[auth.policy]]
repos = ["team/**"]
pull = ["user:bob"]
[[auth.policy]]
repos = ["public/**"]
pull = ["anonymous"]
{extra}
"#,
            htpasswd.display()
        ),
    )
    .unwrap();
    config
}

fn client_as(user: &str, password: &str) -> reqwest::Client {
    let mut h = HeaderMap::new();
    let v = format!("Basic {}", B64.encode(format!("{user}:{password}")));
    h.insert(AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .default_headers(h)
        .build()
        .unwrap()
}

async fn get_as(reg: &Registry, c: &reqwest::Client, path: &str) -> (StatusCode, String) {
    let r = c.get(reg.url(path)).send().await.unwrap();
    let st = r.status();
    (st, r.text().await.unwrap())
}

#[tokio::test]
async fn pages_apply_the_api_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = auth_config(dir.path(), "");
    let mut reg = local_only!(start(&["--config", cfg.to_str().unwrap()]).await);
    let alice = client_as("alice", "alice-pw");
    let bob = client_as("bob", "bob-pw");
    let anon = client();
    reg.client = alice.clone();
    let team = reg.push_image("team/app", "team-tag").await;
    let secret = reg.push_image("secret/db", "secret-tag").await;
    reg.push_image("public/base", "public-tag").await;

    // anonymous: catalog needs a login (anonymous may pull public/** only,
    // so, as in the API, it may list the catalog and sees public/base)
    let r = anon.get(reg.url("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert_eq!(repos_in(&body), ["public/base"]);
    // anonymous on a repository it may not pull: the login prompt, Basic
    let r = anon.get(reg.url("/ui/r/team/app")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = header(&r, "www-authenticate").unwrap();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    assert!(!r.text().await.unwrap().contains("team-tag"));
    // /ui/login asks until the credentials are good
    let r = anon.get(reg.url("/ui/login")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = bob.get(reg.url("/ui/login")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let wrong = client_as("bob", "nope");
    let (st, _) = get_as(&reg, &wrong, "/ui/").await;
    assert_eq!(st, 401);

    // bob sees team/app (and public/base), never secret/db
    let (st, body) = get_as(&reg, &bob, "/ui/").await;
    assert_eq!(st, 200);
    assert_eq!(repos_in(&body), ["public/base", "team/app"]);
    assert!(body.contains("Logged in as"));
    let (_, body) = get_as(&reg, &bob, "/ui/?q=secret").await;
    assert!(repos_in(&body).is_empty());
    assert!(!body.contains("secret/db"));
    let (st, body) = get_as(&reg, &bob, "/ui/r/team/app").await;
    assert_eq!(st, 200);
    assert_eq!(tags_in(&body), ["team-tag"]);
    assert!(!body.contains("Delete"), "bob may not delete");
    for path in [
        "/ui/r/secret/db".to_owned(),
        "/ui/r/secret/db/-/manifest/secret-tag".to_owned(),
        format!("/ui/r/secret/db/-/manifest/{}", secret.digest),
        format!("/ui/r/secret/db/-/blob/{}", secret.layers[0].digest),
        format!("/ui/r/secret/db/-/files/{}", secret.layers[0].digest),
        "/ui/r/secret/db/-/delete/secret-tag".to_owned(),
        // the same answer whether the repository exists or not
        "/ui/r/secret/none".to_owned(),
    ] {
        let (st, body) = get_as(&reg, &bob, &path).await;
        assert_eq!(st, 403, "{path}");
        assert!(!body.contains("secret-tag") || path.contains("secret-tag"));
        assert!(!body.contains(&secret.digest), "{path}");
    }
    // nor through the API
    let (_, body) = get_as(&reg, &bob, "/v2/_catalog").await;
    assert!(!body.contains("secret"), "{body}");
    let (st, body) = get_as(&reg, &bob, "/v2/secret/db/tags/list").await;
    assert_eq!(st, 403);
    assert!(!body.contains("secret-tag"));

    // alice sees everything and may delete
    let (_, body) = get_as(&reg, &alice, "/ui/").await;
    assert_eq!(repos_in(&body), ["public/base", "secret/db", "team/app"]);
    let (st, body) = get_as(&reg, &alice, "/ui/r/secret/db").await;
    assert_eq!(st, 200);
    assert!(body.contains("Delete"));
    let (st, _) = get_as(
        &reg,
        &alice,
        &format!("/ui/r/team/app/-/manifest/{}", team.digest),
    )
    .await;
    assert_eq!(st, 200);
}

/// POST the confirmation form of `path` as `c` with these headers.
async fn post_delete(
    reg: &Registry,
    c: &reqwest::Client,
    path: &str,
    origin: Option<&str>,
    form: &str,
) -> reqwest::Response {
    let mut req = c
        .request(Method::POST, reg.url(path))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn delete_needs_permission_confirmation_and_same_origin() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = auth_config(dir.path(), "");
    let mut reg = local_only!(start(&["--config", cfg.to_str().unwrap()]).await);
    let alice = client_as("alice", "alice-pw");
    let bob = client_as("bob", "bob-pw");
    reg.client = alice.clone();
    let img = reg.push_image("team/app", "keep").await;
    reg.push_manifest("team/app", "old", OCI_MANIFEST, &img.manifest)
        .await;
    let origin = format!("http://{}", reg.host_port());
    let path = "/ui/r/team/app/-/delete/old";

    // bob may pull but not delete: no confirmation page, no delete
    let (st, _) = get_as(&reg, &bob, path).await;
    assert_eq!(st, 403);
    let r = post_delete(&reg, &bob, path, Some(&origin), "confirm=old").await;
    assert_eq!(r.status(), 403);

    // alice gets the confirmation page with a form that posts back here
    let (st, body) = get_as(&reg, &alice, path).await;
    assert_eq!(st, 200);
    assert!(body.contains("method=\"post\""));
    assert!(body.contains("name=\"confirm\" value=\"old\""));
    assert!(body.contains(&img.digest));
    // from another site, or with no origin at all: refused
    for o in [Some("http://evil.example"), None] {
        let r = post_delete(&reg, &alice, path, o, "confirm=old").await;
        assert_eq!(r.status(), 403, "{o:?}");
    }
    // without the confirmation field: refused
    let r = post_delete(&reg, &alice, path, Some(&origin), "").await;
    assert_eq!(r.status(), 400);
    let r = post_delete(&reg, &alice, path, Some(&origin), "confirm=keep").await;
    assert_eq!(r.status(), 400);
    // still there
    let r = alice
        .get(reg.url("/v2/team/app/manifests/old"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // confirmed: the tag goes, the other tag and the manifest stay
    let r = post_delete(&reg, &alice, path, Some(&origin), "confirm=old").await;
    assert_eq!(r.status(), 303);
    let to = header(&r, "location").unwrap();
    assert!(to.starts_with("/ui/r/team/app?deleted=old"), "{to}");
    let (_, body) = get_as(&reg, &alice, &to).await;
    assert_eq!(tags_in(&body), ["keep"]);
    assert!(body.contains("id=\"deleted\""));
    let r = alice
        .get(reg.url("/v2/team/app/manifests/old"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // a manifest by digest: it and its tags go
    let dpath = format!("/ui/r/team/app/-/delete/{}", img.digest);
    let (st, _) = get_as(&reg, &alice, &dpath).await;
    assert_eq!(st, 200);
    let r = post_delete(
        &reg,
        &alice,
        &dpath,
        Some(&origin),
        &format!("confirm={}", img.digest.replace(':', "%3A")),
    )
    .await;
    assert_eq!(r.status(), 303);
    let r = alice
        .get(reg.url(&format!("/v2/team/app/manifests/{}", img.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, body) = get_as(&reg, &alice, "/ui/r/team/app").await;
    assert!(tags_in(&body).is_empty());
    // deleting what is gone: 404
    let (st, _) = get_as(&reg, &alice, path).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn without_auth_deletes_follow_delete_enabled() {
    let reg = local_only!(start(&["--no-delete"]).await);
    reg.push_image("x/y", "t").await;
    let (_, body) = page(&reg, "/ui/r/x/y").await;
    assert!(
        !body.contains(">Delete<"),
        "no delete links when deletes are off"
    );
    let (st, _) = page(&reg, "/ui/r/x/y/-/delete/t").await;
    assert_eq!(st, 405);
    let origin = format!("http://{}", reg.host_port());
    let r = post_delete(
        &reg,
        &reg.client,
        "/ui/r/x/y/-/delete/t",
        Some(&origin),
        "confirm=t",
    )
    .await;
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn in_token_mode_browsers_still_log_in_with_basic() {
    let dir = tempfile::tempdir().unwrap();
    // No anonymous rule: every page needs a login.
    let cfg = auth_config(dir.path(), "[auth.token]\nenabled = true\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("pull = [\"anonymous\"]", "pull = [\"user:alice\"]");
    std::fs::write(&cfg, text).unwrap();
    let mut reg = local_only!(start(&["--config", cfg.to_str().unwrap()]).await);
    // The API challenges with Bearer...
    let r = client().get(reg.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .starts_with("Bearer ")
    );
    // ...the UI with Basic, which a browser can answer.
    let r = client().get(reg.url("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let c = header(&r, "www-authenticate").unwrap();
    assert!(c.starts_with("Basic realm=\"wharf\""), "{c}");
    let body = r.text().await.unwrap();
    assert!(body.contains("Log in required"));
    // Basic credentials work on the UI in token mode.
    reg.client = client_as("alice", "alice-pw");
    // (pushes go through the token flow: use a token for them)
    let token: serde_json::Value = reg
        .client
        .get(reg.url("/token?service=wharf&scope=repository:team/app:pull,push"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    reg.client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(h)
        .build()
        .unwrap();
    reg.push_image("team/app", "v1").await;
    let bob = client_as("bob", "bob-pw");
    let (st, body) = get_as(&reg, &bob, "/ui/r/team/app").await;
    assert_eq!(st, 200);
    assert_eq!(tags_in(&body), ["v1"]);
    let (st, _) = get_as(&reg, &bob, "/ui/r/other/app").await;
    assert_eq!(st, 403);
}

#[tokio::test]
async fn helm_charts_get_a_helm_pull_command() {
    let reg = local_only!(start(&[]).await);
    let repo = "charts/web";
    let config = reg
        .push_blob_desc(
            repo,
            "application/vnd.cncf.helm.config.v1+json",
            br#"{"name":"web","version":"0.1.0"}"#,
        )
        .await;
    let chart = reg
        .push_blob_desc(
            repo,
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            &unique_bytes("chart"),
        )
        .await;
    let m = oci_manifest(&config, &[chart]);
    let d = reg.push_manifest(repo, "0.1.0", OCI_MANIFEST, &m).await;
    let host = reg.host_port();
    let (st, body) = page(&reg, &format!("/ui/r/{repo}/-/manifest/0.1.0")).await;
    assert_eq!(st, 200);
    assert!(
        body.contains(&format!("helm pull oci://{host}/{repo} --version 0.1.0")),
        "{body}"
    );
    assert!(!body.contains("docker pull"));
    let (_, body) = page(&reg, &format!("/ui/r/{repo}/-/manifest/{d}")).await;
    assert!(body.contains(&format!("helm pull oci://{host}/{repo}@{d}")));
    let (_, body) = page(&reg, &format!("/ui/r/{repo}")).await;
    assert!(body.contains("Helm chart"));
}
