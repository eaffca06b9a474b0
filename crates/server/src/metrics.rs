//! Prometheus metrics: one registry for the process, served at `/metrics`
//! (docs/observability.md lists every metric).
//!
//! Handlers never format metrics. The request layer (`serve::request_log`)
//! counts each request by the name of its typed [`Action`](crate::action::Action)
//! ([`ActionName`], put on the response by `handlers::handle`) and its
//! status class; bodies are counted as their bytes pass
//! ([`CountedBody`]). Storage operations are counted by a wrapper around
//! the backend ([`storage::Instrumented`]), authentication refusals where
//! they are answered (`auth::Auth::refusal`), the pull-through cache in
//! `crate::mirror` and the upstreams' own counters (`mirror::upstream::Stats`),
//! process figures when scraped ([`process`]).
//!
//! Labels are bounded: action names and status classes are fixed sets,
//! storage operations and backends too, upstream names come from the
//! configuration. Never a repository, tag, digest, path or user.
//!
//! On the hot path: atomic adds on counters whose label sets are resolved
//! once (storage) or looked up under `Family`'s read lock (requests).

mod process;
pub mod storage;

use crate::auth::decide::Refusal;
use crate::conn::ConnInfo;
use crate::handlers::AppState;
use crate::response::{self as r, Resp};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Where Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// Request latency buckets, seconds: from a cached manifest to a large
/// upload.
const REQUEST_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The name of what a request asked for, for metrics: an
/// [`Action`](crate::action::Action)'s [`metric_name`](crate::action::Action::metric_name),
/// or one of [`OTHER_ACTIONS`]. Carried from the handler to the request
/// layer in the response's extensions.
#[derive(Clone, Copy, Debug)]
pub struct ActionName(pub &'static str);

/// Names of requests that are no registry API action: the health probes,
/// `/metrics`, the token service, and requests the router refused
/// (`unknown`: no such endpoint, a malformed name, a URL too long...).
pub const OTHER_ACTIONS: [&str; 6] = ["healthz", "readyz", "metrics", "token", "ui", "unknown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    upstream: String,
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// What background garbage collection removes, as labelled.
const GC_KINDS: [&str; 7] = [
    "blob",
    "manifest",
    "tag",
    "link",
    "referrer",
    "repository",
    "upload",
];

/// Authentication refusals by reason; shared by the metrics registry and
/// `auth::Auth`, which counts every refusal it answers.
#[derive(Clone, Debug, Default)]
pub struct Refusals(Family<ReasonLabels, Counter>);

impl Refusals {
    pub fn count(&self, why: &Refusal) {
        let reason = match why {
            Refusal::Unauthenticated { .. } => "unauthenticated",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::Denied => "denied",
            Refusal::Throttled { .. } => "throttled",
        };
        self.0.get_or_create(&ReasonLabels { reason }).inc();
    }
}

fn histogram(buckets: &'static [f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

fn request_histogram() -> Histogram {
    histogram(&REQUEST_BUCKETS)
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ActionLabels, Histogram, fn() -> Histogram>,
    received: Family<ActionLabels, Counter>,
    sent: Family<ActionLabels, Counter>,
    in_flight: Gauge,
    refusals: Refusals,
    storage: storage::StorageMetrics,
    gc_runs: Family<ResultLabels, Counter>,
    gc_bytes: Counter,
    gc_deleted: Family<KindLabels, Counter>,
    gc_last: Gauge<f64, std::sync::atomic::AtomicU64>,
    cache: Family<CacheLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What the scrape-time collectors read.
pub struct Sources {
    pub upload_slots: Arc<crate::upload_slots::UploadSlots>,
    pub mirror: Option<Arc<mirror::Mirror>>,
}

impl Metrics {
    /// The registry of every metric. `refusals` is the counter the
    /// authenticator (if any) shares; `backend` names the storage backend
    /// (`fs`, `s3`).
    pub fn new(backend: &'static str, refusals: Refusals) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "wharf_http_requests",
            "HTTP requests answered, by action (the registry API operation; healthz, readyz, metrics, token, or unknown for requests the router refused) and status class",
            requests.clone(),
        );
        let duration = Family::<ActionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            request_histogram,
        );
        registry.register(
            "wharf_http_request_duration_seconds",
            "Time from a request's arrival to its response head, by action (uploads include receiving the body; downloads exclude sending it)",
            duration.clone(),
        );
        let received = Family::<ActionLabels, Counter>::default();
        registry.register(
            "wharf_http_request_body_bytes",
            "Request body bytes received, by action",
            received.clone(),
        );
        let sent = Family::<ActionLabels, Counter>::default();
        registry.register(
            "wharf_http_response_body_bytes",
            "Response body bytes sent, by action",
            sent.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "wharf_http_requests_in_flight",
            "Requests being handled now (until their response head)",
            in_flight.clone(),
        );
        registry.register(
            "wharf_auth_refusals",
            "Requests refused by authentication or authorization, by reason: unauthenticated (a challenge to log in, part of every client's first request), bad_credentials (wrong password or token), denied (the policy forbids it), throttled (too many failed logins from the address)",
            refusals.0.clone(),
        );
        let storage = storage::StorageMetrics::new(&mut registry, backend);
        let gc_runs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "wharf_gc_runs",
            "Background garbage collection runs (wharf serve with [gc] interval_secs), by result (ok, error)",
            gc_runs.clone(),
        );
        let gc_bytes = Counter::default();
        registry.register(
            "wharf_gc_reclaimed_bytes",
            "Bytes of blobs removed by background garbage collection",
            gc_bytes.clone(),
        );
        let gc_deleted = Family::<KindLabels, Counter>::default();
        registry.register(
            "wharf_gc_deleted_objects",
            "Objects removed by background garbage collection, by kind (blob, manifest, tag, link, referrer, repository, upload)",
            gc_deleted.clone(),
        );
        let gc_last = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "wharf_gc_last_success_timestamp_seconds",
            "When the last successful background garbage collection ended (Unix time; 0: none yet)",
            gc_last.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "wharf_mirror_requests",
            "Pull-through cache lookups by upstream, kind (manifest, blob) and result: hit (served from the store), revalidated (a cached tag the upstream confirmed), miss (fetched from the upstream), stale (a cached tag served because the upstream failed), error (the upstream failed and nothing usable was cached)",
            cache.clone(),
        );
        let info = Family::<VersionLabels, Gauge>::default();
        info.get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register(
            "wharf_build_info",
            "Always 1; the version label is the running Wharf's",
            info,
        );
        // Series that exist from the start (at 0), so that rates and
        // alerts on them work before the first event.
        for reason in ["unauthenticated", "bad_credentials", "denied", "throttled"] {
            refusals.0.get_or_create(&ReasonLabels { reason }).inc_by(0);
        }
        for result in ["ok", "error"] {
            gc_runs.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        for kind in GC_KINDS {
            gc_deleted.get_or_create(&KindLabels { kind }).inc_by(0);
        }
        Metrics {
            registry,
            requests,
            duration,
            received,
            sent,
            in_flight,
            refusals,
            storage,
            gc_runs,
            gc_bytes,
            gc_deleted,
            gc_last,
            cache,
        }
    }

    /// Add the figures read at scrape time: process, upload sessions, upstreams.
    pub fn with_sources(mut self, sources: Sources) -> Metrics {
        for (upstream, _) in sources.mirror.iter().flat_map(|m| m.stats()) {
            let manifest = ["hit", "revalidated", "miss", "stale", "error"];
            let blob = ["hit", "miss", "error"];
            for (kind, results) in [("manifest", &manifest[..]), ("blob", &blob[..])] {
                for &result in results {
                    self.cache
                        .get_or_create(&CacheLabels {
                            upstream: upstream.to_owned(),
                            kind,
                            result,
                        })
                        .inc_by(0);
                }
            }
        }
        self.registry
            .register_collector(Box::new(process::Collector::new(sources)));
        self
    }

    /// The authentication refusal counter (shared with `auth::Auth`).
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Wrap a storage backend so its operations are counted.
    pub fn instrument(&self, backend: Arc<dyn store::Backend>) -> Arc<dyn store::Backend> {
        Arc::new(storage::Instrumented::new(backend, &self.storage))
    }

    /// A request began (see [`Metrics::finish`]).
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Count an answered request and its latency; `resp`'s body is
    /// counted as it is sent.
    pub fn finish(&self, action: &'static str, resp: Resp, elapsed: Duration) -> Resp {
        let status = match resp.status().as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels { action, status })
            .inc();
        self.duration
            .get_or_create(&ActionLabels { action })
            .observe(elapsed.as_secs_f64());
        let counter = self.sent.get_or_create(&ActionLabels { action }).clone();
        resp.map(|b| Body::new(CountedBody::new(b, counter)))
    }

    /// A request body counted as it is read.
    pub fn received(&self, action: &'static str, body: Body) -> Body {
        let counter = self
            .received
            .get_or_create(&ActionLabels { action })
            .clone();
        Body::new(CountedBody::new(body, counter))
    }

    /// A pull-through cache lookup of `upstream`: `kind` manifest or blob,
    /// `result` hit, revalidated, miss, stale or error.
    pub fn cache(&self, upstream: &str, kind: &'static str, result: &'static str) {
        self.cache
            .get_or_create(&CacheLabels {
                upstream: upstream.to_owned(),
                kind,
                result,
            })
            .inc();
    }

    /// A background garbage collection run ended.
    pub fn gc_run<E>(&self, result: &Result<store::gc::GcReport, E>) {
        match result {
            Ok(r) => {
                self.gc_runs
                    .get_or_create(&ResultLabels { result: "ok" })
                    .inc();
                self.gc_bytes.inc_by(r.bytes_reclaimed);
                for (kind, n) in [
                    ("blob", r.blobs_deleted),
                    ("manifest", r.manifests_deleted),
                    ("tag", r.tags_deleted),
                    ("link", r.links_deleted),
                    ("referrer", r.referrers_deleted),
                    ("repository", r.repositories_deleted),
                    (
                        "upload",
                        u64::try_from(r.uploads_expired).unwrap_or(u64::MAX),
                    ),
                ] {
                    self.gc_deleted
                        .get_or_create(&KindLabels { kind })
                        .inc_by(n);
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.gc_last.set(now);
            }
            Err(_) => {
                self.gc_runs
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
            }
        }
    }

    /// The text of a scrape: OpenMetrics when the scraper asks for it
    /// (Prometheus does), else the classic Prometheus text format.
    fn render(&self, openmetrics: bool) -> Result<(String, &'static str), std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
            Ok((
                out,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ))
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
            Ok((
                out,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            ))
        }
    }
}

/// Decrements the in-flight gauge when dropped (also when the request's
/// future is cancelled).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Answer a scrape of `/metrics`: GET or HEAD. On the main listener with
/// authentication on, only an authenticated user may scrape (`auth`); the
/// separate metrics listener answers anybody who can reach it.
pub async fn serve(state: &AppState, req: Request, check_auth: bool) -> Resp {
    // The parts only: a body is not `Sync`, and the answer awaits.
    let (req, _body) = req.into_parts();
    let method = req.method.as_str();
    let head = method == "HEAD";
    if !head && method != "GET" {
        return text(
            405,
            "use GET or HEAD\n".into(),
            "text/plain; charset=utf-8",
            head,
            &[(header::ALLOW, "GET, HEAD".into())],
        );
    }
    let mut user = None;
    if check_auth && let Some(auth) = &state.auth {
        let conn = req.extensions.get::<ConnInfo>();
        let origin = crate::origin::of_request(
            state.public_origin.as_deref(),
            state.config.tls_enabled(),
            req.uri.authority().map(|a| a.as_str()),
            &req.headers,
        );
        let refused = |why: Refusal| auth.refusal(&why, &[], &req.headers, origin.as_deref(), head);
        match auth.authenticate(&req.headers, conn).await {
            Ok(id) => match id.principal.name() {
                Some(name) => user = Some(name.to_owned()),
                None => {
                    return refused(Refusal::Unauthenticated {
                        insufficient_scope: false,
                    });
                }
            },
            Err(why) => return refused(why),
        }
    }
    let openmetrics = req
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut resp = match state.metrics.render(openmetrics) {
        Ok((body, content_type)) => text(200, body, content_type, head, &[]),
        Err(_) => text(
            500,
            "encoding the metrics failed\n".into(),
            "text/plain; charset=utf-8",
            head,
            &[],
        ),
    };
    if let Some(u) = user {
        resp.extensions_mut().insert(crate::auth::AuthUser(u));
    }
    resp
}

/// The separate metrics listener (`[metrics] listen`): `/metrics`,
/// `/healthz` and `/readyz` in plain HTTP, without authentication (its
/// address is the protection). Its requests are not counted in the
/// request metrics. Runs until aborted.
pub async fn serve_admin(listener: tokio::net::TcpListener, state: Arc<AppState>) {
    let app = axum::Router::new().fallback(admin).with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the metrics listener stopped");
    }
}

async fn admin(State(state): State<Arc<AppState>>, req: Request) -> Resp {
    let path = req.uri().path().to_owned();
    if path == METRICS_PATH {
        return serve(&state, req, false).await;
    }
    if crate::health::is_health_path(&path) {
        return crate::health::serve(&state, req.method().as_str(), &path).await;
    }
    text(
        404,
        "not found: this listener serves /metrics, /healthz and /readyz\n".into(),
        "text/plain; charset=utf-8",
        req.method() == "HEAD",
        &[],
    )
}

fn text(
    status: u16,
    body: String,
    content_type: &str,
    head: bool,
    extra: &[(HeaderName, String)],
) -> Resp {
    let mut headers = vec![
        (header::CONTENT_TYPE, content_type.to_owned()),
        (header::CONTENT_LENGTH, body.len().to_string()),
        (header::CACHE_CONTROL, "no-store".to_owned()),
    ];
    headers.extend(extra.iter().cloned());
    r::build(
        status,
        &headers,
        if head {
            Body::empty()
        } else {
            Body::from(body)
        },
    )
}

/// A body whose data bytes are added to a counter as they pass.
pub struct CountedBody {
    inner: Body,
    counter: Counter,
}

impl CountedBody {
    pub fn new(inner: Body, counter: Counter) -> CountedBody {
        CountedBody { inner, counter }
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter
                .inc_by(u64::try_from(data.len()).unwrap_or(u64::MAX));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
