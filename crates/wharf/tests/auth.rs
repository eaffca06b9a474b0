//! Authentication and authorization over HTTP against the real binary:
//! every Action for anonymous, wrong-password, unprivileged and privileged
//! callers, in Basic and in token mode; no leaks; catalog filtering;
//! throttling; tokens (expired, forged, wrong audience, over-asked scope);
//! external issuers by JWKS file; mounts.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use common::*;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use server::action::{self, Action, RouterLimits};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const UPLOAD: &str = "00000000-0000-4000-8000-000000000000";

/// `wharf passwd USER` with the password on standard input.
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
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(line.starts_with(&format!("{user}:$2")), "{line}");
    line
}

/// Users: alice and bob from an htpasswd file, carol (group readers) from
/// the config. alice may do anything, readers may pull team/**.
fn write_config(dir: &Path, token: bool, extra: &str) -> PathBuf {
    let htpasswd = dir.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!(
            "# users\n{}\n{}\n",
            passwd("alice", "alice-pw"),
            passwd("bob", "bob-pw")
        ),
    )
    .unwrap();
    let carol = passwd("carol", "carol-pw");
    let carol_hash = carol.split_once(':').unwrap().1;
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
htpasswd = "{}"
[[auth.users]]
name = "carol"
password_hash = "{carol_hash}"
groups = ["readers"]
[auth.token]
enabled = {token}
[[auth.policy]]
repos = ["**"]
pull = ["user:alice"]
push = ["user:alice"]
delete = ["user:alice"]
[[auth.policy]]
repos = ["team/**"]
pull = ["group:readers"]
{extra}
"#,
            htpasswd.display()
        ),
    )
    .unwrap();
    config
}

struct Setup {
    reg: Registry,
    _dir: tempfile::TempDir,
}

async fn start(token: bool, extra: &str) -> Option<Setup> {
    if external_url().is_some() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    // Tests that do not test throttling make many failed logins on purpose.
    let extra = if extra.contains("[auth.throttle]") {
        extra.to_owned()
    } else {
        format!("{extra}\n[auth.throttle]\nmax_failures = 0\n")
    };
    let config = write_config(dir.path(), token, &extra);
    let reg = Registry::start_with(&["--config", config.to_str().unwrap()]).await?;
    Some(Setup { reg, _dir: dir })
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{password}")))
}

/// A client that sends `authorization` on every request.
fn client_as(authorization: &str) -> reqwest::Client {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .default_headers(h)
        .build()
        .unwrap()
}

/// One request per Action variant, on repository team/app, with the scope
/// its challenge must name.
fn every_request() -> Vec<(Method, String, Option<&'static str>)> {
    let pull = Some("repository:team/app:pull");
    let push = Some("repository:team/app:pull,push");
    let delete = Some("repository:team/app:delete");
    let reqs = vec![
        (Method::GET, "/v2/".to_owned(), None),
        (
            Method::GET,
            "/v2/_catalog?n=10".to_owned(),
            Some("registry:catalog:*"),
        ),
        (Method::GET, "/v2/team/app/tags/list".to_owned(), pull),
        (Method::GET, "/v2/team/app/manifests/v1".to_owned(), pull),
        (Method::HEAD, "/v2/team/app/manifests/v1".to_owned(), pull),
        (Method::PUT, "/v2/team/app/manifests/v1".to_owned(), push),
        (
            Method::DELETE,
            format!("/v2/team/app/manifests/{D}"),
            delete,
        ),
        (Method::GET, format!("/v2/team/app/blobs/{D}"), pull),
        (Method::DELETE, format!("/v2/team/app/blobs/{D}"), delete),
        (Method::POST, "/v2/team/app/blobs/uploads/".to_owned(), push),
        (
            Method::PATCH,
            format!("/v2/team/app/blobs/uploads/{UPLOAD}"),
            push,
        ),
        (
            Method::PUT,
            format!("/v2/team/app/blobs/uploads/{UPLOAD}?digest={D}"),
            push,
        ),
        (
            Method::GET,
            format!("/v2/team/app/blobs/uploads/{UPLOAD}"),
            push,
        ),
        (
            Method::DELETE,
            format!("/v2/team/app/blobs/uploads/{UPLOAD}"),
            push,
        ),
        (Method::GET, format!("/v2/team/app/referrers/{D}"), pull),
    ];
    // Every Action variant has a request here: a new variant breaks this
    // match (no wildcard) and the check below.
    let limits = RouterLimits {
        max_name_length: 255,
        max_tags_per_push: 100,
    };
    let mut seen = [false; 14];
    for (m, p, _) in &reqs {
        let (path, query) = p
            .split_once('?')
            .map_or((p.as_str(), None), |(a, b)| (a, Some(b)));
        let a = action::route(m.as_str(), path, query, &limits).unwrap();
        seen[match a {
            Action::Base => 0,
            Action::Catalog { .. } => 1,
            Action::ListTags { .. } => 2,
            Action::GetManifest { .. } => 3,
            Action::PutManifest { .. } => 4,
            Action::DeleteManifest { .. } => 5,
            Action::GetBlob { .. } => 6,
            Action::DeleteBlob { .. } => 7,
            Action::StartUpload { .. } => 8,
            Action::PatchUpload { .. } => 9,
            Action::PutUpload { .. } => 10,
            Action::GetUpload { .. } => 11,
            Action::DeleteUpload { .. } => 12,
            Action::Referrers { .. } => 13,
        }] = true;
    }
    assert!(
        seen.iter().all(|s| *s),
        "an Action has no request: {seen:?}"
    );
    reqs
}

async fn send(
    reg: &Registry,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut rb = reg.client.request(method.clone(), reg.url(path));
    if let Some(a) = authorization {
        rb = rb.header(AUTHORIZATION, a);
    }
    if *method == Method::PUT && path.contains("/manifests/") {
        rb = rb
            .header("content-type", OCI_MANIFEST)
            .body(oci_manifest(&Desc::new(OCI_CONFIG, b"{}"), &[]));
    }
    if *method == Method::PATCH {
        rb = rb.body("abc");
    }
    rb.send().await.unwrap()
}

fn challenge(r: &reqwest::Response) -> String {
    header(r, "www-authenticate").unwrap_or_default()
}

async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}

/// A token from the registry's /token for `scope`, as `authorization`
/// (Basic) or anonymously.
async fn token(
    reg: &Registry,
    scope: Option<&str>,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut url = reg.url("/token?service=wharf");
    if let Some(s) = scope {
        url.push_str(&format!("&scope={s}"));
    }
    let mut rb = reg.client.get(url);
    if let Some(a) = authorization {
        rb = rb.header(AUTHORIZATION, a);
    }
    rb.send().await.unwrap()
}

async fn bearer(reg: &Registry, scope: Option<&str>, authorization: Option<&str>) -> String {
    let r = token(reg, scope, authorization).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert!(v["expires_in"].as_u64().unwrap() >= 60);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    format!("Bearer {}", v["token"].as_str().unwrap())
}

fn claims(bearer: &str) -> Value {
    let jwt = bearer.trim_start_matches("Bearer ");
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64URL.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn basic_mode_every_action() {
    let s = local_only!(start(false, "").await);
    let reg = &s.reg;
    for (m, path, _) in every_request() {
        let what = format!("{m} {path}");
        // anonymous: 401 with a Basic challenge
        let r = send(reg, &m, &path, None).await;
        assert_eq!(r.status(), 401, "anonymous {what}");
        assert_eq!(challenge(&r), "Basic realm=\"wharf\"", "{what}");
        if m != Method::HEAD {
            assert_eq!(error_code(r).await, "UNAUTHORIZED", "{what}");
        }
        // wrong password, and an unknown user
        for a in [basic("alice", "nope"), basic("mallory", "alice-pw")] {
            let r = send(reg, &m, &path, Some(&a)).await;
            assert_eq!(r.status(), 401, "wrong password {what}");
            assert!(challenge(&r).starts_with("Basic "), "{what}");
        }
        // bob: valid, but no permission (/v2/ and the catalog are fine)
        let r = send(reg, &m, &path, Some(&basic("bob", "bob-pw"))).await;
        if path == "/v2/" || path.starts_with("/v2/_catalog") {
            assert_eq!(r.status(), 200, "bob {what}");
        } else {
            assert_eq!(r.status(), 403, "bob {what}");
            assert!(challenge(&r).is_empty());
            if m != Method::HEAD {
                assert_eq!(error_code(r).await, "DENIED", "{what}");
            }
        }
        // alice: the normal answer
        let r = send(reg, &m, &path, Some(&basic("alice", "alice-pw"))).await;
        assert!(
            r.status() != 401 && r.status() != 403,
            "alice {what}: {}",
            r.status()
        );
        // carol may pull team/**, nothing else
        let r = send(reg, &m, &path, Some(&basic("carol", "carol-pw"))).await;
        let pulls = matches!(m, Method::GET | Method::HEAD) && !path.contains("/uploads/");
        if pulls {
            assert!(r.status() != 401 && r.status() != 403, "carol {what}");
        } else {
            assert_eq!(r.status(), 403, "carol {what}");
        }
    }
    // the access log names the user, never the credentials
    let logs = reg.logs();
    assert!(logs.contains("user=alice"), "{logs}");
    for secret in ["alice-pw", "bob-pw", &B64.encode("alice:alice-pw")] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}

#[tokio::test]
async fn token_mode_every_action() {
    let s = local_only!(start(true, "").await);
    let reg = &s.reg;
    let realm = format!("Bearer realm=\"{}\",service=\"wharf\"", reg.url("/token"));
    let alice = basic("alice", "alice-pw");
    let bob = basic("bob", "bob-pw");
    for (m, path, scope) in every_request() {
        let what = format!("{m} {path}");
        let want = match scope {
            Some(s) => format!("{realm},scope=\"{s}\""),
            None => realm.clone(),
        };
        // anonymous: 401 with a Bearer challenge naming the scope
        let r = send(reg, &m, &path, None).await;
        assert_eq!(r.status(), 401, "anonymous {what}");
        assert_eq!(challenge(&r), want, "{what}");
        // an anonymous token grants nothing here
        if scope.is_some() {
            let t = bearer(reg, scope, None).await;
            assert_eq!(claims(&t)["access"], json!([]), "{what}");
            assert_eq!(claims(&t)["sub"], "");
            let r = send(reg, &m, &path, Some(&t)).await;
            assert_eq!(r.status(), 401, "anonymous token {what}");
        }
        // wrong password: the token service says 401
        let r = token(reg, scope, Some(&basic("alice", "nope"))).await;
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(error_code(r).await, "UNAUTHORIZED");
        // a token that is not ours
        let r = send(reg, &m, &path, Some("Bearer not.a.token")).await;
        assert_eq!(r.status(), 401, "garbage token {what}");
        assert!(challenge(&r).contains("error=\"invalid_token\""), "{what}");
        // bob's token has no access: 403
        let t = bearer(reg, scope, Some(&bob)).await;
        let r = send(reg, &m, &path, Some(&t)).await;
        if path == "/v2/" || path.starts_with("/v2/_catalog") {
            assert_eq!(r.status(), 200, "bob {what}");
        } else {
            assert_eq!(r.status(), 403, "bob {what}");
        }
        // alice's token: the normal answer
        let t = bearer(reg, scope, Some(&alice)).await;
        let r = send(reg, &m, &path, Some(&t)).await;
        assert!(
            r.status() != 401 && r.status() != 403,
            "alice {what}: {}",
            r.status()
        );
        // Basic credentials work in token mode too
        let r = send(reg, &m, &path, Some(&alice)).await;
        assert!(r.status() != 401 && r.status() != 403, "alice basic {what}");
    }
    // a token for pull only: pushing asks for a token with more scope
    let t = bearer(reg, Some("repository:team/app:pull"), Some(&alice)).await;
    let r = send(reg, &Method::POST, "/v2/team/app/blobs/uploads/", Some(&t)).await;
    assert_eq!(r.status(), 401);
    let c = challenge(&r);
    assert!(
        c.contains("scope=\"repository:team/app:pull,push\"") && c.contains("insufficient_scope"),
        "{c}"
    );
    let logs = reg.logs();
    assert!(
        !logs.contains(t.trim_start_matches("Bearer ")),
        "a token reached the log"
    );
}

#[tokio::test]
async fn token_claims_and_validation() {
    let s = local_only!(start(true, "").await);
    let reg = &s.reg;
    let bob = basic("bob", "bob-pw");
    let carol = basic("carol", "carol-pw");
    // scope beyond policy is cut down, not refused
    let t = bearer(
        reg,
        Some("repository:team/app:pull,push,delete&scope=repository:other/x:pull"),
        Some(&carol),
    )
    .await;
    let c = claims(&t);
    assert_eq!(c["sub"], "carol");
    assert_eq!(c["aud"], "wharf");
    assert_eq!(c["iss"], "wharf-token-service");
    assert!(c["exp"].as_u64() > c["iat"].as_u64());
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        c["access"],
        json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    let r = send(reg, &Method::POST, "/v2/team/app/blobs/uploads/", Some(&t)).await;
    assert_eq!(r.status(), 403, "carol may not push whatever she asks");
    let t = bearer(reg, Some("repository:team/app:push"), Some(&bob)).await;
    assert_eq!(claims(&t)["access"], json!([]));

    // forged, expired and wrong-audience tokens, signed with the real key
    let key = std::fs::read(reg.data_dir().unwrap().join("_auth/token-key.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap();
    let good = bearer(
        reg,
        Some("repository:team/app:pull"),
        Some(&basic("alice", "alice-pw")),
    )
    .await;
    let header: Value = serde_json::from_slice(
        &B64URL
            .decode(
                good.trim_start_matches("Bearer ")
                    .split('.')
                    .next()
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = header["kid"].as_str().map(str::to_owned);
    let sign =
        |claims: &Value| format!("Bearer {}", jsonwebtoken::encode(&h, claims, &key).unwrap());
    let path = "/v2/team/app/tags/list";
    let base = claims(&good);
    // our own re-signing of the same claims is accepted (the key is right)
    let r = send(reg, &Method::GET, path, Some(&sign(&base))).await;
    assert_eq!(r.status(), 404, "re-signed good token");
    let mut expired = base.clone();
    expired["exp"] = json!(base["iat"].as_u64().unwrap() - 3600);
    expired["nbf"] = json!(base["iat"].as_u64().unwrap() - 7200);
    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = json!("another-registry");
    let mut wrong_iss = base.clone();
    wrong_iss["iss"] = json!("someone-else");
    let mut future = base.clone();
    future["nbf"] = json!(base["iat"].as_u64().unwrap() + 3600);
    for (what, t) in [
        ("expired", sign(&expired)),
        ("wrong audience", sign(&wrong_aud)),
        ("wrong issuer", sign(&wrong_iss)),
        ("not yet valid", sign(&future)),
    ] {
        let r = send(reg, &Method::GET, path, Some(&t)).await;
        assert_eq!(r.status(), 401, "{what}");
    }
    // wrong signature: more access in the payload, the old signature
    let parts: Vec<&str> = good.trim_start_matches("Bearer ").split('.').collect();
    let mut more = base.clone();
    more["access"] =
        json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete"]}]);
    let forged = format!(
        "Bearer {}.{}.{}",
        parts[0],
        B64URL.encode(serde_json::to_vec(&more).unwrap()),
        parts[2]
    );
    let r = send(reg, &Method::GET, path, Some(&forged)).await;
    assert_eq!(r.status(), 401, "forged signature");
    // an HMAC token "signed" with the public key is refused
    let jwks: Value = reg.get("/token/jwks.json").await.json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &base,
        &jsonwebtoken::EncodingKey::from_secret(jwks.to_string().as_bytes()),
    )
    .unwrap();
    let r = send(reg, &Method::GET, path, Some(&format!("Bearer {hs}"))).await;
    assert_eq!(r.status(), 401, "HS256");

    // bad requests to the token service
    let r = reg
        .get("/token?service=other&scope=repository:a:pull")
        .await;
    assert_eq!(r.status(), 400);
    let r = reg.get("/token?service=wharf&scope=nonsense").await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn oauth_password_and_refresh_grants() {
    let s = local_only!(start(true, "").await);
    let reg = &s.reg;
    let form = url_encode;
    let post = |body: String| {
        reg.client
            .post(reg.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = post(form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "alice-pw"),
        ("service", "wharf"),
        ("client_id", "test"),
        ("access_type", "offline"),
        ("scope", "repository:team/app:pull,push"),
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "repository:team/app:pull,push");
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let access = format!("Bearer {}", v["access_token"].as_str().unwrap());
    assert_eq!(
        send(reg, &Method::GET, "/v2/team/app/tags/list", Some(&access))
            .await
            .status(),
        404
    );
    // the refresh token is not an access token
    let r = send(
        reg,
        &Method::GET,
        "/v2/team/app/tags/list",
        Some(&format!("Bearer {refresh}")),
    )
    .await;
    assert_eq!(r.status(), 401);
    let r = post(form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("service", "wharf"),
        ("scope", "repository:team/app:delete"),
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "repository:team/app:delete");
    // wrong password, bogus refresh token, unknown grant
    for body in [
        form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "x"),
        ]),
        form(&[("grant_type", "refresh_token"), ("refresh_token", "abc")]),
        form(&[("grant_type", "client_credentials")]),
    ] {
        assert_eq!(post(body).await.unwrap().status(), 401);
    }
}

fn url_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.bytes()
                    .map(|b| if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    })
                    .collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn no_leak_between_existing_and_missing_repositories() {
    for token_mode in [false, true] {
        let mut s = local_only!(start(token_mode, "").await);
        let alice = basic("alice", "alice-pw");
        s.reg.client = client_as(&alice);
        let img = s.reg.push_image("team/app", "v1").await;
        s.reg.client = client();
        let reg = &s.reg;
        let layer = &img.layers[0].digest;
        for who in [None, Some(basic("bob", "bob-pw"))] {
            for (m, suffix) in [
                (Method::GET, "tags/list".to_owned()),
                (Method::GET, "manifests/v1".to_owned()),
                (Method::HEAD, "manifests/v1".to_owned()),
                (Method::GET, format!("blobs/{layer}")),
                (Method::POST, "blobs/uploads/".to_owned()),
            ] {
                let mut answers = Vec::new();
                for repo in ["team/app", "team/nothing-here"] {
                    let r = send(reg, &m, &format!("/v2/{repo}/{suffix}"), who.as_deref()).await;
                    let status = r.status();
                    let challenge = challenge(&r).replace(repo, "REPO");
                    let body = r.text().await.unwrap().replace(repo, "REPO");
                    answers.push((status, challenge, body));
                }
                assert!(answers[0].0 == 401 || answers[0].0 == 403);
                assert_eq!(answers[0], answers[1], "{who:?} {m} {suffix}");
            }
        }
    }
}

#[tokio::test]
async fn catalog_lists_only_pullable_repositories_with_pagination() {
    let extra = "[[auth.policy]]\nrepos = [\"public/*\"]\npull = [\"anonymous\"]\n";
    let mut s = local_only!(start(true, extra).await);
    s.reg.client = client_as(&basic("alice", "alice-pw"));
    let team: Vec<String> = (0..5).map(|i| format!("team/r{i}")).collect();
    let all = [
        "a/x",
        "public/p1",
        "public/p2",
        "team/r0",
        "team/r1",
        "team/r2",
        "team/r3",
        "team/r4",
        "z/y",
    ];
    for repo in all {
        s.reg.push_blob(repo, repo.as_bytes()).await;
    }
    s.reg.client = client();
    let reg = &s.reg;
    async fn walk(reg: &Registry, auth: Option<&str>, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut path = format!("/v2/_catalog?n={n}");
        loop {
            let r = send(reg, &Method::GET, &path, auth).await;
            assert_eq!(r.status(), 200);
            let link = header(&r, "link");
            let v: Value = r.json().await.unwrap();
            let page: Vec<String> = v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect();
            assert!(page.len() <= n);
            out.extend(page);
            match link {
                Some(l) => {
                    assert!(out.len() % n == 0, "a short page before the last: {out:?}");
                    path = l
                        .trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap()
                        .to_owned();
                }
                None => return out,
            }
        }
    }
    // carol (readers) sees team/** and what everyone may pull, page by page
    let carol = basic("carol", "carol-pw");
    let mut visible = vec!["public/p1".to_owned(), "public/p2".to_owned()];
    visible.extend(team);
    for n in [1, 2, 5, 7, 100] {
        assert_eq!(walk(reg, Some(&carol), n).await, visible, "n={n}");
    }
    // with a catalog token too
    let t = bearer(reg, Some("registry:catalog:*"), Some(&carol)).await;
    assert_eq!(walk(reg, Some(&t), 3).await, visible);
    // anonymous callers see the public repositories
    assert_eq!(walk(reg, None, 1).await, vec!["public/p1", "public/p2"]);
    // alice sees everything; bob what everyone may pull
    assert_eq!(walk(reg, Some(&basic("alice", "alice-pw")), 4).await, all);
    assert_eq!(
        walk(reg, Some(&basic("bob", "bob-pw")), 2).await,
        vec!["public/p1", "public/p2"]
    );
    // and anonymous pulls of public repositories work without a login
    let r = send(reg, &Method::GET, "/v2/public/p1/tags/list", None).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let extra = "[auth.throttle]\nmax_failures = 3\nwindow_secs = 3600\n";
    let s = local_only!(start(true, extra).await);
    let reg = &s.reg;
    for _ in 0..3 {
        let r = send(reg, &Method::GET, "/v2/", Some(&basic("alice", "guess"))).await;
        assert_eq!(r.status(), 401);
    }
    // now even the right password is refused for a while, here and at /token
    let r = send(reg, &Method::GET, "/v2/", Some(&basic("alice", "alice-pw"))).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!(wait > 0 && wait <= 3600);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    let r = token(
        reg,
        Some("repository:team/app:pull"),
        Some(&basic("alice", "alice-pw")),
    )
    .await;
    assert_eq!(r.status(), 429);
    // requests without credentials are not affected
    let r = send(reg, &Method::GET, "/v2/", None).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_burst_of_guesses_gets_no_more_than_the_limit() {
    let extra = "[auth.throttle]\nmax_failures = 3\nwindow_secs = 3600\n";
    let s = local_only!(start(false, extra).await);
    let reg = &s.reg;
    // Twelve guesses at once: each is counted before its (slow) check, so
    // only three are ever checked.
    let guesses = (0..12).map(|i| {
        let a = basic("alice", &format!("guess-{i}"));
        async move { send(reg, &Method::GET, "/v2/", Some(&a)).await.status() }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (3, 9), "{statuses:?}");
}

#[tokio::test]
async fn external_issuer_by_jwks_file() {
    // Registry A issues tokens; registry B trusts A's JWKS (a file).
    let a = local_only!(start(true, "").await);
    let jwks = a.reg.get("/token/jwks.json").await.text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, &jwks).unwrap();
    let config = dir.path().join("b.toml");
    std::fs::write(
        &config,
        format!(
            "[auth.token]\nrealm = \"{}\"\n[[auth.external_issuers]]\nissuer = \"wharf-token-service\"\naudience = \"wharf\"\njwks_file = \"{}\"\n",
            a.reg.url("/token"),
            jwks_file.display()
        ),
    )
    .unwrap();
    let b = Registry::start_with(&["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    // B has no policy at all: the token's access claims decide
    let alice = basic("alice", "alice-pw");
    let t = bearer(&a.reg, Some("repository:team/app:pull,push"), Some(&alice)).await;
    let r = send(&b, &Method::POST, "/v2/team/app/blobs/uploads/", Some(&t)).await;
    assert_eq!(r.status(), 202);
    let r = send(&b, &Method::GET, "/v2/team/app/tags/list", Some(&t)).await;
    assert_eq!(r.status(), 404, "pull allowed, no tags yet");
    // ... and never more
    let r = send(&b, &Method::GET, "/v2/team/other/tags/list", Some(&t)).await;
    assert_eq!(r.status(), 403);
    let r = send(
        &b,
        &Method::DELETE,
        &format!("/v2/team/app/blobs/{D}"),
        Some(&t),
    )
    .await;
    assert_eq!(r.status(), 403);
    // anonymous: a challenge pointing at A's token service
    let r = send(&b, &Method::GET, "/v2/team/app/tags/list", None).await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains(&a.reg.url("/token")));
    // a token of another issuer is refused
    let c = start(true, "").await.unwrap();
    let t = bearer(&c.reg, Some("repository:team/app:pull"), Some(&alice)).await;
    let r = send(&b, &Method::GET, "/v2/team/app/tags/list", Some(&t)).await;
    assert_eq!(r.status(), 401, "same issuer name, different key");
}

#[tokio::test]
async fn mounts_need_pull_on_the_source() {
    let extra = "[[auth.policy]]\nrepos = [\"carol/*\"]\npull = [\"user:carol\"]\npush = [\"user:carol\"]\n";
    let mut s = local_only!(start(false, extra).await);
    s.reg.client = client_as(&basic("alice", "alice-pw"));
    let secret = s.reg.push_blob("secret/x", b"classified").await;
    s.reg.push_blob("team/base", b"shared layer").await;
    let shared = sha256(b"shared layer");
    s.reg.client = client();
    let reg = &s.reg;
    let carol = basic("carol", "carol-pw");
    let mount = |digest: &str, from: Option<&str>| {
        let mut p = format!("/v2/carol/app/blobs/uploads/?mount={digest}");
        if let Some(f) = from {
            p.push_str(&format!("&from={f}"));
        }
        p
    };
    // carol may pull team/base (readers): the mount happens
    let r = send(
        reg,
        &Method::POST,
        &mount(&shared, Some("team/base")),
        Some(&carol),
    )
    .await;
    assert_eq!(r.status(), 201);
    // not secret/x: an upload session instead, nothing mounted
    let r = send(
        reg,
        &Method::POST,
        &mount(&secret, Some("secret/x")),
        Some(&carol),
    )
    .await;
    assert_eq!(r.status(), 202);
    let r = send(reg, &Method::POST, &mount(&secret, None), Some(&carol)).await;
    assert_eq!(r.status(), 202, "a mount without from hands out nothing");
    let r = send(
        reg,
        &Method::HEAD,
        &format!("/v2/carol/app/blobs/{secret}"),
        Some(&carol),
    )
    .await;
    assert_eq!(r.status(), 404);
    let _ = secret;
}

/// The `scope` parameter of a Bearer challenge.
fn challenge_scope(c: &str) -> String {
    let (_, rest) = c
        .split_once("scope=\"")
        .unwrap_or_else(|| panic!("no scope in {c}"));
    rest.split('"').next().unwrap().to_owned()
}

/// In token mode a mount's challenge asks for pull on the source too (as
/// Distribution's does), so a client that asks the token service for what
/// the challenge names gets a token with which the mount happens.
#[tokio::test]
async fn token_mounts_ask_for_the_source_scope() {
    let extra = "[[auth.policy]]\nrepos = [\"carol/*\"]\npull = [\"user:carol\"]\npush = [\"user:carol\"]\n";
    let mut s = local_only!(start(true, extra).await);
    s.reg.client = client_as(&basic("alice", "alice-pw"));
    let secret = s.reg.push_blob("secret/x", b"classified").await;
    let shared = s.reg.push_blob("team/base", b"shared layer").await;
    s.reg.client = client();
    let reg = &s.reg;
    let carol = basic("carol", "carol-pw");
    let mount = |digest: &str, from: &str| {
        format!("/v2/carol/app/blobs/uploads/?mount={digest}&from={from}")
    };
    // The client's way: try, read the challenge, ask /token for its scope
    // with the user's credentials, retry with the token.
    let try_mount = |digest: String, from: &'static str| {
        let carol = carol.clone();
        async move {
            let path = mount(&digest, from);
            let r = send(reg, &Method::POST, &path, None).await;
            assert_eq!(r.status(), 401);
            let c = challenge(&r);
            assert!(
                c.starts_with(&format!(
                    "Bearer realm=\"{}\",service=\"wharf\"",
                    reg.url("/token")
                )),
                "{c}"
            );
            let scope = challenge_scope(&c);
            assert_eq!(
                scope,
                format!("repository:carol/app:pull,push repository:{from}:pull"),
                "{c}"
            );
            let t = bearer(reg, Some(&scope), Some(&carol)).await;
            let r = send(reg, &Method::POST, &path, Some(&t)).await;
            (r.status().as_u16(), claims(&t)["access"].clone())
        }
    };
    // carol may pull team/base (readers): her token says so, and it mounts
    let (st, access) = try_mount(shared.clone(), "team/base").await;
    assert_eq!(
        access,
        json!([
            {"type": "repository", "name": "carol/app", "actions": ["pull", "push"]},
            {"type": "repository", "name": "team/base", "actions": ["pull"]}
        ])
    );
    assert_eq!(st, 201, "mounted");
    let r = send(
        reg,
        &Method::HEAD,
        &format!("/v2/carol/app/blobs/{shared}"),
        Some(&carol),
    )
    .await;
    assert_eq!(r.status(), 200);
    // secret/x: the token service grants nothing there, so the mount falls
    // back to an upload session and nothing is handed out
    let (st, access) = try_mount(secret.clone(), "secret/x").await;
    assert_eq!(access.as_array().map(Vec::len), Some(1), "{access}");
    assert_eq!(st, 202);
    let r = send(
        reg,
        &Method::HEAD,
        &format!("/v2/carol/app/blobs/{secret}"),
        Some(&carol),
    )
    .await;
    assert_eq!(r.status(), 404);
}

/// With `[http] public_url` the default token realm is built from it, not
/// from the Host the request named (which is wrong behind a proxy).
#[tokio::test]
async fn public_url_is_the_token_realm() {
    let s = local_only!(
        start(
            true,
            "[http]\npublic_url = \"https://registry.example.com\"\n"
        )
        .await
    );
    let reg = &s.reg;
    let r = send(reg, &Method::GET, "/v2/team/app/tags/list", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        "Bearer realm=\"https://registry.example.com/token\",service=\"wharf\",scope=\"repository:team/app:pull\""
    );
    // and uploads answer with Locations under it
    let r = send(
        reg,
        &Method::POST,
        "/v2/team/app/blobs/uploads/",
        Some(&basic("alice", "alice-pw")),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert!(
        location(&r).starts_with("https://registry.example.com/v2/team/app/blobs/uploads/"),
        "{}",
        location(&r)
    );
}

#[tokio::test]
async fn auth_off_by_default_and_bad_config_refused() {
    let reg = local_only!(Registry::start_with(&[]).await);
    assert_eq!(reg.get("/v2/").await.status(), 200);
    assert_eq!(reg.get("/token").await.status(), 404);
    // a non-bcrypt htpasswd is refused at start with a clear message
    let dir = tempfile::tempdir().unwrap();
    let ht = dir.path().join("htpasswd");
    std::fs::write(&ht, "alice:$apr1$abc$def\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--listen", "127.0.0.1:0", "--htpasswd"])
        .arg(&ht)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not bcrypt"), "{err}");
}

#[tokio::test]
async fn external_issuer_by_jwks_url() {
    // Registry B fetches registry A's keys over HTTP at start.
    let a = local_only!(start(true, "").await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("b.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.external_issuers]]\nissuer = \"wharf-token-service\"\njwks_url = \"{}\"\n",
            a.reg.url("/token/jwks.json")
        ),
    )
    .unwrap();
    let b = Registry::start_with(&["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let t = bearer(
        &a.reg,
        Some("repository:team/app:pull"),
        Some(&basic("carol", "carol-pw")),
    )
    .await;
    let r = send(&b, &Method::GET, "/v2/team/app/tags/list", Some(&t)).await;
    assert_eq!(r.status(), 404, "a valid token of A, pull allowed");
    let r = send(&b, &Method::POST, "/v2/team/app/blobs/uploads/", Some(&t)).await;
    assert_eq!(r.status(), 403, "the token grants no push");
    // no token service on B, no realm configured: Basic challenges
    let r = send(&b, &Method::GET, "/v2/team/app/tags/list", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(b.get("/token").await.status(), 404);
}

/// Poll until `f` holds (the server notices file changes on its own time).
async fn eventually<F, Fut>(what: &str, reg: &Registry, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened: {}",
            reg.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn htpasswd_changes_apply_without_a_restart() {
    let s = local_only!(start(false, "").await);
    let reg = &s.reg;
    let ht = s._dir.path().join("htpasswd");
    let status =
        |a: String| async move { send(reg, &Method::GET, "/v2/", Some(&a)).await.status() };
    assert_eq!(status(basic("dave", "dave-pw")).await, 401);
    // add dave, remove bob (written beside and renamed, as editors do)
    let text = std::fs::read_to_string(&ht).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("bob:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let tmp = s._dir.path().join("htpasswd.new");
    std::fs::write(&tmp, format!("{kept}{}\n", passwd("dave", "dave-pw"))).unwrap();
    std::fs::rename(&tmp, &ht).unwrap();
    eventually("dave's login", reg, || async {
        status(basic("dave", "dave-pw")).await == 200
    })
    .await;
    assert_eq!(status(basic("bob", "bob-pw")).await, 401);
    assert_eq!(status(basic("alice", "alice-pw")).await, 200);
    // a broken file keeps the users there are
    std::fs::write(&ht, "alice:$apr1$not$bcrypt\n").unwrap();
    eventually("the warning", reg, || async {
        reg.logs().contains("keeping the old users")
    })
    .await;
    assert_eq!(status(basic("alice", "alice-pw")).await, 200);
    assert_eq!(status(basic("dave", "dave-pw")).await, 200);
}

/// Upload sessions count against the authenticated user, not the address:
/// alice, bob and anonymous clients on 127.0.0.1 each have their own quota.
#[tokio::test]
async fn upload_sessions_are_counted_per_user() {
    let extra = r#"
[[auth.policy]]
repos = ["bobs/**"]
pull = ["user:bob"]
push = ["user:bob"]
[[auth.policy]]
repos = ["open/**"]
pull = ["anonymous"]
push = ["anonymous"]
[limits]
max_uploads_per_client = 2
"#;
    let s = local_only!(start(false, extra).await);
    let reg = &s.reg;
    let post = |who: Option<String>, repo: &'static str| async move {
        send(
            reg,
            &Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            who.as_deref(),
        )
        .await
    };
    let alice = || Some(basic("alice", "alice-pw"));
    let bob = || Some(basic("bob", "bob-pw"));
    for _ in 0..2 {
        assert_eq!(post(alice(), "team/app").await.status(), 202);
    }
    let r = post(alice(), "team/app").await;
    assert_eq!(r.status(), 429);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // bob, from the same address, has his own quota...
    for _ in 0..2 {
        assert_eq!(post(bob(), "bobs/app").await.status(), 202);
    }
    assert_eq!(post(bob(), "bobs/app").await.status(), 429);
    // ...and so do anonymous clients of that address.
    for _ in 0..2 {
        assert_eq!(post(None, "open/app").await.status(), 202);
    }
    assert_eq!(post(None, "open/app").await.status(), 429);
    // alice connecting anew is still alice.
    assert_eq!(post(alice(), "team/other").await.status(), 429);
}
