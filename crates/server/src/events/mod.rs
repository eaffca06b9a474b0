//! Event webhooks (docs/events.md): the registry's domain events
//! (`store::events`) become CloudEvents, written to an outbox in the store
//! before the request that caused them is answered, and POSTed to each
//! endpoint by a background worker ([`deliver`]) that deletes an entry only
//! once the receiver answered 2xx.
//!
//! Keys (all under `_events/`, which no repository name reaches and which
//! garbage collection and fsck never walk):
//!
//! ```text
//! _events/outbox/<endpoint>/<event id>   the CloudEvent as it is POSTed (write-once)
//! _events/lease/<endpoint>               S3: which replica delivers the endpoint's events, until when
//! ```
//!
//! An event id is `<unix ms, 13 digits>-<sequence, 6 digits>-<process id,
//! 8 hex>`: ids sort in the order this process made them, so a listing of
//! the outbox is the order of delivery.

pub mod config;
mod deliver;

pub use config::{EndpointConfig, EventsConfig};

use async_trait::async_trait;
use config::Endpoint;
use oci::RepoName;
use serde::Serialize;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::Backend;
use store::events::{Event, EventKind, EventSink};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Where the outbox of every endpoint lives.
pub const OUTBOX_PREFIX: &str = "_events/outbox/";
/// Where the leases live.
pub const LEASE_PREFIX: &str = "_events/lease/";

/// The outbox of one endpoint.
pub fn outbox(endpoint: &str) -> String {
    format!("{OUTBOX_PREFIX}{endpoint}/")
}

/// What the request that caused an event tells about it.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The authenticated user, if any.
    pub actor: Option<String>,
    /// The client's `X-Request-Id`, if it sent a sane one.
    pub request_id: Option<String>,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// Run `f` (a request's dispatch) with `ctx` visible to the events it causes.
pub async fn scope<F: std::future::Future>(ctx: RequestContext, f: F) -> F::Output {
    CONTEXT.scope(ctx, f).await
}

fn current_context() -> RequestContext {
    CONTEXT.try_with(Clone::clone).unwrap_or_default()
}

/// A client's `X-Request-Id`, kept if it is short and printable.
pub fn request_id(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get("x-request-id")?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| v.to_owned())
}

/// Time-sortable, unique event ids.
struct Ids {
    /// This process, in every id it makes (two replicas never make the
    /// same id).
    node: String,
    /// The last id's millisecond and sequence number.
    last: Mutex<(u64, u32)>,
}

/// Sequence numbers within one millisecond stay below this (then the
/// millisecond is moved on).
const SEQ_LIMIT: u32 = 1_000_000;

impl Ids {
    fn new() -> Ids {
        Ids {
            node: hex::encode(rand::random::<[u8; 4]>()),
            last: Mutex::new((0, 0)),
        }
    }

    fn next(&self) -> String {
        let now = unix_ms(SystemTime::now());
        let (ms, seq) = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            // Never backwards, even when the clock is.
            *last = if now > last.0 {
                (now, 0)
            } else if last.1 + 1 < SEQ_LIMIT {
                (last.0, last.1 + 1)
            } else {
                (last.0.saturating_add(1), 0)
            };
            *last
        };
        format!("{ms:013}-{seq:06}-{}", self.node)
    }
}

/// When the event of `id` was made (its first component), if it has one.
pub fn id_time(id: &str) -> Option<SystemTime> {
    let ms: u64 = id.get(..13)?.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The CloudEvents `type` of a kind.
pub fn type_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ManifestPushed => "dev.wharf.manifest.pushed",
        EventKind::TagSet => "dev.wharf.tag.set",
        EventKind::ManifestDeleted => "dev.wharf.manifest.deleted",
        EventKind::TagDeleted => "dev.wharf.tag.deleted",
        EventKind::ManifestPulled => "dev.wharf.manifest.pulled",
    }
}

/// A CloudEvent 1.0 in structured mode (`application/cloudevents+json`).
#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    subject: &'a str,
    datacontenttype: &'static str,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    repository: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

fn cloud_event(
    e: &Event,
    id: &str,
    source: &str,
    time: SystemTime,
    ctx: &RequestContext,
) -> io::Result<Vec<u8>> {
    let ce = CloudEvent {
        specversion: "1.0",
        id,
        source,
        kind: type_name(e.kind),
        time: humantime::format_rfc3339_millis(time).to_string(),
        subject: e.repository.as_str(),
        datacontenttype: "application/json",
        data: Data {
            repository: e.repository.as_str(),
            digest: e.digest.as_ref().map(ToString::to_string),
            media_type: e.media_type.as_deref(),
            size: e.size,
            tag: e.tag.as_ref().map(|t| t.as_str()),
            actor: ctx.actor.as_deref(),
            request_id: ctx.request_id.as_deref(),
        },
    };
    serde_json::to_vec(&ce).map_err(io::Error::other)
}

impl Endpoint {
    fn wants(&self, kind: EventKind, repo: &RepoName) -> bool {
        self.groups.contains(&kind.group()) && self.repos.iter().any(|p| p.matches(repo.as_str()))
    }
}

/// The outbox writer (the registry's [`EventSink`]) and the delivery
/// workers' shared state.
pub struct Events {
    backend: Arc<dyn Backend>,
    endpoints: Vec<Arc<Endpoint>>,
    /// One per endpoint: wakes its worker when this process wrote an event.
    wake: Vec<Arc<Notify>>,
    source: String,
    ids: Ids,
    poll: Duration,
    /// `Some`: replicas may share the store, so workers take a lease.
    lease: Option<Duration>,
}

impl Events {
    /// The outbox for `endpoints` (secrets loaded) in `backend`. `shared`:
    /// other processes may deliver from the same store (S3), so an
    /// endpoint's worker delivers only while it holds the endpoint's lease.
    pub fn new(
        backend: Arc<dyn Backend>,
        config: &EventsConfig,
        endpoints: Vec<Endpoint>,
        public_origin: Option<&str>,
        shared: bool,
    ) -> Events {
        let source = config
            .source
            .clone()
            .or_else(|| public_origin.map(str::to_owned))
            .unwrap_or_else(|| "wharf".to_owned());
        Events {
            backend,
            wake: endpoints.iter().map(|_| Arc::new(Notify::new())).collect(),
            endpoints: endpoints.into_iter().map(Arc::new).collect(),
            source,
            ids: Ids::new(),
            poll: Duration::from_secs(config.poll_secs),
            lease: shared.then(|| Duration::from_secs(config.lease_secs)),
        }
    }

    /// Start one delivery worker per endpoint; [`Workers::stop`] ends them.
    pub fn start(self: &Arc<Self>) -> Workers {
        let (stop, stopped) = watch::channel(false);
        let tasks = self
            .endpoints
            .iter()
            .zip(&self.wake)
            .map(|(ep, wake)| {
                let worker = deliver::Worker::new(
                    self.backend.clone(),
                    ep.clone(),
                    wake.clone(),
                    self.poll,
                    self.lease,
                    self.ids.node.clone(),
                    stopped.clone(),
                );
                tokio::spawn(worker.run())
            })
            .collect();
        for ep in &self.endpoints {
            tracing::info!(
                endpoint = %ep.name,
                url = %redacted(&ep.url),
                signed = ep.secret.is_some(),
                "event webhook"
            );
        }
        Workers { stop, tasks }
    }
}

/// The URL without user info or query (which may hold credentials), for logs.
pub(crate) fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

/// The running delivery workers.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Stop the workers (a delivery in flight is abandoned: it is sent
    /// again by the next run) and give up their leases, within `limit`.
    pub async fn stop(self, limit: Duration) {
        let _ = self.stop.send(true);
        for mut t in self.tasks {
            if tokio::time::timeout(limit, &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

#[async_trait]
impl EventSink for Events {
    fn wants(&self, kind: EventKind, repository: &RepoName) -> bool {
        self.endpoints.iter().any(|e| e.wants(kind, repository))
    }

    async fn emit(&self, events: Vec<Event>) -> io::Result<()> {
        let ctx = current_context();
        let now = SystemTime::now();
        // Ids first, in the order of the events; then each endpoint's
        // entries written one after another (a worker listing between
        // two writes sees a prefix of them, never a later one alone), the
        // endpoints at once.
        let mut made = Vec::with_capacity(events.len());
        for e in &events {
            let id = self.ids.next();
            let body = cloud_event(e, &id, &self.source, now, &ctx)?;
            made.push((e, id, bytes::Bytes::from(body)));
        }
        let writes = self.endpoints.iter().zip(&self.wake).map(|(ep, wake)| {
            let made = &made;
            async move {
                let mut wrote = false;
                for (e, id, body) in made {
                    if !ep.wants(e.kind, &e.repository) {
                        continue;
                    }
                    let key = format!("{}{id}", outbox(&ep.name));
                    if let Err(err) = self.backend.put(&key, body.clone()).await {
                        tracing::error!(
                            endpoint = %ep.name,
                            id = %id,
                            event = %String::from_utf8_lossy(body),
                            error = %err,
                            "an event could not be written to the outbox: the request fails, its change stays made, and this event is not delivered"
                        );
                        if wrote {
                            wake.notify_one();
                        }
                        return Err(err);
                    }
                    wrote = true;
                }
                if wrote {
                    wake.notify_one();
                }
                Ok(())
            }
        });
        for r in futures_util::future::join_all(writes).await {
            r?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_the_order_they_are_made() {
        let ids = Ids::new();
        let mut prev = ids.next();
        for _ in 0..10_000 {
            let id = ids.next();
            assert!(id > prev, "{id} after {prev}");
            assert!(store::backend::valid_key(&format!("_events/outbox/x/{id}")));
            prev = id;
        }
        let t = id_time(&prev).unwrap();
        let age = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(age < Duration::from_secs(3600));
        assert_eq!(id_time("junk"), None);
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let mut h = http::HeaderMap::new();
        assert_eq!(request_id(&h), None);
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&h).as_deref(), Some("abc-123"));
        h.insert("x-request-id", "a b".parse().unwrap());
        assert_eq!(request_id(&h), None);
        h.insert("x-request-id", "x".repeat(200).parse().unwrap());
        assert_eq!(request_id(&h), None);
    }

    #[test]
    fn a_cloud_event() {
        let e = Event {
            kind: EventKind::TagSet,
            repository: RepoName::parse("team/app", 255).unwrap(),
            digest: Some(oci::Digest::sha256_of(b"m")),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            size: Some(1),
            tag: Some(oci::Tag::parse("v1").unwrap()),
        };
        let ctx = RequestContext {
            actor: Some("alice".into()),
            request_id: None,
        };
        let body = cloud_event(&e, "id-1", "wharf", UNIX_EPOCH, &ctx).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "dev.wharf.tag.set");
        assert_eq!(v["subject"], "team/app");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["tag"], "v1");
        assert_eq!(v["data"]["actor"], "alice");
        assert!(v["data"].get("requestId").is_none());
    }
}
