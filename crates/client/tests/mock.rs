//! The client against small in-process mock registries: auth challenges
//! (Basic and the Docker token flow) and resuming a broken download.

use axum::body::Body;
use axum::http::{HeaderMap, Request, header};
use axum::response::Response;
use client::auth::Credentials;
use client::{Client, ClientOptions, Host, Kind, NoProgress};
use oci::{Digest, RepoName};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("127.0.0.1:{}", addr.port())
}

fn client(host: &str, creds: Option<(&str, &str)>) -> Client {
    Client::new(
        Host::parse(host, false).unwrap(),
        ClientOptions {
            credentials: creds.map(|(u, p)| Credentials {
                username: u.into(),
                password: p.into(),
            }),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s, 255).unwrap()
}

fn resp(status: u16, headers: &[(&str, String)], body: impl Into<Body>) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(body.into()).unwrap()
}

fn auth(h: &HeaderMap) -> String {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[derive(Default)]
struct Counters {
    token_requests: AtomicUsize,
    scopes: std::sync::Mutex<Vec<String>>,
}

/// A registry behind the Docker token flow: /token hands out
/// `tok:<scopes>` to user:secret (and anonymous pull-only tokens).
async fn bearer_registry(counters: Arc<Counters>) -> String {
    let host = Arc::new(std::sync::OnceLock::<String>::new());
    let h2 = host.clone();
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let counters = counters.clone();
        let host = h2.clone();
        async move {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let a = auth(req.headers());
            if path == "/token" {
                counters.token_requests.fetch_add(1, Ordering::SeqCst);
                let scopes: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v.into_owned())
                    .collect();
                counters.scopes.lock().unwrap().push(scopes.join(" "));
                let service_ok = query.contains("service=mock");
                let basic_ok = a
                    == Credentials {
                        username: "user".into(),
                        password: "secret".into(),
                    }
                    .basic_header();
                if !service_ok || (!a.is_empty() && !basic_ok) {
                    return resp(401, &[], "");
                }
                let kind = if basic_ok { "full" } else { "anon" };
                return resp(
                    200,
                    &[("content-type", "application/json".into())],
                    format!(
                        r#"{{"access_token":"{kind}:{}"}}"#,
                        scopes.join(" ").replace('"', "")
                    ),
                );
            }
            let realm = format!("http://{}/token", host.get().unwrap());
            let scope = if path.ends_with("/tags/list") {
                "repository:priv/app:pull"
            } else {
                ""
            };
            let challenge = format!(r#"Bearer realm="{realm}",service="mock",scope="{scope}""#);
            let ok = if path == "/v2/" {
                a.starts_with("Bearer ")
            } else {
                a.starts_with("Bearer full:") && a.contains("repository:priv/app:pull")
            };
            if !ok {
                return resp(
                    401,
                    &[
                        ("www-authenticate", challenge),
                        ("content-type", "application/json".into()),
                    ],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                );
            }
            if path == "/v2/" {
                return resp(200, &[], "{}");
            }
            resp(
                200,
                &[("content-type", "application/json".into())],
                r#"{"name":"priv/app","tags":["v1","v2"]}"#,
            )
        }
    });
    let addr = serve(app).await;
    host.set(addr.clone()).unwrap();
    addr
}

#[tokio::test]
async fn bearer_token_flow_with_credentials_and_cache() {
    let counters = Arc::new(Counters::default());
    let host = bearer_registry(counters.clone()).await;
    let c = client(&host, Some(("user", "secret")));
    assert_eq!(c.tags(&repo("priv/app"), None).await.unwrap(), ["v1", "v2"]);
    assert_eq!(counters.token_requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        counters.scopes.lock().unwrap()[0],
        "repository:priv/app:pull"
    );
    // The token is cached for that scope: no second token request.
    c.tags(&repo("priv/app"), None).await.unwrap();
    assert_eq!(counters.token_requests.load(Ordering::SeqCst), 1);
    c.ping().await.unwrap();
}

#[tokio::test]
async fn bearer_refusals_are_auth_errors() {
    let counters = Arc::new(Counters::default());
    let host = bearer_registry(counters.clone()).await;
    // Wrong password: the token service says no.
    let e = client(&host, Some(("user", "wrong")))
        .tags(&repo("priv/app"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Auth, "{e}");
    assert_eq!(e.kind().exit_code(), 4);
    // Anonymous: a token, but not enough for this repository.
    let e = client(&host, None)
        .tags(&repo("priv/app"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Auth, "{e}");
    assert!(e.to_string().contains("authentication required"), "{e}");
}

#[tokio::test]
async fn basic_challenge() {
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let seen = s2.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let good = Credentials {
                username: "u".into(),
                password: "p".into(),
            }
            .basic_header();
            if auth(req.headers()) != good {
                return resp(
                    401,
                    &[("www-authenticate", r#"Basic realm="mock""#.into())],
                    "",
                );
            }
            resp(
                200,
                &[("content-type", "application/json".into())],
                r#"{"repositories":["a","b"]}"#,
            )
        }
    });
    let host = serve(app).await;
    let c = client(&host, Some(("u", "p")));
    assert_eq!(c.catalog(None).await.unwrap(), ["a", "b"]);
    assert_eq!(seen.load(Ordering::SeqCst), 2, "one challenge, one retry");
    // Known to be Basic now: sent up front.
    c.catalog(None).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let e = client(&host, None).catalog(None).await.unwrap_err();
    assert_eq!(e.kind(), Kind::Auth);
    let e = client(&host, Some(("u", "bad")))
        .catalog(None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Auth);
}

fn data() -> Vec<u8> {
    (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// A blob endpoint whose first answer breaks half way; later ones honour Range.
async fn flaky_blob(
    breaks: usize,
    honour_range: bool,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = log.clone();
    let left = Arc::new(AtomicUsize::new(breaks));
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let log = l2.clone();
        let left = left.clone();
        async move {
            let d = data();
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            log.lock()
                .unwrap()
                .push(range.clone().unwrap_or_else(|| "-".into()));
            let start: usize = match (&range, honour_range) {
                (Some(r), true) => r
                    .trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse()
                    .unwrap(),
                _ => 0,
            };
            let rest = d[start..].to_vec();
            let total = d.len();
            let status = if start > 0 { 206 } else { 200 };
            let mut headers = vec![
                ("content-length", rest.len().to_string()),
                ("content-type", "application/octet-stream".into()),
            ];
            if start > 0 {
                headers.push((
                    "content-range",
                    format!("bytes {start}-{}/{total}", total - 1),
                ));
            }
            if left.load(Ordering::SeqCst) > 0 {
                left.fetch_sub(1, Ordering::SeqCst);
                let half = rest[..rest.len() / 2].to_vec();
                let stream = futures_util::stream::iter(vec![
                    Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
                    Err(std::io::Error::other("connection dropped")),
                ]);
                return resp(status, &headers, Body::from_stream(stream));
            }
            resp(status, &headers, rest)
        }
    });
    (serve(app).await, log)
}

#[tokio::test]
async fn download_resumes_with_range() {
    let (host, log) = flaky_blob(2, true).await;
    let c = client(&host, None);
    let d = Digest::sha256_of(&data());
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("blob");
    let n = c
        .pull_blob_to_file(
            &repo("r"),
            &d,
            Some(data().len() as u64),
            &dest,
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(n, data().len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data());
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0], "-");
    assert_eq!(log[1], "bytes=1000000-");
    assert_eq!(log[2], "bytes=1500000-");
}

#[tokio::test]
async fn download_restarts_when_range_is_ignored() {
    let (host, log) = flaky_blob(1, false).await;
    let c = client(&host, None);
    let d = Digest::sha256_of(&data());
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("blob");
    c.pull_blob_to_file(&repo("r"), &d, None, &dest, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data());
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn wrong_content_is_a_digest_mismatch() {
    let (host, _) = flaky_blob(0, true).await;
    let c = client(&host, None);
    let wrong = Digest::sha256_of(b"something else");
    let t = tempfile::tempdir().unwrap();
    let e = c
        .pull_blob_to_file(
            &repo("r"),
            &wrong,
            None,
            &t.path().join("b"),
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, client::Error::DigestMismatch { .. }), "{e}");
    // More bytes than the descriptor says: refused before the end.
    let e = c
        .pull_blob_to_file(
            &repo("r"),
            &Digest::sha256_of(&data()),
            Some(10),
            &t.path().join("b"),
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than"), "{e}");
}
