//! Starting and stopping the server: listener, request log, background
//! upload expiry, graceful shutdown on SIGTERM / Ctrl-C.

use crate::action::RouterLimits;
use crate::auth::{Auth, AuthUser};
use crate::config::{BackendKind, Config, LogFormat};
use crate::conn::ConnInfo;
use crate::handlers::{AppState, handle};
use crate::listener::{self, ConnSettings};
use crate::metrics::{ActionName, Metrics};
use crate::response::API_VERSION;
use crate::tls::TlsServer;
use crate::upload_slots::UploadSlots;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use oci::{ErrorCode, RegistryError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::Backend;
use store::fs::{FsBackend, open_failure};
use store::s3::{S3Backend, S3Config};
use store::source::{SourceSpec, Sources};
use store::{Registry, RegistryConfig};
use tokio::net::TcpListener;

/// The configured storage backend, checked to answer: a wrong directory,
/// endpoint, bucket or credentials stop the server here with a message
/// naming them.
async fn open_backend(config: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    match config.storage.backend {
        BackendKind::Fs => {
            let b = FsBackend::open(&config.data_dir, config.storage.fsync)
                .map_err(|e| anyhow::anyhow!("{}", open_failure(&config.data_dir, &e)))?;
            // The directory is this process's alone: a collector's markers
            // in it are a dead process's.
            let n = store::gc::forget_dead_runs(&b).await?;
            if n > 0 {
                tracing::info!(
                    removed = n,
                    "removed the markers of a garbage collection that did not finish"
                );
            }
            Ok(Arc::new(b))
        }
        BackendKind::S3 => {
            let b = S3Backend::connect(s3_config(config))
                .await
                .map_err(|e| anyhow::anyhow!("cannot start on S3: {e}"))?;
            Ok(Arc::new(b))
        }
    }
}

/// The event outbox when `[[events.endpoints]]` are configured (their
/// secrets read). On S3 other replicas may share the store, so each
/// endpoint's worker delivers only while it holds the endpoint's lease; a
/// data directory is this process's alone.
fn open_events(
    config: &Config,
    backend: &Arc<dyn Backend>,
) -> anyhow::Result<Option<Arc<crate::events::Events>>> {
    let mut endpoints = config.events.endpoints()?;
    if endpoints.is_empty() {
        return Ok(None);
    }
    for e in &mut endpoints {
        e.load_secret()?;
    }
    let public_origin = config.public_origin()?;
    Ok(Some(Arc::new(crate::events::Events::new(
        backend.clone(),
        &config.events,
        endpoints,
        public_origin.as_deref(),
        config.storage.backend == BackendKind::S3,
    ))))
}

/// `[storage.s3]` plus credentials from `WHARF_S3_*` (the `AWS_*` chain is
/// the S3 client's own fallback).
pub fn s3_config(config: &Config) -> S3Config {
    let s = &config.storage.s3;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    S3Config {
        endpoint: s.endpoint.clone(),
        region: s.region.clone(),
        bucket: s.bucket.clone(),
        prefix: s.prefix.clone(),
        access_key_id: s
            .access_key_id
            .clone()
            .or_else(|| env("WHARF_S3_ACCESS_KEY_ID")),
        secret_access_key: s
            .secret_access_key
            .clone()
            .or_else(|| env("WHARF_S3_SECRET_ACCESS_KEY")),
        virtual_hosted: s.virtual_hosted,
        redirect: s.redirect,
        redirect_expiry: Duration::from_secs(s.redirect_expiry_secs),
        timeout: Duration::from_secs(s.timeout_secs),
    }
}

/// "data directory ./wharf-data (fsync on)" or the bucket, for the log.
fn storage_description(config: &Config) -> String {
    match config.storage.backend {
        BackendKind::Fs => format!(
            "data directory {} (fsync {})",
            config.data_dir.display(),
            if config.storage.fsync { "on" } else { "off" }
        ),
        BackendKind::S3 => format!("S3 {}", s3_config(config).describe()),
    }
}

/// Set up logging as the config says (once per process).
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Bind the configured address and serve until SIGTERM or Ctrl-C. `ready`
/// runs once, when startup is done and requests are about to be accepted.
pub async fn run(config: Config, ready: impl FnOnce()) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    run_on(listener, config, shutdown_signal(), ready).await
}

/// Serve on an already bound listener until `shutdown` completes; requests
/// in flight are allowed to finish. `ready` is as for [`run`].
pub async fn run_on(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    config.validate()?;
    let tls = if config.tls_enabled() {
        Some(TlsServer::new(&config.tls)?)
    } else {
        None
    };
    let backend_name = match config.storage.backend {
        BackendKind::Fs => "fs",
        BackendKind::S3 => "s3",
    };
    let refusals = crate::metrics::Refusals::default();
    let metrics = Metrics::new(backend_name, refusals.clone());
    let backend = open_backend(&config).await?;
    // Storage operations are counted only when the metrics are served.
    let backend = if config.metrics.enabled {
        metrics.instrument(backend)
    } else {
        backend
    };
    // Upload slots are freed only when the registry reports a session's end.
    let upload_slots = Arc::new(UploadSlots::new(
        config.limits.max_uploads_per_client,
        config.limits.max_uploads,
    ));
    let registry = Registry::new(
        backend.clone(),
        RegistryConfig {
            delete_enabled: config.delete_enabled,
            immutable_tags: config.immutable_tag_rules()?,
            quotas: config.quota_rules()?,
        },
    )
    .with_session_observer(upload_slots.clone());
    // Event webhooks: the registry writes its events to the outbox, the
    // workers deliver them (docs/events.md).
    let events = open_events(&config, &backend)?;
    let registry = match &events {
        Some(e) => registry.with_event_sink(e.clone()),
        None => registry,
    };
    let registry = Arc::new(registry);
    let mirror = mirror::Mirror::new(
        &config.upstreams,
        registry.clone(),
        config.limits.max_name_length,
        config.limits.max_manifest_size,
    )
    .map_err(anyhow::Error::msg)?
    .map(Arc::new);
    // Upstreams served at the root on addresses of their own (`listen`).
    let mut roots = Vec::new();
    for up in mirror.iter().flat_map(|m| m.upstreams()) {
        if let Some(addr) = up.listen {
            let l = TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {addr} (listen of upstream {}): {e}",
                    up.name
                )
            })?;
            roots.push((l, up.name.clone()));
        }
    }
    let limits = RouterLimits {
        max_name_length: config.limits.max_name_length,
        max_tags_per_push: config.limits.max_tags_per_push,
    };
    let sources = if config.sources.is_empty() {
        None
    } else {
        let specs: Vec<SourceSpec> = config
            .sources
            .iter()
            .map(|s| SourceSpec {
                path: s.path.clone(),
                name: s.name.clone(),
            })
            .collect();
        let s = Sources::open(&specs, &registry, config.limits.max_name_length)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve sources: {e}"))?;
        Some(Arc::new(s))
    };
    // With TLS, token realms default to https.
    let auth = Auth::from_config(&config, tls.is_some(), refusals).await?;
    let public_origin = config.public_origin()?;
    let metrics = Arc::new(metrics.with_sources(crate::metrics::Sources {
        upload_slots: upload_slots.clone(),
        mirror: mirror.clone(),
    }));
    let state = Arc::new(AppState {
        registry,
        public_origin,
        sources,
        mirror: mirror.clone(),
        config: config.clone(),
        limits,
        auth: auth.clone(),
        upload_slots,
        metrics: metrics.clone(),
        metrics_on_main: config.metrics.enabled && config.metrics.listen.is_none(),
    });
    // The separate metrics listener, bound before the main one serves so
    // that a wrong address stops the server at start.
    let metrics_server = match config.metrics.listen.filter(|_| config.metrics.enabled) {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
            let addr = l.local_addr()?;
            tracing::info!(listen = %addr, "metrics listening (/metrics, /healthz, /readyz)");
            Some(tokio::spawn(crate::metrics::serve_admin(l, state.clone())))
        }
        None => None,
    };
    let key_refresher = auth
        .as_ref()
        .filter(|a| !a.verifier.external.is_empty())
        .map(|a| tokio::spawn(a.clone().refresh_external_keys()));
    let htpasswd_watcher = auth
        .as_ref()
        .filter(|a| a.has_htpasswd())
        .map(|a| tokio::spawn(a.clone().watch_htpasswd(Duration::from_secs(2))));

    let first_count = (!config.quotas.is_empty()).then(|| tokio::spawn(count_usage(state.clone())));
    let expiry = Duration::from_secs(config.uploads.expiry_secs);
    let sweeper = tokio::spawn(expire_uploads(state.clone(), expiry));
    let retention = config.retention_rules()?;
    let collector = (config.gc.interval_secs > 0).then(|| {
        let opts = store::gc::GcOptions {
            grace: Duration::from_secs(config.gc.grace_secs),
            upload_expiry: expiry,
            retention,
            concurrency: config.gc.concurrency,
            ..store::gc::GcOptions::default()
        };
        tokio::spawn(collect_garbage(
            state.clone(),
            Duration::from_secs(config.gc.interval_secs),
            opts,
        ))
    });

    // The size caps of the pull-through cache (docs/mirror.md).
    let evictors = mirror
        .as_ref()
        .map(|m| m.start_eviction())
        .unwrap_or_default();
    let max_url_length = config.limits.max_url_length;
    let counted = config.metrics.enabled.then(|| metrics.clone());
    let app = Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(middleware::from_fn(move |req, next| {
            request_log(req, next, max_url_length, counted.clone())
        }));
    let addr = listener.local_addr()?;
    tracing::info!(
        listen = %addr,
        storage = %storage_description(&config),
        tls = tls.is_some(),
        client_certs = config.tls.client_ca.is_some(),
        "wharf registry listening"
    );
    if auth.is_some() {
        tracing::info!("authentication on");
    }
    for up in mirror.iter().flat_map(|m| m.upstreams()) {
        tracing::info!(
            upstream = %up.name,
            url = %up.url,
            prefix = %up.prefix,
            tag_ttl_secs = up.tag_ttl.as_secs(),
            max_stale_secs = up.max_stale.as_secs(),
            push = up.push,
            "pull-through cache"
        );
    }
    for (l, name) in &roots {
        let at = l.local_addr()?;
        tracing::info!(
            listen = %at,
            upstream = %name,
            "serving the upstream at the root here (for the Docker daemon's registry-mirrors)"
        );
        warn_if_exposed(&config, at, auth.is_some());
    }
    if !config.retention.is_empty() && config.gc.interval_secs == 0 {
        tracing::warn!(
            "[[retention]] rules are set but [gc] interval_secs is 0: they apply only when `wharf gc --config` runs"
        );
    }
    warn_if_exposed(&config, addr, auth.is_some());
    let watcher = tls.as_ref().and_then(TlsServer::watcher).map(tokio::spawn);
    let deliveries = events.as_ref().map(|e| e.start());
    let settings = ConnSettings::new(&config.limits, tls.map(|t| t.acceptor));
    ready();
    // One shutdown for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let settings = Arc::new(settings);
    let mut serving = Vec::with_capacity(roots.len().saturating_add(1));
    for (l, name) in roots {
        let app = app
            .clone()
            .layer(axum::Extension(crate::mirror::RootOf(name.into())));
        serving.push(listener::serve(
            l,
            app,
            settings.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    serving.push(listener::serve(listener, app, settings, stopped(stop_rx)));
    futures_util::future::join_all(serving).await;
    stopper.abort();
    sweeper.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    for e in evictors {
        e.abort();
    }
    if let Some(c) = collector {
        c.abort();
    }
    for t in [key_refresher, htpasswd_watcher, first_count]
        .into_iter()
        .flatten()
    {
        t.abort();
    }
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(d) = deliveries {
        d.stop(Duration::from_secs(5)).await;
    }
    tracing::info!("wharf registry stopped");
    Ok(())
}

/// Say what protection is missing when clients beyond this host can connect.
fn warn_if_exposed(config: &Config, addr: std::net::SocketAddr, auth: bool) {
    if let Some(missing) = exposure(config, addr, auth) {
        tracing::warn!(
            listen = %addr,
            missing = %missing,
            "serving on a non-loopback address without {missing}"
        );
    }
}

/// What a server reachable from other hosts lacks ("authentication and
/// TLS"), or `None` when it lacks nothing or is on loopback.
fn exposure(config: &Config, addr: std::net::SocketAddr, auth: bool) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    let mut missing = Vec::new();
    if !auth {
        missing.push("authentication");
    }
    if !config.tls_enabled() {
        missing.push("TLS");
    }
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// A garbage collection run every `every` (the first after one interval).
/// A run stopped half-way (shutdown) leaves markers that writers honour
/// for an hour at most and the next run removes.
async fn collect_garbage(state: Arc<AppState>, every: Duration, opts: store::gc::GcOptions) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = store::gc::collect(&state.registry, &opts).await;
        state.metrics.gc_run(&result);
        match result {
            Ok(r) => tracing::info!(
                tags_deleted = r.tags_deleted,
                manifests_deleted = r.manifests_deleted,
                links_deleted = r.links_deleted,
                blobs_deleted = r.blobs_deleted,
                bytes_reclaimed = r.bytes_reclaimed,
                kept_after_recheck = r.kept_after_recheck,
                uploads_expired = r.uploads_expired,
                "garbage collection done"
            ),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

/// Count the repositories under a quota that no recount has counted yet
/// (content pushed before the quota covered them), once, at start.
async fn count_usage(state: Arc<AppState>) {
    match state.registry.quotas().count_uncounted().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            repositories = n,
            "counted the usage of repositories under quotas"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "counting the usage of repositories under quotas failed: a repository not counted yet is counted at its next push, or by wharf du --recount")
        }
    }
}

async fn expire_uploads(state: Arc<AppState>, max_age: Duration) {
    let every = max_age.clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match state.registry.expire_uploads(max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired abandoned upload sessions"),
            Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
        }
    }
}

/// One structured line per request; adds the API version header. Refuses
/// request targets longer than `max_url` (414) before anything else runs.
async fn request_log(
    req: Request,
    next: Next,
    max_url: usize,
    metrics: Option<Arc<Metrics>>,
) -> Response {
    let start = Instant::now();
    let in_flight = metrics.as_ref().map(|m| m.start());
    let conn = ConnInfo::of(&req);
    let peer = conn.map(|c| c.peer);
    let client_cert = conn.and_then(|c| c.client_cert_name.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let bytes_in = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let too_long = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > max_url;
    let mut resp = if too_long {
        let e = RegistryError::new(
            ErrorCode::Unsupported,
            format!("the request target is longer than {max_url} bytes"),
        )
        .with_status(414);
        crate::response::error(&e, method == axum::http::Method::HEAD)
    } else {
        next.run(req).await
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    let bytes_out = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Never the Authorization header or the query (tokens, passwords):
    // the user name the request was authenticated as.
    let user = resp
        .extensions()
        .get::<AuthUser>()
        .map_or("-", |u| u.0.as_str());
    tracing::info!(
        target: "wharf::access",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        bytes_in,
        bytes_out,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        user = %user,
        peer = peer.map(tracing::field::display),
        client_cert = client_cert.as_deref(),
        "request"
    );
    drop(in_flight);
    match metrics {
        Some(m) => {
            let action = resp
                .extensions()
                .get::<ActionName>()
                .map_or("unknown", |a| a.0);
            m.finish(action, resp, start.elapsed())
        }
        None => resp,
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_names_what_is_missing() {
        let mut c = Config::default();
        let public: std::net::SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(exposure(&c, local, false), None);
        assert_eq!(
            exposure(&c, public, false).as_deref(),
            Some("authentication and TLS")
        );
        assert_eq!(exposure(&c, public, true).as_deref(), Some("TLS"));
        c.tls.cert = Some("c.pem".into());
        c.tls.key = Some("k.pem".into());
        assert_eq!(
            exposure(&c, public, false).as_deref(),
            Some("authentication")
        );
        assert_eq!(exposure(&c, public, true), None);
    }
}
