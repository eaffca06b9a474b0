//! Event webhooks (docs/events.md): a real `wharf serve` with
//! `[[events.endpoints]]` and a real HTTP receiver on loopback in this
//! test, which is down, slow, failing, stalled, then up. Every event is
//! delivered at least once, in order, signed, with an id that stays the
//! same across retries; nothing survives only in memory (`kill -9`); the
//! client's requests never wait for the receiver.

mod common;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const SECRET: &str = "test-secret-4f1c";

/// How long any wait for a delivery may take (generous: slow machines).
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// the receiver
// ---------------------------------------------------------------------------

/// One request the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Delivery {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The status it answered (0: it stalled past the sender's timeout
    /// and the answer went nowhere; recorded as what it would have sent).
    status: u16,
}

impl Delivery {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn id(&self) -> String {
        self.event()["id"].as_str().unwrap_or_default().to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the receiver does with the next requests.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Wait this long, then answer 200 (the sender gave up by then).
    Slow(Duration),
}

#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Delivery>>,
    /// Replies for the next requests; 200 when empty.
    script: Mutex<VecDeque<Reply>>,
}

impl Inbox {
    fn all(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// The deliveries the receiver took (2xx), first of each id, in order.
    fn accepted(&self, path: &str) -> Vec<Delivery> {
        let mut seen = std::collections::HashSet::new();
        self.all()
            .into_iter()
            .filter(|d| d.path == path && (200..300).contains(&d.status))
            .filter(|d| seen.insert(d.id()))
            .collect()
    }

    /// Wait until `path` accepted `n` distinct events; returns them.
    async fn wait_accepted(&self, path: &str, n: usize, reg: &Registry) -> Vec<Delivery> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.accepted(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} events delivered within {PATIENCE:?}: {:#?}\n--- wharf log ---\n{}",
                got.len(),
                got.iter().map(Delivery::event).collect::<Vec<_>>(),
                reg.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, req: Request) -> (StatusCode, &'static str) {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let reply = inbox.script.lock().unwrap().pop_front();
    let (status, wait) = match reply {
        None => (200, None),
        Some(Reply::Status(s)) => (s, None),
        Some(Reply::Slow(d)) => (0, Some(d)),
    };
    inbox.got.lock().unwrap().push(Delivery {
        path,
        headers,
        body,
        status,
    });
    if let Some(d) = wait {
        tokio::time::sleep(d).await;
        return (StatusCode::OK, "too late");
    }
    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), "ok")
}

/// A webhook receiver on loopback.
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// A loopback port with nothing listening on it (yet): the receiver is down.
    fn reserve() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// Listen on `addr` (retrying a while, should the port be busy for a moment).
    async fn start_on(addr: SocketAddr, script: &[Reply]) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot listen on {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let inbox = Arc::new(Inbox::default());
        inbox.script.lock().unwrap().extend(script.iter().copied());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            inbox,
            task: Some(task),
        }
    }

    async fn start(script: &[Reply]) -> Receiver {
        Receiver::start_on(Receiver::reserve(), script).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// HMAC-SHA256 (RFC 2104), written out here so the test checks Wharf's
/// signatures with code of its own.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// The delivery carries a valid `X-Wharf-Signature` of its timestamp and body.
fn assert_signed(d: &Delivery) {
    let t = d.header("x-wharf-timestamp").expect("X-Wharf-Timestamp");
    let sig = d.header("x-wharf-signature").expect("X-Wharf-Signature");
    let mut msg = t.as_bytes().to_vec();
    msg.push(b'.');
    msg.extend_from_slice(&d.body);
    let want = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &msg))
    );
    assert_eq!(
        sig,
        want,
        "signature of {}",
        String::from_utf8_lossy(&d.body)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t: u64 = t.parse().expect("a unix time");
    assert!(t.abs_diff(now) < 3600, "timestamp {t} far from now {now}");
}

/// `(type, tag)` of each delivery, for comparing sequences.
fn kinds(ds: &[Delivery]) -> Vec<(String, Option<String>)> {
    ds.iter()
        .map(|d| {
            let e = d.event();
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["data"]["tag"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn ev(kind: &str, tag: Option<&str>) -> (String, Option<String>) {
    (format!("dev.wharf.{kind}"), tag.map(str::to_owned))
}

/// A config file with `[events]` (short poll and lease) and `endpoints`
/// (TOML of `[[events.endpoints]]` tables).
fn config_file(dir: &Path, endpoints: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    let text = format!("[events]\npoll_secs = 1\nlease_secs = 3\n\n{endpoints}");
    std::fs::write(&path, text).unwrap();
    path
}

/// One signed endpoint with quick retries.
fn endpoint(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[events.endpoints]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         timeout_secs = 2\nretry_min_secs = 1\nretry_max_secs = 2\n{extra}\n"
    )
}

async fn start(config: &Path) -> Registry {
    let path = config.to_str().unwrap();
    Registry::start_with(&["--config", path])
        .await
        .expect("a local server")
}

/// Undelivered events in the outbox of `endpoint` (filesystem backend).
fn outbox_len(reg: &Registry, endpoint: &str) -> Option<usize> {
    if reg.on_s3() {
        return None;
    }
    let dir = reg.data_dir()?.join("_events/outbox").join(endpoint);
    Some(std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with('~'))
            .count()
    }))
}

async fn delete_ok(reg: &Registry, path: &str) {
    let r = reg.delete(path).await;
    assert_eq!(r.status(), 202, "DELETE {path}");
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

/// Pushes and deletes while the receiver is down all succeed; once it is
/// up, every event arrives, in order, signed, as CloudEvents with the
/// repository, digest, media type, size, tag and request id.
#[tokio::test]
async fn events_made_while_the_receiver_is_down_arrive_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Receiver::reserve();
    let cfg = config_file(
        dir.path(),
        &endpoint("hook", &format!("http://{addr}/hook"), ""),
    );
    let reg = start(&cfg).await;
    let repo = "team/app";
    let one = reg.push_image(repo, "v1").await;
    let two = reg.push_image(repo, "v2").await;
    let r = reg
        .req(reqwest::Method::DELETE, &format!("/v2/{repo}/manifests/v1"))
        .header("X-Request-Id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    delete_ok(&reg, &format!("/v2/{repo}/manifests/{}", two.digest)).await;
    if let Some(n) = outbox_len(&reg, "hook") {
        assert_eq!(n, 7, "the outbox holds the 7 undelivered events");
    }

    let rx = Receiver::start_on(addr, &[]).await;
    let got = rx.inbox.wait_accepted("/hook", 7, &reg).await;
    assert_eq!(
        kinds(&got),
        vec![
            ev("manifest.pushed", None),
            ev("tag.set", Some("v1")),
            ev("manifest.pushed", None),
            ev("tag.set", Some("v2")),
            ev("tag.deleted", Some("v1")),
            ev("tag.deleted", Some("v2")),
            ev("manifest.deleted", None),
        ]
    );
    let digests: Vec<String> = got
        .iter()
        .map(|d| {
            d.event()["data"]["digest"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let (d1, d2) = (one.digest.as_str(), two.digest.as_str());
    assert_eq!(digests, [d1, d1, d2, d2, d1, d2, d2]);
    let mut ids = std::collections::HashSet::new();
    for d in &got {
        assert_signed(d);
        assert_eq!(
            d.header("content-type"),
            Some("application/cloudevents+json")
        );
        let e = d.event();
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "wharf");
        assert_eq!(e["subject"], repo);
        assert_eq!(e["datacontenttype"], "application/json");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        assert_eq!(e["data"]["repository"], repo);
        assert!(ids.insert(d.id()), "ids are unique: {e}");
        assert_eq!(d.header("x-wharf-event-id"), Some(d.id().as_str()));
    }
    let pushed = got[0].event();
    assert_eq!(pushed["data"]["mediaType"], OCI_MANIFEST);
    assert_eq!(pushed["data"]["size"], one.manifest.len());
    assert_eq!(got[4].event()["data"]["requestId"], "req-42");
    assert!(got[5].event()["data"].get("requestId").is_none());
    // Delivered events leave the outbox.
    let deadline = Instant::now() + PATIENCE;
    while outbox_len(&reg, "hook").is_some_and(|n| n > 0) {
        assert!(Instant::now() < deadline, "the outbox is not emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A receiver that times out, then answers 500 and 503, gets the same
/// event (same id, same body) again until it takes it; the next event
/// waits for it (order).
#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_again_until_it_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&[
        Reply::Slow(Duration::from_secs(6)),
        Reply::Status(500),
        Reply::Status(503),
    ])
    .await;
    let cfg = config_file(dir.path(), &endpoint("hook", &rx.url("/hook"), ""));
    let reg = start(&cfg).await;
    let img = reg.push_image("slow/app", "latest").await;
    let got = rx.inbox.wait_accepted("/hook", 2, &reg).await;
    assert_eq!(
        kinds(&got),
        vec![ev("manifest.pushed", None), ev("tag.set", Some("latest"))]
    );
    let first = got[0].id();
    let all = rx.inbox.all();
    let tries: Vec<&Delivery> = all.iter().filter(|d| d.id() == first).collect();
    assert!(
        tries.len() >= 4,
        "a timeout, a 500 and a 503, then taken: {} tries",
        tries.len()
    );
    assert_eq!(
        tries.iter().map(|d| d.status).take(4).collect::<Vec<_>>(),
        vec![0, 500, 503, 200]
    );
    for (i, d) in tries.iter().enumerate() {
        assert_eq!(d.body, tries[0].body, "every try sends the same event");
        assert_signed(d);
        let attempt = (i + 1).to_string();
        assert_eq!(d.header("x-wharf-delivery-attempt"), Some(attempt.as_str()));
    }
    // The second event was not sent before the first was taken.
    let second = got[1].id();
    let first_taken = all
        .iter()
        .position(|d| d.id() == first && d.status == 200)
        .unwrap();
    let second_sent = all.iter().position(|d| d.id() == second).unwrap();
    assert!(second_sent > first_taken, "delivered in order");
    assert_eq!(got[0].event()["data"]["digest"], img.digest.as_str());
    assert!(
        reg.logs().contains("delivery failed; retrying"),
        "retries are logged"
    );
}

/// Events not yet delivered when wharf is killed with SIGKILL are
/// delivered after it starts again, before the events made after.
#[tokio::test]
async fn undelivered_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Receiver::reserve();
    let cfg = config_file(
        dir.path(),
        &endpoint("hook", &format!("http://{addr}/hook"), ""),
    );
    let mut reg = start(&cfg).await;
    let mut digests = Vec::new();
    for i in 0..3 {
        digests.push(reg.push_image("crash/app", &format!("v{i}")).await.digest);
    }
    reg.kill_hard();
    reg.restart().await;
    digests.push(reg.push_image("crash/app", "after").await.digest);
    if let Some(n) = outbox_len(&reg, "hook") {
        assert_eq!(n, 8);
    }
    let rx = Receiver::start_on(addr, &[]).await;
    let got = rx.inbox.wait_accepted("/hook", 8, &reg).await;
    let pushed: Vec<String> = got
        .iter()
        .filter(|d| d.event()["type"] == "dev.wharf.manifest.pushed")
        .map(|d| d.event()["data"]["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pushed, digests, "every push's event, in order");
    assert_eq!(kinds(&got).last(), Some(&ev("tag.set", Some("after"))));
    for d in &got {
        assert_signed(d);
    }
}

/// A receiver that accepts connections and never answers (the worker
/// waits up to its 600 s timeout) does not hold up a single request: the
/// test client gives up after 60 s, so a push that waited would fail.
#[tokio::test]
async fn a_stalled_receiver_never_holds_up_a_push() {
    let dir = tempfile::tempdir().unwrap();
    let stalled = Stalled::start().await;
    let addr = stalled.addr;
    let cfg = config_file(
        dir.path(),
        &format!(
            "[[events.endpoints]]\nname = \"stalled\"\nurl = \"http://{addr}/hook\"\ntimeout_secs = 600\n"
        ),
    );
    let reg = start(&cfg).await;
    reg.push_image("stall/app", "v0").await;
    // The worker is now stuck sending that event.
    stalled.wait_connected(&reg).await;
    for i in 1..6 {
        let img = reg.push_image("stall/app", &format!("v{i}")).await;
        assert_eq!(
            reg.get_m(&format!("/v2/stall/app/manifests/v{i}"))
                .await
                .status(),
            200
        );
        delete_ok(&reg, &format!("/v2/stall/app/manifests/{}", img.digest)).await;
    }
    // Still the one connection: deliveries are in order, one at a time.
    assert_eq!(stalled.accepted.lock().unwrap().len(), 1);
    if let Some(n) = outbox_len(&reg, "stalled") {
        // v0 (2 events), then per image: pushed, tag.set, tag.deleted, manifest.deleted.
        assert_eq!(n, 2 + 5 * 4);
    }
    stalled.stop().await;
}

/// Each endpoint gets the event groups it asked for, of the repositories
/// its patterns match; pulls (GET, not HEAD) only where asked for.
#[tokio::test]
async fn endpoints_get_the_repositories_and_event_groups_they_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&[]).await;
    let endpoints = [
        endpoint(
            "team",
            &rx.url("/team"),
            "repos = [\"team-a/**\"]\nevents = [\"push\"]",
        ),
        endpoint("all", &rx.url("/all"), "events = [\"delete\", \"pull\"]"),
        endpoint("default", &rx.url("/default"), "repos = [\"*/app\"]"),
    ]
    .concat();
    let cfg = config_file(dir.path(), &endpoints);
    let reg = start(&cfg).await;
    reg.push_image("team-a/app", "v1").await;
    reg.push_image("other/app", "v1").await;
    reg.push_image("team-a/x/y", "v2").await;
    reg.push_image("team-b/app", "v1").await;
    assert_eq!(reg.get_m("/v2/team-a/app/manifests/v1").await.status(), 200);
    assert_eq!(reg.head_m("/v2/other/app/manifests/v1").await.status(), 200);
    delete_ok(&reg, "/v2/other/app/manifests/v1").await;
    // The last events: every endpoint is in order, so when these have
    // arrived, everything before them that was to arrive has.
    reg.push_image("team-a/app", "end").await;
    delete_ok(&reg, "/v2/team-a/app/manifests/end").await;

    let team = rx.inbox.wait_accepted("/team", 6, &reg).await;
    assert_eq!(
        kinds(&team),
        vec![
            ev("manifest.pushed", None),
            ev("tag.set", Some("v1")),
            ev("manifest.pushed", None),
            ev("tag.set", Some("v2")),
            ev("manifest.pushed", None),
            ev("tag.set", Some("end")),
        ]
    );
    let subjects: Vec<Value> = team.iter().map(|d| d.event()["subject"].clone()).collect();
    assert_eq!(
        subjects,
        [
            "team-a/app",
            "team-a/app",
            "team-a/x/y",
            "team-a/x/y",
            "team-a/app",
            "team-a/app"
        ]
    );
    let all = rx.inbox.wait_accepted("/all", 3, &reg).await;
    assert_eq!(
        kinds(&all),
        vec![
            ev("manifest.pulled", Some("v1")),
            ev("tag.deleted", Some("v1")),
            ev("tag.deleted", Some("end")),
        ]
    );
    assert_eq!(all[0].event()["subject"], "team-a/app");
    assert_eq!(all[1].event()["subject"], "other/app");
    let default = rx.inbox.wait_accepted("/default", 10, &reg).await;
    assert_eq!(
        kinds(&default),
        vec![
            ev("manifest.pushed", None),
            ev("tag.set", Some("v1")),
            ev("manifest.pushed", None),
            ev("tag.set", Some("v1")),
            ev("manifest.pushed", None),
            ev("tag.set", Some("v1")),
            ev("tag.deleted", Some("v1")),
            ev("manifest.pushed", None),
            ev("tag.set", Some("end")),
            ev("tag.deleted", Some("end")),
        ],
        "push and delete by default, no pulls"
    );
    // Nothing else came after the last expected events.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.inbox.accepted("/team").len(), 6);
    assert_eq!(rx.inbox.accepted("/all").len(), 3);
    assert_eq!(rx.inbox.accepted("/default").len(), 10);
}

/// `wharf gc` and `wharf fsck` leave the outbox alone: events of a
/// deleted image, pending while they run, are delivered afterwards.
#[tokio::test]
async fn gc_and_fsck_leave_the_outbox_alone() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Receiver::reserve();
    let cfg = config_file(
        dir.path(),
        &endpoint("hook", &format!("http://{addr}/hook"), ""),
    );
    let mut reg = start(&cfg).await;
    let img = reg.push_image("gc/app", "v1").await;
    delete_ok(&reg, &format!("/v2/gc/app/manifests/{}", img.digest)).await;
    reg.kill_hard();
    let store = store_of(&reg);
    for args in [
        vec!["gc", "--store", &store, "--grace", "0"],
        vec!["fsck", "--store", &store],
    ] {
        let out = wharf_command(&args).output().unwrap();
        assert!(
            out.status.success(),
            "wharf {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    reg.restart().await;
    let rx = Receiver::start_on(addr, &[]).await;
    let got = rx.inbox.wait_accepted("/hook", 4, &reg).await;
    assert_eq!(
        kinds(&got),
        vec![
            ev("manifest.pushed", None),
            ev("tag.set", Some("v1")),
            ev("tag.deleted", Some("v1")),
            ev("manifest.deleted", None),
        ]
    );
}

/// Two replicas over one bucket: events written through either are all
/// delivered (at least once), in each replica's order.
#[tokio::test]
#[ignore = "needs the S3 backend: run by tests/run-all.sh with WHARF_TEST_S3_ENV"]
async fn replicas_deliver_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&[]).await;
    let cfg = config_file(dir.path(), &endpoint("hook", &rx.url("/hook"), ""));
    let mut a = start(&cfg).await;
    let b = a.start_replica().await;
    let mut pushed = Vec::new();
    for i in 0..4 {
        let via = if i % 2 == 0 { &a } else { &b };
        pushed.push(
            via.push_image("replicas/app", &format!("v{i}"))
                .await
                .digest,
        );
    }
    let got = rx.inbox.wait_accepted("/hook", 8, &a).await;
    let mut delivered: Vec<String> = got
        .iter()
        .filter(|d| d.event()["type"] == "dev.wharf.manifest.pushed")
        .map(|d| d.event()["data"]["digest"].as_str().unwrap().to_owned())
        .collect();
    delivered.sort();
    pushed.sort();
    assert_eq!(delivered, pushed);
    for d in &got {
        assert_signed(d);
    }
    let took = "this replica delivers the endpoint's events";
    assert!(
        a.logs().contains(took) || b.logs().contains(took),
        "a replica took the endpoint's lease"
    );
    // The first replica dies (it may have held the lease): the other
    // delivers what is written through it, once the lease has run out.
    a.kill_hard();
    let last = b.push_image("replicas/app", "after").await.digest;
    let got = rx.inbox.wait_accepted("/hook", 10, &b).await;
    assert_eq!(got[8].event()["data"]["digest"], last.as_str());
    assert_eq!(kinds(&got[9..]), vec![ev("tag.set", Some("after"))]);
}

/// Count the lines of the log that contain `text`.
fn log_count(reg: &Registry, text: &str) -> usize {
    reg.logs().lines().filter(|l| l.contains(text)).count()
}

/// An event not delivered within `max_age_secs` is dropped, loudly, and
/// never delivered.
#[tokio::test]
async fn events_older_than_max_age_are_dropped_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Receiver::reserve();
    let cfg = config_file(
        dir.path(),
        &endpoint("hook", &format!("http://{addr}/hook"), "max_age_secs = 1"),
    );
    let reg = start(&cfg).await;
    reg.push_image("old/app", "v1").await;
    let deadline = Instant::now() + PATIENCE;
    while log_count(&reg, "DROPPED an event") < 2 {
        assert!(
            Instant::now() < deadline,
            "the two events were not dropped\n{}",
            reg.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reg.logs().contains("ERROR"), "dropping is an error");
    if let Some(n) = outbox_len(&reg, "hook") {
        assert_eq!(n, 0);
    }
    let rx = Receiver::start_on(addr, &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rx.inbox.all().is_empty(), "dropped events are never sent");
}

/// An outbox over `max_pending` loses its oldest events, loudly; the
/// newest are delivered.
#[tokio::test]
async fn the_oldest_events_past_max_pending_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Receiver::reserve();
    let cfg = config_file(
        dir.path(),
        &endpoint("hook", &format!("http://{addr}/hook"), "max_pending = 3"),
    );
    let reg = start(&cfg).await;
    for i in 0..3 {
        reg.push_image("full/app", &format!("v{i}")).await;
    }
    let dropped = |reg: &Registry| {
        reg.logs()
            .lines()
            .filter(|l| l.contains("DROPPING the oldest"))
            .filter_map(|l| {
                let at = l.find("dropped=")? + "dropped=".len();
                let n: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
                n.parse::<usize>().ok()
            })
            .sum::<usize>()
    };
    let deadline = Instant::now() + PATIENCE;
    while dropped(&reg) < 3 {
        assert!(
            Instant::now() < deadline,
            "3 of the 6 events were not dropped\n{}",
            reg.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dropped(&reg), 3);
    let rx = Receiver::start_on(addr, &[]).await;
    let got = rx.inbox.wait_accepted("/hook", 3, &reg).await;
    assert_eq!(
        kinds(&got),
        vec![
            ev("tag.set", Some("v1")),
            ev("manifest.pushed", None),
            ev("tag.set", Some("v2")),
        ]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.inbox.accepted("/hook").len(), 3);
}

/// With auth on, `data.actor` is the user who made the change.
#[tokio::test]
async fn the_actor_is_the_authenticated_user() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["passwd", "alice", "--cost", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            writeln!(c.stdin.take().unwrap(), "alice-pw")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let hash = line.trim().split_once(':').unwrap().1.to_owned();
    let rx = Receiver::start(&[]).await;
    let auth = format!(
        "[[auth.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
         [[auth.policy]]\nrepos = [\"**\"]\npull = [\"user:alice\"]\npush = [\"user:alice\"]\ndelete = [\"user:alice\"]\n"
    );
    let cfg = config_file(
        dir.path(),
        &format!("{}{auth}", endpoint("hook", &rx.url("/hook"), "")),
    );
    let mut reg = start(&cfg).await;
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:alice-pw");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {basic}").parse().unwrap(),
    );
    reg.client = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap();
    reg.push_image("auth/app", "v1").await;
    let got = rx.inbox.wait_accepted("/hook", 2, &reg).await;
    for d in &got {
        assert_eq!(d.event()["data"]["actor"], "alice", "{}", d.event());
    }
}

/// A receiver that accepts connections and never answers.
struct Stalled {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stalled {
    async fn start() -> Stalled {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let held = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                // Held open, never read from, never answered.
                held.lock().unwrap().push(sock);
            }
        });
        Stalled {
            addr,
            accepted,
            task,
        }
    }

    async fn wait_connected(&self, reg: &Registry) {
        let deadline = Instant::now() + PATIENCE;
        while self.accepted.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the worker never connected to the receiver\n{}",
                reg.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop listening and close the connections; the port is free again.
    async fn stop(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.accepted.lock().unwrap().clear();
        self.addr
    }
}

/// Has process `pid` exited (gone, or a zombie not yet reaped)?
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// SIGTERM while a try waits on a receiver that never answers: wharf
/// stops (abandoning the try, giving the lease up on S3), and the event,
/// still in the outbox, is delivered by the next run.
#[tokio::test]
async fn sigterm_abandons_a_stalled_try_and_the_next_run_delivers_it() {
    let dir = tempfile::tempdir().unwrap();
    let stalled = Stalled::start().await;
    let cfg = config_file(
        dir.path(),
        &endpoint(
            "hook",
            &format!("http://{}/hook", stalled.addr),
            "timeout_secs = 600",
        )
        .replace("timeout_secs = 2\n", ""),
    );
    let mut reg = start(&cfg).await;
    let img = reg.push_image("term/app", "v1").await;
    stalled.wait_connected(&reg).await;
    let pid = reg.pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    while !exited(pid) {
        assert!(
            Instant::now() < deadline,
            "wharf did not exit\n{}",
            reg.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reg.logs().contains("wharf registry stopped"),
        "{}",
        reg.logs()
    );
    if reg.on_s3() {
        assert!(reg.logs().contains("gave the lease up"), "{}", reg.logs());
    }
    let addr = stalled.stop().await;
    let rx = Receiver::start_on(addr, &[]).await;
    reg.restart().await;
    let got = rx.inbox.wait_accepted("/hook", 2, &reg).await;
    assert_eq!(got[0].event()["data"]["digest"], img.digest.as_str());
    assert_eq!(got[0].header("x-wharf-delivery-attempt"), Some("1"));
}
