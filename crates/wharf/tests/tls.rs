//! TLS: HTTPS with a private CA (reqwest and the `wharf` client), HTTP/2 by
//! ALPN, certificate reload without a restart, and client certificates
//! (mTLS, optional and required).

mod client_support;
mod common;

use common::pki::{Ca, client_trusting};
use common::*;
use reqwest::Method;
use std::path::Path;
use std::time::{Duration, Instant};

/// Server flags for a certificate pair in `dir`.
fn tls_args(dir: &Path, cert: &Path, key: &Path, extra: &[&str]) -> Vec<String> {
    tls_args_with(dir, cert, key, "", extra)
}

/// As [`tls_args`], with more TOML in the config file.
fn tls_args_with(dir: &Path, cert: &Path, key: &Path, toml: &str, extra: &[&str]) -> Vec<String> {
    let config = dir.join("wharf.toml");
    // Check the files every second so the reload test does not wait long.
    std::fs::write(&config, format!("[tls]\nreload_secs = 1\n{toml}")).unwrap();
    let mut a: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
        "--log-format".into(),
        "json".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The DER certificate the server presented on this response's connection.
fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info on the response")
        .to_vec()
}

#[tokio::test]
async fn https_push_pull_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Wharf test CA");
    let (cert, key) = ca.server("wharf-test").write(dir.path(), "server");
    let args = tls_args(dir.path(), &cert, &key, &[]);
    let reg = local_only!(Registry::start_tls(&strs(&args), client_trusting(&ca, None)).await);
    assert!(reg.base.starts_with("https://"));

    // A client that trusts the CA pushes and pulls.
    let name = repo("tls");
    let img = reg.push_image(&name, "v1").await;
    let r = reg.get_m(&format!("/v2/{name}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), img.manifest);
    let blob = b"a layer that crosses TLS".repeat(4096);
    reg.push_blob(&name, &blob).await;
    reg.assert_blob(&name, &blob).await;

    // HTTP/2 is offered by ALPN.
    let r = reg.get("/v2/").await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // Locations are https URLs of the host the client named (under HTTP/2
    // it is in the request's URI, there is no Host header)
    let r = reg
        .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (202, reqwest::Version::HTTP_2)
    );
    let loc = location(&r);
    assert!(
        loc.starts_with(&reg.url(&format!("/v2/{name}/blobs/uploads/"))),
        "{loc}"
    );
    assert!(loc.starts_with("https://"), "{loc}");

    // A client that does not trust the CA gets no answer at all.
    let stranger = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(stranger.get(reg.url("/v2/")).send().await.is_err());
    // Plain HTTP on the TLS port is not served.
    assert!(
        client()
            .get(format!("http://{}/v2/", reg.host_port()))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );

    // HTTP/1.1 over TLS works too.
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_cert())
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let r = h1
        .post(reg.url(&format!("/v2/{name}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        location(&r).starts_with(&reg.url("/v2/")),
        "{}",
        location(&r)
    );
}

#[tokio::test]
async fn wharf_client_with_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Wharf client CA");
    let (cert, key) = ca.server("wharf-test").write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let args = tls_args(dir.path(), &cert, &key, &[]);
    let reg = local_only!(Registry::start_tls(&strs(&args), client_trusting(&ca, None)).await);

    let env = client_support::Env::new();
    let src = env.path("work").join("hello.txt");
    std::fs::write(&src, b"hello over TLS\n").unwrap();
    let target = format!("https://{}/tls/pkg:1.0", reg.host_port());
    let ca_arg = ca_file.display().to_string();

    // Without the CA the push fails on the certificate.
    let o = env.run(&["push", &target, "hello.txt"]);
    assert!(!o.status.success(), "push without --ca-cert succeeded");

    env.ok(None, &["push", &target, "hello.txt", "--ca-cert", &ca_arg]);
    let out = env.path("out");
    env.ok(
        None,
        &[
            "pull",
            &target,
            "-o",
            out.to_str().unwrap(),
            "--ca-cert",
            &ca_arg,
        ],
    );
    assert_eq!(
        std::fs::read(out.join("hello.txt")).unwrap(),
        b"hello over TLS\n"
    );
    // WHARF_CA_CERT does the same as --ca-cert.
    let o = env
        .cmd()
        .env("WHARF_CA_CERT", &ca_file)
        .args(["tags", &format!("https://{}/tls/pkg", reg.host_port())])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1.0");
}

#[tokio::test]
async fn certificate_is_reloaded_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Wharf reload CA");
    let first = ca.server("first");
    let (cert, key) = first.write(dir.path(), "server");
    let args = tls_args(dir.path(), &cert, &key, &[]);
    let trusting = client_trusting(&ca, None);
    let reg = local_only!(Registry::start_tls(&strs(&args), trusting.clone()).await);
    let r = reg.get("/v2/").await;
    assert_eq!(peer_cert(&r), first.der);

    // Replace both files: a new connection soon sees the new certificate.
    let second = ca.server("second");
    second.write(dir.path(), "server");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A fresh client: a new connection, a new handshake.
        let r = client_trusting(&ca, None)
            .get(reg.url("/v2/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let seen = peer_cert(&r);
        if seen == second.der {
            break;
        }
        assert_eq!(seen, first.der, "neither the old nor the new certificate");
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken pair (a key that does not match) is refused; the server
    // goes on with the last good certificate.
    const REFUSED: &str = "cannot reload the TLS certificate";
    let refusals = reg.logs().matches(REFUSED).count();
    let third = ca.server("third");
    std::fs::write(&key, &third.key_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reg.logs().matches(REFUSED).count() == refusals {
        assert!(Instant::now() < deadline, "no reload error logged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = client_trusting(&ca, None)
        .get(reg.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), second.der);
}

/// The access-log lines (JSON) of requests to `path`.
fn access_lines(logs: &str, path: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "wharf::access" && v["path"] == path)
        .collect()
}

#[tokio::test]
async fn client_certificates_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Wharf mTLS CA");
    let (cert, key) = ca.server("wharf-test").write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let ca_arg = ca_file.display().to_string();
    let args = tls_args(dir.path(), &cert, &key, &["--tls-client-ca", &ca_arg]);
    let alice = client_trusting(&ca, Some(ca.client("alice").identity()));
    let reg = local_only!(Registry::start_tls(&strs(&args), alice.clone()).await);

    // With a certificate of the CA: served, and the name is in the log.
    let name = repo("mtls");
    reg.push_image(&name, "v1").await;
    let path = format!("/v2/{name}/manifests/v1");
    assert_eq!(reg.get_m(&path).await.status(), 200);
    let logs = reg.logs();
    let lines = access_lines(&logs, &path);
    assert!(!lines.is_empty(), "no access log line for {path}: {logs}");
    assert!(
        lines.iter().all(|l| l["client_cert"] == "alice"),
        "{lines:?}"
    );

    // Without a certificate: the handshake is refused.
    let anonymous = client_trusting(&ca, None);
    assert!(anonymous.get(reg.url("/v2/")).send().await.is_err());

    // A certificate from another CA: refused too.
    let other = Ca::new("Someone else's CA");
    let mallory = client_trusting(&ca, Some(other.client("mallory").identity()));
    assert!(mallory.get(reg.url("/v2/")).send().await.is_err());
}

#[tokio::test]
async fn client_certificates_optional() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Wharf optional mTLS CA");
    let (cert, key) = ca.server("wharf-test").write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let ca_arg = ca_file.display().to_string();
    let args = tls_args(
        dir.path(),
        &cert,
        &key,
        &["--tls-client-ca", &ca_arg, "--tls-client-auth", "optional"],
    );
    let anonymous = client_trusting(&ca, None);
    let reg = local_only!(Registry::start_tls(&strs(&args), anonymous.clone()).await);

    let r = anonymous.get(reg.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let bob = client_trusting(&ca, Some(ca.client("bob").identity()));
    let r = bob.get(reg.url("/v2/_catalog?n=7")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let logs = reg.logs();
    let anon = access_lines(&logs, "/v2/_catalog");
    assert!(!anon.is_empty(), "{logs}");
    // Both requests went to the same path; the query is not logged, so tell
    // them apart by the certificate name.
    assert!(
        anon.iter().any(|l| l.get("client_cert").is_none()),
        "{anon:?}"
    );
    assert!(anon.iter().any(|l| l["client_cert"] == "bob"), "{anon:?}");

    // A certificate that does not verify is refused even when optional.
    let other = Ca::new("Someone else's CA");
    let mallory = client_trusting(&ca, Some(other.client("mallory").identity()));
    assert!(mallory.get(reg.url("/v2/")).send().await.is_err());
}

#[tokio::test]
async fn client_certificate_names_are_users_for_auth() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Wharf mTLS users CA");
    let (cert, key) = ca.server("wharf-test").write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let ca_arg = ca_file.display().to_string();
    let policy = "[auth]\nmtls_users = true\n[[auth.policy]]\nrepos = [\"team/**\"]\npull = [\"user:alice\"]\npush = [\"user:alice\"]\n";
    let args = tls_args_with(
        dir.path(),
        &cert,
        &key,
        policy,
        &["--tls-client-ca", &ca_arg, "--tls-client-auth", "optional"],
    );
    let alice = client_trusting(&ca, Some(ca.client("alice").identity()));
    let reg = local_only!(Registry::start_tls(&strs(&args), alice.clone()).await);

    // alice's certificate is her login: she pushes and pulls with no password.
    let name = format!("team/{}", repo("mtls-user"));
    reg.push_image(&name, "v1").await;
    let path = format!("/v2/{name}/manifests/v1");
    assert_eq!(reg.get_m(&path).await.status(), 200);

    // No certificate: no identity. bob's valid certificate: no permission.
    let anonymous = client_trusting(&ca, None);
    let r = anonymous.get(reg.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let bob = client_trusting(&ca, Some(ca.client("bob").identity()));
    let r = bob.get(reg.url(&path)).send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());

    let logs = reg.logs();
    let lines = access_lines(&logs, &path);
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "alice" && l["client_cert"] == "alice" && l["status"] == 200),
        "{lines:?}"
    );
}

#[tokio::test]
async fn silent_tls_clients_are_dropped_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Wharf handshake CA");
    let (cert, key) = ca.server("wharf-test").write(dir.path(), "server");
    let args = tls_args(dir.path(), &cert, &key, &["--tls-handshake-timeout", "1"]);
    let reg = local_only!(Registry::start_tls(&strs(&args), client_trusting(&ca, None)).await);
    // A client that connects and starts no handshake (or stops half-way).
    let mut silent = tokio::net::TcpStream::connect(reg.host_port())
        .await
        .unwrap();
    let mut partial = tokio::net::TcpStream::connect(reg.host_port())
        .await
        .unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    for s in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let done = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            done.is_ok(),
            "a client that never finished its handshake was kept"
        );
    }
    // Others are served all along.
    assert_eq!(reg.get("/v2/").await.status(), 200);
}

#[tokio::test]
async fn bad_tls_settings_stop_the_server_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let ca = Ca::new("Wharf CA");
    let (cert, _key) = ca.server("x").write(dir.path(), "server");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--tls-cert".into(), cert.display().to_string()],
            "needs its key",
        ),
        (
            vec![
                "--tls-cert".into(),
                missing.display().to_string(),
                "--tls-key".into(),
                garbage.display().to_string(),
            ],
            "missing.pem",
        ),
        (
            vec![
                "--tls-cert".into(),
                garbage.display().to_string(),
                "--tls-key".into(),
                garbage.display().to_string(),
            ],
            "garbage.pem",
        ),
    ];
    for (args, want) in cases {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(&args)
            .env_remove("WHARF_CONFIG")
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
