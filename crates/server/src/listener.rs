//! Wharf's accept loop: plain TCP or TLS, HTTP/1.1 or HTTP/2 (over TLS, by
//! ALPN), with the connection-level limits and timeouts, and graceful
//! shutdown (stop accepting, let requests in flight finish). The URL length
//! limit is checked in the request log middleware, so 414s are logged.

use crate::conn::ConnInfo;
use crate::stall::StallBody;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

/// Everything a connection needs to know, shared by all connections.
pub(crate) struct ConnSettings {
    pub tls: Option<TlsAcceptor>,
    pub handshake_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

/// hyper's read buffer per HTTP/1 connection (its default is ~400 KiB). A
/// streaming upload holds a few of these in flight (received, queued for
/// hashing and writing); smaller ones keep that memory down while each is
/// still large enough that per-chunk costs do not show.
const RECV_BUF: usize = 256 * 1024;

impl ConnSettings {
    pub fn new(limits: &crate::config::Limits, tls: Option<TlsAcceptor>) -> ConnSettings {
        let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(secs(limits.header_timeout_secs))
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(RECV_BUF.max(limits.max_header_bytes.saturating_add(8192)));
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        ConnSettings {
            tls,
            handshake_timeout: secs(limits.tls_handshake_timeout_secs),
            idle_timeout: secs(limits.idle_timeout_secs),
            body_timeout: secs(limits.body_timeout_secs),
            http1: h1,
            http2: h2,
        }
    }
}

/// Accept connections until `shutdown` completes, then ask every connection
/// to finish what it is doing and wait for all of them.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    settings: Arc<ConnSettings>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            settings.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop_rx);
    stop_tx.send_replace(());
    // Every connection task holds a receiver: this returns when all are done.
    stop_tx.closed().await;
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    s: Arc<ConnSettings>,
    mut stop: watch::Receiver<()>,
) {
    let activity = Arc::new(Activity::default());
    let Some(acceptor) = &s.tls else {
        let info = ConnInfo {
            peer,
            client_cert_name: None,
        };
        let io = Watched::new(stream, activity.clone());
        return drive(io, false, info, app, &s, activity, stop).await;
    };
    let handshake = acceptor.accept(stream);
    let done = tokio::select! {
        r = within(s.handshake_timeout, handshake) => r,
        _ = stop.changed() => return,
    };
    let tls = match done {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        None => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let session = tls.get_ref().1;
    let h2 = session.alpn_protocol() == Some(b"h2");
    let info = ConnInfo {
        peer,
        client_cert_name: crate::tls::client_cert_name(session),
    };
    let io = Watched::new(tls, activity.clone());
    drive(io, h2, info, app, &s, activity, stop).await
}

/// `fut`, or `None` if it takes longer than `limit`.
async fn within<F: std::future::Future>(limit: Option<Duration>, fut: F) -> Option<F::Output> {
    match limit {
        Some(d) => tokio::time::timeout(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Serve HTTP on one established connection.
async fn drive<T>(
    io: Watched<T>,
    h2: bool,
    info: ConnInfo,
    app: Router,
    s: &ConnSettings,
    activity: Arc<Activity>,
    stop: watch::Receiver<()>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = s.body_timeout;
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = InFlight::enter(&act);
        let expects_continue = req
            .headers()
            .get(hyper::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let mut req = req.map(|b| StallBody::new(b, body_timeout, !h2, expects_continue));
        req.extensions_mut().insert(info.clone());
        let fut = app.clone().call(req);
        async move {
            let resp = fut.await;
            drop(busy);
            resp
        }
    });
    let io = TokioIo::new(io);
    if h2 {
        let conn = s.http2.serve_connection(io, svc);
        run(conn, activity, s.idle_timeout, stop).await;
    } else {
        let conn = s.http1.serve_connection(io, svc);
        run(conn, activity, s.idle_timeout, stop).await;
    }
}

/// Run a connection to its end: closed by the client, by an error, by
/// graceful shutdown once its requests are done, or for being idle.
async fn run<C>(
    conn: C,
    activity: Arc<Activity>,
    idle: Option<Duration>,
    mut stop: watch::Receiver<()>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut closing = false;
    let mut idle_tick = idle.map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick(&mut idle_tick) => {
                if !activity.busy_since_last_look() {
                    tracing::debug!("closing an idle connection");
                    return;
                }
            }
        }
    }
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Whether a connection did anything lately.
#[derive(Default)]
struct Activity {
    /// Bytes moved since the idle check last looked.
    io: AtomicBool,
    /// Requests whose handler has not answered yet.
    in_flight: AtomicUsize,
}

impl Activity {
    fn busy_since_last_look(&self) -> bool {
        let moved = self.io.swap(false, Ordering::Relaxed);
        moved || self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// Marks a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes in [`Activity`] when bytes move.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
    fn moved(&self) {
        self.activity.io.store(true, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.moved();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
