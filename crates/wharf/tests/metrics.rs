//! `/metrics` (docs/observability.md): real requests to a real `wharf
//! serve`, then a scrape parsed with a Prometheus text-format parser
//! (the `prometheus-parse` crate), and the values checked against the
//! requests made: counters grow by exactly the requests done, histogram
//! counts agree with them, byte counters by the bytes sent. Also the
//! separate metrics listener, authentication on the main one, auth
//! refusals and throttling, and the pull-through cache's counts. In S3 runs
//! the storage metrics are labelled `s3`.

mod common;

use common::*;
use prometheus_parse::{Sample, Scrape, Value};
use reqwest::Method;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// Scrape `url` (with Basic credentials if given) and parse it.
async fn scrape(url: &str, creds: Option<(&str, &str)>) -> Scrape {
    let mut req = client().get(url);
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "scrape {url}");
    let ct = header(&r, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    parse(&text)
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a Prometheus text scrape")
}

fn matches(s: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    s.metric == name
        && labels
            .iter()
            .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
}

fn number(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{} is not a number: {other:?}", s.metric),
    }
}

/// The sum of the samples of `name` with (at least) `labels`; 0 when none.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| matches(x, name, labels))
        .map(number)
        .sum()
}

/// The one sample of `name` with `labels`, which must exist.
fn one(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = s
        .samples
        .iter()
        .filter(|x| matches(x, name, labels))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    number(found[0])
}

fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

fn requests(s: &Scrape, action: &str, status: &str) -> f64 {
    value(
        s,
        "wharf_http_requests_total",
        &[("action", action), ("status", status)],
    )
}

/// Every histogram is consistent: buckets never decrease, the `+Inf`
/// bucket is the `_count`, and (for the request histogram) the count of
/// an action is the number of its requests.
fn check_histograms(s: &Scrape) {
    let mut seen = 0;
    for h in &s.samples {
        let Value::Histogram(buckets) = &h.value else {
            continue;
        };
        seen += 1;
        let mut last = 0.0;
        for b in buckets {
            assert!(
                b.count >= last,
                "{} {:?}: buckets decrease",
                h.metric,
                h.labels
            );
            last = b.count;
        }
        let inf = buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .unwrap_or_else(|| panic!("{} has no +Inf bucket", h.metric));
        let labels: Vec<(&str, &str)> = h
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = one(s, &format!("{}_count", h.metric), &labels);
        assert_eq!(inf.count, count, "{} {labels:?}", h.metric);
        if h.metric == "wharf_http_request_duration_seconds" {
            let action = h.labels.get("action").unwrap();
            let answered = value(s, "wharf_http_requests_total", &[("action", action)]);
            assert_eq!(count, answered, "requests and latency count of {action}");
        }
    }
    assert!(seen > 0, "no histogram in the scrape");
}

/// `wharf passwd USER` with the password on standard input: the hash.
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

/// A config with auth on: `reader` may pull everything and push nothing.
fn auth_config(dir: &Path, max_failures: u32) -> String {
    let path = dir.join("auth.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[auth.users]]
name = "reader"
password_hash = "{}"
[[auth.policy]]
repos = ["**"]
pull = ["user:reader"]
[auth.throttle]
max_failures = {max_failures}
window_secs = 600
"#,
            passwd_hash("reader", "reader-pw")
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn requests_bytes_storage_and_process_are_counted() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let metrics = reg.url("/metrics");
    let repo = repo("metrics-secret-name");
    let backend = if reg.on_s3() { "s3" } else { "fs" };

    let before = scrape(&metrics, None).await;
    // Static figures.
    assert_eq!(
        one(
            &before,
            "wharf_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(one(&before, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(one(&before, "process_open_fds", &[]) >= 3.0);
    assert!(one(&before, "process_max_fds", &[]) >= one(&before, "process_open_fds", &[]));
    assert!(one(&before, "process_start_time_seconds", &[]) > 1.6e9);
    assert!(one(&before, "wharf_uptime_seconds", &[]) >= 0.0);
    assert_eq!(one(&before, "wharf_upload_sessions_open", &[]), 0.0);

    // A push: blob (POST + PUT), manifest.
    let layer = unique_bytes("metrics-layer");
    let digest = reg.push_blob(&repo, &layer).await;
    let config = reg
        .push_blob_desc(&repo, OCI_CONFIG, b"{\"os\":\"linux\"}")
        .await;
    let manifest = oci_manifest(&config, &[Desc::new(OCI_LAYER, &layer)]);
    reg.push_manifest(&repo, "v1", OCI_MANIFEST, &manifest)
        .await;
    // Pulls: manifest GET and HEAD, blob GET, and a 404.
    let r = reg.get_m(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), manifest.len());
    let r = reg.head_m(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    let r = reg.get_blob(&repo, &digest).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), layer.len());
    let r = reg.get_m(&format!("/v2/{repo}/manifests/missing")).await;
    assert_eq!(r.status(), 404);
    let not_found_body = r.bytes().await.unwrap().len();
    // An upload session left open, then one cancelled.
    let open = reg.start_upload(&repo).await;
    let cancelled = reg.start_upload(&repo).await;
    let r = reg.client.delete(&cancelled).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // No such endpoint.
    assert_eq!(reg.get("/nope").await.status(), 404);

    let after = scrape(&metrics, None).await;
    let d = |action: &str, status: &str| {
        requests(&after, action, status) - requests(&before, action, status)
    };
    // start_blob_upload: push_blob's, config's, and the two sessions.
    assert_eq!(d("start_blob_upload", "2xx"), 4.0);
    assert_eq!(d("put_blob_upload", "2xx"), 2.0);
    assert_eq!(d("delete_blob_upload", "2xx"), 1.0);
    assert_eq!(d("put_manifest", "2xx"), 1.0);
    assert_eq!(d("get_manifest", "2xx"), 1.0);
    assert_eq!(d("get_manifest", "4xx"), 1.0);
    assert_eq!(d("head_manifest", "2xx"), 1.0);
    assert_eq!(d("get_blob", "2xx"), 1.0);
    assert_eq!(d("unknown", "4xx"), 1.0);
    // The first scrape was counted once it was answered.
    assert_eq!(d("metrics", "2xx"), 1.0);
    for status in ["3xx", "5xx"] {
        for action in [
            "put_blob_upload",
            "get_blob",
            "get_manifest",
            "put_manifest",
        ] {
            assert_eq!(d(action, status), 0.0, "{action} {status}");
        }
    }
    check_histograms(&after);

    // Bytes: request bodies exactly; response bodies at least what was read.
    let bytes = |s: &Scrape, name: &str, action: &str| value(s, name, &[("action", action)]);
    let received = |action: &str| {
        bytes(&after, "wharf_http_request_body_bytes_total", action)
            - bytes(&before, "wharf_http_request_body_bytes_total", action)
    };
    let sent = |action: &str| {
        bytes(&after, "wharf_http_response_body_bytes_total", action)
            - bytes(&before, "wharf_http_response_body_bytes_total", action)
    };
    assert_eq!(
        received("put_blob_upload"),
        (layer.len() + config.size) as f64
    );
    assert_eq!(received("put_manifest"), manifest.len() as f64);
    assert_eq!(sent("get_blob"), layer.len() as f64);
    assert_eq!(
        sent("get_manifest"),
        (manifest.len() + not_found_body) as f64
    );
    assert_eq!(sent("head_manifest"), 0.0);

    // Storage operations, by backend.
    let ops = |s: &Scrape, op: &str| {
        value(
            s,
            "wharf_storage_operations_total",
            &[("backend", backend), ("operation", op)],
        )
    };
    for op in ["put", "read", "get", "upload_create", "upload_commit"] {
        assert!(ops(&after, op) > ops(&before, op), "storage {op}");
    }
    assert_eq!(
        value(
            &after,
            "wharf_storage_errors_total",
            &[("backend", backend)]
        ),
        0.0
    );
    let other = if backend == "fs" { "s3" } else { "fs" };
    assert_eq!(
        value(
            &after,
            "wharf_storage_operations_total",
            &[("backend", other)]
        ),
        0.0
    );

    // One session is open.
    assert_eq!(one(&after, "wharf_upload_sessions_open", &[]), 1.0);
    let r = reg.client.delete(&open).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let last = scrape(&metrics, None).await;
    assert_eq!(one(&last, "wharf_upload_sessions_open", &[]), 0.0);

    // No repository, tag or digest in any label.
    let text = reg.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("metrics-secret-name"), "{text}");
    assert!(!text.contains(&digest), "{text}");
    // HEAD: the headers, no body.
    let r = reg.head("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    // OpenMetrics for those who ask.
    let r = reg
        .client
        .get(reg.url("/metrics"))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        header(&r, "content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    assert_eq!(
        reg.req(Method::POST, "/metrics")
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let reg = local_only!(Registry::start_with(&["--no-metrics"]).await);
    assert_eq!(reg.get("/metrics").await.status(), 404);
    assert_eq!(reg.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn with_auth_on_the_main_listener_wants_a_user_and_refusals_are_counted() {
    if external_url().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path(), 5);
    let reg = Registry::start_with(&["--config", &config]).await.unwrap();
    let metrics = reg.url("/metrics");
    let creds = Some(("reader", "reader-pw"));
    // Anonymous: refused with a challenge.
    let r = reg.get("/metrics").await;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").is_some());
    let before = scrape(&metrics, creds).await;
    // Anonymous API request: a challenge.
    assert_eq!(reg.get("/v2/").await.status(), 401);
    // A user pushing where it may only pull: denied.
    let r = reg
        .req(Method::POST, "/v2/some/repo/blobs/uploads/")
        .basic_auth("reader", Some("reader-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A wrong password, twice.
    for _ in 0..2 {
        let r = reg
            .req(Method::GET, "/v2/")
            .basic_auth("reader", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // And a wrong password for /metrics itself.
    let r = client()
        .get(&metrics)
        .basic_auth("reader", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let after = scrape(&metrics, creds).await;
    let refusals = |reason: &str| {
        delta(
            &before,
            &after,
            "wharf_auth_refusals_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(refusals("unauthenticated"), 1.0);
    assert_eq!(refusals("denied"), 1.0);
    assert_eq!(refusals("bad_credentials"), 3.0);
    assert_eq!(refusals("throttled"), 0.0);
    let d = |action: &str, status: &str| {
        requests(&after, action, status) - requests(&before, action, status)
    };
    assert_eq!(d("base", "4xx"), 3.0);
    assert_eq!(d("start_blob_upload", "4xx"), 1.0);
    assert_eq!(d("metrics", "4xx"), 1.0);
    assert_eq!(d("metrics", "2xx"), 1.0);
    check_histograms(&after);
}

#[tokio::test]
async fn a_separate_metrics_listener_serves_metrics_and_probes_and_counts_throttling() {
    if external_url().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path(), 2);
    let admin = free_addr();
    let reg = Registry::start_with(&["--config", &config, "--metrics-listen", &admin])
        .await
        .unwrap();
    let base = format!("http://{admin}");
    // Up once the main listener is (it is bound first).
    let before = scrape(&format!("{base}/metrics"), None).await;
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/v2/", 404)] {
        let r = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    // The main listener no longer serves it, even to a user.
    let r = reg
        .req(Method::GET, "/metrics")
        .basic_auth("reader", Some("reader-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Two wrong passwords, then the address is throttled.
    for expect in [401, 401, 429, 429] {
        let r = reg
            .req(Method::GET, "/v2/")
            .basic_auth("reader", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expect);
    }
    let after = scrape(&format!("{base}/metrics"), None).await;
    let refusals = |reason: &str| {
        delta(
            &before,
            &after,
            "wharf_auth_refusals_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(refusals("bad_credentials"), 2.0);
    assert_eq!(refusals("throttled"), 2.0);
    let d = |action: &str, status: &str| {
        requests(&after, action, status) - requests(&before, action, status)
    };
    assert_eq!(d("base", "4xx"), 4.0);
    // The metrics listener's own requests are not counted; the main
    // listener's 404 for /metrics is a request the router refused.
    assert_eq!(d("metrics", "2xx"), 0.0);
    assert_eq!(d("unknown", "4xx"), 1.0);
}

#[tokio::test]
async fn the_pull_through_cache_counts_hits_misses_stale_serves_and_upstream_errors() {
    if external_url().is_some() {
        return;
    }
    // The upstream: a plain Wharf (on the filesystem in S3 runs too).
    let mut up = Registry::start_fs(&[]).await.unwrap();
    let img = up.push_image("lib/app", "v1").await;
    let layer = &img.layers[0];
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cache.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nname = \"up\"\nurl = \"http://{}\"\nprefix = \"cache\"\ntag_ttl_secs = 0\ntimeout_secs = 5\n",
            up.host_port()
        ),
    )
    .unwrap();
    let cache = Registry::start_with(&["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let metrics = cache.url("/metrics");
    let before = scrape(&metrics, None).await;

    let get = |path: String| {
        let cache = &cache;
        async move {
            let r = cache.get_m(&path).await;
            let status = r.status().as_u16();
            let how = header(&r, "x-wharf-cache");
            let body = r.bytes().await.unwrap();
            (status, how, body)
        }
    };
    // Manifest by tag: fetched, then revalidated (ttl 0); by digest: a hit.
    let (st, how, _) = get("/v2/cache/lib/app/manifests/v1".into()).await;
    assert_eq!((st, how.as_deref()), (200, Some("miss")));
    let (st, how, _) = get("/v2/cache/lib/app/manifests/v1".into()).await;
    assert_eq!((st, how.as_deref()), (200, Some("revalidated")));
    let (st, how, _) = get(format!("/v2/cache/lib/app/manifests/{}", img.digest)).await;
    assert_eq!((st, how.as_deref()), (200, Some("hit")));
    // The layer: fetched (a miss) until the store has it, then a hit.
    let blob = format!("/v2/cache/lib/app/blobs/{}", layer.digest);
    let mut gets = 0.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, how, body) = get(blob.clone()).await;
        assert_eq!(st, 200);
        assert_eq!(body.len(), layer.size);
        gets += 1.0;
        if how.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the layer was never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gets >= 2.0);
    // The upstream goes away: the cached tag is served stale, an uncached
    // one is an error.
    up.kill_hard();
    let (st, how, _) = get("/v2/cache/lib/app/manifests/v1".into()).await;
    assert_eq!((st, how.as_deref()), (200, Some("stale")));
    let (st, _, _) = get("/v2/cache/lib/app/manifests/v2".into()).await;
    assert!(st >= 500, "{st}");

    let after = scrape(&metrics, None).await;
    let cached = |kind: &str, result: &str| {
        delta(
            &before,
            &after,
            "wharf_mirror_requests_total",
            &[("upstream", "up"), ("kind", kind), ("result", result)],
        )
    };
    assert_eq!(cached("manifest", "miss"), 1.0);
    assert_eq!(cached("manifest", "revalidated"), 1.0);
    assert_eq!(cached("manifest", "hit"), 1.0);
    assert_eq!(cached("manifest", "stale"), 1.0);
    assert_eq!(cached("manifest", "error"), 1.0);
    assert_eq!(cached("blob", "hit"), 1.0);
    assert_eq!(cached("blob", "miss"), gets - 1.0);
    let upstream_bytes = delta(
        &before,
        &after,
        "wharf_mirror_upstream_bytes_total",
        &[("upstream", "up")],
    );
    assert!(
        upstream_bytes >= (img.manifest.len() + layer.size) as f64,
        "{upstream_bytes}"
    );
    // The stale serve and the uncached tag: the upstream was unreachable.
    assert!(
        delta(
            &before,
            &after,
            "wharf_mirror_upstream_errors_total",
            &[("upstream", "up"), ("kind", "unavailable")],
        ) >= 2.0
    );
    assert_eq!(
        value(
            &after,
            "wharf_mirror_upstream_errors_total",
            &[("upstream", "up"), ("kind", "denied")]
        ),
        0.0
    );
    check_histograms(&after);
}

#[tokio::test]
async fn background_garbage_collection_is_counted() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let repo = repo("metrics-gc");
    let gone = reg.push_image(&repo, "gone").await;
    let d = reg
        .delete(&format!("/v2/{repo}/manifests/{}", gone.digest))
        .await;
    assert_eq!(d.status(), 202);
    // Pushed before collection starts (see tests/gc.rs), then a server
    // collecting every second with no grace period.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gc.toml");
    std::fs::write(&config, "[gc]\ninterval_secs = 1\ngrace_secs = 0\n").unwrap();
    reg.restart_with(&["--config", config.to_str().unwrap()])
        .await;
    let metrics = reg.url("/metrics");
    let first = scrape(&metrics, None).await;
    assert_eq!(
        value(&first, "wharf_gc_runs_total", &[("result", "error")]),
        0.0
    );
    let pushed = (gone.layers[0].size + gone.config.size) as f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let s = loop {
        let s = scrape(&metrics, None).await;
        if value(&s, "wharf_gc_reclaimed_bytes_total", &[]) >= pushed {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reclaimed within 120 s:\n{}",
            reg.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(value(&s, "wharf_gc_runs_total", &[("result", "ok")]) >= 1.0);
    assert_eq!(
        value(&s, "wharf_gc_runs_total", &[("result", "error")]),
        0.0
    );
    // The layer and the config, and the manifest.
    assert!(value(&s, "wharf_gc_deleted_objects_total", &[("kind", "blob")]) >= 2.0);
    assert!(one(&s, "wharf_gc_last_success_timestamp_seconds", &[]) > 1.6e9);
}
