//! `/healthz` and `/readyz`: cheap probes, never behind auth.

mod common;

use common::*;

async fn status_json(reg: &Registry, method: reqwest::Method, path: &str) -> (u16, String) {
    let r = reg
        .client
        .request(method, reg.url(path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn probes_answer_and_readyz_follows_the_storage() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let (st, body) = status_json(&reg, reqwest::Method::GET, "/healthz").await;
    assert_eq!((st, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (st, body) = status_json(&reg, reqwest::Method::GET, "/readyz").await;
    assert_eq!((st, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (st, body) = status_json(&reg, reqwest::Method::HEAD, "/readyz").await;
    assert_eq!((st, body.as_str()), (200, ""));
    let (st, _) = status_json(&reg, reqwest::Method::POST, "/healthz").await;
    assert_eq!(st, 405);
    // The storage goes away: not ready (503, saying why), still alive.
    let data = reg.data_dir().unwrap();
    let moved = data.with_extension("moved");
    std::fs::rename(&data, &moved).unwrap();
    let (st, body) = status_json(&reg, reqwest::Method::GET, "/readyz").await;
    assert_eq!(st, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unavailable");
    assert!(
        v["reason"].as_str().unwrap().starts_with("storage: "),
        "{body}"
    );
    let (st, _) = status_json(&reg, reqwest::Method::GET, "/healthz").await;
    assert_eq!(st, 200);
    // Back: ready again, with nothing to restart.
    std::fs::rename(&moved, &data).unwrap();
    let (st, _) = status_json(&reg, reqwest::Method::GET, "/readyz").await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn probes_need_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        "[auth.token]\nenabled = true\n[[auth.policy]]\nrepos = [\"**\"]\npull = [\"user:nobody\"]\n",
    )
    .unwrap();
    let reg = local_only!(Registry::start_with(&["--config", config.to_str().unwrap()]).await);
    assert_eq!(reg.get("/v2/").await.status(), 401, "auth is on");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(reg.get(path).await.status(), 200, "{path}");
    }
}

/// `wharf healthcheck` (the container image's health check) is ready when
/// /readyz is, and fails when nothing listens.
#[tokio::test]
async fn healthcheck_command_uses_readyz() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let addr = reg.url("").trim_start_matches("http://").to_owned();
    let run = |addr: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["healthcheck", &addr])
            .env_remove("WHARF_TLS_CERT")
            .output()
            .unwrap()
    };
    let o = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || run(addr)
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = reg.data_dir().unwrap();
    let moved = data.with_extension("moved");
    std::fs::rename(&data, &moved).unwrap();
    let o = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || run(addr)
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not ready"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&moved, &data).unwrap();
}
